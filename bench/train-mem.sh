#!/bin/sh
# Peak memory and speed of pile-trainer at long context: GPT-2 (124M) on
# shards of the GPT-2 tokenizer, full training steps (forward, backward,
# clipping, AdamW) with --doc-mask as README's command for the real Pile,
# for each "BATCHxLENGTH:RECOMPUTE" setting, with the build under test and,
# when given, an older build side by side (the older one runs only
# recompute "none": it may not have the flag). Per run: peak resident
# memory, minor page faults, user and system time (/usr/bin/time -v), and
# tokens/s from the median step time in metrics.jsonl after the first
# step. A run is held to the machine's memory with `ulimit -v`, so one
# that cannot fit fails at its first allocation (its message is shown)
# instead of calling the OOM killer. Prints a Markdown table for
# bench/RESULTS.md.
#
#   bench/train-mem.sh [BUILD_DIR [OLD_BUILD_DIR]]   (default: build-bench-train beside the sources)
# Env: PILE_BENCH_CONFIGS (default "8x1024:none 8x2048:none 8x2048:gelu
# 8x2048:block"), PILE_BENCH_STEPS (optimizer steps per run, default 3),
# PILE_BENCH_MODEL (gpt2), PILE_BENCH_CORPUS (.jsonl(.zst) files, default
# ../shared/corpus/train/00.jsonl.zst and val.jsonl.zst), PILE_BENCH_THREADS
# (0: every core), PILE_BENCH_TMP (work folder, default under /var/tmp).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build-bench-train}
OLD=${2:-}
SHARED=${PILE_SHARED:-$ROOT/../shared}
CONFIGS=${PILE_BENCH_CONFIGS:-8x1024:none 8x2048:none 8x2048:gelu 8x2048:block}
STEPS=${PILE_BENCH_STEPS:-3}
MODEL=${PILE_BENCH_MODEL:-gpt2}
CORPUS=${PILE_BENCH_CORPUS:-$SHARED/corpus/train/00.jsonl.zst $SHARED/corpus/val.jsonl.zst}
THREADS=${PILE_BENCH_THREADS:-0}

if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" "$ROOT" --buildtype=release >/dev/null
fi
ninja -C "$BUILD" preprocess/pile-prep trainer/pile-trainer >&2
[ -z "$OLD" ] || ninja -C "$OLD" trainer/pile-trainer >&2
TOKENIZER=$SHARED/fixtures/gpt2
[ -f "$TOKENIZER/encoder.json" ] || { echo "bench/train-mem.sh: no GPT-2 tokenizer in $TOKENIZER" >&2; exit 1; }
TMP=$(mktemp -d "${PILE_BENCH_TMP:-/var/tmp}/pile-bench-mem-XXXXXX")
trap 'rm -rf "$TMP"' EXIT
mem_kb=$(awk '/MemTotal/ {print $2}' /proc/meminfo)

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, $((mem_kb / 1048576)) GiB (ulimit -v $mem_kb KiB per run); load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'); model $MODEL, $STEPS steps per run, --doc-mask, threads $THREADS; new: $BUILD${OLD:+; old: $OLD}"
echo
echo "| build | batch x length | recompute | peak RSS GiB | tokens/s | step s | minor faults | user s | sys s | note |"
echo "|---|---|---|---:|---:|---:|---:|---:|---:|---|"

# run LABEL TRAINER B T RECOMPUTE
run() {
    label=$1 tr=$2 b=$3 t=$4 rc=$5
    sh=$TMP/shards-$t
    if [ ! -d "$sh" ]; then
        # shellcheck disable=SC2086
        "$BUILD/preprocess/pile-prep" -q -o "$sh" -L "$t" -t "$TOKENIZER" $CORPUS >&2
    fi
    rm -rf "$TMP/ck"
    flag=
    [ "$rc" = none ] || flag="--recompute $rc"
    # shellcheck disable=SC2086
    if (ulimit -v "$mem_kb" && /usr/bin/time -v -o "$TMP/time" "$tr" train --data "$sh" --checkpoint_dir "$TMP/ck" \
        --model "$MODEL" --batch_size "$b" --max_length "$t" --max_steps "$STEPS" --doc-mask --eval_rows 8 \
        --threads "$THREADS" $flag >/dev/null 2>"$TMP/err"); then
        ms=nan
        [ "$STEPS" -lt 2 ] || ms=$(python3 "$ROOT/bench/step_ms.py" "$TMP/ck/metrics.jsonl" 0)
        note=
    else
        ms=nan
        note="did not run: $(grep -v '^Command' "$TMP/err" | tail -n 1 | cut -c1-160)"
    fi
    rss=$(awk -F': ' '/Maximum resident/ {printf "%.2f", $2 / 1048576}' "$TMP/time")
    flt=$(awk -F': ' '/Minor/ {print $2}' "$TMP/time")
    usr=$(awk -F': ' '/User time/ {print $2}' "$TMP/time")
    sys=$(awk -F': ' '/System time/ {print $2}' "$TMP/time")
    # tokens/s from the unrounded step time (a step of 0.35 s printed as 0.3 gave 17% too many)
    step=$(awk -v s="$ms" 'BEGIN { if (s == "nan") print "-"; else printf "%.2f", s / 1000 }')
    tps=$(awk -v s="$ms" -v n=$((b * t)) 'BEGIN { if (s == "nan") print "-"; else printf "%.0f", n / s * 1000 }')
    echo "| $label | $b x $t | $rc | $rss | $tps | $step | $flt | $usr | $sys | $note |"
}

for c in $CONFIGS; do
    bt=${c%%:*} rc=${c#*:}
    b=${bt%%x*} t=${bt#*x}
    [ -z "$OLD" ] || [ "$rc" != none ] || run old "$OLD/trainer/pile-trainer" "$b" "$t" none
    run new "$BUILD/trainer/pile-trainer" "$b" "$t" "$rc"
done
