/* Checkpoint folders, readable by Hugging Face transformers as they are:
 *
 *   <dir>/model.safetensors      weights, HF GPT-2 names and layouts, fp32
 *                                (wte without the vocabulary padding): the
 *                                optimizer's master weights when saved with one
 *   <dir>/config.json            GPT2LMHeadModel config (+ a "pile" block)
 *   <dir>/optimizer.safetensors  AdamW moments "m.<name>" and "v.<name>"; or,
 *                                of a run whose optimizer state is sharded
 *                                over W ranks (ZeRO 1 and 2, optim.h), one
 *   <dir>/optimizer-RRRRR-of-WWWWW.safetensors per rank: "m" and "v" as
 *                                1-D fp32, elements [R x S, R x S + S) of
 *                                the flat layout (S = ceil(flat / W), the
 *                                last ones shorter), written by that rank
 *   <dir>/trainer_state.json     step, epoch, data position, best val loss,
 *                                loss scale, the resolved configuration
 *   <dir>/tokenizer/             the tokenizer's file(s), copied, plus
 *                                tokenizer_spec.txt; or only its spec and
 *                                fingerprint when it is built in ("bytes")
 *   <dir>/tokenizer.json,        the same tokenizer for transformers'
 *   tokenizer_config.json,       AutoTokenizer (pile_tokenizer_write_hf_json,
 *   special_tokens_map.json      or the spec's own tokenizer.json)
 *   <dir>/checksums.json         written last: the size and XXH3-128 of
 *                                every other file in the folder (whoever
 *                                wrote it), so that a damaged or
 *                                incomplete checkpoint is found by file
 *
 * A folder is written under "<dir>.tmp", every file fsynced, then renamed
 * over <dir> (an existing one is moved aside first and removed after), and
 * the parent fsynced: a crash leaves the old checkpoint or the new one,
 * never a mix. In a run of several ranks (pile_checkpoint_save_ranks)
 * the other ranks add their own files to "<dir>.tmp" before rank 0 seals
 * and renames it (opts->before_seal): checksums.json then covers every
 * rank's files. <checkpoint_dir>/latest
 * (one line, a folder name) is replaced atomically after each save and
 * names the newest. */
#ifndef PILE_CHECKPOINT_H
#define PILE_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "comm/comm.h"
#include "model.h"
#include "optim.h"
#include "pile_buf.h"
#include "pile_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Where training stands; what trainer_state.json holds besides the config. */
typedef struct pile_train_state {
    int64_t step;             /* optimizer steps done */
    int64_t epoch;            /* 0-based epoch in progress */
    uint64_t position;        /* samples of this epoch's order already consumed */
    int64_t total_steps;      /* the schedule's length */
    double best_val_loss;     /* INFINITY before the first validation */
    int64_t best_step;        /* the step best_val_loss was measured at; -1 before (or unrecorded) */
    int pending_val;          /* 1: the validation due at `step` was skipped by a stop signal and
                               * is owed: the resumed run does it first */
    double loss_scale;        /* fp16 dynamic loss scale (1 in fp32) */
    uint64_t seed;
    uint64_t tokens_seen;     /* target tokens trained on */
    uint8_t tokenizer_fp[16];
    char tokenizer_spec[1024];
} pile_train_state;

/* A tokenizer's files held in memory, read once when a run starts, so that
 * a source moved or deleted during a long run cannot fail a checkpoint. */
typedef struct pile_checkpoint_tokenizer pile_checkpoint_tokenizer;

/* Reads the files tokenizer spec `spec` names (a GPT-2 folder's
 * encoder.json and vocab.bpe, a tokenizer.json or .tiktoken file; none for
 * "bytes" or ""). PILE_ENOENT naming the spec when it is neither. */
int pile_checkpoint_tokenizer_read(pile_checkpoint_tokenizer **out, const char *spec, pile_err *err);
/* Their total size in bytes (0 for a built-in tokenizer). */
uint64_t pile_checkpoint_tokenizer_bytes(const pile_checkpoint_tokenizer *t);
void pile_checkpoint_tokenizer_free(pile_checkpoint_tokenizer *t); /* accepts NULL */

typedef struct pile_checkpoint_save_opts {
    /* the tokenizer files to carry (borrowed); NULL: read the files of
     * st->tokenizer_spec now */
    const pile_checkpoint_tokenizer *tokenizer;
    /* 1: a salvage after a failed save: the weights, moments, config and
     * state only; tokenizer/ then holds only tokenizer_spec.txt (the spec
     * and fingerprint stay recorded) */
    int without_tokenizer;
    /* a JSON object stored as trainer_state.json's "data" (the dataset's
     * identity, pile_data_identity), or NULL */
    const char *data_json;
    /* the weights for model.safetensors, whole, in host memory
     * (pile_model_flat_size floats, borrowed), where no one holds them
     * whole: an optimizer sharded over ranks (pile_optim_shards > 1; its
     * master weights, pile_optim_gather, which every rank calls), or a
     * model partitioned at ZeRO 3 saved without its optimizer (the
     * compute parameters, pile_optim_gather_params). NULL: the
     * optimizer's master weights, or without one the model's parameters. */
    const float *weights;
    /* called with the folder being written ("<dir>.tmp") once this
     * process's files are in it and before it is sealed and renamed, or
     * NULL: where the other ranks of a sharded run write their shard
     * files (pile_checkpoint_write_optim_shard) and the writer waits for
     * them, so that checksums.json covers them and the folder appears
     * whole or not at all. Non-zero fails the save (err filled). */
    int (*before_seal)(void *ctx, const char *tmp_dir, pile_err *err);
    void *before_seal_ctx;
} pile_checkpoint_save_opts;

/* Writes a checkpoint folder (see above), all of it or nothing: on failure
 * the previous folder at `dir` is left as it was. config_json is the
 * resolved configuration (pile_train_config_to_json), stored in
 * trainer_state.json. opt may be NULL (weights only: the model's
 * parameters); with it the weights saved are its fp32 master weights. opts
 * may be NULL. */
int pile_checkpoint_save_ex(const char *dir, pile_model *m, pile_optim *opt, const pile_train_state *st,
                            const char *config_json, const pile_checkpoint_save_opts *opts, pile_err *err);
/* pile_checkpoint_save_ex with no options. */
int pile_checkpoint_save(const char *dir, pile_model *m, pile_optim *opt, const pile_train_state *st,
                         const char *config_json, pile_err *err);

/* A save by every rank of a run (comm: its ranks; NULL or one rank: this
 * process alone), all of them calling it: the weights gathered where no
 * rank holds them whole (opts->weights is set here), rank 0 writes the
 * folder (pile_checkpoint_save_ex) and, when the optimizer's state is
 * sharded, the other ranks write their shard files into "<dir>.tmp" before
 * rank 0 seals and renames it; every rank returns 0 only when the folder
 * is complete (PILE_EIO naming the rank that failed). with_optimizer 0:
 * the weights only (best_model); opt is needed either way. */
int pile_checkpoint_save_ranks(const char *dir, pile_model *m, pile_optim *opt, int with_optimizer,
                               const pile_train_state *st, const char *config_json,
                               const pile_checkpoint_save_opts *opts, pile_comm *comm, pile_err *err);

/* This rank's shard of a sharded optimizer's moments, written as
 * <folder>/optimizer-RRRRR-of-WWWWW.safetensors (see above) into a
 * checkpoint folder being written (the tmp_dir of before_seal); the rank
 * whose process saves calls pile_checkpoint_save_ex, which writes its own.
 * Every rank's file must be there for a load. */
int pile_checkpoint_write_optim_shard(const char *folder, pile_model *m, pile_optim *opt, pile_err *err);

/* About how many bytes a checkpoint of this model takes (weights, and
 * with_optimizer the two AdamW moments; the small JSON files; tokenizer
 * bytes as given), for the free-space check before a run. */
uint64_t pile_checkpoint_size_estimate(const pile_model *m, int with_optimizer, uint64_t tokenizer_bytes);

/* Checks every file checksums.json lists against its size and XXH3-128.
 * 0 when all match; PILE_ECORRUPT naming the first file whose bytes differ
 * (with both checksums); PILE_ETRUNC naming a listed file that is missing
 * or of another size (an incomplete folder); PILE_EFORMAT for a
 * checksums.json that cannot be read; PILE_ENOENT when there is no
 * checksums.json (a folder written by an older pile-trainer or another
 * program: nothing to check against). Files not listed are not checked. */
int pile_checkpoint_verify(const char *dir, pile_err *err);

/* Copies checkpoint folder src to dst the way a save writes one (dst.tmp,
 * fsynced, renamed over dst), with a fresh checksums.json; weights_only
 * leaves optimizer.safetensors out (what best_model holds). src is
 * verified first when it has a checksums.json. */
int pile_checkpoint_copy(const char *src, const char *dst, int weights_only, pile_err *err);

/* Reads config.json of a checkpoint: the model's dimensions. */
int pile_checkpoint_read_model_config(const char *dir, pile_model_config *cfg, pile_err *err);
/* Loads weights (and moments when opt != NULL, and the state when st !=
 * NULL) into a model created with the dimensions read above: into the
 * optimizer's master weights, which it then writes into the model, when
 * opt != NULL, else into the model's parameters. Names and
 * shapes are checked against the model's tensor table; a missing, extra
 * or misshapen tensor is PILE_EMISMATCH naming it. A sharded optimizer
 * takes the part of each state in its shard, whatever the world size and
 * ZeRO stage the checkpoint was written with (its moments consolidated in
 * optimizer.safetensors or in the ranks' shard files, regrouped): every
 * rank calls it (a collective: the compute parameters are all-gathered). */
int pile_checkpoint_load(const char *dir, pile_model *m, pile_optim *opt, pile_train_state *st, pile_err *err);
/* The state of a checkpoint folder (trainer_state.json) without loading
 * anything else. */
int pile_checkpoint_read_state(const char *dir, pile_train_state *st, pile_err *err);
/* The resolved configuration stored in trainer_state.json (for --resume
 * to check that the run's settings did not change). */
int pile_checkpoint_read_config_json(const char *dir, pile_buf *out, pile_err *err);
/* The value of trainer_state.json's `key` as JSON text (NUL-terminated),
 * appended to out; PILE_ENOENT when the key is absent or null. */
int pile_checkpoint_read_state_json(const char *dir, const char *key, pile_buf *out, pile_err *err);
/* The tokenizer spec to open for this checkpoint: its own tokenizer/ copy
 * if present, else the spec trainer_state.json records, else (a folder
 * from transformers' save_pretrained, without trainer_state.json) a
 * tokenizer.json beside the model; PILE_ENOENT when there is none. */
int pile_checkpoint_tokenizer_spec(const char *dir, pile_buf *out, pile_err *err);

/* Replaces <checkpoint_dir>/latest with `name`. */
int pile_checkpoint_set_latest(const char *checkpoint_dir, const char *name, pile_err *err);
/* The newest checkpoint folder (from "latest", else the highest step among
 * epoch-* and step-* folders) into out as a full path; PILE_ENOENT if none. */
int pile_checkpoint_find_latest(const char *checkpoint_dir, pile_buf *out, pile_err *err);

/* The folder --resume continues from, as a full path into out: the one
 * "latest" names, else the highest step among epoch-* and step-*, that has
 * a readable trainer_state.json and passes pile_checkpoint_verify (a folder
 * without checksums.json, from an older pile-trainer, is taken unverified).
 * Every folder passed over, and why ("latest" naming a missing folder, no
 * trainer_state.json, a file that fails its checksum), is a line in notes;
 * after a failure only older steps are candidates. PILE_ENOENT when there
 * is no checkpoint; when none passes, the newest's failure, saying that no
 * older checkpoint passes. */
int pile_checkpoint_find_resumable(const char *checkpoint_dir, pile_buf *out, pile_buf *notes, pile_err *err);

/* The epoch-* or step-* folder whose trainer_state.json is at `step` (the
 * greater name on a tie), as a full path into out; PILE_ENOENT if none. */
int pile_checkpoint_find_step(const char *checkpoint_dir, int64_t step, pile_buf *out, pile_err *err);

/* Clears what a killed run left in checkpoint_dir, touching only names a
 * save writes: a "<name>.tmp" (a save or deletion in progress) is removed;
 * a "<name>.old" (a replace in progress) is renamed back when <name> is
 * missing, else removed; a "latest.tmp" is removed. Each action is a line
 * in notes. The caller holds the folder's lock. */
int pile_checkpoint_clean(const char *checkpoint_dir, pile_buf *notes, pile_err *err);

/* Removes checkpoint folder dir (renamed to "<dir>.tmp" first, so that a
 * crash midway leaves nothing that looks like a checkpoint); 0 when it is
 * absent. */
int pile_checkpoint_remove(const char *dir, pile_err *err);

/* --save_total_limit: keeps the `keep` (>= 1) newest step-N folders with N
 * <= step and deletes the older ones (each renamed to step-N.tmp first, so
 * that a crash midway leaves nothing that looks like a checkpoint);
 * epoch-*, best_model and steps past `step` (a run rolled back) are never
 * touched. Each deleted folder is a line in notes. Call it only once the
 * newest checkpoint is durable and "latest" names it. */
int pile_checkpoint_prune(const char *checkpoint_dir, int64_t keep, int64_t step, pile_buf *notes, pile_err *err);

/* ------------------------------------------------------- safetensors */

/* The safetensors format (https://huggingface.co/docs/safetensors):
 * u64 LE header length, a JSON header {name: {dtype, shape, data_offsets}}
 * (padded with spaces to a multiple of 8), then the data. Only F32 here. */
typedef struct pile_st_tensor {
    const char *name;
    int ndim;
    int64_t shape[4];
    const float *data; /* host memory */
} pile_st_tensor;

/* Writes tensors (in the given order) atomically to path; metadata is a
 * NULL-terminated list of key, value strings for "__metadata__" (or NULL). */
int pile_st_write(const char *path, const pile_st_tensor *tensors, size_t n, const char *const *metadata,
                  pile_err *err);

typedef struct pile_st_file pile_st_file;
/* Opens and validates a safetensors file (header JSON, offsets in bounds,
 * non-overlapping, dtype F32 or refused with its name). */
int pile_st_open(pile_st_file **out, const char *path, pile_err *err);
void pile_st_close(pile_st_file *f); /* accepts NULL */
size_t pile_st_count(const pile_st_file *f);
/* i-th tensor in file order; data points into the file's memory. */
const pile_st_tensor *pile_st_at(const pile_st_file *f, size_t i);
const pile_st_tensor *pile_st_find(const pile_st_file *f, const char *name);

#ifdef __cplusplus
}
#endif

#endif
