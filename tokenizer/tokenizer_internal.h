/* What a tokenizer backend provides. pile_tokenizer_open picks a backend by
 * the spec; the public functions dispatch through this table. */
#ifndef PILE_TOKENIZER_INTERNAL_H
#define PILE_TOKENIZER_INTERNAL_H

#include "pile_tokenizer.h"

typedef struct pile__tok_vtable {
    const char *kind;
    void (*close)(pile_tokenizer *tok);
    int (*decode)(const pile_tokenizer *tok, const uint32_t *ids, size_t n, pile_buf *out, pile_err *err);
    pile_encoder *(*encoder_create)(const pile_tokenizer *tok);
    void (*encoder_free)(pile_encoder *enc);
    int (*encode)(pile_encoder *enc, const char *text, size_t len, pile_ids *out, pile_err *err);
} pile__tok_vtable;

typedef struct pile__special {
    char *text;
    uint32_t id;
} pile__special;

/* Every backend's tokenizer struct starts with this header. */
struct pile_tokenizer {
    const pile__tok_vtable *vt;
    uint32_t vocab_size;
    uint32_t eot_id;
    uint8_t fp[PILE_TOKENIZER_FP_BYTES];
    pile__special *specials;
    size_t n_specials;
    char *pattern; /* NULL or the Split regex */
};

/* Every backend's encoder struct starts with this header. */
struct pile_encoder {
    const pile_tokenizer *tok;
};

/* Backends. */
int pile__bytes_open(pile_tokenizer **out, pile_err *err);
/* Opens the BPE backend from any of its file formats (see pile_tokenizer_open). */
int pile__bpe_open(pile_tokenizer **out, const char *spec, pile_err *err);
/* The built-in GPT-2 (gpt2_data.c). */
int pile__bpe_open_builtin(pile_tokenizer **out, pile_err *err);

/* Frees the fields of the common header (specials, pattern); backends call it from close. */
void pile__tok_free_header(pile_tokenizer *tok);

#endif
