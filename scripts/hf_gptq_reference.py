#!/usr/bin/env python3
"""Tiny GPTQ-Int4 Qwen2-MoE checkpoints in the format of Qwen/Qwen1.5-MoE-A2.7B-Chat-GPTQ-Int4,
packed by AutoGPTQ's own packing code, with transformers' logits for the dequantized model.

  hf_gptq_reference.py OUT_DIR

The packer is not ours: QuantLinear.pack from AutoGPTQ 0.7.1 (auto_gptq/nn_modules/qlinear/
qlinear_cuda_old.py, pure numpy/torch), taken from the sdist that launch/setup.sh downloads into
.venv/sdists. Only that one module is imported (the package itself needs CUDA extensions).

Every linear layer inside the decoder layers (attention q/k/v/o, experts, shared expert, dense
MLPs) is quantized, as in the hub checkpoint; the router gate, the shared-expert gate, norms,
embeddings and the LM head stay float. Weights are drawn on the 4-bit grid first
(W = scale * (q - zero)), so the dequantized model transformers runs is exactly what the codes
mean, and the C++ side must reproduce it from the packed tensors alone.

Each case folder holds the GPTQ checkpoint (config.json with quantization_config, safetensors),
reference.safetensors (input_ids, attention_mask, logits), the eval-case files of
hf_qwen2_moe_reference.py, and unpack_reference.safetensors: for one expert projection, the
codes, zeros, scales and dequantized weight the packed tensors must unpack to.
"""
import glob
import importlib.util
import json
import os
import re
import sys
import tarfile
import tempfile

import torch
from safetensors.torch import load_file, save_file
from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_qwen2_moe_reference import inputs, write_eval_case  # noqa: E402

AUTOGPTQ_SDIST = "auto_gptq-0.7.1.tar.gz"
PACKER_MEMBER = "auto_gptq-0.7.1/auto_gptq/nn_modules/qlinear/qlinear_cuda_old.py"

BASE = dict(vocab_size=96, hidden_size=128, intermediate_size=128, moe_intermediate_size=64,
            shared_expert_intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, num_experts=4, num_experts_per_tok=2,
            max_position_embeddings=64, rope_theta=10000.0, norm_topk_prob=False,
            tie_word_embeddings=False, initializer_range=0.1)

CASES = {
    # The hub checkpoint's settings (sym, v1 zero convention) at a group size the tiny widths
    # divide into several groups; one dense layer.
    "gptq": dict(model=dict(mlp_only_layers=[1]), group_size=32, sym=True),
    # Per-group zero points (1..15: v1 cannot store a zero of 0).
    "gptq_asym": dict(model=dict(), group_size=64, sym=False),
}

QUANTIZED = re.compile(r"model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\..*(gate|up|down)_proj)\.weight$")


def load_packer(venv_dir: str):
    """AutoGPTQ's QuantLinear (cuda-old flavour), imported from the one file in the sdist."""
    sdist = os.path.join(venv_dir, "sdists", AUTOGPTQ_SDIST)
    if not os.path.exists(sdist):
        sys.exit(f"{sdist}: missing; launch/setup.sh downloads it")
    folder = tempfile.mkdtemp()
    with tarfile.open(sdist) as tar:
        tar.extract(PACKER_MEMBER, folder, filter="data")
    spec = importlib.util.spec_from_file_location("autogptq_qlinear", os.path.join(folder, PACKER_MEMBER))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.QuantLinear


def grid_weight(out: int, inp: int, group: int, sym: bool, g: torch.Generator):
    """Codes, zeros and fp16 scales per [out, group], and the weight they define (fp32)."""
    groups = inp // group
    q = torch.randint(0, 16, (out, inp), generator=g)
    zeros = torch.full((out, groups), 8) if sym else torch.randint(1, 16, (out, groups), generator=g)
    scales = (torch.rand(out, groups, generator=g) * 0.02 + 0.01).half()
    w = scales.float().repeat_interleave(group, 1) * (q - zeros.repeat_interleave(group, 1)).float()
    return q, zeros, scales, w


def pack(QuantLinear, w, bias, zeros, scales, group: int):
    out, inp = w.shape
    linear = torch.nn.Linear(inp, out, bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(w)
        if bias is not None:
            linear.bias.copy_(bias)
    ql = QuantLinear(bits=4, group_size=group, infeatures=inp, outfeatures=out,
                     bias=bias is not None, weight_dtype=torch.float16)
    g_idx = torch.tensor([i // group for i in range(inp)], dtype=torch.int32)
    ql.pack(linear, scales.float(), zeros.float(), g_idx)
    packed = {"qweight": ql.qweight, "qzeros": ql.qzeros, "scales": ql.scales.half(), "g_idx": g_idx}
    if bias is not None:
        packed["bias"] = bias.half()
    return packed


def write_case(QuantLinear, name: str, spec: dict, seed: int, out_dir: str) -> None:
    torch.manual_seed(seed)
    cfg = Qwen2MoeConfig(**{**BASE, **spec["model"]})
    cfg._attn_implementation = "eager"
    model = Qwen2MoeForCausalLM(cfg).eval()
    with torch.no_grad():  # the default init leaves routers at zero: make routing non-trivial
        for layer in model.model.layers:
            if hasattr(layer.mlp, "gate"):
                layer.mlp.gate.weight.normal_(0.0, 0.5)
    group, sym = spec["group_size"], spec["sym"]
    g = torch.Generator().manual_seed(100 + seed)

    # 1. Float checkpoint in the hub layout, quantizable weights replaced by grid weights.
    float_dir = tempfile.mkdtemp()
    model.save_pretrained(float_dir)
    state = {}
    for f in sorted(glob.glob(os.path.join(float_dir, "*.safetensors"))):
        state.update(load_file(f))
    grids = {}
    for key in sorted(state):
        if QUANTIZED.match(key):
            grids[key] = grid_weight(*state[key].shape, group, sym, g)
            state[key] = grids[key][3]
        else:  # stored in fp16 in the GPTQ checkpoint: the reference sees the same values
            state[key] = state[key].half().float()
    assert any(".experts.0.down_proj" in k for k in grids), sorted(grids)[:10]
    for f in glob.glob(os.path.join(float_dir, "*.safetensors")) + \
            glob.glob(os.path.join(float_dir, "*.index.json")):
        os.remove(f)
    save_file(state, os.path.join(float_dir, "model.safetensors"), metadata={"format": "pt"})
    deq = Qwen2MoeForCausalLM.from_pretrained(float_dir, attn_implementation="eager",
                                              dtype=torch.float32).eval()
    probe = "model.layers.0.mlp.experts.1.down_proj.weight"
    loaded = deq.state_dict()
    fused = "model.layers.0.mlp.experts.down_proj"
    loaded = loaded[fused][1] if fused in loaded else loaded[probe]
    assert torch.equal(loaded, grids[probe][3]), "transformers did not load the grid weights"

    # 2. The GPTQ checkpoint: packed tensors for the quantized layers, fp16 for the rest.
    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    gptq = {}
    for key, tensor in state.items():
        if key not in grids:
            gptq[key] = tensor.half().contiguous()
            continue
        prefix = key[: -len("weight")]
        q, zeros, scales, w = grids[key]
        bias = state.get(prefix + "bias")
        for part, t in pack(QuantLinear, w, bias, zeros, scales, group).items():
            gptq[prefix + part] = t.contiguous()
    for key in grids:  # biases of quantized layers travel with them, in fp16 like the scales
        gptq.pop(key, None)
    save_file(gptq, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    config = json.loads(cfg.to_json_string())
    config["torch_dtype"] = config["dtype"] = "float16"
    config["quantization_config"] = {
        "bits": 4, "group_size": group, "damp_percent": 0.01, "desc_act": False,
        "static_groups": False, "sym": sym, "true_sequential": True, "quant_method": "gptq",
        "checkpoint_format": "gptq", "model_name_or_path": None, "model_file_base_name": None}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)

    # 3. References: logits of the dequantized model, and one projection's unpacked parts.
    ids, mask = inputs(cfg.vocab_size)
    with torch.no_grad():
        logits = deq(input_ids=ids, attention_mask=mask).logits.float()
    save_file({"input_ids": ids, "attention_mask": mask, "logits": logits.contiguous()},
              os.path.join(folder, "reference.safetensors"))
    write_eval_case(deq, folder)
    q, zeros, scales, w = grids[probe]
    save_file({"codes": q.to(torch.uint8), "zeros": zeros.to(torch.uint8),
               "scales": scales.float(), "weight": w.contiguous()},
              os.path.join(folder, "unpack_reference.safetensors"),
              metadata={"prefix": probe[: -len("weight")]})


def main() -> None:
    out = sys.argv[1]
    QuantLinear = load_packer(sys.prefix)  # the venv
    for seed, (name, spec) in enumerate(CASES.items()):
        write_case(QuantLinear, name, spec, seed, out)
    print(f"wrote {len(CASES)} GPTQ Qwen2-MoE cases to {out}")


if __name__ == "__main__":
    main()
