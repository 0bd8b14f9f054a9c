"""The relighting benchmark: Neural Gaffer-style objects x lights, path-traced with Blender Cycles.

``relight3d bench make`` (or :func:`make_benchmark`) renders 6 objects x 4 lights into a cache folder; the layout is
described in :mod:`relight3d.benchmark.layout`. Importing this package is cheap: rendering happens in a subprocess
run by a Python that has ``bpy``.
"""

from relight3d.benchmark.config import LIGHTS, OBJECTS, BenchmarkConfig, BenchmarkLight, BenchmarkObject, select
from relight3d.benchmark.layout import default_output_dir, read_meta, split_for_light
from relight3d.benchmark.runner import BpyNotFoundError, find_bpy_python, make_benchmark

__all__ = [
    "LIGHTS",
    "OBJECTS",
    "BenchmarkConfig",
    "BenchmarkLight",
    "BenchmarkObject",
    "BpyNotFoundError",
    "default_output_dir",
    "find_bpy_python",
    "make_benchmark",
    "read_meta",
    "select",
    "split_for_light",
]
