"""``relight3d bench``: generate the relighting benchmark and check its noise (thin wrappers over
:func:`~relight3d_bench.runner.make_benchmark`).

Importing this module stays cheap (every ``relight3d`` invocation registers it): the runner, which imports torch for
the cameras, is imported when a command runs. Bad options, a missing meshes archive or a missing ``bpy`` are
:class:`~relight3d.errors.Relight3dError` lines (exit code 2, printed by ``relight3d``); a failed render exits with 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Optional, Tuple

from relight3d.cli_types import add_command, non_negative_float, non_negative_int, positive_int
from relight3d_bench.config import BPY_PYTHON_ENV, DEBIAN_MESHES_ARCHIVE, BenchmarkConfig, select

RENDER_OPTIONS = ("resolution", "n_train", "n_test", "spp_train", "spp_test", "adaptive_threshold_test")
"""BenchmarkConfig fields set from the options of the same name."""


def _config(args: argparse.Namespace) -> BenchmarkConfig:
    config = select(BenchmarkConfig(), tuple(args.objects or ()), args.lights)
    return dataclasses.replace(config, **{name: getattr(args, name) for name in RENDER_OPTIONS})


def _run(args: argparse.Namespace, check_noise: Optional[Tuple[str, int]], noise_only: bool) -> int:
    from relight3d_bench.runner import make_benchmark

    config = _config(args)
    if check_noise is not None and check_noise[0] == "":
        check_noise = (config.objects[0].name, check_noise[1])
    try:
        root = make_benchmark(
            config,
            out=args.out,
            threads=args.threads,
            force=getattr(args, "force", False),
            check_noise=check_noise,
            noise_seed=args.noise_seed,
            python=args.blender_python,
            noise_only=noise_only,
            meshes_archive=args.meshes_archive,
        )
    except RuntimeError as err:  # the renderer failed; its own output is above
        print(f"relight3d: error: {err}", file=sys.stderr)
        return 1
    print(f"benchmark: {root}")
    return 0


def _make(args: argparse.Namespace) -> int:
    noise = (args.noise_object or "", args.noise_light) if args.check_noise else None
    return _run(args, noise, noise_only=False)


def _check_noise(args: argparse.Namespace) -> int:
    return _run(args, (args.object or "", args.light), noise_only=True)


def _add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments that select the benchmark (the same values must be given to ``make`` and ``check-noise``)."""
    defaults = BenchmarkConfig()
    names = ", ".join(o.name for o in defaults.objects)
    parser.add_argument(
        "--out", type=Path, default=None, help="benchmark folder (default: in ~/.cache/relight3d/bench)"
    )
    parser.add_argument("--objects", nargs="+", metavar="NAME", help=f"subset of the objects ({names})")
    parser.add_argument("--lights", type=non_negative_int, default=0, help="use the first N lights (0 = all)")
    parser.add_argument("--resolution", type=positive_int, default=defaults.resolution, help="image size in pixels")
    parser.add_argument("--n-train", type=positive_int, default=defaults.n_train, help="training views per object")
    parser.add_argument("--n-test", type=positive_int, default=defaults.n_test, help="test views per object and light")
    parser.add_argument(
        "--spp-train", type=positive_int, default=defaults.spp_train, help="max samples per pixel, train"
    )
    parser.add_argument("--spp-test", type=positive_int, default=defaults.spp_test, help="max samples per pixel, test")
    parser.add_argument(
        "--adaptive-threshold-test",
        type=non_negative_float,
        default=defaults.adaptive_threshold_test,
        help="Cycles adaptive-sampling noise threshold of the test views",
    )
    parser.add_argument("--threads", type=positive_int, default=2, help="Cycles CPU threads")
    parser.add_argument(
        "--noise-seed", type=non_negative_int, default=5000, help="Cycles seed of the noise check's first view"
    )
    parser.add_argument(
        "--blender-python", default=None, help=f"a Python with bpy (default: ${BPY_PYTHON_ENV}, else this Python)"
    )
    parser.add_argument(
        "--meshes-archive",
        type=Path,
        default=None,
        help=f"CGAL's data.tar.gz, which holds the meshes (default: Debian libcgal-demo's {DEBIAN_MESHES_ARCHIVE})",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench`` (with ``make`` and ``check-noise``) to the ``relight3d`` command."""
    bench = add_command(subparsers, "bench", help="the relighting benchmark (objects x lights, rendered with Cycles)")
    commands = bench.add_subparsers(dest="bench_command", required=True)
    make = add_command(
        commands,
        "make",
        help="render the benchmark into the cache (needs a Python with bpy)",
        description="Render N training views under light 0 and M test views under every light for each object, "
        "with Blender Cycles, into ~/.cache/relight3d/bench/... (objects already rendered with the same settings "
        "are reused).",
    )
    _add_benchmark_arguments(make)
    make.add_argument("--force", action="store_true", help="re-render objects that are cached")
    make.add_argument(
        "--check-noise",
        action="store_true",
        help="afterwards render one object's test views under one light with another seed and report the in-mask PSNR",
    )
    make.add_argument("--noise-object", default=None, help="object of the noise check (default: the first object)")
    make.add_argument("--noise-light", type=non_negative_int, default=0, help="light index of the noise check")
    make.set_defaults(func=_make)

    check = add_command(
        commands,
        "check-noise",
        help="render one rendered object's test views under one light again with another seed; report in-mask PSNR",
    )
    _add_benchmark_arguments(check)
    check.add_argument("--object", default=None, help="object (default: the first object)")
    check.add_argument("--light", type=non_negative_int, default=0, help="light index")
    check.set_defaults(func=_check_noise)
