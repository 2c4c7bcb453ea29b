/* What the small C drivers of bench/attention.sh and bench/scalar-math.sh
 * share (bench/driver.sh compiles them with this folder on the include
 * path): the process's CPU clock, which a shared machine's load stretches
 * less than wall time, and the best of `reps` timed calls. */
#ifndef PILE_BENCH_DRIVER_H
#define PILE_BENCH_DRIVER_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu(void)
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

#endif
