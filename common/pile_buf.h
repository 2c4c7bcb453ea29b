/* Growable buffers shared by every module: bytes and token ids.
 * Plain value structs (zero-initialise to get an empty one); the owner frees
 * with pile_buf_free / pile_ids_free. Not thread-safe: one owner at a time. */
#ifndef PILE_BUF_H
#define PILE_BUF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pile_buf {
    char *data;
    size_t len;
    size_t cap;
    int failed; /* an append ran out of memory: later ones fail too, so a
                 * builder can append freely and check once at the end */
} pile_buf;

typedef struct pile_ids {
    uint32_t *data;
    size_t len;
    size_t cap;
} pile_ids;

/* Ensure room for `extra` more bytes beyond len. 0 or PILE_ENOMEM (also
 * for every call after one failed, until pile_buf_free). */
int pile_buf_reserve(pile_buf *b, size_t extra);
int pile_buf_append(pile_buf *b, const void *src, size_t n);
int pile_buf_append_str(pile_buf *b, const char *s);
int pile_buf_printf(pile_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void pile_buf_free(pile_buf *b);

int pile_ids_reserve(pile_ids *v, size_t extra);
int pile_ids_push(pile_ids *v, uint32_t id);
int pile_ids_append(pile_ids *v, const uint32_t *src, size_t n);
void pile_ids_free(pile_ids *v);

#ifdef __cplusplus
}
#endif

#endif
