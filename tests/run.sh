#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test under CTest. CI runs exactly this.
#   ./tests/run.sh              everything
#   ./tests/run.sh -R Fwht      only tests whose name matches (passed through to ctest)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/launch/setup.sh"
"$repo/launch/build.sh"
cd "$repo/build"
jobs=$(nproc)
ctest --output-on-failure --timeout 900 -j "$jobs" "$@"
