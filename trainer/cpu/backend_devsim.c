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
 * inner owner. No global state: the tag is a constant. */
#include <stdint.h>
#include <stdlib.h>

#include "backend_internal.h"

#define DEVSIM_TAG ((uintptr_t)1 << 62 | (uintptr_t)1 << 55)

typedef struct devsim_ctx {
    pile_backend cpu; /* the inner CPU backend: its ops do the work */
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

static void devsim_close(pile_backend *be)
{
    pile_backend *c = inner(be);
    if (c->iface) c->iface->close(c);
    free(be->ctx);
}

static int devsim_supports(const pile_backend *be, pile_op op, pile_dtype dt)
{
    const pile_backend *c = inner(be);
    return c->iface->supports(c, op, dt);
}

static void *devsim_alloc(pile_backend *be, size_t bytes)
{
    pile_backend *c = inner(be);
    return tag(c->iface->alloc(c, bytes));
}

static void devsim_free(pile_backend *be, void *p)
{
    pile_backend *c = inner(be);
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
}

/* Every op below: the CPU's, on the operands translated (U). */
#define U(x) in(be, x)

static void devsim_upload(pile_backend *be, pile_tensor dst, const void *host_src, size_t bytes)
{
    pile_backend *c = inner(be);
    c->iface->upload(c, U(dst), host_src, bytes);
    settle(be);
}

static void devsim_download(pile_backend *be, void *host_dst, pile_tensor src, size_t bytes)
{
    pile_backend *c = inner(be);
    c->iface->download(c, host_dst, U(src), bytes);
    settle(be);
}

static void devsim_copy(pile_backend *be, pile_tensor dst, pile_tensor src, size_t bytes)
{
    pile_backend *c = inner(be);
    c->iface->copy(c, U(dst), U(src), bytes);
    settle(be);
}

static void devsim_zero(pile_backend *be, pile_tensor t, size_t bytes)
{
    pile_backend *c = inner(be);
    c->iface->zero(c, U(t), bytes);
    settle(be);
}

static void devsim_convert(pile_backend *be, pile_tensor dst, pile_tensor src, size_t n)
{
    pile_backend *c = inner(be);
    c->iface->convert(c, U(dst), U(src), n);
    settle(be);
}

static void devsim_round(pile_backend *be, pile_tensor t, size_t n, pile_precision p)
{
    pile_backend *c = inner(be);
    c->iface->round(c, U(t), n, p);
    settle(be);
}

static void devsim_embed_fwd(pile_backend *be, pile_tensor out, pile_tensor tokens, pile_tensor wte, pile_tensor wpe,
                             int B, int T, int C)
{
    pile_backend *c = inner(be);
    c->iface->embed_fwd(c, U(out), U(tokens), U(wte), U(wpe), B, T, C);
    settle(be);
}

static void devsim_embed_bwd(pile_backend *be, pile_tensor dwte, pile_tensor dwpe, pile_tensor dout,
                             pile_tensor tokens, int B, int T, int C)
{
    pile_backend *c = inner(be);
    c->iface->embed_bwd(c, U(dwte), U(dwpe), U(dout), U(tokens), B, T, C);
    settle(be);
}

static void devsim_layernorm_fwd(pile_backend *be, pile_tensor out, pile_tensor mean, pile_tensor rstd,
                                 pile_tensor inp, pile_tensor w, pile_tensor b, int N, int C)
{
    pile_backend *c = inner(be);
    c->iface->layernorm_fwd(c, U(out), U(mean), U(rstd), U(inp), U(w), U(b), N, C);
    settle(be);
}

static void devsim_layernorm_bwd(pile_backend *be, pile_tensor dinp, pile_tensor dw, pile_tensor db,
                                 pile_tensor dout, pile_tensor inp, pile_tensor w, pile_tensor mean,
                                 pile_tensor rstd, int N, int C)
{
    pile_backend *c = inner(be);
    c->iface->layernorm_bwd(c, U(dinp), U(dw), U(db), U(dout), U(inp), U(w), U(mean), U(rstd), N, C);
    settle(be);
}

static void devsim_matmul_fwd(pile_backend *be, pile_tensor out, pile_tensor inp, pile_tensor W, pile_tensor bias,
                              int N, int IC, int OC)
{
    pile_backend *c = inner(be);
    c->iface->matmul_fwd(c, U(out), U(inp), U(W), U(bias), N, IC, OC);
    settle(be);
}

static void devsim_matmul_bwd(pile_backend *be, pile_tensor dinp, pile_tensor dW, pile_tensor dbias,
                              pile_tensor dout, pile_tensor inp, pile_tensor W, int N, int IC, int OC)
{
    pile_backend *c = inner(be);
    c->iface->matmul_bwd(c, U(dinp), U(dW), U(dbias), U(dout), U(inp), U(W), N, IC, OC);
    settle(be);
}

static void devsim_logits_fwd(pile_backend *be, pile_tensor out, pile_tensor inp, pile_tensor wte, int N, int C,
                              int Vp)
{
    pile_backend *c = inner(be);
    c->iface->logits_fwd(c, U(out), U(inp), U(wte), N, C, Vp);
    settle(be);
}

static void devsim_logits_bwd(pile_backend *be, pile_tensor dinp, pile_tensor dwte, pile_tensor dout,
                              pile_tensor inp, pile_tensor wte, int N, int C, int Vp)
{
    pile_backend *c = inner(be);
    c->iface->logits_bwd(c, U(dinp), U(dwte), U(dout), U(inp), U(wte), N, C, Vp);
    settle(be);
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
    pile_backend *c = inner(be);
    c->iface->attention_fwd(c, U(out), U(saved), U(scratch), U(qkv), U(doc_start), B, T, C, NH);
    settle(be);
}

static void devsim_attention_bwd(pile_backend *be, pile_tensor dqkv, pile_tensor scratch, pile_tensor dout,
                                 pile_tensor qkv, pile_tensor out, pile_tensor saved, pile_tensor doc_start, int B,
                                 int T, int C, int NH)
{
    pile_backend *c = inner(be);
    c->iface->attention_bwd(c, U(dqkv), U(scratch), U(dout), U(qkv), U(out), U(saved), U(doc_start), B, T,
                                     C, NH);
    settle(be);
}

static void devsim_attention_decode(pile_backend *be, pile_tensor out, pile_tensor att, pile_tensor q,
                                    pile_tensor kcache, pile_tensor vcache, int t, int C, int NH)
{
    pile_backend *c = inner(be);
    c->iface->attention_decode(c, U(out), U(att), U(q), U(kcache), U(vcache), t, C, NH);
    settle(be);
}

static void devsim_gelu_fwd(pile_backend *be, pile_tensor out, pile_tensor inp, size_t n)
{
    pile_backend *c = inner(be);
    c->iface->gelu_fwd(c, U(out), U(inp), n);
    settle(be);
}

static void devsim_gelu_bwd(pile_backend *be, pile_tensor dinp, pile_tensor inp, pile_tensor dout, size_t n)
{
    pile_backend *c = inner(be);
    c->iface->gelu_bwd(c, U(dinp), U(inp), U(dout), n);
    settle(be);
}

static void devsim_add(pile_backend *be, pile_tensor out, pile_tensor a, pile_tensor b, size_t n)
{
    pile_backend *c = inner(be);
    c->iface->add(c, U(out), U(a), U(b), n);
    settle(be);
}

static void devsim_dropout(pile_backend *be, pile_tensor x, size_t n, float p, uint64_t seed)
{
    pile_backend *c = inner(be);
    c->iface->dropout(c, U(x), n, p, seed);
    settle(be);
}

static void devsim_softmax_ce(pile_backend *be, pile_tensor logits, pile_tensor losses, pile_tensor correct,
                              pile_tensor targets, int N, int V, int Vp, float grad_scale)
{
    pile_backend *c = inner(be);
    c->iface->softmax_ce(c, U(logits), U(losses), U(correct), U(targets), N, V, Vp, grad_scale);
    settle(be);
}

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
}

static void devsim_adamw(pile_backend *be, pile_tensor p, pile_tensor g, pile_tensor m, pile_tensor v, size_t n,
                         float lr, float beta1, float beta2, float eps, float wd, int64_t t)
{
    pile_backend *c = inner(be);
    c->iface->adamw(c, U(p), U(g), U(m), U(v), n, lr, beta1, beta2, eps, wd, t);
    settle(be);
}

#undef U

static const pile_backend_i devsim_iface = {
    .close = devsim_close,
    .supports = devsim_supports,
    .alloc = devsim_alloc,
    .free = devsim_free,
    .bytes_in_use = devsim_bytes_in_use,
    .sync = devsim_sync,
    .upload = devsim_upload,
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

static int devsim_open(pile_backend *be, pile_err *err)
{
    devsim_ctx *d = calloc(1, sizeof *d);
    PILE_RETURN_IF(!d, err, PILE_ENOMEM, "cannot allocate the devsim backend");
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
    return 0;
}

const pile_backend_reg pile__backend_devsim_reg = {"devsim", devsim_probe, devsim_open};
