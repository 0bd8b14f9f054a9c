"""Benchmark definitions, camera maths, mesh reading, the noise metric and the CLI without bpy (no rendering)."""

from __future__ import annotations

import json
import math
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from relight3d.benchmark import LIGHTS, OBJECTS, BenchmarkConfig, select
from relight3d.benchmark import cycles_scene as cs
from relight3d.benchmark.config import CGAL_DATA_TARBALL
from relight3d.benchmark.runner import BPY_PYTHON_ENV, BpyNotFoundError, find_bpy_python
from relight3d.cli import main as relight3d_main


def test_benchmark_has_six_objects_four_lights_and_no_bunny() -> None:
    assert len(OBJECTS) == 6 and len(LIGHTS) == 4
    assert len({o.name for o in OBJECTS}) == 6 and len({light.name for light in LIGHTS}) == 4
    for obj in OBJECTS:
        assert "bunny" not in obj.mesh.lower() and "bunny" not in obj.name
        assert max(obj.albedo_a + obj.albedo_b) <= 0.7  # keeps the 8-bit PNGs from clipping under the lights
    assert BenchmarkConfig().n_train == 100 and BenchmarkConfig().n_test == 20


@pytest.mark.skipif(not Path(CGAL_DATA_TARBALL).is_file(), reason="libcgal-demo's data tarball is not installed")
def test_benchmark_meshes_exist_in_the_cgal_tarball() -> None:
    with tarfile.open(CGAL_DATA_TARBALL, "r:*") as tar:
        names = set(tar.getnames())
    for obj in OBJECTS:
        tarball, member = obj.mesh.split("::")
        assert tarball == CGAL_DATA_TARBALL and member in names


def test_config_round_trips_through_json() -> None:
    config = select(BenchmarkConfig(resolution=64, n_train=7), ("camel", "bear"), 2)
    assert [o.name for o in config.objects] == ["camel", "bear"] and len(config.lights) == 2
    restored = BenchmarkConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    with pytest.raises(KeyError, match="bunny"):
        select(config, ("bunny",))


def test_look_at_points_the_camera_at_the_origin() -> None:
    positions = cs.sample_camera_positions(50, radius=2.8, seed=3, min_elevation_deg=-10.0)
    assert np.allclose(np.linalg.norm(positions, axis=1), 2.8)
    assert positions[:, 2].min() >= 2.8 * math.sin(math.radians(-10.0)) - 1e-9
    for position in positions:
        c2w = cs.look_at(position)
        rotation = c2w[:3, :3]
        assert np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-12) and np.isclose(np.linalg.det(rotation), 1.0)
        forward = -rotation[:, 2]  # Blender/OpenGL cameras look down -Z
        assert np.allclose(forward, -position / np.linalg.norm(position))
        assert rotation[2, 0] == pytest.approx(0.0, abs=1e-12)  # no roll: the image x axis stays horizontal
        rt = cs.world_to_camera_rt(c2w)  # the origin sits on the optical axis at the camera's distance
        assert np.allclose(rt @ np.array([0.0, 0.0, 0.0, 1.0]), [0.0, 0.0, -2.8])


def test_load_off_triangulates_polygons(tmp_path: Path) -> None:
    off = tmp_path / "quad.off"
    off.write_text(
        "OFF\n# a unit square and a triangle\n5 2 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n0 0 1\n4 0 1 2 3\n3 0 1 4\n"
    )
    verts, tris = cs.load_off(str(off))
    assert verts.shape == (5, 3) and tris.tolist() == [[0, 1, 2], [0, 2, 3], [0, 1, 4]]
    coff = tmp_path / "coloured.off"
    coff.write_text("COFF\n3 1 0\n0 0 0 255 0 0 255\n1 0 0 0 255 0 255\n0 1 0 0 0 255 255\n3 0 1 2\n")
    verts, tris = cs.load_off(str(coff))
    assert np.allclose(verts, [[0, 0, 0], [1, 0, 0], [0, 1, 0]]) and tris.tolist() == [[0, 1, 2]]
    up = cs.y_up_to_z_up(np.array([[0.0, 1.0, 0.0]]))
    assert np.allclose(up, [[0.0, 0.0, 1.0]])
    normalised = cs.normalize_to_sphere(np.array([[2.0, 0, 0], [4.0, 0, 0], [3.0, 1.0, 0]]), 0.9)
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
    assert summary["in_mask_psnr_mean"] == pytest.approx(expected_in_mask, abs=1e-9)
    assert summary["in_mask_psnr_pooled"] == pytest.approx(expected_in_mask, abs=1e-9)
    assert summary["full_psnr_mean"] == pytest.approx(expected_full, abs=1e-9)


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
    assert "unknown benchmark object(s) ['teapot']" in capsys.readouterr().err
