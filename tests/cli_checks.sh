# Shared by the shell tests of the command line (sourced, not run): pass/fail counting and the
# one-line-error check. The sourcing script sets `bin` (the switchyard binary) and `tmp`.
passed=0; failed=0
ok()   { passed=$((passed + 1)); echo "ok    $1"; }
fail() { failed=$((failed + 1)); echo "FAIL  $1"; }

# expect_error NAME EXPECTED_SUBSTRING ARGS... : exit code 2 and exactly one stderr line with it
expect_error() {
  local name="$1" want="$2"; shift 2
  "$bin" "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
  local lines; lines=$(wc -l <"$tmp/err")
  if [ "$rc" -eq 2 ] && [ "$lines" -eq 1 ] && grep -qF -- "$want" "$tmp/err"; then ok "$name"
  else fail "$name (rc=$rc, $lines stderr lines: $(head -c 300 "$tmp/err"))"; fi
}

# losses_close A B TOLERANCE STEPS : every step 1..STEPS of the metrics.jsonl B has rank 0's loss
# within TOLERANCE (relative) of A's; prints the worst difference, fails otherwise. Needs `py`.
losses_close() {
  "$py" - "$1" "$2" "$3" "$4" <<'PY'
import json, sys
def losses(path):
    return {r["step"]: r["loss"] for r in map(json.loads, open(path))
            if r["kind"] == "loss" and r["rank"] == 0}
a, b, tol, steps = losses(sys.argv[1]), losses(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
assert sorted(a) == sorted(b) == list(range(1, steps + 1)), (sorted(a), sorted(b))
worst = max(abs(b[s] - a[s]) / abs(a[s]) for s in a)
print(f"worst relative difference {worst:.2e}")
assert worst <= tol, worst
PY
}

# tiny_training_inputs SEED DOCS : a synthetic corpus of DOCS 30-word documents drawn with SEED,
# tokenized by `switchyard data prepare` into $tmp/tok/{train,valid,test}.tok, and a tiny random
# transformers Qwen2-MoE in $tmp/base (scripts/tiny_qwen2_moe.py). Needs `py` and `repo` set too;
# on failure it counts one and ends the test.
tiny_training_inputs() {
  "$py" - "$tmp/docs.jsonl" "$1" "$2" <<'PY' || { fail "test corpus"; exit 1; }
import json, random, sys
random.seed(int(sys.argv[2]))
words = "the a router sends each token to its experts and back again over ranks".split()
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[3])):
        f.write(json.dumps({"text": " ".join(random.choice(words) for _ in range(30))}) + "\n")
PY
  "$bin" data prepare --jsonl "$tmp/docs.jsonl" --out "$tmp/tok" >/dev/null 2>"$tmp/prep.err" ||
    { fail "data prepare ($(head -c 300 "$tmp/prep.err"))"; exit 1; }
  "$py" "$repo/scripts/tiny_qwen2_moe.py" "$tmp/base" >/dev/null || { fail "tiny base model"; exit 1; }
}
