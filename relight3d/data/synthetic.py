"""Scenes that relight3d renders itself (no downloads): analytic primitives ray-traced in torch.

They serve as the demo's embedded default and as test fixtures. Scenes are written in the Blender format
(``transforms_{train,val,test}.json`` + RGBA PNGs, camera-to-world in the OpenGL/Blender camera convention), so they
go through the same parser as any Blender-format dataset.

Shading is Lambertian under a fixed sun plus ambient light, with smooth procedural albedo; pixels are supersampled
and the alpha channel is the exact coverage, so it is the object mask.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Literal, Tuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from relight3d.data.single_image import look_at_camera_to_world, orbit_position

SceneName = Literal["objects", "sphere"]
SUN_DIRECTION = (0.4, -0.5, 0.77)
"""Direction towards the sun (world Z up)."""


@dataclass(frozen=True)
class SceneSpec:
    """What to render."""

    scene: SceneName = "objects"
    """'objects' (a textured sphere, a box and a small ball) or 'sphere' (one sphere of radius 0.5 at the origin)."""
    resolution: int = 64
    """Image width and height in pixels."""
    n_train: int = 50
    """Training views."""
    n_test: int = 10
    """Test views (also written as the val split)."""
    radius: float = 3.2
    """Camera distance from the origin."""
    camera_angle_x: float = 2.0 * math.atan(16.0 / 35.0)
    """Horizontal field of view (a 35 mm lens on a 32 mm sensor)."""
    supersample: int = 3
    """Rays per pixel side (anti-aliasing and fractional alpha)."""
    seed: int = 0
    """Seed of the camera positions."""


def _sphere_hit(o: Tensor, d: Tensor, center: Tuple[float, ...], r: float) -> Tuple[Tensor, Tensor]:
    c = torch.tensor(center, dtype=o.dtype)
    oc = o - c
    b = (oc * d).sum(-1)
    disc = b * b - ((oc * oc).sum(-1) - r * r)
    t = -b - torch.sqrt(disc.clamp_min(0.0))
    t = torch.where((disc > 0) & (t > 0), t, torch.full_like(t, math.inf))
    n = torch.nn.functional.normalize(o + d * t.clamp(max=1e6)[:, None] - c, dim=-1)
    return t, n


def _box_hit(o: Tensor, d: Tensor, lo: Tuple[float, ...], hi: Tuple[float, ...]) -> Tuple[Tensor, Tensor]:
    lo_t, hi_t = torch.tensor(lo, dtype=o.dtype), torch.tensor(hi, dtype=o.dtype)
    inv = 1.0 / torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    t0, t1 = (lo_t - o) * inv, (hi_t - o) * inv
    tmin, tmax = torch.minimum(t0, t1), torch.maximum(t0, t1)
    t_near, axis = tmin.max(dim=-1)
    t_far = tmax.min(dim=-1).values
    hit = (t_far > t_near) & (t_near > 0)
    t = torch.where(hit, t_near, torch.full_like(t_near, math.inf))
    n = torch.zeros_like(o)
    n.scatter_(1, axis[:, None], -torch.sign(d.gather(1, axis[:, None])))
    return t, n


def _albedo(p: Tensor, which: Tensor) -> Tensor:
    """Smooth procedural albedo per primitive."""
    x, y, z = p.unbind(-1)
    a0 = torch.stack(
        [0.55 + 0.35 * torch.sin(4 * z + 1.0), 0.35 + 0.25 * torch.cos(5 * x), 0.3 + 0.2 * torch.sin(6 * y)], -1
    )
    a1 = torch.stack(
        [0.2 + 0.1 * torch.sin(8 * x), 0.45 + 0.3 * torch.sin(7 * y + 2 * z), 0.75 + 0.15 * torch.cos(5 * z)], -1
    )
    a2 = torch.stack([0.9 + 0.0 * x, 0.8 + 0.1 * torch.sin(9 * z), 0.25 + 0.0 * x], -1)
    out = torch.where((which == 0)[:, None], a0, torch.where((which == 1)[:, None], a1, a2))
    return out.clamp(0.0, 1.0)


def trace(origins: Tensor, directions: Tensor, scene: SceneName) -> Tuple[Tensor, Tensor]:
    """Radiance (linear, Lambertian) and hit mask of rays against the scene's primitives."""
    if scene == "sphere":
        hits = [_sphere_hit(origins, directions, (0.0, 0.0, 0.0), 0.5)]
    else:
        hits = [
            _sphere_hit(origins, directions, (0.0, 0.0, 0.15), 0.55),
            _box_hit(origins, directions, (-0.75, -0.35, -0.7), (-0.05, 0.35, -0.3)),
            _sphere_hit(origins, directions, (0.45, -0.35, -0.45), 0.25),
        ]
    ts = torch.stack([h[0] for h in hits], -1)
    t, which = ts.min(dim=-1)
    normals = torch.stack([h[1] for h in hits], 1)[torch.arange(t.shape[0]), which]
    hit = torch.isfinite(t)
    p = origins + directions * torch.where(hit, t, torch.zeros_like(t))[:, None]
    sun = torch.nn.functional.normalize(torch.tensor(SUN_DIRECTION, dtype=origins.dtype), dim=0)
    shade = 0.35 + 0.65 * (normals * sun).sum(-1).clamp_min(0.0)
    return _albedo(p, which) * shade[:, None], hit


def render_view(c2w: np.ndarray, spec: SceneSpec) -> np.ndarray:
    """An RGBA float image ``[H, W, 4]`` (RGB in [0, 1], not premultiplied) from a 3x4 camera-to-world matrix."""
    res, ss = spec.resolution, spec.supersample
    focal = 0.5 * res / math.tan(0.5 * spec.camera_angle_x)
    sub = (torch.arange(res * ss, dtype=torch.float64) + 0.5) / ss
    v, u = torch.meshgrid(sub, sub, indexing="ij")
    dirs_cam = torch.stack([(u - res / 2) / focal, -(v - res / 2) / focal, -torch.ones_like(u)], -1).reshape(-1, 3)
    rot = torch.from_numpy(c2w[:3, :3])
    dirs = torch.nn.functional.normalize(dirs_cam @ rot.T, dim=-1)
    origins = torch.from_numpy(c2w[:3, 3]).expand_as(dirs)
    rgb, hit = trace(origins, dirs, spec.scene)
    rgb = (rgb * hit[:, None]).reshape(res, ss, res, ss, 3).permute(0, 2, 1, 3, 4).reshape(res, res, ss * ss, 3)
    alpha = hit.double().reshape(res, ss, res, ss).permute(0, 2, 1, 3).reshape(res, res, ss * ss).mean(-1)
    color = rgb.sum(2) / (alpha[..., None] * ss * ss).clamp_min(1e-9)
    return torch.cat([color.clamp(0, 1), alpha[..., None]], -1).numpy()


def camera_poses(n: int, radius: float, seed: int, elevation_range: Tuple[float, float] = (-15.0, 65.0)) -> List:
    """``n`` seeded camera-to-world matrices looking at the origin from random azimuths and elevations."""
    rng = np.random.default_rng(seed)
    poses = []
    for _ in range(n):
        az = rng.uniform(0.0, 360.0)
        el = math.degrees(math.asin(rng.uniform(*np.sin(np.radians(elevation_range)))))
        poses.append(look_at_camera_to_world(orbit_position(radius, el, az)))
    return poses


def write_blender_scene(out: Path, spec: SceneSpec = SceneSpec()) -> Path:
    """Render ``spec`` into ``out`` in the Blender format and return ``out``. Existing identical scenes are reused."""
    out = Path(out)
    stamp = out / "scene_spec.json"
    spec_json = json.dumps(spec.__dict__, sort_keys=True)
    if stamp.is_file() and stamp.read_text() == spec_json:
        return out
    splits = {
        "train": camera_poses(spec.n_train, spec.radius, spec.seed),
        "test": camera_poses(spec.n_test, spec.radius, spec.seed + 1),
    }
    for split, poses in splits.items():
        (out / split).mkdir(parents=True, exist_ok=True)
        frames = []
        for i, c2w in enumerate(poses):
            rgba = render_view(c2w, spec)
            Image.fromarray((rgba * 255.0 + 0.5).astype(np.uint8), "RGBA").save(out / split / f"r_{i:03d}.png")
            pose = np.eye(4)
            pose[:3] = c2w
            frames.append({"file_path": f"./{split}/r_{i:03d}", "transform_matrix": pose.tolist()})
        meta = {"camera_angle_x": spec.camera_angle_x, "frames": frames}
        names = ("test", "val") if split == "test" else ("train",)
        for name in names:
            (out / f"transforms_{name}.json").write_text(json.dumps(meta, indent=1))
    stamp.write_text(spec_json)
    return out
