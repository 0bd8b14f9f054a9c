"""Neural Gaffer (Jin et al., NeurIPS 2024): relighting by an environment-map-conditioned diffusion model.

The model is a Zero123-style latent diffusion model (its code is built on Zero123-HF), reproduced here from the
authors' ``pipeline_neural_gaffer.py``, ``neural_gaffer_inference_*.py`` and ``zero123_relighting_utils.py``:

* **UNet.** A diffusers ``UNet2DConditionModel`` whose ``conv_in`` takes 16 channels, concatenated in this order:
  the noisy latent (4), the input image's latent (4), the HDR-encoded map's latent (4) and the LDR-encoded map's
  latent (4). The three condition latents are the VAE posterior *mean* of images in [-1, 1], **not** multiplied by
  the VAE scaling factor (as Zero123); the denoised latent is (it is decoded after dividing by the factor).
* **Image embedding.** The input image, bicubically resized to the CLIP size (``align_corners=True``, no
  antialiasing, OpenAI's preprocessing), normalised with CLIP's mean/std, through ``CLIPVisionModelWithProjection``:
  its projected ``image_embeds`` are the UNet's cross-attention context as a sequence of length 1. Neural Gaffer
  uses no pose and no CC projection (unlike Zero123).
* **Lighting.** Per view, the target map is expressed in the camera's frame
  (:func:`relight3d.lighting.rotate_envmap_to_camera`, Neural Gaffer's axis convention), encoded with
  :func:`~relight3d.lighting.ldr_encoding` (``clip(E, 0, 1) ** (1/2.2)``) and
  :func:`~relight3d.lighting.hdr_encoding` (``log1p(10 E) / max``), quantised to 8 bits (their preprocessing
  writes 8-bit images; ``quantize_lighting``) and resized as images to the model's square resolution (their
  256 x 512 maps become 256 x 256). Maps are first averaged down to ``envmap_height`` rows (their data used
  256-row maps).
* **Guidance.** Classifier-free guidance (default 3) with *every* condition zeroed in the unconditional branch:
  the image embedding and all three condition latents.
* **Sampling.** DDIM, 50 steps, 256 px, objects composited on white.

Checkpoints. ``model_path`` is a diffusers-layout folder with ``unet/`` (16 input channels), ``vae/``,
``image_encoder/`` and ``scheduler/`` (``feature_extractor/`` may be present; it is not used since the CLIP
preprocessing is done in torch as above). The authors release their UNet as an ``accelerate`` training checkpoint
(``logs/neural_gaffer_res256/checkpoint-80000``, a ``model.safetensors`` or ``pytorch_model.bin`` state dict) on
top of the Zero123-XL diffusers pipeline: set ``model_path`` to the Zero123-XL folder and ``unet_checkpoint`` to that
checkpoint folder; the UNet's ``conv_in`` is widened from 8 to 16 channels and the weights are loaded, as their
scripts do. ``NeuralGafferPrior.save_pretrained(folder)`` then writes a self-contained folder for ``model_path``.

Known differences from the public code: the official inference passes one generator per image, which makes its
pipeline *sample* the condition latents from the VAE posterior (``sample_condition_latents=True`` reproduces
that); its map rotation samples with ``align_corners=True`` (half a pixel away from the Blender pixel centres used
here); and its 3D stage-2 code feeds [0, 1] images to a CLIP preprocessing that expects [-1, 1] (not reproduced).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional, Tuple, Type, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from relight3d.errors import WeightsError
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


@dataclass
class NeuralGafferPriorConfig(LatentDiffusionPriorConfig):
    """Neural Gaffer: relighting conditioned on the target environment map rotated into each camera's frame."""

    _target: Type = field(default_factory=lambda: NeuralGafferPrior)
    """Prior class to instantiate."""
    model_path: Optional[Path] = None
    """Diffusers-layout folder with unet/ (16 input channels), vae/, image_encoder/, scheduler/; or the Zero123-XL
    base folder when ``unet_checkpoint`` is given."""
    unet_checkpoint: Optional[Path] = None
    """Neural Gaffer's accelerate checkpoint folder (model.safetensors / pytorch_model.bin, or a unet/ subfolder)
    whose UNet replaces model_path's; None when model_path already holds the 16-channel UNet."""
    resolution: Optional[int] = None
    """Square side the model works at; None: native (256 for the released model)."""
    num_inference_steps: int = 50
    """DDIM steps (Neural Gaffer: 50)."""
    guidance_scale: float = 3.0
    """Classifier-free guidance weight (Neural Gaffer: 3)."""
    envmap_height: int = 256
    """The target map is averaged (or upsampled) to this many rows (x2 columns) before rotation and encoding."""
    quantize_lighting: bool = True
    """Quantise the encoded maps to 8 bits as Neural Gaffer's preprocessing does (it saves them as 8-bit images)."""
    sample_condition_latents: bool = False
    """Sample the condition latents from the VAE posterior (the official scripts do, as a side effect of passing
    per-image generators) instead of taking its mean."""
    background_color: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Objects are shown to the model on white, as in its training renders."""


@dataclass
class NeuralGafferCondition:
    """Conditioning of a batch: CLIP image embeddings and the three concatenated condition latents."""

    image_embeds: Float[Tensor, "b 1 d"]
    concat_latents: Float[Tensor, "b 12 h w"]


def encode_lighting_images(
    envmap: Float[Tensor, "H W 3"],
    cameras: Float[Tensor, "b 3 4"],
    size: int,
    quantize: bool = True,
) -> Tuple[Float[Tensor, "b 3 size size"], Float[Tensor, "b 3 size size"]]:
    """Neural Gaffer's HDR and LDR lighting images of each view (in [0, 1], channel first, ``size x size``)."""
    from relight3d.lighting import hdr_encoding, ldr_encoding, rotate_envmap_to_camera

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


def load_unet_checkpoint(unet: Any, checkpoint: Union[str, Path]) -> Any:
    """Load Neural Gaffer's UNet weights from an accelerate checkpoint (folder or weight file) into ``unet``.

    ``conv_in`` is widened to the checkpoint's input channels first (as the official scripts do with the 8-channel
    Zero123 UNet). A folder may also hold a diffusers ``unet/`` subfolder, which is loaded as is.

    Raises:
        WeightsError: no weights where expected, unreadable weights, or weights that do not fit ``unet``.
    """
    from diffusers import UNet2DConditionModel

    checkpoint = Path(checkpoint).expanduser()
    if checkpoint.is_dir() and (checkpoint / "unet").is_dir():
        return load_component(UNet2DConditionModel, checkpoint, "unet")
    weights = checkpoint
    if checkpoint.is_dir():
        found = [checkpoint / name for name in CHECKPOINT_FILES if (checkpoint / name).is_file()]
        if not found:
            raise WeightsError(checkpoint, f"no UNet weights ({', '.join(CHECKPOINT_FILES)} or unet/)")
        weights = found[0]
    state = read_weights(weights, "UNet weights")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    conv_in = state.get("conv_in.weight")
    if not isinstance(conv_in, Tensor) or conv_in.dim() != 4:
        raise WeightsError(weights, "holds no UNet weights (no conv_in.weight)")
    missing, unexpected = widen_conv_in(unet, int(conv_in.shape[1])).load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WeightsError(
            weights,
            f"does not fit the base UNet ({len(missing)} missing, {len(unexpected)} unexpected keys, "
            f"e.g. {(list(missing) + list(unexpected))[:2]})",
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
        hint = " (a Zero123 base? pass Neural Gaffer's checkpoint as unet_checkpoint)"
        problem = f"Neural Gaffer's takes {UNET_IN_CHANNELS} (noisy, image, HDR-map and LDR-map latents)"
        if int(components.unet.config.in_channels) == 8:
            problem += hint
        components.check_unet(self.unet_source, (UNET_IN_CHANNELS,), problem)

    def prepare_envmap(self, envmap: Float[Tensor, "H W 3"]) -> Float[Tensor, "H2 W2 3"]:
        from relight3d.lighting import resize_envmap

        return resize_envmap(envmap, self.config.envmap_height, 2 * self.config.envmap_height)

    def clip_embeddings(self, replica: DiffusionComponents, images: Float[Tensor, "b 3 r r"]) -> Float[Tensor, "b 1 d"]:
        """Projected CLIP image embeddings of sRGB images in [0, 1], as a length-1 sequence."""
        encoder = replica.image_encoder
        size = int(encoder.config.image_size)
        x = F.interpolate(images * 2.0 - 1.0, size=(size, size), mode="bicubic", align_corners=True)
        x = ((x + 1.0) / 2.0 - x.new_tensor(CLIP_MEAN).view(1, 3, 1, 1)) / x.new_tensor(CLIP_STD).view(1, 3, 1, 1)
        return encoder(pixel_values=x.to(encoder.dtype)).image_embeds.float().unsqueeze(1)

    def condition(self, replica: DiffusionComponents, chunk: ViewChunk) -> NeuralGafferCondition:
        views, sample = chunk.views, self.config.sample_condition_latents
        hdr, ldr = encode_lighting_images(
            views.target_envmap, views.cameras, self.resolution, quantize=self.config.quantize_lighting
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
