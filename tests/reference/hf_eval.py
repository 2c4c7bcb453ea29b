#!/usr/bin/env python3
"""A trained checkpoint through Hugging Face transformers (TAP).

  hf_eval.py PILE_TRAINER PILE_PREP

Makes shards from data/sample (bytes tokenizer, rows of 64), trains the
tiny model for 100 steps with validation every 25, then loads
checkpoints/best_model with transformers.GPT2LMHeadModel.from_pretrained as
it is and computes the validation loss the way our eval does, from the val
shard rows read with numpy (shards/FORMAT.md): target = next token within
the row's true length, none at its last position, mean over all targets.
That must match `pile-trainer eval --checkpoint best_model --json` to 1e-4
relative; and the model must have learnt something: its validation loss
0.4 nats below the unigram entropy of the training tokens.

Exits 77 (skip) when torch, transformers or numpy are missing.
PILE_TEST_BACKEND (tests/gpu: "cuda") trains on that backend instead of
the default; the evaluations stay on the CPU.
"""
import json
import math
import os
import struct
import sys
import tempfile

from reftap import done, main_of, report, run, skip


try:
    import numpy as np
    import torch
    import torch.nn.functional as F
    import transformers
except Exception as e:
    skip("needs numpy, torch and transformers (tools/install-deps.sh): %s" % e)

if len(sys.argv) != 3:
    sys.exit("usage: hf_eval.py PILE_TRAINER PILE_PREP")
TRAINER, PREP = sys.argv[1], sys.argv[2]
SRC = os.environ.get("PILE_SOURCE_ROOT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SAMPLE = os.path.join(SRC, "data", "sample")
BACKEND = os.environ.get("PILE_TEST_BACKEND", "")
EVAL_ROWS = 512   # the first val samples, in both evaluations (eval cost, not accuracy)
TOL = 1e-4

transformers.logging.set_verbosity_error()
torch.set_num_threads(2)


def read_shard(path):
    """(rows [row_count, max_length] int64, lengths [row_count]) of one shard."""
    with open(path, "rb") as f:
        head = f.read(256)
    # versions 1 and 2 lay out the token data and the row table alike (shards/FORMAT.md)
    if head[:8] != b"PILESHRD" or struct.unpack_from("<I", head, 8)[0] not in (1, 2):
        raise ValueError("'%s' is not a version 1 or 2 pile shard" % path)
    W, L = struct.unpack_from("<II", head, 24)
    (row_count,) = struct.unpack_from("<Q", head, 48)
    data_offset, _, rows_offset = struct.unpack_from("<QQQ", head, 96)
    dt = {2: "<u2", 4: "<u4"}[W]
    data = np.fromfile(path, dtype=dt, count=row_count * L, offset=data_offset).astype(np.int64)
    rows = np.fromfile(path, dtype=np.dtype([("first_doc", "<u8"), ("length", "<u4"), ("lead", "<u2"),
                                             ("flags", "<u2")]), count=row_count, offset=rows_offset)
    return data.reshape(row_count, L), rows["length"].astype(np.int64)


def read_split(shards, split):
    names = sorted(n for n in os.listdir(shards) if n.startswith(split + "-") and n.endswith(".shard"))
    parts = [read_shard(os.path.join(shards, n)) for n in names]
    if not parts:
        raise ValueError("no %s shards in '%s'" % (split, shards))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def hf_val_loss(ckpt, rows, lengths):
    model = transformers.GPT2LMHeadModel.from_pretrained(ckpt, attn_implementation="eager", dtype=torch.float32)
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), 64):
            tok = torch.as_tensor(rows[i:i + 64])
            ln = torch.as_tensor(lengths[i:i + 64])
            tgt = torch.full_like(tok, -1)
            tgt[:, :-1] = tok[:, 1:]
            pos = torch.arange(tok.shape[1]).view(1, -1)
            tgt[pos >= (ln.view(-1, 1) - 1)] = -1  # past the true length, and at its last token
            logits = model(input_ids=tok).logits.double()
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                           ignore_index=-1, reduction="sum"))
            n += int((tgt >= 0).sum())
    return total / n, n


def main():
    if not os.path.isdir(os.path.join(SAMPLE, "train")):
        skip("no sample data at '%s'" % SAMPLE)
    with tempfile.TemporaryDirectory(prefix="pile-hf-eval-") as tmp:
        shards = os.path.join(tmp, "shards")
        ck = os.path.join(tmp, "checkpoints")
        run([PREP, "-q", "-o", shards, "-L", 64, "-t", "bytes", "-j", 2,
             os.path.join(SAMPLE, "train"), os.path.join(SAMPLE, "val.jsonl.zst")])
        run([TRAINER, "train", "--data", shards, "--checkpoint_dir", ck, "--model", "tiny",
             "--max_steps", 100, "--eval_interval", 25, "--eval_rows", EVAL_ROWS, "--batch_size", 32,
             "--learning_rate", 3e-3, "--warmup_steps", 3, "--threads", 2, "--seed", 42] +
            (["--backend", BACKEND] if BACKEND else []))
        best = os.path.join(ck, "best_model")
        report(os.path.isfile(os.path.join(best, "model.safetensors")), "training wrote best_model/")

        ours = json.loads(run([TRAINER, "eval", "--checkpoint", best, "--json", "--eval_rows", EVAL_ROWS,
                               "--threads", 2]))
        rows, lengths = read_split(shards, "val")
        rows, lengths = rows[:EVAL_ROWS], lengths[:EVAL_ROWS]
        hf_loss, hf_n = hf_val_loss(best, rows, lengths)
        e = abs(ours["loss"] - hf_loss) / hf_loss
        report(e < TOL, "pile-trainer eval's loss = transformers' on the same val rows",
               "ours %.7f over %s targets, transformers %.7f over %d (relative %.2g)" %
               (ours["loss"], ours.get("tokens"), hf_loss, hf_n, e))
        report(ours.get("tokens") == hf_n, "the same number of target tokens",
               "ours %s, numpy %d" % (ours.get("tokens"), hf_n))
        report(abs(ours.get("perplexity", 0) - math.exp(ours["loss"])) <= 1e-6 * math.exp(ours["loss"]),
               "perplexity = exp(loss)", "perplexity %s" % ours.get("perplexity"))

        # a model from elsewhere: transformers' own save_pretrained of a
        # GPT-2 with a context longer than the shards' rows (no
        # trainer_state.json, no tokenizer record); eval takes --data
        torch.manual_seed(5)
        foreign = os.path.join(tmp, "hf-gpt2")
        transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=257, n_positions=256, n_embd=48, n_layer=2, n_head=3,
            activation_function="gelu_new")).save_pretrained(foreign)
        theirs = json.loads(run([TRAINER, "eval", "--checkpoint", foreign, "--data", shards, "--json",
                                 "--eval_rows", 128, "--threads", 2]))
        hf_f, _ = hf_val_loss(foreign, rows[:128], lengths[:128])
        e = abs(theirs["loss"] - hf_f) / hf_f
        report(e < TOL, "eval of a transformers-saved GPT-2 folder (context 256 > rows of 64) = transformers' loss",
               "ours %.7f, transformers %.7f (relative %.2g)" % (theirs["loss"], hf_f, e))

        train_rows, train_len = read_split(shards, "train")
        mask = np.arange(train_rows.shape[1])[None, :] < train_len[:, None]
        counts = np.bincount(train_rows[mask])
        p = counts[counts > 0] / counts.sum()
        entropy = float(-(p * np.log(p)).sum())
        # 100 steps of 2048 bytes take the tiny model from ln(257) = 5.55
        # nats to ~2.86; the unigram entropy is ~3.47: below it by 0.4 nats
        # means it has learnt context, not only byte frequencies (after 30
        # steps it has learnt little more than those)
        report(hf_loss < entropy - 0.4, "the model learnt: val loss 0.4 nats below the unigram entropy",
               "val loss %.4f, unigram entropy of %d train tokens %.4f nats" % (hf_loss, counts.sum(), entropy))
    return done()


if __name__ == "__main__":
    main_of(main, "pile-prep and pile-trainer ran")
