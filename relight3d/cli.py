"""The ``relight3d`` command. Thin: it parses arguments and calls library functions.

Every subcommand comes from a ``register(subparsers)`` function listed in :data:`COMMANDS`, imported normally: a
module that fails to import is an error here, not a missing command. Those modules import only argparse-level code
at module level (torch, nerfstudio and diffusers are imported inside the command functions), so ``relight3d --help``
stays fast. Every subcommand is made with :func:`relight3d.cli_types.add_command`, so its ``--help`` lists the
defaults. Layer: apps (the top).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Callable, List, Optional, Tuple, get_args, get_type_hints

from relight3d.cli_types import add_command, config_from_args, non_negative_int, positive_int, split_dotted_options
from relight3d.errors import Relight3dError
from relight3d.eval.cli import register as register_eval
from relight3d.export.cli import register as register_export
from relight3d.lighting.cli import register as register_envmap
from relight3d.pipelines.cli import register as register_pipelines
from relight3d_bench.cli import register as register_bench
from relight3d_bench.data_cli import register as register_data

DEMO_COUNTS = (
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
"""The demo's count options: flag (named like its ``DemoConfig`` field), type and help."""


def _demo(args: argparse.Namespace) -> int:
    from relight3d.demo import DemoConfig, format_summary, run_demo

    print(format_summary(run_demo(config_from_args(DemoConfig, args, output=Path(args.output)))))
    return 0


def register_demo(subparsers: argparse._SubParsersAction) -> None:
    """Add ``demo``; its defaults are :class:`relight3d.demo.DemoConfig`'s (importing that module is cheap)."""
    from relight3d.demo import DemoConfig

    defaults, hints = DemoConfig(), get_type_hints(DemoConfig)
    demo = add_command(
        subparsers,
        "demo",
        help="generate a small scene, train a field, relight it under two HDR maps, score, write video/mesh/report",
        description="The embedded default (no downloads, no weights): relight3d's own tracer renders three textured "
        "primitives under a source HDR map (training and held-out views) and the held-out views under two other "
        "maps; a field is trained, relit under both maps with the physical prior, scored against the held-out "
        "ground truth with the no-relighting baseline, and a rotating-light video per map, a mesh and an HTML "
        "report are written. The ground truth uses the same shading model as the physical prior, so the figures "
        "flatter it.",
    )
    demo.add_argument("--method", default=defaults.method, choices=get_args(hints["method"]), help="field method")
    for flag, kind, text in DEMO_COUNTS:
        demo.add_argument(flag, type=kind, default=getattr(defaults, flag[2:].replace("-", "_")), help=text)
    demo.add_argument(
        "--source-light", default=defaults.source_light, choices=get_args(hints["source_light"]),
        help="source light the prior divides out: the scene's map, or estimated from the field",
    )  # fmt: skip
    demo.add_argument("--rays-per-batch", type=positive_int, default=None, help="training rays per batch")
    demo.add_argument("--output", default=str(defaults.output), help="output folder")
    demo.set_defaults(func=_demo)


COMMANDS: Tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    register_demo,
    register_pipelines,
    register_eval,
    register_export,
    register_envmap,
    register_bench,
    register_data,
)
"""The functions that add the subcommands, in ``relight3d --help`` order."""


def build_parser() -> argparse.ArgumentParser:
    """The ``relight3d`` parser with every subcommand of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="relight3d", description="Relighting radiance fields (a nerfstudio plugin)")
    sub = parser.add_subparsers(dest="command", required=True)
    for register in COMMANDS:
        register(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``relight3d`` with ``argv``; a :class:`~relight3d.errors.Relight3dError` is one line and exit code 2."""
    # nerfstudio's cameras module decorates functions with torch.jit.script, which torch 2.14 deprecates: a two-line
    # FutureWarning on every command that imports it, which the user can do nothing about (and which would break
    # the one-line errors).
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        args.prior_options, rest = split_dotted_options(extra, "prior")
    except argparse.ArgumentTypeError as err:
        parser.error(str(err))
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.prior_options and not getattr(args, "takes_prior_options", False):
        parser.error(f"--prior.<field> options are for relight3d relight, not relight3d {args.command}")
    try:
        return int(args.func(args) or 0)
    except Relight3dError as err:
        print(f"relight3d: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
