"""Dataparsers and the RGBA reader: cameras checked by projecting known points, pixels against the values written,
bad input gives one-line errors naming the file."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from relight3d.data.blender import CheckedBlenderDataParserConfig
from relight3d.data.datamanager import InMemoryDataManagerConfig
from relight3d.data.images import read_rgba
from relight3d.data.objaverse import ObjaverseDataParserConfig
from relight3d.data.single_image import SingleImageDataParserConfig
from relight3d.errors import ConfigError, DataError
from relight3d.geometry import look_at, orbit_positions

POINT = np.array([0.21, -0.13, 0.3])


def _ray_distance(cameras, index: int, uv, point) -> float:
    """Distance from ``point`` to the ray nerfstudio generates through continuous pixel coords ``uv``."""
    coords = torch.tensor([[uv[1], uv[0]]], dtype=torch.float32)
    ray = cameras.generate_rays(camera_indices=index, coords=coords)
    o, d = ray.origins.reshape(3).double(), ray.directions.reshape(3).double()
    v = torch.from_numpy(point) - o
    return float((v - (v @ d) * d).norm())


def _project_blender_convention(w2c: np.ndarray, fx: float, cx: float, cy: float, point: np.ndarray):
    """Pinhole projection written independently: Blender camera (x right, y up, looking down -z)."""
    x, y, z = w2c[:3, :3] @ point + w2c[:3, 3]
    return cx + fx * x / -z, cy - fx * y / -z


def _orbit_camera(radius: float, elevation: float, azimuth: float) -> np.ndarray:
    return look_at(orbit_positions(radius, elevation, azimuth).double()).numpy()


def _rgba(path: Path, size=(40, 40), mode="RGBA"):
    arr = np.zeros((size[1], size[0], len(mode)), dtype=np.uint8)
    arr[..., :3] = 128
    if mode == "RGBA":
        arr[size[1] // 4 : 3 * size[1] // 4, size[0] // 4 : 3 * size[0] // 4, 3] = 255
    Image.fromarray(arr, mode).save(path)


def make_objaverse(folder: Path, n_views: int = 4, size=(40, 40)) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    w2cs = []
    for v in range(n_views):
        c2w = np.eye(4)
        c2w[:3] = _orbit_camera(2.5, 10.0 + 5 * v, 40.0 * v)
        w2c = np.linalg.inv(c2w)
        np.save(folder / f"{v:03d}_RT.npy", w2c[:3])
        _rgba(folder / f"{v:03d}_000_studio.png", size)
        _rgba(folder / f"{v:03d}_001_sunset.png", size)
        w2cs.append(w2c)
    return w2cs


def make_blender(folder: Path, n: int = 3, size=(40, 30), angle=0.8) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train").mkdir(exist_ok=True)
    frames, c2ws = [], []
    for i in range(n):
        c2w = np.eye(4)
        c2w[:3] = _orbit_camera(3.0, 20.0, 100.0 * i)
        frames.append({"file_path": f"./train/r_{i}", "transform_matrix": c2w.tolist()})
        _rgba(folder / "train" / f"r_{i}.png", size)
        c2ws.append(c2w)
    (folder / "transforms_train.json").write_text(json.dumps({"camera_angle_x": angle, "frames": frames}))
    return c2ws


def test_objaverse_projection(tmp_path):
    w2cs = make_objaverse(tmp_path / "obj", n_views=4)
    cfg = ObjaverseDataParserConfig(data=tmp_path / "obj", train_views=(0, 3), eval_views=(3, 4))
    outputs = cfg.setup().get_dataparser_outputs("train")
    assert len(outputs.image_filenames) == 3
    assert all("_000_studio" in p.name for p in outputs.image_filenames)
    fx = 40 * 35.0 / 32.0
    assert torch.allclose(outputs.cameras.fx, torch.full_like(outputs.cameras.fx, fx))
    for v in range(3):
        uv = _project_blender_convention(w2cs[v], fx, 20.0, 20.0, POINT)
        assert 0 < uv[0] < 40 and 0 < uv[1] < 40
        assert _ray_distance(outputs.cameras, v, uv, POINT) < 1e-4
    # light index selects the other images
    cfg.light_index = 1
    other = cfg.setup().get_dataparser_outputs("train")
    assert all("_001_sunset" in p.name for p in other.image_filenames)
    assert cfg.setup().get_dataparser_outputs("val").cameras.shape[0] == 1


def test_blender_projection(tmp_path):
    c2ws = make_blender(tmp_path / "scene", size=(40, 30), angle=0.8)
    outputs = CheckedBlenderDataParserConfig(data=tmp_path / "scene").setup().get_dataparser_outputs("train")
    fx = 0.5 * 40 / math.tan(0.4)
    for i, c2w in enumerate(c2ws):
        uv = _project_blender_convention(np.linalg.inv(c2w), fx, 20.0, 15.0, POINT)
        assert _ray_distance(outputs.cameras, i, uv, POINT) < 1e-4


@pytest.mark.parametrize("azimuth", [0.0, 90.0, -135.0])
def test_single_image_camera(tmp_path, azimuth):
    _rgba(tmp_path / "obj.png", (32, 24))
    cfg = SingleImageDataParserConfig(data=tmp_path / "obj.png", elevation=30.0, azimuth=azimuth, radius=2.0, fov=40.0)
    outputs = cfg.setup().get_dataparser_outputs("train")
    c2w = outputs.cameras.camera_to_worlds[0].double().numpy()
    # Azimuth 0 is Blender's front view (camera on -Y), counter-clockwise from above; raised by the elevation and
    # looking at the origin with no roll (closed form of the orbit camera, OpenGL axes).
    el, az = math.radians(30.0), math.radians(azimuth)
    back = np.array([math.cos(el) * math.sin(az), -math.cos(el) * math.cos(az), math.sin(el)])
    right = np.array([math.cos(az), math.sin(az), 0.0])
    expect = np.stack([right, np.cross(back, right), back, 2.0 * back], axis=1)
    np.testing.assert_allclose(c2w, expect, atol=1e-6)
    assert float(outputs.cameras.fx[0]) == pytest.approx(16.0 / math.tan(math.radians(20.0)))
    assert (float(outputs.cameras.cx[0]), float(outputs.cameras.cy[0])) == (16.0, 12.0)
    ray = outputs.cameras.generate_rays(camera_indices=0, coords=torch.tensor([[12.0, 16.0]]))
    assert torch.allclose(ray.directions.reshape(3), torch.from_numpy(-back).float(), atol=1e-5)
    assert outputs.alpha_color is None and outputs.scene_box.aabb.tolist() == [[-1.0] * 3, [1.0] * 3]


def test_read_rgba_keeps_every_value(tmp_path):
    cv2 = pytest.importorskip("cv2")
    rgba8 = np.array([[[10, 20, 30, 128], [255, 0, 7, 0]]], np.uint8)
    Image.fromarray(rgba8, "RGBA").save(tmp_path / "rgba.png")
    image, has_alpha = read_rgba(tmp_path / "rgba.png")
    assert has_alpha and image.dtype == np.float32 and image.flags.c_contiguous
    np.testing.assert_array_equal(image, rgba8.astype(np.float32) / 255.0)  # straight alpha, nothing premultiplied
    Image.fromarray(rgba8[..., :3], "RGB").save(tmp_path / "rgb.bmp")
    image, has_alpha = read_rgba(tmp_path / "rgb.bmp")
    assert not has_alpha and image.shape == (1, 2, 4)
    np.testing.assert_array_equal(image[..., :3], rgba8[..., :3] / np.float32(255.0))
    np.testing.assert_array_equal(image[..., 3], 1.0)
    # 16 bits are kept (1000 / 65535, not 3 / 255), channels in RGBA order (OpenCV writes BGRA).
    rgba16 = np.array([[[1000, 20000, 40000, 30000], [65535, 0, 1, 65535]]], np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), rgba16[..., [2, 1, 0, 3]])
    image, has_alpha = read_rgba(tmp_path / "deep.png")
    assert has_alpha
    np.testing.assert_allclose(image, rgba16 / 65535.0, rtol=0, atol=1e-7)
    grey16 = np.array([[1000, 65535]], np.uint16)
    cv2.imwrite(str(tmp_path / "grey.png"), grey16)
    image, has_alpha = read_rgba(tmp_path / "grey.png")
    assert not has_alpha
    np.testing.assert_allclose(image[0, :, 0], grey16[0] / 65535.0, atol=1e-7)
    assert np.array_equal(image[..., 0], image[..., 2]) and np.array_equal(image[..., 3], np.ones((1, 2)))
    Image.fromarray(np.array([[[50, 200], [100, 0]]], np.uint8), "LA").save(tmp_path / "la.png")
    image, has_alpha = read_rgba(tmp_path / "la.png")
    assert has_alpha
    np.testing.assert_array_equal(image * 255.0, [[[50, 50, 50, 200], [100, 100, 100, 0]]])
    # Bad files are one line naming the file.
    with pytest.raises(DataError, match="nothing.png: image file not found"):
        read_rgba(tmp_path / "nothing.png")
    (tmp_path / "fake.png").write_bytes((tmp_path / "rgb.bmp").read_bytes())
    with pytest.raises(DataError, match="fake.png: BMP data in a .png file"):
        read_rgba(tmp_path / "fake.png")


def test_datamanager_replaces_training_images(tiny_scene):
    cfg = InMemoryDataManagerConfig(data=tiny_scene, train_num_rays_per_batch=256)
    dm = cfg.setup(device="cpu")
    before = dm.train_images.clone()
    new = torch.zeros(2, *before.shape[1:3], 3)
    dm.replace_train_images([1, 3], new)
    assert torch.equal(dm.train_images[[1, 3], ..., :3], new)
    assert torch.equal(dm.train_images[0], before[0])
    _, batch = dm.next_train(0)
    idx = batch["indices"]
    expect = dm.train_images[idx[:, 0], idx[:, 1], idx[:, 2]]
    assert torch.equal(batch["image"], expect)
    with pytest.raises(ValueError):
        dm.replace_train_images([0], torch.zeros(1, 5, 5, 3))


# --- bad input --------------------------------------------------------------------------------------------------
def _blender_error(folder: Path) -> str:
    with pytest.raises(DataError) as info:
        CheckedBlenderDataParserConfig(data=folder).setup().get_dataparser_outputs("train")
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_bad_blender_inputs(tmp_path):
    scene = tmp_path / "scene"
    make_blender(scene)
    tj = scene / "transforms_train.json"
    meta = json.loads(tj.read_text())

    tj.unlink()
    assert "transforms_train.json: file not found" in _blender_error(scene)
    tj.write_text("{not json")
    assert "transforms_train.json: malformed JSON" in _blender_error(scene)
    tj.write_text(json.dumps({**meta, "frames": []}))
    assert "empty dataset" in _blender_error(scene)

    bad = json.loads(json.dumps(meta))
    bad["frames"][1]["transform_matrix"][0][3] = float("nan")
    tj.write_text(json.dumps(bad))
    assert "frame 1" in _blender_error(scene) and "NaN" in _blender_error(scene)
    bad = json.loads(json.dumps(meta))
    bad["frames"][2]["transform_matrix"] = [[0, 0, 0, 1]] * 3 + [[0, 0, 0, 1]]
    tj.write_text(json.dumps(bad))
    assert "singular" in _blender_error(scene)

    tj.write_text(json.dumps(meta))
    (scene / "train" / "r_1.png").unlink()
    assert "r_1.png: image file not found" in _blender_error(scene)
    _rgba(scene / "train" / "r_1.png", (20, 20))
    assert "r_1.png: image is 20x20" in _blender_error(scene)
    assert "data directory not found" in _blender_error(tmp_path / "nowhere")


def test_bad_objaverse_inputs(tmp_path):
    obj = tmp_path / "obj"
    make_objaverse(obj, n_views=3)

    def err(**kw) -> str:
        with pytest.raises(DataError) as info:
            ObjaverseDataParserConfig(data=obj, train_views=(0, 3), **kw).setup().get_dataparser_outputs("train")
        assert "\n" not in str(info.value)
        return str(info.value)

    assert "empty dataset" in err(light_index=7)
    _rgba(obj / "001_000_studio.png", mode="RGB")
    assert "001_000_studio.png: image has mode RGB but an RGBA image" in err()
    _rgba(obj / "001_000_studio.png")
    np.save(obj / "002_RT.npy", np.zeros((3, 4)))
    assert "002_RT.npy: view 002: pose is singular" in err()
    (obj / "002_RT.npy").unlink()
    assert "002_RT.npy: camera file missing" in err()
    shutil.rmtree(obj)
    assert "object folder not found" in err()


@pytest.mark.parametrize(
    "config_class, option, value, problem",
    [
        (ObjaverseDataParserConfig, "scene_scale", 0.0, "must be a positive number, got 0.0"),
        (SingleImageDataParserConfig, "scene_scale", float("nan"), "must be a positive number, got nan"),
        (ObjaverseDataParserConfig, "light_index", -1, "must be >= 0, got -1"),
        (ObjaverseDataParserConfig, "train_views", (3, 3), "must be a half-open range 0 <= start < end, got (3, 3)"),
        (SingleImageDataParserConfig, "radius", 0.0, "the camera distance must be positive, got 0.0"),
        (SingleImageDataParserConfig, "fov", 180.0, "the field of view must be in (0, 180) degrees, got 180.0"),
    ],
)
def test_object_dataparser_settings_are_one_line_config_errors(tmp_path, config_class, option, value, problem):
    """The settings every object parser shares (scene_scale) and each one's own are checked before any file."""
    (tmp_path / "obj").mkdir()
    image = tmp_path / "obj" / "000_000_studio.png"
    _rgba(image)
    data = image if config_class is SingleImageDataParserConfig else image.parent
    with pytest.raises(ConfigError) as info:
        config_class(data=data, **{option: value}).setup().get_dataparser_outputs("train")
    assert str(info.value) == f"{option}: {problem}"


def test_bad_single_image(tmp_path):
    _rgba(tmp_path / "rgb.png", mode="RGB")
    with pytest.raises(DataError, match="rgb.png: image has mode RGB"):
        SingleImageDataParserConfig(data=tmp_path / "rgb.png").setup().get_dataparser_outputs("train")
    Image.fromarray(np.zeros((8, 8, 4), np.uint8), "RGBA").save(tmp_path / "empty.png")
    with pytest.raises(DataError, match="empty.png: the alpha mask is empty"):
        SingleImageDataParserConfig(data=tmp_path / "empty.png").setup().get_dataparser_outputs("train")
