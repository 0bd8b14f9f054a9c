"""Compiled ray-marching kernels (relight3d._C) against the pure-torch reference (relight3d.ops._torch_impl).

Every op is compared on several shapes and edge cases (no rays, rays that miss the box, fully occluded rays, empty
and full grids, cone stepping on and off, several cascades): forward values, and for the differentiable ops the
vector-Jacobian products under random cotangents. The same comparisons run on CUDA tensors where a GPU is present.

Tolerances. Outputs made of exact float operations (Morton codes, bitfields, lookups, uniform-step marching) agree
bit for bit on the CPU. exp/log differ in their last bit between libm, torch's vectorised kernels and CUDA, so the
rest is compared with explicit tolerances; in particular a sample whose midpoint lies within rounding of a cell
face may be kept by one implementation and not the other, and ``assert_same_samples`` allows exactly that.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import pytest
import torch
from ops_testing import (
    EXT,
    TOL,
    Runner,
    assert_close,
    compiled,
    needs_extension,
    outputs_and_vjp,
    reference,
    requires_cuda,
    to,
)
from torch import Tensor

import relight3d.ops as ops
from relight3d.ops import PackedOccupancy, StepSchedule, _backend, _dispatch, _torch_impl, _wrapper

pytestmark = needs_extension

# a kept/dropped sample may differ only within this distance (in cell units) of a cell face
BORDER_EPS = {"cpu": 1e-3, "cuda": 1e-2}

AABB = torch.tensor([-1.0, -0.8, -1.2, 1.2, 1.0, 0.8])  # deliberately not a centred cube


# ---------------------------------------------------------------------------------------------------------------------
# scenes
# ---------------------------------------------------------------------------------------------------------------------


def make_rays(n: int, seed: int = 0) -> Tuple[Tensor, Tensor]:
    """Rays from outside towards the box, plus some that miss it, start inside it, or have axis-aligned directions."""
    g = torch.Generator().manual_seed(seed)
    o = torch.randn(n, 3, generator=g)
    o = o / o.norm(dim=-1, keepdim=True) * 3.0
    target = (torch.rand(n, 3, generator=g) * 2 - 1) * 0.9
    d = target - o
    if n >= 10:
        d[: n // 10] = o[: n // 10]  # pointing away: miss
        o[n // 10 : n // 5] = target[n // 10 : n // 5] * 0.5  # start inside the box
        d[n // 5 : n // 5 + 3] = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
        o[n // 5 : n // 5 + 3] = torch.tensor([[0.1, 0.2, -3.0], [-3.0, 0.3, 0.1], [0.2, 3.0, -0.4]])
    d = d / d.norm(dim=-1, keepdim=True)
    return o, d


def outer_box(n_cascades: int) -> Tensor:
    """The box of the largest cascade (AABB scaled by 2**(n_cascades - 1) about its centre)."""
    center, half = (AABB[:3] + AABB[3:]) / 2, (AABB[3:] - AABB[:3]) / 2 * 2 ** (n_cascades - 1)
    return torch.cat([center - half, center + half])


def make_bitfield(kind: str, n_cascades: int, res: int, seed: int = 0) -> Tensor:
    n_cells = n_cascades * res**3
    if kind == "empty":
        return torch.zeros(n_cells // 8, dtype=torch.uint8)
    if kind == "full":
        return torch.full((n_cells // 8,), 255, dtype=torch.uint8)
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        return reference("pack_bitfield", torch.rand(n_cascades, res**3, generator=g), 0.6)
    # "ball": an object in the middle of the box, as during training
    centers = reference("occupancy_cell_positions", torch.arange(n_cells), AABB, res)
    density = (centers - AABB.view(2, 3).mean(0)).norm(dim=-1) < 0.6
    return reference("pack_bitfield", density.float().view(n_cascades, -1), 0.5)


def make_packed(counts: Tensor, seed: int = 0, big_sigma_rays: int = 0) -> Dict[str, Tensor]:
    """Packed samples sorted by ray; the first `big_sigma_rays` non-empty rays get opaque samples."""
    g = torch.Generator().manual_seed(seed)
    n = counts.shape[0]
    ray_indices = torch.repeat_interleave(torch.arange(n), counts)
    s = ray_indices.numel()
    dt = torch.rand(s, generator=g) * 0.05 + 1e-3
    start = torch.cumsum(counts, 0) - counts  # index of each ray's first sample
    excl = torch.cumsum(dt, 0) - dt
    t_starts = 0.5 + excl - excl[start[ray_indices]]
    sigmas = torch.rand(s, generator=g) * 30
    nonempty = torch.nonzero(counts)[:, 0][:big_sigma_rays]
    for i, r in enumerate(nonempty.tolist()):
        sigmas[start[r]] = [1e10, 1e30, float("inf")][i % 3]
    return dict(
        sigmas=sigmas,
        t_starts=t_starts,
        t_ends=t_starts + dt,
        ray_indices=ray_indices,
        rgbs=torch.rand(s, 3, generator=g),
    )


def cell_border_distance(pos: Tensor, n_cascades: int, res: int) -> Tensor:
    """Distance (in cell units) from each position to the nearest cell face or cascade boundary, in float64."""
    pos, aabb = pos.double(), AABB.double()
    center, half = (aabb[:3] + aabb[3:]) / 2, (aabb[3:] - aabb[:3]) / 2
    rel = (pos - center) / half
    extent = rel.abs().amax(-1)
    cascade = torch.ceil(torch.log2(extent.clamp_min(1e-12))).clamp(0, n_cascades - 1)
    scale = torch.pow(2.0, cascade)
    v = (rel / scale[:, None] + 1) * (res / 2)
    face = (v - v.round()).abs().amin(-1)
    boundary = (extent / scale - 1).abs() * res  # near the edge of a cascade
    return torch.minimum(face, boundary)


def assert_same_samples(
    expected: Tuple[Tensor, Tensor, Tensor],
    actual: Tuple[Tensor, Tensor, Tensor],
    rays_o: Tensor,
    rays_d: Tensor,
    t_far: Tensor,
    n_cascades: int,
    res: int,
    device: str,
) -> Tensor:
    """Same samples up to rounding: matched by (ray, t_start); unmatched ones must sit on a cell face or at t_far.

    Returns a bool mask over the rays of those whose samples differ (their renders may differ by a whole sample).
    """
    actual = tuple(x.cpu() for x in actual)
    assert actual[0].dtype == torch.int64 and actual[1].dtype == torch.float32
    rtol, atol = TOL[device]
    rtol, atol = rtol * 10, atol * 10  # t grows through many rounded steps

    def keys(ids: Tensor, t0: Tensor) -> Tensor:
        return ids.double() * 1e4 + t0.double()

    def unmatched(a: Tuple[Tensor, ...], b: Tuple[Tensor, ...]) -> Tuple[Tensor, Tensor]:
        ka, kb = keys(a[0], a[1]), keys(b[0], b[1])
        if kb.numel() == 0:
            return torch.ones_like(ka, dtype=torch.bool), torch.zeros_like(ka, dtype=torch.long)
        kb_sorted, order = torch.sort(kb)
        pos = torch.searchsorted(kb_sorted, ka)
        lo, hi = (pos - 1).clamp(0, kb.numel() - 1), pos.clamp(0, kb.numel() - 1)
        d_lo, d_hi = (kb_sorted[lo] - ka).abs(), (kb_sorted[hi] - ka).abs()
        nearest = order[torch.where(d_lo < d_hi, lo, hi)]
        tol = atol + rtol * a[1].double().abs()
        return torch.minimum(d_lo, d_hi) > tol, nearest

    miss_a, nearest = unmatched(actual, expected)
    miss_e, _ = unmatched(expected, actual)
    # matched samples: same ray, same interval
    ok = ~miss_a
    assert torch.equal(actual[0][ok], expected[0][nearest[ok]])
    torch.testing.assert_close(actual[1][ok], expected[1][nearest[ok]], rtol=rtol, atol=atol)
    torch.testing.assert_close(actual[2][ok], expected[2][nearest[ok]], rtol=rtol, atol=atol)
    # the others: few, and each within rounding of a decision boundary
    total = max(expected[0].numel(), 1)
    n_bad = int(miss_a.sum()) + int(miss_e.sum())
    assert n_bad <= max(2, total // 1000), f"{n_bad} of {total} samples differ"
    bad_rays = torch.zeros(rays_o.shape[0], dtype=torch.bool)
    for (ids, t0, t1), miss in ((actual, miss_a), (expected, miss_e)):
        if not bool(miss.any()):
            continue
        bad_rays[ids[miss]] = True
        ids, t0, t1 = ids[miss], t0[miss], t1[miss]
        mid = (t0 + t1) * 0.5
        pos = rays_o[ids] + rays_d[ids] * mid[:, None]
        near_face = cell_border_distance(pos, n_cascades, res) < BORDER_EPS[device]
        near_end = (t_far[ids] - t0).abs() < 1e-4 * t_far[ids].abs().clamp_min(1)
        borderline = near_face | near_end
        assert bool(borderline.all()), f"samples differ away from any cell face: {t0[~borderline]}"
    return bad_rays


def threshold_borderline(trans: Tensor, ray_indices: Tensor, n_rays: int, t_thresh: float, device: str) -> Tensor:
    """Rays with a sample whose transmittance is within rounding of t_thresh (its weight may be kept or zeroed)."""
    rel = 1e-5 if device == "cpu" else 1e-4
    near = (trans.double() / t_thresh - 1).abs() < rel
    rays = torch.zeros(n_rays, dtype=torch.bool)
    rays[ray_indices[near]] = True
    assert int(rays.sum()) <= max(1, n_rays // 100)
    return rays


def march_inference_to_the_end(run: Runner, device: str, rays_o: Tensor, rays_d: Tensor, t_near: Tensor,
                               t_far: Tensor, grid: PackedOccupancy, steps: StepSchedule, n_steps: int,
                               max_candidates: int
                               ) -> Tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """All samples that march_rays_inference gives, call after call until every ray is done, packed like training."""
    dev = lambda x: x.to(device)  # noqa: E731
    t = dev(t_near.clone())
    alive = dev(torch.nonzero(t_far > t_near)[:, 0])
    samples = []
    for _ in range(10_000):
        if alive.numel() == 0:
            break
        t_prev = t.clone()
        t0, t1 = run("march_rays_inference", dev(rays_o), dev(rays_d), t, dev(t_far), alive, grid.to(device), steps,
                     n_steps=n_steps, max_candidates=max_candidates)  # fmt: skip
        t0, t1, a = t0.cpu(), t1.cpu(), alive.cpu()
        assert t0.shape == (a.numel(), n_steps)
        used = t1 > t0
        assert bool((t0[~used] == 0).all() and (t1[~used] == 0).all())  # padding
        # within [t, t_far], in order, filled from the first slot; t advanced past them
        assert bool((~used[:, 1:] | used[:, :-1]).all())
        tc = t.cpu()
        assert bool((tc[a] >= t_prev.cpu()[a]).all())
        assert bool(((t0 >= t_prev.cpu()[a, None]) | ~used).all() and ((t1 <= t_far[a, None]) | ~used).all())
        assert bool(((t0 < tc[a, None]) | ~used).all())
        samples.append((a[:, None].expand_as(t0)[used], t0[used], t1[used]))
        alive = alive[(t < dev(t_far))[alive]]
    assert alive.numel() == 0
    ids = torch.cat([x[0] for x in samples]) if samples else torch.zeros(0, dtype=torch.long)
    t0 = torch.cat([x[1] for x in samples]) if samples else torch.zeros(0)
    t1 = torch.cat([x[2] for x in samples]) if samples else torch.zeros(0)
    order = torch.argsort(ids.double() * 1e4 + t0.double())
    return ids[order], t0[order], t1[order]


# ---------------------------------------------------------------------------------------------------------------------
# backend selection
# ---------------------------------------------------------------------------------------------------------------------


def test_compiled_kernels_are_the_default_on_the_cpu() -> None:
    assert _backend.active_backend("cpu") == "cpu" and isinstance(EXT.WITH_CUDA, bool)
    cpu, _, n = _packed("mixed", "cpu")
    args = (cpu["sigmas"], cpu["t_starts"], cpu["t_ends"], cpu["ray_indices"], n, 1e-4)
    kernels = _dispatch.implementation("render_weights", args)
    assert kernels.func is _wrapper.run and kernels.args == ("render_weights",)
    with _backend.torch_reference("render_weights"):
        assert _dispatch.implementation("render_weights", args) is _torch_impl.render_weights
        assert _backend.active_backend("cpu", "composite_rays_train") == "cpu"
    with _backend.torch_reference():
        assert _backend.active_backend("cpu", "composite_rays_train") == "torch"


def test_backend_override_and_other_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _backend.active_backend("meta") == "torch"
    monkeypatch.setenv("RELIGHT3D_OPS_BACKEND", "torch")
    assert _backend.active_backend("cpu") == "torch"
    assert _backend.active_backend("cuda") == "torch"


def test_every_op_has_kernels_and_a_reference() -> None:
    for name in ops.__all__:
        if name in ("MISS_T", "hash_grid_layout") or isinstance(getattr(ops, name), type):  # not an op
            continue
        assert hasattr(EXT, f"{name}_fwd") and callable(_dispatch.reference(name)), name
    for name in ("render_weights", "accumulate_along_rays", "composite_rays_train", "sample_vm_features",
                 "hash_encoding"):  # fmt: skip
        assert hasattr(EXT, f"{name}_bwd"), name


def test_gradients_the_kernels_lack_come_from_the_reference() -> None:
    """The kernels do not differentiate w.r.t. t_starts / t_ends or rays: when those need a gradient, torch gives it."""
    cpu, _, n = _packed("mixed", "cpu")
    t0 = cpu["t_starts"].clone().requires_grad_()
    args = (cpu["sigmas"], cpu["rgbs"], t0, cpu["t_ends"], cpu["ray_indices"], n, 1e-4)
    assert _dispatch.implementation("composite_rays_train", args) is _torch_impl.composite_rays_train
    (grad,) = torch.autograd.grad(ops.composite_rays_train(*args)[0].sum(), t0)
    (expected,) = torch.autograd.grad(reference("composite_rays_train", *args)[0].sum(), t0)
    assert_close(grad, expected, "cpu", grad=True)
    o, d = make_rays(8)
    o.requires_grad_()
    assert _dispatch.implementation("ray_aabb_intersect", (o, d, AABB, 0.0)) is _torch_impl.ray_aabb_intersect
    with torch.no_grad():  # nothing to differentiate: the kernels again
        assert _dispatch.implementation("ray_aabb_intersect", (o, d, AABB, 0.0)) is not _torch_impl.ray_aabb_intersect


# ---------------------------------------------------------------------------------------------------------------------
# ray / box, Morton codes, occupancy grids
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 257])
@pytest.mark.parametrize("near_min", [0.0, 2.5])
def test_ray_aabb_intersect(device: str, n: int, near_min: float) -> None:
    o, d = make_rays(n, seed=n)
    t_near, t_far = reference("ray_aabb_intersect", o, d, AABB, near_min)
    out = compiled("ray_aabb_intersect", to(o, device), to(d, device), to(AABB, device), near_min)
    assert_close(out[0], t_near, device)
    assert_close(out[1], t_far, device)
    if n > 10:
        assert bool((t_near == ops.MISS_T).any()) and bool((t_near < ops.MISS_T).any())


@pytest.mark.parametrize("n", [0, 7, 5000])
def test_morton3d(device: str, n: int) -> None:
    coords = torch.randint(0, 1024, (n, 3), generator=torch.Generator().manual_seed(n))
    codes = compiled("morton3d", coords.to(device))
    assert torch.equal(codes.cpu(), reference("morton3d", coords))
    assert torch.equal(compiled("morton3d_invert", codes).cpu(), coords)
    assert torch.equal(compiled("morton3d", coords.int().to(device)).cpu(), codes.cpu())  # int32 input


@pytest.mark.parametrize("res", [2, 16, 64])
@pytest.mark.parametrize("with_jitter", [False, True])
def test_occupancy_cell_positions(device: str, res: int, with_jitter: bool) -> None:
    g = torch.Generator().manual_seed(res)
    indices = torch.randint(0, 3 * res**3, (3000,), generator=g)  # three cascades
    jitter = torch.rand(3000, 3, generator=g) if with_jitter else None
    expected = reference("occupancy_cell_positions", indices, AABB, res, jitter)
    actual = compiled("occupancy_cell_positions", indices.to(device), AABB.to(device), res, to(jitter, device))
    assert_close(actual, expected, device)


@pytest.mark.parametrize("n_cascades,res,n_updates", [(1, 16, 0), (1, 16, 3000), (2, 32, 100000)])
def test_occupancy_grid_update(device: str, n_cascades: int, res: int, n_updates: int) -> None:
    g = torch.Generator().manual_seed(n_updates)
    grid = torch.rand(n_cascades, res**3, generator=g) * 2
    grid[:, ::5] = -1.0  # cells marked never-visible stay untouched
    indices = torch.randint(0, grid.numel(), (n_updates,), generator=g)  # with many duplicates
    values = torch.rand(n_updates, generator=g) * 3 - 0.5
    expected = reference("occupancy_grid_update", grid, indices, values, 0.9)
    actual = compiled("occupancy_grid_update", grid.to(device), indices.to(device), values.to(device), 0.9)
    assert torch.equal(actual.cpu(), expected)
    assert torch.equal(grid[:, ::5], torch.full_like(grid[:, ::5], -1.0))  # input unchanged
    if n_updates:
        assert not torch.equal(expected, grid)


@pytest.mark.parametrize("n_cells", [8, 4096, 3 * 32**3])
@pytest.mark.parametrize("threshold", [0.1, 0.5])
def test_pack_unpack_bitfield(device: str, n_cells: int, threshold: float) -> None:
    grid = torch.rand(1, n_cells, generator=torch.Generator().manual_seed(n_cells))
    grid[0, 0] = threshold  # exactly at the threshold: not occupied (float32 comparison)
    expected = reference("pack_bitfield", grid, threshold)
    actual = compiled("pack_bitfield", grid.to(device), threshold)
    assert actual.dtype == torch.uint8 and torch.equal(actual.cpu(), expected)
    cells = compiled("unpack_bitfield", actual)
    assert torch.equal(cells.cpu(), reference("unpack_bitfield", expected))
    assert torch.equal(cells.cpu(), grid.reshape(-1) > threshold)


@pytest.mark.parametrize("kind", ["random", "empty", "full"])
@pytest.mark.parametrize("n_cascades,res", [(1, 8), (3, 32)])
def test_occupancy_lookup(device: str, kind: str, n_cascades: int, res: int) -> None:
    g = torch.Generator().manual_seed(res)
    grid = PackedOccupancy(make_bitfield(kind, n_cascades, res), AABB, n_cascades, res)
    positions = (torch.rand(20000, 3, generator=g) * 2 - 1) * (2.0 ** (n_cascades - 1)) * 1.3  # some outside
    positions[:8] = torch.tensor(
        [
            [0.0, 0, 0],
            [1.2, 1.0, 0.8],
            [-1.0, -0.8, -1.2],
            [2.3, 0, 0],
            [0.1, 0.1, 0.1],
            [1e6, 0, 0],
            [0.0, 0.0, 0.8],
            [-1.0, 0.0, 0.0],
        ]
    )
    expected = reference("occupancy_lookup", positions, grid)
    actual = compiled("occupancy_lookup", positions.to(device), grid.to(device))
    differ = actual.cpu() != expected
    assert int(differ.sum()) <= (0 if device == "cpu" else 5)
    if bool(differ.any()):
        assert bool((cell_border_distance(positions[differ], n_cascades, res) < BORDER_EPS[device]).all())
    if kind == "random":
        assert 0 < int(expected.sum()) < expected.numel()


# ---------------------------------------------------------------------------------------------------------------------
# marching
# ---------------------------------------------------------------------------------------------------------------------

MARCH_CASES = [
    # n_rays, grid kind, n_cascades, res, dt_min, dt_max, dt_gamma, max_steps, jitter
    (0, "random", 1, 16, 0.01, 0.01, 0.0, 1024, False),
    (1, "full", 1, 16, 0.01, 0.01, 0.0, 1024, False),
    (200, "random", 1, 32, 0.01, 0.01, 0.0, 1024, True),
    (200, "ball", 1, 32, 0.005, 0.005, 0.0, 1024, False),
    (200, "empty", 1, 32, 0.01, 0.01, 0.0, 1024, True),
    (200, "full", 2, 16, 0.01, 0.01, 0.0, 64, True),  # max_steps caps most rays
    (200, "random", 3, 16, 0.004, 0.1, 1 / 64, 1024, True),  # cone stepping through all three phases
    (200, "ball", 2, 32, 0.002, 0.05, 1 / 16, 1024, False),
    (200, "full", 1, 32, 0.01, 0.04, 0.5, 1024, True),  # gamma large: phase A ends before the box
]


@pytest.mark.parametrize("case", MARCH_CASES, ids=lambda c: "-".join(map(str, c)))
def test_march_rays_train(device: str, case: tuple) -> None:
    n, kind, nc, res, dt_min, dt_max, dt_gamma, max_steps, with_jitter = case
    o, d = make_rays(n, seed=n + nc)
    t_near, t_far = reference("ray_aabb_intersect", o, d, outer_box(nc))  # march through every cascade
    grid = PackedOccupancy(make_bitfield(kind, nc, res), AABB, nc, res)
    steps = StepSchedule(dt_min, dt_max, dt_gamma)
    jitter = torch.rand(n, generator=torch.Generator().manual_seed(1)) if with_jitter else None
    expected = reference("march_rays_train", o, d, t_near, t_far, grid, steps, max_steps, jitter)
    actual = compiled("march_rays_train", *(x.to(device) for x in (o, d, t_near, t_far)), grid.to(device), steps,
                      max_steps, to(jitter, device))  # fmt: skip
    assert_same_samples(expected, actual, o, d, t_far, nc, res, device)
    if kind == "empty":
        assert actual[0].numel() == 0
    if kind == "full" and n > 0:
        assert actual[0].numel() > 0 and int(torch.bincount(actual[0].cpu()).max()) <= max_steps


def test_march_rays_train_exact_on_cpu_with_uniform_steps() -> None:
    """Without cone stepping the schedule is plain float arithmetic: the CPU kernel reproduces it bit for bit."""
    o, d = make_rays(300, seed=3)
    t_near, t_far = reference("ray_aabb_intersect", o, d, AABB)
    args = (o, d, t_near, t_far, PackedOccupancy(make_bitfield("random", 2, 32), AABB, 2, 32),
            StepSchedule(0.007, 0.007), 1024, torch.rand(300, generator=torch.Generator().manual_seed(0)))  # fmt: skip
    actual, expected = compiled("march_rays_train", *args), reference("march_rays_train", *args)
    assert expected[0].numel() > 1000
    for x, y in zip(actual, expected, strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("dt_gamma,n_cascades", [(0.0, 1), (1 / 32, 2)])
@pytest.mark.parametrize("n_steps,max_candidates", [(1, 1024), (6, 1024), (4, 5)])
def test_march_rays_inference(device: str, dt_gamma: float, n_cascades: int, n_steps: int,
                              max_candidates: int) -> None:  # fmt: skip
    """Marching call after call (resuming at t) visits the training samples, like the reference does."""
    n, res = 150, 32
    o, d = make_rays(n, seed=5)
    t_near, t_far = reference("ray_aabb_intersect", o, d, outer_box(n_cascades))
    grid = PackedOccupancy(make_bitfield("random", n_cascades, res), AABB, n_cascades, res)
    steps = StepSchedule(0.01, 0.05 if dt_gamma else 0.01, dt_gamma)
    train = reference("march_rays_train", o, d, t_near, t_far, grid, steps, max_steps=10**6)
    march = (o, d, t_near, t_far, grid, steps, n_steps, max_candidates)
    expected = march_inference_to_the_end(reference, "cpu", *march)
    actual = march_inference_to_the_end(compiled, device, *march)
    assert actual[0].numel() > 1000
    assert_same_samples(expected, actual, o, d, t_far, n_cascades, res, device)
    assert_same_samples(train, actual, o, d, t_far, n_cascades, res, device)


def test_march_rays_inference_one_call(device: str) -> None:
    """One call, slot by slot: a subset of rays in any order, dead rays untouched, t where the rays resume."""
    n, res = 100, 16
    o, d = make_rays(n, seed=6)
    t_near, t_far = reference("ray_aabb_intersect", o, d, AABB)
    grid, steps = PackedOccupancy(make_bitfield("random", 1, res), AABB, 1, res), StepSchedule(0.02, 0.02)
    alive = torch.arange(n).flip(0)[::2]  # includes rays that miss the box (t_near == t_far: nothing to do)
    t_ref, t_out = t_near.clone(), t_near.clone().to(device)
    expected = reference("march_rays_inference", o, d, t_ref, t_far, alive, grid, steps, 5, 1024)
    actual = compiled("march_rays_inference", o.to(device), d.to(device), t_out, t_far.to(device), alive.to(device),
                      grid.to(device), steps, 5, 1024)  # fmt: skip
    rows_same = ((actual[0].cpu() - expected[0]).abs() < 1e-4).all(1)  # a row can differ by a cell-face flip
    assert int((~rows_same).sum()) <= (0 if device == "cpu" else 2)
    for x, y in zip(actual, expected, strict=True):
        assert_close(x.cpu()[rows_same], y[rows_same], device)
    assert_close(t_out.cpu()[alive[rows_same]], t_ref[alive[rows_same]], device)
    assert bool((t_ref[alive] > t_near[alive]).any())
    untouched = torch.ones(n, dtype=torch.bool)
    untouched[alive] = False
    assert torch.equal(t_out.cpu()[untouched], t_near[untouched])


@pytest.mark.parametrize("impl", ["torch", "compiled"])
@pytest.mark.parametrize("dt_gamma,n_cascades", [(0.0, 1), (1 / 32, 3)])
def test_inference_loop_renders_like_training(device: str, impl: str, dt_gamma: float, n_cascades: int) -> None:
    """Marching + compositing ray by ray until every ray dies gives the image of the training path."""
    if impl == "torch" and device == "cuda":
        pytest.skip("the reference runs on the CPU only in this test")
    run = reference if impl == "torch" else compiled
    n, res, dt_max = 120, 32, (0.06 if dt_gamma else 0.01)
    o, d = make_rays(n, seed=7)
    t_near, t_far = reference("ray_aabb_intersect", o, d, outer_box(n_cascades))
    grid = PackedOccupancy(make_bitfield("ball", n_cascades, res), AABB, n_cascades, res)
    steps = StepSchedule(0.01, dt_max, dt_gamma)
    ids, t0, t1 = reference("march_rays_train", o, d, t_near, t_far, grid, steps, max_steps=10**6)
    visited = []

    def field(t_starts: Tensor, t_ends: Tensor, rays: Tensor) -> Tuple[Tensor, Tensor]:
        mid = (t_starts + t_ends) * 0.5
        oo, dd = (o[rays], d[rays]) if mid.dim() == 1 else (o[rays][:, None], d[rays][:, None])
        pos = oo + dd * mid[..., None]
        return 4.0 * (1.2 - pos.norm(dim=-1)).clamp_min(0), torch.sigmoid(pos)

    sig, rgb = field(t0, t1, ids)
    _, image, depth, acc = reference("composite_rays_train", sig, rgb, t0, t1, ids, n, t_thresh=1e-3)
    _, trans = reference("render_weights", sig, t0, t1, ids, n, t_thresh=1e-3)

    dev = lambda x: x.to(device)  # noqa: E731
    t = dev(t_near.clone())
    state = [dev(torch.zeros(n, 3)), dev(torch.zeros(n)), dev(torch.zeros(n)), dev(torch.ones(n))]
    alive = dev(torch.nonzero(t_far > t_near)[:, 0])
    for _ in range(10_000):
        if alive.numel() == 0:
            break
        ts, te = run("march_rays_inference", dev(o), dev(d), t, dev(t_far), alive, grid.to(device), steps, n_steps=5)
        s, c = field(ts.cpu(), te.cpu(), alive.cpu())
        used = (te > ts).cpu()
        visited.append((alive.cpu()[:, None].expand_as(used)[used], ts.cpu()[used], te.cpu()[used]))
        alive = run("composite_rays_inference", dev(s), dev(c), ts, te, alive, t, dev(t_far), *state, t_thresh=1e-3)
    assert alive.numel() == 0
    # Rays stop early in inference, so only the training samples in front of the stop are compared.
    v_ids, v_t0, v_t1 = (torch.cat(x) for x in zip(*visited, strict=True))
    order = torch.argsort(v_ids.double() * 1e4 + v_t0.double())
    stop = torch.full((n,), -1.0).scatter_reduce_(0, v_ids, v_t0, reduce="amax")  # last t visited per ray
    before = t0 <= stop[ids] + 1e-4
    differ = assert_same_samples((ids[before], t0[before], t1[before]), (v_ids[order], v_t0[order], v_t1[order]), o, d,
                                 t_far, n_cascades, res, device)  # fmt: skip
    ok = ~differ & ~threshold_borderline(trans, ids, n, 1e-3, device)
    tol = dict(rtol=1e-3, atol=2e-4)
    torch.testing.assert_close(state[0].cpu()[ok], image[ok], **tol)
    torch.testing.assert_close(state[1].cpu()[ok], depth[ok], **tol)
    torch.testing.assert_close(state[2].cpu()[ok], acc[ok], **tol)
    assert int(ok.sum()) >= n - 3 and float(acc.max()) > 0.5


@pytest.mark.parametrize("k", [1, 6])
def test_composite_rays_inference(device: str, k: int) -> None:
    g = torch.Generator().manual_seed(k)
    n, a = 50, 30
    alive = torch.randperm(n, generator=g)[:a]
    t_starts = torch.sort(torch.rand(a, k, generator=g) * 2, dim=1).values
    t_ends = t_starts + torch.rand(a, k, generator=g) * 0.2
    if k > 1:
        t_ends[:, -1] = t_starts[:, -1]  # padding slots
    sigmas = torch.rand(a, k, generator=g) * 10
    sigmas[0] = 1e10  # opaque at once
    sigmas[1, -1] = float("inf")  # a padding slot with an infinite density changes nothing
    rgbs = torch.rand(a, k, 3, generator=g)
    t = torch.rand(n, generator=g) * 2
    t_far = torch.full((n,), 1.5)
    state = [torch.rand(n, 3, generator=g), torch.rand(n, generator=g), torch.rand(n, generator=g),
             torch.rand(n, generator=g) * 0.5 + 0.5]  # fmt: skip
    state[3][alive[2]] = 1e-5  # already below the threshold
    initial, ref_state = [x.clone() for x in state], [x.clone() for x in state]
    expected = reference("composite_rays_inference", sigmas, rgbs, t_starts, t_ends, alive, t, t_far, *ref_state, 1e-4)
    out_state = [x.to(device) for x in state]
    actual = compiled("composite_rays_inference", *(x.to(device) for x in (sigmas, rgbs, t_starts, t_ends, alive, t,
                                                                          t_far)), *out_state, 1e-4)  # fmt: skip
    assert torch.equal(actual.cpu(), expected)
    for x, y, before in zip(out_state, ref_state, initial, strict=True):
        assert_close(x, y, device)
        assert not torch.equal(y, before)
    assert alive[0] not in expected and alive[2] not in expected


def test_inference_state_may_be_non_contiguous() -> None:
    n = 40
    o, d = make_rays(n, seed=2)
    t_near, t_far = reference("ray_aabb_intersect", o, d, AABB)
    alive = torch.nonzero(t_far > t_near)[:, 0]
    t_ref = t_near.clone()
    buf = torch.zeros(n, 2)
    buf[:, 0] = t_near
    t_view = buf[:, 0]  # strided
    march = (PackedOccupancy(make_bitfield("full", 1, 16), AABB, 1, 16), StepSchedule(0.01, 0.01), 4)
    reference("march_rays_inference", o, d, t_ref, t_far, alive, *march)
    compiled("march_rays_inference", o, d, t_view, t_far, alive, *march)
    assert torch.equal(buf[:, 0], t_ref) and not torch.equal(t_ref, t_near)


# ---------------------------------------------------------------------------------------------------------------------
# rendering (values and vector-Jacobian products)
# ---------------------------------------------------------------------------------------------------------------------

PACKED_CASES = {
    "no-rays": (torch.zeros(0, dtype=torch.long), 0),
    "empty-rays": (torch.zeros(5, dtype=torch.long), 0),
    "one-sample": (torch.ones(1, dtype=torch.long), 0),
    "mixed": (torch.randint(0, 40, (300,), generator=torch.Generator().manual_seed(0)), 0),
    "occluded": (torch.randint(0, 40, (300,), generator=torch.Generator().manual_seed(1)), 12),
    "long-rays": (torch.randint(200, 600, (20,), generator=torch.Generator().manual_seed(2)), 2),
}


def _packed(name: str, device: str) -> Tuple[Dict[str, Tensor], Dict[str, Tensor], int]:
    counts, big = PACKED_CASES[name]
    cpu = make_packed(counts, seed=len(name), big_sigma_rays=big)
    return cpu, {k: v.to(device) for k, v in cpu.items()}, counts.shape[0]


def _compare_vjp(device: str, op: str, cpu_args: tuple, wrt: Tuple[int, ...], cotangents: Tuple[Tensor, ...],
                 masks: Tuple[Optional[Tensor], ...]) -> Tuple[Tensor, ...]:  # fmt: skip
    """Outputs and VJPs of ``op`` by the kernels on ``device`` against the reference on the CPU, compared where
    ``masks`` (one per output, then one per gradient; None: everywhere) are true. Returns the reference's."""
    dev_args = tuple(x.to(device) if isinstance(x, Tensor) else x for x in cpu_args)
    expected = outputs_and_vjp(reference, op, cpu_args, wrt, cotangents)
    actual = outputs_and_vjp(compiled, op, dev_args, wrt, cotangents)
    n_outputs = len(expected) - len(wrt)
    for i, (x, y, mask) in enumerate(zip(actual, expected, masks, strict=True)):
        keep = slice(None) if mask is None else mask
        assert_close(x.cpu()[keep], y[keep], device, grad=i >= n_outputs)
    return expected


@pytest.mark.parametrize("case", list(PACKED_CASES))
@pytest.mark.parametrize("t_thresh", [1e-4, 0.3])
def test_render_weights(device: str, case: str, t_thresh: float) -> None:
    cpu, _, n = _packed(case, device)
    g = torch.Generator().manual_seed(0)
    s = cpu["sigmas"].numel()
    cotangents = (torch.randn(s, generator=g), torch.randn(s, generator=g))
    args = (cpu["sigmas"], cpu["t_starts"], cpu["t_ends"], cpu["ray_indices"], n, t_thresh)
    _, trans = reference("render_weights", *args)
    ok = ~threshold_borderline(trans, cpu["ray_indices"], n, t_thresh, device)[cpu["ray_indices"]]
    weights, trans, grad = _compare_vjp(device, "render_weights", args, (0,), cotangents, (ok, ok, ok))
    assert bool(torch.isfinite(weights).all()) and bool(torch.isfinite(grad).all())
    if case == "occluded":  # after an opaque sample: transmittance 0, no weight
        first = torch.cumsum(PACKED_CASES[case][0], 0) - PACKED_CASES[case][0]
        nxt = first[PACKED_CASES[case][0] > 1][:6] + 1
        actual_w, actual_t = compiled("render_weights", *(x.to(device) if isinstance(x, Tensor) else x for x in args))
        assert bool((actual_t.cpu()[nxt] == 0).all()) and bool((actual_w.cpu()[nxt] == 0).all())


def test_render_weights_with_only_a_transmittance_cotangent() -> None:
    cpu, _, n = _packed("mixed", "cpu")
    grads = []
    for run in (reference, compiled):
        sig = cpu["sigmas"].clone().requires_grad_()
        _, trans = run("render_weights", sig, cpu["t_starts"], cpu["t_ends"], cpu["ray_indices"], n)
        grads.append(torch.autograd.grad(trans.sum(), sig)[0])  # no cotangent on the weights
    assert_close(grads[1], grads[0], "cpu", grad=True)
    assert float(grads[0].abs().sum()) > 0


@pytest.mark.parametrize("case", ["no-rays", "mixed", "long-rays"])
@pytest.mark.parametrize("channels", [None, 1, 3, 16])
def test_accumulate_along_rays(device: str, case: str, channels: Optional[int]) -> None:
    cpu, _, n = _packed(case, device)
    g = torch.Generator().manual_seed(0)
    s = cpu["sigmas"].numel()
    weights = torch.rand(s, generator=g)
    values = None if channels is None else torch.randn(s, channels, generator=g)
    cotangent = torch.randn(n, channels or 1, generator=g)
    wrt = (0,) if values is None else (0, 1)
    out, *_ = _compare_vjp(device, "accumulate_along_rays", (weights, values, cpu["ray_indices"], n), wrt,
                           (cotangent,), (None,) * (1 + len(wrt)))  # fmt: skip
    assert out.shape == (n, channels or 1)


@pytest.mark.parametrize("case", list(PACKED_CASES))
def test_composite_rays_train(device: str, case: str) -> None:
    cpu, _, n = _packed(case, device)
    g = torch.Generator().manual_seed(0)
    s = cpu["sigmas"].numel()
    cotangents = (torch.randn(s, generator=g), torch.randn(n, 3, generator=g), torch.randn(n, generator=g),
                  torch.randn(n, generator=g))  # fmt: skip
    args = (cpu["sigmas"], cpu["rgbs"], cpu["t_starts"], cpu["t_ends"], cpu["ray_indices"], n, 1e-4)
    _, trans = reference("render_weights", *args[:1], *args[2:])
    ok_rays = ~threshold_borderline(trans, cpu["ray_indices"], n, 1e-4, device)
    ok = ok_rays[cpu["ray_indices"]]
    _compare_vjp(device, "composite_rays_train", args, (0, 1), cotangents, (ok, ok_rays, ok_rays, ok_rays, ok, ok))


def test_composite_gradient_of_unused_outputs() -> None:
    """Outputs without a cotangent (here only the image is used) count as zero."""
    cpu, _, n = _packed("mixed", "cpu")
    res = []
    for run in (reference, compiled):
        sig, rgb = cpu["sigmas"].clone().requires_grad_(), cpu["rgbs"].clone().requires_grad_()
        _, image, _, _ = run("composite_rays_train", sig, rgb, cpu["t_starts"], cpu["t_ends"], cpu["ray_indices"], n)
        res.append(torch.autograd.grad(image.square().sum(), (sig, rgb)))
    for x, y in zip(res[1], res[0], strict=True):
        assert_close(x, y, "cpu", grad=True)


def test_occupancy_grid_with_the_kernels() -> None:
    """An OccupancyGrid updated through the kernels finds a ball."""
    grid = ops.OccupancyGrid(AABB, res=16, n_cascades=2, warmup_updates=1)
    args = (grid.density, torch.arange(4), torch.ones(4), 0.95)
    assert _dispatch.implementation("occupancy_grid_update", args) is not _torch_impl.occupancy_grid_update
    for seed in (0, 1):
        grid.update(lambda p: (p.norm(dim=-1) < 0.5).float() * 10, step_size=0.01,
                    generator=torch.Generator().manual_seed(seed))  # fmt: skip
    assert 0.0 < grid.occupied_fraction() < 0.2
    assert bool(grid.is_occupied(torch.zeros(1, 3))) and not bool(grid.is_occupied(torch.full((1, 3), 0.9)))


# ---------------------------------------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------------------------------------


def test_public_functions_reject_wrong_dtype_device_and_shape() -> None:
    cpu, _, n = _packed("mixed", "cpu")
    sig, t0, t1, ri = cpu["sigmas"], cpu["t_starts"], cpu["t_ends"], cpu["ray_indices"]
    with pytest.raises(TypeError, match="'sigmas' must be float32"):
        ops.render_weights(sig.double(), t0, t1, ri, n)
    with pytest.raises(TypeError, match="'ray_indices' must be an integer"):
        ops.render_weights(sig, t0, t1, ri.float(), n)
    with pytest.raises(ValueError, match="'t_starts' is on meta but 'sigmas' is on cpu; move it explicitly"):
        ops.render_weights(sig, t0.to("meta"), t1, ri, n)
    with pytest.raises(ValueError, match=rf"'t_ends' must have shape \({sig.shape[0]}\)"):
        ops.render_weights(sig, t0, t1[:-1], ri, n)
    o, d = make_rays(4)
    t, t_far = reference("ray_aabb_intersect", o, d, AABB)
    bitfield = make_bitfield("full", 1, 16)
    grid, steps = PackedOccupancy(bitfield, AABB, 1, 16), StepSchedule(0.1, 0.1)
    with pytest.raises(TypeError, match="'alive' must be an integer"):
        ops.march_rays_inference(o, d, t, t_far, torch.ones(4), grid, steps)
    with pytest.raises(TypeError, match=r"march_rays_inference: 'grid\.bitfield' must be uint8"):
        ops.march_rays_inference(o, d, t, t_far, torch.arange(4), grid._replace(bitfield=bitfield.long()), steps)
    with pytest.raises(TypeError, match="'bitfield' must be uint8"):
        ops.unpack_bitfield(bitfield.long())
    with pytest.raises(ValueError, match="'t_far' is on meta"):
        ops.march_rays_train(o, d, t, t_far.to("meta"), grid, steps)
    with pytest.raises(ValueError, match=r"'grid\.aabb' is on meta but 'rays_o' is on cpu"):
        ops.march_rays_train(o, d, t, t_far, grid._replace(aabb=AABB.to("meta")), steps)
    with pytest.raises(ValueError, match=r"'grid\.aabb' must have shape \(6\)"):
        ops.occupancy_lookup(o, grid._replace(aabb=AABB[:4]))
    with pytest.raises(ValueError, match=r"'grid\.bitfield' must have shape \(1024\)"):
        ops.march_rays_train(o, d, t, t_far, grid._replace(n_cascades=2), steps)
    with pytest.raises(ValueError, match="dt_min <= dt_max"):
        ops.march_rays_train(o, d, t, t_far, grid, StepSchedule(0.2, 0.1))
    with pytest.raises(TypeError, match="march_rays_train: 'steps' must be a StepSchedule, got tuple"):
        ops.march_rays_train(o, d, t, t_far, grid, (0.1, 0.1, 0.0))
    with pytest.raises(TypeError, match="occupancy_lookup: 'grid' must be a PackedOccupancy, got tuple"):
        ops.occupancy_lookup(o, (bitfield, AABB, 1, 16))
    with pytest.raises(ValueError, match="res must be even"):
        ops.occupancy_lookup(o, PackedOccupancy(bitfield[:27], AABB, 1, 6 + 1))
    state = [torch.zeros(4, 3), torch.zeros(4), torch.zeros(4), torch.ones(4)]
    with pytest.raises(ValueError, match=r"'alive' must have shape \(2\)"):
        ops.composite_rays_inference(torch.zeros(2, 3), torch.zeros(2, 3, 3), torch.zeros(2, 3), torch.zeros(2, 3),
                                     torch.arange(3), t, t_far, *state)  # fmt: skip
    with pytest.raises(ValueError, match=r"'jitter' must have shape \(4\)"):
        ops.march_rays_train(o, d, t, t_far, grid, steps, 16, torch.zeros(3))


def test_extension_entry_points_check_their_inputs() -> None:
    """The C++ entry points raise (they never cast or move) on wrong dtypes, devices, layouts and shapes."""
    cpu, _, n = _packed("mixed", "cpu")
    sig, t0, t1, ri = cpu["sigmas"], cpu["t_starts"], cpu["t_ends"], cpu["ray_indices"]
    with pytest.raises(RuntimeError, match="'sigmas' must be Float"):
        EXT.render_weights_fwd(sig.double(), t0, t1, ri, n, 1e-4)
    with pytest.raises(RuntimeError, match="'ray_indices' must be Long"):
        EXT.render_weights_fwd(sig, t0, t1, ri.int(), n, 1e-4)
    with pytest.raises(RuntimeError, match="'sigmas' must be contiguous"):
        EXT.render_weights_fwd(torch.stack([sig, sig], 1)[:, 0], t0, t1, ri, n, 1e-4)
    with pytest.raises(RuntimeError, match=rf"'t_starts' must have shape \[{sig.shape[0]}\]"):
        EXT.render_weights_fwd(sig, t0[:-1], t1, ri, n, 1e-4)
    with pytest.raises(RuntimeError, match="'t_starts' is on meta but the other inputs are on cpu"):
        EXT.render_weights_fwd(sig, t0.to("meta"), t1, ri, n, 1e-4)
    with pytest.raises(RuntimeError, match="sorted"):
        EXT.render_weights_fwd(sig, t0, t1, ri.flip(0).contiguous(), n, 1e-4)
    last = int(ri.max())
    with pytest.raises(RuntimeError, match=f"composite_rays_train: ray index {last} out of range"):
        EXT.composite_rays_train_fwd(sig, cpu["rgbs"], t0, t1, ri, last, 1e-4)
    with pytest.raises(RuntimeError, match=f"accumulate_along_rays: ray index {last} out of range"):
        EXT.accumulate_along_rays_fwd(sig, None, ri, last)
    with pytest.raises(RuntimeError, match="index 8 out of range"):
        EXT.occupancy_grid_update_fwd(torch.zeros(1, 8), torch.tensor([8]), torch.ones(1), 0.9)
    with pytest.raises(RuntimeError, match="'bitfield' must be Byte"):
        EXT.occupancy_lookup_fwd(torch.zeros(2, 3), torch.zeros(64, dtype=torch.int64), AABB, 1, 8)
    with pytest.raises(RuntimeError, match=r"'jitter' must have shape \[2, 3\]"):
        EXT.occupancy_cell_positions_fwd(torch.zeros(2, dtype=torch.long), AABB, 8, torch.zeros(2, 2))
    o, d = make_rays(4)
    full = make_bitfield("full", 1, 8)
    with pytest.raises(RuntimeError, match="dt_min"):
        EXT.march_rays_train_fwd(o, d, torch.zeros(4), torch.ones(4), full, AABB, 1, 8, 0.0, 0.1, 0.0, 16, None)
    with pytest.raises(RuntimeError, match="alive ray 4 out of range"):
        EXT.march_rays_inference_fwd(o, d, torch.zeros(4), torch.ones(4), torch.tensor([4]), full, AABB, 1, 8, 0.1,
                                     0.1, 0.0, 2, 8)  # fmt: skip


@requires_cuda
def test_cuda_inputs_must_not_mix_devices() -> None:
    if not getattr(EXT, "WITH_CUDA", False):
        pytest.skip("relight3d._C was built without CUDA kernels")
    cpu, _, n = _packed("mixed", "cpu")
    with pytest.raises(ValueError, match="move it explicitly"):
        ops.render_weights(cpu["sigmas"].cuda(), cpu["t_starts"], cpu["t_ends"].cuda(), cpu["ray_indices"].cuda(), n)
    with pytest.raises(RuntimeError, match="other inputs are on"):
        EXT.render_weights_fwd(cpu["sigmas"].cuda(), cpu["t_starts"], cpu["t_ends"].cuda(),
                               cpu["ray_indices"].cuda(), n, 1e-4)  # fmt: skip


def test_jit_build_is_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without RELIGHT3D_JIT=1 a missing extension never triggers a compilation."""
    monkeypatch.delenv("RELIGHT3D_JIT", raising=False)
    calls = []
    monkeypatch.setattr(_backend, "_jit_build", lambda: calls.append(1))
    monkeypatch.setattr(_backend.importlib, "import_module", lambda name: (_ for _ in ()).throw(ImportError(name)))
    _backend._load.cache_clear()
    try:
        ext, reason = _backend._load()
        assert ext is None and not calls and "RELIGHT3D_JIT=1" in reason and "ImportError" in reason
    finally:
        monkeypatch.undo()
        _backend._load.cache_clear()
        assert _backend._load()[0] is not None
