#!/bin/sh
# What the CPU backend's mixed-precision emulation costs: pile-trainer's
# ms/step and tokens/s with --precision fp32, bf16 and fp16 (fp32 tensors,
# every stored activation, activation gradient and parameter rounded to
# bf16 or fp16 by precision.h; fp16 also scales the loss and unscales the
# gradients), alternating in every repeat so that all see the same
# machine. Median of REPEAT runs, each the median step time after the
# first WARM steps (bench/step_ms.py), and the median CPU time (user +
# system) of the whole runs, the steadier figure on a shared machine.
# Prints a Markdown table for bench/RESULTS.md.
#
#   bench/train-precision.sh [BUILD_DIR]   (default: build-bench-train beside the sources)
# Env: PILE_BENCH_CORPUS (default data/sample; bytes tokenizer),
# PILE_BENCH_MODELS ("tiny small"), PILE_BENCH_THREADS (1), PILE_BENCH_BATCH (8),
# PILE_BENCH_SEQ (256), PILE_BENCH_STEPS (12), PILE_BENCH_WARM (2),
# PILE_BENCH_REPEAT (3), PILE_BENCH_PRECISIONS ("fp32 bf16 fp16"), PILE_BENCH_TMP.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build-bench-train}
CORPUS=${PILE_BENCH_CORPUS:-$ROOT/data/sample}
MODELS=${PILE_BENCH_MODELS:-tiny small}
THREADS=${PILE_BENCH_THREADS:-1}
BATCH=${PILE_BENCH_BATCH:-8}
SEQ=${PILE_BENCH_SEQ:-256}
STEPS=${PILE_BENCH_STEPS:-12}
WARM=${PILE_BENCH_WARM:-2}
REPEAT=${PILE_BENCH_REPEAT:-3}
PRECISIONS=${PILE_BENCH_PRECISIONS:-fp32 bf16 fp16}

if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" "$ROOT" --buildtype=release >/dev/null
fi
ninja -C "$BUILD" preprocess/pile-prep trainer/pile-trainer >&2
TMP=$(mktemp -d "${PILE_BENCH_TMP:-/var/tmp}/pile-bench-prec-XXXXXX")
trap 'rm -rf "$TMP"' EXIT
"$BUILD/preprocess/pile-prep" -q --force -o "$TMP/shards" -L "$SEQ" -j "$(nproc)" "$CORPUS/train" "$CORPUS/val.jsonl.zst"

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
bt=$(grep -o '"name": "buildtype", "value": "[a-z]*"' "$BUILD/meson-info/intro-buildoptions.json" | sed 's/.*"value": "//; s/"$//')
echo "commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $bt build; bytes tokenizer, batch $BATCH x seq $SEQ, $THREADS thread(s), $STEPS steps per run (median after $WARM), median of $REPEAT runs"
echo

# one run: "median-ms/step,cpu-seconds"
run_ms() {
    rm -rf "$TMP/ck"
    /usr/bin/time -f "%U %S" -o "$TMP/time" "$BUILD/trainer/pile-trainer" train --data "$TMP/shards" --checkpoint_dir "$TMP/ck" --model "$1" \
        --precision "$2" --batch_size "$BATCH" --max_length "$SEQ" --max_steps "$STEPS" --eval_interval 1000000 \
        --eval_rows 1 --threads "$THREADS" --learning_rate 3e-4 >/dev/null 2>"$TMP/err" || { cat "$TMP/err" >&2; exit 1; }
    echo "$(python3 "$ROOT/bench/step_ms.py" "$TMP/ck/metrics.jsonl" "$WARM"),$(awk '{ print $1 + $2 }' "$TMP/time")"
}
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

echo "| model | precision | ms/step | tokens/s | CPU s per run | CPU time / fp32's | runs (ms/step,CPU s) |"
echo "|---|---|---:|---:|---:|---:|---|"
for m in $MODELS; do
    runs=""
    for r in $(seq "$REPEAT"); do
        for p in $PRECISIONS; do runs="$runs $p:$(run_ms "$m" "$p")"; done
    done
    base=
    for p in $PRECISIONS; do
        list=$(echo $runs | tr ' ' '\n' | sed -n "s/^$p://p" | tr '\n' ' ')
        med=$(echo "$list" | tr ' ' '\n' | cut -d, -f1 | tr '\n' ' ' | median)
        cpu=$(echo "$list" | tr ' ' '\n' | grep , | cut -d, -f2 | tr '\n' ' ' | median)
        [ -n "$base" ] || base=$cpu
        awk -v m="$m" -v p="$p" -v t="$med" -v c="$cpu" -v b="$base" -v bt=$((BATCH * SEQ)) -v l="$list" \
            'BEGIN { printf "| %s | %s | %.1f | %.0f | %.2f | %.2f | %s|\n", m, p, t, bt / t * 1000, c, c / b, l }'
    done
done
