"""Loading trained runs for export, and the one-line errors of ``relight3d export`` for bad input."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml

from relight3d.cli import main
from relight3d.engine.loading import load_trained_pipeline
from relight3d.errors import DataError


def test_loaded_pipeline_equals_the_trained_one(sphere_run):
    config_path, trained = sphere_run
    config, pipeline = load_trained_pipeline(config_path)
    assert config.method_name == "relight3d-tensorf"
    assert not pipeline.training
    points = torch.rand(2000, 3) * 1.4 - 0.7
    with torch.no_grad():
        expected = trained.model.field.density(points)
        got = pipeline.model.field.density(points)
    assert torch.equal(expected, got)  # same grids (resampled sizes included), same box
    assert torch.equal(trained.model.occupancy.bitfield, pipeline.model.occupancy.bitfield)


def test_a_moved_run_loads_its_own_checkpoint(sphere_run, tmp_path):
    """Checkpoints are looked up beside config.yml first, so a copied or moved run loads its own weights (the
    config still names the original folder)."""
    config_path, trained = sphere_run
    moved = tmp_path / "moved_run"
    shutil.copytree(config_path.parent, moved)
    (ckpt,) = (moved / "nerfstudio_models").glob("*.ckpt")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state["pipeline"]["_model.field.density_lines"] = state["pipeline"]["_model.field.density_lines"] * 0.5
    torch.save(state, ckpt)
    _, pipeline = load_trained_pipeline(moved)  # the folder holding config.yml
    assert torch.equal(pipeline.model.field.density_lines, trained.model.field.density_lines * 0.5)


def _run(argv, capsys):
    """Exit code and the error line(s) the CLI printed (library warnings on stderr are not the CLI's)."""
    code = main(argv)
    err = "\n".join(line for line in capsys.readouterr().err.splitlines() if line.startswith("relight3d: error"))
    return code, err


def test_missing_config(tmp_path, capsys):
    code, err = _run(["export", "mesh", "--load-config", str(tmp_path / "nope.yml"), "--output",
                      str(tmp_path / "m.ply")], capsys)  # fmt: skip
    assert code == 2 and err.count("\n") == 0
    assert "nope.yml: config file not found" in err


def test_foreign_config(tmp_path, capsys):
    """A nerfstudio config of another method (vanilla-nerf) is refused before anything is built."""
    from nerfstudio.engine.trainer import TrainerConfig
    from nerfstudio.models.vanilla_nerf import VanillaModelConfig
    from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig

    foreign = TrainerConfig(method_name="vanilla-nerf", pipeline=VanillaPipelineConfig(model=VanillaModelConfig()))
    path = tmp_path / "config.yml"
    path.write_text(yaml.dump(foreign))
    code, err = _run(["export", "video", "--load-config", str(path), "--output", str(tmp_path / "v.mp4")], capsys)
    assert code == 2 and err.count("\n") == 0
    assert "config of method 'vanilla-nerf', which is not a relight3d method" in err
    garbage = tmp_path / "garbage.yml"
    garbage.write_text("a: [unclosed\n")
    with pytest.raises(DataError, match="not a readable nerfstudio config"):
        load_trained_pipeline(garbage)
    plain = tmp_path / "plain.yml"
    plain.write_text("method_name: relight3d-tensorf\n")
    with pytest.raises(DataError, match="not a nerfstudio TrainerConfig"):
        load_trained_pipeline(plain)
    unknown_class = tmp_path / "unknown.yml"
    unknown_class.write_text("!!python/object:not_installed_plugin.Config {}\n")
    with pytest.raises(DataError, match="cannot be imported"):
        load_trained_pipeline(unknown_class)


def test_missing_checkpoint_and_moved_data(sphere_run, tmp_path, capsys):
    config_path, _ = sphere_run
    run = tmp_path / "run"
    shutil.copytree(config_path.parent, run)
    for ckpt in (run / "nerfstudio_models").glob("*.ckpt"):
        ckpt.unlink()
    code, err = _run(["export", "mesh", "--load-config", str(run / "config.yml"), "--output",
                      str(tmp_path / "m.ply")], capsys)  # fmt: skip
    assert code == 2 and err.count("\n") == 0
    assert "nerfstudio_models: no step-*.ckpt checkpoint in this folder" in err
    with pytest.raises(DataError, match="checkpoint not found"):
        load_trained_pipeline(config_path, step=123456)
    with pytest.raises(DataError, match="training data not found"):
        load_trained_pipeline(config_path, data=tmp_path / "gone")


def test_bad_output_paths_fail_before_loading(sphere_run, tmp_path, capsys):
    config_path, _ = sphere_run
    code, err = _run(["export", "mesh", "--load-config", str(config_path), "--output", str(tmp_path / "m.xyz")], capsys)
    assert code == 2 and "unknown mesh format ('.xyz'); use one of .ply, .obj, .glb" in err
    code, err = _run(["export", "video", "--load-config", str(config_path), "--output", str(tmp_path / "v.avi")],
                     capsys)  # fmt: skip
    assert code == 2 and "unknown video format ('.avi'); use one of .mp4, .gif" in err
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, err = _run(["export", "mesh", "--load-config", str(config_path), "--output", str(blocker / "m.ply")],
                     capsys)  # fmt: skip
    assert code == 2 and "cannot create the output folder" in err and err.count("\n") == 0
