/* What the kernel files (kernels_*.cu) share: 8-element packs loaded and
 * stored with 16-byte accesses where the tensors allow it, grid sizing for
 * grid-stride loops, deterministic warp and block reductions, and the
 * CPU backend's scalar functions (its expf, GELU, the dropout draw, from
 * trainer/cpu/scalar_math.h) so that the two backends compute the same
 * function; those are __host__ __device__, so a host program can check
 * the CPU backend's vectorised loops against them where no GPU exists.
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

/* Cephes' expf, GELU and its derivative, the dropout draw: the CPU
 * backend's own definitions (__host__ __device__ here). */
#include "cpu/scalar_math.h"

#endif
