/* What the files of the CUDA backend share (C++ / CUDA only; nothing
 * outside trainer/cuda/ includes it): the backend's state, the helpers
 * every op uses, and one function per entry of the ops table
 * (backend_internal.h), each defined in the file that owns that group:
 *  - backend_cuda.cu: the registry entry, the state, memory, copies,
 *    sync, the table itself;
 *  - matmul.cu: matmul and logits through cuBLASLt;
 *  - kernels_*.cu (kernels.cuh holds what they share): element-wise
 *    (convert, GELU, add, dropout), norm (embeddings, LayerNorm),
 *    classifier (softmax cross-entropy), optim (sumsq, scale, AdamW);
 *  - attention.cu: causal attention (forward, backward, decode).
 * Every op function has exactly the table's signature and is called only
 * after backend.c checked its operands (dtypes, sizes, owner): it
 * enqueues its kernels on ctx->stream and records a launch failure with
 * pile__cuda_check. No floating-point atomics anywhere: the same inputs
 * give the same bits on the same GPU. */
#ifndef PILE_CUDA_INTERNAL_H
#define PILE_CUDA_INTERNAL_H

#ifndef PILE_CUDA_SIM /* tests/cuda_sim_runtime.h stands in for both */
#include <cuda_runtime.h>
#include <cublasLt.h>
#endif
#include <stddef.h>
#include <stdint.h>

#include "backend_internal.h"
#include "cuda_sizes.h"

typedef struct pile_cuda_ctx {
    int device;
    cudaDeviceProp prop;
    cudaStream_t stream; /* every op's kernels, in call order */
    cudaStream_t copy_stream; /* host-to-device prefetch of the next batch */
    cublasLtHandle_t lt;
    void *lt_workspace; /* cuBLASLt's workspace for `stream` */
    size_t lt_workspace_bytes;
    /* Device scratch that ops use for partial results (per-block sums of
     * a deterministic reduction) and embed_bwd's sort: pile__cuda_scratch.
     * Taken once (pile_backend_reserve_scratch), never grown. */
    void *scratch;
    size_t scratch_bytes;
    void *matmul_plans; /* matmul.cu's plan cache (its own type) */
    size_t bytes_in_use, bytes_peak;
} pile_cuda_ctx;

/* PILE_LAUNCH(grid, block, stream, kernel)(args...) is
 * kernel<<<grid, block, 0, stream>>>(args...): the same launch under nvcc
 * (the same machine code), and under PILE_CUDA_SIM (tests/cuda_sim.h) the
 * kernel run on the host by cuda_sim::launch, so that a test runs the ops'
 * own host code, launch geometry included. */
#ifdef PILE_CUDA_SIM
#define PILE_LAUNCH(grid, block, stream, ...) cuda_sim::launcher((grid), (block), (stream)).run(__VA_ARGS__)
#else
#define PILE_LAUNCH(grid, block, stream, ...) __VA_ARGS__<<<(grid), (block), 0, (stream)>>>
#endif

static inline pile_cuda_ctx *pile__cuda_ctx(pile_backend *be) { return (pile_cuda_ctx *)be->ctx; }

/* The device scratch, at least `bytes` of it, which every op shares (ops
 * run in stream order, so an op may use it freely until it returns). An
 * op asks for its figure of cuda_sizes.h at its shape, which the
 * reservation for the run's shapes covers; more than was reserved (or
 * none reserved) is a planning bug: NULL, with the sticky error naming
 * `op` and both sizes. It never allocates. */
void *pile__cuda_scratch(pile_backend *be, size_t bytes, const char *op);
/* What pile_backend_reserve_scratch takes for micro-batches of up to
 * B x T, width C (cuda_sizes.h's pile__cuda_scratch_size). */
size_t pile__cuda_scratch_bytes(int B, int T, int C);

/* After a launch: records cudaGetLastError as the sticky error of `op`.
 * Returns 0 when all is well. */
int pile__cuda_check(pile_backend *be, const char *op);

/* ---------------------------------------------------- the ops (table) */
/* backend_cuda.cu */
void pile__cuda_upload(pile_backend *be, pile_tensor dst, const void *host_src, size_t bytes);
void pile__cuda_download(pile_backend *be, void *host_dst, pile_tensor src, size_t bytes);
void pile__cuda_copy(pile_backend *be, pile_tensor dst, pile_tensor src, size_t bytes);
void pile__cuda_zero(pile_backend *be, pile_tensor t, size_t bytes);

/* matmul.cu */
void pile__cuda_matmul_fwd(pile_backend *be, pile_tensor out, pile_tensor inp, pile_tensor W, pile_tensor bias, int N, int IC, int OC);
void pile__cuda_matmul_bwd(pile_backend *be, pile_tensor dinp, pile_tensor dW, pile_tensor dbias, pile_tensor dout, pile_tensor inp, pile_tensor W, int N, int IC,
                           int OC);
void pile__cuda_logits_fwd(pile_backend *be, pile_tensor out, pile_tensor inp, pile_tensor wte, int N, int C, int Vp);
void pile__cuda_logits_bwd(pile_backend *be, pile_tensor dinp, pile_tensor dwte, pile_tensor dout, pile_tensor inp, pile_tensor wte, int N, int C, int Vp);
void pile__cuda_matmul_close(pile_backend *be); /* frees the plan cache */

/* kernels_elementwise.cu, kernels_norm.cu, kernels_classifier.cu, kernels_optim.cu */
void pile__cuda_convert(pile_backend *be, pile_tensor dst, pile_tensor src, size_t n);
void pile__cuda_embed_fwd(pile_backend *be, pile_tensor out, pile_tensor tokens, pile_tensor wte, pile_tensor wpe, int B, int T, int C);
void pile__cuda_embed_bwd(pile_backend *be, pile_tensor dwte, pile_tensor dwpe, pile_tensor dout, pile_tensor tokens, int B, int T, int C);
/* CUB's temporary storage for embed_bwd's sort of n (token, position)
 * pairs on key bits [0, end_bit), as CUB says on the current device. */
cudaError_t pile__cuda_sort_temp_bytes(int n, int end_bit, cudaStream_t stream, size_t *bytes);
void pile__cuda_layernorm_fwd(pile_backend *be, pile_tensor out, pile_tensor mean, pile_tensor rstd, pile_tensor inp, pile_tensor w, pile_tensor b, int N, int C);
void pile__cuda_layernorm_bwd(pile_backend *be, pile_tensor dinp, pile_tensor dw, pile_tensor db, pile_tensor dout, pile_tensor inp, pile_tensor w, pile_tensor mean,
                              pile_tensor rstd, int N, int C);
void pile__cuda_gelu_fwd(pile_backend *be, pile_tensor out, pile_tensor inp, size_t n);
void pile__cuda_gelu_bwd(pile_backend *be, pile_tensor dinp, pile_tensor inp, pile_tensor dout, size_t n);
void pile__cuda_add(pile_backend *be, pile_tensor out, pile_tensor a, pile_tensor b, size_t n);
void pile__cuda_dropout(pile_backend *be, pile_tensor x, size_t n, float p, uint64_t seed);
void pile__cuda_softmax_ce(pile_backend *be, pile_tensor logits, pile_tensor losses, pile_tensor correct, pile_tensor targets, int N, int V, int Vp, float grad_scale);
double pile__cuda_sumsq(pile_backend *be, pile_tensor x, size_t n);
void pile__cuda_scale(pile_backend *be, pile_tensor x, size_t n, float s);
void pile__cuda_adamw(pile_backend *be, pile_tensor p, pile_tensor g, pile_tensor m, pile_tensor v, size_t n, float lr, float beta1, float beta2, float eps, float wd,
                      int64_t t);

/* attention.cu */
size_t pile__cuda_attention_saved_bytes(const pile_backend *be, int B, int T, int C, int NH);
size_t pile__cuda_attention_scratch_bytes(const pile_backend *be, int B, int T, int C, int NH);
void pile__cuda_attention_fwd(pile_backend *be, pile_tensor out, pile_tensor saved, pile_tensor scratch, pile_tensor qkv, pile_tensor doc_start, int B, int T, int C,
                              int NH);
void pile__cuda_attention_bwd(pile_backend *be, pile_tensor dqkv, pile_tensor scratch, pile_tensor dout, pile_tensor qkv, pile_tensor out, pile_tensor saved,
                              pile_tensor doc_start, int B, int T, int C, int NH);
void pile__cuda_attention_decode(pile_backend *be, pile_tensor out, pile_tensor att, pile_tensor q, pile_tensor kcache, pile_tensor vcache, int t, int C, int NH);

#endif
