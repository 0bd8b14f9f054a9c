"""A single RGBA image as a dataset: the input view of single-image reconstruction.

The camera looks at the origin from ``radius`` away, at ``elevation`` degrees above the horizontal plane (world
Z up, as in Blender). Azimuth 0 is Blender's front view: the camera sits on the -Y axis and looks along +Y. The pose is
:func:`relight3d.geometry.look_at` of :func:`relight3d.geometry.orbit_positions`, as everywhere in relight3d.

Padded copies of non-square images (:func:`pad_image_to_square`) are cached under the user's cache folder
(``$RELIGHT3D_CACHE``, else ``~/.cache/relight3d``), in ``padded/``, named by a hash of the image's content: never in
a shared temporary folder where another user could plant a file under the expected name.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Type

import numpy as np
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from PIL import Image

from relight3d.data.images import read_rgba
from relight3d.data.object_outputs import ObjectDataParser, ObjectDataParserConfig, object_outputs
from relight3d.data.validation import check_images
from relight3d.errors import ConfigError, DataError
from relight3d.geometry import look_at, orbit_positions

CACHE_ENV = "RELIGHT3D_CACHE"
"""Environment variable naming relight3d's cache folder (default ``~/.cache/relight3d``)."""


def user_cache_dir() -> Path:
    """relight3d's per-user cache folder: ``$RELIGHT3D_CACHE``, else ``~/.cache/relight3d``."""
    value = os.environ.get(CACHE_ENV)
    return Path(value).expanduser() if value else Path.home() / ".cache" / "relight3d"


def pad_image_to_square(path: Path, out_dir: Optional[Path] = None) -> Path:
    """Pad an image with transparent pixels to a centred square; returns the written PNG.

    The file is named after a SHA-256 hash of the input's content, in ``out_dir`` (default: ``padded/`` in
    :func:`user_cache_dir`), so repeated runs reuse it and a changed image never reuses a stale copy.

    Raises:
        DataError: the input is not a valid image (see :func:`relight3d.data.validation.inspect_image`).
    """
    path = Path(path)
    rgba, _ = read_rgba(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:24]
    out_dir = Path(out_dir) if out_dir is not None else user_cache_dir() / "padded"
    out = out_dir / f"{digest}-square.png"
    if out.is_file() and not out.is_symlink():
        return out
    h, w = rgba.shape[:2]
    side = max(w, h)
    canvas = np.zeros((side, side, 4), dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top : top + h, left : left + w] = np.round(rgba * 255.0).astype(np.uint8)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{digest}-{os.getpid()}.tmp.png"
    Image.fromarray(canvas, "RGBA").save(tmp)
    tmp.replace(out)
    return out


@dataclass
class SingleImageDataParserConfig(ObjectDataParserConfig):
    """One RGBA image (alpha = object mask) seen from a configurable camera."""

    _target: Type = field(default_factory=lambda: SingleImageDataParser)
    """Dataparser class to instantiate."""
    data: Path = Path("image.png")
    """The RGBA image."""
    elevation: float = 0.0
    """Camera elevation in degrees."""
    azimuth: float = 0.0
    """Camera azimuth in degrees (0 = front, the -Y axis)."""
    radius: float = 3.2
    """Camera distance from the origin."""
    fov: float = 40.0
    """Horizontal field of view in degrees."""


class SingleImageDataParser(ObjectDataParser):
    """The same single view for train and eval."""

    config: SingleImageDataParserConfig

    def _check_config(self) -> None:
        super()._check_config()
        c = self.config
        for name in ("elevation", "azimuth", "radius", "fov"):
            if not math.isfinite(getattr(c, name)):
                raise ConfigError(name, f"must be a finite number, got {getattr(c, name)}")
        if not c.radius > 0:
            raise ConfigError("radius", f"the camera distance must be positive, got {c.radius}")
        if not 0.0 < c.fov < 180.0:
            raise ConfigError("fov", f"the field of view must be in (0, 180) degrees, got {c.fov}")

    def _generate_dataparser_outputs(self, split: str = "train") -> DataparserOutputs:
        self._check_config()
        path = Path(self.config.data)
        check_images([path], require_alpha=True)  # the same one-line refusal as the other dataparsers
        rgba, _ = read_rgba(path)
        height, width = rgba.shape[:2]
        if int((rgba[..., 3] > 0.5).sum()) == 0:
            raise DataError(path, "the alpha mask is empty (no pixel has alpha > 0.5)")
        focal = 0.5 * width / math.tan(math.radians(self.config.fov) / 2.0)
        c2w = look_at(orbit_positions(self.config.radius, self.config.elevation, self.config.azimuth))
        return object_outputs(
            [path],
            c2w[None],
            width,
            height,
            focal,
            self.config.scene_scale,
            {"elevation": self.config.elevation, "radius": self.config.radius, "fov": self.config.fov},
        )
