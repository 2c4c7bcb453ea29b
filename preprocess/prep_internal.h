/* What the pile-prep sources share: the running statistics, the job state
 * the manifest records (and a resumed run restores), and the packer. The
 * pipeline threads live in prep_pipeline.c; everything here is used by the
 * packer's thread only, but for the copies it hands to its sink. */
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

/* Fixes of a document's subset name, carried beside PILE_REPAIR_* in a
 * document's `repairs` and counted per split. A shard's subset table holds
 * names of 1 to 65,535 bytes of UTF-8 without NUL, at most 65,536 of them. */
#define PREP_NAME_EMPTY (1u << 4) /* "": counted under the fallback subset */
#define PREP_NAME_NUL (1u << 5)   /* NUL bytes replaced by U+FFFD */
#define PREP_NAME_LONG (1u << 6)  /* cut to at most 65,535 bytes, at a character boundary */
#define PREP_NAME_UTF8 (1u << 7)  /* invalid UTF-8 replaced by U+FFFD */
#define PREP_NAME_OVER (1u << 8)  /* a new name in a full shard table: counted under the fallback subset */
#define PREP_NAME_FIXES (PREP_NAME_EMPTY | PREP_NAME_NUL | PREP_NAME_LONG | PREP_NAME_UTF8 | PREP_NAME_OVER)
#define PREP_FALLBACK_SUBSET "unknown" /* documents without a usable name */
#define PREP_NAME_MAX 65535u
enum { PREP_FIX_EMPTY, PREP_FIX_NUL, PREP_FIX_LONG, PREP_FIX_UTF8, PREP_FIX_OVER, PREP_NFIX };
/* The manifest's and the summary's names of the fixes, PREP_NFIX of them
 * (PREP_FIX_OVER: a new name for a shard already holding 65,536 names, or
 * 65,535 without the fallback, counted under the fallback). */
extern const char *const pile__prep_fix_names[PREP_NFIX];

typedef struct prep_subset_count {
    uint64_t docs, tokens;
} prep_subset_count;

typedef struct prep_split_stats {
    uint64_t lines, docs, tokens; /* tokens: every document's tokens + its end-of-text */
    uint64_t rows, pad_tokens;
    uint64_t skipped[PILE_SKIP_COUNT];
    uint64_t repaired_utf8, repaired_surrogate;
    uint64_t name_fixed[PREP_NFIX]; /* documents whose subset name was fixed, by PREP_FIX_* */
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
    int fallback;     /* that document's name went to the fallback subset (PREP_NAME_OVER) */
} prep_resume;

typedef struct prep_shard_rec {
    char *file; /* name inside OUT */
    pile_split split;
    uint64_t rows, docs, tokens, checksum, size;
    prep_resume start; /* where its first token came from: a repair starts the packer there */
    int has_start;     /* 0 in manifests of older pile-preps */
} prep_shard_rec;

/* A file of the output other than a shard (the tokenizer's copy, Megatron
 * files), as the manifest records it. */
typedef struct prep_file {
    char *name; /* relative to OUT */
    uint64_t size, xxh3;
} prep_file;

typedef struct prep_files {
    prep_file *v;
    size_t n, cap;
} prep_files;

int pile__prep_files_add(prep_files *f, const char *name, uint64_t size, uint64_t xxh3);
void pile__prep_files_free(prep_files *f);

/* The manifest's content at a finished shard whose manifest write was put
 * off (see finish_shard): written when the run then fails, so an error
 * (not a crash) keeps every finished shard recorded. The subset names are
 * the state's own (they only grow). */
typedef struct prep_snapshot {
    int valid;
    prep_split_stats split[PREP_NSPLITS];
    uint64_t *input_lines;
    uint8_t *input_done, *input_truncated;
    prep_resume resume;
    size_t n_shards;
    uint32_t next_shard[PREP_NSPLITS];
} prep_snapshot;

/* Everything OUT/manifest.json holds. */
typedef struct prep_state {
    const pile_prep_opts *opts;
    const pile_prep_input **order; /* inputs in processing order (split, then given order) */
    size_t n_inputs;
    /* the options that decide the output */
    const char *tok_spec; /* as the manifest records it: "bytes" or the copy's path inside OUT */
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
    /* files the output holds beside the shards */
    const char *tok_source; /* the tokenizer spec as given */
    prep_files tok_files;   /* its copy in OUT/tokenizer/ */
    prep_files mega_files;  /* Megatron files of a complete run */
    /* manifest writes: after a finished shard only now and then (see
     * finish_shard), so that a run of many small shards does not rewrite a
     * growing manifest after each (quadratic) */
    double manifest_at, manifest_cost;
    size_t manifest_shards; /* shards the last write recorded */
    prep_snapshot pending;
    /* repair: regenerate the one shard starting at `resume`, numbered from
     * next_shard, without touching the manifest; stop once it is written */
    int repair, repair_done;
    pile_shard_info repaired;
} prep_state;

/* How every manifest pile-prep writes begins: a manifest.json.tmp whose
 * bytes are a prefix of it (empty too) is one a run killed while writing it
 * left behind (prep_output.c). */
#define PREP_MANIFEST_OPENING "{\n  \"format\": \"pile-prep manifest\",\n"

/* Manifest: write (atomically) the state as it is. */
int pile__prep_manifest_write(const prep_state *st, pile_err *err);
/* Remembers the state as the manifest would record it now, for
 * pile__prep_manifest_write_pending. */
int pile__prep_snapshot_take(prep_state *st);
/* Writes the manifest as it was at the last snapshot, if one is pending. */
int pile__prep_manifest_write_pending(prep_state *st, pile_err *err);
void pile__prep_snapshot_free(prep_snapshot *sn);
/* Reads OUT/manifest.json into st if it exists and matches st's options and
 * inputs. Returns 1 (restored), 0 (no manifest), or a negative code
 * (PILE_EMISMATCH with a message suggesting --force, or a read error). */
int pile__prep_manifest_load(prep_state *st, pile_err *err);
/* Reads only what OUT/manifest.json says was written (shards, tokenizer
 * copy, Megatron files, whether complete, whether --megatron), whatever its
 * options and version: what --force may remove. 1 read, 0 no manifest, or a
 * negative code when it is there but not a pile-prep manifest. */
int pile__prep_manifest_files(prep_state *st, pile_err *err);
int pile__prep_state_add_shard(prep_state *st, const char *file, pile_split split, const pile_shard_info *info,
                               prep_resume start, pile_err *err);
void pile__prep_state_free(prep_state *st);
/* Appends the statistics as a person reads them. */
int pile__prep_stats_format(const prep_state *st, pile_buf *out);

/* ---------------------------------------------------------- output folder */

/* What pile-prep writes in OUT, and the rule that it removes or overwrites
 * only files its manifest (or the interrupted run the manifest describes)
 * says it wrote (prep_output.c). */

/* 1 if `name` (inside OUT) is a shard name: <split>-NNNNN.shard, with
 * `tmp` set when it ends in .tmp; split and number filled. */
int pile__prep_shard_name(const char *name, int *tmp, pile_split *split, unsigned *num);

/* The tokenizer's source files, read whole (so that a copy can be written
 * even when the source lies inside OUT and --force removes it). */
typedef struct prep_tok_source {
    char *name[2];      /* base names: one file, or GPT-2's encoder.json + vocab.bpe */
    pile_buf data[2];
    size_t n;
    char *spec;         /* the spec of the copy inside OUT: "tokenizer/<name>" or "tokenizer" */
} prep_tok_source;

int pile__prep_tok_source_read(prep_tok_source *ts, const char *spec, pile_err *err);
/* 1 when a and b hold the same files with the same bytes. */
int pile__prep_tok_source_same(const prep_tok_source *a, const prep_tok_source *b);
void pile__prep_tok_source_free(prep_tok_source *ts);

/* --force: removes what st (filled by pile__prep_manifest_files) records,
 * then the manifest. */
int pile__prep_output_forget(prep_state *st, pile_err *err);
/* Removes what the interrupted run st describes was in the middle of
 * writing (shards past the last recorded one, temporary files of its names,
 * Megatron files of an incomplete run). */
int pile__prep_output_clean(const prep_state *st, pile_err *err);
/* Refuses (PILE_EMISMATCH naming it) when a file this run will write is
 * there and is not the record's (rec: the manifest's record, have_record
 * when there is one; what it says the run wrote or was writing is
 * pile-prep's): a user's file in the way. `megatron`: this run writes
 * Megatron files. Called before anything is removed. */
int pile__prep_output_check(const prep_state *rec, int have_record, int megatron, const prep_tok_source *ts,
                            pile_err *err);
/* The tokenizer's copy in OUT/tokenizer/, in two steps around a manifest
 * write, so that the manifest records the copy before it is written (a run
 * killed halfway leaves files the manifest accounts for): plan removes the
 * files of an earlier copy this one does not replace (still recorded) and
 * records the new copy in st (tok_files, tok_spec), *changed set when the
 * record changed; write writes the files not already there as they should
 * be and reads the copy back: the bytes the tokenizer was built from (read
 * before and after it was opened), under the same file names, are that
 * tokenizer. */
int pile__prep_output_tokenizer_plan(prep_state *st, const prep_tok_source *ts, int *changed, pile_err *err);
int pile__prep_output_tokenizer_write(const prep_state *st, const prep_tok_source *ts, pile_err *err);

/* The kept files' check (a resumed or finished run): every recorded shard
 * is read whole and checked (header, checksums, invariants) and compared
 * with its record; damaged or missing ones are listed in bad[] (indices
 * into st->shards, malloc'ed). Bytes read go to *bytes. */
int pile__prep_check_shards(const prep_state *st, size_t **bad, size_t *nbad, uint64_t *bytes, pile_err *err);
/* The same for the recorded Megatron files: *bad_splits gets a bit per
 * split (1 << split) whose .bin or .idx is missing or differs. */
int pile__prep_check_megatron(const prep_state *st, unsigned *bad_splits, uint64_t *bytes, pile_err *err);
/* XXH3-64 and size of a whole file. */
int pile__prep_file_xxh3(const char *path, uint64_t *xxh3, uint64_t *size, pile_err *err);

/* A warning line to opts->log (prep_pipeline.c). */
void pile__prep_log(const pile_prep_opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends the summary's line naming the busiest stage and its share of
 * the wall time, with what that means for more threads (prep_pipeline.c). */
void pile__prep_stage_line(const pile_prep_result *res, pile_buf *out);
/* Runs the pipeline over st from st->resume (prep_pipeline.c). */
int pile__prep_pipeline(prep_state *st, const pile_tokenizer *tok, pile_prep_result *res, pile_err *err);

/* ---------------------------------------------------------------- packer */

typedef struct prep_packer prep_packer;

/* Where the packer's copies go: it decides where ids go (from token counts
 * alone) and leaves the copying to the sink, which may do it later and in
 * other threads (pile-prep's workers), in any order but one: the copies
 * handed over while one chunk of documents was packed are done in the
 * order they were given. */
typedef struct prep_sink {
    void *ctx;
    /* n ids at the shards' width from src: into positions at..at+n of row
     * `slot` of writer w (pile_shard_writer_fill; src NULL: padding), or, w
     * NULL, to dst. src stays valid until drain, or until the chunk it lies
     * in is done with (pile__prep_packer_doc). */
    int (*move)(void *ctx, pile_shard_writer *w, uint64_t slot, uint32_t at, unsigned char *dst,
                const unsigned char *src, uint32_t n, pile_err *err);
    /* Returns once every copy handed over so far is done. */
    int (*drain)(void *ctx, pile_err *err);
} prep_sink;

int pile__prep_packer_create(prep_packer **out, prep_state *st, pile_err *err);
void pile__prep_packer_free(prep_packer *pk);
/* Sets the sink (before the first document). */
void pile__prep_packer_set_sink(prep_packer *pk, const prep_sink *sink);

/* Seconds spent in the shard writer so far (part of the packer's time):
 * reserving and committing rows, waiting for room, finishing shards. */
double pile__prep_packer_write_s(const prep_packer *pk);
/* CPU seconds the shard writers' background threads (checksums, disk
 * writes) used for the shards finished so far. */
double pile__prep_packer_io_cpu(const prep_packer *pk);

/* The subset a document is stored under: `gid` itself, or the fallback
 * subset's id (with *over set) when the shard its start lands in already
 * holds as many names as a shard can, or when `fallback` says so (a resumed
 * document the interrupted run had counted under the fallback:
 * resume.fallback). Registers the result with that shard. Called for each
 * document, in packing order, before pile__prep_packer_doc. */
int pile__prep_packer_subset(prep_packer *pk, uint32_t gid, int fallback, uint32_t *out, int *over, pile_err *err);

/* One document of split `split` from line `lineno` of input `input`:
 * tokens holds n ids at the shards' width (pile_shard_token_bytes), the
 * last the end-of-text id. They must stay where they are until the copies
 * the packer hands its sink meanwhile are done: the sink copies from them.
 * tok_off tokens at its start were already emitted by an interrupted run
 * and are dropped. The document must already be counted in st->stats (the
 * packer takes it back while it writes a manifest whose resume point lies
 * inside it). */
int pile__prep_packer_doc(prep_packer *pk, pile_split split, size_t input, uint64_t lineno, const void *tokens,
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
