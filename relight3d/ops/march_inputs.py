# ruff: noqa: F722, UP037  (jaxtyping shape strings such as "n 3" are not forward references)
"""What the marching ops share, as two small immutable objects: where to sample and how far apart.

* :class:`PackedOccupancy`: the occupancy bitfield with its layout (box, cascades, resolution), which
  :func:`~relight3d.ops.occupancy_lookup`, :func:`~relight3d.ops.march_rays_train` and
  :func:`~relight3d.ops.march_rays_inference` read. :attr:`relight3d.ops.OccupancyGrid.packed` gives the current one
  of a trained grid.
* :class:`StepSchedule`: the cone-stepping schedule ``dt(t) = clamp(t * dt_gamma, dt_min, dt_max)`` of both marchers.

Both are NamedTuples: the public ops check their tensor fields like tensor arguments (:func:`._dispatch.public_op`)
and unpack them, in field order, into the flat arguments of the compiled kernels and of the torch reference.
"""

from __future__ import annotations

from typing import NamedTuple, Union

import torch
from jaxtyping import Float, UInt8
from torch import Tensor


class PackedOccupancy(NamedTuple):
    """A cascaded occupancy grid as the marching ops read it: one bit per cell (see :mod:`._torch_impl`).

    Example:
        >>> from relight3d.ops import occupancy_lookup
        >>> aabb = torch.tensor([-1.0, -1, -1, 1, 1, 1])
        >>> grid = PackedOccupancy(torch.full((16**3 // 8,), 255, dtype=torch.uint8), aabb, n_cascades=1, res=16)
        >>> occupancy_lookup(torch.tensor([[0.0, 0, 0], [1.5, 0, 0]]), grid)
        tensor([ True, False])
    """

    bitfield: UInt8[Tensor, " b"]
    """``n_cascades * res**3 / 8`` bytes; cell ``i`` (``cascade * res**3 + morton``) is bit ``i % 8`` of byte
    ``i // 8``."""
    aabb: Float[Tensor, "6"]
    """Box of cascade 0, ``[xmin, ymin, zmin, xmax, ymax, zmax]``; cascade ``c`` covers it scaled by ``2**c``."""
    n_cascades: int
    """Number of cascades, in ``[1, 30]``."""
    res: int
    """Cells per side of each cascade (even, at most 1024)."""

    def to(self, device: Union[str, torch.device]) -> PackedOccupancy:
        """The same grid with its tensors on ``device``."""
        return self._replace(bitfield=self.bitfield.to(device), aabb=self.aabb.to(device))


class StepSchedule(NamedTuple):
    """Distances between consecutive samples of a ray: ``dt(t) = clamp(t * dt_gamma, dt_min, dt_max)``.

    ``dt_gamma = 0`` gives uniform steps of ``dt_min``; ``dt_gamma > 0`` is cone stepping (steps grow with the
    distance ``t``, for unbounded scenes). The marchers need ``0 < dt_min <= dt_max``.

    Example:
        >>> StepSchedule(0.01, 0.01)  # uniform steps
        StepSchedule(dt_min=0.01, dt_max=0.01, dt_gamma=0.0)
    """

    dt_min: float
    """Smallest step, taken while ``t * dt_gamma < dt_min``."""
    dt_max: float
    """Largest step, taken once ``t * dt_gamma >= dt_max``."""
    dt_gamma: float = 0.0
    """Growth of the step with distance (0 for uniform steps)."""
