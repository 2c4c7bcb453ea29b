#!/usr/bin/env python3
"""bf16 and fp16 (trainer/precision.h) against numpy and PyTorch (TAP).

  precision_ref.py MIXED_REF_DUMP

  - every one of the 2^16 fp16 patterns decodes as numpy's float16 does, and
    every bf16 pattern as torch's bfloat16 does; each converts back to
    itself;
  - about 8 million fp32 values (hand-picked edges, every rounding-relevant
    low bit pattern in each binade near fp16's range, uniformly random bit
    patterns, gradient-like values at many scales) convert to fp16 as
    numpy's astype(np.float16) does (and torch's to(torch.float16)), and to
    bf16 as torch's to(torch.bfloat16) does, bit for bit, one by one and
    through the vectorised array functions; the in-place rounding equals
    numpy's / torch's conversion there and back;
  - NaNs: the references disagree among themselves on payloads (torch's
    bf16 gives one canonical NaN, F16C quiets), so a NaN must give a NaN of
    the same sign with the payload rule precision.h states.

Exits 77 (skip) when numpy or torch is missing.
"""
import os
import sys
import tempfile

from reftap import done, report, run, skip

try:
    import numpy as np
    import torch
except Exception as e:  # ImportError, or torch failing to load its libraries
    skip("needs numpy and torch (tools/install-deps.sh): %s" % e)

if len(sys.argv) != 2:
    sys.exit("usage: precision_ref.py MIXED_REF_DUMP")
DUMP = sys.argv[1]


def inputs():
    """The fp32 test set as uint32 bit patterns."""
    rng = np.random.default_rng(20261203)
    parts = []
    edges = [0x00000000, 0x80000000, 0x3F800000, 0x477FE000, 0x477FEFFF, 0x477FF000, 0x477FF001, 0x47800000,
             0x7F7FFFFF, 0x7F7F7FFF, 0x7F7F8000, 0x7F800000, 0xFF800000, 0x38800000, 0x387FE000, 0x33800000,
             0x33000000, 0x33000001, 0x33C00000, 0x00000001, 0x007FFFFF, 0x00008000, 0x00018000,
             0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FA00000, 0xFF801FFF, 0x7F810000, 0x7FFFFFFF]
    parts.append(np.array(edges, dtype=np.uint32))
    # every low 13 bits (fp16's rounding bits) under both parities of the
    # kept bit, for each binade from below fp16's subnormals to past its
    # largest, both signs; and bf16's rounding point in every binade
    lo = np.arange(8192, dtype=np.uint32)
    for e in range(96, 145):
        for sign in (0, 0x80000000):
            for hi in (int(rng.integers(0, 512)) * 2, 0x3FE):
                base = np.uint32(sign | (e << 23) | (hi << 13))
                parts.append(base | lo)
                parts.append(base | np.uint32(0x2000) | lo)
    around = np.array([0, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF, 0x10000, 0x17FFF, 0x18000, 0x18001], dtype=np.uint32)
    for e in range(256):
        for sign in (0, 0x80000000):
            mid = np.uint32(sign | (e << 23)) | (rng.integers(0, 64, size=4, dtype=np.uint32) << 17)
            parts.append((mid[:, None] | around[None, :]).ravel())
    parts.append(rng.integers(0, 2**32, size=4 << 20, dtype=np.uint32))
    # gradient-like values: normal draws at scales from 2^-40 to 2^20
    g = rng.standard_normal(1 << 20).astype(np.float32)
    g *= np.exp2(rng.integers(-40, 21, size=g.size)).astype(np.float32)
    parts.append(g.view(np.uint32))
    return np.concatenate(parts).astype(np.uint32)


def nan_rule(u, fmt):
    """The 16-bit NaN precision.h promises for fp32 NaN bit patterns u."""
    u = u.astype(np.uint32)
    if fmt == "bf16":
        h = u >> 16
        return (h | ((u & 0x007F0000) == 0)).astype(np.uint16)
    sign = (u >> 16) & 0x8000
    pay = (u >> 13) & 0x3FF
    return (sign | 0x7C00 | pay | (pay == 0)).astype(np.uint16)


def mismatches(got, want, x):
    bad = np.nonzero(got != want)[0]
    notes = ["%d of %d differ" % (bad.size, got.size)] if bad.size else []
    for i in bad[:5]:
        notes.append("input 0x%08x: ours 0x%x, want 0x%x" % (x[i], got[i], want[i]))
    return bad.size == 0, notes


def to_torch(f32, dtype):
    return torch.from_numpy(f32.copy()).to(dtype)


def main():
    np.seterr(over="ignore", invalid="ignore")  # fp32 past fp16's range casts to inf, as it should
    with tempfile.TemporaryDirectory(prefix="pile-precision-ref-") as tmp:
        # --- every 16-bit pattern
        path = os.path.join(tmp, "decode.bin")
        run([DUMP, "decode", path])
        dec = np.fromfile(path, dtype=np.uint32).reshape(4, 65536)
        pat = np.arange(65536, dtype=np.uint32)
        ref16 = pat.astype(np.uint16).view(np.float16).astype(np.float32).view(np.uint32)
        refb = torch.from_numpy(pat.astype(np.uint16).view(np.int16).copy()).view(torch.bfloat16)
        refb = refb.to(torch.float32).numpy().view(np.uint32)
        nan16 = (((pat >> 10) & 31) == 31) & ((pat & 0x3FF) != 0)
        nanb = (((pat >> 7) & 255) == 255) & ((pat & 0x7F) != 0)
        for name, got_rows, ref, nan, shift, payload in (("fp16", dec[2:], ref16, nan16, 13, 0x3FF),
                                                         ("bf16", dec[:2], refb, nanb, 16, 0x7F)):
            # a NaN keeps its sign and its whole payload on the way up
            nan_want = ((pat & 0x8000) << 16) | 0x7F800000 | ((pat & payload) << shift)
            want = np.where(nan, nan_want, ref).astype(np.uint32)
            notes = []
            ok = True
            for got in got_rows:
                good, n = mismatches(got, want, pat)
                ok &= good
                notes += n
            report(ok, "every %s pattern decodes as %s does (one by one and as an array)"
                   % (name, "numpy's float16" if name == "fp16" else "torch's bfloat16"), *notes)

        # --- back to 16 bits: the round trip
        x = inputs()
        xin = np.concatenate([x, dec[0], dec[2]])
        inp = os.path.join(tmp, "in.bin")
        out = os.path.join(tmp, "out.bin")
        xin.tofile(inp)
        run([DUMP, "convert", inp, out])
        raw = np.fromfile(out, dtype=np.uint8)
        n = xin.size
        b16 = raw[: 8 * n].view(np.uint16).reshape(4, n)
        rnd = raw[8 * n:].view(np.uint32).reshape(2, n)
        nx = x.size
        report(np.array_equal(b16[0][nx:nx + 65536], pat.astype(np.uint16)) and
               np.array_equal(b16[2][nx + 65536:], pat.astype(np.uint16)),
               "every bf16 and fp16 pattern converts back to itself")

        # --- fp32 -> 16 bits against the references
        x = xin
        f = x.view(np.float32)
        isnan = np.isnan(f)
        np16 = f.astype(np.float16).view(np.uint16)
        want16 = np.where(isnan, nan_rule(x, "fp16"), np16)
        tb = to_torch(f, torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        wantb = np.where(isnan, nan_rule(x, "bf16"), tb)
        for label, got, want in (("fp16 one by one", b16[2], want16), ("fp16 array", b16[3], want16),
                                 ("bf16 one by one", b16[0], wantb), ("bf16 array", b16[1], wantb)):
            ok, notes = mismatches(got, want, x)
            ref = "numpy's astype(float16)" if label.startswith("fp16") else "torch's to(bfloat16)"
            report(ok, "%s: %d fp32 values convert as %s (NaNs by the payload rule)" % (label, x.size, ref), *notes)
        t16 = to_torch(f, torch.float16).view(torch.int16).numpy().view(np.uint16)
        ok, notes = mismatches(b16[2][~isnan], t16[~isnan], x[~isnan])
        report(ok, "fp16: the non-NaN values also convert as torch's to(float16)", *notes)
        h16, hb = b16[2][isnan], b16[0][isnan]
        ok = bool(np.all(((h16 & 0x7C00) == 0x7C00) & ((h16 & 0x3FF) != 0)) and
                  np.all(((hb & 0x7F80) == 0x7F80) & ((hb & 0x7F) != 0)))
        report(ok and isnan.sum() > 10000, "every NaN (%d) stays a NaN" % isnan.sum())

        # --- rounding in place: there and back through the references
        back16 = f.astype(np.float16).astype(np.float32).view(np.uint32)
        want = np.where(isnan, np.uint32(0), back16)
        ok, notes = mismatches(np.where(isnan, np.uint32(0), rnd[1]), want, x)
        ok &= bool(np.all(np.isnan(rnd[1][isnan].view(np.float32))))
        report(ok, "round in place to fp16: numpy's astype(float16).astype(float32)", *notes)
        backb = to_torch(f, torch.bfloat16).to(torch.float32).numpy().view(np.uint32)
        ok, notes = mismatches(np.where(isnan, np.uint32(0), rnd[0]), np.where(isnan, np.uint32(0), backb), x)
        ok &= bool(np.all(np.isnan(rnd[0][isnan].view(np.float32))))
        report(ok, "round in place to bf16: torch's to(bfloat16).to(float32)", *notes)
    return done()


if __name__ == "__main__":
    sys.exit(main())
