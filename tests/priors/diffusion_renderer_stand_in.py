"""A stand-in for DiffusionRenderer's forward renderer, run by the diffusion-renderer prior's tests in place of
relight3d's adapter: the same command line, the same job folder, a known result.

It reads the job folder by its documented layout (paths written out here, not taken from the prior), the G-buffers
with relight3d's reader, and shades each frame's base colour with Lambertian shading from the camera-space normals
and the decoded lighting images (log-HDR radiance, ``env_nrm`` directions, the texels' solid angles); it writes the
relit frames where the prior reads them, and beside them (``stand_in/``) the float results and what it was run with,
for the tests to compare.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from relight3d.data.gbuffer_frames import read_gbuffer_frames
from relight3d.lighting.diffusion_renderer_encodings import log_hdr_to_radiance
from relight3d.lighting.encodings import linear_to_srgb


def read_rgb(path: Path) -> torch.Tensor:
    """An 8-bit RGB image as float32 [h, w, 3] in [0, 1]."""
    with Image.open(path) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)


def lambertian(
    base_color: torch.Tensor, normals: torch.Tensor, radiance: torch.Tensor, directions: torch.Tensor
) -> torch.Tensor:
    """``albedo / pi * sum_k L_k max(0, n . d_k) dw_k`` over the lighting image's texels (camera frame)."""
    rows, cols = radiance.shape[:2]
    d = torch.nn.functional.normalize(directions.reshape(-1, 3).double(), dim=-1)
    sin_theta = (1.0 - d[:, 1] ** 2).clamp_min(0.0).sqrt()  # d_y = cos(theta)
    solid_angle = sin_theta * (math.pi / rows) * (2.0 * math.pi / cols)
    cosines = (normals.reshape(-1, 3).double() @ d.T).clamp_min(0.0)
    irradiance = cosines @ (radiance.reshape(-1, 3).double() * solid_angle[:, None])
    return (base_color.double() * irradiance.reshape(base_color.shape) / math.pi).float()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--job", type=Path, required=True)
    parser.add_argument("--checkout", type=Path, required=True)
    parser.add_argument("--checkpoint_dir", type=Path, required=True)
    parser.add_argument("--offload", action="store_true")
    args = parser.parse_args()
    job_dir = args.job
    job = json.loads((job_dir / "job.json").read_text())
    record = {"cwd": os.getcwd(), "pythonpath": os.environ.get("PYTHONPATH", ""), "argv": sys.argv[1:]}
    (job_dir / "stand_in").mkdir()
    (job_dir / "stand_in" / "run.json").write_text(json.dumps(record))
    for clip in job["clips"]:
        frames = read_gbuffer_frames(job_dir / "gbuffer_frames", clip["name"])
        assert len(frames) == clip["frames"], (len(frames), clip)
        for i, frame in enumerate(frames):
            stem = f"0000.{i:04d}"
            lighting = job_dir / "lighting" / clip["name"]
            radiance = log_hdr_to_radiance(read_rgb(lighting / f"{stem}.env_log.png"))
            directions = read_rgb(lighting / f"{stem}.env_nrm.png") * 2.0 - 1.0
            assert radiance.shape[:2] == (job["height"], job["width"]) == frame.mask.shape[:2]
            camera_normals = frame.normals @ frame.camera_to_world[:3, :3]  # rows: R^T n
            linear = lambertian(frame.base_color, camera_normals, radiance, directions)
            relit = torch.where(frame.mask > 0.5, linear_to_srgb(linear.clamp(0.0, 1.0)), torch.ones_like(linear))
            (job_dir / "stand_in" / clip["name"]).mkdir(parents=True, exist_ok=True)
            np.save(job_dir / "stand_in" / clip["name"] / f"{stem}.npy", relit.numpy())
            target = job_dir / "relit" / clip["name"] / f"{stem}.relit.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((relit.clamp(0, 1) * 255).round().to(torch.uint8).numpy()).save(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
