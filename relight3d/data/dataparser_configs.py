"""The dataparsers of relight3d's methods: one table, used by ``ns-train`` (tyro subcommands) and the entry points.

``ns-train relight3d-tensorf <dataparser> --data ...`` picks a dataparser by its name in :data:`DATAPARSERS`:

* ``blender-data``: Blender scenes (``transforms_{train,val,test}.json``), relight3d's checked parser. The default.
* ``nerfstudio-data``: nerfstudio's ``transforms.json`` format (``ns-process-data`` output), checked first.
* ``relight3d-objaverse``: Objaverse / Neural Gaffer object folders.
* ``relight3d-single-image``: one RGBA image seen from a configurable camera.

The ``relight3d-*`` entries are also registered with nerfstudio (``nerfstudio.dataparser_configs`` entry points,
see :data:`objaverse_dataparser`), so nerfstudio's own methods offer them too. ``blender-data`` and
``nerfstudio-data`` are not: they would replace nerfstudio's parsers of the same names for every method.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Type

import tyro
from nerfstudio.data.dataparsers.base_dataparser import DataParserConfig, DataparserOutputs
from nerfstudio.data.dataparsers.nerfstudio_dataparser import Nerfstudio, NerfstudioDataParserConfig
from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from relight3d.data.blender import CheckedBlenderDataParserConfig
from relight3d.data.objaverse import ObjaverseDataParserConfig
from relight3d.data.single_image import SingleImageDataParserConfig
from relight3d.data.validation import (
    check_images,
    check_outputs_inside,
    check_pose,
    frame_list,
    load_json,
    resolve_inside,
)
from relight3d.errors import DataError

INTRINSICS = ("fl_x", "fl_y", "cx", "cy", "w", "h")
"""Camera keys a nerfstudio ``transforms.json`` must give, at the top level or in every frame."""


@dataclass
class CheckedNerfstudioDataParserConfig(NerfstudioDataParserConfig):
    """nerfstudio's ``transforms.json`` format (``ns-process-data`` output), checked before loading."""

    _target: Type = field(default_factory=lambda: CheckedNerfstudio)
    """Dataparser class to instantiate."""
    allow_outside_paths: bool = False
    """Read frames whose ``file_path`` (or mask / depth path) resolves outside the data folder. Off by default: a
    downloaded ``transforms.json`` must not make relight3d read files elsewhere."""


class CheckedNerfstudio(Nerfstudio):
    """nerfstudio's parser after :func:`check_nerfstudio_transforms` has validated ``transforms.json``."""

    config: CheckedNerfstudioDataParserConfig

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs: Any) -> DataparserOutputs:
        data, allow = Path(self.config.data), self.config.allow_outside_paths
        path = check_nerfstudio_transforms(data, allow_outside=allow)
        outputs = super()._generate_dataparser_outputs(split, **kwargs)
        check_outputs_inside(outputs, path.parent, path, allow_outside=allow)  # masks and depth images too
        return outputs


def check_nerfstudio_transforms(data: Path, allow_outside: bool = False) -> Path:
    """Validate a nerfstudio-format scene (a folder with ``transforms.json``, or that file).

    Args:
        data: the scene folder, or its ``transforms.json``.
        allow_outside: accept image paths that resolve outside the folder.

    Returns:
        The path of ``transforms.json``.

    Raises:
        DataError: (one line) for a missing folder or file, malformed JSON, no frames, a frame without
            ``file_path`` / ``transform_matrix`` or intrinsics, a NaN or singular pose, an image path outside the
            folder, a missing or unreadable image, or images of different sizes.
    """
    if not data.exists():
        raise DataError(data, "data directory not found")
    path = data if data.suffix == ".json" else data / "transforms.json"
    meta = load_json(path)
    frames = frame_list(meta, path)
    images = []
    for i, frame in enumerate(frames):
        what = f"frame {i} ({frame['file_path']})"
        for key in INTRINSICS:
            value = frame.get(key, meta.get(key))
            if value is None:
                raise DataError(path, f"{what}: '{key}' is given neither at the top level nor in the frame")
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise DataError(path, f"{what}: '{key}' = {value!r} is not a positive number")
        check_pose(frame["transform_matrix"], path, what)
        image = resolve_inside(path.parent, str(frame["file_path"]), path, f"frame {i}: file_path", allow_outside)
        images.append(image)
    check_images(images)
    return path


DATAPARSERS: Dict[str, DataParserConfig] = {
    "blender-data": CheckedBlenderDataParserConfig(),
    "nerfstudio-data": CheckedNerfstudioDataParserConfig(),
    "relight3d-objaverse": ObjaverseDataParserConfig(),
    "relight3d-single-image": SingleImageDataParserConfig(),
}
"""Name -> default config of every dataparser relight3d's methods accept (the ``ns-train`` subcommands). The values
are shared defaults: use :func:`dataparser_config` for a config to change."""

DESCRIPTIONS: Dict[str, str] = {
    "blender-data": "Blender scene: transforms_{train,val,test}.json + PNG images (checked; RGBA kept as the mask)",
    "nerfstudio-data": "nerfstudio scene: transforms.json with fl_x/fl_y/cx/cy/w/h and frames (checked)",
    "relight3d-objaverse": "Objaverse / Neural Gaffer folder: {view:03d}_RT.npy + {view:03d}_{light:03d}_{env}.png",
    "relight3d-single-image": "A single RGBA image with a configurable input camera (single-image reconstruction)",
}
"""One line per dataparser, shown by ``ns-train <method> --help``."""

DEFAULT_DATAPARSER = "blender-data"
"""The dataparser used when ``ns-train`` is given no dataparser subcommand."""


def dataparser_config(name: str = DEFAULT_DATAPARSER) -> DataParserConfig:
    """A fresh copy of the default config of dataparser ``name`` (a key of :data:`DATAPARSERS`)."""
    if name not in DATAPARSERS:
        raise KeyError(f"unknown dataparser {name!r}; known: {', '.join(DATAPARSERS)}")
    return copy.deepcopy(DATAPARSERS[name])


if TYPE_CHECKING:
    DataParserUnion = DataParserConfig
else:
    # One tyro subcommand per table entry, named as in the table (no "dataparser:" prefix).
    DataParserUnion = tyro.extras.subcommand_type_from_defaults(DATAPARSERS, DESCRIPTIONS, prefix_names=False)

AnnotatedDataParserUnion = tyro.conf.OmitSubcommandPrefixes[DataParserUnion]
"""The type of a datamanager's ``dataparser`` field: the union over :data:`DATAPARSERS`, whose options read
``--data``, ``--light-index`` (not ``--pipeline.datamanager.dataparser.data``) after the subcommand."""


def _specification(name: str) -> DataParserSpecification:
    return DataParserSpecification(config=dataparser_config(name), description=DESCRIPTIONS[name])


# nerfstudio.dataparser_configs entry points (setup.py): relight3d's own layouts only.
objaverse_dataparser = _specification("relight3d-objaverse")
single_image_dataparser = _specification("relight3d-single-image")
