"""Relighting by instruction: an adapter over InstructPix2Pix (diffusers' ``StableDiffusionInstructPix2PixPipeline``).

InstructPix2Pix edits an image following a text instruction. The adapter turns the target environment map into an
instruction per view, relative to that view's camera (the same map gives "light from the left" in one view and
"light from behind" in another):

    prompt_template.format(lighting=summarize_lighting(envmap, camera).describe())
    e.g. "relight it with hard warm light from the upper left"

(see :mod:`relight3d.priors.lighting_description` for how direction, hardness and colour are read off the map).
A relighting-trained InstructPix2Pix (such as the ones the IC-Light-style data pipeline trains) is the intended
model; the original InstructPix2Pix weights also load and follow such instructions loosely.

The sampling is InstructPix2Pix's own, reproduced exactly (tests compare it with the diffusers pipeline): the UNet
takes 8 channels (noisy latent + the input image's *unscaled* VAE posterior mean), and guidance has three branches,
``eps = eps(-, -) + s_text (eps(text, image) - eps(-, image)) + s_image (eps(-, image) - eps(-, -))``
(applied when ``guidance_scale > 1`` and ``image_guidance_scale >= 1``), with DDIM instead of the pipeline's
default scheduler.

``model_path`` is a folder in the pipeline's layout: ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
``scheduler/`` (other subfolders such as ``safety_checker/`` are ignored).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
from jaxtyping import Float
from torch import Tensor

from relight3d.priors.base import PriorError
from relight3d.priors.latent_diffusion import (
    DeviceReplica,
    LatentDiffusionPrior,
    LatentDiffusionPriorConfig,
    ViewChunk,
    batched_timesteps,
    encode_prompts,
    load_components,
)
from relight3d.priors.lighting_description import SUMMARY_ENVMAP_HEIGHT, summarize_lighting


@dataclass
class InstructPix2PixPriorConfig(LatentDiffusionPriorConfig):
    """InstructPix2Pix relighting: one instruction per view describing the target light relative to the camera."""

    _target: Type = field(default_factory=lambda: InstructPix2PixPrior)
    """Prior class to instantiate."""
    model_path: Optional[Path] = None
    """Folder in StableDiffusionInstructPix2PixPipeline's layout: unet/ (8 input channels), vae/, text_encoder/,
    tokenizer/, scheduler/."""
    num_inference_steps: int = 20
    """DDIM steps."""
    guidance_scale: float = 7.5
    """Text guidance weight."""
    image_guidance_scale: float = 1.5
    """Image guidance weight (how closely the result keeps the input image)."""
    prompt_template: str = "relight it with {lighting}"
    """Instruction; ``{lighting}`` is replaced by the per-view description of the target light."""
    negative_prompt: str = ""
    """Text of the unconditional branches."""


@dataclass
class InstructPix2PixCondition:
    """Text embeddings (instruction, negative) and the input image latents of a batch."""

    text_embeds: Float[Tensor, "b n d"]
    negative_embeds: Float[Tensor, "b n d"]
    image_latents: Float[Tensor, "b 4 h w"]
    prompts: List[str]


class InstructPix2PixPrior(LatentDiffusionPrior):
    """InstructPix2Pix driven by per-view lighting instructions."""

    config: InstructPix2PixPriorConfig
    config_class: ClassVar[Type[LatentDiffusionPriorConfig]] = InstructPix2PixPriorConfig
    component_names: ClassVar[Tuple[str, ...]] = ("unet", "vae", "text_encoder", "tokenizer")

    def load_components(self) -> Dict[str, Any]:
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        layout = {
            "unet": UNet2DConditionModel,
            "vae": AutoencoderKL,
            "text_encoder": CLIPTextModel,
            "tokenizer": CLIPTokenizer,
            "scheduler": DDIMScheduler,
        }
        return load_components(self.config.model_path, layout, type(self.config).__name__)

    def check_components(self, components: Dict[str, Any]) -> None:
        unet, vae = components["unet"], components["vae"]
        latent = int(vae.config.latent_channels)
        where = Path(self.config.model_path) / "unet" if self.config.model_path else type(self.config).__name__
        if int(unet.config.in_channels) != 2 * latent:
            raise PriorError(
                where,
                f"UNet takes {unet.config.in_channels} input channels; InstructPix2Pix's takes {2 * latent} "
                "(noisy latent + input-image latent)",
            )
        width = int(components["text_encoder"].config.hidden_size)
        if int(unet.config.cross_attention_dim) != width:
            raise PriorError(
                where, f"UNet cross-attention width {unet.config.cross_attention_dim} != text width {width}"
            )

    def prepare_envmap(self, envmap: Float[Tensor, "H W 3"]) -> Float[Tensor, "H2 W2 3"]:
        from relight3d.lighting import resize_envmap

        if envmap.shape[0] <= SUMMARY_ENVMAP_HEIGHT:
            return envmap
        return resize_envmap(envmap, SUMMARY_ENVMAP_HEIGHT, 2 * SUMMARY_ENVMAP_HEIGHT)

    def prompts(self, cameras: Float[Tensor, "b 3 4"], target_envmap: Float[Tensor, "H W 3"]) -> List[str]:
        """The instruction given to the model for each view."""
        return [
            self.config.prompt_template.format(lighting=summarize_lighting(target_envmap, c2w).describe())
            for c2w in cameras
        ]

    def condition(
        self, replica: DeviceReplica, chunk: ViewChunk, generators: Sequence[torch.Generator]
    ) -> InstructPix2PixCondition:
        prompts = self.prompts(chunk.cameras, chunk.envmap)
        tokenizer, text_encoder = replica.components["tokenizer"], replica.components["text_encoder"]
        text = encode_prompts(tokenizer, text_encoder, prompts, replica.device)
        negative = encode_prompts(tokenizer, text_encoder, [self.config.negative_prompt] * len(prompts), replica.device)
        image_latents = self.encode_images(replica, chunk.condition_images, scaled=False)
        return InstructPix2PixCondition(text, negative, image_latents, prompts)

    def predict_noise(
        self,
        replica: DeviceReplica,
        latents: Float[Tensor, "b c h w"],
        t: Union[int, Tensor],
        condition: InstructPix2PixCondition,
        guidance_scale: Optional[float] = None,
    ) -> Float[Tensor, "b c h w"]:
        scale = self.config.guidance_scale if guidance_scale is None else guidance_scale
        image_scale = self.config.image_guidance_scale
        unet = replica.components["unet"]
        batch = latents.shape[0]
        image_latents, text = condition.image_latents, condition.text_embeds
        guided = scale > 1.0 and image_scale >= 1.0
        if guided:  # branches: (text, image), (-, image), (-, -)
            latents = torch.cat([latents] * 3)
            image_latents = torch.cat([image_latents, image_latents, torch.zeros_like(image_latents)])
            text = torch.cat([text, condition.negative_embeds, condition.negative_embeds])
        copies = latents.shape[0] // batch
        sample = torch.cat([latents, image_latents], dim=1).to(self.dtype)
        timesteps = batched_timesteps(t, batch, copies, replica.device)
        noise = unet(sample, timesteps, encoder_hidden_states=text.to(self.dtype)).sample.float()
        if not guided:
            return noise
        with_text, with_image, unconditional = noise.chunk(3)
        return unconditional + scale * (with_text - with_image) + image_scale * (with_image - unconditional)
