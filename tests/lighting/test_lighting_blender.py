"""relight3d's equirectangular convention against Blender's: Cycles renders of a world map, compared pixel by pixel.

The map written here encodes, in each pixel, the direction that relight3d's convention gives that pixel
(``colour = 0.5 + 0.5 d``). Blender renders the bare world background (no objects) through perspective cameras
pointing in several known directions. If both conventions agree, every rendered pixel equals
``sample_envmap(map, ray direction)``; swapped axes, a mirrored or shifted azimuth or flipped rows would be off by
tenths (checked too, so the comparison can fail).

Needs a Python with ``bpy`` (Blender as a module, e.g. ``pip install bpy==5.0.1`` on Python 3.11): the path in
``RELIGHT3D_BPY_PYTHON``, else this interpreter when it has ``bpy`` (the install's ``bench`` extra); skipped
otherwise. Takes a few seconds.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from relight3d.lighting import directions_to_uv, envmap_directions, sample_envmap, write_envmap
from relight3d.lighting.envmap_io import read_hdr_image

RESOLUTION = 16
LENS_MM, SENSOR_MM = 35.0, 32.0

RENDER_SCRIPT = r"""
import json
import sys

import bpy
from mathutils import Matrix

cfg = json.loads(open(sys.argv[-1]).read())
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene

world = bpy.data.worlds.new("world")
scene.world = world
if bpy.app.version < (5, 0, 0):
    world.use_nodes = True
nodes, links = world.node_tree.nodes, world.node_tree.links
background = next(n for n in nodes if n.type == "BACKGROUND")
background.inputs["Strength"].default_value = 1.0
texture = nodes.new("ShaderNodeTexEnvironment")  # default mapping: no Vector input, no rotation
texture.image = bpy.data.images.load(cfg["envmap"])
texture.interpolation = "Linear"
links.new(texture.outputs["Color"], background.inputs["Color"])

camera_data = bpy.data.cameras.new("camera")
camera_data.sensor_fit = "HORIZONTAL"
camera_data.sensor_width = cfg["sensor_mm"]
camera_data.lens = cfg["lens_mm"]
camera = bpy.data.objects.new("camera", camera_data)
scene.collection.objects.link(camera)
scene.camera = camera

render = scene.render
render.engine = "CYCLES"
render.resolution_x = render.resolution_y = cfg["resolution"]
render.resolution_percentage = 100
render.threads_mode = "FIXED"
render.threads = 1
render.use_persistent_data = True  # the first render pays Cycles' set-up; the others reuse it
render.image_settings.file_format = "OPEN_EXR"
render.image_settings.color_depth = "32"
render.image_settings.color_mode = "RGB"
scene.view_settings.view_transform = "Standard"
scene.cycles.device = "CPU"
scene.cycles.samples = 2
scene.cycles.use_adaptive_sampling = False
scene.cycles.use_denoising = False
scene.cycles.filter_width = 0.01  # every sample goes through the pixel centre
scene.cycles.seed = 0

for path, camera_to_world in zip(cfg["outputs"], cfg["cameras"]):
    camera.matrix_world = Matrix(camera_to_world)
    render.filepath = path
    bpy.ops.render.render(write_still=True)
"""


def _bpy_python() -> Path:
    from relight3d_bench.runner import BpyNotFoundError, find_bpy_python

    try:
        return Path(find_bpy_python())
    except BpyNotFoundError as err:
        pytest.skip(str(err))


def _look_along(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Camera-to-world (Blender camera: looks down -Z, +Y up) at the origin, looking at the given direction."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    forward = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2] = right, up, -forward
    return c2w


def _pixel_ray_directions(c2w: np.ndarray, resolution: int) -> torch.Tensor:
    """World directions through the pixel centres (row 0 at the top) of Blender's pinhole camera."""
    half_width = SENSOR_MM / (2.0 * LENS_MM)  # tan(fov_x / 2); square image, so the same vertically
    centres = (np.arange(resolution) + 0.5) / resolution * 2.0 - 1.0
    x_cam = centres[None, :] * half_width
    y_cam = -centres[:, None] * half_width
    cam = np.stack(np.broadcast_arrays(x_cam, y_cam, -np.ones_like(x_cam)), axis=-1)
    world = cam @ c2w[:3, :3].T
    return torch.from_numpy(world / np.linalg.norm(world, axis=-1, keepdims=True)).float()


def test_blender_meta_formula_is_this_convention() -> None:
    """datasets/render_object_scene.py records u = 0.5 - atan2(y, x) / 2pi, v = 0.5 + asin(z) / pi (v = 1 at top)."""
    directions = torch.nn.functional.normalize(torch.randn(500, 3), dim=-1)
    x, y, z = directions.unbind(-1)
    u_blender = 0.5 - torch.atan2(y, x) / (2 * math.pi)
    v_blender = 0.5 + torch.asin(z) / math.pi
    uv = directions_to_uv(directions)
    assert torch.allclose(uv[:, 0], u_blender, atol=1e-5)
    assert torch.allclose(uv[:, 1], 1.0 - v_blender, atol=1e-5)  # ours counts rows from the top


def test_cycles_world_background_matches_sample_envmap(tmp_path: Path) -> None:
    python = _bpy_python()
    height, width = 32, 64
    envmap = 0.5 + 0.5 * envmap_directions(height, width)
    envmap_path = write_envmap(tmp_path / "directions.exr", envmap)
    views = [(30.0, 10.0), (200.0, 55.0), (-100.0, -40.0), (90.0, 0.0)]
    cameras = [_look_along(az, el) for az, el in views]
    outputs = [str(tmp_path / f"view_{i}.exr") for i in range(len(views))]
    config = {
        "envmap": str(envmap_path),
        "cameras": [c.tolist() for c in cameras],
        "outputs": outputs,
        "resolution": RESOLUTION,
        "lens_mm": LENS_MM,
        "sensor_mm": SENSOR_MM,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "render.py").write_text(RENDER_SCRIPT)
    result = subprocess.run(
        [str(python), str(tmp_path / "render.py"), str(tmp_path / "config.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]

    alternatives = {
        "mirrored azimuth": torch.flip(envmap, dims=[1]),
        "azimuth shifted by 180 deg": torch.roll(envmap, shifts=width // 2, dims=1),
        "azimuth shifted by 90 deg": torch.roll(envmap, shifts=width // 4, dims=1),
        "rows flipped": torch.flip(envmap, dims=[0]),
    }
    for (azimuth, elevation), c2w, output in zip(views, cameras, outputs):
        rendered = read_hdr_image(output)  # a square camera render, not an equirectangular map
        assert rendered.shape == (RESOLUTION, RESOLUTION, 3)
        rays = _pixel_ray_directions(c2w, RESOLUTION)
        expected = sample_envmap(envmap, rays)
        error = (rendered - expected).abs().max().item()
        assert error < 0.01, f"view az {azimuth} el {elevation}: max error {error:.4f}"
        # The colour decodes to the ray direction itself (the map is a direction code), a second reading of the same.
        decoded = torch.nn.functional.normalize(2.0 * rendered - 1.0, dim=-1)
        assert (decoded * rays).sum(-1).min() > math.cos(math.radians(2.0))
        for name, alternative in alternatives.items():
            wrong = (rendered - sample_envmap(alternative, rays)).abs().max().item()
            assert wrong > 0.1, f"the check cannot tell ours from '{name}' (error {wrong:.3f})"
