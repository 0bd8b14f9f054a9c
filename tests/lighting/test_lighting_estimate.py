"""Source-light estimation (relight3d.lighting.estimate) against closed forms: a Lambertian sphere of known albedo
under a known order-2 SH light."""

from __future__ import annotations

import math

import pytest
import torch

from relight3d.lighting import dominant_light_direction, linear_to_srgb, sh_irradiance
from relight3d.lighting.estimate import (
    estimate_light_from_views,
    estimate_sh_light,
    fit_sh_shading,
    shading_to_radiance_sh,
)


def sphere_normals(n: int = 4000) -> torch.Tensor:
    """Fibonacci points on the unit sphere (its normals)."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1.0 - 2.0 * i / n
    phi = math.pi * (1.0 + 5.0**0.5) * i
    r = torch.sqrt(1.0 - z * z)
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)


def known_light(colour=(1.0, 0.9, 0.8)) -> torch.Tensor:
    """Radiance SH coefficients [9, 3] of a smooth light that is positive everywhere (brighter above, towards +X)."""
    coeffs = torch.zeros(9, 3, dtype=torch.float64)
    coeffs[0] = torch.tensor(colour, dtype=torch.float64) * math.sqrt(4 * math.pi)
    coeffs[2] = 0.6  # Y_10 (z)
    coeffs[3] = 0.3  # Y_11 (x)
    coeffs[4] = 0.1  # Y_2-2 (xy)
    coeffs[6] = 0.2  # Y_20
    return coeffs


def render(normals: torch.Tensor, light: torch.Tensor, albedo) -> torch.Tensor:  # noqa: ANN001
    """Linear radiance of a Lambertian surface: albedo * E(n) / pi."""
    return albedo * sh_irradiance(light, normals) / math.pi


def test_fit_recovers_albedo_times_light_exactly() -> None:
    normals, light, albedo = sphere_normals(), known_light(), 0.5
    coeffs = fit_sh_shading(render(normals, light, albedo), normals, ridge=0.0)
    assert torch.allclose(shading_to_radiance_sh(coeffs), albedo * light, rtol=1e-6, atol=1e-8)


def test_estimate_recovers_the_light_given_the_albedo_scale() -> None:
    normals, light, albedo = sphere_normals(), known_light(), 0.5
    est = estimate_sh_light(render(normals, light, albedo), normals, neutral=False, assumed_albedo=albedo)
    # The scale comes from the clamped map's brute-force irradiance (32 x 64 map, 16-row irradiance map).
    assert torch.allclose(est.sh_coeffs.double(), light, rtol=0.03, atol=0.03)
    assert est.relative_residual < 1e-3
    assert est.envmap.shape == (32, 64, 3) and bool((est.envmap >= 0).all())


def test_estimate_scale_follows_the_assumed_albedo() -> None:
    normals, light = sphere_normals(), known_light()
    obs = render(normals, light, 0.5)
    brighter = estimate_sh_light(obs, normals, neutral=False, assumed_albedo=0.25).sh_coeffs
    darker = estimate_sh_light(obs, normals, neutral=False, assumed_albedo=0.5).sh_coeffs
    assert torch.allclose(brighter, 2.0 * darker, rtol=1e-4)


def test_neutral_light_has_a_grey_mean_and_keeps_each_channels_shape() -> None:
    normals, light = sphere_normals(), known_light(colour=(1.0, 0.7, 0.4))
    est = estimate_sh_light(render(normals, light, 0.5), normals, neutral=True).sh_coeffs.double()
    assert torch.allclose(est[0], est[0].mean().expand(3), rtol=1e-5)
    # Per channel the estimate is the true light times one factor.
    ratio = est / light.clamp_min(1e-9)
    for c in range(3):
        nonzero = light[:, c].abs() > 1e-9
        assert torch.allclose(ratio[nonzero, c], ratio[0, c].expand(int(nonzero.sum())), rtol=0.02)


def test_textured_albedo_still_finds_the_light_direction() -> None:
    normals = sphere_normals()
    light = torch.zeros(9, 3, dtype=torch.float64)
    light[0] = math.sqrt(4 * math.pi) * 0.3
    sun = torch.nn.functional.normalize(torch.tensor([0.5, -0.4, 0.75], dtype=torch.float64), dim=0)
    # A broad lobe towards `sun`: Y_1m coefficients proportional to the direction (order 1 of a cosine light).
    light[1], light[2], light[3] = 0.5 * sun[1], 0.5 * sun[2], 0.5 * sun[0]
    albedo = 0.3 + 0.6 * torch.rand(normals.shape[0], 1, generator=torch.Generator().manual_seed(0)).double()
    est = estimate_sh_light(render(normals, light, albedo), normals)
    found = dominant_light_direction(est.envmap).double()
    angle = math.degrees(math.acos(float((found * sun).sum().clamp(-1, 1))))
    assert angle < 10.0


def test_trimming_dark_pixels_removes_the_pull_of_shadows() -> None:
    normals, light, albedo = sphere_normals(), known_light(), 0.5
    obs = render(normals, light, albedo)
    # Cast shadows on half the points of one side (an occluder towards -X): far darker than their normal allows.
    coin = torch.rand(normals.shape[0], generator=torch.Generator().manual_seed(1)) < 0.5
    shadowed = (normals[:, 0] < -0.3) & coin
    obs[shadowed] *= 0.2
    plain = estimate_sh_light(obs, normals, neutral=False, assumed_albedo=albedo, albedo_quantile=0.5)
    trimmed = estimate_sh_light(obs, normals, neutral=False, assumed_albedo=albedo, albedo_quantile=0.5, trim_dark=0.2)
    error = lambda e: float((e.sh_coeffs.double() - light).norm() / light.norm())  # noqa: E731
    assert error(trimmed) < 0.5 * error(plain)


def test_estimate_from_views_reads_srgb_images_inside_the_mask() -> None:
    normals, light, albedo = sphere_normals(4096), known_light(), 0.5
    linear = render(normals, light, albedo).float()
    images = linear_to_srgb(linear).reshape(1, 64, 64, 3)
    masks = torch.ones(1, 64, 64, 1)
    masks[0, :8] = 0.0  # pixels outside the mask must not count: give them nonsense colours and normals
    images[0, :8] = 1.0
    normals_img = normals.float().reshape(1, 64, 64, 3).clone()
    normals_img[0, :8] = torch.tensor([0.0, 0.0, -1.0])
    est = estimate_light_from_views(images, normals_img, masks, neutral=False, assumed_albedo=albedo)
    assert est.n_samples == 56 * 64
    assert torch.allclose(est.sh_coeffs.double(), light, rtol=0.05, atol=0.05)


def test_too_few_or_black_observations_are_refused() -> None:
    normals = sphere_normals(20)
    with pytest.raises(ValueError, match="too few"):
        estimate_sh_light(torch.ones(20, 3), normals)
    with pytest.raises(ValueError, match="black|unlit"):
        estimate_sh_light(torch.zeros(400, 3), sphere_normals(400))
