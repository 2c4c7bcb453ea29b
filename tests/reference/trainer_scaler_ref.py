#!/usr/bin/env python3
"""pile-trainer's fp16 loss scale, step by step, against DeepSpeed's own
DynamicLossScaler (TAP).

  trainer_scaler_ref.py PILE_TRAINER PILE_PREP

Makes shards from data/sample (bytes tokenizer, rows of 64) and trains the
tiny model in fp16 (the cpu backend's emulation) for each of several
ds_config.json "fp16" blocks, chosen so that real gradients overflow: a
first scale far above what fp16 holds, short windows that raise it back
into overflow. From the run's metrics.jsonl, the steps whose
train/skipped_steps rose are the overflow steps; DeepSpeed's scaler, built
from the same block, is fed that pattern, and its scale before each step
must be the run's train/loss_scale of that step, for every step. Also
checked: every skipped step was said on stderr, and the settings made
overflows after a clean step, not only at the start.

Exits 77 (skip) without DeepSpeed 0.19.8 or the sample data.
"""
import json
import os
import subprocess
import sys
import tempfile

from reftap import deepspeed_scaler, deepspeed_series, done, main_of, report, run, skip

deepspeed_scaler()  # skips (77) without DeepSpeed 0.19.8

if len(sys.argv) != 3:
    sys.exit("usage: trainer_scaler_ref.py PILE_TRAINER PILE_PREP")
TRAINER, PREP = sys.argv[1], sys.argv[2]
SRC = os.environ.get("PILE_SOURCE_ROOT", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SAMPLE = os.path.join(SRC, "data", "sample")
STEPS = 40

SETTINGS = [
    # initial_scale_power, loss_scale_window, hysteresis, consecutive_hysteresis
    dict(initial_scale_power=24, loss_scale_window=2, hysteresis=1, consecutive_hysteresis=False),
    dict(initial_scale_power=26, loss_scale_window=3, hysteresis=2, consecutive_hysteresis=False),
    dict(initial_scale_power=26, loss_scale_window=3, hysteresis=2, consecutive_hysteresis=True),
    dict(initial_scale_power=28, loss_scale_window=1, hysteresis=3, consecutive_hysteresis=False),
    dict(initial_scale_power=27, loss_scale_window=5, hysteresis=3, consecutive_hysteresis=True),
]


def per_step(path, tag):
    """{step: value} of tag over the records of a metrics.jsonl."""
    out = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if tag in r:
                out[r["step"]] = r[tag]
    return out


def main():
    if not os.path.exists(os.path.join(SAMPLE, "val.jsonl.zst")):
        skip("no sample data at '%s'" % SAMPLE)
    late = 0  # overflows that came after a clean step
    with tempfile.TemporaryDirectory(prefix="pile-trainer-scaler-ref-") as tmp:
        shards = os.path.join(tmp, "shards")
        run([PREP, "-q", "-o", shards, "-L", 64, "-t", "bytes", "-j", 2, SAMPLE])
        for i, fp16 in enumerate(SETTINGS):
            block = dict(enabled=True, loss_scale=0, min_loss_scale=1, **fp16)
            ds = os.path.join(tmp, "ds%d.json" % i)
            with open(ds, "w") as f:
                json.dump({"train_micro_batch_size_per_gpu": 4, "fp16": block}, f)
            out = os.path.join(tmp, "run%d" % i)
            cmd = [TRAINER, "--data", shards, "--model", "tiny", "--max_steps", STEPS, "--threads", 1,
                   "--eval_interval", 0, "--eval_rows", 64, "--seed", 7, "--deepspeed", ds, "--checkpoint_dir", out]
            p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
            if p.returncode != 0:
                raise RuntimeError("%s failed (%d): %s" % (" ".join(map(str, cmd)), p.returncode, p.stderr[-2000:]))
            scale = per_step(os.path.join(out, "metrics.jsonl"), "train/loss_scale")
            skipped = per_step(os.path.join(out, "metrics.jsonl"), "train/skipped_steps")
            name = ", ".join("%s %s" % (k, v) for k, v in fp16.items())
            steps = list(range(1, STEPS + 1))
            if sorted(scale) != steps or sorted(skipped) != steps:
                report(False, "fp16 {%s}: train/loss_scale and train/skipped_steps for every step" % name,
                       "steps with a scale: %s" % sorted(scale))
                continue
            pattern = "".join("1" if skipped[s] > skipped.get(s - 1, 0) else "0" for s in steps)
            want = [used for used, _, _ in deepspeed_series(block, pattern)]
            got = [scale[s] for s in steps]
            diff = next((k for k in range(STEPS) if k >= len(want) or got[k] != want[k]), None)
            said = sum(1 for line in p.stderr.splitlines() if "skipped: fp16 gradient overflow" in line)
            late += "01" in pattern
            report(diff is None and said == pattern.count("1"),
                   "fp16 {%s}: %d steps, %d overflows (%s), each step's loss scale as DeepSpeed's, each skip said"
                   % (name, STEPS, pattern.count("1"), pattern),
                   *([] if diff is None else ["step %d: ours %s, DeepSpeed %s" % (
                       diff + 1, got[diff], want[diff] if diff < len(want) else "(raised)")]),
                   *([] if said == pattern.count("1") else ["%d skip warnings" % said]))
    report(late >= 3, "overflows after clean steps in %d of %d settings (the scale raised into overflow)"
           % (late, len(SETTINGS)))
    return done()


if __name__ == "__main__":
    main_of(main, "pile-prep and pile-trainer ran")
