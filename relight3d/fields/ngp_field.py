"""Instant-NGP field: a hash-grid encoding with a tiny density MLP and a tiny colour MLP.

Geometry is the hash grid plus the density MLP; appearance is the colour MLP, fed by the geometry features and an
optional second hash grid (``appearance_grid``) so that appearance can be refit with geometry frozen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Literal, Optional, Tuple

import torch
from jaxtyping import Float
from torch import Tensor, nn

from relight3d.fields.base import RelightableField, mlp, spherical_harmonics_basis
from relight3d.fields.hash_encoding import HashEncoding


def trunc_exp(x: Tensor) -> Tensor:
    """``exp`` with the input clamped, as a density activation that cannot overflow."""
    return torch.exp(x.clamp(-15.0, 15.0))


@dataclass
class NGPFieldSettings:
    """The settings of an :class:`NGPField`, sized so that it trains usefully on a CPU.

    relight3d-ngp's model config extends them, so they are also its ``--pipeline.model.*`` options.
    """

    n_levels: int = 12
    """Hash-grid levels."""
    features_per_level: int = 2
    """Features per level."""
    log2_table_size: int = 17
    """log2 of the hash-table size per level (coarse levels whose dense grid fits in the table are indexed densely,
    the others hashed)."""
    base_resolution: int = 16
    """Coarsest grid resolution."""
    max_resolution: int = 512
    """Finest grid resolution; the levels' resolutions grow geometrically from ``base_resolution`` to it (the
    per-level scale)."""
    hidden: int = 64
    """Width of the density and colour MLPs."""
    geo_feature_dim: int = 15
    """Geometry features passed from the density MLP to the colour MLP (they stay fixed while geometry is
    frozen, unless ``appearance_grid`` adds features of its own)."""
    sh_degree: int = 4
    """Spherical-harmonics degree of the view direction (``sh_degree**2`` coefficients; 1 makes the colour
    view-independent)."""
    appearance_grid: bool = False
    """Give appearance its own hash grid (lets appearance be refit richly with geometry frozen)."""
    implementation: Literal["auto", "tcnn", "torch"] = "auto"
    """Hash grid implementation: tinycudann on CUDA when it imports ('auto'), else relight3d's op
    (:func:`relight3d.ops.hash_encoding`: compiled C++ / CUDA kernels, its torch reference without the extension);
    'torch' always takes relight3d's op."""


class NGPField(RelightableField):
    """Instant-NGP field over the box ``aabb`` (``[xmin, ymin, zmin, xmax, ymax, zmax]``)."""

    def __init__(self, aabb: Float[Tensor, "6"], settings: Optional[NGPFieldSettings] = None) -> None:
        super().__init__(aabb)
        s = NGPFieldSettings() if settings is None else settings

        def hash_grid() -> HashEncoding:
            return HashEncoding(
                s.n_levels, s.features_per_level, s.log2_table_size, s.base_resolution, s.max_resolution,
                s.implementation,
            )  # fmt: skip

        self.encoding = hash_grid()
        self.density_mlp = mlp(self.encoding.output_dim, s.hidden, 1, 1 + s.geo_feature_dim)
        self.appearance_encoding = hash_grid() if s.appearance_grid else None
        self.appearance_dim = s.geo_feature_dim + (self.encoding.output_dim if s.appearance_grid else 0)
        self.sh_degree = s.sh_degree
        self.color_mlp = mlp(self.appearance_dim + s.sh_degree**2, s.hidden, 2, 3)
        self.level_mask: Tensor | None = None
        """Optional per-level weights (coarse-to-fine training); None uses every level."""

    def _unit(self, positions: Tensor) -> Tensor:
        """World positions to ``[0, 1]^3`` (the hash grid's domain)."""
        return (self.normalize_positions(positions) + 1.0) * 0.5

    def _grid(self, positions: Tensor) -> Tensor:
        h = self.encoding(self._unit(positions))
        if self.level_mask is not None:
            h = h * self.level_mask.repeat_interleave(self.encoding.features_per_level)
        return h

    def _encode(self, positions: Tensor) -> Tensor:
        return self.density_mlp(self._grid(positions))

    def _density(self, positions: Tensor, h: Tensor) -> Tensor:
        """Density from the density MLP's first output ``h``: ``exp(h + blob - 1)``, zero outside the box."""
        sigma = trunc_exp(self.with_blob(h, positions) - 1.0)
        return self.zero_outside(sigma, self.normalize_positions(positions))

    def density(self, positions: Float[Tensor, "n 3"]) -> Float[Tensor, " n"]:
        return self._density(positions, self._encode(positions)[:, 0])

    def density_and_features(self, positions: Float[Tensor, "n 3"]) -> Tuple[Float[Tensor, " n"], Tensor]:
        """One hash-grid encoding serves both (the density MLP's extra outputs are the geometry features)."""
        h = self._encode(positions)
        return self._density(positions, h[:, 0]), self._with_appearance_grid(positions, h[:, 1:])

    def appearance_features(self, positions: Float[Tensor, "n 3"]) -> Float[Tensor, "n f"]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.geometry_frozen):
            geo = self._encode(positions)[:, 1:]
        return self._with_appearance_grid(positions, geo)

    def _with_appearance_grid(self, positions: Tensor, geo: Tensor) -> Tensor:
        if self.appearance_encoding is None:
            return geo
        return torch.cat([geo, self.appearance_encoding(self._unit(positions))], dim=-1)

    def color(self, features: Float[Tensor, "n f"], directions: Float[Tensor, "n 3"]) -> Float[Tensor, "n 3"]:
        d = spherical_harmonics_basis(directions, self.sh_degree)
        return torch.sigmoid(self.color_mlp(torch.cat([features, d], dim=-1)))

    def geometry_parameters(self) -> List[nn.Parameter]:
        return list(self.encoding.parameters()) + list(self.density_mlp.parameters())

    def _appearance_grid_parameters(self) -> List[nn.Parameter]:
        return [] if self.appearance_encoding is None else list(self.appearance_encoding.parameters())

    def appearance_parameter_groups(self) -> Dict[str, List[nn.Parameter]]:
        return {"appearance": list(self.color_mlp.parameters()) + self._appearance_grid_parameters()}

    def grid_parameters(self) -> List[nn.Parameter]:
        """The hash-grid tables (trained with a larger learning rate than the MLPs)."""
        return list(self.encoding.parameters()) + self._appearance_grid_parameters()
