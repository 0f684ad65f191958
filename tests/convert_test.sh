#!/usr/bin/env bash
# `switchyard convert` writes Hugging Face checkpoints that the pinned transformers loads (no
# missing or unexpected tensors) and that compute the reference logits: from float and GPTQ
# inputs, single-process and with EP = 2 (one shard per EP rank), with quantization applied; bad
# requests fail with one line and leave no folder behind.
#   usage: convert_test.sh path/to/switchyard path/to/python REF_DIR
set -uo pipefail
bin="$1"; py="$2"; refs="$3"
here="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
check="$here/scripts/hf_qwen2_moe_reference.py"
passed=0; failed=0
ok()   { passed=$((passed + 1)); echo "ok    $1"; }
fail() { failed=$((failed + 1)); echo "FAIL  $1"; }

# convert NAME CASE NP TOLERANCE [--set ...]: convert now; transformers checks every export below
# in one process (loading transformers takes seconds on this machine, each check a fraction).
exports=()
convert() {
  local name="$1" case="$2" np="$3" tol="$4"; shift 4
  if "$here/launch/mpirun.sh" -np "$np" "$bin" convert --model "$refs/$case" --out "$tmp/$name" \
       --dtype float32 --set parallel.expert_parallel="$np" "$@" >"$tmp/log" 2>&1; then
    exports+=("$tmp/$name" "$refs/$case/reference.safetensors" "$tol")
  else
    fail "$name: $(tail -3 "$tmp/log")"
  fi
}

convert float_np1 qwen2_moe/base 1 1e-4
convert float_ep2 qwen2_moe/base 2 1e-4
convert fused_ep2 qwen2_moe/fused 2 1e-4
convert gptq_np1 gptq/gptq 1 1e-4
convert gptq_asym_ep2 gptq/gptq_asym 2 1e-4
[ "$(ls "$tmp/float_ep2" | grep -c '^model-0000[12]-of-00002.safetensors$')" -eq 2 ] \
  && ok "EP 2 writes one shard per EP rank" || fail "EP 2 shards: $(ls "$tmp/float_ep2")"
# int8 experts: the export holds the dequantized int8 weights, close to but not the reference
convert int8_np1 qwen2_moe/base 1 5e-2 --set model.quant.experts=INT8
if [ "${#exports[@]}" -gt 0 ]; then
  "$py" "$check" check-export "${exports[@]}" >"$tmp/check" 2>&1
  for ((i = 0; i < ${#exports[@]}; i += 3)); do  # each folder's line, or the script's last words
    dir="${exports[i]}"; line="$(grep -F "$dir: transformers on the export: " "$tmp/check")"
    if [ -n "$line" ] && ! grep -qF "over the tolerance" <<<"$line"; then ok "$(basename "$dir"): ${line#"$dir: "}"
    else fail "$(basename "$dir"): $(grep -F "$dir: " "$tmp/check" || tail -3 "$tmp/check")"; fi
  done
fi

# Refusals: one stderr line, non-zero exit, no folder (nor a .partial one) left behind.
"$bin" convert --model "$refs/qwen2_moe/base" --out "$tmp/mlp_router" --set router.mlp.hidden=8 \
  >/dev/null 2>"$tmp/err"; rc=$?
[ "$rc" -ne 0 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "no Hugging Face equivalent" "$tmp/err" \
  && [ ! -e "$tmp/mlp_router" ] && [ ! -e "$tmp/mlp_router.partial" ] \
  && ok "a non-linear router is refused, nothing written" || fail "mlp router (rc=$rc): $(cat "$tmp/err")"
"$bin" convert --model "$refs/qwen2_moe/base" --out "$tmp/float_np1" >/dev/null 2>"$tmp/err"; rc=$?
[ "$rc" -ne 0 ] && grep -q "already exists" "$tmp/err" && ok "an existing folder is not overwritten" \
  || fail "existing folder (rc=$rc): $(cat "$tmp/err")"

echo "convert: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
