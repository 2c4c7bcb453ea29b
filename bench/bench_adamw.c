/* The CPU backend's AdamW step over n fp32 parameters (p, g, m, v): the
 * host's share of an optimizer-offloaded step (issue 10, trainer/SCALING.md).
 * Prints one line: threads, n, median seconds per step over `reps` steps,
 * parameters per second and the memory traffic it implies (7 x 4 bytes per
 * parameter: p, g, m, v read; p, m, v written).
 * With CHUNK: the whole host side of the offloaded step instead (optim.h,
 * offload): AdamW, the conversion to bf16 and the copy into the staging
 * memory a device copies up from (plain memory here: no device), in one
 * piece and in pieces of CHUNK (the step's PILE_OPTIM_OFFLOAD_CHUNK), one
 * line each: what the chunks cost the host (or save: a chunk's parameters
 * are still in cache when converted). bench/offload-chunks.sh runs it.
 *   bench_adamw N_PARAMS THREADS [REPS [CHUNK]] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "bench_driver.h"
#include "pile_progress.h"

/* One step (k) over [0, n): AdamW alone (bf NULL), or AdamW, convert and
 * copy in pieces of `chunk`. */
static int step(pile_backend *be, pile_tensor t[4], pile_tensor bf, void *pinned, size_t n, size_t chunk, int64_t k,
                pile_err *err)
{
    for (size_t c0 = 0; c0 < n; c0 += chunk) {
        const size_t c = n - c0 < chunk ? n - c0 : chunk;
        pile_tensor s[4];
        for (int i = 0; i < 4; i++) s[i] = pile_tensor_slice(t[i], c0, c);
        pile_backend_adamw(be, s[0], s[1], s[2], s[3], c, 3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, k);
        if (bf.data) pile_backend_convert(be, bf, s[0], c);
        const int rc = pile_backend_sync(be, err);
        if (rc) return rc;
        if (bf.data) memcpy(pinned, bf.data, c * 2);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_adamw N_PARAMS THREADS [REPS [CHUNK]]\n");
        return 2;
    }
    const size_t n = strtoull(argv[1], NULL, 10), chunk = argc > 4 ? strtoull(argv[4], NULL, 10) : 0;
    const int threads = atoi(argv[2]), reps = argc > 3 ? atoi(argv[3]) : 10;
    if (n == 0 || reps < 1 || reps > 1000 || (argc > 4 && chunk == 0)) {
        fprintf(stderr, "bench_adamw: N_PARAMS > 0, 1 <= REPS <= 1000, CHUNK > 0\n");
        return 2;
    }
    pile_err err = {0};
    pile_backend *be = NULL;
    if (pile_backend_open(&be, "cpu", threads, &err)) {
        fprintf(stderr, "bench_adamw: %s\n", err.msg);
        return 1;
    }
    pile_tensor t[4], bf = {0};
    for (int i = 0; i < 4; i++) t[i] = pile_backend_alloc(be, PILE_DTYPE_F32, n);
    void *pinned = NULL;
    if (chunk) {
        bf = pile_backend_alloc(be, PILE_DTYPE_BF16, n);
        pinned = calloc(n, 2);
    }
    double *dt = calloc((size_t)reps, sizeof *dt);
    if (!t[0].data || !t[1].data || !t[2].data || !t[3].data || !dt || (chunk && (!bf.data || !pinned))) {
        fprintf(stderr, "bench_adamw: cannot allocate 4 x %zu floats%s\n", n, chunk ? " and 2 x that many bf16" : "");
        return 1;
    }
    bench_adamw_inputs(t[0].data, t[1].data, n);
    /* AdamW alone in one piece; with CHUNK the whole host side in one
     * piece, then in chunks */
    const size_t ways[2] = {n, chunk};
    int64_t k = 1;
    for (int w = 0; w < (chunk ? 2 : 1); w++) {
        if (step(be, t, bf, pinned, n, ways[w], k++, &err)) goto fail; /* warm: pages touched */
        for (int r = 0; r < reps; r++) {
            const double t0 = pile_now();
            if (step(be, t, bf, pinned, n, ways[w], k++, &err)) goto fail;
            dt[r] = pile_now() - t0;
        }
        const double med = bench_median(dt, reps);
        if (chunk)
            printf("threads %d  params %zu  chunk %zu  %.4f s/step\n", pile_backend_threads(be), n, ways[w], med);
        else
            printf("threads %d  params %zu  %.4f s/step  %.3g params/s  %.2f GB/s\n", pile_backend_threads(be), n,
                   med, (double)n / med, 28.0 * (double)n / med / 1e9);
    }
    free(dt);
    free(pinned);
    pile_backend_free(&bf);
    for (int i = 0; i < 4; i++) pile_backend_free(&t[i]);
    pile_backend_close(be);
    return 0;
fail:
    fprintf(stderr, "bench_adamw: %s\n", err.msg);
    return 1;
}
