#!/bin/sh
# pile-prep's input formats, measured side by side on the same text:
#  1. the gzip decoders considered (zlib's inflate streamed, as common/lines.c
#     reads; libdeflate's whole-buffer decoder; gzip(1); zstd for scale):
#     MB/s of output and the memory each holds (bench/inflate_bench.c);
#  2. pile-prep on that text as .jsonl, .jsonl.gz, .jsonl.zst and a zstd
#     --long=31 stream: wall time, the read stage and peak RSS, at -j 1 and
#     -j 2 (the per-thread memory and what the decoder adds).
# Prints Markdown tables for bench/RESULTS.md. Release build; run once, on a
# quiet machine.
#
#   bench/inputs.sh [BUILD_DIR]     (default: build-bench-prep beside the sources)
# Env: PILE_SHARED (default ../shared), PILE_BENCH_MB (JSONL MB to build from the
# corpus's train split, default 100), PILE_BENCH_TMP (default /var/tmp).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build-bench-prep}
SHARED=${PILE_SHARED:-$ROOT/../shared}
MB=${PILE_BENCH_MB:-100}

if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" "$ROOT" --buildtype=release >/dev/null
fi
ninja -C "$BUILD" preprocess/pile-prep >&2
PREP=$BUILD/preprocess/pile-prep
for t in /usr/bin/time zstd gzip cc; do
    command -v $t >/dev/null || { echo "bench/inputs.sh: needs $t" >&2; exit 1; }
done

TMP=$(mktemp -d "${PILE_BENCH_TMP:-/var/tmp}/pile-bench-inputs-XXXXXX")
trap 'rm -rf "$TMP"' EXIT
cc -O2 -o "$TMP/inflate_bench" "$ROOT/bench/inflate_bench.c" -lz -lzstd -ldl

# the corpus's train text, repeated to about MB megabytes
for f in "$SHARED"/corpus/train/*.jsonl.zst; do zstd -dcq "$f"; done > "$TMP/one.jsonl"
one=$(wc -c < "$TMP/one.jsonl")
: > "$TMP/x.jsonl"
while [ "$(wc -c < "$TMP/x.jsonl")" -lt $((MB * 1000000)) ]; do cat "$TMP/one.jsonl" >> "$TMP/x.jsonl"; done
gzip -6 -c "$TMP/x.jsonl" > "$TMP/x.jsonl.gz"
zstd -q -3 -c "$TMP/x.jsonl" > "$TMP/x.jsonl.zst"
zstd -q --long=31 -c < "$TMP/x.jsonl" > "$TMP/long.jsonl.zst"

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/Mem:/ {print $2}') GiB; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "pile-prep $("$PREP" --version | cut -d' ' -f2), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'); zlib $(cc -E -dM -include zlib.h -x c /dev/null | awk '/define ZLIB_VERSION/ {print $3}'), $(zstd --version | head -1)"
echo "text: the corpus train split ($one bytes) repeated to $(wc -c < "$TMP/x.jsonl") bytes; .gz by gzip -6 ($(wc -c < "$TMP/x.jsonl.gz") bytes), .zst by zstd -3 ($(wc -c < "$TMP/x.jsonl.zst") bytes)"
echo
echo "| decoder | MB/s of JSONL | x zlib | memory held MiB |"
echo "|---|---|---|---|"
"$TMP/inflate_bench" "$TMP/x.jsonl.gz" "$TMP/x.jsonl.zst" 5 | tail -n +2 > "$TMP/dec.tsv"
zl=$(awk -F'\t' 'NR == 1 {print $2}' "$TMP/dec.tsv")
awk -F'\t' -v zl="$zl" '{ printf "| %s | %s | %.2f | %s |\n", $1, $2, $2 / zl, $3 }' "$TMP/dec.tsv"
best=1e9
for r in 1 2 3; do
    s=$(date +%s.%N); gzip -dc "$TMP/x.jsonl.gz" > /dev/null; e=$(date +%s.%N)
    best=$(echo "$s $e $best" | awk '{t = $2 - $1; print (t < $3 ? t : $3)}')
done
echo "$best" | awk -v b="$(wc -c < "$TMP/x.jsonl")" -v zl="$zl" '{ printf "| gzip -dc (its own inflate) | %.1f | %.2f | - |\n", b / 1e6 / $1, b / 1e6 / $1 / zl }'
echo
echo "| input | threads | wall s | JSONL MB/s | read stage s | decompressor MiB | peak RSS MiB |"
echo "|---|---|---|---|---|---|---|"
for input in x.jsonl x.jsonl.gz x.jsonl.zst long.jsonl.zst; do
    mkdir -p "$TMP/in-$input"
    ln -sf "$TMP/$input" "$TMP/in-$input/$input"
    for j in 1 2; do
        rm -rf "$TMP/out"
        /usr/bin/time -v "$PREP" --force -o "$TMP/out" -j "$j" --zstd-memory 2048 "$TMP/in-$input" >/dev/null 2>"$TMP/err" ||
            { sed 's/^/# /' "$TMP/err" >&2; exit 1; }
        awk -v input="$input" -v j="$j" '
            /wall time/ { for (i = 1; i <= NF; i++) { if ($i == "time") wall = $(i + 1); if ($i == "of" && $(i + 1) == "JSONL") mbs = $(i - 2) } }
            /^stage time/ { gsub(/[,()%]/, ""); for (i = 1; i <= NF; i++) if ($i == "read") rd = $(i + 1) }
            /^memory:/ { for (i = 1; i <= NF; i++) if ($i == "to" && $(i - 1) == "up" && dec == "") dec = $(i + 1) }
            /Maximum resident set size/ { rss = $NF / 1024 }
            END { printf "| %s | %s | %s | %s | %s | %s | %.0f |\n", input, j, wall, mbs, rd, dec, rss }' "$TMP/err"
    done
done
