#!/usr/bin/env bash
# Runs a libFuzzer target for a bounded time from the committed seeds (plus a dictionary, or
# "-" for none); fails on any finding and prints the input that caused it.
#   usage: fuzz_test.sh FUZZER SEED_DIR DICT SECONDS
# A finding is copied to ./fuzz_findings/FUZZER/; once fixed it goes into SEED_DIR as a
# regression seed.
set -uo pipefail
fuzzer="$1"; seeds="$2"; dict="$3"; seconds="$4"
# In memory where there is /dev/shm: targets that write files fsync them (save_safetensors).
work="$(mktemp -d -p "$( [ -w /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}")")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$work/tmp"
cp "$seeds"/* "$work/corpus/"
dict_arg=()
[ "$dict" != "-" ] && dict_arg=(-dict="$dict")
# Targets write their inputs to scratch files: keep them in $work, gone even after a crash.
export TMPDIR="$work/tmp"
"$fuzzer" -max_total_time="$seconds" -seed=1 -timeout=10 -rss_limit_mb=2048 "${dict_arg[@]}" \
  -artifact_prefix="$work/" -print_final_stats=1 "$work/corpus" >"$work/log" 2>&1
rc=$?
grep -E '^(stat::number_of_executed_units|stat::new_units_added|Done)' "$work/log" || true
if [ $rc -ne 0 ]; then
  tail -40 "$work/log"
  for f in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*; do
    [ -f "$f" ] || continue
    mkdir -p "fuzz_findings/$(basename "$fuzzer")"
    cp "$f" "fuzz_findings/$(basename "$fuzzer")/"
    echo "finding: $PWD/fuzz_findings/$(basename "$fuzzer")/$(basename "$f")"
    od -A d -c "$f" | head -20
  done
  exit 1
fi
echo "no findings in ${seconds} s"
