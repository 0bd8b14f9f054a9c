"""Packaging and the ``relight3d`` command: cheap imports, optional libraries behind one guard, explicit
subcommands whose ``--help`` lists the defaults, ``--device auto``, checked option types."""

from __future__ import annotations

import argparse
import dataclasses
import re
import subprocess
import sys
from typing import Dict, Tuple

import pytest

from relight3d import _optional
from relight3d.cli import build_parser, main
from relight3d.cli_types import (
    config_from_args,
    finite_float,
    float_in_open_range,
    int_in_range,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    resolve_device,
    unit_interval_float,
)


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
    from relight3d.errors import DataError

    def bad_demo(args):  # noqa: ANN001
        raise DataError(tmp_path / "x.json", "malformed JSON")

    import relight3d.cli as cli

    parser = cli.build_parser()
    args = parser.parse_args(["demo"])
    monkeypatch.setattr(args, "func", bad_demo)
    monkeypatch.setattr(cli, "build_parser", lambda: type("P", (), {"parse_known_args": lambda self, a: (args, [])})())
    assert main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"relight3d: error: {tmp_path / 'x.json'}: malformed JSON"


# --- the relight3d command: explicit registration, --help with defaults, --device auto --------------------------------


def _commands(parser: argparse.ArgumentParser, path: Tuple[str, ...] = ()):
    """Every (sub)command of ``parser`` as ``(argv prefix, its parser)``, the top level first."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _commands(child, (*path, name))


COMMANDS = list(_commands(build_parser()))


def _help_entries(text: str) -> Dict[str, str]:
    """``{first option string: its help entry, whitespace collapsed}`` from a ``--help`` text."""
    entries: Dict[str, str] = {}
    current = None
    for line in text.splitlines():
        match = re.match(r"^  (-[-\w]+)", line)
        if match:
            current = match.group(1)
            entries[current] = line
        elif current is not None and line.startswith("   "):
            entries[current] += " " + line
        else:
            current = None
    return {k: " ".join(v.split()) for k, v in entries.items()}


def _shown(default: object) -> str:
    return ", ".join(map(str, default)) if isinstance(default, (tuple, list)) else str(default)


def test_the_command_set_is_explicit():
    top = dict(COMMANDS)[()]
    names = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(names) == {
        "demo",
        "relight",
        "textual-inversion",
        "train-prior",
        "eval",
        "export",
        "envmap",
        "bench",
        "data",
    }
    assert {" ".join(p) for p, _ in COMMANDS if len(p) == 2} == {
        "eval compare", "export mesh", "export video", "export gbuffers", "envmap info", "envmap rotate",
        "envmap preview", "bench make", "bench check-noise", "data render", "data from-images",
    }  # fmt: skip


@pytest.mark.parametrize("path, parser", COMMANDS[1:], ids=[" ".join(p) for p, _ in COMMANDS[1:]])
def test_every_subcommand_help_lists_its_defaults(path, parser, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*path, "--help"])
    assert exit_info.value.code == 0
    entries = _help_entries(capsys.readouterr().out)
    for action in parser._actions:
        if action.default in (None, argparse.SUPPRESS) or not action.option_strings or action.nargs == 0:
            continue  # no default to show, or an on/off flag
        entry = entries[action.option_strings[0]]
        assert "default" in entry.lower(), f"relight3d {' '.join(path)} {action.option_strings[0]}: {entry}"
        if "default" not in (action.help or "").lower():  # the formatter added it: it must be the real value
            assert entry.endswith(f"(default: {_shown(action.default)})"), entry


def test_device_defaults_to_auto_wherever_it_exists(monkeypatch):
    with_device = [p for p, parser in COMMANDS if any("--device" in a.option_strings for a in parser._actions)]
    assert {" ".join(p) for p in with_device} == {
        "relight", "textual-inversion", "train-prior", "eval", "eval compare", "export mesh", "export video",
        "export gbuffers", "data from-images",
    }  # fmt: skip
    for path in with_device:
        parser = dict(COMMANDS)[path]
        action = next(a for a in parser._actions if "--device" in a.option_strings)
        assert action.default == "auto", path
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" and resolve_device(None) == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cuda:1") == "cuda:1"


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_importing_the_command_is_cheap():
    out = _python(
        "import sys, relight3d.cli; "
        "print(','.join(m for m in ('torch', 'nerfstudio', 'diffusers', 'matplotlib') if m in sys.modules))"
    )
    assert out.returncode == 0 and out.stdout.strip() == "", out.stdout + out.stderr


def test_a_subcommand_module_that_fails_to_import_is_an_error():
    out = _python("import sys; sys.modules['relight3d_bench.cli'] = None; import relight3d.cli")
    assert out.returncode != 0
    assert "ModuleNotFoundError" in out.stderr and "relight3d_bench.cli" in out.stderr


@pytest.mark.parametrize(
    "kind, text, expected",
    [
        (positive_int, "3", 3),
        (positive_int, "0", "expected a positive integer, got 0"),
        (positive_int, "many", "expected a positive integer, got 'many'"),
        (non_negative_int, "0", 0),
        (non_negative_int, "-1", "expected an integer >= 0, got -1"),
        (positive_float, "2.5", 2.5),
        (positive_float, "inf", "expected a positive number, got inf (not a finite number)"),
        (non_negative_float, "-0.5", "expected a number >= 0, got -0.5"),
        (finite_float, "nan", "expected a finite number, got nan (not a finite number)"),
        (finite_float, "-1e3", -1000.0),
        (unit_interval_float, "1", 1.0),
        (unit_interval_float, "1.01", "expected a number in [0, 1], got 1.01"),
        (int_in_range(2, 8), "9", "expected an integer in [2, 8], got 9"),
        (int_in_range(2, 8), "2", 2),
        (float_in_open_range(0.0, 180.0), "180", "expected a number in (0, 180), got 180"),
        (float_in_open_range(0.0, 180.0), "179.5", 179.5),
    ],
)
def test_option_types_accept_their_range_and_name_the_bad_value(kind, text, expected):
    if isinstance(expected, str):
        with pytest.raises(argparse.ArgumentTypeError) as err:
            kind(text)
        assert str(err.value) == expected
    else:
        value = kind(text)
        assert value == expected and type(value) is type(expected)


def test_config_from_args_fills_fields_of_the_same_name():
    @dataclasses.dataclass
    class Settings:
        _target: str = "x"
        steps: int = 1
        rate: float = 0.5
        name: str = "a"

    args = argparse.Namespace(steps=7, rate=0.25, func=print, _target="not taken")
    assert config_from_args(Settings, args, name="b") == Settings(steps=7, rate=0.25, name="b")
