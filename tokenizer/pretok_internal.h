/* The GPT-2 pre-tokenizer's scanner, inline so that the BPE encoder's loop
 * over pieces pays no call per piece; pile__pretok_gpt2_next (pretok.h) is
 * the same scanner out of line. ASCII is classified by a byte table; only a
 * byte >= 0x80 leaves the inline path. Internal to the tokenizer module. */
#ifndef PILE_PRETOK_INTERNAL_H
#define PILE_PRETOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

enum {
    PILE__CLS_OTHER = 0,  /* [^\s\p{L}\p{N}] */
    PILE__CLS_LETTER = 1, /* \p{L}: Lu Ll Lt Lm Lo */
    PILE__CLS_NUMBER = 2, /* \p{N}: Nd Nl No */
    PILE__CLS_SPACE = 3,  /* \s: Unicode White_Space */
    PILE__CLS_MULTI = 4,  /* in pile__pretok_byte_cls only: a byte >= 0x80, decode it */
};

/* The class of every ASCII byte; PILE__CLS_MULTI for the others. */
extern const unsigned char pile__pretok_byte_cls[256];

/* The class of a code point. */
int pile__pretok_class(uint32_t cp);

/* Decodes the character at s[i] (i < n) into *cp and returns its length; an
 * invalid byte reads as U+FFFD of length 1. */
size_t pile__utf8_next(const unsigned char *s, size_t n, size_t i, uint32_t *cp);

/* The class and length of the (non-ASCII) character at s[i]. */
int pile__pretok_class_at(const unsigned char *s, size_t n, size_t i, size_t *len);

/* The end of the run of class c (not MULTI) that continues at i. */
static inline size_t pile__pretok_run_end(const unsigned char *s, size_t n, size_t i, int c)
{
    for (;;) {
        while (i < n && pile__pretok_byte_cls[s[i]] == c) i++;
        if (i == n || s[i] < 0x80) return i;
        size_t l;
        if (pile__pretok_class_at(s, n, i, &l) != c) return i;
        i += l;
    }
}

/* The end (exclusive) of the GPT-2 piece that starts at pos in s[0..n)
 * (pos < n), for the pattern in pretok.h:
 * - 's 't 're 've 'm 'll 'd;
 * - ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: a space joins the run after it;
 * - `\s+(?!\S)|\s+`: a run that ends the text is one piece; a run of two
 *   or more before a non-space leaves its last character to the next piece. */
static inline size_t pile__pretok_gpt2_scan(const unsigned char *s, size_t n, size_t pos)
{
    unsigned b0 = s[pos];
    int c = pile__pretok_byte_cls[b0];
    size_t i = pos + 1;
    if (c == PILE__CLS_MULTI) {
        size_t l;
        c = pile__pretok_class_at(s, n, pos, &l);
        i = pos + l;
    } else if (i < n) {
        if (b0 == ' ') {
            unsigned b1 = s[i];
            int c2 = pile__pretok_byte_cls[b1];
            size_t l2 = 1;
            if (c2 == PILE__CLS_MULTI) c2 = pile__pretok_class_at(s, n, i, &l2);
            if (c2 != PILE__CLS_SPACE) return pile__pretok_run_end(s, n, i + l2, c2);
        } else if (b0 == '\'') {
            unsigned d = s[i];
            if (d == 's' || d == 't' || d == 'm' || d == 'd') return i + 1;
            if (i + 1 < n) {
                unsigned e = s[i + 1];
                if ((d == 'r' && e == 'e') || (d == 'v' && e == 'e') || (d == 'l' && e == 'l')) return i + 2;
            }
        }
    }
    if (c != PILE__CLS_SPACE) return pile__pretok_run_end(s, n, i, c);

    size_t last = pos;
    while (i < n) {
        size_t l = 1;
        int c3 = pile__pretok_byte_cls[s[i]];
        if (c3 == PILE__CLS_MULTI) c3 = pile__pretok_class_at(s, n, i, &l);
        if (c3 != PILE__CLS_SPACE) break;
        last = i;
        i += l;
    }
    if (i == n || last == pos) return i;
    return last;
}

#endif
