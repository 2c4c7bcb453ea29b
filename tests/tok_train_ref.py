#!/usr/bin/env python3
"""Checks our BPE trainer against Hugging Face tokenizers (TAP; exits 77 when
`tokenizers` is missing).

1. Train with pile_bpe_train on val + train/00 (vocab 4000); HF loads the
   tokenizer.json we wrote and encodes every document of val.jsonl.zst and
   tricky.jsonl to the same ids as our own loader and encoder.
2. Train HF's BpeTrainer on the same documents (ByteLevel pre-tokenizer, the
   256 byte characters as initial alphabet, same vocab, min_frequency 2,
   <|endoftext|>): our merges and vocabulary must be identical, since our
   tie-breaking is HF's (count, then the smaller pair of ids).

argv[1]: the test_bpe_train binary (its `train` and `encode` tool modes);
argv[2], when given: pile-tok, which then does the training (`pile-tok train`)
and must encode to the same ids (`pile-tok encode`).
"""
import json
import os
import subprocess
import sys
import tempfile

VOCAB = 4000


def skip(why):
    print("1..0 # SKIP " + why)
    sys.exit(77)


try:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
except ImportError:
    skip("python module 'tokenizers' is not installed")

binary = sys.argv[1]
pile_tok = sys.argv[2] if len(sys.argv) > 2 else None
shared = os.environ.get("PILE_SHARED", "../shared")
val = os.path.join(shared, "corpus", "val.jsonl.zst")
train00 = os.path.join(shared, "corpus", "train", "00.jsonl.zst")
tricky = os.path.join(shared, "corpus", "tricky.jsonl")
for p in (val, train00, tricky):
    if not os.path.exists(p):
        skip("corpus file absent: " + p)

n = 0
failed = 0


def ok(cond, name, detail=""):
    global n, failed
    n += 1
    if not cond:
        failed += 1
        for line in detail.splitlines():
            print("# " + line)
    print(("ok" if cond else "not ok") + " %d - %s" % (n, name))
    sys.stdout.flush()


def run(*args, prog=None):
    return subprocess.run([prog or binary, *args], check=True, stdout=subprocess.PIPE).stdout.decode("utf-8")


def encode_ours(tok, path):
    """[(text, ids)] for each line of path that holds a document."""
    out = []
    for line in run("encode", tok, path).split("\n"):
        if not line:
            continue
        rec = json.loads(line)
        if rec is not None:
            out.append((rec["text"], rec["ids"]))
    return out


with tempfile.TemporaryDirectory() as tmp:
    ours_path = os.path.join(tmp, "ours.json")
    if pile_tok:
        run("train", "--vocab-size", str(VOCAB), "-o", ours_path, val, train00, prog=pile_tok)
    else:
        print("# pile-tok is not built: training through test_bpe_train")
        run("train", ours_path, str(VOCAB), "0", val, train00)
    ours = json.load(open(ours_path, encoding="utf-8"))
    ok(len(ours["model"]["vocab"]) == VOCAB, "our tokenizer.json has %d tokens" % VOCAB)
    as_is = Tokenizer.from_file(ours_path)
    ok(as_is.get_vocab_size() == VOCAB and as_is.token_to_id("<|endoftext|>") == 0,
       "HF loads it as it is: %d tokens, <|endoftext|> is id 0" % VOCAB)

    # 1. HF encodes with our file exactly as our encoder does
    # Our contract: a literal "<|endoftext|>" inside a document is text, never
    # the special id; HF always cuts out added tokens, so it encodes with a copy
    # of our file whose added_tokens list is empty (vocab and merges unchanged).
    plain = dict(ours, added_tokens=[])
    hf_ours = Tokenizer.from_str(json.dumps(plain))
    for path in (val, tricky):
        docs = encode_ours(ours_path, path)
        bad = []
        for i, (text, ids) in enumerate(docs):
            theirs = hf_ours.encode(text, add_special_tokens=False).ids
            if theirs != ids:
                bad.append("doc %d: %r...: ours %s... hf %s..." % (i, text[:40], ids[:12], theirs[:12]))
        ok(docs and not bad, "HF encodes %s (%d docs) with our file to our ids" % (os.path.basename(path), len(docs)),
           "\n".join(bad[:5]) + ("\n%d documents differ" % len(bad) if bad else ""))
        if pile_tok:
            cli = [json.loads(l) for l in run("encode", "--tokenizer", ours_path, path, prog=pile_tok).split("\n") if l]
            cli = [ids for ids in cli if ids is not None]
            ok(cli == [ids for _, ids in docs], "pile-tok encode gives the same ids for %s" % os.path.basename(path))

    # 2. HF's own trainer on the same documents
    texts = [t for p in (val, train00) for t, _ in encode_ours(ours_path, p)]
    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, min_frequency=2, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    hf.train_from_iterator(texts, trainer)
    hf_path = os.path.join(tmp, "hf.json")
    hf.save(hf_path)
    ref = json.load(open(hf_path, encoding="utf-8"))
    hm = [m if isinstance(m, str) else " ".join(m) for m in ref["model"]["merges"]]
    om = ours["model"]["merges"]
    prefix = 0
    while prefix < min(len(hm), len(om)) and hm[prefix] == om[prefix]:
        prefix += 1
    print("# merges: HF %d, ours %d, the first %d identical, %d in common" % (len(hm), len(om), prefix,
                                                                          len(set(hm) & set(om))))
    ok(hm == om, "the same merges, in the same order, as HF's BpeTrainer",
       "first difference at %d: HF %r, ours %r" % (prefix, hm[prefix:prefix + 1], om[prefix:prefix + 1]))
    ok(ref["model"]["vocab"] == ours["model"]["vocab"], "the same vocabulary (tokens and ids) as HF's BpeTrainer")
    ok([(a["id"], a["content"]) for a in ref["added_tokens"]] == [(a["id"], a["content"]) for a in ours["added_tokens"]],
       "the same special tokens as HF's BpeTrainer")

print("1..%d" % n)
sys.exit(1 if failed else 0)
