/* UTF-8 validation and repair after Unicode 15 Table 3-7 (well-formed byte
 * sequences). Repair substitutes one U+FFFD per maximal subpart (section 3.9),
 * which is also what Python's bytes.decode('utf-8', 'replace') does; ASCII
 * runs are checked 8 bytes at a time because most Pile text is ASCII. */
#include "pile_utf8.h"
#include "pile_error.h"

#include <stdint.h>
#include <string.h>

/* Length of the longest ASCII prefix of s[0..n). */
static size_t ascii_prefix(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i + 8 <= n) {
        uint64_t w;
        memcpy(&w, s + i, 8);
        if (w & UINT64_C(0x8080808080808080)) break;
        i += 8;
    }
    while (i < n && s[i] < 0x80) i++;
    return i;
}

/* Checks the sequence starting at s[0] (a non-ASCII byte). Returns its length
 * when it is well formed; otherwise 0 and *bad = the length of its maximal
 * subpart (the bytes one U+FFFD replaces, at least 1). */
static size_t check_seq(const unsigned char *s, size_t n, size_t *bad)
{
    unsigned c = s[0];
    size_t need;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        need = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0) lo = 0xA0;      /* no overlongs */
        else if (c == 0xED) hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0) lo = 0x90;      /* no overlongs */
        else if (c == 0xF4) hi = 0x8F; /* nothing above U+10FFFF */
    } else {
        *bad = 1; /* C0, C1, F5..FF, or a stray continuation byte */
        return 0;
    }
    if (n < 2 || s[1] < lo || s[1] > hi) {
        *bad = 1;
        return 0;
    }
    for (size_t k = 2; k < need; k++) {
        if (k >= n || (s[k] & 0xC0) != 0x80) {
            *bad = k;
            return 0;
        }
    }
    return need;
}

size_t pile_utf8_valid_prefix(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        i += ascii_prefix(s + i, n - i);
        if (i >= n) break;
        size_t bad;
        size_t k = check_seq(s + i, n - i, &bad);
        if (!k) return i;
        i += k;
    }
    return n;
}

int pile_utf8_valid(const char *s, size_t n)
{
    return pile_utf8_valid_prefix(s, n) == n;
}

long pile_utf8_repair(const char *str, size_t n, pile_buf *out)
{
    static const char fffd[3] = {'\xEF', '\xBF', '\xBD'};
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, run = 0; /* s[run..i) is valid and not yet copied */
    long subs = 0;
    if (pile_buf_reserve(out, n)) return PILE_ENOMEM;
    while (i < n) {
        i += ascii_prefix(s + i, n - i);
        if (i >= n) break;
        size_t bad;
        size_t k = check_seq(s + i, n - i, &bad);
        if (k) {
            i += k;
            continue;
        }
        if (pile_buf_append(out, s + run, i - run) || pile_buf_append(out, fffd, 3)) return PILE_ENOMEM;
        subs++;
        i += bad;
        run = i;
    }
    if (pile_buf_append(out, s + run, n - run)) return PILE_ENOMEM;
    return subs;
}

size_t pile_utf8_decode(const char *str, size_t n, unsigned *cp)
{
    const unsigned char *s = (const unsigned char *)str;
    unsigned c = s[0];
    if (c < 0x80 || n < 2) {
        *cp = c;
        return 1;
    }
    if (c < 0xE0) {
        *cp = ((c & 0x1Fu) << 6) | (s[1] & 0x3Fu);
        return 2;
    }
    if (c < 0xF0 || n < 4) {
        if (n < 3) {
            *cp = c;
            return 1;
        }
        *cp = ((c & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu);
        return 3;
    }
    *cp = ((c & 0x07u) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) | (s[3] & 0x3Fu);
    return 4;
}

size_t pile_utf8_encode(unsigned cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

int pile_utf8_escape(const char *s, size_t n, size_t max, pile_buf *out)
{
    size_t end = max && n > max ? max : n;
    size_t i = 0;
    while (i < end) {
        unsigned char c = (unsigned char)s[i];
        size_t k = pile_utf8_valid_prefix(s + i, end - i < 4 ? end - i : 4);
        if (c < 0x20 || c == 0x7f) {
            pile_buf_printf(out, "\\x%02x", c);
            i++;
        } else if (c == '\\') {
            pile_buf_append(out, "\\\\", 2);
            i++;
        } else if (c < 0x80) {
            pile_buf_append(out, s + i, 1);
            i++;
        } else if (k == 0) {
            pile_buf_printf(out, "\\x%02x", c); /* an invalid byte, or a character cut by max */
            i++;
        } else {
            unsigned cp;
            size_t len = pile_utf8_decode(s + i, end - i, &cp);
            if (cp >= 0x80 && cp <= 0x9f) pile_buf_printf(out, "\\u%04x", cp);
            else pile_buf_append(out, s + i, len);
            i += len;
        }
    }
    if (end < n) pile_buf_append(out, "...", 3);
    if (!out->failed && pile_buf_reserve(out, 1) == 0) out->data[out->len] = '\0';
    return out->failed ? PILE_ENOMEM : 0;
}
