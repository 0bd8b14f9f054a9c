"""relight3d.geometry against closed forms: rotations are proper, cameras look where they should, rays hit pixels."""

import math

import pytest
import torch

from relight3d import geometry as geo


def test_look_at_front_view_is_blenders_front_camera():
    # A camera on -Y looking at the origin in a Z-up world: x right = +X, y up = +Z, looking down -z = +Y.
    c2w = geo.look_at(torch.tensor([0.0, -4.0, 0.0]))
    expected = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, -1.0, -4.0], [0.0, 1.0, 0.0, 0.0]])
    torch.testing.assert_close(c2w, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("target", [(0.0, 0.0, 0.0), (0.3, -0.2, 0.5)])
def test_look_at_is_a_proper_rotation_pointing_at_target(target):
    gen = torch.Generator().manual_seed(0)
    positions = torch.randn(64, 3, generator=gen) * 3
    c2w = geo.look_at(positions, target)
    rot = c2w[:, :, :3]
    torch.testing.assert_close(rot @ rot.transpose(1, 2), torch.eye(3).expand(64, 3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(64), atol=1e-5, rtol=0)
    to_target = torch.nn.functional.normalize(torch.tensor(target) - positions, dim=-1)
    torch.testing.assert_close(-rot[:, :, 2], to_target, atol=1e-5, rtol=0)
    # the camera's x axis is horizontal (no roll) in a Z-up world
    torch.testing.assert_close(rot[:, 2, 0], torch.zeros(64), atol=1e-5, rtol=0)


def test_look_at_straight_down_stays_a_rotation():
    c2w = geo.look_at(torch.tensor([0.0, 0.0, 5.0]))
    rot = c2w[:, :3]
    torch.testing.assert_close(rot @ rot.T, torch.eye(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(rot[:, 2], torch.tensor([0.0, 0.0, 1.0]))


def test_orbit_positions_closed_form():
    p = geo.orbit_positions(2.0, torch.tensor([0.0, 0.0, 90.0, 30.0]), torch.tensor([0.0, 90.0, 0.0, 180.0]))
    c30 = math.cos(math.radians(30.0))
    expected = torch.tensor([[0.0, -2.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.0, 2.0 * c30, 1.0]])
    torch.testing.assert_close(p, expected, atol=1e-6, rtol=0)


def test_pinhole_rays_project_back_to_their_pixels():
    width, height, fov = 6, 4, 50.0
    c2w = geo.look_at(geo.orbit_positions(3.0, 20.0, 40.0), (0.1, 0.0, 0.2))
    origins, dirs = geo.pinhole_rays(c2w, width, height, fov)
    assert origins.shape == (width * height, 3)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(width * height))
    # project a point on each ray with the OpenCV intrinsics of the same camera: it lands on the pixel centre
    focal = 0.5 * height / math.tan(math.radians(fov) / 2)
    w2c = geo.world_to_camera(geo.opengl_to_opencv(c2w))
    points = origins + 2.5 * dirs
    cam = points @ w2c[:, :3].T + w2c[:, 3]
    uv = cam[:, :2] / cam[:, 2:] * focal + torch.tensor([width / 2, height / 2])
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    torch.testing.assert_close(uv, torch.stack([xs, ys], -1).reshape(-1, 2), atol=1e-4, rtol=0)


def test_pinhole_rays_match_nerfstudio_cameras():
    from nerfstudio.cameras.cameras import Cameras, CameraType

    width, height, fov = 5, 3, 40.0
    c2w = geo.look_at(geo.orbit_positions(2.5, 10.0, -30.0))
    focal = 0.5 * height / math.tan(math.radians(fov) / 2)
    cam = Cameras(
        camera_to_worlds=c2w[None],
        fx=focal,
        fy=focal,
        cx=width / 2,
        cy=height / 2,
        width=width,
        height=height,
        camera_type=CameraType.PERSPECTIVE,
    )
    o_ns, d_ns, hw = geo.camera_rays(cam[0])
    o, d = geo.pinhole_rays(c2w, width, height, fov)
    assert hw == (height, width)
    torch.testing.assert_close(o_ns, o, atol=1e-5, rtol=0)
    torch.testing.assert_close(d_ns, d, atol=1e-5, rtol=0)
    o_half, _, hw_half = geo.camera_rays(cam[0], scale=2.0)
    assert hw_half == (2 * height, 2 * width) and o_half.shape == (4 * width * height, 3)
    assert int(cam.width) == width  # the camera passed in is not rescaled


def test_world_to_camera_inverts_and_opencv_flip_is_an_involution():
    c2w = geo.look_at(geo.orbit_positions(3.0, 35.0, 110.0), (0.2, 0.1, 0.0))
    torch.testing.assert_close(
        geo.to_homogeneous(geo.world_to_camera(c2w)) @ geo.to_homogeneous(c2w), torch.eye(4), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(geo.opengl_to_opencv(geo.opengl_to_opencv(c2w)), c2w)
    cv = geo.opengl_to_opencv(c2w)
    # OpenCV's camera looks down +z: the +z column points at the target
    to_target = torch.nn.functional.normalize(torch.tensor([0.2, 0.1, 0.0]) - c2w[:, 3], dim=0)
    torch.testing.assert_close(cv[:, 2], to_target, atol=1e-5, rtol=0)
