/* What the kernel files (kernels_*.cu) share: 8-element packs loaded and
 * stored with 16-byte accesses where the tensors allow it, grid sizing for
 * grid-stride loops, deterministic warp and block reductions, and device
 * copies of the CPU backend's scalar functions (its expf, GELU, the
 * dropout draw) so that the two backends compute the same function; those
 * are __host__ __device__, so a host program can check them against the
 * CPU backend where no GPU exists.
 *
 * Rounding: the CPU backend is C11 compiled by GCC, which in ISO mode does
 * not contract a * b + c into a fused multiply-add; nvcc does unless told
 * -fmad=false. The kernel files are written to give the CPU's bits for
 * every element-wise result when built with -fmad=false (reductions are in
 * another order than the CPU's SIMD lanes anyway, so only a tolerance
 * holds there); with nvcc's default they differ in the last bit here and
 * there. */
#ifndef PILE_KERNELS_CUH
#define PILE_KERNELS_CUH

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cuda_dtype.cuh"
#include "cuda_internal.h"

/* ------------------------------------------------------------- packs */

/* Element-wise kernels move 8 consecutive elements per thread: 16 bytes of
 * a 16-bit dtype, 32 of fp32, so that a pack is whole 16-byte loads when
 * its base is 16-byte aligned. */
#define PILE_PACK 8

static inline bool pile_aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* f[0..8) = p[0..min(left, 8)) widened to float (0 beyond `left`). vec:
 * p is 16-byte aligned (the caller checked the tensor's base, and packs
 * start at multiples of 8 elements), so a full pack is 16-byte loads. */
template <typename T> __device__ __forceinline__ void pile_load_pack(float (&f)[PILE_PACK], const T *p, size_t left, bool vec)
{
    if (vec && left >= PILE_PACK) {
        constexpr int W = PILE_PACK * sizeof(T) / 16;
        uint4 u[W];
#pragma unroll
        for (int w = 0; w < W; w++) u[w] = reinterpret_cast<const uint4 *>(p)[w];
        T t[PILE_PACK];
        memcpy(t, u, sizeof t);
#pragma unroll
        for (int k = 0; k < PILE_PACK; k++) f[k] = pile_cuda_load(t[k]);
    } else {
#pragma unroll
        for (int k = 0; k < PILE_PACK; k++) f[k] = (size_t)k < left ? pile_cuda_load(p[k]) : 0.0f;
    }
}

/* p[0..min(left, 8)) = f rounded to T (cuda_dtype.cuh: the CPU emulation's
 * rounding). */
template <typename T> __device__ __forceinline__ void pile_store_pack(T *p, const float (&f)[PILE_PACK], size_t left, bool vec)
{
    if (vec && left >= PILE_PACK) {
        constexpr int W = PILE_PACK * sizeof(T) / 16;
        T t[PILE_PACK];
#pragma unroll
        for (int k = 0; k < PILE_PACK; k++) t[k] = pile_cuda_store<T>(f[k]);
        uint4 u[W];
        memcpy(u, t, sizeof u);
#pragma unroll
        for (int w = 0; w < W; w++) reinterpret_cast<uint4 *>(p)[w] = u[w];
    } else {
#pragma unroll
        for (int k = 0; k < PILE_PACK; k++)
            if ((size_t)k < left) p[k] = pile_cuda_store<T>(f[k]);
    }
}

/* --------------------------------------------------------------- grids */

#define PILE_THREADS 256 /* threads per block of the element-wise kernels */

/* Blocks for `items` work items of PILE_THREADS threads each: enough to
 * cover them, capped at 32 per multiprocessor (grid-stride loops do the
 * rest); at least 1. The split never changes a result: every element is
 * computed alone. */
static inline unsigned pile_blocks(pile_backend *be, size_t items)
{
    const size_t cap = (size_t)pile__cuda_ctx(be)->prop.multiProcessorCount * 32;
    size_t b = (items + PILE_THREADS - 1) / PILE_THREADS;
    return (unsigned)(b < 1 ? 1 : b < cap ? b : cap);
}

/* The first pack index of this thread and the grid's stride, in packs. */
__device__ __forceinline__ size_t pile_first_pack(void) { return (size_t)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ size_t pile_pack_stride(void) { return (size_t)gridDim.x * blockDim.x; }

/* ---------------------------------------------------------- reductions */

/* Sum over the 32 lanes of a warp by a fixed butterfly: every lane ends
 * with the same bits (each step adds the same two values in both lanes,
 * and addition commutes), whatever the schedule. */
__device__ __forceinline__ float pile_warp_sum(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ double pile_warp_sum(double v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Sum over a block of blockDim.x threads (a multiple of 32, at most
 * 1024): each warp's butterfly, then warp 0 adds the warps' sums by the
 * same butterfly (absent warps add 0). A fixed tree, so the same bits on
 * every run; the result is valid in thread 0. `shared` holds 32 values. */
template <typename F> __device__ F pile_block_sum(F v, F *shared)
{
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    v = pile_warp_sum(v);
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    if (warp == 0) v = pile_warp_sum(lane < (int)(blockDim.x / 32) ? shared[lane] : (F)0);
    __syncthreads(); /* `shared` may be reused at once */
    return v;
}

/* The CPU's running maximum, `mx = x > mx ? x : mx`: a NaN never replaces
 * a number (and one that starts the row stays), as in ce_row. */
__device__ __forceinline__ float pile_max_step(float mx, float x) { return x > mx ? x : mx; }

/* ------------------------------------------- the CPU's scalar functions */

__host__ __device__ __forceinline__ uint32_t pile_f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

__host__ __device__ __forceinline__ float pile_f32_of(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* backend_cpu.c's vexpf (Cephes' expf: range reduction by ln 2 in two
 * parts, degree-6 polynomial, 2^n in the exponent bits; inputs clamped to
 * [-87, 88], NaN stays NaN), operation for operation, so that GELU and the
 * softmax exponentials are the CPU's. */
__host__ __device__ __forceinline__ float pile_vexpf(float x)
{
    const uint32_t mlo = 0u - (uint32_t)(x < -87.0f), mhi = 0u - (uint32_t)(x > 88.0f);
    x = pile_f32_of((pile_f32_bits(x) & ~(mlo | mhi)) | (pile_f32_bits(-87.0f) & mlo) | (pile_f32_bits(88.0f) & mhi));
    const float t = x * 1.44269504088896341f + 12582912.0f;
    const float n = t - 12582912.0f;
    const int32_t ni = (int32_t)pile_f32_bits(t) - 0x4B400000;
    const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const float y = p * r * r + r + 1.0f;
    return y * pile_f32_of((uint32_t)(ni + 127) << 23);
}

/* trainer_internal.h's pile__mix64 and PILE__GOLDEN (splitmix64): dropout's
 * mask must be the CPU's for the same seed. */
__host__ __device__ __forceinline__ uint64_t pile_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
#define PILE_GOLDEN 0x9E3779B97F4A7C15ull

/* backend_cpu.c's dropout draw for element i of stream `seed`: the top 24
 * bits of splitmix64's output for counter i. */
__host__ __device__ __forceinline__ uint32_t pile_dropout_draw(uint64_t seed, uint64_t i)
{
    return (uint32_t)(pile_mix64(seed + (i + 1) * PILE_GOLDEN) >> 40);
}

#define PILE_GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define PILE_GELU_A 0.044715f

/* backend_cpu.c's gelu_fwd_range: HF gelu_new, 0.5 x (1 + tanh(u)) with
 * u = sqrt(2/pi) (x + 0.044715 x^3), as x * sigmoid(2u). */
__host__ __device__ __forceinline__ float pile_gelu(float x)
{
    const float u = PILE_GELU_K * (x + PILE_GELU_A * x * x * x);
    return x / (1.0f + pile_vexpf(-2.0f * u));
}

/* backend_cpu.c's gelu_bwd_range: d gelu / dx. */
__host__ __device__ __forceinline__ float pile_gelu_grad(float x)
{
    const float u = PILE_GELU_K * (x + PILE_GELU_A * x * x * x);
    const float sg = 1.0f / (1.0f + pile_vexpf(-2.0f * u)); /* (1 + tanh u) / 2 */
    const float sech2 = 4.0f * sg * (1.0f - sg);             /* 1 - tanh^2 u */
    return sg + 0.5f * x * sech2 * PILE_GELU_K * (1.0f + 3.0f * PILE_GELU_A * x * x);
}

#endif
