/* fp16 loss scaling (loss_scaler.h). The state is DeepSpeed's: the scale,
 * the number of updates so far, the update of the last overflow (-1
 * before the first) and the overflows still tolerated; growth is decided
 * from the distance to the last overflow, so the counters are all a
 * resumed run needs. */
#include "loss_scaler.h"

#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* DeepSpeed's factor, fixed there as here. */
#define FACTOR 2.0
#define MAX_POWER 127 /* 2^127: the largest power of two that is a finite fp32 */

struct pile_loss_scaler {
    pile_loss_scaler_config cfg;
    double scale;
    int64_t iteration;     /* updates so far, skipped steps included */
    int64_t last_overflow; /* the iteration of the last overflow; -1: none yet */
    int hysteresis_left;
    int64_t skipped;
};

void pile_loss_scaler_config_defaults(pile_loss_scaler_config *c)
{
    memset(c, 0, sizeof *c);
    c->initial_scale_power = 16;
    c->loss_scale_window = 1000;
    c->hysteresis = 2;
    c->min_loss_scale = 1;
}

int pile_loss_scaler_config_check(const pile_loss_scaler_config *c, pile_err *err)
{
    PILE_RETURN_IF(!(c->loss_scale >= 0 && c->loss_scale <= FLT_MAX), err, PILE_EINVAL,
                   "loss_scale must be 0 (dynamic) or a positive finite fp32 number, not %g", c->loss_scale);
    /* the rest only matter to a dynamic scale (DeepSpeed checks them then too) */
    if (c->loss_scale > 0) return 0;
    PILE_RETURN_IF(c->initial_scale_power < 0 || c->initial_scale_power > MAX_POWER, err, PILE_EINVAL,
                   "initial_scale_power must be 0 to %d, not %d", MAX_POWER, c->initial_scale_power);
    PILE_RETURN_IF(c->loss_scale_window < 1, err, PILE_EINVAL, "loss_scale_window must be a positive integer, not %d",
                   c->loss_scale_window);
    PILE_RETURN_IF(c->hysteresis < 1, err, PILE_EINVAL, "hysteresis must be a positive integer, not %d",
                   c->hysteresis);
    PILE_RETURN_IF(!(c->min_loss_scale > 0 && c->min_loss_scale <= FLT_MAX), err, PILE_EINVAL,
                   "min_loss_scale must be a positive finite fp32 number, not %g", c->min_loss_scale);
    return 0;
}

int pile_loss_scaler_create(pile_loss_scaler **out, const pile_loss_scaler_config *c, pile_err *err)
{
    *out = NULL;
    PILE_FORWARD_IF_ERR(pile_loss_scaler_config_check(c, err));
    pile_loss_scaler *s = calloc(1, sizeof *s);
    if (!s) return pile_err_set(err, PILE_ENOMEM, "out of memory for the loss scaler");
    s->cfg = *c;
    s->cfg.consecutive_hysteresis = c->consecutive_hysteresis != 0;
    s->scale = c->loss_scale > 0 ? c->loss_scale : ldexp(1.0, c->initial_scale_power);
    s->last_overflow = -1;
    /* a static scale has no tolerance to count; 1 keeps the state valid */
    s->hysteresis_left = c->loss_scale > 0 ? 1 : c->hysteresis;
    *out = s;
    return 0;
}

void pile_loss_scaler_free(pile_loss_scaler *s) { free(s); }

double pile_loss_scaler_scale(const pile_loss_scaler *s) { return s->scale; }

int64_t pile_loss_scaler_skipped(const pile_loss_scaler *s) { return s->skipped; }

static int dynamic(const pile_loss_scaler *s) { return s->cfg.loss_scale == 0; }

int pile_loss_scaler_update(pile_loss_scaler *s, int overflow, pile_loss_scaler_step *out, pile_err *err)
{
    const pile_loss_scaler_config *c = &s->cfg;
    double used = s->scale;
    if (dynamic(s) && overflow) {
        /* hysteresis 1 means no tolerance at all, whatever is left */
        if (c->hysteresis == 1 || s->hysteresis_left == 1) {
            PILE_RETURN_IF(s->scale == c->min_loss_scale, err, PILE_ELIMIT,
                           "gradients overflow at the minimum loss scale %g (update %" PRId64
                           "): lower min_loss_scale, or train in bf16",
                           s->scale, s->iteration + 1);
            s->scale = fmax(s->scale / FACTOR, c->min_loss_scale);
        } else {
            s->hysteresis_left--;
        }
        s->last_overflow = s->iteration;
    } else if (dynamic(s)) {
        if (c->consecutive_hysteresis) s->hysteresis_left = c->hysteresis;
        /* clean updates before this one since the last overflow */
        int64_t stable = s->iteration - s->last_overflow - 1;
        if (stable > 0 && stable % c->loss_scale_window == 0) {
            s->hysteresis_left = c->hysteresis;
            if (s->scale * FACTOR <= FLT_MAX) s->scale *= FACTOR;
        }
    }
    s->iteration++;
    if (overflow) s->skipped++;
    if (out) {
        out->skip = overflow != 0;
        out->scale = used;
        out->next_scale = s->scale;
        out->hysteresis_left = s->hysteresis_left;
    }
    return 0;
}

int pile_loss_scaler_state_to_json(const pile_loss_scaler *s, pile_buf *out)
{
    pile_buf_printf(out,
                    "{\"dynamic\": %s, \"scale\": %.17g, \"iteration\": %" PRId64 ", \"last_overflow\": %" PRId64
                    ", \"hysteresis_left\": %d, \"skipped_steps\": %" PRId64 "}",
                    dynamic(s) ? "true" : "false", s->scale, s->iteration, s->last_overflow, s->hysteresis_left,
                    s->skipped);
    return out->failed ? PILE_ENOMEM : 0;
}

/* An integer member in [lo, hi], or PILE_EFORMAT naming it. */
static int get_int(const pile_json *obj, const char *key, int64_t lo, int64_t hi, int64_t *v, const char *where,
                   pile_err *err)
{
    const pile_json *j = pile_json_get(obj, key);
    if (!j || pile_json_type_of(j) != PILE_JSON_NUMBER || !pile_json_int(j, v) || *v < lo || *v > hi)
        return pile_err_set(err, PILE_EFORMAT, "bad loss scaler state in '%s': '%s' missing or not an integer in [%" PRId64
                            ", %" PRId64 "]", where, key, lo, hi);
    return 0;
}

int pile_loss_scaler_state_from_json(pile_loss_scaler *s, const pile_json *state, const char *where, pile_err *err)
{
    PILE_RETURN_IF(!state || pile_json_type_of(state) != PILE_JSON_OBJECT, err, PILE_EFORMAT,
                   "bad loss scaler state in '%s': not a JSON object", where);
    const pile_json *dyn = pile_json_get(state, "dynamic"), *sc = pile_json_get(state, "scale");
    PILE_RETURN_IF(!dyn || pile_json_type_of(dyn) != PILE_JSON_BOOL, err, PILE_EFORMAT,
                   "bad loss scaler state in '%s': 'dynamic' missing or not true or false", where);
    double scale = sc && pile_json_type_of(sc) == PILE_JSON_NUMBER ? pile_json_num(sc) : NAN;
    PILE_RETURN_IF(!(scale > 0 && scale <= FLT_MAX), err, PILE_EFORMAT,
                   "bad loss scaler state in '%s': 'scale' missing or not a positive finite fp32 number", where);
    int64_t it, last, left, skipped;
    PILE_FORWARD_IF_ERR(get_int(state, "iteration", 0, INT64_MAX, &it, where, err));
    PILE_FORWARD_IF_ERR(get_int(state, "last_overflow", -1, it - 1, &last, where, err));
    PILE_FORWARD_IF_ERR(get_int(state, "hysteresis_left", 1, INT_MAX, &left, where, err));
    PILE_FORWARD_IF_ERR(get_int(state, "skipped_steps", 0, it, &skipped, where, err));
    PILE_RETURN_IF(pile_json_bool(dyn) != dynamic(s), err, PILE_EMISMATCH,
                   "the loss scaler state in '%s' is %s but the settings ask for %s loss scaling", where,
                   pile_json_bool(dyn) ? "dynamic" : "static", dynamic(s) ? "dynamic" : "static");
    PILE_RETURN_IF(dynamic(s) && left > s->cfg.hysteresis, err, PILE_EMISMATCH,
                   "the loss scaler state in '%s' tolerates %" PRId64 " more overflows but hysteresis is %d", where,
                   left, s->cfg.hysteresis);
    if (dynamic(s)) s->scale = scale;
    s->iteration = it;
    s->last_overflow = last;
    s->hysteresis_left = (int)left;
    s->skipped = skipped;
    return 0;
}
