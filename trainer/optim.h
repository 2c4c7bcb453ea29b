/* The optimizer: the owner of the training state beside the model (fp32
 * master weights, gradients, AdamW moments), AdamW over it, global-norm
 * gradient clipping, and the learning-rate schedule. Written to match PyTorch and
 * transformers step for step (tests/reference checks it):
 *  - AdamW as torch.optim.AdamW (decoupled decay, bias correction, eps
 *    outside the square root), weight decay only on tensors whose
 *    pile_tensor_info.decay is set unless decay_all;
 *  - clipping as torch.nn.utils.clip_grad_norm_ (coefficient
 *    max_norm / (norm + 1e-6), applied only when below 1);
 *  - the schedule as transformers' get_cosine_with_min_lr_schedule_with_warmup:
 *    linear warmup from 0 over warmup_steps, then cosine to min_lr. */
#ifndef PILE_OPTIM_H
#define PILE_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "loss_scaler.h"
#include "model.h"
#include "pile_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pile_adamw_config {
    float beta1, beta2, eps;  /* 0.9, 0.999, 1e-8 */
    float weight_decay;
    int decay_all;            /* also decay biases, norms and embeddings */
} pile_adamw_config;

typedef struct pile_optim pile_optim;

/* What the optimizer owns, in its backend (the model's, today), each one
 * allocation in the model's flat tensor layout (pile_model_flat_size
 * elements): the fp32 master weights, the gradients (F32, accumulated by
 * pile_model_backward across micro-batches), and AdamW's moments m and v.
 * After each step it writes the model's compute parameters from the master
 * weights (converted to the compute dtype, or rounded to it on a backend
 * that emulates 16-bit storage: pile_backend_set_emulation). When the
 * model computes in F32 on the same backend without emulation, the master
 * weights ARE the model's compute parameters (one buffer, no copy, no
 * extra memory): nothing then differs from a single parameter buffer,
 * which fp32 training and its bit-exact checks rely on.
 *
 * create takes the model's current parameters as the master weights (init
 * or load them into the model first) and zero moments and gradients. */
int pile_optim_create(pile_optim **out, pile_model *m, const pile_adamw_config *cfg, pile_err *err);
void pile_optim_free(pile_optim *o); /* accepts NULL */
/* Its tensors (F32, backend memory, the optimizer's for its lifetime). */
pile_tensor pile_optim_master(pile_optim *o);
pile_tensor pile_optim_grads(pile_optim *o);
pile_tensor pile_optim_m(pile_optim *o);
pile_tensor pile_optim_v(pile_optim *o);
/* 1 when the master weights are the model's compute parameters (F32). */
int pile_optim_master_is_compute(const pile_optim *o);
/* Optimizer steps taken so far (the t of bias correction is steps + 1). */
int64_t pile_optim_steps(const pile_optim *o);
void pile_optim_set_steps(pile_optim *o, int64_t steps);

/* Zeroes the gradients: where a step's sum over micro-batches starts. */
void pile_optim_zero_grad(pile_optim *o);

/* Global L2 norm of the gradients on one rank; NaN when the backend has
 * failed. (Over several ranks the loop sums each rank's partition through
 * the communicator, comm/comm.h, instead.) */
double pile_optim_grad_norm(pile_optim *o);

/* One optimizer step on the gradients, reduced over the ranks already,
 * given their global norm: clipping to max_norm (<= 0: none), one AdamW
 * step with learning rate lr on the master weights, counted, then the
 * model's compute parameters written from them. 0, or the backend's sticky
 * error; PILE_EINVAL, changing nothing, for a norm that is not finite (the
 * caller decides whether that ends the run). */
int pile_optim_step(pile_optim *o, double grad_norm, float max_norm, float lr, pile_err *err);

/* fp16's loss scaling (loss_scaler.h): the optimizer creates and owns a
 * scaler with these settings (PILE_EINVAL for settings out of range,
 * PILE_ENOMEM); call once, before the first step. Without it the scale is
 * 1 and pile_optim_step_scaled behaves as pile_optim_step. */
int pile_optim_enable_loss_scaling(pile_optim *o, const pile_loss_scaler_config *c, pile_err *err);
/* The optimizer's scaler (its state goes into checkpoints), or NULL. */
pile_loss_scaler *pile_optim_loss_scaler(pile_optim *o);
/* The scale the next backward multiplies the loss by (1 without a scaler). */
double pile_optim_loss_scale(const pile_optim *o);

/* One step on gradients accumulated with the loss multiplied by
 * pile_optim_loss_scale: grad_norm is their global norm as accumulated
 * (scaled), overflow non-zero when any rank saw a non-finite gradient (the
 * caller reduces the flag with MAX over the ranks). The scaler records the
 * outcome (*out, may be NULL). An overflowed step is skipped: master
 * weights, moments, the compute copy and pile_optim_steps stay as they
 * were, and 1 is returned. Otherwise the gradients are divided by the
 * scale, then clipped and applied as pile_optim_step does with the
 * unscaled norm (*unscaled_norm, may be NULL), and 0 is returned. Errors:
 * the backend's sticky error; PILE_ELIMIT when an overflow would take the
 * scale under min_loss_scale (loss_scaler.h), nothing changed. */
int pile_optim_step_scaled(pile_optim *o, double grad_norm, int overflow, float max_norm, float lr,
                           double *unscaled_norm, pile_loss_scaler_step *out, pile_err *err);

/* Writes the model's compute parameters from the master weights (after a
 * checkpoint was loaded into them). A no-op when they are one buffer. */
int pile_optim_update_model(pile_optim *o, pile_err *err);

/* Learning rate of optimizer step `step` (0-based) out of total_steps. */
double pile_lr_at(int64_t step, int64_t total_steps, int64_t warmup_steps, double lr, double min_lr);
/* ceil(warmup_ratio * total_steps), as transformers' TrainingArguments. */
int64_t pile_warmup_steps(double warmup_ratio, int64_t total_steps);

#ifdef __cplusplus
}
#endif

#endif
