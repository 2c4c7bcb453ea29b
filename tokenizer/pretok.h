/* Pre-tokenization: splitting text into the pieces BPE runs on, with the
 * exact semantics of the GPT-2 pattern
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * (a hand-written matcher; Unicode categories from utf8proc). Internal to
 * the tokenizer module; the BPE encoder and the BPE trainer both use it. */
#ifndef PILE_PRETOK_H
#define PILE_PRETOK_H

#include <stddef.h>

/* The end (exclusive) of the GPT-2 piece that starts at pos in s[0..n)
 * (pos < n; s valid UTF-8). Iterate: for (p = 0; p < n; p = e) e = next(s, n, p). */
size_t pile__pretok_gpt2_next(const char *s, size_t n, size_t pos);

#endif
