#!/usr/bin/env bash
# relight3d-tensorf on a 128 px object scene (e.g. the bunny rendered by datasets/render_object_scene.py), CPU, with
# the defaults that the training benchmark measures. Usage: bash configs/bench_cpu_object128.sh SCENE_DIR [ARGS...]
set -euo pipefail
scene=${1:?usage: bench_cpu_object128.sh SCENE_DIR}
shift
ns-train relight3d-tensorf --data "$scene" --vis tensorboard --machine.device-type cpu \
  --steps-per-eval-image 1000000 --steps-per-eval-batch 1000000 "$@"
