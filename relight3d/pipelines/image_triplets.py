"""``relight3d data from-images``: (photo, instruction, relit photo) triplets for an InstructPix2Pix relighting prior.

For every photo of an object in a folder: a foreground mask (the photo's alpha, or a local segmentation model:
:mod:`~relight3d.pipelines.image_models`), the albedo by multi-scale Retinex and a shape inflated from the mask
(:mod:`~relight3d.pipelines.image_intrinsics`), then ``variants`` random new lights rendered on that albedo and
shape (soft environment lighting with GGX specular, or a hard directional light with a cast shadow and a Blinn-Phong
highlight: :mod:`~relight3d.pipelines.image_degradation`). Each variant is one triplet in the conventional
InstructPix2Pix direction: **input** = the original photo, **instruction** = the *new* light in words
(``instruction_template`` with ``{lighting}`` replaced by e.g. ``"hard warm light from the upper left"``), **target**
= the synthesised photo under that light. An optional CLIP filter drops badly lit photos first.

Images: the photo is resized so that its longest side is ``resolution`` (unchanged when it already is) and, with
``square``, padded to ``resolution x resolution`` (the padding is background). Input and target are composited
over the same background: white (``background="white"``), or, for ``background="photo"`` and photos without
alpha, the photo's own pixels outside the mask (inside the mask the target holds the relit object). A target's
exposure is set so that its mean in-mask luminance is the photo's. A photo with an empty mask is skipped (the reason
is in ``summary.json``); one scoring below ``clip_threshold`` is filtered out.

Layout of ``<out>`` (every path in a record is relative to ``<out>`` and inside it)::

    <out>/triplets.jsonl   one JSON object per line, one triplet each:
        {"id": "<stem>_<k>", "input": "inputs/<id>.png", "target": "targets/<id>.png",
         "mask": "masks/<stem>.png", "albedo": "albedo/<stem>.png", "instruction": "...",
         "source": "<file name of the photo>", "light": {"kind": "environment"|"directional", ...}}
        light, directional: {"kind": "directional", "direction": [x, y, z] (unit, towards the light, camera frame:
                             x right, y up, z towards the viewer), "colour": [r, g, b] (linear, max 1),
                             "ambient": a, "specular": s, "shininess": p}
        light, environment: {"kind": "environment", "envmap": "<file name in the env maps folder>",
                             "rotation_deg": turn about world +Z, "roughness": GGX roughness,
                             "camera_to_world": 3x4 OpenGL pose of the photo's camera in the map's Z-up world}
    <out>/inputs/<id>.png    the photo (8-bit sRGB RGB), composited as above
    <out>/targets/<id>.png   the photo under the new light (8-bit sRGB RGB)
    <out>/masks/<stem>.png   the foreground mask (8-bit grey: the alpha, or 0 / 255 from the segmentation)
    <out>/albedo/<stem>.png  the Retinex albedo (8-bit sRGB RGB, black outside the mask)
    <out>/summary.json       {"status": "running"|"complete", "settings": {...}, "photos": n, "kept": n,
                             "filtered": [names], "skipped": {name: reason}, "triplets": n,
                             "clip_scores": {name: score} or null}

``<stem>`` is the photo's file name without its suffix (two photos with the same stem are an error). Files are
written to a temporary name and renamed, and a photo's lines are appended to ``triplets.jsonl`` after all its
files, so an interrupted run leaves only whole triplets; ``resume`` continues one (same settings), skipping the
photos it finished. :func:`read_triplets` reads the layout back with one-line errors. The jsonl loads as is with
🤗 ``datasets.load_dataset("json", data_files="<out>/triplets.jsonl")`` (image columns are paths relative to
``<out>``).
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Union

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from relight3d.data.validation import jsonl_objects
from relight3d.errors import ConfigError, DataError
from relight3d.pipelines.image_files import (
    IMAGE_FOLDERS,
    SUMMARY,
    TRIPLETS,
    append_lines,
    fit_photo,
    list_photos,
    load_envmaps,
    pad_square,
    png_bytes,
    prepare_output,
    write_atomically,
)
from relight3d.priors.instruct_pix2pix import PROMPT_TEMPLATE

LIGHT_KINDS = ("environment", "directional")
"""The ``light.kind`` values of a record."""


@dataclass
class FromImagesConfig:
    """Settings of ``relight3d data from-images`` (module docstring)."""

    input: Path
    """Folder of object photos (its top level: .png .jpg .jpeg .bmp .tif .tiff .webp), read in name order."""
    output: Path
    """Folder to write the triplets to (layout in the module docstring); created if missing."""
    variants: int = 4
    """New lights (triplets) per photo."""
    seed: int = 0
    """Seed of the random lights; each photo draws from its own stream (seed, file name), so runs are repeatable."""
    resolution: int = 512
    """Longest side of the written images, pixels."""
    square: bool = True
    """Pad the images to resolution x resolution (with background)."""
    background: Literal["white", "photo"] = "white"
    """Outside the mask: white, or the photo's own pixels (photos without alpha; RGBA photos go over white)."""
    mask_source: Literal["auto", "alpha", "segmentation"] = "auto"
    """Foreground mask: the alpha channel, the segmentation model, or auto (alpha when the photo has one, else
    the segmentation model)."""
    segmentation_model: Optional[Path] = None
    """Local folder of a transformers semantic-segmentation model and its image processor (save_pretrained)."""
    foreground_labels: Tuple[str, ...] = ()
    """Labels (ids or names) of the segmentation model that are foreground; empty: every label but 0."""
    clip_model: Optional[Path] = None
    """Local folder of a CLIP model and processor; when given, photos scoring below clip_threshold are dropped."""
    clip_threshold: float = 0.5
    """Least CLIP probability of the good-lighting prompts for a photo to be kept, in [0, 1]."""
    clip_good_prompts: Tuple[str, ...] = (
        "a well-lit photo of an object",
        "a clear, evenly lit product photo",
        "a photo of an object under good studio lighting",
    )
    """Prompts that describe a well-lit photo."""
    clip_bad_prompts: Tuple[str, ...] = (
        "a badly lit photo of an object",
        "a dark, underexposed photo of an object",
        "an overexposed, washed-out photo of an object",
    )
    """Prompts that describe a badly lit photo."""
    envmaps: Optional[Path] = None
    """Folder of .exr / .hdr environment maps (world Z up); None: the maps shipped in relight3d/assets/envmaps."""
    directional_fraction: float = 0.5
    """Fraction of the variants lit by a directional light (the rest by an environment map), in [0, 1]."""
    instruction_template: str = PROMPT_TEMPLATE
    """The instruction; {lighting} is replaced by the light's description (default: the InstructPix2Pix prior's
    prompt, so a model trained on these triplets is prompted at inference as it was trained)."""
    overwrite: bool = False
    """Write into a non-empty output folder, deleting the triplets, summary and PNGs of an earlier run there."""
    resume: bool = False
    """Continue an interrupted run in the output folder (same settings), skipping the photos it finished."""
    device: str = "auto"
    """Device of the segmentation and CLIP models (auto: cuda when available)."""

    def check(self) -> None:
        """Refuse inconsistent settings.

        Raises:
            ConfigError: one line naming the option.
        """
        if self.variants < 1:
            raise ConfigError("--variants", f"expected a positive integer, got {self.variants}")
        if self.resolution < 8:
            raise ConfigError("--resolution", f"expected at least 8, got {self.resolution}")
        for option, value in (("--clip-threshold", self.clip_threshold), ("--directional-fraction",
                                                                         self.directional_fraction)):  # fmt: skip
            if not 0.0 <= value <= 1.0:
                raise ConfigError(option, f"expected a number in [0, 1], got {value}")
        if self.mask_source == "segmentation" and self.segmentation_model is None:
            raise ConfigError("--mask-source", "segmentation needs --segmentation-model FOLDER")
        if "{lighting}" not in self.instruction_template:
            raise ConfigError("--instruction-template", "must contain {lighting}")
        if self.clip_model is not None and not (self.clip_good_prompts and self.clip_bad_prompts):
            raise ConfigError("--clip-good-prompts", "the CLIP filter needs at least one good and one bad prompt")
        if self.overwrite and self.resume:
            raise ConfigError("--resume", "cannot be combined with --overwrite")

    def settings(self) -> Dict[str, Any]:
        """The settings as JSON values (paths resolved), as written to ``summary.json``."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = str(Path(value).resolve()) if isinstance(value, Path) else value
            if isinstance(value, tuple):
                out[f.name] = list(value)
        return out


class _Models:
    """The segmentation and CLIP models, loaded when first needed."""

    def __init__(self, config: FromImagesConfig) -> None:
        from relight3d.cli_types import resolve_device

        self.config = config
        self.device = resolve_device(config.device)
        self._segmenter: Any = None
        self._clip: Any = None

    def segment(self, photo: Path, image: Float[Tensor, "h w 3"]) -> Float[Tensor, "h w"]:
        from relight3d.pipelines.image_models import load_segmenter, segment_foreground

        if self.config.segmentation_model is None:
            raise DataError(photo, "has no alpha channel to take the object mask from; give --segmentation-model "
                                   "FOLDER (a transformers segmentation model), or use RGBA photos")  # fmt: skip
        if self._segmenter is None:
            self._segmenter = load_segmenter(self.config.segmentation_model, self.device)
        return segment_foreground(self._segmenter, image, self.config.foreground_labels)

    def score(self, image: Float[Tensor, "h w 3"]) -> float:
        from relight3d.pipelines.image_models import lighting_quality_scores, load_clip

        if self._clip is None:
            self._clip = load_clip(self.config.clip_model, self.device)
        good, bad = self.config.clip_good_prompts, self.config.clip_bad_prompts
        return lighting_quality_scores(self._clip, [image], good, bad)[0]


def _triplets_of_photo(
    photo: Path, config: FromImagesConfig, envmaps: Dict[str, Tensor], models: _Models
) -> Tuple[List[Dict[str, Any]], Optional[float], Optional[str]]:
    """Write one photo's files; return its records, its CLIP score (or None) and why it was skipped (or None).

    A photo below the CLIP threshold or with an empty mask writes nothing and returns no records.
    """
    from relight3d.data.images import read_rgba
    from relight3d.lighting import linear_to_srgb, srgb_to_linear
    from relight3d.pipelines.image_degradation import describe_light, match_exposure, random_light, render_relit
    from relight3d.pipelines.image_intrinsics import inflated_height, normals_from_height, retinex_albedo

    rgba_array, has_alpha = read_rgba(photo)
    rgba = fit_photo(torch.from_numpy(rgba_array), config.resolution)
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    over_white = rgb * alpha + (1.0 - alpha)
    if config.mask_source == "alpha" or (config.mask_source == "auto" and has_alpha):
        if not has_alpha:
            raise DataError(photo, "has no alpha channel to take the object mask from (--mask-source alpha)")
        mask = alpha
    else:
        mask = models.segment(photo, over_white)[..., None]
    if config.square:
        rgb, over_white, mask = (pad_square(x, config.resolution, v) for x, v in ((rgb, 1.0), (over_white, 1.0),
                                                                                   (mask, 0.0)))  # fmt: skip
    if not bool((mask > 0.5).any()):
        return [], None, "empty foreground mask"
    background = over_white if config.background == "photo" else torch.ones_like(rgb)
    input_image = rgb * mask + background * (1.0 - mask)
    score = models.score(input_image) if config.clip_model is not None else None
    if score is not None and score < config.clip_threshold:
        return [], score, None
    linear = srgb_to_linear(rgb)
    albedo = retinex_albedo(linear, mask[..., 0])
    height = inflated_height(mask[..., 0])
    normals = normals_from_height(height)
    stem, out = photo.stem, config.output
    write_atomically(out / "masks" / f"{stem}.png", png_bytes(mask))
    write_atomically(out / "albedo" / f"{stem}.png", png_bytes(linear_to_srgb(albedo)))
    input_png = png_bytes(input_image)
    rng = np.random.default_rng([config.seed, zlib.crc32(photo.name.encode("utf-8"))])
    records = []
    for k in range(config.variants):
        light = random_light(rng, sorted(envmaps), config.directional_fraction)
        relit = match_exposure(render_relit(albedo, normals, height, light, envmaps), linear, mask[..., 0])
        target = linear_to_srgb(relit.clamp(0.0, 1.0)) * mask + background * (1.0 - mask)
        ident = f"{stem}_{k}"
        write_atomically(out / "inputs" / f"{ident}.png", input_png)
        write_atomically(out / "targets" / f"{ident}.png", png_bytes(target))
        records.append({
            "id": ident, "input": f"inputs/{ident}.png", "target": f"targets/{ident}.png",
            "mask": f"masks/{stem}.png", "albedo": f"albedo/{stem}.png",
            "instruction": config.instruction_template.replace("{lighting}", describe_light(light, envmaps)),
            "source": photo.name, "light": light.to_record(),
        })  # fmt: skip
    return records, score, None


def run_from_images(config: FromImagesConfig) -> Dict[str, Any]:
    """Write the triplets of every photo in ``config.input`` to ``config.output``; return the summary.

    Raises:
        ConfigError: inconsistent settings, a non-empty output without ``overwrite`` / ``resume``.
        DataError: a missing folder, a photo that does not read or has no mask source, a bad map (one line
            naming the file).
        WeightsError: a model folder that does not load.

    Example:
        >>> summary = run_from_images(FromImagesConfig(Path("photos"), Path("triplets"), variants=2))  # doctest: +SKIP
        >>> summary["triplets"]  # doctest: +SKIP
        8
    """
    config.check()
    photos = list_photos(Path(config.input))
    if Path(config.output).resolve() == Path(config.input).resolve():
        raise ConfigError("--output", "is the input folder; write the triplets to another folder")
    settings = config.settings()
    lines, previous = prepare_output(Path(config.output), settings, config.overwrite, config.resume, config.variants)
    done = {json.loads(line)["source"] for line in lines}
    envmaps = load_envmaps(config.envmaps, needed=config.directional_fraction < 1.0)
    models = _Models(config)
    old_scores = previous.get("clip_scores") if isinstance(previous.get("clip_scores"), dict) else {}
    summary: Dict[str, Any] = {
        "status": "running", "settings": settings, "photos": len(photos), "kept": len(done), "filtered": [],
        "skipped": {}, "triplets": len(lines),
        "clip_scores": None if config.clip_model is None else {k: v for k, v in old_scores.items() if k in done},
    }  # fmt: skip
    summary_path = Path(config.output) / SUMMARY
    write_atomically(summary_path, json.dumps(summary, indent=2).encode("utf-8"))
    for photo in photos:
        if photo.name in done:
            continue
        records, score, skipped = _triplets_of_photo(photo, config, envmaps, models)
        if score is not None:
            summary["clip_scores"][photo.name] = score
        if skipped is not None:
            summary["skipped"][photo.name] = skipped
        elif not records:
            summary["filtered"].append(photo.name)
        else:
            append_lines(Path(config.output) / TRIPLETS, [json.dumps(r) for r in records])
            summary["kept"] += 1
            summary["triplets"] += len(records)
        write_atomically(summary_path, json.dumps(summary, indent=2).encode("utf-8"))
    summary["status"] = "complete"
    write_atomically(summary_path, json.dumps(summary, indent=2).encode("utf-8"))
    return summary


def _inside(root: Path, value: Any, where: str) -> Path:
    if not isinstance(value, str) or not value or Path(value).is_absolute():
        raise DataError(root / TRIPLETS, f"{where}: expected a relative path, got {value!r}")
    path = (root / value).resolve()
    if not path.is_relative_to(root.resolve()):
        raise DataError(root / TRIPLETS, f"{where}: {value!r} leaves the output folder")
    if not path.is_file():
        raise DataError(root / TRIPLETS, f"{where}: {value!r} does not exist")
    return path


def read_triplets(folder: Union[str, Path]) -> List[Dict[str, Any]]:
    """The triplets of a ``from-images`` output folder, checked, in file order.

    Each record is the JSON object of its line (module docstring) with ``input``, ``target``, ``mask`` and
    ``albedo`` resolved to absolute paths inside ``folder`` and ``line``, its line number.

    Raises:
        DataError: no ``triplets.jsonl``, an empty one, a line that is not a JSON object, a missing or mistyped
            field, a path that leaves the folder or a missing file (one line naming the line).
    """
    root = Path(folder)
    path = root / TRIPLETS
    records = []
    for number, where, record in jsonl_objects(path, "no such file (a from-images output folder holds "
                                                     "triplets.jsonl)"):  # fmt: skip
        for key in ("id", "instruction", "source"):
            if not isinstance(record.get(key), str) or not record[key]:
                raise DataError(path, f"{where}: {key} must be a non-empty string, got {record.get(key)!r}")
        light = record.get("light")
        if not isinstance(light, dict) or light.get("kind") not in LIGHT_KINDS:
            raise DataError(path, f"{where}: light must be an object with kind environment or directional")
        for key in ("input", "target", "mask", "albedo"):
            record[key] = _inside(root, record.get(key), f"{where}: {key}")
        records.append({**record, "line": number})
    if not records:
        raise DataError(path, "holds no triplets")
    return records


__all__ = [
    "FromImagesConfig",
    "IMAGE_FOLDERS",
    "LIGHT_KINDS",
    "SUMMARY",
    "TRIPLETS",
    "read_triplets",
    "run_from_images",
]
