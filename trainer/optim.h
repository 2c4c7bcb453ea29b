/* AdamW over a pile_model's flat buffers, global-norm gradient clipping,
 * and the learning-rate schedule. Written to match PyTorch and
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

/* Moments m and v (zero) in the model's backend, one flat buffer each in
 * the model's tensor layout. */
int pile_optim_create(pile_optim **out, pile_model *m, const pile_adamw_config *cfg, pile_err *err);
void pile_optim_free(pile_optim *o); /* accepts NULL */
float *pile_optim_m(pile_optim *o);
float *pile_optim_v(pile_optim *o);
/* Optimizer steps taken so far (the t of bias correction is steps + 1). */
int64_t pile_optim_steps(const pile_optim *o);
void pile_optim_set_steps(pile_optim *o, int64_t steps);

/* Global L2 norm of the model's gradients (all ranks' gradients must
 * already be reduced). */
double pile_optim_grad_norm(pile_optim *o);
/* Clips to max_norm (<= 0: no clipping) given the norm computed above,
 * then applies one AdamW step with learning rate lr and counts it. */
void pile_optim_step(pile_optim *o, double grad_norm, float max_norm, float lr);

/* Learning rate of optimizer step `step` (0-based) out of total_steps. */
double pile_lr_at(int64_t step, int64_t total_steps, int64_t warmup_steps, double lr, double min_lr);
/* ceil(warmup_ratio * total_steps), as transformers' TrainingArguments. */
int64_t pile_warmup_steps(double warmup_ratio, int64_t total_steps);

#ifdef __cplusplus
}
#endif

#endif
