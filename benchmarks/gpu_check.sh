#!/usr/bin/env bash
# The GPU checks in one run, for a lent single-GPU machine that has CUDA, torch, transformers
# and accelerate but no package index: the GPU tests, then the training and needle benchmarks.
# Wheels for what that machine lacks (this package, DeepSpeed, pydantic, hjson) are made by
# `bash benchmarks/gpu_wheels.sh` into .whl/. Logs go to $OUT (default ./gpu-check).
set -u
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
export PYTHONSAFEPATH=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
# DeepSpeed JIT-compiles fused Adam for these archs; its parser rejects suffixed ones such as
# the `9.0a` some CUDA images export, so name the card's own capability.
TORCH_CUDA_ARCH_LIST=$(python3 -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())") || exit 1
export TORCH_CUDA_ARCH_LIST
step() {  # step NAME SECONDS COMMAND...: a bounded step, its log in $OUT/NAME.log
  local name=$1 limit=$2
  shift 2
  echo "== $name"
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  echo "== $name: exit $? after ${SECONDS}s"
  tail -n 25 "$OUT/$name.log"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import sys, torch, transformers, deepspeed; print(sys.version.split()[0], torch.__version__, transformers.__version__, deepspeed.__version__)"
step tests "${TESTS_S:-240}" python3 -m pytest -p no:cacheprovider -q tests/train/test_train_gpu.py tests/needle/test_gpu.py
step train "${TRAIN_S:-300}" python3 benchmarks/train_throughput.py --gpu --steps 3 \
  --lengths "${TRAIN_LENGTHS:-8192,32768,65536,131072}" --checkpointing on
step needle "${NEEDLE_S:-150}" python3 benchmarks/needle_throughput.py --size 1b \
  --lengths "${NEEDLE_LENGTHS:-8192,32768,65536}"
