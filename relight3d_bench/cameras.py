"""The generator's cameras, computed in relight3d's Python (torch) and handed to the Blender side as a JSON file.

Positions are drawn with numpy's seeded generator (uniform by area on a sphere cap); the poses come from
:func:`relight3d.geometry.look_at`, the one look-at of relight3d (OpenGL/Blender camera, world Z up). The Python
that runs Blender needs neither torch nor relight3d's geometry: it reads the matrices with
:func:`relight3d_bench.cycles_scene.read_cameras`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import torch

from relight3d.geometry import look_at, to_homogeneous


def sample_camera_positions(n: int, radius: float, seed: int, min_elevation_deg: float) -> np.ndarray:
    """``[n, 3]`` positions sampled uniformly (by area) on the sphere cap above ``min_elevation_deg``."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(math.sin(math.radians(min_elevation_deg)), 1.0, size=n)
    phi = rng.uniform(0.0, 2.0 * math.pi, size=n)
    r_xy = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    return radius * np.stack([r_xy * np.cos(phi), r_xy * np.sin(phi), z], axis=1)


def camera_poses(n: int, seed: int, distance: float, min_elevation_deg: float) -> np.ndarray:
    """``[n, 4, 4]`` float64 camera-to-world matrices of ``n`` seeded cameras at ``distance``, looking at the origin."""
    positions = torch.from_numpy(sample_camera_positions(n, distance, seed, min_elevation_deg))
    return to_homogeneous(look_at(positions)).numpy()


def write_cameras(path: Path, poses: Dict[str, Sequence[np.ndarray]]) -> Path:
    """Write ``{split: [camera-to-world 4x4, ...]}`` as JSON (read back by ``cycles_scene.read_cameras``)."""
    path.write_text(json.dumps({split: np.asarray(c2ws).tolist() for split, c2ws in poses.items()}))
    return path
