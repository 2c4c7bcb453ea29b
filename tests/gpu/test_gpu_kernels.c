/* Every op of backend.h on fresh random inputs against a reference
 * computed here in double precision with naive loops, in each precision
 * mode (fp32, bf16, fp16), on the CPU backend (always: in bf16 / fp16 its
 * emulation) and on "cuda" when pile_backend_probe finds a usable device
 * (its native 16-bit tensors). Before each call every output is poisoned
 * with NaN (and tensors are allocated PAD elements longer than the op
 * needs, the tail NaN too, which must stay untouched); gradients, which
 * ops accumulate into, start from random values instead.
 *
 * Inputs are drawn in fp32 and rounded to the mode's precision first, so
 * the reference sees exactly the values the backend holds. An element
 * passes when |got - ref| <= rtol |ref| + atol max|ref| (NaN fails):
 * rtol is one unit in the last place of the value as stored (2^-7 bf16,
 * 2^-10 fp16: the reference rounded to nearest can differ from a store of
 * an fp32 result by one ulp near a tie) and 2e-5 for fp32 values; atol
 * (2e-5 of the tensor's largest value) covers fp32 accumulation where
 * terms cancel. Exact ints (argmax hits, conversions) compare bit for bit.
 *
 * Exit: 0 when both backends passed, 77 when the CPU passed and no CUDA
 * device is usable ("cuda: no device, skipped"), 1 on any failure. TAP
 * text for a person; meson reads the exit code. */
#include <math.h>

#include "backend.h"
#include "pile_test.h"
#include "precision.h"
#include "trainer_internal.h"

#define F32 PILE_DTYPE_F32
#define I32 PILE_DTYPE_I32
#define U8 PILE_DTYPE_U8
#define NONE PILE_NO_TENSOR
#define PAD 67 /* extra elements after each tensor: must stay as they were */

/* One run's backend and precision mode. */
typedef struct mode {
    const char *backend;
    pile_precision prec;
    pile_dtype cdt; /* compute tensors' dtype: F32 on the CPU (emulated rounding), native on CUDA */
    pile_backend *be;
    double rtol; /* of compute values */
    char label[32];
} mode;

static double urand(void) /* [-1, 1) */
{
    return (double)(pile_test_rng() >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

static float round_to(float x, pile_precision p)
{
    pile_precision_round(&x, 1, p);
    return x;
}

/* n values uniform in [-amp, amp), rounded to p (the backend's storage) */
static float *hrand(size_t n, double amp, pile_precision p)
{
    float *h = malloc((n ? n : 1) * sizeof *h);
    for (size_t i = 0; i < n; i++) h[i] = (float)(amp * urand());
    pile_precision_round(h, n, p);
    return h;
}

static double *dbl(const float *f, size_t n)
{
    double *d = malloc((n ? n : 1) * sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = f[i];
    return d;
}

static int mode_open(mode *m, pile_err *err)
{
    m->be = NULL;
    int rc = pile_backend_open(&m->be, m->backend, 0, err);
    if (rc < 0) return rc;
    const pile_dtype dt = pile_dtype_of_precision(m->prec);
    if (!strcmp(m->backend, "cpu")) {
        m->cdt = F32;
        rc = pile_backend_set_emulation(m->be, dt, err);
    } else {
        m->cdt = dt;
    }
    /* the ops' scratch, taken up front as a run takes it, for the largest
     * shapes below: 300 rows (tokens) of up to 768 channels, biases of up
     * to 4 x 768 (nothing to do on the CPU) */
    if (rc == 0) rc = pile_backend_reserve_scratch(m->be, 1, 300, 768, err);
    return rc;
}

/* A tensor of n (+ PAD) elements of dt holding host[0..n) (NULL: NaN) and
 * NaN in its tail. Compute and F32 tensors take fp32 values, I32 ints. */
static pile_tensor put(mode *m, pile_dtype dt, const float *host, size_t n)
{
    pile_tensor t = pile_backend_alloc(m->be, dt, n + PAD);
    if (!t.data) return t;
    float *h = malloc((n + PAD) * sizeof *h);
    for (size_t i = 0; i < n + PAD; i++) h[i] = host && i < n ? host[i] : NAN;
    pile_err err;
    if (pile_tensor_upload_f32(t, h, n + PAD, &err) < 0) printf("# upload: %s\n", err.msg);
    free(h);
    return t;
}

static pile_tensor put_i32(mode *m, const int32_t *host, size_t n)
{
    pile_tensor t = pile_backend_alloc(m->be, I32, n + PAD);
    if (!t.data) return t;
    int32_t *h = malloc((n + PAD) * sizeof *h);
    for (size_t i = 0; i < n + PAD; i++) h[i] = host && i < n ? host[i] : INT32_MIN + 7;
    pile_backend_upload(m->be, t, h, n + PAD);
    pile_err err;
    pile_backend_sync(m->be, &err);
    free(h);
    return t;
}

/* t's n + PAD values as fp32 (NULL after a failed backend, said) */
static float *get(mode *m, pile_tensor t, size_t n)
{
    float *h = malloc((n + PAD) * sizeof *h);
    pile_err err;
    if (!t.data || pile_tensor_download_f32(h, t, n + PAD, &err) < 0) {
        PILE_FAIL_("%s: cannot read the result: %s", m->label, t.data ? err.msg : "no tensor");
        free(h);
        return NULL;
    }
    return h;
}

static int32_t *get_i32(mode *m, pile_tensor t, size_t n)
{
    int32_t *h = malloc((n + PAD) * sizeof *h);
    pile_backend_download(m->be, h, t, n + PAD);
    pile_err err;
    if (pile_backend_sync(m->be, &err) < 0) {
        PILE_FAIL_("%s: cannot read the result: %s", m->label, err.msg);
        free(h);
        return NULL;
    }
    return h;
}

/* Checks got[0..n) against ref within rtol |ref| + 2e-5 max|ref| (rtol
 * 0: equal), and that got's tail (PAD values) is still NaN. */
static void check(mode *m, const char *what, const float *got, const double *ref, size_t n, double rtol)
{
    if (!got) return;
    double scale = 0, worst = 0;
    for (size_t i = 0; i < n; i++) scale = fabs(ref[i]) > scale ? fabs(ref[i]) : scale;
    size_t bad = 0, first = 0, wi = 0;
    for (size_t i = 0; i < n; i++) {
        /* rtol 0: bit for bit (an input the op must leave as it was) */
        double e = fabs((double)got[i] - ref[i]), lim = rtol > 0 ? rtol * fabs(ref[i]) + 2e-5 * scale : 0.0;
        if (!(e <= lim)) {
            if (!bad) first = i;
            bad++;
        }
        double r = e > 0 ? (lim > 0 ? e / lim : INFINITY) : 0.0;
        if (!(r <= worst)) worst = r, wi = i;
    }
    size_t tail = 0;
    for (size_t i = n; i < n + PAD; i++) tail += !isnan(got[i]);
    if (bad)
        PILE_FAIL_("%s %s: %zu of %zu values off, first [%zu] got %.9g want %.9g", m->label, what, bad, n, first,
                   (double)got[first], ref[first]);
    if (tail) PILE_FAIL_("%s %s: %zu values written past the %zu the op owns", m->label, what, tail, n);
    printf("# %s %s: worst error %.3g of the tolerance at [%zu] over %zu values (max |ref| %.3g)\n", m->label, what,
           worst, wi, n, scale);
}

/* The reference under the mode's storage: a compute output is stored
 * rounded. */
static void store_ref(mode *m, double *ref, size_t n)
{
    for (size_t i = 0; i < n; i++) ref[i] = round_to((float)ref[i], m->prec);
}

static int synced(mode *m, const char *op)
{
    pile_err err;
    if (pile_backend_sync(m->be, &err) == 0) return 1;
    PILE_FAIL_("%s %s: %s", m->label, op, err.msg);
    return 0;
}

static void free_all(pile_tensor *t, size_t n)
{
    for (size_t i = 0; i < n; i++) pile_backend_free(&t[i]);
}

#define FREE_T(...)                                        \
    do {                                                   \
        pile_tensor all_[] = {__VA_ARGS__};                \
        free_all(all_, sizeof all_ / sizeof *all_);        \
    } while (0)

/* ------------------------------------------------------- conversions */

/* Between every pair of float dtypes, bit for bit as precision.h rounds
 * (round to nearest even, fp16 saturating to infinity), on values that
 * include ties, subnormals, overflow, infinities and NaN. */
static void test_convert(mode *m, size_t n)
{
    float *src = malloc(n * sizeof *src);
    static const float special[] = {0.0f, -0.0f, 1.0f + 0x1p-8f, 1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-9f, 65504.0f,
                                    65520.0f, -70000.0f, 0x1p-24f, 0x1p-130f, INFINITY, -INFINITY, NAN, 3.0e38f};
    for (size_t i = 0; i < n; i++)
        src[i] = i < sizeof special / sizeof *special ? special[i] : (float)(urand() * pow(2.0, 40 * urand()));
    static const pile_dtype fl[] = {F32, PILE_DTYPE_BF16, PILE_DTYPE_F16};
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
            /* the source as the source dtype holds it */
            float *s = malloc(n * sizeof *s), *want = malloc(n * sizeof *want);
            for (size_t i = 0; i < n; i++) {
                s[i] = fl[a] == F32 ? src[i]
                       : fl[a] == PILE_DTYPE_BF16 ? pile_bf16_to_fp32(pile_fp32_to_bf16(src[i]))
                                                  : pile_fp16_to_fp32(pile_fp32_to_fp16(src[i]));
                want[i] = fl[b] == F32 ? s[i]
                          : fl[b] == PILE_DTYPE_BF16 ? pile_bf16_to_fp32(pile_fp32_to_bf16(s[i]))
                                                     : pile_fp16_to_fp32(pile_fp32_to_fp16(s[i]));
            }
            pile_tensor ts = put(m, fl[a], s, n), td = put(m, fl[b], NULL, n);
            pile_backend_convert(m->be, td, ts, n);
            if (synced(m, "convert")) {
                float *got = get(m, td, n);
                size_t bad = 0, first = 0, tail = 0;
                for (size_t i = 0; got && i < n; i++) {
                    int same = isnan(want[i]) ? isnan(got[i]) : memcmp(&got[i], &want[i], sizeof *got) == 0;
                    if (!same && !bad++) first = i;
                }
                for (size_t i = n; got && i < n + PAD; i++) tail += !isnan(got[i]);
                if (bad)
                    PILE_FAIL_("%s convert %s -> %s: %zu of %zu differ, first [%zu] %.9g -> %.9g, want %.9g", m->label,
                               pile_dtype_name(fl[a]), pile_dtype_name(fl[b]), bad, n, first, (double)s[first],
                               (double)got[first], (double)want[first]);
                if (tail) PILE_FAIL_("%s convert: %zu values written past the end", m->label, tail);
                free(got);
            }
            FREE_T(ts, td);
            free(s), free(want);
        }
    printf("# %s convert: 9 dtype pairs over %zu values\n", m->label, n);
    free(src);
}

/* -------------------------------------------------------- embeddings */

static void test_embed(mode *m, int B, int T, int C, int Vp)
{
    const size_t N = (size_t)B * T, NC = N * C;
    int32_t *tok = malloc(N * sizeof *tok);
    for (size_t i = 0; i < N; i++) tok[i] = (int32_t)(pile_test_rng() % (uint64_t)(i % 3 ? Vp : 4)); /* repeats */
    float *wte = hrand((size_t)Vp * C, 1, m->prec), *wpe = hrand((size_t)T * C, 1, m->prec);
    float *dout = hrand(NC, 1, m->prec), *dwte0 = hrand((size_t)Vp * C, 1, PILE_PRECISION_FP32);
    float *dwpe0 = hrand((size_t)T * C, 1, PILE_PRECISION_FP32);
    pile_tensor ttok = put_i32(m, tok, N), twte = put(m, m->cdt, wte, (size_t)Vp * C);
    pile_tensor twpe = put(m, m->cdt, wpe, (size_t)T * C), tout = put(m, m->cdt, NULL, NC);
    pile_tensor tdo = put(m, m->cdt, dout, NC), tdwte = put(m, F32, dwte0, (size_t)Vp * C);
    pile_tensor tdwpe = put(m, F32, dwpe0, (size_t)T * C);
    pile_backend_embed_fwd(m->be, tout, ttok, twte, twpe, B, T, C);
    pile_backend_embed_bwd(m->be, tdwte, tdwpe, tdo, ttok, B, T, C);
    if (synced(m, "embed")) {
        double *ref = malloc(NC * sizeof *ref), *rwte = dbl(dwte0, (size_t)Vp * C), *rwpe = dbl(dwpe0, (size_t)T * C);
        for (size_t r = 0; r < N; r++)
            for (int c = 0; c < C; c++) {
                ref[r * C + c] = (double)wte[(size_t)tok[r] * C + c] + wpe[(r % T) * C + c];
                rwte[(size_t)tok[r] * C + c] += dout[r * C + c];
                rwpe[(r % T) * C + c] += dout[r * C + c];
            }
        store_ref(m, ref, NC);
        float *g;
        check(m, "embed_fwd out", g = get(m, tout, NC), ref, NC, m->rtol), free(g);
        check(m, "embed_bwd dwte", g = get(m, tdwte, (size_t)Vp * C), rwte, (size_t)Vp * C, 2e-5), free(g);
        check(m, "embed_bwd dwpe", g = get(m, tdwpe, (size_t)T * C), rwpe, (size_t)T * C, 2e-5), free(g);
        free(ref), free(rwte), free(rwpe);
    }
    FREE_T(ttok, twte, twpe, tout, tdo, tdwte, tdwpe);
    free(tok), free(wte), free(wpe), free(dout), free(dwte0), free(dwpe0);
}

/* --------------------------------------------------------- layernorm */

static void test_layernorm(mode *m, int N, int C)
{
    const size_t NC = (size_t)N * C;
    float *x = hrand(NC, 2, m->prec), *w = hrand(C, 1, m->prec), *b = hrand(C, 1, m->prec);
    for (size_t i = 0; i < NC; i++) x[i] = round_to(x[i] + (float)(i / C % 5), m->prec); /* row means not 0 */
    float *dout = hrand(NC, 1, m->prec), *dx0 = hrand(NC, 1, m->prec);
    float *dw0 = hrand(C, 1, PILE_PRECISION_FP32), *db0 = hrand(C, 1, PILE_PRECISION_FP32);
    double *ref = malloc(NC * sizeof *ref), *rm = malloc(N * sizeof *rm), *rr = malloc(N * sizeof *rr);
    float *fm = malloc(N * sizeof *fm), *fr = malloc(N * sizeof *fr);
    for (int i = 0; i < N; i++) {
        const float *r = x + (size_t)i * C;
        double mu = 0, v = 0;
        for (int c = 0; c < C; c++) mu += r[c];
        mu /= C;
        for (int c = 0; c < C; c++) v += (r[c] - mu) * (r[c] - mu);
        double rs = 1.0 / sqrt(v / C + 1e-5);
        for (int c = 0; c < C; c++) ref[(size_t)i * C + c] = (r[c] - mu) * rs * w[c] + b[c];
        rm[i] = mu, rr[i] = rs, fm[i] = (float)mu, fr[i] = (float)rs;
    }
    store_ref(m, ref, NC);
    pile_tensor tx = put(m, m->cdt, x, NC), tw = put(m, m->cdt, w, C), tb = put(m, m->cdt, b, C);
    pile_tensor tout = put(m, m->cdt, NULL, NC), tm = put(m, F32, NULL, N), tr = put(m, F32, NULL, N);
    pile_backend_layernorm_fwd(m->be, tout, tm, tr, tx, tw, tb, N, C);
    if (synced(m, "layernorm_fwd")) {
        float *g;
        check(m, "layernorm_fwd out", g = get(m, tout, NC), ref, NC, m->rtol), free(g);
        check(m, "layernorm_fwd mean", g = get(m, tm, N), rm, N, 2e-5), free(g);
        check(m, "layernorm_fwd rstd", g = get(m, tr, N), rr, N, 2e-5), free(g);
    }
    /* the backward from the reference's statistics, as given */
    pile_tensor tfm = put(m, F32, fm, N), tfr = put(m, F32, fr, N), tdo = put(m, m->cdt, dout, NC);
    pile_tensor tdx = put(m, m->cdt, dx0, NC), tdw = put(m, F32, dw0, C), tdb = put(m, F32, db0, C);
    pile_backend_layernorm_bwd(m->be, tdx, tdw, tdb, tdo, tx, tw, tfm, tfr, N, C);
    if (synced(m, "layernorm_bwd")) {
        double *rdx = dbl(dx0, NC), *rdw = dbl(dw0, C), *rdb = dbl(db0, C);
        for (int i = 0; i < N; i++) {
            const float *r = x + (size_t)i * C, *d = dout + (size_t)i * C;
            double sd = 0, sdn = 0;
            for (int c = 0; c < C; c++) {
                double n = (r[c] - (double)fm[i]) * fr[i];
                sd += (double)d[c] * w[c];
                sdn += (double)d[c] * w[c] * n;
                rdw[c] += d[c] * n;
                rdb[c] += d[c];
            }
            for (int c = 0; c < C; c++) {
                double n = (r[c] - (double)fm[i]) * fr[i];
                rdx[(size_t)i * C + c] += ((double)d[c] * w[c] - sd / C - n * sdn / C) * fr[i];
            }
        }
        store_ref(m, rdx, NC);
        float *g;
        check(m, "layernorm_bwd dinp", g = get(m, tdx, NC), rdx, NC, m->rtol), free(g);
        check(m, "layernorm_bwd dw", g = get(m, tdw, C), rdw, C, 2e-5), free(g);
        check(m, "layernorm_bwd db", g = get(m, tdb, C), rdb, C, 2e-5), free(g);
        free(rdx), free(rdw), free(rdb);
    }
    FREE_T(tx, tw, tb, tout, tm, tr, tfm, tfr, tdo, tdx, tdw, tdb);
    free(x), free(w), free(b), free(dout), free(dx0), free(dw0), free(db0), free(ref), free(rm), free(rr), free(fm),
        free(fr);
}

/* ----------------------------------------------- matmuls and logits */

static void test_matmul(mode *m, int N, int IC, int OC, int with_bias, int with_dinp, int with_dbias)
{
    const size_t NI = (size_t)N * IC, NO = (size_t)N * OC, IO = (size_t)IC * OC;
    float *x = hrand(NI, 1, m->prec), *W = hrand(IO, 1, m->prec), *bias = hrand(OC, 1, m->prec);
    float *dout = hrand(NO, 1, m->prec), *dx0 = hrand(NI, 1, m->prec), *dW0 = hrand(IO, 1, PILE_PRECISION_FP32);
    float *db0 = hrand(OC, 1, PILE_PRECISION_FP32);
    pile_tensor tx = put(m, m->cdt, x, NI), tW = put(m, m->cdt, W, IO);
    pile_tensor tb = with_bias ? put(m, m->cdt, bias, OC) : NONE, tout = put(m, m->cdt, NULL, NO);
    pile_tensor tdo = put(m, m->cdt, dout, NO), tdx = with_dinp ? put(m, m->cdt, dx0, NI) : NONE;
    pile_tensor tdW = put(m, F32, dW0, IO), tdb = with_dbias ? put(m, F32, db0, OC) : NONE;
    pile_backend_matmul_fwd(m->be, tout, tx, tW, tb, N, IC, OC);
    pile_backend_matmul_bwd(m->be, tdx, tdW, tdb, tdo, tx, tW, N, IC, OC);
    if (synced(m, "matmul")) {
        double *ref = malloc(NO * sizeof *ref), *rdx = dbl(dx0, NI), *rdW = dbl(dW0, IO), *rdb = dbl(db0, OC);
        for (int i = 0; i < N; i++)
            for (int o = 0; o < OC; o++) {
                double s = with_bias ? bias[o] : 0, d = dout[(size_t)i * OC + o];
                for (int k = 0; k < IC; k++) {
                    s += (double)x[(size_t)i * IC + k] * W[(size_t)k * OC + o];
                    rdx[(size_t)i * IC + k] += d * W[(size_t)k * OC + o];
                    rdW[(size_t)k * OC + o] += (double)x[(size_t)i * IC + k] * d;
                }
                ref[(size_t)i * OC + o] = s;
                rdb[o] += d;
            }
        store_ref(m, ref, NO);
        store_ref(m, rdx, NI);
        float *g;
        check(m, "matmul_fwd out", g = get(m, tout, NO), ref, NO, m->rtol), free(g);
        if (with_dinp) check(m, "matmul_bwd dinp", g = get(m, tdx, NI), rdx, NI, m->rtol), free(g);
        check(m, "matmul_bwd dW", g = get(m, tdW, IO), rdW, IO, 2e-5), free(g);
        if (with_dbias) check(m, "matmul_bwd dbias", g = get(m, tdb, OC), rdb, OC, 2e-5), free(g);
        free(ref), free(rdx), free(rdW), free(rdb);
    }
    FREE_T(tx, tW, tb, tout, tdo, tdx, tdW, tdb);
    free(x), free(W), free(bias), free(dout), free(dx0), free(dW0), free(db0);
}

static void test_logits(mode *m, int N, int C, int Vp)
{
    const size_t NC = (size_t)N * C, NV = (size_t)N * Vp, VC = (size_t)Vp * C;
    float *x = hrand(NC, 1, m->prec), *wte = hrand(VC, 1, m->prec), *dout = hrand(NV, 1, m->prec);
    float *dx0 = hrand(NC, 1, m->prec), *dwte0 = hrand(VC, 1, PILE_PRECISION_FP32);
    pile_tensor tx = put(m, m->cdt, x, NC), twte = put(m, m->cdt, wte, VC), tout = put(m, m->cdt, NULL, NV);
    pile_tensor tdo = put(m, m->cdt, dout, NV), tdx = put(m, m->cdt, dx0, NC), tdwte = put(m, F32, dwte0, VC);
    pile_backend_logits_fwd(m->be, tout, tx, twte, N, C, Vp);
    pile_backend_logits_bwd(m->be, tdx, tdwte, tdo, tx, twte, N, C, Vp);
    if (synced(m, "logits")) {
        double *ref = malloc(NV * sizeof *ref), *rdx = dbl(dx0, NC), *rdwte = dbl(dwte0, VC);
        for (int i = 0; i < N; i++)
            for (int v = 0; v < Vp; v++) {
                double s = 0, d = dout[(size_t)i * Vp + v];
                for (int c = 0; c < C; c++) {
                    s += (double)x[(size_t)i * C + c] * wte[(size_t)v * C + c];
                    rdx[(size_t)i * C + c] += d * wte[(size_t)v * C + c];
                    rdwte[(size_t)v * C + c] += d * x[(size_t)i * C + c];
                }
                ref[(size_t)i * Vp + v] = s;
            }
        store_ref(m, ref, NV);
        store_ref(m, rdx, NC);
        float *g;
        check(m, "logits_fwd out", g = get(m, tout, NV), ref, NV, m->rtol), free(g);
        check(m, "logits_bwd dinp", g = get(m, tdx, NC), rdx, NC, m->rtol), free(g);
        check(m, "logits_bwd dwte", g = get(m, tdwte, VC), rdwte, VC, 2e-5), free(g);
        free(ref), free(rdx), free(rdwte);
    }
    FREE_T(tx, twte, tout, tdo, tdx, tdwte);
    free(x), free(wte), free(dout), free(dx0), free(dwte0);
}

/* --------------------------------------------------------- attention */

/* doc_start per position: kind 0 none (NULL), 1 documents starting with
 * probability 1/len at each position, 2 any start in 0..t */
static int32_t *doc_starts(int B, int T, int kind, int len)
{
    if (!kind) return NULL;
    int32_t *ds = malloc((size_t)B * T * sizeof *ds);
    for (int b = 0; b < B; b++) {
        int cur = 0;
        for (int t = 0; t < T; t++) {
            if (kind == 2) cur = (int)(pile_test_rng() % (uint64_t)(t + 1));
            else if (t > 0 && pile_test_rng() % (uint64_t)len == 0) cur = t;
            ds[(size_t)b * T + t] = cur;
        }
    }
    return ds;
}

/* The attention of one (b, h, t): the probabilities p[lo..t] (scaled,
 * masked softmax in double); returns lo. */
static int att_probs(double *p, const float *qkv, const int32_t *ds, int b, int h, int t, int T, int C, int hs)
{
    const size_t C3 = (size_t)3 * C;
    const int lo = ds ? ds[(size_t)b * T + t] : 0;
    const float *q = qkv + ((size_t)b * T + t) * C3 + (size_t)h * hs;
    double mx = -INFINITY, sum = 0;
    for (int s = lo; s <= t; s++) {
        const float *k = qkv + ((size_t)b * T + s) * C3 + C + (size_t)h * hs;
        double d = 0;
        for (int i = 0; i < hs; i++) d += (double)q[i] * k[i];
        p[s] = d / sqrt((double)hs);
        mx = p[s] > mx ? p[s] : mx;
    }
    for (int s = lo; s <= t; s++) sum += (p[s] = exp(p[s] - mx));
    for (int s = lo; s <= t; s++) p[s] /= sum;
    return lo;
}

static void test_attention(mode *m, int B, int T, int C, int NH, int kind, int len)
{
    const int hs = C / NH;
    const size_t N = (size_t)B * T, NC = N * C, N3 = N * 3 * C, C3 = (size_t)3 * C;
    float *qkv = hrand(N3, 2, m->prec), *dout = hrand(NC, 1, m->prec), *dq0 = hrand(N3, 1, m->prec);
    int32_t *ds = doc_starts(B, T, kind, len);
    const size_t nsv = pile_backend_attention_saved_bytes(m->be, B, T, C, NH);
    const size_t nsc = pile_backend_attention_scratch_bytes(m->be, B, T, C, NH);
    pile_tensor tq = put(m, m->cdt, qkv, N3), tout = put(m, m->cdt, NULL, NC), tdo = put(m, m->cdt, dout, NC);
    pile_tensor tdq = put(m, m->cdt, dq0, N3), tds = ds ? put_i32(m, ds, N) : NONE;
    /* saved and scratch start as junk: what was there must not matter */
    pile_tensor tsv = pile_backend_alloc(m->be, U8, nsv + 1), tsc = pile_backend_alloc(m->be, U8, nsc + 1);
    unsigned char *junk = malloc(nsv + nsc + 2);
    for (size_t i = 0; i < nsv + nsc + 2; i++) junk[i] = (unsigned char)(0xA5 ^ i);
    if (tsv.data) pile_backend_upload(m->be, tsv, junk, nsv + 1);
    if (tsc.data) pile_backend_upload(m->be, tsc, junk + nsv + 1, nsc + 1);
    pile_backend_attention_fwd(m->be, tout, tsv, tsc, tq, tds, B, T, C, NH);
    float *out = synced(m, "attention_fwd") ? get(m, tout, NC) : NULL;
    if (out) {
        double *ref = malloc(NC * sizeof *ref), *p = malloc((size_t)T * sizeof *p);
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++)
                for (int t = 0; t < T; t++) {
                    int lo = att_probs(p, qkv, ds, b, h, t, T, C, hs);
                    for (int i = 0; i < hs; i++) {
                        double o = 0;
                        for (int s = lo; s <= t; s++) o += p[s] * qkv[((size_t)b * T + s) * C3 + 2 * C + (size_t)h * hs + i];
                        ref[((size_t)b * T + t) * C + (size_t)h * hs + i] = o;
                    }
                }
        store_ref(m, ref, NC);
        check(m, "attention_fwd out", out, ref, NC, m->rtol);
        /* the backward, given the backend's own out (as stored): its
         * D = rowsum(dout * out) is part of the function computed */
        pile_backend_attention_bwd(m->be, tdq, tsc, tdo, tq, tout, tsv, tds, B, T, C, NH);
        if (synced(m, "attention_bwd")) {
            double *rdq = dbl(dq0, N3), *dp = malloc((size_t)T * sizeof *dp);
            for (int b = 0; b < B; b++)
                for (int h = 0; h < NH; h++)
                    for (int t = 0; t < T; t++) {
                        int lo = att_probs(p, qkv, ds, b, h, t, T, C, hs);
                        const size_t row = (size_t)b * T + t, hc = (size_t)h * hs;
                        const float *d = dout + row * C + hc, *o = out + row * C + hc, *q = qkv + row * C3 + hc;
                        double D = 0;
                        for (int i = 0; i < hs; i++) D += (double)d[i] * o[i];
                        for (int s = lo; s <= t; s++) {
                            const float *v = qkv + ((size_t)b * T + s) * C3 + 2 * C + hc;
                            dp[s] = 0;
                            for (int i = 0; i < hs; i++) dp[s] += (double)d[i] * v[i];
                        }
                        for (int s = lo; s <= t; s++) {
                            const double dsc = p[s] * (dp[s] - D) / sqrt((double)hs);
                            const size_t srow = ((size_t)b * T + s) * C3;
                            for (int i = 0; i < hs; i++) {
                                rdq[row * C3 + hc + i] += dsc * qkv[srow + C + hc + i];
                                rdq[srow + C + hc + i] += dsc * q[i];
                                rdq[srow + 2 * C + hc + i] += p[s] * d[i];
                            }
                        }
                    }
            store_ref(m, rdq, N3);
            float *g;
            check(m, "attention_bwd dqkv", g = get(m, tdq, N3), rdq, N3, m->rtol), free(g);
            free(rdq), free(dp);
        }
        free(ref), free(p);
    }
    FREE_T(tq, tout, tdo, tdq, tds, tsv, tsc);
    free(out), free(qkv), free(dout), free(dq0), free(ds), free(junk);
}

static void test_attention_decode(mode *m, int t, int C, int NH)
{
    const int hs = C / NH, n = t + 1;
    const size_t nc = (size_t)n * C;
    float *q = hrand(C, 2, m->prec), *kc = hrand(nc, 2, m->prec), *vc = hrand(nc, 1, m->prec);
    pile_tensor tq = put(m, m->cdt, q, C), tk = put(m, m->cdt, kc, nc), tv = put(m, m->cdt, vc, nc);
    pile_tensor tout = put(m, m->cdt, NULL, C), tatt = put(m, F32, NULL, (size_t)NH * n);
    pile_backend_attention_decode(m->be, tout, tatt, tq, tk, tv, t, C, NH);
    if (synced(m, "attention_decode")) {
        double *ref = malloc((size_t)C * sizeof *ref), *ratt = malloc((size_t)NH * n * sizeof *ratt);
        for (int h = 0; h < NH; h++) {
            double mx = -INFINITY, sum = 0, *p = ratt + (size_t)h * n;
            for (int s = 0; s < n; s++) {
                double d = 0;
                for (int i = 0; i < hs; i++) d += (double)q[h * hs + i] * kc[(size_t)s * C + h * hs + i];
                p[s] = d / sqrt((double)hs);
                mx = p[s] > mx ? p[s] : mx;
            }
            for (int s = 0; s < n; s++) sum += (p[s] = exp(p[s] - mx));
            for (int s = 0; s < n; s++) p[s] /= sum;
            for (int i = 0; i < hs; i++) {
                double o = 0;
                for (int s = 0; s < n; s++) o += p[s] * vc[(size_t)s * C + h * hs + i];
                ref[h * hs + i] = o;
            }
        }
        store_ref(m, ref, C);
        float *g;
        check(m, "attention_decode out", g = get(m, tout, C), ref, C, m->rtol), free(g);
        check(m, "attention_decode att", g = get(m, tatt, (size_t)NH * n), ratt, (size_t)NH * n, 2e-5), free(g);
        free(ref), free(ratt);
    }
    FREE_T(tq, tk, tv, tout, tatt);
    free(q), free(kc), free(vc);
}

/* ------------------------------------------------ element-wise ops */

static double gelu(double x)
{
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

static double gelu_grad(double x)
{
    const double k = sqrt(2.0 / M_PI), u = k * (x + 0.044715 * x * x * x), th = tanh(u);
    return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * k * (1.0 + 3.0 * 0.044715 * x * x);
}

static void test_gelu(mode *m, size_t n, double amp)
{
    float *x = hrand(n, amp, m->prec), *dout = hrand(n, 1, m->prec), *dx0 = hrand(n, 1, m->prec);
    pile_tensor tx = put(m, m->cdt, x, n), tout = put(m, m->cdt, NULL, n), tdo = put(m, m->cdt, dout, n);
    pile_tensor tdx = put(m, m->cdt, dx0, n);
    pile_backend_gelu_fwd(m->be, tout, tx, n);
    pile_backend_gelu_bwd(m->be, tdx, tx, tdo, n);
    if (synced(m, "gelu")) {
        double *ref = malloc(n * sizeof *ref), *rdx = dbl(dx0, n);
        for (size_t i = 0; i < n; i++) ref[i] = gelu(x[i]), rdx[i] += gelu_grad(x[i]) * dout[i];
        store_ref(m, ref, n);
        store_ref(m, rdx, n);
        float *g;
        check(m, "gelu_fwd out", g = get(m, tout, n), ref, n, m->rtol), free(g);
        check(m, "gelu_bwd dinp", g = get(m, tdx, n), rdx, n, m->rtol), free(g);
        free(ref), free(rdx);
    }
    FREE_T(tx, tout, tdo, tdx);
    free(x), free(dout), free(dx0);
}

/* out = a + b into a third tensor, then in place (out is a) */
static void test_add(mode *m, size_t n)
{
    float *a = hrand(n, 3, m->prec), *b = hrand(n, 1, m->prec);
    pile_tensor ta = put(m, m->cdt, a, n), tb = put(m, m->cdt, b, n), tout = put(m, m->cdt, NULL, n);
    pile_backend_add(m->be, tout, ta, tb, n);
    pile_backend_add(m->be, ta, ta, tb, n);
    if (synced(m, "add")) {
        double *ref = malloc(n * sizeof *ref);
        for (size_t i = 0; i < n; i++) ref[i] = (double)a[i] + b[i];
        store_ref(m, ref, n);
        float *g;
        check(m, "add out", g = get(m, tout, n), ref, n, m->rtol), free(g);
        check(m, "add in place", g = get(m, ta, n), ref, n, m->rtol), free(g);
        free(ref);
    }
    FREE_T(ta, tb, tout);
    free(a), free(b);
}

/* keep = a 24-bit draw of splitmix64 at (seed, i) >= p 2^24 (backend.h:
 * a pure function of (seed, i), the same mask on every backend) */
static void test_dropout(mode *m, size_t n, float p, uint64_t seed)
{
    float *x = hrand(n, 1, m->prec);
    for (size_t i = 0; i < n; i++) x[i] = x[i] == 0.0f ? 0.5f : x[i]; /* a dropped value is then 0 only if dropped */
    pile_tensor tx = put(m, m->cdt, x, n);
    pile_backend_dropout(m->be, tx, n, p, seed);
    if (synced(m, "dropout")) {
        double *ref = malloc(n * sizeof *ref);
        const uint32_t thresh = (uint32_t)ceil((double)p * 16777216.0);
        const float s = 1.0f / (1.0f - p);
        size_t dropped = 0;
        for (size_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)(pile__mix64(seed + (i + 1) * PILE__GOLDEN) >> 40);
            int keep = p <= 0.0f || u >= thresh;
            ref[i] = keep ? (double)x[i] * s : 0.0;
            dropped += !keep;
        }
        store_ref(m, ref, n);
        float *g = get(m, tx, n);
        check(m, "dropout x", g, ref, n, m->rtol);
        size_t mism = 0;
        for (size_t i = 0; g && i < n; i++) mism += (g[i] == 0.0f) != (ref[i] == 0.0);
        if (mism) PILE_FAIL_("%s dropout: %zu positions with another mask than (seed, i) gives", m->label, mism);
        printf("# %s dropout p=%g: %zu of %zu dropped\n", m->label, (double)p, dropped, n);
        free(g), free(ref);
    }
    FREE_T(tx);
    free(x);
}

/* ---------------------------------------------------- cross-entropy */

static void test_softmax_ce(mode *m, int N, int V, int Vp, float grad_scale)
{
    const size_t NV = (size_t)N * Vp;
    float *x = hrand(NV, 4, m->prec);
    int32_t *tgt = malloc((size_t)N * sizeof *tgt);
    for (int i = 0; i < N; i++) {
        float *r = x + (size_t)i * Vp;
        for (int j = V; j < Vp; j++) r[j] = 1000.0f; /* padded columns: never probability */
        tgt[i] = i % 5 == 3 ? -1 : (int32_t)(pile_test_rng() % (uint64_t)V);
        if (i % 4 == 1 && V > 2) { /* a tie for the maximum: the lowest id wins */
            int a = (int)(pile_test_rng() % (uint64_t)(V / 2)), b = a + 1 + (int)(pile_test_rng() % (uint64_t)(V - a - 1));
            r[a] = r[b] = 8.0f;
            tgt[i] = i % 8 == 1 ? a : b;
        }
    }
    pile_tensor tx = put(m, m->cdt, x, NV), tl = put(m, F32, NULL, N), tt = put_i32(m, tgt, N);
    pile_tensor tc = put_i32(m, NULL, N);
    pile_backend_softmax_ce(m->be, tx, tl, tc, tt, N, V, Vp, grad_scale);
    if (synced(m, "softmax_ce")) {
        double *rl = malloc((size_t)N * sizeof *rl), *rg = malloc(NV * sizeof *rg);
        int32_t *rc = malloc((size_t)N * sizeof *rc);
        for (int i = 0; i < N; i++) {
            const float *r = x + (size_t)i * Vp;
            double mx = r[0], sum = 0;
            int am = 0;
            for (int j = 1; j < V; j++)
                if (r[j] > mx) mx = r[j], am = j;
            for (int j = 0; j < V; j++) sum += exp(r[j] - mx);
            const int use = tgt[i] >= 0;
            rl[i] = use ? log(sum) + mx - r[tgt[i]] : 0.0;
            rc[i] = use && am == tgt[i];
            for (int j = 0; j < Vp; j++)
                rg[(size_t)i * Vp + j] = !grad_scale ? r[j]
                                         : use && j < V ? (exp(r[j] - mx) / sum - (j == tgt[i])) * grad_scale
                                                        : 0.0;
        }
        if (grad_scale) store_ref(m, rg, NV);
        float *g;
        check(m, "softmax_ce losses", g = get(m, tl, N), rl, N, 2e-5), free(g);
        check(m, grad_scale ? "softmax_ce dlogits" : "softmax_ce logits untouched", g = get(m, tx, NV), rg, NV,
              grad_scale ? m->rtol : 0.0),
            free(g);
        int32_t *c = get_i32(m, tc, N);
        for (int i = 0; c && i < N; i++)
            if (c[i] != rc[i]) {
                PILE_FAIL_("%s softmax_ce correct[%d] = %d, want %d (target %d)", m->label, i, c[i], rc[i], tgt[i]);
                break;
            }
        for (int i = N; c && i < N + PAD; i++)
            if (c[i] != INT32_MIN + 7) {
                PILE_FAIL_("%s softmax_ce: correct written past row %d", m->label, N);
                break;
            }
        free(c), free(rl), free(rg), free(rc);
    }
    FREE_T(tx, tl, tt, tc);
    free(x), free(tgt);
}

/* --------------------------------------------------------- optimizer */

static void test_optimizer(mode *m, size_t n)
{
    float *x = hrand(n, 1, PILE_PRECISION_FP32), *g = hrand(n, 0.1, PILE_PRECISION_FP32);
    float *mm = hrand(n, 0.01, PILE_PRECISION_FP32), *v = hrand(n, 1, PILE_PRECISION_FP32);
    for (size_t i = 0; i < n; i++) v[i] = v[i] * v[i] * 1e-3f;
    pile_tensor tx = put(m, F32, x, n), tg = put(m, F32, g, n), tm = put(m, F32, mm, n), tv = put(m, F32, v, n);
    pile_tensor tp = put(m, F32, x, n);
    double ss = 0;
    for (size_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    double got = pile_backend_sumsq(m->be, tx, n);
    if (!(fabs(got - ss) <= 1e-10 * ss)) PILE_FAIL_("%s sumsq over %zu: %.17g, want %.17g", m->label, n, got, ss);
    pile_backend_scale(m->be, tx, n, 0.37f);
    const float lr = 3e-3f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f;
    const int64_t t = 7;
    pile_backend_adamw(m->be, tp, tg, tm, tv, n, lr, b1, b2, eps, wd, t);
    if (synced(m, "scale, adamw")) {
        double *rs = malloc(n * sizeof *rs), *rp = malloc(n * sizeof *rp), *rm = malloc(n * sizeof *rm);
        double *rv = malloc(n * sizeof *rv);
        const double bc1 = 1 - pow(b1, (double)t), bc2 = 1 - pow(b2, (double)t);
        for (size_t i = 0; i < n; i++) {
            rs[i] = (double)x[i] * 0.37f;
            rm[i] = (double)b1 * mm[i] + (1.0 - (double)b1) * g[i];
            rv[i] = (double)b2 * v[i] + (1.0 - (double)b2) * g[i] * g[i];
            rp[i] = (double)x[i] * (1.0 - (double)lr * wd) - (double)lr * (rm[i] / bc1) / (sqrt(rv[i] / bc2) + eps);
        }
        float *h;
        check(m, "scale", h = get(m, tx, n), rs, n, 2e-7), free(h);
        check(m, "adamw p", h = get(m, tp, n), rp, n, 2e-5), free(h);
        check(m, "adamw m", h = get(m, tm, n), rm, n, 2e-5), free(h);
        check(m, "adamw v", h = get(m, tv, n), rv, n, 2e-5), free(h);
        free(rs), free(rp), free(rm), free(rv);
    }
    FREE_T(tx, tg, tm, tv, tp);
    free(x), free(g), free(mm), free(v);
}

/* ------------------------------------------------------------- runs */

/* Every op, several shapes each (odd sizes, rows not a multiple of any
 * tile, document masks), in one backend and mode. */
static void run_mode(const char *backend, pile_precision prec)
{
    static const double rtol[] = {[PILE_PRECISION_FP32] = 2e-5, [PILE_PRECISION_BF16] = 0x1p-7,
                                  [PILE_PRECISION_FP16] = 0x1p-10};
    mode m = {.backend = backend, .prec = prec, .rtol = rtol[prec]};
    snprintf(m.label, sizeof m.label, "%s %s", backend, pile_precision_name(prec));
    /* TAP prints a case's name when the next one starts: each keeps its own */
    static char names[96][112];
    pile_err err;
#define CASE(what, ...)                                                                \
    do {                                                                               \
        char *name_ = names[pile_test_n % 96];                                         \
        snprintf(name_, sizeof names[0], "%s: %s", m.label, what);                     \
        TEST(name_);                                                                   \
        if (mode_open(&m, &err) < 0) {                                                 \
            PILE_FAIL_("cannot open the %s backend: %s", backend, err.msg);            \
        } else {                                                                       \
            __VA_ARGS__;                                                               \
            /* the test's own tensors all freed (a device's scratch may stay) */   \
            if (pile_backend_host_memory(m.be) && pile_backend_bytes_in_use(m.be) != 0) \
                PILE_FAIL_("%s: %zu bytes not freed", m.label, pile_backend_bytes_in_use(m.be)); \
        }                                                                              \
        pile_backend_close(m.be);                                                      \
        m.be = NULL;                                                                   \
    } while (0)

    if (prec == PILE_PRECISION_FP32) CASE("convert between f32, bf16, f16", test_convert(&m, 5000));
    CASE("embed fwd/bwd", test_embed(&m, 1, 1, 1, 64); test_embed(&m, 3, 37, 40, 128); test_embed(&m, 2, 67, 96, 192));
    CASE("layernorm fwd/bwd", test_layernorm(&m, 1, 1); test_layernorm(&m, 37, 13); test_layernorm(&m, 130, 768);
         test_layernorm(&m, 257, 96));
    CASE("matmul fwd/bwd", test_matmul(&m, 1, 1, 1, 1, 1, 1); test_matmul(&m, 37, 19, 23, 1, 1, 1);
         test_matmul(&m, 130, 64, 96, 0, 1, 0); test_matmul(&m, 67, 768, 129, 1, 0, 1);
         test_matmul(&m, 257, 128, 384, 1, 1, 1));
    CASE("logits fwd/bwd", test_logits(&m, 1, 8, 64); test_logits(&m, 37, 24, 128); test_logits(&m, 130, 64, 192));
    CASE("attention fwd/bwd, causal", test_attention(&m, 1, 1, 8, 1, 0, 0); test_attention(&m, 2, 17, 24, 3, 0, 0);
         test_attention(&m, 1, 130, 96, 2, 0, 0); test_attention(&m, 1, 300, 128, 2, 0, 0));
    CASE("attention fwd/bwd, document masks", test_attention(&m, 3, 67, 64, 4, 1, 9);
         test_attention(&m, 2, 33, 40, 5, 2, 0); test_attention(&m, 2, 257, 128, 2, 1, 60));
    CASE("attention decode", test_attention_decode(&m, 0, 8, 1); test_attention_decode(&m, 36, 48, 6);
         test_attention_decode(&m, 299, 64, 4));
    CASE("gelu fwd/bwd", test_gelu(&m, 1, 5); test_gelu(&m, 1001, 5); test_gelu(&m, 65537, 8));
    CASE("add", test_add(&m, 1); test_add(&m, 4097); test_add(&m, 100003));
    CASE("dropout", test_dropout(&m, 1001, 0.0f, 5); test_dropout(&m, 4099, 0.1f, 77);
         test_dropout(&m, 100003, 0.5f, 1234567890123ull));
    CASE("softmax cross-entropy", test_softmax_ce(&m, 1, 1, 64, 1.0f); test_softmax_ce(&m, 7, 50, 64, 0.0f);
         test_softmax_ce(&m, 37, 1000, 1024, 1.0f / 37); test_softmax_ce(&m, 5, 50257, 50304, 0.25f));
    if (prec == PILE_PRECISION_FP32)
        CASE("sumsq, scale, adamw (f32)", test_optimizer(&m, 1); test_optimizer(&m, 1000);
             test_optimizer(&m, (1u << 20) + 3));
#undef CASE
}

int main(void)
{
    pile_test_rng_state = 0x5eed0009;
    static const pile_precision precs[] = {PILE_PRECISION_FP32, PILE_PRECISION_BF16, PILE_PRECISION_FP16};
    for (int i = 0; i < 3; i++) run_mode("cpu", precs[i]);
    pile_err err;
    const int cuda = pile_backend_probe("cuda", &err) == 0;
    if (cuda) {
        for (int i = 0; i < 3; i++) run_mode("cuda", precs[i]);
    } else {
        printf("# cuda: %s\n", err.msg);
    }
    int rc = TEST_DONE();
    if (rc == 0 && !cuda) {
        printf("cuda: no device, skipped\n");
        return 77;
    }
    return rc;
}
