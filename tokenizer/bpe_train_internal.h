/* The BPE trainer's two halves, split so each can be tested alone: a map of
 * distinct pre-tokenized pieces to their counts (bpe_train_count.c), and the
 * merge loop that learns a vocabulary from such a map (bpe_train_merge.c).
 * bpe_train.c streams the inputs through threads into the first and hands
 * the result to the second. Internal to the tokenizer module. */
#ifndef PILE_BPE_TRAIN_INTERNAL_H
#define PILE_BPE_TRAIN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "pile_buf.h"
#include "pile_error.h"
#include "pile_tokenizer.h"

/* ---------------------------------------------------------------- counts */

/* piece bytes -> count. One owner at a time (each counting thread has its own). */
typedef struct pile__bpe_counts pile__bpe_counts;

pile__bpe_counts *pile__bpe_counts_create(void);
void pile__bpe_counts_free(pile__bpe_counts *c);

/* Adds n to the count of piece[0..len) (len > 0). 0 or PILE_ENOMEM. */
int pile__bpe_counts_add(pile__bpe_counts *c, const char *piece, size_t len, uint64_t n);

/* Adds every piece of src into dst, then empties src (keeping its memory). */
int pile__bpe_counts_absorb(pile__bpe_counts *dst, pile__bpe_counts *src);

/* Number of distinct pieces. */
size_t pile__bpe_counts_size(const pile__bpe_counts *c);

/* Drops every piece counted fewer than `below` times and compacts; returns
 * how many were dropped (memory stays as it was on PILE_ENOMEM: the map is
 * then left unchanged and the result is negative). */
long long pile__bpe_counts_prune(pile__bpe_counts *c, uint64_t below);

/* Iteration in table order: *i starts at 0; returns 1 with the piece, 0 at the end. */
int pile__bpe_counts_next(const pile__bpe_counts *c, size_t *i, const char **piece, size_t *len, uint64_t *count);

/* ----------------------------------------------------------------- model */

/* A learned byte-level BPE. Ids: the specials first (0..n_specials-1, in
 * the order given), then the 256 bytes in the order of their GPT-2
 * bytes_to_unicode characters (the printable bytes '!'..'~', 0xA1..0xAC,
 * 0xAE..0xFF, then the rest in byte order: the same order as sorting those
 * characters, which is what Hugging Face's trainer does, and GPT-2's own
 * first 256 ids), then the learned tokens in the order they were made. */
typedef struct pile__bpe_model {
    uint32_t n_specials;
    uint32_t n_tokens;      /* ids in use: n_specials + 256 + learned */
    pile_buf strs;          /* the tokens' bytes (specials: their text), back to back */
    uint64_t *str_off;      /* n_tokens + 1 offsets into strs */
    uint32_t *merges;       /* n_merges (left, right) id pairs, in rank order */
    uint32_t *merge_ids;    /* the id each merge makes (an existing id when the bytes were already a token) */
    size_t n_merges;
} pile__bpe_model;

/* Learns merges from the piece counts under opts (vocab_size, min_frequency,
 * specials; threads and progress are ignored). The counts are read, never
 * changed. Deterministic: the result depends only on the multiset of
 * (piece, count), never on the map's order. */
int pile__bpe_learn(const pile__bpe_counts *c, const pile_bpe_train_opts *opts, pile__bpe_model *m,
                    pile_err *err);

/* Appends the model as a Hugging Face tokenizer.json. */
int pile__bpe_model_json(const pile__bpe_model *m, pile_buf *out);

/* Frees the model's arrays; accepts a zeroed or freed model. */
void pile__bpe_model_free(pile__bpe_model *m);

/* ----------------------------------------------------------------- train */

/* The memory bounds of pile_bpe_train (which uses 64 MB epochs and a cap of
 * 8M pieces); tests set small ones to exercise pruning. */
typedef struct pile__bpe_limits {
    uint64_t epoch_bytes;  /* text between two sums of the threads' maps */
    size_t piece_cap;      /* more distinct pieces than this at an epoch's end: prune */
} pile__bpe_limits;

int pile__bpe_train_limits(const char *const *inputs, size_t n_inputs, const pile_bpe_train_opts *opts,
                           const pile__bpe_limits *lim, const char *out_path, pile_err *err);

/* GPT-2's bytes_to_unicode: the code point that stands for byte b. */
uint32_t pile__bpe_byte_char(uint8_t b);

#endif
