"""argparse ``type=`` functions for counts, sizes and strengths: a bad value is refused while the command line is
parsed, before anything is loaded.

Each function raises :class:`argparse.ArgumentTypeError`, which argparse prints as one line
(``relight3d <command>: error: argument --steps: expected a positive integer, got -5``) and exits with code 2.
Importing this module is cheap (argparse and math only).

Example:
    >>> parser = argparse.ArgumentParser()
    >>> _ = parser.add_argument("--steps", type=positive_int, default=10)
    >>> parser.parse_args(["--steps", "3"]).steps
    3
"""

from __future__ import annotations

import argparse
import math
from typing import Callable


def _parse_int(text: str, what: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'") from None


def _parse_float(text: str, what: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text} (not a finite number)")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (a count of steps, views, pixels, ...)."""
    value = _parse_int(text, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (a count where 0 means none, or all)."""
    value = _parse_int(text, "an integer >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (a strength, a size, a rate)."""
    value = _parse_float(text, "a positive number")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    value = _parse_float(text, "a number >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def finite_float(text: str) -> float:
    """Any finite number (an angle, an offset); NaN and infinity are refused."""
    return _parse_float(text, "a finite number")


def unit_interval_float(text: str) -> float:
    """A number in [0, 1] (a fraction)."""
    value = _parse_float(text, "a number in [0, 1]")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


def int_in_range(low: int, high: int) -> Callable[[str], int]:
    """A ``type=`` function for an integer in ``[low, high]``."""

    def parse(text: str) -> int:
        value = _parse_int(text, f"an integer in [{low}, {high}]")
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer in [{low}, {high}], got {value}")
        return value

    parse.__name__ = f"int_in_range_{low}_{high}"
    return parse


def float_in_open_range(low: float, high: float) -> Callable[[str], float]:
    """A ``type=`` function for a finite number strictly between ``low`` and ``high`` (e.g. a field of view)."""

    def parse(text: str) -> float:
        value = _parse_float(text, f"a number in ({low:g}, {high:g})")
        if not low < value < high:
            raise argparse.ArgumentTypeError(f"expected a number in ({low:g}, {high:g}), got {text}")
        return value

    parse.__name__ = f"float_in_open_range_{low:g}_{high:g}"
    return parse


__all__ = [
    "finite_float",
    "float_in_open_range",
    "int_in_range",
    "non_negative_float",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "unit_interval_float",
]
