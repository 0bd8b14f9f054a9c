"""Checks on input files that turn common mistakes into one-line :class:`DataError` messages.

Images (:func:`inspect_image`, :func:`read_image_float32`) are checked in one place:

* only regular files are opened: a FIFO, a device or a folder under an image's name is refused *before* it is opened
  (opening a FIFO would wait forever for a writer);
* the content must be what the name says: JPEG data in a ``.png`` file is refused, naming that file;
* every image is decoded in full (``im.load()``), so a truncated or corrupt file fails here, not in the datamanager;
* modes: 1-bit, grey, palette, RGB, CMYK and their alpha variants are converted to RGB(A); 16-bit PNGs (grey, grey +
  alpha, RGB, RGBA) are read with all 16 bits (``value / 65535``); 32-bit integer or float images are refused.

Paths read from data files (``file_path`` in ``transforms*.json``, mask paths, files of an object folder) must resolve
inside the dataset folder, after symlinks and ``..`` are resolved (:func:`resolve_inside`); a dataparser's
``allow_outside_paths`` lifts that.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from relight3d.errors import DataError, one_line, reading

IMAGE_FORMATS: Dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}
"""The format PIL must find in a file with each suffix."""
_MODES_8BIT = ("1", "L", "P", "RGB", "RGBA", "RGBX", "LA", "La", "PA", "RGBa", "CMYK", "YCbCr")
_MODES_16BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_ALPHA_MODES = ("RGBA", "LA", "La", "PA", "RGBa")
OUTSIDE_PATHS_HINT = "set the dataparser's allow_outside_paths (--allow-outside-paths True) to read it anyway"


def load_json(path: Path) -> Dict[str, Any]:
    """Read a JSON object, or raise a DataError for a missing or malformed file."""
    check_regular_file(path, "")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(path, f"malformed JSON ({err.__class__.__name__}: {err})") from err
    if not isinstance(data, dict):
        raise DataError(path, f"expected a JSON object, got {type(data).__name__}")
    return data


def check_pose(pose: Any, source: Path, what: str, rows: int = 4) -> np.ndarray:
    """A finite, invertible camera matrix (``rows`` x 4) or a DataError naming ``what`` in ``source``."""
    try:
        m = np.asarray(pose, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(source, f"{what}: pose is not a numeric matrix") from err
    if m.shape not in ((rows, 4), (4, 4)):
        raise DataError(source, f"{what}: pose has shape {m.shape}, expected ({rows}, 4)")
    if not np.isfinite(m).all():
        raise DataError(source, f"{what}: pose contains NaN or infinite values")
    rot = m[:3, :3]
    det = float(np.linalg.det(rot))
    if abs(det) < 1e-6 or not np.isfinite(det):
        raise DataError(source, f"{what}: pose is singular (det of rotation = {det:.3g})")
    return m[:rows]


# --- files and paths ----------------------------------------------------------------------------------------------
def check_regular_file(path: Union[str, Path], what: str = "image", error: Type[DataError] = DataError) -> int:
    """Refuse a missing path, a folder, or anything but a regular file (FIFO, device, socket), without opening it.

    ``what`` names the kind of file in the messages (``""``: just "file"); ``error`` is the DataError subclass raised.

    Returns:
        The file's size in bytes (never 0: an empty file is refused).
    """
    noun = f"{what} file" if what else "file"
    try:
        st = os.stat(path)
    except FileNotFoundError as err:
        raise error(path, f"{noun} not found") from err
    except OSError as err:
        raise error(path, f"cannot read the {noun} ({err.strerror or one_line(err)})") from err
    article = "an" if noun[0] in "aeiou" else "a"
    if stat.S_ISDIR(st.st_mode):
        raise error(path, f"is a folder, not {article} {noun}")
    if not stat.S_ISREG(st.st_mode):
        problem = f"is not a regular file (a FIFO, device or socket); refusing to open it as {article} {noun}"
        raise error(path, problem)
    if st.st_size == 0:
        raise error(path, f"the {noun} is empty")
    return st.st_size


def resolve_inside(
    root: Path, path: Union[str, Path], source: Union[str, Path], what: str, allow_outside: bool = False
) -> Path:
    """``path`` (relative to ``root`` unless absolute), refused when it resolves outside ``root``.

    Symlinks and ``..`` are resolved on both sides before the comparison.

    Args:
        root: the dataset folder.
        path: a path read from a data file.
        source: the data file it was read from (named in the error).
        what: what the path is, for the message (e.g. ``"frame 3: file_path"``).
        allow_outside: skip the check (the dataparser's ``allow_outside_paths``).

    Returns:
        ``root / path`` (unresolved, as the dataparser would read it).

    Raises:
        DataError: naming ``source`` and the offending path.
    """
    candidate = Path(path) if Path(path).is_absolute() else Path(root) / path
    if allow_outside:
        return candidate
    resolved, base = candidate.resolve(), Path(root).resolve()
    if resolved != base and base not in resolved.parents:
        raise DataError(
            source, f"{what} '{path}' resolves outside the dataset folder {base} (to {resolved}); {OUTSIDE_PATHS_HINT}"
        )
    return candidate


def check_outputs_inside(outputs: Any, root: Path, source: Union[str, Path], allow_outside: bool = False) -> None:
    """Every image, mask and depth file of a ``DataparserOutputs`` resolves inside ``root`` (see ``resolve_inside``)."""
    if allow_outside:
        return
    groups = (
        ("image", getattr(outputs, "image_filenames", None)),
        ("mask", getattr(outputs, "mask_filenames", None)),
        ("depth image", (getattr(outputs, "metadata", None) or {}).get("depth_filenames")),
    )
    for what, paths in groups:
        for p in paths or ():
            if p is not None:
                resolve_inside(root, Path(p), source, what)


# --- images -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageInfo:
    """What :func:`inspect_image` found in a fully decoded image."""

    size: Tuple[int, int]
    """``(width, height)``."""
    mode: str
    """PIL's mode (a 16-bit colour PNG shows as RGB / RGBA; ``bit_depth`` tells)."""
    bit_depth: int
    """Bits per channel: 8, or 16 for 16-bit PNGs and I;16 images."""
    has_alpha: bool
    """Whether the image has an alpha channel (or palette / colour-key transparency)."""
    format: str
    """PIL's format name (PNG, JPEG, ...)."""


def _png_header(path: Path) -> Optional[Tuple[int, int]]:
    """``(bit depth, colour type)`` from a PNG's IHDR chunk, or None when the file is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or not head.startswith(b"\x89PNG\r\n\x1a\n") or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def inspect_image(path: Union[str, Path]) -> ImageInfo:
    """Check that ``path`` is a regular file holding a complete image of the format its suffix names.

    Raises:
        DataError: one line naming the file: missing, not a regular file, empty, wrong format for its suffix, not an
            image, truncated or corrupt, too large, or of an unsupported mode.
    """
    path = Path(path)
    check_regular_file(path)
    suffix = path.suffix.lower()
    expected = IMAGE_FORMATS.get(suffix)
    with reading(path, "an image (corrupt or truncated?)"):  # PIL raises OSError, SyntaxError, ValueError, ...
        try:
            with Image.open(path) as im:
                if expected is not None and im.format != expected:
                    problem = f"{im.format} data in a {suffix} file: convert it to {expected}, or rename it"
                    raise DataError(path, problem)
                im.load()
                mode, size, info = im.mode, im.size, dict(im.info)
                fmt = str(im.format)
        except Image.DecompressionBombError as err:
            raise DataError(path, "the image is too large (more pixels than PIL's decompression-bomb limit)") from err
        except UnidentifiedImageError as err:
            raise DataError(path, "not an image file (unrecognised format)") from err
    header = _png_header(path) if fmt == "PNG" else None
    bit_depth = header[0] if header is not None else (16 if mode in _MODES_16BIT else 8)
    if mode not in _MODES_8BIT + _MODES_16BIT and not (mode == "I" and bit_depth == 16):
        raise DataError(
            path,
            f"image mode {mode} ({'32-bit float' if mode == 'F' else 'wide integer'}) is not supported; "
            "save it as an 8- or 16-bit PNG",
        )
    has_alpha = mode in _ALPHA_MODES or "transparency" in info or (header is not None and header[1] in (4, 6))
    return ImageInfo(size=size, mode=mode, bit_depth=bit_depth, has_alpha=has_alpha, format=fmt)


def _read_png16(path: Path) -> np.ndarray:
    """A 16-bit PNG as float32 in [0, 1] with all 16 bits: ``[h, w]`` grey or ``[h, w, 3|4]`` RGB(A)."""
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if array is None or array.dtype != np.uint16:
        raise DataError(path, "corrupt 16-bit PNG (OpenCV could not decode it)")
    if array.ndim == 3 and array.shape[2] == 3:
        array = array[..., ::-1]
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[..., [2, 1, 0, 3]]
    return array.astype(np.float32) / 65535.0


def read_image_float32(path: Union[str, Path], info: Optional[ImageInfo] = None) -> np.ndarray:
    """A checked image as float32 ``[h, w, 3]`` (RGB) or ``[h, w, 4]`` (RGBA, straight alpha) in [0, 1].

    Grey images are repeated into RGB; 16-bit images keep all 16 bits.

    Raises:
        DataError: as :func:`inspect_image`.
    """
    path = Path(path)
    info = info if info is not None else inspect_image(path)
    if info.bit_depth == 16 and info.format == "PNG":
        array = _read_png16(path)
    else:
        with Image.open(path) as im:
            im.load()
            if im.mode in _MODES_16BIT or im.mode == "I":
                array = np.asarray(im, dtype=np.float32) / 65535.0
            else:
                array = np.asarray(im.convert("RGBA" if info.has_alpha else "RGB"), dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    elif array.shape[2] == 2:  # grey + alpha
        array = np.concatenate([np.repeat(array[..., :1], 3, axis=2), array[..., 1:]], axis=2)
    return np.ascontiguousarray(np.clip(array, 0.0, 1.0), dtype=np.float32)


def image_size(path: Path) -> Tuple[Tuple[int, int], str]:
    """``((width, height), mode)`` of a fully decoded, checked image (see :func:`inspect_image`)."""
    info = inspect_image(path)
    return info.size, info.mode


def check_images(paths: Sequence[Path], require_alpha: bool = False) -> Tuple[int, int]:
    """All images are valid (:func:`inspect_image`), share one size, and (optionally) have an alpha channel.

    Returns:
        ``(width, height)``.
    """
    if not paths:
        raise DataError(Path("."), "no images")
    first = inspect_image(paths[0])
    for p in paths:
        info = first if p is paths[0] else inspect_image(p)
        if info.size != first.size:
            (w, h), (fw, fh) = info.size, first.size
            raise DataError(p, f"image is {w}x{h} but {paths[0].name} is {fw}x{fh}")
        if require_alpha and not info.has_alpha:
            raise DataError(p, f"image has mode {info.mode} but an RGBA image (alpha = object mask) is required")
    return first.size


def frame_list(meta: Dict[str, Any], path: Path) -> List[Dict[str, Any]]:
    """The non-empty ``frames`` list of a transforms file, each frame with ``file_path`` and ``transform_matrix``."""
    frames = meta.get("frames")
    if not isinstance(frames, list):
        raise DataError(path, "missing 'frames' list")
    if not frames:
        raise DataError(path, "empty dataset: 'frames' is empty")
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict) or "file_path" not in frame or "transform_matrix" not in frame:
            raise DataError(path, f"frame {i} needs 'file_path' and 'transform_matrix'")
    return frames


def check_blender_split(data: Path, split: str, allow_outside: bool = False) -> Tuple[Dict[str, Any], List[Path]]:
    """Validate ``transforms_<split>.json`` of a Blender-format scene; returns the metadata and image paths.

    Every frame's image must resolve inside ``data`` unless ``allow_outside``.
    """
    path = data / f"transforms_{split}.json"
    meta = load_json(path)
    if "camera_angle_x" not in meta:
        raise DataError(path, "missing 'camera_angle_x'")
    try:
        angle = float(meta["camera_angle_x"])
    except (TypeError, ValueError) as err:
        raise DataError(path, f"'camera_angle_x' is not a number: {meta['camera_angle_x']!r}") from err
    if not 0.0 < angle < np.pi:
        raise DataError(path, f"'camera_angle_x' = {angle} is outside (0, pi)")
    frames = frame_list(meta, path)
    images = []
    for i, frame in enumerate(frames):
        if not isinstance(frame["file_path"], str) or not frame["file_path"]:
            raise DataError(path, f"frame {i}: 'file_path' must be a non-empty string")
        check_pose(frame["transform_matrix"], path, f"frame {i} ({frame['file_path']})")
        relative = Path(frame["file_path"].replace("./", "") + ".png")  # what nerfstudio's Blender parser reads
        images.append(resolve_inside(data, relative, path, f"frame {i}: file_path", allow_outside))
    check_images(images)
    return meta, images


def jsonl_objects(path: Path, missing: str) -> List[Tuple[int, str, Dict[str, Any]]]:
    """``(line number, "line N", object)`` of every non-blank line of a JSON-lines file, in order.

    Raises:
        DataError: no such file (``missing`` says what the folder should hold), or a line that is not a JSON object
            (naming the line).
    """
    if not path.is_file():
        raise DataError(path, missing)
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(path, f"{where}: not JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise DataError(path, f"{where}: expected a JSON object")
        out.append((number, where, record))
    return out
