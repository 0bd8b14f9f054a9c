"""Checks on output files, done before any expensive work so that a bad path fails in a second, in one line."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence, Union

from relight3d.errors import DataError


def check_output_path(path: Union[str, Path], suffixes: Sequence[str], what: str) -> Path:
    """Validate an output file path: a known extension and a folder that exists (or can be made) and is writable.

    Args:
        path: the file to be written.
        suffixes: accepted extensions, lower case with the dot (``(".ply", ".obj")``).
        what: what the file is, for the message ("mesh", "video").

    Returns:
        ``path`` as a Path; its parent folder exists afterwards.

    Raises:
        DataError: unknown extension, a folder in the way, or a folder that cannot be created or written.
    """
    out = Path(path)
    suffix = out.suffix.lower()
    if suffix not in suffixes:
        shown = f"'{out.suffix}'" if out.suffix else "no extension"
        raise DataError(out, f"unknown {what} format ({shown}); use one of {', '.join(suffixes)}")
    if out.is_dir():
        raise DataError(out, f"is a folder; give a file name for the {what}")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(out, f"cannot create the output folder ({err.strerror or err.__class__.__name__})") from err
    # A real write probe: os.access says yes to root even on read-only file systems.
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".relight3d-write-test-"):
            pass
    except OSError as err:
        raise DataError(out, f"output folder is not writable ({err.strerror or err.__class__.__name__})") from err
    if out.exists() and not os.access(out, os.W_OK):
        raise DataError(out, "output file exists and is not writable")
    return out
