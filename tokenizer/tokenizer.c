/* The tokenizer front: picks a backend from the spec and dispatches. */
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

int pile_tokenizer_open(pile_tokenizer **out, const char *spec, pile_err *err)
{
    *out = NULL;
    if (!spec || !*spec || strcmp(spec, "bytes") == 0) return pile__bytes_open(out, err);
    if (pile_tokenizer_is_builtin(spec)) return pile__bpe_open_builtin(out, err);
    return pile__bpe_open(out, spec, err);
}

void pile_tokenizer_close(pile_tokenizer *tok)
{
    if (tok) tok->vt->close(tok);
}

void pile__tok_free_header(pile_tokenizer *tok)
{
    for (size_t i = 0; i < tok->n_specials; i++) free(tok->specials[i].text);
    free(tok->specials);
    free(tok->pattern);
    tok->specials = NULL;
    tok->pattern = NULL;
    tok->n_specials = 0;
}

uint32_t pile_tokenizer_vocab_size(const pile_tokenizer *tok) { return tok->vocab_size; }
uint32_t pile_tokenizer_eot_id(const pile_tokenizer *tok) { return tok->eot_id; }
const char *pile_tokenizer_kind(const pile_tokenizer *tok) { return tok->vt->kind; }
const char *pile_tokenizer_pattern(const pile_tokenizer *tok) { return tok->pattern ? tok->pattern : ""; }
size_t pile_tokenizer_special_count(const pile_tokenizer *tok) { return tok->n_specials; }

void pile_tokenizer_fingerprint(const pile_tokenizer *tok, uint8_t fp[PILE_TOKENIZER_FP_BYTES])
{
    memcpy(fp, tok->fp, PILE_TOKENIZER_FP_BYTES);
}

const char *pile_tokenizer_special(const pile_tokenizer *tok, size_t i, uint32_t *id)
{
    if (i >= tok->n_specials) return NULL;
    if (id) *id = tok->specials[i].id;
    return tok->specials[i].text;
}

int pile_tokenizer_decode(const pile_tokenizer *tok, const uint32_t *ids, size_t n, pile_buf *out, pile_err *err)
{
    return tok->vt->decode(tok, ids, n, out, err);
}

pile_encoder *pile_encoder_create(const pile_tokenizer *tok)
{
    return tok->vt->encoder_create(tok);
}

void pile_encoder_free(pile_encoder *enc)
{
    if (enc) enc->tok->vt->encoder_free(enc);
}

int pile_encoder_encode(pile_encoder *enc, const char *text, size_t len, pile_ids *out, pile_err *err)
{
    return enc->tok->vt->encode(enc, text, len, out, err);
}
