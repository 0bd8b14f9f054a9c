"""Stable Diffusion as a score-distillation prior (DreamFusion's SDS, with RealFusion's learned-token prompts).

The components (UNet, VAE, CLIP text encoder and tokenizer, noise scheduler) load from a local folder in the diffusers
layout (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``) named in the config; nothing is
downloaded. Components can also be passed in directly, which is how the tests use tiny random models.

A textual-inversion embedding (``learned_embeds.safetensors`` or RealFusion's ``learned_embeds.bin``: a dict from
token to vector) adds its token to the tokenizer and text encoder; ``<token>`` in a prompt stands for it.

Heavy imports (diffusers, transformers) happen inside functions: importing this module is cheap.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Type

import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor

from relight3d.data.errors import DataError

TOKEN_PLACEHOLDER = "<token>"
"""Stands, in prompts, for the token of the learned embedding."""

COMPONENT_FOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
"""Sub-folders of a Stable Diffusion checkpoint in the diffusers layout."""

VIEW_DIRECTIONS = ("front", "side", "back", "overhead", "bottom")
"""View names appended to the prompt by view-dependent prompting ("<prompt>, <name> view")."""


# --- components ---------------------------------------------------------------------------------------------------
@dataclass
class StableDiffusionComponents:
    """The parts of Stable Diffusion that score distillation and textual inversion use."""

    unet: Any
    """``diffusers.UNet2DConditionModel``: predicts the noise of a noisy latent given text embeddings."""
    vae: Any
    """``diffusers.AutoencoderKL``: images <-> latents."""
    text_encoder: Any
    """``transformers.CLIPTextModel``: token ids -> per-token embeddings."""
    tokenizer: Any
    """``transformers.CLIPTokenizer``."""
    scheduler: Any
    """A diffusers noise scheduler with ``alphas_cumprod`` and ``add_noise`` (DDPM / DDIM / PNDM ...)."""

    @classmethod
    def from_pretrained(cls, path: Path, torch_dtype: Optional[torch.dtype] = None) -> StableDiffusionComponents:
        """Load every component from a local folder in the diffusers layout (never from the network).

        Raises:
            DataError: the folder does not exist or lacks a component sub-folder.
        """
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        path = Path(path)
        if not path.is_dir():
            raise DataError(path, "Stable Diffusion folder not found (a local folder in the diffusers layout)")
        missing = [name for name in COMPONENT_FOLDERS if not (path / name).is_dir()]
        if missing:
            folders = ", ".join(name + "/" for name in missing)
            raise DataError(path, f"not a Stable Diffusion folder in the diffusers layout: missing {folders}")
        kwargs: Dict[str, Any] = {"local_files_only": True, "low_cpu_mem_usage": False}
        if torch_dtype is not None:
            kwargs["torch_dtype"] = torch_dtype
        return cls(
            unet=UNet2DConditionModel.from_pretrained(path, subfolder="unet", **kwargs),
            vae=AutoencoderKL.from_pretrained(path, subfolder="vae", **kwargs),
            # Loaded in float32 (transformers names its dtype argument differently across versions); cast by .to().
            text_encoder=CLIPTextModel.from_pretrained(path, subfolder="text_encoder", local_files_only=True),
            tokenizer=CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", local_files_only=True),
            # Only the training noise schedule is used, which every diffusers scheduler config describes.
            scheduler=DDPMScheduler.from_pretrained(path, subfolder="scheduler", local_files_only=True),
        )

    def save_pretrained(self, path: Path) -> Path:
        """Write every component into ``path`` in the diffusers layout; returns ``path``."""
        path = Path(path)
        for name in COMPONENT_FOLDERS:
            getattr(self, name).save_pretrained(path / name)
        return path

    def to(self, device: torch.device | str, dtype: Optional[torch.dtype] = None) -> StableDiffusionComponents:
        """Move the three networks to ``device`` (and ``dtype``), in place; returns self."""
        for net in (self.unet, self.vae, self.text_encoder):
            net.to(device)
            if dtype is not None and net.dtype != dtype:
                net.to(dtype=dtype)
        return self

    @property
    def vae_scale_factor(self) -> int:
        """Image pixels per latent pixel."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def image_resolution(self) -> int:
        """The image size the UNet was trained at (e.g. 512 for Stable Diffusion 1.5)."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    def encode_images(self, images: Float[Tensor, "b 3 h w"], generator: Optional[torch.Generator] = None) -> Tensor:
        """Images in [0, 1] -> scaled VAE latents (a sample of the posterior), differentiable in ``images``."""
        posterior = self.vae.encode(images.to(self.vae.dtype) * 2.0 - 1.0).latent_dist
        return posterior.sample(generator=generator) * self.vae.config.scaling_factor

    @torch.no_grad()
    def decode_latents(self, latents: Tensor) -> Float[Tensor, "b 3 h w"]:
        """Scaled latents -> images in [0, 1]."""
        images = self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor).sample
        return (images.float() * 0.5 + 0.5).clamp(0.0, 1.0)

    @torch.no_grad()
    def encode_text(self, prompts: List[str]) -> Float[Tensor, "b l d"]:
        """Per-token CLIP embeddings of prompts (padded to the tokenizer's maximum length)."""
        ids = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return self.text_encoder(ids.to(self.text_encoder.device))[0]


def _byte_symbols() -> List[str]:
    """The 256 printable symbols that byte-level BPE (GPT-2 / CLIP) uses for the 256 byte values."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = [], 0
    for b in range(256):
        if b in printable:
            codes.append(b)
        else:
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def tiny_stable_diffusion(seed: int = 0, sample_size: int = 8, max_length: int = 16) -> StableDiffusionComponents:
    """A tiny, randomly initialised Stable Diffusion (no weights, no network) for tests and weight-free benchmarks.

    Same architecture families as Stable Diffusion: a two-level UNet with cross-attention, a two-level KL-VAE
    (2x downsampling, so images are ``2 * sample_size`` pixels), a two-layer CLIP text encoder and a byte-level CLIP
    tokenizer whose vocabulary is the 256 byte symbols (with and without the end-of-word mark) and no merges.
    Its scores are meaningless; it exercises every code path at a tiny cost.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        symbols = _byte_symbols()
        vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
        vocab["<|startoftext|>"] = len(vocab)
        vocab["<|endoftext|>"] = len(vocab)
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps({"model_max_length": max_length}))
        tokenizer = CLIPTokenizer.from_pretrained(tmp, local_files_only=True)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=2 * sample_size,
    )
    # Stable Diffusion's training noise schedule.
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )
    for net in (unet, vae, text_encoder):
        net.eval()
    return StableDiffusionComponents(unet, vae, text_encoder, tokenizer, scheduler)


# --- learned tokens (textual inversion) -------------------------------------------------------------------------------
def read_learned_embeds(path: Path) -> Dict[str, Float[Tensor, " d"]]:
    """Read a learned-token file: ``{token: vector}`` from ``.safetensors`` or ``.bin`` (a torch pickle).

    ``.bin`` files are read with ``torch.load(weights_only=True)``: tensors and plain containers only, never
    arbitrary code. Vectors of shape ``[1, d]`` are flattened.

    Raises:
        DataError: missing or unreadable file, or contents that are not a dict of token -> vector.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "learned embeddings file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data = load_file(str(path), device="cpu")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first_line = str(err).splitlines()[0] if str(err) else ""
        raise DataError(path, f"cannot read learned embeddings ({err.__class__.__name__}: {first_line})") from None
    if not isinstance(data, dict) or not data:
        raise DataError(path, "learned embeddings must be a non-empty dict of token -> vector")
    out = {}
    for token, vec in data.items():
        if not isinstance(token, str) or not isinstance(vec, Tensor) or vec.dim() not in (1, 2):
            raise DataError(path, f"entry {token!r} is not a token -> vector pair")
        if vec.dim() == 2 and vec.shape[0] != 1:
            raise DataError(path, f"entry {token!r} has shape {tuple(vec.shape)}; one vector per token is expected")
        out[token] = vec.reshape(-1).float()
    return out


def add_learned_tokens(path: Path, tokenizer: Any, text_encoder: Any) -> List[str]:
    """Add the tokens of a learned-embeddings file to ``tokenizer`` and ``text_encoder``; returns the tokens.

    A token that the tokenizer already knows (e.g. a checkpoint saved after textual inversion) gets its embedding
    overwritten.

    Raises:
        DataError: unreadable file, or vectors whose size differs from the text encoder's embedding size.
    """
    embeds = read_learned_embeds(path)
    table = text_encoder.get_input_embeddings().weight
    dim = table.shape[1]
    for token, vec in embeds.items():
        if vec.numel() != dim:
            raise DataError(
                path,
                f"embedding for {token!r} has dimension {vec.numel()} but the text encoder expects {dim} "
                "(was it learned with another Stable Diffusion version?)",
            )
    tokenizer.add_tokens(list(embeds))
    if len(tokenizer) > table.shape[0]:
        text_encoder.resize_token_embeddings(len(tokenizer))
    table = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        for token, vec in embeds.items():
            table[tokenizer.convert_tokens_to_ids(token)] = vec.to(table)
    return list(embeds)


def substitute_token(prompt: str, tokens: List[str], source: Path) -> str:
    """Replace ``<token>`` in ``prompt`` with the learned token; the prompt must name a learned token.

    Raises:
        DataError: (naming ``source``, the embeddings file) the prompt contains neither ``<token>`` nor a learned
            token, or it contains ``<token>`` while the file holds several tokens.
    """
    if TOKEN_PLACEHOLDER in prompt:
        if len(tokens) != 1:
            raise DataError(source, f"holds {len(tokens)} tokens {tokens}; write one of them instead of <token>")
        return prompt.replace(TOKEN_PLACEHOLDER, tokens[0])
    if not any(token in prompt for token in tokens):
        raise DataError(
            source,
            f"the prompt {prompt!r} does not contain <token> or the learned token {tokens[0]!r}: "
            "write <token> where the object is named",
        )
    return prompt


# --- score distillation -----------------------------------------------------------------------------------------
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
    """

    def __init__(
        self,
        config: StableDiffusionGuidanceConfig,
        device: torch.device | str = "cpu",
        components: Optional[StableDiffusionComponents] = None,
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        self.dtype = torch.float16 if config.half_precision and self.device.type == "cuda" else torch.float32
        if components is None:
            if config.pretrained_model_path is None:
                raise DataError(
                    "--pipeline.guidance.pretrained-model-path",
                    "not set: the SDS prior needs a local Stable Diffusion folder in the diffusers layout",
                )
            components = StableDiffusionComponents.from_pretrained(config.pretrained_model_path, self.dtype)
        self.components = components.to(self.device, self.dtype)
        for net in (components.unet, components.vae, components.text_encoder):
            net.requires_grad_(False)
            net.eval()
        self.tokens: List[str] = []
        if config.learned_embeds_path is not None:
            self.tokens = add_learned_tokens(config.learned_embeds_path, components.tokenizer, components.text_encoder)
        self.prompt = self._resolve(config.prompt)
        self.negative_prompt = self._resolve(config.negative_prompt, required=False)
        alphas = components.scheduler.alphas_cumprod.to(self.device, torch.float32)
        self.alphas_cumprod: Float[Tensor, " T"] = alphas
        n_steps = alphas.shape[0]
        self.min_step = int(n_steps * config.min_step_fraction)
        self.max_step = int(n_steps * config.max_step_fraction)
        self._text_cache: Dict[Tuple[str, str], Tensor] = {}

    def _resolve(self, prompt: str, required: bool = True) -> str:
        if self.config.learned_embeds_path is None:
            if TOKEN_PLACEHOLDER in prompt:
                raise DataError(
                    "--pipeline.guidance.learned-embeds-path",
                    f"not set, but the prompt {prompt!r} uses <token>: give the textual-inversion embedding "
                    "or name the object in the prompt",
                )
            return prompt
        if not required and TOKEN_PLACEHOLDER not in prompt:
            return prompt
        return substitute_token(prompt, self.tokens, self.config.learned_embeds_path)

    @property
    def image_resolution(self) -> int:
        """Size of the images given to the VAE."""
        return self.config.image_resolution or self.components.image_resolution

    def prompt_for_view(self, direction: Optional[str] = None) -> str:
        """The prompt, with ', <direction> view' appended under view-dependent prompting."""
        if direction is None or not self.config.view_dependent_prompting:
            return self.prompt
        if direction not in VIEW_DIRECTIONS:
            raise ValueError(f"unknown view direction {direction!r}; expected one of {VIEW_DIRECTIONS}")
        return f"{self.prompt}, {direction} view"

    def text_embeddings(self, direction: Optional[str] = None) -> Float[Tensor, "2 l d"]:
        """``[negative, positive]`` prompt embeddings for a view direction (cached)."""
        key = (self.prompt_for_view(direction), self.negative_prompt)
        if key not in self._text_cache:
            self._text_cache[key] = self.components.encode_text([key[1], key[0]])
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
        """Classifier-free-guided noise prediction ``eps_u + s (eps_c - eps_u)`` (float32).

        A v-prediction UNet (Stable Diffusion 2.x at 768 px) is converted to noise: ``eps = sqrt(a) v + sqrt(1-a) x_t``.
        """
        b = noisy_latents.shape[0]
        uncond, cond = text_embeddings[:1], text_embeddings[1:2]
        context = torch.cat([uncond.expand(b, -1, -1), cond.expand(b, -1, -1)]).to(self.dtype)
        model_in = torch.cat([noisy_latents, noisy_latents]).to(self.dtype)
        out = self.components.unet(model_in, torch.cat([timesteps, timesteps]), encoder_hidden_states=context).sample
        out_uncond, out_cond = out.float().chunk(2)
        guided = out_uncond + self.config.guidance_scale * (out_cond - out_uncond)
        if getattr(self.components.scheduler.config, "prediction_type", "epsilon") == "v_prediction":
            alpha_bar = self.alphas_cumprod[timesteps].view(b, 1, 1, 1)
            guided = alpha_bar.sqrt() * guided + (1.0 - alpha_bar).sqrt() * noisy_latents.float()
        return guided

    def sds_loss_on_latents(
        self,
        latents: Float[Tensor, "b c h w"],
        text_embeddings: Float[Tensor, "2 l d"],
        timesteps: Optional[Tensor] = None,
        noise: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Dict[str, Tensor]:
        """The SDS loss of latents: its gradient with respect to ``latents`` is ``w(t) (eps_hat - eps)``.

        Derivation. Score distillation wants the update ``g = w(t) (eps_hat(z_t; y, t) - eps)`` for the latents
        ``z``, where ``z_t = sqrt(alpha_bar_t) z + sqrt(1 - alpha_bar_t) eps`` and ``eps_hat`` is the guided noise
        prediction; DreamFusion drops the UNet Jacobian ``d eps_hat / d z_t``, so ``g`` is not the gradient of any
        loss that autograd could see. We compute ``g`` without gradients and define

            L(z) = 1/2 * || z - sg(z - g) ||^2        (sg = stop-gradient, ``.detach()``)

        The target ``sg(z - g)`` is a constant to autograd, so ``dL/dz = z - (z - g) = g`` exactly: backpropagating
        ``L`` through the VAE encoder and the renderer applies the SDS update to the radiance field. ``L``'s value,
        ``1/2 ||g||^2``, is only a gauge of the update's size. Summed over the latent, averaged over the batch.

        Args:
            latents: scaled VAE latents (with gradients).
            text_embeddings: ``[negative, positive]`` embeddings (from :meth:`text_embeddings`).
            timesteps: one per latent; sampled from U{min_step, max_step} when None.
            noise: the noise ``eps``; standard normal when None.
            generator: random generator for the timesteps and noise.

        Returns:
            'loss_sds' (differentiable), and detached 'grad_norm' (``||g||`` averaged over the batch), 'timestep'
            and 'weight' (means over the batch).
        """
        b = latents.shape[0]
        if timesteps is None:
            timesteps = self.sample_timesteps(b, generator)
        timesteps = timesteps.to(self.device).long().reshape(b)
        if noise is None:
            gen_device = generator.device if generator is not None else latents.device
            noise = torch.randn(latents.shape, generator=generator, device=gen_device).to(latents.device)
        with torch.no_grad():
            alpha_bar = self.alphas_cumprod[timesteps].view(b, 1, 1, 1)
            noisy = alpha_bar.sqrt() * latents.detach().float() + (1.0 - alpha_bar).sqrt() * noise.float()
            eps_hat = self.guided_noise(noisy, timesteps, text_embeddings)
            w = self.weight(timesteps).view(b, 1, 1, 1)
            grad = torch.nan_to_num(w * (eps_hat - noise.float()))
        target = (latents.float() - grad).detach()
        loss = 0.5 * (latents.float() - target).square().sum() / b
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
        """SDS on rendered images in [0, 1]: resize to the VAE's size, encode, :meth:`sds_loss_on_latents`."""
        size = self.image_resolution
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, (size, size), mode="bilinear", align_corners=False)
        latents = self.components.encode_images(images, generator=generator)
        return self.sds_loss_on_latents(latents, text_embeddings, timesteps, noise, generator)
