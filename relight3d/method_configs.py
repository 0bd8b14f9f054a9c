"""The ns-train methods of relight3d, registered through the ``nerfstudio.method_configs`` entry point.

Defaults are sized for a CPU (a 2-core machine trains an object scene usefully in minutes) and work unchanged on a
GPU, where the device is picked automatically.
"""

from __future__ import annotations

import torch
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from relight3d.data.datamanager import InMemoryDataManagerConfig
from relight3d.engine.trainer import Relight3DTrainerConfig
from relight3d.models.ngp import NGPModelConfig
from relight3d.models.tensorf import TensoRFModelConfig


def default_device_type() -> str:
    """'cuda' where a GPU is visible, else 'cpu' (nerfstudio's own default is always 'cuda')."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _adam(lr: float, final_lr: float, max_steps: int, eps: float = 1e-15) -> dict:
    return {
        "optimizer": AdamOptimizerConfig(lr=lr, eps=eps),
        "scheduler": ExponentialDecaySchedulerConfig(lr_final=final_lr, max_steps=max_steps),
    }


def _trainer_config(method_name: str, model, optimizers: dict, max_steps: int) -> Relight3DTrainerConfig:  # noqa: ANN001
    """What relight3d's methods share: CPU-sized batches, the in-memory datamanager, atomic checkpoints."""
    return Relight3DTrainerConfig(
        method_name=method_name,
        steps_per_eval_batch=100,
        steps_per_eval_image=500,
        steps_per_eval_all_images=1_000_000,
        steps_per_save=250,
        max_num_iterations=max_steps,
        mixed_precision=False,
        machine=MachineConfig(device_type=default_device_type()),
        pipeline=VanillaPipelineConfig(
            datamanager=InMemoryDataManagerConfig(train_num_rays_per_batch=4096, eval_num_rays_per_batch=4096),
            model=model,
        ),
        optimizers=optimizers,
        viewer=ViewerConfig(num_rays_per_chunk=1 << 14),
        vis="tensorboard",
    )


def tensorf_config(max_steps: int = 1500) -> Relight3DTrainerConfig:
    """relight3d-tensorf's trainer config."""
    optimizers = {
        "density": _adam(0.02, 0.002, max_steps, eps=1e-8),
        "appearance_grid": _adam(0.02, 0.002, max_steps, eps=1e-8),
        "decoder": _adam(1e-3, 1e-4, max_steps, eps=1e-8),
    }
    return _trainer_config("relight3d-tensorf", TensoRFModelConfig(), optimizers, max_steps)


def ngp_config(max_steps: int = 2000) -> Relight3DTrainerConfig:
    """relight3d-ngp's trainer config."""
    optimizers = {"density": _adam(1e-2, 1e-3, max_steps), "appearance": _adam(1e-2, 1e-3, max_steps)}
    return _trainer_config("relight3d-ngp", NGPModelConfig(), optimizers, max_steps)


tensorf_method = MethodSpecification(
    config=tensorf_config(),
    description="relight3d TensoRF-VM with occupancy-grid ray marching (CPU-friendly; normals, freezable geometry)",
)
ngp_method = MethodSpecification(
    config=ngp_config(),
    description="relight3d Instant-NGP hash grid (tinycudann or pure torch) with occupancy-grid ray marching",
)
