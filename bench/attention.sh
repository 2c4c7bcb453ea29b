#!/bin/sh
# The CPU backend's attention alone: forward and backward of GPT-2's shape
# (C 768, 12 heads) at several lengths, as CPU time (so that a shared
# machine's load stretches it less than wall time), the best of REPEAT
# calls, from a small driver compiled against a build's libpile_trainer.a.
# With OLD_BUILD_DIR, a build from before the attention took a saved
# buffer (main up to a8e3476: fwd/bwd with the [B, NH, T, T] probabilities)
# runs beside it on the same inputs. Prints a Markdown table for
# bench/RESULTS.md.
#
#   bench/attention.sh [BUILD_DIR [OLD_BUILD_DIR]]   (default: build-bench-train beside the sources)
# Env: PILE_BENCH_LENGTHS ("64 256 1024 2048"), PILE_BENCH_TOKENS (positions
# per call, B = TOKENS / T, default 2048), PILE_BENCH_THREADS (1),
# PILE_BENCH_REPEAT (5).
set -eu
. "$(dirname "$0")/driver.sh"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build-bench-train}
OLD=${2:-}
LENGTHS=${PILE_BENCH_LENGTHS:-64 256 1024 2048}
TOKENS=${PILE_BENCH_TOKENS:-2048}
THREADS=${PILE_BENCH_THREADS:-1}
REPEAT=${PILE_BENCH_REPEAT:-5}

if [ ! -f "$BUILD/build.ninja" ]; then
    # the driver links the static libraries by hand: no CUDA or MPI in them
    meson setup "$BUILD" "$ROOT" --buildtype=release -Dcuda=disabled -Dmpi=disabled >/dev/null
fi
ninja -C "$BUILD" trainer/libpile_trainer.a common/libpile_common.a >&2
[ -z "$OLD" ] || ninja -C "$OLD" trainer/libpile_trainer.a common/libpile_common.a >&2
TMP=$(mktemp -d "${TMPDIR:-/tmp}/pile-bench-att-XXXXXX")
trap 'rm -rf "$TMP"' EXIT
cat > "$TMP/drv.c" <<'EOF'
#include "backend.h"
#include "bench_driver.h"

int main(int argc, char **argv)
{
    int B = atoi(argv[1]), T = atoi(argv[2]), C = 768, NH = 12, threads = atoi(argv[3]), reps = atoi(argv[4]);
    pile_backend *be;
    pile_err err;
    if (pile_backend_open(&be, "cpu", threads, &err) < 0) return 1;
    size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
    float *h = malloc(nq * 4);
    srand(1);
    for (size_t i = 0; i < nq; i++) h[i] = (float)rand() / RAND_MAX - 0.5f;
#ifdef OLD_API
    float *q = pile_backend_alloc(be, nq * 4), *o = pile_backend_alloc(be, no * 4);
    float *d = pile_backend_alloc(be, no * 4), *g = pile_backend_alloc(be, nq * 4);
    pile_backend_upload(be, q, h, nq * 4);
    pile_backend_upload(be, d, h, no * 4);
    size_t na = (size_t)B * NH * T * T * 4;
    float *sv = pile_backend_alloc(be, na), *sc = pile_backend_alloc(be, na);
#define FWD() pile_backend_attention_fwd(be, o, sv, q, NULL, B, T, C, NH)
#define BWD() pile_backend_attention_bwd(be, g, sc, d, q, sv, NULL, B, T, C, NH)
    if (!q || !o || !d || !g || !sv || !sc) return 1;
#else
    /* today's interface: tensors, the saved and scratch sizes in bytes */
    pile_tensor q = pile_backend_alloc(be, PILE_DTYPE_F32, nq), o = pile_backend_alloc(be, PILE_DTYPE_F32, no);
    pile_tensor d = pile_backend_alloc(be, PILE_DTYPE_F32, no), g = pile_backend_alloc(be, PILE_DTYPE_F32, nq);
    pile_tensor sv = pile_backend_alloc(be, PILE_DTYPE_U8, pile_backend_attention_saved_bytes(be, B, T, C, NH));
    pile_tensor sc = pile_backend_alloc(be, PILE_DTYPE_U8, pile_backend_attention_scratch_bytes(be, B, T, C, NH));
    const pile_tensor none = PILE_NO_TENSOR;
    if (!q.data || !o.data || !d.data || !g.data || !sv.data || !sc.data) return 1;
    pile_backend_upload(be, q, h, nq);
    pile_backend_upload(be, d, h, no);
#define FWD() pile_backend_attention_fwd(be, o, sv, sc, q, none, B, T, C, NH)
#define BWD() pile_backend_attention_bwd(be, g, sc, d, q, o, sv, none, B, T, C, NH)
#endif
    double bf = 1e30, bb = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = cpu();
        FWD();
        double t1 = cpu();
        BWD();
        double t2 = cpu();
        bf = t1 - t0 < bf ? t1 - t0 : bf;
        bb = t2 - t1 < bb ? t2 - t1 : bb;
    }
#ifndef OLD_API
    if (pile_backend_sync(be, &err) < 0) { /* an op refused does nothing: no time to report */
        fprintf(stderr, "attention: %s\n", err.msg);
        return 1;
    }
#endif
    printf("%.2f %.2f\n", bf * 1e3, bb * 1e3);
    return 0;
}
EOF
bench_driver_build "$BUILD" "$TMP/drv.c" "$TMP/new"
[ -z "$OLD" ] || bench_driver_build "$OLD" "$TMP/drv.c" "$TMP/old" -DOLD_API

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "C 768, 12 heads, $TOKENS positions per call (B = $TOKENS / T), causal, $THREADS thread(s), CPU ms, best of $REPEAT"
echo
if [ -n "$OLD" ]; then
    echo "| T | B | old fwd | new fwd | old bwd | new bwd | new / old (fwd + bwd) |"
    echo "|---:|---:|---:|---:|---:|---:|---:|"
else
    echo "| T | B | fwd ms | bwd ms |"
    echo "|---:|---:|---:|---:|"
fi
for t in $LENGTHS; do
    b=$((TOKENS / t > 0 ? TOKENS / t : 1))
    set -- $("$TMP/new" "$b" "$t" "$THREADS" "$REPEAT")
    nf=$1 nb=$2
    if [ -n "$OLD" ]; then
        set -- $("$TMP/old" "$b" "$t" "$THREADS" "$REPEAT")
        awk -v t="$t" -v b="$b" -v of="$1" -v ob="$2" -v nf="$nf" -v nb="$nb" 'BEGIN {
            printf "| %d | %d | %.1f | %.1f | %.1f | %.1f | %.2f |\n", t, b, of, nf, ob, nb, (nf + nb) / (of + ob) }'
    else
        echo "| $t | $b | $nf | $nb |"
    fi
done
