"""The components of a latent diffusion model, loaded, placed and used in one way by every prior.

:class:`DiffusionComponents` holds a UNet, a VAE, a noise scheduler and the encoders a model conditions on (a CLIP
text encoder + tokenizer, or a CLIP image encoder). It loads from a local diffusers-layout folder (one subfolder
per component, see :mod:`relight3d.priors.diffusion.loading`), writes the same layout back, moves its networks to a
device and dtype (the VAE in its own dtype where asked), and does what every prior does with them: VAE encoding and
decoding, and prompt encoding.

The sampler is chosen by name (:data:`SamplerName`): one of :mod:`relight3d.priors.diffusion.schedulers`' samplers on
the checkpoint's noise schedule, or :data:`CHECKPOINT_SCHEDULER`, the scheduler class and settings the checkpoint's
``scheduler/scheduler_config.json`` names (what a diffusers pipeline loaded from the folder samples with).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Union

import torch
from jaxtyping import Float
from torch import Tensor

from relight3d.errors import WeightsError, reading
from relight3d.priors.base import per_view_noise
from relight3d.priors.diffusion.loading import load_component, require_model_dir
from relight3d.priors.diffusion.prompts import encode_prompts
from relight3d.priors.diffusion.schedulers import SchedulerName, load_scheduler, make_scheduler

TEXT_PARTS = ("unet", "vae", "text_encoder", "tokenizer")
"""Components of a text-conditioned model (Stable Diffusion, InstructPix2Pix, IC-Light), besides the scheduler."""
IMAGE_PARTS = ("unet", "vae", "image_encoder")
"""Components of an image-conditioned model (Zero123, Neural Gaffer), besides the scheduler."""

CHECKPOINT_SCHEDULER = "checkpoint"
"""Sampler choice: the scheduler the checkpoint ships (``scheduler/scheduler_config.json``'s ``_class_name`` with its
settings), as diffusers' pipelines use it when loaded from the folder (e.g. InstructPix2Pix's Euler ancestral)."""
SamplerName = Union[SchedulerName, Literal["checkpoint"]]
"""A sampler by name (:data:`~relight3d.priors.diffusion.schedulers.SCHEDULERS`), or the checkpoint's own."""

GeneratorArg = Union[None, torch.Generator, Sequence[torch.Generator]]
"""Randomness of a VAE posterior sample: None (torch's global generator), one generator for the batch (as diffusers'
``latent_dist.sample(generator)``), or one generator per view (each view's noise drawn on the CPU)."""


def _component_classes() -> Dict[str, Any]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

    return {
        "unet": UNet2DConditionModel,
        "vae": AutoencoderKL,
        "text_encoder": CLIPTextModel,
        "tokenizer": CLIPTokenizer,
        "image_encoder": CLIPVisionModelWithProjection,
    }


@dataclass
class DiffusionComponents:
    """A latent diffusion model's parts; the encoders a model does not use are None."""

    unet: Any
    """``diffusers.UNet2DConditionModel``: predicts the noise of a noisy latent (plus concatenated conditions)."""
    vae: Any
    """``diffusers.AutoencoderKL``: images <-> latents."""
    scheduler: Any
    """A diffusers noise scheduler (its training schedule; samplers are built from it by name)."""
    text_encoder: Any = None
    """``transformers.CLIPTextModel``, for text-conditioned models."""
    tokenizer: Any = None
    """``transformers.CLIPTokenizer``, with the text encoder."""
    image_encoder: Any = None
    """``transformers.CLIPVisionModelWithProjection``, for image-conditioned models."""

    # --- loading and saving -----------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, model_path: Optional[Union[str, Path]], parts: Sequence[str], scheduler: str = "ddim", option: str = ""
    ) -> "DiffusionComponents":
        """Load ``parts`` and the scheduler (as sampler ``scheduler``, a :data:`SamplerName`) from a local
        diffusers-layout folder.

        Raises:
            ConfigError: ``model_path`` is None (``option`` names the setting).
            WeightsError: a missing folder, component or file, a tensor of the wrong shape, or a component that
                cannot be read (one line naming the path).
        """
        path = require_model_dir(model_path, option or "model_path", [*parts, "scheduler"])
        classes = _component_classes()
        if not (path / "scheduler" / "scheduler_config.json").is_file():
            raise WeightsError(path / "scheduler", "missing scheduler_config.json")
        loaded = {name: load_component(classes[name], path, name) for name in parts}
        sampler = checkpoint_scheduler(path) if scheduler == CHECKPOINT_SCHEDULER else load_scheduler(path, scheduler)
        return cls(scheduler=sampler, **loaded)

    @classmethod
    def from_parts(
        cls, parts: Dict[str, Any], required: Sequence[str], where: Union[str, Path]
    ) -> "DiffusionComponents":
        """Components from objects (tests pass tiny ones), checked to include ``required`` and a scheduler."""
        missing = [n for n in (*required, "scheduler") if parts.get(n) is None]
        if missing:
            raise WeightsError(where, f"missing components: {', '.join(missing)}")
        unknown = set(parts) - {f.name for f in fields(cls)}
        if unknown:
            raise WeightsError(where, f"unknown components: {', '.join(sorted(unknown))}")
        return cls(**parts)

    def parts(self) -> Dict[str, Any]:
        """The components that are present, by subfolder name (the scheduler last)."""
        found = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "scheduler"}
        return {**{k: v for k, v in found.items() if v is not None}, "scheduler": self.scheduler}

    def networks(self) -> List[torch.nn.Module]:
        """The ``torch.nn.Module`` components."""
        return [p for p in self.parts().values() if isinstance(p, torch.nn.Module)]

    def save_pretrained(self, path: Union[str, Path]) -> Path:
        """Write every component (networks in float32) into ``path/<name>`` (the diffusers layout); returns ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for name, part in self.parts().items():
            if isinstance(part, torch.nn.Module) and part.dtype != torch.float32:
                part = copy.deepcopy(part).float()
            part.save_pretrained(path / name)
        return path

    # --- placement --------------------------------------------------------------------------------------------------
    def to(
        self,
        device: Union[str, torch.device],
        dtype: Optional[torch.dtype] = None,
        vae_dtype: Optional[torch.dtype] = None,
    ) -> "DiffusionComponents":
        """Move the networks to ``device`` and ``dtype`` (None: keep), the VAE to ``vae_dtype`` (None: ``dtype``), in
        place; returns self. :meth:`encode_images` and :meth:`decode_latents` cast at the VAE's boundary."""
        for net in self.networks():  # plain Module.to: diffusers' override warns on any dtype change
            net_dtype = vae_dtype if net is self.vae and vae_dtype is not None else dtype
            torch.nn.Module.to(net, device=torch.device(device), dtype=net_dtype)
        return self

    def with_sampler(self, name: str, option: str = "scheduler") -> "DiffusionComponents":
        """Replace the scheduler by a fresh sampler ``name`` (a :data:`SamplerName`) on its noise schedule; for
        :data:`CHECKPOINT_SCHEDULER`, a fresh copy of the current scheduler (the one loaded from the checkpoint, or
        given). Returns self.

        Raises:
            ConfigError: an unknown name (``option`` names the setting).
        """
        current = self.scheduler
        if name == CHECKPOINT_SCHEDULER:
            self.scheduler = type(current).from_config(current.config)
        else:
            self.scheduler = make_scheduler(name, current.config, option)
        return self

    def freeze(self) -> "DiffusionComponents":
        """Evaluation mode and no gradients for every network; returns self."""
        for net in self.networks():
            net.eval().requires_grad_(False)
        return self

    def replica(self, device: Union[str, torch.device]) -> "DiffusionComponents":
        """A deep copy on ``device`` (same dtype), e.g. one per GPU."""
        return copy.deepcopy(self).to(device)

    @property
    def device(self) -> torch.device:
        """The UNet's device."""
        return self.unet.device

    @property
    def vae_scale_factor(self) -> int:
        """Image pixels per latent pixel."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def native_resolution(self) -> int:
        """The image size the UNet was configured for: its sample size times the VAE's downsampling."""
        sample_size = self.unet.config.sample_size
        if isinstance(sample_size, (list, tuple)):
            sample_size = sample_size[0]
        return int(sample_size) * self.vae_scale_factor

    def check_unet(self, where: Union[str, Path], in_channels: Sequence[int], problem: str) -> None:
        """Check that the UNet takes one of ``in_channels`` (else ``problem`` explains what it should take), predicts
        the VAE's latent channels and attends over the conditioning encoder's width.

        Raises:
            WeightsError: naming ``where`` (the UNet's weights).
        """
        config = self.unet.config
        if int(config.in_channels) not in in_channels:
            raise WeightsError(where, f"UNet takes {config.in_channels} input channels; {problem}")
        latent = int(self.vae.config.latent_channels)
        if int(config.out_channels) != latent:
            raise WeightsError(where, f"UNet predicts {config.out_channels} channels, the VAE has {latent} latent ones")
        encoder = self.text_encoder if self.text_encoder is not None else self.image_encoder
        width = int(getattr(encoder.config, "projection_dim" if encoder is self.image_encoder else "hidden_size"))
        if int(config.cross_attention_dim) != width:
            raise WeightsError(where, f"UNet cross-attention width {config.cross_attention_dim} != encoder's {width}")

    # --- use --------------------------------------------------------------------------------------------------------
    def encode_images(
        self,
        images: Float[Tensor, "b 3 h w"],
        scaled: bool = True,
        sample: bool = False,
        generator: GeneratorArg = None,
    ) -> Float[Tensor, "b c h2 w2"]:
        """VAE latents (float32) of images in [0, 1], differentiable in ``images``: the posterior mean, or with
        ``sample`` a posterior sample drawn with ``generator``; times the VAE's scaling factor when ``scaled``."""
        posterior = self.vae.encode(images.to(self.vae.dtype) * 2.0 - 1.0).latent_dist
        latents = posterior.mean
        if sample:
            if isinstance(generator, (list, tuple)):
                noise = per_view_noise(generator, tuple(latents.shape[1:]), latents.device)
            else:
                device = generator.device if generator is not None else latents.device
                noise = torch.randn(latents.shape, generator=generator, device=device)
            latents = latents + posterior.std * noise.to(latents)
        latents = latents.float()
        return latents * self.vae.config.scaling_factor if scaled else latents

    def decode_latents(self, latents: Float[Tensor, "b c h w"]) -> Float[Tensor, "b 3 h2 w2"]:
        """Images in [0, 1] (float32) of scaled latents."""
        images = self.vae.decode((latents / self.vae.config.scaling_factor).to(self.vae.dtype)).sample
        return (images.float() / 2.0 + 0.5).clamp(0.0, 1.0)

    def encode_prompts(self, prompts: Sequence[str]) -> Float[Tensor, "b n d"]:
        """CLIP embeddings (float32) of prompts, padded to the tokenizer's maximum length."""
        return encode_prompts(self.tokenizer, self.text_encoder, prompts, self.text_encoder.device)


def checkpoint_scheduler(model_path: Path) -> Any:
    """The scheduler ``model_path/scheduler/scheduler_config.json`` describes: the diffusers class its
    ``_class_name`` names, with its settings (how ``DiffusionPipeline.from_pretrained`` builds it; only diffusers'
    scheduler classes are accepted).

    Raises:
        WeightsError: the file is unreadable, or names no diffusers scheduler class.
    """
    import diffusers

    path = Path(model_path) / "scheduler" / "scheduler_config.json"
    with reading(path, "a scheduler config", error=WeightsError):
        settings = json.loads(path.read_text())
        name = settings.get("_class_name")
    found = getattr(diffusers, name, None) if isinstance(name, str) else None
    if not (isinstance(found, type) and issubclass(found, diffusers.SchedulerMixin)):
        raise WeightsError(path, f"_class_name {name!r} is not a diffusers scheduler class")
    return found.from_config(settings)


def widen_conv_in(unet: Any, in_channels: int) -> Any:
    """Give ``unet`` a ``conv_in`` of ``in_channels`` inputs (in place): the old weights on the first channels, zeros
    on the new ones (how IC-Light and Neural Gaffer extend an SD1.5 / Zero123 UNet); returns ``unet``."""
    old = unet.conv_in
    if old.in_channels == in_channels:
        return unet
    new = torch.nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding)
    kept = min(in_channels, old.in_channels)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :kept].copy_(old.weight[:, :kept])
        new.bias.copy_(old.bias)
    unet.conv_in = new.to(old.weight)
    unet.register_to_config(in_channels=in_channels)
    return unet
