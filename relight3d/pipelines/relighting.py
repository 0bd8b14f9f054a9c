"""Two-stage relighting of a trained radiance field with a 2D relighting prior (Neural Gaffer's 3D relighting).

The pipeline owns the prior; the model stays a radiance field. Read it top to bottom:

* :class:`RelightingPipelineConfig`: every setting (``ns-train relight3d-gaffer --pipeline.<name>``).
* :class:`RelightingPipeline`: loads the trained field (:mod:`~relight3d.pipelines.relight_field`; geometry frozen),
  then runs the stages from :meth:`~RelightingPipeline.get_train_loss_dict`:

  * **Stage 1** (:mod:`~relight3d.pipelines.relight_stage1`), once: every training view is relit by the prior under
    the target map (rotated into that view's camera frame by the prior itself) and cached on disk in Neural Gaffer's
    layout; the relit views replace the training images in the datamanager, and the first ``stage1_steps``
    iterations refit the field's appearance on them (MSE on random rays, as in Neural Gaffer: 2,500 iterations,
    lr 2e-2 for the appearance grids and 1e-3 for the basis / decoder; all config values).
  * **Stage 2** (:mod:`~relight3d.pipelines.relight_stage2`): each further iteration renders a full training view,
    refines it with the prior (SDEdit-style for diffusion priors: partial noising to ``t*`` then denoising) and fits
    the render to the refined image with L1 (+ LPIPS when weighted) + image total variation. Its settings are one
    nested :class:`~relight3d.pipelines.relight_stage2.Stage2Config` (``--pipeline.stage2.<name>``), chosen by
    preset: relight3d's (``t*`` annealed exponentially 0.4 -> 0.05, as the paper describes) or
    ``pipeline.stage2:neural-gaffer-public`` (the public code's: ``t*`` held at 0.4 until the last iterations, its
    loss weights, squared TV, LPIPS-VGG, learning-rate decay).

  The lights come from :mod:`~relight3d.pipelines.relight_lights`; what the pipeline computes while it runs (the
  prior, G-buffers, caches, timings) sits in one plain :class:`~relight3d.pipelines.relight_state.RelightingState`,
  ``pipeline.state``, which is never checkpointed.

The field comes from a trained ``relight3d-tensorf`` / ``relight3d-ngp`` run (``field_run``: its ``config.yml``):
the model config, the data and the latest checkpoint of that run are used, geometry is frozen, and the upsampling /
box-shrinking / carving schedules of the original training are switched off.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Type

import torch
from jaxtyping import Float
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from torch import Tensor
from torch.nn import Parameter

from relight3d.errors import ConfigError, DataError, one_line
from relight3d.pipelines.relight_field import (
    FieldCache,
    PackedVisibility,
    frozen_field_configs,
    load_field_run,
    render_gbuffers,
    render_view,
    trace_visibility,
    weights_digest,
)
from relight3d.pipelines.relight_lights import estimate_source_envmap, read_target_envmap, source_envmap_path
from relight3d.pipelines.relight_material import (
    MaterialSource,
    fit_material_head,
    material_gbuffers,
    needs_material,
    physical_material_targets,
)
from relight3d.pipelines.relight_stage1 import read_stage1_cache, relight_training_views, stage1_fingerprint
from relight3d.pipelines.relight_stage2 import (
    DEFAULT_STAGE2,
    STAGE2_PRESETS,
    Stage2Choice,
    refine_render,
    resize_images,
    stage2_losses,
    stage2_lr_scaling,
    t_star_at,
)
from relight3d.pipelines.relight_state import RelightingState
from relight3d.priors.base import PriorViews, RelightingPrior
from relight3d.priors.physical import PhysicalPriorConfig
from relight3d.priors.registry import DEFAULT_PRIOR, PRIORS, PriorChoice


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
    prior: PriorChoice = field(default_factory=PRIORS[DEFAULT_PRIOR])
    """The 2D relighting prior (physical by default: no weights needed; the choices are
    :data:`relight3d.priors.registry.PRIORS`)."""
    stage1_steps: int = 2500
    """Appearance-refit iterations on the stage-1 relit views (Neural Gaffer: 2,500)."""
    stage2_steps: int = 500
    """Stage-2 iterations (render a view, refine it with the prior, fit)."""
    stage1_batch_size: int = 8
    """Views per prior call in stage 1."""
    stage2: Stage2Choice = field(default_factory=STAGE2_PRESETS[DEFAULT_STAGE2])
    """Stage 2's t* schedule, loss weights and learning rates, chosen by preset (``pipeline.stage2:<name>``, the
    choices are :data:`relight3d.pipelines.relight_stage2.STAGE2_PRESETS`); each field can be overridden
    (``--pipeline.stage2.<field>``)."""
    normal_fusion_resolution: int = 128
    """Cells per side of the voxel grid in which the training views' normals (density gradient + depth) are
    averaged into the ``"multiview_normals"`` G-buffer (:func:`relight3d.priors.normals.fuse_view_normals`);
    0 leaves it out."""
    material_source: MaterialSource = "physical"
    """For priors that condition on material G-buffers (base colour, roughness, metallic: DiffusionRenderer), what
    the field's material head is fitted to before stage 1 (:mod:`~relight3d.pipelines.relight_material`):
    ``physical``, the physical prior's albedo estimate under the training light (no weights), or
    ``gbuffer-frames``, DiffusionRenderer inverse-renderer passes of the training views in
    ``material_gbuffers``."""
    material_gbuffers: Optional[Path] = None
    """With ``material_source gbuffer-frames``: the clip folder (``.../gbuffer_frames/<clip>``) of
    ``<chunk>.<frame>.{basecolor,roughness,metallic}.{jpg,png}`` files, one frame per training view in the data's
    order."""
    fit_material: bool = False
    """Give the field a material head (fitted as below) even when the prior needs none (``relight3d export
    gbuffers`` does, to write base colour / roughness / metallic)."""
    material_fit_steps: int = 500
    """Adam steps fitting the material head (8,192 object pixels each)."""
    material_physical: PhysicalPriorConfig = field(default_factory=PhysicalPriorConfig)
    """The physical prior that estimates the albedo for ``material_source physical`` (its roughness becomes the
    head's roughness target; metallic is 0)."""
    cache_dir: Optional[Path] = None
    """Folder of the stage-1 cache. Default: ``stage1/`` next to this run's checkpoints."""
    field_cache_dir: Optional[Path] = None
    """Folder where the frozen field's training-view G-buffers and light visibility are kept between runs on the
    same field (keyed by the field's weights, the cameras and the settings; ``relight3d relight`` shares one
    across its maps, since tracing the shadows costs the same for every map). None: computed in every run."""
    seed: int = 0
    """Seed of the prior's sampling and of stage 2's view order."""


class RelightingPipeline(VanillaPipeline):
    """Stage 1 (relight the training views, refit appearance) then stage 2 (render, refine, fit)."""

    config: RelightingPipelineConfig

    def __init__(self, config: RelightingPipelineConfig, device: str, test_mode: str = "val", **kwargs: Any) -> None:
        field_state: Optional[Dict[str, Tensor]] = None
        if config.field_run is not None and (test_mode != "inference" or Path(config.field_run).exists()):
            trained, field_state, _ = load_field_run(Path(config.field_run))
            config.model, config.datamanager = frozen_field_configs(trained, config.datamanager.data)
        if config.fit_material or needs_material(getattr(config.prior._target, "required_gbuffers", ())):
            config.model.material_head = True  # the prior conditions on material G-buffers: fit a head to give them
        elif config.field_run is None and test_mode != "inference":
            raise ConfigError("--pipeline.field-run", "relighting needs a trained field: pass its config.yml")
        super().__init__(config, device, test_mode=test_mode, **kwargs)
        # Plain data, not a module: nothing in it becomes part of the pipeline's state_dict (see relight_state).
        self.state = RelightingState(generator=torch.Generator().manual_seed(config.seed))
        if field_state is not None:
            self.state.field_digest = weights_digest(field_state)
            missing, unexpected = self.model.load_state_dict(field_state, strict=False)
            missing = [k for k in missing if not k.startswith("field.material.")]  # a head added here is fitted later
            if missing or unexpected:
                raise DataError(
                    config.field_run,
                    f"checkpoint does not fit the model (missing {missing[:3]}, extra {unexpected[:3]})",
                )
        self.model.freeze_geometry(True)
        self.field_cache = FieldCache(config.field_cache_dir, self.state.field_digest)
        if test_mode != "inference":  # read and check the maps and strengths now, so bad ones fail before training
            from relight3d.lighting.envmap_io import check_strength, read_envmap

            if min(config.stage1_steps, config.stage2_steps) < 0:
                raise ConfigError("--pipeline.stage1-steps/--pipeline.stage2-steps", "must be >= 0")
            if config.stage2_steps > 0 and config.stage2.lpips_weight > 0:
                self._check_lpips_weights()
            check_strength("--pipeline.target-envmap-strength", config.target_envmap_strength)
            check_strength("--pipeline.source-envmap-strength", config.source_envmap_strength)
            if config.target_envmap is not None or config.stage1_steps + config.stage2_steps > 0:
                self.target_envmap()
            if config.source_envmap is not None:
                read_envmap(config.source_envmap)

    # --- the prior and the lights ------------------------------------------------------------------------------
    @property
    def prior(self) -> RelightingPrior:
        """The prior, built on first use (loading weights is slow and not needed for inference)."""
        if self.state.prior is None:
            self.state.prior = self.config.prior.setup(device=str(self.device))
        return self.state.prior

    def target_envmap(self) -> Float[Tensor, "h w 3"]:
        """The target map (strength and up-axis rotation applied), in world coordinates."""
        c = self.config
        key = (str(c.target_envmap), c.target_envmap_strength, c.target_rotation_deg)
        return self.state.memo("target_envmap", key, lambda: read_target_envmap(c.target_envmap, *key[1:]))

    def source_envmap(self) -> Optional[Float[Tensor, "h w 3"]]:
        """The training light: the configured map, else the one the data records, else (for priors that need
        one) an estimate from the field; None when the prior needs none and none is known."""
        from relight3d.lighting import read_envmap

        c = self.config
        path, origin = source_envmap_path(c.source_envmap, c.estimate_source, self.datamanager)
        if path is not None:
            self.state.source_origin = f"{origin}: {path}"
            strength = c.source_envmap_strength
            return self.state.memo("source_envmap", (str(path), strength), lambda: read_envmap(path) * strength)
        if not getattr(c.prior._target, "needs_source_envmap", False):
            return None
        return self.state.memo("source_envmap", ("estimated", c.source_assumed_albedo), self._estimate_source)

    def _estimate_source(self) -> Tensor:
        train = self.datamanager.train_images
        images = self.state.original_images
        if images is None:
            images = train[..., :3].detach().cpu()
        alpha = train[..., 3:].detach().cpu() if train.shape[-1] == 4 else None  # stage 1 keeps the alpha
        envmap, self.state.source_origin = estimate_source_envmap(
            images,
            self.training_view_gbuffers(),
            alpha,
            self.config.source_assumed_albedo,
            self.stage1_dir() / "estimated_source.exr",
            self.config.field_run,
        )
        return envmap

    def source_light_origin(self) -> str:
        """Where the source light came from (after :meth:`source_envmap` ran), for logs and summaries."""
        return self.state.source_origin

    # --- the frozen field's training views ---------------------------------------------------------------------
    def training_view_gbuffers(self) -> Dict[str, Tensor]:
        """Rendered normals / accumulation / depth / rgb / points / directions of every training view, and their
        normals fused across views (geometry is frozen: computed once, see :func:`render_gbuffers`)."""
        if self.state.gbuffers is None:
            resolution = self.config.normal_fusion_resolution
            cams = self.datamanager.train_cameras
            self.state.gbuffers = self.field_cache.get(
                "gbuffers", cams, {"normal_fusion_resolution": resolution},
                lambda: render_gbuffers(self.model, cams, resolution),
            )  # fmt: skip
        return self.state.gbuffers

    def training_view_visibility(
        self, views: Tensor, settings: Optional[Tuple[int, int]] = None
    ) -> Optional[Float[Tensor, "b h w k"]]:
        """Per pixel of the given training views, the transmittance towards each shadow direction of ``settings``
        (default: the prior's, :attr:`RelightingPrior.visibility_settings`); None when there are none. Traced once
        per field and settings (:func:`trace_visibility`); background pixels read 1."""
        settings = settings or self.prior.visibility_settings
        if settings is None:
            return None
        cams = self.datamanager.train_cameras

        def trace() -> Tuple[Tensor, ...]:
            return trace_visibility(self.model.field, self.training_view_gbuffers(), settings).as_tuple()

        packed = self.state.memo(
            "visibility", settings,
            lambda: PackedVisibility(*self.field_cache.get("visibility", cams, {"settings": list(settings)}, trace)),
        )  # fmt: skip
        return packed.unpack(views)

    # --- the field's material ----------------------------------------------------------------------------------
    def training_view_materials(self) -> Dict[str, Tensor]:
        """``base_color`` / ``roughness`` / ``metallic`` G-buffers of every training view from the field's material
        head, fitted first (once per field and settings, kept in the field cache) when the checkpoint's is not."""
        head = self.model.field.material
        if head is None:
            raise ConfigError("--pipeline.model.material-head", "the prior needs material G-buffers: turn it on")

        def build() -> Dict[str, Tensor]:
            if not bool(head.fitted):
                c, cams = self.config, self.datamanager.train_cameras
                settings = {"source": c.material_source, "steps": c.material_fit_steps, "seed": c.seed,
                            "frames": str(c.material_gbuffers), "physical": repr(c.material_physical)}  # fmt: skip
                fitted = dict(self.field_cache.get("material", cams, settings, self._fit_material))
                rms = float(fitted.pop("fit_rms"))
                head.load_state_dict(fitted)
                where = c.material_gbuffers if c.material_source == "gbuffer-frames" else "the physical prior's albedo"
                self.state.material_origin = f"fitted to {where} (RMS error {rms:.4f})"
            gb = self.training_view_gbuffers()
            return material_gbuffers(head, gb["points"], gb["accumulation"][..., 0] > 0.5)

        return self.state.memo("materials", bool(head.fitted), build)

    def _fit_material(self) -> Dict[str, Tensor]:
        from relight3d.data.gbuffer_frames import read_material_frames

        c, head, gb = self.config, self.model.field.material, self.training_view_gbuffers()
        fg = gb["accumulation"][..., 0] > 0.5
        if not bool(fg.any()):
            raise DataError(c.field_run, "the field covers no pixel of its training views (accumulation > 0.5) to "
                                         "fit a material to: is it trained?")  # fmt: skip
        if c.material_source == "gbuffer-frames":
            if c.material_gbuffers is None:
                raise ConfigError(
                    "--pipeline.material-gbuffers", "material source gbuffer-frames needs the clip folder"
                )
            targets = read_material_frames(c.material_gbuffers, *fg.shape)
        else:
            targets = physical_material_targets(self._physical_albedo(), c.material_physical.roughness)
        rms = fit_material_head(head, gb["points"], fg, targets, c.material_fit_steps, seed=c.seed)
        return {**{k: v.detach().cpu() for k, v in head.state_dict().items()}, "fit_rms": torch.tensor(rms)}

    def _physical_albedo(self, batch: int = 8) -> Float[Tensor, "n h w 3"]:
        """The physical prior's albedo estimate of every training image (field normals, shadows, source light)."""
        prior = self.config.material_physical.setup()
        gb = self.training_view_gbuffers()
        images = self.state.original_images
        if images is None:
            images = self.datamanager.train_images[..., :3].detach().cpu()
        c2w = self.datamanager.train_cameras.camera_to_worlds.cpu()
        source = self.source_envmap()
        target = torch.ones(4, 8, 3)  # PriorViews needs one; estimating the albedo does not use it
        names = ("normals", "multiview_normals", "points", "directions", "accumulation")
        out = []
        for start in range(0, images.shape[0], batch):
            views = torch.arange(start, min(start + batch, images.shape[0]))
            gbuffers = {k: gb[k][views] for k in names if k in gb}
            visibility = self.training_view_visibility(views, prior.visibility_settings)
            if visibility is not None:
                gbuffers["visibility"] = visibility
            masks = gb["accumulation"][views].clamp(0.0, 1.0)
            pv = PriorViews(images[views].float(), masks, c2w[views], target, gbuffers=gbuffers, source_envmap=source)
            out.append(prior.estimate_albedo(pv))
        return torch.cat(out)

    def prior_inputs(self, views: Tensor, size: Optional[Tuple[int, int]] = None) -> Dict[str, Any]:
        """The other PriorViews fields of training views ``views``: the generator, the views' G-buffers and
        shadow visibility (resized to ``size``) when the prior asks for them, the source light when known or needed."""
        inputs: Dict[str, Any] = {"generator": self.state.generator}
        if self.prior.required_gbuffers:
            gb = {k: v[views] for k, v in self.training_view_gbuffers().items()}
            if needs_material(self.prior.required_gbuffers):
                gb.update({k: v[views] for k, v in self.training_view_materials().items()})
            visibility = self.training_view_visibility(views)
            if visibility is not None:
                gb["visibility"] = visibility
            inputs["gbuffers"] = {k: resize_images(v, size) for k, v in gb.items()}
        source = self.source_envmap()
        if source is not None:
            inputs["source_envmap"] = source
        return inputs

    # --- training ------------------------------------------------------------------------------------------------
    def stage1_dir(self) -> Path:
        """The stage-1 cache: ``cache_dir``, else ``stage1/`` in the run's folder."""
        if self.config.cache_dir is not None:
            return Path(self.config.cache_dir)
        base = self.state.base_dir
        return (base if base is not None else Path("outputs/relight3d-stage1")) / "stage1"

    def get_training_callbacks(self, training_callback_attributes):  # noqa: ANN001, ANN201
        from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation

        trainer = training_callback_attributes.trainer
        if trainer is not None and self.config.cache_dir is None:
            self.state.base_dir = Path(trainer.base_dir)
        callbacks = super().get_training_callbacks(training_callback_attributes)
        optimizers, stage2 = training_callback_attributes.optimizers, self.config.stage2
        if optimizers is not None and (stage2.lr_scale != 1.0 or stage2.lr_decay != 1.0):
            scale = stage2_lr_scaling(optimizers, self.config.stage1_steps, stage2)
            callbacks.append(TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], func=scale))
        return callbacks

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        """Appearance only: density is frozen."""
        groups = super().get_param_groups()
        groups.pop("density", None)
        return groups

    def run_stage1(self) -> Float[Tensor, "n h w 3"]:
        """Relight every training view (or reload the cache), write it into the datamanager, return it."""
        dm = self.datamanager
        images = dm.train_images
        n = images.shape[0]
        cache, key = self.stage1_dir(), stage1_fingerprint(self.config, n)
        relit = read_stage1_cache(cache, key, n)
        if relit is None:
            started = time.perf_counter()
            c2w = dm.train_cameras.camera_to_worlds.cpu()
            relit = relight_training_views(
                self.prior, images.cpu(), c2w, self.target_envmap(), self.prior_inputs,
                self.config.stage1_batch_size, cache, key, self.config.seed,
            )  # fmt: skip
            self.state.timings.stage1_seconds += time.perf_counter() - started
            self.state.timings.stage1_views += n
        if self.state.original_images is None:
            self.state.original_images = images[..., :3].detach().cpu().clone()
        dm.replace_train_images(torch.arange(n), relit.to(images))
        self.state.stage1_done = True
        return relit

    def get_train_loss_dict(self, step: int):  # noqa: ANN201
        if not self.state.stage1_done:
            self.run_stage1()
        if step < self.config.stage1_steps:
            return super().get_train_loss_dict(step)
        # Stage-2 speed: wall time between the starts of consecutive stage-2 iterations (render, prior, backward).
        timings, now = self.state.timings, time.perf_counter()
        if timings.stage2_last_start is not None:
            timings.stage2_seconds += now - timings.stage2_last_start
            timings.stage2_iters += 1
        timings.stage2_last_start = now
        return self.stage2_loss_dict(step - self.config.stage1_steps)

    def stage2_loss_dict(self, step: int) -> Tuple[Dict[str, Tensor], Dict[str, Tensor], Dict[str, Tensor]]:
        """Stage-2 iteration ``step``: render a random training view, refine it with the prior, fit it."""
        c, s2 = self.config, self.config.stage2
        i = int(torch.randint(len(self.datamanager.train_cameras), (1,), generator=self.state.generator))
        camera = self.datamanager.train_cameras[i : i + 1]
        out = render_view(self.model, camera, scale=s2.render_scale)
        num_steps = getattr(c.prior, "num_inference_steps", None)  # a diffusion prior's sampling steps
        t_star = t_star_at(step, c.stage2_steps, s2.t_star_start, s2.t_star_end, s2.t_star_schedule, num_steps)
        with torch.no_grad():
            size = tuple(out["rgb"].shape[:2]) if s2.render_scale != 1.0 else None
            inputs = self.prior_inputs(torch.tensor([i]), size)
            inputs["condition_images"] = resize_images(self.state.original_images[i : i + 1], size)
            c2w = camera.camera_to_worlds.cpu()
            refined = refine_render(self.prior, out, self.model.background, c2w, self.target_envmap(), t_star, inputs)
        losses = stage2_losses(out["rgb"], refined, s2, self._lpips)
        return out, losses, {"t_star": torch.tensor(t_star), "stage2_view": torch.tensor(i)}

    def _lpips(self) -> Any:
        from relight3d.eval.lpips import load_lpips

        net = self.config.stage2.lpips_net
        return self.state.memo("lpips", net, lambda: load_lpips(net, device=str(self.device)))

    def _check_lpips_weights(self) -> None:
        """Stop before training when stage 2's LPIPS loss is weighted but its network's weights are not here."""
        from relight3d.eval.lpips import NOT_AVAILABLE, LPIPSWeightsNotFound, find_lpips_weights

        s2 = self.config.stage2
        try:
            find_lpips_weights(s2.lpips_net)
        except LPIPSWeightsNotFound as err:
            missing = one_line(err).removeprefix(f"{NOT_AVAILABLE}: ")
            problem = f"is {s2.lpips_weight}, but LPIPS-{s2.lpips_net} has no weights on this machine: {missing}"
            raise ConfigError("--pipeline.stage2.lpips-weight", f"{problem} (or set it to 0)") from err
