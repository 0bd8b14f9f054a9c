"""``relight3d export mesh`` on a briefly trained sphere: one closed, outward-facing component near radius 0.5,
coloured as the model renders it. (The strict accuracy figure, Chamfer < 0.01 after a longer run, is measured by
scripts/bench_mesh.py.)"""

from __future__ import annotations

import numpy as np
import torch
import trimesh

from relight3d.cli import main


def chamfer_to_sphere(mesh: trimesh.Trimesh, radius: float = 0.5, n: int = 4000) -> float:
    """Symmetric Chamfer distance (mean mesh-to-sphere + mean sphere-to-mesh) to the analytic sphere."""
    on_mesh, _ = trimesh.sample.sample_surface(mesh, n, seed=0)
    mesh_to_sphere = np.abs(np.linalg.norm(on_mesh, axis=1) - radius).mean()
    directions = np.random.default_rng(0).normal(size=(n, 3))
    on_sphere = radius * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    _, sphere_to_mesh, _ = trimesh.proximity.closest_point(mesh, on_sphere)
    return float(mesh_to_sphere + sphere_to_mesh.mean())


def test_cli_mesh_of_the_trained_sphere(sphere_run, tmp_path, capsys):
    config_path, _ = sphere_run
    out = tmp_path / "sphere.ply"
    code = main(["export", "mesh", "--load-config", str(config_path), "--output", str(out), "--resolution", "64",
                 "--no-progress"])  # fmt: skip
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "density threshold" in printed.out and "(masks)" in printed.out  # RGBA training images: the 'masks' rule
    mesh = trimesh.load(out, process=True)
    assert len(mesh.split(only_watertight=False)) == 1
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    assert chamfer_to_sphere(mesh) < 0.06
    # Vertex colours are what the model renders looking at each vertex along its inward normal. (Against the
    # scene's true colours this brief run is still poor; scripts/bench_mesh.py measures that after a full run.)
    _, pipeline = sphere_run
    model = pipeline.model
    vertices = torch.from_numpy(np.array(mesh.vertices, dtype=np.float32))
    normals = torch.from_numpy(np.array(mesh.vertex_normals, dtype=np.float32))
    with torch.no_grad():
        seen = model.render_rays(vertices + 1.0 * normals, -normals)
    acc = seen["accumulation"]
    unblended = ((seen["rgb"] - (1.0 - acc) * model.background) / acc.clamp_min(1e-3)).clamp(0, 1).numpy()
    colors = mesh.visual.vertex_colors[:, :3].astype(np.float64) / 255.0
    opaque = acc[:, 0].numpy() > 0.5
    assert opaque.mean() > 0.9
    assert np.abs(colors - unblended)[opaque].mean() < 0.03
