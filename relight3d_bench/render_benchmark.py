"""Render the relighting benchmark with Blender Cycles. Runs in a Python that has ``bpy`` (the ``bench`` extra).

Normally started by ``relight3d bench make`` (:func:`relight3d_bench.runner.make_benchmark`), which passes the
:class:`~relight3d_bench.config.BenchmarkConfig` as JSON, the cameras it computed and the meshes archive it found::

    python -m relight3d_bench.render_benchmark --config-json '{...}' --cameras-json FILE --meshes-archive TAR
        --out DIR [--threads 2] [--force] [--check-noise OBJECT --noise-light K --noise-seed 5000]

Each object is rendered into its own folder (layout in :mod:`relight3d.data.benchmark_layout`) and is skipped when
its ``meta.json`` is complete, was made with the same settings and every file still has its recorded sha256, so an
interrupted run resumes object by object. The benchmark's ``meta.json`` is written last.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from relight3d.data import benchmark_layout as layout
from relight3d_bench import cycles_scene as cs
from relight3d_bench import meshes
from relight3d_bench.config import (
    BENCHMARK_FORMAT_VERSION,
    BenchmarkConfig,
    BenchmarkLight,
    BenchmarkObject,
    mesh_source,
)

IDENTITY_ROTATION = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
# Files an object folder may hold that are not part of its hashed content.
UNHASHED = (layout.META_NAME, "noise_check_light*.json")


@dataclass
class RenderInputs:
    """What every object of one run shares."""

    config: BenchmarkConfig
    """Objects, lights and render settings."""
    root: Path
    """The benchmark folder."""
    archive: Path
    """CGAL's data archive, which holds the meshes."""
    cameras: dict[str, list[np.ndarray]]
    """``"train"`` and ``"test"`` camera-to-world matrices (computed by the runner, shared by every object)."""
    threads: int
    """Cycles CPU threads."""


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------


def write_scaled_envmap(source: Path, destination: Path, strength: float) -> None:
    """Write ``source`` times ``strength`` as a float32 RGB EXR (the map the renders are lit by). Needs bpy.

    The file is only replaced when its content changes, so hard links to it stay valid.
    """
    import bpy

    image = bpy.data.images.load(str(source))
    width, height = image.size
    pixels = np.empty(width * height * 4, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    bpy.data.images.remove(image)
    pixels = pixels.reshape(-1, 4)
    pixels[:, :3] *= np.float32(strength)
    pixels[:, 3] = 1.0
    scaled = bpy.data.images.new(f"scaled_{destination.stem}", width, height, alpha=False, float_buffer=True)
    scaled.pixels.foreach_set(pixels.ravel())
    destination.parent.mkdir(parents=True, exist_ok=True)
    settings = bpy.context.scene.render.image_settings
    settings.file_format = "OPEN_EXR"
    settings.color_mode = "RGB"
    settings.color_depth = "32"
    settings.exr_codec = "ZIP"
    with tempfile.TemporaryDirectory(dir=destination.parent) as tmp:
        candidate = Path(tmp) / destination.name
        # save_render writes float formats as linear data (Image.save would apply the scene's view transform).
        scaled.save_render(str(candidate), scene=bpy.context.scene)
        bpy.data.images.remove(scaled)
        if not destination.is_file() or cs.sha256_file(destination) != cs.sha256_file(candidate):
            candidate.replace(destination)


def prepare_lights(lights: Sequence[BenchmarkLight], root: Path) -> list[dict[str, Any]]:
    """Write ``root/envmaps/<light>.exr`` for every light; returns one metadata record per light. Needs bpy."""
    records = []
    names = [light.name for light in lights]
    if len(set(names)) != len(names):
        raise ValueError(f"light names must be unique: {names}")
    for index, light in enumerate(lights):
        source = cs.resolve_env_path(light.name)
        name = source.stem
        file = root / "envmaps" / f"{name}.exr"
        write_scaled_envmap(source, file, light.strength)
        records.append(
            {
                "index": index,
                "name": name,
                "description": light.description,
                "source": str(source),
                "source_sha256": cs.sha256_file(source),
                "strength": light.strength,
                "file": f"envmaps/{name}.exr",
                "file_sha256": cs.sha256_file(file),
                "file_note": "linear radiance = source map x strength (float32 EXR); render with world strength 1",
                "world_strength": 1.0,
                "world_rotation": IDENTITY_ROTATION,
                "mapping": cs.ENV_MAPPING,
            }
        )
    return records


def object_settings(inputs: RenderInputs, obj: BenchmarkObject, lights: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything that determines an object's files (its cache key), in its JSON form; the mesh is named by the
    source it is read from (``archive::member``)."""
    settings = {
        "format_version": BENCHMARK_FORMAT_VERSION,
        "object": {**dataclasses.asdict(obj), "mesh": mesh_source(obj.mesh, inputs.archive)},
        "lights": [{k: r[k] for k in ("name", "source_sha256", "strength", "file_sha256")} for r in lights],
        **inputs.config.render_settings(),
    }
    return json.loads(json.dumps(settings))  # tuples -> lists, as read back from meta.json


def hashed_files(folder: Path) -> list[Path]:
    """Every file of an object folder that its ``meta.json`` hashes (all but the metadata and noise checks)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not any(p.match(pattern) for pattern in UNHASHED))


def clear_object_folder(folder: Path) -> None:
    """Remove what an earlier render left in an object folder (only the names this renderer writes)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in [folder / layout.META_NAME, *folder.glob("noise_check_light*.json")]:
        stale.unlink(missing_ok=True)  # first: an interrupted render must leave no valid metadata behind
    for sub in ["train", "objaverse", "envmaps", *(p.name for p in folder.glob("test_light*"))]:
        if (folder / sub).is_dir():
            shutil.rmtree(folder / sub)
    for stale in [folder / "mesh.ply", *folder.glob("transforms_*.json")]:
        stale.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------
# Rendering one object
# --------------------------------------------------------------------------------------


def build_object_scene(inputs: RenderInputs, obj: BenchmarkObject, lights: list[dict[str, Any]]):
    """``(scene, camera, vertices, triangles, albedo)`` of an object, lit by light 0. Needs bpy."""
    config = inputs.config
    source = mesh_source(obj.mesh, inputs.archive)
    verts, tris, colors = meshes.prepare_mesh(source, obj.up_axis, config.object_radius, obj.albedo_a, obj.albedo_b)
    scene, cam = cs.build_scene(
        verts,
        tris,
        colors,
        inputs.root / lights[0]["file"],
        env_strength=1.0,
        roughness=obj.roughness,
        resolution=config.resolution,
        threads=inputs.threads,
        clamp_indirect=config.clamp_indirect,
        max_bounces=config.max_bounces,
        embed_render_metadata=False,
    )
    return scene, cam, verts, tris, colors


def _light_keys(record: dict[str, Any]) -> dict[str, Any]:
    return {"light_index": record["index"], "light_name": record["name"], "envmap": record["file"]}


def render_object(
    inputs: RenderInputs, obj: BenchmarkObject, lights: list[dict[str, Any]], settings: dict[str, Any]
) -> dict[str, Any]:
    """Render one object into ``root/<name>`` and write its ``meta.json``; returns that metadata. Needs bpy."""
    import bpy

    config, root = inputs.config, inputs.root
    folder = root / obj.name
    clear_object_folder(folder)
    scene, cam, verts, tris, colors = build_object_scene(inputs, obj, lights)
    train_c2ws, test_c2ws = inputs.cameras["train"], inputs.cameras["test"]
    fov_x = cs.camera_angle_x()
    times: dict[str, dict[str, float]] = {}
    pngs: dict[str, list[Path]] = {}
    # Training views under light 0 (build_object_scene lit the scene with it), then the test views under every light.
    jobs = [("train", lights[0], train_c2ws, *config.sampling(train=True))]
    jobs += [(layout.split_for_light(r["index"]), r, test_c2ws, *config.sampling(train=False)) for r in lights]
    for split, record, c2ws, samples, threshold, seed in jobs:
        if split != "train" and record["index"] != 0:  # a world update costs seconds (importance sampling rebuilt)
            cs.set_environment(scene, root / record["file"], 1.0)
        pngs[split] = [folder / f"{layout.image_stem(split, i)}.png" for i in range(len(c2ws))]
        label = f"{obj.name} {split}" + ("" if split == "train" else f" ({record['name']})")
        spent = cs.render_views(scene, cam, c2ws, pngs[split], samples, threshold, seed, label, write_exr=True)
        times[split] = {"wall": round(spent.wall_seconds, 1), "cpu": round(spent.cpu_seconds, 1)}
        cs.write_transforms(folder, split, split, c2ws, fov_x, _light_keys(record))
    for alias in ("val", "test"):  # nerfstudio's Blender parser evaluates on "val"; "test" mirrors the NeRF layout
        cs.write_transforms(folder, alias, layout.split_for_light(0), test_c2ws, fov_x, _light_keys(lights[0]))

    for record in lights:
        cs.link_or_copy(root / record["file"], folder / record["file"])
    meshes.write_ply(folder / "mesh.ply", verts, tris, colors)

    # Objaverse / Neural Gaffer layout.
    objaverse = folder / "objaverse"
    objaverse.mkdir(exist_ok=True)
    for view, c2w in enumerate(train_c2ws + test_c2ws):
        np.save(objaverse / layout.objaverse_rt_name(view), cs.world_to_camera_rt(c2w))
    for view, png in enumerate(pngs["train"]):
        cs.link_or_copy(png, objaverse / layout.objaverse_image_name(view, 0, lights[0]["name"]))
    for record in lights:
        for i, png in enumerate(pngs[layout.split_for_light(record["index"])]):
            name = layout.objaverse_image_name(config.n_train + i, record["index"], record["name"])
            cs.link_or_copy(png, objaverse / name)

    source = mesh_source(obj.mesh, inputs.archive)
    meta = {
        "complete": True,
        "settings": settings,
        "renderer": "Blender Cycles (CPU, path tracing, adaptive sampling, no denoiser)",
        "blender_version": bpy.app.version_string,
        "python": sys.version.split()[0],
        "object": {
            "name": obj.name,
            "source": source,
            "description": obj.description,
            "n_vertices": len(verts),
            "n_triangles": len(tris),
            "transform": f"{'Y-up->Z-up, ' if obj.up_axis == 'y' else ''}bbox-centred, "
            f"max vertex radius {config.object_radius}",
            "albedo": {"type": "per-vertex two-tone, linear RGB", "a": obj.albedo_a, "b": obj.albedo_b},
            "roughness": obj.roughness,
            "metallic": 0.0,
        },
        "lights": lights,
        "camera_angle_x": fov_x,
        "camera": "35 mm lens, 32 mm sensor (horizontal fit), principal point at the centre; "
        "Blender/OpenGL axes (looks down -Z, +Y up); world Z up",
        "views": {
            "train": f"objaverse views 0-{config.n_train - 1}, light 0 only",
            "test": f"objaverse views {config.n_train}-{config.n_train + config.n_test - 1}, every light",
        },
        "samples": {"train": config.spp_train, "test": config.spp_test},
        "adaptive_threshold": {"train": config.adaptive_threshold_train, "test": config.adaptive_threshold_test},
        "seeds": {
            "camera_train": config.camera_seed_train,
            "camera_test": config.camera_seed_test,
            "render_train": f"{config.render_seed_train} + view index",
            "render_test": f"{config.render_seed_test} + view index (every light)",
        },
        "images": "PNG: 8-bit sRGB ('Standard' view), straight alpha; EXR: linear Rec.709 half float, premultiplied "
        "alpha; alpha = object coverage (the mask)",
        "render_seconds": times,
        "threads": inputs.threads,
    }
    meta["sha256"] = {str(p.relative_to(folder)): cs.sha256_file(p) for p in hashed_files(folder)}
    (folder / layout.META_NAME).write_text(json.dumps(meta, indent=2))
    return meta


# --------------------------------------------------------------------------------------
# Noise check
# --------------------------------------------------------------------------------------


def check_noise(inputs: RenderInputs, obj: BenchmarkObject, light_index: int, seed: int) -> dict[str, Any]:
    """Render the test views of one object under one light again with another seed and compare in the mask.

    The stored test views used Cycles seeds ``render_seed_test + i``; the check uses ``seed + i``. The result is
    written to ``<object>/noise_check_light{k}.json`` and returned. Needs bpy.
    """
    config = inputs.config
    if not 0 <= light_index < len(config.lights):
        raise ValueError(f"--noise-light {light_index} is not a light index (0..{len(config.lights) - 1})")
    folder = inputs.root / obj.name
    meta = layout.read_meta(folder)
    record = meta["lights"][light_index]
    split = layout.split_for_light(light_index)
    scene, cam, *_ = build_object_scene(inputs, obj, meta["lights"])
    if light_index != 0:
        cs.set_environment(scene, inputs.root / record["file"], 1.0)
    reference = [folder / f"{layout.image_stem(split, i)}.png" for i in range(config.n_test)]
    samples, threshold, _ = config.sampling(train=False)
    label = f"{obj.name} noise check {split}"
    summary, spent = cs.render_noise_check(
        scene, cam, inputs.cameras["test"], reference, samples, threshold, seed, label
    )
    result = {
        "object": obj.name,
        "light_index": light_index,
        "light_name": record["name"],
        "seeds": [config.render_seed_test, seed],
        "samples": config.spp_test,
        "adaptive_threshold": config.adaptive_threshold_test,
        "render_seconds": {"wall": round(spent.wall_seconds, 1), "cpu": round(spent.cpu_seconds, 1)},
        **summary,
    }
    (folder / f"noise_check_light{light_index}.json").write_text(json.dumps(result, indent=2))
    print(
        f"noise check {obj.name} / {split} ({record['name']}), seeds {config.render_seed_test} vs {seed}, "
        f"{config.n_test} views: in-mask PSNR mean {summary['in_mask_psnr_mean']:.2f} dB, "
        f"min {summary['in_mask_psnr_min']:.2f} dB, pooled {summary['in_mask_psnr_pooled']:.2f} dB",
        flush=True,
    )
    return result


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def generate(inputs: RenderInputs, force: bool) -> dict[str, Any]:
    """Render every object that is not cached and write the benchmark's ``meta.json``; returns it. Needs bpy."""
    import bpy

    config, root = inputs.config, inputs.root
    start = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    (root / layout.META_NAME).unlink(missing_ok=True)
    lights = prepare_lights(config.lights, root)
    objects = []
    for obj in config.objects:
        settings = object_settings(inputs, obj, lights)
        folder = root / obj.name
        meta = None if force else cs.cached_meta(folder, settings)
        if meta is not None:
            print(f"[{obj.name}] cached", flush=True)
        else:
            meta = render_object(inputs, obj, lights, settings)
        objects.append(
            {
                "name": obj.name,
                "folder": obj.name,
                "meta_sha256": cs.sha256_file(folder / layout.META_NAME),
                "render_seconds": meta["render_seconds"],
            }
        )
    totals = {
        kind: round(sum(split[kind] for o in objects for split in o["render_seconds"].values()), 1)
        for kind in ("wall", "cpu")
    }
    meta = {
        "complete": True,
        "format_version": BENCHMARK_FORMAT_VERSION,
        "config": config.to_dict(),
        "renderer": f"Blender {bpy.app.version_string} Cycles (bpy), CPU",
        "blender_version": bpy.app.version_string,
        "python": sys.version.split()[0],
        "lights": lights,
        "objects": objects,
        "layout": "see relight3d/data/benchmark_layout.py",
        "render_seconds_total": totals,
        "this_run_seconds": round(time.perf_counter() - start, 1),
        "threads": inputs.threads,
    }
    (root / layout.META_NAME).write_text(json.dumps(meta, indent=2))
    print(
        f"benchmark {root}: {len(objects)} objects x {len(lights)} lights, rendering {totals['wall'] / 60:.1f} min "
        f"(CPU {totals['cpu'] / 60:.1f} min), this run {meta['this_run_seconds'] / 60:.1f} min",
        flush=True,
    )
    return meta


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line interface of the Blender-side renderer."""
    p = argparse.ArgumentParser(description="Render the relight3d benchmark with Blender Cycles (needs bpy).")
    p.add_argument("--config-json", required=True, help="BenchmarkConfig.to_dict() as JSON")
    p.add_argument("--cameras-json", type=Path, required=True, help="train and test cameras (runner.write_cameras)")
    p.add_argument("--meshes-archive", type=Path, required=True, help="CGAL's data.tar.gz (meshes in data/meshes/)")
    p.add_argument("--out", type=Path, required=True, help="benchmark folder")
    p.add_argument("--threads", type=int, default=2, help="Cycles CPU threads")
    p.add_argument("--force", action="store_true", help="re-render objects even if they are cached")
    p.add_argument("--check-noise", metavar="OBJECT", help="afterwards, re-render OBJECT's test views with a new seed")
    p.add_argument("--noise-light", type=int, default=0, help="light index of the noise check")
    p.add_argument("--noise-seed", type=int, default=5000, help="Cycles seed of test view 0 in the noise check")
    p.add_argument("--noise-only", action="store_true", help="only the noise check (the object must be rendered)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Generate (or reuse) the benchmark, then optionally run the noise check."""
    args = parse_args(argv)
    config = BenchmarkConfig.from_dict(json.loads(args.config_json))
    cameras = cs.read_cameras(args.cameras_json)
    inputs = RenderInputs(config, args.out.expanduser().resolve(), args.meshes_archive, cameras, args.threads)
    if not args.noise_only:
        generate(inputs, args.force)
    if args.check_noise:
        chosen = [o for o in config.objects if o.name == args.check_noise]
        if not chosen:
            raise SystemExit(f"--check-noise: {args.check_noise!r} is not one of {[o.name for o in config.objects]}")
        folder = inputs.root / chosen[0].name
        lights = layout.read_meta(folder).get("lights", [])
        if cs.cached_meta(folder, object_settings(inputs, chosen[0], lights)) is None:
            raise SystemExit(f"{folder}: not rendered with these settings (run relight3d bench make)")
        result = check_noise(inputs, chosen[0], args.noise_light, args.noise_seed)
        if not math.isfinite(result["in_mask_psnr_mean"]):
            print("noise check: the two renders are identical (is the seed the same?)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
