#!/usr/bin/env bash
# The sbatch templates in launch/slurm/ without a Slurm cluster: bash syntax, the exact srun
# line each builds from the variables sbatch sets (SWITCHYARD_DRY_RUN prints it), --resume once
# the run folder holds a checkpoint (a requeued job), and switchyard's own refusal to train when
# Slurm started more tasks than MPI sees (srun without --mpi=pmix: N worlds of one rank).
#   slurm_test.sh BIN PYTHON
set -uo pipefail
bin="$1" py="$2"
repo="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
source "$repo/tests/cli_checks.sh"

for f in "$repo"/launch/slurm/*.sbatch "$repo"/launch/slurm/*.sh "$repo"/launch/mpirun.sh; do
  if bash -n "$f"; then ok "bash -n $(basename "$f")"; else fail "bash -n $(basename "$f")"; fi
done

# What sbatch would put in the environment of the batch script for each template's #SBATCH lines.
slurm_env() {  # NODES TASKS_PER_NODE CPUS_PER_TASK
  echo SLURM_JOB_ID=4242 SLURM_JOB_NAME=switchyard-train SLURM_SUBMIT_DIR="$repo" \
    SLURM_JOB_NUM_NODES="$1" SLURM_NTASKS=$(($1 * $2)) SLURM_NTASKS_PER_NODE="$2" \
    SLURM_CPUS_PER_TASK="$3"
}
# dry_run TEMPLATE NODES TASKS_PER_NODE CPUS_PER_TASK ARGS... : the srun line it prints
dry_run() {
  local template="$1"; shift
  local vars; vars=$(slurm_env "$1" "$2" "$3"); shift 3
  (cd "$tmp" && env -u SWITCHYARD_RUN_DIR $vars SWITCHYARD_DRY_RUN=1 \
     bash "$repo/launch/slurm/$template" "$@")
}
expect_line() {  # NAME GOT WANT
  if [ "$2" = "$3" ]; then ok "$1"; else fail "$1: got '$2', want '$3'"; fi
}
run_dir="$repo/runs/switchyard-train-4242"
base="srun --mpi=pmix --kill-on-bad-exit=1"
expect_line "one_node.sbatch srun line" "$(dry_run one_node.sbatch 1 4 4 configs/x.pbtxt)" \
  "+ $base --ntasks=4 --ntasks-per-node=4 --cpus-per-task=4 --distribution=block:block $repo/build/bin/switchyard train --config configs/x.pbtxt --run-dir $run_dir --progress lines"
expect_line "multi_node.sbatch srun line" \
  "$(dry_run multi_node.sbatch 2 8 8 configs/x.pbtxt --set parallel.expert_parallel=8)" \
  "+ $base --ntasks=16 --ntasks-per-node=8 --cpus-per-task=8 --distribution=block:block $repo/build/bin/switchyard train --config configs/x.pbtxt --run-dir $run_dir --progress lines --set parallel.expert_parallel=8"

# The #SBATCH lines agree with the numbers the dry runs above used.
sbatch_value() { sed -n "s/^#SBATCH --$2=\([^ ]*\).*/\1/p" "$repo/launch/slurm/$1"; }
for spec in "one_node.sbatch 1 4 4 4" "multi_node.sbatch 2 8 8 8"; do
  set -- $spec
  got="$(sbatch_value "$1" nodes) $(sbatch_value "$1" ntasks-per-node) $(sbatch_value "$1" cpus-per-task) $(sbatch_value "$1" gpus-per-node)"
  expect_line "$1 #SBATCH nodes/tasks/cpus/gpus" "$got" "$2 $3 $4 $5"
  grep -q '^#SBATCH --requeue' "$repo/launch/slurm/$1" && ok "$1 requeues" || fail "$1 requeues"
done

# A requeued job finds its checkpoint and resumes; SWITCHYARD_RUN_DIR picks the folder.
mkdir -p "$tmp/run/checkpoints" && echo step-00000004 >"$tmp/run/checkpoints/latest"
got=$(cd "$tmp" && env $(slurm_env 1 4 4) SWITCHYARD_RUN_DIR="$tmp/run" SWITCHYARD_DRY_RUN=1 \
  SLURM_RESTART_COUNT=1 bash "$repo/launch/slurm/one_node.sbatch" configs/x.pbtxt)
case "$got" in
  *"--run-dir $tmp/run --progress lines --resume") ok "requeued job resumes from its run folder" ;;
  *) fail "requeued job resumes: $got" ;;
esac

# switchyard itself: Slurm says 4 tasks, but this process is a world of one (no PMIx).
"$py" - "$tmp/docs.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(50):
        f.write(json.dumps({"text": "each token goes to its experts and back " * 4}) + "\n")
PY
"$bin" data prepare --jsonl "$tmp/docs.jsonl" --out "$tmp/tok" >/dev/null 2>&1 &&
  "$py" "$repo/scripts/tiny_qwen2_moe.py" "$tmp/base" >/dev/null || { fail "test inputs"; exit 1; }
cat >"$tmp/train.pbtxt" <<EOF2
model { checkpoint: "$tmp/base" }
train { steps: 1 micro_batch_size: 1 seq_len: 16 }
data { train_path: "$tmp/tok/train.tok" }
EOF2
export SLURM_PROCID=0 SLURM_NTASKS=4 SLURM_LOCALID=0
expect_error "srun tasks MPI does not see are refused" \
  "SLURM_NTASKS=4 but MPI reports world size 1 (launch with srun --mpi=pmix" \
  train --config "$tmp/train.pbtxt" --run-dir "$tmp/refused"
export SLURM_NTASKS=1
"$bin" train --config "$tmp/train.pbtxt" --run-dir "$tmp/one" >"$tmp/out" 2>"$tmp/err" &&
  grep -q "rank 0 of 1, local rank 0 of 1, host .*, launcher srun, device cpu" "$tmp/one/rank0.log" &&
  ok "one srun task trains; its rank log says where it runs" ||
  fail "one srun task ($(head -c 300 "$tmp/err") / $(head -c 200 "$tmp/one/rank0.log"))"
unset SLURM_PROCID SLURM_NTASKS SLURM_LOCALID

[ "$failed" -eq 0 ] || { echo "$failed failure(s)"; exit 1; }
echo "all slurm template tests passed"
