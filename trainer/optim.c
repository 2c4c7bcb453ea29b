/* The optimizer's state (master weights, gradients, moments), AdamW,
 * global-norm clipping and the cosine-with-warmup schedule, through the
 * backend only. The arithmetic
 * follows torch.optim.AdamW, torch.nn.utils.clip_grad_norm_ and
 * transformers' get_cosine_with_min_lr_schedule_with_warmup so that the
 * trainer can be checked against them step for step. */
#include "optim.h"

#include <math.h>
#include <stdlib.h>

struct pile_optim {
    pile_model *model;
    pile_backend *be;
    pile_adamw_config cfg;
    pile_tensor master, grads, m, v;
    int master_is_compute; /* master is the model's parameter buffer, not an allocation of ours */
    int64_t steps;
    pile_loss_scaler *scaler; /* fp16 only */
};

int pile_optim_create(pile_optim **out, pile_model *model, const pile_adamw_config *cfg, pile_err *err)
{
    *out = NULL;
    PILE_RETURN_IF(!(cfg->beta1 >= 0.0f && cfg->beta1 < 1.0f) || !(cfg->beta2 >= 0.0f && cfg->beta2 < 1.0f), err,
                   PILE_EINVAL, "invalid AdamW betas (%g, %g): each must be in [0, 1)", (double)cfg->beta1,
                   (double)cfg->beta2);
    PILE_RETURN_IF(!(cfg->eps >= 0.0f) || !(cfg->weight_decay >= 0.0f), err, PILE_EINVAL,
                   "invalid AdamW eps %g or weight decay %g: must be >= 0", (double)cfg->eps,
                   (double)cfg->weight_decay);
    pile_optim *o = calloc(1, sizeof *o);
    if (!o) return pile_err_set(err, PILE_ENOMEM, "cannot allocate the optimizer");
    o->model = model;
    o->be = pile_model_backend(model);
    o->cfg = *cfg;
    const size_t n = pile_model_flat_size(model);
    const pile_tensor params = pile_model_params(model);
    /* one buffer unless the model computes in 16 bits (or emulates it) */
    o->master_is_compute = params.dtype == PILE_DTYPE_F32 && params.be == o->be &&
                           pile_backend_emulation(o->be) == PILE_DTYPE_F32;
    if (o->master_is_compute) {
        o->master = params;
    } else {
        /* the model's values as they are (an emulating backend's F32
         * parameters are still unrounded here: the master keeps them so) */
        o->master = pile_backend_alloc(o->be, PILE_DTYPE_F32, n);
        if (o->master.data && params.dtype == PILE_DTYPE_F32) pile_backend_copy(o->be, o->master, params, n);
        else if (o->master.data) pile_backend_convert(o->be, o->master, params, n);
    }
    o->grads = pile_backend_alloc(o->be, PILE_DTYPE_F32, n);
    o->m = pile_backend_alloc(o->be, PILE_DTYPE_F32, n);
    o->v = pile_backend_alloc(o->be, PILE_DTYPE_F32, n);
    if (!o->master.data || !o->grads.data || !o->m.data || !o->v.data) {
        pile_optim_free(o);
        return pile_err_set(err, PILE_ENOMEM,
                            "cannot allocate the optimizer's gradients, moments and master weights (%zu bytes each)",
                            n * sizeof(float));
    }
    int rc = pile_optim_update_model(o, err); /* the compute copy, rounded as it will be after each step */
    if (rc < 0) {
        pile_optim_free(o);
        return rc;
    }
    *out = o;
    return 0;
}

void pile_optim_free(pile_optim *o)
{
    if (!o) return;
    pile_loss_scaler_free(o->scaler);
    pile_backend_free(&o->v);
    pile_backend_free(&o->m);
    pile_backend_free(&o->grads);
    if (!o->master_is_compute) pile_backend_free(&o->master);
    free(o);
}

pile_tensor pile_optim_master(pile_optim *o) { return o->master; }
pile_tensor pile_optim_grads(pile_optim *o) { return o->grads; }
pile_tensor pile_optim_m(pile_optim *o) { return o->m; }
pile_tensor pile_optim_v(pile_optim *o) { return o->v; }
int pile_optim_master_is_compute(const pile_optim *o) { return o->master_is_compute; }
int64_t pile_optim_steps(const pile_optim *o) { return o->steps; }
void pile_optim_set_steps(pile_optim *o, int64_t steps) { o->steps = steps; }

void pile_optim_zero_grad(pile_optim *o) { pile_backend_zero(o->be, o->grads, o->grads.n); }

double pile_optim_grad_norm(pile_optim *o)
{
    /* padded wte rows hold zero gradients, so the whole buffer serves */
    return sqrt(pile_backend_sumsq(o->be, o->grads, o->grads.n));
}

int pile_optim_update_model(pile_optim *o, pile_err *err)
{
    if (!o->master_is_compute) pile_backend_convert(o->be, pile_model_params(o->model), o->master, o->master.n);
    return pile_backend_sync(o->be, err);
}

int pile_optim_step(pile_optim *o, double grad_norm, float max_norm, float lr, pile_err *err)
{
    pile_model *model = o->model;
    PILE_RETURN_IF(!isfinite(grad_norm), err, PILE_EINVAL, "cannot take an optimizer step: gradient norm %g",
                   grad_norm);
    if (max_norm > 0.0f) {
        /* torch computes the coefficient in the gradients' dtype (fp32) */
        float coef = max_norm / ((float)grad_norm + 1e-6f);
        if (coef < 1.0f) pile_backend_scale(o->be, o->grads, o->grads.n, coef);
    }
    int64_t t = o->steps + 1;
    for (size_t i = 0; i < pile_model_tensor_count(model); i++) {
        const pile_tensor_info *ti = pile_model_tensor(model, i);
        float wd = ti->decay || o->cfg.decay_all ? o->cfg.weight_decay : 0.0f;
        /* saved_numel: wte's padded rows come last and stay exactly zero */
        const size_t at = ti->offset, n = ti->saved_numel;
        pile_backend_adamw(o->be, pile_tensor_slice(o->master, at, n), pile_tensor_slice(o->grads, at, n),
                           pile_tensor_slice(o->m, at, n), pile_tensor_slice(o->v, at, n), n, lr, o->cfg.beta1,
                           o->cfg.beta2, o->cfg.eps, wd, t);
    }
    PILE_FORWARD_IF_ERR(pile_optim_update_model(o, err));
    o->steps = t;
    return 0;
}

int pile_optim_enable_loss_scaling(pile_optim *o, const pile_loss_scaler_config *c, pile_err *err)
{
    PILE_RETURN_IF(o->scaler, err, PILE_EINVAL, "the optimizer already has a loss scaler");
    return pile_loss_scaler_create(&o->scaler, c, err);
}

pile_loss_scaler *pile_optim_loss_scaler(pile_optim *o) { return o->scaler; }
double pile_optim_loss_scale(const pile_optim *o) { return o->scaler ? pile_loss_scaler_scale(o->scaler) : 1.0; }

int pile_optim_step_scaled(pile_optim *o, double grad_norm, int overflow, float max_norm, float lr,
                           double *unscaled_norm, pile_loss_scaler_step *out, pile_err *err)
{
    pile_loss_scaler_step ls = {0, 1.0, 1.0, 0};
    double norm = grad_norm;
    if (o->scaler) {
        /* DeepSpeed's order: the overflow check on the scaled gradients
         * decides the scale first; only a clean step is unscaled */
        PILE_FORWARD_IF_ERR(pile_loss_scaler_update(o->scaler, overflow || !isfinite(grad_norm), &ls, err));
        if (out) *out = ls;
        if (ls.skip) {
            if (unscaled_norm) *unscaled_norm = grad_norm;
            return 1;
        }
        /* powers of two (and any scale that converts to fp32 exactly):
         * dividing by the scale is exact where nothing underflows */
        if (ls.scale != 1.0) {
            pile_backend_scale(o->be, o->grads, o->grads.n, (float)(1.0 / ls.scale));
            norm = grad_norm / ls.scale;
        }
    } else if (out) {
        *out = ls;
    }
    if (unscaled_norm) *unscaled_norm = norm;
    PILE_FORWARD_IF_ERR(pile_optim_step(o, norm, max_norm, lr, err));
    return 0;
}

double pile_lr_at(int64_t step, int64_t total_steps, int64_t warmup_steps, double lr, double min_lr)
{
    /* transformers' lambda times the base lr, with min_lr_rate = min_lr / lr */
    if (lr == 0.0) return 0.0;
    if (step < warmup_steps) return lr * ((double)step / (double)(warmup_steps > 1 ? warmup_steps : 1));
    int64_t span = total_steps - warmup_steps;
    double progress = (double)(step - warmup_steps) / (double)(span > 1 ? span : 1);
    double rate = min_lr / lr;
    double factor = 0.5 * (1.0 + cos(M_PI * 0.5 * 2.0 * progress));
    factor = factor * (1.0 - rate) + rate;
    return lr * (factor > 0.0 ? factor : 0.0);
}

int64_t pile_warmup_steps(double warmup_ratio, int64_t total_steps)
{
    if (!(warmup_ratio > 0.0) || total_steps <= 0) return 0;
    return (int64_t)ceil((double)total_steps * warmup_ratio);
}
