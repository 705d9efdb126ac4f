#!/usr/bin/env bash
# Batch-1 decode from quantised weights, side by side in one run: the fused decode step
# (model/decode_step.h) against the generic ATen layer (SAFEDEC_FUSED_DECODE=0), each with the
# passive OpenMP waits that inference commands now use and with libgomp's default spinning
# (GOMP_SPINCOUNT=300000, which also stops the re-exec), plus llama.cpp's llama-bench on the same GGUF
# and thread count. One line per (model, repetition).
# Usage: LLAMA_BENCH=/path/to/llama-bench experiments/decode_fused.sh [THREADS] [REPS] [MODELS...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
THREADS="${1:-2}"; REPS="${2:-1}"; shift 2 || true
BIN="${SAFEDEC_BUILD_DIR:-build}/safedec"
MODELS=("$@")
[ ${#MODELS[@]} -gt 0 ] || MODELS=(smollm2-135m-instruct:SmolLM2-135M-Instruct.Q4_1.gguf gemma3-270m:gemma-3-270m-q4_k_m.gguf
  qwen2.5-coder-0.5b-instruct:qwen2.5-coder-0.5b-instruct-q4_k_m.gguf qwen2.5-coder-1.5b-instruct:qwen2.5-coder-1.5b-instruct-q4_k_m.gguf)
echo "# $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg) threads: $THREADS" >&2
tok() {  # env... -> decode tok/s of safedec bench generate
  env "$@" "$BIN" bench generate --model "$name" --weights quantized --batch 1 --prompt-tokens 128 --new-tokens 64 \
    --threads "$THREADS" --repeats 3 --json 2>/dev/null | tail -1 | python3 -c "import json,sys; print('%.1f' % json.load(sys.stdin)['decode_tok_s'])"
}
for m in "${MODELS[@]}"; do
  name="${m%%:*}"; file=".cache/models/${m##*:}"
  for r in $(seq "$REPS"); do
    gs=$(tok SAFEDEC_FUSED_DECODE=0 GOMP_SPINCOUNT=300000); fs=$(tok GOMP_SPINCOUNT=300000)
    gp=$(tok SAFEDEC_FUSED_DECODE=0); fp=$(tok SAFEDEC_FUSED_DECODE=1)
    l=-
    if [ -n "${LLAMA_BENCH:-}" ]; then
      l=$("$LLAMA_BENCH" -m "$file" -p 0 -n 64 -t "$THREADS" -r 3 -o jsonl 2>/dev/null | python3 -c "import json,sys; print('%.1f' % json.loads(sys.stdin.readline())['avg_ts'])")
    fi
    echo "$name rep $r threads $THREADS | spinning: generic $gs fused $fs | passive: generic $gp fused $fp | llama.cpp $l"
  done
done
echo "# done; load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
