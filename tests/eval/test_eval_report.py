"""Folder evaluation, the no-relighting baseline, manifests, and the report files (CSV, Markdown, JSON, HTML)."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from relight3d.errors import DataError
from relight3d.eval.evaluate import compare, evaluate_folders, evaluate_manifest
from relight3d.eval.records import BASELINE_METHOD, EvalRecord, read_result
from relight3d.eval.report import write_report
from relight3d.eval.tables import summarize


def _u8(path) -> np.ndarray:  # noqa: ANN001
    with Image.open(path) as im:
        return np.asarray(im.convert("RGBA"), dtype=np.float64) / 255.0


def test_folder_metrics_match_hand_computed_values(bench, no_lpips_weights):
    result = evaluate_folders(bench["tinted"], bench["gt_light001"], method="tinted", light="light001")
    assert [r.view for r in result.records] == ["r_000", "r_001", "r_002"]
    for record in result.records:
        gt = _u8(record.gt_path)
        mask = gt[..., 3] > 0.5
        # Inside the mask the prediction has R doubled and G halved: errors R and -G/2, blue exact; outside, both
        # are white.
        mse_mask = np.mean(gt[mask][:, 0] ** 2 + (gt[mask][:, 1] / 2) ** 2) / 3
        assert record.metrics["psnr_masked"] == pytest.approx(-10 * math.log10(mse_mask), abs=1e-3)
        mse_full = mse_mask * mask.sum() / mask.size
        assert record.metrics["psnr"] == pytest.approx(-10 * math.log10(mse_full), abs=1e-3)
        assert record.metrics["psnr"] > record.metrics["psnr_masked"] + 3  # the white background flatters
        assert record.scale == pytest.approx((0.5, 2.0, 1.0), abs=1e-6)
        assert record.metrics["psnr_masked_aligned"] > 100 and record.metrics["psnr_aligned"] > 100
        assert record.metrics["ssim_masked_aligned"] == pytest.approx(1.0, abs=1e-5)
    means = result.mean()
    assert means["psnr_masked"] == pytest.approx(np.mean([r.metrics["psnr_masked"] for r in result.records]))


def test_the_baseline_is_the_training_light_image_of_the_same_view(bench, no_lpips_weights):
    result = compare(
        bench["gt_light001"], {"noisy": bench["noisy"]}, baseline_dir=bench["gt_light000"], light="light001"
    )
    assert sorted({r.method for r in result.records}) == sorted(["noisy", BASELINE_METHOD])
    for record in result.select(method=BASELINE_METHOD):
        assert record.pred_path == record.input_path and record.pred_path.endswith(f"light000/{record.view}.png")
        before, after = _u8(record.pred_path), _u8(record.gt_path)  # same masks: same view, other light
        mask = after[..., 3] > 0.5
        assert np.array_equal(before[..., 3] > 0.5, mask)
        mse = np.mean((before[mask][:, :3] - after[mask][:, :3]) ** 2)
        assert record.metrics["psnr_masked"] == pytest.approx(-10 * math.log10(mse), abs=1e-3)
    # Light from the other side is not a channel scale: alignment cannot make the baseline right.
    assert result.mean(method=BASELINE_METHOD)["psnr_masked_aligned"] < 30
    assert result.select(method="noisy")[0].input_path == result.select(method=BASELINE_METHOD)[0].pred_path


def test_report_files_are_written_and_consistent(bench, no_lpips_weights, tmp_path):
    out = tmp_path / "report"
    result = compare(
        bench["gt_light001"],
        {"exact": bench["exact"], "tinted": bench["tinted"]},
        baseline_dir=bench["gt_light000"],
        object_name="disc",
        light="light001",
    )
    write_report(result, out)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["metrics_per_image.csv", "summary.csv", "summary_by_method.csv", "summary.md", "records.json", "report.html"]
    )
    with open(out / "metrics_per_image.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9 and {r["method"] for r in rows} == {"exact", "tinted", BASELINE_METHOD}
    assert all(r["lpips_masked"] == "n/a" for r in rows)
    with open(out / "summary_by_method.csv", newline="") as f:
        by_method = {r["method"]: r for r in csv.DictReader(f)}
    assert float(by_method["exact"]["psnr_masked"]) == 120.0
    assert float(by_method["tinted"]["psnr_masked"]) == pytest.approx(result.mean(method="tinted")["psnr_masked"])
    markdown = (out / "summary.md").read_text()
    assert "| method | n_images | PSNR mask | PSNR mask al." in markdown
    exact_line = next(line for line in markdown.splitlines() if line.startswith("| exact | 3 |"))
    assert exact_line.startswith("| exact | 3 | **120.00** |")  # the best value of a column is bold
    assert "LPIPS: n/a (no LPIPS weights)" in markdown
    restored = read_result(out / "records.json")
    assert restored.to_json() == json.loads(json.dumps(result.to_json()))  # every field, NaN as null
    assert math.isnan(restored.records[0].metrics["lpips"])

    page = (out / "report.html").read_text()
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)  # self-contained
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    # 3 views x (input, GT, exact, its error, tinted, its error, baseline error) + 1 plot.
    assert len(images) == 3 * 7 + 1
    grid_cell = Image.open(io.BytesIO(base64.b64decode(images[1])))
    assert grid_cell.size == (128, 128)  # 40 px images shown at 128 px


def test_write_report_accepts_plain_records_from_a_pipeline(tmp_path):
    rows = [
        {
            "object": "pot",
            "light": light,
            "method": method,
            "view": f"v{v}",
            "psnr_masked": 20.0 + v + (light == "b"),
            "ssim_masked": 0.9,
        }
        for light in ("a", "b")
        for method in ("m1", "m2")
        for v in range(2)
    ]
    paths = write_report(rows, tmp_path / "out", title="pipeline")
    summary = summarize([EvalRecord.from_row(r) for r in rows])
    assert len(summary) == 4 and summary[0]["psnr_masked"] == pytest.approx(20.5)
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") == 2  # metrics plot and the per object/light plot; no images to show
    assert "<h2>pot under b</h2>" in page


def test_manifest_runs_every_object_light_and_method(bench, no_lpips_weights, tmp_path):
    root = bench["root"]
    for obj in ("a", "b"):  # two objects sharing the same images, under obj/ folders
        for light in ("light000", "light001"):
            shutil.copytree(bench["gt_" + light], root / "objects" / obj / "gt" / light)
            shutil.copytree(bench["noisy"], root / "objects" / obj / "noisy" / light)
    manifest = root / "bench.yaml"
    manifest.write_text(
        "training_light: light000\nobjects: [a, b]\nlights: [light000, light001]\n"
        "gt: objects/{object}/gt/{light}\nmethods:\n  noisy: {dir: 'objects/{object}/noisy/{light}'}\n"
    )
    out = tmp_path / "manifest_report"
    result = evaluate_manifest(manifest)
    write_report(result, out)
    keys = sorted({(r.object, r.light, r.method) for r in result.records})
    assert keys == sorted(
        [(o, lt, "noisy") for o in "ab" for lt in ("light000", "light001")]
        + [(o, "light001", BASELINE_METHOD) for o in "ab"]
    )
    assert result.training_light == "light000"
    with open(out / "summary_by_method.csv", newline="") as f:
        counts = {r["method"]: int(r["n_images"]) for r in csv.DictReader(f)}
    assert counts == {"noisy": 6, BASELINE_METHOD: 6}  # both over the relit light only
    json_manifest = root / "bench.json"
    json_manifest.write_text(
        json.dumps(
            {
                "training_light": "light000",
                "objects": ["a"],
                "lights": ["light001"],
                "gt": "objects/{object}/gt/{light}",
            }
        )
    )
    only_baseline = evaluate_manifest(json_manifest)
    assert {r.method for r in only_baseline.records} == {BASELINE_METHOD}


def test_records_json_that_is_not_a_result_is_a_one_line_error(tmp_path):
    path = tmp_path / "records.json"
    path.write_text(json.dumps({"records": [{"view": "r_000"}]}))
    with pytest.raises(DataError, match="records.json: not evaluation records"):
        read_result(path)
    path.write_text("{oops")
    with pytest.raises(DataError, match="malformed JSON"):
        read_result(path)


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.skipif(_chromium() is None, reason="no chromium/chrome on PATH (Debian: apt-get install chromium)")
def test_html_report_renders_in_headless_chromium(bench, no_lpips_weights, tmp_path):
    out = tmp_path / "browser_report"
    result = compare(
        bench["gt_light001"], {"noisy": bench["noisy"], "tinted": bench["tinted"]}, baseline_dir=bench["gt_light000"]
    )
    write_report(result, out)
    shot = tmp_path / "shot.png"
    width, height = 1200, 1400
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--window-size={width},{height}",
        f"--screenshot={shot}",
        (out / "report.html").as_uri(),
    ]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.is_file(), "chromium wrote no screenshot"
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("RGB")).astype(np.int64)
    assert abs(pixels.shape[1] - width) <= 16 and abs(pixels.shape[0] - height) <= 16
    assert pixels.std() > 20  # not blank
    assert (pixels.sum(-1) < 600).mean() > 0.05  # a fair share of non-white: tables, plot, images
    # matplotlib's first bar colour (#1f77b4) shows that the embedded plot was decoded and drawn.
    blue = (np.abs(pixels - np.array([31, 119, 180])).max(-1) <= 6).sum()
    assert blue > 500
