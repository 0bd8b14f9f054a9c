"""relight3d-tensorf: TensoRF-VM with occupancy-grid sampling, progressive upsampling and box shrinking."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Tuple, Type

import numpy as np
import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.engine.optimizers import Optimizers
from torch import Tensor, nn

from relight3d.fields.tensorf_field import TensoRFField, TensoRFFieldSettings
from relight3d.models.base import OccupancyFieldModel, OccupancyFieldModelConfig


def replace_parameters(optimizers: Optimizers, old: List[nn.Parameter], new: List[nn.Parameter]) -> None:
    """Point every optimizer at ``new`` instead of ``old`` (same order), dropping the stale moments."""
    swap = {id(o): n for o, n in zip(old, new)}
    for opt in optimizers.optimizers.values():
        for group in opt.param_groups:
            group["params"] = [swap.get(id(p), p) for p in group["params"]]
        for o in old:
            opt.state.pop(o, None)
    for name, params in optimizers.parameters.items():
        optimizers.parameters[name] = [swap.get(id(p), p) for p in params]


@dataclass
class TensoRFModelConfig(OccupancyFieldModelConfig, TensoRFFieldSettings):
    """TensoRF-VM settings (the field's are :class:`TensoRFFieldSettings`), tuned to train on a CPU as on a GPU."""

    _target: Type = field(default_factory=lambda: TensoRFModel)
    """Model class to instantiate."""
    final_resolution: int = 192
    """Grid resolution per axis after the last upsampling."""
    upsampling_iters: Tuple[int, ...] = (150, 300, 500, 750)
    """Iterations at which the grids are upsampled (resolutions grow geometrically)."""
    shrink_iters: Tuple[int, ...] = (150,)
    """Iterations at which the box shrinks to the occupied region (TensoRF's alpha-mask pruning)."""
    shrink_margin: float = 0.05
    """Margin, as a fraction of the occupied box's size, kept around it when shrinking."""
    l1_weight: float = 8e-5
    """Weight of the L1 sparsity loss on the density grids."""
    tv_density_weight: float = 0.0
    """Weight of the total-variation loss on the density planes."""
    tv_appearance_weight: float = 0.0
    """Weight of the total-variation loss on the appearance planes."""


class TensoRFModel(OccupancyFieldModel):
    """TensoRF-VM radiance field."""

    config: TensoRFModelConfig
    field: TensoRFField

    def build_field(self, aabb: Tensor) -> TensoRFField:
        return TensoRFField(aabb, self.config)

    def upsampling_resolutions(self) -> List[int]:
        """Resolution after each upsampling iteration (log-spaced from init to final)."""
        c = self.config
        n = len(c.upsampling_iters)
        res = np.exp(np.linspace(np.log(c.init_resolution), np.log(c.final_resolution), n + 1))[1:]
        return [int(round(r)) for r in res]

    def shrink_to_occupied(self) -> Tensor:
        """The box to shrink to: the visual hull's box when the grid was carved from masks (it always contains the
        object), else the occupied cells' box; plus a margin and one cell, clipped to the scene box."""
        box = self.occupancy.uncarved_aabb() if self.occupancy.carved else self.occupancy.occupied_aabb()
        scene = self.occupancy.aabb
        cell = (scene[3:] - scene[:3]) / self.occupancy.res
        margin = (box[3:] - box[:3]) * self.config.shrink_margin + cell
        return torch.cat([torch.maximum(box[:3] - margin, scene[:3]), torch.minimum(box[3:] + margin, scene[3:])])

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        callbacks = super().get_training_callbacks(training_callback_attributes)
        c = self.config
        resolutions = dict(zip(c.upsampling_iters, self.upsampling_resolutions()))
        optimizers = training_callback_attributes.optimizers
        events = sorted(set(c.upsampling_iters) | set(c.shrink_iters))

        def regrid(step: int) -> None:
            if step not in resolutions and step not in c.shrink_iters:
                return
            if self.field.geometry_frozen:
                return
            res = resolutions.get(step, self.field.resolution)
            aabb = self.shrink_to_occupied() if step in c.shrink_iters else None
            old_params = self.field.grid_parameters()
            self.field.resample(res, aabb)
            if optimizers is not None:
                replace_parameters(optimizers, old_params, self.field.grid_parameters())

        if events:
            callbacks.append(
                TrainingCallback(
                    where_to_run=[TrainingCallbackLocation.AFTER_TRAIN_ITERATION],
                    iters=tuple(events),
                    func=regrid,
                )
            )
        return callbacks

    def get_loss_dict(self, outputs: Dict, batch: Dict, metrics_dict=None) -> Dict[str, Tensor]:  # noqa: ANN001
        loss = super().get_loss_dict(outputs, batch, metrics_dict)
        c = self.config
        if self.training and not self.field.geometry_frozen:
            if c.l1_weight > 0:
                loss["l1_density"] = c.l1_weight * self.field.l1_density()
            if c.tv_density_weight > 0:
                loss["tv_density"] = c.tv_density_weight * self.field.tv_density()
        if self.training and c.tv_appearance_weight > 0:
            loss["tv_appearance"] = c.tv_appearance_weight * self.field.tv_appearance()
        return loss
