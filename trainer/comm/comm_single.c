/* The "single" communicator: one rank, world size 1. A reduction over one
 * rank is its own values, so allreduce leaves them as they are; a rank's
 * share of a reduce-scatter and an all-gather is the whole buffer, a copy
 * unless in place; a broadcast from rank 0 to itself changes nothing.
 * comm.c has checked every argument before these run. */
#include <string.h>

#include "comm_internal.h"

static int single_open(void **impl, const pile__comm_setup *setup, int *rank, int *world_size, pile_err *err)
{
    (void)setup, (void)err;
    *impl = NULL;
    *rank = 0;
    *world_size = 1;
    return 0;
}

static void single_close(void *impl)
{
    (void)impl;
}

static int single_allreduce(void *impl, void *buf, size_t count, pile_comm_dtype dt, pile_comm_op op, void *stream,
                            pile_err *err)
{
    (void)impl, (void)buf, (void)count, (void)dt, (void)op, (void)stream, (void)err;
    return 0;
}

/* out and in are the same or do not overlap (checked), so memcpy serves. */
static void copy_unless_in_place(void *out, const void *in, size_t count, pile_comm_dtype dt)
{
    if (out != in) memcpy(out, in, count * pile_comm_dtype_size(dt));
}

static int single_reduce_scatter(void *impl, void *out, const void *in, size_t count, pile_comm_dtype dt,
                                 pile_comm_op op, void *stream, pile_err *err)
{
    (void)impl, (void)op, (void)stream, (void)err;
    copy_unless_in_place(out, in, count, dt);
    return 0;
}

static int single_all_gather(void *impl, void *out, const void *in, size_t count, pile_comm_dtype dt, void *stream,
                             pile_err *err)
{
    (void)impl, (void)stream, (void)err;
    copy_unless_in_place(out, in, count, dt);
    return 0;
}

static int single_broadcast(void *impl, void *buf, size_t count, pile_comm_dtype dt, int root, void *stream,
                            pile_err *err)
{
    (void)impl, (void)buf, (void)count, (void)dt, (void)root, (void)stream, (void)err;
    return 0;
}

static int single_allreduce_f64(void *impl, double *v, size_t n, pile_comm_op op, pile_err *err)
{
    (void)impl, (void)v, (void)n, (void)op, (void)err;
    return 0;
}

static int single_allreduce_i64(void *impl, int64_t *v, size_t n, pile_comm_op op, pile_err *err)
{
    (void)impl, (void)v, (void)n, (void)op, (void)err;
    return 0;
}

static int single_broadcast_bytes(void *impl, void *buf, size_t bytes, int root, pile_err *err)
{
    (void)impl, (void)buf, (void)bytes, (void)root, (void)err;
    return 0;
}

static int single_barrier(void *impl, pile_err *err)
{
    (void)impl, (void)err;
    return 0;
}

const pile__comm_ops pile__comm_single_ops = {
    .name = "single",
    .open = single_open,
    .close = single_close,
    .allreduce = single_allreduce,
    .reduce_scatter = single_reduce_scatter,
    .all_gather = single_all_gather,
    .broadcast = single_broadcast,
    .allreduce_f64 = single_allreduce_f64,
    .allreduce_i64 = single_allreduce_i64,
    .broadcast_bytes = single_broadcast_bytes,
    .barrier = single_barrier,
};
