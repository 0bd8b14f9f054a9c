"""Read a run's ``config.yml`` without running code: a YAML loader that builds only allowlisted classes.

``ns-train`` writes its config with ``yaml.dump``, so the file carries Python tags (``!!python/object:``,
``!!python/name:``, ``!!python/object/apply:``). nerfstudio reads them back with PyYAML's full loader, which calls
whatever the file names: a downloaded run folder whose ``config.yml`` holds ``!!python/object/apply:os.system`` runs
that command. :class:`RunConfigLoader` builds the same configs and refuses everything else:

* ``!!python/object:M.C`` (an object with its fields as a mapping): ``C`` must be a dataclass defined in a module
  under ``relight3d.`` or ``nerfstudio.``: every ``...Config`` of both (trainer, pipeline, datamanager,
  dataparser, model, optimizer, scheduler, viewer, logging, machine) and the small value dataclasses configs hold
  (relight3d's ``AnnealedValue``), but not nerfstudio's ``TensorDataclass`` (cameras, rays: runtime data). The
  object is made with ``object.__new__`` and its fields are set as data (no ``__init__``, ``__post_init__`` or
  ``__setstate__`` runs); fields the file lacks get their defaults, so a run saved by an older relight3d still
  loads. A key that would shadow a method or other class attribute is refused.
* ``!!python/name:M.C`` (a class, as in ``_target``): a class defined under ``relight3d.`` or ``nerfstudio.``, or
  a ``torch.optim`` optimizer (the ``_target`` of nerfstudio's optimizer configs); and the functions of
  :data:`ALLOWED_FUNCTIONS` (nerfstudio's datamanager config holds its ``collate_fn``).
* ``!!python/object/apply:M.C [args]`` and ``!!python/object/new:M.C [args]``: only ``pathlib`` paths from strings
  and the members of an ``Enum`` defined under ``relight3d.`` or ``nerfstudio.`` (a lookup by value).
* Plain YAML and the harmless Python scalars (``!!python/tuple``, ``!!python/none``, ``!!python/str`` ...).

Anything else (``!!python/module:``, a name or class outside the allowlist, the ``kwds`` / ``state`` /
``listitems`` / ``dictitems`` forms of ``apply``, unknown tags) stops the load with a one-line
:class:`~relight3d.errors.DataError` naming the file, the tag and its line. Modules are imported only when they are
under ``relight3d.`` / ``nerfstudio.`` (or are ``torch.optim`` / ``pathlib``), and only then is the class checked:
a file cannot make the loader import an arbitrary module.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import re
import sys
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import yaml

from relight3d.data.validation import check_regular_file
from relight3d.errors import DataError, one_line

CONFIG_PACKAGES = ("relight3d", "nerfstudio")
"""Top-level packages whose config classes, ``_target`` classes and enums a run config may name."""

PATH_CLASSES = frozenset({"Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath"})
"""``pathlib`` classes a run config may build (from strings only)."""

ALLOWED_FUNCTIONS = frozenset(
    {
        "nerfstudio.data.utils.nerfstudio_collate.nerfstudio_collate",
        "nerfstudio.data.datamanagers.base_datamanager.variable_res_collate",
    }
)
"""The only functions a run config may name (``!!python/name:``): the collate functions of nerfstudio's
datamanager configs."""

MAX_CONFIG_BYTES = 16 << 20
"""Larger files are refused unread: ns-train's configs are a few kilobytes."""

_PYTHON_TAG = "tag:yaml.org,2002:python/"
_DOTTED_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


class RefusedTag(yaml.YAMLError):
    """A tag that the run-config loader will not build (internal; :func:`load_run_config` turns it into a
    :class:`~relight3d.errors.DataError`)."""

    def __init__(self, node: yaml.Node, reason: str) -> None:
        self.tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        self.line = node.start_mark.line + 1
        super().__init__(f"refused YAML tag '{self.tag}' (line {self.line}): {reason}")


def _in_packages(module_name: str, packages: tuple = CONFIG_PACKAGES) -> bool:
    return any(module_name == p or module_name.startswith(p + ".") for p in packages)


def _is_config_dataclass(cls: type) -> bool:
    """The classes ``!!python/object:`` may build: dataclasses of relight3d / nerfstudio, not tensor dataclasses."""
    from nerfstudio.utils.tensor_dataclass import TensorDataclass

    return dataclasses.is_dataclass(cls) and _in_packages(cls.__module__) and not issubclass(cls, TensorDataclass)


def _is_optimizer_class(cls: type) -> bool:
    import torch

    return issubclass(cls, torch.optim.Optimizer) and _in_packages(cls.__module__, ("torch.optim",))


def _is_path_class(cls: type) -> bool:
    return cls.__module__ in ("pathlib", "pathlib._local") and cls.__name__ in PATH_CLASSES


def _is_config_enum(cls: type) -> bool:
    return issubclass(cls, enum.Enum) and _in_packages(cls.__module__)


def resolve_class(name: str, node: yaml.Node) -> type:
    """The class a tag names, importing its module only when it lies under an allowed package.

    Raises:
        RefusedTag: the name is malformed, its module is outside relight3d / nerfstudio / torch.optim / pathlib,
            it cannot be imported, or it is not a class defined where its module says.
    """
    if not _DOTTED_NAME.match(name):
        raise RefusedTag(node, "expected a dotted module.Class name")
    module_name, attr = name.rsplit(".", 1)
    if attr.startswith("__"):
        raise RefusedTag(node, "special attributes cannot be named")
    if module_name in ("pathlib", "pathlib._local"):
        module = sys.modules.get(module_name) or importlib.import_module(module_name)
    elif _in_packages(module_name) or _in_packages(module_name, ("torch.optim",)):
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise RefusedTag(node, f"the class cannot be imported ({one_line(err)})") from err
    else:
        raise RefusedTag(
            node,
            "names outside relight3d and nerfstudio cannot be imported from a run config (only their "
            "configs, paths and plain values)",
        )
    cls = getattr(module, attr, None)
    if not isinstance(cls, type):
        raise RefusedTag(node, f"{name} is not a class")
    if not (_in_packages(cls.__module__) or _is_optimizer_class(cls) or _is_path_class(cls)):
        raise RefusedTag(node, f"{name} is defined in {cls.__module__}, outside relight3d and nerfstudio")
    return cls


class RunConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus the Python tags that ns-train's configs use, restricted to allowlisted classes.

    Example:
        >>> config = yaml.load(Path("outputs/run/config.yml").read_text(), Loader=RunConfigLoader)  # doctest: +SKIP
    """

    def construct_python_name(self, suffix: str, node: yaml.Node) -> Any:
        """``!!python/name:M.C ''``: a relight3d / nerfstudio class, a torch optimizer class, or an allowed function."""
        if self.construct_scalar(node):
            raise RefusedTag(node, "a python/name tag takes an empty value")
        if suffix in ALLOWED_FUNCTIONS:
            module_name, attr = suffix.rsplit(".", 1)
            try:
                return getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError) as err:
                raise RefusedTag(node, f"the function cannot be imported ({one_line(err)})") from err
        return resolve_class(suffix, node)

    def construct_config_object(self, suffix: str, node: yaml.Node) -> Iterator[Any]:
        """``!!python/object:M.C {field: value}``: a config dataclass with its fields set as data."""
        cls = resolve_class(suffix, node)
        if not _is_config_dataclass(cls):
            raise RefusedTag(node, f"{suffix} is not a relight3d or nerfstudio config dataclass")
        if not isinstance(node, yaml.MappingNode):
            raise RefusedTag(node, "a config object must be a mapping of its fields")
        instance = object.__new__(cls)
        if not hasattr(instance, "__dict__"):
            raise RefusedTag(node, f"{suffix} keeps no attribute dictionary")
        yield instance  # (recursive references resolve to the instance, as in PyYAML's own loaders)
        state = self.construct_mapping(node, deep=True)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in state:
            if not isinstance(key, str) or not key.isidentifier() or key.startswith("__"):
                raise RefusedTag(node, f"{key!r} is not a field name")
            if key not in fields and hasattr(cls, key):
                raise RefusedTag(node, f"{key!r} would replace an attribute of {cls.__name__}")
        vars(instance).update(state)
        for name, f in fields.items():  # fields added since the run was saved get their defaults
            if name not in state:
                if f.default is not dataclasses.MISSING:
                    setattr(instance, name, f.default)
                elif f.default_factory is not dataclasses.MISSING:
                    setattr(instance, name, f.default_factory())

    def construct_python_call(self, suffix: str, node: yaml.Node) -> Any:
        """``!!python/object/apply:`` / ``!!python/object/new:``: a ``pathlib`` path or an enum member, nothing else."""
        cls = resolve_class(suffix, node)
        if not (_is_path_class(cls) or _is_config_enum(cls)):
            raise RefusedTag(node, f"{suffix} may not be called from a run config (only paths and enums may)")
        if isinstance(node, yaml.SequenceNode):
            args = self.construct_sequence(node, deep=True)
        elif isinstance(node, yaml.MappingNode):
            value = self.construct_mapping(node, deep=True)
            extra = sorted(str(k) for k in value if k != "args")
            if extra:
                raise RefusedTag(node, f"the {', '.join(extra)} form of object/apply is not accepted")
            args = value.get("args", [])
        else:
            raise RefusedTag(node, "expected a list of arguments")
        if _is_path_class(cls):
            if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
                raise RefusedTag(node, "a path is built from strings only")
            return cls(*args)
        if not isinstance(args, list) or len(args) != 1 or not isinstance(args[0], (str, int, float, bool)):
            raise RefusedTag(node, "an enum member is looked up by one plain value")
        try:
            return cls(args[0])
        except ValueError as err:
            raise RefusedTag(node, one_line(err)) from err

    def construct_python_tuple(self, node: yaml.Node) -> tuple:
        """``!!python/tuple [...]``."""
        return tuple(self.construct_sequence(node))

    def refuse(self, suffix: Optional[str], node: yaml.Node) -> None:
        """Every tag without a constructor above: ``!!python/module:``, unknown tags."""
        raise RefusedTag(node, "a run config may only build relight3d or nerfstudio configs, paths and plain values")


_PLAIN_PYTHON_TAGS = {
    "none": yaml.SafeLoader.construct_yaml_null,
    "bool": yaml.SafeLoader.construct_yaml_bool,
    "int": yaml.SafeLoader.construct_yaml_int,
    "long": yaml.SafeLoader.construct_yaml_int,
    "float": yaml.SafeLoader.construct_yaml_float,
    "str": yaml.SafeLoader.construct_scalar,
    "unicode": yaml.SafeLoader.construct_scalar,
    "list": yaml.SafeLoader.construct_yaml_seq,
    "dict": yaml.SafeLoader.construct_yaml_map,
    "tuple": RunConfigLoader.construct_python_tuple,
}
# A copy of the constructor tables, so that nothing here leaks into yaml.SafeLoader itself.
RunConfigLoader.yaml_constructors = dict(yaml.SafeLoader.yaml_constructors)
RunConfigLoader.yaml_multi_constructors = dict(yaml.SafeLoader.yaml_multi_constructors)
RunConfigLoader.yaml_constructors.pop(None, None)  # SafeLoader's "undefined tag" fallback: replaced by refuse
for _name, _constructor in _PLAIN_PYTHON_TAGS.items():
    RunConfigLoader.add_constructor(_PYTHON_TAG + _name, _constructor)
RunConfigLoader.add_multi_constructor(_PYTHON_TAG + "name:", RunConfigLoader.construct_python_name)
RunConfigLoader.add_multi_constructor(_PYTHON_TAG + "object:", RunConfigLoader.construct_config_object)
RunConfigLoader.add_multi_constructor(_PYTHON_TAG + "object/apply:", RunConfigLoader.construct_python_call)
RunConfigLoader.add_multi_constructor(_PYTHON_TAG + "object/new:", RunConfigLoader.construct_python_call)
RunConfigLoader.add_multi_constructor(None, RunConfigLoader.refuse)


def load_run_config(path: Union[str, Path]) -> Any:
    """The object a ``config.yml`` describes, built by :class:`RunConfigLoader` (no code from the file runs).

    Raises:
        DataError: (one line, naming the file) the file is missing, empty, not a regular file, too large, not UTF-8,
            not YAML, or holds a tag the loader refuses (the message names the tag and its line).
    """
    path = Path(path)
    size = check_regular_file(path, "config")
    if size > MAX_CONFIG_BYTES:
        raise DataError(path, f"{size} bytes, too large for a run config (at most {MAX_CONFIG_BYTES})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(path, "not a text file (not UTF-8)") from err
    except OSError as err:  # removed or made unreadable since the check
        raise DataError(path, f"cannot read the config ({err.strerror or one_line(err)})") from err
    return load_run_config_text(text, path)


def load_run_config_text(text: str, path: Union[str, Path] = "<config>") -> Any:
    """:func:`load_run_config` for text already read; ``path`` names it in errors."""
    try:
        return yaml.load(text, Loader=RunConfigLoader)
    except RefusedTag as err:
        raise DataError(path, str(err)) from err
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = err.problem or err.context or one_line(err)
        raise DataError(path, f"not a readable nerfstudio config (invalid YAML{where}: {problem})") from err
    except yaml.YAMLError as err:
        raise DataError(path, f"not a readable nerfstudio config (invalid YAML: {one_line(err)})") from err
    except RecursionError as err:
        raise DataError(path, "nested too deeply to be a run config") from err


__all__ = ["RunConfigLoader", "RefusedTag", "load_run_config", "load_run_config_text", "resolve_class"]
