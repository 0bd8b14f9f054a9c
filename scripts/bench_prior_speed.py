"""CPU speed of each relighting prior at its published size: stage-1 views/s and the prior's share of a stage-2 step.

No weights can be downloaded here, so the diffusion priors are built from config at the size of the released
models, with random weights: time does not depend on the values of the weights, only on the architecture, the
resolution, the number of DDIM steps and the guidance branches, all of which are the real ones.

* Neural Gaffer: Stable Diffusion 1.x UNet (320-640-1280-1280 channels, 2 layers per block, cross-attention 768)
  with a 16-channel ``conv_in``, 256 px (32 x 32 latents), CLIP ViT-L/14 image encoder, SD VAE; 50 DDIM steps,
  classifier-free guidance (2 branches).
* IC-Light (fc): the same UNet with an 8-channel ``conv_in``, 512 px, CLIP ViT-L text encoder; 25 DDIM steps,
  2 branches, started from the lighting preview at strength 0.9.
* InstructPix2Pix: 8-channel UNet, 512 px, CLIP ViT-L text encoder; 20 DDIM steps, 3 guidance branches.
* DiffusionRenderer, ``builtin`` backend: relight3d's G-buffer-conditioned denoiser has no released weights (the
  prior-training issue trains it); it is timed at the size it is meant to be trained at, the SD 1.x UNet with a
  32-channel ``conv_in`` (noisy latent + seven condition latents) at 512 px, SD VAE (which also encodes the seven
  condition images), one zero context token; 15 DDIM steps, no guidance. The ``checkout`` backend (NVIDIA's 7B
  Cosmos video model) cannot run here and is not timed.
* DiFaReli: its released 256 px pixel-space UNet and condition encoder (148.6 M + 42.0 M parameters,
  :class:`relight3d.priors.difareli_unet.DiFaReliUNetSettings`); a "step" is one DDIM inversion step plus one
  decoding step (two UNet calls), 1,000 of each by default (DiFaReli's released sampling).
* physical (the weight-free default), the peer every ratio is taken against, on the same views with sphere
  G-buffers (its shadows need the field's visibility, which the relighting benchmark traces; here none).

Each diffusion prior is timed at ``--steps`` DDIM step counts (default 1 and 2). A straight line through these
times (fixed cost: conditioning, VAE encode / decode; per-step cost: the UNet's guidance batch) gives the time at
the prior's own default step count and the time of a stage-2 refinement at t* (``floor(N t*)`` steps), printed as
*projected*. A stage-2 iteration also renders one view and takes a gradient step: the physical prior's relighting
benchmark measures that at about 0.3 s on this machine. Usage::

    python scripts/bench_prior_speed.py [--priors physical neural-gaffer ic-light instruct-pix2pix] [--views 1]
        [--size 128] [--steps 1 2] [--threads N]

Building the networks takes about a minute; the whole run, about ten minutes on 2 cores.

``--full`` times instead one stage-1 pass of each prior exactly as configured (its own steps, sampler, guidance,
resolution and, for IC-Light's public preset, the high-resolution pass), measured rather than projected, and counts
the UNet calls it makes; ``--priors all`` takes every entry of the prior registry (the ``-public`` presets too), and
the networks of one architecture are built once and shared. ``--device cuda`` runs on a GPU (the priors' ``auto``
dtype: float16), ``--tiny`` uses the tests' tiny random models at their native size (a quick dry run of the
script), ``--json`` writes the results. The GPU check (``scripts/gpu_check.sh``) runs::

    python scripts/bench_prior_speed.py --full --priors all --device cuda --json prior_speed.json
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import torch

from relight3d.priors.base import PriorViews
from relight3d.priors.diffusion.testing import clip_image_encoder, clip_text_encoder, tiny_scheduler, tiny_tokenizer

SD_BLOCKS = (320, 640, 1280, 1280)
"""Stable Diffusion 1.x UNet channels per level (diffusers' UNet2DConditionModel defaults)."""
CLIP_L_WIDTH = 768
"""Text / projection width of CLIP ViT-L/14 (SD 1.x's cross-attention width)."""


def unet(in_channels: int, sample_size: int) -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=4,
        block_out_channels=SD_BLOCKS,
        layers_per_block=2,
        cross_attention_dim=CLIP_L_WIDTH,
        attention_head_dim=8,
    )


def vae() -> Any:
    from diffusers import AutoencoderKL

    levels = (128, 256, 512, 512)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=levels,
        layers_per_block=2,
        latent_channels=4,
    )


def image_encoder() -> Any:
    """CLIP ViT-L/14 at 224 px."""
    return clip_image_encoder(
        width=1024, layers=24, heads=16, intermediate=4096, image_size=224, patch_size=14, projection_dim=CLIP_L_WIDTH
    )


def text_encoder_and_tokenizer() -> Tuple[Any, Any]:
    """A CLIP text encoder of ViT-L's size (77 positions) and the tests' byte-level tokenizer (built offline).

    The real BPE files cannot be downloaded; prompts are padded to the encoder's 77 positions either way, so the
    encoder's cost is the real one.
    """
    return clip_text_encoder(49408, width=CLIP_L_WIDTH, layers=12, heads=12, intermediate=3072), tiny_tokenizer()


@functools.cache
def networks(kind: str, tiny: bool) -> Dict[str, Any]:
    """Random networks of one architecture, built once per run: ``"image"`` (Neural Gaffer: 16-channel UNet at
    256 px, CLIP image encoder) or ``"text"`` (IC-Light fc / InstructPix2Pix: 8-channel UNet at 512 px, CLIP text
    encoder); released sizes, or the tests' tiny models (``tiny``)."""
    from relight3d.priors.diffusion import testing

    torch.manual_seed(0)
    channels = 16 if kind == "image" else 8
    parts = {"unet": testing.tiny_unet(channels) if tiny else unet(channels, 32 if kind == "image" else 64),
             "vae": testing.tiny_vae() if tiny else vae()}  # fmt: skip
    if kind == "image":
        parts["image_encoder"] = clip_image_encoder() if tiny else image_encoder()
    else:
        tokenizer = tiny_tokenizer()
        parts["tokenizer"] = tokenizer
        parts["text_encoder"] = clip_text_encoder(len(tokenizer)) if tiny else text_encoder_and_tokenizer()[0]
    return parts


@functools.cache
def gbuffer_networks(tiny: bool) -> Dict[str, Any]:
    """Random networks of the diffusion-renderer builtin: a 32-channel UNet (SD 1.x size at 512 px) and a VAE."""
    from relight3d.priors.diffusion import testing
    from relight3d.priors.diffusion_renderer import BUILTIN_IN_CHANNELS

    torch.manual_seed(0)
    return {"unet": testing.tiny_unet(BUILTIN_IN_CHANNELS) if tiny else unet(BUILTIN_IN_CHANNELS, 64),
            "vae": testing.tiny_vae() if tiny else vae()}  # fmt: skip


@functools.cache
def difareli_networks(tiny: bool) -> Tuple[Any, Any]:
    """DiFaReli's UNet and condition encoder, random, at the released size (or the tests' tiny one)."""
    from relight3d.priors.difareli import TINY_SETTINGS
    from relight3d.priors.difareli_unet import DiFaReliConditionEncoder, DiFaReliUNet, DiFaReliUNetSettings

    torch.manual_seed(0)
    settings = TINY_SETTINGS if tiny else DiFaReliUNetSettings()
    return DiFaReliUNet(settings).eval(), DiFaReliConditionEncoder(settings).eval()


def build_gbuffer_prior(name: str, cfg: Any, device: str, tiny: bool) -> Any:
    """The diffusion-renderer builtin or DiFaReli on random networks (``cfg`` as configured)."""
    if name == "diffusion-renderer":
        from relight3d.priors.diffusion_renderer import DiffusionRendererPrior

        cfg.backend = "builtin"
        if tiny:
            cfg.resolution = None
        return DiffusionRendererPrior.from_components(cfg, device=device, **gbuffer_networks(tiny),
                                                      scheduler=tiny_scheduler())  # fmt: skip
    from relight3d.priors.difareli import DiFaReliPrior

    unet_, encoder = difareli_networks(tiny)
    return DiFaReliPrior.from_components(cfg, unet_, encoder, device=device)


def build_configured(name: str, device: str, tiny: bool) -> Any:
    """The registry's prior ``name`` as configured (its default or preset values), on random networks."""
    from relight3d.priors.ic_light import ICLightPriorConfig
    from relight3d.priors.instruct_pix2pix import InstructPix2PixPriorConfig
    from relight3d.priors.neural_gaffer import NeuralGafferPriorConfig
    from relight3d.priors.registry import prior_config

    cfg = prior_config(name)
    if name.removesuffix("-public") in ("diffusion-renderer", "difareli"):
        return build_gbuffer_prior(name.removesuffix("-public"), cfg, device, tiny)
    if isinstance(cfg, NeuralGafferPriorConfig):
        kind = "image"
    elif isinstance(cfg, (ICLightPriorConfig, InstructPix2PixPriorConfig)):
        kind = "text"
    else:
        return cfg.setup(device=device)  # weight-free
    if tiny and getattr(cfg, "resolution", None) is not None:
        cfg.resolution = None  # the tiny model's native 16 px, not the released model's
    parts = dict(networks(kind, tiny), scheduler=tiny_scheduler())
    return cfg._target.from_components(cfg, device=device, **parts)


def measure_configured(name: str, batch: PriorViews, device: str, tiny: bool) -> Dict[str, Any]:
    """Seconds per view of one ``relight`` of the configured prior ``name`` (after a warm-up call), and the UNet
    calls it made."""
    t0 = time.perf_counter()
    prior = build_configured(name, device, tiny)
    out: Dict[str, Any] = {"build_seconds": time.perf_counter() - t0}
    calls = [0]
    hook = None
    latent = getattr(prior, "builtin", None) or prior  # the diffusion-renderer prior wraps its builtin denoiser
    network = latent.components.unet if hasattr(latent, "components") else getattr(prior, "unet", None)
    if network is not None:
        hook = network.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        out.update(resolution=prior.resolution, dtype=str(getattr(latent, "dtype", "float32")).replace("torch.", ""))
        out["num_inference_steps"] = prior.config.num_inference_steps
    prior.relight(batch)  # warm-up (allocations, lazy set-up, kernel selection)
    calls[0] = 0
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    out["seconds_per_view"] = _time(lambda: prior.relight(batch), device) / batch.images.shape[0]
    if hook is not None:
        hook.remove()
        out["unet_calls"] = calls[0]
    if device == "cuda":
        out["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def build_prior(name: str, steps: int) -> Tuple[Any, int, int]:
    """The prior ``name`` at ``steps`` DDIM steps with random weights; also returns its default DDIM step count and
    the number of those steps its ``relight`` runs (IC-Light starts from its lighting preview, part-way)."""
    if name == "neural-gaffer":
        from relight3d.priors.neural_gaffer import NeuralGafferPrior, NeuralGafferPriorConfig

        cfg = NeuralGafferPriorConfig()
        default, cfg.num_inference_steps = cfg.num_inference_steps, steps
        parts = dict(networks("image", False), scheduler=tiny_scheduler())
        return NeuralGafferPrior.from_components(cfg, **parts), default, default
    if name in ("ic-light", "instruct-pix2pix"):
        if name == "ic-light":
            from relight3d.priors.ic_light import ICLightPrior as Prior
            from relight3d.priors.ic_light import ICLightPriorConfig as Config
        else:
            from relight3d.priors.instruct_pix2pix import InstructPix2PixPrior as Prior
            from relight3d.priors.instruct_pix2pix import InstructPix2PixPriorConfig as Config
        cfg = Config()
        default, cfg.num_inference_steps = cfg.num_inference_steps, steps
        executed = default
        if name == "ic-light":  # time whole runs from noise; the default run does floor(N * strength) steps
            executed = math.floor(default * cfg.lighting_preview_strength)
            cfg.lighting_preview_strength = 1.0
        parts = dict(networks("text", False), scheduler=tiny_scheduler())
        return Prior.from_components(cfg, **parts), default, executed
    if name in ("diffusion-renderer", "difareli"):
        from relight3d.priors.registry import prior_config

        cfg = prior_config(name)
        default, cfg.num_inference_steps = cfg.num_inference_steps, steps
        return build_gbuffer_prior(name, cfg, "cpu", False), default, default
    if name == "physical":
        from relight3d.priors.physical import PhysicalPrior, PhysicalPriorConfig

        return PhysicalPrior(PhysicalPriorConfig()), 0, 0
    raise SystemExit(f"bench_prior_speed: unknown prior {name!r}")


def sphere_views(n: int, size: int) -> Dict[str, torch.Tensor]:
    """``n`` views of a unit sphere seen along -z (orthographic): images, masks, G-buffers, cameras, maps."""
    y, x = torch.meshgrid(torch.linspace(1, -1, size), torch.linspace(-1, 1, size), indexing="ij")
    r2 = x**2 + y**2
    mask = (r2 < 0.8**2).float()[..., None]
    z = (0.8**2 - r2).clamp_min(0).sqrt()
    normals = torch.nn.functional.normalize(torch.stack([x, y, z], -1), dim=-1)
    colour = torch.tensor([0.7, 0.5, 0.3]) * (0.3 + 0.7 * normals[..., 2:].clamp_min(0))
    image = colour * mask + (1 - mask)
    directions = torch.zeros(size, size, 3)
    directions[..., 2] = -1.0
    points = torch.cat([x[..., None], y[..., None], z[..., None]], -1)
    c2w = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 3]])
    h = 32
    theta = torch.linspace(0, math.pi, h)[:, None, None]
    env = (0.3 + 3.0 * torch.cos(theta).clamp_min(0) ** 8).expand(h, 2 * h, 3).contiguous()
    rep = lambda t: t[None].expand(n, *t.shape).contiguous()  # noqa: E731
    return {
        "images": rep(image),
        "masks": rep(mask),
        "cameras": rep(c2w),
        "target": env.flip(0).contiguous(),
        "source": env,
        "gbuffers": {
            "normals": rep(normals),
            "directions": rep(directions),
            "points": rep(points),
            "accumulation": rep(mask),
            "depth": rep(3.0 - z[..., None]),
            "base_color": rep(torch.tensor([0.7, 0.5, 0.3]) * mask),
            "roughness": rep(mask * 0.5),
            "metallic": rep(mask * 0.0),
        },  # fmt: skip
    }


def _time(fn: Callable[[], object], device: str = "cpu") -> float:
    t0 = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def measure(name: str, views: Dict[str, Any], step_counts: List[int]) -> Dict[str, float]:
    """Seconds per view of ``relight`` at each step count (and of ``refine`` at t* = 0.4), for one prior."""
    n = views["images"].shape[0]
    batch = PriorViews(
        views["images"], views["masks"], views["cameras"], views["target"], generator=0, gbuffers=views["gbuffers"],
        source_envmap=views["source"],
    )  # fmt: skip
    out: Dict[str, float] = {}
    for steps in step_counts if name != "physical" else [0]:
        t0 = time.perf_counter()
        prior, default, executed = build_prior(name, steps)
        out["build_seconds"] = time.perf_counter() - t0
        out["default_steps"], out["relight_steps"] = default, executed
        prior.relight(batch)  # warm-up (allocations, lazy set-up)
        out[f"relight_{steps}"] = _time(lambda p=prior: p.relight(batch)) / n
        if name == "physical":
            out["refine_0.4"] = _time(lambda p=prior: p.refine(batch, 0.4)) / n
        del prior
    return out


def project(out: Dict[str, float], step_counts: List[int], t_stars: Tuple[float, ...]) -> Dict[str, float]:
    """Fixed + per-step cost from the timed step counts, and the projected times at the default step count."""
    xs = [float(s) for s in step_counts]
    ys = [out[f"relight_{s}"] for s in step_counts]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / max(sum((x - mx) ** 2 for x in xs), 1e-12)
    fixed = my - slope * mx
    n = out["default_steps"]
    res = {"per_step": slope, "fixed": fixed, "relight_default": fixed + slope * out["relight_steps"]}
    for t in t_stars:
        res[f"refine_{t}"] = fixed + slope * math.floor(n * t)
    return res


TIMED_PRIORS = ("physical", "neural-gaffer", "ic-light", "instruct-pix2pix", "diffusion-renderer", "difareli")
"""The priors timed by default (the physical prior, the peer of every ratio, first)."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--priors", nargs="*", default=list(TIMED_PRIORS))
    ap.add_argument("--views", type=int, default=1, help="views per prior call (stage 1 batches views)")
    ap.add_argument("--size", type=int, default=128, help="side of the input views (the benchmark's 128 px)")
    ap.add_argument("--steps", type=int, nargs="*", default=[1, 2], help="DDIM step counts actually timed")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--full", action="store_true", help="time one pass of each prior as configured (measured)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--tiny", action="store_true", help="the tests' tiny models instead of the released sizes")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.priors == ["all"]:
        from relight3d.priors.registry import PRIORS

        args.priors = list(PRIORS)
    views = sphere_views(args.views, args.size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.views} view(s) of {args.size} px")
    if args.full:
        return run_full(args, views)
    if len(set(args.steps)) < 2:
        raise SystemExit("bench_prior_speed: --steps needs at least two different step counts")
    results = {}
    for name in args.priors:
        with torch.inference_mode():
            results[name] = measure(name, views, args.steps)
        r = results[name]
        timed = ", ".join(f"{s} steps {r[f'relight_{s}']:.2f} s" for s in args.steps if f"relight_{s}" in r)
        if not timed:
            timed = f"{r['relight_0']:.3f} s"
        print(f"{name}: built in {r['build_seconds']:.1f} s; relight per view: {timed}", flush=True)
    t_stars = (0.4, 0.05)
    peer = results.get("physical")
    print(
        "\n| prior | DDIM steps run | s per step (measured) | fixed s (measured) | stage-1 views/s (projected) "
        "| refine s at t*=0.4 / 0.05 (projected) | physical / prior views/s |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        if name == "physical":
            print(
                f"| physical | - | - | {r['relight_0']:.3f} | {1 / r['relight_0']:.2f} (measured) "
                f"| {r['refine_0.4']:.3f} (measured) | 1 |"
            )
            continue
        p = project(r, args.steps, t_stars)
        ratio = f"{p['relight_default'] / peer['relight_0']:.0f}x" if peer else "-"
        steps = f"{int(r['relight_steps'])} of {int(r['default_steps'])}"
        print(
            f"| {name} | {steps} | {p['per_step']:.2f} | {p['fixed']:.2f} | {1 / p['relight_default']:.4f} |"
            f" {p['refine_0.4']:.1f} / {p['refine_0.05']:.1f} | {ratio} |"
        )


def run_full(args: argparse.Namespace, views: Dict[str, Any]) -> None:
    """``--full``: one measured pass per prior as configured; a prior that fails is reported, the others still run
    (exit code 1)."""
    batch = PriorViews(
        views["images"], views["masks"], views["cameras"], views["target"], generator=0, gbuffers=views["gbuffers"],
        source_envmap=views["source"],
    )  # fmt: skip
    results: Dict[str, Any] = {}
    errors: Dict[str, str] = {}
    for name in args.priors:
        try:
            with torch.inference_mode():
                results[name] = r = measure_configured(name, batch, args.device, args.tiny)
        except Exception as err:  # why: one prior's failure must not hide the others' timings
            errors[name] = f"{type(err).__name__}: {err}"
            print(f"{name}: failed: {errors[name]}", flush=True)
            continue
        print(f"{name}: built in {r['build_seconds']:.1f} s; {r['seconds_per_view']:.3f} s per view, "
              f"{r.get('unet_calls', 0)} UNet calls at {r.get('resolution', args.size)} px", flush=True)  # fmt: skip
    if args.json:
        run = {"device": args.device, "tiny": args.tiny, "views": args.views, "size": args.size}
        args.json.write_text(json.dumps({**run, "results": results, "errors": errors}, indent=2))
    if errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
