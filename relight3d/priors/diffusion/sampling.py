"""Sampling loops: full sampling from noise, and SDEdit (img2img) refinement from a noised start latent.

Both follow diffusers' Stable Diffusion pipelines step for step, so that a prior driven with the same components,
noise and generators reproduces them (the tests compare against ``StableDiffusionPipeline``,
``StableDiffusionImg2ImgPipeline`` and ``StableDiffusionInstructPix2PixPipeline``):

* **Sampling.** ``set_timesteps(N)``, ``latents = noise * init_noise_sigma``, then for each timestep
  ``scale_model_input`` -> guided noise prediction -> ``scheduler.step``.
* **SDEdit.** ``strength`` in [0, 1] keeps ``k = floor(N * strength)`` of the ``N`` steps: the start latent is noised
  to the timestep of step ``N - k`` with ``add_noise`` and denoised from there (diffusers' img2img rule).
  ``k = 0`` returns the start latent unchanged; ``strength = 1`` still starts from the noised start latent (the
  caller passes no start to sample from pure noise).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Union

import torch
from jaxtyping import Float
from torch import Tensor

from relight3d.priors.diffusion.schedulers import step_kwargs

NoisePredictor = Callable[[Tensor, Tensor], Tensor]
"""``predict(model_input, t) -> noise prediction`` (guidance included), both ``[b, c, h, w]``."""


def img2img_timesteps(scheduler: Any, num_steps: int, strength: float) -> Tensor:
    """The last ``floor(num_steps * strength)`` timesteps of a ``num_steps`` schedule (call after ``set_timesteps``).

    Example:
        >>> scheduler.set_timesteps(10)  # doctest: +SKIP
        >>> img2img_timesteps(scheduler, 10, 0.35)  # the last 3 of the 10  # doctest: +SKIP
    """
    kept = min(int(num_steps * strength + 1e-6), num_steps)
    begin = (num_steps - kept) * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin)
    return scheduler.timesteps[begin:]


def denoise(
    scheduler: Any,
    latents: Float[Tensor, "b c h w"],
    timesteps: Tensor,
    predict: NoisePredictor,
    eta: float = 0.0,
    generator: Union[None, torch.Generator, Sequence[torch.Generator]] = None,
) -> Float[Tensor, "b c h w"]:
    """Run ``scheduler`` over ``timesteps`` from ``latents``; ``predict`` gives the (guided) noise at each step."""
    extra = step_kwargs(scheduler, eta, generator)
    for t in timesteps:
        noise_pred = predict(scheduler.scale_model_input(latents, t), t)
        latents = scheduler.step(noise_pred, t, latents, **extra, return_dict=False)[0]
    return latents


def sample_latents(
    scheduler: Any,
    predict: NoisePredictor,
    noise: Float[Tensor, "b c h w"],
    num_steps: int,
    start: Optional[Float[Tensor, "b c h w"]] = None,
    strength: float = 1.0,
    eta: float = 0.0,
    generator: Union[None, torch.Generator, Sequence[torch.Generator]] = None,
) -> Float[Tensor, "b c h w"]:
    """Sample from pure ``noise`` (``start`` None), or SDEdit from ``start`` at ``strength`` (see the module doc).

    Args:
        scheduler: A diffusers scheduler (its timesteps are reset here).
        predict: The guided noise prediction.
        noise: Standard normal latents: the starting noise, or what ``start`` is noised with.
        num_steps: Steps of the whole schedule.
        start: Latents to refine (SDEdit); None samples from noise.
        strength: SDEdit only: share of the schedule that is re-run.
        eta: DDIM eta (for schedulers that take it).
        generator: Randomness of stochastic steps (one generator per view, or one for the batch).
    """
    scheduler.set_timesteps(num_steps, device=noise.device)
    if start is None:
        return denoise(scheduler, noise * scheduler.init_noise_sigma, scheduler.timesteps, predict, eta, generator)
    timesteps = img2img_timesteps(scheduler, num_steps, strength)
    if len(timesteps) == 0:
        return start
    latents = scheduler.add_noise(start, noise, timesteps[:1].repeat(start.shape[0]))
    return denoise(scheduler, latents, timesteps, predict, eta, generator)
