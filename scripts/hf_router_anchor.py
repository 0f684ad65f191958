#!/usr/bin/env python3
"""The transformers anchor for router fine-tuning: Hugging Face's Qwen2MoeForCausalLM (the
installed transformers, its fastest experts backend, `grouped_mm` where offered) with random
weights at Qwen1.5-MoE-A2.7B's shapes, every parameter frozen except the routers (`mlp.gate`),
AdamW, bf16, trained on random token ids with the batch `switchyard train` is given: tokens/s
and peak GPU memory, to set beside Switchyard's own run on the same GPU.

  hf_router_anchor.py --out RESULT.json [--layers N] [--micro-batch 2] [--seq-len 2048]
                      [--accumulation 4] [--steps 6] [--device cuda]

Prints one JSON line (also written to --out): the config, the experts backend used, median
step seconds over the steps after the first, tokens/s, peak allocated GB and the losses.
"""
import argparse
import json
import statistics
import time

import torch
from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM


def build(layers, device, backend):
    kwargs = {"num_hidden_layers": layers} if layers else {}
    if backend:
        kwargs["experts_implementation"] = backend
    config = Qwen2MoeConfig(**kwargs)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = Qwen2MoeForCausalLM(config)
    finally:
        torch.set_default_dtype(torch.float32)
    return config, model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--micro-batch", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--accumulation", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    device = torch.device(a.device)

    backend = "grouped_mm"
    try:
        config, model = build(a.layers, device, backend)
        model.train()
        backend = getattr(config, "_experts_implementation", None) or "default"
    except (ValueError, TypeError, KeyError) as e:  # an older transformers without it
        print(f"grouped_mm not offered ({e}); the default experts backend")
        backend = "default"
        config, model = build(a.layers, device, None)
    routers = []
    for name, p in model.named_parameters():
        p.requires_grad_(name.endswith("mlp.gate.weight"))
        if p.requires_grad:
            routers.append(p)
    assert len(routers) == config.num_hidden_layers, len(routers)
    opt = torch.optim.AdamW(routers, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0)
    gen = torch.Generator(device="cpu").manual_seed(1)

    def batch():
        return torch.randint(0, config.vocab_size, (a.micro_batch, a.seq_len), generator=gen).to(device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, losses = [], []
    for _ in range(a.steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        total = 0.0
        for _ in range(a.accumulation):
            ids = batch()
            out = model(input_ids=ids, labels=ids)
            (out.loss / a.accumulation).backward()
            total += out.loss.detach()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(total) / a.accumulation)  # the step's one read, as in Switchyard
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times[1:] if len(times) > 1 else times)
    tokens = a.micro_batch * a.seq_len * a.accumulation
    result = {
        "model": "Qwen2MoeForCausalLM", "layers": config.num_hidden_layers,
        "experts_backend": backend, "micro_batch": a.micro_batch, "seq_len": a.seq_len,
        "accumulation": a.accumulation, "steps": a.steps, "device": str(device),
        "step_s": step_s, "tokens_per_s": tokens / step_s,
        "peak_gb": (torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None),
        "losses": losses,
    }
    print(json.dumps(result))
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
