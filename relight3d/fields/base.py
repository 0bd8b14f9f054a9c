"""What every relight3d field offers: density, appearance features, colour and normals, with freezable geometry.

Fields work on flat batches of world-space points (the packed samples of :mod:`relight3d.ops`), which is what the
occupancy-grid renderer needs. They also implement nerfstudio's ``Field`` interface (``get_density`` /
``get_outputs`` on ``RaySamples``), so nerfstudio tools that expect a ``Field`` can use them.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from jaxtyping import Float
from nerfstudio.cameras.rays import RaySamples
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.fields.base_field import Field
from torch import Tensor, nn


def spherical_harmonics_basis(directions: Float[Tensor, "n 3"], degree: int) -> Float[Tensor, "n d"]:
    """Real spherical-harmonics basis of unit directions, ``degree`` in 1..4 (``degree**2`` coefficients)."""
    x, y, z = directions.unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree > 1:
        out += [-0.4886025119029199 * y, 0.4886025119029199 * z, -0.4886025119029199 * x]
    if degree > 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            1.0925484305920792 * x * y,
            -1.0925484305920792 * y * z,
            0.31539156525252005 * (2.0 * zz - xx - yy),
            -1.0925484305920792 * x * z,
            0.5462742152960396 * (xx - yy),
        ]
    if degree > 3:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            -0.5900435899266435 * y * (3 * xx - yy),
            2.890611442640554 * x * y * z,
            -0.4570457994644658 * y * (4 * zz - xx - yy),
            0.3731763325901154 * z * (2 * zz - 3 * xx - 3 * yy),
            -0.4570457994644658 * x * (4 * zz - xx - yy),
            1.445305721320277 * z * (xx - yy),
            -0.5900435899266435 * x * (xx - 3 * yy),
        ]
    return torch.stack(out, dim=-1)


def mlp(in_dim: int, hidden: int, n_hidden_layers: int, out_dim: int) -> nn.Sequential:
    """A ReLU MLP with ``n_hidden_layers`` hidden layers of width ``hidden``."""
    layers: List[nn.Module] = []
    d = in_dim
    for _ in range(n_hidden_layers):
        layers += [nn.Linear(d, hidden), nn.ReLU(inplace=True)]
        d = hidden
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class RelightableField(Field):
    """Base class: subclasses implement ``density``, ``appearance_features``, ``color`` and the parameter split."""

    aabb: Tensor
    appearance_dim: int

    def __init__(self) -> None:
        super().__init__()
        self._geometry_frozen = False

    # --- the interface the renderer uses -----------------------------------------------------------------
    def density(self, positions: Float[Tensor, "n 3"]) -> Float[Tensor, " n"]:
        """Volume density at world positions."""
        raise NotImplementedError

    def appearance_features(self, positions: Float[Tensor, "n 3"]) -> Float[Tensor, "n f"]:
        """View-independent appearance features at world positions (the input of the colour decoder)."""
        raise NotImplementedError

    def color(self, features: Float[Tensor, "n f"], directions: Float[Tensor, "n 3"]) -> Float[Tensor, "n 3"]:
        """Radiance in [0, 1] from appearance features and unit viewing directions."""
        raise NotImplementedError

    def density_and_features(self, positions: Float[Tensor, "n 3"]) -> Tuple[Float[Tensor, " n"], Tensor]:
        """Density and appearance features together; fields whose two share work override this."""
        return self.density(positions), self.appearance_features(positions)

    def geometry_parameters(self) -> List[nn.Parameter]:
        """Parameters that define density (frozen by :meth:`freeze_geometry`)."""
        raise NotImplementedError

    def appearance_parameter_groups(self) -> Dict[str, List[nn.Parameter]]:
        """Parameter groups that define appearance, by optimizer name."""
        raise NotImplementedError

    # --- shared behaviour ----------------------------------------------------------------------------------
    def normalize_positions(self, positions: Float[Tensor, "n 3"]) -> Float[Tensor, "n 3"]:
        """World positions to ``[-1, 1]^3`` over the field's box."""
        return (positions - self.aabb[:3]) / (self.aabb[3:] - self.aabb[:3]) * 2.0 - 1.0

    def normals(self, positions: Float[Tensor, "n 3"], create_graph: bool = False) -> Float[Tensor, "n 3"]:
        """Unit normals ``-grad(sigma) / |grad(sigma)|`` from the density gradient (autograd)."""
        with torch.enable_grad():
            pos = positions.detach().requires_grad_(True)
            sigma = self.density(pos)
            (grad,) = torch.autograd.grad(sigma.sum(), pos, create_graph=create_graph)
        return -torch.nn.functional.normalize(grad, dim=-1, eps=1e-8)

    @property
    def geometry_frozen(self) -> bool:
        return self._geometry_frozen

    def freeze_geometry(self, frozen: bool = True) -> None:
        """Stop (or restart) gradients to the density parameters, so that only appearance is refit."""
        self._geometry_frozen = frozen
        for p in self.geometry_parameters():
            p.requires_grad_(not frozen)

    # --- nerfstudio's Field interface ------------------------------------------------------------------
    def get_density(self, ray_samples: RaySamples) -> Tuple[Tensor, Optional[Tensor]]:
        positions = ray_samples.frustums.get_positions()
        shape = positions.shape[:-1]
        flat = positions.reshape(-1, 3)
        sigma = self.density(flat).reshape(*shape, 1)
        return sigma, flat

    def get_outputs(
        self, ray_samples: RaySamples, density_embedding: Optional[Tensor] = None
    ) -> Dict[FieldHeadNames, Tensor]:
        positions = ray_samples.frustums.get_positions()
        shape = positions.shape[:-1]
        flat = positions.reshape(-1, 3) if density_embedding is None else density_embedding
        dirs = ray_samples.frustums.directions.reshape(-1, 3)
        rgb = self.color(self.appearance_features(flat), dirs)
        return {FieldHeadNames.RGB: rgb.reshape(*shape, 3)}
