/* The CUDA backend's classifier: softmax cross-entropy over the first V of
 * Vp logits per row, the argmax hit, and the logits' gradient written in
 * place (no second [N, Vp] buffer), as backend_cpu.c's ce_row computes
 * them. One block per row, three sweeps over it: the maximum, then the
 * argmax and the sum of exponentials, then the gradient.
 *
 * The sum has the CPU's shape: chunks of 256 logits summed in float (here
 * one warp per chunk, 8 per lane, the warp's butterfly), the chunks added
 * in double (each warp its chunks in order, then the warps in order by one
 * thread), so it rounds like the CPU's, in another but fixed order. The
 * exponentials are the CPU's vexpf, recomputed in the gradient sweep rather
 * than kept in the row (a 16-bit row cannot hold them unrounded, and the
 * CPU rounds only the final gradient). */
#include <math.h>

#include "kernels.cuh"

#define CE_THREADS 512 /* 16 warps */
#define CE_CHUNK 256   /* = 32 lanes x PILE_PACK: one warp's sweep */

/* v folded over the block with `op`, valid in every thread: each warp by
 * a butterfly, then thread 0 folds the warps in order. For the maximum, op
 * is the CPU's running step, and since each thread started from x[0], as
 * the CPU does, the maximum is NaN only when x[0] is, as there (the value
 * taken is thread 0's). */
template <typename V, typename Op> __device__ V block_fold(V v, V *sh, Op op)
{
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)(blockDim.x / 32); w++) v = op(v, sh[w]);
        sh[0] = v;
    }
    __syncthreads();
    v = sh[0];
    __syncthreads(); /* sh may be reused at once */
    return v;
}

struct max_step {
    __device__ float operator()(float a, float b) const { return pile_max_step(a, b); }
};
struct min_int {
    __device__ int operator()(int a, int b) const { return min(a, b); }
};

template <typename T>
__global__ void __launch_bounds__(CE_THREADS)
    softmax_ce_kernel(T *logits, float *losses, int32_t *correct, const int32_t *targets, int V, int Vp, float grad_scale, bool vec)
{
    __shared__ float shf[32];
    __shared__ int shi[32];
    __shared__ double shd[32];
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
    const int row = blockIdx.x;
    T *x = logits + (size_t)row * Vp;
    const int tgt = targets[row];
    /* a target outside [0, V) cannot be scored: treat it as ignored */
    const bool use = tgt >= 0 && tgt < V;
    const float xt = use ? pile_cuda_load(x[tgt]) : 0.0f; /* read before any thread writes the row */
    float f[PILE_PACK];

    /* 1: the maximum over the V real columns */
    float mx = pile_cuda_load(x[0]);
    for (int j = threadIdx.x * PILE_PACK; j < V; j += blockDim.x * PILE_PACK) {
        pile_load_pack(f, x + j, (size_t)(V - j), vec);
#pragma unroll
        for (int e = 0; e < PILE_PACK; e++)
            if (j + e < V) mx = pile_max_step(mx, f[e]);
    }
    mx = block_fold(mx, shf, max_step());

    /* 2: the first column holding the maximum (ties: the lowest id), and
     * the sum of exp(x - mx), chunk by chunk */
    int am = V;
    double sum = 0.0; /* this warp's chunks, the same in every lane */
    for (int j0 = warp * CE_CHUNK; j0 < V; j0 += nwarps * CE_CHUNK) {
        const int j = j0 + lane * PILE_PACK;
        float ps = 0.0f;
        if (j < V) {
            pile_load_pack(f, x + j, (size_t)(V - j), vec);
#pragma unroll
            for (int e = 0; e < PILE_PACK; e++) {
                if (j + e >= V) continue;
                if (use && f[e] == mx && j + e < am) am = j + e;
                ps += pile_vexpf(f[e] - mx);
            }
        }
        sum += (double)pile_warp_sum(ps);
    }
    am = block_fold(am, shi, min_int());
    if (am == V) am = V - 1; /* no column equals the maximum (NaN): the CPU's scan ends on the last */
    if (lane == 0) shd[warp] = sum;
    __syncthreads();
    if (threadIdx.x == 0) {
        double total = 0.0;
        for (int w = 0; w < nwarps; w++) total += shd[w];
        shd[0] = total;
        losses[row] = use ? (float)(log(total) + (double)mx - (double)xt) : 0.0f;
        correct[row] = use && am == tgt;
    }
    __syncthreads();
    const double total = shd[0];
    if (grad_scale == 0.0f) return;

    /* 3: the gradient of grad_scale * loss in place: (softmax - onehot) *
     * grad_scale on real columns, 0 on padded ones and on an ignored row */
    const float k = (float)(1.0 / total) * grad_scale;
    for (int j = threadIdx.x * PILE_PACK; j < Vp; j += blockDim.x * PILE_PACK) {
        pile_load_pack(f, x + j, (size_t)(Vp - j), vec);
#pragma unroll
        for (int e = 0; e < PILE_PACK; e++) {
            float g = 0.0f;
            if (use && j + e < V) {
                g = pile_vexpf(f[e] - mx) * k;
                if (j + e == tgt) g -= grad_scale;
            }
            f[e] = g;
        }
        pile_store_pack(x + j, f, (size_t)(Vp - j), vec);
    }
}

void pile__cuda_softmax_ce(pile_backend *be, pile_tensor logits, pile_tensor losses, pile_tensor correct, pile_tensor targets, int N,
                           int V, int Vp, float grad_scale)
{
    if (N <= 0) return;
    const bool vec = Vp % PILE_PACK == 0 && pile_aligned16(logits.data);
    PILE_CUDA_DISPATCH(logits.dtype, T,
                       PILE_LAUNCH((unsigned)N, CE_THREADS, pile__cuda_ctx(be)->stream, softmax_ce_kernel<T>)(
                           (T *)logits.data, (float *)losses.data, (int32_t *)correct.data, (const int32_t *)targets.data, V, Vp,
                           grad_scale, vec));
    pile__cuda_check(be, "softmax_ce");
}
