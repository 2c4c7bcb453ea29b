/* One rank of a ZeRO training step, timed: the trainer's step (forward,
 * backward, the stage's reductions, the scalar allreduce of the loss and
 * the norm's partial sums, AdamW, the parameters' gathers) on a model
 * preset over synthetic tokens, each rank its own micro-batch, under
 * whatever launcher started it (pile_comm_open_auto: one rank alone, "mpi"
 * under mpirun). Rank 0 prints one line: the median step time over the
 * ranks' slowest, and the payload the collectives moved per step over the
 * parameters' bytes (pile_optim_comm_bytes: the ZeRO paper's 2x and 3x).
 *   bench_zero MODEL STAGE OFFLOAD STEPS BATCH SEQ THREADS [OVERLAP [BUCKET]]
 * OFFLOAD: 0 none, 1 optimizer, 2 optimizer and parameters (stage 3).
 * OVERLAP 1: the communicator's thread (comm.h), so that the gradient
 * buckets are reduced during the backward and stage 3's gathers run ahead
 * (the line then says which share of the gradient bytes went during the
 * backward); BUCKET: reduce_bucket_size, elements per rank (0: one). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm/comm.h"
#include "optim.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 8 || argc > 10) {
        fprintf(stderr, "usage: bench_zero MODEL STAGE OFFLOAD STEPS BATCH SEQ THREADS [OVERLAP [BUCKET]]\n");
        return 2;
    }
    const char *preset = argv[1];
    const int stage = atoi(argv[2]), offload = atoi(argv[3]), steps = atoi(argv[4]);
    const int B = atoi(argv[5]), T = atoi(argv[6]), threads = atoi(argv[7]);
    const int overlap = argc > 8 ? atoi(argv[8]) : 0;
    const size_t bucket = argc > 9 ? (size_t)strtoull(argv[9], NULL, 10) : 0;
    if (steps < 1 || B < 1 || T < 2) {
        fprintf(stderr, "bench_zero: STEPS, BATCH and SEQ must be positive (SEQ at least 2)\n");
        return 2;
    }
    pile_err err;
    pile_comm *comm = NULL;
    pile_backend *be = NULL, *off = NULL;
    pile_model *m = NULL;
    pile_optim *o = NULL;
    int32_t *tok = NULL, *tgt = NULL;
    double *ms = NULL;
    int rc = pile_comm_open_auto(&comm, NULL, &err);
    if (rc == 0) rc = pile_backend_open(&be, "cpu", threads, &err);
    if (rc == 0 && offload) rc = pile_backend_open(&off, "cpu", threads, &err);
    pile_model_config mc;
    memset(&mc, 0, sizeof mc);
    if (rc == 0) rc = pile_model_preset(&mc, preset, &err);
    /* the presets' usual vocabularies: bytes for tiny, 8k for small */
    mc.vocab_size = strcmp(preset, "tiny") ? 8192 : 256;
    mc.n_positions = T;
    mc.dtype = PILE_DTYPE_F32;
    if (rc == 0) rc = pile_model_create(&m, be, &mc, B, T, &err);
    if (rc == 0) pile_model_init(m, 42);
    pile_adamw_config ac = {0.9f, 0.95f, 1e-8f, 0.1f, 0};
    const int world = comm ? pile_comm_world_size(comm) : 1, rank = comm ? pile_comm_rank(comm) : 0;
    pile_optim_zero z = {stage, world > 1 ? comm : NULL, off, bucket, offload == 2, SIZE_MAX, 0, 0};
    if (rc == 0 && overlap && world > 1) rc = pile_comm_thread_start(comm, &err);
    if (rc == 0) rc = pile_optim_create_zero(&o, m, &ac, &z, &err);
    const size_t N = (size_t)B * (size_t)T;
    tok = malloc(N * sizeof *tok);
    tgt = malloc(N * sizeof *tgt);
    ms = malloc((size_t)steps * sizeof *ms);
    if (rc == 0 && (!tok || !tgt || !ms)) rc = pile_err_set(&err, PILE_ENOMEM, "out of memory");
    uint64_t state = 0x9E3779B97F4A7C15ull * (uint64_t)(rank + 1);
    for (size_t i = 0; rc == 0 && i < N; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = (int32_t)((state >> 33) % (uint64_t)mc.vocab_size);
    }
    for (size_t i = 0; rc == 0 && i < N; i++) tgt[i] = i + 1 < N ? tok[i + 1] : -1;
    const pile_batch batch = {B, T, tok, tgt, NULL};
    uint64_t bytes0 = 0, early0 = 0;
    /* step 0 warms the caches and is not counted */
    for (int s = -1; rc == 0 && s < steps; s++) {
        if (s == 0) {
            bytes0 = pile_optim_comm_bytes(o);
            early0 = pile_optim_overlap_bytes(o);
        }
        const double t0 = now();
        pile_optim_zero_grad(o);
        pile_fwd_stats st;
        rc = pile_model_forward(m, &batch, 1, (uint64_t)s, 1.0f / (float)(N * (size_t)world), &st, &err);
        pile_optim_begin_backward(o, 1); /* one micro-batch: the step's last */
        if (rc == 0) rc = pile_model_backward(m, pile_optim_grads(o), &err);
        if (rc == 0) rc = pile_optim_backward_done(o, &err);
        double sums[2] = {st.loss_sum, 0.0};
        if (rc == 0) rc = pile_optim_reduce_gradients(o, &sums[1], &err);
        if (rc == 0) rc = pile_comm_allreduce_f64(comm, sums, 2, PILE_COMM_SUM, &err);
        if (rc == 0) rc = pile_optim_step(o, sqrt(sums[1]), 1.0f, 3e-4f, &err);
        double dt = now() - t0;
        /* the step takes as long as its slowest rank */
        if (rc == 0) rc = pile_comm_allreduce_f64(comm, &dt, 1, PILE_COMM_MAX, &err);
        if (s >= 0) ms[s] = dt * 1e3;
    }
    if (rc == 0 && rank == 0) {
        qsort(ms, (size_t)steps, sizeof *ms, cmp_double);
        const double per = (double)(pile_optim_comm_bytes(o) - bytes0) / steps;
        const double pbytes = (double)pile_model_flat_size(m) * 4.0;
        /* the gradients' share of the bytes: an allreduce (2x) at stage 0, a reduce-scatter (1x) above */
        const double grad = (stage == 0 ? 2.0 : 1.0) * pbytes;
        const double early = (double)(pile_optim_overlap_bytes(o) - early0) / steps;
        printf("model %s params %zu ranks %d stage %d offload %d overlap %d bucket %zu: step %.2f ms (median of "
               "%d), comm %.4f x the parameters' bytes (%.1f MB/step), %.0f%% of the gradient bytes during the "
               "backward\n",
               preset, pile_model_param_count(m), world, stage, offload, overlap, bucket, ms[steps / 2], steps,
               per / pbytes, per / 1e6, 100.0 * early / grad);
    }
    if (rc < 0) fprintf(stderr, "bench_zero (rank %d): %s\n", rank, err.msg);
    free(ms);
    free(tgt);
    free(tok);
    pile_optim_free(o);
    pile_model_free(m);
    pile_backend_close(off);
    pile_backend_close(be);
    pile_comm_close(comm);
    return rc < 0 ? 1 : 0;
}
