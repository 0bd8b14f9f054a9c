"""UV textures: the torch rasteriser against a brute-force reference, the bake against the field's colour, and
nvdiffrast against the torch rasteriser where CUDA is available."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from conftest import position_color, sigmoid_ball

from relight3d._optional import nvdiffrast_torch
from relight3d.export.mesh import export_mesh, extract_mesh
from relight3d.export.texture import dilate_texture, rasterize_uv_nvdiffrast, rasterize_uv_torch

FAST = dict(progress=False, auto_threshold_rays=512, auto_threshold_samples=256)


def random_triangles(n: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    uvs = torch.rand(n * 3, 2, generator=gen)
    faces = torch.arange(n * 3).reshape(n, 3)
    return uvs, faces


def test_torch_rasteriser_matches_brute_force():
    size = 24
    uvs, faces = random_triangles(6)
    face_index, bary = rasterize_uv_torch(uvs, faces, size, max_candidates=97)  # a tiny budget: many face chunks
    # Texel centres in uv (row 0 is v = 1).
    cols, rows = np.meshgrid(np.arange(size), np.arange(size))
    centre = np.stack([(cols + 0.5) / size, 1.0 - (rows + 0.5) / size], axis=-1)
    tri = uvs.numpy()[faces.numpy()]
    covered_by = np.full((size, size), -1)
    for f, (a, b, c) in enumerate(tri):
        m = np.stack([b - a, c - a], axis=1)
        w12 = np.linalg.solve(m[None, None], (centre - a)[..., None])[..., 0]
        inside = (w12 >= -1e-6).all(-1) & (w12.sum(-1) <= 1 + 1e-6)
        covered_by[inside] = f  # later faces overwrite, like the rasteriser
    assert np.array_equal(face_index.numpy() >= 0, covered_by >= 0)
    hit = face_index >= 0
    # Barycentric weights sum to one and reproduce each texel centre from its face's corners.
    assert torch.allclose(bary[hit].sum(-1), torch.ones(int(hit.sum())), atol=1e-5)
    corners = uvs[faces[face_index[hit]]]
    rebuilt = (bary[hit][..., None] * corners).sum(1).numpy()
    assert np.abs(rebuilt - centre[hit.numpy()]).max() < 1e-5


def test_dilation_fills_the_border_from_neighbours():
    image = torch.zeros(5, 5, 3)
    filled = torch.zeros(5, 5, dtype=torch.bool)
    image[2, 2] = torch.tensor([0.2, 0.4, 0.6])
    filled[2, 2] = True
    grown = dilate_texture(image, filled, iterations=1)
    assert torch.allclose(grown[1:4, 1:4], torch.tensor([0.2, 0.4, 0.6]).expand(3, 3, 3))
    assert float(grown[0].abs().sum()) == 0.0  # only one ring per iteration


def test_baked_texture_shows_the_field_colour(analytic_model, tmp_path):
    model = analytic_model(sigmoid_ball((0.05, 0.0, -0.05), 0.5, 100.0), box=0.7)
    mesh = export_mesh(model, tmp_path / "ball.obj", threshold=50.0, resolution=40, texture_size=256, **FAST)
    assert mesh.metadata["texture_coverage"] > 0.3
    for name in ("ball.obj", "ball.mtl", "ball.png"):
        assert (tmp_path / name).is_file(), name
    loaded = trimesh.load(tmp_path / "ball.obj", force="mesh", process=False)
    assert loaded.visual.kind == "texture"
    image = np.asarray(loaded.visual.material.image.convert("RGB"), dtype=np.float64) / 255.0
    # Look up each face's centroid through its UVs (nearest texel) and compare with the field's colour there.
    uv = np.asarray(loaded.visual.uv)[loaded.faces].mean(1)
    rows = np.clip(((1.0 - uv[:, 1]) * image.shape[0]).astype(int), 0, image.shape[0] - 1)
    cols = np.clip((uv[:, 0] * image.shape[1]).astype(int), 0, image.shape[1] - 1)
    centroids = np.asarray(loaded.vertices)[loaded.faces].mean(1)
    expected = position_color(torch.from_numpy(centroids).float()).numpy()
    error = np.abs(image[rows, cols] - expected)
    assert error.mean() < 0.01 and np.percentile(error, 99) < 0.05, (error.mean(), np.percentile(error, 99))


def test_glb_carries_the_texture(analytic_model, tmp_path):
    model = analytic_model(sigmoid_ball((0.0, 0.0, 0.0), 0.5, 100.0), box=0.7)
    export_mesh(model, tmp_path / "ball.glb", threshold=50.0, resolution=24, texture_size=64, **FAST)
    loaded = trimesh.load(tmp_path / "ball.glb", force="mesh")
    assert loaded.visual.kind == "texture"
    assert np.asarray(loaded.visual.material.baseColorTexture).shape[:2] == (64, 64)


@pytest.mark.requires_cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.skipif(nvdiffrast_torch() is None, reason="nvdiffrast is not installed")
def test_nvdiffrast_rasteriser_matches_torch():
    uvs, faces = random_triangles(40, seed=1)
    uvs, faces = uvs.cuda(), faces.cuda()
    ref_face, ref_bary = rasterize_uv_torch(uvs, faces, 128)
    face, bary = rasterize_uv_nvdiffrast(uvs, faces, 128)
    # Texel centres exactly on an edge may go either way; everything else must agree.
    agree = (face >= 0) == (ref_face >= 0)
    assert agree.float().mean() > 0.99
    both = (face >= 0) & (ref_face >= 0)
    corners = uvs[faces[face[both]]]
    ref_corners = uvs[faces[ref_face[both]]]
    rebuilt = (bary[both][..., None] * corners).sum(1)
    ref_rebuilt = (ref_bary[both][..., None] * ref_corners).sum(1)
    assert torch.allclose(rebuilt, ref_rebuilt, atol=1e-4)


@pytest.mark.requires_cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.skipif(nvdiffrast_torch() is None, reason="nvdiffrast is not installed")
def test_gpu_bake_matches_cpu_bake(analytic_model):
    model = analytic_model(sigmoid_ball((0.0, 0.0, 0.0), 0.5, 100.0), box=0.7)
    cpu = extract_mesh(model, threshold=50.0, resolution=32, texture_size=128, texture_backend="torch", **FAST)
    gpu = extract_mesh(
        model.cuda(), threshold=50.0, resolution=32, texture_size=128, texture_backend="nvdiffrast", **FAST
    )
    a = np.asarray(cpu.visual.material.image, dtype=np.float64)
    b = np.asarray(gpu.visual.material.image, dtype=np.float64)
    assert np.abs(a - b).mean() < 2.0  # in 0..255 levels
