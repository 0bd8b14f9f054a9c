"""The weight-free default prior: relighting from the radiance field's own G-buffers.

For each pixel of a view, with the field's rendered normal ``n`` and ray direction ``d``, the observed linear colour
is modelled (metallic-roughness, :mod:`relight3d.lighting.shading`) as::

    observed = albedo * D_src(n) + k_s * S_src(n, d)

where ``D(n) = E(n) / pi`` is the Lambertian shading of a map (its irradiance ``E``, cosine-convolved by brute
force) and ``S`` its split-sum specular term for a dielectric (F0 = 0.04) of the configured roughness. Dividing out
the source lighting gives the albedo, and shading it under the target map gives the relit colour::

    albedo = clip((observed - k_s * S_src) / max(D_src, eps), 0, 1)
    relit  = albedo * D_tgt(n) + k_s * S_tgt(n, d)

**Cast shadows.** When the pipeline provides a ``"visibility"`` G-buffer (``shadows=True``, the default: per pixel,
the transmittance through the field's density towards each direction of a coarse ``h x 2h`` map, see
:mod:`relight3d.lighting.visibility`), both diffuse terms are multiplied by the share of that light's irradiance
which reaches the point::

    D(n) -> D(n) * sum_k L_k dw_k T_k max(0, n.w_k) / sum_k L_k dw_k max(0, n.w_k)

and the specular term by the same share (its mean over channels). A pixel in the source light's shadow then gets a
correct, brighter albedo instead of a dark one, and shadows of the target light appear where they fall. What the
model still leaves out (interreflections, light leaking through the coarse grids) is, to first order, a per-pixel
factor shared by both lights: it stays inside the estimated "albedo" and carries over to the relit image. Colours
are converted between sRGB and linear with the exact sRGB curves.

When the source map is unknown, an order-2 SH lighting is fitted by least squares to the observed linear colours
of all masked pixels (``observed ~ sum_lm w_lm Y_lm(n)``, the irradiance of a constant-albedo object), and the
albedo is fixed up to scale by ``assumed_albedo``: a known limitation of single-light intrinsic decomposition.

``refine`` (stage 2) has no diffusion process: it re-estimates the albedo of a render under the *target* light,
clips it to the physically valid range and smooths it inside the mask with a Gaussian of ``t* x
refine_sigma_pixels`` pixels, then re-shades. ``t* = 0`` returns the input unchanged.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, Literal, Optional, Tuple, Type, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from relight3d.lighting import (
    PrefilteredEnvmap,
    diffuse_shading,
    linear_to_srgb,
    occluded_fraction,
    sh_basis,
    shade,
    shadow_factor,
    srgb_to_linear,
)
from relight3d.priors.base import PriorError, PriorViews, RelightingPrior, RelightingPriorConfig
from relight3d.priors.normals import density_and_depth_normals, normals_from_points


@dataclass
class PhysicalPriorConfig(RelightingPriorConfig):
    """Relighting by inverse shading of the field's normals (no weights, deterministic)."""

    _target: Type = field(default_factory=lambda: PhysicalPrior)
    """Prior class to instantiate."""
    roughness: float = 0.5
    """Perceptual roughness of the specular term."""
    specular_weight: float = 0.5
    """Scale of the dielectric (F0 = 0.04) specular term; 0 makes the model purely Lambertian. Below 1 because the
    field's normals err by 10-20 degrees and the reflected direction by twice that, so a full-strength highlight
    lands in the wrong place (relighting the light-0 test views with the field's G-buffers, mean in-mask PSNR over
    three lights at 0.5 vs 1.0: armadillo +0.10 dB, dragon +0.13, camel +0.44; at 1.5 all three get worse)."""
    shading_floor: float = 1e-3
    """Smallest source shading divided by (avoids blowing up noise in unlit regions)."""
    max_albedo: float = 1.0
    """Upper clip of the estimated albedo."""
    assumed_albedo: float = 0.6
    """With an unknown source map: the 95th-percentile albedo the fitted lighting is scaled to."""
    refine_sigma_pixels: float = 4.0
    """Stage 2: albedo smoothing radius in pixels at t* = 1 (scaled by t*)."""
    envmap_height: int = 64
    """Height at which maps are prefiltered for the specular term."""
    irradiance_map_height: int = 32
    """Diffuse irradiance from a brute-force cosine-convolved map of this height
    (:func:`relight3d.lighting.irradiance_map`); 0 uses order-2 SH, which rings under a small sun (relighting the
    benchmark's camel test images with its mesh normals under sunrise, without shadows: 26.2 dB in-mask PSNR with SH,
    27.8 dB with the map)."""
    shadows: bool = True
    """Cast shadows: ask the pipeline for the field's light visibility and shade with it (see the module
    docstring). Without a ``"visibility"`` G-buffer (2D use) the prior shades without shadows."""
    shadow_directions_height: int = 12
    """Rows of the coarse map whose pixel centres are the shadow directions (12: 288 directions, 15 degrees)."""
    shadow_volume_resolution: int = 64
    """Cells per side of the density grid the shadow rays are traced through."""
    shadow_strength: float = 0.6
    """How much of the shadowing is applied: the shadowed share of the irradiance becomes
    ``1 - shadow_strength * (1 - share)``. Below 1 stands in for the light that interreflections bring into
    shadowed regions, which the visibility term leaves out."""
    interreflection: bool = True
    """With shadows: light the occluded directions of each point with the object's own mean radiance under that
    light (a one-bounce approximation; see the module docstring) instead of leaving them black."""
    normal_source: Literal["density", "depth", "both", "multiview"] = "multiview"
    """Normals that shade: the field's density-gradient normals (``"normals"`` G-buffer), normals of the rendered
    depth (cross product of neighbouring surface points, ``"points"`` G-buffer,
    :func:`relight3d.priors.normals.normals_from_points`), their normalised sum, or that sum averaged over every
    training view that sees the point (``"multiview_normals"`` G-buffer, made by the pipeline with
    :func:`relight3d.priors.normals.fuse_view_normals`). Density and depth normals err differently (the gradient of
    trilinear grids is blocky at cell scale; depth is noisy along the ray), and the depth noise differs from view to
    view: on the benchmark's dragon, mean angle to the mesh normals after smoothing 23.8 degrees (density), 23.1
    (depth), 22.4 (both), 21.5 (multiview). Missing G-buffers fall back along multiview -> both -> density (2D use
    has only the density normals)."""
    normal_smoothing_pixels: float = 1.5
    """Gaussian sigma (pixels) of the masked blur applied to the normals before shading; 0 turns it off.
    Field normals are noisy at pixel scale, and shading under a hard light turns that noise into speckle (on the
    generated benchmark, relighting the light-0 test images of armadillo with the field's density normals:
    16.1 dB in-mask PSNR unsmoothed, 20.1 dB at sigma 2, under sunrise)."""


def fit_sh_lighting(
    linear: Float[Tensor, "n 3"], normals: Float[Tensor, "n 3"], order: int = 2
) -> Float[Tensor, "k 3"]:
    """Least-squares SH shading ``sum w_k Y_k(n)`` per channel that best explains ``linear`` (ridge 1e-4)."""
    basis = sh_basis(normals, order)  # [n, k]
    gram = basis.T @ basis + 1e-4 * torch.eye(basis.shape[1], dtype=basis.dtype, device=basis.device)
    return torch.linalg.solve(gram, basis.T @ linear)


class PhysicalPrior(RelightingPrior):
    """Inverse-then-forward shading with relight3d's image-based-lighting shader."""

    config: PhysicalPriorConfig
    required_gbuffers = ("normals", "directions")
    needs_source_envmap = True

    def __init__(self, config: PhysicalPriorConfig, device: Union[str, torch.device] = "cpu") -> None:
        super().__init__(config, device)
        self._prefiltered_cache: OrderedDict[Any, PrefilteredEnvmap] = OrderedDict()

    @property
    def resolution(self) -> Optional[int]:
        return None  # works at the input size

    @property
    def visibility_settings(self) -> Optional[Tuple[int, int]]:
        if not self.config.shadows:
            return None
        return self.config.shadow_directions_height, self.config.shadow_volume_resolution

    # --- shading terms ---------------------------------------------------------------------------------------
    def _prefiltered(self, envmap: Tensor) -> PrefilteredEnvmap:
        """The prefiltered map, cached by content: prefiltering a 512 x 1024 map takes seconds, and the pipeline
        passes the same source and target maps to every batch of stage 1 and every iteration of stage 2."""
        env = envmap.detach().float().cpu().contiguous()
        key = (tuple(env.shape), hashlib.sha1(env.numpy().tobytes()).hexdigest())
        cache = self._prefiltered_cache
        if key not in cache:
            cache[key] = PrefilteredEnvmap.from_envmap(
                env,
                base_height=min(self.config.envmap_height, env.shape[0]),
                irradiance_height=self.config.irradiance_map_height or None,
            )
            while len(cache) > 4:
                cache.popitem(last=False)
        cache.move_to_end(key)
        return cache[key]

    def _occlusion(self, visibility: Optional[Tensor], normals: Tensor) -> Optional[Tensor]:
        """Cosine-weighted share of each point's hemisphere that the object itself hides (None without shadows or
        with interreflection off)."""
        if visibility is None or not self.config.interreflection:
            return None
        return occluded_fraction(visibility, normals, self.config.shadow_directions_height)

    def _with_bounce(self, diffuse: Tensor, occlusion: Optional[Tensor], radiance: Tensor) -> Tensor:
        """Add the light the occluded directions bring: the object's mean radiance times the occluded share."""
        if occlusion is None:
            return diffuse
        return diffuse + self.config.shadow_strength * occlusion * radiance

    def _terms(
        self, envmap: Tensor, normals: Tensor, directions: Tensor, visibility: Optional[Tensor] = None
    ) -> Tuple[Tensor, Tensor]:
        """Lambertian shading ``E(n)/pi`` and the dielectric specular term under ``envmap`` (shadowed when the
        per-pixel ``visibility`` towards the shadow directions is given; the interreflection is added by the
        caller, :meth:`_with_bounce`)."""
        env = self._prefiltered(envmap).to(normals.device)
        diffuse = diffuse_shading(normals, env)
        share = None
        if visibility is not None:
            share = shadow_factor(visibility, normals, envmap.to(normals.device), self.config.shadow_directions_height)
            share = 1.0 - self.config.shadow_strength * (1.0 - share)
            diffuse = diffuse * share
        if self.config.specular_weight == 0.0:
            return diffuse, torch.zeros_like(diffuse)
        ones = torch.ones_like(normals[..., :1])
        out = shade(normals, directions, torch.zeros_like(normals), ones * self.config.roughness, ones * 0.0, env)
        specular = out["specular"] * self.config.specular_weight
        if share is not None:
            specular = specular * share.mean(-1, keepdim=True)
        return diffuse, specular

    def _gbuffers(
        self, gbuffers: Optional[Dict[str, Tensor]], shape: torch.Size, masks: Optional[Tensor] = None
    ) -> Tuple[Tensor, Tensor]:
        if gbuffers is None or "normals" not in gbuffers:
            raise PriorError(type(self.config).__name__, "the physical prior needs rendered normals (gbuffers)")
        normals = gbuffers["normals"].float()
        if normals.shape[:3] != shape[:3]:
            raise PriorError(
                type(self.config).__name__,
                f"normals G-buffer {tuple(normals.shape)} does not match the images {tuple(shape)}",
            )
        directions = gbuffers.get("directions")
        if directions is None:  # orthographic approximation: the view looks along -z of the world
            directions = torch.zeros_like(normals)
            directions[..., 2] = -1.0
        normals = F.normalize(normals, dim=-1, eps=1e-8)
        points = gbuffers.get("points")
        fused = gbuffers.get("multiview_normals")
        if self.config.normal_source == "multiview" and fused is not None and masks is not None:
            normals = torch.where(masks > 0.5, F.normalize(fused.float(), dim=-1, eps=1e-8), normals)
        elif self.config.normal_source == "both" and points is not None and masks is not None:
            normals = density_and_depth_normals(normals, points, directions, masks)
        elif self.config.normal_source == "depth" and points is not None and masks is not None:
            from_depth = normals_from_points(points.float(), directions.float(), masks.float())
            normals = torch.where(masks > 0.5, from_depth, normals)
        sigma = self.config.normal_smoothing_pixels
        if masks is not None and sigma > 0.25:
            normals = F.normalize(masked_gaussian_blur(normals, masks.float(), sigma), dim=-1, eps=1e-8)
        return normals, F.normalize(directions.float(), dim=-1, eps=1e-8)

    def _visibility(self, gbuffers: Optional[Dict[str, Tensor]], shape: torch.Size) -> Optional[Tensor]:
        """The ``"visibility"`` G-buffer ``[b, h, w, k]`` when shadows are on and the pipeline provided it."""
        vis = None if gbuffers is None or not self.config.shadows else gbuffers.get("visibility")
        if vis is None:
            return None
        k = 2 * self.config.shadow_directions_height**2
        if vis.shape[:3] != shape[:3] or vis.shape[-1] != k:
            raise PriorError(
                type(self.config).__name__,
                f"visibility G-buffer {tuple(vis.shape)} does not match the images {tuple(shape[:3])} and {k} "
                "shadow directions",
            )
        return vis.float()

    def _source_terms(
        self,
        linear: Tensor,
        masks: Tensor,
        normals: Tensor,
        directions: Tensor,
        source: Optional[Tensor],
        visibility: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        if source is not None:
            return self._terms(source, normals, directions, visibility)
        sel = masks[..., 0] > 0.5
        if int(sel.sum()) < 16:
            raise PriorError(type(self.config).__name__, "too few object pixels to estimate the source light")
        coeffs = fit_sh_lighting(linear[sel], normals[sel])
        shading = (sh_basis(normals, 2) @ coeffs).clamp_min(0.0)
        scale = (
            torch.quantile((linear[sel] / shading[sel].clamp_min(1e-4)).flatten(), 0.95) / self.config.assumed_albedo
        )
        return shading * scale, torch.zeros_like(shading)

    # --- the contract ----------------------------------------------------------------------------------------
    def relight_views(self, views: PriorViews) -> Float[Tensor, "b h w 3"]:
        """Relight by dividing out the source shading and multiplying in the target's (see the module docstring)."""
        albedo, normals, directions, visibility, parts = self._decompose(views)
        d_tgt, s_tgt = self._terms(views.target_envmap, normals, directions, visibility)
        if parts is not None:
            # The object's mean radiance: observed under the source light, scaled by the ratio of the mean direct
            # shadings for the target.
            occlusion, radiance_src, d_src = parts
            radiance_tgt = radiance_src * _masked_mean(d_tgt, views.masks) / d_src.clamp_min(1e-6)
            d_tgt = self._with_bounce(d_tgt, occlusion, radiance_tgt)
        return self._shaded(views, albedo, d_tgt, s_tgt)

    def estimate_albedo(self, views: PriorViews) -> Float[Tensor, "b h w 3"]:
        """The linear albedo (base colour) that explains ``views.images`` under the source light, clipped to
        ``[0, max_albedo]``: what :meth:`relight_views` re-shades, and what the field's material head is fitted to
        (:mod:`relight3d.pipelines.relight_material`). ``views.target_envmap`` is not used. Inside the masks only;
        the scale is the source light's (a given map's, or the estimate's ``assumed_albedo``)."""
        return self._decompose(self.checked(views))[0]

    def _decompose(self, views: PriorViews) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor], Optional[tuple]]:
        """``(albedo, normals, directions, visibility, bounce)``; ``bounce`` is ``(occlusion, mean radiance, mean
        direct source shading)`` when the interreflection term applies (a known source map and shadows), else None."""
        images, masks, gbuffers, source_envmap = views.images, views.masks, views.gbuffers, views.source_envmap
        normals, directions = self._gbuffers(gbuffers, images.shape, masks)
        visibility = self._visibility(gbuffers, images.shape)
        linear = srgb_to_linear(images.float().clamp(0.0, 1.0))
        d_src, s_src = self._source_terms(linear, masks, normals, directions, source_envmap, visibility)
        occlusion = self._occlusion(visibility, normals) if source_envmap is not None else None
        bounce = None
        if occlusion is not None:
            radiance_src = _masked_mean(linear, masks)
            bounce = (occlusion, radiance_src, _masked_mean(d_src, masks))
            d_src = self._with_bounce(d_src, occlusion, radiance_src)
        return self._albedo(linear, d_src, s_src), normals, directions, visibility, bounce

    def refine_views(self, views: PriorViews, t_star: float) -> Float[Tensor, "b h w 3"]:
        """Re-shade ``images`` with their albedo (under the target light) clipped and smoothed by ``t*``."""
        images, masks, gbuffers = views.images, views.masks, views.gbuffers
        if t_star <= 0.0:
            return images.clone()
        normals, directions = self._gbuffers(gbuffers, images.shape, masks)
        visibility = self._visibility(gbuffers, images.shape)
        d_tgt, s_tgt = self._terms(views.target_envmap, normals, directions, visibility)
        linear = srgb_to_linear(images.float().clamp(0.0, 1.0))
        d_tgt = self._with_bounce(d_tgt, self._occlusion(visibility, normals), _masked_mean(linear, masks))
        albedo = self._albedo(linear, d_tgt, s_tgt)
        sigma = float(t_star) * self.config.refine_sigma_pixels
        if sigma > 0.25:
            albedo = masked_gaussian_blur(albedo, masks, sigma)
        return self._shaded(views, albedo, d_tgt, s_tgt)

    def _albedo(self, linear: Tensor, diffuse: Tensor, specular: Tensor) -> Tensor:
        """The albedo that explains the linear colour under the given shading terms (clipped to the valid range)."""
        albedo = (linear - specular).clamp_min(0.0) / diffuse.clamp_min(self.config.shading_floor)
        return albedo.clamp(0.0, self.config.max_albedo)

    def _shaded(self, views: PriorViews, albedo: Tensor, diffuse: Tensor, specular: Tensor) -> Tensor:
        """sRGB of ``albedo`` shaded by the terms inside the masks; the input views outside."""
        out = linear_to_srgb((albedo * diffuse + specular).clamp(0.0, 1.0))
        return torch.where(views.masks > 0, out, views.images).to(views.images.dtype)


def _masked_mean(x: Float[Tensor, "b h w c"], masks: Float[Tensor, "b h w 1"]) -> Float[Tensor, "b 1 1 c"]:
    """Per-image mean of ``x`` over the pixels inside the mask."""
    m = (masks > 0.5).to(x.dtype)
    return (x * m).sum((1, 2), keepdim=True) / m.sum((1, 2), keepdim=True).clamp_min(1.0)


def masked_gaussian_blur(
    image: Float[Tensor, "b h w c"], masks: Float[Tensor, "b h w 1"], sigma: float
) -> Float[Tensor, "b h w c"]:
    """Gaussian blur that only averages pixels inside the mask (normalised convolution)."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()

    def blur(t: Tensor) -> Tensor:
        c = t.shape[1]
        t = F.conv2d(
            F.pad(t, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c
        )
        return F.conv2d(
            F.pad(t, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c
        )

    m = (masks > 0.5).to(image.dtype).permute(0, 3, 1, 2)
    num = blur(image.permute(0, 3, 1, 2) * m)
    den = blur(m).clamp_min(1e-6)
    out = (num / den).permute(0, 2, 3, 1)
    return torch.where(masks > 0.5, out, image)
