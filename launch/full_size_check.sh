#!/usr/bin/env bash
# Router fine-tuning of the full Qwen1.5-MoE-A2.7B on one GPU (issue 18 §3), four runs side by
# side on random token ids, the same batch and optimizer (AdamW on the routers alone):
#   sy_int4      switchyard train on a GPTQ-Int4 checkpoint in the hub layout, built from random
#                numbers by scripts/random_gptq_checkpoint.py (no download is possible there)
#                and loaded as a user loads the real one: bf16 non-expert weights, int4 experts
#   sy_bf16      switchyard train on a bf16 checkpoint of the same shapes (the same script's
#                --float: random bf16 weights), bf16 experts
#   sy_bf16_plain  sy_bf16 without recomputation, as transformers runs (left out when RECOMPUTE=0,
#                since sy_bf16 is that run then)
#   hf_bf16      transformers' Qwen2MoeForCausalLM (scripts/hf_router_anchor.py), bf16, its
#                grouped_mm experts where offered
# and prints tokens/s, step time, peak GPU memory (the caching allocator's), Switchyard's reads to
# the host per step, the ratios the issue sets targets for, and where a Switchyard step's time
# goes (logging.phase_profile_interval times one step phase by phase; tokens/s comes from the
# other steps). Linear routers (the model's own gate), top-4, no auxiliary loss.
#   launch/full_size_check.sh BIN LOGDIR
# Knobs (defaults: the issue's batch of 8 x 2048 tokens per step on the GPU): LAYERS (24),
# MICRO_BATCH (2), SEQ_LEN (2048), ACCUM (4), STEPS (5), DEVICE (cuda), PYTHON (python3),
# WORK (/tmp/full_size_check), RECOMPUTE (1: sy_int4 and sy_bf16 recompute their layers in
# backward, train.recompute_layers; the plan puts int4 under half of bf16's memory only so. The
# int4 targets compare those two; the target against transformers takes sy_bf16_plain).
# A CPU dry run: LAYERS=2 SEQ_LEN=64 MICRO_BATCH=1 ACCUM=2 STEPS=2 DEVICE=cpu.
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="$1" logs="$2"
py="${PYTHON:-python3}"
layers="${LAYERS:-24}" mb="${MICRO_BATCH:-2}" seq="${SEQ_LEN:-2048}" accum="${ACCUM:-4}"
steps="${STEPS:-5}" device="${DEVICE:-cuda}" work="${WORK:-/tmp/full_size_check}"
mkdir -p "$logs" "$work"
stamp() { echo "[full_size_check $(date +%T)] $*"; }
status=0

stamp "GPTQ-Int4 checkpoint ($layers layers) and random token ids"
if [ ! -f "$work/gptq/config.json" ]; then
  "$py" "$repo/scripts/random_gptq_checkpoint.py" "$work/gptq" --layers "$layers" --device "$device" \
    >"$logs/checkpoint.log" 2>&1 || { tail -5 "$logs/checkpoint.log"; exit 1; }
fi
if [ ! -f "$work/bf16/config.json" ]; then
  "$py" "$repo/scripts/random_gptq_checkpoint.py" "$work/bf16" --layers "$layers" --float --device "$device" \
    >>"$logs/checkpoint.log" 2>&1 || { tail -5 "$logs/checkpoint.log"; exit 1; }
fi
PYTHONPATH="$repo/scripts" "$py" - "$work/random.tok" "$seq" <<'PY'
import random, sys
from token_file import write_token_file
rng = random.Random(0)
seq = int(sys.argv[2])
docs = [[rng.randrange(151936) for _ in range(seq + 1)] for _ in range(64)]
write_token_file(sys.argv[1], docs, 151936, 151643)  # Qwen's <|endoftext|>
PY

cat >"$work/train.pbtxt" <<EOF
router { top_k: 4 aux_loss_coef: 0 linear { init_from_checkpoint: true } }
parallel { expert_parallel: 1 device: "$device" }
train { steps: $steps learning_rate: 1e-4 warmup_steps: 0 micro_batch_size: $mb seq_len: $seq
        grad_accumulation: $accum routers_only: true eval_interval: 0
        recompute_layers: $([ "${RECOMPUTE:-1}" = 1 ] && echo true || echo false) }
data { train_path: "$work/random.tok" valid_path: "" }
logging { log_interval: 1 tensorboard: false phase_profile_interval: $((steps > 2 ? steps - 1 : steps)) }
EOF
sy_run() {  # NAME ARGS...
  local name="$1"; shift
  stamp "$name"
  rm -rf "${work:?}/${name:?}"
  "$bin" train --config "$work/train.pbtxt" --run-dir "$work/$name" --dtype bfloat16 \
    --progress lines "$@" >"$logs/$name.out" 2>&1 ||
    { status=1; tail -5 "$logs/$name.out"; return 1; }
  cp "$work/$name/metrics.jsonl" "$logs/$name.metrics.jsonl"
}
# NAME CHECKPOINT [--set ...]: the Switchyard runs, for `switchyard train` and `switchyard plan`.
runs=("sy_int4 gptq" "sy_bf16 bf16")
[ "${RECOMPUTE:-1}" = 1 ] && runs+=("sy_bf16_plain bf16 --set train.recompute_layers=false")
for run in "${runs[@]}"; do
  read -r name ckpt extra <<<"$run"
  # shellcheck disable=SC2086  # extra is a list of arguments
  sy_run "$name" --set "model.checkpoint=$work/$ckpt" $extra
done

# What `switchyard plan` predicts for the same two runs on one device (issue 19 §2): the preset
# of the GPU at hand with one device per node (PLAN_CLUSTER overrides; on a CPU dry run, `cpu`
# with one rank).
cluster="${PLAN_CLUSTER:-}"
if [ -z "$cluster" ]; then
  case "$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)" in
    *H200*) cluster=8xh200 ;; *H100*) cluster=8xh100 ;; *) cluster=cpu ;;
  esac
fi
for run in "${runs[@]}"; do
  read -r name ckpt extra <<<"$run"
  ckpt="$work/$ckpt"
  # shellcheck disable=SC2086  # extra is a list of arguments
  "$bin" plan --model "$ckpt" --config "$work/train.pbtxt" --set "model.checkpoint=$ckpt" $extra \
    --dtype bfloat16 --cluster "$cluster" --cluster-set nodes=1 --cluster-set devices_per_node=1 \
    --ep 1 --json >"$logs/$name.plan.json" 2>"$logs/$name.plan.err" ||
    [ -s "$logs/$name.plan.json" ] || { status=1; tail -2 "$logs/$name.plan.err"; }
done

stamp "hf_bf16 (transformers)"
"$py" "$repo/scripts/hf_router_anchor.py" --out "$logs/hf_bf16.json" --layers "$layers" \
  --micro-batch "$mb" --seq-len "$seq" --accumulation "$accum" --steps "$steps" \
  --device "$device" >"$logs/hf_bf16.out" 2>&1 || { status=1; tail -5 "$logs/hf_bf16.out"; }

"$py" - "$logs" "$mb" "$seq" "$accum" "$layers" <<'PY' | tee "$logs/full_size.md"
import json, os, re, statistics, sys
logs, mb, seq, accum, layers = sys.argv[1], *map(int, sys.argv[2:])
rows = {}
for name in ("sy_int4", "sy_bf16", "sy_bf16_plain"):
    path = f"{logs}/{name}.metrics.jsonl"
    if not os.path.exists(path):
        continue
    loss = [r for r in map(json.loads, open(path)) if r["kind"] == "loss"]
    profiled = [r for r in loss if r.get("profiled")]
    later = [r for r in loss if r["step"] > 1 and not r.get("profiled")] or loss
    rate = statistics.median(r["tokens_per_s"] for r in later)
    plan_path = f"{logs}/{name}.plan.json"
    plan = json.load(open(plan_path))["layouts"][0] if os.path.exists(plan_path) and os.path.getsize(plan_path) else None
    # `switchyard train`'s header says how long the checkpoint took to load.
    loaded = re.search(r"; model loaded in ([0-9.]+) s", open(f"{logs}/{name}.out").read())
    rows[name] = dict(tokens_per_s=rate, step_s=mb * seq * accum / rate, plan=plan,
                      load_s=float(loaded.group(1)) if loaded else float("nan"),
                      peak_gpu_gb=max(r["peak_gpu_gb"] for r in loss),
                      peak_rss_gb=max(r["peak_rss_gb"] for r in loss), last_loss=loss[-1]["loss"],
                      host_reads=statistics.median(r["host_reads"] for r in later),
                      phase_ms=profiled[-1]["phase_ms"] if profiled else None)
if os.path.exists(f"{logs}/hf_bf16.json"):
    h = json.load(open(f"{logs}/hf_bf16.json"))
    rows["hf_bf16"] = dict(tokens_per_s=h["tokens_per_s"], step_s=h["step_s"],
                           peak_gpu_gb=h["peak_gb"] or 0.0, peak_rss_gb=float("nan"),
                           last_loss=h["losses"][-1], backend=h["experts_backend"],
                           host_reads=float("nan"), load_s=float("nan"))
recompute = os.environ.get("RECOMPUTE", "1") == "1"
print(f"Qwen1.5-MoE-A2.7B shapes, {layers} layers, routers only, {mb} x {seq} tokens x {accum} "
      "micro-batches per step; median over the steps after the first"
      + ("; sy_int4 and sy_bf16 recompute their layers in backward, sy_bf16_plain and transformers "
         "do not" if recompute else "; nothing recomputed") + "\n")
print("| run | tokens/s | step s | peak GPU GB | peak RSS GB | host reads / step | last loss | load s |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for name, r in rows.items():
    label = name + (f" ({r['backend']} experts)" if "backend" in r else "")
    print(f"| {label} | {r['tokens_per_s']:.0f} | {r['step_s']:.3f} | {r['peak_gpu_gb']:.2f} | "
          f"{r['peak_rss_gb']:.2f} | {r['host_reads']:.0f} | {r['last_loss']:.4f} | {r['load_s']:.1f} |")
print("\n(load s: the checkpoint read, built and moved to the device, from `switchyard train`'s "
      "header; transformers draws its random weights on the device instead of loading any)")
def ratio(a, b, key, what):
    if a in rows and b in rows and rows[b][key]:
        print(f"- {what}: {rows[a][key] / rows[b][key]:.2f}")
print()
like = "sy_bf16_plain" if "sy_bf16_plain" in rows else "sy_bf16"
ratio(like, "hf_bf16", "tokens_per_s",
      f"Switchyard bf16 ({like}) / transformers bf16, tokens/s (target >= 2)")
ratio("sy_bf16", "sy_bf16_plain", "step_s", "sy_bf16 / sy_bf16_plain, step time (the cost of recomputation)")
ratio("sy_bf16", "sy_int4", "tokens_per_s", "Switchyard bf16 / int4 experts, tokens/s (target <= 1.3)")
ratio("sy_int4", "sy_bf16", "peak_gpu_gb", "int4 / bf16 experts, peak GPU memory (target < 0.5)")
planned = {name: r for name, r in rows.items() if r.get("plan")}
if planned:
    # Memory: a GPU's caching-allocator peak holds tensors only, so the plan's runtime term (the
    # CUDA context) is left out there; on a CPU the resident set includes it.
    gpu = any(r["peak_gpu_gb"] > 0 for r in planned.values())
    print(f"\nswitchyard plan for these runs (EP 1, one device), against them\n")
    print("| run | predicted GB | measured GB | ratio | predicted step s | measured step s | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in planned.items():
        m = r["plan"]["memory_bytes"]
        pred_gb = (m["total"] - m["runtime"]) / 1e9 if gpu else m["peak"] / 1e9
        meas_gb = r["peak_gpu_gb"] if gpu else r["peak_rss_gb"]
        pred_s = r["plan"]["step_seconds"]["total"]
        print(f"| {name} | {pred_gb:.2f} | {meas_gb:.2f} | {pred_gb / meas_gb:.3f} | {pred_s:.3f} | "
              f"{r['step_s']:.3f} | {pred_s / r['step_s']:.3f} |")
timed = {name: r["phase_ms"] for name, r in rows.items() if r.get("phase_ms")}
if timed:
    print("\nOne profiled step, forward + backward per phase (ms; the device synchronised at every "
          "phase boundary, so the total exceeds an unprofiled step)\n")
    print("| phase | " + " | ".join(timed) + " |")
    print("|---|" + "---:|" * len(timed))
    for phase in ("attention", "router", "dispatch", "experts", "combine", "shared_expert", "head",
                  "gradient_sync", "optimizer", "other"):  # the data path's order
        print(f"| {phase} | " + " | ".join(
            f"{ms[phase]:.1f} ({100 * ms[phase] / sum(ms.values()):.0f}%)" for ms in timed.values()) + " |")
    print("| total | " + " | ".join(f"{sum(ms.values()):.1f}" for ms in timed.values()) + " |")
    print("| unprofiled step | " + " | ".join(f"{1e3 * rows[n]['step_s']:.1f}" for n in timed) + " |")
PY
stamp "done"
exit $status
