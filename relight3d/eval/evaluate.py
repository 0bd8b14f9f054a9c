"""Evaluate folders of renders against ground truth, for one method or many, with the "no relighting" baseline.

The data model is a flat list of ``EvalRecord`` s, one per (object, light, method, view) with its metrics; an
``EvaluationResult`` holds them with the settings they were computed under. The relighting pipeline can build records
itself (``EvalRecord(...)``) or through ``evaluate_folders``; ``relight3d.eval.report.write_report`` turns either into
tables and an HTML report.

The "no relighting" baseline predicts, for a view under light k, the same view under the training light (light 0 of
the benchmark): the appearance the radiance field had before relighting. Methods must beat it to have relit anything.

Manifest (JSON or YAML; relative paths are relative to the manifest's folder; ``{object}`` and ``{light}`` are
filled in)::

    training_light: light000          # its GT images are the baseline and the "input" column (optional)
    background: white                 # white | black | a number in [0, 1] (optional, default white)
    objects: [bunny, teapot]
    lights: [light000, light001]
    gt: gt/{object}/{light}
    methods:
      ours: runs/ours/{object}/{light}
      neural-gaffer: {dir: "runs/gaffer/{object}", pattern: "(\\d{3})_{light}\\.png"}

A folder can be a path or ``{dir, pattern}`` (see ``ImageFolder``). Methods are scored under every listed light; the
baseline under every light except the training light.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from relight3d.errors import DataError
from relight3d.eval.folders import ImageFolder, PathLike, load_pair, match_views
from relight3d.eval.metrics import METRICS, lpips_model, score_image

BASELINE_METHOD = "no relighting"
"""Method name of the baseline that keeps the training-light appearance."""
NO_MASK_NOTE = "no object mask (--no-mask): in-mask metrics are n/a, channel alignment uses the whole image"
"""The note of a result scored without the ground truth's alpha."""

FolderLike = Union[ImageFolder, PathLike]


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
        rows = [{k: _json_value(v) for k, v in r.as_row().items()} for r in self.records]
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


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def mean_metrics(records: Sequence[EvalRecord]) -> Dict[str, float]:
    """Per-metric mean over ``records``, leaving out NaN; NaN where every value is NaN."""
    out = {}
    for k in METRICS:
        values = [r.metrics.get(k, math.nan) for r in records]
        values = [v for v in values if not math.isnan(v)]
        out[k] = sum(values) / len(values) if values else math.nan
    return out


def parse_background(value: Union[str, float]) -> float:
    """``"white"`` -> 1, ``"black"`` -> 0, or a number in [0, 1]."""
    named = {"white": 1.0, "black": 0.0}
    if isinstance(value, str) and value.strip().lower() in named:
        return named[value.strip().lower()]
    try:
        level = float(value)
    except ValueError:
        raise ValueError(f"background must be white, black or a number in [0, 1], not {value!r}") from None
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"background must be in [0, 1], not {level}")
    return level


def evaluate_folders(
    pred_dir: FolderLike,
    gt_dir: FolderLike,
    *,
    method: str = "prediction",
    object_name: str = "object",
    light: str = "light",
    input_dir: Optional[FolderLike] = None,
    background: Union[str, float] = 1.0,
    lpips: Optional[str] = "alex",
    device: str = "cpu",
    use_mask: bool = True,
) -> EvaluationResult:
    """Score every PNG of ``pred_dir`` against the PNG of the same name in ``gt_dir``.

    Args:
        pred_dir: the method's renders (RGB, or RGBA composited with their own alpha).
        gt_dir: the ground truth, RGBA; its alpha > 0.5 is the object mask.
        method: name of the method in the records.
        object_name: name of the object in the records.
        light: name of the light in the records.
        input_dir: the same views under the training light, linked from the records for the report's grids.
        background: grey level both are composited on ("white", "black" or a number).
        lpips: LPIPS backbone ("alex", "vgg") or None to skip it. Without weights on disk LPIPS is NaN and
            ``lpips_status`` says ``n/a (no LPIPS weights)``.
        device: where LPIPS runs.
        use_mask: False scores ground truth without alpha: the in-mask metrics are NaN (n/a), channel alignment
            uses the whole image, and ``result.notes`` says so. True (the default) refuses such ground truth.

    Returns:
        One record per view; ``result.mean()`` gives the means.

    Raises:
        DataError: a folder is missing or empty, the two folders hold different views, two images differ in size, or
            a ground-truth image has no alpha channel while ``use_mask``.
    """
    pred_folder, gt_folder = ImageFolder.of(pred_dir), ImageFolder.of(gt_dir)
    level = parse_background(background)
    pairs = match_views(pred_folder, gt_folder)
    inputs = _optional_views(input_dir)
    model, status = lpips_model(lpips, device)
    result = EvaluationResult(lpips_status=status, background=level)
    too_small = False
    for view, pred_path, gt_path in pairs:
        pred, gt, mask = load_pair(pred_path, gt_path, level, use_mask)
        if model is not None and min(gt.shape[:2]) < model.spec.min_size:
            too_small = True
        metrics, scale = score_image(pred, gt, mask, model)
        if not use_mask:
            metrics = {k: math.nan if "_masked" in k else v for k, v in metrics.items()}
        result.records.append(
            EvalRecord(
                object=object_name,
                light=light,
                method=method,
                view=view,
                metrics=metrics,
                scale=scale,
                pred_path=str(pred_path),
                gt_path=str(gt_path),
                input_path=str(inputs[view]) if view in inputs else None,
            )
        )
    if too_small:
        result.notes.append(f"LPIPS is n/a for images smaller than {model.spec.min_size} px")
    if not use_mask:
        result.notes.append(NO_MASK_NOTE)
    return result


def _optional_views(folder: Optional[FolderLike]) -> Dict[str, Path]:
    return {} if folder is None else ImageFolder.of(folder).views()


def compare(
    gt_dir: FolderLike,
    methods: Mapping[str, FolderLike],
    *,
    baseline_dir: Optional[FolderLike] = None,
    input_dir: Optional[FolderLike] = None,
    object_name: str = "object",
    light: str = "light",
    output: Optional[PathLike] = None,
    background: Union[str, float] = 1.0,
    lpips: Optional[str] = "alex",
    device: str = "cpu",
    title: str = "relight3d evaluation",
    use_mask: bool = True,
) -> EvaluationResult:
    """Score several methods (and the baseline) on one object under one light, and write the report if asked.

    Args:
        gt_dir: ground truth under the target light.
        methods: ``{method name: folder of its renders}``.
        baseline_dir: the same views under the training light; scored as the ``"no relighting"`` method and shown
            as the input column (unless ``input_dir`` is given).
        input_dir: the images shown as input in the report's grids.
        object_name: name of the object in the records.
        light: name of the target light in the records.
        output: folder for the report (``write_report``); None writes nothing.
        background: as in ``evaluate_folders``.
        lpips: as in ``evaluate_folders``.
        device: as in ``evaluate_folders``.
        title: heading of the HTML report.
        use_mask: as in ``evaluate_folders``.
    """
    runs = [(name, folder) for name, folder in methods.items()]
    if baseline_dir is not None:
        runs.append((BASELINE_METHOD, baseline_dir))
    if not runs:
        raise ValueError("compare needs at least one method or a baseline")
    shown_input = input_dir if input_dir is not None else baseline_dir
    result: Optional[EvaluationResult] = None
    for name, folder in runs:
        part = evaluate_folders(
            folder,
            gt_dir,
            method=name,
            object_name=object_name,
            light=light,
            input_dir=shown_input,
            background=background,
            lpips=lpips,
            device=device,
            use_mask=use_mask,
        )
        result = part if result is None else result.extend(part)
    assert result is not None
    if output is not None:
        from relight3d.eval.report import write_report

        write_report(result, output, title=title)
    return result


# --- manifests ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestEntry:
    """One (object, light, method) run named by a manifest."""

    object: str
    """Object name."""
    light: str
    """Target light name."""
    method: str
    """Method name (``BASELINE_METHOD`` for the baseline)."""
    pred: ImageFolder
    """The renders."""
    gt: ImageFolder
    """The ground truth."""
    input: Optional[ImageFolder]
    """The training-light images of the same views, if the manifest names a training light."""


def read_manifest(path: PathLike) -> Dict[str, Any]:
    """Parse a JSON or YAML manifest (by suffix: .json, else YAML).

    Raises:
        DataError: the file is missing or does not parse into a mapping.
    """
    from relight3d.data.validation import check_regular_file

    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file")
    check_regular_file(path, "manifest")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as err:  # UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError
        problem = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(path, f"cannot parse the manifest ({problem})") from None
    if not isinstance(data, dict):
        raise DataError(path, "the manifest must be a mapping with objects, lights, gt and methods")
    return data


def expand_manifest(
    manifest: Mapping[str, Any], root: PathLike = ".", source: PathLike = "manifest"
) -> List[ManifestEntry]:
    """The runs a manifest names: every method under every light of every object, plus the baseline.

    Args:
        manifest: the parsed manifest (see the module docstring).
        root: folder that relative paths are relative to.
        source: file name used in error messages.
    """
    root = Path(root)
    for key in ("objects", "lights", "gt"):
        if key not in manifest:
            raise DataError(source, f"the manifest has no '{key}'")
    objects, lights = _names(manifest["objects"], "objects", source), _names(manifest["lights"], "lights", source)
    methods = manifest.get("methods") or {}
    if not isinstance(methods, dict):
        raise DataError(source, "'methods' must map method names to folders")
    training = manifest.get("training_light")
    if not methods and training is None:
        raise DataError(source, "the manifest names no methods and no training_light (for the baseline)")

    def folder(value: Any, obj: str, light: str, what: str) -> ImageFolder:
        try:
            return _folder(value, obj, light, what)
        except (KeyError, ValueError, IndexError) as err:  # str.format on a bad placeholder
            raise DataError(source, f"{what}: bad placeholder in {value!r} ({type(err).__name__}: {err})") from None

    def _folder(value: Any, obj: str, light: str, what: str) -> ImageFolder:
        if isinstance(value, str):
            return ImageFolder(root / value.format(object=obj, light=light))
        if isinstance(value, dict) and "dir" in value:
            pattern = value.get("pattern")
            return ImageFolder(
                root / str(value["dir"]).format(object=obj, light=light),
                None if pattern is None else str(pattern).replace("{object}", obj).replace("{light}", light),
            )
        raise DataError(source, f"{what} must be a path or {{dir, pattern}}, not {value!r}")

    entries = []
    for obj in objects:
        input_folder = None if training is None else folder(manifest["gt"], obj, str(training), "gt")
        for light in lights:
            gt = folder(manifest["gt"], obj, light, "gt")
            for name, value in methods.items():
                entries.append(
                    ManifestEntry(obj, light, str(name), folder(value, obj, light, f"method {name}"), gt, input_folder)
                )
            if input_folder is not None and light != str(training):
                entries.append(ManifestEntry(obj, light, BASELINE_METHOD, input_folder, gt, input_folder))
    if not entries:
        raise DataError(source, "nothing to evaluate (no methods, and no light but the training light)")
    return entries


def _names(value: Any, key: str, source: PathLike) -> List[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, (str, int)) for v in value):
        return [str(v) for v in value]
    raise DataError(source, f"'{key}' must be a non-empty list of names")


def evaluate_manifest(
    manifest: Union[PathLike, Mapping[str, Any]],
    *,
    output: Optional[PathLike] = None,
    background: Optional[Union[str, float]] = None,
    lpips: Optional[str] = "alex",
    device: str = "cpu",
    title: str = "relight3d evaluation",
    use_mask: bool = True,
) -> EvaluationResult:
    """Score every (object, light, method) of a manifest (a file, or an already parsed mapping with paths relative to
    the working directory) and write the report to ``output`` if given.

    ``background`` overrides the manifest's; ``use_mask`` is as in ``evaluate_folders``.
    """
    if isinstance(manifest, Mapping):
        data, root, source = manifest, Path("."), "manifest"
    else:
        data, root, source = read_manifest(manifest), Path(manifest).parent, manifest
    level = background if background is not None else data.get("background", 1.0)
    try:
        level = parse_background(level)
    except ValueError as err:
        raise DataError(source, str(err)) from None
    result: Optional[EvaluationResult] = None
    for entry in expand_manifest(data, root, source):
        part = evaluate_folders(
            entry.pred,
            entry.gt,
            method=entry.method,
            object_name=entry.object,
            light=entry.light,
            input_dir=entry.input,
            background=level,
            lpips=lpips,
            device=device,
            use_mask=use_mask,
        )
        result = part if result is None else result.extend(part)
    assert result is not None  # expand_manifest returns at least one entry, or raises
    training = data.get("training_light")
    result.training_light = None if training is None else str(training)
    if output is not None:
        from relight3d.eval.report import write_report

        write_report(result, output, title=title)
    return result


def records_to_result(records: Sequence[Union[EvalRecord, Mapping[str, Any]]], **settings: Any) -> EvaluationResult:
    """An ``EvaluationResult`` from records or flat dicts (``EvalRecord.as_row`` format)."""
    converted = [r if isinstance(r, EvalRecord) else EvalRecord.from_row(r) for r in records]
    return EvaluationResult(records=converted, **settings)


__all__ = [
    "BASELINE_METHOD",
    "EvalRecord",
    "EvaluationResult",
    "ManifestEntry",
    "compare",
    "evaluate_folders",
    "evaluate_manifest",
    "expand_manifest",
    "mean_metrics",
    "parse_background",
    "read_manifest",
    "records_to_result",
]
