#!/usr/bin/env bash
# The commands README.md and docs/*.md show, run as shown on tiny inputs laid out like a checkout
# after the quickstart (runs/quickstart/{data,base}: a synthetic corpus and a tiny Qwen2-MoE
# pretrained for one step by `train --export-hf`, as launch/base_model.sh makes the real one).
# README's fine-tune / eval / report block is read out of README.md and run verbatim; every other
# command is first looked up in its page, so a page that changes a command fails here until this
# test follows it. The full-size benchmarks (minutes each on 2 cores) are not run:
# docs/benchmarks.md shows them only through bench/RESULTS.md.
#   usage: docs_commands_test.sh BIN PYTHON
set -euo pipefail
bin="$1"; py="$2"
repo="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
source "$repo/tests/cli_checks.sh"

# The working folder: build/bin/switchyard is BIN; launch/, configs/, data/ and scripts/ are the
# repository's (read only); runs/ and the files the commands name are written here.
w="$tmp/w"
mkdir -p "$w/build/bin"
ln -s "$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")" "$w/build/bin/switchyard"
for d in launch configs data scripts; do ln -s "$repo/$d" "$w/$d"; done

# shown PAGE COMMAND: PAGE shows COMMAND whole, as a line of a code block or a `code span` (a `\`
# continuation joined, a trailing `# comment` dropped, runs of spaces squeezed).
shown() {
  sed -e ':a' -e '/\\$/{N;s/\\\n[[:space:]]*/ /;ba' -e '}' "$repo/$1" | tr '`' '\n' |
    sed -e 's/[[:space:]]\+#.*$//' -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' | tr -s ' ' |
    grep -xF -- "$2" >/dev/null  # not -q: with pipefail, an early exit would fail the writers
}
# doc PAGE NAME COMMAND: COMMAND, checked to be in PAGE, run from $w (a leading `.venv/bin/python`
# is PYTHON); stdout in $tmp/NAME.out, stderr in $tmp/NAME.err.
doc() {
  local page="$1" name="$2" cmd="$3"
  if ! shown "$page" "$cmd"; then echo "$page does not show: $cmd" >"$tmp/$name.err"; return 1; fi
  cmd="${cmd/#.venv\/bin\/python /\"\$py\" }"
  (cd "$w" && eval "$cmd") >"$tmp/$name.out" 2>"$tmp/$name.err"
}
why() { tail -c 400 "$tmp/$1.err" 2>/dev/null | tr '\n' ' '; }

# ---- inputs: docs.jsonl, runs/quickstart/data (data prepare), runs/quickstart/base -------------
# (Not cli_checks.sh's tiny_training_inputs: its base comes from transformers, ~15 s of imports on
# 2 cores; `train --export-hf` from a config.json takes ~3 s and is how the quickstart makes one.)
"$py" - "$w/docs.jsonl" <<'PY' || { fail "test corpus"; exit 1; }
import json, random, sys
random.seed(3)
words = "the a router sends each token to its experts and back again over ranks".split()
with open(sys.argv[1], "w") as f:
    for i in range(400):
        f.write(json.dumps({"text": " ".join(random.choice(words) for _ in range(30))}) + "\n")
PY
cat >"$tmp/tiny.json" <<'JSON'
{"architectures": ["Qwen2MoeForCausalLM"], "model_type": "qwen2_moe", "vocab_size": 8192,
 "hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 64,
 "shared_expert_intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
 "num_key_value_heads": 2, "num_experts": 8, "num_experts_per_tok": 2, "norm_topk_prob": false,
 "decoder_sparse_step": 1, "mlp_only_layers": [], "hidden_act": "silu", "rms_norm_eps": 1e-6,
 "rope_theta": 10000.0, "max_position_embeddings": 256, "tie_word_embeddings": false,
 "initializer_range": 0.05, "torch_dtype": "float32"}
JSON
if ! (cd "$w" && build/bin/switchyard data prepare --jsonl docs.jsonl --out runs/quickstart/data &&
      build/bin/switchyard train --run-dir runs/quickstart/pretrain --export-hf runs/quickstart/base \
        --set model.init_config="$tmp/tiny.json" --set data.train_path=runs/quickstart/data/train.tok \
        --set train.routers_only=false --set train.steps=1 --set train.seq_len=32 \
        --set train.micro_batch_size=1 --set router.top_k=2 --progress lines) \
     >"$tmp/setup.out" 2>"$tmp/setup.err"; then
  fail "tiny quickstart layout ($(why setup))"; exit 1
fi

# ---- docs/data.md -----------------------------------------------------------------------------
if doc docs/data.md stats_fortunes "build/bin/switchyard data stats" &&
   "$py" - "$tmp/stats_fortunes.out" <<'PY'
import re, sys
lines = open(sys.argv[1]).read().splitlines()
m = re.match(r"(\d+) records, tokenizer vocab 8192$", lines[0])
assert m and int(m.group(1)) > 90000, lines[0]
rows = [l.split() for l in lines[3:] if l.strip()]
for split in ("train", "valid", "test"):
    langs = {r[1] for r in rows if r[0] == split and r[1] != "all"}
    assert len(langs) == 13, (split, sorted(langs))
PY
then ok "data stats: the fortune corpus, > 90,000 records, 13 languages in every split"
else fail "data stats on the fortune corpus ($(why stats_fortunes))"; fi

if doc docs/data.md stats_jsonl "build/bin/switchyard data stats --jsonl docs.jsonl --json" &&
   "$py" - "$tmp/stats_jsonl.out" >"$tmp/stats_tokens" <<'PY'
import json, sys
total = [r for r in map(json.loads, open(sys.argv[1])) if r["language"] == "all"]
assert sorted(r["split"] for r in total) == ["test", "train", "valid"], total
assert sum(r["records"] for r in total) == 400, total
print(sum(r["tokens"] for r in total))
PY
then ok "data stats --jsonl --json: 400 records over the three splits"
else fail "data stats --jsonl ($(why stats_jsonl))"; fi

# token_file.py with the bundled tokenizer: the tokens the C++ tokenizer counted above.
tokens="$(cat "$tmp/stats_tokens" 2>/dev/null || echo '?')"
want="x.tok: 400 documents, $tokens tokens, vocab 8192, eos 0"
if doc docs/data.md encode ".venv/bin/python scripts/token_file.py encode --tokenizer data/tokenizer.json --jsonl docs.jsonl --out x.tok" &&
   doc docs/data.md info ".venv/bin/python scripts/token_file.py info x.tok" &&
   [ "$(cat "$tmp/encode.out")" = "$want" ] && [ "$(cat "$tmp/info.out")" = "$want" ]; then
  ok "token_file.py encode and info: the token count data stats gives"
else
  fail "token_file.py (want '$want', got '$(cat "$tmp/info.out" 2>/dev/null)' $(why encode) $(why info))"
fi

# ---- README.md: the fine-tune / eval / report block, verbatim -----------------------------------
awk '/^```bash/ { inb = 1; b = ""; next }
     /^```/     { if (inb && b ~ /--run-dir runs\/r1/) printf "%s", b; inb = 0; next }
     inb        { b = b $0 "\n" }' "$repo/README.md" >"$tmp/readme_block.sh"
if [ -s "$tmp/readme_block.sh" ] &&
   (cd "$w" && bash -euo pipefail "$tmp/readme_block.sh") >"$tmp/readme.out" 2>"$tmp/readme.err" &&
   "$py" - "$w" "$tmp/readme_block.sh" <<'PY'
import glob, json, os, re, sys
w = sys.argv[1]
m = re.search(r"--set train\.steps=(\d+)", open(sys.argv[2]).read())
steps = int(m.group(1)) if m else 100  # TrainConfig's default
losses = [r for r in map(json.loads, open(f"{w}/runs/r1/metrics.jsonl")) if r.get("kind") == "loss"]
assert max(r["step"] for r in losses) == steps, losses[-1]
assert sorted({r["rank"] for r in losses}) == [0, 1], losses[-1]
assert os.path.isdir(f"{w}/runs/r1/checkpoints/step-{steps:08d}"), os.listdir(f"{w}/runs/r1/checkpoints")
base, r1 = (json.load(open(f"{w}/{n}.json")) for n in ("base", "r1"))
for r in (base, r1):
    assert r["schema"] == "switchyard.eval/1" and r["tokens"] == base["tokens"] > 0, r["tokens"]
    assert 1 < r["perplexity"] < 8192 * 4, r["perplexity"]
assert r1["mean_nll"] != base["mean_nll"], "fine-tuned routers evaluate like the base"
md = open(f"{w}/report/report.md").read()
assert "| base |" in md and "| r1 |" in md and "loss_curves.svg" in md, md[:400]
assert os.path.getsize(f"{w}/report/report.html") > 1000
assert os.path.isfile(f"{w}/report/loss_curves.svg") and glob.glob(f"{w}/report/heatmap_*.svg")
PY
then ok "README block: train (EP 2), eval --json of base and run, report"
else fail "README block ($(head -c 300 "$tmp/readme_block.sh" | tr '\n' ' ')... $(why readme))"; fi

# ---- docs/checkpoints.md: inspect -------------------------------------------------------------
if doc docs/checkpoints.md inspect "build/bin/switchyard inspect runs/quickstart/base --json" &&
   doc docs/checkpoints.md inspect_run "build/bin/switchyard inspect runs/r1 --tensors" &&
   "$py" - "$tmp/inspect.out" "$tmp/inspect_run.out" <<'PY'
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
kinds = [r["kind"] for r in rows]
assert kinds[0] == "summary" and {"architecture", "component", "tensor"} <= set(kinds), set(kinds)
tensors = {r["name"]: r for r in rows if r["kind"] == "tensor"}
assert "model.layers.1.mlp.experts.7.down_proj.weight" in tensors and "lm_head.weight" in tensors
assert tensors["model.layers.0.mlp.gate.weight"]["shape"] == "[8, 64]", tensors["model.layers.0.mlp.gate.weight"]
params = sum(math.prod(json.loads(t["shape"])) for t in tensors.values())
assert params == rows[0]["params"] == sum(r["params"] for r in rows if r["kind"] == "component"), params
run = open(sys.argv[2]).read()  # a table; the routers and their moments only, names in full
assert f"parameters    {2 * 8 * 64} " in run, run
for name in ("param", "exp_avg", "exp_avg_sq"):
    for layer in (0, 1):
        assert f"{name}.layers.{layer}.moe.router.gate.weight " in run, (name, layer, run)
PY
then ok "inspect --json of the base (every tensor, counts add up); --tensors of a run: routers only"
else fail "inspect ($(why inspect) $(why inspect_run))"; fi

# ---- docs/benchmarks.md: the small-size block -------------------------------------------------
if doc docs/benchmarks.md routers "build/bin/switchyard bench routers --config configs/qwen_mlp_hadamard.pbtxt --set router.mlp_hadamard.hidden=256 --tokens 64 --repeats 3 --set bench.fwht_widths=256 --json" &&
   "$py" - "$tmp/routers.out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
routers = [r for r in rows if "router" in r]
assert len(routers) == 12 and all(r["fwd_us"] > 0 for r in routers), routers
had = {r["shape"]: r["params"] for r in routers if r["router"] == "mlp_hadamard"}
assert had == {"qwen1.5-moe": 2048 * 256 + 256 + 2 * 60, "bert-base": 768 * 256 + 256 + 2 * 8}, had
fwht = [r for r in rows if r.get("op") == "fwht_vs_dense"]
assert [r["width"] for r in fwht] == [256] and fwht[0]["max_abs_diff"] < 1e-4, fwht
PY
then ok "bench routers: MLP-Hadamard width 256 at both default shapes, FWHT"
else fail "bench routers ($(why routers))"; fi

if doc docs/benchmarks.md fwht "build/bin/switchyard bench fwht --set bench.fwht_widths=1024 --repeats 5" &&
   awk '$1 == "fwht_vs_dense" && $2 == 1024 && $NF + 0 < 1e-4 { n++ } END { exit n != 1 }' "$tmp/fwht.out"; then
  ok "bench fwht: width 1024 equals the dense Hadamard matmul"
else fail "bench fwht ($(head -c 300 "$tmp/fwht.out" 2>/dev/null) $(why fwht))"; fi

if doc docs/benchmarks.md alltoall "launch/mpirun.sh -np 2 build/bin/switchyard bench alltoall --repeats 3 --set bench.alltoall_bytes=65536 --json" &&
   "$py" -c 'import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert [(r["bytes"], r["ranks"]) for r in rows] == [(65536, 2)] and rows[0]["ratio"] > 0, rows' "$tmp/alltoall.out"; then
  ok "bench alltoall under mpirun: 2 ranks, 64 KiB"
else fail "bench alltoall ($(why alltoall))"; fi

if doc docs/benchmarks.md model "build/bin/switchyard bench model --preset tiny --quant int4" &&
   awk '$1 == "tiny" && $2 == "INT4" && $3 > 0 { n++ } END { exit n != 1 }' "$tmp/model.out"; then
  ok "bench model --preset tiny --quant int4"
else fail "bench model ($(head -c 300 "$tmp/model.out" 2>/dev/null) $(why model))"; fi

plan_base="build/bin/switchyard plan --model qwen1.5-moe-a2.7b --cluster 8xh100"
if doc docs/planning.md plan_rf "$plan_base --dtype bfloat16 --set train.micro_batch_size=2 --set train.seq_len=2048 --set train.grad_accumulation=4" &&
   doc docs/planning.md plan_full "$plan_base --cluster-set nodes=4 --dtype bfloat16 --set train.routers_only=false --set train.micro_batch_size=1 --set train.seq_len=2048 --set train.grad_accumulation=4" &&
   (cd "$w" && eval "$plan_base --cluster-set nodes=4 --dtype bfloat16 --set train.routers_only=false --set train.micro_batch_size=1 --set train.seq_len=2048 --set train.grad_accumulation=4 --redundant 4") >"$tmp/plan_r4.out" &&
   awk '$1 ~ /^[0-9]+$/ && $2 ~ /^[0-9]+$/ { n++ } END { exit n != 6 }' "$tmp/plan_rf.out" &&
   grep -qE '^ 2 +16 .* no \(30\.3[0-9] GB over\)' "$tmp/plan_full.out" &&
   grep -qE '^ 4 +8 .* 73\.0[0-9] +0\.00 +80\.0 +yes' "$tmp/plan_full.out" &&
   grep -qE '^ 8 +4 .* 55\.5[0-9] +0\.00 +80\.0 +yes' "$tmp/plan_r4.out" &&
   (cd "$w" && eval "$plan_base --dtype bfloat16 --set train.micro_batch_size=2 --set train.seq_len=2048 --set train.grad_accumulation=4 --set model.quant.experts=INT4 --set train.recompute_layers=true") >"$tmp/plan_rq.out" &&
   grep -qE '^ 1 +8 .* 0\.42 +1\.04 +0\.50 +13\.6[0-9] ' "$tmp/plan_rq.out" &&
   grep -qE '^ 1 +8 +1\.000 +306\.[0-9] .* 814\.[0-9] ' "$tmp/plan_rq.out"; then
  ok "planning.md: router fine-tuning on 8 H100s, full training on 32 (EP 2 misses by 30.4 GB, EP 4 fits at 73.0 GB; EP 8 with 4 redundant slots at 55.6 GB; int4 recomputed at EP 1: logits 0.42 GB (fused head), dequant 1.04 GB, 13.7 GB, 815 ms)"
else fail "planning.md commands ($(why plan_rf) $(why plan_full) $(head -c 600 "$tmp/plan_full.out" 2>/dev/null))"; fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
