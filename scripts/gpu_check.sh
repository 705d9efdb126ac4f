#!/usr/bin/env bash
# The GPU check of the CUDA kernels, for a machine with an NVIDIA GPU and nvcc (no LibTorch, no Debian
# libraries needed): builds tests/cuda/test_cuda_kernels and benchmarks/cuda/bench_cuda_kernels for the
# GPU's own architecture with scripts/check_cuda.sh, runs the correctness test (every launcher against the
# CPU row functions), the same test under compute-sanitizer's memcheck when that tool is there, and the
# kernel benchmark. Logs go to $OUT (default: build-gpu-check/) as gpu.txt, test.log, memcheck.log, bench.log.
# Environment: SAFEDEC_CUDA_ARCH (default: from nvidia-smi's compute capability, else 90), JOBS (nproc),
# BENCH_ARGS (extra arguments for the benchmark, e.g. --quick).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/build-gpu-check}"
mkdir -p "$OUT"
rc=0
if ! command -v nvidia-smi > /dev/null; then
  echo "[gpu_check] nvidia-smi not found: this script needs a machine with an NVIDIA GPU" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
cc="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')"
export SAFEDEC_CUDA_ARCH="${SAFEDEC_CUDA_ARCH:-${cc:-90}}"
export JOBS="${JOBS:-$(nproc)}"
export SAFEDEC_CUDA_CHECK_DIR="${SAFEDEC_CUDA_CHECK_DIR:-/tmp/safedec-gpu-check}"
"$ROOT/scripts/check_cuda.sh" 2>&1 | tee "$OUT/build.log" || exit 1
BIN="$SAFEDEC_CUDA_CHECK_DIR"
echo "[gpu_check] correctness: test_cuda_kernels"
"$BIN/test_cuda_kernels" 2>&1 | tee "$OUT/test.log" || rc=1
if command -v compute-sanitizer > /dev/null; then
  echo "[gpu_check] compute-sanitizer --tool memcheck test_cuda_kernels"
  timeout 300 compute-sanitizer --tool memcheck --error-exitcode 3 "$BIN/test_cuda_kernels" > "$OUT/memcheck.log" 2>&1
  mc=$?
  tail -5 "$OUT/memcheck.log"
  echo "[gpu_check] memcheck exit $mc"
  [ "$mc" -eq 0 ] || rc=1
else
  echo "[gpu_check] compute-sanitizer not found: memcheck not run" | tee "$OUT/memcheck.log"
fi
echo "[gpu_check] speed: bench_cuda_kernels ${BENCH_ARGS:-}"
# shellcheck disable=SC2086
"$BIN/bench_cuda_kernels" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log" || rc=1
echo "[gpu_check] done, exit $rc"
exit $rc
