"""``relight3d envmap``: inspect, rotate and preview environment maps (thin wrappers over relight3d.lighting).

Importing this module is cheap (argparse only); torch, OpenCV and OpenEXR load when a command runs.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Callable

from relight3d.cli_types import add_command, finite_float

PREVIEW_SUFFIXES = (".png", ".jpg", ".jpeg")


def _format_direction(direction) -> str:
    from relight3d.lighting.summary import direction_angles

    azimuth, elevation = direction_angles(direction)
    x, y, z = direction
    return f"({x:+.3f}, {y:+.3f}, {z:+.3f}), azimuth {azimuth:.1f} deg, elevation {elevation:.1f} deg"


def _info(args: argparse.Namespace) -> int:
    from relight3d.lighting.envmap_io import read_envmap
    from relight3d.lighting.summary import summarize_envmap

    summary = summarize_envmap(read_envmap(args.file))
    r, g, b = summary.mean_rgb
    br, bg, bb = summary.brightest_rgb
    print(f"{args.file}")
    print(f"  size: {summary.height} x {summary.width} (height x width), linear RGB, world Z up (Blender convention)")
    print(f"  radiance: min {summary.min_radiance:.6g}, max {summary.max_radiance:.6g}")
    print(f"  mean over the sphere: luminance {summary.mean_luminance:.6g}, RGB ({r:.6g}, {g:.6g}, {b:.6g})")
    print(f"  dominant light direction: {_format_direction(summary.dominant_direction)}")
    print(f"  brightest pixel: {_format_direction(summary.brightest_direction)}, RGB ({br:.6g}, {bg:.6g}, {bb:.6g})")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from relight3d.lighting.envmap_io import read_envmap, write_envmap
    from relight3d.lighting.equirect import rotate_envmap_about_up

    envmap = read_envmap(args.file)
    rotated = rotate_envmap_about_up(envmap, math.radians(args.degrees)).clamp_min(0.0)
    out = write_envmap(args.output, rotated)
    print(f"wrote {out} (rotated {args.degrees:g} deg counter-clockwise about +Z, seen from above)")
    return 0


def _preview(args: argparse.Namespace) -> int:
    from relight3d.errors import DataError

    output = Path(args.output)
    if output.suffix.lower() not in PREVIEW_SUFFIXES:
        raise DataError(output, f"preview must be written as {', '.join(PREVIEW_SUFFIXES)}")
    import imageio.v3 as iio
    import numpy as np

    from relight3d.lighting.envmap_io import read_envmap
    from relight3d.lighting.summary import preview_envmap

    image = preview_envmap(read_envmap(args.file), exposure_stops=args.exposure)
    output.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(output, np.round(image.numpy() * 255.0).astype(np.uint8))
    print(f"wrote {output}")
    return 0


EXPOSURE_HELP = "exposure in stops (radiance x 2^stops before clipping); default: automatic (99th percentile -> white)"


def _map_command(
    commands: argparse._SubParsersAction, name: str, text: str, func: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    """A subcommand that reads one map (the positional ``file``) and runs ``func``."""
    parser = add_command(commands, name, help=text)
    parser.add_argument("file", help=".exr or .hdr equirectangular map")
    parser.set_defaults(func=func)
    return parser


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``envmap`` with its ``info``, ``rotate`` and ``preview`` subcommands."""
    envmap = add_command(subparsers, "envmap", help="inspect, rotate or preview an environment map (.hdr / .exr)")
    commands = envmap.add_subparsers(dest="envmap_command", required=True)
    _map_command(commands, "info", "size, radiance range and mean, dominant light direction", _info)
    rotate = _map_command(commands, "rotate", "turn the map about the up axis (+Z) and write it", _rotate)
    rotate.add_argument("--degrees", type=finite_float, required=True, help="angle, counter-clockwise seen from above")
    rotate.add_argument("--output", required=True, help="output .exr or .hdr")
    preview = _map_command(commands, "preview", "write a tonemapped LDR (sRGB) preview image", _preview)
    preview.add_argument("--output", required=True, help="output .png or .jpg")
    preview.add_argument("--exposure", type=finite_float, default=None, help=EXPOSURE_HELP)
