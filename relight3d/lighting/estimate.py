"""Estimating the light an object was captured under from its observed colours and normals.

The physical relighting prior divides the observed colour by the source light's shading, so it needs the source
light; a real capture does not record it. This module fits it under the prior's own diffuse model, a Lambertian
surface of albedo ``a(x)``::

    observed(x) = a(x) E(n(x)) / pi,        E(n) = integral L(w) max(0, n.w) dw

with ``L`` band-limited to order-2 spherical harmonics. By Ramamoorthi & Hanrahan, ``E(n) = sum_lm A_l L_lm
Y_lm(n)`` (:func:`relight3d.lighting.spherical_harmonics.cosine_lobe_band_factors`), so with a constant albedo
the observed colours are linear in the nine coefficients per channel: a least-squares fit of ``sum_k c_k Y_k(n)``
to the observations gives ``a L_lm = pi c_lm / A_l`` exactly (:func:`fit_sh_shading`,
:func:`shading_to_radiance_sh`). A textured albedo acts as multiplicative noise around its mean; pixels in cast
shadow are darker than the model allows and pull the fit down, so a second pass can drop the darkest share of
pixels relative to the first fit (``trim_dark``).

What a single light cannot tell apart from the albedo is fixed by assumptions, as in every single-image intrinsic
decomposition:

* **Scale**: the light is scaled so that the ``albedo_quantile`` quantile of the implied albedo (luminance) is
  ``assumed_albedo``.
* **Colour**: with ``neutral=True`` the light's mean colour (its DC term) is made grey, as a white-balanced camera
  would see it; the object's colour cast is then ascribed to its albedo.

The result is returned as an equirectangular map (negative lobes of the band-limited function clamped to 0), which
the pipeline hands to the prior like a known source map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from jaxtyping import Float
from torch import Tensor

from relight3d.lighting.encodings import srgb_to_linear
from relight3d.lighting.equirect import LUMINANCE_WEIGHTS, envmap_directions, sample_envmap
from relight3d.lighting.shading import irradiance_map
from relight3d.lighting.spherical_harmonics import (
    _band_indices,
    cosine_lobe_band_factors,
    eval_sh,
    sh_basis,
    sh_order_of,
)


@dataclass
class LightEstimate:
    """An estimated source light."""

    envmap: Float[Tensor, "h w 3"]
    """The light as an equirectangular map (linear radiance, world Z up, negatives clamped)."""
    sh_coeffs: Float[Tensor, "k 3"]
    """Its radiance SH coefficients (after the colour and scale assumptions, before clamping)."""
    n_samples: int
    """Observations the last fit used."""
    relative_residual: float
    """RMS of the last fit's residual over the RMS of the observations (albedo texture, shadows and normal errors
    all end up here)."""


def fit_sh_shading(
    linear: Float[Tensor, "n c"],
    normals: Float[Tensor, "n 3"],
    order: int = 2,
    weights: Optional[Float[Tensor, " n"]] = None,
    ridge: float = 1e-4,
) -> Float[Tensor, "k c"]:
    """Least-squares coefficients ``c`` of ``sum_k c_k Y_k(n)`` that best explain ``linear`` per channel.

    ``ridge`` (relative to the mean diagonal of the normal equations) keeps bands that the normals barely sample
    (a side no camera saw) near zero instead of letting them blow up.

    Example:
        >>> n = torch.nn.functional.normalize(torch.randn(500, 3), dim=-1)
        >>> c = fit_sh_shading(0.3 + 0.2 * n[:, 2:3], n, order=1)
        >>> [round(v, 3) + 0.0 for v in (c[:, 0] * torch.tensor([0.282095, 1.0, 0.488603, 1.0])).tolist()]
        [0.3, 0.0, 0.2, 0.0]
    """
    basis = sh_basis(normals.double(), order)  # [n, k]
    w = torch.ones(basis.shape[0], dtype=basis.dtype) if weights is None else weights.double()
    gram = (basis * w[:, None]).T @ basis
    reg = ridge * float(gram.diagonal().mean()) * torch.eye(basis.shape[1], dtype=basis.dtype)
    rhs = (basis * w[:, None]).T @ linear.double()
    return torch.linalg.solve(gram + reg, rhs).to(linear.dtype)


def shading_to_radiance_sh(coeffs: Float[Tensor, "k c"]) -> Float[Tensor, "k c"]:
    """Radiance SH ``L_lm`` of the light whose Lambertian shading ``E(n) / pi`` is ``sum c_lm Y_lm(n)``:
    ``L_lm = pi c_lm / A_l``. Bands whose ``A_l`` is zero (odd ``l > 1``: invisible to a Lambertian surface) are 0."""
    order = sh_order_of(coeffs.shape[0])
    band = cosine_lobe_band_factors(order)
    factors = [math.pi / band[l] if band[l] != 0.0 else 0.0 for l, _ in _band_indices(order)]  # noqa: E741
    return coeffs * torch.tensor(factors, dtype=coeffs.dtype, device=coeffs.device)[:, None]


def sh_envmap(coeffs: Float[Tensor, "k c"], height: int = 32) -> Float[Tensor, "h w c"]:
    """The band-limited radiance ``sum L_k Y_k(w)`` on a ``height x 2 height`` map, negatives clamped to 0."""
    directions = envmap_directions(height, 2 * height, dtype=coeffs.dtype, device=coeffs.device)
    return eval_sh(coeffs, directions).clamp_min(0.0)


def _luminance(x: Tensor) -> Tensor:
    return x @ torch.tensor(LUMINANCE_WEIGHTS, dtype=x.dtype, device=x.device)


def estimate_sh_light(
    linear: Float[Tensor, "n 3"],
    normals: Float[Tensor, "n 3"],
    order: int = 2,
    assumed_albedo: float = 0.6,
    albedo_quantile: float = 0.95,
    neutral: bool = True,
    trim_dark: float = 0.0,
    height: int = 32,
) -> LightEstimate:
    """Fit an order-``order`` SH light to linear colours observed at unit ``normals`` (see the module docstring).

    Args:
        linear: observed linear RGB radiance of object points.
        normals: their unit normals (world frame).
        order: SH order of the light (2: nine coefficients per channel).
        assumed_albedo: the albedo (luminance) that the ``albedo_quantile`` quantile of the implied albedo is
            scaled to.
        albedo_quantile: which quantile of the implied albedo is fixed.
        neutral: make the light's mean colour grey (otherwise the fit's colour is kept as it is, with a grey albedo).
        trim_dark: share of the observations, darkest relative to the first fit (cast shadows), that a second fit
            leaves out; 0 fits once.
        height: rows of the returned map.

    Raises:
        ValueError: fewer observations than coefficients, or a fit with no light.
    """
    k = (order + 1) ** 2
    if linear.shape[0] < 4 * k:
        raise ValueError(f"{linear.shape[0]} observations are too few to fit {k} SH coefficients per channel")
    linear, normals = linear.double(), torch.nn.functional.normalize(normals.double(), dim=-1)
    coeffs = fit_sh_shading(linear, normals, order)
    if trim_dark > 0.0:
        predicted = _luminance(sh_basis(normals, order) @ coeffs).clamp_min(1e-6)
        ratio = _luminance(linear) / predicted
        keep = ratio >= torch.quantile(ratio, trim_dark)
        linear, normals = linear[keep], normals[keep]
        coeffs = fit_sh_shading(linear, normals, order)
    fitted = sh_basis(normals, order) @ coeffs
    residual = float((linear - fitted).square().mean().sqrt() / linear.square().mean().sqrt().clamp_min(1e-12))
    radiance = shading_to_radiance_sh(coeffs)  # = (mean albedo) x L, per channel
    if neutral:
        dc = radiance[0]
        if bool((dc > 0).all()):
            radiance = radiance * (dc.mean() / dc)[None]
    envmap = sh_envmap(radiance, height)
    # Scale from the map as it will shade (clamped, brute-force irradiance, as the physical prior computes it).
    shading = sample_envmap(irradiance_map(envmap, min(16, height)), normals) / math.pi
    lit = _luminance(shading) > 1e-6 * float(_luminance(shading).max().clamp_min(1e-30))
    if int(lit.sum()) < k:
        raise ValueError("the fitted light leaves the observed surface unlit")
    albedo = _luminance(linear[lit]) / _luminance(shading[lit])
    scale = float(torch.quantile(albedo, albedo_quantile)) / assumed_albedo
    if not math.isfinite(scale) or scale <= 0.0:
        raise ValueError("the observed surface is black: no light can be estimated")
    return LightEstimate(
        envmap=(envmap * scale).float(),
        sh_coeffs=(radiance * scale).float(),
        n_samples=int(linear.shape[0]),
        relative_residual=residual,
    )


def estimate_light_from_views(
    images: Float[Tensor, "v h w 3"],
    normals: Float[Tensor, "v h w 3"],
    masks: Float[Tensor, "v h w 1"],
    max_samples: int = 200_000,
    seed: int = 0,
    **settings: float,
) -> LightEstimate:
    """Estimate the light of views whose sRGB ``images``, world ``normals`` and object ``masks`` (> 0.5 counts)
    are given, e.g. a radiance field's training images and rendered normals. At most ``max_samples`` object pixels
    (drawn with ``seed``) enter the fit; ``settings`` go to :func:`estimate_sh_light`.

    Raises:
        ValueError: as :func:`estimate_sh_light`, or when there are too few object pixels.
    """
    select = masks[..., 0] > 0.5
    colours = srgb_to_linear(images[select].float().clamp(0.0, 1.0))
    dirs = normals[select].float()
    valid = dirs.norm(dim=-1) > 1e-6
    colours, dirs = colours[valid], dirs[valid]
    if colours.shape[0] > max_samples:
        pick = torch.randperm(colours.shape[0], generator=torch.Generator().manual_seed(seed))[:max_samples]
        colours, dirs = colours[pick], dirs[pick]
    return estimate_sh_light(colours, dirs, **settings)


__all__ = [
    "LightEstimate",
    "estimate_light_from_views",
    "estimate_sh_light",
    "fit_sh_shading",
    "sh_envmap",
    "shading_to_radiance_sh",
]
