#!/usr/bin/env bash
# The BERT-MoE classifier the router study's second half starts from, made once: the fortune
# corpus prepared into OUT/data (labelled OUT/data/{train,valid,test}.jsonl next to the token
# files), then a small BERT-MoE (4 layers, 8 experts, top-2) trained from scratch under 4 MPI
# ranks to tell the corpus's languages apart, its run folder OUT/classifier. Skips whatever
# already exists.
#   launch/classifier_model.sh OUT [extra `switchyard train` arguments]
# Expects a built tree (launch/build.sh) and runs from the repository root.
set -euo pipefail
out="$1"; shift
bin=build/bin/switchyard
./launch/prepare_corpus.sh "$out"
if [ ! -f "$out/classifier/checkpoints/latest" ]; then
  echo "== training the BERT-MoE classifier from scratch (configs/classifier/train.pbtxt)"
  rm -rf "$out/classifier"
  ./launch/mpirun.sh -np 4 "$bin" train --config configs/classifier/train.pbtxt \
    --run-dir "$out/classifier" --progress lines \
    --set "data.train_path=$out/data/train.jsonl" --set "data.valid_path=$out/data/valid.jsonl" "$@"
else
  echo "== classifier found in $out/classifier (delete it to train again)"
fi
