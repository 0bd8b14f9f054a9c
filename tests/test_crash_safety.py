"""Training never loses more than one save interval: SIGKILL between saves and in the middle of a save, then resume
with --load-dir; bad trainer options and unwritable folders stop ns-train with one line before any training."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from relight3d.data.synthetic import SceneSpec, write_blender_scene
from relight3d.engine.trainer import (
    TEMPORARY_PATTERN,
    Relight3dExit,
    Relight3DTrainer,
    ensure_writable,
    exit_on_error,
    latest_checkpoint,
    remove_stale_temporaries,
    save_atomically,
)
from relight3d.errors import ConfigError, DataError

# Runs ns-train's own entry point after arranging for this process to SIGKILL itself at a chosen point:
#   between:<step>  at the start of training iteration <step> (after the saves before it);
#   save:<step>     inside the save of step <step>, after half of the checkpoint's bytes reached the disk.
DRIVER = textwrap.dedent(
    """
    import io, os, signal, sys
    import torch
    from relight3d.engine.trainer import Relight3DTrainer

    mode, step = os.environ["R3D_KILL"].split(":")
    step = int(step)
    if mode == "between":
        iteration = Relight3DTrainer.train_iteration

        def train_iteration(self, s):
            if s == step:
                os.kill(os.getpid(), signal.SIGKILL)
            return iteration(self, s)

        Relight3DTrainer.train_iteration = train_iteration
    elif mode == "save":
        real_save = torch.save

        def save(obj, f, *args, **kwargs):
            if isinstance(obj, dict) and obj.get("step") == step:
                buffer = io.BytesIO()
                real_save(obj, buffer, *args, **kwargs)
                f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                f.flush()
                os.fsync(f.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, f, *args, **kwargs)

        torch.save = save
    from nerfstudio.scripts.train import entrypoint

    sys.argv = ["ns-train", *sys.argv[1:]]
    entrypoint()
    """
)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    spec = SceneSpec(scene="objects", resolution=16, n_train=4, n_test=1, supersample=1)
    return write_blender_scene(tmp_path_factory.mktemp("crash_scene"), spec)


def ns_train_killed(args, cwd: Path, kill: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """ns-train in a subprocess that SIGKILLs itself at ``kill`` (see :data:`DRIVER`)."""
    (cwd / "driver.py").write_text(DRIVER)
    env = dict(os.environ, PYTHONWARNINGS="ignore", R3D_KILL=kill)
    cmd = [sys.executable, str(cwd / "driver.py"), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def ns_train(args, capfd) -> tuple:
    """ns-train's entry point in this process (the path ns-train takes: tyro, main, launch, train_loop):
    (exit code, stderr)."""
    from nerfstudio.scripts.train import entrypoint

    capfd.readouterr()
    argv = sys.argv
    sys.argv = ["ns-train", *map(str, args)]
    try:
        entrypoint()
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    finally:
        sys.argv = argv
    return code, capfd.readouterr().err


def tiny_args(scene: Path, out: Path, iterations: int) -> list:
    return [
        "relight3d-tensorf", "--data", str(scene), "--output-dir", str(out), "--experiment-name", "crash",
        "--timestamp", "run", "--vis", "tensorboard", "--max-num-iterations", str(iterations),
        "--steps-per-save", "4", "--steps-per-eval-batch", "0", "--steps-per-eval-image", "0",
        "--steps-per-eval-all-images", "0", "--pipeline.model.occupancy-resolution", "16",
        "--pipeline.datamanager.train-num-rays-per-batch", "128",
    ]  # fmt: skip


def one_error_line(code: int, err: str) -> str:
    assert code == 2, (code, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("relight3d: error: ")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def adam_steps(ckpt: Path) -> set:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    return {float(st["step"]) for opt in state["optimizers"].values() for st in opt["state"].values()}


def test_sigkill_between_and_during_saves_then_resume(scene, tmp_path, capfd):
    out = tmp_path / "out"
    run = out / "crash" / "relight3d-tensorf" / "run"
    ckpt_dir = run / "nerfstudio_models"

    # 1. killed at iteration 10 of 12, saves every 4 steps: step 8 is on disk, 2 steps (< one interval) lost
    res = ns_train_killed(tiny_args(scene, out, 12), tmp_path, kill="between:10")
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    assert [p.name for p in ckpt_dir.iterdir()] == ["step-000000008.ckpt"]
    assert adam_steps(ckpt_dir / "step-000000008.ckpt") == {9.0}

    # 2. resumed, and killed half-way through writing step 12: a partial temporary file, step 8 intact
    res = ns_train_killed([*tiny_args(scene, out, 6), "--load-dir", ckpt_dir], tmp_path, kill="save:12")
    assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
    assert "step 8" in res.stdout  # it resumed from step 8: it trained steps 9-11 before the save
    partial = [p for p in run.iterdir() if TEMPORARY_PATTERN.match(p.name)]
    assert len(partial) == 1 and partial[0].stat().st_size > 0
    assert [p.name for p in ckpt_dir.iterdir()] == ["step-000000008.ckpt"]  # nothing half-written among them

    # 3. resumed again: the partial file is removed, training goes on from step 9 and ends at step 11
    code, err = ns_train([*tiny_args(scene, out, 3), "--load-dir", ckpt_dir], capfd)
    assert code == 0, err[-3000:]
    assert not partial[0].exists() and not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    assert [p.name for p in ckpt_dir.iterdir()] == ["step-000000011.ckpt"]
    state = torch.load(ckpt_dir / "step-000000011.ckpt", map_location="cpu", weights_only=True)
    assert state["step"] == 11 and adam_steps(ckpt_dir / "step-000000011.ckpt") == {12.0}


def test_ns_train_refuses_bad_counts_and_unwritable_folders_before_training(scene, tmp_path, capfd, monkeypatch):
    out = tmp_path / "out"
    line = one_error_line(*ns_train(tiny_args(scene, out, -5), capfd))
    assert line == "relight3d: error: --max-num-iterations: must be a positive integer, got -5"
    assert not out.exists()  # refused before the config was written
    line = one_error_line(*ns_train(tiny_args(scene, out, 0), capfd))
    assert line.endswith("--max-num-iterations: must be a positive integer, got 0")

    blocker = tmp_path / "file"
    blocker.write_text("a file where the output folder would go")
    line = one_error_line(*ns_train(tiny_args(scene, blocker / "out", 2), capfd))
    assert line.startswith(f"relight3d: error: {blocker / 'out' / 'crash' / 'relight3d-tensorf' / 'run'}: ")
    assert "the run folder is not writable" in line

    # a Relight3dError raised while the pipeline is set up (no such data folder) is one line too
    missing = tmp_path / "no_scene"
    line = one_error_line(*ns_train(tiny_args(missing, out, 2), capfd))
    assert str(missing) in line

    # ... and so is a checkpoint of another method to resume from, or an error raised during training
    other = out / "other.ckpt"
    torch.save({"step": 3, "pipeline": {"_model.other.weight": torch.zeros(1)}, "optimizers": {}, "scalers": {}}, other)
    line = one_error_line(*ns_train([*tiny_args(scene, out, 2), "--load-checkpoint", other], capfd))
    assert line.startswith(f"relight3d: error: {other}: checkpoint does not match this method")

    def failing_iteration(self, step):  # noqa: ANN001, ANN202
        raise DataError("scene/envmap.exr", f"unreadable at step {step}")

    monkeypatch.setattr(Relight3DTrainer, "train_iteration", failing_iteration)
    line = one_error_line(*ns_train(tiny_args(scene, out, 2), capfd))
    assert line == "relight3d: error: scene/envmap.exr: unreadable at step 0"


def test_checkpoint_folder_checked_before_training(tmp_path):
    """A checkpoint folder that exists as a file, or sits in a read-only folder, is found before training."""
    from nerfstudio.engine.trainer import TrainerConfig

    from relight3d.engine.trainer import check_trainer_config

    cfg = TrainerConfig(method_name="m", output_dir=tmp_path / "out", experiment_name="e", timestamp="t")
    cfg.get_base_dir().mkdir(parents=True)
    (cfg.get_base_dir() / "nerfstudio_models").write_text("")
    with pytest.raises(DataError) as err:
        check_trainer_config(cfg)
    assert str(err.value).startswith(f"{cfg.get_checkpoint_dir()}: the checkpoint folder is not writable")
    cfg.max_num_iterations, cfg.steps_per_save = 5, -1
    with pytest.raises(ConfigError, match="^--steps-per-save: must be an integer >= 0"):
        check_trainer_config(cfg, check_folders=False)
    if os.geteuid() != 0:  # (root writes anywhere)
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(DataError, match="not writable"):
            ensure_writable(locked / "run", "the run folder")


def test_stale_temporaries_and_atomic_save(tmp_path):
    ckpt_dir = tmp_path / "run" / "nerfstudio_models"
    save_atomically({"step": 3, "pipeline": {"w": torch.ones(2)}}, ckpt_dir / "step-000000003.ckpt")
    assert latest_checkpoint(ckpt_dir).name == "step-000000003.ckpt"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["nerfstudio_models"]
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        names = {
            "dead": f".nerfstudio_models.step-000000004.ckpt.{int(dead.stdout)}.tmp",
            "old_style": ".nerfstudio_models.step-000000005.ckpt.tmp",
            "live": f".nerfstudio_models.step-000000006.ckpt.{live.pid}.tmp",
            "other_folder": f".other.step-000000004.ckpt.{int(dead.stdout)}.tmp",
            "unrelated": "notes.tmp",
        }
        for name in names.values():
            (tmp_path / "run" / name).write_bytes(b"partial")
        removed = remove_stale_temporaries(ckpt_dir)
        assert sorted(p.name for p in removed) == sorted([names["dead"], names["old_style"]])
        left = {p.name for p in (tmp_path / "run").iterdir()}
        assert {names["live"], names["other_folder"], names["unrelated"]} <= left
    finally:
        live.kill()
        live.wait()


def test_relight3d_error_during_training_exits_2_in_one_line(capsys):
    """What ns-train sees from Relight3DTrainer.setup/train: one line on stderr and SystemExit(2)."""
    with pytest.raises(SystemExit) as exit_info:
        with exit_on_error():
            raise DataError("scene/transforms_train.json", "malformed JSON")
    assert isinstance(exit_info.value, Relight3dExit) and exit_info.value.code == 2
    assert capsys.readouterr().err == "relight3d: error: scene/transforms_train.json: malformed JSON\n"
    with pytest.raises(DataError):  # library callers (relight3d.engine.run.train) get the error itself
        with exit_on_error(enabled=False):
            raise DataError("x", "y")
