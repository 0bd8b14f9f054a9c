#!/usr/bin/env python3
"""Render a path-traced ground-truth object scene with Blender Cycles (``bpy`` wheel).

The scene is a real scanned mesh (the Stanford bunny shipped in Debian's ``libcgal-demo``
data tarball) with a two-tone Principled BSDF, lit only by one of the HDR environment maps
that ship inside ``bpy`` (``datafiles/studiolights/world/*.exr``). The background is
rendered transparent, so every PNG is RGBA with the object's coverage as alpha.

Outputs, all under ``--out``:

* ``transforms_{train,val,test}.json`` + ``{train,test}/r_XXX.png``: the Blender/NeRF
  synthetic layout read by nerfstudio's ``blender-data`` dataparser (``val`` == ``test``).
  ``transform_matrix`` is camera-to-world in the Blender/OpenGL camera convention
  (camera looks down -Z, +Y is up); the world is Z-up.
* ``objaverse/``: the Objaverse / Neural Gaffer layout: ``{view:03d}_RT.npy`` (3x4
  world-to-camera, same camera convention), ``{view:03d}_{light:03d}_{env}.png``
  (hard links to the PNGs above; views 0-99 train, 100-119 test) and ``envmaps/{env}.exr``.
* ``mesh.ply``: the normalised, Z-up mesh with its per-vertex albedo (binary PLY).
* ``meta.json``: versions, settings, seeds, sources, render times and sha256 of every image.

Run it with the Python that has ``bpy==5.0.1`` installed (Python 3.11), e.g.::

    /work/bpyvenv/bin/python datasets/render_object_scene.py               # render (or reuse cache)
    /work/bpyvenv/bin/python datasets/render_object_scene.py --check-noise # + seed-to-seed PSNR

Only the rendering functions need ``bpy``; it is imported lazily so that the camera maths and
the cache check can be imported from an environment without it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

# Bump whenever the rendered content for identical settings would change.
SCENE_FORMAT_VERSION = 1

DEFAULT_OUT = Path("~/.cache/relight3d/scenes/bunny128").expanduser()
CGAL_DATA_TARBALL = "/usr/share/doc/libcgal-dev/data.tar.gz"
CGAL_BUNNY_MEMBER = "data/meshes/bunny00.off"
DEFAULT_MESH = f"{CGAL_DATA_TARBALL}::{CGAL_BUNNY_MEMBER}"

SENSOR_WIDTH_MM = 32.0
LENS_MM = 35.0

# Two-tone albedo (linear RGB): terracotta and warm cream.
ALBEDO_A = (0.62, 0.20, 0.08)
ALBEDO_B = (0.60, 0.55, 0.42)


# --------------------------------------------------------------------------------------
# Mesh loading and preparation (numpy only)
# --------------------------------------------------------------------------------------


def _read_mesh_text(source: str) -> tuple[str, str]:
    """Return ``(text, description)`` of a mesh given a path or ``tarball::member``."""
    if "::" in source:
        tar_path, member = source.split("::", 1)
        with tarfile.open(tar_path, "r:*") as tar:
            handle = tar.extractfile(member)
            if handle is None:
                raise FileNotFoundError(f"{member} is not a regular file in {tar_path}")
            return handle.read().decode("ascii"), source
    path = Path(source).expanduser()
    return path.read_text(encoding="ascii"), str(path.resolve())


def load_off(source: str) -> tuple[np.ndarray, np.ndarray]:
    """Load an ASCII OFF mesh (plain path or ``tarball::member``) as ``(verts [V,3], tris [F,3])``.

    Polygons with more than three corners are fan-triangulated; comments are ignored.
    """
    text, _ = _read_mesh_text(source)
    tokens: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            tokens.extend(line.split())
    if not tokens or not tokens[0].endswith("OFF"):
        raise ValueError(f"{source} is not an OFF file")
    pos = 1
    n_verts, n_faces = int(tokens[pos]), int(tokens[pos + 1])
    pos += 3
    verts = np.asarray(tokens[pos : pos + 3 * n_verts], dtype=np.float64).reshape(n_verts, 3)
    pos += 3 * n_verts
    tris: list[tuple[int, int, int]] = []
    for _ in range(n_faces):
        count = int(tokens[pos])
        idx = [int(t) for t in tokens[pos + 1 : pos + 1 + count]]
        pos += 1 + count
        tris.extend((idx[0], idx[k], idx[k + 1]) for k in range(1, count - 1))
    return verts, np.asarray(tris, dtype=np.int64)


def y_up_to_z_up(verts: np.ndarray) -> np.ndarray:
    """Rotate +90 deg about X so that a Y-up scan stands upright in Blender's Z-up world."""
    x, y, z = verts.T
    return np.stack([x, -z, y], axis=1)


def normalize_to_sphere(verts: np.ndarray, radius: float) -> np.ndarray:
    """Centre the bounding box at the origin and scale so the farthest vertex is at ``radius``."""
    centre = 0.5 * (verts.min(axis=0) + verts.max(axis=0))
    centred = verts - centre
    return centred * (radius / np.linalg.norm(centred, axis=1).max())


def two_tone_albedo(verts: np.ndarray) -> np.ndarray:
    """Per-vertex linear-RGB albedo: smooth low-frequency blotches of two colours.

    The pattern is a soft threshold of a sum of a few sinusoids of the (normalised) position,
    so it is deterministic, resolution independent and varies on a scale of ~0.3 units.
    """
    x, y, z = verts.T
    field = np.sin(4.0 * x + 0.5) + np.sin(3.5 * y - 1.0) + np.sin(5.0 * z + 0.3) + 0.6 * np.sin(3.0 * (x + y - z))
    t = np.clip(0.5 + 0.5 * field / 0.35, 0.0, 1.0)
    t = t * t * (3.0 - 2.0 * t)  # smoothstep
    a, b = np.asarray(ALBEDO_A), np.asarray(ALBEDO_B)
    return a[None] * (1.0 - t[:, None]) + b[None] * t[:, None]


def write_ply(path: Path, verts: np.ndarray, tris: np.ndarray, colors: np.ndarray) -> None:
    """Write a binary little-endian PLY with float positions, uchar RGB (sRGB-encoded) and triangles."""
    srgb = np.where(colors <= 0.0031308, 12.92 * colors, 1.055 * np.power(colors, 1 / 2.4) - 0.055)
    vdtype = np.dtype([("p", "<f4", 3), ("c", "u1", 3)])
    vdata = np.empty(len(verts), dtype=vdtype)
    vdata["p"] = verts
    vdata["c"] = np.round(np.clip(srgb, 0, 1) * 255)
    fdtype = np.dtype([("n", "u1"), ("i", "<i4", 3)])
    fdata = np.empty(len(tris), dtype=fdtype)
    fdata["n"] = 3
    fdata["i"] = tris
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(verts)}\nproperty float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\n"
        f"element face {len(tris)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(vdata.tobytes())
        f.write(fdata.tobytes())


# --------------------------------------------------------------------------------------
# Cameras (numpy only)
# --------------------------------------------------------------------------------------


def camera_angle_x(lens_mm: float = LENS_MM, sensor_mm: float = SENSOR_WIDTH_MM) -> float:
    """Horizontal field of view (radians) of a pinhole camera with the given lens and sensor width."""
    return 2.0 * math.atan(0.5 * sensor_mm / lens_mm)


def sample_camera_positions(n: int, radius: float, seed: int, min_elevation_deg: float) -> np.ndarray:
    """Sample ``n`` positions uniformly (by area) on the sphere cap above ``min_elevation_deg``."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(math.sin(math.radians(min_elevation_deg)), 1.0, size=n)
    phi = rng.uniform(0.0, 2.0 * math.pi, size=n)
    r_xy = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    return radius * np.stack([r_xy * np.cos(phi), r_xy * np.sin(phi), z], axis=1)


def look_at(position: np.ndarray, target: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Camera-to-world 4x4 (OpenGL/Blender camera: looks down -Z, +Y up) for a Z-up world."""
    position = np.asarray(position, dtype=np.float64)
    back = position - np.asarray(target, dtype=np.float64)
    back /= np.linalg.norm(back)
    up = np.array([0.0, 0.0, 1.0])
    if abs(back @ up) > 0.999:  # looking straight down/up: any horizontal "up" will do
        up = np.array([0.0, 1.0, 0.0])
    right = np.cross(up, back)
    right /= np.linalg.norm(right)
    cam_up = np.cross(back, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, cam_up, back, position
    return c2w


def camera_poses(n: int, seed: int, args: argparse.Namespace) -> list[np.ndarray]:
    """Camera-to-world matrices of ``n`` seeded cameras looking at the origin."""
    positions = sample_camera_positions(n, args.camera_distance, seed, args.min_elevation_deg)
    return [look_at(p) for p in positions]


# --------------------------------------------------------------------------------------
# Settings and cache
# --------------------------------------------------------------------------------------


def build_settings(args: argparse.Namespace) -> dict:
    """Everything that determines the rendered content (used as the cache key)."""
    return {
        "format_version": SCENE_FORMAT_VERSION,
        "mesh": args.mesh,
        "object_radius": args.object_radius,
        "env": args.env,
        "env_strength": args.env_strength,
        "resolution": args.resolution,
        "lens_mm": LENS_MM,
        "sensor_width_mm": SENSOR_WIDTH_MM,
        "camera_distance": args.camera_distance,
        "min_elevation_deg": args.min_elevation_deg,
        "n_train": args.n_train,
        "n_test": args.n_test,
        "camera_seed_train": args.camera_seed_train,
        "camera_seed_test": args.camera_seed_test,
        "spp_train": args.spp_train,
        "spp_test": args.spp_test,
        "render_seed_train": args.render_seed_train,
        "render_seed_test": args.render_seed_test,
        "adaptive_threshold_train": args.adaptive_threshold_train,
        "adaptive_threshold_test": args.adaptive_threshold_test,
        "clamp_indirect": args.clamp_indirect,
        "max_bounces": args.max_bounces,
        "roughness": args.roughness,
    }


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def scene_is_cached(out: Path, settings: dict, verify_hashes: bool = True) -> bool:
    """Return True if ``out/meta.json`` is complete, matches ``settings`` and all listed images are intact."""
    meta_path = out / "meta.json"
    if not meta_path.is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        return False
    if not meta.get("complete") or meta.get("settings") != settings:
        return False
    for rel, digest in meta.get("sha256", {}).items():
        path = out / rel
        if not path.is_file() or (verify_hashes and sha256_file(path) != digest):
            return False
    return all((out / f"transforms_{split}.json").is_file() for split in ("train", "val", "test"))


# --------------------------------------------------------------------------------------
# Blender scene (needs bpy)
# --------------------------------------------------------------------------------------


def studiolight_world_dir() -> Path:
    """Directory of the HDR world maps shipped with bpy (``datafiles/studiolights/world``)."""
    import bpy

    path = bpy.utils.system_resource("DATAFILES", path="studiolights/world")
    if not path or not Path(path).is_dir():
        raise FileNotFoundError("bpy ships no datafiles/studiolights/world directory")
    return Path(path)


def resolve_env_path(env: str) -> Path:
    """Map an env name (stem of a bundled studiolight, e.g. ``courtyard``) or a file path to a path."""
    candidate = Path(env).expanduser()
    if candidate.suffix and candidate.is_file():
        return candidate.resolve()
    path = studiolight_world_dir() / f"{env}.exr"
    if not path.is_file():
        names = sorted(p.stem for p in studiolight_world_dir().glob("*.exr"))
        raise FileNotFoundError(f"unknown env map {env!r}; bundled: {names}")
    return path


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence C-level stdout (Cycles prints per-tile progress) for the duration of the block."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def build_scene(verts: np.ndarray, tris: np.ndarray, colors: np.ndarray, env_path: Path, args: argparse.Namespace):
    """Create the Blender scene from scratch; returns ``(scene, camera_object)``."""
    import bpy

    with quiet_stdout():
        bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene

    # Mesh with per-vertex albedo and smooth shading.
    mesh = bpy.data.meshes.new("object")
    mesh.vertices.add(len(verts))
    mesh.vertices.foreach_set("co", verts.astype(np.float32).ravel())
    mesh.loops.add(3 * len(tris))
    mesh.loops.foreach_set("vertex_index", tris.astype(np.int32).ravel())
    mesh.polygons.add(len(tris))
    mesh.polygons.foreach_set("loop_start", np.arange(0, 3 * len(tris), 3, dtype=np.int32))
    mesh.update(calc_edges=True)
    mesh.validate()
    mesh.shade_smooth()
    color_attr = mesh.color_attributes.new("albedo", "FLOAT_COLOR", "POINT")
    rgba = np.concatenate([colors, np.ones((len(colors), 1))], axis=1).astype(np.float32)
    color_attr.data.foreach_set("color", rgba.ravel())
    obj = bpy.data.objects.new("object", mesh)
    scene.collection.objects.link(obj)

    material = bpy.data.materials.new("object_material")
    if bpy.app.version < (5, 0, 0):  # node trees are always on from Blender 5.0
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    bsdf = next(n for n in nodes if n.type == "BSDF_PRINCIPLED")
    bsdf.inputs["Roughness"].default_value = args.roughness
    bsdf.inputs["Metallic"].default_value = 0.0
    attr = nodes.new("ShaderNodeVertexColor")
    attr.layer_name = "albedo"
    links.new(attr.outputs["Color"], bsdf.inputs["Base Color"])
    mesh.materials.append(material)

    # World: the HDR map only (no rotation, Blender's equirectangular convention).
    world = bpy.data.worlds.new("world")
    scene.world = world
    if bpy.app.version < (5, 0, 0):
        world.use_nodes = True
    wnodes, wlinks = world.node_tree.nodes, world.node_tree.links
    background = next(n for n in wnodes if n.type == "BACKGROUND")
    background.inputs["Strength"].default_value = args.env_strength
    env_node = wnodes.new("ShaderNodeTexEnvironment")
    env_node.image = bpy.data.images.load(str(env_path), check_existing=True)
    wlinks.new(env_node.outputs["Color"], background.inputs["Color"])

    # Camera.
    cam_data = bpy.data.cameras.new("camera")
    cam_data.sensor_fit = "HORIZONTAL"
    cam_data.sensor_width = SENSOR_WIDTH_MM
    cam_data.lens = LENS_MM
    cam_data.clip_start, cam_data.clip_end = 0.05, 100.0
    cam = bpy.data.objects.new("camera", cam_data)
    scene.collection.objects.link(cam)
    scene.camera = cam

    # Render settings: Cycles on CPU, no denoiser, transparent film, sRGB "Standard" view.
    render = scene.render
    render.engine = "CYCLES"
    render.resolution_x = render.resolution_y = args.resolution
    render.resolution_percentage = 100
    render.pixel_aspect_x = render.pixel_aspect_y = 1.0
    render.film_transparent = True
    render.threads_mode = "FIXED"
    render.threads = args.threads
    render.use_persistent_data = True
    render.image_settings.file_format = "PNG"
    render.image_settings.color_mode = "RGBA"
    render.image_settings.color_depth = "8"
    render.image_settings.compression = 15
    scene.display_settings.display_device = "sRGB"
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0

    cycles = scene.cycles
    cycles.device = "CPU"
    cycles.use_denoising = False
    cycles.use_adaptive_sampling = True
    cycles.sample_clamp_direct = 0.0
    cycles.sample_clamp_indirect = args.clamp_indirect
    cycles.max_bounces = args.max_bounces
    cycles.diffuse_bounces = args.max_bounces
    cycles.glossy_bounces = args.max_bounces
    cycles.transmission_bounces = 0
    cycles.volume_bounces = 0
    cycles.transparent_max_bounces = 0
    cycles.caustics_reflective = False
    cycles.caustics_refractive = False
    cycles.use_animated_seed = False
    return scene, cam


def render_views(
    scene,
    cam,
    c2ws: Sequence[np.ndarray],
    paths: Sequence[Path],
    samples: int,
    adaptive_threshold: float,
    seed: int,
    label: str,
) -> float:
    """Render one PNG per camera; view ``i`` uses Cycles seed ``seed + i``. Returns seconds taken."""
    import bpy
    from mathutils import Matrix

    scene.cycles.samples = samples
    scene.cycles.adaptive_threshold = adaptive_threshold
    scene.cycles.adaptive_min_samples = 0  # automatic
    start, cpu_start = time.perf_counter(), time.process_time()
    for i, (c2w, path) in enumerate(zip(c2ws, paths, strict=True)):
        cam.matrix_world = Matrix(c2w.tolist())
        scene.cycles.seed = seed + i
        scene.render.filepath = str(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with quiet_stdout():
            bpy.ops.render.render(write_still=True)
        elapsed = time.perf_counter() - start
        print(f"\r[{label}] {i + 1}/{len(paths)} views, {elapsed:.0f} s", end="", flush=True)
    cpu = time.process_time() - cpu_start
    print(f" (CPU time {cpu:.0f} s)", flush=True)
    return time.perf_counter() - start


# --------------------------------------------------------------------------------------
# Output writers
# --------------------------------------------------------------------------------------


def write_transforms(out: Path, split: str, image_dir: str, c2ws: Sequence[np.ndarray], fov_x: float) -> None:
    """Write ``transforms_{split}.json`` in the Blender/NeRF-synthetic format."""
    frames = [
        {"file_path": f"./{image_dir}/r_{i:03d}", "transform_matrix": np.asarray(c2w).tolist()}
        for i, c2w in enumerate(c2ws)
    ]
    (out / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": fov_x, "frames": frames}, indent=2))


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (replacing it), falling back to a copy across file systems."""
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_objaverse(out: Path, images: Sequence[Path], c2ws: Sequence[np.ndarray], env_path: Path) -> list[Path]:
    """Write the Objaverse / Neural Gaffer layout under ``out/objaverse``; returns the image paths."""
    obj_dir = out / "objaverse"
    (obj_dir / "envmaps").mkdir(parents=True, exist_ok=True)
    env_name = env_path.stem
    shutil.copy2(env_path, obj_dir / "envmaps" / env_path.name)
    written = []
    for view, (image, c2w) in enumerate(zip(images, c2ws, strict=True)):
        w2c = np.linalg.inv(np.asarray(c2w, dtype=np.float64))[:3, :4]
        np.save(obj_dir / f"{view:03d}_RT.npy", w2c)
        dst = obj_dir / f"{view:03d}_{0:03d}_{env_name}.png"
        link_or_copy(image, dst)
        written.append(dst)
    return written


# --------------------------------------------------------------------------------------
# Noise check
# --------------------------------------------------------------------------------------


def _load_rgba(path: Path) -> np.ndarray:
    """Load an 8-bit RGBA PNG as float in [0, 1] with shape [H, W, 4]."""
    import imageio.v3 as iio

    image = iio.imread(path).astype(np.float64) / 255.0
    if image.shape[-1] != 4:
        raise ValueError(f"{path} is not RGBA")
    return image


def pair_psnr(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, int]:
    """PSNRs of two RGBA renders composited on white: ``(in_mask, full, mse_in_mask, n_mask_px)``.

    The mask is ``alpha > 0.5`` in either image.
    """
    rgb_a = a[..., :3] * a[..., 3:] + (1.0 - a[..., 3:])
    rgb_b = b[..., :3] * b[..., 3:] + (1.0 - b[..., 3:])
    sq = (rgb_a - rgb_b) ** 2
    mask = (a[..., 3] > 0.5) | (b[..., 3] > 0.5)
    mse_mask = float(sq[mask].mean()) if mask.any() else 0.0
    mse_full = float(sq.mean())

    def to_psnr(mse: float) -> float:
        return float("inf") if mse == 0 else -10.0 * math.log10(mse)

    return to_psnr(mse_mask), to_psnr(mse_full), mse_mask, int(mask.sum())


def check_noise(scene, cam, out: Path, test_c2ws: Sequence[np.ndarray], args: argparse.Namespace) -> dict:
    """Render the test views with a second seed and compare to the stored test renders.

    The stored test views were rendered with ``--render-seed-test``; the check uses
    ``--noise-seed`` (per-view offsets identical), so it measures seed-to-seed agreement.
    """
    reference = [out / "test" / f"r_{i:03d}.png" for i in range(len(test_c2ws))]
    with tempfile.TemporaryDirectory(prefix="noise_check_") as tmp:
        paths = [Path(tmp) / f"r_{i:03d}.png" for i in range(len(test_c2ws))]
        seconds = render_views(
            scene, cam, test_c2ws, paths, args.spp_test, args.adaptive_threshold_test, args.noise_seed, "noise-check"
        )
        stats = [pair_psnr(_load_rgba(r), _load_rgba(p)) for r, p in zip(reference, paths, strict=True)]
    in_mask = np.array([s[0] for s in stats])
    full = np.array([s[1] for s in stats])
    pooled_mse = sum(s[2] * s[3] for s in stats) / max(1, sum(s[3] for s in stats))
    result = {
        "seeds": [args.render_seed_test, args.noise_seed],
        "render_seconds": round(seconds, 1),
        "in_mask_psnr_mean": float(in_mask.mean()),
        "in_mask_psnr_min": float(in_mask.min()),
        "in_mask_psnr_pooled": -10.0 * math.log10(pooled_mse) if pooled_mse > 0 else float("inf"),
        "full_psnr_mean": float(full.mean()),
        "full_psnr_min": float(full.min()),
        "per_view_in_mask_psnr": [round(float(v), 2) for v in in_mask],
    }
    print(
        f"noise check (seed {args.render_seed_test} vs {args.noise_seed}, {len(stats)} test views, "
        f"{args.spp_test} spp, {seconds:.0f} s):\n"
        f"  in-mask PSNR  mean {result['in_mask_psnr_mean']:.2f} dB, min {result['in_mask_psnr_min']:.2f} dB, "
        f"pooled {result['in_mask_psnr_pooled']:.2f} dB\n"
        f"  full-image PSNR mean {result['full_psnr_mean']:.2f} dB, min {result['full_psnr_min']:.2f} dB"
    )
    return result


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line interface."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output scene directory")
    p.add_argument("--mesh", default=DEFAULT_MESH, help="OFF mesh: a path or 'tarball::member'")
    p.add_argument("--mesh-up", choices=("y", "z"), default="y", help="up axis of the mesh file")
    p.add_argument("--object-radius", type=float, default=0.9, help="radius of the origin-centred bounding sphere")
    p.add_argument("--env", default="courtyard", help="bundled studiolight name (city, courtyard, ...) or .exr path")
    p.add_argument("--env-strength", type=float, default=0.7, help="background strength (0.7 keeps <1%% clipped)")
    p.add_argument("--roughness", type=float, default=0.5)
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--camera-distance", type=float, default=4.0)
    p.add_argument("--min-elevation-deg", type=float, default=-10.0, help="lowest camera elevation")
    p.add_argument("--n-train", type=int, default=100)
    p.add_argument("--n-test", type=int, default=20)
    p.add_argument("--camera-seed-train", type=int, default=0)
    p.add_argument("--camera-seed-test", type=int, default=1)
    p.add_argument("--spp-train", type=int, default=64, help="max samples per pixel (train)")
    p.add_argument("--spp-test", type=int, default=512, help="max samples per pixel (test)")
    p.add_argument("--adaptive-threshold-train", type=float, default=0.01)
    p.add_argument("--adaptive-threshold-test", type=float, default=0.003)
    p.add_argument("--render-seed-train", type=int, default=0, help="Cycles seed of train view 0 (+i for view i)")
    p.add_argument("--render-seed-test", type=int, default=1000, help="Cycles seed of test view 0 (+i for view i)")
    p.add_argument("--clamp-indirect", type=float, default=1.0, help="cycles.sample_clamp_indirect (0 = off)")
    p.add_argument("--max-bounces", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--force", action="store_true", help="re-render even if a matching cache exists")
    p.add_argument("--check-noise", action="store_true", help="re-render test views with --noise-seed, print PSNR")
    p.add_argument("--noise-seed", type=int, default=5000)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Render (or reuse) the scene and optionally run the seed-to-seed noise check."""
    args = parse_args(argv)
    out: Path = args.out.expanduser().resolve()
    settings = build_settings(args)
    cached = not args.force and scene_is_cached(out, settings)
    if cached:
        print(f"scene is cached (meta.json matches the requested settings): {out}")
        if not args.check_noise:
            return 0

    import bpy

    env_path = resolve_env_path(args.env)
    verts, tris = load_off(args.mesh)
    if args.mesh_up == "y":
        verts = y_up_to_z_up(verts)
    verts = normalize_to_sphere(verts, args.object_radius)
    colors = two_tone_albedo(verts)
    fov_x = camera_angle_x()
    train_c2ws = camera_poses(args.n_train, args.camera_seed_train, args)
    test_c2ws = camera_poses(args.n_test, args.camera_seed_test, args)
    scene, cam = build_scene(verts, tris, colors, env_path, args)

    if not cached:
        out.mkdir(parents=True, exist_ok=True)
        for stale in ("meta.json", "noise_check.json"):  # an interrupted render leaves no valid meta
            (out / stale).unlink(missing_ok=True)
        train_imgs = [out / "train" / f"r_{i:03d}.png" for i in range(args.n_train)]
        test_imgs = [out / "test" / f"r_{i:03d}.png" for i in range(args.n_test)]
        t_train = render_views(
            scene,
            cam,
            train_c2ws,
            train_imgs,
            args.spp_train,
            args.adaptive_threshold_train,
            args.render_seed_train,
            "train",
        )
        t_test = render_views(
            scene, cam, test_c2ws, test_imgs, args.spp_test, args.adaptive_threshold_test, args.render_seed_test, "test"
        )
        for split, image_dir, c2ws in (("train", "train", train_c2ws), ("val", "test", test_c2ws)):
            write_transforms(out, split, image_dir, c2ws, fov_x)
        write_transforms(out, "test", "test", test_c2ws, fov_x)
        objaverse_imgs = write_objaverse(out, train_imgs + test_imgs, train_c2ws + test_c2ws, env_path)
        write_ply(out / "mesh.ply", verts, tris, colors)
        images = train_imgs + test_imgs + objaverse_imgs
        meta = {
            "complete": True,
            "settings": settings,
            "blender_version": bpy.app.version_string,
            "bpy_version": ".".join(str(v) for v in bpy.app.version),
            "python": sys.version.split()[0],
            "object_source": args.mesh,
            "object_n_vertices": len(verts),
            "object_n_triangles": len(tris),
            "object_transform": f"{'Y-up->Z-up, ' if args.mesh_up == 'y' else ''}bbox-centred, "
            f"max vertex radius {args.object_radius}",
            "albedo": {"type": "per-vertex two-tone, linear RGB", "a": ALBEDO_A, "b": ALBEDO_B},
            "env_map": str(env_path),
            "env_map_sha256": sha256_file(env_path),
            "env_mapping": "Blender equirectangular, no rotation: u = 0.5 - atan2(d.y, d.x) / (2 pi), "
            "v = 0.5 + asin(d.z) / pi (v = 1 at the image top row)",
            "camera_angle_x": fov_x,
            "samples": {"train": args.spp_train, "val": args.spp_test, "test": args.spp_test},
            "adaptive_threshold": {"train": args.adaptive_threshold_train, "test": args.adaptive_threshold_test},
            "seeds": {
                "camera_train": args.camera_seed_train,
                "camera_test": args.camera_seed_test,
                "render_train": f"{args.render_seed_train} + view index",
                "render_test": f"{args.render_seed_test} + view index",
            },
            "render_seconds": {"train": round(t_train, 1), "test": round(t_test, 1)},
            "threads": args.threads,
            "sha256": {str(p.relative_to(out)): sha256_file(p) for p in images},
        }
        (out / "meta.json").write_text(json.dumps(meta, indent=2))
        print(f"wrote {out} (train {t_train:.0f} s, test {t_test:.0f} s)")

    if args.check_noise:
        result = check_noise(scene, cam, out, test_c2ws, args)
        (out / "noise_check.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
