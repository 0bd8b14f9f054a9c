"""Image folders for evaluation: listing PNGs by view name, matching two folders, loading and compositing RGBA."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from relight3d.data.errors import DataError

PathLike = Union[str, Path]


@dataclass(frozen=True)
class ImageFolder:
    """A folder of PNG images, one per view. A view's name is the file's stem, or ``pattern``'s first group."""

    path: Path
    """The folder."""
    pattern: Optional[str] = None
    """Regular expression matched against whole file names (e.g. ``(\\d{3})_001_.*\\.png`` picks light 1 of an
    Objaverse object folder, named by view number). Files that do not match are ignored. None: every ``*.png``."""

    @classmethod
    def of(cls, value: Union["ImageFolder", PathLike]) -> "ImageFolder":
        """``value`` itself if it is an ImageFolder, else the folder at that path with no pattern."""
        return value if isinstance(value, ImageFolder) else cls(Path(value))

    def views(self) -> Dict[str, Path]:
        """``{view name: image path}``, sorted by name.

        Raises:
            DataError: the folder does not exist, or holds no matching PNG.
        """
        if not self.path.exists():
            raise DataError(self.path, "no such folder")
        if not self.path.is_dir():
            raise DataError(self.path, "not a folder")
        regex = re.compile(self.pattern) if self.pattern is not None else None
        found: Dict[str, Path] = {}
        for p in sorted(self.path.iterdir()):
            if not p.is_file():
                continue
            if regex is None:
                if p.suffix.lower() == ".png":
                    found[p.stem] = p
                continue
            m = regex.fullmatch(p.name)
            if m:
                key = m.group(1) if regex.groups else p.stem
                if key in found:
                    raise DataError(self.path, f"pattern {self.pattern!r} gives view {key!r} to two files")
                found[key] = p
        if not found:
            what = "PNG images" if regex is None else f"files matching {self.pattern!r}"
            raise DataError(self.path, f"no {what}")
        return dict(sorted(found.items()))


def match_views(pred: ImageFolder, gt: ImageFolder) -> List[Tuple[str, Path, Path]]:
    """``(view, pred path, gt path)`` for every view, when both folders hold the same views.

    Raises:
        DataError: one line naming the views that only one folder has.
    """
    pred_views, gt_views = pred.views(), gt.views()
    missing = [v for v in gt_views if v not in pred_views]
    extra = [v for v in pred_views if v not in gt_views]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"no prediction for {len(missing)} ground-truth view(s) {_first(missing)}")
        if extra:
            parts.append(f"{len(extra)} view(s) not in the ground truth {gt.path} {_first(extra)}")
        raise DataError(pred.path, "; ".join(parts))
    return [(v, pred_views[v], gt_views[v]) for v in gt_views]


def _first(names: List[str], n: int = 3) -> str:
    shown = ", ".join(names[:n])
    return f"({shown}{', ...' if len(names) > n else ''})"


def read_rgba(path: PathLike) -> np.ndarray:
    """An image as float32 RGBA in [0, 1], ``[h, w, 4]`` (images without alpha get alpha 1).

    Raises:
        DataError: the file is missing or not an image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise DataError(path, "no such file") from None
    except (UnidentifiedImageError, OSError) as err:
        raise DataError(path, f"cannot read the image ({type(err).__name__})") from None


def composite(rgba: np.ndarray, background: float) -> Float[Tensor, "h w 3"]:
    """Straight-alpha RGBA over a grey level ``background`` (1 = white)."""
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    return torch.from_numpy(rgb * alpha + background * (1.0 - alpha))


def load_pair(
    pred_path: Path, gt_path: Path, background: float
) -> Tuple[Float[Tensor, "h w 3"], Float[Tensor, "h w 3"], Float[Tensor, "h w 1"]]:
    """The prediction and the ground truth composited on ``background``, and the mask (GT alpha > 0.5).

    A prediction with an alpha channel is composited with its own alpha. A ground truth without alpha gives a mask of
    the whole image.

    Raises:
        DataError: an image cannot be read, or the two sizes differ.
    """
    gt_rgba = read_rgba(gt_path)
    pred_rgba = read_rgba(pred_path)
    if pred_rgba.shape != gt_rgba.shape:
        ph, pw = pred_rgba.shape[:2]
        gh, gw = gt_rgba.shape[:2]
        raise DataError(pred_path, f"size {pw}x{ph} differs from the ground truth's {gw}x{gh} ({gt_path})")
    mask = torch.from_numpy((gt_rgba[..., 3:] > 0.5).astype(np.float32))
    return composite(pred_rgba, background), composite(gt_rgba, background), mask
