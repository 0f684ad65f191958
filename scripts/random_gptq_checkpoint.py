#!/usr/bin/env python3
"""A GPTQ-Int4 Qwen2-MoE checkpoint of any size, Qwen/Qwen1.5-MoE-A2.7B-Chat-GPTQ-Int4's layout
and shapes by default, from random numbers: what a user's download would be, where no download
is possible (the GPU machine, the size planner's memory calibration).

  random_gptq_checkpoint.py OUT_DIR [--layers N] [--group-size 128] [--seed 0] [--float]
                            [--device cpu|cuda]

The model is transformers' Qwen2MoeConfig defaults (Qwen1.5-MoE-A2.7B: hidden 2048, 24 layers,
60 experts top-4 of width 1408, shared expert 5632, vocabulary 151936). As in the hub checkpoint
every linear layer inside the decoder layers is quantized (attention q/k/v/o, the experts, the
shared expert), symmetric with group size 128 and AutoGPTQ's v1 zero convention (zero - 1 = 7
stored); the router gate, the shared-expert gate, norms, embeddings, the LM head and the
attention biases stay fp16.

Why random words are a valid checkpoint: each int32 of `qweight` packs 8 four-bit codes, and
every bit pattern is 8 codes in 0..15, so uniformly random words are uniformly random codes.
The packing itself (which code goes to which bit of which word) is AutoGPTQ's, checked against
its own packer on small shapes by scripts/hf_gptq_reference.py and the GptqCheckpoint tests;
packing 12 B weights with that packer would take hours, drawing the words takes seconds.
Scales are drawn so that weights have a standard deviation near 0.02. Shards of about 2 GB and
model.safetensors.index.json, as the hub writes them.

--float writes the same model unquantized instead, every weight bf16 (28.6 GB at full size):
the bf16 side of a comparison with the int4 checkpoint.

--device cuda draws the numbers on a GPU (other numbers than the CPU's for the same seed). On the
CPU, drawing and casting take most of the time of a full-size checkpoint (the whole bf16 one took
about 6 s per layer here, 2.5 min): minutes a lent GPU machine can spend elsewhere.
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file
from transformers import Qwen2MoeConfig

SYM_ZEROS_WORD = 0x77777777  # eight nibbles of zero - 1 = 7


def quantized(out: int, inp: int, group: int, g: torch.Generator) -> dict:
    groups = inp // group
    qweight = torch.randint(-(2**31), 2**31, (inp // 8, out), generator=g, dtype=torch.int64,
                            device=g.device)
    # Codes uniform in 0..15 minus zero 8 have a standard deviation of 4.6: scales near 0.0043.
    scales = (torch.rand(groups, out, generator=g, device=g.device) * 0.003 + 0.003).half()
    return {
        "qweight": qweight.to(torch.int32),
        "qzeros": torch.full((groups, out // 8), SYM_ZEROS_WORD, dtype=torch.int64).to(torch.int32),
        "scales": scales,
        "g_idx": (torch.arange(inp, dtype=torch.int32) // group),
    }


def normal(*shape, g: torch.Generator, std: float = 0.02) -> torch.Tensor:
    return (torch.randn(*shape, generator=g, device=g.device) * std).half()


def layer_tensors(c: Qwen2MoeConfig, l: int, group: int, g: torch.Generator):
    """(name, tensor) of decoder layer l, one projection at a time; group 0: unquantized bf16."""

    def linear(prefix, out, inp):
        if group == 0:
            yield prefix + "weight", normal(out, inp, g=g).to(torch.bfloat16)
            return
        for part, t in quantized(out, inp, group, g).items():
            yield prefix + part, t

    p = f"model.layers.{l}."
    H, D = c.hidden_size, c.hidden_size // c.num_attention_heads
    yield p + "input_layernorm.weight", torch.ones(H, dtype=torch.half)
    yield p + "post_attention_layernorm.weight", torch.ones(H, dtype=torch.half)
    for name, out in (("q", c.num_attention_heads * D), ("k", c.num_key_value_heads * D),
                      ("v", c.num_key_value_heads * D), ("o", H)):
        inp = H if name != "o" else c.num_attention_heads * D
        yield from linear(f"{p}self_attn.{name}_proj.", out, inp)
        if name != "o":
            yield f"{p}self_attn.{name}_proj.bias", normal(out, g=g)
    yield p + "mlp.gate.weight", normal(c.num_experts, H, g=g)
    yield p + "mlp.shared_expert_gate.weight", normal(1, H, g=g)
    experts = [(f"mlp.experts.{e}.", c.moe_intermediate_size) for e in range(c.num_experts)]
    for prefix, width in experts + [("mlp.shared_expert.", c.shared_expert_intermediate_size)]:
        for name, out, inp in (("gate", width, H), ("up", width, H), ("down", H, width)):
            yield from linear(f"{p}{prefix}{name}_proj.", out, inp)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=None, help="decoder layers (default: 24)")
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard-gb", type=float, default=2.0)
    ap.add_argument("--float", action="store_true", help="bf16 weights, no quantization")
    ap.add_argument("--device", default="cpu", help="where the random numbers are drawn")
    a = ap.parse_args()
    c = Qwen2MoeConfig()
    if a.layers is not None:
        c.num_hidden_layers = a.layers
    g = torch.Generator(device=a.device).manual_seed(a.seed)
    os.makedirs(a.out, exist_ok=True)

    shard, shard_bytes, names, weight_map, total = {}, 0, [], {}, 0

    def flush():
        nonlocal shard, shard_bytes
        if not shard:
            return
        name = f"model-{len(names) + 1:05d}.safetensors"
        tmp = os.path.join(a.out, name + ".tmp")
        save_file(shard, tmp, metadata={"format": "pt"})
        os.replace(tmp, os.path.join(a.out, name))
        names.append(name)
        for key in shard:
            weight_map[key] = name
        shard, shard_bytes = {}, 0

    def add(key, t):
        nonlocal shard_bytes, total
        if a.float and t.is_floating_point():
            t = t.to(torch.bfloat16)
        t = t.contiguous().cpu()
        shard[key] = t
        shard_bytes += t.numel() * t.element_size()
        total += t.numel() * t.element_size()
        if shard_bytes >= a.shard_gb * 1e9:
            flush()

    add("model.embed_tokens.weight", normal(c.vocab_size, c.hidden_size, g=g))
    for l in range(c.num_hidden_layers):
        for key, t in layer_tensors(c, l, 0 if a.float else a.group_size, g):
            add(key, t)
    add("model.norm.weight", torch.ones(c.hidden_size, dtype=torch.half))
    add("lm_head.weight", normal(c.vocab_size, c.hidden_size, g=g))
    flush()
    # The shard names say how many there are only once all are written: rename them.
    count = len(names)
    final = {n: n.replace(".safetensors", f"-of-{count:05d}.safetensors") for n in names}
    for old, new in final.items():
        os.replace(os.path.join(a.out, old), os.path.join(a.out, new))
    index = {"metadata": {"total_size": total},
             "weight_map": {k: final[v] for k, v in sorted(weight_map.items())}}
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
    config = json.loads(c.to_json_string())
    config["torch_dtype"] = config["dtype"] = "bfloat16" if a.float else "float16"
    if not a.float:
        config["quantization_config"] = {
            "bits": 4, "group_size": a.group_size, "damp_percent": 0.01, "desc_act": False,
            "static_groups": False, "sym": True, "true_sequential": True, "quant_method": "gptq",
            "checkpoint_format": "gptq", "model_name_or_path": None, "model_file_base_name": None}
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(f"{a.out}: {c.num_hidden_layers} layers, {count} shard(s), {total / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
