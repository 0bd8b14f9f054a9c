"""``relight3d train-prior neural-gaffer``: train Neural Gaffer's 16-channel denoiser on a relighting dataset.

The model is the one the prior runs (:class:`~relight3d.priors.neural_gaffer.NeuralGafferPrior`): the task builds
the prior from ``init`` and turns each training pair into model inputs with the prior's own functions, so that
training and inference cannot disagree on the conditioning:

* **Pairs** (:func:`light_pairs`): a view rendered under two different lights, A and B, of one relighting dataset
  (:mod:`relight3d.data.relight_pairs`): the input is the view under A, the target the view under B, the light is
  B's map (its rotation applied), and the camera is the view's.
* **Inputs**: both images composited on the prior's background inside the view's mask and squared
  (:meth:`~relight3d.priors.latent_diffusion.LatentDiffusionPrior.model_square`); the target map prepared
  (:meth:`~relight3d.priors.neural_gaffer.NeuralGafferPrior.prepare_envmap`) and the conditioning computed by
  :meth:`~relight3d.priors.neural_gaffer.NeuralGafferPrior.condition`: the input's projected CLIP embedding, and
  the unscaled VAE latents of the input and of the HDR / LDR lighting images of the map rotated into the camera's
  frame (:func:`~relight3d.priors.neural_gaffer.encode_lighting_images`).
* **Loss**: the target's VAE latents (a posterior sample drawn with the sample's generator, times the scaling
  factor, as Zero123's and Neural Gaffer's training do) are noised at a uniform training timestep; the noise is
  predicted by the prior's :meth:`~relight3d.priors.neural_gaffer.NeuralGafferPrior.predict_noise` with guidance 1
  (the conditional branch), and compared with the noise (``epsilon``) or velocity (``v_prediction``) by MSE.
* **Conditioning dropout**: with probability ``conditioning_dropout`` a sample loses *every* condition at once (the
  image embedding and the three condition latents zeroed), which is exactly the unconditional branch of the
  prior's classifier-free guidance.

``init`` is a Neural Gaffer folder (``unet/`` with 16 input channels, ``vae/``, ``image_encoder/``, ``scheduler/``):
a model trained before, or one made from a Zero123 or Stable-Diffusion-architecture folder that has an
``image_encoder/`` by :func:`gaffer_init_from_base` (``--base``), whose new input channels start at zero so that the
widened UNet first predicts exactly what the base did. ``save_model`` writes the same layout, the folder
``relight3d relight --prior neural-gaffer --prior-path`` loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

from relight3d.data.relight_pairs import LightPairs
from relight3d.errors import ConfigError
from relight3d.pipelines.gbuffer_training import widen_conv_in
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
from relight3d.priors.base import PriorViews, make_generators
from relight3d.priors.latent_diffusion import ViewChunk
from relight3d.priors.neural_gaffer import (
    UNET_IN_CHANNELS,
    NeuralGafferCondition,
    NeuralGafferPrior,
    NeuralGafferPriorConfig,
)


def gaffer_init_from_base(base: Path, output: Path) -> Path:
    """A Neural Gaffer model to start training from: the UNet, VAE, CLIP image encoder and scheduler of ``base``
    (a Zero123 folder, 8 input channels, or a Stable-Diffusion-architecture one with ``image_encoder/``) with
    ``conv_in`` widened to 16 channels (:func:`~relight3d.pipelines.gbuffer_training.widen_conv_in`: the new ones
    zero), written to ``output``.

    Raises:
        ConfigError: the base UNet takes more than 16 channels.
        WeightsError: ``base`` lacks a component (``image_encoder/`` included) or holds unreadable weights.
    """
    from relight3d.priors.diffusion.components import CHECKPOINT_SCHEDULER, IMAGE_PARTS, DiffusionComponents

    parts = DiffusionComponents.from_pretrained(base, IMAGE_PARTS, CHECKPOINT_SCHEDULER, "--base")
    width = int(parts.unet.config.in_channels)
    if width > UNET_IN_CHANNELS:
        raise ConfigError(
            "--base", f"its UNet takes {width} input channels, more than Neural Gaffer's {UNET_IN_CHANNELS}"
        )
    widen_conv_in(parts.unet, UNET_IN_CHANNELS)
    return parts.save_pretrained(output)


@dataclass
class NeuralGafferTaskConfig:
    """What ``relight3d train-prior neural-gaffer`` trains on and from."""

    data: Path
    """The relighting dataset folder (:mod:`relight3d.data.relight_pairs`: ``manifest.jsonl``); its pairs are
    :func:`light_pairs`."""
    init: Path
    """The Neural Gaffer folder to start from (``unet/`` 16 input channels, ``vae/``, ``image_encoder/``,
    ``scheduler/``)."""
    resolution: Optional[int] = None
    """Square side the model trains at (default: the UNet's sample size times the VAE's downscaling)."""
    conditioning_dropout: float = 0.05
    """Probability that a sample is trained unconditionally (every condition zeroed, as guidance's other branch)."""
    validation: PriorValidationConfig = field(default_factory=PriorValidationConfig)
    """Validation images at each checkpoint: per pair its input, the prior's relighting of it under the target's
    map (``validation.steps`` sampler steps) and its target."""


class NeuralGafferTask(PriorTask):
    """Neural Gaffer's denoiser training task (see the module docstring).

    ``prior_config`` sets the prior's conditioning options (e.g. ``lighting_images``, ``envmap_height``); its
    ``model_path`` and ``resolution`` are the task's.
    """

    def __init__(self, config: NeuralGafferTaskConfig, prior_config: Optional[NeuralGafferPriorConfig] = None) -> None:
        if not 0.0 <= config.conditioning_dropout < 1.0:
            raise ConfigError("--conditioning-dropout", f"must be in [0, 1), got {config.conditioning_dropout}")
        from relight3d.priors.diffusion.components import checkpoint_scheduler

        prior_config = training_prior_config(
            prior_config or NeuralGafferPriorConfig(), Path(config.init), config.resolution, config.validation.steps
        )
        self.config = config
        self.pairs = LightPairs(config.data)
        self.prior = NeuralGafferPrior(prior_config)
        self.scheduler = checkpoint_scheduler(Path(config.init))  # saved as the init folder has it
        parts = self.prior.components
        parts.unet.requires_grad_(True)

    def trained_module(self) -> torch.nn.Module:
        return self.prior.components.unet

    def dataset_size(self) -> int:
        return len(self.pairs)

    def to(self, device: torch.device) -> None:
        parts = self.prior.components
        for net in (parts.vae, parts.image_encoder):
            net.to(device)

    def inputs(
        self, index: int, generator: torch.Generator, device: torch.device
    ) -> Tuple[Float[Tensor, "1 3 r r"], NeuralGafferCondition]:
        """Pair ``index``'s target image (squared) and its conditioning, as the prior computes them (no gradients)."""
        source, target = self.pairs[index]
        prior = self.prior
        mask = source.frame.mask.float().clamp(0.0, 1.0)[None]
        images = torch.stack([source.image, target.image]).float()
        squares = prior.model_square(images, mask.expand(2, -1, -1, -1))[0].to(device)
        envmap = prior.prepare_envmap(target.envmap.float().to(device).clamp_min(0.0))
        camera = source.frame.camera_to_world[None, :3, :4].float().to(device)
        views = PriorViews(images[:1], mask, camera, envmap, [generator])
        with torch.no_grad():
            condition = prior.condition(prior.components, ViewChunk(views, squares[:1], squares[:1]))
        return squares[1:], condition

    def loss(self, network: torch.nn.Module, indices: Sequence[int], generators: Sequence[torch.Generator]) -> Tensor:
        parts = self.prior.components
        device = next(network.parameters()).device
        side = self.prior.resolution // parts.vae_scale_factor
        shape = (int(parts.vae.config.latent_channels), side, side)
        t, noise, uniform = diffusion_draws(generators, shape, int(parts.scheduler.config.num_train_timesteps))
        found = [self.inputs(i, g, device) for i, g in zip(indices, generators)]
        with torch.no_grad():
            latents = parts.encode_images(torch.cat([f[0] for f in found]), True, True, list(generators))
        keep = (uniform >= self.config.conditioning_dropout).float().to(device)
        embeds = torch.cat([f[1].image_embeds for f in found]) * keep.view(-1, 1, 1)
        concat = torch.cat([f[1].concat_latents for f in found]) * keep.view(-1, 1, 1, 1)
        noise, t = noise.to(latents), t.to(device)
        noisy = parts.scheduler.add_noise(latents, noise, t)
        trained = replace(parts, unet=UNetForward(network, parts.unet.dtype))  # DDP wraps the UNet in several processes
        predicted = self.prior.predict_noise(trained, noisy, t, NeuralGafferCondition(embeds, concat), 1.0)
        return denoising_loss(parts.scheduler, predicted, latents, noise, t)

    def save_model(self, network: torch.nn.Module, folder: Path) -> None:
        """The prior's folder (``unet/`` with ``network``'s weights, ``vae/``, ``image_encoder/``, the init folder's
        ``scheduler/``)."""
        import json

        replace(self.prior.components, unet=network, scheduler=self.scheduler).save_pretrained(folder)
        (folder / "relight3d_prior.json").write_text(json.dumps({"prior": "NeuralGafferPrior"}, indent=2) + "\n")

    def validation_images(self, network: torch.nn.Module, generator: torch.Generator) -> Optional[Tensor]:
        """Per fixed pair: its input, the prior's relighting (``relight``, as ``relight3d relight`` runs it) of the
        input under the target's map, and its target, at the model's square resolution."""
        if self.config.validation.steps <= 0:
            return None
        indices = validation_indices(len(self.pairs), self.config.validation.samples)
        cells: List[Tensor] = []
        for i, g in zip(indices, make_generators(generator, len(indices))):
            source, target = self.pairs[i]
            frame = source.frame
            views = PriorViews(
                source.image[None], frame.mask[None], frame.camera_to_world[None, :3], target.envmap, [g]
            )
            cells += [source.image, self.prior.relight(views)[0], target.image]
        return square_images(cells, self.prior.resolution, self.prior.config.background_color)


__all__ = [
    "NeuralGafferTask",
    "NeuralGafferTaskConfig",
    "gaffer_init_from_base",
]
