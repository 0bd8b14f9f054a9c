"""Two-stage relighting of a trained radiance field with a 2D relighting prior (Neural Gaffer's 3D relighting).

The pipeline owns the prior; the model stays a radiance field.

* **Stage 1.** Every training view is relit by the prior under the target environment map (rotated into that
  view's camera frame by the prior itself). The relit views are cached on disk in Neural Gaffer's stage-1 layout
  (``input_image/``, ``pred_image/``, ``target_envmap_hdr/``, ``target_envmap_ldr/``, ``target_RT/``), written
  into the datamanager in place of the training images, and the field's appearance is refit on them with its
  density frozen (MSE on random rays, as in Neural Gaffer: 2,500 iterations, lr 2e-2 for the appearance grids and
  1e-3 for the basis / decoder; all config values).
* **Stage 2.** Each iteration renders a full training view, refines it with the prior (SDEdit-style: partial
  noising to ``t*`` then denoising, for diffusion priors), and fits the render to the refined image with L1 (+ LPIPS
  when its weights are available) + image total variation. ``t*`` is annealed from ``t_star_start`` to
  ``t_star_end`` (exponentially by default, as the paper describes; the public code keeps it effectively constant,
  which ``t_star_schedule="constant"`` reproduces).

The field comes from a trained ``relight3d-tensorf`` / ``relight3d-ngp`` run (``field_run``: its ``config.yml``):
the model config, the data and the latest checkpoint of that run are used, geometry is frozen, and the upsampling /
box-shrinking / carving schedules of the original training are switched off.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Dict, List, Literal, Mapping, Optional, Tuple, Type, Union

import numpy as np
import torch
import torch.nn.functional as F
import tyro
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from PIL import Image
from torch import Tensor
from torch.nn import Parameter

from relight3d.data.errors import DataError
from relight3d.priors import (
    ICLightPriorConfig,
    InstructPix2PixPriorConfig,
    NeuralGafferPriorConfig,
    PhysicalPriorConfig,
    RelightingPrior,
)

PriorChoice = Union[
    Annotated[PhysicalPriorConfig, tyro.conf.subcommand(name="physical")],
    Annotated[NeuralGafferPriorConfig, tyro.conf.subcommand(name="neural-gaffer")],
    Annotated[ICLightPriorConfig, tyro.conf.subcommand(name="ic-light")],
    Annotated[InstructPix2PixPriorConfig, tyro.conf.subcommand(name="instruct-pix2pix")],
]
"""Priors ``ns-train relight3d-gaffer`` can use, chosen as ``pipeline.prior:physical`` (default),
``pipeline.prior:neural-gaffer``, ``pipeline.prior:ic-light`` or ``pipeline.prior:instruct-pix2pix``."""

FIELD_METHODS = ("relight3d-tensorf", "relight3d-ngp")
"""Methods whose trained fields can be relit."""
STAGE1_DIRS = ("input_image", "pred_image", "target_envmap_hdr", "target_envmap_ldr", "target_RT")


@dataclass
class RelightingPipelineConfig(VanillaPipelineConfig):
    """Neural Gaffer's two-stage relighting of a trained field under a target environment map."""

    _target: Type = field(default_factory=lambda: RelightingPipeline)
    """Pipeline class to instantiate."""
    field_run: Optional[Path] = None
    """``config.yml`` of the trained relight3d-tensorf / relight3d-ngp run whose field is relit (its latest
    checkpoint is loaded; its data is used unless ``--data`` is given)."""
    target_envmap: Optional[Path] = None
    """Target HDR environment map (.exr / .hdr, linear radiance, Blender's equirectangular convention)."""
    target_envmap_strength: float = 1.0
    """Multiplier on the target map's radiance (Blender's Background strength)."""
    target_rotation_deg: float = 0.0
    """Rotation of the target map about the world's up axis, in degrees (counter-clockwise seen from above)."""
    source_envmap: Optional[Path] = None
    """The training light, for priors that need it (the physical prior). Default: the map the data records for
    the training light (the dataparser's map of an Objaverse-layout folder, or ``lights[0].file`` of the data
    folder's ``meta.json``, as the Cycles benchmark writes), else one estimated from the field
    (:mod:`relight3d.lighting.estimate`: order-2 SH lighting fitted to the training images at the field's normals)."""
    source_envmap_strength: float = 1.0
    """Multiplier on the source map's radiance (a given or recorded map; not the estimate)."""
    estimate_source: bool = False
    """Estimate the training light from the field even when the data records it (to measure the estimator)."""
    source_assumed_albedo: float = 0.6
    """Estimated source light: the albedo the 95th percentile of the implied albedo is scaled to (the scale of a
    light and an albedo cannot be told apart from one light)."""
    prior: PriorChoice = field(default_factory=PhysicalPriorConfig)
    """The 2D relighting prior (physical by default: no weights needed)."""
    stage1_steps: int = 2500
    """Appearance-refit iterations on the stage-1 relit views (Neural Gaffer: 2,500)."""
    stage2_steps: int = 500
    """Stage-2 iterations (render a view, refine it with the prior, fit)."""
    stage1_batch_size: int = 8
    """Views per prior call in stage 1."""
    stage2_render_scale: float = 1.0
    """Stage-2 renders views at this fraction of the training resolution."""
    t_star_start: float = 0.4
    """Stage-2 noise level t* at its first iteration (fraction of the diffusion's timesteps)."""
    t_star_end: float = 0.05
    """Stage-2 noise level t* at its last iteration."""
    t_star_schedule: Literal["exponential", "linear", "constant"] = "exponential"
    """How t* moves from start to end over stage 2 ('constant' keeps t_star_start, like the public code)."""
    stage2_lr_scale: float = 0.1
    """Every learning rate is multiplied by this when stage 2 starts. A stage-2 iteration fits one view, and Adam's
    normalised steps at the stage-1 rates drift the shared appearance basis and decoder: on the generated armadillo
    under forest, 50 such iterations after 600 of stage 1 took the in-mask PSNR from 23.7 to 16.0 dB (raw)."""
    stage2_l1_weight: float = 1.0
    """Weight of the L1 loss between the render and its refined version."""
    stage2_lpips_weight: float = 0.0
    """Weight of LPIPS between the render and its refined version (needs LPIPS weights; see relight3d.eval)."""
    stage2_tv_weight: float = 0.01
    """Weight of the total variation of the rendered image."""
    normal_fusion_resolution: int = 128
    """Cells per side of the voxel grid in which the training views' normals (density gradient + depth) are
    averaged into the ``"multiview_normals"`` G-buffer (:func:`relight3d.priors.normals.fuse_view_normals`);
    0 leaves it out."""
    cache_dir: Optional[Path] = None
    """Folder of the stage-1 cache. Default: ``stage1/`` next to this run's checkpoints."""
    field_cache_dir: Optional[Path] = None
    """Folder where the frozen field's training-view G-buffers and light visibility are kept between runs on the
    same field (keyed by the field's weights, the cameras and the settings; ``relight3d relight`` shares one
    across its maps, since tracing the shadows costs the same for every map). None: computed in every run."""
    seed: int = 0
    """Seed of the prior's sampling and of stage 2's view order."""


def t_star_at(step: int, total: int, start: float, end: float, schedule: str) -> float:
    """The stage-2 noise level at ``step`` of ``total`` (exponential: geometric interpolation start -> end)."""
    if schedule == "constant" or total <= 1:
        return start
    s = min(max(step / (total - 1), 0.0), 1.0)
    if schedule == "linear":
        return start + (end - start) * s
    return start * (end / start) ** s


def image_total_variation(image: Float[Tensor, "h w c"]) -> Tensor:
    """Mean absolute difference between neighbouring pixels."""
    return (image[1:] - image[:-1]).abs().mean() + (image[:, 1:] - image[:, :-1]).abs().mean()


def camera_rays(camera: Cameras, scale: float = 1.0) -> Tuple[Tensor, Tensor, Tuple[int, int]]:
    """Origins and directions (flattened) of one camera's pixels, optionally rescaled."""
    cam = copy.deepcopy(camera)
    if scale != 1.0:
        cam.rescale_output_resolution(scale)
    bundle = cam.generate_rays(camera_indices=0, keep_shape=True)
    h, w = bundle.origins.shape[:2]
    return bundle.origins.reshape(-1, 3), bundle.directions.reshape(-1, 3), (h, w)


def render_view(
    model,  # noqa: ANN001 - an OccupancyFieldModel
    camera: Cameras,
    extra_outputs: Tuple[str, ...] = (),
    scale: float = 1.0,
    chunk: int = 1 << 14,
) -> Dict[str, Tensor]:
    """Render one camera (``[h, w, c]`` outputs) in chunks; differentiable when gradients are enabled."""
    origins, directions, (h, w) = camera_rays(camera.to(model.device), scale)
    parts: Dict[str, List[Tensor]] = {}
    for i in range(0, origins.shape[0], chunk):
        out = model.render_rays(origins[i : i + chunk], directions[i : i + chunk], extra_outputs)
        for k in ("rgb", "accumulation", "depth", *extra_outputs):
            v = out[k]
            parts.setdefault(k, []).append(v if v.dim() == 2 else v[:, None])
    return {k: torch.cat(v).reshape(h, w, -1) for k, v in parts.items()}


def straight_rgb(
    rgb: Float[Tensor, "*s 3"], accumulation: Float[Tensor, "*s 1"], background: Float[Tensor, "3"]
) -> Float[Tensor, "*s 3"]:
    """The object's own (straight-alpha) colour of a render that :meth:`render_rays` composited on ``background``.

    Renders are ``rgb = sum_i w_i c_i + (1 - acc) * background``. Anything that composites again with the
    accumulation as alpha (an RGBA PNG read by :mod:`relight3d.eval`, a prior's mask) needs ``sum_i w_i c_i / acc``
    instead, or the background is blended in twice: a half-covered edge pixel of colour ``c`` on white would become
    ``c/4 + 3/4`` instead of ``c/2 + 1/2``. Where the accumulation is below 1/255 the background itself is returned.
    """
    acc = accumulation.clamp(0.0, 1.0)
    bg = background.to(rgb)
    colour = (rgb - (1.0 - acc) * bg) / acc.clamp_min(1.0 / 255.0)
    return torch.where(acc >= 1.0 / 255.0, colour.clamp(0.0, 1.0), bg.expand_as(rgb))


def load_field_run(config_path: Path) -> Tuple[Any, Dict[str, Tensor], int]:
    """The trainer config, model state dict and step of a trained relight3d-tensorf / relight3d-ngp run."""
    from relight3d.engine.loading import checkpoint_dir, read_trainer_config
    from relight3d.engine.trainer import latest_checkpoint, load_checkpoint_file

    config_path = Path(config_path)
    if config_path.is_dir():
        config_path = config_path / "config.yml"
    if not config_path.is_file():
        raise DataError(config_path, "trained field config not found (pass the config.yml of a relight3d run)")
    try:
        cfg = read_trainer_config(config_path)
    except DataError as err:
        raise DataError(config_path, f"field checkpoint: {err.problem}") from None
    if cfg.method_name not in FIELD_METHODS:
        raise DataError(
            config_path,
            f"field checkpoint is from method {cfg.method_name!r}; relighting needs one of {', '.join(FIELD_METHODS)}",
        )
    ckpt_dir = checkpoint_dir(cfg, config_path)
    ckpt = latest_checkpoint(ckpt_dir)
    if ckpt is None:
        raise DataError(ckpt_dir, "no step-*.ckpt checkpoint in the trained run")
    state = load_checkpoint_file(ckpt)
    prefix = "_model."
    model_state = {k[len(prefix) :]: v for k, v in state["pipeline"].items() if k.startswith(prefix)}
    if not model_state:
        raise DataError(ckpt, "checkpoint holds no model weights")
    return cfg, model_state, int(state["step"])


def _fingerprint(obj: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _save_png(path: Path, image: Tensor) -> None:
    arr = (image.detach().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr).save(path)


def _load_png(path: Path) -> Tensor:
    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0)


class RelightingPipeline(VanillaPipeline):
    """Stage 1 (relight the training views, refit appearance) then stage 2 (render, refine, fit)."""

    config: RelightingPipelineConfig

    def __init__(self, config: RelightingPipelineConfig, device: str, test_mode: str = "val", **kwargs: Any) -> None:
        field_state: Optional[Dict[str, Tensor]] = None
        if config.field_run is not None and (test_mode != "inference" or Path(config.field_run).exists()):
            trained, field_state, _ = load_field_run(Path(config.field_run))
            model_cfg = copy.deepcopy(trained.pipeline.model)
            # The field is only refit: no upsampling, no box shrinking, no carving, no occupancy updates.
            for name, value in (("upsampling_iters", ()), ("shrink_iters", ()), ("carve_with_masks", False)):
                if hasattr(model_cfg, name):
                    setattr(model_cfg, name, value)
            model_cfg.freeze_geometry = True
            config.model = model_cfg
            # The data as the field was trained on it (same dataparser and splits); --data only moves the folder.
            datamanager = copy.deepcopy(trained.pipeline.datamanager)
            if config.datamanager.data is not None:
                datamanager.data = config.datamanager.data
            config.datamanager = datamanager
        elif config.field_run is None and test_mode != "inference":
            raise DataError("--pipeline.field-run", "relighting needs a trained field: pass its config.yml")
        super().__init__(config, device, test_mode=test_mode, **kwargs)
        if field_state is not None:
            digest = hashlib.sha256()
            for key_, value in sorted(field_state.items()):
                digest.update(key_.encode())
                digest.update(value.detach().cpu().contiguous().numpy().tobytes())
            self.__dict__["_field_digest"] = digest.hexdigest()[:16]
            missing, unexpected = self.model.load_state_dict(field_state, strict=False)
            if missing or unexpected:
                raise DataError(
                    config.field_run,
                    f"checkpoint does not fit the model (missing {missing[:3]}, extra {unexpected[:3]})",
                )
        self.model.freeze_geometry(True)
        # The prior is kept out of the module tree: its weights are not part of this pipeline's checkpoints.
        self.__dict__["_prior"] = None
        self.__dict__["_stage1_done"] = False
        self.__dict__["_gbuffers"] = None
        self.__dict__["timings"] = {"stage1_seconds": 0.0, "stage1_views": 0, "stage2_seconds": 0.0, "stage2_iters": 0}
        self._generator = torch.Generator().manual_seed(config.seed)
        if test_mode != "inference":  # read and check the maps and strengths now, so bad ones fail before training
            from relight3d.errors import ConfigError
            from relight3d.lighting.envmap_io import check_strength, read_envmap

            if min(config.stage1_steps, config.stage2_steps) < 0:
                raise ConfigError("--pipeline.stage1-steps/--pipeline.stage2-steps", "must be >= 0")
            check_strength("--pipeline.target-envmap-strength", config.target_envmap_strength)
            check_strength("--pipeline.source-envmap-strength", config.source_envmap_strength)
            self.target_envmap()
            if config.source_envmap is not None:
                read_envmap(config.source_envmap)

    # --- setup helpers -----------------------------------------------------------------------------------------
    @property
    def prior(self) -> RelightingPrior:
        """The prior, built on first use (loading weights is slow and not needed for inference)."""
        if self.__dict__["_prior"] is None:
            self.__dict__["_prior"] = self.config.prior.setup(device=str(self.device))
        return self.__dict__["_prior"]

    def target_envmap(self) -> Float[Tensor, "h w 3"]:
        """The target map (strength and up-axis rotation applied), in world coordinates."""
        from relight3d.lighting import read_envmap, rotate_envmap_about_up

        c = self.config
        if c.target_envmap is None:
            raise DataError("--pipeline.target-envmap", "relighting needs a target environment map")

        def load() -> Tensor:
            env = read_envmap(c.target_envmap) * c.target_envmap_strength
            if c.target_rotation_deg:
                env = rotate_envmap_about_up(env, math.radians(c.target_rotation_deg))
            return env

        return self._cached(
            "_target_envmap", (str(c.target_envmap), c.target_envmap_strength, c.target_rotation_deg), load
        )

    def recorded_source_envmap(self) -> Optional[Path]:
        """The training light's map as the data records it: the dataparser's (Objaverse layout) or ``lights[0]``
        of the data folder's ``meta.json`` (the Cycles benchmark's Blender layout and ``relight3d demo``)."""
        from relight3d.data.validation import resolve_inside

        meta = self.datamanager.train_dataparser_outputs.metadata
        paths = [p for p in (meta.get("envmap_paths") or {}).values() if p is not None]
        if len(paths) == 1:
            return Path(paths[0])
        data = self.datamanager.config.data
        meta_path = Path(data) / "meta.json" if data is not None else None
        if meta_path is None or not meta_path.is_file():
            return None
        try:
            lights = json.loads(meta_path.read_text()).get("lights")
        except (OSError, ValueError, AttributeError):
            return None
        if not isinstance(lights, list) or not lights or not isinstance(lights[0], dict):
            return None
        file = lights[0].get("file")
        if not isinstance(file, str) or not file:
            return None
        allow = bool(getattr(self.datamanager.config.dataparser, "allow_outside_paths", False))
        path = resolve_inside(Path(data), file, meta_path, "lights[0].file", allow)
        return path if path.is_file() else None

    def source_envmap(self) -> Optional[Float[Tensor, "h w 3"]]:
        """The training light: the configured map, else the one the data records, else (for priors that need
        one) an estimate from the field; None when the prior needs none and none is known."""
        from relight3d.lighting import read_envmap

        c = self.config
        if c.estimate_source and c.source_envmap is not None:
            from relight3d.errors import ConfigError

            raise ConfigError("--pipeline.estimate-source", "cannot be combined with --pipeline.source-envmap")
        path = None if c.estimate_source else (c.source_envmap or self.recorded_source_envmap())
        if path is not None:
            origin = "given" if c.source_envmap is not None else "recorded by the data"
            self.__dict__["_source_origin"] = f"{origin}: {path}"
            strength = c.source_envmap_strength
            return self._cached("_source_envmap", (str(path), strength), lambda: read_envmap(path) * strength)
        if not getattr(c.prior._target, "needs_source_envmap", False):
            return None
        return self._cached("_source_envmap", ("estimated", c.source_assumed_albedo), self._estimate_source_envmap)

    def source_light_origin(self) -> str:
        """Where the source light came from (after :meth:`source_envmap` ran), for logs and summaries."""
        return self.__dict__.get("_source_origin", "none (the prior needs no source light)")

    def _estimate_source_envmap(self) -> Tensor:
        """Order-2 SH lighting fitted to the training images at the field's (multi-view) normals; written beside
        the stage-1 cache as ``estimated_source.exr`` and announced on the console."""
        from nerfstudio.utils.rich_utils import CONSOLE

        from relight3d.lighting import write_envmap
        from relight3d.lighting.estimate import estimate_light_from_views

        gb = self.training_view_gbuffers()
        images = self.__dict__.get("_original_images")
        if images is None:
            images = self.datamanager.train_images[..., :3].detach().cpu()
        normals = gb.get("multiview_normals", gb["normals"])
        masks = (gb["accumulation"] > 0.5).float()
        train = self.datamanager.train_images
        if train.shape[-1] == 4:  # stage 1 keeps the alpha when it replaces the images
            masks = masks * (train[..., 3:].detach().cpu() > 0.5).float()
        try:
            estimate = estimate_light_from_views(
                images, normals, masks, assumed_albedo=self.config.source_assumed_albedo
            )
        except ValueError as err:
            raise DataError(
                self.config.field_run or "--pipeline.field-run", f"cannot estimate the source light: {err}"
            ) from err
        path = self.stage1_dir() / "estimated_source.exr"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_envmap(path, estimate.envmap)
        self.__dict__["_source_origin"] = (
            f"estimated from the field (order-2 SH, {estimate.n_samples} pixels, fit residual "
            f"{estimate.relative_residual:.2f}): {path}"
        )
        CONSOLE.print(
            f"relight3d: no source light given or recorded by the data: estimated it from the training views "
            f"(order-2 SH at the field's normals, albedo scale assumed {self.config.source_assumed_albedo}); "
            f"written to {path}. Pass --source-envmap FILE (pipeline.source-envmap) if you know it."
        )
        return estimate.envmap

    def _cached(self, name: str, key: Any, build: Callable[[], Any]) -> Any:
        """``build()``, kept under ``name`` until ``key`` changes (maps are read once: stage 2 asks for them every
        iteration; the shadow tracing runs once per field)."""
        cached = self.__dict__.get(name)
        if cached is None or cached[0] != key:
            cached = self.__dict__[name] = (key, build())
        return cached[1]

    def _field_cached(self, name: str, settings: Mapping[str, Any], build: Callable[[], Any]) -> Any:
        """``build()`` (tensors, or tuples / dicts of them), read from ``field_cache_dir`` when an earlier run on
        the same field weights, cameras and ``settings`` wrote it there."""
        folder, digest = self.config.field_cache_dir, self.__dict__.get("_field_digest")
        if folder is None or digest is None:
            return build()
        cams = self.datamanager.train_cameras
        key = _fingerprint(
            {"field": digest, "poses": cams.camera_to_worlds.cpu().numpy().round(6).tolist(),
             "size": [int(cams.width[0]), int(cams.height[0])], **settings}
        )  # fmt: skip
        path = Path(folder) / f"{name}_{key}.pt"
        if path.is_file():
            return torch.load(path, weights_only=True)
        value = build()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(value, tmp)
        os.replace(tmp, path)
        return value

    def stage1_dir(self) -> Path:
        if self.config.cache_dir is not None:
            return Path(self.config.cache_dir)
        base = self.__dict__.get("_base_dir")
        return (Path(base) if base is not None else Path("outputs/relight3d-stage1")) / "stage1"

    def get_training_callbacks(self, training_callback_attributes):  # noqa: ANN001, ANN201
        from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation

        trainer = training_callback_attributes.trainer
        if trainer is not None and self.config.cache_dir is None:
            self.__dict__["_base_dir"] = Path(trainer.base_dir)
        callbacks = super().get_training_callbacks(training_callback_attributes)
        optimizers = training_callback_attributes.optimizers
        if optimizers is not None and self.config.stage2_lr_scale != 1.0:

            def scale_for_stage2(step: int) -> None:
                # Once, at the first stage-2 iteration (also after resuming past it): the schedulers compute each
                # rate as base rate x decay(step), so their base rates are scaled along with the current ones.
                if step < self.config.stage1_steps or self.__dict__.get("_stage2_lr_scaled"):
                    return
                scale = self.config.stage2_lr_scale
                for name, optimizer in optimizers.optimizers.items():
                    for group in optimizer.param_groups:
                        group["lr"] *= scale
                    scheduler = optimizers.schedulers.get(name)
                    if scheduler is not None:
                        scheduler.base_lrs = [lr * scale for lr in scheduler.base_lrs]
                self.__dict__["_stage2_lr_scaled"] = True

            callbacks.append(
                TrainingCallback(where_to_run=[TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], func=scale_for_stage2)
            )
        return callbacks

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        """Appearance only: density is frozen."""
        groups = super().get_param_groups()
        groups.pop("density", None)
        return groups

    # --- G-buffers of the training views -----------------------------------------------------------------------
    @torch.no_grad()
    def training_view_gbuffers(self) -> Dict[str, Tensor]:
        """Rendered normals / accumulation / depth / rgb / points of every training view, and their normals fused
        across views (geometry is frozen: computed once)."""
        if self.__dict__["_gbuffers"] is None:
            settings = {"normal_fusion_resolution": self.config.normal_fusion_resolution}
            self.__dict__["_gbuffers"] = self._field_cached("gbuffers", settings, self._render_training_gbuffers)
        return self.__dict__["_gbuffers"]

    @torch.no_grad()
    def _render_training_gbuffers(self) -> Dict[str, Tensor]:
        """Render every training view's G-buffers with the field and fuse their normals."""
        cams = self.datamanager.train_cameras
        outs: Dict[str, List[Tensor]] = {}
        was_training = self.model.training
        self.model.eval()
        for i in range(len(cams)):
            out = render_view(self.model, cams[i : i + 1], ("normals",))
            origins, directions, _ = camera_rays(cams[i : i + 1].to(self.model.device))
            out["directions"] = directions.reshape(out["rgb"].shape)
            out["points"] = (origins + directions * out["depth"].reshape(-1, 1)).reshape(out["rgb"].shape)
            for k, v in out.items():
                outs.setdefault(k, []).append(v.cpu())
        self.model.train(was_training)
        gb = {k: torch.stack(v) for k, v in outs.items()}
        if self.config.normal_fusion_resolution > 0:
            from relight3d.priors.normals import density_and_depth_normals, fuse_view_normals

            fg = (gb["accumulation"] > 0.5).float()
            gb["multiview_normals"] = fuse_view_normals(
                density_and_depth_normals(gb["normals"], gb["points"], gb["directions"], fg),
                gb["points"],
                fg,
                self.model.field.aabb.detach().float().cpu(),
                self.config.normal_fusion_resolution,
            )
        return gb

    @torch.no_grad()
    def training_view_visibility(self, views: Tensor) -> Optional[Float[Tensor, "b h w k"]]:
        """Per pixel of the given training views, the transmittance towards each of the prior's shadow directions
        (:attr:`RelightingPrior.visibility_settings`); None when the prior asks for none.

        Geometry is frozen, so it is traced once for every object pixel of every training view (from the surface
        point moved 1.5 density cells along the normal) and kept as 8-bit values; background pixels read 1.
        """
        settings = self.prior.visibility_settings
        if settings is None:
            return None
        from relight3d.lighting import sample_density_volume, transmittance_towards, visibility_directions

        def trace() -> Tuple[Tensor, Tensor, Tensor, Tensor]:
            height, resolution = settings
            gb = self.training_view_gbuffers()
            fg = gb["accumulation"][..., 0] > 0.5
            field_ = self.model.field
            aabb = field_.aabb.detach().float()
            volume = sample_density_volume(field_.density, aabb, resolution)
            cell = float((aabb[3:] - aabb[:3]).max()) / resolution
            points = gb["points"][fg] + F.normalize(gb["normals"][fg], dim=-1) * (1.5 * cell)
            trans = transmittance_towards(volume.cpu(), aabb.cpu(), points.cpu(), visibility_directions(height))
            # Object pixels are stored view after view: each view's count and the offset of its first pixel.
            counts = fg.flatten(1).sum(1)
            return fg, (trans * 255.0).round().to(torch.uint8), counts, torch.cumsum(counts, 0) - counts

        fg, packed, counts, starts = self._cached(
            "_visibility", settings, lambda: self._field_cached("visibility", {"settings": list(settings)}, trace)
        )
        views = torch.as_tensor(views).reshape(-1)
        out = torch.ones(len(views), *fg.shape[1:], packed.shape[-1])
        for j, v in enumerate(views.tolist()):
            out[j][fg[v]] = packed[starts[v] : starts[v] + counts[v]].float() / 255.0
        return out

    # --- stage 1 ---------------------------------------------------------------------------------------------
    def stage1_fingerprint(self) -> str:
        c = self.config
        return _fingerprint(
            {
                "prior": repr(c.prior),
                "target": str(c.target_envmap),
                "target_mtime": Path(c.target_envmap).stat().st_mtime if c.target_envmap else None,
                "strength": c.target_envmap_strength,
                "rotation": c.target_rotation_deg,
                "source": str(c.source_envmap),
                "estimate_source": c.estimate_source,
                "source_assumed_albedo": c.source_assumed_albedo,
                "field_run": str(c.field_run),
                "views": len(self.datamanager.train_cameras),
                "seed": c.seed,
            }
        )

    def run_stage1(self) -> Float[Tensor, "n h w 3"]:
        """Relight every training view (or reload the cache), write it into the datamanager, return it."""
        dm = self.datamanager
        images = dm.train_images
        n = images.shape[0]
        cache = self.stage1_dir()
        fingerprint = self.stage1_fingerprint()
        meta_path = cache / "stage1.json"
        relit: Optional[Tensor] = None
        if meta_path.is_file() and json.loads(meta_path.read_text()).get("fingerprint") == fingerprint:
            files = [cache / "pred_image" / f"{i:03d}.png" for i in range(n)]
            if all(f.is_file() for f in files):
                relit = torch.stack([_load_png(f)[..., :3] for f in files])
        if relit is None:
            started = time.perf_counter()
            relit = self._relight_training_views(cache, fingerprint)
            self.timings["stage1_seconds"] += time.perf_counter() - started
            self.timings["stage1_views"] += n
        if "_original_images" not in self.__dict__:
            self.__dict__["_original_images"] = images[..., :3].detach().cpu().clone()
        dm.replace_train_images(torch.arange(n), relit.to(images))
        self.__dict__["_stage1_done"] = True
        return relit

    def _relight_training_views(self, cache: Path, fingerprint: str) -> Tensor:
        from relight3d.lighting import hdr_encoding, ldr_encoding, rotate_envmap_to_camera

        dm = self.datamanager
        images = dm.train_images.cpu()
        rgb = images[..., :3]
        masks = images[..., 3:] if images.shape[-1] == 4 else torch.ones_like(images[..., :1])
        c2w = dm.train_cameras.camera_to_worlds.cpu()
        target = self.target_envmap()
        source = self.source_envmap()
        gbuffers = self.training_view_gbuffers() if self.prior.required_gbuffers else None
        for d in STAGE1_DIRS:
            (cache / d).mkdir(parents=True, exist_ok=True)
        bs = max(1, self.config.stage1_batch_size)
        out = []
        for s in range(0, images.shape[0], bs):
            sl = slice(s, s + bs)
            kwargs: Dict[str, Any] = {"generator": self._generator}
            if gbuffers is not None:
                kwargs["gbuffers"] = {k: v[sl] for k, v in gbuffers.items()}
                visibility = self.training_view_visibility(torch.arange(images.shape[0])[sl])
                if visibility is not None:
                    kwargs["gbuffers"]["visibility"] = visibility
            if source is not None:
                kwargs["source_envmap"] = source
            pred = self.prior.relight(rgb[sl], masks[sl], c2w[sl], target, **kwargs).cpu().float()
            out.append(pred)
            for j in range(pred.shape[0]):
                i = s + j
                _save_png(cache / "input_image" / f"{i:03d}.png", torch.cat([rgb[i], masks[i]], -1))
                _save_png(cache / "pred_image" / f"{i:03d}.png", torch.cat([pred[j], masks[i]], -1))
                local = rotate_envmap_to_camera(target, c2w[i])
                _save_png(cache / "target_envmap_hdr" / f"{i:03d}.png", hdr_encoding(local))
                _save_png(cache / "target_envmap_ldr" / f"{i:03d}.png", ldr_encoding(local))
                w2c = torch.linalg.inv(torch.cat([c2w[i], torch.tensor([[0.0, 0.0, 0.0, 1.0]])]))[:3]
                np.save(cache / "target_RT" / f"{i:03d}.npy", w2c.numpy())
        (cache / "stage1.json").write_text(
            json.dumps({"fingerprint": fingerprint, "n_views": images.shape[0], "prior": type(self.prior).__name__})
        )
        return torch.cat(out)

    # --- training ----------------------------------------------------------------------------------------------
    def get_train_loss_dict(self, step: int):  # noqa: ANN201
        if not self.__dict__["_stage1_done"]:
            self.run_stage1()
        if step < self.config.stage1_steps:
            return super().get_train_loss_dict(step)
        # Stage-2 speed: wall time between the starts of consecutive stage-2 iterations (render, prior, backward).
        now = time.perf_counter()
        if self.__dict__.get("_stage2_last") is not None:
            self.timings["stage2_seconds"] += now - self.__dict__["_stage2_last"]
            self.timings["stage2_iters"] += 1
        self.__dict__["_stage2_last"] = now
        return self._stage2_loss_dict(step - self.config.stage1_steps)

    def _stage2_loss_dict(self, step: int):  # noqa: ANN202
        c = self.config
        dm = self.datamanager
        n = len(dm.train_cameras)
        i = int(torch.randint(n, (1,), generator=self._generator))
        camera = dm.train_cameras[i : i + 1]
        out = render_view(self.model, camera, scale=c.stage2_render_scale)
        pred = out["rgb"]
        t_star = t_star_at(step, c.stage2_steps, c.t_star_start, c.t_star_end, c.t_star_schedule)
        with torch.no_grad():
            mask = out["accumulation"].clamp(0, 1)
            background = self.model.background
            kwargs: Dict[str, Any] = {"generator": self._generator}
            if self.prior.required_gbuffers:
                gb = {k: v[i : i + 1] for k, v in self.training_view_gbuffers().items()}
                visibility = self.training_view_visibility(torch.tensor([i]))
                if visibility is not None:
                    gb["visibility"] = visibility
                if c.stage2_render_scale != 1.0:
                    gb = {k: _resize(v, pred.shape[:2]) for k, v in gb.items()}
                kwargs["gbuffers"] = gb
            source = self.source_envmap()
            if source is not None:
                kwargs["source_envmap"] = source
            c2w = camera.camera_to_worlds.cpu()
            kwargs["condition_images"] = self.__dict__["_original_images"][i : i + 1]
            if c.stage2_render_scale != 1.0:
                kwargs["condition_images"] = _resize(kwargs["condition_images"], pred.shape[:2])
            # The prior refines the object's own colour under its mask; the result is composited back on the
            # background the render was, so both sides of the loss are images on the same background.
            colour = straight_rgb(pred.detach(), mask, background)
            refined = self.prior.refine(
                colour[None].cpu(), mask[None].cpu(), c2w, self.target_envmap(), t_star, **kwargs
            )
            refined = refined[0].to(pred) * mask + (1.0 - mask) * background.to(pred)
        loss_dict = {"stage2_l1": c.stage2_l1_weight * (pred - refined).abs().mean()}
        if c.stage2_tv_weight > 0:
            loss_dict["stage2_tv"] = c.stage2_tv_weight * image_total_variation(pred)
        if c.stage2_lpips_weight > 0:
            loss_dict["stage2_lpips"] = c.stage2_lpips_weight * self._lpips(pred, refined)
        metrics = {"t_star": torch.tensor(t_star), "stage2_view": torch.tensor(i)}
        return out, loss_dict, metrics

    def _lpips(self, pred: Tensor, target: Tensor) -> Tensor:
        from relight3d.eval.lpips import load_lpips  # raises a one-line error without weights

        if "_lpips_net" not in self.__dict__:
            self.__dict__["_lpips_net"] = load_lpips(device=str(self.device))
        net = self.__dict__["_lpips_net"]
        return net(pred.permute(2, 0, 1)[None] * 2 - 1, target.permute(2, 0, 1)[None] * 2 - 1).mean()


def _resize(x: Tensor, size: Tuple[int, int]) -> Tensor:
    return F.interpolate(x.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
