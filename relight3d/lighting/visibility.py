"""Light visibility (cast shadows) from a density field: transmittance towards the directions of a coarse map.

The physical relighting prior shades with an environment map. Without visibility, a point lit by the source light's
sun but shadowed under the target light (or the reverse) gets the wrong brightness. This module computes, for many
surface points ``x`` and every direction ``w_k`` of a coarse equirectangular grid (the pixel centres of an
``h x 2h`` map, :func:`relight3d.lighting.envmap_directions`), the transmittance

    T(x, w_k) = exp(-tau),    tau = integral from delta to infinity of sigma(x + s w_k) ds,

with ``sigma`` the field's density and ``delta`` a short offset that steps off the surface the point lies on.

**How.** Marching every (point, direction) pair separately would cost ``points x directions x steps`` lookups
(about 10^10 for 100 views of 128 px). Instead, per direction, the density is resampled once into a grid whose
third axis runs along ``w_k`` and which covers the field's bounding sphere; a reversed cumulative sum along that axis
gives ``tau`` at every grid point at once; each point then reads its ``tau`` by one trilinear lookup. The cost is
``directions x (grid + points)`` lookups, and memory holds one direction's grid at a time.

**Accuracy.** The density is first sampled on a ``resolution^3`` grid over the box (cell centres), so shadows are
as sharp as that grid (a cell is ``box / resolution``); light directions are as fine as the coarse map (12 rows:
15 degrees). Both are settings of the physical prior.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from relight3d.lighting.equirect import envmap_directions, envmap_solid_angles, resize_envmap

DensityFn = Callable[[Float[Tensor, "n 3"]], Float[Tensor, " n"]]


def visibility_directions(height: int, device: Optional[torch.device] = None) -> Float[Tensor, "k 3"]:
    """The ``k = height * 2 height`` light directions: pixel centres of an ``height x 2 height`` map, row-major."""
    return envmap_directions(height, 2 * height, device=device).reshape(-1, 3)


def sample_density_volume(
    density: DensityFn, aabb: Float[Tensor, "6"], resolution: int, chunk: int = 1 << 18
) -> Float[Tensor, "r r r"]:
    """Density at the cell centres of a ``resolution^3`` grid over ``aabb``, indexed ``[z, y, x]`` (grid_sample's
    ``[D, H, W]`` order)."""
    lo, hi = aabb[:3].float(), aabb[3:].float()
    axes = [
        lo[i] + (torch.arange(resolution, device=aabb.device) + 0.5) * (hi[i] - lo[i]) / resolution for i in range(3)
    ]
    zz, yy, xx = torch.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    points = torch.stack([xx, yy, zz], dim=-1).reshape(-1, 3)
    with torch.no_grad():
        sigma = torch.cat([density(points[i : i + chunk]).float().reshape(-1) for i in range(0, len(points), chunk)])
    return sigma.reshape(resolution, resolution, resolution)


def _frame_along(direction: Float[Tensor, "3"]) -> Float[Tensor, "3 3"]:
    """A rotation whose third column is ``direction`` (the columns are the frame's axes in world coordinates)."""
    w = F.normalize(direction, dim=0)
    helper = torch.tensor([1.0, 0.0, 0.0]) if abs(float(w[2])) > 0.9 else torch.tensor([0.0, 0.0, 1.0])
    u = F.normalize(torch.linalg.cross(helper.to(w), w), dim=0)
    v = torch.linalg.cross(w, u)
    return torch.stack([u, v, w], dim=1)


def transmittance_towards(
    volume: Float[Tensor, "r r r"],
    aabb: Float[Tensor, "6"],
    points: Float[Tensor, "n 3"],
    directions: Float[Tensor, "k 3"],
    offset: Optional[float] = None,
    chunk: int = 1 << 20,
) -> Float[Tensor, "n k"]:
    """Transmittance from each point towards each direction through a density volume over ``aabb``.

    Args:
        volume: density at cell centres, ``[z, y, x]`` (:func:`sample_density_volume`); zero outside the box.
        aabb: the volume's box ``(x0, y0, z0, x1, y1, z1)``.
        points: query points (already moved off the surface, e.g. along the normal).
        directions: unit directions towards the light.
        offset: distance along each direction before density counts (default: 1.5 cells).

    Returns:
        ``exp(-integral of sigma)`` along each ray, in [0, 1].
    """
    res = volume.shape[0]
    lo, hi = aabb[:3].float(), aabb[3:].float()
    extent = hi - lo
    cell = float(extent.max()) / res
    offset = 1.5 * cell if offset is None else offset
    center = (lo + hi) / 2
    radius = float(extent.norm()) / 2
    n_rot = int(math.ceil(2 * radius / cell))
    half = n_rot * cell / 2
    ticks = (torch.arange(n_rot, device=volume.device, dtype=torch.float32) + 0.5) * cell - half
    ww, vv, uu = torch.meshgrid(ticks, ticks, ticks, indexing="ij")  # [w, v, u]
    local = torch.stack([uu, vv, ww], dim=-1).reshape(-1, 3)
    vol5 = volume[None, None].float()
    out = torch.empty(points.shape[0], directions.shape[0], dtype=torch.float32, device=points.device)
    rel = points.float() - center
    for k in range(directions.shape[0]):
        frame = _frame_along(directions[k].float().cpu()).to(volume.device)
        world = local @ frame.T + center
        grid = (world - lo) / extent * 2 - 1
        sigma = torch.cat(
            [
                F.grid_sample(vol5, grid[i : i + chunk].view(1, 1, 1, -1, 3), align_corners=False).reshape(-1)
                for i in range(0, grid.shape[0], chunk)
            ]
        ).reshape(n_rot, n_rot, n_rot)
        # tau from the cell centre w_i onwards = cell * (sigma_i / 2 + sum_{j > i} sigma_j): a reversed cumulative
        # sum along the light direction, less half of the cell's own share.
        tau = (torch.flip(torch.cumsum(torch.flip(sigma, [0]), 0), [0]) - 0.5 * sigma) * cell
        q = rel @ frame.to(rel)  # local (u, v, w) coordinates of the points
        q = q + torch.tensor([0.0, 0.0, offset], device=q.device)
        qgrid = q / half  # [-1, 1] over the rotated grid (align_corners=False: cell centres at the ticks)
        tau_q = F.grid_sample(tau[None, None], qgrid.view(1, 1, 1, -1, 3), align_corners=False, padding_mode="border")
        out[:, k] = torch.exp(-tau_q.reshape(-1))
    return out


def shadow_factor(
    transmittance: Float[Tensor, "*bs k"],
    normals: Float[Tensor, "*bs 3"],
    envmap: Float[Tensor, "h w 3"],
    directions_height: int,
) -> Float[Tensor, "*bs 3"]:
    """Share of the diffuse irradiance that reaches each point: ``sum_k L_k dw_k T_k max(0, n.w_k)`` over the same sum
    without ``T_k``, per colour channel, with ``L`` the map averaged down to ``directions_height x 2 directions_height``
    (power-preserving). 1 where the hemisphere receives no light."""
    coarse = resize_envmap(envmap.float(), directions_height)  # [h, 2h, 3]
    power = (coarse * envmap_solid_angles(*coarse.shape[:2], device=coarse.device)[..., None]).reshape(-1, 3)
    dirs = visibility_directions(directions_height, device=coarse.device)
    power, dirs = power.to(normals), dirs.to(normals)
    cosine = (normals @ dirs.T).clamp_min(0.0)  # [*bs, k]
    lit = cosine @ power  # [*bs, 3]
    shadowed = (cosine * transmittance.to(cosine)) @ power
    return torch.where(lit > 1e-8, shadowed / lit.clamp_min(1e-8), torch.ones_like(lit)).clamp(0.0, 1.0)


def occluded_fraction(
    transmittance: Float[Tensor, "*bs k"], normals: Float[Tensor, "*bs 3"], directions_height: int
) -> Float[Tensor, "*bs 1"]:
    """Cosine-weighted share of the hemisphere around each normal that is blocked: ``sum_k (1 - T_k) max(0, n.w_k)
    dw_k / sum_k max(0, n.w_k) dw_k`` over the ``directions_height x 2 directions_height`` directions. 0 in the open,
    1 when every direction is blocked (the ambient occlusion of the point): one minus :func:`shadow_factor` under a
    uniform light."""
    uniform = torch.ones(directions_height, 2 * directions_height, 3, device=normals.device)
    return 1.0 - shadow_factor(transmittance, normals, uniform, directions_height)[..., :1]
