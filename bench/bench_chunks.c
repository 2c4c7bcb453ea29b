/* The host's side of an offloaded optimizer step (issue 10, optim.h's
 * offload) on the CPU backend, in one piece against in chunks: AdamW over
 * n fp32 parameters, their conversion to bf16, and the copy into the
 * staging buffer a device copies up from (plain memory here: no device).
 * On a device the chunked step hides each chunk's copy up under the next
 * chunk's AdamW; this measures what the chunks cost (or save: a chunk's
 * parameters are still in cache when converted) on the host itself.
 * Prints one line per way: median seconds per step over `reps` steps.
 *   bench_chunks N_PARAMS THREADS REPS CHUNK */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "pile_progress.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One step over [0, n) in pieces of `chunk`: AdamW, convert, copy. */
static int step(pile_backend *be, pile_tensor t[4], pile_tensor bf, void *pinned, size_t n, size_t chunk,
                int64_t k, pile_err *err)
{
    for (size_t c0 = 0; c0 < n; c0 += chunk) {
        const size_t c = n - c0 < chunk ? n - c0 : chunk;
        pile_tensor s[4];
        for (int i = 0; i < 4; i++) s[i] = pile_tensor_slice(t[i], c0, c);
        pile_backend_adamw(be, s[0], s[1], s[2], s[3], c, 3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, k);
        pile_backend_convert(be, bf, s[0], c);
        int rc = pile_backend_sync(be, err);
        if (rc) return rc;
        memcpy(pinned, bf.data, c * 2);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: bench_chunks N_PARAMS THREADS REPS CHUNK\n");
        return 2;
    }
    const size_t n = strtoull(argv[1], NULL, 10), chunk = strtoull(argv[4], NULL, 10);
    const int threads = atoi(argv[2]), reps = atoi(argv[3]);
    if (n == 0 || chunk == 0 || reps < 1 || reps > 1000) {
        fprintf(stderr, "bench_chunks: N_PARAMS > 0, CHUNK > 0 and 1 <= REPS <= 1000\n");
        return 2;
    }
    pile_err err = {0};
    pile_backend *be = NULL;
    if (pile_backend_open(&be, "cpu", threads, &err)) {
        fprintf(stderr, "bench_chunks: %s\n", err.msg);
        return 1;
    }
    pile_tensor t[4], bf = pile_backend_alloc(be, PILE_DTYPE_BF16, n);
    void *pinned = malloc(n * 2);
    for (int i = 0; i < 4; i++) t[i] = pile_backend_alloc(be, PILE_DTYPE_F32, n);
    double *dt = calloc((size_t)reps, sizeof *dt);
    if (!t[0].data || !t[1].data || !t[2].data || !t[3].data || !bf.data || !pinned || !dt) {
        fprintf(stderr, "bench_chunks: cannot allocate 4 x %zu floats and 2 x %zu bf16\n", n, n);
        return 1;
    }
    /* values that keep the arithmetic ordinary (no denormals, no zeros) */
    float *p = t[0].data, *g = t[1].data;
    for (size_t i = 0; i < n; i++) {
        p[i] = 0.02f * (float)((i * 2654435761u) % 1000) / 1000.0f;
        g[i] = 1e-3f * (float)(i % 97);
    }
    memset(pinned, 0, n * 2);
    const size_t ways[2] = {n, chunk};
    int64_t k = 1;
    for (int w = 0; w < 2; w++) {
        if (step(be, t, bf, pinned, n, ways[w], k++, &err)) goto fail; /* warm: pages touched */
        for (int r = 0; r < reps; r++) {
            double t0 = pile_now();
            if (step(be, t, bf, pinned, n, ways[w], k++, &err)) goto fail;
            dt[r] = pile_now() - t0;
        }
        qsort(dt, (size_t)reps, sizeof *dt, cmp_double);
        printf("threads %d  params %zu  chunk %zu  %.4f s/step\n", pile_backend_threads(be), n, ways[w], dt[reps / 2]);
    }
    free(dt);
    free(pinned);
    pile_backend_free(&bf);
    for (int i = 0; i < 4; i++) pile_backend_free(&t[i]);
    pile_backend_close(be);
    return 0;
fail:
    fprintf(stderr, "bench_chunks: %s\n", err.msg);
    return 1;
}
