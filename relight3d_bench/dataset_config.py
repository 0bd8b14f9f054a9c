"""What ``relight3d data render`` renders: its settings, the bundled meshes, and the plan drawn from a seed.

Importing this module is cheap (dataclasses and numpy): the CLI, the tests and the Blender-side worker
(:mod:`relight3d_bench.render_dataset`) all read it. The **plan** (:func:`make_plan`) fixes everything random before
any rendering starts: each object's material (when its mesh has none) and cameras, and each map's rotations. It is
stored in the dataset's ``meta.json``, so an interrupted run resumes with exactly the same draws, and a run with
other settings is refused instead of mixed in.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from relight3d.errors import ConfigError, DataError
from relight3d_bench.config import LIGHTS
from relight3d_bench.procedural import PROCEDURAL

DATASET_FORMAT_VERSION = 1
"""Bump whenever identical settings would produce different files."""
MESH_SUFFIXES = (".ply", ".obj", ".glb", ".gltf", ".off", ".stl")
"""Mesh files ``--objects`` accepts (read by Blender's importers; ``.off`` by relight3d_bench.meshes)."""

ARCHIVE_MESHES: Dict[str, Tuple[str, str]] = {
    "cow": ("data/meshes/cow.off", "z"),
    "pig": ("data/meshes/pig.off", "y"),
    "dino": ("data/meshes/dino.off", "y"),
    "bull": ("data/meshes/bull.off", "y"),
    "elk": ("data/meshes/elk.off", "y"),
    "triceratops": ("data/meshes/triceratops.off", "y"),
    "mushroom": ("data/meshes/mushroom.off", "y"),
    "fandisk": ("data/meshes/fandisk.off", "z"),
}
"""Meshes of CGAL's data archive that ``--objects`` names directly: ``name -> (member, up axis)``. None of them is a
benchmark object (those are kept for scoring what was trained on this data) nor the development bunny."""
BUNDLED = tuple(PROCEDURAL) + tuple(ARCHIVE_MESHES)
"""Every bundled object name: the procedural shapes (always there) and the archive meshes (with the archive)."""
DEFAULT_OBJECTS = tuple(PROCEDURAL)
"""What is rendered when ``--objects`` is not given (no archive needed)."""
DEFAULT_ENVMAPS = ("courtyard", "sunrise", "forest", "studio", "city", "night", "sunset", "interior")
"""The HDR maps shipped inside ``bpy`` (``datafiles/studiolights/world``, CC0 Poly Haven)."""
KNOWN_STRENGTHS = {light.name: light.strength for light in LIGHTS}
"""Radiance factors of the maps the benchmark also uses (chosen there so that < 1 % of object pixels clip)."""
_NAME = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class DatasetRenderConfig:
    """Settings of ``relight3d data render`` (every field is an option of the same name)."""

    objects: Tuple[str, ...] = DEFAULT_OBJECTS
    """Bundled object names (:data:`BUNDLED`) or mesh files (:data:`MESH_SUFFIXES`)."""
    envmaps: Tuple[str, ...] = DEFAULT_ENVMAPS
    """Maps: a bundled name or an .exr / .hdr file, each optionally ``:strength`` (radiance factor)."""
    rotations: int = 4
    """Random rotations of each map about the world's up axis (the first is always 0 degrees)."""
    views: int = 8
    """Views per object (the same views under every map and rotation)."""
    resolution: int = 128
    """Image width and height in pixels."""
    spp: int = 64
    """Cycles maximum samples per pixel."""
    adaptive_threshold: float = 0.01
    """Cycles adaptive-sampling noise threshold."""
    gbuffer_supersample: int = 2
    """G-buffer rays per pixel side (coverage and attributes are averaged over them)."""
    object_radius: float = 0.9
    """Radius of the origin-centred sphere each object is scaled into (farthest vertex)."""
    camera_distance: float = 2.8
    """Distance of every camera from the origin (cameras look at the origin)."""
    min_elevation_deg: float = -10.0
    """Lowest camera elevation."""
    up_axis: str = "z"
    """Up axis of user mesh files (``y`` or ``z``; Blender's .obj / .glb importers already turn Y-up files Z-up)."""
    metallic_probability: float = 0.2
    """Share of objects drawn metallic (metallic in [0.6, 1]); the others are dielectric (metallic 0)."""
    seed: int = 0
    """Seed of the plan (materials, cameras, rotations) and of Cycles."""
    clamp_indirect: float = 1.0
    """Cycles ``sample_clamp_indirect`` (as the benchmark)."""
    max_bounces: int = 3
    """Cycles light-path bounces (as the benchmark)."""

    def __post_init__(self) -> None:
        for name in ("rotations", "views", "resolution", "spp", "gbuffer_supersample"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')}", f"must be >= 1, got {getattr(self, name)}")
        if self.up_axis not in ("y", "z"):
            raise ConfigError("--up-axis", f"must be y or z, got {self.up_axis!r}")
        if not 0.0 <= self.metallic_probability <= 1.0:
            raise ConfigError("--metallic-probability", f"must be in [0, 1], got {self.metallic_probability}")
        if not self.objects or not self.envmaps:
            raise ConfigError("--objects/--envmaps", "need at least one object and one map")

    def to_dict(self) -> Dict[str, Any]:
        """JSON-serialisable (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "DatasetRenderConfig":
        """The config :meth:`to_dict` wrote."""
        return cls(**{**data, "objects": tuple(data["objects"]), "envmaps": tuple(data["envmaps"])})


def _object_source(spec: str, up_axis: str) -> Dict[str, Any]:
    """``{"name", "kind", "source", "up_axis"}`` of one ``--objects`` entry.

    Raises:
        DataError: a path with a mesh suffix that is not a file.
        ConfigError: neither a bundled name nor a mesh file.
    """
    if spec in PROCEDURAL:
        return {"name": spec, "kind": "procedural", "source": spec, "up_axis": "z"}
    if spec in ARCHIVE_MESHES:
        member, up = ARCHIVE_MESHES[spec]
        return {"name": spec, "kind": "archive", "source": member, "up_axis": up}
    path = Path(spec).expanduser()
    if path.suffix.lower() in MESH_SUFFIXES:
        if not path.is_file():
            raise DataError(path, "mesh file not found")
        name = _NAME.sub("_", path.stem).strip("_") or "mesh"
        return {"name": name, "kind": "file", "source": str(path.resolve()), "up_axis": up_axis}
    raise ConfigError("--objects", f"{spec!r} is neither a bundled object {list(BUNDLED)} nor a mesh file "
                                   f"({', '.join(MESH_SUFFIXES)})")  # fmt: skip


def parse_envmap(spec: str) -> Tuple[str, float]:
    """``(name or path, strength)`` of one ``--envmaps`` entry (``name[:strength]``).

    Raises:
        ConfigError: a strength that is not a positive number.
    """
    head, sep, tail = spec.rpartition(":")
    if sep and head and not Path(spec).expanduser().is_file():
        try:
            strength = float(tail)
        except ValueError:
            raise ConfigError("--envmaps", f"{spec!r}: the part after ':' must be a strength") from None
        if not (strength > 0 and math.isfinite(strength)):
            raise ConfigError("--envmaps", f"{spec!r}: strength must be > 0")
        return head, strength
    return spec, KNOWN_STRENGTHS.get(spec, 1.0)


def _material(rng: np.random.Generator, metallic_probability: float) -> Dict[str, Any]:
    """A random Principled BSDF material: two-tone base colour (HSV drawn, linear RGB), roughness, metallic."""
    import colorsys

    def colour() -> List[float]:
        rgb = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.15, 0.85), rng.uniform(0.25, 0.9))
        return [round(float(c) ** 2.2, 4) for c in rgb]  # display-ish draw, stored linear

    metallic = round(float(rng.uniform(0.6, 1.0)), 3) if rng.uniform() < metallic_probability else 0.0
    return {"albedo_a": colour(), "albedo_b": colour(), "roughness": round(float(rng.uniform(0.15, 0.9)), 3),
            "metallic": metallic}  # fmt: skip


def check_objects(config: DatasetRenderConfig) -> None:
    """Fail early (before any rendering) on an unknown object or a missing mesh file (see :func:`make_plan`)."""
    for spec in config.objects:
        _object_source(spec, config.up_axis)


def make_plan(config: DatasetRenderConfig, envmap_widths: Dict[str, int], archive: Optional[str]) -> Dict[str, Any]:
    """Every random draw of a run, fixed by ``config.seed``.

    Args:
        config: the settings.
        envmap_widths: each map's width in pixels (by map name): rotations are whole columns, so that turning the
            map is exact (:func:`relight3d.lighting.rotate_envmap_about_up` by ``360 * shift / width`` degrees is
            ``roll(map, -shift, columns)``, the map Blender is given).
        archive: CGAL's data archive (needed only for archive meshes).

    Returns:
        ``{"objects": [...], "lights": [...]}``: per object its name, source, material and camera seed; per light its
        name, strength and file, and per object its rotations (``{"shift", "degrees"}``, the first 0).

    Raises:
        ConfigError: an unknown object, two objects of the same name, or an archive mesh without the archive.
    """
    rng = np.random.default_rng(config.seed)
    objects = []
    for index, spec in enumerate(config.objects):
        entry = _object_source(spec, config.up_axis)
        if entry["kind"] == "archive":
            if archive is None:
                raise ConfigError("--meshes-archive", f"object {spec!r} is in CGAL's data archive; name it")
            entry["source"] = f"{archive}::{entry['source']}"
        entry["material"] = _material(rng, config.metallic_probability)
        entry["camera_seed"] = config.seed * 1000 + index
        objects.append(entry)
    names = [o["name"] for o in objects]
    if len(set(names)) != len(names):
        raise ConfigError("--objects", f"object names must be unique, got {names} (rename the files)")
    lights = []
    for spec in config.envmaps:
        source, strength = parse_envmap(spec)
        name = _NAME.sub("_", Path(source).stem).strip("_")
        width = envmap_widths[name]
        rotations = []
        for _ in objects:
            shifts = [0] + [int(s) for s in rng.integers(1, width, size=config.rotations - 1)]
            rotations.append([{"shift": s, "degrees": 360.0 * s / width} for s in shifts])
        lights.append({"name": name, "source": source, "strength": strength, "file": f"envmaps/{name}.exr",
                       "width": width, "rotations": rotations})  # fmt: skip
    if len({light["name"] for light in lights}) != len(lights):
        raise ConfigError("--envmaps", f"map names must be unique, got {[light['name'] for light in lights]}")
    return {"objects": objects, "lights": lights}


def envmap_names(config: DatasetRenderConfig) -> List[Tuple[str, str, float]]:
    """``(name, source, strength)`` of each map (the name is the file name stem, cleaned)."""
    out = []
    for spec in config.envmaps:
        source, strength = parse_envmap(spec)
        out.append((_NAME.sub("_", Path(source).stem).strip("_"), source, strength))
    return out


def image_name(obj: str, light: str, rotation: int, view: int) -> str:
    """The path of one image inside the dataset folder."""
    return f"images/{obj}/{light}_r{rotation}_v{view:03d}.png"


def gbuffer_name(obj: str, view: int) -> str:
    """The path of one view's float G-buffers (``.npz``) inside the dataset folder."""
    return f"gbuffers/{obj}/v{view:03d}.npz"


__all__ = [
    "BUNDLED",
    "DATASET_FORMAT_VERSION",
    "DatasetRenderConfig",
    "check_objects",
    "envmap_names",
    "gbuffer_name",
    "image_name",
    "make_plan",
    "parse_envmap",
]
