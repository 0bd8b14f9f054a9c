"""Radiance fields for score distillation (RealFusion / DreamFusion): shading modes, a density blob, coarse to fine.

The models stay pure radiance fields (the prior lives in the pipeline). Over relight3d-ngp / relight3d-tensorf they
add what score distillation renders need:

* **Shading.** ``albedo`` (the field's colour), ``lambertian`` (albedo times ``ambient + (1 - ambient) max(0, n.l)``)
  and ``textureless`` (the Lambertian term alone, grey): rendering the geometry under random lights keeps the prior
  from painting shape into texture (DreamFusion). Colour is view-independent (an albedo) by default.
* **Normals and the orientation loss** (Ref-NeRF): per ray ``sum_i w_i max(0, n_i . d)^2`` with the weights
  detached, which penalises visible normals facing away from the camera.
* **A density blob** ``blob_density * exp(-|x|^2 / (2 blob_radius^2))`` added to the density before its activation,
  so that training starts from a solid object at the centre (DreamFusion's initialisation).
* **Coarse to fine** (NGP only): the finest hash-grid levels are masked out for the first iterations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Type

import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from torch import Tensor, nn

from relight3d.fields.ngp_field import NGPField
from relight3d.fields.tensorf_field import TensoRFField
from relight3d.models.base import OccupancyFieldModel
from relight3d.models.ngp import NGPModel, NGPModelConfig
from relight3d.models.tensorf import TensoRFModel, TensoRFModelConfig
from relight3d.ops import accumulate_along_rays, march_rays_train, ray_aabb_intersect, render_weights

ShadingMode = Literal["albedo", "lambertian", "textureless"]
"""How a render is shaded: the field's colour, colour under a point light, or the light term alone (grey)."""


def density_blob(positions: Float[Tensor, "n 3"], peak: float, radius: float) -> Float[Tensor, " n"]:
    """``peak * exp(-|x|^2 / (2 radius^2))``: the blob added to a field's pre-activation density."""
    return peak * torch.exp(-positions.square().sum(-1) / (2.0 * radius**2))


class BlobNGPField(NGPField):
    """:class:`NGPField` with a Gaussian density blob at the origin, added before the density activation."""

    def __init__(self, *args, blob_density: float = 5.0, blob_radius: float = 0.2, **kwargs) -> None:  # noqa: ANN002
        super().__init__(*args, **kwargs)
        self.blob_density = blob_density
        self.blob_radius = blob_radius

    def _encode(self, positions: Tensor) -> Tensor:
        out = super()._encode(positions)
        if self.blob_density == 0.0:
            return out
        blob = density_blob(positions, self.blob_density, self.blob_radius)
        return torch.cat([out[:, :1] + blob[:, None], out[:, 1:]], dim=-1)

    def grid_parameters(self) -> List[nn.Parameter]:
        """The hash-grid tables (trained with a larger learning rate than the MLPs)."""
        params = list(self.encoding.parameters())
        if self.appearance_encoding is not None:
            params += list(self.appearance_encoding.parameters())
        return params


class BlobTensoRFField(TensoRFField):
    """:class:`TensoRFField` with a Gaussian density blob at the origin, added before the softplus."""

    def __init__(self, *args, blob_density: float = 5.0, blob_radius: float = 0.2, **kwargs) -> None:  # noqa: ANN002
        super().__init__(*args, **kwargs)
        self.blob_density = blob_density
        self.blob_radius = blob_radius

    def density(self, positions: Float[Tensor, "n 3"]) -> Float[Tensor, " n"]:
        xyz = self.normalize_positions(positions)
        feats = self._vm(self.density_planes, self.density_lines, xyz).sum(-1)
        feats = feats + density_blob(positions, self.blob_density, self.blob_radius)
        sigma = F.softplus(feats + self.density_shift) * self.density_scale
        inside = (xyz.abs() <= 1.0).all(dim=-1)
        return torch.where(inside, sigma, torch.zeros_like(sigma))


@dataclass
class ScoreDistillationFieldSettings:
    """Settings shared by the score-distillation models (RealFusion's defaults)."""

    blob_density: float = 5.0
    """Peak of the density blob added at the centre before the density activation (0 disables it)."""
    blob_radius: float = 0.2
    """Standard deviation, in world units, of the density blob."""
    normals_method: Literal["finite_difference", "autograd"] = "finite_difference"
    """Normals from central finite differences of the density (RealFusion; smoother on hash grids) or from its
    autograd gradient."""
    normals_epsilon: float = 1e-2
    """Finite-difference step, in world units."""
    grid_levels_mask: int = 8
    """Coarse to fine: the number of finest hash-grid levels masked out at the start (NGP only; 0 disables)."""
    grid_levels_mask_iters: int = 3000
    """Coarse to fine: the iteration at which every hash-grid level is switched on."""


class ScoreDistillationRendering:
    """Shaded rendering, normals, the orientation loss and coarse-to-fine masking (mixed into the models below)."""

    config: ScoreDistillationFieldSettings

    # --- normals --------------------------------------------------------------------------------------------------
    def sample_normals(self, positions: Float[Tensor, "n 3"]) -> Float[Tensor, "n 3"]:
        """Unit outward normals ``-grad(sigma) / |grad(sigma)|`` at positions (differentiable while training)."""
        field_ = self.field  # type: ignore[attr-defined]
        if self.config.normals_method == "autograd":
            return field_.normals(positions, create_graph=torch.is_grad_enabled())
        eps = self.config.normals_epsilon
        offsets = torch.eye(3, device=positions.device) * eps
        shifted = torch.cat([positions[None] + offsets[:, None], positions[None] - offsets[:, None]])  # [6, n, 3]
        sigma = field_.density(shifted.reshape(-1, 3)).reshape(2, 3, -1)
        grad = (sigma[0] - sigma[1]).t() / (2.0 * eps)  # [n, 3]
        return torch.nan_to_num(-F.normalize(grad, dim=-1, eps=1e-8))

    # --- rendering ------------------------------------------------------------------------------------------------
    def render_shaded(
        self,
        origins: Float[Tensor, "n 3"],
        directions: Float[Tensor, "n 3"],
        shading: ShadingMode = "albedo",
        light_direction: Optional[Float[Tensor, "3"]] = None,
        ambient_ratio: float = 1.0,
        background: Optional[Float[Tensor, "*b 3"]] = None,
        with_normals: bool = False,
        jitter: bool = True,
    ) -> Dict[str, Tensor]:
        """Render rays under a shading mode.

        Args:
            origins, directions: rays (unit directions).
            shading: 'albedo', 'lambertian' or 'textureless'.
            light_direction: unit vector towards a distant light (needed unless shading is 'albedo').
            ambient_ratio: share of the light that is ambient (1 = no shading).
            background: colour(s) behind the field, ``[3]`` or one per ray; the model's background when None.
            with_normals: also return composited normals and the orientation loss (always done when shaded).
            jitter: jitter the sample positions along the rays.

        Returns:
            Per ray 'rgb', 'accumulation', 'depth'; with normals, 'normals' (the weighted sum of unit sample normals,
            zero on empty rays) and 'orientation_loss' (``sum_i w_i max(0, n_i . d)^2`` with detached weights).
        """
        if shading not in ("albedo", "lambertian", "textureless"):
            raise ValueError(f"render_shaded: unknown shading {shading!r}")
        model: OccupancyFieldModel = self  # type: ignore[assignment]
        field_ = model.field
        n = origins.shape[0]
        cfg = model.config
        t_near, t_far = ray_aabb_intersect(origins, directions, field_.aabb, cfg.near_plane)
        dt = model.render_step_size
        noise = torch.rand(n, device=origins.device) if jitter else None
        ray_ids, t0, t1 = march_rays_train(
            origins, directions, t_near, t_far, model.occupancy.bitfield, model.occupancy.aabb,
            model.occupancy.n_cascades, model.occupancy.res, dt, dt * 8, cfg.dt_gamma, cfg.max_steps, noise,
        )  # fmt: skip
        mids = (t0 + t1) * 0.5
        positions = origins[ray_ids] + directions[ray_ids] * mids[:, None]
        with torch.no_grad():  # drop invisible samples first (as OccupancyFieldModel.render_rays does)
            weights, _ = render_weights(field_.density(positions), t0, t1, ray_ids, n, cfg.transmittance_threshold)
            keep = weights > model.sample_weight_threshold
        ray_ids, t0, t1, mids, positions = ray_ids[keep], t0[keep], t1[keep], mids[keep], positions[keep]
        sigmas, feats = field_.density_and_features(positions)
        weights, _ = render_weights(sigmas, t0, t1, ray_ids, n, cfg.transmittance_threshold)
        sample_dirs = directions[ray_ids]
        colors = field_.color(feats, sample_dirs)
        need_normals = with_normals or shading != "albedo"
        normals = self.sample_normals(positions) if need_normals else None
        if shading != "albedo":
            if light_direction is None:
                raise ValueError(f"render_shaded: shading {shading!r} needs a light direction")
            assert normals is not None
            light = light_direction.to(normals).reshape(3)
            lambert = ambient_ratio + (1.0 - ambient_ratio) * (normals @ light).clamp_min(0.0)
            colors = colors * lambert[:, None] if shading == "lambertian" else lambert[:, None].expand(-1, 3)
        acc = accumulate_along_rays(weights, None, ray_ids, n)
        bg = model.background if background is None else background.to(acc)
        out = {
            "rgb": accumulate_along_rays(weights, colors, ray_ids, n) + (1.0 - acc) * bg,
            "accumulation": acc,
            "depth": accumulate_along_rays(weights, mids[:, None], ray_ids, n) / acc.clamp_min(1e-6),
            "num_samples": torch.tensor(float(keep.shape[0])),
            "num_visible_samples": torch.tensor(float(ray_ids.shape[0])),
        }
        if normals is not None:
            out["normals"] = accumulate_along_rays(weights, normals, ray_ids, n)
            facing_away = (normals * sample_dirs).sum(-1).clamp_min(0.0).square()
            out["orientation_loss"] = accumulate_along_rays(weights.detach(), facing_away[:, None], ray_ids, n)
        return out

    # --- coarse to fine -------------------------------------------------------------------------------------------
    def set_coarse_to_fine(self, step: int) -> None:
        """Mask the finest ``grid_levels_mask`` hash-grid levels until ``grid_levels_mask_iters`` (NGP fields)."""
        field_ = self.field  # type: ignore[attr-defined]
        encoding = getattr(field_, "encoding", None)
        if not hasattr(field_, "level_mask") or encoding is None:
            return
        masked = self.config.grid_levels_mask if step < self.config.grid_levels_mask_iters else 0
        if masked <= 0:
            field_.level_mask = None
            return
        n_levels = encoding.n_levels
        mask = (torch.arange(n_levels, device=field_.aabb.device) < n_levels - masked).float()
        field_.level_mask = mask

    def coarse_to_fine_callback(self) -> TrainingCallback:
        """Updates the level mask before every training iteration."""
        return TrainingCallback(
            where_to_run=[TrainingCallbackLocation.BEFORE_TRAIN_ITERATION],
            update_every_num_iters=1,
            func=self.set_coarse_to_fine,
        )


@dataclass
class SDSNGPModelConfig(NGPModelConfig, ScoreDistillationFieldSettings):
    """relight3d-ngp for score distillation, sized like RealFusion's grid (16 levels, 2^16 entries, 2048 x bound)."""

    _target: Type = field(default_factory=lambda: SDSNGPModel)
    """Model class to instantiate."""
    n_levels: int = 16
    """Hash-grid levels."""
    log2_table_size: int = 16
    """log2 of the hash-table size per level."""
    max_resolution: int = 1536
    """Finest grid resolution (RealFusion: 2048 x the scene bound 0.75)."""
    sh_degree: int = 1
    """Spherical-harmonics degree of the view direction: 1 makes the colour view-independent (an albedo)."""
    occupancy_threshold: float = 0.02
    """Opacity (sigma * step) above which an occupancy cell is kept, capped by the mean over the grid (cells under
    ``min(mean, threshold)`` are skipped), as stable-dreamfusion's ``density_thresh`` is. Higher than for
    reconstruction (1e-3): an untrained field is a thin fog (sigma ~ 0.4) over the whole box besides the blob, and
    marching it costs ~110 samples per ray of a prior view instead of ~30 (CPU settings, 64 px). Much higher (0.05)
    also prunes the cells around the blob that the object has to grow into, and short runs stop learning."""


class SDSNGPModel(ScoreDistillationRendering, NGPModel):
    """relight3d-ngp with shading modes, a density blob and coarse-to-fine hash-grid masking."""

    config: SDSNGPModelConfig
    field: BlobNGPField

    def build_field(self, aabb: Tensor) -> BlobNGPField:
        c = self.config
        return BlobNGPField(aabb, **self.field_kwargs(), blob_density=c.blob_density, blob_radius=c.blob_radius)

    def get_param_groups(self) -> Dict[str, List[nn.Parameter]]:
        """'grid' (hash tables), 'density' (density MLP) and 'appearance' (colour MLP), as RealFusion's learning
        rates differ between grids and MLPs."""
        grid = self.field.grid_parameters()
        grid_ids = {id(p) for p in grid}
        return {
            "grid": grid,
            "density": list(self.field.density_mlp.parameters()),
            "appearance": [p for p in self.field.color_mlp.parameters() if id(p) not in grid_ids],
        }

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        return [*super().get_training_callbacks(training_callback_attributes), self.coarse_to_fine_callback()]


@dataclass
class SDSTensoRFModelConfig(TensoRFModelConfig, ScoreDistillationFieldSettings):
    """relight3d-tensorf for score distillation (view-independent colour; no hash grid, so no level masking)."""

    _target: Type = field(default_factory=lambda: SDSTensoRFModel)
    """Model class to instantiate."""
    sh_degree: int = 0
    """Spherical-harmonics degree of the view direction: 0 makes the colour view-independent (an albedo)."""
    grid_levels_mask: int = 0
    """Unused by TensoRF (coarse to fine comes from its grid upsampling)."""


class SDSTensoRFModel(ScoreDistillationRendering, TensoRFModel):
    """relight3d-tensorf with shading modes and a density blob."""

    config: SDSTensoRFModelConfig
    field: BlobTensoRFField

    def build_field(self, aabb: Tensor) -> BlobTensoRFField:
        c = self.config
        return BlobTensoRFField(aabb, **self.field_kwargs(), blob_density=c.blob_density, blob_radius=c.blob_radius)
