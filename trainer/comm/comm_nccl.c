/* The "nccl" communicator: pile_comm's tensor calls on NCCL collectives
 * over device buffers, one process per GPU (the device of the launcher's
 * local rank, as the cuda backend takes). Nothing here has run on a GPU
 * yet: it builds and links against NCCL, and its watchdog's logic
 * (comm_watchdog.c) is tested on the CPU (README, "Collectives").
 *
 * Bootstrap: a host communicator of the same job ("mpi" under an MPI
 * launcher, "tcp" otherwise, pile_comm_auto_name) carries rank 0's
 * ncclUniqueId (pile_comm_broadcast_bytes) and stays open for the
 * scalars, broadcast_bytes and the barrier. Scalars go that way, not
 * through a small device buffer, because comm.h gives them in host
 * memory and wants them finished at return: through NCCL each would be a
 * copy up, a collective, a copy down and a synchronisation of the
 * device, whereas the host communicator reduces a few values at once in
 * a fixed order ("tcp": the same bits every run) and fails on a dead
 * peer by itself.
 *
 * The NCCL communicator is non-blocking (ncclCommInitRankConfig,
 * config.blocking = 0), so that no NCCL call can block this process for
 * good: a call that answers ncclInProgress is waited for by polling
 * ncclCommGetAsyncError against the deadline, and each collective,
 * enqueued on the caller's stream, records an event that the watchdog
 * (a thread, comm_watchdog.h) polls with the communicator's async error
 * until its deadline (--dist_timeout). A failure or a timeout calls
 * ncclCommAbort, which ends the kernels waiting for a dead peer, and
 * every later call of this communicator fails with the message naming
 * the operation and the rank; each rank's own watchdog does the same,
 * so every rank exits non-zero, none hangs.
 *
 * The optimizer gives its collectives the cuda backend's comm stream
 * (pile_backend_comm_stream), which it orders against the compute stream
 * with events (pile_backend_comm_wait_compute / _compute_wait_comm): the
 * call returns once enqueued, and the watchdog polls its event there. A
 * tensor call given no stream (NULL: the checkpoints' gathers) is ordered
 * after all the work given to the device so far (cudaDeviceSynchronize),
 * runs on a stream of the communicator's own and is finished when it
 * returns, as the host communicators' calls are. */
#include <cuda_runtime_api.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "comm_internal.h"
#include "comm_watchdog.h"

/* calls in flight at once on the caller's streams (ZeRO-3 gathers one
 * unit ahead; a bucketed reduce-scatter queues a few); a call beyond
 * waits for the oldest */
#define SLOTS 64
/* how often the watchdog's thread looks */
#define PERIOD_S 0.01

typedef struct nccl_comm {
    int rank, world, device;
    pile_comm *boot; /* the host communicator of the bootstrap and the scalars */
    ncclComm_t comm;
    cudaStream_t own; /* calls given no stream */
    cudaEvent_t events[SLOTS]; /* one per watchdog slot: recorded after the slot's call */
    int n_events;
    pile__watchdog *wd;
} nccl_comm;

/* ------------------------------------------------ the watchdog's io */

static int io_state(void *ctx, char *why, size_t cap)
{
    nccl_comm *n = ctx;
    ncclResult_t async = ncclSuccess;
    ncclResult_t r = ncclCommGetAsyncError(n->comm, &async);
    if (r != ncclSuccess) async = r;
    if (async == ncclSuccess) return 0;
    if (async == ncclInProgress) return 1;
    const char *last = ncclGetLastError(n->comm);
    snprintf(why, cap, "NCCL: %s%s%s", ncclGetErrorString(async), last && *last ? ": " : "", last ? last : "");
    return -1;
}

static int io_done(void *ctx, int slot, char *why, size_t cap)
{
    nccl_comm *n = ctx;
    /* the watchdog's thread too works on this rank's device */
    cudaError_t e = cudaSetDevice(n->device);
    if (e == cudaSuccess) e = cudaEventQuery(n->events[slot]);
    if (e == cudaSuccess) return 1;
    if (e == cudaErrorNotReady) {
        (void)cudaGetLastError();
        return 0;
    }
    (void)cudaGetLastError();
    snprintf(why, cap, "CUDA: %s", cudaGetErrorString(e));
    return -1;
}

static void io_abort(void *ctx)
{
    nccl_comm *n = ctx;
    /* it frees the communicator: nothing may use it after (the watchdog
     * calls no io function on a failed communicator but this one, once) */
    if (n->comm) (void)ncclCommAbort(n->comm);
    n->comm = NULL;
}

static double io_now(void *ctx)
{
    (void)ctx;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void io_sleep(void *ctx, double s)
{
    (void)ctx;
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

/* An NCCL call's result as the watchdog's enqueue wants it: 0, 1 (in
 * progress) or -1 with why filled. */
static int nccl_result(nccl_comm *n, ncclResult_t r, const char *call, char *why, size_t cap)
{
    if (r == ncclSuccess) return 0;
    if (r == ncclInProgress) return 1;
    const char *last = n->comm ? ncclGetLastError(n->comm) : NULL;
    snprintf(why, cap, "%s: %s%s%s", call, ncclGetErrorString(r), last && *last ? ": " : "", last ? last : "");
    return -1;
}

/* -------------------------------------------------------- open, close */

static void nccl_close(void *impl);

static int cuda_fail(pile_err *err, cudaError_t e, const char *what, int dev)
{
    (void)cudaGetLastError();
    return pile_err_set(err, e == cudaErrorMemoryAllocation ? PILE_ENOMEM : PILE_EIO,
                        "cannot open communicator 'nccl' on CUDA device %d: %s: %s", dev, what, cudaGetErrorString(e));
}

#define OPEN_CUDA(call, what)                                              \
    do {                                                                   \
        cudaError_t e_ = (call);                                           \
        if (e_ != cudaSuccess) {                                           \
            int rc_ = cuda_fail(err, e_, what, n->device);                 \
            nccl_close(n);                                                 \
            return rc_;                                                    \
        }                                                                  \
    } while (0)

/* What rank 0 sends at bootstrap: whether it has an id, and the id. */
typedef struct boot_msg {
    int32_t ok;
    ncclUniqueId id;
} boot_msg;

typedef struct init_args {
    nccl_comm *n;
    const boot_msg *msg;
} init_args;

static int enqueue_init(void *arg, char *why, size_t cap)
{
    const init_args *a = arg;
    /* non-blocking: creation, too, answers ncclInProgress and is waited
     * for against the deadline */
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclResult_t r = ncclCommInitRankConfig(&a->n->comm, a->n->world, a->msg->id, a->n->rank, &config);
    return nccl_result(a->n, r, "ncclCommInitRankConfig", why, cap);
}

static int enqueue_finalize(void *arg, char *why, size_t cap)
{
    nccl_comm *n = arg;
    return nccl_result(n, ncclCommFinalize(n->comm), "ncclCommFinalize", why, cap);
}

static int nccl_open(void **impl, const pile__comm_setup *setup, int *rank, int *world_size, pile_err *err)
{
    *impl = NULL;
    const pile_comm_env *env = setup->env;
    int count = 0;
    cudaError_t ce = cudaGetDeviceCount(&count);
    if (ce != cudaSuccess) {
        (void)cudaGetLastError();
        return pile_err_set(err, PILE_EIO, "cannot open communicator 'nccl': no CUDA device (cudaGetDeviceCount: %s)",
                            cudaGetErrorString(ce));
    }
    int device = -1;
    PILE_FORWARD_IF_ERR(
        pile_comm_local_device(env, count, NULL, "cannot open communicator 'nccl' on CUDA device", &device, err));
    /* the bootstrap first: a rank that cannot reach the others fails
     * before it holds any device resource */
    const char *host = pile_comm_auto_name(env, err);
    if (!host) return err ? err->code : PILE_EINVAL;
    pile_comm *boot = NULL;
    const pile_comm_options bo = {.env = env, .timeout_s = setup->timeout_s};
    PILE_FORWARD_IF_ERR(pile_comm_open_opts(&boot, host, &bo, err));
    nccl_comm *n = calloc(1, sizeof *n);
    if (!n) {
        pile_comm_close(boot);
        return pile_err_set(err, PILE_ENOMEM, "out of memory");
    }
    n->boot = boot;
    n->rank = pile_comm_rank(boot);
    n->world = pile_comm_world_size(boot);
    n->device = device;
    OPEN_CUDA(cudaSetDevice(n->device), "cudaSetDevice");
    OPEN_CUDA(cudaStreamCreateWithFlags(&n->own, cudaStreamNonBlocking), "cudaStreamCreate");
    for (; n->n_events < SLOTS; n->n_events++)
        OPEN_CUDA(cudaEventCreateWithFlags(&n->events[n->n_events], cudaEventDisableTiming), "cudaEventCreate");

    /* rank 0's unique id to every rank, or word that it has none */
    boot_msg msg;
    memset(&msg, 0, sizeof msg);
    ncclResult_t r = ncclSuccess;
    if (n->rank == 0) {
        r = ncclGetUniqueId(&msg.id);
        msg.ok = r == ncclSuccess;
    }
    int rc = pile_comm_broadcast_bytes(boot, &msg, sizeof msg, 0, err);
    if (rc == 0 && !msg.ok)
        rc = n->rank == 0 ? pile_err_set(err, PILE_EIO, "cannot open communicator 'nccl': ncclGetUniqueId: %s",
                                         ncclGetErrorString(r))
                          : pile_err_set(err, PILE_EIO,
                                         "cannot open communicator 'nccl': rank 0 could not make NCCL's unique id");
    const pile__watchdog_io io = {n, io_state, io_done, io_abort, io_now, io_sleep};
    if (rc == 0) rc = pile__watchdog_create(&n->wd, &io, n->rank, n->world, setup->timeout_s, SLOTS, err);
    if (rc < 0) {
        nccl_close(n);
        return rc;
    }
    char what[96];
    snprintf(what, sizeof what, "open the NCCL communicator of %d ranks", n->world);
    int slot = -1;
    rc = pile__watchdog_begin(n->wd, what, &slot, err);
    if (rc == 0) {
        init_args a = {n, &msg};
        rc = pile__watchdog_enqueue(n->wd, slot, enqueue_init, &a, err);
        if (rc == 0) pile__watchdog_end(n->wd, slot);
    }
    if (rc == 0) rc = pile__watchdog_start(n->wd, PERIOD_S, err);
    if (rc < 0) {
        nccl_close(n);
        return rc;
    }
    *impl = n;
    *rank = n->rank;
    *world_size = n->world;
    return 0;
}

/* abandon (pile_comm_abandon): no flush, which would wait for the other
 * ranks' side of what was issued; the communicator aborted instead. */
static void release(nccl_comm *n, int abandon)
{
    if (!n) return;
    if (!abandon && n->comm && n->wd && !pile__watchdog_aborted(n->wd)) {
        /* flush what was issued, within the deadline (else abort) */
        int slot = -1;
        if (pile__watchdog_begin(n->wd, "close the NCCL communicator", &slot, NULL) == 0 &&
            pile__watchdog_enqueue(n->wd, slot, enqueue_finalize, n, NULL) == 0)
            pile__watchdog_end(n->wd, slot);
    }
    const int aborted = n->wd && pile__watchdog_aborted(n->wd);
    pile__watchdog_free(n->wd); /* its thread polls the communicator: stopped first */
    if (n->comm && !aborted) { /* an aborted one is freed (and NULL) */
        if (abandon) (void)ncclCommAbort(n->comm);
        else (void)ncclCommDestroy(n->comm);
    }
    for (int i = 0; i < n->n_events; i++) (void)cudaEventDestroy(n->events[i]);
    if (n->own) (void)cudaStreamDestroy(n->own);
    (void)cudaGetLastError();
    if (abandon) pile_comm_abandon(n->boot);
    else pile_comm_close(n->boot);
    free(n);
}

static void nccl_close(void *impl)
{
    release(impl, 0);
}

static void nccl_abandon(void *impl)
{
    release(impl, 1);
}

/* ------------------------------------------------------------ tensors */

typedef enum call_kind { ALLREDUCE, REDUCE_SCATTER, ALL_GATHER, BROADCAST } call_kind;

typedef struct call {
    call_kind kind;
    const void *in;
    void *out;
    size_t count; /* comm.h's count: the whole buffer */
    pile_comm_dtype dt;
    pile_comm_op op;
    int root;
} call;

static ncclDataType_t nccl_type(pile_comm_dtype dt)
{
    return dt == PILE_COMM_BF16 ? ncclBfloat16 : dt == PILE_COMM_F16 ? ncclFloat16 : ncclFloat32;
}

static ncclResult_t launch(nccl_comm *n, const call *c, cudaStream_t s)
{
    if (!n->comm) return ncclInvalidUsage;
    const ncclDataType_t t = nccl_type(c->dt);
    const ncclRedOp_t op = c->op == PILE_COMM_MAX ? ncclMax : ncclSum;
    const size_t share = c->count / (size_t)n->world;
    switch (c->kind) {
    case ALLREDUCE: return ncclAllReduce(c->in, c->out, c->count, t, op, n->comm, s);
    case REDUCE_SCATTER: return ncclReduceScatter(c->in, c->out, share, t, op, n->comm, s);
    case ALL_GATHER: return ncclAllGather(c->in, c->out, share, t, n->comm, s);
    case BROADCAST: return ncclBroadcast(c->in, c->out, c->count, t, c->root, n->comm, s);
    }
    return ncclInvalidArgument;
}

static const char *const kind_name[] = {"allreduce", "reduce-scatter", "all-gather", "broadcast"};

typedef struct launch_args {
    nccl_comm *n;
    const call *c;
    cudaStream_t s;
} launch_args;

static int enqueue_call(void *arg, char *why, size_t cap)
{
    const launch_args *a = arg;
    return nccl_result(a->n, launch(a->n, a->c, a->s), "NCCL", why, cap);
}

/* Enqueues c on `stream` (or on the communicator's own, finished at
 * return) under the watchdog. */
static int run(nccl_comm *n, const call *c, void *stream, pile_err *err)
{
    static const char *const dt_name[] = {"fp32", "bf16", "fp16"};
    char what[96];
    snprintf(what, sizeof what, "%s %zu %s elements", kind_name[c->kind], c->count, dt_name[c->dt]);
    int slot = -1;
    PILE_FORWARD_IF_ERR(pile__watchdog_begin(n->wd, what, &slot, err));
    char why[256];
    cudaStream_t s = stream ? (cudaStream_t)stream : n->own;
    cudaError_t e = cudaSetDevice(n->device);
    if (e == cudaSuccess && !stream) e = cudaDeviceSynchronize();
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(why, sizeof why, "CUDA: %s", cudaGetErrorString(e));
        return pile__watchdog_fail(n->wd, slot, why, err);
    }
    launch_args a = {n, c, s};
    PILE_FORWARD_IF_ERR(pile__watchdog_enqueue(n->wd, slot, enqueue_call, &a, err));
    e = cudaEventRecord(n->events[slot], s);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(why, sizeof why, "cudaEventRecord: %s", cudaGetErrorString(e));
        return pile__watchdog_fail(n->wd, slot, why, err);
    }
    pile__watchdog_launched(n->wd, slot);
    return stream ? 0 : pile__watchdog_wait(n->wd, slot, err);
}

static int nccl_allreduce(void *impl, void *buf, size_t count, pile_comm_dtype dt, pile_comm_op op, void *stream,
                          pile_err *err)
{
    const call c = {ALLREDUCE, buf, buf, count, dt, op, 0};
    return run(impl, &c, stream, err);
}

static int nccl_reduce_scatter(void *impl, void *out, const void *in, size_t count, pile_comm_dtype dt,
                               pile_comm_op op, void *stream, pile_err *err)
{
    const call c = {REDUCE_SCATTER, in, out, count, dt, op, 0};
    return run(impl, &c, stream, err);
}

static int nccl_all_gather(void *impl, void *out, const void *in, size_t count, pile_comm_dtype dt, void *stream,
                           pile_err *err)
{
    const call c = {ALL_GATHER, in, out, count, dt, PILE_COMM_SUM, 0};
    return run(impl, &c, stream, err);
}

static int nccl_broadcast(void *impl, void *buf, size_t count, pile_comm_dtype dt, int root, void *stream,
                          pile_err *err)
{
    const call c = {BROADCAST, buf, buf, count, dt, PILE_COMM_SUM, root};
    return run(impl, &c, stream, err);
}

/* ------------------------------------- host values, by the bootstrap */

/* A call of the host communicator, refused once NCCL's has failed: a
 * rank must not go on as if its collectives had happened. */
static int usable(nccl_comm *n, const char *what, pile_err *err)
{
    int slot = -1;
    PILE_FORWARD_IF_ERR(pile__watchdog_begin(n->wd, what, &slot, err));
    pile__watchdog_end(n->wd, slot);
    return 0;
}

static int nccl_allreduce_f64(void *impl, double *v, size_t n, pile_comm_op op, pile_err *err)
{
    nccl_comm *c = impl;
    PILE_FORWARD_IF_ERR(usable(c, "allreduce fp64 values", err));
    return pile_comm_allreduce_f64(c->boot, v, n, op, err);
}

static int nccl_allreduce_i64(void *impl, int64_t *v, size_t n, pile_comm_op op, pile_err *err)
{
    nccl_comm *c = impl;
    PILE_FORWARD_IF_ERR(usable(c, "allreduce int64 values", err));
    return pile_comm_allreduce_i64(c->boot, v, n, op, err);
}

static int nccl_broadcast_bytes(void *impl, void *buf, size_t bytes, int root, pile_err *err)
{
    nccl_comm *c = impl;
    PILE_FORWARD_IF_ERR(usable(c, "broadcast bytes", err));
    return pile_comm_broadcast_bytes(c->boot, buf, bytes, root, err);
}

static int nccl_barrier(void *impl, pile_err *err)
{
    nccl_comm *c = impl;
    PILE_FORWARD_IF_ERR(usable(c, "wait at a barrier", err));
    return pile_comm_barrier(c->boot, err);
}

const pile__comm_ops pile__comm_nccl_ops = {
    .name = "nccl",
    .device_memory = 1,
    .open = nccl_open,
    .close = nccl_close,
    .abandon = nccl_abandon,
    .allreduce = nccl_allreduce,
    .reduce_scatter = nccl_reduce_scatter,
    .all_gather = nccl_all_gather,
    .broadcast = nccl_broadcast,
    .allreduce_f64 = nccl_allreduce_f64,
    .allreduce_i64 = nccl_allreduce_i64,
    .broadcast_bytes = nccl_broadcast_bytes,
    .barrier = nccl_barrier,
};
