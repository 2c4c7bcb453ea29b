/* bf16 and fp16 on the CPU (precision.h): integer arithmetic on the bits,
 * every case computed and the answer picked by masks, without branches,
 * so that the array loops vectorise (AVX2 and AVX-512 clones: per-lane
 * shifts and compares); GCC keeps a chain of ?: as branches there.
 *
 * Round to nearest even at bit k of a magnitude a: add 2^(k-1) - 1 plus
 * the bit that will become the lowest one kept, then drop the k low bits.
 * Below the halfway point nothing carries, above it one does, and exactly
 * at it the carry happens only when the kept lowest bit is odd. A carry
 * out of the mantissa moves into the exponent, which is the right answer
 * there too (the next binade, or infinity past the largest finite). */
#include "precision.h"

#include <string.h>

#include "trainer_internal.h"

static const char *const names[] = {"fp32", "bf16", "fp16"};

const char *pile_precision_name(pile_precision p)
{
    return (unsigned)p <= PILE_PRECISION_FP16 ? names[p] : "?";
}

int pile_precision_parse(const char *s, pile_precision *out)
{
    static const struct {
        const char *name;
        pile_precision p;
    } all[] = {
        {"fp32", PILE_PRECISION_FP32}, {"float32", PILE_PRECISION_FP32}, {"bf16", PILE_PRECISION_BF16},
        {"bfloat16", PILE_PRECISION_BF16}, {"fp16", PILE_PRECISION_FP16}, {"float16", PILE_PRECISION_FP16},
    };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(all[i].name, s) == 0) {
            *out = all[i].p;
            return 1;
        }
    return 0;
}

static inline uint32_t bits_of(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline float float_of(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

#define SIGN 0x80000000u
#define INF 0x7F800000u
/* fp16's limits as fp32 magnitudes: 2^-25 (half the smallest subnormal:
 * at or under it a value rounds to zero), 2^-14 (the smallest normal),
 * 65520 (from it on, infinity). */
#define H_ZERO_MAX 0x33000000u
#define H_NORMAL_MIN 0x38800000u
#define H_INF_MIN 0x477FF000u
/* fp32's exponent bias minus fp16's (127 - 15), in place */
#define H_REBIAS (112u << 23)

/* all ones when c, else 0 */
static inline uint32_t mask(int c) { return 0u - (uint32_t)c; }

/* ---------------------------------------------------------------- bf16 */

static inline uint16_t to_bf16(uint32_t u)
{
    uint32_t a = u & ~SIGN;
    /* a NaN keeps its sign and top payload; the lowest bit keeps it a NaN */
    uint32_t nan = (u >> 16) | ((u & 0x007F0000u) == 0);
    /* no carry reaches the sign: a non-NaN magnitude is at most INF */
    uint32_t rne = (u + 0x7FFFu + ((u >> 16) & 1)) >> 16;
    return (uint16_t)(a > INF ? nan : rne);
}

static inline uint32_t round_bf16(uint32_t u)
{
    uint32_t a = u & ~SIGN;
    uint32_t nan = (u & 0xFFFF0000u) | ((uint32_t)((u & 0x007F0000u) == 0) << 16);
    uint32_t rne = (u + 0x7FFFu + ((u >> 16) & 1)) & 0xFFFF0000u;
    return a > INF ? nan : rne;
}

uint16_t pile_fp32_to_bf16(float x) { return to_bf16(bits_of(x)); }

float pile_bf16_to_fp32(uint16_t h) { return float_of((uint32_t)h << 16); }

/* ---------------------------------------------------------------- fp16 */

/* The fp16 subnormal nearest to a magnitude a in (2^-25, 2^-14), in units
 * of 2^-24 (0x400, the smallest normal, when it rounds up to it). */
static inline uint32_t fp16_subnormal_units(uint32_t a)
{
    /* value = m * 2^(e - 150), so units of 2^-24 are m >> (126 - e); the
     * shift is 14 to 24 here, clamped so that other lanes stay defined */
    uint32_t e = a >> 23, m = (a & 0x007FFFFFu) | 0x00800000u;
    uint32_t s = e >= 102 && e <= 112 ? 126 - e : 24;
    return (m + (1u << (s - 1)) - 1 + ((m >> s) & 1)) >> s;
}

static inline uint16_t to_fp16(uint32_t u)
{
    uint32_t sign = (u >> 16) & 0x8000u, a = u & ~SIGN;
    uint32_t nan = 0x7C00u | ((a >> 13) & 0x03FFu);
    nan |= nan == 0x7C00u;
    uint32_t n = a - H_REBIAS;
    uint32_t normal = (n + 0x0FFFu + ((n >> 13) & 1)) >> 13;
    uint32_t is_nan = mask(a > INF), is_inf = mask(a >= H_INF_MIN) & ~is_nan;
    uint32_t is_normal = mask(a >= H_NORMAL_MIN) & ~mask(a >= H_INF_MIN);
    uint32_t is_sub = mask(a > H_ZERO_MAX) & ~mask(a >= H_NORMAL_MIN);
    uint32_t h = (nan & is_nan) | (0x7C00u & is_inf) | (normal & is_normal) | (fp16_subnormal_units(a) & is_sub);
    return (uint16_t)(sign | h);
}

static inline uint32_t fp16_bits_to_fp32(uint32_t h)
{
    uint32_t sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x03FFu;
    /* a subnormal is m * 2^-24: exact in fp32, and a normal fp32 there */
    uint32_t sub = bits_of((float)m * 0x1p-24f);
    /* exponent 31 (infinity, NaN) becomes 255, others rebias by 112 */
    uint32_t exp = (e + 112) | (mask(e == 0x1F) & 0xFFu);
    uint32_t r = ((exp << 23) | (m << 13)) & ~mask(e == 0);
    return sign | r | (sub & mask(e == 0));
}

/* to_fp16 then fp16_bits_to_fp32 without leaving the fp32 layout: drop
 * the bits under fp16's step, 13 in its normal range and one more per
 * binade under it (its subnormals' step is 2^-24 throughout). Up to 23
 * dropped bits the rule above holds; at 23 (exponent 103, [2^-24, 2^-23))
 * the lowest kept bit is the exponent's, odd as the one kept unit is.
 * Under 2^-24 a value becomes one step when past half a step, else zero. */
static inline uint32_t round_fp16(uint32_t u)
{
    uint32_t sign = u & SIGN, a = u & ~SIGN, e = a >> 23;
    uint32_t k = e >= 113 ? 13 : e >= 103 ? 126 - e : 23;
    uint32_t low = (1u << k) - 1;
    uint32_t r = (a + (low >> 1) + ((a >> k) & 1)) & ~low;
    uint32_t tiny = a > H_ZERO_MAX ? 0x33800000u : 0;
    uint32_t nan = (a & 0xFFFFE000u) | ((uint32_t)((a & 0x007FE000u) == 0) << 13);
    uint32_t is_nan = mask(a > INF), is_inf = mask(a >= H_INF_MIN) & ~is_nan, is_tiny = mask(e < 103);
    return sign | (nan & is_nan) | (INF & is_inf) | (tiny & is_tiny) | (r & ~(is_nan | is_inf | is_tiny));
}

uint16_t pile_fp32_to_fp16(float x) { return to_fp16(bits_of(x)); }

float pile_fp16_to_fp32(uint16_t h) { return float_of(fp16_bits_to_fp32(h)); }

/* -------------------------------------------------------------- arrays */

/* The loops read and write through uint32_t views of the floats (memcpy
 * per element would be the same code; the casts keep it readable for the
 * vectoriser). float and uint32_t may alias here: GCC's may_alias type. */
typedef uint32_t __attribute__((may_alias)) u32_alias;

PILE__CLONES void pile_fp32_to_bf16_array(uint16_t *dst, const float *src, size_t n)
{
    const u32_alias *s = (const u32_alias *)src;
#pragma omp simd
    for (size_t i = 0; i < n; i++) dst[i] = to_bf16(s[i]);
}

PILE__CLONES void pile_bf16_to_fp32_array(float *dst, const uint16_t *src, size_t n)
{
    u32_alias *d = (u32_alias *)dst;
#pragma omp simd
    for (size_t i = 0; i < n; i++) d[i] = (uint32_t)src[i] << 16;
}

PILE__CLONES void pile_fp32_to_fp16_array(uint16_t *dst, const float *src, size_t n)
{
    const u32_alias *s = (const u32_alias *)src;
#pragma omp simd
    for (size_t i = 0; i < n; i++) dst[i] = to_fp16(s[i]);
}

PILE__CLONES void pile_fp16_to_fp32_array(float *dst, const uint16_t *src, size_t n)
{
    u32_alias *d = (u32_alias *)dst;
#pragma omp simd
    for (size_t i = 0; i < n; i++) d[i] = fp16_bits_to_fp32(src[i]);
}

PILE__CLONES static void round_bf16_range(float *x, size_t n)
{
    u32_alias *u = (u32_alias *)x;
#pragma omp simd
    for (size_t i = 0; i < n; i++) u[i] = round_bf16(u[i]);
}

PILE__CLONES static void round_fp16_range(float *x, size_t n)
{
    u32_alias *u = (u32_alias *)x;
#pragma omp simd
    for (size_t i = 0; i < n; i++) u[i] = round_fp16(u[i]);
}

void pile_precision_round(float *x, size_t n, pile_precision p)
{
    if (p == PILE_PRECISION_BF16) round_bf16_range(x, n);
    else if (p == PILE_PRECISION_FP16) round_fp16_range(x, n);
}
