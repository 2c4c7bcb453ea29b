#!/bin/sh
# What checking every row against its checksum (shard format version 2)
# costs, against the same shards in version 1 (no row checksums), side by
# side in one run. Prints Markdown for bench/RESULTS.md:
#  1. pile_shard_check_row alone over a shard: GB/s of row bytes and ns a
#     row, the first time (hashing) and again (from the record), for rows of
#     2048 tokens (pile-prep's default max_length) and 256;
#  2. the trainer's loader: ns per sample of pile_data_sample in the first
#     epoch (every row read for the first time, so checked), version 2 vs 1
#     (1 and 2 are medians over chunks of 64: the machine is shared);
#  3. training steps: pile-trainer ms/step (tiny and small, batch 8 x 256,
#     median after WARM of STEPS steps, median of REPEAT runs) on version 2
#     and version 1 shards, alternating, and the check's share of a step
#     computed from 2 (samples per step x added ns per sample / ms per step);
#  4. pile-dump --verify wall time on version 2 vs version 1 (best of 5);
#  5. the writer: MB/s of token data, version 2 vs 1 (best of 3, fsync included).
#
#   bench/rowcheck.sh [BUILD_DIR]    (default: build-bench-train beside the sources, release)
# Env: PILE_BENCH_CORPUS (default data/sample), PILE_BENCH_THREADS (trainer
# threads, default 1), PILE_BENCH_STEPS (12), PILE_BENCH_WARM (2),
# PILE_BENCH_REPEAT (3), PILE_BENCH_MODELS ("tiny small"), PILE_BENCH_TMP (work
# folder, default under /var/tmp).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build-bench-train}
CORPUS=${PILE_BENCH_CORPUS:-$ROOT/data/sample}
THREADS=${PILE_BENCH_THREADS:-1}
STEPS=${PILE_BENCH_STEPS:-12}
WARM=${PILE_BENCH_WARM:-2}
REPEAT=${PILE_BENCH_REPEAT:-3}
MODELS=${PILE_BENCH_MODELS:-tiny small}
BATCH=8
SEQ=256

if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" "$ROOT" --buildtype=release >/dev/null
fi
ninja -C "$BUILD" preprocess/pile-prep trainer/pile-trainer tools/pile-dump bench/bench_rowcheck tests/shard_tool >&2
PREP=$BUILD/preprocess/pile-prep
TRAINER=$BUILD/trainer/pile-trainer
DUMP=$BUILD/tools/pile-dump
BR=$BUILD/bench/bench_rowcheck
STOOL=$BUILD/tests/shard_tool

TMP=$(mktemp -d "${PILE_BENCH_TMP:-/var/tmp}/pile-bench-rowcheck-XXXXXX")
trap 'rm -rf "$TMP"' EXIT
for L in 2048 256; do
    "$PREP" -q --force -o "$TMP/v2-$L" -L "$L" -j "$(nproc)" "$CORPUS/train" "$CORPUS/val.jsonl.zst"
    cp -r "$TMP/v2-$L" "$TMP/v1-$L"
    "$STOOL" to-v1 "$TMP/v1-$L"/*.shard
done

val() { sed -n "s/^$1 //p" "$2"; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
bt=$(grep -o '"name": "buildtype", "value": "[a-z]*"' "$BUILD/meson-info/intro-buildoptions.json" | sed 's/.*"value": "//; s/"$//')
echo "commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $bt build; corpus $CORPUS (bytes tokenizer, 2-byte tokens)"
echo

echo "| check_row over a shard | rows | row bytes | first: GB/s | first: ns/row | again: ns/row |"
echo "|---|---:|---:|---:|---:|---:|"
for L in 2048 256; do
    "$BR" check "$TMP/v2-$L/train-00000.shard" > "$TMP/c"
    echo "| max_length $L | $(val first_rows "$TMP/c") | $(val first_row_bytes "$TMP/c") | $(val first_gb_per_s "$TMP/c") | $(val first_ns_per_row "$TMP/c") | $(val again_ns_per_row "$TMP/c") |"
done
echo

"$BR" samples "$TMP/v2-$SEQ" "$TMP/v1-$SEQ" "$SEQ" 20000 > "$TMP/s"
check_ns=$(val check_ns_per_sample "$TMP/s")
echo "pile_data_sample, the first $(val samples "$TMP/s") samples of the first epoch, $SEQ tokens each (medians over chunks of 64): version 2 $(val v2_ns_per_sample "$TMP/s") ns, version 1 $(val v1_ns_per_sample "$TMP/s") ns a sample; checking adds $check_ns ns"
echo

# ms/step of one pile-trainer run (median after WARM), from metrics.jsonl
ours() {
    rm -rf "$TMP/ck"
    "$TRAINER" train --data "$1" --checkpoint_dir "$TMP/ck" --model "$2" --batch_size "$BATCH" \
        --max_length "$SEQ" --max_steps "$STEPS" --eval_interval 1000000 --eval_rows 1 --threads "$THREADS" \
        --learning_rate 3e-4 >/dev/null 2>"$TMP/err" || { cat "$TMP/err" >&2; exit 1; }
    python3 "$ROOT/bench/step_ms.py" "$TMP/ck/metrics.jsonl" "$WARM"
}
echo "| model | threads | ms/step, version 2 | ms/step, version 1 | v2 / v1 | checking's share of a step (from the loader) | runs (v2; v1) |"
echo "|---|---:|---:|---:|---:|---:|---|"
for m in $MODELS; do
    a= b=
    for r in $(seq "$REPEAT"); do
        a="$a $(ours "$TMP/v2-$SEQ" "$m")"
        b="$b $(ours "$TMP/v1-$SEQ" "$m")"
    done
    a=$(echo $a) b=$(echo $b)
    am=$(echo "$a" | median)
    bm=$(echo "$b" | median)
    awk -v m="$m" -v th="$THREADS" -v a="$am" -v b="$bm" -v c="$check_ns" -v n="$BATCH" -v ra="$a" -v rb="$b" 'BEGIN {
        printf "| %s | %s | %.1f | %.1f | %.3f | %.4f%% | %s; %s |\n", m, th, a, b, a / b, 100 * n * c / 1e6 / a, ra, rb }'
done
echo

best5() { # CMD...: best wall milliseconds of 5 runs, which must succeed
    best=
    for r in 1 2 3 4 5; do
        s=$(date +%s%N)
        "$@" >/dev/null 2>"$TMP/err" || { cat "$TMP/err" >&2; exit 1; }
        e=$(date +%s%N)
        best=$(echo "$best $(((e - s) / 1000))" | tr ' ' '\n' | grep . | sort -g | head -1)
    done
    awk -v us="$best" 'BEGIN { printf "%.1f", us / 1000 }'
}
# the shard alone: the version 1 copies no longer match the manifest's sizes
f=train-00000.shard
mb=$(du -m "$TMP/v2-2048/$f" | cut -f1)
t2=$(best5 "$DUMP" --verify "$TMP/v2-2048/$f")
t1=$(best5 "$DUMP" --verify "$TMP/v1-2048/$f")
echo "pile-dump --verify of $f, max_length 2048 ($mb MB): version 2 $t2 ms, version 1 $t1 ms (best of 5)"
"$BR" write "$TMP" 40000 2048 > "$TMP/w"
echo "writer, 40000 rows of 2048 tokens (164 MB): version 2 $(val v2_mb_per_s "$TMP/w") MB/s, version 1 $(val v1_mb_per_s "$TMP/w") MB/s (best of 3, fsync included)"
