"""Bad inputs for the corpus (tests/bad_input): small images, maps, scenes and object folders, and ways to break them.

Nothing here runs relight3d; :mod:`bad_input_cases` turns these into cases.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from relight3d.geometry import look_at as geometry_look_at
from relight3d.geometry import to_homogeneous

NAN, INF = float("nan"), float("inf")


def png(path: Path, size: Tuple[int, int] = (16, 16), mode: str = "RGBA", empty_alpha: bool = False) -> Path:
    """A small image: a grey square with an opaque disc of alpha (RGBA) in the middle."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    disc = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (0.3 * min(w, h)) ** 2) & (not empty_alpha)
    rgb = np.full((h, w, 3), 120, np.uint8)
    arr = np.concatenate([rgb, (disc * 255).astype(np.uint8)[..., None]], -1) if mode == "RGBA" else rgb
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def jpeg_as(path: Path, size: Tuple[int, int] = (16, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 100, np.uint8)).save(path, format="JPEG")
    return path


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def replace_with_fifo(path: Path) -> Path:
    path.unlink()
    return fifo(path)


def replace_with_folder(path: Path) -> Path:
    path.unlink()
    path.mkdir()
    return path


def exr(path: Path, array: np.ndarray) -> Path:
    """Write float32 RGB as .exr without relight3d's checks (so NaN and infinity can be written)."""
    import OpenEXR

    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, {"RGB": np.ascontiguousarray(array, dtype=np.float32)}).write(str(path))
    return path


def sky(h: int = 8, w: int = 16, value: float = 1.0) -> np.ndarray:
    return np.full((h, w, 3), value, np.float32)


def look_at(position: np.ndarray) -> np.ndarray:
    """The 4x4 camera-to-world matrix of a camera at ``position`` looking at the origin (relight3d.geometry)."""
    return to_homogeneous(geometry_look_at(torch.as_tensor(position, dtype=torch.float64))).numpy()


def blender(root: Path, n: int = 2, frames: Optional[List[dict]] = None) -> Path:
    """A Blender scene: ``n`` RGBA views in train/, the same frames as the val and test splits."""
    root.mkdir(parents=True, exist_ok=True)
    if frames is None:
        frames = []
        for i in range(n):
            png(root / "train" / f"r_{i}.png")
            pose = look_at(np.array([3.0 * np.cos(i), 3.0 * np.sin(i), 1.0]))
            frames.append({"file_path": f"./train/r_{i}", "transform_matrix": pose.tolist()})
    for split in ("train", "val", "test"):
        (root / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": 0.8, "frames": frames}))
    return root


def objaverse(root: Path, n: int = 2) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for v in range(n):
        np.save(root / f"{v:03d}_RT.npy", np.linalg.inv(look_at(np.array([3.0 * np.cos(v), 3.0 * np.sin(v), 1.0])))[:3])
        png(root / f"{v:03d}_000_studio.png")
    return root


def write_frames(scene: Path, edit: Callable[[List[dict]], object]) -> None:
    meta = json.loads((scene / "transforms_train.json").read_text())
    edit(meta["frames"])
    (scene / "transforms_train.json").write_text(json.dumps(meta))


def outside_file(scene: Path) -> Path:
    return png(scene.parent / "outside" / "secret.png")


def symlink_out(path: Path, target: Path) -> None:
    path.unlink()
    path.symlink_to(target)


class Exploit:
    """An object that only unpickles by running code: ``weights_only`` loading must refuse it."""

    def __reduce__(self):  # noqa: ANN204
        return (os.getcwd, ())


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
