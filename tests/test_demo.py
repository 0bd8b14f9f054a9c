"""``relight3d demo`` end to end with tiny settings: scene, field, relighting under two lights, scores, video, mesh,
report, and what it prints."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from relight3d.cli import build_parser, main

TINY = [
    "--resolution", "32", "--n-train", "20", "--n-test", "3", "--supersample", "1", "--steps", "300",
    "--stage1-steps", "60", "--video-frames", "4", "--mesh-resolution", "40", "--rays-per-batch", "1024",
    "--shadow-grid", "16", "--shadow-rows", "4",
]  # fmt: skip


def test_demo_relights_scores_and_writes_every_output(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("RELIGHT3D_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert main(["demo", *TINY, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "metrics.json").read_text())
    paths = summary["paths"]
    assert Path(paths["report"]).stat().st_size > 10_000
    assert len(paths["videos"]) == 2 and all(Path(v).stat().st_size > 0 for v in paths["videos"])
    assert Path(paths["mesh"]).stat().st_size > 0 and Path(paths["field_run"]).is_file()
    for key in ("report", "mesh", "field_run", "metrics"):
        assert str(paths[key]) in printed
    assert set(summary["relighting"]) == {"sunrise", "studio"}
    for light, entry in summary["relighting"].items():
        assert entry["source_light"].startswith("recorded by the data")
        for key in ("psnr_masked", "psnr_masked_aligned", "psnr", "psnr_aligned"):
            relit, base = entry[f"relight3d-gaffer (physical)/{key}"], entry[f"no relighting/{key}"]
            assert math.isfinite(relit) and math.isfinite(base)
        # On this scene relighting beats keeping the training light's appearance, in the mask, raw.
        assert entry["relight3d-gaffer (physical)/psnr_masked"] > entry["no relighting/psnr_masked"] + 1.0, light
        assert light in printed
    assert math.isfinite(summary["field"]["psnr"]) and summary["field"]["psnr"] > 15.0


@pytest.mark.parametrize(
    "flag, value", [("--steps", "-5"), ("--resolution", "0"), ("--n-train", "x"), ("--video-frames", "-1")]
)
def test_demo_options_are_checked_when_parsed(flag: str, value: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["demo", flag, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and "Traceback" not in err
