"""relight3d's error hierarchy: every error a user can cause is one line that names what and where.

The command-line entry points (``relight3d ...``, and relight3d's trainer under ``ns-train``) print
``relight3d: error: <message>`` and exit with code 2 for any :class:`Relight3dError`; nothing else is caught there,
so a genuine bug still shows its traceback.

* :class:`DataError` ``(path, problem)``: a file or folder the user named is missing, malformed or hostile.
* :class:`ConfigError` ``(option, problem)``: a command-line option or config value is out of range or inconsistent.
* :class:`WeightsError` ``(path, problem)``: model weights are missing, of the wrong architecture or unreadable.
* :class:`MissingDependencyError` ``(package, purpose)``: an optional package that this path needs is not installed.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Type, Union


class Relight3dError(Exception):
    """Base of every error relight3d raises for bad input; ``str(err)`` is a single line."""


class DataError(Relight3dError, ValueError):
    """Bad input data. ``str(err)`` is one line: ``<path>: <problem>``."""

    def __init__(self, path: Union[str, Path], problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class ConfigError(Relight3dError, ValueError):
    """A bad option or config value. ``str(err)`` is one line: ``<option>: <problem>``."""

    def __init__(self, option: str, problem: str) -> None:
        self.option = option
        self.problem = problem
        super().__init__(f"{option}: {problem}")


class WeightsError(DataError):
    """Model weights that are missing, unreadable or of another architecture: ``<path>: <problem>``."""


class MissingDependencyError(Relight3dError, ImportError):
    """An optional package is needed: ``<package> is not installed (needed for <purpose>); pip install ...``."""

    def __init__(self, package: str, purpose: str, install: str = "") -> None:
        self.package = package
        hint = f"; install it with: {install}" if install else f"; install it with: pip install {package}"
        super().__init__(f"{package} is not installed (needed for {purpose}){hint}")


def one_line(err: BaseException) -> str:
    """The first line of an exception's message (its class name when it has none), for wrapping library errors."""
    text = str(err).strip()
    return text.splitlines()[0] if text else err.__class__.__name__


@contextlib.contextmanager
def reading(path: Union[str, Path], what: str, error: Type[DataError] = DataError) -> Iterator[None]:
    """Turn any failure of a third-party reader inside the block into one ``error(path, ...)`` that keeps the cause.

    Image, EXR, pickle and safetensors readers raise many unrelated types for damaged or hostile files (OSError,
    SyntaxError, EOFError, RuntimeError, UnpicklingError, struct.error, ...), none of them documented as complete, so
    this is the one place in relight3d that catches ``Exception`` for reading. relight3d's own errors pass through.

    Example:
        >>> with reading(path, "an EXR image"):
        ...     pixels = OpenEXR.File(str(path)).parts[0].channels
    """
    try:
        yield
    except Relight3dError:
        raise
    except Exception as err:  # why: a reader of untrusted bytes has no complete list of what it raises (see above)
        raise error(path, f"cannot be read as {what}: {one_line(err)}") from err
