#!/bin/sh
# pile-prep's line reader alone, one thread, CPU seconds (bench_lines.c):
# every line by pile_lines_next; the same with each line copied into a chunk
# (pile-prep's readers before the block reader); block mode, decoded straight
# into rotating 1 MiB blocks (the readers now); and zstd's own decoding into
# one 128 KiB buffer (what `zstd -dc` does), REPEATS times, the modes
# interleaved, so a loaded machine slows each alike. Prints Markdown for
# bench/RESULTS.md: the least and the median CPU seconds of each mode, its
# MB/s of JSONL and what it costs over zstd alone.
#
#   bench/lines.sh [BUILD_DIR]      (default: build-bench-prep beside the sources, release)
# Env: PILE_BENCH_CORPUS (default /var/tmp/pile-corpus-300, as bench/prep.sh;
# its train/*.zst and val.jsonl.zst are read), PILE_BENCH_REPEATS (default 5).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build-bench-prep}
BIG=${PILE_BENCH_CORPUS:-/var/tmp/pile-corpus-300}
REPEATS=${PILE_BENCH_REPEATS:-5}
[ -d "$BIG/train" ] || { echo "bench/lines.sh: no corpus at $BIG (bench/prep.sh builds one)" >&2; exit 1; }
if [ ! -f "$BUILD/build.ninja" ]; then
    meson setup "$BUILD" "$ROOT" --buildtype=release >/dev/null
fi
ninja -C "$BUILD" bench/bench_lines >&2
B=$BUILD/bench/bench_lines
TMP=$(mktemp)
trap 'rm -f "$TMP"' EXIT
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'); load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'); $REPEATS repeats, modes interleaved; $(basename "$BIG"): train/* and val.jsonl.zst"
rep=1
while [ $rep -le "$REPEATS" ]; do
    for m in zstd lines copy block; do "$B" $m "$BIG"/train/* "$BIG/val.jsonl.zst" >>"$TMP"; done
    rep=$((rep + 1))
done
echo
echo "| mode | CPU s, least | CPU s, median | MB/s of JSONL (median) | over zstd alone (median) | bytes handled |"
echo "|---|---|---|---|---|---|"
awk '{ n[$1]++; v[$1, n[$1]] = $2; b[$1] = $3 }
    function med(m,   k, i, j, t, a) { k = n[m]; for (i = 1; i <= k; i++) a[i] = v[m, i]
        for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2 }
    function least(m,   i, x) { x = v[m, 1]; for (i = 2; i <= n[m]; i++) if (v[m, i] < x) x = v[m, i]; return x }
    END { z = med("zstd"); mb = b["zstd"] / 1e6
          split("zstd lines copy block", order, " ")
          for (o = 1; o <= 4; o++) { m = order[o]; if (!(m in n)) continue
              printf "| %s | %.3f | %.3f | %.0f | %+.3f s | %.1f MB |\n", m, least(m), med(m), mb / med(m), med(m) - z, b[m] / 1e6 } }' "$TMP"
