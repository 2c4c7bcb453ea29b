/* AdamW, global-norm clipping and the cosine-with-warmup schedule over a
 * pile_model's flat buffers, through the backend only. The arithmetic
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
    float *m, *v;
    int64_t steps;
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
    size_t bytes = pile_model_flat_size(model) * sizeof(float);
    o->m = pile_backend_alloc(o->be, bytes);
    o->v = o->m ? pile_backend_alloc(o->be, bytes) : NULL;
    if (!o->v) {
        pile_optim_free(o);
        return pile_err_set(err, PILE_ENOMEM, "cannot allocate the AdamW moments (2 x %zu bytes)", bytes);
    }
    *out = o;
    return 0;
}

void pile_optim_free(pile_optim *o)
{
    if (!o) return;
    pile_backend_free(o->be, o->v);
    pile_backend_free(o->be, o->m);
    free(o);
}

float *pile_optim_m(pile_optim *o) { return o->m; }
float *pile_optim_v(pile_optim *o) { return o->v; }
int64_t pile_optim_steps(const pile_optim *o) { return o->steps; }
void pile_optim_set_steps(pile_optim *o, int64_t steps) { o->steps = steps; }

double pile_optim_grad_norm(pile_optim *o)
{
    /* padded wte rows hold zero gradients, so the whole buffer serves */
    double ss = pile_backend_sumsq(o->be, pile_model_grads(o->model), pile_model_flat_size(o->model));
    return sqrt(ss);
}

void pile_optim_step(pile_optim *o, double grad_norm, float max_norm, float lr)
{
    pile_model *model = o->model;
    float *p = pile_model_params(model), *g = pile_model_grads(model);
    if (max_norm > 0.0f) {
        /* torch computes the coefficient in the gradients' dtype (fp32) */
        float coef = max_norm / ((float)grad_norm + 1e-6f);
        if (coef < 1.0f) pile_backend_scale(o->be, g, pile_model_flat_size(model), coef);
    }
    int64_t t = o->steps + 1;
    for (size_t i = 0; i < pile_model_tensor_count(model); i++) {
        const pile_tensor_info *ti = pile_model_tensor(model, i);
        float wd = ti->decay || o->cfg.decay_all ? o->cfg.weight_decay : 0.0f;
        /* saved_numel: wte's padded rows come last and stay exactly zero */
        pile_backend_adamw(o->be, p + ti->offset, g + ti->offset, o->m + ti->offset, o->v + ti->offset,
                           ti->saved_numel, lr, o->cfg.beta1, o->cfg.beta2, o->cfg.eps, wd, t);
    }
    o->steps = t;
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
