"""Run NVIDIA DiffusionRenderer's forward renderer (Cosmos) on a relight3d job folder.

A standalone script: relight3d's ``diffusion-renderer`` prior (checkout backend) runs it as
``<python> diffusion_renderer_adapter.py --job JOB --checkout CHECKOUT --checkpoint_dir DIR [--offload]`` with the
DiffusionRenderer environment's interpreter, the checkout as working directory and on ``PYTHONPATH``. It imports
nothing of relight3d (only the standard library, torch, numpy and imageio at the top, and DiffusionRenderer's
``cosmos_predict1`` package from the checkout), so it runs in that environment.

What it does is ``demo()`` of ``cosmos_predict1/diffusion/inference/inference_forward_renderer.py``
(nv-tlabs/cosmos1-diffusion-renderer @ a164852), with two differences: the G-buffers are one clip folder of the job
at a time, and the lighting tensors are the job's own (the map in each frame's camera), not
``process_environment_map`` of a hard-coded HDRI with a fixed pose:

1. ``misc.set_random_seed(seed)`` (``cosmos_predict1/utils/misc.py``), as ``demo()`` does first.
2. ``DiffusionRendererPipeline(checkpoint_dir, checkpoint_name="Diffusion_Renderer_Forward_Cosmos_7B",
   offload_network, offload_tokenizer, offload_text_encoder_model=False, offload_guardrail_models=False, guidance,
   num_steps, height, width, fps, num_video_frames, seed)``
   (``cosmos_predict1/diffusion/inference/diffusion_renderer_pipeline.py``), with ``demo()``'s arguments.
3. Per clip: ``VideoGBufferDataset(root_dir=<job>/gbuffer_frames/<clip>, sample_n_frames=num_video_frames,
   resolution=(height, width))`` (``diffusion_renderer_utils/dataset_inference.py``) through
   ``torch.utils.data.DataLoader(batch_size=1, shuffle=False, collate_fn=dict_collation_fn)``
   (``diffusion_renderer_utils/dataloader_utils.py``), as ``demo()`` loads its G-buffers: 8-bit images / 255, alpha
   over white, resized to height x width, ``2 x - 1``, the last frame repeated up to ``num_video_frames``.
4. ``data_batch["env_ldr" | "env_log" | "env_nrm"]``: the job's 8-bit lighting images / 255, the last frame repeated
   up to ``num_video_frames``, as ``[1, 3, T, H, W]`` at ``2 x - 1`` (``demo()``'s
   ``x.unsqueeze(0).permute(0, 4, 1, 2, 3) * 2 - 1``; for ``env_nrm``, whose files hold ``0.5 d + 0.5``, that gives
   back the directions ``envmap_vec`` that ``demo()`` passes as they are).
5. ``pipeline.generate_video(data_batch=data_batch, seed=seed)`` -> uint8 ``[T, H, W, 3]``; the clip's first
   ``frames`` frames are written to ``<job>/relit/<clip>/0000.<frame>.relit.png``.

Exit codes: 0 done; 2 a bad job folder, or DiffusionRenderer cannot be imported (one line on stderr:
``diffusion_renderer_adapter: error: ...``); anything DiffusionRenderer raises shows its traceback (exit 1).

NOT RUN HERE: relight3d's tests have neither the weights nor a GPU, so only the argument parsing, the job reading and
the import failure are tested; the calls above were read from DiffusionRenderer's code, not executed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import imageio.v3 as iio
import numpy as np
import torch

JOB_FORMAT = "relight3d-diffusion-renderer-job"
JOB_VERSION = 1
FORWARD_CHECKPOINT = "Diffusion_Renderer_Forward_Cosmos_7B"
LIGHTING_PASSES = ("env_ldr", "env_log", "env_nrm")
VIDEO_FRAME_COUNTS = tuple(8 * n + 1 for n in range(16))
CHUNK = "0000"
EXIT_BAD_INPUT = 2


class JobError(Exception):
    """A bad job folder or environment; ``str(err)`` is one line."""


def parse_arguments(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """``--job``, ``--checkout``, ``--checkpoint_dir`` and ``--offload``."""
    parser = argparse.ArgumentParser(description="DiffusionRenderer forward rendering of a relight3d job folder")
    parser.add_argument("--job", type=Path, required=True, help="the job folder relight3d wrote (job.json)")
    parser.add_argument("--checkout", type=Path, required=True, help="the nv-tlabs/cosmos1-diffusion-renderer clone")
    parser.add_argument("--checkpoint_dir", type=Path, default=None, help="default: <checkout>/checkpoints")
    parser.add_argument("--offload", action="store_true", help="offload the network and tokenizer between uses")
    return parser.parse_args(argv)


def _integer(doc: Dict[str, Any], key: str, where: Path, low: int = 1) -> int:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise JobError(f"{where}: {key} must be an integer >= {low}, got {value!r}")
    return value


def _subfolder(job_dir: Path, doc: Dict[str, Any], key: str, where: Path) -> Path:
    name = doc.get(key)
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
        raise JobError(f"{where}: {key} must be a folder name inside the job, got {name!r}")
    return job_dir / name


def read_job(job_dir: Path) -> Dict[str, Any]:
    """``job.json`` of ``job_dir``, checked: the sizes, steps and seeds as numbers, the folders inside the job and every
    clip's G-buffer folder present.

    Raises:
        JobError: one line naming the file.
    """
    job_dir = Path(job_dir).resolve()
    path = job_dir / "job.json"
    if not path.is_file():
        raise JobError(f"{path}: not found (is --job a relight3d job folder?)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise JobError(f"{path}: cannot be read as JSON: {err}") from err
    if not isinstance(doc, dict) or doc.get("format") != JOB_FORMAT or doc.get("version") != JOB_VERSION:
        raise JobError(f"{path}: not a {JOB_FORMAT} version {JOB_VERSION} file")
    job = {key: _integer(doc, key, path) for key in ("height", "width", "num_video_frames", "num_steps", "fps")}
    if job["num_video_frames"] not in VIDEO_FRAME_COUNTS:
        raise JobError(f"{path}: num_video_frames must be 8 n + 1 (1 to 121), got {job['num_video_frames']}")
    guidance = doc.get("guidance")
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)):
        raise JobError(f"{path}: guidance must be a number, got {guidance!r}")
    job["guidance"] = float(guidance)
    for key in ("gbuffer_folder", "lighting_folder", "output_folder"):
        job[key] = _subfolder(job_dir, doc, key, path)
    clips = doc.get("clips")
    if not isinstance(clips, list) or not clips:
        raise JobError(f"{path}: clips must be a non-empty list")
    job["clips"] = []
    for i, clip in enumerate(clips):
        if not isinstance(clip, dict):
            raise JobError(f"{path}: clips[{i}] must be an object")
        name = _subfolder(job_dir, clip, "name", path).name
        frames = _integer(clip, "frames", path)
        if frames > job["num_video_frames"]:
            raise JobError(f"{path}: clips[{i}] has {frames} frames, more than num_video_frames")
        seed = _integer(clip, "seed", path, low=0)
        if not (job["gbuffer_folder"] / name).is_dir():
            raise JobError(f"{job['gbuffer_folder'] / name}: missing G-buffer folder of clip {name}")
        job["clips"].append({"name": name, "frames": frames, "seed": seed})
    job["job_dir"] = job_dir
    return job


def lighting_file(job: Dict[str, Any], clip: str, frame: int, name: str) -> Path:
    """``<lighting_folder>/<clip>/0000.<frame>.<name>.png``."""
    return job["lighting_folder"] / clip / f"{CHUNK}.{frame:04d}.{name}.png"


def relit_file(job: Dict[str, Any], clip: str, frame: int) -> Path:
    """``<output_folder>/<clip>/0000.<frame>.relit.png``."""
    return job["output_folder"] / clip / f"{CHUNK}.{frame:04d}.relit.png"


def load_lighting(job: Dict[str, Any], clip: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """The clip's ``env_ldr`` / ``env_log`` / ``env_nrm`` as ``inference_forward_renderer.demo`` builds them:
    ``[1, 3, T, H, W]`` float32 at ``2 x - 1`` (the last frame repeated up to ``num_video_frames``).

    Raises:
        JobError: a lighting file is missing or not an 8-bit ``height x width`` RGB image.
    """
    size = (job["height"], job["width"], 3)
    tensors = {}
    for name in LIGHTING_PASSES:
        frames: List[np.ndarray] = []
        for i in range(clip["frames"]):
            path = lighting_file(job, clip["name"], i, name)
            if not path.is_file():
                raise JobError(f"{path}: missing lighting image")
            pixels = iio.imread(path)
            if pixels.dtype != np.uint8 or pixels.shape != size:
                raise JobError(
                    f"{path}: expected an 8-bit {size[1]}x{size[0]} RGB image, got {pixels.dtype} {pixels.shape}"
                )
            frames.append(pixels.astype(np.float32) / 255.0)
        frames += [frames[-1]] * (job["num_video_frames"] - len(frames))
        video = torch.from_numpy(np.stack(frames))  # [T, H, W, 3] in [0, 1]
        tensors[name] = video.unsqueeze(0).permute(0, 4, 1, 2, 3) * 2 - 1  # inference_forward_renderer.demo
    return tensors


def import_diffusion_renderer() -> Dict[str, Any]:
    """The four names ``inference_forward_renderer.py`` imports and this script uses.

    Raises:
        JobError: ``cosmos_predict1`` (or a package it needs) cannot be imported.
    """
    try:
        from cosmos_predict1.diffusion.inference.diffusion_renderer_pipeline import DiffusionRendererPipeline
        from cosmos_predict1.diffusion.inference.diffusion_renderer_utils.dataloader_utils import dict_collation_fn
        from cosmos_predict1.diffusion.inference.diffusion_renderer_utils.dataset_inference import VideoGBufferDataset
        from cosmos_predict1.utils import misc
    except ModuleNotFoundError as err:
        raise JobError(
            f"cannot import DiffusionRenderer's cosmos_predict1: No module named {err.name!r} (run with the "
            "DiffusionRenderer environment's python, from its checkout)"
        ) from err
    return {
        "DiffusionRendererPipeline": DiffusionRendererPipeline,
        "VideoGBufferDataset": VideoGBufferDataset,
        "dict_collation_fn": dict_collation_fn,
        "misc": misc,
    }


def run(job: Dict[str, Any], dr: Dict[str, Any], checkpoint_dir: Path, offload: bool) -> None:
    """Relight every clip of ``job`` with DR's forward pipeline (the steps of the module docstring)."""
    torch.set_grad_enabled(False)  # inference_forward_renderer.py: torch.enable_grad(False) at import
    first_seed = job["clips"][0]["seed"]
    dr["misc"].set_random_seed(first_seed)  # inference_forward_renderer.demo
    pipeline = dr["DiffusionRendererPipeline"](  # diffusion_renderer_pipeline.DiffusionRendererPipeline.__init__
        checkpoint_dir=str(checkpoint_dir),
        checkpoint_name=FORWARD_CHECKPOINT,
        offload_network=offload,
        offload_tokenizer=offload,
        offload_text_encoder_model=False,
        offload_guardrail_models=False,
        guidance=job["guidance"],
        num_steps=job["num_steps"],
        height=job["height"],
        width=job["width"],
        fps=job["fps"],
        num_video_frames=job["num_video_frames"],
        seed=first_seed,
    )
    for clip in job["clips"]:
        dataset = dr["VideoGBufferDataset"](  # dataset_inference.VideoGBufferDataset
            root_dir=str(job["gbuffer_folder"] / clip["name"]),
            sample_n_frames=job["num_video_frames"],
            resolution=(job["height"], job["width"]),
        )
        if len(dataset) != 1:
            raise JobError(f"{job['gbuffer_folder'] / clip['name']}: DR's loader found {len(dataset)} videos, not 1")
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=1, shuffle=False, num_workers=0, collate_fn=dr["dict_collation_fn"]
        )
        data_batch = next(iter(loader))
        missing = [p for p in ("basecolor", "normal", "depth", "roughness", "metallic") if p not in data_batch]
        if missing:
            raise JobError(f"{job['gbuffer_folder'] / clip['name']}: DR's loader found no {', '.join(missing)} frames")
        data_batch.update(load_lighting(job, clip))
        output = pipeline.generate_video(data_batch=data_batch, seed=clip["seed"])  # uint8 [T, H, W, 3]
        for i in range(clip["frames"]):
            path = relit_file(job, clip["name"], i)
            path.parent.mkdir(parents=True, exist_ok=True)
            iio.imwrite(path, np.ascontiguousarray(output[i]))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse, read the job, import DR from the checkout and run; one line on stderr and 2 for a bad job or import."""
    args = parse_arguments(argv)
    try:
        job = read_job(args.job)
        checkout = args.checkout.expanduser().resolve()
        if not checkout.is_dir():
            raise JobError(f"{checkout}: checkout not found")
        checkpoint_dir = (args.checkpoint_dir or checkout / "checkpoints").expanduser().resolve()
        sys.path.insert(0, str(checkout))
        os.chdir(checkout)  # DR reads its model config by a path relative to the checkout
        dr = import_diffusion_renderer()
        run(job, dr, checkpoint_dir, args.offload)
    except JobError as err:
        print(f"diffusion_renderer_adapter: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
