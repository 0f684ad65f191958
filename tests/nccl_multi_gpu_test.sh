#!/usr/bin/env bash
# NCCL across GPUs, one per rank, at NP ranks (skipped, exit 77, saying why, where fewer than NP
# GPUs are visible): the NcclMultiGpu cases (tests/test_nccl_mpi.cpp: uneven and empty
# all-to-alls, count exchanges and reductions against MPI); `switchyard train` at EP NP over
# NCCL against one rank on one GPU (fp32, every step's loss within 1e-4); and one rank stopped
# (SIGSTOP) mid-training: the collective watchdog ends the job within parallel.timeout_s + 30 s
# and names the rank.
#   nccl_multi_gpu_test.sh NP BIN MPI_TESTS PYTHON
set -uo pipefail
np="$1" bin="$2" mpi_tests="$3" py="$4"
repo="$(cd "$(dirname "$0")/.." && pwd)"
gpus=$("$bin" info 2>/dev/null | sed -n 's/^ *CUDA available *yes, \([0-9]*\) device.*/\1/p')
if [ "${gpus:-0}" -lt "$np" ]; then
  echo "skipped: ${gpus:-0} GPU(s) visible; NCCL at $np ranks needs a GPU per rank"
  exit 77
fi
tmp="$(mktemp -d)"
launched=()
cleanup() { for p in "${launched[@]}"; do kill -9 "$p" 2>/dev/null; done; rm -rf "$tmp"; }
trap cleanup EXIT
source "$repo/tests/cli_checks.sh"

"$repo/launch/mpirun.sh" -np "$np" "$mpi_tests" --gtest_filter='NcclMultiGpu.*' >"$tmp/gtest.out" 2>&1
rc=$?
if [ "$rc" -eq 0 ] && grep -q "PASSED" "$tmp/gtest.out" && ! grep -q "SKIPPED \]" "$tmp/gtest.out"; then
  ok "NcclMultiGpu cases at $np ranks"
else fail "NcclMultiGpu cases at $np ranks (rc $rc: $(tail -c 800 "$tmp/gtest.out"))"; fi

tiny_training_inputs 0 400
cat >"$tmp/train.pbtxt" <<EOF2
model { checkpoint: "$tmp/base" }
router { top_k: 2 aux_loss_coef: 0.01 }
parallel { device: "cuda" }
train { steps: 8 learning_rate: 0.01 warmup_steps: 2 micro_batch_size: 4 seq_len: 32
        routers_only: false precision: PRECISION_FP32 }
data { train_path: "$tmp/tok/train.tok" }
logging { log_interval: 4 tensorboard: false }
EOF2
run() {  # NAME NP: the same global batch of 4 sequences at any NP
  "$repo/launch/mpirun.sh" -np "$2" "$bin" train --config "$tmp/train.pbtxt" --run-dir "$tmp/$1" \
    --set parallel.expert_parallel="$2" --set train.micro_batch_size=$((4 / $2)) \
    >"$tmp/$1.out" 2>&1 || { fail "train $1 ($(tail -c 600 "$tmp/$1.out"))"; return 1; }
}
if run one 1 && run nccl "$np"; then
  if grep -q "over nccl" "$tmp/nccl.out" &&
     d=$(losses_close "$tmp/one/metrics.jsonl" "$tmp/nccl/metrics.jsonl" 1e-4 8); then
    ok "EP $np over NCCL follows one GPU ($d)"
  else fail "EP $np over NCCL against one GPU ($d; $(grep -m1 '^training' "$tmp/nccl.out"))"; fi
fi

# The watchdog: the last rank stopped once it has logged 3 steps of a long run.
timeout_s=5
victim_rank=$((np - 1))
timeout -k 5 240 "$repo/launch/mpirun.sh" -np "$np" "$bin" train --config "$tmp/train.pbtxt" \
  --run-dir "$tmp/stopped" --set parallel.expert_parallel="$np" --set train.steps=100000 \
  --set train.micro_batch_size=1 --set parallel.timeout_s=$timeout_s --progress lines \
  >"$tmp/stopped.out" 2>&1 &
mpirun_pid=$!
launched+=("$mpirun_pid")
for _ in $(seq 1 600); do
  [ "$(grep -c '^step ' "$tmp/stopped/rank$victim_rank.log" 2>/dev/null)" -ge 3 ] && break
  kill -0 "$mpirun_pid" 2>/dev/null || break
  sleep 0.2
done
victim=$(sed -n '1s/.*, pid \([0-9]*\),.*/\1/p' "$tmp/stopped/rank$victim_rank.log" 2>/dev/null)
if [ -z "$victim" ]; then
  fail "watchdog: training did not get under way ($(tail -c 600 "$tmp/stopped.out"))"
else
  kill -STOP "$victim"
  fault=$(date +%s)
  while kill -0 "$mpirun_pid" 2>/dev/null && [ $(($(date +%s) - fault)) -lt $((timeout_s + 30)) ]; do
    sleep 0.2
  done
  elapsed=$(($(date +%s) - fault))
  if kill -0 "$mpirun_pid" 2>/dev/null; then rc="still running"; else wait "$mpirun_pid"; rc=$?; fi
  kill -9 "$victim" 2>/dev/null
  line=$(grep -m1 -E "collective .* has not finished after .*rank $victim_rank" "$tmp/stopped.out")
  if [ "$rc" != "still running" ] && [ "$rc" -ne 0 ] && [ -n "$line" ]; then
    ok "kill -STOP of rank $victim_rank over NCCL: down in ${elapsed} s, rc $rc: '$line'"
  else
    fail "kill -STOP of rank $victim_rank over NCCL: rc=$rc after ${elapsed} s ($(tail -c 900 "$tmp/stopped.out"))"
  fi
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
