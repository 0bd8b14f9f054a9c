"""``relight3d relight``: relight one trained field under several target maps, evaluate, render videos, report.

For each target map this trains ``relight3d-gaffer`` (stage 1 + stage 2) from the trained field, renders the
held-out views, scores them against the ground truth under that light together with the "no relighting" baseline,
writes a rotating-light video, and finally one comparison report over all target maps.

The ground truth under a target map comes from ``--eval-data DIR`` (one Blender-layout folder per map) or from
the data folder (the benchmark's Blender layout or the Objaverse layout): see :mod:`relight3d.pipelines.relight_eval`.
The baseline ("no relighting") is the same views under the training light: the data's own images of those views
when it has them (Objaverse: the training light's images; Blender: ``transforms_test.json`` of the data folder
when its cameras are the eval views'), else the trained field's render of the views before relighting.
Output folders are named after the maps' file stems made safe (:mod:`relight3d.output_names`), so nothing is
written outside ``output``.

The caller builds the ``relight3d-gaffer`` trainer config each map's run starts from
(:func:`relight3d.method_configs.gaffer_config`, in the apps layer above this one) and passes it in the
:class:`RelightJob`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence

import torch

from relight3d.engine.trainer import Relight3DTrainerConfig
from relight3d.errors import ConfigError
from relight3d.output_names import OutputNames
from relight3d.pipelines.relight_eval import EvalViews, find_eval_views
from relight3d.pipelines.relight_field import load_field_run, render_view, straight_rgb, view_points
from relight3d.pipelines.relight_material import material_gbuffers, needs_material
from relight3d.pipelines.relight_stage1 import write_png
from relight3d.priors import registry
from relight3d.priors.base import PriorViews


@dataclass
class RelightJob:
    """What ``relight3d relight`` does."""

    field_run: Path
    """config.yml of the trained relight3d-tensorf / relight3d-ngp run."""
    envmaps: Sequence[Path]
    """Target environment maps (.exr / .hdr)."""
    output: Path
    """Folder for one run per map, their evaluations, videos and the report."""
    method: Relight3DTrainerConfig
    """The relight3d-gaffer trainer config every map's run starts from (``relight3d.method_configs.gaffer_config``:
    the stage lengths, the prior, the device and the batch size are taken from it as they are)."""
    strengths: Optional[Sequence[float]] = None
    """Radiance multiplier per target map (default 1, or the strength recorded in the data's meta.json)."""
    source_strength: Optional[float] = None
    """Radiance multiplier of the training light (default 1, or the data's meta.json)."""
    rotation_deg: float = 0.0
    """Rotation of every target map about the up axis."""
    data: Optional[Path] = None
    """Data folder (default: the trained run's)."""
    video_frames: int = 48
    """Frames of the rotating-light video (0: no video)."""
    video_fps: float = 24.0
    """Frames per second of the video."""
    eval_data: Optional[Sequence[Optional[Path]]] = None
    """Ground truth per target map, in the same order: a Blender-layout folder whose ``transforms_test.json`` views
    are rendered under that map (None for a map: look in the data folder, see the module docstring)."""
    source_envmap: Optional[Path] = None
    """The training light's map (default: the one the data records, else estimated from the field)."""
    estimate_source: bool = False
    """Estimate the training light from the field even when it is known (to measure the estimator)."""
    stage1_cache: Optional[Path] = None
    """Keep each map's stage-1 relit views in ``<stage1_cache>/<map name>/`` (reused by a later run with the same
    settings) instead of in each run's folder."""
    stage1_only: bool = False
    """Only relight the training views of every map into ``stage1_cache`` (nothing is trained, scored or written
    elsewhere). Run under ``torchrun`` / ``accelerate launch`` to split the views across processes; then run again
    without it, in one process, to train, score and report on the cached views."""


@contextlib.contextmanager
def trained_field_weights(pipeline) -> Iterator[None]:  # noqa: ANN001
    """Inside the block, ``pipeline.model`` holds the trained field's weights (its training-light appearance);
    the relit weights come back afterwards."""
    _, field_state, _ = load_field_run(Path(pipeline.config.field_run))
    relit_state = {k: v.clone() for k, v in pipeline.model.state_dict().items()}
    pipeline.model.load_state_dict(field_state, strict=False)
    try:
        yield
    finally:
        pipeline.model.load_state_dict(relit_state)


@torch.no_grad()
def render_views(model, cameras, out_dir: Path, names: Sequence[str]) -> None:  # noqa: ANN001
    """Render ``cameras`` as straight-alpha RGBA PNGs (alpha = accumulation) named ``names``: composited on the
    model's background, as the evaluation does, they give back the render."""
    out_dir.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    for i, name in enumerate(names):
        out = render_view(model, cameras[i : i + 1])
        acc = out["accumulation"].clamp(0, 1)
        write_png(out_dir / name, torch.cat([straight_rgb(out["rgb"], acc, model.background), acc], -1))
    model.train(was_training)


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        dst.write_bytes(src.read_bytes())


def _strength_from_meta(folder: Path, envname: str) -> Optional[float]:
    """The Background strength the benchmark recorded for a map, if any (``meta.json`` beside or above)."""
    for meta in (folder / "meta.json", folder.parent / "meta.json"):
        if meta.is_file():
            try:
                data = json.loads(meta.read_text())
            except json.JSONDecodeError:
                continue
            strengths = data.get("envmap_strengths") or {}
            if envname in strengths:
                return float(strengths[envname])
            settings = data.get("settings") or {}
            if settings.get("env") == envname and "env_strength" in settings:
                return float(settings["env_strength"])
    return None


def render_eval_views(pipeline, out_dir: Path, names: Dict[int, str]) -> None:  # noqa: ANN001
    """Render the eval cameras of ``pipeline`` whose view index is in ``names`` as ``names[view]`` (see
    :func:`render_views`)."""
    dataset = pipeline.datamanager.eval_dataset
    views = list(dataset.metadata.get("view_indices") or range(len(dataset)))
    rows = [i for i, v in enumerate(views) if v in names]
    if rows:
        render_views(pipeline.model, dataset.cameras[torch.tensor(rows)], out_dir, [names[views[i]] for i in rows])


def view_gbuffers(pipeline, normals, points, directions, mask) -> Dict[str, Any]:  # noqa: ANN001
    """The G-buffers the prior shades one view with, as in stage 1: density + depth normals, and their average over
    that view and every training view (``"multiview_normals"``) when the sizes match."""
    from relight3d.priors.normals import density_and_depth_normals, fuse_view_normals

    fg = (mask > 0.5).float()
    both = density_and_depth_normals(normals[None], points[None], directions[None], fg)
    out = {"normals": both, "directions": directions[None], "points": points[None]}
    resolution = pipeline.config.normal_fusion_resolution
    train = pipeline.training_view_gbuffers()
    if resolution > 0 and train["points"].shape[1:3] == points.shape[:2]:
        train_fg = (train["accumulation"] > 0.5).float()
        train_both = density_and_depth_normals(train["normals"], train["points"], train["directions"], train_fg)
        out["multiview_normals"] = fuse_view_normals(
            torch.cat([train_both, both]),
            torch.cat([train["points"], points[None]]),
            torch.cat([train_fg, fg]),
            pipeline.model.field.aabb.detach().float().cpu(),
            resolution,
        )[-1:]
    return out


def rotating_light_video(pipeline, out: Path, n_frames: int, fps: float) -> Optional[Path]:  # noqa: ANN001
    """A fixed view (the first eval camera) under the target map turning once about the up axis.

    Each frame is the prior's relighting of the *trained* field's render of that view under the rotated map, with
    the rendered G-buffers (the relit field itself is fitted to one light only).
    """
    from relight3d.export.video import RotatingLightPath, render_video
    from relight3d.lighting import rotate_envmap_about_up

    if n_frames <= 0:
        return None
    camera = pipeline.datamanager.eval_dataset.cameras[0:1]
    # The training-light appearance of this view comes from the original field.
    with trained_field_weights(pipeline), torch.no_grad():
        gb = render_view(pipeline.model, camera, ("normals",))
    mask = gb["accumulation"].clamp(0, 1)[None].cpu()
    source_rgb = straight_rgb(gb["rgb"].cpu(), mask[0], pipeline.model.background.cpu())
    points, directions = view_points(camera, gb["depth"].cpu())
    gbuffers = view_gbuffers(pipeline, gb["normals"].cpu(), points, directions, mask)
    gbuffers.update(depth=gb["depth"].cpu()[None], accumulation=mask)
    target = pipeline.target_envmap()
    source = pipeline.source_envmap()
    prior = pipeline.prior
    if needs_material(prior.required_gbuffers):
        pipeline.training_view_materials()  # fits the field's material head when the run has not yet
        gbuffers.update(material_gbuffers(pipeline.model.field.material, points[None], mask[..., 0] > 0.5))
    c2w = camera.camera_to_worlds.cpu()

    def frame(model, degrees: float):  # noqa: ANN001, ANN202
        env = rotate_envmap_about_up(target, math.radians(degrees))
        kwargs = {"gbuffers": gbuffers}
        if source is not None:
            kwargs["source_envmap"] = source
        relit = prior.relight(PriorViews(source_rgb[None].cpu(), mask, c2w, env, **kwargs))[0]
        alpha = mask[0]
        return relit * alpha + (1 - alpha) * model.background.cpu()

    cams = camera[torch.zeros(n_frames, dtype=torch.long)]  # the same camera for every frame
    return render_video(pipeline, cams, out, light_path=RotatingLightPath(frame), fps=fps, progress=False).path


def _relight_views_only(cfg, data: Path) -> None:  # noqa: ANN001
    """Stage 1 of one map without a trainer: the pipeline is built on this process's device and relights its share
    of the training views into ``cfg.pipeline.cache_dir`` (see :mod:`relight3d.pipelines.relight_stage1`)."""
    device = cfg.machine.device_type
    if device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    cfg.pipeline.datamanager.data = data
    pipeline = cfg.pipeline.setup(device=device, test_mode="val")
    pipeline.eval()
    pipeline.run_stage1()


def _check_job(job: RelightJob) -> None:
    from relight3d.lighting import read_envmap
    from relight3d.pipelines.relighting import RelightingPipelineConfig

    if not isinstance(job.method.pipeline, RelightingPipelineConfig):
        raise ConfigError("method", f"relighting runs relight3d-gaffer, not {job.method.method_name}")
    if not job.envmaps:
        raise ConfigError("--envmap", "give at least one target environment map")
    for env in job.envmaps:
        read_envmap(env)  # fail early, with one line, on a missing or LDR map
    if job.strengths is not None and len(job.strengths) != len(job.envmaps):
        raise ConfigError("--strength", f"{len(job.strengths)} strengths for {len(job.envmaps)} environment maps")
    if job.eval_data is not None and len(job.eval_data) != len(job.envmaps):
        raise ConfigError(
            "--eval-data", f"{len(job.eval_data)} folders for {len(job.envmaps)} environment maps (one per map)"
        )
    if job.stage1_only and job.stage1_cache is None:
        raise ConfigError("--stage1-only", "needs --stage1-cache: where the relit views are kept for the next run")
    if job.source_envmap is not None:
        if job.estimate_source:
            raise ConfigError("--estimate-source", "cannot be combined with --source-envmap")
        read_envmap(job.source_envmap)


def _score(run_dir: Path, pipeline, views: EvalViews, object_name: str, light: str, prior_name: str):  # noqa: ANN001, ANN202
    """Render the eval views relit and the baseline, link the ground truth, compare; returns the result and the
    baseline's origin."""
    from relight3d.eval.evaluate import compare
    from relight3d.eval.report import write_report

    names = list(views.gt)
    if views.cameras is not None:
        render_views(pipeline.model, views.cameras, run_dir / "pred", names)
    else:
        render_eval_views(pipeline, run_dir / "pred", dict(zip(views.views, names)))
    for name, path in views.gt.items():
        _link(path, run_dir / "gt" / name)
    if views.baseline and set(views.baseline) == set(names):
        for name, path in views.baseline.items():
            _link(path, run_dir / "baseline" / name)
        baseline = "the data's images of the views under the training light"
    else:
        with trained_field_weights(pipeline):
            if views.cameras is not None:
                render_views(pipeline.model, views.cameras, run_dir / "baseline", names)
            else:
                render_eval_views(pipeline, run_dir / "baseline", dict(zip(views.views, names)))
        baseline = "the trained field's render of the views (training light)"
    result = compare(
        run_dir / "gt",
        {f"relight3d-gaffer ({prior_name})": run_dir / "pred"},
        baseline_dir=run_dir / "baseline",
        object_name=object_name,
        light=light,
    )
    write_report(result, run_dir / "report")
    return result, baseline


def run_relighting(job: RelightJob) -> Dict[str, Dict[str, Any]]:
    """Relight, evaluate and report for every target map; returns ``{map name: mean metrics per method, timings,
    where the ground truth, baseline and source light came from}`` (also written as ``summary.json``)."""
    from relight3d.engine.loading import read_trainer_config
    from relight3d.engine.run import train
    from relight3d.eval.report import write_report

    _check_job(job)
    trained = read_trainer_config(job.field_run)
    parser = trained.pipeline.datamanager.dataparser
    # ns-train <method> <dataparser> --data X saves X as the dataparser's data only
    data = Path(job.data or trained.pipeline.datamanager.data or parser.data)
    light_index = int(getattr(parser, "light_index", 0))
    strengths = list(job.strengths) if job.strengths is not None else [None] * len(job.envmaps)
    eval_dirs = list(job.eval_data) if job.eval_data is not None else [None] * len(job.envmaps)
    # Find (and check) every map's ground truth before any training.
    evals = [find_eval_views(data, Path(env).stem, parser, d) for env, d in zip(job.envmaps, eval_dirs)]
    output = Path(job.output)
    output.mkdir(parents=True, exist_ok=True)
    results: Dict[str, Dict[str, Any]] = {}
    combined = None
    prior_name = registry.prior_name(job.method.pipeline.prior)
    names = OutputNames(fallback="envmap")
    for env, strength, views in zip(job.envmaps, strengths, evals):
        envname = Path(env).stem
        name = names.add(envname)
        cfg = copy.deepcopy(job.method)
        cfg.pipeline.field_run = Path(job.field_run)
        cfg.pipeline.target_envmap = Path(env)
        cfg.pipeline.source_envmap = Path(job.source_envmap) if job.source_envmap is not None else None
        cfg.pipeline.estimate_source = job.estimate_source
        cfg.pipeline.field_cache_dir = output / "field_cache"  # G-buffers and shadows: traced once for all maps
        s = strength if strength is not None else _strength_from_meta(data, envname)
        cfg.pipeline.target_envmap_strength = float(s) if s is not None else 1.0
        src = job.source_strength
        if src is None:
            envnames = [p.name.split("_", 2)[2][:-4] for p in sorted(data.glob(f"*_{light_index:03d}_*.png"))[:1]]
            src = _strength_from_meta(data, envnames[0]) if envnames else None
        cfg.pipeline.source_envmap_strength = float(src) if src is not None else 1.0
        if job.rotation_deg:
            cfg.pipeline.target_rotation_deg = job.rotation_deg
        if job.stage1_cache is not None:
            cfg.pipeline.cache_dir = Path(job.stage1_cache) / name
        if job.stage1_only:
            _relight_views_only(cfg, data)
            continue
        run_dir = output / name
        started = time.perf_counter()
        trainer = train(cfg, data, run_dir, experiment_name=name)
        pipeline = trainer.pipeline

        entry: Dict[str, Any] = {"train_seconds": time.perf_counter() - started, **pipeline.state.timings.rates()}
        if views is not None:
            result, baseline = _score(run_dir, pipeline, views, data.name, envname, prior_name)
            combined = result if combined is None else combined.extend(result)
            for method in sorted({r.method for r in result.records}):
                means = result.mean(method=method)
                entry.update({f"{method}/{k}": v for k, v in means.items()})
            entry["ground_truth"] = views.source
            entry["baseline"] = baseline
        else:
            dataset = pipeline.datamanager.eval_dataset
            eval_views = list(dataset.metadata.get("view_indices") or range(len(dataset)))
            render_eval_views(pipeline, run_dir / "pred", {v: f"{v:03d}.png" for v in eval_views})
            entry["ground_truth"] = "none found: renders only (pass --eval-data)"
        entry["source_light"] = pipeline.source_light_origin()
        if pipeline.state.material_origin is not None:
            entry["material"] = pipeline.state.material_origin
        if job.video_frames > 0:
            rotating_light_video(pipeline, run_dir / "rotating_light.mp4", job.video_frames, job.video_fps)
        results[name] = entry
    if job.stage1_only:
        return results
    if combined is not None:
        write_report(combined, output / "report", title=f"relight3d relighting: {data.name}")
    (output / "summary.json").write_text(json.dumps(results, indent=2))
    return results
