"""A cascaded occupancy grid that skips empty space while marching."""

from __future__ import annotations

from typing import Callable

import torch
from jaxtyping import Float
from torch import Tensor, nn

from relight3d.ops.march_inputs import PackedOccupancy
from relight3d.ops.ray_marching import (
    occupancy_cell_positions,
    occupancy_grid_update,
    occupancy_lookup,
    pack_bitfield,
    unpack_bitfield,
)


class OccupancyGrid(nn.Module):
    """Cascaded occupancy grid (instant-ngp style) kept as an EMA of opacity, thresholded into a bitfield.

    The grid stores, per cell, an exponential moving maximum of ``sigma * step_size`` sampled at jittered positions.
    Cells above ``min(mean, threshold)`` are occupied. Everything is a buffer, so checkpoints carry it.

    Args:
        aabb: box of cascade 0 ``[xmin, ymin, zmin, xmax, ymax, zmax]``.
        res: cells per side (even, at most 1024).
        n_cascades: number of cascades; cascade ``c`` covers the box scaled by ``2**c``.
        decay: EMA decay per update.
        threshold: opacity ``sigma * step_size`` above which a cell is occupied.
        warmup_updates: updates that visit every cell before switching to random subsets.
    """

    def __init__(
        self,
        aabb: Float[Tensor, "6"],
        res: int = 128,
        n_cascades: int = 1,
        decay: float = 0.95,
        threshold: float = 0.01,
        warmup_updates: int = 16,
    ) -> None:
        super().__init__()
        if res % 2 or res > 1024:
            raise ValueError(f"OccupancyGrid: res must be even and at most 1024, got {res}")
        self.res = res
        self.n_cascades = n_cascades
        self.decay = decay
        self.threshold = threshold
        self.warmup_updates = warmup_updates
        n_cells = n_cascades * res**3
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).clone())
        self.register_buffer("density", torch.zeros(n_cascades, res**3))
        self.register_buffer("bitfield", torch.full((n_cells // 8,), 255, dtype=torch.uint8))
        self.register_buffer("n_updates", torch.zeros((), dtype=torch.long))

    @property
    def n_cells(self) -> int:
        return self.n_cascades * self.res**3

    def occupied_fraction(self) -> float:
        """Fraction of cells currently marked occupied."""
        return float(unpack_bitfield(self.bitfield).float().mean())

    @property
    def packed(self) -> PackedOccupancy:
        """The current bitfield with the grid's layout, as the marching ops take it (it shares the buffers)."""
        return PackedOccupancy(self.bitfield, self.aabb, self.n_cascades, self.res)

    def is_occupied(self, positions: Float[Tensor, "n 3"]) -> Tensor:
        """Occupancy of the cells holding ``positions``."""
        return occupancy_lookup(positions, self.packed)

    def occupied_aabb(self) -> Float[Tensor, "6"]:
        """Tight box around the occupied cells of cascade 0 (the whole box if none is occupied)."""
        return self._cells_aabb(unpack_bitfield(self.bitfield)[: self.res**3])

    def uncarved_aabb(self) -> Float[Tensor, "6"]:
        """Box around the cells of cascade 0 that space carving kept (the visual hull; the whole box if uncarved)."""
        return self._cells_aabb(self.density[0] >= 0)

    @property
    def carved(self) -> bool:
        """Whether :meth:`carve` removed any cell."""
        return bool((self.density < 0).any())

    def _cells_aabb(self, occ: Tensor) -> Float[Tensor, "6"]:
        if not bool(occ.any()):
            return self.aabb.clone()
        idx = torch.nonzero(occ)[:, 0]
        lo = occupancy_cell_positions(idx, self.aabb, self.res, torch.zeros(idx.shape[0], 3, device=idx.device))
        hi = occupancy_cell_positions(idx, self.aabb, self.res, torch.ones(idx.shape[0], 3, device=idx.device))
        return torch.cat([lo.amin(0), hi.amax(0)])

    @torch.no_grad()
    def update(
        self,
        density_fn: Callable[[Tensor], Tensor],
        step_size: float,
        chunk: int = 1 << 16,
        generator: torch.Generator | None = None,
    ) -> None:
        """Re-evaluate ``density_fn`` at jittered cell positions and refresh the bitfield.

        During warm-up every cell is visited; afterwards a random quarter of the cells plus as many occupied cells.
        """
        device = self.density.device
        visible = torch.nonzero(self.density.reshape(-1) >= 0)[:, 0]  # carved cells (negative) are never visited
        if visible.numel() == 0:
            return
        if int(self.n_updates) < self.warmup_updates:
            indices = visible
        else:
            n = max(visible.numel() // 4, 1)
            rand = visible[torch.randint(0, visible.numel(), (n,), device=device, generator=generator)]
            occ = torch.nonzero(unpack_bitfield(self.bitfield))[:, 0]
            if occ.numel() > 0:
                pick = torch.randint(0, occ.numel(), (min(n, occ.numel()),), device=device, generator=generator)
                rand = torch.cat([rand, occ[pick]])
            indices = rand
        jitter = torch.rand(indices.shape[0], 3, device=device, generator=generator)
        values = torch.empty(indices.shape[0], device=device)
        for s in range(0, indices.shape[0], chunk):
            pos = occupancy_cell_positions(indices[s : s + chunk], self.aabb, self.res, jitter[s : s + chunk])
            values[s : s + chunk] = density_fn(pos).reshape(-1).float() * step_size
        self.density.copy_(occupancy_grid_update(self.density, indices, values, self.decay))
        # The threshold is the mean over *all* cells, carved ones counting as empty: averaging over the uncarved
        # cells only (the visual hull, mostly object) raised it, so that thin parts still faint early in training
        # (an armadillo's feet) dropped out of the grid, were never sampled again and never formed.
        thresh = min(float(self.density.clamp_min(0.0).mean()), self.threshold)
        self.bitfield.copy_(pack_bitfield(self.density, thresh))
        self.n_updates += 1

    @torch.no_grad()
    def carve(
        self,
        world_to_pixel: Float[Tensor, "v 3 4"],
        masks: Float[Tensor, "v h w"],
        dilate: int = 2,
        chunk_views: int = 8,
    ) -> float:
        """Space carving: mark cells outside the visual hull of the masks as never occupied.

        A cell is carved when its centre projects inside the image of some view and onto background there
        (``mask == 0`` after dilating the masks by ``dilate`` pixels), or when no view sees it at all. Carved cells
        are stored as negative density: they are skipped by updates and never become occupied. Returns the fraction
        of cells carved.

        Args:
            world_to_pixel: per view, the 3x4 matrix taking homogeneous world points to ``(u*z, v*z, z)`` with ``z``
                the depth in front of the camera and ``(u, v)`` continuous pixel coordinates.
            masks: per view, the object mask (alpha) in [0, 1].
        """
        device = self.density.device
        if dilate > 0:
            k = 2 * dilate + 1
            masks = torch.nn.functional.max_pool2d(masks[:, None].float(), k, stride=1, padding=dilate)[:, 0]
        fg = masks > 0
        h, w = fg.shape[1:]
        idx = torch.arange(self.n_cells, device=device)
        centers = occupancy_cell_positions(idx, self.aabb, self.res)
        homog = torch.cat([centers, torch.ones_like(centers[:, :1])], -1)
        carved = torch.zeros(self.n_cells, dtype=torch.bool, device=device)
        seen = torch.zeros(self.n_cells, dtype=torch.bool, device=device)
        for s in range(0, world_to_pixel.shape[0], chunk_views):
            for v in range(s, min(s + chunk_views, world_to_pixel.shape[0])):
                p = homog @ world_to_pixel[v].T
                z = p[:, 2]
                u = p[:, 0] / z.clamp_min(1e-6)
                vv = p[:, 1] / z.clamp_min(1e-6)
                inside = (z > 0) & (u >= 0) & (u < w) & (vv >= 0) & (vv < h)
                ui = u.long().clamp(0, w - 1)
                vi = vv.long().clamp(0, h - 1)
                carved |= inside & ~fg[v][vi, ui]
                seen |= inside
        carved |= ~seen
        flat = self.density.view(-1)
        flat[carved] = -1.0
        # Until the next update, every cell that survived carving counts as occupied.
        self.bitfield.copy_(pack_bitfield(self.density, -0.5))
        return float(carved.float().mean())

    def mark_all_occupied(self) -> None:
        """Reset the bitfield to fully occupied (e.g. after the geometry changed drastically)."""
        self.bitfield.fill_(255)
