"""Equirectangular environment maps: the direction convention, sampling, resizing and rotation.

Convention (identical to Blender's world *Environment Texture* node with its default mapping, so a map that lights a
Cycles scene lights relight3d's shaders the same way; ``tests/lighting/test_lighting_blender.py`` checks this against
Cycles renders):

* the world is right-handed with **+Z up**; the map is ``[H, W, 3]`` with row 0 at the **top** (+Z, the zenith);
* a direction ``d = (x, y, z)`` has azimuth ``phi = atan2(y, x)`` and polar angle ``theta = acos(z)``;
* ``u = 0.5 - phi / (2 pi)`` (columns, left to right) and ``v = theta / pi`` (rows, top to bottom), both in [0, 1];
* so the **centre column** (u = 0.5) looks along **+X**, u = 0.25 along +Y, u = 0.75 along -Y and the left/right
  edge (u = 0 / 1) along -X: azimuth grows to the *left* in the image, which is how the sky looks from inside;
* pixel ``(i, j)`` covers ``u in [j, j+1] / W`` and ``v in [i, i+1] / H``; its centre is
  ``((j + .5) / W, (i + .5) / H)``.

Blender stores images bottom row first, so its own texture coordinate is ``v_blender = 1 - v = 0.5 + asin(z) / pi``;
both describe the same pixels.

Example:
    >>> d = torch.tensor([1.0, 0.0, 0.0])
    >>> directions_to_uv(d).tolist()
    [0.5, 0.5]
"""

from __future__ import annotations

import math
from typing import Literal, Optional, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

# Rec. 709 / sRGB luminance weights of linear RGB.
LUMINANCE_WEIGHTS = (0.2126, 0.7152, 0.0722)

# The matrix M whose columns are the axes of the camera-frame map (x = right, y = forward, z = up) written in the
# OpenGL/Blender camera frame (x = right, y = up, z = backward; the camera looks down -Z): right -> (1, 0, 0),
# forward -> (0, 0, -1), up -> (0, 1, 0).
_MAP_AXES_IN_CAMERA = ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, -1.0, 0.0))

Device = Optional[Union[str, torch.device]]
"""A torch device or its name (None: the default device)."""

ResizeMethod = Literal["sphere", "skylibs"]
"""How :func:`resize_envmap` resamples: on the sphere, or as skylibs' ``EnvironmentMap.resize`` does on the image."""
CameraSampling = Literal["pixel-centres", "align-corners"]
"""How :func:`rotate_envmap_to_camera` looks the world map up: relight3d's pixel-centred bilinear lookups, or Neural
Gaffer's ``grid_sample(align_corners=True)`` lookups."""


def uv_to_directions(uv: Float[Tensor, "*bs 2"]) -> Float[Tensor, "*bs 3"]:
    """Unit world directions of equirectangular coordinates ``(u, v)`` (v = 0 at the top row).

    Example:
        >>> [round(v, 6) + 0.0 for v in uv_to_directions(torch.tensor([0.25, 0.5])).tolist()]
        [0.0, 1.0, 0.0]
    """
    phi = math.pi * (1.0 - 2.0 * uv[..., 0])
    theta = math.pi * uv[..., 1]
    sin_theta = torch.sin(theta)
    return torch.stack([sin_theta * torch.cos(phi), sin_theta * torch.sin(phi), torch.cos(theta)], dim=-1)


def directions_to_uv(directions: Float[Tensor, "*bs 3"]) -> Float[Tensor, "*bs 2"]:
    """Equirectangular ``(u, v)`` in [0, 1] of world directions (need not be unit length); v = 0 at the top row.

    ``u = 0.5 - atan2(y, x) / (2 pi)``, ``v = acos(z / |d|) / pi``. Finite gradients everywhere, poles included
    (there ``u`` is set to 0.5 and its gradient to zero).

    Example:
        >>> directions_to_uv(torch.tensor([0.0, 0.0, 1.0])).tolist()
        [0.5, 0.0]
    """
    x, y, z = directions.unbind(-1)
    xy_sq = x * x + y * y
    at_pole = xy_sq < 1e-24
    x_safe = torch.where(at_pole, torch.ones_like(x), x)
    y_safe = torch.where(at_pole, torch.zeros_like(y), y)
    u = 0.5 - torch.atan2(y_safe, x_safe) / (2.0 * math.pi)
    rho = torch.sqrt(torch.where(at_pole, torch.ones_like(xy_sq), xy_sq))
    rho = torch.where(at_pole, torch.zeros_like(rho), rho)
    v = torch.atan2(rho, z) / math.pi
    return torch.stack([u, v], dim=-1)


def envmap_directions(
    height: int, width: int, device: Device = None, dtype: torch.dtype = torch.float32
) -> Float[Tensor, "h w 3"]:
    """Unit world directions at the pixel centres of an ``height x width`` equirectangular map.

    Example:
        >>> [round(v, 4) for v in envmap_directions(2, 4)[0, 0].tolist()]  # top-left pixel: up, towards -X/+Y
        [-0.5, 0.5, 0.7071]
    """
    u = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
    v = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
    uv = torch.stack(torch.meshgrid(u, v, indexing="xy"), dim=-1)
    return uv_to_directions(uv)


def envmap_solid_angles(
    height: int, width: int, device: Device = None, dtype: torch.dtype = torch.float32
) -> Float[Tensor, "h w"]:
    """Exact solid angle (steradians) of every pixel of an equirectangular map; they sum to 4 pi.

    Row ``i`` spans polar angles ``[i, i+1] * pi / H``, so a pixel covers ``(2 pi / W) (cos theta_i - cos theta_i+1)``.

    Example:
        >>> round(float(envmap_solid_angles(8, 16).sum()), 5) == round(4 * math.pi, 5)
        True
    """
    edges = torch.arange(height + 1, device=device, dtype=torch.float64) * (math.pi / height)
    band = (torch.cos(edges[:-1]) - torch.cos(edges[1:])) * (2.0 * math.pi / width)
    return band.to(dtype)[:, None].expand(height, width).contiguous()


def sample_envmap(envmap: Float[Tensor, "h w c"], directions: Float[Tensor, "*bs 3"]) -> Float[Tensor, "*bs c"]:
    """Bilinear lookup of an equirectangular map in world directions; wraps around in u, clamps at the poles.

    Pixel values sit at pixel centres (as in Cycles' linear image interpolation). Differentiable in ``envmap`` and
    ``directions``.

    Example:
        >>> env = torch.zeros(4, 8, 3); env[1:3, 4] = 1.0  # a bright column just right of the centre (+X)
        >>> sample_envmap(env, torch.tensor([[1.0, 0.0, 0.0]])).tolist()
        [[0.5, 0.5, 0.5]]
    """
    height, width, channels = envmap.shape
    uv = directions_to_uv(directions.to(envmap.dtype))
    x = uv[..., 0] * width - 0.5
    y = uv[..., 1] * height - 0.5
    x0 = torch.floor(x)
    y0 = torch.floor(y)
    fx = (x - x0)[..., None]
    fy = (y - y0)[..., None]
    x0 = x0.long()
    y0 = y0.long()
    x_left = torch.remainder(x0, width)
    x_right = torch.remainder(x0 + 1, width)
    y_top = y0.clamp(0, height - 1)
    y_bottom = (y0 + 1).clamp(0, height - 1)
    flat = envmap.reshape(height * width, channels)

    def gather(rows: Tensor, cols: Tensor) -> Tensor:
        index = (rows * width + cols).reshape(-1)
        return flat.index_select(0, index).reshape(*rows.shape, channels)

    top = gather(y_top, x_left) * (1.0 - fx) + gather(y_top, x_right) * fx
    bottom = gather(y_bottom, x_left) * (1.0 - fx) + gather(y_bottom, x_right) * fx
    return top * (1.0 - fy) + bottom * fy


def resize_envmap(
    envmap: Float[Tensor, "h w c"], height: int, width: Optional[int] = None, method: ResizeMethod = "sphere"
) -> Float[Tensor, "h2 w2 c"]:
    """Resample a map to ``height x width`` (default ``width = 2 * height``).

    ``method="sphere"`` (relight3d's): shrinking averages the source pixels inside each target pixel weighted by
    their solid angle (so the total power is kept); enlarging samples bilinearly at the target pixel centres,
    wrapping around in u.

    ``method="skylibs"``: the map is treated as a plain image, as skylibs' ``EnvironmentMap.resize(height)`` does
    (Neural Gaffer's ``resize_environment_map.py`` made its 256 x 512 maps with it): when ``height`` is below the
    source height, each target pixel is the pixel-area mean of the source over its footprint (scikit-image's
    ``resize_local_mean`` with ``grid_mode=True``, which equals ``downscale_local_mean``'s block mean for whole
    factors); otherwise linear interpolation with the corner pixels aligned (``scipy.ndimage.zoom(order=1)``).
    Equal to skylibs up to float32 rounding (computed in float64 here).

    Example:
        >>> resize_envmap(torch.ones(16, 32, 3), 4).shape
        torch.Size([4, 8, 3])
    """
    width = 2 * height if width is None else width
    src_h, src_w, _ = envmap.shape
    if (height, width) == (src_h, src_w):
        return envmap
    if method == "skylibs":
        return _resize_like_skylibs(envmap, height, width)
    if method != "sphere":
        raise ValueError(f"unknown resize method {method!r} (sphere or skylibs)")
    if height <= src_h and width <= src_w:
        weight = envmap_solid_angles(src_h, src_w, device=envmap.device, dtype=envmap.dtype)[None, None]
        weighted = envmap.permute(2, 0, 1)[None] * weight
        num = F.adaptive_avg_pool2d(weighted, (height, width))
        den = F.adaptive_avg_pool2d(weight, (height, width))
        return (num / den)[0].permute(1, 2, 0).contiguous()
    directions = envmap_directions(height, width, device=envmap.device, dtype=envmap.dtype)
    return sample_envmap(envmap, directions)


def _pixel_area_weights(old: int, new: int, device: Device) -> Tensor:
    """``[new, old]`` weights of the pixel-area mean: the overlap of target pixel ``i`` (``[i, i+1] * old / new``)
    with source pixel ``j`` (``[j, j+1]``), each row normalised to sum to 1."""
    old_breaks = torch.arange(old + 1, dtype=torch.float64, device=device)
    new_breaks = torch.linspace(0.0, old, new + 1, dtype=torch.float64, device=device)
    upper = torch.minimum(new_breaks[1:, None], old_breaks[None, 1:])
    lower = torch.maximum(new_breaks[:-1, None], old_breaks[None, :-1])
    weights = (upper - lower).clamp_min(0.0)
    return weights / weights.sum(dim=1, keepdim=True)


def _resize_like_skylibs(envmap: Tensor, height: int, width: int) -> Tensor:
    src_h, src_w, _ = envmap.shape
    image = envmap.to(torch.float64)
    if height < src_h:
        rows = _pixel_area_weights(src_h, height, envmap.device)
        cols = _pixel_area_weights(src_w, width, envmap.device)
        out = torch.einsum("ij,jkc,lk->ilc", rows, image, cols)
    else:
        out = F.interpolate(image.permute(2, 0, 1)[None], size=(height, width), mode="bilinear", align_corners=True)
        out = out[0].permute(1, 2, 0)
    return out.to(envmap.dtype).contiguous()


def rotate_envmap(envmap: Float[Tensor, "h w c"], rotation: Float[Tensor, "3 3"]) -> Float[Tensor, "h w c"]:
    """Resample a map so that ``out(d) = envmap(rotation @ d)`` (bilinear, same size).

    With ``rotation`` the camera-to-world rotation of some frame, ``out`` is the map expressed in that frame; with
    ``rotation = R.T`` the map's content is turned by ``R`` (a light at direction ``l`` moves to ``R @ l``).

    Example:
        >>> env = torch.rand(8, 16, 3)
        >>> torch.allclose(rotate_envmap(env, torch.eye(3)), env, atol=1e-5)
        True
    """
    height, width, _ = envmap.shape
    directions = envmap_directions(height, width, device=envmap.device, dtype=envmap.dtype)
    source = directions @ rotation.to(envmap).transpose(0, 1)
    return sample_envmap(envmap, source)


def rotate_envmap_about_up(
    envmap: Float[Tensor, "h w c"], angle_radians: Union[float, Tensor]
) -> Float[Tensor, "h w c"]:
    """Turn the map's content about the world up axis (+Z); positive = counter-clockwise seen from above.

    A light at azimuth ``phi`` moves to ``phi + angle`` (equal to ``rotate_envmap(envmap, Rz(-angle))``). This is a
    shift of the columns by ``angle / (2 pi) * W`` pixels, exact (no blur) when that is a whole number and linear in
    u otherwise; rows are never mixed. Differentiable in ``envmap`` and, given as a tensor, in ``angle_radians``.

    Neural Gaffer's rotating-light videos (``scripts/generate_bg_and_rotate_envir_map.py``) look the map up at
    ``Rz(2 pi t / T) @ d``, i.e. turn the content *clockwise*: their frame ``t`` of ``T`` is
    ``rotate_envmap_about_up(envmap, -2 * pi * t / T)`` here.

    Example:
        >>> env = torch.rand(4, 8, 3)
        >>> torch.equal(rotate_envmap_about_up(env, math.pi / 2), torch.roll(env, shifts=-2, dims=1))
        True
    """
    width = envmap.shape[1]
    shift = angle_radians / (2.0 * math.pi) * width
    shift_value = float(shift.detach()) if isinstance(shift, Tensor) else float(shift)
    nearest = round(shift_value)
    whole = nearest if abs(shift_value - nearest) < 1e-6 else math.floor(shift_value)
    frac = shift - whole
    first = torch.roll(envmap, shifts=-(whole % width), dims=1)
    if not isinstance(frac, Tensor) and abs(frac) < 1e-6:
        return first
    second = torch.roll(envmap, shifts=-((whole + 1) % width), dims=1)
    return first * (1.0 - frac) + second * frac


def rotation_about_up(angle_radians: float, dtype: torch.dtype = torch.float32) -> Float[Tensor, "3 3"]:
    """The 3x3 rotation by ``angle_radians`` about +Z (counter-clockwise seen from above)."""
    c, s = math.cos(angle_radians), math.sin(angle_radians)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)


def camera_frame_rotation(camera_to_world: Float[Tensor, "3 4"] | Float[Tensor, "4 4"]) -> Float[Tensor, "3 3"]:
    """World directions of the camera-frame map's axes: ``rotate_envmap(env, camera_frame_rotation(c2w))``.

    ``camera_to_world`` uses the OpenGL/Blender/nerfstudio camera convention (x right, y up, looking down -Z);
    any scale in its rotation block is removed (nearest rotation). The camera-frame map has **x = camera right,
    y = camera forward (viewing direction), z = camera up**, so the returned matrix is ``R_c2w @ M`` with ``M``
    mapping those axes to (x right, y up, z backward). Multiply its transpose with world vectors (e.g. normals) to
    express them in the same frame.
    """
    rotation = camera_to_world[:3, :3].to(torch.float64)
    u, _, vh = torch.linalg.svd(rotation)
    rotation = u @ vh
    if torch.det(rotation) < 0:
        raise ValueError("camera_to_world has a reflection in its rotation block (determinant < 0)")
    axes = torch.tensor(_MAP_AXES_IN_CAMERA, dtype=torch.float64, device=rotation.device)
    dtype = camera_to_world.dtype if camera_to_world.is_floating_point() else torch.float32
    return (rotation @ axes).to(dtype)


def rotate_envmap_to_camera(
    envmap: Float[Tensor, "h w c"],
    camera_to_world: Float[Tensor, "3 4"] | Float[Tensor, "4 4"],
    sampling: CameraSampling = "pixel-centres",
) -> Float[Tensor, "h w c"]:
    """The map expressed in a camera's frame, the way Neural Gaffer conditions its diffusion model on lighting.

    Convention: the output is an ordinary equirectangular map (same size, same u/v rules as the world map) whose
    "world" is the camera: its **+Z (top row) is the camera's up**, its **+Y (u = 0.25) is the direction the
    camera looks in**, and its **+X (centre column, u = 0.5) is the camera's right**; so what is behind the
    camera lands at u = 0.75 and the camera's left at the left/right edge. In other words it is the map that a camera
    looking along world +Y with +Z up would see unchanged, and for any other camera the map is turned with it.
    ``camera_to_world`` is the usual OpenGL/Blender/nerfstudio pose (x right, y up, looking down -Z).

    This reproduces Neural Gaffer's preprocessing (``rotate_and_preprcess_envir_map`` in its dataset code): it takes
    Blender world-to-camera ``RT`` and looks the world map up at ``(A @ RT[:3, :3]).T @ d`` with
    ``A = [[1, 0, 0], [0, 0, -1], [0, 1, 0]]``, which is ``R_c2w @ A.T @ d`` and ``A.T`` is the ``M`` of
    :func:`camera_frame_rotation`.

    ``sampling`` says how the world map is read at those directions:

    * ``"pixel-centres"`` (relight3d's): bilinear between pixel centres, wrapping around in u
      (:func:`sample_envmap`, the convention checked against Cycles), on the map's device.
    * ``"align-corners"``: Neural Gaffer's lookup bit for bit, on the CPU (the result is moved to the map's device):
      directions from ``torch.linspace`` angle grids (float32), rotated in float64 with the pose's rotation block as
      it is (no re-orthonormalisation), ``theta = acos(z) - 1e-6`` and ``phi = atan2(y, x)`` mapped to
      ``(-phi / pi, 2 theta / pi - 1)`` and read with ``F.grid_sample(align_corners=True)``: pixel centres sit at
      ``u = j / (W - 1)`` instead of ``(j + 0.5) / W`` (up to half a pixel away) and nothing wraps at the seam.

    Example:
        >>> env = torch.rand(8, 16, 3)
        >>> looking_along_y = torch.tensor([[1.0, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0]])  # c2w, camera at origin
        >>> torch.allclose(rotate_envmap_to_camera(env, looking_along_y), env, atol=1e-5)
        True
    """
    if sampling == "align-corners":
        return _rotate_to_camera_align_corners(envmap, camera_to_world)
    if sampling != "pixel-centres":
        raise ValueError(f"unknown sampling {sampling!r} (pixel-centres or align-corners)")
    return rotate_envmap(envmap, camera_frame_rotation(camera_to_world).to(envmap))


def _rotate_to_camera_align_corners(envmap: Tensor, camera_to_world: Tensor) -> Tensor:
    """Neural Gaffer's ``generate_envir_map_dir`` + ``get_light``, with the same torch operations in the same dtypes."""
    height, width, channels = envmap.shape
    lat, lng = math.pi / height, 2 * math.pi / width
    elevation, azimuth = torch.meshgrid(
        torch.linspace(math.pi / 2 - 0.5 * lat, -math.pi / 2 + 0.5 * lat, height, dtype=torch.float32),
        torch.linspace(math.pi - 0.5 * lng, -math.pi + 0.5 * lng, width, dtype=torch.float32),
        indexing="ij",
    )
    cos_el = torch.cos(elevation)
    local = torch.stack([torch.cos(azimuth) * cos_el, torch.sin(azimuth) * cos_el, torch.sin(elevation)], dim=-1)
    world_to_camera = camera_to_world[:3, :3].detach().to("cpu", torch.float64).T
    lookup = torch.tensor(_MAP_AXES_IN_CAMERA, dtype=torch.float64).T @ world_to_camera  # their A @ RT[:3, :3]
    world = (local.view(-1, 3).double() @ lookup).clip(-1, 1)
    theta = torch.arccos(world[:, 2]) - 1e-6
    phi = torch.atan2(world[:, 1], world[:, 0])
    query_y = ((theta / math.pi) * 2 - 1).clip(-1, 1)
    query_x = (-phi / math.pi).clip(-1, 1)
    grid = torch.stack((query_x, query_y), dim=-1)[None, None].float()
    source = envmap.detach().to("cpu", torch.float32).permute(2, 0, 1)[None]
    sampled = F.grid_sample(source, grid, align_corners=True)  # bilinear, zeros padding (never reached)
    return sampled[0, :, 0].T.reshape(height, width, channels).to(envmap.device, envmap.dtype)


def dominant_light_direction(envmap: Float[Tensor, "h w 3"]) -> Float[Tensor, "3"]:
    """Unit vector of the luminance-weighted mean direction ``sum Y(d) d dOmega`` (zero vector for a black map).

    This is the direction of the first-order (l = 1) spherical-harmonic term: where the light comes from on average.
    """
    height, width, _ = envmap.shape
    weights = torch.tensor(LUMINANCE_WEIGHTS, dtype=envmap.dtype, device=envmap.device)
    luminance = envmap @ weights
    solid_angles = envmap_solid_angles(height, width, device=envmap.device, dtype=envmap.dtype)
    directions = envmap_directions(height, width, device=envmap.device, dtype=envmap.dtype)
    mean = ((luminance * solid_angles)[..., None] * directions).sum(dim=(0, 1))
    norm = mean.norm()
    return mean / norm if norm > 0 else mean
