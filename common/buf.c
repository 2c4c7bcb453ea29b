/* Growable buffers: doubling growth, so appends are amortised O(1). */
#include "pile_buf.h"
#include "pile_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int grow(void **data, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t ncap = *cap ? *cap : 64;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2 / elem) return PILE_ENOMEM;
        ncap *= 2;
    }
    void *p = realloc(*data, ncap * elem);
    if (!p) return PILE_ENOMEM;
    *data = p;
    *cap = ncap;
    return 0;
}

int pile_buf_reserve(pile_buf *b, size_t extra)
{
    if (b->failed || extra > SIZE_MAX - b->len) {
        b->failed = 1;
        return PILE_ENOMEM;
    }
    void *d = b->data;
    int rc = grow(&d, &b->cap, b->len + extra, 1);
    b->data = d;
    if (rc) b->failed = 1;
    return rc;
}

int pile_buf_append(pile_buf *b, const void *src, size_t n)
{
    if (pile_buf_reserve(b, n)) return PILE_ENOMEM;
    if (n) memcpy(b->data + b->len, src, n);
    b->len += n;
    return 0;
}

int pile_buf_append_str(pile_buf *b, const char *s)
{
    return pile_buf_append(b, s, strlen(s));
}

int pile_buf_printf(pile_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) { /* an encoding error or over INT_MAX: the text has a hole like a failed append */
        b->failed = 1;
        return PILE_EINVAL;
    }
    if (pile_buf_reserve(b, (size_t)n + 1)) return PILE_ENOMEM;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void pile_buf_free(pile_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->failed = 0;
}

int pile_ids_reserve(pile_ids *v, size_t extra)
{
    if (extra > SIZE_MAX / 4 - v->len) return PILE_ENOMEM;
    void *d = v->data;
    int rc = grow(&d, &v->cap, v->len + extra, sizeof(uint32_t));
    v->data = d;
    return rc;
}

int pile_ids_push(pile_ids *v, uint32_t id)
{
    if (v->len == v->cap && pile_ids_reserve(v, 1)) return PILE_ENOMEM;
    v->data[v->len++] = id;
    return 0;
}

int pile_ids_append(pile_ids *v, const uint32_t *src, size_t n)
{
    if (pile_ids_reserve(v, n)) return PILE_ENOMEM;
    if (n) memcpy(v->data + v->len, src, n * sizeof(uint32_t));
    v->len += n;
    return 0;
}

void pile_ids_free(pile_ids *v)
{
    free(v->data);
    v->data = NULL;
    v->len = v->cap = 0;
}
