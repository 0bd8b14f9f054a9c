"""Tiny, randomly initialised diffusion models for tests and weight-free benchmarks (no weights, no network).

The one home of relight3d's tiny models: the prior tests, the score-distillation tests and the SDS speed check
build theirs here. Same architecture families as the real models, at a tiny cost (sizes follow diffusers' fast
tests, made smaller): a two-level UNet with cross-attention (sample size 8), a two-level KL-VAE (2x downsampling,
so images are 16 px), one-layer CLIP text / image encoders of width 32, and a byte-level CLIP tokenizer (the 256
byte symbols with and without the end-of-word mark, no merges: any text tokenizes, one token per character) with
CLIP's 77 positions. Their predictions are meaningless; they exercise every code path.

Example:
    >>> components = tiny_components(TEXT_PARTS, in_channels=8)  # an InstructPix2Pix-shaped model
    >>> folder = components.save_pretrained(tmp_path / "ip2p")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, List, Sequence

import torch

from relight3d.priors.diffusion.components import TEXT_PARTS, DiffusionComponents

RESOLUTION = 16
"""Native image size of the tiny models: UNet sample size 8 x VAE factor 2."""
WIDTH = 32
"""Cross-attention width: the text encoder's hidden size and the image encoder's projection."""
MAX_LENGTH = 77
"""Token positions of the tiny text encoder and tokenizer (CLIP's)."""


def tiny_unet(in_channels: int = 4, cross_attention_dim: int = WIDTH) -> Any:
    """A two-level ``UNet2DConditionModel`` (16 / 32 channels) taking ``in_channels`` (noisy + condition latents)."""
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
    ).eval()


def tiny_vae() -> Any:
    """A two-level ``AutoencoderKL`` with 4 latent channels and 2x downsampling."""
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
    ).eval()


def tiny_scheduler() -> Any:
    """A DDIM scheduler on Stable Diffusion's training noise schedule (scaled-linear betas, 1000 steps)."""
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


def _byte_symbols() -> List[str]:
    """The 256 printable symbols that byte-level BPE (GPT-2 / CLIP) uses for the 256 byte values."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def tiny_tokenizer(max_length: int = MAX_LENGTH) -> Any:
    """A byte-level CLIP tokenizer without merges (ids 0 and 1 are the start and end tokens), built offline."""
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    names = ["<|startoftext|>", "<|endoftext|>", *symbols, *(s + "</w>" for s in symbols)]
    return CLIPTokenizer(vocab={s: i for i, s in enumerate(names)}, merges=[], model_max_length=max_length)


def clip_text_encoder(
    vocab_size: int,
    width: int = WIDTH,
    layers: int = 1,
    heads: int = 4,
    intermediate: int = 37,
    max_length: int = MAX_LENGTH,
) -> Any:
    """A randomly initialised ``CLIPTextModel``: one layer of width :data:`WIDTH` by default (tests); the weight-free
    speed benchmark builds CLIP ViT-L's (768 wide, 12 layers, 12 heads, 3072) with the same function."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=max_length,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return CLIPTextModel(config).eval()


def clip_image_encoder(
    width: int = 16,
    layers: int = 1,
    heads: int = 2,
    intermediate: int = 32,
    image_size: int = RESOLUTION,
    patch_size: int = 8,
    projection_dim: int = WIDTH,
) -> Any:
    """A randomly initialised ``CLIPVisionModelWithProjection``: one layer on 16 px images with 8 px patches,
    projecting to :data:`WIDTH`, by default (tests); the speed benchmark builds CLIP ViT-L/14's with it."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=projection_dim,
    )
    return CLIPVisionModelWithProjection(config).eval()


def tiny_components(parts: Sequence[str] = TEXT_PARTS, in_channels: int = 4, seed: int = 0) -> DiffusionComponents:
    """A tiny model with ``parts`` (:data:`TEXT_PARTS` or :data:`IMAGE_PARTS`), its UNet taking ``in_channels``;
    the same ``seed`` gives the same weights.

    ``tiny_components()`` is a tiny Stable Diffusion; ``tiny_components(TEXT_PARTS, 8)`` an InstructPix2Pix or
    IC-Light fc, ``(TEXT_PARTS, 12)`` an IC-Light fbc, ``(IMAGE_PARTS, 16)`` a Neural Gaffer.
    """
    torch.manual_seed(seed)
    found = {"unet": tiny_unet(in_channels), "vae": tiny_vae(), "scheduler": tiny_scheduler()}
    if "tokenizer" in parts or "text_encoder" in parts:
        found["tokenizer"] = tiny_tokenizer()
        found["text_encoder"] = clip_text_encoder(len(found["tokenizer"]))
    if "image_encoder" in parts:
        found["image_encoder"] = clip_image_encoder()
    return DiffusionComponents(**found)
