#!/bin/sh
# AdamW on the host, ours against PyTorch's, side by side in one run: the
# step the optimizer offload of issue 10 (ZeRO-Offload) puts on the CPU, and
# the host rate trainer/SCALING.md's step-time model uses. Each side updates
# N fp32 parameters (p, g, m, v) with the same hyper-parameters and thread
# count; median of REPS steps. PyTorch: torch.optim.AdamW with foreach=False
# (the loop over one flat tensor, what one big parameter is) and fused=True
# where this torch has a CPU fused AdamW.
#   bench/adamw-cpu.sh [BUILD_DIR]     (default: build-bench-adamw beside the sources)
# Env: PILE_BENCH_N (parameters, default 64M), PILE_BENCH_THREADS ("1 N"),
# PILE_BENCH_REPS (10).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build-bench-adamw}
N=${PILE_BENCH_N:-67108864}
THREADS_LIST=${PILE_BENCH_THREADS:-1 $(nproc)}
REPS=${PILE_BENCH_REPS:-10}
if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" "$ROOT" --buildtype=release -Dcuda=disabled >/dev/null 2>&1 ||
        meson setup "$BUILD" "$ROOT" --buildtype=release >/dev/null
fi
ninja -C "$BUILD" bench/bench_adamw >/dev/null
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)  cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
for th in $THREADS_LIST; do
    ours=$("$BUILD/bench/bench_adamw" "$N" "$th" "$REPS")
    torch=$(OMP_NUM_THREADS=$th python3 - "$N" "$th" "$REPS" <<'PY'
import sys, time, torch
n, th, reps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(th)
p = torch.nn.Parameter(torch.rand(n) * 0.02)
p.grad = torch.arange(n, dtype=torch.float32) % 97 * 1e-3
out = []
for fused in (False, True):
    try:
        opt = torch.optim.AdamW([p], lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1,
                                foreach=False, fused=fused or None)
        opt.step()
        dt = []
        for _ in range(reps):
            t0 = time.perf_counter(); opt.step(); dt.append(time.perf_counter() - t0)
        dt.sort()
        out.append("%s %.4f" % ("fused" if fused else "loop", dt[len(dt) // 2]))
    except Exception as e:  # a torch without a CPU fused AdamW
        out.append("%s n/a" % ("fused" if fused else "loop"))
print(" ".join(out))
PY
)
    ours_s=$(echo "$ours" | awk '{print $5}')
    echo "$ours"
    echo "$torch" | awk -v o="$ours_s" -v th="$th" '{
        printf "  torch (threads %s): %s %s s/step", th, $1, $2;
        if ($2 != "n/a") printf " (ours %.2fx its speed)", $2 / o;
        printf ", %s %s s/step", $3, $4;
        if ($4 != "n/a") printf " (ours %.2fx)", $4 / o;
        printf "\n" }'
done
