#!/usr/bin/env bash
# Expert placement measured, with one command: the balance study's run trained without any
# balancing (made by launch/balance_study.sh when missing) routes unevenly. Its experts are
# renumbered per layer by the load they got there, hottest first (router rows and expert weights
# together, so the model computes the same function), which puts the hot experts side by side on
# the first ranks of the contiguous placement: the skewed case. Its routers are then trained on
# (routers only, no balancing loss, so the skew stays) for more steps under PLACEMENT_EP ranks
# (default 4, one thread each) five ways:
#   contiguous   the default placement
#   balanced     `switchyard placement --ep N` from the run's logged loads
#   replicas     the same with --redundant N (one extra slot per rank)
#   live         contiguous at the start, then live re-placement every PLACEMENT_INTERVAL steps
#                (default 10) from the loads of the steps since the last one
#   live_replicas  the replicas placement at the start, then live re-placement (extra slots kept)
# PLACEMENT_ROUNDS (default 1) repeats the five, interleaved, so that the machine's drift falls
# on all of them alike. Printed as one Markdown table: the tokens each rank's experts received
# per layer (exact, from metrics.jsonl, the first round's), rank 0's median step time over the
# rounds, and the step time `switchyard plan` predicts from each run's measured rank imbalance
# (the busiest rank sets the pace), with the rates `launch/plan_calibration.sh` measured for
# this model at this rank count when it has run (else the `cpu` preset's).
# PLACEMENT_EXPERT_WIDTH widens every expert's intermediate size (moe_intermediate_size, a
# multiple of 128 above the model's) with zeros: new gate/up rows and down columns of zero, so the
# model computes the same function and routes the same tokens, but its expert GEMMs grow to the
# point where they set the step time, as in the full-size model (in the quickstart model they are
# about 6% of a step, too little for any placement to show in the step time). The study then also
# takes one step of the model at its own width and stops unless that step's loss and loads equal
# the widened contiguous run's first. Its output folder gets a _w<width> suffix.
# PLACEMENT_STEPS (default 30) sets the steps, PLACEMENT_DIR the output folder (default
# runs/placement_study, runs/placement_study_ep<N> at another EP), BALANCE_DIR where the balance
# study's runs are (default runs/balance_study).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/launch/setup.sh"
"$repo/launch/build.sh"
cd "$repo"
bin=build/bin/switchyard
base_out="${QUICKSTART_DIR:-runs/quickstart}"
balance="${BALANCE_DIR:-runs/balance_study}"
ep="${PLACEMENT_EP:-4}"
width="${PLACEMENT_EXPERT_WIDTH:-0}"
[[ "$width" =~ ^[0-9]+$ && $((width % 128)) = 0 ]] ||
  { echo "PLACEMENT_EXPERT_WIDTH=$width: expected a multiple of 128 (the int4 group size)" >&2; exit 2; }
default_out=runs/placement_study; [ "$ep" = 4 ] || default_out="runs/placement_study_ep$ep"
[ "$width" = 0 ] || default_out="${default_out}_w$width"
out="${PLACEMENT_DIR:-$default_out}"
rounds="${PLACEMENT_ROUNDS:-1}"
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "PLACEMENT_ROUNDS=$rounds: expected a positive whole number" >&2; exit 2; }
steps="${PLACEMENT_STEPS:-30}"
interval="${PLACEMENT_INTERVAL:-10}"
export OMP_NUM_THREADS=1
[ -f "$balance/none/metrics.jsonl" ] || BALANCE_DIR="$balance" ./launch/balance_study.sh
mkdir -p "$out"
# (later rounds of an earlier study too)
rm -rf "$out/none_hf" "$out"/skewed* "$out/narrow" "$out"/*.r[0-9]*
"$bin" convert --model "$balance/none" --format hf --out "$out/none_hf" >/dev/null
"$bin" placement --run "$balance/none" --ep "$ep" --out "$out/balanced.json" >/dev/null
"$bin" placement --run "$balance/none" --ep "$ep" --redundant "$ep" --out "$out/replicas.json" \
  >/dev/null
# Renumber the experts (and the placements, computed from the same loads) hottest first.
.venv/bin/python - "$balance/none/metrics.jsonl" "$out/none_hf" "$out/skewed" "$width" \
    "$out/balanced.json" "$out/replicas.json" <<'PY'
import json, os, shutil, sys
import torch
from safetensors.torch import load_file, save_file
metrics, src, dst, width, placements = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:]
loads = {}
for line in open(metrics):
    r = json.loads(line)
    if r["kind"] == "load":
        layer = loads.setdefault(r["layer"], {})
        for e, t in zip(r["experts"], r["expert_tokens"]):
            layer[e] = layer.get(e, 0) + t
config = json.load(open(f"{src}/config.json"))
E = config["num_experts"]
order = {l: sorted(range(E), key=lambda e: -v.get(e, 0)) for l, v in loads.items()}  # new -> old
inner = config["moe_intermediate_size"]
if width and width <= inner:
    sys.exit(f"PLACEMENT_EXPERT_WIDTH={width}: the model's experts are already {inner} wide")
moe_layers = [i for i in range(config["num_hidden_layers"])
              if i not in config.get("mlp_only_layers", []) and (i + 1) % config["decoder_sparse_step"] == 0]

def widen(key, w, width):  # zero rows of gate/up, zero columns of down: silu(0) * 0 adds nothing
    if not width or ".experts." not in key:
        return w
    if key.endswith("down_proj.weight"):
        return torch.nn.functional.pad(w, (0, width - w.shape[1]))
    return torch.nn.functional.pad(w, (0, 0, 0, width - w.shape[0]))

def write_model(dst, width):
    os.makedirs(dst)
    for name in os.listdir(src):
        if not name.endswith(".safetensors"):
            shutil.copy(f"{src}/{name}", f"{dst}/{name}")
    if width:
        json.dump(dict(config, moe_intermediate_size=width), open(f"{dst}/config.json", "w"), indent=2)
    for name in os.listdir(src):
        if not name.endswith(".safetensors"):
            continue
        tensors = load_file(f"{src}/{name}")
        out = dict(tensors)
        for l, layer in enumerate(moe_layers):
            p = f"model.layers.{layer}.mlp."
            if p + "gate.weight" in tensors:
                out[p + "gate.weight"] = tensors[p + "gate.weight"][order[l]].contiguous()
            for new, old in enumerate(order[l]):
                for key in [k for k in tensors if k.startswith(f"{p}experts.{old}.")]:
                    out[key.replace(f"experts.{old}.", f"experts.{new}.", 1)] = widen(key, tensors[key], width)
        save_file(out, f"{dst}/{name}", metadata={"format": "pt"})

write_model(dst, width)
if width:  # the same model at its own width: the check that widening changed no loss
    write_model(dst + "_narrow", 0)
for path in placements:
    p = json.load(open(path))
    for l, layer in enumerate(p["layers"]):
        renumber = {old: new for new, old in enumerate(order[l])}
        layer["slots"] = [[renumber[e] for e in rank] for rank in layer["slots"]]
    p["source"]["renumbered"] = ("experts renumbered hottest first by launch/placement_study.sh; "
                                 "the predictions' 'contiguous' is the old numbering's")
    json.dump(p, open(path, "w"), indent=1)
PY
# train_run RUN MODEL STEPS [--set ...]: the skewed case's router fine-tune under EP ranks.
train_run() {
  local run="$1" model="$2" n="$3"
  shift 3
  rm -rf "${run:?}"
  ./launch/mpirun.sh -np "$ep" "$bin" train --config configs/quickstart/finetune.pbtxt \
    --run-dir "$run" --progress lines --set "model.checkpoint=$model" \
    --set "data.train_path=$base_out/data/train.tok" --set router.linear.init_from_checkpoint=true \
    --set router.aux_loss_coef=0 --set train.distill_steps=0 --set "train.steps=$n" \
    --set parallel.expert_parallel="$ep" --set logging.log_interval="$n" "$@" >"$run.train.txt"
}
# Round 1's runs are $out/NAME, later rounds' $out/NAME.rK.
names=(contiguous balanced replicas live live_replicas)
for round in $(seq 1 "$rounds"); do
  for name in "${names[@]}"; do
    placement=()
    case "$name" in
      balanced | replicas) placement=(--set "parallel.placement=$out/$name.json") ;;
      live) placement=(--set "parallel.rebalance_interval=$interval") ;;
      live_replicas) placement=(--set "parallel.placement=$out/replicas.json"
                                --set "parallel.rebalance_interval=$interval") ;;
    esac
    run="$out/$name"; [ "$round" = 1 ] || run="$out/$name.r$round"
    echo "== $name (round $round of $rounds)"
    train_run "$run" "$out/skewed" "$steps" "${placement[@]}"
  done
done
if [ "$width" != 0 ]; then
  # Widening must change nothing but the time: the model at its own width takes the same first
  # step (loss and every rank's expert loads) as the contiguous run.
  echo "== the same first step at the model's own width"
  train_run "$out/narrow" "$out/skewed_narrow" 1
  .venv/bin/python - "$out/narrow/metrics.jsonl" "$out/contiguous/metrics.jsonl" <<'PY'
import json, sys
def first_step(path):
    records = [json.loads(l) for l in open(path)]
    loss = [r["loss"] for r in records if r["kind"] == "loss" and r["step"] == 1]
    loads = sorted((r["rank"], r["layer"], r["expert_tokens"]) for r in records
                   if r["kind"] == "load" and r["step"] == 1)
    return loss, loads
(narrow_loss, narrow_loads), (wide_loss, wide_loads) = first_step(sys.argv[1]), first_step(sys.argv[2])
worst = max(abs(a - b) / abs(b) for a, b in zip(narrow_loss, wide_loss))
if len(narrow_loss) != len(wide_loss) or worst > 1e-5 or narrow_loads != wide_loads:
    sys.exit(f"widened experts changed the first step: losses {narrow_loss} (own width) and "
             f"{wide_loss} (widened), loads equal: {narrow_loads == wide_loads}")
print(f"first step at the model's own width: the same loads, losses within {worst:.1e} (relative)")
PY
fi

# The step time the imbalance predicts: `plan` with each run's measured rank max/mean.
rates="${CALIBRATION_DIR:-runs/plan_calibration}/rates_small_ro_np$ep.txt"
sets=(--cluster-set devices_per_node="$ep")
if [ -f "$rates" ]; then
  for kv in $(cat "$rates"); do sets+=(--cluster-set "$kv"); done
else
  rates="the cpu preset (no $rates)"
fi
.venv/bin/python - "$steps" "$rounds" "$out" "${names[@]}" >"$out/imbalance.txt" <<'PY'
import json, statistics, sys
steps, rounds, out, names = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]

def ratios(tokens):
    result = []
    for l in sorted({l for l, _ in tokens}):
        per_rank = [v for (layer, _), v in tokens.items() if layer == l]
        result.append(max(per_rank) / (sum(per_rank) / len(per_rank)))
    return result

with open(f"{out}/measured.jsonl", "w") as table:
    for name in names:
        tokens, late = {}, {}
        for line in open(f"{out}/{name}/metrics.jsonl"):
            r = json.loads(line)
            if r["kind"] == "load":
                key = (r["layer"], r["rank"])
                tokens[key] = tokens.get(key, 0) + r["rank_tokens"]
                if r["step"] > steps // 2:
                    late[key] = late.get(key, 0) + r["rank_tokens"]
        per_round = []
        for k in range(1, rounds + 1):
            log = f"{out}/{name}/rank0.log" if k == 1 else f"{out}/{name}.r{k}/rank0.log"
            per_round.append([float(l.split()[-1]) for l in open(log)  # not "step 10: ..." notes
                              if l.startswith("step ") and l.split()[1].isdigit()
                              and int(l.split()[1]) > 1])
        r, second = ratios(tokens), ratios(late)
        table.write(json.dumps({
            "name": name, "layers": r, "mean": sum(r) / len(r), "second": sum(second) / len(second),
            "step_s": statistics.median([s for times in per_round for s in times]),
            "round_medians": [statistics.median(times) for times in per_round]}) + "\n")
        print(name, sum(r) / len(r))
PY
: >"$out/predicted.txt"
while read -r name imbalance; do
  redundant=0; case "$name" in *replicas) redundant="$ep" ;; esac
  "$bin" plan --model "$out/skewed" --config configs/quickstart/finetune.pbtxt \
    --set "data.train_path=$base_out/data/train.tok" --set router.linear.init_from_checkpoint=true \
    --set router.aux_loss_coef=0 --set train.distill_steps=0 --cluster cpu "${sets[@]}" \
    --ep "$ep" --imbalance "$imbalance" --redundant "$redundant" --json >"$out/$name.plan.json"
  echo "$name $out/$name.plan.json" >>"$out/predicted.txt"
done <"$out/imbalance.txt"
.venv/bin/python - "$steps" "$ep" "$rounds" "$rates" "$out" <<'PY'
import json, sys
steps, ep, rounds, rates, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
rows = [json.loads(l) for l in open(f"{out}/measured.jsonl")]
for line in open(f"{out}/predicted.txt"):
    name, path = line.split()
    plan = json.load(open(path))["layouts"][0]["step_seconds"]["total"]
    next(r for r in rows if r["name"] == name)["predicted_s"] = plan
print(f"\n{steps} steps, routers only, EP {ep}, one thread per rank. Rank max/mean: the most loaded "
      "rank's received tokens over the mean, per layer, summed over the steps (exact); 'mean, 2nd "
      f"half' sums steps {steps // 2 + 1}-{steps} only. Step s: rank 0's median wall time per step "
      f"after the first over {rounds} interleaved round(s), each round's median in brackets. "
      f"Predicted: `switchyard plan` at the run's mean rank max/mean, rates from {rates}.\n")
n = len(rows[0]["layers"])
print("| placement | " + " | ".join(f"layer {i}" for i in range(n)) + " | mean | mean, 2nd half"
      " | step s | predicted step s | measured change | predicted change |")
print("|---|" + "---:|" * (n + 6))
base = rows[0]
for r in rows:
    each = ", ".join(f"{m:.4f}" for m in r["round_medians"])
    print(f"| {r['name']} | " + " | ".join(f"{v:.3f}" for v in r["layers"]) +
          f" | {r['mean']:.3f} | {r['second']:.3f} | {r['step_s']:.4f} [{each}] |"
          f" {r['predicted_s']:.4f} | {r['step_s'] / base['step_s'] - 1:+.1%} |"
          f" {r['predicted_s'] / base['predicted_s'] - 1:+.1%} |")
PY
