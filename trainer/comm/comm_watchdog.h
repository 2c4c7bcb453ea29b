/* The watchdog of a communicator whose calls finish later than they
 * return (NCCL's, enqueued on a stream): it turns a peer that died or
 * hung into a failure of every rank, with a message naming the operation
 * and the rank, instead of a hang in the next stream synchronisation.
 *
 * Only the logic lives here, over a table of functions (what to poll,
 * how to abort, the clock), so that a CPU test drives it with fakes
 * (tests/test_comm_watchdog.c) and comm_nccl.c gives it NCCL and CUDA:
 *
 *   slot:  FREE --begin--> ENQUEUING --launched--> IN_FLIGHT --done--> FREE
 *                              |                       |
 *                              +--- state < 0, done < 0, deadline --> FAILED
 *
 * A call takes a slot at begin (waiting for the oldest call in flight
 * when none is free), its deadline begin + timeout. tick() (a thread of
 * the watchdog's own, every period, and the waiting caller) looks at the
 * communicator's state and at each slot: a failure, or a call past its
 * deadline, calls abort once (ncclCommAbort ends the kernels that wait
 * for a dead peer, so a stream synchronisation returns), and from then on
 * every begin fails with the message: the rank's next call of the
 * communicator returns an error, and the trainer exits non-zero.
 *
 * Thread-safe: the caller's thread and the watchdog's thread share it
 * under a mutex; the io functions are called with it held. */
#ifndef PILE_COMM_WATCHDOG_H
#define PILE_COMM_WATCHDOG_H

#include <stddef.h>

#include "pile_error.h"

typedef struct pile__watchdog_io {
    void *ctx;
    /* The communicator's own state: 0 fine, 1 a call still being enqueued
     * (NCCL's ncclInProgress), < 0 failed with why[0..cap) filled. */
    int (*state)(void *ctx, char *why, size_t cap);
    /* Whether the call launched in `slot` has finished: 1 yes, 0 not yet,
     * < 0 failed with why[0..cap) filled. */
    int (*done)(void *ctx, int slot, char *why, size_t cap);
    /* Ends the communicator's calls now (ncclCommAbort); called once. */
    void (*abort)(void *ctx);
    double (*now)(void *ctx); /* seconds, monotonic */
    void (*sleep)(void *ctx, double seconds);
} pile__watchdog_io;

typedef struct pile__watchdog pile__watchdog;

/* A watchdog of `slots` calls in flight at most (>= 1), each failing
 * after timeout_s (> 0). rank and world name the rank in messages. *io
 * is copied. */
int pile__watchdog_create(pile__watchdog **out, const pile__watchdog_io *io, int rank, int world, double timeout_s,
                          int slots, pile_err *err);
/* Stops the thread, if started. Accepts NULL. */
void pile__watchdog_free(pile__watchdog *w);

/* A thread that ticks every period_s until free. */
int pile__watchdog_start(pile__watchdog *w, double period_s, pile_err *err);

/* One look at the state and at every slot: 0, or the failure's PILE_EIO
 * (err filled) once the communicator has failed (now or before). */
int pile__watchdog_tick(pile__watchdog *w, pile_err *err);

/* Before the call `what` ("allreduce 4096 fp32 elements"; copied):
 * PILE_EIO when the communicator failed before, else *slot, a slot in
 * state ENQUEUING. */
int pile__watchdog_begin(pile__watchdog *w, const char *what, int *slot, pile_err *err);

/* Runs enqueue(arg, why, cap), a call of the communicator (an NCCL
 * collective, its creation), with the lock held unless the communicator
 * failed before: abort frees NCCL's communicator, and must never fall
 * between that check and the call. enqueue answers 0 (enqueued), 1 (in
 * progress: then waited for as by wait_enqueued) or < 0 (failed, why
 * filled: the communicator is aborted). 0, or PILE_EIO with the
 * message. */
int pile__watchdog_enqueue(pile__watchdog *w, int slot, int (*enqueue)(void *arg, char *why, size_t cap), void *arg,
                           pile_err *err);

/* The caller, after an enqueue that said "in progress": waits until the
 * state is no longer 1. 0, or PILE_EIO on a failure or the deadline
 * (then the communicator is aborted and the slot free). */
int pile__watchdog_wait_enqueued(pile__watchdog *w, int slot, pile_err *err);

/* The call in slot is on its stream: done(slot) is polled from now on. */
void pile__watchdog_launched(pile__watchdog *w, int slot);

/* The caller waits for the call in slot to finish (done), ticking:
 * 0, or PILE_EIO on a failure or the deadline. */
int pile__watchdog_wait(pile__watchdog *w, int slot, pile_err *err);

/* The slot is free again without a launch (a call with nothing on a
 * stream, such as the communicator's own creation). */
void pile__watchdog_end(pile__watchdog *w, int slot);

/* The call in slot failed as it was made (an enqueue that returned an
 * error): the communicator is aborted, PILE_EIO with the message. */
int pile__watchdog_fail(pile__watchdog *w, int slot, const char *why, pile_err *err);

/* Whether abort was called (tests; a closing communicator that must not
 * finalize an aborted NCCL communicator). */
int pile__watchdog_aborted(pile__watchdog *w);

#endif
