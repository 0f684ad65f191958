# Sourced by the sbatch templates in this folder (not run): builds and runs the srun line of a
# `switchyard train` job step. Environment it reads, besides what sbatch sets:
#   SWITCHYARD_BIN       the binary (default: $repo/build/bin/switchyard)
#   SWITCHYARD_RUN_DIR   run folder: checkpoints/, metrics.jsonl, TensorBoard events, rank logs
#                        (default: $repo/runs/<job name>-<job id>; a requeued job keeps its id,
#                        so it finds its own checkpoints). Must be on a filesystem every node
#                        sees: each expert-parallel rank writes its own expert shard there.
#   SWITCHYARD_DRY_RUN   when set, print the srun line and stop (tests, and a look before a run)

# srun_train REPO CONFIG [more `switchyard train` arguments]
srun_train() {
  local repo="$1" config="$2"; shift 2
  local bin="${SWITCHYARD_BIN:-$repo/build/bin/switchyard}"
  local run_dir="${SWITCHYARD_RUN_DIR:-$repo/runs/${SLURM_JOB_NAME:-switchyard}-${SLURM_JOB_ID:?not inside a Slurm job}}"
  # A requeued job (preemption, node failure; SLURM_RESTART_COUNT > 0) or a resubmission into
  # the same run folder continues from the newest checkpoint instead of starting over.
  local resume=()
  [ -f "$run_dir/checkpoints/latest" ] && resume=(--resume)
  local cmd=(
    srun
    --mpi=pmix               # ranks learn rank/world from PMIx: without it each is a world of one
    --kill-on-bad-exit=1     # one rank exiting non-zero ends the step instead of leaving a hang
    --ntasks="${SLURM_NTASKS:?set --ntasks or --ntasks-per-node}"
    --ntasks-per-node="${SLURM_NTASKS_PER_NODE:?set --ntasks-per-node}"
    --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}"
    --distribution=block:block  # consecutive ranks on one node: EP groups stay inside it
    "$bin" train --config "$config" --run-dir "$run_dir" --progress lines "${resume[@]}" "$@"
  )
  echo "+ ${cmd[*]}"
  [ -n "${SWITCHYARD_DRY_RUN:-}" ] && return 0
  mkdir -p "$run_dir"
  # Intra-op threads per rank: the CPUs Slurm gave the task, not every core of the node.
  export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-1}"
  "${cmd[@]}"
}
