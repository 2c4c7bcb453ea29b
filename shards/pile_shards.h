/* The pile shard: fixed-length rows of token ids, memory-mapped, with the
 * per-row document starts and subset ids a trainer needs to mask across
 * documents, and (from version 2) a checksum per row that the reader checks
 * as rows are first read. The byte layout is specified in shards/FORMAT.md
 * (version 2; version 1 is still read) and drawn again at the top of
 * shards/shard.c.
 *
 * Writer: one thread, and any threads filling rows it reserved. Reader:
 * any number of threads may use one pile_shard at once; its only state that
 * changes after open is the record of rows already checked
 * (pile_shard_check_row), updated atomically. */
#ifndef PILE_SHARDS_H
#define PILE_SHARDS_H

#include <stddef.h>
#include <stdint.h>

#include "pile_buf.h"
#include "pile_error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PILE_SHARD_VERSION 2     /* the version this build writes, and the newest it reads */
#define PILE_SHARD_VERSION_MIN 1 /* the oldest it reads (no row checksums) */
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
    uint32_t version; /* 0: PILE_SHARD_VERSION; 1: version 1, without row checksums (to test readers of old shards) */
    uint32_t buffers; /* the writer's ring: 4 MiB buffers that rows reserved ahead of their ids may take
                         (pile_shard_writer_reserve_row); 0: 2, and never fewer than a row's and one more */
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
    uint64_t data_checksum;   /* XXH3-64 of the token data section */
    uint64_t header_checksum; /* the header's XXH3-64, which covers every section checksum */
    int row_checksums;        /* 1 when each row has a checksum (version 2); 0 in version 1 */
    uint64_t file_size;
    uint8_t tokenizer_fp[PILE_SHARD_FP_BYTES];
} pile_shard_info;

/* ---------------------------------------------------------------- writer */

typedef struct pile_shard_writer pile_shard_writer;

/* Starts a shard that will appear at `path` only when finished: rows go to
 * "<path>.tmp". A writer is used by one thread at a time (but for
 * pile_shard_writer_fill). Rows pass through a ring of 4 MiB buffers
 * (params->buffers); once rows reach past the first, the writer starts a
 * thread of its own that checksums (the data section's and each row's) and
 * writes each buffer, in file order, as soon as every byte of it is in
 * place, while rows go into the others (finish waits for it, close ends it);
 * a failed background write is reported by a later call. */
int pile_shard_writer_open(pile_shard_writer **out, const char *path, const pile_shard_params *params,
                           pile_err *err);

/* Interns a subset name in this shard's table; *id is its index (stable for
 * the shard). O(1) on average (a hash table). A name must be 1..65535 bytes
 * of UTF-8 without NUL (else PILE_EINVAL); a 65537th distinct name is
 * PILE_ELIMIT. */
int pile_shard_writer_subset(pile_shard_writer *w, const char *name, size_t len, uint16_t *id, pile_err *err);

/* Distinct subset names in this shard's table so far. */
uint32_t pile_shard_writer_subset_count(const pile_shard_writer *w);

/* Appends one row: tokens[0..len) (len <= max_length; the rest is padded
 * with pad_id and len is recorded), the document starts in it (offsets
 * strictly increasing, < len), and lead_subset, the subset of the token at
 * position 0 (the document that starts or continues there). */
int pile_shard_writer_add_row(pile_shard_writer *w, const uint32_t *tokens, uint32_t len,
                              const pile_shard_doc *docs, uint32_t ndocs, uint16_t lead_subset, pile_err *err);

/* The same, with the ids already at the shard's width (pile_shard_token_bytes:
 * 2 bytes for a vocabulary of up to 65,536 ids, else 4; little-endian):
 * ids holds len * width bytes, any alignment. The writer copies them and
 * checks each is below vocab_size (a row that fails leaves the writer in a
 * failed state: only close is useful). For callers that narrow the ids in
 * several threads: what is left here is a copy and the range check, over
 * data in cache (the checksums are the writer's thread's). */
int pile_shard_writer_add_row_packed(pile_shard_writer *w, const void *ids, uint32_t len,
                                     const pile_shard_doc *docs, uint32_t ndocs, uint16_t lead_subset,
                                     pile_err *err);

/* A run of ids at the shard's width (any alignment, never NULL): a piece of
 * a row that pile_shard_writer_add_row_gather puts together. */
typedef struct pile_shard_piece {
    const void *ids;
    uint32_t len; /* ids, not bytes */
} pile_shard_piece;

/* add_row_packed of the row made of the pieces one after the other (their
 * lengths sum to the row's length): for a caller whose row lies in several
 * places, without a copy of its own first. */
int pile_shard_writer_add_row_gather(pile_shard_writer *w, const pile_shard_piece *pieces, uint32_t npieces,
                                     const pile_shard_doc *docs, uint32_t ndocs, uint16_t lead_subset,
                                     pile_err *err);

/* Rows whose ids other threads put in place: the writer's thread reserves
 * a row's place in the file (reserve_row), any threads fill its ids, in
 * pieces, in any order and at the same time (fill), and the writer's
 * thread commits its table entry (commit_row) before or after the fills;
 * rows are reserved and committed in file order, one at a time (reserve
 * again only once the last is committed). A buffer leaves when all its
 * bytes are filled and all rows beginning in it are committed, so every
 * reserved row must be filled whole (ids and padding) before finish.
 *
 * reserve_row: *slot gets the row's place (for fill). When the ring holds
 * no room for it (the rows before it not all filled yet), waits for the
 * fills, or with `wait` 0 returns 1 at once, having reserved nothing: a
 * caller that would fill some of those rows itself fills them first. */
int pile_shard_writer_reserve_row(pile_shard_writer *w, int wait, uint64_t *slot, pile_err *err);

/* Puts n ids at positions at..at+n of the reserved row `slot`: from ids (at
 * the shard's width, any alignment), or, ids NULL, the pad id. Each is
 * checked to be below vocab_size as it is copied: one that is not fails
 * the writer (PILE_EINVAL; a later call reports it). Thread-safe: fills of
 * different positions may run at once, beside the writer's thread. */
int pile_shard_writer_fill(pile_shard_writer *w, uint64_t slot, uint32_t at, const void *ids, uint32_t n,
                           pile_err *err);

/* The table entry of the reserved row: its true length (the fills put
 * padding after it), document starts and lead subset, checked as for
 * add_row (a refused entry fails the writer: the row's place is taken). */
int pile_shard_writer_commit_row(pile_shard_writer *w, uint32_t len, const pile_shard_doc *docs, uint32_t ndocs,
                                 uint16_t lead_subset, pile_err *err);

/* Bytes per token id in a shard of this vocabulary size: 2 or 4. */
uint32_t pile_shard_token_bytes(uint32_t vocab_size);

/* Rows written so far. */
uint64_t pile_shard_writer_rows(const pile_shard_writer *w);

/* CPU seconds the writer's background thread used (checksums and disk
 * writes): final once pile_shard_writer_finish has returned 0 (which ends
 * the thread), 0 when the thread never started. */
double pile_shard_writer_io_cpu(const pile_shard_writer *w);

/* Writes the tables and header, fsyncs, renames "<path>.tmp" to path, fsyncs
 * the folder. info (may be NULL) gets the final header values. */
int pile_shard_writer_finish(pile_shard_writer *w, pile_shard_info *info, pile_err *err);

/* Frees; if not finished, removes the temporary file. Accepts NULL. */
void pile_shard_writer_close(pile_shard_writer *w);

/* ---------------------------------------------------------------- reader */

typedef struct pile_shard pile_shard;

/* Maps path read-only and validates the header and every section's bounds.
 * A file that is not a shard, of a newer version, or truncated is refused
 * with a message that says which. Does not check the sections' checksums
 * (see verify) nor the rows' (see check_row). */
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

/* Checks row i (< row_count) against the checksum the writer recorded for
 * it, which covers the row's token data, its row-table entry and its
 * document starts (FORMAT.md, "Row checksum table"): a reader calls it before it
 * uses the row. The first call for a row hashes it (max_length * W bytes,
 * at memory speed); a match is remembered, so later calls for that row
 * cost one atomic load. Returns 0 when the row matches, and always for a
 * version 1 shard (info.row_checksums == 0: nothing to check against);
 * PILE_ECORRUPT, with the shard, the row and both checksums in err, when it
 * does not (again on every later call). Thread-safe. */
int pile_shard_check_row(const pile_shard *s, uint64_t i, pile_err *err);

/* The number of distinct rows pile_shard_check_row has found corrupt so far
 * (0 for a version 1 shard). Thread-safe. */
uint64_t pile_shard_corrupt_rows(const pile_shard *s);

/* Checks every checksum (the header's, each section's and, in version 2,
 * every row's) and invariant (lengths <= max_length, ids < vocab_size,
 * padding is pad_id, document offsets increasing and inside the row, subset
 * ids in range). 0 or PILE_ECORRUPT naming the first failure (a section
 * checksum's failure names the first damaged row too, in version 2). Reads
 * the whole file; does not touch pile_shard_check_row's record. */
int pile_shard_verify(const pile_shard *s, pile_err *err);

/* -------------------------------------------------------------- datasets */

/* A dataset: the shard folders pile-trainer and pile-dump read as one,
 * such as the partitions pile-prep --partition made on many machines. */
typedef struct pile_dataset_folder {
    char *path;  /* the folder (owned) */
    char *label; /* qualifies its shard names within the dataset: "" when the dataset is this one
                    folder, else the folder's name ("part-02-of-30"; with its parent's name when two
                    folders share it) (owned) */
    int has_manifest;         /* a pile-prep manifest.json is there */
    int complete;             /* its "complete" flag (1 without a manifest) */
    uint32_t part_index, part_count; /* its pile-prep partition, 0 0 when none */
    char part_inputs[17];     /* the partitioned input set's XXH3, hex ("" when none) */
    char tokenizer_fp[33];    /* the manifest's tokenizer fingerprint, hex ("" when none) */
    uint64_t max_length;      /* the manifest's max_length (0 when none) */
} pile_dataset_folder;

typedef struct pile_dataset {
    pile_dataset_folder *v;
    size_t n;
    pile_buf notes; /* warnings for the caller to show, one per line ("partition 2 of 3 ... is not in the dataset") */
} pile_dataset;

/* Lists the folders `spec` names, into ds (zero-initialised; free with
 * pile_dataset_free, also after a failure). spec: one folder, or several
 * separated by commas (unless the whole of spec is an existing path). A
 * folder that holds *.shard files is one folder of the dataset; one that
 * holds none but has subfolders holding shards or a manifest.json (the
 * part-K-of-N folders of pile-prep --partition) stands for those, in name
 * order. When every folder is a partition of one input set, they are put in
 * partition order. Refused (PILE_EMISMATCH naming both folders and the
 * values): folders whose manifests record different tokenizers or
 * max_length; two partitionings of one input set (different counts, or an
 * index twice, which would give documents twice). PILE_EINVAL: a folder
 * named twice; PILE_ENOENT: a missing one, or one without shards. Partitions
 * missing from an input set are not an error (training on part of the data
 * may be meant) but a line in ds->notes each. Manifests are read, shards
 * are not opened. */
int pile_dataset_list(pile_dataset *ds, const char *spec, pile_err *err);
void pile_dataset_free(pile_dataset *ds);

/* -------------------------------------------------------------- megatron */

/* Writes Megatron-LM / GPT-NeoX indexed dataset files "<prefix>.bin" and
 * "<prefix>.idx" ("MMIDIDX" version 1, one sequence per document, pads
 * dropped, each document ending with its end-of-text as Megatron's
 * preprocess_data --append-eod writes it) from the given shards in order.
 * All shards must share tokenizer and width. Each row is checked against
 * its checksum (version 2) before it is exported: a corrupt row stops the
 * export, naming the shard and the row, and nothing is left behind. */
int pile_megatron_export(const char *const *shard_paths, size_t n, const char *prefix, pile_err *err);

#ifdef __cplusplus
}
#endif

#endif
