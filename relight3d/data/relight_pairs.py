"""A relighting training set on disk: views of objects under known lights, with the views' G-buffers.

Layout (what ``relight3d train-prior gbuffer`` reads; ``relight3d data render`` is to write it)::

    <dataset>/manifest.jsonl        one JSON object per line, one training sample each:
        {"gbuffers": "gbuffer_frames/<clip>", "frame": 0, "image": "images/<name>.png",
         "envmap": "envmaps/<name>.exr", "envmap_rotation_deg": 0.0}
    <dataset>/gbuffer_frames/<clip>/ a clip in :mod:`relight3d.data.gbuffer_frames`' layout (its JSON sidecar holds
                                     each frame's camera-to-world; ``frame`` indexes it)
    <dataset>/images/                the view under that light: sRGB PNG, RGBA (straight colour) or RGB
    <dataset>/envmaps/               the light: linear HDR equirectangular map in world coordinates (.exr / .hdr),
                                     turned by ``envmap_rotation_deg`` about the world's up axis (default 0)

Every path is relative to the dataset folder and must stay inside it (a manifest cannot point elsewhere); a bad
line, a missing file or a frame out of range is a one-line :class:`~relight3d.errors.DataError` naming the manifest
line or the file. The image's size must be the clip's. The same clip can serve many samples (one object and view
under several lights), so clips are read once and kept.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple, Union

import torch
from jaxtyping import Float
from torch import Tensor

from relight3d.data.gbuffer_frames import GBufferFrame, read_gbuffer_frames
from relight3d.data.validation import jsonl_objects
from relight3d.errors import DataError

MANIFEST = "manifest.jsonl"
"""The manifest's file name in the dataset folder."""


@dataclass
class RelightSample:
    """One training sample: a view's G-buffers, its image under a light, and that light."""

    frame: GBufferFrame
    """The view's G-buffers (relight3d's conventions) and camera."""
    image: Float[Tensor, "h w 3"]
    """The view under the light, sRGB in [0, 1] (straight colour)."""
    envmap: Float[Tensor, "H W 3"]
    """The light, linear HDR in world coordinates (rotation applied)."""


def _inside(root: Path, value: Any, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise DataError(root / MANIFEST, f"{where}: expected a relative path, got {value!r}")
    path = (root / value).resolve()
    if not path.is_relative_to(root.resolve()):
        raise DataError(root / MANIFEST, f"{where}: {value!r} leaves the dataset folder")
    return path


def read_manifest(root: Union[str, Path]) -> List[Dict[str, Any]]:
    """The manifest's samples, checked (paths resolved inside ``root``, types), in file order.

    Raises:
        DataError: no manifest, an empty one, a line that is not a JSON object, or a bad field (naming the line).
    """
    root = Path(root)
    path = root / MANIFEST
    records = []
    for number, where, record in jsonl_objects(path, "no such manifest (a relighting dataset folder holds "
                                                     "manifest.jsonl)"):  # fmt: skip
        frame, rotation = record.get("frame"), record.get("envmap_rotation_deg", 0.0)
        if isinstance(frame, bool) or not isinstance(frame, int) or frame < 0:
            raise DataError(path, f"{where}: frame must be an integer >= 0, got {frame!r}")
        if isinstance(rotation, bool) or not isinstance(rotation, (int, float)) or not math.isfinite(rotation):
            raise DataError(path, f"{where}: envmap_rotation_deg must be a finite number, got {rotation!r}")
        records.append({
            "gbuffers": _inside(root, record.get("gbuffers"), f"{where}: gbuffers"),
            "frame": frame,
            "image": _inside(root, record.get("image"), f"{where}: image"),
            "envmap": _inside(root, record.get("envmap"), f"{where}: envmap"),
            "envmap_rotation_deg": float(rotation),
            "line": number,
        })  # fmt: skip
    if not records:
        raise DataError(path, "holds no samples")
    return records


class RelightPairs:
    """The samples of a dataset folder, loaded on demand (clips and maps read once and kept).

    Example:
        >>> pairs = RelightPairs("data/relight_set")  # doctest: +SKIP
        >>> sample = pairs[0]; sample.image.shape, sample.frame.normals.shape  # doctest: +SKIP
    """

    def __init__(self, root: Union[str, Path]) -> None:
        self.root = Path(root)
        self.records = read_manifest(self.root)
        self._clips: Dict[Path, List[GBufferFrame]] = {}
        self._maps: Dict[tuple, Tensor] = {}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> RelightSample:
        from relight3d.data.images import read_rgba
        from relight3d.lighting import read_envmap, rotate_envmap_about_up

        record = self.records[index]
        clip = record["gbuffers"]
        if clip not in self._clips:
            self._clips[clip] = read_gbuffer_frames(clip.parent, clip.name)
        frames = self._clips[clip]
        if record["frame"] >= len(frames):
            raise DataError(self.root / MANIFEST, f"line {record['line']}: frame {record['frame']} is out of range "
                                                  f"({len(frames)} frames in {clip})")  # fmt: skip
        frame = frames[record["frame"]]
        key = (record["envmap"], record["envmap_rotation_deg"])
        if key not in self._maps:
            env = read_envmap(record["envmap"])
            if record["envmap_rotation_deg"]:
                env = rotate_envmap_about_up(env, math.radians(record["envmap_rotation_deg"]))
            self._maps[key] = env
        rgba, _ = read_rgba(record["image"])
        image = torch.from_numpy(rgba[..., :3].copy()).float()
        if image.shape[:2] != frame.mask.shape[:2]:
            raise DataError(record["image"], f"image is {image.shape[1]}x{image.shape[0]}, its G-buffers "
                                             f"{frame.mask.shape[1]}x{frame.mask.shape[0]}")  # fmt: skip
        return RelightSample(frame, image, self._maps[key])


def light_pairs(records: Sequence[Dict[str, Any]]) -> List[Tuple[int, int]]:
    """The training pairs ``(a, b)`` of a relighting manifest's samples
    (:func:`~relight3d.data.relight_pairs.read_manifest`): sample ``a`` is the input, ``b`` the target, one view (same
    ``gbuffers`` clip and ``frame``) under two different lights (``envmap`` and ``envmap_rotation_deg`` not both
    equal).

    The order is fixed by the manifest alone: views in the order of their first sample, and within a view every
    ordered pair of its samples, the input's manifest order first, then the target's. A view under ``k`` lights
    gives ``k (k - 1)`` pairs.

    Example:
        >>> rows = [{"gbuffers": "c", "frame": 0, "envmap": e, "envmap_rotation_deg": 0.0} for e in "ABC"]
        >>> light_pairs(rows)
        [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    """
    views: Dict[Tuple[Any, int], List[int]] = {}
    for i, record in enumerate(records):
        views.setdefault((record["gbuffers"], record["frame"]), []).append(i)

    def light(i: int) -> Tuple[Any, float]:
        return records[i]["envmap"], float(records[i].get("envmap_rotation_deg", 0.0))

    return [(a, b) for samples in views.values() for a in samples for b in samples if light(a) != light(b)]


class LightPairs:
    """The pairs of a relighting dataset folder (:func:`light_pairs`), loaded on demand.

    Raises:
        DataError: the folder's manifest is missing or bad, or no view is rendered under two different lights.
    """

    def __init__(self, root: Union[str, Path]) -> None:
        self.samples = RelightPairs(root)
        self.pairs = light_pairs(self.samples.records)
        if not self.pairs:
            raise DataError(Path(root) / MANIFEST, "no view is rendered under two different lights (no training pair)")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Tuple[RelightSample, RelightSample]:
        """``(input, target)``: the view under light A and under light B (the target's map is B)."""
        a, b = self.pairs[index]
        return self.samples[a], self.samples[b]


def write_manifest(root: Union[str, Path], records: List[Dict[str, Any]]) -> Path:
    """Write ``manifest.jsonl`` (``records``: the fields of the module docstring, paths relative to ``root``)."""
    path = Path(root) / MANIFEST
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


__all__ = ["MANIFEST", "LightPairs", "RelightPairs", "RelightSample", "light_pairs", "read_manifest", "write_manifest"]
