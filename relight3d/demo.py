"""The embedded default: render a small object scene with relight3d's own tracer, train on it, report PSNR.

Nothing is downloaded. The scene is cached under ``~/.cache/relight3d/scenes`` (or ``$RELIGHT3D_CACHE``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Literal

from relight3d.data.synthetic import SceneSpec, write_blender_scene


def cache_dir() -> Path:
    """Where relight3d caches generated data."""
    return Path(os.environ.get("RELIGHT3D_CACHE", Path.home() / ".cache" / "relight3d"))


@dataclass
class DemoConfig:
    """Settings of ``relight3d demo``."""

    method: Literal["relight3d-tensorf", "relight3d-ngp"] = "relight3d-tensorf"
    """Method to train."""
    resolution: int = 64
    """Image size of the generated scene."""
    n_train: int = 50
    """Training views."""
    n_test: int = 10
    """Held-out views."""
    steps: int = 500
    """Training iterations."""
    output: Path = Path("renders/demo")
    """Where renders, metrics and the nerfstudio run go."""


def run_demo(cfg: DemoConfig) -> Dict[str, float]:
    """Generate the scene, train, evaluate on held-out views; returns the metrics (also written as JSON)."""
    from relight3d.engine.run import evaluate_pipeline, train
    from relight3d.method_configs import ngp_config, tensorf_config

    spec = SceneSpec(scene="objects", resolution=cfg.resolution, n_train=cfg.n_train, n_test=cfg.n_test)
    scene = write_blender_scene(cache_dir() / "scenes" / f"objects{cfg.resolution}", spec)
    trainer_config = tensorf_config(cfg.steps) if cfg.method == "relight3d-tensorf" else ngp_config(cfg.steps)
    trainer_config.steps_per_save = cfg.steps
    t0 = time.perf_counter()
    trainer = train(trainer_config, scene, cfg.output / "runs", experiment_name="demo")
    train_seconds = time.perf_counter() - t0
    metrics = evaluate_pipeline(trainer.pipeline, out_dir=cfg.output / "test_views")
    rays = cfg.steps * trainer_config.pipeline.datamanager.train_num_rays_per_batch
    metrics.update(
        {
            "method": cfg.method,
            "train_seconds": train_seconds,
            "train_rays_per_second": rays / train_seconds,
            "config": str(trainer_config.get_base_dir() / "config.yml"),
        }
    )
    (cfg.output / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def format_metrics(m: Dict) -> str:
    """A short human-readable summary."""
    return (
        f"{m['method']}: held-out PSNR {m['psnr']:.2f} dB (inside the object mask {m['psnr_masked']:.2f} dB), "
        f"SSIM {m['ssim']:.3f} on {m['n_views']} views; trained in {m['train_seconds']:.0f} s "
        f"({m['train_rays_per_second'] / 1000:.1f} K rays/s)\nconfig: {m['config']}"
    )
