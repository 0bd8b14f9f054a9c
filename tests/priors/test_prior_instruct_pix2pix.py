"""InstructPix2Pix adapter with a tiny random model: equal to diffusers' own pipeline, loaded from the same folder in
the layout the checkpoint is released in, for relight3d's defaults and for the public preset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable, Dict, Tuple

import pytest
import torch
from prior_fixtures import disc_views, orbit_cameras, seeded, sun_envmap

from relight3d.errors import WeightsError
from relight3d.priors.base import PriorViews
from relight3d.priors.diffusion.components import TEXT_PARTS
from relight3d.priors.diffusion.testing import RESOLUTION, tiny_components, tiny_unet
from relight3d.priors.instruct_pix2pix import InstructPix2PixPrior, InstructPix2PixPriorConfig
from relight3d.priors.registry import PRIORS, prior_config

PRIOR_CONFIG = InstructPix2PixPriorConfig
"""The prior under test (the ``prior`` and ``tiny_prior_config`` fixtures of conftest.py build it)."""


@pytest.fixture(scope="module")
def release_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny InstructPix2Pix written by ``StableDiffusionInstructPix2PixPipeline.save_pretrained``, as
    ``timbrooks/instruct-pix2pix`` is released: model_index.json, unet/ (8 channels), vae/, text_encoder/,
    tokenizer/, and scheduler/ naming EulerAncestralDiscreteScheduler."""
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline

    parts = tiny_components(TEXT_PARTS, 8, seed=5)
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=parts.unet,
        scheduler=EulerAncestralDiscreteScheduler.from_config(parts.scheduler.config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("ip2p") / "instruct-pix2pix"
    pipe.save_pretrained(folder)
    return folder


def test_public_preset_is_the_pipelines_defaults_and_registered() -> None:
    public, default = prior_config("instruct-pix2pix-public"), PRIORS["instruct-pix2pix"]()
    assert public == InstructPix2PixPriorConfig.public_preset()
    assert (public.num_inference_steps, public.guidance_scale, public.image_guidance_scale) == (100, 7.5, 1.5)
    assert (public.scheduler, public.vae_dtype) == ("checkpoint", "same")
    assert (default.num_inference_steps, default.scheduler, default.vae_dtype) == (20, "ddim", "auto")


@pytest.mark.parametrize("preset", ["default", "public"])
def test_matches_the_diffusers_pipeline_loaded_from_the_same_folder(preset: str, release_folder: Path) -> None:
    """relight3d's default (20 DDIM steps) against the pipeline with the same DDIM scheduler and steps; the public
    preset against the pipeline as it loads from the folder (Euler ancestral) called with its own defaults."""
    from diffusers import DDIMScheduler, StableDiffusionInstructPix2PixPipeline

    config = InstructPix2PixPriorConfig() if preset == "default" else InstructPix2PixPriorConfig.public_preset()
    config.model_path = release_folder
    prior = config.setup()
    images, masks = disc_views(2, RESOLUTION, RESOLUTION)
    masks = torch.ones_like(masks)  # whole image: no compositing, no resizing
    cameras, env = orbit_cameras(2), sun_envmap((0.0, 1.0, 0.6))
    prompts = prior.prompts(cameras, env)
    assert all(p.startswith("relight it with ") and "light" in p for p in prompts)
    ours = prior.relight(PriorViews(images, masks, cameras, env, generator=seeded(3, 4)))

    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(release_folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    settings: Dict[str, int] = {}
    if preset == "default":
        pipe.scheduler = DDIMScheduler.from_pretrained(release_folder, subfolder="scheduler", clip_sample=False)
        settings["num_inference_steps"] = 20
    theirs = pipe(
        prompt=prompts, image=images.permute(0, 3, 1, 2), generator=seeded(3, 4), output_type="pt", **settings
    )
    expected = "DDIMScheduler" if preset == "default" else "EulerAncestralDiscreteScheduler"
    assert type(prior.components.scheduler).__name__ == type(pipe.scheduler).__name__ == expected
    assert len(pipe.scheduler.timesteps) == config.num_inference_steps
    torch.testing.assert_close(ours, theirs.images.permute(0, 2, 3, 1), atol=1e-5, rtol=0)
    assert (ours - images).abs().mean() > 1e-2  # the model did change the images


def _drop_unet_tensor(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    del state["conv_out.weight"]
    save_file(state, str(weights))


def _four_channel_weights(folder: Path) -> None:
    """Weights of a 4-channel UNet (Stable Diffusion 1.5's layout) under the 8-channel unet/config.json."""
    tiny_unet(4).save_pretrained(folder / "sd15_unet")
    shutil.copy(folder / "sd15_unet" / "diffusion_pytorch_model.safetensors", folder / "unet")


def _set_scheduler_class(folder: Path) -> None:
    path = folder / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "_class_name": "Popen"}))


def _remove_tokenizer_files(folder: Path) -> None:
    for name in ("tokenizer.json", "vocab.json"):
        (folder / "tokenizer" / name).unlink(missing_ok=True)


WEIGHTS = "diffusion_pytorch_model.safetensors"
BROKEN_FOLDERS: Dict[str, Tuple[Callable[[Path], None], str, str]] = {
    # case: (how the released folder is broken, the file or folder the error names, the problem it states)
    "UNet weights missing": (
        lambda f: (f / "unet" / WEIGHTS).unlink(), "unet", f"missing {WEIGHTS} or {WEIGHTS}.index.json"
    ),
    "UNet weights only pickled": (
        lambda f: (f / "unet" / WEIGHTS).rename(f / "unet" / "diffusion_pytorch_model.bin"), "unet",
        f"missing {WEIGHTS} or {WEIGHTS}.index.json (diffusion_pytorch_model.bin is not read: pickled weights can run "
        "code; convert it to safetensors)",
    ),
    "VAE config missing": (lambda f: (f / "vae" / "config.json").unlink(), "vae", "missing config.json"),
    "text encoder weights missing": (
        lambda f: (f / "text_encoder" / "model.safetensors").unlink(), "text_encoder",
        "missing model.safetensors or model.safetensors.index.json",
    ),
    "tokenizer vocabulary missing": (_remove_tokenizer_files, "tokenizer", "missing tokenizer.json or vocab.json"),
    "tokenizer folder missing": (
        lambda f: shutil.rmtree(f / "tokenizer"), "", "not a diffusers-layout checkpoint: missing tokenizer/"
    ),
    "scheduler config missing": (
        lambda f: (f / "scheduler" / "scheduler_config.json").unlink(), "scheduler", "missing scheduler_config.json"
    ),
    "scheduler class not diffusers'": (
        _set_scheduler_class, "scheduler/scheduler_config.json",
        "_class_name 'Popen' is not a diffusers scheduler class",
    ),
    "4-channel weights, 8-channel config": (
        _four_channel_weights, "unet", f"conv_in expects 8 input channels (config.json), {WEIGHTS} has 4"
    ),
    "a UNet tensor missing": (
        _drop_unet_tensor, "unet",
        f"{WEIGHTS} lacks 1 tensor(s) of the model config.json describes (first: conv_out.weight)",
    ),
    "Stable Diffusion 1.5's UNet": (
        lambda f: tiny_unet(4).save_pretrained(f / "unet"), "unet",
        "UNet takes 4 input channels; InstructPix2Pix's takes 8 (noisy latent + input-image latent)",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BROKEN_FOLDERS))
def test_a_broken_release_folder_is_one_line_naming_the_file(case: str, release_folder: Path, tmp_path: Path) -> None:
    """The released layout loads (the reference test above); each way of breaking it is one WeightsError line that
    names the file or folder and what is wrong with it."""
    breaking, where, problem = BROKEN_FOLDERS[case]
    folder = tmp_path / "instruct-pix2pix"
    shutil.copytree(release_folder, folder)
    breaking(folder)
    config = InstructPix2PixPriorConfig.public_preset()
    config.model_path = folder
    with pytest.raises(WeightsError) as info:
        config.setup()
    assert str(info.value) == f"{folder / where if where else folder}: {problem}"


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
