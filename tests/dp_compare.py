"""Compares two pile-trainer run folders for tests/trainer_dp.sh: every
train/loss and val/loss in metrics.jsonl, and the weights of one checkpoint
(model.safetensors). Prints one line of figures; exits 1 when they differ
by more than the tolerance.

    dp_compare.py RUN_A RUN_B CHECKPOINT TOLERANCE [train] [weights=W]
                                                  (TOLERANCE 0: bit for bit)

With "train" only the train/loss records are compared (runs that
validated at other steps); weights=W holds the whole model's relative L2
difference to W instead, and no element to TOLERANCE (16-bit training: a
difference in the last bits of an fp32 master weight moves its 16-bit
copy by a whole step of fp16's 2^-11 at times, and the runs part by a
fraction of that).

Losses: |a - b| <= tol * |a| each. Weights: the whole model's
||a - b|| <= tol * ||a|| (L2 over every tensor), and each element
|a - b| <= tol (weights are O(0.01..1)). Elementwise relative error is
not asked for: the attention's key bias has a true gradient of zero
(softmax is unchanged by a constant added to a row), so AdamW's update of
it is its rounding noise normalised, and elements near zero differ in
relative terms wherever the sums are added in another order. With tol 0
the files' bytes (and optimizer.safetensors', or every rank's
optimizer-RRRRR-of-NNNNN.safetensors) must be equal."""
import glob
import json
import os
import struct
import sys


def losses(run, keys):
    out = {}
    with open(run + "/metrics.jsonl") as f:
        for line in f:
            rec = json.loads(line)
            for key in keys:
                if key in rec:
                    out[(key, rec["step"])] = rec[key]
    return out


def tensors(path):
    import numpy as np

    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    head = json.loads(data[8:8 + n])
    out = {}
    for name, v in head.items():
        if name == "__metadata__":
            continue
        lo, hi = v["data_offsets"]
        assert v["dtype"] == "F32", name
        out[name] = np.frombuffer(data[8 + n + lo:8 + n + hi], dtype=np.float32).astype(np.float64)
    return out


def main():
    a, b, ckpt, tol = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    extra = sys.argv[5:]
    keys = ("train/loss",) if "train" in extra else ("train/loss", "val/loss")
    wtol = tol
    for e in extra:
        if e.startswith("weights="):
            wtol = float(e[len("weights="):])
    la, lb = losses(a, keys), losses(b, keys)
    if not la or la.keys() != lb.keys():
        print("the runs logged other steps: %s against %s" % (sorted(la), sorted(lb)))
        return 1
    worst = max(abs(la[k] - lb[k]) / abs(la[k]) for k in la)
    bad = [k for k in la if abs(la[k] - lb[k]) > tol * abs(la[k])]
    files = ["model.safetensors"]
    if tol == 0:
        # the optimizer's state: whole, or each rank's shard (ZeRO 1 to 3)
        opt = sorted(os.path.basename(p) for p in glob.glob("%s/%s/optimizer*.safetensors" % (a, ckpt)))
        files += opt or ["optimizer.safetensors"]
        for name in files:
            with open("%s/%s/%s" % (a, ckpt, name), "rb") as fa, open("%s/%s/%s" % (b, ckpt, name), "rb") as fb:
                if fa.read() != fb.read():
                    bad.append(name)
        print("%d losses, largest relative difference %.3g; %s %s" % (
            len(la), worst, " and ".join(files), "differ" if bad else "identical"))
        return 1 if bad else 0
    import numpy as np

    wa = tensors("%s/%s/model.safetensors" % (a, ckpt))
    wb = tensors("%s/%s/model.safetensors" % (b, ckpt))
    if wa.keys() != wb.keys():
        print("the checkpoints hold other tensors")
        return 1
    diff2 = sum(float(((wa[k] - wb[k]) ** 2).sum()) for k in wa)
    norm2 = sum(float((wa[k] ** 2).sum()) for k in wa)
    rel = (diff2 / norm2) ** 0.5
    elem = max(float(np.abs(wa[k] - wb[k]).max()) for k in wa)
    print("%d losses, largest relative difference %.3g (tolerance %g); weights: relative L2 difference %.3g, "
          "largest element difference %.3g (tolerance %g)" % (len(la), worst, tol, rel, elem, wtol))
    return 1 if bad or rel > wtol or (wtol == tol and elem > tol) else 0


if __name__ == "__main__":
    sys.exit(main())
