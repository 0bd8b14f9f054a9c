"""Text prompts: CLIP prompt embeddings, and learned (textual-inversion) tokens added to a tokenizer.

A learned-token file (``learned_embeds.safetensors``, or RealFusion's ``learned_embeds.bin``) is a dict from token
to vector; :func:`add_learned_tokens` adds its tokens to a tokenizer and text encoder, and ``<token>`` in a prompt
stands for its token (:func:`substitute_token`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from relight3d.errors import ConfigError, WeightsError
from relight3d.priors.diffusion.loading import read_weights

TOKEN_PLACEHOLDER = "<token>"
"""Stands, in prompts, for the token of the learned embedding."""


def encode_prompts(
    tokenizer: Any, text_encoder: Any, prompts: Sequence[str], device: Optional[torch.device] = None
) -> Float[Tensor, "b n d"]:
    """CLIP text embeddings (last hidden state, float32) of prompts padded to the tokenizer's maximum length, as
    diffusers' Stable Diffusion pipelines compute them. Differentiable in the text encoder's weights."""
    device = text_encoder.device if device is None else device
    tokens = tokenizer(
        list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    attention_mask = None
    if getattr(text_encoder.config, "use_attention_mask", False):
        attention_mask = tokens.attention_mask.to(device)
    return text_encoder(tokens.input_ids.to(device), attention_mask=attention_mask)[0].float()


def read_learned_embeds(path: Path) -> Dict[str, Float[Tensor, " d"]]:
    """Read a learned-token file: ``{token: vector}``; vectors of shape ``[1, d]`` are flattened.

    Raises:
        WeightsError: missing or unreadable file, or contents that are not a dict of token -> vector.
    """
    data = read_weights(path, "learned embeddings")
    if not isinstance(data, dict) or not data:
        raise WeightsError(path, "learned embeddings must be a non-empty dict of token -> vector")
    out = {}
    for token, vec in data.items():
        if not isinstance(token, str) or not isinstance(vec, Tensor) or vec.dim() not in (1, 2):
            raise WeightsError(path, f"entry {token!r} is not a token -> vector pair")
        if vec.dim() == 2 and vec.shape[0] != 1:
            raise WeightsError(path, f"entry {token!r} has shape {tuple(vec.shape)}; one vector per token is expected")
        out[token] = vec.reshape(-1).float()
    return out


def add_learned_tokens(path: Path, tokenizer: Any, text_encoder: Any) -> List[str]:
    """Add the tokens of a learned-embeddings file to ``tokenizer`` and ``text_encoder``; returns the tokens.

    A token the tokenizer already knows (e.g. a checkpoint saved after textual inversion) gets its embedding
    overwritten.

    Raises:
        WeightsError: unreadable file, or vectors whose size differs from the text encoder's embedding size.
    """
    embeds = read_learned_embeds(path)
    dim = text_encoder.get_input_embeddings().weight.shape[1]
    for token, vec in embeds.items():
        if vec.numel() != dim:
            raise WeightsError(
                path,
                f"embedding for {token!r} has dimension {vec.numel()} but the text encoder expects {dim} "
                "(was it learned with another Stable Diffusion version?)",
            )
    tokenizer.add_tokens(list(embeds))
    if len(tokenizer) > text_encoder.get_input_embeddings().weight.shape[0]:
        text_encoder.resize_token_embeddings(len(tokenizer))
    table = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        for token, vec in embeds.items():
            table[tokenizer.convert_tokens_to_ids(token)] = vec.to(table)
    return list(embeds)


def substitute_token(prompt: str, tokens: List[str], source: Path, option: str = "prompt") -> str:
    """Replace ``<token>`` in ``prompt`` with the learned token of ``source``; the prompt must name a learned token.

    Raises:
        ConfigError: (naming ``option``) the prompt contains neither ``<token>`` nor a learned token, or it contains
            ``<token>`` while ``source`` holds several tokens.
    """
    if TOKEN_PLACEHOLDER in prompt:
        if len(tokens) != 1:
            raise ConfigError(option, f"{source} holds {len(tokens)} tokens {tokens}; write one of them, not <token>")
        return prompt.replace(TOKEN_PLACEHOLDER, tokens[0])
    if not any(token in prompt for token in tokens):
        raise ConfigError(
            option,
            f"the prompt {prompt!r} contains neither <token> nor the learned token {tokens[0]!r} of {source}: "
            "write <token> where the object is named",
        )
    return prompt


def add_placeholder_token(tokenizer: Any, text_encoder: Any, placeholder: str, initializer: str) -> int:
    """Add ``placeholder`` to the tokenizer, initialised with ``initializer``'s embedding; returns its id.

    Raises:
        ConfigError: the placeholder already exists (``--token``), or the initializer is not a single token
            (``--init-token``).
    """
    init_ids = tokenizer.encode(initializer, add_special_tokens=False)
    if len(init_ids) != 1:
        raise ConfigError(
            "--init-token", f"{initializer!r} is {len(init_ids)} tokens for this tokenizer; choose a single-token word"
        )
    if tokenizer.add_tokens([placeholder]) != 1:
        raise ConfigError("--token", f"{placeholder!r} is already in the tokenizer's vocabulary; choose a new string")
    text_encoder.resize_token_embeddings(len(tokenizer))
    token_id = tokenizer.convert_tokens_to_ids(placeholder)
    table = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        table[token_id] = table[init_ids[0]]
    return token_id


def save_learned_embeds(path: Path, token: str, vector: Tensor) -> Path:
    """Write ``{token: vector}`` as safetensors (float32, on the CPU)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({token: vector.detach().float().cpu().contiguous()}, str(path))
    return path
