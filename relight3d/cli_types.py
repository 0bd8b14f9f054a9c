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
from typing import (
    Any,
    Callable,
    List,
    Literal,
    Optional,
    Tuple,
    Type,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

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
        if isinstance(action.default, (list, tuple)):  # listed as typed on the command line, not as a Python list
            return text + " (default: " + ", ".join(map(str, action.default)).replace("%", "%%") + ")"
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


DottedOption = Tuple[str, str]
"""A ``--<group>.<field> VALUE`` option as ``(field, value)``, the field's hyphens turned into underscores."""


def split_dotted_options(extra: List[str], group: str) -> Tuple[List[DottedOption], List[str]]:
    """The ``--<group>.<field> VALUE`` / ``--<group>.<field>=VALUE`` options among ``extra`` (what argparse's
    ``parse_known_args`` left over), and everything else, in order."""
    found: List[DottedOption] = []
    rest: List[str] = []
    prefix = f"--{group}."
    i = 0
    while i < len(extra):
        token = extra[i]
        if token.startswith(prefix) and len(token) > len(prefix):
            name, sep, value = token[len(prefix) :].partition("=")
            if not sep:
                if i + 1 >= len(extra):
                    raise argparse.ArgumentTypeError(f"{token}: expected a value")
                value, i = extra[i + 1], i + 1
            found.append((name.replace("-", "_"), value))
        else:
            rest.append(token)
        i += 1
    return found, rest


_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def _coerce(kind: Any, text: str) -> Any:
    """``text`` as a value of the annotation ``kind`` (bool, int, float, str, Path, Literal, Optional / Union of
    those); anything else, or a value that does not parse, is a ``ValueError`` with the reason."""
    from pathlib import Path

    origin, args = get_origin(kind), get_args(kind)
    if origin is Literal:
        for choice in args:
            if str(choice) == text:
                return choice
        raise ValueError(f"expected one of {', '.join(str(a) for a in args)}, got '{text}'")
    if origin is Union:
        if type(None) in args and text.lower() == "none":
            return None
        problems = []
        for member in (a for a in args if a is not type(None)):
            try:
                return _coerce(member, text)
            except ValueError as err:
                problems.append(str(err))
        raise ValueError("; ".join(problems))
    if kind is bool:
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise ValueError(f"expected true or false, got '{text}'")
    if kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"expected {'an integer' if kind is int else 'a number'}, got '{text}'") from None
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got '{text}'")
        return value
    if kind is str:
        return text
    if kind is Path:
        return Path(text)
    raise ValueError(f"cannot be set from the command line (type {kind})")


def apply_dotted_options(config: Config, options: List[DottedOption], group: str) -> Config:
    """Set each ``(field, value)`` of ``options`` on the dataclass ``config``, parsed by the field's annotation.

    Raises:
        ConfigError: ``--<group>.<field>: <problem>`` for an unknown field (listing the known ones) or a value of
            the wrong kind.
    """
    from relight3d.errors import ConfigError

    hints = get_type_hints(type(config))
    names = [f.name for f in dataclasses.fields(config) if f.init and not f.name.startswith("_")]  # type: ignore[arg-type]
    for name, text in options:
        option = f"--{group}.{name.replace('_', '-')}"
        if name not in names:
            known = ", ".join(n.replace("_", "-") for n in names)
            raise ConfigError(option, f"{type(config).__name__} has no such field; its fields: {known}")
        try:
            setattr(config, name, _coerce(hints[name], text))
        except ValueError as err:
            raise ConfigError(option, str(err)) from None
    return config


__all__ = [
    "DEVICE_AUTO",
    "DottedOption",
    "apply_dotted_options",
    "split_dotted_options",
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
