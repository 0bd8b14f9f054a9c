"""Stage 1 split across processes (``relight3d relight --stage1-only`` under torchrun / accelerate): two gloo
processes relight the training views exactly as one process does, and a later run trains on the cached views."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from gloo_ranks import become_rank, free_port
from PIL import Image

from relight3d.cli import main


def _argv(run: Path, envmap: Path, cache: Path, output: Path, prior: list) -> list:
    return ["relight", "--field-run", str(run), "--envmap", str(envmap), "--output", str(output), "--stage1-only",
            "--stage1-cache", str(cache), "--device", "cpu", *prior]  # fmt: skip


def _rank(rank: int, world: int, port: int, argv: list) -> None:
    become_rank(rank, world, port)
    assert main(argv) == 0


def _relit(cache: Path) -> np.ndarray:
    files = sorted((cache / "sky" / "pred_image").iterdir())
    return np.stack([np.asarray(Image.open(f)) for f in files]).astype(np.int16)


@pytest.fixture()
def tiny_gaffer(tmp_path) -> list:
    from relight3d.priors.diffusion.components import IMAGE_PARTS
    from relight3d.priors.diffusion.testing import tiny_components

    torch.manual_seed(0)
    folder = tiny_components(IMAGE_PARTS, 16).save_pretrained(tmp_path / "ng")
    return ["--prior", "neural-gaffer", "--prior-path", str(folder), "--prior.num-inference-steps", "2",
            "--prior.resolution", "16", "--prior.envmap-height", "16"]  # fmt: skip


@pytest.mark.parametrize("prior", ["physical", "neural-gaffer"])
def test_two_processes_relight_the_views_as_one_process(
    prior, trained_object_run, tiny_object_folder, tmp_path, request
) -> None:
    options = request.getfixturevalue("tiny_gaffer") if prior == "neural-gaffer" else []
    envmap = tiny_object_folder / "envmaps" / "sky.exr"
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(_argv(trained_object_run, envmap, one, tmp_path / "out1", options)) == 0
    argv = _argv(trained_object_run, envmap, two, tmp_path / "out2", options)
    torch.multiprocessing.spawn(_rank, args=(2, free_port(), argv), nprocs=2, join=True)
    a, b = _relit(one), _relit(two)
    assert a.shape == b.shape == (16, 32, 32, 4)
    if prior == "physical":
        assert np.array_equal(a, b)  # deterministic: bit for bit
    else:
        assert np.abs(a - b).max() <= 1  # a tiny diffusion model: per-view seeds, one 8-bit step of float noise
        assert (
            np.abs(
                a[..., :3] - np.asarray(Image.open(sorted((one / "sky" / "input_image").iterdir())[0]))[..., :3]
            ).mean()
            > 1
        )
    key = json.loads((one / "sky" / "stage1.json").read_text())["fingerprint"]
    assert json.loads((two / "sky" / "stage1.json").read_text())["fingerprint"] == key


def test_a_later_run_trains_on_the_cached_views(trained_object_run, tiny_object_folder, tmp_path) -> None:
    envmap = tiny_object_folder / "envmaps" / "sky.exr"
    cache = tmp_path / "cache"
    assert main(_argv(trained_object_run, envmap, cache, tmp_path / "out", [])) == 0
    stamp = (cache / "sky" / "pred_image" / "000.png").stat().st_mtime_ns
    argv = ["relight", "--field-run", str(trained_object_run), "--envmap", str(envmap), "--output", str(tmp_path / "o"),
            "--stage1-cache", str(cache), "--stage1-steps", "2", "--stage2-steps", "0", "--video-frames", "0",
            "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert (cache / "sky" / "pred_image" / "000.png").stat().st_mtime_ns == stamp  # reused, not relit again
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())["sky"]
    assert "relight3d-gaffer (physical)/psnr_masked" in summary and "stage1_views_per_second" not in summary


def test_stage1_only_needs_a_cache(trained_object_run, tiny_object_folder, tmp_path, capsys) -> None:
    envmap = tiny_object_folder / "envmaps" / "sky.exr"
    argv = ["relight", "--field-run", str(trained_object_run), "--envmap", str(envmap), "--output", str(tmp_path / "o"),
            "--stage1-only"]  # fmt: skip
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().startswith("relight3d: error: --stage1-only: needs --stage1-cache")
