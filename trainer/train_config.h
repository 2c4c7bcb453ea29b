/* pile-trainer's settings: one plain struct, filled in this order, each
 * step overriding the one before: built-in defaults, the preset named by
 * `model`, JSON config files (--config, keys named as the struct fields
 * below, the names Python training scripts use; several apply in order,
 * and two keys for one field in one file are refused), a DeepSpeed ds_config.json
 * (--deepspeed), then command-line flags (--batch_size / --batch-size).
 * Everything read that the trainer does not do (unknown keys, ds_config
 * fields that do not apply) is named in a warning, never dropped in
 * silence.
 * pile_train_config_to_json writes the resolved values (what
 * --print-config shows), in the form --config reads back. */
#ifndef PILE_TRAIN_CONFIG_H
#define PILE_TRAIN_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "loss_scaler.h"
#include "pile_buf.h"
#include "pile_error.h"
#include "precision.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pile_train_config {
    /* paths */
    char data[1024];           /* "./shards" */
    char checkpoint_dir[1024]; /* "./checkpoints": checkpoints, metrics.jsonl, TensorBoard events */
    char fallback_dir[1024];   /* where a checkpoint that checkpoint_dir cannot take goes; "" = none */
    char config_file[1024];    /* --config, "" if none */
    char deepspeed_file[1024]; /* --deepspeed, "" if none */
    char tokenizer[1024];      /* override of the tokenizer the shards' manifest names; "" = manifest */

    /* model */
    char model[64];            /* preset: "tiny" by default */
    int n_layer, n_head, n_embd; /* 0 = from the preset */
    float dropout;             /* 0 */
    int max_length;            /* 0 = the shards' max_length; else <= it */
    int doc_mask;              /* no attention across document starts */
    int doc_mask_loss;         /* also no loss on the first token of a document (needs doc_mask) */

    /* optimisation */
    int batch_size;            /* micro-batch rows: 8 */
    int accumulation_steps;    /* 1 */
    double learning_rate;      /* 6e-4 */
    double min_lr;             /* < 0 = learning_rate / 10 */
    int epochs;                /* 1 */
    int64_t max_steps;         /* > 0: stop after this many optimizer steps (and schedule over them) */
    double warmup_ratio;       /* 0.0 */
    int64_t warmup_steps;      /* > 0: warmup steps, winning over warmup_ratio (DeepSpeed warmup_num_steps) */
    double weight_decay;       /* 0.01 */
    int decay_all;             /* weight decay on biases, norms and embeddings too */
    double adam_beta1, adam_beta2, adam_epsilon; /* 0.9, 0.999, 1e-8 */
    double gradient_clipping;  /* 1.0; <= 0 = none */
    uint64_t seed;             /* 42 */

    /* evaluation, logging, checkpoints */
    int64_t eval_interval;     /* optimizer steps between validations; 0 = only at epoch ends */
    int64_t eval_rows;         /* cap on validation rows; 0 = all */
    double val_fraction;       /* held-out share of train rows when there are no val shards: 0.01 */
    int skip_corrupt_rows;     /* leave out (and count) rows that fail their checksum instead of stopping */
    int64_t log_interval;      /* steps between progress lines and metrics: 1 */
    int64_t save_interval;     /* steps between step-NNNNNNN checkpoints; 0 = only epochs */
    int64_t save_total_limit;  /* keep the newest N step-NNNNNNN checkpoints; 0 = all */
    int resume;                /* continue from the newest checkpoint in checkpoint_dir */
    int allow_data_change;     /* --resume on shards other than the checkpoint's */

    /* execution */
    char backend[32];          /* "auto" (cuda when usable, else cpu), "cpu", "cuda" (pile_backend_open) */
    int threads;               /* 0 = every usable core */
    double peak_tflops;        /* the device's peak for MFU; 0 = by the GPU's name (mfu.h), none on the CPU */
    pile_precision precision;  /* what precision_given says; else see pile_train_config_precision */
    int precision_given;       /* 1 when a flag or file named the precision (bf16/fp16 true counts) */
    char recompute[8];         /* "none", "gelu" or "block" (pile_recompute): memory against time */
    int skip_memory_check;     /* start even when plan.h says the run does not fit */
    int world_size;            /* from the launcher; 1 */
    double dist_timeout;       /* seconds the ranks wait for a peer (rendezvous, each collective); 600 */

    /* ZeRO (optim.h's pile_optim_zero): --zero / --offload, or
     * ds_config.json's zero_optimization */
    int zero_stage;            /* 0 */
    int offload_optimizer;     /* 0; 1: master weights, moments and the gradient shard in host memory */
    int offload_param;         /* 0; 1: the parameter shards too (stage 3) */
    int64_t reduce_bucket_size; /* gradient bucket per rank, elements (DeepSpeed's 5e8) */
    int64_t stage3_prefetch_bucket_size; /* stage 3: units up to this many parameters prefetched (5e7) */
    int overlap_comm;          /* 1: collectives on the communicator's thread, overlapping the compute */
    /* fp16 loss scaling (loss_scaler.h has the rules): ds_config.json's
     * fp16 block, or flags */
    double loss_scale;         /* 0 = dynamic; > 0 = this static scale */
    int initial_scale_power;   /* 16: the dynamic scale starts at 2^16 */
    int loss_scale_window;     /* 1000 */
    int hysteresis;            /* 2 */
    int consecutive_hysteresis; /* 0 */
    double min_loss_scale;     /* 1 */
} pile_train_config;

void pile_train_config_defaults(pile_train_config *c);

/* Applies a JSON config file. Hugging Face's booleans "bf16" and "fp16"
 * set the precision (both true, or one true against another "precision",
 * is PILE_EINVAL naming both). Unknown keys: a warning each in *warnings
 * (one line per warning). Wrong types or out-of-range values, and two keys
 * setting one field (a name and its Hugging Face alias, or a key given
 * twice): PILE_EINVAL naming the file and keys, nothing applied. */
int pile_train_config_load_json(pile_train_config *c, const char *path, pile_buf *warnings, pile_err *err);
/* Applies a DeepSpeed config: train_micro_batch_size_per_gpu,
 * gradient_accumulation_steps, train_batch_size (checked: micro x
 * accumulation x world size; "auto" resolved from the others),
 * gradient_clipping, optimizer {type, params: lr, betas, eps,
 * weight_decay}, scheduler {WarmupLR, WarmupDecayLR, WarmupCosineLR:
 * warmup_num_steps / total_num_steps mapped, the rest warned},
 * fp16 {enabled, loss_scale, initial_scale_power, loss_scale_window,
 * hysteresis, consecutive_hysteresis, min_loss_scale}, bf16 {enabled}
 * (both enabled: PILE_EINVAL; an explicit "enabled" replaces the precision
 * set before, with a warning when that was not fp32), zero_optimization
 * {stage, reduce_bucket_size, stage3_prefetch_bucket_size, overlap_comm,
 * offload_optimizer / offload_param {device: none or cpu}; the rest
 * warned}, steps_per_print, seed. "auto"
 * leaves the current value. */
int pile_train_config_load_deepspeed(pile_train_config *c, const char *path, pile_buf *warnings, pile_err *err);
/* Applies command-line flags argv[first..argc). Returns the index of the
 * first argument that is not a recognised flag (argc when all were),
 * or a negative PILE_E* with the flag named. Flags: --NAME VALUE or
 * --NAME=VALUE for every field above (dashes or underscores), booleans as
 * --doc-mask / --no-doc-mask; --bf16 and --fp16 (Hugging Face's) set the
 * precision as in a config file. --config and --deepspeed are applied by
 * pile_train_config_resolve, not here. */
int pile_train_config_parse_args(pile_train_config *c, int argc, char **argv, int first, pile_err *err);

/* The whole resolution for `pile-trainer train ARGS`: defaults, then the
 * --config files found in argv (in order) and the --deepspeed file (one),
 * then every flag. Checks
 * the result (positive sizes, n_embd divisible by n_head, ratios in [0,1],
 * doc_mask_loss needs doc_mask). An argument that is not a flag is
 * PILE_EINVAL ("unknown option '--x'"). */
int pile_train_config_resolve(pile_train_config *c, int argc, char **argv, int first, pile_buf *warnings,
                              pile_err *err);
/* Checks the invariants above; PILE_EINVAL naming the field. */
int pile_train_config_check(const pile_train_config *c, pile_err *err);

/* The loss scaler's settings (loss_scaler.h) from the resolved ones. */
void pile_train_config_loss_scaler(const pile_train_config *c, pile_loss_scaler_config *out);

/* Appends the resolved configuration as JSON (one key per line, sorted as
 * the struct), the form --config reads back. */
int pile_train_config_to_json(const pile_train_config *c, pile_buf *out);
/* Help text for the flags (one line each, with the default). */
void pile_train_config_help(pile_buf *out);

/* The precision a run on backend `backend_name` ("cpu", "cuda") trains in:
 * the one given (precision_given), else bf16 on CUDA and fp32 elsewhere
 * (the CPU emulates 16-bit storage at some cost and gains no speed from
 * it). A run resolves it once, before anything depends on it, and records
 * it in its checkpoints' config, so a resume keeps it. */
pile_precision pile_train_config_precision(const pile_train_config *c, const char *backend_name);

#ifdef __cplusplus
}
#endif

#endif
