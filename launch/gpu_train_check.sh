#!/usr/bin/env bash
# Training on the GPU machine, after launch/gpu_check.sh built build-gpu/: the quickstart's
# pretraining config side by side on the GPU (bf16 autocast and fp32, one rank; bf16 with four
# ranks sharing the GPU) and on the CPU (four ranks), a table of median tokens/s and losses;
# then the quickstart's main job on one GPU (pretrain from scratch, export, MLP-Hadamard routers
# distilled and fine-tuned on int4 experts) with its validation perplexities.
#   launch/gpu_train_check.sh DATA_DIR LOGDIR      (DATA_DIR: train.tok and valid.tok)
# That machine cannot run setup.sh, so the token files travel with the tree (runs/ is ignored).
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="$1" logs="$2"
bin="$repo/build-gpu/bin/switchyard"
py="${PYTHON:-python3}"
steps="${SIDE_BY_SIDE_STEPS:-60}"
mkdir -p "$logs"
cd "$repo"
stamp() { echo "[gpu_train_check $(date +%T)] $*"; }
paths=(--set "data.train_path=$data/train.tok" --set "data.valid_path=$data/valid.tok")
export OMP_NUM_THREADS=4  # four CPU ranks on 16 cores

# Run folders go to WORK; LOGDIR gets each run's output and metrics.jsonl only.
work="${WORK:-/tmp/gpu_train_check}"
rm -rf "$work" && mkdir -p "$work"
side_by_side() {  # NAME NP ARGS...
  local name="$1" np="$2"; shift 2
  stamp "$name: $np rank(s), $steps steps"
  "$repo/launch/mpirun.sh" -np "$np" "$bin" train --config configs/quickstart/pretrain.pbtxt \
    --run-dir "$work/$name" "${paths[@]}" --set train.steps="$steps" \
    --set parallel.expert_parallel="$np" --set train.eval_interval=0 --set logging.tensorboard=false \
    "$@" >"$logs/$name.out" 2>&1
  local rc=$?
  cp "$work/$name/metrics.jsonl" "$logs/$name.metrics.jsonl" 2>/dev/null
  [ "$rc" -eq 0 ] || { grep -v "^ " "$logs/$name.out" | grep -iE "error|rank|abort" | head -5; return 1; }
  grep -m1 "^training " "$logs/$name.out"
}
# table RUN... -- A/B... : tokens/s (the world's: rank rates summed, median of steps 6+), the
# losses and the last validation of each run that finished, then the throughput ratios A/B.
table() {
  "$py" - "$logs" "$steps" "$@" <<'PY'
import json, statistics, sys
logs, steps, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
names, ratios = args[:args.index("--")], args[args.index("--") + 1:]
print(f"{'run':14} {'tokens/s':>10} {'loss step 1':>12} {'loss step %d' % steps:>13} {'valid ppl':>10}")
rate = {}
for name in names:
    try:
        recs = [json.loads(l) for l in open(f"{logs}/{name}.metrics.jsonl")]
    except FileNotFoundError:
        recs = []
    loss = {r["step"]: r for r in recs if r["kind"] == "loss" and r["rank"] == 0}
    if steps not in loss:
        print(f"{name:14} (did not finish)")
        continue
    world = {}
    for r in recs:
        if r["kind"] == "loss" and r["step"] > 5:
            world[r["step"]] = world.get(r["step"], 0) + r["tokens_per_s"]
    valid = [r for r in recs if r["kind"] == "valid"]
    rate[name] = statistics.median(world.values())
    print(f"{name:14} {rate[name]:10.0f} {loss[1]['loss']:12.4f} {loss[steps]['loss']:13.4f} "
          f"{valid[-1]['ppl']:10.2f}")
for ratio in ratios:
    a, b = ratio.split("/")
    if a in rate and b in rate:
        print(f"{a} / {b}: {rate[a] / rate[b]:.2f}x")
PY
}

# The global batch is the same in every run: 16 sequences of 128 tokens per step.
side_by_side gpu_bf16 1 --set parallel.device=cuda --set train.micro_batch_size=16
side_by_side gpu_fp32 1 --set parallel.device=cuda --set train.micro_batch_size=16 \
  --set train.precision=PRECISION_FP32
side_by_side gpu_bf16_np4 4 --set parallel.device=cuda --set train.micro_batch_size=4
side_by_side cpu_fp32_np4 4 --set parallel.device=cpu --set train.micro_batch_size=4

table gpu_bf16 gpu_fp32 gpu_bf16_np4 cpu_fp32_np4 -- gpu_bf16/cpu_fp32_np4 gpu_bf16/gpu_fp32

# A wider model (hidden 1024, 8 layers, 16 experts of width 1024, the corpus's 8192 ids)
# where the GPU has work to do: bf16 autocast against fp32.
"$py" - "$work/wide.json" <<'PY'
import json, sys
c = json.load(open("configs/quickstart/base_model.json"))
c.update(hidden_size=1024, intermediate_size=4096, moe_intermediate_size=1024,
         shared_expert_intermediate_size=2048, num_hidden_layers=8, num_attention_heads=16,
         num_key_value_heads=4, num_experts=16)
json.dump(c, open(sys.argv[1], "w"))
PY
wide=(--set "model.init_config=$work/wide.json" --set train.micro_batch_size=16
      --set parallel.device=cuda --set train.eval_blocks=16)
side_by_side wide_gpu_bf16 1 "${wide[@]}"
side_by_side wide_gpu_fp32 1 "${wide[@]}" --set train.precision=PRECISION_FP32
table wide_gpu_bf16 wide_gpu_fp32 -- wide_gpu_bf16/wide_gpu_fp32

stamp "the quickstart's job on one GPU"
out="$work/quickstart"
start=$(date +%s)
"$bin" train --config configs/quickstart/pretrain.pbtxt --run-dir "$out/pretrain" \
  --export-hf "$out/base" "${paths[@]}" --set parallel.expert_parallel=1 \
  --set train.micro_batch_size=16 --progress lines >"$logs/quickstart_pretrain.out" 2>&1 ||
  { tail -5 "$logs/quickstart_pretrain.out"; exit 1; }
"$bin" train --config configs/quickstart/finetune.pbtxt --run-dir "$out/finetune" \
  --set "model.checkpoint=$out/base" "${paths[@]}" --set parallel.expert_parallel=1 \
  --set train.micro_batch_size=16 --progress lines >"$logs/quickstart_finetune.out" 2>&1 ||
  { tail -5 "$logs/quickstart_finetune.out"; exit 1; }
grep -h -E "^training |valid ppl" "$logs"/quickstart_{pretrain,finetune}.out
echo "quickstart on one GPU: $(( $(date +%s) - start )) s"
stamp "done"
