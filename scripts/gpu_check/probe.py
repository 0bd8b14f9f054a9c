"""What the GPU check's steps run with the chosen Python: ``python -m gpu_check.probe <what>``.

* ``environment``: the Python, torch, the GPU, nvcc and which of relight3d's dependencies import (JSON on stdout;
  works without torch);
* ``backend``: which implementation relight3d's ops use on the CPU and on CUDA (``--require cuda`` fails unless
  the compiled CUDA kernels are loaded);
* ``nerfacc``: compile nerfacc's CUDA kernels (a just-in-time build at first use, minutes) before they are timed;
* ``scene``: render the synthetic Blender-format scene the methods train on (``relight3d.data.synthetic``).
"""

from __future__ import annotations

import argparse
import glob
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

MODULES = ("torch", "setuptools", "pytest", "PIL", "nerfstudio", "nerfacc", "diffusers", "transformers", "tyro",
           "tinycudann", "relight3d")  # fmt: skip
"""Modules whose presence decides which steps can run (checked without importing them, except torch)."""
DISTRIBUTIONS = {"PIL": "pillow"}
"""Module -> distribution name, where they differ."""


def _version(module: str) -> Optional[str]:
    """The installed version of ``module``, ``"present"`` when it is importable without metadata, else None."""
    try:
        if importlib.util.find_spec(module) is None:
            return None
    except (ImportError, ValueError):
        return None
    try:
        return importlib.metadata.version(DISTRIBUTIONS.get(module, module))
    except importlib.metadata.PackageNotFoundError:
        return "present"


def _run(argv: List[str]) -> Optional[str]:
    """The stripped output of ``argv``, or None when it cannot run or fails."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def environment() -> Dict[str, Any]:
    """What the check needs to know about this Python and machine."""
    info: Dict[str, Any] = {
        "python": sys.executable,
        "executable": sys.executable,
        "python_version": sys.version.split()[0],
        "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "modules": {m: _version(m) for m in MODULES},
        "cuda_available": False,
    }
    try:
        import torch
    except ImportError as err:
        info["torch_error"] = str(err)
        return info
    info.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
    info["cuda_home"] = home = cuda_home()
    info["cuda_library_headers"] = cuda_library_headers(home)
    nvcc = Path(home, "bin", "nvcc") if home else None
    if nvcc is not None and nvcc.is_file():
        version = _run([str(nvcc), "--version"])
        info["nvcc"] = version.splitlines()[-1] if version else str(nvcc)
    if info["cuda_available"]:
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name,
            capability=list(torch.cuda.get_device_capability(0)),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            gpu_count=torch.cuda.device_count(),
        )
        if shutil.which("nvidia-smi"):
            info["driver"] = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    root = Path(__file__).resolve().parents[2]
    info["commit"] = _run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
    if info["commit"] and _run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"]):
        info["commit"] += " (with uncommitted changes)"
    return info


def backend(require: Optional[str]) -> Dict[str, Any]:
    """Which implementation relight3d's ops use per device, and what the compiled extension holds."""
    import torch

    from relight3d.ops import _backend

    ext = _backend.extension()
    found: Dict[str, Any] = {
        "extension": getattr(ext, "__file__", None),
        "with_cuda": bool(getattr(ext, "WITH_CUDA", False)),
        "kernels": sorted(n for n in dir(ext) if not n.startswith("_") and n != "WITH_CUDA") if ext else [],
        "cpu": _backend.active_backend("cpu"),
        "cuda": _backend.active_backend("cuda") if torch.cuda.is_available() else None,
    }
    if ext is None:
        found["why_not"] = _backend._load()[1]
    if require is not None and found[require] != require:
        found["error"] = f"the ops use {found[require]!r} on {require} tensors, not the compiled {require} kernels"
    return found


def cuda_home() -> Optional[str]:
    """The CUDA toolkit to build with: torch's, unless its folder lacks the runtime's headers (torch takes the folder
    above the first ``nvcc`` on PATH, which can be a wrapper in /usr/local/bin), then the first toolkit that has
    them among ``$CUDA_HOME``, /usr/local/cuda and /usr/local/cuda-*."""
    from torch.utils.cpp_extension import CUDA_HOME

    found = [CUDA_HOME, os.environ.get("CUDA_HOME"), "/usr/local/cuda", *sorted(glob.glob("/usr/local/cuda-*"))[::-1]]
    for home in filter(None, found):
        if Path(home, "bin", "nvcc").is_file() and Path(home, "include", "cuda_runtime.h").is_file():
            return home
    return CUDA_HOME


def cuda_library_headers(home: Optional[str]) -> List[str]:
    """Include folders of the CUDA libraries installed as Python wheels (``nvidia/*/include``), for a toolkit that
    ships nvcc without them (torch's ``ATen/cuda`` headers include ``cublas_v2.h``). The build steps put them in
    ``CPLUS_INCLUDE_PATH``, which gcc (and so nvcc's preprocessing) searches after the command line's folders: the
    toolkit's own headers come first (the wheels' ``cuda_runtime.h`` lacks ``crt/host_config.h``)."""
    if home and Path(home, "include", "cublas_v2.h").is_file():
        return []
    import site

    roots = [Path(p) / "nvidia" for p in site.getsitepackages()]
    return sorted({str(h.parent) for r in roots if r.is_dir() for h in r.glob("*/include/cublas_v2.h")})


def build_nerfacc() -> Dict[str, Any]:
    """Import nerfacc's kernels, compiling them first if needed (torch's JIT loader; ``MAX_JOBS`` compilers)."""
    t0 = time.perf_counter()
    from nerfacc.cuda import _backend as nerfacc_backend

    if nerfacc_backend._C is None:
        return {"error": "nerfacc's CUDA kernels are unavailable (no nvcc on PATH?)"}
    return {"seconds": time.perf_counter() - t0, "module": getattr(nerfacc_backend._C, "__file__", None)}


def scene(out: Path, resolution: int, n_train: int, n_test: int, supersample: int) -> Dict[str, Any]:
    """Render (or reuse) the demo's synthetic scene of three primitives in the Blender layout."""
    from relight3d.data.synthetic import SceneSpec, write_blender_scene

    t0 = time.perf_counter()
    spec = SceneSpec(scene="objects", resolution=resolution, n_train=n_train, n_test=n_test, supersample=supersample)
    path = write_blender_scene(out, spec)
    return {"path": str(path), "seconds": time.perf_counter() - t0, **spec.__dict__}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gpu_check.probe", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    sub.add_parser("environment")
    be = sub.add_parser("backend")
    be.add_argument("--require", choices=["cpu", "cuda"])
    sub.add_parser("nerfacc")
    sc = sub.add_parser("scene")
    sc.add_argument("--out", type=Path, required=True)
    for name in ("resolution", "n-train", "n-test", "supersample"):
        sc.add_argument(f"--{name}", type=int, required=True)
    for p in (be, sc, sub.choices["environment"], sub.choices["nerfacc"]):
        p.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    if args.what == "environment":
        result = environment()
    elif args.what == "backend":
        result = backend(args.require)
    elif args.what == "nerfacc":
        result = build_nerfacc()
    else:
        result = scene(args.out, args.resolution, args.n_train, args.n_test, args.supersample)
    text = json.dumps(result, indent=1, default=str)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    if "error" in result:
        print(f"gpu_check: {result['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
