#!/usr/bin/env python3
"""The trainer against PyTorch + transformers (TAP).

  torch_ref.py TRAINER_REF_DUMP

For each configuration (the `tiny` preset with a 1000-token vocabulary, so
the padding to 1024 rows is exercised, and a 4-layer, 4-head, 128-wide model
with 3000 tokens), with and without document masks: trainer_ref_dump writes
a fresh checkpoint, transformers.GPT2LMHeadModel loads it as it is (fp32,
eager attention, dropout 0; a document mask goes in as a 4-D additive
attention mask), and we compare
  - logits of an evaluation forward,
  - the loss, sum of cross-entropy over the targets (-1 ignored) / n_tokens,
  - every parameter's gradient of that loss,
each as ||ours - torch|| / ||torch|| < 1e-4; then 10 AdamW steps on the
same batch against torch in float64 (torch.optim.AdamW, decay on 2-D non-embedding weights only,
transformers' get_cosine_with_min_lr_schedule_with_warmup with 3 warmup
steps, clip_grad_norm_ at the median gradient norm of an unclipped run,
so that some steps clip and some do not):
per-step losses and gradient norms to 1e-4, final weights to 1e-4 or 4x
torch's own fp32 error, whichever is larger.

Exits 77 (skip) when torch, transformers, safetensors or numpy are missing.
"""
import math
import os
import sys
import tempfile

from reftap import done, report, run as run_cmd, skip

TOL = 1e-4

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
    import transformers
    from safetensors.numpy import load_file
except Exception as e:  # ImportError, or torch failing to find its CUDA libraries
    skip("needs numpy, torch, transformers and safetensors (tools/install-deps.sh): %s" % e)

if len(sys.argv) != 2:
    sys.exit("usage: torch_ref.py TRAINER_REF_DUMP")
DUMP = sys.argv[1]

transformers.logging.set_verbosity_error()
torch.set_num_threads(2)
torch.manual_seed(0)


def run(*args):
    run_cmd([DUMP] + list(args))


def rel(ours, ref):
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if ours.shape != ref.shape:
        return math.inf
    d = np.linalg.norm(ours - ref)
    n = np.linalg.norm(ref)
    return d / n if n > 0 else d


def make_batch(rng, B, T, V, docs):
    """Tokens over the whole vocabulary (the last id included), targets =
    next token, -1 at each row's end and in a padded tail of row 0;
    doc_start from random document boundaries when docs."""
    tokens = rng.integers(0, V, size=(B, T), dtype=np.int64)
    tokens[0, 1] = V - 1
    targets = np.full((B, T), -1, dtype=np.int64)
    targets[:, :-1] = tokens[:, 1:]
    targets[0, T - T // 4:] = -1  # a short row: padding without loss
    doc_start = None
    if docs:
        doc_start = np.zeros((B, T), dtype=np.int64)
        for b in range(B):
            starts = sorted(set([0] + list(rng.integers(1, T, size=3))))
            for t in range(T):
                doc_start[b, t] = max(s for s in starts if s <= t)
    return tokens, targets, doc_start


def write_batch(path, tokens, targets, doc_start):
    B, T = tokens.shape
    with open(path, "wb") as f:
        np.array([B, T, 1 if doc_start is not None else 0], dtype="<i4").tofile(f)
        tokens.astype("<i4").tofile(f)
        targets.astype("<i4").tofile(f)
        if doc_start is not None:
            doc_start.astype("<i4").tofile(f)


def doc_mask(doc_start, T, dtype=torch.float32):
    """[B, 1, T, T] additive mask: causal and within the query's document."""
    i = torch.arange(T).view(1, T, 1)
    j = torch.arange(T).view(1, 1, T)
    ds = torch.as_tensor(doc_start).view(-1, T, 1)
    allowed = (j <= i) & (j >= ds)
    m = torch.zeros(allowed.shape, dtype=dtype)
    m.masked_fill_(~allowed, torch.finfo(dtype).min)
    return m.unsqueeze(1)


def load_hf(ckpt, dtype=torch.float32):
    model = transformers.GPT2LMHeadModel.from_pretrained(
        ckpt, attn_implementation="eager", dtype=torch.float32).to(dtype)
    model.train()  # dropout is 0 in the config; train() so nothing switches paths
    return model


def hf_loss(model, tokens, targets, doc_start):
    T = tokens.shape[1]
    kw = {}
    if doc_start is not None:
        kw["attention_mask"] = doc_mask(doc_start, T, model.dtype)
    out = model(input_ids=torch.as_tensor(tokens), **kw)
    logits = out.logits
    tgt = torch.as_tensor(targets)
    n = int((tgt >= 0).sum())
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                           ignore_index=-1, reduction="sum") * (1.0 / n)
    return logits, loss


def name_of(hf_name):
    return hf_name[len("transformer."):] if hf_name.startswith("transformer.") else hf_name


def param_table(model):
    """Our tensor names -> parameters (lm_head is tied to wte: one tensor)."""
    out = {}
    for n, p in model.named_parameters():  # tied weights appear once
        out[name_of(n)] = p
    return out


def check_grads(tag, tmp, ckpt, batch, tokens, targets, doc_start):
    st_path = os.path.join(tmp, tag + "-grads.safetensors")
    run("grads", "--ckpt", ckpt, "--batch", batch, "--out", st_path, "--threads", 2)
    ours = load_file(st_path)
    model = load_hf(ckpt)
    logits, loss = hf_loss(model, tokens, targets, doc_start)
    loss.backward()

    if doc_start is not None:  # the mask must matter, or this case tests nothing
        with torch.no_grad():
            plain = model(input_ids=torch.as_tensor(tokens)).logits
        report(rel(plain.numpy(), logits.detach().numpy()) > 1e-3,
               "%s: the document mask changes torch's logits" % tag)

    e = rel(ours["logits"], logits.detach().numpy())
    report(e < TOL, "%s: logits" % tag, "relative error %.3g (shape %s)" % (e, list(ours["logits"].shape)))

    e = rel(ours["loss"][0], loss.item())
    report(e < TOL, "%s: loss" % tag, "ours %.8f torch %.8f" % (ours["loss"][0], loss.item()))

    params = param_table(model)
    worst, worst_name, bad = 0.0, "", []
    names = sorted(k[len("grad."):] for k in ours if k.startswith("grad."))
    missing = sorted(set(params) - set(names))
    extra = sorted(set(names) - set(params))
    for n in names:
        if n not in params:
            continue
        g = params[n].grad.numpy()
        e = rel(ours["grad." + n], g)
        if e > worst or math.isnan(e):
            worst, worst_name = e, n
        if not e < TOL:
            bad.append("%s: %.3g" % (n, e))
    report(not bad and not missing and not extra and len(names) > 0,
           "%s: gradients of all %d tensors" % (tag, len(names)),
           "worst relative error %.3g (%s)" % (worst, worst_name),
           *(["over %g: %s" % (TOL, ", ".join(bad))] if bad else []),
           *(["missing: " + ", ".join(missing)] if missing else []),
           *(["not in torch: " + ", ".join(extra)] if extra else []))


def torch_train(ckpt, tokens, targets, doc_start, dtype, steps, lr, warmup, min_lr, wd, clip):
    model = load_hf(ckpt, dtype)
    params = param_table(model)
    is_decay = {n: p.dim() == 2 and n not in ("wte.weight", "wpe.weight") for n, p in params.items()}
    opt = torch.optim.AdamW([{"params": [p for n, p in params.items() if is_decay[n]], "weight_decay": wd},
                             {"params": [p for n, p in params.items() if not is_decay[n]], "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.999), eps=1e-8)
    sched_fn = getattr(transformers.optimization, "get_cosine_with_min_lr_schedule_with_warmup", None)
    if sched_fn is not None:
        sched = sched_fn(opt, num_warmup_steps=warmup, num_training_steps=steps, min_lr=min_lr)
    else:  # the same formula, for a transformers without it
        def f(s):
            if s < warmup:
                return s / max(1, warmup)
            p = (s - warmup) / max(1, steps - warmup)
            return (min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * p))) / lr
        sched = torch.optim.lr_scheduler.LambdaLR(opt, f)
    losses, norms, lrs = [], [], []
    for _ in range(steps):
        opt.zero_grad()
        _, loss = hf_loss(model, tokens, targets, doc_start)
        loss.backward()
        norms.append(float(torch.nn.utils.clip_grad_norm_(list(params.values()), clip)))
        lrs.append(opt.param_groups[0]["lr"])
        losses.append(loss.item())
        opt.step()
        sched.step()
    return losses, norms, lrs, {n: p.detach().double().numpy() for n, p in params.items()}


def weight_errors(ours_w, ref_w):
    """Per-tensor relative errors; the key biases apart (see below)."""
    errs, kb = {}, {}
    for n, b in ref_w.items():
        a = ours_w.get(n, np.zeros(0))
        if n.endswith("attn.c_attn.bias") and a.shape == b.shape:
            # The key bias has an exactly zero gradient (it adds the same
            # q.b_k to every score of a row, which softmax ignores), so both
            # sides compute rounding noise there, which Adam scales up to
            # steps of about lr: reported, not compared.
            C = b.shape[0] // 3
            kb[n] = rel(a[C:2 * C], b[C:2 * C])
            a, b = np.concatenate([a[:C], a[2 * C:]]), np.concatenate([b[:C], b[2 * C:]])
        errs[n] = rel(a, b)
    return errs, kb


def check_train(tag, tmp, ckpt, batch, tokens, targets, doc_start, lr, steps=10):
    """Ours (fp32) against torch in float64, the exact answer; torch's own
    fp32 run is measured against the same and printed for scale: over 10
    steps fp32 rounding alone moves weights by ~1e-5 relative."""
    warmup, min_lr, wd = 3, lr / 10, 0.1
    # max_norm: the median gradient norm of an unclipped run, so that some
    # steps clip and some do not whatever the initialisation's scale
    probe = torch_train(ckpt, tokens, targets, doc_start, torch.float64, steps, lr, warmup, min_lr, wd, math.inf)
    clip = float("%.3g" % np.median(probe[1]))
    out_ckpt = os.path.join(tmp, tag + "-trained")
    log = os.path.join(tmp, tag + "-train.log")
    run("train", "--ckpt", ckpt, "--batch", batch, "--out", out_ckpt, "--log", log, "--steps", steps,
        "--lr", lr, "--warmup", warmup, "--total", steps, "--min-lr", min_lr, "--wd", wd, "--clip", clip,
        "--beta1", 0.9, "--beta2", 0.999, "--eps", 1e-8, "--threads", 2)
    ours_log = np.loadtxt(log, ndmin=2)
    hp = (steps, lr, warmup, min_lr, wd, clip)
    losses, norms, lrs, ref_w = torch_train(ckpt, tokens, targets, doc_start, torch.float64, *hp)
    _, _, _, t32_w = torch_train(ckpt, tokens, targets, doc_start, torch.float32, *hp)

    e_lr = rel(ours_log[:, 3], lrs)
    report(e_lr < 1e-6, "%s: learning-rate schedule" % tag,
           "ours %s" % " ".join("%.3g" % x for x in ours_log[:, 3]),
           "torch %s" % " ".join("%.3g" % x for x in lrs))
    clipped = sum(1 for n in norms if n > clip)
    report(0 < clipped < steps, "%s: clipping triggers in some steps, not all" % tag,
           "max_norm %g; torch gradient norms %s" % (clip, " ".join("%.3g" % x for x in norms)))
    n = min(len(ours_log), steps)
    e_loss = max(abs(a - b) / abs(b) for a, b in zip(ours_log[:n, 1], losses))
    e_norm = max(abs(a - b) / abs(b) for a, b in zip(ours_log[:n, 2], norms))
    report(e_loss < TOL and e_norm < TOL and len(ours_log) == steps,
           "%s: %d AdamW steps: per-step loss and gradient norm" % (tag, steps),
           "worst relative error: loss %.3g, norm %.3g" % (e_loss, e_norm),
           "ours  %s" % " ".join("%.6f" % x for x in ours_log[:, 1]),
           "torch %s" % " ".join("%.6f" % x for x in losses))

    ours_w = load_file(os.path.join(out_ckpt, "model.safetensors"))
    errs, kb = weight_errors(ours_w, ref_w)
    t32, _ = weight_errors(t32_w, ref_w)
    worst = max(errs, key=lambda k: errs[k] if not math.isnan(errs[k]) else math.inf)
    # fp32 rounding alone, amplified by 10 steps of Adam, comes near 1e-4 on
    # some tensors of the larger model (torch's own fp32 run shows it): the
    # bound per tensor is 1e-4 or 4x torch fp32's own error, whichever is
    # larger; a real bug is orders of magnitude above either.
    bad = ["%s: %.3g (torch fp32 %.3g)" % (k, e, t32[k]) for k, e in errs.items()
           if not e < max(TOL, 4 * t32[k])]
    t32_worst = max(t32, key=lambda k: t32[k])
    report(not bad and set(ours_w) == set(ref_w), "%s: weights after %d steps" % (tag, steps),
           "worst relative error %.3g (%s), torch fp32's own %.3g (%s)" % (errs[worst], worst, t32[t32_worst],
                                                                          t32_worst),
           "key biases (zero gradient, Adam on rounding noise): " +
           ", ".join("%s %.3g" % kv for kv in kb.items()),
           *(["over the bound: " + ", ".join(bad)] if bad else []))


CONFIGS = [
    # name, layers, heads, embd, vocab, positions, B, T, AdamW lr (the largest
    # where 10 steps stay smooth: past it loss spikes amplify fp32 rounding
    # beyond 1e-4, in torch's own fp32 run as much as in ours)
    ("tiny", 2, 2, 64, 1000, 64, 2, 32, 1e-2),
    ("4x4x128", 4, 4, 128, 3000, 64, 4, 64, 3e-3),
]


def main():
    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory(prefix="pile-torch-ref-") as tmp:
        for name, L, H, C, V, P, B, T, lr in CONFIGS:
            ckpt = os.path.join(tmp, name + "-init")
            try:
                run("init", "--layers", L, "--heads", H, "--embd", C, "--vocab", V, "--positions", P,
                    "--seed", 1234, "--out", ckpt)
            except RuntimeError as e:
                report(False, "%s: init checkpoint" % name, str(e))
                continue
            for docs in (False, True):
                tag = name + ("-docmask" if docs else "")
                tokens, targets, doc_start = make_batch(rng, B, T, V, docs)
                batch = os.path.join(tmp, tag + ".batch")
                write_batch(batch, tokens, targets, doc_start)
                for fn, kw in ((check_grads, {}), (check_train, {"lr": lr})):
                    try:
                        fn(tag, tmp, ckpt, batch, tokens, targets, doc_start, **kw)
                    except Exception as e:  # one failing step should not hide the others
                        report(False, "%s: %s" % (tag, fn.__name__), "%s: %s" % (type(e).__name__, e))
    return done()


if __name__ == "__main__":
    sys.exit(main())
