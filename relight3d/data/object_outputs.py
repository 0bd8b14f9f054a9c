"""What relight3d's object dataparsers share: their common settings and checks, and what they return (RGBA images,
centred pinhole cameras and a cube scene box).

Shared by :mod:`relight3d.data.objaverse` and :mod:`relight3d.data.single_image`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List

import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from torch import Tensor

from relight3d.errors import ConfigError


@dataclass
class ObjectDataParserConfig(DataParserConfig):
    """The settings every object dataparser has (each adds those of its layout; a layout that is not a folder says
    what its ``data`` is)."""

    data: Path = Path("data/object")
    """Object folder."""
    scene_scale: float = 1.0
    """Half-size of the cube scene box centred at the origin (the object is normalised into it)."""


class ObjectDataParser(DataParser):
    """A dataparser of one object (its views of it and :func:`object_outputs`)."""

    config: ObjectDataParserConfig

    def _check_config(self) -> None:
        """Refuse settings no scene can have (subclasses check theirs after these).

        Raises:
            ConfigError: a scene scale that is not a positive number.
        """
        scale = self.config.scene_scale
        if not (math.isfinite(scale) and scale > 0):
            raise ConfigError("scene_scale", f"must be a positive number, got {scale}")


def object_outputs(
    image_filenames: List[Path],
    c2w: Float[Tensor, "n 3 4"],
    width: int,
    height: int,
    focal: float,
    scene_scale: float,
    metadata: Dict[str, Any],
) -> DataparserOutputs:
    """Dataparser outputs of an object: one image per camera, kept RGBA (``alpha_color`` None: the model composites
    on its background and the alpha is the mask).

    Args:
        image_filenames: the images, one per camera.
        c2w: OpenGL camera-to-world matrices (nerfstudio's convention); perspective cameras.
        width: image width in pixels.
        height: image height in pixels.
        focal: focal length in pixels (square pixels; the principal point is the image centre).
        scene_scale: half-size of the cube scene box centred at the origin.
        metadata: the dataparser's metadata.
    """
    cameras = Cameras(c2w.float(), fx=focal, fy=focal, cx=width / 2.0, cy=height / 2.0, width=width, height=height)
    s = scene_scale
    return DataparserOutputs(
        image_filenames=image_filenames,
        cameras=cameras,
        alpha_color=None,
        scene_box=SceneBox(aabb=torch.tensor([[-s, -s, -s], [s, s, s]], dtype=torch.float32)),
        metadata=metadata,
    )
