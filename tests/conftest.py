"""Shared fixtures: a fixed seed, tiny scenes rendered by relight3d's own tracer, and small helpers."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from relight3d.data.synthetic import SceneSpec, write_blender_scene


@pytest.fixture(autouse=True)
def seed() -> int:
    """Every test starts from the same random state."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    return 0


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32 px Blender-format scene of three primitives: 16 training and 4 test views."""
    spec = SceneSpec(scene="objects", resolution=32, n_train=16, n_test=4, supersample=2)
    return write_blender_scene(tmp_path_factory.mktemp("tiny_scene"), spec)


@pytest.fixture(scope="session")
def small_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 48 px scene with 40 training and 6 test views, for short quality checks."""
    spec = SceneSpec(scene="objects", resolution=48, n_train=40, n_test=6, supersample=2)
    return write_blender_scene(tmp_path_factory.mktemp("small_scene"), spec)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread (and the suite may share the CPU); use as a fixture argument or with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
