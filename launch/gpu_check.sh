#!/usr/bin/env bash
# The GPU pass, for a machine with a GPU and a PyTorch already installed but no network (so
# launch/setup.sh cannot run there): a CUDA build against that PyTorch in build-gpu/, the GPU
# unit tests, `bench layer` on the GPU (with its kernel-by-kernel profile and Chrome traces in
# LOGDIR/profile) and `bench head` (the fused LM head and loss against the unfused), then the
# whole suite (GPU tests run instead of skipping).
#   PYTHON=/opt/torch/.venv/bin/python3 ./launch/gpu_check.sh LOGDIR
# The GPTQ reference imports AutoGPTQ's packer from the archive setup.sh keeps in .venv/sdists;
# it is copied beside PYTHON's venv when present. Logs (configure, build, ctest, bench) go to
# LOGDIR; the exit status is ctest's. After `bench layer` and `bench head` comes `bench quant` on
# the GPU (int8/int4 banks, the grouped GEMM against the slice loop), then the full-size router
# fine-tune against transformers (launch/full_size_check.sh, its table in
# LOGDIR/full_size/full_size.md), the longest stage, last before the suite.
# ARCHIVE=FILE.tgz: after each stage the logs so far (the profiles' Chrome traces aside, which go
# to FILE_traces.tgz once) are packed there, written under a temporary name first: a device
# tool that brings back a few files from its output folder, and a run cut short, still return
# every finished stage's logs.
# Knobs for a short device slot: TARGETS (what to build), GPU_TESTS=0 (no GPU unit tests),
# BENCH=0 (no bench layer or head), LAYER_TOKENS (its token counts, default "8192 32768", issue 18 §2's
# two), FULL_SIZE=0 (no full-size runs), QUANT=0 (no bench quant), FULL_SUITE=0 (no ctest),
# CTEST_ARGS (e.g. "-R train_gpu"). A slot of 15 minutes takes two calls on the same warm
# machine (docs/gpus.md): TARGETS=switchyard GPU_TESTS=0 FULL_SUITE=0 first (the CLI alone
# built, benches, full size), then GPU_TESTS=0 BENCH=0 FULL_SIZE=0 QUANT=0 (the tests built,
# the suite, GPU unit tests included), which reuses build-gpu/.
# Debian packages that machine lacks (its image has no Boost.Program_options) travel as .deb
# files in .gpudeps/ (ignored by git), fetched here with
#   (mkdir -p .gpudeps && cd .gpudeps && apt-get download libboost1.74-dev \
#      libboost-program-options1.74-dev libboost-program-options1.74.0)
# and are unpacked into a private prefix that CMake searches first.
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# An absolute path (a venv's link kept, not resolved): CMake turns a bare `python3` or a relative
# path given to -D for a FILEPATH into one under the current folder, where there is none.
py="$(command -v "${PYTHON:-python3}")" || { echo "gpu_check: no ${PYTHON:-python3}"; exit 1; }
py="$(realpath -s "$py")"
logs="${1:-$repo/build-gpu/logs}"
build="$repo/build-gpu"
mkdir -p "$logs"
logs="$(cd "$logs" && pwd)"
stamp() { echo "[gpu_check $(date +%T)] $*"; }
archive="${ARCHIVE:-}"
pack() {  # $1: what to pack (logs, or traces)
  [ -n "$archive" ] || return 0
  local to="$archive" what=(--exclude='profile_*' "$(basename "$logs")")
  if [ "${1:-logs}" = traces ]; then
    to="${archive%.tgz}_traces.tgz"
    what=()
    for d in "$logs"/profile_*; do [ -d "$d" ] && what+=("$(basename "$logs")/$(basename "$d")"); done
    ((${#what[@]})) || return 0
  fi
  tar czf "$to.part" -C "$(dirname "$logs")" "${what[@]}" && mv "$to.part" "$to"
}

venv="$("$py" -c 'import sys; print(sys.prefix)')"
if [ -d "$repo/.venv/sdists" ] && [ ! -d "$venv/sdists" ]; then
  mkdir -p "$venv/sdists" && cp "$repo"/.venv/sdists/* "$venv/sdists/"
fi

cmake_extra=()
if compgen -G "$repo/.gpudeps/*.deb" >/dev/null; then
  mkdir -p /tmp/gpudeps
  for deb in "$repo"/.gpudeps/*.deb; do dpkg -x "$deb" /tmp/gpudeps; done
  cmake_extra+=(-DBoost_ROOT=/tmp/gpudeps/usr
                -DBoost_DIR=/tmp/gpudeps/usr/lib/x86_64-linux-gnu/cmake/Boost-1.74.0)
fi

stamp "configure ($("$py" -c 'import torch; print("torch", torch.__version__)'))"
export PATH="$PATH:/usr/local/cuda/bin"
# The libFuzzer target needs clang; where there is none it is left out (not built, not run).
clangxx="$(command -v clang++-14 || command -v clang++ || echo /bin/false)"
rm -f "$build/CMakeCache.txt"  # a fresh configure each time: cheap, and no stale package paths
cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSWITCHYARD_PYTHON="$py" \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-90}" -DSWITCHYARD_CLANGXX="$clangxx" "${cmake_extra[@]}" \
  >"$logs/configure.log" 2>&1 || { tail -40 "$logs/configure.log"; pack; exit 1; }
grep -E 'Switchyard:|NCCL|Boost' "$logs/configure.log"

stamp "build"
# shellcheck disable=SC2086  # TARGETS is a list
cmake --build "$build" -j "$(nproc)" --target ${TARGETS:-switchyard switchyard_tests switchyard_mpi_tests} \
  >"$logs/build.log" 2>&1 || { grep -E 'error|FAILED' "$logs/build.log" | head -40; pack; exit 1; }
pack

if [ "${GPU_TESTS:-1}" = 1 ]; then
  stamp "GPU unit tests (with the transformers references they compare against)"
  "$py" "$repo/scripts/hf_qwen2_moe_reference.py" "$build/refs/qwen2_moe" >"$logs/refs.log" 2>&1
  SWITCHYARD_REF_DIR="$build/refs" "$build/bin/switchyard_tests" \
    --gtest_filter='*Gpu*:*Nccl*:*Cuda*' 2>&1 | tee "$logs/gpu_tests.log" |
    grep -E '^\[ +(OK|FAILED|SKIPPED|PASSED) +\]|Failure|error'
  pack
fi

if [ "${BENCH:-1}" = 1 ]; then
  for tokens in ${LAYER_TOKENS:-8192 32768}; do
    stamp "bench layer on the GPU, $tokens tokens"
    "$build/bin/switchyard" bench layer --set bench.device=cuda \
      --set bench.layer_tokens="$tokens" --set bench.layer_repeats=20 \
      --set bench.profile_dir="$logs/profile_$tokens" \
      2>"$logs/bench_layer_$tokens.err" | tee "$logs/bench_layer_$tokens.txt"
  done
  # The LM head and loss at the full-size run's micro-batch: the fused head (what a routers-only
  # step takes on a GPU) against the logits then the loss, time and memory side by side, at the
  # default chunk (441 rows of Qwen's vocabulary, not a multiple of a GEMM tile) and around it.
  stamp "bench head on the GPU, 4096 tokens"
  "$build/bin/switchyard" bench head --set bench.device=cuda --set bench.tokens=4096 \
    --set bench.repeats=10 --set bench.head_chunk_rows="${HEAD_CHUNK_ROWS:-0,256,384,512,1024}" \
    2>"$logs/bench_head.err" | tee "$logs/bench_head.txt"
  pack
  pack traces
fi

if [ "${QUANT:-1}" = 1 ]; then
  # Quantized experts on the GPU: int8/int4 banks against bf16/fp32 ones, forward and with the
  # input gradient; in bf16 the grouped GEMM (one dequantisation kernel per bank) against the
  # slice loop (one per expert), and the dequantisation kernel alone (dequant_us).
  stamp "bench quant on the GPU"
  "$build/bin/switchyard" bench quant --set bench.device=cuda \
    --set bench.quant_tokens="${QUANT_TOKENS:-4096}" --set bench.layer_repeats=10 \
    2>"$logs/bench_quant.err" | tee "$logs/bench_quant.txt"
  pack
fi

if [ "${FULL_SIZE:-1}" = 1 ]; then
  stamp "full-size Qwen1.5-MoE-A2.7B router fine-tuning against transformers"
  PYTHON="$py" "$repo/launch/full_size_check.sh" "$build/bin/switchyard" "$logs/full_size" ||
    stamp "full_size_check failed (its logs: $logs/full_size)"
  pack
fi

[ "${FULL_SUITE:-1}" = 1 ] || { stamp "done (FULL_SUITE=0: no ctest)"; exit 0; }
stamp "ctest"
# CTEST_ARGS narrows the run, e.g. CTEST_ARGS="-R train_gpu" (default: everything but fuzz).
# shellcheck disable=SC2086
# The machine has no clang-format (and no network to install it): `format` reports Skipped.
(cd "$build" && SWITCHYARD_FORMAT_OPTIONAL=1 ctest -j "$(( $(nproc) / 2 ))" ${CTEST_ARGS:--E fuzz} --output-on-failure \
  --timeout "${CTEST_TIMEOUT:-300}") >"$logs/ctest.log" 2>&1
status=$?
grep -E 'tests passed|tests failed|Total Test time|\*\*\*Failed|\*\*\*Timeout' "$logs/ctest.log"
grep -E 'Gpu|Nccl|Cuda' "$logs/ctest.log" | grep -E 'Passed|Skipped|Failed' | head -40
pack

stamp "done"
exit $status
