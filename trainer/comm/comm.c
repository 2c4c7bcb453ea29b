/* pile_comm's front (comm.h): the registry of implementations by name, and
 * the argument checks every call passes before it reaches one, so that a
 * wrong call fails the same way whatever the world size (on one rank most
 * of them would otherwise go unnoticed until the first multi-rank run).
 * While the comm has its communication thread (comm_thread.c), a checked
 * call from any other thread is handed to it as a job and waited for. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm_internal.h"

struct pile_comm {
    const pile__comm_ops *ops;
    void *impl;
    int rank, world_size;
    pile__comm_queue *q; /* the communication thread, or NULL */
};

static const pile__comm_ops *const registry[] = {
    &pile__comm_single_ops,
#ifdef PILE_HAVE_MPI
    &pile__comm_mpi_ops,
#endif
    &pile__comm_tcp_ops,
#ifdef PILE_HAVE_NCCL
    &pile__comm_nccl_ops,
#endif
    &pile__comm_devsim_ops,
};
#define N_REGISTRY (sizeof registry / sizeof registry[0])

int pile__comm_open_ops(pile_comm **out, const pile__comm_ops *ops, const pile_comm_options *opt, pile_err *err)
{
    *out = NULL;
    pile_comm_env env;
    pile__comm_setup setup = {opt ? opt->env : NULL, opt && opt->timeout_s > 0 ? opt->timeout_s : 0};
    if (!setup.env) {
        PILE_FORWARD_IF_ERR(pile_comm_env_parse(&env, NULL, err));
        setup.env = &env;
    }
    if (setup.timeout_s <= 0) setup.timeout_s = PILE_COMM_TIMEOUT_DEFAULT_S;
    pile_comm *c = calloc(1, sizeof *c);
    if (!c) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    c->ops = ops;
    int rc = ops->open(&c->impl, &setup, &c->rank, &c->world_size, err);
    if (rc == 0 && (c->world_size < 1 || c->rank < 0 || c->rank >= c->world_size)) {
        ops->close(c->impl);
        rc = pile_err_set(err, PILE_EINVAL, "communicator '%s' reports rank %d of world size %d", ops->name, c->rank,
                          c->world_size);
    }
    if (rc < 0) {
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int pile__comm_open_over(pile_comm **out, const pile__comm_ops *ops, void *impl, int rank, int world_size,
                         pile_err *err)
{
    *out = NULL;
    pile_comm *c = calloc(1, sizeof *c);
    if (!c) {
        ops->close(impl);
        return pile_err_set(err, PILE_ENOMEM, "out of memory");
    }
    c->ops = ops;
    c->impl = impl;
    c->rank = rank;
    c->world_size = world_size;
    *out = c;
    return 0;
}

int pile_comm_open_opts(pile_comm **out, const char *name, const pile_comm_options *opt, pile_err *err)
{
    *out = NULL;
    for (size_t i = 0; i < N_REGISTRY; i++)
        if (name && strcmp(name, registry[i]->name) == 0) return pile__comm_open_ops(out, registry[i], opt, err);
    char have[128] = "";
    size_t at = 0;
    for (size_t i = 0; i < N_REGISTRY && at < sizeof have; i++)
        at += (size_t)snprintf(have + at, sizeof have - at, "%s%s", i ? ", " : "", registry[i]->name);
    return pile_err_set(err, PILE_EINVAL, "unknown communicator '%s' (this build has: %s)", name ? name : "(null)",
                        have);
}

int pile_comm_open(pile_comm **out, const char *name, pile_err *err)
{
    return pile_comm_open_opts(out, name, NULL, err);
}

const char *pile_comm_auto_name(const pile_comm_env *env, pile_err *err)
{
    if (env->world_size == 1) return "single";
    if (!env->mpi) return "tcp";
#ifdef PILE_HAVE_MPI
    (void)err;
    return "mpi";
#else
    pile_err_set(err, PILE_EINVAL,
                 "cannot run as rank %d of %d: %s started this job with MPI and this build has no MPI (install "
                 "Open MPI, e.g. apt-get install libopenmpi-dev openmpi-bin, and build again; or launch with "
                 "torchrun or pile-trainer launch)",
                 env->rank, env->world_size, pile_comm_launcher_name(env->launcher));
    return NULL;
#endif
}

const char *pile_comm_auto_name_for(const pile_comm_env *env, int device_memory, pile_err *err)
{
    if (!device_memory || env->world_size == 1) return pile_comm_auto_name(env, err);
#ifdef PILE_HAVE_NCCL
    (void)err;
    return "nccl";
#else
    pile_err_set(err, PILE_EINVAL,
                 "cannot run as rank %d of %d on a device's memory: this build has no communicator for it (NCCL: "
                 "build with CUDA and NCCL found, see the README's dependencies; or train on the cpu backend)",
                 env->rank, env->world_size);
    return NULL;
#endif
}

int pile_comm_open_auto(pile_comm **out, const pile_comm_options *opt, pile_err *err)
{
    *out = NULL;
    pile_comm_env env;
    pile_comm_options o = {NULL, 0, 0, NULL};
    if (opt) o = *opt;
    if (!o.env) {
        PILE_FORWARD_IF_ERR(pile_comm_env_parse(&env, NULL, err));
        o.env = &env;
    }
    const char *name = o.device_memory && o.device_comm && o.env->world_size > 1
                           ? o.device_comm
                           : pile_comm_auto_name_for(o.env, o.device_memory, err);
    if (!name) return err ? err->code : PILE_EINVAL;
    return pile_comm_open_opts(out, name, &o, err);
}

void pile_comm_close(pile_comm *c)
{
    if (!c) return;
    pile__comm_queue_stop(c->q, 0);
    c->ops->close(c->impl);
    free(c);
}

void pile_comm_abandon(pile_comm *c)
{
    if (!c) return;
    pile__comm_queue_stop(c->q, 1);
    if (c->ops->abandon) c->ops->abandon(c->impl);
    else c->ops->close(c->impl);
    free(c);
}

const char *pile_comm_name(const pile_comm *c)
{
    return c->ops->name;
}

int pile_comm_rank(const pile_comm *c)
{
    return c->rank;
}

int pile_comm_world_size(const pile_comm *c)
{
    return c->world_size;
}

int pile_comm_device_memory(const pile_comm *c)
{
    return c->ops->device_memory;
}

size_t pile_comm_dtype_size(pile_comm_dtype dt)
{
    switch (dt) {
    case PILE_COMM_F32: return 4;
    case PILE_COMM_BF16:
    case PILE_COMM_F16: return 2;
    }
    return 0;
}

void pile_comm_partition(const pile_comm *c, size_t n, size_t *offset, size_t *count)
{
    const size_t w = (size_t)c->world_size, r = (size_t)c->rank;
    const size_t chunk = n / w + (n % w != 0);
    size_t lo = r * chunk < n ? r * chunk : n;
    size_t hi = n - lo > chunk ? lo + chunk : n;
    *offset = lo;
    *count = hi - lo;
}

/* ------------------------------------------------------------ checks */

static const char *dtype_name(pile_comm_dtype dt)
{
    switch (dt) {
    case PILE_COMM_F32: return "fp32";
    case PILE_COMM_BF16: return "bf16";
    case PILE_COMM_F16: return "fp16";
    }
    return "?";
}

/* count elements of dt make a buffer of *bytes (bytes may be NULL; p may
 * be NULL when count is 0). */
static int check_buffer(const char *what, const void *p, size_t count, pile_comm_dtype dt, size_t *bytes,
                        pile_err *err)
{
    const size_t es = pile_comm_dtype_size(dt);
    PILE_RETURN_IF(es == 0, err, PILE_EINVAL, "cannot %s: unknown element type %d", what, (int)dt);
    PILE_RETURN_IF(count > SIZE_MAX / es, err, PILE_EINVAL, "cannot %s %zu elements: more bytes than memory holds",
                   what, count);
    PILE_RETURN_IF(count && !p, err, PILE_EINVAL, "cannot %s %zu elements: no buffer", what, count);
    if (bytes) *bytes = count * es;
    return 0;
}

static int check_reduction(const char *what, pile_comm_dtype dt, pile_comm_op op, pile_err *err)
{
    PILE_RETURN_IF(op != PILE_COMM_SUM && op != PILE_COMM_MAX, err, PILE_EINVAL, "cannot %s: unknown operation %d",
                   what, (int)op);
    PILE_RETURN_IF(dt != PILE_COMM_F32 && pile_comm_dtype_size(dt) != 0, err, PILE_EINVAL,
                   "cannot %s %s elements: reductions take fp32 (16-bit values are reduced in fp32)", what,
                   dtype_name(dt));
    return 0;
}

static int check_divides(const pile_comm *c, const char *what, size_t count, pile_err *err)
{
    PILE_RETURN_IF(count % (size_t)c->world_size != 0, err, PILE_EINVAL,
                   "cannot %s %zu elements over %d ranks: the count must be a multiple of the world size (pad it)",
                   what, count, c->world_size);
    return 0;
}

/* The whole buffer `whole` (count elements) and one rank's share `part`
 * (count / world_size): part is either the rank's own range of whole (in
 * place) or apart from it. */
static int check_in_place(const pile_comm *c, const char *what, const void *whole, const void *part,
                          size_t whole_bytes, pile_err *err)
{
    const size_t part_bytes = whole_bytes / (size_t)c->world_size;
    if (part == (const char *)whole + (size_t)c->rank * part_bytes) return 0;
    const uintptr_t a = (uintptr_t)whole, b = (uintptr_t)part;
    PILE_RETURN_IF(a < b + part_bytes && b < a + whole_bytes, err, PILE_EINVAL,
                   "cannot %s: the buffers overlap, and not as rank %d's share of the whole (in place)", what,
                   c->rank);
    return 0;
}

static int check_root(const pile_comm *c, int root, pile_err *err)
{
    PILE_RETURN_IF(root < 0 || root >= c->world_size, err, PILE_EINVAL,
                   "cannot broadcast from rank %d: the world has ranks 0 to %d", root, c->world_size - 1);
    return 0;
}

static int check_scalars(const char *what, const void *v, size_t n, pile_comm_op op, pile_err *err)
{
    PILE_RETURN_IF(op != PILE_COMM_SUM && op != PILE_COMM_MAX, err, PILE_EINVAL, "cannot %s: unknown operation %d",
                   what, (int)op);
    PILE_RETURN_IF(n && !v, err, PILE_EINVAL, "cannot %s %zu values: no buffer", what, n);
    return 0;
}

/* ------------------------------------------------------------- calls */

/* One checked call (comm_internal.h), as the thread makes it for another
 * thread. */
typedef pile__comm_call call;

static int make_call(pile_comm *c, void *ctx, const size_t arg[3], pile_err *err)
{
    (void)arg;
    const call *k = ctx;
    void *impl = c->impl;
    switch (k->kind) {
    case PILE__CALL_ALLREDUCE: return c->ops->allreduce(impl, k->out, k->count, k->dt, k->op, k->stream, err);
    case PILE__CALL_REDUCE_SCATTER:
        return c->ops->reduce_scatter(impl, k->out, k->in, k->count, k->dt, k->op, k->stream, err);
    case PILE__CALL_ALL_GATHER: return c->ops->all_gather(impl, k->out, k->in, k->count, k->dt, k->stream, err);
    case PILE__CALL_BROADCAST: return c->ops->broadcast(impl, k->out, k->count, k->dt, k->root, k->stream, err);
    case PILE__CALL_ALLREDUCE_F64: return c->ops->allreduce_f64(impl, k->out, k->count, k->op, err);
    case PILE__CALL_ALLREDUCE_I64: return c->ops->allreduce_i64(impl, k->out, k->count, k->op, err);
    case PILE__CALL_BROADCAST_BYTES: return c->ops->broadcast_bytes(impl, k->out, k->count, k->root, err);
    case PILE__CALL_BARRIER: return c->ops->barrier(impl, err);
    }
    return pile_err_set(err, PILE_EINVAL, "unknown communicator call %d", (int)k->kind);
}

/* Here, or on the comm's thread behind what was queued before it. */
int pile__comm_make(pile_comm *c, const pile__comm_call *k, pile_err *err)
{
    static const size_t none[3] = {0, 0, 0};
    if (!c->q || pile__comm_queue_on_thread(c->q)) return make_call(c, (void *)k, none, err);
    uint64_t ticket = 0;
    PILE_FORWARD_IF_ERR(pile__comm_queue_submit(c->q, make_call, (void *)k, none, &ticket, err));
    return pile__comm_queue_wait(c->q, ticket, err);
}

int pile_comm_allreduce(pile_comm *c, void *buf, size_t count, pile_comm_dtype dt, pile_comm_op op, void *stream,
                        pile_err *err)
{
    static const char what[] = "allreduce";
    PILE_FORWARD_IF_ERR(check_reduction(what, dt, op, err));
    PILE_FORWARD_IF_ERR(check_buffer(what, buf, count, dt, NULL, err));
    if (count == 0) return 0;
    const call k = {PILE__CALL_ALLREDUCE, buf, NULL, count, dt, op, 0, stream};
    return pile__comm_make(c, &k, err);
}

int pile_comm_reduce_scatter(pile_comm *c, void *out, const void *in, size_t count, pile_comm_dtype dt,
                             pile_comm_op op, void *stream, pile_err *err)
{
    static const char what[] = "reduce-scatter";
    size_t bytes = 0; /* set by check_buffer; 0 keeps -O3's maybe-uninitialized quiet */
    PILE_FORWARD_IF_ERR(check_reduction(what, dt, op, err));
    PILE_FORWARD_IF_ERR(check_divides(c, what, count, err));
    PILE_FORWARD_IF_ERR(check_buffer(what, in, count, dt, &bytes, err));
    PILE_FORWARD_IF_ERR(check_buffer(what, out, count / (size_t)c->world_size, dt, NULL, err));
    if (count == 0) return 0;
    PILE_FORWARD_IF_ERR(check_in_place(c, what, in, out, bytes, err));
    const call k = {PILE__CALL_REDUCE_SCATTER, out, in, count, dt, op, 0, stream};
    return pile__comm_make(c, &k, err);
}

int pile_comm_all_gather(pile_comm *c, void *out, const void *in, size_t count, pile_comm_dtype dt, void *stream,
                         pile_err *err)
{
    static const char what[] = "all-gather";
    size_t bytes = 0; /* set by check_buffer; 0 keeps -O3's maybe-uninitialized quiet */
    PILE_FORWARD_IF_ERR(check_divides(c, what, count, err));
    PILE_FORWARD_IF_ERR(check_buffer(what, out, count, dt, &bytes, err));
    PILE_FORWARD_IF_ERR(check_buffer(what, in, count / (size_t)c->world_size, dt, NULL, err));
    if (count == 0) return 0;
    PILE_FORWARD_IF_ERR(check_in_place(c, what, out, in, bytes, err));
    const call k = {PILE__CALL_ALL_GATHER, out, in, count, dt, PILE_COMM_SUM, 0, stream};
    return pile__comm_make(c, &k, err);
}

int pile_comm_broadcast(pile_comm *c, void *buf, size_t count, pile_comm_dtype dt, int root, void *stream,
                        pile_err *err)
{
    static const char what[] = "broadcast";
    PILE_FORWARD_IF_ERR(check_root(c, root, err));
    PILE_FORWARD_IF_ERR(check_buffer(what, buf, count, dt, NULL, err));
    if (count == 0) return 0;
    const call k = {PILE__CALL_BROADCAST, buf, NULL, count, dt, PILE_COMM_SUM, root, stream};
    return pile__comm_make(c, &k, err);
}

int pile_comm_allreduce_f64(pile_comm *c, double *v, size_t n, pile_comm_op op, pile_err *err)
{
    PILE_FORWARD_IF_ERR(check_scalars("allreduce", v, n, op, err));
    if (n == 0) return 0;
    const call k = {PILE__CALL_ALLREDUCE_F64, v, NULL, n, PILE_COMM_F32, op, 0, NULL};
    return pile__comm_make(c, &k, err);
}

int pile_comm_allreduce_i64(pile_comm *c, int64_t *v, size_t n, pile_comm_op op, pile_err *err)
{
    PILE_FORWARD_IF_ERR(check_scalars("allreduce", v, n, op, err));
    if (n == 0) return 0;
    const call k = {PILE__CALL_ALLREDUCE_I64, v, NULL, n, PILE_COMM_F32, op, 0, NULL};
    return pile__comm_make(c, &k, err);
}

int pile_comm_broadcast_bytes(pile_comm *c, void *buf, size_t bytes, int root, pile_err *err)
{
    PILE_FORWARD_IF_ERR(check_root(c, root, err));
    PILE_RETURN_IF(bytes && !buf, err, PILE_EINVAL, "cannot broadcast %zu bytes: no buffer", bytes);
    if (bytes == 0) return 0;
    const call k = {PILE__CALL_BROADCAST_BYTES, buf, NULL, bytes, PILE_COMM_F32, PILE_COMM_SUM, root, NULL};
    return pile__comm_make(c, &k, err);
}

int pile_comm_barrier(pile_comm *c, pile_err *err)
{
    const call k = {PILE__CALL_BARRIER, NULL, NULL, 0, PILE_COMM_F32, PILE_COMM_SUM, 0, NULL};
    return pile__comm_make(c, &k, err);
}

/* ------------------------------------------------ the communication thread */

int pile_comm_thread_start(pile_comm *c, pile_err *err)
{
    PILE_RETURN_IF(c->q, err, PILE_EINVAL, "communicator '%s' has its communication thread already", c->ops->name);
    return pile__comm_queue_start(&c->q, c, err);
}

int pile_comm_threaded(const pile_comm *c) { return c->q != NULL; }

int pile_comm_submit(pile_comm *c, pile_comm_job_fn fn, void *ctx, size_t a0, size_t a1, size_t a2,
                     uint64_t *ticket, pile_err *err)
{
    const size_t arg[3] = {a0, a1, a2};
    if (ticket) *ticket = 0;
    if (!c->q) return fn(c, ctx, arg, err);
    return pile__comm_queue_submit(c->q, fn, ctx, arg, ticket, err);
}

int pile_comm_wait(pile_comm *c, uint64_t ticket, pile_err *err)
{
    return c->q ? pile__comm_queue_wait(c->q, ticket, err) : 0;
}

int pile_comm_drain(pile_comm *c, pile_err *err)
{
    return c->q ? pile__comm_queue_wait(c->q, pile__comm_queue_submitted(c->q), err) : 0;
}
