/* The "devsim" backend: the host side of a device run, checked without a
 * device. It computes with the CPU backend's functions (each op is the
 * CPU's, bit for bit), but says its memory is not the host's
 * (host_memory 0) and hands out addresses the host cannot use: every
 * tensor's data is the real address with DEVSIM_TAG's bits flipped, which
 * makes it non-canonical on x86-64 (bit 62) and a kernel-half address on
 * AArch64 (bit 55, below the top byte that AArch64 ignores). Offsets
 * within a tensor still work (views, carves), but any read or write
 * through such a pointer on the host faults at once. So a trainer path
 * that dereferences tensor data instead of going through
 * pile_backend_upload / _download / copy, or that takes host memory for
 * granted, crashes here as it would read garbage on a GPU.
 *
 * It holds an inner CPU backend (its own object, opened with the CPU's
 * registry entry) and translates every operand into it: untagged data,
 * inner owner. "devsim16" also stores compute tensors in bf16 / f16, as a
 * device does (see W below). Staged uploads travel as late as a device's
 * copy queue may carry them (see "staged uploads" below). No global
 * state: the tag is a constant. */
#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend_internal.h"
#include "precision.h"

#define DEVSIM_TAG ((uintptr_t)1 << 62 | (uintptr_t)1 << 55)

/* A staged upload in flight: pinned[offset, offset + bytes) to dst. */
typedef struct staged_copy {
    pile_tensor dst;
    size_t offset, bytes;
} staged_copy;

/* A tensor call queued on the comm stream (see "the comm stream" below):
 * fn(arg), and the bytes of its input it overlaps its output with, kept
 * at enqueue (keep, to be put back at keep_at). */
typedef struct comm_call {
    uint64_t mark; /* the stream's mark just after it (pile_backend_comm_mark) */
    pile_backend_devsim_fn fn;
    void *arg;
    unsigned char *keep;
    void *keep_at;
    size_t keep_bytes;
} comm_call;

/* Bytes [lo, hi) of host memory that op's operand wrote (runs of one
 * operand of one op merged) since the last comm_wait_compute or sync. */
typedef struct written {
    uintptr_t lo, hi;
    const char *op, *operand;
} written;

typedef struct devsim_ctx {
    pile_backend cpu; /* the inner CPU backend: its ops do the work */
    int native16;     /* devsim16: compute tensors of bf16 / f16 storage */
    /* staged uploads: the host staging memory a device copies from, and
     * the open group's copies, carried out at its stage_wait */
    unsigned char *pinned;
    staged_copy *copies; /* room for one group's: at most pinned's bytes / 256 */
    size_t n_copies;
    comm_call *calls; /* the comm stream's queue, in the order given */
    size_t n_calls, cap_calls;
    uint64_t given;   /* calls given the stream since it opened: its latest mark */
    /* what the ops wrote since the comm stream last waited for them (see
     * "hazards" below); recorded once the stream was asked for */
    int track;
    written *wrote;
    size_t n_wrote, cap_wrote;
} devsim_ctx;

static pile_backend *inner(const pile_backend *be)
{
    return &((devsim_ctx *)be->ctx)->cpu;
}

static void *tag(void *p)
{
    return p ? (void *)((uintptr_t)p ^ DEVSIM_TAG) : NULL;
}

/* A tensor of ours as the inner backend's: real address, inner owner. */
static pile_tensor in(const pile_backend *be, pile_tensor t)
{
    t.data = tag(t.data);
    t.be = inner(be);
    return t;
}

/* An op's sticky error inside the CPU backend becomes ours. */
static void settle(pile_backend *be)
{
    pile_backend *c = inner(be);
    if (c->failed && !be->failed) {
        be->failed = 1;
        be->error = c->error;
    }
}

static int devsim_probe(pile_err *err)
{
    (void)err;
    return 0;
}

static void drop_calls(devsim_ctx *d, size_t from);

static void devsim_close(pile_backend *be)
{
    devsim_ctx *d = be->ctx;
    pile_backend *c = inner(be);
    drop_calls(d, 0);
    free(d->calls);
    free(d->wrote);
    if (c->iface) c->iface->close(c);
    free(d->pinned);
    free(d->copies);
    free(d);
}

static int devsim_supports(const pile_backend *be, pile_op op, pile_dtype dt)
{
    const pile_backend *c = inner(be);
    if (((const devsim_ctx *)be->ctx)->native16 && (dt == PILE_DTYPE_BF16 || dt == PILE_DTYPE_F16))
        return op != PILE_OP_SUMSQ && op != PILE_OP_SCALE && op != PILE_OP_ADAMW;
    return c->iface->supports(c, op, dt);
}

static void wrote(pile_backend *be, const char *op, const char *operand, pile_tensor t, size_t bytes);

static void *devsim_alloc(pile_backend *be, size_t bytes)
{
    pile_backend *c = inner(be);
    void *p = tag(c->iface->alloc(c, bytes));
    /* zeroed on a device's compute stream (the CUDA backend's memset) */
    wrote(be, "alloc", "zeroed", (pile_tensor){p, bytes, PILE_DTYPE_U8, be}, bytes);
    return p;
}

static void land_copies(pile_backend *be);
static void run_calls(pile_backend *be);

static void devsim_free(pile_backend *be, void *p)
{
    pile_backend *c = inner(be);
    /* a device's staged copy or collective into the block may still run:
     * the ops after the free wait for them (the CUDA backend's free does),
     * so they land now, before the memory can be handed out again */
    land_copies(be);
    run_calls(be);
    c->iface->free(c, tag(p));
}

static size_t devsim_bytes_in_use(const pile_backend *be)
{
    const pile_backend *c = inner(be);
    return c->iface->bytes_in_use(c);
}

static void devsim_sync(pile_backend *be)
{
    pile_backend *c = inner(be);
    c->iface->sync(c);
    settle(be);
    /* every op queued so far is done: a collective given from now on
     * finds their outputs whatever its stream waits for */
    ((devsim_ctx *)be->ctx)->n_wrote = 0;
}

/* Every op below: the CPU's, on the operands translated (U). */
#define U(x) in(be, x)

static void devsim_upload(pile_backend *be, pile_tensor dst, const void *host_src, size_t bytes)
{
    pile_backend *c = inner(be);
    c->iface->upload(c, U(dst), host_src, bytes);
    settle(be);
    wrote(be, "upload", "dst", dst, bytes);
}

/* ------------------------------------------------------- staged uploads
 * What a device's copy queue allows, at its latest (backend.h): at
 * stage_upload the data is copied into the backend's staging memory (a
 * device's pinned memory, so host_src is free at once, as the contract
 * says) and dst is poisoned at once, since a copy in flight may already
 * have written part of it: float tensors become NaN, the others zero
 * (in range as a token, a target or a document start, so that a reader
 * computes wrong numbers rather than reading out of bounds). The copy
 * itself runs only at stage_wait, from the staging memory, as a device's
 * may run that late. So a trainer that reads a group's dst before its
 * stage_wait, or whose uploads overwrite staging memory still to be
 * copied, gets other bits than on the cpu backend: the bit-for-bit tests
 * (tests/devsim_cli.sh, tests/test_model.c) then fail. pile_backend_sync
 * does not land a group: ops between its upload and its wait must not
 * touch its tensors, whatever else they wait for. */

static int devsim_stage_reserve(pile_backend *be, size_t bytes, pile_err *err)
{
    devsim_ctx *d = be->ctx;
    /* backend.c grows the reserve only between groups: nothing in flight */
    unsigned char *p = malloc(bytes);
    staged_copy *cp = malloc((bytes / 256 + 1) * sizeof *cp);
    if (!p || !cp) {
        free(p);
        free(cp);
        return pile_err_set(err, PILE_ENOMEM, "cannot allocate %zu bytes of staging memory", bytes);
    }
    free(d->pinned);
    free(d->copies);
    d->pinned = p;
    d->copies = cp;
    d->n_copies = 0;
    return 0;
}

static void devsim_stage_upload(pile_backend *be, pile_tensor dst, const void *host_src, size_t bytes, size_t offset)
{
    devsim_ctx *d = be->ctx;
    /* a group's first upload: the group before was waited for (or the
     * backend failed and will run no op again) */
    if (offset == 0) d->n_copies = 0;
    memcpy(d->pinned + offset, host_src, bytes);
    const int is_float = dst.dtype == PILE_DTYPE_F32 || dst.dtype == PILE_DTYPE_BF16 || dst.dtype == PILE_DTYPE_F16;
    memset(tag(dst.data), is_float ? 0xff : 0, bytes);
    d->copies[d->n_copies++] = (staged_copy){dst, offset, bytes};
}

/* The open group's copies, in the order staged. */
static void land_copies(pile_backend *be)
{
    devsim_ctx *d = be->ctx;
    pile_backend *c = inner(be);
    for (size_t i = 0; i < d->n_copies && !be->failed; i++) {
        const staged_copy *k = &d->copies[i];
        c->iface->upload(c, in(be, k->dst), d->pinned + k->offset, k->bytes);
        settle(be);
        wrote(be, "stage_upload", "dst", k->dst, k->bytes);
    }
    d->n_copies = 0;
}

static void devsim_stage_wait(pile_backend *be)
{
    land_copies(be);
}

/* ------------------------------------------------------ the comm stream
 * What a device's communication stream allows, at its latest (backend.h):
 * a tensor call given the stream (the "devsim" communicator's, or a
 * test's) is queued with its arguments; its outputs are poisoned at once
 * (NaN in every float dtype), since a collective in flight may have
 * written part of them; it runs, reading its inputs then, only when the
 * ops are made to wait for it (compute_wait_comm; compute_wait_mark for
 * the calls up to a mark) or a tensor is freed. Where it works in place,
 * the input bytes under its output are kept at enqueue and put back when
 * it runs: what the caller wrote there in between is lost, as a device's
 * collective would have overwritten it.
 * The stream's handle is the backend itself, tagged as a tensor's
 * address is (no host code may use it but pile_backend_devsim_enqueue). */

static const pile_backend_i devsim_iface;

static void *devsim_comm_stream(pile_backend *be)
{
    ((devsim_ctx *)be->ctx)->track = 1; /* from now on a collective may be queued */
    return tag(be);
}

/* ------------------------------------------------------------- hazards
 * The one ordering the queue above cannot show by itself: its ops are
 * done when called, so a collective queued without comm_wait_compute
 * after the op that wrote its input still reads the right bits, where a
 * device's comm stream could run it before that op is done. So, once the
 * stream was asked for, every op records the bytes it writes (each
 * operand backend.h says it writes, accumulators included, the whole of
 * it: embed_bwd's dwte too, whose rows depend on the tokens; an alloc's
 * zeroing too, which a device runs on its compute stream), runs of one
 * operand of one op merged; comm_wait_compute and sync (after which every
 * op queued is done) clear the record. pile_backend_devsim_enqueue checks
 * the call's input and output against it, and against the staged copies
 * still in flight, and fails the backend on an overlap, naming the op. */

static void wrote(pile_backend *be, const char *op, const char *operand, pile_tensor t, size_t bytes)
{
    devsim_ctx *d = be->ctx;
    if (!d->track || !t.data || !bytes) return;
    const uintptr_t lo = (uintptr_t)tag(t.data), hi = lo + bytes;
    for (size_t i = d->n_wrote; i-- > 0;) { /* the latest first: a layer's op repeats the one before */
        written *w = &d->wrote[i];
        if (w->op != op || w->operand != operand || lo > w->hi || hi < w->lo) continue;
        if (lo < w->lo) w->lo = lo;
        if (hi > w->hi) w->hi = hi;
        return;
    }
    if (d->n_wrote == d->cap_wrote) {
        const size_t cap = d->cap_wrote ? 2 * d->cap_wrote : 64;
        written *p = realloc(d->wrote, cap * sizeof *p);
        if (!p) {
            pile__backend_fail(be, PILE_ENOMEM, "devsim", "cannot record what %s wrote", op);
            return;
        }
        d->wrote = p;
        d->cap_wrote = cap;
    }
    d->wrote[d->n_wrote++] = (written){lo, hi, op, operand};
}

static void devsim_comm_wait_compute(pile_backend *be)
{
    ((devsim_ctx *)be->ctx)->n_wrote = 0; /* the stream waits for every op queued so far */
}

/* 0, or the sticky error (in err too) when the collective's `what`
 * ("reads", "writes") bytes [p, p + n) meet what an op wrote since the
 * last comm_wait_compute or a staged copy in flight. */
static int hazard(pile_backend *be, const char *what, const void *p, size_t n, pile_err *err)
{
    devsim_ctx *d = be->ctx;
    const uintptr_t a = (uintptr_t)p, b = a + n;
    for (size_t i = 0; i < d->n_wrote + d->n_copies; i++) {
        const int staged = i >= d->n_wrote;
        const written w = staged ? (written){(uintptr_t)tag(d->copies[i - d->n_wrote].dst.data),
                                             (uintptr_t)tag(d->copies[i - d->n_wrote].dst.data) +
                                                 d->copies[i - d->n_wrote].bytes,
                                             "stage_upload", "dst"}
                                 : d->wrote[i];
        const uintptr_t lo = a > w.lo ? a : w.lo, hi = b < w.hi ? b : w.hi;
        if (lo >= hi) continue;
        pile__backend_fail(be, PILE_EINVAL, "comm",
                           "a collective %s %zu bytes, %zu of them (from byte %zu) written by %s ('%s', %zu bytes) "
                           "%s: on a device it may run before that op is done",
                           what, n, (size_t)(hi - lo), (size_t)(lo - a), w.op, w.operand, (size_t)(w.hi - w.lo),
                           staged ? "before its stage_wait" : "after the last comm_wait_compute");
        if (err) *err = be->error;
        return be->error.code;
    }
    return 0;
}

static void drop_calls(devsim_ctx *d, size_t from)
{
    for (size_t i = from; i < d->n_calls; i++) {
        free(d->calls[i].arg);
        free(d->calls[i].keep);
    }
    d->n_calls = 0;
}

/* The queued calls up to `mark`, in order (the later ones stay queued,
 * their outputs poisoned); after a failure the rest are dropped. */
static void run_upto(pile_backend *be, uint64_t mark)
{
    devsim_ctx *d = be->ctx;
    size_t i = 0;
    for (; i < d->n_calls && d->calls[i].mark <= mark && !be->failed; i++) {
        comm_call *k = &d->calls[i];
        if (k->keep) memcpy(k->keep_at, k->keep, k->keep_bytes);
        pile_err e;
        const int rc = k->fn(k->arg, &e);
        if (rc < 0) pile__backend_fail(be, rc, "comm", "%s", e.msg);
        free(k->arg);
        free(k->keep);
    }
    if (be->failed) {
        drop_calls(d, i);
        return;
    }
    if (i && i < d->n_calls) memmove(d->calls, d->calls + i, (d->n_calls - i) * sizeof *d->calls);
    d->n_calls -= i;
}

static void run_calls(pile_backend *be)
{
    run_upto(be, UINT64_MAX);
}

/* Marks: the number of calls given so far; waiting for one runs the
 * calls up to it, as late as a device may run the rest. */
static uint64_t devsim_comm_mark(pile_backend *be)
{
    return ((devsim_ctx *)be->ctx)->given;
}

static void devsim_compute_wait_mark(pile_backend *be, uint64_t mark)
{
    const uint64_t given = ((devsim_ctx *)be->ctx)->given;
    if (mark > given)
        pile__backend_fail(be, PILE_EINVAL, "compute_wait_mark",
                           "mark %" PRIu64 " was never given (the comm stream is at %" PRIu64 ")", mark, given);
    else
        run_upto(be, mark);
}

int pile_backend_devsim_enqueue(void *stream, pile_backend_devsim_fn fn, const void *arg, size_t arg_bytes,
                                void *out, size_t out_bytes, const void *in, size_t in_bytes, pile_err *err)
{
    pile_backend *be = pile_backend_devsim_host_address(stream);
    PILE_RETURN_IF(!be || be->iface != &devsim_iface, err, PILE_EINVAL,
                   "cannot queue a collective: %p is not a devsim backend's comm stream", stream);
    devsim_ctx *d = be->ctx;
    if (!be->failed) {
        PILE_FORWARD_IF_ERR(hazard(be, "reads", in, in_bytes, err));
        PILE_FORWARD_IF_ERR(hazard(be, "writes", out, out_bytes, err));
    }
    if (d->n_calls == d->cap_calls) {
        const size_t cap = d->cap_calls ? 2 * d->cap_calls : 16;
        comm_call *p = realloc(d->calls, cap * sizeof *p);
        PILE_RETURN_IF(!p, err, PILE_ENOMEM, "cannot queue a collective: out of memory");
        d->calls = p;
        d->cap_calls = cap;
    }
    comm_call k = {d->given + 1, fn, malloc(arg_bytes ? arg_bytes : 1), NULL, NULL, 0};
    const uintptr_t o0 = (uintptr_t)out, o1 = o0 + out_bytes, i0 = (uintptr_t)in, i1 = i0 + in_bytes;
    const uintptr_t lo = o0 > i0 ? o0 : i0, hi = o1 < i1 ? o1 : i1;
    if (lo < hi) {
        k.keep_at = (void *)lo;
        k.keep_bytes = hi - lo;
        k.keep = malloc(k.keep_bytes);
    }
    if (!k.arg || (k.keep_bytes && !k.keep)) {
        free(k.arg);
        free(k.keep);
        return pile_err_set(err, PILE_ENOMEM, "cannot queue a collective: out of memory");
    }
    if (arg_bytes) memcpy(k.arg, arg, arg_bytes);
    if (k.keep) memcpy(k.keep, k.keep_at, k.keep_bytes);
    memset(out, 0xff, out_bytes);
    d->calls[d->n_calls++] = k;
    d->given++;
    return 0;
}

static void devsim_download(pile_backend *be, void *host_dst, pile_tensor src, size_t bytes)
{
    pile_backend *c = inner(be);
    c->iface->download(c, host_dst, U(src), bytes);
    settle(be);
}

/* what an op wrote (see "hazards"): n elements of operand t */
#define WROTE(op, t, n) wrote(be, op, #t, t, (size_t)(n) * pile_dtype_size((t).dtype))

static void devsim_copy(pile_backend *be, pile_tensor dst, pile_tensor src, size_t bytes)
{
    pile_backend *c = inner(be);
    c->iface->copy(c, U(dst), U(src), bytes);
    settle(be);
    wrote(be, "copy", "dst", dst, bytes);
}

static void devsim_zero(pile_backend *be, pile_tensor t, size_t bytes)
{
    pile_backend *c = inner(be);
    c->iface->zero(c, U(t), bytes);
    settle(be);
    wrote(be, "zero", "t", t, bytes);
}

static void devsim_convert(pile_backend *be, pile_tensor dst, pile_tensor src, size_t n)
{
    pile_backend *c = inner(be);
    c->iface->convert(c, U(dst), U(src), n);
    settle(be);
    WROTE("convert", dst, n);
}

static void devsim_round(pile_backend *be, pile_tensor t, size_t n, pile_precision p)
{
    pile_backend *c = inner(be);
    c->iface->round(c, U(t), n, p);
    settle(be);
    WROTE("round", t, n);
}

/* Compute operands stored in 16 bits (devsim16) go to the CPU's fp32 op
 * widened into host buffers, and the op's output is rounded back: the
 * store the CPU's emulation rounds, so the bits are the same. F32, I32
 * and U8 operands are only translated. */
typedef struct wide_set {
    pile_backend *be;
    int n, failed;
    pile_tensor orig[10];
    float *buf[10];
    int out[10];
} wide_set;

static pile_tensor W(wide_set *w, pile_tensor x, int is_out)
{
    pile_tensor r = in(w->be, x);
    if (!x.data || (x.dtype != PILE_DTYPE_BF16 && x.dtype != PILE_DTYPE_F16)) return r;
    float *f = aligned_alloc(64, (x.n * sizeof *f + 63) / 64 * 64);
    if (!f) {
        w->failed = 1;
        pile__backend_fail(w->be, PILE_ENOMEM, "devsim", "cannot widen %zu %s values", x.n, pile_dtype_name(x.dtype));
        return r;
    }
    if (x.dtype == PILE_DTYPE_BF16) pile_bf16_to_fp32_array(f, r.data, x.n);
    else pile_fp16_to_fp32_array(f, r.data, x.n);
    w->orig[w->n] = r;
    w->buf[w->n] = f;
    w->out[w->n++] = is_out;
    return (pile_tensor){f, x.n, PILE_DTYPE_F32, r.be};
}

/* The op may run: every operand was widened. */
static pile_backend *ready(wide_set *w)
{
    return w->failed ? NULL : inner(w->be);
}

static void done(wide_set *w)
{
    for (int i = 0; i < w->n; i++) {
        const pile_tensor o = w->orig[i];
        if (w->out[i] && !w->failed && o.dtype == PILE_DTYPE_BF16) pile_fp32_to_bf16_array(o.data, w->buf[i], o.n);
        else if (w->out[i] && !w->failed) pile_fp32_to_fp16_array(o.data, w->buf[i], o.n);
        free(w->buf[i]);
    }
    settle(w->be);
}

#define OPS_BEGIN wide_set w_ = {be, 0, 0, {{0}}, {0}, {0}}; pile_backend *c
#define OUT(x) W(&w_, x, 1)
#define IN(x) W(&w_, x, 0)
#define RUN(op, ...) if ((c = ready(&w_)) != NULL) c->iface->op(c, __VA_ARGS__); done(&w_)

static void devsim_embed_fwd(pile_backend *be, pile_tensor out, pile_tensor tokens, pile_tensor wte, pile_tensor wpe,
                             int B, int T, int C)
{
    const char *o = pile_op_name(PILE_OP_EMBED_FWD);
    OPS_BEGIN;
    RUN(embed_fwd, OUT(out), IN(tokens), IN(wte), IN(wpe), B, T, C);
    WROTE(o, out, (size_t)B * T * C);
}

static void devsim_embed_bwd(pile_backend *be, pile_tensor dwte, pile_tensor dwpe, pile_tensor dout,
                             pile_tensor tokens, int B, int T, int C)
{
    const char *o = pile_op_name(PILE_OP_EMBED_BWD);
    OPS_BEGIN;
    RUN(embed_bwd, IN(dwte), IN(dwpe), IN(dout), IN(tokens), B, T, C);
    WROTE(o, dwte, dwte.n); /* the tokens' rows: the whole */
    WROTE(o, dwpe, (size_t)T * C);
}

static void devsim_layernorm_fwd(pile_backend *be, pile_tensor out, pile_tensor mean, pile_tensor rstd,
                                 pile_tensor inp, pile_tensor w, pile_tensor b, int N, int C)
{
    const char *o = pile_op_name(PILE_OP_LAYERNORM_FWD);
    OPS_BEGIN;
    RUN(layernorm_fwd, OUT(out), IN(mean), IN(rstd), IN(inp), IN(w), IN(b), N, C);
    WROTE(o, out, (size_t)N * C), WROTE(o, mean, N), WROTE(o, rstd, N);
}

static void devsim_layernorm_bwd(pile_backend *be, pile_tensor dinp, pile_tensor dw, pile_tensor db,
                                 pile_tensor dout, pile_tensor inp, pile_tensor w, pile_tensor mean,
                                 pile_tensor rstd, int N, int C)
{
    const char *o = pile_op_name(PILE_OP_LAYERNORM_BWD);
    OPS_BEGIN;
    RUN(layernorm_bwd, OUT(dinp), IN(dw), IN(db), IN(dout), IN(inp), IN(w), IN(mean), IN(rstd), N, C);
    WROTE(o, dinp, (size_t)N * C), WROTE(o, dw, C), WROTE(o, db, C);
}

static void devsim_matmul_fwd(pile_backend *be, pile_tensor out, pile_tensor inp, pile_tensor Wt, pile_tensor bias,
                              int N, int IC, int OC)
{
    const char *o = pile_op_name(PILE_OP_MATMUL_FWD);
    OPS_BEGIN;
    RUN(matmul_fwd, OUT(out), IN(inp), IN(Wt), IN(bias), N, IC, OC);
    WROTE(o, out, (size_t)N * OC);
}

static void devsim_matmul_bwd(pile_backend *be, pile_tensor dinp, pile_tensor dW, pile_tensor dbias,
                              pile_tensor dout, pile_tensor inp, pile_tensor Wt, int N, int IC, int OC)
{
    const char *o = pile_op_name(PILE_OP_MATMUL_BWD);
    OPS_BEGIN;
    RUN(matmul_bwd, OUT(dinp), IN(dW), IN(dbias), IN(dout), IN(inp), IN(Wt), N, IC, OC);
    WROTE(o, dinp, (size_t)N * IC), WROTE(o, dW, (size_t)IC * OC), WROTE(o, dbias, OC);
}

static void devsim_logits_fwd(pile_backend *be, pile_tensor out, pile_tensor inp, pile_tensor wte, int N, int C,
                              int Vp)
{
    const char *o = pile_op_name(PILE_OP_LOGITS_FWD);
    OPS_BEGIN;
    RUN(logits_fwd, OUT(out), IN(inp), IN(wte), N, C, Vp);
    WROTE(o, out, (size_t)N * Vp);
}

static void devsim_logits_bwd(pile_backend *be, pile_tensor dinp, pile_tensor dwte, pile_tensor dout,
                              pile_tensor inp, pile_tensor wte, int N, int C, int Vp)
{
    const char *o = pile_op_name(PILE_OP_LOGITS_BWD);
    OPS_BEGIN;
    RUN(logits_bwd, OUT(dinp), IN(dwte), IN(dout), IN(inp), IN(wte), N, C, Vp);
    WROTE(o, dinp, (size_t)N * C), WROTE(o, dwte, (size_t)Vp * C);
}

static size_t devsim_attention_saved_bytes(const pile_backend *be, int B, int T, int C, int NH)
{
    const pile_backend *c = inner(be);
    return c->iface->attention_saved_bytes(c, B, T, C, NH);
}

static size_t devsim_attention_scratch_bytes(const pile_backend *be, int B, int T, int C, int NH)
{
    const pile_backend *c = inner(be);
    return c->iface->attention_scratch_bytes(c, B, T, C, NH);
}

static void devsim_attention_fwd(pile_backend *be, pile_tensor out, pile_tensor saved, pile_tensor scratch,
                                 pile_tensor qkv, pile_tensor doc_start, int B, int T, int C, int NH)
{
    const char *o = pile_op_name(PILE_OP_ATTENTION_FWD);
    OPS_BEGIN;
    RUN(attention_fwd, OUT(out), IN(saved), IN(scratch), IN(qkv), IN(doc_start), B, T, C, NH);
    WROTE(o, out, (size_t)B * T * C);
    WROTE(o, saved, devsim_attention_saved_bytes(be, B, T, C, NH));
    WROTE(o, scratch, devsim_attention_scratch_bytes(be, B, T, C, NH));
}

static void devsim_attention_bwd(pile_backend *be, pile_tensor dqkv, pile_tensor scratch, pile_tensor dout,
                                 pile_tensor qkv, pile_tensor out, pile_tensor saved, pile_tensor doc_start, int B,
                                 int T, int C, int NH)
{
    const char *o = pile_op_name(PILE_OP_ATTENTION_BWD);
    OPS_BEGIN;
    RUN(attention_bwd, OUT(dqkv), IN(scratch), IN(dout), IN(qkv), IN(out), IN(saved), IN(doc_start), B, T, C, NH);
    WROTE(o, dqkv, (size_t)B * T * 3 * C);
    WROTE(o, scratch, devsim_attention_scratch_bytes(be, B, T, C, NH));
}

static void devsim_attention_decode(pile_backend *be, pile_tensor out, pile_tensor att, pile_tensor q,
                                    pile_tensor kcache, pile_tensor vcache, int t, int C, int NH)
{
    const char *o = pile_op_name(PILE_OP_ATTENTION_DECODE);
    OPS_BEGIN;
    RUN(attention_decode, OUT(out), IN(att), IN(q), IN(kcache), IN(vcache), t, C, NH);
    WROTE(o, out, C), WROTE(o, att, (size_t)NH * (t + 1));
}

static void devsim_gelu_fwd(pile_backend *be, pile_tensor out, pile_tensor inp, size_t n)
{
    const char *o = pile_op_name(PILE_OP_GELU_FWD);
    OPS_BEGIN;
    RUN(gelu_fwd, OUT(out), IN(inp), n);
    WROTE(o, out, n);
}

static void devsim_gelu_bwd(pile_backend *be, pile_tensor dinp, pile_tensor inp, pile_tensor dout, size_t n)
{
    const char *o = pile_op_name(PILE_OP_GELU_BWD);
    OPS_BEGIN;
    RUN(gelu_bwd, OUT(dinp), IN(inp), IN(dout), n);
    WROTE(o, dinp, n);
}

static void devsim_add(pile_backend *be, pile_tensor out, pile_tensor a, pile_tensor b, size_t n)
{
    const char *o = pile_op_name(PILE_OP_ADD);
    OPS_BEGIN;
    RUN(add, OUT(out), IN(a), IN(b), n);
    WROTE(o, out, n);
}

static void devsim_dropout(pile_backend *be, pile_tensor x, size_t n, float p, uint64_t seed)
{
    const char *o = pile_op_name(PILE_OP_DROPOUT);
    OPS_BEGIN;
    RUN(dropout, OUT(x), n, p, seed);
    if (p > 0.0f) WROTE(o, x, n); /* p 0: untouched */
}

static void devsim_softmax_ce(pile_backend *be, pile_tensor logits, pile_tensor losses, pile_tensor correct,
                              pile_tensor targets, int N, int V, int Vp, float grad_scale)
{
    const char *o = pile_op_name(PILE_OP_SOFTMAX_CE);
    OPS_BEGIN;
    RUN(softmax_ce, OUT(logits), IN(losses), IN(correct), IN(targets), N, V, Vp, grad_scale);
    WROTE(o, losses, N), WROTE(o, correct, N);
    if (grad_scale != 0.0f) WROTE(o, logits, (size_t)N * Vp); /* the gradient, in place */
}

#undef OPS_BEGIN
#undef OUT
#undef IN
#undef RUN

/* sumsq, scale and adamw take F32 only */
static double devsim_sumsq(pile_backend *be, pile_tensor x, size_t n)
{
    pile_backend *c = inner(be);
    double s = c->iface->sumsq(c, U(x), n);
    settle(be);
    return s;
}

static void devsim_scale(pile_backend *be, pile_tensor x, size_t n, float s)
{
    pile_backend *c = inner(be);
    c->iface->scale(c, U(x), n, s);
    settle(be);
    WROTE(pile_op_name(PILE_OP_SCALE), x, n);
}

static void devsim_adamw(pile_backend *be, pile_tensor p, pile_tensor g, pile_tensor m, pile_tensor v, size_t n,
                         float lr, float beta1, float beta2, float eps, float wd, int64_t t)
{
    pile_backend *c = inner(be);
    c->iface->adamw(c, U(p), U(g), U(m), U(v), n, lr, beta1, beta2, eps, wd, t);
    settle(be);
    const char *o = pile_op_name(PILE_OP_ADAMW);
    WROTE(o, p, n), WROTE(o, m, n), WROTE(o, v, n);
}

#undef U
#undef WROTE

static const pile_backend_i devsim_iface = {
    .close = devsim_close,
    .supports = devsim_supports,
    .alloc = devsim_alloc,
    .free = devsim_free,
    .bytes_in_use = devsim_bytes_in_use,
    .sync = devsim_sync,
    .upload = devsim_upload,
    .stage_reserve = devsim_stage_reserve,
    .stage_upload = devsim_stage_upload,
    .stage_wait = devsim_stage_wait,
    .comm_stream = devsim_comm_stream,
    .comm_wait_compute = devsim_comm_wait_compute,
    .compute_wait_comm = run_calls,
    .comm_mark = devsim_comm_mark,
    .compute_wait_mark = devsim_compute_wait_mark,
    .download = devsim_download,
    .copy = devsim_copy,
    .zero = devsim_zero,
    .convert = devsim_convert,
    .round = devsim_round,
    .embed_fwd = devsim_embed_fwd,
    .embed_bwd = devsim_embed_bwd,
    .layernorm_fwd = devsim_layernorm_fwd,
    .layernorm_bwd = devsim_layernorm_bwd,
    .matmul_fwd = devsim_matmul_fwd,
    .matmul_bwd = devsim_matmul_bwd,
    .logits_fwd = devsim_logits_fwd,
    .logits_bwd = devsim_logits_bwd,
    .attention_saved_bytes = devsim_attention_saved_bytes,
    .attention_scratch_bytes = devsim_attention_scratch_bytes,
    .attention_fwd = devsim_attention_fwd,
    .attention_bwd = devsim_attention_bwd,
    .attention_decode = devsim_attention_decode,
    .gelu_fwd = devsim_gelu_fwd,
    .gelu_bwd = devsim_gelu_bwd,
    .add = devsim_add,
    .dropout = devsim_dropout,
    .softmax_ce = devsim_softmax_ce,
    .sumsq = devsim_sumsq,
    .scale = devsim_scale,
    .adamw = devsim_adamw,
};

static int open_as(pile_backend *be, int native16, pile_err *err)
{
    devsim_ctx *d = calloc(1, sizeof *d);
    PILE_RETURN_IF(!d, err, PILE_ENOMEM, "cannot allocate the %s backend", be->name);
    d->native16 = native16;
    d->cpu.name = "cpu";
    d->cpu.threads = be->threads;
    int rc = pile__backend_cpu_reg.open(&d->cpu, err);
    if (rc < 0) {
        free(d);
        return rc;
    }
    be->iface = &devsim_iface;
    be->ctx = d;
    be->threads = d->cpu.threads;
    be->host_memory = 0;
    be->device_comm = "devsim";
    return 0;
}

static int devsim_open(pile_backend *be, pile_err *err)
{
    return open_as(be, 0, err);
}

static int devsim16_open(pile_backend *be, pile_err *err)
{
    return open_as(be, 1, err);
}

void *pile_backend_devsim_host_address(const void *p)
{
    /* both bits set: a user-space host address never has both, bit 62
     * being clear on x86-64 (addresses below 2^56, 5-level paging too)
     * and bit 55 on AArch64 (it picks the kernel's half), whatever a
     * tagging allocator puts in the top byte there */
    const uintptr_t a = (uintptr_t)p;
    return (a & DEVSIM_TAG) == DEVSIM_TAG ? (void *)(a ^ DEVSIM_TAG) : NULL;
}

const pile_backend_reg pile__backend_devsim_reg = {"devsim", devsim_probe, devsim_open};
const pile_backend_reg pile__backend_devsim16_reg = {"devsim16", devsim_probe, devsim16_open};
