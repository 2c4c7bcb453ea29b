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
# PILE_BENCH_THREADS (default "1 2"), PILE_BENCH_TMP (output folder, default under /var/tmp),
# PILE_BENCH_PERF=1: also profile one GPT-2 run at --threads 1 on the large corpus with
# `perf record --call-graph dwarf` and print each stage's share of the CPU samples
# (a sample counts as tokenizer when any frame of its stack is a tokenizer function).
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

[ "${PILE_BENCH_PERF:-0}" = 1 ] || exit 0
command -v perf >/dev/null || { echo "bench/prep.sh: PILE_BENCH_PERF=1 needs perf" >&2; exit 1; }
rm -rf "$TMP/out"
perf record -q -F 400 --call-graph dwarf,16384 -o "$TMP/perf.data" "$PREP" --force -o "$TMP/out" -j 1 \
    -t "$SHARED/fixtures/gpt2" "$BIG/train" "$BIG/val.jsonl.zst" >/dev/null 2>&1
nm --defined-only "$BUILD/tokenizer/libpile_tokenizer.a" 2>/dev/null | awk 'NF == 3 && ($2 == "t" || $2 == "T") {print $3}' \
    >"$TMP/toksyms"
echo
echo "CPU samples, GPT-2, --threads 1, $(basename "$BIG") (perf, dwarf stacks):"
echo
perf script -i "$TMP/perf.data" -F tid,ip,sym,dso 2>/dev/null | python3 -c '
import collections, re, sys
tok = set(open(sys.argv[1]).read().split()) | {"pile_encoder_encode"}
STAGES = [  # first match over the whole stack wins
    ("tokenizer", lambda s, d: s in tok or "utf8proc" in d or "pcre2" in d),
    ("JSON parse (simdjson)", lambda s, d: "simdjson" in d or s.startswith("pile_jsonl_parse")),
    ("zstd decompression", lambda s, d: "libzstd" in d),
    ("shard writer", lambda s, d: s.startswith(("pile_shard_writer", "writer_")) or "xxhash" in d),
    ("packer", lambda s, d: s.startswith(("pile__prep_packer", "concat_doc", "emit_row", "close_window", "pack_chunk"))),
    ("line reader + chunks", lambda s, d: s.startswith(("pile_lines", "reader_main", "chunk_add_line"))),
]
cnt = collections.Counter()
frames = []
def flush():
    if not frames: return
    for name, hit in STAGES:
        if any(hit(s, d) for s, d in frames):
            cnt[name] += 1
            break
    else:
        cnt["other" + (" (kernel)" if "kernel" in frames[0][1] else "")] += 1
    frames.clear()
for line in sys.stdin:
    m = re.match(r"\s+[0-9a-f]+\s+(.*?)(\+0x[0-9a-f]+)?\s+\((.*)\)$", line)
    if m: frames.append((m.group(1), m.group(3)))
    else: flush()
flush()
tot = sum(cnt.values()) or 1
t = cnt["tokenizer"] or 1
print("| stage | share of samples | share of the tokenizer |\n|---|---|---|")
for k, v in cnt.most_common():
    print(f"| {k} | {100 * v / tot:.1f}% | {100 * v / t:.1f}% |")
rest = tot - cnt["tokenizer"]
print(f"| everything but the tokenizer | {100 * rest / tot:.1f}% | {100 * rest / t:.1f}% |")
' "$TMP/toksyms"
