"""Single-image textual inversion with tiny models: it learns, writes a loadable embedding, and the CLI runs it."""

from __future__ import annotations

import pytest
import torch
from sds_helpers import tiny_sd_folder, write_rgba

from relight3d.cli import main
from relight3d.errors import ConfigError
from relight3d.priors.diffusion.prompts import add_placeholder_token, read_learned_embeds
from relight3d.priors.stable_diffusion import (
    StableDiffusionGuidance,
    StableDiffusionGuidanceConfig,
    load_stable_diffusion,
)
from relight3d.priors.textual_inversion import (
    TextualInversionConfig,
    heavy_augmentation,
    load_object_image,
    train_textual_inversion,
)


def test_textual_inversion_learns_only_the_new_token(tmp_path):
    image = write_rgba(tmp_path / "disc.png")
    components = load_stable_diffusion(tiny_sd_folder())
    table_before = components.text_encoder.get_input_embeddings().weight.detach().clone()
    init_id = components.tokenizer.encode("o", add_special_tokens=False)[0]
    cfg = TextualInversionConfig(
        image=image, output_dir=tmp_path / "ti", placeholder_token="_disc_", initializer_token="o",
        max_steps=4, gradient_accumulation_steps=1, batch_size=2, learning_rate=5e-2, scale_lr=False, device="cpu",
    )  # fmt: skip
    result = train_textual_inversion(cfg, components=components)
    assert result.embeddings_path == tmp_path / "ti" / "learned_embeds.safetensors"
    assert len(result.losses) == 4 and all(loss > 0 for loss in result.losses)

    learned = read_learned_embeds(result.embeddings_path)
    assert list(learned) == ["_disc_"] and learned["_disc_"].shape == (32,)
    table = components.text_encoder.get_input_embeddings().weight.detach()
    new_id = components.tokenizer.convert_tokens_to_ids("_disc_")
    assert new_id == table_before.shape[0]  # appended
    assert torch.equal(table[: table_before.shape[0]], table_before)  # every other row is untouched
    assert torch.equal(table[new_id], learned["_disc_"])
    moved = float((learned["_disc_"] - table_before[init_id]).norm())
    assert moved > 1e-3, "the embedding did not move from its initialisation"

    # relight3d-sds loads it: <token> becomes _disc_ and the embedding row is the learned vector.
    guidance = StableDiffusionGuidance(
        StableDiffusionGuidanceConfig(
            pretrained_model_path=tiny_sd_folder(), learned_embeds_path=result.embeddings_path, prompt="a <token>"
        )
    )
    row = guidance.components.text_encoder.get_input_embeddings().weight[
        guidance.components.tokenizer.convert_tokens_to_ids("_disc_")
    ]
    assert guidance.prompt == "a _disc_" and torch.equal(row, learned["_disc_"])


def test_float16_training_moves_the_embedding_as_float32_training_does(tmp_path):
    """Under a float16 UNet the embedding's gradient must survive the backward pass.

    The tiny UNet's output layer is scaled by 1e-3, so that the gradients it passes back are about 1e-3 times
    smaller; in float16 arithmetic (run on the CPU) they then fall below float16's smallest subnormal, 6e-8.
    Unscaled, most of the embedding's gradient flushes to zero and what is left is rounding noise, which Adam's
    normalisation turns into full-size steps in a meaningless direction. (Stable Diffusion 1.5 is in the same regime
    at 512 px: the loss gradient on each of its 16384 predicted latent values is about 3e-5 of the residual with 4
    accumulation steps, already below float16's smallest normal number, 6.1e-5.) With the loss scaled (GradScaler),
    the float16 run must move the embedding as the float32 run does: same direction, same distance."""
    image = write_rgba(tmp_path / "disc.png")
    moved = {}
    for dtype in ("float32", "float16"):
        components = load_stable_diffusion(tiny_sd_folder())
        with torch.no_grad():
            components.unet.conv_out.weight.mul_(1e-3)
        table = components.text_encoder.get_input_embeddings().weight.detach()
        init = table[components.tokenizer.encode("o", add_special_tokens=False)[0]].clone()
        cfg = TextualInversionConfig(
            image=image, output_dir=tmp_path / dtype, placeholder_token="_disc_", initializer_token="o", max_steps=3,
            gradient_accumulation_steps=1, batch_size=2, learning_rate=5e-2, scale_lr=False, augment=False,
            device="cpu", dtype=dtype,
        )  # fmt: skip
        result = train_textual_inversion(cfg, components=components)
        assert components.unet.dtype == getattr(torch, dtype) and components.text_encoder.dtype == torch.float32
        moved[dtype] = read_learned_embeds(result.embeddings_path)["_disc_"] - init
    reference, half = moved["float32"], moved["float16"]
    assert float(reference.norm()) > 0.1  # 3 Adam steps of 5e-2 on 32 values
    assert float(torch.nn.functional.cosine_similarity(half, reference, dim=0)) > 0.95
    ratio = float(half.norm() / reference.norm())
    assert 0.8 < ratio < 1.25, f"float16 moved the embedding {ratio:.3g} times as far as float32"


def test_augmentation_and_image_loading(tmp_path):
    image = load_object_image(write_rgba(tmp_path / "wide.png", size=(40, 20)), 16)
    assert image.shape == (3, 16, 16)
    # Transparent pixels and the padding become white; the disc keeps its red channel at 200/255.
    assert torch.allclose(image[:, 0, 0], torch.ones(3), atol=1e-3)
    assert float(image[0, 8, 8]) == pytest.approx(200 / 255, abs=0.03)
    aug = heavy_augmentation()
    torch.manual_seed(0)
    outs = torch.stack([aug(image) for _ in range(8)])
    assert outs.shape == (8, 3, 16, 16) and float(outs.min()) >= 0.0 and float(outs.max()) <= 1.0
    assert float((outs - image).abs().mean()) > 1e-3  # it does change the images


def test_placeholder_errors():
    components = load_stable_diffusion(tiny_sd_folder())
    tokenizer, text_encoder = components.tokenizer, components.text_encoder
    with pytest.raises(ConfigError, match="^--init-token: 'ab' is 2 tokens"):
        add_placeholder_token(tokenizer, text_encoder, "_x_", "ab")
    token_id = add_placeholder_token(tokenizer, text_encoder, "_x_", "o")
    table = text_encoder.get_input_embeddings().weight
    assert torch.equal(table[token_id], table[tokenizer.encode("o", add_special_tokens=False)[0]])
    with pytest.raises(ConfigError, match="^--token: '_x_' is already in the tokenizer's vocabulary"):
        add_placeholder_token(tokenizer, text_encoder, "_x_", "o")


def test_textual_inversion_cli(tmp_path, capsys):
    image = write_rgba(tmp_path / "disc.png")
    code = main([
        "textual-inversion", "--image", str(image), "--model", str(tiny_sd_folder()), "--output",
        str(tmp_path / "out"), "--token", "_disc_", "--init-token", "o", "--steps", "2",
        "--gradient-accumulation-steps", "1", "--device", "cpu",
    ])  # fmt: skip
    assert code == 0
    assert "learned_embeds.safetensors" in capsys.readouterr().out
    assert list(read_learned_embeds(tmp_path / "out" / "learned_embeds.safetensors")) == ["_disc_"]
    # Bad input is one line on stderr and exit code 2.
    code = main(["textual-inversion", "--image", str(tmp_path / "missing.png"), "--model", str(tiny_sd_folder()),
                 "--output", str(tmp_path / "o2"), "--steps", "1"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].endswith("missing.png: image file not found")
