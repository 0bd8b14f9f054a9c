"""Camera poses (look-at, orbits, convention changes) and the rays of a pinhole camera.

See :mod:`relight3d.geometry` for the conventions. Functions take and return torch tensors; numpy callers wrap them
(``look_at(torch.as_tensor(p)).numpy()``).
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

if TYPE_CHECKING:  # nerfstudio is heavy; only camera_rays needs it, and it receives the object
    from nerfstudio.cameras.cameras import Cameras

Vector = Union[Tensor, Sequence[float]]


def _vec(v: Vector, like: Tensor) -> Tensor:
    return torch.as_tensor(v, dtype=like.dtype, device=like.device)


def look_at(
    positions: Float[Tensor, "*n 3"], target: Vector = (0.0, 0.0, 0.0), up: Vector = (0.0, 0.0, 1.0)
) -> Float[Tensor, "*n 3 4"]:
    """Camera-to-world matrices (OpenGL camera: x right, y up, looking down -z) at ``positions`` looking at ``target``.

    ``up`` is the world up. A camera looking straight along ``up`` has no defined roll; it then takes world +Y as its
    up (or +X when ``up`` is itself along Y), so the result is always a proper rotation.

    Example:
        >>> c2w = look_at(torch.tensor([0.0, -4.0, 0.0]))
        >>> c2w[:, 2]  # the camera's +z points back at the viewer, away from the origin
        tensor([ 0., -1.,  0.])
    """
    positions = torch.as_tensor(positions)
    if not positions.is_floating_point():
        positions = positions.float()
    target_t, up_t = _vec(target, positions), F.normalize(_vec(up, positions), dim=0)
    forward = F.normalize(target_t - positions, dim=-1)
    up_b = up_t.expand_as(forward)
    parallel = torch.linalg.cross(forward, up_b).norm(dim=-1, keepdim=True) < 1e-6
    alt = _vec((0.0, 1.0, 0.0) if abs(float(up_t[1])) < 0.9 else (1.0, 0.0, 0.0), positions)
    up_b = torch.where(parallel, alt.expand_as(forward), up_b)
    right = F.normalize(torch.linalg.cross(forward, up_b), dim=-1)
    true_up = torch.linalg.cross(right, forward)
    return torch.stack([right, true_up, -forward, positions], dim=-1)


def orbit_positions(
    radius: Union[float, Tensor], elevation_deg: Union[float, Tensor], azimuth_deg: Union[float, Tensor]
) -> Float[Tensor, "*n 3"]:
    """Points on a sphere around the origin (Z up): azimuth 0 is -Y (Blender's front), counter-clockwise from above.

    The arguments broadcast against each other.
    """
    r, el, az = torch.broadcast_tensors(
        *(torch.as_tensor(x, dtype=torch.float32) for x in (radius, elevation_deg, azimuth_deg))
    )
    el, az = torch.deg2rad(el), torch.deg2rad(az)
    return r[..., None] * torch.stack(
        [torch.cos(el) * torch.sin(az), -torch.cos(el) * torch.cos(az), torch.sin(el)], dim=-1
    )


def pinhole_rays(
    camera_to_world: Float[Tensor, "3 4"], width: int, height: int, vertical_fov_deg: float
) -> Tuple[Float[Tensor, "hw 3"], Float[Tensor, "hw 3"]]:
    """Origins and unit directions through the pixel centres of a pinhole camera (square pixels, centred principal
    point, OpenGL camera), row-major from the top-left pixel."""
    c2w = camera_to_world.float()
    focal = 0.5 * height / math.tan(math.radians(vertical_fov_deg) / 2.0)
    xs = torch.arange(width, device=c2w.device, dtype=torch.float32) + 0.5
    ys = torch.arange(height, device=c2w.device, dtype=torch.float32) + 0.5
    v, u = torch.meshgrid(ys, xs, indexing="ij")
    dirs_cam = torch.stack([(u - width / 2) / focal, -(v - height / 2) / focal, -torch.ones_like(u)], -1)
    dirs = F.normalize(dirs_cam.reshape(-1, 3) @ c2w[:, :3].T, dim=-1)
    return c2w[:, 3].expand_as(dirs).contiguous(), dirs


def camera_rays(
    camera: "Cameras", scale: float = 1.0
) -> Tuple[Float[Tensor, "hw 3"], Float[Tensor, "hw 3"], Tuple[int, int]]:
    """Origins and directions (flattened, row-major) of one nerfstudio camera's pixels, and its ``(h, w)``.

    ``scale`` rescales the output resolution first (on a copy; the camera passed in is not changed).
    """
    cam = copy.deepcopy(camera)
    if scale != 1.0:
        cam.rescale_output_resolution(scale)
    bundle = cam.generate_rays(camera_indices=0, keep_shape=True)
    h, w = bundle.origins.shape[:2]
    return bundle.origins.reshape(-1, 3), bundle.directions.reshape(-1, 3), (h, w)


def to_homogeneous(pose: Float[Tensor, "*n 3 4"]) -> Float[Tensor, "*n 4 4"]:
    """Append the ``[0, 0, 0, 1]`` row."""
    bottom = torch.zeros(*pose.shape[:-2], 1, 4, dtype=pose.dtype, device=pose.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([pose[..., :3, :], bottom], dim=-2)


def opengl_to_opencv(camera_to_world: Float[Tensor, "*n 3 4"]) -> Float[Tensor, "*n 3 4"]:
    """The same camera with OpenCV's axes (x right, y down, looking down +z): the y and z columns negated.

    The change is its own inverse, so it also maps OpenCV camera-to-world matrices back to OpenGL.
    """
    flip = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=camera_to_world.dtype, device=camera_to_world.device)
    return camera_to_world * flip


def world_to_camera(camera_to_world: Float[Tensor, "*n 3 4"]) -> Float[Tensor, "*n 3 4"]:
    """The inverse rigid transform ``[R^T | -R^T t]`` of a camera-to-world matrix (rotation assumed orthonormal)."""
    rot, t = camera_to_world[..., :3, :3], camera_to_world[..., :3, 3:]
    rot_t = rot.transpose(-1, -2)
    return torch.cat([rot_t, -rot_t @ t], dim=-1)
