"""relight3d-ngp: Instant-NGP (hash grid + tiny MLPs) with occupancy-grid sampling."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Type

from torch import Tensor

from relight3d.fields.ngp_field import NGPField, NGPFieldSettings
from relight3d.models.base import OccupancyFieldModel, OccupancyFieldModelConfig


@dataclass
class NGPModelConfig(OccupancyFieldModelConfig, NGPFieldSettings):
    """Instant-NGP settings: the renderer's and the field's (:class:`NGPFieldSettings`, sized for a CPU)."""

    _target: Type = field(default_factory=lambda: NGPModel)
    """Model class to instantiate."""


class NGPModel(OccupancyFieldModel):
    """Instant-NGP radiance field."""

    config: NGPModelConfig
    field: NGPField

    def build_field(self, aabb: Tensor) -> NGPField:
        return NGPField(aabb, self.config)
