"""IC-Light (Zhang et al., "Imposing Consistent Light"): an adapter over its concat-conditioned SD1.5 UNet.

Reproduced from IC-Light's ``gradio_demo.py`` / ``gradio_demo_bg.py`` (tests compare it with a hand-written step and
with diffusers' ``StableDiffusionPipeline`` / ``StableDiffusionImg2ImgPipeline`` driven the way the demo drives them):

* **UNet.** An SD1.5 UNet whose ``conv_in`` takes 8 channels, the noisy latent then the foreground image's latent
  ("fc", text-conditioned model), or 12 channels, plus a background image's latent ("fbc", background-conditioned
  model). Condition latents are VAE posterior means **times** the VAE scaling factor, and they are the same in both
  guidance branches (guidance only drops the text: ``eps(neg) + s (eps(prompt) - eps(neg))``).
* **Foreground.** The object composited on mid grey (IC-Light's background-removal step does the same).
* **Weights, as released.** IC-Light publishes its UNet as an *offset* state dict (``iclight_sd15_fc.safetensors``,
  ``iclight_sd15_fbc.safetensors``), added tensor by tensor to an SD1.5 UNet whose ``conv_in`` is first widened
  with zero weights for the new channels (bias kept). The authors use **realistic-vision-v51**
  (``stablediffusionapi/realistic-vision-v51``); any SD1.5-architecture diffusers folder loads (e.g.
  ``runwayml/stable-diffusion-v1-5``, which the demo names as the alternative), but the offsets were trained on
  realistic-vision. Set ``model_path`` to that folder (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
  ``scheduler/``, networks as ``.safetensors``) and ``offset_path`` to the offset file; or point ``model_path`` at a
  folder whose ``unet/`` is already merged (``ICLightPrior.save_pretrained`` writes one). The variant (fc / fbc)
  follows from the UNet. A missing file, an offset file that is not IC-Light's, or one that does not fit the base
  UNet is a one-line :class:`~relight3d.errors.WeightsError` naming the file and the tensor or channels.

Two settings. relight3d's default (:class:`ICLightPriorConfig`): DDIM, 25 steps, CFG 2, no high-resolution pass.
The authors' (:meth:`ICLightPriorConfig.public_preset`, registered as ``ic-light-public``): the fc demo's DPM++ 2M
SDE Karras sampler built as the demo builds it, 25 steps, CFG 2, 512 px, then its high-resolution pass (x1.5,
denoise 0.5). The config class docstring says why the defaults differ.

How an HDR environment map becomes IC-Light's lighting condition, per view and relative to its camera:

* **Text.** ``prompt_template.format(subject=..., lighting=...)`` then ``", " + added_prompt`` as the demo does,
  where ``lighting`` is :meth:`~relight3d.priors.lighting_description.LightingSummary.describe`, e.g.
  ``"an object, hard warm light from the upper left, best quality"``.
* **Initial latent** (IC-Light's "lighting preference", which in the demo is a grey gradient, white on the side of
  the light, used as an img2img start with its "lowres denoise" 0.9): here the
  :func:`~relight3d.priors.lighting_description.lighting_preview` of the map (its diffuse irradiance on a
  camera-facing dome, so the light's direction *and* colour are in it), encoded by the VAE, with
  ``lighting_preview_strength`` (0.9) as the img2img strength and ``round(steps / strength)`` scheduler steps, as
  the demo does. ``lighting_preview_strength = 1`` starts from pure noise (the demo's "None"). The fbc model
  always starts from noise (as ``gradio_demo_bg.py``): its background condition carries the light.
* **Background** (fbc only): the map as seen behind the object by a pinhole camera of ``background_fov_degrees``
  (:func:`~relight3d.priors.lighting_description.environment_background`).

The high-resolution pass (``highres_pass``), as the demo's second ``i2i_pipe`` call: the first result is upscaled to
``round(resolution * highres_scale / f) * f`` px (``f`` = VAE x UNet downsampling, 64 for SD1.5), encoded (posterior
mean x scaling factor) and re-run as img2img at strength ``highres_denoise`` over ``round(steps / highres_denoise)``
steps, conditioned on the foreground at the new size, the same generators continuing. Views are then squared to the
larger side (so ``refine`` and SDS run there too) and the first pass samples at ``resolution``. Where relight3d
departs from the demo's arithmetic: resampling is antialiased bicubic on float tensors (the demo: PIL Lanczos on
8-bit images), images map to [-1, 1] as ``2x - 1`` (the demo: ``x / 127 - 1``), and prompts longer than CLIP's 75
tokens are truncated (the demo concatenates 75-token chunks); relight3d's prompts are far shorter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, Literal, Optional, Tuple, Type, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from relight3d.errors import ConfigError, WeightsError
from relight3d.priors.diffusion.components import DiffusionComponents, SamplerName, widen_conv_in
from relight3d.priors.diffusion.guidance import guided_noise
from relight3d.priors.diffusion.loading import read_weights
from relight3d.priors.diffusion.schedulers import make_scheduler
from relight3d.priors.latent_diffusion import InitialLatents, LatentDiffusionPriorConfig, ViewChunk
from relight3d.priors.lighting_description import environment_background, lighting_preview
from relight3d.priors.text_prompted import TextCondition, TextPromptedPrior, TextPromptedPriorConfig

VARIANTS = {8: "fc", 12: "fbc"}
"""IC-Light variant by UNet input channels: foreground-conditioned, foreground-and-background-conditioned."""

_DEMO_BETAS = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "steps_offset": 1}
DEMO_SCHEDULES: Dict[str, Dict[str, Any]] = {
    "ddim": {**_DEMO_BETAS, "beta_schedule": "scaled_linear", "clip_sample": False, "set_alpha_to_one": False},
    "euler-ancestral": dict(_DEMO_BETAS),
    "dpm++-2m-sde-karras": dict(_DEMO_BETAS),
}
"""The noise schedules of ``gradio_demo.py``'s three samplers, argument for argument (diffusers' defaults for the
rest; the sampler's own arguments, e.g. DPM++'s ``algorithm_type`` and Karras sigmas, come with its name). The demo
gives Euler ancestral and DPM++ no ``beta_schedule``, so they run on diffusers' default *linear* betas between
0.00085 and 0.012, not SD1.5's scaled-linear training schedule (DPM++'s largest sigma is 25.1 instead of 14.6)."""


@dataclass
class ICLightPriorConfig(TextPromptedPriorConfig):
    """IC-Light relighting: foreground latent concatenated to the UNet input, light described in text and preview.

    relight3d's defaults differ from the authors' demo (:meth:`public_preset`) in two ways. DDIM (``eta = 0``) on
    the checkpoint's own noise schedule instead of DPM++ 2M SDE Karras on the demo's linear betas: relight3d samples
    every training view in stage 1 and re-samples them when refining (SDEdit), and DDIM draws noise only once per
    view, so a view relit twice, or refined, follows the same path, while the SDE sampler draws fresh noise at every
    step; DDIM also runs on the schedule the UNet was trained with. No high-resolution pass: it re-runs 25 steps on
    2.25 times the pixels for every view (about 3.3 times the cost of a relight), and the results are resized to the
    training views' size anyway.
    """

    _target: Type = field(default_factory=lambda: ICLightPrior)
    """Prior class to instantiate."""
    model_path: Optional[Path] = None
    """SD1.5-layout folder: unet/ (a plain SD1.5 UNet with offset_path, e.g. realistic-vision-v51's; or IC-Light's
    merged 8- or 12-channel UNet), vae/, text_encoder/, tokenizer/, scheduler/."""
    offset_path: Optional[Path] = None
    """IC-Light's released offset weights (iclight_sd15_fc.safetensors or iclight_sd15_fbc.safetensors), added to
    model_path's SD1.5 UNet as the demo does; None when model_path's UNet is already IC-Light's."""
    scheduler: SamplerName = "ddim"
    """Sampler (the demo: "dpm++-2m-sde-karras"; relight3d's DDIM is deterministic per view, see the class doc)."""
    noise_schedule: Literal["checkpoint", "ic-light-demo"] = "checkpoint"
    """Betas the sampler runs on: the checkpoint's scheduler/ config, or the demo's (DEMO_SCHEDULES: for DPM++ and
    Euler ancestral diffusers' default linear betas, as gradio_demo.py builds them)."""
    num_inference_steps: int = 25
    """Sampler steps (IC-Light's demo: 25)."""
    guidance_scale: float = 2.0
    """Text guidance weight (IC-Light's fc demo: 2; its fbc demo: 7)."""
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
    highres_pass: bool = False
    """Run the demo's second, high-resolution img2img pass after relighting (off by default: see the class doc)."""
    highres_scale: float = 1.5
    """High-resolution pass: upscale factor of the first result (IC-Light's 'highres scale', 1 to 3)."""
    highres_denoise: float = 0.5
    """High-resolution pass: img2img strength, in (0, 1] (IC-Light's 'highres denoise')."""
    background_fov_degrees: float = 49.1
    """fbc only: field of view of the camera that sees the environment behind the object (Blender's 35 mm lens on
    a 32 mm sensor, as Neural Gaffer's rendered backgrounds)."""
    envmap_height: int = 256
    """The target map is averaged (or upsampled) to this many rows (x2 columns) before it is summarised or seen."""
    background_color: Tuple[float, float, float] = (0.5, 0.5, 0.5)
    """Foregrounds are shown on mid grey, as IC-Light's preprocessing does."""

    @classmethod
    def public_preset(cls) -> "ICLightPriorConfig":
        """IC-Light fc as ``gradio_demo.py`` runs it: ``DPMSolverMultistepScheduler(num_train_timesteps=1000,
        beta_start=0.00085, beta_end=0.012, algorithm_type="sde-dpmsolver++", use_karras_sigmas=True,
        steps_offset=1)``, 25 steps, CFG 2, 512 px, lowres denoise 0.9, added and negative prompts as its UI's
        defaults, then the high-resolution pass at scale 1.5 and denoise 0.5; UNet in float16 on CUDA and the VAE
        in bfloat16, as the demo places them. (The demo's default lighting preference is "None", pure noise;
        relight3d always has a light to prefer, so the preset keeps the preview start at 0.9.)"""
        return cls(
            scheduler="dpm++-2m-sde-karras", noise_schedule="ic-light-demo", num_inference_steps=25,
            guidance_scale=2.0, resolution=512, lighting_preview_strength=0.9, highres_pass=True, highres_scale=1.5,
            highres_denoise=0.5, added_prompt="best quality",
            negative_prompt="lowres, bad anatomy, bad hands, cropped, worst quality", vae_dtype="bfloat16",
        )  # fmt: skip


@dataclass
class ICLightCondition:
    """The prompts of a batch and the concatenated condition latents (foreground, + background for fbc)."""

    text: TextCondition
    concat_latents: Float[Tensor, "b c h w"]


@dataclass
class HighresChunk(ViewChunk):
    """A chunk of the high-resolution pass: its ``images`` are the first pass's results, upscaled, to start from."""


def merge_offset(unet: Any, offset_path: Union[str, Path]) -> Any:
    """Add IC-Light's offset weights to an SD1.5 UNet, as its demo does: ``conv_in`` widened with zero weights for
    the new input channels (bias kept), then ``merged[k] = base[k] + offset[k]`` for every tensor of the UNet
    (offsets cast to the base's dtype; tensors of the file that the UNet lacks are ignored, as in the demo).

    Raises:
        WeightsError: the offset file is missing or unreadable, is not IC-Light offsets, lacks a tensor of the UNet or
            has one of another shape, or the UNet is not a plain 4-channel one (one line naming the file).
    """
    offset = read_weights(offset_path, "IC-Light offset weights")
    conv_in = offset.get("conv_in.weight")
    if not isinstance(conv_in, Tensor) or conv_in.dim() != 4:
        raise WeightsError(offset_path, "not IC-Light offset weights (no 4-D conv_in.weight)")
    channels = int(conv_in.shape[1])
    if channels not in VARIANTS:
        raise WeightsError(offset_path, f"conv_in has {channels} input channels; IC-Light's have 8 (fc) or 12 (fbc)")
    if int(unet.conv_in.in_channels) != 4:
        raise WeightsError(
            offset_path,
            f"the base UNet takes {unet.conv_in.in_channels} input channels; offsets go on a plain SD1.5 UNet (4), "
            "not on a merged IC-Light one (then leave offset_path unset)",
        )
    state = widen_conv_in(unet, channels).state_dict()
    for key, value in state.items():
        if key not in offset:
            raise WeightsError(offset_path, f"lacks {key} of the base UNet (not an SD1.5-architecture offset file?)")
        if tuple(offset[key].shape) != tuple(value.shape):
            found, expected = tuple(offset[key].shape), tuple(value.shape)
            raise WeightsError(offset_path, f"{key} has shape {found}, the base UNet's is {expected} (not SD1.5?)")
    unet.load_state_dict({k: v + offset[k].to(v.dtype) for k, v in state.items()}, strict=True)
    return unet


def resample(images: Float[Tensor, "b c h w"], side: int) -> Float[Tensor, "b c side side"]:
    """Square images resized to ``side`` (antialiased bicubic, clamped to [0, 1]); unchanged at that size already."""
    if images.shape[-1] == side and images.shape[-2] == side:
        return images
    return F.interpolate(images, size=(side, side), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


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
        c, name = self.config, type(self.config).__name__
        for option in ("lighting_preview_strength", "highres_denoise"):
            if not 0.0 < getattr(c, option) <= 1.0:
                raise ConfigError(f"{name}.{option}", "must be in (0, 1]")
        if c.highres_scale <= 0.0:
            raise ConfigError(f"{name}.highres_scale", "must be positive")

    def noise_schedule(self, components: DiffusionComponents) -> Any:
        """The checkpoint's scheduler, or for ``noise_schedule="ic-light-demo"`` the demo's (:data:`DEMO_SCHEDULES`)."""
        if self.config.noise_schedule == "checkpoint":
            return components.scheduler
        option = f"{type(self.config).__name__}.noise_schedule"
        if self.config.scheduler not in DEMO_SCHEDULES:
            known = ", ".join(DEMO_SCHEDULES)
            raise ConfigError(option, f"the demo builds no {self.config.scheduler!r} sampler (it builds {known})")
        return make_scheduler(self.config.scheduler, DEMO_SCHEDULES[self.config.scheduler], option)

    @property
    def variant(self) -> str:
        """``"fc"`` (foreground-conditioned) or ``"fbc"`` (foreground- and background-conditioned)."""
        return VARIANTS[int(self.components.unet.config.in_channels)]

    @property
    def base_resolution(self) -> int:
        """Side of the square the (first) sampling pass runs at: the config's ``resolution`` or the native size."""
        return super().resolution

    @property
    def resolution(self) -> int:
        """Side of the squares views are given to the model at: with ``highres_pass``, the high-resolution pass's
        ``round(base * highres_scale / f) * f`` (``f`` = VAE x UNet downsampling, the demo's 64), else the base."""
        base = self.base_resolution
        if not self.config.highres_pass:
            return base
        parts = self.components
        factor = parts.vae_scale_factor * 2 ** (len(parts.unet.config.block_out_channels) - 1)
        return max(1, int(round(base * self.config.highres_scale / factor))) * factor

    def prepare_envmap(self, envmap: Float[Tensor, "H W 3"]) -> Float[Tensor, "H2 W2 3"]:
        from relight3d.lighting import resize_envmap

        return resize_envmap(envmap, self.config.envmap_height, 2 * self.config.envmap_height)

    def prompt_for(self, lighting: str) -> str:
        c = self.config
        text = c.prompt_template.format(subject=c.subject, lighting=lighting)
        return f"{text}, {c.added_prompt}" if c.added_prompt else text

    def lighting_previews(
        self, cameras: Float[Tensor, "b 3 4"], target_envmap: Float[Tensor, "H W 3"], size: Optional[int] = None
    ) -> Float[Tensor, "b 3 r r"]:
        """The per-view lighting previews that start :meth:`relight` (sRGB, channel first; ``size`` default: the
        base resolution)."""
        size = size or self.base_resolution
        return torch.stack([lighting_preview(target_envmap, c2w, size) for c2w in cameras]).permute(0, 3, 1, 2)

    def backgrounds(
        self, cameras: Float[Tensor, "b 3 4"], target_envmap: Float[Tensor, "H W 3"], size: Optional[int] = None
    ) -> Float[Tensor, "b 3 r r"]:
        """The per-view environment backgrounds of the fbc model (sRGB, channel first; ``size`` as above)."""
        size, fov = size or self.base_resolution, self.config.background_fov_degrees
        images = [environment_background(target_envmap, c2w, size, fov) for c2w in cameras]
        return torch.stack(images).permute(0, 3, 1, 2)

    def condition(self, replica: DiffusionComponents, chunk: ViewChunk) -> ICLightCondition:
        latents = [replica.encode_images(chunk.condition_images)]
        if self.variant == "fbc":
            views = chunk.views
            backgrounds = self.backgrounds(views.cameras, views.target_envmap, chunk.condition_images.shape[-1])
            latents.append(replica.encode_images(backgrounds))
        return ICLightCondition(self.text_condition(replica, chunk), torch.cat(latents, dim=1))

    def initial_latents(
        self, replica: DiffusionComponents, chunk: ViewChunk, condition: ICLightCondition
    ) -> InitialLatents:
        """The lighting preview's latent at ``lighting_preview_strength`` of ``round(steps / strength)`` steps (the
        demo's rule); fbc starts from noise, as ``gradio_demo_bg.py``: its background carries the light. The
        high-resolution pass starts from its chunk's images at ``highres_denoise``, by the same rule."""
        steps = self.config.num_inference_steps
        if isinstance(chunk, HighresChunk):
            strength = float(self.config.highres_denoise)
            return replica.encode_images(chunk.images), strength, int(round(steps / strength))
        strength = float(self.config.lighting_preview_strength)
        if strength >= 1.0 or self.variant == "fbc":
            return None
        size = chunk.images.shape[-1]
        previews = self.lighting_previews(chunk.views.cameras, chunk.views.target_envmap, size)
        return replica.encode_images(previews), strength, int(round(steps / strength))

    def sample_chunk(
        self, replica: DiffusionComponents, chunk: ViewChunk, t_star: Optional[float]
    ) -> Float[Tensor, "b 3 r r"]:
        """As the base class; with ``highres_pass``, relighting samples at the base resolution first, then runs the
        high-resolution pass (see the module docstring) on the upscaled result."""
        if t_star is not None or not self.config.highres_pass:
            return super().sample_chunk(replica, chunk, t_star)
        base = self.base_resolution
        low = ViewChunk(chunk.views, resample(chunk.images, base), resample(chunk.condition_images, base))
        first = super().sample_chunk(replica, low, None)
        upscaled = resample(first, chunk.images.shape[-1])
        return super().sample_chunk(replica, HighresChunk(chunk.views, upscaled, chunk.condition_images), None)

    def predict_noise(
        self, replica: DiffusionComponents, latents: Tensor, t: Union[int, Tensor], condition: ICLightCondition,
        scale: float,
    ) -> Float[Tensor, "b c h w"]:  # fmt: skip
        """Negative prompt first; the image conditions are the same in both branches (only the text is dropped)."""
        text, concat = condition.text, condition.concat_latents
        contexts = (text.negative_embeds, text.text_embeds)
        return guided_noise(replica.unet, latents, t, scale, contexts, (concat, concat))
