"""Tables of an evaluation: means per group of records, and their text forms (terminal, Markdown, CSV).

Metric values are shown with :func:`format_value` everywhere (NaN as ``n/a``); in Markdown and HTML the best value of
each metric column is marked (:func:`best_value`).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from relight3d.eval.metrics import LOWER_IS_BETTER, METRICS, metric_label
from relight3d.eval.records import BASELINE_METHOD, EvalRecord, EvaluationResult, mean_metrics

GROUP_COLUMNS = ("object", "light", "method")
"""The fields that name a group of records in the per-group summary."""

DEFINITIONS = (
    "mask = ground-truth alpha > 0.5; 'mask' metrics average over those pixels only, 'full' over the whole image "
    "(on a plain background the full-image numbers flatter every method). 'al.' = after channel alignment: each "
    "channel of the prediction is scaled, inside the mask, by the median of GT/pred over the mask pixels where "
    "pred >= 1/255 (factor 1 where there is none), then clipped to [0, 1] (as in the TensoIR benchmark). "
    "PSNR in dB (capped at 120), SSIM with an 11 px Gaussian window (sigma 1.5), LPIPS v0.1 (lower is better). "
    f"'{BASELINE_METHOD}' predicts each view with its training-light image."
)
"""What the metric columns mean (printed above the tables of a report)."""


def summarize(records: Sequence[EvalRecord], by: Sequence[str] = GROUP_COLUMNS) -> List[Dict[str, Any]]:
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
    """Metric values as text: PSNR with 2 decimals, SSIM and LPIPS with 4, NaN as ``n/a``.

    Example:
        >>> format_value("psnr_masked", 31.4159), format_value("lpips", 0.123456), format_value("ssim", math.nan)
        ('31.42', '0.1235', 'n/a')
    """
    if not isinstance(value, float):
        return str(value)
    if math.isnan(value):
        return "n/a"
    return f"{value:.2f}" if key.startswith("psnr") else f"{value:.4f}"


def best_value(rows: Sequence[Mapping[str, Any]], key: str) -> Optional[float]:
    """The best finite value of metric ``key`` over ``rows`` (lowest for LPIPS, else highest); None with fewer than
    two finite values, where there is nothing to compare."""
    values = [r[key] for r in rows if isinstance(r.get(key), float) and not math.isnan(r[key])]
    if len(values) < 2:
        return None
    return min(values) if key in LOWER_IS_BETTER else max(values)


def best_values(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], highlight: bool) -> Dict[str, float]:
    """``{metric column: its best value}`` for the metric columns that have one (none unless ``highlight``)."""
    if not highlight:
        return {}
    found = {c: best_value(rows, c) for c in columns if c in METRICS}
    return {c: v for c, v in found.items() if v is not None}


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], bold_best: bool = True) -> str:
    """A Markdown table of ``rows``; metric columns get labels and the best value of each is bold."""
    headers = [metric_label(c) if c in METRICS else c for c in columns]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    best = best_values(rows, columns, bold_best)
    for r in rows:
        cells = [format_value(c, r.get(c, "")) for c in columns]
        cells = [f"**{text}**" if c in best and r.get(c) == best[c] else text for c, text in zip(columns, cells)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_method_heading(result: EvaluationResult) -> str:
    """The heading of the per-method means: over the relit lights when the training light is left out."""
    if result.training_light is not None and len(result.relit_records()) < len(result.records):
        return f"Mean per method over the relit lights (all but the training light {result.training_light})"
    return "Mean per method (all images)"


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
    """Rows as CSV; NaN as ``n/a``, None as an empty cell, floats with full precision."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for r in rows:
            writer.writerow([_csv_cell(r.get(c)) for c in columns])


def _csv_cell(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return "" if value is None else value


__all__ = [
    "DEFINITIONS",
    "GROUP_COLUMNS",
    "best_value",
    "format_terminal_table",
    "format_value",
    "markdown_table",
    "per_method_heading",
    "summarize",
    "write_csv",
]
