"""Image folders for evaluation: listing PNGs by view name, matching two folders, loading and compositing RGBA.

Images are read by :func:`relight3d.data.images.read_rgba` (checked decoding, straight alpha).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from relight3d.data.images import read_rgba
from relight3d.errors import DataError

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
        try:
            regex = re.compile(self.pattern) if self.pattern is not None else None
        except re.error as err:
            raise DataError(self.path, f"pattern {self.pattern!r} is not a valid regular expression ({err})") from err
        found: Dict[str, Path] = {}
        for p in sorted(self.path.iterdir()):
            if p.is_dir():
                continue  # a FIFO or device under an image's name is kept, and refused (unopened) when read
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


def parse_background(value: Union[str, float]) -> float:
    """``"white"`` -> 1, ``"black"`` -> 0, or a number in [0, 1].

    Raises:
        ValueError: anything else.

    Example:
        >>> parse_background("black"), parse_background("0.5")
        (0.0, 0.5)
    """
    named = {"white": 1.0, "black": 0.0}
    if isinstance(value, str) and value.strip().lower() in named:
        return named[value.strip().lower()]
    try:
        level = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"background must be white, black or a number in [0, 1], not {value!r}") from err
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"background must be in [0, 1], not {level}")
    return level


def composite(rgba: np.ndarray, background: float) -> Float[Tensor, "h w 3"]:
    """Straight-alpha RGBA over a grey level ``background`` (1 = white)."""
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    return torch.from_numpy(rgb * alpha + background * (1.0 - alpha))


NO_ALPHA_PROBLEM = (
    "the ground truth has no alpha channel, so there is no object mask for the in-mask metrics: give it one "
    "(alpha = object mask), or pass --no-mask to score the full image only"
)


def load_pair(
    pred_path: Path, gt_path: Path, background: float, use_mask: bool = True
) -> Tuple[Float[Tensor, "h w 3"], Float[Tensor, "h w 3"], Float[Tensor, "h w 1"]]:
    """The prediction and the ground truth composited on ``background``, and the mask (GT alpha > 0.5).

    A prediction with an alpha channel is composited with its own alpha.

    Args:
        pred_path: the prediction.
        gt_path: the ground truth; it must have an alpha channel (the object mask) unless ``use_mask`` is False.
        background: grey level both are composited on.
        use_mask: False: the mask is the whole image (the caller reports no in-mask metrics).

    Raises:
        DataError: an image cannot be read, the ground truth has no alpha while ``use_mask``, or the sizes differ.
    """
    gt_rgba, gt_has_alpha = read_rgba(gt_path)
    if use_mask and not gt_has_alpha:
        raise DataError(gt_path, NO_ALPHA_PROBLEM)
    pred_rgba, _ = read_rgba(pred_path)
    if pred_rgba.shape != gt_rgba.shape:
        ph, pw = pred_rgba.shape[:2]
        gh, gw = gt_rgba.shape[:2]
        raise DataError(pred_path, f"size {pw}x{ph} differs from the ground truth's {gw}x{gh} ({gt_path})")
    alpha = gt_rgba[..., 3:] if use_mask else np.ones_like(gt_rgba[..., 3:])
    mask = torch.from_numpy((alpha > 0.5).astype(np.float32))
    return composite(pred_rgba, background), composite(gt_rgba, background), mask
