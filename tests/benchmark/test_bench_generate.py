"""A tiny generated benchmark (1 object x 2 lights, 32 px, few views, low spp). Skipped without a Python with bpy.

The renderer runs in the Python named by RELIGHT3D_BPY_PYTHON (e.g. a Python 3.11 venv with ``pip install bpy==5.0.1``),
else in this Python when it has bpy (the install's ``bench`` extra). The meshes come from Debian's libcgal-demo.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")  # read before OpenCV decodes its first EXR

from relight3d.data import benchmark_layout as layout
from relight3d.data.images import read_rgba
from relight3d_bench import cycles_scene as cs
from relight3d_bench import meshes
from relight3d_bench.cameras import camera_poses
from relight3d_bench.config import BenchmarkConfig, select
from relight3d_bench.runner import BpyNotFoundError, find_bpy_python, make_benchmark

N_TRAIN, N_TEST = 3, 2
CONFIG = select(
    BenchmarkConfig(resolution=32, n_train=N_TRAIN, n_test=N_TEST, spp_train=4, spp_test=16),
    objects=("homer",),
    n_lights=2,
)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        python = find_bpy_python()
    except BpyNotFoundError as err:
        pytest.skip(f"no Python with bpy: {err}")
    root = tmp_path_factory.mktemp("bench")
    return make_benchmark(CONFIG, out=root, check_noise=("homer", 1), python=python)


def read_exr(path: Path) -> np.ndarray:
    cv2 = pytest.importorskip("cv2")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        pytest.skip("this OpenCV cannot read EXR files")
    channels = [2, 1, 0, 3] if image.shape[-1] == 4 else [2, 1, 0]
    return image[..., channels].astype(np.float64)  # BGR(A) -> RGB(A)


def transforms(folder: Path, split: str) -> dict:
    return json.loads((folder / f"transforms_{split}.json").read_text())


def test_layout_and_transforms(bench: Path) -> None:
    folder = bench / "homer"
    assert {p.name for p in bench.iterdir()} == {"meta.json", "envmaps", "homer"}
    train = transforms(folder, "train")
    assert train["light_index"] == 0 and train["envmap"] == "envmaps/courtyard.exr"
    assert [f["file_path"] for f in train["frames"]] == [f"./train/r_{i:03d}" for i in range(N_TRAIN)]
    assert train["camera_angle_x"] == pytest.approx(2 * np.arctan(16 / 35))
    for k, name in enumerate(("courtyard", "sunrise")):
        split = layout.split_for_light(k)
        test = transforms(folder, split)
        assert test["light_index"] == k and test["light_name"] == name and (folder / test["envmap"]).is_file()
        assert [f["file_path"] for f in test["frames"]] == [f"./{split}/r_{i:03d}" for i in range(N_TEST)]
        for frame in test["frames"]:
            for ext in (".png", ".exr"):
                assert (folder / (frame["file_path"][2:] + ext)).is_file()
    # nerfstudio evaluates on "val": the test views under the training light; the cameras are shared by all lights.
    assert transforms(folder, "val") == transforms(folder, "test") == transforms(folder, "test_light0")
    assert [f["transform_matrix"] for f in transforms(folder, "test_light1")["frames"]] == [
        f["transform_matrix"] for f in transforms(folder, "test_light0")["frames"]
    ]
    # The cameras are the runner's (relight3d.geometry.look_at), written exactly as computed.
    expected = camera_poses(N_TRAIN, CONFIG.camera_seed_train, CONFIG.camera_distance, CONFIG.min_elevation_deg)
    assert np.array_equal([f["transform_matrix"] for f in train["frames"]], expected)
    for frame in train["frames"]:  # every camera looks at the origin from camera_distance
        c2w = np.array(frame["transform_matrix"])
        assert np.linalg.norm(c2w[:3, 3]) == pytest.approx(CONFIG.camera_distance)
        assert np.allclose(-c2w[:3, 2], -c2w[:3, 3] / CONFIG.camera_distance)


def test_objaverse_layout_matches_the_transforms(bench: Path) -> None:
    folder = bench / "homer"
    objaverse = folder / "objaverse"
    frames = transforms(folder, "train")["frames"] + transforms(folder, "test_light0")["frames"]
    assert len(list(objaverse.glob("*_RT.npy"))) == N_TRAIN + N_TEST
    for view, frame in enumerate(frames):
        rt = np.load(objaverse / f"{view:03d}_RT.npy")
        assert rt.shape == (3, 4)
        assert np.allclose(rt, np.linalg.inv(np.array(frame["transform_matrix"]))[:3], atol=1e-12)
    images = sorted(p.name for p in objaverse.glob("*.png"))
    expected = [f"{v:03d}_000_courtyard.png" for v in range(N_TRAIN + N_TEST)]
    expected += [f"{v:03d}_001_sunrise.png" for v in range(N_TRAIN, N_TRAIN + N_TEST)]
    assert images == sorted(expected)
    assert (objaverse / "004_001_sunrise.png").read_bytes() == (folder / "test_light1/r_001.png").read_bytes()
    assert (objaverse / "001_000_courtyard.png").read_bytes() == (folder / "train/r_001.png").read_bytes()


def test_masks_and_linear_exr_agree_with_png(bench: Path) -> None:
    folder = bench / "homer"
    masks = []
    for split in ("train", "test_light0", "test_light1"):
        for png in sorted((folder / split).glob("*.png")):
            rgba, has_alpha = read_rgba(png)
            assert has_alpha
            exr = read_exr(png.with_suffix(".exr"))
            alpha = rgba[..., 3]
            assert alpha.max() == 1.0 and alpha[0, 0] == 0.0 and alpha[-1, -1] == 0.0  # object inside, corners empty
            assert 0.03 < (alpha > 0.5).mean() < 0.6
            assert np.abs(exr[..., 3] - alpha).max() <= 1.5 / 255  # the same coverage (8-bit rounding)
            opaque = alpha == 1.0  # EXR colour is premultiplied linear; the PNG is straight-alpha sRGB
            srgb = meshes.linear_to_srgb(exr[..., :3] / np.maximum(exr[..., 3:], 1e-6))
            assert np.abs(srgb - rgba[..., :3])[opaque].max() <= 2.5 / 255
            assert exr[..., :3][opaque].max() < 4.0 and exr[..., :3][opaque].mean() > 0.01
            if split != "train":
                masks.append((split, png.name, alpha > 0.5, rgba))
    # Same view under two lights: the same silhouette but different shading.
    for name in ("r_000.png", "r_001.png"):
        (_, _, mask0, rgba0), (_, _, mask1, rgba1) = [m for m in masks if m[1] == name]
        assert (mask0 & mask1).sum() / (mask0 | mask1).sum() > 0.9
        both = mask0 & mask1
        assert np.abs(rgba0[..., :3] - rgba1[..., :3])[both].mean() > 0.03


def test_envmaps_are_the_bundled_maps_times_strength(bench: Path) -> None:
    meta = layout.read_meta(bench)
    for record, light in zip(meta["lights"], CONFIG.lights):
        assert record["name"] == light.name and record["strength"] == light.strength
        assert record["world_strength"] == 1.0 and record["world_rotation"] == np.eye(3).tolist()
        written = read_exr(bench / record["file"])
        source = read_exr(Path(record["source"]))
        assert written.shape == source.shape and written.shape[1] == 2 * written.shape[0]
        assert written.mean() / source.mean() == pytest.approx(light.strength, rel=1e-3)
        bright = source > 1e-2
        assert np.median(np.abs(written[bright] / source[bright] / light.strength - 1)) < 2e-3
        assert cs.sha256_file(bench / record["file"]) == record["file_sha256"]
        assert (bench / "homer" / record["file"]).read_bytes() == (bench / record["file"]).read_bytes()
        # relight3d.lighting reads the very radiance the renders were lit by (rows top to bottom, RGB order; it
        # clamps the small negatives that the source maps' lossy compression leaves).
        from relight3d.lighting import read_envmap

        radiance = read_envmap(bench / "homer" / record["file"]).numpy()
        assert np.allclose(radiance, np.clip(written, 0.0, None), rtol=1e-6, atol=0)


def test_meta_hashes_cover_every_file(bench: Path, tmp_path: Path) -> None:
    root_meta = layout.read_meta(bench)
    assert root_meta["complete"] and root_meta["blender_version"].startswith(("4.", "5."))
    assert BenchmarkConfig.from_dict(root_meta["config"]) == CONFIG
    folder = bench / "homer"
    (entry,) = root_meta["objects"]
    assert entry["meta_sha256"] == cs.sha256_file(folder / "meta.json")
    meta = layout.read_meta(folder)
    assert meta["samples"] == {"train": 4, "test": 16} and meta["blender_version"] == root_meta["blender_version"]
    on_disk = {
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and p.name != "meta.json" and not p.name.startswith("noise_check")
    }
    assert set(meta["sha256"]) == on_disk
    n_images = N_TRAIN + 2 * N_TEST  # per format; and once more as Objaverse links
    n_cameras, n_envmaps, n_transforms = N_TRAIN + N_TEST, 2, 5  # transforms: train, val, test, test_light{0,1}
    assert len(on_disk) == 3 * n_images + n_cameras + n_envmaps + n_transforms + 1  # + mesh.ply
    for rel, digest in meta["sha256"].items():
        assert cs.sha256_file(folder / rel) == digest
    # The cache check trusts an intact copy and rejects a modified file.
    copy = tmp_path / "homer"
    shutil.copytree(folder, copy)
    assert cs.cached_meta(copy, meta["settings"]) == meta
    assert cs.cached_meta(copy, {**meta["settings"], "resolution": 64}) is None
    with open(copy / "test_light1" / "r_000.png", "ab") as f:
        f.write(b"\0")
    assert cs.cached_meta(copy, meta["settings"]) is None
    assert cs.cached_meta(copy, meta["settings"], verify_hashes=False) == meta  # only presence is checked


def test_noise_check_and_dataparsers(bench: Path) -> None:
    from relight3d.data.blender import CheckedBlenderDataParserConfig
    from relight3d.data.objaverse import ObjaverseDataParserConfig

    folder = bench / "homer"
    noise = json.loads((folder / "noise_check_light1.json").read_text())
    assert noise["light_name"] == "sunrise" and noise["seeds"] == [1000, 5000]
    assert 10.0 < noise["in_mask_psnr_mean"] < 60.0 and len(noise["per_view_in_mask_psnr"]) == N_TEST
    # The check alone (relight3d bench check-noise) renders nothing else and leaves the benchmark as it was.
    before = {p: p.stat().st_mtime_ns for p in bench.rglob("*") if p.is_file()}
    make_benchmark(CONFIG, out=bench, check_noise=("homer", 0), python=find_bpy_python(), noise_only=True)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert json.loads((folder / "noise_check_light0.json").read_text())["light_name"] == "courtyard"

    blender = CheckedBlenderDataParserConfig(data=folder).setup()
    truth = blender.get_dataparser_outputs(layout.split_for_light(1))
    assert [p.name for p in truth.image_filenames] == ["r_000.png", "r_001.png"]
    assert truth.image_filenames[0].parent.name == "test_light1"
    objaverse = ObjaverseDataParserConfig(
        data=folder / "objaverse", light_index=1, train_views=(0, N_TRAIN), eval_views=(N_TRAIN, N_TRAIN + N_TEST)
    ).setup()
    relit = objaverse.get_dataparser_outputs("test")
    assert relit.metadata["envmap_paths"]["sunrise"].resolve() == (folder / "envmaps/sunrise.exr").resolve()
    assert np.allclose(relit.cameras.camera_to_worlds.numpy(), truth.cameras.camera_to_worlds.numpy(), atol=1e-6)
    assert np.allclose(relit.cameras.fx.numpy(), truth.cameras.fx.numpy())
