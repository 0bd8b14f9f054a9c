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
(applied when ``guidance_scale > 1`` and ``image_guidance_scale >= 1``).

Two settings: relight3d's default (:class:`InstructPix2PixPriorConfig`: 20 DDIM steps, VAE in float32 beside a
float16 UNet) and the reference's (:meth:`InstructPix2PixPriorConfig.public_preset`, registered as
``instruct-pix2pix-public``: ``StableDiffusionInstructPix2PixPipeline``'s defaults, 100 steps of the checkpoint's own
scheduler, Euler ancestral for ``timbrooks/instruct-pix2pix``, everything in one dtype). Guidance weights (7.5 text,
1.5 image) are the same in both.

``model_path`` is a folder in the pipeline's layout as released: ``unet/``, ``vae/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/`` (``model_index.json``, ``safety_checker/`` and ``feature_extractor/`` are ignored;
networks are read from their ``.safetensors`` files). A folder that lacks a file, or whose UNet is not an
8-channel one, is a one-line :class:`~relight3d.errors.WeightsError` naming the file or the channels.

Prompts, loading and sampling are shared (:mod:`relight3d.priors.text_prompted`, :mod:`relight3d.priors.diffusion`);
this file holds the instruction, the 8-channel layout and the three guidance branches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional, Type, Union

import torch
from jaxtyping import Float
from torch import Tensor

from relight3d.priors.diffusion.components import DiffusionComponents
from relight3d.priors.diffusion.guidance import unet_branches
from relight3d.priors.latent_diffusion import LatentDiffusionPriorConfig, ViewChunk
from relight3d.priors.lighting_description import SUMMARY_ENVMAP_HEIGHT
from relight3d.priors.text_prompted import TextCondition, TextPromptedPrior, TextPromptedPriorConfig

PROMPT_TEMPLATE = "relight it with {lighting}"
"""The default instruction (``{lighting}``: the light's description); ``relight3d data from-images`` writes its
triplets' instructions with it too, so a model trained on them is prompted as it was trained."""


@dataclass
class InstructPix2PixPriorConfig(TextPromptedPriorConfig):
    """InstructPix2Pix relighting: one instruction per view describing the target light relative to the camera.

    The defaults are relight3d's: 20 deterministic DDIM steps instead of the pipeline's 100 Euler-ancestral ones.
    relight3d samples every training view in stage 1 and re-samples them when refining (SDEdit), where 100 steps
    would cost five times as much per view; and DDIM with ``eta = 0`` draws noise only once per view, so a view relit
    twice, or refined, follows the same path, while Euler ancestral draws new noise at every step.
    :meth:`public_preset` gives the reference.
    """

    _target: Type = field(default_factory=lambda: InstructPix2PixPrior)
    """Prior class to instantiate."""
    model_path: Optional[Path] = None
    """Folder in StableDiffusionInstructPix2PixPipeline's layout: unet/ (8 input channels), vae/, text_encoder/,
    tokenizer/, scheduler/."""
    num_inference_steps: int = 20
    """Sampler steps (the reference pipeline's default is 100: see the class docstring for why relight3d's is 20)."""
    guidance_scale: float = 7.5
    """Text guidance weight."""
    image_guidance_scale: float = 1.5
    """Image guidance weight (how closely the result keeps the input image)."""
    prompt_template: str = PROMPT_TEMPLATE
    """Instruction; ``{lighting}`` is replaced by the per-view description of the target light."""

    @classmethod
    def public_preset(cls) -> "InstructPix2PixPriorConfig":
        """The reference: ``StableDiffusionInstructPix2PixPipeline.from_pretrained(model_path)`` called with its
        defaults (100 steps, text guidance 7.5, image guidance 1.5), sampling with the scheduler the checkpoint's
        ``scheduler/`` folder names (``EulerAncestralDiscreteScheduler`` for ``timbrooks/instruct-pix2pix``, the
        scheduler its model card and the authors' ``edit_cli.py`` use), and the VAE in the networks' dtype (the
        pipeline never upcasts it; float16 on CUDA, as the model card loads it)."""
        return cls(
            num_inference_steps=100, guidance_scale=7.5, image_guidance_scale=1.5, scheduler="checkpoint",
            vae_dtype="same",
        )  # fmt: skip


@dataclass
class InstructPix2PixCondition:
    """The instructions of a batch and the input images' latents."""

    text: TextCondition
    image_latents: Float[Tensor, "b 4 h w"]


class InstructPix2PixPrior(TextPromptedPrior):
    """InstructPix2Pix driven by per-view lighting instructions."""

    config: InstructPix2PixPriorConfig
    config_class: ClassVar[Type[LatentDiffusionPriorConfig]] = InstructPix2PixPriorConfig

    def check_components(self, components: DiffusionComponents) -> None:
        latent = int(components.vae.config.latent_channels)
        problem = f"InstructPix2Pix's takes {2 * latent} (noisy latent + input-image latent)"
        components.check_unet(self.unet_source, (2 * latent,), problem)

    def prepare_envmap(self, envmap: Float[Tensor, "H W 3"]) -> Float[Tensor, "H2 W2 3"]:
        from relight3d.lighting import resize_envmap

        if envmap.shape[0] <= SUMMARY_ENVMAP_HEIGHT:
            return envmap
        return resize_envmap(envmap, SUMMARY_ENVMAP_HEIGHT, 2 * SUMMARY_ENVMAP_HEIGHT)

    def prompt_for(self, lighting: str) -> str:
        return self.config.prompt_template.format(lighting=lighting)

    def condition(self, replica: DiffusionComponents, chunk: ViewChunk) -> InstructPix2PixCondition:
        image_latents = replica.encode_images(chunk.condition_images, scaled=False)
        return InstructPix2PixCondition(self.text_condition(replica, chunk), image_latents)

    def predict_noise(
        self, replica: DiffusionComponents, latents: Tensor, t: Union[int, Tensor], condition: InstructPix2PixCondition,
        scale: float,
    ) -> Float[Tensor, "b c h w"]:  # fmt: skip
        """Three branches, (text, image), (-, image), (-, -), when ``scale > 1`` and ``image_guidance_scale >= 1``."""
        image_scale = self.config.image_guidance_scale
        text, image = condition.text, condition.image_latents
        if scale <= 1.0 or image_scale < 1.0:
            return unet_branches(replica.unet, latents, t, [text.text_embeds], [image])[0]
        contexts = [text.text_embeds, text.negative_embeds, text.negative_embeds]
        with_text, with_image, unconditional = unet_branches(
            replica.unet, latents, t, contexts, [image, image, torch.zeros_like(image)]
        )
        return unconditional + scale * (with_text - with_image) + image_scale * (with_image - unconditional)
