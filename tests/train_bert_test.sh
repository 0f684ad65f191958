#!/usr/bin/env bash
# BERT-MoE sequence classification end to end: labelled JSONL from `switchyard data prepare`, a
# tiny BERT-MoE trained from scratch under mpirun (EP 2) whose validation accuracy rises, the
# single-process run as its reference (losses equal at EP 1, and after a resume at EP 2),
# `eval` on the run folder reproducing the trainer's validation, router fine-tuning from the
# run, a comparison report with accuracy and macro-F1, and one-line errors.
#   train_bert_test.sh BIN PYTHON
set -uo pipefail
bin="$1" py="$2"
repo="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
source "$repo/tests/cli_checks.sh"

# Three made-up "languages" with word lists of their own plus shared words, two categories each.
"$py" - "$tmp/docs.jsonl" <<'PY' || { fail "test corpus"; exit 1; }
import json, random
random.seed(3)
shared = "the a and of to".split()
langs = {"xa": "router token expert rank batch layer".split(),
         "xb": "apple pear plum cherry melon grape".split(),
         "xc": "river stone cloud forest meadow hill".split()}
with open(__import__("sys").argv[1], "w") as f:
    for i in range(900):
        lang = random.choice(sorted(langs))
        words = [random.choice(langs[lang] if random.random() < 0.5 else shared) for _ in range(20)]
        f.write(json.dumps({"text": " ".join(words), "label": random.choice(["p", "q"]),
                            "language": lang}) + "\n")
PY
"$bin" data prepare --jsonl "$tmp/docs.jsonl" --out "$tmp/data" >/dev/null 2>"$tmp/prep.err" &&
  [ -s "$tmp/data/train.jsonl" ] && [ -s "$tmp/data/valid.jsonl" ] ||
  { fail "data prepare writes labelled JSONL ($(head -c 300 "$tmp/prep.err"))"; exit 1; }

cat >"$tmp/bert.json" <<'EOF2'
{"model_type": "bert", "vocab_size": 8192, "hidden_size": 32, "num_hidden_layers": 2,
 "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 64,
 "type_vocab_size": 2, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
 "initializer_range": 0.02, "position_embedding_type": "absolute"}
EOF2
cat >"$tmp/train.pbtxt" <<EOF2
model { arch: BERT_MOE init_config: "$tmp/bert.json" num_experts: 4 moe_layer_step: 1 }
parallel { expert_parallel: 2 device: "cpu" }  # exact to 1e-5: the CPU's promise
router { top_k: 2 aux_loss_coef: 0.01 }
train { steps: 200 learning_rate: 0.002 warmup_steps: 10 micro_batch_size: 8 seq_len: 32
        routers_only: false }
data { train_path: "$tmp/data/train.jsonl" valid_path: "$tmp/data/valid.jsonl"
       label: LABEL_LANGUAGE max_len: 32 }
logging { log_interval: 10 tensorboard: false }
EOF2
# Fine-tuning from the run folder: the same settings on top of the trained model, whose
# architecture its checkpoint names.
sed "s|arch: BERT_MOE init_config: \"$tmp/bert.json\"|checkpoint: \"$tmp/run\"|" "$tmp/train.pbtxt" \
  >"$tmp/tune.pbtxt"
mpi() { "$repo/launch/mpirun.sh" -np "$1" "$bin" "${@:2}"; }

# (a) From scratch at EP 2: loss records carry accuracy; validation accuracy rises well above
# chance (3 labels); no TensorBoard files when logging.tensorboard is false.
if mpi 2 train --config "$tmp/train.pbtxt" --run-dir "$tmp/run" >"$tmp/run.out" 2>"$tmp/run.err" &&
   "$py" - "$tmp/run/metrics.jsonl" <<'PY'
import json, sys
records = [json.loads(l) for l in open(sys.argv[1])]
loss = [r for r in records if r["kind"] == "loss"]
assert len(loss) == 200 * 2 and all(0 <= r["accuracy"] <= 1 and "task_loss" in r for r in loss)
valid = [r for r in records if r["kind"] == "valid"]
assert [v["phase"] for v in valid] == ["start", "end"], valid
assert valid[1]["accuracy"] > 0.8 and valid[1]["accuracy"] > valid[0]["accuracy"] + 0.3, valid
assert 0 < valid[1]["macro_f1"] <= 1 and valid[1]["sequences"] > 50, valid
assert valid[1]["loss"] < valid[0]["loss"], valid
PY
then
  if ls "$tmp/run" | grep -q tfevents; then fail "logging.tensorboard false still wrote events"
  else ok "BERT-MoE classifier from scratch (EP 2): validation accuracy rises, no events files"; fi
else fail "BERT-MoE training ($(tail -c 800 "$tmp/run.err"))"; fi

# (b) The single-process run is the reference: 4 steps at EP 1 (the same global batch of 16),
# stopped, then resumed at EP 2 to the end; every step's loss equals run (a)'s.
if mpi 1 train --config "$tmp/train.pbtxt" --run-dir "$tmp/ref" --set parallel.expert_parallel=1 \
       --set train.micro_batch_size=16 --stop-after 4 >"$tmp/ref.out" 2>"$tmp/ref.err" &&
   mpi 2 train --config "$tmp/train.pbtxt" --run-dir "$tmp/ref" --resume \
       >>"$tmp/ref.out" 2>>"$tmp/ref.err" &&
   "$py" - "$tmp/run/metrics.jsonl" "$tmp/ref/metrics.jsonl" <<'PY'
import json, sys
def losses(path):
    return {r["step"]: r["loss"] for r in map(json.loads, open(path))
            if r["kind"] == "loss" and r["rank"] == 0}
a, b = losses(sys.argv[1]), losses(sys.argv[2])
assert sorted(a) == sorted(b) == list(range(1, 201)), (sorted(a), sorted(b))
for s in a:
    assert abs(a[s] - b[s]) <= 1e-5, (s, a[s], b[s])
PY
then ok "BERT-MoE losses at EP 1 equal EP 2, through a stop at EP 1 and a resume at EP 2"
else fail "BERT-MoE EP invariance / resume ($(tail -c 800 "$tmp/ref.err"))"; fi

# (c) `eval` on the run folder at EP 1 reproduces the trainer's last validation (EP 2).
if "$bin" eval --model "$tmp/run" --data "$tmp/data/valid.jsonl" --json "$tmp/eval.json" \
     >"$tmp/eval.out" 2>"$tmp/eval.err" &&
   "$py" - "$tmp/eval.json" "$tmp/run/metrics.jsonl" <<'PY'
import json, sys
e = json.load(open(sys.argv[1]))
end = [r for r in map(json.loads, open(sys.argv[2])) if r["kind"] == "valid"][-1]
assert e["task"] == "classification" and e["labels"] == ["xa", "xb", "xc"], e["labels"]
assert e["predicted_tokens"] == end["sequences"], (e["predicted_tokens"], end)
assert abs(e["mean_nll"] - end["loss"]) < 1e-4, (e["mean_nll"], end)
assert abs(e["accuracy"] - end["accuracy"]) <= 1.0 / end["sequences"], (e["accuracy"], end)
assert len(e["layers"]) == 2 and len(e["layers"][0]["expert_tokens"]) == 4
PY
then grep -q "macro_f1" "$tmp/eval.out" && ok "eval of the run folder (EP 1) = the trainer's validation" ||
  fail "eval tables lack accuracy/macro_f1 ($(head -c 300 "$tmp/eval.out"))"
else fail "eval of a BERT-MoE run ($(tail -c 600 "$tmp/eval.err"))"; fi

# (d) Router fine-tuning from the run: MLP routers replace the linear ones, routers only.
if mpi 2 train --config "$tmp/tune.pbtxt" --run-dir "$tmp/mlp" \
       --set router.mlp.hidden=16 --set train.routers_only=true --set train.steps=5 \
       --set logging.phase_profile_interval=5 >"$tmp/mlp.out" 2>"$tmp/mlp.err" &&
   "$py" - "$tmp/mlp/metrics.jsonl" <<'PY' &&
import json, sys
# Step 5 is timed phase by phase: BERT's attention and classifier head have their boundaries.
timed = [r for r in map(json.loads, open(sys.argv[1])) if r["kind"] == "loss" and "phase_ms" in r]
assert [r["step"] for r in timed] == [5, 5], timed
for r in timed:
    assert min(r["phase_ms"][k] for k in ("attention", "router", "experts", "head")) > 0, r
PY
   mpi 2 eval --model "$tmp/mlp" --data "$tmp/data/valid.jsonl" --json "$tmp/mlp.json" \
       >/dev/null 2>"$tmp/mlp_eval.err" &&
   "$bin" report linear="$tmp/eval.json" mlp="$tmp/mlp.json" --out "$tmp/report" \
       >/dev/null 2>"$tmp/report.err" &&
   grep -q "macro-F1" "$tmp/report/report.md" && grep -q '"router": "mlp"' "$tmp/mlp.json"
then ok "router fine-tuning from a BERT-MoE run (step 5 timed by phase), eval at EP 2, report with accuracy and macro-F1"
else fail "BERT-MoE router fine-tuning ($(tail -c 600 "$tmp/mlp.err") $(tail -c 300 "$tmp/mlp_eval.err") $(tail -c 300 "$tmp/report.err"))"; fi

# (e) Upcycling a Hugging Face BERT: a dense transformers BertModel (no head, placeholder labels)
# becomes a BERT-MoE with 4 experts per layer and a new head for the data's labels; trained at
# EP 2, then its run folder evaluates at EP 1 with those labels (built from the run's config).
"$py" - "$tmp/hf_bert" <<'PY' || fail "tiny Hugging Face BERT"
import sys, torch
from transformers import BertConfig, BertModel
torch.manual_seed(0)
BertModel(BertConfig(vocab_size=8192, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64)).save_pretrained(sys.argv[1])
PY
sed "s|arch: BERT_MOE init_config: \"$tmp/bert.json\"|arch: BERT_MOE checkpoint: \"$tmp/hf_bert\"|" \
  "$tmp/train.pbtxt" >"$tmp/upcycle.pbtxt"
if mpi 2 train --config "$tmp/upcycle.pbtxt" --run-dir "$tmp/upcycled" --set train.steps=120 \
       >"$tmp/up.out" 2>"$tmp/up.err" &&
   "$bin" eval --model "$tmp/upcycled" --data "$tmp/data/valid.jsonl" --json "$tmp/up.json" \
       >/dev/null 2>>"$tmp/up.err" &&
   "$py" - "$tmp/upcycled/metrics.jsonl" "$tmp/up.json" <<'PY'
import json, sys
valid = [r for r in map(json.loads, open(sys.argv[1])) if r["kind"] == "valid"]
e = json.load(open(sys.argv[2]))
assert valid[-1]["accuracy"] > valid[0]["accuracy"] + 0.3, valid
assert e["labels"] == ["xa", "xb", "xc"] and abs(e["mean_nll"] - valid[-1]["loss"]) < 1e-4, (e, valid)
PY
then ok "Hugging Face BERT upcycled to BERT-MoE with a new head for the data's labels (EP 2), eval (EP 1)"
else fail "upcycled BERT ($(tail -c 600 "$tmp/up.err"))"; fi

expect_error "BERT-MoE distillation refused" "train.distill_steps: router distillation reads" \
  train --config "$tmp/tune.pbtxt" --set train.distill_steps=2 --set parallel.expert_parallel=1
expect_error "BERT-MoE export refused" "--export-hf: BERT-MoE has no Hugging Face layout" \
  train --config "$tmp/train.pbtxt" --export-hf "$tmp/x" --set parallel.expert_parallel=1
expect_error "BERT-MoE layer recomputation refused" "train.recompute_layers: layer recomputation is not implemented for BERT_MOE" \
  train --config "$tmp/train.pbtxt" --set train.recompute_layers=true --set parallel.expert_parallel=1
expect_error "classifier on a token file" "a classifier evaluates labelled JSON Lines" \
  eval --model "$tmp/run" --data "$tmp/data/valid.tok"
expect_error "data.max_len too small" "data.max_len = 1: must be at least 2" \
  train --config "$tmp/train.pbtxt" --set data.max_len=1

[ "$failed" -eq 0 ] || { echo "$failed failure(s)"; exit 1; }
echo "all BERT-MoE training tests passed"
