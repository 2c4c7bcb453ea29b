/* The matrix products of the CUDA backend (matmul and the tied logits,
 * forward and backward) through cuBLASLt, plus the bias gradient's column
 * sums. Read beside backend_cpu.c's cblas_sgemm calls: each product below
 * is the same one, written for cuBLASLt's column-major convention.
 *
 * Row-major to column-major: a row-major X[r, c] (leading dimension c) is
 * the column-major X^T[c, r] with the same leading dimension, so the
 * row-major product Y = A B is computed as the column-major Y^T = B^T A^T:
 * cuBLASLt's first operand is our second. Each call below says its
 * column-major form.
 *
 * Numbers. Inputs in the compute dtype (F32, BF16, F16), products summed
 * in fp32 (CUBLAS_COMPUTE_32F, fp32 scale; in F32 that is plain fp32, no
 * TF32), and the result rounded once to its dtype when it is stored, as
 * the CPU emulation rounds: the forward's bias is added by the epilogue
 * before that one rounding (the CPU adds it inside sgemm's beta = 1), a
 * backward adds into its output (beta = 1) before it. Split-K schemes that
 * keep partial sums in the output dtype (in-place, output-type) would
 * round more often than the CPU does: only no split or fp32 partials are
 * allowed. Weight gradients are F32 outputs of 16-bit inputs (cuBLASLt
 * supports BF16 / F16 A and B with F32 C and D under CUBLAS_COMPUTE_32F).
 * The algorithm is the heuristic's first, never chosen by timing, and
 * kept per shape (the plan cache), so the same inputs give the same bits. */
#include <stdlib.h>
#include <string.h>

#include "cuda_dtype.cuh"
#include "cuda_internal.h"

/* What a plan depends on: the shape, the transposes, the types, the
 * leading dimensions, the epilogue and the operands' alignment (an
 * algorithm chosen for 256-byte aligned pointers may not take a slice's). */
typedef struct plan_key {
    int m, n, k;
    int ta, tb; /* cublasOperation_t */
    int ab, cd; /* cudaDataType of A and B, of C and D */
    int lda, ldb, ldd;
    int bias;
    int align_a, align_b, align_d, align_bias;
} plan_key;

typedef struct plan {
    plan_key key;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t a, b, d;
    cublasLtMatmulAlgo_t algo;
} plan;

typedef struct plan_cache {
    plan *p;
    size_t n, cap;
} plan_cache;

static cudaDataType cuda_type(pile_dtype dt)
{
    return dt == PILE_DTYPE_BF16 ? CUDA_R_16BF : dt == PILE_DTYPE_F16 ? CUDA_R_16F : CUDA_R_32F;
}

/* the largest power of two up to 256 dividing the address */
static int align_of(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    int al = 256;
    while (al > 1 && a % (uintptr_t)al) al /= 2;
    return al;
}

static void plan_destroy(plan *p)
{
    if (p->a) cublasLtMatrixLayoutDestroy(p->a);
    if (p->b) cublasLtMatrixLayoutDestroy(p->b);
    if (p->d) cublasLtMatrixLayoutDestroy(p->d);
    if (p->op) cublasLtMatmulDescDestroy(p->op);
}

void pile__cuda_matmul_close(pile_backend *be)
{
    pile_cuda_ctx *c = pile__cuda_ctx(be);
    plan_cache *pc = (plan_cache *)c->matmul_plans;
    if (!pc) return;
    for (size_t i = 0; i < pc->n; i++) plan_destroy(&pc->p[i]);
    free(pc->p);
    free(pc);
    c->matmul_plans = NULL;
}

/* "cuBLASLt <what>: <status>" as op's sticky error; 0 when st is success */
static int lt_check(pile_backend *be, cublasStatus_t st, const char *op, const char *what)
{
    if (st == CUBLAS_STATUS_SUCCESS) return 0;
    pile__backend_fail(be, PILE_EIO, op, "cuBLASLt %s: %s", what, cublasLtGetStatusString(st));
    return -1;
}

/* Builds the plan for key (bias: the first call's pointer, for the
 * heuristic; each call sets its own). 0, or -1 with the sticky error. */
static int plan_make(pile_backend *be, const char *op, const plan_key *key, const void *bias, plan *p)
{
    pile_cuda_ctx *c = pile__cuda_ctx(be);
    memset(p, 0, sizeof *p);
    p->key = *key;
    const cublasOperation_t ta = (cublasOperation_t)key->ta, tb = (cublasOperation_t)key->tb;
    if (lt_check(be, cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F), op, "matmul descriptor") ||
        lt_check(be, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), op, "TRANSA") ||
        lt_check(be, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), op, "TRANSB"))
        return -1;
    if (key->bias) {
        const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        const cudaDataType bt = (cudaDataType)key->cd; /* the bias is a compute tensor, as D */
        if (lt_check(be, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi), op,
                     "epilogue") ||
            lt_check(be, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt, sizeof bt), op,
                     "bias type") ||
            lt_check(be, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias),
                     op, "bias pointer"))
            return -1;
    }
    /* op(A) is m x k, op(B) k x n, D m x n; stored before the transpose */
    const int ar = ta == CUBLAS_OP_N ? key->m : key->k, ac = ta == CUBLAS_OP_N ? key->k : key->m;
    const int br = tb == CUBLAS_OP_N ? key->k : key->n, bc = tb == CUBLAS_OP_N ? key->n : key->k;
    if (lt_check(be, cublasLtMatrixLayoutCreate(&p->a, (cudaDataType)key->ab, ar, ac, key->lda), op, "layout of A") ||
        lt_check(be, cublasLtMatrixLayoutCreate(&p->b, (cudaDataType)key->ab, br, bc, key->ldb), op, "layout of B") ||
        lt_check(be, cublasLtMatrixLayoutCreate(&p->d, (cudaDataType)key->cd, key->m, key->n, key->ldd), op,
                 "layout of D"))
        return -1;
    cublasLtMatmulPreference_t pref = NULL;
    const uint64_t ws = c->lt_workspace_bytes;
    const uint32_t schemes = CUBLASLT_REDUCTION_SCHEME_NONE | CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
    const uint32_t al_a = (uint32_t)key->align_a, al_b = (uint32_t)key->align_b, al_d = (uint32_t)key->align_d;
    const struct {
        cublasLtMatmulPreferenceAttributes_t attr;
        const void *value;
        size_t size;
    } prefs[] = {
        {CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws},
        {CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &schemes, sizeof schemes},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_a, sizeof al_a},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_b, sizeof al_b},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_d, sizeof al_d},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_d, sizeof al_d},
    };
    int rc = lt_check(be, cublasLtMatmulPreferenceCreate(&pref), op, "preference");
    for (size_t i = 0; !rc && i < sizeof prefs / sizeof prefs[0]; i++)
        rc = lt_check(be, cublasLtMatmulPreferenceSetAttribute(pref, prefs[i].attr, prefs[i].value, prefs[i].size), op,
                      "preference");
    cublasLtMatmulHeuristicResult_t res;
    memset(&res, 0, sizeof res);
    int found = 0;
    cublasStatus_t hs = CUBLAS_STATUS_SUCCESS;
    if (!rc) hs = cublasLtMatmulAlgoGetHeuristic(c->lt, p->op, p->a, p->b, p->d, p->d, pref, 1, &res, &found);
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (rc) return -1;
    /* No algorithm comes back as CUBLAS_STATUS_NOT_SUPPORTED or as no
     * result, and a result counts only when its state is success
     * (cublasLtMatmulAlgoGetHeuristic's documentation): either way the
     * message names the whole problem, which is what a first run on a new
     * GPU or library needs to see */
    if (hs != CUBLAS_STATUS_SUCCESS || found < 1 || res.state != CUBLAS_STATUS_SUCCESS) {
        pile__backend_fail(be, PILE_EIO, op,
                           "cuBLASLt has no algorithm for m %d n %d k %d, op(A) %s op(B) %s, types %d (A, B) %d (D), "
                           "ld %d %d %d, alignment %d %d %d, bias %s, workspace %zu bytes: %s",
                           key->m, key->n, key->k, key->ta == CUBLAS_OP_N ? "N" : "T",
                           key->tb == CUBLAS_OP_N ? "N" : "T", key->ab, key->cd, key->lda, key->ldb, key->ldd, key->align_a, key->align_b, key->align_d,
                           key->bias ? "yes" : "no", c->lt_workspace_bytes,
                           cublasLtGetStatusString(hs != CUBLAS_STATUS_SUCCESS ? hs
                                                   : found < 1               ? CUBLAS_STATUS_NOT_SUPPORTED
                                                                             : res.state));
        return -1;
    }
    p->algo = res.algo;
    return 0;
}

/* The plan for key, made on first use. NULL with the sticky error. */
static plan *plan_get(pile_backend *be, const char *op, const plan_key *key, const void *bias)
{
    pile_cuda_ctx *c = pile__cuda_ctx(be);
    plan_cache *pc = (plan_cache *)c->matmul_plans;
    if (!pc) {
        pc = (plan_cache *)calloc(1, sizeof *pc);
        if (!pc) {
            pile__backend_fail(be, PILE_ENOMEM, op, "out of memory");
            return NULL;
        }
        c->matmul_plans = pc;
    }
    for (size_t i = 0; i < pc->n; i++)
        if (!memcmp(&pc->p[i].key, key, sizeof *key)) return &pc->p[i];
    if (pc->n == pc->cap) {
        size_t cap = pc->cap ? 2 * pc->cap : 16;
        plan *np = (plan *)realloc(pc->p, cap * sizeof *np);
        if (!np) {
            pile__backend_fail(be, PILE_ENOMEM, op, "out of memory");
            return NULL;
        }
        pc->p = np;
        pc->cap = cap;
    }
    plan *p = &pc->p[pc->n];
    if (plan_make(be, op, key, bias, p) < 0) {
        plan_destroy(p);
        return NULL;
    }
    pc->n++;
    return p;
}

/* out[rows, cols] (row-major) = bias broadcast over rows, or 0: a product
 * over k = 0 terms, which cuBLASLt does not take */
template <typename T> __global__ void fill_rows(T *out, const T *bias, int rows, int cols)
{
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)rows * cols) return;
    out[i] = bias ? bias[i % cols] : pile_cuda_store<T>(0.0f);
}

/* Column-major D[m, n] (ld ldd) = op(A) op(B) + beta D (+ bias[m] on
 * every column), types ab (A, B) and cd (D, bias). */
static void lt_matmul(pile_backend *be, const char *op, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                      const void *A, int lda, const void *B, int ldb, pile_dtype ab, void *D, int ldd, pile_dtype cd,
                      float beta, const void *bias)
{
    pile_cuda_ctx *c = pile__cuda_ctx(be);
    if (be->failed || m == 0 || n == 0) return;
    if (k == 0) {
        if (beta != 0.0f && !bias) return; /* D += nothing */
        if (beta != 0.0f) {
            pile__backend_fail(be, PILE_EINVAL, op, "a bias added to a product over 0 terms");
            return;
        }
        /* only the forward (ldd == m, D contiguous) passes beta 0 */
        const size_t total = (size_t)m * n;
        const unsigned blocks = (unsigned)((total + 255) / 256);
        PILE_CUDA_DISPATCH(cd, T, PILE_LAUNCH(blocks, 256, c->stream, fill_rows<T>)((T *)D, (const T *)bias, n, m));
        pile__cuda_check(be, op);
        return;
    }
    plan_key key;
    memset(&key, 0, sizeof key);
    key.m = m, key.n = n, key.k = k;
    key.ta = ta, key.tb = tb;
    key.ab = cuda_type(ab), key.cd = cuda_type(cd);
    key.lda = lda, key.ldb = ldb, key.ldd = ldd;
    key.bias = bias != NULL;
    key.align_a = align_of(A), key.align_b = align_of(B), key.align_d = align_of(D);
    key.align_bias = bias ? align_of(bias) : 0;
    plan *p = plan_get(be, op, &key, bias);
    if (!p) return;
    if (bias &&
        lt_check(be, cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias), op,
                 "bias pointer"))
        return;
    const float alpha = 1.0f;
    lt_check(be,
             cublasLtMatmul(c->lt, p->op, &alpha, A, p->a, B, p->b, &beta, D, p->d, D, p->d, &p->algo, c->lt_workspace,
                            c->lt_workspace_bytes, c->stream),
             op, "matmul");
    pile__cuda_check(be, op);
}

/* out[N, OC] = inp[N, IC] W[IC, OC] + bias. Column-major:
 * out^T[OC, N] = W^T[OC, IC] inp^T[IC, N], both as stored (no transpose),
 * bias[OC] down each column by the epilogue. */
void pile__cuda_matmul_fwd(pile_backend *be, pile_tensor out, pile_tensor inp, pile_tensor W, pile_tensor bias, int N,
                           int IC, int OC)
{
    lt_matmul(be, "matmul_fwd", CUBLAS_OP_N, CUBLAS_OP_N, OC, N, IC, W.data, OC, inp.data, IC, inp.dtype, out.data, OC,
              out.dtype, 0.0f, bias.data);
}

/* Column sums of x[N, C] added to acc[C], in two passes with a fixed
 * order (no atomics): partial sums over chunks of `per` rows, then the
 * chunks in order. */
template <typename T> __global__ void colsum_partial(float *part, const T *x, int N, int C, int per)
{
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= C) return;
    const int r0 = blockIdx.y * per, r1 = min(N, r0 + per);
    float s = 0.0f;
    for (int r = r0; r < r1; r++) s += pile_cuda_load(x[(size_t)r * C + col]);
    part[(size_t)blockIdx.y * C + col] = s;
}

__global__ void colsum_finish(float *acc, const float *part, int chunks, int C)
{
    const int col = blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= C) return;
    float s = 0.0f;
    for (int k = 0; k < chunks; k++) s += part[(size_t)k * C + col];
    acc[col] += s;
}

static void colsum_add(pile_backend *be, const char *op, float *acc, pile_tensor x, int N, int C)
{
    pile_cuda_ctx *c = pile__cuda_ctx(be);
    if (be->failed || N == 0 || C == 0) return;
    const int per = pile__cuda_colsum_chunk_rows(N); /* chunks within gridDim.y's limit */
    const int chunks = (N + per - 1) / per;
    float *part = (float *)pile__cuda_scratch(be, (size_t)pile__cuda_matmul_bwd_scratch_size(N, C), op);
    if (!part) return;
    const dim3 grid((unsigned)((C + 255) / 256), (unsigned)chunks);
    PILE_CUDA_DISPATCH(x.dtype, T, PILE_LAUNCH(grid, 256, c->stream, colsum_partial<T>)(part, (const T *)x.data, N, C, per));
    if (pile__cuda_check(be, op)) return;
    PILE_LAUNCH((unsigned)((C + 255) / 256), 256, c->stream, colsum_finish)(acc, part, chunks, C);
    pile__cuda_check(be, op);
}

/* dinp[N, IC] += dout[N, OC] W^T: column-major dinp^T[IC, N] +=
 * W[IC, OC] dout^T[OC, N], W stored as W^T[OC, IC] (transposed back).
 * dW[IC, OC] += inp^T dout: column-major dW^T[OC, IC] += dout^T[OC, N]
 * inp[N, IC], inp stored as inp^T[IC, N] (transposed back); dW is F32. */
void pile__cuda_matmul_bwd(pile_backend *be, pile_tensor dinp, pile_tensor dW, pile_tensor dbias, pile_tensor dout,
                           pile_tensor inp, pile_tensor W, int N, int IC, int OC)
{
    const pile_dtype dt = dout.dtype;
    if (dinp.data)
        lt_matmul(be, "matmul_bwd", CUBLAS_OP_T, CUBLAS_OP_N, IC, N, OC, W.data, OC, dout.data, OC, dt, dinp.data, IC, dt,
                  1.0f, NULL);
    lt_matmul(be, "matmul_bwd", CUBLAS_OP_N, CUBLAS_OP_T, OC, IC, N, dout.data, OC, inp.data, IC, dt, dW.data, OC,
              PILE_DTYPE_F32, 1.0f, NULL);
    if (dbias.data) colsum_add(be, "matmul_bwd", (float *)dbias.data, dout, N, OC);
}

/* out[N, Vp] = inp[N, C] wte[Vp, C]^T: column-major out^T[Vp, N] =
 * wte[Vp, C] inp^T[C, N], wte stored as wte^T[C, Vp] (transposed back). */
void pile__cuda_logits_fwd(pile_backend *be, pile_tensor out, pile_tensor inp, pile_tensor wte, int N, int C, int Vp)
{
    lt_matmul(be, "logits_fwd", CUBLAS_OP_T, CUBLAS_OP_N, Vp, N, C, wte.data, C, inp.data, C, inp.dtype, out.data, Vp,
              out.dtype, 0.0f, NULL);
}

/* dinp[N, C] += dout[N, Vp] wte[Vp, C]: column-major dinp^T[C, N] +=
 * wte^T[C, Vp] dout^T[Vp, N], both as stored. dwte[Vp, C] += dout^T inp:
 * column-major dwte^T[C, Vp] += inp^T[C, N] dout[N, Vp], dout stored as
 * dout^T[Vp, N] (transposed back); dwte is F32. */
void pile__cuda_logits_bwd(pile_backend *be, pile_tensor dinp, pile_tensor dwte, pile_tensor dout, pile_tensor inp,
                           pile_tensor wte, int N, int C, int Vp)
{
    const pile_dtype dt = dout.dtype;
    lt_matmul(be, "logits_bwd", CUBLAS_OP_N, CUBLAS_OP_N, C, N, Vp, wte.data, C, dout.data, Vp, dt, dinp.data, C, dt,
              1.0f, NULL);
    lt_matmul(be, "logits_bwd", CUBLAS_OP_N, CUBLAS_OP_T, C, Vp, N, inp.data, C, dout.data, Vp, dt, dwte.data, C,
              PILE_DTYPE_F32, 1.0f, NULL);
}
