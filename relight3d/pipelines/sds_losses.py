"""The loss weights and regularisers of score distillation (:mod:`relight3d.pipelines.score_distillation`).

* :class:`AnnealedValue`: a loss weight that may change over training (every weight of relight3d-sds is one, so
  ``--pipeline.<weight>.start/.end/.end-iteration/.schedule`` work for all of them).
* :func:`alpha_entropy`, :func:`normal_smoothness_2d` (with :func:`gaussian_blur`): RealFusion's regularisers of
  the prior views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from relight3d.errors import ConfigError


@dataclass
class AnnealedValue:
    """A value that may change over training: ``start`` until annealing, reaching ``end`` at ``end_iteration``."""

    start: float = 0.0
    """Value at iteration 0 (and throughout when ``end`` is None)."""
    end: Optional[float] = None
    """Value from ``end_iteration`` on; None keeps ``start`` constant."""
    end_iteration: int = 5000
    """Iteration at which ``end`` is reached."""
    schedule: Literal["linear", "log"] = "linear"
    """Interpolation: linear, or linear in log space (start and end must then be positive)."""

    def value(self, step: int) -> float:
        """The value at iteration ``step``.

        Raises:
            ConfigError: a log schedule whose start or end is not positive.
        """
        if self.end is None or self.end == self.start:
            return self.start
        frac = min(max(step / max(self.end_iteration, 1), 0.0), 1.0)
        if self.schedule == "log":
            if self.start <= 0 or self.end <= 0:
                raise ConfigError("schedule", f"a log schedule needs a positive start and end, got {self}")
            return math.exp((1.0 - frac) * math.log(self.start) + frac * math.log(self.end))
        return (1.0 - frac) * self.start + frac * self.end

    def ever_positive(self) -> bool:
        """Whether the value is above 0 at some iteration."""
        return self.start > 0 or (self.end is not None and self.end > 0)


def annealed(start: float) -> Any:
    """A config field defaulting to a constant :class:`AnnealedValue` (a fresh one per config instance)."""
    return field(default_factory=lambda: AnnealedValue(start))


def gaussian_blur(images: Float[Tensor, "b c h w"], kernel_size: int) -> Float[Tensor, "b c h w"]:
    """Separable Gaussian blur with torchvision's default sigma for the kernel size, reflect-padded."""
    sigma = 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8
    x = torch.arange(kernel_size, device=images.device, dtype=images.dtype) - (kernel_size - 1) / 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    c = images.shape[1]
    pad = kernel_size // 2
    out = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def alpha_entropy(accumulation: Tensor) -> Tensor:
    """Mean binary entropy (bits) of per-ray opacity: low when rays are either empty or opaque."""
    a = accumulation.clamp(1e-5, 1.0 - 1e-5)
    return (-a * torch.log2(a) - (1.0 - a) * torch.log2(1.0 - a)).mean()


def normal_smoothness_2d(normal_image: Float[Tensor, "b 3 h w"], kernel_size: int) -> Tensor:
    """RealFusion's 2D smoothness: MSE between the normal image and its (detached) Gaussian blur."""
    return F.mse_loss(normal_image, gaussian_blur(normal_image, kernel_size).detach())
