"""File and folder names derived from inputs (an env map's stem, an object's name), made safe to write under.

A name taken from an input can hold path separators, ``..``, leading dots, control characters or nothing at all:
``relight3d relight --envmap ...exr`` once named its output folder ``..`` and wrote two levels above ``--output``.
:func:`safe_name` keeps only ``[A-Za-z0-9._-]``, drops leading dots and never returns an empty name;
:class:`OutputNames` also keeps the names of one run distinct.

Example:
    >>> safe_name("../../etc/passwd")
    'etc_passwd'
    >>> names = OutputNames()
    >>> [names.add(s) for s in ("sky", "sky", "..", "")]
    ['sky', 'sky-2', 'unnamed', 'unnamed-2']
"""

from __future__ import annotations

import re
from typing import Dict, Optional

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME_LENGTH = 100
"""Longest name returned (file systems allow 255 bytes; suffixes and counters are added to it)."""


def safe_name(text: str, fallback: str = "unnamed") -> str:
    """``text`` with every run of characters outside ``[A-Za-z0-9._-]`` replaced by ``_``, leading dots, ``_`` and
    ``-`` removed, trailing ``_`` removed, at most :data:`MAX_NAME_LENGTH` characters; ``fallback`` if nothing is
    left. The result is a single path component that is neither ``.`` nor ``..``."""
    name = _UNSAFE.sub("_", str(text)).lstrip("._-").rstrip("_")[:MAX_NAME_LENGTH]
    return name if name else fallback


class OutputNames:
    """Safe names that stay distinct within one run: a repeated name gets ``-2``, ``-3``, ... (case-insensitively,
    so that two outputs cannot collide on a case-insensitive file system)."""

    def __init__(self, fallback: str = "unnamed") -> None:
        self.fallback = fallback
        self._taken: Dict[str, str] = {}

    def add(self, text: str, key: Optional[str] = None) -> str:
        """A safe, unused name for ``text``; asked again with the same ``key`` it returns the same name."""
        if key is not None and key in self._taken:
            return self._taken[key]
        base = safe_name(text, self.fallback)
        used = {v.lower() for v in self._taken.values()}
        name, n = base, 1
        while name.lower() in used:
            n += 1
            name = f"{base}-{n}"
        self._taken[key if key is not None else f"#{len(self._taken)}"] = name
        return name


__all__ = ["OutputNames", "safe_name", "MAX_NAME_LENGTH"]
