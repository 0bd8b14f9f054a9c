"""Image metrics on ``[H, W, 3]`` tensors in [0, 1]: PSNR and SSIM (full image or inside a mask), channel alignment."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor


def psnr(
    pred: Float[Tensor, "*bs 3"], gt: Float[Tensor, "*bs 3"], mask: Optional[Float[Tensor, "*bs 1"]] = None
) -> Tensor:
    """PSNR in dB (peak 1). With ``mask`` (0/1, broadcastable) only the masked pixels count.

    Example:
        >>> float(psnr(torch.zeros(2, 2, 3), torch.full((2, 2, 3), 0.1)))
        20.0
    """
    err = (pred.float() - gt.float()).square()
    if mask is None:
        mse = err.mean()
    else:
        m = mask.float().expand_as(err)
        mse = (err * m).sum() / m.sum().clamp_min(1.0)
    return -10.0 * torch.log10(mse.clamp_min(1e-12))


def _gaussian_window(size: int, sigma: float, device: torch.device) -> Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2.0
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim_map(
    pred: Float[Tensor, "h w 3"], gt: Float[Tensor, "h w 3"], window: int = 11, sigma: float = 1.5
) -> Float[Tensor, "h w"]:
    """Per-pixel SSIM (Wang et al. 2004, Gaussian window, C1=0.01^2, C2=0.03^2), averaged over channels.

    Borders are handled by reflection padding (edge replication for images smaller than the window's radius + 1)
    so the map has the image's size. The five local moments of the three channels are blurred in one grouped
    convolution (faster on CPU than five calls or a separable pair).
    """
    c1, c2 = 0.01**2, 0.03**2
    x = pred.float().permute(2, 0, 1)
    y = gt.float().permute(2, 0, 1)
    # (Co)variances are computed from images centred on their channel means: the same values in exact arithmetic,
    # without the float32 cancellation of E[x^2] - E[x]^2 on bright, flat regions.
    x_mean, y_mean = x.mean(dim=(1, 2), keepdim=True), y.mean(dim=(1, 2), keepdim=True)
    xc, yc = x - x_mean, y - y_mean
    moments = torch.cat([xc, yc, xc * xc, yc * yc, xc * yc])[None]  # [1, 15, h, w]
    w = _gaussian_window(window, sigma, x.device)[None, None].repeat(moments.shape[1], 1, 1, 1)
    pad = window // 2
    mode = "reflect" if min(x.shape[-2:]) > pad else "replicate"  # reflection needs more pixels than the pad
    blurred = F.conv2d(F.pad(moments, (pad, pad, pad, pad), mode=mode), w, groups=moments.shape[1])[0]
    mu_xc, mu_yc, exx, eyy, exy = blurred.split(3)
    sxx = exx - mu_xc**2
    syy = eyy - mu_yc**2
    sxy = exy - mu_xc * mu_yc
    mu_x, mu_y = mu_xc + x_mean, mu_yc + y_mean
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return (num / den).mean(0)


def ssim(
    pred: Float[Tensor, "h w 3"], gt: Float[Tensor, "h w 3"], mask: Optional[Float[Tensor, "h w 1"]] = None
) -> Tensor:
    """Mean SSIM over the image, or over the masked pixels.

    Example:
        >>> img = torch.rand(16, 16, 3)
        >>> round(float(ssim(img, img)), 4)
        1.0
    """
    m = ssim_map(pred, gt)
    if mask is None:
        return m.mean()
    mk = mask[..., 0].float()
    return (m * mk).sum() / mk.sum().clamp_min(1.0)


def _median(values: Tensor) -> Tensor:
    """Median of a 1-D tensor; the mean of the two middle values when the count is even (as numpy does)."""
    ordered = values.sort().values
    n = ordered.numel()
    return 0.5 * (ordered[(n - 1) // 2] + ordered[n // 2])


def channel_scale(
    pred: Float[Tensor, "h w 3"],
    gt: Float[Tensor, "h w 3"],
    mask: Optional[Float[Tensor, "h w 1"]] = None,
    min_pred: float = 1.0 / 255.0,
) -> Float[Tensor, "3"]:
    """Per-channel factors that bring ``pred`` to ``gt``: ``s_c = median(gt_c / pred_c)`` over the mask.

    The ratio is taken only where ``pred_c >= min_pred`` (the zero-division guard: in an 8-bit image, a value of 0
    carries no information about the scale). A channel with no such pixel inside the mask gets ``s_c = 1``. The
    median of an even number of ratios is the mean of the two middle ones.

    Example:
        >>> gt = torch.full((2, 2, 3), 0.4)
        >>> channel_scale(gt * torch.tensor([2.0, 0.5, 1.0]), gt).tolist()
        [0.5, 2.0, 1.0]
    """
    p = pred.float().reshape(-1, 3)
    g = gt.float().reshape(-1, 3)
    inside = torch.ones(p.shape[0], dtype=torch.bool, device=p.device)
    if mask is not None:
        inside = mask.reshape(-1) > 0.5
    scale = torch.ones(3, dtype=torch.float32, device=p.device)
    for c in range(3):
        valid = inside & (p[:, c] >= min_pred)
        if bool(valid.any()):
            scale[c] = _median(g[valid, c] / p[valid, c])
    return scale


def align_channels(
    pred: Float[Tensor, "h w 3"],
    gt: Float[Tensor, "h w 3"],
    mask: Optional[Float[Tensor, "h w 1"]] = None,
    min_pred: float = 1.0 / 255.0,
) -> tuple[Float[Tensor, "h w 3"], Float[Tensor, "3"]]:
    """Channel alignment as in the TensoIR relighting benchmark: scale each channel of ``pred`` by ``channel_scale``.

    A relit image is only determined up to the scale of the light in each colour channel, so benchmarks also report
    metrics after this per-channel correction. The factors come from the pixels inside ``mask`` and are applied there
    only: outside the mask (the background) the prediction is kept as it is. The result is clipped to [0, 1].

    Returns:
        The aligned prediction and the three factors.

    Example:
        >>> gt = torch.full((2, 2, 3), 0.4)
        >>> aligned, scale = align_channels(gt * torch.tensor([2.0, 0.5, 1.0]), gt)
        >>> bool(torch.equal(aligned, gt))
        True
    """
    scale = channel_scale(pred, gt, mask, min_pred)
    scaled = (pred.float() * scale).clamp(0.0, 1.0)
    if mask is None:
        return scaled, scale
    inside = (mask > 0.5).expand_as(scaled)
    return torch.where(inside, scaled, pred.float()), scale
