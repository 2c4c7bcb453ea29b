/* bench_comm: allreduce time of pile_comm between real processes, one
 * line per size from rank 0 (bench/comm.sh runs it under mpirun and under
 * pile-trainer launch, side by side).
 *   bench_comm REPEATS BYTES...
 * Prints "name ranks bytes median_ms algbw_GBps busbw_GBps": algbw is
 * bytes / time, busbw algbw * 2 (W - 1) / W, what a ring moves per link
 * (NCCL's tests report the same two). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "pile_progress.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_comm REPEATS BYTES...\n");
        return 2;
    }
    const int repeats = atoi(argv[1]);
    pile_err err;
    pile_comm *c = NULL;
    if (repeats < 1 || pile_comm_open_auto(&c, NULL, &err) < 0) {
        fprintf(stderr, "bench_comm: %s\n", repeats < 1 ? "bad REPEATS" : err.msg);
        return 1;
    }
    const int w = pile_comm_world_size(c);
    double *t = malloc(sizeof *t * (size_t)repeats);
    for (int a = 2; a < argc && t; a++) {
        const size_t n = (size_t)atoll(argv[a]) / 4;
        float *x = malloc(n * 4 + 4);
        if (!x) break;
        for (size_t i = 0; i < n; i++) x[i] = (float)(i % 7);
        for (int k = -1; k < repeats; k++) { /* one warm-up */
            if (pile_comm_barrier(c, &err) < 0) goto fail;
            double t0 = pile_now();
            if (pile_comm_allreduce(c, x, n, PILE_COMM_F32, PILE_COMM_SUM, NULL, &err) < 0) goto fail;
            /* the slowest rank's time: the call ends for all when it ends for the last */
            double dt = pile_now() - t0;
            if (pile_comm_allreduce_f64(c, &dt, 1, PILE_COMM_MAX, &err) < 0) goto fail;
            if (k >= 0) t[k] = dt;
        }
        qsort(t, (size_t)repeats, sizeof *t, cmp_double);
        const double med = t[repeats / 2], bytes = (double)n * 4, alg = bytes / med / 1e9;
        if (pile_comm_rank(c) == 0)
            printf("%s %d %.0f %.3f %.3f %.3f\n", pile_comm_name(c), w, bytes, med * 1e3, alg,
                   alg * 2 * (w - 1) / w);
        fflush(stdout);
        free(x);
    }
    free(t);
    pile_comm_close(c);
    return 0;
fail:
    fprintf(stderr, "bench_comm: %s\n", err.msg);
    pile_comm_close(c);
    return 1;
}
