"""The ray-marching ops against brute-force definitions (loops over rays and samples, bit by bit Morton codes).

Every test runs twice (the ``backend`` fixture): with the pure-torch reference and with the compiled kernels.
"""

from __future__ import annotations

import math

import pytest
import torch

from relight3d import ops
from relight3d.ops import PackedOccupancy, StepSchedule, _torch_impl

pytestmark = pytest.mark.usefixtures("backend")

AABB = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])


def random_rays(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    o = torch.randn(n, 3, generator=g)
    o = o / o.norm(dim=-1, keepdim=True) * 3.0
    target = torch.rand(n, 3, generator=g) * 1.6 - 0.8
    d = torch.nn.functional.normalize(target - o, dim=-1)
    return o, d


def test_ray_aabb_values():
    o = torch.tensor([[0.0, 0.0, -3.0], [0.0, 5.0, -3.0], [0.2, 0.1, 0.0]])
    d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    tn, tf = ops.ray_aabb_intersect(o, d, AABB, near_min=0.0)
    assert torch.allclose(tn, torch.tensor([2.0, ops.MISS_T, 0.0]))
    assert torch.allclose(tf, torch.tensor([4.0, ops.MISS_T, 0.8]))


def test_morton_round_trip_and_order():
    coords = torch.randint(0, 1024, (1000, 3))
    assert torch.equal(ops.morton3d_invert(ops.morton3d(coords)), coords)
    # Morton codes of a 2^3 block enumerate it x-fastest.
    block = torch.tensor([[x, y, z] for z in range(2) for y in range(2) for x in range(2)])
    assert torch.equal(ops.morton3d(block), torch.arange(8))
    # Brute-force bit interleaving.
    c = coords[:20]
    expect = []
    for x, y, z in c.tolist():
        code = 0
        for b in range(10):
            code |= ((x >> b) & 1) << (3 * b) | ((y >> b) & 1) << (3 * b + 1) | ((z >> b) & 1) << (3 * b + 2)
        expect.append(code)
    assert ops.morton3d(c).tolist() == expect


def test_bitfield_round_trip():
    grid = torch.rand(2, 4**3)
    bits = ops.pack_bitfield(grid, 0.5)
    assert bits.dtype == torch.uint8 and bits.shape == (2 * 64 // 8,)
    assert torch.equal(ops.unpack_bitfield(bits), (grid.reshape(-1) > 0.5))


def test_occupancy_update_is_ema_max():
    grid = torch.tensor([[1.0, 0.5, -1.0, 0.2]] * 2).reshape(1, 8)
    idx = torch.tensor([0, 1, 2, 1])
    vals = torch.tensor([0.1, 0.2, 5.0, 0.9])
    out = ops.occupancy_grid_update(grid, idx, vals, decay=0.5)
    # cell 0: max(0.5, 0.1); cell 1: max(0.25, max(0.2, 0.9)); cell 2 is marked invisible (negative): untouched
    assert torch.allclose(out[0, :4], torch.tensor([0.5, 0.9, -1.0, 0.2]))
    assert torch.equal(out[0, 4:], grid[0, 4:])


def test_cell_positions_and_lookup_agree():
    res, n_casc = 8, 2
    idx = torch.arange(n_casc * res**3)
    pos = ops.occupancy_cell_positions(idx, AABB, res, torch.full((idx.shape[0], 3), 0.5))
    density = torch.zeros(n_casc, res**3)
    density.view(-1)[::7] = 1.0
    bits = ops.pack_bitfield(density, 0.5)
    occ = ops.occupancy_lookup(pos, PackedOccupancy(bits, AABB, n_casc, res))
    # A cell centre of cascade 1 that lies inside cascade 0's box is looked up in cascade 0, so compare
    # only cells whose centre is outside the inner box, plus all of cascade 0.
    inner = pos.abs().amax(-1) <= 1.0
    cascade = idx // res**3
    check = (cascade == 0) | ~inner
    assert torch.equal(occ[check], (density.view(-1) > 0.5)[check])


def _recurrence(t_near: float, t_far: float, jitter: float, dt_min, dt_max, gamma, max_steps):
    def dt(t):
        return min(max(t * gamma, dt_min), dt_max)

    t = t_near + jitter * dt(t_near)
    out = []
    while t < t_far and len(out) < max_steps:
        step = dt(t)
        out.append((t, min(t + step, t_far)))
        t = t + step
    return out


@pytest.mark.parametrize("gamma", [0.0, 1.0 / 64])
def test_march_matches_recurrence_with_full_grid(gamma):
    o, d = random_rays(32)
    tn, tf = ops.ray_aabb_intersect(o, d, AABB)
    jitter = torch.rand(32)
    full = PackedOccupancy(torch.full((16**3 // 8,), 255, dtype=torch.uint8), AABB, 1, 16)
    ids, t0, t1 = ops.march_rays_train(o, d, tn, tf, full, StepSchedule(0.02, 0.1, gamma), 1024, jitter)
    for r in range(32):
        expect = _recurrence(float(tn[r]), float(tf[r]), float(jitter[r]), 0.02, 0.1, gamma, 1024)
        got = list(zip(t0[ids == r].tolist(), t1[ids == r].tolist()))
        assert len(got) == len(expect), f"ray {r}"
        assert torch.allclose(torch.tensor(got), torch.tensor(expect), atol=1e-4, rtol=1e-5)


def test_march_keeps_only_occupied_cells():
    o, d = random_rays(64, seed=1)
    tn, tf = ops.ray_aabb_intersect(o, d, AABB)
    res = 16
    grid = ops.OccupancyGrid(AABB, res=res)
    # Occupied: a ball of radius 0.5.
    centers = ops.occupancy_cell_positions(torch.arange(res**3), AABB, res)
    grid.density.copy_((centers.norm(dim=-1) < 0.5).float()[None])
    grid.bitfield.copy_(ops.pack_bitfield(grid.density, 0.5))
    steps = StepSchedule(0.01, 0.01)
    ids, t0, t1 = ops.march_rays_train(o, d, tn, tf, grid.packed, steps)
    mids = o[ids] + d[ids] * ((t0 + t1) / 2)[:, None]
    assert grid.is_occupied(mids).all()
    # Every occupied sample of the full march survives.
    full = grid.packed._replace(bitfield=torch.full_like(grid.bitfield, 255))
    ids_f, t0_f, t1_f = ops.march_rays_train(o, d, tn, tf, full, steps)
    mids_f = o[ids_f] + d[ids_f] * ((t0_f + t1_f) / 2)[:, None]
    assert int(grid.is_occupied(mids_f).sum()) == ids.shape[0]
    assert ids.shape[0] > 0 and bool((ids[1:] >= ids[:-1]).all())


def test_march_edge_cases():
    o = torch.tensor([[0.0, 5.0, -3.0]])
    d = torch.tensor([[0.0, 0.0, 1.0]])
    tn, tf = ops.ray_aabb_intersect(o, d, AABB)
    full = PackedOccupancy(torch.full((8**3 // 8,), 255, dtype=torch.uint8), AABB, 1, 8)
    steps = StepSchedule(0.01, 0.01)
    ids, _, _ = ops.march_rays_train(o, d, tn, tf, full, steps)
    assert ids.numel() == 0
    empty = full._replace(bitfield=torch.zeros_like(full.bitfield))
    o2, d2 = random_rays(8)
    tn2, tf2 = ops.ray_aabb_intersect(o2, d2, AABB)
    assert ops.march_rays_train(o2, d2, tn2, tf2, full, steps)[0].numel() > 0
    assert ops.march_rays_train(o2, d2, tn2, tf2, empty, steps)[0].numel() == 0
    z = torch.zeros(0, 3)
    assert ops.march_rays_train(z, z, torch.zeros(0), torch.zeros(0), full, steps)[0].numel() == 0


def _dense_composite(sigmas, rgbs, t0, t1, ids, n, thresh):
    image = torch.zeros(n, 3)
    acc = torch.zeros(n)
    weights = torch.zeros_like(sigmas)
    for r in range(n):
        trans = 1.0
        for i in torch.nonzero(ids == r)[:, 0].tolist():
            alpha = 1.0 - math.exp(-float(sigmas[i]) * float(t1[i] - t0[i]))
            if trans < thresh:
                break
            weights[i] = trans * alpha
            image[r] += weights[i] * rgbs[i]
            acc[r] += weights[i]
            trans *= 1.0 - alpha
    return weights, image, acc


def test_composite_matches_loops_and_early_stop():
    n = 6
    counts = torch.tensor([0, 5, 30, 1, 12, 40])
    ids = torch.repeat_interleave(torch.arange(n), counts)
    s = ids.shape[0]
    t0 = torch.rand(s).sort().values
    t1 = t0 + torch.rand(s) * 0.1
    sigmas = torch.rand(s) * 20.0
    sigmas[ids == 5] = 1e4  # fully occluded after the first sample
    rgbs = torch.rand(s, 3)
    w, img, depth, acc = ops.composite_rays_train(sigmas, rgbs, t0, t1, ids, n, 1e-4)
    w_ref, img_ref, acc_ref = _dense_composite(sigmas, rgbs, t0, t1, ids, n, 1e-4)
    assert torch.allclose(w, w_ref, atol=1e-5)
    assert torch.allclose(img, img_ref, atol=1e-5)
    assert torch.allclose(acc, acc_ref, atol=1e-5)
    assert float(acc[0]) == 0.0 and abs(float(acc[5]) - 1.0) < 1e-5
    assert (w[ids == 5][1:] == 0).all()


def test_composite_gradient_matches_finite_differences(backend: str) -> None:
    if backend == "compiled":
        pytest.skip("the kernels take float32; test_kernels compares their gradients with the reference's")
    counts = torch.tensor([3, 4])
    ids = torch.repeat_interleave(torch.arange(2), counts)
    t0 = torch.tensor([0.0, 0.1, 0.2, 0.0, 0.2, 0.3, 0.5], dtype=torch.float64)
    t1 = t0 + 0.1
    sigmas = (torch.rand(7, dtype=torch.float64) * 5).requires_grad_(True)
    rgbs = torch.rand(7, 3, dtype=torch.float64, requires_grad=True)

    def f(s, c):
        _, img, depth, acc = _torch_impl.composite_rays_train(s, c, t0, t1, ids, 2, 0.0)
        return img.sum() + depth.sum() + acc.sum()

    assert torch.autograd.gradcheck(f, (sigmas, rgbs))


def test_input_checks_raise():
    o, d = random_rays(4)
    tn, tf = ops.ray_aabb_intersect(o, d, AABB)
    full = PackedOccupancy(torch.full((8**3 // 8,), 255, dtype=torch.uint8), AABB, 1, 8)
    steps = StepSchedule(0.01, 0.01)
    with pytest.raises(TypeError, match="'rays_o' must be float32"):
        ops.march_rays_train(o.double(), d, tn, tf, full, steps)
    with pytest.raises(TypeError, match=r"'grid\.bitfield' must be uint8"):
        ops.march_rays_train(o, d, tn, tf, full._replace(bitfield=full.bitfield.long()), steps)
    with pytest.raises(ValueError, match=r"'t_near' must have shape \(4\)"):
        ops.march_rays_train(o, d, tn[:2], tf, full, steps)
    with pytest.raises(ValueError, match=r"'grid\.bitfield' must have shape \(64\)"):
        ops.march_rays_train(o, d, tn, tf, full._replace(bitfield=full.bitfield[:3]), steps)


def test_occupancy_grid_update_finds_a_ball():
    grid = ops.OccupancyGrid(AABB, res=16, warmup_updates=2)

    def density(x):
        return (x.norm(dim=-1) < 0.5).float() * 100.0

    for _ in range(3):
        grid.update(density, step_size=0.01)
    centers = ops.occupancy_cell_positions(torch.arange(16**3), AABB, 16)
    inside = centers.norm(dim=-1) < 0.35
    outside = centers.norm(dim=-1) > 0.7
    occ = grid.is_occupied(centers)
    assert occ[inside].all() and not occ[outside].any()
    box = grid.occupied_aabb()
    assert torch.allclose(box, torch.tensor([-0.625, -0.625, -0.625, 0.625, 0.625, 0.625]), atol=0.13)


def test_carving_does_not_raise_the_occupancy_threshold():
    """A faint thin part inside the visual hull stays occupied after carving (regression: the threshold was the mean
    over the uncarved cells only, so a faint part dropped out of the grid once carving had removed empty space)."""
    res = 16
    centers = ops.occupancy_cell_positions(torch.arange(res**3), AABB, res)
    body = centers.norm(dim=-1) < 0.35
    foot = (centers - torch.tensor([0.0, 0.0, -0.7])).norm(dim=-1) < 0.1

    def density(x):
        d = torch.zeros(x.shape[0])
        d[x.norm(dim=-1) < 0.5] = 10.0
        d[(x - torch.tensor([0.0, 0.0, -0.7])).norm(dim=-1) < 0.2] = 0.8  # faint: opacity 0.008 per step
        return d

    occupied = {}
    for carve in (False, True):
        grid = ops.OccupancyGrid(AABB, res=res, warmup_updates=4, threshold=0.01)
        if carve:  # the visual hull: everything but a shell of empty space around body and foot
            grid.density.view(-1)[centers.norm(dim=-1) > 0.95] = -1.0
        for _ in range(3):
            grid.update(lambda x: density(x), step_size=0.01)
        occupied[carve] = grid.is_occupied(centers)
        assert occupied[carve][body].all()
    assert occupied[False][foot].all()
    assert occupied[True][foot].all()
