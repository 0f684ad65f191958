#!/usr/bin/env python3
"""The fortune-cookie corpus read exactly as data/fortune_corpus.cpp reads it, for the
tokenizer training script and the C++ parity tests (which compare record by record, so the two
readers cannot drift apart unnoticed).

  fortune_corpus.py [ROOT]     # prints records per language and split

Rules (the C++ header data/fortune_corpus.h is the reference text):
- sources: SOURCES below, each (language, path under ROOT). A folder source reads the regular
  files directly inside it (no subfolders: off/ stays out; no symlinks; no *.dat / *.u8), minus
  files that another source names; a file source reads that file.
- cleaning, on the whole file: ANSI CSI sequences removed; a backspace deletes the character
  before it (overstrike), except a newline; other C0 controls but tab and newline, and DEL,
  removed. Files must be UTF-8.
- records: lines up to a line holding only "%"; leading newlines and trailing spaces, tabs and
  newlines stripped; empty records skipped; a text seen before (any language) is dropped.
- category: the file name without a ".fortunes" suffix; language: the source's.
- split: bucket = mix64(fnv1a64(utf8 text) ^ seed) % 10000; bucket < valid -> valid,
  < valid + test -> test, else train (valid/test in units of 1/10000, 500 each by default).
"""
import os
import re
import sys

ROOT = "/usr/share/games/fortunes"
# (language, path under ROOT, Debian package) -- same table as data/fortune_corpus.cpp.
SOURCES = [
    ("en", ".", "fortunes"),
    ("de", "de", "fortunes-de"),
    ("es", "es", "fortunes-es"),
    ("it", "it", "fortunes-it"),
    ("ru", "ru", "fortunes-ru"),
    ("zh", "chinese", "fortunes-zh"),
    ("zh", "song100", "fortunes-zh"),
    ("zh", "tang300", "fortunes-zh"),
    ("pl", "pl", "fortunes-pl"),
    ("cs", "cs", "fortunes-cs"),
    ("sk", "cs/klasik-sk", "fortunes-cs"),
    ("pt", "brasil", "fortunes-br"),
    ("bg", "bg", "fortunes-bg"),
    ("eo", "eo", "fortunes-eo"),
    ("ga", "ga", "fortunes-ga"),
]

MASK64 = (1 << 64) - 1
SPLITS = ("train", "valid", "test")


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & MASK64
    return h


def mix64(x: int) -> int:
    """splitmix64's finalizer: FNV's low bits alone are not uniform enough for a modulus."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def split_of(text: str, valid=500, test=500, seed=0) -> str:
    bucket = mix64(fnv1a64(text.encode("utf-8")) ^ seed) % 10000
    return "valid" if bucket < valid else "test" if bucket < valid + test else "train"


_CSI = re.compile("\x1b\\[[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]")


def clean(text: str) -> str:
    text = _CSI.sub("", text)
    out = []
    for ch in text:
        if ch == "\b":
            if out and out[-1] != "\n":
                out.pop()
        elif (ord(ch) < 0x20 and ch not in "\t\n") or ch == "\x7f":
            continue
        else:
            out.append(ch)
    return "".join(out)


def parse_fortunes(text: str):
    records, lines = [], []
    for line in clean(text).split("\n"):
        if line == "%":
            records.append("\n".join(lines))
            lines = []
        else:
            lines.append(line)
    records.append("\n".join(lines))
    out = []
    for r in records:
        r = r.lstrip("\n").rstrip(" \t\n")
        if r:
            out.append(r)
    return out


def source_files(root=ROOT):
    """[(language, category, path)] in reading order."""
    claimed = {os.path.normpath(os.path.join(root, p)) for _, p, _ in SOURCES}
    files = []
    for lang, rel, package in SOURCES:
        path = os.path.normpath(os.path.join(root, rel))
        if not os.path.exists(path):
            raise SystemExit(f"{path}: missing (Debian package {package}; run launch/setup.sh)")
        if os.path.isdir(path):
            names = sorted(os.listdir(path), key=lambda n: n.encode())
            for name in names:
                p = os.path.join(path, name)
                if (os.path.islink(p) or not os.path.isfile(p) or name.endswith(".dat")
                        or name.endswith(".u8") or os.path.normpath(p) in claimed):
                    continue
                files.append((lang, p))
        else:
            files.append((lang, path))
    return [(lang, _category(p), p) for lang, p in files]


def _category(path):
    name = os.path.basename(path)
    return name[: -len(".fortunes")] if name.endswith(".fortunes") else name


def read_corpus(root=ROOT, valid=500, test=500, seed=0):
    """[{text, language, category, split}] in reading order, duplicates dropped."""
    seen, records = set(), []
    for lang, category, path in source_files(root):
        with open(path, encoding="utf-8", errors="strict", newline="") as f:
            text = f.read()
        for r in parse_fortunes(text):
            if r in seen:
                continue
            seen.add(r)
            records.append({"text": r, "language": lang, "category": category,
                            "split": split_of(r, valid, test, seed)})
    return records


if __name__ == "__main__":
    recs = read_corpus(sys.argv[1] if len(sys.argv) > 1 else ROOT)
    langs = sorted({r["language"] for r in recs})
    print("language " + " ".join(f"{s:>7}" for s in SPLITS) + "   chars")
    for lang in langs:
        rs = [r for r in recs if r["language"] == lang]
        counts = [sum(r["split"] == s for r in rs) for s in SPLITS]
        print(f"{lang:8} " + " ".join(f"{c:7}" for c in counts) + f" {sum(len(r['text']) for r in rs):7}")
    print(f"total    " + " ".join(f"{sum(r['split'] == s for r in recs):7}" for s in SPLITS))
