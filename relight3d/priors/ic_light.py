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
    guided,
    load_components,
)
from relight3d.priors.lighting_description import environment_background, lighting_preview, summarize_lighting

VARIANTS = {8: "fc", 12: "fbc"}
"""IC-Light variant by UNet input channels: foreground-conditioned, foreground-and-background-conditioned."""


@dataclass
class ICLightPriorConfig(LatentDiffusionPriorConfig):
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
    """img2img strength from the lighting preview's latent (IC-Light's 'lowres denoise'); 1: pure noise."""
    background_fov_degrees: float = 49.1
    """fbc only: field of view of the camera that sees the environment behind the object (Blender's 35 mm lens on
    a 32 mm sensor, as Neural Gaffer's rendered backgrounds)."""
    envmap_height: int = 256
    """The target map is averaged (or upsampled) to this many rows (x2 columns) before it is summarised or seen."""
    background_color: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    """Foregrounds are shown on mid grey, as IC-Light's preprocessing does."""


@dataclass
class ICLightCondition:
    """Text embeddings and the concatenated condition latents of a batch."""

    text_embeds: Float[Tensor, "b n d"]
    negative_embeds: Float[Tensor, "b n d"]
    concat_latents: Float[Tensor, "b c h w"]
    prompts: List[str]


def merge_offset(unet: Any, offset_path: Union[str, Path]) -> Any:
    """Add IC-Light's offset weights to an SD1.5 UNet (``conv_in`` widened with zeros first), as its demo does."""
    from safetensors.torch import load_file

    offset_path = Path(offset_path).expanduser()
    if not offset_path.is_file():
        raise PriorError(offset_path, "IC-Light offset weights not found")
    try:
        offset = load_file(str(offset_path))
    except Exception as err:  # noqa: BLE001 - any read failure is a bad file
        raise PriorError(offset_path, f"cannot read the offset weights ({err.__class__.__name__})") from None
    conv_in = offset.get("conv_in.weight")
    if conv_in is None or conv_in.dim() != 4 or int(conv_in.shape[1]) not in VARIANTS:
        raise PriorError(offset_path, "not IC-Light offset weights (need conv_in.weight with 8 or 12 input channels)")
    channels = int(conv_in.shape[1])
    if unet.conv_in.in_channels != channels:
        old = unet.conv_in
        new = torch.nn.Conv2d(channels, old.out_channels, old.kernel_size, old.stride, old.padding)
        with torch.no_grad():
            new.weight.zero_()
            new.weight[:, : old.in_channels].copy_(old.weight)
            new.bias.copy_(old.bias)
        unet.conv_in = new
        unet.register_to_config(in_channels=channels)
    state = unet.state_dict()
    if set(state) != set(offset) or any(state[k].shape != offset[k].shape for k in state):
        raise PriorError(offset_path, "offset weights do not match model_path's UNet (not an SD1.5 UNet?)")
    unet.load_state_dict({k: state[k] + offset[k].to(state[k].dtype) for k in state}, strict=True)
    return unet


class ICLightPrior(LatentDiffusionPrior):
    """IC-Light fc / fbc, with the lighting given as text, a lighting-preview start and (fbc) a background."""

    config: ICLightPriorConfig
    config_class: ClassVar[Type[LatentDiffusionPriorConfig]] = ICLightPriorConfig
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
        components = load_components(self.config.model_path, layout, type(self.config).__name__)
        if self.config.offset_path is not None:
            components["unet"] = merge_offset(components["unet"], self.config.offset_path)
        return components

    def check_components(self, components: Dict[str, Any]) -> None:
        unet = components["unet"]
        where: Union[str, Path] = type(self.config).__name__
        if self.config.offset_path is not None:
            where = self.config.offset_path
        elif self.config.model_path is not None:
            where = Path(self.config.model_path) / "unet"
        channels = int(unet.config.in_channels)
        if channels not in VARIANTS:
            raise PriorError(
                where,
                f"UNet takes {channels} input channels; IC-Light's takes 8 (fc: noisy + foreground latents) or 12 "
                "(fbc: + background latent); for a plain SD1.5 UNet give IC-Light's offset file as offset_path",
            )
        width = int(components["text_encoder"].config.hidden_size)
        if int(unet.config.cross_attention_dim) != width:
            raise PriorError(
                where, f"UNet cross-attention width {unet.config.cross_attention_dim} != text width {width}"
            )

    @property
    def variant(self) -> str:
        """``"fc"`` (foreground-conditioned) or ``"fbc"`` (foreground- and background-conditioned)."""
        return VARIANTS[int(self.unet.config.in_channels)]

    def prepare_envmap(self, envmap: Float[Tensor, "H W 3"]) -> Float[Tensor, "H2 W2 3"]:
        from relight3d.lighting import resize_envmap

        return resize_envmap(envmap, self.config.envmap_height, 2 * self.config.envmap_height)

    def prompts(self, cameras: Float[Tensor, "b 3 4"], target_envmap: Float[Tensor, "H W 3"]) -> List[str]:
        """The prompt for each view."""
        c = self.config
        prompts = []
        for c2w in cameras:
            text = c.prompt_template.format(
                subject=c.subject, lighting=summarize_lighting(target_envmap, c2w).describe()
            )
            prompts.append(f"{text}, {c.added_prompt}" if c.added_prompt else text)
        return prompts

    def lighting_previews(
        self, cameras: Float[Tensor, "b 3 4"], target_envmap: Float[Tensor, "H W 3"]
    ) -> Float[Tensor, "b 3 r r"]:
        """The per-view lighting previews that start :meth:`relight` (sRGB, channel first)."""
        return torch.stack([lighting_preview(target_envmap, c2w, self.resolution) for c2w in cameras]).permute(
            0, 3, 1, 2
        )

    def backgrounds(
        self, cameras: Float[Tensor, "b 3 4"], target_envmap: Float[Tensor, "H W 3"]
    ) -> Float[Tensor, "b 3 r r"]:
        """The per-view environment backgrounds of the fbc model (sRGB, channel first)."""
        fov = self.config.background_fov_degrees
        images = [environment_background(target_envmap, c2w, self.resolution, fov) for c2w in cameras]
        return torch.stack(images).permute(0, 3, 1, 2)

    def condition(
        self, replica: DeviceReplica, chunk: ViewChunk, generators: Sequence[torch.Generator]
    ) -> ICLightCondition:
        prompts = self.prompts(chunk.cameras, chunk.envmap)
        tokenizer, text_encoder = replica.components["tokenizer"], replica.components["text_encoder"]
        text = encode_prompts(tokenizer, text_encoder, prompts, replica.device)
        negative = encode_prompts(tokenizer, text_encoder, [self.config.negative_prompt] * len(prompts), replica.device)
        latents = [self.encode_images(replica, chunk.condition_images)]
        if int(replica.components["unet"].config.in_channels) == 12:
            latents.append(self.encode_images(replica, self.backgrounds(chunk.cameras, chunk.envmap)))
        return ICLightCondition(text, negative, torch.cat(latents, dim=1), prompts)

    def initial_latents(
        self, replica: DeviceReplica, chunk: ViewChunk, condition: ICLightCondition
    ) -> Optional[Tuple[Float[Tensor, "b c h w"], float]]:
        strength = float(self.config.lighting_preview_strength)
        if strength >= 1.0 or int(replica.components["unet"].config.in_channels) == 12:
            return None  # fbc starts from noise, as gradio_demo_bg.py: its background carries the light
        if strength <= 0.0:
            raise PriorError(type(self.config).__name__, "lighting_preview_strength must be in (0, 1]")
        return self.encode_images(replica, self.lighting_previews(chunk.cameras, chunk.envmap)), strength

    def steps_for(self, strength: Optional[float], from_initial_latents: bool) -> int:
        if from_initial_latents and strength is not None:  # IC-Light: int(round(steps / denoise))
            return int(round(self.config.num_inference_steps / strength))
        return self.config.num_inference_steps

    def predict_noise(
        self,
        replica: DeviceReplica,
        latents: Float[Tensor, "b c h w"],
        t: Union[int, Tensor],
        condition: ICLightCondition,
        guidance_scale: Optional[float] = None,
    ) -> Float[Tensor, "b c h w"]:
        scale = self.config.guidance_scale if guidance_scale is None else guidance_scale
        unet = replica.components["unet"]
        batch = latents.shape[0]
        concat, text = condition.concat_latents, condition.text_embeds
        if scale > 1.0:  # negative prompt first; the image conditions stay in both branches
            latents = torch.cat([latents, latents])
            concat = torch.cat([concat, concat])
            text = torch.cat([condition.negative_embeds, text])
        copies = latents.shape[0] // batch
        sample = torch.cat([latents, concat], dim=1).to(self.dtype)
        timesteps = batched_timesteps(t, batch, copies, replica.device)
        noise = unet(sample, timesteps, encoder_hidden_states=text.to(self.dtype)).sample.float()
        if copies == 1:
            return noise
        uncond, cond = noise.chunk(2)
        return guided(uncond, cond, scale)
