#!/usr/bin/env bash
# Installs what Switchyard needs on a fresh Debian machine, and nothing twice: Debian packages
# (MPI, Boost, protobuf, GoogleTest, ccache, the fortune corpus) and a git-ignored Python venv at
# .venv holding the pinned torch wheel (whose CMake package is our LibTorch) plus the Hugging Face
# references.
# Idempotent: a second run checks stamps and returns in about a second.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

log() { printf '[setup] %s\n' "$*"; }

# ---- Debian packages ------------------------------------------------------------------------
apt_packages=(openmpi-bin libopenmpi-dev libboost-program-options-dev protobuf-compiler
              libprotobuf-dev libgtest-dev nlohmann-json3-dev cmake ninja-build ccache python3-venv
              clang libclang-rt-dev clang-format)  # clang: the libFuzzer target; clang-format: the format test
# The training corpus: fortune cookie databases in 13 languages under /usr/share/games/fortunes
# (data/fortune_corpus.h names what is read from each; the offensive -off packages are not
# installed).
apt_packages+=(fortunes fortunes-min fortunes-de fortunes-es fortunes-it fortunes-ru fortunes-zh
               fortunes-pl fortunes-cs fortunes-br fortunes-bg fortunes-eo fortunes-ga)
# Headless Chromium: the test that opens `switchyard report`'s HTML the way a reader would.
apt_packages+=(chromium)
# Slurm and MUNGE: the sbatch templates run on a private one-node cluster that the slurm_cluster
# test starts and stops itself (tests/slurm_cluster_test.sh).
apt_packages+=(slurmctld slurmd slurm-client munge)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  # Daemons (munge, slurmctld, slurmd) are installed, not started: a policy-rc.d that refuses
  # every start (exit 101) is in place during the install unless the machine has its own.
  policy=/usr/sbin/policy-rc.d own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo_cmd tee "$policy" >/dev/null
    $sudo_cmd chmod +x "$policy"; own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
  if ((own_policy)); then $sudo_cmd rm -f "$policy"; fi
fi

# ---- Python venv with the pinned wheels ------------------------------------------------------
venv="$repo/.venv"
req="$repo/launch/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ]; then
  log "creating virtual environment $venv"
  python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing pinned Python packages (first run downloads the torch wheel, a few GB)"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q --progress-bar off -r "$req"
  echo "$want" >"$stamp"
fi
# AutoGPTQ's packing code is the independent reference for our GPTQ unpacking
# (scripts/hf_gptq_reference.py). Its wheel needs CUDA extensions, so only the source archive is
# fetched (BUILD_CUDA_EXT=0 lets pip read its metadata without compiling anything).
gptq_sdist="$venv/sdists/auto_gptq-0.7.1.tar.gz"
if [ ! -f "$gptq_sdist" ]; then
  log "downloading the AutoGPTQ 0.7.1 source archive (test reference)"
  BUILD_CUDA_EXT=0 "$venv/bin/python" -m pip download -q --no-deps --no-build-isolation \
    --no-binary :all: -d "$venv/sdists" auto-gptq==0.7.1
fi
log "ready ($(cat "$stamp" | cut -c1-12))"
