"""InstructPix2Pix adapter with a tiny random model, checked against diffusers' own pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from prior_fixtures import disc_views, orbit_cameras, reference_pipeline, seeded, sun_envmap

from relight3d.errors import WeightsError
from relight3d.priors.base import PriorViews
from relight3d.priors.diffusion.components import TEXT_PARTS
from relight3d.priors.diffusion.testing import RESOLUTION, tiny_components
from relight3d.priors.instruct_pix2pix import InstructPix2PixPrior, InstructPix2PixPriorConfig

PRIOR_CONFIG = InstructPix2PixPriorConfig
"""The prior under test (the ``prior`` and ``tiny_prior_config`` fixtures of conftest.py build it)."""


def test_matches_the_diffusers_pipeline(prior: InstructPix2PixPrior) -> None:
    from diffusers import StableDiffusionInstructPix2PixPipeline

    images, masks = disc_views(2, RESOLUTION, RESOLUTION)
    masks = torch.ones_like(masks)  # whole image: no compositing, no resizing
    cameras = orbit_cameras(2)
    env = sun_envmap((0.0, 1.0, 0.6))
    prompts = prior.prompts(cameras, env)
    assert all(p.startswith("relight it with ") and "light" in p for p in prompts)
    ours = prior.relight(PriorViews(images, masks, cameras, env, generator=seeded(3, 4)))
    pipe = reference_pipeline(StableDiffusionInstructPix2PixPipeline, prior.components)
    theirs = pipe(
        prompt=prompts,
        negative_prompt=[""] * 2,
        image=images.permute(0, 3, 1, 2),
        num_inference_steps=2,
        guidance_scale=7.5,
        image_guidance_scale=1.5,
        generator=seeded(3, 4),
        output_type="pt",
    ).images
    torch.testing.assert_close(ours, theirs.permute(0, 2, 3, 1), atol=1e-5, rtol=0)


def test_prompt_follows_the_light_relative_to_the_camera(prior: InstructPix2PixPrior) -> None:
    camera = orbit_cameras(1)  # at +X looking at the origin: its right is world +Y
    assert "from the right" in prior.prompts(camera, sun_envmap((0.0, 1.0, 0.0)))[0]
    assert "from the left" in prior.prompts(camera, sun_envmap((0.0, -1.0, 0.0)))[0]
    assert "from the front" in prior.prompts(camera, sun_envmap((1.0, 0.0, 0.0)))[0]
    assert "from behind" in prior.prompts(camera, sun_envmap((-1.0, 0.0, 0.0)))[0]


def test_one_branch_without_guidance_and_refine_keeps_the_background(prior: InstructPix2PixPrior) -> None:
    images, masks = disc_views(2)
    cameras, env = orbit_cameras(2), sun_envmap((0.0, 1.0, 0.3))
    calls = []
    unet = prior.components.unet
    original = unet.forward

    def spy(sample, timestep, encoder_hidden_states, **kwargs):
        calls.append(sample.shape[0])
        return original(sample, timestep, encoder_hidden_states, **kwargs)

    unet.forward = spy
    try:
        prior.relight(PriorViews(images, masks, cameras, env, generator=1))
        prior.config.image_guidance_scale = 0.5  # below 1: InstructPix2Pix runs the text-and-image branch only
        prior.relight(PriorViews(images, masks, cameras, env, generator=1))
    finally:
        unet.forward = original
        prior.config.image_guidance_scale = 1.5
    assert calls == [6, 6, 2, 2]
    inside = masks.expand_as(images) > 0.5
    half = prior.refine(PriorViews(images, masks, cameras, env, generator=1), 0.5)
    assert (half - prior.refine(PriorViews(images, masks, cameras, env), 0.0))[inside].abs().mean() > 1e-4
    assert torch.equal(half[~inside], images[~inside])


def test_missing_tokenizer_is_a_one_line_error(tmp_path: Path, tiny_prior_config) -> None:
    components = tiny_components(TEXT_PARTS, 8)
    components.tokenizer = None
    missing = components.save_pretrained(tmp_path / "no_tokenizer")
    with pytest.raises(WeightsError, match="missing tokenizer/"):
        tiny_prior_config(missing).setup()


@pytest.mark.slow
def test_real_weights_run_and_follow_the_instruction(real_prior) -> None:
    prior = real_prior()
    images, masks = disc_views(1, 256, 256)
    camera = orbit_cameras(1)
    warm = prior.relight(
        PriorViews(images, masks, camera, sun_envmap((0.0, 1.0, 0.5), 64, colour=(1.0, 0.6, 0.3)), generator=0)
    )
    cool = prior.relight(
        PriorViews(images, masks, camera, sun_envmap((0.0, 1.0, 0.5), 64, colour=(0.3, 0.6, 1.0)), generator=0)
    )
    inside = masks.expand_as(images) > 0.5
    red_minus_blue = lambda x: (x[..., 0] - x[..., 2])[inside[..., 0]].mean()  # noqa: E731
    assert red_minus_blue(warm) > red_minus_blue(cool)
