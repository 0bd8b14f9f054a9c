"""Camera paths, videos read back with imageio, the light-path hook, and ns-render on a relight3d run."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import matplotlib
import numpy as np
import pytest
import torch

from relight3d.cli import main
from relight3d.errors import DataError
from relight3d.export.camera_paths import (
    ViewSettings,
    load_camera_path_json,
    make_camera_path,
    orbit_path,
    spiral_path,
    write_camera_path_json,
)
from relight3d.export.orbits import orbit_directions
from relight3d.export.video import (
    RotatingLightPath,
    VideoExportConfig,
    auto_depth_range,
    render_camera_outputs,
    render_video,
)
from relight3d.geometry import look_at, orbit_positions

VIEW = ViewSettings(radius=3.0, elevation=20.0, vertical_fov=40.0, width=32, height=24)


def read_video(path: Path):
    reader = imageio.get_reader(path)
    frames = [np.asarray(f) for f in reader]
    fps = reader.get_meta_data().get("fps")
    reader.close()
    return frames, fps


# --- camera paths -----------------------------------------------------------------------------------------------
def test_orbit_cameras_circle_the_target_and_match_dataset_poses():
    cams = orbit_path(8, VIEW)
    positions = cams.camera_to_worlds[:, :, 3]
    assert torch.allclose(positions.norm(dim=-1), torch.full((8,), 3.0), atol=1e-5)
    elevation = torch.rad2deg(torch.asin(positions[:, 2] / 3.0))
    assert torch.allclose(elevation, torch.full((8,), 20.0), atol=1e-4)
    # The optical axis (-z of the camera) passes through the target.
    forward = -cams.camera_to_worlds[:, :, 2]
    assert torch.allclose(torch.linalg.cross(forward, -positions).norm(dim=-1), torch.zeros(8), atol=1e-5)
    # Same convention as the dataset cameras relight3d renders: azimuth 0 is Blender's front view.
    reference = look_at(orbit_positions(3.0, 20.0, 0.0)).numpy()
    assert np.allclose(cams.camera_to_worlds[0].numpy(), reference, atol=1e-5)
    reference_90 = look_at(orbit_positions(3.0, 20.0, 90.0)).numpy()
    assert np.allclose(cams.camera_to_worlds[2].numpy(), reference_90, atol=1e-5)
    focal = 24 / (2 * math.tan(math.radians(20.0)))
    assert torch.allclose(cams.fy, torch.full_like(cams.fy, focal)) and int(cams.width[0]) == 32


@pytest.mark.parametrize("up", [(0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (0.3, 0.2, 0.9)])
def test_orbit_directions_for_any_world_up(up):
    azimuth, elevation = torch.tensor([0.0, 90.0, 200.0]), torch.tensor([20.0, -35.0, 60.0])
    directions = orbit_directions(azimuth, elevation, up).double()
    unit_up = torch.nn.functional.normalize(torch.tensor(up, dtype=torch.float64), dim=0)
    assert torch.allclose(directions.norm(dim=-1), torch.ones(3, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(directions @ unit_up, torch.sin(torch.deg2rad(elevation)).double(), atol=1e-6)
    if up == (0.0, 0.0, 1.0):  # relight3d's own frame: exactly geometry's orbit
        assert torch.equal(orbit_directions(azimuth, elevation), orbit_positions(1.0, elevation, azimuth))
    if up == (0.0, 1.0, 0.0):  # azimuth 0 looks from +Z; azimuth 90 from +X (counter-clockwise seen from +Y)
        el = torch.deg2rad(elevation).double()
        assert torch.allclose(directions[0], torch.stack([0 * el[0], el[0].sin(), el[0].cos()]), atol=1e-6)
        assert torch.allclose(directions[1], torch.stack([el[1].cos(), el[1].sin(), 0 * el[1]]), atol=1e-6)
    cams = orbit_path(4, ViewSettings(radius=2.0, elevation=30.0, up=up, target=(0.1, 0.2, -0.3)))
    offsets = cams.camera_to_worlds[:, :, 3] - torch.tensor([0.1, 0.2, -0.3])
    assert torch.allclose(offsets.double() @ unit_up, torch.full((4,), 1.0, dtype=torch.float64), atol=1e-5)
    camera_up = cams.camera_to_worlds[:, :, 1].double()  # no roll: the camera's up leans towards the world's
    assert (camera_up @ unit_up > 0.8).all()


def test_spiral_swings_in_elevation_and_loops():
    cams = spiral_path(40, VIEW, turns=2.0, elevation_amplitude=15.0)
    positions = cams.camera_to_worlds[:, :, 3]
    elevation = torch.rad2deg(torch.asin(positions[:, 2] / positions.norm(dim=-1)))
    assert abs(float(elevation.max()) - 35.0) < 0.5 and abs(float(elevation.min()) - 5.0) < 0.5
    step = (positions[1] - positions[0]).norm()
    assert float((positions[-1] - positions[0]).norm()) < 1.5 * float(step)  # the next frame would be the first


def test_camera_path_json_round_trip(tmp_path):
    cams = spiral_path(5, VIEW)
    path = write_camera_path_json(cams, tmp_path / "path.json", fps=12.0)
    data = json.loads(path.read_text())
    assert data["render_width"] == 32 and data["render_height"] == 24 and data["seconds"] == pytest.approx(5 / 12)
    loaded, fps = load_camera_path_json(path)
    assert fps == 12.0
    assert torch.allclose(loaded.camera_to_worlds, cams.camera_to_worlds, atol=1e-6)
    assert torch.allclose(loaded.fy, cams.fy, atol=1e-4) and torch.allclose(loaded.cx, cams.cx)
    assert int(loaded.width[0]) == 32 and int(loaded.height[0]) == 24


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{not json", "malformed JSON"),
        ('{"render_height": 4, "render_width": 4}', "no 'camera_path' field"),
        ('{"render_height": 4, "render_width": 4, "camera_path": []}', "camera path has no frames"),
        (
            '{"render_height": 4, "render_width": 4, "camera_path": [{"camera_to_world": [1, 2], "fov": 50}]}',
            "'camera_to_world' must be 16 finite numbers",
        ),  # fmt: skip
    ],
)
def test_bad_camera_path_files(tmp_path, content, problem):
    path = tmp_path / "camera_path.json"
    path.write_text(content)
    with pytest.raises(DataError, match=problem) as err:
        load_camera_path_json(path)
    assert "\n" not in str(err.value)


def test_unknown_path_names():
    with pytest.raises(DataError, match="orbitt: unknown camera path: use orbit, spiral or a nerfstudio"):
        make_camera_path("orbitt", 4, VIEW)
    with pytest.raises(DataError, match="missing.json: file not found"):
        make_camera_path("missing.json", 4, VIEW)


# --- videos -----------------------------------------------------------------------------------------------------
def test_mp4_and_gif_have_the_requested_frames_size_and_fps(sphere_run, tmp_path):
    _, pipeline = sphere_run
    cams = orbit_path(6, VIEW)
    outputs = ("rgb", "depth", "normals", "accumulation")
    summary = render_video(pipeline, cams, tmp_path / "orbit.mp4", fps=12.0, outputs=outputs, progress=False)
    frames, fps = read_video(tmp_path / "orbit.mp4")
    assert len(frames) == 6 and fps == pytest.approx(12.0)
    assert frames[0].shape == (24, 4 * 32, 3)
    assert (summary.n_frames, summary.width, summary.height) == (6, 128, 24)
    render_video(pipeline, cams, tmp_path / "orbit.gif", fps=10.0, progress=False)
    gif, _ = read_video(tmp_path / "orbit.gif")
    assert len(gif) == 6 and gif[0].shape[:2] == (24, 32)
    with pytest.raises(DataError, match="even frame width and height"):
        render_video(pipeline, orbit_path(2, ViewSettings(width=31, height=24)), tmp_path / "odd.mp4")


def test_panels_show_the_rendered_outputs(sphere_run):
    """Side-by-side panels, checked on the trained sphere seen from 3 units away."""
    _, pipeline = sphere_run
    model = pipeline.model
    cams = orbit_path(1, ViewSettings(radius=3.0, elevation=0.0, vertical_fov=30.0, width=32, height=32))
    renderer = VideoExportConfig(outputs=("accumulation", "depth", "normals"), progress=False).setup()
    (frame,) = list(renderer.frames(model, cams))
    raw = render_camera_outputs(model, cams[0:1], ("normals",))
    acc = raw["accumulation"][..., 0].numpy()
    assert np.abs(frame[:, :32, 0].astype(float) / 255.0 - acc).max() <= 1 / 255 + 1e-6
    centre = (slice(14, 18), slice(14, 18))
    assert acc[centre].min() > 0.9 and acc[0, 0] < 0.1  # the sphere in the middle, background in the corner
    # The sphere's front is 2.5 away and its centre 3 (a briefly trained field renders the expected depth a
    # little inside the surface); the depth panel is that depth through the colour map over the video's range.
    depth = raw["depth"][..., 0].numpy()
    assert 2.45 < float(depth[centre].mean()) < 3.0
    near, far = auto_depth_range(model, cams)
    expected_depth = matplotlib.colormaps["turbo"](np.clip((depth - near) / (far - near), 0, 1))[..., :3]
    expected_depth = expected_depth * acc[..., None] + (1.0 - acc[..., None])  # over the white background
    assert np.abs(frame[:, 32:64].astype(float) / 255.0 - expected_depth).max() <= 1 / 255 + 1e-6
    # Normals face the camera, which sits on the -Y axis.
    normal = raw["normals"][centre].reshape(-1, 3).mean(0)
    assert float(torch.nn.functional.normalize(normal, dim=0) @ torch.tensor([0.0, -1.0, 0.0])) > 0.95
    normals_panel = frame[:, 64:96].astype(float) / 255.0
    assert np.abs(normals_panel[centre].reshape(-1, 3).mean(0) - (normal.numpy() * 0.5 + 0.5)).max() < 0.05


def test_light_path_hook(sphere_run):
    _, pipeline = sphere_run
    cams = orbit_path(4, VIEW)
    seen = []
    red = torch.zeros(24, 32, 3)
    red[..., 0] = 1.0

    def rotate(model, degrees):
        seen.append(degrees)
        return red if degrees == 180.0 else None

    frames = list(VideoExportConfig(progress=False).setup().frames(pipeline.model, cams, RotatingLightPath(rotate)))
    assert seen == [0.0, 90.0, 180.0, 270.0]
    assert np.all(frames[2] == np.array([255, 0, 0], dtype=np.uint8))
    assert not np.all(frames[1] == np.array([255, 0, 0], dtype=np.uint8))


def test_cli_video_and_ns_render_agree(sphere_run, tmp_path, capsys):
    """``relight3d export video`` writes an orbit and its camera path; ``ns-render camera-path`` renders the same
    path from the same run, and the frames agree."""
    config_path, pipeline = sphere_run
    assert shutil.which("ffmpeg"), "ns-render needs ffmpeg on PATH"
    code = main(["export", "video", "--load-config", str(config_path), "--output", str(tmp_path / "orbit.mp4"),
                 "--path", "orbit", "--frames", "3", "--width", "32", "--height", "32", "--fps", "6",
                 "--outputs", "rgb,depth", "--save-camera-path", str(tmp_path / "camera_path.json"),
                 "--no-progress"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    frames, fps = read_video(tmp_path / "orbit.mp4")
    assert len(frames) == 3 and frames[0].shape == (32, 64, 3) and fps == pytest.approx(6.0)

    env = dict(os.environ, PYTHONWARNINGS="ignore")
    exe = Path(sys.executable).parent / "ns-render"
    result = subprocess.run(
        [str(exe), "camera-path", "--load-config", str(config_path), "--camera-path-filename",
         str(tmp_path / "camera_path.json"), "--output-path", str(tmp_path / "ns" / "render"),
         "--output-format", "images", "--image-format", "png"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    ns_frames = sorted((tmp_path / "ns" / "render").glob("*.png"))
    assert len(ns_frames) == 3
    cams, _ = load_camera_path_json(tmp_path / "camera_path.json")
    ours = list(VideoExportConfig(progress=False).setup().frames(pipeline.model, cams))
    for ns_png, our in zip(ns_frames, ours):
        theirs = imageio.imread(ns_png)[..., :3].astype(int)
        assert theirs.shape == our.shape
        assert np.abs(theirs - our.astype(int)).max() <= 2
