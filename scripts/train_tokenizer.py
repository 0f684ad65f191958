#!/usr/bin/env python3
"""Trains the byte-level BPE tokenizer committed as data/tokenizer.json on the train split of
the fortune corpus (every language; scripts/fortune_corpus.py), with the pinned `tokenizers`.

  train_tokenizer.py [--vocab-size 8192] [--out data/tokenizer.json] [--root DIR]

The configuration is the one data/bpe_tokenizer.cpp reproduces exactly: no normalizer, the
GPT-2 ByteLevel pre-tokenizer (its regex, no prefix space), a BPE model over the 256 byte
symbols with no unknown token, the ByteLevel decoder, and four special tokens with the first ids.
Training is deterministic: the same corpus gives the same file.
"""
import argparse
import os
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fortune_corpus  # noqa: E402

# <|endoftext|> separates packed documents, <pad> pads, <cls> starts a sequence to classify
# (BERT pools the first position), <mask> is kept for masked-LM objectives.
SPECIAL_TOKENS = ["<|endoftext|>", "<pad>", "<cls>", "<mask>"]


def build(vocab_size: int, texts) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--out", default=os.path.join(here, "..", "data", "tokenizer.json"))
    ap.add_argument("--root", default=fortune_corpus.ROOT)
    args = ap.parse_args()
    records = fortune_corpus.read_corpus(args.root)
    texts = [r["text"] for r in records if r["split"] == "train"]
    tok = build(args.vocab_size, texts)
    tok.save(args.out, pretty=False)
    n_tokens = sum(len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False))
    n_bytes = sum(len(t.encode()) for t in texts)
    print(f"{args.out}: vocab {tok.get_vocab_size()}, {len(texts)} train records, "
          f"{n_tokens} tokens, {n_bytes / n_tokens:.2f} bytes/token")


if __name__ == "__main__":
    main()
