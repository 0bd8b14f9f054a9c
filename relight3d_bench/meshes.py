"""The generator's meshes (numpy only): OFF files from a path or an archive member, normalised Z-up, with a smooth
two-tone albedo, written back as binary PLY.

Used on the Blender side (:mod:`relight3d_bench.cycles_scene`, :mod:`relight3d_bench.render_benchmark`,
``datasets/render_object_scene.py``); the archive is CGAL's data (see :func:`relight3d_bench.config.mesh_source`).
"""

from __future__ import annotations

import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def read_mesh_text(source: str) -> str:
    """The text of a mesh file given as a path or as ``tarball::member``."""
    if "::" in source:
        tar_path, member = source.split("::", 1)
        with tarfile.open(Path(tar_path).expanduser(), "r:*") as tar:
            handle = tar.extractfile(member)
            if handle is None:
                raise FileNotFoundError(f"{member} is not a regular file in {tar_path}")
            return handle.read().decode("ascii")
    return Path(source).expanduser().read_text(encoding="ascii")


def load_off(source: str) -> tuple[np.ndarray, np.ndarray]:
    """Load an ASCII OFF (or COFF) mesh from a path or ``tarball::member``.

    Polygons with more than three corners are fan-triangulated; comments and per-vertex colours are ignored.

    Returns:
        ``(vertices [V, 3] float64, triangles [F, 3] int64)``.
    """
    tokens: list[str] = []
    for line in read_mesh_text(source).splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            tokens.extend(line.split())
    if not tokens or not tokens[0].endswith("OFF"):
        raise ValueError(f"{source} is not an OFF file")
    has_colors = tokens[0].startswith("C")
    pos = 1
    n_verts, n_faces = int(tokens[pos]), int(tokens[pos + 1])
    pos += 3
    stride = 7 if has_colors else 3  # COFF: x y z r g b a
    vertex_tokens = np.asarray(tokens[pos : pos + stride * n_verts], dtype=np.float64).reshape(n_verts, stride)
    verts = vertex_tokens[:, :3].copy()
    pos += stride * n_verts
    tris: list[tuple[int, int, int]] = []
    for _ in range(n_faces):
        count = int(tokens[pos])
        idx = [int(t) for t in tokens[pos + 1 : pos + 1 + count]]
        pos += 1 + count
        tris.extend((idx[0], idx[k], idx[k + 1]) for k in range(1, count - 1))
    return verts, np.asarray(tris, dtype=np.int64)


def y_up_to_z_up(verts: np.ndarray) -> np.ndarray:
    """Rotate +90 deg about X so that a Y-up model stands upright in Blender's Z-up world."""
    x, y, z = verts.T
    return np.stack([x, -z, y], axis=1)


def normalize_to_sphere(verts: np.ndarray, radius: float) -> np.ndarray:
    """Centre the bounding box at the origin and scale so that the farthest vertex is at ``radius``."""
    centre = 0.5 * (verts.min(axis=0) + verts.max(axis=0))
    centred = verts - centre
    return centred * (radius / np.linalg.norm(centred, axis=1).max())


def two_tone_albedo(verts: np.ndarray, albedo_a: Sequence[float], albedo_b: Sequence[float]) -> np.ndarray:
    """Per-vertex linear-RGB albedo: smooth low-frequency blotches of two colours.

    The pattern is a soft threshold of a sum of a few sinusoids of the (normalised) position, so it is deterministic,
    independent of the tessellation and varies on a scale of ~0.3 units.

    Returns:
        ``[V, 3]`` albedo between ``albedo_a`` and ``albedo_b``.
    """
    x, y, z = verts.T
    pattern = np.sin(4.0 * x + 0.5) + np.sin(3.5 * y - 1.0) + np.sin(5.0 * z + 0.3) + 0.6 * np.sin(3.0 * (x + y - z))
    t = np.clip(0.5 + 0.5 * pattern / 0.35, 0.0, 1.0)
    t = t * t * (3.0 - 2.0 * t)  # smoothstep
    a, b = np.asarray(albedo_a, dtype=np.float64), np.asarray(albedo_b, dtype=np.float64)
    return a[None] * (1.0 - t[:, None]) + b[None] * t[:, None]


def prepare_mesh(
    source: str, up_axis: str, radius: float, albedo_a: Sequence[float], albedo_b: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(vertices, triangles, albedo)`` of an OFF mesh (:func:`load_off`): turned Z-up (``up_axis`` is the file's,
    ``"y"`` or ``"z"``), bounding box centred, farthest vertex at ``radius``, with a :func:`two_tone_albedo`."""
    verts, tris = load_off(source)
    if up_axis == "y":
        verts = y_up_to_z_up(verts)
    elif up_axis != "z":
        raise ValueError(f"{source}: up_axis must be 'y' or 'z', got {up_axis!r}")
    verts = normalize_to_sphere(verts, radius)
    return verts, tris, two_tone_albedo(verts, albedo_a, albedo_b)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """The exact piecewise sRGB transfer curve (input clipped to [0, 1])."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def write_ply(path: Path, verts: np.ndarray, tris: np.ndarray, colors: np.ndarray) -> None:
    """Write a binary little-endian PLY with float positions, uchar RGB (sRGB-encoded albedo) and triangles."""
    vertex_dtype = np.dtype([("p", "<f4", 3), ("c", "u1", 3)])
    vertex_data = np.empty(len(verts), dtype=vertex_dtype)
    vertex_data["p"] = verts
    vertex_data["c"] = np.round(linear_to_srgb(colors) * 255)
    face_dtype = np.dtype([("n", "u1"), ("i", "<i4", 3)])
    face_data = np.empty(len(tris), dtype=face_dtype)
    face_data["n"] = 3
    face_data["i"] = tris
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(verts)}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        f"element face {len(tris)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(vertex_data.tobytes())
        f.write(face_data.tobytes())
