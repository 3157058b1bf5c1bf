#!/usr/bin/env bash
# Build llama.cpp's native OpenAI-compatible server (`llama-server`, with parallel slots) from the
# llama.cpp source vendored in the llama-cpp-python sdist, once; cache it outside the clone.
#
#   scripts/build_llama_server.sh        # prints the binary's path as its last stdout line
#
# Cache: ${ITS_MLE_CACHE:-$HOME/.cache/its-mle}/llama-server/<version>-<key>/bin/llama-server,
# <key> = 12 hex digits of sha256(version|cmake flags), with a SHA256SUMS file next to bin/.
# A rerun verifies the hash and skips the build. Only a benchmark needs this binary: tests
# skip without it and CI never builds it (about 5-10 minutes of both cores here).
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${ITS_MLE_CACHE:-$HOME/.cache/its-mle}
LLAMA_VERSION=0.3.36  # llama-cpp-python sdist that vendors llama.cpp
# Native builds pick AMX kernels that segfault on these CPUs (see shared/DESIGN.md). No curl,
# no OpenSSL, no web UI download: the server only talks plain HTTP on loopback here.
LLAMA_CMAKE_ARGS="-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON \
-DGGML_F16C=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF \
-DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF"
JOBS=${ITS_MLE_BUILD_JOBS:-2}

key=$(printf '%s|%s' "$LLAMA_VERSION" "$LLAMA_CMAKE_ARGS" | sha256sum | cut -c1-12)
root="$CACHE/llama-server"
dir="$root/$LLAMA_VERSION-$key"
bin="$dir/bin/llama-server"

binary_ok() {
  [ -x "$bin" ] && [ -f "$dir/SHA256SUMS" ] && (cd "$dir" && sha256sum --quiet -c SHA256SUMS) >/dev/null 2>&1
}

mkdir -p "$root"
exec 9>"$root/.lock"
flock 9  # one build at a time; a second caller waits, then reuses the first one's binary

if binary_ok; then
  echo "$bin"
  exit 0
fi
[ -e "$dir" ] && echo "cached llama-server in $dir fails its hash check: rebuilding" >&2

for tool in cmake c++ sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is required to build llama-server" >&2; exit 2; }
done
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
# this machine's pip config names index mirrors that may be absent: hide that noise only
quiet_pip() { "$PY" -m pip "$@" 2> >(grep -v "^WARNING: Location" >&2); }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/llama-server-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
t0=$(date +%s)
echo "fetching llama-cpp-python $LLAMA_VERSION sdist (pip cache)" >&2
quiet_pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
  -d "$tmp" "llama-cpp-python==$LLAMA_VERSION" >&2
tar -xzf "$tmp"/llama_cpp_python-"$LLAMA_VERSION".tar.gz -C "$tmp"
src="$tmp/llama_cpp_python-$LLAMA_VERSION/vendor/llama.cpp"
[ -f "$src/CMakeLists.txt" ] || { echo "error: no vendor/llama.cpp in the sdist" >&2; exit 2; }

gen=()
command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
echo "building llama-server (about 5-10 minutes on 2 cores, cached afterwards)" >&2
# shellcheck disable=SC2086  # the flags are meant to split
cmake -S "$src" -B "$tmp/build" "${gen[@]}" $LLAMA_CMAKE_ARGS >"$tmp/configure.log" 2>&1 \
  || { tail -n 30 "$tmp/configure.log" >&2; exit 1; }
cmake --build "$tmp/build" --target llama-server -j "$JOBS" >"$tmp/build.log" 2>&1 \
  || { tail -n 40 "$tmp/build.log" >&2; exit 1; }
built="$tmp/build/bin/llama-server"
"$built" --version >"$tmp/version.txt" 2>&1 || { cat "$tmp/version.txt" >&2; exit 1; }

stage="$root/.stage-$key.$$"
rm -rf "$stage"
mkdir -p "$stage/bin"
cp "$built" "$stage/bin/llama-server"
chmod 755 "$stage/bin/llama-server"
{
  echo "llama-cpp-python sdist: $LLAMA_VERSION"
  echo "cmake flags: $LLAMA_CMAKE_ARGS"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(($(date +%s) - t0)) s"
  cat "$tmp/version.txt"
} >"$stage/BUILD_INFO"
(cd "$stage" && sha256sum bin/llama-server >SHA256SUMS)
rm -rf "$dir"
mv "$stage" "$dir"
binary_ok || { echo "error: installed binary fails its hash check: $dir" >&2; exit 1; }
echo "built llama-server in $(($(date +%s) - t0)) s" >&2
echo "$bin"
