"""``relight3d train-prior instruct-pix2pix``: train an InstructPix2Pix denoiser to relight by instruction.

The model is the one the prior runs (:class:`~relight3d.priors.instruct_pix2pix.InstructPix2PixPrior`): an SD1.5
architecture UNet whose ``conv_in`` takes 8 channels (the noisy latent and the input image's latent). The task builds
the prior from ``init`` and turns each sample into model inputs with the prior's own functions, following the
InstructPix2Pix training recipe (diffusers' ``train_instruct_pix2pix.py``):

* **Samples** (:class:`EditSample`): an input image, its edited target, the object's mask and the instruction, from
  either kind of ``data`` folder:

  - an image-triplets folder (``triplets.jsonl``, as ``relight3d data from-images`` writes it, read by
    :func:`~relight3d.pipelines.image_triplets.read_triplets`): one sample per line, its instruction as written;
  - a relighting dataset (``manifest.jsonl``, :mod:`relight3d.data.relight_pairs`): one sample per pair of
    :func:`~relight3d.data.relight_pairs.light_pairs` (a view under light A, the same view under light B),
    its instruction the one the prior gives that view under B's map at inference
    (:meth:`~relight3d.priors.text_prompted.TextPromptedPrior.prompts` of the map as
    :meth:`~relight3d.priors.instruct_pix2pix.InstructPix2PixPrior.prepare_envmap` prepares it, e.g.
    ``"relight it with hard warm light from the upper left"``).

* **Inputs**: both images composited on the prior's background inside the mask and squared
  (:meth:`~relight3d.priors.latent_diffusion.LatentDiffusionPrior.model_square`); the input image's latents are the
  VAE posterior's mode, *not* scaled (``StableDiffusionInstructPix2PixPipeline.prepare_image_latents``, as the
  prior encodes them); the instruction goes through the CLIP text encoder (:meth:`condition`).
* **Loss**: the target's latents (a posterior sample drawn with the sample's generator, times the scaling factor)
  noised at a uniform training timestep; the noise predicted by the prior's
  :meth:`~relight3d.priors.instruct_pix2pix.InstructPix2PixPrior.predict_noise` with guidance 1 (the (text, image)
  branch) and compared by MSE with the noise (``epsilon``) or the velocity (``v_prediction``).
* **Conditioning dropout** (the recipe's, probability ``p = conditioning_dropout``): with one uniform draw ``u`` per
  sample (from its generator), the text becomes the negative prompt's embedding (``""``, the prior's unconditional
  text) when ``u < 2p`` and the image latents become zero when ``p <= u < 3p``: text only, both, image only, each
  with probability ``p``. These are the branches of the prior's three-way guidance.

``init`` is a folder in the pipeline's layout (``unet/`` with 8 input channels, ``vae/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/``): an InstructPix2Pix to continue, or one made from a Stable Diffusion folder by
:func:`ip2p_init_from_base` (``--base``; the 4 new input channels start at zero, so the widened UNet first predicts
exactly what the base did). ``save_model`` writes the same layout with a ``model_index.json``, so the folder loads
both as ``relight3d relight --prior instruct-pix2pix --prior-path`` and with
``StableDiffusionInstructPix2PixPipeline.from_pretrained``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from relight3d.data.relight_pairs import MANIFEST, LightPairs
from relight3d.errors import ConfigError, DataError
from relight3d.pipelines.gbuffer_training import widen_conv_in
from relight3d.pipelines.image_files import TRIPLETS
from relight3d.pipelines.image_triplets import read_triplets
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
from relight3d.priors.base import make_generators, per_view_noise
from relight3d.priors.instruct_pix2pix import (
    InstructPix2PixCondition,
    InstructPix2PixPrior,
    InstructPix2PixPriorConfig,
)
from relight3d.priors.text_prompted import TextCondition


@dataclass
class EditSample:
    """One InstructPix2Pix training sample."""

    input: Float[Tensor, "h w 3"]
    """The image to edit, sRGB in [0, 1]."""
    target: Float[Tensor, "h w 3"]
    """The edited image, sRGB in [0, 1]."""
    mask: Float[Tensor, "h w 1"]
    """The object (1 inside); both images are composited on the prior's background outside it."""
    instruction: str
    """What the edit does, in words."""


class ImageTriplets:
    """The samples of an image-triplets folder (``relight3d data from-images``' layout, read by
    :func:`~relight3d.pipelines.image_triplets.read_triplets`), images read on demand. The mask is the mask file's
    first channel, else (a record without one) the input's alpha, else everything.

    Raises:
        DataError: see :func:`~relight3d.pipelines.image_triplets.read_triplets`; on access, an unreadable image or
            sizes that differ.
    """

    def __init__(self, root: Union[str, Path]) -> None:
        self.root = Path(root)
        self.records = read_triplets(self.root)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> EditSample:
        from relight3d.data.images import read_rgba

        record = self.records[index]
        source, has_alpha = read_rgba(record["input"])
        target, _ = read_rgba(record["target"])
        if record.get("mask") is not None:
            mask = read_rgba(record["mask"])[0][..., :1]
        else:
            mask = source[..., 3:] if has_alpha else np.ones_like(source[..., 3:])
        sizes = {tuple(x.shape[:2]) for x in (source, target, mask)}
        if len(sizes) > 1:
            problem = f"line {record['line']}: input, target and mask differ in size ({sorted(sizes)})"
            raise DataError(self.root / TRIPLETS, problem)
        tensors = [torch.from_numpy(x.copy()).float() for x in (source[..., :3], target[..., :3], mask)]
        return EditSample(*tensors, record["instruction"])


def ip2p_init_from_base(base: Path, output: Path) -> Path:
    """An InstructPix2Pix to start training from: the components of a Stable Diffusion folder ``base`` (``unet/``,
    ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``) with ``conv_in`` widened to twice the latent
    channels (:func:`~relight3d.pipelines.gbuffer_training.widen_conv_in`: the new ones zero), written to ``output``
    (with a ``model_index.json``).

    Raises:
        ConfigError: the base UNet already takes more channels.
        WeightsError: a missing component or unreadable weights in ``base``.
    """
    from relight3d.priors.diffusion.components import CHECKPOINT_SCHEDULER, TEXT_PARTS, DiffusionComponents

    parts = DiffusionComponents.from_pretrained(base, TEXT_PARTS, CHECKPOINT_SCHEDULER, "--base")
    width, wanted = int(parts.unet.config.in_channels), 2 * int(parts.vae.config.latent_channels)
    if width > wanted:
        raise ConfigError("--base", f"its UNet takes {width} input channels, more than InstructPix2Pix's {wanted}")
    widen_conv_in(parts.unet, wanted)
    return _save_pipeline(parts, output)


def _save_pipeline(parts: Any, output: Path) -> Path:
    """``parts`` written in the released InstructPix2Pix layout (with ``model_index.json``)."""
    import diffusers

    parts.save_pretrained(output)
    index = {
        "_class_name": "StableDiffusionInstructPix2PixPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", type(parts.scheduler).__name__],
        "text_encoder": ["transformers", type(parts.text_encoder).__name__],
        "tokenizer": ["transformers", type(parts.tokenizer).__name__],
        "unet": ["diffusers", type(parts.unet).__name__],
        "vae": ["diffusers", type(parts.vae).__name__],
    }
    (output / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    (output / "relight3d_prior.json").write_text(json.dumps({"prior": "InstructPix2PixPrior"}, indent=2) + "\n")
    return output


@dataclass
class InstructPix2PixTaskConfig:
    """What ``relight3d train-prior instruct-pix2pix`` trains on and from."""

    data: Path
    """An image-triplets folder (``triplets.jsonl``) or a relighting dataset (``manifest.jsonl``; its pairs are
    :func:`~relight3d.data.relight_pairs.light_pairs`)."""
    init: Path
    """The InstructPix2Pix folder to start from (``unet/`` 8 input channels, ``vae/``, ``text_encoder/``,
    ``tokenizer/``, ``scheduler/``)."""
    resolution: Optional[int] = None
    """Square side the model trains at (default: the UNet's sample size times the VAE's downscaling)."""
    conditioning_dropout: float = 0.05
    """InstructPix2Pix's conditioning dropout probability ``p``: text only, image only and both are each dropped
    with probability ``p`` (at most 1/3)."""
    validation: PriorValidationConfig = field(default_factory=PriorValidationConfig)
    """Validation images at each checkpoint: per sample its input, the prior's edit of it by the sample's instruction
    (its guidance, ``validation.steps`` sampler steps) and its target."""


class InstructPix2PixTask(PriorTask):
    """InstructPix2Pix's denoiser training task (see the module docstring).

    ``prior_config`` sets the prior's options (e.g. ``prompt_template``, ``negative_prompt``); its ``model_path`` and
    ``resolution`` are the task's.
    """

    def __init__(
        self, config: InstructPix2PixTaskConfig, prior_config: Optional[InstructPix2PixPriorConfig] = None
    ) -> None:
        if not 0.0 <= config.conditioning_dropout <= 1.0 / 3.0:
            raise ConfigError("--conditioning-dropout", f"must be in [0, 1/3], got {config.conditioning_dropout}")
        from relight3d.priors.diffusion.components import checkpoint_scheduler

        prior_config = training_prior_config(
            prior_config or InstructPix2PixPriorConfig(), Path(config.init), config.resolution, config.validation.steps
        )
        self.config = config
        data = Path(config.data)
        self.triplets: Optional[ImageTriplets] = None
        self.pairs: Optional[LightPairs] = None
        if (data / TRIPLETS).is_file():
            self.triplets = ImageTriplets(data)
        elif (data / MANIFEST).is_file():
            self.pairs = LightPairs(data)
        else:
            raise DataError(data, f"holds neither {TRIPLETS} (relight3d data from-images) nor {MANIFEST} (a "
                                  "relighting dataset)")  # fmt: skip
        self.prior = InstructPix2PixPrior(prior_config)
        self.scheduler = checkpoint_scheduler(Path(config.init))  # saved as the init folder has it
        self.prior.components.unet.requires_grad_(True)

    def trained_module(self) -> torch.nn.Module:
        return self.prior.components.unet

    def dataset_size(self) -> int:
        return len(self.triplets) if self.triplets is not None else len(self.pairs)

    def to(self, device: torch.device) -> None:
        parts = self.prior.components
        for net in (parts.vae, parts.text_encoder):
            net.to(device)

    def sample(self, index: int) -> EditSample:
        """Sample ``index``: a triplet as written, or a pair with the prior's instruction for the target's light."""
        if self.triplets is not None:
            return self.triplets[index]
        source, target = self.pairs[index]
        instruction = self.instruction(target.envmap, source.frame.camera_to_world)
        return EditSample(source.image, target.image, source.frame.mask, instruction)

    def instruction(self, envmap: Float[Tensor, "H W 3"], camera_to_world: Float[Tensor, "3 4"]) -> str:
        """The instruction the prior gives a view with this camera under ``envmap`` at inference."""
        prepared = self.prior.prepare_envmap(envmap.float().clamp_min(0.0))
        return self.prior.prompts(camera_to_world[None, :3, :4].float(), prepared)[0]

    def squares(self, samples: Sequence[EditSample], device: torch.device) -> Tuple[Tensor, Tensor]:
        """The samples' input and target images as the prior squares them: ``(b 3 r r, b 3 r r)``."""
        inputs, targets = [], []
        for s in samples:
            mask = s.mask.float().clamp(0.0, 1.0)[None]
            inputs.append(self.prior.model_square(s.input.float()[None], mask)[0])
            targets.append(self.prior.model_square(s.target.float()[None], mask)[0])
        return torch.cat(inputs).to(device), torch.cat(targets).to(device)

    def condition(self, instructions: Sequence[str], inputs: Float[Tensor, "b 3 r r"]) -> InstructPix2PixCondition:
        """The prior's conditioning of squared input images edited by ``instructions`` (as
        :meth:`~relight3d.priors.instruct_pix2pix.InstructPix2PixPrior.condition` computes it from its prompts)."""
        parts = self.prior.components
        negative = parts.encode_prompts([self.prior.config.negative_prompt] * len(instructions))
        text = TextCondition(list(instructions), parts.encode_prompts(list(instructions)), negative)
        return InstructPix2PixCondition(text, parts.encode_images(inputs, scaled=False))

    def loss(self, network: torch.nn.Module, indices: Sequence[int], generators: Sequence[torch.Generator]) -> Tensor:
        parts = self.prior.components
        device = next(network.parameters()).device
        side = self.prior.resolution // parts.vae_scale_factor
        shape = (int(parts.vae.config.latent_channels), side, side)
        t, noise, u = diffusion_draws(generators, shape, int(parts.scheduler.config.num_train_timesteps))
        samples = [self.sample(i) for i in indices]
        with torch.no_grad():
            inputs, targets = self.squares(samples, device)
            latents = parts.encode_images(targets, True, True, list(generators))
            condition = self.condition([s.instruction for s in samples], inputs)
        p, u = self.config.conditioning_dropout, u.to(device)
        text = condition.text
        drop_text = (u < 2 * p).view(-1, 1, 1)
        keep_image = ~((u >= p) & (u < 3 * p))
        embeds = torch.where(drop_text, text.negative_embeds, text.text_embeds)
        image = condition.image_latents * keep_image.float().view(-1, 1, 1, 1)
        dropped = InstructPix2PixCondition(replace(text, text_embeds=embeds), image)
        noise, t = noise.to(latents), t.to(device)
        noisy = parts.scheduler.add_noise(latents, noise, t)
        trained = replace(parts, unet=UNetForward(network, parts.unet.dtype))  # DDP wraps the UNet in several processes
        predicted = self.prior.predict_noise(trained, noisy, t, dropped, 1.0)
        return denoising_loss(parts.scheduler, predicted, latents, noise, t)

    def save_model(self, network: torch.nn.Module, folder: Path) -> None:
        """The prior's folder (``unet/`` with ``network``'s weights, the other components, the init folder's
        ``scheduler/``, ``model_index.json``)."""
        _save_pipeline(replace(self.prior.components, unet=network, scheduler=self.scheduler), folder)

    def edit(
        self, inputs: Float[Tensor, "b 3 r r"], instructions: Sequence[str], generators: Sequence[torch.Generator]
    ) -> Float[Tensor, "b 3 r r"]:
        """Squared input images edited by ``instructions`` as the prior samples a view (its sampler, steps, guidance
        and per-view noise), with the instructions given instead of read off a map."""
        from relight3d.priors.diffusion.sampling import sample_latents

        prior, parts = self.prior, self.prior.components
        condition = self.condition(instructions, inputs)
        side = inputs.shape[-1] // parts.vae_scale_factor
        noise = per_view_noise(generators, (int(parts.vae.config.latent_channels), side, side), parts.device)

        def predict(x: Tensor, t: Tensor) -> Tensor:
            return prior.predict_noise(parts, x, t, condition, prior.config.guidance_scale)

        latents = sample_latents(
            parts.scheduler, predict, noise, prior.config.num_inference_steps, None, 1.0, prior.config.eta, generators
        )
        return parts.decode_latents(latents)

    def validation_images(self, network: torch.nn.Module, generator: torch.Generator) -> Optional[Tensor]:
        """Per fixed sample: its input, the prior's edit of it by its instruction (:meth:`edit`) and its target, at
        the model's square resolution."""
        if self.config.validation.steps <= 0:
            return None
        indices = validation_indices(self.dataset_size(), self.config.validation.samples)
        cells: List[Tensor] = []
        device = self.prior.components.device
        for i, g in zip(indices, make_generators(generator, len(indices))):
            sample = self.sample(i)
            inputs, targets = self.squares([sample], device)
            edited = self.edit(inputs, [sample.instruction], [g])
            cells += [x[0].permute(1, 2, 0) for x in (inputs, edited, targets)]
        return square_images(cells, self.prior.resolution)


__all__ = [
    "EditSample",
    "ImageTriplets",
    "InstructPix2PixTask",
    "InstructPix2PixTaskConfig",
    "ip2p_init_from_base",
]
