"""DECA's 9-coefficient spherical-harmonic lighting, as DECA and DiFaReli render face shading.

Source: DECA (Feng et al. 2021, github.com/yfeng95/DECA) ``decalib/utils/renderer.py``: the ``constant_factor``
buffer built in ``SRenderY.__init__`` and ``SRenderY.add_SHlight``; DiFaReli (github.com/diffusion-face-relighting/
difareli_code) ships the same code in ``model_3d/FLAME/utils/renderer.py`` and
``preprocess_scripts/Relighting_preprocessing_tools/DECA/decalib/utils/renderer.py`` (``render_shape`` calls
``add_SHlight`` whenever the light has 9 rows).

Convention. DECA predicts 27 numbers per image, reshaped (row-major) to ``[9, 3]``: row ``k`` is one basis function,
the columns are R, G, B. With ``n = (x, y, z)`` the (rasterised, not re-normalised) normal, shading is::

    shading(n)[c] = sum_k  F_k * b_k(n) * light[k, c]

    b  = [1, x, y, z, x y, x z, y z, x^2 - y^2, 3 z^2 - 1]
    F  = [1 / sqrt(4 pi),                              # = Y_00 only: no cosine-lobe factor on the DC term
          (2 pi / 3) sqrt(3 / (4 pi))        (x3),     # = A_1 * (normalisation of Y_1m)
          (pi / 4) * 3 * sqrt(5 / (12 pi))   (x3),     # = A_2 * sqrt(15 / (4 pi))       (xy, xz, yz)
          (pi / 4) * (3 / 2) * sqrt(5 / (12 pi)),      # = A_2 * sqrt(15 / (16 pi))      (x^2 - y^2)
          (pi / 4) * (1 / 2) * sqrt(5 / (4 pi))]       # = A_2 * sqrt(5 / (16 pi))       (3 z^2 - 1)

and the image is ``albedo * shading`` (DiFaReli's shading reference uses a constant grey albedo of 180 / 255).
``A_l`` are the Ramamoorthi-Hanrahan clamped-cosine factors (``A_0 = pi``, ``A_1 = 2 pi / 3``, ``A_2 = pi / 4``), so
``F_k b_k`` is ``A_l Y_lm`` of relight3d's orthonormal basis for every row except row 0, which lacks ``A_0 = pi``.
DECA's 9 numbers per channel are therefore neither a pure radiance nor a pure irradiance expansion. With ``L_lm``
relight3d's orthonormal SH coefficients of the *radiance* (:func:`~relight3d.lighting.spherical_harmonics.project_sh`)
and ``E(n) = sum A_l L_lm Y_lm(n)`` the irradiance (:func:`~relight3d.lighting.spherical_harmonics.sh_irradiance`):

* ``shading="reflected"`` (the default): DECA's shading is the radiance reflected by a white Lambertian surface,
  ``E / pi`` (so ``albedo`` is the diffuse reflectance). Then ``light[0] = L_00`` and ``light[k] = L_lm / pi`` for
  ``k >= 1``. A uniform sky of radiance ``L`` gives ``light[0] = sqrt(4 pi) L`` and shading ``L``.
* ``shading="irradiance"``: DECA's shading is ``E``. Then ``light[0] = pi L_00`` and ``light[k] = L_lm`` for ``k >= 1``.

Row order versus relight3d's index ``l (l + 1) + m``: DECA rows ``[0, 1, 2, 3, 4, 5, 6, 7, 8]`` are relight3d's
``[0, 3, 1, 2, 4, 7, 5, 8, 6]`` (1, x, y, z, xy, xz, yz, x^2 - y^2, 3z^2 - 1); both bases have no Condon-Shortley
phase, so there are no sign flips.

Frame. DECA shades with FLAME-space vertex normals: **x = image right, y = image up, z = towards the viewer** (FLAME's
head looks along +z and DECA's camera is orthographic along -z; DECA's default directional lights sit at ``z = +1``
and DiFaReli's ``grid_sh`` sweeps the band-1 rows as "x left -> right, y top -> bottom, z = 1"). This is the OpenGL /
nerfstudio camera frame (x right, y up, looking down -z), so for a relight3d camera :func:`deca_frame_rotation`
turns world directions into DECA's frame. A light *from* direction ``d`` gives band-1 rows proportional to ``+d``.

Example:
    >>> light = deca_sh_from_envmap(torch.ones(16, 32, 3))  # a uniform white sky of radiance 1
    >>> [round(v, 4) + 0.0 for v in light[:, 0].tolist()]
    [3.5449, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from relight3d.lighting.spherical_harmonics import cosine_lobe_band_factors, project_sh, sh_basis

DecaShading = Literal["reflected", "irradiance"]
"""What DECA's shading is taken to mean: reflected radiance of a white Lambertian surface (``E / pi``) or irradiance."""

DECA_TO_SH_INDEX = (0, 3, 1, 2, 4, 7, 5, 8, 6)
"""relight3d's orthonormal SH index (``l (l + 1) + m``) of each DECA row."""
DECA_BAND = (0, 1, 1, 1, 2, 2, 2, 2, 2)
"""The SH band ``l`` of each DECA row."""

_SQRT_PI = math.sqrt(math.pi)
DECA_CONSTANT_FACTORS = (
    1.0 / math.sqrt(4.0 * math.pi),
    (2.0 * math.pi / 3.0) * math.sqrt(3.0 / (4.0 * math.pi)),
    (2.0 * math.pi / 3.0) * math.sqrt(3.0 / (4.0 * math.pi)),
    (2.0 * math.pi / 3.0) * math.sqrt(3.0 / (4.0 * math.pi)),
    (math.pi / 4.0) * 3.0 * math.sqrt(5.0 / (12.0 * math.pi)),
    (math.pi / 4.0) * 3.0 * math.sqrt(5.0 / (12.0 * math.pi)),
    (math.pi / 4.0) * 3.0 * math.sqrt(5.0 / (12.0 * math.pi)),
    (math.pi / 4.0) * 1.5 * math.sqrt(5.0 / (12.0 * math.pi)),
    (math.pi / 4.0) * 0.5 * math.sqrt(5.0 / (4.0 * math.pi)),
)
"""DECA's ``constant_factor`` ``F_k`` (renderer.py), in DECA's row order."""


def deca_sh_basis(normals: Float[Tensor, "*bs 3"]) -> Float[Tensor, "*bs 9"]:
    """DECA's scaled basis ``F_k * b_k(n)`` (``add_SHlight``), so that ``shading = deca_sh_basis(n) @ light``.

    ``normals`` are used as given, as DECA does (its rasterised normals are interpolated unit vertex normals, a little
    shorter than unit length inside a triangle); normalise them first for exact unit-sphere values.

    Example:
        >>> [round(v, 5) for v in deca_sh_basis(torch.tensor([0.0, 0.0, 1.0])).tolist()]
        [0.28209, 0.0, 0.0, 1.02333, 0.0, 0.0, 0.0, 0.0, 0.49542]
    """
    x, y, z = normals.unbind(-1)
    polynomials = torch.stack(
        [torch.ones_like(x), x, y, z, x * y, x * z, y * z, x * x - y * y, 3.0 * z * z - 1.0], dim=-1
    )
    factors = torch.tensor(DECA_CONSTANT_FACTORS, dtype=polynomials.dtype, device=polynomials.device)
    return polynomials * factors


def deca_shading(normals: Float[Tensor, "*bs 3"], sh_coeffs: Float[Tensor, "9 c"]) -> Float[Tensor, "*bs c"]:
    """DECA's SH shading at ``normals`` under ``sh_coeffs`` (``[9, 3]``; reshape DECA's 27 numbers with
    ``light.reshape(9, 3)``). Not clipped: DECA's shading can be negative or above 1.

    Example:
        >>> light = torch.zeros(9, 3); light[0] = math.sqrt(4 * math.pi)  # uniform sky of radiance 1
        >>> deca_shading(torch.tensor([[0.6, 0.0, 0.8]]), light).tolist()  # doctest: +ELLIPSIS
        [[1.0..., 1.0..., 1.0...]]
    """
    if sh_coeffs.shape[0] != 9 or sh_coeffs.dim() != 2:
        raise ValueError(
            f"DECA SH coefficients must be [9, c] (reshape DECA's 27 numbers to 9 x 3), got {tuple(sh_coeffs.shape)}"
        )
    return deca_sh_basis(normals.to(sh_coeffs.dtype)) @ sh_coeffs


def _deca_scale(shading: DecaShading, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Per-row factor ``s_k`` with ``light[k] = s_k * L[DECA_TO_SH_INDEX[k]]`` (L: orthonormal radiance coefficients).

    From ``F_k b_k = A_l Y_lm`` for ``k >= 1`` and ``F_0 b_0 = Y_00``: matching ``sum_k F_k b_k light[k]`` to
    ``E / pi = sum A_l L_lm Y_lm / pi`` needs ``s_0 = A_0 / pi = 1`` and ``s_k = 1 / pi``; matching ``E`` needs
    ``s_0 = A_0 = pi`` and ``s_k = 1``.
    """
    if shading == "reflected":
        scale = [1.0] + [1.0 / math.pi] * 8
    elif shading == "irradiance":
        scale = [cosine_lobe_band_factors(0)[0]] + [1.0] * 8
    else:
        raise ValueError(f"unknown DECA shading meaning {shading!r} (reflected or irradiance)")
    return torch.tensor(scale, dtype=dtype, device=device)


def deca_sh_from_sh(sh_coeffs: Float[Tensor, "9 c"], shading: DecaShading = "reflected") -> Float[Tensor, "9 c"]:
    """DECA's ``[9, c]`` light from relight3d's order-2 orthonormal radiance coefficients (see the module doc).

    With ``shading="reflected"``, ``deca_shading(n, deca_sh_from_sh(L)) == sh_irradiance(L, n) / pi``; with
    ``"irradiance"`` it equals ``sh_irradiance(L, n)``.
    """
    if sh_coeffs.shape[0] != 9 or sh_coeffs.dim() != 2:
        raise ValueError(f"expected order-2 SH coefficients [9, c], got {tuple(sh_coeffs.shape)}")
    index = torch.tensor(DECA_TO_SH_INDEX, device=sh_coeffs.device)
    return sh_coeffs.index_select(0, index) * _deca_scale(shading, sh_coeffs.dtype, sh_coeffs.device)[:, None]


def sh_from_deca_sh(deca_coeffs: Float[Tensor, "9 c"], shading: DecaShading = "reflected") -> Float[Tensor, "9 c"]:
    """relight3d's orthonormal radiance coefficients of a DECA light: the inverse of :func:`deca_sh_from_sh`.

    The result is the order-2 radiance whose irradiance reproduces DECA's shading; DECA's light says nothing about
    radiance above band 2 (those bands are invisible to a Lambertian surface up to ``A_4 / A_0 = 1 / 24``).
    """
    if deca_coeffs.shape[0] != 9 or deca_coeffs.dim() != 2:
        raise ValueError(f"DECA SH coefficients must be [9, c], got {tuple(deca_coeffs.shape)}")
    unscaled = deca_coeffs / _deca_scale(shading, deca_coeffs.dtype, deca_coeffs.device)[:, None]
    out = torch.empty_like(unscaled)
    out[list(DECA_TO_SH_INDEX)] = unscaled
    return out


def _fibonacci_directions(count: int) -> Tensor:
    """``count`` well-spread unit directions (float64), enough to pin down any order-2 expansion."""
    i = torch.arange(count, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * i / count
    phi = i * math.pi * (3.0 - math.sqrt(5.0))
    rho = torch.sqrt((1.0 - z * z).clamp_min(0.0))
    return torch.stack([rho * torch.cos(phi), rho * torch.sin(phi), z], dim=-1)


def rotate_sh_order2(sh_coeffs: Float[Tensor, "9 c"], rotation: Float[Tensor, "3 3"]) -> Float[Tensor, "9 c"]:
    """Coefficients of the same function expressed in a rotated frame: ``f'(rotation @ d) = f(d)``.

    Rotations keep each band closed, so the 9 x 9 matrix ``D`` with ``Y(rotation.T @ d') = Y(d') @ D`` is exact; it is
    solved from 64 spread directions by least squares (exact up to rounding) in float64.
    """
    rotation = rotation.detach().to(torch.float64, copy=True).cpu()
    directions = _fibonacci_directions(64)  # d' in the new frame
    in_new = sh_basis(directions, order=2)
    in_old = sh_basis(directions @ rotation, order=2)  # rows: Y(rotation.T @ d')
    matrix = torch.linalg.lstsq(in_new, in_old).solution  # Y(R.T d') = Y(d') @ matrix
    matrix = matrix.to(device=sh_coeffs.device, dtype=sh_coeffs.dtype)
    return matrix @ sh_coeffs


def deca_frame_rotation(camera_to_world: Float[Tensor, "3 4"] | Float[Tensor, "4 4"]) -> Float[Tensor, "3 3"]:
    """``world_to_deca`` for a camera pose (OpenGL / nerfstudio convention: x right, y up, looking down -z).

    DECA's frame is that camera frame (x right, y up, z towards the viewer), so this is ``R_c2w.T`` (the rotation
    block made orthonormal). ``world_to_deca @ d`` gives a world direction ``d`` in DECA's frame.
    """
    rotation = camera_to_world[:3, :3].detach().to(torch.float64)
    u, _, vh = torch.linalg.svd(rotation)
    rotation = u @ vh
    if torch.det(rotation) < 0:
        raise ValueError("camera_to_world has a reflection in its rotation block (determinant < 0)")
    dtype = camera_to_world.dtype if camera_to_world.is_floating_point() else torch.float32
    return rotation.T.to(dtype)


def deca_sh_from_envmap(
    envmap: Float[Tensor, "h w c"],
    world_to_deca: Optional[Float[Tensor, "3 3"]] = None,
    shading: DecaShading = "reflected",
) -> Float[Tensor, "9 c"]:
    """DECA's ``[9, c]`` light for an equirectangular radiance map (relight3d's map convention, world +Z up).

    The map is projected onto the orthonormal basis up to band 2 (:func:`project_sh`, exact pixel integrals, in
    float64), turned into DECA's frame with ``world_to_deca`` (e.g. :func:`deca_frame_rotation`; None takes the
    map's world axes as DECA's x, y, z directly) and converted with :func:`deca_sh_from_sh`.

    Closed forms (``shading="reflected"``): a uniform map ``L`` gives ``light[0] = sqrt(4 pi) L`` and zeros; a
    clamped-cosine lobe ``max(0, d . w)`` has ``L_lm = A_l Y_lm(d)`` (Funk-Hecke), so ``light[0] = sqrt(pi) / 2`` and
    band 1 is ``d / sqrt(3 pi)``.
    """
    coeffs = project_sh(envmap.to(torch.float64), order=2)
    if world_to_deca is not None:
        coeffs = rotate_sh_order2(coeffs, world_to_deca)
    return deca_sh_from_sh(coeffs, shading).to(envmap.dtype)


@dataclass
class DecaShFit:
    """A least-squares DECA light and how well it explains the observations."""

    coeffs: Float[Tensor, "9 c"]
    """DECA's light, ``[9, c]``."""
    rms_residual: Float[Tensor, " c"]
    """Root-mean-square of ``observed - model`` over the fitted samples, per channel."""
    num_samples: int
    """Samples used (inside the mask, finite)."""


def fit_deca_sh(
    normals: Float[Tensor, "*bs 3"],
    observed: Float[Tensor, "*bs c"],
    mask: Optional[Bool[Tensor, "*bs"]] = None,
    albedo: Optional[Float[Tensor, "*bs c"]] = None,
) -> DecaShFit:
    """Least-squares DECA light from shading observed at ``normals`` (e.g. a face's pixels and rendered normals).

    Without ``albedo``, ``observed`` is the shading itself and each channel solves ``min || B l - s ||^2`` with
    ``B = deca_sh_basis(normals)``. With ``albedo``, ``observed`` is the image and the model is
    ``image = albedo * shading`` (DECA's); each channel solves ``min || diag(albedo) B l - image ||^2``, which is
    ``shading = image / albedo`` weighted by ``albedo^2`` (dark-albedo pixels, where division amplifies noise,
    count less). Solved in float64 (``torch.linalg.lstsq``); samples outside ``mask`` or with a non-finite value are
    dropped. Normals are used as given (DECA does not re-normalise).

    Raises:
        ValueError: fewer than 9 usable samples, or shapes that do not match.
    """
    if normals.shape[-1] != 3:
        raise ValueError(f"normals must end in 3, got {tuple(normals.shape)}")
    if observed.shape[:-1] != normals.shape[:-1]:
        raise ValueError(f"observed {tuple(observed.shape)} and normals {tuple(normals.shape)} differ in batch shape")
    channels = observed.shape[-1]
    n = normals.reshape(-1, 3).to(torch.float64)
    obs = observed.reshape(-1, channels).to(torch.float64)
    keep = torch.isfinite(n).all(dim=-1) & torch.isfinite(obs).all(dim=-1)
    if mask is not None:
        if mask.shape != normals.shape[:-1]:
            raise ValueError(f"mask {tuple(mask.shape)} must match normals' batch shape {tuple(normals.shape[:-1])}")
        keep &= mask.reshape(-1).to(torch.bool)
    weights = None
    if albedo is not None:
        if albedo.shape != observed.shape:
            raise ValueError(f"albedo {tuple(albedo.shape)} must match observed {tuple(observed.shape)}")
        weights = albedo.reshape(-1, channels).to(torch.float64)
        keep &= torch.isfinite(weights).all(dim=-1)
        weights = weights[keep]
    n, obs = n[keep], obs[keep]
    count = int(n.shape[0])
    if count < 9:
        raise ValueError(f"fitting 9 DECA SH coefficients needs at least 9 usable samples, got {count}")
    basis = deca_sh_basis(n)  # [N, 9]
    if weights is None:
        coeffs = torch.linalg.lstsq(basis, obs).solution  # [9, c]
        model = basis @ coeffs
    else:
        design = weights.T[:, :, None] * basis[None]  # [c, N, 9]
        coeffs = torch.linalg.lstsq(design, obs.T[:, :, None]).solution[..., 0].T  # [9, c]
        model = weights * (basis @ coeffs)
    rms = (obs - model).square().mean(dim=0).sqrt()
    out_dtype = observed.dtype if observed.is_floating_point() else torch.float32
    return DecaShFit(
        coeffs=coeffs.to(device=observed.device, dtype=out_dtype),
        rms_residual=rms.to(device=observed.device, dtype=out_dtype),
        num_samples=count,
    )
