/* UTF-8 validation and repair. Repair follows the Unicode / WHATWG
 * "maximal subpart" practice (Unicode 15, section 3.9, U+FFFD substitution):
 * each maximal prefix of a valid sequence that cannot be completed, and each
 * byte that cannot start one, becomes one U+FFFD. Thread-safe (no state). */
#ifndef PILE_UTF8_H
#define PILE_UTF8_H

#include <stddef.h>

#include "pile_buf.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 if s[0..n) is valid UTF-8 (no surrogates, nothing above U+10FFFF). */
int pile_utf8_valid(const char *s, size_t n);

/* Length of the longest valid prefix of s[0..n) that ends on a character
 * boundary: n when the whole is valid, else the offset of the first bad byte. */
size_t pile_utf8_valid_prefix(const char *s, size_t n);

/* Appends a repaired copy of s[0..n) to out. Returns the number of U+FFFD
 * substitutions made (0 means out got an exact copy), or PILE_ENOMEM. */
long pile_utf8_repair(const char *s, size_t n, pile_buf *out);

/* Decodes one code point at s (n > 0) that is known valid; sets *cp, returns its length. */
size_t pile_utf8_decode(const char *s, size_t n, unsigned *cp);

/* Encodes cp (<= 0x10FFFF) into out[0..4); returns the length. */
size_t pile_utf8_encode(unsigned cp, char out[4]);

/* Appends s[0..n) as a terminal may show it: control characters (C0, DEL,
 * and C1 as UTF-8) written as \xNN or \u00NN, a backslash as \\, invalid
 * bytes as \xNN; everything else as it is. With max > 0, at most max bytes
 * of s are shown, then "...". 0 or PILE_ENOMEM. */
int pile_utf8_escape(const char *s, size_t n, size_t max, pile_buf *out);

#ifdef __cplusplus
}
#endif

#endif
