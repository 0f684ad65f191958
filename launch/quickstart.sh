#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, and runs the main job.
# For now the main job is the router comparison (`switchyard bench routers`); the trainer issue
# turns it into router fine-tuning under mpirun.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/launch/setup.sh"
"$repo/launch/build.sh"
"$repo/build/bin/switchyard" info
echo
exec "$repo/build/bin/switchyard" bench routers --config "$repo/configs/bench_routers.pbtxt" "$@"
