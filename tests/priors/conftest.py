"""Fixtures of the prior tests: one thread per test, and tiny random checkpoints saved once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from prior_fixtures import neural_gaffer_components, save_components, text_prior_components


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny models gain nothing from intra-op threads, and OpenMP threads spinning on a loaded machine slow them
    down a hundredfold: run this directory's tests on one thread (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_neural_gaffer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Neural-Gaffer-architecture checkpoint (16-channel UNet, VAE, CLIP image encoder, DDIM scheduler)."""
    return save_components(tmp_path_factory.mktemp("neural_gaffer"), **neural_gaffer_components())


@pytest.fixture(scope="session")
def tiny_ip2p_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random InstructPix2Pix-architecture checkpoint (8-channel UNet, VAE, CLIP text encoder + tokenizer)."""
    return save_components(tmp_path_factory.mktemp("ip2p"), **text_prior_components(8))


@pytest.fixture(scope="session")
def tiny_ic_light_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random IC-Light fc checkpoint (8-channel UNet: noisy latent + foreground latent)."""
    return save_components(tmp_path_factory.mktemp("ic_light_fc"), **text_prior_components(8))
