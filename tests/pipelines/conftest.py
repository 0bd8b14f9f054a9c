"""Fixtures of the relighting tests: a tiny two-light Objaverse-layout object folder and a field trained on it."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

TINT = np.array([0.55, 0.75, 1.0], dtype=np.float32)
"""Light 1 of the tiny folder: light 0's images with this per-channel factor (a bluish light)."""


def _tiny(cfg, steps: int):
    cfg = copy.deepcopy(cfg)
    cfg.max_num_iterations = steps
    cfg.steps_per_save = steps
    cfg.steps_per_eval_image = 10**6
    cfg.steps_per_eval_batch = 10**6
    cfg.pipeline.datamanager.train_num_rays_per_batch = 256
    cfg.pipeline.model.occupancy_resolution = 32
    return cfg


@pytest.fixture(scope="session")
def shrink_config():
    """A function that shrinks a trainer config to ``steps`` cheap CPU iterations."""
    return _tiny


@pytest.fixture(scope="session")
def tiny_object_folder(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 32 px tiny scene in the Objaverse / Neural Gaffer layout: 16 training views (0-15) and 4 held-out
    views (16-19) under light 0 ('sun'), the held-out views also under light 1 ('sky', a tinted copy)."""
    from relight3d.lighting import write_envmap

    out = tmp_path_factory.mktemp("tiny_object")
    view = 0
    for split in ("train", "test"):
        meta = json.loads((tiny_scene / f"transforms_{split}.json").read_text())
        for frame in meta["frames"]:
            c2w = np.array(frame["transform_matrix"], dtype=np.float64)
            np.save(out / f"{view:03d}_RT.npy", np.linalg.inv(c2w)[:3])
            rgba = np.asarray(Image.open(tiny_scene / f"{frame['file_path']}.png").convert("RGBA"), dtype=np.float32)
            Image.fromarray(rgba.astype(np.uint8)).save(out / f"{view:03d}_000_sun.png")
            if split == "test":
                tinted = rgba.copy()
                tinted[..., :3] = np.clip(rgba[..., :3] * TINT, 0, 255)
                Image.fromarray((tinted + 0.5).astype(np.uint8)).save(out / f"{view:03d}_001_sky.png")
            view += 1
    envs = out / "envmaps"
    envs.mkdir()
    h, w = 16, 32
    v = torch.linspace(0, 1, h)[:, None, None].expand(h, w, 1)
    write_envmap(envs / "sun.exr", torch.cat([1.2 - 0.6 * v, 1.1 - 0.6 * v, 1.0 - 0.6 * v], -1))
    write_envmap(envs / "sky.exr", torch.cat([0.5 - 0.3 * v, 0.7 - 0.3 * v, 1.1 - 0.5 * v], -1))
    return out


@pytest.fixture(scope="session")
def trained_object_run(tiny_object_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """config.yml of relight3d-tensorf trained briefly on the tiny object folder."""
    from relight3d.data.objaverse import ObjaverseDataParserConfig
    from relight3d.engine.run import train
    from relight3d.method_configs import tensorf_config

    cfg = _tiny(tensorf_config(200), 200)
    cfg.pipeline.datamanager.train_num_rays_per_batch = 1024
    cfg.pipeline.datamanager.dataparser = ObjaverseDataParserConfig(train_views=(0, 16), eval_views=(16, 20))
    trainer = train(cfg, tiny_object_folder, tmp_path_factory.mktemp("field_run"), experiment_name="tiny_object")
    return trainer.base_dir / "config.yml"
