#!/usr/bin/env bash
# Runs a libFuzzer target for a bounded time from the committed seeds (plus the dictionary);
# fails on any finding and prints the input that caused it.
#   usage: fuzz_test.sh FUZZER SEED_DIR DICT SECONDS
set -uo pipefail
fuzzer="$1"; seeds="$2"; dict="$3"; seconds="$4"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus"
cp "$seeds"/* "$work/corpus/"
"$fuzzer" -max_total_time="$seconds" -seed=1 -timeout=10 -rss_limit_mb=2048 -dict="$dict" \
  -artifact_prefix="$work/" -print_final_stats=1 "$work/corpus" >"$work/log" 2>&1
rc=$?
grep -E '^(stat::number_of_executed_units|stat::new_units_added|Done)' "$work/log" || true
if [ $rc -ne 0 ]; then
  tail -40 "$work/log"
  for f in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*; do
    [ -f "$f" ] && { echo "finding: $f"; od -A d -c "$f" | head -20; }
  done
  exit 1
fi
echo "no findings in ${seconds} s"
