#!/usr/bin/env python3
"""Tiny random BERT models built and saved by the pinned transformers, with reference outputs
for fixed padded inputs, for tests/test_bert_moe.cpp and tests/test_bert_moe_mpi.cpp.

  hf_bert_reference.py OUT_DIR

Each case is a folder: the checkpoint (config.json + model.safetensors) and
reference.safetensors with input_ids, attention_mask (1 keep, 0 padding), token_type_ids,
last_hidden_state, pooled and (when the checkpoint has a classifier) logits, all float32 in
eval mode.

  base        BertForSequenceClassification.save_pretrained (names under "bert.")
  legacy      the same weights with the old TF-port LayerNorm names gamma/beta
  bert_model  the same encoder saved as a BertModel: no "bert." prefix, no classifier
  no_pooler   a BertModel built without a pooler (add_pooling_layer=False)
"""
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertForSequenceClassification, BertModel

CONFIG = dict(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
              intermediate_size=64, max_position_embeddings=40, type_vocab_size=2,
              hidden_act="gelu", layer_norm_eps=1e-12, pad_token_id=0, num_labels=3,
              initializer_range=0.2)


def inputs(vocab: int):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, vocab, (3, 12), generator=g)
    types = torch.zeros_like(ids)
    types[:, 6:] = 1  # a sentence pair: segment B from position 6
    mask = torch.ones_like(ids)
    mask[1, -4:] = 0  # right padding, BERT's convention
    mask[2, -7:] = 0
    ids[mask == 0] = 0
    types[mask == 0] = 0
    return ids, mask, types


def randomise_layer_norms(model) -> None:
    """transformers initialises LayerNorms to (1, 0); random ones make the check meaningful."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.normal_(1.0, 0.2)
                m.bias.normal_(0.0, 0.2)


def run(encoder, ids, mask, types, classifier=None):
    """Reference outputs of a BertModel (and of the classifier on its pooled output)."""
    with torch.no_grad():
        out = encoder(input_ids=ids, attention_mask=mask, token_type_ids=types)
        ref = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
               "last_hidden_state": out.last_hidden_state.float().contiguous()}
        if out.pooler_output is not None:
            ref["pooled"] = out.pooler_output.float().contiguous()
        if classifier is not None:  # dropout is the identity in eval mode
            ref["logits"] = classifier(out.pooler_output).float().contiguous()
    return ref


def save_state(model, folder: str, rename=lambda k: k) -> None:
    os.makedirs(folder, exist_ok=True)
    model.config.save_pretrained(folder)
    state = {rename(k): v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})


def legacy_name(name: str) -> str:
    if ".LayerNorm." in name:
        return name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias",
                                                                            "LayerNorm.beta")
    return name


def main() -> None:
    out = sys.argv[1]
    torch.manual_seed(0)
    cfg = BertConfig(**CONFIG)
    cfg._attn_implementation = "eager"
    model = BertForSequenceClassification(cfg).eval()
    randomise_layer_norms(model)
    ids, mask, types = inputs(cfg.vocab_size)

    ref = run(model.bert, ids, mask, types, model.classifier)
    with torch.no_grad():  # the whole model's logits are the classifier's on the pooled output
        logits = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    assert torch.equal(logits.float(), ref["logits"]), "classifier path differs"

    base = os.path.join(out, "base")
    model.save_pretrained(base)
    save_file(ref, os.path.join(base, "reference.safetensors"))

    legacy = os.path.join(out, "legacy")
    save_state(model, legacy, legacy_name)
    save_file(ref, os.path.join(legacy, "reference.safetensors"))

    encoder = BertModel(cfg).eval()
    encoder.load_state_dict(model.bert.state_dict())
    folder = os.path.join(out, "bert_model")
    encoder.save_pretrained(folder)
    save_file(run(encoder, ids, mask, types), os.path.join(folder, "reference.safetensors"))

    bare = BertModel(cfg, add_pooling_layer=False).eval()
    bare.load_state_dict(model.bert.state_dict(), strict=False)
    folder = os.path.join(out, "no_pooler")
    bare.save_pretrained(folder)
    save_file(run(bare, ids, mask, types), os.path.join(folder, "reference.safetensors"))
    print(f"wrote 4 BERT cases to {out}")


if __name__ == "__main__":
    main()
