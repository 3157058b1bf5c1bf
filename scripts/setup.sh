#!/usr/bin/env bash
# Create .venv with the project, its test tools and llama.cpp's server (built once, cached).
# The llama-cpp-python wheel is cached outside the clone, keyed by version, build flags and
# Python version, and verified by sha256 before reuse.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=${VENV:-.venv}
CACHE=${ITS_MLE_CACHE:-$HOME/.cache/its-mle}
LLAMA_VERSION=0.3.36
# Native builds pick AMX kernels that segfault on these CPUs (see shared/DESIGN.md).
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
# this machine's pip config names index mirrors that may be absent: hide that noise only
quiet_pip() { "$PY" -m pip "$@" 2> >(grep -v "^WARNING: Location" >&2); }
quiet_pip install -q --disable-pip-version-check -e ".[dev]"

pyver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
key=$(printf '%s|%s|%s' "$LLAMA_VERSION" "$LLAMA_CMAKE_ARGS" "$pyver" | sha256sum | cut -c1-12)
wheel_dir="$CACHE/wheels/llama-cpp-python-$LLAMA_VERSION-py$pyver-$key"

wheel_ok() {
  [ -f "$wheel_dir/SHA256SUMS" ] && ls "$wheel_dir"/*.whl >/dev/null 2>&1 \
    && (cd "$wheel_dir" && sha256sum --quiet -c SHA256SUMS)
}

if ! "$PY" -c 'import llama_cpp, llama_cpp.server' >/dev/null 2>&1; then
  if ! wheel_ok; then
    echo "building llama-cpp-python $LLAMA_VERSION (about 5 minutes on 2 cores, cached afterwards)"
    tmp=$(mktemp -d)
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
      quiet_pip wheel -q --no-deps --no-binary llama-cpp-python -w "$tmp" "llama-cpp-python==$LLAMA_VERSION"
    rm -rf "$wheel_dir"; mkdir -p "$wheel_dir"
    mv "$tmp"/*.whl "$wheel_dir"/
    (cd "$wheel_dir" && sha256sum ./*.whl > SHA256SUMS)
    rm -rf "$tmp"
  fi
  whl=$(ls "$wheel_dir"/*.whl | head -n1)
  quiet_pip install -q --disable-pip-version-check "llama-cpp-python[server] @ file://$whl"
fi

# OS packages: bubblewrap (the sandbox), and the data sources of two bundled tasks
# (fortunes-min: fortune-topics; espeak-ng: spoken-digits), chromium + chromium-driver for
# the browser test of tree.html, and postgresql (initdb, pg_ctl) for the Postgres checkpointer's tests
missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
[ -d /usr/share/games/fortunes ] || missing+=(fortunes-min)
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
# PostgreSQL's server binaries (not on PATH in Debian's layout): the Postgres checkpointer's tests
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq "${missing[@]}") >/dev/null 2>&1 \
      || echo "warning: could not install ${missing[*]} (no sandbox isolation / some bundled tasks / tests)"
  else
    echo "warning: missing OS packages ${missing[*]}: install them (apt-get install -y ${missing[*]})"
    echo "         without bubblewrap scripts run without isolation; two bundled tasks need the others"
  fi
fi
touch "$VENV/.setup-done"
