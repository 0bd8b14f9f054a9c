"""The ``relight3d`` command. Thin: it parses arguments and calls library functions."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from relight3d.errors import Relight3dError


def _demo(args: argparse.Namespace) -> int:
    from relight3d.demo import DemoConfig, format_summary, run_demo

    cfg = DemoConfig(
        method=args.method,
        resolution=args.resolution,
        n_train=args.n_train,
        n_test=args.n_test,
        supersample=args.supersample,
        steps=args.steps,
        stage1_steps=args.stage1_steps,
        stage2_steps=args.stage2_steps,
        video_frames=args.video_frames,
        mesh_resolution=args.mesh_resolution,
        source_light=args.source_light,
        shadow_grid=args.shadow_grid,
        shadow_rows=args.shadow_rows,
        rays_per_batch=args.rays_per_batch,
        output=Path(args.output),
    )
    print(format_summary(run_demo(cfg)))
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    from relight3d.cli_types import non_negative_int, positive_int

    defaults = _demo_defaults()
    demo = sub.add_parser(
        "demo",
        help="generate a small scene, train a field, relight it under two HDR maps, score, write video/mesh/report",
        description="The embedded default (no downloads, no weights): relight3d's own tracer renders three textured "
        "primitives under a source HDR map (training and held-out views) and the held-out views under two other "
        "maps; a field is trained, relit under both maps with the physical prior, scored against the held-out "
        "ground truth with the no-relighting baseline, and a rotating-light video per map, a mesh and an HTML "
        "report are written. The ground truth uses the same shading model as the physical prior, so the figures "
        "flatter it.",
    )
    demo.add_argument(
        "--method", default=defaults.method, choices=["relight3d-tensorf", "relight3d-ngp"], help="default: %(default)s"
    )
    counts = (
        ("--resolution", positive_int, "image size in pixels"),
        ("--n-train", positive_int, "training views"),
        ("--n-test", positive_int, "held-out views per light"),
        ("--supersample", positive_int, "rays per pixel side when rendering the scene"),
        ("--steps", positive_int, "field training iterations"),
        ("--stage1-steps", positive_int, "relighting stage-1 iterations per light"),
        ("--stage2-steps", non_negative_int, "relighting stage-2 iterations per light"),
        ("--video-frames", non_negative_int, "frames per rotating-light video (0: none)"),
        ("--mesh-resolution", non_negative_int, "mesh grid samples along the longest side (0: no mesh)"),
        ("--shadow-grid", non_negative_int, "cells per side of the grid the prior traces shadows through (0: none)"),
        ("--shadow-rows", positive_int, "rows of the map whose texels are the shadow directions (2 rows^2 of them)"),
    )
    for flag, kind, text in counts:
        default = getattr(defaults, flag[2:].replace("-", "_"))
        demo.add_argument(flag, type=kind, default=default, help=f"{text} (default: %(default)s)")
    demo.add_argument(
        "--source-light", default=defaults.source_light, choices=["recorded", "estimated"],
        help="source light the prior divides out: the scene's map, or estimated from the field (default: %(default)s)",
    )  # fmt: skip
    demo.add_argument("--rays-per-batch", type=positive_int, default=None, help="training rays per batch")
    demo.add_argument("--output", default=str(defaults.output), help="output folder (default: %(default)s)")
    demo.set_defaults(func=_demo)


def _demo_defaults():  # noqa: ANN202 - a DemoConfig; relight3d.demo imports nothing heavy at module level
    from relight3d.demo import DemoConfig

    return DemoConfig()


# Modules that add subcommands. Each defines ``register(subparsers)``; importing it must stay cheap (heavy imports
# go inside the command functions), because every ``relight3d`` invocation imports all of them.
SUBCOMMAND_MODULES: Tuple[str, ...] = (
    "relight3d.benchmark.cli",
    "relight3d.export.cli",
    "relight3d.eval.cli",
    "relight3d.lighting.cli",
    "relight3d.pipelines.cli",
    "relight3d.priors.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relight3d", description="Relighting radiance fields (a nerfstudio plugin)")
    sub = parser.add_subparsers(dest="command", required=True)

    _add_demo(sub)

    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is not None and name.startswith(err.name):
                continue  # that part of the package is not installed / not written yet
            raise
        module.register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Relight3dError as err:
        print(f"relight3d: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
