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

#endif
