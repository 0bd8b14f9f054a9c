"""``relight3d train-prior gbuffer``: a few steps with tiny components, the saved model loading into the prior, exact
resumption after a crash, and two gloo processes taking the same step as one process on the concatenated batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from gloo_ranks import become_rank, free_port
from PIL import Image

from relight3d.data.gbuffer_frames import GBufferFrame, write_gbuffer_frames
from relight3d.data.relight_pairs import RelightPairs, write_manifest
from relight3d.errors import DataError
from relight3d.lighting import write_envmap
from relight3d.lighting.encodings import linear_to_srgb
from relight3d.pipelines.gbuffer_training import GBufferTask, GBufferTaskConfig, widen_conv_in
from relight3d.pipelines.prior_training import PriorTrainingConfig, latest_checkpoint, train_prior
from relight3d.priors.base import PriorViews
from relight3d.priors.diffusion_renderer import DiffusionRendererPriorConfig, tiny_builtin_folder

SIDE = 16


def _sphere_frame(azimuth: float) -> GBufferFrame:
    """A unit sphere seen from a camera 3 units away at ``azimuth`` (radians) about +Z: exact G-buffers."""
    u = torch.linspace(-1.2, 1.2, SIDE)
    y, x = torch.meshgrid(-u, u, indexing="ij")
    r2 = x**2 + y**2
    mask = (r2 < 1.0).float()[..., None]
    z = (1.0 - r2).clamp_min(0.0).sqrt()
    normals_cam = torch.nn.functional.normalize(torch.stack([x, y, z + 1e-6], -1), dim=-1)
    c, s = torch.cos(torch.tensor(azimuth)), torch.sin(torch.tensor(azimuth))
    # camera looks at the origin from (3 s, -3 c, 0): x right, y up (+Z), looking down -z
    right, up, back = (
        torch.stack([c, s, torch.tensor(0.0)]),
        torch.tensor([0.0, 0.0, 1.0]),
        torch.stack([s, -c, torch.tensor(0.0)]),
    )
    rotation = torch.stack([right, up, back], dim=1)
    pose = torch.cat([rotation, (3.0 * back)[:, None]], dim=1)
    frame = GBufferFrame.empty(SIDE, SIDE)
    frame.normals = normals_cam @ rotation.T
    frame.depth = (3.0 - z[..., None]).clamp(2.0, 3.0)
    frame.base_color = torch.tensor([0.6, 0.4, 0.3]).expand(SIDE, SIDE, 3) * mask + 0.5 * (1 - mask)
    frame.mask, frame.camera_to_world = mask, pose
    return frame


@pytest.fixture(scope="module")
def relight_set(tmp_path_factory) -> Path:
    """2 views x 2 lights of a sphere: G-buffers, Lambertian images under each light, the lights, the manifest."""
    root = tmp_path_factory.mktemp("relight_set")
    frames = [_sphere_frame(a) for a in (0.0, 1.2)]
    write_gbuffer_frames(root / "gbuffer_frames", frames, clip_name="sphere")
    (root / "images").mkdir()
    (root / "envmaps").mkdir()
    records = []
    for li, direction in enumerate(([0.0, 0.0, 1.0], [1.0, 0.0, 0.0])):
        env = torch.full((8, 16, 3), 0.2)
        row, col = (1, 4) if li == 0 else (4, 8)
        env[row, col] = 40.0
        write_envmap(root / "envmaps" / f"light{li}.exr", env)
        for fi, frame in enumerate(frames):
            shade = (frame.normals @ torch.tensor(direction)).clamp_min(0.0)[..., None] * 0.8 + 0.2
            rgb = linear_to_srgb((frame.base_color * shade).clamp(0, 1)) * frame.mask + (1 - frame.mask)
            name = f"images/view{fi}_light{li}.png"
            Image.fromarray((rgb.numpy() * 255).round().astype("uint8")).save(root / name)
            records.append({"gbuffers": "gbuffer_frames/sphere", "frame": fi, "image": name,
                            "envmap": f"envmaps/light{li}.exr"})  # fmt: skip
    write_manifest(root, records)
    return root


@pytest.fixture(scope="module")
def init_model(tmp_path_factory) -> Path:
    return tiny_builtin_folder(tmp_path_factory.mktemp("init") / "builtin", seed=3)


def _config(output: Path, **kw) -> PriorTrainingConfig:
    values = dict(output=output, max_steps=3, batch_size=2, checkpoint_every=3, ema_decay=0.9, cpu=True)
    return PriorTrainingConfig(**{**values, **kw})


def _unet_state(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(next((folder / "unet").glob("*.safetensors")))


def test_three_steps_save_reload_into_the_prior_and_relight(relight_set, init_model, tmp_path) -> None:
    task = GBufferTask(GBufferTaskConfig(data=relight_set, init=init_model))
    result = train_prior(task, _config(tmp_path / "run"), log=lambda _: None)
    assert result["step"] == 3 and torch.isfinite(torch.tensor(result["loss"]))
    model = tmp_path / "run" / "model"
    trained, start = _unet_state(model), _unet_state(init_model)
    assert trained.keys() == start.keys()
    assert any(not torch.equal(trained[k], start[k]) for k in trained)  # the weights moved
    assert (tmp_path / "run" / "loss.png").is_file()
    assert len((tmp_path / "run" / "loss.csv").read_text().splitlines()) == 4  # header + 3 steps
    # the saved folder is the EMA of the weights: what the checkpoint's EMA holds
    from safetensors.torch import load_file

    ema = load_file(latest_checkpoint(tmp_path / "run" / "checkpoints") / "ema.safetensors")
    names = [name for name, _ in task.trained_module().named_parameters()]
    assert all(torch.equal(ema[str(i)], trained[name]) for i, name in enumerate(names))
    prior = DiffusionRendererPriorConfig(backend="builtin", model_path=model, num_inference_steps=2).setup()
    sample = RelightPairs(relight_set)[0]
    f = sample.frame
    names = ("normals", "depth", "base_color", "roughness", "metallic")
    gbuffers = {"accumulation": f.mask[None], **{name: getattr(f, name)[None] for name in names}}
    views = PriorViews(sample.image[None], sample.frame.mask[None], sample.frame.camera_to_world[None, :3],
                       sample.envmap, generator=0, gbuffers=gbuffers)  # fmt: skip
    relit = prior.relight(views)
    assert relit.shape == (1, SIDE, SIDE, 3) and torch.isfinite(relit).all()


class _Crash(Exception):
    pass


class _CrashingTask(GBufferTask):
    """Raises on its ``crash_at``-th loss call, as a killed run stops (after a checkpoint, before the next)."""

    crash_at = 10**9

    def loss(self, network, indices, generators):  # noqa: ANN001, ANN201
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == self.crash_at:
            raise _Crash
        return super().loss(network, indices, generators)


def test_a_run_killed_after_a_checkpoint_resumes_exactly(relight_set, init_model, tmp_path) -> None:
    straight = GBufferTask(GBufferTaskConfig(data=relight_set, init=init_model))
    train_prior(straight, _config(tmp_path / "straight", max_steps=4, checkpoint_every=2), log=lambda _: None)
    crashing = _CrashingTask(GBufferTaskConfig(data=relight_set, init=init_model))
    crashing.crash_at = 3  # steps 1-2 run, checkpoint 2 is written, step 3 dies
    with pytest.raises(_Crash):
        train_prior(crashing, _config(tmp_path / "killed", max_steps=4, checkpoint_every=2), log=lambda _: None)
    assert latest_checkpoint(tmp_path / "killed" / "checkpoints").name == "step-000002"
    logs = []
    resumed = GBufferTask(GBufferTaskConfig(data=relight_set, init=init_model))
    train_prior(resumed, _config(tmp_path / "killed", max_steps=4, checkpoint_every=2), log=logs.append)
    assert any("resumed from" in line and "step 2" in line for line in logs)
    a, b = straight.trained_module().state_dict(), resumed.trained_module().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed run differs from the uninterrupted one"
    assert torch.equal(_unet_state(tmp_path / "straight" / "model")["conv_in.weight"],
                       _unet_state(tmp_path / "killed" / "model")["conv_in.weight"])  # fmt: skip
    csv = (tmp_path / "killed" / "loss.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in csv] == ["step", "1", "2", "3", "4"]


def _rank(rank: int, world: int, port: int, data: Path, init: Path, out: Path) -> None:
    become_rank(rank, world, port)
    task = GBufferTask(GBufferTaskConfig(data=data, init=init))
    train_prior(task, _config(out / "run", max_steps=2, batch_size=1, checkpoint_every=2, ema_decay=0.0),
                log=lambda _: None)  # fmt: skip
    torch.save(task.trained_module().state_dict(), out / f"rank{rank}.pt")


def test_two_gloo_processes_take_the_step_of_one_process_on_the_concatenated_batch(relight_set, init_model, tmp_path):
    torch.multiprocessing.spawn(_rank, args=(2, free_port(), relight_set, init_model, tmp_path), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), "the ranks' parameters differ"
    single = GBufferTask(GBufferTaskConfig(data=relight_set, init=init_model))
    train_prior(single, _config(tmp_path / "single", max_steps=2, batch_size=2, checkpoint_every=2, ema_decay=0.0),
                log=lambda _: None)  # fmt: skip
    one = single.trained_module().state_dict()
    worst = max(float((rank0[k] - one[k]).abs().max()) for k in one)
    assert worst < 1e-5, worst
    moved = max(float((one[k] - _unet_state(init_model)[k]).abs().max()) for k in one)
    assert moved > 1e-4  # the step is real, so agreeing with it means something


def test_widen_conv_in_keeps_the_base_prediction() -> None:
    from relight3d.priors.diffusion.testing import tiny_unet

    torch.manual_seed(0)
    unet = tiny_unet(4).eval()
    x, t, ctx = torch.randn(1, 4, 8, 8), torch.tensor([10]), torch.randn(1, 1, unet.config.cross_attention_dim)
    with torch.no_grad():
        before = unet(x, t, encoder_hidden_states=ctx).sample
        widen_conv_in(unet, 12)
        after = unet(torch.cat([x, torch.randn(1, 8, 8, 8)], 1), t, encoder_hidden_states=ctx).sample
    assert unet.config.in_channels == 12 and torch.allclose(before, after, atol=1e-6)


def test_manifest_paths_stay_inside_the_dataset(relight_set, tmp_path) -> None:
    import shutil

    bad = shutil.copytree(relight_set, tmp_path / "bad")
    write_manifest(bad, [{"gbuffers": "gbuffer_frames/sphere", "frame": 0, "image": "../../etc/passwd",
                          "envmap": "envmaps/light0.exr"}])  # fmt: skip
    with pytest.raises(DataError, match="line 1: image: '../../etc/passwd' leaves the dataset folder"):
        RelightPairs(bad)
    write_manifest(bad, [{"gbuffers": "gbuffer_frames/sphere", "frame": 5, "image": "images/view0_light0.png",
                          "envmap": "envmaps/light0.exr"}])  # fmt: skip
    with pytest.raises(DataError, match="frame 5 is out of range"):
        RelightPairs(bad)[0]


def test_train_prior_command_runs_and_bad_data_is_one_line(relight_set, init_model, tmp_path, capsys) -> None:
    from relight3d.cli import main

    argv = ["train-prior", "gbuffer", "--data", str(relight_set), "--init", str(init_model), "--output",
            str(tmp_path / "run"), "--max-steps", "1", "--batch-size", "1", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert "model: " in capsys.readouterr().out and (tmp_path / "run" / "model" / "unet").is_dir()
    assert main([*argv[:3], str(tmp_path / "nowhere"), *argv[4:]]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == f"relight3d: error: {tmp_path / 'nowhere' / 'manifest.jsonl'}: no such manifest (a relighting "
        "dataset folder holds manifest.jsonl)"
    )
    assert main([*argv, "--base", str(init_model)]) == 2
    assert "--init/--base: give exactly one" in capsys.readouterr().err
