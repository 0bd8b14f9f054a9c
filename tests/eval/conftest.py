"""Fixtures for the evaluation tests: small RGBA benchmark folders whose metrics can be worked out by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np
import pytest
from PIL import Image

SIZE = 40
VIEWS = ("r_000", "r_001", "r_002")


def disc_mask(view: int, size: int = SIZE) -> np.ndarray:
    """Boolean object mask of a view: a disc that moves with the view."""
    yy, xx = np.mgrid[0:size, 0:size]
    cx, cy = size / 2 + 3 * np.cos(view), size / 2 + 3 * np.sin(view)
    return (xx - cx) ** 2 + (yy - cy) ** 2 < (0.35 * size) ** 2


def shaded_rgb(view: int, light_dir: np.ndarray, tint: np.ndarray, size: int = SIZE) -> np.ndarray:
    """uint8 RGB of a Lambertian sphere-like disc lit from ``light_dir``; R <= 127 and G even, so that
    ``R * 2`` and ``G / 2`` are exact in 8 bits (the channel-alignment tests rely on it)."""
    yy, xx = np.mgrid[0:size, 0:size]
    cx, cy = size / 2 + 3 * np.cos(view), size / 2 + 3 * np.sin(view)
    u, v = (xx - cx) / (0.35 * size), (yy - cy) / (0.35 * size)
    n = np.stack([u, -v, np.sqrt(np.clip(1 - u * u - v * v, 0, 1))], -1)
    shade = np.clip(n @ (light_dir / np.linalg.norm(light_dir)), 0.05, 1.0)
    rgb = np.round(shade[..., None] * tint * 255.0).astype(np.int64)
    rgb[..., 0] = np.minimum(rgb[..., 0], 127)
    rgb[..., 1] = (rgb[..., 1] // 2) * 2
    return np.clip(rgb, 0, 255).astype(np.uint8)


def save_rgba(path: Path, rgb: np.ndarray, alpha: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([rgb, alpha[..., None]], -1).astype(np.uint8)).save(path)


LIGHTS = {
    # light000 is the training light; light001 comes from the other side and is bluer.
    "light000": (np.array([0.6, 0.3, 1.0]), np.array([0.5, 0.8, 0.9])),
    "light001": (np.array([-0.7, 0.2, 0.8]), np.array([0.45, 0.7, 1.0])),
}


@pytest.fixture
def bench(tmp_path: Path) -> Dict[str, Path]:
    """Folders of one object under two lights, and three 'methods' for light001:

    * ``exact``: the ground truth itself;
    * ``tinted``: the ground truth with R doubled and G halved (exact in 8 bits), background white;
    * ``noisy``: the ground truth plus clipped Gaussian noise.

    Ground truth is RGBA with alpha 0/255 (the disc); predictions are RGB composited on white.
    """
    rng = np.random.default_rng(0)
    out: Dict[str, Path] = {}
    for light, (direction, tint) in LIGHTS.items():
        out[f"gt_{light}"] = tmp_path / "gt" / light
        for i, view in enumerate(VIEWS):
            alpha = disc_mask(i).astype(np.uint8) * 255
            save_rgba(tmp_path / "gt" / light / f"{view}.png", shaded_rgb(i, direction, tint), alpha)
    for name in ("exact", "tinted", "noisy"):
        out[name] = tmp_path / "runs" / name
        out[name].mkdir(parents=True)
    for i, view in enumerate(VIEWS):
        mask = disc_mask(i)
        gt = shaded_rgb(i, *LIGHTS["light001"]).astype(np.int64)
        gt[~mask] = 255
        tinted = gt.copy()
        tinted[mask] = tinted[mask] * np.array([2, 1, 1]) // np.array([1, 2, 1])
        noisy = np.clip(gt + rng.normal(0, 20, gt.shape), 0, 255).round()
        for name, image in (("exact", gt), ("tinted", tinted), ("noisy", noisy)):
            Image.fromarray(image.astype(np.uint8)).save(out[name] / f"{view}.png")
    out["root"] = tmp_path
    return out


@pytest.fixture
def no_lpips_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No LPIPS backbone anywhere: an empty RELIGHT3D_LPIPS_WEIGHTS folder and an empty torch hub cache."""
    import torch

    empty = tmp_path / "no_weights"
    empty.mkdir()
    monkeypatch.setenv("RELIGHT3D_LPIPS_WEIGHTS", str(empty))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(empty / "hub"))
    return empty
