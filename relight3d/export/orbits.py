"""View directions around a target, for generated camera paths and mesh previews, on :mod:`relight3d.geometry`.

:func:`relight3d.geometry.orbit_positions` places azimuth and elevation in relight3d's Z-up world (azimuth 0 at -Y,
counter-clockwise seen from above). :func:`orbit_directions` turns that frame so its up is any given world up, keeping
azimuth 0 as close to -Y as the up allows (at +Z if the up is along Y), so the default +Z up changes nothing.
"""

from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from relight3d.geometry import orbit_positions

Angles = Union[float, Tensor]


def up_frame(up: Union[Tensor, Sequence[float]]) -> Tuple[Float[Tensor, "3"], Float[Tensor, "3"], Float[Tensor, "3"]]:
    """The world axes that the Z-up frame's x, y and z map to for world up ``up``: ``(x, y, z)`` unit vectors, with
    ``z`` the normalised ``up`` and ``-y`` the direction of azimuth 0 (-Y projected off ``up``; +Z if ``up`` is along
    Y).

    Example:
        >>> torch.equal(torch.stack(up_frame((0.0, 0.0, 1.0))).abs(), torch.eye(3))
        True
    """
    up_t = F.normalize(torch.as_tensor(up, dtype=torch.float32), dim=0)
    ref = torch.tensor([0.0, -1.0, 0.0]) if abs(float(up_t[1])) < 0.9 else torch.tensor([0.0, 0.0, 1.0])
    front = F.normalize(ref - (ref @ up_t) * up_t, dim=0)  # azimuth 0
    return torch.linalg.cross(up_t, front), -front, up_t


def orbit_directions(
    azimuth_deg: Angles, elevation_deg: Angles, up: Union[Tensor, Sequence[float]] = (0.0, 0.0, 1.0)
) -> Float[Tensor, "*n 3"]:
    """Unit vectors from a target towards cameras at ``azimuth_deg`` / ``elevation_deg`` (broadcast together) for
    world up ``up``; with the default +Z up they are :func:`relight3d.geometry.orbit_positions` at radius 1."""
    p = orbit_positions(1.0, elevation_deg, azimuth_deg)
    x, y, z = up_frame(up)
    return p[..., 0:1] * x + p[..., 1:2] * y + p[..., 2:3] * z


__all__ = ["orbit_directions", "up_frame"]
