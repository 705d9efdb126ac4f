#!/usr/bin/env bash
# Batch-1 decode from quantised weights: safedec (`weights: quantized`) side by side with llama.cpp's
# llama-bench on the same GGUF and thread count, plus safedec's fp32 path and the bandwidth floor,
# for SmolLM2-135M, Gemma 3 270M, Qwen2.5-Coder 0.5B and 1.5B. One JSON object per line.
# llama.cpp is not part of safedec: build llama-bench outside the repository, e.g.
#   pip download --no-deps --no-binary :all: llama-cpp-python -d /work/llamacpp   (then untar)
#   cmake -S .../vendor/llama.cpp -B build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF && cmake --build build --target llama-bench
# Usage: LLAMA_BENCH=/path/to/llama-bench experiments/runtime_speed_quant.sh [THREADS] [REPEATS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
THREADS="${1:-$(nproc)}"
REPEATS="${2:-3}"
BIN="${SAFEDEC_BUILD_DIR:-build}/safedec"
echo "# $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg) threads: $THREADS" >&2
for m in smollm2-135m-instruct:SmolLM2-135M-Instruct.Q4_1.gguf gemma3-270m:gemma-3-270m-q4_k_m.gguf \
         qwen2.5-coder-0.5b-instruct:qwen2.5-coder-0.5b-instruct-q4_k_m.gguf \
         qwen2.5-coder-1.5b-instruct:qwen2.5-coder-1.5b-instruct-q4_k_m.gguf; do
  name="${m%%:*}"; file=".cache/models/${m##*:}"
  "$BIN" bench bandwidth --model "$name" --weights quantized --threads "$THREADS" --json
  "$BIN" bench generate --model "$name" --weights quantized --batch 1 --prompt-tokens 128 --new-tokens 64 \
    --threads "$THREADS" --repeats "$REPEATS" --json
  if [ "${FP32:-1}" = 1 ]; then
    "$BIN" bench generate --model "$name" --weights fp32 --batch 1 --prompt-tokens 128 --new-tokens 64 \
      --threads "$THREADS" --repeats "$REPEATS" --json
  fi
  if [ -n "${LLAMA_BENCH:-}" ]; then
    "$LLAMA_BENCH" -m "$file" -p 128 -n 64 -t "$THREADS" -r "$REPEATS" -o jsonl 2>/dev/null
  fi
done
echo "# done; load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
