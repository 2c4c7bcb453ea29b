#!/usr/bin/env python3
"""The trainer's files read by the reference Python packages: safetensors
(safetensors.numpy), a checkpoint folder (transformers' GPT2LMHeadModel,
no weight warnings beyond the attention bias buffers) and the TensorBoard
event file (tensorboard's EventFileLoader: tags, steps, float32 values).

usage: check_io.py TEST_TRAINER_IO   (prints TAP; exits 77 if a package is missing)
"""
import json
import logging
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

n = 0
failed = 0


def ok(cond, what, detail=""):
    global n, failed
    n += 1
    print(("ok %d - %s" if cond else "not ok %d - %s") % (n, what))
    if not cond:
        failed += 1
        for line in str(detail).splitlines():
            print("# " + line)
    sys.stdout.flush()


def skip_all(why):
    print("1..0 # SKIP " + why)
    sys.exit(77)


def main():
    if len(sys.argv) != 2:
        print("usage: check_io.py TEST_TRAINER_IO", file=sys.stderr)
        return 2
    try:
        import numpy as np
        import safetensors.numpy
        from safetensors import safe_open
    except ImportError as e:
        skip_all("cannot import numpy/safetensors: %s" % e)
    try:
        import torch
        import transformers
        from transformers import GPT2LMHeadModel
    except ImportError as e:
        skip_all("cannot import torch/transformers: %s" % e)
    try:
        from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    except ImportError as e:
        skip_all("cannot import tensorboard: %s" % e)

    try:
        transformers.utils.logging.disable_progress_bar()
    except AttributeError:
        pass
    tmp = tempfile.mkdtemp(prefix="pile-check-io-")
    r = subprocess.run([sys.argv[1], "--write-fixture", tmp], capture_output=True, text=True)
    ok(r.returncode == 0, "test_trainer_io --write-fixture", r.stderr)
    if r.returncode != 0:
        print("1..%d" % n)
        return 1

    # --- a plain safetensors file: every rank, values and metadata
    path = os.path.join(tmp, "tensors.safetensors")
    try:
        t = safetensors.numpy.load_file(path)
        with safe_open(path, framework="np") as f:
            meta = f.metadata()
        want = {
            "scalar": np.array(-2.5, dtype=np.float32),
            "vec": np.array([1.0, 0.1, -1e-30], dtype=np.float32),
            "mat": (np.arange(6, dtype=np.float32) / np.float32(3)).reshape(2, 3),
        }
        good = sorted(t) == sorted(want) and all(
            t[k].dtype == np.float32 and t[k].shape == want[k].shape and np.array_equal(t[k], want[k]) for k in want)
        ok(good, "safetensors.numpy reads every rank bit for bit", {k: (v.shape, v) for k, v in t.items()})
        ok(meta == {"format": "pt", "note": "pile test"}, "safetensors metadata", meta)
    except Exception as e:  # the reader refusing the file is the failure
        ok(False, "safetensors.numpy reads tensors.safetensors", repr(e))

    # --- the checkpoint folder through transformers
    ck = os.path.join(tmp, "checkpoint")
    weights = safetensors.numpy.load_file(os.path.join(ck, "model.safetensors"))
    moments = safetensors.numpy.load_file(os.path.join(ck, "optimizer.safetensors"))
    with safe_open(os.path.join(ck, "optimizer.safetensors"), framework="np") as f:
        ometa = f.metadata()
    ok(set(moments) == {p + k for p in ("m.", "v.") for k in weights}
       and all(moments[p + k].shape == weights[k].shape for p in ("m.", "v.") for k in weights),
       "optimizer.safetensors: m. and v. for every weight, same shapes", sorted(moments)[:6])
    ok(ometa.get("step") == "7", "optimizer metadata records the step", ometa)
    cfg = json.load(open(os.path.join(ck, "config.json")))
    ok(weights["wte.weight"].shape == (cfg["vocab_size"], cfg["n_embd"]),
       "wte saved without padded rows", weights["wte.weight"].shape)

    records = []

    class Catch(logging.Handler):
        def emit(self, rec):
            records.append(rec.getMessage())

    handler = Catch()
    tlog = logging.getLogger("transformers")
    tlog.addHandler(handler)
    transformers.logging.set_verbosity_warning()
    try:
        model, info = GPT2LMHeadModel.from_pretrained(ck, output_loading_info=True)
    except Exception as e:
        ok(False, "GPT2LMHeadModel.from_pretrained loads the checkpoint", repr(e))
        print("1..%d" % n)
        return 1
    finally:
        tlog.removeHandler(handler)

    def buffers_only(names):
        return all(k.endswith(".attn.bias") or k.endswith(".attn.masked_bias") for k in names)

    ok(buffers_only(info["missing_keys"]) and not info["unexpected_keys"] and not info["mismatched_keys"]
       and not info.get("error_msgs"), "from_pretrained: nothing missing or unexpected but attention buffers", info)
    words = ("were not initialized", "were not used", "newly initialized", "LOAD REPORT", "MISSING", "UNEXPECTED")
    noisy = [m for m in records if any(w in m for w in words)]
    ok(not noisy, "from_pretrained logs no weight warnings", "\n".join(noisy))
    sd = model.state_dict()
    same = True
    detail = []
    for name in ["wte.weight", "wpe.weight", "h.0.attn.c_attn.weight", "h.1.mlp.c_proj.bias", "ln_f.weight",
                 "h.1.ln_2.bias"]:
        a = sd["transformer." + name].detach().cpu().numpy()
        b = weights[name]
        if a.shape != b.shape or not np.array_equal(a, b):
            same = False
            detail.append("%s differs: %s vs %s" % (name, a.shape, b.shape))
    ok(same, "the loaded tensors equal the saved ones bit for bit", "\n".join(detail))
    ok(np.array_equal(sd["lm_head.weight"].numpy(), weights["wte.weight"]), "lm_head tied to wte")
    ok(model.config.n_layer == cfg["n_layer"] and model.config.n_embd == cfg["n_embd"]
       and model.config.activation_function == "gelu_new" and model.config.eos_token_id == 256,
       "config.json read as a GPT2Config", model.config)
    with torch.no_grad():
        out = model(torch.tensor([[1, 2, 3, 4]]))
    ok(tuple(out.logits.shape) == (1, 4, cfg["vocab_size"]) and torch.isfinite(out.logits).all().item(),
       "the loaded model runs a forward", out.logits.shape)

    # --- the event file
    run = os.path.join(tmp, "run")
    files = [f for f in os.listdir(run) if "tfevents" in f]
    ok(len(files) == 1 and files[0].startswith("events.out.tfevents.") and files[0].endswith(".pile"),
       "one event file named events.out.tfevents.<time>.<host>.pile", files)
    expected = json.load(open(os.path.join(tmp, "expected.json")))["events"]
    try:
        events = list(EventFileLoader(os.path.join(run, files[0])).Load())
    except Exception as e:
        events = []
        ok(False, "EventFileLoader reads the file", repr(e))
    ok(len(events) == 1 + len(expected) and events[0].file_version == "brain.Event:2",
       "file_version first, then one event per record", [str(e)[:80] for e in events[:2]])
    got = []
    for e in events[1:]:
        vals = {}
        for v in e.summary.value:
            # the loader migrates simple_value into a tensor; either way the float32
            x = v.simple_value if v.HasField("simple_value") else float(np.float32(v.tensor.float_val[0]))
            vals[v.tag] = x
        got.append((e.step, vals, e.wall_time))
    want = [(x["step"], {k: float(np.float32(val)) for k, val in x["values"].items()}) for x in expected]
    ok([(s, v) for s, v, _ in got] == want, "tags, steps and float32 values exact", "got %s\nwant %s" % (got, want))
    ok(all(w > 1.5e9 for _, _, w in got), "wall times are unix seconds")
    lines = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
    ok([l["step"] for l in lines] == [x["step"] for x in expected]
       and all(l[k] == v for l, x in zip(lines, expected) for k, v in x["values"].items()),
       "metrics.jsonl holds the same records at full precision", lines[:2])

    print("1..%d" % n)
    if failed == 0:
        subprocess.run(["rm", "-rf", tmp])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
