"""How the bad-input corpus runs: the trained run every case may use, the entry points, the cases' builders.

Each case builds its inputs in ``tmp_path`` and runs a real console entry point:

* ``main``: ``relight3d.cli.main([...])`` in this process (what ``relight3d ...`` runs; fast);
* ``cli``: ``.venv/bin/relight3d ...`` (``python -m relight3d.cli`` where the script is absent) in a subprocess,
  for the cases that could hang (FIFOs) and a few of each kind;
* ``ns-train``: ``ns-train ...`` in a subprocess.

Runs and checkpoints come from one tiny run trained once (``conftest.py``: 2 iterations on a 16 px scene); datasets
are exercised through ``relight3d export mesh``, which rebuilds a run's dataparser on a run folder written for the case.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import pytest
import torch
import yaml
from bad_input_files import blender, exr, look_at, objaverse, outside_file, png, sky, write, write_frames

from relight3d.cli import main

BIN = Path(sys.executable).parent
TIMEOUT = 120


# --- runs -----------------------------------------------------------------------------------------------------------
@dataclass
class Ctx:
    """What the module fixture prepared."""

    run: Path
    """config.yml of a tiny trained relight3d-tensorf run (Blender scene)."""
    scene: Path
    """Its data."""
    config: object
    """Its TrainerConfig."""

    def run_with(self, folder: Path, dataparser: object, data: Path) -> Path:
        """A run folder whose config reads ``data`` with ``dataparser`` (and a placeholder checkpoint): loading it
        rebuilds the dataparser, which is what the dataset cases check."""
        from relight3d.method_configs import tensorf_config

        cfg = tensorf_config(2)
        cfg.pipeline.datamanager.dataparser = dataparser
        cfg.pipeline.datamanager.data = Path(data)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.yml").write_text(yaml.dump(cfg), encoding="utf-8")
        (folder / "nerfstudio_models").mkdir(exist_ok=True)
        torch.save({"step": 0, "pipeline": {}}, folder / "nerfstudio_models" / "step-000000000.ckpt")
        return folder / "config.yml"

    def copy_run(self, folder: Path) -> Path:
        shutil.copytree(self.run.parent, folder)
        return folder / "config.yml"


def make_ctx(tmp_path_factory: pytest.TempPathFactory) -> Ctx:
    """A tiny trained run (2 iterations on a 16 px scene) for the cases that load one."""
    from relight3d.data.synthetic import SceneSpec, write_blender_scene
    from relight3d.engine.run import train
    from relight3d.method_configs import tensorf_config

    scene = write_blender_scene(
        tmp_path_factory.mktemp("corpus_scene"), SceneSpec(resolution=16, n_train=4, n_test=1, supersample=1)
    )
    cfg = tensorf_config(2)
    cfg.steps_per_save = 2
    cfg.steps_per_eval_image = cfg.steps_per_eval_batch = 10**6
    cfg.pipeline.datamanager.train_num_rays_per_batch = 64
    cfg.pipeline.model.occupancy_resolution = 16
    trainer = train(cfg, scene, tmp_path_factory.mktemp("corpus_run"), experiment_name="corpus")
    return Ctx(run=trainer.base_dir / "config.yml", scene=scene, config=copy.deepcopy(trainer.config))


# --- running a case -------------------------------------------------------------------------------------------------
def _hung(signum: int, frame: object) -> None:
    raise TimeoutError("the command hung (a FIFO opened?)")


def run_main(argv: Sequence[str], capsys: pytest.CaptureFixture) -> Tuple[object, str]:
    """``relight3d.cli.main(argv)`` in this process; an alarm turns a hang into a failure."""
    capsys.readouterr()
    previous = signal.signal(signal.SIGALRM, _hung)
    signal.alarm(TIMEOUT)
    try:
        code: object = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    return code, capsys.readouterr().err


def run_process(argv: Sequence[str], tool: str) -> Tuple[object, str]:
    script = BIN / tool
    if script.is_file():
        command = [str(script)]
    elif tool == "relight3d":
        command = [sys.executable, "-m", "relight3d.cli"]
    else:
        pytest.skip(f"{tool} is not installed beside {sys.executable}")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    argv = [str(a) for a in argv]
    result = subprocess.run(
        command + argv, capture_output=True, text=True, timeout=TIMEOUT, env=env, stdin=subprocess.DEVNULL
    )
    return result.returncode, result.stderr


Builder = Callable[[Path, Ctx], Tuple[List[str], List[str]]]


@dataclass
class Case:
    """One bad input: ``build(tmp_path, ctx)`` makes it and returns ``(argv, words the error line must contain)``."""

    name: str
    build: Builder
    how: str = "main"
    """'main' (in process), 'cli' (relight3d subprocess) or 'ns-train' (subprocess)."""
    check: Optional[Callable[[Path], None]] = None
    """Extra check after the run (e.g. that nothing was created)."""


def assert_one_line_error(code: object, stderr: str, words: List[str]) -> None:
    assert "Traceback" not in stderr, stderr[-3000:]
    assert code == 2, f"exit code {code!r}; stderr: {stderr[-2000:]}"
    lines = [ln for ln in stderr.splitlines() if "error" in ln.lower()]
    assert lines, f"no error line in: {stderr[-2000:]}"
    line = lines[-1]
    for word in words:
        assert word.lower() in line.lower(), f"{word!r} not in the error line {line!r}"


def run_case(case: Case, ctx: Ctx, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Build ``case``, run it the way it says, and check the one-line error (and the case's own check)."""
    argv, words = case.build(tmp_path, ctx)
    if case.how == "main":
        code, stderr = run_main(argv, capsys)
    else:
        code, stderr = run_process(argv, "relight3d" if case.how == "cli" else "ns-train")
    assert_one_line_error(code, stderr, words)
    if case.check is not None:
        case.check(tmp_path)


# --- builders -------------------------------------------------------------------------------------------------------
RELIGHT = ["relight", "--field-run", "run.yml", "--envmap", "a.exr", "--output", "out"]
MESH = ["export", "mesh", "--load-config", "run.yml", "--output", "mesh.ply"]
VIDEO = ["export", "video", "--load-config", "run.yml", "--output", "video.mp4"]
TEXTUAL_INVERSION = ["textual-inversion", "--image", "a.png", "--model", "sd", "--output", "out"]


MANIFEST = {"objects": ["o"], "lights": ["l"], "gt": "gt", "training_light": "l0"}


def flag(prefix: List[str], option: str, value: str, *words: str) -> Builder:
    """A command line whose ``option`` has a bad ``value``: refused while parsing."""
    return lambda t, c: ([*prefix, option, value], [option, *words])


def envmap_info(name: str, make: Callable[[Path], object], *words: str) -> Builder:
    def build(t: Path, c: Ctx) -> Tuple[List[str], List[str]]:
        make(t / name)
        return ["envmap", "info", t / name], [name, *words]

    return build


def bad_scene(edit: Callable[[Path], object], *words: str) -> Builder:
    """A Blender scene broken by ``edit``, given to ``relight3d export mesh --data`` of the trained run."""

    def build(t: Path, c: Ctx) -> Tuple[List[str], List[str]]:
        scene = blender(t / "scene")
        edit(scene)
        return ["export", "mesh", "--load-config", c.run, "--data", scene, "--output", t / "m.ply"], list(words)

    return build


def bad_object(edit: Callable[[Path], object], *words: str, **options: object) -> Builder:
    """An Objaverse-layout folder broken by ``edit``, in a run read with relight3d's Objaverse dataparser."""

    def build(t: Path, c: Ctx) -> Tuple[List[str], List[str]]:
        from relight3d.data.objaverse import ObjaverseDataParserConfig

        folder = objaverse(t / "obj")
        edit(folder)
        parser = ObjaverseDataParserConfig(data=folder, train_views=(0, 2), eval_views=(0, 2), **options)
        run = c.run_with(t / "run", parser, folder)
        return ["export", "mesh", "--load-config", run, "--output", t / "m.ply"], list(words)

    return build


def bad_single_image(make: Callable[[Path], object], name: str, *words: str, **options: object) -> Builder:
    """A single image (``make`` writes it) in a run read with relight3d's single-image dataparser."""

    def build(t: Path, c: Ctx) -> Tuple[List[str], List[str]]:
        from relight3d.data.single_image import SingleImageDataParserConfig

        image = t / name
        make(image)
        run = c.run_with(t / "run", SingleImageDataParserConfig(data=image, **options), image)
        return ["export", "mesh", "--load-config", run, "--output", t / "m.ply"], list(words)

    return build


def bad_eval(edit: Callable[[Path], object], *words: str, extra: Sequence[str] = ()) -> Builder:
    """``relight3d eval`` on two folders of two views (GT RGBA), broken by ``edit(tmp_path)``."""

    def build(t: Path, c: Ctx) -> Tuple[List[str], List[str]]:
        for view in ("r_000", "r_001"):
            png(t / "gt" / f"{view}.png")
            png(t / "pred" / f"{view}.png", mode="RGB")
        edit(t)
        return ["eval", "--pred", t / "pred", "--gt", t / "gt", "--lpips", "none", *extra], list(words)

    return build


def bad_run(edit: Callable[[Path], object], *words: str, command: str = "export") -> Builder:
    """A copy of the trained run broken by ``edit(run folder)``, loaded by ``export mesh`` or ``relight``."""

    def build(t: Path, c: Ctx) -> Tuple[List[str], List[str]]:
        config = c.copy_run(t / "run")
        edit(config.parent)
        if command == "export":
            return ["export", "mesh", "--load-config", config, "--output", t / "m.ply"], list(words)
        env = exr(t / "sky.exr", sky())
        return ["relight", "--field-run", config, "--envmap", env, "--output", t / "out"], list(words)

    return build


def checkpoint(run: Path) -> Path:
    return next((run / "nerfstudio_models").glob("step-*.ckpt"))


def gaffer(envmap: Callable[[Path], Path], *words: str, options: Sequence[str] = ()) -> Builder:
    """``ns-train relight3d-gaffer`` on the trained run with a target map made by ``envmap(tmp_path)``."""

    def build(t: Path, c: Ctx) -> Tuple[List[str], List[str]]:
        target = envmap(t)
        argv = ["relight3d-gaffer", "--pipeline.field-run", c.run, "--pipeline.target-envmap", target,
                "--output-dir", t / "outputs", "--max-num-iterations", "2", *options]  # fmt: skip
        return argv, list(words)

    return build


def payload_config(run: Path) -> None:
    (run / "config.yml").write_text(f"!!python/object/apply:os.system ['touch {run.parent / 'PWNED'}']\n")


def no_pwned(t: Path) -> None:
    assert not (t / "PWNED").exists(), "the config's YAML payload ran"


def absolute_file_path(scene: Path) -> None:
    write_frames(scene, lambda f: f[1].__setitem__("file_path", str(outside_file(scene))[: -len(".png")]))


def ns_train_scene(edit: Callable[[Path], object], *words: str) -> Builder:
    """``ns-train relight3d-tensorf blender-data`` on a Blender scene broken by ``edit``."""

    def build(t: Path, c: Ctx) -> Tuple[List[str], List[str]]:
        scene = blender(t / "scene")
        edit(scene)
        argv = ["relight3d-tensorf", "--output-dir", t / "outputs", "--max-num-iterations", "2", "blender-data",
                "--data", scene]  # fmt: skip
        return argv, list(words)

    return build


def bad_nerfstudio(edit: Callable[[Path, dict], object], *words: str) -> Builder:
    """A nerfstudio-format scene (``transforms.json``) whose metadata ``edit(folder, meta)`` changes, in a run read
    with relight3d's checked nerfstudio-data parser."""

    def build(t: Path, c: Ctx) -> Tuple[List[str], List[str]]:
        from relight3d.data.dataparser_configs import CheckedNerfstudioDataParserConfig

        folder = t / "capture"
        frames = []
        for i in range(2):
            png(folder / "images" / f"frame_{i}.png", mode="RGB")
            pose = look_at(np.array([3.0 * np.cos(i), 3.0 * np.sin(i), 1.0]))
            frames.append({"file_path": f"images/frame_{i}.png", "transform_matrix": pose.tolist()})
        meta = {"fl_x": 20.0, "fl_y": 20.0, "cx": 8.0, "cy": 8.0, "w": 16, "h": 16, "frames": frames}
        edit(folder, meta)
        (folder / "transforms.json").write_text(json.dumps(meta))
        run = c.run_with(t / "run", CheckedNerfstudioDataParserConfig(data=folder), folder)
        return ["export", "mesh", "--load-config", run, "--output", t / "m.ply"], list(words)

    return build


def parent_file_path(folder: Path, meta: dict) -> None:
    png(folder.parent / "outside" / "secret.png", mode="RGB")
    meta["frames"][1]["file_path"] = "../outside/secret.png"


def outside_mask(folder: Path, meta: dict) -> None:
    for frame in meta["frames"]:
        frame["mask_path"] = str(png(folder.parent / "masks" / "m.png", mode="RGB"))


def edit_transforms(edit: Callable[[List[dict]], object], *words: str) -> Builder:
    """A Blender scene whose train frames are changed by ``edit(frames)``."""
    return bad_scene(lambda s: write_frames(s, edit), "transforms_train.json", *words)


def relight(envmap: Callable[[Path], Path], *words: str) -> Builder:
    """``relight3d relight`` of the trained run under the map ``envmap(tmp_path)`` makes."""
    return lambda t, c: (["relight", "--field-run", c.run, "--envmap", envmap(t), "--output", t / "o"], list(words))


def manifest(name: str, text: str, *words: str) -> Builder:
    return lambda t, c: (["eval", "compare", "--manifest", write(t / name, text), "--lpips", "none"], [name, *words])


def nan_pose(frames: List[dict]) -> None:
    frames[1]["transform_matrix"][0][3] = float("nan")


def singular_pose(frames: List[dict]) -> None:
    frames[0]["transform_matrix"] = [[0, 0, 0, 0]] * 4


def number_file_path(frames: List[dict]) -> None:
    frames[0]["file_path"] = 5


def pickled_camera(folder: Path) -> None:
    np.save(folder / "001_RT.npy", np.array([{}], dtype=object), allow_pickle=True)


def foreign_checkpoint(run: Path) -> None:
    torch.save({"step": 2, "pipeline": {"_model.not_a_tensorf_weight": torch.zeros(3)}}, checkpoint(run))
