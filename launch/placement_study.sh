#!/usr/bin/env bash
# Expert placement measured, with one command: the balance study's run trained without any
# balancing (made by launch/balance_study.sh when missing) routes unevenly. Its experts are
# renumbered per layer by the load they got there, hottest first (router rows and expert weights
# together, so the model computes the same function), which puts the hot experts side by side on
# the first ranks of the contiguous placement: the skewed case. Its routers are then trained on
# (routers only, no balancing loss, so the skew stays) for more steps under 4 ranks (EP 4) five
# ways:
#   contiguous   the default placement
#   balanced     `switchyard placement --ep 4` from the run's logged loads
#   replicas     the same with --redundant 4 (one extra slot per rank)
#   live         contiguous at the start, then live re-placement every PLACEMENT_INTERVAL steps
#                (default 10) from the loads of the steps since the last one
#   live_replicas  the replicas placement at the start, then live re-placement (4 extra slots kept)
# and the tokens each rank's experts received per layer (exact, from metrics.jsonl) and the
# training throughput are printed side by side as one Markdown table.
# PLACEMENT_STEPS (default 30) sets the steps, PLACEMENT_DIR the output folder (default
# runs/placement_study), BALANCE_DIR where the balance study's runs are (default runs/balance_study).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/launch/setup.sh"
"$repo/launch/build.sh"
cd "$repo"
bin=build/bin/switchyard
base_out="${QUICKSTART_DIR:-runs/quickstart}"
balance="${BALANCE_DIR:-runs/balance_study}"
out="${PLACEMENT_DIR:-runs/placement_study}"
steps="${PLACEMENT_STEPS:-30}"
interval="${PLACEMENT_INTERVAL:-10}"
export OMP_NUM_THREADS=1
[ -f "$balance/none/metrics.jsonl" ] || BALANCE_DIR="$balance" ./launch/balance_study.sh
mkdir -p "$out"
rm -rf "$out/none_hf" "$out/skewed"
"$bin" convert --model "$balance/none" --format hf --out "$out/none_hf" >/dev/null
"$bin" placement --run "$balance/none" --ep 4 --out "$out/balanced.json" >/dev/null
"$bin" placement --run "$balance/none" --ep 4 --redundant 4 --out "$out/replicas.json" >/dev/null
# Renumber the experts (and the placements, computed from the same loads) hottest first.
.venv/bin/python - "$balance/none/metrics.jsonl" "$out/none_hf" "$out/skewed" \
    "$out/balanced.json" "$out/replicas.json" <<'PY'
import json, os, shutil, sys
from safetensors.torch import load_file, save_file
metrics, src, dst, placements = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
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
os.makedirs(dst)
for name in os.listdir(src):
    if not name.endswith(".safetensors"):
        shutil.copy(f"{src}/{name}", f"{dst}/{name}")
moe_layers = [i for i in range(config["num_hidden_layers"])
              if i not in config.get("mlp_only_layers", []) and (i + 1) % config["decoder_sparse_step"] == 0]
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
                out[key.replace(f"experts.{old}.", f"experts.{new}.", 1)] = tensors[key]
    save_file(out, f"{dst}/{name}", metadata={"format": "pt"})
for path in placements:
    p = json.load(open(path))
    for l, layer in enumerate(p["layers"]):
        renumber = {old: new for new, old in enumerate(order[l])}
        layer["slots"] = [[renumber[e] for e in rank] for rank in layer["slots"]]
    p["source"]["renumbered"] = ("experts renumbered hottest first by launch/placement_study.sh; "
                                 "the predictions' 'contiguous' is the old numbering's")
    json.dump(p, open(path, "w"), indent=1)
PY
runs=()
for name in contiguous balanced replicas live live_replicas; do
  placement=()
  case "$name" in
    balanced | replicas) placement=(--set "parallel.placement=$out/$name.json") ;;
    live) placement=(--set "parallel.rebalance_interval=$interval") ;;
    live_replicas) placement=(--set "parallel.placement=$out/replicas.json"
                              --set "parallel.rebalance_interval=$interval") ;;
  esac
  echo "== $name"
  rm -rf "${out:?}/$name"
  ./launch/mpirun.sh -np 4 "$bin" train --config configs/quickstart/finetune.pbtxt \
    --run-dir "$out/$name" --progress lines --set "model.checkpoint=$out/skewed" \
    --set "data.train_path=$base_out/data/train.tok" --set router.linear.init_from_checkpoint=true \
    --set router.aux_loss_coef=0 --set train.distill_steps=0 --set "train.steps=$steps" \
    --set logging.log_interval="$steps" "${placement[@]}" >"$out/$name.train.txt"
  runs+=("$name=$out/$name")
done
.venv/bin/python - "$steps" "${runs[@]}" <<'PY'
import json, statistics, sys
steps, runs = int(sys.argv[1]), sys.argv[2:]
print(f"\n{steps} steps, routers only, EP 4; rank max/mean = the most loaded rank's received "
      "tokens over the mean, per layer, summed over the steps (exact); 'mean, 2nd half' sums "
      f"steps {steps // 2 + 1}-{steps} only\n")

def ratios(tokens):
    out = []
    for l in sorted({l for l, _ in tokens}):
        per_rank = [v for (layer, _), v in tokens.items() if layer == l]
        out.append(max(per_rank) / (sum(per_rank) / len(per_rank)))
    return out

rows = []
for item in runs:
    name, path = item.split("=", 1)
    tokens, late, speed = {}, {}, []
    for line in open(path + "/metrics.jsonl"):
        r = json.loads(line)
        if r["kind"] == "load":
            key = (r["layer"], r["rank"])
            tokens[key] = tokens.get(key, 0) + r["rank_tokens"]
            if r["step"] > steps // 2:
                late[key] = late.get(key, 0) + r["rank_tokens"]
        elif r["kind"] == "loss":
            speed.append((r["step"], r["tokens_per_s"]))
    by_step = {}
    for step, s in speed:
        by_step[step] = by_step.get(step, 0) + s
    second = ratios(late)
    rows.append((name, ratios(tokens), sum(second) / len(second),
                 statistics.median(by_step.values())))
n = len(rows[0][1])
print("| placement | " + " | ".join(f"layer {i}" for i in range(n)) +
      " | mean | mean, 2nd half | median tokens/s (all ranks) |")
print("|---|" + "---:|" * (n + 3))
for name, r, second, tps in rows:
    print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in r) +
          f" | {sum(r) / len(r):.3f} | {second:.3f} | {tps:.0f} |")
PY
