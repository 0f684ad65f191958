#!/usr/bin/env bash
# `switchyard eval --dump-logits` against transformers, single-process and under mpirun with
# EP = 2 and EP = 4, on sequences of different lengths (padding masked); float checkpoints and
# GPTQ-Int4 ones (compared with transformers running the dequantized model).
#   usage: eval_parity_test.sh path/to/switchyard path/to/python REF_DIR
set -uo pipefail
bin="$1"; py="$2"; refs="$3"
here="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
failed=0
for case in qwen2_moe/base qwen2_moe/fused gptq/gptq gptq/gptq_asym; do
  dir="$refs/$case"
  for np in 1 2 4; do
    ep=$np; [ "$np" -eq 4 ] && ep=2   # 4 ranks: EP 2 x DP 2
    out="$tmp/${case//\//_}.$np.safetensors"
    if "$here/launch/mpirun.sh" -np "$np" "$bin" eval --model "$dir" --tokens "$dir/eval_tokens.txt" \
         --dump-logits "$out" --dtype float32 --set parallel.expert_parallel=$ep >"$tmp/log" 2>&1 &&
       "$py" "$here/scripts/logits_compare.py" reference "$out" "$dir/eval_reference.safetensors" >"$tmp/cmp" 2>&1; then
      echo "ok    $case np=$np ep=$ep: $(cat "$tmp/cmp")"
    else
      echo "FAIL  $case np=$np ep=$ep: $(tail -3 "$tmp/log") $(cat "$tmp/cmp" 2>/dev/null)"; failed=1
    fi
  done
done
exit $failed
