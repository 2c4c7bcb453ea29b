#!/usr/bin/env python3
"""The fp16 loss scaler (trainer/loss_scaler.h) against DeepSpeed's own
DynamicLossScaler (TAP).

  loss_scaler_ref.py MIXED_REF_DUMP

For each setting of initial_scale_power, loss_scale_window, hysteresis,
consecutive_hysteresis and min_loss_scale (and a static loss_scale), one
ds_config.json's "fp16" block is read by both sides: DeepSpeed's
DeepSpeedFP16Config and CreateLossScaler, as its engine builds the scaler,
and pile-trainer's settings (mixed_ref_dump scaler). Both are fed the same
overflow patterns (clean runs, overflow bursts, alternations, all
overflows, random mixes of several densities), and for every step the
scale its backward used, the next scale and whether it is skipped must be
equal, as must the step where DeepSpeed raises at the minimum scale and our
scaler refuses. Where DeepSpeed's scale would pass the largest fp32 (its
fp32 product infinite) ours stays put, as loss_scaler.h says: the series
are compared up to that step, and ours must hold there. Each pattern is
also run resumed half-way through the scaler state's JSON, which must
change nothing.

DeepSpeed runs on the CPU here (DS_ACCELERATOR=cpu), installed with
--no-deps (tools/install-deps.sh). Exits 77 (skip) when it cannot be
imported, or is not the version whose rules loss_scaler.h follows.
"""
import json
import os
import random
import sys
import tempfile

from reftap import deepspeed_scaler, deepspeed_series, done, report, run

deepspeed_scaler()  # skips (77) without DeepSpeed 0.19.8

if len(sys.argv) != 2:
    sys.exit("usage: loss_scaler_ref.py MIXED_REF_DUMP")
DUMP = sys.argv[1]


def our_series(path, pattern, resume_at=None):
    args = [DUMP, "scaler", path, pattern] + ([str(resume_at)] if resume_at is not None else [])
    out = []
    for line in run(args).splitlines():
        if line.startswith("error "):
            out.append(("error", len(out)))
            break
        used, nxt, skipped = line.split()
        out.append((float(used), float(nxt), int(skipped)))
    return out


def patterns(rng):
    """Named overflow patterns ('1' = this step overflowed)."""
    p = {
        "clean": "0" * 3000,
        "all overflows": "1" * 40,
        "alternating": "01" * 600,
        "pairs": "0110" * 300,
        "start burst": "1" * 12 + "0" * 2500,
    }
    for density in (0.002, 0.02, 0.2, 0.6):
        p["random %g" % density] = "".join("1" if rng.random() < density else "0" for _ in range(3000))
    bursts = []
    while len(bursts) < 4000:
        bursts.append("0" * rng.randrange(0, 400) + "1" * rng.randrange(1, 6))
    p["bursts"] = "".join(bursts)[:4000]
    return p


SETTINGS = [
    # initial_scale_power, loss_scale_window, hysteresis, consecutive_hysteresis, min_loss_scale
    dict(initial_scale_power=16, loss_scale_window=1000, hysteresis=2, consecutive_hysteresis=False, min_loss_scale=1),
    dict(initial_scale_power=16, loss_scale_window=100, hysteresis=1, consecutive_hysteresis=False, min_loss_scale=1),
    dict(initial_scale_power=12, loss_scale_window=50, hysteresis=3, consecutive_hysteresis=False, min_loss_scale=1),
    dict(initial_scale_power=12, loss_scale_window=50, hysteresis=3, consecutive_hysteresis=True, min_loss_scale=1),
    dict(initial_scale_power=20, loss_scale_window=7, hysteresis=2, consecutive_hysteresis=True, min_loss_scale=64),
    dict(initial_scale_power=24, loss_scale_window=1, hysteresis=4, consecutive_hysteresis=False, min_loss_scale=3),
    dict(initial_scale_power=0, loss_scale_window=3, hysteresis=1, consecutive_hysteresis=False, min_loss_scale=1),
    dict(initial_scale_power=32, loss_scale_window=25, hysteresis=2, consecutive_hysteresis=False,
         min_loss_scale=1024),
]


def main():
    rng = random.Random(1203)
    pats = patterns(rng)
    steps = errors = ceilings = 0
    with tempfile.TemporaryDirectory(prefix="pile-loss-scaler-ref-") as tmp:
        path = os.path.join(tmp, "ds_config.json")
        cases = [dict(enabled=True, loss_scale=0, **s) for s in SETTINGS]
        cases.append(dict(enabled=True, loss_scale=128, initial_scale_power=16, loss_scale_window=10, hysteresis=2,
                          consecutive_hysteresis=False, min_loss_scale=1))
        for block in cases:
            with open(path, "w") as f:
                json.dump({"train_micro_batch_size_per_gpu": 1, "fp16": block}, f)
            name = ", ".join("%s %s" % (k, v) for k, v in block.items() if k != "enabled")
            notes = []
            for pname, pat in pats.items():
                want = deepspeed_series(block, pat)
                half = len(pat) // 2
                got = our_series(path, pat)[:len(want)]
                resumed = our_series(path, pat, half)[:len(want)]
                steps += len(want)
                errors += want[-1][0] == "error"
                ceilings += len(want) < len(pat) and want[-1][0] != "error"
                for label, series in (("", got), (" resumed at %d" % half, resumed)):
                    if series != want:
                        i = next((k for k in range(min(len(series), len(want))) if series[k] != want[k]),
                                 min(len(series), len(want)))
                        notes.append("%s%s: step %d: ours %s, DeepSpeed %s" % (
                            pname, label, i, series[i] if i < len(series) else "(end)",
                            want[i] if i < len(want) else "(end)"))
            report(not notes, "fp16 {%s}: %d patterns, each step's scales and skips as DeepSpeed's" % (name, len(pats)),
                   *notes[:6])
        # the comparisons above covered both ends of the range
        report(errors > 10 and ceilings > 5,
               "%d steps compared; %d runs ended at DeepSpeed's minimum-scale error, %d at fp32's ceiling"
               % (steps, errors, ceilings))
    return done()


if __name__ == "__main__":
    sys.exit(main())
