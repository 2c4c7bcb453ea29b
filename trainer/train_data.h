/* The trainer's view of a folder of shards (pile-prep's output): the train
 * rows and the validation rows, memory-mapped, as fixed-length samples.
 *
 * A sample is a window of T = seq_len tokens of one row that holds at
 * least one target (a row of len tokens gives ceil((len - 1) / T) windows;
 * T == max_length is one window per row).
 * Inputs are the window's tokens; the target at position t is the token at
 * t + 1 of the same row, or none (-1) past the row's true length, at the
 * row's last position, and (with doc_mask_loss) where t + 1 starts a new
 * document. With doc_mask, doc_start[t] is the window position of the
 * start of t's document (0 when it began before the window).
 *
 * Every shard must share the tokenizer fingerprint, token width,
 * vocabulary and max_length; a shard that differs is refused with a
 * message naming both files and the difference. Shards of format versions
 * 1 and 2 may be mixed: each row of a version 2 shard is checked against
 * its checksum before its first use (pile_data_sample), a version 1 row
 * cannot be (info.unverified_shards counts such shards, for the caller to
 * say so). Validation rows come from
 * the val-*.shard files, or, when there are none or they hold no sample,
 * from the last val_fraction of each folder's train samples (kept out of
 * training). */
#ifndef PILE_TRAIN_DATA_H
#define PILE_TRAIN_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "pile_buf.h"
#include "pile_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pile_data pile_data;

typedef struct pile_data_info {
    uint32_t vocab_size, eot_id, pad_id, max_length;
    uint8_t tokenizer_fp[16];
    /* The tokenizer manifest.json records ("" if no manifest), resolved: a
     * relative path is taken from the manifest's folder (then, for older
     * manifests, from the current folder), and used only if its fingerprint
     * is the shards' (see pile_tokenizer_resolve); spelled absolute so that
     * it opens from anywhere. When that fails it stays as recorded and
     * tokenizer_error says why: what needs the tokenizer (checkpoints,
     * samples) must refuse, or take --tokenizer instead. */
    char tokenizer_spec[1024];
    char tokenizer_error[1024];
    uint64_t train_samples, val_samples;
    uint64_t train_tokens, val_tokens; /* true tokens of the rows used */
    size_t train_shards, val_shards;
    size_t unverified_shards;  /* shards of format version 1, whose rows carry no checksum */
    int val_held_out;          /* 1 when validation is a held-out share of train */
    size_t folders;            /* the dataset's folders (pile_dataset_list) */
    char notes[1024];          /* warnings about the dataset (partitions missing), one per line, for the caller */
} pile_data_info;

/* Opens every <split>-NNNNN.shard of the dataset `spec` names: a folder,
 * several separated by commas, or a folder of partition folders (see
 * pile_dataset_list, which also refuses folders of different tokenizers or
 * row lengths and partitions that overlap), read as one in folder order; in
 * a dataset of several folders each shard is named "<folder label>/<file>"
 * (its identity below). A manifest.json is optional; one that says
 * "complete": false, an interrupted pile-prep run, is refused with what to
 * run. Without val shards, each folder holds out the last val_fraction of
 * its own train samples, so validation draws on every partition. seq_len
 * <= 0 means the shards' max_length. */
int pile_data_open(pile_data **out, const char *spec, int seq_len, double val_fraction, pile_err *err);
void pile_data_close(pile_data *d); /* accepts NULL */
/* spec (as pile_data_open takes it) with each folder made absolute, so a
 * checkpoint finds its data from any folder; a folder that does not
 * resolve stays as written. NUL-terminated in out. 0 or PILE_ENOMEM. */
int pile_data_spec_absolute(const char *spec, pile_buf *out);
const pile_data_info *pile_data_get_info(const pile_data *d);
int pile_data_seq_len(const pile_data *d);

/* The shards' identity, for a checkpoint to record and a resumed run to
 * compare (appended to out as a JSON object, NUL-terminated):
 * {"fingerprint": XXH3-128 over every shard's split, file name, rows,
 * tokens and token-data checksum, "shards": [{"file", "rows", "tokens",
 * "data_xxh3"}, ...]}, all from the shard headers (nothing is read). */
int pile_data_identity(const pile_data *d, pile_buf *out);
/* Compares the shards with an identity pile_data_identity wrote: 0 when
 * they are the same; PILE_EMISMATCH naming the first difference (a shard
 * added, missing, or changed: its rows, tokens or checksum); PILE_EFORMAT
 * when json is not such an identity. */
int pile_data_identity_check(const pile_data *d, const char *json, pile_err *err);

/* The train sample at `position` (< train_samples) of epoch `epoch`'s
 * visiting order: a seeded pseudo-random permutation of the train samples
 * computed per position in O(1) memory (a keyed Feistel network with cycle
 * walking, see train_data.c), depending on (seed, epoch) only and the same
 * on every machine. */
uint64_t pile_data_epoch_sample(const pile_data *d, uint64_t seed, uint64_t epoch, uint64_t position);

/* Sample i of the train (val = 0) or validation (val = 1) set into
 * tokens/targets/doc_start[0..seq_len) (doc_start may be NULL). Returns
 * the number of positions with a target. The sample's row is first checked
 * against its checksum (pile_shard_check_row: hashed on its first use,
 * remembered after): when it fails, nothing of the row is used, the
 * sample comes out as padding without targets (so a caller that skips it
 * can pass the buffers on as they are) and the return is PILE_ECORRUPT,
 * with the shard, the row and both checksums in err. Thread-safe: loader
 * threads may fill samples of one pile_data at once. */
int pile_data_sample(const pile_data *d, int val, uint64_t i, int doc_mask_loss, int32_t *tokens,
                     int32_t *targets, int32_t *doc_start, pile_err *err);

/* The distinct rows found corrupt so far by pile_data_sample, over every
 * shard of both splits. Thread-safe. */
uint64_t pile_data_corrupt_rows(const pile_data *d);

#ifdef __cplusplus
}
#endif

#endif
