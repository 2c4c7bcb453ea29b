/* Lowercase hexadecimal, for fingerprints and checksums written into
 * manifests, checkpoints and messages. */
#ifndef PILE_HEX_H
#define PILE_HEX_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* out[0..2n) = the lowercase hex digits of bytes[0..n), out[2n] = '\0';
 * out holds 2n + 1 chars. */
void pile_hex_encode(char *out, const void *bytes, size_t n);

/* The inverse, for exactly 2n lowercase hex digits followed by '\0'
 * (what pile_hex_encode writes): 0 and out[0..n) filled, or -1 (out may
 * be partly written) for any other string, NULL included. */
int pile_hex_decode(void *out, size_t n, const char *s);

#ifdef __cplusplus
}
#endif

#endif
