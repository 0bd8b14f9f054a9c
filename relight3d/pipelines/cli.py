"""``relight3d`` subcommands of the pipelines: ``textual-inversion`` (RealFusion's first step).

Importing this module is cheap: torch and diffusers are imported inside the command functions. Each subcommand has
an ``_add_<name>(subparsers)`` function listed in :data:`SUBCOMMANDS`; :func:`register` adds them all.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Optional, Tuple

from relight3d.cli_types import finite_float, non_negative_int, positive_float, positive_int
from relight3d.errors import ConfigError


def _textual_inversion(args: argparse.Namespace) -> int:
    from relight3d.priors.textual_inversion import TextualInversionConfig, train_textual_inversion

    config = TextualInversionConfig(
        image=Path(args.image),
        pretrained_model_path=Path(args.model),
        output_dir=Path(args.output),
        placeholder_token=args.token,
        initializer_token=args.init_token,
        max_steps=args.steps,
        learning_rate=args.lr,
        scale_lr=not args.no_scale_lr,
        batch_size=args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        resolution=args.resolution,
        augment=not args.no_augment,
        seed=args.seed,
        device=args.device,
    )
    result = train_textual_inversion(config, log=print)
    print(f"learned embedding of {result.token}: {result.embeddings_path}")
    print(f"use it with: ns-train relight3d-sds --pipeline.guidance.learned-embeds-path {result.embeddings_path}")
    return 0


def _add_textual_inversion(subparsers: argparse._SubParsersAction) -> None:
    defaults = {"steps": 3000, "lr": 5e-4, "batch_size": 1, "gradient_accumulation_steps": 4}
    p = subparsers.add_parser(
        "textual-inversion",
        help="learn a token embedding for the object of one image (RealFusion's textual inversion)",
        description="Single-image textual inversion with heavy augmentation. Writes learned_embeds.safetensors, "
        "which relight3d-sds reads with --pipeline.guidance.learned-embeds-path.",
    )
    p.add_argument("--image", required=True, help="the object image (RGBA is composited on white)")
    p.add_argument("--model", required=True, help="local Stable Diffusion folder in the diffusers layout")
    p.add_argument("--output", required=True, help="folder for learned_embeds.safetensors")
    p.add_argument("--token", default="_object_", help="the new placeholder token (default: %(default)s)")
    p.add_argument("--init-token", default="object", help="single-token word to start from (default: %(default)s)")
    p.add_argument(
        "--steps", type=positive_int, default=defaults["steps"], help="optimisation steps (default: %(default)s)"
    )
    p.add_argument("--lr", type=positive_float, default=defaults["lr"], help="learning rate (default: %(default)s)")
    p.add_argument("--no-scale-lr", action="store_true", help="do not scale the lr by batch x accumulation")
    p.add_argument("--batch-size", type=positive_int, default=defaults["batch_size"], help="default: %(default)s")
    p.add_argument(
        "--gradient-accumulation-steps", type=positive_int, default=defaults["gradient_accumulation_steps"],
        help="default: %(default)s",
    )  # fmt: skip
    p.add_argument("--resolution", type=positive_int, default=None, help="training size (default: the UNet's)")
    p.add_argument("--no-augment", action="store_true", help="turn the heavy augmentation off")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.set_defaults(func=_textual_inversion)


PRIOR_CONFIGS = {
    "physical": "relight3d.priors.physical:PhysicalPriorConfig",
    "neural-gaffer": "relight3d.priors.neural_gaffer:NeuralGafferPriorConfig",
    "ic-light": "relight3d.priors.ic_light:ICLightPriorConfig",
    "instruct-pix2pix": "relight3d.priors.instruct_pix2pix:InstructPix2PixPriorConfig",
}
"""Prior names accepted by ``relight3d relight --prior`` and the config class each one builds."""


def prior_config(name: str, model_path: Optional[str]):  # noqa: ANN201 - a RelightingPriorConfig
    """The config of prior ``name``, with ``model_path`` set for priors that load weights."""
    import importlib

    module, cls = PRIOR_CONFIGS[name].split(":")
    config = getattr(importlib.import_module(module), cls)()
    if model_path is not None:
        if not hasattr(config, "model_path"):
            raise ConfigError("--prior-path", f"the {name} prior loads no weights")
        config.model_path = Path(model_path)
    return config


def _relight(args: argparse.Namespace) -> int:
    from relight3d.pipelines.relight_run import RelightJob, run_relighting

    if args.stage1_steps + args.stage2_steps == 0:
        raise ConfigError("--stage1-steps/--stage2-steps", "both are 0: relighting needs at least one training step")
    if args.strength is not None and len(args.strength) != len(args.envmap):
        raise ConfigError("--strength", f"{len(args.strength)} strength(s) for {len(args.envmap)} --envmap map(s)")
    job = RelightJob(
        field_run=Path(args.field_run),
        envmaps=[Path(p) for p in args.envmap],
        output=Path(args.output),
        prior=prior_config(args.prior, args.prior_path),
        strengths=args.strength,
        rotation_deg=args.rotation,
        stage1_steps=args.stage1_steps,
        stage2_steps=args.stage2_steps,
        data=Path(args.data) if args.data else None,
        video_frames=args.video_frames,
        device=args.device,
        eval_data=[Path(p) for p in args.eval_data] if args.eval_data else None,
        source_envmap=Path(args.source_envmap) if args.source_envmap else None,
        estimate_source=args.estimate_source,
    )
    results = run_relighting(job)
    for name, metrics in results.items():
        shown = {k: v for k, v in metrics.items() if "psnr" in k or k == "train_seconds"}
        print(name + ": " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(shown.items())))
    print(f"report: {Path(args.output) / 'report' / 'report.html'}")
    return 0


def _add_relight(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "relight",
        help="relight a trained field under one or more HDR maps (two-stage, Neural Gaffer style) and report",
        description="For each target map: relight the training views with the prior, refit appearance with frozen "
        "density (stage 1), refine renders with the prior (stage 2), score held-out views against ground truth "
        "under that light when the data has it (with the no-relighting baseline), write a rotating-light video; "
        "then one comparison report over all maps.",
    )
    p.add_argument("--field-run", required=True, help="config.yml of a trained relight3d-tensorf / -ngp run")
    p.add_argument("--envmap", required=True, nargs="+", help="target environment maps (.exr / .hdr)")
    p.add_argument("--output", required=True, help="output folder (one run per map, videos, report)")
    p.add_argument("--prior", default="physical", choices=sorted(PRIOR_CONFIGS), help="default: %(default)s")
    p.add_argument("--prior-path", default=None, help="local checkpoint folder of a prior with weights")
    p.add_argument(
        "--strength", type=positive_float, nargs="+", default=None, help="radiance multiplier (> 0) per map"
    )
    p.add_argument("--rotation", type=finite_float, default=0.0, help="rotate the maps about the up axis (degrees)")
    p.add_argument("--stage1-steps", type=non_negative_int, default=2500, help="default: %(default)s")
    p.add_argument("--stage2-steps", type=non_negative_int, default=500, help="default: %(default)s")
    p.add_argument("--data", default=None, help="data folder (default: the trained run's)")
    p.add_argument("--video-frames", type=non_negative_int, default=48, help="rotating-light video frames (0: none)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    p.add_argument(
        "--eval-data", nargs="+", default=None, metavar="DIR",
        help="ground truth per map, in --envmap order: Blender-layout folders whose transforms_test.json views are "
        "rendered under that map (default: the data folder's own, Objaverse or benchmark layout, when it has them)",
    )  # fmt: skip
    p.add_argument(
        "--source-envmap", default=None,
        help="the training light's map (default: the one the data records, else estimated from the field)",
    )  # fmt: skip
    p.add_argument(
        "--estimate-source", action="store_true",
        help="estimate the training light from the field (order-2 SH) even when the data records it",
    )  # fmt: skip
    p.set_defaults(func=_relight)


SUBCOMMANDS: Tuple[Callable[[argparse._SubParsersAction], None], ...] = (_add_textual_inversion, _add_relight)
"""The functions that add this module's subcommands."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the pipelines' subcommands to the ``relight3d`` parser."""
    for add in SUBCOMMANDS:
        add(subparsers)
