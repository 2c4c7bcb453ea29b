#!/bin/sh
# The packing thread's, the workers' copies' and the shard writer's
# background thread's CPU seconds (the `pack` + `write`, `copy` and
# `background-write` figures of pile-prep's `stage CPU` summary line), and
# the tokenizer's, for two pile-prep binaries
# run alternately on the same inputs (so that a loaded machine weighs on both
# alike), one line per run, then the medians. CPU time, not wall time: it is
# what a machine shared with other work does not inflate much.
#
#   bench/prep_pack.sh NEW OLD REPEATS PILE-PREP-ARGS...
#   e.g. bench/prep_pack.sh build-rel/preprocess/pile-prep main/pile-prep 5 -j 1 -t gpt2 \
#            /var/tmp/ps-corpus/train /var/tmp/ps-corpus/val.jsonl.zst
# A binary that does not report background-write or copy (its packing thread
# copies) shows "-" there.
set -eu
[ $# -ge 4 ] || { sed -n '2,13p' "$0" >&2; exit 2; }
NEW=$1 OLD=$2 REPEATS=$3
shift 3
TMP=$(mktemp -d "${TMPDIR:-/var/tmp}/pile-bench-pack-XXXXXX")
trap 'rm -rf "$TMP"' EXIT
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores; load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "pile-prep --force -o OUT $*"
echo
echo "| run | binary | packing thread (pack + write) | copies (workers) | background writer | tokenize |"
echo "|---|---|---|---|---|---|"
rep=1
while [ "$rep" -le "$REPEATS" ]; do
    for which in new old; do
        bin=$NEW
        [ $which = old ] && bin=$OLD
        rm -rf "$TMP/out"
        "$bin" --force -o "$TMP/out" "$@" >/dev/null 2>"$TMP/err" || { sed 's/^/# /' "$TMP/err" >&2; exit 1; }
        awk -v rep="$rep" -v which="$which" '/^stage CPU/ {
            gsub(/[,()]/, ""); p = w = t = ""; g = c = "-"
            for (i = 1; i <= NF; i++) {
                if ($i == "pack") p = $(i + 1); if ($i == "write") w = $(i + 1)
                if ($i == "background-write") g = $(i + 1); if ($i == "tokenize" && t == "") t = $(i + 1)
                if ($i == "copy") c = $(i + 1)
            }
            printf "| %d | %s | %.3f | %s | %s | %s |\n", rep, which, p + w, c, g, t }' "$TMP/err" | tee -a "$TMP/rows"
    done
    rep=$((rep + 1))
done
echo
awk -F'|' 'function median(b, k,   m, i, j, t) { m = n[b]
              for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (v[b, k, j] < v[b, k, i]) { t = v[b, k, i]; v[b, k, i] = v[b, k, j]; v[b, k, j] = t }
              return m % 2 ? v[b, k, (m + 1) / 2] : (v[b, k, m / 2] + v[b, k, m / 2 + 1]) / 2 }
    { gsub(/ /, ""); n[$3]++; v[$3, 1, n[$3]] = $4; v[$3, 2, n[$3]] = $5 + 0; c[$3] = $5 != "-" }
    END { for (b in n) printf "median packing thread, %s: %.3f s%s\n", b, median(b, 1),
                              c[b] ? sprintf("; copies on the workers: %.3f s", median(b, 2)) : "" }' "$TMP/rows" | sort
