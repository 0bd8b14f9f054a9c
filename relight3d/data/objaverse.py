"""Objaverse / Neural Gaffer object folders.

Layout of one object folder::

    000_RT.npy                      3x4 world-to-camera matrix, Blender camera convention (-Z forward, +Y up)
    000_000_<envname>.png           view 0 under light 0 (RGBA; alpha is the object mask)
    000_001_<envname>.png           view 0 under light 1, ...
    <envname>.exr | <envname>.hdr   the environment maps (here or in envmaps/), matched by name

Intrinsics follow the renders: a 35 mm lens on a 32 mm sensor, principal point at the centre.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Type

import numpy as np
import torch
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs

from relight3d.data.object_outputs import ObjectDataParser, ObjectDataParserConfig, object_outputs
from relight3d.data.validation import (
    OUTSIDE_PATHS_HINT,
    check_images,
    check_pose,
    check_regular_file,
    resolve_inside,
)
from relight3d.errors import ConfigError, DataError, reading

IMAGE_PATTERN = re.compile(r"^(\d{3})_(\d{3})_(.+)\.png$")
LENS_MM = 35.0
SENSOR_MM = 32.0


def scan_object_folder(folder: Path) -> Dict[int, Dict[int, Tuple[str, Path]]]:
    """``{view: {light: (envname, image path)}}`` for every image in an object folder."""
    found: Dict[int, Dict[int, Tuple[str, Path]]] = {}
    for p in sorted(folder.glob("*.png")):
        m = IMAGE_PATTERN.match(p.name)
        if m:
            found.setdefault(int(m.group(1)), {})[int(m.group(2))] = (m.group(3), p)
    return found


def find_envmap(folder: Path, envname: str) -> Optional[Path]:
    """The environment map named ``envname`` (.exr or .hdr) in the folder or its ``envmaps/`` subfolder."""
    for sub in (folder, folder / "envmaps", folder.parent / "envmaps"):
        for ext in (".exr", ".hdr"):
            p = sub / f"{envname}{ext}"
            if p.is_file():
                return p
    return None


@dataclass
class ObjaverseDataParserConfig(ObjectDataParserConfig):
    """Objaverse / Neural Gaffer object folders (``{view:03d}_RT.npy`` + ``{view:03d}_{light:03d}_{env}.png``)."""

    _target: Type = field(default_factory=lambda: ObjaverseDataParser)
    """Dataparser class to instantiate."""
    light_index: int = 0
    """Which light's images the field trains on."""
    train_views: Tuple[int, int] = (0, 100)
    """Half-open range of view indices used for training."""
    eval_views: Tuple[int, int] = (100, 120)
    """Half-open range of view indices used for evaluation."""
    allow_outside_paths: bool = False
    """Read images, cameras and maps that resolve outside the object folder (symlinks out of it; maps outside the
    folder and the shared ``../envmaps/``). Off by default: a downloaded folder must not make relight3d read files
    elsewhere."""


class ObjaverseDataParser(ObjectDataParser):
    """Reads one Objaverse / Neural Gaffer object folder."""

    config: ObjaverseDataParserConfig

    def _check_config(self) -> None:
        super()._check_config()
        c = self.config
        if c.light_index < 0:
            raise ConfigError("light_index", f"must be >= 0, got {c.light_index}")
        for name in ("train_views", "eval_views"):
            lo, hi = getattr(c, name)
            if not 0 <= lo < hi:
                raise ConfigError(name, f"must be a half-open range 0 <= start < end, got ({lo}, {hi})")

    def _generate_dataparser_outputs(self, split: str = "train") -> DataparserOutputs:
        folder = Path(self.config.data)
        if not folder.is_dir():
            raise DataError(folder, "object folder not found")
        self._check_config()
        lo, hi = self.config.train_views if split == "train" else self.config.eval_views
        views = scan_object_folder(folder)
        allow = self.config.allow_outside_paths
        light = self.config.light_index
        selected = [v for v in sorted(views) if lo <= v < hi and light in views[v]]
        if not selected:
            raise DataError(folder, f"empty dataset: no images for views {lo}-{hi - 1} under light {light:03d}")
        images: List[Path] = []
        c2w = []
        envnames = set()
        for v in selected:
            rt_path = folder / f"{v:03d}_RT.npy"
            if not rt_path.exists():
                raise DataError(rt_path, f"camera file missing for view {v:03d}")
            check_regular_file(rt_path, "camera")
            resolve_inside(folder, rt_path.name, rt_path, "the camera file", allow)
            with reading(rt_path, "a camera matrix (.npy)"):
                rt = np.load(rt_path, allow_pickle=False)
            rt = check_pose(rt, rt_path, f"view {v:03d}", rows=3)
            w2c = np.eye(4)
            w2c[:3] = rt
            c2w.append(np.linalg.inv(w2c)[:3])
            envname, path = views[v][light]
            resolve_inside(folder, path.name, path, "the image", allow)
            envnames.add(envname)
            images.append(path)
        width, height = check_images(images, require_alpha=True)
        focal = width * LENS_MM / SENSOR_MM
        envmaps = {name: find_envmap(folder, name) for name in sorted(envnames)}
        for p in envmaps.values():
            roots = (folder, folder.parent / "envmaps")
            if p is not None and not allow and not any(p.resolve().is_relative_to(r.resolve()) for r in roots):
                problem = f"the map resolves outside the object folder (to {p.resolve()}); {OUTSIDE_PATHS_HINT}"
                raise DataError(p, problem)
        metadata = {"light_index": light, "envmap_paths": envmaps, "view_indices": selected}
        c2w_t = torch.from_numpy(np.stack(c2w))
        return object_outputs(images, c2w_t, width, height, focal, self.config.scene_scale, metadata)
