"""Held-out ground truth for ``relight3d relight``: which views, under which light, and the baseline beside them.

Where the ground truth under a target map comes from (:func:`find_eval_views`), first match wins:

1. ``--eval-data DIR`` (one folder per map, in order): a Blender-layout folder whose ``transforms_test.json`` views
   are rendered under that map;
2. the Cycles benchmark's Blender layout in the data folder: ``meta.json`` lists the lights by name and
   ``transforms_test_light{k}.json`` holds light ``k``'s test views (the map's file stem names the light);
3. the Objaverse / Neural Gaffer layout: ``{view:03d}_{light:03d}_{envname}.png``, the light found by the map's
   file stem.

Blender-layout cameras are read as nerfstudio's Blender parser reads them (so they are in the world of a field
trained with the ``blender-data`` or ``relight3d-objaverse`` parser). The baseline's images, when the data has the
same views under the training light, come with them (:attr:`EvalViews.baseline`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from relight3d.errors import ConfigError


@dataclass
class EvalViews:
    """Held-out views with ground truth under one target map."""

    gt: Dict[str, Path]
    """``{output file name: ground-truth image}``."""
    cameras: Any = None
    """nerfstudio ``Cameras`` of the views in ``gt``'s order; None: the pipeline's own eval views
    (``views``)."""
    views: Optional[List[int]] = None
    """With ``cameras`` None: the pipeline's eval view indices, in ``gt``'s order."""
    baseline: Dict[str, Path] = field(default_factory=dict)
    """The data's images of the same views under the training light (empty: the field renders the baseline)."""
    source: str = ""
    """Where the ground truth came from (for the summary)."""


def gt_views_for_light(folder: Path, envname: str, views: Sequence[int]) -> Tuple[Optional[int], Dict[int, Path]]:
    """The light index whose images are named after ``envname`` and its image per view (Objaverse layout)."""
    from relight3d.data.objaverse import scan_object_folder

    found = scan_object_folder(folder)
    for light in sorted({k for v in found.values() for k in v}):
        paths = {
            v: found[v][light][1] for v in views if v in found and light in found[v] and found[v][light][0] == envname
        }
        if paths:
            return light, paths
    return None, {}


def training_light_views(folder: Path, light: int, views: Sequence[int]) -> Dict[int, Path]:
    """Images of ``views`` under the training light ``light``."""
    from relight3d.data.objaverse import scan_object_folder

    found = scan_object_folder(folder)
    return {v: found[v][light][1] for v in views if v in found and light in found[v]}


def blender_eval_cameras(folder: Path, split: str = "test", scale_factor: float = 1.0) -> Tuple[Any, List[Path]]:
    """Cameras and images of ``transforms_<split>.json`` in a Blender-layout folder (checked like training data:
    one-line errors, images inside the folder), in the world of a field trained with the Blender parser."""
    from nerfstudio.cameras.cameras import Cameras, CameraType

    from relight3d.data.validation import check_blender_split, image_size

    meta, images = check_blender_split(Path(folder), split)
    (width, height), _ = image_size(images[0])
    poses = torch.tensor(
        np.array([np.asarray(f["transform_matrix"], dtype=np.float64)[:3] for f in meta["frames"]]),
        dtype=torch.float32,
    )
    poses[..., 3] *= scale_factor
    focal = 0.5 * width / math.tan(0.5 * float(meta["camera_angle_x"]))
    cameras = Cameras(
        camera_to_worlds=poses, fx=focal, fy=focal, cx=width / 2.0, cy=height / 2.0,
        width=width, height=height, camera_type=CameraType.PERSPECTIVE,
    )  # fmt: skip
    return cameras, images


def _same_cameras(a: Any, b: Any) -> bool:
    return a.camera_to_worlds.shape == b.camera_to_worlds.shape and bool(
        torch.allclose(a.camera_to_worlds, b.camera_to_worlds, atol=1e-5)
        and torch.allclose(a.fx, b.fx, rtol=1e-4)
        and torch.equal(a.width, b.width)
        and torch.equal(a.height, b.height)
    )


def _blender_eval(data: Path, folder: Path, split: str, scale: float, source: str) -> EvalViews:
    cameras, images = blender_eval_cameras(folder, split, scale)
    names = [f"{i:03d}.png" for i in range(len(images))]
    baseline: Dict[str, Path] = {}
    if (data / "transforms_test.json").is_file() and not (Path(folder) == data and split == "test"):
        train_light_cams, train_light_images = blender_eval_cameras(data, "test", scale)
        if _same_cameras(cameras, train_light_cams):
            baseline = dict(zip(names, train_light_images))
    return EvalViews(gt=dict(zip(names, images)), cameras=cameras, baseline=baseline, source=source)


def _benchmark_light_split(data: Path, envname: str) -> Optional[str]:
    """``test_light{k}`` when the data folder's ``meta.json`` lists light ``k`` named ``envname`` and that split
    exists (the Cycles benchmark's Blender layout)."""
    from relight3d.data.benchmark_layout import read_meta, split_for_light

    for k, light in enumerate(read_meta(data).get("lights") or []):
        if isinstance(light, dict) and light.get("name") == envname and k > 0:
            split = split_for_light(k)
            if (data / f"transforms_{split}.json").is_file():
                return split
    return None


def find_eval_views(data: Path, envname: str, parser: Any, eval_data: Optional[Path] = None) -> Optional[EvalViews]:
    """The held-out views with ground truth under the map named ``envname`` (see the module docstring), or None.

    Raises:
        DataError: ``eval_data`` is not a valid Blender-layout folder.
        ConfigError: Blender-layout ground truth for a field whose dataparser moves the cameras.
    """
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

    from relight3d.data.objaverse import ObjaverseDataParserConfig

    split = None if eval_data is not None else _benchmark_light_split(data, envname)
    if eval_data is not None or split is not None:
        if not isinstance(parser, (BlenderDataParserConfig, ObjaverseDataParserConfig)):
            raise ConfigError(
                "--eval-data",
                f"Blender-layout ground truth needs a field trained with the blender-data or relight3d-objaverse "
                f"parser (cameras as in the files), not {type(parser).__name__}",
            )
        scale = float(getattr(parser, "scale_factor", 1.0)) if isinstance(parser, BlenderDataParserConfig) else 1.0
        if eval_data is not None:
            return _blender_eval(data, Path(eval_data), "test", scale, f"{eval_data}/transforms_test.json")
        return _blender_eval(data, data, split, scale, f"{data}/transforms_{split}.json")
    eval_views = list(range(*getattr(parser, "eval_views", (100, 120))))
    light, gt_paths = gt_views_for_light(data, envname, eval_views)
    if not gt_paths:
        return None
    names = {v: f"{v:03d}.png" for v in gt_paths}
    baseline = training_light_views(data, int(getattr(parser, "light_index", 0)), list(gt_paths))
    return EvalViews(
        gt={names[v]: p for v, p in gt_paths.items()},
        views=list(gt_paths),
        baseline={names[v]: p for v, p in baseline.items()},
        source=f"{data} (Objaverse layout, light {light})",
    )


__all__ = ["EvalViews", "blender_eval_cameras", "find_eval_views", "gt_views_for_light", "training_light_views"]
