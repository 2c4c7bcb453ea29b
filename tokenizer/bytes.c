/* The byte-level tokenizer: id b is byte b, 256 is <|endoftext|>. It needs no
 * files, so pile-prep always has a tokenizer, and it is the simplest check of
 * the packing and shard code. */
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define BYTES_EOT 256u

static void bytes_close(pile_tokenizer *tok)
{
    pile__tok_free_header(tok);
    free(tok);
}

static int bytes_decode(const pile_tokenizer *tok, const uint32_t *ids, size_t n, pile_buf *out, pile_err *err)
{
    (void)tok;
    if (pile_buf_reserve(out, n)) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 256) {
            out->data[out->len++] = (char)ids[i];
        } else if (ids[i] == BYTES_EOT) {
            if (pile_buf_append_str(out, "<|endoftext|>")) return pile_err_set(err, PILE_ENOMEM, "out of memory");
        } else {
            return pile_err_set(err, PILE_EINVAL, "token id %u is out of range for the byte tokenizer (vocab 257)",
                                ids[i]);
        }
        if (i + 1 < n && pile_buf_reserve(out, n - i - 1)) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    }
    return 0;
}

static pile_encoder *bytes_encoder_create(const pile_tokenizer *tok)
{
    pile_encoder *enc = calloc(1, sizeof *enc);
    if (enc) enc->tok = tok;
    return enc;
}

static void bytes_encoder_free(pile_encoder *enc)
{
    free(enc);
}

static int bytes_encode(pile_encoder *enc, const char *text, size_t len, pile_ids *out, pile_err *err)
{
    (void)enc;
    if (len == 0) return 0; /* out->data may still be NULL: no pointer arithmetic on it */
    if (pile_ids_reserve(out, len)) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    const unsigned char *s = (const unsigned char *)text;
    uint32_t *d = out->data + out->len;
    for (size_t i = 0; i < len; i++) d[i] = s[i];
    out->len += len;
    return 0;
}

static const pile__tok_vtable bytes_vt = {
    .kind = "bytes",
    .close = bytes_close,
    .decode = bytes_decode,
    .encoder_create = bytes_encoder_create,
    .encoder_free = bytes_encoder_free,
    .encode = bytes_encode,
};

int pile__bytes_open(pile_tokenizer **out, pile_err *err)
{
    pile_tokenizer *tok = calloc(1, sizeof *tok);
    pile__special *sp = calloc(1, sizeof *sp);
    char *eot = strdup("<|endoftext|>");
    if (!tok || !sp || !eot) {
        free(tok);
        free(sp);
        free(eot);
        return pile_err_set(err, PILE_ENOMEM, "out of memory");
    }
    tok->vt = &bytes_vt;
    tok->vocab_size = 257;
    tok->eot_id = BYTES_EOT;
    sp->text = eot;
    sp->id = BYTES_EOT;
    tok->specials = sp;
    tok->n_specials = 1;
    static const char ident[] = "pile-bytes-v1:256+<|endoftext|>=256";
    XXH128_hash_t h = XXH3_128bits(ident, sizeof ident - 1);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    memcpy(tok->fp, c.digest, PILE_TOKENIZER_FP_BYTES);
    *out = tok;
    return 0;
}
