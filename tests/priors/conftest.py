"""Fixtures of the prior tests: one thread per test, tiny random checkpoints saved once per session, and the prior
under test of each module.

A test module of one diffusion prior names its config class as ``PRIOR_CONFIG``; the ``tiny_prior_config`` and ``prior``
fixtures then build that prior on the tiny checkpoint of its architecture (``prior_fixtures.TINY_MODELS``), and
``real_prior`` on the real weights the environment names (``prior_fixtures.REAL_WEIGHTS``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import pytest
import torch
from prior_fixtures import REAL_WEIGHTS, TINY_MODELS

from relight3d.priors.base import RelightingPrior, RelightingPriorConfig
from relight3d.priors.diffusion.testing import tiny_components
from relight3d.priors.latent_diffusion import LatentDiffusionPrior


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny models gain nothing from intra-op threads, and OpenMP threads spinning on a loaded machine slow them
    down a hundredfold: run this directory's tests on one thread (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TEST_DEVICE = os.environ.get("RELIGHT3D_TEST_DEVICE", "")
"""Device of the priors the tests build without naming one; unset: the CPU (``scripts/gpu_check.sh`` sets cuda)."""


@pytest.fixture(autouse=True, scope="session")
def test_device() -> Iterator[str]:
    """With ``RELIGHT3D_TEST_DEVICE`` set, priors built without a device (``config.setup()``,
    ``Prior.from_components(...)``) go to that device, in float32 where their dtype is ``auto`` and with TF32 off, so
    that the references the tests compute on the CPU keep their tolerances. Inputs and results stay on the CPU (a
    prior moves them). Session-scoped, so that module-scoped priors are built on the device too."""
    if not TEST_DEVICE:
        yield "cpu"
        return
    if TEST_DEVICE.startswith("cuda") and not torch.cuda.is_available():
        pytest.fail(f"RELIGHT3D_TEST_DEVICE={TEST_DEVICE}, but torch sees no CUDA device")

    def exact(config: Any) -> Any:
        return dataclasses.replace(config, dtype="float32") if getattr(config, "dtype", None) == "auto" else config

    setup, from_components = RelightingPriorConfig.setup, LatentDiffusionPrior.from_components.__func__

    def setup_on_device(self: RelightingPriorConfig, device: Any = None, **kwargs: Any) -> RelightingPrior:
        return setup(self, device, **kwargs) if device is not None else setup(exact(self), TEST_DEVICE, **kwargs)

    def from_components_on_device(cls: type, config: Any = None, device: Any = None, **parts: Any) -> Any:
        if device is not None:
            return from_components(cls, config, device, **parts)
        return from_components(cls, exact(config or cls.config_class()), TEST_DEVICE, **parts)

    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RelightingPriorConfig, "setup", setup_on_device)
        patch.setattr(LatentDiffusionPrior, "from_components", classmethod(from_components_on_device))
        yield TEST_DEVICE
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[[type], Path]:
    """``tiny_checkpoint(config_class)``: the folder of a random checkpoint with the architecture of that prior
    (``prior_fixtures.TINY_MODELS``), saved once per session (priors of the same architecture share it)."""
    saved: Dict[Tuple[Tuple[str, ...], int], Path] = {}

    def folder(config_class: type) -> Path:
        parts, channels = TINY_MODELS[config_class]
        if (parts, channels) not in saved:
            saved[parts, channels] = tiny_components(parts, channels).save_pretrained(tmp_path_factory.mktemp("tiny"))
        return saved[parts, channels]

    return folder


@pytest.fixture(scope="module")
def tiny_prior_config(
    request: pytest.FixtureRequest, tiny_checkpoint: Callable[[type], Path]
) -> Callable[..., RelightingPriorConfig]:
    """``tiny_prior_config(model_path=None, **fields)``: the module's ``PRIOR_CONFIG`` for a tiny model at
    ``model_path`` (default: the tiny checkpoint of its architecture), with 2 sampling steps and 16-row maps
    (where it has them) unless ``fields`` say otherwise."""
    config_class = request.module.PRIOR_CONFIG

    def make(model_path: Optional[Path] = None, **fields) -> RelightingPriorConfig:
        fields.setdefault("num_inference_steps", 2)
        if any(f.name == "envmap_height" for f in dataclasses.fields(config_class)):
            fields.setdefault("envmap_height", 16)
        return config_class(model_path=model_path or tiny_checkpoint(config_class), **fields)

    return make


@pytest.fixture(scope="module")
def prior(tiny_prior_config: Callable[..., RelightingPriorConfig]) -> RelightingPrior:
    """The module's prior (``PRIOR_CONFIG``) on the tiny checkpoint of its architecture, on the CPU."""
    return tiny_prior_config().setup()


@pytest.fixture
def real_prior(request: pytest.FixtureRequest) -> Callable[..., RelightingPrior]:
    """``real_prior(**fields)``: the module's prior with ``fields``, on CUDA when there is one, with the real weights
    the environment names (``prior_fixtures.REAL_WEIGHTS``: ``model_path``, and the UNet weights merged over it when
    their variable is set). The test is skipped where the weights are not named."""
    config_class = request.module.PRIOR_CONFIG
    path_variable, weights_variable, what = REAL_WEIGHTS[config_class]
    if not os.environ.get(path_variable):
        pytest.skip(f"set {path_variable} to {what}; no weights are available here")

    def make(**fields) -> RelightingPrior:
        config = config_class(model_path=Path(os.environ[path_variable]), **fields)
        merged = os.environ.get(weights_variable) if weights_variable else None
        if merged:
            setattr(config, config._target.unet_weights_field, Path(merged))
        return config.setup(device="cuda" if torch.cuda.is_available() else "cpu")

    return make
