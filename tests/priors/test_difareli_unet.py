"""DiFaReli's UNet and condition encoder: the released key layout, safe checkpoint loading, the tanh-gate and code
wiring against hand computations, and DDIM invert-then-decode with the tiny UNet as the noise model.

The released-size models are built on the ``meta`` device (no memory); everything else uses
``DiFaReliUNetSettings.tiny()`` with all parameters randomised (DiFaReli zero-initialises the last conv of every
residual branch and of the output, which would make a fresh model's output identically zero).

Measured (float64, 10 DDIM steps, linear 1000-step schedule, 1 x 3 x 16 x 16 input in [-0.5, 0.5]): with 24
fixed-point iterations per inverse step invert-then-decode reconstructs to 2.6e-7 max-abs error (1.3e-4 with 12: the
iteration contracts by ~0.6 per pass for this random network); decoding under another condition image moves the
result by 0.45. See ``tests/priors/test_ddim_inversion.py`` for why the noise model is a Gaussian-optimal
denoiser plus ``0.1 *`` the network.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Callable, Dict, Set

import pytest
import torch
import torch.nn.functional as F

from relight3d.errors import Relight3dError
from relight3d.priors.base import PriorError
from relight3d.priors.difareli_unet import (
    CodeResBlock,
    DiFaReliConditionEncoder,
    DiFaReliUNet,
    DiFaReliUNetSettings,
    difareli_eps,
    find_difareli_checkpoints,
    load_difareli_checkpoint,
    timestep_embedding,
)
from relight3d.priors.diffusion.inversion import ddim_decode, ddim_invert

TINY = DiFaReliUNetSettings.tiny()


pytestmark = pytest.mark.usefixtures("one_thread")


def _randomise(model: torch.nn.Module, seed: int, std: float = 0.15) -> torch.nn.Module:
    """Every parameter random (GroupNorm gains around 1), so that no branch is zero as at DiFaReli's init."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            for name, p in module.named_parameters(recurse=False):
                noise = torch.randn(p.shape, generator=generator, dtype=p.dtype) * std
                gain = isinstance(module, torch.nn.GroupNorm) and name == "weight"
                p.copy_(noise + (1.0 if gain else 0.0))
    return model.eval()


def _tiny_models(seed: int = 0, dtype: torch.dtype = torch.float32, settings: DiFaReliUNetSettings = TINY):
    unet = _randomise(DiFaReliUNet(settings), seed).to(dtype)
    encoder = _randomise(DiFaReliConditionEncoder(settings), seed + 1).to(dtype)
    return unet, encoder


def _inputs(seed: int = 0, batch: int = 2, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, 16, 16, generator=g, dtype=dtype) * 2 - 1
    codes = torch.randn(batch, TINY.condition_dim, generator=g, dtype=dtype)
    cond = torch.randn(batch, 6, 16, 16, generator=g, dtype=dtype)
    return x, codes, cond


# --- the released layout, as the notes list it ---------------------------------------------------------------------
def _res_keys(prefix: str, timed: bool, skip: bool) -> Set[str]:
    layers = ["in_layers.0", "in_layers.2", "out_layers.0", "out_layers.3"]
    if timed:
        layers += ["emb_layers.1", "cond_proj_layers.0", "cond_proj_layers.2", "cond_proj_layers.4"]
    if skip:
        layers.append("skip_connection")
    return {f"{prefix}.{layer}.{p}" for layer in layers for p in ("weight", "bias")}


def _attention_keys(prefix: str) -> Set[str]:
    return {f"{prefix}.{layer}.{p}" for layer in ("norm", "qkv", "proj_out") for p in ("weight", "bias")}


def _conv_keys(prefix: str) -> Set[str]:
    return {f"{prefix}.weight", f"{prefix}.bias"}


def _notes_unet_keys() -> Set[str]:
    """The released checkpoints' key list (difareli_code at ``2dd24a0``: ``create_model`` with
    ``config/difareli/difareli_256.yaml``), spelled out."""
    keys = {f"time_embed.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")} | _conv_keys("input_blocks.0.0")
    for i in (1, 2, 4, 5, 7, 8, 10, 11, 13, 14, 16, 17):
        keys |= _res_keys(f"input_blocks.{i}.1", timed=True, skip=i in (7, 13))
    for i in (3, 6, 9, 12, 15):
        keys |= _conv_keys(f"input_blocks.{i}.1.op")
    for i in (13, 14, 16, 17):
        keys |= _attention_keys(f"input_blocks.{i}.2")
    keys |= _res_keys("middle_block.1", True, False) | _res_keys("middle_block.3", True, False)
    keys |= _attention_keys("middle_block.2")
    for i in range(18):
        keys |= _res_keys(f"output_blocks.{i}.0", timed=True, skip=True)
    for i in range(6):
        keys |= _attention_keys(f"output_blocks.{i}.1")
    for i in (2, 5, 8, 11, 14):
        keys |= _conv_keys(f"output_blocks.{i}.{2 if i < 6 else 1}.conv")
    return keys | _conv_keys("out.0") | _conv_keys("out.2")


def _notes_encoder_keys() -> Set[str]:
    keys = _conv_keys("input_blocks.0.0")
    for i in (1, 2, 4, 5, 7, 8, 10, 11, 13, 14, 16, 17):
        keys |= _res_keys(f"input_blocks.{i}.0", timed=False, skip=i in (7, 13))
    for i in (3, 6, 9, 12, 15):
        keys |= _conv_keys(f"input_blocks.{i}.0.op")
    for i in (13, 14, 16, 17):
        keys |= _attention_keys(f"input_blocks.{i}.1")
    return (
        keys
        | _res_keys("middle_block.0", False, False)
        | _res_keys("middle_block.2", False, False)
        | (_attention_keys("middle_block.1"))
    )


def _released_state_shapes() -> tuple:
    settings = DiFaReliUNetSettings()
    with torch.device("meta"):
        unet, encoder = DiFaReliUNet(settings), DiFaReliConditionEncoder(settings)
    return (
        {k: tuple(v.shape) for k, v in unet.state_dict().items()},
        {k: tuple(v.shape) for k, v in encoder.state_dict().items()},
    )


def test_released_layout_matches_the_notes() -> None:
    unet, encoder = _released_state_shapes()
    assert set(unet) == _notes_unet_keys()
    assert set(encoder) == _notes_encoder_keys()
    assert (len(unet), len(encoder)) == (648, 158)
    count = {
        name: sum(int(torch.Size(s).numel()) for s in shapes.values())
        for name, shapes in (("unet", unet), ("encoder", encoder))
    }
    assert count == {"unet": 148_606_467, "encoder": 42_027_136}  # the notes' 148.6 M and 42.0 M
    assert unet["time_embed.0.weight"] == (512, 128) and unet["time_embed.2.weight"] == (512, 512)
    assert unet["input_blocks.0.0.weight"] == (128, 3, 3, 3) and encoder["input_blocks.0.0.weight"] == (128, 6, 3, 3)
    assert unet["input_blocks.1.1.cond_proj_layers.0.weight"] == (512, 672)
    assert unet["input_blocks.1.1.cond_proj_layers.2.weight"] == (512, 512)
    assert unet["input_blocks.13.1.cond_proj_layers.4.weight"] == (512, 512)  # out_ch of level 4 = 4 x 128
    assert unet["input_blocks.7.1.skip_connection.weight"] == (256, 128, 1, 1)
    assert unet["input_blocks.1.1.emb_layers.1.weight"] == (256, 512)  # scale and shift
    assert unet["middle_block.2.qkv.weight"] == (1536, 512, 1) and unet["input_blocks.13.2.proj_out.weight"] == (
        512,
        512,
        1,
    )
    assert unet["output_blocks.0.0.in_layers.2.weight"] == (512, 1024, 3, 3)
    assert unet["output_blocks.17.0.skip_connection.weight"] == (128, 256, 1, 1)
    assert unet["out.2.weight"] == (3, 128, 3, 3)
    assert DiFaReliUNetSettings().num_condition_maps == 19


# --- safe loading -------------------------------------------------------------------------------------------------
def test_checkpoint_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    unet, encoder = _tiny_models(seed=3)
    for name, model in (("ImgCond_ema_0.9999_000010.pt", unet), ("ImgEncoder_ema_0.9999_000010.pt", encoder)):
        torch.save(model.state_dict(), tmp_path / name)
    unet_path, encoder_path = find_difareli_checkpoints(tmp_path)
    fresh_unet, fresh_encoder = DiFaReliUNet(TINY).eval(), DiFaReliConditionEncoder(TINY).eval()
    fresh_unet.load_state_dict(load_difareli_checkpoint(unet_path, fresh_unet), strict=True)
    fresh_encoder.load_state_dict(load_difareli_checkpoint(encoder_path, fresh_encoder), strict=True)
    x, codes, cond = _inputs()
    t = torch.tensor([5, 900])
    with torch.no_grad():
        before = unet(x, t, codes, encoder(cond))
        after = fresh_unet(x, t, codes, fresh_encoder(cond))
    assert before.abs().max() > 0.1
    assert torch.equal(before, after)


class _Hostile:
    """A class ``weights_only`` must refuse to rebuild."""

    def __reduce__(self):
        return (print, ("this must never run",))


class _Opaque:
    """A plain custom class: not a tensor, not allowlisted."""


def _problem(path: Path, expected) -> str:
    with pytest.raises(PriorError) as info:
        load_difareli_checkpoint(path, expected)
    err = info.value
    assert isinstance(err, Relight3dError) and "\n" not in str(err)  # the CLI prints it as one line, exit 2
    assert err.path == path
    return err.problem


def test_bad_checkpoints_are_one_line_prior_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = DiFaReliUNet(TINY)
    good = model.state_dict()
    path = tmp_path / "ImgCond_ema_0.9999_000001.pt"

    wrong = dict(good)
    wrong["input_blocks.1.1.cond_proj_layers.0.weight"] = torch.zeros(8, 12)
    torch.save(wrong, path)
    assert _problem(path, model) == "input_blocks.1.1.cond_proj_layers.0.weight: expected (16, 12), file has (8, 12)"

    missing = {k: v for k, v in good.items() if k != "middle_block.2.qkv.bias"}
    torch.save(missing, path)
    assert _problem(path, model) == "missing key middle_block.2.qkv.bias (expected (48,); 1 missing in all)"

    extra = dict(good, **{"middle_block.0.weight": torch.zeros(3)})
    torch.save(extra, path)
    assert _problem(path, model) == "unexpected key middle_block.0.weight with shape (3,) (1 extra in all)"

    torch.save({"time_embed.0.weight": _Hostile()}, path)
    problem = _problem(path, model)
    assert problem.startswith("cannot be read as a state dict with weights_only=True") and "print" in problem

    with open(path, "wb") as f:
        pickle.dump({"a": _Hostile()}, f, protocol=2)
    assert "weights_only=True" in _problem(path, model)

    torch.save({"time_embed.0.weight": _Opaque()}, path)
    assert "_Opaque was not an allowed global" in _problem(path, model)

    assert "this must never run" not in capsys.readouterr().out  # the refused global was never called

    torch.save([torch.zeros(1)], path)
    assert _problem(path, model) == "holds a list, not a state dict of tensors"

    torch.save({"time_embed.0.weight": 3}, path)
    assert _problem(path, model) == "time_embed.0.weight: holds a int, not a tensor"

    # No model given: the file name picks the released UNet's layout, which a tiny file does not fit.
    torch.save(good, path)
    assert _problem(path, None) == "time_embed.0.weight: expected (512, 128), file has (32, 8)"
    assert _problem(tmp_path / "absent.pt", model) == "no such checkpoint file"


def test_find_checkpoints_picks_the_newest_complete_pair(tmp_path: Path) -> None:
    for name in (
        "ImgCond_ema_0.9999_050000.pt",
        "ImgEncoder_ema_0.9999_050000.pt",
        "ImgCond_ema_0.9999_085000.pt",
        "ImgEncoder_ema_0.9999_085000.pt",
        "ImgCond_ema_0.9999_090000.pt",  # no encoder of this step
        "ImgCond_model085000.pt",
        "opt085000.pt",
    ):
        (tmp_path / name).write_bytes(b"")
    unet, encoder = find_difareli_checkpoints(tmp_path)
    assert (unet.name, encoder.name) == ("ImgCond_ema_0.9999_085000.pt", "ImgEncoder_ema_0.9999_085000.pt")

    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "ImgCond_ema_0.9999_085000.pt").write_bytes(b"")
    with pytest.raises(PriorError, match=r"no ImgEncoder_ema_<rate>_<step>\.pt \(the condition encoder\)"):
        find_difareli_checkpoints(lonely)
    (lonely / "ImgEncoder_ema_0.9999_080000.pt").write_bytes(b"")
    with pytest.raises(PriorError, match="no step with both files") as info:
        find_difareli_checkpoints(lonely)
    assert "\n" not in str(info.value)
    with pytest.raises(PriorError, match="no such folder"):
        find_difareli_checkpoints(tmp_path / "nowhere")


# --- behaviour against hand computations --------------------------------------------------------------------------
def test_code_resblock_matches_the_hand_computation() -> None:
    torch.manual_seed(0)
    block = _randomise(CodeResBlock(8, 16, TINY), seed=5).double()
    x = torch.randn(2, 8, 4, 4, dtype=torch.float64)
    emb = torch.randn(2, TINY.time_embed_dim, dtype=torch.float64)
    codes = torch.randn(2, TINY.condition_dim, dtype=torch.float64)
    p = dict(block.named_parameters())

    def lin(name: str, v: torch.Tensor) -> torch.Tensor:
        return v @ p[f"{name}.weight"].T + p[f"{name}.bias"]

    def gn(name: str, v: torch.Tensor) -> torch.Tensor:
        return F.group_norm(v, TINY.norm_groups, p[f"{name}.weight"], p[f"{name}.bias"], eps=1e-5)

    h = F.conv2d(F.silu(gn("in_layers.0", x)), p["in_layers.2.weight"], p["in_layers.2.bias"], padding=1)
    scale, shift = lin("emb_layers.1", F.silu(emb)).chunk(2, dim=1)
    gain = F.silu(
        lin("cond_proj_layers.4", F.silu(lin("cond_proj_layers.2", F.silu(lin("cond_proj_layers.0", codes)))))
    )
    h = (gn("out_layers.0", h) * (1 + scale[..., None, None]) + shift[..., None, None]) * gain[..., None, None]
    h = F.conv2d(F.silu(h), p["out_layers.3.weight"], p["out_layers.3.bias"], padding=1)
    expected = F.conv2d(x, p["skip_connection.weight"], p["skip_connection.bias"]) + h
    with torch.no_grad():
        assert torch.allclose(block(x, emb, codes), expected, rtol=0, atol=1e-12)
        # Zero codes still scale by SiLU(L3(SiLU(L2(SiLU(b1))))), a function of the biases only.
        zero = torch.zeros_like(codes)
        bias_gain = F.silu(
            lin("cond_proj_layers.4", F.silu(lin("cond_proj_layers.2", F.silu(p["cond_proj_layers.0.bias"]))))
        )
        assert torch.allclose(block.cond_proj_layers(zero), bias_gain.expand(2, -1), rtol=0, atol=1e-14)


def _manual_forward(unet: DiFaReliUNet, x, t, codes, gate: Callable[[int, torch.Tensor], torch.Tensor]):
    """The wiring of the module doc, written out with ``gate(i, h)`` in place of the i-th ``h * tanh(F[i])``."""
    emb = unet.time_embed(timestep_embedding(t, TINY.model_channels).to(x.dtype))

    def run(layers, h):
        for layer in layers:
            h = layer(h, emb, codes) if isinstance(layer, CodeResBlock) else layer(h)
        return h

    h = unet.input_blocks[0][0](x)
    skips = [h]
    for i, block in enumerate(unet.input_blocks[1:]):
        h = run(list(block)[1:], gate(i, h))
        skips.append(h)
    n = len(unet.input_blocks)
    h = gate(n, run(list(unet.middle_block)[1:4], gate(n - 1, h)))
    for block in unet.output_blocks:
        h = run(list(block), torch.cat([h, skips.pop()], dim=1))
    return unet.out(h)


def test_gates_follow_the_encoder_maps_one_by_one() -> None:
    unet, encoder = _tiny_models(seed=1, dtype=torch.float64)
    x, codes, cond = _inputs(dtype=torch.float64)
    t = torch.tensor([7, 400])
    with torch.no_grad():
        maps = encoder(cond)
        assert len(maps) == TINY.num_condition_maps == 7
        # Zero maps: tanh(0) = 0 zeroes every gated state, so x reaches the output only through conv_in(x).
        zeros = [torch.zeros_like(m) for m in maps]
        out_zero = unet(x, t, codes, zeros)
        assert torch.allclose(out_zero, _manual_forward(unet, x, t, codes, lambda i, h: 0 * h), rtol=0, atol=1e-12)
        # Large maps: tanh(20) == 1.0 in float64, the gates are the identity.
        ones = [torch.full_like(m, 20.0) for m in maps]
        out_open = unet(x, t, codes, ones)
        assert torch.allclose(out_open, _manual_forward(unet, x, t, codes, lambda i, h: h), rtol=0, atol=1e-12)
        # Real maps: gate i multiplies by tanh(F[i]), in order.
        out = unet(x, t, codes, maps)
        manual = _manual_forward(unet, x, t, codes, lambda i, h: h * torch.tanh(maps[i]))
        assert torch.allclose(out, manual, rtol=0, atol=1e-12)
        assert (out - out_open).abs().max() > 1e-2 and (out - out_zero).abs().max() > 1e-2
        with pytest.raises(ValueError, match="expected 7 condition maps"):
            unet(x, t, codes, maps[:-1])


def test_codes_timestep_and_output_channels() -> None:
    unet, encoder = _tiny_models(seed=2)
    x, codes, cond = _inputs()
    with torch.no_grad():
        maps = encoder(cond)
        out = unet(x, torch.tensor([100, 100]), codes, maps)
        assert out.shape == (2, 3, 16, 16)
        assert (unet(x, torch.tensor([100, 100]), codes + 0.5, maps) - out).abs().max() > 1e-3
        assert (unet(x, torch.tensor([700, 700]), codes, maps) - out).abs().max() > 1e-3
        eps = difareli_eps(unet, encoder, codes, cond)
        assert torch.equal(eps(x, torch.tensor(100)), out)  # a 0-d timestep serves the whole batch

        learned_sigma = DiFaReliUNetSettings(**{**TINY.__dict__, "out_channels": 6})
        unet6, encoder6 = _tiny_models(seed=2, settings=learned_sigma)
        full = unet6(x, torch.tensor([100, 100]), codes, encoder6(cond))
        assert full.shape == (2, 6, 16, 16)
        assert torch.equal(difareli_eps(unet6, encoder6, codes, cond)(x, torch.tensor(100)), full[:, :3])


# --- DDIM through inversion.py ------------------------------------------------------------------------------------
DATA_VARIANCE = 0.25


def _scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)


def _denoiser_eps(network_eps, scheduler) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Gaussian-optimal eps plus ``0.1 *`` DiFaReli's UNet (see the module doc)."""
    alphas = scheduler.alphas_cumprod.to(torch.float64)

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = alphas[int(t)]
        return (1 - a).sqrt() * x / (a * DATA_VARIANCE + 1 - a) + 0.1 * network_eps(x, t)

    return eps


def test_ddim_round_trip_and_relighting_with_the_tiny_unet() -> None:
    pytest.importorskip("diffusers")
    unet, encoder = _tiny_models(seed=4, dtype=torch.float64)
    x, codes, cond = _inputs(seed=1, batch=1, dtype=torch.float64)
    x0 = x * 0.5
    other_cond = torch.roll(cond, shifts=5, dims=-1).flip(1)
    scheduler = _scheduler()
    results: Dict[str, float] = {}
    with torch.no_grad():
        source = _denoiser_eps(difareli_eps(unet, encoder, codes, cond), scheduler)
        target = _denoiser_eps(difareli_eps(unet, encoder, codes, other_cond), scheduler)
        x_T = ddim_invert(x0, source, scheduler, 10, fixed_point_iterations=24)
        results["same"] = float((ddim_decode(x_T, source, scheduler, 10) - x0).abs().max())
        results["other"] = float((ddim_decode(x_T, target, scheduler, 10) - x0).abs().max())
    assert results["same"] < 1e-6, results  # measured 2.6e-7
    assert results["other"] > 0.1, results  # measured 0.45
