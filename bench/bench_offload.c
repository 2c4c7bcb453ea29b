/* The two ways to update an offloaded optimizer shard (issue 10: "measure
 * it against keeping AdamW on the GPU and streaming the state"), measured
 * by their parts on one GPU and its host, and put side by side:
 *  - host: what `--offload optimizer` does. The rank's fp32 gradient shard
 *    goes down (4 bytes a parameter), AdamW runs on the CPU backend (every
 *    core given), the bf16 parameters go up (2 bytes).
 *  - stream: the state (fp32 p, m, v) stays in pinned host memory and goes
 *    through the GPU, chunk after chunk: up (12 bytes a parameter), AdamW
 *    on the cuda backend beside the gradient already there, back down (12
 *    bytes).
 * (The host's conversion of its shard to bf16, one more pass over 6 bytes
 * a parameter on the CPU, is left out of "host": the bound is in its
 * favour by that much.)
 * Parts: pinned copies up, down and both at once (two streams, the bus's
 * two directions), the cuda backend's AdamW and the CPU backend's. Each
 * way's time is given twice: its parts one after the other, and the
 * largest part alone (perfect overlap, in chunks: a bound no
 * implementation beats; for "host" the trainer's chunked step, optim.h's
 * offload, overlaps the copy up with AdamW, the copy down not). When one way's
 * bound is slower than the other's sum, the verdict needs no
 * implementation of the slower one; otherwise it says so.
 *
 *   bench_offload [N_PARAMS [CPU_THREADS [REPS]]]   (default 2^27, all cores, 5)
 * Exit 77 without a CUDA device (nothing measured). */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "bench_driver.h"
#include "pile_progress.h"

#define CHUNK ((size_t)64 << 20) /* bytes per copy: large enough for the bus's rate */

static int cuda_ok(cudaError_t e, const char *what)
{
    if (e == cudaSuccess) return 1;
    fprintf(stderr, "bench_offload: %s failed: %s\n", what, cudaGetErrorString(e));
    return 0;
}

/* Seconds to copy `bytes` in CHUNK pieces: up (dir 1), down (dir 2) or
 * both at once on two streams (dir 3, each direction `bytes`); median of
 * reps. */
static double time_copies(int dir, void *host_up, void *host_down, void *dev_up, void *dev_down, size_t bytes,
                          cudaStream_t s[2], int reps)
{
    double t[64];
    for (int r = 0; r < reps; r++) {
        if (!cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize")) return -1;
        const double t0 = pile_now();
        for (size_t at = 0; at < bytes; at += CHUNK) {
            const size_t k = bytes - at < CHUNK ? bytes - at : CHUNK;
            if ((dir & 1) && !cuda_ok(cudaMemcpyAsync((char *)dev_up + at, (char *)host_up + at, k,
                                                      cudaMemcpyHostToDevice, s[0]),
                                      "cudaMemcpyAsync (up)"))
                return -1;
            if ((dir & 2) && !cuda_ok(cudaMemcpyAsync((char *)host_down + at, (char *)dev_down + at, k,
                                                      cudaMemcpyDeviceToHost, s[1]),
                                      "cudaMemcpyAsync (down)"))
                return -1;
        }
        if (!cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize")) return -1;
        t[r] = pile_now() - t0;
    }
    return bench_median(t, reps);
}

/* Seconds per AdamW step over n parameters on `be` (median of reps), the
 * parameters and gradients uploaded from p and g first (n floats each;
 * the moments start at 0). */
static double time_adamw(pile_backend *be, size_t n, const float *p, const float *g, int reps, pile_err *err)
{
    pile_tensor t[4];
    int ok = 1;
    for (int i = 0; i < 4; i++) {
        t[i] = pile_backend_alloc(be, PILE_DTYPE_F32, n);
        if (!t[i].data) ok = 0;
        else if (i < 2) pile_backend_upload(be, t[i], i ? g : p, n);
    }
    double s[64], r = -1;
    if (!ok) {
        fprintf(stderr, "bench_offload: cannot allocate 4 x %zu floats on the %s backend\n", n, pile_backend_name(be));
        goto out;
    }
    pile_backend_adamw(be, t[0], t[1], t[2], t[3], n, 3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 1); /* warm */
    if (pile_backend_sync(be, err)) goto fail;
    for (int k = 0; k < reps; k++) {
        const double t0 = pile_now();
        pile_backend_adamw(be, t[0], t[1], t[2], t[3], n, 3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, k + 2);
        if (pile_backend_sync(be, err)) goto fail;
        s[k] = pile_now() - t0;
    }
    r = bench_median(s, reps);
    goto out;
fail:
    fprintf(stderr, "bench_offload: AdamW on the %s backend: %s\n", pile_backend_name(be), err->msg);
out:
    for (int i = 0; i < 4; i++) pile_backend_free(&t[i]);
    return r;
}

static double max3(double a, double b, double c)
{
    return a > b ? (a > c ? a : c) : (b > c ? b : c);
}

int main(int argc, char **argv)
{
    const size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : (size_t)1 << 27;
    const int threads = argc > 2 ? atoi(argv[2]) : 0;
    const int reps = argc > 3 ? atoi(argv[3]) : 5;
    if (n == 0 || reps < 1 || reps > 64 || threads < 0) {
        fprintf(stderr, "usage: bench_offload [N_PARAMS [CPU_THREADS [REPS]]]  (N > 0, 1 <= REPS <= 64)\n");
        return 2;
    }
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        printf("bench_offload: no CUDA device here: nothing measured\n");
        return 77;
    }
    struct cudaDeviceProp prop;
    if (!cuda_ok(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties")) return 1;

    /* the copies: 12 bytes a parameter each way at most (stream's p, m, v) */
    const size_t bytes = 12 * n;
    void *hu = NULL, *hd = NULL, *du = NULL, *dd = NULL;
    cudaStream_t s[2] = {0, 0};
    if (!cuda_ok(cudaMallocHost(&hu, bytes), "cudaMallocHost") || !cuda_ok(cudaMallocHost(&hd, bytes), "cudaMallocHost") ||
        !cuda_ok(cudaMalloc(&du, bytes), "cudaMalloc") || !cuda_ok(cudaMalloc(&dd, bytes), "cudaMalloc") ||
        !cuda_ok(cudaStreamCreateWithFlags(&s[0], cudaStreamNonBlocking), "cudaStreamCreate") ||
        !cuda_ok(cudaStreamCreateWithFlags(&s[1], cudaStreamNonBlocking), "cudaStreamCreate"))
        return 1;
    memset(hu, 1, bytes); /* pages touched before any timing */
    memset(hd, 2, bytes);
    if (!cuda_ok(cudaMemset(du, 0, bytes), "cudaMemset") || !cuda_ok(cudaMemset(dd, 0, bytes), "cudaMemset")) return 1;
    if (time_copies(3, hu, hd, du, dd, CHUNK, s, 1) < 0) return 1; /* warm */
    const double up = time_copies(1, hu, hd, du, dd, bytes, s, reps);
    const double down = time_copies(2, hu, hd, du, dd, bytes, s, reps);
    const double both = time_copies(3, hu, hd, du, dd, bytes, s, reps);
    if (up < 0 || down < 0 || both < 0) return 1;
    cudaStreamDestroy(s[0]);
    cudaStreamDestroy(s[1]);
    cudaFree(du);
    cudaFree(dd);
    cudaFreeHost(hd);
    const double up_gbs = bytes / up / 1e9, down_gbs = bytes / down / 1e9, duplex_gbs = bytes / both / 1e9;

    /* AdamW on each backend, from the same values (no denormals, no zeros) */
    float *p = hu, *g = p + n; /* reused: 12n bytes hold 3n floats */
    bench_adamw_inputs(p, g, n);
    pile_err err = {0};
    pile_backend *dev = NULL, *host = NULL;
    if (pile_backend_open(&dev, "cuda", 0, &err) || pile_backend_open(&host, "cpu", threads, &err)) {
        fprintf(stderr, "bench_offload: %s\n", err.msg);
        return 1;
    }
    const double adam_gpu = time_adamw(dev, n, p, g, reps, &err);
    const double adam_cpu = time_adamw(host, n, p, g, reps, &err);
    const int cpu_threads = pile_backend_threads(host);
    pile_backend_close(dev);
    pile_backend_close(host);
    cudaFreeHost(hu);
    if (adam_gpu < 0 || adam_cpu < 0) return 1;

    /* each way's parts for this shard, seconds; the duplex rate where
     * both directions run at once (the overlapped bounds) */
    const double nb = (double)n;
    const double host_down = 4 * nb / (down_gbs * 1e9), host_up = 2 * nb / (up_gbs * 1e9);
    const double host_seq = host_down + adam_cpu + host_up;
    const double host_bound = max3(4 * nb / (duplex_gbs * 1e9), adam_cpu, 2 * nb / (duplex_gbs * 1e9));
    const double str_up = 12 * nb / (up_gbs * 1e9), str_down = 12 * nb / (down_gbs * 1e9);
    const double str_seq = str_up + adam_gpu + str_down;
    const double str_bound = max3(12 * nb / (duplex_gbs * 1e9), adam_gpu, 12 * nb / (duplex_gbs * 1e9));

    printf("device: %s; host: %d CPU threads for AdamW; shard of %zu fp32 parameters (%.2f GiB each of p, m, v)\n",
           prop.name, cpu_threads, n, 4 * nb / (1 << 30));
    printf("\n| part | seconds | rate |\n|---|---:|---|\n");
    printf("| pinned copy up (%.2f GB) | %.4f | %.1f GB/s |\n", bytes / 1e9, up, up_gbs);
    printf("| pinned copy down (%.2f GB) | %.4f | %.1f GB/s |\n", bytes / 1e9, down, down_gbs);
    printf("| both at once (%.2f GB each way) | %.4f | %.1f GB/s each way |\n", bytes / 1e9, both, duplex_gbs);
    printf("| AdamW, cuda backend | %.4f | %.3g params/s, %.0f GB/s of state |\n", adam_gpu, nb / adam_gpu,
           28 * nb / adam_gpu / 1e9);
    printf("| AdamW, cpu backend, %d threads | %.4f | %.3g params/s, %.1f GB/s of state |\n", cpu_threads, adam_cpu,
           nb / adam_cpu, 28 * nb / adam_cpu / 1e9);
    printf("\n| way | parts one after another (s) | largest part alone: overlapped bound (s) |\n|---|---:|---:|\n");
    printf("| host: gradients down (4 B), AdamW on the CPU, bf16 parameters up (2 B) | %.4f | %.4f |\n", host_seq,
           host_bound);
    printf("| stream: p, m, v up (12 B), AdamW on the GPU, back down (12 B) | %.4f | %.4f |\n", str_seq, str_bound);
    const char *verdict = str_bound > host_seq   ? "host: AdamW on the CPU is faster than streaming's best case (keep it)"
                          : host_bound > str_seq ? "stream: streaming the state is faster than the host's best case"
                                                 : "neither bounds the other: it depends on the overlap each reaches";
    printf("\nverdict: %s\n", verdict);
    return 0;
}
