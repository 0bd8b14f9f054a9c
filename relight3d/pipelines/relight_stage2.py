"""Stage 2 of relighting: render a training view, refine the render with the prior, fit the render to it.

Each iteration (:meth:`~relight3d.pipelines.relighting.RelightingPipeline.stage2_loss_dict`) picks a training view,
renders it (at ``stage2_render_scale`` of its size), hands the prior the object's own colour under the rendered mask
(:func:`refine_render`: SDEdit-style for diffusion priors, partial noising to ``t*`` then denoising), composites the
answer back on the render's background and fits the render to it (:func:`stage2_losses`: L1, LPIPS when weighted,
image total variation). ``t*`` follows :func:`t_star_at`. At the first stage-2 iteration every learning rate is
scaled once (:func:`stage2_lr_scaling`).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from relight3d.pipelines.relight_field import straight_rgb
from relight3d.pipelines.relight_state import RelightingState
from relight3d.priors.base import PriorViews


def t_star_at(step: int, total: int, start: float, end: float, schedule: str) -> float:
    """The stage-2 noise level at ``step`` of ``total``: ``start`` throughout for ``"constant"``, else moving from
    ``start`` to ``end`` linearly (``"linear"``) or geometrically (``"exponential"``)."""
    if schedule == "constant" or total <= 1:
        return start
    s = min(max(step / (total - 1), 0.0), 1.0)
    if schedule == "linear":
        return start + (end - start) * s
    return start * (end / start) ** s


def image_total_variation(image: Float[Tensor, "h w c"]) -> Tensor:
    """Mean absolute difference between vertically neighbouring pixels plus that between horizontal neighbours."""
    return (image[1:] - image[:-1]).abs().mean() + (image[:, 1:] - image[:, :-1]).abs().mean()


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
    config: Any,
    lpips: Callable[[], Callable[[Tensor, Tensor], Tensor]],
) -> Dict[str, Tensor]:
    """``stage2_l1`` (+ ``stage2_tv``, ``stage2_lpips`` when weighted) of a render against its refinement.

    ``config`` holds the weights (``stage2_l1_weight``, ``stage2_tv_weight``, ``stage2_lpips_weight``); ``lpips``
    returns the LPIPS network (images in [-1, 1], ``[b, 3, h, w]``) and is called only when its weight is above 0.
    """
    losses = {"stage2_l1": config.stage2_l1_weight * (pred - refined).abs().mean()}
    if config.stage2_tv_weight > 0:
        losses["stage2_tv"] = config.stage2_tv_weight * image_total_variation(pred)
    if config.stage2_lpips_weight > 0:
        a, b = (x.permute(2, 0, 1)[None] * 2 - 1 for x in (pred, refined))
        losses["stage2_lpips"] = config.stage2_lpips_weight * lpips()(a, b).mean()
    return losses


def stage2_lr_scaling(
    optimizers: Any, stage1_steps: int, scale: float, state: RelightingState
) -> Callable[[int], None]:
    """A before-iteration callback that multiplies every learning rate by ``scale`` once, at the first stage-2
    iteration (also after resuming past it; ``state.stage2_lr_scaled`` records it).

    nerfstudio's schedulers compute each rate as base rate x decay(step), so their base rates are scaled along with
    the optimizers' current ones.
    """

    def scale_for_stage2(step: int) -> None:
        if step < stage1_steps or state.stage2_lr_scaled:
            return
        for name, optimizer in optimizers.optimizers.items():
            for group in optimizer.param_groups:
                group["lr"] *= scale
            scheduler = optimizers.schedulers.get(name)
            if scheduler is not None:
                scheduler.base_lrs = [lr * scale for lr in scheduler.base_lrs]
        state.stage2_lr_scaled = True

    return scale_for_stage2
