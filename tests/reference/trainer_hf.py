#!/usr/bin/env python3
"""pile-trainer's run folders read by the Python tools users load them with (TAP).

  trainer_hf.py PILE_TRAINER PILE_PREP PILE_TOK

1. TensorBoard: a run resumed from an older checkpoint (the event file of
   the first run holds the steps past it) reads, through tensorboard's
   EventAccumulator, as one point per step, each the resumed run's value.

Exits 77 (skip) when tensorboard is missing or the data is absent.
"""
import json
import logging
import os
import shutil
import sys
import tempfile

from reftap import done, report, run, skip

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


def main():
    try:
        import numpy  # noqa: F401
        import tensorboard  # noqa: F401
    except ImportError as e:
        skip("needs numpy and tensorboard (tools/install-deps.sh): %s" % e)
    if not os.path.isdir(os.path.join(SAMPLE, "train")):
        skip("no sample data at '%s'" % SAMPLE)
    with tempfile.TemporaryDirectory(prefix="pile-trainer-hf-") as tmp:
        shards = os.path.join(tmp, "shards")
        run([PREP, "-q", "-o", shards, "-L", 64, "-t", "bytes", "-j", 2,
             os.path.join(SAMPLE, "train"), os.path.join(SAMPLE, "val.jsonl.zst")])
        check_tensorboard(tmp, shards)
    return done()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as e:
        report(False, "pile-prep and pile-trainer ran", str(e))
        sys.exit(done())
