"""The split-sum IBL shader: furnace tests, prefiltering against brute force, reflection direction, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from relight3d.lighting import (
    PrefilteredEnvmap,
    diffuse_shading,
    env_brdf_approx,
    envmap_directions,
    envmap_solid_angles,
    eval_sh,
    irradiance_map,
    prefilter_ggx,
    project_sh,
    sample_envmap,
    shade,
)
from relight3d.lighting.shading import ggx_distribution


def _smooth_map(height: int = 16, width: int = 32, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coeffs = torch.randn(16, 3, generator=generator, dtype=torch.float64) * 0.4
    coeffs[0] = 3.0
    return eval_sh(coeffs, envmap_directions(height, width, dtype=torch.float64)).clamp_min(0.0).to(dtype)


def _unit(n: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, 3, generator=generator, dtype=torch.float64), dim=-1).to(dtype)


def test_white_furnace_diffuse() -> None:
    """metallic 0, roughness 1, uniform radiance L: rgb = albedo * L + a small dielectric specular (<= 0.02 L)."""
    radiance = 1.7
    env = PrefilteredEnvmap.from_envmap(torch.full((16, 32, 3), radiance), n_levels=4, base_height=8)
    n = 50
    normals = _unit(n, seed=1)
    view_dirs = -torch.nn.functional.normalize(normals + 0.5 * _unit(n, seed=2), dim=-1)  # cameras in front
    albedo = torch.rand(n, 3)
    out = shade(normals, view_dirs, albedo, torch.ones(n, 1), torch.zeros(n, 1), env)
    assert torch.allclose(out["diffuse"], albedo * radiance, rtol=1e-5)
    # Specular = L (0.04 A + B); Karis' fit at roughness 1 gives 0.04 * 0.4524 - 0.0024 = 0.0157.
    assert torch.allclose(out["specular"], torch.full_like(albedo, 0.0157 * radiance), atol=1e-3)
    assert ((out["rgb"] - albedo * radiance).abs() <= 0.02 * radiance).all()
    assert torch.equal(out["rgb"], out["diffuse"] + out["specular"])


def test_white_furnace_mirror_metal() -> None:
    """metallic 1, albedo 1, roughness 0, seen head-on, uniform L: a perfect mirror returns L."""
    env = PrefilteredEnvmap.from_envmap(torch.full((16, 32, 3), 2.0), n_levels=3, base_height=8)
    normals = _unit(20, seed=3)
    out = shade(normals, -normals, torch.ones(20, 3), torch.zeros(20, 1), torch.ones(20, 1), env)
    assert torch.allclose(out["rgb"], torch.full((20, 3), 2.0), rtol=1e-3)
    assert out["diffuse"].abs().max() == 0.0


def test_mirror_reflects_about_the_normal() -> None:
    """A ray hitting a floor (n = +z) at 37 degrees from vertical reflects upwards; the mirror shows that direction."""
    envmap = _smooth_map(32, 64)
    env = PrefilteredEnvmap.from_envmap(envmap, n_levels=3, base_height=32)
    ray = torch.tensor([[0.6, 0.0, -0.8]])
    normal = torch.tensor([[0.0, 0.0, 1.0]])
    out = shade(normal, ray, torch.ones(1, 3), torch.zeros(1, 1), torch.ones(1, 1), env)
    scale, bias = env_brdf_approx(torch.zeros(1, 1), torch.full((1, 1), 0.8))
    expected = sample_envmap(envmap, torch.tensor([[0.6, 0.0, 0.8]])) * (scale + bias)
    assert torch.allclose(out["specular"], expected, rtol=1e-4)
    wrong = sample_envmap(envmap, torch.tensor([[-0.6, 0.0, 0.8]])) * (scale + bias)
    assert not torch.allclose(out["specular"], wrong, rtol=0.05)


def test_prefilter_matches_brute_force_ggx() -> None:
    """Level = sum L D(h) max(0, r.l) dOmega / sum D(h) max(0, r.l) dOmega with the true half vector h."""
    envmap = _smooth_map(8, 16, dtype=torch.float64) + torch.rand(8, 16, 3, dtype=torch.float64)
    roughness = 0.5
    got = prefilter_ggx(envmap, roughness, height=4, source_height=8)
    outputs = envmap_directions(4, 8, dtype=torch.float64).reshape(-1, 3)
    sources = envmap_directions(8, 16, dtype=torch.float64).reshape(-1, 3)
    solid = envmap_solid_angles(8, 16, dtype=torch.float64).reshape(-1)
    half = torch.nn.functional.normalize(outputs[:, None] + sources[None], dim=-1)
    cos_h = (half * outputs[:, None]).sum(-1)
    weights = ggx_distribution(cos_h**2, roughness**2) * (outputs @ sources.T).clamp_min(0.0) * solid
    expected = (weights @ envmap.reshape(-1, 3)) / weights.sum(1, keepdim=True)
    assert torch.allclose(got.reshape(-1, 3), expected, rtol=1e-10)


def test_roughest_level_is_the_irradiance_over_pi() -> None:
    """At roughness 1 GGX is uniform: the level is the cosine-weighted average, E / pi (here vs order-6 SH)."""
    envmap = _smooth_map(32, 64, dtype=torch.float64)
    level = prefilter_ggx(envmap, 1.0, height=8, source_height=32)
    directions = envmap_directions(8, 16, dtype=torch.float64)
    reference = diffuse_shading(directions, project_sh(envmap, order=6))
    assert torch.allclose(level, reference, rtol=2e-3)


def test_prefiltered_constant_map_stays_constant() -> None:
    env = PrefilteredEnvmap.from_envmap(torch.full((16, 32, 3), 0.8), n_levels=4, base_height=16, min_height=4)
    for level in env.levels:
        assert torch.allclose(level, torch.full_like(level, 0.8), rtol=1e-5)


def test_rougher_levels_are_blurrier() -> None:
    envmap = torch.full((16, 32, 3), 0.01)
    envmap[5, 10] = 100.0  # a small bright light
    env = PrefilteredEnvmap.from_envmap(envmap, n_levels=5, base_height=16, min_height=4)
    peaks = [float(level.max() / level.mean()) for level in env.levels]
    assert peaks == sorted(peaks, reverse=True)


def test_specular_interpolates_linearly_between_levels() -> None:
    env = PrefilteredEnvmap.from_envmap(_smooth_map(32, 64), n_levels=3, base_height=16)
    directions = _unit(10, seed=4)
    at_0 = env.specular(directions, torch.zeros(10, 1))
    at_half = env.specular(directions, torch.full((10, 1), 0.5))
    at_quarter = env.specular(directions, torch.full((10, 1), 0.25))
    assert torch.allclose(at_0, sample_envmap(env.levels[0], directions))
    assert torch.allclose(at_half, sample_envmap(env.levels[1], directions))
    assert torch.allclose(at_quarter, 0.5 * (at_0 + at_half), rtol=1e-5)


def _numerical_env_brdf(roughness: float, n_dot_v: float, n_theta: int = 96, n_phi: int = 96) -> tuple:
    """(A, B): GGX, Schlick-Smith visibility (k = alpha / 2) and Schlick Fresnel integrated over half vectors.

    ``integral f(l, v) n.l dl`` with ``l = reflect(v, h)`` and ``dl = 4 (v.h) dh`` becomes
    ``integral D(h) G1(n.l) G1(n.v) (v.h) / (n.v) dh``, split into ``(1 - Fc)`` and ``Fc = (1 - v.h)^5``.
    """
    alpha = roughness**2
    k = alpha / 2
    v = torch.tensor([math.sqrt(1 - n_dot_v**2), 0.0, n_dot_v], dtype=torch.float64)
    theta = (torch.arange(n_theta, dtype=torch.float64) + 0.5) / n_theta * math.pi / 2
    phi = (torch.arange(n_phi, dtype=torch.float64) + 0.5) / n_phi * 2 * math.pi
    theta, phi = torch.meshgrid(theta, phi, indexing="ij")
    half = torch.stack([theta.sin() * phi.cos(), theta.sin() * phi.sin(), theta.cos()], dim=-1)
    d_half = theta.sin() * (math.pi / 2 / n_theta) * (2 * math.pi / n_phi)
    v_dot_h = (half * v).sum(-1)
    n_dot_l = (2 * v_dot_h[..., None] * half - v)[..., 2]

    def g1(x):
        return x / (x * (1 - k) + k)

    valid = (n_dot_l > 0) & (v_dot_h > 0)
    integrand = ggx_distribution(half[..., 2] ** 2, alpha) * g1(n_dot_l.clamp_min(0.0)) * g1(n_dot_v)
    integrand = torch.where(valid, integrand * v_dot_h / n_dot_v * d_half, torch.zeros_like(d_half))
    fresnel = (1 - v_dot_h.clamp(0.0, 1.0)) ** 5
    return float((integrand * (1 - fresnel)).sum()), float((integrand * fresnel).sum())


def test_env_brdf_approximation_against_numerical_integration() -> None:
    """Karis' mobile fit is coarse: measured here |dA| <= 0.15, |dB| <= 0.13, mean error 0.04."""
    errors = []
    for roughness in (0.3, 0.6, 1.0):
        for n_dot_v in (0.1, 0.4, 0.9):
            a_ref, b_ref = _numerical_env_brdf(roughness, n_dot_v)
            a, b = env_brdf_approx(torch.tensor([roughness]), torch.tensor([n_dot_v]))
            errors.append((abs(float(a) - a_ref), abs(float(b) - b_ref)))
    errors = torch.tensor(errors)
    assert errors[:, 0].max() < 0.16 and errors[:, 1].max() < 0.14
    assert errors.mean() < 0.05
    # Mirror limit: all energy reflected.
    a, b = env_brdf_approx(torch.tensor([0.0]), torch.tensor([1.0]))
    assert float(a + b) == pytest.approx(1.0, abs=1e-3)


def test_shade_accepts_per_point_scalars_without_trailing_axis() -> None:
    env = PrefilteredEnvmap.from_envmap(_smooth_map(16, 32), n_levels=3, base_height=8)
    normals = _unit(3, seed=9)
    albedo = torch.rand(3, 3)
    roughness, metallic = torch.tensor([0.2, 0.5, 0.9]), torch.tensor([0.0, 0.3, 1.0])
    column = shade(normals, -normals, albedo, roughness[:, None], metallic[:, None], env)
    flat = shade(normals, -normals, albedo, roughness, metallic, env)
    assert torch.equal(column["rgb"], flat["rgb"])
    scalar = shade(normals, -normals, albedo, 0.5, 0.0, env)
    assert torch.allclose(
        scalar["rgb"], shade(normals, -normals, albedo, torch.full((3, 1), 0.5), torch.zeros(3, 1), env)["rgb"]
    )


def test_diffuse_shading_accepts_maps_coefficients_and_prefiltered() -> None:
    envmap = _smooth_map(16, 32)
    normals = _unit(30, seed=5)
    from_map = diffuse_shading(normals, envmap)
    assert torch.allclose(from_map, diffuse_shading(normals, project_sh(envmap, 2)))
    env = PrefilteredEnvmap.from_envmap(envmap, n_levels=2, base_height=8)
    assert torch.allclose(from_map, diffuse_shading(normals, env))
    # radiance = albedo * shading, the Lambertian term of shade()
    albedo = torch.rand(30, 3)
    out = shade(normals, -normals, albedo, torch.ones(30, 1), torch.zeros(30, 1), env)
    assert torch.allclose(out["diffuse"], albedo * from_map, rtol=1e-5)
    with pytest.raises(ValueError, match="environment map"):
        diffuse_shading(normals, torch.ones(3))


def test_shade_gradcheck() -> None:
    dtype = torch.float64
    env = PrefilteredEnvmap.from_envmap(_smooth_map(8, 16, dtype=dtype), n_levels=3, base_height=8, min_height=4)
    normals = _unit(3, seed=6, dtype=dtype)
    view_dirs = -torch.nn.functional.normalize(normals + 0.3 * _unit(3, seed=7, dtype=dtype), dim=-1)
    albedo = torch.tensor([[0.2, 0.5, 0.8], [0.9, 0.1, 0.4], [0.6, 0.6, 0.6]], dtype=dtype)
    roughness = torch.tensor([[0.15], [0.62], [0.83]], dtype=dtype)  # away from the level boundaries 0, .5, 1
    metallic = torch.tensor([[0.1], [0.5], [0.9]], dtype=dtype)
    inputs = tuple(t.clone().requires_grad_(True) for t in (normals, view_dirs, albedo, roughness, metallic))

    def rgb(*args):
        return shade(*args, env)["rgb"]

    assert torch.autograd.gradcheck(rgb, inputs, eps=1e-6, atol=1e-5)


def test_gradients_reach_the_environment_map() -> None:
    envmap = _smooth_map(8, 16, dtype=torch.float64).requires_grad_(True)
    env = PrefilteredEnvmap.from_envmap(envmap, n_levels=3, base_height=8, min_height=4)
    normals = _unit(5, seed=8, dtype=torch.float64)
    out = shade(
        normals, -normals, torch.full((5, 3), 0.5, dtype=torch.float64), torch.full((5, 1), 0.4), torch.zeros(5, 1), env
    )
    out["rgb"].sum().backward()
    assert torch.isfinite(envmap.grad).all() and envmap.grad.abs().sum() > 0


@pytest.mark.requires_cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu() -> None:
    """The whole path (rotation into a camera, SH, prefiltering, shading) gives the CPU's values on a GPU."""
    from relight3d.lighting import rotate_envmap_to_camera

    envmap = _smooth_map(16, 32)
    c2w = torch.tensor([[0.0, 0.0, 1.0, 2.0], [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.5]])
    normals, albedo = _unit(8, seed=10), torch.rand(8, 3)
    roughness, metallic = torch.rand(8, 1), torch.rand(8, 1)
    results = {}
    for device in ("cpu", "cuda"):
        rotated = rotate_envmap_to_camera(envmap.to(device), c2w.to(device))
        env = PrefilteredEnvmap.from_envmap(rotated, n_levels=4, base_height=16)
        out = shade(*(t.to(device) for t in (normals, -normals, albedo, roughness, metallic)), env)
        results[device] = torch.cat([out["rgb"], diffuse_shading(normals.to(device), rotated)], dim=-1).cpu()
    assert torch.allclose(results["cuda"], results["cpu"], rtol=1e-4, atol=1e-5)


def test_irradiance_map_matches_the_cosine_integral_where_sh_rings() -> None:
    """Under a small bright sun, the irradiance map is the exact cosine integral (brute force over the map's texels,
    looked up bilinearly); order-2 SH is off by far more on the side away from the sun. Uniform light gives pi L."""
    uniform = irradiance_map(torch.full((32, 64, 3), 0.7), 16)
    assert torch.allclose(uniform, torch.full((16, 32, 3), 0.7 * math.pi), rtol=2e-3)
    sky = torch.full((64, 128, 3), 0.05)
    sky[20:22, 40:42] = 400.0  # a sun about 50 degrees above the horizon
    dirs = envmap_directions(64, 128).reshape(-1, 3)
    power = (sky * envmap_solid_angles(64, 128)[..., None]).reshape(-1, 3)
    normals = _unit(400, seed=3)
    exact = (normals @ dirs.T).clamp_min(0.0) @ power
    env = PrefilteredEnvmap.from_envmap(sky, n_levels=2, base_height=8, irradiance_height=32)
    scale = float(exact.max())
    map_error = float((env.irradiance(normals) - exact).abs().max()) / scale
    sh_error = float((diffuse_shading(normals, project_sh(sky, 2)) * math.pi - exact).abs().max()) / scale
    assert map_error < 0.03, map_error
    assert sh_error > 3 * map_error, (sh_error, map_error)
    # diffuse_shading of a PrefilteredEnvmap follows the map it was built with
    assert torch.allclose(diffuse_shading(normals, env), env.irradiance(normals) / math.pi)
