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

# One half of the study: each router put into BASE with CONFIG and trained for $steps steps on
# TRAIN (Hash has nothing to train: evaluated as it is), evaluated on VALID under 4 ranks, then
# one report in $out/REPORT. With WARM=1 the new routers (all but Linear and
# mlp_hadamard_fresh) are distilled from the base's gates for a third of the steps.
#   study_half TAG CONFIG BASE TRAIN VALID MAX_SEQUENCES WARM REPORT TITLE ROUTER...
study_half() {
  local tag="$1" config="$2" base="$3" train="$4" valid="$5" max="$6" warm="$7" report="$8"
  local title="$9"
  shift 9
  local eval_args=(--data "$valid" --max-sequences "$max" --set parallel.expert_parallel=4)
  local reports=() logs=()
  for name in "$@"; do
    local run="$out/$tag$name" distill=0 router
    read -r -a router <<<"$(router_args "$name")"
    case "$name" in linear|mlp_hadamard_fresh|hash) ;; *) [ "$warm" = 1 ] && distill=$(( steps / 3 )) ;; esac
    echo "== $tag$name ($(( $(date +%s) - start )) s so far)"
    if [ "$name" = hash ]; then
      ./launch/mpirun.sh -np 4 "$bin" eval --model "$base" --config "$config" "${router[@]}" \
        "${eval_args[@]}" --json "$run.json" >"$run.eval.txt"
    else
      rm -rf "$run"
      ./launch/mpirun.sh -np 4 "$bin" train --config "$config" --run-dir "$run" --progress lines \
        --set "model.checkpoint=$base" --set "data.train_path=$train" \
        --set "data.valid_path=$valid" "${router[@]}" --set "train.steps=$steps" \
        --set "train.distill_steps=$distill" --set train.warmup_steps=5 \
        --set logging.log_interval="$steps" >"$run.train.txt"
      ./launch/mpirun.sh -np 4 "$bin" eval --model "$run" "${eval_args[@]}" --json "$run.json" \
        >"$run.eval.txt"
      logs+=(--train-log "$name=$run")
    fi
    reports+=("$name=$run.json")
  done
  "$bin" report "${reports[@]}" "${logs[@]}" --title "$title" --out "$out/$report"
}

qwen_half() {
  ./launch/base_model.sh "$base_out"
  study_half "" configs/quickstart/finetune.pbtxt "$base_out/base" "$base_out/data/train.tok" \
    "$base_out/data/valid.tok" 256 1 report "Router study: six routers on the quickstart base" \
    linear attention mlp hybrid mlp_hadamard mlp_hadamard_fresh hash
}

# The classifier's validation texts: all 4947 of them.
bert_half() {
  ./launch/classifier_model.sh "$base_out"
  study_half bert_ configs/classifier/finetune.pbtxt "$base_out/classifier" \
    "$base_out/data/train.jsonl" "$base_out/data/valid.jsonl" 0 0 bert_report \
    "Router study: six routers in a BERT-MoE language classifier" \
    linear attention mlp hybrid mlp_hadamard hash
}

for half in $models; do
  case "$half" in
    qwen) qwen_half ;;
    bert) bert_half ;;
    *) echo "STUDY_MODELS: unknown half '$half' (qwen, bert)" >&2; exit 2 ;;
  esac
done
echo "router study finished in $(( $(date +%s) - start )) s; reports under $out/"

