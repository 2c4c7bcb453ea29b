/* The "devsim" communicator, for testing: what "nccl" is to a GPU run,
 * for the devsim backends (trainer/cpu/backend_devsim.c), whose tensors
 * are host memory behind addresses the host cannot use. Its tensor calls
 * take only such addresses, so that a trainer path handing a host buffer
 * to a device's communicator (where NCCL would read garbage or fault) is
 * refused here with PILE_EINVAL naming the call; the addresses are
 * untagged and the call made on the job's host communicator ("mpi" or
 * "tcp", pile_comm_auto_name, the one "nccl" bootstraps over), which
 * also carries the scalars, broadcast_bytes and the barrier, as it does
 * for "nccl". A call given a stream (a devsim backend's comm stream,
 * pile_backend_comm_stream) is queued there and made when the backend's
 * ops are made to wait for the stream, as "nccl"'s would complete on a
 * GPU at the latest (backend.h says how the devsim backends hold it); a
 * call given none is made at once. */
#include "backend.h"
#include "comm_internal.h"

static int devsim_open(void **impl, const pile__comm_setup *setup, int *rank, int *world_size, pile_err *err)
{
    *impl = NULL;
    const char *name = pile_comm_auto_name(setup->env, err);
    if (!name) return err ? err->code : PILE_EINVAL;
    pile_comm *host = NULL;
    const pile_comm_options o = {.env = setup->env, .timeout_s = setup->timeout_s};
    PILE_FORWARD_IF_ERR(pile_comm_open_opts(&host, name, &o, err));
    *impl = host;
    *rank = pile_comm_rank(host);
    *world_size = pile_comm_world_size(host);
    return 0;
}

static void devsim_close(void *impl)
{
    pile_comm_close(impl);
}

static void devsim_abandon(void *impl)
{
    pile_comm_abandon(impl);
}

/* p's host address, or the refusal of a buffer outside device memory. */
static int device(const char *what, const void *p, void **host, pile_err *err)
{
    *host = pile_backend_devsim_host_address(p);
    PILE_RETURN_IF(!*host, err, PILE_EINVAL,
                   "cannot %s: %p is a host buffer, and the 'devsim' communicator takes device memory only (a "
                   "devsim backend's tensors)",
                   what, p);
    return 0;
}

/* A tensor call on the host communicator, made now (no stream) or
 * queued on the devsim backend's comm stream (backend.h), which makes it
 * when the ops are made to wait for the stream, as a device would. */
typedef struct deferred {
    pile_comm *host;
    pile__comm_call k;
} deferred;

static int make(void *arg, pile_err *err)
{
    const deferred *d = arg;
    return pile__comm_make(d->host, &d->k, err);
}

/* k with device addresses (in NULL: in place, out's), made on the host
 * communicator; out_n and in_n: the elements it writes and reads. */
static int submit(pile_comm *host, pile__comm_call k, void *stream, const char *what, size_t out_n, size_t in_n,
                  pile_err *err)
{
    void *in;
    PILE_FORWARD_IF_ERR(device(what, k.in ? k.in : k.out, &in, err));
    PILE_FORWARD_IF_ERR(device(what, k.out, &k.out, err));
    k.in = k.in ? in : NULL;
    const deferred d = {host, k};
    if (!stream) return make((void *)&d, err);
    const size_t es = pile_comm_dtype_size(k.dt);
    return pile_backend_devsim_enqueue(stream, make, &d, sizeof d, k.out, out_n * es, in, in_n * es, err);
}

static int devsim_allreduce(void *impl, void *buf, size_t count, pile_comm_dtype dt, pile_comm_op op, void *stream,
                            pile_err *err)
{
    const pile__comm_call k = {PILE__CALL_ALLREDUCE, buf, NULL, count, dt, op, 0, NULL};
    return submit(impl, k, stream, "allreduce", count, count, err);
}

static int devsim_reduce_scatter(void *impl, void *out, const void *in, size_t count, pile_comm_dtype dt,
                                 pile_comm_op op, void *stream, pile_err *err)
{
    const pile__comm_call k = {PILE__CALL_REDUCE_SCATTER, out, in, count, dt, op, 0, NULL};
    return submit(impl, k, stream, "reduce-scatter", count / (size_t)pile_comm_world_size(impl), count, err);
}

static int devsim_all_gather(void *impl, void *out, const void *in, size_t count, pile_comm_dtype dt, void *stream,
                             pile_err *err)
{
    const pile__comm_call k = {PILE__CALL_ALL_GATHER, out, in, count, dt, PILE_COMM_SUM, 0, NULL};
    return submit(impl, k, stream, "all-gather", count, count / (size_t)pile_comm_world_size(impl), err);
}

static int devsim_broadcast(void *impl, void *buf, size_t count, pile_comm_dtype dt, int root, void *stream,
                            pile_err *err)
{
    const pile__comm_call k = {PILE__CALL_BROADCAST, buf, NULL, count, dt, PILE_COMM_SUM, root, NULL};
    return submit(impl, k, stream, "broadcast", count, count, err);
}

static int devsim_allreduce_f64(void *impl, double *v, size_t n, pile_comm_op op, pile_err *err)
{
    return pile_comm_allreduce_f64(impl, v, n, op, err);
}

static int devsim_allreduce_i64(void *impl, int64_t *v, size_t n, pile_comm_op op, pile_err *err)
{
    return pile_comm_allreduce_i64(impl, v, n, op, err);
}

static int devsim_broadcast_bytes(void *impl, void *buf, size_t bytes, int root, pile_err *err)
{
    return pile_comm_broadcast_bytes(impl, buf, bytes, root, err);
}

static int devsim_barrier(void *impl, pile_err *err)
{
    return pile_comm_barrier(impl, err);
}

const pile__comm_ops pile__comm_devsim_ops = {
    .name = "devsim",
    .device_memory = 1,
    .open = devsim_open,
    .close = devsim_close,
    .abandon = devsim_abandon,
    .allreduce = devsim_allreduce,
    .reduce_scatter = devsim_reduce_scatter,
    .all_gather = devsim_all_gather,
    .broadcast = devsim_broadcast,
    .allreduce_f64 = devsim_allreduce_f64,
    .allreduce_i64 = devsim_allreduce_i64,
    .broadcast_bytes = devsim_broadcast_bytes,
    .barrier = devsim_barrier,
};
