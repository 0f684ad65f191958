#!/usr/bin/env python3
"""Reference data for tests/test_tokenizer_parity.cpp from the pinned `tokenizers`, with
data/tokenizer.json and the fortune corpus (scripts/fortune_corpus.py):

  tokenizer_reference.py OUT_DIR

  OUT_DIR/unicode_classes.txt  \\p{L}, \\p{N}, \\s ranges as tokenizers' regex engine sees them
  OUT_DIR/valid.jsonl          every record of the valid split: language, category, text, ids
  OUT_DIR/valid.tok            the same ids as a token file written by scripts/token_file.py
  OUT_DIR/edge.jsonl           hand-picked and random strings: text, pre-tokenized pieces, ids
  OUT_DIR/decode.jsonl         random id sequences and their decoding, with and without specials
"""
import json
import os
import random
import sys

from tokenizers import Tokenizer

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
import fortune_corpus  # noqa: E402
import token_file  # noqa: E402
import unicode_classes  # noqa: E402

EDGE_CASES = [
    "", " ", "  ", "\t", "\n", "Hello  world!", "don't DON'T I'll've we'd they're you've I'm",
    "''s 's 'S x's y'S", " 'll", "a\u00a0b x\u3000y \u2028 \u205f\u0085end", "   leading",
    "trailing   ", "\n\n\nx", "tabs\t\tand\nnewlines\r\n", "a  \n  b", "12345 67.89 1,000",
    "\u0663\u0664\u0665 \u216b \u00bd \u2460", "emoji \U0001F600\U0001F44D\U0001F3FD!",
    "combining e\u0301 a\u0308", "\u4e2d\u6587\uff0c\u6807\u70b9\u3002",
    "\u0440\u0443\u0441\u0441\u043a\u0438\u0439 \u0442\u0435\u043a\u0441\u0442",
    "\u03b5\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u05e2\u05d1\u05e8\u05d9\u05ea",
    "\ud55c\uad6d\uc5b4 \u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
    "<|endoftext|>inside<pad>text<|endoftext|", "<|endoftext|><|endoftext|>", "<cls><mask>",
    " <pad> ", "<|endoftext|", "\x00\x01\x1b[1m control", "\u200b zero width \ufeff bom",
    "mixed123abc", "$$$ ~~~ ... !!!", "\u2019smart quotes\u2019s", "\U00011f04\U0002ebf0\U000105c0",
    "\U0010ffff \ue000 \U000f0000", "x" * 300, "=" * 200, " " * 50 + "y",
]


def random_strings(n, seed=1234):
    """Strings mixing ASCII, every \\s character, letters and numbers of many scripts and random
    code points (surrogates excepted), to exercise the pre-tokenizer's classes and boundaries."""
    rng = random.Random(seed)
    spaces = [chr(c) for c in (9, 10, 11, 12, 13, 32, 0x85, 0xA0, 0x1680, 0x2000, 0x2005, 0x200A,
                               0x2028, 0x2029, 0x202F, 0x205F, 0x3000)]
    pools = [
        lambda: chr(rng.randint(0x20, 0x7E)),
        lambda: rng.choice(spaces),
        lambda: rng.choice("'sStTmdlrve "),
        lambda: chr(rng.choice([rng.randint(0xC0, 0x24F), rng.randint(0x370, 0x4FF),
                                rng.randint(0x4E00, 0x9FFF), rng.randint(0x600, 0x6FF),
                                rng.randint(0x900, 0x97F), rng.randint(0xAC00, 0xD7A3)])),
        lambda: chr(rng.choice([0x660 + rng.randint(0, 9), 0x2160 + rng.randint(0, 15),
                                0xBC, 0xBD, 0x2460, 0xFF10 + rng.randint(0, 9)])),
        lambda: chr(rng.choice([rng.randint(0x80, 0xD7FF), rng.randint(0xE000, 0x10FFFF)])),
    ]
    out = []
    for _ in range(n):
        weights = [rng.random() for _ in pools]
        out.append("".join(rng.choices(pools, weights)[0]() for _ in range(rng.randint(1, 40))))
    return out


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    tok = Tokenizer.from_file(os.path.join(here, "..", "data", "tokenizer.json"))

    unicode_classes.write_text(os.path.join(out, "unicode_classes.txt"), unicode_classes.probe())

    valid = [r for r in fortune_corpus.read_corpus() if r["split"] == "valid"]
    encodings = tok.encode_batch([r["text"] for r in valid], add_special_tokens=False)
    with open(os.path.join(out, "valid.jsonl"), "w", encoding="utf-8") as f:
        for r, e in zip(valid, encodings):
            f.write(json.dumps({"language": r["language"], "category": r["category"],
                                "text": r["text"], "ids": e.ids}, ensure_ascii=False) + "\n")
    eos = tok.token_to_id("<|endoftext|>")
    token_file.write_token_file(os.path.join(out, "valid.tok"), (e.ids for e in encodings),
                                tok.get_vocab_size(), eos)

    with open(os.path.join(out, "edge.jsonl"), "w", encoding="utf-8") as f:
        for text in EDGE_CASES + random_strings(3000):
            pieces = [p for p, _ in tok.pre_tokenizer.pre_tokenize_str(text)]
            ids = tok.encode(text, add_special_tokens=False).ids
            f.write(json.dumps({"text": text, "pieces": pieces, "ids": ids}) + "\n")

    rng = random.Random(99)
    vocab = tok.get_vocab_size()
    with open(os.path.join(out, "decode.jsonl"), "w", encoding="utf-8") as f:
        for _ in range(2000):
            ids = [rng.randrange(vocab) if rng.random() < 0.9 else rng.randrange(4)
                   for _ in range(rng.randint(1, 12))]
            f.write(json.dumps({"ids": ids, "skip": tok.decode(ids, skip_special_tokens=True),
                                "keep": tok.decode(ids, skip_special_tokens=False)}) + "\n")
    print(f"{len(valid)} valid records, {len(EDGE_CASES)} + 3000 edge strings -> {out}")


if __name__ == "__main__":
    main()
