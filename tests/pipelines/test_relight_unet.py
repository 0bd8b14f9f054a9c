"""The ``relight-unet`` prior and its training (``relight3d train-prior relight-unet``): an untrained network is the
ratio relighting, which is exact for a Lambertian sphere under SH light; training lowers the loss; 3 steps save a
folder the prior loads through the registry, with the EMA weights, and relights."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from relight3d.cli import main
from relight3d.data.gbuffer_frames import GBufferFrame, write_gbuffer_frames
from relight3d.data.relight_pairs import write_manifest
from relight3d.errors import Relight3dError
from relight3d.geometry import look_at
from relight3d.lighting import project_sh, sh_irradiance, write_envmap
from relight3d.lighting.encodings import linear_to_srgb
from relight3d.pipelines.prior_training import PriorTrainingConfig, PriorValidationConfig, train_prior
from relight3d.pipelines.relight_unet_training import RelightUNetTask, RelightUNetTaskConfig, perturb_normals
from relight3d.priors.base import PriorViews
from relight3d.priors.registry import prior_config
from relight3d.priors.relight_unet import RelightUNetPrior, RelightUNetPriorConfig, build_unet

pytestmark = pytest.mark.usefixtures("one_thread")
SIDE = 16
ALBEDO = torch.tensor([0.6, 0.45, 0.3])


def _envmap(row: int, col: int) -> torch.Tensor:
    env = torch.full((8, 16, 3), 0.15)
    env[row, col] = torch.tensor([8.0, 7.0, 6.0])  # bright enough for contrast, never saturating 8 bits
    return env


def _sphere_view(azimuth: float) -> GBufferFrame:
    """A unit sphere seen from distance 3: world normals by ray casting an orthographic-enough pinhole camera."""
    c2w = look_at(torch.tensor([[3 * math.cos(azimuth), 3 * math.sin(azimuth), 0.8]]))[0]
    u = (torch.arange(SIDE) + 0.5) / SIDE * 2 - 1
    y, x = torch.meshgrid(-u, u, indexing="ij")
    d = F.normalize(torch.stack([x * 0.4, y * 0.4, -torch.ones_like(x)], -1) @ c2w[:3, :3].T, dim=-1)
    o = c2w[:3, 3]
    b = d @ o
    disc = b * b - (o @ o - 1.0)
    t = -b - disc.clamp_min(0).sqrt()
    frame = GBufferFrame.empty(SIDE, SIDE)
    frame.mask = (disc > 0).float()[..., None]
    frame.normals = torch.where(frame.mask > 0, F.normalize(o + d * t[..., None], dim=-1), frame.normals)
    frame.camera_to_world = c2w[:3]
    return frame


def _lambertian(frame: GBufferFrame, env: torch.Tensor, band: int = -1) -> torch.Tensor:
    linear = ALBEDO * sh_irradiance(project_sh(env), frame.normals).clamp_min(0)
    if band >= 0:  # what the ratio relighting cannot know: a dark band whose place depends on the light
        columns = torch.arange(SIDE)
        linear = linear * torch.where((columns >= 5 * band) & (columns < 5 * band + 5), 0.4, 1.0)[None, :, None]
    srgb = linear_to_srgb(linear.clamp(0, 1))
    return srgb * frame.mask + (1 - frame.mask)


@pytest.fixture(scope="module")
def sphere_set(tmp_path_factory) -> Path:
    """2 views of a Lambertian sphere under 3 SH-rendered lights (targets with a dark band): 12 pairs."""
    root = tmp_path_factory.mktemp("sphere_set")
    frames = [_sphere_view(a) for a in (0.0, 2.0)]
    write_gbuffer_frames(root / "gbuffer_frames", frames, clip_name="sphere")
    records = []
    for li, (row, col) in enumerate([(1, 2), (3, 9), (2, 13)]):
        env = _envmap(row, col)
        write_envmap(root / "envmaps" / f"l{li}.exr", env)
        for fi, frame in enumerate(frames):
            image = (_lambertian(frame, env, band=li) * 255).round().byte().numpy()
            (root / "images").mkdir(exist_ok=True)
            Image.fromarray(image).save(root / "images" / f"v{fi}_l{li}.png")
            records.append({"gbuffers": "gbuffer_frames/sphere", "frame": fi, "image": f"images/v{fi}_l{li}.png",
                            "envmap": f"envmaps/l{li}.exr"})  # fmt: skip
    write_manifest(root, records)
    return root


def test_untrained_network_is_the_exact_ratio_relighting() -> None:
    frame = _sphere_view(0.5)
    source, target = _envmap(1, 3), _envmap(2, 11)
    prior = RelightUNetPrior(RelightUNetPriorConfig(normal_smoothing_pixels=0.0, shading_floor=0.0),
                             unet=build_unet(SIDE, (8, 16)))  # fmt: skip
    views = PriorViews(_lambertian(frame, source)[None], frame.mask[None], frame.camera_to_world[None],
                       target, gbuffers={"normals": frame.normals[None]}, source_envmap=source)  # fmt: skip
    out = prior.relight(views)[0]
    expected = _lambertian(frame, target)
    inside = frame.mask[..., 0] > 0
    assert views.images[0][inside].max() < 0.99 and expected[inside].max() < 0.99
    assert torch.allclose(out[inside], expected[inside], atol=2e-4)
    assert torch.equal(out[~inside], views.images[0][~inside])  # background kept


def test_perturbed_normals_stay_unit_and_tilt_by_about_the_asked_angle() -> None:
    normals = F.normalize(torch.randn(32, 32, 3), dim=-1)
    tilted = perturb_normals(normals, torch.ones(32, 32, 1), 12.0, torch.Generator().manual_seed(0))
    assert torch.allclose(tilted.norm(dim=-1), torch.ones(32, 32), atol=1e-5)
    angle = torch.rad2deg(torch.acos((tilted * normals).sum(-1).clamp(-1, 1))).mean()
    assert 5.0 < angle < 25.0
    assert torch.equal(perturb_normals(normals, torch.ones(32, 32, 1), 0.0, torch.Generator()), normals)


def _task(data: Path, **kw) -> RelightUNetTask:
    config = RelightUNetTaskConfig(data=data, resolution=SIDE, widths=(8, 16), normal_noise_degrees=0.0, **kw)
    return RelightUNetTask(config, RelightUNetPriorConfig(normal_smoothing_pixels=0.0))


def test_training_learns_what_the_ratio_cannot(sphere_set: Path, tmp_path: Path) -> None:
    task = _task(sphere_set)
    indices = list(range(len(task.pairs)))
    generators = [torch.Generator().manual_seed(i) for i in indices]
    with torch.no_grad():
        before = float(task.loss(task.unet, indices, generators))
    train_prior(task, PriorTrainingConfig(output=tmp_path / "run", max_steps=60, batch_size=4, learning_rate=3e-3,
                                          ema_decay=0.0, checkpoint_every=60, resume=False))  # fmt: skip
    with torch.no_grad():
        after = float(task.loss(task.unet, indices, generators))
    assert before > 1e-3 and after < 0.5 * before


def test_three_steps_save_reload_into_the_prior_and_relight(sphere_set: Path, tmp_path: Path) -> None:
    task = _task(sphere_set, validation=PriorValidationConfig(steps=1, samples=2))
    result = train_prior(task, PriorTrainingConfig(output=tmp_path / "run", max_steps=3, batch_size=2,
                                                   learning_rate=1e-3, ema_decay=0.5, checkpoint_every=3))  # fmt: skip
    assert (tmp_path / "run/validation/step-000003.png").is_file()
    config = prior_config("relight-unet", model_path=result["model"])
    prior = config.setup(device="cpu")
    from safetensors.torch import load_file

    ema = load_file(tmp_path / "run/checkpoints/step-000003/ema.safetensors")
    params = list(prior.unet.parameters())
    assert len(params) == len(ema) and all(torch.equal(p, ema[str(i)]) for i, p in enumerate(params))
    assert not torch.equal(params[-1], torch.zeros_like(params[-1]))  # the zero-initialised output layer learned
    frame, env = _sphere_view(1.0), _envmap(3, 4)
    views = PriorViews(_lambertian(frame, _envmap(1, 2), band=0)[None], frame.mask[None], frame.camera_to_world[None],
                       env, gbuffers={"normals": frame.normals[None]}, source_envmap=_envmap(1, 2))  # fmt: skip
    out = prior.relight(views)
    assert out.shape == (1, SIDE, SIDE, 3) and torch.isfinite(out).all()


def test_train_prior_relight_unet_command(sphere_set: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    args = ["train-prior", "relight-unet", "--data", str(sphere_set), "--output", str(out), "--max-steps", "2",
            "--batch-size", "2", "--resolution", "16", "--checkpoint-every", "2", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    assert "--prior relight-unet --prior-path" in capsys.readouterr().out
    assert (out / "model/unet/config.json").is_file() and (out / "validation/step-000002.png").is_file()
    assert main([*args, "--base", str(tmp_path)]) == 2
    assert "relight-unet starts from a fresh network" in capsys.readouterr().err


def test_bad_model_folders_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(Relight3dError, match="needs --prior-path"):
        RelightUNetPriorConfig().setup()
    with pytest.raises(Relight3dError, match="not a relight-unet folder"):
        RelightUNetPriorConfig(model_path=tmp_path).setup()
    build_unet(SIDE, (8, 16)).save_pretrained(tmp_path / "unet")
    (tmp_path / "unet/config.json").write_text((tmp_path / "unet/config.json").read_text().replace(
        '"in_channels": 16', '"in_channels": 4'))  # fmt: skip
    with pytest.raises(Relight3dError) as err:
        RelightUNetPriorConfig(model_path=tmp_path).setup()
    assert len(str(err.value).splitlines()) == 1
