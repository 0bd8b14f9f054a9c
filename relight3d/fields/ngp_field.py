"""Instant-NGP field: a hash-grid encoding with a tiny density MLP and a tiny colour MLP.

Geometry is the hash grid plus the density MLP; appearance is the colour MLP, fed by the geometry features and an
optional second hash grid (``appearance_grid``) so that appearance can be refit with geometry frozen.
"""

from __future__ import annotations

from typing import Dict, List, Literal, Tuple

import torch
from jaxtyping import Float
from torch import Tensor, nn

from relight3d.fields.base import RelightableField, mlp, spherical_harmonics_basis
from relight3d.fields.hash_encoding import HashEncoding


def trunc_exp(x: Tensor) -> Tensor:
    """``exp`` with the input clamped, as a density activation that cannot overflow."""
    return torch.exp(x.clamp(-15.0, 15.0))


class NGPField(RelightableField):
    """Instant-NGP field over an axis-aligned box.

    Args:
        aabb: ``[xmin, ymin, zmin, xmax, ymax, zmax]``.
        n_levels, features_per_level, log2_table_size, base_resolution, max_resolution: hash grid.
        geo_feature_dim: features passed from the density MLP to the colour MLP.
        hidden: width of both MLPs.
        sh_degree: degree of the view-direction encoding.
        appearance_grid: add a second hash grid that only the colour MLP reads.
        implementation: hash grid implementation ('auto', 'tcnn', 'torch').
    """

    def __init__(
        self,
        aabb: Float[Tensor, "6"],
        n_levels: int = 16,
        features_per_level: int = 2,
        log2_table_size: int = 19,
        base_resolution: int = 16,
        max_resolution: int = 1024,
        geo_feature_dim: int = 15,
        hidden: int = 64,
        sh_degree: int = 4,
        appearance_grid: bool = False,
        implementation: Literal["auto", "tcnn", "torch"] = "auto",
    ) -> None:
        super().__init__()
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).clone())
        grid_args = dict(
            n_levels=n_levels,
            features_per_level=features_per_level,
            log2_table_size=log2_table_size,
            base_resolution=base_resolution,
            max_resolution=max_resolution,
            implementation=implementation,
        )
        self.encoding = HashEncoding(**grid_args)
        self.density_mlp = mlp(self.encoding.output_dim, hidden, 1, 1 + geo_feature_dim)
        self.appearance_encoding = HashEncoding(**grid_args) if appearance_grid else None
        app_in = geo_feature_dim + (self.appearance_encoding.output_dim if appearance_grid else 0)
        self.appearance_dim = app_in
        self.sh_degree = sh_degree
        self.color_mlp = mlp(app_in + sh_degree**2, hidden, 2, 3)
        self.level_mask: Tensor | None = None
        """Optional per-level weights (coarse-to-fine training); None uses every level."""

    def _encode(self, positions: Tensor) -> Tensor:
        x = (self.normalize_positions(positions) + 1.0) * 0.5
        h = self.encoding(x)
        if self.level_mask is not None:
            h = h * self.level_mask.repeat_interleave(self.encoding.features_per_level)
        return self.density_mlp(h)

    def density(self, positions: Float[Tensor, "n 3"]) -> Float[Tensor, " n"]:
        inside = (self.normalize_positions(positions).abs() <= 1.0).all(dim=-1)
        sigma = trunc_exp(self._encode(positions)[:, 0] - 1.0)
        return torch.where(inside, sigma, torch.zeros_like(sigma))

    def density_and_features(self, positions: Float[Tensor, "n 3"]) -> Tuple[Float[Tensor, " n"], Tensor]:
        """One hash-grid encoding serves both (the density MLP's extra outputs are the geometry features)."""
        h = self._encode(positions)
        inside = (self.normalize_positions(positions).abs() <= 1.0).all(dim=-1)
        sigma = torch.where(inside, trunc_exp(h[:, 0] - 1.0), torch.zeros_like(h[:, 0]))
        return sigma, self._with_appearance_grid(positions, h[:, 1:])

    def appearance_features(self, positions: Float[Tensor, "n 3"]) -> Float[Tensor, "n f"]:
        if self.geometry_frozen:
            with torch.no_grad():
                geo = self._encode(positions)[:, 1:]
        else:
            geo = self._encode(positions)[:, 1:]
        return self._with_appearance_grid(positions, geo)

    def _with_appearance_grid(self, positions: Tensor, geo: Tensor) -> Tensor:
        if self.appearance_encoding is None:
            return geo
        x = (self.normalize_positions(positions) + 1.0) * 0.5
        return torch.cat([geo, self.appearance_encoding(x)], dim=-1)

    def color(self, features: Float[Tensor, "n f"], directions: Float[Tensor, "n 3"]) -> Float[Tensor, "n 3"]:
        d = spherical_harmonics_basis(directions, self.sh_degree)
        return torch.sigmoid(self.color_mlp(torch.cat([features, d], dim=-1)))

    def geometry_parameters(self) -> List[nn.Parameter]:
        return list(self.encoding.parameters()) + list(self.density_mlp.parameters())

    def appearance_parameter_groups(self) -> Dict[str, List[nn.Parameter]]:
        params = list(self.color_mlp.parameters())
        if self.appearance_encoding is not None:
            params += list(self.appearance_encoding.parameters())
        return {"appearance": params}
