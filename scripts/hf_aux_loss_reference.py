#!/usr/bin/env python3
"""Writes reference load-balancing losses computed by the pinned transformers' own
`load_balancing_loss_func` (Qwen2-MoE) on random router logits, for tests/test_hf_reference.cpp.

Each case file: int64 T, E, k; float64 loss; float32 logits [T, E] (little-endian).
usage: hf_aux_loss_reference.py OUT_DIR
"""
import os
import struct
import sys

import torch
from transformers.models.qwen2_moe.modeling_qwen2_moe import load_balancing_loss_func

CASES = [(64, 8, 2), (333, 60, 4), (1000, 16, 1), (5, 4, 4), (257, 64, 8)]


def main() -> None:
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    gen = torch.Generator().manual_seed(20261122)
    for i, (T, E, k) in enumerate(CASES):
        # A skewed scale per case, so the loss is not near its balanced value of k.
        logits = torch.randn(T, E, generator=gen, dtype=torch.float32) * (0.5 + i)
        loss = float(load_balancing_loss_func((logits,), num_experts=E, top_k=k))
        path = os.path.join(out, f"case_{i}.bin")
        with open(path + ".tmp", "wb") as f:
            f.write(struct.pack("<qqqd", T, E, k, loss))
            f.write(logits.numpy().astype("<f4").tobytes())
        os.replace(path + ".tmp", path)
        print(f"case {i}: T={T} E={E} k={k} loss={loss:.8f}")


if __name__ == "__main__":
    main()
