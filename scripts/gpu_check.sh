#!/usr/bin/env bash
# relight3d's GPU check: build and test the CUDA kernels, run the prior tests on CUDA, time the methods and the
# priors; writes gpu_check.json, gpu_check.md and gpu_check.log to $OUT (if set) or renders/gpu_check/.
#
#   bash scripts/gpu_check.sh                 # on a machine with a GPU: under 8 minutes on an H100 / H200
#   bash scripts/gpu_check.sh --cpu-dry-run   # anywhere: skips the CUDA parts, the rest on the CPU, tiny sizes
#   bash scripts/gpu_check.sh --fetch-wheels  # with a network: the wheels a bare GPU machine's python3 lacks -> .whl
#   bash scripts/gpu_check.sh --help          # budget, output folder, Python, --wheels, --only STEP ..., --plan
#
# Exit code: 0 when every step passed (or was skipped by design of the mode), 1 otherwise, 2 for bad arguments.
# The steps run with .venv/bin/python; without a .venv, scripts/install.sh is tried first (it needs a network),
# else the system python3 with the wheels of .whl installed offline, and the report says what that Python lacks.
# The orchestrator itself (scripts/gpu_check/) needs only Python's standard library.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=$(command -v python3 || command -v python); fi
if [ -z "$PY" ]; then echo "gpu_check: no Python found (.venv/bin/python, python3)" >&2; exit 1; fi
PYTHONPATH="$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" -m gpu_check "$@"
