"""Encodings of linear radiance: Neural Gaffer's LDR/HDR lighting images, and the exact sRGB transfer curves.

The torch functions are differentiable with finite gradients everywhere (zero where a curve is clipped or at exactly
0, where the power curves' true derivative is infinite). :func:`lighting_images_8bit` and :func:`resize_8bit_bilinear`
are Neural Gaffer's own preprocessing arithmetic (numpy float32 and PIL), bit for bit, on the CPU: torch's float32
``pow`` / ``log1p`` differ from numpy's in the last bit, which flips about one 8-bit value in a million.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from jaxtyping import Float, UInt8
from torch import Tensor

LDR_GAMMA = 2.2
"""Neural Gaffer's display gamma for the LDR lighting image."""

HDR_LOG_SCALE = 10.0
"""Neural Gaffer's radiance scale inside ``log1p`` for the HDR lighting image."""


def _safe_power(x: Tensor, exponent: float) -> Tensor:
    """``x ** exponent`` for ``x >= 0``: exactly 0 at 0, with a zero (not infinite) gradient there."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, torch.ones_like(x)) ** exponent, torch.zeros_like(x))


def ldr_encoding(envmap: Float[Tensor, "*bs 3"]) -> Float[Tensor, "*bs 3"]:
    """Neural Gaffer's LDR lighting image: ``clip(E, 0, 1) ** (1 / 2.2)``, in [0, 1].

    Example:
        >>> ldr_encoding(torch.tensor([-1.0, 0.25, 4.0])).tolist()  # doctest: +ELLIPSIS
        [0.0, 0.53..., 1.0]
    """
    return _safe_power(envmap.clamp(0.0, 1.0), 1.0 / LDR_GAMMA)


def hdr_encoding(envmap: Float[Tensor, "*b h w 3"]) -> Float[Tensor, "*b h w 3"]:
    """Neural Gaffer's HDR lighting image: ``log1p(10 E) / max(log1p(10 E))``, in [0, 1].

    The maximum is taken over each map (its last three dimensions, all pixels and channels), as Neural Gaffer does
    per environment map; negative radiance is clamped to 0 first, and an all-black map encodes to zeros.

    Example:
        >>> hdr_encoding(torch.tensor([[[0.0, 0.1, 1.0]]])).tolist()  # doctest: +ELLIPSIS
        [[[0.0, 0.289..., 1.0]]]
    """
    if envmap.dim() < 3:
        raise ValueError(f"hdr_encoding expects a map [..., h, w, 3], got shape {tuple(envmap.shape)}")
    encoded = torch.log1p(HDR_LOG_SCALE * envmap.clamp_min(0.0))
    peak = encoded.amax(dim=(-3, -2, -1), keepdim=True)
    return torch.where(peak > 0, encoded / torch.where(peak > 0, peak, torch.ones_like(peak)), torch.zeros_like(peak))


def lighting_images_8bit(
    envmap: Float[Tensor, "h w 3"],
) -> Tuple[UInt8[Tensor, "h w 3"], UInt8[Tensor, "h w 3"]]:
    """Neural Gaffer's ``(LDR, HDR)`` lighting images of a map (already in the camera frame) as the 8-bit images its
    preprocessing saves, with its numpy float32 arithmetic bit for bit (``rotate_and_preprcess_envir_map``):
    ``uint8(255 * clip(E, 0, 1) ** (1/2.2))`` and ``uint8(255 * log1p(10 E) / max(log1p(10 E)))``, where
    ``uint8`` truncates. An all-black map gives a black HDR image (their division would give NaN). CPU tensors.

    Example:
        >>> ldr, hdr = lighting_images_8bit(torch.tensor([[[0.0, 0.9, 9.9]]]))
        >>> ldr.tolist(), hdr.tolist()
        ([[[0, 243, 255]]], [[[0, 127, 255]]])
    """
    radiance = envmap.detach().to("cpu", torch.float32).numpy()
    ldr = radiance.clip(0, 1) ** (1 / LDR_GAMMA)
    hdr = np.log1p(HDR_LOG_SCALE * radiance)
    peak = np.max(hdr)
    hdr = hdr / peak if peak > 0 else np.zeros_like(hdr)
    return torch.from_numpy(np.uint8(ldr * 255.0)), torch.from_numpy(np.uint8(hdr * 255.0))


def resize_8bit_bilinear(image: UInt8[Tensor, "h w 3"], height: int, width: int) -> UInt8[Tensor, "height width 3"]:
    """PIL's ``Image.resize((width, height), Image.BILINEAR)`` of an 8-bit RGB image: a triangle filter widened by the
    scale when shrinking (antialiased), fixed-point weights, rounded to 8 bits. How Neural Gaffer's preprocessing and
    torchvision's ``Resize`` (on PIL images) resize its lighting images to the model's size. CPU tensors.

    Example:
        >>> resize_8bit_bilinear(torch.full((4, 8, 3), 200, dtype=torch.uint8), 4, 4).unique().tolist()
        [200]
    """
    from PIL import Image

    if tuple(image.shape[:2]) == (height, width):
        return image.cpu()
    resized = Image.fromarray(image.cpu().numpy()).resize((width, height), Image.BILINEAR)
    return torch.from_numpy(np.array(resized))


def linear_to_srgb(linear: Float[Tensor, "*bs"]) -> Float[Tensor, "*bs"]:
    """The sRGB opto-electronic transfer curve (IEC 61966-2-1), not clipped.

    ``12.92 x`` for ``x <= 0.0031308`` (negatives included), else ``1.055 x ** (1/2.4) - 0.055``; values above 1 follow
    the power curve. Clip to [0, 1] yourself before quantising.

    Example:
        >>> [round(v, 6) for v in linear_to_srgb(torch.tensor([0.0, 0.0031308, 0.18, 1.0])).tolist()]
        [0.0, 0.04045, 0.461356, 1.0]
    """
    low = linear <= 0.0031308
    high = 1.055 * _safe_power(torch.where(low, torch.ones_like(linear), linear), 1.0 / 2.4) - 0.055
    return torch.where(low, 12.92 * linear, high)


def srgb_to_linear(srgb: Float[Tensor, "*bs"]) -> Float[Tensor, "*bs"]:
    """Inverse of :func:`linear_to_srgb`: ``x / 12.92`` for ``x <= 0.04045``, else ``((x + 0.055) / 1.055) ** 2.4``.

    Example:
        >>> [round(v, 6) for v in srgb_to_linear(torch.tensor([0.0, 0.04045, 0.5, 1.0])).tolist()]
        [0.0, 0.003131, 0.214041, 1.0]
    """
    low = srgb <= 0.04045
    high = _safe_power((torch.where(low, torch.ones_like(srgb), srgb) + 0.055) / 1.055, 2.4)
    return torch.where(low, srgb / 12.92, high)
