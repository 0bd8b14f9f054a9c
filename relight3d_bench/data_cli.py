"""``relight3d data``: make training data for relighting priors (thin wrappers; cheap to import).

* ``relight3d data render``: objects x maps x rotations x views rendered with Blender Cycles, with G-buffers
  (:func:`relight3d_bench.dataset_runner.render_dataset`);
* ``relight3d data from-images``: (photo, instruction, relit photo) triplets from real photos
  (:mod:`relight3d.pipelines.image_triplets`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from relight3d.cli_types import add_command, non_negative_float, non_negative_int, positive_int
from relight3d.pipelines.image_triplets_cli import register_from_images
from relight3d_bench.config import BPY_PYTHON_ENV
from relight3d_bench.dataset_config import BUNDLED, DatasetRenderConfig


def _render(args: argparse.Namespace) -> int:
    from relight3d_bench.dataset_runner import render_dataset

    defaults = DatasetRenderConfig()
    values = {name: getattr(args, name) for name in DatasetRenderConfig.__dataclass_fields__ if hasattr(args, name)}
    values["objects"] = tuple(args.objects or defaults.objects)
    values["envmaps"] = tuple(args.envmaps or defaults.envmaps)
    config = DatasetRenderConfig(**values)
    try:
        meta = render_dataset(config, Path(args.output), workers=args.workers, threads=args.threads,
                              overwrite=args.overwrite, python=args.blender_python,
                              meshes_archive=args.meshes_archive)  # fmt: skip
    except RuntimeError as err:  # a Blender process failed; its own output is above
        print(f"relight3d: error: {err}", file=sys.stderr)
        return 1
    print(f"dataset: {Path(args.output).resolve()} ({meta['samples']} samples: {meta['objects']} objects x "
          f"{meta['maps']} maps x {meta['rotations']} rotations x {meta['views']} views; "
          f"{meta['seconds_this_run']:.0f} s)")  # fmt: skip
    return 0


def _render_options(p: argparse.ArgumentParser) -> None:
    d = DatasetRenderConfig()
    p.add_argument("--output", required=True, help="dataset folder (created; a run with the same options resumes)")
    p.add_argument("--objects", nargs="+", metavar="NAME|MESH",
                   help=f"bundled objects ({', '.join(BUNDLED)}) or mesh files (.ply .obj .glb .gltf .off .stl); "
                   f"default: {' '.join(d.objects)}")  # fmt: skip
    p.add_argument(
        "--envmaps",
        nargs="+",
        metavar="MAP[:STRENGTH]",
        help=f"bundled maps or .exr/.hdr files, each optionally :strength; default: {' '.join(d.envmaps)}",
    )
    p.add_argument("--rotations", type=positive_int, default=d.rotations, help="random rotations per map (first: 0)")
    p.add_argument("--views", type=positive_int, default=d.views, help="views per object")
    p.add_argument("--resolution", type=positive_int, default=d.resolution, help="image size in pixels")
    p.add_argument("--spp", type=positive_int, default=d.spp, help="Cycles max samples per pixel")
    p.add_argument("--adaptive-threshold", type=non_negative_float, default=d.adaptive_threshold,
                   help="Cycles adaptive-sampling noise threshold")  # fmt: skip
    p.add_argument("--gbuffer-supersample", type=positive_int, default=d.gbuffer_supersample,
                   help="G-buffer rays per pixel side")  # fmt: skip
    p.add_argument("--up-axis", choices=["y", "z"], default=d.up_axis, help="up axis of mesh files")
    p.add_argument("--metallic-probability", type=non_negative_float, default=d.metallic_probability,
                   help="share of objects drawn metallic")  # fmt: skip
    p.add_argument("--seed", type=non_negative_int, default=d.seed, help="seed of materials, cameras, rotations")
    p.add_argument("--workers", type=positive_int, default=1, help="Blender processes rendering in parallel")
    p.add_argument("--threads", type=positive_int, default=1, help="Cycles threads per process")
    p.add_argument("--overwrite", action="store_true", help="start over in a folder made before")
    p.add_argument("--blender-python", default=None, help=f"a Python with bpy (default: ${BPY_PYTHON_ENV}, else this)")
    p.add_argument("--meshes-archive", type=Path, default=None, help="CGAL's data.tar.gz (for its bundled meshes)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data`` (``render``, ``from-images``) to the ``relight3d`` command."""
    data = add_command(subparsers, "data", help="make training data for relighting priors")
    commands = data.add_subparsers(dest="data_command", required=True)
    render = add_command(
        commands,
        "render",
        help="render objects x maps x rotations x views with Cycles, with G-buffers (needs a Python with bpy)",
        description="Render a relighting training set: each object under each environment map at random rotations, "
        "from several views, as RGBA images with the views' G-buffers (base colour, normals, depth, roughness, "
        "metallic), the maps and the cameras, listed in manifest.jsonl (what relight3d train-prior reads). Objects "
        "without materials get random ones. Resumable: run the same command again.",
    )
    _render_options(render)
    render.set_defaults(func=_render)
    register_from_images(commands)
