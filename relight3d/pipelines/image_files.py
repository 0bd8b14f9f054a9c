"""File work of ``relight3d data from-images``: listing photos and maps, fitting photos to size, the output folder
(refusing to overwrite, resuming, atomic PNG writes). The layout is documented in
:mod:`relight3d.pipelines.image_triplets`.

Layer: pipelines (it reads with :mod:`relight3d.data` and :mod:`relight3d.lighting`). Photos are read with
:func:`relight3d.data.images.read_rgba` by the caller, so a bad photo is one :class:`~relight3d.errors.DataError`
line naming it.
"""

from __future__ import annotations

import io
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from relight3d.errors import ConfigError, DataError, one_line

TRIPLETS = "triplets.jsonl"
"""The triplet list's file name in the output folder."""
SUMMARY = "summary.json"
"""The summary's file name in the output folder."""
IMAGE_FOLDERS = ("inputs", "targets", "masks", "albedo")
"""The output's image folders."""

ENVMAP_MAX_HEIGHT = 64
"""Maps are averaged down to this height when read (enough for SH diffuse and rough GGX)."""


def shipped_envmap_folder() -> Path:
    """The HDR maps shipped with relight3d."""
    return Path(str(resources.files("relight3d").joinpath("assets", "envmaps")))


def list_photos(folder: Path) -> List[Path]:
    """The photos at the top of ``folder``, by name.

    Raises:
        DataError: not a folder, no photos, or two photos with the same stem.
    """
    from relight3d.data.validation import IMAGE_FORMATS

    if not folder.is_dir():
        raise DataError(folder, "no such folder (--input is a folder of object photos)")
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_FORMATS and not p.name.startswith("."))
    if not photos:
        raise DataError(folder, f"holds no photos ({' '.join(sorted(IMAGE_FORMATS))})")
    stems: Dict[str, Path] = {}
    for photo in photos:
        if photo.stem in stems:
            raise DataError(photo, f"has the same stem as {stems[photo.stem].name}; rename one of them")
        stems[photo.stem] = photo
    return photos


def load_envmaps(folder: Optional[Path], needed: bool) -> Dict[str, Float[Tensor, "H W 3"]]:
    """The maps of ``folder`` (default: the shipped ones) by file name, at most :data:`ENVMAP_MAX_HEIGHT` rows high.

    Raises:
        DataError: a map does not read, or ``needed`` and the folder holds none.
    """
    from relight3d.lighting import read_envmap, resize_envmap

    folder = shipped_envmap_folder() if folder is None else Path(folder)
    if not needed:
        return {}
    if not folder.is_dir():
        raise DataError(folder, "no such folder (--envmaps is a folder of .exr / .hdr maps)")
    maps = {}
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".exr", ".hdr")):
        envmap = read_envmap(path)
        maps[path.name] = resize_envmap(envmap, ENVMAP_MAX_HEIGHT) if envmap.shape[0] > ENVMAP_MAX_HEIGHT else envmap
    if not maps:
        raise DataError(folder, "holds no .exr / .hdr maps (or set --directional-fraction 1)")
    return maps


def fit_photo(rgba: Float[Tensor, "h w 4"], resolution: int) -> Float[Tensor, "h2 w2 4"]:
    """``rgba`` (straight alpha) resized so that its longest side is ``resolution`` (premultiplied, antialiased)."""
    height, width, _ = rgba.shape
    scale = resolution / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    if size == (height, width):
        return rgba
    alpha = rgba[..., 3:]
    premultiplied = torch.cat([rgba[..., :3] * alpha, alpha], dim=-1).permute(2, 0, 1)[None]
    resized = F.interpolate(premultiplied, size=size, mode="bilinear", antialias=scale < 1, align_corners=False)
    resized = resized[0].permute(1, 2, 0).clamp(0.0, 1.0)
    alpha = resized[..., 3:]
    rgb = torch.where(alpha > 1e-6, resized[..., :3] / alpha.clamp_min(1e-6), torch.zeros_like(resized[..., :3]))
    return torch.cat([rgb.clamp(0.0, 1.0), alpha], dim=-1)


def pad_square(image: Float[Tensor, "h w c"], size: int, value: float) -> Float[Tensor, "size size c"]:
    """``image`` centred on a ``size x size`` canvas filled with ``value``."""
    height, width, _ = image.shape
    top, left = (size - height) // 2, (size - width) // 2
    return F.pad(image.permute(2, 0, 1), (left, size - width - left, top, size - height - top), value=value).permute(
        1, 2, 0
    )


def png_bytes(image: Float[Tensor, "h w c"]) -> bytes:
    """An image in [0, 1] (1 channel: grey, 3: RGB) as 8-bit PNG bytes."""
    from PIL import Image

    array = (image.detach().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` (never through a link), then rename it to ``path``.

    Raises:
        DataError: the file cannot be written.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError as err:
        raise DataError(path, f"cannot be written: {one_line(err)}") from err


def _whole_photos(path: Path, variants: int) -> List[str]:
    """The lines of ``triplets.jsonl`` that belong to photos with all ``variants`` lines (a run cut off while
    appending leaves a photo part-written or a line cut short; those are dropped)."""
    if not path.is_file():
        return []
    parsed: List[Tuple[str, str]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("source"), str):
            parsed.append((record["source"], line))
    counts: Dict[str, int] = {}
    for source, _ in parsed:
        counts[source] = counts.get(source, 0) + 1
    return [line for source, line in parsed if counts[source] == variants]


def _comparable(settings: Any) -> Any:
    """Settings without those that may change when a run is resumed (the flags, and where the folder is now)."""
    if not isinstance(settings, dict):
        return settings
    return {k: v for k, v in settings.items() if k not in ("output", "overwrite", "resume", "device")}


def prepare_output(
    output: Path, settings: Dict[str, Any], overwrite: bool, resume: bool, variants: int
) -> Tuple[List[str], Dict[str, Any]]:
    """Make ``output`` ready to write to; return the ``triplets.jsonl`` lines and summary of a run to resume.

    An empty or missing folder is used as is. A non-empty one is refused unless ``overwrite`` (the earlier run's
    ``triplets.jsonl``, ``summary.json`` and the PNGs of its image folders are deleted first, nothing else) or
    ``resume`` (its summary's settings must equal ``settings``, the flags and the output's path aside; its whole
    photos are kept).

    Raises:
        ConfigError: ``--output`` is not empty, or ``--resume`` with other settings.
        DataError: the output or one of its image folders is a file, or a link (never written through).
    """
    if output.exists() and not output.is_dir():
        raise DataError(output, "exists and is not a folder")
    for name in IMAGE_FOLDERS:
        folder = output / name
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            raise DataError(folder, "is a link or a file; refusing to write through it")
    lines: List[str] = []
    previous: Dict[str, Any] = {}
    if output.is_dir() and any(output.iterdir()):
        if resume:
            try:
                previous = json.loads((output / SUMMARY).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                raise DataError(output / SUMMARY, f"cannot resume from it: {one_line(err)}") from err
            if not isinstance(previous, dict) or _comparable(previous.get("settings")) != _comparable(settings):
                raise ConfigError("--resume", f"{output} was written with other settings (see its {SUMMARY}); "
                                              "run with those, or use --overwrite")  # fmt: skip
            lines = _whole_photos(output / TRIPLETS, variants)
        elif not overwrite:
            raise ConfigError("--output", f"{output} is not empty; pass --overwrite to replace an earlier run's "
                                          "triplets there, or --resume to continue it")  # fmt: skip
        else:
            for name in (TRIPLETS, SUMMARY):
                (output / name).unlink(missing_ok=True)
            for name in IMAGE_FOLDERS:
                for png in (output / name).glob("*.png") if (output / name).is_dir() else []:
                    png.unlink()
    try:
        for name in IMAGE_FOLDERS:
            (output / name).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(output, f"cannot be created: {one_line(err)}") from err
    write_atomically(output / TRIPLETS, "".join(line + "\n" for line in lines).encode("utf-8"))
    return lines, previous


def append_lines(path: Path, lines: List[str]) -> None:
    """Append whole lines to ``path`` in one write.

    Raises:
        DataError: the file cannot be written.
    """
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write("".join(line + "\n" for line in lines))
    except OSError as err:
        raise DataError(path, f"cannot be written: {one_line(err)}") from err


__all__ = [
    "ENVMAP_MAX_HEIGHT",
    "IMAGE_FOLDERS",
    "SUMMARY",
    "TRIPLETS",
    "append_lines",
    "prepare_output",
    "fit_photo",
    "list_photos",
    "load_envmaps",
    "pad_square",
    "png_bytes",
    "shipped_envmap_folder",
    "write_atomically",
]
