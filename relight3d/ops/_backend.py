"""Lazy loading of the compiled ray-marching extension.

The extension (``relight3d._C``, built by ``setup.py`` from ``cuda_ext/``) is looked for the first time an op runs,
never at import. Where it is missing, every op falls back to :mod:`relight3d.ops._torch_impl` and one warning says so.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Optional

from relight3d._optional import try_import, warn_once

_FORCE_TORCH_ENV = "RELIGHT3D_OPS_BACKEND"
"""Set to ``torch`` to force the pure-torch reference everywhere (useful for debugging and comparisons)."""


def extension() -> Optional[ModuleType]:
    """The compiled extension module, or None (with a one-time warning) when it is unavailable."""
    if os.environ.get(_FORCE_TORCH_ENV, "").lower() == "torch":
        return None
    ext = try_import("relight3d._C")
    if ext is None:
        warn_once(
            "relight3d-ext",
            "relight3d: compiled ray-marching extension not found; using the pure-torch implementation "
            "(reinstall with `pip install -e .` to build it).",
        )
    return ext


def active_backend(device_type: str = "cpu") -> str:
    """Name of the implementation that ops on ``device_type`` tensors use: 'cuda', 'cpu' (compiled) or 'torch'."""
    ext = extension()
    if ext is None:
        return "torch"
    if device_type == "cuda":
        return "cuda" if getattr(ext, "WITH_CUDA", False) else "torch"
    return "cpu"
