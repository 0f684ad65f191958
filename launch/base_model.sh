#!/usr/bin/env bash
# The base model the quickstart and the router study start from, made once: the fortune corpus
# prepared into OUT/data/{train,valid,test}.{tok,jsonl}, then a small Qwen2-MoE (4 layers, 8 experts,
# top-2, shared expert) pretrained from scratch on it under 4 MPI ranks, experts sharded, and
# exported to OUT/base in the Hugging Face layout. Skips whatever already exists.
#   launch/base_model.sh OUT [extra `switchyard train` arguments]
# Expects a built tree (launch/build.sh) and runs from the repository root.
set -euo pipefail
out="$1"; shift
bin=build/bin/switchyard
./launch/prepare_corpus.sh "$out"
if [ ! -f "$out/base/config.json" ]; then
  echo "== pretraining the base model from scratch (configs/quickstart/pretrain.pbtxt)"
  rm -rf "$out/pretrain"
  ./launch/mpirun.sh -np 4 "$bin" train --config configs/quickstart/pretrain.pbtxt \
    --run-dir "$out/pretrain" --export-hf "$out/base" \
    --set "data.train_path=$out/data/train.tok" --set "data.valid_path=$out/data/valid.tok" "$@"
else
  echo "== base model found in $out/base (delete it to pretrain again)"
fi
