/* The model and the optimizer on a tiny GPT-2 (V=61 so the vocabulary is
 * padded to 64): every parameter tensor's gradient against central finite
 * differences (plain causal, within documents, through dropout), GPT-2
 * initialisation, evaluation vs training forwards, determinism, staged
 * batches against direct ones, AdamW's
 * decay flags and bias correction, clipping, and the schedule. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "model.h"
#include "optim.h"
#include "pile_test.h"

#define V 61
#define NPOS 16
#define NL 2
#define NH 2
#define C 16
#define MAXB 3
#define SEQ 12
#define B 2
#define T 11

static pile_backend *be;
static pile_err err_rec, *E = &err_rec; /* a pointer, as ASSERT_OK tests it */
static int32_t tokens[B * T], targets[B * T], docs[B * T];
/* The gradients the backward accumulates into: in training the
 * optimizer's (pile_optim_grads); here the tests' own, sized once in main
 * for tiny_cfg's layout (every model here has it), so that allocation
 * counts around a model are the model's alone. */
static pile_tensor grads;

/* The allocation-failure case asks for more than any address space holds;
 * ASan must then return NULL as malloc does instead of aborting. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "allocator_may_return_null=1"; }

static pile_model_config tiny_cfg(float dropout)
{
    pile_model_config cfg = {V, NPOS, NL, NH, C, dropout, PILE_RECOMPUTE_NONE, PILE_DTYPE_F32};
    return cfg;
}

static pile_model *make_model(float dropout)
{
    pile_model_config cfg = tiny_cfg(dropout);
    pile_model *m = NULL;
    int rc = pile_model_create(&m, be, &cfg, MAXB, SEQ, E);
    if (rc < 0) {
        printf("# pile_model_create: %s\n", E->msg);
        return NULL;
    }
    return m;
}

/* A batch with ignored targets (the end of row 1 and one inside row 0) and,
 * for the doc_start cases, documents starting at 0, 5 (row 0) and 0, 3, 8 (row 1). */
static void make_batch(void)
{
    pile_test_rng_state = 7;
    for (int i = 0; i < B * T; i++) tokens[i] = (int32_t)(pile_test_rng() % V);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int i = b * T + t;
            targets[i] = t + 1 < T ? tokens[i + 1] : (b == 0 ? (int32_t)(pile_test_rng() % V) : -1);
            docs[i] = b == 0 ? (t >= 5 ? 5 : 0) : (t >= 8 ? 8 : t >= 3 ? 3 : 0);
        }
    targets[3] = -1;
}

static float *download_params(pile_model *m)
{
    size_t n = pile_model_flat_size(m);
    float *h = malloc(n * sizeof *h);
    if (h) pile_backend_download(be, h, pile_model_params(m), n);
    return h;
}

static float *download_grads(pile_model *m)
{
    size_t n = pile_model_flat_size(m);
    float *h = malloc(n * sizeof *h);
    if (h) pile_backend_download(be, h, grads, n);
    return h;
}

static void zero_grad(pile_model *m)
{
    ASSERT_EQ(grads.n, pile_model_flat_size(m));
    pile_backend_zero(be, grads, grads.n);
}

/* Larger-than-GPT-2 random parameters so every gradient is well above the
 * fp32 noise of the finite differences; padded wte rows stay zero. */
static void randomize(pile_model *m, uint64_t seed)
{
    float *h = download_params(m);
    if (!h) return;
    pile_test_rng_state = seed;
    for (size_t i = 0; i < pile_model_tensor_count(m); i++) {
        const pile_tensor_info *ti = pile_model_tensor(m, i);
        int is_ln_w = strstr(ti->name, "ln_") && strstr(ti->name, ".weight");
        for (size_t j = 0; j < ti->saved_numel; j++) {
            double u = ((double)(pile_test_rng() >> 11) * 0x1.0p-53) * 2.0 - 1.0;
            h[ti->offset + j] = (float)(is_ln_w ? 1.0 + 0.3 * u : 0.5 * u);
        }
    }
    pile_backend_upload(be, pile_model_params(m), h, pile_model_flat_size(m));
    free(h);
}

static double loss_of(pile_model *m, const pile_batch *bt, int training, uint64_t seed)
{
    pile_fwd_stats st;
    if (pile_model_forward(m, bt, training, seed, 0.0f, &st, E) < 0) {
        printf("# forward: %s\n", E->msg);
        return NAN;
    }
    return st.loss_sum;
}

static void set_param(pile_model *m, size_t at, float value)
{
    pile_backend_upload(be, pile_tensor_slice(pile_model_params(m), at, 1), &value, 1);
}

/* Central differences on loss_sum for ~20 entries of every tensor. */
static void gradcheck(int use_docs, float dropout)
{
    pile_model *m = make_model(dropout);
    ASSERT(m != NULL);
    if (!m) return;
    randomize(m, 11);
    pile_batch bt = {B, T, tokens, targets, use_docs ? docs : NULL};
    const int training = 1;
    const uint64_t seed = 1234;
    zero_grad(m);
    pile_fwd_stats st;
    ASSERT_OK(pile_model_forward(m, &bt, training, seed, 1.0f, &st, E), E);
    ASSERT_OK(pile_model_backward(m, grads, E), E);
    ASSERT_EQ(st.n_tokens, B * T - 2);
    float *g = download_grads(m), *p = download_params(m);
    ASSERT(g && p);
    if (!g || !p) goto out;

    /* padded wte rows: never predicted, never embedded */
    const pile_tensor_info *wte = pile_model_tensor(m, 0);
    int pad_nonzero = 0;
    for (size_t j = wte->saved_numel; j < wte->numel; j++) pad_nonzero += g[wte->offset + j] != 0.0f;
    ASSERT_EQ(pad_nonzero, 0);

    pile_test_rng_state = 99;
    double worst = 0.0;
    const char *worst_name = "";
    for (size_t i = 0; i < pile_model_tensor_count(m); i++) {
        const pile_tensor_info *ti = pile_model_tensor(m, i);
        double gmax = 0.0;
        for (size_t j = 0; j < ti->saved_numel; j++) gmax = fmax(gmax, fabs(g[ti->offset + j]));
        /* every tensor takes part in the loss */
        if (!(gmax > 1e-3)) PILE_FAIL_("%s: gradient is all (near) zero (max %g)", ti->name, gmax);
        int bad = 0;
        for (int k = 0; k < 20; k++) {
            size_t at = ti->offset + (size_t)(pile_test_rng() % ti->saved_numel);
            float orig = p[at], eps = 1e-2f;
            float up = orig + eps, dn = orig - eps;
            set_param(m, at, up);
            double lp = loss_of(m, &bt, training, seed);
            set_param(m, at, dn);
            double lm = loss_of(m, &bt, training, seed);
            set_param(m, at, orig);
            double fd = (lp - lm) / ((double)up - (double)dn), an = g[at];
            /* fp32 loss noise ~1e-5 over 2e-2 of step, plus O(eps^2) curvature */
            double tol = 2e-2 * fmax(fabs(fd), fabs(an)) + 2e-3 * gmax + 1e-3;
            double rel = fabs(fd - an) / (2e-2 * fmax(fabs(fd), fabs(an)) + 2e-3 * gmax + 1e-3);
            if (rel > worst) {
                worst = rel;
                worst_name = ti->name;
            }
            if (fabs(fd - an) > tol && bad++ < 3)
                PILE_FAIL_("%s[%zu]: finite difference %.6g, backward %.6g", ti->name, at - ti->offset, fd, an);
        }
    }
    printf("# docs=%d dropout=%g: worst error / tolerance %.3f (%s)\n", use_docs, (double)dropout, worst,
           worst_name);
out:
    free(g);
    free(p);
    pile_model_free(m);
}

static void test_table(void)
{
    TEST("tensor table, presets, padding");
    ASSERT_EQ(pile_model_padded_vocab(61), 64);
    ASSERT_EQ(pile_model_padded_vocab(64), 64);
    ASSERT_EQ(pile_model_padded_vocab(50257), 50304);
    pile_model_config cfg = tiny_cfg(0.0f);
    ASSERT_OK(pile_model_preset(&cfg, "small", E), E);
    ASSERT_EQ(cfg.n_layer, 6);
    ASSERT_EQ(cfg.n_head, 6);
    ASSERT_EQ(cfg.n_embd, 384);
    ASSERT_EQ(cfg.vocab_size, V);
    ASSERT_OK(pile_model_preset(&cfg, "gpt2-xl", E), E);
    ASSERT_EQ(cfg.n_layer * 10000 + cfg.n_head * 1000 + cfg.n_embd, 48 * 10000 + 25 * 1000 + 1600);
    ASSERT_EQ(pile_model_preset(&cfg, "gpt3", E), PILE_EINVAL);
    ASSERT(strstr(E->msg, "gpt3") && strstr(E->msg, "gpt2-medium"));

    pile_model *m = make_model(0.0f);
    ASSERT(m != NULL);
    if (!m) return;
    ASSERT_EQ(pile_model_tensor_count(m), 2 + 12 * NL + 2);
    size_t expect = (size_t)V * C + (size_t)NPOS * C + (size_t)NL * (12 * C * C + 13 * C) + 2 * C;
    ASSERT_EQ(pile_model_param_count(m), expect);
    ASSERT_EQ(pile_model_flat_size(m), expect + (size_t)(64 - V) * C);
    const pile_tensor_info *t0 = pile_model_tensor(m, 0), *t2 = pile_model_tensor(m, 2);
    const pile_tensor_info *t4 = pile_model_tensor(m, 4), *t13 = pile_model_tensor(m, 13);
    const pile_tensor_info *tl = pile_model_tensor(m, pile_model_tensor_count(m) - 1);
    ASSERT_STR_EQ(t0->name, "wte.weight");
    ASSERT_EQ(t0->shape[0], V);
    ASSERT_EQ(t0->numel, 64 * C);
    ASSERT_EQ(t0->saved_numel, V * C);
    ASSERT(t0->is_embedding && !t0->decay);
    ASSERT_STR_EQ(pile_model_tensor(m, 1)->name, "wpe.weight");
    ASSERT_EQ(pile_model_tensor(m, 1)->offset, 64 * C);
    ASSERT_STR_EQ(t2->name, "h.0.ln_1.weight");
    ASSERT(!t2->decay && t2->ndim == 1);
    ASSERT_STR_EQ(t4->name, "h.0.attn.c_attn.weight");
    ASSERT(t4->decay && t4->ndim == 2 && t4->shape[0] == C && t4->shape[1] == 3 * C);
    ASSERT_STR_EQ(pile_model_tensor(m, 5)->name, "h.0.attn.c_attn.bias");
    ASSERT_STR_EQ(t13->name, "h.0.mlp.c_proj.bias");
    ASSERT_STR_EQ(pile_model_tensor(m, 12)->name, "h.0.mlp.c_proj.weight");
    ASSERT(pile_model_tensor(m, 12)->shape[0] == 4 * C && pile_model_tensor(m, 12)->shape[1] == C);
    ASSERT_STR_EQ(pile_model_tensor(m, 14)->name, "h.1.ln_1.weight");
    ASSERT_STR_EQ(tl->name, "ln_f.bias");
    ASSERT_EQ(tl->offset + tl->numel, pile_model_flat_size(m));
    ASSERT(pile_model_tensor(m, pile_model_tensor_count(m)) == NULL);
    pile_model_free(m);
    pile_model_free(NULL);

    pile_model *bad = NULL;
    cfg = tiny_cfg(0.0f);
    ASSERT_EQ(pile_model_create(&bad, be, &cfg, 1, NPOS + 1, E), PILE_EINVAL);
    ASSERT(bad == NULL && strstr(E->msg, "n_positions"));
    cfg.n_embd = 15;
    ASSERT_EQ(pile_model_create(&bad, be, &cfg, 1, 4, E), PILE_EINVAL);

    /* 2^30 x 2^16 parameters: 256 TiB, beyond a 47-bit address space, so
     * the allocation fails whatever the overcommit policy */
    size_t before = pile_backend_bytes_in_use(be);
    cfg = tiny_cfg(0.0f);
    cfg.vocab_size = 1 << 30;
    cfg.n_embd = 1 << 16;
    ASSERT_EQ(pile_model_create(&bad, be, &cfg, 1, 1, E), PILE_ENOMEM);
    ASSERT(bad == NULL && strstr(E->msg, "cannot allocate"));
    ASSERT_EQ(pile_backend_bytes_in_use(be), before);

    /* a parameter buffer of exactly 2^64 bytes: C = 2^28, 5 layers, and
     * Vp + n_positions + 13 L + 2 = 2^30 make 4 (C (Vp + npos + 13 L + 2) +
     * 12 L C^2) = 2^60 + 15 * 2^60. A wrapped size allocated 0 bytes for
     * 2^62 parameters (heap overflow at init on a machine whose memory
     * holds the ~100 GB of activations); it must fail on the parameters */
    cfg = tiny_cfg(0.0f);
    cfg.vocab_size = 64;
    cfg.n_layer = 5;
    cfg.n_head = 1;
    cfg.n_embd = 1 << 28;
    cfg.n_positions = (1 << 30) - 64 - 13 * 5 - 2;
    ASSERT_EQ(pile_model_create(&bad, be, &cfg, 1, 1, E), PILE_ENOMEM);
    ASSERT(bad == NULL && strstr(E->msg, "parameters"));
    printf("# %s\n", E->msg);
    ASSERT_EQ(pile_backend_bytes_in_use(be), before);
}

static void test_init(void)
{
    TEST("GPT-2 initialisation and the loss at init");
    pile_model *m = make_model(0.0f);
    ASSERT(m != NULL);
    if (!m) return;
    pile_model_init(m, 42);
    float *a = download_params(m);
    pile_model_init(m, 42);
    float *b = download_params(m);
    pile_model_init(m, 43);
    float *c = download_params(m);
    ASSERT(a && b && c);
    if (a && b && c) {
        size_t n = pile_model_flat_size(m);
        ASSERT_MEM_EQ(a, b, n * sizeof *a);
        ASSERT(memcmp(a, c, n * sizeof *a) != 0);
        for (size_t i = 0; i < pile_model_tensor_count(m); i++) {
            const pile_tensor_info *ti = pile_model_tensor(m, i);
            double s = 0.0, s2 = 0.0;
            for (size_t j = 0; j < ti->saved_numel; j++) {
                s += a[ti->offset + j];
                s2 += (double)a[ti->offset + j] * a[ti->offset + j];
            }
            double mean = s / (double)ti->saved_numel;
            double sd = sqrt(s2 / (double)ti->saved_numel - mean * mean);
            double want_sd = strstr(ti->name, "c_proj.weight") ? 0.02 / sqrt(2.0 * NL)
                             : ti->ndim == 2                   ? 0.02
                                                               : 0.0;
            double want_mean = strstr(ti->name, "ln_") && strstr(ti->name, ".weight") ? 1.0 : 0.0;
            if (want_sd == 0.0) {
                if (!(mean == want_mean && sd == 0.0)) PILE_FAIL_("%s: mean %g sd %g", ti->name, mean, sd);
            } else if (!(fabs(mean) < 0.2 * want_sd && fabs(sd - want_sd) < 0.12 * want_sd)) {
                PILE_FAIL_("%s: mean %g sd %g, want sd %g", ti->name, mean, sd, want_sd);
            }
        }
        const pile_tensor_info *wte = pile_model_tensor(m, 0);
        int pad = 0;
        for (size_t j = wte->saved_numel; j < wte->numel; j++) pad += a[wte->offset + j] != 0.0f;
        ASSERT_EQ(pad, 0);
    }
    free(a);
    free(b);
    free(c);

    pile_batch bt = {B, T, tokens, targets, NULL};
    pile_fwd_stats st;
    ASSERT_OK(pile_model_forward(m, &bt, 0, 0, 0.0f, &st, E), E);
    double mean = st.loss_sum / (double)st.n_tokens;
    if (!(fabs(mean - log((double)V)) < 0.05)) PILE_FAIL_("loss at init %g, ln(V) %g", mean, log((double)V));
    pile_model_free(m);
}

static void test_forwards(void)
{
    TEST("evaluation forward: same loss as training forward, logits, counts, errors");
    pile_model *m = make_model(0.0f);
    ASSERT(m != NULL);
    if (!m) return;
    randomize(m, 5);
    pile_batch bt = {B, T, tokens, targets, docs};
    pile_fwd_stats tr, ev;
    ASSERT_OK(pile_model_forward(m, &bt, 1, 9, 1.0f / 20, &tr, E), E);
    ASSERT_OK(pile_model_forward(m, &bt, 0, 0, 0.0f, &ev, E), E);
    ASSERT(tr.loss_sum == ev.loss_sum);
    ASSERT_EQ(tr.n_tokens, ev.n_tokens);
    ASSERT_EQ(tr.n_correct, ev.n_correct);
    ASSERT_EQ(ev.n_tokens, B * T - 2);

    /* cross-entropy and argmax on the host from the copied logits */
    double host_loss = 0.0;
    int64_t host_correct = 0;
    float row[V];
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int y = targets[b * T + t];
            if (y < 0) continue;
            pile_model_copy_logits(m, b, t, row);
            double mx = row[0], s = 0.0;
            int am = 0;
            for (int j = 1; j < V; j++)
                if (row[j] > mx) mx = row[am = j];
            for (int j = 0; j < V; j++) s += exp(row[j] - mx);
            host_loss += log(s) + mx - row[y];
            host_correct += am == y;
        }
    if (!(fabs(host_loss - ev.loss_sum) < 1e-5 * fabs(host_loss)))
        PILE_FAIL_("host loss %.9g, model %.9g", host_loss, ev.loss_sum);
    ASSERT_EQ(host_correct, ev.n_correct);

    /* documents change what attends to what, so the loss */
    pile_batch plain = {B, T, tokens, targets, NULL};
    ASSERT(loss_of(m, &plain, 0, 0) != ev.loss_sum);
    /* a shorter batch than the model was made for */
    pile_batch small = {1, 5, tokens, targets, NULL};
    ASSERT_OK(pile_model_forward(m, &small, 0, 0, 0.0f, &ev, E), E);
    ASSERT_EQ(ev.n_tokens, 4);

    ASSERT_EQ(pile_model_backward(m, grads, E), PILE_EINVAL);
    pile_batch big = {MAXB + 1, T, tokens, targets, NULL};
    ASSERT_EQ(pile_model_forward(m, &big, 0, 0, 0.0f, &ev, E), PILE_EINVAL);
    pile_batch longer = {1, SEQ + 1, tokens, targets, NULL};
    ASSERT_EQ(pile_model_forward(m, &longer, 0, 0, 0.0f, &ev, E), PILE_EINVAL);
    int32_t badtok[B * T];
    memcpy(badtok, tokens, sizeof badtok);
    badtok[7] = V;
    pile_batch bad = {B, T, badtok, targets, NULL};
    ASSERT_EQ(pile_model_forward(m, &bad, 0, 0, 0.0f, &ev, E), PILE_EINVAL);
    ASSERT(strstr(E->msg, "61") != NULL);
    int32_t baddoc[B * T];
    memcpy(baddoc, docs, sizeof baddoc);
    baddoc[2] = 3;
    pile_batch bad2 = {B, T, tokens, targets, baddoc};
    ASSERT_EQ(pile_model_forward(m, &bad2, 0, 0, 0.0f, &ev, E), PILE_EINVAL);
    pile_model_free(m);
}

static void test_determinism(void)
{
    TEST("two forward+backward passes give identical bits; gradients accumulate");
    pile_model *m = make_model(0.1f);
    ASSERT(m != NULL);
    if (!m) return;
    randomize(m, 3);
    pile_batch bt = {B, T, tokens, targets, docs};
    pile_fwd_stats s1, s2;
    zero_grad(m);
    ASSERT_OK(pile_model_forward(m, &bt, 1, 77, 0.05f, &s1, E), E);
    ASSERT_OK(pile_model_backward(m, grads, E), E);
    float *g1 = download_grads(m);
    zero_grad(m);
    ASSERT_OK(pile_model_forward(m, &bt, 1, 77, 0.05f, &s2, E), E);
    ASSERT_OK(pile_model_backward(m, grads, E), E);
    float *g2 = download_grads(m);
    /* a second micro-batch adds to what is there */
    ASSERT_OK(pile_model_forward(m, &bt, 1, 77, 0.05f, &s2, E), E);
    ASSERT_OK(pile_model_backward(m, grads, E), E);
    float *g3 = download_grads(m);
    ASSERT(g1 && g2 && g3);
    if (g1 && g2 && g3) {
        size_t n = pile_model_flat_size(m);
        ASSERT(memcmp(&s1.loss_sum, &s2.loss_sum, sizeof s1.loss_sum) == 0);
        ASSERT_MEM_EQ(g1, g2, n * sizeof *g1);
        size_t off = 0;
        for (size_t i = 0; i < n; i++) off += fabsf(g3[i] - 2.0f * g1[i]) > 1e-6f * (1.0f + fabsf(g3[i]));
        ASSERT_EQ(off, 0);
    }
    free(g1);
    free(g2);
    free(g3);
    pile_model_free(m);
}

/* Staged batches (pile_model_stage, then forwards on NULL) give the bits
 * of direct forwards on the same batches, in the order staged, through
 * both input sets: full batches with documents, then the short last
 * micro-batch of an epoch (fewer rows and positions), then one without
 * documents; with the host arrays overwritten once staged. And the rules:
 * at most two staged, a second only after the backward, a direct forward
 * beside one staged batch, unstage. Run on the cpu backend (whose staged
 * uploads are plain uploads) and on devsim, whose staged copies land only
 * at stage_wait, their tensors poisoned until then: a forward that reads
 * a staged batch before its wait, or a staged batch put where the last
 * forward's backward still reads, gives other bits there. */
static void test_staging(const char *title)
{
    TEST(title);
    enum { NB = 4 };
    pile_model *m = make_model(0.1f);
    ASSERT(m != NULL);
    if (!m) return;
    randomize(m, 11);
    const size_t n = pile_model_flat_size(m);
    /* the batches' arrays, host copies that the staged path overwrites */
    static int32_t tok[NB][B * T], tgt[NB][B * T], doc[NB][B * T];
    const int rows[NB] = {B, B, 1, B}, len[NB] = {T, T, 7, T}, with_doc[NB] = {1, 1, 1, 0};
    for (int k = 0; k < NB; k++)
        for (int r = 0; r < rows[k]; r++)
            for (int t = 0; t < len[k]; t++) {
                int i = r * len[k] + t, src = r * T + t;
                tok[k][i] = (tokens[src] + 7 * k) % V;
                tgt[k][i] = targets[src] < 0 ? -1 : (targets[src] + 7 * k) % V;
                doc[k][i] = docs[src];
            }
    pile_batch bt[NB];
    for (int k = 0; k < NB; k++)
        bt[k] = (pile_batch){rows[k], len[k], tok[k], tgt[k], with_doc[k] ? doc[k] : NULL};

    pile_batch plain = {B, T, tokens, targets, docs}; /* a valid batch, for the refusals */
    pile_fwd_stats want[NB], got;
    float *gwant[NB] = {NULL};
    for (int k = 0; k < NB; k++) {
        zero_grad(m);
        ASSERT_OK(pile_model_forward(m, &bt[k], 1, 100 + (uint64_t)k, 0.03f, &want[k], E), E);
        ASSERT_OK(pile_model_backward(m, grads, E), E);
        gwant[k] = download_grads(m);
        ASSERT(gwant[k] != NULL);
    }

    ASSERT_EQ(pile_model_forward(m, NULL, 1, 1, 0.03f, &got, E), PILE_EINVAL);
    ASSERT_OK(pile_model_stage(m, &bt[0], E), E);
    for (int k = 0; k < NB; k++) {
        if (k + 1 < NB) {
            ASSERT_OK(pile_model_stage(m, &bt[k + 1], E), E);
            ASSERT_EQ(pile_model_staged(m), 2);
            /* both staged batches were copied: the host arrays may change */
            memset(tok[k + 1], 0x7f, sizeof tok[k + 1]);
            memset(tgt[k + 1], 0x7f, sizeof tgt[k + 1]);
            memset(doc[k + 1], 0x7f, sizeof doc[k + 1]);
            ASSERT_EQ(pile_model_stage(m, &plain, E), PILE_EINVAL); /* a third */
            ASSERT_EQ(pile_model_forward(m, &plain, 0, 0, 0.0f, &got, E), PILE_EINVAL);
        }
        if (k == 0) {
            memset(tok[0], 0x7f, sizeof tok[0]);
            memset(tgt[0], 0x7f, sizeof tgt[0]);
        }
        zero_grad(m);
        ASSERT_OK(pile_model_forward(m, NULL, 1, 100 + (uint64_t)k, 0.03f, &got, E), E);
        ASSERT(memcmp(&got.loss_sum, &want[k].loss_sum, sizeof got.loss_sum) == 0);
        ASSERT_EQ(got.n_tokens, want[k].n_tokens);
        ASSERT_EQ(got.n_correct, want[k].n_correct);
        if (k + 1 < NB) /* the last forward's inputs are the second one's set: its backward comes first */
            ASSERT_EQ(pile_model_stage(m, &plain, E), PILE_EINVAL);
        ASSERT_OK(pile_model_backward(m, grads, E), E);
        float *g = download_grads(m);
        ASSERT(g != NULL);
        if (g && gwant[k]) ASSERT_MEM_EQ(g, gwant[k], n * sizeof *g);
        free(g);
    }
    ASSERT_EQ(pile_model_staged(m), 0);

    /* one staged batch stays through a direct (validation) forward */
    for (int r = 0; r < B * T; r++) { /* batch 1 again, the way it was */
        tok[1][r] = (tokens[r] + 7) % V;
        tgt[1][r] = targets[r] < 0 ? -1 : (targets[r] + 7) % V;
        doc[1][r] = docs[r];
    }
    ASSERT_OK(pile_model_stage(m, &bt[1], E), E);
    double direct = loss_of(m, &plain, 0, 0);
    ASSERT(direct == direct);
    ASSERT_EQ(pile_model_staged(m), 1);
    zero_grad(m);
    ASSERT_OK(pile_model_forward(m, NULL, 1, 101, 0.03f, &got, E), E);
    ASSERT(memcmp(&got.loss_sum, &want[1].loss_sum, sizeof got.loss_sum) == 0);
    ASSERT_OK(pile_model_backward(m, grads, E), E);

    /* a bad batch is refused and stages nothing; unstage forgets */
    int32_t bad = tokens[0];
    tokens[0] = V;
    ASSERT_EQ(pile_model_stage(m, &plain, E), PILE_EINVAL);
    tokens[0] = bad;
    ASSERT_EQ(pile_model_staged(m), 0);
    ASSERT_OK(pile_model_stage(m, &plain, E), E);
    pile_model_unstage(m);
    ASSERT_EQ(pile_model_staged(m), 0);
    ASSERT_EQ(pile_model_forward(m, NULL, 0, 0, 0.0f, &got, E), PILE_EINVAL);
    ASSERT_OK(pile_backend_sync(be, E), E);
    for (int k = 0; k < NB; k++) free(gwant[k]);
    pile_model_free(m);
}

/* Recomputation changes memory, never results: losses and gradients of
 * two micro-batches (dropout on, documents, then a shorter batch) are the
 * same bits in every mode, and each mode keeps less than the one before. */
static void test_recompute(void)
{
    TEST("recompute none, gelu, block: the same loss and gradient bits, less memory");
    pile_recompute mode;
    ASSERT_OK(pile_model_recompute_parse("block", &mode, E), E);
    ASSERT_EQ(mode, PILE_RECOMPUTE_BLOCK);
    ASSERT_STR_EQ(pile_model_recompute_name(PILE_RECOMPUTE_GELU), "gelu");
    ASSERT_EQ(pile_model_recompute_parse("all", &mode, E), PILE_EINVAL);
    ASSERT(strstr(E->msg, "'all'") && strstr(E->msg, "gelu"));
    float *g[3] = {NULL};
    double loss[3][2];
    size_t bytes[3] = {0};
    pile_batch b1 = {B, T, tokens, targets, docs}, b2 = {1, T - 3, tokens + 2, targets + 2, NULL};
    for (int r = 0; r < 3; r++) {
        pile_model_config cfg = tiny_cfg(0.1f);
        cfg.recompute = (pile_recompute)r;
        size_t before = pile_backend_bytes_in_use(be);
        pile_model *m = NULL;
        ASSERT_OK(pile_model_create(&m, be, &cfg, MAXB, SEQ, E), E);
        if (!m) break;
        bytes[r] = pile_backend_bytes_in_use(be) - before;
        randomize(m, 21);
        zero_grad(m);
        pile_fwd_stats st;
        ASSERT_OK(pile_model_forward(m, &b1, 1, 31, 0.5f, &st, E), E);
        loss[r][0] = st.loss_sum;
        ASSERT_OK(pile_model_backward(m, grads, E), E);
        /* the activations are spent: no second backward without a forward */
        ASSERT_EQ(pile_model_backward(m, grads, E), PILE_EINVAL);
        ASSERT_OK(pile_model_forward(m, &b2, 1, 32, 0.25f, &st, E), E);
        loss[r][1] = st.loss_sum;
        ASSERT_OK(pile_model_backward(m, grads, E), E);
        g[r] = download_grads(m);
        if (r > 0 && g[0] && g[r]) {
            ASSERT(memcmp(loss[0], loss[r], sizeof loss[0]) == 0);
            ASSERT_MEM_EQ(g[0], g[r], pile_model_flat_size(m) * sizeof(float));
        }
        pile_model_free(m);
    }
    printf("# bytes in use, model at batch %d x %d: none %zu, gelu %zu, block %zu\n", MAXB, SEQ, bytes[0], bytes[1],
           bytes[2]);
    ASSERT(bytes[0] > bytes[1] && bytes[1] > bytes[2]);
    pile_model_config bad = tiny_cfg(0.0f);
    bad.recompute = (pile_recompute)7;
    pile_model *m = NULL;
    ASSERT_EQ(pile_model_create(&m, be, &bad, MAXB, SEQ, E), PILE_EINVAL);
    /* a compute dtype the backend does not compute in */
    bad = tiny_cfg(0.0f);
    bad.dtype = PILE_DTYPE_I32;
    ASSERT_EQ(pile_model_create(&m, be, &bad, MAXB, SEQ, E), PILE_EINVAL);
    ASSERT(strstr(E->msg, "i32"));
    for (int r = 0; r < 3; r++) free(g[r]);
}

static void test_dropout(void)
{
    TEST("dropout: changes the training loss by seed, never the evaluation loss");
    pile_model *m0 = make_model(0.0f), *m1 = make_model(0.1f);
    ASSERT(m0 && m1);
    if (m0 && m1) {
        randomize(m0, 8);
        randomize(m1, 8);
        pile_batch bt = {B, T, tokens, targets, NULL};
        double plain = loss_of(m0, &bt, 1, 5);
        ASSERT(loss_of(m0, &bt, 1, 6) == plain); /* p == 0: seeds do nothing */
        ASSERT(loss_of(m1, &bt, 0, 5) == plain);
        double a = loss_of(m1, &bt, 1, 5), b = loss_of(m1, &bt, 1, 5), c = loss_of(m1, &bt, 1, 6);
        ASSERT(a == b);
        ASSERT(a != plain);
        ASSERT(a != c);
        ASSERT(isfinite(a) && isfinite(c));
    }
    pile_model_free(m0);
    pile_model_free(m1);
}

static void test_adamw_trains(void)
{
    TEST("AdamW steps on a fixed batch reduce the loss; padded rows stay zero");
    pile_model *m = make_model(0.0f);
    ASSERT(m != NULL);
    if (!m) return;
    pile_model_init(m, 1);
    pile_adamw_config ac = {0.9f, 0.999f, 1e-8f, 0.01f, 0};
    pile_optim *o = NULL;
    ASSERT_OK(pile_optim_create(&o, m, &ac, E), E);
    if (!o) {
        pile_model_free(m);
        return;
    }
    /* fp32 on one backend: the master weights are the model's parameters */
    ASSERT_EQ(pile_optim_master_is_compute(o), 1);
    ASSERT(pile_optim_master(o).data == pile_model_params(m).data);
    ASSERT(pile_optim_grads(o).n == pile_model_flat_size(m) && pile_optim_grads(o).dtype == PILE_DTYPE_F32);
    pile_batch bt = {B, T, tokens, targets, docs};
    double first = 0.0, last = 0.0;
    for (int s = 0; s < 30; s++) {
        pile_fwd_stats st;
        pile_optim_zero_grad(o);
        ASSERT_OK(pile_model_forward(m, &bt, 1, (uint64_t)s, 1.0f / (B * T - 2), &st, E), E);
        ASSERT_OK(pile_model_backward(m, pile_optim_grads(o), E), E);
        double norm = pile_optim_grad_norm(o);
        ASSERT(isfinite(norm) && norm > 0.0);
        ASSERT_OK(pile_optim_step(o, norm, 1.0f, 1e-2f, E), E);
        if (s == 0) first = st.loss_sum / (double)st.n_tokens;
        last = st.loss_sum / (double)st.n_tokens;
    }
    printf("# mean loss %.4f -> %.4f after 30 steps\n", first, last);
    ASSERT(last < first - 1.0);
    ASSERT_EQ(pile_optim_steps(o), 30);
    float *p = download_params(m);
    if (p) {
        const pile_tensor_info *wte = pile_model_tensor(m, 0);
        int pad = 0;
        for (size_t j = wte->saved_numel; j < wte->numel; j++) pad += p[wte->offset + j] != 0.0f;
        ASSERT_EQ(pad, 0);
    }
    free(p);
    pile_optim_free(o);
    pile_optim_free(NULL);
    pile_model_free(m);
}

/* Mixed precision by emulation: on a backend emulating bf16 the optimizer
 * keeps fp32 master weights apart from the model's parameters, which are
 * after every step exactly the master weights rounded to bf16; training
 * learns as fp32 does. */
static void test_bf16_emulation(void)
{
    TEST("bf16 emulation: fp32 master weights, bf16-rounded parameters, learns as fp32 does");
    pile_backend *emu = NULL;
    ASSERT_OK(pile_backend_open(&emu, "cpu", 1, E), E);
    if (!emu) return;
    ASSERT_OK(pile_backend_set_emulation(emu, PILE_DTYPE_BF16, E), E);
    double last[2] = {0.0, 0.0}, first[2] = {0.0, 0.0};
    for (int k = 0; k < 2; k++) {
        pile_backend *b = k ? emu : be;
        pile_model_config cfg = tiny_cfg(0.0f);
        pile_model *m = NULL;
        pile_optim *o = NULL;
        pile_adamw_config ac = {0.9f, 0.999f, 1e-8f, 0.01f, 0};
        ASSERT_OK(pile_model_create(&m, b, &cfg, MAXB, SEQ, E), E);
        if (m) pile_model_init(m, 1);
        if (m) ASSERT_OK(pile_optim_create(&o, m, &ac, E), E);
        if (!o) {
            pile_model_free(m);
            break;
        }
        ASSERT_EQ(pile_optim_master_is_compute(o), !k);
        pile_batch bt = {B, T, tokens, targets, docs};
        for (int s = 0; s < 30; s++) {
            pile_fwd_stats st;
            pile_optim_zero_grad(o);
            ASSERT_OK(pile_model_forward(m, &bt, 1, (uint64_t)s, 1.0f / (B * T - 2), &st, E), E);
            ASSERT_OK(pile_model_backward(m, pile_optim_grads(o), E), E);
            ASSERT_OK(pile_optim_step(o, pile_optim_grad_norm(o), 1.0f, 1e-2f, E), E);
            if (s == 0) first[k] = st.loss_sum / (double)st.n_tokens;
            last[k] = st.loss_sum / (double)st.n_tokens;
        }
        if (k) {
            size_t n = pile_model_flat_size(m);
            float *p = malloc(n * sizeof *p), *w = malloc(n * sizeof *w);
            if (p && w) {
                pile_backend_download(b, p, pile_model_params(m), n);
                pile_backend_download(b, w, pile_optim_master(o), n);
                size_t off = 0, differ = 0;
                for (size_t i = 0; i < n; i++) {
                    off += p[i] != pile_bf16_to_fp32(pile_fp32_to_bf16(w[i]));
                    differ += p[i] != w[i];
                }
                ASSERT_EQ(off, 0);        /* parameters = master rounded to bf16 */
                ASSERT(differ > n / 2);   /* and the master weights keep what bf16 drops */
            }
            free(p);
            free(w);
        }
        pile_optim_free(o);
        pile_model_free(m);
    }
    printf("# mean loss after 30 steps: fp32 %.4f -> %.4f, bf16 emulated %.4f -> %.4f\n", first[0], last[0], first[1],
           last[1]);
    ASSERT(fabs(first[1] - first[0]) < 0.01 * first[0]);
    ASSERT(last[1] < first[1] - 1.0);
    ASSERT(fabs(last[1] - last[0]) < 0.1 * last[0] + 0.02);
    pile_backend_close(emu);
}

/* One training step of a fresh tiny model on backend b; with `power` >= 0
 * a dynamic loss scaler starting at 2^power (hysteresis 1). Returns the
 * step's result (1: skipped), the master weights and moments after it
 * (malloc'd, n floats each) and the scaler's step. */
static int scaled_step(pile_backend *b, int power, float **w, float **mv, pile_loss_scaler_step *ls, int64_t *steps)
{
    pile_model_config cfg = tiny_cfg(0.0f);
    pile_model *m = NULL;
    pile_optim *o = NULL;
    pile_adamw_config ac = {0.9f, 0.999f, 1e-8f, 0.01f, 0};
    int rc = -1;
    *w = *mv = NULL;
    ASSERT_OK(pile_model_create(&m, b, &cfg, MAXB, SEQ, E), E);
    if (m) pile_model_init(m, 1);
    if (m) ASSERT_OK(pile_optim_create(&o, m, &ac, E), E);
    if (o && power >= 0) {
        pile_loss_scaler_config lc;
        pile_loss_scaler_config_defaults(&lc);
        lc.initial_scale_power = power;
        lc.hysteresis = 1;
        ASSERT_OK(pile_optim_enable_loss_scaling(o, &lc, E), E);
    }
    size_t n = m ? pile_model_flat_size(m) : 0;
    *w = malloc((n ? n : 1) * sizeof **w);
    *mv = malloc((n ? 2 * n : 1) * sizeof **mv);
    if (o && *w && *mv) {
        pile_batch bt = {B, T, tokens, targets, docs};
        pile_fwd_stats st;
        pile_optim_zero_grad(o);
        float scale = (float)(pile_optim_loss_scale(o) / (B * T - 2));
        ASSERT_OK(pile_model_forward(m, &bt, 1, 0, scale, &st, E), E);
        ASSERT_OK(pile_model_backward(m, pile_optim_grads(o), E), E);
        double norm = pile_optim_grad_norm(o);
        rc = pile_optim_step_scaled(o, norm, !isfinite(norm), 1.0f, 1e-2f, NULL, ls, E);
        pile_backend_download(b, *w, pile_optim_master(o), n);
        pile_backend_download(b, *mv, pile_optim_m(o), n);
        pile_backend_download(b, *mv + n, pile_optim_v(o), n);
        *steps = pile_optim_steps(o);
    }
    pile_optim_free(o);
    pile_model_free(m);
    return rc;
}

/* fp16's loss scaling in the optimizer: a clean step's gradients are
 * unscaled exactly (a power of two in fp32: the same step as unscaled,
 * bit for bit), and an overflowed step (fp16 emulation, a scale no fp16
 * gradient survives) changes no weight, moment or step count. */
static void test_loss_scaling(void)
{
    TEST("fp16 loss scaling: a clean scaled step equals the unscaled one; an overflow skips, changing nothing");
    float *w0 = NULL, *mv0 = NULL, *w1 = NULL, *mv1 = NULL, *w2 = NULL, *mv2 = NULL;
    pile_loss_scaler_step ls0, ls1, ls2;
    int64_t st0 = -1, st1 = -1, st2 = -1;
    ASSERT_EQ(scaled_step(be, -1, &w0, &mv0, &ls0, &st0), 0);
    ASSERT_EQ(scaled_step(be, 12, &w1, &mv1, &ls1, &st1), 0);
    pile_model_config cfg = tiny_cfg(0.0f);
    pile_model *shape = NULL;
    ASSERT_OK(pile_model_create(&shape, be, &cfg, MAXB, SEQ, E), E);
    size_t n = shape ? pile_model_flat_size(shape) : 0;
    pile_model_free(shape);
    ASSERT(ls0.scale == 1.0 && ls1.scale == 4096.0 && !ls1.skip && st0 == 1 && st1 == 1);
    if (n && w0 && w1) {
        ASSERT(memcmp(w0, w1, n * sizeof *w0) == 0);
        ASSERT(memcmp(mv0, mv1, 2 * n * sizeof *mv0) == 0);
    }
    pile_backend *emu = NULL;
    ASSERT_OK(pile_backend_open(&emu, "cpu", 1, E), E);
    if (emu) ASSERT_OK(pile_backend_set_emulation(emu, PILE_DTYPE_F16, E), E);
    /* 2^40 times any gradient of this loss is far past fp16's 65504 */
    if (emu) ASSERT_EQ(scaled_step(emu, 40, &w2, &mv2, &ls2, &st2), 1);
    if (emu && n && w2 && mv2) {
        ASSERT(ls2.skip && ls2.scale == ldexp(1.0, 40) && ls2.next_scale == ldexp(1.0, 39));
        ASSERT_EQ(st2, 0);
        /* the initial weights as the fp32 run had them before its step */
        pile_model *m = NULL;
        ASSERT_OK(pile_model_create(&m, be, &cfg, MAXB, SEQ, E), E);
        if (m) pile_model_init(m, 1);
        float *init = m ? download_params(m) : NULL;
        if (init) ASSERT(memcmp(init, w2, n * sizeof *w2) == 0);
        size_t nonzero = 0;
        for (size_t i = 0; i < 2 * n; i++) nonzero += mv2[i] != 0.0f;
        ASSERT_EQ(nonzero, 0);
        free(init);
        pile_model_free(m);
    }
    pile_backend_close(emu);
    free(w0), free(mv0), free(w1), free(mv1), free(w2), free(mv2);
}

static void test_adamw_exact(void)
{
    TEST("AdamW: decay only where flagged (or decay_all), bias correction from the step count");
    pile_model *m = make_model(0.0f);
    ASSERT(m != NULL);
    if (!m) return;
    for (int all = 0; all < 2; all++) {
        randomize(m, 21);
        float *p0 = download_params(m);
        pile_adamw_config ac = {0.9f, 0.999f, 1e-8f, 0.1f, all};
        pile_optim *o = NULL;
        ASSERT_OK(pile_optim_create(&o, m, &ac, E), E);
        if (!o || !p0) {
            free(p0);
            pile_optim_free(o);
            break;
        }
        /* zero gradients: Adam's update is exactly 0, only decay moves p */
        pile_optim_zero_grad(o);
        ASSERT_OK(pile_optim_step(o, 0.0, 1.0f, 0.5f, E), E);
        float *p1 = download_params(m);
        int wrong = 0;
        for (size_t i = 0; p1 && i < pile_model_tensor_count(m); i++) {
            const pile_tensor_info *ti = pile_model_tensor(m, i);
            int decays = all || ti->decay;
            for (size_t j = 0; j < ti->numel; j++) {
                float a = p0[ti->offset + j], b = p1[ti->offset + j];
                float want = decays && j < ti->saved_numel ? a * (1.0f - 0.05f) : a;
                if (fabsf(b - want) > 1e-6f * fabsf(a) && wrong++ < 3)
                    PILE_FAIL_("decay_all=%d %s[%zu]: %g -> %g, want %g", all, ti->name, j, a, b, want);
            }
        }
        ASSERT_EQ(wrong, 0);
        free(p0);
        free(p1);
        pile_optim_free(o);
    }

    /* one step at t = 6 from zero moments, no decay, against the formula */
    randomize(m, 22);
    pile_adamw_config ac = {0.9f, 0.95f, 1e-8f, 0.0f, 0};
    pile_optim *o = NULL;
    ASSERT_OK(pile_optim_create(&o, m, &ac, E), E);
    size_t n = pile_model_flat_size(m);
    float *g = malloc(n * sizeof *g), *p0 = download_params(m);
    if (o && g && p0) {
        pile_test_rng_state = 4;
        for (size_t i = 0; i < n; i++) g[i] = (float)((double)(pile_test_rng() >> 11) * 0x1.0p-53 - 0.5);
        const pile_tensor_info *wte = pile_model_tensor(m, 0);
        for (size_t j = wte->saved_numel; j < wte->numel; j++) g[wte->offset + j] = 0.0f;
        pile_backend_upload(be, pile_optim_grads(o), g, n);
        pile_optim_set_steps(o, 5);
        ASSERT_OK(pile_optim_step(o, 1.0, 0.0f, 1e-3f, E), E);
        ASSERT_EQ(pile_optim_steps(o), 6);
        float *p1 = download_params(m);
        int wrong = 0;
        for (size_t i = 0; p1 && i < n; i++) {
            double mh = 0.1 * g[i] / (1.0 - pow(0.9, 6)), vh = 0.05 * (double)g[i] * g[i] / (1.0 - pow(0.95, 6));
            double want = p0[i] - 1e-3 * mh / (sqrt(vh) + 1e-8);
            if (fabs(p1[i] - want) > 1e-6 * (fabs(want) + 1e-3) && wrong++ < 3)
                PILE_FAIL_("p[%zu]: %.9g, want %.9g", i, p1[i], want);
        }
        ASSERT_EQ(wrong, 0);
        free(p1);
    }
    free(g);
    free(p0);
    pile_optim_free(o);
    pile_model_free(m);
}

static void test_clip(void)
{
    TEST("clipping: the global norm, scaled by max_norm / (norm + 1e-6) only when below 1");
    pile_model *m = make_model(0.0f);
    ASSERT(m != NULL);
    if (!m) return;
    pile_adamw_config ac = {0.9f, 0.999f, 1e-8f, 0.0f, 0};
    pile_optim *o = NULL;
    ASSERT_OK(pile_optim_create(&o, m, &ac, E), E);
    size_t n = pile_model_flat_size(m);
    float *g = malloc(n * sizeof *g);
    if (o && g) {
        pile_test_rng_state = 17;
        double ss = 0.0;
        const pile_tensor_info *wte = pile_model_tensor(m, 0);
        for (size_t i = 0; i < n; i++) {
            int pad = i >= wte->saved_numel && i < wte->numel;
            g[i] = pad ? 0.0f : (float)((double)(pile_test_rng() >> 11) * 0x1.0p-53 - 0.5);
            ss += (double)g[i] * g[i];
        }
        pile_backend_upload(be, pile_optim_grads(o), g, n);
        double norm = pile_optim_grad_norm(o);
        if (!(fabs(norm - sqrt(ss)) < 1e-12 * sqrt(ss))) PILE_FAIL_("norm %.17g, want %.17g", norm, sqrt(ss));

        float *h = malloc(n * sizeof *h);
        float maxes[3] = {(float)(norm / 4), (float)(norm * 2), 0.0f};
        for (int k = 0; h && k < 3; k++) {
            pile_backend_upload(be, pile_optim_grads(o), g, n);
            ASSERT_OK(pile_optim_step(o, norm, maxes[k], 0.0f, E), E); /* lr 0: only the clipping shows */
            pile_backend_download(be, h, pile_optim_grads(o), n);
            float coef = maxes[k] / ((float)norm + 1e-6f);
            int wrong = 0;
            for (size_t i = 0; i < n; i++) {
                float want = k == 0 ? g[i] * coef : g[i];
                wrong += memcmp(&h[i], &want, sizeof want) != 0;
            }
            if (wrong) PILE_FAIL_("max_norm %g: %d gradients not scaled exactly", (double)maxes[k], wrong);
        }
        free(h);
    }
    free(g);
    pile_optim_free(o);
    pile_model_free(m);
}

/* Incremental decoding against the full forward: the logits of decode
 * steps 0..NPOS-1 equal the evaluation forward's at each position (up to
 * fp32 rounding: the products sum in other orders), decode_begin empties
 * the cache, and a NULL logits pointer changes nothing but the download. */
static void test_decode(void)
{
    TEST("incremental decoding with a key/value cache");
    pile_model_config cfg = tiny_cfg(0.1f); /* dropout: a decode step must not apply it */
    pile_model *m = NULL;
    const size_t before_create = pile_backend_bytes_in_use(be);
    ASSERT_OK(pile_model_create(&m, be, &cfg, 1, NPOS, E), E);
    if (!m) return;
    randomize(m, 23);
    const size_t without_cache = pile_backend_bytes_in_use(be);
    int32_t seq[NPOS], other[NPOS], tg[NPOS];
    pile_test_rng_state = 31;
    for (int t = 0; t < NPOS; t++) {
        seq[t] = (int32_t)(pile_test_rng() % V);
        other[t] = (int32_t)(pile_test_rng() % V);
        tg[t] = -1;
    }
    seq[1] = V - 1; /* the last real row of the padded wte */
    float *full = malloc((size_t)NPOS * V * sizeof *full);
    float *dec = malloc((size_t)NPOS * (V + 1) * sizeof *dec);
    float *again = malloc((size_t)(V + 1) * sizeof *again);
    ASSERT(full && dec && again);
    if (!full || !dec || !again) goto out;

    float row[V + 1];
    ASSERT_EQ(pile_model_decode_step(m, seq[0], 0, row, E), PILE_EINVAL);
    ASSERT(strstr(E->msg, "pile_model_decode_begin"));

    /* the forward first: its logits must survive the decode steps */
    pile_batch bt = {1, NPOS, seq, tg, NULL};
    ASSERT_OK(pile_model_forward(m, &bt, 0, 0, 0.0f, NULL, E), E);
    ASSERT_OK(pile_model_decode_begin(m, E), E);
    const size_t with_cache = pile_backend_bytes_in_use(be);
    ASSERT(with_cache - without_cache >= 2 * sizeof(float) * NL * NPOS * C);
    for (int t = 0; t < NPOS; t++) {
        float *r = dec + (size_t)t * (V + 1);
        r[V] = 12345.0f; /* a sentinel past the V real logits */
        ASSERT_OK(pile_model_decode_step(m, seq[t], t, r, E), E);
        ASSERT(r[V] == 12345.0f);
    }
    for (int t = 0; t < NPOS; t++) pile_model_copy_logits(m, 0, t, full + (size_t)t * V);
    double worst = 0.0;
    int bad = 0;
    for (int t = 0; t < NPOS; t++) {
        const float *f = full + (size_t)t * V, *d = dec + (size_t)t * (V + 1);
        double scale = 0.0;
        for (int i = 0; i < V; i++) scale = fmax(scale, fabs(f[i]));
        for (int i = 0; i < V; i++) {
            double rel = fabs((double)d[i] - (double)f[i]) / fmax(scale, 1e-30);
            worst = fmax(worst, rel);
            if (!(rel <= 1e-5) && bad++ < 3)
                PILE_FAIL_("position %d logit %d: decode %.9g, forward %.9g", t, i, (double)d[i], (double)f[i]);
        }
    }
    ASSERT(bad == 0);
    printf("# decode vs forward: worst |difference| / row's max |logit| %.3g\n", worst);

    /* errors: out of order, past n_positions, outside the vocabulary */
    ASSERT_EQ(pile_model_decode_step(m, seq[0], NPOS, row, E), PILE_EINVAL);
    ASSERT(strstr(E->msg, "position 16"));
    ASSERT_EQ(pile_model_decode_step(m, V, 3, row, E), PILE_EINVAL);
    ASSERT_EQ(pile_model_decode_step(m, -1, 3, row, E), PILE_EINVAL);
    ASSERT_OK(pile_model_decode_begin(m, E), E);
    ASSERT_EQ(pile_backend_bytes_in_use(be), with_cache); /* allocated once */
    ASSERT_EQ(pile_model_decode_step(m, seq[0], 1, row, E), PILE_EINVAL); /* begin emptied the cache */
    ASSERT(strstr(E->msg, "out of order"));

    /* another sequence, then a fresh begin: the first sequence's logits
     * again, bit for bit, with every other step's logits skipped */
    for (int t = 0; t < NPOS; t++) ASSERT_OK(pile_model_decode_step(m, other[t], t, row, E), E);
    ASSERT(memcmp(row, dec + (size_t)(NPOS - 1) * (V + 1), V * sizeof *row) != 0);
    ASSERT_OK(pile_model_decode_begin(m, E), E);
    int same = 1;
    for (int t = 0; t < NPOS; t++) {
        int want = t % 2 == 1 || t == NPOS - 1;
        ASSERT_OK(pile_model_decode_step(m, seq[t], t, want ? again : NULL, E), E);
        if (want) same &= memcmp(again, dec + (size_t)t * (V + 1), V * sizeof *again) == 0;
    }
    ASSERT(same);

    /* rewinding: position 5 again with another token, then 6 onward,
     * equals a forward over the edited sequence */
    int32_t edited[NPOS];
    memcpy(edited, seq, sizeof edited);
    edited[5] = (seq[5] + 1) % V;
    for (int t = 5; t < NPOS; t++) ASSERT_OK(pile_model_decode_step(m, edited[t], t, NULL, E), E);
    ASSERT_OK(pile_model_decode_step(m, edited[NPOS - 1], NPOS - 1, again, E), E);
    bt.tokens = edited;
    ASSERT_OK(pile_model_forward(m, &bt, 0, 0, 0.0f, NULL, E), E);
    pile_model_copy_logits(m, 0, NPOS - 1, full);
    double scale = 0.0, diff = 0.0;
    for (int i = 0; i < V; i++) {
        scale = fmax(scale, fabs(full[i]));
        diff = fmax(diff, fabs((double)again[i] - (double)full[i]));
    }
    ASSERT(diff <= 1e-5 * scale);
    ASSERT(memcmp(again, dec + (size_t)(NPOS - 1) * (V + 1), V * sizeof *again) != 0);
out:
    free(full);
    free(dec);
    free(again);
    pile_model_free(m);
    ASSERT_EQ(pile_backend_bytes_in_use(be), before_create);
}

static int near(double a, double b) { return fabs(a - b) <= 1e-12 * fmax(fabs(a), fabs(b)) + 1e-18; }

static void test_schedule(void)
{
    TEST("schedule: linear warmup from 0, cosine to min_lr; warmup steps");
    double lr = 1e-3, mn = 1e-4;
    ASSERT(pile_lr_at(0, 100, 10, lr, mn) == 0.0);
    ASSERT(near(pile_lr_at(1, 100, 10, lr, mn), 1e-4));
    ASSERT(near(pile_lr_at(5, 100, 10, lr, mn), 5e-4));
    ASSERT(near(pile_lr_at(10, 100, 10, lr, mn), 1e-3));
    ASSERT(near(pile_lr_at(55, 100, 10, lr, mn), 5.5e-4));
    ASSERT(near(pile_lr_at(100, 100, 10, lr, mn), 1e-4));
    /* step 40 of 90 after warmup: min + (lr - min) * 0.5 * (1 + cos(pi/3)) */
    ASSERT(near(pile_lr_at(40, 100, 10, lr, mn), 1e-4 + 9e-4 * 0.5 * (1.0 + cos(M_PI * 30.0 / 90.0))));
    ASSERT(near(pile_lr_at(0, 50, 0, lr, 0.0), 1e-3));
    ASSERT(near(pile_lr_at(25, 50, 0, lr, 0.0), 5e-4));
    ASSERT(pile_lr_at(50, 50, 0, lr, 0.0) < 1e-18);
    ASSERT(near(pile_lr_at(3, 3, 3, lr, mn), lr));
    ASSERT(pile_lr_at(7, 100, 10, 0.0, 0.0) == 0.0);
    ASSERT_EQ(pile_warmup_steps(0.1, 95), 10);
    ASSERT_EQ(pile_warmup_steps(0.1, 100), 10);
    ASSERT_EQ(pile_warmup_steps(0.05, 30), 2);
    ASSERT_EQ(pile_warmup_steps(0.0, 100), 0);
    ASSERT_EQ(pile_warmup_steps(1.0, 7), 7);
}

/* test(title) with the tests' backend and gradients on backend `name`
 * for its time. */
static void on_backend(const char *name, void (*test)(const char *), const char *title)
{
    pile_backend *const was_be = be;
    const pile_tensor was_grads = grads;
    be = NULL;
    grads = PILE_NO_TENSOR;
    if (pile_backend_open(&be, name, 1, E) < 0 || !(grads = pile_backend_alloc(be, PILE_DTYPE_F32, was_grads.n)).data) {
        TEST(title);
        PILE_FAIL_("cannot open the %s backend: %s", name, E->msg);
    } else {
        test(title);
    }
    pile_backend_free(&grads);
    pile_backend_close(be);
    be = was_be;
    grads = was_grads;
}

int main(void)
{
    /* one thread: the model is tiny, and on a loaded machine OpenMP/OpenBLAS
     * barriers spin for seconds (test_backend covers the threaded kernels) */
    pile_model *shape = NULL;
    if (pile_backend_open(&be, "cpu", 1, E) < 0 || (shape = make_model(0.0f)) == NULL ||
        !(grads = pile_backend_alloc(be, PILE_DTYPE_F32, pile_model_flat_size(shape))).data) {
        printf("# %s\n", E->msg);
        printf("not ok 1 - open the cpu backend\n1..1\n");
        return 1;
    }
    pile_model_free(shape);
    make_batch();
    test_table();
    test_init();
    test_forwards();
    TEST("gradients against finite differences, causal");
    gradcheck(0, 0.0f);
    TEST("gradients against finite differences, within documents");
    gradcheck(1, 0.0f);
    TEST("gradients against finite differences, through dropout");
    gradcheck(1, 0.2f);
    test_determinism();
    test_staging("staged batches: the direct forward's bits, in staging order; the double buffer's rules");
    on_backend("devsim", test_staging,
               "staged batches on devsim (copies land at stage_wait, poisoned until then): the direct forward's bits");
    test_recompute();
    test_decode();
    test_dropout();
    test_adamw_trains();
    test_bf16_emulation();
    test_loss_scaling();
    test_adamw_exact();
    test_clip();
    test_schedule();
    pile_backend_free(&grads);
    pile_backend_close(be);
    return TEST_DONE();
}
