"""Every registered method builds from its entry point, trains a few iterations on CPU, checkpoints and resumes."""

from __future__ import annotations

import copy
import dataclasses
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch

from relight3d.engine.run import build_pipeline, evaluate_pipeline, train
from relight3d.engine.trainer import latest_checkpoint

METHODS = ("relight3d-tensorf", "relight3d-ngp")


def method_configs():
    eps = {ep.name: ep for ep in entry_points(group="nerfstudio.method_configs") if ep.name.startswith("relight3d")}
    assert set(METHODS) <= set(eps), f"registered: {sorted(eps)}"
    return {name: eps[name].load().config for name in METHODS}


def tiny(config, steps: int):
    """A copy of a method's config, shrunk for a few CPU iterations."""
    cfg = copy.deepcopy(config)
    cfg.max_num_iterations = steps
    cfg.steps_per_save = 2
    cfg.steps_per_eval_image = 2
    cfg.steps_per_eval_batch = 2
    cfg.vis = "tensorboard"
    cfg.pipeline.datamanager.train_num_rays_per_batch = 256
    cfg.pipeline.datamanager.eval_num_rays_per_batch = 256
    cfg.pipeline.model.occupancy_resolution = 32
    cfg.pipeline.model.eval_num_rays_per_chunk = 1024
    return cfg


def test_entry_points_and_configs():
    configs = method_configs()
    for name, cfg in configs.items():
        assert cfg.method_name == name
        assert cfg.pipeline.model._target.__module__.startswith("relight3d.models")
    # No mutable default is shared between config instances.
    a, b = configs["relight3d-tensorf"], copy.deepcopy(configs["relight3d-tensorf"])
    for f in dataclasses.fields(a.pipeline.model):
        if f.default is not dataclasses.MISSING:
            assert not isinstance(f.default, (list, dict, set)), f.name
    b.pipeline.model.upsampling_iters = (1,)
    assert a.pipeline.model.upsampling_iters != (1,)
    dp = {ep.name for ep in entry_points(group="nerfstudio.dataparser_configs")}
    assert {"relight3d-objaverse", "relight3d-single-image"} <= dp


def test_every_entry_point_builds_its_method_and_gaffer_offers_every_prior(capsys):
    """Each relight3d entry point loads, names its own method and is described; ns-train relight3d-gaffer offers
    every prior of the registry as ``pipeline.prior:<name>``, the registry's default first."""
    import tyro

    from relight3d.method_configs import METHOD_DESCRIPTIONS, gaffer_config
    from relight3d.priors.registry import DEFAULT_PRIOR, PRIORS

    eps = {ep.name: ep for ep in entry_points(group="nerfstudio.method_configs") if ep.name.startswith("relight3d")}
    assert set(eps) == set(METHOD_DESCRIPTIONS)
    for name, ep in eps.items():
        spec = ep.load()
        assert spec.config.method_name == name and spec.description == METHOD_DESCRIPTIONS[name]
        assert spec.config.pipeline.model._target.__module__.startswith("relight3d.models")
    gaffer = eps["relight3d-gaffer"].load().config
    assert type(gaffer.pipeline.prior) is PRIORS[DEFAULT_PRIOR]
    with pytest.raises(SystemExit):
        tyro.cli(type(gaffer), default=gaffer, args=["--help"])
    text = capsys.readouterr().out
    assert all(f"pipeline.prior:{name}" in text for name in PRIORS), text[-2000:]
    other = PRIORS["neural-gaffer"]()
    short = gaffer_config(stage1_steps=3, stage2_steps=2, prior=other)
    assert short.pipeline.prior is other and short.max_num_iterations == 5 and short.pipeline.stage1_steps == 3


@pytest.mark.parametrize("name", METHODS)
def test_smoke_train_checkpoint_and_resume(name, tiny_scene, tmp_path):
    cfg = tiny(method_configs()[name], steps=4)
    train(cfg, tiny_scene, tmp_path, experiment_name="smoke")
    base = cfg.get_base_dir()
    assert (base / "config.yml").is_file()
    ckpt = latest_checkpoint(base / "nerfstudio_models")
    assert ckpt is not None and ckpt.name == "step-000000003.ckpt"
    assert not list(base.parent.glob(".*.tmp"))  # atomic writes leave no temporary files
    state = torch.load(ckpt, map_location="cpu", weights_only=True)  # loads without executing code
    assert state["step"] == 3

    resumed = tiny(method_configs()[name], steps=2)
    resumed.load_dir = base / "nerfstudio_models"
    trainer2 = train(resumed, tiny_scene, tmp_path, experiment_name="resumed")
    assert trainer2._start_step == 4
    final = latest_checkpoint(resumed.get_base_dir() / "nerfstudio_models")
    assert final is not None and final.name == "step-000000005.ckpt"
    # The optimizer moments were restored too: Adam has counted 4 + 2 steps for every parameter.
    final_state = torch.load(final, map_location="cpu", weights_only=True)
    steps = {float(st["step"]) for opt in final_state["optimizers"].values() for st in opt["state"].values()}
    assert steps == {6.0}, steps


def test_short_training_beats_untrained_floor(small_scene, tmp_path):
    """A short run must clear a held-out PSNR floor that an untrained field cannot reach."""
    cfg = copy.deepcopy(method_configs()["relight3d-tensorf"])
    cfg.vis = "tensorboard"
    cfg.steps_per_eval_image = 10_000
    cfg.steps_per_eval_batch = 10_000
    cfg.pipeline.datamanager.train_num_rays_per_batch = 2048
    cfg.pipeline.model.upsampling_iters = (60, 120)
    cfg.pipeline.model.shrink_iters = (60,)
    cfg.pipeline.model.final_resolution = 96
    trainer = train(cfg, small_scene, tmp_path, max_steps=200, experiment_name="floor")
    metrics = evaluate_pipeline(trainer.pipeline)

    untrained = build_pipeline(copy.deepcopy(method_configs()["relight3d-tensorf"]), small_scene)
    floor = evaluate_pipeline(untrained)
    assert floor["psnr_masked"] < 12.0
    assert metrics["psnr_masked"] > 22.0, metrics
    assert metrics["psnr"] > 26.0, metrics


def _ns_train(args, cwd: Path, timeout: int = 300):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    exe = Path(sys.executable).parent / "ns-train"
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def test_ns_train_cli(tiny_scene, tmp_path):
    """What a user runs: ns-train with the plugin's method and a Blender-format folder."""
    common = [
        "--output-dir",
        str(tmp_path / "out"),
        "--vis",
        "tensorboard",
        "--max-num-iterations",
        "3",
        "--pipeline.model.occupancy-resolution",
        "32",
        "--pipeline.datamanager.train-num-rays-per-batch",
        "256",
    ]
    res = _ns_train(["relight3d-tensorf", "--data", str(tiny_scene), *common], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert list((tmp_path / "out").rglob("config.yml")) and list((tmp_path / "out").rglob("step-*.ckpt"))

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "transforms_train.json").write_text("{oops")
    res = _ns_train(["relight3d-tensorf", "--data", str(bad), *common], tmp_path)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("relight3d: error: ") and "transforms_train.json: malformed JSON" in last


def test_carving_keeps_the_object_and_drops_empty_space(tiny_scene):
    """Space carving from the masks keeps every cell the object occupies, and the shrink box contains the object."""
    from relight3d.data.synthetic import trace

    pipeline = build_pipeline(copy.deepcopy(method_configs()["relight3d-tensorf"]), tiny_scene)
    model, dm = pipeline.model, pipeline.datamanager
    carved = model.carve_occupancy(dm.train_cameras, dm.train_images)
    assert carved is not None and carved > 0.8  # most of the empty box is gone from the first step
    # Points on the object's surface: trace rays from outside towards the origin.
    g = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(4000, 3, generator=g, dtype=torch.float64), dim=-1)
    origins = -dirs * 3.0
    _, hit = trace(origins, dirs, "objects")
    assert int(hit.sum()) > 1000
    from relight3d.data.synthetic import _box_hit, _sphere_hit

    hits = [
        _sphere_hit(origins, dirs, (0.0, 0.0, 0.15), 0.55)[0],
        _sphere_hit(origins, dirs, (0.45, -0.35, -0.45), 0.25)[0],
        _box_hit(origins, dirs, (-0.75, -0.35, -0.7), (-0.05, 0.35, -0.3))[0],
    ]
    t = torch.stack(hits, -1).min(-1).values
    surface = (origins + dirs * t[:, None])[hit].float() * 0.999
    assert bool(model.occupancy.is_occupied(surface).all())
    box = model.shrink_to_occupied()
    assert bool((surface >= box[:3]).all() and (surface <= box[3:]).all())
