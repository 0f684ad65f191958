#!/usr/bin/env python3
"""Compare logits files written by `switchyard eval --dump-logits` (safetensors: "logits" and,
for causal LMs, "attention_mask"), with numpy only: the tests call this dozens of times, and
importing torch costs seconds per call where numpy costs a tenth of one.

  logits_compare.py same A B             bitwise equal logits and masks
  logits_compare.py close A B TOL        max |a - b| <= TOL * max(1, max |a|), same shape
  logits_compare.py reference OURS REF [TOL]
        OURS against a reference (transformers' logits, written by the hf_*_reference.py
        scripts) at every position REF's attention_mask keeps; TOL defaults to 1e-4.

Exit 0 when the comparison holds, 1 when it does not (with one line saying by how much).
"""
import sys

import numpy as np
from safetensors.numpy import load_file


def scaled_error(ours: np.ndarray, ref: np.ndarray, keep=None) -> float:
    diff = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
    if keep is not None:
        diff = diff[keep]
    return float(diff.max()) / max(1.0, float(np.abs(ref).max()))


def same(a_path: str, b_path: str) -> bool:
    a, b = load_file(a_path), load_file(b_path)
    equal = a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    print(f"{'bitwise equal' if equal else 'differ'}: {a_path} {b_path}")
    return equal


def close(a_path: str, b_path: str, tol: float) -> bool:
    a, b = load_file(a_path)["logits"], load_file(b_path)["logits"]
    if a.shape != b.shape:
        print(f"shapes differ: {a.shape} vs {b.shape}")
        return False
    err = scaled_error(b, a)
    print(f"max |a - b| / scale = {err:.3e} (tolerance {tol:g})")
    return err <= tol


def reference(ours_path: str, ref_path: str, tol: float) -> bool:
    ours, ref = load_file(ours_path)["logits"], load_file(ref_path)
    if ours.shape != ref["logits"].shape:
        print(f"shapes differ: ours {ours.shape}, reference {ref['logits'].shape}")
        return False
    keep = ref["attention_mask"].astype(bool) if "attention_mask" in ref else None
    err = scaled_error(ours, ref["logits"], keep)
    print(f"max |ours - transformers| / scale = {err:.3e}")
    return err <= tol


def main(argv) -> int:
    mode, args = argv[1], argv[2:]
    if mode == "same" and len(args) == 2:
        return 0 if same(*args) else 1
    if mode == "close" and len(args) == 3:
        return 0 if close(args[0], args[1], float(args[2])) else 1
    if mode == "reference" and len(args) in (2, 3):
        return 0 if reference(args[0], args[1], float(args[2]) if len(args) == 3 else 1e-4) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
