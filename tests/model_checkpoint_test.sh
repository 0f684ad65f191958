#!/usr/bin/env bash
# Switchyard model checkpoints end to end: HF -> Switchyard (int4 experts kept as codes) ->
# `eval --dump-logits` equals the HF folder evaluated with the same quant config bit for bit, at
# EP 1, 2 and 4 (against the HF folder at the same EP) whatever EP the checkpoint was written at; Switchyard -> HF loads in
# transformers and computes the same logits; a training checkpoint (run folder) evaluates as
# its base with the trained routers; BERT_MOE through the run config matches transformers;
# damaged checkpoints and architecture mismatches are refused with one line.
#   usage: model_checkpoint_test.sh path/to/switchyard path/to/python REF_DIR
set -uo pipefail
bin="$1"; py="$2"; refs="$3"
repo="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
source "$repo/tests/cli_checks.sh"
mpirun="$repo/launch/mpirun.sh"
# expect_refusal NAME EXPECTED ARGS...: a non-zero exit and exactly one stderr line with EXPECTED
expect_refusal() {
  local name="$1" want="$2"; shift 2
  "$bin" "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
  local lines; lines=$(wc -l <"$tmp/err")
  if [ "$rc" -ne 0 ] && [ "$lines" -eq 1 ] && grep -qF -- "$want" "$tmp/err"; then ok "$name"
  else fail "$name (rc=$rc, $lines stderr lines: $(head -c 300 "$tmp/err"))"; fi
}
qwen="$refs/qwen2_moe/base"   # 8 experts: EP 1, 2 and 4 all divide it
tokens="$qwen/eval_tokens.txt"
int4=(--set model.quant.experts=INT4 --set model.quant.group_size=8 --set model.quant.symmetric=false)

# same_logits A B: bitwise equal logits (and the same padding mask)
same_logits() { "$py" "$repo/scripts/logits_compare.py" same "$1" "$2" >/dev/null; }
# close_logits A B: equal to 1e-5 of the scale (EP sizes may round differently)
close_logits() { "$py" "$repo/scripts/logits_compare.py" close "$1" "$2" 1e-5 >/dev/null; }
run_eval() {  # NP MODEL OUT [ARGS...]
  local np="$1" model="$2" out="$3"; shift 3
  "$mpirun" -np "$np" "$bin" eval --model "$model" --tokens "$tokens" --dump-logits "$out" \
    --dtype float32 --set parallel.expert_parallel="$np" "$@" >"$tmp/eval.log" 2>&1
}

# ---- HF -> Switchyard (int4 codes) -> eval, bitwise against the HF folder with the same quant --
if run_eval 1 "$qwen" "$tmp/hf_int4.st" "${int4[@]}" && run_eval 2 "$qwen" "$tmp/hf_int4.2.st" "${int4[@]}" &&
   run_eval 4 "$qwen" "$tmp/hf_int4.4.st" "${int4[@]}" && cp "$tmp/hf_int4.st" "$tmp/hf_int4.1.st" &&
   "$bin" convert --model "$qwen" --out "$tmp/sy_int4" --format switchyard "${int4[@]}" \
     >"$tmp/log" 2>&1; then
  ok "HF -> Switchyard int4 checkpoint written"
else fail "HF int4 eval / convert ($(tail -3 "$tmp/eval.log" "$tmp/log"))"; fi
[ -f "$tmp/sy_int4/manifest.pb" ] && [ -f "$tmp/sy_int4/experts-ep0.safetensors" ] &&
  [ ! -e "$tmp/sy_int4.partial" ] && ok "layout: manifest.pb, replicated and expert files" ||
  fail "layout: $(ls "$tmp/sy_int4" 2>&1)"
for np in 1 2 4; do  # the quant comes from the manifest: no --set needed
  if run_eval "$np" "$tmp/sy_int4" "$tmp/sy_int4.$np.st" && same_logits "$tmp/hf_int4.$np.st" "$tmp/sy_int4.$np.st"; then
    ok "Switchyard int4 checkpoint at EP $np: logits bitwise equal to the HF folder's at EP $np"
  else fail "Switchyard int4 at EP $np ($(tail -3 "$tmp/eval.log"))"; fi
done
if "$mpirun" -np 2 "$bin" convert --model "$qwen" --out "$tmp/sy_int4_ep2" --format switchyard \
     --set parallel.expert_parallel=2 "${int4[@]}" >"$tmp/log" 2>&1 &&
   [ -f "$tmp/sy_int4_ep2/experts-ep1.safetensors" ] &&
   run_eval 4 "$tmp/sy_int4_ep2" "$tmp/sy_ep2_at4.st" && same_logits "$tmp/hf_int4.4.st" "$tmp/sy_ep2_at4.st"; then
  ok "written at EP 2, read at EP 4: bitwise equal"
else fail "EP 2 -> EP 4 ($(tail -3 "$tmp/log" "$tmp/eval.log"))"; fi
"$bin" inspect "$tmp/sy_int4" >"$tmp/inspect" 2>&1 && grep -q "int4, group 8, zero points (experts as codes)" "$tmp/inspect" &&
  grep -q "switchyard checkpoint = complete" "$tmp/inspect" && ok "inspect reads a Switchyard checkpoint" ||
  fail "inspect ($(head -c 400 "$tmp/inspect"))"

# ---- Switchyard -> HF: transformers loads it and computes the reference logits ----------------
if "$mpirun" -np 2 "$bin" convert --model "$qwen" --out "$tmp/sy_float" --format switchyard \
     --dtype float32 --set parallel.expert_parallel=2 >"$tmp/log" 2>&1 &&
   "$bin" convert --model "$tmp/sy_float" --out "$tmp/hf_again" --format hf --dtype float32 >>"$tmp/log" 2>&1 &&
   "$py" "$repo/scripts/hf_qwen2_moe_reference.py" check-export "$tmp/hf_again" "$qwen/reference.safetensors" 1e-4 >"$tmp/check" 2>&1; then
  ok "HF -> Switchyard -> HF: $(tail -1 "$tmp/check" | sed 's/^[^:]*: //')"
else fail "Switchyard -> HF ($(tail -3 "$tmp/log") $(tail -3 "$tmp/check"))"; fi
# int4: the export holds the dequantized codes; transformers on it computes our int4 logits
if "$bin" convert --model "$tmp/sy_int4" --out "$tmp/hf_int4" --format hf --dtype float32 >"$tmp/log" 2>&1 &&
   "$py" - "$tmp/hf_int4" "$tokens" "$tmp/hf_int4.st" >"$tmp/check" 2>&1 <<'PY'
import sys, torch
from safetensors.torch import load_file
from transformers import Qwen2MoeForCausalLM
model = Qwen2MoeForCausalLM.from_pretrained(sys.argv[1], attn_implementation="eager", dtype=torch.float32).eval()
rows = [[int(t) for t in line.split()] for line in open(sys.argv[2]) if line.strip()]
S = max(map(len, rows))
ids = torch.zeros(len(rows), S, dtype=torch.long); mask = torch.zeros_like(ids)
for i, r in enumerate(rows):
    ids[i, :len(r)] = torch.tensor(r); mask[i, :len(r)] = 1
with torch.no_grad():
    ref = model(input_ids=ids, attention_mask=mask).logits.float()
ours = load_file(sys.argv[3])["logits"]
keep = mask.bool()
err = (ours - ref)[keep].abs().max().item() / max(1.0, ref.abs().max().item())
print(f"transformers on the int4 export vs switchyard int4: {err:.3e}")
sys.exit(0 if err <= 1e-4 else 1)
PY
then ok "Switchyard int4 -> HF: $(tail -1 "$tmp/check")"
else fail "int4 -> HF ($(tail -3 "$tmp/log") $(tail -3 "$tmp/check"))"; fi

# ---- a training checkpoint (run folder) evaluates as its base with the trained routers --------
"$py" "$repo/scripts/tiny_qwen2_moe.py" "$tmp/base" --vocab 8192 >/dev/null 2>&1 &&
"$py" - "$tmp/docs.jsonl" <<'PY'
import json, random, sys
random.seed(0)
words = "the a router sends each token to its experts and back again over ranks".split()
with open(sys.argv[1], "w") as f:
    for i in range(200):
        f.write(json.dumps({"text": " ".join(random.choice(words) for _ in range(30))}) + "\n")
PY
"$bin" data prepare --jsonl "$tmp/docs.jsonl" --out "$tmp/tok" >/dev/null 2>&1
cat >"$tmp/train.pbtxt" <<EOF2
model { checkpoint: "$tmp/base" }
router { top_k: 2 }
train { steps: 3 learning_rate: 0.05 micro_batch_size: 2 seq_len: 16 routers_only: true }
data { train_path: "$tmp/tok/train.tok" }
EOF2
if "$bin" train --config "$tmp/train.pbtxt" --run-dir "$tmp/run" --dtype float32 >"$tmp/log" 2>&1 &&
   "$bin" eval --model "$tmp/run" --tokens "$tokens" --dump-logits "$tmp/run.st" --dtype float32 >"$tmp/eval.log" 2>&1 &&
   "$mpirun" -np 2 "$bin" eval --model "$tmp/run" --tokens "$tokens" --dump-logits "$tmp/run2.st" \
     --dtype float32 --set parallel.expert_parallel=2 >>"$tmp/eval.log" 2>&1 &&
   close_logits "$tmp/run.st" "$tmp/run2.st" &&
   "$py" - "$tmp/base" "$tmp/run" "$tokens" "$tmp/run.st" >"$tmp/check" 2>&1 <<'PY'
import glob, sys, torch
from safetensors.torch import load_file
from transformers import Qwen2MoeForCausalLM
base, run, tokens, ours = sys.argv[1:]
ckpt = sorted(glob.glob(run + "/checkpoints/step-*"))[-1]
saved = load_file(ckpt + "/replicated.safetensors")
model = Qwen2MoeForCausalLM.from_pretrained(base, attn_implementation="eager", dtype=torch.float32).eval()
rows = [[int(t) for t in line.split()] for line in open(tokens) if line.strip()]
S = max(map(len, rows))
ids = torch.zeros(len(rows), S, dtype=torch.long); mask = torch.zeros_like(ids)
for i, r in enumerate(rows):
    ids[i, :len(r)] = torch.tensor(r); mask[i, :len(r)] = 1
with torch.no_grad():
    before = model(input_ids=ids, attention_mask=mask).logits.float()
    n = 0
    for i, layer in enumerate(model.model.layers):
        layer.mlp.gate.weight.copy_(saved[f"param.layers.{i}.moe.router.gate.weight"]); n += 1
    after = model(input_ids=ids, attention_mask=mask).logits.float()
got = load_file(ours)["logits"]
keep = mask.bool()
scale = max(1.0, after.abs().max().item())
err = (got - after)[keep].abs().max().item() / scale
moved = (got - before)[keep].abs().max().item() / scale
print(f"{n} trained routers: vs transformers with them {err:.3e}, vs the base {moved:.3e}")
sys.exit(0 if err <= 1e-4 and moved > 1e-6 else 1)
PY
then ok "training checkpoint (run folder) at EP 1 and 2: $(tail -1 "$tmp/check")"
else fail "training checkpoint eval ($(tail -3 "$tmp/log") $(tail -3 "$tmp/eval.log") $(tail -3 "$tmp/check"))"; fi

# All parameters trained at EP 2 (experts saved per global index): read back at EP 1 and EP 4.
if "$mpirun" -np 2 "$bin" train --config "$tmp/train.pbtxt" --run-dir "$tmp/run_all" --dtype float32 \
     --set train.routers_only=false --set parallel.expert_parallel=2 >"$tmp/log" 2>&1 &&
   [ -f "$tmp/run_all/checkpoints/$(cat "$tmp/run_all/checkpoints/latest")/experts-ep1.safetensors" ] &&
   "$bin" eval --model "$tmp/run_all" --tokens "$tokens" --dump-logits "$tmp/all1.st" --dtype float32 >"$tmp/eval.log" 2>&1 &&
   "$mpirun" -np 4 "$bin" eval --model "$tmp/run_all" --tokens "$tokens" --dump-logits "$tmp/all4.st" \
     --dtype float32 --set parallel.expert_parallel=4 >>"$tmp/eval.log" 2>&1 &&
   close_logits "$tmp/all1.st" "$tmp/all4.st" && ! close_logits "$tmp/all1.st" "$tmp/run.st"; then
  ok "all-parameter training checkpoint written at EP 2 evaluates at EP 1 and EP 4 alike"
else fail "all-parameter training checkpoint ($(tail -3 "$tmp/log") $(tail -3 "$tmp/eval.log"))"; fi

# ---- BERT_MOE through the run config: classification logits [sequences, labels] -------------
bert="$refs/bert/base"
printf '5 17 42 9 3 77 12\n8 8 61 2\n31 4 99 23 54 6 7 70 11\n' >"$tmp/bert_tokens.txt"
bert_eval() {  # NP OUT ARGS...
  local np="$1" out="$2"; shift 2
  "$mpirun" -np "$np" "$bin" eval --model "$bert" --tokens "$tmp/bert_tokens.txt" --dump-logits "$out" \
    --dtype float32 --set model.arch=BERT_MOE --set parallel.expert_parallel="$np" "$@" >"$tmp/eval.log" 2>&1
}
# transformers' logits for the BERT tokens, once: every case below must reproduce them (the
# upcycled MoE without noise computes the dense FFN in every expert).
"$py" - "$bert" "$tmp/bert_tokens.txt" "$tmp/bert_ref.st" >"$tmp/check" 2>&1 <<'PY' || fail "BERT reference ($(cat "$tmp/check"))"
import sys, torch
from safetensors.torch import save_file
from transformers import BertForSequenceClassification
folder, tokens, out = sys.argv[1:]
model = BertForSequenceClassification.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()
rows = [[int(t) for t in line.split()] for line in open(tokens) if line.strip()]
S = max(map(len, rows))
ids = torch.zeros(len(rows), S, dtype=torch.long); mask = torch.zeros_like(ids)
for i, r in enumerate(rows):
    ids[i, :len(r)] = torch.tensor(r); mask[i, :len(r)] = 1
with torch.no_grad():
    save_file({"logits": model(input_ids=ids, attention_mask=mask).logits.float().contiguous()}, out)
PY
bert_check() {  # OUT TOLERANCE
  "$py" "$repo/scripts/logits_compare.py" reference "$1" "$tmp/bert_ref.st" "$2"
}
bert_eval 1 "$tmp/bert_dense.st" --set model.moe_layer_step=0 && bert_check "$tmp/bert_dense.st" 1e-4 >"$tmp/check" 2>&1 &&
  ok "BERT_MOE dense: $(tail -1 "$tmp/check")" || fail "BERT dense ($(tail -3 "$tmp/eval.log") $(cat "$tmp/check"))"
# Upcycled without noise, every expert is the dense FFN and renormalised top-k weights sum to 1.
moe=(--set model.num_experts=4 --set router.top_k=2 --set router.norm_topk_prob=true)
for np in 1 2; do
  bert_eval "$np" "$tmp/bert_moe.$np.st" "${moe[@]}" && bert_check "$tmp/bert_moe.$np.st" 1e-4 >"$tmp/check" 2>&1 &&
    ok "BERT_MOE upcycled, EP $np: $(tail -1 "$tmp/check")" || fail "BERT MoE EP $np ($(tail -3 "$tmp/eval.log") $(cat "$tmp/check"))"
done
if "$bin" convert --model "$bert" --out "$tmp/sy_bert" --format switchyard --set model.arch=BERT_MOE \
     --set model.upcycle_noise=0.1 "${moe[@]}" >"$tmp/log" 2>&1 &&
   bert_eval 2 "$tmp/bert_noisy.st" --set model.upcycle_noise=0.1 "${moe[@]}" &&
   "$mpirun" -np 2 "$bin" eval --model "$tmp/sy_bert" --tokens "$tmp/bert_tokens.txt" --dump-logits "$tmp/sy_bert.st" \
     --dtype float32 --set parallel.expert_parallel=2 >"$tmp/eval.log" 2>&1 &&
   same_logits "$tmp/bert_noisy.st" "$tmp/sy_bert.st"; then
  ok "BERT_MOE -> Switchyard checkpoint -> eval at EP 2: bitwise equal"
else fail "BERT Switchyard checkpoint ($(tail -3 "$tmp/log") $(tail -3 "$tmp/eval.log"))"; fi
expect_refusal "BERT-MoE has no HF layout" "BERT-MoE has no Hugging Face layout" \
  convert --model "$tmp/sy_bert" --out "$tmp/bert_hf" --format hf

# ---- refusals: one line, non-zero exit ----------------------------------------------------------
cp -r "$tmp/sy_int4" "$tmp/corrupt"; cp -r "$tmp/sy_int4" "$tmp/truncated"; cp -r "$tmp/sy_int4" "$tmp/nomanifest"
size=$(stat -c %s "$tmp/corrupt/experts-ep0.safetensors")
printf 'X' | dd of="$tmp/corrupt/experts-ep0.safetensors" bs=1 seek=$((size - 50)) conv=notrunc status=none
truncate -s -10 "$tmp/truncated/replicated.safetensors"
rm "$tmp/nomanifest/manifest.pb"
expect_refusal "corrupt checkpoint refused" "experts-ep0.safetensors does not match its checksum" \
  eval --model "$tmp/corrupt" --tokens "$tokens" --dump-logits "$tmp/x.st"
expect_refusal "truncated checkpoint refused" "replicated.safetensors has" \
  eval --model "$tmp/truncated" --tokens "$tokens" --dump-logits "$tmp/x.st"
expect_refusal "folder without manifest refused" "no config.json, manifest.pb or checkpoints/" \
  eval --model "$tmp/nomanifest" --tokens "$tokens" --dump-logits "$tmp/x.st"
expect_refusal "architecture mismatch refused" "holds a QWEN2_MOE model" \
  eval --model "$tmp/sy_int4" --tokens "$tokens" --dump-logits "$tmp/x.st" --set model.arch=BERT_MOE
expect_refusal "another quantization refused" "quantized otherwise than model.quant asks" \
  eval --model "$tmp/sy_int4" --tokens "$tokens" --dump-logits "$tmp/x.st" --set model.quant.experts=INT8
expect_refusal "float experts asked of int4 codes refused" "holds quantized experts" \
  eval --model "$tmp/sy_int4" --tokens "$tokens" --dump-logits "$tmp/x.st" --set model.quant.experts=QUANT_NONE
expect_refusal "existing output folder refused" "already exists" \
  convert --model "$qwen" --out "$tmp/sy_int4" --format switchyard

[ "$failed" -eq 0 ] || { echo "$failed failure(s)"; exit 1; }
echo "all model checkpoint tests passed"
