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

"$py" - "$tmp/docs.jsonl" <<'PY'
import json, random, sys
random.seed(0)
words = "the a router sends each token to its experts and back again over ranks".split()
with open(sys.argv[1], "w") as f:
    for i in range(400):
        f.write(json.dumps({"text": " ".join(random.choice(words) for _ in range(30))}) + "\n")
PY
"$bin" data prepare --jsonl "$tmp/docs.jsonl" --out "$tmp/tok" >/dev/null 2>"$tmp/prep.err" ||
  { fail "data prepare ($(head -c 300 "$tmp/prep.err"))"; exit 1; }
"$py" "$repo/scripts/tiny_qwen2_moe.py" "$tmp/base" >/dev/null || { fail "tiny base model"; exit 1; }

cat >"$tmp/train.pbtxt" <<EOF2
model { checkpoint: "$tmp/base" }
parallel { expert_parallel: 2 }
router { top_k: 2 }
train { steps: 6 learning_rate: 0.01 warmup_steps: 2 micro_batch_size: 2 grad_accumulation: 2
        seq_len: 32 routers_only: true }
data { train_path: "$tmp/tok/train.tok" }
logging { log_interval: 3 }
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
    for key in ("step", "rank", "loss", "lr", "tokens_per_s"):
        assert key in r, (key, r)
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
    [ -s "$tmp/run/rank1.log" ] && ok "train under mpirun (EP 2): metrics.jsonl, load table, rank logs" ||
    fail "train output ($(head -c 400 "$tmp/train.out"))"
else
  fail "train under mpirun ($(tail -c 600 "$tmp/train.err"))"
fi

# Checkpoints: an uninterrupted run (EP 2, all parameters, so expert shards are saved too)
# against one stopped after 3 steps at EP 4 and resumed at EP 2, and one resumed at the same EP.
# The global batch is 4 sequences in every run (micro_batch_size x ranks). The aux loss is off
# here: each rank computes it over its own tokens, so it depends on how the batch is split.
run_train() {  # NP MICRO_BATCH RUN_DIR EXTRA...
  local np="$1" mbs="$2" dir="$3"; shift 3
  "$repo/launch/mpirun.sh" -np "$np" "$bin" train --config "$tmp/train.pbtxt" --run-dir "$dir" \
    --set parallel.expert_parallel="$np" --set train.micro_batch_size="$mbs" \
    --set train.routers_only=false --set router.aux_loss_coef=0 "$@" \
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
expect_error "resume without a checkpoint" "--resume: no checkpoint under" \
  train --config "$tmp/train.pbtxt" --run-dir "$tmp/empty" --set parallel.expert_parallel=1 --resume

expect_error "train without a checkpoint" "model.checkpoint: required" train --set data.train_path=/x
expect_error "train missing data" "data.train_path = /no/such.tok: not a token file" \
  train --config "$tmp/train.pbtxt" --set data.train_path=/no/such.tok
expect_error "train EP not dividing the world" "parallel.expert_parallel = 3: must divide" \
  train --config "$tmp/train.pbtxt" --set parallel.expert_parallel=3
expect_error "train unknown field" "no field 'stepz' in TrainConfig" \
  train --config "$tmp/train.pbtxt" --set train.stepz=3

[ "$failed" -eq 0 ] || { echo "$failed failure(s)"; exit 1; }
echo "all train tests passed"
