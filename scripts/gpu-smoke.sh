#!/usr/bin/env bash
# GPU smoke run (≤ 8 minutes on one H100, no network): the local backend end to end on
# CUDA with a tiny randomly initialised model, then the checks in scripts/gpu_smoke.py.
#
#   scripts/gpu-smoke.sh [OUT]        # OUT defaults to $OUT, else ./gpu-smoke-out
#
# Uses .venv/bin/python when present (`make` builds it), else python3; the interpreter needs
# torch with CUDA plus honly's `local` extra (transformers, trl, peft, accelerate, datasets,
# lm-eval) and mlflow. It prints what it found and exits 3 when something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu-smoke-out}}"
python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python
mkdir -p "$out"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true; } \
  | tee "$out/nvidia-smi.txt"
"$python" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__,
  "cuda", torch.version.cuda, "available", torch.cuda.is_available())'
exec timeout 480 "$python" scripts/gpu_smoke.py "$out/gpu-smoke" "${@:2}"
