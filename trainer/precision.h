/* The number formats of mixed-precision training: the precision enum the
 * settings name, and bf16 and IEEE fp16 on the CPU: conversions from fp32
 * with round to nearest even and back, and the in-place rounding of fp32
 * arrays by which the CPU backend emulates the points where a GPU stores
 * 16-bit values, so that mixed precision is tested where no GPU exists.
 *
 * The conversions are integer arithmetic on the bits: the same results
 * under any floating-point environment (rounding mode, flush-to-zero) and
 * on every machine, and what GPUs give for every number (NaN payloads
 * aside: a GPU gives one canonical NaN):
 *  - bf16 (1 sign, 8 exponent, 7 mantissa bits) has fp32's range: a value
 *    past the largest finite bf16 rounds to infinity; subnormals are kept.
 *  - fp16 (1 sign, 5 exponent, 10 mantissa bits) saturates to infinity
 *    from 65520 on (the midpoint between its largest finite value, 65504,
 *    and 2^16), as CUDA's __float2half_rn and x86's F16C do; values under
 *    2^-14 become fp16 subnormals (steps of 2^-24), and 2^-25 or less
 *    rounds to zero, keeping the sign.
 *  - A NaN stays a NaN of the same sign with the top bits of its payload,
 *    unquieted; when none of those bits is set the lowest is, so that it
 *    does not turn into infinity (numpy's rule for float16). So every
 *    16-bit pattern, NaNs included, survives the trip to fp32 and back.
 * All functions here are pure and thread-safe. */
#ifndef PILE_PRECISION_H
#define PILE_PRECISION_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What the forward and backward compute in (--precision). */
typedef enum pile_precision {
    PILE_PRECISION_FP32 = 0,
    PILE_PRECISION_BF16 = 1,
    PILE_PRECISION_FP16 = 2,
} pile_precision;

/* "fp32", "bf16" or "fp16"; "?" for a value outside the enum. */
const char *pile_precision_name(pile_precision p);
/* Reads "fp32" / "float32", "bf16" / "bfloat16", "fp16" / "float16" (the
 * names of DeepSpeed, PyTorch and Hugging Face). 1 with *out set, or 0. */
int pile_precision_parse(const char *s, pile_precision *out);

/* One value. The 16-bit values are bit patterns (a GPU's storage). */
uint16_t pile_fp32_to_bf16(float x);
float pile_bf16_to_fp32(uint16_t h);
uint16_t pile_fp32_to_fp16(float x);
float pile_fp16_to_fp32(uint16_t h);

/* Arrays of n values; dst and src do not overlap. */
void pile_fp32_to_bf16_array(uint16_t *dst, const float *src, size_t n);
void pile_bf16_to_fp32_array(float *dst, const uint16_t *src, size_t n);
void pile_fp32_to_fp16_array(uint16_t *dst, const float *src, size_t n);
void pile_fp16_to_fp32_array(float *dst, const uint16_t *src, size_t n);

/* Rounds x[0..n) in place to the nearest value of precision p (bf16 or
 * fp16; fp32 leaves x as it is): x[i] becomes exactly
 * pile_bf16_to_fp32(pile_fp32_to_bf16(x[i])) (fp16 alike). Vectorised;
 * runs on the calling thread, so a backend splits large arrays across its
 * threads itself. */
void pile_precision_round(float *x, size_t n, pile_precision p);

#ifdef __cplusplus
}
#endif

#endif
