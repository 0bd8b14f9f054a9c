"""Pure-PyTorch reference implementations of the ray-marching operations.

Every function here takes the arguments of the public op of the same name in :mod:`relight3d.ops`, in the same order,
all of them given and already checked (the public op documents their shapes, dtypes and defaults), with a
:class:`~relight3d.ops.PackedOccupancy` grid or a :class:`~relight3d.ops.StepSchedule` unpacked into its fields
(``bitfield, aabb, n_cascades, res`` and ``dt_min, dt_max, dt_gamma``), as the compiled kernels take them. They
define the semantics: the compiled C++/CUDA kernels must agree with them (the tests compare values and gradients).
They are also the fallback used wherever no compiled extension is available, so they are written to be reasonably
fast on a CPU (vectorised, no Python loops over rays or samples).

Conventions shared by all implementations
-----------------------------------------
* ``aabb`` is ``[xmin, ymin, zmin, xmax, ymax, zmax]``. Cascade ``c`` of an occupancy grid covers the box scaled by
  ``2**c`` about its centre (cascade 0 is the box itself).
* Occupancy grids store ``n_cascades * res**3`` cells; inside a cascade, cells are numbered by the Morton code of their
  integer coordinates (``x`` in the lowest bit). The bitfield packs cell ``i`` into bit ``i % 8`` of byte ``i // 8``.
* Step schedule (cone stepping). With ``dt(t) = clamp(t * dt_gamma, dt_min, dt_max)`` the samples of a ray are
  ``t_0 = t_near + jitter * dt(t_near)`` and ``t_{k+1} = t_k + dt(t_k)``. This recurrence has the closed form used by
  :func:`step_schedule`: linear with step ``dt_min`` while ``t * dt_gamma < dt_min``, geometric with ratio
  ``1 + dt_gamma`` while ``t * dt_gamma < dt_max``, then linear with step ``dt_max``. Sample ``k`` spans
  ``[t_k, min(t_k + dt(t_k), t_far)]`` and exists when ``t_k < t_far`` and ``k < max_steps``; it is kept when the
  occupancy cell holding its midpoint is occupied.
* Inference (:func:`march_rays_inference`, :func:`composite_rays_inference`) uses the same schedule restarted at each
  ray's current ``t`` (the recurrence depends only on ``t``), so marching a ray to its end visits its training
  samples up to float rounding; compositing uses the same weights and early stop as :func:`render_weights`.

:func:`sample_vm_features` (TensoRF's vector-matrix decomposition) is not a ray-marching op but follows the same
three-layer pattern; its reference is ``F.grid_sample``.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

MISS_T = 1e10
"""``t_near`` and ``t_far`` of a ray that misses the box."""

MAX_MORTON_RES = 1024
"""Largest grid resolution whose Morton code fits the 30 bits used here."""

_TAU_CAP = 200.0
"""Optical depth above which a sample is opaque in float32 (``exp(-200) == 0``)."""


def ray_aabb_intersect(rays_o: Tensor, rays_d: Tensor, aabb: Tensor, near_min: float) -> Tuple[Tensor, Tensor]:
    """Slab test. Returns ``(t_near, t_far)``; ``t_near >= near_min``. Misses get ``t_near = t_far = MISS_T``."""
    inv_d = 1.0 / torch.where(rays_d.abs() < 1e-15, torch.full_like(rays_d, 1e-15), rays_d)
    t0 = (aabb[:3] - rays_o) * inv_d
    t1 = (aabb[3:] - rays_o) * inv_d
    t_near = torch.minimum(t0, t1).amax(dim=-1).clamp_min(near_min)
    t_far = torch.maximum(t0, t1).amin(dim=-1)
    miss = t_far <= t_near
    t_near = torch.where(miss, torch.full_like(t_near, MISS_T), t_near)
    t_far = torch.where(miss, torch.full_like(t_far, MISS_T), t_far)
    return t_near, t_far


def _spread_bits(v: Tensor) -> Tensor:
    """Insert two zero bits between each of the low 10 bits of ``v`` (int64)."""
    v = v & 0x3FF
    v = (v | (v << 16)) & 0x030000FF
    v = (v | (v << 8)) & 0x0300F00F
    v = (v | (v << 4)) & 0x030C30C3
    v = (v | (v << 2)) & 0x09249249
    return v


def _compact_bits(v: Tensor) -> Tensor:
    """Inverse of :func:`_spread_bits`."""
    v = v & 0x09249249
    v = (v | (v >> 2)) & 0x030C30C3
    v = (v | (v >> 4)) & 0x0300F00F
    v = (v | (v >> 8)) & 0x030000FF
    v = (v | (v >> 16)) & 0x3FF
    return v


def morton3d(coords: Tensor) -> Tensor:
    """Morton (Z-order) code of integer coordinates in ``[0, 1024)``; ``x`` takes the lowest bit."""
    c = coords.long()
    return _spread_bits(c[:, 0]) | (_spread_bits(c[:, 1]) << 1) | (_spread_bits(c[:, 2]) << 2)


def morton3d_invert(codes: Tensor) -> Tensor:
    """Integer coordinates of Morton codes (inverse of :func:`morton3d`)."""
    c = codes.long()
    return torch.stack([_compact_bits(c), _compact_bits(c >> 1), _compact_bits(c >> 2)], dim=-1)


def _box(aabb: Tensor) -> Tuple[Tensor, Tensor]:
    """Centre and half extent of a box."""
    return (aabb[:3] + aabb[3:]) * 0.5, (aabb[3:] - aabb[:3]) * 0.5


def occupancy_cell_positions(indices: Tensor, aabb: Tensor, res: int, jitter: Optional[Tensor]) -> Tensor:
    """World positions of occupancy cells given flat indices ``cascade * res**3 + morton``.

    ``jitter`` in ``[0, 1)^3`` places the point inside the cell; ``None`` gives the cell centre.
    """
    n_cells = res**3
    cascade = torch.div(indices, n_cells, rounding_mode="floor")
    ijk = morton3d_invert(indices % n_cells).to(aabb.dtype)
    frac = (ijk + (0.5 if jitter is None else jitter)) / res
    center, half = _box(aabb)
    scale = torch.pow(2.0, cascade.to(aabb.dtype))[:, None]
    return center + (frac * 2.0 - 1.0) * half * scale


def occupancy_grid_update(density_grid: Tensor, indices: Tensor, values: Tensor, decay: float) -> Tensor:
    """Exponential moving maximum: ``grid[i] = max(grid[i] * decay, value_i)`` for the given flat indices.

    Cells whose value is negative (marked as never-visible) stay untouched. Returns a new tensor.
    Duplicate indices take the largest value.
    """
    flat = density_grid.reshape(-1).clone()
    new = torch.full_like(flat, -float("inf"))
    new.scatter_reduce_(0, indices.long(), values.to(flat.dtype), reduce="amax", include_self=True)
    touched = torch.zeros_like(flat, dtype=torch.bool)
    touched[indices.long()] = True
    touched &= flat >= 0
    flat = torch.where(touched, torch.maximum(flat * decay, new), flat)
    return flat.view_as(density_grid)


def pack_bitfield(density_grid: Tensor, threshold: float) -> Tensor:
    """Pack ``density_grid > threshold`` into a uint8 bitfield (cell ``i`` is bit ``i % 8`` of byte ``i // 8``)."""
    occ = (density_grid.reshape(-1) > threshold).view(-1, 8).to(torch.uint8)
    weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8, device=occ.device)
    return (occ * weights).sum(dim=-1, dtype=torch.uint8)


def unpack_bitfield(bitfield: Tensor) -> Tensor:
    """Inverse of :func:`pack_bitfield`: one bool per cell."""
    shifts = torch.arange(8, dtype=torch.uint8, device=bitfield.device)
    return ((bitfield[:, None] >> shifts) & 1).bool().reshape(-1)


def occupancy_lookup(positions: Tensor, bitfield: Tensor, aabb: Tensor, n_cascades: int, res: int) -> Tensor:
    """Whether the cell holding each position is occupied. Positions outside the largest cascade are empty."""
    center, half = _box(aabb)
    rel = (positions - center) / half  # cascade 0 spans [-1, 1]
    extent = rel.abs().amax(dim=-1)
    if n_cascades > 1:
        cascade = torch.ceil(torch.log2(extent.clamp_min(1e-12))).clamp(0, n_cascades - 1).long()
        rel = rel / torch.pow(2.0, cascade.to(rel.dtype))[:, None]
    else:
        cascade = torch.zeros_like(extent, dtype=torch.long)
    inside = extent <= float(2 ** (n_cascades - 1))
    ijk = ((rel + 1.0) * (0.5 * res)).long().clamp(0, res - 1)
    flat = cascade * (res**3) + morton3d(ijk)
    bits = (bitfield[flat >> 3].long() >> (flat & 7)) & 1
    return (bits == 1) & inside


def _phases(
    t_start: Tensor, dt_min: float, dt_max: float, dt_gamma: float
) -> Tuple[Tensor, Tensor, Tensor, Tensor, float]:
    """Where the phases of the cone-stepping schedule started at ``t_start`` begin (``dt_gamma > 0``).

    Returns ``(k_a, t_at_a, k_b, t_at_b, log_r)``: phase B (geometric, ratio ``1 + dt_gamma = exp(log_r)``) begins at
    step ``k_a``, at ``t_at_a``; phase C (steps of ``dt_max``) at step ``k_a + k_b``, at ``t_at_b``.
    """
    t_a, t_b = dt_min / dt_gamma, dt_max / dt_gamma
    log_r = math.log1p(dt_gamma)
    # phase A: linear with dt_min until t >= t_a
    k_a = torch.ceil(((t_a - t_start) / dt_min).clamp_min(0.0))
    t_at_a = t_start + k_a * dt_min
    # phase B: geometric until t >= t_b
    k_b = torch.ceil((torch.log(torch.as_tensor(t_b) / t_at_a) / log_r).clamp_min(0.0))
    t_at_b = t_at_a * torch.exp(k_b * log_r)
    return k_a, t_at_a, k_b, t_at_b, log_r


def step_schedule(t_start: Tensor, k: Tensor, dt_min: float, dt_max: float, dt_gamma: float) -> Tensor:
    """``t_k`` of the cone-stepping recurrence started at ``t_start`` (see the module docstring)."""
    if dt_gamma <= 0.0:
        return t_start + k * dt_min
    k_a, t_at_a, k_b, t_at_b, log_r = _phases(t_start, dt_min, dt_max, dt_gamma)
    lin_a = t_start + k * dt_min
    geo = t_at_a * torch.exp((k - k_a) * log_r)
    lin_c = t_at_b + (k - k_a - k_b) * dt_max
    return torch.where(k < k_a, lin_a, torch.where(k < k_a + k_b, geo, lin_c))


def _count_steps(
    t_start: Tensor, t_far: Tensor, dt_min: float, dt_max: float, dt_gamma: float, max_steps: int
) -> Tensor:
    """Number of samples ``k`` with ``t_k < t_far`` (capped at ``max_steps``)."""
    span = (t_far - t_start).clamp_min(0.0)
    n = torch.ceil(span / dt_min)
    if dt_gamma > 0.0:
        k_a, t_at_a, k_b, t_at_b, log_r = _phases(t_start, dt_min, dt_max, dt_gamma)
        n_b = k_a + torch.ceil((torch.log(t_far / t_at_a) / log_r).clamp_min(0.0))
        n_c = k_a + k_b + torch.ceil(((t_far - t_at_b) / dt_max).clamp_min(0.0))
        n = torch.where(t_far <= t_at_a, n, torch.where(t_far <= t_at_b, n_b, n_c))
    n = torch.where(t_far > t_start, n, torch.zeros_like(n))
    return n.clamp(0, max_steps).long()


def _step(t: Tensor, dt_min: float, dt_max: float, dt_gamma: float) -> Tensor:
    """``dt(t)`` of the schedule."""
    return (t * dt_gamma).clamp(dt_min, dt_max) if dt_gamma > 0 else torch.full_like(t, dt_min)


def _candidates(
    rays_o: Tensor, rays_d: Tensor, rays: Tensor, t0: Tensor, t_far: Tensor, grid: Tuple, steps: Tuple
) -> Tuple[Tensor, Tensor]:
    """Candidate samples ``[t0, t1]`` of rays ``rays`` (``t0`` of any shape ``[*rays.shape, ...]``): their ends
    ``t1 = min(t0 + dt(t0), t_far)`` and whether the cell holding their midpoint is occupied.

    ``grid`` is ``(bitfield, aabb, n_cascades, res)``, ``steps`` ``(dt_min, dt_max, dt_gamma)``.
    """
    t1 = torch.minimum(t0 + _step(t0, *steps), t_far)
    mid = (t0 + t1) * 0.5
    extra = (1,) * (t0.dim() - rays.dim())
    pos = rays_o[rays].view(*rays.shape, *extra, 3) + rays_d[rays].view(*rays.shape, *extra, 3) * mid[..., None]
    return t1, occupancy_lookup(pos.reshape(-1, 3), *grid).view(t0.shape)


def march_rays_train(
    rays_o: Tensor, rays_d: Tensor, t_near: Tensor, t_far: Tensor, bitfield: Tensor, aabb: Tensor, n_cascades: int,
    res: int, dt_min: float, dt_max: float, dt_gamma: float, max_steps: int, jitter: Optional[Tensor]
) -> Tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """Samples of each ray that fall in occupied cells, packed and sorted by ray (see module docstring).

    Returns ``(ray_indices, t_starts, t_ends)``. Rays with ``t_far <= t_near`` get no samples.
    """
    device = rays_o.device
    t_start = t_near + (jitter * _step(t_near, dt_min, dt_max, dt_gamma) if jitter is not None else 0.0)
    t_start = torch.where(t_far > t_near, t_start, t_far)
    counts = _count_steps(t_start, t_far, dt_min, dt_max, dt_gamma, max_steps)
    total = int(counts.sum())
    if total == 0:
        empty_f = rays_o.new_zeros((0,))
        return torch.zeros((0,), dtype=torch.long, device=device), empty_f, empty_f.clone()
    ray_ids = torch.repeat_interleave(torch.arange(rays_o.shape[0], device=device), counts)
    offsets = torch.cumsum(counts, 0) - counts
    k = (torch.arange(total, device=device) - offsets[ray_ids]).to(rays_o.dtype)
    t0 = step_schedule(t_start[ray_ids], k, dt_min, dt_max, dt_gamma)
    tf = t_far[ray_ids]
    t1, occupied = _candidates(rays_o, rays_d, ray_ids, t0, tf, (bitfield, aabb, n_cascades, res),
                               (dt_min, dt_max, dt_gamma))  # fmt: skip
    keep = occupied & (t0 < tf)
    return ray_ids[keep], t0[keep], t1[keep]


def _ray_offsets(ray_indices: Tensor, n_rays: int) -> Tensor:
    counts = torch.bincount(ray_indices, minlength=n_rays)
    return torch.cumsum(counts, 0) - counts


def render_weights(
    sigmas: Tensor, t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor, n_rays: int, t_thresh: float
) -> Tuple[Tensor, Tensor]:
    """Volume-rendering weights ``w_i = T_i (1 - exp(-sigma_i dt_i))`` and transmittances ``T_i``.

    Samples must be sorted by ray. Samples whose transmittance has fallen below ``t_thresh`` (early stop) get weight 0.
    """
    if sigmas.numel() == 0:
        return sigmas.clone(), sigmas.clone()
    tau = sigmas * (t_ends - t_starts)
    # Exclusive segmented cumulative sum, in float64 so that long packed arrays keep their precision. The prefix sum
    # runs over all rays, so tau is capped first: one opaque sample (sigma = 1e30, or inf from an overflowing density
    # activation) would otherwise wipe out the precision of, or turn into NaN, every later ray's transmittance. The
    # cap changes nothing in float32: exp(-_TAU_CAP) == 0 and the gradient through a capped tau is multiplied by 0.
    tau_sum = tau.clamp_max(_TAU_CAP).double()
    cs = torch.cumsum(tau_sum, 0)
    start = _ray_offsets(ray_indices, n_rays)[ray_indices]
    before = cs - tau_sum
    excl = (before - before[start]).to(sigmas.dtype)
    trans = torch.exp(-excl)
    alpha = 1.0 - torch.exp(-tau)
    weights = trans * alpha
    weights = torch.where(trans >= t_thresh, weights, torch.zeros_like(weights))
    return weights, trans


def accumulate_along_rays(weights: Tensor, values: Optional[Tensor], ray_indices: Tensor, n_rays: int) -> Tensor:
    """``out[r] = sum_{i in ray r} w_i v_i``; with ``values=None`` it sums the weights (shape ``[n, 1]``)."""
    src = weights[:, None] if values is None else weights[:, None] * values
    out = torch.zeros((n_rays, src.shape[-1]), dtype=src.dtype, device=src.device)
    return out.index_add(0, ray_indices, src)


def composite_rays_train(
    sigmas: Tensor, rgbs: Tensor, t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor, n_rays: int, t_thresh: float
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Fused compositing: returns ``(weights, image, depth, accumulation)`` (depth is the weighted midpoint ``t``)."""
    weights, _ = render_weights(sigmas, t_starts, t_ends, ray_indices, n_rays, t_thresh)
    image = accumulate_along_rays(weights, rgbs, ray_indices, n_rays)
    mids = ((t_starts + t_ends) * 0.5)[:, None]
    depth = accumulate_along_rays(weights, mids, ray_indices, n_rays)[:, 0]
    acc = accumulate_along_rays(weights, None, ray_indices, n_rays)[:, 0]
    return weights, image, depth, acc


def march_rays_inference(
    rays_o: Tensor, rays_d: Tensor, t: Tensor, t_far: Tensor, alive: Tensor, bitfield: Tensor, aabb: Tensor,
    n_cascades: int, res: int, dt_min: float, dt_max: float, dt_gamma: float, n_steps: int, max_candidates: int
) -> Tuple[Tensor, Tensor]:  # fmt: skip
    """Next ``n_steps`` samples in occupied cells of each alive ray, from its current ``t`` (advanced in place).

    Candidate ``j`` of a ray is ``step_schedule(t, j)`` (the schedule restarted at ``t``: the recurrence only
    depends on the current ``t``), spanning ``[t_j, min(t_j + dt(t_j), t_far)]`` and kept when its midpoint's cell is
    occupied, as in :func:`march_rays_train`. A ray stops at its ``n_steps``-th kept sample, at the first candidate
    with ``t_j >= t_far``, or after ``max_candidates`` candidates; ``t`` becomes the first candidate not examined.
    Unused slots have ``t_starts == t_ends == 0``. Rays with ``t >= t_far`` get no samples and keep their ``t``.
    """
    a = alive.shape[0]
    alive = alive.long()
    t_starts = rays_o.new_zeros((a, n_steps))
    t_ends = rays_o.new_zeros((a, n_steps))
    t_cur, tf = t[alive], t_far[alive]
    t_next = t_cur.clone()
    found = torch.zeros(a, dtype=torch.long, device=rays_o.device)
    j_base = torch.zeros(a, dtype=rays_o.dtype, device=rays_o.device)
    todo = torch.nonzero(t_cur < tf)[:, 0]
    chunk = min(max(4 * n_steps, 64), max_candidates)
    cols = torch.arange(chunk, dtype=rays_o.dtype, device=rays_o.device)
    while todo.numel() > 0:
        tfar = tf[todo, None]
        j = j_base[todo, None] + cols
        t0 = step_schedule(t_cur[todo, None], j, dt_min, dt_max, dt_gamma)
        t1, occ = _candidates(rays_o, rays_d, alive[todo], t0, tfar, (bitfield, aabb, n_cascades, res),
                              (dt_min, dt_max, dt_gamma))  # fmt: skip
        # candidates examined: those before the first one past t_far or past max_candidates
        examinable = torch.cummin(((t0 < tfar) & (j < max_candidates)).to(torch.uint8), dim=1).values.bool()
        kept = occ & examinable
        rank = torch.cumsum(kept.long(), dim=1)  # 1-based rank of each kept candidate within the chunk
        need = (n_steps - found[todo])[:, None]
        take = kept & (rank <= need)
        rows, c = torch.nonzero(take, as_tuple=True)
        slot = found[todo][rows] + rank[rows, c] - 1
        t_starts[todo[rows], slot] = t0[rows, c]
        t_ends[todo[rows], slot] = t1[rows, c]
        found[todo] += take.sum(dim=1)
        full = found[todo] == n_steps
        last_taken = (chunk - 1) - torch.argmax(take.flip(1).to(torch.uint8), dim=1)
        stopped = ~examinable[:, -1]
        first_stop = torch.argmax((~examinable).to(torch.uint8), dim=1)
        done = full | stopped
        j_stop = torch.where(full, last_taken + 1, first_stop).to(rays_o.dtype) + j_base[todo]
        fin = todo[done]
        t_next[fin] = step_schedule(t_cur[fin], j_stop[done], dt_min, dt_max, dt_gamma)
        todo = todo[~done]
        j_base[todo] += chunk
    t[alive] = t_next
    return t_starts, t_ends


def composite_rays_inference(
    sigmas: Tensor, rgbs: Tensor, t_starts: Tensor, t_ends: Tensor, alive: Tensor, t: Tensor, t_far: Tensor,
    image: Tensor, depth: Tensor, acc: Tensor, trans: Tensor, t_thresh: float
) -> Tensor:  # fmt: skip
    """Composite one batch of :func:`march_rays_inference` samples front to back into the per-ray state.

    For row ``i`` (ray ``r = alive[i]``), sample ``j`` has ``T_j = trans[r] * exp(-sum_{l<j} tau_l)``; it adds
    ``w_j = T_j (1 - exp(-tau_j))`` times its rgb / midpoint / 1 to ``image[r]`` / ``depth[r]`` / ``acc[r]`` when
    ``T_j >= t_thresh`` (the early stop of :func:`render_weights`). Slots with ``t_end <= t_start`` are padding.
    ``trans[r]`` becomes the transmittance behind the row. Updates the state in place and returns the rays of
    ``alive`` still alive: ``trans >= t_thresh`` and ``t < t_far``.
    """
    alive = alive.long()
    dt = t_ends - t_starts
    valid = dt > 0
    tau = torch.where(valid, sigmas * dt, torch.zeros_like(dt))
    od = torch.cumsum(tau.double(), dim=1)
    excl = torch.cat([torch.zeros_like(od[:, :1]), od[:, :-1]], dim=1).to(sigmas.dtype)
    T0 = trans[alive]
    T = T0[:, None] * torch.exp(-excl)
    w = torch.where(valid & (T >= t_thresh), T * (1.0 - torch.exp(-tau)), torch.zeros_like(T))
    mids = (t_starts + t_ends) * 0.5
    image[alive] += (w[..., None] * rgbs).sum(dim=1)
    depth[alive] += (w * mids).sum(dim=1)
    acc[alive] += w.sum(dim=1)
    T_end = T0 * torch.exp(-od[:, -1].to(sigmas.dtype)) if od.shape[1] > 0 else T0
    trans[alive] = T_end
    keep = (T_end >= t_thresh) & (t[alive] < t_far[alive])
    return alive[keep]


# Plane axes (grid_sample's x = width, y = height) and line axis of the three VM pairs.
VM_PLANE_AXES = ((0, 1), (0, 2), (1, 2))
VM_LINE_AXES = (2, 1, 0)


def sample_vm_features(planes: Tensor, lines: Tensor, xyz: Tensor) -> Tensor:
    """Products plane * line of a VM decomposition at normalised points; column ``p * c + k`` is pair ``p``, channel k.

    Pair ``p`` samples ``planes[p]`` bilinearly at ``(x, y) = (xyz[:, a], xyz[:, b])`` and ``lines[p]`` linearly at
    ``xyz[:, l]`` for ``((a, b), l)`` in ``zip(VM_PLANE_AXES, VM_LINE_AXES)``: ``F.grid_sample`` with
    ``align_corners=True`` and zeros padding, so ``-1`` and ``1`` are the first and last nodes and values fade to 0
    within one cell outside the box. The three pairs go through one batched ``grid_sample`` call per tensor.
    """
    n = xyz.shape[0]
    plane_coord = torch.stack([xyz[:, [a, b]] for a, b in VM_PLANE_AXES]).view(3, n, 1, 2)
    line_c = torch.stack([xyz[:, c] for c in VM_LINE_AXES])
    line_coord = torch.stack([torch.zeros_like(line_c), line_c], dim=-1).view(3, n, 1, 2)
    p = F.grid_sample(planes, plane_coord, mode="bilinear", align_corners=True)
    line = F.grid_sample(lines, line_coord, mode="bilinear", align_corners=True)
    return (p * line).reshape(3 * planes.shape[1], n).t()
