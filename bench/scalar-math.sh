#!/bin/sh
# The CPU backend's loops over the element functions of
# trainer/cpu/scalar_math.h (GELU forward and backward, dropout, and
# attention, whose softmax is its expf), two builds side by side: CPU time
# (so that a shared machine's load stretches it less than wall time), the
# best of REPEAT calls, old and new alternating ROUNDS times, the median
# of the rounds per build and their ratio. For a change that moves these
# functions: the loops must keep their speed.
#
#   bench/scalar-math.sh NEW_BUILD_DIR OLD_BUILD_DIR
# (release builds; -Dcuda=disabled is enough: only libpile_trainer.a and
# libpile_common.a are used). Env: PILE_BENCH_N (elements, default 2^23),
# PILE_BENCH_THREADS (1), PILE_BENCH_REPEAT (5), PILE_BENCH_ROUNDS (5).
set -eu
. "$(dirname "$0")/driver.sh"
NEW=$1
OLD=$2
N=${PILE_BENCH_N:-8388608}
THREADS=${PILE_BENCH_THREADS:-1}
REPEAT=${PILE_BENCH_REPEAT:-5}
ROUNDS=${PILE_BENCH_ROUNDS:-5}
for b in "$NEW" "$OLD"; do ninja -C "$b" trainer/libpile_trainer.a common/libpile_common.a >&2; done
TMP=$(mktemp -d "${TMPDIR:-/tmp}/pile-bench-scalar-XXXXXX")
trap 'rm -rf "$TMP"' EXIT
cat > "$TMP/drv.c" <<'EOF'
#include "backend.h"
#include "bench_driver.h"

int main(int argc, char **argv)
{
    size_t n = (size_t)atoll(argv[1]);
    int threads = atoi(argv[2]), reps = atoi(argv[3]);
    pile_backend *be;
    pile_err err;
    if (pile_backend_open(&be, "cpu", threads, &err) < 0) return 1;
    float *h = malloc(n * 4);
    srand(1);
    for (size_t i = 0; i < n; i++) h[i] = 8.0f * ((float)rand() / RAND_MAX - 0.5f);
    pile_tensor x = pile_backend_alloc(be, PILE_DTYPE_F32, n), y = pile_backend_alloc(be, PILE_DTYPE_F32, n);
    pile_tensor g = pile_backend_alloc(be, PILE_DTYPE_F32, n);
    pile_backend_upload(be, x, h, n);
    pile_backend_upload(be, y, h, n);
    pile_backend_upload(be, g, h, n);
    /* attention: GPT-2's width and heads, n / (3 C) positions of T 256 */
    const int C = 768, NH = 12, T = 256, B = (int)(n / (3 * (size_t)C) / T) > 0 ? (int)(n / (3 * (size_t)C) / T) : 1;
    const size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
    pile_tensor q = pile_backend_alloc(be, PILE_DTYPE_F32, nq), o = pile_backend_alloc(be, PILE_DTYPE_F32, no);
    pile_tensor dq = pile_backend_alloc(be, PILE_DTYPE_F32, nq);
    pile_tensor sv = pile_backend_alloc(be, PILE_DTYPE_U8, pile_backend_attention_saved_bytes(be, B, T, C, NH));
    pile_tensor sc = pile_backend_alloc(be, PILE_DTYPE_U8, pile_backend_attention_scratch_bytes(be, B, T, C, NH));
    pile_tensor none;
    memset(&none, 0, sizeof none);
    pile_backend_upload(be, q, h, nq);
    double gf = 1e30, gb = 1e30, dr = 1e30, af = 1e30, ab = 1e30;
    BEST(gf, pile_backend_gelu_fwd(be, y, x, n));
    BEST(gb, pile_backend_gelu_bwd(be, g, x, y, n));
    BEST(dr, pile_backend_dropout(be, y, n, 0.1f, 42));
    BEST(af, pile_backend_attention_fwd(be, o, sv, sc, q, none, B, T, C, NH));
    BEST(ab, pile_backend_attention_bwd(be, dq, sc, o, q, o, sv, none, B, T, C, NH));
    if (pile_backend_sync(be, &err) < 0) return 1;
    printf("%.3f %.3f %.3f %.3f %.3f\n", gf * 1e3, gb * 1e3, dr * 1e3, af * 1e3, ab * 1e3);
    return 0;
}
EOF
bench_driver_build "$NEW" "$TMP/drv.c" "$TMP/new"
bench_driver_build "$OLD" "$TMP/drv.c" "$TMP/old"
: > "$TMP/new.txt"
: > "$TMP/old.txt"
for r in $(seq "$ROUNDS"); do
    "$TMP/old" "$N" "$THREADS" "$REPEAT" >> "$TMP/old.txt"
    "$TMP/new" "$N" "$THREADS" "$REPEAT" >> "$TMP/new.txt"
done
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "n $N elements, $THREADS thread(s), CPU ms, best of $REPEAT calls, median of $ROUNDS alternating rounds; old: $OLD, new: $NEW"
echo
echo "| op | old ms | new ms | new / old |"
echo "|---|---:|---:|---:|"
k=1
for op in gelu_fwd gelu_bwd dropout "attention_fwd (T 256)" "attention_bwd (T 256)"; do
    o=$(cut -d' ' -f$k "$TMP/old.txt" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
    w=$(cut -d' ' -f$k "$TMP/new.txt" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
    awk -v op="$op" -v o="$o" -v w="$w" 'BEGIN { printf "| %s | %.2f | %.2f | %.3f |\n", op, o, w, w / o }'
    k=$((k + 1))
done
