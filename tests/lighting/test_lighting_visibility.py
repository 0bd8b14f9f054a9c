"""Light visibility through a density volume, against direct ray marching and closed forms."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from relight3d.lighting import (
    envmap_directions,
    sample_density_volume,
    shadow_factor,
    transmittance_towards,
    visibility_directions,
)

AABB = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])


def _blob(points: torch.Tensor) -> torch.Tensor:
    """A smooth density: a Gaussian of peak 20 at (0.2, 0, 0.1) with sigma 0.3."""
    return 20.0 * torch.exp(-(points - torch.tensor([0.2, 0.0, 0.1])).square().sum(-1) / (2 * 0.3**2))


def _marched(volume: torch.Tensor, point: torch.Tensor, direction: torch.Tensor, offset: float) -> float:
    """Reference: the volume's trilinear density integrated along one ray with 4,000 small steps, to the box edge."""
    ts = offset + (torch.arange(4000) + 0.5) * (4.0 / 4000)
    xs = point + ts[:, None] * direction
    inside = (xs.abs() <= 1.0).all(-1)
    sigma = F.grid_sample(volume[None, None], xs.view(1, 1, 1, -1, 3), align_corners=False).reshape(-1)
    return math.exp(-float((sigma * inside).sum()) * (4.0 / 4000))


def test_density_volume_holds_the_field_at_cell_centres() -> None:
    volume = sample_density_volume(_blob, AABB, 8)
    # cell (z=2, y=5, x=7) has its centre at x = -1 + 7.5/4, y = -1 + 5.5/4, z = -1 + 2.5/4
    centre = torch.tensor([[-1 + 7.5 / 4, -1 + 5.5 / 4, -1 + 2.5 / 4]])
    assert torch.allclose(volume[2, 5, 7], _blob(centre)[0])


def test_transmittance_matches_direct_ray_marching() -> None:
    volume = sample_density_volume(_blob, AABB, 32)
    gen = torch.Generator().manual_seed(0)
    points = torch.rand(40, 3, generator=gen) * 1.6 - 0.8
    dirs = F.normalize(torch.randn(6, 3, generator=gen), dim=-1)
    offset = 0.05
    got = transmittance_towards(volume, AABB, points, dirs, offset=offset)
    want = torch.tensor([[_marched(volume, p, d, offset) for d in dirs] for p in points])
    assert got.shape == (40, 6)
    assert float((got - want).abs().max()) < 0.03
    assert float(want.min()) < 0.2 and float(want.max()) > 0.9  # the test sees both shadowed and lit rays


def test_opaque_ball_shadows_the_point_below_it_only_from_above() -> None:
    def ball(p: torch.Tensor) -> torch.Tensor:
        return torch.where(p.square().sum(-1) < 0.3**2, torch.full_like(p[:, 0], 200.0), torch.zeros_like(p[:, 0]))

    volume = sample_density_volume(ball, AABB, 48)
    point = torch.tensor([[0.0, 0.0, -0.6]])
    dirs = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, 0.6, 0.8]])
    t = transmittance_towards(volume, AABB, point, dirs)[0]
    assert float(t[0]) < 1e-3  # straight up through the ball
    assert float(t[1]) > 0.999 and float(t[2]) > 0.999  # down and sideways: nothing in the way
    # (0, 0.6, 0.8) passes the ball's centre line at distance 0.6 * 0.6 = 0.36 > 0.3: just misses it
    assert float(t[3]) > 0.9


def test_shadow_factor_closed_forms() -> None:
    height = 8
    dirs = visibility_directions(height)
    assert torch.allclose(dirs, envmap_directions(height, 2 * height).reshape(-1, 3))
    env = torch.ones(16, 32, 3)
    up = torch.tensor([[0.0, 0.0, 1.0]])
    # Unoccluded: all the irradiance arrives; fully occluded: none.
    assert torch.allclose(shadow_factor(torch.ones(1, dirs.shape[0]), up, env, height), torch.ones(1, 3))
    assert torch.allclose(shadow_factor(torch.zeros(1, dirs.shape[0]), up, env, height), torch.zeros(1, 3))
    # Blocking the lower hemisphere changes nothing for an upward normal; blocking the half-space y > 0 removes
    # half of a uniform sky's irradiance (by symmetry).
    below = (dirs[:, 2] > 0).float()[None]
    assert torch.allclose(shadow_factor(below, up, env, height), torch.ones(1, 3), atol=1e-6)
    half = (dirs[:, 1] < 0).float()[None]
    assert torch.allclose(shadow_factor(half, up, env, height), torch.full((1, 3), 0.5), atol=1e-5)
    # A single bright direction: the factor is that direction's transmittance.
    sun = torch.zeros(16, 32, 3)
    sun[2, 20] = 1000.0
    sun_dir = envmap_directions(16, 32)[2, 20]
    k = int((dirs @ sun_dir).argmax())
    t = torch.ones(1, dirs.shape[0])
    t[0, k] = 0.25
    got = shadow_factor(t, F.normalize(sun_dir, dim=0)[None], sun, height)
    assert torch.allclose(got, torch.full((1, 3), 0.25), atol=1e-4)
