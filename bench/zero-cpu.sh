#!/bin/sh
# ZeRO on the CPU: the step time of 1, 2 and 4 ranks (processes under
# mpirun) at each stage, with and without offload, and the bytes the
# collectives move per step against the ZeRO paper's figures (2x the
# parameters at stages 0 to 2, 3x at stage 3). Each line is bench_zero's
# (bench/bench_zero.c): one micro-batch of BATCH x SEQ synthetic tokens per
# rank, THREADS threads per rank, the median of STEPS steps of the slowest
# rank. Ranks beyond the cores share them (--oversubscribe), so on a small
# machine the times say what the collectives and the sharding cost, not
# what more cores would give.
#   bench/zero-cpu.sh [BUILD_DIR]     (default: build-bench-zero beside the sources)
# Env: PILE_BENCH_MODELS ("tiny small"), PILE_BENCH_RANKS ("1 2 4"),
# PILE_BENCH_STEPS (5), PILE_BENCH_BATCH (4), PILE_BENCH_SEQ (128),
# PILE_BENCH_THREADS (1).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build-bench-zero}
MODELS=${PILE_BENCH_MODELS:-tiny small}
RANKS=${PILE_BENCH_RANKS:-1 2 4}
STEPS=${PILE_BENCH_STEPS:-5}
BATCH=${PILE_BENCH_BATCH:-4}
SEQ=${PILE_BENCH_SEQ:-128}
THREADS=${PILE_BENCH_THREADS:-1}
command -v mpirun >/dev/null || { echo "zero-cpu.sh: needs mpirun (openmpi-bin)" >&2; exit 1; }
if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" "$ROOT" --buildtype=release -Dcuda=disabled >/dev/null 2>&1 ||
        meson setup "$BUILD" "$ROOT" --buildtype=release >/dev/null
fi
ninja -C "$BUILD" bench/bench_zero >/dev/null
MPI="mpirun --oversubscribe --bind-to none"
[ "$(id -u)" = 0 ] && MPI="$MPI --allow-run-as-root"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)  cores: $(nproc)  cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "batch $BATCH x $SEQ per rank, $THREADS thread(s) per rank, median of $STEPS steps"
for model in $MODELS; do
    for n in $RANKS; do
        # stage:offload (0 none, 1 the optimizer, 2 the parameters too)
        for so in 0:0 1:0 1:1 2:0 2:1 3:0 3:1 3:2; do
            $MPI -np "$n" "$BUILD/bench/bench_zero" "$model" "${so%:*}" "${so#*:}" "$STEPS" "$BATCH" "$SEQ" \
                "$THREADS" 2>&1 | grep -E '^model|bench_zero'
        done
    done
done
