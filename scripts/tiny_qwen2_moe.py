#!/usr/bin/env python3
"""A tiny random Qwen2-MoE checkpoint saved by the pinned transformers, sized for a given
vocabulary (the bundled tokenizer's 8192), as a base model for training tests.

  tiny_qwen2_moe.py OUT_DIR [--vocab N] [--experts E] [--seed S]
"""
import argparse

import torch
from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("--vocab", type=int, default=8192)
parser.add_argument("--experts", type=int, default=8)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

torch.manual_seed(args.seed)
config = Qwen2MoeConfig(vocab_size=args.vocab, hidden_size=64, intermediate_size=128,
                        moe_intermediate_size=64, shared_expert_intermediate_size=128,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        num_experts=args.experts, num_experts_per_tok=2, max_position_embeddings=256,
                        rope_theta=10000.0, tie_word_embeddings=False, initializer_range=0.05)
Qwen2MoeForCausalLM(config).to(torch.float32).save_pretrained(args.out)
print(f"wrote {args.out}: vocab {args.vocab}, {args.experts} experts")
