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
from typing import Dict

from relight3d.errors import DataError


def _regex(value: str) -> str:
    import re

    try:
        re.compile(value)
    except re.error as err:
        raise argparse.ArgumentTypeError(f"not a valid regular expression: {value!r} ({err})") from None
    return value


def _background(value: str) -> float:
    from relight3d.eval.evaluate import parse_background

    try:
        return parse_background(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--background",
        type=_background,
        default=None,
        help="grey level RGBA images are composited on: white (default), black or a number in [0, 1]",
    )
    parser.add_argument(
        "--lpips",
        default="alex",
        choices=["alex", "vgg", "none"],
        help="LPIPS backbone; 'none' skips LPIPS. Without weights on disk LPIPS is reported as n/a "
        "(put torchvision's alexnet-owt-7be5be79.pth and lpips' alex.pth in a folder named by "
        "$RELIGHT3D_LPIPS_WEIGHTS, or the backbone in the torch hub cache)",
    )
    parser.add_argument("--device", default="cpu", help="device for LPIPS (cpu, cuda)")
    parser.add_argument(
        "--no-mask",
        action="store_true",
        help="score ground truth that has no alpha channel: in-mask metrics are n/a and the report says so "
        "(without this option such ground truth is refused, since the in-mask metrics need its alpha as the mask)",
    )
    parser.add_argument("--output", default=None, help="folder for the report (CSV, Markdown, JSON, HTML)")


def _folder(path: str, pattern: str | None):  # noqa: ANN202
    from relight3d.eval.folders import ImageFolder

    return ImageFolder(Path(path), pattern)


def _single(args: argparse.Namespace) -> int:
    from relight3d.eval.evaluate import compare, evaluate_folders
    from relight3d.eval.report import format_terminal_table

    if args.pred is None or args.gt is None:
        args.parser.error("give --pred DIR and --gt DIR (or use 'relight3d eval compare')")
    background = 1.0 if args.background is None else args.background
    lpips = None if args.lpips == "none" else args.lpips
    gt = _folder(args.gt, args.gt_pattern)
    pred = _folder(args.pred, args.pred_pattern)
    baseline = None if args.baseline is None else _folder(args.baseline, args.baseline_pattern)
    if baseline is None:
        result = evaluate_folders(
            pred,
            gt,
            method=args.name,
            background=background,
            lpips=lpips,
            device=args.device,
            use_mask=not args.no_mask,
        )
        if args.output is not None:
            from relight3d.eval.report import write_report

            write_report(result, args.output)
    else:
        result = compare(
            gt,
            {args.name: pred},
            baseline_dir=baseline,
            output=args.output,
            background=background,
            lpips=lpips,
            device=args.device,
            use_mask=not args.no_mask,
        )
    print(format_terminal_table(result))
    if args.output is not None:
        print(f"report: {Path(args.output) / 'report.html'}")
    return 0


def _parse_methods(values: list[str]) -> Dict[str, str]:
    methods: Dict[str, str] = {}
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep or not name or not folder:
            raise DataError(value, "--method wants NAME=DIR")
        if name in methods:
            raise DataError(value, f"method {name!r} is given twice")
        methods[name] = folder
    return methods


def _compare(args: argparse.Namespace) -> int:
    from relight3d.eval.evaluate import compare, evaluate_manifest
    from relight3d.eval.report import format_terminal_table

    lpips = None if args.lpips == "none" else args.lpips
    if args.manifest is not None:
        if args.gt is not None or args.method or args.baseline is not None:
            args.parser.error("--manifest replaces --gt/--method/--baseline")
        result = evaluate_manifest(
            args.manifest,
            output=args.output,
            background=args.background,
            lpips=lpips,
            device=args.device,
            use_mask=not args.no_mask,
        )
    else:
        if args.gt is None or not (args.method or args.baseline):
            args.parser.error("give --gt DIR and at least one --method NAME=DIR or --baseline DIR (or --manifest FILE)")
        methods = _parse_methods(args.method)
        result = compare(
            args.gt,
            methods,
            baseline_dir=args.baseline,
            input_dir=args.input,
            object_name=args.object,
            light=args.light,
            output=args.output,
            background=1.0 if args.background is None else args.background,
            lpips=lpips,
            device=args.device,
            use_mask=not args.no_mask,
        )
    print(format_terminal_table(result))
    if args.output is not None:
        print(f"report: {Path(args.output) / 'report.html'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``eval`` (and ``eval compare``) to the ``relight3d`` command."""
    parser = subparsers.add_parser(
        "eval",
        help="PSNR/SSIM/LPIPS of renders against ground truth (in the mask and full image, raw and channel-aligned)",
        description="Score a folder of PNG renders against the ground-truth PNGs of the same names (the GT alpha is "
        "the object mask). 'relight3d eval compare' compares several methods and writes an HTML report.",
    )
    parser.add_argument("--pred", default=None, help="folder of predicted PNGs")
    parser.add_argument("--gt", default=None, help="folder of ground-truth RGBA PNGs (same file names)")
    parser.add_argument(
        "--baseline",
        default=None,
        help="the same views under the training light: scored as the 'no relighting' baseline",
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
    cmp = modes.add_parser(
        "compare",
        help="compare methods (and the no-relighting baseline) on one object/light, or on a manifest",
        description="Compare methods against one ground-truth folder (--gt, --method NAME=DIR ...) or over the "
        "objects x lights x methods of a JSON/YAML manifest (--manifest; see relight3d.eval.evaluate).",
    )
    cmp.add_argument("--gt", default=None, help="folder of ground-truth RGBA PNGs")
    cmp.add_argument("--method", action="append", default=[], metavar="NAME=DIR", help="a method's renders (repeat)")
    cmp.add_argument("--baseline", default=None, help="the same views under the training light (baseline + input)")
    cmp.add_argument("--input", default=None, help="images shown as input in the grids (default: --baseline)")
    cmp.add_argument("--object", default="object", help="object name for the records")
    cmp.add_argument("--light", default="light", help="light name for the records")
    cmp.add_argument("--manifest", default=None, help="JSON/YAML manifest of objects x lights x methods")
    _add_common(cmp)
    cmp.set_defaults(func=_compare, parser=cmp)
