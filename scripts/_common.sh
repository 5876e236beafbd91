# Shared set-up for the scripts: sourced, not run. Every step is idempotent, so re-runs
# are fast.
#
# One cargo target directory (target/) serves every build: the Python extension
# (maturin asks for the core's cdylib itself), the bundled server, the tests and the
# Kotlin/Swift library (the quill-ffi package, bindings/ffi). Dependencies with the same
# features therefore compile once for all of them, and no stage builds what it does
# not use (the demo never builds uniffi-bindgen).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

log() { printf '\n==> %s\n' "$*" >&2; }

# Installs the requirements file $1 into the project venv (created on first use) unless
# it was already installed as it is now.
pip_install() {
  local req="$1"
  if [ ! -x "$PY" ]; then
    log "creating venv $VENV"
    python3 -m venv "$VENV"
  fi
  local stamp="$VENV/.stamp-$(basename "$req")"
  if [ ! -f "$stamp" ] || ! cmp -s "$req" "$stamp"; then
    log "installing $(basename "$req")"
    "$PY" -m pip install --quiet --disable-pip-version-check -r "$req"
    cp "$req" "$stamp"
  fi
}

# What running and building the Python face needs: maturin and numpy.
ensure_venv() { pip_install "$ROOT/scripts/requirements-run.txt"; }

# Everything scripts/test and scripts/bench use on top: linters, pytest, comparison clients.
ensure_dev_venv() {
  ensure_venv
  pip_install "$ROOT/scripts/requirements-dev.txt"
}

# Ray on top, for the batch-inference example and its test (examples/ray_batch.py,
# tests/python/test_ray.py): a large download that nothing else needs.
ensure_ray_venv() {
  ensure_dev_venv
  pip_install "$ROOT/scripts/requirements-ray.txt"
}

# Builds quill._quill into the venv (editable: python/quill is used in place).
build_python_ext() {
  local profile="${1:-dev}"
  ensure_venv
  log "building the Python extension ($profile)"
  # An extension of another ABI tag (an abi3 one from before, or another Python's)
  # would shadow the new one; so would the distribution's name from before the rename.
  rm -f "$ROOT"/python/quill/_quill.*.so
  if compgen -G "$VENV/lib/python3*/site-packages/quill-*.dist-info" >/dev/null; then
    "$PY" -m pip uninstall --quiet --yes quill >&2
  fi
  local flags=()
  [ "$profile" = release ] && flags+=(--release)
  (cd "$ROOT" && VIRTUAL_ENV="$VENV" "$VENV/bin/maturin" develop --quiet "${flags[@]}" >&2)
}

# The cargo profile flag and output directory of profile $1 (dev or release).
profile_flags() { [ "${1:-dev}" = release ] && echo "--release" || true; }
profile_dir() { [ "${1:-dev}" = release ] && echo "$ROOT/target/release" || echo "$ROOT/target/debug"; }

# Builds the bundled server; its path is $(profile_dir $1)/quill-server.
build_server() {
  log "building the bundled server (${1:-dev})"
  (cd "$ROOT" && cargo build --quiet $(profile_flags "${1:-dev}") --features server --bin quill-server >&2)
}

# Builds the Kotlin/Swift native library and places it where the bindings and the test
# runners load it: $(ffi_lib_dir $1)/libquill.so (cargo names it libquill_ffi; the
# Python extension owns target/*/libquill.so). With "bindgen" as $2, also builds
# uniffi-bindgen ($(profile_dir $1)/uniffi-bindgen).
ffi_lib_dir() { echo "$(profile_dir "${1:-dev}")/ffi"; }
build_ffi_lib() {
  local profile="${1:-dev}" features=()
  [ "${2:-}" = bindgen ] && features+=(--features bindgen)
  log "building the Kotlin/Swift library (quill-ffi, $profile${2:+, with uniffi-bindgen})"
  (cd "$ROOT" && cargo build --quiet $(profile_flags "$profile") -p quill-ffi "${features[@]}" >&2)
  local dir ext=so
  dir="$(profile_dir "$profile")"
  [ "$(uname -s)" = Darwin ] && ext=dylib
  mkdir -p "$dir/ffi"
  cp "$dir/libquill_ffi.$ext" "$dir/ffi/libquill.$ext.tmp"
  mv "$dir/ffi/libquill.$ext.tmp" "$dir/ffi/libquill.$ext"
}
