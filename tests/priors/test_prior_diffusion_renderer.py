"""The diffusion-renderer prior: the checkout backend's job-folder contract, driven by a stand-in entry point (no
DiffusionRenderer, weights or GPU here), the adapter's job reading, and the builtin backend with tiny random weights."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from prior_fixtures import disc_views, orbit_cameras, sun_envmap

from relight3d.data.gbuffer_frames import read_gbuffer_frames
from relight3d.errors import ConfigError, WeightsError
from relight3d.lighting.diffusion_renderer_encodings import encode_envmap_for_diffusion_renderer
from relight3d.priors.base import PriorError, PriorViews, make_generators
from relight3d.priors.diffusion_renderer import (
    ADAPTER,
    BUILTIN_IN_CHANNELS,
    FORWARD_CHECKPOINT,
    PIPELINE_CONFIG,
    TOKENIZER_DIR,
    TOKENIZER_FILES,
    DiffusionRendererPrior,
    DiffusionRendererPriorConfig,
    builtin_channel_layout,
    lighting_path,
    relit_path,
    tiny_builtin_folder,
)

STAND_IN = Path(__file__).with_name("diffusion_renderer_stand_in.py")
HEIGHT, WIDTH = 16, 32
"""View size, and the size DR is told to work at in the checkout tests (no resizing: exact comparisons)."""
EIGHT_BIT = 0.5 / 255 + 1e-6


def gbuffer_views(n: int, height: int = HEIGHT, width: int = WIDTH, envmap=None, seed: int = 1) -> PriorViews:
    """``n`` orbit views of a lit disc on blue, with the G-buffers of a bulging shape (camera-space normals tilting
    from (0, 0, 1) at the centre towards the rim, depth about 3) and a base colour per view."""
    images, masks = disc_views(n, height, width, seed)
    images = torch.where(masks > 0.5, images, torch.tensor([0.2, 0.3, 0.9]))  # not the white the stand-in writes
    cameras = orbit_cameras(n)
    y, x = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    tangent = torch.stack([x * 0.7, -y * 0.7], dim=-1).clamp(-0.7, 0.7)
    camera_normals = torch.cat([tangent, (1 - (tangent**2).sum(-1, keepdim=True)).clamp_min(0).sqrt()], dim=-1)
    normals = torch.einsum("nij,hwj->nhwi", cameras[:, :3, :3], camera_normals)  # world = R n_camera
    g = torch.Generator().manual_seed(seed)
    gbuffers = {
        "normals": normals,
        "depth": (3.0 - 0.5 * camera_normals[..., 2:]).expand(n, height, width, 1).contiguous(),
        "accumulation": masks.clone(),
        "base_color": (torch.rand(n, 1, 1, 3, generator=g) * 0.6 + 0.2).expand(n, height, width, 3).contiguous(),
        "roughness": torch.full((n, height, width, 1), 0.4),
        "metallic": torch.full((n, height, width, 1), 0.1),
    }
    envmap = sun_envmap((1.0, 0.3, 0.8)) if envmap is None else envmap
    return PriorViews(images, masks, cameras, envmap, generator=0, gbuffers=gbuffers)


def fake_checkout(root: Path) -> Path:
    """The files the prior checks for in a DiffusionRenderer checkout, empty."""
    checkpoints = root / "checkpoints"
    for path in (
        root / PIPELINE_CONFIG,
        checkpoints / FORWARD_CHECKPOINT / "model.pt",
        *(checkpoints / TOKENIZER_DIR / name for name in TOKENIZER_FILES),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    return root


def checkout_config(checkout: Path, work_dir: Path, **fields) -> DiffusionRendererPriorConfig:
    defaults = dict(
        checkout=checkout, python=Path(sys.executable), entry_point=STAND_IN, work_dir=work_dir, height=HEIGHT,
        width=WIDTH, envmap_height=None, frames_per_clip=2, timeout_s=120.0,
    )  # fmt: skip
    return DiffusionRendererPriorConfig(**{**defaults, **fields})


def only_job(work_dir: Path) -> Path:
    (job,) = list(work_dir.iterdir())
    return job


def load_adapter():
    spec = importlib.util.spec_from_file_location("diffusion_renderer_adapter_under_test", ADAPTER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- checkout backend --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    """One run of the prior with the stand-in entry point: (views, output, checkout, job folder)."""
    root = tmp_path_factory.mktemp("dr")
    checkout = fake_checkout(root / "checkout")
    views = gbuffer_views(3)
    prior = checkout_config(checkout, root / "work").setup()
    return views, prior.relight(views), checkout, only_job(root / "work")


def test_checkout_output_is_what_the_entry_point_computed(round_trip) -> None:
    views, relit, _, job = round_trip
    assert relit.shape == views.images.shape and relit.dtype == torch.float32
    expected = torch.cat(
        [
            torch.from_numpy(np.load(job / "stand_in" / clip / f"0000.{i:04d}.npy"))[None]
            for clip, frames in (("clip0000", 2), ("clip0001", 1))
            for i in range(frames)
        ]
    )
    inside = views.masks.expand_as(relit) > 0.5
    assert (expected[inside] - relit[inside]).abs().max() <= EIGHT_BIT
    assert torch.equal(relit[~inside], views.images[~inside])  # outside the mask: the input, as every prior
    assert expected[inside].std() > 0.05  # the stand-in's shading is not flat: the comparison means something


def test_checkout_job_folder_holds_the_documented_layout(round_trip) -> None:
    views, _, checkout, job = round_trip
    doc = json.loads((job / "job.json").read_text())
    assert doc["format"] == "relight3d-diffusion-renderer-job" and doc["version"] == 1
    assert (doc["height"], doc["width"], doc["num_video_frames"], doc["num_steps"]) == (HEIGHT, WIDTH, 9, 15)
    assert [(c["name"], c["frames"]) for c in doc["clips"]] == [("clip0000", 2), ("clip0001", 1)]
    view_seeds = [int(torch.randint(0, 2**31 - 1, (1,), generator=g)) for g in make_generators(0, 3)]
    assert [c["seed"] for c in doc["clips"]] == [view_seeds[0], view_seeds[2]]  # each clip: its first view's stream
    frames = read_gbuffer_frames(job / "gbuffer_frames", "clip0000") + read_gbuffer_frames(
        job / "gbuffer_frames", "clip0001"
    )
    for i, frame in enumerate(frames):
        clip, index = ("clip0000", i) if i < 2 else ("clip0001", i - 2)
        lighting = encode_envmap_for_diffusion_renderer(views.target_envmap, views.cameras[i], HEIGHT, WIDTH)
        for name, image in zip(
            ("env_ldr", "env_log", "env_nrm"), (lighting.ldr, lighting.log_hdr, lighting.directions)
        ):
            path = job / "lighting" / clip / f"0000.{index:04d}.{name}.png"
            assert path == lighting_path(job, clip, index, name)
            written = torch.from_numpy(np.asarray(Image.open(path), dtype=np.float32) / 255)
            assert (written - image).abs().max() <= EIGHT_BIT, name
        inside = frame.mask[..., 0] > 0.5
        torch.testing.assert_close(frame.camera_to_world, views.cameras[i], atol=1e-6, rtol=0)
        assert (frame.normals[inside] - views.gbuffers["normals"][i][inside]).abs().max() < 0.02
        assert (frame.base_color[inside] - views.gbuffers["base_color"][i][inside]).abs().max() < 0.01
    run = json.loads((job / "stand_in" / "run.json").read_text())
    assert Path(run["cwd"]) == checkout.resolve() and run["pythonpath"].split(os.pathsep)[0] == str(checkout.resolve())
    assert run["argv"][run["argv"].index("--checkpoint_dir") + 1] == str(checkout.resolve() / "checkpoints")
    assert (job / "entry_point.log").is_file() and relit_path(job, "clip0001", 0).is_file()


def test_the_adapter_reads_the_job_as_the_prior_wrote_it(round_trip) -> None:
    _, _, _, job_dir = round_trip
    adapter = load_adapter()
    job = adapter.read_job(job_dir)
    assert [c["name"] for c in job["clips"]] == ["clip0000", "clip0001"] and job["num_video_frames"] == 9
    assert adapter.relit_file(job, "clip0001", 0) == relit_path(job_dir, "clip0001", 0)
    assert adapter.lighting_file(job, "clip0000", 1, "env_nrm") == lighting_path(job_dir, "clip0000", 1, "env_nrm")
    lighting = adapter.load_lighting(job, job["clips"][0])
    assert set(lighting) == {"env_ldr", "env_log", "env_nrm"}
    video = lighting["env_nrm"]
    assert video.shape == (1, 3, 9, HEIGHT, WIDTH) and video.min() >= -1 and video.max() <= 1
    assert torch.equal(video[:, :, 8], video[:, :, 1])  # padded with the clip's last frame
    png = np.asarray(Image.open(lighting_path(job_dir, "clip0000", 0, "env_ldr")))
    torch.testing.assert_close(
        lighting["env_ldr"][0, :, 0], torch.from_numpy(png / 255.0).float().permute(2, 0, 1) * 2 - 1
    )


def test_the_adapter_without_diffusion_renderer_exits_2_naming_cosmos_predict1(
    round_trip, tmp_path, monkeypatch, capsys
) -> None:
    """Imported and run in this process (no DiffusionRenderer here): a bad job, then a checkout without
    cosmos_predict1, each one line on stderr and exit code 2 (what ``sys.exit(main())`` returns)."""
    _, _, _, job_dir = round_trip
    adapter = load_adapter()
    monkeypatch.chdir(tmp_path)  # main() changes into the checkout; undone after the test
    monkeypatch.setattr(sys, "path", list(sys.path))  # ... and puts it first on sys.path
    assert adapter.main(["--job", str(tmp_path), "--checkout", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert (
        error
        == f"diffusion_renderer_adapter: error: {tmp_path / 'job.json'}: not found (is --job a relight3d job folder?)\n"
    )
    assert adapter.main(["--job", str(job_dir), "--checkout", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert len(error.splitlines()) == 1 and "No module named 'cosmos_predict1'" in error, error
    assert sys.path[0] == str(tmp_path.resolve()) and "cosmos_predict1" not in sys.modules


@pytest.mark.parametrize(
    "missing",
    [
        "checkpoints/Diffusion_Renderer_Forward_Cosmos_7B/model.pt",
        "checkpoints/Cosmos-Tokenize1-CV8x8x8-720p/mean_std.pt",
        str(PIPELINE_CONFIG),
        "entry point",
    ],
)
def test_a_missing_checkout_file_is_a_one_line_error_before_any_work(missing, tmp_path) -> None:
    checkout = fake_checkout(tmp_path / "checkout")
    entry = tmp_path / "entry.py"
    shutil.copy(STAND_IN, entry)
    gone = entry if missing == "entry point" else checkout / missing
    gone.unlink()
    prior = checkout_config(checkout, tmp_path / "work", entry_point=entry).setup()
    with pytest.raises(PriorError) as info:
        prior.relight(gbuffer_views(1))
    assert str(info.value).startswith(f"{gone.resolve()}: ") and "\n" not in str(info.value)
    assert not (tmp_path / "work").exists()


def test_a_failing_entry_point_reports_its_last_stderr_line(tmp_path) -> None:
    entry = tmp_path / "failing.py"
    entry.write_text("import sys\nprint('loading the model', file=sys.stderr)\n")
    entry.write_text(entry.read_text() + "sys.exit('RuntimeError: CUDA out of memory (stand-in)')\n")
    prior = checkout_config(fake_checkout(tmp_path / "checkout"), tmp_path / "work", entry_point=entry).setup()
    with pytest.raises(PriorError) as info:
        prior.relight(gbuffer_views(1))
    assert str(info.value) == f"{entry}: exited with code 1: RuntimeError: CUDA out of memory (stand-in)"


BROKEN_ENTRY = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from PIL import Image
    job = Path(sys.argv[sys.argv.index("--job") + 1])
    doc = json.loads((job / "job.json").read_text())
    relit = job / "relit" / "clip0000"
    relit.mkdir(parents=True)
    size = (doc["width"] + (1 if "{mode}" == "wrong-size" else 0), doc["height"])
    frames = doc["clips"][0]["frames"] + (1 if "{mode}" == "extra-frame" else 0)
    for i in range(frames - (1 if "{mode}" == "missing-frame" else 0)):
        Image.new("RGB", size).save(relit / f"0000.{{i:04d}}.relit.png")
    """
)


@pytest.mark.parametrize(
    "mode, named, problem",
    [
        ("missing-frame", "0000.0001.relit.png", "missing: the entry point wrote no such relit frame"),
        ("wrong-size", "0000.0000.relit.png", "relit frame is 33x16, expected 32x16 (w x h)"),
        ("extra-frame", "", "holds 3 relit frames, the clip has 2"),
    ],
)
def test_broken_output_is_a_one_line_error_naming_the_file(mode, named, problem, tmp_path) -> None:
    entry = tmp_path / "broken.py"
    entry.write_text(BROKEN_ENTRY.format(mode=mode))
    prior = checkout_config(fake_checkout(tmp_path / "checkout"), tmp_path / "work", entry_point=entry).setup()
    with pytest.raises(PriorError) as info:
        prior.relight(gbuffer_views(2))
    expected = (only_job(tmp_path / "work") / "relit" / "clip0000" / named) if named else None
    path = str(expected) if named else str(only_job(tmp_path / "work") / "relit" / "clip0000")
    assert str(info.value) == f"{path}: {problem}"


def test_checkout_config_and_gbuffer_errors(tmp_path) -> None:
    assert DiffusionRendererPriorConfig()._target is DiffusionRendererPrior
    with pytest.raises(ConfigError, match=r"^DiffusionRendererPriorConfig.checkout: not set"):
        DiffusionRendererPriorConfig().setup()
    with pytest.raises(ConfigError, match=r"^DiffusionRendererPriorConfig.model_path: is the builtin backend's"):
        DiffusionRendererPriorConfig(checkout=tmp_path, model_path=tmp_path).setup()
    with pytest.raises(ConfigError, match=r"^DiffusionRendererPriorConfig.width: 30 is not a positive multiple of 16"):
        DiffusionRendererPriorConfig(checkout=tmp_path, width=30).setup()
    prior = checkout_config(fake_checkout(tmp_path / "checkout"), tmp_path / "work").setup()
    assert prior.required_gbuffers == ("normals", "depth", "accumulation", "base_color", "roughness", "metallic")
    views = gbuffer_views(1)
    without = replace(views, gbuffers={k: v for k, v in views.gbuffers.items() if k != "roughness"})
    with pytest.raises(PriorError, match="needs the G-buffers roughness in PriorViews.gbuffers$"):
        prior.relight(without)
    assert torch.equal(prior.refine(views, 0.0), views.images)  # t* = 0: the images, DR not run
    assert not (tmp_path / "work").exists()


# --- builtin backend ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def builtin_folder(tmp_path_factory) -> Path:
    return tiny_builtin_folder(tmp_path_factory.mktemp("builtin") / "model")


@pytest.fixture(scope="module")
def builtin(builtin_folder) -> DiffusionRendererPrior:
    config = DiffusionRendererPriorConfig(backend="builtin", model_path=builtin_folder, num_inference_steps=2)
    return replace(config, envmap_height=16).setup()


def test_builtin_channel_layout_matches_the_unet(builtin) -> None:
    layout = builtin_channel_layout()
    assert list(layout) == [
        "noisy", "basecolor", "normal", "depth", "roughness_metallic", "env_ldr", "env_log", "env_nrm",
    ]  # fmt: skip
    assert [s.start for s in layout.values()] == list(range(0, BUILTIN_IN_CHANNELS, 4))
    assert builtin.builtin.components.unet.config.in_channels == BUILTIN_IN_CHANNELS == 32
    assert builtin.resolution == 16 and builtin.supports_sds


def test_builtin_relight_is_seeded_and_conditioned(builtin) -> None:
    views = gbuffer_views(2, 16, 16)
    relit = builtin.relight(views)
    assert relit.shape == (2, 16, 16, 3) and relit.dtype == torch.float32
    assert torch.isfinite(relit).all() and relit.min() >= 0 and relit.max() <= 1
    assert torch.equal(relit, builtin.relight(views))  # same seed, same result
    inside = views.masks.expand_as(relit) > 0.5
    assert torch.equal(relit[~inside], views.images[~inside])

    def change(other: PriorViews) -> float:
        return float((builtin.relight(other) - relit)[inside].abs().mean())

    assert change(replace(views, generator=1)) > 1e-4
    assert change(replace(views, target_envmap=sun_envmap((-1.0, -0.3, 0.2)))) > 1e-4
    darker = {**views.gbuffers, "base_color": views.gbuffers["base_color"] * 0.2}
    assert change(replace(views, gbuffers=darker)) > 1e-4
    assert change(replace(views, images=views.images.flip(-1))) == 0.0  # images are not a condition of relight


def test_builtin_loading_is_strict(builtin_folder, tmp_path) -> None:
    wrong_width = shutil.copytree(builtin_folder, tmp_path / "wrong_width")
    config_path = wrong_width / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "in_channels": 36}))
    with pytest.raises(WeightsError) as info:
        DiffusionRendererPriorConfig(backend="builtin", model_path=wrong_width).setup()
    assert str(info.value).startswith(f"{wrong_width / 'unet'}: ") and "conv_in" in str(info.value)
    other = tmp_path / "other"
    from relight3d.priors.diffusion.testing import tiny_components

    tiny_components(("unet", "vae"), 16).save_pretrained(other)
    with pytest.raises(WeightsError) as info:
        DiffusionRendererPriorConfig(backend="builtin", model_path=other).setup()
    assert str(info.value).startswith(f"{other / 'unet'}: UNet takes 16 input channels; the diffusion-renderer")
