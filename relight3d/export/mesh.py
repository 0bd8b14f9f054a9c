"""Meshes from trained relight3d fields: chunked density sampling, marching cubes, cleanup, colours and textures.

The pipeline (:class:`MeshExporter`):

1. **Box.** The occupancy grid's occupied cells (intersected with the field's box), padded so that the outermost
   grid layer lies in empty space. That layer is forced below the threshold, so every surface is closed.
2. **Density grid and marching cubes.** Densities are queried ``chunk_size`` points at a time into a float32 grid
   (4 bytes per sample: 512 MiB at 512^3); voids inside the object that no path from outside reaches, through
   cracks wider than a few cells, are filled (a field trained on views of the outside is often hollow, with a
   cracked shell; about 4 more bytes per sample while filling); PyMCubes then triangulates the grid in
   slabs of ``slab_depth`` z-layers, so its float64 working copy stays small. Slabs share their boundary layer,
   so their vertices coincide there and are merged exactly.
3. **Threshold** (chosen first). A density, or a rule. ``"masks"``: the level whose iso-surface silhouettes best
   match the training images' alpha masks (IoU over rays through training pixels, half of them on the masks'
   edges); this is what makes a briefly trained, soft field give a surface in the right place. ``"opacity"``: the
   median density at which rays from outside reach 50 % opacity (transmittance 1/2). ``"auto"``: ``"masks"`` when
   a pipeline with RGBA training images is given (and its masks are matched with IoU >= 0.5), else ``"opacity"``.
4. **Cleanup** (trimesh): degenerate and duplicate faces removed, vertices merged, the largest components kept,
   consistent outward winding.
5. **Decimation** (optional, open3d quadric decimation) to a target face count.
6. **Colour**: per vertex, a short volume-rendered ray through the surface along the inward normal, using the
   field's own density and colour (so a threshold a little off the peak of the rendering weights still gets the
   colour a camera sees). Optionally a UV texture (:mod:`relight3d.export.texture`).

A field with no surface at the threshold raises :class:`NoSurfaceError` naming the density range it saw, instead of
writing an empty file.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Literal, Optional, Tuple, Type, Union

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor, nn

from relight3d.data.errors import DataError
from relight3d.export.output_paths import check_output_path

MESH_SUFFIXES: Tuple[str, ...] = (".ply", ".obj", ".glb")
"""File formats :func:`export_mesh` writes (by extension)."""
TEXTURE_SUFFIXES: Tuple[str, ...] = (".obj", ".glb")
"""Formats that can carry a UV texture."""

DensityFn = Callable[[Tensor], Tensor]


class NoSurfaceError(DataError):
    """The field has no surface at the requested threshold (the message gives the density range observed)."""


# --- configuration ------------------------------------------------------------------------------------------------
@dataclass
class MeshExportConfig:
    """How a mesh is extracted from a field."""

    _target: Type = field(default_factory=lambda: MeshExporter)
    """Exporter class to instantiate."""
    resolution: int = 256
    """Grid samples along the longest side of the box (voxels are cubes; shorter sides get fewer samples)."""
    threshold: Union[float, Literal["auto", "masks", "opacity"]] = "auto"
    """Density iso-level of the surface, or a rule: 'masks' picks the level whose silhouettes best match the training
    masks (alpha); 'opacity' the median density where rays from outside reach 50 % opacity; 'auto' uses 'masks'
    when the training images have alpha and a pipeline is given, else 'opacity'."""
    mask_views: int = 16
    """Training views used by the 'masks' rule."""
    mask_rays_per_view: int = 1024
    """Rays per view for the 'masks' rule (half of them on the silhouette's edge)."""
    mask_ray_samples: int = 256
    """Density samples per ray for the 'masks' rule."""
    chunk_size: int = 1 << 18
    """Points per density query (bounds the memory of the field's intermediates)."""
    slab_depth: int = 32
    """z-layers triangulated at once (bounds the float64 copy that PyMCubes works on)."""
    fill_cavities: bool = True
    """Fill voids inside the object (empty space unreachable from outside) so they make no inner surfaces."""
    seal_width: int = 2
    """Cracks in the object's shell up to about twice this many grid cells wide count as closed when filling."""
    box_margin_cells: float = 2.0
    """Margin, in grid cells, added around the occupied box before the empty outer layer."""
    keep_components: int = 1
    """Keep this many largest connected components (0 keeps all)."""
    min_component_fraction: float = 0.0
    """Also drop kept components with fewer faces than this fraction of the largest one."""
    target_faces: Optional[int] = None
    """Decimate (open3d quadric decimation) to about this many faces; None keeps all."""
    vertex_colors: bool = True
    """Colour vertices from the field."""
    color_ray_cells: float = 2.0
    """Half-length, in grid cells, of the short ray through the surface used to colour a point."""
    color_ray_samples: int = 8
    """Samples on that ray."""
    texture_size: Optional[int] = None
    """Bake a UV texture of this many pixels per side (needs xatlas; .obj or .glb output); None for no texture."""
    texture_backend: Literal["auto", "nvdiffrast", "torch"] = "auto"
    """UV rasteriser of the bake: nvdiffrast (CUDA), the torch rasteriser, or 'auto' (nvdiffrast on CUDA if it
    loads, else torch)."""
    auto_threshold_rays: int = 2048
    """Rays cast from outside to find the automatic threshold."""
    auto_threshold_samples: int = 512
    """Samples per such ray."""
    progress: bool = True
    """Show progress bars."""
    seed: int = 0
    """Seed of the automatic threshold's random rays."""

    def setup(self) -> "MeshExporter":
        return self._target(self)


# --- the box and the threshold -----------------------------------------------------------------------------------
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


# --- density grid and marching cubes -----------------------------------------------------------------------------
@dataclass
class GridSpec:
    """A regular grid of cubic voxels: ``shape`` samples per axis from ``origin`` with spacing ``step``."""

    origin: np.ndarray
    """World position of sample (0, 0, 0)."""
    step: float
    """Distance between neighbouring samples."""
    shape: Tuple[int, int, int]
    """Samples along x, y, z."""

    @classmethod
    def around(cls, box: Float[Tensor, "6"], resolution: int, margin_cells: float) -> "GridSpec":
        """A grid covering ``box`` plus ``margin_cells`` cells and one empty layer on every side, with
        ``resolution`` samples along the longest side."""
        if resolution < 8:
            raise ValueError(f"mesh resolution must be at least 8, got {resolution}")
        lo, hi = box[:3].double().cpu().numpy(), box[3:].double().cpu().numpy()
        step = float((hi - lo).max()) / (resolution - 1 - 2 * (margin_cells + 1))
        pad = (margin_cells + 1) * step
        lo, hi = lo - pad, hi + pad
        shape = tuple(int(math.ceil((top - bottom) / step - 1e-9)) + 1 for bottom, top in zip(lo, hi))
        center = (lo + hi) / 2
        origin = center - step * (np.array(shape) - 1) / 2
        return cls(origin=origin, step=step, shape=shape)  # type: ignore[arg-type]

    def to_world(self, index_coords: np.ndarray) -> np.ndarray:
        return self.origin[None] + index_coords * self.step


@torch.no_grad()
def sample_density_grid(
    density_fn: DensityFn,
    grid: GridSpec,
    device: Union[str, torch.device] = "cpu",
    chunk_size: int = 1 << 18,
    progress: bool = False,
) -> np.ndarray:
    """Densities at every sample of ``grid`` as a float32 array ``[nx, ny, nz]``, queried ``chunk_size`` points at a
    time (4 bytes per sample: 512 MiB for a 512^3 grid). The outermost layer is set to 0, below any positive
    threshold, so that every iso-surface is closed whatever the field does at the box's faces."""
    from tqdm.auto import tqdm

    nx, ny, nz = grid.shape
    xs = torch.from_numpy(grid.origin[0] + grid.step * np.arange(nx)).float().to(device)
    ys = torch.from_numpy(grid.origin[1] + grid.step * np.arange(ny)).float().to(device)
    zs = torch.from_numpy(grid.origin[2] + grid.step * np.arange(nz)).float().to(device)
    volume = np.empty((nx, ny, nz), dtype=np.float32)
    plane = nx * ny
    layers = max(1, chunk_size // plane)  # whole z-layers per query when they fit, else parts of one layer
    with tqdm(total=nz, desc="density grid", unit="layer", disable=not progress, leave=False) as bar:
        for z0 in range(0, nz, layers):
            z1 = min(z0 + layers, nz)
            values = torch.empty((z1 - z0) * plane, device=device)
            for s in range(0, values.shape[0], chunk_size):
                idx = torch.arange(s, min(s + chunk_size, values.shape[0]), device=device)
                k, rem = idx // plane, idx % plane
                pos = torch.stack([xs[rem // ny], ys[rem % ny], zs[z0 + k]], dim=-1)
                values[s : s + idx.shape[0]] = density_fn(pos).reshape(-1).float()
            volume[:, :, z0:z1] = values.reshape(z1 - z0, nx, ny).permute(1, 2, 0).cpu().numpy()
            bar.update(z1 - z0)
    volume[0], volume[-1], volume[:, 0], volume[:, -1], volume[:, :, 0], volume[:, :, -1] = 0, 0, 0, 0, 0, 0
    return volume


def fill_cavities(volume: np.ndarray, threshold: float, seal_width: int = 2) -> int:
    """Fill, in place, the empty space that is not reachable from outside the object; returns the samples filled.

    A field trained on views of an object's outside is often hollow, with voids inside and thin cracks in its
    shell; marching cubes would turn them into inner surfaces. Here the empty space (density <= threshold) is first
    eroded by ``seal_width`` samples, so that cracks up to about ``2 * seal_width`` samples wide close; the eroded
    region connected to the grid's (empty) outer layer, grown back by ``seal_width``, is the outside. Every other
    empty sample is raised above the threshold. ``seal_width=0`` fills only fully enclosed voids.
    """
    from scipy import ndimage

    empty = volume <= threshold
    cross = ndimage.generate_binary_structure(3, 1)
    core = ndimage.binary_erosion(empty, cross, iterations=seal_width, border_value=1) if seal_width > 0 else empty
    labels, _ = ndimage.label(core)
    del core
    faces = [labels[0], labels[-1], labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]]
    border = np.unique(np.concatenate([f.reshape(-1) for f in faces]))
    outside = np.isin(labels, border[border > 0])
    del labels
    if seal_width > 0:
        outside = ndimage.binary_dilation(outside, cross, iterations=seal_width)
    # The grid's outer layer is outside by construction (the erosion may leave little of it where the object comes
    # close to the grid's faces).
    outside[0], outside[-1], outside[:, 0], outside[:, -1], outside[:, :, 0], outside[:, :, -1] = (True,) * 6
    fill = empty & ~outside
    del outside, empty
    n = int(fill.sum())
    if n:
        volume[fill] = 2.0 * threshold
    return n


def marching_cubes_in_slabs(
    volume: np.ndarray, grid: GridSpec, threshold: float, slab_depth: int = 32, progress: bool = False
) -> Tuple[np.ndarray, np.ndarray]:
    """Iso-surface of a density grid at ``threshold`` with PyMCubes, ``slab_depth`` z-layers at a time (so the
    float64 copy PyMCubes works on stays small). Neighbouring slabs share a layer, so their seam vertices coincide
    exactly and merge. Returns world vertices ``[V, 3]`` and faces ``[F, 3]`` (seams not yet merged)."""
    import mcubes
    from tqdm.auto import tqdm

    if not threshold > 0:
        raise ValueError(f"the density threshold must be positive, got {threshold}")
    nz = volume.shape[2]
    vertices, faces, n_vertices = [], [], 0
    starts = list(range(0, nz - 1, slab_depth))
    for z0 in tqdm(starts, desc="marching cubes", unit="slab", disable=not progress, leave=False):
        z1 = min(z0 + slab_depth, nz - 1)
        v, f = mcubes.marching_cubes(volume[:, :, z0 : z1 + 1].astype(np.float64), float(threshold))
        if len(f):
            v[:, 2] += z0
            vertices.append(grid.to_world(v))
            faces.append(f.astype(np.int64) + n_vertices)
            n_vertices += v.shape[0]
    if not faces:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    return np.concatenate(vertices), np.concatenate(faces)


# --- cleanup ------------------------------------------------------------------------------------------------------
def clean_mesh(mesh: Any, keep_components: int = 1, min_component_fraction: float = 0.0) -> Any:
    """Remove degenerate and duplicate faces, merge vertices, keep the largest components, wind faces consistently.

    Returns a new ``trimesh.Trimesh``; ``metadata['components_found']`` counts the components before selection.
    """
    import trimesh

    mesh = mesh.copy()
    mesh.merge_vertices()
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.update_faces(mesh.unique_faces())
    mesh.remove_unreferenced_vertices()
    parts = mesh.split(only_watertight=False)
    n_found = len(parts)
    if n_found > 1:
        parts = sorted(parts, key=lambda m: len(m.faces), reverse=True)
        if keep_components > 0:
            parts = parts[:keep_components]
        largest = len(parts[0].faces)
        parts = [p for p in parts if len(p.faces) >= min_component_fraction * largest]
        mesh = trimesh.util.concatenate(parts)
    elif n_found == 1:
        mesh = parts[0]
    # Marching cubes already orients faces from high to low density; make the winding consistent across each
    # component (keeping that orientation) and turn the whole mesh outwards if it ended up inside out. Not
    # trimesh's per-body fix_normals: it would turn the inner wall of a hollow object outwards too.
    trimesh.repair.fix_winding(mesh)
    if mesh.is_watertight and mesh.volume < 0:
        mesh.invert()
    mesh.metadata["components_found"] = n_found
    return mesh


def decimate_mesh(mesh: Any, target_faces: int) -> Any:
    """Quadric decimation (open3d) to about ``target_faces`` faces; meshes already that small are returned as is."""
    import open3d as o3d
    import trimesh

    if len(mesh.faces) <= target_faces:
        return mesh
    o3d_mesh = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(np.asarray(mesh.vertices, dtype=np.float64)),
        o3d.utility.Vector3iVector(np.asarray(mesh.faces, dtype=np.int32)),
    )
    simplified = o3d_mesh.simplify_quadric_decimation(target_number_of_triangles=int(target_faces))
    out = trimesh.Trimesh(np.asarray(simplified.vertices), np.asarray(simplified.triangles), process=True)
    out.metadata.update(mesh.metadata)
    return out


# --- colour -------------------------------------------------------------------------------------------------------
@torch.no_grad()
def surface_colors(
    field_: nn.Module,
    points: Float[Tensor, "n 3"],
    normals: Float[Tensor, "n 3"],
    half_length: float,
    n_samples: int = 8,
    chunk_size: int = 1 << 15,
) -> Float[Tensor, "n 3"]:
    """Colour seen at surface points: a short ray from ``point + half_length * normal`` along ``-normal``,
    volume-rendered with the field's density and colour (view direction ``-normal``), normalised by its opacity.

    Points whose short ray stays transparent get the field's colour at the point itself.
    """
    device = points.device
    out = torch.empty(points.shape[0], 3, device=device)
    t = (torch.arange(n_samples, device=device, dtype=torch.float32) + 0.5) / n_samples * 2.0 * half_length
    dt = 2.0 * half_length / n_samples
    rows = max(1, chunk_size // n_samples)
    for s in range(0, points.shape[0], rows):
        p, n = points[s : s + rows].float(), normals[s : s + rows].float()
        d = -n
        pos = (p + n * half_length)[:, None] + d[:, None] * t[None, :, None]
        flat = pos.reshape(-1, 3)
        dirs = d[:, None].expand_as(pos).reshape(-1, 3)
        sigma = field_.density(flat).reshape(-1, n_samples).float()
        rgb = field_.color(field_.appearance_features(flat), dirs).reshape(-1, n_samples, 3).float()
        alpha = 1.0 - torch.exp(-sigma * dt)
        trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha[:, :-1] + 1e-10], 1), 1)
        weights = alpha * trans
        acc = weights.sum(1, keepdim=True)
        composite = (weights[..., None] * rgb).sum(1) / acc.clamp_min(1e-8)
        centre = rgb[:, n_samples // 2]
        out[s : s + rows] = torch.where(acc > 1e-4, composite, centre)
    return out.clamp(0.0, 1.0)


# --- the exporter ----------------------------------------------------------------------------------------------
class MeshExporter:
    """Extracts a cleaned, coloured mesh from an :class:`~relight3d.models.base.OccupancyFieldModel` and writes it."""

    def __init__(self, config: MeshExportConfig) -> None:
        self.config = config

    def resolve_threshold(
        self, model: nn.Module, box: Float[Tensor, "6"], silhouettes: Optional[Silhouettes] = None
    ) -> Tuple[float, Dict[str, Any]]:
        """The configured threshold, or the one a rule picks; with a record of how it was chosen."""
        c = self.config
        rule = c.threshold
        if isinstance(rule, str):
            if rule not in ("auto", "masks", "opacity"):
                raise ValueError(f"unknown threshold rule '{rule}'; use a number, 'auto', 'masks' or 'opacity'")
            info: Dict[str, Any] = {}
            if rule in ("auto", "masks"):
                if silhouettes is None:
                    if rule == "masks":
                        raise ValueError("the 'masks' threshold needs training views with alpha masks")
                else:
                    value, iou = mask_calibrated_threshold(
                        model.field.density, box, silhouettes, c.mask_ray_samples, seed=c.seed
                    )
                    info = {"threshold_mode": "masks", "mask_iou": iou, "mask_rays": int(silhouettes.inside.numel())}
                    if rule == "masks" or (iou >= 0.5 and value > 0):
                        return value, info
                    info = {"masks_rejected_iou": iou}  # the field does not match its masks: fall back
            value = surface_density_threshold(
                model.field.density, box, c.auto_threshold_rays, c.auto_threshold_samples, seed=c.seed
            )
            return value, {**info, "threshold_mode": "opacity"}
        threshold = float(rule)
        if not threshold > 0:
            raise ValueError(f"the density threshold must be positive, got {threshold}")
        return threshold, {"threshold_mode": "fixed"}

    @torch.no_grad()
    def extract(
        self, model: nn.Module, source: Union[str, Path] = "density field", silhouettes: Optional[Silhouettes] = None
    ) -> Any:
        """The mesh of ``model``'s field as a ``trimesh.Trimesh`` (vertex colours included when configured).

        ``silhouettes`` (training rays and masks, see :func:`training_silhouettes`) enable the 'masks' threshold.
        ``mesh.metadata['relight3d']`` records the threshold and how it was chosen, the grid, the density range,
        the components found and timings.

        Raises:
            NoSurfaceError: no surface at the threshold (the message names ``source`` and the density range).
        """
        import trimesh

        c = self.config
        t_start = time.perf_counter()
        was_training = model.training
        model.eval()
        try:
            field_ = model.field
            device = field_.aabb.device
            box = occupied_box(model)
            threshold, threshold_info = self.resolve_threshold(model, box, silhouettes)
            grid = GridSpec.around(box, c.resolution, c.box_margin_cells)
            t_grid = time.perf_counter()
            volume = sample_density_grid(field_.density, grid, device, c.chunk_size, c.progress)
            d_min, d_max = float(volume.min()), float(volume.max())
            filled = fill_cavities(volume, threshold, c.seal_width) if c.fill_cavities else 0
            vertices, faces = marching_cubes_in_slabs(volume, grid, threshold, c.slab_depth, c.progress)
            del volume
            seconds_grid = time.perf_counter() - t_grid
            if len(faces) == 0:
                raise NoSurfaceError(
                    source,
                    f"no surface at density threshold {threshold:.4g}: the density on the {grid.shape} grid ranges "
                    f"from {d_min:.4g} to {d_max:.4g}; choose a threshold inside that range",
                )
            mesh = trimesh.Trimesh(vertices, faces, process=False)
            mesh = clean_mesh(mesh, c.keep_components, c.min_component_fraction)
            components_found = mesh.metadata.get("components_found", 1)
            if c.target_faces is not None:
                mesh = decimate_mesh(mesh, c.target_faces)
                mesh = clean_mesh(mesh, 0)
            if c.vertex_colors or c.texture_size:
                normals = torch.from_numpy(np.array(mesh.vertex_normals, dtype=np.float32)).to(device)
                points = torch.from_numpy(np.array(mesh.vertices, dtype=np.float32)).to(device)
            if c.vertex_colors:
                colors = surface_colors(field_, points, normals, c.color_ray_cells * grid.step, c.color_ray_samples)
                rgba = np.concatenate(
                    [(colors.cpu().numpy() * 255.0 + 0.5).astype(np.uint8), np.full((len(colors), 1), 255, np.uint8)],
                    axis=1,
                )
                mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=rgba)
            if c.texture_size:
                from relight3d.export.texture import bake_texture

                half = c.color_ray_cells * grid.step

                def color_fn(p: Tensor, n: Tensor) -> Tensor:
                    return surface_colors(field_, p, n, half, c.color_ray_samples)

                mesh = bake_texture(mesh, color_fn, c.texture_size, backend=c.texture_backend, device=device)
        finally:
            model.train(was_training)
        mesh.metadata["relight3d"] = {
            "threshold": threshold,
            **threshold_info,
            "grid_shape": list(grid.shape),
            "grid_step": grid.step,
            "box": [float(v) for v in box.cpu()],
            "density_range": [d_min, d_max],
            "components_found": int(components_found),
            "cavity_samples_filled": filled,
            "seconds_grid_and_marching_cubes": seconds_grid,
            "seconds_total": time.perf_counter() - t_start,
        }
        return mesh

    def export(
        self,
        model: nn.Module,
        output: Union[str, Path],
        source: Union[str, Path] = "density field",
        silhouettes: Optional[Silhouettes] = None,
    ) -> Any:
        """Extract the mesh and write it to ``output`` (.ply, .obj or .glb); returns the mesh."""
        out = check_mesh_output(output, textured=bool(self.config.texture_size))
        mesh = self.extract(model, source, silhouettes)
        write_mesh(mesh, out)
        return mesh

    def silhouettes_for(self, model_or_pipeline: nn.Module) -> Optional[Silhouettes]:
        """Training silhouettes of a pipeline when the threshold rule can use them (None for a bare model)."""
        c = self.config
        if c.threshold not in ("auto", "masks") or not hasattr(model_or_pipeline, "datamanager"):
            return None
        return training_silhouettes(model_or_pipeline, c.mask_views, c.mask_rays_per_view, c.seed)


def check_mesh_output(output: Union[str, Path], textured: bool = False) -> Path:
    """Validate a mesh output path before any work (extension, writable folder, texture support)."""
    out = check_output_path(output, MESH_SUFFIXES, "mesh")
    if textured and out.suffix.lower() not in TEXTURE_SUFFIXES:
        raise DataError(out, f"a UV texture needs {' or '.join(TEXTURE_SUFFIXES)} output, not {out.suffix}")
    return out


def write_mesh(mesh: Any, output: Path) -> None:
    """Write ``mesh`` by extension; an .obj with a texture gets its .mtl and .png beside it."""
    suffix = output.suffix.lower()
    if suffix == ".obj":
        import trimesh

        material = getattr(mesh.visual, "material", None)
        if material is not None:
            material.name = output.stem  # the texture is written as <stem>.png beside <stem>.obj / <stem>.mtl
        text, files = trimesh.exchange.obj.export_obj(
            mesh, include_color=True, return_texture=True, mtl_name=output.with_suffix(".mtl").name
        )
        for name, data in files.items():
            (output.parent / name).write_bytes(data)
        output.write_text(text)
    else:
        mesh.export(output)


def _model_of(model_or_pipeline: nn.Module) -> nn.Module:
    return getattr(model_or_pipeline, "model", model_or_pipeline)


def extract_mesh(model: nn.Module, config: Optional[MeshExportConfig] = None, **overrides: Any) -> Any:
    """The mesh of a trained model (or pipeline) as a ``trimesh.Trimesh``.

    Args:
        model: an OccupancyFieldModel, or a pipeline holding one (a pipeline also lends its training masks to the
            'auto' / 'masks' threshold).
        config: extraction settings (default: :class:`MeshExportConfig`).
        **overrides: fields of the config to change, e.g. ``resolution=128``.

    Example:
        >>> config, pipeline = load_trained_pipeline("outputs/.../config.yml")  # doctest: +SKIP
        >>> mesh = extract_mesh(pipeline, resolution=256, target_faces=100_000)  # doctest: +SKIP
    """
    exporter = _with_overrides(config, overrides).setup()
    return exporter.extract(_model_of(model), silhouettes=exporter.silhouettes_for(model))


def export_mesh(
    model: nn.Module,
    output: Union[str, Path],
    config: Optional[MeshExportConfig] = None,
    **overrides: Any,
) -> Any:
    """Extract the mesh of a trained model (or pipeline) and write it to ``output`` (.ply, .obj or .glb)."""
    exporter = _with_overrides(config, overrides).setup()
    return exporter.export(_model_of(model), output, silhouettes=exporter.silhouettes_for(model))


def _with_overrides(config: Optional[MeshExportConfig], overrides: Dict[str, Any]) -> MeshExportConfig:
    import dataclasses

    return dataclasses.replace(config or MeshExportConfig(), **overrides)
