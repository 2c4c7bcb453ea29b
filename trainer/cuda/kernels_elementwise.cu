/* The CUDA backend's element-wise ops: convert, GELU forward and backward,
 * add, dropout. Each thread takes packs of 8 elements (kernels.cuh), widens
 * them to fp32, computes as backend_cpu.c does, operation for operation, and
 * rounds once on the store, where the CPU emulation rounds. No element
 * depends on another, so the grid's shape never changes a result. */
#include <math.h>

#include "kernels.cuh"

/* -------------------------------------------------------------- convert */

template <typename TD, typename TS> __global__ void convert_kernel(TD *dst, const TS *src, size_t n, bool vec)
{
    for (size_t k = pile_first_pack(); k * PILE_PACK < n; k += pile_pack_stride()) {
        const size_t i = k * PILE_PACK;
        float f[PILE_PACK];
        pile_load_pack(f, src + i, n - i, vec);
        pile_store_pack(dst + i, f, n - i, vec);
    }
}

/* Between float dtypes through fp32 (bf16 <-> fp16 too, as the CPU's
 * convert_range does); the same dtype is a copy. */
void pile__cuda_convert(pile_backend *be, pile_tensor dst, pile_tensor src, size_t n)
{
    pile_cuda_ctx *ctx = pile__cuda_ctx(be);
    if (!n) return;
    if (dst.dtype == src.dtype) {
        cudaMemcpyAsync(dst.data, src.data, n * pile_dtype_size(dst.dtype), cudaMemcpyDeviceToDevice, ctx->stream);
        pile__cuda_check(be, "convert");
        return;
    }
    const bool vec = pile_aligned16(dst.data) && pile_aligned16(src.data);
    const unsigned blocks = pile_blocks(be, (n + PILE_PACK - 1) / PILE_PACK);
    PILE_CUDA_DISPATCH(dst.dtype, TD,
                       PILE_CUDA_DISPATCH(src.dtype, TS,
                                          PILE_LAUNCH(blocks, PILE_THREADS, ctx->stream, convert_kernel<TD, TS>)(
                                              (TD *)dst.data, (const TS *)src.data, n, vec)));
    pile__cuda_check(be, "convert");
}

/* ----------------------------------------------------------------- GELU */

template <typename T> __global__ void gelu_fwd_kernel(T *out, const T *inp, size_t n, bool vec)
{
    for (size_t k = pile_first_pack(); k * PILE_PACK < n; k += pile_pack_stride()) {
        const size_t i = k * PILE_PACK;
        float x[PILE_PACK], y[PILE_PACK];
        pile_load_pack(x, inp + i, n - i, vec);
#pragma unroll
        for (int e = 0; e < PILE_PACK; e++) y[e] = pile_gelu(x[e]);
        pile_store_pack(out + i, y, n - i, vec);
    }
}

/* dinp += gelu'(inp) * dout: the sum in fp32, rounded once on the store. */
template <typename T> __global__ void gelu_bwd_kernel(T *dinp, const T *inp, const T *dout, size_t n, bool vec)
{
    for (size_t k = pile_first_pack(); k * PILE_PACK < n; k += pile_pack_stride()) {
        const size_t i = k * PILE_PACK;
        float x[PILE_PACK], d[PILE_PACK], acc[PILE_PACK];
        pile_load_pack(x, inp + i, n - i, vec);
        pile_load_pack(d, dout + i, n - i, vec);
        pile_load_pack(acc, dinp + i, n - i, vec);
#pragma unroll
        for (int e = 0; e < PILE_PACK; e++) acc[e] += pile_gelu_grad(x[e]) * d[e];
        pile_store_pack(dinp + i, acc, n - i, vec);
    }
}

void pile__cuda_gelu_fwd(pile_backend *be, pile_tensor out, pile_tensor inp, size_t n)
{
    if (!n) return;
    const bool vec = pile_aligned16(out.data) && pile_aligned16(inp.data);
    const unsigned blocks = pile_blocks(be, (n + PILE_PACK - 1) / PILE_PACK);
    PILE_CUDA_DISPATCH(out.dtype, T,
                       PILE_LAUNCH(blocks, PILE_THREADS, pile__cuda_ctx(be)->stream, gelu_fwd_kernel<T>)(
                           (T *)out.data, (const T *)inp.data, n, vec));
    pile__cuda_check(be, "gelu_fwd");
}

void pile__cuda_gelu_bwd(pile_backend *be, pile_tensor dinp, pile_tensor inp, pile_tensor dout, size_t n)
{
    if (!n) return;
    const bool vec = pile_aligned16(dinp.data) && pile_aligned16(inp.data) && pile_aligned16(dout.data);
    const unsigned blocks = pile_blocks(be, (n + PILE_PACK - 1) / PILE_PACK);
    PILE_CUDA_DISPATCH(dout.dtype, T,
                       PILE_LAUNCH(blocks, PILE_THREADS, pile__cuda_ctx(be)->stream, gelu_bwd_kernel<T>)(
                           (T *)dinp.data, (const T *)inp.data, (const T *)dout.data, n, vec));
    pile__cuda_check(be, "gelu_bwd");
}

/* ------------------------------------------------------------------ add */

/* out = a + b; out may be a or b: each pack is read whole before it is
 * written, by the same thread. */
template <typename T> __global__ void add_kernel(T *out, const T *a, const T *b, size_t n, bool vec)
{
    for (size_t k = pile_first_pack(); k * PILE_PACK < n; k += pile_pack_stride()) {
        const size_t i = k * PILE_PACK;
        float x[PILE_PACK], y[PILE_PACK];
        pile_load_pack(x, a + i, n - i, vec);
        pile_load_pack(y, b + i, n - i, vec);
#pragma unroll
        for (int e = 0; e < PILE_PACK; e++) x[e] += y[e];
        pile_store_pack(out + i, x, n - i, vec);
    }
}

void pile__cuda_add(pile_backend *be, pile_tensor out, pile_tensor a, pile_tensor b, size_t n)
{
    if (!n) return;
    const bool vec = pile_aligned16(out.data) && pile_aligned16(a.data) && pile_aligned16(b.data);
    const unsigned blocks = pile_blocks(be, (n + PILE_PACK - 1) / PILE_PACK);
    PILE_CUDA_DISPATCH(out.dtype, T,
                       PILE_LAUNCH(blocks, PILE_THREADS, pile__cuda_ctx(be)->stream, add_kernel<T>)(
                           (T *)out.data, (const T *)a.data, (const T *)b.data, n, vec));
    pile__cuda_check(be, "add");
}

/* -------------------------------------------------------------- dropout */

/* backend_cpu.c's cpu_dropout: element i is kept when its draw
 * (kernels.cuh) is >= thresh, and then scaled by s = 1 / (1 - p); thresh and s come from the host, computed
 * there exactly as the CPU computes them. So the mask is the CPU's, bit for
 * bit, for the same seed. */
template <typename T> __global__ void dropout_kernel(T *x, size_t n, uint32_t thresh, float s, uint64_t seed, bool vec)
{
    for (size_t k = pile_first_pack(); k * PILE_PACK < n; k += pile_pack_stride()) {
        const size_t i = k * PILE_PACK;
        float v[PILE_PACK];
        pile_load_pack(v, x + i, n - i, vec);
#pragma unroll
        for (int e = 0; e < PILE_PACK; e++) {
            v[e] = pile_dropout_draw(seed, i + e) >= thresh ? v[e] * s : 0.0f;
        }
        pile_store_pack(x + i, v, n - i, vec);
    }
}

void pile__cuda_dropout(pile_backend *be, pile_tensor x, size_t n, float p, uint64_t seed)
{
    pile_cuda_ctx *ctx = pile__cuda_ctx(be);
    if (!(p > 0.0f) || !n) return;
    if (p >= 1.0f) {
        cudaMemsetAsync(x.data, 0, n * pile_dtype_size(x.dtype), ctx->stream); /* all-zero bits are 0.0 in every dtype */
        pile__cuda_check(be, "dropout");
        return;
    }
    const uint32_t thresh = (uint32_t)ceil((double)p * 16777216.0);
    const float s = 1.0f / (1.0f - p);
    const bool vec = pile_aligned16(x.data);
    const unsigned blocks = pile_blocks(be, (n + PILE_PACK - 1) / PILE_PACK);
    PILE_CUDA_DISPATCH(x.dtype, T,
                       PILE_LAUNCH(blocks, PILE_THREADS, ctx->stream, dropout_kernel<T>)((T *)x.data, n, thresh, s, seed, vec));
    pile__cuda_check(be, "dropout");
}
