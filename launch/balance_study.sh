#!/usr/bin/env bash
# Load balancing compared, with one command: the quickstart's base model (made by
# launch/base_model.sh when missing) with its Linear routers starting from the base's gates and
# its experts quantized to int4, the routers alone fine-tuned under 4 ranks (EP 4) with the same
# seed, data and steps, four ways:
#   none      neither the balancing loss nor the expert bias
#   aux       the Switch/GShard balancing loss (router.aux_loss_coef = 0.01)
#   bias      aux-loss-free balancing (router.expert_bias, no balancing loss)
#   aux+bias  both
# Each is evaluated on the same validation blocks (EP 4); prints one Markdown table of validation
# perplexity and per-layer expert max/mean load, and writes a comparison report.
# BALANCE_STEPS (default 100) sets the steps, BALANCE_RATE the bias update rate (default 0.01),
# BALANCE_DIR the output folder (default runs/balance_study), QUICKSTART_DIR where the base lives.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/launch/setup.sh"
"$repo/launch/build.sh"
cd "$repo"
bin=build/bin/switchyard
base_out="${QUICKSTART_DIR:-runs/quickstart}"
out="${BALANCE_DIR:-runs/balance_study}"
steps="${BALANCE_STEPS:-100}"
rate="${BALANCE_RATE:-0.01}"
export OMP_NUM_THREADS=1
start=$(date +%s)
./launch/base_model.sh "$base_out"
mkdir -p "$out"

variant_args() {
  case "$1" in
    none) echo "--set router.aux_loss_coef=0" ;;
    aux) echo "--set router.aux_loss_coef=0.01" ;;
    bias) echo "--set router.aux_loss_coef=0 --set router.expert_bias.update_rate=$rate" ;;
    aux+bias) echo "--set router.aux_loss_coef=0.01 --set router.expert_bias.update_rate=$rate" ;;
  esac
}

reports=() logs=() results=()
for name in none aux bias aux+bias; do
  run="$out/${name/+/_}"
  read -r -a args <<<"$(variant_args "$name")"
  echo "== $name ($(( $(date +%s) - start )) s so far)"
  rm -rf "$run"
  ./launch/mpirun.sh -np 4 "$bin" train --config configs/quickstart/finetune.pbtxt \
    --run-dir "$run" --progress lines --set "model.checkpoint=$base_out/base" \
    --set "data.train_path=$base_out/data/train.tok" --set "data.valid_path=$base_out/data/valid.tok" \
    --set router.linear.init_from_checkpoint=true --set train.distill_steps=0 \
    --set "train.steps=$steps" --set logging.log_interval="$steps" "${args[@]}" >"$run.train.txt"
  ./launch/mpirun.sh -np 4 "$bin" eval --model "$run" --data "$base_out/data/valid.tok" \
    --max-sequences 256 --set parallel.expert_parallel=4 --json "$run.json" >"$run.eval.txt"
  reports+=("$name=$run.json")
  logs+=(--train-log "$name=$run")
  results+=("$name=$run.json")
done
"$bin" report "${reports[@]}" "${logs[@]}" --title "Load balancing: balancing loss vs expert bias" \
  --out "$out/report"
.venv/bin/python - "$steps" "$rate" "${results[@]}" <<'PY'
import json, sys
steps, rate, runs = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = []
for item in runs:
    name, path = item.split("=", 1)
    e = json.load(open(path))
    layers = [l["max_over_mean"] for l in e["layers"]]
    bias = [max(l["expert_bias"]) - min(l["expert_bias"]) for l in e["layers"] if "expert_bias" in l]
    rows.append((name, e["perplexity"], layers, sum(layers) / len(layers),
                 max(bias) if bias else None))
n = len(rows[0][2])
print(f"\n{steps} steps, routers only, EP 4, bias update rate {rate}; validation: 256 blocks\n")
print("| variant | valid ppl | " + " | ".join(f"layer {i} max/mean" for i in range(n)) +
      " | mean max/mean | largest bias range |")
print("|---|---:|" + "---:|" * (n + 2))
for name, ppl, layers, mean, bias in rows:
    print(f"| {name} | {ppl:.3f} | " + " | ".join(f"{v:.3f}" for v in layers) +
          f" | {mean:.3f} | " + (f"{bias:.4f}" if bias is not None else "—") + " |")
PY
echo "balance study finished in $(( $(date +%s) - start )) s; report under $out/report"
