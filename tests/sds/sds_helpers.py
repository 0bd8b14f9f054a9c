"""Helpers shared by the score-distillation tests: a tiny random Stable Diffusion on disk, images, tiny configs."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Tuple

import numpy as np
from PIL import Image


@functools.cache
def tiny_sd_folder() -> Path:
    """A tiny random Stable Diffusion saved in the diffusers layout (built once per test session)."""
    from relight3d.priors.diffusion.testing import tiny_components

    folder = Path(tempfile.mkdtemp(prefix="relight3d-tiny-sd-"))
    return tiny_components(seed=0).save_pretrained(folder / "tiny-sd")


def write_rgba(path: Path, size: Tuple[int, int] = (32, 32), mode: str = "RGBA", empty: bool = False) -> Path:
    """A coloured disc on a transparent background (``size`` is width, height)."""
    w, h = size
    yy, xx = np.mgrid[:h, :w]
    disc = np.hypot(xx - w / 2 + 0.5, yy - h / 2 + 0.5) < min(w, h) * 0.3
    rgb = np.stack([np.full((h, w), 200), (xx * 255 // max(w - 1, 1)), np.full((h, w), 60)], -1).astype(np.uint8)
    alpha = np.zeros((h, w), np.uint8) if empty else (disc * 255).astype(np.uint8)
    image = np.dstack([rgb, alpha]) if mode == "RGBA" else rgb
    Image.fromarray(image, mode).save(path)
    return path


def tiny_sds_config(max_steps: int = 10, prior: bool = True, field: str = "ngp"):  # noqa: ANN201
    """relight3d-sds shrunk for a few CPU iterations (tiny field, 16 px prior views, the tiny SD)."""
    from relight3d.method_configs import sds_config

    cfg = sds_config(max_steps=max_steps, field=field)
    cfg.steps_per_save = cfg.steps_per_eval_batch = cfg.steps_per_eval_image = 1_000_000
    cfg.vis = "tensorboard"
    for group in cfg.optimizers.values():  # RealFusion's 1e-3 is for 5000 iterations; a few need more
        group["optimizer"].lr = 1e-2
    p = cfg.pipeline
    p.render_size = 16
    p.albedo_iters = 3
    p.eval_views = 2
    p.datamanager.train_num_rays_per_batch = 128
    p.datamanager.eval_num_rays_per_batch = 128
    p.guidance.prompt = "a photo of a disc"
    if prior:
        p.guidance.pretrained_model_path = tiny_sd_folder()
    else:
        p.prior_loss_weight.start = 0.0
    m = p.model
    m.occupancy_resolution = 32
    m.samples_per_diagonal = 64
    m.eval_num_rays_per_chunk = 1024
    if field == "ngp":
        m.n_levels, m.log2_table_size, m.base_resolution, m.max_resolution, m.hidden = 4, 10, 8, 64, 16
        m.grid_levels_mask, m.grid_levels_mask_iters = 2, 4
    else:
        m.init_resolution, m.final_resolution, m.upsampling_iters, m.shrink_iters = 16, 24, (4,), ()
        m.n_density_components, m.n_appearance_components, m.appearance_dim = 4, 4, 8
    return cfg
