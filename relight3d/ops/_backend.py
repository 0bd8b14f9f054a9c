"""Which implementation the ops use: the compiled extension ``relight3d._C``, loaded lazily, or the torch reference.

The extension is looked for the first time an op runs, never at import, in this order:

1. ``relight3d._C``, built by ``setup.py`` from ``cuda_ext/`` (``pip install --no-build-isolation -e .``);
2. only when the environment variable ``RELIGHT3D_JIT=1`` is set, a just-in-time build of the same sources with
   :func:`torch.utils.cpp_extension.load` (minutes on a small machine; cached by torch afterwards);
3. otherwise every op falls back to :mod:`relight3d.ops._torch_impl`, and one warning says why.

``RELIGHT3D_OPS_BACKEND=torch`` forces the pure-torch reference everywhere (for debugging and comparisons), and
:func:`torch_reference` does the same for some ops within a block (tests, benchmarks).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator, List, Optional, Set, Tuple

from relight3d._optional import warn_once

_FORCE_TORCH_ENV = "RELIGHT3D_OPS_BACKEND"
"""Set to ``torch`` to force the pure-torch reference everywhere (useful for debugging and comparisons)."""

_JIT_ENV = "RELIGHT3D_JIT"
"""Set to ``1`` to compile the extension at first use when ``relight3d._C`` is not installed."""

_CSRC = Path(__file__).resolve().parents[2] / "cuda_ext" / "csrc"
"""Kernel sources (present in a source checkout / editable install, not in a wheel)."""

_REFERENCE_OPS: List[Optional[Set[str]]] = []
"""The ops :func:`torch_reference` blocks send to the reference (None: every op), innermost last."""


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
    attempts = [("relight3d._C could not be imported", lambda: importlib.import_module("relight3d._C"))]
    if os.environ.get(_JIT_ENV, "0") == "1":
        attempts.append(("the JIT build failed", _jit_build))
    reasons = []
    for failure, attempt in attempts:
        try:
            return attempt(), ""
        except Exception as err:  # why: the extension is optional, with a torch fallback for every op, and loading
            # (or building) a compiled module fails in many ways: ImportError (undefined symbols of a build against
            # another torch too), OSError, RuntimeError or CalledProcessError from compilers. One of relight3d's three.
            reasons.append(f"{failure} ({type(err).__name__}: {err})")
    if len(attempts) == 1:
        reasons.append(f"set {_JIT_ENV}=1 to compile it at first use")
    return None, "; ".join(reasons)


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


def active_backend(device_type: str = "cpu", op: Optional[str] = None) -> str:
    """Name of the implementation that ops on ``device_type`` tensors use: 'cuda', 'cpu' (compiled) or 'torch'.

    With ``op``, for that op: 'torch' also within a :func:`torch_reference` block naming it.
    """
    if _REFERENCE_OPS and (_REFERENCE_OPS[-1] is None or op in _REFERENCE_OPS[-1]):
        return "torch"
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


@contextlib.contextmanager
def torch_reference(*ops: str) -> Iterator[None]:
    """Within the block, the named ops (every op when none is named) use the torch reference.

    Example:
        >>> with torch_reference("sample_vm_features"):
        ...     active_backend("cpu", "sample_vm_features")
        'torch'
    """
    _REFERENCE_OPS.append(set(ops) if ops else None)
    try:
        yield
    finally:
        _REFERENCE_OPS.pop()
