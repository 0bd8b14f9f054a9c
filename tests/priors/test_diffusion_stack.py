"""The shared diffusion stack against diffusers' own pipelines and schedulers, with the same tiny weights and seeds."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch
from prior_fixtures import reference_pipeline, seeded

from relight3d.errors import ConfigError, WeightsError
from relight3d.priors.diffusion.components import IMAGE_PARTS, TEXT_PARTS, DiffusionComponents, widen_conv_in
from relight3d.priors.diffusion.guidance import epsilon_from, guided_noise, score_distillation, unet_branches
from relight3d.priors.diffusion.loading import resolve_torch_dtype
from relight3d.priors.diffusion.sampling import sample_latents
from relight3d.priors.diffusion.schedulers import SCHEDULERS, make_scheduler
from relight3d.priors.diffusion.testing import RESOLUTION, clip_text_encoder, tiny_components, tiny_unet

PROMPTS = ["a red cup, light from the left", "a blue cup"]


@pytest.fixture(scope="module")
def sd() -> DiffusionComponents:
    return tiny_components(TEXT_PARTS, 4).freeze()


def _predictor(sd: DiffusionComponents, scale: float):
    contexts = (sd.encode_prompts([""] * len(PROMPTS)), sd.encode_prompts(PROMPTS))
    return lambda x, t: guided_noise(sd.unet, x, t, scale, contexts)


def test_prompt_encoding_matches_the_pipeline(sd: DiffusionComponents) -> None:
    from diffusers import StableDiffusionPipeline

    pipe = reference_pipeline(StableDiffusionPipeline, sd)
    with torch.no_grad():
        theirs, negative = pipe.encode_prompt(PROMPTS, "cpu", 1, True, ["", ""])
        ours = sd.encode_prompts(PROMPTS)
    torch.testing.assert_close(ours, theirs, atol=0, rtol=0)
    torch.testing.assert_close(sd.encode_prompts(["", ""]), negative, atol=0, rtol=0)
    assert (ours[0] - ours[1]).abs().max() > 1e-3  # different prompts, different embeddings


@pytest.mark.parametrize("name", ["ddim", "euler", "dpm-solver"])
def test_guided_sampling_matches_stable_diffusion_pipeline(sd: DiffusionComponents, name: str) -> None:
    from diffusers import StableDiffusionPipeline

    scheduler = make_scheduler(name, sd.scheduler.config)
    assert type(scheduler).__name__ == SCHEDULERS[name]
    shape = (4, RESOLUTION // 2, RESOLUTION // 2)
    noise = torch.stack([torch.randn(shape, generator=g) for g in seeded(1, 2)])
    with torch.no_grad():
        ours = sample_latents(scheduler, _predictor(sd, 6.0), noise, 3, generator=seeded(11, 12))
        theirs = reference_pipeline(StableDiffusionPipeline, dataclasses.replace(sd, scheduler=scheduler))(
            prompt=PROMPTS, negative_prompt=["", ""], height=RESOLUTION, width=RESOLUTION, num_inference_steps=3,
            guidance_scale=6.0, generator=seeded(1, 2), output_type="latent",
        ).images  # fmt: skip
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert (ours - noise).abs().mean() > 1e-2


@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_sdedit_matches_img2img_pipeline(sd: DiffusionComponents, strength: float) -> None:
    from diffusers import StableDiffusionImg2ImgPipeline

    images = torch.rand(2, 3, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        start = sd.encode_images(images)
        noise = torch.stack([torch.randn(start.shape[1:], generator=g) for g in seeded(3, 4)])
        ours = sample_latents(sd.scheduler, _predictor(sd, 4.0), noise, 4, start, strength)
        theirs = reference_pipeline(StableDiffusionImg2ImgPipeline, sd)(
            prompt=PROMPTS, negative_prompt=["", ""], image=start, strength=strength, num_inference_steps=4,
            guidance_scale=4.0, generator=seeded(3, 4), output_type="latent",
        ).images  # fmt: skip
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    # strength 0 keeps no step: the start latent itself.
    assert torch.equal(sample_latents(sd.scheduler, _predictor(sd, 4.0), noise, 4, start, 0.0), start)


def test_vae_encoding_is_diffusers_posterior(sd: DiffusionComponents) -> None:
    images = torch.rand(2, 3, RESOLUTION, RESOLUTION)
    with torch.no_grad():
        posterior = sd.vae.encode(images * 2 - 1).latent_dist
        factor = sd.vae.config.scaling_factor
        torch.testing.assert_close(sd.encode_images(images), posterior.mean * factor)
        torch.testing.assert_close(sd.encode_images(images, scaled=False), posterior.mean)
        sampled = sd.encode_images(images, sample=True, generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(sampled, posterior.sample(torch.Generator().manual_seed(5)) * factor)
        per_view = sd.encode_images(images, sample=True, generator=seeded(5, 6))
        torch.testing.assert_close(per_view[1:], sd.encode_images(images[1:], sample=True, generator=seeded(6)))
        decoded = sd.decode_latents(sampled)
        torch.testing.assert_close(decoded, (sd.vae.decode(sampled / factor).sample / 2 + 0.5).clamp(0, 1))


def test_guidance_combines_separate_branches(sd: DiffusionComponents) -> None:
    latents, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 700])
    uncond, cond = sd.encode_prompts(["", ""]), sd.encode_prompts(PROMPTS)
    with torch.no_grad():
        eps_u = sd.unet(latents, t, encoder_hidden_states=uncond).sample
        eps_c = sd.unet(latents, t, encoder_hidden_states=cond).sample
        batched = unet_branches(sd.unet, latents, t, [uncond, cond])
        guided = guided_noise(sd.unet, latents, t, 7.5, (uncond, cond))
        unguided = guided_noise(sd.unet, latents, t, 1.0, (uncond, cond))
    torch.testing.assert_close(batched[0], eps_u, atol=1e-5, rtol=0)
    torch.testing.assert_close(guided, eps_u + 7.5 * (eps_c - eps_u), atol=1e-4, rtol=0)
    torch.testing.assert_close(unguided, eps_c, atol=1e-5, rtol=0)


def test_v_prediction_is_converted_to_noise(sd: DiffusionComponents) -> None:
    """x_t = sqrt(a) x0 + sqrt(1-a) eps and v = sqrt(a) eps - sqrt(1-a) x0 give back eps (diffusers' get_velocity)."""
    scheduler = make_scheduler("ddpm", sd.scheduler.config, prediction_type="v_prediction")
    x0, eps, t = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8), torch.tensor([5, 500, 990])
    v, x_t, a = scheduler.get_velocity(x0, eps, t), scheduler.add_noise(x0, eps, t), scheduler.alphas_cumprod[t]
    torch.testing.assert_close(epsilon_from(v, x_t, a, "v_prediction"), eps, atol=1e-5, rtol=0)
    assert epsilon_from(v, x_t, a, "epsilon") is v


def test_score_distillation_gradient_is_the_weighted_residual() -> None:
    latents = torch.randn(2, 4, 8, 8, requires_grad=True)
    noise, eps_hat, weight = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([0.25, 0.75])
    loss, grad = score_distillation(latents, noise, eps_hat, weight)
    loss.backward()
    expected = weight.view(2, 1, 1, 1) * (eps_hat - noise)
    torch.testing.assert_close(grad, expected)
    torch.testing.assert_close(latents.grad, expected / 2)
    torch.testing.assert_close(loss, expected.square().sum() / 4)


def test_schedulers_share_the_noise_schedule_and_names_are_checked(sd: DiffusionComponents) -> None:
    for name in SCHEDULERS:
        built = make_scheduler(name, sd.scheduler.config)
        torch.testing.assert_close(built.alphas_cumprod, sd.scheduler.alphas_cumprod)
    assert make_scheduler("ddim", sd.scheduler.config).config.clip_sample is False
    with pytest.raises(ConfigError, match=r"^X.scheduler: unknown scheduler 'heun'; choose one of ddim, ddpm"):
        make_scheduler("heun", sd.scheduler.config, "X.scheduler")
    assert resolve_torch_dtype("auto", "cpu") == torch.float32 and resolve_torch_dtype("auto", "cuda") == torch.float16
    with pytest.raises(ConfigError, match="unknown dtype 'float64'"):
        resolve_torch_dtype("float64", "cpu")


def test_widened_conv_in_keeps_the_old_channels() -> None:
    unet = tiny_unet(4)
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        before = unet.conv_in(x)
        widen_conv_in(unet, 12)
        after = unet.conv_in(torch.cat([x, torch.randn(1, 8, 8, 8)], dim=1))
    torch.testing.assert_close(after, before)
    assert unet.config.in_channels == 12


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    components = tiny_components(IMAGE_PARTS, 16, seed=3)
    folder = components.save_pretrained(tmp_path / "ng")
    loaded = DiffusionComponents.from_pretrained(folder, IMAGE_PARTS, scheduler="euler")
    assert type(loaded.scheduler).__name__ == "EulerDiscreteScheduler" and loaded.text_encoder is None
    for name in IMAGE_PARTS:
        reference = getattr(components, name).state_dict()
        assert all(torch.equal(v, reference[k]) for k, v in getattr(loaded, name).state_dict().items()), name


def test_loading_errors_are_one_line_and_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^Cfg.model_path: not set"):
        DiffusionComponents.from_pretrained(None, TEXT_PARTS, option="Cfg.model_path")
    with pytest.raises(WeightsError, match="checkpoint folder not found"):
        DiffusionComponents.from_pretrained(tmp_path / "nowhere", TEXT_PARTS)
    components = tiny_components(TEXT_PARTS, 4)
    folder = components.save_pretrained(tmp_path / "sd")
    (folder / "vae" / "config.json").write_text("{not json")
    with pytest.raises(WeightsError) as info:
        DiffusionComponents.from_pretrained(folder, TEXT_PARTS)
    assert str(info.value).startswith(f"{folder / 'vae'}: cannot be read as a AutoencoderKL") and "\n" not in str(
        info.value
    )
    # Pickled weights are never read: a UNet saved as .bin only is refused.
    components.unet.save_pretrained(folder / "unet", safe_serialization=False)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    components.vae.save_pretrained(folder / "vae")
    with pytest.raises(WeightsError) as info:
        DiffusionComponents.from_pretrained(folder, TEXT_PARTS)
    assert str(info.value).startswith(str(folder / "unet"))
    with pytest.raises(WeightsError, match="missing components: text_encoder"):
        DiffusionComponents.from_parts({**components.parts(), "text_encoder": None}, TEXT_PARTS, "x")


def test_weights_that_do_not_fit_their_config_are_one_line(tmp_path: Path) -> None:
    """A tensor whose shape differs from the one config.json builds is named, with both shapes (diffusers and
    transformers would only warn and leave random weights)."""
    folder = tiny_components(TEXT_PARTS, 4).save_pretrained(tmp_path / "sd")
    vocab = 600
    clip_text_encoder(vocab).save_pretrained(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "model.safetensors", folder / "text_encoder")
    with pytest.raises(WeightsError) as info:
        DiffusionComponents.from_pretrained(folder, TEXT_PARTS)
    expected = (514, 32)  # the tiny byte-level vocabulary: 2 special tokens + 2 x 256 byte symbols
    assert str(info.value) == (
        f"{folder / 'text_encoder'}: embeddings.token_embedding.weight has shape ({vocab}, 32) in model.safetensors, "
        f"config.json expects {expected}"
    )


def _settings(scheduler) -> dict:
    return {k: v for k, v in scheduler.config.items() if not k.startswith("_")}


def test_checkpoint_scheduler_is_the_folders_class_with_its_settings(tmp_path: Path) -> None:
    from diffusers import EulerAncestralDiscreteScheduler

    parts = tiny_components(TEXT_PARTS, 4)
    parts.scheduler = EulerAncestralDiscreteScheduler.from_config(parts.scheduler.config, timestep_spacing="trailing")
    folder = parts.save_pretrained(tmp_path / "sd")
    loaded = DiffusionComponents.from_pretrained(folder, TEXT_PARTS, scheduler="checkpoint")
    assert type(loaded.scheduler) is EulerAncestralDiscreteScheduler
    assert _settings(loaded.scheduler) == _settings(parts.scheduler)
    first = loaded.scheduler
    assert loaded.with_sampler("checkpoint").scheduler is not first  # a fresh copy: no state shared between runs
    assert _settings(loaded.scheduler) == _settings(first) and type(loaded.scheduler) is type(first)
    assert type(DiffusionComponents.from_pretrained(folder, TEXT_PARTS).scheduler).__name__ == "DDIMScheduler"
    with pytest.raises(ConfigError, match=r"^X.scheduler: unknown scheduler 'heun'"):
        loaded.with_sampler("heun", "X.scheduler")
