"""What one photo of an object gives without a model: its albedo (multi-scale Retinex) and a guess of its shape.

* :func:`retinex_albedo`: the **multi-scale Retinex** of Jobson, Rahman & Woodell (1997, "A multiscale retinex for
  bridging the gap between color images and the human observation of scenes", IEEE TIP 6(7)), after Land & McCann
  (1971, "Lightness and Retinex theory"): shading varies slowly across an object, albedo changes sharply, so the log
  luminance minus the log of a Gaussian-blurred luminance (the illumination estimate) keeps the albedo's log and
  drops most of the shading's. Exactly, with ``Y`` the linear Rec. 709 luminance, ``m`` the mask (alpha) and
  ``G_s`` a Gaussian of standard deviation ``s`` times the object's size (the square root of the mask's area)::

      L_s = (G_s * (m Y)) / (G_s * m)               illumination at scale s (normalised convolution: only the
                                                    object's own pixels are averaged, the background never leaks in)
      R   = mean_s (log Y - log L_s)                over the scales RETINEX_SCALES (equal weights, as Jobson et al.)
      albedo_Y   = exp(R) * c                       c: the in-mask 95th percentile of exp(R) maps to ALBEDO_LEVEL
      albedo_rgb = clip(albedo_Y * rgb / Y, 0, 1)   chroma kept from the image normalised by its luminance (white
                                                    shading does not change rgb / Y)

  The albedo is defined up to a global scale (``c`` is a convention); ``rgb`` is linear (decode sRGB first).
* :func:`inflated_height` and :func:`normals_from_height`: the **shape from the mask** of an inflated surface
  (the "inflation" of silhouette-based modelling, e.g. Igarashi et al. 1999, Teddy): with ``d`` the Euclidean
  distance of a pixel to the background and ``D`` its maximum, the height is ``h = sqrt(d (2 D - d))``, i.e. the
  profile of a circle of radius ``D`` over the distance; a disc of radius ``R`` becomes a hemisphere of radius
  ``R``. The distance to the nearest background *pixel* changes direction in steps, which shows as radial streaks
  in the normals, so the height is then blurred by a Gaussian of ``HEIGHT_SMOOTHING`` times the object's size (a
  disc's normals are then about 2 degrees from the sphere's on average, 7 at most, inside 90% of its radius).
  Normals are those of the surface ``z = h(x, y)`` in camera coordinates (x right, y up, z towards the viewer,
  OpenGL), heights and x, y both in pixels (an orthographic view).

Everything is torch float32 on the CPU (OpenCV does the blurs and the distance transform).
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

RETINEX_SCALES = (0.03, 0.07, 0.15)
"""Gaussian standard deviations of the multi-scale Retinex, as fractions of the object's size (the square root of
the mask's area). Jobson et al. use 15, 80 and 250 px on ~256 px scenes; an object's shading changes faster (a
sphere's limb), and larger scales leave more of it in the albedo, at the price of flattening albedo patterns larger
than about the largest scale."""
ALBEDO_LEVEL = 0.8
"""The in-mask 95th percentile of the albedo's luminance (the global scale that Retinex leaves open)."""
HEIGHT_SMOOTHING = 0.025
"""Gaussian standard deviation of the height field's blur, as a fraction of the object's size (at least 1 px)."""
_LUMINANCE = (0.2126, 0.7152, 0.0722)
_EPS = 1e-4


def luminance(rgb: Float[Tensor, "*bs 3"]) -> Float[Tensor, "*bs"]:
    """Rec. 709 luminance of linear RGB."""
    return rgb @ rgb.new_tensor(_LUMINANCE)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with zeros outside the image (for normalised convolution)."""
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)


def retinex_log_reflectance(
    lum: Float[Tensor, "h w"], mask: Float[Tensor, "h w"], scales: Sequence[float] = RETINEX_SCALES
) -> Float[Tensor, "h w"]:
    """``R = mean_s (log Y - log L_s)`` of the module docstring (0 outside the mask); ``lum`` is linear luminance."""
    y = lum.clamp_min(_EPS).numpy().astype(np.float32)
    m = mask.clamp(0.0, 1.0).numpy().astype(np.float32)
    size = max(float(np.sqrt(m.sum())), 1.0)
    total = np.zeros_like(y)
    for scale in scales:
        sigma = max(scale * size, 0.5)
        illumination = _blur(m * y, sigma) / np.maximum(_blur(m, sigma), 1e-6)
        total += np.log(y) - np.log(np.maximum(illumination, _EPS))
    reflectance = torch.from_numpy(total / len(scales))
    return torch.where(mask > 0, reflectance, torch.zeros_like(reflectance))


def retinex_albedo(
    rgb: Float[Tensor, "h w 3"], mask: Float[Tensor, "h w"], scales: Sequence[float] = RETINEX_SCALES
) -> Float[Tensor, "h w 3"]:
    """The albedo of the object in ``rgb`` (linear RGB, straight colour) inside ``mask`` (in [0, 1]); 0 outside.

    See the module docstring for the method (multi-scale Retinex, Jobson et al. 1997).

    Example:
        >>> shading = torch.linspace(0.2, 1.0, 32)[None, :, None].expand(32, 32, 1)
        >>> albedo = retinex_albedo(torch.full((32, 32, 3), 0.5) * shading, torch.ones(32, 32))
        >>> bool(albedo.std() < (0.5 * shading).std())
        True
    """
    lum = luminance(rgb).clamp_min(_EPS)
    reflectance = torch.exp(retinex_log_reflectance(lum, mask, scales))
    inside = mask > 0.5 if bool((mask > 0.5).any()) else mask > 0
    if not bool(inside.any()):
        return torch.zeros_like(rgb)
    level = torch.quantile(reflectance[inside], 0.95).clamp_min(_EPS)
    albedo_lum = reflectance * (ALBEDO_LEVEL / level)
    chroma = rgb.clamp_min(0.0) / lum[..., None]
    albedo = (albedo_lum[..., None] * chroma).clamp(0.0, 1.0)
    return torch.where(mask[..., None] > 0, albedo, torch.zeros_like(albedo))


def inflated_height(mask: Float[Tensor, "h w"]) -> Float[Tensor, "h w"]:
    """Height in pixels of the surface inflated from ``mask > 0.5``: ``sqrt(d (2 D - d))``, blurred (module docstring).

    Example:
        >>> yy, xx = torch.meshgrid(torch.arange(33.0), torch.arange(33.0), indexing="ij")
        >>> disc = (((xx - 16) ** 2 + (yy - 16) ** 2) <= 12.5**2).float()
        >>> round(float(inflated_height(disc).max()))  # about a hemisphere of radius 12.5
        12
    """
    binary = (mask > 0.5).numpy().astype(np.uint8)
    if not binary.any():
        return torch.zeros_like(mask, dtype=torch.float32)
    distance = cv2.distanceTransform(binary, cv2.DIST_L2, cv2.DIST_MASK_PRECISE).astype(np.float32)
    top = float(distance.max())
    height = np.sqrt(np.clip(distance * (2.0 * top - distance), 0.0, None)).astype(np.float32)
    sigma = max(1.0, HEIGHT_SMOOTHING * float(np.sqrt(binary.sum())))
    return torch.from_numpy(
        cv2.GaussianBlur(height, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)
    )


def normals_from_height(height: Float[Tensor, "h w"]) -> Float[Tensor, "h w 3"]:
    """Unit normals of ``z = height(x, y)`` in camera coordinates (x right, y up, z towards the viewer).

    Image row ``i`` grows downwards, so ``y = -row``; with central differences ``dz/dx = dh/dcol`` and
    ``dz/dy = -dh/drow``, the normal is ``normalize(-dz/dx, -dz/dy, 1)``. Where the height is flat (the background)
    the normal faces the camera.

    Example:
        >>> ramp = torch.arange(4.0)[None, :].expand(4, 4)  # rises to the right: the normal leans left
        >>> [round(v, 4) for v in normals_from_height(ramp)[1, 1].tolist()]
        [-0.7071, 0.0, 0.7071]
    """
    d_row, d_col = torch.gradient(height.float(), dim=(0, 1))
    normals = torch.stack([-d_col, d_row, torch.ones_like(height, dtype=torch.float32)], dim=-1)
    return torch.nn.functional.normalize(normals, dim=-1)


__all__ = [
    "ALBEDO_LEVEL",
    "HEIGHT_SMOOTHING",
    "RETINEX_SCALES",
    "inflated_height",
    "luminance",
    "normals_from_height",
    "retinex_albedo",
    "retinex_log_reflectance",
]
