"""``relight3d eval`` and ``relight3d eval compare``: output, report files, and one-line errors (exit code 2)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from relight3d.cli import main


def _error_line(capsys) -> str:  # noqa: ANN001
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_single_run_prints_a_table_and_writes_the_report(bench, no_lpips_weights, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "eval",
            "--pred",
            str(bench["tinted"]),
            "--gt",
            str(bench["gt_light001"]),
            "--baseline",
            str(bench["gt_light000"]),
            "--name",
            "tinted",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    header, images, psnr_mask, psnr_mask_aligned = text.splitlines()[:4]
    assert header.split() == ["metric", "tinted", "no", "relighting"]
    assert images.split() == ["images", "3", "3"]
    assert psnr_mask.startswith("PSNR mask ") and psnr_mask_aligned.startswith("PSNR mask al.")
    assert float(psnr_mask_aligned.split()[3]) > 100  # the tint is undone by the alignment
    assert "LPIPS: n/a (no LPIPS weights)" in text
    assert (out / "report.html").is_file() and (out / "summary.md").is_file()


def test_compare_with_named_methods(bench, no_lpips_weights, tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(
        [
            "eval",
            "compare",
            "--gt",
            str(bench["gt_light001"]),
            "--method",
            f"exact={bench['exact']}",
            "--method",
            f"noisy={bench['noisy']}",
            "--lpips",
            "none",
            "--background",
            "black",
            "--output",
            str(out),
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["metric", "exact", "noisy"]
    _, _, exact, noisy = lines[2].split()  # PSNR mask
    assert exact == "120.00" and float(noisy) < 40
    assert "LPIPS: n/a (disabled)" in lines
    assert (out / "summary.csv").is_file()


def test_missing_folder_is_a_one_line_error(bench, tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["eval", "--pred", str(missing), "--gt", str(bench["gt_light001"])]) == 2
    assert _error_line(capsys) == f"relight3d: error: {missing}: no such folder"


def test_mismatched_names_are_a_one_line_error(bench, tmp_path, capsys):
    pred = tmp_path / "pred"
    pred.mkdir()
    for name in ("r_000", "r_001", "x_009"):
        Image.new("RGB", (40, 40)).save(pred / f"{name}.png")
    assert main(["eval", "--pred", str(pred), "--gt", str(bench["gt_light001"])]) == 2
    line = _error_line(capsys)
    assert line.startswith(f"relight3d: error: {pred}: no prediction for 1 ground-truth view(s) (r_002)")
    assert "1 view(s) not in the ground truth" in line and "(x_009)" in line


def test_mismatched_sizes_are_a_one_line_error(bench, tmp_path, capsys):
    pred = tmp_path / "pred"
    pred.mkdir()
    for name in ("r_000", "r_001", "r_002"):
        Image.fromarray(np.zeros((40, 32, 3), np.uint8)).save(pred / f"{name}.png")
    assert main(["eval", "--pred", str(pred), "--gt", str(bench["gt_light001"])]) == 2
    line = _error_line(capsys)
    assert line.startswith(f"relight3d: error: {pred / 'r_000.png'}: size 32x40 differs from the ground truth's 40x40")


def test_compare_argument_errors_are_one_line(bench, capsys):
    gt = ["--gt", str(bench["gt_light001"])]
    with pytest.raises(SystemExit) as exit_info:  # refused while parsing, before anything is read
        main(["eval", "compare", "--method", "oops", *gt])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # argparse: the usage, then one error line
    assert last == "relight3d eval compare: error: argument --method: expected NAME=DIR, got 'oops'"
    twice = ["--method", f"a={bench['exact']}", "--method", f"a={bench['noisy']}"]
    assert main(["eval", "compare", *twice, *gt]) == 2
    assert _error_line(capsys) == "relight3d: error: --method: method 'a' is given twice"
    absent = bench["root"] / "absent.yaml"
    assert main(["eval", "compare", "--manifest", str(absent)]) == 2
    assert _error_line(capsys) == f"relight3d: error: {absent}: no such file"
    bad = bench["root"] / "bad.yaml"
    bad.write_text("objects: [a\n")
    assert main(["eval", "compare", "--manifest", str(bad)]) == 2
    assert _error_line(capsys).startswith(f"relight3d: error: {bad}: cannot be read as a JSON/YAML manifest: ")


def test_pattern_selects_views_in_a_shared_folder(bench, no_lpips_weights, tmp_path, capsys):
    # An Objaverse-style object folder: {view}_{light}_{env}.png side by side; the pattern's group names the view.
    shared = tmp_path / "object"
    shared.mkdir()
    for i, view in enumerate(("r_000", "r_001", "r_002")):
        for light, env in (("light000", "000_city"), ("light001", "001_night")):
            (shared / f"{i:03d}_{env}.png").write_bytes((bench["gt_" + light] / f"{view}.png").read_bytes())
    code = main(
        [
            "eval",
            "--pred",
            str(shared),
            "--pred-pattern",
            r"(\d{3})_000_.*\.png",
            "--gt",
            str(shared),
            "--gt-pattern",
            r"(\d{3})_001_.*\.png",
            "--lpips",
            "none",
        ]
    )
    assert code == 0
    assert capsys.readouterr().out.splitlines()[1].split() == ["images", "3"]


def test_cli_module_import_is_cheap():
    import subprocess
    import sys

    code = (
        "import sys, relight3d.eval, relight3d.eval.cli; "
        "print(','.join(m for m in ('torch', 'torchvision', 'matplotlib', 'PIL') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing relight3d.eval.cli pulled in: {out}"
