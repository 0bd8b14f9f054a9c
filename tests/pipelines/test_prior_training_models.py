"""``relight3d train-prior instruct-pix2pix`` and ``neural-gaffer`` with tiny random components: a few steps, the saved
folder loading into the inference prior with the trained EMA weights, exact resumption, zero-initialised new input
channels, the conditioning equal to what the prior computes at inference, the pair order, validation images, and the
command line."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from relight3d.data.gbuffer_frames import GBufferFrame, write_gbuffer_frames
from relight3d.data.relight_pairs import LightPairs, light_pairs, read_manifest, write_manifest
from relight3d.errors import DataError
from relight3d.geometry import look_at
from relight3d.lighting import write_envmap
from relight3d.pipelines.gaffer_training import NeuralGafferTask, NeuralGafferTaskConfig, gaffer_init_from_base
from relight3d.pipelines.ip2p_training import InstructPix2PixTask, InstructPix2PixTaskConfig, ip2p_init_from_base
from relight3d.pipelines.prior_training import (
    PriorTrainingConfig,
    PriorValidationConfig,
    image_grid,
    latest_checkpoint,
    train_prior,
    validation_indices,
)
from relight3d.priors.base import PriorViews
from relight3d.priors.diffusion.components import IMAGE_PARTS, TEXT_PARTS
from relight3d.priors.diffusion.testing import RESOLUTION, tiny_components
from relight3d.priors.registry import prior_config

pytestmark = pytest.mark.usefixtures("one_thread")

SIDE = RESOLUTION
LIGHTS = ((1, 4), (4, 8), (2, 13))
"""Row, column of each light's bright pixel in an 8 x 16 map."""


def _write_rgb(path: Path, rgb: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(rgb, 0, 1) * 255).round().astype("uint8")).save(path)
    return path.name


@pytest.fixture(scope="module")
def relight_set(tmp_path_factory) -> Path:
    """2 views of a disc under 3 lights (the manifest interleaves the views), so 2 x 3 x 2 = 12 pairs."""
    root = tmp_path_factory.mktemp("relight_set")
    u = torch.linspace(-1.2, 1.2, SIDE)
    y, x = torch.meshgrid(-u, u, indexing="ij")
    mask = ((x**2 + y**2) < 1.0).float()[..., None]
    frames = []
    for azimuth in (0.0, 1.5):
        frame = GBufferFrame.empty(SIDE, SIDE)
        frame.mask = mask
        frame.camera_to_world = look_at(torch.tensor([3 * math.cos(azimuth), 3 * math.sin(azimuth), 1.0]))
        frames.append(frame)
    write_gbuffer_frames(root / "gbuffer_frames", frames, clip_name="disc")
    rng = np.random.default_rng(0)
    records = []
    for li, (row, col) in enumerate(LIGHTS):
        env = torch.full((8, 16, 3), 0.2)
        env[row, col] = torch.tensor([40.0, 30.0, 20.0])
        write_envmap(root / "envmaps" / f"light{li}.exr", env)
        for fi in range(len(frames)):
            rgb = rng.uniform(0.2, 0.9, (SIDE, SIDE, 3)) * mask.numpy() + (1 - mask.numpy())
            name = f"view{fi}_light{li}.png"
            _write_rgb(root / "images" / name, rgb)
            records.append({"gbuffers": "gbuffer_frames/disc", "frame": fi, "image": f"images/{name}",
                            "envmap": f"envmaps/light{li}.exr"})  # fmt: skip
    write_manifest(root, records)
    return root


@pytest.fixture(scope="module")
def triplets(tmp_path_factory) -> Path:
    """A ``relight3d data from-images`` folder of 3 triplets (the last one 16 x 12), with a soft mask on the second."""
    root = tmp_path_factory.mktemp("triplets")
    rng = np.random.default_rng(1)
    lines = []
    for i, (h, w) in enumerate(((SIDE, SIDE), (SIDE, SIDE), (SIDE, 12))):
        for folder in ("inputs", "targets", "albedo"):
            _write_rgb(root / folder / f"{i}.png", rng.uniform(0, 1, (h, w, 3)))
        mask = np.full((h, w, 3), 0.5) if i == 1 else np.repeat((rng.uniform(0, 1, (h, w, 1)) > 0.3) * 1.0, 3, 2)
        _write_rgb(root / "masks" / f"{i}.png", mask)
        light = {"kind": "directional", "direction": [0, 0, 1], "colour": [1, 1, 1], "ambient": 0.1, "specular": 0.2,
                 "shininess": 20}  # fmt: skip
        lines.append(json.dumps({"id": str(i), "input": f"inputs/{i}.png", "target": f"targets/{i}.png",
                                 "mask": f"masks/{i}.png", "albedo": f"albedo/{i}.png", "instruction": f"make it {i}",
                                 "source": f"photo{i}.png", "light": light}))  # fmt: skip
    (root / "triplets.jsonl").write_text("\n".join(lines[:2]) + "\n\n" + lines[2] + "\n")
    return root


@pytest.fixture(scope="module")
def sd_base(tmp_path_factory) -> Path:
    """A tiny Stable Diffusion folder (4-channel UNet, text encoder, tokenizer)."""
    return tiny_components(TEXT_PARTS, 4, seed=1).save_pretrained(tmp_path_factory.mktemp("sd") / "sd")


@pytest.fixture(scope="module")
def zero123_base(tmp_path_factory) -> Path:
    """A tiny Zero123-style folder (8-channel UNet, CLIP image encoder)."""
    return tiny_components(IMAGE_PARTS, 8, seed=2).save_pretrained(tmp_path_factory.mktemp("z123") / "zero123")


@pytest.fixture(scope="module")
def ip2p_init(sd_base, tmp_path_factory) -> Path:
    return ip2p_init_from_base(sd_base, tmp_path_factory.mktemp("ip2p") / "init")


@pytest.fixture(scope="module")
def gaffer_init(zero123_base, tmp_path_factory) -> Path:
    return gaffer_init_from_base(zero123_base, tmp_path_factory.mktemp("gaffer") / "init")


def _config(output: Path, **kw) -> PriorTrainingConfig:
    values = dict(output=output, max_steps=3, batch_size=2, checkpoint_every=3, ema_decay=0.9, cpu=True)
    return PriorTrainingConfig(**{**values, **kw})


def _unet_state(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(next((folder / "unet").glob("*.safetensors")))


def _task(model: str, data: Path, init: Path, steps: int = 0, samples: int = 2):
    validation = PriorValidationConfig(steps=steps, samples=samples)
    if model == "instruct-pix2pix":
        return InstructPix2PixTask(InstructPix2PixTaskConfig(data=data, init=init, validation=validation))
    return NeuralGafferTask(NeuralGafferTaskConfig(data=data, init=init, validation=validation))


def _view(relight_set: Path, index: int) -> tuple:
    """Sample ``index`` of the dataset as a one-view batch: ``(image, mask, camera, envmap)``."""
    from relight3d.data.relight_pairs import RelightPairs

    s = RelightPairs(relight_set)[index]
    return s.image[None], s.frame.mask[None], s.frame.camera_to_world[None, :3], s.envmap


# --- pairs and triplets ---------------------------------------------------------------------------------------------
def test_light_pairs_are_one_view_under_two_lights_in_manifest_order(relight_set, tmp_path) -> None:
    rows = [
        {"gbuffers": "a", "frame": 0, "envmap": "L0", "envmap_rotation_deg": 0.0},  # 0
        {"gbuffers": "a", "frame": 1, "envmap": "L0", "envmap_rotation_deg": 0.0},  # 1: another view
        {"gbuffers": "a", "frame": 0, "envmap": "L1", "envmap_rotation_deg": 0.0},  # 2
        {"gbuffers": "a", "frame": 0, "envmap": "L0", "envmap_rotation_deg": 0.0},  # 3: the same light as 0
        {"gbuffers": "b", "frame": 0, "envmap": "L0", "envmap_rotation_deg": 0.0},  # 4: another clip, alone
        {"gbuffers": "a", "frame": 1, "envmap": "L0", "envmap_rotation_deg": 90.0},  # 5: L0 turned: another light
    ]
    assert light_pairs(rows) == [(0, 2), (2, 0), (2, 3), (3, 2), (1, 5), (5, 1)]
    records = read_manifest(relight_set)  # views 0, 1 interleaved under lights 0, 1, 2
    assert light_pairs(records) == [(0, 2), (0, 4), (2, 0), (2, 4), (4, 0), (4, 2),
                                    (1, 3), (1, 5), (3, 1), (3, 5), (5, 1), (5, 3)]  # fmt: skip
    pairs = LightPairs(relight_set)
    source, target = pairs[3]  # (2, 4): view 0 under light 1 -> light 2
    assert torch.equal(source.image, pairs.samples[2].image) and torch.equal(target.image, pairs.samples[4].image)
    assert float(target.envmap[LIGHTS[2]].sum()) == 90.0
    alone = shutil.copytree(relight_set, tmp_path / "alone")
    write_manifest(alone, [{"gbuffers": "gbuffer_frames/disc", "frame": 0, "image": "images/view0_light0.png",
                            "envmap": "envmaps/light0.exr"}] * 2)  # fmt: skip
    with pytest.raises(DataError, match="no view is rendered under two different lights"):
        LightPairs(alone)


def test_triplets_become_samples_as_written(triplets, ip2p_init, tmp_path) -> None:
    task = _task("instruct-pix2pix", triplets, ip2p_init)
    assert task.dataset_size() == 3
    sample = task.sample(2)
    assert sample.instruction == "make it 2" and sample.input.shape == (SIDE, 12, 3) and sample.mask.shape[-1] == 1
    expected = np.asarray(Image.open(triplets / "targets" / "2.png"), dtype=np.float32) / 255
    torch.testing.assert_close(sample.target, torch.from_numpy(expected), rtol=0, atol=1e-6)
    assert torch.allclose(task.sample(1).mask, torch.tensor(128 / 255))
    bad = shutil.copytree(triplets, tmp_path / "bad")
    _write_rgb(bad / "targets" / "0.png", np.zeros((8, 8, 3)))
    with pytest.raises(DataError, match="line 1: input, target and mask differ in size"):
        _task("instruct-pix2pix", bad, ip2p_init).sample(0)


# --- the conditioning is the prior's --------------------------------------------------------------------------------
def _captured_condition(prior, views: PriorViews):
    """The conditioning ``prior.relight(views)`` computes (one sampler step)."""
    found = []
    original = prior.condition

    def spy(replica, chunk):  # noqa: ANN001, ANN202
        found.append(original(replica, chunk))
        return found[-1]

    prior.condition = spy
    prior.config.num_inference_steps = 1
    prior.relight(views)
    del prior.condition
    return found[0]


def test_neural_gaffer_training_conditions_as_the_prior_relights(relight_set, gaffer_init) -> None:
    task = _task("neural-gaffer", relight_set, gaffer_init)
    a, b = task.pairs.pairs[7]
    image, mask, camera, _ = _view(relight_set, a)
    envmap = _view(relight_set, b)[3]
    inference = prior_config("neural-gaffer", model_path=gaffer_init).setup()
    expected = _captured_condition(inference, PriorViews(image, mask, camera, envmap, generator=0))
    _, condition = task.inputs(7, torch.Generator().manual_seed(0), torch.device("cpu"))
    torch.testing.assert_close(condition.image_embeds, expected.image_embeds, rtol=0, atol=1e-6)
    torch.testing.assert_close(condition.concat_latents, expected.concat_latents, rtol=0, atol=1e-6)


def test_instruct_pix2pix_training_conditions_as_the_prior_relights(relight_set, ip2p_init) -> None:
    task = _task("instruct-pix2pix", relight_set, ip2p_init)
    a, b = task.pairs.pairs[4]
    image, mask, camera, _ = _view(relight_set, a)
    envmap = _view(relight_set, b)[3]
    inference = prior_config("instruct-pix2pix", model_path=ip2p_init).setup()
    expected = _captured_condition(inference, PriorViews(image, mask, camera, envmap, generator=0))
    sample = task.sample(4)
    assert sample.instruction == expected.text.prompts[0] and sample.instruction.startswith("relight it with ")
    inputs, _ = task.squares([sample], torch.device("cpu"))
    condition = task.condition([sample.instruction], inputs)
    torch.testing.assert_close(condition.text.text_embeds, expected.text.text_embeds, rtol=0, atol=0)
    torch.testing.assert_close(condition.text.negative_embeds, expected.text.negative_embeds, rtol=0, atol=0)
    torch.testing.assert_close(condition.image_latents, expected.image_latents, rtol=0, atol=1e-6)


@pytest.mark.parametrize("model", ["instruct-pix2pix", "neural-gaffer"])
def test_conditioning_dropout_follows_the_recipe(model, relight_set, ip2p_init, gaffer_init) -> None:
    """InstructPix2Pix: text dropped when u < 2p, image when p <= u < 3p; Neural Gaffer: everything when u < p."""
    from relight3d.pipelines.prior_training import diffusion_draws, sample_generator

    p = 0.3 if model == "instruct-pix2pix" else 0.5
    init = ip2p_init if model == "instruct-pix2pix" else gaffer_init
    task = _task(model, relight_set, init)
    task.config.conditioning_dropout = p
    seen = []
    original = task.prior.predict_noise
    task.prior.predict_noise = lambda parts, x, t, condition, scale: (
        seen.append(condition) or original(parts, x, t, condition, scale)
    )
    indices = list(range(8))
    task.loss(task.trained_module(), indices, [sample_generator(1, k) for k in indices])
    side = task.prior.resolution // task.prior.components.vae_scale_factor
    u = diffusion_draws([sample_generator(1, k) for k in indices], (4, side, side), 1000)[2]
    cpu = torch.device("cpu")
    if model == "instruct-pix2pix":
        samples = [task.sample(i) for i in indices]
        full = task.condition([s.instruction for s in samples], task.squares(samples, cpu)[0])
        text = torch.where((u < 2 * p).view(-1, 1, 1), full.text.negative_embeds, full.text.text_embeds)
        image = full.image_latents * (~((u >= p) & (u < 3 * p))).float().view(-1, 1, 1, 1)
        got = (seen[0].text.text_embeds, seen[0].image_latents)
    else:
        full = [task.inputs(i, sample_generator(1, i), cpu)[1] for i in indices]
        keep = (u >= p).float()
        text = torch.cat([c.image_embeds for c in full]) * keep.view(-1, 1, 1)
        image = torch.cat([c.concat_latents for c in full]) * keep.view(-1, 1, 1, 1)
        got = (seen[0].image_embeds, seen[0].concat_latents)
    assert 0 < int((u < p).sum()) < len(indices)  # some dropped, some kept
    torch.testing.assert_close(got[0], text, rtol=0, atol=1e-6)
    torch.testing.assert_close(got[1], image, rtol=0, atol=1e-6)


# --- new input channels start at zero -------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["instruct-pix2pix", "neural-gaffer"])
def test_the_widened_unet_predicts_what_the_base_did_whatever_the_new_channels(model, request) -> None:
    from diffusers import UNet2DConditionModel

    base, init = ("sd_base", "ip2p_init") if model == "instruct-pix2pix" else ("zero123_base", "gaffer_init")
    base_unet = UNet2DConditionModel.from_pretrained(request.getfixturevalue(base), subfolder="unet").eval()
    wide = UNet2DConditionModel.from_pretrained(request.getfixturevalue(init), subfolder="unet").eval()
    old, new = base_unet.config.in_channels, wide.config.in_channels
    assert (old, new) == ((4, 8) if model == "instruct-pix2pix" else (8, 16))
    x, t = torch.randn(2, old, 8, 8), torch.tensor([10, 700])
    context = torch.randn(2, 3, wide.config.cross_attention_dim)
    with torch.no_grad():
        expected = base_unet(x, t, encoder_hidden_states=context).sample
        got = wide(torch.cat([x, 5 * torch.randn(2, new - old, 8, 8)], 1), t, encoder_hidden_states=context).sample
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


# --- training, saving, reloading ------------------------------------------------------------------------------------
def _ema_weights(run: Path, task) -> dict:
    from safetensors.torch import load_file

    ema = load_file(latest_checkpoint(run / "checkpoints") / "ema.safetensors")
    return {name: ema[str(i)] for i, (name, _) in enumerate(task.trained_module().named_parameters())}


@pytest.mark.parametrize("model", ["instruct-pix2pix", "neural-gaffer"])
def test_three_steps_save_reload_into_the_prior_and_relight(model, relight_set, triplets, ip2p_init, gaffer_init,
                                                            tmp_path) -> None:  # fmt: skip
    data, init = (triplets, ip2p_init) if model == "instruct-pix2pix" else (relight_set, gaffer_init)
    task = _task(model, data, init, steps=2, samples=2)
    run = tmp_path / "run"
    result = train_prior(task, _config(run), log=lambda _: None)
    assert result["step"] == 3 and math.isfinite(result["loss"])
    trained, start = _unet_state(run / "model"), _unet_state(init)
    assert any(not torch.equal(trained[k], start[k]) for k in trained)  # the weights moved
    ema = _ema_weights(run, task)
    assert all(torch.equal(ema[name], trained[name]) for name in ema)  # the folder holds the EMA
    grid = np.asarray(Image.open(run / "validation" / "step-000003.png"))
    assert grid.shape == (2 * SIDE, 3 * SIDE, 3) and grid.std() > 0
    assert any((run / "tensorboard").glob("events.out.tfevents.*"))
    again = _task(model, data, run / "model", steps=2, samples=2)  # the saved EMA weights, the run's seed
    expected = image_grid(again.validation_images(again.trained_module(), torch.Generator().manual_seed(0)), 3)
    assert np.abs(grid / 255.0 - expected.numpy()).max() <= 0.5 / 255 + 1e-6

    prior = prior_config(model, model_path=run / "model").setup()  # as relight3d relight --prior-path loads it
    loaded = dict(prior.components.unet.named_parameters())
    assert all(torch.equal(loaded[name], ema[name]) for name in ema)
    image, mask, camera, envmap = _view(relight_set, 0)
    prior.config.num_inference_steps = 2
    relit = prior.relight(PriorViews(image, mask, camera, envmap, generator=0))
    assert relit.shape == (1, SIDE, SIDE, 3) and torch.isfinite(relit).all()
    if model == "instruct-pix2pix":  # the folder is also a diffusers pipeline
        from diffusers import StableDiffusionInstructPix2PixPipeline

        pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(run / "model", local_files_only=True)
        assert torch.equal(pipe.unet.conv_in.weight, ema["conv_in.weight"])


class _Crash(Exception):
    pass


@pytest.mark.parametrize("model", ["instruct-pix2pix", "neural-gaffer"])
def test_a_run_killed_after_a_checkpoint_resumes_exactly(model, relight_set, ip2p_init, gaffer_init, tmp_path):
    init = ip2p_init if model == "instruct-pix2pix" else gaffer_init
    config = dict(max_steps=4, checkpoint_every=2)
    straight = _task(model, relight_set, init, steps=1, samples=1)  # validation images must not disturb training
    train_prior(straight, _config(tmp_path / "straight", **config), log=lambda _: None)
    crashing = _task(model, relight_set, init, steps=1, samples=1)
    calls = []
    original = crashing.loss

    def loss(network, indices, generators):  # noqa: ANN001, ANN202
        calls.append(indices)
        if len(calls) == 3:  # steps 1-2 run, checkpoint 2 is written, step 3 dies
            raise _Crash
        return original(network, indices, generators)

    crashing.loss = loss
    with pytest.raises(_Crash):
        train_prior(crashing, _config(tmp_path / "killed", **config), log=lambda _: None)
    assert latest_checkpoint(tmp_path / "killed" / "checkpoints").name == "step-000002"
    logs = []
    resumed = _task(model, relight_set, init, steps=1, samples=1)
    train_prior(resumed, _config(tmp_path / "killed", **config), log=logs.append)
    assert any("resumed from" in line and "step 2" in line for line in logs)
    a, b = straight.trained_module().state_dict(), resumed.trained_module().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed run differs from the uninterrupted one"
    assert _unet_state(tmp_path / "straight" / "model").keys() == _unet_state(tmp_path / "killed" / "model").keys()
    assert all(torch.equal(v, _unet_state(tmp_path / "killed" / "model")[k])
               for k, v in _unet_state(tmp_path / "straight" / "model").items())  # fmt: skip
    steps = [line.split(",")[0] for line in (tmp_path / "killed" / "loss.csv").read_text().splitlines()]
    assert steps == ["step", "1", "2", "3", "4"]


def test_gbuffer_validation_images_are_the_priors_renderings(relight_set, tmp_path) -> None:
    from relight3d.pipelines.gbuffer_training import GBufferTask, GBufferTaskConfig
    from relight3d.priors.diffusion_renderer import tiny_builtin_folder

    init = tiny_builtin_folder(tmp_path / "builtin", seed=3)
    validation = PriorValidationConfig(steps=1, samples=2)
    task = GBufferTask(GBufferTaskConfig(data=relight_set, init=init, validation=validation))
    images = task.validation_images(task.trained_module(), torch.Generator().manual_seed(4))
    assert images.shape == (6, SIDE, SIDE, 3) and torch.isfinite(images).all() and images.std() > 0
    again = task.validation_images(task.trained_module(), torch.Generator().manual_seed(4))
    assert torch.equal(images, again)
    image = task.pairs[validation_indices(len(task.pairs), 2)[1]].image
    torch.testing.assert_close(images[5], image, rtol=0, atol=1e-6)  # the target column is the sample's image
    off = GBufferTask(GBufferTaskConfig(data=relight_set, init=init))
    assert off.validation_images(off.trained_module(), torch.Generator()) is None


def test_validation_helpers() -> None:
    assert validation_indices(12, 4) == [0, 4, 7, 11] and validation_indices(3, 5) == [0, 1, 2]
    assert validation_indices(5, 1) == [0] and validation_indices(5, 0) == []
    images = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 2, 2, 3)
    grid = image_grid(images, 3)
    assert grid.shape == (4, 6, 3) and grid[0, ::2, 0].tolist() == [0, 1, 2] and grid[2, ::2, 0].tolist() == [3, 4, 0]


# --- the command ----------------------------------------------------------------------------------------------------
def test_train_prior_instruct_pix2pix_command(triplets, sd_base, tmp_path, capsys) -> None:
    from relight3d.cli import main

    out = tmp_path / "run"
    argv = ["train-prior", "instruct-pix2pix", "--data", str(triplets), "--base", str(sd_base), "--output", str(out),
            "--max-steps", "3", "--batch-size", "1", "--device", "cpu", "--validation-steps", "1",
            "--validation-samples", "1"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"use it with: relight3d relight --prior instruct-pix2pix --prior-path {out / 'model'}" in printed
    assert (out / "init" / "unet").is_dir() and (out / "model" / "model_index.json").is_file()
    assert (out / "validation" / "step-000003.png").is_file()
    assert main([*argv, "--conditioning-dropout", "0.5", "--no-resume"]) == 2
    assert capsys.readouterr().err.strip() == "relight3d: error: --conditioning-dropout: must be in [0, 1/3], got 0.5"
    assert main([*argv[:3], str(sd_base), *argv[4:]]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"relight3d: error: {sd_base}: holds neither triplets.jsonl") and "\n" not in err


def test_train_prior_neural_gaffer_command(relight_set, gaffer_init, ip2p_init, tmp_path, capsys) -> None:
    from relight3d.cli import main

    out = tmp_path / "run"
    argv = ["train-prior", "neural-gaffer", "--data", str(relight_set), "--init", str(gaffer_init), "--output",
            str(out), "--max-steps", "3", "--batch-size", "1", "--device", "cpu",
            "--validation-steps", "0"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"use it with: relight3d relight --prior neural-gaffer --prior-path {out / 'model'}" in printed
    assert (out / "model" / "unet").is_dir() and not (out / "validation").exists()
    bad = ["train-prior", "gbuffer", *argv[2:], "--conditioning-dropout", "0.1"]
    assert main(bad) == 2
    assert "relight3d: error: --conditioning-dropout: gbuffer trains without" in capsys.readouterr().err
    assert main([*argv[:4], "--init", str(ip2p_init), *argv[6:]]) == 2  # an InstructPix2Pix is no Neural Gaffer
    err = capsys.readouterr().err.strip()
    assert err.startswith("relight3d: error: ") and "missing image_encoder/" in err and "\n" not in err
