"""Run configs and checkpoints from elsewhere never run code: hostile ``config.yml`` tags and hostile or broken
checkpoints are refused with one line naming the file, on every path that loads a run; real configs round-trip."""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from relight3d.data.dataparser_configs import DATAPARSERS
from relight3d.engine.loading import load_trained_pipeline, read_trainer_config
from relight3d.engine.safe_config import load_run_config
from relight3d.engine.trainer import latest_checkpoint, load_checkpoint_file, to_builtin
from relight3d.errors import DataError


def relight3d_methods():
    """name -> config of every relight3d method registered with ns-train."""
    eps = entry_points(group="nerfstudio.method_configs")
    return {ep.name: ep.load().config for ep in eps if ep.name.startswith("relight3d")}


def payloads(marker: Path):
    """YAML documents that would create ``marker`` (or import code) if a loader built what they name."""
    m = str(marker)
    return {
        "os.system": f'!!python/object/apply:os.system ["touch {m}"]',
        "subprocess.call": f'!!python/object/apply:subprocess.call [["touch", "{m}"]]',
        "subprocess.Popen new": f'!!python/object/new:subprocess.Popen [["touch", "{m}"]]',
        "python/name eval via map": (
            "!!python/object/new:tuple [!!python/object/new:map "
            f"[!!python/name:eval , [\"__import__('os').system('touch {m}')\"]]]"
        ),
        "python/module": "!!python/module:os ''",
        # __reduce__-style: a class made by type() whose `extend` is exec, then called through `listitems`
        "state-setting reduce": (
            "!!python/object/new:type\n"
            "args: [z, !!python/tuple [], {extend: !!python/name:exec }]\n"
            f"listitems: \"__import__('os').system('touch {m}')\"\n"
        ),
        "listitems extend": (
            "!!python/object/new:yaml.MappingNode\n"
            f"listitems: !!str '!!python/object/apply:os.system [\"touch {m}\"]'\n"
            "state:\n"
            "  tag: !!str dummy\n"
            "  value: !!str dummy\n"
            "  extend: !!python/name:yaml.unsafe_load\n"
        ),
        # inside the allowed packages, but not a config class: a nerfstudio helper that runs shell commands
        "nerfstudio function": f'!!python/object/apply:nerfstudio.utils.scripts.run_command ["touch {m}"]',
        "nerfstudio re-export": f'!!python/object/apply:nerfstudio.utils.scripts.subprocess.call [["touch", "{m}"]]',
        "config class with state form": (
            "!!python/object/apply:nerfstudio.configs.base_config.MachineConfig\n"
            f'  state: {{seed: 1}}\n  listitems: ["touch {m}"]\n'
        ),
    }


def test_payloads_are_live(tmp_path):
    """The control: PyYAML's unsafe loader (what relight3d used before) does run these payloads."""
    marker = tmp_path / "pwned"
    yaml.load(payloads(marker)["os.system"], Loader=yaml.UnsafeLoader)
    assert marker.exists()
    marker.unlink()
    for name in ("state-setting reduce", "listitems extend", "python/name eval via map"):
        yaml.load(payloads(marker)[name], Loader=yaml.UnsafeLoader)
        assert marker.exists(), name
        marker.unlink()


@pytest.mark.parametrize("name", list(payloads(Path("x"))))
def test_hostile_tag_is_refused_in_one_line(name, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "config.yml"
    path.write_text(payloads(marker)[name])
    with pytest.raises(DataError) as err:
        load_run_config(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: refused YAML tag '!!python/"), message
    assert not marker.exists()


def test_modules_outside_the_allowlist_are_not_imported(tmp_path, monkeypatch):
    """Naming a module is not enough to import it: only relight3d / nerfstudio (and torch.optim, pathlib) are."""
    marker = tmp_path / "imported"
    (tmp_path / "evil_module_r3d.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Payload: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for text in ("!!python/name:evil_module_r3d.Payload ''", "!!python/object:evil_module_r3d.Payload {}"):
        path = tmp_path / "config.yml"
        path.write_text(text)
        with pytest.raises(DataError, match="refused YAML tag '!!python/(name|object):evil_module_r3d.Payload'"):
            load_run_config(path)
    assert not marker.exists() and "evil_module_r3d" not in sys.modules


@pytest.fixture(scope="module")
def real_config_text(tmp_path_factory) -> str:
    """config.yml of relight3d-tensorf as ns-train writes it (``save_config``: ``yaml.dump`` of the config)."""
    cfg = copy.deepcopy(relight3d_methods()["relight3d-tensorf"])
    cfg.output_dir = tmp_path_factory.mktemp("out")
    cfg.pipeline.datamanager.data = cfg.output_dir / "scene"
    cfg.set_timestamp()
    cfg.save_config()
    return (cfg.get_base_dir() / "config.yml").read_text()


@pytest.mark.parametrize(
    "old, new, tag",
    [
        ("experiment_name: ", 'experiment_name: !!python/object/apply:os.system ["touch {m}"]\nx_: ', "os.system"),
        ("  _target: !!python/name:relight3d.models.tensorf.TensoRFModel ''",
         "  _target: !!python/name:os.system ''", "os.system"),
        ("  seed: 42", "  seed: !!python/object/apply:subprocess.call [[\"touch\", \"{m}\"]]", "subprocess.call"),
        ("!!python/object:relight3d.engine.trainer.Relight3DTrainerConfig",
         "!!python/object:subprocess.Popen", "subprocess.Popen"),
    ],
    ids=["apply-as-value", "target-name", "nested-subprocess", "top-level-class"],
)  # fmt: skip
def test_tags_nested_in_a_valid_config(real_config_text, old, new, tag, tmp_path):
    marker = tmp_path / "pwned"
    assert old in real_config_text
    path = tmp_path / "config.yml"
    path.write_text(real_config_text.replace(old, new.format(m=marker), 1))
    with pytest.raises(DataError) as err:
        read_trainer_config(path)
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{path}: refused YAML tag")
    assert tag in str(err.value) and "(line " in str(err.value)
    assert not marker.exists()


def test_every_method_and_dataparser_round_trips(tmp_path):
    """The config.yml of every relight3d method (and every dataparser of tensorf), parsed by tyro from an
    ns-train command line and written as ns-train writes it, loads with the safe loader to the same values."""
    import tyro
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion

    methods = sorted(relight3d_methods())
    assert {"relight3d-tensorf", "relight3d-ngp", "relight3d-gaffer"} <= set(methods)
    lines = [[m, "--output-dir", str(tmp_path / m), "--max-num-iterations", "7"] for m in methods]
    lines += [["relight3d-tensorf", "--output-dir", str(tmp_path / d), d, "--data", str(tmp_path)] for d in DATAPARSERS]
    for argv in lines:
        cfg = tyro.cli(AnnotatedBaseConfigUnion, args=argv)
        cfg.set_timestamp()
        cfg.save_config()
        path = cfg.get_base_dir() / "config.yml"
        loaded = load_run_config(path)
        assert type(loaded) is type(cfg)
        assert yaml.dump(loaded) == path.read_text(), argv  # the same values, field by field
        assert loaded.pipeline.datamanager.dataparser.__class__ is cfg.pipeline.datamanager.dataparser.__class__
        assert read_trainer_config(path).method_name == argv[0]


def test_old_config_missing_a_field_gets_its_default(real_config_text, tmp_path):
    path = tmp_path / "config.yml"
    assert "steps_per_save: 250\n" in real_config_text
    path.write_text(real_config_text.replace("steps_per_save: 250\n", ""))
    assert read_trainer_config(path).steps_per_save == 1000  # nerfstudio's TrainerConfig default


# --- checkpoints -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A relight3d-tensorf run of 2 iterations on a 16 px scene: (config.yml, checkpoint)."""
    from relight3d.data.synthetic import SceneSpec, write_blender_scene
    from relight3d.engine.run import train

    root = tmp_path_factory.mktemp("ckpt_run")
    scene = write_blender_scene(root / "scene", SceneSpec(scene="objects", resolution=16, n_train=4, n_test=1))
    cfg = small(relight3d_methods()["relight3d-tensorf"])
    train(cfg, scene, root / "out", max_steps=2, experiment_name="run")
    ckpt = latest_checkpoint(cfg.get_checkpoint_dir())
    return cfg.get_base_dir() / "config.yml", ckpt


def small(cfg):
    cfg = copy.deepcopy(cfg)
    cfg.vis = "tensorboard"
    cfg.steps_per_eval_batch = cfg.steps_per_eval_image = cfg.steps_per_eval_all_images = 0
    cfg.pipeline.datamanager.train_num_rays_per_batch = 128
    cfg.pipeline.model.occupancy_resolution = 16
    return cfg


def test_own_checkpoints_hold_only_weights(trained_run):
    _, ckpt = trained_run
    state = torch.load(ckpt, map_location="cpu", weights_only=True)  # would refuse numpy scalars or any object

    def walk(obj):
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(k), walk(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v)
        else:
            assert obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)), type(obj)

    walk(state)
    converted = to_builtin({"lr": np.float64(0.5), "m": (np.arange(3),)})
    assert type(converted["lr"]) is float and torch.equal(converted["m"][0], torch.arange(3))


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def broken_checkpoints(ckpt: Path, tmp_path: Path):
    data = ckpt.read_bytes()
    marker = tmp_path / "pwned"
    cases = {
        "truncated.ckpt": (data[: len(data) // 2], "cannot be read as a torch checkpoint (truncated or damaged): "),
        "text.ckpt": (b"this is not a checkpoint\n", "cannot be read as a torch checkpoint (it is not a zip archive)"),
        "empty.ckpt": (b"", "empty checkpoint file"),
    }
    for name, (content, _) in cases.items():
        (tmp_path / name).write_bytes(content)
    pickle_path = tmp_path / "code_pickle.ckpt"
    with open(pickle_path, "wb") as f:
        pickle.dump({"step": 1, "pipeline": _Payload(str(marker))}, f)
    torch_path = tmp_path / "code_torch.ckpt"
    torch.save({"step": 1, "pipeline": {"w": torch.zeros(1)}, "extra": _Payload(str(marker))}, torch_path)
    numpy_path = tmp_path / "numpy.ckpt"
    torch.save({"step": 1, "pipeline": {"w": torch.zeros(1)}, "lr": np.float64(0.1)}, numpy_path)
    not_ns = tmp_path / "plain.ckpt"
    torch.save({"w": torch.zeros(1)}, not_ns)
    expected = {tmp_path / n: problem for n, (_, problem) in cases.items()}
    expected[pickle_path] = "refused: the checkpoint holds pickled Python objects"
    expected[torch_path] = "refused: the checkpoint holds pickled Python objects"
    expected[numpy_path] = "refused: the checkpoint holds pickled Python objects"
    expected[not_ns] = "not a nerfstudio checkpoint"
    return expected, marker


def test_broken_and_hostile_checkpoints(trained_run, tmp_path):
    _, ckpt = trained_run
    expected, marker = broken_checkpoints(ckpt, tmp_path)
    for path, problem in expected.items():
        with pytest.raises(DataError) as err:
            load_checkpoint_file(path)
        assert "\n" not in str(err.value) and str(err.value).startswith(f"{path}: {problem}"), str(err.value)
        if "cannot be read" in problem:  # torch's own error is kept as the cause
            assert err.value.__cause__ is not None
    assert not marker.exists()


def test_checkpoint_of_another_method_is_one_line(trained_run, tmp_path):
    """The tensorf run's config with an NGP checkpoint in its folder: refused before or while loading weights."""
    import shutil

    config_path, ckpt = trained_run
    run = tmp_path / "run"
    shutil.copytree(config_path.parent, run)
    ngp = small(relight3d_methods()["relight3d-ngp"])
    from relight3d.engine.run import build_pipeline

    scene = read_trainer_config(config_path).pipeline.datamanager.data
    pipeline = build_pipeline(ngp, scene)
    (run_ckpt,) = (run / "nerfstudio_models").glob("*.ckpt")
    torch.save({"step": 1, "pipeline": pipeline.state_dict()}, run_ckpt)
    with pytest.raises(DataError) as err:
        load_trained_pipeline(run)
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{run_ckpt}: checkpoint does not match")


def test_hostile_config_on_every_loading_path(trained_run, tmp_path, capsys):
    """relight3d export, relight3d relight --field-run and load_field_run refuse the config; nothing runs."""
    from relight3d.cli import main
    from relight3d.pipelines.relight_field import load_field_run

    config_path, _ = trained_run
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    run.mkdir()
    # (the old value of experiment_name moves to an inert extra key, so the rest of the file stays valid)
    payload = f'experiment_name: !!python/object/apply:os.system ["touch {marker}"]\nx_: '
    (run / "config.yml").write_text(config_path.read_text().replace("experiment_name: ", payload, 1))
    refused = f"relight3d: error: {run / 'config.yml'}: refused YAML tag '!!python/object/apply:os.system'"
    with pytest.raises(DataError, match="refused YAML tag '!!python/object/apply:os.system'"):
        load_field_run(run / "config.yml")
    assert main(["export", "mesh", "--load-config", str(run / "config.yml"), "--output", str(tmp_path / "m.ply")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(refused)
    envmap = tmp_path / "sky.hdr"
    cv2.imwrite(str(envmap), np.full((16, 32, 3), 0.5, np.float32))
    argv = ["relight", "--field-run", str(run / "config.yml"), "--envmap", str(envmap), "--output", str(tmp_path / "r")]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(refused)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    res = subprocess.run(
        [str(Path(sys.executable).parent / "ns-train"), "relight3d-gaffer", "--output-dir", str(tmp_path / "out"),
         "--pipeline.field-run", str(run / "config.yml")],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"relight3d: error: {run / 'config.yml'}: ") and "os.system" in last, last
    # ns-train --load-config: nerfstudio reads it with PyYAML's full loader; relight3d's config refuses it first
    from nerfstudio.scripts.train import entrypoint

    argv, sys.argv = sys.argv, ["ns-train", "relight3d-tensorf", "--load-config", str(run / "config.yml")]
    try:
        with pytest.raises(SystemExit) as exit_info:
            entrypoint()
    finally:
        sys.argv = argv
    assert exit_info.value.code == 2
    assert str(exit_info.value).startswith(f"relight3d: error: {run / 'config.yml'}: refused YAML tag")
    assert not marker.exists()
