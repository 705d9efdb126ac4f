#!/usr/bin/env bash
# The main job: sets everything up (scripts/setup.sh: packages, venv, models, Release build), makes
# the Safe-Align ICV from the training-pool pairs if it is not cached, then runs
# `safedec eval --config configs/quickstart.yaml` on the embedded default model
# (SmolLM2-135M-Instruct) and prints the results table.
#   scripts/run.sh                 quickstart: a seeded subsample of every evaluation set (~10 min)
#   scripts/run.sh --full          configs/full.yaml: the whole evaluation sets (hours on 2 cores)
# Other arguments go to `safedec eval` (e.g. --limit N, --threads N). The run directory is
# runs/<config>-<UTC time>/ (report.md with plots, results.jsonl, generations.jsonl, manifest.json).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The main job uses only the embedded default model; SAFEDEC_MODELS=all fetches every locked model.
SAFEDEC_MODELS="${SAFEDEC_MODELS:-smollm2-135m-instruct}" SAFEDEC_BUILD_TESTS="${SAFEDEC_BUILD_TESTS:-OFF}" \
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
OUT="runs/$(basename "$CONFIG" .yaml)-$(date -u +%Y%m%d-%H%M%S)"
echo "[run] safedec eval --config $CONFIG --out $OUT ${ARGS[*]:-}" >&2
"$BUILD/safedec" eval --config "$CONFIG" --out "$OUT" "${ARGS[@]+"${ARGS[@]}"}"
echo "[run] report: $OUT/report.md" >&2
