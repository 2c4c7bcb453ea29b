/* What only json.cpp and its tests use: the small strict JSON validator that
 * locates errors (simdjson's DOM says what failed, not where) and serves as an
 * independent oracle for the differential tests and fuzz targets. */
#ifndef PILE_JSON_INTERNAL_H
#define PILE_JSON_INTERNAL_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Strict RFC 8259 check of s[0..n) with unbounded nesting (explicit stack)
 * and numbers checked for grammar only. Lone surrogate escapes are accepted
 * when allow_lone_surrogates is nonzero. Returns 1 when valid; else 0 with
 * *err_off = byte offset of the error and *why = a static message. */
int pile__json_validate(const char *s, size_t n, int allow_lone_surrogates, size_t *err_off, const char **why);

#ifdef __cplusplus
}
#endif

#endif
