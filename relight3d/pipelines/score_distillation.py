"""Single-image 360-degree reconstruction with score distillation (RealFusion; ``ns-train relight3d-sds``).

Each iteration:

1. **Reference view.** Random rays of the input RGBA image, rendered with albedo shading: an image loss (MSE inside
   the object mask) and a mask loss (MSE between accumulation and alpha).
2. **Prior view.** A full image from a random camera at ``render_size`` pixels, shaded with albedo for the first
   ``albedo_iters`` iterations and then at random with albedo / Lambertian / textureless shading under a light near
   the camera, over a random background colour. Stable Diffusion's score distillation (SDS) pulls it towards
   images of the prompt, whose learned token (textual inversion) describes the object. On the same render: alpha
   entropy, the orientation loss and a 2D normal-smoothness loss.

Every loss weight is an :class:`AnnealedValue`. Prior views of more than ``prior_rays_per_chunk`` rays are rendered
chunk by chunk under gradient checkpointing, which bounds memory on a CPU. The pipeline owns the prior; the model
stays a radiance field (:mod:`relight3d.models.sds`). With the prior weight at 0 no Stable Diffusion is loaded and
the run is reconstruction only.

The views (reference image, prior cameras, chunked rendering) are in :mod:`relight3d.pipelines.sds_views`, the
weights and regularisers in :mod:`relight3d.pipelines.sds_losses`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Literal, Optional, Tuple, Type

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from torch import Tensor

from relight3d.errors import ConfigError
from relight3d.eval.image_metrics import psnr
from relight3d.models.base import OccupancyFieldModelConfig
from relight3d.models.sds import SDSNGPModelConfig
from relight3d.pipelines.sds_losses import AnnealedValue, alpha_entropy, annealed, normal_smoothness_2d
from relight3d.pipelines.sds_views import (
    PriorView,
    ReferenceViewDataManagerConfig,
    orbit_camera,
    render_square_view,
    sample_prior_view,
)
from relight3d.priors.stable_diffusion import StableDiffusionGuidance, StableDiffusionGuidanceConfig


# --- the pipeline ---------------------------------------------------------------------------------------------------
@dataclass
class ScoreDistillationPipelineConfig(VanillaPipelineConfig):
    """Single-image reconstruction with a Stable Diffusion prior (RealFusion's published defaults)."""

    _target: Type = field(default_factory=lambda: ScoreDistillationPipeline)
    """Pipeline class to instantiate."""
    datamanager: ReferenceViewDataManagerConfig = field(default_factory=ReferenceViewDataManagerConfig)  # type: ignore
    """The reference image (RGBA, square) and its camera."""
    model: OccupancyFieldModelConfig = field(default_factory=SDSNGPModelConfig)
    """The radiance field: a relight3d.models.sds model (NGP here, TensoRF in relight3d-sds-tensorf)."""
    guidance: StableDiffusionGuidanceConfig = field(default_factory=StableDiffusionGuidanceConfig)
    """The Stable Diffusion prior (loaded only for training with a prior weight above 0)."""

    image_loss_weight: AnnealedValue = annealed(5.0)
    """Weight of the reference-view image loss (MSE inside the mask)."""
    mask_loss_weight: AnnealedValue = annealed(0.5)
    """Weight of the reference-view mask loss (MSE between accumulation and alpha)."""
    prior_loss_weight: AnnealedValue = annealed(1.0)
    """Weight of the SDS prior on random views; 0 = reconstruction only (no Stable Diffusion is loaded)."""
    entropy_loss_weight: AnnealedValue = annealed(1e-4)
    """Weight of the alpha entropy of the prior views."""
    orientation_loss_weight: AnnealedValue = annealed(1e-2)
    """Weight of the orientation loss of the prior views (normals facing away from the camera)."""
    normal_smoothness_loss_weight: AnnealedValue = annealed(0.5)
    """Weight of the 2D normal-smoothness loss of the prior views."""
    normal_smoothness_kernel_size: int = 9
    """Gaussian kernel size of the 2D normal-smoothness loss."""

    render_size: int = 96
    """Side, in pixels, of the prior views (RealFusion's HW_synthetic)."""
    radius_range: Tuple[float, float] = (1.0, 1.5)
    """Distance range of the prior cameras from the centre."""
    fov_range: Tuple[float, float] = (40.0, 70.0)
    """Field-of-view range of the prior cameras, in degrees."""
    elevation_range: Tuple[float, float] = (-30.0, 90.0)
    """Elevation range of the prior cameras, in degrees (RealFusion: 0-120 degrees from the vertical)."""
    azimuth_range: Tuple[float, float] = (-180.0, 180.0)
    """Azimuth range of the prior cameras, in degrees relative to the reference view."""
    uniform_sphere_rate: float = 0.5
    """Probability of drawing the prior camera uniformly over the upper hemisphere instead of from the ranges."""
    angle_front: float = 60.0
    """Azimuth width, in degrees, of the 'front' region around the reference view (and of the 'back' region)."""
    angle_overhead: float = 30.0
    """Cameras within this many degrees of the top (bottom) pole are 'overhead' ('bottom') views."""
    reference_camera_every: int = 10
    """Every this many iterations the prior view uses the reference camera (jittered) and the plain prompt; 0
    never."""
    reference_camera_noise: float = 0.02
    """Standard deviation of the jitter of the reference camera's position in those iterations."""
    albedo_iters: int = 1000
    """Iterations with albedo-only shading of the prior views before random shading starts."""
    shading_probabilities: Tuple[float, float, float] = (0.2, 0.4, 0.4)
    """After albedo_iters: probabilities of albedo, lambertian and textureless shading of a prior view."""
    ambient_ratio: float = 0.1
    """Ambient share of the light in lambertian and textureless shading."""
    prior_background: Literal["random", "white"] = "random"
    """Background of the prior views: a random colour per view, or white (the reference view is always white)."""
    prior_rays_per_chunk: int = 4096
    """Prior views with more rays are rendered in chunks under gradient checkpointing: each chunk's graph is rebuilt
    during the backward pass instead of being kept, which bounds memory for about a quarter more compute. With the
    compiled hash grid a 64 px view (4,096 rays) renders in one piece (peak RSS ~1.5 GB on the CPU settings, a
    128 px view ~2.9 GB); the pure-torch reference keeps ~2 MB per ray, so set ~1024 when it is forced. 0 renders
    the whole view at once."""
    eval_views: int = 4
    """Novel views (evenly spaced azimuths at the reference elevation) rendered into the evaluation images."""


class ScoreDistillationPipeline(VanillaPipeline):
    """Reference-view reconstruction + SDS on random views (see the module docstring).

    Args:
        config, device, test_mode, world_size, local_rank, grad_scaler: as for nerfstudio's VanillaPipeline.
        guidance: an already-built guidance (tests, benchmarks); otherwise it is built from ``config.guidance`` when
            training (``test_mode='val'``) with a prior weight above 0.
    """

    config: ScoreDistillationPipelineConfig

    def __init__(
        self,
        config: ScoreDistillationPipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler: Optional[Any] = None,
        guidance: Optional[StableDiffusionGuidance] = None,
    ) -> None:
        weights = [config.image_loss_weight, config.mask_loss_weight, config.prior_loss_weight]
        if not any(w.ever_positive() for w in weights):
            raise ConfigError("--pipeline.prior-loss-weight", "the image, mask and prior weights are all 0")
        super().__init__(config, device, test_mode, world_size, local_rank, grad_scaler)
        self.guidance: Optional[StableDiffusionGuidance] = guidance
        if guidance is None and test_mode == "val" and config.prior_loss_weight.ever_positive():
            if config.guidance.pretrained_model_path is None:
                raise ConfigError(
                    "--pipeline.guidance.pretrained-model-path",
                    f"not set: the SDS prior (weight {config.prior_loss_weight.start:g}) needs a local Stable "
                    "Diffusion folder in the diffusers layout; set it, or set --pipeline.prior-loss-weight.start 0 "
                    "for reconstruction only",
                )
            self.guidance = config.guidance.setup(device=device)
        parser_cfg = self.datamanager.dataparser.config  # type: ignore[attr-defined]
        self.reference_azimuth = float(parser_cfg.azimuth)
        """The reference camera's absolute azimuth (prior cameras' azimuths are relative to it)."""
        radius, elevation = float(parser_cfg.radius), float(parser_cfg.elevation)
        c2w = orbit_camera(radius, elevation, self.reference_azimuth)
        self.reference = PriorView(c2w, float(parser_cfg.fov), elevation, 0.0, radius, None)
        """The reference camera (the input image's), as a prior view with the plain prompt."""

    # --- cameras and rendering --------------------------------------------------------------------------------------
    def sample_prior_view(self, step: int) -> PriorView:
        """The camera of this iteration's prior view: the jittered reference camera every ``reference_camera_every``
        iterations, else a random one (:func:`~relight3d.pipelines.sds_views.sample_prior_view`)."""
        every = self.config.reference_camera_every
        return sample_prior_view(self.config, self.reference, self.reference_azimuth, every > 0 and step % every == 0)

    def sample_shading(self, step: int) -> str:
        """Albedo during the albedo-only iterations, then random per the configured probabilities."""
        if step < self.config.albedo_iters:
            return "albedo"
        p = np.asarray(self.config.shading_probabilities, dtype=np.float64)
        return str(np.random.choice(["albedo", "lambertian", "textureless"], p=p / p.sum()))

    def render_view(
        self,
        camera_to_world: Float[Tensor, "3 4"],
        fov: float,
        size: int,
        shading: str = "albedo",
        light_direction: Optional[Tensor] = None,
        background: Optional[Tensor] = None,
        with_normals: bool = False,
    ) -> Dict[str, Tensor]:
        """Render a square view under a shading mode (the model's ``render_shaded``, :mod:`relight3d.models.sds`);
        outputs are images ``[size, size, c]``. Large views with gradients go in checkpointed chunks
        (``prior_rays_per_chunk``, :func:`~relight3d.pipelines.sds_views.render_square_view`)."""
        ambient = 1.0 if shading == "albedo" else self.config.ambient_ratio
        model: Any = self.model

        def render(o: Tensor, d: Tensor) -> Dict[str, Tensor]:
            return model.render_shaded(o, d, shading, light_direction, ambient, background, with_normals, self.training)

        keys = ["rgb", "accumulation", "depth", "num_samples", "num_visible_samples"]
        if with_normals or shading != "albedo":
            keys += ["normals", "orientation_loss"]
        return render_square_view(
            render, camera_to_world.to(self.device), fov, size, self.config.prior_rays_per_chunk,
            model.config.eval_num_rays_per_chunk, keys,
        )  # fmt: skip

    # --- training -----------------------------------------------------------------------------------------------------
    def get_train_loss_dict(self, step: int) -> Tuple[Dict[str, Tensor], Dict[str, Tensor], Dict[str, Tensor]]:
        cfg = self.config
        model = self.model
        losses: Dict[str, Tensor] = {}
        metrics: Dict[str, Tensor] = {}
        outputs: Dict[str, Tensor] = {}

        w_image, w_mask = cfg.image_loss_weight.value(step), cfg.mask_loss_weight.value(step)
        if w_image > 0 or w_mask > 0:
            ray_bundle, batch = self.datamanager.next_train(step)
            outputs = model(ray_bundle)
            image = batch["image"].to(self.device)
            rgb, alpha = image[..., :3], image[..., 3:]
            if w_image > 0:
                losses["image_loss"] = w_image * F.mse_loss(outputs["rgb"] * alpha, rgb * alpha)
            if w_mask > 0:
                losses["mask_loss"] = w_mask * F.mse_loss(outputs["accumulation"], alpha)
            metrics.update(model.get_metrics_dict(outputs, batch))
            # The model's own regularisers (e.g. TensoRF's L1 on density), without its reconstruction loss.
            extra = model.get_loss_dict(outputs, batch, metrics)
            losses.update({k: v for k, v in extra.items() if k != "rgb_loss"})

        w_prior = cfg.prior_loss_weight.value(step)
        if w_prior > 0:
            if self.guidance is None:
                raise RuntimeError("ScoreDistillationPipeline: the prior weight is above 0 but no guidance is loaded")
            losses.update(self._prior_view_losses(step, w_prior, metrics))
        if not losses:
            raise ConfigError("--pipeline.*-loss-weight", f"every loss weight is 0 at iteration {step}")
        return outputs, losses, metrics

    def _prior_view_losses(self, step: int, w_prior: float, metrics: Dict[str, Tensor]) -> Dict[str, Tensor]:
        cfg = self.config
        assert self.guidance is not None
        view = self.sample_prior_view(step)
        shading = self.sample_shading(step)
        light = None
        if shading != "albedo":
            light = F.normalize(view.camera_to_world[:, 3] + torch.randn(3), dim=0).to(self.device)
        background = torch.rand(3, device=self.device) if cfg.prior_background == "random" else None
        w_entropy = cfg.entropy_loss_weight.value(step)
        w_orient = cfg.orientation_loss_weight.value(step)
        w_smooth = cfg.normal_smoothness_loss_weight.value(step)
        render = self.render_view(
            view.camera_to_world, view.fov, cfg.render_size, shading, light, background,
            with_normals=w_orient > 0 or w_smooth > 0,
        )  # fmt: skip
        images = render["rgb"].permute(2, 0, 1)[None]
        sds = self.guidance.sds_loss(images, self.guidance.text_embeddings(view.direction))
        losses = {"sds_loss": w_prior * sds["loss_sds"]}
        metrics["sds_grad_norm"] = sds["grad_norm"]
        metrics["sds_timestep"] = sds["timestep"]
        if w_entropy > 0:
            losses["entropy_loss"] = w_entropy * alpha_entropy(render["accumulation"])
        if w_orient > 0:
            losses["orientation_loss"] = w_orient * render["orientation_loss"].mean()
        if w_smooth > 0:
            normal_image = render["normals"].permute(2, 0, 1)[None]
            losses["normal_smoothness_loss"] = w_smooth * normal_smoothness_2d(
                normal_image, cfg.normal_smoothness_kernel_size
            )
        return losses

    # --- evaluation -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate_reference_view(self, size: Optional[int] = None) -> Dict[str, float]:
        """Render the reference view (at ``size`` pixels, default the image's own) and compare it with the image.

        Returns PSNR over the image composited on the model's background, PSNR inside the mask, and the image
        (inside-mask MSE) and mask losses without their weights.
        """
        was_training = self.training
        self.eval()
        image = self.datamanager.train_images[0].to(self.device)  # type: ignore[attr-defined]
        if size is not None and size != image.shape[0]:
            image = F.interpolate(image.permute(2, 0, 1)[None], (size, size), mode="area")[0].permute(1, 2, 0)
        side = image.shape[0]
        render = self.render_view(self.reference.camera_to_world, self.reference.fov, side)
        if was_training:
            self.train()
        rgb, alpha = image[..., :3], image[..., 3:]
        background = self.model.background
        gt = rgb * alpha + background * (1.0 - alpha)
        pred = render["rgb"].clamp(0.0, 1.0)
        return {
            "psnr": float(psnr(pred, gt)),
            "psnr_masked": float(psnr(pred, gt, (alpha > 0.5).float())),
            "image_loss": float(F.mse_loss(render["rgb"] * alpha, rgb * alpha)),
            "mask_loss": float(F.mse_loss(render["accumulation"], alpha)),
        }

    @torch.no_grad()
    def get_eval_image_metrics_and_images(self, step: int) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        """nerfstudio's reference-view metrics and images, plus novel views around the object."""
        metrics, images = super().get_eval_image_metrics_and_images(step)
        if self.config.eval_views > 0:
            was_training = self.training
            self.eval()
            ref, size = self.reference, self.config.render_size
            renders = []
            for k in range(self.config.eval_views):
                azimuth = self.reference_azimuth + 360.0 * k / self.config.eval_views
                c2w = orbit_camera(ref.radius, ref.elevation, azimuth)
                renders.append(self.render_view(c2w, ref.fov, size)["rgb"].clamp(0.0, 1.0))
            images["novel_views"] = torch.cat(renders, dim=1)
            if was_training:
                self.train()
        return metrics, images
