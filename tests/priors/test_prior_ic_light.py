"""IC-Light adapter with tiny random fc / fbc models, checked against diffusers' pipelines driven as IC-Light's demo
drives them (an ``unet.forward`` hook that concatenates the condition latents)."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
from prior_fixtures import (
    RESOLUTION,
    disc_views,
    orbit_cameras,
    save_components,
    sun_envmap,
    text_prior_components,
    tiny_unet,
)

from relight3d.priors.base import PriorError
from relight3d.priors.ic_light import ICLightPrior, ICLightPriorConfig


def _config(model_path: Path, **kwargs) -> ICLightPriorConfig:
    kwargs.setdefault("num_inference_steps", 2)
    kwargs.setdefault("envmap_height", 16)
    return ICLightPriorConfig(model_path=model_path, **kwargs)


@pytest.fixture(scope="module")
def prior(tiny_ic_light_dir: Path) -> ICLightPrior:
    return _config(tiny_ic_light_dir).setup(device="cpu")


def _hooked_pipeline(prior: ICLightPrior, pipeline_class):
    """IC-Light's demo set-up: a UNet whose forward concatenates ``concat_conds`` and whose config says 4 channels."""
    unet = copy.deepcopy(prior.unet)
    original = unet.forward

    def hooked_forward(sample, timestep, encoder_hidden_states, **kwargs):
        concat = kwargs["cross_attention_kwargs"]["concat_conds"].to(sample)
        concat = torch.cat([concat] * (sample.shape[0] // concat.shape[0]), dim=0)
        kwargs["cross_attention_kwargs"] = {}
        return original(torch.cat([sample, concat], dim=1), timestep, encoder_hidden_states, **kwargs)

    unet.forward = hooked_forward
    unet.register_to_config(in_channels=4)
    parts = prior._replicas[0].components
    pipe = pipeline_class(
        vae=prior.vae,
        text_encoder=parts["text_encoder"],
        tokenizer=parts["tokenizer"],
        unet=unet,
        scheduler=copy.deepcopy(prior.scheduler),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _views():
    images, masks = disc_views(2, RESOLUTION, RESOLUTION)
    return images, torch.ones_like(masks), orbit_cameras(2)


def _foreground_latents(prior: ICLightPrior, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        x = images.permute(0, 3, 1, 2) * 2 - 1
        return prior.vae.encode(x).latent_dist.mode() * prior.vae.config.scaling_factor


def test_text_only_start_matches_stable_diffusion_pipeline(prior: ICLightPrior) -> None:
    from diffusers import StableDiffusionPipeline

    prior.config.lighting_preview_strength = 1.0
    try:
        images, masks, cameras = _views()
        env = sun_envmap((0.3, 1.0, 0.8))
        prompts = prior.prompts(cameras, env)
        assert prompts[0].startswith("an object, ") and prompts[0].endswith(", best quality")
        gens = lambda: [torch.Generator().manual_seed(i) for i in (5, 6)]  # noqa: E731
        ours = prior.relight(images, masks, cameras, env, generator=gens())
        pipe = _hooked_pipeline(prior, StableDiffusionPipeline)
        theirs = pipe(
            prompt=prompts,
            negative_prompt=[prior.config.negative_prompt] * 2,
            height=RESOLUTION,
            width=RESOLUTION,
            num_inference_steps=2,
            guidance_scale=2.0,
            generator=gens(),
            output_type="pt",
            cross_attention_kwargs={"concat_conds": _foreground_latents(prior, images)},
        ).images
        torch.testing.assert_close(ours, theirs.permute(0, 2, 3, 1), atol=1e-5, rtol=0)
    finally:
        prior.config.lighting_preview_strength = 0.9


def test_lighting_preview_start_matches_img2img_pipeline(prior: ICLightPrior) -> None:
    from diffusers import StableDiffusionImg2ImgPipeline

    images, masks, cameras = _views()
    env = sun_envmap((0.0, -1.0, 0.2))
    gens = lambda: [torch.Generator().manual_seed(i) for i in (7, 8)]  # noqa: E731
    prior.config.num_inference_steps = 4
    try:
        ours = prior.relight(images, masks, cameras, env, generator=gens())
        previews = prior.lighting_previews(cameras, prior.prepare_envmap(env))
        # the camera's left (world -Y seen from +X) is brighter in the preview of view 0
        assert previews[0, :, :, : RESOLUTION // 2].mean() > previews[0, :, :, RESOLUTION // 2 :].mean()
        with torch.no_grad():
            start = prior.vae.encode(previews * 2 - 1).latent_dist.mode() * prior.vae.config.scaling_factor
        pipe = _hooked_pipeline(prior, StableDiffusionImg2ImgPipeline)
        theirs = pipe(
            prompt=prior.prompts(cameras, env),
            negative_prompt=[prior.config.negative_prompt] * 2,
            image=start,
            strength=0.9,
            num_inference_steps=int(round(4 / 0.9)),
            guidance_scale=2.0,
            generator=gens(),
            output_type="pt",
            cross_attention_kwargs={"concat_conds": _foreground_latents(prior, images)},
        ).images
        torch.testing.assert_close(ours, theirs.permute(0, 2, 3, 1), atol=1e-5, rtol=0)
    finally:
        prior.config.num_inference_steps = 2


def test_deterministic_lighting_dependent_and_refine(prior: ICLightPrior) -> None:
    images, masks = disc_views(2)
    cameras = orbit_cameras(2)
    left, right = sun_envmap((0.0, 1.0, 0.3)), sun_envmap((0.0, -1.0, 0.3), colour=(0.6, 0.7, 1.0))
    a = prior.relight(images, masks, cameras, left, generator=2)
    assert torch.equal(a, prior.relight(images, masks, cameras, left, generator=2))
    inside = masks.expand_as(images) > 0.5
    assert (a - prior.relight(images, masks, cameras, right, generator=2))[inside].abs().mean() > 1e-3
    zero = prior.refine(images, masks, cameras, left, 0.0)
    assert (prior.refine(images, masks, cameras, left, 0.5, generator=2) - zero)[inside].abs().mean() > 1e-4


def test_offset_weights_on_sd15_equal_the_merged_unet(tmp_path: Path, tiny_ic_light_dir: Path) -> None:
    from safetensors.torch import save_file

    merged = text_prior_components(8)
    torch.manual_seed(1)
    base_unet = tiny_unet(4)
    base_state = base_unet.state_dict()
    offset = {}
    for key, value in merged["unet"].state_dict().items():
        base = base_state[key]
        if key == "conv_in.weight":  # the base's conv_in, widened with zeros
            base = torch.cat([base, torch.zeros_like(base)], dim=1)
        offset[key] = (value - base).contiguous()
    offset_file = tmp_path / "iclight_sd15_fc.safetensors"
    save_file(offset, str(offset_file))
    sd15 = save_components(tmp_path / "sd15", **dict(merged, unet=base_unet))
    from_offset = _config(sd15, offset_path=offset_file).setup()
    reference = _config(tiny_ic_light_dir).setup()
    assert from_offset.variant == "fc"
    images, masks = disc_views(1)
    args = (images, masks, orbit_cameras(1), sun_envmap((0.0, 1.0, 0.3)))
    torch.testing.assert_close(from_offset.relight(*args), reference.relight(*args), atol=1e-5, rtol=0)
    with pytest.raises(PriorError) as info:  # plain SD1.5 without the offset
        _config(sd15).setup()
    assert "4 input channels" in str(info.value) and "offset_path" in str(info.value)


def test_background_conditioned_variant_sees_the_environment(tmp_path: Path) -> None:
    folder = save_components(tmp_path / "fbc", **text_prior_components(12))
    prior = _config(folder).setup()
    assert prior.variant == "fbc"
    images, masks, cameras = _views()
    env = sun_envmap((-1.0, 0.0, 0.0), sky=0.3)  # behind the first camera's view direction: in its background
    seen = []
    original = prior.unet.forward

    def spy(sample, timestep, encoder_hidden_states, **kwargs):
        seen.append(sample.clone())
        return original(sample, timestep, encoder_hidden_states, **kwargs)

    prior.unet.forward = spy
    try:
        out = prior.relight(images, masks, cameras, env, generator=0)
    finally:
        prior.unet.forward = original
    backgrounds = prior.backgrounds(cameras, prior.prepare_envmap(env))
    assert backgrounds[0].mean() > backgrounds[1].mean() + 0.05  # view 0 looks towards the sun
    with torch.no_grad():
        expected = prior.vae.encode(backgrounds * 2 - 1).latent_dist.mode() * prior.vae.config.scaling_factor
    torch.testing.assert_close(seen[0][2:, 8:12], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(seen[0][:2, 4:], seen[0][2:, 4:])  # conditions identical in both guidance branches
    other = prior.relight(images, masks, cameras, sun_envmap((1.0, 0.0, 0.0), sky=0.3), generator=0)
    assert (out - other).abs().mean() > 1e-3


REAL_WEIGHTS = os.environ.get("RELIGHT3D_IC_LIGHT_PATH")


@pytest.mark.slow
@pytest.mark.skipif(
    not REAL_WEIGHTS,
    reason="set RELIGHT3D_IC_LIGHT_PATH to an SD1.5 folder and RELIGHT3D_IC_LIGHT_OFFSET to "
    "iclight_sd15_fc.safetensors (or the path alone to a merged folder); no weights are available here",
)
def test_real_weights_light_the_side_the_light_comes_from() -> None:
    offset = os.environ.get("RELIGHT3D_IC_LIGHT_OFFSET")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    prior = ICLightPriorConfig(
        model_path=Path(REAL_WEIGHTS), offset_path=Path(offset) if offset else None, resolution=512
    ).setup(device=device)
    images, masks = disc_views(1, 512, 512)
    images = torch.where(masks > 0.5, torch.full_like(images, 0.7), images)
    camera = orbit_cameras(1)  # its right is world +Y
    from_right = prior.relight(images, masks, camera, sun_envmap((0.0, 1.0, 0.2), 64, sky=0.05), generator=0)
    from_left = prior.relight(images, masks, camera, sun_envmap((0.0, -1.0, 0.2), 64, sky=0.05), generator=0)
    right_half, left_half = (slice(None), slice(None), slice(256, None)), (slice(None), slice(None), slice(None, 256))
    assert from_right[right_half].mean() - from_right[left_half].mean() > 0.02
    assert from_left[left_half].mean() - from_left[right_half].mean() > 0.02
