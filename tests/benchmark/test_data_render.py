"""``relight3d data render``: 2 bundled meshes x 2 maps x 2 rotations x 4 views at 32 px (the issue's size), its
layout, G-buffers against closed forms, the maps' rotations, resuming after a kill, user meshes and bad input.

The Blender parts are skipped without a Python with bpy (see test_bench_generate.py); the plan and the procedural
meshes are tested without it.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from relight3d.cli import main
from relight3d.data.images import read_rgba
from relight3d.data.relight_pairs import RelightPairs, read_manifest
from relight3d.lighting import read_envmap, rotate_envmap_about_up
from relight3d_bench import meshes
from relight3d_bench.cycles_scene import camera_angle_x
from relight3d_bench.dataset_config import DatasetRenderConfig, make_plan, parse_envmap
from relight3d_bench.procedural import PROCEDURAL
from relight3d_bench.runner import BpyNotFoundError, find_bpy_python

ARGS = ["--objects", "sphere", "torus-knot", "--envmaps", "courtyard", "sunrise:0.5", "--rotations", "2",
        "--views", "4", "--resolution", "32", "--spp", "4"]  # fmt: skip


@pytest.fixture(scope="module")
def bpy_python() -> str:
    try:
        return find_bpy_python()
    except BpyNotFoundError as err:
        pytest.skip(f"no Python with bpy: {err}")


@pytest.fixture(scope="module")
def dataset(bpy_python: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "set"
    assert main(["data", "render", "--output", str(out), *ARGS, "--workers", "2"]) == 0
    return out


# ---------------------------------------------------------------------------------- no Blender needed


@pytest.mark.parametrize("name", sorted(PROCEDURAL))
def test_procedural_meshes_are_closed_and_outward(name: str) -> None:
    verts, tris = PROCEDURAL[name]()
    edges = np.sort(np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert set(counts) == {2}  # closed two-manifold
    a, b, c = verts[tris[:, 0]], verts[tris[:, 1]], verts[tris[:, 2]]
    volume = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0
    assert volume > 0  # counter-clockwise seen from outside
    if name == "sphere":
        assert volume == pytest.approx(4.0 * math.pi / 3.0, rel=0.01)
    if name == "torus":
        assert volume == pytest.approx(2.0 * math.pi**2 * 1.0 * 0.4**2, rel=0.02)


def test_plan_is_fixed_by_the_seed() -> None:
    config = DatasetRenderConfig(objects=("sphere", "torus"), envmaps=("courtyard", "night"), rotations=3)
    widths = {"courtyard": 1024, "night": 512}
    first, again = make_plan(config, widths, None), make_plan(config, widths, None)
    assert first == again
    other = make_plan(DatasetRenderConfig(**{**config.to_dict(), "objects": ("sphere", "torus"),
                                            "envmaps": ("courtyard", "night"), "seed": 1}), widths, None)  # fmt: skip
    assert other["objects"][0]["material"] != first["objects"][0]["material"]
    for light in first["lights"]:
        for rotations in light["rotations"]:
            assert rotations[0] == {"shift": 0, "degrees": 0.0} and len(rotations) == 3
            for r in rotations:
                assert 0 <= r["shift"] < light["width"]
                assert r["degrees"] == pytest.approx(360.0 * r["shift"] / light["width"])
    assert parse_envmap("sunrise:0.5") == ("sunrise", 0.5)
    assert parse_envmap("courtyard") == ("courtyard", 0.7)  # the benchmark's strength for this map


# ---------------------------------------------------------------------------------- Blender


def test_layout_and_manifest(dataset: Path) -> None:
    records = read_manifest(dataset)
    assert len(records) == 2 * 2 * 2 * 4
    assert {p.name for p in dataset.iterdir()} >= {"manifest.jsonl", "metadata.jsonl", "meta.json", "images",
                                                   "gbuffers", "gbuffer_frames", "envmaps"}  # fmt: skip
    meta = json.loads((dataset / "meta.json").read_text())
    assert meta["complete"] and meta["samples"] == 32
    lines = [json.loads(x) for x in (dataset / "metadata.jsonl").read_text().splitlines()]
    assert len(lines) == 32 and all((dataset / x["file_name"]).is_file() for x in lines)
    pairs = RelightPairs(dataset)
    for i in (0, 31):
        sample = pairs[i]
        assert sample.image.shape == (32, 32, 3) and sample.frame.normals.shape == (32, 32, 3)
    # the same view under every light shares its G-buffers: 2 objects x 4 views
    assert len({(r["gbuffers"], r["frame"]) for r in records}) == 8


def test_maps_are_the_rotated_maps_blender_rendered(dataset: Path) -> None:
    meta = json.loads((dataset / "meta.json").read_text())
    plan = meta["plan"]
    for light in plan["lights"]:
        base = read_envmap(dataset / light["file"])
        assert base.shape[1] == light["width"]
        for rotation in light["rotations"][1]:
            turned = rotate_envmap_about_up(base, math.radians(rotation["degrees"]))
            assert torch.equal(turned, torch.roll(base, -rotation["shift"], dims=1))  # whole columns: exact
    # the stored map is the source map times the strength
    assert plan["lights"][1]["strength"] == 0.5


def test_rotations_change_the_light_not_the_object(dataset: Path) -> None:
    a = read_rgba(dataset / "images/sphere/courtyard_r0_v000.png")[0]
    b = read_rgba(dataset / "images/sphere/courtyard_r1_v000.png")[0]
    mask = np.load(dataset / "gbuffers/sphere/v000.npz")["mask"][..., 0]
    for image in (a, b):  # same object, same coverage (up to 4 spp noise at the edges)
        assert np.abs(image[..., 3] - mask).mean() < 0.03
    assert np.abs(a[..., :3] - b[..., :3])[a[..., 3] > 0.5].mean() > 0.01


def test_sphere_gbuffers_match_the_closed_form(dataset: Path) -> None:
    from relight3d_bench.render_dataset import pixel_rays

    plan = json.loads((dataset / "meta.json").read_text())["plan"]
    material = plan["objects"][0]["material"]
    for view in range(4):
        data = np.load(dataset / f"gbuffers/sphere/v{view:03d}.npz")
        c2w = data["camera_to_world"].astype(np.float64)
        origin, dirs = pixel_rays(c2w, 32, camera_angle_x(), 1)
        d = dirs[:, :, 0]
        b = d @ origin
        disc = b * b - (origin @ origin - 0.9**2)
        hit = disc > 0
        t = -b - np.sqrt(np.maximum(disc, 0.0))
        full = data["mask"][..., 0] == 1.0
        assert full.sum() > 100 and np.all(hit[full])
        # coverage agrees with the ray-sphere test and with Cycles' alpha (up to the edge pixels)
        assert np.abs(data["mask"][..., 0] - hit).mean() < 0.03
        alpha = read_rgba(dataset / f"images/sphere/courtyard_r0_v{view:03d}.png")[0][..., 3]
        assert np.abs(alpha - data["mask"][..., 0]).mean() < 0.03
        # depth along the ray and outward normals of the tessellated sphere (radius 0.9)
        assert np.abs(t - data["depth"][..., 0])[full].max() < 0.05
        points = origin + d * t[..., None]
        cosine = (data["normals"] * points / 0.9).sum(-1)[full]
        assert cosine.min() > math.cos(math.radians(5.0))
        assert np.allclose(data["roughness"][full], material["roughness"], atol=1e-6)
        assert np.allclose(data["metallic"][full], material["metallic"], atol=1e-6)
        lo = np.minimum(material["albedo_a"], material["albedo_b"]) - 1e-4
        hi = np.maximum(material["albedo_a"], material["albedo_b"]) + 1e-4
        assert np.all((data["base_color"][full] >= lo) & (data["base_color"][full] <= hi))


def test_kill_then_resume_completes_without_rerendering(bpy_python: str, tmp_path: Path) -> None:
    out = tmp_path / "set"
    args = ["data", "render", "--output", str(out), "--objects", "sphere", "--envmaps", "courtyard",
            "--rotations", "2", "--views", "6", "--resolution", "32", "--spp", "4"]  # fmt: skip
    code = "import sys; from relight3d.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, *args], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "images").rglob("*.png"))) < 3:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}
    assert 3 <= len(done) < 12 and not (out / "manifest.jsonl").exists()
    assert json.loads((out / "meta.json").read_text())["complete"] is False
    assert main(args) == 0
    assert len(read_manifest(out)) == 12
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # finished images were not rendered again
    assert not list(out.rglob(".*.tmp*"))


def test_user_mesh_keeps_its_vertex_colours(bpy_python: str, tmp_path: Path) -> None:
    verts, tris = PROCEDURAL["sphere"]()
    colour = np.array([0.2, 0.5, 0.05])  # linear; written as 8-bit sRGB by write_ply
    mesh = tmp_path / "my ball.ply"
    meshes.write_ply(mesh, verts, tris, np.tile(colour, (len(verts), 1)))
    out = tmp_path / "set"
    assert main(["data", "render", "--output", str(out), "--objects", str(mesh), "--envmaps", "night",
                 "--views", "1", "--rotations", "1", "--resolution", "24", "--spp", "2"]) == 0  # fmt: skip
    data = np.load(out / "gbuffers/my_ball/v000.npz")
    full = data["mask"][..., 0] == 1.0
    expected = meshes.linear_to_srgb(colour)
    srgb = np.round(expected * 255) / 255
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    assert np.allclose(data["base_color"][full], linear, atol=2e-3)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--objects", "armadillo"], "neither a bundled object"),
        (["--objects", "missing.ply"], "mesh file not found"),
        (["--envmaps", "courtyard:-1"], "strength must be > 0"),
        (["--envmaps", "nowhere.exr"], "environment map not found"),
        (["--metallic-probability", "2"], "must be in [0, 1]"),
    ],
)
def test_bad_options_are_one_line(extra: list, message: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "render", "--output", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_other_settings_or_foreign_folder_refused(dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    args = ["data", "render", "--output", str(dataset), *ARGS]
    assert main([*args[:-2], "--spp", "5"]) == 2
    assert "other settings" in capsys.readouterr().err
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["data", "render", "--output", str(foreign), *ARGS]) == 2
    assert "holds no relight3d dataset" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_renders_are_lit_by_the_rotated_map_of_the_manifest(dataset: Path) -> None:
    """Blender's light agrees with the manifest's map. Over the sphere's 4 views, its shading (image over albedo) is
    compared with the diffuse irradiance (order-2 SH) of the map turned by every angle in 2-degree steps; the best
    angle of a turned render minus that of the unturned one is the manifest's turn (the difference cancels what the
    SH model misses, such as specular). The other direction of turning would give minus the turn."""
    from relight3d.lighting.encodings import srgb_to_linear
    from relight3d.lighting.spherical_harmonics import project_sh, sh_irradiance

    pairs = RelightPairs(dataset)
    records = [json.loads(line) for line in (dataset / "manifest.jsonl").read_text().splitlines()]
    groups = {}
    for i, r in enumerate(records):
        if r["object"] == "sphere":
            groups.setdefault((dataset / r["envmap"], r["rotation"]), []).append(i)
    assert len(groups) == 4 and all(len(v) == 4 for v in groups.values())

    def best_angle(envmap: Path, indices: list) -> float:
        shading, normals = [], []
        for i in indices:
            sample = pairs[i]
            full = sample.frame.mask[..., 0] == 1.0
            shading.append((srgb_to_linear(sample.image) / sample.frame.base_color.clamp_min(1e-3)).mean(-1)[full])
            normals.append(sample.frame.normals[full])
        shade, normal = torch.cat(shading), torch.cat(normals)
        base = read_envmap(envmap)  # averaged down to 64 x 128 texels (turning commutes with averaging columns)
        base = torch.nn.functional.adaptive_avg_pool2d(base.permute(2, 0, 1), (64, 128)).permute(1, 2, 0)
        scores = {}
        for angle in range(0, 360, 2):
            irradiance = sh_irradiance(project_sh(rotate_envmap_about_up(base, math.radians(angle))), normal).mean(-1)
            scores[angle] = float(torch.corrcoef(torch.stack([shade, irradiance]))[0, 1])
        assert max(scores.values()) > 0.5
        return max(scores, key=scores.get)

    for envmap in {key[0] for key in groups}:
        turn = records[groups[(envmap, 1)][0]]["envmap_rotation_deg"]
        found = best_angle(envmap, groups[(envmap, 1)]) - best_angle(envmap, groups[(envmap, 0)])
        assert abs((found - turn + 180.0) % 360.0 - 180.0) <= 6.0, (envmap.name, turn, found)
