"""Neural Gaffer's weights in the layouts its authors publish, and one-line errors for folders that are not.

As released: the Zero123-XL diffusers folder (``kxic/zero123-xl``: ``unet/`` with 8 input channels, ``vae/``,
``image_encoder/``, ``scheduler/``, plus ``feature_extractor/``, ``cc_projection/`` and ``model_index.json``, which
Neural Gaffer does not use) and ``neural_gaffer_res256_ckpt.zip``, which unzips to
``logs/neural_gaffer_res256/checkpoint-<step>/`` (accelerate's ``save_state``: ``model.safetensors`` or
``pytorch_model.bin`` holding the 16-channel UNet, beside ``optimizer.bin``, ``scheduler.bin`` and
``random_states_0.pkl``). Their scripts pick the latest checkpoint (``--resume_from_checkpoint latest``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from relight3d.errors import WeightsError
from relight3d.priors.diffusion.components import IMAGE_PARTS
from relight3d.priors.diffusion.testing import tiny_components, tiny_unet
from relight3d.priors.neural_gaffer import NeuralGafferPriorConfig


def _save_state_dict(unet, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, str(path))


def _accelerate_checkpoint(folder: Path, unet) -> Path:
    """What ``accelerator.save_state`` writes for a prepared UNet, optimizer and LR scheduler."""
    _save_state_dict(unet, folder / "model.safetensors")
    for junk in ("optimizer.bin", "scheduler.bin", "random_states_0.pkl"):
        (folder / junk).write_bytes(b"not read")
    return folder


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory):
    """``(zero123_xl_folder, logs_folder, gaffer_unet)``: a tiny release, the latest checkpoint holding gaffer_unet."""
    root = tmp_path_factory.mktemp("release")
    components = tiny_components(IMAGE_PARTS, 16, seed=0)
    gaffer_unet = components.unet
    torch.manual_seed(1)
    components.unet = tiny_unet(8)
    base = components.save_pretrained(root / "zero123-xl")
    torch.manual_seed(2)
    _save_state_dict(torch.nn.Linear(36, 32), base / "cc_projection" / "diffusion_pytorch_model.safetensors")
    (base / "cc_projection" / "config.json").write_text(json.dumps({"in_channel": 36, "out_channel": 32}))
    (base / "feature_extractor").mkdir()
    (base / "feature_extractor" / "preprocessor_config.json").write_text(json.dumps({"crop_size": 224}))
    (base / "model_index.json").write_text(json.dumps({"_class_name": "Zero1to3StableDiffusionPipeline"}))
    logs = root / "logs" / "neural_gaffer_res256"
    torch.manual_seed(3)
    _accelerate_checkpoint(logs / "checkpoint-40000", tiny_unet(16))
    _accelerate_checkpoint(logs / "checkpoint-80000", gaffer_unet)
    return base, logs, gaffer_unet


def _config(model_path: Path, **fields) -> NeuralGafferPriorConfig:
    return NeuralGafferPriorConfig(model_path=model_path, num_inference_steps=2, envmap_height=16, **fields)


def _assert_unet_equals(prior, unet) -> None:
    loaded = prior.components.unet.state_dict()
    expected = unet.state_dict()
    assert loaded.keys() == expected.keys() and prior.components.unet.config.in_channels == 16
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key


def test_released_layout_loads_the_latest_checkpoint(released) -> None:
    base, logs, gaffer_unet = released
    for checkpoint in (logs, logs / "checkpoint-80000", logs / "checkpoint-80000" / "model.safetensors"):
        _assert_unet_equals(_config(base, unet_checkpoint=checkpoint).setup(), gaffer_unet)


def test_a_ddp_pickled_checkpoint_loads(released, tmp_path: Path) -> None:
    base, _, gaffer_unet = released
    folder = tmp_path / "checkpoint-10"
    folder.mkdir()
    torch.save({f"module.{k}": v for k, v in gaffer_unet.state_dict().items()}, folder / "pytorch_model.bin")
    _assert_unet_equals(_config(base, unet_checkpoint=tmp_path).setup(), gaffer_unet)


def _broken_copy(base: Path, tmp_path: Path, remove: str) -> Path:
    copy = Path(shutil.copytree(base, tmp_path / "zero123-xl"))
    target = copy / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    return copy


def _no_image_encoder(base: Path, logs: Path, tmp: Path):
    model = _broken_copy(base, tmp, "image_encoder")
    return _config(model, unet_checkpoint=logs), f"{model}: not a diffusers-layout checkpoint: missing image_encoder/"


def _no_unet_weights(base: Path, logs: Path, tmp: Path):
    model = _broken_copy(base, tmp, "unet/diffusion_pytorch_model.safetensors")
    message = (
        f"{model}/unet: missing diffusion_pytorch_model.safetensors or diffusion_pytorch_model.safetensors.index.json"
    )
    return _config(model, unet_checkpoint=logs), message


def _zero123_without_checkpoint(base: Path, logs: Path, tmp: Path):
    return _config(base), (
        f"{base}/unet: UNet takes 8 input channels; Neural Gaffer's takes 16 (noisy, image, HDR-map and LDR-map "
        "latents) (a Zero123 base? pass Neural Gaffer's checkpoint as unet_checkpoint)"
    )


def _checkpoint_without_weights(base: Path, logs: Path, tmp: Path):
    copy = Path(shutil.copytree(logs, tmp / "logs"))
    (copy / "checkpoint-80000" / "model.safetensors").unlink()
    return _config(base, unet_checkpoint=copy), (
        f"{copy}/checkpoint-80000: missing the UNet's weights (model.safetensors, diffusion_pytorch_model.safetensors, "
        "pytorch_model.bin, diffusion_pytorch_model.bin, unet/ or checkpoint-<step>/)"
    )


def _zero123_weights_as_checkpoint(base: Path, logs: Path, tmp: Path):
    folder = _accelerate_checkpoint(tmp / "checkpoint-1", tiny_unet(8))
    message = f"{folder}/model.safetensors: conv_in expects 16 input channels, model.safetensors has 8"
    return _config(base, unet_checkpoint=folder), message


def _checkpoint_of_another_architecture(base: Path, logs: Path, tmp: Path):
    folder = _accelerate_checkpoint(tmp / "checkpoint-1", tiny_unet(16, cross_attention_dim=16))
    return _config(base, unet_checkpoint=folder), (
        f"{folder}/model.safetensors: down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight has shape "
        "(32, 16), the base UNet's is (32, 32) (is model_path Zero123-XL's diffusers folder?)"
    )


def _no_checkpoint(base: Path, logs: Path, tmp: Path):
    return _config(base, unet_checkpoint=tmp / "nowhere"), f"{tmp}/nowhere: unet_checkpoint not found"


@pytest.mark.parametrize(
    "case",
    [
        _no_image_encoder,
        _no_unet_weights,
        _zero123_without_checkpoint,
        _checkpoint_without_weights,
        _zero123_weights_as_checkpoint,
        _checkpoint_of_another_architecture,
        _no_checkpoint,
    ],
    ids=lambda case: case.__name__.strip("_"),
)
def test_a_wrong_folder_is_a_one_line_error_naming_the_file(released, tmp_path: Path, case) -> None:
    base, logs, _ = released
    config, expected = case(base, logs, tmp_path)
    with pytest.raises(WeightsError) as info:
        config.setup()
    assert str(info.value) == expected
