"""Helpers for the prior tests: tiny random models with the architectures of the relighting priors, saved in the
diffusers layout, and small views / cameras / environment maps to feed them.

Sizes follow diffusers' fast tests, made smaller: 2-level UNets and VAEs with 8-32 channels, one layer per block,
16 px images (latents of 8 x 8), one-layer CLIP encoders and a tokenizer built offline from a tiny vocabulary.
(A module of its own, not conftest.py, so that ``from prior_fixtures import ...`` cannot pick up another
directory's conftest.)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict

import torch

RESOLUTION = 16
"""Native resolution of the tiny models: UNet sample size 8 x VAE factor 2."""
CROSS_ATTENTION_DIM = 16


def tiny_unet(in_channels: int, cross_attention_dim: int = CROSS_ATTENTION_DIM):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=RESOLUTION // 2,
        in_channels=in_channels,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=RESOLUTION,
    )


def tiny_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def tiny_image_encoder():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=16,
        patch_size=8,
        projection_dim=CROSS_ATTENTION_DIM,
    )
    return CLIPVisionModelWithProjection(config).eval()


def tiny_text_encoder(vocab_size: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=CROSS_ATTENTION_DIM,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=32,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return CLIPTextModel(config).eval()


def tiny_tokenizer():
    """A CLIP BPE tokenizer over single characters and a few merges, built offline."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    symbols = list("abcdefghijklmnopqrstuvwxyz,.")
    for s in symbols:
        vocab[s] = len(vocab)
    for s in symbols:
        vocab[s + "</w>"] = len(vocab)
    merges = [("l", "i"), ("g", "h"), ("gh", "t</w>"), ("li", "ght</w>")]
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=32)


def save_components(folder: Path, **components: Any) -> Path:
    """Write each component with its own ``save_pretrained`` into ``folder/<name>`` (the diffusers layout)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, component in components.items():
        component.save_pretrained(folder / name)
    return folder


def neural_gaffer_components(in_channels: int = 16) -> Dict[str, Any]:
    torch.manual_seed(0)
    return {
        "unet": tiny_unet(in_channels),
        "vae": tiny_vae(),
        "image_encoder": tiny_image_encoder(),
        "scheduler": tiny_scheduler(),
    }


def text_prior_components(in_channels: int) -> Dict[str, Any]:
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    return {
        "unet": tiny_unet(in_channels),
        "vae": tiny_vae(),
        "text_encoder": tiny_text_encoder(len(tokenizer)),
        "tokenizer": tokenizer,
        "scheduler": tiny_scheduler(),
    }


def look_at(eye, target=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """Blender/OpenGL camera-to-world [3, 4] at ``eye`` looking at ``target``, world Z up."""
    eye = torch.as_tensor(eye, dtype=torch.float32)
    forward = torch.nn.functional.normalize(torch.as_tensor(target, dtype=torch.float32) - eye, dim=0)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0])), dim=0)
    up = torch.linalg.cross(right, forward)
    return torch.cat([torch.stack([right, up, -forward], dim=1), eye[:, None]], dim=1)


def orbit_cameras(n: int, radius: float = 3.0, height: float = 1.0) -> torch.Tensor:
    """``n`` cameras on a circle around the origin, looking at it: [n, 3, 4]."""
    return torch.stack(
        [
            look_at((radius * math.cos(a), radius * math.sin(a), height))
            for a in torch.linspace(0, 2 * math.pi, n + 1)[:-1]
        ]
    )


def sun_envmap(
    direction, height: int = 16, sun: float = 20.0, sky: float = 0.2, colour=(1.0, 0.9, 0.8)
) -> torch.Tensor:
    """A dim uniform sky plus a bright disc (about 25 degrees wide) towards world ``direction``: [h, 2h, 3]."""
    from relight3d.lighting import envmap_directions

    d = torch.nn.functional.normalize(torch.as_tensor(direction, dtype=torch.float32), dim=0)
    disc = (envmap_directions(height, 2 * height) @ d > math.cos(math.radians(25))).float()[..., None]
    return sky + sun * disc * torch.tensor(colour)


def disc_views(n: int, height: int = 20, width: int = 24, seed: int = 1):
    """``n`` views of a coloured, shaded disc on white: images [n, h, w, 3] and masks [n, h, w, 1]."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    mask = ((x / 0.8) ** 2 + (y / 0.7) ** 2 < 1.0).float()[..., None]
    colours = torch.rand(n, 1, 1, 3, generator=g) * 0.6 + 0.2
    shading = (0.6 + 0.4 * x)[None, ..., None]
    images = (colours * shading).clamp(0, 1) * mask + (1 - mask)
    return images, mask.expand(n, height, width, 1).contiguous()
