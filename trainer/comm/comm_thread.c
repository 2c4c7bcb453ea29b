/* A pile_comm's communication thread (comm.h): a FIFO of jobs run one at
 * a time on a thread of its own, so that the host communicators' blocking
 * collectives overlap the caller's compute. One mutex guards the queue; a
 * job runs outside it. Tickets count submissions from 1, and `done`
 * counts the jobs finished (run, or passed over after a failure), so a
 * wait is `done >= ticket` whatever the jobs were. */
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "comm_internal.h"

typedef struct job {
    pile_comm_job_fn fn;
    void *ctx;
    size_t arg[3];
} job;

struct pile__comm_queue {
    pile_comm *comm;
    uv_thread_t thread;
    uv_mutex_t mu;
    uv_cond_t work; /* a job came, or stop */
    uv_cond_t idle; /* a job finished */
    job *ring;      /* cap slots, jobs [head, head + count) modulo cap */
    size_t cap, head, count;
    uint64_t submitted, done;
    int stop;
    int failed;     /* the first failure, kept in `error` */
    pile_err error;
};

static void run_jobs(void *arg)
{
    pile__comm_queue *q = arg;
    pile_err err;
    uv_mutex_lock(&q->mu);
    for (;;) {
        while (!q->count && !q->stop) uv_cond_wait(&q->work, &q->mu);
        if (!q->count) break; /* stopped, and nothing left */
        const job j = q->ring[q->head];
        q->head = (q->head + 1) % q->cap;
        q->count--;
        const int skip = q->failed;
        uv_mutex_unlock(&q->mu);
        int rc = skip ? 0 : j.fn(q->comm, j.ctx, j.arg, &err);
        uv_mutex_lock(&q->mu);
        if (rc < 0 && !q->failed) {
            q->failed = 1;
            q->error = err;
            q->error.code = rc;
        }
        q->done++;
        uv_cond_broadcast(&q->idle);
    }
    uv_mutex_unlock(&q->mu);
}

int pile__comm_queue_start(pile__comm_queue **out, pile_comm *c, pile_err *err)
{
    *out = NULL;
    pile__comm_queue *q = calloc(1, sizeof *q);
    if (!q) return pile_err_set(err, PILE_ENOMEM, "out of memory for the communication thread");
    q->comm = c;
    q->cap = 64;
    q->ring = malloc(q->cap * sizeof *q->ring);
    int made = 0;
    if (q->ring && uv_mutex_init(&q->mu) == 0) {
        made = 1;
        if (uv_cond_init(&q->work) == 0) {
            made = 2;
            if (uv_cond_init(&q->idle) == 0) {
                made = 3;
                if (uv_thread_create(&q->thread, run_jobs, q) == 0) {
                    *out = q;
                    return 0;
                }
            }
        }
    }
    if (made >= 3) uv_cond_destroy(&q->idle);
    if (made >= 2) uv_cond_destroy(&q->work);
    if (made >= 1) uv_mutex_destroy(&q->mu);
    const int nomem = !q->ring;
    free(q->ring);
    free(q);
    return nomem ? pile_err_set(err, PILE_ENOMEM, "out of memory for the communication thread")
                 : pile_err_set(err, PILE_EIO, "cannot start the communication thread of communicator '%s'",
                                pile_comm_name(c));
}

void pile__comm_queue_stop(pile__comm_queue *q, int drop)
{
    if (!q) return;
    uv_mutex_lock(&q->mu);
    q->stop = 1;
    if (drop && !q->failed) { /* the jobs left are passed over, as after a failure */
        q->failed = 1;
        pile_err_set(&q->error, PILE_EIO, "the communicator was abandoned");
        q->error.code = PILE_EIO;
    }
    uv_cond_signal(&q->work);
    uv_mutex_unlock(&q->mu);
    uv_thread_join(&q->thread); /* it runs what was queued first (or passes over it: drop) */
    uv_cond_destroy(&q->idle);
    uv_cond_destroy(&q->work);
    uv_mutex_destroy(&q->mu);
    free(q->ring);
    free(q);
}

int pile__comm_queue_on_thread(const pile__comm_queue *q)
{
    const uv_thread_t self = uv_thread_self();
    return uv_thread_equal(&self, &q->thread);
}

/* The queue's failure into *err (locked). */
static int failure(pile__comm_queue *q, pile_err *err)
{
    if (err) *err = q->error;
    return q->error.code;
}

int pile__comm_queue_submit(pile__comm_queue *q, pile_comm_job_fn fn, void *ctx, const size_t arg[3],
                            uint64_t *ticket, pile_err *err)
{
    uv_mutex_lock(&q->mu);
    int rc = 0;
    if (q->failed) {
        rc = failure(q, err);
    } else if (q->count == q->cap) {
        /* grow: the jobs in order from 0 */
        job *ring = malloc(2 * q->cap * sizeof *ring);
        if (!ring) {
            rc = pile_err_set(err, PILE_ENOMEM, "out of memory for the communication thread's queue");
        } else {
            for (size_t i = 0; i < q->count; i++) ring[i] = q->ring[(q->head + i) % q->cap];
            free(q->ring);
            q->ring = ring;
            q->head = 0;
            q->cap *= 2;
        }
    }
    if (rc == 0) {
        job *j = &q->ring[(q->head + q->count) % q->cap];
        j->fn = fn;
        j->ctx = ctx;
        memcpy(j->arg, arg, sizeof j->arg);
        q->count++;
        q->submitted++;
        if (ticket) *ticket = q->submitted;
        uv_cond_signal(&q->work);
    }
    uv_mutex_unlock(&q->mu);
    return rc;
}

int pile__comm_queue_wait(pile__comm_queue *q, uint64_t ticket, pile_err *err)
{
    uv_mutex_lock(&q->mu);
    if (ticket > q->submitted) ticket = q->submitted;
    while (q->done < ticket && !q->failed) uv_cond_wait(&q->idle, &q->mu);
    const int rc = q->failed ? failure(q, err) : 0;
    uv_mutex_unlock(&q->mu);
    return rc;
}

uint64_t pile__comm_queue_submitted(pile__comm_queue *q)
{
    uv_mutex_lock(&q->mu);
    const uint64_t n = q->submitted;
    uv_mutex_unlock(&q->mu);
    return n;
}
