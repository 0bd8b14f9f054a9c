"""Single-image textual inversion with heavy augmentation (RealFusion's first step).

A new token (e.g. ``_cup_``) is added to Stable Diffusion's tokenizer; only its embedding is trained, with the usual
denoising loss, on heavily augmented copies of the one input image (random rotation, scale and shift, colour
jitter, grayscale, blur, flips) captioned by object templates ("a photo of a _cup_", ...). The result,
``learned_embeds.safetensors`` (``{token: vector}``), is what ``--pipeline.guidance.learned-embeds-path`` of
``relight3d-sds`` reads.

Precision. The frozen UNet and VAE run in ``dtype`` (float16 on CUDA by default, as diffusers' textual-inversion
example with ``--mixed_precision fp16``); the text encoder, its embedding table and the optimizer stay float32. The
embedding's gradient still flows back through the float16 UNet, where values below float16's smallest subnormal
(6e-8) become zero: the loss is scaled up before the backward pass and the gradient unscaled in float32 before the
step (a :class:`torch.amp.GradScaler`, which also skips a step whose gradient overflowed), as accelerate does for
fp16. bfloat16 has float32's exponent range and needs no scaling.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Literal, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from PIL import Image
from torch import Tensor

from relight3d.errors import DataError, reading
from relight3d.priors.diffusion.components import DiffusionComponents
from relight3d.priors.diffusion.loading import resolve_torch_dtype
from relight3d.priors.diffusion.prompts import add_placeholder_token, encode_prompts, save_learned_embeds
from relight3d.priors.stable_diffusion import load_stable_diffusion

OBJECT_TEMPLATES: Tuple[str, ...] = (
    "a photo of a {}",
    "a rendering of a {}",
    "a cropped photo of the {}",
    "a close-up photo of a {}",
    "a bright photo of the {}",
    "a dark photo of the {}",
    "a good photo of the {}",
    "a photo of one {}",
    "a photo of a small {}",
    "a photo of the large {}",
    "a clean photo of a {}",
    "an image of the {}",
)
"""Captions of the training images; ``{}`` is the placeholder token."""


@dataclass
class TextualInversionConfig:
    """Single-image textual inversion (defaults: RealFusion's textual-inversion command)."""

    image: Path = Path("rgba.png")
    """The input image (RGBA: the object over a transparent background is composited on white; RGB is used as is)."""
    pretrained_model_path: Path = Path("stable-diffusion")
    """Local Stable Diffusion folder in the diffusers layout (the same one relight3d-sds uses)."""
    output_dir: Path = Path("textual_inversion")
    """Folder that receives learned_embeds.safetensors."""
    placeholder_token: str = "_object_"
    """The new token; it must not be in the tokenizer's vocabulary yet."""
    initializer_token: str = "object"
    """An existing single-token word whose embedding initialises the new token (e.g. 'cup')."""
    max_steps: int = 3000
    """Optimisation steps."""
    learning_rate: float = 5e-4
    """Adam learning rate (before scaling)."""
    scale_lr: bool = True
    """Multiply the learning rate by batch_size x gradient_accumulation_steps."""
    batch_size: int = 1
    """Images per forward pass."""
    gradient_accumulation_steps: int = 4
    """Forward passes per optimisation step."""
    resolution: Optional[int] = None
    """Training image size; None uses the UNet's training size (512 for SD 1.5)."""
    augment: bool = True
    """Heavy augmentation (RealFusion): rotation, scale, shift, colour jitter, grayscale, blur, flips."""
    seed: int = 0
    """Random seed."""
    device: Optional[str] = None
    """'cuda' or 'cpu'; None picks CUDA when available."""
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    """Precision of the frozen UNet and VAE: auto = float16 on CUDA, float32 elsewhere (the text encoder and the
    learned embedding are always float32; float16 scales the loss so that small gradients do not underflow)."""
    log_every: int = 100
    """Steps between progress reports."""
    templates: Tuple[str, ...] = field(default_factory=lambda: OBJECT_TEMPLATES)
    """Caption templates; '{}' is replaced by the placeholder token."""


@dataclass
class TextualInversionResult:
    """What :func:`train_textual_inversion` produced."""

    embeddings_path: Path
    """The written learned_embeds.safetensors."""
    token: str
    """The learned token."""
    losses: List[float]
    """Denoising loss per optimisation step."""


def load_object_image(path: Path, resolution: int) -> Float[Tensor, "3 h w"]:
    """The image in [0, 1], RGBA composited on white, padded (white) to a centred square and resized."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "image file not found")
    with reading(path, "an image"), Image.open(path) as im:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    rgb = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
    h, w = rgb.shape[:2]
    side = max(h, w)
    canvas = np.ones((side, side, 3), np.float32)
    canvas[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = rgb
    image = torch.from_numpy(canvas).permute(2, 0, 1)[None]
    return F.interpolate(image, (resolution, resolution), mode="bicubic", align_corners=False)[0].clamp(0.0, 1.0)


def heavy_augmentation() -> Callable[[Tensor], Tensor]:
    """RealFusion-style augmentation of a ``[3, h, w]`` image in [0, 1] (white fill outside the image)."""
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.RandomApply([v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.85, 1.15), fill=1.0)], 0.75),
            v2.RandomApply([v2.ColorJitter(0.04, 0.04, 0.04, 0.04)], p=0.75),
            v2.RandomGrayscale(p=0.10),
            v2.RandomApply([v2.GaussianBlur(5, (0.1, 2.0))], p=0.10),
            v2.RandomHorizontalFlip(),
        ]
    )


def train_textual_inversion(
    config: TextualInversionConfig,
    components: Optional[DiffusionComponents] = None,
    log: Optional[Callable[[str], None]] = None,
) -> TextualInversionResult:
    """Learn an embedding for ``config.placeholder_token`` from one image; writes learned_embeds.safetensors.

    Args:
        config: settings.
        components: Stable Diffusion components (tests pass tiny ones); loaded from
            ``config.pretrained_model_path`` when None. Their tokenizer and text encoder are modified.
        log: called with progress lines (e.g. ``print``).
    """
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    half = resolve_torch_dtype(config.dtype, device, "TextualInversionConfig.dtype")
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    load_object_image(config.image, 8)  # bad input fails before Stable Diffusion loads
    if components is None:
        components = load_stable_diffusion(config.pretrained_model_path, "--model")
    unet, vae, text_encoder, tokenizer = components.unet, components.vae, components.text_encoder, components.tokenizer
    scheduler = components.scheduler
    unet.to(device, half).requires_grad_(False).eval()
    vae.to(device, half).requires_grad_(False).eval()
    text_encoder.to(device, torch.float32).requires_grad_(False)
    resolution = config.resolution or components.native_resolution
    image = load_object_image(config.image, resolution).to(device)
    augment = heavy_augmentation() if config.augment else (lambda x: x)

    token_id = add_placeholder_token(tokenizer, text_encoder, config.placeholder_token, config.initializer_token)
    embedding = text_encoder.get_input_embeddings()
    embedding.weight.requires_grad_(True)
    text_encoder.train()  # dropout is off in CLIP's config; train mode changes nothing else
    original = embedding.weight.detach().clone()
    keep = torch.ones(original.shape[0], dtype=torch.bool, device=original.device)
    keep[token_id] = False
    lr = config.learning_rate
    if config.scale_lr:
        lr *= config.batch_size * config.gradient_accumulation_steps
    optimizer = torch.optim.AdamW([embedding.weight], lr=lr, weight_decay=1e-2)
    scaler = torch.amp.GradScaler(device.type, enabled=half == torch.float16)  # see the module docstring
    alphas = scheduler.alphas_cumprod.to(device)
    n_train_steps = alphas.shape[0]
    prediction_type = getattr(scheduler.config, "prediction_type", "epsilon")

    losses: List[float] = []
    for step in range(config.max_steps):
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for _ in range(config.gradient_accumulation_steps):
            images = torch.stack([augment(image) for _ in range(config.batch_size)])
            prompts = [random.choice(config.templates).format(config.placeholder_token) for _ in images]
            with torch.no_grad():
                latents = components.encode_images(images.to(half), sample=True)
            noise = torch.randn(latents.shape, generator=generator).to(device)
            t = torch.randint(0, n_train_steps, (latents.shape[0],), generator=generator).to(device)
            a = alphas[t].view(-1, 1, 1, 1)
            noisy = a.sqrt() * latents + (1.0 - a).sqrt() * noise
            if prediction_type == "v_prediction":
                target = a.sqrt() * noise - (1.0 - a).sqrt() * latents
            else:
                target = noise
            context = encode_prompts(tokenizer, text_encoder, prompts, device)
            pred = unet(noisy.to(half), t, encoder_hidden_states=context.to(half)).sample
            loss = F.mse_loss(pred.float(), target) / config.gradient_accumulation_steps
            scaler.scale(loss).backward()
            step_loss += float(loss.detach())
        scaler.step(optimizer)  # unscales the float32 gradient first; skips the step if it is not finite
        scaler.update()
        with torch.no_grad():  # only the new token's row may change
            embedding.weight[keep] = original[keep]
        losses.append(step_loss)
        if log is not None and (step % max(config.log_every, 1) == 0 or step == config.max_steps - 1):
            log(f"textual inversion: step {step + 1}/{config.max_steps}, loss {step_loss:.4f}")
        if not math.isfinite(step_loss):
            raise FloatingPointError(f"textual inversion: the loss became {step_loss} at step {step}")
    embedding.weight.requires_grad_(False)
    text_encoder.eval()
    path = save_learned_embeds(
        Path(config.output_dir) / "learned_embeds.safetensors", config.placeholder_token, embedding.weight[token_id]
    )
    return TextualInversionResult(embeddings_path=path, token=config.placeholder_token, losses=losses)
