#!/usr/bin/env bash
# A rank that dies or stalls takes the whole run down, with no hang: 4-rank runs under mpirun
# where (1) one rank is killed with SIGKILL once training is under way, (2) one rank meets a
# token id past its model's vocabulary in its share of a batch and throws while the
# others wait in the step's collectives, (3) one rank is stopped (SIGSTOP) mid-training and
# (4) mid-eval: the collective watchdog (parallel.timeout_s = 5) names it. Each case: mpirun exits
# non-zero and every switchyard process is gone within 60 s of the fault (35 s = timeout + 30 for
# the stops), and the output names the failed rank.
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
start_run() {  # NAME TOKEN_FILE [ARGS...]
  config "$2" >"$tmp/$1.pbtxt"
  local name="$1"; shift 2
  timeout -k 5 240 "$repo/launch/mpirun.sh" -np 4 "$bin" train --config "$tmp/$name.pbtxt" \
    --run-dir "$tmp/$name" --progress lines "$@" >"$tmp/$name.out" 2>&1 &
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
"$py" - "$tmp/tok/train.tok" "$tmp/folded.tok" "$tmp/clean.tok" <<'PY'
import struct, sys
data = bytearray(open(sys.argv[1], "rb").read())
tokens = struct.unpack_from("<Q", data, 24)[0]
ids = struct.unpack_from(f"<{tokens}I", data, 64)
ids = [i % 4096 for i in ids]
struct.pack_into(f"<{tokens}I", data, 64, *ids)
open(sys.argv[3], "wb").write(bytes(data))  # every id fits the model: for the stop cases below
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

# ---- 3 and 4: one rank stopped (kill -STOP) mid-training and mid-eval --------------------------
# A stopped rank neither dies nor answers: only the collective watchdog can end the job. It must
# name the stopped rank and the collective the others wait in, and write its flight record.
timeout_s=5
stall_limit=$((timeout_s + 30))
# The pid of the switchyard process of world rank R whose command line mentions TAG.
pid_of_rank() {  # R TAG
  for p in $(pgrep -x switchyard); do
    tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF -- "$2" &&
      tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$1" && echo "$p"
  done
}
check_stall() {  # NAME PIDS FLIGHT_LOG
  local pids="$2" line
  local fault; fault=$(date +%s)
  while :; do  # every process gone, at most stall_limit seconds after the stop
    alive=""
    for p in $pids; do kill -0 "$p" 2>/dev/null && alive+="$p "; done
    if ! kill -0 "$mpirun_pid" 2>/dev/null && [ -z "$alive" ]; then break; fi
    [ $(($(date +%s) - fault)) -ge "$stall_limit" ] && break
    sleep 0.2
  done
  elapsed=$(($(date +%s) - fault))
  if kill -0 "$mpirun_pid" 2>/dev/null; then rc="still running"; else wait "$mpirun_pid"; rc=$?; fi
  line=$(grep -m1 -E "^switchyard \(rank [0-3] on [^)]+\): collective [a-z_]+ #[0-9]+ on group [a-z0-9.]+ \(world ranks [0-9,-]+\) has not finished after [0-9.]+ s \(parallel.timeout_s = $timeout_s\); never entered by [^;]*rank 2 \(no heartbeat for [0-9.]+ s" "$tmp/$1.out")
  # The flight record is in the log of the rank that ended the job, which its line names (under
  # load any rank may time out first; MPI_Abort can end the others before they write theirs).
  local record; record=$(sed -n 's/.*; flight record in \([^;]*\); ending the job$/\1/p' <<<"$line")
  [ -n "$record" ] || record="$3"
  if [ "$rc" != "still running" ] && [ "$rc" -ne 0 ] && [ -z "$alive" ] && [ -n "$line" ] &&
     [ "$elapsed" -le "$stall_limit" ] && grep -q "^flight record" "$record" 2>/dev/null &&
     grep -qE "^  [a-z0-9.]+ +#[0-9]+ +[a-z_]+ .*in flight$" "$record"; then
    ok "kill -STOP of rank 2 $4: all down in ${elapsed} s, mpirun rc $rc: '$line'"
  else
    fail "kill -STOP of rank 2 $4: rc=$rc after ${elapsed} s, alive: [$alive], flight record $record: $(grep -c . "$record" 2>/dev/null) lines ($(tail -c 900 "$tmp/$1.out"))"
  fi
}

start_run stopped "$tmp/clean.tok" --set parallel.timeout_s=$timeout_s
for _ in $(seq 1 600); do
  [ "$(rank_pids "$tmp/stopped" | wc -l)" -eq 4 ] &&
    [ "$(grep -c '^step ' "$tmp/stopped/rank2.log" 2>/dev/null)" -ge 3 ] && break
  kill -0 "$mpirun_pid" 2>/dev/null || break
  sleep 0.2
done
pids=$(rank_pids "$tmp/stopped"); victim=$(echo "$pids" | sed -n 3p)
if [ -z "$victim" ]; then
  fail "training did not get under way ($(tail -c 600 "$tmp/stopped.out"))"
else
  kill -STOP "$victim"
  check_stall stopped "$pids" "$tmp/stopped/rank0.log" "mid-training"
  kill -9 "$victim" 2>/dev/null
fi

# Mid-eval: one row per rank per batch keeps the ranks exchanging for many seconds; the stop
# comes once rank 0's heartbeat shows the EP group's exchanges under way. TMPDIR puts the
# watchdog's folder (an eval has no run folder) where this test finds it.
mkdir -p "$tmp/evaltmp"
TMPDIR="$tmp/evaltmp" timeout -k 5 240 "$repo/launch/mpirun.sh" -np 4 -x TMPDIR "$bin" eval \
  --model "$tmp/base" --data "$tmp/clean.tok" --seq-len 8 --batch-size 1 \
  --set parallel.expert_parallel=4 --set parallel.timeout_s=$timeout_s >"$tmp/evalstop.out" 2>&1 &
mpirun_pid=$!
launched+=("$mpirun_pid")
beat=""
for _ in $(seq 1 600); do
  beat=$(ls "$tmp"/evaltmp/switchyard-watchdog-*/heartbeat/rank0 2>/dev/null | head -1)
  [ -n "$beat" ] && [ "$(sed -n 's/^group ep0 entered \([0-9]*\) .*/\1/p' "$beat")" -gt 50 ] 2>/dev/null && break
  kill -0 "$mpirun_pid" 2>/dev/null || break
  sleep 0.2
done
victim=$(pid_of_rank 2 "$tmp/clean.tok")
pids="$(for r in 0 1 2 3; do pid_of_rank $r "$tmp/clean.tok"; done)"
if [ -z "$victim" ] || [ -z "$beat" ]; then
  fail "eval did not get under way ($(tail -c 600 "$tmp/evalstop.out"))"
else
  kill -STOP "$victim"
  check_stall evalstop "$pids" "$(dirname "$(dirname "$beat")")/rank0.log" "mid-eval"
  kill -9 "$victim" 2>/dev/null
fi

[ "$failed" -eq 0 ] || { echo "$failed failure(s)"; exit 1; }
echo "all rank failure tests passed"
