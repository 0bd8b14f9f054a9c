"""Stage 1 of relighting: every training view relit by the prior, cached on disk in Neural Gaffer's layout.

The cache folder holds, per training view ``i`` (``{i:03d}``): ``input_image/`` (the view as trained, RGBA),
``pred_image/`` (the prior's relighting, RGBA with the same alpha), ``target_envmap_hdr/`` and
``target_envmap_ldr/`` (the target map rotated into the view's camera frame, in the prior's two encodings) and
``target_RT/`` (the world-to-camera matrix, ``.npy``), plus ``stage1.json`` with the fingerprint of everything the
relit views depend on. A run whose fingerprint matches reuses the cache (a resumed run does).

Each view is relit with its own random stream, seeded by the run's seed and the view's index
(:func:`view_generator`), so a view's result does not depend on the batch it falls in or on how many processes
share the work: under ``torchrun`` / ``accelerate launch`` (``relight3d relight --stage1-only``) every process relights
its share of the views (accelerate's ``split_between_processes``), the relit views are gathered on every process,
and the main process writes the cache.

The pipeline then writes the relit views into the datamanager in place of the training images and refits the
field's appearance on them with plain nerfstudio iterations (:mod:`relight3d.pipelines.relighting`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch
from jaxtyping import Float
from PIL import Image
from torch import Tensor

from relight3d.geometry import world_to_camera
from relight3d.pipelines.relight_field import fingerprint
from relight3d.priors.base import PriorViews

STAGE1_DIRS = ("input_image", "pred_image", "target_envmap_hdr", "target_envmap_ldr", "target_RT")
"""The cache's per-view folders (Neural Gaffer's stage-1 layout)."""


def stage1_fingerprint(config: Any, n_views: int) -> str:
    """What the relit views depend on: the prior and its settings, the target and source lights, the field, the
    number of views and the seed (``config`` is a :class:`~relight3d.pipelines.relighting.RelightingPipelineConfig`)."""
    c = config
    return fingerprint(
        {
            "prior": repr(c.prior),
            "target": str(c.target_envmap),
            "target_mtime": Path(c.target_envmap).stat().st_mtime if c.target_envmap else None,
            "strength": c.target_envmap_strength,
            "rotation": c.target_rotation_deg,
            "source": str(c.source_envmap),
            "estimate_source": c.estimate_source,
            "source_assumed_albedo": c.source_assumed_albedo,
            "field_run": str(c.field_run),
            "views": n_views,
            "seed": c.seed,
        }
    )


def write_png(path: Path, image: Float[Tensor, "h w c"]) -> None:
    """An image in [0, 1] (1, 3 or 4 channels) as an 8-bit PNG."""
    arr = (image.detach().clamp(0, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr).save(path)


def read_stage1_cache(cache: Path, key: str, n_views: int) -> Optional[Float[Tensor, "n h w 3"]]:
    """The cached relit views when ``cache`` holds all ``n_views`` of them under fingerprint ``key``, else None."""
    from relight3d.data.images import read_rgba

    meta_path = cache / "stage1.json"
    if not meta_path.is_file() or json.loads(meta_path.read_text()).get("fingerprint") != key:
        return None
    files = [cache / "pred_image" / f"{i:03d}.png" for i in range(n_views)]
    if not all(f.is_file() for f in files):
        return None
    return torch.stack([torch.from_numpy(read_rgba(f)[0][..., :3]) for f in files])


def view_generator(seed: int, view: int) -> torch.Generator:
    """The random stream of training view ``view`` in stage 1."""
    return torch.Generator().manual_seed(seed * 1_000_003 + view)


def _distributed() -> Any:
    """accelerate's process state when several processes run (``torchrun`` / ``accelerate launch``), else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    state = PartialState()
    return state if state.num_processes > 1 else None


def relight_training_views(
    prior: Any,
    images: Float[Tensor, "n h w c"],
    camera_to_worlds: Float[Tensor, "n 3 4"],
    target: Float[Tensor, "eh ew 3"],
    prior_inputs: Callable[[Tensor], Dict[str, Any]],
    batch_size: int,
    cache: Path,
    key: str,
    seed: int = 0,
) -> Float[Tensor, "n h w 3"]:
    """Relight ``images`` (RGB or RGBA, on the CPU) with ``prior`` under ``target``, ``batch_size`` views per call,
    and write the cache (see the module docstring) under fingerprint ``key``.

    Args:
        prior: A :class:`~relight3d.priors.base.RelightingPrior`.
        images: The training views as trained; their alpha (1 when absent) is the prior's mask.
        camera_to_worlds: The views' cameras (the prior rotates the map into each).
        target: The target map in world coordinates.
        prior_inputs: The other PriorViews fields for a batch of view indices (generator, G-buffers,
            source light).
        batch_size: Views per prior call.
        cache: The cache folder.
        key: :func:`stage1_fingerprint` of the run.
        seed: The run's seed (each view's stream is :func:`view_generator` of it).
    """
    rgb = images[..., :3]
    masks = images[..., 3:] if images.shape[-1] == 4 else torch.ones_like(images[..., :1])
    n, step = images.shape[0], max(1, batch_size)
    state = _distributed()
    mine = list(range(n))
    if state is not None:
        with state.split_between_processes(mine) as share:
            mine = list(share)
    relit: Dict[int, Tensor] = {}
    for start in range(0, len(mine), step):
        views = torch.tensor(mine[start : start + step], dtype=torch.long)
        inputs = {**prior_inputs(views), "generator": [view_generator(seed, int(i)) for i in views]}
        pred = prior.relight(PriorViews(rgb[views], masks[views], camera_to_worlds[views], target, **inputs))
        relit.update(zip(views.tolist(), pred.cpu().float()))
    if state is not None:
        from accelerate.utils import gather_object

        relit = dict(kv for part in gather_object([list(relit.items())]) for kv in part)
    out = torch.stack([relit[i] for i in range(n)])
    if state is None or state.is_main_process:
        _write_cache(cache, key, rgb, masks, out, camera_to_worlds, target, type(prior).__name__)
    if state is not None:
        state.wait_for_everyone()
    return out


def _write_cache(
    cache: Path,
    key: str,
    rgb: Tensor,
    masks: Tensor,
    pred: Tensor,
    camera_to_worlds: Tensor,
    target: Tensor,
    prior: str,
) -> None:
    """Write every view's cache files (module docstring) and then ``stage1.json``, which makes the cache valid."""
    from relight3d.lighting import hdr_encoding, ldr_encoding, rotate_envmap_to_camera

    for d in STAGE1_DIRS:
        (cache / d).mkdir(parents=True, exist_ok=True)
    n = pred.shape[0]
    for i in range(n):
        name = f"{i:03d}"
        write_png(cache / "input_image" / f"{name}.png", torch.cat([rgb[i], masks[i]], -1))
        write_png(cache / "pred_image" / f"{name}.png", torch.cat([pred[i], masks[i]], -1))
        local = rotate_envmap_to_camera(target, camera_to_worlds[i])
        write_png(cache / "target_envmap_hdr" / f"{name}.png", hdr_encoding(local))
        write_png(cache / "target_envmap_ldr" / f"{name}.png", ldr_encoding(local))
        np.save(cache / "target_RT" / f"{name}.npy", world_to_camera(camera_to_worlds[i]).numpy())
    (cache / "stage1.json").write_text(json.dumps({"fingerprint": key, "n_views": n, "prior": prior}))
