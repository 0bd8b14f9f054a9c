"""The twelve numbers reported for one image: PSNR, SSIM and LPIPS x (inside the mask, full image) x (raw, aligned).

* mask: the ground truth's alpha > 0.5. "Inside the mask" averages over those pixels only: PSNR from the mean squared
  error over them, SSIM and LPIPS from their per-pixel maps (SSIM's Gaussian-window map; LPIPS's ``spatial`` map,
  each layer upsampled to the image). On a white background the full-image figure flatters every method, because the
  background is easy; the in-mask numbers are the headline.
* aligned: the prediction after ``align_channels`` (each channel scaled inside the mask by the median of GT/pred
  there, as in the TensoIR benchmark), which removes the per-channel scale ambiguity of the light.

PSNR is capped at 120 dB (squared error floored at 1e-12). A metric that cannot be computed is NaN: LPIPS without
weights or on images smaller than its backbone accepts, masked metrics when the mask is empty.
"""

from __future__ import annotations

import functools
from typing import Dict, Optional, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

from relight3d.eval.image_metrics import align_channels, psnr, ssim_map

METRICS: Tuple[str, ...] = tuple(
    f"{name}{region}{variant}"
    for name in ("psnr", "ssim", "lpips")
    for region in ("_masked", "")
    for variant in ("", "_aligned")
)
"""Keys of the per-image metric dicts, in report order (in-mask first)."""

LOWER_IS_BETTER = frozenset(m for m in METRICS if m.startswith("lpips"))
"""Metrics where smaller is better; the others are better when larger."""


def metric_label(key: str) -> str:
    """A column header: ``psnr_masked_aligned`` -> ``PSNR mask al.``."""
    name = key.split("_")[0].upper()
    region = "mask" if "_masked" in key else "full"
    return f"{name} {region}{' al.' if key.endswith('_aligned') else ''}"


@functools.lru_cache(maxsize=4)
def _cached_lpips(weights, device: str):  # noqa: ANN001, ANN202 - weights: LPIPSWeights (hashable)
    from relight3d.eval.lpips import load_lpips

    return load_lpips(weights.net, device=device, weights=weights)


def lpips_model(net: Optional[str] = "alex", device: str = "cpu") -> Tuple[Optional[torch.nn.Module], str]:
    """The LPIPS network with real weights (loaded once per process), or None, and a status line for reports.

    Args:
        net: "alex" (the usual choice), "vgg", or None to skip LPIPS.
        device: where the network runs.

    Returns:
        ``(model, "LPIPS-alex: <backbone file>, <heads file>")``, or ``(None, "n/a (no LPIPS weights): ...")``
        when the weights are not on this machine, or ``(None, "n/a (disabled)")``.
    """
    from relight3d.eval.lpips import LPIPSWeightsNotFound, find_lpips_weights

    if net is None:
        return None, "n/a (disabled)"
    try:
        weights = find_lpips_weights(net)
    except LPIPSWeightsNotFound as err:
        return None, str(err)
    return _cached_lpips(weights, device), f"LPIPS-{net}: {weights.backbone}, {weights.heads}"


def score_image(
    pred: Float[Tensor, "h w 3"],
    gt: Float[Tensor, "h w 3"],
    mask: Float[Tensor, "h w 1"],
    lpips: Optional[torch.nn.Module] = None,
) -> Tuple[Dict[str, float], Tuple[float, float, float]]:
    """All ``METRICS`` for one image, and the channel-alignment factors.

    Args:
        pred: the prediction in [0, 1], composited on the same background as ``gt``.
        gt: the ground truth in [0, 1].
        mask: 1 inside the object (the GT alpha > 0.5).
        lpips: an ``LPIPS`` network with real weights, or None (LPIPS metrics are then NaN).

    Example:
        >>> gt = torch.full((8, 8, 3), 0.4)
        >>> metrics, scale = score_image(gt * torch.tensor([2.0, 0.5, 1.0]), gt, torch.ones(8, 8, 1))
        >>> round(metrics["psnr"], 2), metrics["psnr_aligned"], scale
        (11.76, 120.0, (0.5, 2.0, 1.0))
    """
    pred, gt, mask = pred.float().clamp(0.0, 1.0), gt.float(), (mask.float() > 0.5).float()
    aligned, scale = align_channels(pred, gt, mask)
    has_mask = bool(mask.sum() > 0)
    nan = float("nan")
    metrics: Dict[str, float] = {}
    weight = mask[..., 0]
    for variant, image in (("", pred), ("_aligned", aligned)):
        metrics[f"psnr{variant}"] = float(psnr(image, gt))
        metrics[f"psnr_masked{variant}"] = float(psnr(image, gt, mask)) if has_mask else nan
        smap = ssim_map(image, gt)
        metrics[f"ssim{variant}"] = float(smap.mean())
        metrics[f"ssim_masked{variant}"] = float((smap * weight).sum() / weight.sum()) if has_mask else nan
    lpips_values = [nan] * 4
    if lpips is not None and min(gt.shape[:2]) >= lpips.spec.min_size:
        device = next(lpips.parameters()).device
        batch = torch.stack([pred, aligned]).permute(0, 3, 1, 2).to(device)
        target = gt.permute(2, 0, 1)[None].expand_as(batch).to(device)
        with torch.no_grad():
            distance, spatial = lpips.distance_map(batch, target)
        w = weight.to(device)
        masked = (spatial * w).sum(dim=(1, 2)) / w.sum() if has_mask else torch.full((2,), nan)
        lpips_values = [float(masked[0]), float(masked[1]), float(distance[0]), float(distance[1])]
    for key, value in zip(("lpips_masked", "lpips_masked_aligned", "lpips", "lpips_aligned"), lpips_values):
        metrics[key] = value
    return {k: metrics[k] for k in METRICS}, tuple(float(s) for s in scale)
