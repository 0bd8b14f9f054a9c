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

Run it with relight3d's Python; it computes the cameras (``relight3d_bench.cameras``, torch) and runs
itself again, to render, in a Python that has ``bpy==5.0.1`` (Python 3.11): ``--blender-python``, else
``$RELIGHT3D_BPY_PYTHON``, else this Python when it has ``bpy`` (the ``bench`` extra)::

    .venv/bin/python datasets/render_object_scene.py                # render (or reuse the cache)
    .venv/bin/python datasets/render_object_scene.py --check-noise  # + seed-to-seed PSNR
    .venv/bin/python datasets/render_object_scene.py --blender-python /tmp/bpyvenv/bin/python

The bunny is read from CGAL's data archive: ``--meshes-archive``, else Debian's ``libcgal-demo`` copy
(``/usr/share/doc/libcgal-dev/data.tar.gz``); with neither, the script says so in one line. The mesh,
Cycles-scene and noise-metric code is shared with the relighting benchmark (``relight3d bench make``)
in ``relight3d_bench/cycles_scene.py``; the rendering half needs numpy, Pillow and ``bpy`` only.
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

try:  # the shared Cycles helpers live in relight3d_bench; a Python that has not installed it finds it here
    from relight3d_bench import cycles_scene as cs
    from relight3d_bench import meshes
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from relight3d_bench import cycles_scene as cs
    from relight3d_bench import meshes

# Bump whenever the rendered content for identical settings would change.
SCENE_FORMAT_VERSION = 1

DEFAULT_OUT = Path("~/.cache/relight3d/scenes/bunny128").expanduser()
DEFAULT_MESH = "data/meshes/bunny00.off"  # in CGAL's data archive

# Two-tone albedo (linear RGB): terracotta and warm cream.
ALBEDO_A = (0.62, 0.20, 0.08)
ALBEDO_B = (0.60, 0.55, 0.42)


# --------------------------------------------------------------------------------------
# Settings and cache
# --------------------------------------------------------------------------------------


SETTING_OPTIONS = (
    "object_radius", "env", "env_strength", "resolution", "camera_distance", "min_elevation_deg", "n_train",
    "n_test", "camera_seed_train", "camera_seed_test", "spp_train", "spp_test", "render_seed_train",
    "render_seed_test", "adaptive_threshold_train", "adaptive_threshold_test", "clamp_indirect", "max_bounces",
    "roughness",
)  # fmt: skip
"""Options that determine the rendered content, recorded in meta.json under their names (the cache key)."""
SAMPLING_OPTIONS = ("spp", "adaptive_threshold", "render_seed")
"""Options given per split (``--spp-train``, ``--spp-test``, ...): samples, noise threshold, seed of view 0."""


def build_settings(args: argparse.Namespace) -> dict:
    """Everything that determines the rendered content (used as the cache key); ``args.mesh`` is the source read
    (``archive::member`` or a path)."""
    settings = {"format_version": SCENE_FORMAT_VERSION, "mesh": args.mesh, "lens_mm": cs.LENS_MM}
    settings["sensor_width_mm"] = cs.SENSOR_WIDTH_MM
    return {**settings, **{name: getattr(args, name) for name in SETTING_OPTIONS}}


def scene_is_cached(out: Path, settings: dict, verify_hashes: bool = True) -> bool:
    """Return True if ``out/meta.json`` is complete, matches ``settings`` and all listed images are intact."""
    if cs.cached_meta(out, settings, verify_hashes) is None:
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
    threshold, seed = args.adaptive_threshold_test, args.noise_seed
    summary, spent = cs.render_noise_check(scene, cam, test_c2ws, reference, args.spp_test, threshold, seed, "noise")
    seconds = spent.wall_seconds
    result = {"seeds": [args.render_seed_test, args.noise_seed], "render_seconds": round(seconds, 1), **summary}
    print(
        f"noise check (seed {args.render_seed_test} vs {args.noise_seed}, {len(reference)} test views, "
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
    p.add_argument("--mesh", default=DEFAULT_MESH, help="OFF mesh: a member of --meshes-archive, or a path")
    p.add_argument("--meshes-archive", type=Path, help="CGAL's data.tar.gz (default: Debian's libcgal-demo copy)")
    p.add_argument("--blender-python", default=None, help="a Python with bpy (default: $RELIGHT3D_BPY_PYTHON)")
    p.add_argument("--cameras-json", type=Path, default=None, help=argparse.SUPPRESS)  # set for the Blender side
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
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    return render(args) if args.cameras_json is not None else prepare_and_render(args, argv)


def prepare_and_render(args: argparse.Namespace, argv: list[str]) -> int:
    """relight3d's side: find the mesh and a Python with bpy, compute the cameras, then run :func:`render` there."""
    from relight3d.errors import Relight3dError
    from relight3d_bench.cameras import camera_poses, write_cameras
    from relight3d_bench.config import mesh_source, resolve_meshes_archive
    from relight3d_bench.runner import find_bpy_python, run_in_bpy_python

    try:
        if "::" not in args.mesh and not Path(args.mesh).expanduser().is_file():
            args.mesh = mesh_source(args.mesh, resolve_meshes_archive(args.meshes_archive))
        out = args.out.expanduser().resolve()
        if not args.force and not args.check_noise and scene_is_cached(out, build_settings(args)):
            print(f"scene is cached (meta.json matches the requested settings): {out}")
            return 0
        python = find_bpy_python(args.blender_python)
    except Relight3dError as err:
        print(f"render_object_scene.py: error: {err}", file=sys.stderr)
        return 2
    splits = (("train", args.n_train, args.camera_seed_train), ("test", args.n_test, args.camera_seed_test))
    poses = {name: camera_poses(n, seed, args.camera_distance, args.min_elevation_deg) for name, n, seed in splits}
    with tempfile.TemporaryDirectory(prefix="render_object_scene_") as tmp:
        cameras = write_cameras(Path(tmp) / "cameras.json", poses)
        run_in_bpy_python(python, [Path(__file__).resolve(), *argv, "--mesh", args.mesh, "--cameras-json", cameras])
    return 0


def render(args: argparse.Namespace) -> int:
    """The Blender side: render the scene with the cameras of ``--cameras-json`` (needs bpy, not torch)."""
    import bpy

    out: Path = args.out.expanduser().resolve()
    settings = build_settings(args)
    cached = not args.force and scene_is_cached(out, settings)
    env_path = cs.resolve_env_path(args.env)
    verts, tris, colors = meshes.prepare_mesh(args.mesh, args.mesh_up, args.object_radius, ALBEDO_A, ALBEDO_B)
    fov_x = cs.camera_angle_x()
    cameras = cs.read_cameras(args.cameras_json)
    train_c2ws, test_c2ws = cameras["train"], cameras["test"]
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
        images: dict[str, list[Path]] = {}
        seconds: dict[str, float] = {}
        for split, c2ws in (("train", train_c2ws), ("test", test_c2ws)):
            images[split] = [out / split / f"r_{i:03d}.png" for i in range(len(c2ws))]
            samples, threshold, seed = (getattr(args, f"{key}_{split}") for key in SAMPLING_OPTIONS)
            spent = cs.render_views(scene, cam, c2ws, images[split], samples, threshold, seed, split)
            seconds[split] = round(spent.wall_seconds, 1)
        for split, image_dir, c2ws in (("train", "train", train_c2ws), ("val", "test", test_c2ws)):
            cs.write_transforms(out, split, image_dir, c2ws, fov_x)
        cs.write_transforms(out, "test", "test", test_c2ws, fov_x)
        all_images = images["train"] + images["test"]
        objaverse_imgs = write_objaverse(out, all_images, train_c2ws + test_c2ws, env_path)
        meshes.write_ply(out / "mesh.ply", verts, tris, colors)
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
            "render_seconds": seconds,
            "threads": args.threads,
            "sha256": {str(p.relative_to(out)): cs.sha256_file(p) for p in all_images + objaverse_imgs},
        }
        (out / "meta.json").write_text(json.dumps(meta, indent=2))
        print(f"wrote {out} (train {seconds['train']:.0f} s, test {seconds['test']:.0f} s)")

    if args.check_noise:
        result = check_noise(scene, cam, out, test_c2ws, args)
        (out / "noise_check.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
