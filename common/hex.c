/* Lowercase hexadecimal encoding and its strict inverse (pile_hex.h). */
#include "pile_hex.h"

#include <string.h>

void pile_hex_encode(char *out, const void *bytes, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *b = bytes;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = '\0';
}

int pile_hex_decode(void *out, size_t n, const char *s)
{
    if (!s || strlen(s) != 2 * n) return -1;
    unsigned char *o = out;
    for (size_t i = 0; i < 2 * n; i++) {
        int c = s[i], v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0) return -1;
        if (i % 2 == 0) o[i / 2] = (unsigned char)(v << 4);
        else o[i / 2] |= (unsigned char)v;
    }
    return 0;
}
