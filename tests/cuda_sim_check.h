/* What the tests of CUDA kernels on the host (cuda_sim.h) share: random
 * inputs already representable in a dtype, and the comparison with the
 * CPU backend's result within a tolerance. Include after pile_test.h. */
#ifndef PILE_CUDA_SIM_CHECK_H
#define PILE_CUDA_SIM_CHECK_H

#include <math.h>
#include <stdio.h>

#include <vector>

#include "backend.h"
#include "pile_test.h"
#include "precision.h"

static inline float urand(void) /* [-1, 1) */
{
    return (float)((double)(pile_test_rng() >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

/* n values of amplitude amp, already representable in dt. */
static inline std::vector<float> rnd(size_t n, float amp, pile_dtype dt)
{
    std::vector<float> v(n);
    for (float &x : v) x = amp * urand();
    if (dt == PILE_DTYPE_BF16 || dt == PILE_DTYPE_F16)
        pile_precision_round(v.data(), n, dt == PILE_DTYPE_BF16 ? PILE_PRECISION_BF16 : PILE_PRECISION_FP16);
    return v;
}

/* The relative tolerance of a value stored in dt: summation order alone
 * in fp32; in bf16 / fp16 one or two units in the last place, where the
 * two sides' fp32 sums round apart. */
static inline double rel_of(pile_dtype dt) { return dt == PILE_DTYPE_F32 ? 1e-5 : dt == PILE_DTYPE_BF16 ? 1.0 / 128 : 1.0 / 1024; }

/* 0 when every got[i] is within rel |want[i]| + abs_ of want[i] (NaN is
 * not); else 1, with the worst element printed. */
static inline int close_to(const char *what, const float *got, const float *want, size_t n, double rel, double abs_)
{
    size_t bad = 0, worst = 0;
    double worst_ex = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)got[i] - want[i]), tol = rel * fabs(want[i]) + abs_;
        if (!(d <= tol)) {
            const double ex = d != d ? INFINITY : d / tol;
            if (!bad || ex > worst_ex) worst = i, worst_ex = ex;
            bad++;
        }
    }
    if (bad)
        printf("# %s: %zu of %zu off, worst [%zu]: %.9g against %.9g\n", what, bad, n, worst, got[worst],
               want[worst]);
    return bad != 0;
}

/* The same with dt's tolerance (rel_of) and abs 1e-5. */
static inline int close_to(const char *what, const float *got, const float *want, size_t n, pile_dtype dt)
{
    return close_to(what, got, want, n, rel_of(dt), 1e-5);
}

#endif
