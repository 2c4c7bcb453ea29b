#!/bin/sh
# The host's side of an offloaded optimizer step (--offload optimizer on a
# device, optim.h: offload) in one piece against in chunks of
# PILE_OPTIM_OFFLOAD_CHUNK (4 Mi) elements, side by side in one run on the
# CPU backend: AdamW over the shard, its conversion to bf16, the copy into
# the staging memory a device copies up from (plain memory here). On a
# device the chunks let each chunk's copy up run under the next chunk's
# AdamW; this says what they cost the host (bench/bench_adamw.c with a CHUNK). No GPU
# needed, none used.
#   bench/offload-chunks.sh [BUILD_DIR]   (default: build-bench-adamw beside the sources)
# Env: PILE_BENCH_N (parameters, default 2^25), PILE_BENCH_THREADS ("1 N"),
# PILE_BENCH_REPS (5), PILE_BENCH_CHUNK (4194304).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build-bench-adamw}
N=${PILE_BENCH_N:-33554432}
THREADS_LIST=${PILE_BENCH_THREADS:-1 $(nproc)}
REPS=${PILE_BENCH_REPS:-5}
CHUNK=${PILE_BENCH_CHUNK:-4194304}
if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" "$ROOT" --buildtype=release -Dcuda=disabled >/dev/null 2>&1 ||
        meson setup "$BUILD" "$ROOT" --buildtype=release >/dev/null
fi
ninja -C "$BUILD" bench/bench_adamw >/dev/null
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)  cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
for th in $THREADS_LIST; do
    "$BUILD/bench/bench_adamw" "$N" "$th" "$REPS" "$CHUNK" | awk '
        { print; s[NR] = $7 }
        END { if (s[1] > 0) printf "  chunked / one piece: %.3f\n", s[2] / s[1] }'
done
