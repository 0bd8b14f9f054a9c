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
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Type

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from relight3d.data.datamanager import InMemoryDataManagerConfig
from relight3d.data.errors import DataError
from relight3d.data.single_image import (  # pad_image_to_square: cached under the user's cache folder
    SingleImageDataParser,
    SingleImageDataParserConfig,
    look_at_camera_to_world,
    orbit_position,
    pad_image_to_square,
)
from relight3d.data.validation import image_size
from relight3d.eval.image_metrics import psnr
from relight3d.models.base import OccupancyFieldModelConfig
from relight3d.models.sds import SDSNGPModelConfig
from relight3d.priors.stable_diffusion import StableDiffusionGuidance, StableDiffusionGuidanceConfig


# --- annealed weights ---------------------------------------------------------------------------------------------
@dataclass
class AnnealedValue:
    """A value that may change over training: ``start`` until annealing, reaching ``end`` at ``end_iteration``."""

    start: float = 0.0
    """Value at iteration 0 (and throughout when ``end`` is None)."""
    end: Optional[float] = None
    """Value from ``end_iteration`` on; None keeps ``start`` constant."""
    end_iteration: int = 5000
    """Iteration at which ``end`` is reached."""
    schedule: Literal["linear", "log"] = "linear"
    """Interpolation: linear, or linear in log space (start and end must then be positive)."""

    def value(self, step: int) -> float:
        """The value at iteration ``step``."""
        if self.end is None or self.end == self.start:
            return self.start
        frac = min(max(step / max(self.end_iteration, 1), 0.0), 1.0)
        if self.schedule == "log":
            if self.start <= 0 or self.end <= 0:
                raise ValueError(f"AnnealedValue: log schedule needs positive start and end, got {self}")
            return math.exp((1.0 - frac) * math.log(self.start) + frac * math.log(self.end))
        return (1.0 - frac) * self.start + frac * self.end

    def ever_positive(self) -> bool:
        """Whether the value is above 0 at some iteration."""
        return self.start > 0 or (self.end is not None and self.end > 0)


def _weight(value: float) -> Any:
    return field(default_factory=lambda: AnnealedValue(value))


# --- the reference image ------------------------------------------------------------------------------------------
@dataclass
class ReferenceImageDataParserConfig(SingleImageDataParserConfig):
    """The input RGBA image of single-image reconstruction (square), seen from a configurable camera.

    Defaults follow RealFusion: the camera 15 degrees above the horizon (pose angle 75 from the vertical), 1.8 from
    the centre, a 55-degree field of view, a scene box of half-size 0.75.
    """

    _target: Type = field(default_factory=lambda: ReferenceImageDataParser)
    """Dataparser class to instantiate."""
    elevation: float = 15.0
    """Camera elevation in degrees above the horizontal plane."""
    radius: float = 1.8
    """Camera distance from the origin."""
    fov: float = 55.0
    """Field of view in degrees."""
    scene_scale: float = 0.75
    """Half-size of the scene box (RealFusion's bound)."""
    pad_to_square: bool = False
    """Pad a non-square image with transparent pixels to a square (otherwise a non-square image is an error)."""


class ReferenceImageDataParser(SingleImageDataParser):
    """:class:`SingleImageDataParser` that requires (or pads to) a square image."""

    config: ReferenceImageDataParserConfig

    def _generate_dataparser_outputs(self, split: str = "train") -> DataparserOutputs:
        path = Path(self.config.data)
        (width, height), mode = image_size(path)
        if mode in ("RGBA", "LA") and width != height:
            if not self.config.pad_to_square:
                raise DataError(
                    path,
                    f"image is {width}x{height} but must be square: crop it, or pad it with "
                    "--pipeline.datamanager.dataparser.pad-to-square True",
                )
            path = pad_image_to_square(path)
        return SingleImageDataParser(dataclasses.replace(self.config, data=path))._generate_dataparser_outputs(split)


@dataclass
class ReferenceViewDataManagerConfig(InMemoryDataManagerConfig):
    """Random rays of the reference image."""

    dataparser: ReferenceImageDataParserConfig = field(default_factory=ReferenceImageDataParserConfig)  # type: ignore
    """The reference image and its camera."""
    train_num_rays_per_batch: int = 4096
    """Reference-view rays per iteration (RealFusion: 4096)."""
    eval_num_rays_per_batch: int = 4096
    """Rays per evaluation batch."""


# --- prior cameras ------------------------------------------------------------------------------------------------
@dataclass
class PriorView:
    """A camera for the prior: pose, field of view and the prompt direction it maps to."""

    camera_to_world: Float[Tensor, "3 4"]
    fov: float
    elevation: float
    azimuth: float
    """Azimuth relative to the reference view, in (-180, 180]."""
    radius: float
    direction: Optional[str]
    """'front' / 'side' / 'back' / 'overhead' / 'bottom', or None for the reference camera (plain prompt)."""


def view_direction(elevation: float, relative_azimuth: float, angle_front: float, angle_overhead: float) -> str:
    """The prompt direction of a camera: overhead/bottom within ``angle_overhead`` of the poles, else front/back
    within ``angle_front / 2`` of the reference azimuth / its opposite, else side."""
    if elevation >= 90.0 - angle_overhead:
        return "overhead"
    if elevation <= -(90.0 - angle_overhead):
        return "bottom"
    a = abs((relative_azimuth + 180.0) % 360.0 - 180.0)
    if a <= angle_front / 2.0:
        return "front"
    if a >= 180.0 - angle_front / 2.0:
        return "back"
    return "side"


def camera_rays(
    camera_to_world: Float[Tensor, "3 4"], fov: float, size: int
) -> Tuple[Float[Tensor, "n 3"], Float[Tensor, "n 3"]]:
    """Origins and unit directions of a square pinhole image (OpenGL camera: -Z forward, +Y up), row-major."""
    focal = 0.5 * size / math.tan(math.radians(fov) / 2.0)
    c2w = camera_to_world.float()
    pix = torch.arange(size, device=c2w.device, dtype=torch.float32) + 0.5
    v, u = torch.meshgrid(pix, pix, indexing="ij")
    dirs_cam = torch.stack([(u - size / 2) / focal, -(v - size / 2) / focal, -torch.ones_like(u)], -1)
    dirs = F.normalize(dirs_cam.reshape(-1, 3) @ c2w[:, :3].T, dim=-1)
    return c2w[:, 3].expand_as(dirs).contiguous(), dirs


def gaussian_blur(images: Float[Tensor, "b c h w"], kernel_size: int) -> Float[Tensor, "b c h w"]:
    """Separable Gaussian blur with torchvision's default sigma for the kernel size, reflect-padded."""
    sigma = 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8
    x = torch.arange(kernel_size, device=images.device, dtype=images.dtype) - (kernel_size - 1) / 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    c = images.shape[1]
    pad = kernel_size // 2
    out = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def alpha_entropy(accumulation: Tensor) -> Tensor:
    """Mean binary entropy (bits) of per-ray opacity: low when rays are either empty or opaque."""
    a = accumulation.clamp(1e-5, 1.0 - 1e-5)
    return (-a * torch.log2(a) - (1.0 - a) * torch.log2(1.0 - a)).mean()


def normal_smoothness_2d(normal_image: Float[Tensor, "b 3 h w"], kernel_size: int) -> Tensor:
    """RealFusion's 2D smoothness: MSE between the normal image and its (detached) Gaussian blur."""
    return F.mse_loss(normal_image, gaussian_blur(normal_image, kernel_size).detach())


def _merge_chunks(parts: List[Dict[str, Tensor]]) -> Dict[str, Tensor]:
    """Concatenate per-ray outputs of ray chunks; sum (and detach) the 'num_*' counters."""
    merged = {}
    for k in parts[0]:
        values = [p[k] for p in parts]
        merged[k] = torch.stack(values).sum().detach() if k.startswith("num_") else torch.cat(values)
    return merged


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

    image_loss_weight: AnnealedValue = _weight(5.0)
    """Weight of the reference-view image loss (MSE inside the mask)."""
    mask_loss_weight: AnnealedValue = _weight(0.5)
    """Weight of the reference-view mask loss (MSE between accumulation and alpha)."""
    prior_loss_weight: AnnealedValue = _weight(1.0)
    """Weight of the SDS prior on random views; 0 = reconstruction only (no Stable Diffusion is loaded)."""
    entropy_loss_weight: AnnealedValue = _weight(1e-4)
    """Weight of the alpha entropy of the prior views."""
    orientation_loss_weight: AnnealedValue = _weight(1e-2)
    """Weight of the orientation loss of the prior views (normals facing away from the camera)."""
    normal_smoothness_loss_weight: AnnealedValue = _weight(0.5)
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
    prior_rays_per_chunk: int = 1024
    """Prior views with more rays are rendered in chunks under gradient checkpointing: each chunk's graph is rebuilt
    during the backward pass instead of being kept, which bounds memory for about a quarter more compute (the
    pure-torch hash grid keeps ~2 MB per ray: a whole 128 px view would need tens of GB). 0 renders the whole view
    at once (fine on a GPU with tinycudann)."""
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
        weights = [
            config.image_loss_weight, config.mask_loss_weight, config.prior_loss_weight,
        ]  # fmt: skip
        if not any(w.ever_positive() for w in weights):
            raise DataError("--pipeline.prior-loss-weight", "the image, mask and prior weights are all 0")
        super().__init__(config, device, test_mode, world_size, local_rank, grad_scaler)
        self.guidance: Optional[StableDiffusionGuidance] = guidance
        if guidance is None and test_mode == "val" and config.prior_loss_weight.ever_positive():
            if config.guidance.pretrained_model_path is None:
                raise DataError(
                    "--pipeline.guidance.pretrained-model-path",
                    f"not set: the SDS prior (weight {config.prior_loss_weight.start:g}) needs a local Stable "
                    "Diffusion folder in the diffusers layout; set it, or set --pipeline.prior-loss-weight.start 0 "
                    "for reconstruction only",
                )
            self.guidance = config.guidance.setup(device=device)
        parser_cfg = self.datamanager.dataparser.config  # type: ignore[attr-defined]
        self.reference_elevation = float(parser_cfg.elevation)
        self.reference_azimuth = float(parser_cfg.azimuth)
        self.reference_radius = float(parser_cfg.radius)
        self.reference_fov = float(parser_cfg.fov)

    # --- cameras ----------------------------------------------------------------------------------------------------
    def reference_camera_to_world(self) -> Float[Tensor, "3 4"]:
        """The reference camera's pose."""
        pos = orbit_position(self.reference_radius, self.reference_elevation, self.reference_azimuth)
        return torch.from_numpy(look_at_camera_to_world(pos)).float()

    def sample_prior_view(self, step: int) -> PriorView:
        """The camera of this iteration's prior view (random, or the jittered reference camera)."""
        cfg = self.config
        if cfg.reference_camera_every > 0 and step % cfg.reference_camera_every == 0:
            pos = orbit_position(self.reference_radius, self.reference_elevation, self.reference_azimuth)
            pos = pos + np.random.normal(0.0, cfg.reference_camera_noise, 3) if cfg.reference_camera_noise > 0 else pos
            c2w = torch.from_numpy(look_at_camera_to_world(pos)).float()
            return PriorView(c2w, self.reference_fov, self.reference_elevation, 0.0, self.reference_radius, None)
        radius = float(np.random.uniform(*cfg.radius_range))
        fov = float(np.random.uniform(*cfg.fov_range))
        if np.random.rand() < cfg.uniform_sphere_rate:
            # Uniform on the upper hemisphere: the height of a uniform point on a sphere is uniform (Archimedes).
            elevation = math.degrees(math.asin(float(np.random.uniform(0.0, 1.0))))
            relative_azimuth = float(np.random.uniform(-180.0, 180.0))
        else:
            elevation = float(np.random.uniform(*cfg.elevation_range))
            relative_azimuth = float(np.random.uniform(*cfg.azimuth_range))
        relative_azimuth = (relative_azimuth + 180.0) % 360.0 - 180.0
        pos = orbit_position(radius, elevation, self.reference_azimuth + relative_azimuth)
        c2w = torch.from_numpy(look_at_camera_to_world(pos)).float()
        direction = view_direction(elevation, relative_azimuth, cfg.angle_front, cfg.angle_overhead)
        return PriorView(c2w, fov, elevation, relative_azimuth, radius, direction)

    def sample_shading(self, step: int) -> str:
        """Albedo during the albedo-only iterations, then random per the configured probabilities."""
        if step < self.config.albedo_iters:
            return "albedo"
        p = np.asarray(self.config.shading_probabilities, dtype=np.float64)
        return str(np.random.choice(["albedo", "lambertian", "textureless"], p=p / p.sum()))

    # --- rendering ----------------------------------------------------------------------------------------------------
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
        """Render a square view; outputs are images ``[size, size, c]``."""
        origins, directions = camera_rays(camera_to_world.to(self.device), fov, size)
        ambient = 1.0 if shading == "albedo" else self.config.ambient_ratio
        model: Any = self.model

        def render(o: Tensor, d: Tensor) -> Dict[str, Tensor]:
            return model.render_shaded(o, d, shading, light_direction, ambient, background, with_normals, self.training)

        chunk = self.config.prior_rays_per_chunk
        n = origins.shape[0]
        if not torch.is_grad_enabled():  # evaluation: plain chunks of the model's evaluation size
            step = model.config.eval_num_rays_per_chunk
            out = _merge_chunks([render(origins[s : s + step], directions[s : s + step]) for s in range(0, n, step)])
        elif chunk <= 0 or n <= chunk:
            out = render(origins, directions)
        else:
            keys = ["rgb", "accumulation", "depth", "num_samples", "num_visible_samples"]
            if with_normals or shading != "albedo":
                keys += ["normals", "orientation_loss"]

            def render_chunk(o: Tensor, d: Tensor, _anchor: Tensor) -> Tuple[Tensor, ...]:
                result = render(o, d)
                return tuple(result[k] for k in keys)

            # Reentrant checkpointing: the forward keeps no graph; the backward re-renders one chunk at a time (the
            # jitter's random state is replayed) and back-propagates it before the next, so that only one chunk's
            # graph ever exists. (The non-reentrant variant keeps recomputed tensors that are never unpacked until
            # the whole backward ends, which on a CPU adds up to the whole view.) ``_anchor`` requires grad so
            # that the outputs do and the backward reaches the chunks.
            anchor = torch.ones((), device=origins.device, requires_grad=True)
            pieces = [
                checkpoint(render_chunk, origins[s : s + chunk], directions[s : s + chunk], anchor, use_reentrant=True)
                for s in range(0, n, chunk)
            ]
            out = _merge_chunks([dict(zip(keys, piece)) for piece in pieces])
        return {k: (v.view(size, size, -1) if v.dim() == 2 else v) for k, v in out.items()}

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
            raise RuntimeError(f"ScoreDistillationPipeline: every loss weight is 0 at iteration {step}")
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
        render = self.render_view(self.reference_camera_to_world(), self.reference_fov, side)
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
            size = self.config.render_size
            renders = []
            for k in range(self.config.eval_views):
                azimuth = self.reference_azimuth + 360.0 * k / self.config.eval_views
                pos = orbit_position(self.reference_radius, self.reference_elevation, azimuth)
                c2w = torch.from_numpy(look_at_camera_to_world(pos)).float()
                renders.append(self.render_view(c2w, self.reference_fov, size)["rgb"].clamp(0.0, 1.0))
            images["novel_views"] = torch.cat(renders, dim=1)
            if was_training:
                self.train()
        return metrics, images
