#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, and runs the main job on 4 MPI
# ranks with the experts sharded across them:
#   (a) unless runs/quickstart/base exists: pretrain a small Qwen2-MoE (4 layers, 8 experts,
#       top-2, shared expert) from scratch on the bundled fortune corpus, saved in the Hugging
#       Face layout;
#   (b) replace its routers with MLP-Hadamard, warm-started by distillation from the original
#       gates, quantize its experts to int4, and fine-tune the routers only;
#   (c) print validation perplexity before and after, and the per-rank load balance.
# Extra arguments go to both `switchyard train` runs (e.g. --set train.steps=20).
# QUICKSTART_DIR moves the outputs (default runs/quickstart).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/launch/setup.sh"
"$repo/launch/build.sh"
cd "$repo"
bin=build/bin/switchyard
out="${QUICKSTART_DIR:-runs/quickstart}"
# Four ranks share this machine's cores: one thread each keeps them from fighting.
export OMP_NUM_THREADS=1
start=$(date +%s)
elapsed() { echo "$(( $(date +%s) - start )) s"; }

echo "== (a) the base model"
./launch/base_model.sh "$out" "$@"
data=(--set "data.train_path=$out/data/train.tok" --set "data.valid_path=$out/data/valid.tok")

echo "== (b) MLP-Hadamard routers, distilled then fine-tuned, int4 experts ($(elapsed) so far)"
rm -rf "$out/finetune"
./launch/mpirun.sh -np 4 "$bin" train --config configs/quickstart/finetune.pbtxt \
  --run-dir "$out/finetune" --set "model.checkpoint=$out/base" "${data[@]}" "$@"

echo "== (c) validation perplexity (metrics.jsonl \"valid\" records)"
.venv/bin/python - "$out" <<'PY'
import json, sys
for run in ("pretrain", "finetune"):
    try:
        lines = open(f"{sys.argv[1]}/{run}/metrics.jsonl")
    except FileNotFoundError:
        continue
    for r in map(json.loads, lines):
        if r["kind"] == "valid":
            print(f"{run:9} step {r['step']:4}  ppl {r['ppl']:9.2f}  {r['phase']}")
PY
echo "quickstart finished in $(elapsed); outputs in $out"
