"""Videos of trained relight3d fields along a camera path: rgb, depth, normals, accumulation, alone or side by side.

:func:`render_video` renders each camera of a path (from :mod:`relight3d.export.camera_paths`) and streams the
frames to an .mp4 (H.264 through imageio-ffmpeg) or collects them into a .gif, with a progress bar.

Relighting videos plug into the :class:`LightPath` extension point: before each frame, the light path is told the
frame index and may change the model's lighting in place (rotate its environment map), hand back another model to
render the frame with, or hand back the frame's RGB image itself. :class:`RotatingLightPath` turns the light once
around the object over the video, calling a function that applies a rotation angle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Type,
    Union,
    runtime_checkable,
)

import numpy as np
import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor, nn

from relight3d.errors import ConfigError, DataError
from relight3d.export.output_paths import check_output_path

RENDER_OUTPUTS: Tuple[str, ...] = ("rgb", "depth", "normals", "accumulation")
"""What a video can show (several are placed side by side, in the order given)."""
VIDEO_SUFFIXES: Tuple[str, ...] = (".mp4", ".gif")
"""Video formats, by extension."""


# --- the lighting extension point -------------------------------------------------------------------------------
FrameOverride = Union[None, nn.Module, Tensor]


@runtime_checkable
class LightPath(Protocol):
    """Per-frame lighting of a video.

    ``set_frame`` is called before frame ``index`` (of ``n_frames``) is rendered. It may

    * change ``model``'s lighting in place (e.g. rotate the environment map a relit model is conditioned on) and
      return None;
    * return another model to render this frame with (e.g. the field refit under this frame's light);
    * return the frame's RGB image itself, ``[H, W, 3]`` in [0, 1] (e.g. a relit image from a 2D prior); the other
      outputs (depth, normals, accumulation) are still rendered from ``model``.
    """

    def set_frame(self, index: int, n_frames: int, model: nn.Module) -> FrameOverride: ...


class RotatingLightPath:
    """Turns the light ``turns`` times around the object over the video.

    Args:
        apply_rotation: called with the model and the frame's angle in degrees (``start + 360 * turns * i / n``);
            it sets the lighting (e.g. rotates an environment map about world up) and returns what
            :meth:`LightPath.set_frame` returns (usually None).
        turns: full turns over the video (the last frame stops one step short, so the video loops).
        start_degrees: angle of the first frame.
    """

    def __init__(
        self,
        apply_rotation: Callable[[nn.Module, float], FrameOverride],
        turns: float = 1.0,
        start_degrees: float = 0.0,
    ) -> None:
        self.apply_rotation = apply_rotation
        self.turns = turns
        self.start_degrees = start_degrees

    def angle(self, index: int, n_frames: int) -> float:
        """The light's angle in degrees at frame ``index``."""
        return self.start_degrees + 360.0 * self.turns * index / max(n_frames, 1)

    def set_frame(self, index: int, n_frames: int, model: nn.Module) -> FrameOverride:
        return self.apply_rotation(model, self.angle(index, n_frames))


# --- configuration -------------------------------------------------------------------------------------------------
@dataclass
class VideoExportConfig:
    """How a video is rendered and encoded."""

    _target: Type = field(default_factory=lambda: VideoRenderer)
    """Renderer class to instantiate."""
    outputs: Tuple[str, ...] = ("rgb",)
    """Outputs to show, side by side in this order: any of rgb, depth, normals, accumulation."""
    fps: float = 24.0
    """Frames per second of the file."""
    depth_range: Optional[Tuple[float, float]] = None
    """Depth mapped to the ends of the colour map; None fits it to the path and the object once for the video
    (so that colours do not flicker from frame to frame)."""
    depth_colormap: str = "turbo"
    """Matplotlib colour map for depth."""
    rays_per_chunk: int = 16384
    """Rays rendered at once."""
    quality: int = 8
    """H.264 quality for .mp4, 0 (worst) to 10 (best)."""
    progress: bool = True
    """Show a progress bar."""

    def setup(self) -> "VideoRenderer":
        return self._target(self)


@dataclass(frozen=True)
class VideoSummary:
    """What was written."""

    path: Path
    """The video file."""
    n_frames: int
    """Frames written."""
    width: int
    """Frame width in pixels (all outputs side by side)."""
    height: int
    """Frame height in pixels."""
    fps: float
    """Frames per second."""


# --- rendering ------------------------------------------------------------------------------------------------------
@torch.no_grad()
def render_camera_outputs(
    model: nn.Module, camera: Cameras, outputs: Sequence[str] = RENDER_OUTPUTS, rays_per_chunk: int = 16384
) -> Dict[str, Tensor]:
    """Render one camera; returns ``[H, W, C]`` tensors for 'rgb', 'accumulation', 'depth' (+ 'normals' if asked).

    Uses the model's ``render_rays`` (relight3d models, which render normals on request), else nerfstudio's
    ``get_outputs_for_camera``.
    """
    device = next(iter(model.buffers()), torch.zeros(())).device
    if not hasattr(model, "render_rays"):
        return model.get_outputs_for_camera(camera[0:1].to(device))
    bundle = camera[0:1].to(device).generate_rays(camera_indices=0, keep_shape=True)
    h, w = bundle.origins.shape[:2]
    origins, directions = bundle.origins.reshape(-1, 3), bundle.directions.reshape(-1, 3)
    extras = ("normals",) if "normals" in outputs else ()
    chunks: Dict[str, List[Tensor]] = {}
    for s in range(0, origins.shape[0], rays_per_chunk):
        out = model.render_rays(origins[s : s + rays_per_chunk], directions[s : s + rays_per_chunk], extras)
        for key in ("rgb", "accumulation", "depth", *extras):
            chunks.setdefault(key, []).append(out[key].detach())
    return {k: torch.cat(v).reshape(h, w, -1) for k, v in chunks.items()}


def _colormap(values: np.ndarray, name: str) -> np.ndarray:
    import matplotlib

    return matplotlib.colormaps[name](np.clip(values, 0.0, 1.0))[..., :3].astype(np.float32)


def visualize_output(
    name: str,
    outputs: Dict[str, Tensor],
    background: Float[Tensor, "3"],
    depth_range: Tuple[float, float],
    depth_colormap: str = "turbo",
) -> np.ndarray:
    """An output as an ``[H, W, 3]`` float image in [0, 1]; depth and normals are composited over the background
    with the accumulation, normals map world xyz in [-1, 1] to rgb."""
    acc = outputs["accumulation"].float().cpu().numpy()
    bg = background.float().cpu().numpy()[None, None]
    if name == "rgb":
        return outputs["rgb"].float().cpu().clamp(0.0, 1.0).numpy()
    if name == "accumulation":
        return np.repeat(np.clip(acc, 0.0, 1.0), 3, axis=-1)
    if name == "depth":
        near, far = depth_range
        depth = outputs["depth"].float().cpu().numpy()[..., 0]
        colored = _colormap((depth - near) / max(far - near, 1e-6), depth_colormap)
        return colored * acc + bg * (1.0 - acc)
    if name == "normals":
        normals = outputs["normals"].float().cpu().numpy()
        return np.clip(normals * 0.5 + 0.5, 0.0, 1.0) * acc + bg * (1.0 - acc)
    raise ValueError(f"unknown render output '{name}'; choose from {', '.join(RENDER_OUTPUTS)}")


def to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def auto_depth_range(model: nn.Module, cameras: Cameras) -> Tuple[float, float]:
    """Depths spanned by the object along the path: camera-to-box-centre distances -/+ the box's half diagonal."""
    box = None
    occupancy = getattr(model, "occupancy", None)
    if occupancy is not None:
        box = occupancy.occupied_aabb().float().cpu()
    elif hasattr(model, "field") and hasattr(model.field, "aabb"):
        box = model.field.aabb.float().cpu()
    positions = cameras.camera_to_worlds[:, :3, 3].float().cpu()
    if box is None:
        d = positions.norm(dim=-1)
        return float(d.min()) * 0.5, float(d.max()) * 1.5
    center, half = (box[:3] + box[3:]) / 2, float((box[3:] - box[:3]).norm()) / 2
    d = (positions - center).norm(dim=-1)
    return max(float(d.min()) - half, 0.0), float(d.max()) + half


class VideoRenderer:
    """Renders a camera path of a model into video frames and files."""

    def __init__(self, config: VideoExportConfig) -> None:
        for name in config.outputs:
            if name not in RENDER_OUTPUTS:
                raise ConfigError("outputs", f"unknown render output '{name}'; choose from {', '.join(RENDER_OUTPUTS)}")
        if not config.outputs:
            raise ConfigError("outputs", "no render output chosen")
        if not config.fps > 0:
            raise ConfigError("fps", f"must be positive, got {config.fps}")
        self.config = config

    def frames(
        self, model: nn.Module, cameras: Cameras, light_path: Optional[LightPath] = None
    ) -> Iterator[np.ndarray]:
        """``[H, W * len(outputs), 3]`` uint8 frames, one per camera (a generator, with a progress bar)."""
        from tqdm.auto import tqdm

        c = self.config
        depth_range = c.depth_range or auto_depth_range(model, cameras)
        n = len(cameras)
        was_training = model.training
        model.eval()
        try:
            for i in tqdm(range(n), desc="rendering video", unit="frame", disable=not c.progress):
                override = light_path.set_frame(i, n, model) if light_path is not None else None
                frame_model = override if isinstance(override, nn.Module) else model
                frame_model.eval()
                outputs = render_camera_outputs(frame_model, cameras[i : i + 1], c.outputs, c.rays_per_chunk)
                if isinstance(override, Tensor):
                    if override.shape[:2] != outputs["rgb"].shape[:2]:
                        raise ValueError(
                            f"light path frame {i}: image {tuple(override.shape)} does not match the camera "
                            f"{tuple(outputs['rgb'].shape[:2])}"
                        )
                    outputs["rgb"] = override[..., :3].to(outputs["rgb"])
                background = getattr(frame_model, "background", torch.ones(3))
                panels = [
                    visualize_output(name, outputs, background, depth_range, c.depth_colormap) for name in c.outputs
                ]
                yield to_uint8(np.concatenate(panels, axis=1))
        finally:
            model.train(was_training)

    def render(
        self,
        model: nn.Module,
        cameras: Cameras,
        output: Union[str, Path],
        light_path: Optional[LightPath] = None,
    ) -> VideoSummary:
        """Render ``cameras`` and write the video to ``output`` (.mp4 or .gif)."""
        out = check_video_output(output, cameras, len(self.config.outputs))
        frames = self.frames(model, cameras, light_path)
        n_frames, shape = write_video(frames, out, self.config.fps, self.config.quality)
        return VideoSummary(path=out, n_frames=n_frames, width=shape[1], height=shape[0], fps=self.config.fps)


def check_video_output(output: Union[str, Path], cameras: Cameras, n_panels: int = 1) -> Path:
    """Validate a video output path and, for .mp4, that the frame size is even (H.264 in yuv420p needs it)."""
    out = check_output_path(output, VIDEO_SUFFIXES, "video")
    if out.suffix.lower() == ".mp4":
        w, h = int(cameras.width[0]) * n_panels, int(cameras.height[0])
        if w % 2 or h % 2:
            raise DataError(out, f"an .mp4 needs an even frame width and height, got {w}x{h}; change the size")
    return out


def write_video(
    frames: Iterator[np.ndarray], output: Path, fps: float, quality: int = 8
) -> Tuple[int, Tuple[int, ...]]:
    """Write uint8 frames to an .mp4 (streamed, H.264) or a .gif; returns the frame count and frame shape."""
    import imageio.v2 as imageio

    n, shape = 0, (0, 0, 3)
    if output.suffix.lower() == ".gif":
        import imageio.v3 as iio

        collected = list(frames)
        if not collected:
            raise ValueError("no frames to write")
        iio.imwrite(output, np.stack(collected), extension=".gif", duration=1000.0 / fps, loop=0)
        return len(collected), collected[0].shape
    writer = imageio.get_writer(
        output, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=quality, macro_block_size=1,
        pixelformat="yuv420p",
    )  # fmt: skip
    try:
        for frame in frames:
            writer.append_data(frame)
            n, shape = n + 1, frame.shape
    finally:
        writer.close()
    return n, shape


def render_video(
    model: nn.Module,
    cameras: Cameras,
    output: Union[str, Path],
    config: Optional[VideoExportConfig] = None,
    light_path: Optional[LightPath] = None,
    **overrides: Any,
) -> VideoSummary:
    """Render a trained model (or pipeline) along ``cameras`` into ``output`` (.mp4 or .gif).

    Args:
        model: an OccupancyFieldModel, or a pipeline holding one.
        cameras: the path, e.g. from :func:`~relight3d.export.camera_paths.orbit_path`.
        output: the video file.
        config: settings (default :class:`VideoExportConfig`); ``**overrides`` change single fields.
        light_path: per-frame lighting (see :class:`LightPath`).

    Example:
        >>> config, pipeline = load_trained_pipeline("outputs/.../config.yml")  # doctest: +SKIP
        >>> cameras = orbit_path(120, default_view())  # doctest: +SKIP
        >>> render_video(pipeline, cameras, "orbit.mp4", outputs=("rgb", "normals"))  # doctest: +SKIP
    """
    import dataclasses

    cfg = dataclasses.replace(config or VideoExportConfig(), **overrides)
    return cfg.setup().render(getattr(model, "model", model), cameras, output, light_path)
