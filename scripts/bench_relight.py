#!/usr/bin/env python3
"""Relighting benchmark: train a field per object, relight it under every unseen light, score against Cycles.

For each object folder of a benchmark made by ``relight3d bench make`` (Objaverse layout: views 0-99 under light
0 for training, views 100-119 under every light for testing), this script

1. trains a field on light 0 (``--field-method``, ``relight3d-tensorf`` by default; ``--field-steps`` iterations),
   or reuses the run already under ``--output/<object>/field``;
2. runs ``relight3d relight`` (two stages, the chosen prior) for every other light's map;
3. prints per-object tables of PSNR / SSIM (raw and channel-aligned, inside the mask and over the image) for the
   method and the "no relighting" baseline (the same test views under the training light), plus stage-1 views/s
   and stage-2 iterations/s.

Example::

    .venv/bin/python scripts/bench_relight.py --bench ~/.cache/relight3d/bench/objects6_lights4_128px \\
        --objects armadillo dragon --field-steps 1500 --stage1-steps 600 --stage2-steps 50
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List


def train_field(folder: Path, out: Path, steps: int, method: str = "relight3d-tensorf") -> Path:
    from relight3d.data.objaverse import ObjaverseDataParserConfig
    from relight3d.engine.run import train
    from relight3d.method_configs import ngp_config, tensorf_config

    existing = sorted(out.glob(f"**/{method}/**/config.yml"))
    if existing and sorted((existing[-1].parent / "nerfstudio_models").glob("step-*.ckpt")):
        return existing[-1]
    cfg = {"relight3d-tensorf": tensorf_config, "relight3d-ngp": ngp_config}[method](steps)
    cfg.steps_per_save = steps
    cfg.pipeline.datamanager.dataparser = ObjaverseDataParserConfig()
    trainer = train(cfg, folder, out, experiment_name=folder.parent.name)
    return trainer.base_dir / "config.yml"


def main() -> None:
    from relight3d.method_configs import gaffer_config
    from relight3d.pipelines.relight_run import RelightJob, run_relighting
    from relight3d.pipelines.relight_stage2 import DEFAULT_STAGE2, STAGE2_PRESETS
    from relight3d.priors.registry import DEFAULT_PRIOR, PRIORS, prior_config

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", type=Path, default=Path("~/.cache/relight3d/bench/objects6_lights4_128px").expanduser())
    ap.add_argument("--objects", nargs="*", default=None, help="default: every complete object of the benchmark")
    ap.add_argument("--output", type=Path, default=Path("outputs/bench_relight"))
    ap.add_argument("--prior", default=DEFAULT_PRIOR, choices=sorted(PRIORS))
    ap.add_argument("--prior-path", default=None)
    ap.add_argument("--field-method", default="relight3d-tensorf", choices=["relight3d-tensorf", "relight3d-ngp"])
    ap.add_argument("--field-steps", type=int, default=1500)
    ap.add_argument("--stage1-steps", type=int, default=600)
    ap.add_argument("--stage2-steps", type=int, default=50)
    ap.add_argument("--stage2-preset", default=DEFAULT_STAGE2, choices=sorted(STAGE2_PRESETS))
    ap.add_argument("--video-frames", type=int, default=0)
    ap.add_argument(
        "--estimate-source",
        action="store_true",
        help="estimate the training light from the field (order-2 SH) instead of reading the benchmark's map",
    )
    args = ap.parse_args()

    objects = args.objects or sorted(
        p.parent.name for p in args.bench.glob("*/meta.json") if json.loads(p.read_text()).get("complete")
    )
    tables: Dict[str, Dict] = {}
    for name in objects:
        obj = args.bench / name
        folder = obj / "objaverse"
        t0 = time.perf_counter()
        run = train_field(folder, args.output / name / "field", args.field_steps, args.field_method)
        field_seconds = time.perf_counter() - t0
        lights = json.loads((obj / "meta.json").read_text())["lights"]
        envmaps = [obj / light["file"] for light in lights[1:]]
        method = gaffer_config(args.stage1_steps, args.stage2_steps, prior_config(args.prior, args.prior_path))
        method.pipeline.stage2 = STAGE2_PRESETS[args.stage2_preset]()
        job = RelightJob(
            field_run=run,
            envmaps=envmaps,
            output=args.output / name / "relight",
            method=method,
            video_frames=args.video_frames,
            estimate_source=args.estimate_source,
        )
        results = run_relighting(job)
        tables[name] = {"field_method": args.field_method, "field_seconds": field_seconds, "lights": results}
        print_object_table(name, results)
        (args.output / "bench_relight.json").write_text(json.dumps(tables, indent=2))
    print_summary(tables)


def _methods(results: Dict[str, Dict[str, float]]) -> List[str]:
    return sorted({k.split("/")[0] for r in results.values() for k in r if "/" in k})


def print_object_table(name: str, results: Dict[str, Dict[str, float]]) -> None:
    cols = ["psnr_masked", "psnr_masked_aligned", "psnr", "psnr_aligned", "ssim_masked_aligned"]
    print(f"\n### {name}\n")
    print("| light | method | " + " | ".join(cols) + " | stage-1 views/s | stage-2 it/s |")
    print("|" + "---|" * (len(cols) + 4))
    for light, r in results.items():
        for m in _methods({light: r}):
            vals = " | ".join(f"{r.get(f'{m}/{c}', float('nan')):.2f}" for c in cols)
            s1 = r.get("stage1_views_per_second", float("nan"))
            s2 = r.get("stage2_iterations_per_second", float("nan"))
            speed = "" if m == "no relighting" else f"{s1:.2f} | {s2:.2f}"
            print(f"| {light} | {m} | {vals} | {speed or ' | '} |")


def print_summary(tables: Dict[str, Dict]) -> None:
    rows = [(o, light, r) for o, t in tables.items() for light, r in t["lights"].items()]
    if not rows:
        return
    methods = _methods({f"{o}/{light}": r for o, light, r in rows})
    print("\n### mean over (object, light) pairs\n")
    for m in methods:
        keys = ["psnr_masked", "psnr_masked_aligned", "psnr", "psnr_aligned"]
        means = {k: sum(r.get(f"{m}/{k}", 0.0) for _, _, r in rows) / len(rows) for k in keys}
        print(f"{m}: " + ", ".join(f"{k} {v:.2f}" for k, v in means.items()))
    ours = [m for m in methods if m != "no relighting"]
    for m in ours:
        wins = sum(
            r.get(f"{m}/psnr_masked", 0) > r.get("no relighting/psnr_masked", 0)
            and r.get(f"{m}/psnr_masked_aligned", 0) > r.get("no relighting/psnr_masked_aligned", 0)
            for _, _, r in rows
        )
        print(f"{m} beats the baseline (raw and aligned, in mask) on {wins}/{len(rows)} pairs")


if __name__ == "__main__":
    main()
