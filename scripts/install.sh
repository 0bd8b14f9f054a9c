#!/usr/bin/env bash
# Create ./.venv and install relight3d into it, from scratch, on a fresh machine (CPU or GPU).
#
# torch and torchvision are pinned by constraints.txt (CUDA-13 builds that also run on a CPU), and installed first so
# that nerfstudio's open version ranges cannot pull in another torch. The compiled ray-marching kernels are built
# against that torch: CUDA + C++ CPU kernels when nvcc is found, C++ CPU kernels otherwise (BUILD_NO_EXT=1: none).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

# System libraries: open3d needs libusb, ns-render needs ffmpeg, the eval report's browser test chromium.
# Best effort (root with apt only).
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  missing=""
  ldconfig -p | grep -q "libusb-1.0.so.0" || missing="$missing libusb-1.0-0"
  command -v ffmpeg >/dev/null 2>&1 || missing="$missing ffmpeg"
  browser=""
  command -v chromium >/dev/null 2>&1 || browser=" chromium"  # Debian's name; not installable everywhere
  if [ -n "$missing$browser" ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing $browser) >/dev/null 2>&1 \
      || { [ -n "$browser" ] && [ -n "$missing" ] \
           && (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing) >/dev/null 2>&1 \
           && echo "install.sh: could not apt-get install chromium (the report's browser test will skip)"; } \
      || echo "install.sh: could not apt-get install$missing$browser (continuing)"
  fi
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
# setuptools < 81 still ships pkg_resources, which parts of the nerfstudio stack import.
$PIP install -q --upgrade pip "setuptools<81" wheel ninja
$PIP install -q -c constraints.txt torch torchvision

if [ -z "${CUDA_HOME:-}" ]; then
  for d in /usr/local/cuda /usr/local/cuda-13.0; do
    if [ -x "$d/bin/nvcc" ]; then export CUDA_HOME="$d"; break; fi
  done
fi
if [ -n "${CUDA_HOME:-}" ]; then
  # No GPU to detect at build time: name the architecture. 8.0+PTX runs natively on Ampere and is JIT-compiled by
  # the driver for newer GPUs (Ada, Hopper); set TORCH_CUDA_ARCH_LIST="9.0" etc. for native code elsewhere.
  export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0+PTX}"
  export PATH="$CUDA_HOME/bin:$PATH"
fi
export MAX_JOBS="${MAX_JOBS:-2}"
$PIP install -q -c constraints.txt --no-build-isolation -e ".[test]"
"$VENV/bin/python" - <<'PY'
import torch
from relight3d.ops import _backend
print(f"relight3d installed: torch {torch.__version__}, kernels: cpu={_backend.active_backend('cpu')}, "
      f"cuda build={getattr(_backend.extension(), 'WITH_CUDA', False)}")
PY
