"""DiffusionRenderer's ``gbuffer_frames`` folder: write relight3d G-buffers for its forward renderer, read them back.

Sources (NVIDIA DiffusionRenderer, Cosmos version ``nv-tlabs/cosmos1-diffusion-renderer``; the same files in
``nv-tlabs/cosmos-transfer1-diffusion-renderer``), all under ``cosmos_predict1/diffusion/inference/``:

* **Layout** (``inference_inverse_renderer.py``, the writer): ``<out>/gbuffer_frames/<clip>/<chunk>.<frame>.<pass>.jpg``
  with ``<chunk>`` and ``<frame>`` four digits (``0000.0012.normal.jpg``) and ``<pass>`` one of ``basecolor``,
  ``normal``, ``depth``, ``roughness``, ``metallic``. The forward renderer (``inference_forward_renderer.py``,
  ``--dataset_path .../gbuffer_frames``) reads them with ``VideoGBufferDataset``
  (``diffusion_renderer_utils/dataset_inference.py``): every ``.png .jpg .jpeg .gif .tiff .bmp`` file below the
  folder, grouped by "webdataset" key (the path up to the first dot of the file name, ``<clip>/<chunk>``,
  ``inference_utils.base_plus_ext``), each pass's files picked by the substring ``.<pass>.`` and sorted, the first
  ``--num_video_frames`` used (the last repeated when there are fewer). Other files (the ``mask`` images and the JSON
  written here) are ignored by that loader.
* **Pixels** (``diffusion_renderer_pipeline.generate_video``, ``cosmos_predict1/utils/io.save_image_or_video``): each
  pass is an 8-bit **3-channel** image, ``uint8(255 * (v + 1) / 2)`` of the model's [-1, 1] output, JPEG quality 85
  for the inverse renderer. The loader (``transform_utils.prepare_images_np``) divides 8-bit data by 255 (16-bit
  images are *not* rescaled, so they cannot be used), composites an alpha channel over white (``bg_color=(1, 1, 1)``),
  resizes to ``(--height, --width)`` (bilinear, antialiased, aspect not kept) and maps to ``2 x - 1``; a grey
  (1-channel) file would reach the tokenizer with one channel, so every pass is written as RGB here.

The encodings of the passes are not in public code (DiffusionRenderer's training-data code is unreleased); these are
the choices made here, each the most defensible one from what is public:

* ``basecolor``: **sRGB-encoded** base colour (:func:`encode_base_color`), as 8-bit base-colour textures are stored
  (glTF) and as the inverse renderer's outputs look; its inputs are display-encoded images (``dataset_inference.py``
  applies ``x ** (1/2.2)`` to .exr inputs). relight3d holds linear base colour.
* ``normal``: **camera-space** normals in **OpenGL camera axes** (x right, y up, z towards the viewer), stored
  ``0.5 n + 0.5`` (:func:`encode_normals_for_diffusion_renderer`): a surface facing the camera is (0.5, 0.5, 1.0).
  Evidence: the paper's camera-space G-buffers; ``envmap_vec`` (``diffusion_renderer_utils/rendering_utils.py``), the
  per-texel lighting directions, which ``utils_env_proj.process_projected_envmap`` rotates with an OpenGL c2w, so
  they are in these axes; ``get_ideal_ball`` (same file), whose chrome-ball normals run x right, y up, z out of the
  screen; and ``--normalize_normal`` in ``inference_inverse_renderer.py``, which makes the decoded ``2 v - 1`` unit
  length.
* ``depth``: **per-frame min-max normalised depth** (:func:`encode_depth`): ``(d - near) / (far - near)`` with
  ``near`` / ``far`` the smallest / largest depth inside the mask, clipped to [0, 1], background 1 (white), the
  value repeated in R, G and B: ``normalize_depth(depth, mask, bg_value=1.0)`` in ``rendering_utils.py`` ("only work
  on single image"), near = dark. relight3d's depth is the distance along each pixel's ray (what relight3d renders);
  ``rendering_utils.ray2zdepth`` suggests DiffusionRenderer used z-depth, which differs by the cosine of the pixel's
  angle off the axis (convert before writing if that matters). ``transform_utils.ScaleShiftDepthNormalizer`` (2 % /
  98 % quantiles to [-1, 1]) is the other normaliser in their code; ``percentile`` below reproduces it.
* ``roughness``, ``metallic``: the linear value in [0, 1], repeated in R, G and B (:func:`encode_scalar`).
* Background (mask 0): every pass is composited over **white** (1, 1, 1), what the forward loader does with an alpha
  channel, and what ``normalize_depth`` uses for depth.

Files written here, in ``<folder>/<clip>/`` (``<folder>`` is what ``--dataset_path`` takes, e.g.
``.../gbuffer_frames``; ``<chunk>`` is always ``0000``)::

    0000.0000.basecolor.png  0000.0000.normal.png  0000.0000.depth.png  0000.0000.roughness.png
    0000.0000.metallic.png   (8-bit RGB; or .jpg at quality 85, as the inverse renderer writes)
    0000.0000.mask.png       (8-bit grey; relight3d's own, ignored by DiffusionRenderer)
    0000.0000.depth16.png    (16-bit grey, the same normalised depth; relight3d's own, for a metric round trip)
    relight3d_gbuffer_frames.json   (size, and per frame the camera-to-world and depth near / far)

Round trip (write then read): PNG values are rounded to 8 bits, so base colour is within half a step of 8-bit sRGB,
roughness / metallic / mask within 0.5 / 255, normals within about 1 / 255 per component (then renormalised), and
depth within ``(far - near) / 131070`` (from the 16-bit file). Only pixels with mask 1 round-trip; elsewhere the
reader returns the decoded background.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp()) / "gbuffer_frames"
    >>> write_gbuffer_frames(folder, [GBufferFrame.empty(16, 16)]).name
    'scene'
    >>> read_gbuffer_frames(folder)[0].depth.shape
    torch.Size([16, 16, 1])
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Literal, Sequence, Tuple, Union

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from relight3d.data.validation import inspect_image, load_json, read_image_float32
from relight3d.errors import DataError
from relight3d.lighting.encodings import linear_to_srgb, srgb_to_linear

GBUFFER_PASSES = ("basecolor", "normal", "depth", "roughness", "metallic")
"""The passes DiffusionRenderer's forward renderer reads (``VideoGBufferDataset.gbuf_labels``)."""

CHUNK = "0000"
"""The chunk index every frame is written under (the inverse renderer's first chunk)."""

MAX_FRAMES = 10000
"""Frame numbers have four digits."""

METADATA_NAME = "relight3d_gbuffer_frames.json"
"""relight3d's sidecar in each clip folder (not an image, so DiffusionRenderer's loader never sees it)."""

FORMAT_TAG = "relight3d-gbuffer-frames"
BACKGROUND = 1.0
"""Encoded value of every pass outside the mask (white)."""

ImageFormat = Literal["png", "jpg"]
_CLIP_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_OWN_FILE = re.compile(r"^\d{4}\.\d{4}\.(basecolor|normal|depth|roughness|metallic|mask|depth16)\.(png|jpg)$")


@dataclass
class GBufferFrame:
    """One view's G-buffers in relight3d's conventions (float32 tensors, any device)."""

    base_color: Float[Tensor, "h w 3"]
    """Linear base colour in [0, 1]."""
    normals: Float[Tensor, "h w 3"]
    """World-space unit normals (world Z up)."""
    depth: Float[Tensor, "h w 1"]
    """Metres along each pixel's ray from the camera centre."""
    roughness: Float[Tensor, "h w 1"]
    """Linear roughness in [0, 1]."""
    metallic: Float[Tensor, "h w 1"]
    """Linear metallic in [0, 1]."""
    mask: Float[Tensor, "h w 1"]
    """Object coverage in [0, 1] (1 = object)."""
    camera_to_world: Float[Tensor, "3 4"]
    """OpenGL/Blender camera-to-world: x right, y up, looking down -Z; world Z up."""

    @staticmethod
    def empty(height: int, width: int) -> GBufferFrame:
        """A grey, camera-facing plane 2 m in front of a camera at the origin looking along world -Z."""
        ones = torch.ones(height, width, 1)
        normals = torch.zeros(height, width, 3)
        normals[..., 2] = 1.0
        return GBufferFrame(
            base_color=ones.expand(height, width, 3) * 0.5,
            normals=normals,
            depth=ones * 2.0,
            roughness=ones * 0.5,
            metallic=ones * 0.0,
            mask=ones.clone(),
            camera_to_world=torch.eye(4)[:3],
        )


def _rotation(camera_to_world: Tensor) -> Tensor:
    """The rotation block of a 3x4 / 4x4 pose, made orthonormal (scale removed), float64 on the CPU."""
    if camera_to_world.shape not in ((3, 4), (4, 4)):
        raise ValueError(f"camera_to_world must be 3x4 or 4x4, got shape {tuple(camera_to_world.shape)}")
    block = camera_to_world[:3, :3].detach().to("cpu", torch.float64)
    if not torch.isfinite(block).all():
        raise ValueError("camera_to_world is not finite")
    u, _, vh = torch.linalg.svd(block)
    rotation = u @ vh
    if torch.det(rotation) < 0:
        raise ValueError("camera_to_world has a reflection in its rotation block (determinant < 0)")
    return rotation


def encode_normals_for_diffusion_renderer(
    normals_world: Float[Tensor, "*bs 3"], camera_to_world: Float[Tensor, "3 4"] | Float[Tensor, "4 4"]
) -> Float[Tensor, "*bs 3"]:
    """World normals to DiffusionRenderer's image: ``0.5 R^T n + 0.5``, camera axes x right, y up, z to the viewer.

    The normals are normalised first (zero vectors stay zero and encode to 0.5 grey).

    Example:
        >>> encode_normals_for_diffusion_renderer(torch.tensor([0.0, 0.0, 1.0]), torch.eye(4)).tolist()
        [0.5, 0.5, 1.0]
    """
    rotation = _rotation(camera_to_world).to(normals_world)
    unit = torch.nn.functional.normalize(normals_world, dim=-1)
    return (unit @ rotation) * 0.5 + 0.5  # row vectors: n @ R == (R^T n)^T


def decode_normals_from_diffusion_renderer(
    encoded: Float[Tensor, "*bs 3"], camera_to_world: Float[Tensor, "3 4"] | Float[Tensor, "4 4"]
) -> Float[Tensor, "*bs 3"]:
    """Inverse of :func:`encode_normals_for_diffusion_renderer`: ``normalize(R (2 v - 1))`` in world space."""
    rotation = _rotation(camera_to_world).to(encoded)
    return torch.nn.functional.normalize((encoded * 2.0 - 1.0) @ rotation.T, dim=-1)


def encode_depth(
    depth: Float[Tensor, "h w 1"], mask: Float[Tensor, "h w 1"], percentile: float = 0.0
) -> Tuple[Float[Tensor, "h w 1"], float, float]:
    """Per-frame min-max normalised depth, as DiffusionRenderer's ``normalize_depth(depth, mask, bg_value=1.0)``.

    ``near`` / ``far`` are the ``percentile`` / ``100 - percentile`` percentiles (default: min / max) of the depth at
    pixels with ``mask > 0.5`` and depth > 0; the result ``(d - near) / (far - near)`` is clipped to [0, 1] and set to
    1 outside the mask. A frame with no valid pixel, or a flat one (``far == near``), encodes to 1 / 0 with
    ``far = near + 1``.

    Returns:
        ``(encoded, near, far)``; :func:`decode_depth` inverts it inside the mask.

    Example:
        >>> d = torch.tensor([[[1.0], [2.0], [3.0]]]); m = torch.tensor([[[1.0], [1.0], [0.0]]])
        >>> enc, near, far = encode_depth(d, m)
        >>> enc.flatten().tolist(), near, far
        ([0.0, 1.0, 1.0], 1.0, 2.0)
    """
    inside = (mask > 0.5) & (depth > 0) & torch.isfinite(depth)
    values = depth[inside].detach().to(torch.float64)
    if values.numel() == 0:
        return torch.ones_like(depth), 0.0, 1.0
    if percentile > 0.0:
        near = float(torch.quantile(values, percentile / 100.0))
        far = float(torch.quantile(values, 1.0 - percentile / 100.0))
    else:
        near, far = float(values.min()), float(values.max())
    if not far > near:
        far = near + 1.0
    encoded = ((depth - near) / (far - near)).clamp(0.0, 1.0)
    return torch.where(mask > 0.5, encoded, torch.full_like(encoded, BACKGROUND)), near, far


def decode_depth(encoded: Float[Tensor, "h w 1"], near: float, far: float) -> Float[Tensor, "h w 1"]:
    """Inverse of :func:`encode_depth` (inside the mask): ``near + v (far - near)``."""
    return near + encoded * (far - near)


def encode_base_color(base_color_linear: Float[Tensor, "*bs 3"]) -> Float[Tensor, "*bs 3"]:
    """Linear base colour to the sRGB-encoded image DiffusionRenderer takes (clipped to [0, 1])."""
    return linear_to_srgb(base_color_linear.clamp(0.0, 1.0)).clamp(0.0, 1.0)


def decode_base_color(encoded: Float[Tensor, "*bs 3"]) -> Float[Tensor, "*bs 3"]:
    """Inverse of :func:`encode_base_color`."""
    return srgb_to_linear(encoded.clamp(0.0, 1.0))


def encode_scalar(value: Float[Tensor, "*bs 1"]) -> Float[Tensor, "*bs 3"]:
    """Roughness / metallic / depth image: the value clipped to [0, 1] and repeated in R, G and B."""
    return value.clamp(0.0, 1.0).expand(*value.shape[:-1], 3)


def decode_scalar(encoded: Float[Tensor, "*bs 3"]) -> Float[Tensor, "*bs 1"]:
    """Inverse of :func:`encode_scalar`: the mean of the channels (the inverse renderer's are not exactly equal)."""
    return encoded.mean(dim=-1, keepdim=True)


def encode_gbuffer_frame(frame: GBufferFrame, percentile: float = 0.0) -> Tuple[dict, float, float]:
    """The five pass images of a frame (``{pass: [h, w, 3] in [0, 1]}``, background white) and the depth near / far."""
    mask = frame.mask.detach().float().cpu().clamp(0.0, 1.0)
    depth, near, far = encode_depth(frame.depth.detach().float().cpu(), mask, percentile)
    images = {
        "basecolor": encode_base_color(frame.base_color.detach().float().cpu()),
        "normal": encode_normals_for_diffusion_renderer(frame.normals.detach().float().cpu(), frame.camera_to_world),
        "depth": encode_scalar(depth),
        "roughness": encode_scalar(frame.roughness.detach().float().cpu()),
        "metallic": encode_scalar(frame.metallic.detach().float().cpu()),
    }
    composited = {k: v * mask + BACKGROUND * (1.0 - mask) for k, v in images.items()}
    composited["depth"] = images["depth"]  # already white outside the mask (a hard threshold, as normalize_depth)
    return composited, near, far


def _check_frames(frames: Sequence[GBufferFrame]) -> Tuple[int, int]:
    if len(frames) == 0:
        raise ValueError("no frames to write")
    if len(frames) > MAX_FRAMES:
        raise ValueError(f"at most {MAX_FRAMES} frames fit the four-digit frame numbers, got {len(frames)}")
    height, width = frames[0].mask.shape[:2]
    expected = {"base_color": 3, "normals": 3, "depth": 1, "roughness": 1, "metallic": 1, "mask": 1}
    for i, frame in enumerate(frames):
        for name, channels in expected.items():
            shape = tuple(getattr(frame, name).shape)
            if shape != (height, width, channels):
                raise ValueError(f"frame {i}: {name} has shape {shape}, expected {(height, width, channels)}")
        _rotation(frame.camera_to_world)
    return height, width


def _to_uint8(image: Tensor) -> np.ndarray:
    return np.ascontiguousarray((image.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).numpy())


def write_gbuffer_frames(
    folder: Union[str, Path],
    frames: Sequence[GBufferFrame],
    clip_name: str = "scene",
    image_format: ImageFormat = "png",
    depth_percentile: float = 0.0,
    overwrite: bool = False,
) -> Path:
    """Write a sequence of views as a DiffusionRenderer ``gbuffer_frames`` clip, plus relight3d's sidecars.

    Run DiffusionRenderer's forward renderer on it with ``--dataset_path <folder> --height H --width W`` (the frames'
    size, multiples of 16 for the Cosmos tokenizer and DiT patches) and ``--num_video_frames`` at least
    ``len(frames)`` (1, 9, 17, ... 121: ``8 n + 1``).

    Args:
        folder: the ``gbuffer_frames`` folder (created); files are written only in ``folder / clip_name``.
        frames: the views, all of one size.
        clip_name: the clip's folder name (letters, digits, ``_`` and ``-``).
        image_format: ``"png"`` (lossless 8-bit) or ``"jpg"`` (quality 85, as the inverse renderer writes).
        depth_percentile: see :func:`encode_depth` (0: min / max).
        overwrite: replace a clip written before (only files named like this module's are removed); otherwise a
            non-empty clip folder is an error, since the forward loader would mix in stale frames.

    Returns:
        The clip folder.

    Raises:
        DataError: the clip folder holds files and ``overwrite`` is False, or a path is not a folder.
        ValueError: bad ``clip_name``, ``image_format``, frame shapes or poses.
    """
    from PIL import Image

    if not _CLIP_NAME.match(clip_name):
        raise ValueError(f"clip_name {clip_name!r} must be letters, digits, '_' or '-' (it names a folder)")
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format {image_format!r} must be png or jpg")
    height, width = _check_frames(frames)
    clip = Path(folder) / clip_name
    if clip.exists() and not clip.is_dir():
        raise DataError(clip, "exists and is not a folder")
    clip.mkdir(parents=True, exist_ok=True)
    existing = list(clip.iterdir())
    if existing and not overwrite:
        raise DataError(clip, f"already holds {len(existing)} files; pass overwrite=True to replace the clip")
    for path in existing:
        if path.is_file() and (_OWN_FILE.match(path.name) or path.name == METADATA_NAME):
            path.unlink()

    records = []
    for index, frame in enumerate(frames):
        images, near, far = encode_gbuffer_frame(frame, depth_percentile)
        stem = f"{CHUNK}.{index:04d}"
        for name in GBUFFER_PASSES:
            target = clip / f"{stem}.{name}.{image_format}"
            pil = Image.fromarray(_to_uint8(images[name]))  # [h, w, 3] uint8: RGB
            if image_format == "jpg":
                pil.save(target, quality=85)
            else:
                pil.save(target)
        mask = frame.mask.detach().float().cpu()[..., 0]
        Image.fromarray(_to_uint8(mask)).save(clip / f"{stem}.mask.png")
        depth16 = (images["depth"][..., 0].clamp(0.0, 1.0) * 65535.0).round().to(torch.int32).numpy()
        Image.fromarray(depth16.astype(np.uint16)).save(clip / f"{stem}.depth16.png")
        pose = frame.camera_to_world.detach().to("cpu", torch.float64)[:3, :4]
        records.append({"index": index, "camera_to_world": pose.tolist(), "depth_near": near, "depth_far": far})
    metadata = {
        "format": FORMAT_TAG,
        "version": 1,
        "height": height,
        "width": width,
        "image_format": image_format,
        "frames": records,
    }
    (clip / METADATA_NAME).write_text(json.dumps(metadata, indent=1), encoding="utf-8")
    return clip


def _number(value: object, path: Path, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise DataError(path, f"{what} must be a finite number, got {value!r}")
    return float(value)


def _read_image(path: Path, height: int, width: int) -> Tensor:
    """A checked image as float32 ``[h, w, 3]`` in [0, 1] (alpha dropped), or a DataError naming it."""
    info = inspect_image(path)  # missing, corrupt, wrong format for its suffix, unsupported mode
    if info.size != (width, height):
        raise DataError(path, f"image is {info.size[0]}x{info.size[1]}, expected {width}x{height} (width x height)")
    return torch.from_numpy(read_image_float32(path, info)[..., :3].copy())


def read_gbuffer_frames(folder: Union[str, Path], clip_name: str = "scene") -> List[GBufferFrame]:
    """Read a clip written by :func:`write_gbuffer_frames` back into relight3d's conventions.

    Normals come back in world space (unit length), base colour linear, depth in metres (from the 16-bit file and the
    stored near / far), roughness / metallic as the channel mean. See the module docstring for the precision.

    Raises:
        DataError: naming the file: the metadata or an image is missing, unreadable, of the wrong size, or the
            metadata is malformed.
    """
    if not _CLIP_NAME.match(clip_name):
        raise ValueError(f"clip_name {clip_name!r} must be letters, digits, '_' or '-' (it names a folder)")
    clip = Path(folder) / clip_name
    meta_path = clip / METADATA_NAME
    meta = load_json(meta_path)
    if meta.get("format") != FORMAT_TAG:
        raise DataError(meta_path, f"not a relight3d G-buffer clip (format {meta.get('format')!r})")
    height = int(_number(meta.get("height"), meta_path, "height"))
    width = int(_number(meta.get("width"), meta_path, "width"))
    image_format = meta.get("image_format")
    if image_format not in ("png", "jpg"):
        raise DataError(meta_path, f"image_format must be png or jpg, got {image_format!r}")
    records = meta.get("frames")
    if not isinstance(records, list) or not records or len(records) > MAX_FRAMES:
        raise DataError(meta_path, f"frames must be a list of 1 to {MAX_FRAMES} entries")

    frames = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise DataError(meta_path, f"frames[{index}] must be an object")
        try:
            pose = torch.tensor(record.get("camera_to_world"), dtype=torch.float64)
        except (TypeError, ValueError) as err:
            raise DataError(meta_path, f"frames[{index}].camera_to_world is not a 3x4 matrix") from err
        if pose.shape != (3, 4) or not torch.isfinite(pose).all():
            raise DataError(meta_path, f"frames[{index}].camera_to_world is not a finite 3x4 matrix")
        try:
            _rotation(pose)
        except ValueError as err:
            raise DataError(meta_path, f"frames[{index}].camera_to_world: {err}") from err
        near = _number(record.get("depth_near"), meta_path, f"frames[{index}].depth_near")
        far = _number(record.get("depth_far"), meta_path, f"frames[{index}].depth_far")
        stem = f"{CHUNK}.{index:04d}"
        images = {name: _read_image(clip / f"{stem}.{name}.{image_format}", height, width) for name in GBUFFER_PASSES}
        mask = _read_image(clip / f"{stem}.mask.png", height, width)[..., :1]
        depth16 = _read_image(clip / f"{stem}.depth16.png", height, width)[..., :1]
        pose32 = pose.to(torch.float32)
        frames.append(
            GBufferFrame(
                base_color=decode_base_color(images["basecolor"]),
                normals=decode_normals_from_diffusion_renderer(images["normal"], pose32),
                depth=decode_depth(depth16, near, far),
                roughness=decode_scalar(images["roughness"]),
                metallic=decode_scalar(images["metallic"]),
                mask=mask,
                camera_to_world=pose32,
            )
        )
    return frames


MATERIAL_PASSES = ("basecolor", "roughness", "metallic")
"""The passes :func:`read_material_frames` reads."""
_MATERIAL_FILE = re.compile(
    r"^(?P<chunk>\d{4})\.(?P<frame>\d{4})\.(?P<pass>basecolor|roughness|metallic)\.(png|jpg|jpeg)$"
)


def read_material_frames(
    clip: Union[str, Path], count: int, height: int, width: int
) -> Dict[str, Float[Tensor, "n h w c"]]:
    """The material passes of a ``gbuffer_frames`` clip as DiffusionRenderer's *inverse* renderer writes it
    (``<chunk>.<frame>.<pass>.jpg``, no relight3d sidecar needed), for fitting a field's material head.

    Frames are taken in (chunk, frame) order and must be exactly ``count``: the field's training views, in the
    order of its data (run the inverse renderer on the training images in that order). Each pass is decoded as
    :func:`read_gbuffer_frames` does (base colour sRGB to linear, roughness / metallic the channel mean) and resized
    to ``height x width`` (bilinear, antialiased: the inverse renderer works at its own ``--height`` / ``--width``).

    Returns:
        ``{"base_color": [n, h, w, 3], "roughness": [n, h, w, 1], "metallic": [n, h, w, 1]}``, float32.

    Raises:
        DataError: naming the folder or file: no such folder, a pass missing for a frame, a frame count that is not
            ``count``, or an unreadable image.
    """
    import torch.nn.functional as F

    clip = Path(clip)
    if not clip.is_dir():
        raise DataError(clip, "no such folder of G-buffer frames (give the clip folder, gbuffer_frames/<clip>)")
    files: Dict[Tuple[str, str], Dict[str, Path]] = {}
    for path in clip.iterdir():
        found = _MATERIAL_FILE.match(path.name)
        if found and path.is_file():
            files.setdefault((found["chunk"], found["frame"]), {})[found["pass"]] = path
    if len(files) != count:
        raise DataError(clip, f"holds {len(files)} frames of base colour / roughness / metallic, expected {count} "
                              "(one per training view, in the data's order)")  # fmt: skip
    out: Dict[str, List[Tensor]] = {"base_color": [], "roughness": [], "metallic": []}
    for key in sorted(files):
        frame = files[key]
        for name in MATERIAL_PASSES:
            if name not in frame:
                raise DataError(clip / f"{key[0]}.{key[1]}.{name}.jpg", f"missing: frame {key[1]} has no {name} pass")
            path = frame[name]
            info = inspect_image(path)
            image = torch.from_numpy(read_image_float32(path, info)[..., :3].copy())
            if image.shape[:2] != (height, width):
                image = F.interpolate(
                    image.permute(2, 0, 1)[None], size=(height, width), mode="bilinear", antialias=True,
                    align_corners=False,
                )[0].permute(1, 2, 0).clamp(0.0, 1.0)  # fmt: skip
            if name == "basecolor":
                out["base_color"].append(decode_base_color(image))
            else:
                out[name].append(decode_scalar(image))
    return {k: torch.stack(v) for k, v in out.items()}
