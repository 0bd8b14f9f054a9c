"""The box to mesh and the density level of the surface, for :mod:`relight3d.export.mesh`.

* :func:`occupied_box`: the occupancy grid's occupied cells within the field's box.
* :func:`surface_density_threshold` (the ``"opacity"`` rule): the median density at which rays from outside reach
  50 % opacity.
* :func:`mask_calibrated_threshold` (the ``"masks"`` rule): the level whose iso-surface silhouettes best match the
  training images' alpha masks, on rays from :func:`training_silhouettes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor, nn

from relight3d.errors import DataError

DensityFn = Callable[[Tensor], Tensor]
"""A field's density: world points ``[n, 3]`` -> densities ``[n]`` (or ``[n, 1]``)."""


class NoSurfaceError(DataError):
    """The field has no surface at the requested threshold (the message gives the density range observed)."""


def occupied_box(model: nn.Module) -> Float[Tensor, "6"]:
    """The box to mesh: the occupancy grid's occupied cells within the field's box (the field's box if none)."""
    field_box = model.field.aabb.detach().float()
    occupancy = getattr(model, "occupancy", None)
    if occupancy is None:
        return field_box.clone()
    occ = occupancy.occupied_aabb().to(field_box)
    lo, hi = torch.maximum(occ[:3], field_box[:3]), torch.minimum(occ[3:], field_box[3:])
    if bool((hi <= lo).any()):
        return field_box.clone()
    return torch.cat([lo, hi])


def _ray_box(origins: Tensor, directions: Tensor, lo: Tensor, hi: Tensor) -> Tuple[Tensor, Tensor]:
    inv = 1.0 / torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    t0, t1 = (lo - origins) * inv, (hi - origins) * inv
    return torch.minimum(t0, t1).amax(-1).clamp_min(0.0), torch.maximum(t0, t1).amin(-1)


@torch.no_grad()
def surface_density_threshold(
    density_fn: DensityFn,
    box: Float[Tensor, "6"],
    n_rays: int = 2048,
    n_samples: int = 512,
    seed: int = 0,
) -> float:
    """The density at which volume rendering puts the surface: the median, over rays from outside the box that
    become opaque, of the density where their transmittance falls to 1/2.

    Rays start on a sphere twice the box's circumradius and aim at uniform points in the box, so every side is seen.

    Raises:
        NoSurfaceError: fewer than 16 rays ever reach 50 % opacity (an empty or nearly transparent field).

    Example:
        >>> box = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
        >>> level = surface_density_threshold(lambda p: 100.0 * torch.sigmoid(40.0 * (0.5 - p.norm(dim=-1))), box)
        >>> 0.0 < level < 100.0
        True
    """
    device = box.device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    lo, hi = box[:3], box[3:]
    center, radius = (lo + hi) / 2, float((hi - lo).norm()) / 2
    dirs_out = torch.nn.functional.normalize(torch.randn(n_rays, 3, generator=gen), dim=-1).to(device)
    targets = lo + (hi - lo) * torch.rand(n_rays, 3, generator=gen).to(device)
    origins = center + dirs_out * 2.0 * radius
    directions = torch.nn.functional.normalize(targets - origins, dim=-1)
    t_near, t_far = _ray_box(origins, directions, lo, hi)
    u = (torch.arange(n_samples, device=device, dtype=torch.float32) + 0.5) / n_samples
    dt = ((t_far - t_near).clamp_min(0.0) / n_samples)[:, None]
    t = t_near[:, None] + (t_far - t_near).clamp_min(0.0)[:, None] * u[None]
    sigma = torch.empty(n_rays, n_samples, device=device)
    rows = max(1, (1 << 18) // n_samples)
    for s in range(0, n_rays, rows):
        pos = origins[s : s + rows, None] + directions[s : s + rows, None] * t[s : s + rows, :, None]
        sigma[s : s + rows] = density_fn(pos.reshape(-1, 3)).reshape(-1, n_samples).float()
    tau = torch.cumsum(sigma * dt, dim=1)
    half = math.log(2.0)
    hit = tau[:, -1] >= half
    if int(hit.sum()) < 16:
        raise NoSurfaceError(
            "density field",
            f"no surface: only {int(hit.sum())} of {n_rays} rays reach 50% opacity "
            f"(density range {float(sigma.min()):.4g} .. {float(sigma.max()):.4g}); is the model trained?",
        )
    tau, sigma = tau[hit], sigma[hit]
    k = torch.searchsorted(tau, torch.full((tau.shape[0], 1), half, device=device)).clamp_max(n_samples - 1)
    k = k[:, 0]
    rows_idx = torch.arange(tau.shape[0], device=device)
    tau_before = torch.where(k > 0, tau[rows_idx, (k - 1).clamp_min(0)], torch.zeros_like(k, dtype=tau.dtype))
    sigma_before = torch.where(k > 0, sigma[rows_idx, (k - 1).clamp_min(0)], torch.zeros_like(k, dtype=sigma.dtype))
    frac = ((half - tau_before) / (tau[rows_idx, k] - tau_before).clamp_min(1e-12)).clamp(0.0, 1.0)
    crossing = sigma_before + frac * (sigma[rows_idx, k] - sigma_before)
    return float(crossing.median())


@dataclass
class Silhouettes:
    """Rays through pixels of training views, and whether each pixel is inside the object's mask."""

    origins: Float[Tensor, "n 3"]
    """Ray origins (camera centres)."""
    directions: Float[Tensor, "n 3"]
    """Unit ray directions through the pixel centres."""
    inside: Tensor
    """Bool ``[n]``: the pixel's alpha is above 1/2."""


def silhouettes_from_views(
    cameras: Any, alphas: Float[Tensor, "v h w"], rays_per_view: int = 2048, seed: int = 0
) -> Silhouettes:
    """Sample rays of each view: half on the mask's edge (where the threshold matters), half anywhere.

    Args:
        cameras: nerfstudio Cameras, one per alpha mask.
        alphas: masks in [0, 1] at the cameras' resolution.
    """
    gen = torch.Generator().manual_seed(seed)
    origins, directions, inside = [], [], []
    for i in range(alphas.shape[0]):
        mask = alphas[i].float() > 0.5
        m = mask.float()[None, None]
        edge = (torch.nn.functional.max_pool2d(m, 3, 1, 1) != -torch.nn.functional.max_pool2d(-m, 3, 1, 1))[0, 0]
        edge_idx = torch.nonzero(edge.reshape(-1))[:, 0]
        n_edge = min(rays_per_view // 2, edge_idx.numel())
        pick_edge = edge_idx[torch.randperm(edge_idx.numel(), generator=gen)[:n_edge]]
        pick_any = torch.randint(0, mask.numel(), (rays_per_view - n_edge,), generator=gen)
        pick = torch.cat([pick_edge, pick_any])
        bundle = cameras[i : i + 1].generate_rays(camera_indices=0, keep_shape=True)
        origins.append(bundle.origins.reshape(-1, 3)[pick].float())
        directions.append(bundle.directions.reshape(-1, 3)[pick].float())
        inside.append(mask.reshape(-1)[pick])
    return Silhouettes(torch.cat(origins), torch.cat(directions), torch.cat(inside))


def training_silhouettes(
    pipeline: Any, max_views: int = 16, rays_per_view: int = 2048, seed: int = 0
) -> Optional[Silhouettes]:
    """Silhouette rays from up to ``max_views`` evenly spread training views of a pipeline, or None where the
    training images have no alpha channel (or the pipeline has no training dataset)."""
    dataset = getattr(getattr(pipeline, "datamanager", None), "train_dataset", None)
    if dataset is None or len(dataset) == 0:
        return None
    indices = np.unique(np.linspace(0, len(dataset) - 1, min(max_views, len(dataset))).round().astype(int))
    alphas = []
    for i in indices:
        image = dataset.get_numpy_image(int(i))  # raw pixels: the alpha channel survives any alpha_color setting
        if image.ndim != 3 or image.shape[-1] != 4:
            return None
        alphas.append(torch.from_numpy(np.ascontiguousarray(image[..., 3])).float() / 255.0)
    cameras = dataset.cameras[torch.from_numpy(indices)]
    if any(a.shape != alphas[0].shape for a in alphas):
        return None
    return silhouettes_from_views(cameras, torch.stack(alphas), rays_per_view, seed)


@torch.no_grad()
def mask_calibrated_threshold(
    density_fn: DensityFn,
    box: Float[Tensor, "6"],
    silhouettes: Silhouettes,
    n_samples: int = 256,
    seed: int = 0,
) -> Tuple[float, float]:
    """The density level whose iso-surface silhouettes best match the masks, and the IoU it reaches.

    A ray sees the iso-surface ``{density > t}`` exactly when the largest density along it exceeds ``t``. So with
    ``m`` the per-ray maximum (sampled with jitter inside ``box``), the predicted mask at level ``t`` is ``m > t``;
    sorting ``m`` gives the IoU with the true masks at every level at once, and the best level is taken halfway (in
    log scale) between the two maxima that bracket it.
    """
    device = box.device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    origins, directions = silhouettes.origins.to(device), silhouettes.directions.to(device)
    inside = silhouettes.inside.to(device)
    t_near, t_far = _ray_box(origins, directions, box[:3], box[3:])
    length = (t_far - t_near).clamp_min(0.0)
    n = origins.shape[0]
    maxima = torch.zeros(n, device=device)
    rows = max(1, (1 << 18) // n_samples)
    for s in range(0, n, rows):
        e = min(s + rows, n)
        u = (torch.arange(n_samples, dtype=torch.float32) + torch.rand(e - s, n_samples, generator=gen)) / n_samples
        t = t_near[s:e, None] + length[s:e, None] * u.to(device)
        pos = origins[s:e, None] + directions[s:e, None] * t[..., None]
        sigma = density_fn(pos.reshape(-1, 3)).reshape(e - s, n_samples).float()
        maxima[s:e] = torch.where(length[s:e] > 0, sigma.amax(1), torch.zeros_like(length[s:e]))
    order = torch.argsort(maxima, descending=True)
    m_sorted, gt_sorted = maxima[order], inside[order].float()
    true_positives = torch.cumsum(gt_sorted, 0)  # predicted inside = the k + 1 largest maxima
    predicted = torch.arange(1, n + 1, device=device, dtype=torch.float32)
    iou = true_positives / (predicted + gt_sorted.sum() - true_positives)
    valid = m_sorted > 0
    if not bool(valid.any()):
        return 0.0, 0.0
    iou = torch.where(valid, iou, torch.full_like(iou, -1.0))
    k = int(torch.argmax(iou))
    upper = float(m_sorted[k])
    lower = float(m_sorted[k + 1]) if k + 1 < n else 0.0
    threshold = math.sqrt(upper * lower) if lower > 0 else upper / 2.0
    return threshold, float(iou[k])
