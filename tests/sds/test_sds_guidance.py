"""Stable Diffusion guidance: the SDS gradient, component round trips, learned tokens and their bad inputs."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from sds_helpers import tiny_sd_folder

from relight3d.errors import ConfigError, WeightsError
from relight3d.priors.diffusion.prompts import read_learned_embeds
from relight3d.priors.stable_diffusion import (
    StableDiffusionGuidance,
    StableDiffusionGuidanceConfig,
    load_stable_diffusion,
)


@pytest.fixture(scope="module")
def guidance() -> StableDiffusionGuidance:
    config = StableDiffusionGuidanceConfig(pretrained_model_path=tiny_sd_folder(), prompt="a cup")
    return StableDiffusionGuidance(config)


@pytest.mark.parametrize("weighting", ["one_minus_alpha_bar", "sqrt_alpha_bar_one_minus_alpha_bar", "uniform"])
def test_sds_gradient_is_weighted_noise_residual(guidance, weighting):
    """d loss / d latents == w(t) (eps_hat - eps), with eps_hat recomputed here from two plain UNet calls."""
    guidance.config.weighting = weighting
    comp = guidance.components
    latents = torch.randn(2, 4, 8, 8, requires_grad=True)
    noise = torch.randn(2, 4, 8, 8)
    t = torch.tensor([50, 900])
    text = guidance.text_embeddings()
    out = guidance.sds_loss_on_latents(latents, text, timesteps=t, noise=noise)
    out["loss_sds"].backward()

    with torch.no_grad():
        noisy = comp.scheduler.add_noise(latents.detach(), noise, t)  # diffusers' own forward process
        eps_uncond = comp.unet(noisy, t, encoder_hidden_states=text[:1].expand(2, -1, -1)).sample
        eps_cond = comp.unet(noisy, t, encoder_hidden_states=text[1:].expand(2, -1, -1)).sample
        eps_hat = eps_uncond + 100.0 * (eps_cond - eps_uncond)
        alpha_bar = comp.scheduler.alphas_cumprod[t].view(2, 1, 1, 1)
        w = {
            "one_minus_alpha_bar": 1.0 - alpha_bar,
            "sqrt_alpha_bar_one_minus_alpha_bar": alpha_bar.sqrt() * (1.0 - alpha_bar),
            "uniform": torch.ones_like(alpha_bar),
        }[weighting]
        expected = w * (eps_hat - noise) / 2  # the loss is averaged over the batch of 2
    # Guidance 100 amplifies float32 round-off between the batched and separate UNet calls: compare at 1e-4.
    assert torch.allclose(latents.grad, expected, rtol=1e-4, atol=1e-4), float((latents.grad - expected).abs().max())
    assert float(expected.abs().max()) > 1e-2  # a non-trivial gradient
    # Loss value = 1/2 ||g||^2 per latent (averaged), and nothing reached the frozen networks.
    g = expected * 2
    assert torch.isclose(out["loss_sds"], 0.5 * g.square().sum() / 2, rtol=1e-4)
    assert all(p.grad is None for p in comp.unet.parameters())
    guidance.config.weighting = "one_minus_alpha_bar"


def test_v_prediction_models_are_converted_to_noise(guidance):
    """For v-prediction UNets (SD 2.x), eps_hat = sqrt(a) v_hat + sqrt(1 - a) x_t: with the UNet's guided output
    replaced by diffusers' exact velocity of (x0, eps), the conversion gives eps back."""
    comp = guidance.components
    x0, eps, t = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8), torch.tensor([300])
    x_t = comp.scheduler.add_noise(x0, eps, t)
    velocity = comp.scheduler.get_velocity(x0, eps, t)
    unet_forward = comp.unet.forward
    comp.scheduler.register_to_config(prediction_type="v_prediction")
    # A UNet that predicts the exact velocity in both guidance branches (guidance then leaves it unchanged).
    comp.unet.forward = lambda sample, *args, **kwargs: type("Out", (), {"sample": velocity.expand_as(sample)})()
    try:
        eps_hat = guidance.guided_noise(x_t, t, guidance.text_embeddings())
    finally:
        comp.scheduler.register_to_config(prediction_type="epsilon")
        comp.unet.forward = unet_forward
    torch.testing.assert_close(eps_hat, eps, atol=1e-5, rtol=0)


def test_sds_reaches_the_image_through_the_vae(guidance):
    """SDS on images: the image gradient is the VAE encoder's vector-Jacobian product of w(t)(eps_hat - eps)."""
    images = torch.rand(1, 3, 12, 12, requires_grad=True)  # resized to the tiny VAE's 16 px inside
    t, noise = torch.tensor([400]), torch.randn(1, 4, 8, 8)
    out = guidance.sds_loss(images, guidance.text_embeddings("side"), timesteps=t, noise=noise,
                            generator=torch.Generator().manual_seed(3))  # fmt: skip
    out["loss_sds"].backward()
    grad_images = images.grad.clone()
    # Recompute: the same posterior sample (same generator), then the residual, then the VJP.
    x = images.detach().requires_grad_(True)
    x16 = torch.nn.functional.interpolate(x, (16, 16), mode="bilinear", align_corners=False)
    vae = guidance.components.vae  # diffusers' own posterior sample, with the same generator
    latents = vae.encode(x16 * 2 - 1).latent_dist.sample(torch.Generator().manual_seed(3)) * vae.config.scaling_factor
    residual = guidance.sds_loss_on_latents(latents.detach(), guidance.text_embeddings("side"), t, noise)
    with torch.no_grad():
        noisy = guidance.components.scheduler.add_noise(latents.detach(), noise, t)
        eps_hat = guidance.guided_noise(noisy, t, guidance.text_embeddings("side"))
        g = (1.0 - guidance.components.scheduler.alphas_cumprod[t]).view(1, 1, 1, 1) * (eps_hat - noise)
    (expected,) = torch.autograd.grad(latents, x, grad_outputs=g)
    assert torch.allclose(grad_images, expected, rtol=1e-4, atol=1e-6)
    assert float(residual["grad_norm"]) == pytest.approx(float(g.norm()), rel=1e-4)


def test_components_save_and_reload(tmp_path, guidance):
    reloaded = load_stable_diffusion(tiny_sd_folder())
    twice = load_stable_diffusion(reloaded.save_pretrained(tmp_path / "copy"))
    assert type(twice.scheduler).__name__ == "DDPMScheduler"  # SDS uses the training schedule
    ids = twice.tokenizer(["a cup"], padding="max_length", return_tensors="pt").input_ids
    assert torch.equal(ids, reloaded.tokenizer(["a cup"], padding="max_length", return_tensors="pt").input_ids)
    assert torch.equal(twice.encode_prompts(["a cup"]), reloaded.encode_prompts(["a cup"]))
    z, t = torch.randn(1, 4, 8, 8), torch.tensor([10])
    ctx = reloaded.encode_prompts(["a cup"])
    assert torch.equal(twice.unet(z, t, ctx).sample, reloaded.unet(z, t, ctx).sample)
    assert torch.equal(twice.scheduler.alphas_cumprod, reloaded.scheduler.alphas_cumprod)
    assert twice.native_resolution == 16 and guidance.image_resolution == 16
    with pytest.raises(WeightsError, match="missing unet/"):
        load_stable_diffusion(tmp_path)


def _learned(path: Path, token: str, vec: torch.Tensor) -> Path:
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({token: vec}, str(path))
    else:
        torch.save({token: vec[None]}, path)  # RealFusion's .bin: a pickled dict, here with a [1, d] vector
    return path


@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
def test_learned_token_is_loaded_and_substituted(tmp_path, suffix):
    vec = torch.randn(32)
    path = _learned(tmp_path / f"learned_embeds{suffix}", "_cup_", vec)
    cfg = StableDiffusionGuidanceConfig(
        pretrained_model_path=tiny_sd_folder(), learned_embeds_path=path, prompt="a DSLR photo of a <token>"
    )
    g = StableDiffusionGuidance(cfg)
    assert g.prompt == "a DSLR photo of a _cup_"
    tok = g.components.tokenizer
    token_id = tok.convert_tokens_to_ids("_cup_")
    assert token_id in tok(g.prompt).input_ids
    assert torch.equal(g.components.text_encoder.get_input_embeddings().weight[token_id], vec)
    assert g.prompt_for_view("back") == "a DSLR photo of a _cup_, back view"
    # The learned vector changes the conditioning (it is really used by the text encoder).
    other = g.components.encode_prompts(["a DSLR photo of a cup"])
    assert not torch.allclose(g.text_embeddings()[1:], other)


def test_bad_learned_embeddings(tmp_path):
    base = dict(pretrained_model_path=tiny_sd_folder())
    path = _learned(tmp_path / "learned_embeds.safetensors", "_cup_", torch.randn(32))
    with pytest.raises(ConfigError) as err:
        StableDiffusionGuidance(StableDiffusionGuidanceConfig(**base, learned_embeds_path=path, prompt="a cup"))
    msg = str(err.value)
    assert msg.startswith("--pipeline.guidance.prompt: the prompt 'a cup' contains neither <token> nor")
    assert "\n" not in msg and str(path) in msg
    wrong = _learned(tmp_path / "wrong.bin", "_cup_", torch.randn(768))
    with pytest.raises(WeightsError, match="dimension 768 but the text encoder expects 32"):
        StableDiffusionGuidance(StableDiffusionGuidanceConfig(**base, learned_embeds_path=wrong, prompt="<token>"))
    with pytest.raises(ConfigError, match="learned-embeds-path: not set"):
        StableDiffusionGuidance(StableDiffusionGuidanceConfig(**base, prompt="a <token>"))
    with pytest.raises(ConfigError, match="pretrained-model-path: not set"):
        StableDiffusionGuidance(StableDiffusionGuidanceConfig())


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_pickle",))


def test_bin_embeddings_never_execute_code(tmp_path, monkeypatch):
    """A .bin is read with torch.load(weights_only=True): a pickle that runs code is refused, not executed."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "learned_embeds.bin"
    with open(path, "wb") as f:
        pickle.dump({"_cup_": _Exploit()}, f)
    with pytest.raises(WeightsError, match="cannot be read as learned embeddings"):
        read_learned_embeds(path)
    assert not (tmp_path / "pwned_by_pickle").exists()


@pytest.mark.skipif(not os.environ.get("RELIGHT3D_SD_PATH"), reason="set RELIGHT3D_SD_PATH to a local Stable "
                    "Diffusion folder (diffusers layout) to run the real-weights check")  # fmt: skip
def test_real_weights_sds_prefers_prompt_images():
    """With real weights: SDS gradients are finite, and the guided noise prediction depends on the prompt."""
    cfg = StableDiffusionGuidanceConfig(pretrained_model_path=Path(os.environ["RELIGHT3D_SD_PATH"]), prompt="a cup")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    g = StableDiffusionGuidance(cfg, device=device)
    assert g.image_resolution == 512
    images = torch.rand(1, 3, 64, 64, device=device, requires_grad=True)
    out = g.sds_loss(images, g.text_embeddings("front"), timesteps=torch.tensor([500]))
    out["loss_sds"].backward()
    assert torch.isfinite(images.grad).all() and float(images.grad.abs().sum()) > 0
    z = torch.randn(1, 4, 64, 64, device=device)
    t = torch.tensor([500], device=device)
    a = g.guided_noise(z, t, g.text_embeddings("front"))
    b = g.guided_noise(z, t, g.components.encode_prompts(["", "a photo of a dog"]))
    assert float((a - b).abs().mean()) > 1e-3
