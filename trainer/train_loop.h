/* pile-trainer's three jobs, over the modules beside this header:
 *  - train: data (train_data.h) -> model (model.h) -> AdamW (optim.h), with
 *    gradient accumulation, warmup + cosine schedule, clipping, validation
 *    every eval_interval steps and at each epoch's end, checkpoints
 *    (checkpoint.h) per epoch / best / on SIGINT and SIGTERM, metrics
 *    (metrics.h), and --resume that continues bit for bit;
 *  - eval: a checkpoint's validation loss, accuracy and perplexity;
 *  - sample: text from a checkpoint and a prompt.
 * What a run owns and in what order it makes them: the backend (backend.h,
 * by name), the communicator (comm/comm.h), the run folder (its lock), the
 * data, the model (compute parameters, activations), the optimizer (master
 * weights, gradients, moments), the metrics. Per step the loop runs the
 * micro-batches' forward and backward into the optimizer's gradients, then
 * only "reduce gradients" (over the ranks, through the communicator) and
 * "step" (optim.h), and checks the backend's sticky error once
 * (pile_backend_sync).
 * pile_trainer.c is only the command line around these. They print
 * nothing: progress, notes, warnings and validation lines, the final
 * summary (train) and the generated text (sample) go to the caller's
 * pile_log (log.h; NULL: dropped), the eval result into a struct. */
#ifndef PILE_TRAIN_LOOP_H
#define PILE_TRAIN_LOOP_H

#include <stdint.h>

#include "log.h"
#include "pile_error.h"
#include "train_config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What pile_trainer_train returns for a run stopped by SIGINT, SIGTERM or
 * SIGHUP with its checkpoint written: resumable, not finished (the
 * command line exits 75, EX_TEMPFAIL, for it). */
#define PILE_TRAINER_STOPPED 1

/* Trains with a resolved configuration. Returns 0 when training finished,
 * PILE_TRAINER_STOPPED when a signal stopped it cleanly (a checkpoint
 * written), else PILE_E*. SIGUSR1 writes a checkpoint and goes on. The
 * summary comes last, as PILE_LOG_RESULT lines. The signal handlers are
 * the process's while it runs (log->signal_fd is theirs to write to). */
int pile_trainer_train(const pile_train_config *cfg, const pile_log *log, pile_err *err);

/* Where the number of validation samples evaluated came from. */
typedef enum pile_eval_rows_from {
    PILE_EVAL_ROWS_GIVEN = 0,      /* the caller's rows */
    PILE_EVAL_ROWS_CHECKPOINT = 1, /* the eval_rows the checkpoint's run validated on */
    PILE_EVAL_ROWS_NONE = 2,       /* none recorded (a folder from elsewhere): all */
} pile_eval_rows_from;

typedef struct pile_eval_result {
    double loss, accuracy, perplexity;
    int64_t tokens;
    uint64_t samples;     /* the first `samples` validation samples were evaluated */
    uint64_t val_samples; /* of this many */
    pile_eval_rows_from rows_from;
} pile_eval_result;

/* Evaluates checkpoint folder ckpt on the validation samples of data_dir
 * (the shards the checkpoint was trained on when data_dir is NULL or "").
 * rows caps the samples (0 = all; < 0 = the eval_rows the checkpoint's run
 * used, so that eval repeats its validation numbers). */
int pile_trainer_eval(const char *ckpt, const char *data_dir, int64_t rows, int batch_size, int threads,
                      const pile_log *log, pile_eval_result *res, pile_err *err);

typedef struct pile_sample_opts {
    const char *prompt;
    const char *tokenizer; /* NULL: the checkpoint's (pile_checkpoint_tokenizer_spec) */
    int max_new_tokens; /* 200 */
    double temperature; /* 1.0; 0 = greedy */
    int top_k;          /* 0 = whole vocabulary */
    uint64_t seed;
    int threads;
    const char *backend; /* NULL or "": cpu */
} pile_sample_opts;

/* Hands the prompt, then its continuation as it is generated, then a
 * newline to log as PILE_LOG_RESULT text. ckpt may also be a folder from
 * transformers' save_pretrained (no trainer_state.json), with its
 * tokenizer.json or opts->tokenizer. */
int pile_trainer_sample(const char *ckpt, const pile_sample_opts *opts, const pile_log *log, pile_err *err);

#ifdef __cplusplus
}
#endif

#endif
