"""IC-Light (Zhang et al., "Imposing Consistent Light"): an adapter over its concat-conditioned SD1.5 UNet.

Reproduced from IC-Light's ``gradio_demo.py`` / ``gradio_demo_bg.py`` (tests compare the sampling with diffusers'
``StableDiffusionPipeline`` / ``StableDiffusionImg2ImgPipeline`` driven the way those demos drive them):

* **UNet.** An SD1.5 UNet whose ``conv_in`` takes 8 channels, the noisy latent and the foreground image's latent
  ("fc", text-conditioned model), or 12 channels, plus a background image's latent ("fbc", background-conditioned
  model). Condition latents are VAE posterior means **times** the VAE scaling factor, and they are the same in both
  guidance branches (guidance only drops the text: ``eps(neg) + s (eps(prompt) - eps(neg))``, default ``s = 2``).
* **Foreground.** The object composited on mid grey (IC-Light's background-removal step does the same).
* **Weights.** IC-Light releases its UNet as an *offset* state dict (``iclight_sd15_fc.safetensors``,
  ``iclight_sd15_fbc.safetensors``) to add to an SD1.5 UNet after widening ``conv_in`` with zero weights for the
  new channels. Set ``model_path`` to the SD1.5 folder (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
  ``scheduler/``) and ``offset_path`` to the offset file; or point ``model_path`` at a folder whose ``unet/`` is
  already merged (``ICLightPrior.save_pretrained`` writes one). The variant (fc / fbc) follows from the UNet.

How an HDR environment map becomes IC-Light's lighting condition, per view and relative to its camera:

* **Text.** ``prompt_template.format(subject=..., lighting=...)`` then ``", " + added_prompt`` as the demo does,
  where ``lighting`` is :meth:`~relight3d.priors.lighting_description.LightingSummary.describe`, e.g.
  ``"an object, hard warm light from the upper left, best quality"``.
* **Initial latent** (IC-Light's "lighting preference", which in the demo is a grey gradient, white on the side of
  the light, used as an img2img start with denoising strength 0.9): here the
  :func:`~relight3d.priors.lighting_description.lighting_preview` of the map (its diffuse irradiance on a
  camera-facing dome, so the light's direction *and* colour are in it), encoded by the VAE, with
  ``lighting_preview_strength`` (0.9) as the img2img strength and ``round(steps / strength)`` scheduler steps, as
  the demo does. ``lighting_preview_strength = 1`` starts from pure noise (the demo's "None"). The fbc model
  always starts from noise (as ``gradio_demo_bg.py``): its background condition carries the light.
* **Background** (fbc only): the map as seen behind the object by a pinhole camera of ``background_fov_degrees``
  (:func:`~relight3d.priors.lighting_description.environment_background`).

The demo's second, high-resolution img2img pass is not part of the prior (run ``refine`` at a larger
``resolution`` for that).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional, Tuple, Type, Union

import torch
from jaxtyping import Float
from torch import Tensor

from relight3d.errors import ConfigError, WeightsError
from relight3d.priors.diffusion.components import DiffusionComponents, widen_conv_in
from relight3d.priors.diffusion.guidance import guided_noise
from relight3d.priors.diffusion.loading import read_weights
from relight3d.priors.latent_diffusion import InitialLatents, LatentDiffusionPriorConfig, ViewChunk
from relight3d.priors.lighting_description import environment_background, lighting_preview
from relight3d.priors.text_prompted import TextCondition, TextPromptedPrior, TextPromptedPriorConfig

VARIANTS = {8: "fc", 12: "fbc"}
"""IC-Light variant by UNet input channels: foreground-conditioned, foreground-and-background-conditioned."""


@dataclass
class ICLightPriorConfig(TextPromptedPriorConfig):
    """IC-Light relighting: foreground latent concatenated to the UNet input, light described in text and preview."""

    _target: Type = field(default_factory=lambda: ICLightPrior)
    """Prior class to instantiate."""
    model_path: Optional[Path] = None
    """SD1.5-layout folder: unet/ (IC-Light's 8- or 12-channel UNet, or a plain SD1.5 UNet with offset_path), vae/,
    text_encoder/, tokenizer/, scheduler/."""
    offset_path: Optional[Path] = None
    """IC-Light's released offset weights (iclight_sd15_fc.safetensors or iclight_sd15_fbc.safetensors), added to
    model_path's SD1.5 UNet; None when model_path's UNet is already IC-Light's."""
    num_inference_steps: int = 25
    """DDIM steps (IC-Light's demo: 25)."""
    guidance_scale: float = 2.0
    """Text guidance weight (IC-Light's demo: 2)."""
    subject: str = "an object"
    """What the image shows, for the prompt."""
    prompt_template: str = "{subject}, {lighting}"
    """Prompt; ``{subject}`` and ``{lighting}`` (the per-view light description) are filled in."""
    added_prompt: str = "best quality"
    """Appended to every prompt after a comma (IC-Light's 'added prompt'); empty for none."""
    negative_prompt: str = "lowres, bad anatomy, bad hands, cropped, worst quality"
    """Text of the unconditional branch (IC-Light's default)."""
    lighting_preview_strength: float = 0.9
    """img2img strength from the lighting preview's latent (IC-Light's 'lowres denoise'), in (0, 1]; 1: pure noise."""
    background_fov_degrees: float = 49.1
    """fbc only: field of view of the camera that sees the environment behind the object (Blender's 35 mm lens on
    a 32 mm sensor, as Neural Gaffer's rendered backgrounds)."""
    envmap_height: int = 256
    """The target map is averaged (or upsampled) to this many rows (x2 columns) before it is summarised or seen."""
    background_color: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    """Foregrounds are shown on mid grey, as IC-Light's preprocessing does."""


@dataclass
class ICLightCondition:
    """The prompts of a batch and the concatenated condition latents (foreground, + background for fbc)."""

    text: TextCondition
    concat_latents: Float[Tensor, "b c h w"]


def merge_offset(unet: Any, offset_path: Union[str, Path]) -> Any:
    """Add IC-Light's offset weights to an SD1.5 UNet (``conv_in`` widened with zeros first), as its demo does.

    Raises:
        WeightsError: the offset file is missing, unreadable, or not IC-Light offsets for this UNet.
    """
    offset = read_weights(offset_path, "IC-Light offset weights")
    conv_in = offset.get("conv_in.weight")
    if not isinstance(conv_in, Tensor) or conv_in.dim() != 4 or int(conv_in.shape[1]) not in VARIANTS:
        raise WeightsError(offset_path, "not IC-Light offset weights (need conv_in.weight with 8 or 12 input channels)")
    state = widen_conv_in(unet, int(conv_in.shape[1])).state_dict()
    if set(state) != set(offset) or any(state[k].shape != offset[k].shape for k in state):
        raise WeightsError(offset_path, "offset weights do not match model_path's UNet (not an SD1.5 UNet?)")
    unet.load_state_dict({k: state[k] + offset[k].to(state[k].dtype) for k in state}, strict=True)
    return unet


class ICLightPrior(TextPromptedPrior):
    """IC-Light fc / fbc, with the lighting given as text, a lighting-preview start and (fbc) a background."""

    config: ICLightPriorConfig
    config_class: ClassVar[Type[LatentDiffusionPriorConfig]] = ICLightPriorConfig
    unet_weights_field: ClassVar[Optional[str]] = "offset_path"
    merge_unet_weights = staticmethod(merge_offset)

    def check_components(self, components: DiffusionComponents) -> None:
        problem = (
            "IC-Light's takes 8 (fc: noisy + foreground latents) or 12 (fbc: + background latent); for a plain SD1.5 "
            "UNet give IC-Light's offset file as offset_path"
        )
        components.check_unet(self.unet_source, tuple(VARIANTS), problem)
        if not 0.0 < self.config.lighting_preview_strength <= 1.0:
            raise ConfigError("ICLightPriorConfig.lighting_preview_strength", "must be in (0, 1]")

    @property
    def variant(self) -> str:
        """``"fc"`` (foreground-conditioned) or ``"fbc"`` (foreground- and background-conditioned)."""
        return VARIANTS[int(self.components.unet.config.in_channels)]

    def prepare_envmap(self, envmap: Float[Tensor, "H W 3"]) -> Float[Tensor, "H2 W2 3"]:
        from relight3d.lighting import resize_envmap

        return resize_envmap(envmap, self.config.envmap_height, 2 * self.config.envmap_height)

    def prompt_for(self, lighting: str) -> str:
        c = self.config
        text = c.prompt_template.format(subject=c.subject, lighting=lighting)
        return f"{text}, {c.added_prompt}" if c.added_prompt else text

    def lighting_previews(
        self, cameras: Float[Tensor, "b 3 4"], target_envmap: Float[Tensor, "H W 3"]
    ) -> Float[Tensor, "b 3 r r"]:
        """The per-view lighting previews that start :meth:`relight` (sRGB, channel first)."""
        previews = [lighting_preview(target_envmap, c2w, self.resolution) for c2w in cameras]
        return torch.stack(previews).permute(0, 3, 1, 2)

    def backgrounds(
        self, cameras: Float[Tensor, "b 3 4"], target_envmap: Float[Tensor, "H W 3"]
    ) -> Float[Tensor, "b 3 r r"]:
        """The per-view environment backgrounds of the fbc model (sRGB, channel first)."""
        fov = self.config.background_fov_degrees
        images = [environment_background(target_envmap, c2w, self.resolution, fov) for c2w in cameras]
        return torch.stack(images).permute(0, 3, 1, 2)

    def condition(self, replica: DiffusionComponents, chunk: ViewChunk) -> ICLightCondition:
        latents = [replica.encode_images(chunk.condition_images)]
        if self.variant == "fbc":
            latents.append(replica.encode_images(self.backgrounds(chunk.views.cameras, chunk.views.target_envmap)))
        return ICLightCondition(self.text_condition(replica, chunk), torch.cat(latents, dim=1))

    def initial_latents(
        self, replica: DiffusionComponents, chunk: ViewChunk, condition: ICLightCondition
    ) -> InitialLatents:
        """The lighting preview's latent at ``lighting_preview_strength`` of ``round(steps / strength)`` steps (the
        demo's rule); fbc starts from noise, as ``gradio_demo_bg.py``: its background carries the light."""
        strength = float(self.config.lighting_preview_strength)
        if strength >= 1.0 or self.variant == "fbc":
            return None
        start = replica.encode_images(self.lighting_previews(chunk.views.cameras, chunk.views.target_envmap))
        return start, strength, int(round(self.config.num_inference_steps / strength))

    def predict_noise(
        self, replica: DiffusionComponents, latents: Tensor, t: Union[int, Tensor], condition: ICLightCondition,
        scale: float,
    ) -> Float[Tensor, "b c h w"]:  # fmt: skip
        """Negative prompt first; the image conditions are the same in both branches (only the text is dropped)."""
        text, concat = condition.text, condition.concat_latents
        contexts = (text.negative_embeds, text.text_embeds)
        return guided_noise(replica.unet, latents, t, scale, contexts, (concat, concat))
