#!/usr/bin/env bash
# The fortune corpus prepared once into OUT/data: token files {train,valid,test}.tok for causal
# LMs and the labelled texts {train,valid,test}.jsonl for classifiers (`switchyard data
# prepare`). Skipped when both are there.
#   launch/prepare_corpus.sh OUT      (from the repository root, on a built tree)
set -euo pipefail
out="$1"
if [ ! -f "$out/data/valid.tok" ] || [ ! -f "$out/data/valid.jsonl" ]; then
  echo "== preparing the fortune corpus into $out/data"
  build/bin/switchyard data prepare --out "$out/data"
fi
