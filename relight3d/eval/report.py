"""Tables (terminal, CSV, Markdown) and a self-contained HTML report of an evaluation.

``write_report(result, out_dir)`` writes:

* ``metrics_per_image.csv``: one row per record (``EvalRecord.as_row``);
* ``summary.csv``: means per (object, light, method); ``summary_by_method.csv``: means per method over all images;
* ``summary.md``: both summaries as Markdown tables, with the settings;
* ``records.json``: the whole result (``EvaluationResult.to_json``), to re-make the report later;
* ``report.html``: one file with everything embedded (base64 PNGs): the tables, matplotlib plots, and for every
  (object, light) a grid of views: input (training light), ground truth, each method and its error map.

Metrics that were not computed appear as ``n/a`` (LPIPS without weights: see the LPIPS line of the report).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from relight3d.eval.evaluate import (
    BASELINE_METHOD,
    EvalRecord,
    EvaluationResult,
    mean_metrics,
    records_to_result,
)
from relight3d.eval.folders import PathLike, composite, read_rgba
from relight3d.eval.metrics import LOWER_IS_BETTER, METRICS, metric_label

ERROR_MAP_MAX = 0.25
"""Error maps show mean |pred - GT| over RGB from 0 (black) to this value and above (light yellow)."""

DEFINITIONS = (
    "mask = ground-truth alpha > 0.5; 'mask' metrics average over those pixels only, 'full' over the whole image "
    "(on a plain background the full-image numbers flatter every method). 'al.' = after channel alignment: each "
    "channel of the prediction is scaled, inside the mask, by the median of GT/pred over the mask pixels where "
    "pred >= 1/255 (factor 1 where there is none), then clipped to [0, 1] (as in the TensoIR benchmark). "
    "PSNR in dB (capped at 120), SSIM with an 11 px Gaussian window (sigma 1.5), LPIPS v0.1 (lower is better). "
    f"'{BASELINE_METHOD}' predicts each view with its training-light image."
)


def summarize(records: Sequence[EvalRecord], by: Sequence[str] = ("object", "light", "method")) -> List[Dict[str, Any]]:
    """Mean metrics per group of records, groups in order of first appearance.

    Returns:
        Rows with the ``by`` fields, ``n_images`` and every metric of ``METRICS``.
    """
    groups: Dict[Tuple[str, ...], List[EvalRecord]] = {}
    for r in records:
        groups.setdefault(tuple(getattr(r, k) for k in by), []).append(r)
    rows = []
    for key, members in groups.items():
        row: Dict[str, Any] = dict(zip(by, key))
        row["n_images"] = len(members)
        row.update(mean_metrics(members))
        rows.append(row)
    return rows


def format_value(key: str, value: Any) -> str:
    """Metric values as text: PSNR with 2 decimals, SSIM and LPIPS with 4, NaN as ``n/a``."""
    if not isinstance(value, float):
        return str(value)
    if math.isnan(value):
        return "n/a"
    return f"{value:.2f}" if key.startswith("psnr") else f"{value:.4f}"


def _best(rows: Sequence[Mapping[str, Any]], key: str) -> Optional[float]:
    values = [r[key] for r in rows if isinstance(r.get(key), float) and not math.isnan(r[key])]
    if len(values) < 2:
        return None
    return min(values) if key in LOWER_IS_BETTER else max(values)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], bold_best: bool = True) -> str:
    """A Markdown table of ``rows``; metric columns get labels and the best value of each is bold."""
    headers = [metric_label(c) if c in METRICS else c for c in columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    best = {c: _best(rows, c) for c in columns if c in METRICS} if bold_best else {}
    for r in rows:
        cells = []
        for c in columns:
            text = format_value(c, r.get(c, ""))
            if best.get(c) is not None and r.get(c) == best[c]:
                text = f"**{text}**"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_terminal_table(result: EvaluationResult) -> str:
    """Per-method means as a text table with one row per metric and one column per method, and the LPIPS status."""
    rows = summarize(result.relit_records(), by=("method",))
    names = [r["method"] for r in rows]
    width = max([22] + [len(n) + 2 for n in names])
    lines = ["metric".ljust(24) + "".join(n.rjust(width) for n in names)]
    lines.append("images".ljust(24) + "".join(str(r["n_images"]).rjust(width) for r in rows))
    for key in METRICS:
        lines.append(metric_label(key).ljust(24) + "".join(format_value(key, r[key]).rjust(width) for r in rows))
    if result.training_light is not None and len(result.relit_records()) < len(result.records):
        lines.append(f"(means over the relit lights: all but the training light {result.training_light})")
    lines.append(f"LPIPS: {result.lpips_status}")
    lines.extend(result.notes)
    return "\n".join(lines)


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Rows as CSV; NaN as ``n/a``, floats with full precision."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for r in rows:
            cells = []
            for c in columns:
                v = r.get(c)
                cells.append("n/a" if isinstance(v, float) and math.isnan(v) else ("" if v is None else v))
            writer.writerow(cells)


def write_report(
    results: Union[EvaluationResult, Sequence[Union[EvalRecord, Mapping[str, Any]]]],
    out_dir: PathLike,
    *,
    title: str = "relight3d evaluation",
    max_views: int = 4,
    thumb_px: int = 128,
) -> Dict[str, Path]:
    """Write the tables and the HTML report of ``results`` into ``out_dir`` (created if needed).

    Args:
        results: an ``EvaluationResult``, or records (``EvalRecord`` or flat dicts as in ``EvalRecord.as_row``).
        out_dir: output folder.
        title: heading of the HTML report.
        max_views: views per (object, light) shown in the image grids.
        thumb_px: size of the longer side of the images in the grids.

    Returns:
        ``{"per_image_csv", "summary_csv", "summary_by_method_csv", "summary_md", "json", "html"}`` -> path.
    """
    result = results if isinstance(results, EvaluationResult) else records_to_result(list(results))
    if not result.records:
        raise ValueError("write_report needs at least one record")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_group = summarize(result.records)
    per_method = summarize(result.relit_records(), by=("method",))
    paths = {
        "per_image_csv": out / "metrics_per_image.csv",
        "summary_csv": out / "summary.csv",
        "summary_by_method_csv": out / "summary_by_method.csv",
        "summary_md": out / "summary.md",
        "json": out / "records.json",
        "html": out / "report.html",
    }
    row_columns = list(result.records[0].as_row())
    write_csv(paths["per_image_csv"], [r.as_row() for r in result.records], row_columns)
    write_csv(paths["summary_csv"], per_group, ["object", "light", "method", "n_images", *METRICS])
    write_csv(paths["summary_by_method_csv"], per_method, ["method", "n_images", *METRICS])
    paths["summary_md"].write_text(_markdown(result, title, per_method, per_group), encoding="utf-8")
    paths["json"].write_text(json.dumps(result.to_json(), indent=1), encoding="utf-8")
    paths["html"].write_text(_html(result, title, per_method, per_group, max_views, thumb_px), encoding="utf-8")
    return paths


def _markdown(result: EvaluationResult, title: str, per_method: List[Dict], per_group: List[Dict]) -> str:
    parts = [
        f"# {title}",
        "",
        f"Background {result.background:g} (1 = white). {DEFINITIONS}",
        "",
        f"LPIPS: {result.lpips_status}",
        *[f"\n{n}" for n in result.notes],
        "",
        f"## {_per_method_heading(result)}",
        "",
        markdown_table(per_method, ["method", "n_images", *METRICS]),
        "",
        "## Mean per object, light and method",
        "",
        markdown_table(per_group, ["object", "light", "method", "n_images", *METRICS], bold_best=False),
        "",
    ]
    return "\n".join(parts)


def _per_method_heading(result: EvaluationResult) -> str:
    if result.training_light is not None and len(result.relit_records()) < len(result.records):
        return f"Mean per method over the relit lights (all but the training light {result.training_light})"
    return "Mean per method (all images)"


# --- HTML -----------------------------------------------------------------------------------------------------------

_STYLE = """
body { font-family: sans-serif; margin: 24px; color: #222; background: #fff; }
table { border-collapse: collapse; margin: 8px 0 16px 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th { background: #eef; }
td.name, th.name { text-align: left; }
td.best { font-weight: bold; background: #efe; }
table.grid td, table.grid th { text-align: center; padding: 2px; }
table.grid img { display: block; image-rendering: pixelated; }
.note { font-size: 13px; color: #444; max-width: 1100px; }
img.plot { max-width: 100%; border: 1px solid #ddd; margin: 4px; }
"""


def _html_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], highlight: bool = True) -> str:
    best = {c: _best(rows, c) for c in columns if c in METRICS} if highlight else {}
    head = "".join(
        f'<th class="name">{html.escape(c)}</th>' if c not in METRICS else f"<th>{html.escape(metric_label(c))}</th>"
        for c in columns
    )
    body = []
    for r in rows:
        cells = []
        for c in columns:
            text = html.escape(format_value(c, r.get(c, "")))
            if c not in METRICS:
                cells.append(f'<td class="name">{text}</td>')
            elif best.get(c) is not None and r.get(c) == best[c]:
                cells.append(f'<td class="best">{text}</td>')
            else:
                cells.append(f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _png_data_uri(image: np.ndarray) -> str:
    """``image`` (float [h, w, 3] in [0, 1] or uint8) as a ``data:image/png;base64`` URI."""
    from PIL import Image

    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _thumbnail(image: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    h, w = image.shape[:2]
    factor = size / max(h, w)
    if factor == 1.0:
        return image
    resample = Image.NEAREST if factor > 1 else Image.LANCZOS
    im = Image.fromarray((np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    return np.asarray(im.resize((max(1, round(w * factor)), max(1, round(h * factor))), resample))


def error_map(pred: np.ndarray, gt: np.ndarray, vmax: float = ERROR_MAP_MAX) -> np.ndarray:
    """Mean absolute error over RGB, coloured with matplotlib's ``inferno`` from 0 to ``vmax``: ``[h, w, 3]``."""
    import matplotlib

    err = np.abs(pred.astype(np.float32) - gt.astype(np.float32)).mean(axis=-1)
    return matplotlib.colormaps["inferno"](np.clip(err / vmax, 0.0, 1.0))[..., :3].astype(np.float32)


def _load_rgb(path: Optional[str], background: float) -> Optional[np.ndarray]:
    if not path or not Path(path).is_file():
        return None
    return composite(read_rgba(path), background).numpy()


def _image_cell(image: Optional[np.ndarray], thumb_px: int, alt: str) -> str:
    if image is None:
        return '<td class="name">missing</td>'
    return f'<td><img src="{_png_data_uri(_thumbnail(image, thumb_px))}" alt="{html.escape(alt)}"></td>'


def _grid(records: List[EvalRecord], background: float, max_views: int, thumb_px: int) -> str:
    """Rows = views; columns = input, ground truth, then each method's render and error map."""
    methods = list(dict.fromkeys(r.method for r in records))
    by_key = {(r.method, r.view): r for r in records}
    views = sorted(dict.fromkeys(r.view for r in records))[:max_views]
    show_input = any(r.input_path for r in records)
    header = ["view"] + (["input (training light)"] if show_input else []) + ["ground truth"]
    for m in methods:
        header += ([m] if m != BASELINE_METHOD else []) + [f"{m}: error"]
    rows = ["<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for view in views:
        first = next(r for r in records if r.view == view)
        gt = _load_rgb(first.gt_path, background)
        cells = [f'<td class="name">{html.escape(view)}</td>']
        if show_input:
            input_path = next((r.input_path for r in records if r.view == view and r.input_path), None)
            cells.append(_image_cell(_load_rgb(input_path, background), thumb_px, f"input {view}"))
        cells.append(_image_cell(gt, thumb_px, f"ground truth {view}"))
        for m in methods:
            record = by_key.get((m, view))
            pred = _load_rgb(record.pred_path, background) if record is not None else None
            if m != BASELINE_METHOD:
                cells.append(_image_cell(pred, thumb_px, f"{m} {view}"))
            usable = pred is not None and gt is not None and pred.shape == gt.shape
            cells.append(_image_cell(error_map(pred, gt) if usable else None, thumb_px, f"{m} error {view}"))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="grid">{"".join(rows)}</table>'


def _figure_uri(fig) -> str:  # noqa: ANN001 - matplotlib Figure
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _plots(result: EvaluationResult, per_method: List[Dict], per_group: List[Dict]) -> List[Tuple[str, str]]:
    """``(caption, data URI)`` of each plot: per-method bars of the in-mask metrics, and PSNR per object/light."""
    from matplotlib.figure import Figure

    plots = []
    names = [r["method"] for r in per_method]

    def finite(key: str) -> bool:
        return any(not math.isnan(r[key]) for r in per_method)

    region = "_masked" if finite("psnr_masked") else ""  # full-image numbers where no image had a mask
    keys = [k for k in (f"psnr{region}", f"ssim{region}", f"lpips{region}") if finite(k)]
    if not keys:
        return plots
    fig = Figure(figsize=(4.2 * len(keys), 3.4))
    x = np.arange(len(names))
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        for j, variant in enumerate(("", "_aligned")):
            values = [r[key + variant] for r in per_method]
            ax.bar(x + (j - 0.5) * 0.38, values, width=0.38, label="aligned" if variant else "raw")
        ax.set_xticks(x, names, rotation=20, ha="right")
        ax.set_title(metric_label(key) + (" (lower is better)" if key in LOWER_IS_BETTER else ""))
        ax.grid(axis="y", alpha=0.3)
        if key.startswith("ssim"):
            ax.set_ylim(min([0.0] + [r[key] for r in per_method if not math.isnan(r[key])]), 1.0)
        if i == 0:
            ax.legend(fontsize=8)
    fig.tight_layout()
    where = "in-mask" if region else "full-image"
    plots.append((f"Mean {where} metrics per method, raw and channel-aligned", _figure_uri(fig)))

    groups = list(dict.fromkeys((r["object"], r["light"]) for r in per_group))
    if len(groups) > 1:
        fig = Figure(figsize=(max(5.0, 1.1 * len(groups) + 2.0), 3.4))
        ax = fig.add_subplot(1, 1, 1)
        width = 0.8 / max(len(names), 1)
        lookup = {(r["object"], r["light"], r["method"]): r[f"psnr{region}"] for r in per_group}
        gx = np.arange(len(groups))
        for j, m in enumerate(names):
            values = [lookup.get((o, lt, m), math.nan) for o, lt in groups]
            ax.bar(gx + (j - (len(names) - 1) / 2) * width, values, width=width, label=m)
        ax.set_xticks(gx, [f"{o}\n{lt}" for o, lt in groups])
        ax.set_ylabel(f"{metric_label(f'psnr{region}')} (dB)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        plots.append((f"{where.capitalize()} PSNR per object and light", _figure_uri(fig)))
    return plots


def _html(
    result: EvaluationResult,
    title: str,
    per_method: List[Dict],
    per_group: List[Dict],
    max_views: int,
    thumb_px: int,
) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="note">Generated {datetime.now().isoformat(timespec="seconds")}; '
        f"{len(result.records)} images; background {result.background:g} (1 = white).</p>",
        f'<p class="note">{esc(DEFINITIONS)}</p>',
        f'<p class="note">LPIPS: {esc(result.lpips_status)}</p>',
        *[f'<p class="note">{esc(n)}</p>' for n in result.notes],
        f"<h2>{esc(_per_method_heading(result))}</h2>",
        _html_table(per_method, ["method", "n_images", *METRICS]),
        "<h2>Plots</h2>",
    ]
    for caption, uri in _plots(result, per_method, per_group):
        parts.append(
            f'<figure><img class="plot" src="{uri}" alt="{esc(caption)}"><figcaption>{esc(caption)}'
            "</figcaption></figure>"
        )
    groups = list(dict.fromkeys((r.object, r.light) for r in result.records))
    for obj, light in groups:
        records = [r for r in result.records if r.object == obj and r.light == light]
        rows = [r for r in per_group if r["object"] == obj and r["light"] == light]
        parts += [
            f"<h2>{esc(obj)} under {esc(light)}</h2>",
            _html_table(rows, ["method", "n_images", *METRICS]),
            f'<p class="note">Error maps: mean |prediction - ground truth| over RGB, black = 0 to yellow = '
            f"{ERROR_MAP_MAX:g} or more (raw prediction, before alignment).</p>",
            _grid(records, result.background, max_views, thumb_px),
        ]
    rows = [r.as_row() for r in result.records]
    parts += [
        "<details><summary>Per-image metrics</summary>",
        _html_table(rows, ["object", "light", "method", "view", *METRICS, "scale_r", "scale_g", "scale_b"], False),
        "</details>",
        "</body></html>",
    ]
    return "\n".join(parts)
