"""Human-facing views of an environment map: summary statistics and a tonemapped LDR preview."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

from relight3d.lighting.encodings import linear_to_srgb
from relight3d.lighting.equirect import (
    LUMINANCE_WEIGHTS,
    dominant_light_direction,
    envmap_directions,
    envmap_solid_angles,
)


def direction_angles(direction: Float[Tensor, "3"]) -> Tuple[float, float]:
    """``(azimuth, elevation)`` in degrees of a direction: azimuth ``atan2(y, x)``, elevation above the XY plane."""
    x, y, z = (float(v) for v in direction)
    norm = math.sqrt(x * x + y * y + z * z)
    if norm == 0.0:
        return 0.0, 0.0
    return math.degrees(math.atan2(y, x)), math.degrees(math.asin(max(-1.0, min(1.0, z / norm))))


@dataclass(frozen=True)
class EnvMapSummary:
    """Statistics of a map (radiance in the file's linear units)."""

    height: int
    """Rows."""
    width: int
    """Columns."""
    min_radiance: float
    """Smallest channel value."""
    max_radiance: float
    """Largest channel value."""
    mean_rgb: Tuple[float, float, float]
    """Mean radiance per channel over the sphere (pixels weighted by solid angle)."""
    mean_luminance: float
    """Mean Rec. 709 luminance over the sphere."""
    dominant_direction: Tuple[float, float, float]
    """Unit luminance-weighted mean direction (where the light comes from on average), world Z up."""
    brightest_direction: Tuple[float, float, float]
    """Direction of the pixel with the largest luminance."""
    brightest_rgb: Tuple[float, float, float]
    """Radiance of that pixel."""


def summarize_envmap(envmap: Float[Tensor, "h w 3"]) -> EnvMapSummary:
    """Size, radiance range and means, dominant and brightest light direction of a map.

    Example:
        >>> s = summarize_envmap(torch.ones(8, 16, 3))
        >>> (s.height, s.width, round(s.mean_luminance, 6))
        (8, 16, 1.0)
    """
    envmap = envmap.detach().to(torch.float64)
    height, width, _ = envmap.shape
    solid_angles = envmap_solid_angles(height, width, dtype=envmap.dtype, device=envmap.device)
    mean_rgb = (envmap * solid_angles[..., None]).sum(dim=(0, 1)) / solid_angles.sum()
    weights = torch.tensor(LUMINANCE_WEIGHTS, dtype=envmap.dtype, device=envmap.device)
    luminance = envmap @ weights
    brightest = int(torch.argmax(luminance))
    row, col = divmod(brightest, width)
    directions = envmap_directions(height, width, dtype=envmap.dtype, device=envmap.device)
    return EnvMapSummary(
        height=height,
        width=width,
        min_radiance=float(envmap.min()),
        max_radiance=float(envmap.max()),
        mean_rgb=tuple(float(v) for v in mean_rgb),
        mean_luminance=float(mean_rgb @ weights),
        dominant_direction=tuple(float(v) for v in dominant_light_direction(envmap)),
        brightest_direction=tuple(float(v) for v in directions[row, col]),
        brightest_rgb=tuple(float(v) for v in envmap[row, col]),
    )


def preview_envmap(
    envmap: Float[Tensor, "h w 3"], exposure_stops: Optional[float] = None, percentile: float = 99.0
) -> Float[Tensor, "h w 3"]:
    """An LDR preview in [0, 1] (sRGB-encoded): ``srgb(clip(E * 2^exposure, 0, 1))``.

    With ``exposure_stops=None`` the exposure is automatic: the ``percentile`` of the pixels' luminance maps to 1
    (so a sun clips but the sky and ground stay readable).

    Example:
        >>> round(preview_envmap(torch.full((2, 4, 3), 0.5), exposure_stops=1.0).max().item(), 6)
        1.0
    """
    envmap = envmap.detach().float()
    if exposure_stops is None:
        luminance = envmap @ torch.tensor(LUMINANCE_WEIGHTS, dtype=envmap.dtype, device=envmap.device)
        level = float(torch.quantile(luminance.reshape(-1), percentile / 100.0))
        scale = 1.0 / level if level > 0 else 1.0
    else:
        scale = 2.0**exposure_stops
    return linear_to_srgb((envmap * scale).clamp(0.0, 1.0))
