"""From an HDR environment map to what text- and image-conditioned relighting models understand.

InstructPix2Pix and IC-Light are not conditioned on environment maps. Their adapters describe the target light per
view, relative to the camera, with the functions here:

* :func:`summarize_lighting`: the light's **direction** (luminance-weighted mean direction of the map, the direction
  of its first-order spherical-harmonic term), its **directionality** (the length of that mean: 1 for a single
  point light, 0.5 for a uniformly lit upper hemisphere, 0 for uniform light) and its **colour** (the
  luminance-weighted mean colour, so the bright sources dominate), with the direction expressed in the camera frame
  (x right, y up, z towards the viewer).
* :meth:`LightingSummary.describe`: a short phrase, ``"<hardness> <colour> light <direction>"``, e.g.
  ``"hard warm light from the upper left"``. Hardness: ``hard`` for directionality >= 0.6, ``soft`` below 0.3
  (``even`` and no direction below 0.1). Direction: ``from the front`` / ``from behind`` when the light is within
  about 37 degrees of the viewing axis, else ``upper``/``lower`` and ``left``/``right`` when the light's
  unit direction leans by more than 0.38 that way. Colour: ``white`` for a saturation (HSV) below 0.12;
  ``warm``/``cool`` for pale oranges/yellows and blues (saturation below 0.4); else the hue's name.
* :func:`lighting_preview`: IC-Light's "lighting preference" is an initial latent from a grey-level gradient
  (white on the side the light comes from). The preview here is its physically based version: the diffuse
  irradiance of the (order-2 SH) map on a camera-facing dome, normal ``normalize(x, y, 1)`` at image coordinates
  ``x, y`` in [-1, 1] (x right, y up), divided by its maximum, in colour, sRGB-encoded. A light from the left gives
  a left-to-right falloff like IC-Light's "Left Light" gradient; a frontal light a centred highlight.
* :func:`environment_background`: the map as seen behind the object by a pinhole camera (for IC-Light's
  background-conditioned model), clipped to [0, 1] and sRGB-encoded.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Tuple

import torch
from jaxtyping import Float
from torch import Tensor

SUMMARY_ENVMAP_HEIGHT = 64
"""Maps are averaged down to this height (solid-angle weighted) before they are summarised or projected to SH."""

_LUMINANCE = (0.2126, 0.7152, 0.0722)


def _camera_rotation(camera_to_world: Tensor) -> Tensor:
    """The rotation block of a camera-to-world matrix (OpenGL/Blender camera: x right, y up, z backwards)."""
    rotation = camera_to_world[:3, :3].to(torch.float64)
    u, _, vh = torch.linalg.svd(rotation)
    return (u @ vh).to(torch.float32)


def _small_envmap(envmap: Float[Tensor, "h w 3"]) -> Float[Tensor, "h2 w2 3"]:
    from relight3d.lighting import resize_envmap

    envmap = envmap.float().clamp_min(0.0)
    if envmap.shape[0] > SUMMARY_ENVMAP_HEIGHT:
        envmap = resize_envmap(envmap, SUMMARY_ENVMAP_HEIGHT, 2 * SUMMARY_ENVMAP_HEIGHT)
    return envmap


@dataclass(frozen=True)
class LightingSummary:
    """Where the light comes from, how directional it is and its colour, seen from one camera."""

    direction: Tuple[float, float, float]
    """Unit vector towards the light in the camera frame (x right, y up, z towards the viewer); zeros when the
    light is perfectly uniform."""
    directionality: float
    """Length of the luminance-weighted mean direction, in [0, 1]."""
    colour: Tuple[float, float, float]
    """Linear RGB of the light, scaled so that its largest channel is 1."""

    def hardness_word(self) -> str:
        """``hard``, ``soft`` or ``even`` (no word for the middle range)."""
        if self.directionality >= 0.6:
            return "hard"
        if self.directionality < 0.1:
            return "even"
        if self.directionality < 0.3:
            return "soft"
        return ""

    def direction_phrase(self) -> str:
        """E.g. ``from the upper left``, ``from above``, ``from behind``; empty for even light."""
        if self.directionality < 0.1:
            return ""
        x, y, z = self.direction
        if z > 0.8:
            return "from the front"
        if z < -0.8:
            return "from behind"
        vertical = "upper" if y > 0.38 else "lower" if y < -0.38 else ""
        horizontal = "left" if x < -0.38 else "right" if x > 0.38 else ""
        if vertical and horizontal:
            return f"from the {vertical} {horizontal}"
        if horizontal:
            return f"from the {horizontal}"
        if vertical:
            return "from above" if vertical == "upper" else "from below"
        return "from the front" if z >= 0 else "from behind"

    def colour_word(self) -> str:
        """``white``, ``warm``, ``cool`` or a hue name (``orange``, ``blue``, ...)."""
        hue, saturation, _ = colorsys.rgb_to_hsv(*self.colour)
        degrees = hue * 360.0
        if saturation < 0.12:
            return "white"
        if saturation < 0.4:
            if degrees < 70.0 or degrees >= 330.0:
                return "warm"
            if 170.0 <= degrees < 260.0:
                return "cool"
        for limit, name in (
            (15.0, "red"),
            (45.0, "orange"),
            (70.0, "yellow"),
            (165.0, "green"),
            (200.0, "cyan"),
            (260.0, "blue"),
            (300.0, "purple"),
            (345.0, "pink"),
        ):
            if degrees < limit:
                return name
        return "red"

    def describe(self) -> str:
        """``"<hardness> <colour> light <direction>"``, empty parts dropped (``"hard warm light from the left"``)."""
        words = [self.hardness_word(), self.colour_word(), "light", self.direction_phrase()]
        return " ".join(w for w in words if w)


def summarize_lighting(
    envmap: Float[Tensor, "h w 3"], camera_to_world: Float[Tensor, "3 4"] | Float[Tensor, "4 4"]
) -> LightingSummary:
    """The light of a world-space map as seen from one camera (see the module docstring for the definitions).

    Example:
        >>> from relight3d.lighting import envmap_directions
        >>> d = envmap_directions(32, 64)
        >>> sun = (d @ torch.tensor([-1.0, 0.0, 0.0]) > 0.95).float()[..., None] * torch.tensor([1.0, 0.85, 0.7])
        >>> identity = torch.eye(4)[:3]  # camera at the origin looking down world -Z, y (up) = world +Y
        >>> summarize_lighting(sun, identity).describe()
        'hard warm light from the left'
    """
    from relight3d.lighting import envmap_directions, envmap_solid_angles

    small = _small_envmap(envmap)
    height, width, _ = small.shape
    weights = envmap_solid_angles(height, width, device=small.device) * (small @ small.new_tensor(_LUMINANCE))
    total = weights.sum()
    if float(total) <= 0.0:
        return LightingSummary((0.0, 0.0, 0.0), 0.0, (1.0, 1.0, 1.0))
    directions = envmap_directions(height, width, device=small.device)
    mean = (weights[..., None] * directions).sum(dim=(0, 1)) / total
    directionality = float(mean.norm().clamp(max=1.0))
    rotation = _camera_rotation(camera_to_world).to(small.device)
    in_camera = rotation.transpose(0, 1) @ mean
    norm = in_camera.norm()
    direction = (in_camera / norm).tolist() if float(norm) > 0 else [0.0, 0.0, 0.0]
    colour = (weights[..., None] * small).sum(dim=(0, 1)) / total
    colour = colour / colour.max().clamp_min(1e-12)
    return LightingSummary(
        tuple(float(v) for v in direction), directionality, tuple(float(c) for c in colour.clamp(0.0, 1.0))
    )


def _image_plane(size: int, device: torch.device) -> Tuple[Tensor, Tensor]:
    """Pixel-centre coordinates in [-1, 1]: x to the right, y upwards (row 0 is the top)."""
    coords = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size * 2.0 - 1.0
    y, x = torch.meshgrid(-coords, coords, indexing="ij")
    return x, y


def lighting_preview(
    envmap: Float[Tensor, "h w 3"], camera_to_world: Float[Tensor, "3 4"] | Float[Tensor, "4 4"], size: int
) -> Float[Tensor, "size size 3"]:
    """Diffuse irradiance of the map on a camera-facing dome, normalised to a maximum of 1, sRGB in [0, 1].

    Example:
        >>> from relight3d.lighting import envmap_directions
        >>> d = envmap_directions(32, 64)
        >>> sun = (d @ torch.tensor([-1.0, 0.0, 0.0]) > 0.95).float()[..., None].expand(32, 64, 3)
        >>> preview = lighting_preview(sun, torch.eye(4)[:3], 16)
        >>> bool(preview[8, 0].mean() > preview[8, 15].mean())  # brighter on the left, where the light is
        True
    """
    from relight3d.lighting import linear_to_srgb, project_sh, sh_irradiance

    small = _small_envmap(envmap)
    coeffs = project_sh(small, order=2)
    x, y = _image_plane(size, small.device)
    normals_camera = torch.nn.functional.normalize(torch.stack([x, y, torch.ones_like(x)], dim=-1), dim=-1)
    rotation = _camera_rotation(camera_to_world).to(small.device)
    normals_world = normals_camera @ rotation.transpose(0, 1)
    irradiance = sh_irradiance(coeffs, normals_world).clamp_min(0.0)
    peak = irradiance.max()
    if float(peak) <= 0.0:
        return torch.zeros(size, size, 3, device=small.device)
    return linear_to_srgb(irradiance / peak).clamp(0.0, 1.0)


def environment_background(
    envmap: Float[Tensor, "h w 3"],
    camera_to_world: Float[Tensor, "3 4"] | Float[Tensor, "4 4"],
    size: int,
    fov_degrees: float,
) -> Float[Tensor, "size size 3"]:
    """The map seen through a square pinhole camera with field of view ``fov_degrees``, clipped, sRGB in [0, 1].

    Example:
        >>> environment_background(torch.full((8, 16, 3), 0.5), torch.eye(4)[:3], 4, 50.0).shape
        torch.Size([4, 4, 3])
    """
    from relight3d.lighting import linear_to_srgb, sample_envmap

    envmap = envmap.float().clamp_min(0.0)
    x, y = _image_plane(size, envmap.device)
    half_width = math.tan(math.radians(fov_degrees) / 2.0)
    rays_camera = torch.stack([x * half_width, y * half_width, -torch.ones_like(x)], dim=-1)
    rotation = _camera_rotation(camera_to_world).to(envmap.device)
    rays_world = torch.nn.functional.normalize(rays_camera @ rotation.transpose(0, 1), dim=-1)
    return linear_to_srgb(sample_envmap(envmap, rays_world).clamp(0.0, 1.0)).clamp(0.0, 1.0)
