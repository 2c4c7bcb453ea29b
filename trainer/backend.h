/* The trainer's backend interface: every floating-point operation the
 * model and the optimizer perform, behind one opaque object, so that the
 * CPU fp32 reference (backend_cpu.c) and later backends (trainer/cuda/,
 * NCCL collectives) slot in without touching model.c, optim.c or train.c.
 *
 * Conventions, for every backend:
 *  - Tensors are fp32, row-major, contiguous, and live in the backend's
 *    memory (pile_backend_alloc). On the CPU that is host memory; a device
 *    backend hands out device pointers, so callers never dereference
 *    backend memory except through pile_backend_upload / _download.
 *  - Shapes: B batch rows, T positions, C channels (n_embd), NH heads,
 *    OC output channels, V real vocabulary, Vp padded vocabulary (V <= Vp).
 *  - Linear weights are stored as Hugging Face GPT-2 stores its Conv1D
 *    weights: W[in, out], so y = x W + b. model.safetensors is a plain copy.
 *  - Backward functions ACCUMULATE (+=) into every gradient they write,
 *    including the gradient with respect to their input, so residual
 *    branches and tied weights need no extra adds. Callers zero gradients
 *    (pile_backend_zero) where a sum starts.
 *  - Deterministic: the same inputs with the same thread count give the
 *    same bits (resume is checked bit for bit).
 *  - Not thread-safe: one caller thread per backend object.
 *
 * Functions that cannot fail return void; those that can return 0 or a
 * negative PILE_E* and fill *err. */
#ifndef PILE_BACKEND_H
#define PILE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "pile_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pile_backend pile_backend;

/* Opens a backend by name ("cpu"). threads <= 0: every usable core; more
 * than pile_backend_usable_cores() are capped at it (threads beyond the
 * cores only wait on each other, and OpenMP cannot start tens of
 * thousands). world_size/rank describe data-parallel training (1/0 on the
 * CPU). */
int pile_backend_open(pile_backend **out, const char *name, int threads, pile_err *err);
/* The cores this process may run on (its sched_getaffinity mask, so
 * taskset and cgroup cpusets count), at least 1. */
int pile_backend_usable_cores(void);
void pile_backend_close(pile_backend *be); /* accepts NULL */
const char *pile_backend_name(const pile_backend *be);
int pile_backend_threads(const pile_backend *be);
int pile_backend_world_size(const pile_backend *be);
int pile_backend_rank(const pile_backend *be);

/* The BLAS kernel family to ask for, or NULL when the one loaded is fine.
 * OpenBLAS picks its kernels when the library loads, by CPU model, and a
 * release older than the CPU falls back to its pre-AVX "Prescott" kernels
 * (OpenBLAS 0.3.21 on Xeon 5th generation: 5-10x slower sgemm). The
 * choice cannot be changed once loaded, so a program's main may set
 * OPENBLAS_CORETYPE to this value and restart itself, when the user has not
 * set it. Decided from the CPU's features (AVX-512 -> SKYLAKEX, AVX2 ->
 * HASWELL). */
const char *pile_backend_blas_coretype_hint(void);

/* ------------------------------------------------------------- memory */

/* Zeroed memory of `bytes` in the backend, aligned to 64 bytes; NULL on
 * out-of-memory. Freed with pile_backend_free (accepts NULL). */
void *pile_backend_alloc(pile_backend *be, size_t bytes);
void pile_backend_free(pile_backend *be, void *p);
void pile_backend_upload(pile_backend *be, void *dst, const void *host_src, size_t bytes);
void pile_backend_download(pile_backend *be, void *host_dst, const void *src, size_t bytes);
void pile_backend_zero(pile_backend *be, void *p, size_t bytes);
/* Bytes of memory the backend holds now (its allocations). */
size_t pile_backend_bytes_in_use(const pile_backend *be);

/* ------------------------------------------------------------- forward
 * and backward ops. Integer arrays (tokens, targets, doc_start) are in
 * backend memory like the floats. */

/* out[B*T, C] = wte[tokens[b,t]] + wpe[t]. */
void pile_backend_embed_fwd(pile_backend *be, float *out, const int32_t *tokens, const float *wte,
                            const float *wpe, int B, int T, int C);
/* dwte[tokens[b,t]] += dout[b,t]; dwpe[t] += dout[b,t]. */
void pile_backend_embed_bwd(pile_backend *be, float *dwte, float *dwpe, const float *dout,
                            const int32_t *tokens, int B, int T, int C);

/* LayerNorm over the last dimension, eps 1e-5 (GPT-2's). mean and rstd
 * [N] are saved for the backward. */
void pile_backend_layernorm_fwd(pile_backend *be, float *out, float *mean, float *rstd, const float *inp,
                                const float *w, const float *b, int N, int C);
void pile_backend_layernorm_bwd(pile_backend *be, float *dinp, float *dw, float *db, const float *dout,
                                const float *inp, const float *w, const float *mean, const float *rstd, int N,
                                int C);

/* out[N, OC] = inp[N, IC] W[IC, OC] (+ bias[OC] when bias != NULL). */
void pile_backend_matmul_fwd(pile_backend *be, float *out, const float *inp, const float *W, const float *bias,
                             int N, int IC, int OC);
/* dinp += dout W^T; dW += inp^T dout; dbias += column sums of dout
 * (dbias may be NULL; dinp may be NULL when the input needs no gradient). */
void pile_backend_matmul_bwd(pile_backend *be, float *dinp, float *dW, float *dbias, const float *dout,
                             const float *inp, const float *W, int N, int IC, int OC);

/* Logits over the tied embedding: out[N, Vp] = inp[N, C] wte[Vp, C]^T. */
void pile_backend_logits_fwd(pile_backend *be, float *out, const float *inp, const float *wte, int N, int C,
                             int Vp);
/* dinp += dout wte; dwte += dout^T inp. */
void pile_backend_logits_bwd(pile_backend *be, float *dinp, float *dwte, const float *dout, const float *inp,
                             const float *wte, int N, int C, int Vp);

/* Causal multi-head self-attention, scale 1/sqrt(C/NH).
 * qkv[B, T, 3C] holds q, k, v in that order (HF c_attn's output).
 * doc_start: NULL, or [B, T] with the first position each position may
 * attend to (<= t): attention then never crosses a document start.
 * out[B, T, C] (heads concatenated).
 *
 * What the forward keeps for the backward is the backend's choice: the
 * forward fills `saved` (saved_bytes large, backend memory, opaque to the
 * caller) and the backward reads it, with the same qkv, out, doc_start and
 * shapes. Both use `scratch` (scratch_bytes large) as transient work space
 * whose contents do not matter between calls, so one scratch serves every
 * layer. A caller sizes both once for its largest B and T: the sizes never
 * decrease as B or T grow, so those buffers serve any smaller call. The CPU
 * backend saves one log-sum-exp per row ([B, NH, T] floats) and recomputes
 * the probabilities block by block in the backward (FlashAttention-2), so
 * nothing of size T x T is ever stored. */
size_t pile_backend_attention_saved_bytes(const pile_backend *be, int B, int T, int C, int NH);
size_t pile_backend_attention_scratch_bytes(const pile_backend *be, int B, int T, int C, int NH);
void pile_backend_attention_fwd(pile_backend *be, float *out, void *saved, void *scratch, const float *qkv,
                                const int32_t *doc_start, int B, int T, int C, int NH);
/* dqkv += d(qkv), given dout = d(out) and the forward's qkv, out and saved. */
void pile_backend_attention_bwd(pile_backend *be, float *dqkv, void *scratch, const float *dout, const float *qkv,
                                const float *out, const void *saved, const int32_t *doc_start, int B, int T, int C,
                                int NH);

/* One query row against a key/value cache: incremental decoding's
 * attention, the same function as pile_backend_attention_fwd's row t
 * without doc_start. q[C] is the query of position t (the first C floats
 * of c_attn's output row); kcache and vcache are [Tmax, C] with row s
 * holding position s's key / value, heads concatenated as in qkv (so
 * appending a position is a copy of C floats of c_attn's output: k at
 * offset C, v at 2C). Rows 0..t are read and must be filled; Tmax does not
 * enter (the row stride is C). att[NH, t+1] is scratch that receives the
 * softmax probabilities; out[C] (heads concatenated). Deterministic, and
 * independent of the thread count. */
void pile_backend_attention_decode(pile_backend *be, float *out, float *att, const float *q, const float *kcache,
                                   const float *vcache, int t, int C, int NH);

/* GELU, tanh approximation (HF "gelu_new"). */
void pile_backend_gelu_fwd(pile_backend *be, float *out, const float *inp, size_t n);
void pile_backend_gelu_bwd(pile_backend *be, float *dinp, const float *inp, const float *dout, size_t n);

/* dst[0..bytes) = src[0..bytes), both in backend memory, not overlapping. */
void pile_backend_copy(pile_backend *be, void *dst, const void *src, size_t bytes);

/* out = a + b (out may alias a or b). */
void pile_backend_add(pile_backend *be, float *out, const float *a, const float *b, size_t n);

/* Inverted dropout with probability p: x *= keep / (1 - p), where keep is
 * a pure function of (seed, i), so no RNG state exists and a resumed run
 * draws the same masks. p == 0 leaves x untouched. The backward applies
 * the same mask to the gradient. */
void pile_backend_dropout(pile_backend *be, float *x, size_t n, float p, uint64_t seed);

/* Softmax cross-entropy over the first V of Vp logits per row (the padded
 * columns never get probability). targets[N]: < 0 means no loss there.
 * Per row: losses[i] = -log softmax(logits[i])[targets[i]] (0 where
 * ignored); correct[i] = 1 if argmax over the V columns equals the target
 * (ties: lowest id), else 0.
 * When grad_scale != 0, logits is overwritten with the gradient of
 * grad_scale * sum(losses): (softmax - onehot) * grad_scale on real
 * columns, 0 on padded columns and on ignored rows. losses and correct are
 * backend memory of N floats / N int32. */
void pile_backend_softmax_ce(pile_backend *be, float *logits, float *losses, int32_t *correct,
                             const int32_t *targets, int N, int V, int Vp, float grad_scale);

/* ----------------------------------------------------------- optimizer */

/* Sum of squares of x[0..n), accumulated in double. */
double pile_backend_sumsq(pile_backend *be, const float *x, size_t n);
/* x *= s. */
void pile_backend_scale(pile_backend *be, float *x, size_t n, float s);
/* One AdamW step as torch.optim.AdamW computes it (decoupled decay):
 *   p -= lr * wd * p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 *   p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 * t is the 1-based step count. */
void pile_backend_adamw(pile_backend *be, float *p, const float *g, float *m, float *v, size_t n, float lr,
                        float beta1, float beta2, float eps, float wd, int64_t t);

/* --------------------------------------------------------- collectives */

/* Sums x over all ranks in place (no-op for world size 1). */
int pile_backend_allreduce_sum(pile_backend *be, float *x, size_t n, pile_err *err);

#ifdef __cplusplus
}
#endif

#endif
