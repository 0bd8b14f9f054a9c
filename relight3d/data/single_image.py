"""A single RGBA image as a dataset: the input view of single-image reconstruction.

The camera looks at the origin from ``radius`` away, at ``elevation`` degrees above the horizontal plane (world
Z up, as in Blender). Azimuth 0 is Blender's front view: the camera sits on the -Y axis and looks along +Y.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Type

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from PIL import Image

from relight3d.data.errors import DataError
from relight3d.data.validation import image_size


def look_at_camera_to_world(position: np.ndarray, target: np.ndarray = np.zeros(3)) -> np.ndarray:
    """3x4 camera-to-world matrix (OpenGL/Blender camera: -Z forward, +Y up) looking from ``position`` at ``target``.

    World up is +Z.
    """
    forward = target - position
    forward = forward / np.linalg.norm(forward)
    up = np.array([0.0, 0.0, 1.0])
    if abs(float(np.dot(forward, up))) > 0.999:
        up = np.array([0.0, 1.0, 0.0])
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    true_up = np.cross(right, forward)
    return np.stack([right, true_up, -forward, position], axis=1)


def orbit_position(radius: float, elevation_deg: float, azimuth_deg: float) -> np.ndarray:
    """Camera position on a sphere; azimuth 0 is the -Y axis (Blender front), increasing counter-clockwise."""
    el, az = math.radians(elevation_deg), math.radians(azimuth_deg)
    return radius * np.array([math.cos(el) * math.sin(az), -math.cos(el) * math.cos(az), math.sin(el)])


@dataclass
class SingleImageDataParserConfig(DataParserConfig):
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
    scene_scale: float = 1.0
    """Half-size of the scene box."""


class SingleImageDataParser(DataParser):
    """The same single view for train and eval."""

    config: SingleImageDataParserConfig

    def _generate_dataparser_outputs(self, split: str = "train") -> DataparserOutputs:
        path = Path(self.config.data)
        (width, height), mode = image_size(path)
        if mode not in ("RGBA", "LA"):
            raise DataError(path, f"image has mode {mode} but an RGBA image (alpha = object mask) is required")
        with Image.open(path) as im:
            alpha = np.asarray(im.convert("RGBA"))[..., 3]
        if int((alpha > 127).sum()) == 0:
            raise DataError(path, "the alpha mask is empty (no pixel has alpha > 0.5)")
        focal = 0.5 * width / math.tan(math.radians(self.config.fov) / 2.0)
        c2w = look_at_camera_to_world(orbit_position(self.config.radius, self.config.elevation, self.config.azimuth))
        cameras = Cameras(
            camera_to_worlds=torch.from_numpy(c2w[None]).float(),
            fx=focal,
            fy=focal,
            cx=width / 2.0,
            cy=height / 2.0,
            width=width,
            height=height,
            camera_type=CameraType.PERSPECTIVE,
        )
        s = self.config.scene_scale
        return DataparserOutputs(
            image_filenames=[path],
            cameras=cameras,
            alpha_color=None,
            scene_box=SceneBox(aabb=torch.tensor([[-s, -s, -s], [s, s, s]], dtype=torch.float32)),
            metadata={"elevation": self.config.elevation, "radius": self.config.radius, "fov": self.config.fov},
        )
