"""From a density field to a clean, coloured triangle mesh, for :mod:`relight3d.export.mesh`.

A density grid around a box (:class:`GridSpec`, :func:`sample_density_grid`), voids inside the object filled
(:func:`fill_cavities`), marching cubes in slabs (:func:`marching_cubes_in_slabs`), cleanup (:func:`clean_mesh`),
decimation (:func:`decimate_mesh`) and the colour the field shows at surface points (:func:`surface_colors`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Tuple, Union

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor, nn

from relight3d.errors import ConfigError
from relight3d.export.mesh_threshold import DensityFn


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
            raise ConfigError("resolution", f"a mesh grid needs at least 8 samples along each side, not {resolution}")
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
