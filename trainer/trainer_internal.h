/* What several files of trainer/ share and nothing outside it uses. */
#ifndef PILE_TRAINER_INTERNAL_H
#define PILE_TRAINER_INTERNAL_H

#include <stdint.h>

/* The splitmix64 finaliser (Steele, Lea, Flood 2014; Stafford's variant
 * 13 constants): a bijection on 64 bits that mixes every input bit into
 * every output bit. The trainer's seeds, dropout masks, initialisation
 * streams and data order are all built on it, so they repeat on any
 * machine. */
static inline uint64_t pile__mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* splitmix64's golden-ratio increment. */
#define PILE__GOLDEN 0x9E3779B97F4A7C15ull

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
