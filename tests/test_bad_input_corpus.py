"""The bad-input corpus: every entry point, given a malformed or hostile input, exits with code 2 and one line that
names the file (or option) and the problem, with no traceback and no hang.

Each case builds its inputs in ``tmp_path`` and runs a real console entry point:

* ``main``: ``relight3d.cli.main([...])`` in this process (what ``relight3d ...`` runs; fast);
* ``cli``: ``.venv/bin/relight3d ...`` (``python -m relight3d.cli`` where the script is absent) in a subprocess,
  for the cases that could hang (FIFOs) and a few of each kind;
* ``ns-train``: ``ns-train ...`` in a subprocess.

Runs and checkpoints come from one tiny run trained once per module (2 iterations on a 16 px scene); datasets are
exercised through ``relight3d export mesh``, which rebuilds a run's dataparser on a run folder written for the case.
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
from PIL import Image

from relight3d.cli import main

BIN = Path(sys.executable).parent
TIMEOUT = 120


# --- inputs ---------------------------------------------------------------------------------------------------------
def png(path: Path, size: Tuple[int, int] = (16, 16), mode: str = "RGBA", empty_alpha: bool = False) -> Path:
    """A small image: a grey square with an opaque disc of alpha (RGBA) in the middle."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    disc = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (0.3 * min(w, h)) ** 2) & (not empty_alpha)
    rgb = np.full((h, w, 3), 120, np.uint8)
    arr = np.concatenate([rgb, (disc * 255).astype(np.uint8)[..., None]], -1) if mode == "RGBA" else rgb
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def jpeg_as(path: Path, size: Tuple[int, int] = (16, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 100, np.uint8)).save(path, format="JPEG")
    return path


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def replace_with_fifo(path: Path) -> Path:
    path.unlink()
    return fifo(path)


def replace_with_folder(path: Path) -> Path:
    path.unlink()
    path.mkdir()
    return path


def exr(path: Path, array: np.ndarray) -> Path:
    """Write float32 RGB as .exr without relight3d's checks (so NaN and infinity can be written)."""
    import OpenEXR

    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, {"RGB": np.ascontiguousarray(array, dtype=np.float32)}).write(str(path))
    return path


def sky(h: int = 8, w: int = 16, value: float = 1.0) -> np.ndarray:
    return np.full((h, w, 3), value, np.float32)


def look_at(position: np.ndarray) -> np.ndarray:
    from relight3d.data.single_image import look_at_camera_to_world

    c2w = np.eye(4)
    c2w[:3] = look_at_camera_to_world(position)
    return c2w


def blender(root: Path, n: int = 2, frames: Optional[List[dict]] = None) -> Path:
    """A Blender scene: ``n`` RGBA views in train/, the same frames as the val and test splits."""
    root.mkdir(parents=True, exist_ok=True)
    if frames is None:
        frames = []
        for i in range(n):
            png(root / "train" / f"r_{i}.png")
            pose = look_at(np.array([3.0 * np.cos(i), 3.0 * np.sin(i), 1.0]))
            frames.append({"file_path": f"./train/r_{i}", "transform_matrix": pose.tolist()})
    for split in ("train", "val", "test"):
        (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": 0.8, "frames": frames}))
    return root


def objaverse(root: Path, n: int = 2) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for v in range(n):
        np.save(root / f"{v:03d}_RT.npy", np.linalg.inv(look_at(np.array([3.0 * np.cos(v), 3.0 * np.sin(v), 1.0])))[:3])
        png(root / f"{v:03d}_000_studio.png")
    return root


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


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Ctx:
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


# --- the corpus -----------------------------------------------------------------------------------------------------
RELIGHT = ["relight", "--field-run", "run.yml", "--envmap", "a.exr", "--output", "out"]
MESH = ["export", "mesh", "--load-config", "run.yml", "--output", "mesh.ply"]
VIDEO = ["export", "video", "--load-config", "run.yml", "--output", "video.mp4"]
TEXTUAL_INVERSION = ["textual-inversion", "--image", "a.png", "--model", "sd", "--output", "out"]


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


def write_frames(scene: Path, edit: Callable[[List[dict]], object]) -> None:
    meta = json.loads((scene / "transforms_train.json").read_text())
    edit(meta["frames"])
    (scene / "transforms_train.json").write_text(json.dumps(meta))


def outside_file(scene: Path) -> Path:
    return png(scene.parent / "outside" / "secret.png")


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


def symlink_out(path: Path, target: Path) -> None:
    path.unlink()
    path.symlink_to(target)


class Exploit:
    """An object that only unpickles by running code: ``weights_only`` loading must refuse it."""

    def __reduce__(self):  # noqa: ANN204
        return (os.getcwd, ())


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


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


NAN, INF = float("nan"), float("inf")
MANIFEST = {"objects": ["o"], "lights": ["l"], "gt": "gt", "training_light": "l0"}

CASES: List[Case] = [
    # command-line flags: refused while parsing (argparse: one error line, exit 2)
    Case("relight-negative-stage1-steps", flag(RELIGHT, "--stage1-steps", "-5", "-5")),
    Case("relight-negative-stage2-steps", flag(RELIGHT, "--stage2-steps", "-1", ">= 0")),
    Case("relight-word-as-steps", flag(RELIGHT, "--stage1-steps", "many", "many")),
    Case("relight-negative-strength", flag(RELIGHT, "--strength", "-1", "positive")),
    Case("relight-zero-strength", flag(RELIGHT, "--strength", "0", "positive")),
    Case("relight-negative-video-frames", flag(RELIGHT, "--video-frames", "-3", ">= 0")),
    Case("relight-nan-rotation", flag(RELIGHT, "--rotation", "nan", "finite")),
    Case("relight-no-steps", lambda t, c: ([*RELIGHT, "--stage1-steps", "0", "--stage2-steps", "0"], ["at least one"])),
    Case("relight-strength-count", lambda t, c: ([*RELIGHT, "--strength", "1", "2"], ["--strength", "2 strength"])),
    Case("textual-inversion-zero-steps", flag(TEXTUAL_INVERSION, "--steps", "0", "positive")),
    Case("textual-inversion-negative-lr", flag(TEXTUAL_INVERSION, "--lr", "-0.001", "positive")),
    Case("mesh-zero-resolution", flag(MESH, "--resolution", "0", "[2, 4096]")),
    Case("mesh-huge-resolution", flag(MESH, "--resolution", "100000", "[2, 4096]")),
    Case("mesh-negative-threshold", flag(MESH, "--threshold", "-1", "positive")),
    Case("mesh-nan-threshold", flag(MESH, "--threshold", "nan", "positive")),
    Case("mesh-negative-components", flag(MESH, "--keep-components", "-1", ">= 0")),
    Case("mesh-fraction-above-one", flag(MESH, "--min-component-fraction", "2", "[0, 1]")),
    Case("mesh-zero-chunk", flag(MESH, "--chunk-size", "0", "positive")),
    Case("video-zero-frames", flag(VIDEO, "--frames", "0", "positive")),
    Case("video-negative-fps", flag(VIDEO, "--fps", "-24", "positive")),
    Case("video-fov-180", flag(VIDEO, "--fov", "180", "(0, 180)")),
    Case("video-zero-radius", flag(VIDEO, "--radius", "0", "positive")),
    Case("video-negative-width", flag(VIDEO, "--width", "-5", "[1, 16384]")),
    Case("video-unknown-output", flag(VIDEO, "--outputs", "rgb,bogus", "bogus")),
    Case("envmap-rotate-inf", flag(["envmap", "rotate", "a.exr", "--output", "b.exr"], "--degrees", "inf", "finite")),
    Case("envmap-preview-nan", flag(["envmap", "preview", "a.exr", "--output", "b.png"], "--exposure", "nan",
                                    "finite")),
    Case("eval-bad-regex", flag(["eval", "--pred", "p", "--gt", "g"], "--gt-pattern", "(", "regular expression")),
    Case("eval-background-2", flag(["eval", "--pred", "p", "--gt", "g"], "--background", "2", "[0, 1]")),
    Case("bench-zero-resolution", flag(["bench", "make"], "--resolution", "0", "positive")),
    Case("bench-negative-train-views", flag(["bench", "make"], "--n-train", "-1", "positive")),
    Case("bench-zero-threads", flag(["bench", "make"], "--threads", "0", "positive")),
    Case("demo-negative-steps", flag(["demo"], "--steps", "-5", "-5")),  # relight3d/cli.py (helper D)
    Case("cli-negative-steps", flag(RELIGHT, "--stage1-steps", "-5", "-5"), how="cli"),
    # environment maps
    Case("envmap-missing", lambda t, c: (["envmap", "info", t / "nope.exr"], ["nope.exr", "not found"])),
    Case("envmap-folder", envmap_info("d.exr", lambda p: p.mkdir(), "directory")),
    Case("envmap-fifo", envmap_info("pipe.exr", fifo, "not a regular file"), how="cli"),
    Case("envmap-empty", envmap_info("empty.exr", lambda p: p.write_bytes(b""), "empty")),
    Case("envmap-png-named-exr", envmap_info("photo.exr", lambda p: png(p.with_suffix(".png")).rename(p), "PNG")),
    Case("envmap-ldr-suffix", envmap_info("sky.png", png, "low-dynamic-range")),
    Case("envmap-truncated-exr", envmap_info("cut.exr", lambda p: truncate(exr(p, sky(32, 64)), 0.4), "corrupt")),
    Case("envmap-garbage-hdr", envmap_info("junk.hdr", lambda p: p.write_bytes(b"hello" * 40), "neither")),
    Case("envmap-nan", envmap_info("nan.exr", lambda p: exr(p, sky(value=NAN)), "NaN")),
    Case("envmap-inf", envmap_info("inf.exr", lambda p: exr(p, sky(value=INF)), "infinite")),
    Case("envmap-all-negative", envmap_info("neg.exr", lambda p: exr(p, sky(value=-2.0)), "no light")),
    Case("envmap-all-zero", envmap_info("zero.exr", lambda p: exr(p, sky(value=0.0)), "no light")),
    Case("envmap-1e38", envmap_info("bright.exr", lambda p: exr(p, sky(value=1e38)), "absurdly bright")),
    Case("envmap-1x1", envmap_info("dot.exr", lambda p: exr(p, sky(1, 1)), "1x1", "too small")),
    Case("envmap-square", envmap_info("ball.exr", lambda p: exr(p, sky(16, 16)), "2:1")),
    Case("envmap-rotate-ldr-output", lambda t, c: (["envmap", "rotate", exr(t / "a.exr", sky()), "--degrees", "5",
                                                    "--output", t / "out.png"], ["out.png", ".exr or .hdr"])),
    Case("envmap-preview-hdr-output", lambda t, c: (["envmap", "preview", exr(t / "a.exr", sky()),
                                                     "--output", t / "prev.exr"], ["prev.exr", "preview"])),
    Case("relight-nan-envmap", relight(lambda t: exr(t / "nan.exr", sky(value=NAN)), "nan.exr", "NaN")),
    Case("relight-square-envmap", relight(lambda t: exr(t / "ball.exr", sky(16, 16)), "ball.exr", "2:1")),
    # ns-train: maps and data are read and checked when the pipeline is set up, before training
    Case("gaffer-nan-target", gaffer(lambda t: exr(t / "nan.exr", sky(value=NAN)), "nan.exr", "NaN"), how="ns-train"),
    Case("gaffer-missing-target", gaffer(lambda t: t / "nope.exr", "nope.exr", "not found"), how="ns-train"),
    Case("ns-train-truncated-png", ns_train_scene(lambda s: truncate(s / "train" / "r_1.png"), "r_1.png",
                                                  "truncated"), how="ns-train"),
    # Blender scenes (through `relight3d export mesh --data`)
    Case("blender-missing-folder", lambda t, c: ([*MESH[:2], "--load-config", c.run, "--data", t / "nowhere",
                                                  "--output", t / "m.ply"], ["nowhere", "not found"])),
    Case("blender-no-transforms", bad_scene(lambda s: (s / "transforms_train.json").unlink(),
                                            "transforms_train.json", "not found")),
    Case("blender-malformed-json", bad_scene(lambda s: (s / "transforms_train.json").write_text("{oops"),
                                             "transforms_train.json", "malformed JSON")),
    Case("blender-missing-angle", bad_scene(lambda s: (s / "transforms_train.json").write_text('{"frames": []}'),
                                            "transforms_train.json", "camera_angle_x")),
    Case("blender-no-frames", edit_transforms(lambda f: f.clear(), "empty dataset")),
    Case("blender-nan-pose", edit_transforms(nan_pose, "frame 1", "NaN")),
    Case("blender-singular-pose", edit_transforms(singular_pose, "singular")),
    Case("blender-number-file-path", edit_transforms(number_file_path, "file_path")),
    Case("blender-missing-image", bad_scene(lambda s: (s / "train" / "r_1.png").unlink(), "r_1.png", "not found")),
    Case("blender-truncated-png", bad_scene(lambda s: truncate(s / "train" / "r_1.png"), "r_1.png", "truncated")),
    Case("blender-jpeg-in-png", bad_scene(lambda s: jpeg_as(s / "train" / "r_1.png"), "r_1.png",
                                          "JPEG data in a .png")),
    Case("blender-fifo-image", bad_scene(lambda s: replace_with_fifo(s / "train" / "r_1.png"), "r_1.png",
                                         "not a regular file")),
    Case("blender-folder-image", bad_scene(lambda s: replace_with_folder(s / "train" / "r_1.png"), "r_1.png",
                                           "folder")),
    Case("blender-size-mismatch", bad_scene(lambda s: png(s / "train" / "r_1.png", (20, 20)), "r_1.png", "20x20")),
    Case("blender-absolute-path", bad_scene(absolute_file_path, "transforms_train.json", "secret",
                                            "outside the dataset")),
    Case("blender-symlink-out", bad_scene(lambda s: symlink_out(s / "train" / "r_1.png", outside_file(s)),
                                          "transforms_train.json", "outside the dataset folder")),
    # nerfstudio-data scenes (transforms.json)
    Case("nerfstudio-parent-path", bad_nerfstudio(parent_file_path, "transforms.json", "outside the dataset")),
    Case("nerfstudio-mask-outside", bad_nerfstudio(outside_mask, "transforms.json", "mask", "outside the dataset")),
    Case("nerfstudio-truncated-image", bad_nerfstudio(lambda f, m: truncate(f / "images" / "frame_0.png"),
                                                      "frame_0.png", "truncated")),
    # Objaverse / Neural Gaffer object folders
    Case("objaverse-no-light", bad_object(lambda f: None, "empty dataset", light_index=3)),
    Case("objaverse-negative-light", bad_object(lambda f: None, "light_index", ">= 0", light_index=-1)),
    Case("objaverse-rgb-image", bad_object(lambda f: png(f / "001_000_studio.png", mode="RGB"),
                                           "001_000_studio.png", "RGBA")),
    Case("objaverse-missing-camera", bad_object(lambda f: (f / "001_RT.npy").unlink(), "001_RT.npy", "missing")),
    Case("objaverse-singular-camera", bad_object(lambda f: np.save(f / "001_RT.npy", np.zeros((3, 4))),
                                                 "001_RT.npy", "singular")),
    Case("objaverse-garbage-camera", bad_object(lambda f: (f / "001_RT.npy").write_bytes(b"not numpy"),
                                                "001_RT.npy", "cannot read")),
    Case("objaverse-pickled-camera", bad_object(pickled_camera, "001_RT.npy", "cannot read")),
    Case("objaverse-truncated-image", bad_object(lambda f: truncate(f / "000_000_studio.png"),
                                                 "000_000_studio.png", "truncated")),
    Case("objaverse-symlink-out", bad_object(lambda f: symlink_out(f / "001_000_studio.png",
                                                                   png(f.parent / "elsewhere.png")),
                                             "001_000_studio.png", "outside")),
    # single RGBA images
    Case("single-radius-0", bad_single_image(png, "a.png", "radius", "positive", radius=0.0)),
    Case("single-fov-180", bad_single_image(png, "a.png", "fov", "(0, 180)", fov=180.0)),
    Case("single-nan-elevation", bad_single_image(png, "a.png", "elevation", "finite", elevation=NAN)),
    Case("single-rgb", bad_single_image(lambda p: png(p, mode="RGB"), "rgb.png", "rgb.png", "RGBA")),
    Case("single-empty-alpha", bad_single_image(lambda p: png(p, empty_alpha=True), "clear.png", "clear.png",
                                                "alpha mask is empty")),
    Case("single-truncated", bad_single_image(lambda p: truncate(png(p, (64, 64))), "cut.png", "cut.png", "truncated")),
    Case("single-jpeg-in-png", bad_single_image(jpeg_as, "photo.png", "photo.png", "JPEG data in a .png")),
    # evaluation folders
    Case("eval-missing-gt", bad_eval(lambda t: shutil.rmtree(t / "gt"), "gt", "no such folder")),
    Case("eval-gt-without-alpha", bad_eval(lambda t: png(t / "gt" / "r_000.png", mode="RGB"), "r_000.png",
                                           "no alpha channel", "--no-mask")),
    Case("eval-truncated-pred", bad_eval(lambda t: truncate(png(t / "pred" / "r_000.png", (64, 64))), "r_000.png",
                                         "truncated")),
    Case("eval-jpeg-in-gt", bad_eval(lambda t: jpeg_as(t / "gt" / "r_001.png"), "gt/r_001.png", "JPEG data")),
    Case("eval-fifo-pred", bad_eval(lambda t: replace_with_fifo(t / "pred" / "r_001.png"), "r_001.png",
                                    "not a regular file"), how="cli"),
    Case("eval-size-mismatch", bad_eval(lambda t: png(t / "pred" / "r_000.png", (20, 20), "RGB"), "r_000.png",
                                        "differs")),
    Case("eval-missing-view", bad_eval(lambda t: (t / "pred" / "r_001.png").unlink(), "pred", "no prediction")),
    Case("eval-empty-pred", bad_eval(lambda t: [p.unlink() for p in (t / "pred").iterdir()], "pred", "no PNG")),
    Case("eval-manifest-malformed", manifest("m.yaml", "a: [b", "cannot parse")),
    Case("eval-manifest-background", manifest("m.json", json.dumps({**MANIFEST, "background": "pink"}), "background")),
    Case("eval-manifest-placeholder", manifest("m.json", json.dumps({**MANIFEST, "gt": "gt/{nope}"}), "placeholder")),
    Case("eval-method-syntax", lambda t, c: (["eval", "compare", "--gt", t, "--method", "oops"], ["--method"])),
    # runs and checkpoints
    Case("run-missing-config", lambda t, c: ([*MESH[:2], "--load-config", t / "nope.yml", "--output", t / "m.ply"],
                                             ["nope.yml", "not found"])),
    Case("run-garbage-config", bad_run(lambda r: (r / "config.yml").write_text("{[: oops"), "config.yml")),
    Case("run-config-payload", bad_run(payload_config, "config.yml"), check=no_pwned),  # engine/loading.py (helper C)
    Case("run-config-is-a-list", bad_run(lambda r: (r / "config.yml").write_text("- 1\n- 2\n"), "config.yml")),
    Case("run-no-checkpoint", bad_run(lambda r: checkpoint(r).unlink(), "nerfstudio_models", "checkpoint")),
    Case("run-truncated-checkpoint", bad_run(lambda r: truncate(checkpoint(r)), "step-", "checkpoint")),
    Case("run-garbage-checkpoint", bad_run(lambda r: checkpoint(r).write_bytes(b"\0" * 64), "step-", "checkpoint")),
    Case("run-pickle-checkpoint", bad_run(lambda r: torch.save({"step": 1, "pipeline": Exploit()}, checkpoint(r)),
                                          "step-", "checkpoint")),
    Case("run-foreign-checkpoint", bad_run(foreign_checkpoint, "step-", "checkpoint")),  # engine/loading.py (helper C)
    Case("relight-missing-field-run", lambda t, c: (["relight", "--field-run", t / "none.yml", "--envmap",
                                                     exr(t / "a.exr", sky()), "--output", t / "o"],
                                                    ["none.yml", "not found"])),
    Case("relight-truncated-checkpoint", bad_run(lambda r: truncate(checkpoint(r)), "step-", "checkpoint",
                                                 command="relight")),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, ctx: Ctx, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv, words = case.build(tmp_path, ctx)
    if case.how == "main":
        code, stderr = run_main(argv, capsys)
    else:
        code, stderr = run_process(argv, "relight3d" if case.how == "cli" else "ns-train")
    assert_one_line_error(code, stderr, words)
    if case.check is not None:
        case.check(tmp_path)


# --- what the checks let through ------------------------------------------------------------------------------------
def test_sixteen_bit_pngs_keep_all_sixteen_bits(tmp_path: Path) -> None:
    """16-bit grey (PIL I;16), RGB and RGBA PNGs are read as value / 65535, also by the training datamanager."""
    import cv2

    from relight3d.data.blender import CheckedBlenderDataParserConfig
    from relight3d.data.datamanager import InMemoryDataManagerConfig
    from relight3d.data.validation import read_image_float32

    rng = np.random.default_rng(0)
    grey = (rng.integers(0, 256, (16, 16)) * 257 + rng.integers(1, 200, (16, 16))).astype(np.uint16)  # low byte != high
    rgba = np.stack([grey, grey[::-1], grey.T, np.full_like(grey, 65535)], -1)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    cv2.imwrite(str(tmp_path / "rgb.png"), np.ascontiguousarray(rgba[..., 2::-1]))
    cv2.imwrite(str(tmp_path / "rgba.png"), np.ascontiguousarray(rgba[..., [2, 1, 0, 3]]))
    expected = rgba.astype(np.float32) / 65535.0
    np.testing.assert_allclose(read_image_float32(tmp_path / "grey.png"), expected[..., [0, 0, 0]], atol=1e-7)
    np.testing.assert_allclose(read_image_float32(tmp_path / "rgb.png"), expected[..., :3], atol=1e-7)
    np.testing.assert_allclose(read_image_float32(tmp_path / "rgba.png"), expected, atol=1e-7)

    scene = blender(tmp_path / "scene")
    for i in range(2):
        Image.fromarray(grey).save(scene / "train" / f"r_{i}.png")
    config = InMemoryDataManagerConfig(dataparser=CheckedBlenderDataParserConfig(data=scene))
    datamanager = config.setup(device="cpu", test_mode="val")
    images = datamanager.train_images
    assert images.shape == (2, 16, 16, 3)
    np.testing.assert_allclose(images[0].numpy(), expected[..., [0, 0, 0]], atol=1e-6)


def test_outside_paths_are_refused_unless_allowed(tmp_path: Path) -> None:
    from relight3d.data.blender import CheckedBlenderDataParserConfig
    from relight3d.data.objaverse import ObjaverseDataParserConfig
    from relight3d.errors import DataError

    scene = blender(tmp_path / "scene")
    secret = outside_file(scene)
    write_frames(scene, lambda f: f[1].__setitem__("file_path", str(secret)[:-4]))
    with pytest.raises(DataError, match="transforms_train.json: frame 1: file_path .*secret.* resolves outside"):
        CheckedBlenderDataParserConfig(data=scene).setup().get_dataparser_outputs("train")
    outputs = CheckedBlenderDataParserConfig(data=scene, allow_outside_paths=True).setup().get_dataparser_outputs()
    assert outputs.image_filenames[1] == secret

    folder = objaverse(tmp_path / "obj")
    symlink_out(folder / "001_000_studio.png", png(tmp_path / "elsewhere.png"))
    parser = {"data": folder, "train_views": (0, 2), "eval_views": (0, 2)}
    with pytest.raises(DataError, match="001_000_studio.png: the image '001_000_studio.png' resolves outside"):
        ObjaverseDataParserConfig(**parser).setup().get_dataparser_outputs("train")
    outputs = ObjaverseDataParserConfig(**parser, allow_outside_paths=True).setup().get_dataparser_outputs("train")
    assert len(outputs.image_filenames) == 2


def test_padded_images_are_cached_in_the_user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from relight3d.data.single_image import pad_image_to_square

    image = png(tmp_path / "wide.png", (24, 12))
    monkeypatch.setenv("RELIGHT3D_CACHE", str(tmp_path / "cache"))
    padded = pad_image_to_square(image)
    assert padded.parent == tmp_path / "cache" / "padded"
    square = np.asarray(Image.open(padded))
    assert square.shape == (24, 24, 4) and (square[:6, :, 3] == 0).all() and (square[18:, :, 3] == 0).all()
    np.testing.assert_array_equal(square[6:18], np.asarray(Image.open(image)))
    assert pad_image_to_square(image) == padded  # reused
    png(image, (24, 12), empty_alpha=True)
    assert pad_image_to_square(image) != padded  # keyed by content
    monkeypatch.delenv("RELIGHT3D_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert pad_image_to_square(image).parent == tmp_path / "home" / ".cache" / "relight3d" / "padded"


def test_eval_no_mask_scores_ground_truth_without_alpha(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for view in ("r_000", "r_001"):
        png(tmp_path / "gt" / f"{view}.png", mode="RGB")
        png(tmp_path / "pred" / f"{view}.png", mode="RGB")
    argv = ["eval", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--lpips", "none", "--output", tmp_path / "r"]
    code, stderr = run_main(argv, capsys)
    assert code == 2 and "no alpha channel" in stderr
    code, stderr = run_main([*argv, "--no-mask"], capsys)
    assert code == 0, stderr
    report = json.loads((tmp_path / "r" / "records.json").read_text())
    assert any("no object mask" in note for note in report["notes"])
    for record in report["records"]:
        assert record["psnr_masked"] is None and record["psnr"] == 120.0


def test_gaffer_checks_maps_and_strengths_when_the_pipeline_is_built(ctx: Ctx, tmp_path: Path) -> None:
    """Under ns-train the relighting pipeline is built before training: bad maps and options fail there."""
    from relight3d.errors import ConfigError, DataError
    from relight3d.method_configs import gaffer_config

    def build(**options: object) -> None:
        config = gaffer_config(1, 1).pipeline
        config.field_run = ctx.run
        config.target_envmap = exr(tmp_path / "sky.exr", sky())
        for name, value in options.items():
            setattr(config, name, value)
        config.setup(device="cpu", test_mode="val")

    with pytest.raises(ConfigError, match="target-envmap-strength: .*positive"):
        build(target_envmap_strength=-1.0)
    with pytest.raises(ConfigError, match="stage1-steps"):
        build(stage1_steps=-5)
    with pytest.raises(DataError, match="neg.exr: has no light"):
        build(source_envmap=exr(tmp_path / "neg.exr", sky(value=-1.0)))
    build()  # the same with good values builds


def test_envmap_shape_rules(tmp_path: Path) -> None:
    from relight3d.lighting.envmap_io import EnvMapError, read_envmap

    with pytest.warns(UserWarning, match="aspect"):
        assert read_envmap(exr(tmp_path / "near.exr", sky(100, 201))).shape == (100, 201, 3)
    with pytest.raises(EnvMapError, match="is 3x1 pixels .* too small"):
        read_envmap(exr(tmp_path / "tiny.exr", sky(1, 3)))
    assert read_envmap(exr(tmp_path / "ok.exr", sky(2, 4, 1e5))).max() == 1e5
