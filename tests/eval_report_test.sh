#!/usr/bin/env bash
# `switchyard eval` reports and `switchyard report` end to end on a tiny transformers-made model:
# the same statistics single-process and under mpirun at EP 2, EP 4 and EP 2 x DP 2; one-line
# errors for bad input; a comparison report of two router configs (with loss curves from two
# short training runs) rendered by headless Chromium, which must show the table and heatmaps.
#   eval_report_test.sh BIN PYTHON
set -uo pipefail
bin="$1" py="$2"
repo="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
source "$repo/tests/cli_checks.sh"

tiny_training_inputs 1 400

# ---- the same numbers at every EP size -----------------------------------------------------------
eval_at() {  # NP EP OUT.json EXTRA...
  local np="$1" ep="$2" out="$3"; shift 3
  "$repo/launch/mpirun.sh" -np "$np" "$bin" eval --model "$tmp/base" --data "$tmp/tok/valid.tok" \
    --seq-len 32 --batch-size 3 --set parallel.expert_parallel="$ep" --json "$out" "$@" \
    >"$out.out" 2>"$out.err"
}
if "$bin" eval --model "$tmp/base" --data "$tmp/tok/valid.tok" --seq-len 32 --batch-size 3 \
     --json "$tmp/ep1.json" >"$tmp/ep1.out" 2>"$tmp/ep1.err" &&
   eval_at 2 2 "$tmp/ep2.json" && eval_at 4 4 "$tmp/ep4.json" && eval_at 4 2 "$tmp/dp2.json"; then
  if "$py" - "$tmp"/ep1.json "$tmp"/ep2.json "$tmp"/ep4.json "$tmp"/dp2.json <<'PY'
import json, math, sys
runs = [json.load(open(p)) for p in sys.argv[1:]]
ref = runs[0]
assert ref["schema"] == "switchyard.eval/1"
assert ref["sequences"] > 5 and ref["predicted_tokens"] == ref["sequences"] * 32, ref["sequences"]
assert 1 < ref["perplexity"] < 8192 * 4, ref["perplexity"]
assert abs(math.log(ref["perplexity"]) - ref["mean_nll"]) < 1e-9
assert len(ref["layers"]) == 2 and ref["num_experts"] == 8 and ref["top_k"] == 2
p = ref["parameters"]
assert p["total"] > p["active"] > 0 and p["router"] == 2 * 8 * 64, p
for l in ref["layers"]:
    assert sum(l["expert_tokens"]) == ref["tokens"] * 2, l
    assert 0 < l["entropy"] <= math.log(8) + 1e-9 and 0 < l["utilisation"] <= 1
    assert l["max_over_mean"] >= 1 and l["drop_rate"] == 0 and l["router_s"] > 0
assert 0 < ref["router_latency"]["share"] < 1
for run, (world, ep) in zip(runs[1:], [(2, 2), (4, 4), (4, 2)]):
    where = f"world {world} EP {ep}"
    assert run["world_size"] == world and run["expert_parallel"] == ep, where
    assert run["parameters"] == ref["parameters"], (where, run["parameters"])
    for key in ("sequences", "tokens", "predicted_tokens"):
        assert run[key] == ref[key], (where, key)
    assert abs(run["mean_nll"] - ref["mean_nll"]) < 1e-5 * ref["mean_nll"], (where, run["mean_nll"])
    for a, b in zip(run["layers"], ref["layers"]):
        assert a["expert_tokens"] == b["expert_tokens"], (where, a["expert_tokens"], b["expert_tokens"])
        for key in ("utilisation", "max_over_mean", "cv", "load_entropy"):
            assert a[key] == b[key], (where, key)
        assert abs(a["entropy"] - b["entropy"]) < 1e-6, (where, a["entropy"], b["entropy"])
    ranks = run["ranks"]
    assert [r["rank"] for r in ranks] == list(range(world)), where
    # Each EP group routes its share of the tokens; over all ranks every assignment arrives.
    assert sum(r["tokens_received"] for r in ranks) == ref["tokens"] * 2 * 2, where
    for r in ranks:
        assert r["forward_s"] > 0 and r["experts_s"] > 0, (where, r)
    # The contiguous placement, and each EP rank's tokens under it (summed over DP groups).
    for layer in run["layers"]:
        local = 8 // ep
        assert layer["placement"] == [list(range(k * local, (k + 1) * local)) for k in range(ep)]
        want = [sum(layer["expert_tokens"][k * local:(k + 1) * local]) for k in range(ep)]
        assert layer["rank_tokens"] == want, (where, layer["rank_tokens"], want)
        assert abs(layer["rank_max_over_mean"] - max(want) / (sum(want) / ep)) < 1e-12
print("perplexity", ref["perplexity"])
PY
  then
    grep -q "per MoE layer" "$tmp/ep1.out" && grep -q "tokens_received" "$tmp/ep2.json.out" &&
      ok "eval: same perplexity and expert loads at EP 1, 2, 4 and EP 2 x DP 2; tables printed" ||
      fail "eval tables ($(head -c 300 "$tmp/ep1.out"))"
  else
    fail "eval statistics differ between EP sizes"
  fi
else
  fail "eval runs ($(tail -c 600 "$tmp"/*.err))"
fi

# --json - writes the JSON alone to stdout; token lines are an evaluation set too.
printf '1 2 3 4 5\n6 7 8\n' >"$tmp/lines.txt"
if "$bin" eval --model "$tmp/base" --data "$tmp/lines.txt" --json - >"$tmp/lines.json" 2>/dev/null &&
   "$py" -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["tokens"]==8 and r["predicted_tokens"]==6, r' "$tmp/lines.json"; then
  ok "eval on token lines, --json - on stdout"
else
  fail "eval on token lines ($(head -c 300 "$tmp/lines.json"))"
fi

# Text is an evaluation set too: valid.jsonl (which data prepare writes next to valid.tok, same
# records in the same order) tokenized and packed gives valid.tok's perplexity and loads; plain
# text (one document per blank-line-separated paragraph) is read as well.
"$py" - "$tmp/tok/valid.jsonl" "$tmp/valid.txt" <<'PY'
import json, sys
with open(sys.argv[2], "w") as out:
    for line in open(sys.argv[1]):
        out.write(json.loads(line)["text"] + "\n\n")
PY
for text in valid.jsonl valid.txt; do
  path="$tmp/tok/$text"; [ "$text" = valid.txt ] && path="$tmp/valid.txt"
  if "$bin" eval --model "$tmp/base" --data "$path" --seq-len 32 --json "$tmp/$text.json" \
       >/dev/null 2>"$tmp/text.err" &&
     "$py" - "$tmp/$text.json" "$tmp/ep1.json" <<'PY'
import json, sys
text, tok = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert text["predicted_tokens"] == tok["predicted_tokens"], (text["predicted_tokens"], tok["predicted_tokens"])
assert abs(text["perplexity"] - tok["perplexity"]) < 1e-6 * tok["perplexity"], (text["perplexity"], tok["perplexity"])
assert [l["expert_tokens"] for l in text["layers"]] == [l["expert_tokens"] for l in tok["layers"]]
PY
  then ok "eval on $text (tokenized, packed) = eval on valid.tok"
  else fail "eval on $text ($(tail -c 400 "$tmp/text.err"))"; fi
done

# ---- bad input --------------------------------------------------------------------------------
expect_error "eval: missing model" "--model $tmp/none: not a folder (expected a Hugging Face checkpoint" \
  eval --model "$tmp/none" --data "$tmp/tok/valid.tok"
mkdir -p "$tmp/corrupt" && cp "$tmp/base/config.json" "$tmp/corrupt/" &&
  head -c 1000 "$tmp/base/model.safetensors" >"$tmp/corrupt/model.safetensors"
"$bin" eval --model "$tmp/corrupt" --data "$tmp/tok/valid.tok" --seq-len 32 >"$tmp/out" 2>"$tmp/err"
rc=$?
[ "$rc" -ne 0 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "model.safetensors" "$tmp/err" &&
  ok "eval: corrupt checkpoint is one line naming the file" ||
  fail "eval: corrupt checkpoint (rc=$rc: $(head -c 300 "$tmp/err"))"
: >"$tmp/empty.txt"
expect_error "eval: empty evaluation set" "$tmp/empty.txt: no sequences" \
  eval --model "$tmp/base" --data "$tmp/empty.txt"
printf '5\n' >"$tmp/one.txt"
expect_error "eval: nothing to predict" "$tmp/one.txt: empty evaluation set" \
  eval --model "$tmp/base" --data "$tmp/one.txt"
printf '1 2 99999\n' >"$tmp/big.txt"
expect_error "eval: token id beyond the vocabulary" \
  "$tmp/big.txt: token id 99999 is outside the model's vocabulary (8192)" \
  eval --model "$tmp/base" --data "$tmp/big.txt"
expect_error "eval: token file too short for one block" "tokens do not fill one block of --seq-len 100000" \
  eval --model "$tmp/base" --data "$tmp/tok/valid.tok" --seq-len 100000
expect_error "eval: nothing to do" "eval: nothing to do" eval --model "$tmp/base"
expect_error "report: not an eval result" "$tmp/docs.jsonl: not a \`switchyard eval --json\` result" \
  report "$tmp/docs.jsonl" --out "$tmp/r0"
expect_error "report: no results" "report: no eval results given" report --out "$tmp/r0"

# ---- the comparison report of two router configs, opened in Chromium --------------------------
cat >"$tmp/train.pbtxt" <<EOF2
model { checkpoint: "$tmp/base" }
router { top_k: 2 }
train { steps: 6 learning_rate: 0.01 micro_batch_size: 2 seq_len: 32 routers_only: true }
data { train_path: "$tmp/tok/train.tok" }
logging { log_interval: 3 }
EOF2
hadamard=(--set router.mlp_hadamard.hidden=64)
if "$bin" train --config "$tmp/train.pbtxt" --run-dir "$tmp/run_linear" >/dev/null 2>"$tmp/t.err" &&
   "$bin" train --config "$tmp/train.pbtxt" --run-dir "$tmp/run_hadamard" "${hadamard[@]}" \
     >/dev/null 2>>"$tmp/t.err" &&
   "$bin" eval --config "$tmp/train.pbtxt" --model "$tmp/base" --data "$tmp/tok/test.tok" \
     --seq-len 32 --json "$tmp/linear.json" >/dev/null 2>>"$tmp/t.err" &&
   "$bin" eval --config "$tmp/train.pbtxt" --model "$tmp/base" --data "$tmp/tok/test.tok" \
     --seq-len 32 --json "$tmp/hadamard.json" "${hadamard[@]}" >/dev/null 2>>"$tmp/t.err" &&
   "$bin" report "$tmp/linear.json" "mlp-hadamard=$tmp/hadamard.json" --out "$tmp/report" \
     --train-log "$tmp/run_linear" --train-log "$tmp/run_hadamard" >/dev/null 2>>"$tmp/t.err"; then
  ok "report from two router configs with loss curves"
else
  fail "report pipeline ($(tail -c 600 "$tmp/t.err"))"
fi

chromium_bin="$(command -v chromium || command -v chromium-browser || true)"
if [ -z "$chromium_bin" ]; then
  fail "chromium not installed (launch/setup.sh installs it)"
elif [ -s "$tmp/report/report.html" ]; then
  # A fresh profile per run; --dump-dom prints the DOM after the page has loaded and laid out.
  chrome=("$chromium_bin" --headless --no-sandbox --disable-gpu --no-first-run
          --user-data-dir="$tmp/profile" --window-size=1280,2400)
  timeout 120 "${chrome[@]}" --dump-dom "file://$tmp/report/report.html" \
    >"$tmp/dom.html" 2>"$tmp/chrome.err"
  timeout 120 "${chrome[@]}" --screenshot="$tmp/report.png" "file://$tmp/report/report.html" \
    >/dev/null 2>>"$tmp/chrome.err"
  if "$py" - "$tmp/dom.html" "$tmp/report.png" "$tmp/linear.json" <<'PY'
import json, os, sys
from html.parser import HTMLParser
dom, png, result = sys.argv[1:]
layers = len(json.load(open(result))["layers"])
class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.rows, self.cells, self.heatmaps, self.ids = [], [], [], [], set()
        self.in_table = False
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a: self.ids.add(a["id"])
        if tag == "table" and a.get("id") == "comparison": self.in_table = True
        if self.in_table and tag == "tr": self.rows.append([])
        if self.in_table and tag == "td": self.cells.append("")
        if tag == "svg" and "heatmap" in a.get("class", "").split():
            self.heatmaps.append({"rows": int(a["data-rows"]), "cols": int(a["data-cols"]), "cells": 0})
        if tag == "rect" and a.get("class") == "cell": self.heatmaps[-1]["cells"] += 1
    def handle_endtag(self, tag):
        if tag == "table": self.in_table = False
        if self.in_table and tag == "td": self.rows[-1].append(self.cells[-1])
    def handle_data(self, data):
        if self.in_table and self.cells: self.cells[-1] += data.strip()
page = Page()
page.feed(open(dom).read())
body = [r for r in page.rows if r]
assert len(body) == 2, body                         # one row per run (header row has th only)
assert all(len(r) == 15 and all(c for c in r) for r in body), body
assert all(r[13] == "1.000" for r in body), body  # rank max/mean: one rank holds every expert
assert body[0][0] == "linear" and body[1][0] == "mlp-hadamard" and body[1][1] == "mlp_hadamard", body
assert len(page.heatmaps) == 2, page.heatmaps
for h in page.heatmaps:
    assert h["rows"] == layers and h["cols"] == 8 and h["cells"] == layers * 8, h
for needed in ("entropy-per-layer", "loss-curves", "run-0", "run-1"):
    assert needed in page.ids, needed
assert os.path.getsize(png) > 20000, os.path.getsize(png)  # a rendered page, not a blank one
print("chromium dom ok:", len(body), "rows,", sum(h["cells"] for h in page.heatmaps), "heatmap cells")
PY
  then
    ok "report renders in headless Chromium: comparison table, heatmaps, plots"
  else
    fail "report in Chromium ($(head -c 400 "$tmp/chrome.err"))"
  fi
  [ -n "${SWITCHYARD_KEEP_REPORT:-}" ] && cp -r "$tmp/report" "$tmp/report.png" "$SWITCHYARD_KEEP_REPORT/" 2>/dev/null
else
  fail "no report.html to render"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
