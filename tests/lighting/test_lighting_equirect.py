"""Equirectangular convention, sampling, resizing and rotations (world Z up, Blender's layout)."""

from __future__ import annotations

import math

import pytest
import torch

from relight3d.lighting import (
    camera_frame_rotation,
    directions_to_uv,
    dominant_light_direction,
    envmap_directions,
    envmap_solid_angles,
    eval_sh,
    resize_envmap,
    rotate_envmap,
    rotate_envmap_about_up,
    rotate_envmap_to_camera,
    rotation_about_up,
    sample_envmap,
    uv_to_directions,
)


def _smooth_map(height: int = 32, width: int = 64, seed: int = 0) -> torch.Tensor:
    """A band-limited (SH order 3), strictly positive, asymmetric map: smooth enough for bilinear resampling."""
    generator = torch.Generator().manual_seed(seed)
    coeffs = torch.randn(16, 3, generator=generator, dtype=torch.float64) * 0.3
    coeffs[0] = 3.0
    return eval_sh(coeffs, envmap_directions(height, width, dtype=torch.float64)).float()


def _random_rotation(seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))[None]
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.float()


def test_axes_land_where_documented() -> None:
    cases = {
        (1.0, 0.0, 0.0): (0.5, 0.5),  # +X: centre of the image
        (0.0, 1.0, 0.0): (0.25, 0.5),  # +Y: a quarter from the left
        (0.0, -1.0, 0.0): (0.75, 0.5),
        (0.0, 0.0, 1.0): (0.5, 0.0),  # zenith: top row
        (0.0, 0.0, -1.0): (0.5, 1.0),
    }
    for direction, uv in cases.items():
        assert torch.allclose(directions_to_uv(torch.tensor(direction)), torch.tensor(uv), atol=1e-6)
    minus_x = directions_to_uv(torch.tensor([-1.0, 1e-7, 0.0]))  # -X: the left/right seam
    assert min(float(minus_x[0]), 1 - float(minus_x[0])) < 1e-6


def test_uv_direction_round_trip_and_pixel_centres() -> None:
    directions = torch.nn.functional.normalize(torch.randn(1000, 3, dtype=torch.float64), dim=-1)
    assert torch.allclose(uv_to_directions(directions_to_uv(directions)), directions, atol=1e-12)
    height, width = 6, 12
    uv = directions_to_uv(envmap_directions(height, width, dtype=torch.float64))
    rows, cols = torch.meshgrid(
        torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij"
    )
    assert torch.allclose(uv[..., 0], (cols + 0.5) / width, atol=1e-12)
    assert torch.allclose(uv[..., 1], (rows + 0.5) / height, atol=1e-12)
    # Directions that are not unit length map to the same place.
    assert torch.allclose(directions_to_uv(3.0 * directions), directions_to_uv(directions), atol=1e-12)


def test_solid_angles_sum_to_sphere_and_follow_rows() -> None:
    solid = envmap_solid_angles(16, 32, dtype=torch.float64)
    assert float(solid.sum()) == pytest.approx(4 * math.pi, rel=1e-12)
    band = 2 * math.pi * (1 - math.cos(math.pi / 16))  # the top row is a polar cap
    assert float(solid[0].sum()) == pytest.approx(band, rel=1e-12)
    assert torch.allclose(solid[3], solid[12], rtol=1e-12)  # symmetric about the horizon


def test_sample_envmap_at_pixel_centres_returns_pixels_and_wraps() -> None:
    envmap = torch.rand(8, 16, 3, dtype=torch.float64)
    assert torch.allclose(sample_envmap(envmap, envmap_directions(8, 16, dtype=torch.float64)), envmap, atol=1e-12)
    # Half way between the last and the first column (across the -X seam) is their average.
    v = (3 + 0.5) / 8
    seam = uv_to_directions(torch.tensor([1.0, v], dtype=torch.float64))
    assert torch.allclose(sample_envmap(envmap, seam), 0.5 * (envmap[3, 0] + envmap[3, 15]), atol=1e-12)
    # Beyond the top row's centre the value is clamped to that row (bilinear between its two columns).
    near_pole = uv_to_directions(torch.tensor([(2 + 0.5) / 16, 0.01], dtype=torch.float64))
    assert torch.allclose(sample_envmap(envmap, near_pole), envmap[0, 2], atol=1e-12)


def test_sample_envmap_keeps_batch_shape_and_gradients() -> None:
    envmap = torch.rand(4, 8, 3, dtype=torch.float64, requires_grad=True)
    directions = torch.nn.functional.normalize(torch.randn(2, 5, 3, dtype=torch.float64), dim=-1)
    directions.requires_grad_(True)
    assert sample_envmap(envmap, directions).shape == (2, 5, 3)
    assert torch.autograd.gradcheck(sample_envmap, (envmap, directions), eps=1e-6, atol=1e-5)


def test_resize_keeps_mean_radiance_and_constant_maps() -> None:
    envmap = _smooth_map(32, 64).double() + torch.rand(32, 64, 3, dtype=torch.float64)
    small = resize_envmap(envmap, 8)
    assert small.shape == (8, 16, 3)

    def power(m: torch.Tensor) -> torch.Tensor:
        return (m * envmap_solid_angles(m.shape[0], m.shape[1], dtype=m.dtype)[..., None]).sum(dim=(0, 1))

    assert torch.allclose(power(small), power(envmap), rtol=1e-10)
    assert torch.allclose(resize_envmap(torch.full((16, 32, 3), 2.5), 40), torch.full((40, 80, 3), 2.5))


def test_rotation_round_trip_on_a_smooth_map() -> None:
    envmap = _smooth_map()
    rotation = _random_rotation(1)
    there_and_back = rotate_envmap(rotate_envmap(envmap, rotation), rotation.T)
    error = (there_and_back - envmap).abs().max() / envmap.abs().max()
    assert error < 0.01  # two bilinear resamplings of a 32 x 64 map
    assert torch.allclose(rotate_envmap(envmap, torch.eye(3)), envmap, atol=1e-5)


def test_rotate_envmap_definition_out_d_is_envmap_rotation_d() -> None:
    envmap = _smooth_map()
    rotation = _random_rotation(2)
    rotated = rotate_envmap(envmap, rotation)
    directions = torch.nn.functional.normalize(torch.randn(200, 3), dim=-1)
    expected = sample_envmap(envmap, directions @ rotation.T)
    assert torch.allclose(sample_envmap(rotated, directions), expected, rtol=0.02, atol=0.02)


@pytest.mark.parametrize("k", [4, 6, 7])
def test_rotate_about_up_k_times_is_identity(k: int) -> None:
    envmap = _smooth_map(16, 64)
    turned = envmap
    for _ in range(k):
        turned = rotate_envmap_about_up(turned, 2 * math.pi / k)
    if 64 % k == 0:  # whole-pixel shifts: exact
        assert torch.equal(turned, envmap)
    else:  # fractional shifts interpolate in u only
        assert (turned - envmap).abs().max() / envmap.abs().max() < 0.02


def test_rotate_about_up_direction_and_consistency() -> None:
    envmap = torch.zeros(16, 64, 3)
    envmap[7:9, 31:33] = 1.0  # a light on the horizon towards +X
    turned = rotate_envmap_about_up(envmap, math.pi / 2)  # counter-clockwise seen from above: +X -> +Y
    assert torch.allclose(dominant_light_direction(turned), torch.tensor([0.0, 1.0, 0.0]), atol=1e-5)
    smooth = _smooth_map()
    angle = 0.7
    assert torch.allclose(
        rotate_envmap_about_up(smooth, angle), rotate_envmap(smooth, rotation_about_up(-angle)), rtol=0.01, atol=0.01
    )


def test_rotate_about_up_is_differentiable_in_the_angle() -> None:
    envmap = _smooth_map(8, 32).double()
    angle = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: rotate_envmap_about_up(envmap, a), (angle,), eps=1e-6, atol=1e-5)


def _look_at_c2w(forward, up=(0.0, 0.0, 1.0), position=(0.3, -2.0, 0.5)) -> torch.Tensor:
    forward = torch.nn.functional.normalize(torch.tensor(forward, dtype=torch.float64), dim=0)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, torch.tensor(up, dtype=torch.float64)), dim=0)
    cam_up = torch.linalg.cross(right, forward)
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, cam_up, -forward, torch.tensor(position)
    return c2w.float()


def test_rotate_to_camera_puts_view_up_and_right_where_documented() -> None:
    envmap = _smooth_map()
    c2w = _look_at_c2w(forward=(0.4, 0.8, -0.45))
    in_camera = rotate_envmap_to_camera(envmap, c2w)
    right, up, back = c2w[:3, 0], c2w[:3, 1], c2w[:3, 2]
    # camera-frame map direction -> world direction whose radiance it must show (away from the poles, where bilinear
    # lookups clamp to the first row)
    forward_up = torch.nn.functional.normalize(up - back, dim=0)
    checks = [
        ((0.0, 1.0, 0.0), -back),
        ((1.0, 0.0, 0.0), right),
        ((-1.0, 0.0, 0.0), -right),
        ((0.0, 1.0, 1.0), forward_up),
    ]
    for map_direction, world_direction in checks:
        got = sample_envmap(in_camera, torch.nn.functional.normalize(torch.tensor(map_direction), dim=0))
        assert torch.allclose(got, sample_envmap(envmap, world_direction), rtol=0.01, atol=0.01)
    # 3x4 and 4x4 poses, and a scaled rotation block, give the same map.
    assert torch.allclose(rotate_envmap_to_camera(envmap, c2w[:3]), in_camera)
    scaled = c2w.clone()
    scaled[:3, :3] *= 2.5
    assert torch.allclose(rotate_envmap_to_camera(envmap, scaled), in_camera, atol=1e-5)


def test_camera_frame_rotation_matches_neural_gaffers_formula() -> None:
    """Neural Gaffer: world lookup direction = (A @ RT[:3, :3]).T @ d with RT world-to-camera, A as below."""
    c2w = _look_at_c2w(forward=(-0.3, 0.5, 0.2)).double()
    world_to_camera = torch.linalg.inv(c2w)[:3]
    axis_transform = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    theirs = (axis_transform @ world_to_camera[:, :3]).T
    assert torch.allclose(camera_frame_rotation(c2w), theirs, atol=1e-6)
    canonical = torch.tensor([[1.0, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0]])  # looks along +Y with +Z up
    assert torch.allclose(camera_frame_rotation(canonical), torch.eye(3), atol=1e-6)


def test_dominant_light_direction_of_a_single_bright_pixel() -> None:
    envmap = torch.full((32, 64, 3), 0.01)
    row, col = 9, 40
    envmap[row, col] = 1000.0
    expected = envmap_directions(32, 64)[row, col]
    assert torch.allclose(dominant_light_direction(envmap), expected, atol=1e-3)
    assert torch.equal(dominant_light_direction(torch.zeros(4, 8, 3)), torch.zeros(3))


@pytest.mark.parametrize("sampling", ["pixel-centres", "align-corners"])
def test_one_bright_texel_lands_where_the_camera_looks(sampling: str) -> None:
    """An 8 x 16 map, black but for texel (3, 8): its centre is at u = 8.5 / 16, v = 3.5 / 8, i.e. 11.25 degrees from
    world +X towards -Y and 11.25 degrees above the horizon. In a camera's frame map, the camera's forward direction is
    u = 0.25, v = 0.5 (+Y) and its right is u = 0.5 (+X):

    * a camera looking along +X (up +Z, so its right is -Y) sees the texel 11.25 degrees right of and above its
      forward direction: at u = 0.25 + 1/32, v = 0.5 - 1/16, the centre of pixel (3, 4), next to the front centre;
    * one looking along -X has it behind: u = 0.75 + 1/32, pixel (3, 12); one looking along +Y (the canonical camera)
      sees the world map unchanged: pixel (3, 8).

    With pixel-centred lookups the texel is copied exactly. Neural Gaffer's align-corners lookup reads the world map
    at ``x = (1 - phi / pi) / 2 * (W - 1)``, ``y = (theta - 1e-6) / pi * (H - 1)``: for the texel's own direction
    (phi = -pi / 16, theta = 3.5 pi / 8) x = 15 * 17 / 32 = 7.96875 and y = 3.0625 - 2.2e-6, so the texel keeps a
    weight (1 - 0.03125) * (1 - 0.0625 + 2.2e-6) = 0.90820.
    """
    from relight3d.geometry import look_at

    envmap = torch.zeros(8, 16, 3)
    envmap[3, 8] = torch.tensor([100.0, 50.0, 25.0])
    weight = 1.0 if sampling == "pixel-centres" else 0.96875 * (0.9375 + 1e-6 * 7 / math.pi)
    for eye, pixel in (((-3.0, 0.0, 0.0), (3, 4)), ((3.0, 0.0, 0.0), (3, 12)), ((0.0, -3.0, 0.0), (3, 8))):
        c2w = look_at(torch.tensor(eye))
        in_camera = rotate_envmap_to_camera(envmap, c2w, sampling=sampling)
        brightest = divmod(int(in_camera[..., 0].argmax()), 16)
        assert brightest == pixel, (eye, brightest)
        torch.testing.assert_close(in_camera[pixel], envmap[3, 8] * weight, rtol=1e-4, atol=0)
        if sampling == "pixel-centres":
            rest = in_camera.clone()
            rest[pixel] = 0.0
            assert float(rest.abs().max()) < 1e-3


def test_align_corners_sampling_is_half_a_pixel_off_pixel_centres() -> None:
    """On a smooth map the two lookups agree up to the half-pixel shift (and the seam, which theirs does not wrap)."""
    smooth = _smooth_map(64, 128)
    c2w = _look_at_c2w(forward=(0.4, 0.8, -0.45))
    ours = rotate_envmap_to_camera(smooth, c2w)
    theirs = rotate_envmap_to_camera(smooth, c2w, sampling="align-corners")
    assert theirs.device == ours.device and theirs.dtype == ours.dtype
    difference = (theirs - ours).abs()
    assert 1e-4 < float(difference.mean()) < 0.02 * float(smooth.mean()) and float(difference.max()) < 0.1
    with pytest.raises(ValueError, match="unknown sampling"):
        rotate_envmap_to_camera(smooth, c2w, sampling="nearest")


def test_skylibs_resize_equals_scikit_image_and_scipy() -> None:
    """skylibs' ``EnvironmentMap.resize(h)``: ``downscale_local_mean`` for whole factors, ``resize_local_mean``
    (grid mode) otherwise, ``scipy.ndimage.zoom(order=1)`` when enlarging."""
    transform = pytest.importorskip("skimage.transform")
    ndimage = pytest.importorskip("scipy.ndimage")
    envmap = (torch.rand(24, 48, 3, generator=torch.Generator().manual_seed(4)) ** 3 * 20).float()
    data = envmap.numpy()
    cases = [
        (12, transform.downscale_local_mean(data, (2, 2, 1))),
        (16, transform.resize_local_mean(data, (16, 32), grid_mode=True, preserve_range=True)),
        (40, ndimage.zoom(data, (40 / 24, 80 / 48, 1.0), order=1)),
    ]
    for height, expected in cases:
        got = resize_envmap(envmap, height, method="skylibs")
        assert got.shape == (height, 2 * height, 3) and got.dtype == torch.float32
        torch.testing.assert_close(got, torch.from_numpy(expected).float(), rtol=1e-5, atol=1e-5)
    # The pixel-area mean is not the solid-angle one: rows near the poles weigh less on the sphere.
    assert (resize_envmap(envmap, 12) - resize_envmap(envmap, 12, method="skylibs")).abs().max() > 1e-3
