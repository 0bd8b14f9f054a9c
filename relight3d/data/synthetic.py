"""Scenes that relight3d renders itself (no downloads): analytic primitives ray-traced in torch.

They serve as the demo's embedded default and as test fixtures. Scenes are written in the Blender format
(``transforms_{train,val,test}.json`` + RGBA PNGs, camera-to-world in the OpenGL/Blender camera convention), so they
go through the same parser as any Blender-format dataset.

Shading is Lambertian with smooth procedural albedo, under one of two lights:

* a fixed sun plus ambient light (the default; colours are written as they come, without a tone curve);
* an HDR environment map (``SceneSpec.envmap``): the irradiance ``E(x, n) = sum_k L_k dw_k V(x, w_k) max(0, n.w_k)``
  over the texels ``k`` of the map averaged down to ``light_height x 2 light_height`` (power-preserving), with the
  visibility ``V`` of each texel's direction traced against the primitives (cast shadows, exact for the coarse
  directions). The radiance ``albedo * E / pi`` is linear and written through the sRGB curve, as Blender does.

Pixels are supersampled and the alpha channel is the exact coverage, so it is the object mask.
:func:`write_relighting_scene` renders the same object under a source light for training and under other lights
for held-out views (``relight3d demo``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from relight3d.geometry import look_at, orbit_positions

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
    envmap: Optional[str] = None
    """Environment map (.exr / .hdr, linear) that lights the scene; None: the fixed sun plus ambient light."""
    envmap_strength: float = 1.0
    """Multiplier on the map's radiance."""
    light_height: int = 16
    """Rows of the coarse map whose texels are the light directions (16: 512 directions, 11 degrees apart)."""
    shadows: bool = True
    """Trace the visibility of every light direction (cast shadows) under an environment map."""


@dataclass(frozen=True)
class EnvLight:
    """An environment map as the tracer integrates it: one direction and power per texel of a coarse map."""

    directions: Tensor
    """``[k, 3]`` unit directions towards the texels (world, Z up)."""
    power: Tensor
    """``[k, 3]`` radiance times solid angle of each texel."""

    @classmethod
    def from_envmap(cls, envmap: Tensor, height: int) -> "EnvLight":
        """The map averaged down (power-preserving) to ``height x 2 height`` texels."""
        from relight3d.lighting import envmap_directions, envmap_solid_angles, resize_envmap

        coarse = resize_envmap(envmap.double(), height)
        solid = envmap_solid_angles(*coarse.shape[:2], dtype=torch.float64)
        dirs = envmap_directions(*coarse.shape[:2], dtype=torch.float64)
        return cls(dirs.reshape(-1, 3), (coarse * solid[..., None]).reshape(-1, 3))


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


def _primitives(scene: SceneName) -> List[Tuple[str, Tuple[float, ...], Tuple[float, ...]]]:
    """The scene's primitives: ``("sphere", centre, (radius,))`` or ``("box", low corner, high corner)``."""
    if scene == "sphere":
        return [("sphere", (0.0, 0.0, 0.0), (0.5,))]
    return [
        ("sphere", (0.0, 0.0, 0.15), (0.55,)),
        ("box", (-0.75, -0.35, -0.7), (-0.05, 0.35, -0.3)),
        ("sphere", (0.45, -0.35, -0.45), (0.25,)),
    ]


def intersect(origins: Tensor, directions: Tensor, scene: SceneName) -> Tuple[Tensor, Tensor, Tensor]:
    """Distance to the first hit (inf for a miss), its normal and the index of the primitive hit."""
    hits = [
        _sphere_hit(origins, directions, a, b[0]) if kind == "sphere" else _box_hit(origins, directions, a, b)
        for kind, a, b in _primitives(scene)
    ]
    ts = torch.stack([h[0] for h in hits], -1)
    t, which = ts.min(dim=-1)
    normals = torch.stack([h[1] for h in hits], 1)[torch.arange(t.shape[0]), which]
    return t, normals, which


def _blocked(points: Tensor, directions: Tensor, scene: SceneName) -> Tensor:
    """``[n, k]``: whether the ray from each point towards each direction hits a primitive (points off surfaces).

    Every test is a product of an ``[n]`` and a ``[k]`` factor (matrix products and outer operations), so no
    ``[n, k, 3]`` tensor is built."""
    blocked = torch.zeros(points.shape[0], directions.shape[0], dtype=torch.bool)
    for kind, a, b in _primitives(scene):
        if kind == "sphere":
            oc = points - torch.tensor(a, dtype=points.dtype)
            proj = oc @ directions.T  # [n, k]
            disc = proj * proj - ((oc * oc).sum(-1) - b[0] * b[0])[:, None]
            blocked |= (disc > 0) & (torch.sqrt(disc.clamp_min(0.0)) > proj)
        else:
            inv = 1.0 / torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
            near = far = None
            for axis in range(3):
                t0 = (a[axis] - points[:, axis, None]) * inv[None, :, axis]
                t1 = (b[axis] - points[:, axis, None]) * inv[None, :, axis]
                lo, hi = torch.minimum(t0, t1), torch.maximum(t0, t1)
                near = lo if near is None else torch.maximum(near, lo)
                far = hi if far is None else torch.minimum(far, hi)
            blocked |= (far > near) & (far > 0)
    return blocked


def envmap_irradiance(
    points: Tensor, normals: Tensor, light: EnvLight, scene: SceneName, shadows: bool = True, chunk: int = 2048
) -> Tensor:
    """``[n, 3]`` irradiance ``sum_k power_k V(x, w_k) max(0, n.w_k)`` at surface points (visibility traced from
    the point moved 1e-4 along its normal)."""
    out = []
    dirs, power = light.directions.float(), light.power.float()
    points, normals = points.float(), normals.float()
    for i in range(0, points.shape[0], chunk):
        n = normals[i : i + chunk]
        cosine = (n @ dirs.T).clamp_min(0.0)
        if shadows:
            cosine = cosine * ~_blocked(points[i : i + chunk] + 1e-4 * n, dirs, scene)
        out.append(cosine @ power)
    return torch.cat(out).double() if out else torch.zeros(0, 3, dtype=torch.float64)


def trace(
    origins: Tensor, directions: Tensor, scene: SceneName, light: Optional[EnvLight] = None, shadows: bool = True
) -> Tuple[Tensor, Tensor]:
    """Radiance and hit mask of rays against the scene's primitives.

    Without ``light``: ``albedo * (0.35 + 0.65 max(0, n.sun))``. With an environment light: the linear radiance
    ``albedo * E / pi`` (:func:`envmap_irradiance`).
    """
    t, normals, which = intersect(origins, directions, scene)
    hit = torch.isfinite(t)
    p = origins + directions * torch.where(hit, t, torch.zeros_like(t))[:, None]
    albedo = _albedo(p, which)
    if light is None:
        sun = torch.nn.functional.normalize(torch.tensor(SUN_DIRECTION, dtype=origins.dtype), dim=0)
        shade = 0.35 + 0.65 * (normals * sun).sum(-1).clamp_min(0.0)
        return albedo * shade[:, None], hit
    radiance = torch.zeros_like(albedo)
    radiance[hit] = albedo[hit] * envmap_irradiance(p[hit], normals[hit], light, scene, shadows) / math.pi
    return radiance, hit


def scene_light(spec: SceneSpec) -> Optional[EnvLight]:
    """The environment light of ``spec`` (None for the sun)."""
    if spec.envmap is None:
        return None
    from relight3d.lighting import read_envmap

    return EnvLight.from_envmap(read_envmap(spec.envmap) * spec.envmap_strength, spec.light_height)


def render_view(c2w: np.ndarray, spec: SceneSpec, light: Optional[EnvLight] = None) -> np.ndarray:
    """An RGBA float image ``[H, W, 4]`` (RGB in [0, 1], not premultiplied) from a 3x4 camera-to-world matrix.

    ``light`` is :func:`scene_light` of ``spec`` (read here when not given)."""
    if light is None and spec.envmap is not None:
        light = scene_light(spec)
    res, ss = spec.resolution, spec.supersample
    focal = 0.5 * res / math.tan(0.5 * spec.camera_angle_x)
    sub = (torch.arange(res * ss, dtype=torch.float64) + 0.5) / ss
    v, u = torch.meshgrid(sub, sub, indexing="ij")
    dirs_cam = torch.stack([(u - res / 2) / focal, -(v - res / 2) / focal, -torch.ones_like(u)], -1).reshape(-1, 3)
    rot = torch.from_numpy(c2w[:3, :3])
    dirs = torch.nn.functional.normalize(dirs_cam @ rot.T, dim=-1)
    origins = torch.from_numpy(c2w[:3, 3]).expand_as(dirs)
    rgb, hit = trace(origins, dirs, spec.scene, light, spec.shadows)
    rgb = (rgb * hit[:, None]).reshape(res, ss, res, ss, 3).permute(0, 2, 1, 3, 4).reshape(res, res, ss * ss, 3)
    alpha = hit.double().reshape(res, ss, res, ss).permute(0, 2, 1, 3).reshape(res, res, ss * ss).mean(-1)
    color = rgb.sum(2) / (alpha[..., None] * ss * ss).clamp_min(1e-9)
    if light is not None:
        from relight3d.lighting import linear_to_srgb

        color = linear_to_srgb(color.clamp(0, 1))
    return torch.cat([color.clamp(0, 1), alpha[..., None]], -1).numpy()


def camera_poses(n: int, radius: float, seed: int, elevation_range: Tuple[float, float] = (-15.0, 65.0)) -> List:
    """``n`` seeded camera-to-world matrices looking at the origin from random azimuths and elevations."""
    rng = np.random.default_rng(seed)
    poses = []
    for _ in range(n):
        az = rng.uniform(0.0, 360.0)
        el = math.degrees(math.asin(rng.uniform(*np.sin(np.radians(elevation_range)))))
        poses.append(look_at(orbit_positions(radius, el, az).double()).numpy())
    return poses


def _spec_stamp(spec: SceneSpec, **extra: object) -> str:
    """What identifies a rendered scene: the spec, the content of its map and anything in ``extra``."""
    fields: Dict[str, object] = dict(spec.__dict__, **extra)
    if spec.envmap is not None:
        fields["envmap_sha256"] = hashlib.sha256(Path(spec.envmap).read_bytes()).hexdigest()
    return json.dumps(fields, sort_keys=True)


def _write_split(out: Path, split: str, names: Sequence[str], poses: List, spec: SceneSpec, light) -> None:  # noqa: ANN001
    (out / split).mkdir(parents=True, exist_ok=True)
    frames = []
    for i, c2w in enumerate(poses):
        rgba = render_view(c2w, spec, light)
        Image.fromarray((rgba * 255.0 + 0.5).astype(np.uint8), "RGBA").save(out / split / f"r_{i:03d}.png")
        pose = np.eye(4)
        pose[:3] = c2w
        frames.append({"file_path": f"./{split}/r_{i:03d}", "transform_matrix": pose.tolist()})
    meta = {"camera_angle_x": spec.camera_angle_x, "frames": frames}
    for name in names:
        (out / f"transforms_{name}.json").write_text(json.dumps(meta, indent=1))


def write_blender_scene(out: Path, spec: SceneSpec = SceneSpec(), test_only: bool = False) -> Path:
    """Render ``spec`` into ``out`` in the Blender format and return ``out``. Existing identical scenes are reused.

    ``test_only`` writes only the test split (``transforms_test.json``): the held-out views of the same cameras
    under another light."""
    out = Path(out)
    stamp = out / "scene_spec.json"
    spec_json = _spec_stamp(spec, test_only=test_only)
    if stamp.is_file() and stamp.read_text() == spec_json:
        return out
    light = scene_light(spec)
    if not test_only:
        _write_split(out, "train", ("train",), camera_poses(spec.n_train, spec.radius, spec.seed), spec, light)
    test_names = ("test",) if test_only else ("test", "val")
    _write_split(out, "test", test_names, camera_poses(spec.n_test, spec.radius, spec.seed + 1), spec, light)
    stamp.write_text(spec_json)
    return out


@dataclass(frozen=True)
class RelightingScene:
    """A scene rendered under a source light for training and under target lights for held-out views."""

    scene: Path
    """Blender-format folder: training and test views under the source light; its ``meta.json`` names the source
    map (``lights[0]``, as the Cycles benchmark does), so relighting finds it."""
    source_envmap: Path
    """The source map as rendered (strength applied)."""
    targets: Dict[str, Tuple[Path, Path]]
    """``{light name: (map as rendered, Blender folder of the test views under it)}``."""


def exposure_strength(envmap: Tensor, white: float = 1.0) -> float:
    """The strength at which the brightest Lambertian shading ``E(n) / pi`` of ``envmap`` (over all normals, no
    shadows) is ``white``: a white surface facing the light is just not clipped."""
    from relight3d.lighting import irradiance_map

    peak = float((irradiance_map(envmap.float(), 16) / math.pi).max())
    return white / peak if peak > 0 else 1.0


def write_relighting_scene(
    out: Path, spec: SceneSpec, source: Path, targets: Sequence[Path], exposure: float = 1.0
) -> RelightingScene:
    """Render ``spec`` under the map ``source`` (training and test views) and its test views under each of
    ``targets``, every map scaled by :func:`exposure_strength` (times ``exposure``).

    Layout: ``out/envmaps/<name>.exr`` (the maps as rendered), ``out/scene/`` (Blender format under the source
    light, with ``meta.json`` and ``envmaps/<source>.exr``), ``out/eval/<name>/`` (``transforms_test.json`` and
    ``test/r_XXX.png`` under each target light). Light names are the maps' file stems, made safe for file names.
    """
    from relight3d.lighting import read_envmap, write_envmap
    from relight3d.output_names import OutputNames

    out = Path(out)
    names = OutputNames()
    rendered: Dict[str, Path] = {}
    for path in [source, *targets]:
        name = names.add(Path(path).stem)
        env = read_envmap(path)
        scaled = out / "envmaps" / f"{name}.exr"
        scaled.parent.mkdir(parents=True, exist_ok=True)
        write_envmap(scaled, env * exposure * exposure_strength(env))
        rendered[name] = scaled
    source_name, *target_names = list(rendered)
    scene = out / "scene"
    scene_map = scene / "envmaps" / f"{source_name}.exr"
    scene_map.parent.mkdir(parents=True, exist_ok=True)
    scene_map.write_bytes(rendered[source_name].read_bytes())
    write_blender_scene(scene, replace(spec, envmap=str(scene_map), envmap_strength=1.0))
    meta = {"lights": [{"name": source_name, "file": f"envmaps/{source_name}.exr", "strength": 1.0}]}
    (scene / "meta.json").write_text(json.dumps(meta, indent=1))
    evals: Dict[str, Tuple[Path, Path]] = {}
    for name in target_names:
        folder = out / "eval" / name
        write_blender_scene(folder, replace(spec, envmap=str(rendered[name]), envmap_strength=1.0), test_only=True)
        evals[name] = (rendered[name], folder)
    return RelightingScene(scene=scene, source_envmap=scene_map, targets=evals)
