"""Neural Gaffer (Jin et al., NeurIPS 2024): relighting by an environment-map-conditioned diffusion model.

The model is a Zero123-style latent diffusion model (its code is built on Zero123-HF), reproduced here from the
authors' ``pipeline_neural_gaffer.py``, ``neural_gaffer_inference_*.py`` and their dataset / preprocessing code:

* **UNet.** A diffusers ``UNet2DConditionModel`` whose ``conv_in`` takes 16 channels, concatenated in this order:
  the noisy latent (4), the input image's latent (4), the HDR-encoded map's latent (4) and the LDR-encoded map's
  latent (4) (their pipeline's ``first_target_envir_map`` is the HDR image, ``second_`` the LDR one). The three
  condition latents come from images in [-1, 1], **not** multiplied by the VAE scaling factor (as Zero123); the
  denoised latent is (it is decoded after dividing by the factor).
* **Image embedding.** The input image, bicubically resized to the CLIP size (``align_corners=True``, no
  antialiasing, OpenAI's preprocessing), normalised with CLIP's mean/std, through ``CLIPVisionModelWithProjection``:
  its projected ``image_embeds`` are the UNet's cross-attention context as a sequence of length 1. Neural Gaffer
  uses no pose and no CC projection (unlike Zero123).
* **Lighting.** Per view, the target map is expressed in the camera's frame
  (:func:`relight3d.lighting.rotate_envmap_to_camera`), encoded as LDR ``clip(E, 0, 1) ** (1/2.2)`` and HDR
  ``log1p(10 E) / max``, truncated to 8 bits (their preprocessing writes 8-bit images) and resized to the model's
  square resolution (a 256 x 512 map becomes 256 x 256). ``lighting_images`` picks the arithmetic: relight3d's
  (torch on the prior's device, pixel-centred lookups, float resize) or the public code's bit for bit (see
  :func:`encode_lighting_images`).
* **Guidance.** Classifier-free guidance (default 3) with *every* condition zeroed in the unconditional branch:
  the image embedding and all three condition latents; unconditional branch first.
* **Sampling.** DDIM (``steps_offset = 1`` and no sample clipping, which their pipeline forces), 50 steps, 256 px,
  objects composited on white.

Public preset (:meth:`NeuralGafferPriorConfig.public_preset`, registered as ``neural-gaffer-public``): the inference
scripts' behaviour. Where relight3d's defaults differ, and why:

* Map size: their scripts rotate the map at the size it is given (their data had been resized to 256 rows by
  skylibs beforehand); relight3d first averages it to ``envmap_height`` rows on the sphere (power-preserving, as
  the physical prior and the shaders do; ``envmap_resize="skylibs"`` averages on the image as they did).
* Lookup: their ``grid_sample(align_corners=True)`` is up to half a pixel off Blender's pixel centres and does not
  wrap at the seam; relight3d keeps the convention its shading is tested with against Cycles.
* Arithmetic: the public path runs numpy and PIL on the CPU; relight3d's runs in torch on the prior's device.
* Condition latents: their scripts pass one generator per image, which makes their pipeline *sample* the condition
  latents from the VAE posterior (with one generator it takes the mean); relight3d takes the mean
  (``sample_condition_latents``), so the conditioning of a view does not depend on the noise.
* Seeds: their scripts seed every image's generator with the same seed (42), so every view starts from the same
  noise; relight3d gives each view its own stream (``shared_view_seed``).

Checkpoints. ``model_path`` is a diffusers-layout folder with ``unet/`` (16 input channels), ``vae/``,
``image_encoder/`` and ``scheduler/`` (other folders, e.g. ``feature_extractor/`` or Zero123's ``cc_projection/``, are
ignored). The authors release their UNet as an ``accelerate`` training checkpoint (``neural_gaffer_res256_ckpt.zip``
unzips to ``logs/neural_gaffer_res256/checkpoint-<step>/``, whose ``model.safetensors`` or ``pytorch_model.bin`` is
the UNet's state dict) on top of the Zero123-XL diffusers folder (``kxic/zero123-xl``, an 8-channel UNet): set
``model_path`` to the Zero123-XL folder and ``unet_checkpoint`` to the checkpoint folder, or to the folder holding
the ``checkpoint-<step>`` folders (the latest is used, as their ``--resume_from_checkpoint latest``); ``conv_in``
is widened from 8 to 16 channels and the weights are loaded, as their scripts do.
``NeuralGafferPrior.save_pretrained(folder)`` then writes a self-contained folder for ``model_path``.

Not reproduced: their input images are 8-bit PNGs resized by PIL, relight3d conditions on the views as given
(composited and squared in torch); their fp16 autocast casts the [-1, 1] images to float16 before the
``* 2 - 1``-equivalent normalisation (relight3d normalises in float32); their CUDA generators (relight3d draws noise
on the CPU, so results do not depend on the device); their 3D stage-2 code (:mod:`relight3d.pipelines`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Tuple, Type, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from relight3d.errors import WeightsError
from relight3d.priors.base import PriorViews
from relight3d.priors.diffusion.components import IMAGE_PARTS, DiffusionComponents, widen_conv_in
from relight3d.priors.diffusion.guidance import guided_noise
from relight3d.priors.diffusion.loading import load_component, read_weights
from relight3d.priors.latent_diffusion import LatentDiffusionPrior, LatentDiffusionPriorConfig, ViewChunk

UNET_IN_CHANNELS = 16
"""Noisy latent + input-image latent + HDR-map latent + LDR-map latent."""

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
"""OpenAI CLIP's normalisation mean (Neural Gaffer's ``CLIP_preprocess``)."""
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""OpenAI CLIP's normalisation standard deviation."""

CHECKPOINT_FILES = (
    "model.safetensors",
    "diffusion_pytorch_model.safetensors",
    "pytorch_model.bin",
    "diffusion_pytorch_model.bin",
)
"""Where an accelerate checkpoint folder keeps the UNet's state dict (the first one found is read)."""

LightingImages = Literal["relight3d", "public"]
"""How the lighting images are computed (see :func:`encode_lighting_images`)."""


@dataclass
class NeuralGafferPriorConfig(LatentDiffusionPriorConfig):
    """Neural Gaffer: relighting conditioned on the target environment map rotated into each camera's frame."""

    _target: Type = field(default_factory=lambda: NeuralGafferPrior)
    """Prior class to instantiate."""
    model_path: Optional[Path] = None
    """Diffusers-layout folder with unet/ (16 input channels), vae/, image_encoder/, scheduler/; or the Zero123-XL
    base folder when ``unet_checkpoint`` is given."""
    unet_checkpoint: Optional[Path] = None
    """Neural Gaffer's accelerate checkpoint (a checkpoint-<step> folder with model.safetensors / pytorch_model.bin
    or a unet/ subfolder, a weight file, or the folder of checkpoint-<step> folders: the latest is used) whose UNet
    replaces model_path's; None when model_path already holds the 16-channel UNet."""
    resolution: Optional[int] = None
    """Square side the model works at; None: native (256 for the released model)."""
    num_inference_steps: int = 50
    """DDIM steps (Neural Gaffer: 50)."""
    guidance_scale: float = 3.0
    """Classifier-free guidance weight (Neural Gaffer: 3)."""
    envmap_height: Optional[int] = 256
    """The target map is resized to this many rows (x2 columns) before rotation; None: used at its own size (as
    Neural Gaffer's inference scripts do)."""
    envmap_resize: Literal["sphere", "skylibs"] = "sphere"
    """How the map is resized to envmap_height: averaged on the sphere (solid-angle weights), or on the image as
    skylibs' EnvironmentMap.resize does (how Neural Gaffer's data was resized to 256 rows)."""
    lighting_images: LightingImages = "relight3d"
    """relight3d: torch on the prior's device (pixel-centred lookups wrapping at the seam, 8-bit truncation when
    quantize_lighting, antialiased float resize); public: Neural Gaffer's preprocessing bit for bit on the CPU
    (grid_sample with align_corners=True, numpy float32 encodings, uint8 truncation, PIL bilinear resize)."""
    quantize_lighting: bool = True
    """relight3d lighting images: truncate the encodings to 8 bits, as Neural Gaffer's preprocessing does (it saves
    them as 8-bit images). The public lighting images always are."""
    sample_condition_latents: bool = False
    """Sample the condition latents from the VAE posterior (after each view's initial noise, from its generator), as
    the official scripts do as a side effect of passing per-image generators, instead of taking its mean."""
    shared_view_seed: bool = False
    """Seed every view's generator alike (with the call's int seed, else seed) so that all views start from the same
    noise, as Neural Gaffer's inference scripts do (manual_seed(42) per image); False: each view its own stream."""
    background_color: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Objects are shown to the model on white, as in its training renders."""

    @classmethod
    def public_preset(cls) -> "NeuralGafferPriorConfig":
        """Neural Gaffer's released inference (``neural_gaffer_inference_*.py`` with ``pipeline_neural_gaffer.py``):
        DDIM, 50 steps, guidance 3, the native 256 px, the map used at its own size with the public lighting-image
        arithmetic, condition latents sampled after the noise, and every view seeded with 42."""
        return cls(
            num_inference_steps=50,
            guidance_scale=3.0,
            scheduler="ddim",
            eta=0.0,
            resolution=None,
            envmap_height=None,
            envmap_resize="skylibs",
            lighting_images="public",
            sample_condition_latents=True,
            shared_view_seed=True,
            seed=42,
        )


@dataclass
class NeuralGafferCondition:
    """Conditioning of a batch: CLIP image embeddings and the three concatenated condition latents."""

    image_embeds: Float[Tensor, "b 1 d"]
    """Projected CLIP embeddings of the condition images, a sequence of length 1."""
    concat_latents: Float[Tensor, "b 12 h w"]
    """Unscaled VAE latents of the condition image, the HDR image and the LDR image, in this order."""


def encode_lighting_images(
    envmap: Float[Tensor, "H W 3"],
    cameras: Float[Tensor, "b 3 4"],
    size: int,
    quantize: bool = True,
    method: LightingImages = "relight3d",
) -> Tuple[Float[Tensor, "b 3 size size"], Float[Tensor, "b 3 size size"]]:
    """Neural Gaffer's HDR and LDR lighting images of each view (in [0, 1], channel first, ``size x size``).

    ``method="relight3d"``: the map rotated into each camera's frame with pixel-centred lookups, the torch encodings
    (:func:`~relight3d.lighting.hdr_encoding`, :func:`~relight3d.lighting.ldr_encoding`), truncated to 8 bits when
    ``quantize``, and resized with antialiased bilinear filtering, all on the map's device.

    ``method="public"``: Neural Gaffer's ``rotate_and_preprcess_envir_map`` and image transforms bit for bit, on the
    CPU: the rotation with ``grid_sample(align_corners=True)``, the numpy float32 encodings truncated to ``uint8``
    (:func:`~relight3d.lighting.encodings.lighting_images_8bit`), PIL's bilinear resize of the 8-bit images
    (:func:`~relight3d.lighting.encodings.resize_8bit_bilinear`) and ``ToTensor``'s ``/ 255``.
    """
    from relight3d.lighting import hdr_encoding, ldr_encoding, rotate_envmap_to_camera

    if method == "public":
        from relight3d.lighting.encodings import lighting_images_8bit, resize_8bit_bilinear

        world = envmap.detach().to("cpu", torch.float32)
        hdr_views, ldr_views = [], []
        for c2w in cameras:
            ldr8, hdr8 = lighting_images_8bit(rotate_envmap_to_camera(world, c2w, sampling="align-corners"))
            hdr_views.append(resize_8bit_bilinear(hdr8, size, size))
            ldr_views.append(resize_8bit_bilinear(ldr8, size, size))

        def to_tensor(views: list) -> Tensor:  # torchvision's ToTensor: uint8 -> float32 / 255
            return (torch.stack(views).permute(0, 3, 1, 2).to(torch.float32) / 255.0).to(envmap.device)

        return to_tensor(hdr_views), to_tensor(ldr_views)
    if method != "relight3d":
        raise ValueError(f"unknown lighting-image method {method!r} (relight3d or public)")
    local = torch.stack([rotate_envmap_to_camera(envmap, c2w) for c2w in cameras])
    hdr = hdr_encoding(local)
    ldr = ldr_encoding(local)
    if quantize:  # numpy's uint8 cast of x * 255 truncates
        hdr = torch.floor(hdr * 255.0) / 255.0
        ldr = torch.floor(ldr * 255.0) / 255.0

    def to_model(x: Tensor) -> Tensor:
        x = x.permute(0, 3, 1, 2)
        return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)

    return to_model(hdr), to_model(ldr)


def latest_checkpoint(folder: Path) -> Optional[Path]:
    """The ``checkpoint-<step>`` subfolder of ``folder`` with the largest step (what Neural Gaffer's
    ``--resume_from_checkpoint latest`` loads), or None when there is none."""
    steps = [(int(m.group(1)), p) for p in folder.iterdir() if (m := re.fullmatch(r"checkpoint-(\d+)", p.name))]
    return max(steps)[1] if steps else None


def load_unet_checkpoint(unet: Any, checkpoint: Union[str, Path]) -> Any:
    """Load Neural Gaffer's UNet weights from an accelerate checkpoint into the base (Zero123-XL) ``unet``.

    ``checkpoint`` is a weight file, a ``checkpoint-<step>`` folder (its ``model.safetensors`` or
    ``pytorch_model.bin``, or a diffusers ``unet/`` subfolder, loaded as is), or a folder of ``checkpoint-<step>``
    folders (the latest is used). ``conv_in`` is widened to 16 channels first, as the official scripts do with the
    8-channel Zero123 UNet; ``module.`` prefixes (saved from DDP) are dropped.

    Raises:
        WeightsError: one line naming the missing file, or the first tensor whose shape does not fit (e.g.
            ``conv_in expects 16 input channels, model.safetensors has 8``).
    """
    from diffusers import UNet2DConditionModel

    checkpoint = Path(checkpoint).expanduser()
    if not checkpoint.exists():
        raise WeightsError(checkpoint, "unet_checkpoint not found")
    if checkpoint.is_dir() and not any((checkpoint / n).exists() for n in (*CHECKPOINT_FILES, "unet")):
        checkpoint = latest_checkpoint(checkpoint) or checkpoint
    if checkpoint.is_dir() and (checkpoint / "unet").is_dir():
        return load_component(UNet2DConditionModel, checkpoint, "unet")
    weights = checkpoint
    if checkpoint.is_dir():
        found = [checkpoint / name for name in CHECKPOINT_FILES if (checkpoint / name).is_file()]
        if not found:
            expected = ", ".join(CHECKPOINT_FILES)
            raise WeightsError(checkpoint, f"missing the UNet's weights ({expected}, unet/ or checkpoint-<step>/)")
        weights = found[0]
    state = read_weights(weights, "UNet weights")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, Tensor)}
    conv_in = state.get("conv_in.weight")
    if conv_in is None or conv_in.dim() != 4:
        raise WeightsError(weights, "holds no UNet weights (no 4-D conv_in.weight)")
    if int(conv_in.shape[1]) != UNET_IN_CHANNELS:
        raise WeightsError(
            weights, f"conv_in expects {UNET_IN_CHANNELS} input channels, {weights.name} has {conv_in.shape[1]}"
        )
    expected = widen_conv_in(unet, UNET_IN_CHANNELS).state_dict()
    for key, value in state.items():
        if key in expected and expected[key].shape != value.shape:
            raise WeightsError(
                weights,
                f"{key} has shape {tuple(value.shape)}, the base UNet's is {tuple(expected[key].shape)} "
                "(is model_path Zero123-XL's diffusers folder?)",
            )
    missing, unexpected = unet.load_state_dict(state, strict=False)
    if missing or unexpected:
        names = [*(f"missing {k}" for k in missing), *(f"unexpected {k}" for k in unexpected)]
        raise WeightsError(
            weights, f"does not fit the base UNet: {len(missing)} missing, {len(unexpected)} unexpected ({names[0]})"
        )
    return unet


class NeuralGafferPrior(LatentDiffusionPrior):
    """Neural Gaffer's relighting diffusion model (see the module docstring for the exact conditioning)."""

    config: NeuralGafferPriorConfig
    config_class: ClassVar[Type[LatentDiffusionPriorConfig]] = NeuralGafferPriorConfig
    component_names: ClassVar[Tuple[str, ...]] = IMAGE_PARTS
    unet_weights_field: ClassVar[Optional[str]] = "unet_checkpoint"
    merge_unet_weights = staticmethod(load_unet_checkpoint)

    def check_components(self, components: DiffusionComponents) -> None:
        problem = f"Neural Gaffer's takes {UNET_IN_CHANNELS} (noisy, image, HDR-map and LDR-map latents)"
        if int(components.unet.config.in_channels) == 8:
            problem += " (a Zero123 base? pass Neural Gaffer's checkpoint as unet_checkpoint)"
        components.check_unet(self.unet_source, (UNET_IN_CHANNELS,), problem)

    def noise_schedule(self, components: DiffusionComponents) -> Any:
        """The checkpoint's schedule with ``steps_offset = 1``, which Neural Gaffer's pipeline forces whatever the
        checkpoint says (its ``clip_sample = False`` is relight3d's DDIM default)."""
        schedule = components.scheduler
        return type(schedule).from_config({**schedule.config, "steps_offset": 1})

    def prepare_envmap(self, envmap: Float[Tensor, "H W 3"]) -> Float[Tensor, "H2 W2 3"]:
        from relight3d.lighting import resize_envmap

        height = self.config.envmap_height
        if height is None:
            return envmap
        return resize_envmap(envmap, height, 2 * height, method=self.config.envmap_resize)

    def relight_views(self, views: PriorViews) -> Float[Tensor, "b h w 3"]:
        return super().relight_views(self.seeded(views))

    def refine_views(self, views: PriorViews, t_star: float) -> Float[Tensor, "b h w 3"]:
        return super().refine_views(self.seeded(views), t_star)

    def seeded(self, views: PriorViews) -> PriorViews:
        """With ``shared_view_seed``, the views with one generator per view, all seeded with the call's int seed (else
        the config's); generator objects given by the caller are kept."""
        if not self.config.shared_view_seed or not (views.generator is None or isinstance(views.generator, int)):
            return views
        seed = self.config.seed if views.generator is None else int(views.generator)
        return replace(views, generator=[torch.Generator().manual_seed(seed) for _ in range(views.batch_size)])

    def clip_embeddings(self, replica: DiffusionComponents, images: Float[Tensor, "b 3 r r"]) -> Float[Tensor, "b 1 d"]:
        """Projected CLIP image embeddings of sRGB images in [0, 1], as a length-1 sequence."""
        encoder = replica.image_encoder
        size = int(encoder.config.image_size)
        x = F.interpolate(images * 2.0 - 1.0, size=(size, size), mode="bicubic", align_corners=True)
        x = ((x + 1.0) / 2.0 - x.new_tensor(CLIP_MEAN).view(1, 3, 1, 1)) / x.new_tensor(CLIP_STD).view(1, 3, 1, 1)
        return encoder(pixel_values=x.to(encoder.dtype)).image_embeds.float().unsqueeze(1)

    def condition(self, replica: DiffusionComponents, chunk: ViewChunk) -> NeuralGafferCondition:
        views, sample = chunk.views, self.config.sample_condition_latents
        settings = self.config
        hdr, ldr = encode_lighting_images(
            views.target_envmap, views.cameras, self.resolution, settings.quantize_lighting, settings.lighting_images
        )
        latents = [replica.encode_images(x, False, sample, views.generator) for x in (chunk.condition_images, hdr, ldr)]
        return NeuralGafferCondition(self.clip_embeddings(replica, chunk.condition_images), torch.cat(latents, dim=1))

    def predict_noise(
        self, replica: DiffusionComponents, latents: Tensor, t: Union[int, Tensor], condition: NeuralGafferCondition,
        scale: float,
    ) -> Float[Tensor, "b c h w"]:  # fmt: skip
        """Unconditional branch first, with every condition zeroed (Neural Gaffer's pipeline)."""
        embeds, concat = condition.image_embeds, condition.concat_latents
        contexts = (torch.zeros_like(embeds), embeds)
        return guided_noise(replica.unet, latents, t, scale, contexts, (torch.zeros_like(concat), concat))
