"""The weight-free physical prior against closed-form shading."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from relight3d.lighting import (
    PrefilteredEnvmap,
    diffuse_shading,
    linear_to_srgb,
    occluded_fraction,
    shade,
    shadow_factor,
    visibility_directions,
)
from relight3d.priors.base import PriorError, PriorViews
from relight3d.priors.normals import fuse_view_normals, normals_from_points
from relight3d.priors.physical import PhysicalPriorConfig, masked_gaussian_blur


def _relit(views: PriorViews, **config) -> torch.Tensor:
    """``views`` relit by a physical prior with ``config``."""
    return PhysicalPriorConfig(**config).setup().relight(views)


def _sphere_view(res: int = 24):
    """Normals, ray directions and mask of an orthographic view of a unit sphere (camera on -Y looking at +Y)."""
    x = torch.linspace(-1, 1, res)
    zz, xx = torch.meshgrid(-x, x, indexing="ij")
    r2 = xx**2 + zz**2
    mask = (r2 < 0.95).float()[..., None]
    y = -torch.sqrt((1 - r2).clamp_min(0))
    normals = torch.stack([xx, y, zz], -1)
    normals = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    directions = torch.zeros_like(normals)
    directions[..., 1] = 1.0
    cam = torch.tensor([[1.0, 0, 0, 0], [0, 0, -1, -3], [0, 1, 0, 0]])
    return normals[None], directions[None], mask[None], cam[None]


def _envmaps():
    h, w = 16, 32
    v = (torch.arange(h) + 0.5) / h
    u = (torch.arange(w) + 0.5) / w
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    a = torch.stack([1.5 - vv, 0.8 + 0.5 * torch.cos(2 * math.pi * uu), 0.6 + 0.2 * vv], -1)
    b = torch.stack([0.3 + 0.2 * vv, 0.5 + 0.4 * torch.sin(2 * math.pi * uu), 1.2 - 0.6 * vv], -1).clamp_min(0.05)
    return a, b


def _prefiltered(env):
    """The maps as the prior prefilters them (envmap_height=16, its default irradiance map)."""
    return PrefilteredEnvmap.from_envmap(env, base_height=16, irradiance_height=32)


def _render(albedo, normals, directions, env, specular_weight, roughness=0.5):
    pre = _prefiltered(env)
    ones = torch.ones_like(normals[..., :1])
    spec = shade(normals, directions, torch.zeros_like(normals), ones * roughness, ones * 0.0, pre)["specular"]
    return linear_to_srgb((albedo * diffuse_shading(normals, pre) + specular_weight * spec).clamp(0, 1))


@pytest.mark.parametrize("specular_weight", [0.0, 1.0])
def test_relight_matches_forward_shading_under_the_target(specular_weight: float) -> None:
    normals, directions, mask, cam = _sphere_view()
    albedo = torch.rand(1, 24, 24, 3) * 0.6 + 0.1
    env_a, env_b = _envmaps()
    img_a = _render(albedo, normals, directions, env_a, specular_weight)
    img_b = _render(albedo, normals, directions, env_b, specular_weight)
    prior = PhysicalPriorConfig(specular_weight=specular_weight, envmap_height=16, normal_smoothing_pixels=0).setup()
    gb = {"normals": normals, "directions": directions}
    relit = prior.relight(PriorViews(img_a, mask, cam, env_b, gbuffers=gb, source_envmap=env_a))
    inside = mask[..., 0] > 0
    err = (relit - img_b).abs()[inside]
    assert float(err.max()) < 2e-3
    # ... and the relit image is really different from the input
    assert float((img_a - img_b).abs()[inside].mean()) > 0.05
    # pixels outside the mask keep their input values
    assert torch.equal(relit[~inside], img_a[~inside])


@pytest.mark.parametrize("specular_weight", [0.0, 1.0])
def test_estimate_albedo_recovers_the_rendered_albedo(specular_weight: float) -> None:
    """What the field's material head is fitted to: the albedo an image was rendered with, under a known source."""
    normals, directions, mask, cam = _sphere_view()
    albedo = torch.rand(1, 24, 24, 3, generator=torch.Generator().manual_seed(3)) * 0.6 + 0.1
    env_a, env_b = _envmaps()
    image = _render(albedo, normals, directions, env_a, specular_weight)
    prior = PhysicalPriorConfig(specular_weight=specular_weight, envmap_height=16, normal_smoothing_pixels=0).setup()
    views = PriorViews(image, mask, cam, env_b, gbuffers={"normals": normals, "directions": directions},
                       source_envmap=env_a)  # fmt: skip
    inside = mask[..., 0] > 0
    assert float((prior.estimate_albedo(views) - albedo).abs()[inside].max()) < 3e-3
    # under the wrong source light it is not the albedo
    wrong = replace(views, source_envmap=env_b)
    assert float((prior.estimate_albedo(wrong) - albedo).abs()[inside].mean()) > 0.05


def test_relight_with_cast_shadows_matches_shadowed_forward_shading() -> None:
    """With a visibility G-buffer, the prior inverts and re-applies each light's shadowed irradiance: an image
    rendered with shadows under light A is relit to the shadowed rendering under light B, and ignoring the
    shadows is measurably worse."""
    normals, directions, mask, cam = _sphere_view()
    height = 6
    k = 2 * height * height
    gen = torch.Generator().manual_seed(1)
    albedo = torch.rand(1, 24, 24, 3, generator=gen) * 0.5 + 0.1
    # Occlude every direction with x > 0 for the left half of the view (a wall on the +X side), none elsewhere.
    dirs = visibility_directions(height)
    vis = torch.ones(1, 24, 24, k)
    vis[:, :, :12] = (dirs[:, 0] <= 0).float()
    env_a, env_b = _envmaps()
    env_b = env_b.clone()
    env_b[6:10, 14:18] += 20.0  # a sun near the horizon towards +X: the wall shadows it

    def render(env):
        pre = _prefiltered(env)
        share = shadow_factor(vis, normals, env, height)
        return linear_to_srgb((albedo * diffuse_shading(normals, pre) * share).clamp(0, 1))

    img_a, img_b = render(env_a), render(env_b)
    inside = mask[..., 0] > 0
    cfg = dict(specular_weight=0.0, envmap_height=16, normal_smoothing_pixels=0, shadow_directions_height=height,
               shadow_strength=1.0, interreflection=False)  # fmt: skip
    gb = {"normals": normals, "directions": directions, "visibility": vis}
    views = PriorViews(img_a, mask, cam, env_b, gbuffers=gb, source_envmap=env_a)
    relit = _relit(views, **cfg)
    assert float((relit - img_b).abs()[inside].max()) < 2e-3
    plain = _relit(views, **cfg, shadows=False)
    assert float((plain - img_b).abs()[inside].mean()) > 0.01
    # A visibility G-buffer for another direction count is a one-line error.
    bad = PriorViews(img_a, mask, cam, env_b, gbuffers={**gb, "visibility": vis[..., :-1]}, source_envmap=env_a)
    with pytest.raises(PriorError, match="visibility"):
        _relit(bad, **cfg)


def test_unknown_source_light_is_fitted_up_to_scale() -> None:
    normals, directions, mask, cam = _sphere_view(32)
    albedo = torch.full((1, 32, 32, 3), 0.5)
    env_a, env_b = _envmaps()
    img_a = _render(albedo, normals, directions, env_a, 0.0)
    img_b = _render(albedo, normals, directions, env_b, 0.0)
    prior = PhysicalPriorConfig(specular_weight=0.0, assumed_albedo=0.5, normal_smoothing_pixels=0).setup()
    relit = prior.relight(PriorViews(img_a, mask, cam, env_b, gbuffers={"normals": normals, "directions": directions}))
    inside = mask[..., 0] > 0
    assert float((relit - img_b).abs()[inside].mean()) < 0.02


def test_normal_smoothing_suppresses_speckle_from_noisy_normals() -> None:
    """Per-pixel noise on the normals (as a grid field's density gradient has) turns into speckle under a light
    that differs from the source; the masked normal blur brings the relit image back towards the clean one."""
    normals, directions, mask, cam = _sphere_view(48)
    albedo = torch.full((1, 48, 48, 3), 0.5)
    env_a, env_b = _envmaps()
    img_a = _render(albedo, normals, directions, env_a, 0.0)
    img_b = _render(albedo, normals, directions, env_b, 0.0)
    gen = torch.Generator().manual_seed(0)
    noisy = torch.nn.functional.normalize(normals + 0.35 * torch.randn(normals.shape, generator=gen), dim=-1)
    inside = mask[..., 0] > 0
    errors = {}
    for sigma in (0.0, 1.5):
        prior = PhysicalPriorConfig(specular_weight=0.0, normal_smoothing_pixels=sigma).setup()
        relit = prior.relight(PriorViews(img_a, mask, cam, env_b, gbuffers={"normals": noisy, "directions": directions},
                                         source_envmap=env_a))  # fmt: skip
        errors[sigma] = float((relit - img_b).abs()[inside].mean())
    assert errors[1.5] < 0.6 * errors[0.0], errors


def test_refine_is_identity_at_zero_and_smooths_albedo_noise() -> None:
    normals, directions, mask, cam = _sphere_view(32)
    _, env_b = _envmaps()
    clean = _render(torch.full((1, 32, 32, 3), 0.5), normals, directions, env_b, 0.0)
    noisy = (clean + 0.05 * torch.randn_like(clean)).clamp(0, 1)
    prior = PhysicalPriorConfig(specular_weight=0.0).setup()
    gb = {"normals": normals, "directions": directions}
    assert torch.equal(prior.refine(PriorViews(noisy, mask, cam, env_b, gbuffers=gb), 0.0), noisy)
    refined = prior.refine(PriorViews(noisy, mask, cam, env_b, gbuffers=gb), 0.4)
    inside = mask[..., 0] > 0.5
    assert float((refined - clean).abs()[inside].mean()) < 0.6 * float((noisy - clean).abs()[inside].mean())


def test_masked_blur_keeps_constant_images_and_ignores_outside() -> None:
    img = torch.full((1, 10, 10, 3), 0.3)
    img[:, :, :3] = 5.0  # outside the mask: must not leak in
    mask = torch.zeros(1, 10, 10, 1)
    mask[:, :, 3:] = 1
    out = masked_gaussian_blur(img, mask, 2.0)
    assert torch.allclose(out[:, :, 3:], torch.full_like(out[:, :, 3:], 0.3), atol=1e-6)


def test_missing_gbuffers_is_a_one_line_error() -> None:
    _, _, mask, cam = _sphere_view(8)
    env_a, _ = _envmaps()
    prior = PhysicalPriorConfig().setup()
    with pytest.raises(PriorError, match="normals"):
        prior.relight(PriorViews(torch.rand(1, 8, 8, 3), mask, cam, env_a))


def _wall_scene(height: int = 6):
    """The sphere view with a wall on the +X side hiding every direction with x > 0 from the left half."""
    normals, directions, mask, cam = _sphere_view()
    vis = torch.ones(1, 24, 24, 2 * height * height)
    vis[:, :, :12] = (visibility_directions(height)[:, 0] <= 0).float()
    return normals, directions, mask, cam, vis


def test_interreflection_lights_occluded_directions_with_the_objects_mean_radiance() -> None:
    """With interreflection, the hidden share of each hemisphere is lit by the object's mean radiance (under the
    source light: the observed mean; under the target: scaled by the ratio of mean direct shadings). An image
    rendered with that model under light A is relit to its rendering under light B; the model is really used
    (without it the error is larger), and relighting to the source light itself is the identity."""
    height = 6
    normals, directions, mask, cam, vis = _wall_scene(height)
    albedo = torch.rand(1, 24, 24, 3, generator=torch.Generator().manual_seed(2)) * 0.5 + 0.1
    env_a, env_b = _envmaps()
    env_b = env_b.clone()
    env_b[6:10, 14:18] += 20.0
    inside = mask[..., 0] > 0
    occlusion = occluded_fraction(vis, normals, height)
    strength = 0.6

    def mean_in(x):
        return x[inside].mean(0)

    def direct(env):
        share = 1.0 - strength * (1.0 - shadow_factor(vis, normals, env, height))
        return diffuse_shading(normals, _prefiltered(env)) * share

    d_a, d_b = direct(env_a), direct(env_b)
    radiance_a = torch.zeros(3)
    for _ in range(50):  # the observed mean radiance is a fixed point of the model
        radiance_a = mean_in(albedo * (d_a + strength * occlusion * radiance_a))
    radiance_b = radiance_a * mean_in(d_b) / mean_in(d_a)
    img_a = linear_to_srgb((albedo * (d_a + strength * occlusion * radiance_a)).clamp(0, 1))
    img_b = linear_to_srgb((albedo * (d_b + strength * occlusion * radiance_b)).clamp(0, 1))
    cfg = dict(specular_weight=0.0, envmap_height=16, normal_smoothing_pixels=0, shadow_directions_height=height,
               shadow_strength=strength)  # fmt: skip
    gb = {"normals": normals, "directions": directions, "visibility": vis}
    views = PriorViews(img_a, mask, cam, env_b, gbuffers=gb, source_envmap=env_a)
    relit = _relit(views, **cfg)
    assert float((relit - img_b).abs()[inside].max()) < 3e-3
    without = _relit(views, **cfg, interreflection=False)
    assert float((without - img_b).abs()[inside].mean()) > 3 * float((relit - img_b).abs()[inside].mean())
    same = _relit(replace(views, target_envmap=env_a), **cfg)
    assert float((same - img_a).abs()[inside].max()) < 2e-3


def test_occluded_fraction_closed_forms() -> None:
    height = 8
    dirs = visibility_directions(height)
    up = torch.tensor([[0.0, 0.0, 1.0]])
    assert torch.allclose(occluded_fraction(torch.ones(1, dirs.shape[0]), up, height), torch.zeros(1, 1))
    assert torch.allclose(occluded_fraction(torch.zeros(1, dirs.shape[0]), up, height), torch.ones(1, 1))
    # A wall hiding the +X half of the sky from an upward normal hides half of its cosine-weighted hemisphere.
    half = occluded_fraction((dirs[:, 0] <= 0).float()[None], up, height)
    assert abs(float(half) - 0.5) < 0.02


def test_normals_from_points_plane_sphere_and_depth_edges() -> None:
    """Normals of rendered points: exact on a tilted plane; close to the analytic normals of a sphere; at a depth
    step the one-sided differences keep the front surface's normal; outward-facing (against the rays)."""
    res = 32
    v, u = torch.meshgrid(torch.linspace(-1, 1, res), torch.linspace(-1, 1, res), indexing="ij")
    directions = torch.zeros(1, res, res, 3)
    directions[..., 2] = -1.0  # orthographic camera looking down -z
    mask = torch.ones(1, res, res, 1)
    plane = torch.stack([u, -v, 0.3 * u - 0.2 * v - 2.0], -1)[None]  # z = 0.3 x + 0.2 y - 2
    expected = torch.nn.functional.normalize(torch.tensor([-0.3, -0.2, 1.0]), dim=0)
    got = normals_from_points(plane, directions, mask)
    assert torch.allclose(got, expected.expand_as(got), atol=1e-5)
    # Sphere of radius 1 seen from +z: points (x, y, sqrt(1 - r^2)); one-sided differences err by O(pixel).
    for sphere_res, bound in ((32, 3.5), (64, 1.8)):
        normals, _, sphere_mask, _ = _sphere_view(sphere_res)
        sphere_normals = normals[0][:, :, [0, 2, 1]] * torch.tensor([1.0, 1.0, -1.0])  # rotate the -Y view to +z
        sphere = sphere_normals[None] + torch.tensor([0.0, 0.0, -3.0])
        rays = torch.zeros_like(sphere)
        rays[..., 2] = -1.0
        got = normals_from_points(sphere, rays, sphere_mask)
        cos = (got[0] * sphere_normals).sum(-1)[sphere_mask[0, ..., 0] > 0]
        assert float(torch.rad2deg(torch.acos(cos.clamp(-1, 1))).mean()) < bound
    # A step: the right half is 1 unit further away. Both halves are flat, facing the camera.
    step = torch.stack([u, -v, torch.where(u > 0, -3.0, -2.0)], -1)[None]
    got = normals_from_points(step, directions, mask)
    assert torch.allclose(got, torch.tensor([0.0, 0.0, 1.0]).expand_as(got), atol=1e-5)


def test_fused_normals_average_the_views_that_see_a_point() -> None:
    """Two views of the same plane with independent normal noise: the fused normals are the mean of both views'
    noisy normals at each point (up to the grid's one-cell blur), much closer to the plane's normal than either."""
    res = 40
    v, u = torch.meshgrid(torch.linspace(-0.8, 0.8, res), torch.linspace(-0.8, 0.8, res), indexing="ij")
    plane = torch.stack([u, -v, 0.25 * u], -1)  # z = 0.25 x, seen by two views with the same pixels
    true = torch.nn.functional.normalize(torch.tensor([-0.25, 0.0, 1.0]), dim=0)
    gen = torch.Generator().manual_seed(0)
    noisy = torch.nn.functional.normalize(true + 0.3 * torch.randn(2, res, res, 3, generator=gen), dim=-1)
    points = plane[None].expand(2, -1, -1, -1).contiguous()
    masks = torch.ones(2, res, res, 1)
    masks[1, :, :5] = 0.0  # a strip the second view does not see
    aabb = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
    fused = fuse_view_normals(noisy, points, masks, aabb, resolution=64)

    def angle(n):
        return torch.rad2deg(torch.acos((n * true).sum(-1).clamp(-1, 1)))

    assert float(angle(fused[0]).mean()) < 0.6 * float(angle(noisy[0]).mean())
    # Pixels outside a view's mask keep that view's input normal.
    assert torch.equal(fused[1, :, :5], noisy[1, :, :5])
    # One view alone with cells much finer than its pixels: each point reads back its own normal.
    single = fuse_view_normals(noisy[:1], points[:1], masks[:1], aabb, resolution=256)
    assert torch.allclose(single, noisy[:1], atol=1e-4)
