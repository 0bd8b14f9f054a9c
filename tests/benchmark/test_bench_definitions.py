"""Benchmark definitions, camera maths, mesh reading, the noise metric and the CLI without bpy (no rendering)."""

from __future__ import annotations

import json
import math
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from relight3d.cli import main as relight3d_main
from relight3d.errors import ConfigError, DataError
from relight3d_bench import cycles_scene as cs
from relight3d_bench import meshes
from relight3d_bench.cameras import camera_poses, sample_camera_positions, write_cameras
from relight3d_bench.config import (
    BPY_PYTHON_ENV,
    DEBIAN_MESHES_ARCHIVE,
    LIGHTS,
    OBJECTS,
    BenchmarkConfig,
    mesh_source,
    resolve_meshes_archive,
    select,
)
from relight3d_bench.runner import BpyNotFoundError, find_bpy_python


def test_benchmark_has_six_objects_four_lights_and_no_bunny() -> None:
    assert len(OBJECTS) == 6 and len(LIGHTS) == 4
    assert len({o.name for o in OBJECTS}) == 6 and len({light.name for light in LIGHTS}) == 4
    for obj in OBJECTS:
        assert "bunny" not in obj.mesh.lower() and "bunny" not in obj.name and obj.mesh.startswith("data/meshes/")
        assert max(obj.albedo_a + obj.albedo_b) <= 0.7  # keeps the 8-bit PNGs from clipping under the lights
    assert BenchmarkConfig().n_train == 100 and BenchmarkConfig().n_test == 20


@pytest.mark.skipif(not DEBIAN_MESHES_ARCHIVE.is_file(), reason="libcgal-demo's data tarball is not installed")
def test_benchmark_meshes_exist_in_the_cgal_tarball() -> None:
    with tarfile.open(DEBIAN_MESHES_ARCHIVE, "r:*") as tar:
        names = set(tar.getnames())
    assert all(obj.mesh in names for obj in OBJECTS)
    # With no archive named, Debian's is the fallback; the source is then the key older caches were written with.
    assert resolve_meshes_archive(None) == DEBIAN_MESHES_ARCHIVE
    source = mesh_source(OBJECTS[0].mesh, resolve_meshes_archive(None))
    assert source == "/usr/share/doc/libcgal-dev/data.tar.gz::data/meshes/armadillo.off"
    verts, tris = meshes.load_off(source)
    assert verts.shape[1] == 3 and tris.max() == len(verts) - 1


def test_meshes_archive_is_an_argument_with_a_clear_error(tmp_path: Path, monkeypatch, capsys) -> None:
    missing = tmp_path / "data.tar.gz"
    with pytest.raises(DataError, match="meshes archive not found"):
        resolve_meshes_archive(missing)
    monkeypatch.setattr("relight3d_bench.config.DEBIAN_MESHES_ARCHIVE", tmp_path / "not-installed.tar.gz")
    with pytest.raises(ConfigError, match="--meshes-archive: not given, and Debian's CGAL data archive"):
        resolve_meshes_archive(None)
    assert relight3d_main(["bench", "make", "--out", str(tmp_path / "bench")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("relight3d: error: --meshes-archive: not given") and "\n" not in err
    assert relight3d_main(["bench", "make", "--meshes-archive", str(missing)]) == 2
    assert f"{missing}: meshes archive not found" in capsys.readouterr().err
    # An archive given by path is read through it: the member is looked up inside.
    off = tmp_path / "data" / "meshes" / "tri.off"
    off.parent.mkdir(parents=True)
    off.write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n")
    with tarfile.open(missing, "w:gz") as tar:
        tar.add(off, arcname="data/meshes/tri.off")
    assert resolve_meshes_archive(missing) == missing.resolve()
    verts, tris = meshes.load_off(mesh_source("data/meshes/tri.off", missing))
    assert verts.tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0]] and tris.tolist() == [[0, 1, 2]]
    assert mesh_source(str(off), missing) == str(off)  # a file on disk is read as it is


def test_config_round_trips_through_json() -> None:
    config = select(BenchmarkConfig(resolution=64, n_train=7), ("camel", "bear"), 2)
    assert [o.name for o in config.objects] == ["camel", "bear"] and len(config.lights) == 2
    restored = BenchmarkConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    with pytest.raises(ConfigError, match="--objects: unknown benchmark object.*bunny"):
        select(config, ("bunny",))
    assert config.sampling(train=True) == (64, 0.01, 0) and config.sampling(train=False) == (512, 0.003, 1000)


def test_cameras_look_at_the_origin_from_the_sphere_cap(tmp_path: Path) -> None:
    positions = sample_camera_positions(50, radius=2.8, seed=3, min_elevation_deg=-10.0)
    assert np.allclose(np.linalg.norm(positions, axis=1), 2.8)
    assert positions[:, 2].min() >= 2.8 * math.sin(math.radians(-10.0)) - 1e-9
    poses = camera_poses(50, seed=3, distance=2.8, min_elevation_deg=-10.0)
    assert poses.dtype == np.float64 and np.array_equal(poses[:, :3, 3], positions)
    assert np.array_equal(poses[:, 3], np.tile([0.0, 0.0, 0.0, 1.0], (50, 1)))
    for position, c2w in zip(positions, poses):
        rotation = c2w[:3, :3]
        assert np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-12) and np.isclose(np.linalg.det(rotation), 1.0)
        forward = -rotation[:, 2]  # Blender/OpenGL cameras look down -Z
        assert np.allclose(forward, -position / np.linalg.norm(position))
        assert rotation[2, 0] == pytest.approx(0.0, abs=1e-12)  # no roll: the image x axis stays horizontal
        assert rotation[2, 1] > 0.0  # the image's up points up in the world
        rt = cs.world_to_camera_rt(c2w)  # the origin sits on the optical axis at the camera's distance
        assert np.allclose(rt @ np.array([0.0, 0.0, 0.0, 1.0]), [0.0, 0.0, -2.8])
    # The seeds fix the cameras; the Blender side reads back exactly what was computed.
    assert np.array_equal(poses, camera_poses(50, seed=3, distance=2.8, min_elevation_deg=-10.0))
    assert not np.allclose(poses, camera_poses(50, seed=4, distance=2.8, min_elevation_deg=-10.0))
    read = cs.read_cameras(write_cameras(tmp_path / "cameras.json", {"train": poses, "test": poses[:2]}))
    assert np.array_equal(np.stack(read["train"]), poses) and len(read["test"]) == 2


def test_load_off_triangulates_polygons(tmp_path: Path) -> None:
    off = tmp_path / "quad.off"
    off.write_text(
        "OFF\n# a unit square and a triangle\n5 2 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n0 0 1\n4 0 1 2 3\n3 0 1 4\n"
    )
    verts, tris = meshes.load_off(str(off))
    assert verts.shape == (5, 3) and tris.tolist() == [[0, 1, 2], [0, 2, 3], [0, 1, 4]]
    coff = tmp_path / "coloured.off"
    coff.write_text("COFF\n3 1 0\n0 0 0 255 0 0 255\n1 0 0 0 255 0 255\n0 1 0 0 0 255 255\n3 0 1 2\n")
    verts, tris = meshes.load_off(str(coff))
    assert np.allclose(verts, [[0, 0, 0], [1, 0, 0], [0, 1, 0]]) and tris.tolist() == [[0, 1, 2]]
    up = meshes.y_up_to_z_up(np.array([[0.0, 1.0, 0.0]]))
    assert np.allclose(up, [[0.0, 0.0, 1.0]])
    normalised = meshes.normalize_to_sphere(np.array([[2.0, 0, 0], [4.0, 0, 0], [3.0, 1.0, 0]]), 0.9)
    assert np.isclose(np.linalg.norm(normalised, axis=1).max(), 0.9)


def test_pair_psnr_matches_the_closed_form(tmp_path: Path) -> None:
    import imageio.v3 as iio

    a = np.zeros((16, 16, 4), np.uint8)
    a[4:12, 4:12] = (100, 150, 200, 255)  # 64 opaque pixels on a transparent background
    b = a.copy()
    b[4:12, 4:12, 0] += 10  # red differs by 10/255 inside the mask
    iio.imwrite(tmp_path / "a.png", a)
    iio.imwrite(tmp_path / "b.png", b)
    summary = cs.noise_summary([tmp_path / "a.png"], [tmp_path / "b.png"])
    expected_in_mask = -10 * math.log10((10 / 255) ** 2 / 3)  # one channel of three differs
    expected_full = -10 * math.log10((10 / 255) ** 2 / 3 * 64 / 256)
    # The images are read as float32 (relight3d.data.images.read_rgba), hence a few 1e-7 dB of rounding.
    assert summary["in_mask_psnr_mean"] == pytest.approx(expected_in_mask, abs=1e-5)
    assert summary["in_mask_psnr_pooled"] == pytest.approx(expected_in_mask, abs=1e-5)
    assert summary["full_psnr_mean"] == pytest.approx(expected_full, abs=1e-5)
    assert summary["per_view_in_mask_psnr"] == [round(expected_in_mask, 2)]


def test_bench_make_without_bpy_is_a_one_line_error(monkeypatch, capsys) -> None:
    import importlib.util

    if importlib.util.find_spec("bpy") is not None:
        pytest.skip("this Python has bpy")
    monkeypatch.delenv(BPY_PYTHON_ENV, raising=False)
    assert relight3d_main(["bench", "make", "--out", "unused"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "bpy" in err and "relight3d[bench]" in err and BPY_PYTHON_ENV in err
    # A named interpreter that lacks bpy is refused the same way, naming where it came from.
    assert relight3d_main(["bench", "make", "--blender-python", sys.executable]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--blender-python" in err and sys.executable in err
    monkeypatch.setenv(BPY_PYTHON_ENV, sys.executable)
    with pytest.raises(BpyNotFoundError, match=BPY_PYTHON_ENV):
        find_bpy_python()


def test_bench_make_rejects_an_unknown_noise_check_target(capsys) -> None:
    assert relight3d_main(["bench", "make", "--check-noise", "--noise-object", "bunny"]) == 2
    assert "'bunny' is not one of the objects" in capsys.readouterr().err
    assert relight3d_main(["bench", "make", "--lights", "2", "--check-noise", "--noise-light", "3"]) == 2
    assert "light 3 is not in 0..1" in capsys.readouterr().err
    assert relight3d_main(["bench", "make", "--objects", "camel", "teapot"]) == 2
    assert "--objects: unknown benchmark object(s) ['teapot']" in capsys.readouterr().err
