#!/usr/bin/env python3
"""Tiny random Qwen2-MoE models built and saved by the pinned transformers, with reference
logits for fixed padded inputs, for tests/test_qwen2_moe.cpp and the EP = 2 MPI test.

  hf_qwen2_moe_reference.py OUT_DIR
  hf_qwen2_moe_reference.py check-export DIR REFERENCE.safetensors TOLERANCE [DIR REF TOL ...]

Each case is a folder: the checkpoint (config.json + safetensors, as save_pretrained writes it,
or the in-memory fused-expert layout of transformers v5 for "fused") and reference.safetensors
with input_ids, attention_mask (1 keep, 0 padding) and logits (float32).
"""
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

BASE = dict(vocab_size=96, hidden_size=32, intermediate_size=48, moe_intermediate_size=24,
            shared_expert_intermediate_size=40, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, num_experts=8, num_experts_per_tok=2,
            max_position_embeddings=64, rope_theta=10000.0, norm_topk_prob=False,
            tie_word_embeddings=False, initializer_range=0.1)

CASES = {
    # grouped kv heads, a dense layer, shared expert, top-k weights not renormalised
    "base": dict(mlp_only_layers=[1]),
    "norm_topk": dict(norm_topk_prob=True, num_key_value_heads=4, num_experts_per_tok=3),
    "no_shared": dict(shared_expert_intermediate_size=0),
    # tied LM head, every other layer MoE, several shards with an index
    "sharded_tied": dict(tie_word_embeddings=True, decoder_sparse_step=2),
    # the fused 3-D expert tensors transformers v5 holds in memory
    "fused": dict(),
}


def inputs(vocab: int):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (3, 10), generator=g)
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, :3] = 0   # left padding
    mask[2, -2:] = 0  # right padding
    return ids, mask


def write_eval_case(model, folder: str) -> None:
    """Sequences of different lengths as `switchyard eval --tokens` reads them (one per line),
    and transformers' logits for the same batch right-padded and masked."""
    g = torch.Generator().manual_seed(2)
    lengths = [6, 9, 3, 9]
    seqs = [torch.randint(0, model.config.vocab_size, (n,), generator=g) for n in lengths]
    with open(os.path.join(folder, "eval_tokens.txt"), "w") as f:
        for s in seqs:
            f.write(" ".join(str(int(t)) for t in s) + "\n")
    ids = torch.zeros(len(seqs), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    save_file({"logits": logits.contiguous(), "attention_mask": mask},
              os.path.join(folder, "eval_reference.safetensors"))


def check_export(folder: str, reference_path: str, tolerance: float) -> bool:
    """True when transformers loads the checkpoint `switchyard convert` wrote, with no missing
    or unexpected tensors, and its logits match the reference inputs' logits; prints one line
    "FOLDER: ..." either way, naming the tolerance when it is exceeded."""
    from safetensors.torch import load_file
    ref = load_file(reference_path)
    model, info = Qwen2MoeForCausalLM.from_pretrained(
        folder, attn_implementation="eager", dtype=torch.float32, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k != "error_msgs"} or \
        ({"error_msgs": info["error_msgs"]} if info.get("error_msgs") else {})
    if problems:
        print(f"{folder}: transformers loading it: {problems}")
        return False
    with torch.no_grad():
        logits = model.eval()(input_ids=ref["input_ids"], attention_mask=ref["attention_mask"]).logits
    keep = ref["attention_mask"].bool()
    diff = (logits.float() - ref["logits"])[keep].abs().max().item()
    scale = max(1.0, ref["logits"].abs().max().item())
    good = diff / scale <= tolerance
    print(f"{folder}: transformers on the export: max |logits - reference| / scale = {diff / scale:.3e}"
          + ("" if good else f", over the tolerance {tolerance:g}"))
    return good


def main() -> None:
    out = sys.argv[1]
    for seed, (name, overrides) in enumerate(CASES.items()):
        torch.manual_seed(seed)
        cfg = Qwen2MoeConfig(**{**BASE, **overrides})
        cfg._attn_implementation = "eager"
        model = Qwen2MoeForCausalLM(cfg).eval()
        with torch.no_grad():  # the default init leaves routers at zero: make routing non-trivial
            for layer in model.model.layers:
                if hasattr(layer.mlp, "gate"):
                    layer.mlp.gate.weight.normal_(0.0, 0.5)
        folder = os.path.join(out, name)
        if name == "fused":
            os.makedirs(folder, exist_ok=True)
            cfg.save_pretrained(folder)
            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            state.pop("lm_head.weight", None) if cfg.tie_word_embeddings else None
            assert any(k.endswith("mlp.experts.gate_up_proj") for k in state), list(state)[:20]
            save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
        else:
            shard = "20KB" if name == "sharded_tied" else "50GB"
            model.save_pretrained(folder, max_shard_size=shard)
        ids, mask = inputs(cfg.vocab_size)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
        save_file({"input_ids": ids, "attention_mask": mask, "logits": logits.contiguous()},
                  os.path.join(folder, "reference.safetensors"))
        write_eval_case(model, folder)
    print(f"wrote {len(CASES)} Qwen2-MoE cases to {out}")


if __name__ == "__main__":
    if sys.argv[1] == "check-export":  # one process for many folders: transformers loads once
        args = sys.argv[2:]
        if not args or len(args) % 3:
            sys.exit("usage: check-export DIR REFERENCE TOLERANCE [DIR REFERENCE TOLERANCE ...]")
        results = [check_export(args[i], args[i + 1], float(args[i + 2])) for i in range(0, len(args), 3)]
        sys.exit(0 if all(results) else 1)
    else:
        main()
