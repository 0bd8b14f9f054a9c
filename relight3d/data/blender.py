"""nerfstudio's Blender ``transforms_<split>.json`` parser, with input checks that give one-line errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Type

from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.data.dataparsers.blender_dataparser import Blender, BlenderDataParserConfig

from relight3d.data.validation import check_blender_split
from relight3d.errors import DataError


@dataclass
class CheckedBlenderDataParserConfig(BlenderDataParserConfig):
    """Blender-format scenes (``transforms_train.json`` / ``_val`` / ``_test``), checked before loading."""

    _target: Type = field(default_factory=lambda: CheckedBlender)
    """Dataparser class to instantiate."""
    alpha_color: Optional[str] = None
    """Colour to blend transparent pixels with when loading. None keeps RGBA: relight3d models composite the
    ground truth on their own background and use the alpha as the object mask."""
    allow_outside_paths: bool = False
    """Read frames whose ``file_path`` resolves outside the data folder (absolute, ``..`` or a symlink out of it).
    Off by default: a downloaded ``transforms.json`` must not make relight3d read files elsewhere."""


class CheckedBlender(Blender):
    """nerfstudio's Blender parser after :func:`check_blender_split` has validated the split (poses, every image
    decoded, every ``file_path`` inside the data folder)."""

    config: CheckedBlenderDataParserConfig

    def _generate_dataparser_outputs(self, split: str = "train") -> DataparserOutputs:
        if self.data is None or not self.data.is_dir():
            raise DataError(self.data or ".", "data directory not found")
        check_blender_split(self.data, split, allow_outside=self.config.allow_outside_paths)
        return super()._generate_dataparser_outputs(split)
