"""The GPU check's options and its list of steps.

:func:`build_plan` is pure: from the options and what the chosen Python has (:func:`gpu_check.probe.environment`'s
dictionary) it returns the steps, each with its command, time box, environment, and, where it cannot run, the
reason it is skipped. Nothing here starts a process or imports torch, so the tests check the plan directly.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, NoReturn, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[2]
"""The checkout the check runs in (scripts/gpu_check/plan.py -> the repository root)."""

GPU_BUDGET = 450.0
"""Seconds the whole GPU check may take: with a step's kill grace and the report, it ends inside 8 minutes."""
DRY_RUN_BUDGET = 280.0
"""Seconds the CPU dry run may take (under 5 minutes on 2 cores)."""

STEP_NAMES: Tuple[str, ...] = (
    "install",
    "wheels",
    "environment",
    "metadata",
    "nerfacc",
    "scene",
    "build",
    "backend",
    "ops_tests",
    "prior_tests",
    "bench_train",
    "prior_speed",
)
"""Every step, in the order it starts. The runner decides the first three (which Python, and the wheels it lacks);
:func:`build_plan` the rest (``nerfacc`` and ``scene`` run in the background, beside the build and the tests)."""
PLANNED: Tuple[str, ...] = STEP_NAMES[3:]
"""The steps :func:`build_plan` returns, and ``--only`` chooses from."""

DRY_PRIOR_TESTS: Tuple[str, ...] = ("tests/priors/test_prior_base.py", "tests/priors/test_prior_neural_gaffer.py")
"""The dry run's share of the prior tests (the test suite runs them all on the CPU anyway): enough to go through
``RELIGHT3D_TEST_DEVICE`` and the JUnit report, in seconds rather than the two minutes of tests/priors."""
DRY_OPS_SELECTION = "cuda"
"""The dry run's ``pytest -k`` for tests/ops: it collects every kernel test (an import error fails the step) and
the CUDA cases must skip cleanly; the CPU cases are the test suite's."""

NERFACC_COMPAT = Path(__file__).resolve().parent / "nerfacc_compat.h"
"""Header nvcc force-includes into nerfacc 0.5.2's kernels so that they build with CUDA 13 and C++20 (it says how)."""

TRAIN_METHODS: Tuple[str, ...] = ("relight3d-tensorf", "relight3d-ngp", "instant-ngp")
"""The methods timed on the scene; the last, nerfstudio's Instant-NGP (nerfacc), is the peer of the ratios."""
PEER = "instant-ngp"
"""nerfstudio's Instant-NGP: its sampler is nerfacc's CUDA kernels, so it trains on a GPU only."""


@dataclass(frozen=True)
class SceneSize:
    """The synthetic scene the methods train on (``relight3d.data.synthetic``, the demo's three primitives)."""

    resolution: int
    """Image side in pixels."""
    n_train: int
    """Training views."""
    n_test: int
    """Held-out views, scored after training."""
    supersample: int
    """Rays per pixel side when rendering the ground truth."""


GPU_SCENE = SceneSize(resolution=128, n_train=50, n_test=8, supersample=2)
DRY_SCENE = SceneSize(resolution=24, n_train=6, n_test=2, supersample=1)


@dataclass(frozen=True)
class Mode:
    """What differs between the GPU check and its CPU dry run: sizes, and the time boxes (seconds) of the steps.
    A time box caps one step; the budget caps the whole check, and cuts a step's box to what is left of it."""

    budget: float
    """Seconds for the whole check."""
    train_seconds: float
    """Training wall time per method in the speed comparison."""
    warmup: int
    """Training iterations before that time starts."""
    scene: SceneSize
    """The scene the methods train on."""
    boxes: Dict[str, float]
    """Time box of each planned step (bench_train's is per method, on top of its training time)."""


GPU = Mode(GPU_BUDGET, 10.0, 10, GPU_SCENE, {"metadata": 60, "nerfacc": 330, "scene": 120, "build": 240,
           "backend": 60, "ops_tests": 150, "prior_tests": 150, "bench_train": 45, "prior_speed": 180})  # fmt: skip
DRY = Mode(DRY_RUN_BUDGET, 3.0, 2, DRY_SCENE, {"metadata": 60, "nerfacc": 60, "scene": 60, "build": 60,
           "backend": 60, "ops_tests": 60, "prior_tests": 120, "bench_train": 45, "prior_speed": 120})  # fmt: skip


@dataclass
class Options:
    """What ``scripts/gpu_check.sh`` was asked to do."""

    dry_run: bool = False
    """``--cpu-dry-run``: skip the CUDA build and tests, run the rest on the CPU at tiny sizes."""
    out: Path = REPO / "renders" / "gpu_check"
    """Where gpu_check.json / .md / .log go (``$OUT`` when set)."""
    work: Path = REPO / "renders" / "gpu_check" / "work"
    """Scratch: the scene, training runs, full step logs, test reports, the carried wheels' install."""
    budget: float = GPU_BUDGET
    """Seconds for the whole check; each step's time box is cut to what is left."""
    python: Optional[str] = None
    """Python to run the steps with (default: ``.venv/bin/python``, else install, else ``python3``)."""
    install: bool = True
    """Run ``scripts/install.sh`` when no usable ``.venv`` exists."""
    wheels: Optional[Path] = None
    """Wheels to install (``pip --no-index --no-deps --target``) for a Python that lacks them; None: ``.whl`` when
    it holds wheels and the Python is not the ``.venv``."""
    train_seconds: float = GPU.train_seconds
    """Training wall time per method in the speed comparison."""
    only: Tuple[str, ...] = ()
    """Run only these steps (and what they need); the others are skipped as asked."""
    plan_only: bool = False
    """Print the plan and exit without running it."""
    fetch_wheels: Optional[Path] = None
    """Download the wheels a bare GPU machine's Python lacks into this folder and exit (:mod:`gpu_check.wheels`)."""

    @property
    def mode(self) -> Mode:
        return DRY if self.dry_run else GPU

    @property
    def site(self) -> Path:
        """Where the wheels and relight3d's entry-point metadata go; on every step's ``PYTHONPATH``."""
        return self.work / "site"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """Bad arguments: one line, exit code 2 (argparse prints the whole usage first)."""
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def parse_args(argv: Optional[Sequence[str]] = None, environ: Optional[Dict[str, str]] = None) -> Options:
    """Options from the command line (``$OUT`` is the default output folder when set)."""
    environ = dict(os.environ if environ is None else environ)
    ap = _Parser(
        prog="scripts/gpu_check.sh",
        description="Build and test relight3d's CUDA kernels, run the prior tests on CUDA and time the methods and "
        "priors, within a time budget; writes gpu_check.json, gpu_check.md and gpu_check.log. Exit code 0: every "
        "step passed or was skipped by design of the mode; 1: a step failed, timed out or could not run; 2: bad "
        "arguments.",
        epilog=f"Steps: {', '.join(STEP_NAMES)}. For a GPU machine without network whose Python has torch but not "
        "relight3d's other dependencies: run --fetch-wheels and --cpu-dry-run where there is a network, and take .whl "
        "along with the checkout.",
    )
    ap.add_argument("--cpu-dry-run", action="store_true", help="skip the CUDA parts; run the rest on the CPU, tiny")
    ap.add_argument("--plan", action="store_true", help="print the steps, their time boxes and commands, and exit")
    ap.add_argument("--out", type=Path, help="output folder (default: $OUT if set, else renders/gpu_check)")
    ap.add_argument("--work", type=Path, help="scratch folder (default: renders/gpu_check/work)")
    ap.add_argument("--budget", type=float, help=f"seconds for everything (default {GPU.budget:.0f}; dry run "
                    f"{DRY.budget:.0f})")  # fmt: skip
    ap.add_argument("--python", help="Python for the steps (default: .venv/bin/python, else install, else python3)")
    ap.add_argument("--no-install", action="store_true", help="never run scripts/install.sh")
    ap.add_argument("--wheels", type=Path, metavar="DIR", help="folder of wheels to install for the Python first "
                    "(default: .whl, when the Python is not the .venv)")  # fmt: skip
    ap.add_argument(
        "--fetch-wheels",
        nargs="?",
        const=REPO / ".whl",
        type=Path,
        metavar="DIR",
        help="download the wheels such a machine's Python lacks into DIR (default .whl) and exit",
    )
    ap.add_argument("--train-seconds", type=float, help=f"training seconds per method (default "
                    f"{GPU.train_seconds:g}; dry run {DRY.train_seconds:g})")  # fmt: skip
    ap.add_argument("--only", nargs="+", choices=PLANNED, default=(), metavar="STEP",
                    help=f"run only these steps (and what they need): {', '.join(PLANNED)}")  # fmt: skip
    args = ap.parse_args(argv)
    mode = DRY if args.cpu_dry_run else GPU
    budget = args.budget if args.budget is not None else mode.budget
    train = args.train_seconds if args.train_seconds is not None else mode.train_seconds
    if budget <= 0 or train <= 0:
        ap.error("--budget and --train-seconds must be positive")
    if args.wheels is not None and not args.wheels.is_dir():
        ap.error(f"--wheels {args.wheels}: not a folder")
    out = args.out or (Path(environ["OUT"]) if environ.get("OUT") else REPO / "renders" / "gpu_check")
    return Options(dry_run=args.cpu_dry_run, out=out, work=args.work or REPO / "renders" / "gpu_check" / "work",
                   budget=budget, python=args.python, install=not args.no_install, wheels=args.wheels,
                   train_seconds=train, only=tuple(args.only), plan_only=args.plan,
                   fetch_wheels=args.fetch_wheels)  # fmt: skip


@dataclass
class Step:
    """One command of the check, and what became of it."""

    name: str
    """One of :data:`STEP_NAMES`."""
    title: str
    """What the table calls it."""
    argv: List[str] = field(default_factory=list)
    """The command (run under ``timeout``, in the repository root)."""
    timeout: float = 60.0
    """Its time box in seconds (cut to the budget left when it starts)."""
    env: Dict[str, str] = field(default_factory=dict)
    """Environment variables set for it."""
    skip: Optional[str] = None
    """Why it does not run (None: it runs)."""
    expected_skip: bool = False
    """Skipped by design of the mode (the dry run's CUDA parts): not counted as a gap."""
    background: bool = False
    """Started and left running; the steps naming it in ``after`` wait for it."""
    after: Tuple[str, ...] = ()
    """Background steps this one waits for before it starts."""
    requires: Tuple[str, ...] = ()
    """Steps that must have succeeded for this one to run (else it is skipped, saying which)."""
    result: Optional[Path] = None
    """The JSON / JUnit XML file it writes, read into the report."""
    notes: List[str] = field(default_factory=list)
    """What the report must say beside its result (e.g. a method left out, and why)."""
    # filled in by the runner
    status: str = "pending"
    """pending, ok, failed, timeout or skipped."""
    seconds: Optional[float] = None
    """Wall time it ran."""
    returncode: Optional[int] = None
    summary: str = ""
    """One line for the table: its result, or why it failed."""
    data: Dict[str, Any] = field(default_factory=dict)
    """What was read from its result file."""

    def command(self) -> str:
        return shlex.join(self.argv)


def missing_modules(env: Dict[str, Any], names: Sequence[str]) -> List[str]:
    """The modules of ``names`` that the chosen Python cannot import (per the environment probe)."""
    modules = env.get("modules", {})
    return [n for n in names if not modules.get(n)]


def cuda_arch(env: Dict[str, Any]) -> Optional[str]:
    """``TORCH_CUDA_ARCH_LIST`` for the GPU found (e.g. ``"9.0"`` for an H100 / H200), or None without one."""
    cap = env.get("capability")
    return f"{cap[0]}.{cap[1]}" if cap else None


NEEDS: Dict[str, List[str]] = {
    "metadata": ["setuptools"],
    "build": ["torch", "setuptools"],
    "backend": ["torch"],
    "nerfacc": ["torch", "nerfacc"],
    "scene": ["torch", "PIL"],
    "ops_tests": ["torch", "pytest"],
    "prior_tests": ["torch", "pytest", "diffusers", "transformers", "nerfstudio", "tyro"],
    "bench_train": ["torch", "nerfstudio"],
    "prior_speed": ["torch", "diffusers", "transformers", "nerfstudio", "tyro"],
}
"""The modules each planned step imports (a step whose Python lacks one is skipped, naming it)."""


def build_plan(options: Options, env: Dict[str, Any]) -> List[Step]:
    """The steps after ``environment``, for ``options`` and the Python that ``env`` describes."""
    py = env.get("python") or sys.executable
    work, dry, mode = options.work, options.dry_run, options.mode
    box = mode.boxes
    device = "cpu" if dry else "cuda"
    cores = int(env.get("cpu_count") or os.cpu_count() or 1)
    cuda_env = {"TORCH_CUDA_ARCH_LIST": cuda_arch(env) or "", "MAX_JOBS": str(cores)}
    if env.get("cuda_home"):
        cuda_env["CUDA_HOME"] = env["cuda_home"]
        cuda_env["PATH"] = f"{env['cuda_home']}/bin:{os.environ.get('PATH', '/usr/bin:/bin')}"
    if env.get("cuda_library_headers"):  # a toolkit without cuBLAS' headers: the pip wheels', searched last (probe)
        extra = [os.environ.get("CPLUS_INCLUDE_PATH"), *env["cuda_library_headers"]]
        cuda_env["CPLUS_INCLUDE_PATH"] = os.pathsep.join(filter(None, extra))
    # nerfacc 0.5.2 predates CUDA 13's CCCL 3 and C++20: nvcc force-includes two fixes (the header says which)
    shim = f"-include {NERFACC_COMPAT}"
    nerfacc_env = dict(cuda_env, NVCC_APPEND_FLAGS=" ".join(filter(None, [os.environ.get("NVCC_APPEND_FLAGS"), shim])))
    scene = mode.scene
    scene_dir = work / f"scene{scene.resolution}"
    pytest = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs", "--continue-on-collection-errors"]
    probe = [py, "-m", "gpu_check.probe"]
    prior_tests = list(DRY_PRIOR_TESTS if dry else ["tests/priors"])
    ops_tests = ["tests/ops", "-k", DRY_OPS_SELECTION] if dry else ["tests/ops"]

    steps = [
        # nerfstudio finds relight3d's methods through entry points: a Python that has relight3d only on its path
        # (a lent machine's) gets them from an egg-info written into the site folder, without compiling anything
        Step("metadata", "relight3d's entry points (egg-info)", [py, "setup.py", "-q", "egg_info", "--egg-base",
             str(options.site)], box["metadata"], {"BUILD_NO_EXT": "1"}),
        Step("nerfacc", "build nerfacc's CUDA kernels (for instant-ngp)",
             [*probe, "nerfacc", "--json", str(work / "nerfacc.json")], box["nerfacc"],
             dict(nerfacc_env, MAX_JOBS=str(max(cores // 2, 1))), background=True, result=work / "nerfacc.json"),
        Step("scene", f"render the {scene.resolution} px synthetic scene",
             [*probe, "scene", "--out", str(scene_dir), "--resolution", str(scene.resolution), "--n-train",
              str(scene.n_train), "--n-test", str(scene.n_test), "--supersample", str(scene.supersample),
              "--json", str(work / "scene.json")], box["scene"],
             {"OMP_NUM_THREADS": "1"}, background=True, result=work / "scene.json"),  # 0.05 s a view, beside compilers
        Step("build", "build the CUDA extension", [py, "setup.py", "build_ext", "--inplace", "--force"], box["build"],
             dict(cuda_env)),
        Step("backend", "ops use the compiled kernels", [*probe, "backend", "--json", str(work / "backend.json")]
             + ([] if dry else ["--require", "cuda"]), box["backend"], result=work / "backend.json"),
        Step("ops_tests", "kernel tests: collected, CUDA cases skip (tests/ops -k cuda)" if dry else
             "kernel tests, CPU + CUDA vs torch reference (tests/ops)",
             [*pytest, *ops_tests, "--junitxml", str(work / "ops_tests.xml")], box["ops_tests"],
             {"OMP_NUM_THREADS": str(max(cores // 4, 1))},  # the CPU cases, beside nerfacc's compilers
             result=work / "ops_tests.xml"),
        Step("prior_tests", f"prior tests on {device} ({' '.join(prior_tests)})",
             [*pytest, *prior_tests, "--junitxml", str(work / "prior_tests.xml")], box["prior_tests"],
             {"RELIGHT3D_TEST_DEVICE": device}, result=work / "prior_tests.xml"),
    ]  # fmt: skip
    methods = list(TRAIN_METHODS)
    bench = Step("bench_train", "training speed and held-out PSNR, same run", after=("scene",), requires=("scene",))
    if dry:
        methods.remove(PEER)
        bench.notes.append(f"{PEER}: skipped (--cpu-dry-run: its sampler is nerfacc's CUDA kernels, GPU only)")
    elif missing_modules(env, ["nerfacc"]):
        methods.remove(PEER)
        bench.notes.append(f"{PEER}: skipped (the Python has no nerfacc)")
    else:  # nerfacc loads its kernels through torch's JIT loader: nvcc on PATH, the same architectures
        bench.after = ("scene", "nerfacc")
        bench.env = dict(nerfacc_env)
        bench.notes.append(f"{PEER}: nerfacc 0.5.2's kernels are compiled with scripts/gpu_check/"
                           f"{NERFACC_COMPAT.name} force-included (CUDA 13's CCCL 3, C++20)")  # fmt: skip
    bench.argv = [py, "scripts/bench_train.py", "--data", str(scene_dir), "--seconds", f"{options.train_seconds:g}",
                  "--methods", *methods, "--peer", PEER if PEER in methods else methods[0], "--device", device,
                  "--warmup", str(mode.warmup), "--output", str(work / "bench_train"),
                  "--json", str(work / "bench_train.json")]  # fmt: skip
    bench.timeout = len(methods) * (options.train_seconds + box["bench_train"]) + 30
    bench.result = work / "bench_train.json"
    speed = Step("prior_speed", "one stage-1 pass per prior" + (" (tiny models)" if dry else " (released sizes)"),
                 [py, "scripts/bench_prior_speed.py", "--full", "--priors", "all", "--device", device, "--json",
                  str(work / "prior_speed.json")] + (["--tiny"] if dry else []), box["prior_speed"],
                 result=work / "prior_speed.json")  # fmt: skip
    steps += [bench, speed]

    if dry:  # tiny models on a loaded 2-core CPU: OpenMP threads spinning slow them down 40 times (measured)
        for step in steps:
            step.env.setdefault("OMP_NUM_THREADS", "1")
    wanted = set(options.only)
    for step in steps:  # --only NAME also runs what NAME needs
        if step.name in wanted:
            wanted.update(step.requires + step.after)
    installed = (env.get("modules") or {}).get("relight3d") not in (None, "present")
    for step in steps:
        if step.name == "metadata" and installed:
            step.skip, step.expected_skip = "relight3d is installed: its entry points are known", True
        elif dry and step.name in ("build", "nerfacc"):
            step.skip, step.expected_skip = "--cpu-dry-run: CUDA only", True
        elif wanted and step.name not in wanted and step.name != "metadata":
            step.skip, step.expected_skip = "not in --only", True
        elif missing_modules(env, NEEDS[step.name]):
            step.skip = f"the Python has no {', '.join(missing_modules(env, NEEDS[step.name]))}"
        elif not dry and not env.get("cuda_available") and step.name not in ("scene", "metadata"):
            step.skip = "torch sees no CUDA device (run with --cpu-dry-run on a machine without one)"
        elif step.name == "build" and not dry and not env.get("nvcc"):
            step.skip = "no nvcc found (set CUDA_HOME)"
    return steps


def without_unbuilt_peer(bench: Step, done: Sequence[Step]) -> None:
    """Just before ``bench_train`` starts: if nerfacc's kernels did not build, time the other methods without
    nerfstudio's instant-ngp (which would try to compile them again inside the benchmark's time box and lose the
    other methods' results with it); the ratios are then taken against the first method."""
    nerfacc = next((s for s in done if s.name == "nerfacc"), None)
    if PEER not in bench.argv or nerfacc is None or nerfacc.status == "ok":
        return
    first, last = bench.argv.index("--methods") + 1, bench.argv.index("--peer")
    methods = [m for m in bench.argv[first:last] if m != PEER]
    bench.argv = [*bench.argv[:first], *methods, "--peer", methods[0], *bench.argv[last + 2 :]]
    why = nerfacc.skip if nerfacc.status == "skipped" else f"{nerfacc.status}: {nerfacc.summary}"
    bench.notes = [f"{PEER}: skipped (nerfacc's kernels did not build: {why})"]


def format_plan(options: Options, env: Dict[str, Any], steps: Sequence[Step]) -> str:
    """``--plan``: the mode, the Python, and one line per step (what runs, in which time box; or why not)."""
    gpu = f"{env.get('gpu')} (TORCH_CUDA_ARCH_LIST={cuda_arch(env)})" if env.get("gpu") else "no GPU"
    lines = [f"GPU check plan: {'cpu-dry-run' if options.dry_run else 'gpu'} mode, budget {options.budget:.0f} s, "
             f"report in {options.out}/gpu_check.{{json,md,log}}",
             f"Python {env.get('python')}: torch {env.get('torch')}, {gpu}, {env.get('cpu_count')} CPU cores",
             "First the runner picks the Python (.venv; else scripts/install.sh; else python3), installs the wheels "
             "it lacks (--wheels, .whl) and probes it; the plan below is for the Python as it is now.", ""]  # fmt: skip
    for step in steps:
        if step.skip:
            lines.append(f"  {step.name:<12} skipped: {step.skip}")
            continue
        how = f"time box {step.timeout:.0f} s" + (", in the background" if step.background else "")
        env_text = " ".join(f"{k}={v}" for k, v in step.env.items() if k not in ("PATH", "CPLUS_INCLUDE_PATH"))
        lines.append(f"  {step.name:<12} {how}\n      {env_text + ' ' if env_text else ''}{step.command()}")
    return "\n".join(lines)
