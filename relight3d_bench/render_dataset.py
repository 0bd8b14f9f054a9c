"""The Blender side of ``relight3d data render``: runs in a Python that has ``bpy`` (started by
:mod:`relight3d_bench.dataset_runner`, never imported next to torch).

Two steps, each a separate process::

    python -m relight3d_bench.render_dataset prepare --plan FILE --out DIR
        write every map, times its strength, as <out>/envmaps/<name>.exr (float32, linear) and record its width
    python -m relight3d_bench.render_dataset render --plan FILE --out DIR --worker K --workers N [--threads T]
        render job K, K + N, K + 2N, ... of the plan's (object, map) jobs

A job renders one object under one map at each of its rotations, every view: ``images/<object>/<map>_r<k>_v<view>.png``
(8-bit sRGB RGBA, straight alpha; Cycles path tracing). The job of each object's first map also casts its G-buffer
rays (:func:`gbuffer_rays`): ``gbuffers/<object>/v<view>.npz``. Every file is written under a temporary name and
renamed into place, and a file already there is not rendered again, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from relight3d_bench import cycles_scene as cs
from relight3d_bench import meshes
from relight3d_bench.dataset_config import DatasetRenderConfig, gbuffer_name, image_name
from relight3d_bench.procedural import PROCEDURAL

# --------------------------------------------------------------------------------------
# Meshes
# --------------------------------------------------------------------------------------


def _import_mesh_file(path: Path) -> Tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(vertices, triangles, linear vertex colours or None)`` of a mesh file, read by Blender's importer (all its
    mesh objects joined, their transforms applied). Needs bpy."""
    import bmesh
    import bpy

    with cs.quiet_stdout():
        bpy.ops.wm.read_factory_settings(use_empty=True)
        suffix = path.suffix.lower()
        if suffix == ".obj":
            bpy.ops.wm.obj_import(filepath=str(path))
        elif suffix == ".ply":
            bpy.ops.wm.ply_import(filepath=str(path))
        elif suffix == ".stl":
            bpy.ops.wm.stl_import(filepath=str(path))
        else:
            bpy.ops.import_scene.gltf(filepath=str(path))
    verts, tris, colours, offset = [], [], [], 0
    for obj in [o for o in bpy.context.scene.objects if o.type == "MESH"]:
        bm = bmesh.new()
        bm.from_mesh(obj.data)
        bm.transform(obj.matrix_world)
        bmesh.ops.triangulate(bm, faces=bm.faces[:])
        bm.verts.ensure_lookup_table()
        v = np.array([tuple(x.co) for x in bm.verts], dtype=np.float64).reshape(-1, 3)
        f = np.array([[x.index for x in face.verts] for face in bm.faces], dtype=np.int64).reshape(-1, 3)
        bm.free()
        attrs = obj.data.color_attributes
        c = None
        if len(attrs) and attrs[0].domain == "POINT" and len(attrs[0].data) == len(v):
            c = np.empty(len(v) * 4, dtype=np.float32)
            attrs[0].data.foreach_get("color", c)
            c = c.reshape(-1, 4)[:, :3].astype(np.float64)
        verts.append(v)
        tris.append(f + offset)
        colours.append(c)
        offset += len(v)
    if not verts or offset == 0:
        raise ValueError(f"{path}: no mesh in the file")
    has_colours = all(c is not None for c in colours)
    return np.concatenate(verts), np.concatenate(tris), np.concatenate(colours) if has_colours else None


def load_object(entry: Dict[str, Any], radius: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """``(vertices, triangles, linear albedo per vertex, where the albedo comes from)`` of a plan object, Z-up,
    centred, farthest vertex at ``radius``. The mesh's own vertex colours are kept; otherwise the plan's random
    two-tone material colours it."""
    colours = None
    if entry["kind"] == "procedural":
        verts, tris = PROCEDURAL[entry["source"]]()
    elif entry["kind"] == "archive" or entry["source"].lower().endswith(".off"):
        verts, tris = meshes.load_off(entry["source"])
    else:
        verts, tris, colours = _import_mesh_file(Path(entry["source"]))
    if entry["up_axis"] == "y":
        verts = meshes.y_up_to_z_up(verts)
    verts = meshes.normalize_to_sphere(verts, radius)
    if colours is not None:
        return verts, tris, np.clip(colours, 0.0, 1.0), "mesh vertex colours"
    material = entry["material"]
    return verts, tris, meshes.two_tone_albedo(verts, material["albedo_a"], material["albedo_b"]), "random two-tone"


# --------------------------------------------------------------------------------------
# G-buffers
# --------------------------------------------------------------------------------------


def pixel_rays(c2w: np.ndarray, resolution: int, fov_x: float, supersample: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(origin [3], unit directions [res, res, s*s, 3])`` of a pinhole camera (OpenGL axes, square pixels, the
    image's top row first), the sub-pixel samples on an ``s x s`` grid of each pixel (its centre for ``s = 1``)."""
    s = supersample
    fine = (np.arange(resolution * s) + 0.5) / s  # sub-pixel centres in pixel units
    half = math.tan(0.5 * fov_x)
    x = (2.0 * fine / resolution - 1.0) * half
    y = (1.0 - 2.0 * fine / resolution) * half
    grid = np.stack(np.broadcast_arrays(x[None, :], y[:, None], -1.0), axis=-1)  # [res*s (rows), res*s (cols), 3]
    d = grid.reshape(resolution, s, resolution, s, 3).transpose(0, 2, 1, 3, 4).reshape(resolution, resolution, s * s, 3)
    d = d @ np.asarray(c2w)[:3, :3].T
    return np.asarray(c2w)[:3, 3], d / np.linalg.norm(d, axis=-1, keepdims=True)


def gbuffer_rays(
    bvh: Any, verts: np.ndarray, tris: np.ndarray, normals: np.ndarray, albedo: np.ndarray, c2w: np.ndarray,
    resolution: int, fov_x: float, supersample: int, roughness: float, metallic: float,
) -> Dict[str, np.ndarray]:  # fmt: skip
    """One view's G-buffers by ray casting the mesh (``bvh``: a ``mathutils.bvhtree.BVHTree`` of it): per pixel the
    coverage (share of sub-pixel rays that hit), and over the rays that hit the mean base colour and normal (the
    vertex values interpolated barycentrically, as Cycles shades a smooth mesh; normals renormalised), ray distance,
    roughness and metallic. Uncovered pixels hold zeros. Needs mathutils."""
    from mathutils import Vector

    origin, dirs = pixel_rays(c2w, resolution, fov_x, supersample)
    flat = dirs.reshape(-1, 3)
    hit = np.zeros(len(flat), dtype=bool)
    face = np.zeros(len(flat), dtype=np.int64)
    dist = np.zeros(len(flat))
    o = Vector(origin.tolist())
    for i, d in enumerate(flat.tolist()):
        location, _, index, distance = bvh.ray_cast(o, Vector(d))
        if location is not None:
            hit[i], face[i], dist[i] = True, index, distance
    points = origin[None] + flat * dist[:, None]
    a, b, c = (verts[tris[face, k]] for k in range(3))
    v0, v1, v2 = b - a, c - a, points - a
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    den = np.where(hit, d00 * d11 - d01 * d01, 1.0)
    w1 = (d11 * d20 - d01 * d21) / den
    w2 = (d00 * d21 - d01 * d20) / den
    bary = np.clip(np.stack([1.0 - w1 - w2, w1, w2], 1), 0.0, 1.0)
    bary /= bary.sum(1, keepdims=True)

    def interpolate(values: np.ndarray) -> np.ndarray:
        return sum(bary[:, k : k + 1] * values[tris[face, k]] for k in range(3))

    per_ray = {"base_color": interpolate(albedo), "normals": interpolate(normals), "depth": dist[:, None]}
    shape = (resolution, resolution, supersample * supersample)
    weight = hit.reshape(shape)[..., None].astype(np.float64)
    covered = weight.sum(2)
    out = {k: (v.reshape(*shape, -1) * weight).sum(2) / np.maximum(covered, 1.0) for k, v in per_ray.items()}
    norm = np.linalg.norm(out["normals"], axis=-1, keepdims=True)
    out["normals"] = np.where(norm > 0, out["normals"] / np.maximum(norm, 1e-12), 0.0)
    mask = covered / (supersample * supersample)
    out["mask"] = mask
    inside = (covered > 0).astype(np.float64)
    out["roughness"], out["metallic"] = roughness * inside, metallic * inside
    return {k: v.astype(np.float32) for k, v in out.items()}


def blender_vertex_normals(scene: Any) -> np.ndarray:
    """The object's vertex normals as Blender computes them (what Cycles interpolates on a smooth mesh). Needs bpy."""
    mesh = scene.objects["object"].data
    normals = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
    mesh.vertex_normals.foreach_get("vector", normals)
    return normals.reshape(-1, 3).astype(np.float64)


# --------------------------------------------------------------------------------------
# Maps
# --------------------------------------------------------------------------------------


def prepare(plan: Dict[str, Any], out: Path) -> None:
    """Write every map times its strength to ``out/envmaps`` and its width to ``out/envmaps/widths.json``."""
    from relight3d_bench.render_benchmark import write_scaled_envmap

    widths = {}
    for light in plan["lights"]:
        source = cs.resolve_env_path(light["source"])
        target = out / light["file"]
        write_scaled_envmap(source, target, light["strength"])
        widths[light["name"]] = _image_pixels(target)[0].shape[1]
    (out / "envmaps" / "widths.json").write_text(json.dumps(widths))


def _image_pixels(path: Path) -> Tuple[np.ndarray, Any]:
    """``([H, W, 4] float32 bottom row first, the loaded image)`` of a float image file. Needs bpy."""
    import bpy

    image = bpy.data.images.load(str(path), check_existing=True)
    width, height = image.size
    pixels = np.empty(width * height * 4, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    return pixels.reshape(height, width, 4), image


def set_rotated_environment(scene: Any, pixels: np.ndarray, shift: int) -> None:
    """Light the world with ``pixels`` turned by ``shift`` columns (``roll(pixels, -shift)`` along the width, which is
    ``rotate_envmap_about_up`` by ``360 * shift / width`` degrees). Needs bpy."""
    import bpy

    height, width = pixels.shape[:2]
    # One image per turn, each with its own name: Cycles keeps images by name, so refilling (or deleting and
    # re-creating) one image of the same name renders the previous turn again.
    name = f"environment_turned_{shift}"
    image = bpy.data.images.get(name)
    if image is None:
        image = bpy.data.images.new(name, width, height, alpha=False, float_buffer=True)
        image.pixels.foreach_set(np.roll(pixels, -shift, axis=1).ravel())
        image.update()
    nodes = scene.world.node_tree.nodes
    next(n for n in nodes if n.type == "TEX_ENVIRONMENT").image = image


# --------------------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------------------


def _write_atomic_png(scene: Any, target: Path) -> None:
    """Render the current view to ``target`` through a temporary file. Needs bpy."""
    import bpy

    tmp = target.with_name(f".{target.stem}.tmp.png")
    scene.render.filepath = str(tmp)
    with cs.quiet_stdout():
        bpy.ops.render.render(write_still=True)
    os.replace(tmp, target)


def render_job(plan: Dict[str, Any], out: Path, job: Tuple[int, int], threads: int) -> None:
    """Render one (object, map) job (module docstring). Needs bpy."""
    import bpy  # noqa: F401  (makes mathutils importable)
    from mathutils import Matrix
    from mathutils.bvhtree import BVHTree

    config = DatasetRenderConfig.from_dict(plan["config"])
    obj_index, light_index = job
    entry, light = plan["objects"][obj_index], plan["lights"][light_index]
    cameras = [np.asarray(c) for c in entry["cameras"]]
    images = [(k, v, out / image_name(entry["name"], light["name"], k, v))
              for k in range(config.rotations) for v in range(len(cameras))]  # fmt: skip
    todo = [item for item in images if not item[2].is_file()]
    gbuffers = [(v, out / gbuffer_name(entry["name"], v)) for v in range(len(cameras))] if light_index == 0 else []
    gbuffers = [item for item in gbuffers if not item[1].is_file()]
    if not todo and not gbuffers:
        return
    verts, tris, albedo, _ = load_object(entry, config.object_radius)
    material = entry["material"]
    fov_x = cs.camera_angle_x()
    scene, cam = cs.build_scene(
        verts, tris, albedo, out / light["file"], env_strength=1.0, roughness=material["roughness"],
        metallic=material["metallic"], resolution=config.resolution, threads=threads,
        clamp_indirect=config.clamp_indirect, max_bounces=config.max_bounces, embed_render_metadata=False,
    )  # fmt: skip
    if gbuffers:
        bvh = BVHTree.FromPolygons(verts.tolist(), tris.tolist(), all_triangles=True)
        normals = blender_vertex_normals(scene)
        for view, path in gbuffers:
            data = gbuffer_rays(bvh, verts, tris, normals, albedo, cameras[view], config.resolution, fov_x,
                                config.gbuffer_supersample, material["roughness"], material["metallic"])  # fmt: skip
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.tmp.npz")
            np.savez_compressed(tmp, camera_to_world=cameras[view].astype(np.float32), **data)
            os.replace(tmp, path)
    if not todo:
        return
    scene.cycles.samples = config.spp
    scene.cycles.adaptive_threshold = config.adaptive_threshold
    scene.cycles.adaptive_min_samples = 0
    pixels, _ = _image_pixels(out / light["file"])
    current = None
    for rotation, view, path in todo:
        if rotation != current:
            set_rotated_environment(scene, pixels, light["rotations"][obj_index][rotation]["shift"])
            current = rotation
        cam.matrix_world = Matrix(cameras[view].tolist())
        # one Cycles seed per image, fixed by the plan: a resumed run renders the same noise
        scene.cycles.seed = config.seed + ((obj_index * len(plan["lights"]) + light_index) * 1000 + rotation) * 1000
        scene.cycles.seed += view
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic_png(scene, path)


def jobs_of(plan: Dict[str, Any]) -> List[Tuple[int, int]]:
    """Every (object, map) job, map 0 of each object first (it casts the G-buffers)."""
    return [(o, m) for o in range(len(plan["objects"])) for m in range(len(plan["lights"]))]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``prepare`` or one worker's ``render`` share (module docstring)."""
    p = argparse.ArgumentParser(description="relight3d data render, Blender side (needs bpy)")
    p.add_argument("step", choices=["prepare", "render"])
    p.add_argument("--plan", type=Path, required=True, help="the plan JSON the runner wrote")
    p.add_argument("--out", type=Path, required=True, help="the dataset folder")
    p.add_argument("--worker", type=int, default=0, help="this worker's index")
    p.add_argument("--workers", type=int, default=1, help="number of workers")
    p.add_argument("--threads", type=int, default=1, help="Cycles CPU threads")
    args = p.parse_args(argv)
    plan = json.loads(args.plan.read_text())
    if args.step == "prepare":
        prepare(plan, args.out)
        return 0
    for job in jobs_of(plan)[args.worker :: args.workers]:
        render_job(plan, args.out, job, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
