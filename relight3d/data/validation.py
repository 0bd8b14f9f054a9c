"""Checks on input files that turn common mistakes into one-line :class:`DataError` messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Sequence, Tuple

import numpy as np
from PIL import Image

from relight3d.data.errors import DataError


def load_json(path: Path) -> Dict[str, Any]:
    """Read a JSON object, or raise a DataError for a missing or malformed file."""
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(path, f"malformed JSON ({err.__class__.__name__}: {err})") from None
    if not isinstance(data, dict):
        raise DataError(path, f"expected a JSON object, got {type(data).__name__}")
    return data


def check_pose(pose: Any, source: Path, what: str, rows: int = 4) -> np.ndarray:
    """A finite, invertible camera matrix (``rows`` x 4) or a DataError naming ``what`` in ``source``."""
    try:
        m = np.asarray(pose, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(source, f"{what}: pose is not a numeric matrix") from None
    if m.shape not in ((rows, 4), (4, 4)):
        raise DataError(source, f"{what}: pose has shape {m.shape}, expected ({rows}, 4)")
    if not np.isfinite(m).all():
        raise DataError(source, f"{what}: pose contains NaN or infinite values")
    rot = m[:3, :3]
    det = float(np.linalg.det(rot))
    if abs(det) < 1e-6 or not np.isfinite(det):
        raise DataError(source, f"{what}: pose is singular (det of rotation = {det:.3g})")
    return m[:rows]


def image_size(path: Path) -> Tuple[Tuple[int, int], str]:
    """``((width, height), mode)`` of an image file, or a DataError if it is missing or unreadable."""
    if not path.is_file():
        raise DataError(path, "image file not found")
    try:
        with Image.open(path) as im:
            return im.size, im.mode
    except Exception as err:  # PIL raises many types for corrupt files
        raise DataError(path, f"cannot read image ({err.__class__.__name__})") from None


def check_images(paths: Sequence[Path], require_alpha: bool = False) -> Tuple[int, int]:
    """All images exist, share one size, and (optionally) have an alpha channel. Returns ``(width, height)``."""
    if not paths:
        raise DataError(Path("."), "no images")
    first_size, _ = image_size(paths[0])
    for p in paths:
        size, mode = image_size(p)
        if size != first_size:
            raise DataError(p, f"image is {size[0]}x{size[1]} but {paths[0].name} is {first_size[0]}x{first_size[1]}")
        if require_alpha and mode not in ("RGBA", "LA", "PA") and not (mode == "P" and _has_transparency(p)):
            raise DataError(p, f"image has mode {mode} but an RGBA image (alpha = object mask) is required")
    return first_size


def _has_transparency(path: Path) -> bool:
    with Image.open(path) as im:
        return "transparency" in im.info


def check_blender_split(data: Path, split: str) -> Tuple[Dict[str, Any], List[Path]]:
    """Validate ``transforms_<split>.json`` of a Blender-format scene; returns the metadata and image paths."""
    path = data / f"transforms_{split}.json"
    meta = load_json(path)
    if "camera_angle_x" not in meta:
        raise DataError(path, "missing 'camera_angle_x'")
    try:
        angle = float(meta["camera_angle_x"])
    except (TypeError, ValueError):
        raise DataError(path, f"'camera_angle_x' is not a number: {meta['camera_angle_x']!r}") from None
    if not 0.0 < angle < np.pi:
        raise DataError(path, f"'camera_angle_x' = {angle} is outside (0, pi)")
    frames = meta.get("frames")
    if not isinstance(frames, list):
        raise DataError(path, "missing 'frames' list")
    if not frames:
        raise DataError(path, "empty dataset: 'frames' is empty")
    images = []
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict) or "file_path" not in frame or "transform_matrix" not in frame:
            raise DataError(path, f"frame {i} needs 'file_path' and 'transform_matrix'")
        check_pose(frame["transform_matrix"], path, f"frame {i} ({frame['file_path']})")
        images.append(data / Path(str(frame["file_path"]).replace("./", "") + ".png"))
    check_images(images)
    return meta, images


def first_missing(paths: Iterable[Path]) -> Path | None:
    """The first path that does not exist, or None."""
    for p in paths:
        if not p.exists():
            return p
    return None
