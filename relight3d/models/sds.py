"""Radiance fields for score distillation (RealFusion / DreamFusion): shading modes, a density blob, coarse to fine.

The models stay pure radiance fields (the prior lives in the pipeline). Over relight3d-ngp / relight3d-tensorf they
add what score distillation renders need, on top of :meth:`OccupancyFieldModel.render_rays` (which marches and
composites; shading is its per-sample post-step, :func:`lambertian_shader`):

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
from typing import Dict, List, Literal, Optional, Type, get_args

import torch
from jaxtyping import Float
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from torch import Tensor, nn

from relight3d.fields.base import NormalsMethod, RelightableField
from relight3d.fields.ngp_field import NGPField
from relight3d.models.base import OccupancyFieldModel
from relight3d.models.ngp import NGPModel, NGPModelConfig
from relight3d.models.samples import PackedSamples, Shader
from relight3d.models.tensorf import TensoRFModel, TensoRFModelConfig

ShadingMode = Literal["albedo", "lambertian", "textureless"]
"""How a render is shaded: the field's colour, colour under a point light, or the light term alone (grey)."""


def lambertian_shader(shading: ShadingMode, light_direction: Float[Tensor, "3"], ambient_ratio: float) -> Shader:
    """The per-sample shading post-step of the 'lambertian' and 'textureless' modes.

    Each sample's light term is ``ambient + (1 - ambient) max(0, n . l)``; 'lambertian' multiplies the albedo by it,
    'textureless' renders it alone (grey).
    """

    def shade(samples: PackedSamples) -> Float[Tensor, "s 3"]:
        normals = samples.normals
        light = light_direction.to(normals).reshape(3)
        lambert = (ambient_ratio + (1.0 - ambient_ratio) * (normals @ light).clamp_min(0.0))[:, None]
        return samples.albedo * lambert if shading == "lambertian" else lambert.expand(-1, 3)

    return shade


@dataclass
class ScoreDistillationFieldSettings:
    """Settings shared by the score-distillation models (RealFusion's defaults)."""

    blob_density: float = 5.0
    """Peak of the density blob added at the centre before the density activation (0 disables it)."""
    blob_radius: float = 0.2
    """Standard deviation, in world units, of the density blob."""
    normals_method: NormalsMethod = "finite_difference"
    """Normals from central finite differences of the density (RealFusion; smoother on hash grids) or from its
    autograd gradient."""
    grid_levels_mask: int = 8
    """Coarse to fine: the number of finest hash-grid levels masked out at the start (NGP only; 0 disables)."""
    grid_levels_mask_iters: int = 3000
    """Coarse to fine: the iteration at which every hash-grid level is switched on."""


class ScoreDistillationRendering:
    """Shaded rendering, the density blob and coarse-to-fine masking (mixed into the models below)."""

    config: ScoreDistillationFieldSettings
    field: RelightableField

    def build_field(self, aabb: Tensor) -> RelightableField:
        """The model's field with the density blob switched on."""
        field_ = super().build_field(aabb)  # type: ignore[misc]
        field_.blob_density, field_.blob_radius = self.config.blob_density, self.config.blob_radius
        return field_

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
        """Render rays under a shading mode (:meth:`OccupancyFieldModel.render_rays` with a shading post-step).

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
            zero on empty rays: render_rays' 'accumulated_normals') and 'orientation_loss'.
        """
        if shading not in get_args(ShadingMode):
            raise ValueError(f"render_shaded: unknown shading {shading!r}")
        shader = None
        if shading != "albedo":
            if light_direction is None:
                raise ValueError(f"render_shaded: shading {shading!r} needs a light direction")
            shader = lambertian_shader(shading, light_direction, ambient_ratio)
        extras = ("accumulated_normals", "orientation_loss") if with_normals or shader is not None else ()
        model: OccupancyFieldModel = self  # type: ignore[assignment]
        out = model.render_rays(origins, directions, extras, jitter, background, shader)
        if extras:
            out["normals"] = out.pop("accumulated_normals")
        return out

    # --- coarse to fine -------------------------------------------------------------------------------------------
    def set_coarse_to_fine(self, step: int) -> None:
        """Mask the finest ``grid_levels_mask`` hash-grid levels until ``grid_levels_mask_iters`` (NGP fields)."""
        field_ = self.field
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

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        base = super().get_training_callbacks(training_callback_attributes)  # type: ignore[misc]
        return [*base, self.coarse_to_fine_callback()]


@dataclass
class SDSNGPModelConfig(ScoreDistillationFieldSettings, NGPModelConfig):
    """relight3d-ngp for score distillation, sized like RealFusion's grid (16 levels, 2^16 entries, 2048 x bound)."""

    _target: Type = field(default_factory=lambda: SDSNGPModel)
    """Model class to instantiate."""
    # RealFusion's grid: 16 levels of 2^16 entries (documented in NGPFieldSettings).
    n_levels: int = 16
    log2_table_size: int = 16
    max_resolution: int = 1536
    """Finest grid resolution (RealFusion: 2048 x the scene bound 0.75)."""
    sh_degree: int = 1
    """Spherical-harmonics degree of the view direction: 1 makes the colour view-independent (an albedo)."""
    samples_per_diagonal: int = 512
    """Marching step: the diagonal of the scene box divided by this many steps (RealFusion's density; relight3d-ngp
    takes 256 for reconstruction)."""
    sample_weight_threshold: float = 1e-4
    """Samples whose rendering weight is below this are dropped before the differentiable pass (kept at the
    renderer's 1e-4: score distillation's views were not measured with relight3d-ngp's 1e-3)."""
    occupancy_threshold: float = 0.02
    """Opacity (sigma * step) above which an occupancy cell is kept, capped by the mean over the grid (cells under
    ``min(mean, threshold)`` are skipped), as stable-dreamfusion's ``density_thresh`` is. Higher than for
    reconstruction (1e-3): an untrained field is a thin fog (sigma ~ 0.4) over the whole box besides the blob, and
    marching it costs ~110 samples per ray of a prior view instead of ~30 (CPU settings, 64 px). Much higher (0.05)
    also prunes the cells around the blob that the object has to grow into, and short runs stop learning."""


class SDSNGPModel(ScoreDistillationRendering, NGPModel):
    """relight3d-ngp with shading modes, a density blob and coarse-to-fine hash-grid masking."""

    config: SDSNGPModelConfig
    field: NGPField

    def get_param_groups(self) -> Dict[str, List[nn.Parameter]]:
        """'grid' (hash tables), 'density' (density MLP) and 'appearance' (colour MLP), as RealFusion's learning
        rates differ between grids and MLPs."""
        return {
            "grid": self.field.grid_parameters(),
            "density": list(self.field.density_mlp.parameters()),
            "appearance": list(self.field.color_mlp.parameters()),
        }


@dataclass
class SDSTensoRFModelConfig(ScoreDistillationFieldSettings, TensoRFModelConfig):
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
