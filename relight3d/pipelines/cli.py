"""``relight3d`` subcommands of the pipelines: ``relight`` (Neural Gaffer style relighting of a trained field under
several maps, scored and reported) and ``textual-inversion`` (RealFusion's first step).

Layer: apps. It builds the ``relight3d-gaffer`` trainer config (:func:`relight3d.method_configs.gaffer_config`, with
the prior from :mod:`relight3d.priors.registry`) and hands it to :func:`relight3d.pipelines.relight_run.run_relighting`.
Importing this module and building its parser are cheap: torch, nerfstudio, the priors and diffusers are imported
when a command runs (or ``relight3d relight --help`` lists the priors). :func:`register` adds the subcommands;
every ``--help`` lists the defaults.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Tuple

from relight3d.cli_types import (
    add_command,
    add_device_argument,
    apply_dotted_options,
    config_from_args,
    finite_float,
    non_negative_int,
    positive_float,
    positive_int,
    resolve_device,
    unit_interval_float,
)
from relight3d.errors import ConfigError

if TYPE_CHECKING:
    from relight3d.pipelines.prior_training import PriorTask, PriorValidationConfig


class RegisteredNames:
    """An option's choices: the names in the table ``module.table`` (``--prior``: the priors' registry,
    ``--stage2-preset``: the stage-2 presets), read only when argparse checks a value or prints ``relight3d relight
    --help``. The registries import torch and nerfstudio (about 3 s), which ``relight3d --help`` and the other
    subcommands should not wait for."""

    def __init__(self, module: str, table: str) -> None:
        self.module, self.table = module, table

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(getattr(importlib.import_module(self.module), self.table)))

    def __contains__(self, name: object) -> bool:
        return name in set(self)


class RegisteredDefault:
    """An option's default: the name ``module.name`` (e.g. ``DEFAULT_PRIOR``), read when it is printed or used."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __str__(self) -> str:
        return str(getattr(importlib.import_module(self.module), self.name))


PRIOR_REGISTRY = "relight3d.priors.registry"
"""Where ``--prior``'s names come from."""
STAGE2_REGISTRY = "relight3d.pipelines.relight_stage2"
"""Where ``--stage2-preset``'s names come from."""


def _textual_inversion(args: argparse.Namespace) -> int:
    from relight3d.priors.textual_inversion import TextualInversionConfig, train_textual_inversion

    config = config_from_args(TextualInversionConfig, args, device=resolve_device(args.device))
    result = train_textual_inversion(config, log=print)
    print(f"learned embedding of {result.token}: {result.embeddings_path}")
    print(f"use it with: ns-train relight3d-sds --pipeline.guidance.learned-embeds-path {result.embeddings_path}")
    return 0


def _textual_inversion_options(p: argparse.ArgumentParser) -> None:
    # The flags keep their short names; dest= names the TextualInversionConfig field each one fills.
    p.add_argument("--image", type=Path, required=True, help="the object image (RGBA is composited on white)")
    p.add_argument(
        "--model", dest="pretrained_model_path", metavar="DIR", type=Path, required=True,
        help="local Stable Diffusion folder in the diffusers layout",
    )  # fmt: skip
    p.add_argument("--output", dest="output_dir", metavar="DIR", type=Path, required=True,
                   help="folder for learned_embeds.safetensors")  # fmt: skip
    p.add_argument("--token", dest="placeholder_token", metavar="TOKEN", default="_object_",
                   help="the new placeholder token")  # fmt: skip
    p.add_argument("--init-token", dest="initializer_token", metavar="TOKEN", default="object",
                   help="single-token word to start from")  # fmt: skip
    p.add_argument("--steps", dest="max_steps", metavar="N", type=positive_int, default=3000,
                   help="optimisation steps")  # fmt: skip
    p.add_argument("--lr", dest="learning_rate", metavar="LR", type=positive_float, default=5e-4, help="learning rate")
    p.add_argument("--no-scale-lr", dest="scale_lr", action="store_false",
                   help="do not scale the lr by batch x accumulation")  # fmt: skip
    p.add_argument("--batch-size", type=positive_int, default=1, help="images per forward pass")
    p.add_argument("--gradient-accumulation-steps", type=positive_int, default=4,
                   help="forward passes per optimisation step")  # fmt: skip
    p.add_argument("--resolution", type=positive_int, default=None, help="training size (default: the UNet's)")
    p.add_argument("--no-augment", dest="augment", action="store_false", help="turn the heavy augmentation off")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed")
    add_device_argument(p, "where to train")


def _relight(args: argparse.Namespace) -> int:
    from relight3d.method_configs import gaffer_config
    from relight3d.pipelines.relight_run import RelightJob, run_relighting
    from relight3d.pipelines.relight_stage2 import STAGE2_PRESETS
    from relight3d.priors import registry

    if args.stage1_steps + args.stage2_steps == 0:
        raise ConfigError("--stage1-steps/--stage2-steps", "both are 0: relighting needs at least one training step")
    if args.strength is not None and len(args.strength) != len(args.envmap):
        raise ConfigError("--strength", f"{len(args.strength)} strength(s) for {len(args.envmap)} --envmap map(s)")
    prior = registry.prior_config(str(args.prior), args.prior_path)  # looked up on the module: tests swap it
    apply_dotted_options(prior, getattr(args, "prior_options", []), "prior")
    method = gaffer_config(args.stage1_steps, args.stage2_steps, prior=prior)
    method.pipeline.stage2 = STAGE2_PRESETS[str(args.stage2_preset)]()
    if args.material_gbuffers:
        method.pipeline.material_source = "gbuffer-frames"
        method.pipeline.material_gbuffers = Path(args.material_gbuffers)
    method.machine.device_type = resolve_device(args.device)
    job = RelightJob(
        field_run=Path(args.field_run),
        envmaps=[Path(p) for p in args.envmap],
        output=Path(args.output),
        method=method,
        strengths=args.strength,
        rotation_deg=args.rotation,
        data=Path(args.data) if args.data else None,
        video_frames=args.video_frames,
        eval_data=[Path(p) for p in args.eval_data] if args.eval_data else None,
        source_envmap=Path(args.source_envmap) if args.source_envmap else None,
        estimate_source=args.estimate_source,
        stage1_cache=Path(args.stage1_cache) if args.stage1_cache else None,
        stage1_only=args.stage1_only,
    )
    results = run_relighting(job)
    if job.stage1_only:
        print(f"stage 1: relit training views in {job.stage1_cache} (run again without --stage1-only to train)")
        return 0
    for name, metrics in results.items():
        shown = {k: v for k, v in metrics.items() if "psnr" in k or k == "train_seconds"}
        print(name + ": " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(shown.items())))
    print(f"report: {Path(args.output) / 'report' / 'report.html'}")
    return 0


def _relight_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--field-run", required=True, help="config.yml of a trained relight3d-tensorf / -ngp run")
    p.add_argument("--envmap", required=True, nargs="+", help="target environment maps (.exr / .hdr)")
    p.add_argument("--output", required=True, help="output folder (one run per map, videos, report)")
    p.add_argument(
        "--prior", default=RegisteredDefault(PRIOR_REGISTRY, "DEFAULT_PRIOR"), metavar="NAME",
        choices=RegisteredNames(PRIOR_REGISTRY, "PRIORS"),
        help="the 2D relighting prior: %(choices)s. Any field of its config can follow as --prior.<field> VALUE "
        "(e.g. --prior.backend builtin, --prior.num-inference-steps 20; ns-train relight3d-gaffer "
        "pipeline.prior:<name> --help lists them)",
    )  # fmt: skip
    p.add_argument("--prior-path", default=None, help="local checkpoint folder of a prior with weights")
    p.set_defaults(takes_prior_options=True)
    p.add_argument(
        "--material-gbuffers", default=None, metavar="DIR",
        help="for priors that condition on material G-buffers (diffusion-renderer): fit the field's material head to "
        "DiffusionRenderer inverse-renderer frames of the training views in this clip folder (gbuffer_frames/<clip>, "
        "one frame per training view in the data's order) instead of the physical prior's albedo estimate",
    )  # fmt: skip
    p.add_argument(
        "--strength", type=positive_float, nargs="+", default=None,
        help="radiance multiplier (> 0) per map (default: 1, or the strength the data's meta.json records)",
    )  # fmt: skip
    p.add_argument("--rotation", type=finite_float, default=0.0, help="rotate the maps about the up axis (degrees)")
    p.add_argument("--stage1-steps", type=non_negative_int, default=2500, help="stage-1 iterations per map")
    p.add_argument("--stage2-steps", type=non_negative_int, default=500, help="stage-2 iterations per map")
    p.add_argument(
        "--stage2-preset", default=RegisteredDefault(STAGE2_REGISTRY, "DEFAULT_STAGE2"), metavar="NAME",
        choices=RegisteredNames(STAGE2_REGISTRY, "STAGE2_PRESETS"),
        help="stage 2's t* schedule, loss weights and learning rates: %(choices)s (neural-gaffer-public: the public "
        "code's; its LPIPS-VGG loss needs LPIPS weights in $RELIGHT3D_LPIPS_WEIGHTS)",
    )  # fmt: skip
    p.add_argument("--data", default=None, help="data folder (default: the trained run's)")
    p.add_argument("--video-frames", type=non_negative_int, default=48, help="rotating-light video frames (0: none)")
    add_device_argument(p, "where to train")
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
        "--stage1-cache", default=None, metavar="DIR",
        help="keep each map's stage-1 relit views in DIR/<map> and reuse them in a later run with the same settings",
    )  # fmt: skip
    p.add_argument(
        "--stage1-only", action="store_true",
        help="only relight the training views into --stage1-cache; under torchrun / accelerate launch the views are "
        "split across the processes",
    )  # fmt: skip
    p.add_argument(
        "--estimate-source", action="store_true",
        help="estimate the training light from the field (order-2 SH) even when the data records it",
    )  # fmt: skip


def _gbuffer_task(args: argparse.Namespace, init: Path, validation: PriorValidationConfig) -> Tuple[PriorTask, str]:
    from relight3d.pipelines.gbuffer_training import GBufferTask, GBufferTaskConfig, builtin_init_from_base

    if args.conditioning_dropout is not None:
        raise ConfigError("--conditioning-dropout", "gbuffer trains without conditioning dropout (instruct-pix2pix "
                                                    "and neural-gaffer do)")  # fmt: skip
    _init_from_base(args, init, builtin_init_from_base)
    config = GBufferTaskConfig(data=Path(args.data), init=init, resolution=args.resolution, validation=validation)
    return GBufferTask(config), "--prior diffusion-renderer --prior.backend builtin --prior-path"


def _ip2p_task(args: argparse.Namespace, init: Path, validation: PriorValidationConfig) -> Tuple[PriorTask, str]:
    from relight3d.pipelines.ip2p_training import InstructPix2PixTask, InstructPix2PixTaskConfig, ip2p_init_from_base

    _init_from_base(args, init, ip2p_init_from_base)
    dropout = {} if args.conditioning_dropout is None else {"conditioning_dropout": args.conditioning_dropout}
    config = InstructPix2PixTaskConfig(data=Path(args.data), init=init, resolution=args.resolution,
                                       validation=validation, **dropout)  # fmt: skip
    return InstructPix2PixTask(config), "--prior instruct-pix2pix --prior-path"


def _gaffer_task(args: argparse.Namespace, init: Path, validation: PriorValidationConfig) -> Tuple[PriorTask, str]:
    from relight3d.pipelines.gaffer_training import NeuralGafferTask, NeuralGafferTaskConfig, gaffer_init_from_base

    _init_from_base(args, init, gaffer_init_from_base)
    dropout = {} if args.conditioning_dropout is None else {"conditioning_dropout": args.conditioning_dropout}
    config = NeuralGafferTaskConfig(data=Path(args.data), init=init, resolution=args.resolution,
                                    validation=validation, **dropout)  # fmt: skip
    return NeuralGafferTask(config), "--prior neural-gaffer --prior-path"


def _init_from_base(args: argparse.Namespace, init: Path, build: Callable[[Path, Path], Path]) -> None:
    """With ``--base``, write ``init`` (``<output>/init``) from it once (a resumed run reuses it), never half."""
    from relight3d.pipelines.prior_training import replace_folder

    if args.base is not None and not (init / "unet").is_dir():
        replace_folder(lambda tmp: build(Path(args.base), tmp), init)


def _relight_unet_task(
    args: argparse.Namespace, init: Path, validation: PriorValidationConfig
) -> Tuple[PriorTask, str]:
    from relight3d.pipelines.relight_unet_training import RelightUNetTask, RelightUNetTaskConfig

    if args.base is not None or args.conditioning_dropout is not None:
        raise ConfigError("--base/--conditioning-dropout", "relight-unet starts from a fresh network or --init")
    config = RelightUNetTaskConfig(data=Path(args.data), init=Path(args.init) if args.init else None,
                                   resolution=args.resolution or 64, validation=validation)  # fmt: skip
    return RelightUNetTask(config), "--prior relight-unet --prior-path"


TRAIN_PRIOR_TASKS = {
    "instruct-pix2pix": _ip2p_task,
    "neural-gaffer": _gaffer_task,
    "gbuffer": _gbuffer_task,
    "relight-unet": _relight_unet_task,
}
"""``relight3d train-prior``'s models: name -> a function building its task (and the ``relight3d relight`` options
that load the trained folder) from the parsed options."""


def _train_prior(args: argparse.Namespace) -> int:
    from relight3d.pipelines.prior_training import PriorTrainingConfig, PriorValidationConfig, train_prior

    if (args.init is None) == (args.base is None) and args.model != "relight-unet":
        raise ConfigError("--init/--base", "give exactly one: a model folder to continue, or a base folder to widen")
    init = Path(args.init) if args.init else Path(args.output) / "init"
    validation = PriorValidationConfig(steps=args.validation_steps, samples=args.validation_samples)
    task, prior_options = TRAIN_PRIOR_TASKS[args.model](args, init, validation)
    config = config_from_args(PriorTrainingConfig, args, output=Path(args.output), resume=not args.no_resume,
                              cpu=resolve_device(args.device) == "cpu")  # fmt: skip
    result = train_prior(task, config)
    if result["main"]:
        print(f"model: {result['model']} (use it with: relight3d relight {prior_options} {result['model']})")
    return 0


def _train_prior_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model", choices=list(TRAIN_PRIOR_TASKS),
        help="what to train: instruct-pix2pix (8-channel InstructPix2Pix), neural-gaffer (16-channel Neural Gaffer), "
        "gbuffer (the diffusion-renderer builtin), relight-unet (a small deterministic network that trains on a CPU, "
        "from scratch)",
    )  # fmt: skip
    p.add_argument(
        "--data", required=True,
        help="relighting dataset folder (manifest.jsonl: views, G-buffers, lights); instruct-pix2pix also takes an "
        "image-triplets folder (triplets.jsonl, from relight3d data from-images)",
    )  # fmt: skip
    p.add_argument("--output", required=True, help="run folder (model/, checkpoints/, validation/, loss.csv, loss.png)")
    p.add_argument("--init", default=None, help="model folder to continue (the layout the prior loads)")
    p.add_argument(
        "--base", default=None,
        help="or a base folder whose UNet is widened to the model's inputs (new channels zero) into <output>/init: "
        "Stable Diffusion (instruct-pix2pix, gbuffer), Zero123 or SD with image_encoder/ (neural-gaffer)",
    )  # fmt: skip
    p.add_argument("--resolution", type=positive_int, default=None, help="square side (default: the model's)")
    p.add_argument("--max-steps", type=positive_int, default=1000, help="optimiser steps")
    p.add_argument("--batch-size", type=positive_int, default=4, help="samples per process per micro-batch")
    p.add_argument("--gradient-accumulation-steps", type=positive_int, default=1, help="micro-batches per step")
    p.add_argument("--learning-rate", type=positive_float, default=1e-4, help="AdamW learning rate")
    p.add_argument("--ema-decay", type=unit_interval_float, default=0.999, help="EMA decay (0: none)")
    p.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default="no", help="autocast precision")
    p.add_argument("--checkpoint-every", type=positive_int, default=500, help="steps between checkpoints")
    p.add_argument(
        "--conditioning-dropout", type=unit_interval_float, default=None,
        help="conditioning dropout probability (default 0.05; instruct-pix2pix: text, image and both each, at most "
        "1/3; neural-gaffer: every condition at once)",
    )  # fmt: skip
    p.add_argument(
        "--validation-steps", type=non_negative_int, default=20,
        help="sampler steps of the validation images written at each checkpoint (0: none)",
    )  # fmt: skip
    p.add_argument("--validation-samples", type=positive_int, default=4, help="fixed samples in the validation images")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of sample order, noise, timesteps")
    p.add_argument("--no-resume", action="store_true", help="start over even when --output has checkpoints")
    add_device_argument(p, "where to train (several processes: accelerate launch / torchrun)")


COMMANDS: Tuple[Tuple[str, str, str, Callable[[argparse.ArgumentParser], None], Callable[..., int]], ...] = (
    (
        "textual-inversion",
        "learn a token embedding for the object of one image (RealFusion's textual inversion)",
        "Single-image textual inversion with heavy augmentation. Writes learned_embeds.safetensors, which "
        "relight3d-sds reads with --pipeline.guidance.learned-embeds-path.",
        _textual_inversion_options,
        _textual_inversion,
    ),
    (
        "relight",
        "relight a trained field under one or more HDR maps (two-stage, Neural Gaffer style) and report",
        "For each target map: relight the training views with the prior, refit appearance with frozen density "
        "(stage 1), refine renders with the prior (stage 2), score held-out views against ground truth under that "
        "light when the data has it (with the no-relighting baseline), write a rotating-light video; then one "
        "comparison report over all maps.",
        _relight_options,
        _relight,
    ),
    (
        "train-prior",
        "train a relighting prior's denoiser (diffusers + accelerate; several processes with accelerate launch)",
        "Train InstructPix2Pix (instruct-pix2pix: on image triplets, or on a relighting dataset's pairs of one view "
        "under two lights with the prior's own lighting instructions), Neural Gaffer (neural-gaffer: on those pairs, "
        "the target's map rotated into each camera), the diffusion-renderer builtin denoiser (gbuffer: on views, "
        "their G-buffers and lights), or relight-unet (a small deterministic network correcting a ratio relighting, "
        "trained from scratch on a rendered relighting dataset; fits a CPU). EMA, gradient accumulation, checkpoints "
        "that resume exactly, validation images at each checkpoint; the trained model is written to <output>/model "
        "in the layout its prior loads.",
        _train_prior_options,
        _train_prior,
    ),
)
"""This module's subcommands: name, one-line help, description, the function adding its options, the command."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the pipelines' subcommands (:data:`COMMANDS`) to the ``relight3d`` parser."""
    for name, help_text, description, add_options, run in COMMANDS:
        parser = add_command(subparsers, name, help=help_text, description=description)
        add_options(parser)
        parser.set_defaults(func=run)
