"""UV textures for exported meshes: an xatlas unwrap, a UV rasteriser (nvdiffrast on CUDA, torch anywhere) and a bake.

The bake finds, for every texel, the triangle that covers it in UV space and its barycentric coordinates, turns
them into a 3D surface point and normal, asks a colour function (the field) for the colour there, and finally
dilates the charts by a few texels so that bilinear lookups at chart borders do not pick up the empty background.

UV convention (OBJ / trimesh): ``u`` grows to the right, ``v`` grows upwards, so image row 0 is ``v = 1``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Literal, Tuple

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from relight3d._optional import nvdiffrast_torch, require, try_import, warn_once

ColorFn = Callable[[Tensor, Tensor], Tensor]


def unwrap_uv(
    vertices: Float[np.ndarray, "v 3"], faces: Int[np.ndarray, "f 3"], resolution: int = 1024, padding: int = 2
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xatlas charts packed into a ``resolution``-texel square with ``padding`` texels between charts.

    Returns ``vmapping`` (for each new vertex, its original vertex), the new faces, and per-new-vertex UVs in [0, 1].
    """
    xatlas = require(try_import("xatlas"), "xatlas", "UV texture export")
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices, dtype=np.float32), np.ascontiguousarray(faces, dtype=np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = int(resolution)
    pack.padding = int(padding)
    pack.bilinear = True
    atlas.generate(pack_options=pack)
    vmapping, new_faces, uvs = atlas[0]
    return vmapping.astype(np.int64), new_faces.astype(np.int64), uvs.astype(np.float32)


def _uv_to_pixels(uvs: Tensor, size: int) -> Tensor:
    """UVs to continuous pixel coordinates (x right, y down; texel (r, c) has its centre at (c + 0.5, r + 0.5))."""
    return torch.stack([uvs[:, 0] * size, (1.0 - uvs[:, 1]) * size], dim=-1)


@torch.no_grad()
def triangle_fragments(
    pixels: Float[Tensor, "v 2"], faces: Int[Tensor, "f 3"], height: int, width: int, max_candidates: int = 1 << 22
) -> Iterator[Tuple[Tensor, Tensor, Tensor, Tensor]]:
    """The pixel centres covered by each triangle, in chunks: ``(face ids, rows, cols, barycentric weights)``.

    ``pixels`` are continuous pixel coordinates (x right, y down; pixel (r, c) has its centre at (c + 0.5, r + 0.5)).
    Pure torch, vectorised: every pixel centre in a triangle's bounding box is a candidate, kept when its three edge
    functions agree in sign (either winding). Chunks hold at most about ``max_candidates`` candidates.
    """
    device = pixels.device
    tri = pixels.float()[faces.long()]  # [F, 3, 2]
    lo, hi = tri.amin(1), tri.amax(1)
    size = torch.tensor([width, height], device=device)
    c_min = torch.maximum(torch.ceil(lo - 0.5).long(), torch.zeros_like(size))
    c_max = torch.minimum(torch.floor(hi - 0.5).long(), size - 1)
    extent = (c_max - c_min + 1).clamp_min(0)
    counts = extent[:, 0] * extent[:, 1]
    n_faces = faces.shape[0]
    cumulative = torch.cumsum(counts, 0)
    start = 0
    while start < n_faces:
        # As many faces as fit the candidate budget (at least one).
        base = int(cumulative[start - 1]) if start > 0 else 0
        stop = int(torch.searchsorted(cumulative, torch.tensor(base + max_candidates, device=device), right=True))
        stop = max(stop, start + 1)
        ids = torch.arange(start, stop, device=device)
        c = counts[ids]
        total = int(c.sum())
        start = stop
        if total == 0:
            continue
        fid = torch.repeat_interleave(ids, c)
        first = torch.cumsum(c, 0) - c
        offset = torch.arange(total, device=device) - torch.repeat_interleave(first, c)
        span = extent[fid, 0]
        col = c_min[fid, 0] + offset % span
        row = c_min[fid, 1] + offset // span
        p = torch.stack([col.float() + 0.5, row.float() + 0.5], dim=-1)
        a, b, cc = tri[fid, 0], tri[fid, 1], tri[fid, 2]

        def edge(u: Tensor, v: Tensor, q: Tensor) -> Tensor:
            return (v[:, 0] - u[:, 0]) * (q[:, 1] - u[:, 1]) - (v[:, 1] - u[:, 1]) * (q[:, 0] - u[:, 0])

        area = edge(a, b, cc)
        safe = torch.where(area.abs() > 1e-12, area, torch.ones_like(area))
        w0, w1, w2 = edge(b, cc, p) / safe, edge(cc, a, p) / safe, edge(a, b, p) / safe
        eps = 1e-6
        inside = (w0 >= -eps) & (w1 >= -eps) & (w2 >= -eps) & (area.abs() > 1e-12)
        yield fid[inside], row[inside], col[inside], torch.stack([w0, w1, w2], dim=-1)[inside]


@torch.no_grad()
def rasterize_uv_torch(
    uvs: Float[Tensor, "v 2"], faces: Int[Tensor, "f 3"], size: int, max_candidates: int = 1 << 22
) -> Tuple[Int[Tensor, "h w"], Float[Tensor, "h w 3"]]:
    """Which triangle covers each texel centre of a ``size`` x ``size`` texture, and its barycentric coordinates.

    Returns the face index per texel (-1 where none) and the barycentric weights of the face's three corners
    (see :func:`triangle_fragments`; charts of an atlas do not overlap, so no depth test is needed).

    Example:
        >>> uvs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        >>> face, bary = rasterize_uv_torch(uvs, torch.tensor([[0, 1, 2]]), 4)
        >>> int((face >= 0).sum())  # the texel centres below the diagonal, and on it
        10
    """
    face_index = torch.full((size, size), -1, dtype=torch.long, device=uvs.device)
    bary = torch.zeros(size, size, 3, device=uvs.device)
    pixels = _uv_to_pixels(uvs.float(), size)
    for fid, row, col, weights in triangle_fragments(pixels, faces, size, size, max_candidates):
        face_index[row, col] = fid
        bary[row, col] = weights
    return face_index, bary


@torch.no_grad()
def rasterize_uv_nvdiffrast(
    uvs: Float[Tensor, "v 2"], faces: Int[Tensor, "f 3"], size: int
) -> Tuple[Int[Tensor, "h w"], Float[Tensor, "h w 3"]]:
    """The same as :func:`rasterize_uv_torch` with nvdiffrast's CUDA rasteriser (tensors must be on a CUDA device).

    Every face gets its own three corners carrying the identity matrix as attributes, so interpolating them yields
    the corner weights directly, whatever nvdiffrast's internal barycentric convention.
    """
    dr = require(nvdiffrast_torch(), "nvdiffrast", "GPU texture baking")
    if uvs.device.type != "cuda":
        raise ValueError("rasterize_uv_nvdiffrast needs CUDA tensors (use rasterize_uv_torch on the CPU)")
    n_faces = faces.shape[0]
    corners = uvs.float()[faces.long()].reshape(-1, 2)  # [3F, 2]
    clip = torch.cat([corners * 2.0 - 1.0, torch.zeros_like(corners[:, :1]), torch.ones_like(corners[:, :1])], -1)
    tris = torch.arange(3 * n_faces, device=uvs.device, dtype=torch.int32).reshape(n_faces, 3)
    identity = torch.eye(3, device=uvs.device).repeat(n_faces, 1)  # [3F, 3]
    ctx = dr.RasterizeCudaContext(device=uvs.device)
    rast, _ = dr.rasterize(ctx, clip[None].contiguous(), tris, resolution=[size, size])
    weights, _ = dr.interpolate(identity[None].contiguous(), rast, tris)
    # nvdiffrast's row 0 is clip y = -1, i.e. v = 0: flip so that row 0 is v = 1 like the image.
    face_index = (rast[0, ..., 3].round().long() - 1).flip(0)
    return face_index, weights[0].flip(0)


def dilate_texture(image: Float[Tensor, "h w 3"], filled: Tensor, iterations: int) -> Float[Tensor, "h w 3"]:
    """Grow the filled texels outwards ``iterations`` times: an empty texel with filled 8-neighbours takes their
    mean (so bilinear lookups at chart borders see chart colours, not the background)."""
    img = image.permute(2, 0, 1)[None].clone()
    mask = filled.float()[None, None].clone()
    kernel = torch.ones(1, 1, 3, 3, device=image.device)
    for _ in range(iterations):
        if bool(mask.all()):
            break
        count = torch.nn.functional.conv2d(mask, kernel, padding=1)
        summed = torch.nn.functional.conv2d(img * mask, kernel.expand(3, 1, 3, 3), padding=1, groups=3)
        grow = (mask == 0) & (count > 0)
        img = torch.where(grow, summed / count.clamp_min(1.0), img)
        mask = torch.where(grow, torch.ones_like(mask), mask)
    return img[0].permute(1, 2, 0)


def bake_texture(
    mesh: Any,
    color_fn: ColorFn,
    size: int = 1024,
    backend: Literal["auto", "nvdiffrast", "torch"] = "auto",
    device: Any = "cpu",
    dilation: int = 8,
    chunk_size: int = 1 << 16,
) -> Any:
    """A copy of ``mesh`` (trimesh) with UVs from xatlas and a ``size`` x ``size`` texture baked from ``color_fn``.

    Args:
        mesh: the mesh to texture.
        color_fn: ``(points [n, 3], unit normals [n, 3]) -> rgb [n, 3]`` in [0, 1] (torch, on ``device``).
        size: texture width and height in texels.
        backend: UV rasteriser; 'auto' uses nvdiffrast when ``device`` is CUDA and it loads, else torch.
        device: where the rasteriser and ``color_fn`` run.
        dilation: texels by which charts are grown into the empty space around them.
        chunk_size: texels coloured at once.
    """
    import trimesh
    from PIL import Image

    device = torch.device(device)
    if backend == "auto":
        use_nvdiffrast = device.type == "cuda" and nvdiffrast_torch() is not None
        if device.type == "cuda" and not use_nvdiffrast:
            warn_once("nvdiffrast-bake", "nvdiffrast is not available: baking the texture with the torch rasteriser")
        backend = "nvdiffrast" if use_nvdiffrast else "torch"
    vertices = np.asarray(mesh.vertices, dtype=np.float32)
    normals = np.asarray(mesh.vertex_normals, dtype=np.float32)
    vmapping, faces_uv, uvs = unwrap_uv(vertices, np.asarray(mesh.faces), resolution=size, padding=2)
    uv_t = torch.from_numpy(uvs).to(device)
    faces_t = torch.from_numpy(faces_uv).to(device)
    if backend == "nvdiffrast":
        face_index, bary = rasterize_uv_nvdiffrast(uv_t, faces_t, size)
    else:
        face_index, bary = rasterize_uv_torch(uv_t, faces_t, size)
    new_vertices = torch.from_numpy(vertices[vmapping]).to(device)
    new_normals = torch.from_numpy(normals[vmapping]).to(device)
    filled = face_index >= 0
    corner_ids = faces_t[face_index[filled]]  # [K, 3]
    weights = bary[filled][..., None]  # [K, 3, 1]
    points = (weights * new_vertices[corner_ids]).sum(1)
    point_normals = torch.nn.functional.normalize((weights * new_normals[corner_ids]).sum(1), dim=-1)
    colors = torch.empty(points.shape[0], 3, device=device)
    for s in range(0, points.shape[0], chunk_size):
        colors[s : s + chunk_size] = color_fn(points[s : s + chunk_size], point_normals[s : s + chunk_size]).float()
    image = torch.zeros(size, size, 3, device=device)
    image[filled] = colors.clamp(0.0, 1.0)
    image = dilate_texture(image, filled, dilation)
    pixels = (image.cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    material = trimesh.visual.material.SimpleMaterial(image=Image.fromarray(pixels))
    visual = trimesh.visual.TextureVisuals(uv=uvs, material=material)
    out = trimesh.Trimesh(vertices[vmapping], faces_uv, visual=visual, process=False)
    out.metadata.update(mesh.metadata)
    out.metadata["texture_coverage"] = float(filled.float().mean())
    return out
