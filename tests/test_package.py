"""Packaging: a cheap import, optional native libraries behind one guard, the console script."""

from __future__ import annotations

import subprocess
import sys

import pytest

from relight3d import _optional
from relight3d.cli import main


def test_import_is_cheap_and_needs_no_optional_libraries():
    code = (
        "import sys, relight3d; "
        "heavy = [m for m in ('torch', 'nerfstudio', 'diffusers', 'tinycudann', 'nvdiffrast') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing relight3d pulled in: {out}"


def test_optional_guard_is_lazy_and_clear():
    assert _optional.try_import("a_module_that_does_not_exist_r3d") is None
    with pytest.raises(ImportError, match="needs the optional package 'nvdiffrast'"):
        _optional.require(None, "nvdiffrast", "texture baking on GPU")


def test_cli_reports_data_errors_in_one_line(tmp_path, capsys, monkeypatch):
    from relight3d.data.errors import DataError

    def bad_demo(args):  # noqa: ANN001
        raise DataError(tmp_path / "x.json", "malformed JSON")

    import relight3d.cli as cli

    parser = cli.build_parser()
    args = parser.parse_args(["demo"])
    monkeypatch.setattr(args, "func", bad_demo)
    monkeypatch.setattr(cli, "build_parser", lambda: type("P", (), {"parse_args": lambda self, a: args})())
    assert main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"relight3d: error: {tmp_path / 'x.json'}: malformed JSON"
