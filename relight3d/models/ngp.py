"""relight3d-ngp: Instant-NGP (hash grid + tiny MLPs) with occupancy-grid sampling."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Literal, Type

from torch import Tensor

from relight3d.fields.ngp_field import NGPField
from relight3d.models.base import OccupancyFieldModel, OccupancyFieldModelConfig


@dataclass
class NGPModelConfig(OccupancyFieldModelConfig):
    """Instant-NGP settings, sized so that the pure-torch hash grid trains usefully on a CPU."""

    _target: Type = field(default_factory=lambda: NGPModel)
    """Model class to instantiate."""
    n_levels: int = 12
    """Hash-grid levels."""
    features_per_level: int = 2
    """Features per level."""
    log2_table_size: int = 17
    """log2 of the hash-table size per level."""
    base_resolution: int = 16
    """Coarsest grid resolution."""
    max_resolution: int = 512
    """Finest grid resolution."""
    hidden: int = 64
    """Width of the density and colour MLPs."""
    geo_feature_dim: int = 15
    """Features passed from the density MLP to the colour MLP."""
    sh_degree: int = 4
    """Spherical-harmonics degree of the view direction."""
    appearance_grid: bool = False
    """Give appearance its own hash grid (lets appearance be refit richly with geometry frozen)."""
    implementation: Literal["auto", "tcnn", "torch"] = "auto"
    """Hash grid implementation: tinycudann on CUDA when available ('auto'), or pure torch."""


class NGPModel(OccupancyFieldModel):
    """Instant-NGP radiance field."""

    config: NGPModelConfig
    field: NGPField

    def field_kwargs(self) -> Dict[str, Any]:
        """Constructor arguments of the field from this config (subclasses add their own)."""
        c = self.config
        return dict(
            n_levels=c.n_levels,
            features_per_level=c.features_per_level,
            log2_table_size=c.log2_table_size,
            base_resolution=c.base_resolution,
            max_resolution=c.max_resolution,
            geo_feature_dim=c.geo_feature_dim,
            hidden=c.hidden,
            sh_degree=c.sh_degree,
            appearance_grid=c.appearance_grid,
            implementation=c.implementation,
        )

    def build_field(self, aabb: Tensor) -> NGPField:
        return NGPField(aabb, **self.field_kwargs())
