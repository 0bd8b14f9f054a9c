"""DiFaReli's conditional pixel-space UNet ("ImgCond") and its spatial condition encoder ("ImgEncoder"), in plain torch.

Source: DiFaReli (Ponglertnapakorn et al. 2023, github.com/diffusion-face-relighting/difareli_code, read at HEAD
``2dd24a0``), ``guided_diffusion/models/spatial_cond_arch/unet_spatial_condition_hadamart.py``
(``UNetModel_SpatialCondition_Hadamart``, ``EncoderUNet_SpatialCondition``, ``ResBlockCondition``,
``ResBlockNoTime``, ``AttentionBlock``, ``QKVAttentionLegacy``), ``guided_diffusion/models/nn.py`` (``HadamartLayer``,
``GroupNorm``, ``timestep_embedding``), ``guided_diffusion/script_util.py::create_model`` and the hyper-parameters of
``config/difareli/difareli_256.yaml`` over ``config/base_config.py``. Written from that reading, not copied; the module
names and indices are DiFaReli's so that the released ``ImgCond_ema_0.9999_<step>.pt`` /
``ImgEncoder_ema_0.9999_<step>.pt`` state dicts load with ``load_state_dict(strict=True)``.

Wiring (``UNetModel_SpatialCondition_Hadamart.forward``; the encoder call is
``sample_scripts/sample_utils/inference_utils.py::PLSampling.forward_cond_network``)::

    F = encoder(cond_image)        # cond_image = cat([shading reference, faceseg_nohead]), 6 x 256 x 256
                                   # F[j] = output of encoder input block j (j = 0..N-1), F[N] = its middle block
    emb = time_embed(sinusoid(t))  # [cos, sin], max period 1e4, 128 -> 512 -> 512
    h = input_blocks[0](x_t);  hs = [h]
    for i in 1..N-1:               # every later input block starts with a parameter-free gate (its index 0)
        h = h * tanh(F[i - 1])
        h = input_blocks[i][1:](h, emb, codes);  hs.append(h)
    h = h * tanh(F[N - 1])         # middle_block[0]
    h = middle_block[1:4](h, emb, codes)   # ResBlock, attention, ResBlock
    h = h * tanh(F[N])             # middle_block[4]
    for block in output_blocks:    # the decoder half is not gated
        h = block(cat([h, hs.pop()]), emb, codes)
    eps = out(h)                   # GroupNorm, SiLU, conv 128 -> 3

``N`` is the number of input blocks (18 at 256 px), so the encoder gives ``N + 1 = 19`` maps, each with the shape of
the hidden state it gates (the encoder's trunk has the UNet's channels and resolutions). The skip list keeps the
*ungated* block outputs. Every residual block of the UNet (``ResBlockCondition._forward``) is::

    h1 = conv(SiLU(GN(x)))
    scale, shift = chunk(Linear(SiLU(emb)), 2)
    c = SiLU(L3(SiLU(L2(SiLU(L1(codes))))))                  # cond_proj_layers: 672 -> 512 -> 512 -> out_ch
    out = skip(x) + conv0(dropout(SiLU((GN(h1) * (1 + scale) + shift) * c)))

``codes`` are the 672 per-face numbers ``cat([shape 100, pose 6, exp 50, cam 3, ArcFace 512, shadow 1])``. The
encoder's residual blocks (``ResBlockNoTime``) have no time or code input:
``skip(x) + conv0(SiLU(GN(conv(SiLU(GN(x))))))``.

Consequences worth knowing (tested in ``tests/priors/test_difareli_unet.py``): with all condition maps zero, every
gate is ``tanh(0) = 0``, so the hidden state entering input blocks 1..N-1 and the middle block is zero and the middle
block's output is zeroed; ``x_t`` then reaches the output only through the first skip, ``conv_in(x_t)``. With maps
``>= 20`` (``tanh = 1`` in float64) the gates are the identity and the network is a plain code-conditioned UNet.

The UNet predicts epsilon (``learn_sigma = False``, ``predict_xstart = False``): its 3 output channels are the noise,
without the learned-variance half of guided-diffusion's ``learn_sigma`` models (:func:`difareli_eps` takes the first
half when a model has one). Inputs: ``x_t`` in [-1, 1] (3 channels), ``t`` the training timestep 0..999 of the
linear 1000-step schedule (``rescale_timesteps = False``).

Numerics differ from DiFaReli only beyond float32: DiFaReli's GroupNorm and attention softmax always compute in
float32; here they compute in the input's dtype when that is float32 or float64 (float32 results are the same,
float64 models stay float64, half precision is upcast as DiFaReli does).

Example:
    >>> unet_path, encoder_path = find_difareli_checkpoints("weights/difareli_256")  # doctest: +SKIP
    >>> unet, encoder = DiFaReliUNet(DiFaReliUNetSettings()), DiFaReliConditionEncoder(DiFaReliUNetSettings())
    >>> unet.load_state_dict(load_difareli_checkpoint(unet_path), strict=True)  # doctest: +SKIP
    >>> encoder.load_state_dict(load_difareli_checkpoint(encoder_path), strict=True)  # doctest: +SKIP
    >>> eps = difareli_eps(unet, encoder, codes, cond_image)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from relight3d.errors import one_line
from relight3d.priors.base import PriorError


# --- settings ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiFaReliUNetSettings:
    """Hyper-parameters of DiFaReli's UNet and condition encoder; the defaults are the released 256 px model's
    (``config/difareli/difareli_256.yaml`` over ``config/base_config.py``, channel multipliers from
    ``script_util.create_model``)."""

    image_size: int = 256
    """Side of the square images, in pixels (``img_model.image_size``)."""
    in_channels: int = 3
    """Channels of the noisy image ``x_t`` (``img_model.in_channels``; no extra images are concatenated)."""
    out_channels: int = 3
    """Output channels of the UNet: 3 = epsilon only (``learn_sigma = False``); 6 would add learned variances."""
    model_channels: int = 128
    """Base channel count (``num_channels``); the time embedding has 4x as many."""
    channel_mult: Tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    """Channel multiplier per resolution level (``create_model``'s choice for 256 px; 128 px uses (1, 1, 2, 3, 4))."""
    num_res_blocks: int = 2
    """Residual blocks per level in the encoder half (the decoder half has one more)."""
    attention_resolutions: Tuple[int, ...] = (16, 8)
    """Feature-map sides in pixels with self-attention after each residual block (``attention_resolutions: "16,8"``,
    i.e. downsampling factors ``image_size // r``); the middle block always has attention."""
    num_heads: int = 4
    """Attention heads (``num_head_channels = -1``: the head width is channels / heads), legacy per-head qkv order."""
    condition_dim: int = 672
    """Length of the per-face code vector: DECA shape 100 + pose 6 + exp 50 + cam 3, ArcFace 512, shadow 1."""
    condition_proj_dim: int = 512
    """Hidden width of each residual block's code MLP (``cond_proj_layers``)."""
    cond_in_channels: int = 6
    """Channels of the encoder's condition image: the shading reference (3) and the ``faceseg_nohead`` image (3)."""
    dropout: float = 0.0
    """Dropout in the residual blocks (0 in the released training)."""
    norm_groups: int = 32
    """GroupNorm groups (guided-diffusion's ``normalization``; every width must be a multiple)."""

    @classmethod
    def tiny(cls) -> "DiFaReliUNetSettings":
        """A few-thousand-parameter model with every kind of block (3 levels, attention on one, up- and
        downsampling with and without attention), for tests."""
        return cls(
            image_size=16,
            model_channels=8,
            channel_mult=(1, 2, 2),
            num_res_blocks=1,
            attention_resolutions=(8,),
            num_heads=2,
            condition_dim=12,
            condition_proj_dim=16,
            norm_groups=4,
        )

    @property
    def attention_factors(self) -> Tuple[int, ...]:
        """Downsampling factors with attention (DiFaReli's ``attention_ds``)."""
        return tuple(self.image_size // r for r in self.attention_resolutions)

    @property
    def time_embed_dim(self) -> int:
        """Width of the timestep embedding (4 x ``model_channels``)."""
        return 4 * self.model_channels

    @property
    def num_condition_maps(self) -> int:
        """Maps the encoder returns and the UNet consumes: one per input block plus the middle block."""
        return 1 + len(self.channel_mult) * self.num_res_blocks + (len(self.channel_mult) - 1) + 1


# --- building blocks -----------------------------------------------------------------------------------------------
class _GroupNorm(nn.GroupNorm):
    """GroupNorm that upcasts half precision to float32 (DiFaReli's ``GroupNorm``) and keeps float64 as is."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            return super().forward(x.float()).to(x.dtype)
        return super().forward(x)


def _norm(channels: int, settings: DiFaReliUNetSettings) -> nn.GroupNorm:
    return _GroupNorm(settings.norm_groups, channels)


def _zeroed(module: nn.Module) -> nn.Module:
    """DiFaReli's ``zero_module``: the last layer of each residual branch starts at zero."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: Float[Tensor, " b"], dim: int, max_period: float = 10000.0) -> Float[Tensor, "b dim"]:
    """guided-diffusion's sinusoidal embedding ``[cos(t f_k), sin(t f_k)]`` with ``f_k = max_period^(-k / half)``,
    computed in float32 as DiFaReli does (a function of ``t`` only, so float64 models get the same numbers)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


def _out_layers(channels: int, settings: DiFaReliUNetSettings) -> nn.Sequential:
    """A residual block's output layers (norm, SiLU, dropout, zero-initialised 3x3 conv), in the released key order."""
    return nn.Sequential(
        _norm(channels, settings),
        nn.SiLU(),
        nn.Dropout(settings.dropout),
        _zeroed(nn.Conv2d(channels, channels, 3, padding=1)),
    )


def _skip_connection(channels: int, out_channels: int) -> nn.Module:
    """Identity when the widths match, else a 1x1 conv."""
    return nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)


class TanhGate(nn.Module):
    """DiFaReli's ``HadamartLayer`` with ``hadamart_prep: Tanh``: ``h * tanh(feature)``. No parameters, but it holds
    index 0 of its block, which is why the released keys of gated blocks start at index 1."""

    def forward(self, h: Tensor, feature: Tensor) -> Tensor:
        return h * torch.tanh(feature)


class CodeResBlock(nn.Module):
    """``ResBlockCondition`` with ``use_scale_shift_norm``: a residual block whose normalised features are FiLM'd by
    the timestep embedding and then scaled channel-wise by an MLP of the per-face codes (see the module doc)."""

    def __init__(self, channels: int, out_channels: int, settings: DiFaReliUNetSettings) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(
            _norm(channels, settings), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        proj = settings.condition_proj_dim
        self.cond_proj_layers = nn.Sequential(
            nn.Linear(settings.condition_dim, proj),
            nn.SiLU(),
            nn.Linear(proj, proj),
            nn.SiLU(),
            nn.Linear(proj, out_channels),
            nn.SiLU(),
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(settings.time_embed_dim, 2 * out_channels))
        self.out_layers = _out_layers(out_channels, settings)
        self.skip_connection = _skip_connection(channels, out_channels)

    def forward(self, x: Tensor, emb: Tensor, codes: Tensor) -> Tensor:
        h = self.in_layers(x)
        scale, shift = self.emb_layers(emb).to(h.dtype)[..., None, None].chunk(2, dim=1)
        gain = self.cond_proj_layers(codes.to(h.dtype))[..., None, None]
        h = (self.out_layers[0](h) * (1 + scale) + shift) * gain
        for layer in self.out_layers[1:]:
            h = layer(h)
        return self.skip_connection(x) + h


class PlainResBlock(nn.Module):
    """``ResBlockNoTime``: the encoder's residual block, with neither timestep nor codes."""

    def __init__(self, channels: int, out_channels: int, settings: DiFaReliUNetSettings) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(
            _norm(channels, settings), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.out_layers = _out_layers(out_channels, settings)
        self.skip_connection = _skip_connection(channels, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip_connection(x) + self.out_layers(self.in_layers(x))


class SelfAttention(nn.Module):
    """guided-diffusion's ``AttentionBlock`` with ``QKVAttentionLegacy``: the ``3C`` qkv channels are grouped per
    head (``[head 0: q, k, v | head 1: q, k, v | ...]``); q and k are each scaled by ``d^(-1/4)``."""

    def __init__(self, channels: int, settings: DiFaReliUNetSettings) -> None:
        super().__init__()
        if channels % settings.num_heads:
            raise ValueError(f"{channels} attention channels do not split into {settings.num_heads} heads")
        self.num_heads = settings.num_heads
        self.norm = _norm(channels, settings)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = _zeroed(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, height, width = x.shape
        flat = x.reshape(b, c, height * width)
        qkv = self.qkv(self.norm(flat))
        d = c // self.num_heads
        q, k, v = qkv.reshape(b * self.num_heads, 3 * d, height * width).split(d, dim=1)
        scale = d**-0.25
        logits = torch.einsum("nct,ncs->nts", q * scale, k * scale)
        if logits.dtype in (torch.float16, torch.bfloat16):
            weights = torch.softmax(logits.float(), dim=-1).to(logits.dtype)
        else:
            weights = torch.softmax(logits, dim=-1)
        attended = torch.einsum("nts,ncs->nct", weights, v).reshape(b, c, height * width)
        return (flat + self.proj_out(attended)).reshape(b, c, height, width)


class Downsample(nn.Module):
    """Stride-2 3x3 convolution (``conv_resample = True``, ``resblock_updown = False``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class _Block(nn.ModuleList):
    """One block of layers, indexed like DiFaReli's ``TimestepEmbedSequential(Cond)`` so that the keys match."""

    def run(self, h: Tensor, emb: Optional[Tensor] = None, codes: Optional[Tensor] = None, start: int = 0) -> Tensor:
        for layer in list(self)[start:]:
            h = layer(h, emb, codes) if isinstance(layer, CodeResBlock) else layer(h)
        return h


def _encoder_half(settings: DiFaReliUNetSettings, in_channels: int, gated: bool, res_block: type) -> Tuple:
    """The input blocks shared by the UNet (``gated``: a :class:`TanhGate` at index 0 of blocks 1..) and the encoder.

    Returns ``(blocks, skip_channels, channels at the bottom)``.
    """
    ch = settings.channel_mult[0] * settings.model_channels
    blocks = nn.ModuleList([_Block([nn.Conv2d(in_channels, ch, 3, padding=1)])])
    skips = [ch]
    factor = 1
    for level, mult in enumerate(settings.channel_mult):
        for _ in range(settings.num_res_blocks):
            out_ch = mult * settings.model_channels
            layers: List[nn.Module] = [TanhGate()] if gated else []
            layers.append(res_block(ch, out_ch, settings))
            ch = out_ch
            if factor in settings.attention_factors:
                layers.append(SelfAttention(ch, settings))
            blocks.append(_Block(layers))
            skips.append(ch)
        if level != len(settings.channel_mult) - 1:
            blocks.append(_Block(([TanhGate()] if gated else []) + [Downsample(ch)]))
            skips.append(ch)
            factor *= 2
    return blocks, skips, ch


# --- the two networks ----------------------------------------------------------------------------------------------
class DiFaReliConditionEncoder(nn.Module):
    """DiFaReli's ``EncoderUNet_SpatialCondition`` ("ImgEncoder"): the UNet's encoder half without time input, on the
    6-channel condition image; returns its input-block outputs and middle-block output, the maps that gate the UNet.

    Example:
        >>> settings = DiFaReliUNetSettings.tiny()
        >>> maps = DiFaReliConditionEncoder(settings)(torch.zeros(1, 6, 16, 16))
        >>> len(maps) == settings.num_condition_maps, tuple(maps[-1].shape)
        (True, (1, 16, 4, 4))
    """

    def __init__(self, settings: DiFaReliUNetSettings) -> None:
        super().__init__()
        self.settings = settings
        self.input_blocks, _, ch = _encoder_half(settings, settings.cond_in_channels, False, PlainResBlock)
        self.middle_block = _Block(
            [PlainResBlock(ch, ch, settings), SelfAttention(ch, settings), PlainResBlock(ch, ch, settings)]
        )

    def forward(self, cond_image: Float[Tensor, "b c h w"]) -> List[Float[Tensor, "b ci hi wi"]]:
        maps = []
        h = cond_image
        for block in self.input_blocks:
            h = block.run(h)
            maps.append(h)
        maps.append(self.middle_block.run(h))
        return maps


class DiFaReliUNet(nn.Module):
    """DiFaReli's ``UNetModel_SpatialCondition_Hadamart`` ("ImgCond"): ``eps = unet(x_t, t, codes, cond_maps)``, with
    the wiring of the module doc.

    Example:
        >>> settings = DiFaReliUNetSettings.tiny()
        >>> unet, encoder = DiFaReliUNet(settings), DiFaReliConditionEncoder(settings)
        >>> maps = encoder(torch.zeros(2, 6, 16, 16))
        >>> unet(torch.zeros(2, 3, 16, 16), torch.tensor([10, 500]), torch.zeros(2, 12), maps).shape
        torch.Size([2, 3, 16, 16])
    """

    def __init__(self, settings: DiFaReliUNetSettings) -> None:
        super().__init__()
        self.settings = settings
        mc, ted = settings.model_channels, settings.time_embed_dim
        self.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))
        self.input_blocks, skips, ch = _encoder_half(settings, settings.in_channels, True, CodeResBlock)
        self.middle_block = _Block(
            [
                TanhGate(),
                CodeResBlock(ch, ch, settings),
                SelfAttention(ch, settings),
                CodeResBlock(ch, ch, settings),
                TanhGate(),
            ]
        )
        self.output_blocks = nn.ModuleList()
        factor = 2 ** (len(settings.channel_mult) - 1)
        for level, mult in reversed(list(enumerate(settings.channel_mult))):
            for i in range(settings.num_res_blocks + 1):
                out_ch = mult * mc
                layers: List[nn.Module] = [CodeResBlock(ch + skips.pop(), out_ch, settings)]
                ch = out_ch
                if factor in settings.attention_factors:
                    layers.append(SelfAttention(ch, settings))
                if level and i == settings.num_res_blocks:
                    layers.append(Upsample(ch))
                    factor //= 2
                self.output_blocks.append(_Block(layers))
        self.out = nn.Sequential(
            _norm(ch, settings), nn.SiLU(), _zeroed(nn.Conv2d(ch, settings.out_channels, 3, padding=1))
        )

    def forward(
        self,
        x_t: Float[Tensor, "b c h w"],
        t: Union[Float[Tensor, " b"], Float[Tensor, ""]],
        codes: Float[Tensor, "b d"],
        cond_maps: Sequence[Tensor],
    ) -> Float[Tensor, "b o h w"]:
        """Predict the noise of ``x_t`` at training timestep(s) ``t`` (0..999; one per image or a scalar) under the
        per-face ``codes`` and the encoder's ``cond_maps`` (:class:`DiFaReliConditionEncoder`'s output)."""
        batch = x_t.shape[0]
        if len(cond_maps) != self.settings.num_condition_maps:
            raise ValueError(f"expected {self.settings.num_condition_maps} condition maps, got {len(cond_maps)}")
        if codes.shape != (batch, self.settings.condition_dim):
            raise ValueError(f"codes must be [{batch}, {self.settings.condition_dim}], got {tuple(codes.shape)}")
        t = torch.as_tensor(t, device=x_t.device).reshape(-1).expand(batch)
        emb = self.time_embed(timestep_embedding(t, self.settings.model_channels).to(x_t.dtype))
        gate = 0

        def gated(h: Tensor, gate_layer: nn.Module) -> Tensor:
            nonlocal gate
            feature = cond_maps[gate]
            if feature.shape[1:] != h.shape[1:]:
                raise ValueError(
                    f"condition map {gate} has shape {tuple(feature.shape[1:])}, the UNet state {tuple(h.shape[1:])}"
                )
            gate += 1
            return gate_layer(h, feature.to(h.dtype))

        h = self.input_blocks[0].run(x_t)
        skips = [h]
        for block in self.input_blocks[1:]:
            h = block.run(gated(h, block[0]), emb, codes, start=1)
            skips.append(h)
        middle = self.middle_block
        h = gated(h, middle[0])
        for layer in middle[1:4]:
            h = layer(h, emb, codes) if isinstance(layer, CodeResBlock) else layer(h)
        h = gated(h, middle[4])
        for block in self.output_blocks:
            h = block.run(torch.cat([h, skips.pop()], dim=1), emb, codes)
        return self.out(h)


# --- checkpoints ---------------------------------------------------------------------------------------------------
_CHECKPOINT_NAME = re.compile(r"^(?P<kind>ImgCond|ImgEncoder)_ema_(?P<rate>[0-9.]+)_(?P<step>\d+)\.pt$")
_RELEASED_NAMES = {"ImgCond": "the UNet", "ImgEncoder": "the condition encoder"}


def _shape(shape: Sequence[int]) -> str:
    return str(tuple(int(s) for s in shape))


def _expected_layout(path: Path, expected: Union[nn.Module, Mapping[str, Sequence[int]], None]) -> Dict[str, tuple]:
    if isinstance(expected, nn.Module):
        return {k: tuple(v.shape) for k, v in expected.state_dict().items()}
    if expected is not None:
        return {k: tuple(v) for k, v in expected.items()}
    name = _CHECKPOINT_NAME.match(path.name)
    kind = name.group("kind") if name else ("ImgEncoder" if path.name.startswith("ImgEncoder") else None)
    if kind is None and path.name.startswith("ImgCond"):
        kind = "ImgCond"
    if kind is None:
        raise PriorError(
            path,
            "cannot tell a DiFaReli UNet (ImgCond_*) from an encoder (ImgEncoder_*) by the name; "
            "pass the model to check against",
        )
    builder = DiFaReliUNet if kind == "ImgCond" else DiFaReliConditionEncoder
    with torch.device("meta"):
        model = builder(DiFaReliUNetSettings())
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _load_problem(err: BaseException) -> str:
    """The informative line of a ``torch.load`` failure (weights_only names the refused global on a later line)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if "Unsupported global" in line or "Unsupported operand" in line:
            return line.split("WeightsUnpickler error:")[-1].split(". Please use")[0].strip()
    return one_line(err)


def load_difareli_checkpoint(
    path: Union[str, Path], expected: Union[nn.Module, Mapping[str, Sequence[int]], None] = None
) -> Dict[str, Tensor]:
    """Read a DiFaReli state dict with ``torch.load(weights_only=True)`` and check its keys and shapes.

    Args:
        path: An ``ImgCond_ema_<rate>_<step>.pt`` or ``ImgEncoder_ema_<rate>_<step>.pt`` file (a plain state dict).
        expected: The model (or ``{key: shape}``) the file must fit; None: the released 256 px UNet or encoder,
            chosen by the file name.

    Returns:
        The state dict (CPU tensors), ready for ``model.load_state_dict(state, strict=True)``.

    Raises:
        PriorError: one line naming the file and the first problem: unreadable or hostile pickle, not a dict of
            tensors, a missing key, an extra key, or e.g. ``input_blocks.1.1.cond_proj_layers.0.weight: expected
            (512, 672), file has (256, 672)``.
    """
    path = Path(path)
    if not path.is_file():
        raise PriorError(path, "no such checkpoint file")
    layout = _expected_layout(path, expected)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # why: torch.load of untrusted bytes raises many undocumented types (pickle, zip, ...)
        raise PriorError(path, f"cannot be read as a state dict with weights_only=True: {_load_problem(err)}") from err
    if not isinstance(state, Mapping):
        raise PriorError(path, f"holds a {type(state).__name__}, not a state dict of tensors")
    for key, value in state.items():
        if not isinstance(value, Tensor):
            raise PriorError(path, f"{key}: holds a {type(value).__name__}, not a tensor")
    missing = [k for k in layout if k not in state]
    for key, shape in layout.items():
        if key in state and tuple(state[key].shape) != shape:
            raise PriorError(path, f"{key}: expected {_shape(shape)}, file has {_shape(state[key].shape)}")
    if missing:
        raise PriorError(
            path, f"missing key {missing[0]} (expected {_shape(layout[missing[0]])}; {len(missing)} missing in all)"
        )
    extra = [k for k in state if k not in layout]
    if extra:
        raise PriorError(
            path, f"unexpected key {extra[0]} with shape {_shape(state[extra[0]].shape)} ({len(extra)} extra in all)"
        )
    return dict(state)


def find_difareli_checkpoints(folder: Union[str, Path]) -> Tuple[Path, Path]:
    """The ``(ImgCond_ema_*, ImgEncoder_ema_*)`` files of the highest training step that has both in ``folder``.

    Raises:
        PriorError: one line naming what is missing (the folder, either kind of file, or a matching pair).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PriorError(folder, "no such folder of DiFaReli checkpoints")
    found: Dict[str, Dict[Tuple[int, str], Path]] = {"ImgCond": {}, "ImgEncoder": {}}
    for entry in folder.iterdir():
        name = _CHECKPOINT_NAME.match(entry.name)
        if name and entry.is_file():
            found[name.group("kind")][(int(name.group("step")), name.group("rate"))] = entry
    for kind, files in found.items():
        if not files:
            raise PriorError(folder, f"no {kind}_ema_<rate>_<step>.pt ({_RELEASED_NAMES[kind]}) in the folder")
    common = sorted(set(found["ImgCond"]) & set(found["ImgEncoder"]))
    if not common:
        unet_steps = ", ".join(p.name for _, p in sorted(found["ImgCond"].items()))
        encoder_steps = ", ".join(p.name for _, p in sorted(found["ImgEncoder"].items()))
        raise PriorError(folder, f"no step with both files: UNets {unet_steps}; encoders {encoder_steps}")
    best = common[-1]
    return found["ImgCond"][best], found["ImgEncoder"][best]


# --- the noise model for DDIM --------------------------------------------------------------------------------------
def difareli_eps(
    unet: DiFaReliUNet,
    encoder: DiFaReliConditionEncoder,
    codes: Float[Tensor, "b d"],
    cond_image: Float[Tensor, "b 6 h w"],
) -> Callable[[Tensor, Tensor], Tensor]:
    """``eps(x_t, t)`` of DiFaReli under fixed conditions, for :mod:`relight3d.priors.diffusion.inversion`.

    The encoder runs once here (its maps do not depend on ``x_t`` or ``t``); codes and maps are cast to the UNet's
    dtype. ``t`` may be 0-d (the scheduler's timestep, i.e. the training timestep DiFaReli's ``_WrappedModel``
    passes with ``rescale_timesteps = False``). A model with ``out_channels = 2 * in_channels`` (guided-diffusion's
    ``learn_sigma``) returns ``[eps, variance]``; the epsilon half is returned. The released model has only eps.

    Example:
        >>> x_T = ddim_invert(image, difareli_eps(unet, encoder, codes, cond_source), scheduler, 50)  # doctest: +SKIP
    """
    param = next(unet.parameters())
    maps = [m.to(param.device, param.dtype) for m in encoder(cond_image.to(param.device, param.dtype))]
    codes = codes.to(param.device, param.dtype)
    channels = unet.settings.in_channels
    out_channels = unet.settings.out_channels
    if out_channels not in (channels, 2 * channels):
        raise ValueError(f"a UNet with {out_channels} output channels for {channels} input channels is no eps model")

    def eps(x_t: Tensor, t: Tensor) -> Tensor:
        out = unet(x_t.to(param.dtype), t, codes, maps)
        return out[:, :channels].to(x_t.dtype)

    return eps
