#!/usr/bin/env bash
# A rank that dies takes the whole run down, with no hang: 4-rank training under mpirun where
# (1) one rank is killed with SIGKILL once training is under way, and (2) one rank meets a
# token id past its model's vocabulary in its share of a batch and throws while the
# others wait in the step's collectives. Each case: mpirun exits non-zero and every switchyard
# process is gone within 60 s of the fault, and the output names the failed rank.
#   rank_failure_test.sh BIN PYTHON
set -uo pipefail
bin="$1" py="$2"
repo="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
launched=()  # mpirun pids, killed on the way out whatever happens
cleanup() { for p in "${launched[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT
source "$repo/tests/cli_checks.sh"
limit=60

tiny_training_inputs 1 400

config() {  # TOKEN_FILE
  cat <<EOF2
model { checkpoint: "$tmp/base" }
parallel { expert_parallel: 4 }
router { top_k: 2 }
train { steps: 100000 learning_rate: 0.01 micro_batch_size: 1 seq_len: 32 routers_only: true }
data { train_path: "$1" }
logging { log_interval: 1000 }
EOF2
}

# Starts a 4-rank run in the background (bounded by `timeout`, so it can never outlive the
# test); sets `mpirun_pid`.
start_run() {  # NAME TOKEN_FILE
  config "$2" >"$tmp/$1.pbtxt"
  timeout -k 5 240 "$repo/launch/mpirun.sh" -np 4 "$bin" train --config "$tmp/$1.pbtxt" \
    --run-dir "$tmp/$1" --progress lines >"$tmp/$1.out" 2>&1 &
  mpirun_pid=$!
  launched+=("$mpirun_pid")
}

# Pids of the ranks, from the first line each rank writes to its log ("... pid N, ...").
rank_pids() {  # RUN_DIR
  for r in 0 1 2 3; do sed -n '1s/.*, pid \([0-9]*\),.*/\1/p' "$1/rank$r.log" 2>/dev/null; done
}

# Waits until mpirun has exited and no rank pid is alive, at most `limit` seconds from the fault;
# sets rc (mpirun's exit code), elapsed and alive (pids still running).
wait_down() {  # RUN_DIR FAULT_EPOCH_SECONDS
  local pids; pids=$(rank_pids "$1")
  while :; do
    alive=""
    for p in $pids; do kill -0 "$p" 2>/dev/null && alive+="$p "; done
    if ! kill -0 "$mpirun_pid" 2>/dev/null && [ -z "$alive" ]; then break; fi
    [ $(($(date +%s) - $2)) -ge "$limit" ] && break
    sleep 0.2
  done
  elapsed=$(($(date +%s) - $2))
  if kill -0 "$mpirun_pid" 2>/dev/null; then rc="still running"; else wait "$mpirun_pid"; rc=$?; fi
}

# ---- 1: SIGKILL one rank mid-training --------------------------------------------------------
start_run killed "$tmp/tok/train.tok"
for _ in $(seq 1 600); do  # until every rank has logged its pid and rank 1 a few finished steps
  [ "$(rank_pids "$tmp/killed" | wc -l)" -eq 4 ] &&
    [ "$(grep -c '^step ' "$tmp/killed/rank1.log" 2>/dev/null)" -ge 3 ] && break
  kill -0 "$mpirun_pid" 2>/dev/null || break
  sleep 0.2
done
# Each rank's log starts with where it runs; under mpirun on one host local rank = rank.
for r in 0 1 2 3; do
  head -1 "$tmp/killed/rank$r.log" 2>/dev/null |
    grep -qE "^rank $r of 4, local rank $r of 4, host .*, pid [0-9]+, launcher mpirun, device (cpu|cuda:[0-9]+); computes on (cpu over mpi|cuda:[0-9]+ over (nccl|mpi via host memory))$" ||
    { fail "rank$r.log first line: $(head -1 "$tmp/killed/rank$r.log" 2>/dev/null)"; }
done
victim=$(rank_pids "$tmp/killed" | sed -n 2p)
if [ -z "$victim" ] || ! grep -q '^step ' "$tmp/killed/rank1.log" 2>/dev/null; then
  fail "training did not get under way ($(tail -c 600 "$tmp/killed.out"))"
else
  fault=$(date +%s)
  kill -9 "$victim"
  wait_down "$tmp/killed" "$fault"
  if [ "$rc" != "still running" ] && [ "$rc" -ne 0 ] && [ -z "$alive" ] &&
     [ "$elapsed" -le "$limit" ] &&
     grep -qE "process rank 1 with PID [0-9]+ on node .* exited on signal 9" "$tmp/killed.out"; then
    ok "SIGKILL of rank 1 (pid $victim): all ranks down in ${elapsed} s, mpirun rc $rc, rank named"
  else
    fail "SIGKILL of rank 1: rc=$rc after ${elapsed} s, alive: [$alive] ($(tail -c 800 "$tmp/killed.out"))"
  fi
fi

# ---- 2: one rank throws mid-run (a token its model does not know) ------------------------
# The base model gets half the tokenizer's vocabulary and the token file is folded into it
# (id % 4096), except one token set to 5000: a valid file (its header says 8192 ids) that only
# one block of, so only one rank's share of one batch, cannot feed this model. That rank throws
# in the middle of a step while the others wait for it in the step's all-to-all.
"$py" "$repo/scripts/tiny_qwen2_moe.py" "$tmp/base" --vocab 4096 >/dev/null ||
  { fail "tiny base model (vocab 4096)"; exit 1; }
"$py" - "$tmp/tok/train.tok" "$tmp/folded.tok" <<'PY'
import struct, sys
data = bytearray(open(sys.argv[1], "rb").read())
tokens = struct.unpack_from("<Q", data, 24)[0]
ids = struct.unpack_from(f"<{tokens}I", data, 64)
ids = [i % 4096 for i in ids]
ids[tokens // 2] = 5000
struct.pack_into(f"<{tokens}I", data, 64, *ids)
open(sys.argv[2], "wb").write(bytes(data))
PY
start_run corrupt "$tmp/folded.tok"
for _ in $(seq 1 1200); do  # until the failing rank reports (or mpirun is gone)
  grep -q "switchyard train (rank" "$tmp/corrupt.out" 2>/dev/null && break
  kill -0 "$mpirun_pid" 2>/dev/null || break
  sleep 0.2
done
wait_down "$tmp/corrupt" "$(date +%s)"
named=$(grep -oE "switchyard train \(rank [0-3] on [^)]+\): .*token id 5000 is outside the model's vocabulary" \
  "$tmp/corrupt.out" | head -1)
steps=$(cat "$tmp"/corrupt/rank*.log 2>/dev/null | grep -c '^step ')
if [ "$rc" != "still running" ] && [ "$rc" -ne 0 ] && [ -z "$alive" ] && [ -n "$named" ] &&
   [ "$elapsed" -le "$limit" ] &&
   [ "$(grep -c 'switchyard train (rank' "$tmp/corrupt.out")" -eq 1 ]; then
  ok "a rank throwing ends the run: '${named%%:*}' named, rc $rc, all down ${elapsed} s after its message, $steps rank-steps logged first"
else
  fail "a rank throwing: rc=$rc after ${elapsed} s, alive: [$alive] ($(tail -c 800 "$tmp/corrupt.out"))"
fi

[ "$failed" -eq 0 ] || { echo "$failed failure(s)"; exit 1; }
echo "all rank failure tests passed"
