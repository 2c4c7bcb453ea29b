/* The communicator watchdog's state machine (comm_watchdog.h): slots of
 * calls with deadlines, one failure that aborts once and then answers
 * every call. No CUDA here: comm_nccl.c supplies the polls. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "comm_watchdog.h"

enum { SLOT_FREE = 0, SLOT_ENQUEUING, SLOT_IN_FLIGHT };

typedef struct slot {
    int state;
    uint64_t seq; /* begin order: the oldest call in flight is the one waited for */
    double t0;
    char what[160];
} slot;

struct pile__watchdog {
    pile__watchdog_io io;
    int rank, world;
    double timeout_s;
    uv_mutex_t mu;
    slot *slots;
    int n_slots;
    uint64_t seq;
    int failed, aborted;
    char msg[PILE_ERR_MSG_MAX - 64];
    /* the thread */
    uv_thread_t thread;
    int started, stop;
    double period_s;
};

int pile__watchdog_create(pile__watchdog **out, const pile__watchdog_io *io, int rank, int world, double timeout_s,
                          int slots, pile_err *err)
{
    *out = NULL;
    PILE_RETURN_IF(slots < 1 || !(timeout_s > 0), err, PILE_EINVAL,
                   "invalid watchdog: %d slots, timeout %g s (need >= 1 and > 0)", slots, timeout_s);
    pile__watchdog *w = calloc(1, sizeof *w);
    slot *s = calloc((size_t)slots, sizeof *s);
    if (!w || !s || uv_mutex_init(&w->mu) != 0) {
        free(w);
        free(s);
        return pile_err_set(err, PILE_ENOMEM, "cannot allocate the communicator's watchdog");
    }
    w->io = *io;
    w->rank = rank;
    w->world = world;
    w->timeout_s = timeout_s;
    w->slots = s;
    w->n_slots = slots;
    *out = w;
    return 0;
}

static void thread_main(void *arg)
{
    pile__watchdog *w = arg;
    for (;;) {
        uv_mutex_lock(&w->mu);
        const int stop = w->stop;
        uv_mutex_unlock(&w->mu);
        if (stop) return;
        (void)pile__watchdog_tick(w, NULL);
        w->io.sleep(w->io.ctx, w->period_s);
    }
}

int pile__watchdog_start(pile__watchdog *w, double period_s, pile_err *err)
{
    PILE_RETURN_IF(w->started, err, PILE_EINVAL, "the communicator's watchdog is running already");
    w->period_s = period_s > 0 ? period_s : 0.01;
    int rc = uv_thread_create(&w->thread, thread_main, w);
    PILE_RETURN_IF(rc != 0, err, PILE_EIO, "cannot start the communicator's watchdog thread: %s", uv_strerror(rc));
    w->started = 1;
    return 0;
}

void pile__watchdog_free(pile__watchdog *w)
{
    if (!w) return;
    if (w->started) {
        uv_mutex_lock(&w->mu);
        w->stop = 1;
        uv_mutex_unlock(&w->mu);
        uv_thread_join(&w->thread);
    }
    uv_mutex_destroy(&w->mu);
    free(w->slots);
    free(w);
}

/* ------------------------------------------------ with the mutex held */

static int failure(pile__watchdog *w, pile_err *err)
{
    return pile_err_set(err, PILE_EIO, "%s", w->msg);
}

/* The one failure: the message, abort, every slot free. */
static int fail_locked(pile__watchdog *w, const char *what, const char *why, pile_err *err)
{
    if (!w->failed) {
        snprintf(w->msg, sizeof w->msg, "cannot %s (rank %d of %d): %s; the communicator was aborted", what, w->rank,
                 w->world, why);
        w->failed = 1;
    }
    if (!w->aborted) {
        w->aborted = 1;
        w->io.abort(w->io.ctx);
    }
    for (int i = 0; i < w->n_slots; i++) w->slots[i].state = SLOT_FREE;
    return failure(w, err);
}

/* The call a communicator-wide failure is charged to: the oldest one
 * pending (the one every later call waits behind), else "communicate". */
static const char *oldest_what(const pile__watchdog *w)
{
    const slot *o = NULL;
    for (int i = 0; i < w->n_slots; i++)
        if (w->slots[i].state != SLOT_FREE && (!o || w->slots[i].seq < o->seq)) o = &w->slots[i];
    return o ? o->what : "communicate";
}

static int tick_locked(pile__watchdog *w, pile_err *err)
{
    if (w->failed) return failure(w, err);
    char why[512] = "";
    if (w->io.state(w->io.ctx, why, sizeof why) < 0) return fail_locked(w, oldest_what(w), why, err);
    const double now = w->io.now(w->io.ctx);
    for (int i = 0; i < w->n_slots; i++) {
        slot *s = &w->slots[i];
        if (s->state == SLOT_FREE) continue;
        if (s->state == SLOT_IN_FLIGHT) {
            const int d = w->io.done(w->io.ctx, i, why, sizeof why);
            if (d < 0) return fail_locked(w, s->what, why, err);
            if (d > 0) {
                s->state = SLOT_FREE;
                continue;
            }
        }
        if (now - s->t0 > w->timeout_s) {
            snprintf(why, sizeof why,
                     "not finished after %.0f s (--dist_timeout): a peer died, hung, or did not make the same call",
                     w->timeout_s);
            return fail_locked(w, s->what, why, err);
        }
    }
    return 0;
}

/* ------------------------------------------------------------ calls */

int pile__watchdog_tick(pile__watchdog *w, pile_err *err)
{
    uv_mutex_lock(&w->mu);
    int rc = tick_locked(w, err);
    uv_mutex_unlock(&w->mu);
    return rc;
}

int pile__watchdog_begin(pile__watchdog *w, const char *what, int *slot_out, pile_err *err)
{
    *slot_out = -1;
    for (;;) {
        uv_mutex_lock(&w->mu);
        if (w->failed) {
            int rc = pile_err_set(err, PILE_EIO, "cannot %s: the communicator failed before: %s", what, w->msg);
            uv_mutex_unlock(&w->mu);
            return rc;
        }
        int free_slot = -1;
        for (int i = 0; i < w->n_slots && free_slot < 0; i++)
            if (w->slots[i].state == SLOT_FREE) free_slot = i;
        if (free_slot >= 0) {
            slot *s = &w->slots[free_slot];
            s->state = SLOT_ENQUEUING;
            s->seq = w->seq++;
            s->t0 = w->io.now(w->io.ctx);
            snprintf(s->what, sizeof s->what, "%s", what);
            *slot_out = free_slot;
            uv_mutex_unlock(&w->mu);
            return 0;
        }
        /* every slot holds a call: wait for the oldest to finish */
        int rc = tick_locked(w, err);
        uv_mutex_unlock(&w->mu);
        if (rc < 0) return rc;
        w->io.sleep(w->io.ctx, 1e-3);
    }
}

int pile__watchdog_wait_enqueued(pile__watchdog *w, int i, pile_err *err)
{
    for (;;) {
        uv_mutex_lock(&w->mu);
        if (w->failed) {
            int rc = failure(w, err);
            uv_mutex_unlock(&w->mu);
            return rc;
        }
        slot *s = &w->slots[i];
        char why[512] = "";
        const int st = w->io.state(w->io.ctx, why, sizeof why);
        int rc = 0;
        if (st < 0) rc = fail_locked(w, s->what, why, err);
        else if (st == 1 && w->io.now(w->io.ctx) - s->t0 > w->timeout_s) {
            snprintf(why, sizeof why,
                     "still being enqueued after %.0f s (--dist_timeout): a peer died, hung, or did not make the same "
                     "call",
                     w->timeout_s);
            rc = fail_locked(w, s->what, why, err);
        }
        uv_mutex_unlock(&w->mu);
        if (rc < 0 || st == 0) return rc;
        w->io.sleep(w->io.ctx, 1e-4);
    }
}

int pile__watchdog_enqueue(pile__watchdog *w, int i, int (*enqueue)(void *arg, char *why, size_t cap), void *arg,
                           pile_err *err)
{
    uv_mutex_lock(&w->mu);
    if (w->failed) {
        int rc = failure(w, err);
        uv_mutex_unlock(&w->mu);
        return rc;
    }
    char why[512] = "";
    const int st = enqueue(arg, why, sizeof why);
    const int rc = st < 0 ? fail_locked(w, w->slots[i].what, why, err) : 0;
    uv_mutex_unlock(&w->mu);
    return st == 1 ? pile__watchdog_wait_enqueued(w, i, err) : rc;
}

void pile__watchdog_launched(pile__watchdog *w, int i)
{
    uv_mutex_lock(&w->mu);
    if (w->slots[i].state == SLOT_ENQUEUING) w->slots[i].state = SLOT_IN_FLIGHT;
    uv_mutex_unlock(&w->mu);
}

int pile__watchdog_wait(pile__watchdog *w, int i, pile_err *err)
{
    for (;;) {
        uv_mutex_lock(&w->mu);
        int rc = tick_locked(w, err);
        const int busy = w->slots[i].state != SLOT_FREE;
        uv_mutex_unlock(&w->mu);
        if (rc < 0 || !busy) return rc;
        w->io.sleep(w->io.ctx, 1e-4);
    }
}

void pile__watchdog_end(pile__watchdog *w, int i)
{
    uv_mutex_lock(&w->mu);
    w->slots[i].state = SLOT_FREE;
    uv_mutex_unlock(&w->mu);
}

int pile__watchdog_fail(pile__watchdog *w, int i, const char *why, pile_err *err)
{
    uv_mutex_lock(&w->mu);
    int rc = w->failed ? failure(w, err) : fail_locked(w, w->slots[i].what, why, err);
    uv_mutex_unlock(&w->mu);
    return rc;
}

int pile__watchdog_aborted(pile__watchdog *w)
{
    uv_mutex_lock(&w->mu);
    int a = w->aborted;
    uv_mutex_unlock(&w->mu);
    return a;
}
