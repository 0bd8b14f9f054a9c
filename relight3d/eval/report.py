"""The report of an evaluation: tables (CSV, Markdown), the records as JSON, and a self-contained HTML page.

``write_report(result, out_dir)`` writes:

* ``metrics_per_image.csv``: one row per record (``EvalRecord.as_row``);
* ``summary.csv``: means per (object, light, method); ``summary_by_method.csv``: means per method over all images;
* ``summary.md``: both summaries as Markdown tables, with the settings;
* ``records.json``: the whole result (:func:`~relight3d.eval.records.write_result`), to re-make the report later;
* ``report.html``: one file with everything embedded (:mod:`relight3d.eval.report_html`).

Metrics that were not computed appear as ``n/a`` (LPIPS without weights: see the LPIPS line of the report).
This module is the top of :mod:`relight3d.eval`: it imports the records, the tables and the HTML page, and nothing
below imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Union

from relight3d.eval.folders import PathLike
from relight3d.eval.metrics import METRICS
from relight3d.eval.records import EvalRecord, EvaluationResult, records_to_result, write_result
from relight3d.eval.report_html import render_html
from relight3d.eval.tables import (
    DEFINITIONS,
    GROUP_COLUMNS,
    markdown_table,
    per_method_heading,
    summarize,
    write_csv,
)

REPORT_FILES = {
    "per_image_csv": "metrics_per_image.csv",
    "summary_csv": "summary.csv",
    "summary_by_method_csv": "summary_by_method.csv",
    "summary_md": "summary.md",
    "json": "records.json",
    "html": "report.html",
}
"""The files :func:`write_report` writes, by the key it returns them under."""


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

    Raises:
        ValueError: there is no record.
    """
    result = results if isinstance(results, EvaluationResult) else records_to_result(list(results))
    if not result.records:
        raise ValueError("write_report needs at least one record")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {key: out / name for key, name in REPORT_FILES.items()}
    per_group = summarize(result.records)
    per_method = summarize(result.relit_records(), by=("method",))
    rows = [r.as_row() for r in result.records]
    write_csv(paths["per_image_csv"], rows, list(rows[0]))
    write_csv(paths["summary_csv"], per_group, [*GROUP_COLUMNS, "n_images", *METRICS])
    write_csv(paths["summary_by_method_csv"], per_method, ["method", "n_images", *METRICS])
    paths["summary_md"].write_text(_markdown(result, title, per_method, per_group), encoding="utf-8")
    write_result(result, paths["json"])
    paths["html"].write_text(render_html(result, title, per_method, per_group, max_views, thumb_px), encoding="utf-8")
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
        f"## {per_method_heading(result)}",
        "",
        markdown_table(per_method, ["method", "n_images", *METRICS]),
        "",
        "## Mean per object, light and method",
        "",
        markdown_table(per_group, [*GROUP_COLUMNS, "n_images", *METRICS], bold_best=False),
        "",
    ]
    return "\n".join(parts)


__all__ = ["REPORT_FILES", "write_report"]
