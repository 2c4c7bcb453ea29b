#!/usr/bin/env python3
"""pile-tok against the reference tokenizers, on the whole shared corpus.

1. GPT-2: `pile-tok encode` (tokenizer = encoder.json + vocab.bpe, and the
   r50k_base.tiktoken file) on every document of corpus/train/*.jsonl.zst and
   val.jsonl.zst must equal tiktoken (built offline from r50k_base.tiktoken,
   encode_ordinary) and Hugging Face tokenizers (built from encoder.json +
   vocab.bpe), line by line.
2. The general path: a small BPE trained here with Hugging Face tokenizers,
   with an NFC normalizer, a Split pre-tokenizer on tiktoken's cl100k_base
   pattern (PCRE2 on our side, Oniguruma on theirs) + ByteLevel without its
   regex, array-form merges, a special token and NeoX-style non-special
   added tokens made of runs of spaces; and the same file with "a b" merges.
   Our ids on tricky.jsonl and val must equal HF's with special tokens
   treated as text (pile encodes document text as ordinary text).
3. Split patterns Oniguruma reads differently from PCRE2's default (empty
   matches, ^ and $ at line breaks), every behavior, against HF.
4. tiktoken's p50k / cl100k / o200k patterns: GPT-2's ranks saved under each
   name must encode as tiktoken does with that name's pattern.

Usage: tok_ref.py PILE_TOK. TAP output; exit 77 when tiktoken / tokenizers
or the shared corpus are missing.
"""
import json
import os
import subprocess
import sys
import tempfile

GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
CL100K_PAT = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
              r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")

n_tests = 0
n_failed = 0


def report(ok, name, notes=()):
    global n_tests, n_failed
    n_tests += 1
    for line in notes:
        print("# " + line)
    print(("ok" if ok else "not ok") + " %d - %s" % (n_tests, name))
    sys.stdout.flush()
    if not ok:
        n_failed += 1


def skip_all(why):
    print("1..0 # SKIP " + why)
    sys.exit(77)


def read_lines(path):
    if path.endswith(".zst"):
        data = subprocess.run(["zstd", "-dc", path], check=True, capture_output=True).stdout
    else:
        with open(path, "rb") as f:
            data = f.read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def texts_of(path):
    out = []
    for raw in read_lines(path):
        try:
            doc = json.loads(raw)
        except ValueError:
            out.append(None)
            continue
        t = doc.get("text") if isinstance(doc, dict) else None
        out.append(t if isinstance(t, str) else None)
    return out


def pile_ids(pile_tok, spec, path):
    r = subprocess.run([pile_tok, "encode", "--tokenizer", spec, path], capture_output=True)
    if r.returncode != 0:
        raise RuntimeError("pile-tok failed: " + r.stderr.decode(errors="replace"))
    return [json.loads(line) for line in r.stdout.decode().split("\n")[:-1]]


def compare(name, ours, texts, ref_fn):
    notes = []
    bad = 0
    if len(ours) != len(texts):
        report(False, name, ["%d lines out, %d in" % (len(ours), len(texts))])
        return
    refs = ref_fn([t if t is not None else "" for t in texts])
    for i, (a, t, b) in enumerate(zip(ours, texts, refs)):
        want = None if t is None else list(b)
        if a != want:
            bad += 1
            if bad <= 3:
                k = 0
                while a and want and k < min(len(a), len(want)) and a[k] == want[k]:
                    k += 1
                notes.append("line %d differs at id %d" % (i + 1, k))
    notes.append("%d lines, %d differ" % (len(texts), bad))
    report(bad == 0, name, notes)


def main():
    if len(sys.argv) != 2:
        print("usage: tok_ref.py PILE_TOK", file=sys.stderr)
        return 2
    pile_tok = sys.argv[1]
    try:
        import tiktoken
        import tiktoken.load
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers, Regex
    except ImportError as e:
        skip_all("python tiktoken / tokenizers not importable (%s)" % e)
    shared = os.environ.get("PILE_SHARED", "../shared")
    gpt2 = os.path.join(shared, "fixtures", "gpt2")
    corpus = os.path.join(shared, "corpus")
    if not os.path.isfile(os.path.join(gpt2, "vocab.bpe")) or not os.path.isdir(os.path.join(corpus, "train")):
        skip_all("no shared corpus and GPT-2 fixtures (set PILE_SHARED)")

    tk = tiktoken.Encoding("r50k_base", pat_str=GPT2_PAT,
                           mergeable_ranks=tiktoken.load.load_tiktoken_bpe(os.path.join(gpt2, "r50k_base.tiktoken")),
                           special_tokens={"<|endoftext|>": 50256})
    hf = Tokenizer(models.BPE.from_file(os.path.join(gpt2, "encoder.json"), os.path.join(gpt2, "vocab.bpe")))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()

    def tk_ref(texts):
        return tk.encode_ordinary_batch(texts, num_threads=2)

    def hf_ref(texts):
        return [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]

    files = sorted(os.path.join(corpus, "train", f) for f in os.listdir(os.path.join(corpus, "train"))
                   if f.endswith(".jsonl.zst"))
    files.append(os.path.join(corpus, "val.jsonl.zst"))
    for path in files:
        texts = texts_of(path)
        name = os.path.relpath(path, shared)
        ours = pile_ids(pile_tok, gpt2, path)
        compare("gpt2 folder == tiktoken r50k_base on " + name, ours, texts, tk_ref)
        compare("gpt2 folder == HF tokenizers on " + name, ours, texts, hf_ref)
        ours_tk = pile_ids(pile_tok, os.path.join(gpt2, "r50k_base.tiktoken"), path)
        report(ours_tk == ours, "r50k_base.tiktoken == gpt2 folder on " + name)

    # The general path: Split(cl100k) + ByteLevel(use_regex=False), NFC, added tokens.
    with tempfile.TemporaryDirectory() as tmp:
        train_texts = [t for t in texts_of(os.path.join(corpus, "sample.jsonl")) if t][:200]
        tok = Tokenizer(models.BPE())
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(CL100K_PAT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=2000, min_frequency=2, special_tokens=["<|endoftext|>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator(train_texts, trainer=trainer)
        tok.add_tokens([" " * k for k in (2, 4, 8, 16)])  # GPT-NeoX style: non-special runs of spaces
        tok.encode_special_tokens = True  # specials in text are text, as in pile
        arr_path = os.path.join(tmp, "cl100k-arrays.json")
        tok.save(arr_path)
        with open(arr_path) as f:
            spec = json.load(f)
        merges = spec["model"]["merges"]
        form = "arrays" if merges and isinstance(merges[0], list) else "strings"
        spec["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in merges]
        str_path = os.path.join(tmp, "cl100k-strings.json")
        with open(str_path, "w") as f:
            json.dump(spec, f)

        def hf_small(texts):
            return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]

        for name in ("tricky.jsonl", "val.jsonl.zst"):
            path = os.path.join(corpus, name)
            texts = texts_of(path)
            compare("Split(cl100k)+ByteLevel, NFC, added space runs, merges as %s: %s" % (form, name),
                    pile_ids(pile_tok, arr_path, path), texts, hf_small)
            compare("the same with \"a b\" merges: " + name, pile_ids(pile_tok, str_path, path), texts, hf_small)

    # Split patterns where Oniguruma's reading differs from PCRE2's default:
    # empty matches split (except where the last match ended) and ^ / $ are
    # line anchors. GPT-2's vocabulary and merges, ByteLevel without its regex
    # (the Split's pieces go to BPE whole), every behavior.
    with open(os.path.join(gpt2, "encoder.json")) as f:
        gpt2_vocab = json.load(f)
    with open(os.path.join(gpt2, "vocab.bpe"), encoding="utf-8") as f:
        gpt2_merges = [m for m in f.read().split("\n")[1:] if m]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(corpus, "tricky.jsonl")
        texts = texts_of(path)
        for pattern in ({"Regex": "(?=\\s)"}, {"Regex": "x*"}, {"Regex": "^\\s*|\\s*$"}, {"String": ""}):
            for behavior in ("Isolated", "Removed", "MergedWithPrevious", "MergedWithNext"):
                spec = {"version": "1.0", "normalizer": None, "post_processor": None, "decoder": None,
                        "added_tokens": [{"id": 50256, "content": "<|endoftext|>", "special": True,
                                          "single_word": False, "lstrip": False, "rstrip": False,
                                          "normalized": False}],
                        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                            {"type": "Split", "pattern": pattern, "behavior": behavior, "invert": False},
                            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                             "use_regex": False}]},
                        "model": {"type": "BPE", "vocab": gpt2_vocab, "merges": gpt2_merges}}
                spec_path = os.path.join(tmp, "split.json")
                with open(spec_path, "w") as f:
                    json.dump(spec, f)
                split_tok = Tokenizer.from_file(spec_path)
                split_tok.encode_special_tokens = True

                def hf_split(texts, t=split_tok):
                    return [e.ids for e in t.encode_batch(texts, add_special_tokens=False)]

                compare("Split %s %s == HF on tricky.jsonl" % (json.dumps(pattern), behavior),
                        pile_ids(pile_tok, spec_path, path), texts, hf_split)

    # tiktoken's other patterns (PCRE2 on our side): our .tiktoken loader picks
    # the pattern by file name, so r50k's ranks saved under each name must
    # encode exactly as tiktoken's own Encoding built from that name's
    # constructor (its pat_str, read from tiktoken_ext, with the ranks swapped
    # for the offline r50k ones; the real cl100k/o200k files are not here).
    import tiktoken_ext.openai_public as openai_public
    r50k_ranks = tiktoken.load.load_tiktoken_bpe(os.path.join(gpt2, "r50k_base.tiktoken"))
    real_load = openai_public.load_tiktoken_bpe
    openai_public.load_tiktoken_bpe = lambda *a, **k: r50k_ranks
    try:
        ctors = {name: getattr(openai_public, name)() for name in ("p50k_base", "cl100k_base", "o200k_base")
                 if hasattr(openai_public, name)}
    finally:
        openai_public.load_tiktoken_bpe = real_load
    with tempfile.TemporaryDirectory() as tmp:
        for name, ctor in sorted(ctors.items()):
            enc = tiktoken.Encoding(name + "-r50k-ranks", pat_str=ctor["pat_str"], mergeable_ranks=r50k_ranks,
                                    special_tokens={})
            path = os.path.join(tmp, name + ".tiktoken")
            with open(os.path.join(gpt2, "r50k_base.tiktoken"), "rb") as src, open(path, "wb") as dst:
                dst.write(src.read())

            def tk_pat(texts, enc=enc):
                return enc.encode_ordinary_batch(texts, num_threads=2)

            for doc in ("tricky.jsonl", "val.jsonl.zst"):
                src_path = os.path.join(corpus, doc)
                compare("%s pattern (r50k ranks) == tiktoken on %s" % (name, doc), pile_ids(pile_tok, path, src_path),
                        texts_of(src_path), tk_pat)

    print("1..%d" % n_tests)
    return 1 if n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
