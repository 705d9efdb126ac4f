#!/usr/bin/env bash
# Compile-and-link check of the CUDA code, for machines without a GPU (called from .ci/run):
# every cuda/*.cu is compiled with nvcc (C++17, include src/, real sm_80 code plus compute_80 PTX so newer
# GPUs can JIT it), the framework-free CPU row kernels are compiled beside them, and the standalone test
# program tests/cuda/test_cuda_kernels.cu is linked against all of it with cudart. Nothing is run: the
# program needs a GPU (run it there by hand: <out>/test_cuda_kernels). The kernel benchmark
# benchmarks/cuda/bench_cuda_kernels.cu is linked the same way (<out>/bench_cuda_kernels).
# Environment: NVCC (default: nvcc on PATH, else /usr/local/cuda/bin/nvcc), SAFEDEC_CUDA_ARCH (default 80),
# SAFEDEC_CUDA_CHECK_DIR (default build-cuda-check/ in the source tree), JOBS (default 2).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NVCC="${NVCC:-$( [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc || command -v nvcc)}"
ARCH="${SAFEDEC_CUDA_ARCH:-80}"
OUT="${SAFEDEC_CUDA_CHECK_DIR:-$ROOT/build-cuda-check}"
JOBS="${JOBS:-2}"
if [ ! -x "$NVCC" ]; then
  echo "[check_cuda] nvcc not found (looked for '$NVCC'); install the CUDA toolkit or set NVCC" >&2
  exit 1
fi
start=$(date +%s)
mkdir -p "$OUT/obj"
FLAGS=(-std=c++17 -O2 -I"$ROOT/src" -I"$ROOT/cuda" -Xcompiler=-Wall,-Wextra,-Wno-unused-parameter
       -gencode "arch=compute_${ARCH},code=sm_${ARCH}" -gencode "arch=compute_${ARCH},code=compute_${ARCH}")
lib_sources=("$ROOT"/cuda/*.cu "$ROOT/src/kernels/row_kernels.cpp")
sources=("${lib_sources[@]}" "$ROOT"/tests/cuda/*.cu "$ROOT/benchmarks/cuda/bench_cuda_kernels.cu")
echo "[check_cuda] $("$NVCC" --version | tail -1); compiling ${#sources[@]} files for sm_${ARCH} (+PTX)"
obj_of() { echo "$OUT/obj/$(basename "$1").o"; }
pids=()
for src in "${sources[@]}"; do
  obj="$(obj_of "$src")"
  "$NVCC" "${FLAGS[@]}" -c "$src" -o "$obj" &
  pids+=($!)
  if [ "${#pids[@]}" -ge "$JOBS" ]; then
    wait "${pids[0]}"
    pids=("${pids[@]:1}")
  fi
done
for pid in "${pids[@]}"; do wait "$pid"; done
lib_objects=()
for src in "${lib_sources[@]}"; do lib_objects+=("$(obj_of "$src")"); done
test_objects=()
for src in "$ROOT"/tests/cuda/*.cu; do test_objects+=("$(obj_of "$src")"); done
"$NVCC" "${FLAGS[@]}" "${lib_objects[@]}" "${test_objects[@]}" -o "$OUT/test_cuda_kernels"
"$NVCC" "${FLAGS[@]}" "${lib_objects[@]}" "$(obj_of "$ROOT/benchmarks/cuda/bench_cuda_kernels.cu")" \
  -o "$OUT/bench_cuda_kernels"
echo "[check_cuda] OK: linked $OUT/test_cuda_kernels and $OUT/bench_cuda_kernels in $(( $(date +%s) - start )) s" \
  "(both need a GPU to run)"
