#!/bin/sh
# The two ways to update an offloaded optimizer shard, by their parts, on
# one GPU and its host (issue 10: AdamW on the CPU, as --offload optimizer
# does, against keeping AdamW on the GPU and streaming the state through
# it): pinned copies up, down and both at once, AdamW on the cuda and cpu
# backends, each way's time with its parts one after another and its
# overlapped bound, and a verdict (bench/bench_offload.c says how). Prints
# Markdown for bench/RESULTS.md. Without a GPU it says so and exits 0.
# tools/gpu-check.sh runs the same program as its "offload" step.
#
#   bench/offload-gpu.sh [BUILD_DIR]   (default: build-bench-gpu beside the sources, release, -Dcuda=enabled)
# Env: PILE_BENCH_N (parameters in the shard, default 268435456 = 2^28:
# 1 GiB each of p, m, v), PILE_BENCH_THREADS (CPU threads for AdamW,
# default all cores), PILE_BENCH_REPS (5).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build-bench-gpu}
N=${PILE_BENCH_N:-268435456}
if ! gpus=$(nvidia-smi -L 2>/dev/null) || [ -z "$gpus" ]; then
    echo "bench/offload-gpu.sh: no GPU here (nvidia-smi -L finds none): nothing measured"
    exit 0
fi
if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" "$ROOT" --buildtype=release -Dcuda=enabled >/dev/null
fi
ninja -C "$BUILD" bench/bench_offload >&2
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(echo "$gpus" | head -n 1); host: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'); commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo
"$BUILD/bench/bench_offload" "$N" "${PILE_BENCH_THREADS:-0}" "${PILE_BENCH_REPS:-5}"
