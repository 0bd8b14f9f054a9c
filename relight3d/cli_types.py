"""Shared pieces of the ``relight3d`` command line: checked ``type=`` functions, the help formatter, ``--device``.

* ``type=`` functions for counts, sizes and strengths: a bad value is refused while the command line is parsed,
  before anything is loaded. Each raises :class:`argparse.ArgumentTypeError`, which argparse prints as one line
  (``relight3d <command>: error: argument --steps: expected a positive integer, got -5``) and exits with code 2.
* :func:`add_command`: every subcommand is made through it, so every ``--help`` lists the defaults
  (:class:`DefaultsHelpFormatter`).
* :func:`add_device_argument` / :func:`resolve_device`: one ``--device`` option, ``auto`` by default.
* :func:`config_from_args`: a config dataclass filled from the parsed options of the same names.

Layer: lowest (beside ``errors``). Importing this module is cheap (argparse, dataclasses and math only; torch is
imported by :func:`resolve_device` when it is called).

Example:
    >>> parser = argparse.ArgumentParser()
    >>> _ = parser.add_argument("--steps", type=positive_int, default=10)
    >>> parser.parse_args(["--steps", "3"]).steps
    3
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import textwrap
from typing import Any, Callable, Optional, Type, TypeVar

Number = TypeVar("Number", int, float)
Config = TypeVar("Config")


def _checked(name: str, kind: Type[Number], what: str, accept: Callable[[Number], bool]) -> Callable[[str], Number]:
    """A ``type=`` function that parses ``kind`` (a finite number for floats) and requires ``accept(value)``."""

    def parse(text: str) -> Number:
        try:
            value = kind(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {what}, got '{text}'") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text} (not a finite number)")
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    parse.__name__ = parse.__qualname__ = name
    parse.__doc__ = f"Parse {what}; anything else is an ``argparse.ArgumentTypeError``."
    return parse


positive_int = _checked("positive_int", int, "a positive integer", lambda v: v >= 1)
"""An integer >= 1 (a count of steps, views, pixels, ...)."""
non_negative_int = _checked("non_negative_int", int, "an integer >= 0", lambda v: v >= 0)
"""An integer >= 0 (a count where 0 means none, or all)."""
positive_float = _checked("positive_float", float, "a positive number", lambda v: v > 0)
"""A finite number > 0 (a strength, a size, a rate)."""
non_negative_float = _checked("non_negative_float", float, "a number >= 0", lambda v: v >= 0)
"""A finite number >= 0."""
finite_float = _checked("finite_float", float, "a finite number", lambda v: True)
"""Any finite number (an angle, an offset); NaN and infinity are refused."""
unit_interval_float = _checked("unit_interval_float", float, "a number in [0, 1]", lambda v: 0.0 <= v <= 1.0)
"""A number in [0, 1] (a fraction)."""


def int_in_range(low: int, high: int) -> Callable[[str], int]:
    """A ``type=`` function for an integer in ``[low, high]``."""
    return _checked(f"int_in_range_{low}_{high}", int, f"an integer in [{low}, {high}]", lambda v: low <= v <= high)


def float_in_open_range(low: float, high: float) -> Callable[[str], float]:
    """A ``type=`` function for a finite number strictly between ``low`` and ``high`` (e.g. a field of view)."""
    return _checked(
        f"float_in_open_range_{low:g}_{high:g}", float, f"a number in ({low:g}, {high:g})", lambda v: low < v < high
    )


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` that ends each option's help with ``(default: ...)`` and never splits a hyphenated name.

    Left out where it says nothing: options whose default is None (their help says what happens then), on/off flags
    (``store_true``: off unless given), and help that already mentions its default.
    """

    def _get_help_string(self, action: argparse.Action) -> Optional[str]:
        text = action.help or ""
        if (
            action.default is None
            or action.default is argparse.SUPPRESS
            or action.nargs == 0
            or not action.option_strings
            or "default" in text.lower()
        ):
            return text
        return text + " (default: %(default)s)"

    def _split_lines(self, text: str, width: int) -> list[str]:
        # argparse's wrapper breaks at hyphens, splitting names such as ``ic-light-public`` across lines.
        return textwrap.wrap(self._whitespace_matcher.sub(" ", text).strip(), width, break_on_hyphens=False)


def add_command(
    subparsers: "argparse._SubParsersAction", name: str, help: str, description: Optional[str] = None
) -> argparse.ArgumentParser:
    """Add the subcommand ``name`` (its ``--help`` lists the defaults); ``description`` defaults to ``help``."""
    return subparsers.add_parser(
        name, help=help, description=description or help, formatter_class=DefaultsHelpFormatter
    )


DEVICE_AUTO = "auto"
"""The ``--device`` default: CUDA when torch sees a GPU, else the CPU."""


def add_device_argument(parser: argparse.ArgumentParser, what: str = "device to run on") -> None:
    """Add ``--device`` (default ``auto``); the command passes ``args.device`` through :func:`resolve_device`."""
    parser.add_argument(
        "--device", default=DEVICE_AUTO, help=f"{what}: auto (cuda when available, else cpu), cpu, cuda, cuda:1 ..."
    )


def resolve_device(name: Optional[str]) -> str:
    """``"auto"`` (or None) -> ``"cuda"`` when torch sees a GPU, else ``"cpu"``; any other name is returned as is."""
    if name not in (None, DEVICE_AUTO):
        return str(name)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def config_from_args(config_class: Type[Config], args: argparse.Namespace, **values: Any) -> Config:
    """``config_class`` with every init field that ``args`` has an attribute of the same name for taken from it,
    then ``values`` (for options whose names or types differ from the fields)."""
    names = [f.name for f in dataclasses.fields(config_class) if f.init and not f.name.startswith("_")]  # type: ignore[arg-type]
    taken = {n: getattr(args, n) for n in names if hasattr(args, n)}
    return config_class(**{**taken, **values})


__all__ = [
    "DEVICE_AUTO",
    "DefaultsHelpFormatter",
    "add_command",
    "add_device_argument",
    "config_from_args",
    "finite_float",
    "float_in_open_range",
    "int_in_range",
    "non_negative_float",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "resolve_device",
    "unit_interval_float",
]
