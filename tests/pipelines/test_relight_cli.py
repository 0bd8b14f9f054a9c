"""``relight3d relight`` end to end on the tiny two-light object folder: runs, scores, baseline, video, report."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import pytest

from relight3d.cli import main


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
