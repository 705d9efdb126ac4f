#!/usr/bin/env bash
# Check safedec's GGUF and control-vector exports in llama.cpp itself (issue 12).
#
#   LLAMA_CPP_BIN=/path/to/llama.cpp/build/bin experiments/llamacpp_exports.sh
#
# LLAMA_CPP_BIN: a directory holding llama-completion (llama.cpp's plain completion tool, the one
# that takes --control-vector). Unset: llama.cpp is built from the llama-cpp-python==0.3.36 sdist
# (its vendor/llama.cpp) into $LLAMA_CPP_DIR (default /work/llamacpp, outside the repo): Release,
# llama-completion only, -j2, niced. llama.cpp is a checking tool here, never a safedec dependency.
#
# What it does, on the real SmolLM2-135M-Instruct (registered smollm2-135m-instruct):
#  1. safedec export gguf --type f32 and --type q8_0; for each file, the greedy continuation of
#     fixed benign prompts (same ChatML text on both sides, explicit system message, no BOS: the
#     model's add_bos is false) by `safedec generate` and by `llama-completion --temp 0 --top-k 1`
#     on the same file; prints per prompt whether the first N tokens agree, else the first
#     differing token index.
#  2. safedec export control-vector of the ICV artifact; llama.cpp loads it with --control-vector,
#     --control-vector-scaled FILE:S and --control-vector-layer-range; prints how the output changes vs
#     no vector and, at a large strength, how often the model answers benign questions with the
#     ICV's safe demonstration ("I do not answer this question ...") for +S and -S.
# Output: a table on stdout; work files in $WORK (default /tmp/safedec_llamacpp).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SAFEDEC=${SAFEDEC:-$ROOT/build/safedec}
PY=${PY:-$ROOT/.venv/bin/python}
WORK=${WORK:-/tmp/safedec_llamacpp}
N=${N:-32}
MODEL=${MODEL:-smollm2-135m-instruct}
ICV=${ICV:-$ROOT/.cache/artifacts/icv-smollm2-135m-instruct}
mkdir -p "$WORK"

if [[ -z "${LLAMA_CPP_BIN:-}" ]]; then
  LLAMA_CPP_DIR=${LLAMA_CPP_DIR:-/work/llamacpp}
  SRC="$LLAMA_CPP_DIR/sdist/llama_cpp_python-0.3.36/vendor/llama.cpp"
  if [[ ! -x "$LLAMA_CPP_DIR/build/bin/llama-completion" ]]; then
    if [[ ! -d "$SRC" ]]; then
      mkdir -p "$LLAMA_CPP_DIR/sdist"
      "$ROOT/.venv/bin/pip" download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d "$LLAMA_CPP_DIR/sdist"
      tar xzf "$LLAMA_CPP_DIR/sdist/llama_cpp_python-0.3.36.tar.gz" -C "$LLAMA_CPP_DIR/sdist"
    fi
    nice cmake -S "$SRC" -B "$LLAMA_CPP_DIR/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
      -DGGML_NATIVE=ON -DGGML_OPENMP=OFF >"$WORK/llama_configure.log"
    nice cmake --build "$LLAMA_CPP_DIR/build" --target llama-completion -j2 >"$WORK/llama_build.log"
  fi
  LLAMA_CPP_BIN="$LLAMA_CPP_DIR/build/bin"
fi
LC="$LLAMA_CPP_BIN/llama-completion"
[[ -x "$LC" ]] || { echo "llama-completion not found in LLAMA_CPP_BIN=$LLAMA_CPP_BIN" >&2; exit 2; }
[[ -x "$SAFEDEC" ]] || { echo "safedec binary not found at $SAFEDEC (build it first)" >&2; exit 2; }
[[ -d "$ICV" || -f "$ICV" ]] || { echo "ICV artifact $ICV missing: run safedec icv extract --model $MODEL --out $ICV" >&2; exit 2; }

SYSTEM="You are a helpful assistant."
cat >"$WORK/prompts.jsonl" <<EOF
{"id": "p1", "prompt": "What is the capital of France?", "system": "$SYSTEM"}
{"id": "p2", "prompt": "Give me three tips for growing tomatoes.", "system": "$SYSTEM"}
{"id": "p3", "prompt": "Explain photosynthesis in two sentences.", "system": "$SYSTEM"}
{"id": "p4", "prompt": "Write a short poem about the sea.", "system": "$SYSTEM"}
{"id": "p5", "prompt": "How do I boil an egg?", "system": "$SYSTEM"}
{"id": "p6", "prompt": "What is 12 times 7?", "system": "$SYSTEM"}
{"id": "p7", "prompt": "Name three colours of the rainbow.", "system": "$SYSTEM"}
{"id": "p8", "prompt": "Why is the sky blue?", "system": "$SYSTEM"}
EOF

# llama-completion on one prompt id: ChatML text identical to safedec's chatml template.
llama_run() {  # file prompt-id out-file extra-args...
  local model=$1 id=$2 out=$3; shift 3
  local q
  q=$("$PY" -c 'import json,sys; [print(j["prompt"]) for j in map(json.loads, open(sys.argv[1])) if j["id"]==sys.argv[2]]' "$WORK/prompts.jsonl" "$id")
  local p=$'<|im_start|>system\n'"$SYSTEM"$'<|im_end|>\n<|im_start|>user\n'"$q"$'<|im_end|>\n<|im_start|>assistant\n'
  nice "$LC" -m "$model" -p "$p" -n "$N" --temp 0 --top-k 1 -no-cnv --no-display-prompt -t 1 --seed 0 \
    "$@" >"$out" 2>"$out.log"
}

echo "== versions"
echo "safedec: $("$SAFEDEC" --version 2>&1 | head -1) (git $(git -C "$ROOT" rev-parse --short HEAD))"
echo "llama.cpp: $("$LC" --version 2>&1 | grep -m1 -i version) at $LLAMA_CPP_BIN"
date -u +"date: %Y-%m-%d %H:%M UTC"

echo "== 1. GGUF export: greedy continuations, safedec vs llama.cpp (first $N tokens)"
for TYPE in f32 q8_0; do
  F="$WORK/model-$TYPE.gguf"
  nice "$SAFEDEC" export gguf --model "$MODEL" --type "$TYPE" --out "$F" --force >"$WORK/export-$TYPE.log" 2>&1
  nice "$SAFEDEC" generate --model "$F" --prompts-file "$WORK/prompts.jsonl" --max-new-tokens "$N" --threads 1 \
    --json >"$WORK/safedec-$TYPE.jsonl" 2>"$WORK/safedec-$TYPE.err"
  for id in $(cut -d'"' -f4 "$WORK/prompts.jsonl"); do llama_run "$F" "$id" "$WORK/llama-$TYPE-$id.txt"; done
  "$PY" "$ROOT/experiments/llamacpp_compare.py" tokens "$F" "$WORK/safedec-$TYPE.jsonl" "$WORK/llama-$TYPE-" "$TYPE" "$N"
done

echo "== 2. control vector"
CV="$WORK/safety-cv.gguf"
nice "$SAFEDEC" export control-vector --icv "$ICV" --out "$CV" --force | tee "$WORK/export-cv.log"
F="$WORK/model-f32.gguf"
"$PY" "$ROOT/experiments/llamacpp_compare.py" cvfile "$CV"
run_set() {  # tag extra-args...
  local tag=$1; shift
  for id in $(cut -d'"' -f4 "$WORK/prompts.jsonl"); do llama_run "$F" "$id" "$WORK/cv-$tag-$id.txt" "$@"; done
}
run_set none
run_set cv1 --control-vector "$CV"
run_set cv1b --control-vector-scaled "$CV:1.0"
run_set range --control-vector-scaled "$CV:1.0" --control-vector-layer-range 10 20
for S in -1 0.5 -0.5 0.25 -0.25 4 -4; do run_set "s$S" --control-vector-scaled "$CV:$S"; done
"$PY" "$ROOT/experiments/llamacpp_compare.py" cvtable "$WORK" none cv1 cv1b s-1 s0.5 s-0.5 s0.25 s-0.25 range s4 s-4
