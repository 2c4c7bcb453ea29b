/* Tests of bf16 and fp16 (trainer/precision.h): every 16-bit pattern
 * decoded against the formats' definitions and back to itself, hand-picked
 * fp32 values (ties to even, the largest finite, overflow to infinity, the
 * subnormals, signed zeros, NaN payloads) against bits worked out by hand,
 * and the vectorised array and in-place paths against the one-value
 * conversions over every exponent, every rounding-relevant low bit pattern
 * and random values, at odd lengths and offsets. numpy and PyTorch check
 * the same conversions in tests/reference/precision_ref.py. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pile_test.h"
#include "precision.h"

static uint32_t bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static float from_bits(uint32_t u)
{
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* fp16 pattern h decoded from the format's definition, in double */
static double fp16_value(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 31 ? (m ? NAN : INFINITY) : e ? ldexp(1024 + m, e - 25) : ldexp(m, -24);
    return s ? -v : v;
}

static void test_round_trips(void)
{
    TEST("bf16: every pattern decodes to its fp32 and converts back to itself");
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = pile_bf16_to_fp32((uint16_t)h);
        if (bits(f) != h << 16 || pile_fp32_to_bf16(f) != h) {
            if (bad++ < 5) PILE_FAIL_("bf16 0x%04x -> 0x%08x -> 0x%04x", h, bits(f), pile_fp32_to_bf16(f));
        }
    }
    ASSERT_EQ(bad, 0);

    TEST("fp16: every pattern decodes to its value (NaN to NaN, payload kept) and converts back to itself");
    bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = pile_fp16_to_fp32((uint16_t)h);
        double want = fp16_value((uint16_t)h);
        int ok = isnan(want) ? isnan(f) && (bits(f) >> 31) == (h >> 15) && ((bits(f) >> 13) & 0x3FF) == (h & 0x3FF)
                             : (double)f == want && !signbit(f) == !signbit(want);
        if (!ok || pile_fp32_to_fp16(f) != h) {
            if (bad++ < 5) PILE_FAIL_("fp16 0x%04x -> 0x%08x (%g, want %g) -> 0x%04x", h, bits(f), f, want,
                                      pile_fp32_to_fp16(f));
        }
    }
    ASSERT_EQ(bad, 0);
}

typedef struct {
    uint32_t in;
    uint16_t out;
    const char *what;
} edge;

static const edge fp16_edges[] = {
    {0x3F800000, 0x3C00, "1"},
    {0xC0000000, 0xC000, "-2"},
    {0x00000000, 0x0000, "+0"},
    {0x80000000, 0x8000, "-0"},
    {0x3F801000, 0x3C00, "1 + 2^-11: a tie, down to the even 1"},
    {0x3F803000, 0x3C02, "1 + 3 x 2^-11: a tie, up to the even 1 + 2^-9"},
    {0x3F801001, 0x3C01, "just over the tie: up"},
    {0x3F800FFF, 0x3C00, "just under the tie: down"},
    {0x45001000, 0x6800, "2049: a tie between 2048 and 2050, down to even"},
    {0x45003000, 0x6802, "2051: a tie, up to even 2052"},
    {0x477FE000, 0x7BFF, "65504, the largest finite"},
    {0xC77FE000, 0xFBFF, "-65504"},
    {0x477FEFFF, 0x7BFF, "just under 65520: the largest finite"},
    {0x477FF000, 0x7C00, "65520: a tie between 65504 (odd) and 2^16, to infinity"},
    {0x47800000, 0x7C00, "65536: infinity"},
    {0x49742400, 0x7C00, "1e6: infinity"},
    {0x7F7FFFFF, 0x7C00, "the largest fp32: infinity"},
    {0xFF7FFFFF, 0xFC00, "minus the largest fp32: -infinity"},
    {0x7F800000, 0x7C00, "infinity"},
    {0xFF800000, 0xFC00, "-infinity"},
    {0x38800000, 0x0400, "2^-14, the smallest normal"},
    {0x387FC000, 0x03FF, "1023 x 2^-24, the largest subnormal"},
    {0x387FE000, 0x0400, "1023.5 x 2^-24: a tie, up to the even 2^-14"},
    {0x387FA000, 0x03FE, "1022.5 x 2^-24: a tie, down to the even 1022"},
    {0x33800000, 0x0001, "2^-24, the smallest subnormal"},
    {0xB3800000, 0x8001, "-2^-24"},
    {0x33000000, 0x0000, "2^-25: a tie, down to the even 0"},
    {0xB3000000, 0x8000, "-2^-25: to -0"},
    {0x33000001, 0x0001, "just over 2^-25: the smallest subnormal"},
    {0x33C00000, 0x0002, "3 x 2^-25: a tie, up to the even 2 x 2^-24"},
    {0x34200000, 0x0002, "5 x 2^-25: a tie, down to the even 2 x 2^-24"},
    {0x32FFFFFF, 0x0000, "just under 2^-25: 0"},
    {0x00000001, 0x0000, "the smallest fp32 subnormal: 0"},
    {0x807FFFFF, 0x8000, "the largest negative fp32 subnormal: -0"},
    {0x7FC00000, 0x7E00, "quiet NaN"},
    {0xFFC00000, 0xFE00, "negative quiet NaN"},
    {0x7FA00000, 0x7D00, "signalling NaN, payload in the top bits: kept, not quieted"},
    {0x7FFFFFFF, 0x7FFF, "NaN, every payload bit"},
    {0x7F800001, 0x7C01, "NaN with its payload only in the dropped bits: stays NaN"},
    {0xFF801FFF, 0xFC01, "negative NaN, payload only in the dropped bits"},
    {0x7F802000, 0x7C01, "NaN, the lowest kept payload bit"},
};

static const edge bf16_edges[] = {
    {0x3F800000, 0x3F80, "1"},
    {0x80000000, 0x8000, "-0"},
    {0x3F808000, 0x3F80, "1 + 2^-8: a tie, down to the even 1"},
    {0x3F818000, 0x3F82, "1 + 3 x 2^-8: a tie, up to even"},
    {0x3F808001, 0x3F81, "just over the tie: up"},
    {0x3F807FFF, 0x3F80, "just under the tie: down"},
    {0xBF818000, 0xBF82, "negative tie, up in magnitude to even"},
    {0x7F7F0000, 0x7F7F, "the largest finite bf16"},
    {0x7F7F7FFF, 0x7F7F, "just under the tie past it"},
    {0x7F7F8000, 0x7F80, "a tie between the largest finite (odd) and 2^128: infinity"},
    {0x7F7FFFFF, 0x7F80, "the largest fp32: infinity"},
    {0xFF7FFFFF, 0xFF80, "minus the largest fp32: -infinity"},
    {0x7F800000, 0x7F80, "infinity"},
    {0x00010000, 0x0001, "the smallest bf16 subnormal"},
    {0x00008000, 0x0000, "half of it: a tie, down to 0"},
    {0x00018000, 0x0002, "1.5 of it: a tie, up to even 2"},
    {0x00008001, 0x0001, "just over half of it: up"},
    {0x80010000, 0x8001, "the smallest negative subnormal"},
    {0x007FFFFF, 0x0080, "the largest fp32 subnormal: up to the smallest normal"},
    {0x00000001, 0x0000, "the smallest fp32 subnormal: 0"},
    {0x7FC00000, 0x7FC0, "quiet NaN"},
    {0xFFC00001, 0xFFC0, "negative quiet NaN, low payload dropped"},
    {0x7F810000, 0x7F81, "signalling NaN: kept, not quieted"},
    {0x7F800001, 0x7F81, "NaN with its payload only in the dropped bits: stays NaN"},
    {0xFF80FFFF, 0xFF81, "negative NaN, payload only in the dropped bits"},
};

static void test_edges(void)
{
    TEST("fp16: hand-picked values");
    for (size_t i = 0; i < sizeof fp16_edges / sizeof fp16_edges[0]; i++) {
        const edge *e = &fp16_edges[i];
        uint16_t got = pile_fp32_to_fp16(from_bits(e->in));
        if (got != e->out) PILE_FAIL_("0x%08x (%s): 0x%04x, want 0x%04x", e->in, e->what, got, e->out);
        float r = from_bits(e->in);
        pile_precision_round(&r, 1, PILE_PRECISION_FP16);
        if (bits(r) != bits(pile_fp16_to_fp32(e->out)))
            PILE_FAIL_("0x%08x (%s) rounded in place: 0x%08x", e->in, e->what, bits(r));
    }
    TEST("bf16: hand-picked values");
    for (size_t i = 0; i < sizeof bf16_edges / sizeof bf16_edges[0]; i++) {
        const edge *e = &bf16_edges[i];
        uint16_t got = pile_fp32_to_bf16(from_bits(e->in));
        if (got != e->out) PILE_FAIL_("0x%08x (%s): 0x%04x, want 0x%04x", e->in, e->what, got, e->out);
        float r = from_bits(e->in);
        pile_precision_round(&r, 1, PILE_PRECISION_BF16);
        if (bits(r) != (uint32_t)e->out << 16)
            PILE_FAIL_("0x%08x (%s) rounded in place: 0x%08x", e->in, e->what, bits(r));
    }

    TEST("precision names: parsed and printed");
    pile_precision p = PILE_PRECISION_FP32;
    ASSERT(pile_precision_parse("bfloat16", &p) && p == PILE_PRECISION_BF16);
    ASSERT(pile_precision_parse("fp16", &p) && p == PILE_PRECISION_FP16);
    ASSERT(pile_precision_parse("float32", &p) && p == PILE_PRECISION_FP32);
    ASSERT(!pile_precision_parse("fp8", &p) && p == PILE_PRECISION_FP32);
    ASSERT_STR_EQ(pile_precision_name(PILE_PRECISION_BF16), "bf16");
    ASSERT_STR_EQ(pile_precision_name((pile_precision)7), "?");
}

/* Fills v with the next chunk of the test set; returns how many (0 at the
 * end). For each sign and exponent: every low 13-bit pattern (fp16's
 * rounding bits) under an even and an odd kept bit, below random and
 * all-ones top bits; the patterns around bf16's rounding point; then
 * random bit patterns. */
static size_t next_chunk(uint32_t *v, size_t cap, uint32_t *se, int *phase)
{
    size_t n = 0;
    while (*phase == 0 && n + 4 * 8192 + 12 <= cap) {
        uint32_t top = *se << 23;
        /* the top mantissa bits random, and all ones (where a carry
         * reaches the exponent) */
        uint32_t his[2] = {(uint32_t)(pile_test_rng() & 0x3FE) << 13, 0x3FEu << 13};
        for (int k = 0; k < 2; k++)
            for (uint32_t lo = 0; lo < 8192; lo++) {
                v[n++] = top | his[k] | lo;
                v[n++] = top | his[k] | 0x2000 | lo;
            }
        static const uint32_t around[] = {0, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFF};
        uint32_t bh = (uint32_t)(pile_test_rng() & 0x7E) << 16;
        for (int k = 0; k < 6; k++) {
            v[n++] = top | bh | around[k];
            v[n++] = top | bh | 0x10000 | around[k];
        }
        if (++*se == 512) *phase = 1;
    }
    if (n) return n;
    if (*phase >= 1 && *phase <= 8) {
        for (; n < cap; n++) v[n] = (uint32_t)pile_test_rng();
        ++*phase;
    }
    return n;
}

static void test_arrays(void)
{
    TEST("arrays and in-place rounding equal the one-value conversions (every exponent, 25M values)");
    size_t cap = 1 << 20;
    /* one spare element on each side: odd offsets and lengths */
    uint32_t *v = malloc(cap * 4);
    float *xs = malloc((cap + 2) * 4), *r = malloc((cap + 2) * 4), *back = malloc((cap + 2) * 4);
    uint16_t *h = malloc((cap + 2) * 2);
    if (!v || !xs || !r || !back || !h) {
        PILE_FAIL_("out of memory");
        goto out;
    }
    pile_test_rng_state = 20261203;
    uint32_t se = 0;
    int phase = 0, bad = 0;
    size_t total = 0, n;
    while ((n = next_chunk(v, cap, &se, &phase)) > 0 && bad < 5) {
        /* inputs off the vector alignment, outputs at two offsets, some
         * lengths odd */
        size_t off = total & 1, len = n - (total % 3 == 0);
        for (size_t i = 0; i < n; i++) xs[1 + i] = from_bits(v[i]);
        const float *x = xs + 1;
        total += n;
        for (int fmt = 0; fmt < 2; fmt++) {
            pile_precision p = fmt ? PILE_PRECISION_FP16 : PILE_PRECISION_BF16;
            memcpy(r + off, x, len * 4);
            pile_precision_round(r + off, len, p);
            if (fmt) pile_fp32_to_fp16_array(h + off, x, len);
            else pile_fp32_to_bf16_array(h + off, x, len);
            if (fmt) pile_fp16_to_fp32_array(back + off, h + off, len);
            else pile_bf16_to_fp32_array(back + off, h + off, len);
            for (size_t i = 0; i < len && bad < 5; i++) {
                uint16_t want = fmt ? pile_fp32_to_fp16(x[i]) : pile_fp32_to_bf16(x[i]);
                float wantf = fmt ? pile_fp16_to_fp32(want) : pile_bf16_to_fp32(want);
                if (h[off + i] != want || bits(r[off + i]) != bits(wantf) || bits(back[off + i]) != bits(wantf)) {
                    bad++;
                    PILE_FAIL_("%s 0x%08x: array 0x%04x, round 0x%08x, back 0x%08x; want 0x%04x, 0x%08x",
                               fmt ? "fp16" : "bf16", bits(x[i]), h[off + i], bits(r[off + i]), bits(back[off + i]),
                               want, bits(wantf));
                }
            }
        }
        memcpy(r, x, len * 4);
        pile_precision_round(r, len, PILE_PRECISION_FP32);
        if (memcmp(r, x, len * 4)) {
            bad++;
            PILE_FAIL_("fp32 rounding changed values");
        }
    }
    ASSERT_EQ(bad, 0);
    ASSERT(total > 25000000);
out:
    free(v);
    free(xs);
    free(r);
    free(back);
    free(h);
}

int main(void)
{
    test_round_trips();
    test_edges();
    test_arrays();
    return TEST_DONE();
}
