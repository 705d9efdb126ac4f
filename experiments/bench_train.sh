#!/usr/bin/env bash
# Training speed and memory, safedec vs PyTorch eager, side by side in one run: `safedec bench train`
# and experiments/bench_train_torch.py on the same model, batches, sequence length, threads, steps and
# AdamW settings, each (framework, mode) in its own process. Repetitions are interleaved (rep 1:
# safedec then PyTorch, rep 2: PyTorch then safedec, ...) so that load on a shared machine hits both
# alike; the figure that counts is the per-repetition ratio safedec / PyTorch of tokens/s, printed per
# mode as the median with its min-max over repetitions.
#
#   experiments/bench_train.sh [--model M] [--modes full,lora] [--batch B] [--seq-len T] [--steps N]
#                              [--warmup W] [--threads K] [--reps R] [--out FILE.jsonl] [-- ARGS...]
# ARGS after `--` go to both programs (same flag names), e.g. -- --activation-checkpointing --lora-r 8.
# Environment: SAFEDEC_BIN (default build/safedec), PYTHON (default .venv/bin/python).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${SAFEDEC_BIN:-$ROOT/build/safedec}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
model=smollm2-135m-instruct modes=full,lora batch=4 seq=128 steps=5 warmup=1 threads=2 reps=3
out=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --modes) modes="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --seq-len) seq="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --warmup) warmup="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "bench_train.sh: unknown argument '$1' (see the header of $0)" >&2; exit 2 ;;
  esac
done
[ -x "$BIN" ] || { echo "bench_train.sh: $BIN is not built (scripts/setup.sh, or set SAFEDEC_BIN)" >&2; exit 2; }
[ -x "$PY" ] || { echo "bench_train.sh: $PY not found (scripts/setup.sh creates .venv, or set PYTHON)" >&2; exit 2; }
[[ "$reps" =~ ^[1-9][0-9]*$ ]] || { echo "bench_train.sh: --reps must be a positive integer" >&2; exit 2; }
[ -n "$out" ] || out="$(mktemp /tmp/bench_train.XXXXXX.jsonl)"
: > "$out"
common=(--model "$model" --batch "$batch" --seq-len "$seq" --steps "$steps" --warmup "$warmup" --threads "$threads")
echo "bench_train.sh: $model, modes $modes, batch $batch x seq $seq, $steps steps (+$warmup warm-up), $threads threads," \
  "$reps interleaved repetitions; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

run_safedec() { "$BIN" bench train --json --mode "$1" "${common[@]}" "${extra[@]}" | sed "s/^{/{\"rep\":$2,/" >> "$out"; }
run_torch() { "$PY" "$ROOT/experiments/bench_train_torch.py" --mode "$1" "${common[@]}" "${extra[@]}" 2> >(grep -v "it/s\]" >&2) \
  | sed "s/^{/{\"rep\": $2, /" >> "$out"; }

IFS=, read -r -a mode_list <<< "$modes"
for ((r = 1; r <= reps; ++r)); do
  for m in "${mode_list[@]}"; do
    echo "bench_train.sh: rep $r/$reps, $m (load $(cut -d' ' -f1 /proc/loadavg))" >&2
    if (( r % 2 == 1 )); then run_safedec "$m" "$r"; run_torch "$m" "$r"; else run_torch "$m" "$r"; run_safedec "$m" "$r"; fi
  done
done
echo "bench_train.sh: load average at end: $(cut -d' ' -f1-3 /proc/loadavg); results in $out" >&2

"$PY" - "$out" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
modes = sorted({r["mode"] for r in rows}, key=["full", "lora"].index)
first = rows[0]
print(f"model {first['model']}, batch {first['batch']} x seq {first['seq_len']}, {first['steps']} timed steps, "
      f"{first['threads']} threads, activation checkpointing {first['activation_checkpointing']}")
print("mode | safedec tok/s (median, min-max) | PyTorch tok/s | ratio safedec/PyTorch (median, min-max over reps) | "
      "loss_first safedec / PyTorch | peak RSS MiB safedec / PyTorch (x fp32 weights) | training peak MiB safedec / PyTorch")
for m in modes:
    by = {f: {r["rep"]: r for r in rows if r["mode"] == m and r["framework"] == f} for f in ("safedec", "pytorch")}
    reps = sorted(set(by["safedec"]) & set(by["pytorch"]))
    ratios = [by["safedec"][k]["tokens_per_s"] / by["pytorch"][k]["tokens_per_s"] for k in reps]
    def agg(f, key):
        v = [by[f][k][key] for k in reps]
        return statistics.median(v), min(v), max(v)
    s, p = agg("safedec", "tokens_per_s"), agg("pytorch", "tokens_per_s")
    a, b = by["safedec"][reps[0]], by["pytorch"][reps[0]]
    sp, pp = agg("safedec", "peak_rss_mb")[2], agg("pytorch", "peak_rss_mb")[2]
    st, pt = agg("safedec", "train_peak_rss_mb")[2], agg("pytorch", "train_peak_rss_mb")[2]
    print(f"{m} | {s[0]:.1f} ({s[1]:.1f}-{s[2]:.1f}) | {p[0]:.1f} ({p[1]:.1f}-{p[2]:.1f}) | "
          f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}, {len(ratios)} reps) | "
          f"{a['loss_first']:.5f} / {b['loss_first']:.5f} | "
          f"{sp:.0f} ({sp * 2**20 / a['weight_bytes_fp32']:.2f}x) / {pp:.0f} ({pp * 2**20 / b['weight_bytes_fp32']:.2f}x) | "
          f"{st:.0f} / {pt:.0f}")
    print(f"  phases (median s/step) safedec fwd+bwd {agg('safedec', 'fwd_bwd_s')[0]:.3f} optim "
          f"{agg('safedec', 'optim_s')[0]:.3f} | PyTorch fwd+bwd {agg('pytorch', 'fwd_bwd_s')[0]:.3f} optim "
          f"{agg('pytorch', 'optim_s')[0]:.3f}; weights {a['weight_params']} / {b['weight_params']} params, "
          f"trained {a['trained_params']} / {b['trained_params']}")
EOF
