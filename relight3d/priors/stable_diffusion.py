"""Stable Diffusion as a score-distillation prior (DreamFusion's SDS, with RealFusion's learned-token prompts).

The components (UNet, VAE, CLIP text encoder and tokenizer, noise scheduler) load from a local folder in the
diffusers layout (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``) named in the config, through
the shared :class:`~relight3d.priors.diffusion.components.DiffusionComponents`; nothing is downloaded. Components can
also be passed in directly, which is how the tests use tiny random models
(:func:`relight3d.priors.diffusion.testing.tiny_components`).

A textual-inversion embedding (``learned_embeds.safetensors`` or RealFusion's ``learned_embeds.bin``) adds its token
to the tokenizer and text encoder; ``<token>`` in a prompt stands for it (:mod:`relight3d.priors.diffusion.prompts`).
What is this file's own: view-dependent prompts, the SDS weighting ``w(t)`` and timestep sampling.

Heavy imports (diffusers, transformers) happen inside functions: importing this module is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple, Type, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor

from relight3d.errors import ConfigError
from relight3d.priors.diffusion.components import TEXT_PARTS, DiffusionComponents
from relight3d.priors.diffusion.guidance import epsilon_from, guided_noise, score_distillation
from relight3d.priors.diffusion.prompts import TOKEN_PLACEHOLDER, add_learned_tokens, substitute_token
from relight3d.priors.diffusion.schedulers import timestep_range

VIEW_DIRECTIONS = ("front", "side", "back", "overhead", "bottom")
"""View names appended to the prompt by view-dependent prompting ("<prompt>, <name> view")."""


def load_stable_diffusion(path: Optional[Path], option: str = "pretrained_model_path") -> DiffusionComponents:
    """Stable Diffusion's components from a local diffusers-layout folder (training schedule as a DDPM scheduler).

    Raises:
        ConfigError: ``path`` is None (``option`` names the setting).
        WeightsError: a missing folder or component, or one that cannot be read.
    """
    return DiffusionComponents.from_pretrained(path, TEXT_PARTS, scheduler="ddpm", option=option)


@dataclass
class StableDiffusionGuidanceConfig(InstantiateConfig):
    """Stable Diffusion score-distillation guidance (defaults: RealFusion's published options)."""

    _target: Type = field(default_factory=lambda: StableDiffusionGuidance)
    """Guidance class to instantiate."""
    pretrained_model_path: Optional[Path] = None
    """Local Stable Diffusion folder in the diffusers layout (unet/, vae/, text_encoder/, tokenizer/, scheduler/),
    e.g. a downloaded runwayml/stable-diffusion-v1-5. Required when the prior weight is above 0."""
    learned_embeds_path: Optional[Path] = None
    """Textual-inversion embedding (learned_embeds.safetensors, or RealFusion's learned_embeds.bin) whose token
    replaces <token> in the prompts; see `relight3d textual-inversion`."""
    prompt: str = "A high-resolution DSLR image of a <token>"
    """Text prompt (RealFusion's default). <token> stands for the learned token."""
    negative_prompt: str = ""
    """Negative prompt: the unconditional branch of classifier-free guidance uses it."""
    view_dependent_prompting: bool = True
    """Append ', front view' / ', side view' / ', back view' / ', overhead view' / ', bottom view' to the prompt
    according to the rendered camera (DreamFusion; RealFusion's dir_text)."""
    guidance_scale: float = 100.0
    """Classifier-free guidance scale. SDS needs large values (DreamFusion, RealFusion: 100)."""
    min_step_fraction: float = 0.02
    """Smallest diffusion timestep sampled, as a fraction of the training timesteps (t ~ U[0.02, 0.98])."""
    max_step_fraction: float = 0.98
    """Largest diffusion timestep sampled, as a fraction of the training timesteps."""
    weighting: Literal["one_minus_alpha_bar", "sqrt_alpha_bar_one_minus_alpha_bar", "uniform"] = "one_minus_alpha_bar"
    """SDS weight w(t): 1 - alpha_bar_t (RealFusion, DreamFusion), sqrt(alpha_bar_t) (1 - alpha_bar_t), or 1."""
    half_precision: bool = True
    """Run the Stable Diffusion networks in float16 on CUDA (always float32 on the CPU)."""
    image_resolution: Optional[int] = None
    """Size the renders are resized to before encoding; None uses the UNet's training size (512 for SD 1.5)."""


class StableDiffusionGuidance:
    """Score distillation sampling with Stable Diffusion.

    Deliberately not an ``nn.Module``: the pipeline holds it outside its module tree, so that checkpoints of the
    radiance field do not contain Stable Diffusion's weights and the optimizers never see them.

    Args:
        config: guidance settings.
        device: device of the networks.
        components: already-built components (tests pass tiny ones); loaded from
            ``config.pretrained_model_path`` when None.

    Raises:
        ConfigError: no model path, or prompts and learned tokens that do not fit together.
        WeightsError: unreadable Stable Diffusion components or learned embeddings.
    """

    def __init__(
        self,
        config: StableDiffusionGuidanceConfig,
        device: Union[torch.device, str] = "cpu",
        components: Optional[DiffusionComponents] = None,
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        self.dtype = torch.float16 if config.half_precision and self.device.type == "cuda" else torch.float32
        if components is None:
            if config.pretrained_model_path is None:
                raise ConfigError(
                    "--pipeline.guidance.pretrained-model-path",
                    "not set: the SDS prior needs a local Stable Diffusion folder in the diffusers layout",
                )
            option = "--pipeline.guidance.pretrained-model-path"
            components = load_stable_diffusion(config.pretrained_model_path, option)
        self.components = components.to(self.device, self.dtype).freeze()
        self.tokens: List[str] = []
        if config.learned_embeds_path is not None:
            self.tokens = add_learned_tokens(config.learned_embeds_path, components.tokenizer, components.text_encoder)
        self.prompt = self._resolve(config.prompt)
        self.negative_prompt = self._resolve(config.negative_prompt, required=False)
        self.alphas_cumprod: Float[Tensor, " T"] = components.scheduler.alphas_cumprod.to(self.device, torch.float32)
        fractions = (config.min_step_fraction, config.max_step_fraction)
        self.min_step, self.max_step = timestep_range(components.scheduler, fractions)
        self._text_cache: Dict[Tuple[str, str], Tensor] = {}

    def _resolve(self, prompt: str, required: bool = True) -> str:
        if self.config.learned_embeds_path is None:
            if TOKEN_PLACEHOLDER in prompt:
                raise ConfigError(
                    "--pipeline.guidance.learned-embeds-path",
                    f"not set, but the prompt {prompt!r} uses <token>: give the textual-inversion embedding "
                    "or name the object in the prompt",
                )
            return prompt
        if not required and TOKEN_PLACEHOLDER not in prompt:
            return prompt
        option = "--pipeline.guidance.prompt" if required else "--pipeline.guidance.negative-prompt"
        return substitute_token(prompt, self.tokens, self.config.learned_embeds_path, option)

    @property
    def image_resolution(self) -> int:
        """Size of the images given to the VAE."""
        return self.config.image_resolution or self.components.native_resolution

    def prompt_for_view(self, direction: Optional[str] = None) -> str:
        """The prompt, with ', <direction> view' appended under view-dependent prompting."""
        if direction is None or not self.config.view_dependent_prompting:
            return self.prompt
        if direction not in VIEW_DIRECTIONS:
            raise ValueError(f"unknown view direction {direction!r}; expected one of {VIEW_DIRECTIONS}")
        return f"{self.prompt}, {direction} view"

    def text_embeddings(self, direction: Optional[str] = None) -> Float[Tensor, "2 l d"]:
        """``[negative, positive]`` prompt embeddings (float32) for a view direction (cached)."""
        key = (self.prompt_for_view(direction), self.negative_prompt)
        if key not in self._text_cache:
            with torch.no_grad():
                self._text_cache[key] = self.components.encode_prompts([key[1], key[0]])
        return self._text_cache[key]

    def weight(self, timesteps: Tensor) -> Tensor:
        """The SDS weight w(t) of the config."""
        alpha_bar = self.alphas_cumprod[timesteps]
        if self.config.weighting == "one_minus_alpha_bar":
            return 1.0 - alpha_bar
        if self.config.weighting == "sqrt_alpha_bar_one_minus_alpha_bar":
            return alpha_bar.sqrt() * (1.0 - alpha_bar)
        return torch.ones_like(alpha_bar)

    def sample_timesteps(self, batch: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """Timesteps ~ U{min_step, ..., max_step}."""
        t = torch.randint(self.min_step, self.max_step + 1, (batch,), generator=generator)
        return t.to(self.device)

    @torch.no_grad()
    def guided_noise(self, noisy_latents: Tensor, timesteps: Tensor, text_embeddings: Float[Tensor, "2 l d"]) -> Tensor:
        """Classifier-free-guided noise prediction ``eps_u + s (eps_c - eps_u)`` (float32), converted to noise for
        v-prediction UNets (:func:`~relight3d.priors.diffusion.guidance.epsilon_from`)."""
        b = noisy_latents.shape[0]
        contexts = (text_embeddings[:1].expand(b, -1, -1), text_embeddings[1:2].expand(b, -1, -1))
        guided = guided_noise(self.components.unet, noisy_latents, timesteps, self.config.guidance_scale, contexts)
        prediction_type = getattr(self.components.scheduler.config, "prediction_type", "epsilon")
        return epsilon_from(guided, noisy_latents, self.alphas_cumprod[timesteps], prediction_type)

    def sds_loss_on_latents(
        self,
        latents: Float[Tensor, "b c h w"],
        text_embeddings: Float[Tensor, "2 l d"],
        timesteps: Tensor,
        noise: Tensor,
    ) -> Dict[str, Tensor]:
        """The SDS loss of latents noised with ``noise`` at ``timesteps``, whose gradient with respect to ``latents``
        is ``w(t) (eps_hat - eps) / b`` (derivation: :func:`~relight3d.priors.diffusion.guidance.score_distillation`).

        Args:
            latents: scaled VAE latents (with gradients).
            text_embeddings: ``[negative, positive]`` embeddings (from :meth:`text_embeddings`).
            timesteps: one per latent.
            noise: the noise ``eps``, shaped like ``latents``.

        Returns:
            'loss_sds' (differentiable), and detached 'grad_norm' (``||g||`` averaged over the batch), 'timestep'
            and 'weight' (means over the batch).
        """
        b = latents.shape[0]
        timesteps = timesteps.to(self.device).long().reshape(b)
        with torch.no_grad():
            noisy = self.components.scheduler.add_noise(latents.detach().float(), noise.float(), timesteps)
            eps_hat = self.guided_noise(noisy, timesteps, text_embeddings)
        w = self.weight(timesteps)
        loss, grad = score_distillation(latents, noise, eps_hat, w)
        return {
            "loss_sds": loss,
            "grad_norm": grad.flatten(1).norm(dim=1).mean(),
            "timestep": timesteps.float().mean(),
            "weight": w.mean(),
        }

    def sds_loss(
        self,
        images: Float[Tensor, "b 3 h w"],
        text_embeddings: Float[Tensor, "2 l d"],
        timesteps: Optional[Tensor] = None,
        noise: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Dict[str, Tensor]:
        """SDS on rendered images in [0, 1]: resize to the VAE's size, encode (a posterior sample drawn with
        ``generator``), then :meth:`sds_loss_on_latents` at ``timesteps`` (default: drawn from U{min_step, max_step})
        with ``noise`` (default: standard normal), both drawn with ``generator`` after the posterior sample."""
        size = self.image_resolution
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, (size, size), mode="bilinear", align_corners=False)
        latents = self.components.encode_images(images, sample=True, generator=generator)
        if timesteps is None:
            timesteps = self.sample_timesteps(latents.shape[0], generator)
        if noise is None:
            gen_device = generator.device if generator is not None else latents.device
            noise = torch.randn(latents.shape, generator=generator, device=gen_device).to(latents.device)
        return self.sds_loss_on_latents(latents, text_embeddings, timesteps, noise)
