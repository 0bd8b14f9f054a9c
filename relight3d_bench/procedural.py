"""Procedural meshes (numpy only): shapes that need no file, for ``relight3d data render``.

Each is a closed, consistently wound triangle mesh (outward normals, counter-clockwise seen from outside), Z-up,
centred at the origin; :func:`relight3d_bench.meshes.normalize_to_sphere` scales it afterwards. The shapes are chosen
for what relighting data needs: curvature of every sign (``torus``), flat faces with soft edges (``rounded-cube``),
self-shadowing and concavities (``torus-knot``), and a smooth convex reference (``sphere``).
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Tuple

import numpy as np

Mesh = Tuple[np.ndarray, np.ndarray]


def _grid_triangles(rows: int, cols: int, wrap_rows: bool) -> np.ndarray:
    """Triangles of a ``rows x cols`` vertex grid, wrapped in the column direction (and in rows when asked)."""
    tris = []
    row_count = rows if wrap_rows else rows - 1
    for i in range(row_count):
        i2 = (i + 1) % rows
        for j in range(cols):
            j2 = (j + 1) % cols
            a, b, c, d = i * cols + j, i * cols + j2, i2 * cols + j, i2 * cols + j2
            tris += [(a, c, b), (b, c, d)]
    return np.asarray(tris, dtype=np.int64)


def _tube(curve: Callable[[np.ndarray], np.ndarray], radius: float, segments: int, sides: int) -> Mesh:
    """A closed tube of ``radius`` around a closed curve ``curve(t)``, ``t`` in [0, 2 pi) (parallel-transport-free
    Frenet-like frame from the curve's derivative and the Z axis blend, fine for the smooth curves used here)."""
    t = np.linspace(0.0, 2.0 * math.pi, segments, endpoint=False)
    centre = curve(t)
    tangent = curve(t + 1e-4) - curve(t - 1e-4)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    helper = np.where(np.abs(tangent[:, 2:3]) > 0.9, [[1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0]])
    normal = np.cross(tangent, helper)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    binormal = np.cross(normal, tangent)  # (tangent, around) winds outwards
    angle = np.linspace(0.0, 2.0 * math.pi, sides, endpoint=False)
    ring = np.cos(angle)[None, :, None] * normal[:, None] + np.sin(angle)[None, :, None] * binormal[:, None]
    verts = (centre[:, None] + radius * ring).reshape(-1, 3)
    return verts, _grid_triangles(segments, sides, wrap_rows=True)


def sphere(detail: int = 48) -> Mesh:
    """A UV sphere of radius 1 (poles closed by fans)."""
    rows, cols = detail, 2 * detail
    theta = np.linspace(0.0, math.pi, rows + 1)[1:-1]
    phi = np.linspace(0.0, 2.0 * math.pi, cols, endpoint=False)
    th, ph = np.meshgrid(theta, phi, indexing="ij")
    body = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], axis=-1).reshape(-1, 3)
    verts = np.concatenate([[[0.0, 0.0, 1.0]], body, [[0.0, 0.0, -1.0]]])
    grid = _grid_triangles(rows - 1, cols, wrap_rows=False) + 1
    top = [(0, 1 + j, 1 + (j + 1) % cols) for j in range(cols)]
    last, bottom_index = 1 + (rows - 2) * cols, len(verts) - 1
    bottom = [(bottom_index, last + (j + 1) % cols, last + j) for j in range(cols)]
    return verts, np.concatenate([np.asarray(top), grid, np.asarray(bottom)]).astype(np.int64)


def torus(major: float = 1.0, minor: float = 0.4, detail: int = 64) -> Mesh:
    """A torus about the Z axis, tilted 30 degrees about X so that its hole is seen from most cameras."""
    verts, tris = _tube(lambda t: np.stack([major * np.cos(t), major * np.sin(t), 0 * t], 1), minor, detail, 32)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    return verts @ np.array([[1, 0, 0], [0, c, -s], [0, s, c]]).T, tris


def torus_knot(p: int = 2, q: int = 3, tube: float = 0.28, detail: int = 256) -> Mesh:
    """A ``(p, q)`` torus knot (a trefoil by default): thin parts, concavities and self-shadowing."""

    def curve(t: np.ndarray) -> np.ndarray:
        r = 1.0 + 0.45 * np.cos(q * t)
        return np.stack([r * np.cos(p * t), r * np.sin(p * t), 0.45 * np.sin(q * t)], axis=1)

    return _tube(curve, tube, detail, 24)


def rounded_cube(exponent: float = 6.0, detail: int = 48) -> Mesh:
    """A superellipsoid ``|x|^e + |y|^e + |z|^e = 1``: flat faces, soft edges (the sphere's vertices pushed out)."""
    verts, tris = sphere(detail)
    norm = np.sum(np.abs(verts) ** exponent, axis=1, keepdims=True) ** (1.0 / exponent)
    return verts / norm, tris


PROCEDURAL: Dict[str, Callable[[], Mesh]] = {
    "sphere": sphere,
    "torus": torus,
    "torus-knot": torus_knot,
    "rounded-cube": rounded_cube,
}
"""The procedural meshes by name (what ``relight3d data render --objects`` accepts besides files)."""


__all__ = ["PROCEDURAL", "rounded_cube", "sphere", "torus", "torus_knot"]
