#!/usr/bin/env bash
# The router comparison, reproduced with one command: from the quickstart's base model (made by
# launch/base_model.sh when missing) and the fortune corpus, the six routers are put into every
# MoE layer with the experts quantized to int4, trained with the same seed, data and steps
# (routers only), evaluated on the same validation blocks under 4 ranks (EP 4), and compared in
# one report (HTML + Markdown with load heatmaps and loss curves).
#   Linear        starts from the base's gate and is fine-tuned
#   Hash          has no parameters: evaluated as it is
#   the others    warm-started by distillation from the base's gate, then fine-tuned; and
#   mlp_hadamard_fresh: MLP-Hadamard fine-tuned without the warm start, to measure what it buys
# The BERT-MoE half does the same on sequence classification (the corpus's languages): a small
# BERT-MoE classifier trained from scratch (launch/classifier_model.sh), its routers replaced
# and trained alone (Linear continues from the trained gate, the others start fresh), compared
# by accuracy and macro-F1 in a second report.
# STUDY_STEPS (default 60) sets the steps per router, STUDY_DIR the output folder (default
# runs/router_study), QUICKSTART_DIR where the base models live (default runs/quickstart),
# STUDY_MODELS which halves run (default "qwen bert").
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/launch/setup.sh"
"$repo/launch/build.sh"
cd "$repo"
bin=build/bin/switchyard
base_out="${QUICKSTART_DIR:-runs/quickstart}"
out="${STUDY_DIR:-runs/router_study}"
steps="${STUDY_STEPS:-60}"
export OMP_NUM_THREADS=1
start=$(date +%s)

models="${STUDY_MODELS:-qwen bert}"
mkdir -p "$out"

# Each router's settings, shared by both halves (distillation applies to the Qwen half only).
router_args() {
  case "$1" in
    linear) echo "--set router.linear.init_from_checkpoint=true" ;;
    attention) echo "--set router.attention.num_heads=2 --set router.attention.head_dim=32" ;;
    mlp) echo "--set router.mlp.hidden=64" ;;
    hybrid) echo "--set router.hybrid.mlp_hidden=64" ;;
    mlp_hadamard|mlp_hadamard_fresh) echo "--set router.mlp_hadamard.hidden=64" ;;
    hash) echo "--set router.hash.seed=0" ;;
  esac
}

qwen_half() {
  ./launch/base_model.sh "$base_out"
  local data=(--set "data.train_path=$base_out/data/train.tok"
              --set "data.valid_path=$base_out/data/valid.tok")
  local eval_args=(--data "$base_out/data/valid.tok" --max-sequences 256
                   --set parallel.expert_parallel=4)
  local reports=() logs=()
  for name in linear attention mlp hybrid mlp_hadamard mlp_hadamard_fresh hash; do
    distill=$(( steps / 3 ))
    read -r -a router <<<"$(router_args "$name")"
    case "$name" in linear|mlp_hadamard_fresh) distill=0 ;; esac
    echo "== $name ($(( $(date +%s) - start )) s so far)"
    if [ "$name" = hash ]; then
      ./launch/mpirun.sh -np 4 "$bin" eval --model "$base_out/base" \
        --config configs/quickstart/finetune.pbtxt "${router[@]}" "${eval_args[@]}" \
        --json "$out/$name.json" >"$out/$name.eval.txt"
    else
      rm -rf "$out/$name"
      ./launch/mpirun.sh -np 4 "$bin" train --config configs/quickstart/finetune.pbtxt \
        --run-dir "$out/$name" --progress lines --set "model.checkpoint=$base_out/base" \
        "${data[@]}" "${router[@]}" --set "train.steps=$steps" --set "train.distill_steps=$distill" \
        --set train.warmup_steps=5 --set logging.log_interval="$steps" >"$out/$name.train.txt"
      ./launch/mpirun.sh -np 4 "$bin" eval --model "$out/$name" "${eval_args[@]}" \
        --json "$out/$name.json" >"$out/$name.eval.txt"
      logs+=(--train-log "$name=$out/$name")
    fi
    reports+=("$name=$out/$name.json")
  done
  "$bin" report "${reports[@]}" "${logs[@]}" --title "Router study: six routers on the quickstart base" \
    --out "$out/report"
}

bert_half() {
  ./launch/classifier_model.sh "$base_out"
  local valid="$base_out/data/valid.jsonl"
  local eval_args=(--data "$valid" --max-sequences 1024 --set parallel.expert_parallel=4)
  local reports=() logs=()
  for name in linear attention mlp hybrid mlp_hadamard hash; do
    read -r -a router <<<"$(router_args "$name")"
    echo "== bert $name ($(( $(date +%s) - start )) s so far)"
    if [ "$name" = hash ]; then
      ./launch/mpirun.sh -np 4 "$bin" eval --model "$base_out/classifier" \
        --config configs/classifier/finetune.pbtxt "${router[@]}" "${eval_args[@]}" \
        --json "$out/bert_$name.json" >"$out/bert_$name.eval.txt"
    else
      rm -rf "$out/bert_$name"
      ./launch/mpirun.sh -np 4 "$bin" train --config configs/classifier/finetune.pbtxt \
        --run-dir "$out/bert_$name" --progress lines --set "model.checkpoint=$base_out/classifier" \
        --set "data.train_path=$base_out/data/train.jsonl" --set "data.valid_path=$valid" \
        "${router[@]}" --set "train.steps=$steps" --set logging.log_interval="$steps" \
        >"$out/bert_$name.train.txt"
      ./launch/mpirun.sh -np 4 "$bin" eval --model "$out/bert_$name" "${eval_args[@]}" \
        --json "$out/bert_$name.json" >"$out/bert_$name.eval.txt"
      logs+=(--train-log "$name=$out/bert_$name")
    fi
    reports+=("$name=$out/bert_$name.json")
  done
  "$bin" report "${reports[@]}" "${logs[@]}" \
    --title "Router study: six routers in a BERT-MoE language classifier" --out "$out/bert_report"
}

for half in $models; do
  case "$half" in
    qwen) qwen_half ;;
    bert) bert_half ;;
    *) echo "STUDY_MODELS: unknown half '$half' (qwen, bert)" >&2; exit 2 ;;
  esac
done
echo "router study finished in $(( $(date +%s) - start )) s; reports under $out/"

