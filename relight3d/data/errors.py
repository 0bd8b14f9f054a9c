"""One error type for bad input data, whose message is a single line naming the file and the problem."""

from __future__ import annotations

from pathlib import Path
from typing import Union


class DataError(ValueError):
    """Bad input data. ``str(err)`` is one line: ``<path>: <problem>``."""

    def __init__(self, path: Union[str, Path], problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")
