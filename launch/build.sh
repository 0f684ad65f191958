#!/usr/bin/env bash
# Configures (once) and builds Switchyard into build/, binary at build/bin/switchyard.
# CUDA sources are compiled whenever nvcc is found; SWITCHYARD_WITH_CUDA=OFF turns that off.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$repo/build"
export CCACHE_BASEDIR="$repo" CCACHE_SLOPPINESS="pch_defines,time_macros,include_file_mtime,include_file_ctime"
if [ ! -f "$build/build.ninja" ]; then
  export PATH="$PATH:/usr/local/cuda/bin"
  cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DSWITCHYARD_WITH_CUDA="${SWITCHYARD_WITH_CUDA:-ON}" >"$repo/build.configure.log" 2>&1 || {
    cat "$repo/build.configure.log" >&2; echo "[build] cmake configure failed" >&2; exit 1; }
  grep -E 'Switchyard:|NCCL' "$repo/build.configure.log" | sed 's/^-- /[build] /' || true
fi
cmake --build "$build" -j "$(nproc)"
