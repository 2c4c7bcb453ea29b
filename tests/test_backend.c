/* Tests of the CPU backend (trainer/backend_cpu.c): each forward against a
 * naive double-precision loop, each backward against central finite
 * differences of L = sum(out * w) (w fixed random) taken on that double
 * forward, bit-identical reruns, the cross-entropy, AdamW and dropout
 * contracts, and the allocator's bookkeeping.
 * Tolerances: forward |got - ref| <= 2e-5 * (1 + |ref|); gradients
 * |got - fd| <= 1e-4 * (1 + |fd|) with h = 1e-3 (fd's own error is ~1e-6). */
#include <math.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>

#include "backend.h"
#include "pile_test.h"

#define FWD_TOL 2e-5
#define GRAD_TOL 1e-4
#define FD_H 1e-3

static pile_backend *be;

static double urand(void) /* [-1, 1) */
{
    return (double)(pile_test_rng() >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

static float *hrand(size_t n, double amp)
{
    float *h = malloc((n ? n : 1) * sizeof *h);
    for (size_t i = 0; i < n; i++) h[i] = (float)(amp * urand());
    return h;
}

static double *todouble(const float *f, size_t n)
{
    double *d = malloc((n ? n : 1) * sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = f[i];
    return d;
}

/* Backend tensors by bytes, as the tests size them (their host arrays). */
static pile_tensor talloc(pile_backend *b, pile_dtype dt, size_t bytes)
{
    return pile_backend_alloc(b, dt, bytes / pile_dtype_size(dt));
}

static void up(pile_backend *b, pile_tensor d, const void *h, size_t bytes)
{
    pile_backend_upload(b, d, h, bytes / pile_dtype_size(d.dtype));
}

static void down(pile_backend *b, void *h, pile_tensor d, size_t bytes)
{
    pile_backend_download(b, h, d, bytes / pile_dtype_size(d.dtype));
}

static pile_tensor dput(const void *h, size_t bytes, pile_dtype dt)
{
    pile_tensor d = talloc(be, dt, bytes);
    if (d.data && h) up(be, d, h, bytes);
    return d;
}

static float *dget(pile_tensor d, size_t n)
{
    float *h = malloc((n ? n : 1) * sizeof *h);
    down(be, h, d, n * sizeof *h);
    return h;
}

#define F32 PILE_DTYPE_F32
#define I32 PILE_DTYPE_I32
#define U8 PILE_DTYPE_U8
#define NONE PILE_NO_TENSOR

/* Compares got[n] with ref[n]; prints the worst error; returns 0 if within tol. */
static int close_to(const char *what, const float *got, const double *ref, size_t n, double tol)
{
    double worst = 0.0;
    size_t wi = 0;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]) / (1.0 + fabs(ref[i]));
        if (!(e <= tol)) bad = 1; /* NaN fails too */
        if (!(e <= worst)) {
            worst = e;
            wi = i;
        }
    }
    if (bad) printf("# %s: element %zu got %.9g want %.9g\n", what, wi, (double)got[wi], ref[wi]);
    printf("# %s: worst relative error %.3g over %zu values\n", what, worst, n);
    return bad;
}

/* --------------------------------------------------- naive references */

static void ref_embed(double *out, const int32_t *tok, const double *wte, const double *wpe, int B, int T, int C)
{
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            for (int c = 0; c < C; c++)
                out[((size_t)b * T + t) * C + c] = wte[(size_t)tok[b * T + t] * C + c] + wpe[(size_t)t * C + c];
}

static void ref_layernorm(double *out, double *mean, double *rstd, const double *x, const double *w,
                          const double *b, int N, int C)
{
    for (int i = 0; i < N; i++) {
        const double *r = x + (size_t)i * C;
        double m = 0, v = 0;
        for (int c = 0; c < C; c++) m += r[c];
        m /= C;
        for (int c = 0; c < C; c++) v += (r[c] - m) * (r[c] - m);
        v /= C;
        double rs = 1.0 / sqrt(v + 1e-5);
        for (int c = 0; c < C; c++) out[(size_t)i * C + c] = (r[c] - m) * rs * w[c] + b[c];
        if (mean) mean[i] = m;
        if (rstd) rstd[i] = rs;
    }
}

static void ref_matmul(double *out, const double *x, const double *W, const double *bias, int N, int IC, int OC)
{
    for (int i = 0; i < N; i++)
        for (int o = 0; o < OC; o++) {
            double s = bias ? bias[o] : 0.0;
            for (int k = 0; k < IC; k++) s += x[(size_t)i * IC + k] * W[(size_t)k * OC + o];
            out[(size_t)i * OC + o] = s;
        }
}

static void ref_logits(double *out, const double *x, const double *wte, int N, int C, int Vp)
{
    for (int i = 0; i < N; i++)
        for (int v = 0; v < Vp; v++) {
            double s = 0;
            for (int c = 0; c < C; c++) s += x[(size_t)i * C + c] * wte[(size_t)v * C + c];
            out[(size_t)i * Vp + v] = s;
        }
}

static void ref_attention(double *out, double *att, const double *qkv, const int32_t *ds, int B, int T, int C,
                          int NH)
{
    int hs = C / NH;
    double scale = 1.0 / sqrt((double)hs);
    double *row = malloc((size_t)T * sizeof *row);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                int lo = ds ? ds[b * T + t] : 0;
                const double *q = qkv + ((size_t)b * T + t) * 3 * C + h * hs;
                double mx = -INFINITY, sum = 0;
                for (int s = 0; s < T; s++) {
                    row[s] = 0;
                    if (s < lo || s > t) continue;
                    const double *k = qkv + ((size_t)b * T + s) * 3 * C + C + h * hs;
                    double d = 0;
                    for (int i = 0; i < hs; i++) d += q[i] * k[i];
                    row[s] = d * scale;
                    if (row[s] > mx) mx = row[s];
                }
                for (int s = lo; s <= t; s++) {
                    row[s] = exp(row[s] - mx);
                    sum += row[s];
                }
                for (int s = lo; s <= t; s++) row[s] /= sum;
                if (att) memcpy(att + (((size_t)b * NH + h) * T + t) * T, row, (size_t)T * sizeof *row);
                for (int i = 0; i < hs; i++) {
                    double o = 0;
                    for (int s = lo; s <= t; s++) o += row[s] * qkv[((size_t)b * T + s) * 3 * C + 2 * C + h * hs + i];
                    out[((size_t)b * T + t) * C + h * hs + i] = o;
                }
            }
    free(row);
}

/* The attention's backward by the chain rule through the softmax, in
 * double: dq, dk, dv (dqkv[B, T, 3C], overwritten) from dout[B, T, C]. */
static void ref_attention_bwd(double *dqkv, const double *dout, const double *qkv, const int32_t *ds, int B, int T,
                              int C, int NH)
{
    int hs = C / NH;
    size_t C3 = (size_t)3 * C;
    double scale = 1.0 / sqrt((double)hs);
    double *p = malloc((size_t)T * sizeof *p), *dp = malloc((size_t)T * sizeof *dp);
    memset(dqkv, 0, (size_t)B * T * C3 * sizeof *dqkv);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                int lo = ds ? ds[b * T + t] : 0;
                const double *q = qkv + ((size_t)b * T + t) * C3 + h * hs, *d = dout + ((size_t)b * T + t) * C + h * hs;
                double mx = -INFINITY, sum = 0, dot = 0;
                for (int s = lo; s <= t; s++) {
                    const double *k = qkv + ((size_t)b * T + s) * C3 + C + h * hs;
                    double x = 0;
                    for (int i = 0; i < hs; i++) x += q[i] * k[i];
                    p[s] = x * scale;
                    if (p[s] > mx) mx = p[s];
                }
                for (int s = lo; s <= t; s++) sum += (p[s] = exp(p[s] - mx));
                for (int s = lo; s <= t; s++) {
                    const double *v = qkv + ((size_t)b * T + s) * C3 + 2 * C + h * hs;
                    p[s] /= sum;
                    dp[s] = 0;
                    for (int i = 0; i < hs; i++) dp[s] += d[i] * v[i];
                    dot += p[s] * dp[s];
                }
                double *dq = dqkv + ((size_t)b * T + t) * C3 + h * hs;
                for (int s = lo; s <= t; s++) {
                    double dsc = p[s] * (dp[s] - dot) * scale;
                    const double *k = qkv + ((size_t)b * T + s) * C3 + C + h * hs;
                    double *dk = dqkv + ((size_t)b * T + s) * C3 + C + h * hs, *dv = dk + C;
                    for (int i = 0; i < hs; i++) {
                        dq[i] += dsc * k[i];
                        dk[i] += dsc * q[i];
                        dv[i] += p[s] * d[i];
                    }
                }
            }
    free(p), free(dp);
}

static double ref_gelu1(double x)
{
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

/* Returns the loss of row i (0 when ignored), sets *am to the argmax. */
static double ref_ce_row(const double *x, int tgt, int V, int *am)
{
    double mx = x[0];
    *am = 0;
    for (int j = 1; j < V; j++)
        if (x[j] > mx) {
            mx = x[j];
            *am = j;
        }
    if (tgt < 0) return 0.0;
    double s = 0;
    for (int j = 0; j < V; j++) s += exp(x[j] - mx);
    return log(s) + mx - x[tgt];
}

/* ------------------------------------------------- finite differences */

/* The objective under test: reads the perturbed double inputs in G. */
static struct fdctx {
    int B, T, C, NH, N, IC, OC, V, Vp;
    const int32_t *tok, *ds, *tgt;
    double *x0, *x1, *x2; /* the differentiable inputs */
    const double *w;      /* output weights */
    double *out;          /* scratch for the forward */
    size_t nout;
    double gscale;
} G;

typedef void (*fwd_fn)(void);

static double objective(fwd_fn f)
{
    f();
    double s = 0;
    for (size_t i = 0; i < G.nout; i++) s += G.out[i] * G.w[i];
    return s;
}

/* Checks grad[j] (the backend's, minus what was there before) against the
 * central difference for every j, or `sample` random j when n is larger. */
static int fd_check(const char *what, fwd_fn f, double *x, size_t n, const float *after, const float *before,
                    size_t sample)
{
    double worst = 0.0;
    int bad = 0;
    size_t count = n <= sample ? n : sample;
    for (size_t c = 0; c < count; c++) {
        size_t j = n <= sample ? c : (size_t)(pile_test_rng() % n);
        double keep = x[j];
        x[j] = keep + FD_H;
        double fp = objective(f);
        x[j] = keep - FD_H;
        double fm = objective(f);
        x[j] = keep;
        double fd = (fp - fm) / (2 * FD_H);
        double got = (double)after[j] - (before ? (double)before[j] : 0.0);
        double e = fabs(got - fd) / (1.0 + fabs(fd));
        if (!(e <= GRAD_TOL)) {
            if (!bad) printf("# %s: d/dx[%zu] got %.9g, finite difference %.9g\n", what, j, got, fd);
            bad = 1;
        }
        if (e > worst) worst = e;
    }
    printf("# %s: worst gradient error %.3g over %zu checked\n", what, worst, count);
    return bad;
}

/* ---------------------------------------------------------- embedding */

static void fwd_embed(void)
{
    ref_embed(G.out, G.tok, G.x0, G.x1, G.B, G.T, G.C);
}

static void test_embed(int B, int T, int C, int Vp)
{
    size_t n = (size_t)B * T * C;
    int32_t *tok = malloc((size_t)B * T * sizeof *tok);
    for (int i = 0; i < B * T; i++) tok[i] = (int32_t)(pile_test_rng() % (uint64_t)(Vp > 3 ? 3 : Vp)) * (Vp / 3);
    float *wte = hrand((size_t)Vp * C, 1), *wpe = hrand((size_t)T * C, 1), *w = hrand(n, 1);
    float *g0 = hrand((size_t)Vp * C, 1), *g1 = hrand((size_t)T * C, 1);
    pile_tensor dtok = dput(tok, (size_t)B * T * 4, I32);
    pile_tensor dwte = dput(wte, (size_t)Vp * C * 4, F32), dwpe = dput(wpe, (size_t)T * C * 4, F32), dout = dput(NULL, n * 4, F32);
    pile_tensor dgw = dput(g0, (size_t)Vp * C * 4, F32), dgp = dput(g1, (size_t)T * C * 4, F32), dw = dput(w, n * 4, F32);
    pile_backend_embed_fwd(be, dout, dtok, dwte, dwpe, B, T, C);
    pile_backend_embed_bwd(be, dgw, dgp, dw, dtok, B, T, C);
    G = (struct fdctx){.B = B, .T = T, .C = C, .tok = tok, .x0 = todouble(wte, (size_t)Vp * C),
                    .x1 = todouble(wpe, (size_t)T * C), .w = todouble(w, n), .out = malloc(n * 8), .nout = n};
    fwd_embed();
    float *out = dget(dout, n), *gw = dget(dgw, (size_t)Vp * C), *gp = dget(dgp, (size_t)T * C);
    ASSERT(!close_to("embed fwd", out, G.out, n, FWD_TOL));
    ASSERT(!fd_check("embed dwte", fwd_embed, G.x0, (size_t)Vp * C, gw, g0, 400));
    ASSERT(!fd_check("embed dwpe", fwd_embed, G.x1, (size_t)T * C, gp, g1, 400));
    free(out), free(gw), free(gp), free(G.x0), free(G.x1), free((void *)G.w), free(G.out);
    free(tok), free(wte), free(wpe), free(w), free(g0), free(g1);
    pile_backend_free(&dtok), pile_backend_free(&dwte), pile_backend_free(&dwpe);
    pile_backend_free(&dout), pile_backend_free(&dgw), pile_backend_free(&dgp), pile_backend_free(&dw);
}

/* ---------------------------------------------------------- layernorm */

static void fwd_ln(void)
{
    ref_layernorm(G.out, NULL, NULL, G.x0, G.x1, G.x2, G.N, G.C);
}

static void test_layernorm(int N, int C)
{
    size_t n = (size_t)N * C;
    float *x = hrand(n, 2), *wt = hrand((size_t)C, 1), *bs = hrand((size_t)C, 1), *w = hrand(n, 1);
    for (int i = 0; i < N; i++) /* offset rows: the variance must not cancel */
        for (int c = 0; c < C; c++) x[(size_t)i * C + c] += (float)(3 * i);
    float *g0 = hrand(n, 1), *g1 = hrand((size_t)C, 1), *g2 = hrand((size_t)C, 1);
    pile_tensor dx = dput(x, n * 4, F32), dwt = dput(wt, (size_t)C * 4, F32), dbs = dput(bs, (size_t)C * 4, F32);
    pile_tensor dout = dput(NULL, n * 4, F32), dm = dput(NULL, (size_t)N * 4, F32), dr = dput(NULL, (size_t)N * 4, F32);
    pile_tensor dgx = dput(g0, n * 4, F32), dgw = dput(g1, (size_t)C * 4, F32), dgb = dput(g2, (size_t)C * 4, F32), dw = dput(w, n * 4, F32);
    pile_backend_layernorm_fwd(be, dout, dm, dr, dx, dwt, dbs, N, C);
    pile_backend_layernorm_bwd(be, dgx, dgw, dgb, dw, dx, dwt, dm, dr, N, C);
    G = (struct fdctx){.N = N, .C = C, .x0 = todouble(x, n), .x1 = todouble(wt, (size_t)C), .x2 = todouble(bs, (size_t)C),
                    .w = todouble(w, n), .out = malloc(n * 8), .nout = n};
    double *rm = malloc((size_t)N * 8), *rr = malloc((size_t)N * 8);
    ref_layernorm(G.out, rm, rr, G.x0, G.x1, G.x2, N, C);
    float *out = dget(dout, n), *m = dget(dm, (size_t)N), *r = dget(dr, (size_t)N);
    float *gx = dget(dgx, n), *gw = dget(dgw, (size_t)C), *gb = dget(dgb, (size_t)C);
    ASSERT(!close_to("layernorm fwd", out, G.out, n, FWD_TOL));
    ASSERT(!close_to("layernorm mean", m, rm, (size_t)N, FWD_TOL));
    ASSERT(!close_to("layernorm rstd", r, rr, (size_t)N, FWD_TOL));
    ASSERT(!fd_check("layernorm dinp", fwd_ln, G.x0, n, gx, g0, 300));
    ASSERT(!fd_check("layernorm dw", fwd_ln, G.x1, (size_t)C, gw, g1, 300));
    ASSERT(!fd_check("layernorm db", fwd_ln, G.x2, (size_t)C, gb, g2, 300));
    free(out), free(m), free(r), free(gx), free(gw), free(gb), free(rm), free(rr);
    free(G.x0), free(G.x1), free(G.x2), free((void *)G.w), free(G.out);
    free(x), free(wt), free(bs), free(w), free(g0), free(g1), free(g2);
    pile_tensor ds[] = {dx, dwt, dbs, dout, dm, dr, dgx, dgw, dgb, dw};
    for (size_t i = 0; i < sizeof ds / sizeof *ds; i++) pile_backend_free(&ds[i]);
}

/* ------------------------------------------------------------- matmul */

static void fwd_mm(void)
{
    ref_matmul(G.out, G.x0, G.x1, G.x2, G.N, G.IC, G.OC);
}

/* with_bias: bias in the forward and dbias in the backward; with_dinp:
 * dinp != NULL. */
static void test_matmul(int N, int IC, int OC, int with_bias, int with_dinp)
{
    size_t ni = (size_t)N * IC, nw = (size_t)IC * OC, no = (size_t)N * OC;
    float *x = hrand(ni, 1), *W = hrand(nw, 1), *bs = hrand((size_t)OC, 1), *w = hrand(no, 1);
    float *g0 = hrand(ni, 1), *g1 = hrand(nw, 1), *g2 = hrand((size_t)OC, 1);
    pile_tensor dx = dput(x, ni * 4, F32), dW = dput(W, nw * 4, F32), db = dput(bs, (size_t)OC * 4, F32), dout = dput(NULL, no * 4, F32);
    pile_tensor dgx = dput(g0, ni * 4, F32), dgW = dput(g1, nw * 4, F32), dgb = dput(g2, (size_t)OC * 4, F32), dw = dput(w, no * 4, F32);
    pile_backend_matmul_fwd(be, dout, dx, dW, with_bias ? db : NONE, N, IC, OC);
    pile_backend_matmul_bwd(be, with_dinp ? dgx : NONE, dgW, with_bias ? dgb : NONE, dw, dx, dW, N, IC, OC);
    G = (struct fdctx){.N = N, .IC = IC, .OC = OC, .x0 = todouble(x, ni), .x1 = todouble(W, nw),
                    .x2 = with_bias ? todouble(bs, (size_t)OC) : NULL, .w = todouble(w, no), .out = malloc(no * 8),
                    .nout = no};
    fwd_mm();
    float *out = dget(dout, no), *gx = dget(dgx, ni), *gW = dget(dgW, nw), *gb = dget(dgb, (size_t)OC);
    ASSERT(!close_to("matmul fwd", out, G.out, no, FWD_TOL));
    if (with_dinp)
        ASSERT(!fd_check("matmul dinp", fwd_mm, G.x0, ni, gx, g0, 300));
    else
        ASSERT_MEM_EQ(gx, g0, ni * 4); /* NULL dinp: nothing written anywhere */
    ASSERT(!fd_check("matmul dW", fwd_mm, G.x1, nw, gW, g1, 300));
    if (with_bias)
        ASSERT(!fd_check("matmul dbias", fwd_mm, G.x2, (size_t)OC, gb, g2, 300));
    else
        ASSERT_MEM_EQ(gb, g2, (size_t)OC * 4);
    free(out), free(gx), free(gW), free(gb), free(G.x0), free(G.x1), free(G.x2), free((void *)G.w), free(G.out);
    free(x), free(W), free(bs), free(w), free(g0), free(g1), free(g2);
    pile_tensor ds[] = {dx, dW, db, dout, dgx, dgW, dgb, dw};
    for (size_t i = 0; i < sizeof ds / sizeof *ds; i++) pile_backend_free(&ds[i]);
}

static void fwd_logits(void)
{
    ref_logits(G.out, G.x0, G.x1, G.N, G.C, G.Vp);
}

static void test_logits(int N, int C, int Vp)
{
    size_t ni = (size_t)N * C, nw = (size_t)Vp * C, no = (size_t)N * Vp;
    float *x = hrand(ni, 1), *wte = hrand(nw, 1), *w = hrand(no, 1), *g0 = hrand(ni, 1), *g1 = hrand(nw, 1);
    pile_tensor dx = dput(x, ni * 4, F32), dwte = dput(wte, nw * 4, F32), dout = dput(NULL, no * 4, F32);
    pile_tensor dgx = dput(g0, ni * 4, F32), dgw = dput(g1, nw * 4, F32), dw = dput(w, no * 4, F32);
    pile_backend_logits_fwd(be, dout, dx, dwte, N, C, Vp);
    pile_backend_logits_bwd(be, dgx, dgw, dw, dx, dwte, N, C, Vp);
    G = (struct fdctx){.N = N, .C = C, .Vp = Vp, .x0 = todouble(x, ni), .x1 = todouble(wte, nw), .w = todouble(w, no),
                    .out = malloc(no * 8), .nout = no};
    fwd_logits();
    float *out = dget(dout, no), *gx = dget(dgx, ni), *gw = dget(dgw, nw);
    ASSERT(!close_to("logits fwd", out, G.out, no, FWD_TOL));
    ASSERT(!fd_check("logits dinp", fwd_logits, G.x0, ni, gx, g0, 300));
    ASSERT(!fd_check("logits dwte", fwd_logits, G.x1, nw, gw, g1, 300));
    free(out), free(gx), free(gw), free(G.x0), free(G.x1), free((void *)G.w), free(G.out);
    free(x), free(wte), free(w), free(g0), free(g1);
    pile_tensor ds[] = {dx, dwte, dout, dgx, dgw, dw};
    for (size_t i = 0; i < sizeof ds / sizeof *ds; i++) pile_backend_free(&ds[i]);
}

/* ---------------------------------------------------------- attention */

static void fwd_att(void)
{
    ref_attention(G.out, NULL, G.x0, G.ds, G.B, G.T, G.C, G.NH);
}

/* doc_start for B rows of T: kind 1, documents starting at 0 and then
 * with probability 1/mean_len at each position; kind 2, any start in
 * 0..t per position (the contract allows it, no shard makes it). */
static int32_t *make_doc_start(int B, int T, int kind, int mean_len)
{
    int32_t *ds = malloc((size_t)B * T * sizeof *ds);
    for (int b = 0; b < B; b++) {
        int cur = 0;
        for (int t = 0; t < T; t++) {
            if (kind == 2) cur = (int)(pile_test_rng() % (uint64_t)(t + 1));
            else if (t > 0 && pile_test_rng() % (uint64_t)mean_len == 0) cur = t;
            ds[b * T + t] = cur;
        }
    }
    return ds;
}

/* The attention's buffers in backend b for one shape: the output, what
 * the forward saves, scratch, dqkv. */
typedef struct att_bufs {
    pile_tensor qkv, out, dout, dqkv;
    pile_tensor saved, scratch;
    pile_tensor ds;
} att_bufs;

/* Uploads the inputs and fills saved and scratch with junk: what was there
 * before must not leak into the results. */
static att_bufs att_setup(pile_backend *b, const float *qkv, const float *dout, const float *g0, const int32_t *ds,
                          int B, int T, int C, int NH)
{
    size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
    size_t nsv = pile_backend_attention_saved_bytes(b, B, T, C, NH);
    size_t nsc = pile_backend_attention_scratch_bytes(b, B, T, C, NH);
    att_bufs a = {0};
    a.qkv = pile_backend_alloc(b, F32, nq);
    a.out = pile_backend_alloc(b, F32, no);
    a.dout = pile_backend_alloc(b, F32, no);
    a.dqkv = pile_backend_alloc(b, F32, nq);
    a.saved = pile_backend_alloc(b, U8, nsv);
    a.scratch = pile_backend_alloc(b, U8, nsc);
    up(b, a.qkv, qkv, nq * 4);
    up(b, a.dout, dout, no * 4);
    up(b, a.dqkv, g0, nq * 4);
    unsigned char *junk = malloc(nsv > nsc ? nsv : nsc);
    for (size_t i = 0; i < (nsv > nsc ? nsv : nsc); i++) junk[i] = (unsigned char)(pile_test_rng() >> 56);
    up(b, a.saved, junk, nsv);
    up(b, a.scratch, junk, nsc);
    free(junk);
    if (ds) {
        a.ds = pile_backend_alloc(b, I32, (size_t)B * T);
        up(b, a.ds, ds, (size_t)B * T * 4);
    }
    return a;
}

static void att_run(pile_backend *b, att_bufs *a, int B, int T, int C, int NH)
{
    pile_backend_attention_fwd(b, a->out, a->saved, a->scratch, a->qkv, a->ds, B, T, C, NH);
    pile_backend_attention_bwd(b, a->dqkv, a->scratch, a->dout, a->qkv, a->out, a->saved, a->ds, B, T, C, NH);
}

static void att_free(pile_backend *b, att_bufs *a)
{
    (void)b;
    pile_tensor *all[] = {&a->qkv, &a->out, &a->dout, &a->dqkv, &a->saved, &a->scratch, &a->ds};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) pile_backend_free(all[i]);
}

/* Forward and backward against the double-precision reference on fresh
 * random inputs (every output and every gradient entry); with sample > 0
 * also `sample` gradient entries against finite differences of the
 * reference forward (which checks the reference backward itself). The
 * backward accumulates into a random dqkv. kind: 0 causal, 1 documents of
 * mean length mean_len, 2 an arbitrary start per position. */
static void test_attention(int B, int T, int C, int NH, int kind, int mean_len, size_t sample)
{
    size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
    float *qkv = hrand(nq, 1.5), *w = hrand(no, 1), *g0 = hrand(nq, 1);
    int32_t *ds = kind ? make_doc_start(B, T, kind, mean_len) : NULL;
    att_bufs a = att_setup(be, qkv, w, g0, ds, B, T, C, NH);
    att_run(be, &a, B, T, C, NH);
    G = (struct fdctx){.B = B, .T = T, .C = C, .NH = NH, .ds = ds, .x0 = todouble(qkv, nq), .w = todouble(w, no),
                       .out = malloc(no * 8), .nout = no};
    ref_attention(G.out, NULL, G.x0, ds, B, T, C, NH);
    double *rg = malloc(nq * 8);
    ref_attention_bwd(rg, G.w, G.x0, ds, B, T, C, NH);
    float *out = dget(a.out, no), *g = dget(a.dqkv, nq);
    for (size_t i = 0; i < nq; i++) g[i] -= g0[i];
    ASSERT(!close_to("attention fwd", out, G.out, no, FWD_TOL));
    ASSERT(!close_to("attention dqkv vs reference backward", g, rg, nq, GRAD_TOL));
    if (sample) ASSERT(!fd_check("attention dqkv vs finite differences", fwd_att, G.x0, nq, g, NULL, sample));
    free(out), free(g), free(rg), free(G.x0), free((void *)G.w), free(G.out);
    free(qkv), free(w), free(g0), free(ds);
    att_free(be, &a);
}

/* The same bits from 1, 3 and 4 threads: every (b, h) is one thread's. */
static void test_attention_threads(int B, int T, int C, int NH, int kind)
{
    pile_err err, *ep = &err;
    size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
    float *qkv = hrand(nq, 1.5), *w = hrand(no, 1), *g0 = hrand(nq, 1);
    int32_t *ds = kind ? make_doc_start(B, T, kind, 40) : NULL;
    float *res[3][2] = {{NULL}};
    int nth[3] = {1, 3, 4};
    for (int k = 0; k < 3; k++) {
        pile_backend *b = NULL;
        ASSERT_OK(pile_backend_open(&b, "cpu", nth[k], &err), ep);
        if (!b) break;
        att_bufs a = att_setup(b, qkv, w, g0, ds, B, T, C, NH);
        att_run(b, &a, B, T, C, NH);
        res[k][0] = malloc(no * 4);
        res[k][1] = malloc(nq * 4);
        down(b, res[k][0], a.out, no * 4);
        down(b, res[k][1], a.dqkv, nq * 4);
        att_free(b, &a);
        pile_backend_close(b);
    }
    for (int k = 1; k < 3; k++) {
        if (!res[0][0] || !res[k][0]) continue;
        ASSERT_MEM_EQ(res[0][0], res[k][0], no * 4);
        ASSERT_MEM_EQ(res[0][1], res[k][1], nq * 4);
    }
    for (int k = 0; k < 3; k++) free(res[k][0]), free(res[k][1]);
    free(qkv), free(w), free(g0), free(ds);
}

/* Incremental decoding's attention: row t of the full forward, from
 * key/value caches, the same bits with 1 and 4 threads. */
static void test_attention_decode(int T, int C, int NH)
{
    pile_err err, *ep = &err;
    pile_backend *b4 = NULL;
    ASSERT_OK(pile_backend_open(&b4, "cpu", 4, &err), ep);
    if (!b4) return;
    size_t nq = (size_t)T * 3 * C, no = (size_t)T * C;
    float *qkv = hrand(nq, 1.5), *kc = malloc(no * 4), *vc = malloc(no * 4);
    for (int t = 0; t < T; t++) {
        memcpy(kc + (size_t)t * C, qkv + (size_t)t * 3 * C + C, (size_t)C * 4);
        memcpy(vc + (size_t)t * C, qkv + (size_t)t * 3 * C + 2 * C, (size_t)C * 4);
    }
    pile_tensor dq = dput(qkv, nq * 4, F32), dout = dput(NULL, no * 4, F32);
    pile_tensor sv = dput(NULL, pile_backend_attention_saved_bytes(be, 1, T, C, NH), U8);
    pile_tensor sc = dput(NULL, pile_backend_attention_scratch_bytes(be, 1, T, C, NH), U8);
    pile_backend_attention_fwd(be, dout, sv, sc, dq, NONE, 1, T, C, NH);
    float *full = dget(dout, no);
    double *ref = malloc(no * 8);
    for (size_t i = 0; i < no; i++) ref[i] = full[i];
    pile_backend *bs[2] = {be, b4};
    float *rows[2];
    for (int k = 0; k < 2; k++) {
        pile_backend *b = bs[k];
        pile_tensor dk = talloc(b, F32, no * 4), dv = talloc(b, F32, no * 4);
        pile_tensor q = talloc(b, F32, (size_t)C * 4), o = talloc(b, F32, (size_t)C * 4);
        pile_tensor a = talloc(b, F32, (size_t)NH * T * 4); /* decode's [NH, t+1] scratch */
        up(b, dk, kc, no * 4);
        up(b, dv, vc, no * 4);
        rows[k] = malloc(no * 4);
        for (int t = 0; t < T; t++) {
            up(b, q, qkv + (size_t)t * 3 * C, (size_t)C * 4);
            pile_backend_attention_decode(b, o, a, q, dk, dv, t, C, NH);
            down(b, rows[k] + (size_t)t * C, o, (size_t)C * 4);
        }
        pile_tensor all[] = {dk, dv, q, o, a};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++) pile_backend_free(&all[i]);
    }
    ASSERT(!close_to("attention decode vs forward", rows[0], ref, no, FWD_TOL));
    ASSERT_MEM_EQ(rows[0], rows[1], no * 4);
    free(rows[0]), free(rows[1]), free(full), free(ref), free(qkv), free(kc), free(vc);
    pile_backend_free(&dq), pile_backend_free(&dout), pile_backend_free(&sv), pile_backend_free(&sc);
    pile_backend_close(b4);
}

/* ---------------------------------------------------- elementwise ops */

static void fwd_gelu(void)
{
    for (size_t i = 0; i < G.nout; i++) G.out[i] = ref_gelu1(G.x0[i]);
}

static void test_gelu(size_t n, double amp)
{
    float *x = hrand(n, amp), *w = hrand(n, 1), *g0 = hrand(n, 1);
    pile_tensor dx = dput(x, n * 4, F32), dout = dput(NULL, n * 4, F32), dg = dput(g0, n * 4, F32), dw = dput(w, n * 4, F32);
    pile_backend_gelu_fwd(be, dout, dx, n);
    pile_backend_gelu_bwd(be, dg, dx, dw, n);
    G = (struct fdctx){.x0 = todouble(x, n), .w = todouble(w, n), .out = malloc(n * 8), .nout = n};
    fwd_gelu();
    float *out = dget(dout, n), *g = dget(dg, n);
    ASSERT(!close_to("gelu fwd", out, G.out, n, FWD_TOL));
    /* L = sum w gelu(x) is separable: a perturbation moves one term, so
     * the full objective is cheap enough for every element */
    ASSERT(!fd_check("gelu dinp", fwd_gelu, G.x0, n, g, g0, 200));
    free(out), free(g), free(G.x0), free((void *)G.w), free(G.out), free(x), free(w), free(g0);
    pile_backend_free(&dx), pile_backend_free(&dout), pile_backend_free(&dg), pile_backend_free(&dw);
}

static void test_add(size_t n)
{
    float *a = hrand(n, 1), *b = hrand(n, 1);
    pile_tensor da = dput(a, n * 4, F32), db = dput(b, n * 4, F32), dout = dput(NULL, n * 4, F32);
    pile_backend_add(be, dout, da, db, n);
    pile_backend_add(be, da, da, db, n); /* aliased */
    float *out = dget(dout, n), *al = dget(da, n);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += out[i] != a[i] + b[i] || al[i] != a[i] + b[i];
    ASSERT_EQ(bad, 0);
    free(a), free(b), free(out), free(al);
    pile_backend_free(&da), pile_backend_free(&db), pile_backend_free(&dout);
}

static void test_dropout(void)
{
    size_t n = 100003;
    float *x = hrand(n, 1);
    for (size_t i = 0; i < n; i++)
        if (x[i] == 0.0f) x[i] = 0.5f; /* a zero would look dropped */
    pile_tensor d = dput(x, n * 4, F32);
    pile_backend_dropout(be, d, n, 0.0f, 42);
    float *h = dget(d, n);
    ASSERT_MEM_EQ(h, x, n * 4);
    free(h);

    pile_backend_dropout(be, d, n, 0.5f, 42);
    float *m1 = dget(d, n);
    size_t kept = 0, badscale = 0;
    for (size_t i = 0; i < n; i++) {
        if (m1[i] != 0.0f) {
            kept++;
            badscale += m1[i] != x[i] * 2.0f;
        }
    }
    /* binomial(n, 0.5): sd ~158, so +-1000 is > 6 sd */
    printf("# dropout p=0.5 kept %zu of %zu\n", kept, n);
    ASSERT(kept > n / 2 - 1000 && kept < n / 2 + 1000);
    ASSERT_EQ(badscale, 0);

    /* same seed: same mask; the backward applies it to a gradient */
    up(be, d, x, n * 4);
    pile_backend_dropout(be, d, n, 0.5f, 42);
    float *m2 = dget(d, n);
    ASSERT_MEM_EQ(m1, m2, n * 4);
    /* another seed: another mask */
    up(be, d, x, n * 4);
    pile_backend_dropout(be, d, n, 0.5f, 43);
    float *m3 = dget(d, n);
    ASSERT(memcmp(m1, m3, n * 4) != 0);
    size_t both = 0;
    for (size_t i = 0; i < n; i++) both += m1[i] != 0.0f && m3[i] != 0.0f;
    ASSERT(both > n / 4 - 1000 && both < n / 4 + 1000); /* independent masks */

    /* p = 0.1: rate and scale 1/0.9 */
    up(be, d, x, n * 4);
    pile_backend_dropout(be, d, n, 0.1f, 7);
    float *m4 = dget(d, n);
    kept = 0, badscale = 0;
    for (size_t i = 0; i < n; i++)
        if (m4[i] != 0.0f) {
            kept++;
            badscale += m4[i] != x[i] * (1.0f / 0.9f);
        }
    printf("# dropout p=0.1 kept %zu of %zu\n", kept, n);
    ASSERT(kept > n * 9 / 10 - 600 && kept < n * 9 / 10 + 600); /* sd ~95 */
    ASSERT_EQ(badscale, 0);
    /* a prefix of the array draws the prefix of the mask (pure in (seed, i)) */
    up(be, d, x, n * 4);
    pile_backend_dropout(be, d, 1000, 0.1f, 7);
    float *m5 = dget(d, 1000);
    ASSERT_MEM_EQ(m5, m4, 1000 * 4);
    free(x), free(m1), free(m2), free(m3), free(m4), free(m5);
    pile_backend_free(&d);
}

/* ---------------------------------------------------------- softmax CE */

static void fwd_ce(void)
{
    for (int i = 0; i < G.N; i++) {
        int am;
        G.out[i] = G.gscale * ref_ce_row(G.x0 + (size_t)i * G.Vp, G.tgt[i], G.V, &am);
    }
}

static void test_softmax_ce(int N, int V, int Vp)
{
    size_t n = (size_t)N * Vp;
    float *x = hrand(n, 4);
    for (size_t i = 0; i < n; i++)
        if ((int)(i % Vp) >= V) x[i] = 50.0f; /* padded columns: large, must be ignored */
    int32_t *tgt = malloc((size_t)N * 4);
    for (int i = 0; i < N; i++) tgt[i] = (int32_t)(pile_test_rng() % (uint64_t)V);
    tgt[1] = -1;
    tgt[N - 1] = -100;
    /* row 2: a tie for the max between columns 3 and 5, target 5: wrong;
     * row 3: the same tie, target 3: right */
    x[2 * (size_t)Vp + 3] = x[2 * (size_t)Vp + 5] = 9.0f;
    x[3 * (size_t)Vp + 3] = x[3 * (size_t)Vp + 5] = 9.0f;
    tgt[2] = 5;
    tgt[3] = 3;
    /* row 4: a spread of 300 (the target's exponential underflows) */
    x[4 * (size_t)Vp + (tgt[4] + 1) % V] = 150.0f;
    x[4 * (size_t)Vp + tgt[4]] = -150.0f;
    /* row 0: target is the argmax */
    x[tgt[0]] = 8.0f;
    float gs = 0.37f;
    pile_tensor dx = dput(x, n * 4, F32), dl = dput(NULL, (size_t)N * 4, F32);
    pile_tensor dc = dput(NULL, (size_t)N * 4, I32), dt = dput(tgt, (size_t)N * 4, I32);
    /* without the gradient: logits untouched */
    pile_backend_softmax_ce(be, dx, dl, dc, dt, N, V, Vp, 0.0f);
    float *x1 = dget(dx, n), *l1 = dget(dl, (size_t)N);
    ASSERT_MEM_EQ(x1, x, n * 4);
    pile_backend_softmax_ce(be, dx, dl, dc, dt, N, V, Vp, gs);
    float *g = dget(dx, n), *l2 = dget(dl, (size_t)N);
    int32_t *corr = malloc((size_t)N * 4);
    down(be, corr, dc, (size_t)N * 4);
    ASSERT_MEM_EQ(l1, l2, (size_t)N * 4);

    G = (struct fdctx){.N = N, .V = V, .Vp = Vp, .tgt = tgt, .x0 = todouble(x, n), .gscale = gs, .out = malloc((size_t)N * 8),
                    .nout = (size_t)N};
    double *ones = malloc((size_t)N * 8), *rl = malloc((size_t)N * 8);
    for (int i = 0; i < N; i++) ones[i] = 1.0;
    G.w = ones;
    size_t badc = 0;
    for (int i = 0; i < N; i++) {
        int am;
        rl[i] = ref_ce_row(G.x0 + (size_t)i * Vp, tgt[i], V, &am);
        badc += corr[i] != (tgt[i] >= 0 && am == tgt[i]);
    }
    ASSERT(!close_to("softmax_ce losses", l2, rl, (size_t)N, FWD_TOL));
    ASSERT_EQ(badc, 0);
    ASSERT_EQ(corr[0], 1);
    ASSERT_EQ(corr[2], 0);
    ASSERT_EQ(corr[3], 1);
    ASSERT_EQ(corr[1], 0);
    ASSERT(l2[1] == 0.0f && l2[N - 1] == 0.0f);
    size_t nonzero = 0;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < Vp; j++)
            if ((j >= V || tgt[i] < 0) && g[(size_t)i * Vp + j] != 0.0f) nonzero++;
    ASSERT_EQ(nonzero, 0); /* padded columns and ignored rows */
    ASSERT(!fd_check("softmax_ce dlogits", fwd_ce, G.x0, n, g, NULL, 400));
    free(x), free(tgt), free(x1), free(l1), free(g), free(l2), free(corr), free(ones), free(rl);
    free(G.x0), free(G.out);
    pile_backend_free(&dx), pile_backend_free(&dl), pile_backend_free(&dc), pile_backend_free(&dt);
}

/* ---------------------------------------------------------- optimizer */

static void test_optimizer(void)
{
    size_t n = 10007;
    float *x = hrand(n, 3);
    pile_tensor d = dput(x, n * 4, F32);
    double ref = 0;
    for (size_t i = 0; i < n; i++) ref += (double)x[i] * x[i];
    double got = pile_backend_sumsq(be, d, n);
    printf("# sumsq %.17g ref %.17g\n", got, ref);
    ASSERT(fabs(got - ref) <= 1e-12 * ref);
    ASSERT(pile_backend_sumsq(be, d, 0) == 0.0);
    pile_backend_scale(be, d, n, 0.5f);
    float *h = dget(d, n);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) bad += h[i] != x[i] * 0.5f;
    ASSERT_EQ(bad, 0);
    free(h), free(x);
    pile_backend_free(&d);

    /* AdamW: two steps against the formula of backend.h in double */
    size_t m = 1001;
    float *p = hrand(m, 1), *g1 = hrand(m, 1), *g2 = hrand(m, 0.01);
    pile_tensor dp = dput(p, m * 4, F32), dg = dput(g1, m * 4, F32), dm = dput(NULL, m * 4, F32), dv = dput(NULL, m * 4, F32);
    double lr = 3e-4, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1;
    double *rp = todouble(p, m), *rm = calloc(m, 8), *rv = calloc(m, 8);
    for (int t = 1; t <= 2; t++) {
        const float *gg = t == 1 ? g1 : g2;
        if (t == 2) up(be, dg, g2, m * 4);
        pile_backend_adamw(be, dp, dg, dm, dv, m, (float)lr, (float)b1, (float)b2, (float)eps, (float)wd, t);
        for (size_t i = 0; i < m; i++) {
            rp[i] -= lr * wd * rp[i];
            rm[i] = b1 * rm[i] + (1 - b1) * gg[i];
            rv[i] = b2 * rv[i] + (1 - b2) * (double)gg[i] * gg[i];
            rp[i] -= lr * (rm[i] / (1 - pow(b1, t))) / (sqrt(rv[i] / (1 - pow(b2, t))) + eps);
        }
    }
    float *hp = dget(dp, m), *hm = dget(dm, m), *hv = dget(dv, m);
    /* the update is ~lr per element: compare the step p - p0 to 1e-3 of lr */
    double worst = 0;
    for (size_t i = 0; i < m; i++) {
        double e = fabs((double)hp[i] - rp[i]) / lr;
        if (e > worst) worst = e;
    }
    printf("# adamw: worst parameter error %.3g lr\n", worst);
    ASSERT(worst < 1e-3);
    ASSERT(!close_to("adamw m", hm, rm, m, 1e-6));
    ASSERT(!close_to("adamw v", hv, rv, m, 1e-6));
    /* a hand-computed first step: g = 1, p = 1, m = v = 0: m = 0.1, v = 0.001,
     * mhat = 1, vhat = 1, p = (1 - lr wd) - lr / (1 + eps) */
    float one = 1.0f, pp = 1.0f, zero = 0.0f;
    up(be, dp, &pp, 4);
    up(be, dg, &one, 4);
    up(be, dm, &zero, 4);
    up(be, dv, &zero, 4);
    pile_backend_adamw(be, dp, dg, dm, dv, 1, 0.01f, 0.9f, 0.999f, 1e-8f, 0.5f, 1);
    down(be, &pp, dp, 4);
    printf("# adamw hand step: %.9g (want %.9g)\n", (double)pp, 1.0 - 0.005 - 0.01 / (1 + 1e-8));
    ASSERT(fabs(pp - (1.0 - 0.005 - 0.01 / (1 + 1e-8))) < 1e-6);
    free(p), free(g1), free(g2), free(rp), free(rm), free(rv), free(hp), free(hm), free(hv);
    pile_backend_free(&dp), pile_backend_free(&dg), pile_backend_free(&dm), pile_backend_free(&dv);
}

/* --------------------------------------------------------- determinism */

/* Runs every op on one set of inputs and returns the concatenated outputs
 * (forward results and accumulated gradients), *len floats. */
static size_t seg_off[40];
static int nseg;

static float *run_all(pile_backend *b, const float *host, size_t *len)
{
    enum { B = 2, T = 150, C = 96, NH = 4, Vp = 192, V = 180 };
    size_t nbt = (size_t)B * T, n = nbt * C;
    pile_backend *save = be;
    be = b;
    size_t out_len = 0, cap = 40 * n;
    float *res = malloc(cap * sizeof *res);
#define OUT(ptr, cnt)                                                          \
    do {                                                                       \
        seg_off[nseg++] = out_len;                                             \
        down(be, res + out_len, (ptr), (size_t)(cnt) * 4);    \
        out_len += (size_t)(cnt);                                              \
    } while (0)
    int32_t tok[B * T], tgt[B * T];
    for (size_t i = 0; i < nbt; i++) {
        tok[i] = (int32_t)(i * 7 % 5); /* heavy repeats */
        tgt[i] = i % 11 == 0 ? -1 : (int32_t)(i * 13 % V);
    }
    int32_t ds[B * T];
    for (int bb = 0; bb < B; bb++)
        for (int t = 0; t < T; t++) ds[bb * T + t] = t < 40 ? 0 : t < 100 ? 40 : 100;
    pile_tensor dtok = dput(tok, sizeof tok, I32), dtgt = dput(tgt, sizeof tgt, I32), dds = dput(ds, sizeof ds, I32);
    pile_tensor wte = dput(host, (size_t)Vp * C * 4, F32), wpe = dput(host + 1000, (size_t)T * C * 4, F32);
    pile_tensor x = dput(NULL, n * 4, F32), y = dput(NULL, n * 4, F32), qkv = dput(NULL, 3 * n * 4, F32), mean = dput(NULL, nbt * 4, F32);
    pile_tensor rstd = dput(NULL, nbt * 4, F32), W = dput(host + 7, (size_t)C * 3 * C * 4, F32), bias = dput(host + 3, 3 * (size_t)C * 4, F32);
    pile_tensor att = dput(NULL, pile_backend_attention_saved_bytes(be, B, T, C, NH), U8);
    pile_tensor scr = dput(NULL, pile_backend_attention_scratch_bytes(be, B, T, C, NH), U8);
    pile_tensor lg = dput(NULL, nbt * Vp * 4, F32);
    pile_tensor dwte = dput(host + 11, (size_t)Vp * C * 4, F32), dwpe = dput(NULL, (size_t)T * C * 4, F32), dx = dput(NULL, n * 4, F32);
    pile_tensor dqkv = dput(host + 5, 3 * n * 4, F32), dW = dput(NULL, (size_t)C * 3 * C * 4, F32), db = dput(NULL, 3 * (size_t)C * 4, F32);
    pile_tensor ln_w = dput(host + 13, (size_t)C * 4, F32), ln_b = dput(host + 17, (size_t)C * 4, F32);
    pile_tensor dlnw = dput(NULL, (size_t)C * 4, F32), dlnb = dput(NULL, (size_t)C * 4, F32), loss = dput(NULL, nbt * 4, F32);
    pile_tensor corr = dput(NULL, nbt * 4, I32);
    pile_backend_embed_fwd(be, x, dtok, wte, wpe, B, T, C);
    OUT(x, n);
    pile_backend_layernorm_fwd(be, y, mean, rstd, x, ln_w, ln_b, (int)nbt, C);
    OUT(y, n);
    pile_backend_matmul_fwd(be, qkv, y, W, bias, (int)nbt, C, 3 * C);
    OUT(qkv, 3 * n);
    pile_backend_attention_fwd(be, x, att, scr, qkv, dds, B, T, C, NH);
    OUT(x, n);
    pile_tensor atty = dput(NULL, n * 4, F32);
    pile_backend_copy(be, atty, x, n);
    pile_backend_gelu_fwd(be, y, x, n);
    pile_backend_dropout(be, y, n, 0.3f, 99);
    OUT(y, n);
    pile_backend_logits_fwd(be, lg, y, wte, (int)nbt, C, Vp);
    pile_backend_softmax_ce(be, lg, loss, corr, dtgt, (int)nbt, V, Vp, 1.0f / 300);
    OUT(loss, nbt);
    OUT(lg, nbt * Vp);
    pile_backend_logits_bwd(be, dx, dwte, lg, y, wte, (int)nbt, C, Vp);
    OUT(dx, n);
    OUT(dwte, (size_t)Vp * C);
    pile_backend_gelu_bwd(be, dx, x, y, n);
    OUT(dx, n);
    pile_backend_attention_bwd(be, dqkv, scr, dx, qkv, atty, att, dds, B, T, C, NH);
    OUT(dqkv, 3 * n);
    pile_backend_free(&atty);
    pile_backend_matmul_bwd(be, dx, dW, db, dqkv, y, W, (int)nbt, C, 3 * C);
    OUT(dx, n);
    OUT(dW, (size_t)C * 3 * C);
    OUT(db, 3 * (size_t)C);
    pile_backend_layernorm_bwd(be, dx, dlnw, dlnb, y, x, ln_w, mean, rstd, (int)nbt, C);
    OUT(dx, n);
    OUT(dlnw, C);
    OUT(dlnb, C);
    pile_backend_embed_bwd(be, dwte, dwpe, dx, dtok, B, T, C);
    OUT(dwte, (size_t)Vp * C);
    OUT(dwpe, (size_t)T * C);
    seg_off[nseg++] = out_len;
    res[out_len++] = (float)pile_backend_sumsq(be, dW, (size_t)C * 3 * C);
    pile_tensor am = dput(NULL, (size_t)C * 3 * C * 4, F32), av = dput(NULL, (size_t)C * 3 * C * 4, F32);
    pile_backend_adamw(be, W, dW, am, av, (size_t)C * 3 * C, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 3);
    pile_backend_free(&am), pile_backend_free(&av);
    OUT(W, (size_t)C * 3 * C);
#undef OUT
    pile_tensor all[] = {dtok, dtgt, dds, wte, wpe, x, y, qkv, mean, rstd, W, bias, att, scr, lg, dwte, dwpe,
                   dx, dqkv, dW, db, ln_w, ln_b, dlnw, dlnb, loss, corr};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) pile_backend_free(&all[i]);
    pile_err err, *ep = &err;
    ASSERT_OK(pile_backend_sync(be, &err), ep); /* no op refused its operands */
    be = save;
    seg_off[nseg] = out_len;
    *len = out_len;
    return res;
}

static void test_determinism(void)
{
    size_t nh = 200000;
    float *host = hrand(nh, 1);
    pile_err err, *ep = &err;
    pile_backend *b3 = NULL, *b1 = NULL;
    ASSERT_OK(pile_backend_open(&b3, "cpu", 3, &err), ep);
    ASSERT_OK(pile_backend_open(&b1, "cpu", 1, &err), ep);
    if (!b3 || !b1) return;
    size_t l1, l2, l3;
    nseg = 0;
    float *r1 = run_all(b3, host, &l1);
    nseg = 0;
    float *r2 = run_all(b3, host, &l2);
    nseg = 0;
    float *r3 = run_all(b1, host, &l3);
    ASSERT_EQ(l1, l2);
    ASSERT_MEM_EQ(r1, r2, l1 * 4);
    size_t nan = 0;
    for (size_t i = 0; i < l1; i++) nan += !isfinite(r1[i]);
    ASSERT_EQ(nan, 0);
    /* 1 thread against 3: OpenBLAS may round differently, nothing more:
     * each difference within 1e-5 of the largest value of its output */
    ASSERT_EQ(l1, l3);
    size_t same = 0;
    double worst = 0;
    for (int k = 0; k < nseg; k++) {
        double mx = 0;
        for (size_t i = seg_off[k]; i < seg_off[k + 1]; i++) mx = fmax(mx, fabs((double)r1[i]));
        for (size_t i = seg_off[k]; i < seg_off[k + 1]; i++) {
            same += r1[i] == r3[i];
            worst = fmax(worst, fabs((double)r1[i] - r3[i]) / (mx > 0 ? mx : 1));
        }
    }
    printf("# 1 vs 3 threads: %zu of %zu values identical, worst difference %.3g of its output's largest\n", same,
           l1, worst);
    ASSERT(worst < 1e-5);
    free(r1), free(r2), free(r3), free(host);
    pile_backend_close(b3);
    pile_backend_close(b1);
}

/* Ops implemented without BLAS give the same bits with any thread count. */
static void test_thread_independence(void)
{
    pile_err err, *ep = &err;
    pile_backend *b1 = NULL, *b4 = NULL;
    ASSERT_OK(pile_backend_open(&b1, "cpu", 1, &err), ep);
    ASSERT_OK(pile_backend_open(&b4, "cpu", 4, &err), ep);
    if (!b1 || !b4) return;
    enum { N = 300, C = 200, Vp = 64 };
    size_t n = (size_t)N * C;
    float *x = hrand(n, 2), *w = hrand(C, 1), *bb = hrand(C, 1), *dout = hrand(n, 1);
    int32_t tok[N];
    for (int i = 0; i < N; i++) tok[i] = i % 3;
    float *res[2];
    pile_backend *bs[2] = {b1, b4};
    for (int k = 0; k < 2; k++) {
        pile_backend *b = bs[k];
        pile_tensor dx = talloc(b, F32, n * 4), dw = talloc(b, F32, C * 4), db = talloc(b, F32, C * 4);
        pile_tensor dd = talloc(b, F32, n * 4), o = talloc(b, F32, n * 4), m = talloc(b, F32, N * 4);
        pile_tensor r = talloc(b, F32, N * 4), gx = talloc(b, F32, n * 4), gw = talloc(b, F32, C * 4);
        pile_tensor gb = talloc(b, F32, C * 4), gwte = talloc(b, F32, (size_t)Vp * C * 4);
        pile_tensor gwpe = talloc(b, F32, n * 4);
        pile_tensor dt = talloc(b, I32, sizeof tok);
        up(b, dx, x, n * 4), up(b, dw, w, C * 4);
        up(b, db, bb, C * 4), up(b, dd, dout, n * 4);
        up(b, dt, tok, sizeof tok);
        pile_backend_layernorm_fwd(b, o, m, r, dx, dw, db, N, C);
        pile_backend_layernorm_bwd(b, gx, gw, gb, dd, dx, dw, m, r, N, C);
        pile_backend_embed_bwd(b, gwte, gwpe, dd, dt, 1, N, C);
        pile_tensor sW = talloc(b, F32, (size_t)C * C * 4);
        pile_backend_matmul_bwd(b, NONE, sW, gb, dd, dx, sW, N, C, C); /* dbias into gb */
        pile_backend_free(&sW);
        float *h = malloc((2 * n + 2 * C + (size_t)Vp * C + n + 2) * 4);
        down(b, h, o, n * 4);
        down(b, h + n, gx, n * 4);
        down(b, h + 2 * n, gw, C * 4);
        down(b, h + 2 * n + C, gb, C * 4);
        down(b, h + 2 * n + 2 * C, gwte, (size_t)Vp * C * 4);
        down(b, h + 2 * n + 2 * C + (size_t)Vp * C, gwpe, n * 4);
        double s = pile_backend_sumsq(b, dd, n);
        memcpy(h + 3 * n + 2 * C + (size_t)Vp * C, &s, 8);
        res[k] = h;
        pile_tensor all[] = {dx, dw, db, dd, o, m, r, gx, gw, gb, gwte, gwpe, dt};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++) pile_backend_free(&all[i]);
    }
    ASSERT_MEM_EQ(res[0], res[1], (3 * n + 2 * C + (size_t)Vp * C + 2) * 4);
    free(res[0]), free(res[1]), free(x), free(w), free(bb), free(dout);
    pile_backend_close(b1);
    pile_backend_close(b4);
}

/* --------------------------------------------------------------- misc */

static void test_open_alloc(void)
{
    pile_err err, *ep = &err;
    pile_backend *b = (pile_backend *)&err;
    int rc = pile_backend_open(&b, "cuda-nope", 0, &err);
    ASSERT_EQ(rc, PILE_EINVAL);
    ASSERT(b == NULL);
    ASSERT(strstr(err.msg, "cuda-nope") && strstr(err.msg, "cpu"));
    printf("# %s\n", err.msg);
    pile_backend_close(NULL);
    ASSERT_OK(pile_backend_open(&b, "cpu", 0, &err), ep);
    if (!b) return;
    ASSERT(pile_backend_threads(b) >= 1);
    ASSERT_STR_EQ(pile_backend_name(b), "cpu");
    ASSERT_EQ(pile_backend_host_memory(b), 1);
    ASSERT_EQ(pile_backend_bytes_in_use(b), 0);
    pile_tensor pt = pile_backend_alloc(b, U8, 1000), qt = pile_backend_alloc(b, U8, 3);
    unsigned char *p = pt.data, *q = qt.data; /* host memory: readable here */
    ASSERT(p && q);
    ASSERT(pt.n == 1000 && pt.dtype == U8 && pt.be == b);
    ASSERT_EQ((uintptr_t)p % 64, 0);
    ASSERT_EQ((uintptr_t)q % 64, 0);
    ASSERT_EQ(pile_backend_bytes_in_use(b), 1003);
    size_t nz = 0;
    for (int i = 0; i < 1000; i++) nz += p[i] != 0;
    ASSERT_EQ(nz, 0);
    ASSERT(pile_backend_alloc(b, U8, SIZE_MAX - 10).data == NULL);
    ASSERT(pile_backend_alloc(b, F32, SIZE_MAX / 2).data == NULL); /* bytes overflow */
    ASSERT_EQ(pile_backend_bytes_in_use(b), 1003);
    memset(p, 7, 1000);
    pile_backend_zero(b, pile_tensor_slice(pt, 10, 20), 20);
    ASSERT(p[9] == 7 && p[10] == 0 && p[29] == 0 && p[30] == 7);
    /* a big one (its own mapping on the cpu backend): zeroed, aligned, counted */
    size_t nbig = ((size_t)5 << 20) + 3;
    pile_tensor bigt = pile_backend_alloc(b, U8, nbig);
    unsigned char *big = bigt.data;
    ASSERT(big != NULL);
    if (big) {
        ASSERT_EQ((uintptr_t)big % 64, 0);
        ASSERT_EQ(pile_backend_bytes_in_use(b), 1003 + nbig);
        size_t bnz = 0;
        for (size_t i = 0; i < nbig; i += 4093) bnz += big[i] != 0;
        ASSERT_EQ(bnz + big[nbig - 1], 0);
        memset(big, 1, nbig);
        pile_backend_free(&bigt);
    }
    pile_backend_free(&pt);
    ASSERT(pt.data == NULL);
    ASSERT_EQ(pile_backend_bytes_in_use(b), 3);
    pile_backend_free(&qt);
    pile_tensor none = NONE;
    pile_backend_free(&none);
    ASSERT_EQ(pile_backend_bytes_in_use(b), 0);
    ASSERT_OK(pile_backend_sync(b, &err), ep);
    printf("# cpu backend: %d threads\n", pile_backend_threads(b));
    pile_backend_close(b);
}

/* Choosing by name: "auto" and NULL are the default: "cuda" in a build
 * with CUDA on a machine with a usable device, else "cpu", with the reason
 * the device was passed over; "cuda" in a build without CUDA says the
 * build has none, and in one with CUDA but no device says there is none.
 * Two backends live side by side, each with its own memory count. */
static void test_names(void)
{
    pile_err err, *ep = &err;
    pile_backend *a = NULL, *c = NULL;
    const int built = !strcmp(pile_backend_names(), "cuda,cpu");
    ASSERT(built || !strcmp(pile_backend_names(), "cpu"));
    pile_err probe;
    const int device = built && pile_backend_probe("cuda", &probe) == 0;
    const char *def = device ? "cuda" : "cpu";
    ASSERT_STR_EQ(pile_backend_default_name(&err), def);
    if (built && !device) {
        /* the reason for the notice the trainer shows */
        ASSERT_EQ(err.code, PILE_EIO);
        ASSERT(strstr(err.msg, "no CUDA device (cudaGetDeviceCount: "));
        printf("# passed over: %s\n", err.msg);
    } else {
        ASSERT_EQ(err.code, 0);
    }
    ASSERT_OK(pile_backend_open(&a, "auto", 1, &err), ep);
    ASSERT_OK(pile_backend_open(&c, NULL, 2, &err), ep);
    if (a && c) {
        ASSERT_STR_EQ(pile_backend_name(a), def);
        ASSERT_STR_EQ(pile_backend_name(c), def);
        ASSERT_EQ(pile_backend_threads(a), 1);
        pile_tensor t = pile_backend_alloc(a, F32, 10);
        ASSERT(pile_backend_bytes_in_use(a) >= 40); /* a device rounds up to its alignment */
        ASSERT_EQ(pile_backend_bytes_in_use(c), 0);
        pile_backend_free(&t);
    }
    pile_backend_close(a);
    pile_backend_close(c);
    c = (pile_backend *)&err;
    if (!built) {
        ASSERT_EQ(pile_backend_open(&c, "cuda", 0, &err), PILE_ENOENT);
        ASSERT(c == NULL);
        ASSERT(strstr(err.msg, "'cuda'") && strstr(err.msg, "this build has no CUDA backend"));
        printf("# %s\n", err.msg);
        ASSERT_EQ(pile_backend_probe("cuda", &err), PILE_ENOENT);
        ASSERT_STR_EQ(pile_backend_names(), "cpu");
    } else if (!device) {
        ASSERT_EQ(pile_backend_open(&c, "cuda", 0, &err), PILE_EIO);
        ASSERT(c == NULL);
        ASSERT(strstr(err.msg, "no CUDA device (cudaGetDeviceCount: "));
        printf("# %s\n", err.msg);
        ASSERT_EQ(pile_backend_probe("cuda", &err), PILE_EIO);
    } else {
        ASSERT_OK(pile_backend_open(&c, "cuda", 0, &err), ep);
        pile_backend_close(c);
    }
    ASSERT_EQ(pile_backend_probe("cpu", &err), 0);
    ASSERT_EQ(pile_backend_probe("tpu", &err), PILE_EINVAL);
}

/* The memory counts: bytes_in_use follows allocations and frees, the
 * peak keeps the most; reserving is nothing to do on the CPU. */
static void test_bytes_peak(void)
{
    pile_err err, *ep = &err;
    pile_backend *b = NULL;
    if (pile_backend_open(&b, "cpu", 1, &err) < 0) {
        PILE_FAIL_("cannot open: %s", err.msg);
        return;
    }
    ASSERT_OK(pile_backend_reserve(b, (size_t)1 << 20, &err), ep);
    ASSERT_EQ(pile_backend_bytes_in_use(b), 0);
    ASSERT_EQ(pile_backend_bytes_peak(b), 0);
    pile_tensor x = pile_backend_alloc(b, F32, 100), y = pile_backend_alloc(b, PILE_DTYPE_BF16, 50);
    ASSERT_EQ(pile_backend_bytes_in_use(b), 500);
    ASSERT_EQ(pile_backend_bytes_peak(b), 500);
    pile_backend_free(&x);
    ASSERT_EQ(pile_backend_bytes_in_use(b), 100);
    ASSERT_EQ(pile_backend_bytes_peak(b), 500);
    pile_tensor z = pile_backend_alloc(b, F32, 10);
    ASSERT_EQ(pile_backend_bytes_in_use(b), 140);
    ASSERT_EQ(pile_backend_bytes_peak(b), 500);
    pile_backend_free(&y);
    pile_backend_free(&z);
    ASSERT_EQ(pile_backend_bytes_in_use(b), 0);
    ASSERT_EQ(pile_backend_bytes_peak(b), 500);
    pile_backend_close(b);
}

/* The CUDA backend's memory, on a device only (a TAP skip elsewhere):
 * tensors carved from the reserved arena in first-fit order, zeroed,
 * counted at 256-byte granules, a freed block reused, freed neighbours
 * merged back into one, what the arena cannot hold taken from cudaMalloc
 * outside it, a second reserve refused; upload, copy, zero and download
 * round-trip. */
static void test_cuda_memory(void)
{
    pile_err err, *ep = &err;
    pile_backend *g = NULL;
    ASSERT_OK(pile_backend_open(&g, "cuda", 1, &err), ep);
    if (!g) return;
    const size_t MiB = (size_t)1 << 20;
    ASSERT_OK(pile_backend_reserve(g, 4 * MiB, &err), ep);
    ASSERT_EQ(pile_backend_reserve(g, MiB, &err), PILE_EINVAL);
    pile_tensor a = pile_backend_alloc(g, F32, 1000), b = pile_backend_alloc(g, F32, 1000);
    if (!a.data || !b.data) {
        PILE_FAIL_("cannot allocate 2 x 4000 bytes in a 4 MiB arena");
        pile_backend_close(g);
        return;
    }
    char *const start = a.data;
    ASSERT_EQ((char *)b.data - start, 4096); /* first fit: right after a's 4000 bytes, rounded */
    ASSERT_EQ((uintptr_t)start % 64, 0);
    ASSERT_EQ(pile_backend_bytes_in_use(g), 8192);
    static float h[1000], back[1000];
    memset(back, 0xff, sizeof back);
    pile_backend_download(g, back, a, 1000);
    int zeroed = 1;
    for (int i = 0; i < 1000; i++) zeroed &= back[i] == 0.0f;
    ASSERT(zeroed);
    for (int i = 0; i < 1000; i++) h[i] = (float)i + 0.5f;
    pile_backend_upload(g, a, h, 1000);
    pile_backend_copy(g, b, a, 1000);
    pile_backend_zero(g, a, 500);
    pile_backend_download(g, back, b, 1000);
    ASSERT(!memcmp(back, h, sizeof h));
    pile_backend_download(g, back, a, 1000);
    int ok = 1;
    for (int i = 0; i < 1000; i++) ok &= back[i] == (i < 500 ? 0.0f : h[i]);
    ASSERT(ok);
    pile_backend_free(&a);
    ASSERT_EQ(pile_backend_bytes_in_use(g), 4096);
    pile_tensor c = pile_backend_alloc(g, F32, 10);
    ASSERT(c.data == start); /* a's place, first again */
    pile_backend_free(&b);
    pile_backend_free(&c);
    ASSERT_EQ(pile_backend_bytes_in_use(g), 0);
    /* all merged: the whole arena in one piece */
    pile_tensor whole = pile_backend_alloc(g, PILE_DTYPE_U8, 4 * MiB);
    ASSERT(whole.data == start);
    pile_tensor more = pile_backend_alloc(g, PILE_DTYPE_U8, MiB);
    ASSERT(more.data && ((char *)more.data < start || (char *)more.data >= start + 4 * MiB));
    ASSERT_EQ(pile_backend_bytes_in_use(g), 5 * MiB);
    ASSERT_EQ(pile_backend_bytes_peak(g), 5 * MiB);
    pile_backend_free(&more);
    pile_backend_free(&whole);
    ASSERT_EQ(pile_backend_bytes_in_use(g), 0);
    ASSERT_OK(pile_backend_sync(g, &err), ep);
    pile_backend_close(g);
}

/* The sticky error: an op given what it cannot take records the first
 * failure, naming the op and the operand, does nothing, and makes every
 * later op do nothing; pile_backend_sync returns it; it stays. */
static void test_sticky_error(void)
{
    pile_err err, *ep = &err;
    pile_backend *b = NULL, *o = NULL;
    if (pile_backend_open(&b, "cpu", 1, &err) < 0 || pile_backend_open(&o, "cpu", 1, &err) < 0) {
        PILE_FAIL_("cannot open: %s", err.msg);
        pile_backend_close(b);
        return;
    }
    float one[8] = {1, 1, 1, 1, 1, 1, 1, 1}, got[8];
    pile_tensor x = pile_backend_alloc(b, F32, 8), y = pile_backend_alloc(b, F32, 8);
    pile_tensor h = pile_backend_alloc(b, PILE_DTYPE_BF16, 8), other = pile_backend_alloc(o, F32, 8);
    pile_backend_upload(b, x, one, 8);
    pile_backend_upload(b, y, one, 8);
    ASSERT_EQ(pile_backend_sync(b, &err), 0);
    ASSERT(pile_backend_supports(b, PILE_OP_MATMUL_FWD, F32));
    ASSERT(!pile_backend_supports(b, PILE_OP_MATMUL_FWD, PILE_DTYPE_BF16));
    ASSERT(pile_backend_supports(b, PILE_OP_CONVERT, PILE_DTYPE_BF16));
    /* a view outside its tensor is the absent tensor */
    ASSERT(pile_tensor_slice(x, 4, 5).data == NULL);
    ASSERT(pile_tensor_slice(x, 4, 4).n == 4);
    /* convert takes 16-bit dtypes on the cpu: 1.0 is exact in bf16 */
    pile_backend_convert(b, h, x, 8);
    pile_backend_convert(b, y, h, 8);
    ASSERT_EQ(pile_backend_sync(b, &err), 0);
    /* too small: 9 values of 8 */
    pile_backend_add(b, y, x, x, 9);
    ASSERT_EQ(pile_backend_sync(b, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "add") && strstr(err.msg, "'out'") && strstr(err.msg, "9"));
    printf("# %s\n", err.msg);
    /* later ops do nothing, and the first error stays */
    pile_backend_add(b, y, x, x, 8);
    pile_backend_add(b, y, h, x, 8);
    ASSERT_EQ(pile_backend_sync(b, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "'out'") && strstr(err.msg, "9"));
    pile_backend_download(b, got, y, 8); /* memory ops too */
    ASSERT(isnan(pile_backend_sumsq(b, x, 8)));
    /* on a fresh backend: another dtype, another backend's memory */
    pile_backend_free(&x), pile_backend_free(&y), pile_backend_free(&h);
    ASSERT_EQ(pile_backend_bytes_in_use(b), 0); /* freeing works on a failed backend */
    pile_backend_close(b);
    b = NULL;
    pile_backend_free(&other);
    ASSERT_OK(pile_backend_open(&b, "cpu", 1, &err), ep);
    if (b) {
        pile_tensor p = pile_backend_alloc(b, F32, 8), q = pile_backend_alloc(b, PILE_DTYPE_F16, 8);
        pile_tensor r = pile_backend_alloc(o, F32, 8);
        pile_backend_gelu_fwd(b, p, q, 8);
        ASSERT_EQ(pile_backend_sync(b, &err), PILE_EINVAL);
        ASSERT(strstr(err.msg, "gelu_fwd") && strstr(err.msg, "f16"));
        printf("# %s\n", err.msg);
        pile_backend_gelu_fwd(o, r, p, 8);
        ASSERT_EQ(pile_backend_sync(o, &err), PILE_EINVAL);
        ASSERT(strstr(err.msg, "'inp'") && strstr(err.msg, "another backend"));
        printf("# %s\n", err.msg);
        pile_backend_free(&p), pile_backend_free(&q), pile_backend_free(&r);
    }
    pile_backend_close(b);
    pile_backend_close(o);
}

/* bf16 / fp16 emulation: each compute output is the F32 result rounded as
 * a 16-bit store rounds it (precision.h), bit for bit; F32 outputs (weight
 * gradients, statistics) and copies are not rounded; convert into F32
 * rounds (the optimizer's write of the parameters); fp16 saturates. */
static void test_emulation(void)
{
    pile_err err, *ep = &err;
    pile_backend *ref = NULL, *emu = NULL;
    ASSERT_OK(pile_backend_open(&ref, "cpu", 1, &err), ep);
    ASSERT_OK(pile_backend_open(&emu, "cpu", 1, &err), ep);
    if (!ref || !emu) {
        pile_backend_close(ref);
        return;
    }
    ASSERT_EQ(pile_backend_emulation(emu), F32);
    ASSERT_EQ(pile_backend_set_emulation(emu, I32, &err), PILE_EINVAL);
    ASSERT_OK(pile_backend_set_emulation(emu, PILE_DTYPE_BF16, &err), ep);
    ASSERT_EQ(pile_backend_emulation(emu), PILE_DTYPE_BF16);
    enum { N = 37, IC = 29, OC = 41 };
    float *x = hrand((size_t)N * IC, 1), *W = hrand((size_t)IC * OC, 1), *bs = hrand(OC, 1), *g = hrand((size_t)N * OC, 1);
    float *out[2], *dx[2], *dW[2], *cp[2];
    pile_backend *bk[2] = {ref, emu};
    for (int k = 0; k < 2; k++) {
        pile_backend *b = bk[k];
        pile_tensor tx = pile_backend_alloc(b, F32, (size_t)N * IC), tW = pile_backend_alloc(b, F32, (size_t)IC * OC);
        pile_tensor tb = pile_backend_alloc(b, F32, OC), tg = pile_backend_alloc(b, F32, (size_t)N * OC);
        pile_tensor to = pile_backend_alloc(b, F32, (size_t)N * OC), tdx = pile_backend_alloc(b, F32, (size_t)N * IC);
        pile_tensor tdW = pile_backend_alloc(b, F32, (size_t)IC * OC), tc = pile_backend_alloc(b, F32, (size_t)N * IC);
        pile_backend_upload(b, tx, x, (size_t)N * IC);
        pile_backend_upload(b, tW, W, (size_t)IC * OC);
        pile_backend_upload(b, tb, bs, OC);
        pile_backend_upload(b, tg, g, (size_t)N * OC);
        pile_backend_matmul_fwd(b, to, tx, tW, tb, N, IC, OC);
        pile_backend_matmul_bwd(b, tdx, tdW, NONE, tg, tx, tW, N, IC, OC);
        pile_backend_copy(b, tc, tx, (size_t)N * IC);
        out[k] = malloc((size_t)N * OC * 4), dx[k] = malloc((size_t)N * IC * 4), dW[k] = malloc((size_t)IC * OC * 4);
        cp[k] = malloc((size_t)N * IC * 4);
        pile_backend_download(b, out[k], to, (size_t)N * OC);
        pile_backend_download(b, dx[k], tdx, (size_t)N * IC);
        pile_backend_download(b, dW[k], tdW, (size_t)IC * OC);
        pile_backend_download(b, cp[k], tc, (size_t)N * IC);
        ASSERT_OK(pile_backend_sync(b, &err), ep);
        pile_tensor all[] = {tx, tW, tb, tg, to, tdx, tdW, tc};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++) pile_backend_free(&all[i]);
    }
    pile_precision_round(out[0], (size_t)N * OC, PILE_PRECISION_BF16);
    pile_precision_round(dx[0], (size_t)N * IC, PILE_PRECISION_BF16);
    ASSERT_MEM_EQ(out[1], out[0], (size_t)N * OC * 4); /* the output: rounded */
    ASSERT_MEM_EQ(dx[1], dx[0], (size_t)N * IC * 4);   /* the input's gradient: rounded */
    ASSERT_MEM_EQ(dW[1], dW[0], (size_t)IC * OC * 4);  /* the weight gradient: F32, untouched */
    ASSERT_MEM_EQ(cp[1], x, (size_t)N * IC * 4);       /* a copy is not a store of a result */
    size_t exact = 0;
    for (size_t i = 0; i < (size_t)IC * OC; i++) exact += dW[1][i] == pile_bf16_to_fp32(pile_fp32_to_bf16(dW[1][i]));
    ASSERT(exact < (size_t)IC * OC / 2); /* it really was not rounded */
    /* convert into F32 rounds; fp16 saturates to infinity */
    float big[4] = {1.0f + 0x1p-12f, 70000.0f, -1e6f, 0.1f}, got[4];
    pile_tensor a = pile_backend_alloc(emu, F32, 4), c = pile_backend_alloc(emu, F32, 4);
    pile_backend_upload(emu, a, big, 4);
    pile_backend_convert(emu, c, a, 4);
    pile_backend_download(emu, got, c, 4);
    ASSERT(got[0] == 1.0f && got[3] == pile_bf16_to_fp32(pile_fp32_to_bf16(0.1f)));
    ASSERT_OK(pile_backend_set_emulation(emu, PILE_DTYPE_F16, &err), ep);
    pile_backend_add(emu, c, a, a, 4);
    pile_backend_download(emu, got, c, 4);
    ASSERT(isinf(got[1]) && got[1] > 0 && isinf(got[2]) && got[2] < 0);
    ASSERT(got[3] == pile_fp16_to_fp32(pile_fp32_to_fp16(0.2f)));
    ASSERT_OK(pile_backend_set_emulation(emu, F32, &err), ep);
    pile_backend_add(emu, c, a, a, 4);
    pile_backend_download(emu, got, c, 4);
    ASSERT(got[1] == 140000.0f && got[3] == 0.2f);
    ASSERT_OK(pile_backend_sync(emu, &err), ep);
    pile_backend_free(&a), pile_backend_free(&c);
    for (int k = 0; k < 2; k++) free(out[k]), free(dx[k]), free(dW[k]), free(cp[k]);
    free(x), free(W), free(bs), free(g);
    pile_backend_close(ref);
    pile_backend_close(emu);
}

/* ------------------------------------------------------------ devsim */

/* 1 when touching p on the host kills a child process (a signal, or a
 * sanitizer's report and exit status): the memory is not the host's. */
static int faults(volatile float *p, int write)
{
    fflush(stdout); /* the child must not repeat buffered TAP lines */
    pid_t pid = fork();
    if (pid < 0) return 0;
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr)) _exit(3); /* the sanitizer's report is expected */
        if (write) p[1] = 1.0f;
        else if (p[1] == 12345.0f) _exit(1);
        _exit(0);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) return 0;
    if (WIFSIGNALED(status)) printf("# %s: signal %d\n", write ? "write" : "read", WTERMSIG(status));
    else printf("# %s: exit status %d\n", write ? "write" : "read", WEXITSTATUS(status));
    return WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0);
}

/* A stand-in collective for the comm stream's tests: out[i] = 2 in[i]
 * (host addresses), counting its runs; fails when asked to. */
typedef struct twice_arg {
    float *out;
    const float *in;
    size_t n;
    int *runs;
    int fail;
} twice_arg;

static int twice(void *arg, pile_err *err)
{
    const twice_arg *a = arg;
    if (a->fail) return pile_err_set(err, PILE_EIO, "a peer died");
    for (size_t i = 0; i < a->n; i++) a->out[i] = 2.0f * a->in[i];
    ++*a->runs;
    return 0;
}

/* The comm stream (backend.h): nothing on the cpu; on devsim a queued
 * call poisons its output at once and runs, reading its input then, only
 * at compute_wait_comm or a free (not at sync); in place, the input it
 * had at enqueue is what it reads; a failed call is the sticky error and
 * the calls after it are dropped. */
static void test_comm_stream(void)
{
    pile_err err, *ep = &err;
    pile_backend *c = NULL, *d = NULL;
    ASSERT_OK(pile_backend_open(&c, "cpu", 1, &err), ep);
    ASSERT(pile_backend_comm_stream(c) == NULL);
    pile_backend_comm_wait_compute(c); /* nothing to order */
    pile_backend_compute_wait_comm(c);
    int runs = 0;
    float v[4] = {0};
    twice_arg a = {v, v, 4, &runs, 0};
    ASSERT_EQ(pile_backend_devsim_enqueue(pile_backend_comm_stream(c), twice, &a, sizeof a, v, 16, v, 16, &err),
              PILE_EINVAL);
    ASSERT(strstr(err.msg, "not a devsim backend's comm stream"));
    ASSERT_EQ(pile_backend_devsim_enqueue(v, twice, &a, sizeof a, v, 16, v, 16, &err), PILE_EINVAL);
    pile_backend_close(c);

    ASSERT_OK(pile_backend_open(&d, "devsim", 1, &err), ep);
    void *st = pile_backend_comm_stream(d);
    ASSERT(st != NULL);
    pile_tensor x = pile_backend_alloc(d, PILE_DTYPE_F32, 4), y = pile_backend_alloc(d, PILE_DTYPE_F32, 4);
    pile_tensor z = pile_backend_alloc(d, PILE_DTYPE_F32, 4);
    float *hx = pile_backend_devsim_host_address(x.data), *hy = pile_backend_devsim_host_address(y.data);
    const float one[4] = {1, 2, 3, 4}, ten[4] = {10, 20, 30, 40};
    float got[4];
    pile_backend_upload(d, x, one, 4);
    a = (twice_arg){hy, hx, 4, &runs, 0};
    pile_backend_comm_wait_compute(d);
    ASSERT_OK(pile_backend_devsim_enqueue(st, twice, &a, sizeof a, hy, 16, hx, 16, &err), ep);
    pile_backend_download(d, got, y, 4);
    ASSERT(isnan(got[0]) && isnan(got[3])); /* read before the ops waited: poison */
    ASSERT_OK(pile_backend_sync(d, &err), ep);
    ASSERT_EQ(runs, 0); /* sync does not order the stream */
    pile_backend_upload(d, x, ten, 4); /* the input overwritten before the call ran */
    pile_backend_compute_wait_comm(d);
    ASSERT_EQ(runs, 1);
    pile_backend_download(d, got, y, 4);
    ASSERT(got[0] == 20.0f && got[3] == 80.0f); /* it read the input as it was when it ran */
    /* in place: what the caller wrote before the call ran is lost */
    pile_backend_upload(d, x, one, 4);
    a = (twice_arg){hx, hx, 4, &runs, 0};
    pile_backend_comm_wait_compute(d);
    ASSERT_OK(pile_backend_devsim_enqueue(st, twice, &a, sizeof a, hx, 16, hx, 16, &err), ep);
    pile_backend_upload(d, x, ten, 4);
    pile_backend_compute_wait_comm(d);
    pile_backend_download(d, got, x, 4);
    ASSERT(got[0] == 2.0f && got[3] == 8.0f);
    /* a free orders the ops after it behind the stream */
    pile_backend_comm_wait_compute(d);
    ASSERT_OK(pile_backend_devsim_enqueue(st, twice, &a, sizeof a, hx, 16, hx, 16, &err), ep);
    pile_backend_free(&z);
    ASSERT_EQ(runs, 3);
    /* a failure: the backend's sticky error, the calls after it not made */
    twice_arg bad = a;
    bad.fail = 1;
    ASSERT_OK(pile_backend_devsim_enqueue(st, twice, &bad, sizeof bad, hx, 16, hx, 16, &err), ep);
    ASSERT_OK(pile_backend_devsim_enqueue(st, twice, &a, sizeof a, hx, 16, hx, 16, &err), ep);
    pile_backend_compute_wait_comm(d);
    ASSERT_EQ(runs, 3);
    ASSERT_EQ(pile_backend_sync(d, &err), PILE_EIO);
    ASSERT(strstr(err.msg, "comm") && strstr(err.msg, "a peer died"));
    /* what is still queued at close is dropped (ASan: nothing leaks) */
    ASSERT_OK(pile_backend_devsim_enqueue(st, twice, &a, sizeof a, hx, 16, hx, 16, &err), ep);
    pile_backend_free(&x);
    pile_backend_free(&y);
    pile_backend_close(d);
}

/* Marks (backend.h): 0 and nothing to wait for on the cpu; on devsim a
 * mark counts the calls given, and waiting for one runs the calls up to
 * it only: the later ones stay queued, their outputs poisoned, until a
 * later mark or compute_wait_comm; a mark never given is a sticky error. */
static void test_comm_marks(void)
{
    pile_err err, *ep = &err;
    pile_backend *c = NULL, *d = NULL;
    ASSERT_OK(pile_backend_open(&c, "cpu", 1, &err), ep);
    if (!c) return;
    ASSERT_EQ(pile_backend_comm_mark(c), 0);
    pile_backend_compute_wait_mark(c, 7); /* nothing to order */
    ASSERT_OK(pile_backend_sync(c, &err), ep);
    pile_backend_close(c);

    ASSERT_OK(pile_backend_open(&d, "devsim", 1, &err), ep);
    if (!d) return;
    void *st = pile_backend_comm_stream(d);
    ASSERT_EQ(pile_backend_comm_mark(d), 0); /* nothing given */
    pile_tensor x = pile_backend_alloc(d, F32, 4), y = pile_backend_alloc(d, F32, 4);
    pile_tensor z = pile_backend_alloc(d, F32, 4);
    float *hx = pile_backend_devsim_host_address(x.data), *hy = pile_backend_devsim_host_address(y.data);
    float *hz = pile_backend_devsim_host_address(z.data);
    const float one[4] = {1, 2, 3, 4};
    float got[4];
    int runs = 0;
    pile_backend_upload(d, x, one, 4);
    pile_backend_comm_wait_compute(d);
    twice_arg a = {hy, hx, 4, &runs, 0}, b = {hz, hx, 4, &runs, 0};
    ASSERT_OK(pile_backend_devsim_enqueue(st, twice, &a, sizeof a, hy, 16, hx, 16, &err), ep);
    const uint64_t m1 = pile_backend_comm_mark(d);
    ASSERT_OK(pile_backend_devsim_enqueue(st, twice, &b, sizeof b, hz, 16, hx, 16, &err), ep);
    const uint64_t m2 = pile_backend_comm_mark(d);
    ASSERT(m1 > 0 && m2 > m1);
    pile_backend_compute_wait_mark(d, 0); /* nothing */
    ASSERT_EQ(runs, 0);
    pile_backend_compute_wait_mark(d, m1);
    ASSERT_EQ(runs, 1); /* the call up to m1, not the one after it */
    pile_backend_download(d, got, y, 4);
    ASSERT(got[0] == 2.0f && got[3] == 8.0f);
    pile_backend_download(d, got, z, 4);
    ASSERT(isnan(got[0]) && isnan(got[3])); /* still queued: poisoned */
    pile_backend_compute_wait_mark(d, m1); /* again: nothing more */
    ASSERT_EQ(runs, 1);
    pile_backend_compute_wait_mark(d, m2);
    ASSERT_EQ(runs, 2);
    pile_backend_download(d, got, z, 4);
    ASSERT(got[0] == 2.0f && got[3] == 8.0f);
    /* three queued, the middle mark waited for, then compute_wait_comm: all */
    pile_tensor w = pile_backend_alloc(d, F32, 4);
    twice_arg e = {pile_backend_devsim_host_address(w.data), hx, 4, &runs, 0};
    pile_backend_comm_wait_compute(d); /* w's zeroing */
    ASSERT_OK(pile_backend_devsim_enqueue(st, twice, &a, sizeof a, hy, 16, hx, 16, &err), ep);
    ASSERT_OK(pile_backend_devsim_enqueue(st, twice, &b, sizeof b, hz, 16, hx, 16, &err), ep);
    const uint64_t m4 = pile_backend_comm_mark(d);
    ASSERT_OK(pile_backend_devsim_enqueue(st, twice, &e, sizeof e, e.out, 16, hx, 16, &err), ep);
    ASSERT_EQ(m4, m2 + 2);
    pile_backend_compute_wait_mark(d, m4);
    ASSERT_EQ(runs, 4);
    pile_backend_download(d, got, w, 4);
    ASSERT(isnan(got[0])); /* the third, given after m4 */
    pile_backend_compute_wait_comm(d);
    ASSERT_EQ(runs, 5);
    pile_backend_download(d, got, w, 4);
    ASSERT(got[1] == 4.0f);
    pile_backend_free(&w);
    ASSERT_OK(pile_backend_sync(d, &err), ep);
    /* a mark the stream never gave */
    pile_backend_compute_wait_mark(d, pile_backend_comm_mark(d) + 1);
    ASSERT_EQ(pile_backend_sync(d, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "compute_wait_mark: mark 6 was never given (the comm stream is at 5)") != NULL);
    pile_backend_free(&x);
    pile_backend_free(&y);
    pile_backend_free(&z);
    pile_backend_close(d);
}

/* ------------------------------------------------------- comm hazards */

static int noop(void *arg, pile_err *err)
{
    (void)arg, (void)err;
    return 0;
}

/* A case of the hazards' table (devsim's "hazards"): what one op writes,
 * operand by operand. Shapes small; operands zeroed (valid tokens,
 * targets and document starts), each 3 elements longer than the op
 * needs unless it is written whole. */
enum { HB = 2, HT = 3, HC = 4, HNH = 2, HV = 5, HVP = 8, HN = HB * HT, HSPARE = 3 };

typedef struct hz_case {
    const char *op; /* as the message names it */
    int n;
    pile_tensor x[8];
    const char *name[8];
    size_t wbytes[8]; /* of x[i], the leading bytes the op writes; 0: read only */
} hz_case;

static pile_tensor hz_arg(pile_backend *d, hz_case *h, const char *name, pile_dtype dt, size_t n, size_t written,
                          int whole)
{
    pile_tensor t = pile_backend_alloc(d, dt, n + (whole ? 0 : HSPARE));
    h->x[h->n] = t;
    h->name[h->n] = name;
    h->wbytes[h->n++] = (whole ? t.n : written) * pile_dtype_size(dt);
    return t;
}

/* Builds case k on d (compute dtype cd) and runs its op after a
 * comm_wait_compute; 0 past the last case. */
static int hz_build(pile_backend *d, int k, pile_dtype cd, hz_case *h)
{
    memset(h, 0, sizeof *h);
    const size_t NC = (size_t)HN * HC, sv = pile_backend_attention_saved_bytes(d, HB, HT, HC, HNH),
                 sc = pile_backend_attention_scratch_bytes(d, HB, HT, HC, HNH);
    float host[64] = {0};
#define A(name, dt, n, w) hz_arg(d, h, name, dt, n, w, 0)
#define R(name, dt, n) hz_arg(d, h, name, dt, n, 0, 0)
    pile_tensor a, b, c, e, f, g, m, v;
    switch (k) {
    case 0: h->op = "upload", a = A("dst", F32, 8, 8); break;
    case 1: h->op = "copy", a = A("dst", cd, 8, 8), b = R("src", cd, 8); break;
    case 2: h->op = "zero", a = A("t", cd, 8, 8); break;
    case 3: h->op = "convert", a = A("dst", cd, 8, 8), b = R("src", F32, 8); break;
    case 4: h->op = "download", a = R("src", F32, 8); break;
    case 5: h->op = "embed_fwd", a = A("out", cd, NC, NC), b = R("tokens", I32, HN), c = R("wte", cd, HVP * HC);
        e = R("wpe", cd, HT * HC); break;
    case 6: h->op = "embed_bwd", a = hz_arg(d, h, "dwte", F32, HVP * HC, 0, 1), b = A("dwpe", F32, HT * HC, HT * HC);
        c = R("dout", cd, NC), e = R("tokens", I32, HN); break;
    case 7: h->op = "layernorm_fwd", a = A("out", cd, NC, NC), b = A("mean", F32, HN, HN);
        c = A("rstd", F32, HN, HN);
        e = R("inp", cd, NC), f = R("w", cd, HC), g = R("b", cd, HC); break;
    case 8: h->op = "layernorm_bwd", a = A("dinp", cd, NC, NC), b = A("dw", F32, HC, HC), c = A("db", F32, HC, HC);
        e = R("dout", cd, NC), f = R("inp", cd, NC), g = R("w", cd, HC), m = R("mean", F32, HN);
        v = R("rstd", F32, HN);
        break;
    case 9: h->op = "matmul_fwd", a = A("out", cd, HN * 5, HN * 5), b = R("inp", cd, NC), c = R("W", cd, HC * 5);
        e = R("bias", cd, 5); break;
    case 10: h->op = "matmul_bwd", a = A("dinp", cd, NC, NC), b = A("dW", F32, HC * 5, HC * 5);
        c = A("dbias", F32, 5, 5);
        e = R("dout", cd, HN * 5), f = R("inp", cd, NC), g = R("W", cd, HC * 5); break;
    case 11: h->op = "logits_fwd", a = A("out", cd, HN * HVP, HN * HVP), b = R("inp", cd, NC);
        c = R("wte", cd, HVP * HC); break;
    case 12: h->op = "logits_bwd", a = A("dinp", cd, NC, NC), b = A("dwte", F32, HVP * HC, HVP * HC);
        c = R("dout", cd, HN * HVP), e = R("inp", cd, NC), f = R("wte", cd, HVP * HC); break;
    case 13: h->op = "attention_fwd", a = A("out", cd, NC, NC), b = A("saved", U8, sv, sv);
        c = A("scratch", U8, sc, sc);
        e = R("qkv", cd, 3 * NC), f = R("doc_start", I32, HN); break;
    case 14: h->op = "attention_bwd", a = A("dqkv", cd, 3 * NC, 3 * NC), b = A("scratch", U8, sc, sc);
        c = R("dout", cd, NC), e = R("qkv", cd, 3 * NC), f = R("out", cd, NC), g = R("saved", U8, sv);
        m = R("doc_start", I32, HN); break;
    case 15: h->op = "attention_decode", a = A("out", cd, HC, HC), b = A("att", F32, HNH * 3, HNH * 3);
        c = R("q", cd, HC), e = R("kcache", cd, 3 * HC), f = R("vcache", cd, 3 * HC); break;
    case 16: h->op = "gelu_fwd", a = A("out", cd, 8, 8), b = R("inp", cd, 8); break;
    case 17: h->op = "gelu_bwd", a = A("dinp", cd, 8, 8), b = R("inp", cd, 8), c = R("dout", cd, 8); break;
    case 18: h->op = "add", a = A("out", cd, 8, 8), b = R("a", cd, 8), c = R("b", cd, 8); break;
    case 19: h->op = "dropout", a = A("x", cd, 8, 8); break;
    case 20: h->op = "dropout", a = R("x", cd, 8); break; /* p 0 */
    case 21: h->op = "softmax_ce", a = A("logits", cd, HN * HVP, HN * HVP), b = A("losses", F32, HN, HN);
        c = A("correct", I32, HN, HN), e = R("targets", I32, HN); break;
    case 22: h->op = "softmax_ce", a = R("logits", cd, HN * HVP), b = A("losses", F32, HN, HN); /* no gradient */
        c = A("correct", I32, HN, HN), e = R("targets", I32, HN); break;
    case 23: h->op = "sumsq", a = R("x", F32, 8); break;
    case 24: h->op = "scale", a = A("x", F32, 8, 8); break;
    case 25: h->op = "adamw", a = A("p", F32, 8, 8), b = R("g", F32, 8), c = A("m", F32, 8, 8);
        e = A("v", F32, 8, 8); break;
    case 26: h->op = "stage_upload", a = A("dst", I32, 8, 8); break;
    default: return 0;
    }
#undef A
#undef R
    pile_err err;
    if (pile_backend_stage_reserve(d, 256, &err) < 0) return 0;
    pile_backend_comm_wait_compute(d); /* the allocations' zeroing */
    switch (k) {
    case 0: pile_backend_upload(d, a, host, 8); break;
    case 1: pile_backend_copy(d, a, b, 8); break;
    case 2: pile_backend_zero(d, a, 8); break;
    case 3: pile_backend_convert(d, a, b, 8); break;
    case 4: pile_backend_download(d, host, a, 8); break;
    case 5: pile_backend_embed_fwd(d, a, b, c, e, HB, HT, HC); break;
    case 6: pile_backend_embed_bwd(d, a, b, c, e, HB, HT, HC); break;
    case 7: pile_backend_layernorm_fwd(d, a, b, c, e, f, g, HN, HC); break;
    case 8: pile_backend_layernorm_bwd(d, a, b, c, e, f, g, m, v, HN, HC); break;
    case 9: pile_backend_matmul_fwd(d, a, b, c, e, HN, HC, 5); break;
    case 10: pile_backend_matmul_bwd(d, a, b, c, e, f, g, HN, HC, 5); break;
    case 11: pile_backend_logits_fwd(d, a, b, c, HN, HC, HVP); break;
    case 12: pile_backend_logits_bwd(d, a, b, c, e, f, HN, HC, HVP); break;
    case 13: pile_backend_attention_fwd(d, a, b, c, e, f, HB, HT, HC, HNH); break;
    case 14: pile_backend_attention_bwd(d, a, b, c, e, f, g, m, HB, HT, HC, HNH); break;
    case 15: pile_backend_attention_decode(d, a, b, c, e, f, 2, HC, HNH); break;
    case 16: pile_backend_gelu_fwd(d, a, b, 8); break;
    case 17: pile_backend_gelu_bwd(d, a, b, c, 8); break;
    case 18: pile_backend_add(d, a, b, c, 8); break;
    case 19: pile_backend_dropout(d, a, 8, 0.5f, 1); break;
    case 20: pile_backend_dropout(d, a, 8, 0.0f, 1); break;
    case 21: pile_backend_softmax_ce(d, a, b, c, e, HN, HV, HVP, 1.0f); break;
    case 22: pile_backend_softmax_ce(d, a, b, c, e, HN, HV, HVP, 0.0f); break;
    case 23: (void)pile_backend_sumsq(d, a, 8); break;
    case 24: pile_backend_scale(d, a, 8, 2.0f); break;
    case 25: pile_backend_adamw(d, a, b, c, e, 8, 1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 1); break;
    case 26: pile_backend_stage_upload(d, a, host, 8); break;
    }
    (void)f, (void)g, (void)m, (void)v;
    return 1;
}

/* Queues a call on d's stream that reads bytes [from, to) of t: 0, or
 * the error (err) of a hazard. */
static int hz_read(pile_backend *d, pile_tensor t, size_t from, size_t to, pile_err *err)
{
    char *p = pile_backend_devsim_host_address(t.data);
    char out[4];
    return pile_backend_devsim_enqueue(pile_backend_comm_stream(d), noop, NULL, 0, out, sizeof out, p + from,
                                       to - from, err);
}

/* Every op on devsim (f32) and devsim16 (bf16 compute tensors): a call
 * that reads the last byte an op wrote into an operand, without
 * comm_wait_compute after the op, fails the backend naming the op and
 * the operand; one that reads an operand the op only reads, or the bytes
 * past what it wrote, does not. A staged upload's dst is a hazard until
 * its stage_wait and after it until comm_wait_compute; sync clears too. */
static void test_comm_hazards(void)
{
    pile_err err;
    static const struct {
        const char *name;
        pile_dtype cd;
    } kinds[] = {{"devsim", PILE_DTYPE_F32}, {"devsim16", PILE_DTYPE_BF16}};
    int checked = 0;
    for (size_t kd = 0; kd < 2; kd++) {
        for (int k = 0, n = 1; n > 0; k++) {
            n = 0;
            for (int i = 0, tail = 0; i <= n && i < 8; i += tail, tail ^= 1) {
                pile_backend *d = NULL;
                if (pile_backend_open(&d, kinds[kd].name, 1, &err) < 0) {
                    ASSERT(!"cannot open a devsim backend");
                    return;
                }
                (void)pile_backend_comm_stream(d); /* writes are recorded from here on */
                hz_case h;
                n = hz_build(d, k, kinds[kd].cd, &h) ? h.n : 0;
                const size_t w = i < n ? h.wbytes[i] : 0, all = i < n ? pile_tensor_bytes(h.x[i]) : 0;
                if (i < n && (!tail || (w && w < all))) {
                    const int rc = tail ? hz_read(d, h.x[i], w, all, &err)
                                   : w  ? hz_read(d, h.x[i], w - 1, w, &err)
                                        : hz_read(d, h.x[i], 0, all, &err);
                    const int want = w && !tail;
                    if (want != (rc == PILE_EINVAL))
                        PILE_FAIL_("%s %s '%s' (%s): %s", kinds[kd].name, h.op, h.name[i],
                                   tail ? "the bytes past what it wrote" : w ? "written" : "read only",
                                   rc ? err.msg : "no hazard found");
                    if (want && rc == PILE_EINVAL) {
                        char named[64];
                        snprintf(named, sizeof named, "by %s ('%s',", h.op, h.name[i]);
                        if (!strstr(err.msg, named) || pile_backend_sync(d, NULL) != PILE_EINVAL)
                            PILE_FAIL_("%s: not named, or not the sticky error: %s", named, err.msg);
                    }
                    checked++;
                }
                for (int j = 0; j < n; j++) pile_backend_free(&h.x[j]);
                pile_backend_close(d);
            }
        }
    }
    printf("# %d operands checked\n", checked);
    ASSERT(checked > 150);

    /* the orderings that clear it, the staged copies, an allocation:
     * each on a fresh backend, x and y 8 floats, tracked from the start */
    pile_err *ep = &err;
    const float host[8] = {0};
    pile_backend *d = NULL;
    pile_tensor x = NONE, y = NONE;
    for (int part = 0; part < 4; part++) {
        ASSERT_OK(pile_backend_open(&d, "devsim", 1, &err), ep);
        if (!d) return;
        void *st = pile_backend_comm_stream(d);
        x = pile_backend_alloc(d, F32, 8), y = pile_backend_alloc(d, F32, 8);
        /* (a reserve waits for the backend: after the allocation's check) */
        if (part > 0) ASSERT_OK(pile_backend_stage_reserve(d, 256, &err), ep);
        if (part == 0) {
            ASSERT_EQ(hz_read(d, x, 0, 4, &err), PILE_EINVAL); /* the allocation's zeroing */
            ASSERT(strstr(err.msg, "written by alloc ('zeroed', 32 bytes) after the last comm_wait_compute"));
        } else if (part == 1) {
            pile_backend_sync(d, NULL); /* every op done */
            ASSERT_OK(hz_read(d, x, 0, 32, &err), ep);
            pile_backend_stage_upload(d, x, host, 8);
            pile_backend_comm_wait_compute(d);
            ASSERT_EQ(hz_read(d, x, 28, 32, &err), PILE_EINVAL); /* in flight until stage_wait */
            ASSERT(strstr(err.msg, "written by stage_upload ('dst', 32 bytes) before its stage_wait"));
        } else if (part == 2) {
            pile_backend_comm_wait_compute(d);
            pile_backend_stage_upload(d, x, host, 8);
            pile_backend_stage_wait(d);
            ASSERT_EQ(hz_read(d, x, 0, 4, &err), PILE_EINVAL); /* landed at stage_wait: written there */
            ASSERT(strstr(err.msg, "written by stage_upload ('dst', 32 bytes) after the last comm_wait_compute"));
        } else {
            pile_backend_comm_wait_compute(d);
            pile_backend_upload(d, y, host, 4); /* adjacent runs of one op's operand merge */
            pile_backend_upload(d, pile_tensor_slice(y, 4, 4), host, 4);
            char *hy = pile_backend_devsim_host_address(y.data);
            ASSERT_EQ(pile_backend_devsim_enqueue(st, noop, NULL, 0, hy + 8, 4, NULL, 0, &err), PILE_EINVAL);
            ASSERT(strstr(err.msg, "a collective writes 4 bytes, 4 of them (from byte 0) written by upload ('dst', "
                                   "32 bytes)"));
        }
        pile_backend_free(&x);
        pile_backend_free(&y);
        pile_backend_close(d);
    }
}

/* devsim16 stores compute tensors in bf16 and widens them for the cpu's
 * ops: a matmul's output and the input gradient it accumulates into are
 * the bits of the cpu emulating bf16 (given emu, an open cpu backend). */
static void test_devsim16(pile_backend *emu)
{
    pile_err err, *ep = &err;
    pile_backend *d = NULL;
    ASSERT_OK(pile_backend_open(&d, "devsim16", 1, &err), ep);
    if (!d) return;
    const pile_dtype H = PILE_DTYPE_BF16;
    ASSERT(pile_backend_supports(d, PILE_OP_MATMUL_FWD, H) && !pile_backend_supports(d, PILE_OP_ADAMW, H));
    ASSERT(!pile_backend_supports(emu, PILE_OP_MATMUL_FWD, H));
    ASSERT_OK(pile_backend_set_emulation(emu, H, &err), ep);
    enum { N = 19, IC = 33, OC = 27 };
    const size_t nx = (size_t)N * IC, nw = (size_t)IC * OC, no = (size_t)N * OC;
    float *x = hrand(nx, 1), *w = hrand(nw, 1), *g = hrand(no, 1), *dx = hrand(nx, 1);
    pile_precision_round(x, nx, PILE_PRECISION_BF16), pile_precision_round(w, nw, PILE_PRECISION_BF16);
    pile_precision_round(g, no, PILE_PRECISION_BF16), pile_precision_round(dx, nx, PILE_PRECISION_BF16);
    float *got[2][2];
    pile_backend *bk[2] = {emu, d};
    for (int k = 0; k < 2; k++) {
        pile_backend *b = bk[k];
        const pile_dtype dt = k ? H : F32;
        pile_tensor tx = pile_backend_alloc(b, dt, nx), tw = pile_backend_alloc(b, dt, nw);
        pile_tensor tg = pile_backend_alloc(b, dt, no), tdx = pile_backend_alloc(b, dt, nx);
        pile_tensor to = pile_backend_alloc(b, dt, no), tdw = pile_backend_alloc(b, F32, nw);
        ASSERT_OK(pile_tensor_upload_f32(tx, x, nx, &err), ep);
        ASSERT_OK(pile_tensor_upload_f32(tw, w, nw, &err), ep);
        ASSERT_OK(pile_tensor_upload_f32(tg, g, no, &err), ep);
        ASSERT_OK(pile_tensor_upload_f32(tdx, dx, nx, &err), ep);
        pile_backend_matmul_fwd(b, to, tx, tw, NONE, N, IC, OC);
        pile_backend_matmul_bwd(b, tdx, tdw, NONE, tg, tx, tw, N, IC, OC);
        got[k][0] = malloc(no * 4), got[k][1] = malloc(nx * 4);
        ASSERT_OK(pile_tensor_download_f32(got[k][0], to, no, &err), ep);
        ASSERT_OK(pile_tensor_download_f32(got[k][1], tdx, nx, &err), ep);
        pile_tensor all[] = {tx, tw, tg, tdx, to, tdw};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++) pile_backend_free(&all[i]);
    }
    ASSERT_MEM_EQ(got[0][0], got[1][0], no * 4);
    ASSERT_MEM_EQ(got[0][1], got[1][1], nx * 4);
    ASSERT_OK(pile_backend_set_emulation(emu, F32, &err), ep);
    for (int k = 0; k < 2; k++) free(got[k][0]), free(got[k][1]);
    free(x), free(w), free(g), free(dx);
    pile_backend_close(d);
}

/* The devsim backend: found by name but never the default, its memory not
 * the host's (a host read or write of a tensor faults), moved only by
 * upload, download and copies (views included, between backends too), and
 * every op the cpu's bit for bit, with and without 16-bit emulation. */
static void test_devsim(void)
{
    pile_err err, *ep = &err;
    pile_backend *d = NULL, *d2 = NULL, *c = NULL;
    ASSERT(!strstr(pile_backend_names(), "devsim"));
    ASSERT(strcmp(pile_backend_default_name(NULL), "devsim"));
    ASSERT_EQ(pile_backend_probe("devsim", &err), 0);
    ASSERT_EQ(pile_backend_open(&c, "devsimx", 1, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "for testing: devsim"));
    ASSERT_OK(pile_backend_open(&d, "devsim", 1, &err), ep);
    ASSERT_OK(pile_backend_open(&d2, "devsim", 1, &err), ep);
    ASSERT_OK(pile_backend_open(&c, "cpu", 1, &err), ep);
    if (!d || !d2 || !c) goto out;
    ASSERT_STR_EQ(pile_backend_name(d), "devsim");
    ASSERT_EQ(pile_backend_host_memory(d), 0);
    ASSERT(pile_backend_device_name(d) == NULL);
    pile_tensor t = pile_backend_alloc(d, F32, 1000), t2 = pile_backend_alloc(d2, F32, 1000);
    pile_tensor h = pile_backend_alloc(c, F32, 1000);
    ASSERT(t.data && t2.data && h.data);
    ASSERT(pile_backend_bytes_in_use(d) >= 4000);
    float in[1000], back[1000];
    for (int i = 0; i < 1000; i++) in[i] = (float)i * 0.5f;
    pile_backend_upload(d, t, in, 1000);
    pile_backend_download(d, back, pile_tensor_slice(t, 10, 5), 5);
    ASSERT(back[0] == 5.0f && back[4] == 7.0f);
    ASSERT(faults(t.data, 0));
    ASSERT(faults(pile_tensor_slice(t, 500, 10).data, 1));
    /* between backends: device to host, host to device, device to device */
    ASSERT_OK(pile_tensor_copy(h, t, 1000, &err), ep);
    ASSERT_MEM_EQ((float *)h.data, in, sizeof in);
    ((float *)h.data)[3] = -1.0f;
    ASSERT_OK(pile_tensor_copy(t2, h, 1000, &err), ep);
    ASSERT_OK(pile_tensor_copy(t, t2, 1000, &err), ep);
    pile_backend_download(d, back, t, 1000);
    ASSERT(back[3] == -1.0f && back[999] == 499.5f);
    ASSERT_OK(pile_backend_sync(d, &err), ep);
    pile_backend_free(&t), pile_backend_free(&t2), pile_backend_free(&h);
    ASSERT_EQ(pile_backend_bytes_in_use(d), 0);
    /* another backend's tensor is refused as the cpu refuses it */
    t = pile_backend_alloc(c, F32, 4);
    pile_backend_zero(d2, t, 4);
    ASSERT_EQ(pile_backend_sync(d2, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "devsim backend: zero"));
    pile_backend_free(&t);
    /* every op: the same bits as the cpu's, plain and emulating bf16 */
    float *host = hrand(200000, 1);
    for (int emu = 0; emu < 2; emu++) {
        const pile_dtype dt = emu ? PILE_DTYPE_BF16 : F32;
        ASSERT_OK(pile_backend_set_emulation(c, dt, &err), ep);
        ASSERT_OK(pile_backend_set_emulation(d, dt, &err), ep);
        size_t lc, ld;
        nseg = 0;
        float *rc = run_all(c, host, &lc);
        nseg = 0;
        float *rd = run_all(d, host, &ld);
        ASSERT_EQ(lc, ld);
        ASSERT_MEM_EQ(rc, rd, lc * 4);
        free(rc), free(rd);
    }
    free(host);
    ASSERT_EQ(pile_backend_bytes_in_use(d), 0);
    test_devsim16(c);
out:
    pile_backend_close(d);
    pile_backend_close(d2);
    pile_backend_close(c);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A throughput note for the log (no timing is asserted). */
static void probe(void)
{
    int N = 512, C = 768, NH = 12;
    /* x and o serve as attention's qkv and out at B x T = 2 N too */
    pile_tensor x = talloc(be, F32, (size_t)2 * N * 4 * C * 4), W = talloc(be, F32, (size_t)C * 4 * C * 4);
    pile_tensor o = talloc(be, F32, (size_t)2 * N * 4 * C * 4);
    if (!x.data || !W.data || !o.data) {
        printf("# probe: no memory\n");
    } else {
        pile_backend_matmul_fwd(be, o, x, W, NONE, N, C, 4 * C); /* warm the thread pools */
        double t0 = now();
        pile_backend_matmul_fwd(be, o, x, W, NONE, N, C, 4 * C);
        double t1 = now();
        /* OpenBLAS 0.3.21 takes CPUs it does not know for a Prescott:
         * OPENBLAS_CORETYPE=SkylakeX (or Haswell) then runs ~4x faster */
        printf("# probe: OpenBLAS kernels for '%s'\n", openblas_get_corename());
        printf("# probe (%d threads): matmul %dx%dx%d %.1f GFLOP/s\n", pile_backend_threads(be), N, C, 4 * C,
               2.0 * N * C * 4 * C / (t1 - t0) * 1e-9);
        for (int T = 256; T <= 1024; T *= 4) {
            int B = N / T > 0 ? N / T : 1;
            pile_tensor dq = talloc(be, F32, (size_t)B * T * 3 * C * 4);
            pile_tensor sv = talloc(be, U8, pile_backend_attention_saved_bytes(be, B, T, C, NH));
            pile_tensor sc = talloc(be, U8, pile_backend_attention_scratch_bytes(be, B, T, C, NH));
            double t2 = now();
            pile_backend_attention_fwd(be, o, sv, sc, x, NONE, B, T, C, NH);
            double t3 = now();
            pile_backend_attention_bwd(be, dq, sc, o, x, o, sv, NONE, B, T, C, NH);
            double t4 = now();
            double f = 2.0 * 2 * B * NH * (double)T * T / 2 * (C / NH);
            printf("# probe: attention B=%d T=%d C=%d fwd %.1f ms (%.1f GFLOP/s causal), bwd %.1f ms\n", B, T, C,
                   (t3 - t2) * 1e3, f / (t3 - t2) * 1e-9, (t4 - t3) * 1e3);
            pile_backend_free(&dq), pile_backend_free(&sv), pile_backend_free(&sc);
        }
    }
    pile_backend_free(&x), pile_backend_free(&W), pile_backend_free(&o);
    pile_err err, *ep = &err;
    ASSERT_OK(pile_backend_sync(be, &err), ep);
}

/* Staged uploads on backend `name`: each group's data lands as a plain
 * upload's does (the host array overwritten once staged), ops queued
 * after stage_wait see it, a group's first upload waits for the ops
 * queued before it (it overwrites what the last add read), groups past
 * the reserve fail with both sizes, and a reserve grows, never shrinks.
 * in_flight (devsim): until stage_wait the group's tensors read poisoned
 * (int32 zero, float NaN), and what lands there is what was staged. */
static void test_stage(const char *name, int in_flight)
{
    pile_err err, *ep = &err;
    pile_backend *b = NULL;
    if (pile_backend_open(&b, name, 1, &err) < 0) {
        PILE_FAIL_("cannot open '%s': %s", name, err.msg);
        return;
    }
    enum { N = 1000 };
    int32_t *h = malloc(N * sizeof *h), *got = malloc(N * sizeof *got);
    float *hf = malloc(N * sizeof *hf), *gf = malloc(N * sizeof *gf);
    pile_tensor a = pile_backend_alloc(b, I32, N), x = pile_backend_alloc(b, F32, N);
    pile_tensor y = pile_backend_alloc(b, F32, N), z = pile_backend_alloc(b, F32, N);
    ASSERT(h && got && hf && gf && a.data && x.data && y.data && z.data);
    if (!h || !got || !hf || !gf || !a.data || !x.data || !y.data || !z.data) goto out;
    /* 4000 bytes of int32 and 4000 of float, each rounded to 4096 */
    ASSERT_OK(pile_backend_stage_reserve(b, 8192, &err), ep);
    ASSERT_OK(pile_backend_stage_reserve(b, 100, &err), ep); /* kept */
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) h[i] = round * 100000 + i * 7, hf[i] = (float)(round + 1) * 0.5f + (float)i;
        /* y = x + x reads x; the staged group then overwrites x */
        pile_backend_add(b, y, x, x, N);
        pile_backend_stage_upload(b, a, h, N);
        pile_backend_stage_upload(b, x, hf, N);
        for (int i = 0; i < N; i++) h[i] = -1, hf[i] = -1.0f; /* copied already */
        if (in_flight) {
            /* devsim: the copies run at stage_wait, the tensors poisoned
             * until then (as a device's copy in flight leaves them) */
            pile_backend_download(b, got, a, N);
            pile_backend_download(b, gf, x, N);
            ASSERT_OK(pile_backend_sync(b, &err), ep);
            int poisoned = 0;
            for (int i = 0; i < N; i++) poisoned += got[i] == 0 && isnan(gf[i]);
            ASSERT_EQ(poisoned, N);
        }
        pile_backend_stage_wait(b);
        pile_backend_add(b, z, x, x, N);
        pile_backend_download(b, got, a, N);
        pile_backend_download(b, gf, z, N);
        ASSERT_OK(pile_backend_sync(b, &err), ep);
        int bad = 0, bad_z = 0;
        for (int i = 0; i < N; i++) {
            bad += got[i] != round * 100000 + i * 7;
            float want = (float)(round + 1) * 0.5f + (float)i;
            bad_z += gf[i] != want + want;
        }
        ASSERT_EQ(bad, 0);
        ASSERT_EQ(bad_z, 0);
        /* y saw the x of the group before (round 0: the zeroed allocation) */
        pile_backend_download(b, gf, y, N);
        ASSERT_OK(pile_backend_sync(b, &err), ep);
        int bad_y = 0;
        for (int i = 0; i < N; i++) {
            float before = round ? (float)round * 0.5f + (float)i : 0.0f;
            bad_y += gf[i] != before + before;
        }
        ASSERT_EQ(bad_y, 0);
    }
    /* a third upload in a group of two: past the reserve */
    pile_backend_stage_upload(b, a, h, N);
    pile_backend_stage_upload(b, x, hf, N);
    pile_backend_stage_upload(b, y, hf, 1);
    ASSERT_EQ(pile_backend_sync(b, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "stage_upload") && strstr(err.msg, "8192"));
    printf("# %s\n", err.msg);
out:
    pile_backend_free(&a), pile_backend_free(&x), pile_backend_free(&y), pile_backend_free(&z);
    free(h), free(got), free(hf), free(gf);
    pile_backend_close(b);
}

int main(void)
{
    pile_err err;
    pile_test_rng_state = 20240607;
    TEST("open, alloc (small and big), free, bytes in use, unknown name");
    test_open_alloc();
    TEST("backends by name: auto, cpu, two in one process, cuda absent from this build or without a device");
    test_names();
    TEST("bytes in use and their peak; reserving on the cpu");
    test_bytes_peak();
    pile_err no_cuda;
    if (pile_backend_probe("cuda", &no_cuda) == 0) {
        TEST("cuda backend memory: the arena, cudaMalloc beyond it, copies");
        test_cuda_memory();
    } else {
        TEST("cuda backend memory # SKIP no CUDA device or a build without CUDA");
    }
    TEST("staged uploads (cpu: plain uploads): the same data, in order with the ops, the reserve enforced");
    test_stage("cpu", 0);
    TEST("staged uploads on devsim and devsim16: poisoned until stage_wait, copied from staging memory there");
    test_stage("devsim", 1);
    test_stage("devsim16", 1);
    if (pile_backend_probe("cuda", &no_cuda) == 0) {
        TEST("staged uploads on cuda: pinned memory, the copy stream and its events");
        test_stage("cuda", 0);
    } else {
        TEST("staged uploads on cuda # SKIP no CUDA device or a build without CUDA");
    }
    TEST("sticky error: the first failure named, later ops skipped, sync returns it");
    test_sticky_error();
    TEST("bf16 / fp16 emulation: compute outputs rounded as 16-bit stores, F32 ones not");
    test_emulation();
    TEST("devsim: not the host's memory (reads and writes fault), copies in and out, every op the cpu's bits; "
         "devsim16's bf16 tensors");
    test_devsim();
    TEST("the comm stream: nothing on the cpu; on devsim queued calls poison their outputs and run at "
         "compute_wait_comm or a free, reading their inputs then");
    test_comm_stream();
    TEST("comm hazards on devsim: a collective queued after an op that wrote its input, with no "
         "comm_wait_compute between, fails naming the op; per op, exactly the operands it writes");
    test_comm_hazards();
    TEST("comm marks: nothing on the cpu; on devsim waiting for a mark runs the calls up to it, the later "
         "ones stay queued and poisoned");
    test_comm_marks();
    if (pile_backend_open(&be, "cpu", 0, &err) < 0) {
        printf("Bail out! cannot open the cpu backend: %s\n", err.msg);
        return 1;
    }
    TEST("embedding forward and backward (repeated tokens)");
    test_embed(2, 5, 7, 13);
    test_embed(3, 11, 33, 64);
    TEST("layernorm forward and backward");
    test_layernorm(5, 13);
    test_layernorm(9, 67);
    TEST("matmul forward and backward, with and without bias and dinp");
    test_matmul(7, 13, 9, 1, 1);
    test_matmul(5, 17, 31, 0, 1);
    test_matmul(3, 8, 5, 1, 0);
    test_matmul(33, 65, 70, 1, 1);
    TEST("logits forward and backward");
    test_logits(5, 11, 16);
    test_logits(13, 24, 67);
    TEST("attention, causal only");
    test_attention(2, 7, 12, 3, 0, 0, 100000);
    test_attention(1, 13, 8, 1, 0, 0, 100000);
    test_attention(3, 5, 15, 3, 0, 0, 100000); /* odd head size 5 */
    TEST("attention with doc_start, several documents per row");
    test_attention(2, 11, 12, 3, 1, 5, 100000);
    test_attention(2, 9, 21, 3, 2, 0, 100000); /* any start per position; head size 7 */
    TEST("attention across query and key blocks (T = 300), doc_start");
    test_attention(2, 300, 16, 2, 1, 5, 60);
    test_attention(1, 300, 16, 2, 1, 150, 60);
    TEST("attention across query and key blocks (T = 257), causal");
    test_attention(1, 257, 8, 2, 0, 0, 60);
    TEST("attention, several key blocks per row (online softmax), odd T and head sizes");
    test_attention(2, 613, 96, 2, 0, 0, 0);   /* head size 48 */
    test_attention(1, 700, 66, 2, 1, 300, 0); /* head size 33, documents across blocks */
    test_attention(1, 555, 20, 4, 2, 0, 20);  /* head size 5, any start */
    test_attention(1, 1030, 64, 1, 1, 90, 0); /* one head of 64, five key blocks */
    TEST("attention: the same bits with 1, 3 and 4 threads");
    test_attention_threads(2, 300, 48, 3, 0);
    test_attention_threads(1, 517, 24, 4, 1);
    TEST("attention decode: rows of the forward from key/value caches, any thread count");
    test_attention_decode(1, 8, 2);
    test_attention_decode(37, 48, 6);
    test_attention_decode(300, 64, 4); /* past the parallel threshold */
    TEST("gelu forward and backward");
    test_gelu(1001, 5);
    test_gelu(20000, 40); /* far tails: exp over- and underflow */
    test_gelu(20000, 1e6); /* |2u| past 2^30: the exp clamps must stay exact */
    TEST("add");
    test_add(5);
    test_add(100001);
    TEST("dropout");
    test_dropout();
    TEST("softmax cross-entropy: losses, argmax ties, ignored rows, padded columns");
    test_softmax_ce(7, 11, 16);
    test_softmax_ce(40, 100, 128);
    TEST("sumsq, scale, adamw");
    test_optimizer();
    TEST("determinism: same bits on rerun");
    test_determinism();
    TEST("determinism: non-BLAS ops identical for 1 and 4 threads");
    test_thread_independence();
    TEST("all memory returned");
    ASSERT_EQ(pile_backend_bytes_in_use(be), 0);
    probe();
    pile_backend_close(be);
    return TEST_DONE();
}
