/* The GPT-2 family model over backend.h: the tensor table (Hugging Face
 * names and Conv1D layouts), GPT-2 initialisation, the forward pass with
 * its loss, and the backward in reverse. Every float operation goes through
 * pile_backend_*, so the same file drives the CPU reference and a device
 * backend; model.c itself only touches host copies of integers and stats. */
#include "model.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer_internal.h"

/* Per-layer tensors, in Hugging Face order after wte and wpe. */
enum {
    T_LN1_W,
    T_LN1_B,
    T_ATTN_W,
    T_ATTN_B,
    T_ATTN_PROJ_W,
    T_ATTN_PROJ_B,
    T_LN2_W,
    T_LN2_B,
    T_FC_W,
    T_FC_B,
    T_FC_PROJ_W,
    T_FC_PROJ_B,
    T_PER_LAYER
};

#define T_WTE 0
#define T_WPE 1
#define T_LAYER0 2
#define NAME_MAX_LEN 48

/* Dropout sites beside the per-layer ones; the seed of a site mixes these in. */
#define SITE_EMBED 0
#define SITE_ATTN 1
#define SITE_MLP 2

/* One block's activations (carved in carve()). Which of them each layer
 * owns depends on the recompute mode; the others point into one set that
 * all layers share and the backward refills:
 *   none:  every layer owns all of them;
 *   gelu:  fch and fch_gelu are shared (recomputed from ln2);
 *   block: only resid3, the block's output, is owned (the block's forward
 *          is rerun from its input before its backward).
 * The branches' c_proj outputs are written straight into resid2 / resid3
 * (then dropout, then the residual add in place): the backward never reads
 * them. */
typedef struct layer_acts {
    pile_tensor ln1, ln1_mean, ln1_rstd;
    pile_tensor qkv;
    pile_tensor atty;
    pile_tensor att_saved; /* U8: what the backend's attention keeps for its backward */
    pile_tensor resid2;
    pile_tensor ln2, ln2_mean, ln2_rstd;
    pile_tensor fch, fch_gelu;
    pile_tensor resid3;
} layer_acts;

/* One batch's inputs in the backend, and what the host knows of them. */
typedef struct batch_in {
    pile_tensor tokens, targets, doc_start;
    int B, T, has_doc;
    int64_t n_tokens; /* positions with a target */
} batch_in;

/* Tensors are views into three allocations: params (the compute dtype,
 * the tensor table's flat layout), acts (U8, carved by carve() into
 * tensors of the compute dtype, F32 statistics and I32 ids) and dec
 * (carve_decode()). The gradients are not the model's: the backward
 * writes into the caller's (the optimizer's). */
struct pile_model {
    pile_backend *be;
    pile_model_config cfg;
    pile_dtype dt;        /* compute dtype: parameters and activations */
    int Vp;
    int max_batch, seq_len;

    pile_tensor_info *tensors;
    size_t n_tensors;
    char *names;
    size_t flat;
    size_t param_count;
    pile_tensor params;

    pile_tensor acts;
    pile_tensor encoded;
    layer_acts *layers;
    pile_tensor lnf, lnf_mean, lnf_rstd;
    pile_tensor logits;
    pile_tensor losses;
    pile_tensor dresid, dbranch, dsmall, dwide;
    pile_tensor att_scratch; /* the attention's work space, shared by all layers */
    pile_tensor tokens, targets, doc_start; /* the last forward's inputs: in[cur]'s */
    pile_tensor correct;

    /* Two sets of inputs, so that the next batch is staged (pile_model_stage)
     * while the last one's forward and backward still read theirs. Staged
     * batches wait in order: the oldest in in[1 - cur], a second in in[cur]
     * (staged once the last forward's backward was queued). */
    batch_in in[2];
    int cur;
    int n_staged;   /* 0, 1 or 2 */
    int stage_open; /* the newest staged batch's upload group is not ended yet (pile_backend_stage_wait) */

    /* host mirrors for the per-row stats of a forward */
    float *host_losses;
    int32_t *host_correct;

    /* the last forward */
    int last_B, last_T;
    int last_has_doc;
    int last_dropout;     /* dropout masks were applied */
    uint64_t last_seed;
    int bwd_ready;        /* logits hold dlogits and the activations are intact: one backward may follow */
    int logits_valid;     /* logits hold logits (evaluation forward) */

    /* incremental decoding: one allocation made by the first decode_begin
     * (see carve_decode); dec_filled = positions the cache holds */
    pile_tensor dec;
    pile_tensor dec_k, dec_v; /* [L, n_positions, C] each */
    pile_tensor dec_x, dec_ln, dec_qkv, dec_atty, dec_proj, dec_fch, dec_fch_gelu;
    pile_tensor dec_mean, dec_rstd, dec_att, dec_logits;
    pile_tensor dec_token;
    int dec_filled;

    /* ZeRO 3: the parameters come unit by unit from fetch (params absent) */
    pile_model_fetch_fn fetch;
    void *fetch_ctx;
    int unit;               /* the unit `view` holds; -1 none */
    pile_model_grad_fn grad_ready; /* pile_model_set_grad_hook's, or NULL */
    void *grad_ctx;
    pile_tensor view;
};

static uint64_t splitmix64(uint64_t *state)
{
    return pile__mix64(*state += PILE__GOLDEN);
}

/* A distinct, well-mixed seed per (layer, site), so no two dropout sites
 * of one forward share a mask. */
static uint64_t site_seed(uint64_t seed, int layer, int site)
{
    uint64_t s = seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(layer * 4 + site + 1));
    splitmix64(&s);
    return splitmix64(&s);
}

int pile_model_padded_vocab(int vocab_size)
{
    if (vocab_size <= 0) return 0;
    return (int)(((int64_t)vocab_size + 63) / 64 * 64);
}

static const struct {
    const char *name;
    int n_layer, n_head, n_embd;
} presets[] = {
    {"tiny", 2, 2, 64},
    {"small", 6, 6, 384},
    {"gpt2", 12, 12, 768},
    {"gpt2-medium", 24, 16, 1024},
    {"gpt2-large", 36, 20, 1280},
    {"gpt2-xl", 48, 25, 1600},
};

int pile_model_preset(pile_model_config *cfg, const char *name, pile_err *err)
{
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        if (name && strcmp(name, presets[i].name) == 0) {
            cfg->n_layer = presets[i].n_layer;
            cfg->n_head = presets[i].n_head;
            cfg->n_embd = presets[i].n_embd;
            return 0;
        }
    }
    return pile_err_set(err, PILE_EINVAL,
                        "unknown model preset '%s' (presets: tiny, small, gpt2, gpt2-medium, gpt2-large, gpt2-xl)",
                        name ? name : "");
}

static const char *const recompute_names[] = {"none", "gelu", "block"};

int pile_model_recompute_parse(const char *name, pile_recompute *out, pile_err *err)
{
    for (int i = 0; i < (int)(sizeof recompute_names / sizeof recompute_names[0]); i++) {
        if (name && strcmp(name, recompute_names[i]) == 0) {
            *out = (pile_recompute)i;
            return 0;
        }
    }
    return pile_err_set(err, PILE_EINVAL, "unknown recompute mode '%s' (modes: none, gelu, block)", name ? name : "");
}

const char *pile_model_recompute_name(pile_recompute r)
{
    return (unsigned)r < sizeof recompute_names / sizeof recompute_names[0] ? recompute_names[r] : "?";
}

/* ------------------------------------------------------- tensor table */

/* Sizes saturate at SIZE_MAX instead of wrapping: a configuration too big
 * for the address space (gpt2-xl widths times absurd layer counts, or
 * B x NH x T x T) then asks pile_backend_alloc for SIZE_MAX bytes and gets
 * NULL, where a wrapped size could allocate a small buffer and be written
 * far past its end. */
static size_t sat_add(size_t a, size_t b) { return a > SIZE_MAX - b ? SIZE_MAX : a + b; }
static size_t sat_mul(size_t a, size_t b) { return b && a > SIZE_MAX / b ? SIZE_MAX : a * b; }

static void add_tensor(pile_model *m, char **name_at, const char *name, int ndim, int64_t d0, int64_t d1,
                       size_t numel, int decay, int is_embedding)
{
    pile_tensor_info *t = &m->tensors[m->n_tensors++];
    snprintf(*name_at, NAME_MAX_LEN, "%s", name);
    t->name = *name_at;
    *name_at += NAME_MAX_LEN;
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = ndim == 2 ? d1 : 0;
    t->saved_numel = (size_t)d0 * (size_t)(ndim == 2 ? d1 : 1);
    t->numel = numel ? numel : t->saved_numel;
    t->offset = m->flat;
    t->decay = decay;
    t->is_embedding = is_embedding;
    m->flat = sat_add(m->flat, t->numel);
    m->param_count = sat_add(m->param_count, t->saved_numel);
}

static int build_table(pile_model *m)
{
    const int L = m->cfg.n_layer, C = m->cfg.n_embd;
    size_t n = 2 + (size_t)L * T_PER_LAYER + 2;
    m->tensors = calloc(n, sizeof *m->tensors);
    m->names = calloc(n, NAME_MAX_LEN);
    if (!m->tensors || !m->names) return PILE_ENOMEM;
    char *at = m->names;
    char name[NAME_MAX_LEN];
    add_tensor(m, &at, "wte.weight", 2, m->cfg.vocab_size, C, (size_t)m->Vp * (size_t)C, 0, 1);
    add_tensor(m, &at, "wpe.weight", 2, m->cfg.n_positions, C, 0, 0, 1);
    static const struct {
        const char *suffix;
        int rows, cols; /* in units of C; cols 0: a vector */
    } per_layer[T_PER_LAYER] = {
        {"ln_1.weight", 1, 0},      {"ln_1.bias", 1, 0},       {"attn.c_attn.weight", 1, 3},
        {"attn.c_attn.bias", 3, 0}, {"attn.c_proj.weight", 1, 1}, {"attn.c_proj.bias", 1, 0},
        {"ln_2.weight", 1, 0},      {"ln_2.bias", 1, 0},       {"mlp.c_fc.weight", 1, 4},
        {"mlp.c_fc.bias", 4, 0},    {"mlp.c_proj.weight", 4, 1}, {"mlp.c_proj.bias", 1, 0},
    };
    for (int l = 0; l < L; l++) {
        for (int k = 0; k < T_PER_LAYER; k++) {
            snprintf(name, sizeof name, "h.%d.%s", l, per_layer[k].suffix);
            int two = per_layer[k].cols != 0;
            add_tensor(m, &at, name, two ? 2 : 1, (int64_t)per_layer[k].rows * C,
                       two ? (int64_t)per_layer[k].cols * C : 0, 0, two, 0);
        }
    }
    add_tensor(m, &at, "ln_f.weight", 1, C, 0, 0, 0, 0);
    add_tensor(m, &at, "ln_f.bias", 1, C, 0, 0, 0, 0);
    return 0;
}

/* Parameter units (model.h): 0 embeddings, 1 + l block l, L + 1 ln_f. */
static int unit_of(const pile_model *m, int idx)
{
    if (idx < T_LAYER0) return 0;
    if (idx >= T_LAYER0 + m->cfg.n_layer * T_PER_LAYER) return m->cfg.n_layer + 1;
    return 1 + (idx - T_LAYER0) / T_PER_LAYER;
}

static int unit_first_tensor(int unit)
{
    if (unit == 0) return T_WTE;
    return T_LAYER0 + (unit - 1) * T_PER_LAYER; /* ln_f: just after the last block */
}

int pile_model_unit_count(const pile_model *m) { return m->cfg.n_layer + 2; }

void pile_model_unit_range(const pile_model *m, int unit, size_t *first, size_t *count)
{
    const int a = unit_first_tensor(unit);
    const int b = unit == m->cfg.n_layer + 1 ? (int)m->n_tensors : unit_first_tensor(unit + 1);
    *first = m->tensors[a].offset;
    *count = m->tensors[b - 1].offset + m->tensors[b - 1].numel - *first;
}

/* Tensor idx of the parameters (from the unit fetched, partitioned: a
 * unit other than the one held gives the absent tensor, which an op
 * refuses), and of a gradient buffer in the same layout. */
static pile_tensor param(pile_model *m, int idx)
{
    if (!m->fetch) return pile_tensor_slice(m->params, m->tensors[idx].offset, m->tensors[idx].numel);
    const int u = unit_of(m, idx);
    if (u != m->unit) return PILE_NO_TENSOR;
    const size_t first = m->tensors[unit_first_tensor(u)].offset;
    return pile_tensor_slice(m->view, m->tensors[idx].offset - first, m->tensors[idx].numel);
}

/* Makes unit u's parameters readable (partitioned: fetches them, naming
 * the next); whole parameters need nothing. */
static int use_unit(pile_model *m, int u, int next, pile_err *err)
{
    if (!m->fetch) return 0;
    m->unit = -1;
    PILE_FORWARD_IF_ERR(m->fetch(m->fetch_ctx, u, next, &m->view, err));
    m->unit = u;
    return 0;
}

void pile_model_set_grad_hook(pile_model *m, pile_model_grad_fn fn, void *ctx)
{
    m->grad_ready = fn;
    m->grad_ctx = ctx;
}

/* Unit u's gradients are final (pile_model_set_grad_hook). */
static int grads_done(pile_model *m, int u, pile_err *err)
{
    return m->grad_ready ? m->grad_ready(m->grad_ctx, u, err) : 0;
}

int pile_model_partition(pile_model *m, pile_model_fetch_fn fetch, void *ctx, pile_err *err)
{
    PILE_RETURN_IF(m->fetch, err, PILE_EINVAL, "the model's parameters are partitioned already");
    pile_backend_free(&m->params);
    pile_backend_free(&m->dec);
    m->fetch = fetch;
    m->fetch_ctx = ctx;
    m->unit = -1;
    return 0;
}
static pile_tensor grad(pile_model *m, pile_tensor grads, int idx)
{
    return pile_tensor_slice(grads, m->tensors[idx].offset, m->tensors[idx].numel);
}
static int lt(int l, int k) { return T_LAYER0 + l * T_PER_LAYER + k; }

/* ------------------------------------------------------------ create */

/* One region of a carved allocation: with base, point ptr at it; always
 * advance `at` past it, rounded to 64 bytes, saturating (see sat_add). */
#define REGION(ptr, dtype, count)                                                      \
    do {                                                                               \
        if (base.data) (ptr) = pile_tensor_carve(base, at, (dtype), (count));          \
        at = sat_add(at, sat_add(sat_mul((count), pile_dtype_size(dtype)), 63) / 64 * 64); \
    } while (0)

/* One block's regions; own == 0 points them at the shared set instead
 * (already carved) without advancing. */
#define LAYER_REGION(ptr, dtype, count, own, shared) \
    do {                                                  \
        if (own) REGION(ptr, dtype, count);               \
        else if (base.data) (ptr) = (shared);             \
    } while (0)

/* Carves the activation allocation. With base absent it only measures;
 * each region starts on a 64-byte boundary. Per layer and position, in
 * values: 16 C + 4 + the attention's saved bytes (none), 8 C + 4 + saved
 * (gelu), C (block); once: the shared set (8 C for gelu, 16 C + 4 + saved
 * for block), the attention's scratch, the embedding output, final
 * LayerNorm and logits (C + 2 + Vp), and the backward's gradients (dresid
 * C, dsmall C, dwide 4 C, and dbranch C when dropout needs a masked copy);
 * per position, two sets of inputs (3 int32 each: one staged while the
 * other computes) and the correct flags. */
static size_t carve(pile_model *m, pile_tensor base)
{
    const size_t N = (size_t)m->max_batch * (size_t)m->seq_len;
    const size_t C = (size_t)m->cfg.n_embd;
    const int B = m->max_batch, T = m->seq_len, Ci = m->cfg.n_embd, NH = m->cfg.n_head;
    const size_t saved = pile_backend_attention_saved_bytes(m->be, B, T, Ci, NH);
    const pile_recompute rc = m->cfg.recompute;
    const pile_dtype DT = m->dt, F32 = PILE_DTYPE_F32, U8 = PILE_DTYPE_U8, I32 = PILE_DTYPE_I32;
    size_t at = 0;
    REGION(m->encoded, DT, N * C);
    /* the shared set: a whole block's for block, the MLP's two for gelu */
    layer_acts sh = {0};
    if (rc == PILE_RECOMPUTE_BLOCK) {
        REGION(sh.ln1, DT, N * C);
        REGION(sh.ln1_mean, F32, N);
        REGION(sh.ln1_rstd, F32, N);
        REGION(sh.qkv, DT, N * 3 * C);
        REGION(sh.atty, DT, N * C);
        REGION(sh.att_saved, U8, saved);
        REGION(sh.resid2, DT, N * C);
        REGION(sh.ln2, DT, N * C);
        REGION(sh.ln2_mean, F32, N);
        REGION(sh.ln2_rstd, F32, N);
    }
    if (rc != PILE_RECOMPUTE_NONE) {
        REGION(sh.fch, DT, N * 4 * C);
        REGION(sh.fch_gelu, DT, N * 4 * C);
    }
    const int own = rc != PILE_RECOMPUTE_BLOCK, own_mlp = rc == PILE_RECOMPUTE_NONE;
    for (int l = 0; l < m->cfg.n_layer; l++) {
        layer_acts dummy, *a = base.data ? &m->layers[l] : &dummy;
        LAYER_REGION(a->ln1, DT, N * C, own, sh.ln1);
        LAYER_REGION(a->ln1_mean, F32, N, own, sh.ln1_mean);
        LAYER_REGION(a->ln1_rstd, F32, N, own, sh.ln1_rstd);
        LAYER_REGION(a->qkv, DT, N * 3 * C, own, sh.qkv);
        LAYER_REGION(a->atty, DT, N * C, own, sh.atty);
        LAYER_REGION(a->att_saved, U8, saved, own, sh.att_saved);
        LAYER_REGION(a->resid2, DT, N * C, own, sh.resid2);
        LAYER_REGION(a->ln2, DT, N * C, own, sh.ln2);
        LAYER_REGION(a->ln2_mean, F32, N, own, sh.ln2_mean);
        LAYER_REGION(a->ln2_rstd, F32, N, own, sh.ln2_rstd);
        LAYER_REGION(a->fch, DT, N * 4 * C, own_mlp, sh.fch);
        LAYER_REGION(a->fch_gelu, DT, N * 4 * C, own_mlp, sh.fch_gelu);
        REGION(a->resid3, DT, N * C);
    }
    REGION(m->att_scratch, U8, pile_backend_attention_scratch_bytes(m->be, B, T, Ci, NH));
    REGION(m->lnf, DT, N * C);
    REGION(m->lnf_mean, F32, N);
    REGION(m->lnf_rstd, F32, N);
    REGION(m->logits, DT, N * (size_t)m->Vp);
    REGION(m->losses, F32, N);
    REGION(m->dresid, DT, N * C);
    if (m->cfg.dropout > 0.0f) REGION(m->dbranch, DT, N * C);
    REGION(m->dsmall, DT, N * C);
    REGION(m->dwide, DT, N * 4 * C);
    for (int k = 0; k < 2; k++) {
        REGION(m->in[k].tokens, I32, N);
        REGION(m->in[k].targets, I32, N);
        REGION(m->in[k].doc_start, I32, N);
    }
    REGION(m->correct, I32, N);
    return at;
}
#undef LAYER_REGION

static int check_config(const pile_model_config *c, int max_batch, int seq_len, pile_err *err)
{
    PILE_RETURN_IF(c->vocab_size < 1 || c->vocab_size > INT_MAX - 63, err, PILE_EINVAL,
                   "invalid vocab_size %d", c->vocab_size);
    PILE_RETURN_IF(c->n_positions < 1, err, PILE_EINVAL, "invalid n_positions %d", c->n_positions);
    PILE_RETURN_IF(c->n_layer < 1, err, PILE_EINVAL, "invalid n_layer %d", c->n_layer);
    PILE_RETURN_IF(c->n_head < 1, err, PILE_EINVAL, "invalid n_head %d", c->n_head);
    PILE_RETURN_IF(c->n_embd < 1 || c->n_embd % c->n_head != 0 || c->n_embd > INT_MAX / 4, err, PILE_EINVAL,
                   "invalid n_embd %d: must be a positive multiple of n_head %d", c->n_embd, c->n_head);
    PILE_RETURN_IF(!(c->dropout >= 0.0f && c->dropout < 1.0f), err, PILE_EINVAL,
                   "invalid dropout %g: must be in [0, 1)", (double)c->dropout);
    PILE_RETURN_IF((unsigned)c->recompute > PILE_RECOMPUTE_BLOCK, err, PILE_EINVAL, "invalid recompute mode %d",
                   (int)c->recompute);
    PILE_RETURN_IF(c->dtype != PILE_DTYPE_F32 && c->dtype != PILE_DTYPE_BF16 && c->dtype != PILE_DTYPE_F16, err,
                   PILE_EINVAL, "invalid compute dtype '%s': must be f32, bf16 or f16", pile_dtype_name(c->dtype));
    PILE_RETURN_IF(max_batch < 1, err, PILE_EINVAL, "invalid batch size %d", max_batch);
    PILE_RETURN_IF(seq_len < 1, err, PILE_EINVAL, "invalid sequence length %d", seq_len);
    PILE_RETURN_IF(seq_len > c->n_positions, err, PILE_EINVAL,
                   "sequence length %d exceeds the model's n_positions %d", seq_len, c->n_positions);
    PILE_RETURN_IF((int64_t)max_batch * seq_len > INT_MAX / 4, err, PILE_EINVAL,
                   "batch size %d x sequence length %d is too large", max_batch, seq_len);
    return 0;
}

int pile_model_create(pile_model **out, pile_backend *be, const pile_model_config *cfg, int max_batch,
                      int seq_len, pile_err *err)
{
    *out = NULL;
    PILE_FORWARD_IF_ERR(check_config(cfg, max_batch, seq_len, err));
    /* every op the model calls with compute tensors */
    static const pile_op ops[] = {PILE_OP_EMBED_FWD,     PILE_OP_EMBED_BWD,     PILE_OP_LAYERNORM_FWD,
                                  PILE_OP_LAYERNORM_BWD, PILE_OP_MATMUL_FWD,    PILE_OP_MATMUL_BWD,
                                  PILE_OP_LOGITS_FWD,    PILE_OP_LOGITS_BWD,    PILE_OP_ATTENTION_FWD,
                                  PILE_OP_ATTENTION_BWD, PILE_OP_ATTENTION_DECODE, PILE_OP_GELU_FWD,
                                  PILE_OP_GELU_BWD,      PILE_OP_ADD,           PILE_OP_DROPOUT,
                                  PILE_OP_SOFTMAX_CE};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
        PILE_RETURN_IF(!pile_backend_supports(be, ops[i], cfg->dtype), err, PILE_EINVAL,
                       "the %s backend cannot compute in %s (its %s)", pile_backend_name(be),
                       pile_dtype_name(cfg->dtype), pile_op_name(ops[i]));
    pile_model *m = calloc(1, sizeof *m);
    if (!m) return pile_err_set(err, PILE_ENOMEM, "cannot allocate the model");
    m->be = be;
    m->cfg = *cfg;
    m->dt = cfg->dtype;
    m->Vp = pile_model_padded_vocab(cfg->vocab_size);
    m->max_batch = max_batch;
    m->seq_len = seq_len;
    const size_t N = (size_t)max_batch * (size_t)seq_len;
    int rc = build_table(m);
    if (rc < 0) goto oom;
    m->layers = calloc((size_t)cfg->n_layer, sizeof *m->layers);
    m->host_losses = malloc(N * sizeof *m->host_losses);
    m->host_correct = malloc(N * sizeof *m->host_correct);
    if (!m->layers || !m->host_losses || !m->host_correct) goto oom;
    m->params = pile_backend_alloc(be, m->dt, m->flat);
    if (!m->params.data) goto oom_params;
    size_t act_bytes = carve(m, PILE_NO_TENSOR);
    m->acts = pile_backend_alloc(be, PILE_DTYPE_U8, act_bytes);
    if (!m->acts.data) {
        pile_model_free(m);
        return pile_err_set(err, PILE_ENOMEM, "cannot allocate %zu bytes of activations for batch %d x %d",
                            act_bytes, max_batch, seq_len);
    }
    carve(m, m->acts);
    m->tokens = m->in[0].tokens;
    m->targets = m->in[0].targets;
    m->doc_start = m->in[0].doc_start;
    /* host staging for one batch's three arrays, each rounded as
     * pile_backend_stage_upload rounds them */
    const size_t stage = 3 * ((N * sizeof(int32_t) + 255) / 256 * 256);
    rc = pile_backend_stage_reserve(be, stage, err);
    if (rc < 0) {
        pile_model_free(m);
        return rc;
    }
    *out = m;
    return 0;
oom_params: {
    size_t flat = m->flat;
    pile_model_free(m);
    return pile_err_set(err, PILE_ENOMEM, "cannot allocate %zu parameters", flat);
}
oom:
    pile_model_free(m);
    return pile_err_set(err, PILE_ENOMEM, "cannot allocate the model's tables");
}

void pile_model_free(pile_model *m)
{
    if (!m) return;
    pile_backend_free(&m->dec);
    pile_backend_free(&m->acts);
    pile_backend_free(&m->params);
    free(m->host_correct);
    free(m->host_losses);
    free(m->layers);
    free(m->names);
    free(m->tensors);
    free(m);
}

const pile_model_config *pile_model_get_config(const pile_model *m) { return &m->cfg; }
pile_backend *pile_model_backend(const pile_model *m) { return m->be; }
size_t pile_model_tensor_count(const pile_model *m) { return m->n_tensors; }

const pile_tensor_info *pile_model_tensor(const pile_model *m, size_t i)
{
    return i < m->n_tensors ? &m->tensors[i] : NULL;
}

size_t pile_model_param_count(const pile_model *m) { return m->param_count; }
size_t pile_model_flat_size(const pile_model *m) { return m->flat; }
pile_tensor pile_model_params(pile_model *m) { return m->params; }
pile_tensor pile_model_param(pile_model *m, size_t i)
{
    return i < m->n_tensors ? param(m, (int)i) : PILE_NO_TENSOR;
}

/* -------------------------------------------------------------- init */

/* Normal draws by Box-Muller over splitmix64, one stream per tensor so a
 * tensor's values do not depend on the sizes of those before it. Written in
 * fixed chunks so init needs no allocation (it cannot fail). */
#define INIT_CHUNK 4096

/* Into the compute parameters (rounded to their dtype), or as fp32 into
 * host[] at the tensor's offset when host is given. */
static void init_tensor(pile_model *m, size_t idx, uint64_t seed, double mean, double std, size_t n, float *host)
{
    float chunk[INIT_CHUNK];
    uint16_t half[INIT_CHUNK];
    uint64_t state = seed ^ (0xA0761D6478BD642Full * (uint64_t)(idx + 1));
    const pile_tensor dst = param(m, (int)idx);
    for (size_t done = 0; done < n;) {
        size_t k = n - done < INIT_CHUNK ? n - done : INIT_CHUNK;
        for (size_t i = 0; i < k; i += 2) {
            if (std == 0.0) {
                chunk[i] = (float)mean;
                if (i + 1 < k) chunk[i + 1] = (float)mean;
                continue;
            }
            /* u1 in (0, 1] so log() is finite; 53-bit uniforms. */
            double u1 = ((double)(splitmix64(&state) >> 11) + 1.0) * 0x1.0p-53;
            double u2 = (double)(splitmix64(&state) >> 11) * 0x1.0p-53;
            double r = sqrt(-2.0 * log(u1));
            chunk[i] = (float)(mean + std * r * cos(2.0 * M_PI * u2));
            if (i + 1 < k) chunk[i + 1] = (float)(mean + std * r * sin(2.0 * M_PI * u2));
        }
        if (host) {
            memcpy(host + m->tensors[idx].offset + done, chunk, k * sizeof *chunk);
            done += k;
            continue;
        }
        /* 16-bit parameters take the fp32 draws rounded (precision.h) */
        const void *src = chunk;
        if (m->dt == PILE_DTYPE_BF16) pile_fp32_to_bf16_array(half, chunk, k), src = half;
        if (m->dt == PILE_DTYPE_F16) pile_fp32_to_fp16_array(half, chunk, k), src = half;
        pile_backend_upload(m->be, pile_tensor_slice(dst, done, k), src, k);
        done += k;
    }
}

static void init_all(pile_model *m, uint64_t seed, float *host)
{
    const double std = 0.02, proj_std = 0.02 / sqrt(2.0 * m->cfg.n_layer);
    for (size_t i = 0; i < m->n_tensors; i++) {
        const pile_tensor_info *t = &m->tensors[i];
        size_t k = i >= T_LAYER0 && i < T_LAYER0 + (size_t)m->cfg.n_layer * T_PER_LAYER
                       ? (i - T_LAYER0) % T_PER_LAYER
                       : (size_t)-1;
        double mu = 0.0, sd = 0.0;
        if (i == T_WTE || i == T_WPE || k == T_ATTN_W || k == T_FC_W) {
            sd = std;
        } else if (k == T_ATTN_PROJ_W || k == T_FC_PROJ_W) {
            sd = proj_std;
        } else if (k == T_LN1_W || k == T_LN2_W || i == m->n_tensors - 2) {
            mu = 1.0;
        }
        init_tensor(m, i, seed, mu, sd, t->saved_numel, host);
        if (t->numel > t->saved_numel && host)
            memset(host + t->offset + t->saved_numel, 0, (t->numel - t->saved_numel) * sizeof *host);
        else if (t->numel > t->saved_numel)
            pile_backend_zero(m->be, pile_tensor_slice(m->params, t->offset + t->saved_numel, t->numel - t->saved_numel),
                              t->numel - t->saved_numel);
    }
}

void pile_model_init(pile_model *m, uint64_t seed)
{
    init_all(m, seed, NULL);
}

void pile_model_init_values(pile_model *m, uint64_t seed, float *host)
{
    memset(host, 0, pile_model_flat_size(m) * sizeof *host); /* any gap between tensors */
    init_all(m, seed, host);
}

/* ----------------------------------------------------------- forward */

static int check_batch(const pile_model *m, const pile_batch *b, pile_err *err)
{
    PILE_RETURN_IF(b->B < 1 || b->B > m->max_batch, err, PILE_EINVAL,
                   "batch of %d rows outside the model's 1..%d", b->B, m->max_batch);
    PILE_RETURN_IF(b->T < 1 || b->T > m->seq_len, err, PILE_EINVAL,
                   "batch of %d positions outside the model's 1..%d", b->T, m->seq_len);
    PILE_RETURN_IF(!b->tokens || !b->targets, err, PILE_EINVAL, "batch without tokens or targets");
    const int V = m->cfg.vocab_size;
    for (int r = 0; r < b->B; r++) {
        for (int t = 0; t < b->T; t++) {
            size_t i = (size_t)r * (size_t)b->T + (size_t)t;
            PILE_RETURN_IF(b->tokens[i] < 0 || b->tokens[i] >= V, err, PILE_EINVAL,
                           "token %d at row %d position %d outside the vocabulary of %d", (int)b->tokens[i], r,
                           t, V);
            PILE_RETURN_IF(b->targets[i] >= V, err, PILE_EINVAL,
                           "target %d at row %d position %d outside the vocabulary of %d", (int)b->targets[i],
                           r, t, V);
            PILE_RETURN_IF(b->doc_start && (b->doc_start[i] < 0 || b->doc_start[i] > t), err, PILE_EINVAL,
                           "document start %d at row %d position %d is not in 0..%d", (int)b->doc_start[i], r,
                           t, t);
        }
    }
    return 0;
}

/* Block l's forward from its input x into its activations. whole == 0
 * stops where the backward's needs end, before the MLP's c_proj: the
 * recomputation of recompute=block, which must leave resid3 alone. The
 * same calls in the same order as the first time, with the same dropout
 * seeds, so a recomputation gives the same bits. */
static void block_fwd(pile_model *m, int l, pile_tensor x, int B, int T, pile_tensor doc, int drop,
                      uint64_t seed, int whole)
{
    pile_backend *be = m->be;
    layer_acts *a = &m->layers[l];
    const int C = m->cfg.n_embd, NH = m->cfg.n_head, N = B * T;
    const size_t NC = (size_t)N * (size_t)C;
    const float p = m->cfg.dropout;
    pile_backend_layernorm_fwd(be, a->ln1, a->ln1_mean, a->ln1_rstd, x, param(m, lt(l, T_LN1_W)),
                               param(m, lt(l, T_LN1_B)), N, C);
    pile_backend_matmul_fwd(be, a->qkv, a->ln1, param(m, lt(l, T_ATTN_W)), param(m, lt(l, T_ATTN_B)), N, C, 3 * C);
    pile_backend_attention_fwd(be, a->atty, a->att_saved, m->att_scratch, a->qkv, doc, B, T, C, NH);
    pile_backend_matmul_fwd(be, a->resid2, a->atty, param(m, lt(l, T_ATTN_PROJ_W)), param(m, lt(l, T_ATTN_PROJ_B)),
                            N, C, C);
    if (drop) pile_backend_dropout(be, a->resid2, NC, p, site_seed(seed, l, SITE_ATTN));
    pile_backend_add(be, a->resid2, x, a->resid2, NC);
    pile_backend_layernorm_fwd(be, a->ln2, a->ln2_mean, a->ln2_rstd, a->resid2, param(m, lt(l, T_LN2_W)),
                               param(m, lt(l, T_LN2_B)), N, C);
    pile_backend_matmul_fwd(be, a->fch, a->ln2, param(m, lt(l, T_FC_W)), param(m, lt(l, T_FC_B)), N, C, 4 * C);
    pile_backend_gelu_fwd(be, a->fch_gelu, a->fch, 4 * NC);
    if (!whole) return;
    pile_backend_matmul_fwd(be, a->resid3, a->fch_gelu, param(m, lt(l, T_FC_PROJ_W)), param(m, lt(l, T_FC_PROJ_B)),
                            N, 4 * C, C);
    if (drop) pile_backend_dropout(be, a->resid3, NC, p, site_seed(seed, l, SITE_MLP));
    pile_backend_add(be, a->resid3, a->resid2, a->resid3, NC);
}

/* Puts batch's shape and target count into in; its arrays are the
 * caller's to upload. */
static void describe(batch_in *in, const pile_batch *batch)
{
    const size_t N = (size_t)batch->B * (size_t)batch->T;
    in->B = batch->B;
    in->T = batch->T;
    in->has_doc = batch->doc_start != NULL;
    in->n_tokens = 0;
    for (size_t i = 0; i < N; i++) in->n_tokens += batch->targets[i] >= 0;
}

int pile_model_stage(pile_model *m, const pile_batch *batch, pile_err *err)
{
    PILE_RETURN_IF(m->n_staged == 2, err, PILE_EINVAL, "cannot stage a third batch: two wait for their forward");
    /* the second goes where the last forward's inputs are */
    PILE_RETURN_IF(m->n_staged == 1 && m->bwd_ready, err, PILE_EINVAL,
                   "cannot stage a second batch before the last forward's backward: it reads that forward's inputs");
    PILE_FORWARD_IF_ERR(check_batch(m, batch, err));
    pile_backend *be = m->be;
    /* the batch before is the next forward's: its uploads are waited for
     * there, this one's travel during that forward */
    if (m->stage_open) pile_backend_stage_wait(be);
    m->stage_open = 0;
    batch_in *in = &m->in[m->n_staged ? m->cur : 1 - m->cur];
    describe(in, batch);
    const size_t N = (size_t)batch->B * (size_t)batch->T;
    pile_backend_stage_upload(be, in->tokens, batch->tokens, N);
    pile_backend_stage_upload(be, in->targets, batch->targets, N);
    if (batch->doc_start) pile_backend_stage_upload(be, in->doc_start, batch->doc_start, N);
    m->stage_open = 1;
    m->n_staged++;
    return 0;
}

int pile_model_staged(const pile_model *m) { return m->n_staged; }

void pile_model_unstage(pile_model *m)
{
    /* a copy in flight lands before any later one into the same tensors:
     * staged uploads travel in order */
    if (m->stage_open) pile_backend_stage_wait(m->be);
    m->stage_open = 0;
    m->n_staged = 0;
}

void pile_model_stage_wait(pile_model *m)
{
    if (m->stage_open) pile_backend_stage_wait(m->be);
    m->stage_open = 0;
}

int pile_model_forward(pile_model *m, const pile_batch *batch, int training, uint64_t dropout_seed,
                       float grad_scale, pile_fwd_stats *stats, pile_err *err)
{
    pile_backend *be = m->be;
    m->bwd_ready = 0;
    m->logits_valid = 0;
    batch_in *in;
    if (batch) {
        /* in[cur] is free unless a second batch is staged there */
        PILE_RETURN_IF(m->n_staged == 2, err, PILE_EINVAL,
                       "cannot run a forward on another batch while two staged batches wait");
        PILE_FORWARD_IF_ERR(check_batch(m, batch, err));
        in = &m->in[m->cur];
        describe(in, batch);
        const size_t n = (size_t)batch->B * (size_t)batch->T;
        pile_backend_upload(be, in->tokens, batch->tokens, n);
        pile_backend_upload(be, in->targets, batch->targets, n);
        if (batch->doc_start) pile_backend_upload(be, in->doc_start, batch->doc_start, n);
    } else {
        PILE_RETURN_IF(!m->n_staged, err, PILE_EINVAL, "cannot run a forward on the staged batch: none is staged");
        if (m->n_staged == 1 && m->stage_open) pile_backend_stage_wait(be);
        if (m->n_staged == 1) m->stage_open = 0;
        m->cur = 1 - m->cur;
        m->n_staged--;
        in = &m->in[m->cur];
    }
    m->tokens = in->tokens;
    m->targets = in->targets;
    m->doc_start = in->doc_start;
    const int B = in->B, T = in->T, C = m->cfg.n_embd, L = m->cfg.n_layer;
    const int N = B * T, V = m->cfg.vocab_size, Vp = m->Vp;
    const size_t NC = (size_t)N * (size_t)C;
    const float p = m->cfg.dropout;
    const int drop = training && p > 0.0f;
    const pile_tensor doc = in->has_doc ? m->doc_start : PILE_NO_TENSOR;

    PILE_FORWARD_IF_ERR(use_unit(m, 0, 1, err));
    pile_backend_embed_fwd(be, m->encoded, m->tokens, param(m, T_WTE), param(m, T_WPE), B, T, C);
    if (drop) pile_backend_dropout(be, m->encoded, NC, p, site_seed(dropout_seed, -1, SITE_EMBED));
    pile_tensor x = m->encoded;
    for (int l = 0; l < L; l++) {
        PILE_FORWARD_IF_ERR(use_unit(m, 1 + l, 2 + l, err));
        block_fwd(m, l, x, B, T, doc, drop, dropout_seed, 1);
        x = m->layers[l].resid3;
    }
    const size_t nt = m->n_tensors;
    PILE_FORWARD_IF_ERR(use_unit(m, L + 1, 0, err));
    pile_backend_layernorm_fwd(be, m->lnf, m->lnf_mean, m->lnf_rstd, x, param(m, (int)nt - 2),
                               param(m, (int)nt - 1), N, C);
    /* a training forward's backward starts with ln_f */
    PILE_FORWARD_IF_ERR(use_unit(m, 0, grad_scale != 0.0f ? L + 1 : -1, err));
    pile_backend_logits_fwd(be, m->logits, m->lnf, param(m, T_WTE), N, C, Vp);
    pile_backend_softmax_ce(be, m->logits, m->losses, m->correct, m->targets, N, V, Vp, grad_scale);

    pile_backend_download(be, m->host_losses, m->losses, (size_t)N);
    pile_backend_download(be, m->host_correct, m->correct, (size_t)N);
    /* the stats are read back here, so this is where a fault shows */
    PILE_FORWARD_IF_ERR(pile_backend_sync(be, err));
    /* a position without a target has loss 0 and is never correct
     * (pile_backend_softmax_ce): summing every position adds +0.0 there,
     * the same bits as skipping it, and needs no host copy of a staged
     * batch's targets */
    pile_fwd_stats s = {0.0, in->n_tokens, 0};
    for (int i = 0; i < N; i++) {
        s.loss_sum += (double)m->host_losses[i];
        s.n_correct += m->host_correct[i] != 0;
    }
    if (stats) *stats = s;

    m->last_B = B;
    m->last_T = T;
    m->last_has_doc = doc.data != NULL;
    m->last_dropout = drop;
    m->last_seed = dropout_seed;
    m->bwd_ready = grad_scale != 0.0f;
    m->logits_valid = grad_scale == 0.0f;
    return 0;
}

/* ---------------------------------------------------------- backward */

/* The gradient a dropout site passes back: the residual gradient through
 * the same mask. Without dropout the residual gradient itself serves, so
 * no copy is made. */
static pile_tensor branch_grad(pile_model *m, pile_tensor dresid, size_t n, int l, int site)
{
    if (!m->last_dropout) return dresid;
    pile_backend_copy(m->be, m->dbranch, dresid, n);
    pile_backend_dropout(m->be, m->dbranch, n, m->cfg.dropout, site_seed(m->last_seed, l, site));
    return m->dbranch;
}

int pile_model_backward(pile_model *m, pile_tensor grads, pile_err *err)
{
    PILE_RETURN_IF(!m->bwd_ready, err, PILE_EINVAL,
                   "cannot run the backward: the last forward was not a training forward (grad_scale 0)");
    pile_backend *be = m->be;
    const int B = m->last_B, T = m->last_T, C = m->cfg.n_embd, NH = m->cfg.n_head, L = m->cfg.n_layer;
    const int N = B * T, Vp = m->Vp;
    const size_t NC = (size_t)N * (size_t)C, nt = m->n_tensors;
    PILE_RETURN_IF(grads.be != be || grads.dtype != PILE_DTYPE_F32 || grads.n < m->flat, err, PILE_EINVAL,
                   "cannot run the backward: the gradients must be %zu f32 values in the %s backend", m->flat,
                   pile_backend_name(be));
    const pile_tensor doc = m->last_has_doc ? m->doc_start : PILE_NO_TENSOR;
    const pile_tensor dres = m->dresid;

    /* logits hold dlogits (softmax_ce wrote them); dres starts the sum
     * over the residual stream at the last block's output. */
    pile_backend_zero(be, m->dsmall, NC);
    PILE_FORWARD_IF_ERR(use_unit(m, 0, L + 1, err));
    pile_backend_logits_bwd(be, m->dsmall, grad(m, grads, T_WTE), m->logits, m->lnf, param(m, T_WTE), N, C, Vp);
    pile_backend_zero(be, dres, NC);
    const pile_tensor last = L > 0 ? m->layers[L - 1].resid3 : m->encoded;
    PILE_FORWARD_IF_ERR(use_unit(m, L + 1, L, err));
    pile_backend_layernorm_bwd(be, dres, grad(m, grads, (int)nt - 2), grad(m, grads, (int)nt - 1), m->dsmall, last,
                               param(m, (int)nt - 2), m->lnf_mean, m->lnf_rstd, N, C);
    PILE_FORWARD_IF_ERR(grads_done(m, L + 1, err));

    for (int l = L - 1; l >= 0; l--) {
        layer_acts *a = &m->layers[l];
        PILE_FORWARD_IF_ERR(use_unit(m, 1 + l, l > 0 ? l : -1, err));
        const pile_tensor x = l > 0 ? m->layers[l - 1].resid3 : m->encoded;
        if (m->cfg.recompute == PILE_RECOMPUTE_BLOCK) {
            block_fwd(m, l, x, B, T, doc, m->last_dropout, m->last_seed, 0);
        } else if (m->cfg.recompute == PILE_RECOMPUTE_GELU) {
            pile_backend_matmul_fwd(be, a->fch, a->ln2, param(m, lt(l, T_FC_W)), param(m, lt(l, T_FC_B)), N, C,
                                    4 * C);
            pile_backend_gelu_fwd(be, a->fch_gelu, a->fch, 4 * NC);
        }
        /* MLP branch: resid3 = resid2 + dropout(c_proj(gelu(c_fc(ln_2(resid2))))) */
        pile_tensor dproj = branch_grad(m, dres, NC, l, SITE_MLP);
        pile_backend_zero(be, m->dwide, 4 * NC);
        pile_backend_matmul_bwd(be, m->dwide, grad(m, grads, lt(l, T_FC_PROJ_W)), grad(m, grads, lt(l, T_FC_PROJ_B)), dproj,
                                a->fch_gelu, param(m, lt(l, T_FC_PROJ_W)), N, 4 * C, C);
        /* fch_gelu has served: it takes d(fch) */
        const pile_tensor dfch = a->fch_gelu;
        pile_backend_zero(be, dfch, 4 * NC);
        pile_backend_gelu_bwd(be, dfch, a->fch, m->dwide, 4 * NC);
        pile_backend_zero(be, m->dsmall, NC);
        pile_backend_matmul_bwd(be, m->dsmall, grad(m, grads, lt(l, T_FC_W)), grad(m, grads, lt(l, T_FC_B)), dfch, a->ln2,
                                param(m, lt(l, T_FC_W)), N, C, 4 * C);
        pile_backend_layernorm_bwd(be, dres, grad(m, grads, lt(l, T_LN2_W)), grad(m, grads, lt(l, T_LN2_B)), m->dsmall,
                                   a->resid2, param(m, lt(l, T_LN2_W)), a->ln2_mean, a->ln2_rstd, N, C);
        /* attention branch: resid2 = x + dropout(c_proj(attn(c_attn(ln_1(x))))) */
        dproj = branch_grad(m, dres, NC, l, SITE_ATTN);
        pile_backend_zero(be, m->dsmall, NC);
        pile_backend_matmul_bwd(be, m->dsmall, grad(m, grads, lt(l, T_ATTN_PROJ_W)), grad(m, grads, lt(l, T_ATTN_PROJ_B)),
                                dproj, a->atty, param(m, lt(l, T_ATTN_PROJ_W)), N, C, C);
        const pile_tensor dqkv = m->dwide; /* [N, 3C] fits in the [N, 4C] scratch */
        pile_backend_zero(be, dqkv, 3 * NC);
        pile_backend_attention_bwd(be, dqkv, m->att_scratch, m->dsmall, a->qkv, a->atty, a->att_saved, doc, B, T, C,
                                   NH);
        pile_backend_zero(be, m->dsmall, NC);
        pile_backend_matmul_bwd(be, m->dsmall, grad(m, grads, lt(l, T_ATTN_W)), grad(m, grads, lt(l, T_ATTN_B)), dqkv, a->ln1,
                                param(m, lt(l, T_ATTN_W)), N, C, 3 * C);
        pile_backend_layernorm_bwd(be, dres, grad(m, grads, lt(l, T_LN1_W)), grad(m, grads, lt(l, T_LN1_B)), m->dsmall, x,
                                   param(m, lt(l, T_LN1_W)), a->ln1_mean, a->ln1_rstd, N, C);
        PILE_FORWARD_IF_ERR(grads_done(m, 1 + l, err));
    }
    /* embedding: encoded = dropout(wte[tok] + wpe[t]); dres is free to mask in place */
    if (m->last_dropout) pile_backend_dropout(be, dres, NC, m->cfg.dropout, site_seed(m->last_seed, -1, SITE_EMBED));
    pile_backend_embed_bwd(be, grad(m, grads, T_WTE), grad(m, grads, T_WPE), dres, m->tokens, B, T, C);
    m->bwd_ready = 0; /* the activations it read are spent (fch_gelu took gradients) */
    return grads_done(m, 0, err);
}

void pile_model_copy_logits(pile_model *m, int b, int t, float *host_out)
{
    const int V = m->cfg.vocab_size;
    if (!m->logits_valid || b < 0 || b >= m->last_B || t < 0 || t >= m->last_T) {
        /* no logits to give: make misuse visible rather than return stale data */
        for (int i = 0; i < V; i++) host_out[i] = NAN;
        return;
    }
    size_t row = (size_t)b * (size_t)m->last_T + (size_t)t;
    pile_err e;
    if (pile_tensor_download_f32(host_out, pile_tensor_slice(m->logits, row * (size_t)m->Vp, (size_t)V), (size_t)V,
                                 &e) < 0)
        for (int i = 0; i < V; i++) host_out[i] = NAN;
}

/* ---------------------------------------------------------- decoding */

/* Carves the decoding allocation as carve() does the activations: the key
 * and value caches, then one row of each activation the step needs (the
 * residual stream dec_x is updated in place), the attention scratch of
 * NH x n_positions, and the token. With base == NULL it only measures. */
static size_t carve_decode(pile_model *m, pile_tensor base)
{
    const pile_dtype DT = m->dt, F32 = PILE_DTYPE_F32, I32 = PILE_DTYPE_I32;
    const size_t C = (size_t)m->cfg.n_embd, P = (size_t)m->cfg.n_positions;
    const size_t cache = sat_mul(sat_mul((size_t)m->cfg.n_layer, P), C);
    size_t at = 0;
    REGION(m->dec_k, DT, cache);
    REGION(m->dec_v, DT, cache);
    REGION(m->dec_x, DT, C);
    REGION(m->dec_ln, DT, C);
    REGION(m->dec_qkv, DT, 3 * C);
    REGION(m->dec_atty, DT, C);
    REGION(m->dec_proj, DT, C);
    REGION(m->dec_fch, DT, 4 * C);
    REGION(m->dec_fch_gelu, DT, 4 * C);
    REGION(m->dec_mean, F32, 1);
    REGION(m->dec_rstd, F32, 1);
    REGION(m->dec_att, F32, sat_mul((size_t)m->cfg.n_head, P));
    REGION(m->dec_logits, DT, (size_t)m->Vp);
    REGION(m->dec_token, I32, 1);
#undef REGION
    return at;
}

int pile_model_decode_begin(pile_model *m, pile_err *err)
{
    PILE_RETURN_IF(m->fetch, err, PILE_EINVAL, "cannot decode: the parameters are partitioned over ranks (ZeRO 3)");
    if (!m->dec.data) {
        size_t bytes = carve_decode(m, PILE_NO_TENSOR);
        m->dec = pile_backend_alloc(m->be, PILE_DTYPE_U8, bytes);
        PILE_RETURN_IF(!m->dec.data, err, PILE_ENOMEM,
                       "cannot allocate %zu bytes for the key/value cache of %d positions", bytes,
                       m->cfg.n_positions);
        carve_decode(m, m->dec);
    }
    /* stale rows are never read: a step attends only to rows it filled */
    m->dec_filled = 0;
    return 0;
}

int pile_model_decode_step(pile_model *m, int32_t token, int pos, float *host_logits, pile_err *err)
{
    PILE_RETURN_IF(!m->dec.data, err, PILE_EINVAL, "cannot decode a step: pile_model_decode_begin was not called");
    PILE_RETURN_IF(token < 0 || token >= m->cfg.vocab_size, err, PILE_EINVAL,
                   "token %d outside the vocabulary of %d", (int)token, m->cfg.vocab_size);
    PILE_RETURN_IF(pos < 0 || pos >= m->cfg.n_positions, err, PILE_EINVAL,
                   "position %d outside the model's 0..%d", pos, m->cfg.n_positions - 1);
    PILE_RETURN_IF(pos > m->dec_filled, err, PILE_EINVAL,
                   "position %d out of order: the key/value cache holds positions 0..%d", pos, m->dec_filled - 1);
    pile_backend *be = m->be;
    const int C = m->cfg.n_embd, NH = m->cfg.n_head, L = m->cfg.n_layer;
    const size_t cache_layer = (size_t)m->cfg.n_positions * (size_t)C, row = (size_t)pos * (size_t)C;
    const size_t Cn = (size_t)C;
    const pile_tensor x = m->dec_x;

    pile_backend_upload(be, m->dec_token, &token, 1);
    pile_backend_embed_fwd(be, x, m->dec_token, param(m, T_WTE),
                           pile_tensor_slice(param(m, T_WPE), row, Cn), 1, 1, C);
    for (int l = 0; l < L; l++) {
        const pile_tensor kc = pile_tensor_slice(m->dec_k, (size_t)l * cache_layer, cache_layer);
        const pile_tensor vc = pile_tensor_slice(m->dec_v, (size_t)l * cache_layer, cache_layer);
        pile_backend_layernorm_fwd(be, m->dec_ln, m->dec_mean, m->dec_rstd, x, param(m, lt(l, T_LN1_W)),
                                   param(m, lt(l, T_LN1_B)), 1, C);
        pile_backend_matmul_fwd(be, m->dec_qkv, m->dec_ln, param(m, lt(l, T_ATTN_W)), param(m, lt(l, T_ATTN_B)), 1,
                                C, 3 * C);
        pile_backend_copy(be, pile_tensor_slice(kc, row, Cn), pile_tensor_slice(m->dec_qkv, Cn, Cn), Cn);
        pile_backend_copy(be, pile_tensor_slice(vc, row, Cn), pile_tensor_slice(m->dec_qkv, 2 * Cn, Cn), Cn);
        pile_backend_attention_decode(be, m->dec_atty, m->dec_att, m->dec_qkv, kc, vc, pos, C, NH);
        pile_backend_matmul_fwd(be, m->dec_proj, m->dec_atty, param(m, lt(l, T_ATTN_PROJ_W)),
                                param(m, lt(l, T_ATTN_PROJ_B)), 1, C, C);
        pile_backend_add(be, x, x, m->dec_proj, (size_t)C);
        pile_backend_layernorm_fwd(be, m->dec_ln, m->dec_mean, m->dec_rstd, x, param(m, lt(l, T_LN2_W)),
                                   param(m, lt(l, T_LN2_B)), 1, C);
        pile_backend_matmul_fwd(be, m->dec_fch, m->dec_ln, param(m, lt(l, T_FC_W)), param(m, lt(l, T_FC_B)), 1, C,
                                4 * C);
        pile_backend_gelu_fwd(be, m->dec_fch_gelu, m->dec_fch, 4 * (size_t)C);
        pile_backend_matmul_fwd(be, m->dec_proj, m->dec_fch_gelu, param(m, lt(l, T_FC_PROJ_W)),
                                param(m, lt(l, T_FC_PROJ_B)), 1, 4 * C, C);
        pile_backend_add(be, x, x, m->dec_proj, (size_t)C);
    }
    m->dec_filled = pos + 1;
    if (!host_logits) return pile_backend_sync(be, err);
    const int nt = (int)m->n_tensors;
    pile_backend_layernorm_fwd(be, m->dec_ln, m->dec_mean, m->dec_rstd, x, param(m, nt - 2), param(m, nt - 1), 1,
                               C);
    pile_backend_logits_fwd(be, m->dec_logits, m->dec_ln, param(m, T_WTE), 1, C, m->Vp);
    return pile_tensor_download_f32(host_logits, m->dec_logits, (size_t)m->cfg.vocab_size, err);
}
