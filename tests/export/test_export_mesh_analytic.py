"""Mesh export on fields with closed-form surfaces: geometry, threshold, cleanup, colours, formats and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh
from conftest import position_color, sigmoid_ball

from relight3d.errors import DataError
from relight3d.export.camera_paths import ViewSettings, orbit_path
from relight3d.export.mesh import MeshExportConfig, export_mesh, extract_mesh
from relight3d.export.mesh_surface import GridSpec, marching_cubes_in_slabs, sample_density_grid
from relight3d.export.mesh_threshold import NoSurfaceError, silhouettes_from_views, surface_density_threshold

FAST = dict(progress=False, auto_threshold_rays=512, auto_threshold_samples=256)


def ellipsoid_density(center, radii, peak=50.0):
    c, r = torch.tensor(center), torch.tensor(radii)

    def density(p):
        # Above half the peak inside, below outside; a gentle ramp that trilinear interpolation follows closely.
        level = 1.0 - ((p - c) / r).pow(2).sum(-1)
        return peak * torch.sigmoid(level * 4.0)

    return density


def test_iso_surface_lies_on_an_offset_ellipsoid(analytic_model):
    """Axes, offsets and slab seams: every vertex satisfies the ellipsoid equation within a fraction of a cell."""
    center, radii = (0.2, -0.1, 0.15), (0.6, 0.4, 0.3)
    model = analytic_model(ellipsoid_density(center, radii), box=0.85)
    mesh = extract_mesh(model, threshold=25.0, resolution=64, slab_depth=7, vertex_colors=False, **FAST)
    cell = mesh.metadata["relight3d"]["grid_step"]
    v = np.asarray(mesh.vertices)
    # The half-peak iso-level of the density is the ellipsoid |(p - c) / r| = 1. Distance to it, to first order:
    scaled = np.linalg.norm((v - np.array(center)) / np.array(radii), axis=1)
    gradient = np.linalg.norm((v - np.array(center)) / np.array(radii) ** 2, axis=1) / scaled
    distance = np.abs(scaled - 1.0) / gradient
    assert distance.max() < 0.1 * cell, (distance.max(), cell)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.volume > 0  # outward normals
    expected_volume = 4.0 / 3.0 * np.pi * np.prod(radii)
    assert abs(mesh.volume - expected_volume) / expected_volume < 0.02


def test_slab_seams_merge_exactly(analytic_model):
    """Thin slabs give the same mesh as one slab: seam vertices coincide and merge, no cracks."""
    model = analytic_model(ellipsoid_density((0.05, 0.0, -0.07), (0.5, 0.45, 0.4)))
    one = extract_mesh(model, threshold=25.0, resolution=48, slab_depth=1000, vertex_colors=False, **FAST)
    thin = extract_mesh(model, threshold=25.0, resolution=48, slab_depth=3, vertex_colors=False, **FAST)
    assert len(one.faces) == len(thin.faces) and len(one.vertices) == len(thin.vertices)
    assert thin.is_watertight
    assert np.allclose(np.sort(np.asarray(one.vertices), axis=0), np.sort(np.asarray(thin.vertices), axis=0))


def test_auto_threshold_puts_the_surface_where_rendering_does(analytic_model):
    """For this ball, rays along a radius reach 50 % opacity exactly at radius 0.5 (see ``sigmoid_ball``). Oblique
    rays pass more density before reaching the same depth, so they reach 50 % a little earlier: the automatic surface
    lies just outside 0.5, within the density ramp (about 1 / sharpness wide)."""
    sharpness = 200.0
    model = analytic_model(sigmoid_ball((0.1, -0.05, 0.0), 0.5, sharpness), box=0.7)
    mesh = extract_mesh(model, resolution=64, vertex_colors=False, **FAST)
    radius = np.linalg.norm(np.asarray(mesh.vertices) - np.array([0.1, -0.05, 0.0]), axis=1)
    assert 0.5 <= radius.mean() <= 0.5 + 1.5 / sharpness, radius.mean()
    assert radius.std() < 0.002
    info = mesh.metadata["relight3d"]
    # A bare model has no training masks: 'auto' falls back to the opacity rule.
    assert info["threshold_mode"] == "opacity" and 0.1 * sharpness < info["threshold"] < 0.5 * sharpness


def test_masks_threshold_matches_the_silhouettes(analytic_model):
    """A soft field, like a briefly trained one: its density ramp is wide around the true surface (radius 0.5).
    Rays from outside collect 50 % opacity deep in the ramp, so the opacity rule puts the surface inside; the 'masks'
    rule picks the level whose silhouettes match the true masks, i.e. radius 0.5."""
    model = analytic_model(sigmoid_ball((0.0, 0.0, 0.0), 0.45, 30.0), box=0.8)
    cams = orbit_path(8, ViewSettings(radius=3.0, elevation=25.0, vertical_fov=30.0, width=48, height=48))
    alphas = []
    for i in range(len(cams)):
        rays = cams[i : i + 1].generate_rays(camera_indices=0, keep_shape=True)
        # Distance from the sphere's centre (the origin) to each pixel's ray.
        miss = torch.linalg.cross(rays.origins, rays.directions).norm(dim=-1)
        alphas.append((miss < 0.5).float())
    silhouettes = silhouettes_from_views(cams, torch.stack(alphas), rays_per_view=1024)
    exporter = MeshExportConfig(threshold="masks", resolution=64, vertex_colors=False, **FAST).setup()
    mesh = exporter.extract(model, silhouettes=silhouettes)
    info = mesh.metadata["relight3d"]
    assert info["threshold_mode"] == "masks" and info["mask_iou"] > 0.97
    radius = np.linalg.norm(np.asarray(mesh.vertices), axis=1)
    assert abs(radius.mean() - 0.5) < 0.006, radius.mean()
    expected_level = 30.0 * torch.sigmoid(torch.tensor(-0.05 * 30.0)).item()  # the density at radius 0.5
    assert abs(info["threshold"] - expected_level) / expected_level < 0.15
    opacity = extract_mesh(model, threshold="opacity", resolution=64, vertex_colors=False, **FAST)
    assert np.linalg.norm(np.asarray(opacity.vertices), axis=1).mean() < 0.5 - 0.02  # the other rule is off here
    with pytest.raises(ValueError, match="needs training views with alpha masks"):
        extract_mesh(model, threshold="masks", resolution=32, **FAST)


def test_closed_surface_even_where_the_density_reaches_the_grid_edge(analytic_model):
    """A density that is high up to the edge of the sampled grid (here: everywhere) still gives a closed mesh, because
    the outermost grid layer is treated as empty; the surface then lies between the last two layers."""
    model = analytic_model(lambda p: torch.full_like(p[:, 0], 10.0), box=0.5)
    mesh = extract_mesh(model, threshold=5.0, resolution=32, vertex_colors=False, **FAST)
    assert mesh.is_watertight and mesh.volume > 0
    step = mesh.metadata["relight3d"]["grid_step"]
    assert np.allclose(-mesh.bounds[0], mesh.bounds[1], atol=1e-6)
    assert 0.5 < mesh.bounds[1].min() and mesh.bounds[1].max() < 0.5 + 4 * step


def test_largest_components_are_kept_and_normals_point_out(analytic_model):
    big, small, tiny = (
        sigmoid_ball((-0.4, 0, 0), 0.35, 200.0),
        sigmoid_ball((0.5, 0, 0), 0.2, 200.0),
        sigmoid_ball((0.5, 0.6, 0.6), 0.06, 200.0),
    )
    model = analytic_model(lambda p: big(p) + small(p) + tiny(p))
    cfg = MeshExportConfig(threshold=100.0, resolution=64, vertex_colors=False, **FAST)
    only_largest = extract_mesh(model, cfg)
    assert only_largest.metadata["relight3d"]["components_found"] == 3
    assert len(only_largest.split(only_watertight=False)) == 1
    assert np.linalg.norm(only_largest.centroid - np.array([-0.4, 0, 0])) < 0.02
    two = extract_mesh(model, cfg, keep_components=2)
    every = extract_mesh(model, cfg, keep_components=0)
    dropped = extract_mesh(model, cfg, keep_components=0, min_component_fraction=0.05)
    assert [len(m.split(only_watertight=False)) for m in (two, every, dropped)] == [2, 3, 2]
    for part in every.split(only_watertight=False):
        assert part.is_winding_consistent and part.volume > 0  # each body oriented outwards


def test_decimation_reaches_the_target_and_keeps_the_shape(analytic_model):
    model = analytic_model(sigmoid_ball((0, 0, 0), 0.5, 100.0), box=0.7)
    cfg = MeshExportConfig(threshold=50.0, resolution=48, vertex_colors=False, **FAST)  # iso-surface: radius 0.5
    full = extract_mesh(model, cfg)
    small = extract_mesh(model, cfg, target_faces=1000)
    assert len(full.faces) > 5000
    assert 800 <= len(small.faces) <= 1000
    error = np.abs(np.linalg.norm(small.vertices, axis=1) - 0.5)
    assert error.mean() < 0.003 and error.max() < 0.015, (error.mean(), error.max())
    assert small.is_winding_consistent and small.volume > 0


def test_vertex_colors_come_from_the_field(analytic_model):
    model = analytic_model(sigmoid_ball((0, 0.1, 0), 0.45))
    mesh = extract_mesh(model, resolution=64, **FAST)
    colors = mesh.visual.vertex_colors[:, :3].astype(np.float64) / 255.0
    expected = position_color(torch.from_numpy(np.asarray(mesh.vertices)).float()).numpy()
    assert np.abs(colors - expected).mean() < 0.01
    assert np.abs(colors - expected).max() < 0.04


def test_no_surface_is_an_error_with_the_density_range(analytic_model, tmp_path):
    model = analytic_model(sigmoid_ball((0, 0, 0), 0.4, 100.0))
    out = tmp_path / "mesh.ply"
    with pytest.raises(NoSurfaceError) as err:
        export_mesh(model, out, threshold=150.0, resolution=32, **FAST)
    message = str(err.value)
    assert "no surface at density threshold 150" in message and "from 0" in message and " to 100" in message
    assert "\n" not in message
    assert not out.exists()  # no empty file
    with pytest.raises(NoSurfaceError, match="reach 50% opacity"):
        extract_mesh(analytic_model(lambda p: torch.zeros_like(p[:, 0])), resolution=32, **FAST)


@pytest.mark.parametrize("suffix", [".ply", ".obj", ".glb"])
def test_formats_round_trip_with_colors(analytic_model, tmp_path, suffix):
    model = analytic_model(sigmoid_ball((0, 0, 0), 0.5, 200.0))
    mesh = export_mesh(model, tmp_path / f"ball{suffix}", threshold=100.0, resolution=32, **FAST)
    loaded = trimesh.load(tmp_path / f"ball{suffix}", force="mesh", process=False)
    assert len(loaded.faces) == len(mesh.faces)
    assert np.allclose(np.asarray(loaded.bounds), mesh.bounds, atol=1e-4)
    original = mesh.visual.vertex_colors[:, :3].astype(float)
    assert loaded.visual.kind == "vertex"
    # Formats may reorder vertices: compare colours of the vertex nearest to each loaded vertex.
    nearest = mesh.kdtree.query(loaded.vertices)[1]
    assert np.abs(loaded.visual.vertex_colors[:, :3].astype(float) - original[nearest]).max() <= 1.0


@pytest.mark.parametrize(
    "name, problem",
    [("mesh.stl", "unknown mesh format ('.stl')"), ("mesh", "unknown mesh format (no extension)")],
)
def test_bad_output_paths(analytic_model, tmp_path, name, problem):
    model = analytic_model(sigmoid_ball((0, 0, 0), 0.5))
    with pytest.raises(DataError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        export_mesh(model, tmp_path / name, **FAST)
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with pytest.raises(DataError, match="cannot create the output folder"):
        export_mesh(model, blocker / "mesh.ply", **FAST)
    with pytest.raises(DataError, match="texture needs .obj or .glb"):
        export_mesh(model, tmp_path / "mesh.ply", texture_size=64, **FAST)


def test_threshold_of_a_known_field():
    """Along every ray through a ball of density 20 with a sharp edge, 50 % opacity is reached inside it: the
    threshold is a density between the outside (0) and the inside (20)."""
    box = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
    t = surface_density_threshold(sigmoid_ball((0, 0, 0), 0.5, 20.0), box, n_rays=256, n_samples=256)
    assert 0.0 < t < 20.0
    grid = GridSpec.around(box, 32, 1.0)
    volume = sample_density_grid(sigmoid_ball((0, 0, 0), 0.5, 20.0), grid)
    _, faces = marching_cubes_in_slabs(volume, grid, t)
    assert len(faces) > 0 and volume.min() < t < volume.max()


def test_enclosed_voids_and_cracked_shells_are_filled(analytic_model):
    """A hollow ball (a shell between radii 0.25 and 0.5) gives one outer surface; without filling, two. A thin crack
    through the shell still seals; a wide opening does not."""

    def shell(gap: float):
        def density(p):
            r = p.norm(dim=-1)
            solid = (r < 0.5) & (r > 0.25) & ~((p[:, 0].abs() < gap / 2) & (p[:, 1] > 0))  # a slot through the top
            return 100.0 * solid.float()

        return density

    cfg = MeshExportConfig(threshold=50.0, resolution=48, vertex_colors=False, keep_components=0, **FAST)
    sealed = extract_mesh(analytic_model(shell(0.0), box=0.7), cfg)
    hollow = extract_mesh(analytic_model(shell(0.0), box=0.7), cfg, fill_cavities=False)
    assert len(sealed.split(only_watertight=False)) == 1 and sealed.metadata["relight3d"]["cavity_samples_filled"] > 0
    assert len(hollow.split(only_watertight=False)) == 2
    assert sealed.volume == pytest.approx(4 / 3 * np.pi * 0.5**3, rel=0.05)
    # Outer shell outwards, inner wall inwards: the volume is the shell's.
    assert hollow.volume == pytest.approx(4 / 3 * np.pi * (0.5**3 - 0.25**3), rel=0.08)
    step = sealed.metadata["relight3d"]["grid_step"]
    cracked = extract_mesh(analytic_model(shell(2.0 * step), box=0.7), cfg)  # a crack two cells wide
    assert cracked.volume == pytest.approx(sealed.volume, rel=0.03)
    opened = extract_mesh(analytic_model(shell(12.0 * step), box=0.7), cfg)  # a wide slot: the inside is outside
    assert opened.volume < 0.8 * sealed.volume
