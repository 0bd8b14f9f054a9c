"""The one renderer of relight3d's radiance fields: occupancy-grid ray marching, compositing and G-buffers.

A model here is a pure radiance field: it renders, computes its reconstruction losses and regularisers, and keeps
its occupancy grid up to date. Priors and relighting loops live in pipelines.

Rendering has two steps, each written once. :meth:`OccupancyFieldModel.march` marches rays through the occupancy
grid and returns the visible samples (:class:`PackedSamples`: positions, weights, appearance features, and the
field's colour and normals evaluated on first use). :meth:`OccupancyFieldModel.render_rays` composites them into
per-ray rgb, accumulation, depth and any G-buffer of :data:`GBUFFERS` asked for by name. A model that shades
(score distillation's Lambertian modes) passes a per-sample shader, a post-step on the samples' G-buffers (albedo,
normals) that replaces their colour before compositing: it never marches or composites on its own.
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
from relight3d.fields.base import NormalsMethod, RelightableField
from relight3d.fields.material import MaterialHead
from relight3d.geometry import opengl_to_opencv, world_to_camera
from relight3d.models.samples import GBUFFERS, PackedSamples, Shader
from relight3d.ops import OccupancyGrid, StepSchedule, march_rays_train, ray_aabb_intersect, render_weights


def world_to_pixel_matrices(cameras: Cameras) -> Float[Tensor, "v 3 4"]:
    """Per camera, the 3x4 matrix taking homogeneous world points to ``(u*z, v*z, z)``, z the depth in front.

    nerfstudio cameras use the OpenGL convention (x right, y up, looking down -z); pixel ``v`` grows downwards.
    """
    w2c = world_to_camera(opengl_to_opencv(cameras.camera_to_worlds.float()))
    return cameras.get_intrinsics_matrices().float() @ w2c


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
    single_pass_above: float = 0.7
    """While training, when more than this fraction of the marched samples was kept in recent batches, the field is
    evaluated once, with gradients, on every marched sample, and the invisible ones are dropped after: the
    gradient-free first pass would cost more than the samples it drops save (a hash-grid field keeps most samples).
    Renders are the same either way. Above 1 never."""
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
    normals_method: NormalsMethod = "autograd"
    """Normals from the density's autograd gradient, or from its central finite differences (smoother on hash
    grids)."""
    normals_epsilon: float = 1e-2
    """Finite-difference step for the normals, in world units."""
    output_appearance_features: bool = False
    """Also render the per-ray appearance features."""
    material_head: bool = False
    """Give the field a material head (base colour, roughness, metallic; :mod:`relight3d.fields.material`). It is
    fitted after training, with geometry frozen, by the relighting pipeline or ``relight3d export gbuffers``, and
    queried at surface points: priors that condition on material G-buffers (DiffusionRenderer) turn it on."""
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
        if self.config.material_head:
            self.field.material = MaterialHead(aabb)
        self.occupancy = OccupancyGrid(
            aabb,
            res=self.config.occupancy_resolution,
            decay=0.95,
            threshold=self.config.occupancy_threshold,
            warmup_updates=self.config.occupancy_warmup_updates,
        )
        if self.config.freeze_geometry:
            self.field.freeze_geometry(True)
        self._kept_fraction = 0.0
        """Running mean of the fraction of marched samples that training batches kept (picks the single pass)."""
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
            ),
        ]

    # --- rendering ---------------------------------------------------------------------------------------------
    def sample_normals(self, positions: Float[Tensor, "n 3"]) -> Float[Tensor, "n 3"]:
        """Unit outward normals at positions by the configured method (differentiable while training geometry)."""
        create_graph = torch.is_grad_enabled() and not self.field.geometry_frozen
        c = self.config
        return self.field.normals(positions, create_graph, c.normals_method, c.normals_epsilon)

    def march(
        self, origins: Float[Tensor, "n 3"], directions: Float[Tensor, "n 3"], jitter: bool = False
    ) -> PackedSamples:
        """March rays (unit directions) through the occupancy grid and keep the samples that are visible.

        A first pass without gradients takes the density of every marched sample; samples behind the point where
        transmittance ran out, or whose weight is below :attr:`sample_weight_threshold`, are dropped (nerfacc's
        early stop). The second pass evaluates density and appearance features of the kept samples, with gradients
        when they are enabled, and their weights are computed again from those samples alone, so that a render is
        the same with gradients on or off. When training keeps most samples (``single_pass_above``), one pass with
        gradients over every marched sample replaces the two, and the kept samples are selected from it.
        """
        n, field_, cfg = origins.shape[0], self.field, self.config
        t_near, t_far = ray_aabb_intersect(origins, directions, field_.aabb, cfg.near_plane)
        dt = self.render_step_size
        noise = torch.rand(n, device=origins.device) if jitter else None
        steps = StepSchedule(dt, dt * 8, cfg.dt_gamma)
        ray_ids, t0, t1 = march_rays_train(
            origins, directions, t_near, t_far, self.occupancy.packed, steps, cfg.max_steps, noise
        )
        mids = (t0 + t1) * 0.5
        positions = origins[ray_ids] + directions[ray_ids] * mids[:, None]
        training = torch.is_grad_enabled() and self.training
        single_pass = training and self._kept_fraction > cfg.single_pass_above
        if single_pass:
            all_sigmas, all_features = field_.density_and_features(positions)
        with torch.no_grad():
            first = all_sigmas.detach() if single_pass else field_.density(positions)
            weights, _ = render_weights(first, t0, t1, ray_ids, n, cfg.transmittance_threshold)
            keep = weights > self.sample_weight_threshold
        if training and keep.numel():
            self._kept_fraction = 0.9 * self._kept_fraction + 0.1 * float(keep.float().mean())
        kept = keep.nonzero().squeeze(1)
        ray_ids, t0, t1, mids, positions = (x.index_select(0, kept) for x in (ray_ids, t0, t1, mids, positions))
        if single_pass:
            sigmas, features = all_sigmas.index_select(0, kept), all_features.index_select(0, kept)
        else:
            sigmas, features = field_.density_and_features(positions)
        weights, _ = render_weights(sigmas, t0, t1, ray_ids, n, cfg.transmittance_threshold)
        return PackedSamples(
            field_, ray_ids, mids, positions, directions[ray_ids], weights, features, n, keep.shape[0],
            self.sample_normals,
        )  # fmt: skip

    def render_rays(
        self,
        origins: Float[Tensor, "n 3"],
        directions: Float[Tensor, "n 3"],
        extra_outputs: Sequence[str] = (),
        jitter: bool = False,
        background: Optional[Float[Tensor, "*b 3"]] = None,
        shader: Optional[Shader] = None,
    ) -> Dict[str, Tensor]:
        """Render rays: march, shade (optionally), composite.

        Args:
            origins, directions: rays (unit directions).
            extra_outputs: names of :data:`GBUFFERS` to return as well.
            jitter: jitter the sample positions along the rays.
            background: colour(s) behind the field, ``[3]`` or one per ray; the model's background when None.
            shader: per-sample shading post-step replacing the field's colour (see :data:`Shader`).

        Returns:
            Per ray 'rgb', 'accumulation', 'depth' (the expected distance of the visible samples), the requested
            G-buffers, and the sample counts 'num_samples' (marched) and 'num_visible_samples' (kept).
        """
        unknown = [name for name in extra_outputs if name not in GBUFFERS]
        if unknown:
            raise ValueError(f"render_rays: unknown outputs {unknown} (known: {', '.join(GBUFFERS)})")
        samples = self.march(origins, directions, jitter)
        colors = samples.albedo if shader is None else shader(samples)
        acc = samples.composite(None)
        bg = self.background if background is None else background.to(acc)
        out = {
            "rgb": samples.composite(colors) + (1.0 - acc) * bg,
            "accumulation": acc,
            "depth": samples.composite(samples.midpoints[:, None]) / acc.clamp_min(1e-6),
            "num_samples": torch.tensor(float(samples.n_marched)),
            "num_visible_samples": torch.tensor(float(samples.ray_ids.shape[0])),
        }
        for name in extra_outputs:
            out[name] = GBUFFERS[name](samples)
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
