"""A cascaded occupancy grid that skips empty space while marching."""

from __future__ import annotations

from typing import Callable

import torch
from jaxtyping import Float
from torch import Tensor, nn

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

    def is_occupied(self, positions: Float[Tensor, "n 3"]) -> Tensor:
        """Occupancy of the cells holding ``positions``."""
        return occupancy_lookup(positions, self.bitfield, self.aabb, self.n_cascades, self.res)

    def occupied_aabb(self) -> Float[Tensor, "6"]:
        """Tight box around the occupied cells of cascade 0 (the whole box if none is occupied)."""
        occ = unpack_bitfield(self.bitfield)[: self.res**3]
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
        chunk: int = 1 << 18,
        generator: torch.Generator | None = None,
    ) -> None:
        """Re-evaluate ``density_fn`` at jittered cell positions and refresh the bitfield.

        During warm-up every cell is visited; afterwards a random quarter of the cells plus as many occupied cells.
        """
        device = self.density.device
        if int(self.n_updates) < self.warmup_updates:
            indices = torch.arange(self.n_cells, device=device)
        else:
            n = self.n_cells // 4
            rand = torch.randint(0, self.n_cells, (n,), device=device, generator=generator)
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
        valid = self.density[self.density >= 0]
        thresh = min(float(valid.mean()) if valid.numel() else 0.0, self.threshold)
        self.bitfield.copy_(pack_bitfield(self.density, thresh))
        self.n_updates += 1

    def mark_all_occupied(self) -> None:
        """Reset the bitfield to fully occupied (e.g. after the geometry changed drastically)."""
        self.bitfield.fill_(255)
