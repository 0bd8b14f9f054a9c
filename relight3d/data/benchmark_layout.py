"""File layout of a generated relighting benchmark: the names the writer uses and the readers rely on.

The writer is the generator in the top-level package :mod:`relight3d_bench` (Blender side); the readers are
relight3d's evaluation (:mod:`relight3d.pipelines.relight_eval`: which light a split holds) and the tests. Only names
and ``meta.json`` reading live here, so the runtime package needs nothing from the generator.

::

    <root>/
      meta.json                         benchmark: config, renderer, lights, objects, times, sha256 of object metas
      envmaps/<light>.exr               the maps as rendered (linear, strength already applied; identity rotation)
      <object>/
        meta.json                       renderer, samples, seeds, times, lights, sha256 of every file below
        transforms_train.json           training views under light 0 -> train/r_XXX
        transforms_val.json             test views under light 0 (nerfstudio evaluates on "val")
        transforms_test.json            test views under light 0
        transforms_test_light{k}.json   test views under light k -> test_light{k}/r_XXX (split "test_light{k}")
        train/r_XXX.png | .exr          8-bit sRGB RGBA PNG (straight alpha) and linear half-float RGBA EXR
        test_light{k}/r_XXX.png | .exr  (premultiplied alpha); alpha is the object mask
        envmaps/<light>.exr             hard links to <root>/envmaps
        mesh.ply                        the normalised Z-up mesh with its sRGB per-vertex albedo
        objaverse/                      Objaverse / Neural Gaffer layout (read by the relight3d-objaverse parser):
          {view:03d}_RT.npy             3x4 world-to-camera; views 0..n_train-1 train, then the test views
          {view:03d}_{light:03d}_{env}.png   hard links to the PNGs (train views under light 0 only)

So ``ns-train relight3d-tensorf --data <root>/<object>`` trains on light 0, and the ground truth of light ``k`` is
the Blender split ``test_light{k}`` (``transforms_test_light{k}.json``) or Objaverse light index ``k``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

META_NAME = "meta.json"
"""Name of the benchmark's and each object's metadata file."""


def split_for_light(light_index: int) -> str:
    """Blender split name of the test views under light ``light_index`` (``transforms_<split>.json``)."""
    return f"test_light{light_index}"


def image_stem(split_dir: str, view: int) -> str:
    """Relative path without extension of view ``view`` in ``split_dir`` (``train`` or ``test_light{k}``)."""
    return f"{split_dir}/r_{view:03d}"


def objaverse_image_name(view: int, light_index: int, light_name: str) -> str:
    """File name of a view under a light in the Objaverse layout."""
    return f"{view:03d}_{light_index:03d}_{light_name}.png"


def objaverse_rt_name(view: int) -> str:
    """File name of a view's world-to-camera matrix in the Objaverse layout."""
    return f"{view:03d}_RT.npy"


def read_meta(folder: Path) -> Dict[str, Any]:
    """The ``meta.json`` of a benchmark or object folder, or an empty dict if it is missing or unreadable."""
    path = Path(folder) / META_NAME
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}
