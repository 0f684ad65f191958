#!/usr/bin/env bash
# `switchyard plan` against measured runs on this machine, with one command. Three workloads,
# each trained for CALIBRATION_STEPS steps (default 6) at EP 1, 2 and 4 (one rank per EP rank,
# OMP threads = 2 cores / ranks) and planned with the same config and the run's own expert loads:
#   small_ro     the quickstart base (hidden 128, 4 layers, 8 experts), MLP-Hadamard routers
#                only, int4 experts (configs/quickstart/finetune.pbtxt); 4x the steps, since
#                its steps of a tenth of a second vary the most
#   medium_full  a Qwen2-MoE of hidden 1024, 8 layers, 16 experts top-4 (503 M parameters) built
#                from scratch, every parameter trained in fp32 (AdamW on all of it)
#   medium_ro    the same model (its weights after one step) with int4 experts, routers only
#   a27b_ro      Qwen1.5-MoE-A2.7B at full size from a GPTQ-Int4 checkpoint in the hub layout
#                (random numbers, scripts/random_gptq_checkpoint.py, 8.4 GB, made when missing),
#                MLP-Hadamard routers only, bf16, 1 x 128 tokens, 3 steps, at EP 1 and 2 only:
#                at EP 4 the plan says it does not fit in this machine's 24 GiB (a run would be
#                killed by the kernel rather than measured)
# Prints predicted (the larger of training's and loading's peak) vs measured peak RSS per rank
# (the largest over ranks and steps) and step time
# (median of the steps after the first), the step's terms against the phase_ms of the rank with
# the most expert time, and writes
# them to CALIBRATION_DIR/calibration.json
# (default runs/plan_calibration). QUICKSTART_DIR is where the base lives (made when missing);
# CALIBRATION_REUSE=1 keeps runs already measured and only plans again.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/launch/setup.sh"
"$repo/launch/build.sh"
cd "$repo"
bin=build/bin/switchyard
base_out="${QUICKSTART_DIR:-runs/quickstart}"
out="${CALIBRATION_DIR:-runs/plan_calibration}"
steps="${CALIBRATION_STEPS:-6}"
cores=$(nproc)
./launch/base_model.sh "$base_out"
mkdir -p "$out"
data=(--set "data.train_path=$base_out/data/train.tok" --set data.valid_path=
      --set "train.steps=$steps" --set logging.log_interval=1 --set logging.tensorboard=false)

# The medium model: the quickstart base's config.json, wider and deeper.
"$repo/.venv/bin/python" - "$base_out/base/config.json" "$out/medium.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c.update(hidden_size=1024, intermediate_size=2816, moe_intermediate_size=1024,
         shared_expert_intermediate_size=2048, num_hidden_layers=8, num_attention_heads=8,
         num_key_value_heads=8, num_experts=16, num_experts_per_tok=4)
json.dump(c, open(sys.argv[2], "w"), indent=2)
PY
if [ ! -f "$out/medium_base/config.json" ]; then
  echo "== the medium model's weights: one step from scratch, exported"
  rm -rf "$out/medium_init"
  OMP_NUM_THREADS=$cores "$bin" train --config configs/quickstart/pretrain.pbtxt \
    --run-dir "$out/medium_init" --export-hf "$out/medium_base" --progress lines \
    --set "model.init_config=$out/medium.json" --set parallel.expert_parallel=1 \
    "${data[@]}" --set train.steps=1 >"$out/medium_init.txt"
fi

case_args() {  # NAME -> the config arguments train and plan share
  case "$1" in
    small_ro) echo "--config configs/quickstart/finetune.pbtxt --set model.checkpoint=$base_out/base
                    --set train.distill_steps=0 --set train.steps=$((steps * 4))" ;;
    medium_full) echo "--config configs/quickstart/pretrain.pbtxt --set model.init_config=$out/medium.json" ;;
    medium_ro) echo "--config configs/quickstart/finetune.pbtxt --set model.checkpoint=$out/medium_base
                     --set train.distill_steps=0" ;;
    a27b_ro) echo "--config configs/quickstart/finetune.pbtxt --set model.checkpoint=$out/a27b_gptq
                   --set train.distill_steps=0 --dtype bfloat16 --set train.micro_batch_size=1
                   --set train.steps=8" ;;
  esac
}
eps_of() { [ "$1" = a27b_ro ] && echo "1 2" || echo "1 2 4"; }
if [ ! -f "$out/a27b_gptq/config.json" ]; then
  echo "== a full-size GPTQ-Int4 Qwen1.5-MoE-A2.7B checkpoint from random numbers"
  .venv/bin/python scripts/random_gptq_checkpoint.py "$out/a27b_gptq"
fi
model_of() {
  case "$1" in
    small_ro) echo "$base_out/base" ;;
    medium_full) echo "$out/medium.json" ;;
    medium_ro) echo "$out/medium_base" ;;
    a27b_ro) echo "$out/a27b_gptq" ;;
  esac
}

# The experts' quantization and the activations' dtype, for the rates' dequantisation and LM head
# probes: the finetune config's int4 (symmetric, group 128); the GPTQ checkpoint's int4
# (asymmetric, group 128) under bf16; none for full training.
rates_args_of() {
  case "$1" in
    medium_full) ;;
    a27b_ro) echo "--quant int4 --set model.quant.symmetric=false --set train.precision=PRECISION_BF16" ;;
    *) echo "--quant int4" ;;
  esac
}
# The rates plan uses, measured by `bench rates` with the ranks and threads of each EP size,
# right after each run (this machine's speed drifts by tens of percent over minutes), with the
# workload's expert shape, vocabulary, micro-batch tokens and rates_args_of, and with the bank
# probe's rows given to the share of experts that got rows in the run (a GEMM's speed depends on
# its rows per expert). CALIBRATION_RATES=preset: the `cpu` preset's own rates instead.
threads_at() { local t=$(( cores / $1 )); [ "$t" -ge 1 ] || t=1; echo "$t"; }
measure_rates() {  # NAME NP [MODEL [ACTIVE_SHARE]] -> $out/rates_NAME_npNP.txt
  local name="$1" np="$2" model="${3:-$(model_of "$1")}" share="${4:-1}" tokens
  [ -d "$model" ] && model="$model/config.json"
  tokens=512; [ "$name" = a27b_ro ] && tokens=128  # micro_batch_size x seq_len
  .venv/bin/python - "$model" "$tokens" "$share" >"$out/rates_$name.pbtxt" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
print(f"bench {{ layer_shapes {{ hidden_size: {c['hidden_size']} num_experts: {c['num_experts']} "
      f"top_k: {c['num_experts_per_tok']} expert_intermediate_size: {c['moe_intermediate_size']} }} "
      f"tokens: {sys.argv[2]} repeats: 21 expert_active_share: {sys.argv[3]} "
      f"vocab_size: {c['vocab_size']} }}")
PY
  local rates_args
  read -r -a rates_args <<<"$(rates_args_of "$name")"
  OMP_NUM_THREADS=$(threads_at "$np") ./launch/mpirun.sh -np "$np" "$bin" bench --name rates \
    --config "$out/rates_$name.pbtxt" "${rates_args[@]}" >"$out/rates_${name}_np$np.table.txt"
  sed -n 's/^cluster-set: //p' "$out/rates_${name}_np$np.table.txt" >"$out/rates_${name}_np$np.txt"
}

results=()
for name in small_ro medium_full medium_ro a27b_ro; do
  read -r -a args <<<"$(case_args "$name" | tr '\n' ' ')"
  for np in $(eps_of "$name"); do
    run="$out/${name}_ep$np"
    echo "== $name at EP $np"
    threads=$(threads_at "$np")
    # CALIBRATION_REUSE=1 plans again over the runs already measured.
    if [ -z "${CALIBRATION_REUSE:-}" ] || [ ! -f "$run/metrics.jsonl" ]; then
      rm -rf "$run"
      # The case's own settings after the shared ones: the later --set wins. Every step timed
      # phase by phase: on a CPU the boundaries wait for nothing, so the steps stay as fast.
      OMP_NUM_THREADS=$threads ./launch/mpirun.sh -np "$np" "$bin" train "${data[@]}" "${args[@]}" \
        --run-dir "$run" --progress lines --set parallel.expert_parallel="$np" \
        --set logging.phase_profile_interval=1 >"$run.train.txt"
      rm -rf "$run/checkpoints"  # 6 GB for medium_full; the measurements are in metrics.jsonl
      # The share of experts with rows, over the run's MoE layers, as plan reads it from the loads.
      "$bin" plan --model "$(model_of "$name")" "${data[@]}" "${args[@]}" --cluster cpu \
        --cluster-set devices_per_node="$np" --ep "$np" --loads "$run" --json >"$run.shares.json" ||
        true
      share=$(.venv/bin/python -c "import json, statistics, sys
s = json.load(open(sys.argv[1]))['layouts'][0]['active_expert_share']
print(round(statistics.mean(s), 4) if s else 1)" "$run.shares.json")
      echo "   bench rates at $np rank(s), the bank's rows on $share of its experts"
      measure_rates "$name" "$np" "$(model_of "$name")" "$share"
    fi
    sets=(--cluster-set devices_per_node="$np")
    if [ "${CALIBRATION_RATES:-bench}" = bench ]; then
      for kv in $(cat "$out/rates_${name}_np$np.txt"); do sets+=(--cluster-set "$kv"); done
    fi
    "$bin" plan --model "$(model_of "$name")" "${data[@]}" "${args[@]}" --cluster cpu \
      "${sets[@]}" --ep "$np" --loads "$run" --json >"$run.plan.json" ||
      true  # a layout predicted not to fit still prints its plan
    results+=("$name=$np=$run")
  done
done

.venv/bin/python - "$out/calibration.json" "${results[@]}" <<'PY'
import json, statistics, sys
path, items = sys.argv[1], sys.argv[2:]
rows = []
for item in items:
    name, np, run = item.split("=", 2)
    plan = json.load(open(run + ".plan.json"))["layouts"][0]
    rss = {}
    for line in open(run + "/metrics.jsonl"):
        r = json.loads(line)
        if r["kind"] == "loss":
            rss[r["rank"]] = max(rss.get(r["rank"], 0), r["peak_rss_gb"])
    # Step time: rank 0's wall time per step (rank0.log), median of the steps after the first.
    times = [float(line.split()[-1]) for line in open(run + "/rank0.log")
             if line.startswith("step ") and int(line.split()[1]) > 1]
    # Where the critical rank's steps went (phase_ms of the rank with the most expert time in
    # each step, median over the steps after the first: plan's terms are that rank's; the
    # others wait for it inside their exchanges), gathered into plan's terms: the exchange's
    # permutations count with the all-to-all; router, shared expert and the rest of the layer
    # are plan's "rest".
    by_step = {}
    for r in map(json.loads, open(run + "/metrics.jsonl")):
        if r["kind"] == "loss" and r["step"] > 1 and "phase_ms" in r:
            by_step.setdefault(r["step"], []).append(r["phase_ms"])
    phases = [max(ranks, key=lambda p: p["experts"]) for ranks in by_step.values()]
    groups = {"experts": ["experts"], "attention": ["attention"],
              "rest": ["router", "shared_expert", "other"], "lm_head": ["head"],
              "all_to_all": ["dispatch", "combine"], "grad_allreduce": ["gradient_sync"],
              "optimizer": ["optimizer"]}
    measured = {g: statistics.median(sum(p[k] for k in keys) for p in phases) / 1e3
                for g, keys in groups.items()} if phases else {}
    rows.append({"workload": name, "ep": int(np), "predicted_gb": plan["memory_bytes"]["peak"] / 1e9,
                 "measured_gb": max(rss.values()), "predicted_step_s": plan["step_seconds"]["total"],
                 "measured_step_s": statistics.median(times),
                 "predicted_terms_s": {g: plan["step_seconds"][g] for g in groups},
                 "measured_terms_s": measured})
json.dump(rows, open(path, "w"), indent=1)
print("\n| workload | EP | predicted GB/rank | measured peak RSS GB | ratio | predicted step s | measured step s | ratio |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    print(f"| {r['workload']} | {r['ep']} | {r['predicted_gb']:.3f} | {r['measured_gb']:.3f} | "
          f"{r['predicted_gb'] / r['measured_gb']:.3f} | {r['predicted_step_s']:.3f} | "
          f"{r['measured_step_s']:.3f} | {r['predicted_step_s'] / r['measured_step_s']:.3f} |")
terms = ["experts", "attention", "rest", "lm_head", "all_to_all", "grad_allreduce", "optimizer"]
print("\nStep time by term, predicted / measured seconds (measured: phase_ms of the rank with the "
      "most expert time, median over steps)\n")
print("| workload | EP | " + " | ".join(terms) + " |")
print("|---|---:|" + "---:|" * len(terms))
for r in rows:
    if r["measured_terms_s"]:
        print(f"| {r['workload']} | {r['ep']} | " + " | ".join(
            f"{r['predicted_terms_s'][t]:.3f} / {r['measured_terms_s'][t]:.3f}" for t in terms) + " |")
PY

# The imbalance term, on the placement studies' skewed runs (launch/placement_study.sh, every
# runs/placement_study* folder it made, or PLACEMENT_DIRS; skipped when none exists): each
# placement planned at the study's EP size with small_ro's rates at that rank count (or rates
# at the study's own shape when its experts are widened) and the contiguous run's loads
# (--balanced, --redundant EP: the placements `switchyard placement` makes from them), against
# the run's measured step time (median over the study's rounds).
expert_width() { .venv/bin/python -c \
  "import json, sys; print(json.load(open(sys.argv[1] + '/config.json'))['moe_intermediate_size'])" "$1"; }
for study in ${PLACEMENT_DIRS:-runs/placement_study*}; do
  [ -f "$study/contiguous/rank0.log" ] && [ -f "$study/balanced/rank0.log" ] || continue
  ep=$(find "$study/contiguous" -maxdepth 1 -name 'rank*.log' | wc -l)
  tag="$(basename "$study")"
  # The skewed case has the quickstart base's shape: small_ro's rates, or with its experts
  # widened (PLACEMENT_EXPERT_WIDTH) rates measured at that shape once.
  width=$(expert_width "$study/skewed")
  rates="$out/rates_small_ro_np$ep.txt"
  if [ "$width" != "$(expert_width "$base_out/base")" ]; then
    rates="$out/rates_${tag}_np$ep.txt"
    [ -s "$rates" ] || measure_rates "$tag" "$ep" "$study/skewed"
  fi
  sets=(--cluster-set devices_per_node="$ep")
  for kv in $(cat "$rates"); do sets+=(--cluster-set "$kv"); done
  skew=(--config configs/quickstart/finetune.pbtxt --set "model.checkpoint=$study/skewed"
        --set "data.train_path=$base_out/data/train.tok" --set router.linear.init_from_checkpoint=true
        --set router.aux_loss_coef=0 --set train.distill_steps=0)
  rows=()
  for placement in contiguous balanced replicas; do
    [ -f "$study/$placement/rank0.log" ] || continue
    case "$placement" in
      contiguous) how=() ;; balanced) how=(--balanced) ;; replicas) how=(--redundant "$ep") ;;
    esac
    "$bin" plan --model "$study/skewed" "${skew[@]}" --cluster cpu "${sets[@]}" --ep "$ep" \
      --loads "$study/contiguous" "${how[@]}" --json >"$out/${tag}_$placement.plan.json" || true
    rows+=("$placement=$study/$placement")
  done
  .venv/bin/python - "$out" "$tag" "$ep" "$width" "$(basename "$rates")" "${rows[@]}" <<'PY'
import glob, json, statistics, sys
out, tag, ep, width, rates, rows = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6:]
print(f"\n| placement ({tag}: EP {ep}, experts {width} wide, {rates}) | planned mean rank max/mean | predicted step s | measured step s | ratio | predicted change | measured change |")
print("|---|---:|---:|---:|---:|---:|---:|")
first = None
for item in rows:
    name, run = item.split("=", 1)
    plan = json.load(open(f"{out}/{tag}_{name}.plan.json"))["layouts"][0]
    # Every round the study ran (PLACEMENT_ROUNDS: RUN, RUN.r2, ...), interleaved with the others.
    times = [float(l.split()[-1]) for log in [run] + sorted(glob.glob(run + ".r*/"))
             for l in open(log.rstrip("/") + "/rank0.log")
             if l.startswith("step ") and l.split()[1].isdigit() and int(l.split()[1]) > 1]
    pred, meas = plan["step_seconds"]["total"], statistics.median(times)
    first = first or (pred, meas)
    imb = statistics.mean(plan["rank_imbalance"])
    print(f"| {name} | {imb:.3f} | {pred:.4f} | {meas:.4f} | {pred / meas:.3f} | "
          f"{pred / first[0] - 1:+.1%} | {meas / first[1] - 1:+.1%} |")
PY
done
