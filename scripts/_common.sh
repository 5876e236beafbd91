# Shared set-up for the scripts: sourced, not run. Creates the project venv and builds
# the Python extension into it; every step is idempotent so re-runs are fast.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
# The Python-linked build gets its own target dir so it never overwrites the plain
# cdylib that uniffi-bindgen and the JVM load from target/debug.
export PYO3_TARGET_DIR="$ROOT/target/python"

log() { printf '\n==> %s\n' "$*" >&2; }

ensure_venv() {
  if [ ! -x "$PY" ]; then
    log "creating venv $VENV"
    python3 -m venv "$VENV"
  fi
  local stamp="$VENV/.requirements-stamp"
  if [ ! -f "$stamp" ] || ! cmp -s "$ROOT/scripts/requirements-dev.txt" "$stamp"; then
    log "installing Python tools"
    "$PY" -m pip install --quiet --disable-pip-version-check -r "$ROOT/scripts/requirements-dev.txt"
    cp "$ROOT/scripts/requirements-dev.txt" "$stamp"
  fi
}

# Builds quill._quill into the venv (editable: python/quill is used in place).
build_python_ext() {
  local profile="${1:-dev}"
  ensure_venv
  log "building the Python extension ($profile)"
  local flags=()
  [ "$profile" = release ] && flags+=(--release)
  (cd "$ROOT" && CARGO_TARGET_DIR="$PYO3_TARGET_DIR" VIRTUAL_ENV="$VENV" \
    "$VENV/bin/maturin" develop --quiet "${flags[@]}" >&2)
}
