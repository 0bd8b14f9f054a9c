"""Run the Blender-side renderer from any Python: find a Python that has ``bpy`` and start it in a subprocess.

``bpy`` (Blender as a Python module, the ``bench`` extra) is a large wheel for one Python version (3.11 for bpy
5.0.1), so it usually lives in its own environment. The renderer always runs in a subprocess, also when the current
interpreter has ``bpy``: Blender and torch then never share a process.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence, Tuple, Union

import relight3d
from relight3d.errors import ConfigError, Relight3dError
from relight3d_bench.cameras import camera_poses, write_cameras
from relight3d_bench.config import BPY_PYTHON_ENV, BenchmarkConfig, default_output_dir, resolve_meshes_archive

INSTALL_HINT = (
    "install the 'bench' extra (pip install 'relight3d[bench]', bpy==5.0.1 needs Python 3.11) or pass "
    f"--blender-python / set {BPY_PYTHON_ENV} to a Python that has bpy"
)


class BpyNotFoundError(Relight3dError):
    """No Python interpreter with ``bpy`` was found; ``str(err)`` is one line that says how to get one (the
    ``relight3d`` command prints it and exits with code 2)."""


def python_has_bpy(python: str) -> bool:
    """True if ``python`` runs and can find the ``bpy`` module (it is not imported: that takes seconds)."""
    probe = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('bpy') else 1)"
    try:
        return subprocess.run([python, "-c", probe], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def find_bpy_python(explicit: Optional[str] = None) -> str:
    """The Python interpreter that renders: ``explicit``, else ``$RELIGHT3D_BPY_PYTHON``, else this interpreter.

    Raises:
        BpyNotFoundError: the chosen interpreter cannot import ``bpy``, or none has it.
    """
    for source, python in (("--blender-python", explicit), (BPY_PYTHON_ENV, os.environ.get(BPY_PYTHON_ENV))):
        if python:
            if not python_has_bpy(python):
                raise BpyNotFoundError(f"{source}={python} cannot import bpy; {INSTALL_HINT}")
            return python
    if importlib.util.find_spec("bpy") is not None:
        return sys.executable
    raise BpyNotFoundError(
        f"the benchmark renderer needs Blender's bpy module, which {sys.executable} lacks; {INSTALL_HINT}"
    )


@contextlib.contextmanager
def bpy_environment() -> Iterator[Dict[str, str]]:
    """The environment a Blender-side process runs in: only relight3d and relight3d_bench added to its path."""
    with tempfile.TemporaryDirectory(prefix="relight3d_bpy_path_") as path_dir:
        # A folder holding only links to the packages: the bpy Python must not see this environment's other
        # packages (another numpy would shadow its own).
        for source in (Path(relight3d.__file__).resolve().parent, Path(__file__).resolve().parent):
            (Path(path_dir) / source.name).symlink_to(source, target_is_directory=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (path_dir, env.get("PYTHONPATH", "")) if p)
        yield env


def run_in_bpy_python(python: str, args: Sequence[Union[str, Path, int, float]]) -> None:
    """Run ``python *args`` (a ``-m module`` or a script) in :func:`bpy_environment`.

    Raises:
        RuntimeError: the command exits with a non-zero code (its output went to this process's terminal).
    """
    with bpy_environment() as env:
        result = subprocess.run([python, *map(str, args)], env=env)
    if result.returncode != 0:
        raise RuntimeError(f"the Blender renderer failed (exit code {result.returncode}); see its output above")


def make_benchmark(
    config: BenchmarkConfig = BenchmarkConfig(),
    out: Optional[Path] = None,
    threads: int = 2,
    force: bool = False,
    check_noise: Optional[Tuple[str, int]] = None,
    noise_seed: int = 5000,
    python: Optional[str] = None,
    noise_only: bool = False,
    meshes_archive: Optional[Path] = None,
) -> Path:
    """Generate (or reuse from the cache) a benchmark; returns its folder.

    The cameras are computed here (:mod:`relight3d_bench.cameras`) and the rendering runs in a Python with ``bpy``.

    Args:
        config: objects, lights and render settings.
        out: benchmark folder; default ``~/.cache/relight3d/bench/objects{N}_lights{K}_{res}px``.
        threads: Cycles CPU threads.
        force: re-render objects that are cached.
        check_noise: ``(object name, light index)``: afterwards render that object's test views under that light
            again with ``noise_seed`` and report the in-mask PSNR (``<object>/noise_check_light{k}.json``).
        noise_seed: Cycles seed of the noise check's first view.
        python: a Python with ``bpy`` (see :func:`find_bpy_python`).
        noise_only: skip the generation and only run the noise check (the object must already be rendered with
            ``config``).
        meshes_archive: CGAL's ``data.tar.gz``; default: Debian's copy
            (:func:`~relight3d_bench.config.resolve_meshes_archive`).

    Returns:
        The benchmark folder (layout in :mod:`relight3d.data.benchmark_layout`).

    Raises:
        ConfigError: ``check_noise`` names an object or light that ``config`` does not have, or no meshes archive
            is given and Debian's is not installed.
        DataError: ``meshes_archive`` is not a file.
        BpyNotFoundError: no Python with ``bpy``.
        RuntimeError: the renderer failed.
    """
    if noise_only and check_noise is None:
        raise ConfigError("noise_only", "needs check_noise=(object, light)")
    if check_noise is not None:
        names = [o.name for o in config.objects]
        if check_noise[0] not in names:
            raise ConfigError("noise check", f"{check_noise[0]!r} is not one of the objects {names}")
        if not 0 <= check_noise[1] < len(config.lights):
            raise ConfigError("noise check", f"light {check_noise[1]} is not in 0..{len(config.lights) - 1}")
    archive = resolve_meshes_archive(meshes_archive)
    interpreter = find_bpy_python(python)
    root = Path(out).expanduser().resolve() if out is not None else default_output_dir(config)
    poses = {
        "train": camera_poses(
            config.n_train, config.camera_seed_train, config.camera_distance, config.min_elevation_deg
        ),
        "test": camera_poses(config.n_test, config.camera_seed_test, config.camera_distance, config.min_elevation_deg),
    }
    with tempfile.TemporaryDirectory(prefix="relight3d_bench_") as tmp:
        cameras = write_cameras(Path(tmp) / "cameras.json", poses)
        args = ["-m", "relight3d_bench.render_benchmark", "--config-json", json.dumps(config.to_dict())]
        args += ["--cameras-json", cameras, "--meshes-archive", archive, "--out", root, "--threads", threads]
        if force:
            args.append("--force")
        if check_noise is not None:
            args += ["--check-noise", check_noise[0], "--noise-light", check_noise[1], "--noise-seed", noise_seed]
        if noise_only:
            args.append("--noise-only")
        run_in_bpy_python(interpreter, args)
    return root
