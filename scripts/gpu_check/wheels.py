"""The wheels a bare GPU machine's Python lacks, fetched where there is a network and installed there offline.

A GPU machine lent for minutes may have no network and no ``.venv`` (a ``.venv`` with a CUDA torch is gigabytes):
its Python holds torch, transformers, pytest, Pillow, OpenCV, matplotlib, tensorboard, torchmetrics and jaxtyping,
but not nerfstudio, nerfacc, diffusers or tyro. ``bash scripts/gpu_check.sh --fetch-wheels`` downloads into
``.whl`` (git-ignored) the wheels of :data:`WHEELS`, at the versions of ``constraints.txt``, for CPython
:data:`PYTHON_VERSION` on x86-64 Linux; carried with the checkout, the check installs them (``pip --no-index
--no-deps --target``) before it probes the Python.

:data:`WHEELS` are the distributions the check's steps import (the prior and kernel tests, both benchmarks with
nerfstudio's trainer and ``instant-ngp``) that such a Python lacks: found by running the CPU dry run with a Python
that holds only such a machine's packages plus these. Their own dependencies that such a Python has (numpy, scipy,
rich, huggingface_hub, ...) are not carried; ``--no-deps`` installs exactly this list.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

REPO = Path(__file__).resolve().parents[2]

WHEELS = (
    # nerfstudio and what its trainer, its instant-ngp and its dataparsers import
    "nerfstudio", "nerfacc", "gsplat", "tyro", "docstring_parser", "typeguard", "viser", "msgspec", "websockets",
    "appdirs", "pyquaternion", "splines", "pytorch-msssim", "pathos", "dill", "multiprocess", "ppft",
    "fpsample", "tensorly", "rawpy",
    # the diffusion priors
    "diffusers",
)  # fmt: skip
"""Distributions to carry (names as in ``constraints.txt``)."""
PYTHON_VERSION = "3.12"
"""CPython version of the wheels (the GPU machines' ``python3``)."""
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")  # fmt: skip
"""Platform tags pip may pick (x86-64 Linux, glibc 2.28 or older)."""
CARRY_LIMIT_MIB = 56.0
"""Most MiB of wheels to carry: the checkout travels with them, 64 MiB in all."""


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(names: Sequence[str], constraints: Path) -> List[str]:
    """``name==version`` of each of ``names`` as ``constraints.txt`` pins it (SystemExit naming any it lacks)."""
    pins: Dict[str, str] = {}
    for line in constraints.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)", line.strip())
        if match:
            pins[_normalized(match[1])] = match[2]
    missing = [n for n in names if _normalized(n) not in pins]
    if missing:
        raise SystemExit(f"gpu_check: {constraints}: no pinned version of {', '.join(missing)}")
    return [f"{n}=={pins[_normalized(n)]}" for n in names]


def download_command(requirements: Sequence[str], dest: Path, python_version: str = PYTHON_VERSION) -> List[str]:
    """The ``pip download`` of ``requirements`` as wheels for that CPython on x86-64 Linux, without dependencies."""
    platforms = [arg for tag in PLATFORMS for arg in ("--platform", tag)]
    return [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version",
            python_version, "--implementation", "cp", *platforms, "--dest", str(dest), *requirements]  # fmt: skip


def fetch(dest: Path, python_version: str = PYTHON_VERSION) -> int:
    """Download :data:`WHEELS` into ``dest``; report their size against :data:`CARRY_LIMIT_MIB`."""
    dest.mkdir(parents=True, exist_ok=True)
    requirements = pinned(WHEELS, REPO / "constraints.txt")
    done = subprocess.run(download_command(requirements, dest, python_version))
    if done.returncode != 0:
        print(f"gpu_check: pip download failed (exit {done.returncode})", file=sys.stderr)
        return 1
    files = sorted(dest.glob("*.whl"))
    wanted = {_normalized(r.split("==")[0]) for r in requirements}
    stale = [f for f in files if _normalized(f.name.split("-")[0]) not in wanted]
    mib = sum(f.stat().st_size for f in files) / 2**20
    print(f"gpu_check: {len(files)} wheels, {mib:.1f} MiB in {dest}")
    if stale:
        print(f"gpu_check: {dest} also holds wheels not in the list: {', '.join(f.name for f in stale)}")
    if mib > CARRY_LIMIT_MIB:
        print(f"gpu_check: more than {CARRY_LIMIT_MIB:g} MiB: too much to carry with the checkout", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(fetch(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / ".whl"))
