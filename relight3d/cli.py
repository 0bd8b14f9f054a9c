"""The ``relight3d`` command. Thin: it parses arguments and calls library functions."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from relight3d.data.errors import DataError


def _demo(args: argparse.Namespace) -> int:
    from relight3d.demo import DemoConfig, format_metrics, run_demo

    cfg = DemoConfig(
        method=args.method,
        resolution=args.resolution,
        n_train=args.n_train,
        n_test=args.n_test,
        steps=args.steps,
        output=Path(args.output),
    )
    metrics = run_demo(cfg)
    print(format_metrics(metrics))
    print(f"renders: {cfg.output / 'test_views'}")
    return 0


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

    demo = sub.add_parser("demo", help="render a small scene with relight3d's own tracer, train on it, report PSNR")
    demo.add_argument("--method", default="relight3d-tensorf", choices=["relight3d-tensorf", "relight3d-ngp"])
    demo.add_argument("--resolution", type=int, default=64, help="image size of the generated scene")
    demo.add_argument("--n-train", type=int, default=50, help="training views")
    demo.add_argument("--n-test", type=int, default=10, help="held-out views")
    demo.add_argument("--steps", type=int, default=500, help="training iterations")
    demo.add_argument("--output", default="renders/demo", help="folder for renders, metrics and the run")
    demo.set_defaults(func=_demo)

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
    except DataError as err:
        print(f"relight3d: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
