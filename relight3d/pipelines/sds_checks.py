"""Weight-free checks of relight3d-sds: reconstruction of a real photo, and training speed.

* :func:`coffee_cup_rgba` makes an RGBA input from scikit-image's ``coffee`` photo: the cup, saucer and spoon are
  segmented by colour (saturated reds, and near-white / grey for the rim and the spoon), cleaned with morphology,
  reduced to the largest component with holes filled, and cropped to a square.
* :func:`check_reconstruction` trains relight3d-sds in reconstruction-only mode (prior weight 0) and measures how
  well the input view is reproduced.
* :func:`time_sds_iterations` times full training iterations (reference rays + a prior view with SDS) at a render
  size, with real Stable Diffusion weights when given, else with a tiny random one.

``scripts/bench_sds.py`` runs them from the command line. The checks take relight3d-sds's trainer config from the
caller (:func:`relight3d.method_configs.sds_config`, in the apps layer above this one) and change copies of it.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch
from PIL import Image

from relight3d.engine.trainer import Relight3DTrainerConfig
from relight3d.errors import ConfigError


def coffee_cup_rgba(size: int = 128, margin: float = 0.04) -> np.ndarray:
    """RGBA ``uint8 [size, size, 4]`` of the cup, saucer and spoon of ``skimage.data.coffee()``.

    The mask is made by colour thresholds in HSV (saturated reds of the cup and saucer, unsaturated bright pixels of
    the rim and spoon), an opening and a closing, the largest connected component, and hole filling. The crop is the
    mask's bounding square plus ``margin`` of its side on each side; parts beyond the photo are transparent.
    """
    from scipy import ndimage
    from skimage import color, data, measure, morphology

    photo = data.coffee()
    hsv = color.rgb2hsv(photo)
    hue, sat, val = hsv[..., 0] * 360.0, hsv[..., 1], hsv[..., 2]
    red = ((hue < 14.0) | (hue > 340.0)) & (sat > 0.6) & (val > 0.15)
    pale = (sat < 0.25) & (val > 0.5)
    mask = morphology.opening(red | pale, morphology.disk(3))
    mask = morphology.closing(mask, morphology.disk(9))
    labels = measure.label(ndimage.binary_fill_holes(mask))
    largest = max(measure.regionprops(labels), key=lambda r: r.area)
    mask = ndimage.binary_fill_holes(morphology.closing(labels == largest.label, morphology.disk(15)))

    rows, cols = np.nonzero(mask)
    y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    side = int(round(max(y1 - y0, x1 - x0) * (1.0 + 2.0 * margin)))
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    top, left = cy - side // 2, cx - side // 2
    rgba = np.zeros((side, side, 4), np.uint8)
    h, w = mask.shape
    sy0, sy1, sx0, sx1 = max(top, 0), min(top + side, h), max(left, 0), min(left + side, w)
    rgba[sy0 - top : sy1 - top, sx0 - left : sx1 - left, :3] = photo[sy0:sy1, sx0:sx1]
    rgba[sy0 - top : sy1 - top, sx0 - left : sx1 - left, 3] = mask[sy0:sy1, sx0:sx1] * 255
    # Premultiply before resizing so that colours of transparent pixels do not bleed into the edges.
    premult = rgba.astype(np.float32) / 255.0
    premult[..., :3] *= premult[..., 3:]
    small = np.stack(
        [np.asarray(Image.fromarray(premult[..., c]).resize((size, size), Image.BOX)) for c in range(4)], -1
    )
    alpha = small[..., 3:]
    rgb = np.where(alpha > 1e-6, small[..., :3] / np.maximum(alpha, 1e-6), 0.0)
    return (np.concatenate([rgb, alpha], -1).clip(0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_coffee_cup(path: Path, size: int = 128) -> Path:
    """Write :func:`coffee_cup_rgba` as a PNG; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(coffee_cup_rgba(size), "RGBA").save(path)
    return path


def size_for_cpu(config: Relight3DTrainerConfig, tiny: bool = False) -> Relight3DTrainerConfig:
    """Shrink relight3d-sds's radiance field for a CPU, in place (the method's defaults are RealFusion's, meant for
    a GPU): a 12-level hash grid of 2^15 entries up to resolution 512, 256 samples per box diagonal (ample for a
    128 px view), a 64^3 occupancy grid, autograd normals (cheaper than six finite-difference density queries).
    ``tiny`` shrinks further for tests (6 levels, 96 samples per diagonal, a 32^3 occupancy grid)."""
    model = config.pipeline.model
    if tiny:
        model.n_levels, model.log2_table_size, model.max_resolution, model.hidden = 6, 12, 96, 32
        model.samples_per_diagonal, model.occupancy_resolution = 96, 32
    else:
        model.n_levels, model.log2_table_size, model.max_resolution = 12, 15, 512
        model.samples_per_diagonal, model.occupancy_resolution = 256, 64
    model.normals_method = "autograd"
    model.grid_levels_mask = min(model.grid_levels_mask, model.n_levels // 2)
    return config


def reconstruction_config(
    method: Relight3DTrainerConfig, rays_per_batch: int = 1024, tiny: bool = False
) -> Relight3DTrainerConfig:
    """A copy of ``method`` (relight3d-sds's trainer config) in reconstruction-only mode (prior weight 0), sized for
    a CPU (:func:`size_for_cpu`).

    Also: Adam at 1e-2 for every parameter group (RealFusion's 1e-3 is for 5,000 iterations), no coarse-to-fine
    masking (its 3,000 iterations would outlast a short run), evaluation and checkpoints off.
    """
    config = size_for_cpu(copy.deepcopy(method), tiny)
    config.pipeline.prior_loss_weight.start = 0.0
    config.pipeline.datamanager.train_num_rays_per_batch = rays_per_batch
    for group in config.optimizers.values():
        group["optimizer"].lr = 2e-2 if tiny else 1e-2
    config.pipeline.model.grid_levels_mask = 0
    config.steps_per_eval_batch = config.steps_per_eval_image = config.steps_per_save = 1_000_000
    config.vis = "tensorboard"
    return config


def check_reconstruction(
    method: Relight3DTrainerConfig, out_dir: Path, size: int = 128, steps: int = 300, rays_per_batch: int = 1024,
    tiny: bool = False,
) -> Dict[str, float]:  # fmt: skip
    """Train ``method`` (relight3d-sds's trainer config) reconstruction-only (:func:`reconstruction_config`) on the
    coffee cup for ``steps`` iterations and score the input view.

    Returns 'psnr' (whole image, composited on white), 'psnr_masked' (inside the mask), the unweighted
    'image_loss' and 'mask_loss', 'seconds' of training and 'steps'.
    """
    from relight3d.engine.run import train

    out_dir = Path(out_dir)
    image = write_coffee_cup(out_dir / f"coffee_cup_{size}.png", size)
    config = reconstruction_config(method, rays_per_batch, tiny)
    t0 = time.perf_counter()
    trainer = train(config, image, out_dir / "runs", max_steps=steps, experiment_name="coffee_cup")
    seconds = time.perf_counter() - t0
    metrics = trainer.pipeline.evaluate_reference_view()
    metrics.update({"seconds": seconds, "steps": float(steps)})
    return metrics


def time_sds_iterations(
    method: Relight3DTrainerConfig,
    render_size: int,
    steps: int = 5,
    warmup: int = 2,
    sd_path: Optional[Path] = None,
    image_size: int = 128,
    work_dir: Optional[Path] = None,
    settings: str = "cpu",
    rays_per_batch: Optional[int] = None,
    seed: int = 0,
) -> Dict[str, float]:
    """Iterations per second of ``method`` (relight3d-sds's trainer config; SDS and every regulariser on) at
    ``render_size`` on this machine.

    ``settings`` is 'default' (the method's RealFusion defaults) or 'cpu' (the field shrunk by
    :func:`size_for_cpu`). Uses the Stable Diffusion at ``sd_path``, or a tiny random one when None (then the prior
    costs almost nothing and the figure measures the radiance field). Timing starts after ``warmup`` iterations
    (the first one also carves and warms up the occupancy grid). Seeded with ``seed`` (the prior views, lights and
    timesteps are random, and the samples per ray, so the cost of an iteration, follow them), so two runs of
    different code time the same iterations. Also returns the slowest and fastest timed iteration (seconds).
    """
    import tempfile

    from relight3d.engine.run import training_step_function
    from relight3d.priors.diffusion.testing import tiny_components
    from relight3d.priors.stable_diffusion import StableDiffusionGuidance

    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        image = write_coffee_cup(Path(tmp) / "cup.png", image_size)
        config = copy.deepcopy(method)
        if settings == "cpu":
            size_for_cpu(config)
        elif settings != "default":
            raise ConfigError("--settings", f"must be 'default' or 'cpu', got {settings!r}")
        if rays_per_batch is not None:
            config.pipeline.datamanager.train_num_rays_per_batch = rays_per_batch
        config.pipeline.render_size = render_size
        config.pipeline.guidance.prompt = "a photo of a cup"
        device = config.machine.device_type
        guidance = None
        if sd_path is None:
            guidance = StableDiffusionGuidance(config.pipeline.guidance, device, tiny_components())
        else:
            config.pipeline.guidance.pretrained_model_path = Path(sd_path)
        config.pipeline.datamanager.data = image
        torch.manual_seed(seed)
        pipeline = config.pipeline.setup(device=device, test_mode="val", guidance=guidance)
        run = training_step_function(pipeline, config)

        for step in range(warmup):
            run(step)
        times = []
        for step in range(warmup, warmup + steps):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            run(step)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        seconds = sum(times)
    return {
        "iterations_per_second": steps / seconds,
        "seconds_per_iteration": seconds / steps,
        "slowest_iteration": max(times),
        "fastest_iteration": min(times),
    }
