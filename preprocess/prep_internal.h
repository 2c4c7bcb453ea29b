/* What the pile-prep sources share: the running statistics, the job state
 * the manifest records (and a resumed run restores), and the packer. The
 * pipeline threads live in prep_pipeline.c; everything here is used by the
 * packer's thread only. */
#ifndef PILE_PREP_INTERNAL_H
#define PILE_PREP_INTERNAL_H

#include <stdint.h>

#include "pile_json.h"
#include "pile_prep.h"
#include "pile_tokenizer.h"

#define PREP_NSPLITS 3

/* Interned strings (subset names) -> dense ids, by an open-addressing hash. */
typedef struct prep_names {
    char **names;
    size_t *lens;
    size_t n, cap;
    uint32_t *slots; /* id + 1, 0 = empty */
    size_t nslots;
} prep_names;

int pile__prep_names_intern(prep_names *t, const char *s, size_t len, uint32_t *id);
void pile__prep_names_free(prep_names *t);
/* Ids sorted by name (malloc'ed, t->n of them), so that output order never
 * depends on which subset happened to come first. NULL on OOM. */
uint32_t *pile__prep_subsets_sorted(const prep_names *t);

typedef struct prep_subset_count {
    uint64_t docs, tokens;
} prep_subset_count;

typedef struct prep_split_stats {
    uint64_t lines, docs, tokens; /* tokens: every document's tokens + its end-of-text */
    uint64_t rows, pad_tokens;
    uint64_t skipped[PILE_SKIP_COUNT];
    uint64_t repaired_utf8, repaired_surrogate;
    prep_subset_count *subsets; /* indexed by global subset id */
    size_t n_subsets;
} prep_split_stats;

/* Counts over every line the packer has taken, and per input. A resumed run
 * restores them from the manifest, so they always describe whole lines
 * before the resume point. */
typedef struct prep_stats {
    prep_split_stats split[PREP_NSPLITS];
    prep_names subsets;
    size_t n_inputs;
    uint64_t *input_lines;
    uint8_t *input_done, *input_truncated;
} prep_stats;

int pile__prep_stats_init(prep_stats *s, size_t n_inputs);
void pile__prep_stats_free(prep_stats *s);
/* Adds (sign = +1) or takes back (sign = -1) one document line. */
int pile__prep_stats_doc(prep_stats *s, pile_split split, size_t input, uint32_t subset, uint64_t ntok,
                         unsigned repairs, int sign);
/* Sum of all splits into *out (subsets not summed). */
void pile__prep_stats_total(const prep_stats *s, prep_split_stats *out);

/* Where the next shard's first token comes from. */
typedef struct prep_resume {
    uint64_t input;   /* index into the processing order */
    uint64_t line;    /* 1-based line number in that input */
    uint64_t tok_off; /* tokens of that line's document already in finished shards (concat) */
} prep_resume;

typedef struct prep_shard_rec {
    char *file; /* name inside OUT */
    pile_split split;
    uint64_t rows, docs, tokens, checksum, size;
} prep_shard_rec;

/* Everything OUT/manifest.json holds. */
typedef struct prep_state {
    const pile_prep_opts *opts;
    const pile_prep_input **order; /* inputs in processing order (split, then given order) */
    size_t n_inputs;
    /* the options that decide the output */
    const char *tok_spec;
    const char *tok_kind;
    uint8_t tok_fp[PILE_TOKENIZER_FP_BYTES];
    uint32_t vocab_size, eot_id, max_length, window_rows;
    pile_pack pack;
    uint64_t shard_bytes, rows_per_shard, max_line_bytes;
    const char *text_key, *subset_key; /* resolved ("text", "meta.pile_set_name"; "" for no subset) */
    int megatron;
    /* how this run reads (not recorded: they never change the output) */
    int threads;
    uint64_t zstd_window;
    /* progress */
    prep_stats stats;
    prep_shard_rec *shards;
    size_t n_shards, cap_shards;
    uint32_t next_shard[PREP_NSPLITS];
    prep_resume resume;
    int complete;
    uint64_t shards_this_run;
} prep_state;

/* Manifest: write (atomically) the state as it is. */
int pile__prep_manifest_write(const prep_state *st, pile_err *err);
/* Reads OUT/manifest.json into st if it exists and matches st's options and
 * inputs. Returns 1 (restored), 0 (no manifest), or a negative code
 * (PILE_EMISMATCH with a message suggesting --force, or a read error). */
int pile__prep_manifest_load(prep_state *st, pile_err *err);
int pile__prep_state_add_shard(prep_state *st, const char *file, pile_split split, const pile_shard_info *info,
                               pile_err *err);
void pile__prep_state_free(prep_state *st);
/* Appends the statistics as a person reads them. */
int pile__prep_stats_format(const prep_state *st, pile_buf *out);

/* ---------------------------------------------------------------- packer */

typedef struct prep_packer prep_packer;

int pile__prep_packer_create(prep_packer **out, prep_state *st, pile_err *err);
void pile__prep_packer_free(prep_packer *pk);

/* One document of split `split` from line `lineno` of input `input`:
 * tokens[0..n) ends with the end-of-text id. tok_off tokens at its start
 * were already emitted by an interrupted run and are dropped. The document
 * must already be counted in st->stats (the packer takes it back while it
 * writes a manifest whose resume point lies inside it). */
int pile__prep_packer_doc(prep_packer *pk, pile_split split, size_t input, uint64_t lineno, const uint32_t *tokens,
                          size_t n, uint64_t tok_off, uint32_t subset, unsigned repairs, pile_err *err);

/* The split's last input is done (next_input: the first input after it):
 * flush the last row / window and finish the shard. */
int pile__prep_packer_end_split(prep_packer *pk, pile_split split, size_t next_input, pile_err *err);

/* ------------------------------------------------------- best-fit packing */

/* Best-Fit-Decreasing of items (lengths 1..cap) into bins of capacity cap:
 * each item, longest first (ties: earlier first), goes into the open bin
 * with the least remaining room that still holds it, else into a new bin.
 * The smallest sufficient room is found in O(log cap) with a segment tree
 * over the remaining capacities 0..cap (Ding et al. 2024, arXiv 2404.10830,
 * section 3). Fills bin_of[i] and returns the number of bins (or
 * PILE_ENOMEM). order_out (may be NULL) gets the items in placement order. */
typedef struct prep_bfd prep_bfd;
prep_bfd *pile__prep_bfd_create(uint32_t cap);
void pile__prep_bfd_free(prep_bfd *b);
long pile__prep_bfd_pack(prep_bfd *b, const uint32_t *len, size_t n, uint32_t *bin_of, size_t *order_out);

#endif
