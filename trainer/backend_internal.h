/* What a backend implementation (trainer/cpu/, trainer/cuda/) fills in:
 * its table of operations and its registry entry. backend.c dispatches
 * every public pile_backend_* call through the table after checking the
 * operands (dtypes, sizes, owner), so an implementation only ever sees
 * tensors that are its own, of dtypes it said it takes and large enough
 * for the shapes given; absent optional operands have data NULL. Nothing
 * outside backend implementations and backend.c includes this header. */
#ifndef PILE_BACKEND_INTERNAL_H
#define PILE_BACKEND_INTERNAL_H

#include <stdarg.h>

#include "backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pile_backend_i {
    void (*close)(pile_backend *be); /* frees ctx; the struct itself is backend.c's */
    int (*supports)(const pile_backend *be, pile_op op, pile_dtype dt);
    /* Bytes of zeroed, 64-byte aligned memory, or NULL. */
    void *(*alloc)(pile_backend *be, size_t bytes);
    void (*free)(pile_backend *be, void *p);
    size_t (*bytes_in_use)(const pile_backend *be);
    /* pile_backend_reserve: takes `bytes` up front for the allocations to
     * come; NULL where there is nothing to do (the CPU's). */
    int (*reserve)(pile_backend *be, size_t bytes, pile_err *err);
    /* pile_backend_reserve_scratch (B, T, C checked positive); NULL where
     * no op needs work space of the backend's own (the CPU's). */
    int (*reserve_scratch)(pile_backend *be, int B, int T, int C, pile_err *err);
    /* Waits for the queued work; an asynchronous fault found there is
     * recorded with pile__backend_fail (sync then reports it). */
    void (*sync)(pile_backend *be);

    void (*upload)(pile_backend *be, pile_tensor dst, const void *host_src, size_t bytes);
    /* Staged uploads (pile_backend_stage_*); all three NULL in a backend
     * without a copy queue, whose staged uploads are plain uploads.
     * stage_reserve: host staging memory of at least `bytes` (backend.c
     * calls it only to grow, after a sync). stage_upload: `bytes` from
     * host_src at byte `offset` of the staging memory and on to dst;
     * offset 0 starts a group (backend.c checks offset + bytes against
     * the reserve). stage_wait: ops queued after it see the group. */
    int (*stage_reserve)(pile_backend *be, size_t bytes, pile_err *err);
    void (*stage_upload)(pile_backend *be, pile_tensor dst, const void *host_src, size_t bytes, size_t offset);
    void (*stage_wait)(pile_backend *be);
    /* The communication stream (pile_backend_comm_stream, its two
     * orderings and its marks); all five NULL in a backend whose memory
     * is the host's. compute_wait_mark is given a mark in 1..the latest
     * (backend.c passes 0 by). */
    void *(*comm_stream)(pile_backend *be);
    void (*comm_wait_compute)(pile_backend *be);
    void (*compute_wait_comm)(pile_backend *be);
    uint64_t (*comm_mark)(pile_backend *be);
    void (*compute_wait_mark)(pile_backend *be, uint64_t mark);
    void (*download)(pile_backend *be, void *host_dst, pile_tensor src, size_t bytes);
    void (*copy)(pile_backend *be, pile_tensor dst, pile_tensor src, size_t bytes);
    void (*zero)(pile_backend *be, pile_tensor t, size_t bytes);
    void (*convert)(pile_backend *be, pile_tensor dst, pile_tensor src, size_t n);
    /* Rounds F32 t[0..n) in place to p's precision (pile_precision_round);
     * NULL in a backend that cannot emulate 16-bit storage. */
    void (*round)(pile_backend *be, pile_tensor t, size_t n, pile_precision p);

    void (*embed_fwd)(pile_backend *be, pile_tensor out, pile_tensor tokens, pile_tensor wte, pile_tensor wpe, int B, int T, int C);
    void (*embed_bwd)(pile_backend *be, pile_tensor dwte, pile_tensor dwpe, pile_tensor dout, pile_tensor tokens, int B, int T, int C);
    void (*layernorm_fwd)(pile_backend *be, pile_tensor out, pile_tensor mean, pile_tensor rstd, pile_tensor inp, pile_tensor w, pile_tensor b, int N, int C);
    void (*layernorm_bwd)(pile_backend *be, pile_tensor dinp, pile_tensor dw, pile_tensor db, pile_tensor dout, pile_tensor inp, pile_tensor w, pile_tensor mean, pile_tensor rstd, int N,
                          int C);
    void (*matmul_fwd)(pile_backend *be, pile_tensor out, pile_tensor inp, pile_tensor W, pile_tensor bias, int N, int IC, int OC);
    void (*matmul_bwd)(pile_backend *be, pile_tensor dinp, pile_tensor dW, pile_tensor dbias, pile_tensor dout, pile_tensor inp, pile_tensor W, int N, int IC, int OC);
    void (*logits_fwd)(pile_backend *be, pile_tensor out, pile_tensor inp, pile_tensor wte, int N, int C, int Vp);
    void (*logits_bwd)(pile_backend *be, pile_tensor dinp, pile_tensor dwte, pile_tensor dout, pile_tensor inp, pile_tensor wte, int N, int C, int Vp);
    size_t (*attention_saved_bytes)(const pile_backend *be, int B, int T, int C, int NH);
    size_t (*attention_scratch_bytes)(const pile_backend *be, int B, int T, int C, int NH);
    void (*attention_fwd)(pile_backend *be, pile_tensor out, pile_tensor saved, pile_tensor scratch, pile_tensor qkv, pile_tensor doc_start, int B, int T, int C,
                          int NH);
    void (*attention_bwd)(pile_backend *be, pile_tensor dqkv, pile_tensor scratch, pile_tensor dout, pile_tensor qkv, pile_tensor out, pile_tensor saved, pile_tensor doc_start,
                          int B, int T, int C, int NH);
    void (*attention_decode)(pile_backend *be, pile_tensor out, pile_tensor att, pile_tensor q, pile_tensor kcache, pile_tensor vcache, int t, int C, int NH);
    void (*gelu_fwd)(pile_backend *be, pile_tensor out, pile_tensor inp, size_t n);
    void (*gelu_bwd)(pile_backend *be, pile_tensor dinp, pile_tensor inp, pile_tensor dout, size_t n);
    void (*add)(pile_backend *be, pile_tensor out, pile_tensor a, pile_tensor b, size_t n);
    void (*dropout)(pile_backend *be, pile_tensor x, size_t n, float p, uint64_t seed);
    void (*softmax_ce)(pile_backend *be, pile_tensor logits, pile_tensor losses, pile_tensor correct, pile_tensor targets, int N, int V, int Vp,
                       float grad_scale);
    double (*sumsq)(pile_backend *be, pile_tensor x, size_t n);
    void (*scale)(pile_backend *be, pile_tensor x, size_t n, float s);
    void (*adamw)(pile_backend *be, pile_tensor p, pile_tensor g, pile_tensor m, pile_tensor v, size_t n, float lr, float beta1, float beta2, float eps,
                  float wd, int64_t t);
    /* pile_backend_device_name; NULL (the entry, or what it returns): no device */
    const char *(*device_name)(const pile_backend *be);
} pile_backend_i;

/* The generic part of every backend object (backend.c allocates it). */
struct pile_backend {
    const pile_backend_i *iface;
    void *ctx;          /* the implementation's state */
    const char *name;
    int threads;        /* host threads it may use */
    int host_memory;    /* its memory is host memory */
    const char *device_comm; /* pile_backend_device_comm: NULL for host memory */
    pile_dtype emulate; /* F32: none; BF16 / F16: compute outputs rounded (pile_backend_set_emulation) */
    size_t bytes_peak;  /* the most bytes_in_use said after an allocation */
    size_t stage_cap;   /* staging memory reserved (pile_backend_stage_reserve), bytes */
    size_t stage_used;  /* of it, taken by the open group's uploads; 0: no group open */
    int failed;         /* the sticky error is set: ops do nothing */
    pile_err error;
};

/* A registry entry (backend.c lists them). */
typedef struct pile_backend_reg {
    const char *name;
    /* 0 when the backend can be opened in this process, else PILE_EIO
     * with why (no device, a library that does not load). */
    int (*probe)(pile_err *err);
    /* Fills be->iface, ctx, host_memory, device_comm; be->threads holds the capped
     * request and may be changed. */
    int (*open)(pile_backend *be, pile_err *err);
} pile_backend_reg;

extern const pile_backend_reg pile__backend_cpu_reg;
extern const pile_backend_reg pile__backend_devsim_reg;
extern const pile_backend_reg pile__backend_devsim16_reg;
#ifdef PILE_HAVE_CUDA
extern const pile_backend_reg pile__backend_cuda_reg;
#endif

/* Records the backend's sticky error (the first one wins): "<op>: <why>". */
void pile__backend_fail(pile_backend *be, int code, const char *op, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#ifdef __cplusplus
}
#endif

#endif
