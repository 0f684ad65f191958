#!/usr/bin/env python3
"""safetensors files written and read by the pinned `safetensors` package, for
tests/test_safetensors.cpp.

  safetensors_reference.py write OUT_DIR   # every dtype in one file, and a sharded folder
  safetensors_reference.py verify FILE     # loads a file Switchyard wrote and checks its values

Tensor NAME with dtype D and shape S holds expected(D, S): see `expected` (the C++ test computes
the same values).
"""
import json
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U8": torch.uint8, "BOOL": torch.bool,
}
SHAPES = {"matrix": [3, 5], "scalar": [], "empty": [0, 4], "cube": [2, 3, 4]}


def expected(dtype: torch.dtype, shape) -> torch.Tensor:
    n = 1
    for d in shape:
        n *= d
    v = torch.arange(n, dtype=torch.float64)
    if dtype == torch.bool:
        return (v.remainder(3) == 1).reshape(shape)
    if dtype.is_floating_point:
        return (v * 0.5 - 3.0).to(dtype).reshape(shape)
    return v.remainder(100).sub(0 if dtype == torch.uint8 else 50).to(dtype).reshape(shape)


def all_tensors():
    return {f"{d}.{s}": expected(t, shape) for d, t in DTYPES.items() for s, shape in SHAPES.items()}


def write(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    save_file(all_tensors(), os.path.join(out, "dtypes.safetensors"), metadata={"format": "pt"})
    # A sharded Hugging Face checkpoint: two shards and the index transformers writes.
    folder = os.path.join(out, "sharded")
    os.makedirs(folder, exist_ok=True)
    shards = {
        "model-00001-of-00002.safetensors": {"a.weight": expected(torch.float32, [4, 6]),
                                             "b.bias": expected(torch.bfloat16, [7])},
        "model-00002-of-00002.safetensors": {"c.weight": expected(torch.float16, [2, 2])},
    }
    weight_map, total = {}, 0
    for file, tensors in shards.items():
        save_file(tensors, os.path.join(folder, file), metadata={"format": "pt"})
        for name, t in tensors.items():
            weight_map[name] = file
            total += t.numel() * t.element_size()
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def verify(path: str) -> None:
    loaded = load_file(path)
    want = all_tensors()
    assert sorted(loaded) == sorted(want), (sorted(loaded), sorted(want))
    for name, t in want.items():
        got = loaded[name]
        assert got.dtype == t.dtype and list(got.shape) == list(t.shape), (name, got.dtype, got.shape)
        assert torch.equal(got, t), name
    with safe_open(path, "pt") as f:
        assert f.metadata() == {"format": "pt", "writer": "switchyard"}, f.metadata()
    print(f"verified {len(want)} tensors")


if __name__ == "__main__":
    {"write": write, "verify": verify}[sys.argv[1]](sys.argv[2])
