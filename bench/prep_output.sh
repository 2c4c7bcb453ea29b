#!/bin/sh
# pile-prep's output-side costs that grow with what a run holds, not with
# its throughput:
#  1. many tiny shards (--shard-size of one 64-token row): wall, user and
#     system time for 1,000 to 8,000 shards, and how many times the manifest
#     was written (counted with strace, when present). A manifest rewritten
#     whole after every shard makes this quadratic; the ratio column (user
#     time per shard, relative to the smallest run) shows whether it is.
#     Wall time is mostly fsync, system time mostly the file system
#     creating files (ext4's inode search grows as files come and go):
#     both depend on the disk and the machine's load more than on pile-prep.
#  2. one huge document: peak RSS of a run over a single document of N MB,
#     and (peak - baseline) / N, the memory per byte of one document, for
#     the byte tokenizer (a document of words) and GPT-2 (one single 'word',
#     the worst case for BPE).
#  3. the check of kept files on a rerun: the time to re-read and verify
#     every finished shard, per GB.
# Prints Markdown for bench/RESULTS.md. Release build; run on a quiet machine.
#
#   bench/prep_output.sh [BUILD_DIR]      (default: build-bench-prep beside the sources)
# Env: PILE_SHARED (default ../shared), PILE_BENCH_TMP (default /var/tmp),
# PILE_BENCH_SHARDS (default "1000 2000 4000 8000"), PILE_BENCH_DOC_MB (default "5 20 60"),
# PILE_BENCH_OLD: another pile-prep binary (say, an earlier commit's release build) to run
# the many-shards table beside this one.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build-bench-prep}
SHARED=${PILE_SHARED:-$ROOT/../shared}
SHARDS=${PILE_BENCH_SHARDS:-1000 2000 4000 8000}
DOC_MB=${PILE_BENCH_DOC_MB:-5 20 60}

if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" "$ROOT" --buildtype=release >/dev/null
fi
ninja -C "$BUILD" preprocess/pile-prep >&2
PREP=$BUILD/preprocess/pile-prep
[ -x /usr/bin/time ] || { echo "bench/prep_output.sh: needs /usr/bin/time (GNU time)" >&2; exit 1; }
TMP=$(mktemp -d "${PILE_BENCH_TMP:-/var/tmp}/pile-bench-out-XXXXXX")
trap 'rm -rf "$TMP"' EXIT

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "pile-prep $("$PREP" --version | cut -d' ' -f2), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"

# --- 1. many shards: N * 63 bytes of text in 63-byte documents (+ end-of-text = one 64-token row each)
echo
echo "| pile-prep | shards | wall s | user s | sys s | manifest writes | user ms per shard | per shard vs its first |"
echo "|---|---|---|---|---|---|---|---|"
for prep in "$PREP" ${PILE_BENCH_OLD:-}; do
    label=this
    [ "$prep" = "$PREP" ] || label=old
    first=""
    for n in $SHARDS; do
        python3 -c '
import json, sys
n = int(sys.argv[1])
for i in range(n):
    print(json.dumps({"text": ("doc %d " % i).ljust(63, "x"), "meta": {"pile_set_name": "s"}}))' "$n" > "$TMP/many.jsonl"
        rm -rf "$TMP/o"
        /usr/bin/time -f '%e %U %S' -o "$TMP/time" "$prep" -q -j 2 -o "$TMP/o" -L 64 --shard-size 0.0001220703125 "$TMP/many.jsonl"
        # manifest writes, from the renames of a second run under strace (one per shard, one per manifest write)
        writes="?"
        if command -v strace > /dev/null; then
            rm -rf "$TMP/o"
            strace -f -qq -e trace=rename -o "$TMP/strace" "$prep" -q -j 2 -o "$TMP/o" -L 64 --shard-size 0.0001220703125 "$TMP/many.jsonl"
            writes=$(grep -c 'manifest.json' "$TMP/strace")
        fi
        got=$(ls "$TMP/o" | grep -c '\.shard$')
        [ "$got" -eq "$n" ] || { echo "expected $n shards, got $got" >&2; exit 1; }
        read -r wall user sys < "$TMP/time"
        ms=$(awk -v n="$n" -v u="$user" 'BEGIN { printf "%.4f", 1000 * u / n }')
        [ -n "$first" ] || first=$ms
        awk -v l="$label" -v n="$n" -v w="$wall" -v u="$user" -v s="$sys" -v ms="$ms" -v f="$first" -v mw="$writes" 'BEGIN {
            printf "| %s | %d | %.2f | %.2f | %.2f | %s | %.3f | %.2fx |\n", l, n, w, u, s, mw, ms, (f > 0 ? ms / f : 0) }'
    done
done

# --- 2. one huge document
peak() { /usr/bin/time -f '%M' "$@" 2>&1 >/dev/null | tail -n 1; }
echo
echo "| document | tokenizer | peak RSS MiB | baseline MiB | (peak - baseline) / document |"
echo "|---|---|---|---|---|"
python3 -c 'import json; print(json.dumps({"text": "a small document"}))' > "$TMP/small.jsonl"
for tok in bytes gpt2; do
    spec=bytes
    [ $tok = gpt2 ] && spec=$SHARED/fixtures/gpt2
    rm -rf "$TMP/o"
    base=$(peak "$PREP" -q -j 2 -o "$TMP/o" -t "$spec" "$TMP/small.jsonl")
    for mb in $DOC_MB; do
        # bytes: words of text; gpt2: one word of letters (the pre-tokenizer cannot split it)
        python3 -c '
import json, sys
n = int(sys.argv[1]) << 20
if sys.argv[2] == "bytes":
    unit = "the quick brown fox jumps over the lazy dog. "
else:
    unit = "abcdefghijklmnopqrstuvwxyz"
text = (unit * (n // len(unit) + 1))[:n]
print(json.dumps({"text": text, "meta": {"pile_set_name": "one"}}))' "$mb" "$tok" > "$TMP/one.jsonl"
        rm -rf "$TMP/o"
        kb=$(peak "$PREP" -q -j 2 -o "$TMP/o" -t "$spec" "$TMP/one.jsonl")
        awk -v mb="$mb" -v tok="$tok" -v kb="$kb" -v base="$base" 'BEGIN {
            printf "| %d MB | %s | %.0f | %.0f | %.2f |\n", mb, tok, kb / 1024, base / 1024, (kb - base) / 1024 / mb }'
    done
done

# --- 3. a rerun checks every kept shard against the manifest
if [ -f "$SHARED/corpus/sample.jsonl" ]; then
    rm -rf "$TMP/o"
    cat "$SHARED/corpus/sample.jsonl" "$SHARED/corpus/sample.jsonl" "$SHARED/corpus/sample.jsonl" \
        "$SHARED/corpus/sample.jsonl" > "$TMP/big.jsonl"
    "$PREP" -q -o "$TMP/o" --shard-size 2 "$TMP/big.jsonl"
    echo
    echo "rerun of the finished job (every kept shard read and checked):"
    "$PREP" -o "$TMP/o" --shard-size 2 "$TMP/big.jsonl" 2>&1 | sed 's/^/    /'
fi
