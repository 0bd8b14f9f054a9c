"""The frozen field that relighting starts from: loading a trained run, rendering views, G-buffers and shadows.

* :func:`load_field_run` reads a trained ``relight3d-tensorf`` / ``relight3d-ngp`` run (its config and latest
  checkpoint); :func:`frozen_field_configs` turns its configs into the relighting run's (geometry frozen, the
  schedules that change the grid switched off, the same data).
* :func:`render_view` renders a nerfstudio camera in chunks; :func:`straight_rgb` undoes the compositing on the
  background.
* :func:`render_gbuffers` renders every training view's normals, depth, points and ray directions and fuses the
  normals across views; :func:`trace_visibility` traces the transmittance towards the prior's shadow directions.
  Both depend on the geometry only, which is frozen: :class:`FieldCache` keeps them on disk between runs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from relight3d.errors import DataError
from relight3d.geometry import camera_rays

FIELD_METHODS = ("relight3d-tensorf", "relight3d-ngp")
"""Methods whose trained fields can be relit."""


def fingerprint(obj: Mapping[str, Any]) -> str:
    """A short hash of a JSON-able mapping (keys sorted; other values by ``str``)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def weights_digest(state: Mapping[str, Tensor]) -> str:
    """A short hash of a state dict's names and values."""
    digest = hashlib.sha256()
    for name, value in sorted(state.items()):
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def load_field_run(config_path: Path) -> Tuple[Any, Dict[str, Tensor], int]:
    """The trainer config, model state dict and step of a trained relight3d-tensorf / relight3d-ngp run.

    Raises:
        DataError: the config is missing or not a relight3d field run, or the run has no usable checkpoint.
    """
    from relight3d.engine.loading import checkpoint_dir, read_trainer_config
    from relight3d.engine.trainer import latest_checkpoint, load_checkpoint_file

    config_path = Path(config_path)
    if config_path.is_dir():
        config_path = config_path / "config.yml"
    if not config_path.is_file():
        raise DataError(config_path, "trained field config not found (pass the config.yml of a relight3d run)")
    try:
        cfg = read_trainer_config(config_path)
    except DataError as err:
        raise DataError(config_path, f"field checkpoint: {err.problem}") from err
    if cfg.method_name not in FIELD_METHODS:
        raise DataError(
            config_path,
            f"field checkpoint is from method {cfg.method_name!r}; relighting needs one of {', '.join(FIELD_METHODS)}",
        )
    ckpt_dir = checkpoint_dir(cfg, config_path)
    ckpt = latest_checkpoint(ckpt_dir)
    if ckpt is None:
        raise DataError(ckpt_dir, "no step-*.ckpt checkpoint in the trained run")
    state = load_checkpoint_file(ckpt)
    prefix = "_model."
    model_state = {k[len(prefix) :]: v for k, v in state["pipeline"].items() if k.startswith(prefix)}
    if not model_state:
        raise DataError(ckpt, "checkpoint holds no model weights")
    return cfg, model_state, int(state["step"])


def frozen_field_configs(trained: Any, data: Optional[Path]) -> Tuple[Any, Any]:
    """The model and datamanager configs of a relighting run on the field of ``trained`` (its trainer config).

    The field is only refit: geometry is frozen and there is no upsampling, box shrinking, carving or occupancy
    update. The data is read as the field was trained on it (same dataparser and splits); ``data`` only moves the
    folder.
    """
    model = copy.deepcopy(trained.pipeline.model)
    for name, value in (("upsampling_iters", ()), ("shrink_iters", ()), ("carve_with_masks", False)):
        if hasattr(model, name):
            setattr(model, name, value)
    model.freeze_geometry = True
    datamanager = copy.deepcopy(trained.pipeline.datamanager)
    if data is not None:
        datamanager.data = data
    return model, datamanager


def render_view(
    model,  # noqa: ANN001 - an OccupancyFieldModel
    camera,  # noqa: ANN001 - one nerfstudio Cameras
    extra_outputs: Tuple[str, ...] = (),
    scale: float = 1.0,
    chunk: int = 1 << 14,
) -> Dict[str, Tensor]:
    """Render one camera (``[h, w, c]`` outputs) in chunks; differentiable when gradients are enabled."""
    origins, directions, (h, w) = camera_rays(camera.to(model.device), scale)
    parts: Dict[str, List[Tensor]] = {}
    for i in range(0, origins.shape[0], chunk):
        out = model.render_rays(origins[i : i + chunk], directions[i : i + chunk], extra_outputs)
        for k in ("rgb", "accumulation", "depth", *extra_outputs):
            v = out[k]
            parts.setdefault(k, []).append(v if v.dim() == 2 else v[:, None])
    return {k: torch.cat(v).reshape(h, w, -1) for k, v in parts.items()}


def straight_rgb(
    rgb: Float[Tensor, "*s 3"], accumulation: Float[Tensor, "*s 1"], background: Float[Tensor, "3"]
) -> Float[Tensor, "*s 3"]:
    """The object's own (straight-alpha) colour of a render that :meth:`render_rays` composited on ``background``.

    Renders are ``rgb = sum_i w_i c_i + (1 - acc) * background``. Anything that composites again with the
    accumulation as alpha (an RGBA PNG read by :mod:`relight3d.eval`, a prior's mask) needs ``sum_i w_i c_i / acc``
    instead, or the background is blended in twice: a half-covered edge pixel of colour ``c`` on white would become
    ``c/4 + 3/4`` instead of ``c/2 + 1/2``. Where the accumulation is below 1/255 the background itself is returned.
    """
    acc = accumulation.clamp(0.0, 1.0)
    bg = background.to(rgb)
    colour = (rgb - (1.0 - acc) * bg) / acc.clamp_min(1.0 / 255.0)
    return torch.where(acc >= 1.0 / 255.0, colour.clamp(0.0, 1.0), bg.expand_as(rgb))


def view_points(camera, depth: Float[Tensor, "h w 1"]) -> Tuple[Float[Tensor, "h w 3"], Float[Tensor, "h w 3"]]:  # noqa: ANN001
    """The surface points ``origin + depth * direction`` of one camera's pixels, and the ray directions."""
    origins, directions, (h, w) = camera_rays(camera)
    origins, directions = origins.to(depth), directions.to(depth)
    return (origins + directions * depth.reshape(-1, 1)).reshape(h, w, 3), directions.reshape(h, w, 3)


@torch.no_grad()
def render_gbuffers(model, cameras, fusion_resolution: int) -> Dict[str, Tensor]:  # noqa: ANN001
    """Every camera's rendered ``rgb``, ``accumulation``, ``depth``, ``normals``, ``points`` and ``directions``
    (``[n, h, w, c]``, on the CPU), and with ``fusion_resolution > 0`` their ``"multiview_normals"``: the density +
    depth normals averaged across views in a voxel grid of that many cells per side
    (:func:`relight3d.priors.normals.fuse_view_normals`)."""
    from relight3d.priors.normals import density_and_depth_normals, fuse_view_normals

    outs: Dict[str, List[Tensor]] = {}
    was_training = model.training
    model.eval()
    for i in range(len(cameras)):
        camera = cameras[i : i + 1].to(model.device)
        out = render_view(model, camera, ("normals",))
        out["points"], out["directions"] = view_points(camera, out["depth"])
        for k, v in out.items():
            outs.setdefault(k, []).append(v.cpu())
    model.train(was_training)
    gb = {k: torch.stack(v) for k, v in outs.items()}
    if fusion_resolution > 0:
        fg = (gb["accumulation"] > 0.5).float()
        gb["multiview_normals"] = fuse_view_normals(
            density_and_depth_normals(gb["normals"], gb["points"], gb["directions"], fg),
            gb["points"],
            fg,
            model.field.aabb.detach().float().cpu(),
            fusion_resolution,
        )
    return gb


@dataclass
class PackedVisibility:
    """The transmittance of every object pixel of every training view towards each shadow direction, as 8 bits."""

    foreground: Tensor
    """``[n, h, w]`` bool: the object pixels (accumulation above 0.5)."""
    values: Tensor
    """``[pixels, k]`` uint8: transmittance x 255 of the object pixels, view after view, row-major."""
    counts: Tensor
    """``[n]``: object pixels per view."""
    starts: Tensor
    """``[n]``: index in ``values`` of each view's first object pixel."""

    def as_tuple(self) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """The four tensors in field order (what :class:`FieldCache` stores; ``PackedVisibility(*t)`` rebuilds)."""
        return self.foreground, self.values, self.counts, self.starts

    def unpack(self, views: Tensor) -> Float[Tensor, "b h w k"]:
        """The transmittance of the given views' pixels (background pixels read 1)."""
        views = torch.as_tensor(views).reshape(-1)
        out = torch.ones(len(views), *self.foreground.shape[1:], self.values.shape[-1])
        for j, v in enumerate(views.tolist()):
            start, count = int(self.starts[v]), int(self.counts[v])
            out[j][self.foreground[v]] = self.values[start : start + count].float() / 255.0
        return out


@torch.no_grad()
def trace_visibility(field, gbuffers: Mapping[str, Tensor], settings: Tuple[int, int]) -> PackedVisibility:  # noqa: ANN001
    """Trace, from every object pixel's surface point moved 1.5 density cells along its normal, the transmittance
    towards the shadow directions of ``settings = (directions_height, volume_resolution)``
    (:attr:`relight3d.priors.base.RelightingPrior.visibility_settings`) through the field's density grid."""
    from relight3d.lighting import sample_density_volume, transmittance_towards, visibility_directions

    height, resolution = settings
    fg = gbuffers["accumulation"][..., 0] > 0.5
    aabb = field.aabb.detach().float()
    volume = sample_density_volume(field.density, aabb, resolution)
    cell = float((aabb[3:] - aabb[:3]).max()) / resolution
    points = gbuffers["points"][fg] + F.normalize(gbuffers["normals"][fg], dim=-1) * (1.5 * cell)
    trans = transmittance_towards(volume.cpu(), aabb.cpu(), points.cpu(), visibility_directions(height))
    counts = fg.flatten(1).sum(1)
    return PackedVisibility(fg, (trans * 255.0).round().to(torch.uint8), counts, torch.cumsum(counts, 0) - counts)


@dataclass
class FieldCache:
    """Results that depend only on the frozen field, its training cameras and some settings, kept in ``folder``
    between runs (``relight3d relight`` shares one folder across its target maps). Without a folder or a digest of
    the field's weights, nothing is kept."""

    folder: Optional[Path]
    """Where the ``<name>_<key>.pt`` files go (None: compute every time)."""
    field_digest: Optional[str]
    """:func:`weights_digest` of the field (None: compute every time)."""

    def get(self, name: str, cameras, settings: Mapping[str, Any], build: Callable[[], Any]) -> Any:  # noqa: ANN001
        """``build()`` (tensors, or tuples / dicts of them), read back when an earlier run on the same
        field, ``cameras`` and ``settings`` wrote it."""
        if self.folder is None or self.field_digest is None:
            return build()
        key = fingerprint(
            {"field": self.field_digest, "poses": cameras.camera_to_worlds.cpu().numpy().round(6).tolist(),
             "size": [int(cameras.width[0]), int(cameras.height[0])], **settings}
        )  # fmt: skip
        path = Path(self.folder) / f"{name}_{key}.pt"
        if path.is_file():
            return torch.load(path, weights_only=True)
        value = build()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # several processes may build the same entry
        torch.save(value, tmp)
        os.replace(tmp, path)
        return value
