"""``relight3d relight``: relight one trained field under several target maps, evaluate, render videos, report.

For each target map this trains ``relight3d-gaffer`` (stage 1 + stage 2) from the trained field, renders the
held-out views, scores them against the ground truth under that light when the data has it (Objaverse / Neural
Gaffer layout: ``{view:03d}_{light:03d}_{envname}.png``, the light found by the map's file name) together with the
"no relighting" baseline (the same views under the training light), writes a rotating-light video, and finally one
comparison report over all target maps.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from relight3d.data.errors import DataError
from relight3d.priors.base import RelightingPriorConfig
from relight3d.priors.physical import PhysicalPriorConfig


@dataclass
class RelightJob:
    """What ``relight3d relight`` does."""

    field_run: Path
    """config.yml of the trained relight3d-tensorf / relight3d-ngp run."""
    envmaps: Sequence[Path]
    """Target environment maps (.exr / .hdr)."""
    output: Path
    """Folder for one run per map, their evaluations, videos and the report."""
    prior: RelightingPriorConfig = field(default_factory=PhysicalPriorConfig)
    """The relighting prior."""
    strengths: Optional[Sequence[float]] = None
    """Radiance multiplier per target map (default 1, or the strength recorded in the data's meta.json)."""
    source_strength: Optional[float] = None
    """Radiance multiplier of the training light (default 1, or the data's meta.json)."""
    rotation_deg: float = 0.0
    """Rotation of every target map about the up axis."""
    stage1_steps: int = 2500
    """Stage-1 iterations per map."""
    stage2_steps: int = 500
    """Stage-2 iterations per map."""
    data: Optional[Path] = None
    """Data folder (default: the trained run's)."""
    video_frames: int = 48
    """Frames of the rotating-light video (0: no video)."""
    video_fps: float = 24.0
    """Frames per second of the video."""
    device: str = "cpu"
    """Where training runs."""
    rays_per_batch: Optional[int] = None
    """Override of the training rays per batch."""


def gt_views_for_light(folder: Path, envname: str, views: Sequence[int]) -> Tuple[Optional[int], Dict[int, Path]]:
    """The light index whose images are named after ``envname`` and its image per view (Objaverse layout)."""
    from relight3d.data.objaverse import scan_object_folder

    found = scan_object_folder(folder)
    for light in sorted({k for v in found.values() for k in v}):
        paths = {
            v: found[v][light][1] for v in views if v in found and light in found[v] and found[v][light][0] == envname
        }
        if paths:
            return light, paths
    return None, {}


def training_light_views(folder: Path, light: int, views: Sequence[int]) -> Dict[int, Path]:
    """Images of ``views`` under the training light ``light``."""
    from relight3d.data.objaverse import scan_object_folder

    found = scan_object_folder(folder)
    return {v: found[v][light][1] for v in views if v in found and light in found[v]}


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


@torch.no_grad()
def render_eval_views(pipeline, out_dir: Path, names: Dict[int, str]) -> None:  # noqa: ANN001
    """Render the eval cameras of ``pipeline`` as straight-alpha RGBA PNGs (alpha = accumulation) named
    ``names[view]``: composited on the model's background, as the evaluation does, they give back the render."""
    from relight3d.pipelines.relighting import render_view, straight_rgb

    dataset = pipeline.datamanager.eval_dataset
    views = list(dataset.metadata.get("view_indices") or range(len(dataset)))
    out_dir.mkdir(parents=True, exist_ok=True)
    pipeline.model.eval()
    for i, v in enumerate(views):
        if v not in names:
            continue
        out = render_view(pipeline.model, dataset.cameras[i : i + 1])
        acc = out["accumulation"].clamp(0, 1)
        rgba = torch.cat([straight_rgb(out["rgb"], acc, pipeline.model.background), acc], -1).cpu().numpy()
        Image.fromarray((rgba * 255 + 0.5).astype(np.uint8)).save(out_dir / names[v])


def rotating_light_video(pipeline, out: Path, n_frames: int, fps: float) -> Optional[Path]:  # noqa: ANN001
    """A fixed view (the first eval camera) under the target map turning once about the up axis.

    Each frame is the prior's relighting of the *trained* field's render of that view under the rotated map, with
    the rendered G-buffers (the relit field itself is fitted to one light only).
    """
    from relight3d.export.video import RotatingLightPath, render_video
    from relight3d.lighting import rotate_envmap_about_up
    from relight3d.pipelines.relighting import camera_rays, load_field_run, render_view, straight_rgb

    if n_frames <= 0:
        return None
    camera = pipeline.datamanager.eval_dataset.cameras[0:1]
    # The training-light appearance of this view comes from the original field: swap its weights in to render it.
    _, field_state, _ = load_field_run(Path(pipeline.config.field_run))
    relit_state = {k: v.clone() for k, v in pipeline.model.state_dict().items()}
    pipeline.model.load_state_dict(field_state, strict=False)
    with torch.no_grad():
        gb = render_view(pipeline.model, camera, ("normals",))
    pipeline.model.load_state_dict(relit_state)
    mask = gb["accumulation"].clamp(0, 1)[None].cpu()
    source_rgb = straight_rgb(gb["rgb"].cpu(), mask[0], pipeline.model.background.cpu())
    directions = camera_rays(camera)[1].reshape(source_rgb.shape)
    target = pipeline.target_envmap()
    source = pipeline.source_envmap()
    prior = pipeline.prior
    c2w = camera.camera_to_worlds.cpu()

    def frame(model, degrees: float):  # noqa: ANN001, ANN202
        env = rotate_envmap_about_up(target, math.radians(degrees))
        kwargs = {"gbuffers": {"normals": gb["normals"][None].cpu(), "directions": directions[None].cpu()}}
        if source is not None:
            kwargs["source_envmap"] = source
        relit = prior.relight(source_rgb[None].cpu(), mask, c2w, env, **kwargs)[0]
        alpha = mask[0]
        return relit * alpha + (1 - alpha) * model.background.cpu()

    path = RotatingLightPath(frame)
    cams = camera.__class__(
        camera_to_worlds=camera.camera_to_worlds.repeat(n_frames, 1, 1),
        fx=camera.fx.repeat(n_frames, 1),
        fy=camera.fy.repeat(n_frames, 1),
        cx=camera.cx.repeat(n_frames, 1),
        cy=camera.cy.repeat(n_frames, 1),
        width=camera.width.repeat(n_frames, 1),
        height=camera.height.repeat(n_frames, 1),
        camera_type=camera.camera_type.repeat(n_frames, 1),
    )
    return render_video(pipeline, cams, out, light_path=path, fps=fps, progress=False).path


def run_relighting(job: RelightJob) -> Dict[str, Dict[str, float]]:
    """Relight, evaluate and report for every target map; returns ``{map name: mean metrics per method}``."""
    from relight3d.engine.loading import read_trainer_config
    from relight3d.engine.run import train
    from relight3d.eval.evaluate import compare
    from relight3d.eval.report import write_report
    from relight3d.lighting import read_envmap
    from relight3d.method_configs import gaffer_config

    trained = read_trainer_config(job.field_run)
    data = Path(job.data) if job.data is not None else Path(trained.pipeline.datamanager.data)
    for env in job.envmaps:
        read_envmap(env)  # fail early, with one line, on a missing or LDR map
    strengths = list(job.strengths) if job.strengths is not None else [None] * len(job.envmaps)
    if len(strengths) != len(job.envmaps):
        raise DataError(job.output, f"{len(strengths)} strengths for {len(job.envmaps)} environment maps")
    parser = trained.pipeline.datamanager.dataparser
    light_index = int(getattr(parser, "light_index", 0))
    eval_views = list(range(*getattr(parser, "eval_views", (100, 120))))
    results: Dict[str, Dict[str, float]] = {}
    combined = None
    prior_name = type(job.prior).__name__.replace("PriorConfig", "").lower() or "prior"
    for env, strength in zip(job.envmaps, strengths):
        name = Path(env).stem
        cfg = gaffer_config(job.stage1_steps, job.stage2_steps)
        cfg.machine.device_type = job.device
        cfg.pipeline.field_run = Path(job.field_run)
        cfg.pipeline.target_envmap = Path(env)
        cfg.pipeline.prior = dataclasses.replace(job.prior)
        s = strength if strength is not None else _strength_from_meta(data, name)
        cfg.pipeline.target_envmap_strength = float(s) if s is not None else 1.0
        src = job.source_strength
        if src is None:
            envnames = [p.name.split("_", 2)[2][:-4] for p in sorted(data.glob(f"*_{light_index:03d}_*.png"))[:1]]
            src = _strength_from_meta(data, envnames[0]) if envnames else None
        cfg.pipeline.source_envmap_strength = float(src) if src is not None else 1.0
        if job.rotation_deg:
            cfg.pipeline.target_rotation_deg = job.rotation_deg
        if job.rays_per_batch:
            cfg.pipeline.datamanager.train_num_rays_per_batch = job.rays_per_batch
        run_dir = Path(job.output) / name
        started = time.perf_counter()
        trainer = train(cfg, data, run_dir, experiment_name=name)
        pipeline = trainer.pipeline

        light, gt_paths = gt_views_for_light(data, name, eval_views)
        names = {v: f"{v:03d}.png" for v in eval_views}
        render_eval_views(pipeline, run_dir / "pred", names)
        entry: Dict[str, float] = {"train_seconds": time.perf_counter() - started}
        timings = pipeline.timings
        if timings["stage1_views"]:
            entry["stage1_views_per_second"] = timings["stage1_views"] / max(timings["stage1_seconds"], 1e-9)
        if timings["stage2_iters"]:
            entry["stage2_iterations_per_second"] = timings["stage2_iters"] / max(timings["stage2_seconds"], 1e-9)
        if gt_paths:
            for v, p in gt_paths.items():
                _link(p, run_dir / "gt" / names[v])
            for v, p in training_light_views(data, light_index, list(gt_paths)).items():
                _link(p, run_dir / "baseline" / names[v])
            result = compare(
                run_dir / "gt",
                {f"relight3d-gaffer ({prior_name})": run_dir / "pred"},
                baseline_dir=run_dir / "baseline",
                object_name=data.name,
                light=name,
                output=run_dir / "report",
            )
            combined = result if combined is None else combined.extend(result)
            for method in sorted({r.method for r in result.records}):
                means = result.mean(method=method)
                results.setdefault(name, {}).update({f"{method}/{k}": v for k, v in means.items()})
        if job.video_frames > 0:
            rotating_light_video(pipeline, run_dir / "rotating_light.mp4", job.video_frames, job.video_fps)
        results.setdefault(name, {}).update(entry)
    if combined is not None:
        write_report(combined, Path(job.output) / "report", title=f"relight3d relighting: {data.name}")
    (Path(job.output) / "summary.json").write_text(json.dumps(results, indent=2))
    return results


__all__: List[str] = ["RelightJob", "run_relighting", "gt_views_for_light", "render_eval_views"]
