"""``ns-train relight3d-{tensorf,ngp} <dataparser> --data ...``: the datamanager's dataparser is a tyro union over
:data:`relight3d.data.dataparser_configs.DATAPARSERS`, and the in-memory datamanager trains on every parser in it.

The builders of tiny datasets in other layouts (nerfstudio ``transforms.json``, Objaverse object folder) live here
and are reused by ``tests/test_readme_commands.py``.
"""

from __future__ import annotations

import json
import math
from importlib.metadata import entry_points
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import pytest
import torch
from PIL import Image

from relight3d.data.blender import CheckedBlenderDataParserConfig
from relight3d.data.dataparser_configs import (
    DATAPARSERS,
    CheckedNerfstudioDataParserConfig,
    dataparser_config,
)
from relight3d.data.objaverse import ObjaverseDataParserConfig
from relight3d.data.single_image import SingleImageDataParserConfig
from relight3d.errors import DataError

SHORT = (
    "--vis", "tensorboard", "--max-num-iterations", "2", "--steps-per-save", "2",
    "--steps-per-eval-batch", "1000", "--steps-per-eval-image", "1000",
    "--pipeline.datamanager.train-num-rays-per-batch", "256", "--pipeline.model.occupancy-resolution", "32",
)  # fmt: skip
"""Options (before the dataparser subcommand) that make a run a few cheap CPU iterations."""


# --- tiny datasets in the other layouts ---------------------------------------------------------------------------
def _blender_frames(scene: Path) -> List[dict]:
    frames = []
    for split in ("train", "test"):
        meta = json.loads((scene / f"transforms_{split}.json").read_text())
        frames += [dict(frame, camera_angle_x=meta["camera_angle_x"]) for frame in meta["frames"]]
    return frames


def write_nerfstudio_scene(blender_scene: Path, out: Path) -> Path:
    """The Blender scene's train + test views as a nerfstudio-format scene: ``transforms.json`` with ``fl_x``,
    ``fl_y``, ``cx``, ``cy``, ``w``, ``h`` and ``frames`` (``file_path`` with extension, OpenGL camera-to-world)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    frames, blender_frames = [], _blender_frames(blender_scene)
    for i, frame in enumerate(blender_frames):
        image = Image.open(blender_scene / f"{frame['file_path']}.png")
        image.save(out / "images" / f"frame_{i:05d}.png")
        frames.append({"file_path": f"images/frame_{i:05d}.png", "transform_matrix": frame["transform_matrix"]})
    w, h = image.size
    focal = 0.5 * w / math.tan(0.5 * blender_frames[0]["camera_angle_x"])
    meta = {"fl_x": focal, "fl_y": focal, "cx": w / 2, "cy": h / 2, "w": w, "h": h, "frames": frames}
    (out / "transforms.json").write_text(json.dumps(meta, indent=1))
    return out


def write_object_folder(blender_scene: Path, out: Path, source: str = "courtyard", targets: Sequence[str] = ()) -> Path:
    """The Blender scene in the Objaverse / Neural Gaffer layout, with the default view ranges: training views
    ``000``.. under light 0 (``source``), test views ``100``.. under light 0 and under each target light (tinted
    copies), and a small HDR map per light in ``envmaps/``."""
    from relight3d.lighting import write_envmap

    out.mkdir(parents=True, exist_ok=True)
    lights = [source, *targets]
    for split, first in (("train", 0), ("test", 100)):
        meta = json.loads((blender_scene / f"transforms_{split}.json").read_text())
        for k, frame in enumerate(meta["frames"]):
            view = first + k
            np.save(out / f"{view:03d}_RT.npy", np.linalg.inv(np.array(frame["transform_matrix"]))[:3])
            rgba = np.asarray(Image.open(blender_scene / f"{frame['file_path']}.png").convert("RGBA"), np.float32)
            for light, name in enumerate(lights if split == "test" else lights[:1]):
                tint = np.array([1.0, 1.0 - 0.15 * light, 1.0 - 0.3 * light], np.float32)
                relit = np.concatenate([np.clip(rgba[..., :3] * tint, 0, 255), rgba[..., 3:]], -1)
                Image.fromarray((relit + 0.5).astype(np.uint8)).save(out / f"{view:03d}_{light:03d}_{name}.png")
    (out / "envmaps").mkdir(exist_ok=True)
    v = torch.linspace(0, 1, 8)[:, None, None].expand(8, 16, 1)
    for light, name in enumerate(lights):
        tint = torch.tensor([1.0, 1.0 - 0.15 * light, 1.0 - 0.3 * light])
        write_envmap(out / "envmaps" / f"{name}.exr", (1.2 - 0.6 * v) * tint)
    return out


@pytest.fixture(scope="module")
def layouts(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """``--data`` of every dataparser: the tiny scene in each layout."""
    root = tmp_path_factory.mktemp("layouts")
    return {
        "blender-data": tiny_scene,
        "nerfstudio-data": write_nerfstudio_scene(tiny_scene, root / "nerfstudio"),
        "relight3d-objaverse": write_object_folder(tiny_scene, root / "object"),
        "relight3d-single-image": tiny_scene / "train" / "r_000.png",
    }


def ns_train_config(args: Sequence[str]):  # noqa: ANN201 - a TrainerConfig
    """The config ``ns-train <args>`` trains, parsed in-process as ``ns-train`` parses it (with its ``--data`` alias
    for ``--pipeline.datamanager.data``)."""
    import tyro
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion

    config = tyro.cli(AnnotatedBaseConfigUnion, args=list(args))
    if config.data:
        config.pipeline.datamanager.data = config.data
    return config


# --- the table and the union ----------------------------------------------------------------------------------------
def test_one_table_for_subcommands_and_entry_points():
    """The entry points register exactly the table's relight3d-* layouts, with the table's configs."""
    assert set(DATAPARSERS) == {"blender-data", "nerfstudio-data", "relight3d-objaverse", "relight3d-single-image"}
    assert type(DATAPARSERS["blender-data"]) is CheckedBlenderDataParserConfig
    registered = {ep.name: ep for ep in entry_points(group="nerfstudio.dataparser_configs")}
    ours = {name for name, ep in registered.items() if ep.value.startswith("relight3d.")}
    assert ours == {name for name in DATAPARSERS if name.startswith("relight3d-")}
    for name in ours:
        assert type(registered[name].load().config) is type(DATAPARSERS[name])
    # dataparser_config hands out copies: changing one leaves the table's default alone.
    cfg = dataparser_config("relight3d-objaverse")
    cfg.light_index = 3
    assert DATAPARSERS["relight3d-objaverse"].light_index == 0
    with pytest.raises(KeyError, match="known: blender-data"):
        dataparser_config("colmap")


CASES = [
    # arguments after the method, the dataparser config type they must give, and field values
    pytest.param([], CheckedBlenderDataParserConfig, {}, id="default"),
    pytest.param(["blender-data", "--data", "X"], CheckedBlenderDataParserConfig, {"data": Path("X")}, id="blender"),
    pytest.param(
        ["nerfstudio-data", "--data", "X", "--eval-mode", "all"],
        CheckedNerfstudioDataParserConfig,
        {"data": Path("X"), "eval_mode": "all"},
        id="nerfstudio",
    ),
    pytest.param(
        ["relight3d-objaverse", "--data", "X", "--light-index", "2", "--eval-views", "16", "20"],
        ObjaverseDataParserConfig,
        {"data": Path("X"), "light_index": 2, "eval_views": (16, 20)},
        id="objaverse",
    ),
    pytest.param(
        ["relight3d-single-image", "--data", "im.png", "--elevation", "15", "--fov", "30"],
        SingleImageDataParserConfig,
        {"data": Path("im.png"), "elevation": 15.0, "fov": 30.0},
        id="single-image",
    ),
]


@pytest.mark.parametrize("method", ["relight3d-tensorf", "relight3d-ngp"])
@pytest.mark.parametrize("after, expected_type, values", CASES)
def test_ns_train_parses_every_dataparser(method, after, expected_type, values):
    config = ns_train_config([method, "--data", "top", *SHORT, *after])
    dataparser = config.pipeline.datamanager.dataparser
    assert type(dataparser) is expected_type
    for name, value in values.items():
        assert getattr(dataparser, name) == value, name
    assert config.data == Path("top") and config.max_num_iterations == 2
    assert type(DATAPARSERS["blender-data"]) is CheckedBlenderDataParserConfig  # the table's defaults are untouched
    assert DATAPARSERS["relight3d-objaverse"].light_index == 0


def test_ns_train_refuses_other_dataparsers_and_their_options(capsys):
    with pytest.raises(SystemExit) as err:
        ns_train_config(["relight3d-tensorf", "colmap", "--data", "X"])  # a nerfstudio parser not in the table
    assert err.value.code != 0
    with pytest.raises(SystemExit) as err:
        ns_train_config(["relight3d-tensorf", "blender-data", "--light-index", "0"])  # an Objaverse-only option
    assert err.value.code != 0
    capsys.readouterr()


def test_relighting_and_sds_methods_still_build():
    """relight3d-gaffer reuses the datamanager (so it has the subcommands), relight3d-sds its own reference view."""
    from relight3d.pipelines.sds_views import ReferenceImageDataParserConfig

    gaffer = ns_train_config(["relight3d-gaffer", "--pipeline.field-run", "run/config.yml"])
    assert type(gaffer.pipeline.datamanager.dataparser) is CheckedBlenderDataParserConfig
    gaffer = ns_train_config(["relight3d-gaffer", "pipeline.prior:physical", "relight3d-objaverse", "--data", "o"])
    assert type(gaffer.pipeline.datamanager.dataparser) is ObjaverseDataParserConfig
    sds = ns_train_config(["relight3d-sds", "--pipeline.datamanager.dataparser.data", "im.png"])
    assert type(sds.pipeline.datamanager.dataparser) is ReferenceImageDataParserConfig
    assert sds.pipeline.datamanager.dataparser.data == Path("im.png")


# --- the datamanager on every parser --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["nerfstudio-data", "relight3d-single-image", "relight3d-objaverse"])
def test_in_memory_datamanager_trains_and_the_run_reloads(name, layouts, tmp_path):
    """Each parser feeds the in-memory datamanager; the run's config.yml (with the union's member) loads back."""
    from relight3d.engine.loading import load_trained_pipeline
    from relight3d.engine.run import train

    args = ["relight3d-tensorf", "--output-dir", str(tmp_path), *SHORT, name, "--data", str(layouts[name])]
    config = ns_train_config(args)
    trainer = train(config, None, tmp_path, experiment_name=name)
    dm = trainer.pipeline.datamanager
    images = dm.train_images
    n_train = {"nerfstudio-data": 18, "relight3d-single-image": 1, "relight3d-objaverse": 16}[name]
    assert images.shape == (n_train, 32, 32, 4)  # RGBA kept: alpha is the object mask
    assert len(dm.eval_dataset) == {"nerfstudio-data": 2, "relight3d-single-image": 1, "relight3d-objaverse": 4}[name]
    first = Image.open(dm.train_dataset._dataparser_outputs.image_filenames[0])
    assert torch.allclose(images[0], torch.from_numpy(np.asarray(first, np.float32)) / 255.0, atol=1e-6)
    assert np.isfinite(trainer.pipeline.get_train_loss_dict(5)[1]["rgb_loss"].item())

    loaded, pipeline = load_trained_pipeline(trainer.base_dir / "config.yml", test_mode="val")
    assert type(loaded.pipeline.datamanager.dataparser) is type(DATAPARSERS[name])
    assert Path(loaded.pipeline.datamanager.dataparser.data) == layouts[name]
    assert torch.equal(pipeline.datamanager.train_images.cpu(), images.cpu())  # the reloaded run reads the same pixels


def test_nerfstudio_data_cameras_match_the_file(layouts):
    """The nerfstudio parser reads the intrinsics from transforms.json; relight3d's check passes a valid scene."""
    cfg = dataparser_config("nerfstudio-data")
    cfg.data = layouts["nerfstudio-data"]
    meta = json.loads((cfg.data / "transforms.json").read_text())
    outputs = cfg.setup().get_dataparser_outputs("train")
    assert torch.allclose(outputs.cameras.fx, torch.tensor(meta["fl_x"]))
    assert int(outputs.cameras.width[0]) == meta["w"] and float(outputs.cameras.cx[0]) == meta["cx"]


def _set(frame: dict, key: str, value) -> None:  # noqa: ANN001
    frame[key] = value


BAD_NERFSTUDIO_DATA = {
    # name: (how to break transforms.json (its text, or a change of its content), what the error must say)
    "malformed": ("{oops", "transforms.json: malformed JSON"),
    "no-focal": (lambda m: m.pop("fl_x"), "frame 0 (images/frame_00000.png): 'fl_x' is given neither"),
    "bad-width": (lambda m: _set(m, "w", -3), "'w' = -3 is not a positive number"),
    "no-frames": (lambda m: _set(m, "frames", []), "empty dataset"),
    "no-pose": (lambda m: m["frames"][3].pop("transform_matrix"), "frame 3 needs 'file_path' and 'transform_matrix'"),
    "missing-image": (lambda m: _set(m["frames"][1], "file_path", "images/gone.png"), "gone.png: image file not found"),
    "outside": (lambda m: _set(m["frames"][0], "file_path", "../../x.png"), "resolves outside the dataset folder"),
    "nan-pose": (lambda m: _set(m["frames"][2]["transform_matrix"][0], 0, float("nan")), "NaN"),
}


@pytest.mark.parametrize("case", sorted(BAD_NERFSTUDIO_DATA))
def test_nerfstudio_data_bad_input_is_one_line(case, layouts, tmp_path):
    import shutil

    data = Path(shutil.copytree(layouts["nerfstudio-data"], tmp_path / "scene"))
    change, problem = BAD_NERFSTUDIO_DATA[case]
    if isinstance(change, str):
        (data / "transforms.json").write_text(change)
    else:
        meta = json.loads((data / "transforms.json").read_text())
        change(meta)
        (data / "transforms.json").write_text(json.dumps(meta))
    cfg = dataparser_config("nerfstudio-data")
    cfg.data = data
    with pytest.raises(DataError) as err:
        cfg.setup().get_dataparser_outputs("train")
    message = str(err.value)
    assert problem in message and "\n" not in message, message
