/* fp16 loss scaling by DeepSpeed's rules (its DynamicLossScaler as of
 * deepspeed 0.19.8, the version tests/reference/loss_scaler_ref.py
 * compares step for step), so that a ds_config.json's "fp16" block means
 * here what it means there.
 *
 * The loss is multiplied by the scale before the backward, the gradients
 * divided by it before clipping. After each backward the trainer calls
 * pile_loss_scaler_update with whether any gradient was non-finite:
 *  - static scaling (loss_scale > 0): the scale never changes; an
 *    overflowed step is skipped.
 *  - dynamic scaling (loss_scale == 0): the scale starts at
 *    2^initial_scale_power. An overflowed step is skipped; the scale halves
 *    (never under min_loss_scale) once `hysteresis` overflows have used up
 *    the tolerance, an overflow before that only using one up. The
 *    tolerance refills when the scale grows, or on every clean step with
 *    consecutive_hysteresis. A clean step that comes after
 *    loss_scale_window clean steps in a row (counted since the last
 *    overflow, or the start) doubles the scale, and so does every
 *    loss_scale_window-th clean step after it. An overflow while the scale
 *    already sits at min_loss_scale with no tolerance left ends the run
 *    (PILE_ELIMIT), as DeepSpeed raises. One departure: the scale stops
 *    growing where doubling it would pass the largest finite fp32 (where
 *    DeepSpeed's scale would become infinite in the fp32 product).
 * A skipped step leaves weights, moments and the schedule's step count as
 * they were (the trainer's part); the scaler counts it.
 *
 * The state (scale and counters) goes to trainer_state.json and back, so
 * that a resumed run gets the scales of one never stopped. Not
 * thread-safe: one scaler per training run, called from the loop. */
#ifndef PILE_LOSS_SCALER_H
#define PILE_LOSS_SCALER_H

#include <stdint.h>

#include "pile_buf.h"
#include "pile_error.h"
#include "pile_json.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The settings, named as ds_config.json's "fp16" block names them. */
typedef struct pile_loss_scaler_config {
    double loss_scale;          /* > 0: this static scale; 0: dynamic (0) */
    int initial_scale_power;    /* dynamic: the first scale is 2^this, 0 to 127 (16) */
    int loss_scale_window;      /* clean steps before the scale doubles, >= 1 (1000) */
    int hysteresis;             /* overflows tolerated before it halves, >= 1 (2) */
    int consecutive_hysteresis; /* a clean step refills the tolerance (0) */
    double min_loss_scale;      /* the scale never halves under this, > 0 (1) */
} pile_loss_scaler_config;

/* DeepSpeed's defaults, as above. */
void pile_loss_scaler_config_defaults(pile_loss_scaler_config *c);
/* The ranges above (those of the dynamic settings only with loss_scale
 * 0); PILE_EINVAL naming the setting. */
int pile_loss_scaler_config_check(const pile_loss_scaler_config *c, pile_err *err);

typedef struct pile_loss_scaler pile_loss_scaler;

/* Creates a scaler; PILE_EINVAL naming the setting out of range,
 * PILE_ENOMEM. Free with pile_loss_scaler_free (accepts NULL). */
int pile_loss_scaler_create(pile_loss_scaler **out, const pile_loss_scaler_config *c, pile_err *err);
void pile_loss_scaler_free(pile_loss_scaler *s);

/* The scale the next backward multiplies the loss by: a finite, positive
 * double that converts to fp32 exactly when the settings' scales do
 * (powers of two always do). */
double pile_loss_scaler_scale(const pile_loss_scaler *s);
/* Steps skipped since the run started (resumes included). */
int64_t pile_loss_scaler_skipped(const pile_loss_scaler *s);

/* What one update decided. */
typedef struct pile_loss_scaler_step {
    int skip;             /* the step overflowed: apply nothing of it */
    double scale;         /* the scale its backward used */
    double next_scale;    /* the scale of the next backward */
    int hysteresis_left;  /* overflows still tolerated before the scale halves */
} pile_loss_scaler_step;

/* Records one optimizer step's outcome: `overflow` is non-zero when any
 * gradient (of any micro-batch, on any rank) was infinite or NaN. Fills
 * *out (may be NULL). PILE_ELIMIT, with the scaler unchanged, when an
 * overflow would take a dynamic scale under min_loss_scale (see above). */
int pile_loss_scaler_update(pile_loss_scaler *s, int overflow, pile_loss_scaler_step *out, pile_err *err);

/* Appends the state as one JSON object (no newline), for
 * trainer_state.json: {"dynamic", "scale", "iteration", "last_overflow",
 * "hysteresis_left", "skipped_steps"}; numbers that read back exactly. */
int pile_loss_scaler_state_to_json(const pile_loss_scaler *s, pile_buf *out);
/* Restores a state written by pile_loss_scaler_state_to_json into a
 * scaler created with the run's settings. `where` names the file in
 * messages. PILE_EFORMAT for a field missing or out of range,
 * PILE_EMISMATCH when the state cannot belong to these settings (static
 * against dynamic, more tolerance left than `hysteresis`); the scaler is
 * unchanged on error. A static scaler keeps its configured scale. */
int pile_loss_scaler_state_from_json(pile_loss_scaler *s, const pile_json *state, const char *where, pile_err *err);

#ifdef __cplusplus
}
#endif

#endif
