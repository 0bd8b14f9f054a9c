"""Lazy loading of the compiled ray-marching extension.

The extension is looked for the first time an op runs, never at import, in this order:

1. ``relight3d._C``, built by ``setup.py`` from ``cuda_ext/`` (``pip install --no-build-isolation -e .``);
2. only when the environment variable ``RELIGHT3D_JIT=1`` is set, a just-in-time build of the same sources with
   :func:`torch.utils.cpp_extension.load` (minutes on a small machine; cached by torch afterwards);
3. otherwise every op falls back to :mod:`relight3d.ops._torch_impl`, and one warning says why.

``RELIGHT3D_OPS_BACKEND=torch`` forces the pure-torch reference everywhere (for debugging and comparisons).
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Optional, Tuple

from relight3d._optional import warn_once

_FORCE_TORCH_ENV = "RELIGHT3D_OPS_BACKEND"
"""Set to ``torch`` to force the pure-torch reference everywhere (useful for debugging and comparisons)."""

_JIT_ENV = "RELIGHT3D_JIT"
"""Set to ``1`` to compile the extension at first use when ``relight3d._C`` is not installed."""

_CSRC = Path(__file__).resolve().parents[2] / "cuda_ext" / "csrc"
"""Kernel sources (present in a source checkout / editable install, not in a wheel)."""


def _jit_build() -> ModuleType:
    """Compile ``cuda_ext/csrc`` with torch's JIT loader (CUDA kernels too when a GPU and nvcc are present)."""
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, load

    if not _CSRC.is_dir():
        raise FileNotFoundError(f"kernel sources not found at {_CSRC}")
    cpp = sorted(str(p) for p in _CSRC.glob("*.cpp"))
    cu = sorted(str(p) for p in _CSRC.glob("*.cu"))
    with_cuda = bool(cu) and torch.version.cuda is not None and CUDA_HOME is not None and torch.cuda.is_available()
    cflags, ldflags = ["-O3"], []
    if torch._C.has_openmp and sys.platform.startswith("linux"):
        cflags.append("-fopenmp")
        ldflags.append("-fopenmp")
    if with_cuda:
        cflags.append("-DWITH_CUDA")
    return load(
        name="relight3d_jit_C",
        sources=cpp + (cu if with_cuda else []),
        extra_cflags=cflags,
        extra_cuda_cflags=["-O3", "--use_fast_math", "-DWITH_CUDA"],
        extra_ldflags=ldflags,
        with_cuda=with_cuda,
        verbose=os.environ.get("RELIGHT3D_JIT_VERBOSE", "0") == "1",
    )


@functools.cache
def _load() -> Tuple[Optional[ModuleType], str]:
    """``(module, "")``, or ``(None, why it is unavailable)``; tried once per process."""
    try:
        return importlib.import_module("relight3d._C"), ""
    except Exception as e:  # ImportError, or OSError / undefined symbols from a build against another torch
        reason = f"relight3d._C could not be imported ({type(e).__name__}: {e})"
    if os.environ.get(_JIT_ENV, "0") != "1":
        return None, reason + f"; set {_JIT_ENV}=1 to compile it at first use"
    try:
        return _jit_build(), ""
    except Exception as e:  # a compiler error, missing sources, ...
        return None, reason + f"; the JIT build failed ({type(e).__name__}: {e})"


def extension() -> Optional[ModuleType]:
    """The compiled extension module, or None (with a one-time warning) when it is unavailable or disabled."""
    if os.environ.get(_FORCE_TORCH_ENV, "").lower() == "torch":
        return None
    ext, reason = _load()
    if ext is None:
        warn_once(
            "relight3d-ext",
            f"relight3d: compiled ray-marching extension not found, using the pure-torch implementation: {reason}. "
            "Build it with `pip install --no-build-isolation -e .`.",
        )
    return ext


def active_backend(device_type: str = "cpu") -> str:
    """Name of the implementation that ops on ``device_type`` tensors use: 'cuda', 'cpu' (compiled) or 'torch'."""
    ext = extension()
    if ext is None:
        return "torch"
    if device_type == "cuda":
        if getattr(ext, "WITH_CUDA", False):
            return "cuda"
        warn_once(
            "relight3d-ext-cuda",
            "relight3d: the compiled kernels were built without CUDA; cuda tensors use the pure-torch implementation.",
        )
        return "torch"
    return "cpu" if device_type == "cpu" else "torch"
