#!/usr/bin/env python3
"""pile-trainer's run folders read by the Python tools users load them with (TAP).

  trainer_hf.py PILE_TRAINER PILE_PREP PILE_TOK

1. TensorBoard: a run resumed from an older checkpoint (the event file of
   the first run holds the steps past it) reads, through tensorboard's
   EventAccumulator, as one point per step, each the resumed run's value.
2. transformers' AutoTokenizer.from_pretrained(checkpoint) for every kind of
   tokenizer the trainer takes (the bytes one, a Hugging Face
   tokenizer.json, one with a post-processor that adds a BOS, GPT-2's
   encoder.json + vocab.bpe, r50k_base.tiktoken, and r50k's ranks under the
   cl100k_base and o200k_base names, whose patterns are rewritten for
   Oniguruma) encodes every document of the shared corpus's val and
   tricky files as `pile-tok encode` does, a literal <|endoftext|> as text,
   and decodes them back.
3. `pile-trainer sample` on a GPT-2 folder saved by transformers'
   save_pretrained (no trainer_state.json): refused without a tokenizer,
   naming --tokenizer; with --tokenizer bytes, and then with the tokenizer
   AutoTokenizer loaded from a checkpoint saved beside it by
   save_pretrained, greedy decoding prints what transformers' generate
   gives.

Exits 77 (skip) when tensorboard or transformers is missing or the data is absent.
"""
import json
import logging
import os
import shutil
import sys
import tempfile

from reftap import done, main_of, report, run, skip

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tok_ref import texts_of  # noqa: E402  (tests/tok_ref.py: the `text` of each line, None where there is none)

if len(sys.argv) != 4:
    sys.exit("usage: trainer_hf.py PILE_TRAINER PILE_PREP PILE_TOK")
TRAINER, PREP, TOK = sys.argv[1:4]
SRC = os.environ.get("PILE_SOURCE_ROOT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SAMPLE = os.path.join(SRC, "data", "sample")


def scalars(run_dir):
    """{tag: [(step, wall_time, value), ...]} as TensorBoard's EventAccumulator shows the folder."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    logging.getLogger("tensorboard").setLevel(logging.ERROR)  # its note on the purge
    acc = ea.EventAccumulator(run_dir, size_guidance={ea.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.wall_time, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def check_tensorboard(tmp, shards):
    import numpy as np

    ck = os.path.join(tmp, "tb")
    common = [TRAINER, "--data", shards, "--checkpoint_dir", ck, "--model", "tiny", "--max_steps", 12,
              "--batch_size", 4, "--eval_interval", 3, "--eval_rows", 32, "--threads", 2, "--seed", 3]
    run(common + ["--save_interval", 4])
    first = [f for f in os.listdir(ck) if "tfevents" in f]
    # the run as a kill after step 12 leaves it when its last checkpoint was
    # step 4: the events of steps 5-12 are in the file, the checkpoints not
    for name in ("step-0000008", "step-0000012"):
        shutil.rmtree(os.path.join(ck, name))
    with open(os.path.join(ck, "latest"), "w") as f:
        f.write("step-0000004\n")
    run(common + ["--resume"])
    second = [f for f in os.listdir(ck) if "tfevents" in f and f not in first]
    got = scalars(ck)
    lines = [json.loads(l) for l in open(os.path.join(ck, "metrics.jsonl"))]
    bad = []
    for tag in ("train/loss", "train/lr", "val/loss"):
        steps = [s for s, _, _ in got.get(tag, [])]
        want = list(range(1, 13)) if tag.startswith("train/") else [3, 6, 9, 12]
        if steps != want:
            bad.append("%s: steps %s, want %s" % (tag, steps, want))
    report(len(first) == 1 and len(second) == 1 and not bad,
           "TensorBoard shows a resumed run once: one point per step (train/*, val/*)", *bad)
    # the points after the resume point are the resumed run's: metrics.jsonl
    # (truncated at the checkpoint, then appended) holds them at full precision
    # (same values: the resume is bit-exact) with the same wall time
    want = {l["step"]: (l["time"], l["train/loss"]) for l in lines if "train/loss" in l}
    diff = [(s, t, v, want.get(s)) for s, t, v in got.get("train/loss", [])
            if s not in want or abs(want[s][0] - t) > 0.01 or np.float32(want[s][1]) != v]
    report(not diff and sorted(want) == list(range(1, 13)),
           "... each the point metrics.jsonl holds (the resumed run's from step 5: value and time)",
           "differ (step, time, value, metrics.jsonl's): %s" % diff[:4])


def check_autotokenizer(tmp, shared):
    import transformers
    from tokenizers import Tokenizer, processors

    transformers.logging.set_verbosity_error()
    corpus = os.path.join(shared, "corpus")
    gpt2 = os.path.join(shared, "fixtures", "gpt2")
    docs = [os.path.join(corpus, "val.jsonl.zst"), os.path.join(corpus, "tricky.jsonl")]
    # a tokenizer.json of pile-tok's BPE trainer, and the same with a BOS-adding post-processor
    hf_json = os.path.join(tmp, "bpe.json")
    run([TOK, "train", "--vocab-size", 600, "-o", hf_json, os.path.join(corpus, "tricky.jsonl")])
    bos_json = os.path.join(tmp, "bpe-bos.json")
    t = Tokenizer.from_file(hf_json)
    t.post_processor = processors.TemplateProcessing(single="<|endoftext|> $A", special_tokens=[
        ("<|endoftext|>", t.token_to_id("<|endoftext|>"))])
    t.save(bos_json)
    kinds = [("bytes", "bytes"), ("a tokenizer.json", hf_json), ("a tokenizer.json with a BOS post-processor", bos_json),
             ("GPT-2's encoder.json + vocab.bpe", gpt2), ("r50k_base.tiktoken", os.path.join(gpt2, "r50k_base.tiktoken"))]
    for name in ("cl100k_base", "o200k_base"):
        path = os.path.join(tmp, name + ".tiktoken")
        shutil.copyfile(os.path.join(gpt2, "r50k_base.tiktoken"), path)
        kinds.append(("r50k's ranks as %s (its pattern and specials)" % name, path))
    for i, (what, spec) in enumerate(kinds):
        shards, ck = os.path.join(tmp, "tok-shards-%d" % i), os.path.join(tmp, "tok-ck-%d" % i)
        run([PREP, "-q", "-o", shards, "-L", 32, "-t", spec, "-j", 2, os.path.join(corpus, "tricky.jsonl")])
        run([TRAINER, "--data", shards, "--checkpoint_dir", ck, "--max_steps", 1, "--batch_size", 1,
             "--eval_rows", 1, "--threads", 2])
        folder = os.path.join(ck, "step-0000001")
        tok = transformers.AutoTokenizer.from_pretrained(folder)
        cfg = json.load(open(os.path.join(folder, "config.json")))
        bad, n, notes = 0, 0, []
        for path in docs:
            texts = texts_of(path)
            ours = [json.loads(l) for l in run([TOK, "encode", "--tokenizer", spec, path]).splitlines()]
            theirs = tok([t or "" for t in texts])["input_ids"]
            for k, (t, a, b) in enumerate(zip(texts, ours, theirs)):
                if t is None:
                    continue
                n += 1
                if a != b or tok.decode(b) != t:
                    bad += 1
                    if len(notes) < 3:
                        j = next((j for j in range(min(len(a), len(b))) if a[j] != b[j]), min(len(a), len(b)))
                        notes.append("%s line %d: ids differ at %d: ours %s, AutoTokenizer %s" %
                                     (os.path.basename(path), k + 1, j, a[j:j + 4], b[j:j + 4]))
        report(bad == 0 and n > 200 and tok.eos_token_id == cfg["eos_token_id"],
               "AutoTokenizer.from_pretrained(checkpoint), %s: encodes %d documents as pile-tok and decodes them back"
               % (what, n), "%d differ; eos_token_id %s, config.json's %s" % (bad, tok.eos_token_id, cfg["eos_token_id"]),
               *notes)


def check_sample_foreign(tmp, shards):
    import subprocess

    import torch
    import transformers

    torch.manual_seed(5)
    foreign = os.path.join(tmp, "hf-gpt2")
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=257, n_positions=64, n_embd=48, n_layer=2, n_head=3, activation_function="gelu_new",
        bos_token_id=256, eos_token_id=256, initializer_range=0.5))
    # (weights wide enough that the greedy choice never hangs on float rounding:
    # at GPT-2's 0.02 the logits of a fresh model are all but equal)
    model.save_pretrained(foreign)
    # the reference is the folder as transformers loads it back (a fresh
    # model's untied lm_head init differs from the tied one saved)
    model = transformers.GPT2LMHeadModel.from_pretrained(foreign)
    model.eval()
    prompt, n_new = "In the beginning", 24
    sample = [TRAINER, "sample", "--checkpoint", foreign, "--prompt", prompt, "--max_new_tokens", n_new,
              "--temperature", 0, "--threads", 2]
    p = subprocess.run([str(c) for c in sample], capture_output=True, text=True)
    report(p.returncode == 1 and "give --tokenizer" in p.stderr,
           "sample on a save_pretrained folder without a tokenizer: refused, naming --tokenizer",
           "status %d: %s" % (p.returncode, p.stderr.strip()))
    # transformers' greedy continuation of the prompt's bytes (the model's context: 64)
    ids = torch.tensor([list(prompt.encode())])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n_new, do_sample=False, pad_token_id=256)[0, ids.shape[1]:].tolist()
    if 256 in out:
        out = out[:out.index(256)]
    want = prompt + bytes(out).decode("utf-8", errors="replace") + "\n"
    got = run(sample + ["--tokenizer", "bytes"])
    report(got == want, "sample --tokenizer bytes on a save_pretrained folder: transformers' greedy text",
           "ours %r, transformers %r" % (got, want))
    # the tokenizer of a checkpoint of ours, through AutoTokenizer and its save_pretrained
    ck = os.path.join(tmp, "ck-for-tok")
    run([TRAINER, "--data", shards, "--checkpoint_dir", ck, "--max_steps", 1, "--batch_size", 1, "--eval_rows", 1,
         "--threads", 2])
    transformers.AutoTokenizer.from_pretrained(os.path.join(ck, "step-0000001")).save_pretrained(foreign)
    got = run(sample)
    report(got == want, "... and with the tokenizer.json AutoTokenizer.save_pretrained wrote beside it",
           "ours %r, transformers %r" % (got, want))


def main():
    try:
        import numpy  # noqa: F401
        import tensorboard  # noqa: F401
        import tokenizers  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        skip("needs numpy, tensorboard, tokenizers, torch and transformers (tools/install-deps.sh): %s" % e)
    shared = os.environ.get("PILE_SHARED", os.path.join(SRC, "..", "shared"))
    if not os.path.isdir(os.path.join(SAMPLE, "train")):
        skip("no sample data at '%s'" % SAMPLE)
    if not os.path.isfile(os.path.join(shared, "fixtures", "gpt2", "vocab.bpe")):
        skip("no shared corpus and GPT-2 fixtures at '%s' (set PILE_SHARED)" % shared)
    with tempfile.TemporaryDirectory(prefix="pile-trainer-hf-") as tmp:
        shards = os.path.join(tmp, "shards")
        run([PREP, "-q", "-o", shards, "-L", 64, "-t", "bytes", "-j", 2,
             os.path.join(SAMPLE, "train"), os.path.join(SAMPLE, "val.jsonl.zst")])
        check_tensorboard(tmp, shards)
        check_sample_foreign(tmp, shards)
        check_autotokenizer(tmp, shared)
    return done()


if __name__ == "__main__":
    main_of(main, "pile-prep and pile-trainer ran")
