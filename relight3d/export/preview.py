"""A small software renderer for looking at exported meshes without a GPU or a display (torch, z-buffered).

The camera is placed with :func:`relight3d.export.orbits.orbit_directions` and :func:`relight3d.geometry.look_at`.

Example:
    >>> import trimesh
    >>> image = render_mesh_preview(trimesh.creation.icosphere(), width=64, height=64)
    >>> image.shape
    (64, 64, 3)
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple

import numpy as np
import torch

from relight3d.export.orbits import orbit_directions
from relight3d.export.texture import triangle_fragments
from relight3d.geometry import look_at, opengl_to_opencv, world_to_camera


@torch.no_grad()
def render_mesh_preview(
    mesh: Any,
    width: int = 512,
    height: int = 512,
    azimuth: float = 30.0,
    elevation: float = 20.0,
    vertical_fov: float = 30.0,
    up: Sequence[float] = (0.0, 0.0, 1.0),
    background: Tuple[float, float, float] = (1.0, 1.0, 1.0),
    light: Optional[Sequence[float]] = None,
) -> np.ndarray:
    """Render a trimesh mesh, framed to fill the view, with Lambertian shading of its vertex colours (grey without).

    Args:
        mesh: a ``trimesh.Trimesh``.
        width, height: image size.
        azimuth, elevation: camera direction around the mesh's bounding-box centre, in degrees (world ``up``;
            azimuth 0 looks from -Y, Blender's front view).
        vertical_fov: vertical field of view in degrees.
        background: colour where no face is seen.
        light: direction towards the light (default: from the camera, raised a little).

    Returns:
        ``[height, width, 3]`` uint8 image.
    """
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    up_v = np.asarray(up, dtype=np.float64)
    up_v /= np.linalg.norm(up_v)
    lo, hi = vertices.min(0), vertices.max(0)
    center, radius = (lo + hi) / 2, max(float(np.linalg.norm(hi - lo)) / 2, 1e-9)
    direction = orbit_directions(azimuth, elevation, up_v).double().numpy()
    half_fov = math.radians(min(vertical_fov, vertical_fov * width / height)) / 2
    eye = center + direction * radius / math.sin(half_fov) * 1.05
    c2w = look_at(torch.from_numpy(eye), torch.from_numpy(center), torch.from_numpy(up_v))
    w2c = world_to_camera(opengl_to_opencv(c2w)).numpy()  # OpenCV camera: x right, y down, looking down +z
    cam = vertices @ w2c[:, :3].T + w2c[:, 3]
    focal = height / (2.0 * math.tan(math.radians(vertical_fov) / 2))
    z = np.maximum(cam[:, 2], 1e-6)
    pixels = np.stack([focal * cam[:, 0] / z + width / 2, focal * cam[:, 1] / z + height / 2], axis=1)

    pixels_t, faces_t, depth_t = torch.from_numpy(pixels).float(), torch.from_numpy(faces), torch.from_numpy(z).float()
    zbuffer = torch.full((height * width,), math.inf)
    face_buffer = torch.full((height * width,), -1, dtype=torch.long)
    bary_buffer = torch.zeros(height * width, 3)
    for fid, row, col, weights in triangle_fragments(pixels_t, faces_t, height, width):
        # Perspective-correct depth: interpolate 1/z linearly in screen space.
        inv_z = (weights / depth_t[faces_t[fid]]).sum(-1)
        frag_depth = 1.0 / inv_z.clamp_min(1e-12)
        flat = row * width + col
        zbuffer.scatter_reduce_(0, flat, frag_depth, reduce="amin")
        win = frag_depth <= zbuffer[flat]
        face_buffer[flat[win]] = fid[win]
        bary_buffer[flat[win]] = weights[win]

    seen = face_buffer >= 0
    image = torch.tensor(background, dtype=torch.float32).repeat(height * width, 1)
    face_normals = torch.from_numpy(np.asarray(mesh.face_normals, dtype=np.float32))
    to_light = np.asarray(light, dtype=np.float64) if light is not None else direction + 0.5 * up_v
    to_light = torch.from_numpy(to_light / np.linalg.norm(to_light)).float()
    shade = (face_normals[face_buffer[seen]] @ to_light).abs() * 0.75 + 0.25
    colors = getattr(getattr(mesh, "visual", None), "vertex_colors", None)
    if getattr(mesh.visual, "kind", None) == "vertex" and colors is not None:
        corner_colors = torch.from_numpy(np.asarray(colors)[:, :3].astype(np.float32) / 255.0)[
            faces_t[face_buffer[seen]]
        ]
        albedo = (bary_buffer[seen][..., None] * corner_colors).sum(1)
    else:
        albedo = torch.full((int(seen.sum()), 3), 0.7)
    image[seen] = (albedo * shade[:, None]).clamp(0.0, 1.0)
    return (image.reshape(height, width, 3).numpy() * 255.0 + 0.5).astype(np.uint8)
