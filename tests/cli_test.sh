#!/usr/bin/env bash
# The `switchyard` command line as a user meets it: exit codes (0 ok, 2 bad input), one-line
# errors that name the field, --help everywhere, `info`, and `bench routers --json` fields.
#   usage: cli_test.sh path/to/switchyard path/to/python
set -uo pipefail
bin="$1"; py="$2"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
source "$(dirname "$0")/cli_checks.sh"

"$bin" --help >/dev/null && ok "top-level --help" || fail "top-level --help"
for sub in info bench eval inspect data plan; do
  "$bin" "$sub" --help >"$tmp/help" && grep -q -- "--set" "$tmp/help" && ok "$sub --help" || fail "$sub --help"
done
"$bin" >/dev/null 2>&1; [ $? -eq 2 ] && ok "no subcommand exits 2" || fail "no subcommand exits 2"
expect_error "unknown subcommand" "unknown subcommand 'trian'" trian
expect_error "unknown option" "unrecognised option '--bogus'" bench routers --bogus
expect_error "unknown --set field" "no field 'topk' in RouterConfig" bench routers --set router.topk=3
expect_error "wrong --set type" "'x' is not a valid int32" bench routers --set router.top_k=x
expect_error "top_k > experts" "router.top_k = 70: exceeds model.num_experts (60)" bench routers --set router.top_k=70
expect_error "negative learning rate" "train.learning_rate = -1: must be positive" bench routers --set train.learning_rate=-1
expect_error "hadamard width" "router.mlp_hadamard.hidden = 100: must be a power of two" bench routers --set router.mlp_hadamard.hidden=100
expect_error "unknown benchmark" "unknown benchmark 'nope'" bench nope
expect_error "bench device" "bench.device = tpu: must be \"cpu\" or \"cuda\"" bench layer --set bench.device=tpu
if ! "$bin" info 2>/dev/null | grep -q 'CUDA available.*yes'; then
  expect_error "bench on a missing GPU" "bench.device=cuda but no GPU is visible" bench layer --set bench.device=cuda
fi
printf 'bench {\n  tokens: 8\n  tokns: 9\n}\n' >"$tmp/typo.pbtxt"
expect_error "pbtxt typo names file:line" "$tmp/typo.pbtxt:3:" bench routers --config "$tmp/typo.pbtxt"
printf 'router {\n  top_k: 99\n}\n' >"$tmp/range.pbtxt"
expect_error "pbtxt out-of-range names file:line" "$tmp/range.pbtxt:2:3: router.top_k = 99: exceeds" bench routers --config "$tmp/range.pbtxt"
expect_error "eval without a model folder" "--model /no/dir: not a folder" eval --model /no/dir --tokens x
# inspect: a real file written by the pinned safetensors, and a path that is not there
"$py" -c "import torch, sys; from safetensors.torch import save_file; save_file({'model.layers.0.mlp.experts.3.up_proj.weight': torch.zeros(4, 2), 'model.embed_tokens.weight': torch.zeros(5, 2)}, sys.argv[1])" "$tmp/small.safetensors"
"$bin" inspect "$tmp/small.safetensors" >"$tmp/inspect" 2>&1 && grep -q "parameters    18 " "$tmp/inspect" \
  && grep -q "model.layers.\*.mlp.experts.\*.up_proj.weight" "$tmp/inspect" \
  && ok "inspect counts and groups tensors" || fail "inspect ($(head -c 400 "$tmp/inspect"))"
"$bin" inspect /no/such/ckpt >/dev/null 2>"$tmp/err"; rc=$?
[ "$rc" -ne 0 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "/no/such/ckpt" "$tmp/err" \
  && ok "inspect of a missing path: one line" || fail "inspect missing path (rc=$rc: $(cat "$tmp/err"))"
expect_error "missing config file" "/no/such.pbtxt: cannot open config file" bench routers --config /no/such.pbtxt

"$bin" info >"$tmp/info" 2>&1 && ok "info runs" || fail "info runs"
if command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then
  grep -qE 'CUDA compiled in +yes' "$tmp/info" && grep -qE 'NCCL compiled in +yes' "$tmp/info" \
    && ok "info: CUDA and NCCL compiled in" || fail "info: CUDA and NCCL compiled in ($(cat "$tmp/info"))"
fi

cat >"$tmp/small.pbtxt" <<'PB'
bench { tokens: 64 repeats: 2 warmup: 1
        router_shapes { name: "tiny" hidden_size: 64 num_experts: 8 top_k: 2 }
        fwht_widths: 64 }
model { hidden_size: 64 num_experts: 8 }
router { top_k: 2 mlp_hadamard { hidden: 32 } }
PB
if "$bin" bench routers --config "$tmp/small.pbtxt" --json >"$tmp/bench.jsonl" 2>"$tmp/bench.err"; then
  if "$py" - "$tmp/bench.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
routers = [r for r in rows if "router" in r]
assert sorted(r["router"] for r in routers) == sorted(
    ["linear", "attention", "mlp", "hybrid", "hash", "mlp_hadamard"]), routers
for r in routers:
    for f in ("router", "shape", "params", "fwd_us", "fwdbwd_us", "entropy", "max_over_mean_load"):
        assert f in r, (f, r)
    assert r["fwd_us"] > 0 and r["max_over_mean_load"] >= 1.0, r
assert [r for r in routers if r["router"] == "hash"][0]["params"] == 0
assert [r for r in routers if r["router"] == "mlp_hadamard"][0]["params"] == 64 * 32 + 32 + 2 * 8
fwht = [r for r in rows if r.get("op") == "fwht_vs_dense"]
assert len(fwht) == 1 and fwht[0]["max_abs_diff"] < 1e-4, fwht
PY
  then ok "bench routers --json fields"; else fail "bench routers --json fields"; fi
else
  fail "bench routers --json ran ($(head -c 300 "$tmp/bench.err"))"
fi

# bench layer and bench alltoall (under mpirun, 2 ranks) at tiny shapes: fields scripts read.
cat >"$tmp/layer.pbtxt" <<'PB'
bench { warmup: 1 repeats: 3 layer_tokens: 32 layer_repeats: 2 alltoall_bytes: [8192, 65536]
        layer_shapes { name: "tiny" hidden_size: 32 num_experts: 4 top_k: 2
                       expert_intermediate_size: 16 shared_expert_intermediate_size: 24 } }
PB
mpirun_sh="$(dirname "$0")/../launch/mpirun.sh"
if "$bin" bench layer --config "$tmp/layer.pbtxt" --json --set "bench.profile_dir=$tmp/profile" \
     >"$tmp/layer.jsonl" 2>"$tmp/layer.err" &&
   "$mpirun_sh" -np 2 "$bin" bench alltoall --config "$tmp/layer.pbtxt" --json \
     >"$tmp/a2a.jsonl" 2>"$tmp/a2a.err"; then
  if "$py" - "$tmp/layer.jsonl" "$tmp/a2a.jsonl" "$tmp/profile" <<'PY'
import json, os, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
layer = [r for r in rows if "case" not in r]
# bench.profile_dir: per case, the whole layer's and the dense chain's busiest CPU ops by self
# time, each with its Chrome trace.
profiled = [r for r in rows if "case" in r]
cases = {f"tiny_{d}_{m}" for d in ("fp32", "bf16") for m in ("fwd", "fwdbwd")}
assert {(r["case"], r["pass"]) for r in profiled} == {(c, p) for c in cases for p in ("layer", "dense_layer")}, profiled
for r in profiled:
    assert r["calls"] >= 1 and 0 <= r["us"] <= r["wall_us"] and 0 < r["busy_share"] <= 1.01, r
    assert r["host_syncs"] == 0, r  # CUDA waits: none on a CPU
for c in cases:
    ops = [r["kernel"] for r in profiled if r["case"] == c and r["pass"] == "layer"]
    assert any(o.startswith("aten::") for o in ops), ops
    for p in ("layer", "dense_layer"):
        assert "traceEvents" in json.load(open(f"{sys.argv[3]}/{c}_{p}.json")), (c, p)
assert sorted((r["dtype"], r["mode"]) for r in layer) == sorted(
    (d, m) for d in ("fp32", "bf16") for m in ("fwd", "fwdbwd")), layer
for r in layer:
    for f in ("shape", "dtype", "mode", "tokens_per_s", "layer_vs_dense", "experts_vs_dense",
              "experts_vs_slice_loop", "vs_loop"):
        assert f in r, (f, r)
    assert r["shape"] == "tiny" and r["tokens_per_s"] > 0 and r["layer_vs_dense"] > 0 and r["experts_vs_dense"] > 0, r
    assert r["host_reads"] == 1, r  # the dispatch's one read of the counts, nothing in backward
a2a = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
assert [r["bytes"] for r in a2a] == [8192, 65536], a2a  # rank 0 prints, once
for r in a2a:
    for f in ("bytes", "ranks", "ours_gbps", "mpi_gbps", "ratio"):
        assert f in r, (f, r)
    assert r["ranks"] == 2 and r["ours_gbps"] > 0 and r["ratio"] > 0, r
PY
  then ok "bench layer (and its kernel profile) / alltoall --json fields"; else fail "bench layer / alltoall --json fields"; fi
else
  fail "bench layer / alltoall ran ($(head -c 300 "$tmp/layer.err" "$tmp/a2a.err"))"
fi

# bench model at the tiny preset: the fields scripts read.
if "$bin" bench model --preset tiny --quant int4 --set model.quant.group_size=64 --json \
     >"$tmp/model.jsonl" 2>"$tmp/model.err" &&
   "$py" - "$tmp/model.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert len(rows) == 1, rows
r = rows[0]
for f in ("params", "peak_rss_gb", "fwd_ms_per_token", "fwdbwd_ms_per_token"):
    assert f in r and r[f] > 0, (f, r)
assert r["quant"] == "INT4" and r["preset"] == "tiny", r
# The tiny preset's 2 MoE layers read their dispatch counts once each, forward and backward alike.
assert r["fwd_host_reads"] == 2 and r["fwdbwd_host_reads"] == 2, r
PY
then ok "bench model --json fields"; else fail "bench model --json ($(head -c 300 "$tmp/model.err"))"; fi
if "$bin" bench quant --config "$(dirname "$0")/../configs/bench_small_layer.pbtxt" \
  --set bench.quant_tokens=16 --set bench.layer_repeats=1 --set bench.warmup=0 --json >"$tmp/quant.jsonl" 2>"$tmp/quant.err" && "$py" - "$tmp/quant.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
acc = [r for r in rows if "kl" in r]
speed = [r for r in rows if "vs_unquantized" in r]
assert [r["quant"] for r in acc] == ["none", "int8", "int4-g128-sym", "int4-g64-asym"], acc
assert acc[0]["kl"] == 0 and all(r["kl"] > 0 for r in acc[1:]), acc
assert acc[1]["bytes_per_param"] < 1.1 and acc[2]["bytes_per_param"] < 0.6, acc
assert len(speed) == 34 and all(r["tokens_per_s"] > 0 and r["shape"] == "small" for r in speed), speed
# On the CPU every bank takes the slice loop, forward and with the input gradient, quantized ones
# with their weights dequantised and fused into the GEMM, and bf16 ones also dequantised into
# fp32 chunks; only quantized banks have a dequantisation to time.
for r in speed:
    paths = ["dequantise", "fused"] + (["dequantise_fp32"] if r["dtype"] == "bf16" else [])
    assert r["gemm"] in (["slice_loop"] if r["quant"] == "none" else paths), r
assert sum(r["gemm"] == "fused" for r in speed) == 12, speed
assert sum(r["gemm"] == "dequantise_fp32" for r in speed) == 6, speed
assert sorted({r["mode"] for r in speed}) == ["fwd", "fwdbwd"], speed
assert all((r["dequant_us"] > 0) == (r["quant"] != "none") for r in speed), speed
assert all((r["dequant_gbs"] > 0) == (r["quant"] != "none") for r in speed), speed
assert all(r["vs_unquantized"] == 1 for r in speed if r["quant"] == "none"), speed
PY
then ok "bench quant --json fields"; else fail "bench quant --json ($(head -c 300 "$tmp/quant.err"))"; fi
expect_error "bench model unknown preset" "bench.model_preset = huge: expected" bench model --preset huge
expect_error "bench model bad quant" "--quant int3: expected none, int8 or int4" bench model --quant int3

# data: statistics and token files from a small JSON Lines corpus, one-line errors.
for i in $(seq 1 40); do
  printf '{"text": "document %d: the quick brown fox jumps over the lazy dog", "language": "en"}\n' "$i"
done >"$tmp/docs.jsonl"
if "$bin" data prepare --jsonl "$tmp/docs.jsonl" --out "$tmp/tok" --json >"$tmp/data.jsonl" 2>"$tmp/data.err" &&
   "$py" - "$tmp/data.jsonl" "$tmp/tok" "$(dirname "$0")/../scripts" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[3])
import token_file
rows = [json.loads(l) for l in open(sys.argv[1])]
total = {r["split"]: r for r in rows if r["language"] == "all"}
assert sum(r["records"] for r in total.values()) == 40, rows
for split, r in total.items():
    docs, vocab, eos = token_file.read_token_file(f"{sys.argv[2]}/{split}.tok")
    assert len(docs) == r["records"] and sum(map(len, docs)) == r["tokens"], (split, r)
    assert vocab == 8192 and eos == 0, (vocab, eos)
PY
then ok "data prepare writes token files"; else fail "data prepare ($(head -c 300 "$tmp/data.err"))"; fi
expect_error "data unknown action" "data: unknown action 'stat'" data stat --jsonl "$tmp/docs.jsonl"
expect_error "data prepare without --out" "--out DIR is required" data prepare --jsonl "$tmp/docs.jsonl"
printf '{"txt": 1}\n' >"$tmp/bad.jsonl"
expect_error "data bad JSONL line" "$tmp/bad.jsonl:1: no \"text\" string" data stats --jsonl "$tmp/bad.jsonl"
expect_error "data missing tokenizer" "/no/tok.json: cannot open tokenizer file" data stats --tokenizer /no/tok.json

# bench rates: measured rates, printed as --cluster-set values that plan takes. The bank probe's
# 64 x 4 rows go to a quarter of the 60 experts: 15 of them, 17 rows each. With GPTQ's int4
# (asymmetric, group 128) and bf16 rows it also measures those 15 experts' dequantisation rate.
expect_error "bench rates active share" "bench.expert_active_share = 1.5: must be in (0, 1]" bench rates --set bench.expert_active_share=1.5
expect_error "bench rates vocab" "bench.vocab_size = 0: must be positive" bench rates --set bench.vocab_size=0
if "$bin" bench --name rates --set bench.repeats=1 --set bench.warmup=0 --set bench.tokens=64 \
     --set bench.expert_active_share=0.25 --quant int4 --set model.quant.symmetric=false \
     --set train.precision=PRECISION_BF16 >"$tmp/rates.txt" 2>"$tmp/rates.err" &&
   grep -q "15 of 60 experts x 17 rows" "$tmp/rates.txt" &&
   grep -q "int4 g128 asym bank - fp32 bank, bf16 rows, 15 experts" "$tmp/rates.txt" &&
   sets=$(sed -n 's/^cluster-set: //p' "$tmp/rates.txt") &&
   grep -qE 'tflops_fp32=[0-9.e+-]+ .*layer_overhead_ms=[0-9.e+-]+ optimizer_ns_per_param=' <<<"$sets" &&
   grep -qE 'dequant_gweights_per_s=[0-9.]+ lm_head_tflops=[0-9.]+' <<<"$sets" &&
   grep -q "LM head + loss fwd+dgrad, 64 x 2048 x 151936 bf16" "$tmp/rates.txt" &&
   { "$bin" plan --model qwen1.5-moe-a2.7b --cluster cpu $(printf -- '--cluster-set %s ' $sets) \
       --set model.quant.experts=INT4 --ep 1 >"$tmp/rates_plan.txt" 2>&1 || [ $? -eq 1 ]; } &&
   grep -q "memory per rank" "$tmp/rates_plan.txt"  # exit 1: planned, but does not fit
then ok "bench rates prints --cluster-set values plan accepts"
else fail "bench rates ($(head -c 300 "$tmp/rates.err") $(head -c 300 "$tmp/rates_plan.txt" 2>/dev/null))"; fi

# bench linear: the CPU bf16 linears' two paths against fp32 GEMMs, a row per Qwen1.5-MoE linear
# and weight (frozen, trained).
if "$bin" bench --name linear --set bench.repeats=1 --set bench.warmup=0 --set bench.tokens=4 --json \
     >"$tmp/linear.jsonl" 2>"$tmp/linear.err" &&
   [ "$(grep -c '"chunks_vs_native"' "$tmp/linear.jsonl")" -eq 8 ] && grep -q '"linear":"lm_head"' "$tmp/linear.jsonl" &&
   grep -q '"weight":"trained"' "$tmp/linear.jsonl" && grep -Eq '"auto":"(native|chunks)"' "$tmp/linear.jsonl"
then ok "bench linear times the four linears"
else fail "bench linear ($(head -c 300 "$tmp/linear.err") $(head -c 300 "$tmp/linear.jsonl"))"; fi
# SWITCHYARD_CPU_QUANT_GEMM picks the quantized experts' CPU path for the process; a wrong value
# is one line.
if SWITCHYARD_CPU_QUANT_GEMM=fused "$bin" bench model --preset tiny --quant int4 >/dev/null 2>&1 &&
   ! SWITCHYARD_CPU_QUANT_GEMM=fast "$bin" bench model --preset tiny --quant int4 >/dev/null 2>"$tmp/quant_bad.err" &&
   grep -q "SWITCHYARD_CPU_QUANT_GEMM=fast: expected auto, dequantise or fused" "$tmp/quant_bad.err"
then ok "SWITCHYARD_CPU_QUANT_GEMM selects the quantized experts' CPU path and refuses a wrong value"
else fail "SWITCHYARD_CPU_QUANT_GEMM ($(head -c 300 "$tmp/quant_bad.err" 2>/dev/null))"; fi

# SWITCHYARD_CPU_BF16_GEMM picks the CPU's bf16 path for the process; a wrong value is one line.
if SWITCHYARD_CPU_BF16_GEMM=chunks "$bin" bench --name linear --set bench.repeats=1 --set bench.warmup=0 \
     --set bench.tokens=2 --json >"$tmp/linear_chunks.jsonl" 2>"$tmp/linear.err" &&
   [ "$(grep -c '"auto":"chunks"' "$tmp/linear_chunks.jsonl")" -eq 8 ] &&
   ! SWITCHYARD_CPU_BF16_GEMM=fast "$bin" bench --name linear >/dev/null 2>"$tmp/linear_bad.err" &&
   [ "$(wc -l <"$tmp/linear_bad.err")" -eq 1 ] &&
   grep -q "SWITCHYARD_CPU_BF16_GEMM=fast: expected auto, chunks or native" "$tmp/linear_bad.err"
then ok "SWITCHYARD_CPU_BF16_GEMM selects the CPU's bf16 path and refuses a wrong value"
else fail "SWITCHYARD_CPU_BF16_GEMM ($(head -c 300 "$tmp/linear.err") $(head -c 300 "$tmp/linear_bad.err" 2>/dev/null))"; fi

# bench head: the fused LM head against the logits, fp32 and bf16, at each chunk size asked for
# (0: the default, 4096 rows of a 1000-word vocabulary on a CPU, so all 8); the CPU's step keeps
# the logits.
if "$bin" bench --name head --set bench.repeats=1 --set bench.warmup=0 --set bench.tokens=8 \
     --set bench.vocab_size=1000 --set bench.head_chunk_rows=0,3 --json >"$tmp/head.jsonl" \
     2>"$tmp/head.err" &&
   [ "$(grep -c '"fused_vs_logits"' "$tmp/head.jsonl")" -eq 4 ] &&
   [ "$(grep -c '"chunk_rows":8,' "$tmp/head.jsonl")" -eq 2 ] &&
   [ "$(grep -c '"chunk_rows":3,' "$tmp/head.jsonl")" -eq 2 ] &&
   [ "$(grep -c '"auto":"logits"' "$tmp/head.jsonl")" -eq 4 ]
then ok "bench head times both heads in both dtypes at each chunk size"
else fail "bench head ($(head -c 300 "$tmp/head.err") $(head -c 300 "$tmp/head.jsonl"))"; fi

# plan: tables, JSON whose numbers add up, a layout that does not fit (exit 1, one line), refusals.
if "$bin" plan --model qwen1.5-moe-a2.7b --cluster 8xh100 >"$tmp/plan.txt" 2>"$tmp/plan.err" &&
   grep -q "memory per rank" "$tmp/plan.txt" && grep -q "all-to-all share" "$tmp/plan.txt"
then ok "plan prints memory and time tables"; else fail "plan ($(head -c 300 "$tmp/plan.err"))"; fi
if "$bin" plan --model qwen1.5-moe-a2.7b --cluster 8xh200 --cluster-set nodes=2 --dtype bfloat16 \
     --imbalance 1.5 --json >"$tmp/plan.json" 2>"$tmp/plan.err" && "$py" - "$tmp/plan.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
assert p["schema"] == "switchyard.plan/1" and p["cluster"]["nodes"] == 2, p["cluster"]
assert [l["ep"] for l in p["layouts"]] == [1, 2, 4], p["layouts"]  # 16 ranks, 60 experts
for l in p["layouts"]:
    m, t = l["memory_bytes"], l["step_seconds"]
    assert abs(sum(v for k, v in m.items() if k not in ("total", "capacity", "loading", "peak")) - m["total"]) < 1, m
    assert m["peak"] == max(m["total"], m["loading"]) and m["loading"] == 0, m  # GPUs: no host term
    assert abs(sum(v for k, v in t.items() if k != "total") - t["total"]) < 1e-9, t
    assert l["dp"] * l["ep"] == 16 and l["fits"] == (m["peak"] <= m["capacity"]), l
    assert (l["ep"] == 1) == (t["all_to_all"] == 0), l
    assert all(v == (1.5 if l["ep"] > 1 else 1.0) for v in l["rank_imbalance"]), l
PY
then ok "plan --json: parts add up to the totals, 2 nodes of 8xh200"
else fail "plan --json ($(head -c 300 "$tmp/plan.err"))"; fi
"$bin" plan --model qwen1.5-moe-a2.7b --ep 1 --set train.micro_batch_size=8 --set train.seq_len=2048 >/dev/null 2>"$tmp/err"
rc=$?
if [ "$rc" -eq 1 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "does not fit: .* GB more than" "$tmp/err"
then ok "plan: a layout that does not fit exits 1 with how many GB it misses"
else fail "plan that does not fit (rc=$rc: $(head -c 300 "$tmp/err"))"; fi
expect_error "plan unknown preset" "--cluster dgx: no such preset" plan --model tiny --cluster dgx
expect_error "plan unknown cluster field" "no field 'gpus'" plan --model tiny --cluster-set gpus=2
expect_error "plan EP not dividing the experts" "does not divide the 60 expert slots" \
  plan --model qwen1.5-moe-a2.7b --cluster-set devices_per_node=16 --ep 16
expect_error "plan unknown model" "--model nope: no such file or folder" plan --model nope

echo "cli: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
