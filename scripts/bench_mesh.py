"""Mesh export: accuracy against a known surface, and time and peak memory per grid resolution on this machine.

Accuracy. Trains relight3d-tensorf on a scene (or loads a run with ``--load-config``), exports its mesh with the
default settings (automatic threshold, largest component, vertex colours) and compares it with the true surface:

* ``--scene sphere``: relight3d's own sphere scene (radius 0.5 at the origin, rendered by relight3d.data.synthetic);
  symmetric Chamfer distance (mean mesh-to-surface + mean surface-to-mesh, in scene units) to the analytic sphere.
* ``--scene bunny``: the path-traced Stanford bunny cached at ~/.cache/relight3d/scenes/bunny128; Chamfer distance
  to its ground-truth mesh.ply; components and normal consistency.

Speed and memory. For each ``--resolutions`` entry, a fresh subprocess loads the run and exports the mesh; it reports
the export's wall time, the peak resident memory of the process before and after the export (VmHWM), and the mesh
size. Numbers depend on the machine's load: say so when quoting them.

Usage::

    python scripts/bench_mesh.py --scene sphere                      # train (cached), accuracy, 256^3 and 512^3
    python scripts/bench_mesh.py --load-config outputs/.../config.yml --scene bunny --picture bunny.png
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Optional

import numpy as np

BUNNY = Path.home() / ".cache" / "relight3d" / "scenes" / "bunny128"


def train_scene(scene: str, work: Path, steps: int) -> Path:
    """Train relight3d-tensorf on ``scene`` under ``work`` (reusing a finished run there); returns its config.yml."""
    import torch

    from relight3d.data.synthetic import SceneSpec, write_blender_scene
    from relight3d.engine.run import train
    from relight3d.engine.trainer import latest_checkpoint
    from relight3d.method_configs import tensorf_config

    run_dir = work / f"{scene}_run"
    for config in sorted(run_dir.glob("*/*/*/config.yml")):
        if latest_checkpoint(config.parent / "nerfstudio_models") is not None:
            print(f"reusing the run at {config.parent}")
            return config
    cfg = tensorf_config(max_steps=steps)
    cfg.vis = "tensorboard"
    cfg.steps_per_eval_image = cfg.steps_per_eval_batch = 10**9
    cfg.steps_per_save = 10**9  # the trainer saves the last step anyway
    if scene == "sphere":
        # 128 px, 30 views: the sphere's outline is seen to a fraction of a pixel (0.022 scene units).
        data = write_blender_scene(
            work / "sphere_scene", SceneSpec(scene="sphere", resolution=128, n_train=30, n_test=2, supersample=2)
        )
        cfg.pipeline.datamanager.train_num_rays_per_batch = 2048
        model = cfg.pipeline.model
        model.occupancy_resolution = 64
        model.init_resolution, model.final_resolution = 48, 128
        model.upsampling_iters = (steps // 4, steps // 2)
        model.shrink_iters = (steps // 4,)
    else:
        data = BUNNY
    torch.manual_seed(0)
    t0 = time.perf_counter()
    train(cfg, data, run_dir, experiment_name=scene)
    print(f"trained {steps} steps on {scene} in {time.perf_counter() - t0:.0f} s")
    return cfg.get_base_dir() / "config.yml"


def chamfer(mesh, reference, n: int = 20000) -> Dict[str, float]:  # noqa: ANN001 - trimesh meshes
    """Symmetric Chamfer distance between two meshes from ``n`` surface samples each (exact point-to-triangle)."""
    import trimesh

    a, _ = trimesh.sample.sample_surface(mesh, n, seed=0)
    b, _ = trimesh.sample.sample_surface(reference, n, seed=1)
    _, a_to_b, _ = trimesh.proximity.closest_point(reference, a)
    _, b_to_a, _ = trimesh.proximity.closest_point(mesh, b)
    return {"mesh_to_truth": float(a_to_b.mean()), "truth_to_mesh": float(b_to_a.mean()),
            "chamfer": float(a_to_b.mean() + b_to_a.mean())}  # fmt: skip


def sphere_chamfer(mesh, radius: float = 0.5, n: int = 20000) -> Dict[str, float]:  # noqa: ANN001
    """Symmetric Chamfer distance to the analytic sphere (exact in both directions)."""
    import trimesh

    on_mesh, _ = trimesh.sample.sample_surface(mesh, n, seed=0)
    mesh_to_sphere = np.abs(np.linalg.norm(on_mesh, axis=1) - radius)
    directions = np.random.default_rng(1).normal(size=(n, 3))
    on_sphere = radius * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    _, sphere_to_mesh, _ = trimesh.proximity.closest_point(mesh, on_sphere)
    return {"mesh_to_truth": float(mesh_to_sphere.mean()), "truth_to_mesh": float(sphere_to_mesh.mean()),
            "chamfer": float(mesh_to_sphere.mean() + sphere_to_mesh.mean())}  # fmt: skip


def sphere_color_error(mesh) -> float:  # noqa: ANN001
    """Mean absolute difference between vertex colours and the sphere scene's true colour in the vertex's direction."""
    import torch

    from relight3d.data.synthetic import trace

    directions = torch.from_numpy(np.asarray(mesh.vertices, dtype=np.float64))
    directions = directions / directions.norm(dim=1, keepdim=True)
    truth, _ = trace(3.0 * directions, -directions, "sphere")
    colors = np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0
    return float(np.abs(colors - truth.clamp(0, 1).numpy()).mean())


def accuracy(
    config_path: Path, scene: str, resolution: int, picture: Optional[Path], save_mesh: Optional[Path]
) -> Dict:
    import trimesh

    from relight3d.engine.loading import load_trained_pipeline
    from relight3d.export.mesh import extract_mesh, write_mesh

    _, pipeline = load_trained_pipeline(config_path)
    t0 = time.perf_counter()
    mesh = extract_mesh(pipeline, resolution=resolution, progress=False)
    seconds = time.perf_counter() - t0
    info = mesh.metadata["relight3d"]
    result = {
        "scene": scene,
        "resolution": resolution,
        "seconds": seconds,
        "vertices": len(mesh.vertices),
        "faces": len(mesh.faces),
        "threshold": info["threshold"],
        "threshold_mode": info["threshold_mode"],
        "mask_iou": info.get("mask_iou"),
        "components_found": info["components_found"],
        "components_kept": len(mesh.split(only_watertight=False)),
        "watertight": bool(mesh.is_watertight),
        "winding_consistent": bool(mesh.is_winding_consistent),
        "outward": bool(mesh.volume > 0),
    }
    if scene == "sphere":
        result.update(sphere_chamfer(mesh))
        result["color_error"] = sphere_color_error(mesh)
    else:
        result.update(chamfer(mesh, trimesh.load(BUNNY / "mesh.ply", process=False)))
    if save_mesh is not None:
        write_mesh(mesh, save_mesh)
    if picture is not None:
        from PIL import Image

        from relight3d.export.preview import render_mesh_preview

        picture.parent.mkdir(parents=True, exist_ok=True)
        views = [render_mesh_preview(mesh, 512, 512, azimuth=az, elevation=15.0) for az in (-35.0, 145.0)]
        Image.fromarray(np.concatenate(views, axis=1)).save(picture)
        result["picture"] = str(picture)
    return result


def export_child(config_path: Path, resolution: int) -> Dict:
    """Runs in a fresh process: load the run, export once, report time and peak memory."""
    import torch

    from relight3d.engine.loading import load_trained_pipeline
    from relight3d.eval.memory import peak_rss_mib
    from relight3d.export.mesh import extract_mesh

    torch.set_num_threads(max(1, torch.get_num_threads()))
    _, pipeline = load_trained_pipeline(config_path)
    rss_loaded = peak_rss_mib()
    t0 = time.perf_counter()
    mesh = extract_mesh(pipeline, resolution=resolution, progress=False)
    seconds = time.perf_counter() - t0
    info = mesh.metadata["relight3d"]
    return {
        "resolution": resolution,
        "grid": "x".join(map(str, info["grid_shape"])),
        "seconds": seconds,
        "seconds_grid_and_marching_cubes": info["seconds_grid_and_marching_cubes"],
        "peak_rss_after_load_mib": rss_loaded,
        "peak_rss_mib": peak_rss_mib(),
        "faces": len(mesh.faces),
        "vertices": len(mesh.vertices),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scene", choices=["sphere", "bunny"], default="sphere")
    parser.add_argument("--load-config", type=Path, default=None, help="use this run instead of training one")
    parser.add_argument("--steps", type=int, default=800, help="training iterations (when training)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/relight3d-bench-mesh"), help="runs and scenes")
    parser.add_argument("--accuracy-resolution", type=int, default=256)
    parser.add_argument("--resolutions", type=int, nargs="*", default=[256, 512], help="timed resolutions")
    parser.add_argument("--picture", type=Path, default=None, help="save a preview of the mesh here (PNG)")
    parser.add_argument("--save-mesh", type=Path, default=None, help="save the accuracy mesh here")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    parser.add_argument("--skip-accuracy", action="store_true", help="only the timing")
    parser.add_argument("--_child", nargs=2, metavar=("CONFIG", "RESOLUTION"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._child:
        print(json.dumps(export_child(Path(args._child[0]), int(args._child[1]))))
        return

    config = args.load_config or train_scene(args.scene, args.work, args.steps)
    results: Dict = {"config": str(config)}
    if not args.skip_accuracy:
        report_accuracy(results, config, args)
    report_timing(results, config, args.resolutions)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n(load average at the end: {load}; {os.cpu_count()} CPUs; other jobs distort these timings)")


def report_accuracy(results: Dict, config: Path, args: argparse.Namespace) -> None:
    acc = accuracy(config, args.scene, args.accuracy_resolution, args.picture, args.save_mesh)
    results["accuracy"] = acc
    print(f"\naccuracy ({args.scene}, {acc['resolution']}^3): Chamfer {acc['chamfer']:.4f} "
          f"(mesh->truth {acc['mesh_to_truth']:.4f}, truth->mesh {acc['truth_to_mesh']:.4f}); "
          f"threshold {acc['threshold']:.3g} ({acc['threshold_mode']}); components found {acc['components_found']}, "
          f"kept {acc['components_kept']}; watertight {acc['watertight']}, consistent winding "
          f"{acc['winding_consistent']}, outward {acc['outward']}; {acc['faces']} faces"
          + (f"; vertex colour error {acc['color_error']:.4f}" if "color_error" in acc else ""))  # fmt: skip


def report_timing(results: Dict, config: Path, resolutions) -> None:  # noqa: ANN001
    rows = []
    for res in resolutions:
        out = subprocess.run(
            [sys.executable, __file__, "--_child", str(config), str(res)], capture_output=True, text=True, check=True
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    results["timing"] = rows
    if rows:
        print("\nresolution  grid          export s  (grid+MC s)  peak RSS after load  peak RSS  faces")
        for r in rows:
            timing = f"{r['seconds']:>8.1f}  ({r['seconds_grid_and_marching_cubes']:>8.1f})"
            memory = f"{r['peak_rss_after_load_mib']:>15.0f} MiB  {r['peak_rss_mib']:>5.0f} MiB"
            print(f"{r['resolution']:>10}  {r['grid']:<12}  {timing}  {memory}  {r['faces']}")


if __name__ == "__main__":
    main()
