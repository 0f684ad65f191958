#!/usr/bin/env bash
# The sbatch templates on a real, private one-node Slurm cluster (munged, slurmctld and slurmd
# from Debian's slurm-wlm, started here with their own config, ports and spool in a temporary
# folder, and stopped at the end): a 4-rank job trains through srun --mpi=pmix; submitted again
# into the same run folder it resumes; srun without PMIx is refused; and a rank killed with
# SIGKILL ends the whole job step (--kill-on-bad-exit) within 60 s with the task named.
# Exits 77 (skipped) unless run as root with slurmctld, slurmd, munged, sbatch and srun installed
# (apt-get install slurmd slurmctld slurm-client munge).
#   slurm_cluster_test.sh BIN PYTHON
set -uo pipefail
bin="$(realpath "$1")" py="$2"
repo="$(cd "$(dirname "$0")/.." && pwd)"
for tool in munged slurmctld slurmd sbatch srun squeue sinfo; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] ||
    { echo "skipped: $tool is not installed"; exit 77; }
done
[ "$(id -u)" -eq 0 ] || { echo "skipped: the private cluster's daemons run as root"; exit 77; }
export PATH="$PATH:/usr/sbin"
tmp="$(mktemp -d)"
daemons=()  # pids of munged, slurmctld, slurmd: run in the foreground as our children, so
            # they are stopped and reaped here rather than left to whatever init the machine has
cleanup() {
  for ((i = ${#daemons[@]} - 1; i >= 0; i--)); do
    kill "${daemons[i]}" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "${daemons[i]}" 2>/dev/null || break; sleep 0.1; done
    kill -9 "${daemons[i]}" 2>/dev/null; wait "${daemons[i]}" 2>/dev/null
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
source "$repo/tests/cli_checks.sh"

# ---- the cluster ---------------------------------------------------------------------------
c="$tmp/cluster"; mkdir -p "$c/state" "$c/spool" "$c/munge"; chmod 700 "$c/munge"
head -c 1024 /dev/urandom >"$c/munge/key"; chmod 400 "$c/munge/key"
munged --foreground --force --socket="$c/munge/sock" --key-file="$c/munge/key" \
  --pid-file="$c/munged.pid" --log-file="$c/munged.log" --seed-file="$c/munge/seed" &
daemons+=($!)
for _ in $(seq 1 50); do [ -S "$c/munge/sock" ] && break; sleep 0.1; done
host=$(hostname -s) port=$((20000 + RANDOM % 20000))
cat >"$c/slurm.conf" <<EOF2
ClusterName=switchyard-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$c/munge/sock
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$c/state
SlurmdSpoolDir=$c/spool
SlurmctldPidFile=$c/slurmctld.pid
SlurmdPidFile=$c/slurmd.pid
SlurmctldLogFile=$c/slurmctld.log
SlurmdLogFile=$c/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=8 RealMemory=1000 State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF2
export SLURM_CONF="$c/slurm.conf"
slurmctld -D -i -f "$SLURM_CONF" >"$c/slurmctld.out" 2>&1 &
daemons+=($!)
sleep 0.5
slurmd -D -f "$SLURM_CONF" >"$c/slurmd.out" 2>&1 &
daemons+=($!)
for _ in $(seq 1 60); do
  [ "$(sinfo -h -o %t 2>/dev/null)" = "idle" ] && break
  sleep 0.5
done
[ "$(sinfo -h -o %t 2>/dev/null)" = "idle" ] ||
  { fail "one-node cluster up ($(tail -c 400 "$c/slurmctld.log"))"; exit 1; }

# ---- inputs --------------------------------------------------------------------------------
tiny_training_inputs 2 200
cat >"$tmp/train.pbtxt" <<EOF2
model { checkpoint: "$tmp/base" }
parallel { expert_parallel: 4 }
train { steps: 4 micro_batch_size: 1 seq_len: 32 routers_only: true }
data { train_path: "$tmp/tok/train.tok" }
EOF2
# This machine has no GPUs and few cores: the templates' GPU and CPU requests are overridden on
# the sbatch command line (which takes precedence over #SBATCH lines); the rest is theirs.
submit() {  # TEMPLATE RUN_DIR SBATCH_OPTIONS... -- TRAIN_ARGS...
  local template="$1" run="$2"; shift 2
  local opts=(); while [ "$1" != "--" ]; do opts+=("$1"); shift; done; shift
  (cd "$tmp" && SWITCHYARD_REPO="$repo" SWITCHYARD_BIN="$bin" SWITCHYARD_RUN_DIR="$run" \
     sbatch --parsable --gpus-per-node=0 --cpus-per-task=1 "${opts[@]}" \
       "$repo/launch/slurm/$template" "$tmp/train.pbtxt" "$@")
}
# sbatch --wait polls with growing pauses (seconds each); squeue every 0.2 s is quicker.
wait_job() {  # JOB
  for _ in $(seq 1 600); do [ -z "$(squeue -h -j "$1" 2>/dev/null)" ] && return 0; sleep 0.2; done
  scancel "$1"; return 1
}
steps_of() {  # RUN_DIR: sorted distinct steps in metrics.jsonl with all 4 ranks
  "$py" -c "
import json, sys, collections
n = collections.Counter(json.loads(l)['step'] for l in open(sys.argv[1]) if '\"loss\"' in l)
print(' '.join(str(s) for s in sorted(n) if n[s] == 4))" "$1/metrics.jsonl" 2>/dev/null
}

# ---- 1: a job trains, and a second submission resumes it ------------------------------------
job=$(submit one_node.sbatch "$tmp/run" --); wait_job "$job"
out="$tmp/slurm-switchyard-train-$job.out"
if grep -q "training finished" "$out" && grep -q "^+ srun --mpi=pmix --kill-on-bad-exit=1" "$out" &&
   [ "$(cat "$tmp"/run/rank*.log | grep -c 'launcher srun')" -eq 4 ] &&
   [ "$(steps_of "$tmp/run")" = "1 2 3 4" ]; then
  ok "one_node.sbatch: 4 ranks through srun --mpi=pmix, 4 steps (job $job)"
else fail "one_node.sbatch job ($(tail -c 600 "$out"))"; fi
job=$(submit one_node.sbatch "$tmp/run" -- --set train.steps=6); wait_job "$job"
out="$tmp/slurm-switchyard-train-$job.out"
if grep -q "^+ srun .* --resume --set train.steps=6" "$out" && grep -q "resumed from" "$out" &&
   [ "$(steps_of "$tmp/run")" = "1 2 3 4 5 6" ] &&
   [ "$(ls "$tmp"/run/events.out.tfevents.* | wc -l)" -eq 2 ]; then
  ok "submitted again into its run folder, the job resumes (steps 5-6, job $job)"
else fail "resubmission ($(tail -c 600 "$out"))"; fi

# ---- 2: srun without PMIx -------------------------------------------------------------------
(cd "$tmp" && timeout 120 srun --mpi=none -n 2 --kill-on-bad-exit=1 "$bin" train \
   --config "$tmp/train.pbtxt" --run-dir "$tmp/none" >"$tmp/none.out" 2>&1); rc=$?
if [ "$rc" -ne 0 ] && grep -q "SLURM_NTASKS=2 but MPI reports world size 1" "$tmp/none.out"; then
  ok "srun without PMIx is refused (rc $rc)"
else fail "srun without PMIx (rc $rc: $(tail -c 400 "$tmp/none.out"))"; fi

# ---- 3: SIGKILL of one rank in a multi_node.sbatch job (on this one node) --------------------
job=$(submit multi_node.sbatch "$tmp/long" --nodes=1 --ntasks-per-node=4 -- \
  --set train.steps=100000)
out="$tmp/slurm-switchyard-train-$job.out"
pid=""
for _ in $(seq 1 300); do
  pid=$(sed -n '1s/.*, pid \([0-9]*\),.*/\1/p' "$tmp/long/rank1.log" 2>/dev/null)
  [ -n "$pid" ] && [ "$(grep -c '^step ' "$tmp/long/rank1.log")" -ge 3 ] && break
  sleep 0.2
done
pids=$(for r in 0 1 2 3; do sed -n '1s/.*, pid \([0-9]*\),.*/\1/p' "$tmp/long/rank$r.log" 2>/dev/null; done)
if [ -z "$pid" ]; then
  fail "multi_node.sbatch job did not get under way ($(tail -c 600 "$out"))"
  scancel "$job"
else
  fault=$(date +%s)
  kill -9 "$pid"
  while :; do
    alive=""; for p in $pids; do kill -0 "$p" 2>/dev/null && alive+="$p "; done
    [ -z "$alive" ] && [ -z "$(squeue -h -j "$job" 2>/dev/null)" ] && break
    [ $(($(date +%s) - fault)) -ge 60 ] && break
    sleep 0.2
  done
  elapsed=$(($(date +%s) - fault))
  if [ -z "$alive" ] && [ -z "$(squeue -h -j "$job" 2>/dev/null)" ] &&
     grep -qE "task 1: Killed" "$out"; then
    ok "SIGKILL of rank 1 under srun: job $job over in ${elapsed} s, task 1 named"
  else
    fail "SIGKILL under srun: ${elapsed} s, alive [$alive] ($(tail -c 600 "$out"))"
    scancel "$job" 2>/dev/null
  fi
fi

[ "$failed" -eq 0 ] || { echo "$failed failure(s)"; exit 1; }
echo "all slurm cluster tests passed"
