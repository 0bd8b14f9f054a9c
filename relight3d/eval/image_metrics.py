"""Image metrics on ``[H, W, 3]`` tensors in [0, 1]: PSNR (full image or inside a mask) and SSIM."""

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

    Borders are handled by reflection padding so the map has the image's size.
    """
    c1, c2 = 0.01**2, 0.03**2
    x = pred.float().permute(2, 0, 1)[None]
    y = gt.float().permute(2, 0, 1)[None]
    w = _gaussian_window(window, sigma, x.device)[None, None].repeat(3, 1, 1, 1)
    pad = window // 2

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(F.pad(t, (pad, pad, pad, pad), mode="reflect"), w, groups=3)

    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    return (num / den)[0].mean(0)


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
