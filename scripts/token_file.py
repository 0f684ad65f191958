#!/usr/bin/env python3
"""Switchyard token files (the format of data/token_file.h) from Python, so data tokenized by
any Hugging Face tokenizer -- e.g. the real Qwen one -- can be trained on.

  # texts (JSON Lines with a "text" field, or plain text with blank-line separated documents)
  token_file.py encode --tokenizer Qwen/Qwen1.5-MoE-A2.7B --jsonl docs.jsonl --out train.tok
  token_file.py encode --tokenizer data/tokenizer.json --text book.txt --out book.tok
  token_file.py info train.tok

--tokenizer is a tokenizer.json file (read with `tokenizers`) or a model name / folder (read with
`transformers.AutoTokenizer`). The EOS id stored is the tokenizer's eos token (or <|endoftext|>),
--eos TOKEN to choose another; the vocab size stored is the tokenizer's, --vocab-size N to store
the model's (e.g. 151936 for Qwen1.5-MoE, whose embedding is larger than its tokenizer).

As a module: write_token_file(path, docs, vocab_size, eos_id) and read_token_file(path).
"""
import argparse
import array
import json
import os
import struct
import sys

MAGIC = b"SYTOKENS"
VERSION = 1
HEADER_BYTES = 64
NO_EOS = 0xFFFFFFFF
_HEADER = struct.Struct("<8sIIQQII24x")  # magic, version, header_bytes, D, T, vocab, eos
assert _HEADER.size == HEADER_BYTES
assert array.array("I").itemsize == 4 and array.array("Q").itemsize == 8
assert sys.byteorder == "little"


def write_token_file(path, docs, vocab_size, eos_id=None):
    """Writes the documents (iterables of ids) to PATH via PATH.partial and a rename."""
    partial = path + ".partial"
    offsets = array.array("Q", [0])
    with open(partial, "wb") as f:
        f.write(b"\0" * HEADER_BYTES)
        for d, doc in enumerate(docs):
            ids = array.array("I", doc)
            if ids and max(ids) >= vocab_size:
                raise ValueError(f"document {d}: id {max(ids)} not below vocab size {vocab_size}")
            ids.tofile(f)
            offsets.append(offsets[-1] + len(ids))
        tokens = offsets[-1]
        f.write(b"\0" * ((-(HEADER_BYTES + 4 * tokens)) % 8))
        offsets.tofile(f)
        f.seek(0)
        f.write(_HEADER.pack(MAGIC, VERSION, HEADER_BYTES, len(offsets) - 1, tokens, vocab_size,
                             NO_EOS if eos_id is None else eos_id))
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)


def read_token_file(path):
    """(documents as lists of ids, vocab_size, eos_id or None); checks what the C++ reader checks
    except the ids."""
    with open(path, "rb") as f:
        data = f.read()
    magic, version, header_bytes, n_docs, n_tokens, vocab, eos = _HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION or header_bytes != HEADER_BYTES:
        raise ValueError(f"{path}: not a version-{VERSION} token file")
    at = (HEADER_BYTES + 4 * n_tokens + 7) // 8 * 8
    if len(data) != at + 8 * (n_docs + 1):
        raise ValueError(f"{path}: size does not match the header")
    ids = array.array("I", data[HEADER_BYTES:HEADER_BYTES + 4 * n_tokens])
    offsets = array.array("Q", data[at:])
    docs = [ids[offsets[d]:offsets[d + 1]].tolist() for d in range(n_docs)]
    return docs, vocab, None if eos == NO_EOS else eos


def _texts(args):
    for path in args.jsonl or []:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)["text"]
    for path in args.text or []:
        with open(path, encoding="utf-8") as f:
            doc = []
            for line in f.read().split("\n"):
                line = line.rstrip("\r")
                if line.strip(" \t"):
                    doc.append(line)
                elif doc:
                    yield "\n".join(doc).lstrip("\n").rstrip(" \t\n")
                    doc = []
            if doc:
                yield "\n".join(doc).lstrip("\n").rstrip(" \t\n")


def _load_tokenizer(name, eos_token):
    """(encode(text) -> ids, vocab_size, eos id or None)."""
    if name.endswith(".json") and os.path.isfile(name):
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(name)
        eos = tok.token_to_id(eos_token or "<|endoftext|>")
        return (lambda t: tok.encode(t, add_special_tokens=False).ids), tok.get_vocab_size(), eos
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(name)
    eos = tok.convert_tokens_to_ids(eos_token) if eos_token else tok.eos_token_id
    return (lambda t: tok(t, add_special_tokens=False)["input_ids"]), len(tok), eos


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    enc = sub.add_parser("encode")
    enc.add_argument("--tokenizer", required=True)
    enc.add_argument("--jsonl", action="append")
    enc.add_argument("--text", action="append")
    enc.add_argument("--out", required=True)
    enc.add_argument("--eos")
    enc.add_argument("--vocab-size", type=int)
    info = sub.add_parser("info")
    info.add_argument("path")
    args = ap.parse_args()
    if args.cmd == "info":
        docs, vocab, eos = read_token_file(args.path)
        print(f"{args.path}: {len(docs)} documents, {sum(map(len, docs))} tokens, "
              f"vocab {vocab}, eos {eos}")
        return
    encode, vocab, eos = _load_tokenizer(args.tokenizer, args.eos)
    vocab = args.vocab_size or vocab
    write_token_file(args.out, (encode(t) for t in _texts(args)), vocab, eos)
    docs, _, _ = read_token_file(args.out)
    print(f"{args.out}: {len(docs)} documents, {sum(map(len, docs))} tokens, vocab {vocab}, "
          f"eos {eos}")


if __name__ == "__main__":
    main()
