#!/usr/bin/env bash
# Scaling figure of the distributed mode (experiments/distributed.md): on one machine, 2 ranks x 1 thread
# (torchrun --nproc-per-node 2, --threads 1) against 1 process x 2 threads (--threads 2), for training
# tokens/s (the Trainer's own figure: optimiser steps only, global tokens) and evaluation prompts/s (wall
# time of the whole `safedec eval`, model loading included). Repetitions alternate the order of the two
# set-ups so that load on a shared machine hits both alike. It also prints the largest difference
# between the LoRA adapters the two training set-ups wrote (the same global batches: fp32 rounding).
#
#   experiments/distributed.sh [--reps R]
# Environment: SAFEDEC_BIN (default build/safedec), TORCHRUN (default .venv/bin/torchrun),
# PYTHON (default .venv/bin/python), OUT (default a fresh /tmp directory).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${SAFEDEC_BIN:-$ROOT/build/safedec}"
TORCHRUN="${TORCHRUN:-$ROOT/.venv/bin/torchrun}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
reps=2
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) reps="$2"; shift 2 ;;
    *) echo "distributed.sh: unknown argument '$1' (see the header of $0)" >&2; exit 2 ;;
  esac
done
[[ "$reps" =~ ^[1-9][0-9]*$ ]] || { echo "distributed.sh: --reps must be a positive integer" >&2; exit 2; }
for f in "$BIN" "$TORCHRUN" "$PY"; do [ -x "$f" ] || { echo "distributed.sh: $f not found (scripts/setup.sh)" >&2; exit 2; }; done
OUT="${OUT:-$(mktemp -d /tmp/safedec_distributed.XXXXXX)}"
mkdir -p "$OUT"
TRAIN_CFG="$ROOT/experiments/distributed/train_lora.yaml"
EVAL_CFG="$ROOT/experiments/distributed/eval_plain.yaml"
launch2() { OMP_NUM_THREADS=1 "$TORCHRUN" --no-python --nnodes 1 --nproc-per-node 2 "$BIN" "$@"; }

train_one() {  # $1 = setup (1x2 | 2x1), $2 = run dir; prints tokens/s
  if [ "$1" = 1x2 ]; then "$BIN" train --config "$TRAIN_CFG" --out "$2" --force --threads 2 >"$2.log" 2>&1
  else launch2 train --config "$TRAIN_CFG" --out "$2" --force --threads 1 >"$2.log" 2>&1; fi
  "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["train"]["tokens_per_second"])' "$2/metrics.json"
}
eval_one() {  # $1 = setup, $2 = run dir; prints prompts/s
  local t0 t1
  t0=$(date +%s.%N)
  if [ "$1" = 1x2 ]; then "$BIN" eval --config "$EVAL_CFG" --out "$2" --force --threads 2 >"$2.log" 2>&1
  else launch2 eval --config "$EVAL_CFG" --out "$2" --force --threads 1 >"$2.log" 2>&1; fi
  t1=$(date +%s.%N)
  "$PY" -c 'import sys; n=sum(1 for l in open(sys.argv[1]) if l.strip()); print(f"{n/(float(sys.argv[3])-float(sys.argv[2])):.3f}")' \
    "$2/generations.jsonl" "$t0" "$t1"
}

echo "# $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), out $OUT"
for rep in $(seq 1 "$reps"); do
  if [ $((rep % 2)) -eq 1 ]; then order="1x2 2x1"; else order="2x1 1x2"; fi
  for s in $order; do
    tr=$(train_one "$s" "$OUT/train_$s")
    ev=$(eval_one "$s" "$OUT/eval_$s")
    echo "rep $rep  $s  train_tokens_per_s $tr  eval_prompts_per_s $ev"
  done
done
"$PY" - "$OUT" <<'PYEOF'
import json, sys
from safetensors.numpy import load_file
out = sys.argv[1]
import glob, os
fa = sorted(glob.glob(f"{out}/train_1x2/artifact/**/*.safetensors", recursive=True))
fb = sorted(glob.glob(f"{out}/train_2x1/artifact/**/*.safetensors", recursive=True))
worst = 0.0
for x, y in zip(fa, fb):
    ta, tb = load_file(x), load_file(y)
    for k in ta:
        worst = max(worst, float(abs(ta[k].astype("float64") - tb[k].astype("float64")).max()))
ga = [json.loads(l) for l in open(f"{out}/eval_1x2/generations.jsonl")]
gb = [json.loads(l) for l in open(f"{out}/eval_2x1/generations.jsonl")]
same = [(g["id"], g["output"]) for g in ga] == [(g["id"], g["output"]) for g in gb]
print(f"adapter files compared: {len(fa)}; largest |1x2 - 2x1| over the LoRA tensors: {worst:.3e}")
print(f"eval generations identical (ids, outputs, order): {same}")
PYEOF
