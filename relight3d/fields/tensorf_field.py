"""TensoRF field with the vector-matrix (VM) decomposition.

Density is the softplus of a sum over three plane-line pairs (XY-Z, XZ-Y, YZ-X) of ``n_density_components``
rank-one terms. Appearance uses its own planes and lines, whose products are mapped by a linear basis to
``appearance_dim`` features; a small MLP decodes features and the view direction into RGB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from relight3d.fields.base import RelightableField, mlp, spherical_harmonics_basis
from relight3d.ops import sample_vm_features

# Plane axes and the matching line axis for each of the three VM pairs.
_PLANE_AXES = ((0, 1), (0, 2), (1, 2))
_LINE_AXES = (2, 1, 0)


@dataclass
class TensoRFFieldSettings:
    """The settings of a :class:`TensoRFField`.

    relight3d-tensorf's model config extends them, so they are also its ``--pipeline.model.*`` options.
    """

    init_resolution: int = 64
    """Grid resolution per axis at the start of training (the model's upsampling raises it; loading a checkpoint
    adopts the checkpoint's)."""
    n_density_components: int = 16
    """Rank of the density VM decomposition (per plane)."""
    n_appearance_components: int = 48
    """Rank of the appearance VM decomposition (per plane)."""
    appearance_dim: int = 27
    """Size of the appearance feature produced by the basis (a linear map of the ``3 * n_appearance_components``
    plane-line products)."""
    decoder_hidden: int = 64
    """Width of the colour decoder."""
    decoder_layers: int = 2
    """Hidden layers of the colour decoder."""
    sh_degree: int = 3
    """Spherical-harmonics degree of the view-direction input (``sh_degree**2`` coefficients; 0 = view-independent
    colour)."""
    density_shift: float = -10.0
    """Shift before the density softplus, so that training starts from nearly empty space."""
    density_scale: float = 25.0
    """Factor on the softplus output (TensoRF's distance scale)."""
    init_scale: float = 0.1
    """Standard deviation of the initial plane and line values."""


class TensoRFField(RelightableField):
    """TensoRF-VM field over the box ``aabb`` (``[xmin, ymin, zmin, xmax, ymax, zmax]``).

    Its grids start at ``settings.init_resolution`` per axis; :meth:`resample` changes ``resolution``.
    """

    def __init__(self, aabb: Float[Tensor, "6"], settings: Optional[TensoRFFieldSettings] = None) -> None:
        super().__init__(aabb)
        s = TensoRFFieldSettings() if settings is None else settings
        self.resolution = s.init_resolution
        self.appearance_dim = s.appearance_dim
        self.density_shift = s.density_shift
        self.density_scale = s.density_scale
        self.sh_degree = s.sh_degree
        r, cd, ca = s.init_resolution, s.n_density_components, s.n_appearance_components
        self.density_planes = nn.Parameter(s.init_scale * torch.randn(3, cd, r, r))
        self.density_lines = nn.Parameter(s.init_scale * torch.randn(3, cd, r, 1))
        self.appearance_planes = nn.Parameter(s.init_scale * torch.randn(3, ca, r, r))
        self.appearance_lines = nn.Parameter(s.init_scale * torch.randn(3, ca, r, 1))
        self.basis = nn.Linear(3 * ca, s.appearance_dim, bias=False)
        dir_dim = s.sh_degree**2 if s.sh_degree > 0 else 0
        self.decoder = mlp(s.appearance_dim + dir_dim, s.decoder_hidden, s.decoder_layers, 3)

    # --- VM evaluation -------------------------------------------------------------------------------------
    @staticmethod
    def _vm(planes: Tensor, lines: Tensor, xyz: Tensor) -> Tensor:
        """Per-point products plane * line for the three pairs, concatenated: ``[n, 3 * components]``.

        :func:`relight3d.ops.sample_vm_features` (the pairs are XY-Z, XZ-Y, YZ-X, as in ``_PLANE_AXES`` /
        ``_LINE_AXES``): fused compiled kernels where the extension is built, one batched ``grid_sample`` otherwise
        and whenever ``xyz`` requires grad (normals by autograd).
        """
        return sample_vm_features(planes, lines, xyz)

    def density(self, positions: Float[Tensor, "n 3"]) -> Float[Tensor, " n"]:
        """``density_scale * softplus(sum of the VM products + blob + density_shift)``, zero outside the box."""
        xyz = self.normalize_positions(positions)
        feats = self.with_blob(self._vm(self.density_planes, self.density_lines, xyz).sum(-1), positions)
        return self.zero_outside(F.softplus(feats + self.density_shift) * self.density_scale, xyz)

    def appearance_features(self, positions: Float[Tensor, "n 3"]) -> Float[Tensor, "n f"]:
        xyz = self.normalize_positions(positions)
        return self.basis(self._vm(self.appearance_planes, self.appearance_lines, xyz))

    def color(self, features: Float[Tensor, "n f"], directions: Float[Tensor, "n 3"]) -> Float[Tensor, "n 3"]:
        if self.sh_degree > 0:
            features = torch.cat([features, spherical_harmonics_basis(directions, self.sh_degree)], dim=-1)
        return torch.sigmoid(self.decoder(features))

    # --- parameters -------------------------------------------------------------------------------------
    def geometry_parameters(self) -> List[nn.Parameter]:
        return [self.density_planes, self.density_lines]

    def appearance_parameter_groups(self) -> Dict[str, List[nn.Parameter]]:
        return {
            "appearance_grid": [self.appearance_planes, self.appearance_lines],
            "decoder": list(self.basis.parameters()) + list(self.decoder.parameters()),
        }

    # --- regularisers -----------------------------------------------------------------------------------
    def l1_density(self) -> Tensor:
        """Mean absolute value of the density planes and lines (sparsity)."""
        return self.density_planes.abs().mean() + self.density_lines.abs().mean()

    @staticmethod
    def _tv(planes: Tensor) -> Tensor:
        dh = (planes[..., 1:, :] - planes[..., :-1, :]).square().mean()
        dw = (planes[..., :, 1:] - planes[..., :, :-1]).square().mean()
        return dh + dw

    def tv_density(self) -> Tensor:
        """Total variation of the density planes."""
        return self._tv(self.density_planes)

    def tv_appearance(self) -> Tensor:
        """Total variation of the appearance planes."""
        return self._tv(self.appearance_planes)

    # --- grid changes -----------------------------------------------------------------------------------
    @torch.no_grad()
    def resample(self, resolution: int, aabb: Optional[Float[Tensor, "6"]] = None) -> None:
        """Resample every plane and line to ``resolution`` over ``aabb`` (default: the current box).

        Used for progressive upsampling and for shrinking the box to the occupied region. Parameters are replaced,
        so optimizers must be rebuilt afterwards.
        """
        new_aabb = self.aabb if aabb is None else aabb.to(self.aabb)
        # Coordinates of the new grid's nodes in the old box's [-1, 1] frame, per axis.
        axes = []
        for d in range(3):
            world = torch.linspace(float(new_aabb[d]), float(new_aabb[d + 3]), resolution, device=self.aabb.device)
            axes.append((world - self.aabb[d]) / (self.aabb[d + 3] - self.aabb[d]) * 2.0 - 1.0)

        def planes(p: Tensor) -> Tensor:
            out = []
            for i, (a, b) in enumerate(_PLANE_AXES):
                gy, gx = torch.meshgrid(axes[b], axes[a], indexing="ij")
                grid = torch.stack([gx, gy], dim=-1)[None]
                out.append(F.grid_sample(p[i : i + 1], grid, mode="bilinear", align_corners=True))
            return torch.cat(out, 0)

        def lines(line: Tensor) -> Tensor:
            out = []
            for i, c in enumerate(_LINE_AXES):
                grid = torch.stack([torch.zeros_like(axes[c]), axes[c]], dim=-1)[None, :, None, :]
                out.append(F.grid_sample(line[i : i + 1], grid, mode="bilinear", align_corners=True))
            return torch.cat(out, 0)

        # New Parameter objects: a parameter that already took part in autograd cannot change shape in place.
        # Callers must point their optimizers at the new parameters (see TensoRFModel's regrid callback).
        frozen = self.geometry_frozen
        self.density_planes = nn.Parameter(planes(self.density_planes.data))
        self.density_lines = nn.Parameter(lines(self.density_lines.data))
        self.appearance_planes = nn.Parameter(planes(self.appearance_planes.data))
        self.appearance_lines = nn.Parameter(lines(self.appearance_lines.data))
        self.aabb.copy_(new_aabb)
        self.resolution = resolution
        self.freeze_geometry(frozen)

    def grid_parameters(self) -> List[nn.Parameter]:
        """The parameters whose shape changes with :meth:`resample`."""
        return [self.density_planes, self.density_lines, self.appearance_planes, self.appearance_lines]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        # A checkpoint taken after upsampling holds larger grids than a freshly built field: adopt its shapes.
        # Loading happens before any backward pass, so resizing .data in place is safe and keeps the Parameter
        # objects that optimizers already hold.
        for name in ("density_planes", "density_lines", "appearance_planes", "appearance_lines"):
            key = prefix + name
            param = getattr(self, name)
            if key in state_dict and state_dict[key].shape != param.shape:
                param.data = torch.empty_like(state_dict[key], device=param.device)
        if prefix + "density_planes" in state_dict:
            self.resolution = int(state_dict[prefix + "density_planes"].shape[-1])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
