"""Read and write environment maps (.exr, .hdr) as linear float32 radiance.

Libraries: OpenEXR (the Academy Software Foundation's own Python bindings, ``pip install OpenEXR``) for .exr and
OpenCV (``opencv-python-headless``, already a nerfstudio dependency) for Radiance RGBE .hdr. Both are imported only
when a file is read or written.

Reading checks the file's magic bytes before decoding, so a PNG/JPEG (or one renamed to .hdr) fails with a one-line
:class:`EnvMapError` naming the file, as does a truncated or otherwise corrupt file. Lossy EXR compression (DWA, as in
Poly Haven's maps) leaves small negative values; they are clamped to 0.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Union

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from relight3d.data.errors import DataError

ENVMAP_SUFFIXES = (".exr", ".hdr")
LDR_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tga", ".ppm")

_EXR_MAGIC = b"\x76\x2f\x31\x01"
_RADIANCE_MAGICS = (b"#?RADIANCE", b"#?RGBE")
_LDR_MAGICS = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"BM": "BMP", b"GIF8": "GIF", b"RIFF": "WebP"}


class EnvMapError(DataError):
    """An environment-map file that cannot be used: missing, corrupt, LDR or an unsupported format.

    ``str(err)`` is one line ``<path>: <problem>``.
    """


def _ldr_problem(kind: str) -> str:
    return f"{kind} is a low-dynamic-range (8-bit) image; an environment map must be HDR radiance (.exr or .hdr)"


def _check_magic(path: Path) -> str:
    """The format ('exr' or 'hdr') from the file's first bytes; raises EnvMapError for anything else."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        raise EnvMapError(path, "file not found") from None
    except IsADirectoryError:
        raise EnvMapError(path, "is a directory, not an environment map") from None
    except OSError as err:
        raise EnvMapError(path, f"cannot be read ({err.strerror or err})") from None
    if head.startswith(_EXR_MAGIC):
        return "exr"
    if any(head.startswith(magic) for magic in _RADIANCE_MAGICS):
        return "hdr"
    for magic, kind in _LDR_MAGICS.items():
        if head.startswith(magic):
            raise EnvMapError(path, _ldr_problem(f"{kind} data"))
    if not head:
        raise EnvMapError(path, "is empty")
    raise EnvMapError(path, "is neither an OpenEXR nor a Radiance .hdr file (unrecognised header)")


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own error log (it prints decoding errors to stderr; we raise our own one-line error)."""
    import cv2

    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    previous = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(previous)


def _read_hdr(path: Path) -> np.ndarray:
    import cv2

    with _quiet_opencv():
        try:
            bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        except cv2.error:
            bgr = None
    if bgr is None:
        raise EnvMapError(path, "corrupt or truncated Radiance .hdr file (OpenCV could not decode it)")
    if bgr.dtype != np.float32:
        raise EnvMapError(path, _ldr_problem(f"{bgr.dtype} data"))
    if bgr.ndim == 2:
        bgr = np.repeat(bgr[..., None], 3, axis=2)
    return np.ascontiguousarray(bgr[..., 2::-1])


def _pick_rgb_channels(path: Path, channels: dict) -> np.ndarray:
    """Stack the R, G, B channels (bare or with one common layer prefix), or replicate a luminance-only 'Y'."""
    names = list(channels)
    for prefix in [""] + sorted({name.rsplit(".", 1)[0] + "." for name in names if "." in name}):
        wanted = [prefix + c for c in ("R", "G", "B")]
        if all(w in channels for w in wanted):
            return np.stack([channels[w].pixels for w in wanted], axis=-1)
    if "Y" in channels:
        return np.repeat(channels["Y"].pixels[..., None], 3, axis=2)
    raise EnvMapError(path, f"has no R, G, B (or Y) channels; channels are {', '.join(sorted(names)) or 'none'}")


def _read_exr(path: Path) -> np.ndarray:
    import OpenEXR

    try:
        with OpenEXR.File(str(path), separate_channels=True) as exr:
            channels = exr.channels()
            rgb = _pick_rgb_channels(path, channels)
    except EnvMapError:
        raise
    except Exception as err:  # OpenEXR raises RuntimeError/ValueError/... for damaged files
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise EnvMapError(path, f"corrupt or unreadable OpenEXR file ({message})") from None
    if rgb.dtype.kind in "iu":
        raise EnvMapError(path, f"has integer ({rgb.dtype}) channels, not radiance")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise EnvMapError(path, f"unexpected channel layout {rgb.shape}")
    return rgb.astype(np.float32)


def read_envmap(path: Union[str, Path]) -> Float[Tensor, "h w 3"]:
    """Read an equirectangular environment map (.exr or .hdr) as linear float32 radiance, negatives clamped to 0.

    Returns a CPU tensor ``[H, W, 3]`` (row 0 = top, see :mod:`relight3d.lighting.equirect`).

    Raises:
        EnvMapError: missing, empty, corrupt or truncated file; an LDR image (.png/.jpg, or 8-bit data under any
            name); an unsupported format; no RGB channels; NaN or infinite values.

    Example:
        >>> read_envmap("sky.png")  # doctest: +SKIP
        EnvMapError: sky.png: .png is a low-dynamic-range (8-bit) image; an environment map must be HDR ...
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in LDR_SUFFIXES:
        raise EnvMapError(path, _ldr_problem(suffix))
    kind = _check_magic(path)
    rgb = _read_exr(path) if kind == "exr" else _read_hdr(path)
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise EnvMapError(path, "has no pixels")
    if not np.isfinite(rgb).all():
        raise EnvMapError(path, "contains NaN or infinite values")
    np.maximum(rgb, 0.0, out=rgb)
    return torch.from_numpy(np.ascontiguousarray(rgb))


def write_envmap(path: Union[str, Path], envmap: Union[Float[Tensor, "h w 3"], np.ndarray], half: bool = False) -> Path:
    """Write a map ``[H, W, 3]`` of linear radiance to .exr (float32, or float16 with ``half``; ZIP) or .hdr (RGBE).

    .exr keeps values as given (negatives included); Radiance RGBE cannot store negatives, so .hdr clamps them to 0
    (and keeps about 8 bits of mantissa per pixel). Parent directories are created. Returns the path.

    Raises:
        EnvMapError: unsupported suffix, wrong shape, non-finite values, or the library failed to write.

    Example:
        >>> write_envmap("out/sky.exr", torch.rand(64, 128, 3))  # doctest: +SKIP
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ENVMAP_SUFFIXES:
        raise EnvMapError(path, f"cannot write '{suffix or 'no suffix'}': environment maps are written as .exr or .hdr")
    array = envmap.detach().cpu().numpy() if isinstance(envmap, Tensor) else np.asarray(envmap)
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise EnvMapError(path, f"expected an [H, W, 3] map, got shape {tuple(array.shape)}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise EnvMapError(path, "refusing to write NaN or infinite values")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".exr":
        import OpenEXR

        data = array.astype(np.float16) if half else array
        header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
        try:
            OpenEXR.File(header, {"RGB": data}).write(str(path))
        except Exception as err:
            raise EnvMapError(path, f"OpenEXR could not write the file ({err})") from None
    else:
        import cv2

        bgr = np.ascontiguousarray(np.maximum(array, 0.0)[..., ::-1])
        with _quiet_opencv():
            ok = cv2.imwrite(str(path), bgr)
        if not ok:
            raise EnvMapError(path, "OpenCV could not write the Radiance .hdr file")
    return path
