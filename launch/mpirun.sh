#!/usr/bin/env bash
# mpirun with the flags Switchyard needs on a single machine or in a container:
#   ./launch/mpirun.sh -np 4 build/bin/switchyard train --config configs/X.pbtxt
# Oversubscription is allowed (more ranks than cores, as tests do), running as root is allowed
# (containers, CI), and shared-memory transport avoids CMA, which containers often forbid.
set -euo pipefail
extra=(--oversubscribe --bind-to none --mca btl self,vader --mca btl_vader_single_copy_mechanism none)
[ "$(id -u)" -eq 0 ] && extra+=(--allow-run-as-root)
exec mpirun "${extra[@]}" "$@"
