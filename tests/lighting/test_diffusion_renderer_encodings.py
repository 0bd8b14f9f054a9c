"""DiffusionRenderer's lighting images: values worked out by hand, inverses, and the camera-frame rotation."""

from __future__ import annotations

import math

import pytest
import torch

from relight3d.lighting.diffusion_renderer_encodings import (
    FIXED_POSE_CAMERA_TO_WORLD,
    camera_frame_envmap,
    direction_encoding,
    encode_envmap_for_diffusion_renderer,
    ldr_encoding,
    ldr_to_radiance,
    log_hdr_encoding,
    log_hdr_to_radiance,
    reinhard_tonemap,
    texel_directions,
    to_model_range,
)
from relight3d.lighting.encodings import hdr_encoding
from relight3d.lighting.equirect import envmap_directions

# A camera at the origin looking along world +Y with +Z up (OpenGL c2w: x right, y up, z backward).
LOOK_ALONG_Y = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])


def srgb(x: float) -> float:
    """The sRGB curve, written out independently of relight3d."""
    return 12.92 * x if x <= 0.0031308 else 1.055 * x ** (1.0 / 2.4) - 0.055


@pytest.mark.parametrize("radiance", [0.0, 0.02, 1.0, 3.5, 250.0])
def test_constant_map_log_hdr_is_the_fixed_log_curve(radiance):
    env = torch.full((8, 16, 3), radiance)
    lighting = encode_envmap_for_diffusion_renderer(env, LOOK_ALONG_Y, 4, 8)
    expected = srgb(math.log(1.0 + radiance) / math.log(10001.0))
    assert torch.allclose(lighting.log_hdr, torch.full_like(lighting.log_hdr, expected), atol=1e-6)


def test_constant_map_ldr_is_reinhard_then_srgb():
    # radiance 1: reinhard = 1 * (1 + 1/256) / 2 = 257/512; radiance 16 is the white point; 100 clips.
    values = ldr_encoding(torch.tensor([0.0, 1.0, 16.0, 100.0]))
    assert values.tolist() == pytest.approx([0.0, srgb(257.0 / 512.0), 1.0, 1.0], abs=1e-6)
    assert reinhard_tonemap(torch.tensor([4.0])).item() == pytest.approx(4.0 * (1 + 4 / 256) / 5, abs=1e-7)


def test_log_hdr_is_not_normalised_by_the_map_maximum_unlike_neural_gaffer():
    env = torch.full((4, 8, 3), 1.0)
    assert log_hdr_encoding(env).max().item() == pytest.approx(srgb(math.log(2.0) / math.log(10001.0)), abs=1e-6)
    assert hdr_encoding(env).max().item() == pytest.approx(1.0)  # Neural Gaffer: divided by the map's own maximum
    assert log_hdr_encoding(torch.tensor([2e4, -3.0, float("nan")])).tolist() == [1.0, 0.0, 0.0]


def test_inverses_recover_radiance():
    radiance = torch.tensor([0.0, 0.01, 0.5, 1.0, 7.0, 15.5])
    assert torch.allclose(ldr_to_radiance(ldr_encoding(radiance)), radiance, rtol=1e-4, atol=1e-5)
    wide = torch.tensor([0.0, 0.01, 1.0, 100.0, 9000.0])
    assert torch.allclose(log_hdr_to_radiance(log_hdr_encoding(wide)), wide, rtol=1e-4, atol=1e-5)
    assert ldr_to_radiance(torch.tensor([1.0])).item() == pytest.approx(16.0)


def test_texel_directions_by_hand():
    # H = 4: theta_0 = pi * linspace(1/4, 3/4, 4)[0] = pi / 4 (not the pixel centre pi / 8).
    # W = 8, column 6: phi = pi * (13 / 8 - 1) = 5 pi / 8.  d = (sin t sin p, cos t, sin t cos p).
    t, p = math.pi / 4, 5 * math.pi / 8
    expected = [math.sin(t) * math.sin(p), math.cos(t), math.sin(t) * math.cos(p)]
    assert texel_directions(4, 8)[0, 6].tolist() == pytest.approx(expected, abs=1e-6)
    # H = 3, W = 5: the middle texel is +z (behind the camera) and encodes to (0.5, 0.5, 1.0).
    assert direction_encoding(3, 5)[1, 2].tolist() == pytest.approx([0.5, 0.5, 1.0], abs=1e-6)
    # the column at 3/4 of the width (W = 4, column 2 is at phi = pi/4; W = 8, column 5 at 3 pi / 8) leans right.
    assert texel_directions(3, 4)[1, 2].tolist() == pytest.approx([0.5**0.5, 0.0, 0.5**0.5], abs=1e-6)
    norms = texel_directions(7, 12).norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-6)


def direction_coded_world(height: int = 96, width: int = 192) -> torch.Tensor:
    """A world map whose value is ``0.5 d + 0.5`` of its own direction: reading it tells where a lookup went."""
    return envmap_directions(height, width) * 0.5 + 0.5


def test_rotation_into_the_camera_frame_by_hand():
    env = direction_coded_world()
    radiance = camera_frame_envmap(env, LOOK_ALONG_Y, 3, 4, convention="svd")
    # row 1 is the horizon (theta = pi/2); column 1 has phi = -pi/4: camera direction (-0.7071, 0, 0.7071), i.e.
    # left and behind. Camera right is world +X, camera backward is world -Y: world (-0.7071, -0.7071, 0).
    h = 0.5 * (1 - 0.5**0.5)
    assert radiance[1, 1].tolist() == pytest.approx([h, h, 0.5], abs=2e-3)
    # the top row (theta = pi/3 here) leans towards camera up = world +Z.
    assert radiance[0, :, 2].min().item() > 0.5 + 0.5 * math.cos(math.pi / 3) - 2e-3


def test_camera_frame_map_holds_the_radiance_from_each_texel_direction():
    env = direction_coded_world()
    angle = 0.7
    c, s = math.cos(angle), math.sin(angle)
    turn = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    c2w = torch.cat([turn @ LOOK_ALONG_Y[:, :3], torch.tensor([[1.0], [2.0], [3.0]])], dim=1)
    radiance = camera_frame_envmap(env, c2w, 9, 16, convention="svd")
    world_dirs = texel_directions(9, 16) @ c2w[:, :3].T
    assert torch.allclose(radiance, world_dirs * 0.5 + 0.5, atol=3e-3)


def test_fixed_pose_camera_sees_the_file_as_cosmos_and_mirrored_as_svd():
    # A map that changes only along u: the row grid does not matter, and W = 16 lands on pixel centres exactly.
    columns = torch.rand(16, 3)
    env = columns[None].expand(8, 16, 3).contiguous()
    cosmos = camera_frame_envmap(env, FIXED_POSE_CAMERA_TO_WORLD, 6, 16, convention="cosmos")
    svd = camera_frame_envmap(env, FIXED_POSE_CAMERA_TO_WORLD, 6, 16, convention="svd")
    assert torch.allclose(cosmos, env[:1].expand(6, 16, 3), atol=1e-5)
    assert torch.allclose(svd, torch.flip(env, dims=[1])[:1].expand(6, 16, 3), atol=1e-5)


def test_lighting_images_and_model_range():
    env = torch.rand(8, 16, 3) * 20.0
    lighting = encode_envmap_for_diffusion_renderer(env, torch.eye(4), 6, 10)
    for image in (lighting.ldr, lighting.log_hdr, lighting.directions):
        assert image.shape == (6, 10, 3)
        assert image.min() >= 0.0 and image.max() <= 1.0
    assert torch.allclose(to_model_range(lighting.directions), texel_directions(6, 10), atol=1e-6)
    assert to_model_range(torch.tensor([0.0, 0.5, 1.0])).tolist() == [-1.0, 0.0, 1.0]


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError, match="convention"):
        camera_frame_envmap(torch.ones(4, 8, 3), torch.eye(4), 2, 4, convention="blender")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="envmap"):
        camera_frame_envmap(torch.ones(4, 8), torch.eye(4), 2, 4)
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="reflection"):
        camera_frame_envmap(torch.ones(4, 8, 3), mirror, 2, 4)
