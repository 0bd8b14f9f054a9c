"""What to score: :class:`EvalRun` (one method's renders of one object under one light, with the ground truth), and
the runs a manifest file names.

Manifest (JSON or YAML; relative paths are relative to the manifest's folder; ``{object}`` and ``{light}`` are
filled in)::

    training_light: light000          # its GT images are the baseline and the "input" column (optional)
    background: white                 # white | black | a number in [0, 1] (optional, default white)
    objects: [bunny, teapot]
    lights: [light000, light001]
    gt: gt/{object}/{light}
    methods:
      ours: runs/ours/{object}/{light}
      neural-gaffer: {dir: "runs/gaffer/{object}", pattern: "(\\d{3})_{light}\\.png"}

A folder can be a path or ``{dir, pattern}`` (see :class:`~relight3d.eval.folders.ImageFolder`). Methods are scored
under every listed light; the baseline (:data:`~relight3d.eval.records.BASELINE_METHOD`) under every light except
the training light.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from relight3d.errors import DataError, reading
from relight3d.eval.folders import ImageFolder, PathLike
from relight3d.eval.records import BASELINE_METHOD


@dataclass(frozen=True)
class EvalRun:
    """One (object, light, method) to score."""

    object: str
    """Object name."""
    light: str
    """Target light name."""
    method: str
    """Method name (``BASELINE_METHOD`` for the baseline)."""
    pred: ImageFolder
    """The renders."""
    gt: ImageFolder
    """The ground truth."""
    input: Optional[ImageFolder] = None
    """The training-light images of the same views (the report's "input" column), when known."""


def read_manifest(path: PathLike) -> Dict[str, Any]:
    """Parse a JSON or YAML manifest (by suffix: .json, else YAML).

    Raises:
        DataError: the file is missing or does not parse into a mapping.
    """
    from relight3d.data.validation import check_regular_file

    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file")
    check_regular_file(path, "manifest")
    with reading(path, "a JSON/YAML manifest"):
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise DataError(path, "the manifest must be a mapping with objects, lights, gt and methods")
    return data


def expand_manifest(manifest: Mapping[str, Any], root: PathLike = ".", source: PathLike = "manifest") -> List[EvalRun]:
    """The runs a manifest names: every method under every light of every object, plus the baseline.

    Args:
        manifest: the parsed manifest (see the module docstring).
        root: folder that relative paths are relative to.
        source: file name used in error messages.

    Raises:
        DataError: a key is missing or malformed, a placeholder is unknown, or nothing is left to score.
    """
    for key in ("objects", "lights", "gt"):
        if key not in manifest:
            raise DataError(source, f"the manifest has no '{key}'")
    objects, lights = _names(manifest["objects"], "objects", source), _names(manifest["lights"], "lights", source)
    methods = manifest.get("methods") or {}
    if not isinstance(methods, dict):
        raise DataError(source, "'methods' must map method names to folders")
    training = manifest.get("training_light")
    if not methods and training is None:
        raise DataError(source, "the manifest names no methods and no training_light (for the baseline)")

    def folder(value: Any, obj: str, light: str, what: str) -> ImageFolder:
        return _folder(value, obj, light, what, Path(root), source)

    runs = []
    for obj in objects:
        input_folder = None if training is None else folder(manifest["gt"], obj, str(training), "gt")
        for light in lights:
            gt = folder(manifest["gt"], obj, light, "gt")
            for name, value in methods.items():
                pred = folder(value, obj, light, f"method {name}")
                runs.append(EvalRun(obj, light, str(name), pred, gt, input_folder))
            if input_folder is not None and light != str(training):
                runs.append(EvalRun(obj, light, BASELINE_METHOD, input_folder, gt, input_folder))
    if not runs:
        raise DataError(source, "nothing to evaluate (no methods, and no light but the training light)")
    return runs


def _folder(value: Any, obj: str, light: str, what: str, root: Path, source: PathLike) -> ImageFolder:
    """The folder a manifest entry (a path, or ``{dir, pattern}``) names for one object and light."""
    try:
        if isinstance(value, str):
            return ImageFolder(root / value.format(object=obj, light=light))
        if isinstance(value, dict) and "dir" in value:
            pattern = value.get("pattern")
            return ImageFolder(
                root / str(value["dir"]).format(object=obj, light=light),
                None if pattern is None else str(pattern).replace("{object}", obj).replace("{light}", light),
            )
    except (KeyError, ValueError, IndexError) as err:  # str.format on a bad placeholder
        raise DataError(source, f"{what}: bad placeholder in {value!r} ({type(err).__name__}: {err})") from err
    raise DataError(source, f"{what} must be a path or {{dir, pattern}}, not {value!r}")


def _names(value: Any, key: str, source: PathLike) -> List[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, (str, int)) for v in value):
        return [str(v) for v in value]
    raise DataError(source, f"'{key}' must be a non-empty list of names")


__all__ = ["EvalRun", "expand_manifest", "read_manifest"]
