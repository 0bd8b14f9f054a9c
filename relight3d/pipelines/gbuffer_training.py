"""``relight3d train-prior gbuffer``: train the diffusion-renderer prior's builtin denoiser on a relighting dataset.

The model is the one the prior runs (:class:`~relight3d.priors.diffusion_renderer.BuiltinDiffusionRenderer`): it is
built from ``init`` by the prior itself, and a training sample is turned into the model's inputs by the prior's own
functions, so that training and inference cannot disagree on the conditioning:

* target latents: the view under its light, composited over the prior's background inside the G-buffers' mask,
  squared (:func:`~relight3d.priors.base.to_square`) and encoded by the VAE (posterior mean, scaled);
* conditions: :func:`~relight3d.priors.diffusion_renderer.builtin_gbuffer_images` of the view's G-buffers and the
  light (shrunk as the prior shrinks it) in the view's camera frame, encoded by
  :func:`~relight3d.priors.diffusion_renderer.builtin_condition_latents`;
* loss: the denoising objective of the scheduler's prediction type (``epsilon``: MSE to the noise; ``v_prediction``:
  to the velocity) at a uniformly drawn training timestep, the noise and timestep drawn from the sample's generator;
  the noise is predicted by the same call inference makes (:func:`~relight3d.priors.diffusion.guidance.guided_noise`,
  one zero context token).

``init`` is a folder in the builtin layout (``unet/`` with a ``conv_in`` of 32 channels, ``vae/``, ``scheduler/``):
a model trained before, or one made from a Stable Diffusion folder with :func:`widen_conv_in` (``--base``), whose
extra input channels start at zero so that the widened UNet first predicts exactly what the base did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import torch
from torch import Tensor

from relight3d.data.gbuffer_frames import encode_base_color
from relight3d.data.relight_pairs import RelightPairs
from relight3d.pipelines.prior_training import (
    PriorTask,
    PriorValidationConfig,
    UNetForward,
    denoising_loss,
    diffusion_draws,
    square_images,
    training_prior_config,
    validation_indices,
)
from relight3d.priors.base import PriorViews, composite, make_generators, to_square
from relight3d.priors.diffusion.guidance import guided_noise
from relight3d.priors.diffusion_renderer import (
    DiffusionRendererPrior,
    DiffusionRendererPriorConfig,
    builtin_condition_latents,
    builtin_gbuffer_images,
)


def widen_conv_in(unet: torch.nn.Module, in_channels: int) -> torch.nn.Module:
    """``unet`` (a diffusers ``UNet2DConditionModel``) with ``conv_in`` widened to ``in_channels``: the old channels
    keep their weights, the new ones start at zero (InstructPix2Pix's and Zero123's recipe), and the config records
    the new width, so ``save_pretrained`` / ``from_pretrained`` round-trip it."""
    old = unet.conv_in
    if in_channels < old.in_channels:
        raise ValueError(f"conv_in has {old.in_channels} input channels; cannot narrow it to {in_channels}")
    new = torch.nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding).to(old.weight)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)
    return unet


def builtin_init_from_base(base: Path, output: Path) -> Path:
    """A builtin model to start training from: the UNet, VAE and scheduler of a Stable Diffusion folder ``base``
    with ``conv_in`` widened to the builtin's 32 channels (:func:`widen_conv_in`), written to ``output``."""
    from relight3d.priors.diffusion.components import DiffusionComponents
    from relight3d.priors.diffusion_renderer import BUILTIN_IN_CHANNELS

    parts = DiffusionComponents.from_pretrained(base, ("unet", "vae"), option="--base")
    widen_conv_in(parts.unet, BUILTIN_IN_CHANNELS)
    return parts.save_pretrained(output)


@dataclass
class GBufferTaskConfig:
    """What ``relight3d train-prior gbuffer`` trains on and from."""

    data: Path
    """The relighting dataset folder (:mod:`relight3d.data.relight_pairs`: ``manifest.jsonl``)."""
    init: Path
    """The builtin model to start from (``unet/`` 32 input channels, ``vae/``, ``scheduler/``)."""
    resolution: Optional[int] = None
    """Square side the model trains at (default: the UNet's sample size times the VAE's downscaling)."""
    validation: PriorValidationConfig = field(default_factory=PriorValidationConfig)
    """Validation images at each checkpoint: per sample its base colour, the prior's rendering of its G-buffers
    under its light (``validation.steps`` sampler steps) and its image."""


class GBufferTask(PriorTask):
    """The builtin DiffusionRenderer denoiser's training task (see the module docstring)."""

    def __init__(self, config: GBufferTaskConfig, prior_config: Optional[DiffusionRendererPriorConfig] = None) -> None:
        prior_config = training_prior_config(prior_config or DiffusionRendererPriorConfig(), Path(config.init),
                                             config.resolution, config.validation.steps)  # fmt: skip
        prior_config.backend = "builtin"
        self.config = config
        self.prior = DiffusionRendererPrior(prior_config)
        self.model = self.prior.builtin
        self.pairs = RelightPairs(config.data)
        parts = self.model.components
        parts.vae.requires_grad_(False).eval()
        parts.unet.requires_grad_(True)

    def trained_module(self) -> torch.nn.Module:
        return self.model.components.unet

    def dataset_size(self) -> int:
        return len(self.pairs)

    def to(self, device: torch.device) -> None:
        self.model.components.vae.to(device)

    def inputs(self, indices: Sequence[int], device: torch.device) -> tuple:
        """``(target latents, condition latents)`` of the samples, as the prior builds them (no gradients)."""
        side, background = self.model.resolution, self.prior.config.background_color
        targets, conditions = [], []
        with torch.no_grad():
            for i in indices:
                sample = self.pairs[i]
                mask = sample.frame.mask.clamp(0.0, 1.0)[None]
                image = composite(sample.image[None].clamp(0.0, 1.0), mask, background)
                targets.append(to_square(image, side, background)[0])
                gbuffers = to_square(builtin_gbuffer_images([sample.frame]), side, 1.0)[0]
                envmap = self.model.prepare_envmap(sample.envmap.clamp_min(0.0))
                c2w = sample.frame.camera_to_world[None, :3, :4]
                conditions.append(builtin_condition_latents(
                    self.model.components, gbuffers.to(device), envmap, c2w, self.prior.config.convention
                ))  # fmt: skip
            latents = self.model.components.encode_images(torch.cat(targets).to(device))
        return latents, torch.cat(conditions)

    def loss(self, network: torch.nn.Module, indices: Sequence[int], generators: Sequence[torch.Generator]) -> Tensor:
        device = next(network.parameters()).device
        latents, condition = self.inputs(indices, device)
        scheduler = self.model.components.scheduler
        t, noise, _ = diffusion_draws(generators, latents.shape[1:], int(scheduler.config.num_train_timesteps))
        noise, t = noise.to(latents), t.to(device)
        noisy = scheduler.add_noise(latents, noise, t)
        context = condition.new_zeros(condition.shape[0], 1, int(self.model.components.unet.config.cross_attention_dim))
        unet = UNetForward(network, self.model.components.unet.dtype)  # DDP wraps the UNet in several processes
        predicted = guided_noise(unet, noisy, t, 1.0, (context, context), (torch.zeros_like(condition), condition))
        return denoising_loss(scheduler, predicted, latents, noise, t)

    def save_model(self, network: torch.nn.Module, folder: Path) -> None:
        self.model.save_pretrained(folder)

    def validation_images(self, network: torch.nn.Module, generator: torch.Generator) -> Optional[Tensor]:
        """Per fixed sample: its base colour (sRGB), the prior's rendering (``relight``, as ``relight3d relight``
        runs it) of its G-buffers under its own light, and its image, at the model's square resolution."""
        if self.config.validation.steps <= 0:
            return None
        indices = validation_indices(len(self.pairs), self.config.validation.samples)
        generators = make_generators(generator, len(indices))
        cells: List[Tensor] = []
        for i, g in zip(indices, generators):
            sample = self.pairs[i]
            f = sample.frame
            names = ("normals", "depth", "base_color", "roughness", "metallic")
            gbuffers = {"accumulation": f.mask[None], **{name: getattr(f, name)[None] for name in names}}
            views = PriorViews(sample.image[None], f.mask[None], f.camera_to_world[None, :3], sample.envmap,
                               generator=[g], gbuffers=gbuffers)  # fmt: skip
            cells += [encode_base_color(f.base_color), self.prior.relight(views)[0], sample.image]
        return square_images(cells, self.model.resolution)


__all__ = ["GBufferTask", "GBufferTaskConfig", "builtin_init_from_base", "widen_conv_in"]
