"""Real spherical harmonics of environment maps: projection, evaluation and diffuse irradiance.

Basis: the real, orthonormal spherical harmonics (``integral Y_i Y_j dOmega = delta_ij``) without the Condon-Shortley
phase, flattened with index ``l (l + 1) + m`` for ``m = -l..l``. For ``l <= 2`` this is the familiar graphics basis::

    Y_00 = 0.282095                 Y_1-1 = 0.488603 y   Y_10 = 0.488603 z   Y_11 = 0.488603 x
    Y_2-2 = 1.092548 xy   Y_2-1 = 1.092548 yz   Y_20 = 0.315392 (3z^2 - 1)   Y_21 = 1.092548 xz
    Y_22 = 0.546274 (x^2 - y^2)

written here for any order as polynomials of the unit direction (``Re/Im (x + iy)^m`` times a Legendre factor in
``z``), so they are smooth, pole-free and differentiable.

Projection treats each equirectangular pixel as a patch of constant radiance and integrates the basis over the patch
(its exact solid angle), so a constant map ``L = c`` gives only ``coeffs[0] = c * Y_00 * 4 pi = c * sqrt(4 pi)``
(``Y_00 = 1 / sqrt(4 pi)``); every other coefficient is 0 up to rounding.

Irradiance follows Ramamoorthi & Hanrahan (2001, "An efficient representation for irradiance environment maps"):
convolving with the clamped cosine multiplies band ``l`` by ``A_l``: ``A_0 = pi``, ``A_1 = 2 pi / 3``, ``A_l = 0`` for
odd ``l > 1`` and ``A_l = 2 pi (-1)^(l/2 - 1) / ((l + 2)(l - 1)) * l! / (2^l ((l/2)!)^2)`` for even ``l`` (so
``A_2 = pi / 4``, ``A_4 = -pi / 24``). Order 2 keeps the irradiance of typical maps to about 1% (the next non-zero band,
l = 4, is damped by ``|A_4| / A_0 = 1/24``).
"""

from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor


def sh_count(order: int) -> int:
    """Number of coefficients of a band-limited expansion up to ``order``: ``(order + 1) ** 2``."""
    return (order + 1) ** 2


def sh_order_of(count: int) -> int:
    """Inverse of :func:`sh_count`; raises for a count that is not a square."""
    order = math.isqrt(count) - 1
    if order < 0 or sh_count(order) != count:
        raise ValueError(f"{count} spherical-harmonic coefficients is not (order + 1)^2 for any order")
    return order


def _normalisation(l: int, m: int) -> float:  # noqa: E741 (l is the band index in every SH text)
    """``sqrt((2l + 1) / (4 pi) * (l - m)! / (l + m)!)``, times ``sqrt(2)`` for ``m > 0`` (real basis)."""
    k = math.sqrt((2 * l + 1) / (4.0 * math.pi) * math.factorial(l - m) / math.factorial(l + m))
    return k * math.sqrt(2.0) if m > 0 else k


def sh_basis(directions: Float[Tensor, "*bs 3"], order: int = 2) -> Float[Tensor, "*bs n"]:
    """All real SH basis functions up to ``order`` at (normalised) ``directions``; ``n = (order + 1) ** 2``.

    Example:
        >>> sh_basis(torch.tensor([0.0, 0.0, 1.0]), order=1).tolist()  # doctest: +ELLIPSIS
        [0.28209..., 0.0, 0.48860..., 0.0]
    """
    if order < 0:
        raise ValueError(f"order must be >= 0, got {order}")
    d = directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    x, y, z = d.unbind(-1)
    one = torch.ones_like(z)
    # cos_m / sin_m: Re and Im of (x + iy)^m, i.e. sin(theta)^m cos(m phi) and sin(theta)^m sin(m phi).
    cos_m: List[Tensor] = [one]
    sin_m: List[Tensor] = [torch.zeros_like(z)]
    for _ in range(order):
        cos_m.append(x * cos_m[-1] - y * sin_m[-1])
        sin_m.append(x * sin_m[-1] + y * cos_m[-2])
    values: List[Tensor] = [one] * sh_count(order)
    for m in range(order + 1):
        # Legendre factor Q_l^m(z) = P_l^m(z) / sin(theta)^m (no Condon-Shortley phase), by the usual recursion in l.
        q_prev2 = None
        q_prev = one * float(math.prod(range(2 * m - 1, 0, -2)))  # (2m - 1)!!
        for l in range(m, order + 1):  # noqa: E741
            if l == m:
                q = q_prev
            elif l == m + 1:
                q = (2 * m + 1) * z * q_prev
            else:
                q = ((2 * l - 1) * z * q_prev - (l + m - 1) * q_prev2) / (l - m)
            if l > m:
                q_prev2, q_prev = q_prev, q
            k = _normalisation(l, m)
            if m == 0:
                values[l * (l + 1)] = k * q
            else:
                values[l * (l + 1) + m] = k * q * cos_m[m]
                values[l * (l + 1) - m] = k * q * sin_m[m]
    return torch.stack(values, dim=-1)


def _band_indices(order: int) -> List[Tuple[int, int]]:
    """``(l, m)`` of every flattened coefficient index."""
    return [(l, m) for l in range(order + 1) for m in range(-l, l + 1)]  # noqa: E741


def pixel_integrated_sh_basis(
    height: int, width: int, order: int = 2, dtype: torch.dtype = torch.float32, device=None
) -> Tuple[Float[Tensor, "h n"], Float[Tensor, "w n"]]:
    """Integrals of every basis function over every equirectangular pixel, as a row factor times a column factor.

    ``integral_{pixel (i, j)} Y_n dOmega = polar[i, n] * azimuthal[j, n]``: a real SH is a function of ``z`` times
    ``cos(m phi)`` / ``sin(|m| phi)``, and a pixel is a ``z`` band times an azimuth interval (``dOmega = dz dphi``).
    The azimuthal factor is exact (``dphi cos(m phi_c) sinc(m dphi / 2)``); the polar one uses Gauss-Legendre
    quadrature in ``z`` with ``order + 2`` nodes per band (exact for even ``m``, whose factor is a polynomial).
    """
    nodes, weights = np.polynomial.legendre.leggauss(order + 2)
    edges = torch.cos(torch.arange(height + 1, dtype=torch.float64) * (math.pi / height))
    half = (edges[:-1] - edges[1:]) * 0.5
    mid = (edges[:-1] + edges[1:]) * 0.5
    z = mid[:, None] + half[:, None] * torch.from_numpy(nodes)[None]
    at_zero_azimuth = torch.stack([torch.sqrt((1.0 - z * z).clamp_min(0.0)), torch.zeros_like(z), z], dim=-1)
    basis = sh_basis(at_zero_azimuth, order)  # m >= 0 entries: the polar factor (cos 0 = 1); m < 0 entries: 0
    polar_m_positive = (basis * torch.from_numpy(weights)[None, :, None]).sum(dim=1) * half[:, None]
    indices = _band_indices(order)
    polar = polar_m_positive[:, [l * (l + 1) + abs(m) for l, m in indices]]  # noqa: E741

    step = 2.0 * math.pi / width
    phi = math.pi * (1.0 - 2.0 * (torch.arange(width, dtype=torch.float64) + 0.5) / width)
    columns = []
    for _, m in indices:
        if m == 0:
            columns.append(torch.full_like(phi, step))
            continue
        sinc = math.sin(abs(m) * step / 2) / (abs(m) * step / 2)
        trig = torch.cos(m * phi) if m > 0 else torch.sin(-m * phi)
        columns.append(step * sinc * trig)
    azimuthal = torch.stack(columns, dim=-1)
    return polar.to(device=device, dtype=dtype), azimuthal.to(device=device, dtype=dtype)


def project_sh(envmap: Float[Tensor, "h w c"], order: int = 2) -> Float[Tensor, "n c"]:
    """SH coefficients of an equirectangular map: ``c_n = sum_pixels L(pixel) integral_pixel Y_n dOmega``.

    Each pixel is a patch of constant radiance weighted by its solid angle, and the basis is integrated over the patch
    (:func:`pixel_integrated_sh_basis`) rather than sampled at its centre, so a constant map has exactly one non-zero
    coefficient. Differentiable in ``envmap``; memory ``O(h * n * c)``.

    Example:
        >>> coeffs = project_sh(torch.full((16, 32, 3), 2.0))
        >>> round(float(coeffs[0, 0]), 4) == round(2.0 * math.sqrt(4 * math.pi), 4)
        True
    """
    if order < 0:
        raise ValueError(f"order must be >= 0, got {order}")
    height, width, _ = envmap.shape
    polar, azimuthal = pixel_integrated_sh_basis(height, width, order, dtype=envmap.dtype, device=envmap.device)
    per_row = azimuthal.transpose(0, 1) @ envmap.contiguous()  # [h, n, c]: sum over the columns of each row
    return (polar[..., None] * per_row).sum(dim=0)


def eval_sh(coeffs: Float[Tensor, "n c"], directions: Float[Tensor, "*bs 3"]) -> Float[Tensor, "*bs c"]:
    """The band-limited function ``sum_i c_i Y_i(d)`` at ``directions``.

    Example:
        >>> round(float(eval_sh(torch.tensor([[math.sqrt(4 * math.pi)]]), torch.tensor([[0.0, 1.0, 0.0]]))), 6)
        1.0
    """
    order = sh_order_of(coeffs.shape[0])
    return sh_basis(directions.to(coeffs.dtype), order) @ coeffs


def cosine_lobe_band_factors(order: int) -> List[float]:
    """Ramamoorthi-Hanrahan ``A_l`` for ``l = 0..order``: the clamped-cosine convolution's factor for band ``l``."""
    factors = []
    for l in range(order + 1):  # noqa: E741
        if l == 0:
            factors.append(math.pi)
        elif l == 1:
            factors.append(2.0 * math.pi / 3.0)
        elif l % 2 == 1:
            factors.append(0.0)
        else:
            half = l // 2
            sign = -1.0 if (half - 1) % 2 else 1.0
            ratio = math.factorial(l) / (2**l * math.factorial(half) ** 2)
            factors.append(2.0 * math.pi * sign / ((l + 2) * (l - 1)) * ratio)
    return factors


def sh_irradiance(coeffs: Float[Tensor, "n c"], normals: Float[Tensor, "*bs 3"]) -> Float[Tensor, "*bs c"]:
    """Irradiance ``E(n) = integral L(w) max(0, n . w) dw`` of the SH-projected lighting, at unit ``normals``.

    A Lambertian surface of albedo ``a`` then has outgoing radiance ``a / pi * E(n)``. Under uniform radiance ``L``
    this is ``pi L`` (exactly, given the exact DC coefficient of :func:`project_sh`). Differentiable in both arguments.

    Example:
        >>> uniform = project_sh(torch.ones(16, 32, 1))
        >>> round(float(sh_irradiance(uniform, torch.tensor([[0.0, 0.0, 1.0]]))[0, 0]), 5) == round(math.pi, 5)
        True
    """
    order = sh_order_of(coeffs.shape[0])
    band = cosine_lobe_band_factors(order)
    per_coefficient = [band[degree] for degree, _ in _band_indices(order)]
    factors = torch.tensor(per_coefficient, dtype=coeffs.dtype, device=coeffs.device)
    return eval_sh(coeffs * factors[:, None], normals)
