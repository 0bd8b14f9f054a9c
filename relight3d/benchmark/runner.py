"""Run the Blender-side renderer from any Python: find a Python that has ``bpy`` and start it in a subprocess.

``bpy`` (Blender as a Python module, the ``bench`` extra) is a large wheel for one Python version (3.11 for bpy
5.0.1), so it usually lives in its own environment. The renderer always runs in a subprocess, also when the current
interpreter has ``bpy``: Blender and torch then never share a process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional, Tuple

import relight3d
from relight3d.benchmark.config import BenchmarkConfig
from relight3d.benchmark.layout import default_output_dir

BPY_PYTHON_ENV = "RELIGHT3D_BPY_PYTHON"
"""Environment variable naming a Python interpreter that can ``import bpy``."""
INSTALL_HINT = (
    "install the 'bench' extra (pip install 'relight3d[bench]', bpy==5.0.1 needs Python 3.11) or pass "
    f"--blender-python / set {BPY_PYTHON_ENV} to a Python that has bpy"
)


class BpyNotFoundError(RuntimeError):
    """No Python interpreter with ``bpy`` was found; ``str(err)`` is one line that says how to get one."""


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


def _run_renderer(python: str, args: list) -> None:
    """Run ``python -m relight3d.benchmark.render_benchmark args`` with only relight3d added to its path."""
    package_dir = Path(relight3d.__file__).resolve().parent
    with tempfile.TemporaryDirectory(prefix="relight3d_bpy_path_") as path_dir:
        # A folder holding only a link to the package: the bpy Python must not see this environment's other
        # packages (another numpy would shadow its own).
        (Path(path_dir) / "relight3d").symlink_to(package_dir, target_is_directory=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (path_dir, env.get("PYTHONPATH", "")) if p)
        command = [python, "-m", "relight3d.benchmark.render_benchmark", *map(str, args)]
        result = subprocess.run(command, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"the benchmark renderer failed (exit code {result.returncode}); see its output above")


def make_benchmark(
    config: BenchmarkConfig = BenchmarkConfig(),
    out: Optional[Path] = None,
    threads: int = 2,
    force: bool = False,
    check_noise: Optional[Tuple[str, int]] = None,
    noise_seed: int = 5000,
    python: Optional[str] = None,
    noise_only: bool = False,
) -> Path:
    """Generate (or reuse from the cache) a benchmark; returns its folder.

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

    Returns:
        The benchmark folder (layout in :mod:`relight3d.benchmark.layout`).

    Raises:
        ValueError: ``check_noise`` names an object or light that ``config`` does not have.
        BpyNotFoundError: no Python with ``bpy``.
        RuntimeError: the renderer failed.
    """
    if noise_only and check_noise is None:
        raise ValueError("noise_only needs check_noise=(object, light)")
    if check_noise is not None:
        names = [o.name for o in config.objects]
        if check_noise[0] not in names:
            raise ValueError(f"noise check: {check_noise[0]!r} is not one of the objects {names}")
        if not 0 <= check_noise[1] < len(config.lights):
            raise ValueError(f"noise check: light {check_noise[1]} is not in 0..{len(config.lights) - 1}")
    interpreter = find_bpy_python(python)
    root = Path(out).expanduser().resolve() if out is not None else default_output_dir(config)
    args = ["--config-json", json.dumps(config.to_dict()), "--out", root, "--threads", threads]
    if force:
        args.append("--force")
    if check_noise is not None:
        args += ["--check-noise", check_noise[0], "--noise-light", check_noise[1], "--noise-seed", noise_seed]
    if noise_only:
        args.append("--noise-only")
    _run_renderer(interpreter, args)
    return root
