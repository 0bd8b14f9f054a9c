"""The ns-train methods of relight3d, registered through the ``nerfstudio.method_configs`` entry point.

Defaults are sized for a CPU (a 2-core machine trains an object scene usefully in minutes) and work unchanged on a
GPU, where the device is picked automatically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Type

import torch
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from relight3d.data.datamanager import InMemoryDataManagerConfig
from relight3d.engine.trainer import Relight3DTrainerConfig
from relight3d.errors import ConfigError
from relight3d.models.ngp import NGPModelConfig
from relight3d.models.tensorf import TensoRFModelConfig

if TYPE_CHECKING:
    from relight3d.priors.base import RelightingPriorConfig


def default_device_type() -> str:
    """'cuda' where a GPU is visible, else 'cpu' (nerfstudio's own default is always 'cuda')."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class FusedAdamConfig(AdamOptimizerConfig):
    """nerfstudio's Adam config with torch's fused kernel switched on."""

    _target: Type = field(default_factory=lambda: torch.optim.Adam)
    """Optimizer class to instantiate."""
    fused: Optional[bool] = True
    """Use torch's fused Adam: one pass over each parameter instead of about ten (on 2 CPU cores, a step over
    relight3d-ngp's 2.3 M hash-table entries takes 6-7 ms instead of 29-45 ms). None leaves the choice to torch."""


def _adam(lr: float, final_lr: float, max_steps: int, eps: float = 1e-15) -> dict:
    return {
        "optimizer": FusedAdamConfig(lr=lr, eps=eps),
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


def tensorf_config(max_steps: int = 5000) -> Relight3DTrainerConfig:
    """relight3d-tensorf's trainer config.

    5000 iterations take about 6 minutes on 2 CPU cores. The learning rates decay over ``max_steps``: decaying over
    the iterations actually run matters (bunny, 5500 iterations: 31.0 dB in the mask with the decay spread over
    them, 28.5 dB when it ended at iteration 1500).
    """
    optimizers = {
        "density": _adam(0.02, 0.002, max_steps, eps=1e-8),
        "appearance_grid": _adam(0.02, 0.002, max_steps, eps=1e-8),
        "decoder": _adam(1e-3, 1e-4, max_steps, eps=1e-8),
    }
    return _trainer_config("relight3d-tensorf", TensoRFModelConfig(), optimizers, max_steps)


def ngp_config(max_steps: int = 5500) -> Relight3DTrainerConfig:
    """relight3d-ngp's trainer config.

    5500 iterations take about 7 minutes on 2 CPU cores. As for TensoRF, the learning rates decay over the
    iterations actually run (bunny, 360 s, about 4,800-5,400 iterations: 29.6 dB in the mask when they decayed over
    2,000 at 512 samples per diagonal, 30.8 over 4,000 and 31.2 over 5,500 at 256).
    """
    optimizers = {"density": _adam(1e-2, 1e-3, max_steps), "appearance": _adam(1e-2, 1e-3, max_steps)}
    return _trainer_config("relight3d-ngp", NGPModelConfig(), optimizers, max_steps)


def sds_config(max_steps: int = 5000, field: str = "ngp") -> Relight3DTrainerConfig:
    """relight3d-sds's trainer config: RealFusion's single-image reconstruction with score distillation.

    ``field`` is 'ngp' (default) or 'tensorf'. Optimizers follow RealFusion: Adam at a constant learning rate,
    1e-3 for the MLPs and 10x that for the grids.
    """
    from relight3d.models.sds import SDSNGPModelConfig, SDSTensoRFModelConfig
    from relight3d.pipelines.score_distillation import ScoreDistillationPipelineConfig

    def constant(lr: float) -> dict:
        return {"optimizer": FusedAdamConfig(lr=lr, eps=1e-15), "scheduler": None}

    if field == "ngp":
        model, name = SDSNGPModelConfig(), "relight3d-sds"
        optimizers = {"grid": constant(1e-2), "density": constant(1e-3), "appearance": constant(1e-3)}
    elif field == "tensorf":
        model, name = SDSTensoRFModelConfig(), "relight3d-sds-tensorf"
        optimizers = {"density": constant(2e-2), "appearance_grid": constant(2e-2), "decoder": constant(1e-3)}
    else:
        raise ConfigError("field", f"relight3d-sds's field must be 'ngp' or 'tensorf', got {field!r}")
    config = _trainer_config(name, model, optimizers, max_steps)
    config.pipeline = ScoreDistillationPipelineConfig(model=model)
    return config


def gaffer_config(
    stage1_steps: int = 2500, stage2_steps: int = 500, prior: Optional[RelightingPriorConfig] = None
) -> Relight3DTrainerConfig:
    """relight3d-gaffer's trainer config: Neural Gaffer's two-stage relighting of a trained field.

    Learning rates follow Neural Gaffer's stage 1: 2e-2 for the appearance grids (TensoRF) or the appearance hash
    grid and MLP (NGP), 1e-3 for the appearance basis and decoder, decayed tenfold over both stages. Density is
    frozen, so it has no optimizer. ``--max-num-iterations`` is ``stage1_steps + stage2_steps``. ``prior`` replaces
    the default prior (:data:`relight3d.priors.registry.DEFAULT_PRIOR`).
    """
    from relight3d.pipelines.relighting import RelightingPipelineConfig

    max_steps = stage1_steps + stage2_steps
    optimizers = {
        "appearance_grid": _adam(0.02, 0.002, max_steps, eps=1e-8),
        "decoder": _adam(1e-3, 1e-4, max_steps, eps=1e-8),
        "appearance": _adam(0.02, 0.002, max_steps),
    }
    config = _trainer_config("relight3d-gaffer", TensoRFModelConfig(), optimizers, max_steps)
    datamanager = config.pipeline.datamanager
    datamanager.data = None  # taken from the trained run unless --data is given
    config.pipeline = RelightingPipelineConfig(
        datamanager=datamanager, model=config.pipeline.model, stage1_steps=stage1_steps, stage2_steps=stage2_steps
    )
    if prior is not None:
        config.pipeline.prior = prior
    config.steps_per_eval_image = max_steps + 1
    config.steps_per_eval_batch = max_steps + 1
    return config


METHOD_DESCRIPTIONS = {
    "relight3d-tensorf": "relight3d TensoRF-VM with occupancy-grid ray marching (CPU-friendly; normals, freezable "
    "geometry)",
    "relight3d-ngp": "relight3d Instant-NGP hash grid (tinycudann or pure torch) with occupancy-grid ray marching",
    "relight3d-gaffer": "relight3d two-stage relighting of a trained field with a 2D relighting prior (Neural Gaffer)",
    "relight3d-sds": "relight3d single-image 360-degree reconstruction with a Stable Diffusion SDS prior (RealFusion)",
    "relight3d-sds-tensorf": "relight3d-sds with a TensoRF field instead of the NGP hash grid",
}
"""What ``ns-train --help`` says of each method."""


def _specification(config: Relight3DTrainerConfig) -> MethodSpecification:
    return MethodSpecification(config=config, description=METHOD_DESCRIPTIONS[config.method_name])


# The nerfstudio.method_configs entry points (setup.py) name these.
tensorf_method = _specification(tensorf_config())
ngp_method = _specification(ngp_config())
gaffer_method = _specification(gaffer_config())
sds_method = _specification(sds_config())
sds_tensorf_method = _specification(sds_config(field="tensorf"))
