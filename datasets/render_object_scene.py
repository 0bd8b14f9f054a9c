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

The mesh, camera, Cycles-scene and noise-metric code is shared with the relighting benchmark
(``relight3d bench make``) in ``relight3d/benchmark/cycles_scene.py``; this script imports it from
the repository when the bpy Python does not have relight3d installed. Only the rendering
functions need ``bpy``; it is imported lazily so that the camera maths and the cache check can be
imported from an environment without it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

try:  # the shared Cycles helpers live in the relight3d package; the bpy Python may not have it installed
    from relight3d.benchmark import cycles_scene as cs
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from relight3d.benchmark import cycles_scene as cs

# Bump whenever the rendered content for identical settings would change.
SCENE_FORMAT_VERSION = 1

DEFAULT_OUT = Path("~/.cache/relight3d/scenes/bunny128").expanduser()
CGAL_BUNNY_MEMBER = "data/meshes/bunny00.off"
DEFAULT_MESH = f"{cs.CGAL_DATA_TARBALL}::{CGAL_BUNNY_MEMBER}"

# Two-tone albedo (linear RGB): terracotta and warm cream.
ALBEDO_A = (0.62, 0.20, 0.08)
ALBEDO_B = (0.60, 0.55, 0.42)


def camera_poses(n: int, seed: int, args: argparse.Namespace) -> list[np.ndarray]:
    """Camera-to-world matrices of ``n`` seeded cameras looking at the origin."""
    return cs.camera_poses(n, seed, args.camera_distance, args.min_elevation_deg)


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
        "lens_mm": cs.LENS_MM,
        "sensor_width_mm": cs.SENSOR_WIDTH_MM,
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
        if not path.is_file() or (verify_hashes and cs.sha256_file(path) != digest):
            return False
    return all((out / f"transforms_{split}.json").is_file() for split in ("train", "val", "test"))


# --------------------------------------------------------------------------------------
# Output writers
# --------------------------------------------------------------------------------------


def write_objaverse(out: Path, images: Sequence[Path], c2ws: Sequence[np.ndarray], env_path: Path) -> list[Path]:
    """Write the Objaverse / Neural Gaffer layout under ``out/objaverse``; returns the image paths."""
    obj_dir = out / "objaverse"
    (obj_dir / "envmaps").mkdir(parents=True, exist_ok=True)
    env_name = env_path.stem
    shutil.copy2(env_path, obj_dir / "envmaps" / env_path.name)
    written = []
    for view, (image, c2w) in enumerate(zip(images, c2ws, strict=True)):
        np.save(obj_dir / f"{view:03d}_RT.npy", cs.world_to_camera_rt(c2w))
        dst = obj_dir / f"{view:03d}_{0:03d}_{env_name}.png"
        cs.link_or_copy(image, dst)
        written.append(dst)
    return written


# --------------------------------------------------------------------------------------
# Noise check
# --------------------------------------------------------------------------------------


def check_noise(scene, cam, out: Path, test_c2ws: Sequence[np.ndarray], args: argparse.Namespace) -> dict:
    """Render the test views with a second seed and compare to the stored test renders.

    The stored test views were rendered with ``--render-seed-test``; the check uses
    ``--noise-seed`` (per-view offsets identical), so it measures seed-to-seed agreement.
    """
    reference = [out / "test" / f"r_{i:03d}.png" for i in range(len(test_c2ws))]
    with tempfile.TemporaryDirectory(prefix="noise_check_") as tmp:
        paths = [Path(tmp) / f"r_{i:03d}.png" for i in range(len(test_c2ws))]
        seconds = cs.render_views(
            scene, cam, test_c2ws, paths, args.spp_test, args.adaptive_threshold_test, args.noise_seed, "noise-check"
        ).wall_seconds
        summary = cs.noise_summary(reference, paths)
    result = {"seeds": [args.render_seed_test, args.noise_seed], "render_seconds": round(seconds, 1), **summary}
    print(
        f"noise check (seed {args.render_seed_test} vs {args.noise_seed}, {len(paths)} test views, "
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

    env_path = cs.resolve_env_path(args.env)
    verts, tris = cs.load_off(args.mesh)
    if args.mesh_up == "y":
        verts = cs.y_up_to_z_up(verts)
    verts = cs.normalize_to_sphere(verts, args.object_radius)
    colors = cs.two_tone_albedo(verts, ALBEDO_A, ALBEDO_B)
    fov_x = cs.camera_angle_x()
    train_c2ws = camera_poses(args.n_train, args.camera_seed_train, args)
    test_c2ws = camera_poses(args.n_test, args.camera_seed_test, args)
    scene, cam = cs.build_scene(
        verts,
        tris,
        colors,
        env_path,
        env_strength=args.env_strength,
        roughness=args.roughness,
        resolution=args.resolution,
        threads=args.threads,
        clamp_indirect=args.clamp_indirect,
        max_bounces=args.max_bounces,
    )

    if not cached:
        out.mkdir(parents=True, exist_ok=True)
        for stale in ("meta.json", "noise_check.json"):  # an interrupted render leaves no valid meta
            (out / stale).unlink(missing_ok=True)
        train_imgs = [out / "train" / f"r_{i:03d}.png" for i in range(args.n_train)]
        test_imgs = [out / "test" / f"r_{i:03d}.png" for i in range(args.n_test)]
        t_train = cs.render_views(
            scene,
            cam,
            train_c2ws,
            train_imgs,
            args.spp_train,
            args.adaptive_threshold_train,
            args.render_seed_train,
            "train",
        ).wall_seconds
        t_test = cs.render_views(
            scene, cam, test_c2ws, test_imgs, args.spp_test, args.adaptive_threshold_test, args.render_seed_test, "test"
        ).wall_seconds
        for split, image_dir, c2ws in (("train", "train", train_c2ws), ("val", "test", test_c2ws)):
            cs.write_transforms(out, split, image_dir, c2ws, fov_x)
        cs.write_transforms(out, "test", "test", test_c2ws, fov_x)
        objaverse_imgs = write_objaverse(out, train_imgs + test_imgs, train_c2ws + test_c2ws, env_path)
        cs.write_ply(out / "mesh.ply", verts, tris, colors)
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
            "env_map_sha256": cs.sha256_file(env_path),
            "env_mapping": cs.ENV_MAPPING,
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
            "sha256": {str(p.relative_to(out)): cs.sha256_file(p) for p in images},
        }
        (out / "meta.json").write_text(json.dumps(meta, indent=2))
        print(f"wrote {out} (train {t_train:.0f} s, test {t_test:.0f} s)")

    if args.check_noise:
        result = check_noise(scene, cam, out, test_c2ws, args)
        (out / "noise_check.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
