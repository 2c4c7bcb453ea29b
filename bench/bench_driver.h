/* What the small C drivers of bench/attention.sh and bench/scalar-math.sh
 * share (bench/driver.sh compiles them with this folder on the include
 * path): the process's CPU clock, which a shared machine's load stretches
 * less than wall time, and the best of `reps` timed calls; and what the
 * meson-built bench programs beside this file share: a median, and AdamW
 * inputs. Everything static inline: a program takes what it uses. */
#ifndef PILE_BENCH_DRIVER_H
#define PILE_BENCH_DRIVER_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline double cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* var = the least CPU time of `reps` runs of call (reps: in scope) */
#define BEST(var, call)                                  \
    for (int r_ = 0; r_ < reps; r_++) {                  \
        double t0_ = cpu();                              \
        call;                                            \
        double t_ = cpu() - t0_;                         \
        var = t_ < var ? t_ : var;                       \
    }

static inline int bench_cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of t[0..n), sorted in place. */
static inline double bench_median(double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, bench_cmp_double);
    return t[n / 2];
}

/* AdamW's parameters p and gradients g, n of each, values that keep the
 * arithmetic ordinary (no denormals, no zeros); moments may start at 0. */
static inline void bench_adamw_inputs(float *p, float *g, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        p[i] = 0.02f * (float)((i * 2654435761u) % 1000) / 1000.0f;
        g[i] = 1e-3f * (float)(i % 97);
    }
}

#endif
