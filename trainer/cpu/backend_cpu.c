/* The CPU backend (backend.h's ops table, registered as "cpu"): fp32, the
 * reference every other backend is checked against. Matmuls and the block
 * products inside attention go to OpenBLAS's sgemm (runtime-dispatched to
 * the CPU's widest vectors), everything else is OpenMP loops over rows or
 * elements. Every reduction this file does itself (bias, LayerNorm weight,
 * embedding and sum-of-squares sums, attention's blocks) runs in an order
 * that depends on neither the schedule nor the thread count, so these ops
 * give the same bits with any number of threads; only the multithreaded
 * sgemm calls of the matmuls may depend on it. backend.c has checked every
 * operand (dtype, size, owner) before a function here runs. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <cblas.h>
#include <strings.h>

#include "backend_cpu.h"
#include "backend_internal.h"
#include "cpu/scalar_math.h"
#include "precision.h"
#include "trainer_internal.h"

#define ALIGN 64
/* Loops shorter than this run on the calling thread: an OpenMP fork costs
 * more than it saves, and the result is the same either way. */
#define PAR_MIN 4096
/* Channel block of the column reductions: one thread owns 32 consecutive
 * channels (two cache lines) and walks all rows in order. */
#define CBLK 32
/* Attention's blocks (see the attention section): query rows per block
 * and keys per block. */
#ifndef ATT_BR
#define ATT_BR 128
#endif
#ifndef ATT_BC
#define ATT_BC 256
#endif
/* Element-wise ops go to the threads in chunks of this many floats. */
#define ECHUNK 4096

/* The release build targets baseline x86-64, so its loops are 4-wide SSE:
 * the hot element-wise and row kernels below are also compiled for AVX2
 * and AVX-512 and picked at load time (GCC's function multi-versioning).
 * They are plain functions over a range because OpenMP's outlined loop
 * bodies would not inherit the attribute. The choice is fixed per machine,
 * so results stay deterministic there; a reduction's lane count (and so
 * its last bits) may differ between machines. GCC only: clang builds are
 * the fuzz targets, where speed does not matter. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HOT
#endif

/* the length of chunk k of n elements */
static inline size_t chunk_len(size_t k, size_t n)
{
    size_t i0 = k * ECHUNK;
    return n - i0 < ECHUNK ? n - i0 : ECHUNK;
}

/* Each allocation carries a 64-byte header: its size, so that free can
 * keep bytes_in_use exact, and for a mapping its start and length. */
typedef struct {
    size_t bytes;
    void *map;      /* NULL: from aligned_alloc */
    size_t map_len;
} alloc_head;

/* Allocations from this size up are their own anonymous mapping, aligned to
 * 2 MiB and marked for transparent huge pages: the kernel hands them out
 * zeroed (no memset, and no page is touched before its first use), and
 * where THP is "madvise" (Debian's default) their first touch takes one
 * fault per 2 MiB instead of one per 4 KiB. GPT-2's parameters, gradients,
 * moments and activations are gigabytes: at 4 KiB pages their first touch
 * was a million minor faults and most of a short run's system time. */
#define BIG_ALLOC ((size_t)4 << 20)
#define HUGE_PAGE ((size_t)2 << 20)
/* AddressSanitizer checks malloc'ed memory only: keep it all there. */
#if defined(__SANITIZE_ADDRESS__)
#define USE_MAP 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define USE_MAP 0
#endif
#endif
#ifndef USE_MAP
#define USE_MAP 1
#endif
_Static_assert(sizeof(alloc_head) <= ALIGN, "the allocation header fits before the 64-byte aligned block");

/* The backend's state beyond the generic struct pile_backend. */
typedef struct cpu_ctx {
    size_t bytes_in_use;
} cpu_ctx;

static cpu_ctx *ctx_of(const pile_backend *be)
{
    return be->ctx;
}

static int cpu_probe(pile_err *err)
{
    (void)err;
    return 0;
}

static void cpu_close(pile_backend *be)
{
    free(be->ctx);
}

/* F32 for every op; BF16 and F16 only as a conversion's source or
 * destination (mixed precision's CPU emulation goes here). */
static int cpu_supports(const pile_backend *be, pile_op op, pile_dtype dt)
{
    (void)be;
    if (op == PILE_OP_CONVERT) return dt == PILE_DTYPE_F32 || dt == PILE_DTYPE_BF16 || dt == PILE_DTYPE_F16;
    return dt == PILE_DTYPE_F32;
}

const char *pile_cpu_blas_coretype_hint(void)
{
    const char *core = openblas_get_corename();
    if (!core || strcasecmp(core, "prescott") != 0) return NULL;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return "SKYLAKEX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "HASWELL";
    return NULL;
}

/* ------------------------------------------------------------- memory */

static void *map_big(size_t bytes, alloc_head *head)
{
    if (bytes > SIZE_MAX / 2) return NULL; /* no address space maps it; len below cannot wrap */
    size_t len = (ALIGN + bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE + HUGE_PAGE;
    unsigned char *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) return NULL;
    unsigned char *base = map + ((HUGE_PAGE - (uintptr_t)map % HUGE_PAGE) % HUGE_PAGE);
#ifdef MADV_HUGEPAGE
    (void)madvise(base, len - (size_t)(base - map), MADV_HUGEPAGE); /* a hint: without THP, 4 KiB pages */
#endif
    head->map = map;
    head->map_len = len;
    return base;
}

static void *cpu_alloc(pile_backend *be, size_t bytes)
{
    if (bytes > SIZE_MAX - 2 * ALIGN) return NULL;
    alloc_head head = {bytes, NULL, 0};
    unsigned char *base;
    if (USE_MAP && bytes >= BIG_ALLOC) {
        base = map_big(bytes, &head);
        if (!base) return NULL;
    } else {
        size_t total = (bytes + ALIGN + ALIGN - 1) / ALIGN * ALIGN; /* aligned_alloc wants a multiple */
        base = aligned_alloc(ALIGN, total);
        if (!base) return NULL;
        memset(base, 0, total);
    }
    memcpy(base, &head, sizeof head);
    ctx_of(be)->bytes_in_use += bytes;
    return base + ALIGN;
}

static void cpu_free(pile_backend *be, void *p)
{
    if (!p) return;
    unsigned char *base = (unsigned char *)p - ALIGN;
    alloc_head head;
    memcpy(&head, base, sizeof head);
    ctx_of(be)->bytes_in_use -= head.bytes;
    if (head.map) munmap(head.map, head.map_len);
    else free(base);
}

static size_t cpu_bytes_in_use(const pile_backend *be)
{
    return ctx_of(be)->bytes_in_use;
}

/* Everything runs on the calling thread before an op returns. */
static void cpu_sync(pile_backend *be)
{
    (void)be;
}

static void cpu_upload(pile_backend *be, pile_tensor dst, const void *host_src, size_t bytes)
{
    (void)be;
    if (bytes) memcpy(dst.data, host_src, bytes);
}

static void cpu_download(pile_backend *be, void *host_dst, pile_tensor src, size_t bytes)
{
    (void)be;
    if (bytes) memcpy(host_dst, src.data, bytes);
}

static void cpu_copy(pile_backend *be, pile_tensor dst, pile_tensor src, size_t bytes)
{
    (void)be;
    if (bytes) memcpy(dst.data, src.data, bytes);
}

static void cpu_zero(pile_backend *be, pile_tensor t, size_t bytes)
{
    (void)be;
    if (bytes) memset(t.data, 0, bytes);
}

/* Between float dtypes through fp32, in chunks of ECHUNK over the threads
 * (precision.h's conversions run on the calling thread). */
static void convert_range(pile_tensor dst, pile_tensor src, size_t i0, size_t n)
{
    float tmp[ECHUNK];
    const float *f = (const float *)src.data + i0;
    if (src.dtype == PILE_DTYPE_BF16) pile_bf16_to_fp32_array(tmp, (const uint16_t *)src.data + i0, n), f = tmp;
    if (src.dtype == PILE_DTYPE_F16) pile_fp16_to_fp32_array(tmp, (const uint16_t *)src.data + i0, n), f = tmp;
    if (dst.dtype == PILE_DTYPE_F32) memcpy((float *)dst.data + i0, f, n * sizeof *f);
    if (dst.dtype == PILE_DTYPE_BF16) pile_fp32_to_bf16_array((uint16_t *)dst.data + i0, f, n);
    if (dst.dtype == PILE_DTYPE_F16) pile_fp32_to_fp16_array((uint16_t *)dst.data + i0, f, n);
}

static void cpu_convert(pile_backend *be, pile_tensor dst, pile_tensor src, size_t n)
{
    if (dst.dtype == src.dtype) {
        if (n) memcpy(dst.data, src.data, n * pile_dtype_size(dst.dtype));
        return;
    }
    size_t nch = (n + ECHUNK - 1) / ECHUNK;
#pragma omp parallel for num_threads(be->threads) schedule(static) if (n >= PAR_MIN)
    for (size_t k = 0; k < nch; k++) convert_range(dst, src, k * ECHUNK, chunk_len(k, n));
}

/* Mixed precision's emulation: F32 values rounded in place to bf16 /
 * fp16, in chunks over the threads (precision.h's rounding runs on the
 * calling thread). */
static void cpu_round(pile_backend *be, pile_tensor t, size_t n, pile_precision p)
{
    float *x = t.data;
    size_t nch = (n + ECHUNK - 1) / ECHUNK;
#pragma omp parallel for num_threads(be->threads) schedule(static) if (n >= PAR_MIN)
    for (size_t k = 0; k < nch; k++) pile_precision_round(x + k * ECHUNK, chunk_len(k, n), p);
}

/* --------------------------------------------------------- embeddings */

static void cpu_embed_fwd(pile_backend *be, pile_tensor out_, pile_tensor tokens_, pile_tensor wte_, pile_tensor wpe_,
                          int B, int T, int C)
{
    float *out = out_.data;
    const int32_t *tokens = tokens_.data;
    const float *wte = wte_.data, *wpe = wpe_.data;
    long rows = (long)B * T;
#pragma omp parallel for num_threads(be->threads) schedule(static) if (rows * C >= PAR_MIN)
    for (long r = 0; r < rows; r++) {
        float *o = out + r * C;
        const float *e = wte + (size_t)tokens[r] * C;
        const float *p = wpe + (r % T) * C;
#pragma omp simd
        for (int c = 0; c < C; c++) o[c] = e[c] + p[c];
    }
}

static void cpu_embed_bwd(pile_backend *be, pile_tensor dwte_, pile_tensor dwpe_, pile_tensor dout_,
                          pile_tensor tokens_, int B, int T, int C)
{
    float *dwte = dwte_.data, *dwpe = dwpe_.data;
    const float *dout = dout_.data;
    const int32_t *tokens = tokens_.data;
    /* A token may repeat, so rows of dwte collide: each thread owns a block
     * of channels and adds the positions in order, which makes the sums
     * independent of the thread count without atomics. */
    long rows = (long)B * T;
    int nblk = (C + CBLK - 1) / CBLK;
#pragma omp parallel for num_threads(be->threads) schedule(static) if (rows * C >= PAR_MIN)
    for (int k = 0; k < nblk; k++) {
        int c0 = k * CBLK, c1 = c0 + CBLK < C ? c0 + CBLK : C;
        for (long r = 0; r < rows; r++) {
            float *w = dwte + (size_t)tokens[r] * C;
            float *p = dwpe + (r % T) * C;
            const float *d = dout + r * C;
#pragma omp simd
            for (int c = c0; c < c1; c++) {
                w[c] += d[c];
                p[c] += d[c];
            }
        }
    }
}

/* ---------------------------------------------------------- layernorm */

HOT static void ln_fwd_row(float *o, float *mean, float *rstd, const float *x, const float *w, const float *b,
                           int C)
{
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int c = 0; c < C; c++) s += x[c];
    float m = s / C;
    /* two passes: the centred sum of squares does not cancel */
    float v = 0.0f;
#pragma omp simd reduction(+ : v)
    for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
    float rs = 1.0f / sqrtf(v / C + 1e-5f);
#pragma omp simd
    for (int c = 0; c < C; c++) o[c] = (x[c] - m) * rs * w[c] + b[c];
    *mean = m;
    *rstd = rs;
}

static void cpu_layernorm_fwd(pile_backend *be, pile_tensor out_, pile_tensor mean_, pile_tensor rstd_,
                              pile_tensor inp_, pile_tensor w_, pile_tensor b_, int N, int C)
{
    float *out = out_.data, *mean = mean_.data, *rstd = rstd_.data;
    const float *inp = inp_.data, *w = w_.data, *b = b_.data;
#pragma omp parallel for num_threads(be->threads) schedule(static) if ((long)N * C >= PAR_MIN)
    for (int i = 0; i < N; i++)
        ln_fwd_row(out + (size_t)i * C, mean + i, rstd + i, inp + (size_t)i * C, w, b, C);
}

HOT static void ln_bwd_row(float *dx, const float *d, const float *x, const float *w, float m, float rs, int C)
{
    float sd = 0.0f, sdn = 0.0f;
#pragma omp simd reduction(+ : sd, sdn)
    for (int c = 0; c < C; c++) {
        float dn = d[c] * w[c];
        sd += dn;
        sdn += dn * (x[c] - m) * rs;
    }
    sd /= C;
    sdn /= C;
#pragma omp simd
    for (int c = 0; c < C; c++) {
        float n = (x[c] - m) * rs;
        dx[c] += (d[c] * w[c] - sd - n * sdn) * rs;
    }
}

/* dw, db over channels [c0, c1): column sums over all rows in order */
HOT static void ln_bwd_cols(float *dw, float *db, const float *dout, const float *inp, const float *mean,
                            const float *rstd, int N, int C, int c0, int c1)
{
    float aw[CBLK] = {0}, ab[CBLK] = {0};
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C + c0, *d = dout + (size_t)i * C + c0;
        float m = mean[i], rs = rstd[i];
#pragma omp simd
        for (int c = 0; c < c1 - c0; c++) {
            aw[c] += d[c] * (x[c] - m) * rs;
            ab[c] += d[c];
        }
    }
    for (int c = 0; c < c1 - c0; c++) {
        dw[c0 + c] += aw[c];
        db[c0 + c] += ab[c];
    }
}

static void cpu_layernorm_bwd(pile_backend *be, pile_tensor dinp_, pile_tensor dw_, pile_tensor db_,
                              pile_tensor dout_, pile_tensor inp_, pile_tensor w_, pile_tensor mean_,
                              pile_tensor rstd_, int N, int C)
{
    float *dinp = dinp_.data, *dw = dw_.data, *db = db_.data;
    const float *dout = dout_.data, *inp = inp_.data, *w = w_.data, *mean = mean_.data, *rstd = rstd_.data;
    int par = (long)N * C >= PAR_MIN;
#pragma omp parallel for num_threads(be->threads) schedule(static) if (par)
    for (int i = 0; i < N; i++)
        ln_bwd_row(dinp + (size_t)i * C, dout + (size_t)i * C, inp + (size_t)i * C, w, mean[i], rstd[i], C);
    /* dw, db: column sums over rows, one channel block per thread */
    int nblk = (C + CBLK - 1) / CBLK;
#pragma omp parallel for num_threads(be->threads) schedule(static) if (par)
    for (int k = 0; k < nblk; k++) {
        int c0 = k * CBLK, c1 = c0 + CBLK < C ? c0 + CBLK : C;
        ln_bwd_cols(dw, db, dout, inp, mean, rstd, N, C, c0, c1);
    }
}

/* ------------------------------------------------------------ matmuls */

/* OpenBLAS's thread count is process-wide: restore this backend's before
 * its sgemm calls, in case another backend object changed it. */
static void blas_threads(const pile_backend *be)
{
    if (openblas_get_num_threads() != be->threads) openblas_set_num_threads(be->threads);
}

static void cpu_matmul_fwd(pile_backend *be, pile_tensor out_, pile_tensor inp_, pile_tensor W_, pile_tensor bias_,
                           int N, int IC, int OC)
{
    float *out = out_.data;
    const float *inp = inp_.data, *W = W_.data, *bias = bias_.data;
    blas_threads(be);
    float beta = 0.0f;
    if (bias) {
#pragma omp parallel for num_threads(be->threads) schedule(static) if ((long)N * OC >= PAR_MIN)
        for (int i = 0; i < N; i++) memcpy(out + (size_t)i * OC, bias, (size_t)OC * sizeof *out);
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, OC, IC, 1.0f, inp, IC, W, OC, beta, out, OC);
}

HOT static void colsum_cols(float *acc, const float *x, int N, int C, int c0, int c1)
{
    float a[CBLK] = {0};
    for (int i = 0; i < N; i++) {
        const float *r = x + (size_t)i * C + c0;
#pragma omp simd
        for (int c = 0; c < c1 - c0; c++) a[c] += r[c];
    }
    for (int c = 0; c < c1 - c0; c++) acc[c0 + c] += a[c];
}

/* Column sums of x[N, C] added to acc[C], rows in order. */
static void colsum_add(pile_backend *be, float *acc, const float *x, int N, int C)
{
    int nblk = (C + CBLK - 1) / CBLK;
#pragma omp parallel for num_threads(be->threads) schedule(static) if ((long)N * C >= PAR_MIN)
    for (int k = 0; k < nblk; k++) {
        int c0 = k * CBLK, c1 = c0 + CBLK < C ? c0 + CBLK : C;
        colsum_cols(acc, x, N, C, c0, c1);
    }
}

static void cpu_matmul_bwd(pile_backend *be, pile_tensor dinp_, pile_tensor dW_, pile_tensor dbias_,
                           pile_tensor dout_, pile_tensor inp_, pile_tensor W_, int N, int IC, int OC)
{
    float *dinp = dinp_.data, *dW = dW_.data, *dbias = dbias_.data;
    const float *dout = dout_.data, *inp = inp_.data, *W = W_.data;
    blas_threads(be);
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, IC, OC, 1.0f, dout, OC, W, OC, 1.0f, dinp, IC);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, IC, OC, N, 1.0f, inp, IC, dout, OC, 1.0f, dW, OC);
    if (dbias) colsum_add(be, dbias, dout, N, OC);
}

static void cpu_logits_fwd(pile_backend *be, pile_tensor out_, pile_tensor inp_, pile_tensor wte_, int N, int C,
                           int Vp)
{
    float *out = out_.data;
    const float *inp = inp_.data, *wte = wte_.data;
    blas_threads(be);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, Vp, C, 1.0f, inp, C, wte, C, 0.0f, out, Vp);
}

static void cpu_logits_bwd(pile_backend *be, pile_tensor dinp_, pile_tensor dwte_, pile_tensor dout_,
                           pile_tensor inp_, pile_tensor wte_, int N, int C, int Vp)
{
    float *dinp = dinp_.data, *dwte = dwte_.data;
    const float *dout = dout_.data, *inp = inp_.data, *wte = wte_.data;
    blas_threads(be);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, Vp, 1.0f, dout, Vp, wte, C, 1.0f, dinp, C);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Vp, C, N, 1.0f, dout, Vp, inp, C, 1.0f, dwte, C);
}

/* ---------------------------------------------------------- attention
 * FlashAttention-2 (Dao 2023, arXiv 2307.08691, algorithms 1 and 2) on the
 * CPU. One task per (b, h), spread over the OpenMP threads with a static
 * schedule; inside a task, single-threaded sgemm calls on strided views of
 * qkv (row stride 3C) and of the task's own scratch.
 *
 * Forward: for each block of ATT_BR query rows, the key blocks of ATT_BC
 * columns the rows may see (from the block's lowest document start to its
 * last row): S = scale Q K^T, then the online softmax keeps per row the
 * running maximum m and sum l, rescales the unnormalised output by
 * exp(m_old - m_new) and adds exp(S - m) V. The output is divided by l at
 * the block's end and only LSE = m + log l is saved.
 * Backward: D = rowsum(dO * O) per row, then the same blocks again:
 * P = exp(S - LSE) recomputed from Q and K, dP = dO V^T,
 * dS = P * (dP - D); dV += P^T dO, dK += scale dS^T Q, dQ += scale dS K,
 * accumulated into the task's own slice of dqkv in a fixed block order.
 *
 * Every value is computed by one thread in an order fixed by the shapes,
 * so the bits depend neither on the thread count nor on the timing, and no
 * atomics are needed. Masked entries are set to zero by index (pile_vexpf
 * clamps, so exp(-inf) would not be 0). ATT_BC covers T <= 256 in one key
 * block: there the online softmax has nothing to rescale and the forward
 * does what a plain softmax would; diagonal blocks multiply their masked
 * half too (about (1/2 + ATT_BR/2T) of the square is computed). */

/* Scratch per thread, in floats: the score / probability block, the dP / dS
 * block, the output accumulator, and m, l (forward) or D (backward). */
typedef struct att_shape {
    int T, C, hs, br, bc;
    float scale;
    size_t per_thread; /* bytes, a multiple of 64 */
} att_shape;

static att_shape att_shape_of(int T, int C, int NH)
{
    att_shape s;
    s.T = T;
    s.C = C;
    s.hs = C / NH;
    s.br = T < ATT_BR ? T : ATT_BR;
    s.bc = T < ATT_BC ? T : ATT_BC;
    s.scale = 1.0f / sqrtf((float)s.hs);
    size_t floats = 2 * (size_t)s.br * (size_t)s.bc + (size_t)s.br * (size_t)s.hs + 2 * (size_t)s.br;
    s.per_thread = (floats * sizeof(float) + ALIGN - 1) / ALIGN * ALIGN;
    return s;
}

static size_t cpu_attention_saved_bytes(const pile_backend *be, int B, int T, int C, int NH)
{
    (void)be;
    (void)C;
    return (size_t)B * (size_t)NH * (size_t)T * sizeof(float);
}

static size_t cpu_attention_scratch_bytes(const pile_backend *be, int B, int T, int C, int NH)
{
    (void)B;
    return (size_t)be->threads * att_shape_of(T, C, NH).per_thread;
}

static inline int att_lo(const int32_t *doc_start, int b, int T, int t)
{
    if (!doc_start) return 0;
    int lo = doc_start[(size_t)b * T + t];
    return lo < 0 ? 0 : lo > t ? t : lo;
}

/* The first key any row of [r0, r1) may see. */
static int att_block_lo(const int32_t *doc_start, int b, int T, int r0, int r1)
{
    if (!doc_start) return 0;
    int lo = r0;
    for (int t = r0; t < r1; t++) {
        int l = att_lo(doc_start, b, T, t);
        lo = l < lo ? l : lo;
    }
    return lo;
}

/* Row t of a block sees keys [*a, *e) of the key block [k0, k1), as
 * offsets from k0; *a >= *e when it sees none of them. */
static inline void att_span(const int32_t *doc_start, int b, int T, int t, int k0, int k1, int *a, int *e)
{
    int lo = att_lo(doc_start, b, T, t);
    *a = (lo > k0 ? lo : k0) - k0;
    *e = (t + 1 < k1 ? t + 1 : k1) - k0;
}

/* OpenBLAS runs a call made inside an OpenMP parallel region (OpenMP
 * build) or with one thread (pthreads build) on the calling thread, so the
 * tasks may call it side by side. */
static void blas_serial_begin(void)
{
    openblas_set_num_threads(1);
}

/* The online softmax over one key block for rows [r0, r1): S (row stride
 * bc) becomes exp(S - m_new) where seen and 0 elsewhere; m, l and the
 * accumulator rows are updated. */
HOT static void att_online_rows(float *S, float *acc, float *m, float *l, const int32_t *doc_start, int b,
                                const att_shape *sh, int r0, int r1, int k0, int k1)
{
    const int nk = k1 - k0, bc = sh->bc, hs = sh->hs;
    for (int t = r0; t < r1; t++) {
        const int i = t - r0;
        float *s = S + (size_t)i * bc;
        int a, e;
        att_span(doc_start, b, sh->T, t, k0, k1, &a, &e);
        if (a >= e) {
            memset(s, 0, (size_t)nk * sizeof *s);
            continue;
        }
        float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
        for (int j = a; j < e; j++) mx = s[j] > mx ? s[j] : mx;
        const float mnew = mx > m[i] ? mx : m[i];
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int j = a; j < e; j++) {
            s[j] = pile_vexpf(s[j] - mnew);
            sum += s[j];
        }
        for (int j = 0; j < a; j++) s[j] = 0.0f;
        for (int j = e; j < nk; j++) s[j] = 0.0f;
        if (m[i] == -INFINITY) {
            l[i] = sum; /* the accumulator row is still zero */
        } else {
            const float alpha = pile_vexpf(m[i] - mnew);
            l[i] = l[i] * alpha + sum;
            if (alpha != 1.0f) {
                float *o = acc + (size_t)i * hs;
#pragma omp simd
                for (int c = 0; c < hs; c++) o[c] *= alpha;
            }
        }
        m[i] = mnew;
    }
}

/* The block's output rows (accumulator / l) and their log-sum-exp. */
HOT static void att_finish_rows(float *o, float *lse, const float *acc, const float *m, const float *l, int nr,
                                int C, int hs)
{
    for (int i = 0; i < nr; i++) {
        const float inv = 1.0f / l[i];
        const float *a = acc + (size_t)i * hs;
        float *r = o + (size_t)i * C;
#pragma omp simd
        for (int c = 0; c < hs; c++) r[c] = a[c] * inv;
        lse[i] = m[i] + logf(l[i]);
    }
}

static void att_fwd_task(float *out, float *lse, float *scr, const float *qkv, const int32_t *doc_start, int b,
                         int h, const att_shape *sh)
{
    const int T = sh->T, C = sh->C, hs = sh->hs, br = sh->br, bc = sh->bc;
    const size_t C3 = (size_t)3 * C;
    const float *q = qkv + (size_t)b * T * C3 + (size_t)h * hs, *k = q + C, *v = q + 2 * (size_t)C;
    float *o = out + (size_t)b * T * C + (size_t)h * hs;
    float *S = scr, *acc = S + 2 * (size_t)br * bc, *m = acc + (size_t)br * hs, *l = m + br;
    for (int r0 = 0; r0 < T; r0 += br) {
        const int r1 = r0 + br < T ? r0 + br : T, nr = r1 - r0;
        for (int i = 0; i < nr; i++) {
            m[i] = -INFINITY;
            l[i] = 0.0f;
        }
        memset(acc, 0, (size_t)nr * hs * sizeof *acc);
        for (int k0 = att_block_lo(doc_start, b, T, r0, r1); k0 < r1; k0 += bc) {
            const int k1 = k0 + bc < r1 ? k0 + bc : r1, nk = k1 - k0;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, nk, hs, sh->scale, q + r0 * C3, (int)C3,
                        k + k0 * C3, (int)C3, 0.0f, S, bc);
            att_online_rows(S, acc, m, l, doc_start, b, sh, r0, r1, k0, k1);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, hs, nk, 1.0f, S, bc, v + k0 * C3, (int)C3,
                        1.0f, acc, hs);
        }
        att_finish_rows(o + (size_t)r0 * C, lse + r0, acc, m, l, nr, C, hs);
    }
}

static void cpu_attention_fwd(pile_backend *be, pile_tensor out_, pile_tensor saved_, pile_tensor scratch_,
                              pile_tensor qkv_, pile_tensor doc_start_, int B, int T, int C, int NH)
{
    float *out = out_.data;
    void *saved = saved_.data, *scratch = scratch_.data;
    const float *qkv = qkv_.data;
    const int32_t *doc_start = doc_start_.data;
    const att_shape sh = att_shape_of(T, C, NH);
    const int tasks = B * NH;
    float *lse = saved;
    char *scr = scratch;
    blas_serial_begin();
#pragma omp parallel for num_threads(be->threads) schedule(static) if (tasks > 1)
    for (int i = 0; i < tasks; i++)
        att_fwd_task(out, lse + (size_t)i * T, (float *)(void *)(scr + (size_t)omp_get_thread_num() * sh.per_thread),
                     qkv, doc_start, i / NH, i % NH, &sh);
    openblas_set_num_threads(be->threads);
}

/* D = rowsum(dO * O) for rows [r0, r1). */
HOT static void att_rowdot(float *D, const float *dout, const float *out, int r0, int r1, int C, int hs)
{
    for (int t = r0; t < r1; t++) {
        const float *x = dout + (size_t)t * C, *y = out + (size_t)t * C;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int c = 0; c < hs; c++) s += x[c] * y[c];
        D[t - r0] = s;
    }
}

/* P = exp(S - LSE) in place of S, dS = P * (dP - D) in place of dP, both
 * zero where masked (the products after them read whole rows). */
HOT static void att_bwd_rows(float *P, float *dS, const float *lse, const float *D, const int32_t *doc_start, int b,
                             const att_shape *sh, int r0, int r1, int k0, int k1)
{
    const int nk = k1 - k0, bc = sh->bc;
    for (int t = r0; t < r1; t++) {
        const int i = t - r0;
        float *p = P + (size_t)i * bc, *d = dS + (size_t)i * bc;
        int a, e;
        att_span(doc_start, b, sh->T, t, k0, k1, &a, &e);
        if (a >= e) a = e = 0;
        const float L = lse[i], Di = D[i];
#pragma omp simd
        for (int j = a; j < e; j++) {
            p[j] = pile_vexpf(p[j] - L);
            d[j] = p[j] * (d[j] - Di);
        }
        for (int j = 0; j < a; j++) p[j] = d[j] = 0.0f;
        for (int j = e; j < nk; j++) p[j] = d[j] = 0.0f;
    }
}

static void att_bwd_task(float *dqkv, float *scr, const float *dout, const float *qkv, const float *out,
                         const float *lse, const int32_t *doc_start, int b, int h, const att_shape *sh)
{
    const int T = sh->T, C = sh->C, hs = sh->hs, br = sh->br, bc = sh->bc;
    const size_t C3 = (size_t)3 * C, off = (size_t)b * T * C3 + (size_t)h * hs, ooff = (size_t)b * T * C + (size_t)h * hs;
    const float *q = qkv + off, *k = q + C, *v = q + 2 * (size_t)C;
    float *dq = dqkv + off, *dk = dq + C, *dv = dq + 2 * (size_t)C;
    const float *o = out + ooff, *dO = dout + ooff;
    float *P = scr, *dS = P + (size_t)br * bc, *D = dS + (size_t)br * bc + (size_t)br * hs;
    for (int r0 = 0; r0 < T; r0 += br) {
        const int r1 = r0 + br < T ? r0 + br : T, nr = r1 - r0;
        att_rowdot(D, dO, o, r0, r1, C, hs);
        for (int k0 = att_block_lo(doc_start, b, T, r0, r1); k0 < r1; k0 += bc) {
            const int k1 = k0 + bc < r1 ? k0 + bc : r1, nk = k1 - k0;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, nk, hs, sh->scale, q + r0 * C3, (int)C3,
                        k + k0 * C3, (int)C3, 0.0f, P, bc);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, nk, hs, 1.0f, dO + (size_t)r0 * C, C,
                        v + k0 * C3, (int)C3, 0.0f, dS, bc);
            att_bwd_rows(P, dS, lse + r0, D, doc_start, b, sh, r0, r1, k0, k1);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hs, nr, 1.0f, P, bc, dO + (size_t)r0 * C, C,
                        1.0f, dv + k0 * C3, (int)C3);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hs, nr, sh->scale, dS, bc, q + r0 * C3,
                        (int)C3, 1.0f, dk + k0 * C3, (int)C3);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, hs, nk, sh->scale, dS, bc, k + k0 * C3,
                        (int)C3, 1.0f, dq + r0 * C3, (int)C3);
        }
    }
}

static void cpu_attention_bwd(pile_backend *be, pile_tensor dqkv_, pile_tensor scratch_, pile_tensor dout_,
                              pile_tensor qkv_, pile_tensor out_, pile_tensor saved_, pile_tensor doc_start_, int B,
                              int T, int C, int NH)
{
    float *dqkv = dqkv_.data;
    void *scratch = scratch_.data;
    const void *saved = saved_.data;
    const float *dout = dout_.data, *qkv = qkv_.data, *out = out_.data;
    const int32_t *doc_start = doc_start_.data;
    const att_shape sh = att_shape_of(T, C, NH);
    const int tasks = B * NH;
    const float *lse = saved;
    char *scr = scratch;
    blas_serial_begin();
#pragma omp parallel for num_threads(be->threads) schedule(static) if (tasks > 1)
    for (int i = 0; i < tasks; i++)
        att_bwd_task(dqkv, (float *)(void *)(scr + (size_t)omp_get_thread_num() * sh.per_thread), dout, qkv, out,
                     lse + (size_t)i * T, doc_start, i / NH, i % NH, &sh);
    openblas_set_num_threads(be->threads);
}

/* One query row, one task per head: a matrix-vector product each way,
 * memory-bound, so plain simd loops over the cache rows rather than sgemv
 * (whose threading would fight the heads' loop). Each head's values come
 * from one thread in a fixed order: the same bits with any thread count. */
static void cpu_attention_decode(pile_backend *be, pile_tensor out_, pile_tensor att_, pile_tensor q_,
                                 pile_tensor kcache_, pile_tensor vcache_, int t, int C, int NH)
{
    float *out = out_.data, *att = att_.data;
    const float *q = q_.data, *kcache = kcache_.data, *vcache = vcache_.data;
    const int hs = C / NH, n = t + 1;
    const float scale = 1.0f / sqrtf((float)hs);
#pragma omp parallel for num_threads(be->threads) schedule(static) if ((long)NH * n * hs >= PAR_MIN)
    for (int h = 0; h < NH; h++) {
        const float *qh = q + (size_t)h * hs;
        float *p = att + (size_t)h * n, *o = out + (size_t)h * hs;
        float mx = -INFINITY;
        for (int s = 0; s < n; s++) {
            const float *k = kcache + (size_t)s * C + (size_t)h * hs;
            float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
            for (int i = 0; i < hs; i++) dot += qh[i] * k[i];
            p[s] = dot * scale;
            mx = p[s] > mx ? p[s] : mx;
        }
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int s = 0; s < n; s++) {
            p[s] = pile_vexpf(p[s] - mx);
            sum += p[s];
        }
        float inv = 1.0f / sum;
#pragma omp simd
        for (int s = 0; s < n; s++) p[s] *= inv;
        for (int i = 0; i < hs; i++) o[i] = 0.0f;
        for (int s = 0; s < n; s++) {
            const float *v = vcache + (size_t)s * C + (size_t)h * hs;
            const float ps = p[s];
#pragma omp simd
            for (int i = 0; i < hs; i++) o[i] += ps * v[i];
        }
    }
}

/* --------------------------------------------------------------- GELU */

/* scalar_math.h's pile_gelu (HF gelu_new) and its derivative. */
HOT static void gelu_fwd_range(float *out, const float *inp, size_t n)
{
#pragma omp simd
    for (size_t i = 0; i < n; i++) out[i] = pile_gelu(inp[i]);
}

HOT static void gelu_bwd_range(float *dinp, const float *inp, const float *dout, size_t n)
{
#pragma omp simd
    for (size_t i = 0; i < n; i++) dinp[i] += pile_gelu_grad(inp[i]) * dout[i];
}

HOT static void add_range(float *out, const float *a, const float *b, size_t n)
{
#pragma omp simd
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

static void cpu_gelu_fwd(pile_backend *be, pile_tensor out_, pile_tensor inp_, size_t n)
{
    float *out = out_.data;
    const float *inp = inp_.data;
    size_t nch = (n + ECHUNK - 1) / ECHUNK;
#pragma omp parallel for num_threads(be->threads) schedule(static) if (n >= PAR_MIN)
    for (size_t k = 0; k < nch; k++) {
        size_t i0 = k * ECHUNK, len = chunk_len(k, n);
        gelu_fwd_range(out + i0, inp + i0, len);
    }
}

static void cpu_gelu_bwd(pile_backend *be, pile_tensor dinp_, pile_tensor inp_, pile_tensor dout_, size_t n)
{
    float *dinp = dinp_.data;
    const float *inp = inp_.data, *dout = dout_.data;
    size_t nch = (n + ECHUNK - 1) / ECHUNK;
#pragma omp parallel for num_threads(be->threads) schedule(static) if (n >= PAR_MIN)
    for (size_t k = 0; k < nch; k++) {
        size_t i0 = k * ECHUNK, len = chunk_len(k, n);
        gelu_bwd_range(dinp + i0, inp + i0, dout + i0, len);
    }
}

static void cpu_add(pile_backend *be, pile_tensor out_, pile_tensor a_, pile_tensor b_, size_t n)
{
    float *out = out_.data;
    const float *a = a_.data, *b = b_.data;
    size_t nch = (n + ECHUNK - 1) / ECHUNK;
#pragma omp parallel for num_threads(be->threads) schedule(static) if (n >= PAR_MIN)
    for (size_t k = 0; k < nch; k++) {
        size_t i0 = k * ECHUNK, len = chunk_len(k, n);
        add_range(out + i0, a + i0, b + i0, len);
    }
}

/* ------------------------------------------------------------ dropout */

static void cpu_dropout(pile_backend *be, pile_tensor x_, size_t n, float p, uint64_t seed)
{
    float *x = x_.data;
    if (!(p > 0.0f)) return;
    if (p >= 1.0f) {
        memset(x, 0, n * sizeof *x);
        return;
    }
    /* keep when a uniform 24-bit draw u/2^24 >= p */
    uint32_t thresh = (uint32_t)ceil((double)p * 16777216.0);
    float s = 1.0f / (1.0f - p);
#pragma omp parallel for num_threads(be->threads) schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        x[i] = pile_dropout_draw(seed, i) >= thresh ? x[i] * s : 0.0f;
    }
}

/* --------------------------------------------------------- cross-entropy */

/* One row's loss, argmax hit and (grad_scale != 0) gradient in place. */
HOT static void ce_row(float *x, float *loss, int32_t *correct, int tgt, int V, int Vp, float grad_scale)
{
    /* a target outside [0, V) cannot be scored: treat it as ignored */
    int use = tgt >= 0 && tgt < V;
    /* the maximum as a vectorised reduction, then its first position
     * (the lowest id wins a tie): a compare-and-move chain over the
     * row would be scalar and cost as much as the exponentials */
    float mx = x[0];
#pragma omp simd reduction(max : mx)
    for (int j = 1; j < V; j++) mx = x[j] > mx ? x[j] : mx;
    int am = 0;
    if (use)
        while (am < V - 1 && !(x[am] == mx)) am++;
    /* the exponentials go into the row when it becomes the gradient;
     * partial sums of 256 in float, added in double */
    int keep = grad_scale != 0.0f && use;
    float xt = use ? x[tgt] : 0.0f;
    double sum = 0.0;
    /* j0 + 256 would overflow for a vocabulary within 256 of INT_MAX */
    for (int j0 = 0, j1; j0 < V; j0 = j1) {
        j1 = V - j0 > 256 ? j0 + 256 : V;
        float ps = 0.0f;
        if (keep) {
#pragma omp simd reduction(+ : ps)
            for (int j = j0; j < j1; j++) {
                x[j] = pile_vexpf(x[j] - mx);
                ps += x[j];
            }
        } else {
#pragma omp simd reduction(+ : ps)
            for (int j = j0; j < j1; j++) ps += pile_vexpf(x[j] - mx);
        }
        sum += ps;
    }
    *loss = use ? (float)(log(sum) + (double)mx - (double)xt) : 0.0f;
    *correct = use && am == tgt;
    if (grad_scale == 0.0f) return;
    if (!use) {
        memset(x, 0, (size_t)Vp * sizeof *x);
        return;
    }
    float k = (float)(1.0 / sum) * grad_scale;
#pragma omp simd
    for (int j = 0; j < V; j++) x[j] *= k;
    x[tgt] -= grad_scale;
    for (int j = V; j < Vp; j++) x[j] = 0.0f;
}

static void cpu_softmax_ce(pile_backend *be, pile_tensor logits_, pile_tensor losses_, pile_tensor correct_,
                           pile_tensor targets_, int N, int V, int Vp, float grad_scale)
{
    float *logits = logits_.data, *losses = losses_.data;
    int32_t *correct = correct_.data;
    const int32_t *targets = targets_.data;
#pragma omp parallel for num_threads(be->threads) schedule(static) if ((long)N * Vp >= PAR_MIN)
    for (int i = 0; i < N; i++)
        ce_row(logits + (size_t)i * Vp, losses + i, correct + i, targets[i], V, Vp, grad_scale);
}

/* ------------------------------------------------------------ optimizer */

/* sumsq splits x into at most SUMSQ_CHUNKS fixed chunks (by n alone), adds
 * the chunk partials in order: the same bits with any thread count. */
#define SUMSQ_CHUNKS 256

static double cpu_sumsq(pile_backend *be, pile_tensor x_, size_t n)
{
    const float *x = x_.data;
    double part[SUMSQ_CHUNKS];
    size_t len = (n + SUMSQ_CHUNKS - 1) / SUMSQ_CHUNKS;
    if (len < 1024) len = 1024;
    int nch = (int)((n + len - 1) / len);
#pragma omp parallel for num_threads(be->threads) schedule(static) if (n >= PAR_MIN)
    for (int k = 0; k < nch; k++) {
        size_t i0 = k * len, i1 = i0 + len < n ? i0 + len : n;
        double s = 0.0;
#pragma omp simd reduction(+ : s)
        for (size_t i = i0; i < i1; i++) s += (double)x[i] * x[i];
        part[k] = s;
    }
    double s = 0.0;
    for (int k = 0; k < nch; k++) s += part[k];
    return s;
}

HOT static void scale_range(float *x, size_t n, float s)
{
#pragma omp simd
    for (size_t i = 0; i < n; i++) x[i] *= s;
}

static void cpu_scale(pile_backend *be, pile_tensor x_, size_t n, float s)
{
    float *x = x_.data;
    size_t nch = (n + ECHUNK - 1) / ECHUNK;
#pragma omp parallel for num_threads(be->threads) schedule(static) if (n >= PAR_MIN)
    for (size_t k = 0; k < nch; k++) {
        size_t i0 = k * ECHUNK, len = chunk_len(k, n);
        scale_range(x + i0, len, s);
    }
}

HOT static void adamw_range(float *p, const float *g, float *m, float *v, size_t n, float decay, float step,
                            float bc2s, float eps, float beta2, float w1, float w2)
{
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        float gi = g[i];
        float pi = p[i] * decay;
        float mi = m[i] + w1 * (gi - m[i]); /* torch's lerp */
        float vi = v[i] * beta2 + w2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - step * (mi / (sqrtf(vi) / bc2s + eps));
    }
}

static void cpu_adamw(pile_backend *be, pile_tensor p_, pile_tensor g_, pile_tensor m_, pile_tensor v_, size_t n,
                      float lr, float beta1, float beta2, float eps, float wd, int64_t t)
{
    float *p = p_.data, *m = m_.data, *v = v_.data;
    const float *g = g_.data;
    /* the scalars as torch's single-tensor AdamW forms them: in double,
     * rounded to float when they meet the tensors */
    double bc1 = 1.0 - pow((double)beta1, (double)t);
    double bc2 = 1.0 - pow((double)beta2, (double)t);
    float decay = (float)(1.0 - (double)lr * wd);
    float step = (float)((double)lr / bc1);
    float bc2s = (float)sqrt(bc2);
    float w1 = 1.0f - beta1, w2 = 1.0f - beta2;
    size_t nch = (n + ECHUNK - 1) / ECHUNK;
#pragma omp parallel for num_threads(be->threads) schedule(static) if (n >= PAR_MIN)
    for (size_t k = 0; k < nch; k++) {
        size_t i0 = k * ECHUNK, len = chunk_len(k, n);
        adamw_range(p + i0, g + i0, m + i0, v + i0, len, decay, step, bc2s, eps, beta2, w1, w2);
    }
}

/* ---------------------------------------------------------- the table */

static const pile_backend_i cpu_iface = {
    .close = cpu_close,
    .supports = cpu_supports,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .bytes_in_use = cpu_bytes_in_use,
    .sync = cpu_sync,
    .upload = cpu_upload,
    .download = cpu_download,
    .copy = cpu_copy,
    .zero = cpu_zero,
    .convert = cpu_convert,
    .round = cpu_round,
    .embed_fwd = cpu_embed_fwd,
    .embed_bwd = cpu_embed_bwd,
    .layernorm_fwd = cpu_layernorm_fwd,
    .layernorm_bwd = cpu_layernorm_bwd,
    .matmul_fwd = cpu_matmul_fwd,
    .matmul_bwd = cpu_matmul_bwd,
    .logits_fwd = cpu_logits_fwd,
    .logits_bwd = cpu_logits_bwd,
    .attention_saved_bytes = cpu_attention_saved_bytes,
    .attention_scratch_bytes = cpu_attention_scratch_bytes,
    .attention_fwd = cpu_attention_fwd,
    .attention_bwd = cpu_attention_bwd,
    .attention_decode = cpu_attention_decode,
    .gelu_fwd = cpu_gelu_fwd,
    .gelu_bwd = cpu_gelu_bwd,
    .add = cpu_add,
    .dropout = cpu_dropout,
    .softmax_ce = cpu_softmax_ce,
    .sumsq = cpu_sumsq,
    .scale = cpu_scale,
    .adamw = cpu_adamw,
};

static int cpu_open(pile_backend *be, pile_err *err)
{
    cpu_ctx *c = calloc(1, sizeof *c);
    PILE_RETURN_IF(!c, err, PILE_ENOMEM, "cannot allocate the cpu backend");
    be->iface = &cpu_iface;
    be->ctx = c;
    be->host_memory = 1;
    /* OpenMP's and OpenBLAS's thread counts are process-wide: set here for
     * the first backend, and before each parallel call (num_threads,
     * blas_threads) for when several backends share the process */
    omp_set_num_threads(be->threads);
    openblas_set_num_threads(be->threads);
    return 0;
}

const pile_backend_reg pile__backend_cpu_reg = {"cpu", cpu_probe, cpu_open};
