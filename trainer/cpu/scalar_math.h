/* The CPU backend's scalar functions that the CUDA kernels must compute
 * bit for bit the same (Cephes' expf, GELU and its derivative, the
 * dropout draw on splitmix64), defined once: GCC compiles them as C into
 * backend_cpu.c's `omp simd` loops, nvcc as __host__ __device__ into
 * trainer/cuda/kernels.cuh's kernels (and a host test, without a GPU).
 * Plain arithmetic only: no libm call, no branch (a select by masks), so
 * that the CPU's loops vectorise with them inlined. */
#ifndef PILE_SCALAR_MATH_H
#define PILE_SCALAR_MATH_H

#include <stdint.h>

#ifdef __CUDACC__
#define PILE_SCALAR static __host__ __device__ __forceinline__
#else
#define PILE_SCALAR static inline
#endif

/* The splitmix64 finaliser (Steele, Lea, Flood 2014; Stafford's variant
 * 13 constants): a bijection on 64 bits that mixes every input bit into
 * every output bit. The trainer's seeds, dropout masks, initialisation
 * streams and data order are all built on it, so they repeat on any
 * machine. */
PILE_SCALAR uint64_t pile__mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* splitmix64's golden-ratio increment. */
#define PILE__GOLDEN 0x9E3779B97F4A7C15ull

/* exp(x) for float as Cephes' expf computes it (range reduction by ln 2
 * split in two parts, degree-6 polynomial, 2^n built in the exponent
 * bits; within 2 ulp), written in plain arithmetic so that `omp simd` loops
 * vectorise it: libm's expf is a scalar call, and the softmaxes and GELU
 * spend most of their time in it. Inputs are clamped to [-87, 88]. */
PILE_SCALAR float pile_vexpf(float x)
{
    /* the clamps as a bitwise select on the comparisons' masks: exact
     * (x + (c - x) rounds far from c once |x| > 2^30: GELU of 1e6 gave
     * 5e5) and still vectorised (a conditional or a multiply-select here
     * stops GCC's vectoriser). A NaN x stays NaN. */
    union {
        float f;
        uint32_t u;
    } cx = {x}, clo = {-87.0f}, chi = {88.0f};
    uint32_t mlo = 0u - (uint32_t)(x < -87.0f), mhi = 0u - (uint32_t)(x > 88.0f);
    cx.u = (cx.u & ~(mlo | mhi)) | (clo.u & mlo) | (chi.u & mhi);
    x = cx.f;
    /* round to nearest by the 1.5 * 2^23 trick (no SSE4.1 roundps needed);
     * the integer is then the low mantissa bits of the shifted sum, read
     * through a union rather than converted: a NaN x must give NaN, not
     * the undefined behaviour of converting NaN to int */
    union {
        float f;
        int32_t i;
    } t;
    t.f = x * 1.44269504088896341f + 12582912.0f;
    float n = t.f - 12582912.0f;
    int32_t ni = t.i - 0x4B400000;
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * r * r + r + 1.0f;
    union {
        uint32_t u;
        float f;
    } e;
    e.u = (uint32_t)(ni + 127) << 23;
    return y * e.f;
}

#define PILE_GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define PILE_GELU_A 0.044715f

/* HF gelu_new, 0.5 x (1 + tanh(u)) with u = sqrt(2/pi) (x + 0.044715 x^3),
 * evaluated as x * sigmoid(2u), the same function: one expf and no
 * cancellation for either sign of x (libm's tanhf is slow and scalar). */
PILE_SCALAR float pile_gelu(float x)
{
    float u = PILE_GELU_K * (x + PILE_GELU_A * x * x * x);
    return x / (1.0f + pile_vexpf(-2.0f * u));
}

/* d gelu / dx. */
PILE_SCALAR float pile_gelu_grad(float x)
{
    float u = PILE_GELU_K * (x + PILE_GELU_A * x * x * x);
    float sg = 1.0f / (1.0f + pile_vexpf(-2.0f * u)); /* (1 + tanh u) / 2 */
    float sech2 = 4.0f * sg * (1.0f - sg);            /* 1 - tanh^2 u */
    return sg + 0.5f * x * sech2 * PILE_GELU_K * (1.0f + 3.0f * PILE_GELU_A * x * x);
}

/* Dropout's draw for element i of stream `seed`: the top 24 bits of
 * splitmix64's output for counter i, a stateless hash, so any element's
 * mask can be recomputed in any order (kept when draw >= ceil(p 2^24)). */
PILE_SCALAR uint32_t pile_dropout_draw(uint64_t seed, uint64_t i)
{
    return (uint32_t)(pile__mix64(seed + (i + 1) * PILE__GOLDEN) >> 40);
}

#endif
