"""The results of an evaluation as plain data: one :class:`EvalRecord` per scored image, an
:class:`EvaluationResult` holding them with their settings, their means, and their JSON form.

The relighting pipeline builds records itself or through :func:`relight3d.eval.evaluate.evaluate_folders`;
:func:`relight3d.eval.report.write_report` turns either into tables and an HTML report, and
:func:`read_result` reads the ``records.json`` a report wrote back.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from relight3d.errors import DataError
from relight3d.eval.metrics import METRICS

BASELINE_METHOD = "no relighting"
"""Method name of the baseline that keeps the training-light appearance."""


@dataclass
class EvalRecord:
    """The metrics of one rendered view of one object under one light by one method."""

    object: str
    """Object (scene) name."""
    light: str
    """Name of the target light."""
    method: str
    """Method (or run) name."""
    view: str
    """View name (the image's file stem, or the folder pattern's group)."""
    metrics: Dict[str, float]
    """Values for the keys of ``relight3d.eval.metrics.METRICS`` (NaN where not computed)."""
    scale: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Channel-alignment factors that were applied for the ``*_aligned`` metrics."""
    pred_path: Optional[str] = None
    """The predicted image (shown in the report's image grids)."""
    gt_path: Optional[str] = None
    """The ground-truth image."""
    input_path: Optional[str] = None
    """The same view under the training light (the report's "input" column), when known."""

    def as_row(self) -> Dict[str, Any]:
        """A flat dict: names, the metrics, ``scale_r/g/b`` and the paths."""
        row: Dict[str, Any] = {"object": self.object, "light": self.light, "method": self.method, "view": self.view}
        row.update({k: self.metrics.get(k, math.nan) for k in METRICS})
        row.update(dict(zip(("scale_r", "scale_g", "scale_b"), self.scale)))
        row.update(pred_path=self.pred_path, gt_path=self.gt_path, input_path=self.input_path)
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "EvalRecord":
        """The inverse of ``as_row`` (missing metrics become NaN; a nested ``metrics`` dict is accepted too)."""
        metrics = dict(row.get("metrics") or {})
        for k in METRICS:
            value = metrics.get(k, row.get(k))
            metrics[k] = math.nan if value is None or value == "" else float(value)
        scale = tuple(float(row.get(f"scale_{c}", 1.0)) for c in "rgb")
        if "scale" in row:
            scale = tuple(float(s) for s in row["scale"])
        return cls(
            object=str(row.get("object", "")),
            light=str(row.get("light", "")),
            method=str(row["method"]),
            view=str(row["view"]),
            metrics=metrics,
            scale=scale,  # type: ignore[arg-type]
            pred_path=row.get("pred_path") or None,
            gt_path=row.get("gt_path") or None,
            input_path=row.get("input_path") or None,
        )


@dataclass
class EvaluationResult:
    """Records with the settings they were computed under."""

    records: List[EvalRecord] = field(default_factory=list)
    """One per (object, light, method, view)."""
    lpips_status: str = "n/a (not computed)"
    """Which LPIPS weights were used, or why LPIPS is n/a."""
    background: float = 1.0
    """Grey level the RGBA images were composited on (1 = white)."""
    notes: List[str] = field(default_factory=list)
    """Anything a reader of the numbers should know (e.g. images too small for LPIPS)."""
    training_light: Optional[str] = None
    """The light the fields were trained under, when known. Per-method means leave its records out, so that every
    method (and the baseline, which is not scored there) is averaged over the same relit images."""

    def extend(self, other: "EvaluationResult") -> "EvaluationResult":
        """Add ``other``'s records and notes to this result (in place) and return it."""
        self.records.extend(other.records)
        self.notes.extend(n for n in other.notes if n not in self.notes)
        return self

    def select(self, **where: str) -> List[EvalRecord]:
        """The records whose fields equal the given values, e.g. ``select(method="ours", light="city")``."""
        return [r for r in self.records if all(getattr(r, k) == v for k, v in where.items())]

    def relit_records(self) -> List[EvalRecord]:
        """The records under lights other than the training light (all records when it is unknown or when every
        record is under it)."""
        relit = [r for r in self.records if r.light != self.training_light]
        return relit if self.training_light is not None and relit else list(self.records)

    def mean(self, **where: str) -> Dict[str, float]:
        """Mean of each metric over the selected records (NaN values are left out; all NaN gives NaN)."""
        return mean_metrics(self.select(**where))

    def to_json(self) -> Dict[str, Any]:
        """A JSON-ready dict (NaN written as null)."""
        rows = [{k: None if _is_nan(v) else v for k, v in r.as_row().items()} for r in self.records]
        return {
            "lpips_status": self.lpips_status,
            "background": self.background,
            "notes": self.notes,
            "training_light": self.training_light,
            "records": rows,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "EvaluationResult":
        """The inverse of ``to_json``."""
        return cls(
            records=[EvalRecord.from_row(r) for r in data["records"]],
            lpips_status=str(data.get("lpips_status", "n/a (not computed)")),
            background=float(data.get("background", 1.0)),
            notes=list(data.get("notes", [])),
            training_light=data.get("training_light"),
        )


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def mean_metrics(records: Sequence[EvalRecord]) -> Dict[str, float]:
    """Per-metric mean over ``records``, leaving out NaN; NaN where every value is NaN.

    Example:
        >>> a = EvalRecord("o", "l", "m", "v0", {"psnr": 20.0, "ssim": math.nan})
        >>> b = EvalRecord("o", "l", "m", "v1", {"psnr": 30.0, "ssim": 0.5})
        >>> means = mean_metrics([a, b])
        >>> means["psnr"], means["ssim"], math.isnan(means["lpips"])
        (25.0, 0.5, True)
    """
    out = {}
    for k in METRICS:
        values = [v for v in (r.metrics.get(k, math.nan) for r in records) if not math.isnan(v)]
        out[k] = sum(values) / len(values) if values else math.nan
    return out


def records_to_result(records: Sequence[Union[EvalRecord, Mapping[str, Any]]], **settings: Any) -> EvaluationResult:
    """An ``EvaluationResult`` from records or flat dicts (``EvalRecord.as_row`` format)."""
    converted = [r if isinstance(r, EvalRecord) else EvalRecord.from_row(r) for r in records]
    return EvaluationResult(records=converted, **settings)


def write_result(result: EvaluationResult, path: Union[str, Path]) -> Path:
    """Write ``result`` as JSON (``EvaluationResult.to_json``); returns the path."""
    out = Path(path)
    out.write_text(json.dumps(result.to_json(), indent=1), encoding="utf-8")
    return out


def read_result(path: Union[str, Path]) -> EvaluationResult:
    """Read a result written by :func:`write_result` (a report's ``records.json``).

    Raises:
        DataError: the file is missing or malformed JSON, or its records lack a method or a view.
    """
    from relight3d.data.validation import load_json

    data = load_json(Path(path))
    records = data.get("records")
    if not isinstance(records, list) or not all(isinstance(r, dict) and "method" in r and "view" in r for r in records):
        raise DataError(path, "not evaluation records: 'records' must be a list of rows with a method and a view")
    return EvaluationResult.from_json(data)


__all__ = [
    "BASELINE_METHOD",
    "EvalRecord",
    "EvaluationResult",
    "mean_metrics",
    "read_result",
    "records_to_result",
    "write_result",
]
