"""What the relighting benchmark contains: its objects, its lights and the render settings.

Importing this module is cheap (dataclasses only): the ``relight3d`` CLI, the tests and the Blender-side renderer
(:mod:`relight3d_bench.render_benchmark`, run by a Python that has ``bpy``) all read the same definitions.

The benchmark follows Neural Gaffer's 3D relighting set: 6 objects x 4 lights, 100 training views under light 0 and
20 test views per light. The objects are real scanned or modelled meshes from CGAL's data archive (``data.tar.gz``,
installed by Debian's ``libcgal-demo``; its path is an argument, see :func:`resolve_meshes_archive`), never the
Stanford bunny: it is the project's development object, and relighting quality is measured on objects not used in
development. The lights are the CC0 Poly Haven HDR maps that ship inside ``bpy``
(``datafiles/studiolights/world``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Tuple, Union

from relight3d.errors import ConfigError, DataError

DEBIAN_MESHES_ARCHIVE = Path("/usr/share/doc/libcgal-dev/data.tar.gz")
"""Where Debian's ``libcgal-demo`` package installs CGAL's data archive (meshes under ``data/meshes/``). Only a
fallback: looked up when no archive is named (``--meshes-archive``, ``make_benchmark(meshes_archive=...)``)."""
BPY_PYTHON_ENV = "RELIGHT3D_BPY_PYTHON"
"""Environment variable naming a Python interpreter that can ``import bpy`` (the renderer runs in it)."""
DEFAULT_CACHE_ROOT = Path("~/.cache/relight3d/bench")
"""Generated benchmarks live under this folder (never in the repository)."""
BENCHMARK_FORMAT_VERSION = 1
"""Bump whenever identical settings would produce different files."""


@dataclass(frozen=True)
class BenchmarkObject:
    """One object of the benchmark: a mesh file and its material."""

    name: str
    """Folder name of the object in the benchmark."""
    mesh: str
    """OFF mesh: a member of the meshes archive (``data/meshes/<file>.off``), or a path to an OFF file."""
    up_axis: str
    """Up axis of the mesh file, ``"y"`` or ``"z"`` (the benchmark world is Z-up)."""
    albedo_a: Tuple[float, float, float]
    """First colour of the two-tone per-vertex albedo (linear RGB)."""
    albedo_b: Tuple[float, float, float]
    """Second colour of the two-tone albedo (linear RGB)."""
    roughness: float
    """Principled BSDF roughness (dielectric, specular 0.5)."""
    description: str
    """Where the mesh comes from."""


@dataclass(frozen=True)
class BenchmarkLight:
    """One lighting condition: a bundled HDR environment map and the factor it is scaled by."""

    name: str
    """Stem of a map in bpy's ``datafiles/studiolights/world`` (e.g. ``courtyard``), or an .exr/.hdr path."""
    strength: float
    """Factor applied to the map's radiance; chosen so that < 1% of object pixels clip in the 8-bit PNGs. The
    copy of the map written into the benchmark already includes it (the world strength in Blender is then 1)."""
    description: str
    """What the light looks like."""


# name, mesh in CGAL's data/meshes/, up axis, albedo a, albedo b, roughness, description (all Y-up meshes)
_OBJECT_TABLE = [
    ("armadillo", "armadillo.off", (0.55, 0.33, 0.12), (0.22, 0.28, 0.45), 0.45, "Stanford Armadillo scan (26k vertices), ochre and slate blue"),  # noqa: E501
    ("dragon", "ChineseDragon-10kv.off", (0.12, 0.42, 0.22), (0.60, 0.48, 0.18), 0.3, "scanned Chinese dragon statue (AIM@SHAPE, 10k vertices), jade and gold, glossy"),  # noqa: E501
    ("elephant", "refined_elephant.off", (0.40, 0.40, 0.42), (0.60, 0.33, 0.33), 0.7, "elephant model (44k vertices), grey and pink, matte"),  # noqa: E501
    ("camel", "camel.off", (0.60, 0.45, 0.25), (0.30, 0.15, 0.07), 0.6, "camel model (10k vertices, thin legs), sand and brown"),  # noqa: E501
    ("homer", "homer.off", (0.65, 0.55, 0.10), (0.30, 0.40, 0.60), 0.35, "Homer figurine model (5k vertices), yellow and blue, glossy"),  # noqa: E501
    ("bear", "bear.off", (0.45, 0.25, 0.10), (0.55, 0.10, 0.08), 0.8, "teddy bear model (14k vertices), brown and red, rough"),  # noqa: E501
]  # fmt: skip
OBJECTS: Tuple[BenchmarkObject, ...] = tuple(
    BenchmarkObject(name, f"data/meshes/{file}", "y", a, b, roughness, text)
    for name, file, a, b, roughness, text in _OBJECT_TABLE
)
"""The six benchmark objects (the Stanford bunny is deliberately not among them)."""

LIGHTS: Tuple[BenchmarkLight, ...] = (
    BenchmarkLight("courtyard", 0.7, "warm sheltered courtyard, bright opening on one side (the training light)"),
    BenchmarkLight("sunrise", 0.6, "low hard sun, blue sky and green ground: strong shadows, warm key light"),
    BenchmarkLight("forest", 0.7, "overcast sky through trees: soft light from above, green bounce"),
    BenchmarkLight("studio", 0.85, "dark studio with two soft boxes on opposite sides: neutral, rim-lit"),
)
"""The four lights; light 0 is the training light, lights 1-3 are unseen during training."""


@dataclass(frozen=True)
class BenchmarkConfig:
    """Everything that determines a generated benchmark (its files are a function of this and the renderer)."""

    objects: Tuple[BenchmarkObject, ...] = OBJECTS
    """Objects to render."""
    lights: Tuple[BenchmarkLight, ...] = LIGHTS
    """Lights; the training views are rendered under ``lights[0]``, the test views under every light."""
    resolution: int = 128
    """Image width and height in pixels."""
    n_train: int = 100
    """Training views per object (Objaverse views ``0 .. n_train - 1``)."""
    n_test: int = 20
    """Test views per object and light (Objaverse views ``n_train .. n_train + n_test - 1``)."""
    object_radius: float = 0.9
    """Radius of the origin-centred sphere the object's bounding box is scaled into (farthest vertex)."""
    camera_distance: float = 2.8
    """Distance of every camera from the origin (the cameras look at the origin)."""
    min_elevation_deg: float = -10.0
    """Lowest camera elevation; cameras are uniform by area on the sphere cap above it."""
    camera_seed_train: int = 0
    """Seed of the training camera positions (the same for every object)."""
    camera_seed_test: int = 1
    """Seed of the test camera positions (the same for every object and light)."""
    spp_train: int = 64
    """Maximum samples per pixel of training views."""
    spp_test: int = 512
    """Maximum samples per pixel of test views (the ground truth of the relighting metrics)."""
    adaptive_threshold_train: float = 0.01
    """Cycles adaptive-sampling noise threshold of training views."""
    adaptive_threshold_test: float = 0.003
    """Cycles adaptive-sampling noise threshold of test views."""
    render_seed_train: int = 0
    """Cycles seed of training view 0 (view ``i`` uses ``seed + i``)."""
    render_seed_test: int = 1000
    """Cycles seed of test view 0 (view ``i`` uses ``seed + i``, under every light)."""
    clamp_indirect: float = 1.0
    """Cycles ``sample_clamp_indirect`` (0 disables clamping)."""
    max_bounces: int = 3
    """Cycles light-path bounces (diffuse and glossy)."""

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists) that :meth:`from_dict` reads back."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "BenchmarkConfig":
        """The config written by :meth:`to_dict`."""
        values = dict(data)
        values["objects"] = tuple(
            BenchmarkObject(**{**o, "albedo_a": tuple(o["albedo_a"]), "albedo_b": tuple(o["albedo_b"])})
            for o in values["objects"]
        )
        values["lights"] = tuple(BenchmarkLight(**light) for light in values["lights"])
        return cls(**values)

    def sampling(self, train: bool) -> Tuple[int, float, int]:
        """``(max samples per pixel, adaptive-sampling threshold, Cycles seed of view 0)`` of the training views
        (``train``) or of the test views."""
        if train:
            return self.spp_train, self.adaptive_threshold_train, self.render_seed_train
        return self.spp_test, self.adaptive_threshold_test, self.render_seed_test

    def render_settings(self) -> Dict[str, Any]:
        """The settings shared by all objects (the config without the object and light lists)."""
        settings = self.to_dict()
        del settings["objects"], settings["lights"]
        return settings


def select(config: BenchmarkConfig, objects: Tuple[str, ...] = (), n_lights: int = 0) -> BenchmarkConfig:
    """``config`` restricted to the named objects (all if empty) and its first ``n_lights`` lights (all if 0).

    Raises:
        ConfigError: an object name that is not in ``config`` (option ``--objects``).
    """
    known = {o.name: o for o in config.objects}
    unknown = [name for name in objects if name not in known]
    if unknown:
        raise ConfigError("--objects", f"unknown benchmark object(s) {unknown}; known: {sorted(known)}")
    chosen = tuple(known[name] for name in objects) if objects else config.objects
    lights = config.lights[:n_lights] if n_lights > 0 else config.lights
    return dataclasses.replace(config, objects=chosen, lights=lights)


def default_output_dir(config: BenchmarkConfig) -> Path:
    """Cache folder of a benchmark: ``~/.cache/relight3d/bench/objects{N}_lights{K}_{res}px``."""
    name = f"objects{len(config.objects)}_lights{len(config.lights)}_{config.resolution}px"
    return (DEFAULT_CACHE_ROOT / name).expanduser()


def resolve_meshes_archive(archive: Union[str, Path, None], option: str = "--meshes-archive") -> Path:
    """The absolute path of CGAL's data archive: ``archive`` when given, else Debian's :data:`DEBIAN_MESHES_ARCHIVE`.

    Raises:
        DataError: ``archive`` is given but is not a file.
        ConfigError: no archive is given and Debian's is not installed (the message names ``option``).
    """
    if archive is not None:
        path = Path(archive).expanduser()
        if not path.is_file():
            raise DataError(path, "meshes archive not found (CGAL's data.tar.gz, with the meshes under data/meshes/)")
        return path.resolve()
    if DEBIAN_MESHES_ARCHIVE.is_file():
        return DEBIAN_MESHES_ARCHIVE
    raise ConfigError(
        option,
        f"not given, and Debian's CGAL data archive ({DEBIAN_MESHES_ARCHIVE}) is not installed: pass the path of "
        "CGAL's data.tar.gz (its data/meshes/ holds the benchmark's meshes), or apt-get install libcgal-demo",
    )


def mesh_source(mesh: str, archive: Union[str, Path, None]) -> str:
    """What :func:`relight3d_bench.cycles_scene.load_off` reads: ``archive::mesh`` for an archive member, or ``mesh``
    itself when it names an OFF file on disk (or when there is no archive)."""
    if archive is None or Path(mesh).expanduser().is_file():
        return mesh
    return f"{archive}::{mesh}"
