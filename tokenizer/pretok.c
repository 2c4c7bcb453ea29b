/* GPT-2 pre-tokenization by hand: the pattern
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * as a direct scan with a byte table for ASCII and utf8proc categories above
 * it, because this runs once per piece and a regex engine costs more than
 * the BPE that follows. \s is Unicode White_Space, as in the Rust regex crate
 * tiktoken uses and in Oniguruma under Hugging Face tokenizers. The scanner
 * is inline in pretok_internal.h; this file holds its tables and the
 * out-of-line parts (non-ASCII characters). */
#include "pretok.h"
#include "pretok_internal.h"

#include <stdint.h>
#include <utf8proc.h>

/* ASCII classes: letters, digits, the six White_Space characters, all else
 * other; bytes >= 0x80 start or continue a multi-byte character. */
#define O PILE__CLS_OTHER
#define L PILE__CLS_LETTER
#define N PILE__CLS_NUMBER
#define W PILE__CLS_SPACE
#define M PILE__CLS_MULTI
#define M16 M, M, M, M, M, M, M, M, M, M, M, M, M, M, M, M
const unsigned char pile__pretok_byte_cls[256] = {
    O, O, O, O, O, O, O, O, O, W, W, W, W, W, O, O, /* 0x00 */
    O, O, O, O, O, O, O, O, O, O, O, O, O, O, O, O, /* 0x10 */
    W, O, O, O, O, O, O, O, O, O, O, O, O, O, O, O, /* 0x20 */
    N, N, N, N, N, N, N, N, N, N, O, O, O, O, O, O, /* 0x30 */
    O, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, /* 0x40 */
    L, L, L, L, L, L, L, L, L, L, L, O, O, O, O, O, /* 0x50 */
    O, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L, /* 0x60 */
    L, L, L, L, L, L, L, L, L, L, L, O, O, O, O, O, /* 0x70 */
    M16, M16, M16, M16, M16, M16, M16, M16,
};
#undef O
#undef L
#undef N
#undef W
#undef M
#undef M16

int pile__pretok_class(uint32_t cp)
{
    if (cp < 128) return pile__pretok_byte_cls[cp];
    switch (cp) {
    case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
        return PILE__CLS_SPACE;
    default:
        break;
    }
    if (cp >= 0x2000 && cp <= 0x200A) return PILE__CLS_SPACE;
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
        return PILE__CLS_LETTER;
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
        return PILE__CLS_NUMBER;
    default:
        return PILE__CLS_OTHER;
    }
}

size_t pile__utf8_next(const unsigned char *s, size_t n, size_t i, uint32_t *cp)
{
    unsigned c = s[i];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    /* Invalid input is outside the contract; read such a byte as one
     * "other" character so that a bad caller gets pieces, not a crash. */
    size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    if (len == 1 || i + len > n) {
        *cp = 0xFFFD;
        return 1;
    }
    uint32_t v = c & (0x3Fu >> (len - 1));
    for (size_t k = 1; k < len; k++) {
        unsigned d = s[i + k];
        if ((d & 0xC0) != 0x80) {
            *cp = 0xFFFD;
            return 1;
        }
        v = (v << 6) | (d & 0x3F);
    }
    *cp = v;
    return len;
}

int pile__pretok_class_at(const unsigned char *s, size_t n, size_t i, size_t *len)
{
    uint32_t cp;
    *len = pile__utf8_next(s, n, i, &cp);
    return pile__pretok_class(cp);
}

size_t pile__pretok_gpt2_next(const char *text, size_t n, size_t pos)
{
    return pile__pretok_gpt2_scan((const unsigned char *)text, n, pos);
}
