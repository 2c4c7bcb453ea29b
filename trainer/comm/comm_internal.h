/* What only trainer/comm/ (and its test) sees: the table of operations an
 * implementation fills, after ggml's ggml_backend_i. comm.c checks every
 * call's arguments before it reaches a table, so an implementation gets
 * only calls that are valid for its rank and world size (count > 0,
 * buffers non-NULL and not overlapping but in place, the dtype one its
 * operation takes, counts that divide, a root in range). */
#ifndef PILE_COMM_INTERNAL_H
#define PILE_COMM_INTERNAL_H

#include "comm.h"

/* What an implementation opens with: the launcher's environment (never
 * NULL here) and the resolved timeout (> 0). */
typedef struct pile__comm_setup {
    const pile_comm_env *env;
    double timeout_s;
} pile__comm_setup;

typedef struct pile__comm_ops {
    const char *name;
    /* Opens the implementation's state (*impl, may stay NULL) and says
     * where this process stands. */
    int (*open)(void **impl, const pile__comm_setup *setup, int *rank, int *world_size, pile_err *err);
    void (*close)(void *impl); /* accepts NULL */
    int (*allreduce)(void *impl, void *buf, size_t count, pile_comm_dtype dt, pile_comm_op op, void *stream,
                     pile_err *err);
    int (*reduce_scatter)(void *impl, void *out, const void *in, size_t count, pile_comm_dtype dt, pile_comm_op op,
                          void *stream, pile_err *err);
    int (*all_gather)(void *impl, void *out, const void *in, size_t count, pile_comm_dtype dt, void *stream,
                      pile_err *err);
    int (*broadcast)(void *impl, void *buf, size_t count, pile_comm_dtype dt, int root, void *stream, pile_err *err);
    int (*allreduce_f64)(void *impl, double *v, size_t n, pile_comm_op op, pile_err *err);
    int (*allreduce_i64)(void *impl, int64_t *v, size_t n, pile_comm_op op, pile_err *err);
    int (*broadcast_bytes)(void *impl, void *buf, size_t bytes, int root, pile_err *err);
    int (*barrier)(void *impl, pile_err *err);
    int device_memory; /* 1: tensor buffers in device memory ("nccl", "devsim"); 0: host memory */
    /* pile_comm_abandon's close: nothing that waits for the other ranks
     * (NULL: close has nothing such; last, so that
     * positional tables may leave it out) */
    void (*abandon)(void *impl);
} pile__comm_ops;

extern const pile__comm_ops pile__comm_single_ops;
#ifdef PILE_HAVE_MPI
extern const pile__comm_ops pile__comm_mpi_ops;
#endif
extern const pile__comm_ops pile__comm_tcp_ops;
#ifdef PILE_HAVE_NCCL
extern const pile__comm_ops pile__comm_nccl_ops;
#endif
extern const pile__comm_ops pile__comm_devsim_ops;

/* One call, its arguments checked (comm.c), for a caller that makes it
 * later or elsewhere: the comm's thread, the "devsim" communicator's
 * stream. pile__comm_make makes it on c (through c's thread when it has
 * one), as the public call would after its checks. */
typedef enum pile__comm_call_kind {
    PILE__CALL_ALLREDUCE,
    PILE__CALL_REDUCE_SCATTER,
    PILE__CALL_ALL_GATHER,
    PILE__CALL_BROADCAST,
    PILE__CALL_ALLREDUCE_F64,
    PILE__CALL_ALLREDUCE_I64,
    PILE__CALL_BROADCAST_BYTES,
    PILE__CALL_BARRIER,
} pile__comm_call_kind;

typedef struct pile__comm_call {
    pile__comm_call_kind kind;
    void *out;
    const void *in;
    size_t count;
    pile_comm_dtype dt;
    pile_comm_op op;
    int root;
    void *stream;
} pile__comm_call;

int pile__comm_make(pile_comm *c, const pile__comm_call *k, pile_err *err);

/* The first host of a Slurm node list ("gpu[01-04,07],cpu1" -> "gpu01")
 * into out[0..cap). PILE_EINVAL on a list it cannot read. */
int pile__comm_first_host(const char *list, char *out, size_t cap, pile_err *err);

/* A communicator over `ops`: what pile_comm_open does for a name of its
 * registry. Tests hand in a table of their own to drive the argument
 * checks at world sizes above 1. */
int pile__comm_open_ops(pile_comm **out, const pile__comm_ops *ops, const pile_comm_options *opt, pile_err *err);
/* A communicator over `ops` whose state is `impl`, made already (taken
 * over: ops->close closes it, on failure too), at rank of world_size:
 * tests put "devsim" over a host communicator of their own. */
int pile__comm_open_over(pile_comm **out, const pile__comm_ops *ops, void *impl, int rank, int world_size,
                         pile_err *err);

/* The communication thread's queue (comm_thread.c; comm.h says what it
 * does): started and stopped by comm.c, which routes the calls of other
 * threads through it. */
typedef struct pile__comm_queue pile__comm_queue;
int pile__comm_queue_start(pile__comm_queue **q, pile_comm *c, pile_err *err);
/* Runs what is queued (drop: only the job running now, the rest passed
 * over as after a failure), then joins; accepts NULL. */
void pile__comm_queue_stop(pile__comm_queue *q, int drop);
int pile__comm_queue_on_thread(const pile__comm_queue *q);
int pile__comm_queue_submit(pile__comm_queue *q, pile_comm_job_fn fn, void *ctx, const size_t arg[3],
                            uint64_t *ticket, pile_err *err);
int pile__comm_queue_wait(pile__comm_queue *q, uint64_t ticket, pile_err *err);
uint64_t pile__comm_queue_submitted(pile__comm_queue *q);

#endif
