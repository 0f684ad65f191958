#!/usr/bin/env bash
# The GPU pass, for a machine with a GPU and a PyTorch already installed but no network (so
# launch/setup.sh cannot run there): a CUDA build against that PyTorch in build-gpu/, the GPU
# unit tests, `bench layer` on the GPU, then the whole suite (GPU tests run instead of skipping).
#   PYTHON=/opt/torch/.venv/bin/python3 ./launch/gpu_check.sh LOGDIR
# The GPTQ reference imports AutoGPTQ's packer from the archive setup.sh keeps in .venv/sdists;
# it is copied beside PYTHON's venv when present. Logs (configure, build, ctest, bench) go to
# LOGDIR; the exit status is ctest's.
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"
logs="${1:-$repo/build-gpu/logs}"
build="$repo/build-gpu"
mkdir -p "$logs"
stamp() { echo "[gpu_check $(date +%T)] $*"; }

venv="$("$py" -c 'import sys; print(sys.prefix)')"
if [ -d "$repo/.venv/sdists" ] && [ ! -d "$venv/sdists" ]; then
  mkdir -p "$venv/sdists" && cp "$repo"/.venv/sdists/* "$venv/sdists/"
fi

stamp "configure ($("$py" -c 'import torch; print("torch", torch.__version__)'))"
export PATH="$PATH:/usr/local/cuda/bin"
# The libFuzzer target needs clang; where there is none it is left out (not built, not run).
clangxx="$(command -v clang++-14 || command -v clang++ || echo /bin/false)"
cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSWITCHYARD_PYTHON="$py" \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90}" -DSWITCHYARD_CLANGXX="$clangxx" \
  >"$logs/configure.log" 2>&1 || { tail -40 "$logs/configure.log"; exit 1; }
grep -E 'Switchyard:|NCCL' "$logs/configure.log"

stamp "build"
cmake --build "$build" -j "$(nproc)" --target switchyard switchyard_tests switchyard_mpi_tests \
  >"$logs/build.log" 2>&1 || { grep -E 'error|FAILED' "$logs/build.log" | head -40; exit 1; }

stamp "GPU unit tests"
"$build/bin/switchyard_tests" --gtest_filter='*Gpu*:*Nccl*:*Cuda*' 2>&1 | tee "$logs/gpu_tests.log" |
  grep -E '^\[ +(OK|FAILED|SKIPPED|PASSED) +\]|Failure|error'

stamp "bench layer on the GPU"
"$build/bin/switchyard" bench layer --set bench.device=cuda \
  --set bench.layer_tokens="${LAYER_TOKENS:-8192}" --set bench.layer_repeats=20 \
  2>"$logs/bench_layer.err" | tee "$logs/bench_layer.txt"

stamp "ctest"
(cd "$build" && ctest -j "$(( $(nproc) / 2 ))" -E fuzz --output-on-failure \
  --timeout "${CTEST_TIMEOUT:-300}") >"$logs/ctest.log" 2>&1
status=$?
grep -E 'tests passed|tests failed|Total Test time|\*\*\*Failed|\*\*\*Timeout' "$logs/ctest.log"
grep -E 'Gpu|Nccl|Cuda' "$logs/ctest.log" | grep -E 'Passed|Skipped|Failed' | head -40

stamp "done"
exit $status
