"""Surface normals for relighting from a frozen field's G-buffers: from rendered depth, and fused across views.

The density gradient of a grid field is blocky at cell scale, and normals from rendered depth are noisy along each
ray; both are noisy at pixel scale. :func:`normals_from_points` gives the depth normals of one view;
:func:`fuse_view_normals` averages per-pixel normals of many views of the same object in a voxel grid, so that every
surface point gets the mean of what all the views that see it estimated (view-dependent noise averages out).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor


def normals_from_points(
    points: Float[Tensor, "b h w 3"], directions: Float[Tensor, "b h w 3"], masks: Float[Tensor, "b h w 1"]
) -> Float[Tensor, "b h w 3"]:
    """Unit normals of a rendered surface from its per-pixel 3D points (``origin + depth * direction``).

    Per pixel, the horizontal and vertical tangents are the differences to the neighbouring points; of the two
    neighbours on each axis the closer one in 3D is used (a one-sided difference), so a depth edge does not tilt the
    normal of the surface in front of it. The normal is the cross product of the tangents, turned to face the
    camera (against ``directions``). Neighbours outside the mask are not used; where no neighbour on an axis is in
    the mask the normal is undefined and falls back to ``-directions``.
    """
    inside = (masks > 0.5).to(points.dtype)
    far = torch.finfo(points.dtype).max / 4

    def tangent(axis: int) -> Tensor:
        step = torch.diff(points, dim=axis)  # p[i + 1] - p[i]
        n = step.shape[axis]
        valid = torch.narrow(inside, axis, 1, n) * torch.narrow(inside, axis, 0, n)
        zero_step = torch.zeros_like(torch.narrow(points, axis, 0, 1))
        zero_valid = torch.zeros_like(torch.narrow(inside, axis, 0, 1))
        candidates = []
        for shifted, ok in (
            (torch.cat([step, zero_step], dim=axis), torch.cat([valid, zero_valid], dim=axis)),  # to the next pixel
            (torch.cat([zero_step, step], dim=axis), torch.cat([zero_valid, valid], dim=axis)),  # from the previous one
        ):
            length = torch.where(ok > 0, shifted.norm(dim=-1, keepdim=True), torch.full_like(ok, far))
            candidates.append((shifted, length))
        (ahead, len_ahead), (behind, len_behind) = candidates
        t = torch.where(len_ahead <= len_behind, ahead, behind)
        return torch.where(torch.minimum(len_ahead, len_behind) < far, t, torch.zeros_like(t))

    du, dv = tangent(2), tangent(1)  # along image columns (x) and rows (y)
    normals = torch.cross(du, dv, dim=-1)
    normals = torch.where((normals * directions).sum(-1, keepdim=True) > 0, -normals, normals)
    length = normals.norm(dim=-1, keepdim=True)
    fallback = -F.normalize(directions, dim=-1, eps=1e-8)
    return torch.where(length > 1e-12, normals / length.clamp_min(1e-12), fallback)


def density_and_depth_normals(
    normals: Float[Tensor, "b h w 3"],
    points: Float[Tensor, "b h w 3"],
    directions: Float[Tensor, "b h w 3"],
    masks: Float[Tensor, "b h w 1"],
) -> Float[Tensor, "b h w 3"]:
    """The normalised sum of the density-gradient ``normals`` and the depth normals (:func:`normals_from_points`)
    inside the masks; the normalised ``normals`` outside. The two err differently (blocky grid gradients, depth noise
    along the ray), so their sum is closer to the surface than either."""
    density = F.normalize(normals.float(), dim=-1, eps=1e-8)
    from_depth = normals_from_points(points.float(), directions.float(), masks.float())
    both = F.normalize(density + from_depth, dim=-1, eps=1e-8)
    return torch.where(masks > 0.5, both, density)


def fuse_view_normals(
    normals: Float[Tensor, "b h w 3"],
    points: Float[Tensor, "b h w 3"],
    masks: Float[Tensor, "b h w 1"],
    aabb: Float[Tensor, "6"],
    resolution: int = 128,
) -> Float[Tensor, "b h w 3"]:
    """Per-pixel normals averaged over all the given views: every object pixel's unit normal is splatted with
    trilinear weights into a ``resolution^3`` grid over ``aabb`` (at its 3D point), and each pixel reads the grid
    back, trilinearly, at its point. A point seen by many views gets the mean of their normals; the spatial blur is
    one cell. Pixels outside the masks keep their input normals."""
    inside = masks[..., 0] > 0.5
    lo, hi = aabb[:3].to(points), aabb[3:].to(points)
    pts = points[inside]
    unit = F.normalize(normals[inside].to(points), dim=-1, eps=1e-8)
    coords = (pts - lo) / (hi - lo) * resolution - 0.5  # cell centres at integer coordinates
    base = torch.floor(coords).long()
    frac = coords - base
    grid = torch.zeros(resolution**3, 3, dtype=points.dtype, device=points.device)
    for corner in range(8):
        offset = torch.tensor([(corner >> axis) & 1 for axis in range(3)], device=points.device)
        idx = base + offset
        weight = torch.where(offset.bool(), frac, 1.0 - frac).prod(-1)
        ok = ((idx >= 0) & (idx < resolution)).all(-1)
        linear = (idx[:, 2] * resolution + idx[:, 1]) * resolution + idx[:, 0]
        grid.index_add_(0, linear[ok], unit[ok] * weight[ok, None])
    volume = grid.view(resolution, resolution, resolution, 3).permute(3, 0, 1, 2)[None]  # [1, 3, z, y, x]
    query = ((pts - lo) / (hi - lo) * 2.0 - 1.0).view(1, -1, 1, 1, 3)
    summed = F.grid_sample(volume, query, align_corners=False).view(3, -1).T
    out = normals.clone()
    out[inside] = torch.where(summed.norm(dim=-1, keepdim=True) > 1e-8, F.normalize(summed, dim=-1, eps=1e-8), unit)
    return out
