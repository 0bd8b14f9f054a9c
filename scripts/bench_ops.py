"""Time the ray-marching ops: pure-torch reference vs compiled CPU kernels (and CUDA kernels when available).

Scene: a 128^3 occupancy grid over [-1, 1]^3 whose occupied cells form a ball filling ~10% of the box, 4096 rays
from cameras on a sphere of radius 3 looking at the centre, ``dt_min = 0.005`` (about 400 candidate steps across the
box). Compositing runs on ~200k packed samples. Usage::

    python scripts/bench_ops.py [--rays 4096] [--res 128] [--samples 200000] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Callable, Dict, List, Tuple

import torch

from relight3d.ops import _backend, _torch_impl


def _timeit(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    """Median wall time of ``fn`` in milliseconds (after one warm-up call)."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def make_scene(n_rays: int, res: int, device: torch.device, seed: int = 0) -> Dict[str, object]:
    """Rays, a ball-shaped occupancy grid (~10% of the box) and its bitfield."""
    g = torch.Generator().manual_seed(seed)
    aabb = torch.tensor([-1.0, -1, -1, 1, 1, 1])
    radius = (0.1 * 8 * 3 / (4 * math.pi)) ** (1 / 3)  # ball volume = 10% of the box
    cells = torch.arange(res**3)
    centers = _torch_impl.occupancy_cell_positions(cells, aabb, res)
    density = torch.where(centers.norm(dim=-1) < radius, 10.0, 0.0)[None]
    bitfield = _torch_impl.pack_bitfield(density, 0.01)
    # cameras on a sphere of radius 3, rays through a 60-degree cone towards the centre
    cam = torch.randn(n_rays, 3, generator=g)
    cam = cam / cam.norm(dim=-1, keepdim=True) * 3.0
    target = (torch.rand(n_rays, 3, generator=g) * 2 - 1) * 0.9
    d = target - cam
    d = d / d.norm(dim=-1, keepdim=True)
    jitter = torch.rand(n_rays, generator=g)
    scene = dict(rays_o=cam, rays_d=d, aabb=aabb, density=density, bitfield=bitfield, jitter=jitter)
    return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in scene.items()}


def make_samples(n_rays: int, n_samples: int, device: torch.device, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Packed samples, sorted by ray, ~n_samples in all."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 2 * n_samples // n_rays, (n_rays,), generator=g)
    ray_indices = torch.repeat_interleave(torch.arange(n_rays), counts)
    s = ray_indices.numel()
    first = (torch.cumsum(counts, 0) - counts)[ray_indices]  # index of each sample's first sample along its ray
    dt = torch.full((s,), 0.005)
    t_starts = 2.0 + (torch.arange(s) - first).float() * dt
    out = dict(
        sigmas=torch.rand(s, generator=g) * 50,
        rgbs=torch.rand(s, 3, generator=g),
        t_starts=t_starts,
        t_ends=t_starts + dt,
        ray_indices=ray_indices,
    )
    return {k: v.to(device) for k, v in out.items()}


def bench_impl(impl, scene, samples, n_rays: int, res: int, repeats: int, sync) -> Dict[str, float]:
    """Times of one implementation (a module with the _torch_impl signatures)."""
    o, d, aabb, bf, jit = scene["rays_o"], scene["rays_d"], scene["aabb"], scene["bitfield"], scene["jitter"]
    t_near, t_far = impl.ray_aabb_intersect(o, d, aabb)
    out: Dict[str, float] = {}
    out["march_rays_train (uniform)"] = _timeit(
        lambda: impl.march_rays_train(o, d, t_near, t_far, bf, aabb, 1, res, 0.005, 0.005, 0.0, 1024, jit),
        repeats,
        sync,
    )
    out["march_rays_train (cone, 2 cascades)"] = _timeit(
        lambda: impl.march_rays_train(o, d, t_near, t_far, scene["bitfield2"], aabb, 2, res, 0.005, 0.05, 1 / 128, 1024,
                                      jit),
        repeats,
        sync,
    )
    sig = samples["sigmas"].clone().requires_grad_()
    rgb = samples["rgbs"].clone().requires_grad_()
    t0, t1, ri = samples["t_starts"], samples["t_ends"], samples["ray_indices"]
    gw = torch.randn_like(sig)

    def weights_fwd_bwd() -> None:
        w, _ = impl.render_weights(sig, t0, t1, ri, n_rays)
        torch.autograd.grad((w * gw).sum(), sig)

    def composite_fwd_bwd() -> None:
        w, image, depth, acc = impl.composite_rays_train(sig, rgb, t0, t1, ri, n_rays)
        torch.autograd.grad(image.sum() + depth.sum() + acc.sum() + w.sum(), (sig, rgb))

    out["render_weights fwd+bwd"] = _timeit(weights_fwd_bwd, repeats, sync)
    out["composite_rays_train fwd+bwd"] = _timeit(composite_fwd_bwd, repeats, sync)
    density = scene["density"]
    n_cells = density.numel()
    gen = torch.Generator(device=density.device).manual_seed(1)
    idx = torch.randint(0, n_cells, (n_cells // 2,), device=density.device, generator=gen)
    vals = torch.rand(idx.shape[0], device=density.device, generator=gen)

    def update() -> None:
        new = impl.occupancy_grid_update(density, idx, vals, 0.95)
        impl.pack_bitfield(new, 0.01)

    out["occupancy update + pack (1M cells)"] = _timeit(update, repeats, sync)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rays", type=int, default=4096)
    parser.add_argument("--res", type=int, default=128)
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's)")
    parser.add_argument("--train-steps", type=int, default=60,
                        help="training iterations timed per method and backend (0 skips the training benchmark)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    cpu = torch.device("cpu")
    scene = make_scene(args.rays, args.res, cpu)
    density2 = torch.cat([scene["density"], torch.zeros_like(scene["density"])], 0)
    scene["bitfield2"] = _torch_impl.pack_bitfield(density2, 0.01)
    samples = make_samples(args.rays, args.samples, cpu)
    t_near, t_far = _torch_impl.ray_aabb_intersect(scene["rays_o"], scene["rays_d"], scene["aabb"])
    ids, _, _ = _torch_impl.march_rays_train(scene["rays_o"], scene["rays_d"], t_near, t_far, scene["bitfield"],
                                             scene["aabb"], 1, args.res, 0.005, 0.005)
    n_cand = _torch_impl._count_steps(t_near, t_far, 0.005, 0.005, 0.0, 1024).float()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; {args.rays} rays, {args.res}^3 grid, "
          f"{float(n_cand.mean()):.0f} candidate steps per ray ({float(n_cand[n_cand > 0].mean()):.0f} for rays "
          f"hitting the box), {ids.numel()} kept samples; compositing on {samples['sigmas'].numel()} samples")

    columns: List[Tuple[str, Dict[str, float]]] = []
    nosync = lambda: None  # noqa: E731
    columns.append(("torch (cpu)", bench_impl(_torch_impl, scene, samples, args.rays, args.res, args.repeats, nosync)))
    if _backend.active_backend("cpu") == "cpu":
        from relight3d.ops import _wrapper

        compiled_cpu = bench_impl(_wrapper, scene, samples, args.rays, args.res, args.repeats, nosync)
        columns.append(("compiled cpu", compiled_cpu))
    else:
        print("compiled CPU kernels unavailable: only the torch reference is timed")
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        scene_cuda = {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in scene.items()}
        samples_cuda = {k: v.to(dev) for k, v in samples.items()}
        sync = torch.cuda.synchronize
        columns.append(("torch (cuda)", bench_impl(_torch_impl, scene_cuda, samples_cuda, args.rays, args.res,
                                                   args.repeats, sync)))
        if _backend.active_backend("cuda") == "cuda":
            from relight3d.ops import _wrapper

            columns.append(("compiled cuda", bench_impl(_wrapper, scene_cuda, samples_cuda, args.rays, args.res,
                                                        args.repeats, sync)))

    names = list(columns[0][1])
    header = f"{'op (median ms)':<38}" + "".join(f"{c:>15}" for c, _ in columns)
    ratios = []
    if len(columns) > 1 and columns[1][0] == "compiled cpu":
        header += f"{'cpu speed-up':>14}"
        ratios.append((0, 1))
    cuda_cols = [i for i, (c, _) in enumerate(columns) if c == "compiled cuda"]
    if cuda_cols:
        header += f"{'cuda speed-up':>15}"
        ratios.append((cuda_cols[0] - 1, cuda_cols[0]))
    print(header)
    print("-" * len(header))
    for name in names:
        row = f"{name:<38}" + "".join(f"{col[name]:>15.2f}" for _, col in columns)
        for ref, new in ratios:
            row += f"{columns[ref][1][name] / columns[new][1][name]:>13.1f}x"
        print(row)

    # March + composite throughput on the same rays (uniform marching, then fwd+bwd compositing of its samples).
    march_key = next(k for k in names if k.startswith("march_rays_train") and "uniform" in k)
    comp_key = next(k for k in names if k.startswith("composite"))
    print()
    for label, col in columns:
        ms = col[march_key] + col[comp_key]
        print(f"march + composite, {label:<14}: {args.rays / ms * 1e3 / 1e3:8.1f} K rays/s")
    if len(columns) > 1 and columns[1][0] == "compiled cpu":
        torch_ms = columns[0][1][march_key] + columns[0][1][comp_key]
        ratio = torch_ms / (columns[1][1][march_key] + columns[1][1][comp_key])
        print(f"march + composite, compiled cpu vs torch: {ratio:.1f}x")
    if args.train_steps > 0:
        bench_training(args.train_steps)


def bench_training(steps: int) -> None:
    """Training rays/s of relight3d-tensorf and relight3d-ngp with each ray-marching backend (same scene, seed)."""
    import os
    from pathlib import Path

    from relight3d.data.synthetic import SceneSpec, write_blender_scene
    from relight3d.demo import cache_dir
    from relight3d.engine.run import time_training_steps
    from relight3d.method_configs import ngp_config, tensorf_config

    scene = write_blender_scene(cache_dir() / "scenes" / "objects64", SceneSpec(resolution=64))
    backends = ["torch"] + (["compiled"] if _backend.active_backend("cpu") == "cpu" else [])
    print(f"\ntraining rays/s on {scene} ({steps} iterations after 30 warm-up, 4096 rays per batch)")
    for name, make in (("relight3d-tensorf", tensorf_config), ("relight3d-ngp", ngp_config)):
        row = {}
        for backend in backends:
            previous = os.environ.get("RELIGHT3D_OPS_BACKEND")
            os.environ["RELIGHT3D_OPS_BACKEND"] = "torch" if backend == "torch" else "auto"
            try:
                torch.manual_seed(0)
                row[backend] = time_training_steps(make(), Path(scene), steps, warmup=30)["rays_per_second"]
            finally:
                if previous is None:
                    os.environ.pop("RELIGHT3D_OPS_BACKEND")
                else:
                    os.environ["RELIGHT3D_OPS_BACKEND"] = previous
        line = f"{name:<20}" + "".join(f"  {b}: {v / 1e3:6.1f} K rays/s" for b, v in row.items())
        if len(row) == 2:
            line += f"  ({row['compiled'] / row['torch']:.2f}x)"
        print(line)


if __name__ == "__main__":
    main()
