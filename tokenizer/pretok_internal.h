/* Character classes behind the GPT-2 pre-tokenizer, shared by pretok.c and
 * the BPE encoder's inlined fast path. Internal to the tokenizer module. */
#ifndef PILE_PRETOK_INTERNAL_H
#define PILE_PRETOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

enum {
    PILE__CLS_OTHER = 0,  /* [^\s\p{L}\p{N}] */
    PILE__CLS_LETTER = 1, /* \p{L}: Lu Ll Lt Lm Lo */
    PILE__CLS_NUMBER = 2, /* \p{N}: Nd Nl No */
    PILE__CLS_SPACE = 3,  /* \s: Unicode White_Space */
};

extern const unsigned char pile__pretok_ascii_cls[128];

/* The class of a code point. */
int pile__pretok_class(uint32_t cp);

/* Decodes the character at s[i] (i < n) into *cp and returns its length; an
 * invalid byte reads as U+FFFD of length 1. */
size_t pile__utf8_next(const unsigned char *s, size_t n, size_t i, uint32_t *cp);

#endif
