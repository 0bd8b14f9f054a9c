"""InstructPix2Pix adapter with a tiny random model, checked against diffusers' own pipeline."""

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
from relight3d.priors.instruct_pix2pix import InstructPix2PixPrior, InstructPix2PixPriorConfig


def _config(model_path: Path, **kwargs) -> InstructPix2PixPriorConfig:
    kwargs.setdefault("num_inference_steps", 2)
    return InstructPix2PixPriorConfig(model_path=model_path, **kwargs)


@pytest.fixture(scope="module")
def prior(tiny_ip2p_dir: Path) -> InstructPix2PixPrior:
    return _config(tiny_ip2p_dir).setup(device="cpu")


def test_matches_the_diffusers_pipeline(prior: InstructPix2PixPrior) -> None:
    from diffusers import StableDiffusionInstructPix2PixPipeline

    images, masks = disc_views(2, RESOLUTION, RESOLUTION)
    masks = torch.ones_like(masks)  # whole image: no compositing, no resizing
    cameras = orbit_cameras(2)
    env = sun_envmap((0.0, 1.0, 0.6))
    prompts = prior.prompts(cameras, env)
    assert all(p.startswith("relight it with ") and "light" in p for p in prompts)
    ours = prior.relight(images, masks, cameras, env, generator=[torch.Generator().manual_seed(i) for i in (3, 4)])
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=prior.vae,
        text_encoder=prior._replicas[0].components["text_encoder"],
        tokenizer=prior._replicas[0].components["tokenizer"],
        unet=prior.unet,
        scheduler=copy.deepcopy(prior.scheduler),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(
        prompt=prompts,
        negative_prompt=[""] * 2,
        image=images.permute(0, 3, 1, 2),
        num_inference_steps=2,
        guidance_scale=7.5,
        image_guidance_scale=1.5,
        generator=[torch.Generator().manual_seed(i) for i in (3, 4)],
        output_type="pt",
    ).images
    torch.testing.assert_close(ours, theirs.permute(0, 2, 3, 1), atol=1e-5, rtol=0)


def test_prompt_follows_the_light_relative_to_the_camera(prior: InstructPix2PixPrior) -> None:
    camera = orbit_cameras(1)  # at +X looking at the origin: its right is world +Y
    assert "from the right" in prior.prompts(camera, sun_envmap((0.0, 1.0, 0.0)))[0]
    assert "from the left" in prior.prompts(camera, sun_envmap((0.0, -1.0, 0.0)))[0]
    assert "from the front" in prior.prompts(camera, sun_envmap((1.0, 0.0, 0.0)))[0]
    assert "from behind" in prior.prompts(camera, sun_envmap((-1.0, 0.0, 0.0)))[0]


def test_deterministic_and_lighting_dependent_with_refine(prior: InstructPix2PixPrior) -> None:
    images, masks = disc_views(2)
    cameras = orbit_cameras(2)
    left, right = sun_envmap((0.0, 1.0, 0.3)), sun_envmap((0.0, -1.0, 0.3))
    a = prior.relight(images, masks, cameras, left, generator=1)
    assert torch.equal(a, prior.relight(images, masks, cameras, left, generator=1))
    inside = masks.expand_as(images) > 0.5
    assert (a - prior.relight(images, masks, cameras, right, generator=1))[inside].abs().mean() > 1e-3
    zero = prior.refine(images, masks, cameras, left, 0.0)
    half = prior.refine(images, masks, cameras, left, 0.5, generator=1)
    assert (half - zero)[inside].abs().mean() > 1e-4
    assert torch.equal(zero[~inside], images[~inside])


def test_wrong_unet_is_a_one_line_error(tmp_path: Path) -> None:
    components = text_prior_components(8)
    components["unet"] = tiny_unet(16)
    folder = save_components(tmp_path / "not_ip2p", **components)
    with pytest.raises(PriorError) as info:
        _config(folder).setup()
    assert str(folder / "unet") in str(info.value) and "16 input channels" in str(info.value)
    missing = save_components(tmp_path / "no_tokenizer", **{k: v for k, v in components.items() if k != "tokenizer"})
    with pytest.raises(PriorError, match="missing tokenizer/"):
        _config(missing).setup()


REAL_WEIGHTS = os.environ.get("RELIGHT3D_IP2P_PATH")


@pytest.mark.slow
@pytest.mark.skipif(
    not REAL_WEIGHTS, reason="set RELIGHT3D_IP2P_PATH to an InstructPix2Pix folder; no weights are available here"
)
def test_real_weights_run_and_follow_the_instruction() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    prior = InstructPix2PixPriorConfig(model_path=Path(REAL_WEIGHTS)).setup(device=device)
    images, masks = disc_views(1, 256, 256)
    camera = orbit_cameras(1)
    warm = prior.relight(images, masks, camera, sun_envmap((0.0, 1.0, 0.5), 64, colour=(1.0, 0.6, 0.3)), generator=0)
    cool = prior.relight(images, masks, camera, sun_envmap((0.0, 1.0, 0.5), 64, colour=(0.3, 0.6, 1.0)), generator=0)
    inside = masks.expand_as(images) > 0.5
    red_minus_blue = lambda x: (x[..., 0] - x[..., 2])[inside[..., 0]].mean()  # noqa: E731
    assert red_minus_blue(warm) > red_minus_blue(cool)
