/* The CPU backend's AdamW step over n fp32 parameters (p, g, m, v): the
 * host's share of an optimizer-offloaded step (issue 10, trainer/SCALING.md).
 * Prints one line: threads, n, median seconds per step over `reps` steps,
 * parameters per second and the memory traffic it implies (7 x 4 bytes per
 * parameter: p, g, m, v read; p, m, v written).
 *   bench_adamw N_PARAMS THREADS [REPS] */
#include <stdio.h>
#include <stdlib.h>

#include "backend.h"
#include "pile_progress.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_adamw N_PARAMS THREADS [REPS]\n");
        return 2;
    }
    size_t n = strtoull(argv[1], NULL, 10);
    int threads = atoi(argv[2]);
    int reps = argc > 3 ? atoi(argv[3]) : 10;
    if (n == 0 || reps < 1 || reps > 1000) {
        fprintf(stderr, "bench_adamw: N_PARAMS > 0 and 1 <= REPS <= 1000\n");
        return 2;
    }
    pile_err err = {0};
    pile_backend *be = NULL;
    if (pile_backend_open(&be, "cpu", threads, &err)) {
        fprintf(stderr, "bench_adamw: %s\n", err.msg);
        return 1;
    }
    pile_tensor t[4];
    for (int i = 0; i < 4; i++) {
        t[i] = pile_backend_alloc(be, PILE_DTYPE_F32, n);
        if (!t[i].data) {
            fprintf(stderr, "bench_adamw: cannot allocate 4 x %zu floats\n", n);
            return 1;
        }
    }
    /* values that keep the arithmetic ordinary (no denormals, no zeros) */
    float *p = t[0].data, *g = t[1].data;
    for (size_t i = 0; i < n; i++) p[i] = 0.02f * (float)((i * 2654435761u) % 1000) / 1000.0f, g[i] = 1e-3f * (float)(i % 97);
    double *dt = calloc((size_t)reps, sizeof *dt);
    if (!dt) return 1;
    pile_backend_adamw(be, t[0], t[1], t[2], t[3], n, 3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 1); /* warm: pages touched */
    for (int r = 0; r < reps; r++) {
        double t0 = pile_now();
        pile_backend_adamw(be, t[0], t[1], t[2], t[3], n, 3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, r + 2);
        if (pile_backend_sync(be, &err)) {
            fprintf(stderr, "bench_adamw: %s\n", err.msg);
            return 1;
        }
        dt[r] = pile_now() - t0;
    }
    qsort(dt, (size_t)reps, sizeof *dt, cmp_double);
    double med = dt[reps / 2];
    printf("threads %d  params %zu  %.4f s/step  %.3g params/s  %.2f GB/s\n", pile_backend_threads(be), n, med,
           (double)n / med, 28.0 * (double)n / med / 1e9);
    free(dt);
    for (int i = 0; i < 4; i++) pile_backend_free(&t[i]);
    pile_backend_close(be);
    return 0;
}
