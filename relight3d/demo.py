"""The embedded default, ``relight3d demo``: generate, train, relight, score, export. No downloads, no weights.

1. **Scene.** relight3d's own tracer (:mod:`relight3d.data.synthetic`) renders three textured primitives under a
   source light (training and test views) and the test views again under two target lights; the lights are HDR
   maps shipped with the package (:func:`shipped_envmaps`). The ground truth therefore comes from the same
   Lambertian shading model the physical prior assumes (plus cast shadows): the relighting figures flatter that
   prior. The scene is cached under ``~/.cache/relight3d/scenes`` (or ``$RELIGHT3D_CACHE``).
2. **Field.** ``relight3d-tensorf`` (or ``relight3d-ngp``) is trained on the source-light views and scored on the
   held-out ones.
3. **Relighting.** :func:`relight3d.pipelines.relight_run.run_relighting` relights the field under both target
   lights with the physical prior and scores the held-out views against the ground truth (``eval_data``: the
   Blender-layout folders of the target lights), raw and channel-aligned, in the mask and over the image, with the
   no-relighting baseline; it writes a rotating-light video per light and the HTML report.
4. **Mesh.** The trained field's surface goes to ``mesh.ply`` (:mod:`relight3d.export`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Dict, Literal, Optional

SOURCE_LIGHT = "courtyard"
"""The shipped map the demo scene is trained under."""
TARGET_LIGHTS = ("sunrise", "studio")
"""The shipped maps the demo relights to."""


def cache_dir() -> Path:
    """Where relight3d caches generated data."""
    return Path(os.environ.get("RELIGHT3D_CACHE", Path.home() / ".cache" / "relight3d"))


def shipped_envmaps() -> Dict[str, Path]:
    """The HDR maps shipped in ``relight3d/assets/envmaps`` (CC0, see the LICENSE file there), by name."""
    folder = Path(str(resources.files("relight3d").joinpath("assets", "envmaps")))
    return {p.stem: p for p in sorted(folder.glob("*.exr"))}


@dataclass
class DemoConfig:
    """Settings of ``relight3d demo``."""

    method: Literal["relight3d-tensorf", "relight3d-ngp"] = "relight3d-tensorf"
    """Method of the field."""
    resolution: int = 64
    """Image size of the generated scene."""
    n_train: int = 40
    """Training views (under the source light)."""
    n_test: int = 8
    """Held-out views (under the source light and under each target light)."""
    supersample: int = 2
    """Rays per pixel side when rendering the scene."""
    steps: int = 1000
    """Training iterations of the field."""
    stage1_steps: int = 300
    """Relighting stage-1 iterations per target light."""
    stage2_steps: int = 0
    """Relighting stage-2 iterations per target light (with the physical prior it does not help; see README)."""
    video_frames: int = 36
    """Frames of each rotating-light video (0: none)."""
    mesh_resolution: int = 128
    """Grid samples along the longest side for the mesh (0: no mesh)."""
    shadow_grid: int = 64
    """Density-grid cells per side through which the physical prior traces shadows (0: no shadows)."""
    shadow_rows: int = 12
    """Rows of the coarse map whose texels are the prior's shadow directions (12: 288 directions)."""
    source_light: Literal["recorded", "estimated"] = "recorded"
    """The source light the physical prior divides out: the map the scene records, or one estimated from the field
    (as for a real capture)."""
    rays_per_batch: Optional[int] = None
    """Override of the training rays per batch (field and relighting); None keeps the method's."""
    output: Path = Path("renders/demo")
    """Where the run, the relighting, the report, the videos, the mesh and metrics.json go."""


def run_demo(cfg: DemoConfig, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Run the demo; returns its summary (also written as ``<output>/metrics.json``)."""
    from relight3d.data.synthetic import SceneSpec, write_relighting_scene
    from relight3d.engine.run import evaluate_pipeline, train
    from relight3d.method_configs import gaffer_config, ngp_config, tensorf_config
    from relight3d.pipelines.relight_run import RelightJob, run_relighting
    from relight3d.priors.physical import PhysicalPriorConfig

    started = time.perf_counter()
    out = Path(cfg.output)
    maps = shipped_envmaps()
    missing = [n for n in (SOURCE_LIGHT, *TARGET_LIGHTS) if n not in maps]
    if missing:
        from relight3d.errors import DataError

        raise DataError(Path(str(resources.files("relight3d"))) / "assets" / "envmaps", f"missing maps {missing}")
    spec = SceneSpec(
        scene="objects",
        resolution=cfg.resolution,
        n_train=cfg.n_train,
        n_test=cfg.n_test,
        supersample=cfg.supersample,
    )
    t0 = time.perf_counter()
    scene = write_relighting_scene(
        cache_dir() / "scenes" / f"relight_demo{cfg.resolution}", spec, maps[SOURCE_LIGHT],
        [maps[n] for n in TARGET_LIGHTS],
    )  # fmt: skip
    scene_seconds = time.perf_counter() - t0
    log(f"demo: scene under {SOURCE_LIGHT}, held-out views under {', '.join(TARGET_LIGHTS)}: {scene.scene.parent}")

    trainer_config = tensorf_config(cfg.steps) if cfg.method == "relight3d-tensorf" else ngp_config(cfg.steps)
    trainer_config.steps_per_save = cfg.steps
    if cfg.rays_per_batch:
        trainer_config.pipeline.datamanager.train_num_rays_per_batch = cfg.rays_per_batch
    t0 = time.perf_counter()
    trainer = train(trainer_config, scene.scene, out / "field", experiment_name="demo")
    field_seconds = time.perf_counter() - t0
    field = evaluate_pipeline(trainer.pipeline, out_dir=out / "field_test_views")
    field_run = trainer.base_dir / "config.yml"
    log(f"demo: {cfg.method} trained in {field_seconds:.0f} s, held-out PSNR {field['psnr']:.2f} dB")

    mesh_path = None
    if cfg.mesh_resolution > 0:
        from relight3d.export.mesh import export_mesh

        mesh_path = out / "mesh.ply"
        export_mesh(trainer.pipeline, mesh_path, resolution=cfg.mesh_resolution, progress=False)

    t0 = time.perf_counter()
    prior = PhysicalPriorConfig(
        shadows=cfg.shadow_grid > 0,
        shadow_volume_resolution=max(cfg.shadow_grid, 1),
        shadow_directions_height=cfg.shadow_rows,
    )
    relight_config = gaffer_config(cfg.stage1_steps, cfg.stage2_steps, prior=prior)
    if cfg.rays_per_batch:
        relight_config.pipeline.datamanager.train_num_rays_per_batch = cfg.rays_per_batch
    job = RelightJob(
        field_run=field_run,
        envmaps=[scene.targets[n][0] for n in TARGET_LIGHTS],
        eval_data=[scene.targets[n][1] for n in TARGET_LIGHTS],
        output=out / "relight",
        method=relight_config,
        video_frames=cfg.video_frames,
        estimate_source=cfg.source_light == "estimated",
    )
    relit = run_relighting(job)
    relight_seconds = time.perf_counter() - t0
    summary: Dict[str, Any] = {
        "method": cfg.method,
        "source_light": cfg.source_light,
        "lights": {"source": SOURCE_LIGHT, "targets": list(TARGET_LIGHTS)},
        "field": field,
        "relighting": relit,
        "seconds": {
            "scene": scene_seconds,
            "field": field_seconds,
            "relighting": relight_seconds,
            "total": time.perf_counter() - started,
        },
        "paths": {
            "scene": str(scene.scene.parent),
            "field_run": str(field_run),
            "report": str(out / "relight" / "report" / "report.html"),
            "videos": [str(out / "relight" / n / "rotating_light.mp4") for n in relit if cfg.video_frames > 0],
            "mesh": str(mesh_path) if mesh_path is not None else None,
            "metrics": str(out / "metrics.json"),
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    return summary


RELIT = "relight3d-gaffer (physical)"
BASELINE = "no relighting"


def format_summary(summary: Dict[str, Any]) -> str:
    """What ``relight3d demo`` prints: per target light, PSNR of the relit views and of the baseline, then paths."""
    field = summary["field"]
    lines = [
        f"{summary['method']}: held-out PSNR {field['psnr']:.2f} dB under the training light "
        f"(in the object mask {field['psnr_masked']:.2f} dB) on {field['n_views']} views",
        f"relighting (physical prior, source light {summary['source_light']}), PSNR in dB, relit / no relighting:",
        "  light      mask raw         mask aligned     image raw        image aligned",
    ]
    for light, r in summary["relighting"].items():
        cells = []
        for key in ("psnr_masked", "psnr_masked_aligned", "psnr", "psnr_aligned"):
            relit, base = r.get(f"{RELIT}/{key}", float("nan")), r.get(f"{BASELINE}/{key}", float("nan"))
            cells.append(f"{relit:6.2f} / {base:6.2f}")
        lines.append(f"  {light:<10} " + "  ".join(f"{c:<15}" for c in cells))
    paths = summary["paths"]
    lines += [
        f"report:  {paths['report']}",
        *(f"video:   {v}" for v in paths["videos"]),
        *([f"mesh:    {paths['mesh']}"] if paths["mesh"] else []),
        f"field:   {paths['field_run']}",
        f"scene:   {paths['scene']}",
        f"metrics: {paths['metrics']}",
        f"time:    {summary['seconds']['total']:.0f} s",
    ]
    return "\n".join(lines)
