"""Score folders of renders against ground truth: one method (:func:`evaluate_folders`), several methods and the
"no relighting" baseline on one object and light (:func:`compare`), or everything a manifest names
(:func:`evaluate_manifest`). Each returns an :class:`~relight3d.eval.records.EvaluationResult`; writing the report
is :func:`relight3d.eval.report.write_report`'s job.

The "no relighting" baseline predicts, for a view under light k, the same view under the training light (light 0 of
the benchmark): the appearance the radiance field had before relighting. Methods must beat it to have relit anything.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from relight3d.errors import DataError
from relight3d.eval.folders import ImageFolder, PathLike, load_pair, match_views, parse_background
from relight3d.eval.manifest import EvalRun, expand_manifest, read_manifest
from relight3d.eval.metrics import lpips_model, score_image
from relight3d.eval.records import BASELINE_METHOD, EvalRecord, EvaluationResult

NO_MASK_NOTE = "no object mask (--no-mask): in-mask metrics are n/a, channel alignment uses the whole image"
"""The note of a result scored without the ground truth's alpha."""

FolderLike = Union[ImageFolder, PathLike]


def evaluate_runs(
    runs: Sequence[EvalRun],
    *,
    background: Union[str, float] = 1.0,
    lpips: Optional[str] = "alex",
    device: str = "cpu",
    use_mask: bool = True,
) -> EvaluationResult:
    """Score every view of every run: each PNG of ``run.pred`` against the PNG of the same view in ``run.gt``.

    Args:
        runs: what to score (see :class:`~relight3d.eval.manifest.EvalRun`).
        background: grey level both images are composited on ("white", "black" or a number in [0, 1]).
        lpips: LPIPS backbone ("alex", "vgg") or None to skip it. Without weights on disk LPIPS is NaN and
            ``lpips_status`` says ``n/a (no LPIPS weights)``.
        device: where LPIPS runs.
        use_mask: False scores ground truth without alpha: the in-mask metrics are NaN (n/a), channel alignment
            uses the whole image, and ``result.notes`` says so. True (the default) refuses such ground truth.

    Raises:
        DataError: a folder is missing or empty, two folders hold different views, two images differ in size, or
            a ground-truth image has no alpha channel while ``use_mask``.
    """
    level = parse_background(background)
    model, status = lpips_model(lpips, device)
    result = EvaluationResult(lpips_status=status, background=level)
    too_small = False
    for run in runs:
        inputs = {} if run.input is None else run.input.views()
        for view, pred_path, gt_path in match_views(run.pred, run.gt):
            pred, gt, mask = load_pair(pred_path, gt_path, level, use_mask)
            too_small = too_small or (model is not None and min(gt.shape[:2]) < model.spec.min_size)
            metrics, scale = score_image(pred, gt, mask, model)
            if not use_mask:
                metrics = {k: math.nan if "_masked" in k else v for k, v in metrics.items()}
            record = EvalRecord(
                object=run.object,
                light=run.light,
                method=run.method,
                view=view,
                metrics=metrics,
                scale=scale,
                pred_path=str(pred_path),
                gt_path=str(gt_path),
                input_path=str(inputs[view]) if view in inputs else None,
            )
            result.records.append(record)
    if too_small:
        result.notes.append(f"LPIPS is n/a for images smaller than {model.spec.min_size} px")
    if not use_mask:
        result.notes.append(NO_MASK_NOTE)
    return result


def evaluate_folders(
    pred_dir: FolderLike,
    gt_dir: FolderLike,
    *,
    method: str = "prediction",
    object_name: str = "object",
    light: str = "light",
    input_dir: Optional[FolderLike] = None,
    **settings: Any,
) -> EvaluationResult:
    """Score every PNG of ``pred_dir`` against the PNG of the same name in ``gt_dir`` (RGBA: its alpha > 0.5 is the
    object mask).

    Args:
        pred_dir: the method's renders (RGB, or RGBA composited with their own alpha).
        gt_dir: the ground truth.
        method: name of the method in the records.
        object_name: name of the object in the records.
        light: name of the light in the records.
        input_dir: the same views under the training light, linked from the records for the report's grids.
        **settings: ``background``, ``lpips``, ``device``, ``use_mask`` as in :func:`evaluate_runs`.

    Returns:
        One record per view; ``result.mean()`` gives the means.
    """
    run = EvalRun(object_name, light, method, ImageFolder.of(pred_dir), ImageFolder.of(gt_dir), _folder(input_dir))
    return evaluate_runs([run], **settings)


def compare(
    gt_dir: FolderLike,
    methods: Mapping[str, FolderLike],
    *,
    baseline_dir: Optional[FolderLike] = None,
    input_dir: Optional[FolderLike] = None,
    object_name: str = "object",
    light: str = "light",
    **settings: Any,
) -> EvaluationResult:
    """Score several methods (and the baseline) on one object under one light.

    Args:
        gt_dir: ground truth under the target light.
        methods: ``{method name: folder of its renders}``.
        baseline_dir: the same views under the training light; scored as the ``"no relighting"`` method and shown
            as the input column (unless ``input_dir`` is given).
        input_dir: the images shown as input in the report's grids.
        object_name: name of the object in the records.
        light: name of the target light in the records.
        **settings: ``background``, ``lpips``, ``device``, ``use_mask`` as in :func:`evaluate_runs`.

    Raises:
        ValueError: no method and no baseline.
    """
    named = dict(methods)
    if baseline_dir is not None:
        named[BASELINE_METHOD] = baseline_dir
    if not named:
        raise ValueError("compare needs at least one method or a baseline")
    gt, shown = ImageFolder.of(gt_dir), _folder(input_dir if input_dir is not None else baseline_dir)
    runs = [EvalRun(object_name, light, name, ImageFolder.of(folder), gt, shown) for name, folder in named.items()]
    return evaluate_runs(runs, **settings)


def evaluate_manifest(
    manifest: Union[PathLike, Mapping[str, Any]],
    *,
    background: Optional[Union[str, float]] = None,
    **settings: Any,
) -> EvaluationResult:
    """Score every (object, light, method) of a manifest (a file, or an already parsed mapping with paths relative
    to the working directory).

    ``background`` overrides the manifest's; ``settings`` (``lpips``, ``device``, ``use_mask``) are as in
    :func:`evaluate_runs`.
    """
    if isinstance(manifest, Mapping):
        data, root, source = manifest, Path("."), "manifest"
    else:
        data, root, source = read_manifest(manifest), Path(manifest).parent, manifest
    try:
        level = parse_background(background if background is not None else data.get("background", 1.0))
    except ValueError as err:
        raise DataError(source, str(err)) from err
    result = evaluate_runs(expand_manifest(data, root, source), background=level, **settings)
    training = data.get("training_light")
    result.training_light = None if training is None else str(training)
    return result


def _folder(value: Optional[FolderLike]) -> Optional[ImageFolder]:
    return None if value is None else ImageFolder.of(value)


__all__ = [
    "BASELINE_METHOD",
    "NO_MASK_NOTE",
    "compare",
    "evaluate_folders",
    "evaluate_manifest",
    "evaluate_runs",
]
