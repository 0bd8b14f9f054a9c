"""The views of score distillation (:mod:`relight3d.pipelines.score_distillation`): the reference image and its
camera, the random prior cameras, and rendering a square view in chunks.

* :class:`ReferenceImageDataParserConfig` / :class:`ReferenceViewDataManagerConfig`: the input RGBA image (square,
  or padded to a square) seen from RealFusion's reference camera, and random rays of it.
* :class:`PriorView` / :func:`sample_prior_view`: a camera on a sphere around the object for the prior, with the
  prompt direction (front / side / back / overhead / bottom) it maps to (:func:`view_direction`).
* :func:`render_square_view`: a square pinhole image (:func:`relight3d.geometry.pinhole_rays`), in chunks under
  gradient checkpointing when it has many rays.

Cameras follow :mod:`relight3d.geometry`: +Z up, azimuth 0 at -Y (Blender's front), counter-clockwise from above.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type

import numpy as np
import torch
from jaxtyping import Float
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from relight3d.data.datamanager import InMemoryDataManagerConfig
from relight3d.data.single_image import (  # pad_image_to_square: cached under the user's cache folder
    SingleImageDataParser,
    SingleImageDataParserConfig,
    pad_image_to_square,
)
from relight3d.data.validation import image_size
from relight3d.errors import DataError
from relight3d.geometry import look_at, orbit_positions, pinhole_rays


# --- the reference image ------------------------------------------------------------------------------------------
@dataclass
class ReferenceImageDataParserConfig(SingleImageDataParserConfig):
    """The input RGBA image of single-image reconstruction (square), seen from a configurable camera.

    Defaults follow RealFusion: the camera 15 degrees above the horizon (pose angle 75 from the vertical), 1.8 from
    the centre, a 55-degree field of view, a scene box of half-size 0.75.
    """

    _target: Type = field(default_factory=lambda: ReferenceImageDataParser)
    """Dataparser class to instantiate."""
    elevation: float = 15.0
    """Camera elevation in degrees above the horizontal plane."""
    radius: float = 1.8
    """Camera distance from the origin."""
    fov: float = 55.0
    """Field of view in degrees."""
    scene_scale: float = 0.75
    """Half-size of the scene box (RealFusion's bound)."""
    pad_to_square: bool = False
    """Pad a non-square image with transparent pixels to a square (otherwise a non-square image is an error)."""


class ReferenceImageDataParser(SingleImageDataParser):
    """:class:`SingleImageDataParser` that requires (or pads to) a square image."""

    config: ReferenceImageDataParserConfig

    def _generate_dataparser_outputs(self, split: str = "train") -> DataparserOutputs:
        path = Path(self.config.data)
        (width, height), mode = image_size(path)
        if mode in ("RGBA", "LA") and width != height:
            if not self.config.pad_to_square:
                raise DataError(
                    path,
                    f"image is {width}x{height} but must be square: crop it, or pad it with "
                    "--pipeline.datamanager.dataparser.pad-to-square True",
                )
            path = pad_image_to_square(path)
        return SingleImageDataParser(dataclasses.replace(self.config, data=path))._generate_dataparser_outputs(split)


@dataclass
class ReferenceViewDataManagerConfig(InMemoryDataManagerConfig):
    """Random rays of the reference image."""

    dataparser: ReferenceImageDataParserConfig = field(default_factory=ReferenceImageDataParserConfig)  # type: ignore
    """The reference image and its camera."""
    train_num_rays_per_batch: int = 4096
    """Reference-view rays per iteration (RealFusion: 4096)."""
    eval_num_rays_per_batch: int = 4096
    """Rays per evaluation batch."""


# --- prior cameras ------------------------------------------------------------------------------------------------
def orbit_camera(radius: float, elevation: float, azimuth: float) -> Float[Tensor, "3 4"]:
    """The camera-to-world matrix of a camera on a sphere around the origin, looking at it (degrees)."""
    return look_at(orbit_positions(radius, elevation, azimuth))


@dataclass
class PriorView:
    """A camera for the prior: pose, field of view and the prompt direction it maps to."""

    camera_to_world: Float[Tensor, "3 4"]
    """The pose (OpenGL camera)."""
    fov: float
    """Field of view in degrees."""
    elevation: float
    """Elevation in degrees."""
    azimuth: float
    """Azimuth relative to the reference view, in (-180, 180]."""
    radius: float
    """Distance from the origin."""
    direction: Optional[str]
    """'front' / 'side' / 'back' / 'overhead' / 'bottom', or None for the reference camera (plain prompt)."""


def view_direction(elevation: float, relative_azimuth: float, angle_front: float, angle_overhead: float) -> str:
    """The prompt direction of a camera: overhead/bottom within ``angle_overhead`` of the poles, else front/back
    within ``angle_front / 2`` of the reference azimuth / its opposite, else side."""
    if elevation >= 90.0 - angle_overhead:
        return "overhead"
    if elevation <= -(90.0 - angle_overhead):
        return "bottom"
    a = abs((relative_azimuth + 180.0) % 360.0 - 180.0)
    if a <= angle_front / 2.0:
        return "front"
    if a >= 180.0 - angle_front / 2.0:
        return "back"
    return "side"


def sample_prior_view(config: Any, reference: PriorView, reference_azimuth: float, use_reference: bool) -> PriorView:
    """This iteration's prior camera, drawn with numpy's global random state.

    Args:
        config: The :class:`~relight3d.pipelines.score_distillation.ScoreDistillationPipelineConfig` (ranges,
            sphere rate, direction angles, reference-camera jitter).
        reference: The reference camera (``azimuth`` 0, ``direction`` None).
        reference_azimuth: The reference camera's absolute azimuth (the prior camera's azimuth is relative to it).
        use_reference: Return the reference camera with its position jittered by ``reference_camera_noise``.
    """
    if use_reference:
        if config.reference_camera_noise <= 0:
            return reference
        position = reference.camera_to_world[:, 3].double() + torch.from_numpy(
            np.random.normal(0.0, config.reference_camera_noise, 3)
        )
        return dataclasses.replace(reference, camera_to_world=look_at(position).float())
    radius = float(np.random.uniform(*config.radius_range))
    fov = float(np.random.uniform(*config.fov_range))
    if np.random.rand() < config.uniform_sphere_rate:
        # Uniform on the upper hemisphere: the height of a uniform point on a sphere is uniform (Archimedes).
        elevation = math.degrees(math.asin(float(np.random.uniform(0.0, 1.0))))
        relative_azimuth = float(np.random.uniform(-180.0, 180.0))
    else:
        elevation = float(np.random.uniform(*config.elevation_range))
        relative_azimuth = float(np.random.uniform(*config.azimuth_range))
    relative_azimuth = (relative_azimuth + 180.0) % 360.0 - 180.0
    c2w = orbit_camera(radius, elevation, reference_azimuth + relative_azimuth)
    direction = view_direction(elevation, relative_azimuth, config.angle_front, config.angle_overhead)
    return PriorView(c2w, fov, elevation, relative_azimuth, radius, direction)


# --- rendering ----------------------------------------------------------------------------------------------------
def merge_chunks(parts: Sequence[Dict[str, Tensor]]) -> Dict[str, Tensor]:
    """Concatenate per-ray outputs of ray chunks; sum (and detach) the 'num_*' counters."""
    merged = {}
    for k in parts[0]:
        values = [p[k] for p in parts]
        merged[k] = torch.stack(values).sum().detach() if k.startswith("num_") else torch.cat(values)
    return merged


def render_square_view(
    render: Callable[[Tensor, Tensor], Dict[str, Tensor]],
    camera_to_world: Float[Tensor, "3 4"],
    fov: float,
    size: int,
    chunk: int,
    eval_chunk: int,
    keys: List[str],
) -> Dict[str, Tensor]:
    """Render a square ``size``-pixel pinhole view with ``render(origins, directions)``; images are ``[size, size, c]``.

    Without gradients the rays go in plain chunks of ``eval_chunk``. With gradients and more than ``chunk`` rays
    (``chunk`` > 0), each chunk of ``keys`` outputs is rendered under reentrant gradient checkpointing: the forward
    keeps no graph, and the backward re-renders one chunk at a time (the jitter's random state is replayed) and
    back-propagates it before the next, so only one chunk's graph ever exists. (The non-reentrant variant keeps
    recomputed tensors that are never unpacked until the whole backward ends, which on a CPU adds up to the whole
    view.) An ``anchor`` that requires grad makes the outputs require grad, so the backward reaches the chunks.
    """
    origins, directions = pinhole_rays(camera_to_world, size, size, fov)
    n = origins.shape[0]
    if not torch.is_grad_enabled():
        parts = [render(origins[s : s + eval_chunk], directions[s : s + eval_chunk]) for s in range(0, n, eval_chunk)]
        out = merge_chunks(parts)
    elif chunk <= 0 or n <= chunk:
        out = render(origins, directions)
    else:

        def render_chunk(o: Tensor, d: Tensor, _anchor: Tensor) -> Tuple[Tensor, ...]:
            result = render(o, d)
            return tuple(result[k] for k in keys)

        anchor = torch.ones((), device=origins.device, requires_grad=True)
        pieces = [
            checkpoint(render_chunk, origins[s : s + chunk], directions[s : s + chunk], anchor, use_reentrant=True)
            for s in range(0, n, chunk)
        ]
        out = merge_chunks([dict(zip(keys, piece)) for piece in pieces])
    return {k: (v.view(size, size, -1) if v.dim() == 2 else v) for k, v in out.items()}
