"""Camera paths for videos: orbits and spirals around the object, and nerfstudio's camera-path JSON.

Cameras are nerfstudio :class:`~nerfstudio.cameras.cameras.Cameras` in the model's world frame, with the OpenGL
camera convention (x right, y up, looking down -z) that nerfstudio uses; poses come from
:func:`relight3d.geometry.look_at` and :func:`relight3d.export.orbits.orbit_directions`. World up defaults to +Z
(Blender scenes and nerfstudio's oriented datasets). Paths written by :func:`write_camera_path_json` are read by
``ns-render camera-path`` unchanged, and :func:`load_camera_path_json` reads the files that nerfstudio's viewer saves.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras, CameraType
from torch import Tensor

from relight3d.data.validation import load_json
from relight3d.errors import DataError
from relight3d.export.orbits import orbit_directions
from relight3d.geometry import look_at

PATH_KINDS: Tuple[str, ...] = ("orbit", "spiral")
"""Names of the generated paths (anything else given as a path is read as a camera-path JSON file)."""


@dataclass(frozen=True)
class ViewSettings:
    """Where generated paths look from and with which lens."""

    radius: float = 4.0
    """Camera distance from the target."""
    elevation: float = 20.0
    """Elevation above the target's horizontal plane, in degrees."""
    vertical_fov: float = 40.0
    """Vertical field of view in degrees."""
    width: int = 256
    """Image width in pixels."""
    height: int = 256
    """Image height in pixels."""
    target: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Point the cameras look at."""
    up: Tuple[float, float, float] = (0.0, 0.0, 1.0)
    """World up direction."""


def cameras_from_poses(
    camera_to_worlds: Float[Tensor, "n 3 4"], width: int, height: int, vertical_fov: float
) -> Cameras:
    """Pinhole cameras with square pixels and a centred principal point."""
    focal = height / (2.0 * math.tan(math.radians(vertical_fov) / 2.0))
    n = camera_to_worlds.shape[0]
    return Cameras(
        camera_to_worlds=camera_to_worlds.float(),
        fx=torch.full((n, 1), focal),
        fy=torch.full((n, 1), focal),
        cx=torch.full((n, 1), width / 2.0),
        cy=torch.full((n, 1), height / 2.0),
        width=torch.full((n, 1), width, dtype=torch.long),
        height=torch.full((n, 1), height, dtype=torch.long),
        camera_type=CameraType.PERSPECTIVE,
    )


def _path_on_sphere(n_frames: int, azimuths: Tensor, elevations: Tensor, radii: Tensor, view: ViewSettings) -> Cameras:
    if n_frames < 1:
        raise ValueError(f"a camera path needs at least one frame, got {n_frames}")
    target = torch.tensor(view.target, dtype=torch.float32)
    positions = target + radii[:, None] * orbit_directions(azimuths, elevations, view.up)
    poses = look_at(positions, target, view.up)
    return cameras_from_poses(poses, view.width, view.height, view.vertical_fov)


def orbit_path(
    n_frames: int, view: ViewSettings = ViewSettings(), turns: float = 1.0, start_azimuth: float = 0.0
) -> Cameras:
    """``n_frames`` cameras on a horizontal circle around the target at ``view.elevation``; a full turn loops
    seamlessly (the last frame stops one step short of the first).

    Example:
        >>> cams = orbit_path(120, ViewSettings(radius=3.2, width=256, height=256))
        >>> cams.camera_to_worlds.shape
        torch.Size([120, 3, 4])
    """
    i = torch.arange(n_frames, dtype=torch.float32)
    azimuths = start_azimuth + 360.0 * turns * i / n_frames
    return _path_on_sphere(
        n_frames, azimuths, torch.full_like(i, view.elevation), torch.full_like(i, view.radius), view
    )


def spiral_path(
    n_frames: int,
    view: ViewSettings = ViewSettings(),
    turns: float = 2.0,
    elevation_amplitude: float = 25.0,
    radius_amplitude: float = 0.0,
    start_azimuth: float = 0.0,
) -> Cameras:
    """A spiral around the target: ``turns`` turns while the elevation swings once down and up by
    ``elevation_amplitude`` degrees around ``view.elevation`` (and the radius by ``radius_amplitude``), so the path
    ends where it began."""
    i = torch.arange(n_frames, dtype=torch.float32)
    phase = 2.0 * math.pi * i / n_frames
    azimuths = start_azimuth + 360.0 * turns * i / n_frames
    elevations = (view.elevation + elevation_amplitude * torch.sin(phase)).clamp(-89.0, 89.0)
    radii = view.radius * (1.0 + radius_amplitude * torch.sin(phase))
    return _path_on_sphere(n_frames, azimuths, elevations, radii, view)


def default_view(
    train_cameras: Optional[Cameras] = None, width: Optional[int] = None, height: Optional[int] = None
) -> ViewSettings:
    """View settings matching a dataset's training cameras: their mean distance to the origin, their mean
    elevation (clamped to 5..45 degrees) and their vertical field of view, at their size unless given."""
    if train_cameras is None or len(train_cameras) == 0:
        return ViewSettings(width=width or 256, height=height or 256)
    positions = train_cameras.camera_to_worlds[:, :3, 3].float()
    radius = float(positions.norm(dim=-1).mean())
    elevation = float(torch.rad2deg(torch.asin((positions[:, 2] / positions.norm(dim=-1)).clamp(-1, 1))).mean())
    h0 = float(train_cameras.height[0])
    fy = float(train_cameras.fy[0])
    fov = math.degrees(2.0 * math.atan(h0 / (2.0 * fy)))
    w = width or int(train_cameras.width[0])
    h = height or int(train_cameras.height[0])
    return ViewSettings(radius=radius, elevation=min(max(elevation, 5.0), 45.0), vertical_fov=fov, width=w, height=h)


# --- nerfstudio camera-path JSON ----------------------------------------------------------------------------------
def camera_path_dict(cameras: Cameras, fps: float) -> Dict[str, Any]:
    """nerfstudio's camera-path JSON (the viewer's format, read by ``ns-render camera-path``) for ``cameras``."""
    height, width = int(cameras.height[0]), int(cameras.width[0])
    frames = []
    for i in range(len(cameras)):
        c2w = torch.eye(4)
        c2w[:3] = cameras.camera_to_worlds[i].float().cpu()
        fov = math.degrees(2.0 * math.atan(height / (2.0 * float(cameras.fy[i]))))
        frames.append({"camera_to_world": c2w.flatten().tolist(), "fov": fov, "aspect": width / height})
    return {
        "camera_type": "perspective",
        "render_height": height,
        "render_width": width,
        "camera_path": frames,
        "fps": fps,
        "seconds": len(cameras) / fps,
        "smoothness_value": 0.0,
        "is_cycle": False,
        "crop": None,
    }


def write_camera_path_json(cameras: Cameras, path: Union[str, Path], fps: float = 24.0) -> Path:
    """Write ``cameras`` as a nerfstudio camera-path JSON file (for ``ns-render camera-path``)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(camera_path_dict(cameras, fps), indent=1))
    return out


def load_camera_path_json(path: Union[str, Path]) -> Tuple[Cameras, Optional[float]]:
    """Cameras and frame rate of a nerfstudio camera-path JSON file (from the viewer, Blender add-on or
    :func:`write_camera_path_json`). The frame rate is ``fps``, else frames / ``seconds``, else None.

    Raises:
        DataError: (one line) a missing or malformed file, or missing or invalid fields.
    """
    from nerfstudio.cameras.camera_paths import get_path_from_json

    src = Path(path)
    data = load_json(src)
    for key in ("render_height", "render_width", "camera_path"):
        if key not in data:
            raise DataError(src, f"not a nerfstudio camera path: no '{key}' field")
    frames = data["camera_path"]
    if not isinstance(frames, list) or not frames:
        raise DataError(src, "camera path has no frames")
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict) or "camera_to_world" not in frame:
            raise DataError(src, f"frame {i}: no 'camera_to_world'")
        m = np.asarray(frame["camera_to_world"], dtype=np.float64).reshape(-1)
        if m.size != 16 or not np.isfinite(m).all():
            raise DataError(src, f"frame {i}: 'camera_to_world' must be 16 finite numbers")
        if data.get("camera_type", "perspective") in ("perspective", "fisheye") and "fov" not in frame:
            raise DataError(src, f"frame {i}: no 'fov'")
    try:
        cameras = get_path_from_json(data)
    except (KeyError, ValueError, TypeError, RuntimeError) as err:
        raise DataError(src, f"invalid camera path ({err.__class__.__name__}: {err})") from err
    cameras.width = torch.full_like(cameras.width, int(data["render_width"]))
    cameras.height = torch.full_like(cameras.height, int(data["render_height"]))
    for name in ("fx", "fy", "cx", "cy", "camera_to_worlds"):  # nerfstudio builds float64 intrinsics from JSON
        setattr(cameras, name, getattr(cameras, name).float())
    fps = data.get("fps")
    if fps is None and data.get("seconds"):
        fps = len(frames) / float(data["seconds"])
    return cameras, (float(fps) if fps else None)


def make_camera_path(
    kind_or_file: Union[str, Path],
    n_frames: int,
    view: ViewSettings,
    size_override: Sequence[Optional[int]] = (None, None),
) -> Tuple[Cameras, Optional[float]]:
    """``'orbit'``, ``'spiral'`` (``n_frames`` frames around ``view``) or a camera-path JSON file (its own frames,
    resized to ``size_override`` = (width, height) where given). Returns the cameras and the file's frame rate."""
    if str(kind_or_file) == "orbit":
        return orbit_path(n_frames, view), None
    if str(kind_or_file) == "spiral":
        return spiral_path(n_frames, view), None
    source = Path(kind_or_file)
    if not source.exists() and source.suffix.lower() != ".json":
        raise DataError(source, f"unknown camera path: use {', '.join(PATH_KINDS)} or a nerfstudio camera_path.json")
    cameras, fps = load_camera_path_json(source)
    width, height = size_override
    if width is not None or height is not None:
        w0, h0 = int(cameras.width[0]), int(cameras.height[0])
        new_w = width if width is not None else round(w0 * height / h0)
        new_h = height if height is not None else round(h0 * width / w0)
        cameras.fx = cameras.fx * (new_h / h0)
        cameras.fy = cameras.fy * (new_h / h0)
        cameras.cx = torch.full_like(cameras.cx, new_w / 2.0)
        cameras.cy = torch.full_like(cameras.cy, new_h / 2.0)
        cameras.width = torch.full_like(cameras.width, new_w)
        cameras.height = torch.full_like(cameras.height, new_h)
    return cameras, fps


def camera_path_for(
    pipeline: Any,
    path: Union[str, Path] = "orbit",
    n_frames: int = 120,
    width: Optional[int] = None,
    height: Optional[int] = None,
    radius: Optional[float] = None,
    elevation: Optional[float] = None,
    vertical_fov: Optional[float] = None,
) -> Tuple[Cameras, Optional[float]]:
    """The cameras of a video of a trained pipeline: an orbit or spiral matched to its training cameras (distance,
    elevation, field of view and image size, each overridable), or a camera-path JSON file (resized if asked).
    Returns the cameras and the file's frame rate (None for generated paths)."""
    train_cameras = getattr(getattr(getattr(pipeline, "datamanager", None), "train_dataset", None), "cameras", None)
    view = default_view(train_cameras, width, height)
    changes = {"radius": radius, "elevation": elevation, "vertical_fov": vertical_fov}
    view = dataclasses.replace(view, **{k: v for k, v in changes.items() if v is not None})
    return make_camera_path(path, n_frames, view, (width, height))
