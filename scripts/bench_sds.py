"""relight3d-sds on a CPU: iterations per second, and the weight-free reconstruction check on a real photo.

Speed: full training iterations of ``relight3d-sds`` (4096 reference rays, a prior view with SDS and every
regulariser) at prior-view render sizes of 64 and 128 px. ``--settings cpu`` (default) shrinks the field for a CPU
(:func:`relight3d.pipelines.sds_checks.size_for_cpu`); ``--settings default`` keeps the method's RealFusion defaults
(a 16-level hash grid, 512 samples per diagonal, finite-difference normals: meant for a GPU). With ``--sd-path`` the
real Stable Diffusion computes the SDS term; without it a tiny random Stable Diffusion does (the output says so),
and the figure measures the radiance field alone.

Reconstruction: scikit-image's ``coffee`` photo, with a mask made by colour thresholds and morphology and cropped to
a square (:func:`relight3d.pipelines.sds_checks.coffee_cup_rgba`), is fitted in reconstruction-only mode (prior
weight 0) with CPU-sized settings (:func:`relight3d.pipelines.sds_checks.reconstruction_config`); the input view
must come back at ``--floor`` dB PSNR or more (exit code 1 otherwise). Usage::

    python scripts/bench_sds.py [speed|reconstruction|all] [--sizes 64 128] [--steps 5] [--sd-path DIR]
                                [--settings cpu|default]
                                [--size 128] [--recon-steps 300] [--floor 25] [--threads N] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch


def _speed(args: argparse.Namespace) -> None:
    from relight3d.method_configs import sds_config
    from relight3d.pipelines.sds_checks import time_sds_iterations

    device = "cuda" if torch.cuda.is_available() else "cpu"
    prior = f"Stable Diffusion from {args.sd_path}" if args.sd_path else (
        "a TINY RANDOM Stable Diffusion (no weights given: the SDS term costs almost nothing; "
        "pass --sd-path for the real cost)"
    )  # fmt: skip
    print(
        f"relight3d-sds training speed on {device} ({torch.get_num_threads()} threads), {args.settings} settings, "
        f"prior: {prior}"
    )
    for size in args.sizes:
        result = time_sds_iterations(
            sds_config(), size, steps=args.steps, warmup=args.warmup, sd_path=args.sd_path, settings=args.settings,
            seed=args.seed,
        )  # fmt: skip
        print(
            f"  render size {size:4d} px: {result['iterations_per_second']:.3f} iterations/s "
            f"({result['seconds_per_iteration']:.2f} s/iteration, {result['fastest_iteration']:.2f}-"
            f"{result['slowest_iteration']:.2f} s; {args.steps} timed after {args.warmup} warm-up, seed {args.seed})"
        )


def _reconstruction(args: argparse.Namespace) -> bool:
    from relight3d.method_configs import sds_config
    from relight3d.pipelines.sds_checks import check_reconstruction

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="relight3d-sds-check-"))
    print(
        f"reconstruction-only relight3d-sds on skimage coffee (cup + saucer mask), {args.size} px, "
        f"{args.recon_steps} iterations (outputs in {out})"
    )
    m = check_reconstruction(sds_config(), out, size=args.size, steps=args.recon_steps, rays_per_batch=args.rays)
    ok = m["psnr"] >= args.floor
    print(
        f"  input view: PSNR {m['psnr']:.2f} dB (inside the mask {m['psnr_masked']:.2f} dB), "
        f"{m['seconds']:.0f} s of training -> {'PASS' if ok else 'FAIL'} (floor {args.floor:g} dB)"
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", default="all", choices=["speed", "reconstruction", "all"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="prior-view render sizes (px)")
    parser.add_argument("--steps", type=int, default=5, help="timed iterations per size")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    parser.add_argument("--seed", type=int, default=0, help="torch seed (the same iterations for every run)")
    parser.add_argument("--sd-path", default=None, help="local Stable Diffusion folder (diffusers layout)")
    parser.add_argument("--settings", default="cpu", choices=["cpu", "default"], help="field sizing for the speed run")
    parser.add_argument("--size", type=int, default=128, help="reconstruction image size (px)")
    parser.add_argument("--recon-steps", type=int, default=300, help="reconstruction iterations")
    parser.add_argument("--rays", type=int, default=1024, help="reference rays per reconstruction iteration")
    parser.add_argument("--floor", type=float, default=25.0, help="PSNR the reconstruction must reach (dB)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--out", default=None, help="folder for the reconstruction run (default: a temp folder)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ok = True
    if args.what in ("speed", "all"):
        _speed(args)
    if args.what in ("reconstruction", "all"):
        ok = _reconstruction(args)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
