#!/bin/sh
# What checkpoint checksums cost: a GPT-2-sized checkpoint (the `gpt2`
# preset, 12 x 768, on byte-level shards: about 86M parameters, so 0.34 GB of
# weights and 0.68 GB of AdamW moments) is written by one training step, then
# pile_checkpoint_verify (what --resume, eval and sample run first: every
# file read and hashed with XXH3-128) is timed on it (tests/test_trainer_io
# --time-verify). A save hashes the same files once more right after writing
# them, so it pays the same. Side by side in the same run, on the same
# files, all with a warm page cache: a plain read (cat to /dev/null), the
# floor any check pays, and sha256sum (what most users check downloads with).
# Each time is the median of REPEAT runs; the wall time of the training run
# (one step and two saves, model init included) for scale.
#
#   bench/checkpoint.sh [BUILD_DIR]     (default: build beside the sources)
# Env: PILE_BENCH_REPEAT (5), PILE_BENCH_THREADS (every core), PILE_BENCH_TMP
# (work folder, default under /var/tmp).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
REPEAT=${PILE_BENCH_REPEAT:-5}
THREADS=${PILE_BENCH_THREADS:-$(nproc)}
ninja -C "$BUILD" preprocess/pile-prep trainer/pile-trainer tests/test_trainer_io >&2
PREP=$BUILD/preprocess/pile-prep
TRAINER=$BUILD/trainer/pile-trainer
TIO=$BUILD/tests/test_trainer_io
TMP=$(mktemp -d "${PILE_BENCH_TMP:-/var/tmp}/pile-bench-ckpt-XXXXXX")
trap 'rm -rf "$TMP"' EXIT

"$PREP" -q -o "$TMP/shards" -L 64 -t bytes "$ROOT/data/sample"
start=$(date +%s.%N)
"$TRAINER" --data "$TMP/shards" --model gpt2 --max_steps 1 --batch_size 1 --eval_rows 1 --threads "$THREADS" \
    --checkpoint_dir "$TMP/run" > /dev/null 2> "$TMP/train.err" || { cat "$TMP/train.err" >&2; exit 1; }
end=$(date +%s.%N)
CK=$TMP/run/step-0000001
bytes=$(find "$CK" -type f ! -name checksums.json -printf '%s\n' | awk '{ s += $1 } END { print s }')

# the median of REPEAT numbers a command prints, one per run
median_of() {
    i=0
    while [ $i -lt "$REPEAT" ]; do
        "$@"
        i=$((i + 1))
    done | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}
# the wall time of a command in seconds
timed() {
    a=$(date +%s.%N)
    "$@" > /dev/null
    b=$(date +%s.%N)
    echo "$a $b" | awk '{ printf "%.4f\n", $2 - $1 }'
}
files() { find "$CK" -type f ! -name checksums.json -print0; }
cat_all() { files | xargs -0 cat; }
sha_all() { files | xargs -0 sha256sum; }

cat_all > /dev/null # warm the page cache
load=$(cut -d' ' -f1-3 /proc/loadavg)
t_verify=$(median_of "$TIO" --time-verify "$CK")
t_cat=$(median_of timed cat_all)
t_sha=$(median_of timed sha_all)

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; load average at start: $load"
echo "commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'); checkpoint of $bytes bytes; median of $REPEAT runs, warm cache"
awk -v b="$bytes" -v v="$t_verify" -v c="$t_cat" -v s="$t_sha" \
    -v tr="$(echo "$start $end" | awk '{ print $2 - $1 }')" 'BEGIN {
    gb = b / 1e9
    printf "\n| measure | seconds | GB/s |\n|---|---:|---:|\n"
    printf "| pile_checkpoint_verify (XXH3-128) | %.3f | %.2f |\n", v, gb / v
    printf "| read only (cat) | %.3f | %.2f |\n| sha256sum | %.3f | %.2f |\n", c, gb / c, s, gb / s
    printf "\nverify / read only: %.2fx; verify / sha256sum: %.3fx; ", v / c, v / s
    printf "the training run that wrote it (1 step, 2 saves): %.1f s\n", tr
}'
