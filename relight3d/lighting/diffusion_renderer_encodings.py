"""DiffusionRenderer's lighting condition: an environment map in a camera's frame as LDR, log-HDR and directions.

NVIDIA's DiffusionRenderer forward renderer (Cosmos: ``nv-tlabs/cosmos1-diffusion-renderer``, the same code in
``nv-tlabs/cosmos-transfer1-diffusion-renderer``; academic SVD version: ``nv-tlabs/diffusion-renderer``) takes three
images of the lighting, all at the video's resolution (Cosmos: ``--height 704 --width 1280`` by default; SVD:
``env_resolution: [512, 512]`` in ``configs/xrgb_inference.yaml``). They are made by ``process_environment_map`` and
``hdr_mapping`` in ``cosmos_predict1/diffusion/inference/diffusion_renderer_utils/utils_env_proj.py`` (SVD:
``utils/utils_env_proj.py``) and ``envmap_vec`` / ``latlong_vec`` / ``reinhard`` / ``rgb2srgb`` in
``.../diffusion_renderer_utils/rendering_utils.py`` (SVD: ``src/data/rendering_utils.py``):

* ``env_ldr`` (:func:`ldr_encoding`): ``srgb(clip(reinhard(E), 0, 1))`` with
  ``reinhard(x) = x (1 + x / 16^2) / (1 + x)`` (white point 16: radiance 16 maps to 1), per channel, and the sRGB
  curve (``rgb2srgb``).
* ``env_log`` (:func:`log_hdr_encoding`): ``clip(srgb(log1p(E) / log1p(10000)), 0, 1)``: a *fixed* normalisation
  (``log_scale=10000``), not the per-map maximum of Neural Gaffer (:func:`relight3d.lighting.encodings.hdr_encoding`).
* ``env_nrm`` (:func:`direction_encoding`): the unit direction of every texel in the camera's frame
  (``envmap_vec``), in OpenGL camera axes (x right, y up, z backward: the camera looks down -z). Texel ``(i, j)`` of an
  ``H x W`` map has ``theta_i = pi * linspace(1/H, 1 - 1/H, H)[i]`` (note: not the pixel centres ``(i + .5) / H``),
  ``phi_j = pi * ((2 j + 1) / W - 1)`` and direction ``(sin theta sin phi, cos theta, sin theta cos phi)``: row 0 is
  camera up, the centre column is +z (behind the camera), the column at 3/4 of the width is the camera's right (+x)
  and the left/right edge is the viewing direction (-z).

How each image enters the model: Cosmos' ``inference_forward_renderer.py`` passes ``env_ldr * 2 - 1``,
``env_log * 2 - 1`` and ``env_nrm`` as it is (unit vectors in [-1, 1]), i.e. all three are ``2 x - 1`` of the [0, 1]
images returned here (:func:`to_model_range`); the SVD ``inference_svd_xrgb.py`` passes the [0, 1] images
(``envmap_vec * 0.5 + 0.5`` for the directions).

The map in the camera's frame (:func:`camera_frame_envmap`): DiffusionRenderer looks its cube map up at
``R_c2w @ env_nrm`` (``process_projected_envmap``, with ``c2w`` from a transforms.json pose, i.e. an OpenGL
camera-to-world), so texel ``(i, j)`` holds the radiance arriving from camera direction ``env_nrm[i, j]``. Here that
is ``envmap(R_c2w @ env_nrm[i, j])``, read from relight3d's world map (Z up, Blender's convention; see
:mod:`relight3d.lighting.equirect`) with :func:`~relight3d.lighting.equirect.sample_envmap`, the camera's rotation
taken from :func:`~relight3d.lighting.equirect.camera_frame_rotation`. What differs from their code, on purpose:
they resample the map into a 512 x 512 cube map first (``latlong_to_cubemap``) and read that with nvdiffrast; here
the equirectangular map is read directly (bilinear, pixel centres, wrapping in u). No mip-mapping in either: shrink a
2k map with :func:`~relight3d.lighting.equirect.resize_envmap` first if aliasing matters.

Handedness (``convention``). With the camera ``c2w`` of :data:`FIXED_POSE_CAMERA_TO_WORLD` (looking along world -X,
+Z up), ``convention="svd"`` gives exactly what the SVD code gives for its fixed pose (``env_flip=False``,
``env_rot=180``): the file's map mirrored left-right. ``convention="cosmos"`` (the default) mirrors the world map
left-right (``u -> 1 - u``) before the lookup, which is what Cosmos' ``load_and_preprocess_hdr`` does with its default
``env_flip=True`` (their FIXME: "env_flip=True and env_rot=180 is considered as loading the original environment
map"): for that camera the Cosmos images show the file's map unmirrored. Which of the two matches how the models
were trained is not in public code (the training data code is not released); each default is what its own inference
code does. More generally, a DiffusionRenderer pose ``R`` (a rotation in its Y-up world, as ``rotate_y`` for
``--rotate_light``) is the relight3d camera ``FIXED_POSE_CAMERA_TO_WORLD[:, :3] @ R``: that correspondence reproduced
an independent numpy re-implementation of ``process_environment_map`` (direct lat-long lookup in place of the cube
map) to 1e-15 for both conventions. ``tests/lighting/test_diffusion_renderer_encodings.py`` checks the fixed pose.

Example:
    >>> env = torch.ones(16, 32, 3)
    >>> lighting = encode_envmap_for_diffusion_renderer(env, FIXED_POSE_CAMERA_TO_WORLD, 8, 16)
    >>> lighting.ldr.shape, round(float(lighting.log_hdr[0, 0, 0]), 4)
    (torch.Size([8, 16, 3]), 0.304)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from relight3d.lighting.encodings import linear_to_srgb, srgb_to_linear
from relight3d.lighting.equirect import Device, camera_frame_rotation, sample_envmap

REINHARD_WHITE = 16.0
"""DiffusionRenderer's ``reinhard(x, max_point=16)``: the radiance that maps to 1 in the LDR image."""

LOG_HDR_SCALE = 10000.0
"""DiffusionRenderer's ``log_scale``: the log-HDR image is ``log1p(E) / log1p(LOG_HDR_SCALE)`` before sRGB."""

HALF_FLOAT_MAX = 65504.0
"""DiffusionRenderer clamps loaded maps to [0, 65504] (NaN to 0, +inf to 65504) in ``load_and_preprocess_hdr``."""

DEFAULT_HEIGHT = 704
"""Cosmos DiffusionRenderer's default video (and lighting image) height, ``--height`` in ``inference_utils.py``."""

DEFAULT_WIDTH = 1280
"""Cosmos DiffusionRenderer's default video (and lighting image) width, ``--width``."""

FIXED_POSE_CAMERA_TO_WORLD = torch.tensor([[0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
"""The relight3d camera (OpenGL c2w, world Z up) that sees a map as DiffusionRenderer's fixed-pose inference
(``fixed_pose=True``, identity pose) does: camera right = world +Y, up = world +Z, looking along world -X (the
left/right edge of the file's map; the centre column, world +X, is behind the camera)."""

Convention = Literal["cosmos", "svd"]
"""Whether the world map is mirrored left-right before the lookup (Cosmos' ``env_flip=True``) or not (SVD's)."""


@dataclass
class DiffusionRendererLighting:
    """The three lighting images of one view, each ``[h, w, 3]`` in [0, 1] (``2 x - 1`` is what Cosmos feeds)."""

    ldr: Float[Tensor, "h w 3"]
    """``env_ldr``: Reinhard (white 16) tone-mapped, clipped, sRGB-encoded radiance."""
    log_hdr: Float[Tensor, "h w 3"]
    """``env_log``: sRGB of ``log1p(E) / log1p(10000)``, clipped."""
    directions: Float[Tensor, "h w 3"]
    """``env_nrm``: ``0.5 d + 0.5`` of each texel's unit direction ``d`` in OpenGL camera axes."""


def _nonnegative(radiance: Tensor) -> Tensor:
    return radiance.nan_to_num(nan=0.0, posinf=HALF_FLOAT_MAX, neginf=0.0).clamp(0.0, HALF_FLOAT_MAX)


def reinhard_tonemap(radiance: Float[Tensor, "*bs"]) -> Float[Tensor, "*bs"]:
    """DiffusionRenderer's per-channel Reinhard curve ``x (1 + x / 16^2) / (1 + x)`` (1 at x = 16), not clipped.

    Example:
        >>> reinhard_tonemap(torch.tensor([0.0, 1.0, 16.0])).tolist()
        [0.0, 0.501953125, 1.0]
    """
    return radiance * (1.0 + radiance / REINHARD_WHITE**2) / (1.0 + radiance)


def ldr_encoding(radiance: Float[Tensor, "*bs 3"]) -> Float[Tensor, "*bs 3"]:
    """``env_ldr``: ``srgb(clip(reinhard(E), 0, 1))`` of linear radiance (negatives and NaN read as 0).

    Example:
        >>> [round(v, 4) for v in ldr_encoding(torch.tensor([0.0, 1.0, 100.0])).tolist()]
        [0.0, 0.7366, 1.0]
    """
    return linear_to_srgb(reinhard_tonemap(_nonnegative(radiance)).clamp(0.0, 1.0))


def ldr_to_radiance(ldr: Float[Tensor, "*bs 3"]) -> Float[Tensor, "*bs 3"]:
    """Inverse of :func:`ldr_encoding` on [0, 1]: radiance 0..16 (anything >= 16 encodes to 1 and decodes to 16).

    Solves ``x^2 / 256 + (1 - y) x - y = 0`` for the linear tone-mapped value ``y``.
    """
    y = srgb_to_linear(ldr.clamp(0.0, 1.0))
    half_b = 0.5 * REINHARD_WHITE**2 * (1.0 - y)
    return torch.sqrt(half_b * half_b + REINHARD_WHITE**2 * y) - half_b


def log_hdr_encoding(radiance: Float[Tensor, "*bs 3"]) -> Float[Tensor, "*bs 3"]:
    """``env_log``: ``clip(srgb(log1p(E) / log1p(10000)), 0, 1)`` (negatives and NaN read as 0).

    Example:
        >>> [round(v, 4) for v in log_hdr_encoding(torch.tensor([0.0, 1.0, 1e4])).tolist()]
        [0.0, 0.304, 1.0]
    """
    return linear_to_srgb(torch.log1p(_nonnegative(radiance)) / math.log1p(LOG_HDR_SCALE)).clamp(0.0, 1.0)


def log_hdr_to_radiance(log_hdr: Float[Tensor, "*bs 3"]) -> Float[Tensor, "*bs 3"]:
    """Inverse of :func:`log_hdr_encoding` on [0, 1]: ``expm1(linear(y) * log1p(10000))`` (radiance 0..10000)."""
    return torch.expm1(srgb_to_linear(log_hdr.clamp(0.0, 1.0)) * math.log1p(LOG_HDR_SCALE))


def texel_directions(
    height: int, width: int, device: Device = None, dtype: torch.dtype = torch.float32
) -> Float[Tensor, "h w 3"]:
    """DiffusionRenderer's ``envmap_vec``: unit directions of the camera-frame map's texels, OpenGL camera axes.

    Row angles ``theta = pi * linspace(1/H, 1 - 1/H, H)`` (their grid, not pixel centres), column angles
    ``phi = pi * ((2 j + 1) / W - 1)``; direction ``(sin theta sin phi, cos theta, sin theta cos phi)``.

    Example:
        >>> [round(v, 4) + 0.0 for v in texel_directions(3, 4)[1, 2].tolist()]  # middle row, right of centre
        [0.7071, 0.0, 0.7071]
    """
    theta = math.pi * torch.linspace(1.0 / height, 1.0 - 1.0 / height, height, device=device, dtype=torch.float64)
    phi = math.pi * torch.linspace(-1.0 + 1.0 / width, 1.0 - 1.0 / width, width, device=device, dtype=torch.float64)
    theta, phi = torch.meshgrid(theta, phi, indexing="ij")
    sin_theta = torch.sin(theta)
    directions = torch.stack([sin_theta * torch.sin(phi), torch.cos(theta), sin_theta * torch.cos(phi)], dim=-1)
    return directions.to(dtype)


def direction_encoding(
    height: int, width: int, device: Device = None, dtype: torch.dtype = torch.float32
) -> Float[Tensor, "h w 3"]:
    """``env_nrm`` in [0, 1]: ``0.5 * texel_directions + 0.5`` (the same for every view and every map).

    Example:
        >>> [round(v, 4) for v in direction_encoding(3, 4)[0, 0].tolist()]  # top-left: up, forward and left
        [0.1938, 0.75, 0.1938]
    """
    return texel_directions(height, width, device=device, dtype=dtype) * 0.5 + 0.5


# The inverse of camera_frame_rotation's M (a rotation, so its transpose): its columns are the OpenGL camera axes
# (x right, y up, z backward) written in the map frame (x right, y forward, z up): (1, 0, 0), (0, 0, 1), (0, -1, 0).
_OPENGL_CAMERA_IN_MAP_FRAME = ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0), (0.0, 1.0, 0.0))


def camera_frame_envmap(
    envmap: Float[Tensor, "H W 3"],
    camera_to_world: Float[Tensor, "3 4"] | Float[Tensor, "4 4"],
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    convention: Convention = "cosmos",
) -> Float[Tensor, "h w 3"]:
    """Linear radiance of the world map seen from a camera, on DiffusionRenderer's ``height x width`` texel grid.

    Texel ``(i, j)`` is ``envmap(R_c2w @ texel_directions[i, j])`` (for ``convention="cosmos"`` of the map mirrored
    left-right first), with NaN / inf / negatives cleaned and values clamped to 65504 as DiffusionRenderer does.
    ``camera_to_world`` is an OpenGL/Blender/nerfstudio pose (x right, y up, looking down -Z; world Z up); scale in its
    rotation block is removed. Differentiable in ``envmap``.

    Example:
        >>> env = torch.rand(16, 32, 3)
        >>> camera_frame_envmap(env, FIXED_POSE_CAMERA_TO_WORLD, 8, 16).shape
        torch.Size([8, 16, 3])
    """
    if envmap.dim() != 3 or envmap.shape[-1] != 3:
        raise ValueError(f"envmap must be [H, W, 3], got shape {tuple(envmap.shape)}")
    if convention not in ("cosmos", "svd"):
        raise ValueError(f"unknown convention {convention!r} (cosmos or svd)")
    world = torch.flip(envmap, dims=[1]) if convention == "cosmos" else envmap
    map_frame = camera_frame_rotation(camera_to_world.detach().cpu()).to(torch.float64)
    axes = torch.tensor(_OPENGL_CAMERA_IN_MAP_FRAME, dtype=torch.float64)
    rotation = (map_frame @ axes).to(device=envmap.device, dtype=envmap.dtype)  # R_c2w M M^T = R_c2w, orthonormal
    directions = texel_directions(height, width, device=envmap.device, dtype=envmap.dtype)
    return _nonnegative(sample_envmap(world, directions @ rotation.T))


def encode_envmap_for_diffusion_renderer(
    envmap: Float[Tensor, "H W 3"],
    camera_to_world: Float[Tensor, "3 4"] | Float[Tensor, "4 4"],
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    convention: Convention = "cosmos",
) -> DiffusionRendererLighting:
    """The three lighting images DiffusionRenderer's forward renderer takes for one view, in [0, 1].

    Args:
        envmap: linear world radiance, relight3d's equirectangular convention (Z up, Blender's).
        camera_to_world: the view's OpenGL camera-to-world (3x4 or 4x4).
        height, width: the lighting images' size: the video's (Cosmos default 704 x 1280; SVD 512 x 512).
        convention: ``"cosmos"`` mirrors the world map left-right first as Cosmos' loader does; ``"svd"`` does not
            (see the module docstring).

    Example:
        >>> lighting = encode_envmap_for_diffusion_renderer(torch.ones(8, 16, 3), torch.eye(4), 4, 8)
        >>> round(float(lighting.ldr.mean()), 4)
        0.7366
    """
    radiance = camera_frame_envmap(envmap, camera_to_world, height, width, convention)
    return DiffusionRendererLighting(
        ldr=ldr_encoding(radiance),
        log_hdr=log_hdr_encoding(radiance),
        directions=direction_encoding(height, width, device=envmap.device, dtype=envmap.dtype),
    )


def to_model_range(image: Float[Tensor, "*bs"]) -> Float[Tensor, "*bs"]:
    """``2 x - 1``: a [0, 1] condition image as Cosmos DiffusionRenderer feeds it (``env_nrm`` included)."""
    return image * 2.0 - 1.0
