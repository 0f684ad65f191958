#!/usr/bin/env bash
# `switchyard train` end to end: token files from a small corpus (switchyard data prepare), a
# tiny transformers-made base model, router fine-tuning under mpirun at 2 ranks (EP 2), the
# metrics.jsonl fields scripts read, and one-line errors for bad configs before any work.
#   train_test.sh BIN PYTHON
set -uo pipefail
bin="$1" py="$2"
repo="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
source "$repo/tests/cli_checks.sh"

tiny_training_inputs 0 400

cat >"$tmp/train.pbtxt" <<EOF2
model { checkpoint: "$tmp/base" }
parallel { expert_parallel: 2 device: "cpu" }  # exact to 1e-5: the CPU's promise
router { top_k: 2 }
train { steps: 6 learning_rate: 0.01 warmup_steps: 2 micro_batch_size: 2 grad_accumulation: 2
        seq_len: 32 routers_only: true }
data { train_path: "$tmp/tok/train.tok" }
logging { log_interval: 3 phase_profile_interval: 3 }
EOF2
if "$repo/launch/mpirun.sh" -np 2 "$bin" train --config "$tmp/train.pbtxt" --run-dir "$tmp/run" \
     >"$tmp/train.out" 2>"$tmp/train.err" &&
   "$py" - "$tmp/run/metrics.jsonl" <<'PY'
import json, sys
records = [json.loads(line) for line in open(sys.argv[1])]
loss = [r for r in records if r["kind"] == "loss"]
load = [r for r in records if r["kind"] == "load"]
assert len(loss) == 6 * 2, len(loss)                      # 6 steps x 2 ranks
for r in loss:
    for key in ("step", "rank", "loss", "lr", "tokens_per_s", "peak_rss_gb", "host_reads"):
        assert key in r, (key, r)
    assert 0.1 < r["peak_rss_gb"] < 24, r  # this rank's resident peak, 1e9 bytes
    assert r["peak_gpu_gb"] == 0, r  # on the CPU: no GPU memory
    assert r["host_reads"] >= 1, r  # the step's read, and one per dispatch
    # Steps 3 and 6 are timed phase by phase (logging.phase_profile_interval), the rest not.
    assert ("phase_ms" in r) == (r["step"] % 3 == 0) == r.get("profiled", False), r
    if "phase_ms" in r:
        ms = r["phase_ms"]
        assert set(ms) == {"other", "attention", "router", "dispatch", "experts", "combine",
                           "shared_expert", "head", "gradient_sync", "optimizer"}, ms
        assert all(v >= 0 for v in ms.values()) and ms["router"] > 0 and ms["dispatch"] > 0, ms
        assert ms["attention"] > 0 and ms["experts"] > 0 and ms["head"] > 0, ms
assert len(load) == 6 * 2 * 2, len(load)                  # x 2 MoE layers
for r in load:
    for key in ("step", "rank", "layer", "expert_tokens", "max_over_mean", "entropy", "aux_loss"):
        assert key in r, (key, r)
    assert len(r["expert_tokens"]) == 4                   # 8 experts over EP 2
# Every rank's routed rows arrive somewhere: received rows over both ranks = tokens * top_k.
for step in range(1, 7):
    for layer in (0, 1):
        got = sum(sum(r["expert_tokens"]) for r in load if r["step"] == step and r["layer"] == layer)
        assert got == 2 * 2 * 2 * 32 * 2, (step, layer, got)  # ranks * accum * batch * S * k
assert loss[0]["lr"] < loss[-1]["lr"] or loss[2]["lr"] > loss[0]["lr"]  # warmup ran
PY
   "$py" "$repo/tests/tensorboard_check.py" "$tmp/run" 1 >"$tmp/tb.out" 2>&1 ||
   { fail "tensorboard events ($(tail -c 600 "$tmp/tb.out"))"; false; }
then
  grep -q "training finished" "$tmp/train.out" && grep -q "rows_received" "$tmp/train.out" &&
    grep -qE "; model (loaded|built) in [0-9]+\.[0-9] s$" "$tmp/train.out" &&
    [ -s "$tmp/run/rank1.log" ] &&
    ok "train under mpirun (EP 2): metrics.jsonl, load table, rank logs, the model's load time" ||
    fail "train output ($(head -c 400 "$tmp/train.out"))"
else
  fail "train under mpirun ($(tail -c 600 "$tmp/train.err"))"
fi

# `switchyard placement` on that run's loads: a valid file (every expert placed, 5 slots per
# rank), and its predicted contiguous rank max/mean equal to one computed here from
# metrics.jsonl; the balanced placement predicts no worse. A bad EP is one line.
if "$bin" placement --run "$tmp/run" --ep 2 --redundant 2 --steps 2:6 --out "$tmp/placement.json" \
     >"$tmp/placement.out" 2>"$tmp/placement.err" &&
   "$py" - "$tmp/run/metrics.jsonl" "$tmp/placement.json" <<'PY'
import json, sys
records = [json.loads(line) for line in open(sys.argv[1])]
p = json.load(open(sys.argv[2]))
assert p["schema"] == "switchyard.placement/1" and p["expert_parallel"] == 2, p
assert p["slots_per_rank"] == 5 and len(p["layers"]) == 2, p
for layer in p["layers"]:
    assert [len(r) for r in layer["slots"]] == [5, 5], layer
    assert sorted(set(e for r in layer["slots"] for e in r)) == list(range(8)), layer
for l, predicted in enumerate(p["source"]["predicted_rank_max_over_mean"]):
    load = [0] * 8
    for r in records:
        if r["kind"] == "load" and r["layer"] == l and 2 <= r["step"] <= 6:
            for i, n in enumerate(r["expert_tokens"]):
                load[r["first_expert"] + i] += n
    ranks = [sum(load[:4]), sum(load[4:])]
    expected = max(ranks) / (sum(ranks) / 2)
    assert abs(predicted["contiguous"] - expected) < 1e-12, (predicted, expected)
    assert predicted["placed"] <= predicted["contiguous"] + 1e-12, predicted
PY
then
  grep -q "contiguous max/mean" "$tmp/placement.out" && ok "placement from a run's loads" ||
    fail "placement output ($(head -c 300 "$tmp/placement.out"))"
else
  fail "placement ($(tail -c 400 "$tmp/placement.err"))"
fi
expect_error "placement: an EP that does not divide the experts" "--ep 3: must divide" \
  placement --run "$tmp/run" --ep 3 --out "$tmp/p3.json"
# The same training under that placement (experts moved, two of them replicated): the losses of
# the contiguous run, and load records that list each slot's expert. A missing file is one line.
if "$repo/launch/mpirun.sh" -np 2 "$bin" train --config "$tmp/train.pbtxt" --run-dir "$tmp/placed" \
     --set parallel.placement="$tmp/placement.json" >"$tmp/placed.out" 2>"$tmp/placed.err" &&
   "$py" - "$tmp/run/metrics.jsonl" "$tmp/placed/metrics.jsonl" "$tmp/placement.json" <<'PY'
import json, sys
def records(path, kind):
    return [r for r in map(json.loads, open(path)) if r["kind"] == kind]
plain, placed = records(sys.argv[1], "loss"), records(sys.argv[2], "loss")
assert len(plain) == len(placed) == 12, (len(plain), len(placed))
for a, b in zip(plain, placed):
    assert abs(a["loss"] - b["loss"]) < 1e-5, (a, b)
p = json.load(open(sys.argv[3]))
for r in records(sys.argv[2], "load"):
    assert r["experts"] == p["layers"][r["layer"]]["slots"][r["rank"] % 2], r
    assert len(r["expert_tokens"]) == 5, r
PY
then ok "train under a placement with replicas = the contiguous run (EP 2)"
else fail "train under a placement ($(tail -c 400 "$tmp/placed.err"))"; fi
expect_error "a placement file that is not there" "parallel.placement: /no/such.json: cannot open" \
  train --config "$tmp/train.pbtxt" --run-dir "$tmp/noplacement" --set parallel.expert_parallel=1 \
  --set parallel.placement=/no/such.json

# Checkpoints: an uninterrupted run (EP 2, all parameters, so expert shards are saved too)
# against one stopped after 3 steps at EP 4 and resumed at EP 2, and one resumed at the same EP.
# The global batch is 4 sequences in every run (micro_batch_size x ranks); the load-balancing
# loss counts experts over the world, so it does not depend on how the batch is split either.
run_train() {  # NP MICRO_BATCH RUN_DIR EXTRA...
  local np="$1" mbs="$2" dir="$3"; shift 3
  "$repo/launch/mpirun.sh" -np "$np" "$bin" train --config "$tmp/train.pbtxt" --run-dir "$dir" \
    --set parallel.expert_parallel="$np" --set train.micro_batch_size="$mbs" \
    --set train.routers_only=false --set router.aux_loss_coef=0.05 "$@" \
    >>"$tmp/resume.out" 2>>"$tmp/resume.err"
}
if run_train 2 2 "$tmp/whole" &&
   run_train 4 1 "$tmp/cross" --stop-after 3 && run_train 2 2 "$tmp/cross" --resume &&
   run_train 2 2 "$tmp/same" --stop-after 3 && run_train 2 2 "$tmp/same" --resume &&
   "$py" - "$tmp/whole" "$tmp/cross" "$tmp/same" <<'PY'
import json, sys
def losses(run):
    out = {}
    for line in open(run + "/metrics.jsonl"):
        r = json.loads(line)
        if r["kind"] == "loss" and r["rank"] == 0:
            out[r["step"]] = r["loss"]
    return out
whole = losses(sys.argv[1])
assert sorted(whole) == [1, 2, 3, 4, 5, 6], whole
for run in sys.argv[2:]:
    got = losses(run)
    assert sorted(got) == [1, 2, 3, 4, 5, 6], (run, got)
    for step in range(1, 7):
        assert abs(got[step] - whole[step]) <= 1e-5, (run, step, got[step], whole[step])
PY
then ok "resume equals the uninterrupted run (EP 4 -> EP 2, and EP 2 -> EP 2)"
  # The stopped and the resumed invocation each wrote an events file; together they match.
  if "$py" "$repo/tests/tensorboard_check.py" "$tmp/cross" 2 >"$tmp/tb.out" 2>&1; then
    ok "$(cat "$tmp/tb.out") (resumed run)"
  else fail "tensorboard events of a resumed run ($(tail -c 600 "$tmp/tb.out"))"; fi
else fail "resume ($(tail -c 600 "$tmp/resume.err"))"; fi

# train.recompute_layers: every decoder layer runs again in backward (its all-to-alls too); at
# EP 2 with every parameter training, the losses are the uninterrupted run's.
if run_train 2 2 "$tmp/recompute" --set train.recompute_layers=true &&
   "$py" - "$tmp/whole" "$tmp/recompute" <<'PY'
import json, sys
def losses(run):
    return {r["step"]: r["loss"] for r in map(json.loads, open(run + "/metrics.jsonl"))
            if r["kind"] == "loss" and r["rank"] == 0}
whole, got = losses(sys.argv[1]), losses(sys.argv[2])
assert sorted(got) == sorted(whole) == [1, 2, 3, 4, 5, 6], (got, whole)
for step in got:
    assert abs(got[step] - whole[step]) <= 1e-5, (step, got[step], whole[step])
PY
then ok "train.recompute_layers: the same losses at EP 2, every parameter training"
else fail "recompute_layers ($(tail -c 600 "$tmp/resume.err"))"; fi

# Live re-placement (parallel.rebalance_interval 2, any gain): at EP 4 from the contiguous split,
# and at EP 2 from the placement with replicas, experts move after steps 2 and 4 and the losses
# stay the uninterrupted contiguous run's; a run stopped at step 3 and resumed at EP 4 continues
# with the checkpoint's placement and window (the same re-placement at step 4), and one resumed
# at EP 2 starts from the configured placement and still matches.
live() { run_train "$@" --set parallel.rebalance_interval=2 --set parallel.rebalance_min_gain=0; }
if live 4 1 "$tmp/live" && live 2 2 "$tmp/live_rep" --set parallel.placement="$tmp/placement.json" &&
   live 4 1 "$tmp/live_res" --stop-after 3 && live 4 1 "$tmp/live_res" --resume &&
   live 4 1 "$tmp/live_ep2" --stop-after 3 && live 2 2 "$tmp/live_ep2" --resume &&
   "$py" - "$tmp/whole" "$tmp/live" "$tmp/live_rep" "$tmp/live_res" "$tmp/live_ep2" <<'PY'
import json, sys
def records(run, kind):
    return [r for r in map(json.loads, open(run + "/metrics.jsonl")) if r["kind"] == kind]
def losses(run):
    return {r["step"]: r["loss"] for r in records(run, "loss") if r["rank"] == 0}
whole = losses(sys.argv[1])
for run in sys.argv[2:]:
    got = losses(run)
    assert sorted(got) == [1, 2, 3, 4, 5, 6], (run, got)
    for step in got:
        assert abs(got[step] - whole[step]) <= 1e-5, (run, step, got[step], whole[step])
    moves = records(run, "placement")
    assert [m["step"] for m in moves] == [2, 4], (run, moves)
    assert moves[0]["steps"] == [1, 2] and moves[1]["steps"] == [3, 4], moves
    assert sum(l["slots_changed"] for m in moves for l in m["layers"]) > 0, (run, moves)
    for m in moves:
        for l in m["layers"]:
            assert l["after"] <= l["before"] + 1e-12, l
    # From the step after a re-placement on, load records list the new placement's experts.
    last = {l["layer"]: l["experts"] for l in moves[-1]["layers"]}
    ep = len(last[0])
    for r in records(run, "load"):
        if r["step"] > 4:
            assert r["experts"] == last[r["layer"]][r["rank"] % ep], (run, r)
# The resume at the same EP re-placed exactly as the uninterrupted run did at step 4.
assert records(sys.argv[4], "placement")[-1]["layers"] == records(sys.argv[2], "placement")[-1]["layers"]
PY
then ok "live re-placement: losses of the contiguous run (EP 4, EP 2 with replicas, resumed at EP 4 and EP 2)"
  if "$py" "$repo/tests/tensorboard_check.py" "$tmp/live" 1 >"$tmp/tb.out" 2>&1; then
    ok "$(cat "$tmp/tb.out") (live re-placement)"
  else fail "tensorboard events of a live re-placement ($(tail -c 600 "$tmp/tb.out"))"; fi
else fail "live re-placement ($(tail -c 600 "$tmp/resume.err"))"; fi
expect_error "a negative rebalance interval" "parallel.rebalance_interval = -1" \
  train --config "$tmp/train.pbtxt" --run-dir "$tmp/badlive" --set parallel.expert_parallel=1 \
  --set parallel.rebalance_interval=-1

# A damaged checkpoint is refused with one line naming the file (here loaded at EP 1).
expect_refusal() {  # NAME EXPECTED RUN_DIR
  "$bin" train --config "$tmp/train.pbtxt" --run-dir "$3" --set train.routers_only=false \
    --set parallel.expert_parallel=1 --resume >"$tmp/out" 2>"$tmp/err"; local rc=$?
  if [ "$rc" -ne 0 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -qF -- "$2" "$tmp/err"; then ok "$1"
  else fail "$1 (rc=$rc: $(head -c 300 "$tmp/err"))"; fi
}
last="$tmp/whole/checkpoints/$(cat "$tmp/whole/checkpoints/latest")"
cp -r "$tmp/whole" "$tmp/corrupt"; cp -r "$tmp/whole" "$tmp/truncated"
printf 'X' | dd of="$tmp/corrupt/checkpoints/$(basename "$last")/replicated.safetensors" bs=1 \
  seek=200 conv=notrunc status=none
truncate -s -10 "$tmp/truncated/checkpoints/$(basename "$last")/experts-ep1.safetensors"
expect_refusal "corrupt checkpoint refused" "replicated.safetensors does not match its checksum" "$tmp/corrupt"
expect_refusal "truncated checkpoint refused" "experts-ep1.safetensors has" "$tmp/truncated"
expect_error "resume without a checkpoint" "--resume: no complete checkpoint under" \
  train --config "$tmp/train.pbtxt" --run-dir "$tmp/empty" --set parallel.expert_parallel=1 --resume

# Pretraining from scratch (model.init_config) at EP 2, exported in the Hugging Face layout; then
# transformers loads the export and computes the same validation perplexity on the same packed
# blocks as the trainer's last validation.
"$py" - "$tmp/base/config.json" "$tmp/scratch.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c.update(initializer_range=0.02, torch_dtype="float32")
json.dump(c, open(sys.argv[2], "w"))
PY
grep -v checkpoint "$tmp/train.pbtxt" >"$tmp/pre.pbtxt"
echo "model { init_config: \"$tmp/scratch.json\" }" >>"$tmp/pre.pbtxt"
if "$repo/launch/mpirun.sh" -np 2 "$bin" train --config "$tmp/pre.pbtxt" --run-dir "$tmp/pre" \
     --set train.routers_only=false --set train.steps=4 --set train.eval_blocks=6 \
     --set data.valid_path="$tmp/tok/valid.tok" --export-hf "$tmp/pre_hf" \
     >"$tmp/pre.out" 2>"$tmp/pre.err" &&
   "$py" - "$tmp/pre/metrics.jsonl" "$tmp/pre_hf" "$tmp/tok/valid.tok" "$repo/scripts" <<'PY'
import json, math, sys
import torch
sys.path.insert(0, sys.argv[4])
from token_file import read_token_file
from transformers import Qwen2MoeForCausalLM
valid = [json.loads(l) for l in open(sys.argv[1]) if '"valid"' in l]
assert [v["phase"] for v in valid] == ["start", "end"], valid
assert valid[1]["ppl"] < valid[0]["ppl"], valid                    # it learned something
docs, vocab, eos = read_token_file(sys.argv[3])
stream = [t for d in docs for t in list(d) + [eos]]
S = 32
blocks = torch.tensor([stream[i * S:i * S + S + 1] for i in range(6)])
model = Qwen2MoeForCausalLM.from_pretrained(sys.argv[2], dtype=torch.float32).eval()
with torch.no_grad():
    logits = model(blocks[:, :-1]).logits
nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), blocks[:, 1:].reshape(-1))
assert abs(nll.item() - valid[1]["loss"]) < 1e-4, (nll.item(), valid[1])
PY
then ok "pretraining from scratch (EP 2), HF export: transformers' valid loss = the trainer's"
else fail "pretraining from scratch ($(tail -c 800 "$tmp/pre.err"))"; fi

# Router warm start: MLP-Hadamard routers distilled from the base's gates for 3 steps, then
# fine-tuned, experts int4; validation before (the original gates route), after distillation
# and at the end.
if "$repo/launch/mpirun.sh" -np 2 "$bin" train --config "$tmp/train.pbtxt" --run-dir "$tmp/distil" \
     --set router.mlp_hadamard.hidden=16 --set train.distill_steps=3 --set train.steps=5 \
     --set model.quant.experts=INT4 --set model.quant.group_size=32 \
     --set data.valid_path="$tmp/tok/valid.tok" --set train.eval_blocks=4 \
     >"$tmp/distil.out" 2>"$tmp/distil.err" &&
   "$py" - "$tmp/distil/metrics.jsonl" <<'PY'
import json, sys
records = [json.loads(l) for l in open(sys.argv[1])]
phases = [r["phase"] for r in records if r["kind"] == "valid"]
assert phases == ["start, original gates routing", "after router distillation", "end"], phases
loss = [r for r in records if r["kind"] == "loss" and r["rank"] == 0]
for r in loss:
    assert ("distill_kl" in r) == (r["step"] <= 3), r
    if r["step"] <= 3:
        assert r["loss"] == r["distill_kl"] and 0 <= r["topk_agreement"] <= 1, r
assert loss[2]["distill_kl"] < loss[0]["distill_kl"], loss[:3]      # it imitates the gate
PY
then ok "router distillation warm start (MLP-Hadamard, int4 experts, EP 2)"
else fail "router distillation ($(tail -c 800 "$tmp/distil.err"))"; fi

# A learning rate no model survives (what a new user tries first): non-finite steps are skipped on
# both ranks, then the run stops with one line naming the step, the rank and what was not
# finite, exit 1, no JSON library error, and its step-1 checkpoint stays loadable.
"$repo/launch/mpirun.sh" -np 2 "$bin" train --config "$tmp/train.pbtxt" --run-dir "$tmp/nan" \
  --set train.learning_rate=1e30 --set train.routers_only=false --set train.steps=20 \
  --set train.checkpoint_interval=1 --set train.max_skipped_steps=2 >"$tmp/nan.out" 2>"$tmp/nan.err"
rc=$?
if [ "$rc" -ne 0 ] && grep -q "train: 2 steps skipped in a row (train.max_skipped_steps), the last at step 2: non-finite" "$tmp/nan.err" &&
   ! grep -q "json.exception" "$tmp/nan.err" "$tmp/nan.out" &&
   [ "$(grep -c '"kind":"skip"' "$tmp/nan/metrics.jsonl")" -eq 2 ] &&
   "$bin" eval --model "$tmp/nan" --data "$tmp/tok/valid.tok" --seq-len 32 --max-sequences 2 \
     --set parallel.device=cpu >/dev/null 2>"$tmp/nan_eval.err"; then
  ok "learning rate 1e30: 2 skipped steps, then one line and exit $rc; the checkpoint evaluates"
else fail "learning rate 1e30 (rc=$rc: $(tail -c 600 "$tmp/nan.err") $(tail -c 300 "$tmp/nan_eval.err" 2>/dev/null))"; fi

expect_error "train without a checkpoint" "model.checkpoint: required" train --set data.train_path=/x
expect_error "pretraining with a checkpoint too" "model.init_config: pretraining from scratch" \
  train --config "$tmp/train.pbtxt" --set model.init_config="$tmp/scratch.json"
expect_error "distillation out of range" "train.distill_steps = 6: must be in" \
  train --config "$tmp/train.pbtxt" --set train.distill_steps=6
expect_error "train missing data" "data.train_path = /no/such.tok: not a token file" \
  train --config "$tmp/train.pbtxt" --set data.train_path=/no/such.tok
expect_error "train EP not dividing the world" "parallel.expert_parallel = 3: must divide" \
  train --config "$tmp/train.pbtxt" --set parallel.expert_parallel=3
expect_error "train unknown field" "no field 'stepz' in TrainConfig" \
  train --config "$tmp/train.pbtxt" --set train.stepz=3
expect_error "train on an unknown device" "parallel.device = tpu: must be" \
  train --config "$tmp/train.pbtxt" --set parallel.device=tpu
if ! "$bin" info 2>/dev/null | grep -q "CUDA available *yes"; then
  expect_error "train on cuda without a GPU" "parallel.device = cuda: rank 0 on" \
    train --config "$tmp/train.pbtxt" --set parallel.device=cuda --set parallel.expert_parallel=1
fi

[ "$failed" -eq 0 ] || { echo "$failed failure(s)"; exit 1; }
echo "all train tests passed"
