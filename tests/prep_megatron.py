#!/usr/bin/env python3
"""pile-prep --megatron, read back with numpy by the independent MMIDIDX
reader of tests/megatron_read.py: one sequence per document, in input
order, each the document's UTF-8 bytes (byte tokenizer) + end-of-text,
across several shards per split.

    prep_megatron.py PILE_PREP

Speaks TAP; exits 77 when numpy or the corpus is missing.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    print("1..0 # SKIP numpy is not installed")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from megatron_read import read_index  # noqa: E402

n_tests = 0
n_failed = 0


def check(ok, name, detail=""):
    global n_tests, n_failed
    n_tests += 1
    print(f"{'ok' if ok else 'not ok'} {n_tests} - {name}")
    if not ok:
        n_failed += 1
        if detail:
            print(f"# {detail}")


def documents(path, limit=None):
    docs = []
    with open(path, "rb") as f:
        for k, line in enumerate(f):
            if limit is not None and k >= limit:
                break
            text = json.loads(line)["text"]
            docs.append(list(text.encode("utf-8")) + [256])
    return docs


def main():
    if len(sys.argv) != 2:
        print("usage: prep_megatron.py PILE_PREP", file=sys.stderr)
        return 2
    corpus = os.path.join(os.environ.get("PILE_SHARED", "../shared"), "corpus")
    if not os.path.exists(os.path.join(corpus, "tricky.jsonl")):
        print("1..0 # SKIP the corpus is absent (set PILE_SHARED)")
        return 77
    with tempfile.TemporaryDirectory(prefix="pile-prep-megatron-") as tmp:
        ind = os.path.join(tmp, "in")
        os.mkdir(ind)
        shutil.copy(os.path.join(corpus, "tricky.jsonl"), os.path.join(ind, "a.jsonl"))
        with open(os.path.join(corpus, "sample.jsonl"), "rb") as f, open(os.path.join(ind, "val.jsonl"), "wb") as g:
            for k, line in enumerate(f):
                if k == 40:
                    break
                g.write(line)
        out = os.path.join(tmp, "out")
        cmd = [os.path.abspath(sys.argv[1]), "-q", "--megatron", "-L", "100", "--shard-size", "0.05", "-o", out, ind]
        p = subprocess.run(cmd, capture_output=True, text=True)
        check(p.returncode == 0, "pile-prep --megatron exits 0", p.stderr.strip()[-500:])
        if p.returncode != 0:
            print(f"1..{n_tests}")
            return 1
        want = {"train": documents(os.path.join(ind, "a.jsonl")), "val": documents(os.path.join(ind, "val.jsonl"))}
        for prefix, seqs in want.items():
            nsh = len([n for n in os.listdir(out) if n.startswith(prefix + "-") and n.endswith(".shard")])
            check(nsh >= 2, f"{prefix}: the documents span several shards ({nsh})")
            idx = read_index(os.path.join(out, prefix + ".idx"))
            check(idx["version"] == 1, f"{prefix}: version 1")
            check(idx["code"] == 8, f"{prefix}: uint16 ids (vocab 257)", f"code {idx['code']}")
            lengths, pointers, doc_idx = idx["lengths"], idx["pointers"], idx["doc_idx"]
            check(list(lengths) == [len(s) for s in seqs], f"{prefix}: one sequence per document, in input order",
                  f"{len(lengths)} sequences, {len(seqs)} documents")
            check(np.array_equal(pointers, np.concatenate([[0], np.cumsum(lengths.astype(np.int64))[:-1]]) * 2),
                  f"{prefix}: pointers are byte offsets")
            check(np.array_equal(doc_idx, np.arange(len(seqs) + 1)), f"{prefix}: document index 0..S")
            check(idx["trailing"] == 0, f"{prefix}: nothing after the index")
            data = np.fromfile(os.path.join(out, prefix + ".bin"), dtype="<u2")
            stream = np.concatenate([np.array(s, dtype=np.int64) for s in seqs])
            check(np.array_equal(data.astype(np.int64), stream),
                  f"{prefix}: the .bin is every document's bytes + end-of-text")
        check(not [n for n in os.listdir(out) if n.endswith(".tmp")], "no temporary files left")
    print(f"1..{n_tests}")
    return 1 if n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
