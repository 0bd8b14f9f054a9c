"""``relight3d eval``: score renders against ground truth (one run), or compare methods (``relight3d eval compare``).

Examples::

    relight3d eval --pred runs/ours/city --gt gt/city --baseline gt/light000 --output reports/ours_city
    relight3d eval compare --gt gt/city --method ours=runs/ours/city --method gaffer=runs/gaffer/city \\
        --baseline gt/light000 --output reports/city
    relight3d eval compare --manifest benchmark.yaml --output reports/all

Heavy imports (torch, matplotlib) happen inside the command functions.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from relight3d.cli_types import add_command, add_device_argument, resolve_device
from relight3d.errors import ConfigError

EVAL_HELP = "PSNR/SSIM/LPIPS of renders against ground truth (in the mask and full image, raw and channel-aligned)"
EVAL_DESCRIPTION = (
    "Score a folder of PNG renders against the ground-truth PNGs of the same names (the GT alpha is the object mask). "
    "'relight3d eval compare' compares several methods and writes an HTML report."
)
COMPARE_HELP = "compare methods (and the no-relighting baseline) on one object/light, or on a manifest"
COMPARE_DESCRIPTION = (
    "Compare methods against one ground-truth folder (--gt, --method NAME=DIR ...) or over the objects x lights x "
    "methods of a JSON/YAML manifest (--manifest; see relight3d.eval.manifest)."
)
LPIPS_HELP = (
    "LPIPS backbone; 'none' skips LPIPS. Without weights on disk LPIPS is reported as n/a (put torchvision's "
    "alexnet-owt-7be5be79.pth and lpips' alex.pth in a folder named by $RELIGHT3D_LPIPS_WEIGHTS, or the backbone in "
    "the torch hub cache)"
)


def _regex(value: str) -> str:
    import re

    try:
        re.compile(value)
    except re.error as err:
        raise argparse.ArgumentTypeError(f"not a valid regular expression: {value!r} ({err})") from err
    return value


def _background(value: str) -> float:
    from relight3d.eval.folders import parse_background

    try:
        return parse_background(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _method(value: str) -> Tuple[str, str]:
    name, sep, folder = value.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {value!r}")
    return name, folder


def _methods(pairs: List[Tuple[str, str]]) -> Dict[str, str]:
    methods: Dict[str, str] = {}
    for name, folder in pairs:
        if name in methods:
            raise ConfigError("--method", f"method {name!r} is given twice")
        methods[name] = folder
    return methods


def _folder(path: Optional[str], pattern: Optional[str] = None):  # noqa: ANN202 - an ImageFolder or None
    from relight3d.eval.folders import ImageFolder

    return None if path is None else ImageFolder(Path(path), pattern)


def _settings(args: argparse.Namespace) -> Dict[str, Any]:
    """The scoring settings every mode takes from the common options."""
    lpips = None if args.lpips == "none" else args.lpips
    return {"lpips": lpips, "device": resolve_device(args.device), "use_mask": not args.no_mask}


def _finish(args: argparse.Namespace, result: Any) -> int:
    """Write the report when ``--output`` is given, and print the table."""
    from relight3d.eval.report import write_report
    from relight3d.eval.tables import format_terminal_table

    if args.output is not None:
        write_report(result, args.output)
    print(format_terminal_table(result))
    if args.output is not None:
        print(f"report: {Path(args.output) / 'report.html'}")
    return 0


def _single(args: argparse.Namespace) -> int:
    from relight3d.eval.evaluate import compare

    if args.pred is None or args.gt is None:
        args.parser.error("give --pred DIR and --gt DIR (or use 'relight3d eval compare')")
    result = compare(
        _folder(args.gt, args.gt_pattern),
        {args.name: _folder(args.pred, args.pred_pattern)},
        baseline_dir=_folder(args.baseline, args.baseline_pattern),
        background=1.0 if args.background is None else args.background,
        **_settings(args),
    )
    return _finish(args, result)


def _compare(args: argparse.Namespace) -> int:
    from relight3d.eval.evaluate import compare, evaluate_manifest

    if args.manifest is not None:
        if args.gt is not None or args.method or args.baseline is not None:
            args.parser.error("--manifest replaces --gt/--method/--baseline")
        result = evaluate_manifest(args.manifest, background=args.background, **_settings(args))
        return _finish(args, result)
    if args.gt is None or not (args.method or args.baseline):
        args.parser.error("give --gt DIR and at least one --method NAME=DIR or --baseline DIR (or --manifest FILE)")
    result = compare(
        args.gt,
        _methods(args.method or []),
        baseline_dir=args.baseline,
        input_dir=args.input,
        object_name=args.object,
        light=args.light,
        background=1.0 if args.background is None else args.background,
        **_settings(args),
    )
    return _finish(args, result)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--background",
        type=_background,
        default=None,
        help="grey level RGBA images are composited on: white, black or a number in [0, 1] (default: white, or "
        "the manifest's)",
    )
    parser.add_argument("--lpips", default="alex", choices=["alex", "vgg", "none"], help=LPIPS_HELP)
    add_device_argument(parser, "device for LPIPS")
    parser.add_argument(
        "--no-mask",
        action="store_true",
        help="score ground truth that has no alpha channel: in-mask metrics are n/a and the report says so "
        "(without this option such ground truth is refused, since the in-mask metrics need its alpha as the mask)",
    )
    parser.add_argument("--output", default=None, help="folder for the report (CSV, Markdown, JSON, HTML)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval`` (and ``eval compare``) to the ``relight3d`` command."""
    parser = add_command(subparsers, "eval", help=EVAL_HELP, description=EVAL_DESCRIPTION)
    parser.add_argument("--pred", default=None, help="folder of predicted PNGs")
    parser.add_argument("--gt", default=None, help="folder of ground-truth RGBA PNGs (same file names)")
    parser.add_argument(
        "--baseline", default=None, help="the same views under the training light: the 'no relighting' baseline"
    )
    parser.add_argument("--name", default="prediction", help="method name shown in the table")
    for what in ("pred", "gt", "baseline"):
        parser.add_argument(
            f"--{what}-pattern",
            default=None,
            type=_regex,
            help=f"regex on {what} file names; its first group names the view (default: file stem)",
        )
    _add_common(parser)
    parser.set_defaults(func=_single, parser=parser)

    modes = parser.add_subparsers(dest="eval_mode")
    cmp = add_command(modes, "compare", help=COMPARE_HELP, description=COMPARE_DESCRIPTION)
    cmp.add_argument("--gt", default=None, help="folder of ground-truth RGBA PNGs")
    cmp.add_argument(
        "--method", action="append", type=_method, default=None, metavar="NAME=DIR", help="a method's renders (repeat)"
    )
    cmp.add_argument("--baseline", default=None, help="the same views under the training light (baseline + input)")
    cmp.add_argument("--input", default=None, help="images shown as input in the grids (default: --baseline)")
    cmp.add_argument("--object", default="object", help="object name for the records")
    cmp.add_argument("--light", default="light", help="light name for the records")
    cmp.add_argument("--manifest", default=None, help="JSON/YAML manifest of objects x lights x methods")
    _add_common(cmp)
    cmp.set_defaults(func=_compare, parser=cmp)
