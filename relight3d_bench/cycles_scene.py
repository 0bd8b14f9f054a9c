"""Blender side of the generator: the Cycles scene, cameras read back, writers, the cache check and the noise metric.

Used by ``datasets/render_object_scene.py`` (the bunny development scene) and by
:mod:`relight3d_bench.render_benchmark` (the relighting benchmark), in a Python that has ``bpy``: that Python needs
numpy, Pillow and ``bpy`` only (no torch); the meshes come from :mod:`relight3d_bench.meshes`. Camera poses are
computed in relight3d's Python (:mod:`relight3d_bench.cameras`) and read here from a JSON file (:func:`read_cameras`).
``bpy`` (and ``mathutils``) are imported inside the functions marked "needs bpy", so the rest imports without Blender.

Conventions: the world is Z-up; a camera-to-world matrix uses the Blender/OpenGL camera axes (the camera looks down
its -Z axis, +Y is up in the image); the world is lit only by an equirectangular environment map with Blender's
default mapping (no rotation).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Optional

import numpy as np

SENSOR_WIDTH_MM = 32.0
"""Camera sensor width (horizontal fit)."""
LENS_MM = 35.0
"""Camera focal length."""
ENV_MAPPING = (
    "Blender equirectangular, no rotation: u = 0.5 - atan2(d.y, d.x) / (2 pi), v = 0.5 + asin(d.z) / pi "
    "(v = 1 at the image top row)"
)
"""How a world direction ``d`` maps to the environment image (Blender's default Environment Texture mapping)."""


# --------------------------------------------------------------------------------------
# Cameras (numpy only)
# --------------------------------------------------------------------------------------


def camera_angle_x(lens_mm: float = LENS_MM, sensor_mm: float = SENSOR_WIDTH_MM) -> float:
    """Horizontal field of view (radians) of a pinhole camera with the given lens and sensor width."""
    return 2.0 * math.atan(0.5 * sensor_mm / lens_mm)


def read_cameras(path: Path) -> dict[str, list[np.ndarray]]:
    """``{split: [camera-to-world 4x4 float64, ...]}`` from the JSON that :func:`relight3d_bench.cameras.write_cameras`
    wrote."""
    return {
        split: [np.asarray(c2w, dtype=np.float64) for c2w in c2ws]
        for split, c2ws in json.loads(path.read_text()).items()
    }


def world_to_camera_rt(c2w: np.ndarray) -> np.ndarray:
    """The ``[3, 4]`` world-to-camera matrix (Objaverse ``*_RT.npy``) of a camera-to-world matrix."""
    return np.linalg.inv(np.asarray(c2w, dtype=np.float64))[:3, :4]


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (replacing it), falling back to a copy across file systems."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_transforms(
    out: Path,
    split: str,
    image_dir: str,
    c2ws: Sequence[np.ndarray],
    fov_x: float,
    extra: Optional[dict[str, Any]] = None,
) -> Path:
    """Write ``out/transforms_{split}.json`` (Blender/NeRF-synthetic format); ``extra`` adds top-level keys."""
    frames = [
        {"file_path": f"./{image_dir}/r_{i:03d}", "transform_matrix": np.asarray(c2w).tolist()}
        for i, c2w in enumerate(c2ws)
    ]
    content = {"camera_angle_x": fov_x, **(extra or {}), "frames": frames}
    path = out / f"transforms_{split}.json"
    path.write_text(json.dumps(content, indent=2))
    return path


# --------------------------------------------------------------------------------------
# Blender scene (needs bpy)
# --------------------------------------------------------------------------------------


def studiolight_world_dir() -> Path:
    """Directory of the HDR world maps shipped with bpy (``datafiles/studiolights/world``). Needs bpy."""
    import bpy

    path = bpy.utils.system_resource("DATAFILES", path="studiolights/world")
    if not path or not Path(path).is_dir():
        raise FileNotFoundError("bpy ships no datafiles/studiolights/world directory")
    return Path(path)


def resolve_env_path(env: str) -> Path:
    """Map an env name (stem of a bundled studiolight, e.g. ``courtyard``) or a file path to a path. Needs bpy."""
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


def build_scene(
    verts: np.ndarray,
    tris: np.ndarray,
    colors: np.ndarray,
    env_path: Path,
    *,
    env_strength: float,
    roughness: float,
    resolution: int,
    threads: int,
    clamp_indirect: float,
    max_bounces: int,
    embed_render_metadata: bool = True,
    metallic: float = 0.0,
):
    """Create the Blender scene from scratch; returns ``(scene, camera_object)``. Needs bpy.

    The object is a smooth-shaded mesh with a per-vertex albedo (Principled BSDF, ``metallic``: 0 is a dielectric);
    the world is the HDR map only (see :func:`set_environment`); the camera is a 35 mm lens on a 32 mm sensor.
    Cycles renders on the CPU with adaptive sampling, no denoiser and a transparent film; PNGs are RGBA with the
    "Standard" (sRGB) view.
    With ``embed_render_metadata=False`` the images carry no date / render-time text, so identical renders give
    identical files (and hashes).
    """
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
    bsdf.inputs["Roughness"].default_value = roughness
    bsdf.inputs["Metallic"].default_value = metallic
    attr = nodes.new("ShaderNodeVertexColor")
    attr.layer_name = "albedo"
    links.new(attr.outputs["Color"], bsdf.inputs["Base Color"])
    mesh.materials.append(material)

    # World: the HDR map only.
    world = bpy.data.worlds.new("world")
    scene.world = world
    if bpy.app.version < (5, 0, 0):
        world.use_nodes = True
    set_environment(scene, env_path, env_strength)

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
    render.resolution_x = render.resolution_y = resolution
    render.resolution_percentage = 100
    render.pixel_aspect_x = render.pixel_aspect_y = 1.0
    render.film_transparent = True
    render.threads_mode = "FIXED"
    render.threads = threads
    render.use_persistent_data = True
    if not embed_render_metadata:
        for prop in render.bl_rna.properties:
            if prop.identifier.startswith("use_stamp") and prop.type == "BOOLEAN":
                setattr(render, prop.identifier, False)
    set_png_output(scene)
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
    cycles.sample_clamp_indirect = clamp_indirect
    cycles.max_bounces = max_bounces
    cycles.diffuse_bounces = max_bounces
    cycles.glossy_bounces = max_bounces
    cycles.transmission_bounces = 0
    cycles.volume_bounces = 0
    cycles.transparent_max_bounces = 0
    cycles.caustics_reflective = False
    cycles.caustics_refractive = False
    cycles.use_animated_seed = False
    return scene, cam


def set_environment(scene, env_path: Path, strength: float) -> None:
    """Light the world with the equirectangular map at ``env_path`` times ``strength`` (no rotation). Needs bpy.

    Replaces the previous map, so one scene can be re-lit between renders.
    """
    import bpy

    nodes, links = scene.world.node_tree.nodes, scene.world.node_tree.links
    background = next(n for n in nodes if n.type == "BACKGROUND")
    background.inputs["Strength"].default_value = strength
    env_node = next((n for n in nodes if n.type == "TEX_ENVIRONMENT"), None)
    if env_node is None:
        env_node = nodes.new("ShaderNodeTexEnvironment")
        links.new(env_node.outputs["Color"], background.inputs["Color"])
    env_node.image = bpy.data.images.load(str(env_path), check_existing=True)


def set_png_output(scene) -> None:
    """8-bit RGBA PNG output (straight alpha, sRGB through the scene's view transform). Needs bpy."""
    settings = scene.render.image_settings
    settings.file_format = "PNG"
    settings.color_mode = "RGBA"
    settings.color_depth = "8"
    settings.compression = 15


def _save_render_exr(scene, path: Path) -> None:
    """Save the current Render Result as a linear half-float RGBA EXR (premultiplied alpha), then restore PNG."""
    import bpy

    settings = scene.render.image_settings
    settings.file_format = "OPEN_EXR"
    settings.color_mode = "RGBA"
    settings.color_depth = "16"
    settings.exr_codec = "ZIP"
    try:
        bpy.data.images["Render Result"].save_render(str(path), scene=scene)
    finally:
        set_png_output(scene)


class RenderTime(NamedTuple):
    """Time taken by a batch of renders."""

    wall_seconds: float
    """Elapsed time."""
    cpu_seconds: float
    """CPU time of the rendering process (all threads): less sensitive to other load on the machine."""


def render_views(
    scene,
    cam,
    c2ws: Sequence[np.ndarray],
    paths: Sequence[Path],
    samples: int,
    adaptive_threshold: float,
    seed: int,
    label: str,
    write_exr: bool = False,
) -> RenderTime:
    """Render one RGBA PNG per camera; view ``i`` uses Cycles seed ``seed + i``. Needs bpy.

    Args:
        scene: the scene from :func:`build_scene`.
        cam: its camera object.
        c2ws: camera-to-world matrices.
        paths: one ``.png`` path per camera.
        samples: maximum samples per pixel (adaptive sampling stops earlier where converged).
        adaptive_threshold: Cycles' adaptive-sampling noise threshold.
        seed: Cycles seed of the first view.
        label: progress label.
        write_exr: also save the linear render next to each PNG (same name, ``.exr``).

    Returns:
        Wall-clock and CPU seconds taken.
    """
    import bpy
    from mathutils import Matrix

    scene.cycles.samples = samples
    scene.cycles.adaptive_threshold = adaptive_threshold
    scene.cycles.adaptive_min_samples = 0  # automatic
    start, cpu_start = time.perf_counter(), time.process_time()
    for i, (c2w, path) in enumerate(zip(c2ws, paths, strict=True)):
        cam.matrix_world = Matrix(np.asarray(c2w).tolist())
        scene.cycles.seed = seed + i
        scene.render.filepath = str(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with quiet_stdout():
            bpy.ops.render.render(write_still=True)
            if write_exr:
                _save_render_exr(scene, path.with_suffix(".exr"))
        elapsed = time.perf_counter() - start
        print(f"\r[{label}] {i + 1}/{len(paths)} views, {elapsed:.0f} s", end="", flush=True)
    cpu = time.process_time() - cpu_start
    print(f" (CPU time {cpu:.0f} s)", flush=True)
    return RenderTime(time.perf_counter() - start, cpu)


# --------------------------------------------------------------------------------------
# Seed-to-seed noise
# --------------------------------------------------------------------------------------


def pair_psnr(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, int]:
    """PSNRs of two RGBA renders composited on white: ``(in_mask, full, mse_in_mask, n_mask_pixels)``.

    The mask is ``alpha > 0.5`` in either image.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rgb_a = a[..., :3] * a[..., 3:] + (1.0 - a[..., 3:])
    rgb_b = b[..., :3] * b[..., 3:] + (1.0 - b[..., 3:])
    sq = (rgb_a - rgb_b) ** 2
    mask = (a[..., 3] > 0.5) | (b[..., 3] > 0.5)
    mse_mask = float(sq[mask].mean()) if mask.any() else 0.0
    mse_full = float(sq.mean())
    return _psnr(mse_mask), _psnr(mse_full), mse_mask, int(mask.sum())


def _psnr(mse: float) -> float:
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def noise_summary(reference: Sequence[Path], other: Sequence[Path]) -> dict[str, Any]:
    """Seed-to-seed agreement of two sets of RGBA PNG renders of the same views (see :func:`pair_psnr`).

    Returns:
        ``in_mask_psnr_mean/min/pooled`` (pooled = from the MSE over all masked pixels of all views),
        ``full_psnr_mean/min`` and ``per_view_in_mask_psnr``.
    """
    from relight3d.data.images import read_rgba

    stats = [pair_psnr(read_rgba(r)[0], read_rgba(o)[0]) for r, o in zip(reference, other, strict=True)]
    in_mask = np.array([s[0] for s in stats])
    full = np.array([s[1] for s in stats])
    pooled_mse = sum(s[2] * s[3] for s in stats) / max(1, sum(s[3] for s in stats))
    return {
        "in_mask_psnr_mean": float(in_mask.mean()),
        "in_mask_psnr_min": float(in_mask.min()),
        "in_mask_psnr_pooled": _psnr(pooled_mse),
        "full_psnr_mean": float(full.mean()),
        "full_psnr_min": float(full.min()),
        "per_view_in_mask_psnr": [round(float(v), 2) for v in in_mask],
    }


def render_noise_check(
    scene,
    cam,
    c2ws: Sequence[np.ndarray],
    reference: Sequence[Path],
    samples: int,
    threshold: float,
    seed: int,
    label: str,
) -> tuple[dict[str, Any], RenderTime]:
    """Render the views of ``reference`` again with Cycles seeds ``seed + i`` (into a temporary folder) and compare them
    with :func:`noise_summary`; returns the summary and the time taken. Needs bpy."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="noise_check_") as tmp:
        paths = [Path(tmp) / f"r_{i:03d}.png" for i in range(len(c2ws))]
        spent = render_views(scene, cam, c2ws, paths, samples, threshold, seed, label)
        return noise_summary(reference, paths), spent


# --------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------


def cached_meta(folder: Path, settings: dict[str, Any], verify_hashes: bool = True) -> Optional[dict[str, Any]]:
    """``folder/meta.json`` when it is complete, was written with ``settings`` and every file it lists still has its
    recorded sha256 (only their presence when not ``verify_hashes``); else None."""
    from relight3d.data.benchmark_layout import read_meta

    meta = read_meta(folder)
    if not meta.get("complete") or meta.get("settings") != settings or not meta.get("sha256"):
        return None
    for rel, digest in meta["sha256"].items():
        path = folder / rel
        if not path.is_file() or (verify_hashes and sha256_file(path) != digest):
            return None
    return meta
