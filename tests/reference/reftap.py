"""TAP output for the reference checks in this folder: a plan at the end,
one `ok`/`not ok` line per check with `#` notes, exit 77 for a skip."""

import logging
import os
import subprocess
import sys
import types

_count = 0
_failed = 0


def skip(why):
    print("1..0 # SKIP " + why)
    sys.exit(77)


def report(ok, name, *notes):
    global _count, _failed
    _count += 1
    _failed += not ok
    print("%s %d - %s" % ("ok" if ok else "not ok", _count, name))
    for n in notes:
        print("# " + n)
    sys.stdout.flush()


def done():
    """Prints the plan; the exit status for the checks so far."""
    print("1..%d" % _count)
    return 1 if _failed else 0


def run(cmd):
    """Runs cmd; its stdout, or RuntimeError with the tail of its stderr."""
    cmd = [str(c) for c in cmd]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), p.returncode, p.stderr.strip()[-2000:]))
    return p.stdout


def main_of(main, what):
    """Exits with main()'s status; a tool that failed (RuntimeError from run)
    is one more failed check, named `what`."""
    try:
        sys.exit(main())
    except RuntimeError as e:
        report(False, what, str(e))
        sys.exit(done())


def need_deepspeed(version, follows):
    """Imports torch and deepspeed on the CPU (DS_ACCELERATOR=cpu; installed
    with --no-deps by tools/install-deps.sh) and returns deepspeed; skips
    (exit 77) when they cannot be imported, or when deepspeed is not
    `version`, the one whose rules `follows` (a file of ours) follows."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    try:
        import torch  # noqa: F401  (deepspeed needs it; say so if it is what fails)
        import deepspeed
    except Exception as e:  # ImportError, or a dependency failing at import
        skip("needs torch and deepspeed (tools/install-deps.sh): %s: %s" % (type(e).__name__, e))
    if deepspeed.__version__ != version:
        skip("deepspeed %s installed; %s follows %s's rules" % (deepspeed.__version__, follows, version))
    logging.getLogger("DeepSpeed").setLevel(logging.ERROR)
    return deepspeed


DS_VERSION = "0.19.8"  # the rules trainer/loss_scaler.h follows; tools/install-deps.sh pins it
FLT_MAX = 3.4028234663852886e38
_ds = None


def deepspeed_scaler():
    """DeepSpeed's fp16 loss scaler on the CPU: a namespace of torch, its
    loss_scaler module and DeepSpeedFP16Config. Skips (77) as
    need_deepspeed does."""
    global _ds
    if _ds:
        return _ds
    need_deepspeed(DS_VERSION, "loss_scaler.h")
    import torch
    from deepspeed.runtime.fp16 import loss_scaler
    from deepspeed.runtime.precision_config import DeepSpeedFP16Config

    # The scaler asks deepspeed.comm for its rank only to decide whether to
    # log an overflow; without a process group that call fails, so it answers 0.
    loss_scaler.dist = types.SimpleNamespace(get_rank=lambda: 0)
    _ds = types.SimpleNamespace(torch=torch, loss_scaler=loss_scaler, DeepSpeedFP16Config=DeepSpeedFP16Config)
    return _ds


def deepspeed_series(block, pattern):
    """(used, next, skipped) per step from DeepSpeed's DynamicLossScaler,
    built from a ds_config "fp16" block as its engine builds it, fed the
    overflow pattern ('1' = that step overflowed); then ("error", step) if
    it raised; cut where its scale passes fp32's range, that step as ours
    must take it (the scale held)."""
    ds = deepspeed_scaler()
    cfg = ds.DeepSpeedFP16Config(**block)
    dynamic = cfg.loss_scale == 0
    s = ds.loss_scaler.CreateLossScaler(ds.torch.half, cfg.loss_scale, dynamic,
                                        cfg.dynamic_loss_scale_args() if dynamic else None)
    out = []
    for c in pattern:
        used = s.cur_scale
        try:
            s.update_scale(c == "1")
        except Exception:
            out.append(("error", len(out)))
            break
        if s.cur_scale > FLT_MAX:
            out.append((float(used), float(used), 0))
            break
        out.append((float(used), float(s.cur_scale), int(c == "1")))
    return out
