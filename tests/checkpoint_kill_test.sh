#!/usr/bin/env bash
# Checkpoints survive any kill. (1) 2-rank training of every parameter with a checkpoint at every
# step is killed whole (SIGKILL to mpirun and both ranks) at a random moment of a random save
# (0-39 ms after its step-N.partial folder appears); each time `--resume` continues from a complete checkpoint and every step's loss
# in the run's metrics.jsonl equals the uninterrupted run's (1e-5). (2) A full disk during a
# save: RLIMIT_FSIZE with SIGXFSZ ignored makes the write fail with EFBIG, as a full filesystem
# fails it with ENOSPC; the run ends with one line and a non-zero exit, and the previous
# checkpoint is intact and resumable.
#   checkpoint_kill_test.sh BIN PYTHON [TRIALS]
set -uo pipefail
bin="$1" py="$2" trials="${3:-20}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
cleanup() { pkill -9 -s "${sid:-0}" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
source "$repo/tests/cli_checks.sh"
RANDOM=7  # the kill moments are random, and the same on every run of the test

tiny_training_inputs 3 200
cat >"$tmp/train.pbtxt" <<EOF2
model { checkpoint: "$tmp/base" }
parallel { expert_parallel: 2 device: "cpu" }
router { top_k: 2 }
train { steps: 8 learning_rate: 0.01 micro_batch_size: 2 seq_len: 32 routers_only: false
        checkpoint_interval: 1 }
data { train_path: "$tmp/tok/train.tok" }
logging { log_interval: 100 tensorboard: false }
EOF2
train() {  # RUN_DIR [ARGS...]
  local dir="$1"; shift
  "$repo/launch/mpirun.sh" -np 2 "$bin" train --config "$tmp/train.pbtxt" --run-dir "$dir" \
    --progress lines "$@" >>"$dir.out" 2>&1
}
# same_losses RUN_DIR: every step's rank-0 loss (the last record of each step) equals the
# reference run's, and every step is there.
same_losses() {
  "$py" - "$tmp/ref/metrics.jsonl" "$1/metrics.jsonl" <<'PY'
import json, sys
def losses(path):
    out = {}
    for line in open(path):
        r = json.loads(line)  # a torn line fails here
        if r["kind"] == "loss" and r["rank"] == 0:
            out[r["step"]] = r["loss"]
    return out
ref, got = losses(sys.argv[1]), losses(sys.argv[2])
assert sorted(got) == sorted(ref), (sorted(got), sorted(ref))
worst = max(abs(got[s] - ref[s]) for s in ref)
assert worst <= 1e-5, worst
PY
}

if ! train "$tmp/ref"; then fail "reference run ($(tail -c 600 "$tmp/ref.out"))"; exit 1; fi

# ---- 1: SIGKILL of the whole job at random moments -------------------------------------------
mid_save=0; resumed_ok=0
for i in $(seq 1 "$trials"); do
  dir="$tmp/kill$i"
  setsid "$repo/launch/mpirun.sh" -np 2 "$bin" train --config "$tmp/train.pbtxt" --run-dir "$dir" \
    --progress lines >"$dir.out" 2>&1 &
  sid=$!
  # A random save among steps 2..7, then a random moment in its first 40 ms.
  part="$dir/checkpoints/$(printf 'step-%08d' $((2 + RANDOM % 6))).partial"
  for _ in $(seq 1 3000); do
    [ -d "$part" ] && break
    kill -0 "$sid" 2>/dev/null || break
    sleep 0.005
  done
  sleep "$(printf '0.%03d' $((RANDOM % 40)))"
  pkill -9 -s "$sid"
  wait "$sid" 2>/dev/null  # (bash reports the job as Killed)
  # A save was under way when a folder or a file was still being written.
  if compgen -G "$dir/checkpoints/*.partial" >/dev/null ||
     compgen -G "$dir/checkpoints/*/.*.tmp.*" >/dev/null ||
     compgen -G "$dir/checkpoints/.latest.tmp.*" >/dev/null; then
    mid_save=$((mid_save + 1))
  fi
  if train "$dir" --resume && same_losses "$dir" >"$tmp/cmp" 2>&1; then
    resumed_ok=$((resumed_ok + 1))
  else
    fail "kill $i: resume ($(tail -c 400 "$dir.out") $(tail -3 "$tmp/cmp"))"
  fi
  rm -rf "$dir"
done
[ "$resumed_ok" -eq "$trials" ] &&
  ok "SIGKILL of the whole job at $trials random moments ($mid_save during a save): every --resume continued from a complete checkpoint, losses equal to the uninterrupted run's"

# ---- 2: a full disk during a save ---------------------------------------------------------------
# One process (Open MPI's shared memory would meet the file size limit first).
dir="$tmp/full"
single=(--config "$tmp/train.pbtxt" --run-dir "$dir" --progress lines --set parallel.expert_parallel=1)
if "$bin" train "${single[@]}" --stop-after 3 >"$dir.out" 2>&1; then
  before=$(cat "$dir/checkpoints/latest")
  smallest=$(stat -c %s "$dir/checkpoints/$before"/*.safetensors | sort -n | head -1)
  # Files may grow to half the smallest checkpoint file: the logs fit, no checkpoint file does.
  limit_kib=$((smallest / 2048))
  bash -c "trap '' XFSZ; ulimit -f $limit_kib; exec \"\$0\" \"\$@\"" \
    "$bin" train "${single[@]}" --resume >"$tmp/full.out" 2>&1
  rc=$?
  line=$(grep -m1 "^switchyard train: .*\.safetensors.*File too large" "$tmp/full.out")
  if [ "$rc" -ne 0 ] && [ -n "$line" ] && [ "$(grep -c . "$tmp/full.out")" -ge 1 ] &&
     [ "$(cat "$dir/checkpoints/latest")" = "$before" ] &&
     "$bin" train "${single[@]}" --resume >>"$dir.out" 2>&1 &&
     [ "$(cat "$dir/checkpoints/latest")" = "step-00000008" ]; then
    ok "full disk during a save (files limited to $limit_kib KiB): rc $rc, '$line'; $before intact, resumed to the end"
  else
    fail "full disk: rc=$rc, latest $(cat "$dir/checkpoints/latest" 2>/dev/null) ($(tail -c 700 "$tmp/full.out"))"
  fi
else
  fail "full disk: first part ($(tail -c 400 "$dir.out"))"
fi

echo "checkpoint_kill: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
