#!/bin/sh
# pile-prep throughput and memory: MB/s of JSONL, tokens/s, peak RSS and the
# stage breakdown (read / parse / tokenize / pack+write, thread-seconds),
# at --threads 1 and 2, byte tokenizer and GPT-2, on the shared corpus and
# on a larger one made by make-corpus.sh. Prints a Markdown table for
# bench/RESULTS.md. Release build; run once, on a quiet machine.
#
#   bench/prep.sh [BUILD_DIR]      (default: build-bench-prep beside the sources)
# Env: PILE_SHARED (default ../shared), PILE_BENCH_CORPUS (default
# /var/tmp/pile-corpus-300, built with make-corpus.sh --size-mb 300 if absent),
# PILE_BENCH_THREADS (default "1 2"), PILE_BENCH_TMP (output folder, default under /var/tmp).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build-bench-prep}
SHARED=${PILE_SHARED:-$ROOT/../shared}
BIG=${PILE_BENCH_CORPUS:-/var/tmp/pile-corpus-300}
THREADS=${PILE_BENCH_THREADS:-1 2}

if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" "$ROOT" --buildtype=release >/dev/null
fi
ninja -C "$BUILD" preprocess/pile-prep >&2
PREP=$BUILD/preprocess/pile-prep
if [ ! -d "$BIG/train" ]; then
    echo "building $BIG (about 2 minutes)..." >&2
    "$SHARED/tools/make-corpus.sh" --size-mb 300 --out "$BIG" >&2
fi
[ -x /usr/bin/time ] || { echo "bench/prep.sh: needs /usr/bin/time (GNU time) for the peak RSS" >&2; exit 1; }

TMP=$(mktemp -d "${PILE_BENCH_TMP:-/var/tmp}/pile-bench-prep-XXXXXX")
trap 'rm -rf "$TMP"' EXIT

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/Mem:/ {print $2}') GiB"
bt=$(grep -o '"name": "buildtype", "value": "[a-z]*"' "$BUILD/meson-info/intro-buildoptions.json" | sed 's/.*"value": "//; s/"$//')
echo "pile-prep $("$PREP" --version | cut -d' ' -f2), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), $bt build"
echo
echo "| corpus | JSONL MB | tokenizer | threads | wall s | JSONL MB/s | Mtok/s | peak RSS MiB | read | parse | tokenize | pack+write | (read+parse+pack)/tokenize |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for corpus in "$SHARED/corpus" "$BIG"; do
    name=$(basename "$corpus")
    for tok in bytes gpt2; do
        spec=bytes
        [ $tok = gpt2 ] && spec=$SHARED/fixtures/gpt2
        for j in $THREADS; do
            out=$TMP/out
            rm -rf "$out"
            /usr/bin/time -v "$PREP" --force -o "$out" -j "$j" -t "$spec" "$corpus/train" "$corpus/val.jsonl.zst" \
                >/dev/null 2>"$TMP/err" || { sed 's/^/# /' "$TMP/err" >&2; exit 1; }
            # the summary lines: "...; wall time W s; R MB/s of JSONL (D MB/s on disk); T M tokens/s"
            # and "stage time (thread-seconds): read a, parse b, tokenize c, pack+write d (... = p% of tokenize)"
            awk -v name="$name" -v tok="$tok" -v j="$j" '
                /wall time/ {
                    for (i = 1; i <= NF; i++) {
                        if ($i == "time") wall = $(i + 1)
                        if ($i == "of" && $(i + 1) == "JSONL") mbs = $(i - 2)
                        if ($i ~ /M$/ && $(i + 1) == "tokens/s") tps = substr($i, 1, length($i) - 1)
                    }
                }
                /^stage time/ {
                    gsub(/[,()%]/, "")
                    for (i = 1; i <= NF; i++) {
                        if ($i == "read") rd = $(i + 1)
                        if ($i == "parse") ps = $(i + 1)
                        if ($i == "tokenize" && tk == "") tk = $(i + 1)
                        if ($i == "pack+write") pw = $(i + 1)
                    }
                }
                /Maximum resident set size/ { rss = $NF / 1024 }
                END {
                    share = tk > 0 ? (rd + ps + pw) / tk * 100 : 0
                    printf "| %s | %.0f | %s | %s | %s | %s | %s | %.0f | %s | %s | %s | %s | %.1f%% |\n",
                           name, wall * mbs, tok, j, wall, mbs, tps, rss, rd, ps, tk, pw, share
                }' "$TMP/err"
        done
    done
done
