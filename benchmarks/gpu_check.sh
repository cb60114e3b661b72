#!/usr/bin/env bash
# The GPU checks in one run, for a lent single-GPU machine that has CUDA, torch, transformers
# and accelerate but no package index: the GPU tests, then the benchmarks. Wheels for what that
# machine lacks (this package, DeepSpeed, pydantic, hjson, liger-kernel) are made by
# `bash benchmarks/gpu_wheels.sh` into .whl/. Logs go to $OUT (default ./gpu-check).
#
# PARTS picks the parts, in this order (default: all; each bounded by its *_S seconds):
#   attention  SDPA / SDPA-flash / SDPA-cuDNN / flash-attn timed per length (ATTN_S, 60)
#   compare    the 1.1B model at 32K/64K/128K: 26 November's settings against the best
#              (auto attention, auto checkpointing, Liger where installed), plus the paper's
#              offload setting at 8K with 32 sequences per step (COMPARE_S, 420)
#   grid       the paper's 40 x 10 needle grid on a ~1B model with prefix reuse (GRID_S, 540)
#   tests      the GPU tests (TESTS_S, 180)
#   train      the earlier training table, today's settings only (TRAIN_S, 300)
# A lent machine runs one command for at most 10 minutes: run `PARTS="attention compare"`
# and `PARTS=grid` as two commands.
set -u
OUT=${OUT:-gpu-check}
PARTS=${PARTS:-attention compare grid tests}
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
  grep -E '^(\||card|MEASURED|device|attention|total|grid)' "$OUT/$name.log" | tail -n 60
  tail -n 5 "$OUT/$name.log"
}
wants() { [[ " $PARTS " == *" $1 "* ]]; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import sys, torch, transformers, deepspeed; print(sys.version.split()[0], torch.__version__, transformers.__version__, deepspeed.__version__)"
python3 -c "import liger_kernel, triton; print('liger-kernel', liger_kernel.__file__, 'triton', triton.__version__)" \
  || echo "liger-kernel not importable: kernels auto runs without it"
python3 -c "import flash_attn; print('flash-attn', flash_attn.__version__)" 2>/dev/null || echo "no flash-attn"
if wants attention; then
  step attention "${ATTN_S:-60}" python3 benchmarks/attention_backends.py \
    --lengths "${ATTN_LENGTHS:-8192,32768,65536,131072}"
fi
if wants compare; then
  step compare "${COMPARE_S:-420}" python3 benchmarks/train_throughput.py --gpu --compare --steps 3 \
    --lengths "${COMPARE_LENGTHS:-32768,65536,131072}" \
    --offload-length "${OFFLOAD_LENGTH:-8192}" --accumulation "${ACCUMULATION:-32}"
fi
if wants grid; then
  step grid "${GRID_S:-540}" python3 benchmarks/needle_throughput.py --size 1b --paper-grid
fi
if wants tests; then
  step tests "${TESTS_S:-180}" python3 -m pytest -p no:cacheprovider -q tests/train/test_train_gpu.py tests/needle/test_gpu.py
fi
if wants train; then
  step train "${TRAIN_S:-300}" python3 benchmarks/train_throughput.py --gpu --steps 3 \
    --lengths "${TRAIN_LENGTHS:-8192,32768,65536,131072}" --checkpointing on
fi
