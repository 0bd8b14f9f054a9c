"""IC-Light loaded as released: its offset file (``iclight_sd15_fc.safetensors``) over a local SD1.5-architecture
base folder, merged as ``gradio_demo.py`` merges it, and one-line errors for every way the two can fail to fit."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict

import pytest
import torch
from safetensors.torch import save_file

from relight3d.errors import WeightsError
from relight3d.priors.diffusion.components import TEXT_PARTS
from relight3d.priors.diffusion.testing import tiny_components, tiny_unet
from relight3d.priors.ic_light import ICLightPriorConfig, merge_offset

PRIOR_CONFIG = ICLightPriorConfig
"""The prior under test (conftest.py's ``tiny_prior_config`` builds it)."""


def _random_offset(in_channels: int = 8, seed: int = 5, **unet_kwargs) -> Dict[str, torch.Tensor]:
    """A random "offset file": one float16 tensor (as released) per tensor of an ``in_channels`` tiny UNet."""
    torch.manual_seed(seed)
    return {k: torch.randn_like(v).half() for k, v in tiny_unet(in_channels, **unet_kwargs).state_dict().items()}


def _by_hand(base_state: Dict[str, torch.Tensor], offset: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The demo's merge written out: conv_in's weight gets 4 zero input channels appended, then base + offset."""
    merged = {}
    for key, value in base_state.items():
        if key == "conv_in.weight":
            out_channels, _, kh, kw = value.shape
            value = torch.cat([value, torch.zeros(out_channels, 4, kh, kw)], dim=1)
        merged[key] = value + offset[key].float()
    return merged


@pytest.fixture(scope="module")
def sd15(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SD1.5-architecture base folder (4-channel UNet, VAE, CLIP text encoder, tokenizer, scheduler)."""
    return tiny_components(TEXT_PARTS, 4, seed=2).save_pretrained(tmp_path_factory.mktemp("sd15"))


def test_offset_merge_equals_tensors_added_by_hand(tmp_path: Path, sd15: Path, tiny_prior_config) -> None:
    offset = _random_offset()
    offset["not_in_the_unet.weight"] = torch.ones(3)  # ignored, as by the demo's merge over the UNet's keys
    path = tmp_path / "iclight_sd15_fc.safetensors"
    save_file(offset, str(path))

    torch.manual_seed(3)
    unet = tiny_unet(4)
    expected = _by_hand({k: v.clone() for k, v in unet.state_dict().items()}, offset)
    merged = merge_offset(unet, path).state_dict()
    assert set(merged) == set(expected) and unet.config.in_channels == 8
    for key, value in expected.items():
        torch.testing.assert_close(merged[key], value, atol=0, rtol=0, msg=key)

    # the released layout end to end: the base folder + the offset file, through the prior's loading
    from diffusers import UNet2DConditionModel

    base_state = UNet2DConditionModel.from_pretrained(sd15, subfolder="unet").state_dict()
    prior = tiny_prior_config(sd15, offset_path=path).setup()
    assert prior.variant == "fc"
    loaded = prior.components.unet.state_dict()
    for key, value in _by_hand(base_state, offset).items():
        torch.testing.assert_close(loaded[key], value, atol=0, rtol=0, msg=key)


def _without(folder: Path, tmp_path: Path, relative: str) -> Path:
    copy = Path(shutil.copytree(folder, tmp_path / "base"))
    target = copy / relative
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    return copy


@pytest.mark.parametrize(
    "case, expected",
    [
        ("offset file missing", r"iclight_sd15_fc\.safetensors: IC-Light offset weights not found$"),
        ("5-channel offset", r"iclight_sd15_fc\.safetensors: conv_in has 5 input channels; IC-Light's have 8 \(fc\)"),
        ("offset lacks a tensor", r"fc\.safetensors: lacks mid_block\.resnets\.0\.conv1\.weight of the base UNet"),
        ("SD2-width offset", r"fc\.safetensors: down_blocks\.1\.attentions\.0\.transformer_blocks\.0\.attn2\.to_k"
         r"\.weight has shape \(32, 24\), the base UNet's is \(32, 32\)"),
        ("offset on a merged UNet", r"fc\.safetensors: the base UNet takes 8 input channels; offsets go on a plain"),
        ("plain UNet, no offset", r"unet: UNet takes 4 input channels; IC-Light's takes 8 \(fc: noisy \+ foreground"),
        ("no UNet weights", r"unet: missing diffusion_pytorch_model\.safetensors"),
        ("no text encoder", r"base: not a diffusers-layout checkpoint: missing text_encoder/$"),
    ],
)  # fmt: skip
def test_released_layout_errors_are_one_line(
    case: str, expected: str, tmp_path: Path, sd15: Path, tiny_prior_config
) -> None:
    path = tmp_path / "iclight_sd15_fc.safetensors"
    offset = _random_offset()
    base, offset_path = sd15, path
    if case == "5-channel offset":
        offset = _random_offset(5)
    elif case == "offset lacks a tensor":
        del offset["mid_block.resnets.0.conv1.weight"]
    elif case == "SD2-width offset":
        offset = _random_offset(cross_attention_dim=24)
    elif case == "offset on a merged UNet":
        base = tiny_components(TEXT_PARTS, 8).save_pretrained(tmp_path / "merged")
    elif case == "plain UNet, no offset":
        offset_path = None
    elif case == "no UNet weights":
        base = _without(sd15, tmp_path, "unet/diffusion_pytorch_model.safetensors")
    elif case == "no text encoder":
        base = _without(sd15, tmp_path, "text_encoder")
    if case != "offset file missing":
        save_file(offset, str(path))
    with pytest.raises(WeightsError, match=expected) as err:
        tiny_prior_config(base, offset_path=offset_path).setup()
    assert "\n" not in str(err.value)
