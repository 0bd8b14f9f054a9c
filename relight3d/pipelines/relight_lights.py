"""The two lights of a relighting run: the target map, and the source (training) light that priors divide out.

The source light is, first match wins: the map given in the config, the map the data records (the Objaverse parser's
map of the training light, or ``lights[0].file`` of the data folder's ``meta.json``), or an estimate from the field
(:func:`estimate_source_envmap`; only for priors that need a source light).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional, Tuple

from jaxtyping import Float
from torch import Tensor

from relight3d.errors import ConfigError, DataError


def read_target_envmap(path: Optional[Path], strength: float, rotation_deg: float) -> Float[Tensor, "h w 3"]:
    """The target map with its strength and its rotation about the world's up axis applied, in world coordinates.

    Raises:
        ConfigError: no map is given.
        DataError: the map cannot be read as an HDR environment map.
    """
    from relight3d.lighting import read_envmap, rotate_envmap_about_up

    if path is None:
        raise ConfigError("--pipeline.target-envmap", "relighting needs a target environment map")
    env = read_envmap(path) * strength
    if rotation_deg:
        env = rotate_envmap_about_up(env, math.radians(rotation_deg))
    return env


def recorded_source_envmap(datamanager: Any) -> Optional[Path]:
    """The training light's map as the data records it: the dataparser's (Objaverse layout) or ``lights[0]`` of
    the data folder's ``meta.json`` (the Cycles benchmark's Blender layout and ``relight3d demo``); None if neither.

    Raises:
        DataError: ``lights[0].file`` points outside the data folder (unless the dataparser allows outside paths).
    """
    from relight3d.data.validation import resolve_inside

    meta = datamanager.train_dataparser_outputs.metadata
    paths = [p for p in (meta.get("envmap_paths") or {}).values() if p is not None]
    if len(paths) == 1:
        return Path(paths[0])
    data = datamanager.config.data
    meta_path = Path(data) / "meta.json" if data is not None else None
    if meta_path is None or not meta_path.is_file():
        return None
    try:
        lights = json.loads(meta_path.read_text()).get("lights")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(lights, list) or not lights or not isinstance(lights[0], dict):
        return None
    file = lights[0].get("file")
    if not isinstance(file, str) or not file:
        return None
    allow = bool(getattr(datamanager.config.dataparser, "allow_outside_paths", False))
    path = resolve_inside(Path(data), file, meta_path, "lights[0].file", allow)
    return path if path.is_file() else None


def source_envmap_path(given: Optional[Path], estimate: bool, datamanager: Any) -> Tuple[Optional[Path], str]:
    """The map of the source light and where it comes from (``"given"`` or ``"recorded by the data"``), or
    ``(None, "")`` when it must be estimated (``estimate``) or is unknown.

    Raises:
        ConfigError: ``given`` and ``estimate`` both set.
    """
    if estimate and given is not None:
        raise ConfigError("--pipeline.estimate-source", "cannot be combined with --pipeline.source-envmap")
    if estimate:
        return None, ""
    if given is not None:
        return Path(given), "given"
    recorded = recorded_source_envmap(datamanager)
    return (recorded, "recorded by the data") if recorded is not None else (None, "")


def estimate_source_envmap(
    images: Float[Tensor, "n h w 3"],
    gbuffers: dict,
    alpha: Optional[Float[Tensor, "n h w 1"]],
    assumed_albedo: float,
    out_path: Path,
    field_run: Any,
) -> Tuple[Float[Tensor, "h w 3"], str]:
    """Order-2 SH lighting fitted to the training images at the field's (multi-view) normals, written to
    ``out_path`` (an .exr) and announced on the console; returns the map and a line saying where it came from.

    Args:
        images: The training images under the source light (straight RGB).
        gbuffers: The training views' G-buffers (``normals``, ``accumulation``, optionally ``multiview_normals``).
        alpha: The images' alpha, when they have one (pixels must be inside it and the rendered mask).
        assumed_albedo: The albedo the 95th percentile of the implied albedo is scaled to.
        out_path: Where the estimate is written.
        field_run: The field's config.yml (names the error when the fit fails).

    Raises:
        DataError: too few object pixels to fit the lighting.
    """
    from nerfstudio.utils.rich_utils import CONSOLE

    from relight3d.lighting import write_envmap
    from relight3d.lighting.estimate import estimate_light_from_views

    normals = gbuffers.get("multiview_normals", gbuffers["normals"])
    masks = (gbuffers["accumulation"] > 0.5).float()
    if alpha is not None:
        masks = masks * (alpha > 0.5).float()
    try:
        estimate = estimate_light_from_views(images, normals, masks, assumed_albedo=assumed_albedo)
    except ValueError as err:
        raise DataError(field_run or "--pipeline.field-run", f"cannot estimate the source light: {err}") from err
    out_path.parent.mkdir(parents=True, exist_ok=True)
    write_envmap(out_path, estimate.envmap)
    origin = (
        f"estimated from the field (order-2 SH, {estimate.n_samples} pixels, fit residual "
        f"{estimate.relative_residual:.2f}): {out_path}"
    )
    CONSOLE.print(
        f"relight3d: no source light given or recorded by the data: estimated it from the training views "
        f"(order-2 SH at the field's normals, albedo scale assumed {assumed_albedo}); "
        f"written to {out_path}. Pass --source-envmap FILE (pipeline.source-envmap) if you know it."
    )
    return estimate.envmap, origin
