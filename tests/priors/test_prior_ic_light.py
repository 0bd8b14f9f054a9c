"""IC-Light adapter with tiny random fc / fbc models, checked against diffusers' pipelines driven as IC-Light's demo
drives them (a UNet hook that concatenates the condition latents)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from prior_fixtures import disc_views, orbit_cameras, reference_pipeline, seeded, sun_envmap

from relight3d.errors import ConfigError
from relight3d.priors.base import PriorViews
from relight3d.priors.diffusion.components import TEXT_PARTS
from relight3d.priors.diffusion.testing import RESOLUTION, tiny_components
from relight3d.priors.ic_light import ICLightPrior, ICLightPriorConfig
from relight3d.priors.registry import PRIORS

PRIOR_CONFIG = ICLightPriorConfig
"""The prior under test (the ``prior`` and ``tiny_prior_config`` fixtures of conftest.py build it)."""


def _views():
    images, masks = disc_views(2, RESOLUTION, RESOLUTION)
    return images, torch.ones_like(masks), orbit_cameras(2)


def _scaled_means(prior: ICLightPrior, images: torch.Tensor) -> torch.Tensor:
    """VAE posterior means times the scaling factor of channel-first images in [0, 1] (IC-Light's conditions)."""
    vae = prior.components.vae
    with torch.no_grad():
        return vae.encode(images * 2 - 1).latent_dist.mean * vae.config.scaling_factor


def _demo(prior: ICLightPrior, pipeline_class, images, cameras, env, seeds, **kwargs) -> torch.Tensor:
    """IC-Light's demo run of ``pipeline_class``: per-view prompts, its negative prompt and guidance, and the
    foreground latent (whole-image masks: no grey around it) concatenated in both guidance branches."""
    foreground = _scaled_means(prior, images.permute(0, 3, 1, 2))
    pipe = reference_pipeline(
        pipeline_class, prior.components, lambda n: foreground.repeat(n // len(foreground), 1, 1, 1)
    )
    return pipe(
        prompt=prior.prompts(cameras, env), negative_prompt=[prior.config.negative_prompt] * len(images),
        guidance_scale=prior.config.guidance_scale, generator=seeded(*seeds), output_type="pt", **kwargs,
    ).images.permute(0, 2, 3, 1)  # fmt: skip


def test_text_only_start_matches_stable_diffusion_pipeline(prior: ICLightPrior) -> None:
    from diffusers import StableDiffusionPipeline

    images, masks, cameras = _views()
    env = sun_envmap((0.3, 1.0, 0.8))
    prompts = prior.prompts(cameras, env)
    assert prompts[0].startswith("an object, ") and prompts[0].endswith(", best quality")
    prior.config.lighting_preview_strength = 1.0
    try:
        ours = prior.relight(PriorViews(images, masks, cameras, env, generator=seeded(5, 6)))
    finally:
        prior.config.lighting_preview_strength = 0.9
    size = dict(height=RESOLUTION, width=RESOLUTION, num_inference_steps=2)
    theirs = _demo(prior, StableDiffusionPipeline, images, cameras, env, (5, 6), **size)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_lighting_preview_start_matches_img2img_pipeline(prior: ICLightPrior) -> None:
    from diffusers import StableDiffusionImg2ImgPipeline

    images, masks, cameras = _views()
    env = sun_envmap((0.0, -1.0, 0.2))
    prior.config.num_inference_steps = 4
    try:
        ours = prior.relight(PriorViews(images, masks, cameras, env, generator=seeded(7, 8)))
    finally:
        prior.config.num_inference_steps = 2
    previews = prior.lighting_previews(cameras, prior.prepare_envmap(env))
    # the camera's left (world -Y seen from +X) is brighter in the preview of view 0
    assert previews[0, :, :, : RESOLUTION // 2].mean() > previews[0, :, :, RESOLUTION // 2 :].mean()
    start = dict(image=_scaled_means(prior, previews), strength=0.9, num_inference_steps=int(round(4 / 0.9)))
    theirs = _demo(prior, StableDiffusionImg2ImgPipeline, images, cameras, env, (7, 8), **start)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_refine_matches_img2img_from_the_view_latent(prior: ICLightPrior) -> None:
    from diffusers import StableDiffusionImg2ImgPipeline

    images, masks, cameras = _views()
    env = prior.prepare_envmap(sun_envmap((0.0, 1.0, 0.3)))
    prompts = prior.prompts(cameras, env)
    assert "from the right" in prompts[0] and prompts[0] != prompts[1]  # camera 0's right is world +Y
    prior.config.num_inference_steps = 4
    try:
        ours = prior.refine(PriorViews(images, masks, cameras, env, generator=seeded(1, 2)), 0.5)
    finally:
        prior.config.num_inference_steps = 2
    start = dict(image=_scaled_means(prior, images.permute(0, 3, 1, 2)), strength=0.5, num_inference_steps=4)
    theirs = _demo(prior, StableDiffusionImg2ImgPipeline, images, cameras, env, (1, 2), **start)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match=r"^ICLightPriorConfig.lighting_preview_strength: must be in \(0, 1\]"):
        ICLightPrior.from_components(ICLightPriorConfig(lighting_preview_strength=0.0), **prior.components.parts())


def test_background_conditioned_variant_sees_the_environment(tmp_path: Path, tiny_prior_config) -> None:
    folder = tiny_components(TEXT_PARTS, 12).save_pretrained(tmp_path / "fbc")
    prior = tiny_prior_config(folder).setup()
    assert prior.variant == "fbc"
    images, masks, cameras = _views()
    env = sun_envmap((-1.0, 0.0, 0.0), sky=0.3)  # behind the first camera's view direction: in its background
    seen = []
    unet = prior.components.unet
    original = unet.forward

    def spy(sample, timestep, encoder_hidden_states, **kwargs):
        seen.append(sample.clone())
        return original(sample, timestep, encoder_hidden_states, **kwargs)

    unet.forward = spy
    try:
        out = prior.relight(PriorViews(images, masks, cameras, env, generator=0))
    finally:
        unet.forward = original
    backgrounds = prior.backgrounds(cameras, prior.prepare_envmap(env))
    assert backgrounds[0].mean() > backgrounds[1].mean() + 0.05  # view 0 looks towards the sun
    torch.testing.assert_close(seen[0][2:, 8:12], _scaled_means(prior, backgrounds), atol=1e-5, rtol=0)
    torch.testing.assert_close(seen[0][:2, 4:], seen[0][2:, 4:])  # conditions identical in both guidance branches
    other = prior.relight(PriorViews(images, masks, cameras, sun_envmap((1.0, 0.0, 0.0), sky=0.3), generator=0))
    assert (out - other).abs().mean() > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["ic-light", "ic-light-public"])
def test_real_weights_light_the_side_the_light_comes_from(real_prior, preset: str) -> None:
    config = PRIORS[preset]()
    kept = {
        f.name for f in dataclasses.fields(config) if f.init and f.name not in ("_target", "model_path", "offset_path")
    }
    prior = real_prior(**{**{name: getattr(config, name) for name in kept}, "resolution": 512})
    images, masks = disc_views(1, 512, 512)
    images = torch.where(masks > 0.5, torch.full_like(images, 0.7), images)
    camera = orbit_cameras(1)  # its right is world +Y
    from_right = prior.relight(
        PriorViews(images, masks, camera, sun_envmap((0.0, 1.0, 0.2), 64, sky=0.05), generator=0)
    )
    from_left = prior.relight(
        PriorViews(images, masks, camera, sun_envmap((0.0, -1.0, 0.2), 64, sky=0.05), generator=0)
    )
    right_half, left_half = (slice(None), slice(None), slice(256, None)), (slice(None), slice(None), slice(None, 256))
    assert from_right[right_half].mean() - from_right[left_half].mean() > 0.02
    assert from_left[left_half].mean() - from_left[right_half].mean() > 0.02
