/* The CUDA backend's optimizer ops over F32 tensors: the sum of squares
 * (the global gradient norm), scale, and AdamW. sumsq is two passes in
 * fp64 (per-block partials over fixed chunks of x, then one block adding
 * them in order), so its bits depend on n alone: no atomics, not even the
 * number of multiprocessors. AdamW is backend_cpu.c's adamw_range element
 * for element, with the step's scalars computed on the host by the CPU
 * backend's very expressions. */
#include <math.h>

#include "kernels.cuh"

/* ---------------------------------------------------------------- sumsq */

/* Partials: at most PILE_CUDA_SUMSQ_PARTS chunks of at least
 * PILE_CUDA_SUMSQ_MIN_CHUNK elements (a multiple of PILE_PACK), one block
 * each (cuda_sizes.h, which sizes their scratch). */
#define SUMSQ_THREADS 256

/* part[b] = sum of x[i]^2 over chunk b, in double: each thread walks its
 * packs in order, then the block's fixed tree. (double)x * x is exact in
 * double, as in the CPU's loop. */
__global__ void sumsq_part_kernel(double *part, const float *x, size_t n, size_t chunk, bool vec)
{
    __shared__ double sh[32];
    const size_t i0 = (size_t)blockIdx.x * chunk, i1 = i0 + chunk < n ? i0 + chunk : n;
    double s = 0.0;
    for (size_t i = i0 + (size_t)threadIdx.x * PILE_PACK; i < i1; i += (size_t)blockDim.x * PILE_PACK) {
        float f[PILE_PACK];
        pile_load_pack(f, x + i, i1 - i, vec);
#pragma unroll
        for (int e = 0; e < PILE_PACK; e++) s += (double)f[e] * f[e];
    }
    s = pile_block_sum(s, sh);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

/* *out = the partials' sum, one block, a fixed tree. */
__global__ void sumsq_total_kernel(double *out, const double *part, int nparts)
{
    __shared__ double sh[32];
    double s = 0.0;
    for (int k = threadIdx.x; k < nparts; k += blockDim.x) s += part[k];
    s = pile_block_sum(s, sh);
    if (threadIdx.x == 0) *out = s;
}

double pile__cuda_sumsq(pile_backend *be, pile_tensor x, size_t n)
{
    pile_cuda_ctx *ctx = pile__cuda_ctx(be);
    if (!n) return 0.0;
    size_t chunk = (n + PILE_CUDA_SUMSQ_PARTS - 1) / PILE_CUDA_SUMSQ_PARTS;
    chunk = chunk < PILE_CUDA_SUMSQ_MIN_CHUNK ? PILE_CUDA_SUMSQ_MIN_CHUNK : (chunk + PILE_PACK - 1) / PILE_PACK * PILE_PACK;
    const int nparts = (int)((n + chunk - 1) / chunk); /* at most PILE_CUDA_SUMSQ_PARTS */
    double *part = (double *)pile__cuda_scratch(be, (size_t)pile__cuda_sumsq_scratch_size(), "sumsq");
    if (!part) return NAN;
    PILE_LAUNCH(nparts, SUMSQ_THREADS, ctx->stream, sumsq_part_kernel)(part + 1, (const float *)x.data, n, chunk,
                                                                       pile_aligned16(x.data));
    if (pile__cuda_check(be, "sumsq")) return NAN;
    PILE_LAUNCH(1, SUMSQ_THREADS, ctx->stream, sumsq_total_kernel)(part, part + 1, nparts);
    if (pile__cuda_check(be, "sumsq")) return NAN;
    double s = NAN;
    cudaMemcpyAsync(&s, part, sizeof s, cudaMemcpyDeviceToHost, ctx->stream);
    if (pile__cuda_check(be, "sumsq")) return NAN;
    be->iface->sync(be); /* the result is read here: wait, and record a fault as every sync does */
    return be->failed ? NAN : s;
}

/* ---------------------------------------------------------------- scale */

__global__ void scale_kernel(float *x, size_t n, float s, bool vec)
{
    for (size_t k = pile_first_pack(); k * PILE_PACK < n; k += pile_pack_stride()) {
        const size_t i = k * PILE_PACK;
        float v[PILE_PACK];
        pile_load_pack(v, x + i, n - i, vec);
#pragma unroll
        for (int e = 0; e < PILE_PACK; e++) v[e] *= s;
        pile_store_pack(x + i, v, n - i, vec);
    }
}

void pile__cuda_scale(pile_backend *be, pile_tensor x, size_t n, float s)
{
    if (!n) return;
    PILE_LAUNCH(pile_blocks(be, (n + PILE_PACK - 1) / PILE_PACK), PILE_THREADS, pile__cuda_ctx(be)->stream, scale_kernel)(
        (float *)x.data, n, s, pile_aligned16(x.data));
    pile__cuda_check(be, "scale");
}

/* ---------------------------------------------------------------- AdamW */

/* The step's scalars, backend_cpu.c's cpu_adamw: torch's single-tensor
 * AdamW forms them in double and rounds them to float where they meet the
 * tensors. */
typedef struct adamw_scalars {
    float decay, step, bc2s, eps, beta2, w1, w2;
} adamw_scalars;

/* backend_cpu.c's adamw_range, operation for operation. */
__global__ void adamw_kernel(float *p, const float *g, float *m, float *v, size_t n, adamw_scalars a, bool vec)
{
    for (size_t k = pile_first_pack(); k * PILE_PACK < n; k += pile_pack_stride()) {
        const size_t i = k * PILE_PACK;
        float pp[PILE_PACK], gg[PILE_PACK], mm[PILE_PACK], vv[PILE_PACK];
        pile_load_pack(pp, p + i, n - i, vec);
        pile_load_pack(gg, g + i, n - i, vec);
        pile_load_pack(mm, m + i, n - i, vec);
        pile_load_pack(vv, v + i, n - i, vec);
#pragma unroll
        for (int e = 0; e < PILE_PACK; e++) {
            const float gi = gg[e];
            const float pi = pp[e] * a.decay;
            const float mi = mm[e] + a.w1 * (gi - mm[e]); /* torch's lerp */
            const float vi = vv[e] * a.beta2 + a.w2 * gi * gi;
            mm[e] = mi;
            vv[e] = vi;
            pp[e] = pi - a.step * (mi / (sqrtf(vi) / a.bc2s + a.eps));
        }
        pile_store_pack(m + i, mm, n - i, vec);
        pile_store_pack(v + i, vv, n - i, vec);
        pile_store_pack(p + i, pp, n - i, vec);
    }
}

void pile__cuda_adamw(pile_backend *be, pile_tensor p, pile_tensor g, pile_tensor m, pile_tensor v, size_t n, float lr,
                      float beta1, float beta2, float eps, float wd, int64_t t)
{
    if (!n) return;
    const double bc1 = 1.0 - pow((double)beta1, (double)t);
    const double bc2 = 1.0 - pow((double)beta2, (double)t);
    adamw_scalars a;
    a.decay = (float)(1.0 - (double)lr * wd);
    a.step = (float)((double)lr / bc1);
    a.bc2s = (float)sqrt(bc2);
    a.eps = eps;
    a.beta2 = beta2;
    a.w1 = 1.0f - beta1;
    a.w2 = 1.0f - beta2;
    const bool vec = pile_aligned16(p.data) && pile_aligned16(g.data) && pile_aligned16(m.data) && pile_aligned16(v.data);
    PILE_LAUNCH(pile_blocks(be, (n + PILE_PACK - 1) / PILE_PACK), PILE_THREADS, pile__cuda_ctx(be)->stream, adamw_kernel)(
        (float *)p.data, (const float *)g.data, (float *)m.data, (float *)v.data, n, a, vec);
    pile__cuda_check(be, "adamw");
}
