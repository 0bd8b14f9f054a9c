"""The radiance-field model shared by relight3d's methods: occupancy-grid ray marching over a relightable field.

A model here is a pure radiance field: it renders, computes its reconstruction losses and regularisers, and keeps
its occupancy grid up to date. Priors and relighting loops live in pipelines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Sequence, Tuple, Type

import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.models.base_model import Model, ModelConfig
from torch import Tensor, nn

from relight3d.eval.image_metrics import psnr, ssim
from relight3d.fields.base import RelightableField
from relight3d.ops import (
    OccupancyGrid,
    accumulate_along_rays,
    march_rays_train,
    ray_aabb_intersect,
    render_weights,
)


def world_to_pixel_matrices(cameras: Cameras) -> Float[Tensor, "v 3 4"]:
    """Per camera, the 3x4 matrix taking homogeneous world points to ``(u*z, v*z, z)``, z the depth in front.

    nerfstudio cameras use the OpenGL convention (x right, y up, looking down -z); pixel ``v`` grows downwards.
    """
    c2w = cameras.camera_to_worlds.float()
    rot, trans = c2w[:, :3, :3], c2w[:, :3, 3:]
    w2c = torch.cat([rot.transpose(1, 2), -rot.transpose(1, 2) @ trans], dim=2)
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0]))  # OpenGL camera -> OpenCV camera
    return cameras.get_intrinsics_matrices().float() @ flip @ w2c


@dataclass
class OccupancyFieldModelConfig(ModelConfig):
    """Rendering, sampling and loss settings shared by relight3d's radiance-field models."""

    _target: Type = field(default_factory=lambda: OccupancyFieldModel)
    """Model class to instantiate."""
    enable_collider: bool = False
    """Unused: rays are clipped to the field's box by the ray marcher."""
    background_color: Literal["white", "black"] = "white"
    """Colour composited behind the field (object datasets are rendered on white)."""
    samples_per_diagonal: int = 512
    """Marching step: the diagonal of the scene box divided by this many steps."""
    dt_gamma: float = 0.0
    """Cone-stepping factor: the step grows as t * dt_gamma (0 keeps it uniform, right for object scenes)."""
    max_steps: int = 1024
    """Most candidate samples per ray."""
    near_plane: float = 0.05
    """Closest distance to the camera at which samples are taken."""
    transmittance_threshold: float = 1e-4
    """A ray stops once its transmittance falls below this (early stop)."""
    sample_weight_threshold: float = 1e-4
    """Samples whose rendering weight (from a gradient-free density pass) is below this are dropped before the
    differentiable pass (they barely contribute to the image)."""
    warmup_sample_weight_threshold: float = 1e-6
    """The same threshold during the occupancy warm-up: it must stay below the weight of an untrained field's
    samples, or nothing would learn."""
    occupancy_resolution: int = 128
    """Cells per side of the occupancy grid."""
    occupancy_update_every: int = 16
    """Training iterations between occupancy-grid updates."""
    occupancy_threshold: float = 1e-3
    """Opacity (sigma * step) above which a cell counts as occupied. Low on purpose: thin parts (ears, handles)
    start with low density and would otherwise be pruned before they are learnt."""
    occupancy_warmup_updates: int = 16
    """Updates that visit every cell before switching to random subsets."""
    carve_with_masks: bool = True
    """At the start of training, remove occupancy cells outside the visual hull of the training masks (when the
    training images have an alpha channel). Skips most empty space from the first step; without it relight3d-ngp's
    torch hash grid marches the whole box and trains at ~300 rays/s on a CPU instead of ~19 K."""
    freeze_geometry: bool = False
    """Freeze density so that only appearance is trained (appearance refits, e.g. relighting)."""
    output_normals: bool = False
    """Also render normals from the density gradient (costs a backward pass per sample)."""
    output_appearance_features: bool = False
    """Also render the per-ray appearance features."""
    eval_num_rays_per_chunk: int = 8192
    """Rays per chunk when rendering full images."""


class OccupancyFieldModel(Model):
    """Occupancy-grid volume renderer over a :class:`RelightableField` (subclasses build the field)."""

    config: OccupancyFieldModelConfig
    field: RelightableField

    def build_field(self, aabb: Tensor) -> RelightableField:
        raise NotImplementedError

    def populate_modules(self) -> None:
        super().populate_modules()
        aabb = self.scene_box.aabb.flatten().float()
        self.field = self.build_field(aabb)
        self.occupancy = OccupancyGrid(
            aabb,
            res=self.config.occupancy_resolution,
            decay=0.95,
            threshold=self.config.occupancy_threshold,
            warmup_updates=self.config.occupancy_warmup_updates,
        )
        if self.config.freeze_geometry:
            self.field.freeze_geometry(True)
        self.register_buffer(
            "background", torch.tensor([1.0, 1.0, 1.0] if self.config.background_color == "white" else [0.0] * 3)
        )

    # --- parameters and callbacks ----------------------------------------------------------------------------
    def get_param_groups(self) -> Dict[str, List[nn.Parameter]]:
        groups = {"density": list(self.field.geometry_parameters())}
        groups.update(self.field.appearance_parameter_groups())
        return groups

    def freeze_geometry(self, frozen: bool = True) -> None:
        """Freeze (or unfreeze) density; the occupancy grid stops updating while frozen."""
        self.config.freeze_geometry = frozen
        self.field.freeze_geometry(frozen)

    @property
    def sample_weight_threshold(self) -> float:
        """The current weight threshold (looser while the occupancy grid warms up)."""
        warm = int(self.occupancy.n_updates) >= self.occupancy.warmup_updates
        return self.config.sample_weight_threshold if warm else self.config.warmup_sample_weight_threshold

    @property
    def render_step_size(self) -> float:
        extent = self.occupancy.aabb[3:] - self.occupancy.aabb[:3]
        return float(extent.norm()) / self.config.samples_per_diagonal

    def update_occupancy(self) -> None:
        """Refresh the occupancy grid from the current density."""
        self.occupancy.update(self.field.density, self.render_step_size)

    def carve_occupancy(self, cameras: Cameras, images: Tensor) -> Optional[float]:
        """Carve the occupancy grid with the alpha channel of RGBA training images; returns the carved fraction.

        Does nothing (returns None) for RGB images or non-pinhole cameras.
        """
        if images.shape[-1] != 4 or not bool((cameras.camera_type == CameraType.PERSPECTIVE.value).all()):
            return None
        return self.occupancy.carve(world_to_pixel_matrices(cameras).to(self.device), images[..., 3].to(self.device))

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        pipeline = training_callback_attributes.pipeline
        datamanager = getattr(pipeline, "datamanager", None)

        def carve(step: int) -> None:
            if self.config.carve_with_masks and hasattr(datamanager, "train_images") and not self.field.geometry_frozen:
                self.carve_occupancy(datamanager.train_cameras, datamanager.train_images)

        def update(step: int) -> None:
            if not self.field.geometry_frozen:
                self.update_occupancy()

        return [
            TrainingCallback(where_to_run=[TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], iters=(0,), func=carve),
            TrainingCallback(
                where_to_run=[TrainingCallbackLocation.BEFORE_TRAIN_ITERATION],
                update_every_num_iters=self.config.occupancy_update_every,
                func=update,
            )
        ]

    # --- rendering ---------------------------------------------------------------------------------------------
    def render_rays(
        self,
        origins: Float[Tensor, "n 3"],
        directions: Float[Tensor, "n 3"],
        extra_outputs: Sequence[str] = (),
        jitter: bool = False,
    ) -> Dict[str, Tensor]:
        """Render rays; ``extra_outputs`` may hold 'normals' and 'appearance_features'.

        Returns per-ray 'rgb', 'accumulation', 'depth' (and the extras). Normals are the weighted sum of unit
        density-gradient normals, normalised.
        """
        n = origins.shape[0]
        field_ = self.field
        t_near, t_far = ray_aabb_intersect(origins, directions, field_.aabb, self.config.near_plane)
        dt = self.render_step_size
        noise = torch.rand(n, device=origins.device) if jitter else None
        ray_ids, t0, t1 = march_rays_train(
            origins, directions, t_near, t_far, self.occupancy.bitfield, self.occupancy.aabb,
            self.occupancy.n_cascades, self.occupancy.res, dt, dt * 8, self.config.dt_gamma, self.config.max_steps,
            noise,
        )  # fmt: skip
        mids = (t0 + t1) * 0.5
        positions = origins[ray_ids] + directions[ray_ids] * mids[:, None]
        # Pass 1, without gradients: densities of every marched sample give each sample's visibility. Samples behind
        # the point where transmittance ran out, or that barely contribute, are dropped (nerfacc's early stop).
        with torch.no_grad():
            sigmas = field_.density(positions)
            weights, _ = render_weights(sigmas, t0, t1, ray_ids, n, self.config.transmittance_threshold)
            keep = weights > self.sample_weight_threshold
        ray_ids, t0, t1, mids, positions = ray_ids[keep], t0[keep], t1[keep], mids[keep], positions[keep]
        n_marched = keep.shape[0]
        # Pass 2, on the visible samples only: densities with gradients (unless geometry is frozen), appearance.
        if torch.is_grad_enabled() and not field_.geometry_frozen:
            sigmas, feats = field_.density_and_features(positions)
            weights, _ = render_weights(sigmas, t0, t1, ray_ids, n, self.config.transmittance_threshold)
        else:
            weights = weights[keep]
            feats = field_.appearance_features(positions)
        rgbs = field_.color(feats, directions[ray_ids])
        acc = accumulate_along_rays(weights, None, ray_ids, n)
        rgb = accumulate_along_rays(weights, rgbs, ray_ids, n)
        depth = accumulate_along_rays(weights, mids[:, None], ray_ids, n) / acc.clamp_min(1e-6)
        out = {
            "rgb": rgb + (1.0 - acc) * self.background,
            "accumulation": acc,
            "depth": depth,
            "num_samples": torch.tensor(float(n_marched)),
            "num_visible_samples": torch.tensor(float(ray_ids.shape[0])),
        }
        if "normals" in extra_outputs:
            normals = field_.normals(positions, create_graph=self.training and not field_.geometry_frozen)
            out["normals"] = F.normalize(accumulate_along_rays(weights, normals, ray_ids, n), dim=-1, eps=1e-6)
        if "appearance_features" in extra_outputs:
            out["appearance_features"] = accumulate_along_rays(weights, feats, ray_ids, n)
        return out

    def _extra_outputs(self) -> Tuple[str, ...]:
        extras = []
        if self.config.output_normals:
            extras.append("normals")
        if self.config.output_appearance_features:
            extras.append("appearance_features")
        return tuple(extras)

    def get_outputs(self, ray_bundle: RayBundle) -> Dict[str, Tensor]:
        origins = ray_bundle.origins.reshape(-1, 3)
        directions = ray_bundle.directions.reshape(-1, 3)
        out = self.render_rays(origins, directions, self._extra_outputs(), jitter=self.training)
        if not self.training:
            out.pop("num_samples")
            out.pop("num_visible_samples")
        return out

    # --- losses and metrics ---------------------------------------------------------------------------------
    def _gt_rgb_and_mask(self, batch: Dict) -> Tuple[Tensor, Optional[Tensor]]:
        image = batch["image"].to(self.device)
        if image.shape[-1] == 4:
            alpha = image[..., 3:]
            return image[..., :3] * alpha + self.background * (1.0 - alpha), (alpha > 0.5).float()
        mask = batch.get("fg_mask")
        return image, None if mask is None else mask.to(self.device).float()

    def get_metrics_dict(self, outputs: Dict, batch: Dict) -> Dict[str, Tensor]:
        gt, _ = self._gt_rgb_and_mask(batch)
        metrics = {"psnr": psnr(outputs["rgb"].detach(), gt)}
        if "num_samples" in outputs:
            metrics["samples_per_ray"] = outputs["num_samples"] / outputs["rgb"].shape[0]
            metrics["visible_samples_per_ray"] = outputs["num_visible_samples"] / outputs["rgb"].shape[0]
        return metrics

    def get_loss_dict(self, outputs: Dict, batch: Dict, metrics_dict: Optional[Dict] = None) -> Dict[str, Tensor]:
        gt, _ = self._gt_rgb_and_mask(batch)
        return {"rgb_loss": F.mse_loss(outputs["rgb"], gt)}

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        gt, mask = self._gt_rgb_and_mask(batch)
        pred = outputs["rgb"]
        metrics = {"psnr": float(psnr(pred, gt)), "ssim": float(ssim(pred, gt))}
        if mask is not None:
            metrics["psnr_masked"] = float(psnr(pred, gt, mask))
        depth = outputs["depth"]
        depth_vis = (depth - depth.min()) / (depth.max() - depth.min()).clamp_min(1e-6)
        images = {
            "img": torch.cat([gt, pred], dim=1),
            "accumulation": outputs["accumulation"].expand_as(pred),
            "depth": depth_vis.expand_as(pred),
        }
        if "normals" in outputs:
            images["normals"] = outputs["normals"] * 0.5 + 0.5
        return metrics, images
