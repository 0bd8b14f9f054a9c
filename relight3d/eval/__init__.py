"""Evaluation: image metrics and comparison reports.

The library API is importable from here without loading torch until first use::

    from relight3d.eval import evaluate_folders, compare, write_report

* ``evaluate_folders(pred_dir, gt_dir, method=..., object_name=..., light=...)`` -> ``EvaluationResult`` (a list of
  ``EvalRecord`` {object, light, method, view, metrics}; ``result.mean()`` for the means);
* ``compare(gt_dir, {name: dir}, baseline_dir=..., output=...)`` and ``evaluate_manifest(path, output=...)``;
* ``write_report(result_or_records, out_dir)`` -> CSV, Markdown, JSON and a self-contained HTML report.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "BASELINE_METHOD": "relight3d.eval.evaluate",
    "EvalRecord": "relight3d.eval.evaluate",
    "EvaluationResult": "relight3d.eval.evaluate",
    "compare": "relight3d.eval.evaluate",
    "evaluate_folders": "relight3d.eval.evaluate",
    "evaluate_manifest": "relight3d.eval.evaluate",
    "ImageFolder": "relight3d.eval.folders",
    "METRICS": "relight3d.eval.metrics",
    "score_image": "relight3d.eval.metrics",
    "write_report": "relight3d.eval.report",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'relight3d.eval' has no attribute {name!r}")
