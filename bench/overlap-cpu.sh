#!/bin/sh
# Overlapped against blocking collectives on the CPU: bench_zero's step
# time (bench/bench_zero.c: forward, backward, the stage's reductions,
# AdamW, the gathers; one micro-batch of BATCH x SEQ synthetic tokens per
# rank, the median of STEPS steps of the slowest rank) on 2 ranks under
# `pile-trainer launch --nproc 2 --run` (the tcp communicator), at ZeRO
# 0, 2 and 3, with the communicator's thread (overlap 1: gradient buckets
# reduced while the backward computes the layers below them, stage 3's next
# unit gathered during this one) and without it (overlap 0: every
# collective where it is issued). The two are run in turns, REPS times
# each, the order swapped every other time, so that a machine whose load
# moves (other jobs) weighs on both alike; each line gives both medians,
# their ratio (blocking / overlapped: above 1 means overlap is faster),
# and the share of the gradient bytes handed to the thread during the
# backward.
#   bench/overlap-cpu.sh [BUILD_DIR]    (default: build beside the sources)
# Env: PILE_BENCH_MODELS ("tiny small"), PILE_BENCH_STAGES ("0 2 3"),
# PILE_BENCH_REPS (3), PILE_BENCH_STEPS (5), PILE_BENCH_BATCH (4),
# PILE_BENCH_SEQ (128), PILE_BENCH_THREADS (1), PILE_BENCH_BUCKET_TINY
# (5000) and PILE_BENCH_BUCKET_SMALL (500000): reduce_bucket_size, elements
# per rank (a twelfth or so of each rank's half of the model).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
MODELS=${PILE_BENCH_MODELS:-tiny small}
STAGES=${PILE_BENCH_STAGES:-0 2 3}
REPS=${PILE_BENCH_REPS:-3}
STEPS=${PILE_BENCH_STEPS:-5}
BATCH=${PILE_BENCH_BATCH:-4}
SEQ=${PILE_BENCH_SEQ:-128}
THREADS=${PILE_BENCH_THREADS:-1}
ninja -C "$BUILD" bench/bench_zero trainer/pile-trainer > /dev/null
TR=$BUILD/trainer/pile-trainer
BZ=$BUILD/bench/bench_zero
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)  cores: $(nproc)  cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "2 ranks (tcp), batch $BATCH x $SEQ per rank, $THREADS thread(s) per rank, median of $STEPS steps, $REPS turns each"
# step MODEL STAGE OVERLAP BUCKET: one run's line
step() {
    "$TR" launch --nproc 2 --run "$BZ" "$1" "$2" 0 "$STEPS" "$BATCH" "$SEQ" "$THREADS" "$3" "$4" 2>&1 |
        grep -E '^model|bench_zero'
}
# median of the step times (ms) in the lines of a file
median() {
    sed -n 's/.*: step \([0-9.]*\) ms.*/\1/p' "$1" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for model in $MODELS; do
    if [ "$model" = tiny ]; then bucket=${PILE_BENCH_BUCKET_TINY:-5000}; else bucket=${PILE_BENCH_BUCKET_SMALL:-500000}; fi
    for stage in $STAGES; do
        : > "$tmp/0"
        : > "$tmp/1"
        r=0
        while [ $r -lt "$REPS" ]; do
            if [ $((r % 2)) -eq 0 ]; then order="0 1"; else order="1 0"; fi
            for ov in $order; do step "$model" "$stage" "$ov" "$bucket" >> "$tmp/$ov"; done
            r=$((r + 1))
        done
        if grep -q bench_zero "$tmp/0" "$tmp/1"; then
            grep -h bench_zero "$tmp/0" "$tmp/1" | head -n 2
            continue
        fi
        b=$(median "$tmp/0")
        o=$(median "$tmp/1")
        ratio=$(echo "$b $o" | awk '{ printf "%.2f", $1 / $2 }')
        share=$(sed -n 's/.*, \([0-9]*%\) of the gradient bytes.*/\1/p' "$tmp/1" | head -n 1)
        runs_b=$(sed -n 's/.*: step \([0-9.]*\) ms.*/\1/p' "$tmp/0" | tr '\n' ' ')
        runs_o=$(sed -n 's/.*: step \([0-9.]*\) ms.*/\1/p' "$tmp/1" | tr '\n' ' ')
        echo "model $model stage $stage bucket $bucket: blocking $b ms, overlapped $o ms, ratio $ratio," \
            "$share of the gradient bytes during the backward (turns: blocking ${runs_b}| overlapped ${runs_o})"
    done
done
