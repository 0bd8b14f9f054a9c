"""The self-contained HTML page of an evaluation report: tables, matplotlib plots and image grids, every image
embedded as a base64 PNG (one file, no links).

For every (object, light) a grid shows, per view, the input (training light), the ground truth, and each method's
render with its error map (:func:`error_map`).
"""

from __future__ import annotations

import base64
import html
import io
import math
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from relight3d.data.images import read_rgba
from relight3d.eval.folders import composite
from relight3d.eval.metrics import LOWER_IS_BETTER, METRICS, metric_label
from relight3d.eval.records import BASELINE_METHOD, EvalRecord, EvaluationResult
from relight3d.eval.tables import DEFINITIONS, best_values, format_value, per_method_heading

ERROR_MAP_MAX = 0.25
"""Error maps show mean |pred - GT| over RGB from 0 (black) to this value and above (light yellow)."""

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
    best = best_values(rows, columns, highlight)
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
            elif c in best and r.get(c) == best[c]:
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
    return composite(read_rgba(path)[0], background).numpy()


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


def _plots(per_method: List[Dict], per_group: List[Dict]) -> List[Tuple[str, str]]:
    """``(caption, data URI)`` of each plot: per-method bars of the in-mask metrics (full-image ones where no image
    had a mask), and PSNR per object and light when there are several."""
    region = "_masked" if any(not math.isnan(r["psnr_masked"]) for r in per_method) else ""
    where = "in-mask" if region else "full-image"
    keys = [f"{name}{region}" for name in ("psnr", "ssim", "lpips")]
    keys = [k for k in keys if any(not math.isnan(r[k]) for r in per_method)]
    plots = []
    if keys:
        caption = f"Mean {where} metrics per method, raw and channel-aligned"
        plots.append((caption, _figure_uri(_metric_bars(per_method, keys))))
    groups = list(dict.fromkeys((r["object"], r["light"]) for r in per_group))
    if keys and len(groups) > 1:
        caption = f"{where.capitalize()} PSNR per object and light"
        plots.append((caption, _figure_uri(_psnr_per_group(per_method, per_group, groups, f"psnr{region}"))))
    return plots


def _metric_bars(per_method: List[Dict], keys: Sequence[str]):  # noqa: ANN202 - a matplotlib Figure
    """One panel per metric key: a raw and a channel-aligned bar per method."""
    from matplotlib.figure import Figure

    names = [r["method"] for r in per_method]
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
    return fig


def _psnr_per_group(per_method: List[Dict], per_group: List[Dict], groups: List[Tuple[str, str]], key: str):  # noqa: ANN202
    """Bars of ``key`` (a PSNR) per (object, light) group, one bar per method."""
    from matplotlib.figure import Figure

    names = [r["method"] for r in per_method]
    fig = Figure(figsize=(max(5.0, 1.1 * len(groups) + 2.0), 3.4))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(len(names), 1)
    lookup = {(r["object"], r["light"], r["method"]): r[key] for r in per_group}
    gx = np.arange(len(groups))
    for j, m in enumerate(names):
        values = [lookup.get((o, lt, m), math.nan) for o, lt in groups]
        ax.bar(gx + (j - (len(names) - 1) / 2) * width, values, width=width, label=m)
    ax.set_xticks(gx, [f"{o}\n{lt}" for o, lt in groups])
    ax.set_ylabel(f"{metric_label(key)} (dB)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def render_html(
    result: EvaluationResult,
    title: str,
    per_method: List[Dict],
    per_group: List[Dict],
    max_views: int,
    thumb_px: int,
) -> str:
    """The report page of ``result``.

    Args:
        result: the evaluation.
        title: heading of the page.
        per_method: ``summarize(result.relit_records(), by=("method",))``.
        per_group: ``summarize(result.records)``.
        max_views: views per (object, light) shown in the image grids.
        thumb_px: size of the longer side of the images in the grids.
    """
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
        f"<h2>{esc(per_method_heading(result))}</h2>",
        _html_table(per_method, ["method", "n_images", *METRICS]),
        "<h2>Plots</h2>",
    ]
    for caption, uri in _plots(per_method, per_group):
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
