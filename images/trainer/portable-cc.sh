#!/usr/bin/env bash
# gcc, g++, cc and c++ while the trainer image pre-compiles DeepSpeed's ops (first on PATH).
# DeepSpeed builds CPU Adam with -march=native and a SIMD width read from the build machine's
# CPU, so an image built on an AVX-512 machine dies with "illegal instruction" on GPU nodes
# without AVX-512 (DeepSpeed issue 1886). On x86-64 this compiles for x86-64-v3 (AVX2 and
# FMA, which every x86 GPU server of the last decade has) instead; elsewhere, and for every
# other argument, it is the compiler it stands for: /usr/bin/<its name>, or
# LONGREACH_REAL_CC.
set -euo pipefail
real=${LONGREACH_REAL_CC:-/usr/bin/$(basename "$0")}
if [[ "$(uname -m)" != x86_64 ]]; then
  exec "$real" "$@"
fi
args=()
for arg in "$@"; do
  case "$arg" in
    -march=native) args+=(-march=x86-64-v3) ;;
    -D__AVX512__) args+=(-D__AVX256__) ;;
    *) args+=("$arg") ;;
  esac
done
exec "$real" "${args[@]}"
