/* The "nccl" communicator on real GPUs (suite 'gpu', built with NCCL):
 * every tensor call on device buffers, on a stream of the test's and on
 * none (finished at return), against the values each rank can compute
 * for itself; then the scalars and the barrier through the bootstrap.
 * Run alone it is one rank, and one GPU can only check world size 1 (the
 * identity of every reduction, the copies of gathers): say so. Under a
 * launcher with several GPUs (torchrun --nproc_per_node N, mpirun -np N)
 * each rank checks the sums over N ranks. Exit 77 without a CUDA device. */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "pile_test.h"

#define N 4096 /* elements: a multiple of every world size below 9 * 512 */

static float value(int rank, size_t i)
{
    return (float)(rank + 1) * 0.5f + (float)(i % 97) * 0.25f;
}

/* float to bf16 bits (truncation is fine: the test compares bits moved) */
static uint16_t bf16_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16);
}

#define CUDA_OK(call)                                                                               \
    do {                                                                                            \
        cudaError_t e_ = (call);                                                                    \
        if (e_ != cudaSuccess) {                                                                    \
            PILE_FAIL_("%s: %s", #call, cudaGetErrorString(e_));                                   \
            return;                                                                                 \
        }                                                                                           \
    } while (0)

/* A case's name, kept until the next case prints it. */
static const char *case_name(const char *what, int world, const char *how)
{
    static char names[8][192];
    static int next;
    char *n = names[next++ % 8];
    snprintf(n, sizeof names[0], "%s, %d rank%s, %s", what, world, world == 1 ? "" : "s", how);
    return n;
}

static void check_calls(pile_comm *c, cudaStream_t stream_or_null, const char *how)
{
    const int W = pile_comm_world_size(c), R = pile_comm_rank(c);
    const size_t share = N / (size_t)W;
    void *stream = stream_or_null;
    static float host[N], want[N];
    static uint16_t h16[N], w16[N];
    float *d = NULL, *d2 = NULL;
    pile_err err;

    TEST(case_name("allreduce sum and max", W, how));
    CUDA_OK(cudaMalloc((void **)&d, N * sizeof *d));
    CUDA_OK(cudaMalloc((void **)&d2, N * sizeof *d2));
    for (size_t i = 0; i < N; i++) host[i] = value(R, i);
    for (size_t i = 0; i < N; i++) {
        want[i] = 0;
        for (int r = 0; r < W; r++) want[i] += value(r, i); /* small halves and quarters: exact in any order */
    }
    CUDA_OK(cudaMemcpy(d, host, sizeof host, cudaMemcpyHostToDevice));
    OK(pile_comm_allreduce(c, d, N, PILE_COMM_F32, PILE_COMM_SUM, stream, &err), &err);
    if (stream) CUDA_OK(cudaStreamSynchronize(stream_or_null));
    CUDA_OK(cudaMemcpy(host, d, sizeof host, cudaMemcpyDeviceToHost));
    ASSERT_MEM_EQ(host, want, sizeof host);
    for (size_t i = 0; i < N; i++) host[i] = value(R, i);
    CUDA_OK(cudaMemcpy(d, host, sizeof host, cudaMemcpyHostToDevice));
    OK(pile_comm_allreduce(c, d, N, PILE_COMM_F32, PILE_COMM_MAX, stream, &err), &err);
    if (stream) CUDA_OK(cudaStreamSynchronize(stream_or_null));
    CUDA_OK(cudaMemcpy(host, d, sizeof host, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < N; i++) want[i] = value(W - 1, i);
    ASSERT_MEM_EQ(host, want, sizeof host);

    TEST(case_name("reduce-scatter apart and in place", W, how));
    for (size_t i = 0; i < N; i++) host[i] = value(R, i);
    CUDA_OK(cudaMemcpy(d, host, sizeof host, cudaMemcpyHostToDevice));
    OK(pile_comm_reduce_scatter(c, d2, d, N, PILE_COMM_F32, PILE_COMM_SUM, stream, &err), &err);
    OK(pile_comm_reduce_scatter(c, d + (size_t)R * share, d, N, PILE_COMM_F32, PILE_COMM_SUM, stream, &err), &err);
    if (stream) CUDA_OK(cudaStreamSynchronize(stream_or_null));
    for (size_t i = 0; i < share; i++) {
        want[i] = 0;
        for (int r = 0; r < W; r++) want[i] += value(r, (size_t)R * share + i);
    }
    CUDA_OK(cudaMemcpy(host, d2, share * sizeof *host, cudaMemcpyDeviceToHost));
    ASSERT_MEM_EQ(host, want, share * sizeof *host);
    CUDA_OK(cudaMemcpy(host, d + (size_t)R * share, share * sizeof *host, cudaMemcpyDeviceToHost));
    ASSERT_MEM_EQ(host, want, share * sizeof *host);

    TEST(case_name("all-gather bf16 in place and broadcast fp32", W, how));
    uint16_t *b = (uint16_t *)d2;
    for (size_t i = 0; i < share; i++) h16[i] = bf16_bits(value(R, i));
    CUDA_OK(cudaMemcpy(b + (size_t)R * share, h16, share * 2, cudaMemcpyHostToDevice));
    OK(pile_comm_all_gather(c, b, b + (size_t)R * share, N, PILE_COMM_BF16, stream, &err), &err);
    if (stream) CUDA_OK(cudaStreamSynchronize(stream_or_null));
    for (int r = 0; r < W; r++)
        for (size_t i = 0; i < share; i++) w16[(size_t)r * share + i] = bf16_bits(value(r, i));
    CUDA_OK(cudaMemcpy(h16, b, N * 2, cudaMemcpyDeviceToHost));
    ASSERT_MEM_EQ(h16, w16, N * 2);
    for (size_t i = 0; i < N; i++) host[i] = value(R, i);
    CUDA_OK(cudaMemcpy(d, host, sizeof host, cudaMemcpyHostToDevice));
    OK(pile_comm_broadcast(c, d, N, PILE_COMM_F32, W - 1, stream, &err), &err);
    if (stream) CUDA_OK(cudaStreamSynchronize(stream_or_null));
    CUDA_OK(cudaMemcpy(host, d, sizeof host, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < N; i++) want[i] = value(W - 1, i);
    ASSERT_MEM_EQ(host, want, sizeof host);
    cudaFree(d);
    cudaFree(d2);
}

int main(void)
{
    pile_err err;
    pile_comm *c = NULL;
    int n_dev = 0;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev < 1) pile_test_skip_all("no CUDA device");
    if (pile_comm_open(&c, "nccl", &err) < 0) {
        printf("# %s\n", err.msg);
        TEST("open the nccl communicator");
        ASSERT(!"opened");
        return TEST_DONE();
    }
    const int W = pile_comm_world_size(c);
    printf("# rank %d of %d, %d CUDA device%s here%s\n", pile_comm_rank(c), W, n_dev, n_dev == 1 ? "" : "s",
           W == 1 ? " (one rank: reductions are the identity here; several GPUs check the sums)" : "");
    /* A blocking stream (cudaStreamDefault), not a non-blocking one: the
     * test fills and reads its buffers with cudaMemcpy, on the legacy
     * default stream, and a copy from pageable memory may return before
     * its DMA has landed (CUDA Runtime API, "API synchronization
     * behavior"); only a blocking stream waits for the legacy stream's
     * work before its own, so that the collectives read what was copied. */
    cudaStream_t s = NULL;
    if (cudaStreamCreateWithFlags(&s, cudaStreamDefault) != cudaSuccess) {
        TEST("a stream");
        ASSERT(!"created");
        return TEST_DONE();
    }
    check_calls(c, s, "on a stream");
    check_calls(c, NULL, "on no stream (finished at return)");

    TEST("scalars and the barrier, through the bootstrap communicator");
    double v[2] = {1.5, (double)pile_comm_rank(c)};
    OK(pile_comm_allreduce_f64(c, v, 2, PILE_COMM_SUM, &err), &err);
    ASSERT(v[0] == 1.5 * W && v[1] == (double)W * (W - 1) / 2);
    OK(pile_comm_barrier(c, &err), &err);
    cudaStreamDestroy(s);
    pile_comm_close(c);
    return TEST_DONE();
}
