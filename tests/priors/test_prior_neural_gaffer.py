"""Neural Gaffer prior with a tiny random model of the same architecture, checked against diffusers' pipelines driven
the way Neural Gaffer's pipeline drives its UNet (and real weights when available)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from prior_fixtures import disc_views, orbit_cameras, reference_pipeline, seeded, sun_envmap

from relight3d.errors import ConfigError, WeightsError
from relight3d.priors.base import PriorViews, composite, from_square, make_generators, per_view_noise, to_square
from relight3d.priors.diffusion.components import IMAGE_PARTS
from relight3d.priors.diffusion.testing import RESOLUTION, tiny_components, tiny_unet
from relight3d.priors.neural_gaffer import (
    CLIP_MEAN,
    CLIP_STD,
    NeuralGafferPrior,
    NeuralGafferPriorConfig,
    encode_lighting_images,
)

PRIOR_CONFIG = NeuralGafferPriorConfig
"""The prior under test (the ``prior`` and ``tiny_prior_config`` fixtures of conftest.py build it)."""


@pytest.fixture(scope="module")
def views():
    images, masks = disc_views(3)
    return images, masks, orbit_cameras(3)


def _reference_condition(prior: NeuralGafferPrior, square: torch.Tensor, cameras, env):
    """Neural Gaffer's conditioning computed from the networks directly: the CLIP embedding of the bicubically
    resized, CLIP-normalised view, and the unscaled VAE means of the view, the HDR map and the LDR map."""
    parts = prior.components
    hdr, ldr = encode_lighting_images(prior.prepare_envmap(env), cameras, RESOLUTION)
    with torch.no_grad():
        means = [parts.vae.encode(x * 2 - 1).latent_dist.mean for x in (square, hdr, ldr)]
        pixels = torch.nn.functional.interpolate(square * 2 - 1, size=(16, 16), mode="bicubic", align_corners=True)
        pixels = ((pixels + 1) / 2 - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        embeds = parts.image_encoder(pixel_values=pixels).image_embeds[:, None]
    return embeds, torch.cat(means, dim=1)


def _gaffer_pipeline(prior: NeuralGafferPrior, pipeline_class, concat: torch.Tensor):
    """A diffusers pipeline whose UNet gets ``concat`` appended, zeroed in the unconditional half (as Neural Gaffer's
    pipeline does)."""
    with_zeros = torch.cat([torch.zeros_like(concat), concat])
    return reference_pipeline(pipeline_class, prior.components, lambda n: concat if n == len(concat) else with_zeros)


def test_loads_from_folder_and_matches_the_saved_weights(prior: NeuralGafferPrior) -> None:
    reference = tiny_components(IMAGE_PARTS, 16)
    assert prior.resolution == RESOLUTION and type(prior.components.scheduler).__name__ == "DDIMScheduler"
    for name in IMAGE_PARTS:
        loaded = getattr(prior.components, name).state_dict()
        for key, value in getattr(reference, name).state_dict().items():
            assert torch.equal(loaded[key], value), (name, key)


def test_relight_matches_the_guided_pipeline(prior: NeuralGafferPrior) -> None:
    from diffusers import StableDiffusionPipeline

    images, masks = disc_views(2, RESOLUTION, RESOLUTION)
    masks, cameras, env = torch.ones_like(masks), orbit_cameras(2), sun_envmap((0.0, 1.0, 0.5))
    ours = prior.relight(PriorViews(images, masks, cameras, env, generator=seeded(3, 4)))
    other_light = PriorViews(images, masks, cameras, sun_envmap((0.0, -1.0, 0.5)), generator=seeded(3, 4))
    embeds, concat = _reference_condition(prior, images.permute(0, 3, 1, 2), cameras, env)
    theirs = _gaffer_pipeline(prior, StableDiffusionPipeline, concat)(
        prompt_embeds=embeds, negative_prompt_embeds=torch.zeros_like(embeds), height=RESOLUTION, width=RESOLUTION,
        num_inference_steps=2, guidance_scale=3.0, generator=seeded(3, 4), output_type="pt",
    ).images  # fmt: skip
    torch.testing.assert_close(ours, theirs.permute(0, 2, 3, 1), atol=1e-5, rtol=0)
    assert (ours - prior.relight(other_light)).abs().mean() > 1e-3


def test_refine_is_sdedit_from_the_image_latent(prior: NeuralGafferPrior) -> None:
    from diffusers import StableDiffusionImg2ImgPipeline

    images, masks = disc_views(2, RESOLUTION, RESOLUTION)
    masks, cameras, env = torch.ones_like(masks), orbit_cameras(2), sun_envmap((0.5, 1.0, 0.2))
    square = images.permute(0, 3, 1, 2)
    embeds, concat = _reference_condition(prior, square, cameras, env)
    parts = prior.components
    with torch.no_grad():
        start = parts.vae.encode(square * 2 - 1).latent_dist.mean * parts.vae.config.scaling_factor
        round_trip = (parts.vae.decode(start / parts.vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
    views = PriorViews(images, masks, cameras, env)
    torch.testing.assert_close(prior.refine(views, 0.0), round_trip.permute(0, 2, 3, 1))
    prior.config.num_inference_steps = 4
    try:
        ours = prior.refine(PriorViews(images, masks, cameras, env, generator=seeded(7, 8)), 0.5)
        theirs = _gaffer_pipeline(prior, StableDiffusionImg2ImgPipeline, concat)(
            prompt_embeds=embeds, negative_prompt_embeds=torch.zeros_like(embeds), image=start, strength=0.5,
            num_inference_steps=4, guidance_scale=3.0, generator=seeded(7, 8), output_type="pt",
        ).images  # fmt: skip
        torch.testing.assert_close(ours, theirs.permute(0, 2, 3, 1), atol=1e-5, rtol=0)
        views.generator = 5
        torch.testing.assert_close(prior.refine(views, 1.0), prior.relight(views))
    finally:
        prior.config.num_inference_steps = 2


def test_views_are_squared_on_white_and_composited_back(prior, views) -> None:
    images, masks, cameras = views
    env = sun_envmap((0.0, 1.0, 0.5))
    square, layout = to_square(composite(images, masks, (1.0, 1.0, 1.0)), RESOLUTION, 1.0)
    with torch.no_grad():
        latents = prior.components.vae.encode(square * 2 - 1).latent_dist.mean
        round_trip = (prior.components.vae.decode(latents).sample / 2 + 0.5).clamp(0, 1)
    expected = composite(from_square(round_trip, layout), masks, images)
    views = PriorViews(images, masks, cameras, env, generator=0)
    torch.testing.assert_close(prior.refine(views, 0.0), expected, atol=1e-5, rtol=0)
    # Stage 2 conditions on the original views, not on the renders being refined.
    conditioned = prior.refine(replace(views, condition_images=images.flip(-1)), 0.5)
    assert (conditioned - prior.refine(views, 0.5)).abs().max() > 1e-3


def test_a_view_does_not_depend_on_its_batch_or_device_split(tiny_prior_config, views) -> None:
    images, masks, cameras = views
    env = sun_envmap((1.0, 0.0, 1.0))
    single = tiny_prior_config().setup(device="cpu")
    split = tiny_prior_config(devices=("cpu", "cpu"), max_batch_size=1).setup(device="cpu")
    assert len(split.devices) == 2
    gens = lambda: seeded(10, 11, 12)  # noqa: E731
    whole = single.relight(PriorViews(images, masks, cameras, env, generator=gens()))
    parts = split.relight(PriorViews(images, masks, cameras, env, generator=gens()))
    alone = single.relight(PriorViews(images[1:2], masks[1:2], cameras[1:2], env, generator=gens()[1:2]))
    torch.testing.assert_close(parts, whole, atol=1e-5, rtol=0)
    torch.testing.assert_close(alone, whole[1:2], atol=1e-5, rtol=0)


def test_unet_sees_noisy_image_hdr_ldr_latents_and_zeroed_unconditional_branch(prior, views) -> None:
    images, masks, cameras = views
    env = sun_envmap((0.5, 1.0, 0.2))
    calls = []
    unet = prior.components.unet
    original = unet.forward

    def spy(sample, timestep, encoder_hidden_states, **kwargs):
        calls.append((sample.clone(), encoder_hidden_states.clone()))
        return original(sample, timestep, encoder_hidden_states, **kwargs)

    unet.forward = spy
    try:
        prior.relight(PriorViews(images, masks, cameras, env, generator=0))
    finally:
        unet.forward = original
    assert len(calls) == 2  # two DDIM steps, both branches in one call each
    sample, context = calls[0]
    b = images.shape[0]
    assert torch.equal(sample[:b, 4:], torch.zeros_like(sample[:b, 4:]))
    assert torch.equal(context[:b], torch.zeros_like(context[:b]))
    assert torch.equal(sample[:b, :4], sample[b:, :4])
    square, _ = to_square(composite(images, masks, (1.0, 1.0, 1.0)), RESOLUTION, 1.0)
    embeds, concat = _reference_condition(prior, square, cameras, env)
    torch.testing.assert_close(sample[b:, 4:], concat, atol=1e-5, rtol=0)
    torch.testing.assert_close(context[b:], embeds, atol=1e-5, rtol=0)


def test_lighting_images_follow_the_camera(views) -> None:
    _, _, cameras = views
    from relight3d.lighting import hdr_encoding, rotate_envmap_to_camera

    env = sun_envmap((1.0, 0.0, 0.3))
    hdr, ldr = encode_lighting_images(env, cameras, 8, quantize=False)
    local = rotate_envmap_to_camera(env, cameras[1])
    expected = torch.nn.functional.interpolate(
        hdr_encoding(local).permute(2, 0, 1)[None], size=(8, 8), mode="bilinear", antialias=True
    )
    torch.testing.assert_close(hdr[1:2], expected)
    assert hdr.max() <= 1.0 and ldr.min() >= 0.0
    assert (hdr[0] - hdr[1]).abs().max() > 0.1  # a different camera sees the sun elsewhere


def test_wrong_settings_are_one_line_errors(tmp_path: Path, tiny_prior_config) -> None:
    with pytest.raises(WeightsError, match="checkpoint folder not found"):
        tiny_prior_config(tmp_path / "nowhere").setup()
    with pytest.raises(ConfigError, match="^NeuralGafferPriorConfig.model_path: not set"):
        NeuralGafferPriorConfig().setup()
    with pytest.raises(ConfigError) as info:
        tiny_prior_config(resolution=18).setup()
    assert str(info.value).startswith("NeuralGafferPriorConfig.resolution: 18 is not a positive multiple of 4")
    assert tiny_prior_config(resolution=24).setup().resolution == 24


def test_accelerate_checkpoint_on_a_zero123_base_equals_the_converted_folder(
    tmp_path: Path, tiny_prior_config, views
) -> None:
    from safetensors.torch import save_file

    components = tiny_components(IMAGE_PARTS, 16)
    gaffer_unet = components.unet
    components.unet = tiny_unet(8)
    base_dir = components.save_pretrained(tmp_path / "zero123")
    checkpoint = tmp_path / "checkpoint-80000"
    checkpoint.mkdir()
    save_file({k: v.contiguous() for k, v in gaffer_unet.state_dict().items()}, str(checkpoint / "model.safetensors"))
    images, masks, cameras = views
    env = sun_envmap((0.0, 1.0, 0.5))
    from_checkpoint = tiny_prior_config(base_dir, unet_checkpoint=checkpoint).setup()
    reference = tiny_prior_config().setup()
    batch = PriorViews(images, masks, cameras, env)
    torch.testing.assert_close(from_checkpoint.relight(batch), reference.relight(batch))
    converted = from_checkpoint.save_pretrained(tmp_path / "converted")
    assert tiny_prior_config(converted).setup().components.unet.config.in_channels == 16
    (checkpoint / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(WeightsError, match="model.safetensors: cannot be read as UNet weights"):
        tiny_prior_config(base_dir, unet_checkpoint=checkpoint).setup()


def test_sds_gradient_is_the_vae_vjp_of_the_guided_residual(views) -> None:
    images, masks, cameras = views
    config = NeuralGafferPriorConfig(num_inference_steps=2, envmap_height=16)
    prior = NeuralGafferPrior.from_components(config, **tiny_components(IMAGE_PARTS, 16).parts())
    env = sun_envmap((0.0, 1.0, 0.5))
    rendered = images.clone().requires_grad_(True)
    out = prior.sds_loss(PriorViews(rendered, masks, cameras, env, generator=0))
    out["loss_sds"].backward()
    # Reference: the same timesteps and noise (drawn from the same per-view generators), two plain UNet calls.
    b, parts = images.shape[0], prior.components
    gens = make_generators(0, b)
    steps = torch.tensor([int(torch.randint(20, 981, (1,), generator=g)) for g in gens])
    noise = per_view_noise(gens, (4, 8, 8), torch.device("cpu"))
    x = images.clone().requires_grad_(True)
    square, _ = to_square(composite(x, masks, (1.0, 1.0, 1.0)), RESOLUTION, 1.0)
    latents = parts.vae.encode(square * 2 - 1).latent_dist.mean * parts.vae.config.scaling_factor
    embeds, concat = _reference_condition(prior, square.detach(), cameras, env)
    a = parts.scheduler.alphas_cumprod[steps].view(b, 1, 1, 1)
    with torch.no_grad():
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        eps_u = parts.unet(torch.cat([noisy, torch.zeros_like(concat)], 1), steps, torch.zeros_like(embeds)).sample
        eps_c = parts.unet(torch.cat([noisy, concat], 1), steps, embeds).sample
        g = (1 - a) * (eps_u + 3.0 * (eps_c - eps_u) - noise)
    (expected,) = torch.autograd.grad(latents, x, grad_outputs=g / b)
    torch.testing.assert_close(rendered.grad, expected, atol=1e-5, rtol=1e-4)
    assert expected.abs().max() > 1e-4 and rendered.grad[0, 0, 0].abs().sum() == 0  # background is replaced
    torch.testing.assert_close(out["grad_norm"], g.flatten(1).norm(dim=1).mean(), rtol=1e-4, atol=0)


@pytest.mark.slow
def test_real_weights_follow_the_light(real_prior) -> None:
    prior = real_prior(num_inference_steps=20)
    assert prior.resolution == 256

    images, masks = disc_views(2, 256, 256)
    images = composite(torch.full_like(images, 0.7), masks, (1.0, 1.0, 1.0))  # a grey disc
    cameras = orbit_cameras(2)
    views = PriorViews(images, masks, cameras, sun_envmap((0.0, 0.0, 1.0), 64, sun=50.0, sky=1.0))
    bright = prior.relight(views)
    dark = prior.relight(replace(views, target_envmap=sun_envmap((0.0, 0.0, 1.0), 64, sun=0.5, sky=0.02)))
    inside = masks.expand_as(images) > 0.5
    assert bright[inside].mean() > dark[inside].mean() + 0.05


def test_public_preset_differs_from_the_defaults_only_where_documented() -> None:
    import dataclasses

    import tyro

    from relight3d.priors import registry

    public = registry.prior_config("neural-gaffer-public")
    default = NeuralGafferPriorConfig()
    assert type(public) is NeuralGafferPriorConfig
    changed = {f.name for f in dataclasses.fields(default) if getattr(public, f.name) != getattr(default, f.name)}
    assert changed == {
        "envmap_height", "envmap_resize", "lighting_images", "sample_condition_latents", "shared_view_seed", "seed",
    }  # fmt: skip
    assert (public.envmap_height, public.lighting_images, public.seed) == (None, "public", 42)
    assert (public.num_inference_steps, public.guidance_scale, public.scheduler) == (50, 3.0, "ddim")
    # Every field of the preset can be overridden on the command line.
    parsed = tyro.cli(registry.PriorChoice, args=["neural-gaffer-public", "--envmap-height", "128", "--seed", "7"])
    assert (parsed.envmap_height, parsed.seed, parsed.lighting_images) == (128, 7, "public")


def test_shared_view_seed_gives_every_view_the_same_stream(tiny_prior_config, views) -> None:
    images, masks, cameras = views
    prior = tiny_prior_config(shared_view_seed=True, seed=42).setup()
    env = sun_envmap((0.0, 1.0, 0.5))
    for given, seed in ((None, 42), (5, 5)):
        alike = prior.seeded(PriorViews(images, masks, cameras, env, generator=given))
        draws = [torch.randn(4, generator=g) for g in alike.generator]
        assert all(torch.equal(d, torch.randn(4, generator=torch.Generator().manual_seed(seed))) for d in draws)
    mine = seeded(1, 2, 3)
    assert prior.seeded(PriorViews(images, masks, cameras, env, generator=mine)).generator is mine
    # Same images, same light: with one shared stream every view is relit identically.
    same = images[:1].expand_as(images).contiguous()
    relit = prior.relight(
        PriorViews(same, masks[:1].expand_as(masks).contiguous(), cameras[:1].expand_as(cameras), env)
    )
    torch.testing.assert_close(relit[1:], relit[:1].expand_as(relit[1:]))


def test_ddim_runs_with_steps_offset_one_whatever_the_checkpoint_says() -> None:
    """Neural Gaffer's pipeline rewrites the scheduler config to steps_offset = 1 (and clip_sample = False)."""
    parts = tiny_components(IMAGE_PARTS, 16)
    parts.scheduler = type(parts.scheduler).from_config({**parts.scheduler.config, "steps_offset": 0})
    prior = NeuralGafferPrior.from_components(NeuralGafferPriorConfig(num_inference_steps=10), **parts.parts())
    scheduler = prior.components.scheduler
    assert (scheduler.config.steps_offset, scheduler.config.clip_sample) == (1, False)
    scheduler.set_timesteps(10)
    assert scheduler.timesteps.tolist() == [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
