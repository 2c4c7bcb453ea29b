/* The CUDA backend's registry entry ("cuda"), its state and memory: one
 * device, a compute stream every op runs on in call order, a copy stream
 * for the staged upload of the next batch (pinned host memory, events),
 * cuBLASLt's handle and workspace, a comm stream for the device
 * communicator's collectives (events), the device arena and the ops table. The ops themselves live in
 * matmul.cu, kernels.cu and attention.cu (cuda_internal.h says which).
 * Written to be read beside the CPU backend (trainer/cpu/backend_cpu.c):
 * the same entries, the same contracts (backend.h). Nothing here has run
 * on a GPU yet (README, "The CUDA backend").
 *
 * Memory. pile_backend_reserve takes the run's planned device total in
 * one cudaMalloc up front, so that a run that cannot fit fails before its
 * first step, naming what did not fit, rather than at some allocation in
 * the middle; tensors are then carved from it:
 *
 *   arena.base                                          base + arena.size
 *   | block | block (free) | block |  ...  | block (free, the rest)     |
 *
 * Blocks tile the arena in address order, each a multiple of ALIGN bytes,
 * free or used. alloc takes the first free block large enough (first
 * fit) and splits off the rest; free marks its block free and merges it
 * with free neighbours, so two free blocks are never adjacent. Requests
 * the arena cannot serve (none reserved, or it is full) go to cudaMalloc,
 * listed apart, and to cudaFree once the three streams have drained. Reuse in
 * the arena needs no event but one: every op runs on `stream`, in the
 * order it was called, so memory freed after an op is only reused by ops
 * queued after it (a staged upload, on copy_stream, and a collective, on
 * comm_stream, are the exceptions: free makes `stream` wait for them). The ops' scratch
 * (pile_backend_reserve_scratch) is the arena's first block, taken once
 * for the run's shapes and never grown (its own cudaMalloc when nothing
 * was reserved); it and cuBLASLt's workspace (a cudaMalloc of its own,
 * not planned in the arena) are outside bytes_in_use, which counts
 * tensors, as the CPU backend's does. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "cuda_internal.h"

/* Tensors start on 256 bytes (cudaMalloc's own alignment, more than the
 * 64 backend.h promises): every vector width and cuBLASLt's best
 * alignment class. */
#define ALIGN ((size_t)256)
#define MIB ((size_t)1 << 20)
/* Events for the comm stream's marks: the optimizer holds four at most
 * (two gradient slots, two ZeRO-3 unit buffers); one taken eight marks
 * before is waited for later, safely (cuda_comm_mark) */
#define MARK_RING 8

typedef struct block {
    size_t off, size; /* for a cudaMalloc'ed block: off is the address */
    int used;
} block;

typedef struct block_list {
    block *b;
    size_t n, cap;
} block_list;

/* The state: pile_cuda_ctx (what the op files see) first, so that
 * be->ctx points at both. */
typedef struct cuda_state {
    pile_cuda_ctx pub;
    char *arena_base;
    size_t arena_size;
    block_list arena;  /* tiles [arena_base, arena_base + arena_size) */
    block_list direct; /* cudaMalloc'ed one by one, all used */
    int scratch_own;   /* pub.scratch is a cudaMalloc of its own, not an arena block */
    /* staged uploads (see "staged uploads" below) */
    char *stage_host;    /* pinned, stage_bytes */
    size_t stage_bytes;
    cudaEvent_t staged;   /* on copy_stream, after the last staged copy */
    cudaEvent_t computed; /* on stream, at the last group's start */
    /* the comm stream (see "the comm stream" below) */
    cudaStream_t comm_stream;
    cudaEvent_t to_comm;   /* on stream: the ops given before the last comm_wait_compute */
    cudaEvent_t from_comm; /* on comm_stream: the collectives given before the last compute_wait_comm */
    cudaEvent_t marks[MARK_RING]; /* on comm_stream: mark m's at marks[m % MARK_RING] */
    uint64_t mark;                /* the latest mark (pile_backend_comm_mark) */
} cuda_state;

static cuda_state *state_of(const pile_backend *be) { return (cuda_state *)be->ctx; }

/* -------------------------------------------------------- registry */

static int cuda_probe(pile_err *err)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError(); /* not a fault of any later call */
        /* cudart says "driver version is insufficient" when there is no
         * driver at all: version 0 */
        int driver = 0;
        if (e == cudaErrorInsufficientDriver && cudaDriverGetVersion(&driver) == cudaSuccess && driver == 0)
            return pile_err_set(err, PILE_EIO, "no CUDA device (cudaGetDeviceCount: %s; no CUDA driver is installed)",
                                cudaGetErrorString(e));
        return pile_err_set(err, PILE_EIO, "no CUDA device (cudaGetDeviceCount: %s)", cudaGetErrorString(e));
    }
    PILE_RETURN_IF(n < 1, err, PILE_EIO, "no CUDA device (cudaGetDeviceCount: 0 devices)");
    return 0;
}

/* Frees what open made, whatever it got to. */
static void release(cuda_state *s)
{
    if (!s) return;
    pile_cuda_ctx *c = &s->pub;
    /* nothing may still run on what is freed below */
    if (c->stream) (void)cudaStreamSynchronize(c->stream);
    if (c->copy_stream) (void)cudaStreamSynchronize(c->copy_stream);
    if (s->comm_stream) (void)cudaStreamSynchronize(s->comm_stream);
    for (size_t i = 0; i < s->direct.n; i++) (void)cudaFree((void *)(uintptr_t)s->direct.b[i].off);
    free(s->direct.b);
    free(s->arena.b);
    if (s->arena_base) (void)cudaFree(s->arena_base);
    if (s->stage_host) (void)cudaFreeHost(s->stage_host);
    if (s->staged) (void)cudaEventDestroy(s->staged);
    if (s->computed) (void)cudaEventDestroy(s->computed);
    if (s->to_comm) (void)cudaEventDestroy(s->to_comm);
    if (s->from_comm) (void)cudaEventDestroy(s->from_comm);
    for (int i = 0; i < MARK_RING; i++)
        if (s->marks[i]) (void)cudaEventDestroy(s->marks[i]);
    if (s->comm_stream) (void)cudaStreamDestroy(s->comm_stream);
    if (c->scratch && s->scratch_own) (void)cudaFree(c->scratch);
    if (c->lt_workspace) (void)cudaFree(c->lt_workspace);
    if (c->lt) (void)cublasLtDestroy(c->lt);
    if (c->copy_stream) (void)cudaStreamDestroy(c->copy_stream);
    if (c->stream) (void)cudaStreamDestroy(c->stream);
    (void)cudaGetLastError();
    free(s);
}

static void cuda_close(pile_backend *be)
{
    pile__cuda_matmul_close(be);
    release(state_of(be));
    be->ctx = NULL;
}

static pile_backend_i cuda_iface_table(void);

#define OPEN_CHECK(call, what)                                                                                   \
    do {                                                                                                         \
        cudaError_t e_ = (call);                                                                                 \
        if (e_ != cudaSuccess) {                                                                                 \
            (void)cudaGetLastError();                                                                            \
            pile_err_set(err, e_ == cudaErrorMemoryAllocation ? PILE_ENOMEM : PILE_EIO,                          \
                         "cannot open CUDA device %d: %s: %s", dev, what, cudaGetErrorString(e_));               \
            release(s);                                                                                          \
            return err ? err->code : PILE_EIO;                                                                   \
        }                                                                                                        \
    } while (0)

static const pile_backend_i cuda_iface = cuda_iface_table();

static int cuda_open(pile_backend *be, pile_err *err)
{
    /* One process per GPU: the device of the launcher's local rank
     * (comm.h; 0 without a launcher), as the "nccl" communicator takes */
    pile_comm_env env;
    PILE_FORWARD_IF_ERR(pile_comm_env_parse(&env, NULL, err));
    int n_dev = 0, dev = -1;
    if (cudaGetDeviceCount(&n_dev) != cudaSuccess) {
        (void)cudaGetLastError();
        n_dev = 0;
    }
    PILE_FORWARD_IF_ERR(pile_comm_local_device(&env, n_dev, NULL, "cannot open CUDA device", &dev, err));
    cuda_state *s = (cuda_state *)calloc(1, sizeof *s);
    PILE_RETURN_IF(!s, err, PILE_ENOMEM, "cannot allocate the cuda backend");
    pile_cuda_ctx *c = &s->pub;
    c->device = dev;
    OPEN_CHECK(cudaSetDevice(dev), "cudaSetDevice");
    OPEN_CHECK(cudaGetDeviceProperties(&c->prop, dev), "cudaGetDeviceProperties");
    /* non-blocking: no implicit synchronisation with the legacy default
     * stream, which libraries may use */
    OPEN_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), "cudaStreamCreate");
    OPEN_CHECK(cudaStreamCreateWithFlags(&c->copy_stream, cudaStreamNonBlocking), "cudaStreamCreate");
    OPEN_CHECK(cudaStreamCreateWithFlags(&s->comm_stream, cudaStreamNonBlocking), "cudaStreamCreate");
    OPEN_CHECK(cudaEventCreateWithFlags(&s->to_comm, cudaEventDisableTiming), "cudaEventCreate");
    OPEN_CHECK(cudaEventCreateWithFlags(&s->from_comm, cudaEventDisableTiming), "cudaEventCreate");
    for (int i = 0; i < MARK_RING; i++)
        OPEN_CHECK(cudaEventCreateWithFlags(&s->marks[i], cudaEventDisableTiming), "cudaEventCreate");
    cublasStatus_t st = cublasLtCreate(&c->lt);
    if (st != CUBLAS_STATUS_SUCCESS) {
        pile_err_set(err, PILE_EIO, "cannot open CUDA device %d: cublasLtCreate: %s", dev, cublasLtGetStatusString(st));
        release(s);
        return PILE_EIO;
    }
    /* NVIDIA's advice for cuBLASLt's workspace: 32 MiB on Hopper, 4 MiB
     * before */
    c->lt_workspace_bytes = (c->prop.major >= 9 ? 32 : 4) * MIB;
    OPEN_CHECK(cudaMalloc(&c->lt_workspace, c->lt_workspace_bytes), "cuBLASLt's workspace");
    be->iface = &cuda_iface;
    be->ctx = s;
    be->host_memory = 0;
    be->device_comm = "nccl";
    return 0;
}

extern "C" const pile_backend_reg pile__backend_cuda_reg = {"cuda", cuda_probe, cuda_open};

/* -------------------------------------------------- shared helpers */

int pile__cuda_check(pile_backend *be, const char *op)
{
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) pile__backend_fail(be, PILE_EIO, op, "%s", cudaGetErrorString(e));
    return be->failed ? -1 : 0;
}

void *pile__cuda_scratch(pile_backend *be, size_t bytes, const char *op)
{
    pile_cuda_ctx *c = pile__cuda_ctx(be);
    if (be->failed) return NULL;
    if (c->scratch && bytes <= c->scratch_bytes) return c->scratch;
    /* never an allocation here, in the middle of a run: what the ops ask
     * at the run's shapes was planned (cuda_sizes.h) and taken up front */
    if (!c->scratch)
        pile__backend_fail(be, PILE_EINVAL, op,
                           "needs %zu bytes of device scratch, and none was reserved (pile_backend_reserve_scratch)",
                           bytes);
    else
        pile__backend_fail(be, PILE_EINVAL, op,
                           "needs %zu bytes of device scratch, above the %zu reserved for the run's shapes "
                           "(trainer/cuda/cuda_sizes.h: a planning bug)",
                           bytes, c->scratch_bytes);
    return NULL;
}

/* ---------------------------------------------------------- memory */

/* A call's error, as the op's sticky error. */
static void check_call(pile_backend *be, cudaError_t e, const char *what)
{
    if (e == cudaSuccess) return;
    (void)cudaGetLastError();
    pile__backend_fail(be, PILE_EIO, what, "%s", cudaGetErrorString(e));
}


/* Inserts b at index i; 0 or -1 (out of host memory). */
static int list_insert(block_list *l, size_t i, block b)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        block *nb = (block *)realloc(l->b, cap * sizeof *nb);
        if (!nb) return -1;
        l->b = nb;
        l->cap = cap;
    }
    memmove(l->b + i + 1, l->b + i, (l->n - i) * sizeof *l->b);
    l->b[i] = b;
    l->n++;
    return 0;
}

static void list_remove(block_list *l, size_t i)
{
    memmove(l->b + i, l->b + i + 1, (l->n - i - 1) * sizeof *l->b);
    l->n--;
}

static int cuda_reserve(pile_backend *be, size_t bytes, pile_err *err)
{
    cuda_state *s = state_of(be);
    PILE_RETURN_IF(s->arena_base, err, PILE_EINVAL, "the cuda backend's memory is reserved already (%zu MiB)",
                   s->arena_size / MIB);
    size_t size = (bytes + ALIGN - 1) / ALIGN * ALIGN;
    if (!size) return 0;
    size_t free_b = 0, total_b = 0;
    (void)cudaMemGetInfo(&free_b, &total_b);
    (void)cudaGetLastError();
    cudaError_t e = cudaMalloc((void **)&s->arena_base, size);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        s->arena_base = NULL;
        return pile_err_set(err, e == cudaErrorMemoryAllocation ? PILE_ENOMEM : PILE_EIO,
                            "cannot reserve %.1f GiB on CUDA device %d (%s: %.1f GiB free of %.1f GiB): %s",
                            (double)size / (1 << 30), s->pub.device, s->pub.prop.name, (double)free_b / (1 << 30),
                            (double)total_b / (1 << 30), cudaGetErrorString(e));
    }
    if (list_insert(&s->arena, 0, block{0, size, 0}) < 0) {
        (void)cudaFree(s->arena_base);
        s->arena_base = NULL;
        return pile_err_set(err, PILE_ENOMEM, "out of memory");
    }
    s->arena_size = size;
    return 0;
}

/* First fit in the arena: the block's address, or NULL. */
static void *arena_take(cuda_state *s, size_t size)
{
    for (size_t i = 0; i < s->arena.n; i++) {
        block *b = &s->arena.b[i];
        if (b->used || b->size < size) continue;
        if (b->size > size) {
            block rest = {b->off + size, b->size - size, 0};
            if (list_insert(&s->arena, i + 1, rest) < 0) return NULL;
            b = &s->arena.b[i]; /* the list may have moved */
            b->size = size;
        }
        b->used = 1;
        return s->arena_base + b->off;
    }
    return NULL;
}

size_t pile__cuda_scratch_bytes(int B, int T, int C) { return (size_t)pile__cuda_scratch_size(B, T, C); }

/* The ops' scratch for the run's shapes (cuda_sizes.h's figure, which
 * plan.c counts): the arena's first free block that holds it, else a
 * cudaMalloc of its own; either way before the first step. CUB sizes its
 * sort's storage only on a device, so its answer for the largest sort
 * (n = B*T keys of 32 bits) is checked here against the closed-form
 * bound the plan took: a CUB that asks more fails the run at its start,
 * not at its first backward. */
static int cuda_reserve_scratch(pile_backend *be, int B, int T, int C, pile_err *err)
{
    cuda_state *s = state_of(be);
    pile_cuda_ctx *c = &s->pub;
    PILE_RETURN_IF(c->scratch, err, PILE_EINVAL, "the cuda backend's scratch is reserved already (%zu bytes)",
                   c->scratch_bytes);
    const int n = B * T; /* backend.c checked that it fits an int, 4 times over */
    size_t sort_bytes = 0;
    cudaError_t e = pile__cuda_sort_temp_bytes(n, 32, c->stream, &sort_bytes);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return pile_err_set(err, PILE_EIO, "cannot size the token sort of %d positions: %s", n, cudaGetErrorString(e));
    }
    const uint64_t ids = 4 * pile__cuda_embed_ids_size(n), bound = pile__cuda_embed_bwd_scratch_size(n);
    PILE_RETURN_IF(ids + sort_bytes > bound, err, PILE_EIO,
                   "the token sort of %d positions needs %zu bytes of CUB's storage (and %" PRIu64 " of keys), above "
                   "the %" PRIu64 " bytes trainer/cuda/cuda_sizes.h plans for both: its bound needs raising for this CUB",
                   n, sort_bytes, ids, bound);
    const size_t want = pile__cuda_scratch_bytes(B, T, C);
    void *p = s->arena_base ? arena_take(s, want) : NULL; /* a multiple of ALIGN already */
    int own = 0;
    if (!p) {
        e = cudaMalloc(&p, want);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            size_t free_b = 0, total_b = 0;
            (void)cudaMemGetInfo(&free_b, &total_b);
            (void)cudaGetLastError();
            return pile_err_set(err, e == cudaErrorMemoryAllocation ? PILE_ENOMEM : PILE_EIO,
                                "cannot allocate %.1f MiB of scratch on CUDA device %d (%s: %.1f GiB free of %.1f "
                                "GiB): %s",
                                (double)want / MIB, c->device, c->prop.name, (double)free_b / (1 << 30),
                                (double)total_b / (1 << 30), cudaGetErrorString(e));
        }
        own = 1;
    }
    c->scratch = p;
    c->scratch_bytes = want;
    s->scratch_own = own;
    return 0;
}

static void *cuda_alloc(pile_backend *be, size_t bytes)
{
    cuda_state *s = state_of(be);
    pile_cuda_ctx *c = &s->pub;
    if (bytes > SIZE_MAX - ALIGN) return NULL;
    size_t size = bytes ? (bytes + ALIGN - 1) / ALIGN * ALIGN : ALIGN;
    void *p = s->arena_base ? arena_take(s, size) : NULL;
    if (!p) {
        if (cudaMalloc(&p, size) != cudaSuccess) {
            (void)cudaGetLastError(); /* an allocation's failure is not an op's */
            return NULL;
        }
        if (list_insert(&s->direct, s->direct.n, block{(size_t)(uintptr_t)p, size, 1}) < 0) {
            (void)cudaFree(p);
            return NULL;
        }
    }
    /* zeroed, in stream order before any op that uses it */
    check_call(be, cudaMemsetAsync(p, 0, size, c->stream), "alloc");
    c->bytes_in_use += size;
    if (c->bytes_in_use > c->bytes_peak) c->bytes_peak = c->bytes_in_use;
    return p;
}

static void cuda_free(pile_backend *be, void *p)
{
    cuda_state *s = state_of(be);
    pile_cuda_ctx *c = &s->pub;
    if (!p) return;
    char *q = (char *)p;
    if (s->arena_base && q >= s->arena_base && q < s->arena_base + s->arena_size) {
        size_t off = (size_t)(q - s->arena_base), lo = 0, hi = s->arena.n;
        while (hi - lo > 1) { /* the block starting at off: blocks are in address order */
            size_t mid = (lo + hi) / 2;
            if (s->arena.b[mid].off <= off) lo = mid;
            else hi = mid;
        }
        block *b = &s->arena.b[lo];
        if (b->off != off || !b->used) return; /* not a block's start: never handed out */
        /* a staged copy (copy_stream) into it may still run: the ops
         * queued from now on, which may reuse it, come after the copies */
        if (s->staged) check_call(be, cudaStreamWaitEvent(c->stream, s->staged, 0), "free");
        /* so may a collective on the comm stream (backend.h) */
        check_call(be, cudaEventRecord(s->from_comm, s->comm_stream), "free");
        check_call(be, cudaStreamWaitEvent(c->stream, s->from_comm, 0), "free");
        b->used = 0;
        c->bytes_in_use -= b->size;
        if (lo + 1 < s->arena.n && !s->arena.b[lo + 1].used) {
            b->size += s->arena.b[lo + 1].size;
            list_remove(&s->arena, lo + 1);
        }
        if (lo > 0 && !s->arena.b[lo - 1].used) {
            s->arena.b[lo - 1].size += s->arena.b[lo].size;
            list_remove(&s->arena, lo);
        }
        return;
    }
    for (size_t i = 0; i < s->direct.n; i++) {
        if (s->direct.b[i].off != (size_t)(uintptr_t)p) continue;
        c->bytes_in_use -= s->direct.b[i].size;
        list_remove(&s->direct, i);
        /* no queued op, staged copy or collective may still use it:
         * cudaFree "may perform implicit synchronization" (CUDA Runtime
         * API), which promises nothing, so the streams are waited for first */
        check_call(be, cudaStreamSynchronize(c->copy_stream), "free");
        check_call(be, cudaStreamSynchronize(s->comm_stream), "free");
        check_call(be, cudaStreamSynchronize(c->stream), "free");
        (void)cudaFree(p);
        (void)cudaGetLastError();
        return;
    }
}

static size_t cuda_bytes_in_use(const pile_backend *be) { return pile__cuda_ctx((pile_backend *)be)->bytes_in_use; }

/* ------------------------------------------------- copies and sync */

void pile__cuda_upload(pile_backend *be, pile_tensor dst, const void *host_src, size_t bytes)
{
    /* from pageable memory the call returns once host_src is staged, so
     * the caller may reuse it at once */
    check_call(be, cudaMemcpyAsync(dst.data, host_src, bytes, cudaMemcpyHostToDevice, pile__cuda_ctx(be)->stream),
               "upload");
}

void pile__cuda_download(pile_backend *be, void *host_dst, pile_tensor src, size_t bytes)
{
    pile_cuda_ctx *c = pile__cuda_ctx(be);
    check_call(be, cudaMemcpyAsync(host_dst, src.data, bytes, cudaMemcpyDeviceToHost, c->stream), "download");
    /* the caller reads host_dst when this returns */
    if (!be->failed) check_call(be, cudaStreamSynchronize(c->stream), "download");
}

void pile__cuda_copy(pile_backend *be, pile_tensor dst, pile_tensor src, size_t bytes)
{
    check_call(be, cudaMemcpyAsync(dst.data, src.data, bytes, cudaMemcpyDeviceToDevice, pile__cuda_ctx(be)->stream),
               "copy");
}

void pile__cuda_zero(pile_backend *be, pile_tensor t, size_t bytes)
{
    check_call(be, cudaMemsetAsync(t.data, 0, bytes, pile__cuda_ctx(be)->stream), "zero");
}

/* -------------------------------------------------- staged uploads */

/* The next micro-batch's inputs (pile_backend_stage_*): the host copies
 * them into pinned memory (stage_host), from which copy_stream moves them
 * to the device while `stream` computes the current one. Two events order
 * the streams; the host waits only where it reuses the pinned memory:
 *  - computed: recorded on `stream` at a group's first upload, and
 *    copy_stream waits for it, so a group overwrites no tensor that an op
 *    queued before still reads;
 *  - staged: recorded on copy_stream after each copy; stage_wait makes
 *    `stream` wait for it, and a group's first upload has the host wait
 *    for it before overwriting the pinned memory. In the training loop
 *    the last group's copy ran during the forward before, which the host
 *    waited for: that wait costs nothing there.
 * One pinned buffer of one group (batch_size x max_length x 3 int32 in
 * the trainer), so the host memory the planner counts is all there is. */
static int cuda_stage_reserve(pile_backend *be, size_t bytes, pile_err *err)
{
    cuda_state *s = state_of(be);
    cudaError_t e = cudaSuccess;
    if (!s->staged) e = cudaEventCreateWithFlags(&s->staged, cudaEventDisableTiming);
    if (e == cudaSuccess && !s->computed) e = cudaEventCreateWithFlags(&s->computed, cudaEventDisableTiming);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return pile_err_set(err, PILE_EIO, "cannot create the events of staged uploads: %s", cudaGetErrorString(e));
    }
    if (s->stage_host) (void)cudaFreeHost(s->stage_host);
    s->stage_host = NULL;
    s->stage_bytes = 0;
    e = cudaHostAlloc((void **)&s->stage_host, bytes, cudaHostAllocDefault);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        s->stage_host = NULL;
        return pile_err_set(err, e == cudaErrorMemoryAllocation ? PILE_ENOMEM : PILE_EIO,
                            "cannot allocate %zu bytes of pinned host memory for staged uploads: %s", bytes,
                            cudaGetErrorString(e));
    }
    s->stage_bytes = bytes;
    return 0;
}

static void cuda_stage_upload(pile_backend *be, pile_tensor dst, const void *host_src, size_t bytes, size_t offset)
{
    cuda_state *s = state_of(be);
    pile_cuda_ctx *c = &s->pub;
    if (!s->stage_host || offset + bytes > s->stage_bytes) { /* backend.c checked against its reserve */
        pile__backend_fail(be, PILE_EINVAL, "stage_upload", "no pinned memory for %zu bytes at %zu", bytes, offset);
        return;
    }
    if (offset == 0) {
        check_call(be, cudaEventSynchronize(s->staged), "stage_upload");
        if (!be->failed) check_call(be, cudaEventRecord(s->computed, c->stream), "stage_upload");
        if (!be->failed) check_call(be, cudaStreamWaitEvent(c->copy_stream, s->computed, 0), "stage_upload");
        if (be->failed) return;
    }
    memcpy(s->stage_host + offset, host_src, bytes);
    check_call(be, cudaMemcpyAsync(dst.data, s->stage_host + offset, bytes, cudaMemcpyHostToDevice, c->copy_stream),
               "stage_upload");
    if (!be->failed) check_call(be, cudaEventRecord(s->staged, c->copy_stream), "stage_upload");
}

static void cuda_stage_wait(pile_backend *be)
{
    cuda_state *s = state_of(be);
    check_call(be, cudaStreamWaitEvent(s->pub.stream, s->staged, 0), "stage_wait");
}

/* ------------------------------------------------------ the comm stream
 * Where the device communicator ("nccl") enqueues the collectives it is
 * given this stream (backend.h), beside `stream`; an event each way
 * orders them, the host waiting for neither: cudaStreamWaitEvent waits
 * for the event's record at the time of the call, so each event is
 * recorded anew at every ordering. */

static void *cuda_comm_stream(pile_backend *be)
{
    return (void *)state_of(be)->comm_stream;
}

static void cuda_comm_wait_compute(pile_backend *be)
{
    cuda_state *s = state_of(be);
    check_call(be, cudaEventRecord(s->to_comm, s->pub.stream), "comm_wait_compute");
    if (!be->failed) check_call(be, cudaStreamWaitEvent(s->comm_stream, s->to_comm, 0), "comm_wait_compute");
}

static void cuda_compute_wait_comm(pile_backend *be)
{
    cuda_state *s = state_of(be);
    check_call(be, cudaEventRecord(s->from_comm, s->comm_stream), "compute_wait_comm");
    if (!be->failed) check_call(be, cudaStreamWaitEvent(s->pub.stream, s->from_comm, 0), "compute_wait_comm");
}

/* Mark m is the event marks[m % MARK_RING], recorded on the comm stream
 * when m was taken. Eight marks later it is recorded again, and a wait
 * for m then waits for that later point: safe, only later (backend.h). */
static uint64_t cuda_comm_mark(pile_backend *be)
{
    cuda_state *s = state_of(be);
    check_call(be, cudaEventRecord(s->marks[(s->mark + 1) % MARK_RING], s->comm_stream), "comm_mark");
    if (!be->failed) s->mark++;
    return be->failed ? 0 : s->mark;
}

static void cuda_compute_wait_mark(pile_backend *be, uint64_t mark)
{
    cuda_state *s = state_of(be);
    if (mark > s->mark)
        pile__backend_fail(be, PILE_EINVAL, "compute_wait_mark",
                           "mark %" PRIu64 " was never given (the comm stream is at %" PRIu64 ")", mark, s->mark);
    else
        check_call(be, cudaStreamWaitEvent(s->pub.stream, s->marks[mark % MARK_RING], 0), "compute_wait_mark");
}

/* Waits for the three streams; a fault of an earlier kernel shows here
 * (the sticky error of the CUDA context), named "sync" since the op that
 * caused it is not known. */
static void cuda_sync(pile_backend *be)
{
    pile_cuda_ctx *c = pile__cuda_ctx(be);
    check_call(be, cudaStreamSynchronize(state_of(be)->comm_stream), "sync");
    if (!be->failed) check_call(be, cudaStreamSynchronize(c->copy_stream), "sync");
    if (!be->failed) check_call(be, cudaStreamSynchronize(c->stream), "sync");
    if (!be->failed) pile__cuda_check(be, "sync");
}

/* Every op in F32, BF16 and F16 (this backend stores real 16-bit values),
 * and conversions between them. */
static int cuda_supports(const pile_backend *be, pile_op op, pile_dtype dt)
{
    (void)be;
    (void)op;
    return dt == PILE_DTYPE_F32 || dt == PILE_DTYPE_BF16 || dt == PILE_DTYPE_F16;
}

/* ------------------------------------------------------- the table */

static pile_backend_i cuda_iface_table(void)
{
    pile_backend_i t;
    memset(&t, 0, sizeof t);
    t.close = cuda_close;
    t.supports = cuda_supports;
    t.alloc = cuda_alloc;
    t.free = cuda_free;
    t.bytes_in_use = cuda_bytes_in_use;
    t.reserve = cuda_reserve;
    t.reserve_scratch = cuda_reserve_scratch;
    t.sync = cuda_sync;
    t.upload = pile__cuda_upload;
    t.stage_reserve = cuda_stage_reserve;
    t.stage_upload = cuda_stage_upload;
    t.stage_wait = cuda_stage_wait;
    t.comm_stream = cuda_comm_stream;
    t.comm_wait_compute = cuda_comm_wait_compute;
    t.compute_wait_comm = cuda_compute_wait_comm;
    t.comm_mark = cuda_comm_mark;
    t.compute_wait_mark = cuda_compute_wait_mark;
    t.download = pile__cuda_download;
    t.copy = pile__cuda_copy;
    t.zero = pile__cuda_zero;
    t.convert = pile__cuda_convert;
    t.round = NULL; /* real 16-bit storage: nothing to emulate */
    t.embed_fwd = pile__cuda_embed_fwd;
    t.embed_bwd = pile__cuda_embed_bwd;
    t.layernorm_fwd = pile__cuda_layernorm_fwd;
    t.layernorm_bwd = pile__cuda_layernorm_bwd;
    t.matmul_fwd = pile__cuda_matmul_fwd;
    t.matmul_bwd = pile__cuda_matmul_bwd;
    t.logits_fwd = pile__cuda_logits_fwd;
    t.logits_bwd = pile__cuda_logits_bwd;
    t.attention_saved_bytes = pile__cuda_attention_saved_bytes;
    t.attention_scratch_bytes = pile__cuda_attention_scratch_bytes;
    t.attention_fwd = pile__cuda_attention_fwd;
    t.attention_bwd = pile__cuda_attention_bwd;
    t.attention_decode = pile__cuda_attention_decode;
    t.gelu_fwd = pile__cuda_gelu_fwd;
    t.gelu_bwd = pile__cuda_gelu_bwd;
    t.add = pile__cuda_add;
    t.dropout = pile__cuda_dropout;
    t.softmax_ce = pile__cuda_softmax_ce;
    t.sumsq = pile__cuda_sumsq;
    t.scale = pile__cuda_scale;
    t.adamw = pile__cuda_adamw;
    return t;
}
