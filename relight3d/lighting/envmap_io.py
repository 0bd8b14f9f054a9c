"""Read and write environment maps (.exr, .hdr) as linear float32 radiance.

Libraries: OpenEXR (the Academy Software Foundation's own Python bindings, ``pip install OpenEXR``) for .exr and
OpenCV (``opencv-python-headless``, already a nerfstudio dependency) for Radiance RGBE .hdr. Both are imported only
when a file is read or written.

Reading refuses anything that is not a regular file (a FIFO, a device, a folder) before opening it, so nothing can
hang, and checks the file's magic bytes before decoding, so a PNG/JPEG (or one renamed to .hdr) fails with a one-line
:class:`EnvMapError` naming the file, as does a truncated or otherwise corrupt file. Lossy EXR compression (DWA, as in
Poly Haven's maps) leaves small negative values; they are clamped to 0.

:func:`read_envmap` then checks that the file can light a scene (:func:`check_envmap`):

* every value finite (no NaN or infinity);
* some light: a map whose pixels are all zero or negative would give black renders;
* no absurd radiance: a peak above :data:`MAX_RADIANCE` (1e6, far above an unclipped sun in a photographed HDRI,
  whose peaks are around 1e4-1e5) is refused, because it swamps every other pixel and overflows float16 maths;
* the equirectangular shape: at least :data:`MIN_HEIGHT` rows and twice as wide as high. A map within 1% of 2:1
  (a rounding in some exporter) is read with a warning; any other shape (a 1:1 mirror ball or angular map, a cube-map
  cross, a camera image) is refused, since reading it as latitude-longitude would put the light in the wrong places.

:func:`read_hdr_image` reads an .exr / .hdr image without the environment-map checks (a rendered camera image).
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Iterator, Union

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from relight3d.data.validation import check_regular_file
from relight3d.errors import ConfigError, DataError, one_line, reading

ENVMAP_SUFFIXES = (".exr", ".hdr")
LDR_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tga", ".ppm")

_EXR_MAGIC = b"\x76\x2f\x31\x01"
_RADIANCE_MAGICS = (b"#?RADIANCE", b"#?RGBE")
_LDR_MAGICS = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"BM": "BMP", b"GIF8": "GIF", b"RIFF": "WebP"}

MAX_RADIANCE = 1e6
"""Largest radiance accepted in a map (after negatives are clamped): anything brighter is a unit or export mistake."""
MIN_HEIGHT = 2
"""Fewest rows of an equirectangular map (with twice as many columns)."""
ASPECT_TOLERANCE = 0.01
"""Relative deviation from 2:1 that is read with a warning instead of refused."""


class EnvMapError(DataError):
    """An environment-map file that cannot be used: missing, corrupt, LDR or an unsupported format.

    ``str(err)`` is one line ``<path>: <problem>``.
    """


def _ldr_problem(kind: str) -> str:
    return f"{kind} is a low-dynamic-range (8-bit) image; an environment map must be HDR radiance (.exr or .hdr)"


def _check_magic(path: Path) -> str:
    """The format ('exr' or 'hdr') from the file's first bytes; raises EnvMapError for anything else."""
    check_regular_file(path, "", error=EnvMapError)
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as err:  # removed or made unreadable since the check
        raise EnvMapError(path, f"cannot be read ({err.strerror or one_line(err)})") from err
    if head.startswith(_EXR_MAGIC):
        return "exr"
    if any(head.startswith(magic) for magic in _RADIANCE_MAGICS):
        return "hdr"
    for magic, kind in _LDR_MAGICS.items():
        if head.startswith(magic):
            raise EnvMapError(path, _ldr_problem(f"{kind} data"))
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

    with reading(path, "an OpenEXR image (corrupt or truncated?)", error=EnvMapError):
        with OpenEXR.File(str(path), separate_channels=True) as exr:
            rgb = _pick_rgb_channels(path, exr.channels())
    if rgb.dtype.kind in "iu":
        raise EnvMapError(path, f"has integer ({rgb.dtype}) channels, not radiance")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise EnvMapError(path, f"unexpected channel layout {rgb.shape}")
    return rgb.astype(np.float32)


def read_hdr_image(path: Union[str, Path]) -> Float[Tensor, "h w 3"]:
    """Read an .exr or .hdr image as linear float32 RGB, negatives clamped to 0, with no environment-map checks.

    Raises:
        EnvMapError: not a regular file, missing, empty, corrupt or truncated file; an LDR image; an unsupported
            format; no RGB channels; no pixels; NaN or infinite values.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in LDR_SUFFIXES:
        check_regular_file(path, "", error=EnvMapError)
        raise EnvMapError(path, _ldr_problem(suffix))
    kind = _check_magic(path)
    rgb = _read_exr(path) if kind == "exr" else _read_hdr(path)
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise EnvMapError(path, "has no pixels")
    if not np.isfinite(rgb).all():
        raise EnvMapError(path, "contains NaN or infinite values")
    np.maximum(rgb, 0.0, out=rgb)
    return torch.from_numpy(np.ascontiguousarray(rgb))


def check_envmap(envmap: Float[Tensor, "h w 3"], source: Union[str, Path]) -> None:
    """Check that a map (negatives already clamped) can light a scene; see the module docstring for the rules.

    Raises:
        EnvMapError: naming ``source``: wrong shape, no light, or absurd radiance.
    """
    height, width = int(envmap.shape[0]), int(envmap.shape[1])
    if height < MIN_HEIGHT or width < 2 * MIN_HEIGHT:
        raise EnvMapError(
            source,
            f"is {width}x{height} pixels (width x height), too small for an equirectangular environment map, "
            f"which must be twice as wide as high and at least {2 * MIN_HEIGHT}x{MIN_HEIGHT}",
        )
    if width != 2 * height:
        ratio = width / height
        message = (
            f"is {width}x{height} pixels (aspect {ratio:.3g}:1); an equirectangular (latitude-longitude) "
            "environment map is twice as wide as high (2:1)"
        )
        if abs(ratio / 2.0 - 1.0) > ASPECT_TOLERANCE:
            raise EnvMapError(source, message + "; convert a mirror-ball, angular or cube-map probe first")
        warnings.warn(f"{source}: {message}; reading it as 2:1", stacklevel=3)
    peak = float(envmap.max())
    if not peak > 0.0:
        raise EnvMapError(source, "has no light: every pixel is zero or negative (black renders)")
    if peak > MAX_RADIANCE:
        raise EnvMapError(
            source,
            f"peak radiance {peak:.3g} is absurdly bright (the limit is {MAX_RADIANCE:.0e}); rescale the map "
            "(and use a strength option for its brightness)",
        )


def check_strength(option: str, value: float) -> float:
    """A radiance multiplier must be a finite number > 0 (0 or a negative value gives black renders).

    Raises:
        ConfigError: naming ``option``.
    """
    if not (np.isfinite(value) and value > 0.0):
        raise ConfigError(option, f"the radiance strength must be a positive number, got {value}")
    if value * MAX_RADIANCE > np.finfo(np.float32).max:
        raise ConfigError(option, f"the radiance strength {value:g} is absurdly large")
    return float(value)


def read_envmap(path: Union[str, Path]) -> Float[Tensor, "h w 3"]:
    """Read an equirectangular environment map (.exr or .hdr) as linear float32 radiance, negatives clamped to 0.

    Returns a CPU tensor ``[H, W, 3]`` (row 0 = top, see :mod:`relight3d.lighting.equirect`).

    Raises:
        EnvMapError: not a regular file; missing, empty, corrupt or truncated file; an LDR image (.png/.jpg, or 8-bit
            data under any name); an unsupported format; no RGB channels; NaN or infinite values; not 2:1 or
            too small; no light (all zero or negative); a peak above ``MAX_RADIANCE``.

    Example:
        >>> read_envmap("sky.png")  # doctest: +SKIP
        EnvMapError: sky.png: .png is a low-dynamic-range (8-bit) image; an environment map must be HDR ...
    """
    envmap = read_hdr_image(path)
    check_envmap(envmap, path)
    return envmap


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
        except RuntimeError as err:  # what the bindings raise when the file cannot be opened or written
            raise EnvMapError(path, f"OpenEXR could not write the file ({one_line(err)})") from err
    else:
        import cv2

        bgr = np.ascontiguousarray(np.maximum(array, 0.0)[..., ::-1])
        with _quiet_opencv():
            ok = cv2.imwrite(str(path), bgr)
        if not ok:
            raise EnvMapError(path, "OpenCV could not write the Radiance .hdr file")
    return path
