"""``relight3d data from-images``: the subcommand over :func:`relight3d.pipelines.image_triplets.run_from_images`.

The ``relight3d data`` group adds it with :func:`register_from_images`; the options are the fields of
:class:`~relight3d.pipelines.image_triplets.FromImagesConfig`, with hyphens. Importing this module is cheap
(argparse and dataclasses; torch and transformers are imported when the command runs).

Example:
    >>> parser = argparse.ArgumentParser()
    >>> register_from_images(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["from-images", "--input", "photos", "--output", "out", "--variants", "2"])
    >>> args.variants, args.square
    (2, True)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from relight3d.cli_types import (
    add_command,
    add_device_argument,
    config_from_args,
    non_negative_int,
    positive_int,
    unit_interval_float,
)


def _default(name: str) -> Any:
    from relight3d.pipelines.image_triplets import FromImagesConfig

    return FromImagesConfig.__dataclass_fields__[name].default


def _run(args: argparse.Namespace) -> int:
    from relight3d.pipelines.image_triplets import FromImagesConfig, run_from_images

    config = config_from_args(
        FromImagesConfig,
        args,
        foreground_labels=tuple(args.foreground_labels),
        clip_good_prompts=tuple(args.clip_good_prompts),
        clip_bad_prompts=tuple(args.clip_bad_prompts),
    )
    summary = run_from_images(config)
    print(
        f"from-images: {summary['triplets']} triplets from {summary['kept']} of {summary['photos']} photos "
        f"({len(summary['filtered'])} filtered by CLIP, {len(summary['skipped'])} skipped) -> "
        f"{Path(config.output) / 'triplets.jsonl'}"
    )
    return 0


def register_from_images(commands: argparse._SubParsersAction) -> None:
    """Add ``from-images`` to a command group (``relight3d data``); it runs with ``args.func(args)``."""
    parser = add_command(
        commands,
        "from-images",
        help="(photo, instruction, relit photo) triplets for an InstructPix2Pix relighting prior",
        description="For each object photo in --input: a mask (alpha or a segmentation model), the Retinex albedo, "
        "a shape inflated from the mask, then --variants random new lights (environment maps or a directional "
        "light with shadows and highlights) rendered on them; writes (photo, instruction naming the new light, "
        "relit photo) triplets to --output (triplets.jsonl, inputs/, targets/, masks/, albedo/, summary.json).",
    )
    parser.add_argument("--input", type=Path, required=True, help="folder of object photos (its top level)")
    parser.add_argument("--output", type=Path, required=True, help="folder to write the triplets to")
    parser.add_argument("--variants", type=positive_int, default=_default("variants"), help="new lights per photo")
    parser.add_argument("--seed", type=non_negative_int, default=_default("seed"), help="seed of the random lights")
    parser.add_argument(
        "--resolution", type=positive_int, default=_default("resolution"), help="longest side of the images, pixels"
    )
    parser.add_argument(
        "--square",
        action=argparse.BooleanOptionalAction,
        default=_default("square"),
        help="pad the images to resolution x resolution",
    )
    parser.add_argument(
        "--background",
        choices=["white", "photo"],
        default=_default("background"),
        help="outside the mask: white, or the photo's pixels (photos without alpha)",
    )
    parser.add_argument(
        "--mask-source",
        choices=["auto", "alpha", "segmentation"],
        default=_default("mask_source"),
        help="foreground mask: alpha, the segmentation model, or auto (alpha when there is one)",
    )
    parser.add_argument(
        "--segmentation-model",
        type=Path,
        default=None,
        help="local folder of a transformers semantic-segmentation model (AutoModelForSemanticSegmentation + "
        "its image processor) for photos without alpha",
    )
    parser.add_argument(
        "--foreground-labels",
        nargs="*",
        default=[],
        metavar="LABEL",
        help="segmentation labels (ids or names) that are foreground (default: every label but 0)",
    )
    parser.add_argument(
        "--clip-model",
        type=Path,
        default=None,
        help="local folder of a CLIP model + processor; drops photos whose lighting scores below --clip-threshold",
    )
    parser.add_argument(
        "--clip-threshold",
        type=unit_interval_float,
        default=_default("clip_threshold"),
        help="least CLIP probability of the good-lighting prompts",
    )
    parser.add_argument(
        "--clip-good-prompts", nargs="+", default=list(_default("clip_good_prompts")), help="well-lit prompts"
    )
    parser.add_argument(
        "--clip-bad-prompts", nargs="+", default=list(_default("clip_bad_prompts")), help="badly lit prompts"
    )
    parser.add_argument(
        "--envmaps",
        type=Path,
        default=None,
        help="folder of .exr / .hdr environment maps, world Z up (default: the maps shipped with relight3d)",
    )
    parser.add_argument(
        "--directional-fraction",
        type=unit_interval_float,
        default=_default("directional_fraction"),
        help="fraction of the variants lit by a directional light (the rest by an environment map)",
    )
    parser.add_argument(
        "--instruction-template",
        default=_default("instruction_template"),
        help="the instruction; {lighting} becomes the light's description",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run's triplets in --output")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --output")
    add_device_argument(parser, "device of the segmentation and CLIP models")
    parser.set_defaults(func=_run)


__all__ = ["register_from_images"]
