"""Run nerfstudio training and evaluation from Python, exactly as ``ns-train`` does."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from PIL import Image

from relight3d.data.images import read_rgba
from relight3d.eval.image_metrics import align_channels, psnr, ssim


def train(
    config: TrainerConfig,
    data: Optional[Path],
    output_dir: Path,
    max_steps: Optional[int] = None,
    experiment_name: Optional[str] = None,
) -> Trainer:
    """Train ``config`` on ``data`` and return the trainer (its pipeline holds the trained model).

    Writes nerfstudio's usual outputs (``config.yml``, ``nerfstudio_models/step-*.ckpt``) under ``output_dir``.
    ``data=None`` keeps the config's own data path (e.g. relighting, which takes it from the trained run).

    Raises:
        ConfigError: a trainer count that cannot work (``max_steps < 1``, a negative interval), before anything is
            written.
        DataError: the output or checkpoint folder is not writable (before training), or bad data, a bad
            checkpoint to resume from, or any other :class:`~relight3d.errors.Relight3dError` of setup or training
            (raised as they are, not turned into ``ns-train``'s one-line exit).
    """
    from relight3d.engine.trainer import Relight3DTrainer, check_trainer_config

    if data is not None:
        config.pipeline.datamanager.data = Path(data)
    config.output_dir = Path(output_dir)
    if experiment_name is not None:
        config.experiment_name = experiment_name
    if max_steps is not None:
        config.max_num_iterations = max_steps
    config.viewer.quit_on_train_completion = True
    config.set_timestamp()
    check_trainer_config(config)
    config.save_config()
    trainer = config.setup(local_rank=0, world_size=1)
    if isinstance(trainer, Relight3DTrainer):
        trainer.exit_on_error = False
    trainer.setup()
    trainer.train()
    return trainer


def build_pipeline(config: TrainerConfig, data: Path, device: str = "cpu"):  # noqa: ANN201
    """The pipeline of ``config`` on ``data``, freshly initialised (no training, no output files)."""
    config.pipeline.datamanager.data = Path(data)
    return config.pipeline.setup(device=device, test_mode="val")


@torch.no_grad()
def evaluate_views(
    model: torch.nn.Module,
    cameras,  # noqa: ANN001 - nerfstudio Cameras
    gt_paths: List[Path],
    background: float = 1.0,
    out_dir: Optional[Path] = None,
) -> Dict[str, float]:
    """Render each camera and score it against its RGBA ground truth composited on ``background``.

    Returns mean PSNR over the full image and inside the object mask (alpha > 0.5), raw and channel-aligned
    (:func:`~relight3d.eval.image_metrics.align_channels`), mean SSIM, and render time.
    Writes ``pred_XXX.png`` / ``gt_XXX.png`` into ``out_dir`` when given.
    """
    model.eval()
    full, masked, aligned, ssims, seconds = [], [], [], [], 0.0
    for i, path in enumerate(gt_paths):
        rgba = torch.from_numpy(read_rgba(path)[0])
        gt = rgba[..., :3] * rgba[..., 3:] + background * (1.0 - rgba[..., 3:])
        mask = (rgba[..., 3:] > 0.5).float()
        t0 = time.perf_counter()
        outputs = model.get_outputs_for_camera(cameras[i : i + 1].to(model.device))
        seconds += time.perf_counter() - t0
        pred = outputs["rgb"].cpu().clamp(0.0, 1.0)
        full.append(float(psnr(pred, gt)))
        masked.append(float(psnr(pred, gt, mask)))
        aligned.append(float(psnr(align_channels(pred, gt, mask)[0], gt, mask)))
        ssims.append(float(ssim(pred, gt)))
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray((pred.numpy() * 255 + 0.5).astype(np.uint8)).save(out_dir / f"pred_{i:03d}.png")
            Image.fromarray((gt.numpy() * 255 + 0.5).astype(np.uint8)).save(out_dir / f"gt_{i:03d}.png")
    return {
        "psnr": float(np.mean(full)),
        "psnr_masked": float(np.mean(masked)),
        "psnr_masked_aligned": float(np.mean(aligned)),
        "ssim": float(np.mean(ssims)),
        "seconds_per_view": seconds / max(len(gt_paths), 1),
        "n_views": len(gt_paths),
    }


def evaluate_pipeline(pipeline, out_dir: Optional[Path] = None) -> Dict[str, float]:  # noqa: ANN001
    """Score a trained pipeline on its datamanager's eval split (cameras and images from the dataparser)."""
    dataset = pipeline.datamanager.eval_dataset
    outputs = dataset._dataparser_outputs
    return evaluate_views(pipeline.model, dataset.cameras, list(outputs.image_filenames), out_dir=out_dir)


def training_step_function(pipeline, config: TrainerConfig) -> Callable[[int], None]:  # noqa: ANN001
    """One Trainer iteration of ``pipeline`` as a function of the step: training callbacks, loss, backward,
    optimizer and scheduler steps; no logging, evaluation or checkpoints (for timing loops)."""
    from nerfstudio.engine.callbacks import TrainingCallbackAttributes, TrainingCallbackLocation
    from nerfstudio.engine.optimizers import Optimizers

    pipeline.train()
    optimizers = Optimizers(config.optimizers, pipeline.get_param_groups())
    callbacks = pipeline.get_training_callbacks(
        TrainingCallbackAttributes(optimizers=optimizers, grad_scaler=None, pipeline=pipeline, trainer=None)
    )

    def run(step: int) -> None:
        for cb in callbacks:
            cb.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
        optimizers.zero_grad_all()
        _, loss_dict, _ = pipeline.get_train_loss_dict(step)
        sum(loss_dict.values()).backward()
        optimizers.optimizer_step_all()
        optimizers.scheduler_step_all(step)
        for cb in callbacks:
            cb.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)

    return run


def time_training_steps(config: TrainerConfig, data: Path, steps: int, warmup: int = 20) -> Dict[str, float]:
    """Run ``warmup + steps`` training iterations of ``config`` outside the Trainer and time the last ``steps``.

    The loop is the Trainer's (loss, backward, optimizer and scheduler steps, training callbacks) without logging,
    evaluation or checkpoints. Returns rays/s and seconds per iteration.
    """
    pipeline = build_pipeline(config, data)
    run = training_step_function(pipeline, config)

    for step in range(warmup):
        run(step)
    t0 = time.perf_counter()
    for step in range(warmup, warmup + steps):
        run(step)
    seconds = time.perf_counter() - t0
    rays = steps * pipeline.datamanager.get_train_rays_per_batch()
    return {"rays_per_second": rays / seconds, "seconds_per_iteration": seconds / steps}
