"""What every relight3d field offers: density, appearance features, colour and normals, with freezable geometry.

Fields work on flat batches of world-space points (the packed samples of :mod:`relight3d.ops`), which is what the
occupancy-grid renderer needs. They also implement nerfstudio's ``Field`` interface (``get_density`` /
``get_outputs`` on ``RaySamples``), so nerfstudio tools that expect a ``Field`` can use them.

Shared here, so that each field holds only its own encoding: the box and the zero density outside it, normals
(autograd or central differences of the density), the optional density blob (score distillation's initial
object), the optional material head (:mod:`relight3d.fields.material`), freezing geometry, the spherical-harmonics
direction encoding and the MLP builder.
"""

from __future__ import annotations

from typing import Dict, List, Literal, Optional, Tuple

import torch
import torch.nn.functional as F
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


NormalsMethod = Literal["autograd", "finite_difference"]
"""How normals are taken from the density: its autograd gradient, or central finite differences."""


def density_blob(positions: Float[Tensor, "n 3"], peak: float, radius: float) -> Float[Tensor, " n"]:
    """``peak * exp(-|x|^2 / (2 radius^2))``: the blob added to a field's pre-activation density."""
    return peak * torch.exp(-positions.square().sum(-1) / (2.0 * radius**2))


class RelightableField(Field):
    """Base class: subclasses implement ``density``, ``appearance_features``, ``color`` and the parameter split.

    Args:
        aabb: the field's box ``[xmin, ymin, zmin, xmax, ymax, zmax]``; density is zero outside it.
    """

    aabb: Tensor
    appearance_dim: int

    def __init__(self, aabb: Float[Tensor, "6"]) -> None:
        super().__init__()
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).clone())
        self._geometry_frozen = False
        self.blob_density = 0.0
        """Peak of a Gaussian blob at the origin added to the pre-activation density (0: no blob)."""
        self.blob_radius = 0.2
        """Standard deviation of the blob, in world units."""
        self.material: Optional[nn.Module] = None
        """The optional material head (:class:`relight3d.fields.material.MaterialHead`; the model attaches one when
        its config asks). Not part of :meth:`appearance_parameter_groups`: the radiance loss never trains it."""

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

    def with_blob(self, raw: Float[Tensor, " n"], positions: Float[Tensor, "n 3"]) -> Float[Tensor, " n"]:
        """A pre-activation density plus the density blob (unchanged when ``blob_density`` is 0)."""
        if self.blob_density == 0.0:
            return raw
        return raw + density_blob(positions, self.blob_density, self.blob_radius)

    @staticmethod
    def zero_outside(sigma: Float[Tensor, " n"], normalized: Float[Tensor, "n 3"]) -> Float[Tensor, " n"]:
        """Density with zeros where the normalised positions fall outside ``[-1, 1]^3``."""
        inside = (normalized.abs() <= 1.0).all(dim=-1)
        return torch.where(inside, sigma, torch.zeros_like(sigma))

    def normals(
        self,
        positions: Float[Tensor, "n 3"],
        create_graph: bool = False,
        method: NormalsMethod = "autograd",
        epsilon: float = 1e-2,
    ) -> Float[Tensor, "n 3"]:
        """Unit outward normals ``-grad(sigma) / |grad(sigma)|`` (zero where the gradient vanishes).

        Args:
            positions: world positions.
            create_graph: keep the autograd gradient differentiable (training through normals).
            method: 'autograd' (exact gradient) or 'finite_difference' (central differences, step ``epsilon``:
                smoother on hash grids; differentiable whenever gradients are enabled).
            epsilon: finite-difference step, in world units.
        """
        if method == "autograd":
            with torch.enable_grad():
                pos = positions.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(self.density(pos).sum(), pos, create_graph=create_graph)
        elif method == "finite_difference":
            offsets = torch.eye(3, device=positions.device) * epsilon
            shifted = torch.cat([positions[None] + offsets[:, None], positions[None] - offsets[:, None]])  # [6, n, 3]
            sigma = self.density(shifted.reshape(-1, 3)).reshape(2, 3, -1)
            grad = (sigma[0] - sigma[1]).t() / (2.0 * epsilon)
        else:
            raise ValueError(f"normals: unknown method {method!r} (autograd, finite_difference)")
        return torch.nan_to_num(-F.normalize(grad, dim=-1, eps=1e-8))

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
