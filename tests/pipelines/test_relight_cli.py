"""``relight3d relight`` end to end on the tiny two-light object folder: runs, scores, baseline, video, report."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest

from relight3d.cli import main
from relight3d.errors import ConfigError
from relight3d.pipelines.cli import register


def test_relight_command_scores_against_ground_truth(trained_object_run: Path, tiny_object_folder: Path, tmp_path):
    out = tmp_path / "relit"
    code = main(
        [
            "relight", "--field-run", str(trained_object_run),
            "--envmap", str(tiny_object_folder / "envmaps" / "sky.exr"),
            "--output", str(out), "--stage1-steps", "6", "--stage2-steps", "2", "--video-frames", "4",
        ]
    )  # fmt: skip
    assert code == 0
    run = out / "sky"
    assert sorted(p.name for p in (run / "pred").iterdir()) == [f"{v:03d}.png" for v in range(16, 20)]
    assert sorted(p.name for p in (run / "gt").iterdir()) == [f"{v:03d}.png" for v in range(16, 20)]
    assert len(list((run / "baseline").iterdir())) == 4
    summary = json.loads((out / "summary.json").read_text())["sky"]
    methods = {k.split("/")[0] for k in summary if "/" in k}
    assert methods == {"relight3d-gaffer (physical)", "no relighting"}
    for m in methods:
        assert 5.0 < summary[f"{m}/psnr_masked"] < 60.0
    assert (out / "report" / "report.html").stat().st_size > 10_000
    frames = iio.imread(run / "rotating_light.mp4", plugin="pyav")
    assert frames.shape[0] == 4


def test_missing_envmap_is_a_one_line_error(trained_object_run: Path, tmp_path: Path, capsys) -> None:
    code = main(
        [
            "relight",
            "--field-run",
            str(trained_object_run),
            "--envmap",
            str(tmp_path / "nope.exr"),
            "--output",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "nope.exr" in err


def test_ldr_envmap_is_a_one_line_error(trained_object_run: Path, tmp_path: Path, capsys) -> None:
    ldr = tmp_path / "photo.png"
    iio.imwrite(ldr, (pytest.importorskip("numpy").zeros((8, 16, 3)) + 128).astype("uint8"))
    code = main(["relight", "--field-run", str(trained_object_run), "--envmap", str(ldr), "--output", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "photo.png" in err


def _relight_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relight3d")
    register(parser.add_subparsers(dest="command"))
    return parser


@pytest.mark.parametrize("columns", ["60", "90", "110", "200"])  # argparse wraps to the terminal's width
def test_relight_help_lists_the_registered_priors_and_every_default(capsys, monkeypatch, columns) -> None:
    from relight3d.priors.registry import DEFAULT_PRIOR, PRIORS

    monkeypatch.setenv("COLUMNS", columns)
    parser = _relight_parser()
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["relight", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"--prior NAME the 2D relighting prior: {', '.join(sorted(PRIORS))}. Any field of its config" in text
    start = text.index("--prior NAME the 2D")
    prior_help = text[start : text.index("--prior-path", start)]
    assert "--prior.<field> VALUE" in prior_help and prior_help.rstrip().endswith(f"(default: {DEFAULT_PRIOR})")
    for flag, default in [("--stage1-steps", "2500"), ("--stage2-steps", "500"), ("--video-frames", "48"),
                          ("--rotation", "0.0"), ("--device", "auto")]:  # fmt: skip
        assert re.search(rf"{flag} \S+ (?:(?! --).)*\(default: {re.escape(default)}\)", text), flag
    args = parser.parse_args(["relight", "--field-run", "r", "--envmap", "a.exr", "--output", "o"])
    assert str(args.prior) == DEFAULT_PRIOR and args.device == "auto"


def test_building_the_parser_imports_no_torch() -> None:
    """The priors' registry imports torch and nerfstudio: it is read only when --prior is checked or listed."""
    code = (
        "import argparse, sys; from relight3d.pipelines.cli import register; "
        "register(argparse.ArgumentParser().add_subparsers()); print(sorted(m for m in ('torch', 'nerfstudio') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    "extra, option",
    [
        (["--prior", "physical", "--prior-path", "weights"], "--prior-path"),  # the physical prior has no weights
        (["--stage1-steps", "0", "--stage2-steps", "0"], "--stage1-steps"),
        (["--strength", "1", "2"], "--strength"),
    ],
)
def test_bad_relight_options_are_config_errors(tmp_path: Path, capsys, extra, option) -> None:
    argv = ["relight", "--field-run", str(tmp_path / "run.yml"), "--envmap", str(tmp_path / "a.exr"), "--output",
            str(tmp_path / "out"), *extra]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"relight3d: error: {option}")
    with pytest.raises(ConfigError):
        _relight_parser().parse_args(argv).func(_relight_parser().parse_args(argv))
    assert not (tmp_path / "out").exists()
