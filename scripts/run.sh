#!/usr/bin/env bash
# The main job: sets everything up (scripts/setup.sh: packages, venv, models, Release build), makes
# the Safe-Align ICV from the training-pool pairs and trains the methods' artifacts if they are not
# cached (one-time, about 45 minutes on 2 cores), then runs
# `safedec eval --config configs/quickstart.yaml` on the embedded default model
# (SmolLM2-135M-Instruct) and prints the results table.
#   scripts/run.sh                 quickstart: a seeded subsample of every evaluation set (~10 min)
#   scripts/run.sh --full          configs/full.yaml: the whole evaluation sets (hours on 2 cores)
# Other arguments go to `safedec eval` (e.g. --limit N, --threads N). The run directory is
# runs/<config>-<UTC time>/ (report.md with plots, results.jsonl, generations.jsonl, manifest.json).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The main job evaluates the embedded default model and judges with Qwen2.5-Coder-0.5B-Instruct (the
# quickstart's rubric judge; configs/full.yaml's is the 1.5B); SAFEDEC_MODELS=all fetches every locked model.
DEFAULT_MODELS=smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct
for a in "$@"; do [[ "$a" == "--full" ]] && DEFAULT_MODELS=smollm2-135m-instruct,qwen2.5-coder-1.5b-instruct; done
SAFEDEC_MODELS="${SAFEDEC_MODELS:-$DEFAULT_MODELS}" SAFEDEC_BUILD_TESTS="${SAFEDEC_BUILD_TESTS:-OFF}" \
  "$ROOT/scripts/setup.sh"
BUILD="${SAFEDEC_BUILD_DIR:-$ROOT/build}"
cd "$ROOT"
CONFIG=configs/quickstart.yaml
ARGS=()
for a in "$@"; do
  if [[ "$a" == "--full" ]]; then CONFIG=configs/full.yaml; else ARGS+=("$a"); fi
done
ICV=.cache/artifacts/icv-smollm2-135m-instruct  # safedec creates .cache/artifacts if needed
if [[ ! -f "$ICV/manifest.json" ]]; then
  echo "[run] extracting the Safe-Align ICV from data/icv_pairs.jsonl (training-pool prompts) -> $ICV" >&2
  "$BUILD/safedec" icv extract --model smollm2-135m-instruct --out "$ICV"
fi
# The trained artifacts the main job's methods use (SafeDecoding's LoRA expert; NGSD's LoRA expert,
# risk probe and calibrated gate), built once into .cache/ and reused: each step is skipped when its
# output is complete and resumes where it stopped after a kill. First-time cost on 2 CPU cores
# (experiments/training.md): deep-alignment data ~10 min, NGSD expert ~35 min, probe ~5 min, gate
# ~2 min, SafeDecoding expert ~6 min. SAFEDEC_SKIP_TRAIN=1 skips this (the eval then refuses the
# methods whose artifacts are missing, naming the command that builds each).
complete() { [[ -f "$1/manifest.json" ]] && grep -q '"status": *"complete"' "$1/manifest.json"; }
if [[ "${SAFEDEC_SKIP_TRAIN:-0}" != 1 ]]; then
  if ! complete .cache/data/deep_alignment; then
    echo "[run] building NGSD's training data (one-time): safedec data build --config configs/data/deep_alignment.yaml --resume" >&2
    "$BUILD/safedec" data build --config configs/data/deep_alignment.yaml --resume
  fi
  for t in ngsd_expert risk_probe ngsd_gate safedecoding_expert; do
    if [[ ! -f ".cache/train/$t/metrics.json" ]]; then
      echo "[run] training $t (one-time): safedec train --config configs/train/$t.yaml --resume" >&2
      "$BUILD/safedec" train --config "configs/train/$t.yaml" --resume
    fi
  done
fi
OUT="runs/$(basename "$CONFIG" .yaml)-$(date -u +%Y%m%d-%H%M%S)"
echo "[run] safedec eval --config $CONFIG --out $OUT ${ARGS[*]:-}" >&2
"$BUILD/safedec" eval --config "$CONFIG" --out "$OUT" "${ARGS[@]+"${ARGS[@]}"}"
echo "[run] report: $OUT/report.md" >&2
