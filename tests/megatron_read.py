#!/usr/bin/env python3
"""An independent reader of Megatron "MMIDIDX" indexed datasets, written from
shards/FORMAT.md ("Megatron export") with numpy, that checks the exporter.

    megatron_read.py SHARDS_FIXTURE_EXE

Runs the fixture helper into a temporary folder (it packs real corpus
documents into shards and exports them), then parses each .idx, memory-maps
the .bin and compares every sequence with the documents the fixture packed.
Speaks TAP; exits 77 when numpy or the corpus is missing.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
except ImportError:
    print("1..0 # SKIP numpy is not installed")
    sys.exit(77)

DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32, 8: np.uint16}
MAGIC = b"MMIDIDX\x00\x00"

n_tests = 0
n_failed = 0


def check(ok, name, detail=""):
    global n_tests, n_failed
    n_tests += 1
    if not ok:
        n_failed += 1
        print(f"not ok {n_tests} - {name}")
        if detail:
            print(f"# {detail}")
    else:
        print(f"ok {n_tests} - {name}")


def read_index(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:9] != MAGIC:
        raise ValueError(f"{path}: bad magic {raw[:9]!r}")
    version, = struct.unpack_from("<Q", raw, 9)
    code, = struct.unpack_from("<B", raw, 17)
    n_seq, n_doc_idx = struct.unpack_from("<QQ", raw, 18)
    off = 34
    lengths = np.frombuffer(raw, dtype="<i4", count=n_seq, offset=off)
    off += 4 * n_seq
    pointers = np.frombuffer(raw, dtype="<i8", count=n_seq, offset=off)
    off += 8 * n_seq
    doc_idx = np.frombuffer(raw, dtype="<i8", count=n_doc_idx, offset=off)
    off += 8 * n_doc_idx
    return {"version": version, "code": code, "lengths": lengths, "pointers": pointers, "doc_idx": doc_idx,
            "trailing": len(raw) - off}


def main():
    if len(sys.argv) != 2:
        print("usage: megatron_read.py SHARDS_FIXTURE_EXE", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="pile-megatron-") as tmp:
        out = os.path.join(tmp, "shards")
        p = subprocess.run([sys.argv[1], out], capture_output=True, text=True)
        if p.returncode == 77:
            print(p.stdout.strip() or "1..0 # SKIP fixture skipped")
            return 77
        if p.returncode != 0:
            print(f"Bail out! shards_fixture failed: {p.stderr.strip()}")
            return 1
        with open(os.path.join(out, "expected.json")) as f:
            expected = json.load(f)

        for prefix, want in expected["megatron"].items():
            idx = read_index(os.path.join(out, prefix + ".idx"))
            seqs = want["sequences"]
            dtype = np.dtype(want["dtype"]).newbyteorder("<")
            check(idx["version"] == 1, f"{prefix}: version 1", f"got {idx['version']}")
            check(DTYPES.get(idx["code"]) == np.dtype(want["dtype"]).type, f"{prefix}: dtype code",
                  f"code {idx['code']}")
            lengths, pointers, doc_idx = idx["lengths"], idx["pointers"], idx["doc_idx"]
            check(len(lengths) == len(seqs), f"{prefix}: sequence count", f"{len(lengths)} != {len(seqs)}")
            check(list(lengths) == [len(s) for s in seqs], f"{prefix}: sequence lengths")
            ptr_want = np.concatenate([[0], np.cumsum(lengths.astype(np.int64))[:-1]]) * dtype.itemsize
            check(np.array_equal(pointers, ptr_want), f"{prefix}: pointers are byte offsets of each sequence")
            check(np.array_equal(doc_idx, np.arange(len(seqs) + 1)), f"{prefix}: document index 0..S")
            check(idx["trailing"] == 0, f"{prefix}: nothing after the document index", f"{idx['trailing']} bytes")
            bin_path = os.path.join(out, prefix + ".bin")
            size = os.path.getsize(bin_path)
            check(size == int(lengths.sum()) * dtype.itemsize, f"{prefix}: .bin size matches the index")
            data = np.memmap(bin_path, dtype=dtype, mode="r")
            bad = [k for k, s in enumerate(seqs)
                   if not np.array_equal(data[pointers[k] // dtype.itemsize:][:lengths[k]], np.array(s))]
            check(not bad, f"{prefix}: every sequence equals its document", f"first differing sequence {bad[:1]}")
            stream = np.concatenate([np.array(s, dtype=np.int64) for s in seqs])
            check(np.array_equal(np.asarray(data, dtype=np.int64), stream),
                  f"{prefix}: the .bin is the concatenation of the documents")
            del data
        for prefix in expected["megatron"]:
            leftovers = [n for n in os.listdir(out) if n.endswith(".tmp")]
            check(not leftovers, f"{prefix}: no temporary files left", str(leftovers))
            break
    print(f"1..{n_tests}")
    return 1 if n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
