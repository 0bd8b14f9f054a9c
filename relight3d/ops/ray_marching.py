# ruff: noqa: F722, UP037  (jaxtyping shape strings such as "n 3" are not forward references)
"""The public ray-marching functions: their signatures and documentation; checks and dispatch by :mod:`._dispatch`.

The marchers take the occupancy grid and the step schedule as :class:`~relight3d.ops.march_inputs.PackedOccupancy`
and :class:`~relight3d.ops.march_inputs.StepSchedule`, and unpack them into the flat arguments of the kernels and
the reference.
"""

from __future__ import annotations

from typing import Optional, Tuple

from jaxtyping import Bool, Float, Int, UInt8
from torch import Tensor

from relight3d.ops._dispatch import check_grid, check_steps, public_op, run
from relight3d.ops.march_inputs import PackedOccupancy, StepSchedule


@public_op
def ray_aabb_intersect(
    rays_o: Float[Tensor, "n 3"], rays_d: Float[Tensor, "n 3"], aabb: Float[Tensor, "6"], near_min: float = 0.0
) -> Tuple[Float[Tensor, " n"], Float[Tensor, " n"]]:
    """Entry and exit distances of rays through an axis-aligned box.

    Args:
        rays_o: ray origins.
        rays_d: ray directions (need not be normalised; ``t`` is in units of ``|d|``).
        aabb: ``[xmin, ymin, zmin, xmax, ymax, zmax]``.
        near_min: lower bound on ``t_near``.

    Returns:
        ``(t_near, t_far)``; rays that miss get ``t_near = t_far = MISS_T``.

    Example:
        >>> o = torch.tensor([[0.0, 0.0, -3.0]]); d = torch.tensor([[0.0, 0.0, 1.0]])
        >>> ray_aabb_intersect(o, d, torch.tensor([-1.0, -1, -1, 1, 1, 1]))
        (tensor([2.]), tensor([4.]))
    """
    return run("ray_aabb_intersect", rays_o, rays_d, aabb, near_min)


@public_op
def morton3d(coords: Int[Tensor, "n 3"]) -> Int[Tensor, " n"]:
    """Morton (Z-order) codes of integer grid coordinates in ``[0, 1024)``.

    Example:
        >>> morton3d(torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 1]]))
        tensor([1, 2, 7])
    """
    return run("morton3d", coords)


@public_op
def morton3d_invert(codes: Int[Tensor, " n"]) -> Int[Tensor, "n 3"]:
    """Integer coordinates of Morton codes; inverse of :func:`morton3d`.

    Example:
        >>> morton3d_invert(torch.tensor([7]))
        tensor([[1, 1, 1]])
    """
    return run("morton3d_invert", codes)


@public_op
def occupancy_cell_positions(
    indices: Int[Tensor, " n"], aabb: Float[Tensor, "6"], res: int, jitter: Optional[Float[Tensor, "n 3"]] = None
) -> Float[Tensor, "n 3"]:
    """World positions inside occupancy cells with flat indices ``cascade * res**3 + morton``.

    Example:
        >>> occupancy_cell_positions(torch.tensor([0]), torch.tensor([-1.0, -1, -1, 1, 1, 1]), 2)
        tensor([[-0.5000, -0.5000, -0.5000]])
    """
    return run("occupancy_cell_positions", indices, aabb, res, jitter)


@public_op
def occupancy_grid_update(
    density_grid: Float[Tensor, "c m"], indices: Int[Tensor, " n"], values: Float[Tensor, " n"], decay: float
) -> Float[Tensor, "c m"]:
    """Exponential moving maximum of the occupancy grid at the given cells (returns a new grid).

    Example:
        >>> occupancy_grid_update(torch.zeros(1, 8), torch.tensor([3]), torch.tensor([2.0]), 0.95)[0, 3]
        tensor(2.)
    """
    return run("occupancy_grid_update", density_grid, indices, values, decay)


@public_op
def pack_bitfield(density_grid: Float[Tensor, "c m"], threshold: float) -> UInt8[Tensor, " b"]:
    """Threshold an occupancy grid and pack it into a uint8 bitfield (cell ``i`` is bit ``i % 8`` of byte ``i // 8``).

    Example:
        >>> pack_bitfield(torch.tensor([[0.0, 1, 0, 0, 0, 0, 0, 1]]), 0.5)
        tensor([130], dtype=torch.uint8)
    """
    if density_grid.numel() % 8:
        raise ValueError(f"pack_bitfield: the grid has {density_grid.numel()} cells, not a multiple of 8")
    return run("pack_bitfield", density_grid, threshold)


@public_op
def unpack_bitfield(bitfield: UInt8[Tensor, " b"]) -> Bool[Tensor, " m"]:
    """One bool per cell from a packed bitfield; inverse of :func:`pack_bitfield`."""
    return run("unpack_bitfield", bitfield)


@public_op
def occupancy_lookup(positions: Float[Tensor, "n 3"], grid: PackedOccupancy) -> Bool[Tensor, " n"]:
    """Whether each position lies in an occupied cell of a (cascaded) occupancy grid; outside every cascade: False.

    Example:
        >>> grid = PackedOccupancy(torch.tensor([1], dtype=torch.uint8), torch.tensor([-1.0, -1, -1, 1, 1, 1]), 1, 2)
        >>> occupancy_lookup(torch.tensor([[-0.5, -0.5, -0.5], [0.5, -0.5, -0.5], [2.0, 0, 0]]), grid)
        tensor([ True, False, False])
    """
    check_grid("occupancy_lookup", grid)
    return run("occupancy_lookup", positions, *grid)


@public_op
def march_rays_train(
    rays_o: Float[Tensor, "n 3"],
    rays_d: Float[Tensor, "n 3"],
    t_near: Float[Tensor, " n"],
    t_far: Float[Tensor, " n"],
    grid: PackedOccupancy,
    steps: StepSchedule,
    max_steps: int = 1024,
    jitter: Optional[Float[Tensor, " n"]] = None,
) -> Tuple[Int[Tensor, " s"], Float[Tensor, " s"], Float[Tensor, " s"]]:
    """Place samples along rays, keeping only those inside occupied cells.

    The step grows with distance (cone stepping, ``dt = clamp(t * dt_gamma, dt_min, dt_max)``); ``dt_gamma=0`` gives
    uniform steps of ``dt_min``. See :mod:`relight3d.ops._torch_impl` for the exact schedule.

    Args:
        rays_o, rays_d: rays.
        t_near, t_far: the interval to march, e.g. from :func:`ray_aabb_intersect`.
        grid: the occupancy grid, e.g. :attr:`OccupancyGrid.packed <relight3d.ops.OccupancyGrid.packed>`.
        steps: the step schedule.
        max_steps: cap on candidate samples per ray.
        jitter: per-ray offset in ``[0, 1)`` of the first sample, in units of its step (training noise).

    Returns:
        ``(ray_indices, t_starts, t_ends)``, packed and sorted by ray.

    Example:
        >>> from relight3d.ops import OccupancyGrid
        >>> grid = OccupancyGrid(torch.tensor([-1.0, -1, -1, 1, 1, 1]), res=16)  # all cells occupied at first
        >>> o, d = torch.tensor([[0.0, 0, -3]]), torch.tensor([[0.0, 0, 1]])
        >>> tn, tf = ray_aabb_intersect(o, d, grid.aabb)
        >>> ids, t0, t1 = march_rays_train(o, d, tn, tf, grid.packed, StepSchedule(0.1, 0.1))
        >>> ids.shape, t0[:2], t1[:2]
        (torch.Size([20]), tensor([2.0000, 2.1000]), tensor([2.1000, 2.2000]))
    """
    check_grid("march_rays_train", grid)
    check_steps("march_rays_train", steps)
    return run("march_rays_train", rays_o, rays_d, t_near, t_far, *grid, *steps, max_steps, jitter)


@public_op
def render_weights(
    sigmas: Float[Tensor, " s"],
    t_starts: Float[Tensor, " s"],
    t_ends: Float[Tensor, " s"],
    ray_indices: Int[Tensor, " s"],
    n_rays: int,
    t_thresh: float = 1e-4,
) -> Tuple[Float[Tensor, " s"], Float[Tensor, " s"]]:
    """Volume-rendering weights and transmittances of packed samples (differentiable in ``sigmas``).

    Samples after a ray's transmittance falls below ``t_thresh`` get weight 0 (early stop).

    Example:
        >>> w, t = render_weights(torch.tensor([1e9, 1.0]), torch.tensor([0.0, 1]), torch.tensor([1.0, 2]),
        ...                       torch.tensor([0, 0]), 1)
        >>> w
        tensor([1., 0.])
    """
    return run("render_weights", sigmas, t_starts, t_ends, ray_indices, n_rays, t_thresh)


@public_op
def accumulate_along_rays(
    weights: Float[Tensor, " s"], values: Optional[Float[Tensor, "s c"]], ray_indices: Int[Tensor, " s"], n_rays: int
) -> Float[Tensor, "n c"]:
    """Weighted per-ray sums of packed sample values (``values=None`` sums the weights).

    Example:
        >>> accumulate_along_rays(torch.tensor([0.5, 0.5]), torch.tensor([[1.0], [3.0]]), torch.tensor([0, 0]), 1)
        tensor([[2.]])
    """
    return run("accumulate_along_rays", weights, values, ray_indices, n_rays)


@public_op
def composite_rays_train(
    sigmas: Float[Tensor, " s"],
    rgbs: Float[Tensor, "s 3"],
    t_starts: Float[Tensor, " s"],
    t_ends: Float[Tensor, " s"],
    ray_indices: Int[Tensor, " s"],
    n_rays: int,
    t_thresh: float = 1e-4,
) -> Tuple[Float[Tensor, " s"], Float[Tensor, "n 3"], Float[Tensor, " n"], Float[Tensor, " n"]]:
    """Composite packed samples into ``(weights, image, depth, accumulation)``; differentiable in sigmas and rgbs."""
    return run("composite_rays_train", sigmas, rgbs, t_starts, t_ends, ray_indices, n_rays, t_thresh)


@public_op
def march_rays_inference(
    rays_o: Float[Tensor, "n 3"],
    rays_d: Float[Tensor, "n 3"],
    t: Float[Tensor, " n"],
    t_far: Float[Tensor, " n"],
    alive: Int[Tensor, " a"],
    grid: PackedOccupancy,
    steps: StepSchedule,
    n_steps: int = 8,
    max_candidates: int = 1024,
) -> Tuple[Float[Tensor, "a k"], Float[Tensor, "a k"]]:
    """Next samples of the alive rays for rendering, resuming each ray at its current ``t``.

    The samples follow the schedule of :func:`march_rays_train` (the cone-stepping recurrence depends only on the
    current ``t``, so it can resume anywhere): marching a ray call after call until it dies visits the samples that
    :func:`march_rays_train` gives it without jitter (up to float rounding, and without the ``max_steps`` cap).
    Per call, each ray examines candidate steps until it has ``n_steps`` samples in occupied cells, reaches
    ``t_far``, or has examined ``max_candidates`` steps (it then resumes at the next call).

    Args:
        rays_o, rays_d: all rays.
        t: per-ray state, where each ray resumes (start with ``t_near``). Advanced in place for the rays in
            ``alive``: it becomes the first step not examined, ``>= t_far`` once a ray has no sample left.
        t_far: end of each ray's interval.
        alive: indices of the rays to march (unique), e.g. the output of :func:`composite_rays_inference`.
        grid: the occupancy grid, e.g. :attr:`OccupancyGrid.packed <relight3d.ops.OccupancyGrid.packed>`.
        steps: the step schedule (the one of :func:`march_rays_train`, to render what training sampled).
        n_steps: samples per ray and call (the width of the outputs).
        max_candidates: cap on the steps a ray examines per call, which bounds the work of one call.

    Returns:
        ``(t_starts, t_ends)`` of shape ``[len(alive), n_steps]``; unused slots have ``t_starts == t_ends == 0``.

    Example:
        >>> bitfield = torch.full((16**3 // 8,), 255, dtype=torch.uint8)
        >>> grid = PackedOccupancy(bitfield, torch.tensor([-1.0, -1, -1, 1, 1, 1]), n_cascades=1, res=16)
        >>> o, d = torch.tensor([[0.0, 0, -3]]), torch.tensor([[0.0, 0, 1]])
        >>> t, t_far = ray_aabb_intersect(o, d, grid.aabb)
        >>> image, depth, acc, trans = torch.zeros(1, 3), torch.zeros(1), torch.zeros(1), torch.ones(1)
        >>> alive = torch.arange(1)
        >>> while alive.numel() > 0:
        ...     t0, t1 = march_rays_inference(o, d, t, t_far, alive, grid, StepSchedule(0.1, 0.1), n_steps=4)
        ...     sigmas, rgbs = torch.full_like(t0, 0.5), torch.ones(*t0.shape, 3)  # a field queried at the midpoints
        ...     alive = composite_rays_inference(sigmas, rgbs, t0, t1, alive, t, t_far, image, depth, acc, trans)
        >>> round(float(acc[0]), 4)  # 1 - exp(-0.5 * 2)
        0.6321
    """
    check_grid("march_rays_inference", grid)
    check_steps("march_rays_inference", steps)
    if n_steps < 1 or max_candidates < 1:
        raise ValueError(f"march_rays_inference: need n_steps, max_candidates >= 1, got {n_steps}, {max_candidates}")
    return run("march_rays_inference", rays_o, rays_d, t, t_far, alive, *grid, *steps, n_steps, max_candidates)


@public_op
def composite_rays_inference(
    sigmas: Float[Tensor, "a k"],
    rgbs: Float[Tensor, "a k 3"],
    t_starts: Float[Tensor, "a k"],
    t_ends: Float[Tensor, "a k"],
    alive: Int[Tensor, " a"],
    t: Float[Tensor, " n"],
    t_far: Float[Tensor, " n"],
    image: Float[Tensor, "n 3"],
    depth: Float[Tensor, " n"],
    acc: Float[Tensor, " n"],
    trans: Float[Tensor, " n"],
    t_thresh: float = 1e-4,
) -> Int[Tensor, " a2"]:
    """Composite the samples of :func:`march_rays_inference` front to back into the per-ray render state.

    Each sample is weighted like in :func:`composite_rays_train` (``w = T (1 - exp(-sigma dt))``, nothing once the
    transmittance ``T`` is below ``t_thresh``) and added to its ray's colour, depth (weighted midpoint ``t``) and
    accumulation; slots with ``t_end <= t_start`` are padding. Not differentiable (rendering only).

    Args:
        sigmas, rgbs: the field at the sample midpoints, one row per ray of ``alive``.
        t_starts, t_ends: the samples, from :func:`march_rays_inference`.
        alive: the rays of the rows (unique).
        t, t_far: each ray's resume point (as advanced by :func:`march_rays_inference`) and end.
        image, depth, acc, trans: per-ray render state, updated in place at the rows ``alive``; start from zeros
            and ``trans = 1``.
        t_thresh: transmittance below which a ray stops.

    Returns:
        The rays of ``alive`` still alive (``trans >= t_thresh`` and ``t < t_far``), in their order.

    Example:
        >>> alive = torch.tensor([0, 1])
        >>> t, t_far = torch.tensor([1.0, 1.0]), torch.tensor([2.0, 1.0])  # ray 1 has no samples left
        >>> image, depth, acc, trans = torch.zeros(2, 3), torch.zeros(2), torch.zeros(2), torch.ones(2)
        >>> t0, t1 = torch.tensor([[0.0, 0.5], [0, 0]]), torch.tensor([[0.5, 1.0], [0, 0]])
        >>> composite_rays_inference(torch.ones(2, 2), torch.ones(2, 2, 3), t0, t1, alive, t, t_far,
        ...                          image, depth, acc, trans)
        tensor([0])
        >>> acc
        tensor([0.6321, 0.0000])
    """
    return run("composite_rays_inference", sigmas, rgbs, t_starts, t_ends, alive, t, t_far, image, depth, acc, trans,
               t_thresh)  # fmt: skip
