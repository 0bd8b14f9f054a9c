"""Fixtures for the export tests: analytic fields with known surfaces, and one briefly trained sphere run."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Tuple

import pytest
import torch
from torch import Tensor, nn

from relight3d.data.synthetic import SceneSpec, write_blender_scene


class AnalyticField(nn.Module):
    """A field with a closed-form density and colour (the RelightableField calls the exporters use)."""

    def __init__(self, density: Callable[[Tensor], Tensor], color: Callable[[Tensor], Tensor], box: float = 1.0):
        super().__init__()
        self.register_buffer("aabb", torch.tensor([-box] * 3 + [box] * 3))
        self._density, self._color = density, color

    def density(self, positions: Tensor) -> Tensor:
        return self._density(positions)

    def appearance_features(self, positions: Tensor) -> Tensor:
        return positions

    def color(self, features: Tensor, directions: Tensor) -> Tensor:
        return self._color(features)


class AnalyticModel(nn.Module):
    """Holds an :class:`AnalyticField` as ``.field`` (no occupancy grid: the field's box is meshed)."""

    def __init__(self, field: AnalyticField):
        super().__init__()
        self.field = field


def position_color(p: Tensor) -> Tensor:
    """A smooth colour that differs everywhere on the surface: rgb = p / 2 + 1/2."""
    return (p * 0.5 + 0.5).clamp(0.0, 1.0)


def sigmoid_ball(center: Tuple[float, float, float], radius: float, sharpness: float = 1000.0):
    """Density ``sharpness * sigmoid(-(|p - c| - r) * sharpness)``: with peak density equal to the sharpness, a ray
    along the radius reaches 50 % opacity exactly at ``|p - c| = r``."""
    c = torch.tensor(center)

    def density(p: Tensor) -> Tensor:
        return sharpness * torch.sigmoid(-((p - c).norm(dim=-1) - radius) * sharpness)

    return density


@pytest.fixture
def analytic_model() -> Callable[..., AnalyticModel]:
    """Build an analytic model from a density function (colour: :func:`position_color`)."""

    def make(density: Callable[[Tensor], Tensor], box: float = 1.0) -> AnalyticModel:
        return AnalyticModel(AnalyticField(density, position_color, box))

    return make


SPHERE_SCENE = SceneSpec(scene="sphere", resolution=48, n_train=24, n_test=2, supersample=2)


@pytest.fixture(scope="session")
def sphere_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """relight3d's sphere scene (radius 0.5 at the origin), 48 px, 24 training views."""
    return write_blender_scene(tmp_path_factory.mktemp("export_sphere_scene"), SPHERE_SCENE)


def sphere_training_config(steps: int):
    """relight3d-tensorf shrunk for a short CPU run on the sphere scene."""
    from relight3d.method_configs import tensorf_config

    cfg = copy.deepcopy(tensorf_config(max_steps=steps))
    cfg.vis = "tensorboard"
    cfg.steps_per_eval_image = 1_000_000
    cfg.steps_per_eval_batch = 1_000_000
    cfg.steps_per_save = 1_000_000  # the trainer still saves the last step
    cfg.pipeline.datamanager.train_num_rays_per_batch = 1024
    model = cfg.pipeline.model
    model.occupancy_resolution = 32
    model.occupancy_warmup_updates = 4
    model.init_resolution = 32
    model.final_resolution = 64
    model.upsampling_iters = (steps // 2,)
    model.shrink_iters = (steps // 2,)
    model.n_density_components = 8
    model.n_appearance_components = 8
    model.density_shift = -5.0  # starts less empty than the default -10, so that a few dozen steps make a surface
    model.samples_per_diagonal = 128
    model.eval_num_rays_per_chunk = 4096
    return cfg


@pytest.fixture(scope="session")
def sphere_run(sphere_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, object]:
    """A relight3d-tensorf run trained briefly on the sphere scene: its config.yml and the trainer's pipeline."""
    from relight3d.engine.run import train

    torch.manual_seed(0)
    cfg = sphere_training_config(steps=80)
    trainer = train(cfg, sphere_scene, tmp_path_factory.mktemp("export_sphere_run"), experiment_name="sphere")
    return cfg.get_base_dir() / "config.yml", trainer.pipeline
