"""Deterministic DDIM inversion and decoding (eta = 0) over a diffusers ``DDIMScheduler``, for any epsilon model.

The noise model is a plain callable ``eps(x_t, t) -> noise`` (``t`` one of ``scheduler.timesteps``, a 0-d tensor), so
the same loops serve a latent UNet behind a VAE and a pixel-space guided-diffusion UNet such as DiFaReli's, whose
conditions (DECA codes, shading reference, encoder features) live in the closure. DiFaReli's relighting is
``ddim_decode(ddim_invert(image, eps_source_light), eps_target_light)``.

Grid. ``scheduler.set_timesteps(num_steps)`` gives the descending timesteps ``t_{N-1} > ... > t_0``; decoding step
``k`` goes from the noise level ``a_k = alphas_cumprod[t_k]`` to ``a'_k = alphas_cumprod[t_k - T // N]`` (or
``final_alpha_cumprod`` below 0): exactly ``scheduler.step``'s rule, so :func:`ddim_decode` equals
:func:`~relight3d.priors.diffusion.sampling.denoise` with ``eta = 0``. :func:`ddim_invert` walks the same steps
backwards (``t_0`` first), evaluating the model at the same ``t_k`` as the decoding step it undoes.

Step (DDIM, Song et al. 2021, eq. 12 with sigma = 0), written with ``xbar = x / sqrt(a)`` and
``s = sqrt((1 - a) / a)`` (noise-to-signal ratio)::

    decode:  xbar' = xbar + (s' - s) * eps(x, t_k)        i.e.  x' = sqrt(a' / a) x + sqrt(a') (s' - s) eps
    invert:  xbar  = xbar' + (s - s') * eps(x, t_k)       i.e.  x  = sqrt(a / a') x' + sqrt(a) (s - s') eps

The two are exact algebraic inverses *for the same eps*. The coefficients are formed in float64 from the
scheduler's ``alphas_cumprod`` (so a float64 state gets float64 coefficients; the subtraction ``s' - s`` never
cancels catastrophically because each ``s`` is computed directly, not as a difference of large terms).

The catch, and why DDIM inversion is exact only in the limit: decoding evaluates ``eps`` at the *noisier* state
``x_k``, which inversion has not computed yet, so plain inversion uses ``eps(x_{k-1}, t_k)`` instead (as diffusers'
``DDIMInverseScheduler`` and guided-diffusion's ``ddim_reverse_sample`` do). Each step then differs from the exact
inverse by ``sqrt(a_k) (s_k - s'_k) (eps(x_{k-1}) - eps(x_k))``, a first-order term in the step size, so the
reconstruction error of invert-then-decode falls roughly like ``1 / num_steps`` and vanishes only as the steps do.
``fixed_point_iterations > 0`` removes it: each inverse step re-solves ``x_k = invert(x_{k-1}, eps(x_k, t_k))`` by
fixed-point iteration (it converges when ``sqrt(a_k) |s_k - s'_k| Lip(eps) < 1``), after which decoding reproduces
the input to rounding error. ``tests/priors/test_ddim_inversion.py`` measures both.

Sample clipping and thresholding are refused: they make a DDIM step non-invertible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from jaxtyping import Float
from torch import Tensor

EpsModel = Callable[[Tensor, Tensor], Tensor]
"""``eps(x_t, t) -> predicted noise`` with the shape of ``x_t``; ``t`` is a 0-d timestep tensor of the scheduler."""
StepCallback = Callable[[int, Tensor, Tensor], None]
"""``on_step(step_index, t, x)``: called after each step with the new state (e.g. to keep a trajectory)."""


@dataclass(frozen=True)
class DDIMGrid:
    """The decoding steps of a DDIM schedule: step ``k`` maps level ``alphas[k]`` to ``alphas_prev[k]``."""

    timesteps: Tensor
    """Model timesteps in decoding order (descending), as ``scheduler.timesteps``."""
    alphas: Tensor
    """float64 ``alphas_cumprod`` at each timestep (the noisier end of the step)."""
    alphas_prev: Tensor
    """float64 ``alphas_cumprod`` each decoding step lands on (``final_alpha_cumprod`` after the last)."""


def ddim_grid(scheduler: Any, num_steps: int, device: Optional[torch.device] = None) -> DDIMGrid:
    """Set ``num_steps`` timesteps on a ``DDIMScheduler`` and return its steps with float64 noise levels.

    Raises:
        ValueError: ``num_steps < 1``, a scheduler that is not epsilon-predicting, that clips or thresholds its
            sample, or a level with ``alphas_cumprod == 0`` (zero terminal SNR: no DDIM inversion reaches it).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    config = scheduler.config
    if getattr(config, "prediction_type", "epsilon") != "epsilon":
        raise ValueError(f"DDIM inversion needs an epsilon-predicting scheduler, got {config.prediction_type!r}")
    if getattr(config, "clip_sample", False) or getattr(config, "thresholding", False):
        raise ValueError(
            "the scheduler clips or thresholds its x0 prediction, which makes DDIM non-invertible; "
            "build it with clip_sample=False, thresholding=False (make_scheduler('ddim', ...) does)"
        )
    scheduler.set_timesteps(num_steps, device=device)
    timesteps = scheduler.timesteps
    cumprod = scheduler.alphas_cumprod.detach().to("cpu", torch.float64)
    final = float(scheduler.final_alpha_cumprod)
    stride = int(config.num_train_timesteps) // int(scheduler.num_inference_steps)
    ts = timesteps.detach().to("cpu", torch.long)
    prev = ts - stride
    alphas = cumprod[ts]
    alphas_prev = torch.where(prev >= 0, cumprod[prev.clamp_min(0)], torch.full_like(alphas, final))
    if bool((alphas <= 0).any()) or bool((alphas_prev <= 0).any()):
        raise ValueError("a DDIM level has alphas_cumprod == 0 (zero terminal SNR); DDIM inversion cannot reach it")
    return DDIMGrid(timesteps=timesteps, alphas=alphas, alphas_prev=alphas_prev)


def _step_coefficients(alpha: float, alpha_prev: float) -> tuple[float, float]:
    """``(ratio, coef)`` with decode ``x' = ratio x + coef eps``: ``sqrt(a' / a)`` and ``sqrt(a') (s' - s)``."""
    noise_ratio = ((1.0 - alpha) / alpha) ** 0.5
    noise_ratio_prev = ((1.0 - alpha_prev) / alpha_prev) ** 0.5
    return (alpha_prev / alpha) ** 0.5, alpha_prev**0.5 * (noise_ratio_prev - noise_ratio)


def _invert_one(x_prev: Tensor, noise: Tensor, alpha: float, alpha_prev: float) -> Tensor:
    """The exact inverse of a decoding step for a given noise: ``x = sqrt(a / a') x' + sqrt(a) (s - s') eps``."""
    ratio, coef = _step_coefficients(alpha, alpha_prev)
    return x_prev / ratio - (coef / ratio) * noise


def ddim_decode(
    x_T: Float[Tensor, "b c h w"],
    eps: EpsModel,
    scheduler: Any,
    num_steps: int,
    on_step: Optional[StepCallback] = None,
) -> Float[Tensor, "b c h w"]:
    """Deterministic DDIM (eta = 0) from ``x_T`` (at level ``alphas_cumprod[t_{N-1}]``) to a clean sample.

    Step for step ``scheduler.step(eps, t, x, eta=0)`` (without its float32 coefficient rounding): see the module
    doc. Runs in ``x_T``'s dtype; pass float64 for a reconstruction to rounding error.

    Example:
        >>> x0 = ddim_decode(noise, lambda x, t: unet(x, t).sample, scheduler, 50)  # doctest: +SKIP
    """
    grid = ddim_grid(scheduler, num_steps, device=x_T.device)
    x = x_T
    for k, t in enumerate(grid.timesteps):
        ratio, coef = _step_coefficients(float(grid.alphas[k]), float(grid.alphas_prev[k]))
        x = ratio * x + coef * eps(x, t).to(x.dtype)
        if on_step is not None:
            on_step(k, t, x)
    return x


def ddim_invert(
    x0: Float[Tensor, "b c h w"],
    eps: EpsModel,
    scheduler: Any,
    num_steps: int,
    fixed_point_iterations: int = 0,
    on_step: Optional[StepCallback] = None,
) -> Float[Tensor, "b c h w"]:
    """DDIM inversion: the ``x_T`` from which :func:`ddim_decode` (same scheduler and steps) returns ``x0``.

    Args:
        x0: The clean sample (image or latents) in the model's input range.
        eps: The noise model for the condition to invert under (DiFaReli: the source light's).
        scheduler: A ``DDIMScheduler`` (its timesteps are reset here) with ``clip_sample=False``.
        num_steps: Steps of the schedule; the same grid as decoding with the same number.
        fixed_point_iterations: Extra model calls per step that re-solve the step implicitly (0: classic DDIM
            inversion, exact only as ``num_steps`` grows; 2-5 makes invert-then-decode exact to rounding error for
            smooth models).
        on_step: Called with ``(step_index, t, x_t)`` after each step (``t`` ascending).

    Example:
        >>> x_T = ddim_invert(image, lambda x, t: unet(x, t, cond_src).sample, scheduler, 50)  # doctest: +SKIP
        >>> relit = ddim_decode(x_T, lambda x, t: unet(x, t, cond_dst).sample, scheduler, 50)  # doctest: +SKIP
    """
    if fixed_point_iterations < 0:
        raise ValueError(f"fixed_point_iterations must be >= 0, got {fixed_point_iterations}")
    grid = ddim_grid(scheduler, num_steps, device=x0.device)
    x = x0
    count = len(grid.timesteps)
    for step, k in enumerate(range(count - 1, -1, -1)):
        t = grid.timesteps[k]
        alpha, alpha_prev = float(grid.alphas[k]), float(grid.alphas_prev[k])
        x_next = _invert_one(x, eps(x, t).to(x.dtype), alpha, alpha_prev)
        for _ in range(fixed_point_iterations):
            x_next = _invert_one(x, eps(x_next, t).to(x.dtype), alpha, alpha_prev)
        x = x_next
        if on_step is not None:
            on_step(step, t, x)
    return x
