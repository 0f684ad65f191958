#!/usr/bin/env bash
# `switchyard train` on a GPU (skipped, exit 77, where none is visible), with the CPU run as the
# reference: fp32 on one GPU follows the CPU's losses; two ranks on the GPU(s) (sharing one over
# MPI through host memory, or NCCL with a GPU each) follow the one-rank run; bf16 autocast (the
# default on GPUs) stays close and learns; a GPU run stopped and resumed equals the
# uninterrupted one; `eval` on the GPU equals `eval` on the CPU.
#   train_gpu_test.sh BIN PYTHON
set -uo pipefail
bin="$1" py="$2"
repo="$(cd "$(dirname "$0")/.." && pwd)"
"$bin" info 2>/dev/null | grep -q "CUDA available *yes" || { echo "skipped: no GPU visible"; exit 77; }
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
source "$repo/tests/cli_checks.sh"
d=""  # what the last comparison printed

tiny_training_inputs 0 400
cat >"$tmp/train.pbtxt" <<EOF2
model { checkpoint: "$tmp/base" }
router { top_k: 2 aux_loss_coef: 0.01 }
train { steps: 8 learning_rate: 0.01 warmup_steps: 2 micro_batch_size: 4 grad_accumulation: 2
        seq_len: 32 routers_only: false }
data { train_path: "$tmp/tok/train.tok" valid_path: "$tmp/tok/valid.tok" }
logging { log_interval: 4 tensorboard: false }
EOF2
run() {  # NAME NP ARGS... (the global batch is 4 sequences per micro-batch at any NP)
  local name="$1" np="$2"; shift 2
  "$repo/launch/mpirun.sh" -np "$np" "$bin" train --config "$tmp/train.pbtxt" \
    --run-dir "$tmp/$name" --set parallel.expert_parallel="$np" \
    --set train.micro_batch_size=$((4 / np)) "$@" >>"$tmp/$name.out" 2>&1 ||
    { fail "train $name ($(tail -c 600 "$tmp/$name.out"))"; return 1; }
}
fp32=(--set train.precision=PRECISION_FP32)
# close A B TOLERANCE: every step's rank-0 loss of run B within TOLERANCE (relative) of run A's.
close() { losses_close "$tmp/$1/metrics.jsonl" "$tmp/$2/metrics.jsonl" "$3" 8; }

if run cpu 1 --set parallel.device=cpu "${fp32[@]}" && run gpu 1 --set parallel.device=cuda "${fp32[@]}"; then
  grep -q "on cuda:0 over single process" "$tmp/gpu.out" && ! grep -q "bf16 autocast" "$tmp/gpu.out" &&
    d=$(close cpu gpu 1e-4) && ok "fp32 on the GPU follows the CPU ($d)" ||
    fail "fp32 GPU against CPU ($d; $(grep -m1 '^training' "$tmp/gpu.out"))"
fi
if run gpu_np2 2 "${fp32[@]}"; then
  grep -qE "on cuda:[0-9] over (mpi via host memory|nccl)" "$tmp/gpu_np2.out" &&
    d=$(close gpu gpu_np2 1e-4) && ok "two ranks on the GPU(s) follow one ($d; $(grep -m1 -oE 'cuda:[0-9] over [a-z ]+' "$tmp/gpu_np2.out"))" ||
    fail "two ranks against one ($d; $(grep -m1 '^training' "$tmp/gpu_np2.out"))"
fi
if run bf16 1; then
  if grep -q "bf16 autocast" "$tmp/bf16.out" && d=$(close gpu bf16 3e-2) &&
     "$py" - "$tmp/bf16/metrics.jsonl" <<'PY'
import json, sys
records = [json.loads(line) for line in open(sys.argv[1])]
loss = [r["loss"] for r in records if r["kind"] == "loss" and r["rank"] == 0]
valid = [r["ppl"] for r in records if r["kind"] == "valid"]
assert loss[-1] < loss[0] and valid[-1] < valid[0], (loss, valid)
PY
  then ok "bf16 autocast stays close to fp32 and learns ($d)"
  else fail "bf16 autocast ($d; $(grep -m1 '^training' "$tmp/bf16.out"))"; fi
fi
if run resumed 1 --set parallel.device=cuda "${fp32[@]}" --stop-after 4 &&
   run resumed 1 --set parallel.device=cuda "${fp32[@]}" --resume; then
  d=$(close gpu resumed 1e-5) && ok "a GPU run resumed equals the uninterrupted one ($d)" ||
    fail "GPU resume ($d)"
fi

# eval of the fp32 GPU run, on the GPU and on the CPU.
evaluate() {  # DEVICE
  "$bin" eval --model "$tmp/gpu" --data "$tmp/tok/valid.tok" --seq-len 32 --dtype float32 \
    --set parallel.device="$1" --json "$tmp/eval_$1.json" >"$tmp/eval_$1.out" 2>&1
}
if evaluate cuda && evaluate cpu &&
   "$py" - "$tmp/eval_cuda.json" "$tmp/eval_cpu.json" <<'PY'
import json, sys
g, c = (json.load(open(p)) for p in sys.argv[1:])
assert abs(g["mean_nll"] - c["mean_nll"]) <= 1e-5 * c["mean_nll"], (g["mean_nll"], c["mean_nll"])
PY
then ok "eval on the GPU equals eval on the CPU"
else fail "eval on the GPU ($(tail -c 400 "$tmp/eval_cuda.out"))"; fi

[ "$failed" -eq 0 ] || { echo "$failed failure(s)"; exit 1; }
echo "all GPU training tests passed"
