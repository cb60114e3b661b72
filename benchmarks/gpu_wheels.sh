#!/usr/bin/env bash
# Wheels for benchmarks/gpu_check.sh into .whl/: what a lent GPU machine (Python 3.12, CUDA
# torch, transformers, accelerate; no package index) lacks, at the versions of the lock, and
# liger-kernel (pure Python over Triton, which the GPU image has; kept out of the CPU lock).
set -euo pipefail
cd "$(dirname "$0")/.."
pin() { grep -i "^$1==" .ci/requirements.lock; }
rm -rf .whl && mkdir .whl
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  "$(pin pydantic)" "$(pin pydantic-core)" "$(pin annotated-types)" "$(pin typing-inspection)" "$(pin hjson)" \
  liger-kernel==0.8.5
# DeepSpeed is an sdist: built here against the venv's torch, ops left to JIT (DS_BUILD_OPS=0).
DS_BUILD_OPS=0 .venv/bin/python -m pip wheel -q --no-deps --no-build-isolation -w .whl "$(pin deepspeed)"
.venv/bin/python -m pip wheel -q --no-deps -w .whl .
ls -la .whl
