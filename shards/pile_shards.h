/* The pile shard: fixed-length rows of token ids, memory-mapped, with the
 * per-row document starts and subset ids a trainer needs to mask across
 * documents. The byte layout is specified in shards/FORMAT.md (version 1)
 * and drawn again at the top of shards/shard.c.
 *
 * Writer: one thread. Reader: immutable after open; any number of threads
 * may read one pile_shard at once. */
#ifndef PILE_SHARDS_H
#define PILE_SHARDS_H

#include <stddef.h>
#include <stdint.h>

#include "pile_error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PILE_SHARD_VERSION 1
#define PILE_SHARD_FP_BYTES 16

typedef enum pile_split {
    PILE_SPLIT_TRAIN = 0,
    PILE_SPLIT_VAL = 1,
    PILE_SPLIT_TEST = 2,
} pile_split;

typedef enum pile_pack {
    PILE_PACK_CONCAT = 0,   /* documents joined with end-of-text, cut every max_length tokens */
    PILE_PACK_BEST_FIT = 1, /* Best-fit Packing (arXiv 2404.10830) */
} pile_pack;

/* Flags of a document start */
#define PILE_DOC_CONTINUED 1u /* this segment continues a document split by best-fit packing */

/* One document start in a row. */
typedef struct pile_shard_doc {
    uint32_t offset; /* position in the row where the document (or its segment) starts */
    uint16_t subset; /* index into the shard's subset table */
    uint16_t flags;  /* PILE_DOC_* */
} pile_shard_doc;

/* What the writer needs to know up front. */
typedef struct pile_shard_params {
    uint32_t max_length;  /* tokens per row */
    uint32_t vocab_size;  /* ids are < vocab_size; decides token width (uint16 if <= 65536) */
    uint32_t eot_id;
    uint32_t pad_id;
    pile_pack pack;
    pile_split split;
    uint8_t tokenizer_fp[PILE_SHARD_FP_BYTES];
} pile_shard_params;

/* The header values of a shard, as the reader exposes them. */
typedef struct pile_shard_info {
    uint32_t version;
    uint32_t token_bytes; /* 2 or 4 */
    uint32_t max_length;
    uint32_t vocab_size;
    uint32_t eot_id;
    uint32_t pad_id;
    pile_pack pack;
    pile_split split;
    uint64_t row_count;
    uint64_t doc_count;   /* document starts over all rows */
    uint64_t token_count; /* true (non-pad) tokens over all rows */
    uint32_t subset_count;
    uint64_t data_checksum; /* XXH3-64 of the token data section */
    uint64_t file_size;
    uint8_t tokenizer_fp[PILE_SHARD_FP_BYTES];
} pile_shard_info;

/* ---------------------------------------------------------------- writer */

typedef struct pile_shard_writer pile_shard_writer;

/* Starts a shard that will appear at `path` only when finished: rows go to
 * "<path>.tmp". */
int pile_shard_writer_open(pile_shard_writer **out, const char *path, const pile_shard_params *params,
                           pile_err *err);

/* Interns a subset name in this shard's table; *id is its index (stable for the shard). */
int pile_shard_writer_subset(pile_shard_writer *w, const char *name, size_t len, uint16_t *id, pile_err *err);

/* Appends one row: tokens[0..len) (len <= max_length; the rest is padded
 * with pad_id and len is recorded), the document starts in it (offsets
 * strictly increasing, < len), and lead_subset, the subset of the token at
 * position 0 (the document that starts or continues there). */
int pile_shard_writer_add_row(pile_shard_writer *w, const uint32_t *tokens, uint32_t len,
                              const pile_shard_doc *docs, uint32_t ndocs, uint16_t lead_subset, pile_err *err);

/* Rows written so far. */
uint64_t pile_shard_writer_rows(const pile_shard_writer *w);

/* Writes the tables and header, fsyncs, renames "<path>.tmp" to path, fsyncs
 * the folder. info (may be NULL) gets the final header values. */
int pile_shard_writer_finish(pile_shard_writer *w, pile_shard_info *info, pile_err *err);

/* Frees; if not finished, removes the temporary file. Accepts NULL. */
void pile_shard_writer_close(pile_shard_writer *w);

/* ---------------------------------------------------------------- reader */

typedef struct pile_shard pile_shard;

/* Maps path read-only and validates the header and every section's bounds.
 * A file that is not a shard, of another version, or truncated is refused
 * with a message that says which. Does not check checksums (see verify). */
int pile_shard_open(pile_shard **out, const char *path, pile_err *err);
void pile_shard_close(pile_shard *s);

const pile_shard_info *pile_shard_get_info(const pile_shard *s);

/* Row i's tokens in the file's width (uint16_t or uint32_t per
 * info.token_bytes), max_length of them; O(1). i < row_count. */
const void *pile_shard_row_data(const pile_shard *s, uint64_t i);

/* Row i widened into out[0..max_length) (padding included); returns the true length. */
uint32_t pile_shard_row_tokens(const pile_shard *s, uint64_t i, uint32_t *out);

/* Row i's true length, lead subset, and document starts (pointer into the map). */
uint32_t pile_shard_row_length(const pile_shard *s, uint64_t i);
uint16_t pile_shard_row_lead_subset(const pile_shard *s, uint64_t i);
uint32_t pile_shard_row_docs(const pile_shard *s, uint64_t i, const pile_shard_doc **docs);

/* Subset table. */
const char *pile_shard_subset_name(const pile_shard *s, uint32_t id);

/* Checks every checksum and invariant (lengths <= max_length, ids <
 * vocab_size, padding is pad_id, document offsets increasing and inside the
 * row, subset ids in range). 0 or PILE_ECORRUPT naming the first failure. */
int pile_shard_verify(const pile_shard *s, pile_err *err);

/* -------------------------------------------------------------- megatron */

/* Writes Megatron-LM / GPT-NeoX indexed dataset files "<prefix>.bin" and
 * "<prefix>.idx" ("MMIDIDX" version 1, one sequence per document, pads
 * dropped, each document ending with its end-of-text as Megatron's
 * preprocess_data --append-eod writes it) from the given shards in order.
 * All shards must share tokenizer and width. */
int pile_megatron_export(const char *const *shard_paths, size_t n, const char *prefix, pile_err *err);

#ifdef __cplusplus
}
#endif

#endif
