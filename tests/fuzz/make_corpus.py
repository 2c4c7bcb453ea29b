#!/usr/bin/env python3
"""make_corpus.py: (re)build the fuzz targets' seed corpora.

  tests/fuzz/make_corpus.py [--shared DIR] [--build DIR] [--out DIR] [TARGET...]

Writes OUT/<target>/ (default tests/fuzz/corpus/<target>/, the seeds kept in
the repository), each file a small input of that target, its first byte the
mode or layout byte where the target takes one (see the target's header):

  fuzz_jsonl        lines of corpus/tricky.jsonl and corpus/bad.jsonl
  fuzz_lines        pieces of the corpus files: a BOM, CRLF, a long line, no
                    final newline, a whole and a cut zstd stream
  fuzz_tokenizer    the texts of corpus/tricky.jsonl, heads of sample texts
  fuzz_tokfile      small real tokenizers cut from fixtures/gpt2: tiktoken
                    files, encoder.json + vocab.bpe, tokenizer.json variants
                    (prefix space, Split stages, NFC, added tokens)
  fuzz_shard        shards that pile-prep (BUILD/preprocess/pile-prep) makes
                    from a few corpus documents, byte and GPT-2 tokenizers
  fuzz_safetensors  the checkpoint files test_trainer_io --write-fixture
                    (BUILD/tests/test_trainer_io) writes

The last two come from our own writers, so they need --build (a configured
and built meson folder holding those programs); tools/fuzz.sh also remakes
them (with --whole) at every run from the writers of the tree it tests, so
a format change is fuzzed from fresh seeds. Without TARGET: every target. Output is
deterministic but for what the writers stamp (none today). --shared defaults
to $PILE_SHARED, else ../shared beside the repository.
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# Longest input each target is run with (tools/fuzz.sh passes the same -max_len).
MAX_LEN = {"fuzz_jsonl": 4096, "fuzz_lines": 65536, "fuzz_tokenizer": 4096, "fuzz_tokfile": 16384,
           "fuzz_shard": 65536, "fuzz_safetensors": 262144}


def lines_of(path):
    with open(path, "rb") as f:
        return f.read().split(b"\n")


def seeds_jsonl(shared):
    out = {}
    for name in ("tricky", "bad"):
        for i, line in enumerate(lines_of(os.path.join(shared, "corpus", name + ".jsonl"))):
            if line and len(line) <= MAX_LEN["fuzz_jsonl"]:
                out["%s-%03d" % (name, i + 1)] = line
    return out


def seeds_lines(shared):
    corpus = os.path.join(shared, "corpus")
    with open(os.path.join(corpus, "bad.jsonl"), "rb") as f:
        bad = f.read(4000)  # starts with a BOM
    with open(os.path.join(corpus, "tricky.jsonl"), "rb") as f:
        tricky = f.read(6000)
    with open(os.path.join(corpus, "sample.jsonl"), "rb") as f:
        sample = f.read(3000)
    with open(os.path.join(corpus, "truncated.jsonl.zst"), "rb") as f:
        cut_zst = f.read(6000)  # the magic and the first block's start: a cut stream
    whole_zst = subprocess.run(["zstd", "-q", "-c", "-3"], input=sample, stdout=subprocess.PIPE, check=True).stdout
    first = tricky.split(b"\n")[:3]
    return {
        "bad-head": bad,
        "tricky-head": tricky,
        "crlf": b"\r\n".join(first) + b"\r\n",
        "no-final-newline": b"\n".join(first),
        "long-line": first[0] + b"\n" + b"x" * 300 + b"\n" + first[1] + b"\n",  # past the target's 256-byte limit
        "blank-lines": b"\n\n" + first[0] + b"\n\n",
        "zstd-whole": whole_zst,
        "zstd-cut": cut_zst,
    }


def seeds_tokenizer(shared):
    out = {}
    for i, line in enumerate(lines_of(os.path.join(shared, "corpus", "tricky.jsonl"))):
        try:
            text = json.loads(line)["text"]
        except (ValueError, KeyError, TypeError):
            continue
        if not isinstance(text, str):
            continue
        b = text.encode("utf-8", "surrogatepass")  # a lone surrogate stays: the target repairs it
        if b and len(b) <= MAX_LEN["fuzz_tokenizer"]:
            out["tricky-%03d" % (i + 1)] = b
    for i, line in enumerate(lines_of(os.path.join(shared, "corpus", "sample.jsonl"))[:6]):
        b = json.loads(line)["text"].encode("utf-8")[:2000]
        out["sample-%d" % (i + 1)] = b.decode("utf-8", "ignore").encode("utf-8")
    return out


def seeds_tokfile(shared):
    gpt2 = os.path.join(shared, "fixtures", "gpt2")
    with open(os.path.join(gpt2, "r50k_base.tiktoken"), "rb") as f:
        tiktoken = b"".join(f.readlines()[:400])  # the 256 bytes, then 144 merges
    with open(os.path.join(gpt2, "encoder.json"), encoding="utf-8") as f:
        encoder = json.load(f)
    with open(os.path.join(gpt2, "vocab.bpe"), encoding="utf-8") as f:
        merges = f.read().split("\n")[1:400]
    vocab = {k: i for k, i in encoder.items() if i < 300}
    merges = [m for m in merges if m and all(p in vocab for p in m.split()) and "".join(m.split()) in vocab]
    eot = {"id": 300, "content": "<|endoftext|>", "single_word": False, "lstrip": False, "rstrip": False,
           "normalized": False, "special": True}

    def hf(pre, normalizer=None, added=(), model_extra=None, array_merges=False):
        model = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                 "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "vocab": vocab,
                 "merges": [m.split() for m in merges] if array_merges else merges}
        model.update(model_extra or {})
        doc = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [eot] + list(added),
               "normalizer": normalizer, "pre_tokenizer": pre, "post_processor": None,
               "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
               "model": model}
        return b"\0" + json.dumps(doc, ensure_ascii=False).encode("utf-8")

    def byte_level(prefix, regex):
        return {"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": True, "use_regex": regex}

    def split(pattern, behavior):
        return {"type": "Split", "pattern": pattern, "behavior": behavior, "invert": False}

    huge = dict(eot, id=5000000, content="<|huge|>")  # past the loaders' limit: PILE_ELIMIT, a fair refusal
    hello = {"id": 301, "content": "Hello", "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": True, "special": False}
    return {
        "tiktoken-r50k": b"\x01" + tiktoken,
        "tiktoken-cl100k": bytes([1 | 2 << 2]) + tiktoken,  # same ranks, cl100k's pattern
        "tiktoken-o200k": bytes([1 | 3 << 2]) + tiktoken,
        "gpt2-dir": b"\x02" + json.dumps(vocab).encode() + b"\0#version: 0.2\n" + "\n".join(merges).encode() + b"\n",
        "json-gpt2": hf(byte_level(False, True)),
        "json-prefix-space": hf(byte_level(True, True)),
        "json-huge-id": hf(byte_level(False, True), added=[huge]),
        "json-split-nfc": hf({"type": "Sequence", "pretokenizers": [
            split({"Regex": r"\s+|[0-9]{1,3}|\p{L}+"}, "Isolated"), byte_level(False, False)]},
            normalizer={"type": "Sequence", "normalizers": [{"type": "NFC"}]}),
        "json-split-removed-prefix": hf({"type": "Sequence", "pretokenizers": [
            split({"String": ","}, "Removed"), byte_level(True, False)]}, added=[hello]),
        "json-merged-arrays": hf({"type": "Sequence", "pretokenizers": [
            split({"String": " "}, "MergedWithNext"), byte_level(False, True)]},
            model_extra={"ignore_merges": True}, array_merges=True),
    }


def run_quiet(cmd, what):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        sys.exit("make_corpus: %s failed (exit %d): %s\n%s" % (what, p.returncode, " ".join(cmd),
                                                               p.stdout.decode(errors="replace")[-2000:]))


def shard_modes(data, modes):
    """The shard as fuzz_shard takes it: the mode byte, then the file; mode 3
    is the header plus what follows byte 4096, cut where the target stops
    reading (it keeps at most 31 rows of 64 tokens and 4 KiB of subsets)."""
    out = {}
    for m in modes:
        out[m] = bytes([m]) + (data[:256] + data[4096:4096 + 16384] if m == 3 else data)
    return out


def seeds_shard(shared, build, whole):
    del whole  # every shard here is small
    prep = os.path.join(build, "preprocess", "pile-prep")
    sample = lines_of(os.path.join(shared, "corpus", "sample.jsonl"))
    out = {}
    with tempfile.TemporaryDirectory(prefix="pile-fuzz-seeds-") as tmp:
        src = os.path.join(tmp, "in")
        os.mkdir(src)
        # a few real documents, cut short: train from the first, val from the next
        for name, first, n, cut in (("train.jsonl", 0, 4, 400), ("val.jsonl", 4, 3, 300)):
            with open(os.path.join(src, name), "w", encoding="utf-8") as f:
                for line in sample[first:first + n]:
                    d = json.loads(line)
                    d["text"] = d["text"][:cut]
                    f.write(json.dumps(d, ensure_ascii=False) + "\n")
        runs = (("bytes", ["-L", "64", "-t", "bytes"], {"train": (0, 1, 2, 3), "val": (2, 3)}),
                ("gpt2", ["-L", "48", "--pack", "best-fit", "-t", os.path.join(shared, "fixtures", "gpt2")],
                 {"train": (2, 3), "val": (0, 3)}))
        for tag, args, modes in runs:
            dst = os.path.join(tmp, tag)
            run_quiet([prep, "-q", "-j", "1", "-o", dst] + args + [src], "pile-prep")
            for split, ms in modes.items():
                with open(os.path.join(dst, split + "-00000.shard"), "rb") as f:
                    data = f.read()
                for m, seed in shard_modes(data, ms).items():
                    out["%d-%s-%s" % (m, tag, split)] = seed
    return out


def seeds_safetensors(shared, build, whole):
    del shared
    exe = os.path.join(build, "tests", "test_trainer_io")
    with tempfile.TemporaryDirectory(prefix="pile-fuzz-seeds-") as tmp:
        fx = os.path.join(tmp, "fx")
        run_quiet([exe, "--write-fixture", fx], "test_trainer_io --write-fixture")

        def read(*p):
            with open(os.path.join(fx, *p), "rb") as f:
                return f.read()
        model = read("checkpoint", "model.safetensors")
        (hlen,) = struct.unpack("<Q", model[:8])
        header = model[8:8 + hlen]
        return {
            # the whole file reaches the load's name and shape checks; the
            # repository keeps its header and a little data (145 KiB is not a
            # small seed), tools/fuzz.sh the whole file from the current writer
            "0-model": b"\0" + (model if whole else model[:8 + hlen + 2048]),
            "0-tensors": b"\0" + read("tensors.safetensors"),
            "1-model-header": b"\1" + struct.pack("<H", 4096) + header,  # the target adds the 4 KiB of data
            "2-config": b"\2" + read("checkpoint", "config.json"),
            "3-state": b"\3" + read("checkpoint", "trainer_state.json"),
            "4-latest": b"\4epoch-001\n",
        }


SOURCES = {"fuzz_jsonl": seeds_jsonl, "fuzz_lines": seeds_lines, "fuzz_tokenizer": seeds_tokenizer,
           "fuzz_tokfile": seeds_tokfile, "fuzz_shard": seeds_shard, "fuzz_safetensors": seeds_safetensors}
NEEDS_BUILD = ("fuzz_shard", "fuzz_safetensors")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].split(": ", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.split("\n")[4:]))
    ap.add_argument("--shared", help="the shared corpus and fixtures (default $PILE_SHARED, else ../shared)")
    ap.add_argument("--build", help="a built meson folder: the writers for fuzz_shard and fuzz_safetensors")
    ap.add_argument("--out", default=os.path.join(HERE, "corpus"), help="where <target>/ go (default %(default)s)")
    ap.add_argument("--whole", action="store_true",
                    help="keep the writers' large files whole (the checkpoint's model.safetensors)")
    ap.add_argument("targets", nargs="*", metavar="TARGET", help="only these (default: all)")
    a = ap.parse_args()
    shared = a.shared or os.environ.get("PILE_SHARED") or os.path.join(ROOT, "..", "shared")
    if not os.path.isdir(os.path.join(shared, "corpus")):
        sys.exit("make_corpus: no corpus in '%s' (set --shared or PILE_SHARED)" % shared)
    targets = a.targets or list(SOURCES)
    for t in targets:
        if t not in SOURCES:
            sys.exit("make_corpus: unknown target '%s' (known: %s)" % (t, ", ".join(SOURCES)))
        if t in NEEDS_BUILD and not a.build:
            sys.exit("make_corpus: %s needs --build (its seeds come from the programs built there)" % t)
    for t in targets:
        seeds = SOURCES[t](shared, a.build, a.whole) if t in NEEDS_BUILD else SOURCES[t](shared)
        d = os.path.join(a.out, t)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        total = 0
        for name, data in sorted(seeds.items()):
            if len(data) > MAX_LEN[t]:
                sys.exit("make_corpus: %s seed '%s' has %d bytes, over the target's %d" % (t, name, len(data),
                                                                                          MAX_LEN[t]))
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
            total += len(data)
        print("%-17s %4d seeds, %7d bytes in %s" % (t, len(seeds), total, d))


if __name__ == "__main__":
    main()
