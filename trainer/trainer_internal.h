/* What several files of trainer/ share and nothing outside it uses. */
#ifndef PILE_TRAINER_INTERNAL_H
#define PILE_TRAINER_INTERNAL_H

#include <stdint.h>

/* pile__mix64 (splitmix64), on which the trainer's seeds, dropout masks,
 * initialisation streams and data order are built, and PILE__GOLDEN:
 * with the CPU backend's other functions the CUDA kernels share. */
#include "cpu/scalar_math.h"

/* A hot loop also compiled for AVX-512 and AVX2, picked at load time
 * (GCC's function multi-versioning: the release build targets baseline
 * x86-64, whose loops are 4-wide SSE). Put it on plain functions over a
 * range: OpenMP's outlined loop bodies would not inherit it. GCC only
 * (clang builds are the fuzz targets, where speed does not matter). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define PILE__CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PILE__CLONES
#endif

#endif
