"""Time the ray-marching ops: pure-torch reference vs compiled CPU kernels (and CUDA kernels when available).

Scene: a 128^3 occupancy grid over [-1, 1]^3 whose occupied cells form a ball filling ~10% of the box, 4096 rays
from cameras on a sphere of radius 3 looking at the centre, ``dt_min = 0.005`` (about 400 candidate steps across the
box). Compositing runs on ~200k packed samples. Usage::

    python scripts/bench_ops.py [--rays 4096] [--res 128] [--samples 200000] [--repeats 5] [--threads N]

The VM section times TensoRF's feature lookup (:func:`relight3d.ops.sample_vm_features`), forward + backward on
``--vm-points`` points along rays (sorted by ray, as in training), grid_sample reference vs compiled kernels, and
then relight3d-tensorf training with either implementation of that op (everything else compiled), the two runs
alternating step by step so that both see the same load. ``--only vm`` runs just these.

The hash section times the hash encoding (:func:`relight3d.ops.hash_encoding`) with the NGP field's default grid
(:class:`~relight3d.fields.ngp_field.NGPFieldSettings`: 12 levels x 2 features, 2^17 rows per level, resolutions 16
to 512) on 2^15 to 2^19 points along rays (``--hash-log2-points``): the torch reference vs the compiled CPU kernels
(vs the CUDA kernels and tinycudann where present), forward and forward + backward w.r.t. the table, and the normals
path (forward, gradient w.r.t. the positions with ``create_graph=True``, backward of a loss on it to the table),
each with its speed-up over the reference, and the peak RSS of the process after each size. ``--only hash`` runs
just these.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import statistics
import time
from typing import Any, Callable, Dict, List, Tuple

import torch
from torch import Tensor

from relight3d._optional import tinycudann
from relight3d.eval.memory import peak_rss_mib
from relight3d.fields.ngp_field import NGPFieldSettings
from relight3d.ops import (
    HashGridLayout,
    PackedOccupancy,
    StepSchedule,
    _backend,
    _dispatch,
    _torch_impl,
    hash_grid_layout,
)
from relight3d.ops.hash_encoding import per_level_scale

Run = Callable[..., Any]
"""``run(op, *args)``: one implementation of the ops, called with all the arguments of the public op, positionally,
grids and step schedules unpacked (``*PackedOccupancy(...)``)."""


def reference_run(op: str, *args: Any) -> Any:
    return _dispatch.reference(op)(*args)


def compiled_run(op: str, *args: Any) -> Any:
    from relight3d.ops import _wrapper

    return _wrapper.run(op, *args)


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
    centers = _torch_impl.occupancy_cell_positions(cells, aabb, res, None)
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


def bench_impl(run: Run, scene, samples, n_rays: int, res: int, repeats: int, sync) -> Dict[str, float]:  # noqa: ANN001
    """Times of one implementation of the ops (:data:`Run`)."""
    o, d, aabb, bf, jit = scene["rays_o"], scene["rays_d"], scene["aabb"], scene["bitfield"], scene["jitter"]
    t_near, t_far = run("ray_aabb_intersect", o, d, aabb, 0.0)
    out: Dict[str, float] = {}
    marches = {
        "march_rays_train (uniform)": (PackedOccupancy(bf, aabb, 1, res), StepSchedule(0.005, 0.005)),
        "march_rays_train (cone, 2 cascades)": (
            PackedOccupancy(scene["bitfield2"], aabb, 2, res),
            StepSchedule(0.005, 0.05, 1 / 128),
        ),
    }
    for name, (grid, steps) in marches.items():
        out[name] = _timeit(
            lambda grid=grid, steps=steps: run("march_rays_train", o, d, t_near, t_far, *grid, *steps, 1024, jit),
            repeats,
            sync,
        )
    sig = samples["sigmas"].clone().requires_grad_()
    rgb = samples["rgbs"].clone().requires_grad_()
    t0, t1, ri = samples["t_starts"], samples["t_ends"], samples["ray_indices"]
    gw = torch.randn_like(sig)

    def weights_fwd_bwd() -> None:
        w, _ = run("render_weights", sig, t0, t1, ri, n_rays, 1e-4)
        torch.autograd.grad((w * gw).sum(), sig)

    def composite_fwd_bwd() -> None:
        w, image, depth, acc = run("composite_rays_train", sig, rgb, t0, t1, ri, n_rays, 1e-4)
        torch.autograd.grad(image.sum() + depth.sum() + acc.sum() + w.sum(), (sig, rgb))

    out["render_weights fwd+bwd"] = _timeit(weights_fwd_bwd, repeats, sync)
    out["composite_rays_train fwd+bwd"] = _timeit(composite_fwd_bwd, repeats, sync)
    density = scene["density"]
    n_cells = density.numel()
    gen = torch.Generator(device=density.device).manual_seed(1)
    idx = torch.randint(0, n_cells, (n_cells // 2,), device=density.device, generator=gen)
    vals = torch.rand(idx.shape[0], device=density.device, generator=gen)

    def update() -> None:
        new = run("occupancy_grid_update", density, idx, vals, 0.95)
        run("pack_bitfield", new, 0.01)

    out["occupancy update + pack (1M cells)"] = _timeit(update, repeats, sync)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rays", type=int, default=4096)
    parser.add_argument("--res", type=int, default=128)
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's)")
    parser.add_argument(
        "--train-steps",
        type=int,
        default=60,
        help="training iterations timed per method and backend (0 skips the training benchmark)",
    )
    parser.add_argument("--only", choices=("all", "ray-marching", "vm", "hash"), default="all", help="sections to run")
    parser.add_argument(
        "--hash-log2-points", type=int, nargs="*", default=[15, 16, 17, 18, 19], help="log2 of the hash section's sizes"
    )
    parser.add_argument(
        "--hash-normals-max-log2", type=int, default=17, help="largest log2 size at which the normals path is timed"
    )
    parser.add_argument("--vm-points", type=int, default=100_000, help="points of the VM sampling benchmark")
    parser.add_argument(
        "--vm-train-steps",
        type=int,
        default=40,
        help="training iterations timed per VM implementation (0 skips the VM training A/B)",
    )
    parser.add_argument(
        "--vm-train-res",
        type=int,
        nargs="*",
        default=[64, 192],
        help="grid resolutions (TensoRF init_resolution) of the VM training A/B",
    )
    parser.add_argument(
        "--vm-train-clock",
        choices=("wall", "cpu"),
        default="wall",
        help="step times of the VM training A/B: wall clock, or this process's CPU time (less "
        "sensitive to other processes on a shared machine; meaningful with --threads 1)",
    )
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.only in ("all", "hash"):
        bench_hash(args.hash_log2_points, args.repeats, args.hash_normals_max_log2)
    if args.only == "hash":
        return
    if args.only in ("all", "vm"):
        bench_vm(args.vm_points, args.repeats)
        if args.vm_train_steps > 0:
            for res in args.vm_train_res:
                bench_vm_training(args.vm_train_steps, res, clock=args.vm_train_clock)
    if args.only == "vm":
        return

    cpu = torch.device("cpu")
    scene = make_scene(args.rays, args.res, cpu)
    density2 = torch.cat([scene["density"], torch.zeros_like(scene["density"])], 0)
    scene["bitfield2"] = _torch_impl.pack_bitfield(density2, 0.01)
    samples = make_samples(args.rays, args.samples, cpu)
    t_near, t_far = _torch_impl.ray_aabb_intersect(scene["rays_o"], scene["rays_d"], scene["aabb"], 0.0)
    grid, steps = PackedOccupancy(scene["bitfield"], scene["aabb"], 1, args.res), StepSchedule(0.005, 0.005)
    ids, _, _ = _torch_impl.march_rays_train(scene["rays_o"], scene["rays_d"], t_near, t_far, *grid, *steps, 1024, None)
    n_cand = _torch_impl._count_steps(t_near, t_far, *steps, 1024).float()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; {args.rays} rays, {args.res}^3 grid, "
        f"{float(n_cand.mean()):.0f} candidate steps per ray ({float(n_cand[n_cand > 0].mean()):.0f} for rays "
        f"hitting the box), {ids.numel()} kept samples; compositing on {samples['sigmas'].numel()} samples"
    )

    columns: List[Tuple[str, Dict[str, float]]] = []
    nosync = lambda: None  # noqa: E731
    torch_cpu = bench_impl(reference_run, scene, samples, args.rays, args.res, args.repeats, nosync)
    columns.append(("torch (cpu)", torch_cpu))
    if _backend.active_backend("cpu") == "cpu":
        compiled_cpu = bench_impl(compiled_run, scene, samples, args.rays, args.res, args.repeats, nosync)
        columns.append(("compiled cpu", compiled_cpu))
    else:
        print("compiled CPU kernels unavailable: only the torch reference is timed")
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        scene_cuda = {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in scene.items()}
        samples_cuda = {k: v.to(dev) for k, v in samples.items()}
        sync = torch.cuda.synchronize
        columns.append(
            (
                "torch (cuda)",
                bench_impl(reference_run, scene_cuda, samples_cuda, args.rays, args.res, args.repeats, sync),
            )
        )
        if _backend.active_backend("cuda") == "cuda":
            columns.append(
                (
                    "compiled cuda",
                    bench_impl(compiled_run, scene_cuda, samples_cuda, args.rays, args.res, args.repeats, sync),
                )
            )

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


# ---------------------------------------------------------------------------------------------------------------------
# TensoRF VM sampling
# ---------------------------------------------------------------------------------------------------------------------


def vm_points_along_rays(n: int, samples_per_ray: int = 128, seed: int = 0) -> torch.Tensor:
    """``n`` points in ``[-1, 1]^3``, ``samples_per_ray`` evenly spaced inside the box on each ray, sorted by ray."""
    g = torch.Generator().manual_seed(seed)
    n_rays = -(-n // samples_per_ray)
    o = torch.randn(n_rays, 3, generator=g)
    o = o / o.norm(dim=-1, keepdim=True) * 3.0
    d = (torch.rand(n_rays, 3, generator=g) - 0.5) - o
    d = d / d.norm(dim=-1, keepdim=True)
    t0, t1 = (-1.0 - o) / d, (1.0 - o) / d
    near, far = torch.minimum(t0, t1).amax(-1), torch.maximum(t0, t1).amin(-1)
    s = (torch.arange(samples_per_ray) + 0.5) / samples_per_ray
    t = near[:, None] + (far - near)[:, None] * s
    return (o[:, None] + d[:, None] * t[..., None]).reshape(-1, 3)[:n].clamp(-1.0, 1.0).contiguous()


def bench_vm(n_points: int, repeats: int) -> None:
    """Forward + backward of sample_vm_features: grid_sample reference vs compiled kernels (medians, interleaved)."""
    impls: Dict[str, Callable] = {"grid_sample": _torch_impl.sample_vm_features}
    ext = _backend.extension()
    if ext is not None and hasattr(ext, "sample_vm_features_fwd"):
        impls["compiled"] = functools.partial(compiled_run, "sample_vm_features")
    else:
        print("\ncompiled VM kernels unavailable: only the grid_sample reference is timed")
    xyz = vm_points_along_rays(n_points)
    print(
        f"\nsample_vm_features on {n_points} points along rays, forward + backward w.r.t. planes and lines "
        f"(median ms of {repeats}, implementations interleaved)"
    )
    header = f"{'C x R':<12}" + "".join(f"{name + ' fwd':>18}{name + ' fwd+bwd':>22}" for name in impls)
    if len(impls) == 2:
        header += f"{'fwd+bwd speed-up':>18}"
    print(header)
    print("-" * len(header))
    for c, res in ((16, 128), (48, 128), (16, 192), (48, 192)):
        g = torch.Generator().manual_seed(c * res)
        planes = (0.1 * torch.randn(3, c, res, res, generator=g)).requires_grad_()
        lines = (0.1 * torch.randn(3, c, res, 1, generator=g)).requires_grad_()
        cotangent = torch.randn(n_points, 3 * c, generator=g)
        times: Dict[str, Dict[str, List[float]]] = {name: {"fwd": [], "fwd+bwd": []} for name in impls}
        for rep in range(repeats + 1):  # the first round warms up
            for name, fn in impls.items():
                t0 = time.perf_counter()
                out = fn(planes, lines, xyz)
                t1 = time.perf_counter()
                torch.autograd.grad(out, (planes, lines), cotangent)
                t2 = time.perf_counter()
                if rep > 0:
                    times[name]["fwd"].append((t1 - t0) * 1e3)
                    times[name]["fwd+bwd"].append((t2 - t0) * 1e3)
        med = {name: {k: statistics.median(v) for k, v in col.items()} for name, col in times.items()}
        row = f"{f'{c} x {res}':<12}" + "".join(f"{m['fwd']:>18.1f}{m['fwd+bwd']:>22.1f}" for m in med.values())
        if len(impls) == 2:
            row += f"{med['grid_sample']['fwd+bwd'] / med['compiled']['fwd+bwd']:>17.1f}x"
        print(row)


def bench_vm_training(steps: int, res: int, warmup: int = 30, clock: str = "wall") -> None:
    """relight3d-tensorf training rays/s with the grid_sample VM lookup vs the compiled one (other ops compiled).

    Two pipelines (same seed, scene and config, grids of ``res`` per axis) train side by side, alternating step by
    step, each with its own implementation of the VM lookup; the median step times give the rays/s. ``clock="cpu"``
    times steps by this process's CPU time instead of the wall clock.
    """
    from pathlib import Path

    from relight3d.data.synthetic import SceneSpec, write_blender_scene
    from relight3d.demo import cache_dir
    from relight3d.engine.run import build_pipeline, training_step_function
    from relight3d.method_configs import tensorf_config

    ext = _backend.extension()
    if ext is None or not hasattr(ext, "sample_vm_features_fwd"):
        print("\ncompiled VM kernels unavailable: no VM training A/B")
        return
    scene = Path(write_blender_scene(cache_dir() / "scenes" / "objects64", SceneSpec(resolution=64)))
    # the VM lookup of each run: by grid_sample (the torch reference) or by the kernels
    impls = {"grid_sample": lambda: _backend.torch_reference("sample_vm_features"), "compiled": contextlib.nullcontext}
    runs = {}
    for name in impls:
        config = tensorf_config()
        config.pipeline.model.init_resolution = res
        config.pipeline.model.final_resolution = max(res, config.pipeline.model.final_resolution)
        torch.manual_seed(0)
        pipeline = build_pipeline(config, scene)
        runs[name], rays = training_step_function(pipeline, config), pipeline.datamanager.get_train_rays_per_batch()
    times: Dict[str, List[float]] = {name: [] for name in impls}
    timer = time.perf_counter if clock == "wall" else time.process_time
    for i in range(warmup + steps):
        for name in list(impls) if i % 2 == 0 else list(impls)[::-1]:
            with impls[name]():
                t0 = timer()
                runs[name](i)
                if i >= warmup:
                    times[name].append(timer() - t0)
    rate = {name: rays / statistics.median(t) for name, t in times.items()}
    unit = "rays/s" if clock == "wall" else "rays per CPU second"
    print(
        f"\nrelight3d-tensorf training at {res}^3 grids ({steps} iterations after {warmup}, {rays} rays per batch, "
        f"alternating, {torch.get_num_threads()} threads): VM lookup by grid_sample "
        f"{rate['grid_sample'] / 1e3:.2f} K {unit}, compiled {rate['compiled'] / 1e3:.2f} K {unit} "
        f"({rate['compiled'] / rate['grid_sample']:.2f}x)"
    )


# ---------------------------------------------------------------------------------------------------------------------
# Hash encoding
# ---------------------------------------------------------------------------------------------------------------------


HashImpl = Tuple[torch.device, Callable[[Tensor, Tensor], Tensor], Callable[[Tensor], List[Tensor]]]
"""An implementation of the hash encoding to time: its device, ``encode(points, table)``, and ``wrt(table)``: the
tensors its backward differentiates (the table, or tinycudann's own parameters)."""


def _hash_implementations(settings: NGPFieldSettings, layout: HashGridLayout) -> Dict[str, HashImpl]:
    """The implementations to time, by name: the torch reference, the compiled CPU kernels, and on a GPU the CUDA
    kernels and tinycudann (where they are present)."""
    cpu, impls = torch.device("cpu"), {}
    table_only = lambda t: [t]  # noqa: E731
    impls["torch"] = (cpu, lambda x, t: reference_run("hash_encoding", x, t, *layout), table_only)
    ext = _backend.extension()
    if ext is not None and hasattr(ext, "hash_encoding_fwd"):
        compiled = lambda x, t: compiled_run("hash_encoding", x, t, *layout)  # noqa: E731
        impls["cpu"] = (cpu, compiled, table_only)
        if torch.cuda.is_available() and getattr(ext, "WITH_CUDA", False):
            impls["cuda"] = (torch.device("cuda"), compiled, table_only)
    else:
        print("\ncompiled hash-encoding kernels unavailable: only the torch reference is timed")
    tcnn = tinycudann()
    if tcnn is not None and torch.cuda.is_available():
        s = settings
        config = {"otype": "HashGrid", "n_levels": s.n_levels, "n_features_per_level": s.features_per_level,
                  "log2_hashmap_size": s.log2_table_size, "base_resolution": s.base_resolution,
                  "per_level_scale": per_level_scale(s.n_levels, s.base_resolution, s.max_resolution)}  # fmt: skip
        encoding = tcnn.Encoding(3, config, dtype=torch.float32)
        impls["tcnn"] = (torch.device("cuda"), lambda x, t: encoding(x), lambda t: list(encoding.parameters()))
    return impls


def bench_hash(log2_points: List[int], repeats: int, normals_max_log2: int) -> None:
    """Hash encoding with the NGP field's default grid: every implementation, interleaved, at each size."""
    s = NGPFieldSettings()
    layout = hash_grid_layout(s.n_levels, s.log2_table_size, s.base_resolution, s.max_resolution)
    impls = _hash_implementations(s, layout)
    g = torch.Generator().manual_seed(0)
    table_cpu = 1e-2 * torch.randn(layout.offsets[-1], s.features_per_level, generator=g)
    print(
        f"\nhash_encoding, the NGP field's defaults ({s.n_levels} levels x {s.features_per_level} features, "
        f"2^{s.log2_table_size} rows per level, resolutions {s.base_resolution}..{s.max_resolution}, "
        f"{layout.offsets[-1]} rows), points along rays, {torch.get_num_threads()} CPU threads; median ms of "
        f"{repeats} (implementations interleaved). fwd+bwd: gradient w.r.t. the table; normals: forward, gradient "
        f"w.r.t. the points with create_graph=True, backward of a loss on it to the table (up to 2^{normals_max_log2} "
        f"points); x: the reference's time over this one's; peak RSS: the process's, after the size"
    )
    kinds = ("fwd", "fwd+bwd", "normals")
    header = f"{'points':>8}{'impl':>7}" + "".join(f"{f'{k} ms':>13}" for k in kinds)
    header += "".join(f"{f'{k} x':>12}" for k in kinds) + f"{'peak RSS MiB':>14}"
    print(header)
    print("-" * len(header))
    for log2 in log2_points:
        n = 2**log2
        x_cpu = (vm_points_along_rays(n, seed=log2) + 1.0) * 0.5
        cot_cpu = torch.randn(n, s.n_levels * s.features_per_level, generator=g)
        v_cpu = torch.randn(n, 3, generator=g)
        times: Dict[Tuple[str, str], List[float]] = {(name, k): [] for name in impls for k in kinds}
        for rep in range(repeats + 1):  # the first round warms up
            for name, (device, encode, wrt) in impls.items():
                sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
                x, cot, v = x_cpu.to(device), cot_cpu.to(device), v_cpu.to(device)
                table = table_cpu.to(device).requires_grad_()
                sync()
                t0 = time.perf_counter()
                out = encode(x, table)
                sync()
                t1 = time.perf_counter()
                torch.autograd.grad(out, wrt(table), cot.to(out.dtype))
                sync()
                t2 = time.perf_counter()
                if rep > 0:
                    times[(name, "fwd")].append((t1 - t0) * 1e3)
                    times[(name, "fwd+bwd")].append((t2 - t0) * 1e3)
                if log2 <= normals_max_log2 and name != "tcnn":
                    pts = x.clone().requires_grad_()
                    t3 = time.perf_counter()
                    (grad_x,) = torch.autograd.grad((encode(pts, table) * cot).sum(), pts, create_graph=True)
                    torch.autograd.grad((grad_x * v).sum(), table)
                    sync()
                    if rep > 0:
                        times[(name, "normals")].append((time.perf_counter() - t3) * 1e3)
        med = {c: statistics.median(t) if t else float("nan") for c, t in times.items()}
        for name in impls:
            row = f"{f'2^{log2}':>8}{name:>7}" + "".join(f"{med[(name, k)]:>13.1f}" for k in kinds)
            row += "".join(f"{med[('torch', k)] / med[(name, k)]:>11.1f}x" for k in kinds)
            print(row + f"{peak_rss_mib():>14.0f}")


if __name__ == "__main__":
    main()
