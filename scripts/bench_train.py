"""Training benchmark: relight3d's methods against nerfstudio's own, at equal wall time, in one run.

Each method trains on the same Blender-format scene for the same wall-clock budget (evaluation and checkpointing
are switched off during the budget), then every held-out view is rendered and scored against its RGBA ground truth
composited on white: PSNR over the full image and inside the object mask (alpha > 0.5), and SSIM. Rays/s counts
training rays only (per iteration, so nerfstudio's dynamic ray batches of ``instant-ngp`` count right), after
``--warmup`` iterations that are not timed. Ratios are printed against the peer (nerfstudio's ``tensorf`` by
default). A method that fails is reported and the others still run (exit code 1).

nerfstudio's own methods read the scene with its Blender dataparser (images composited on white) and render a white
background; otherwise they keep nerfstudio's settings (``instant-ngp``: mixed precision on a GPU, nerfacc sampling).

Example::

    python scripts/bench_train.py --data ~/.cache/relight3d/scenes/bunny128 --seconds 360 \\
        --methods relight3d-tensorf relight3d-ngp tensorf

nerfstudio's TensoRF builds an LPIPS metric whose AlexNet weights cannot be downloaded offline. The metric is only
used by nerfstudio's own evaluation, which this benchmark does not call, so it is replaced by a placeholder module
that raises if it is ever used. Scores here come from :func:`relight3d.engine.run.evaluate_views` for every method.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict

import torch

from relight3d.eval.memory import peak_rss_mib


class _UnavailableLPIPS(torch.nn.Module):
    """Stands in for torchmetrics' LPIPS where its weights cannot be downloaded; fails loudly if called."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__()

    def forward(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        raise RuntimeError("LPIPS weights are not available offline; this benchmark does not compute LPIPS")


def method_config(name: str):  # noqa: ANN201
    """The trainer config registered for ``name`` (relight3d's entry points or nerfstudio's built-ins)."""
    from nerfstudio.configs.method_configs import all_methods

    if name not in all_methods:
        raise SystemExit(f"bench_train: unknown method {name!r}")
    cfg = copy.deepcopy(all_methods[name])
    if not name.startswith("relight3d-"):
        import torchmetrics.image.lpip
        from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

        # nerfstudio's models import this class inside populate_modules, so patch it where it is defined.
        torchmetrics.image.lpip.LearnedPerceptualImagePatchSimilarity = _UnavailableLPIPS
        if not isinstance(cfg.pipeline.datamanager.dataparser, BlenderDataParserConfig):
            cfg.pipeline.datamanager.dataparser = BlenderDataParserConfig()
        if getattr(cfg.pipeline.model, "background_color", "white") != "white":
            cfg.pipeline.model.background_color = "white"  # the Blender dataparser composites the images on white
    return cfg


def _clock(device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def train_for(name: str, data: Path, seconds: float, output: Path, device: str = "cpu", warmup: int = 0) -> Dict:
    """Train ``name`` for ``warmup`` iterations, then for ``seconds`` of wall time, then score it on the scene's
    test split."""
    from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation

    from relight3d.engine.run import evaluate_views

    cfg = method_config(name)
    cfg.machine.device_type = device
    if name.startswith("relight3d-"):
        cfg.mixed_precision = False
    cfg.vis = "tensorboard"
    cfg.max_num_iterations = 1_000_000
    cfg.steps_per_eval_batch = cfg.steps_per_eval_image = cfg.steps_per_eval_all_images = 10_000_000
    cfg.steps_per_save = 10_000_000
    cfg.output_dir = output
    cfg.experiment_name = name
    cfg.pipeline.datamanager.data = data
    if hasattr(cfg.pipeline.datamanager, "dataparser") and hasattr(cfg.pipeline.datamanager.dataparser, "data"):
        cfg.pipeline.datamanager.dataparser.data = data
    cfg.set_timestamp()
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup()
    state = {"iterations": 0, "start": None, "end": None, "steps": 0, "rays": 0}

    def before(step: int) -> None:  # the batch this iteration draws has the sampler's current size
        if state["iterations"] == warmup:
            state["start"] = _clock(device)
        if state["start"] is not None:
            state["rays"] += trainer.pipeline.datamanager.get_train_rays_per_batch()

    def after(step: int) -> None:
        state["iterations"] += 1
        if state["start"] is not None:
            state["steps"] += 1
            if time.perf_counter() - state["start"] >= seconds:
                state["end"] = _clock(device)
                trainer.stop_training = True

    trainer.callbacks += [
        TrainingCallback(where_to_run=[TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], func=before),
        TrainingCallback(where_to_run=[TrainingCallbackLocation.AFTER_TRAIN_ITERATION], func=after),
    ]
    trainer.train()
    if state["start"] is None:
        raise RuntimeError(f"{name} stopped after {state['iterations']} iterations, within the warm-up")
    wall = (state["end"] or _clock(device)) - state["start"]
    steps, rays = state["steps"], state["rays"]
    dataset = trainer.pipeline.datamanager.eval_dataset
    metrics = evaluate_views(
        trainer.pipeline.model,
        dataset.cameras,
        list(dataset._dataparser_outputs.image_filenames),
        out_dir=output / name / "test_views",
    )
    metrics.update({"method": name, "iterations": steps, "train_seconds": wall, "rays_per_second": rays / wall,
                    "warmup_iterations": warmup, "peak_rss_mib": peak_rss_mib()})  # fmt: skip
    return metrics


def train_in_child(name: str, args: argparse.Namespace, device: str) -> Dict:
    """:func:`train_for` in a fresh Python process, so that each method's peak RSS is its own."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [
            sys.executable, __file__, "--in-process", "--methods", name, "--data", str(args.data),
            "--seconds", str(args.seconds), "--output", str(args.output), "--device", device,
            "--warmup", str(args.warmup), "--json", str(out),
        ]  # fmt: skip
        subprocess.run(command, check=False)
        if not out.is_file():
            raise RuntimeError(f"the training process of {name} ended without a result")
        run = json.loads(out.read_text())
    if name in run["errors"]:
        raise RuntimeError(run["errors"][name])
    return run["results"][name]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="Blender-format scene (transforms_*.json)")
    parser.add_argument("--seconds", type=float, default=360.0, help="wall-clock training budget per method")
    parser.add_argument("--methods", nargs="+", default=["relight3d-tensorf", "tensorf"])
    parser.add_argument("--peer", default="tensorf", help="method the ratios are taken against")
    parser.add_argument("--output", type=Path, default=Path("outputs/bench_train"))
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: cuda if visible")
    parser.add_argument("--warmup", type=int, default=5, help="iterations before the timed budget starts")
    parser.add_argument("--json", type=Path, help="also write the results and the run's settings here")
    parser.add_argument(
        "--in-process", action="store_true", help="train in this process (default: each method in its own process)"
    )
    args = parser.parse_args()
    device = args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"

    results, errors = {}, {}
    for name in args.methods:
        try:
            if args.in_process:  # the child of train_in_child, or asked for: this process prints the progress
                print(f"== {name}: {args.warmup} + {args.seconds:g} s of training on {args.data} ({device})")
                results[name] = train_for(name, args.data.expanduser(), args.seconds, args.output, device, args.warmup)
                print(json.dumps(results[name], indent=1), flush=True)
            else:
                results[name] = train_in_child(name, args, device)
        except Exception as err:  # why: one method's failure (a missing kernel, say) must not hide the others'
            errors[name] = f"{type(err).__name__}: {err}"
            print(f"bench_train: {name} failed: {errors[name]}", flush=True)

    peer = results.get(args.peer)
    header = (
        f"{'method':<20}{'iters':>7}{'rays/s':>10}{'PSNR':>8}{'PSNR mask':>11}{'aligned':>9}{'SSIM':>7}{'peak RSS':>10}"
    )
    if peer:
        header += f"{'x rays/s':>10}{'dB mask':>9}"
    lines = [header]
    for name, m in results.items():
        row = (
            f"{name:<20}{m['iterations']:>7}{m['rays_per_second']:>10.0f}{m['psnr']:>8.2f}"
            f"{m['psnr_masked']:>11.2f}{m['psnr_masked_aligned']:>9.2f}{m['ssim']:>7.3f}{m['peak_rss_mib']:>6.0f} MiB"
        )
        if peer:
            ratio = m["rays_per_second"] / peer["rays_per_second"]
            row += f"{ratio:>10.2f}{m['psnr_masked'] - peer['psnr_masked']:>+9.2f}"
        lines.append(row)
    table = "\n".join(lines)
    print(table)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(results, indent=2))
    (args.output / "table.txt").write_text(table + "\n")
    if args.json:
        run = {"device": device, "seconds": args.seconds, "warmup": args.warmup, "data": str(args.data)}
        args.json.write_text(json.dumps({**run, "peer": args.peer, "results": results, "errors": errors}, indent=2))
    if errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
