"""The one place where optional native dependencies are imported.

Each import is lazy: nothing here runs at ``import relight3d``. A missing library gives a torch fallback with a
single warning, or, where there is no fallback, a clear error at the moment the feature is used.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from types import ModuleType
from typing import Optional

_WARNED: set = set()


def warn_once(key: str, message: str) -> None:
    """Emit ``message`` as a warning the first time ``key`` is seen in this process."""
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


@functools.cache
def try_import(name: str) -> Optional[ModuleType]:
    """Import ``name`` or return None if it (or one of its native libraries) fails to load."""
    try:
        return importlib.import_module(name)
    except Exception:  # why: a native extension fails to load in many ways (ImportError, OSError from a missing .so,
        # RuntimeError from CUDA init, ...), and every one of them means the same here: use the fallback
        return None


def tinycudann() -> Optional[ModuleType]:
    """The tinycudann module, or None where it is not installed or cannot load."""
    return try_import("tinycudann")


def nvdiffrast_torch() -> Optional[ModuleType]:
    """``nvdiffrast.torch``, or None where it is not installed or cannot load."""
    return try_import("nvdiffrast.torch")


def require(module: Optional[ModuleType], name: str, feature: str) -> ModuleType:
    """Return ``module`` or raise an ImportError that says which feature needed which package."""
    if module is None:
        raise ImportError(f"{feature} needs the optional package '{name}', which is not installed or failed to load")
    return module
