/* Checkpoint folders, readable by Hugging Face transformers as they are:
 *
 *   <dir>/model.safetensors      weights, HF GPT-2 names and layouts, fp32
 *                                (wte without the vocabulary padding)
 *   <dir>/config.json            GPT2LMHeadModel config (+ a "pile" block)
 *   <dir>/optimizer.safetensors  AdamW moments "m.<name>" and "v.<name>"
 *   <dir>/trainer_state.json     step, epoch, data position, best val loss,
 *                                loss scale, the resolved configuration
 *   <dir>/tokenizer/             the tokenizer's file(s), copied, plus
 *                                tokenizer_spec.txt; or only its spec and
 *                                fingerprint when it is built in ("bytes")
 *
 * A folder is written under "<dir>.tmp", every file fsynced, then renamed
 * over <dir> (an existing one is moved aside first and removed after), and
 * the parent fsynced: a crash leaves the old checkpoint or the new one,
 * never a mix. <checkpoint_dir>/latest (one line, a folder name) is
 * replaced atomically after each save and names the newest. */
#ifndef PILE_CHECKPOINT_H
#define PILE_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

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
    double loss_scale;        /* fp16 dynamic loss scale (1 in fp32) */
    uint64_t seed;
    uint64_t tokens_seen;     /* target tokens trained on */
    uint8_t tokenizer_fp[16];
    char tokenizer_spec[1024];
} pile_train_state;

/* Writes a checkpoint folder (see above). config_json is the resolved
 * configuration (pile_train_config_to_json), stored in trainer_state.json.
 * opt may be NULL (weights only). */
int pile_checkpoint_save(const char *dir, pile_model *m, pile_optim *opt, const pile_train_state *st,
                         const char *config_json, pile_err *err);

/* Reads config.json of a checkpoint: the model's dimensions. */
int pile_checkpoint_read_model_config(const char *dir, pile_model_config *cfg, pile_err *err);
/* Loads weights (and moments when opt != NULL, and the state when st !=
 * NULL) into a model created with the dimensions read above. Names and
 * shapes are checked against the model's tensor table; a missing, extra
 * or misshapen tensor is PILE_EMISMATCH naming it. */
int pile_checkpoint_load(const char *dir, pile_model *m, pile_optim *opt, pile_train_state *st, pile_err *err);
/* The resolved configuration stored in trainer_state.json (for --resume
 * to check that the run's settings did not change). */
int pile_checkpoint_read_config_json(const char *dir, pile_buf *out, pile_err *err);
/* The tokenizer spec to open for this checkpoint: its own tokenizer/ copy
 * if present, else the recorded spec. */
int pile_checkpoint_tokenizer_spec(const char *dir, pile_buf *out, pile_err *err);

/* Replaces <checkpoint_dir>/latest with `name`. */
int pile_checkpoint_set_latest(const char *checkpoint_dir, const char *name, pile_err *err);
/* The newest checkpoint folder (from "latest", else the highest step among
 * epoch-* and step-* folders) into out as a full path; PILE_ENOENT if none. */
int pile_checkpoint_find_latest(const char *checkpoint_dir, pile_buf *out, pile_err *err);

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
