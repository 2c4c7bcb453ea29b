/* The tokenizer interface used by pile-prep, pile-dump, pile-tok and the
 * trainer. Backends: a byte-level tokenizer (256 byte ids plus end-of-text)
 * and byte-level BPE (GPT-2 / tiktoken / Hugging Face tokenizer.json).
 *
 * Threading: a pile_tokenizer is immutable after open and may be shared by
 * any number of threads. Encoding state (scratch, caches) lives in a
 * pile_encoder, one per thread. */
#ifndef PILE_TOKENIZER_H
#define PILE_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "pile_buf.h"
#include "pile_error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PILE_TOKENIZER_FP_BYTES 16

typedef struct pile_tokenizer pile_tokenizer;
typedef struct pile_encoder pile_encoder;

/* Opens a tokenizer. spec:
 *   NULL or "bytes"            the byte-level tokenizer (ids 0-255 are bytes, 256 is <|endoftext|>)
 *   "gpt2"                     GPT-2's encoder.json + vocab.bpe, built into the library (the
 *                              same tokenizer, fingerprint included, as a folder of those files;
 *                              a folder named gpt2 is "./gpt2")
 *   a tokenizer.json           Hugging Face BPE
 *   a folder                   with encoder.json + vocab.bpe (GPT-2's files)
 *   a *.tiktoken file          tiktoken ranks; the pattern is chosen by the file
 *                              name (r50k_base, p50k_base, cl100k_base, o200k_base)
 * A file it cannot use is an error that says why, never a fall-back. */
int pile_tokenizer_open(pile_tokenizer **out, const char *spec, pile_err *err);

/* 1 when spec names a tokenizer built into the library ("gpt2"), whose
 * files need no path. */
int pile_tokenizer_is_builtin(const char *spec);

/* File i (0, 1, ...) of the built-in tokenizer `spec`, for writing a copy
 * ("gpt2": encoder.json, vocab.bpe): its base name and bytes, static and
 * read-only. Returns 1, or 0 past the last file or when spec is not a
 * built-in one. Thread-safe. */
int pile_tokenizer_builtin_file(const char *spec, size_t i, const char **name, const void **data, size_t *len);

/* Finds the tokenizer a data folder recorded. `spec` is the spec as written
 * in a file inside folder `base` (pile-prep's manifest.json): "bytes" and
 * absolute paths are taken as they are; a relative path is looked for in
 * `base` first, then from the current folder (older pile-prep manifests
 * recorded the spec as typed, from wherever pile-prep ran); built-in names
 * ("gpt2") are taken as they are too. A candidate is
 * accepted only if it opens and its fingerprint is `fp`. On success `out`
 * gets the spec to open from here (a path made absolute, or "bytes"),
 * NUL-terminated, and *tok (when tok != NULL) the open tokenizer, which the
 * caller closes. Otherwise PILE_EMISMATCH (a candidate has another
 * fingerprint) or PILE_ENOENT (none opens), with a message naming what was
 * tried. */
int pile_tokenizer_resolve(const char *spec, const char *base, const uint8_t fp[PILE_TOKENIZER_FP_BYTES],
                           pile_buf *out, pile_tokenizer **tok, pile_err *err);

/* Frees; accepts NULL. Encoders made from it must be freed first. */
void pile_tokenizer_close(pile_tokenizer *tok);

/* Number of ids (every id is < this). */
uint32_t pile_tokenizer_vocab_size(const pile_tokenizer *tok);

/* The end-of-text id placed between documents. */
uint32_t pile_tokenizer_eot_id(const pile_tokenizer *tok);

/* A short kind name: "bytes", "bpe". */
const char *pile_tokenizer_kind(const pile_tokenizer *tok);

/* A stable fingerprint of everything that decides the ids (vocabulary,
 * merges, pattern, special tokens, normaliser): equal fingerprints mean
 * identical encodings. */
void pile_tokenizer_fingerprint(const pile_tokenizer *tok, uint8_t fp[PILE_TOKENIZER_FP_BYTES]);

/* Appends the bytes of ids[0..n) to out (special tokens as their text).
 * An id out of range is PILE_EINVAL. Thread-safe. */
int pile_tokenizer_decode(const pile_tokenizer *tok, const uint32_t *ids, size_t n, pile_buf *out, pile_err *err);

/* Special tokens: count, and the i-th one's text and id. */
size_t pile_tokenizer_special_count(const pile_tokenizer *tok);
const char *pile_tokenizer_special(const pile_tokenizer *tok, size_t i, uint32_t *id);

/* The pre-tokenization pattern ("" if none), for `pile-tok info`. */
const char *pile_tokenizer_pattern(const pile_tokenizer *tok);

/* Appends a Hugging Face tokenizer.json (the `tokenizers` library's format,
 * what transformers' AutoTokenizer loads) that encodes text as this
 * tokenizer does, its special tokens as added tokens: the bytes tokenizer
 * as a BPE of the 256 byte characters without merges; GPT-2's files as
 * their vocabulary and merges; tiktoken ranks as every split of each token
 * into two tokens, in the token's rank order, with ignore_merges (two
 * different splits of one token adjacent at once are the one case that
 * may order otherwise: by position in tiktoken, by list order here);
 * another pattern than GPT-2's as a Split spelled for Oniguruma.
 * PILE_EINVAL for what came from a tokenizer.json and cannot be written
 * back (non-special added tokens, Oniguruma patterns): that file is the
 * one to use. Thread-safe. */
int pile_tokenizer_write_hf_json(const pile_tokenizer *tok, pile_buf *out, pile_err *err);

/* An encoder for one thread. NULL on OOM. The tokenizer must outlive it. */
pile_encoder *pile_encoder_create(const pile_tokenizer *tok);
void pile_encoder_free(pile_encoder *enc);

/* Appends the ids of text[0..len) to out. The text is always ordinary text:
 * a literal "<|endoftext|>" in it is encoded as the characters it is, never
 * as the special id. text must be valid UTF-8 (pile_utf8_repair first);
 * returns 0, PILE_ENOMEM, or PILE_EINVAL with a message. */
int pile_encoder_encode(pile_encoder *enc, const char *text, size_t len, pile_ids *out, pile_err *err);


/* ------------------------------------------------------------- training */

/* Options of the byte-level BPE trainer (GPT-2 pre-tokenization). */
typedef struct pile_bpe_train_opts {
    uint32_t vocab_size;             /* total, including the 256 byte tokens and the specials */
    uint32_t min_frequency;          /* a pair seen fewer times is never merged (default 2 when 0) */
    const char *const *specials;     /* special tokens; NULL: just "<|endoftext|>" */
    size_t n_specials;
    int threads;                     /* 0: all cores */
    int progress;                    /* nonzero: progress on stderr */
} pile_bpe_train_opts;

/* Trains on the `text` of every line of the given .jsonl / .jsonl.zst
 * files (streamed) and writes a Hugging Face tokenizer.json (BPE model,
 * ByteLevel pre-tokenizer and decoder) to out_path, atomically. */
int pile_bpe_train(const char *const *inputs, size_t n_inputs, const pile_bpe_train_opts *opts,
                   const char *out_path, pile_err *err);

#ifdef __cplusplus
}
#endif

#endif
