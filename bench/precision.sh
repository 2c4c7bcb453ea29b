#!/bin/sh
# bf16 / fp16 conversions (trainer/precision.h) against numpy and PyTorch on
# the CPU, one thread each, in one run: the in-place rounding the CPU
# backend's mixed-precision emulation uses, the fp32 -> 16-bit array
# conversions and fp16 -> fp32, over the same gradient-like values (many
# binades, some in fp16's subnormals), with a memcpy of the same bytes for
# scale. GB/s of fp32 data (best of REPEAT) and ours / theirs, every side
# writing into arrays allocated once.
# Prints a Markdown table for bench/RESULTS.md.
#
#   bench/precision.sh [BUILD_DIR]   (default: build-bench-precision beside the sources)
# Env: PILE_BENCH_MIB (fp32 data per pass, default 64), PILE_BENCH_REPEAT (7).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build-bench-precision}
MIB=${PILE_BENCH_MIB:-64}
REPEAT=${PILE_BENCH_REPEAT:-7}

if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" "$ROOT" --buildtype=release >/dev/null
fi
ninja -C "$BUILD" tests/mixed_ref_dump >&2
python3 -c 'import numpy, torch' 2>/dev/null ||
    { echo "bench/precision.sh: needs numpy and torch (tools/install-deps.sh)" >&2; exit 1; }

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, $(grep -o -w -m1 -E 'avx512f' /proc/cpuinfo || echo 'no avx512f'); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
bt=$(grep -o '"name": "buildtype", "value": "[a-z]*"' "$BUILD/meson-info/intro-buildoptions.json" | sed 's/.*"value": "//; s/"$//')
echo "commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $bt build; $(python3 -c 'import numpy, torch; print("numpy", numpy.__version__, "torch", torch.__version__)'); $MIB MiB of fp32 per pass, best of $REPEAT, one thread"
echo

DATA=$(mktemp "${TMPDIR:-/tmp}/pile-bench-precision-XXXXXX")
trap 'rm -f "$DATA"' EXIT
OURS=$("$BUILD/tests/mixed_ref_dump" bench "$MIB" "$REPEAT" "$DATA")
OURS="$OURS" python3 - "$MIB" "$REPEAT" "$DATA" <<'EOF'
import os, sys, time
import numpy as np
import torch

torch.set_num_threads(1)
mib, repeat = int(sys.argv[1]), int(sys.argv[2])
n = mib << 18
# the same values mixed_ref_dump measured on
x = np.fromfile(sys.argv[3], dtype=np.float32)
assert x.size == n
t = torch.from_numpy(x)
# every peer writes into arrays allocated once, as ours do
h16 = x.astype(np.float16)
y = np.empty_like(x)
tb, th, ty = torch.empty(n, dtype=torch.bfloat16), torch.empty(n, dtype=torch.float16), torch.empty(n)

def best(f):
    b = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter(); f(); b = min(b, time.perf_counter() - t0)
    return b

def there_and_back(mid, out):
    return lambda: (mid.copy_(t), out.copy_(mid))

peers = {
    "round in place to bf16": ("torch bfloat16 and back", there_and_back(tb, ty)),
    "round in place to fp16": ("numpy float16 and back",
                               lambda: (np.copyto(h16, x, casting="same_kind"), np.copyto(y, h16))),
    "fp32 -> bf16 array": ("torch to bfloat16", lambda: tb.copy_(t)),
    "fp32 -> fp16 array": ("numpy to float16", lambda: np.copyto(h16, x, casting="same_kind")),
    "fp16 -> fp32 array": ("numpy float16 to float32", lambda: np.copyto(y, h16)),
}
torch16 = {
    "round in place to fp16": there_and_back(th, ty),
    "fp32 -> fp16 array": lambda: th.copy_(t),
}
print("| operation | ours GB/s | peer | peer GB/s | ours / peer | torch fp16 GB/s | ours / torch |")
print("|---|---|---|---|---|---|---|")
for line in os.environ["OURS"].splitlines()[2:]:
    name, gbs = [c.strip() for c in line.strip("|").split("|")][:2]
    if name not in peers:
        print("| %s | %s | | | | | |" % (name, gbs)); continue
    label, f = peers[name]
    p = n * 4 / best(f) / 1e9
    extra = "| |"
    if name in torch16:
        q = n * 4 / best(torch16[name]) / 1e9
        extra = "| %.2f | %.2fx |" % (q, float(gbs) / q)
    print("| %s | %s | %s | %.2f | %.2fx %s" % (name, gbs, label, p, float(gbs) / p, extra))
EOF
