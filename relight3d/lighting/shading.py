"""A differentiable image-based-lighting shader: SH diffuse plus split-sum specular (prefiltered map x env BRDF).

Model (metallic-roughness, as in glTF / UE4), for a surface with normal ``n`` seen along the ray direction ``d``
(from the camera to the surface point; ``v = -d`` points back to the camera)::

    diffuse  = (1 - metallic) * albedo * E(n) / pi                 E: SH irradiance (order 2 by default)
    F0       = 0.04 * (1 - metallic) + albedo * metallic
    specular = prefiltered(r, roughness) * (F0 * A(roughness, n.v) + B(roughness, n.v)),   r = reflect(d, n)
    rgb      = diffuse + specular                                   (linear radiance, not clipped)

*Split sum* (Karis 2013, "Real Shading in Unreal Engine 4"): the specular integral is approximated by the product of
(1) the map prefiltered with the GGX lobe of each roughness, under the assumption n = v = r, and (2) the
directional albedo of the BRDF, ``F0 * A + B``.

(1) :class:`PrefilteredEnvmap` stores ``n_levels`` maps for roughness ``k / (n_levels - 1)``. Level 0 is the map
itself (resized, a mirror); level ``k > 0`` is computed by brute force: every output texel direction ``r`` averages
the (downsampled) source texels ``w`` with weights ``D_GGX(h; alpha = roughness^2) * max(0, r . w) * dOmega(w)`` where
``h`` is the half vector of ``r`` and ``w`` (with n = v = r, ``cos^2(n, h) = (1 + r . w) / 2``): this is the integral
that Karis' importance-sampled loop estimates. Levels halve in resolution with roughness (a mip chain); the lookup
interpolates bilinearly inside a level and linearly between levels, so the result is differentiable in the direction
and the roughness. At roughness 1 the GGX distribution is uniform and the level equals the cosine-weighted average,
i.e. the irradiance over pi.

(2) ``A, B`` come from Karis' analytic fit of the pre-integrated environment BRDF for mobile
("Physically Based Shading on Mobile", 2014), used instead of a 2D lookup table: a few multiply-adds, smooth in
roughness and n.v. It is a coarse fit: against numerical integration of GGX with Schlick-Smith visibility
(k = alpha / 2) and Schlick Fresnel, A is off by up to ~0.15 (very rough surfaces, and moderately rough ones seen
head-on) and B by up to ~0.13 at grazing angles; it is exact in the mirror limit (A + B = 1 at roughness 0,
n.v = 1). ``tests/lighting/test_lighting_shading.py`` measures this.

The diffuse term uses :func:`relight3d.lighting.spherical_harmonics.sh_irradiance`; :func:`diffuse_shading` exposes
it alone (``radiance = albedo * shading``) for callers that estimate albedo by dividing an observed colour by the
shading of the source lighting.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Union

import torch
from jaxtyping import Float
from torch import Tensor

from relight3d.lighting.equirect import envmap_directions, envmap_solid_angles, resize_envmap, sample_envmap
from relight3d.lighting.spherical_harmonics import project_sh, sh_irradiance

DIELECTRIC_F0 = 0.04
"""Normal-incidence Fresnel reflectance of non-metals."""


def ggx_distribution(cos_theta_h_sq: Tensor, alpha: Union[float, Tensor]) -> Tensor:
    """GGX / Trowbridge-Reitz normal distribution ``alpha^2 / (pi ((alpha^2 - 1) cos^2 + 1)^2)``."""
    alpha_sq = alpha * alpha
    denom = (alpha_sq - 1.0) * cos_theta_h_sq + 1.0
    return alpha_sq / (math.pi * denom * denom)


def prefilter_ggx(
    envmap: Float[Tensor, "h w c"],
    roughness: float,
    height: int,
    source_height: Optional[int] = None,
    rows_per_chunk: int = 8,
) -> Float[Tensor, "height 2*height c"]:
    """The map convolved with the GGX lobe of ``roughness`` (n = v = r assumption), at ``height x 2 height``.

    ``out(r) = sum_w L(w) D(h) max(0, r.w) dOmega(w) / sum_w D(h) max(0, r.w) dOmega(w)`` over the texels ``w`` of the
    map resized to ``source_height`` (default ``2 * height``, at most the map's own height). Dense and differentiable
    in ``envmap``; the cost is ``(2 height^2) * (2 source_height^2)`` weights, so keep heights small (<= 64).

    Example:
        >>> out = prefilter_ggx(torch.full((8, 16, 3), 3.0), roughness=0.5, height=4)
        >>> torch.allclose(out, torch.full((4, 8, 3), 3.0))
        True
    """
    if not 0.0 < roughness <= 1.0:
        raise ValueError(f"prefilter_ggx needs roughness in (0, 1], got {roughness}")
    source_height = min(envmap.shape[0], 2 * height) if source_height is None else source_height
    source = resize_envmap(envmap, source_height)
    src_h, src_w, channels = source.shape
    src_dirs = envmap_directions(src_h, src_w, device=envmap.device, dtype=envmap.dtype).reshape(-1, 3)
    src_weight = envmap_solid_angles(src_h, src_w, device=envmap.device, dtype=envmap.dtype).reshape(-1, 1)
    # One matmul gives numerator and denominator: columns [L dOmega, dOmega].
    weighted_values = torch.cat([source.reshape(-1, channels) * src_weight, src_weight], dim=1)
    # D(h) with cos^2(h) = (1 + c) / 2 is alpha^2 / (pi (slope c + offset)^2); the constant factor cancels.
    alpha_sq = roughness**4
    slope, offset = (alpha_sq - 1.0) * 0.5, (alpha_sq + 1.0) * 0.5
    out_dirs = envmap_directions(height, 2 * height, device=envmap.device, dtype=envmap.dtype)
    rows = []
    for start in range(0, height, rows_per_chunk):
        directions = out_dirs[start : start + rows_per_chunk].reshape(-1, 3)
        cosine = directions @ src_dirs.transpose(0, 1)  # [n_out, n_src]
        weights = cosine.clamp_min(0.0) / (cosine * slope + offset).square()
        sums = weights @ weighted_values
        rows.append((sums[:, :channels] / sums[:, channels:]).reshape(-1, 2 * height, channels))
    return torch.cat(rows, dim=0)


def irradiance_map(
    envmap: Float[Tensor, "h w c"], height: int, source_height: Optional[int] = None
) -> Float[Tensor, "height 2*height c"]:
    """Irradiance ``E(n) = integral L(w) max(0, n.w) dw`` for the texel directions ``n`` of a ``height x 2 height``
    map, by brute force over the texels of the map resized (power-preserving) to ``source_height`` (default
    ``2 * height``, at most the map's own height).

    Unlike order-2 SH, this does not ring: under a small sun, SH irradiance is off by tens of percent on the side
    away from the sun, which the cosine convolution keeps exact. The lobe is wide (a cosine), so a 32-row map
    looked up bilinearly is accurate; the cost is ``(2 height^2) * (2 source_height^2)`` weights.

    Example:
        >>> out = irradiance_map(torch.full((16, 32, 3), 2.0), height=4)
        >>> bool(torch.allclose(out, torch.full((4, 8, 3), 2.0 * math.pi), rtol=0.02))
        True
    """
    source_height = min(envmap.shape[0], 2 * height) if source_height is None else source_height
    source = resize_envmap(envmap, source_height)
    src_h, src_w, channels = source.shape
    src_dirs = envmap_directions(src_h, src_w, device=envmap.device, dtype=envmap.dtype).reshape(-1, 3)
    power = source.reshape(-1, channels) * envmap_solid_angles(
        src_h, src_w, device=envmap.device, dtype=envmap.dtype
    ).reshape(-1, 1)
    out_dirs = envmap_directions(height, 2 * height, device=envmap.device, dtype=envmap.dtype).reshape(-1, 3)
    return ((out_dirs @ src_dirs.T).clamp_min(0.0) @ power).reshape(height, 2 * height, channels)


def env_brdf_approx(
    roughness: Float[Tensor, "*bs 1"], n_dot_v: Float[Tensor, "*bs 1"]
) -> tuple[Float[Tensor, "*bs 1"], Float[Tensor, "*bs 1"]]:
    """Karis' mobile fit of the split-sum environment BRDF: ``(A, B)`` with directional albedo ``F0 * A + B``.

    Example:
        >>> a, b = env_brdf_approx(torch.tensor([1.0]), torch.tensor([1.0]))
        >>> [round(float(a), 4), round(float(b), 4)]
        [0.4524, -0.0024]
    """
    r0 = -1.0 * roughness + 1.0
    r1 = -0.0275 * roughness + 0.0425
    r2 = -0.572 * roughness + 1.04
    r3 = 0.022 * roughness - 0.04
    a004 = torch.minimum(r0 * r0, torch.exp2(-9.28 * n_dot_v)) * r0 + r1
    return -1.04 * a004 + r2, 1.04 * a004 + r3


class PrefilteredEnvmap:
    """An environment map ready for shading: split-sum specular levels and the irradiance of its diffuse term.

    Attributes:
        levels: ``n_levels`` maps ``[h_k, 2 h_k, 3]``; level ``k`` is prefiltered for roughness ``k / (n_levels - 1)``.
        sh_coeffs: ``[(sh_order + 1)^2, 3]`` SH projection of the full-resolution map.
        irradiance_levels: None (the diffuse term uses ``sh_coeffs``) or an :func:`irradiance_map` ``[h, 2h, 3]``
            looked up bilinearly (exact cosine convolution; better under small bright sources).

    Build it with :meth:`from_envmap`; it keeps the autograd graph to the source map, so lighting can be optimised.
    """

    def __init__(self, levels: Sequence[Tensor], sh_coeffs: Tensor, irradiance: Optional[Tensor] = None) -> None:
        if len(levels) < 2:
            raise ValueError("PrefilteredEnvmap needs at least 2 levels (roughness 0 and 1)")
        self.levels: List[Tensor] = list(levels)
        self.sh_coeffs = sh_coeffs
        self.irradiance_levels = irradiance

    @classmethod
    def from_envmap(
        cls, envmap: Float[Tensor, "h w 3"], n_levels: int = 6, base_height: int = 64, min_height: int = 8,
        sh_order: int = 2, irradiance_height: Optional[int] = None,
    ) -> PrefilteredEnvmap:  # fmt: skip
        """Prefilter ``envmap`` (linear radiance, world Z up) into ``n_levels`` roughness levels.

        Args:
            envmap: the equirectangular map.
            n_levels: number of roughness levels (roughness ``0, 1/(n-1), ..., 1``); at least 2.
            base_height: height of level 0 (at most the map's height); level ``k`` has height
                ``max(min_height, base_height / 2^k)``.
            min_height: smallest level height.
            sh_order: SH order of the diffuse irradiance (>= 2 recommended).
            irradiance_height: None: the diffuse term uses the SH irradiance; a height: it uses an
                :func:`irradiance_map` of that height instead (32 is accurate to about 1%).

        Example:
            >>> env = PrefilteredEnvmap.from_envmap(torch.rand(32, 64, 3), n_levels=4, base_height=16)
            >>> [tuple(level.shape) for level in env.levels]
            [(16, 32, 3), (8, 16, 3), (8, 16, 3), (8, 16, 3)]
        """
        if n_levels < 2:
            raise ValueError(f"n_levels must be >= 2, got {n_levels}")
        base_height = min(base_height, envmap.shape[0])
        levels = [resize_envmap(envmap, base_height)]
        for k in range(1, n_levels):
            height = max(min_height, base_height >> k)
            levels.append(prefilter_ggx(envmap, k / (n_levels - 1), height))
        irradiance = None if irradiance_height is None else irradiance_map(envmap, irradiance_height)
        return cls(levels, project_sh(envmap, sh_order), irradiance)

    @property
    def n_levels(self) -> int:
        """Number of roughness levels."""
        return len(self.levels)

    def to(self, device: Union[str, torch.device]) -> PrefilteredEnvmap:
        """A copy on ``device``."""
        irradiance = None if self.irradiance_levels is None else self.irradiance_levels.to(device)
        return PrefilteredEnvmap([level.to(device) for level in self.levels], self.sh_coeffs.to(device), irradiance)

    def irradiance(self, normals: Float[Tensor, "*bs 3"]) -> Float[Tensor, "*bs 3"]:
        """Irradiance ``integral L max(0, n.w) dw`` at ``normals`` (irradiance map when built with one, else SH)."""
        if self.irradiance_levels is not None:
            return sample_envmap(self.irradiance_levels, normals)
        return sh_irradiance(self.sh_coeffs, normals)

    def specular(self, directions: Float[Tensor, "*bs 3"], roughness: Float[Tensor, "*bs 1"]) -> Float[Tensor, "*bs 3"]:
        """Prefiltered radiance around ``directions`` for ``roughness`` in [0, 1] (clamped), linear between levels."""
        position = _as_column(roughness, directions).clamp(0.0, 1.0) * (self.n_levels - 1)
        lower = torch.floor(position.detach()).clamp(0, self.n_levels - 2)
        frac = position - lower  # in [0, 1]; its gradient is the slope between the two bracketing levels
        result = None
        for k, level in enumerate(self.levels):
            weight = torch.where(lower == k, 1.0 - frac, torch.zeros_like(frac))
            weight = torch.where(lower == k - 1, frac, weight)
            term = sample_envmap(level, directions) * weight
            result = term if result is None else result + term
        return result


def _as_column(value: Union[float, Tensor], like: Tensor) -> Tensor:
    """A per-point scalar as ``*bs 1``: floats become tensors, ``*bs``-shaped tensors get a trailing axis."""
    value = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if value.dim() > 0 and value.dim() == like.dim() - 1:
        value = value[..., None]
    return value


def _as_coefficients(env_or_coeffs: Union[Tensor, PrefilteredEnvmap]) -> Tensor:
    """SH coefficients from a PrefilteredEnvmap, an equirectangular map ``[h, w, 3]`` or coefficients ``[n, 3]``."""
    if isinstance(env_or_coeffs, PrefilteredEnvmap):
        return env_or_coeffs.sh_coeffs
    if env_or_coeffs.dim() == 3:
        return project_sh(env_or_coeffs, order=2)
    if env_or_coeffs.dim() == 2:
        return env_or_coeffs
    raise ValueError(
        f"expected an environment map [h, w, 3], SH coefficients [n, 3] or a PrefilteredEnvmap, "
        f"got a tensor of shape {tuple(env_or_coeffs.shape)}"
    )


def diffuse_shading(
    normals: Float[Tensor, "*bs 3"],
    env_or_coeffs: Union[Float[Tensor, "h w 3"], Float[Tensor, "n 3"], PrefilteredEnvmap],
) -> Float[Tensor, "*bs 3"]:
    """Lambertian shading factor ``E(n) / pi``: a surface of albedo ``a`` has radiance ``a * shading``.

    ``env_or_coeffs`` is an equirectangular map (projected to order-2 SH here; project once yourself with
    :func:`project_sh` when calling repeatedly), SH coefficients, or a :class:`PrefilteredEnvmap`. Under uniform
    radiance ``L`` the shading is ``L`` for every normal. Differentiable in both arguments.

    Example:
        >>> shading = diffuse_shading(torch.tensor([[0.0, 1.0, 0.0]]), torch.full((16, 32, 3), 0.5))
        >>> torch.allclose(shading, torch.full((1, 3), 0.5))
        True
    """
    if isinstance(env_or_coeffs, PrefilteredEnvmap):
        return env_or_coeffs.irradiance(normals) / math.pi
    coeffs = _as_coefficients(env_or_coeffs)
    return sh_irradiance(coeffs, normals.to(coeffs.dtype)) / math.pi


def shade(
    normals: Float[Tensor, "*bs 3"],
    view_dirs: Float[Tensor, "*bs 3"],
    albedo: Float[Tensor, "*bs 3"],
    roughness: Float[Tensor, "*bs 1"],
    metallic: Float[Tensor, "*bs 1"],
    env: PrefilteredEnvmap,
) -> Dict[str, Float[Tensor, "*bs 3"]]:
    """Shade surface points under an environment map (see the module docstring for the model).

    Args:
        normals: surface normals (normalised here), world frame.
        view_dirs: ray directions **from the camera to the point** (as in ray bundles; normalised here).
        albedo: base colour, linear RGB in [0, 1].
        roughness: perceptual roughness in [0, 1] (``alpha = roughness^2``); shape ``*bs 1``, ``*bs`` or a float.
        metallic: metalness in [0, 1]; shape ``*bs 1``, ``*bs`` or a float.
        env: the prefiltered lighting.

    Returns:
        ``{"rgb": diffuse + specular, "diffuse": ..., "specular": ...}``, linear radiance, not clipped.
        Differentiable in normals, view_dirs, albedo, roughness, metallic (and the map behind ``env``). Normals that
        face away from the camera are not flipped; ``n.v`` is clamped to 1e-4 for the BRDF fit.

    Example:
        >>> env = PrefilteredEnvmap.from_envmap(torch.ones(16, 32, 3), n_levels=3, base_height=8)
        >>> out = shade(torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.0, 0.0, -1.0]]),
        ...             torch.full((1, 3), 0.5), torch.ones(1, 1), torch.zeros(1, 1), env)
        >>> [round(v, 4) for v in out["diffuse"][0].tolist()]
        [0.5, 0.5, 0.5]
    """
    roughness = _as_column(roughness, normals)
    metallic = _as_column(metallic, normals)
    n = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    d = view_dirs / view_dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    d_dot_n = (d * n).sum(dim=-1, keepdim=True)
    n_dot_v = (-d_dot_n).clamp_min(1e-4)
    reflected = d - 2.0 * d_dot_n * n
    roughness = roughness.clamp(0.0, 1.0)
    metallic = metallic.clamp(0.0, 1.0)

    diffuse = (1.0 - metallic) * albedo * env.irradiance(n) / math.pi
    f0 = DIELECTRIC_F0 * (1.0 - metallic) + albedo * metallic
    scale, bias = env_brdf_approx(roughness, n_dot_v)
    specular = env.specular(reflected, roughness) * (f0 * scale + bias)
    return {"rgb": diffuse + specular, "diffuse": diffuse, "specular": specular}
