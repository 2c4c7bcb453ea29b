/* trainer_ref_dump: a small command line over the trainer library (public
 * headers only) for the PyTorch reference checks in tests/reference/. It
 * writes what the Python side compares: a fresh checkpoint, the logits,
 * loss and every gradient of one batch, or the weights and per-step losses
 * after N AdamW steps.
 *
 *   trainer_ref_dump init  --layers L --heads H --embd C --vocab V --positions P
 *                          --seed S --out DIR
 *   trainer_ref_dump grads --ckpt DIR --batch FILE --out FILE.safetensors
 *   trainer_ref_dump train --ckpt DIR --batch FILE --out DIR --log FILE --steps N
 *                          [--lr X --warmup N --total N --min-lr X --wd X --clip X
 *                           --beta1 X --beta2 X --eps X --decay-all]
 *   every command: [--threads N] (default 1)
 *
 * The batch file is little-endian int32: B, T, has_doc, then tokens[B*T],
 * targets[B*T] and, when has_doc, doc_start[B*T]. grads writes "logits"
 * [B, T, V] (an evaluation forward), "loss" [1] (grad_scale * loss_sum of a
 * training forward, grad_scale = 1 / target tokens) and "grad.<name>" per
 * parameter in its saved shape; the metadata holds loss_sum and n_tokens
 * in full precision. train's log has one line per step:
 * "step loss grad_norm lr". */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "checkpoint.h"
#include "model.h"
#include "optim.h"
#include "pile_error.h"

typedef struct opts {
    const char *cmd;
    int layers, heads, embd, vocab, positions;
    uint64_t seed;
    const char *out, *ckpt, *batch, *log;
    int threads;
    int steps;
    double lr, min_lr, wd, clip, beta1, beta2, eps;
    int64_t warmup, total;
    int decay_all;
} opts;

typedef struct batch_file {
    int B, T;
    int32_t *tokens, *targets, *doc_start;
} batch_file;

static int usage(void)
{
    fputs("usage: trainer_ref_dump init|grads|train [options] (see the file's opening comment)\n", stderr);
    return 2;
}

static int parse(opts *o, int argc, char **argv)
{
    memset(o, 0, sizeof *o);
    o->threads = 1;
    o->lr = 1e-3;
    o->min_lr = 1e-4;
    o->clip = 1.0;
    o->beta1 = 0.9;
    o->beta2 = 0.999;
    o->eps = 1e-8;
    if (argc < 2) return -1;
    o->cmd = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--decay-all") == 0) {
            o->decay_all = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "trainer_ref_dump: missing value for '%s'\n", a);
            return -1;
        }
        const char *v = argv[++i];
        char *end = NULL;
        errno = 0;
        double d = strtod(v, &end);
        int num_ok = end != v && *end == '\0' && errno == 0;
        if (strcmp(a, "--out") == 0) o->out = v;
        else if (strcmp(a, "--ckpt") == 0) o->ckpt = v;
        else if (strcmp(a, "--batch") == 0) o->batch = v;
        else if (strcmp(a, "--log") == 0) o->log = v;
        else if (!num_ok) {
            fprintf(stderr, "trainer_ref_dump: bad option or value '%s %s'\n", a, v);
            return -1;
        } else if (strcmp(a, "--layers") == 0) o->layers = (int)d;
        else if (strcmp(a, "--heads") == 0) o->heads = (int)d;
        else if (strcmp(a, "--embd") == 0) o->embd = (int)d;
        else if (strcmp(a, "--vocab") == 0) o->vocab = (int)d;
        else if (strcmp(a, "--positions") == 0) o->positions = (int)d;
        else if (strcmp(a, "--seed") == 0) o->seed = strtoull(v, NULL, 10);
        else if (strcmp(a, "--threads") == 0) o->threads = (int)d;
        else if (strcmp(a, "--steps") == 0) o->steps = (int)d;
        else if (strcmp(a, "--lr") == 0) o->lr = d;
        else if (strcmp(a, "--min-lr") == 0) o->min_lr = d;
        else if (strcmp(a, "--wd") == 0) o->wd = d;
        else if (strcmp(a, "--clip") == 0) o->clip = d;
        else if (strcmp(a, "--beta1") == 0) o->beta1 = d;
        else if (strcmp(a, "--beta2") == 0) o->beta2 = d;
        else if (strcmp(a, "--eps") == 0) o->eps = d;
        else if (strcmp(a, "--warmup") == 0) o->warmup = (int64_t)d;
        else if (strcmp(a, "--total") == 0) o->total = (int64_t)d;
        else {
            fprintf(stderr, "trainer_ref_dump: unknown option '%s'\n", a);
            return -1;
        }
    }
    return 0;
}

static void batch_free(batch_file *b)
{
    free(b->tokens);
    free(b->targets);
    free(b->doc_start);
    memset(b, 0, sizeof *b);
}

static int batch_read(batch_file *b, const char *path, pile_err *err)
{
    memset(b, 0, sizeof *b);
    FILE *f = fopen(path, "rb");
    if (!f) return pile_err_sys(err, PILE_EIO, errno, "cannot open batch '%s'", path);
    int32_t head[3];
    int rc = 0;
    if (fread(head, sizeof head, 1, f) != 1 || head[0] <= 0 || head[1] <= 0 || head[2] < 0 || head[2] > 1) {
        rc = pile_err_set(err, PILE_EFORMAT, "bad batch header in '%s'", path);
        goto done;
    }
    b->B = head[0];
    b->T = head[1];
    size_t n = (size_t)b->B * (size_t)b->T;
    b->tokens = malloc(n * sizeof(int32_t));
    b->targets = malloc(n * sizeof(int32_t));
    if (head[2]) b->doc_start = malloc(n * sizeof(int32_t));
    if (!b->tokens || !b->targets || (head[2] && !b->doc_start)) {
        rc = pile_err_set(err, PILE_ENOMEM, "out of memory for batch '%s'", path);
        goto done;
    }
    if (fread(b->tokens, sizeof(int32_t), n, f) != n || fread(b->targets, sizeof(int32_t), n, f) != n ||
        (b->doc_start && fread(b->doc_start, sizeof(int32_t), n, f) != n)) {
        rc = pile_err_set(err, PILE_ETRUNC, "batch '%s' ends early", path);
        goto done;
    }
done:
    fclose(f);
    if (rc < 0) batch_free(b);
    return rc;
}

static void state_init(pile_train_state *st, uint64_t seed)
{
    memset(st, 0, sizeof *st);
    st->best_val_loss = INFINITY;
    st->loss_scale = 1.0;
    st->seed = seed;
    snprintf(st->tokenizer_spec, sizeof st->tokenizer_spec, "bytes");
}

/* Opens the backend and a model sized for the batch from a checkpoint. */
static int load_model(const opts *o, const batch_file *b, pile_backend **be, pile_model **m, pile_err *err)
{
    pile_model_config cfg;
    PILE_FORWARD_IF_ERR(pile_checkpoint_read_model_config(o->ckpt, &cfg, err));
    cfg.dropout = 0.0f;
    PILE_FORWARD_IF_ERR(pile_backend_open(be, "cpu", o->threads, err));
    PILE_FORWARD_IF_ERR(pile_model_create(m, *be, &cfg, b->B, b->T, err));
    return pile_checkpoint_load(o->ckpt, *m, NULL, NULL, err);
}

static int64_t count_targets(const batch_file *b)
{
    int64_t n = 0;
    for (size_t i = 0; i < (size_t)b->B * (size_t)b->T; i++) n += b->targets[i] >= 0;
    return n;
}

static int cmd_init(const opts *o, pile_err *err)
{
    if (!o->out || o->layers <= 0 || o->heads <= 0 || o->embd <= 0 || o->vocab <= 0 || o->positions <= 0)
        return pile_err_set(err, PILE_EINVAL, "init needs --out, --layers, --heads, --embd, --vocab, --positions");
    pile_model_config cfg = {.vocab_size = o->vocab,
                             .n_positions = o->positions,
                             .n_layer = o->layers,
                             .n_head = o->heads,
                             .n_embd = o->embd,
                             .dropout = 0.0f};
    pile_backend *be = NULL;
    pile_model *m = NULL;
    int rc = pile_backend_open(&be, "cpu", o->threads, err);
    if (rc == 0) rc = pile_model_create(&m, be, &cfg, 1, 1, err);
    if (rc == 0) {
        pile_model_init(m, o->seed);
        pile_train_state st;
        state_init(&st, o->seed);
        rc = pile_checkpoint_save(o->out, m, NULL, &st, "{}", err);
    }
    pile_model_free(m);
    pile_backend_close(be);
    return rc;
}

static int cmd_grads(const opts *o, pile_err *err)
{
    if (!o->ckpt || !o->batch || !o->out) return pile_err_set(err, PILE_EINVAL, "grads needs --ckpt, --batch, --out");
    batch_file b;
    PILE_FORWARD_IF_ERR(batch_read(&b, o->batch, err));
    pile_backend *be = NULL;
    pile_model *m = NULL;
    float *logits = NULL, *grads = NULL;
    pile_tensor dgrads = PILE_NO_TENSOR; /* in training the optimizer's */
    pile_st_tensor *ts = NULL;
    char **names = NULL;
    size_t nt = 0;
    int rc = load_model(o, &b, &be, &m, err);
    if (rc < 0) goto done;
    const pile_model_config *cfg = pile_model_get_config(m);
    int V = cfg->vocab_size;
    pile_batch pb = {.B = b.B, .T = b.T, .tokens = b.tokens, .targets = b.targets, .doc_start = b.doc_start};

    /* the evaluation forward, for the logits */
    pile_fwd_stats eval_stats;
    rc = pile_model_forward(m, &pb, 0, 0, 0.0f, &eval_stats, err);
    if (rc < 0) goto done;
    logits = malloc((size_t)b.B * (size_t)b.T * (size_t)V * sizeof(float));
    if (!logits) {
        rc = pile_err_set(err, PILE_ENOMEM, "out of memory for logits");
        goto done;
    }
    for (int bi = 0; bi < b.B; bi++)
        for (int t = 0; t < b.T; t++) pile_model_copy_logits(m, bi, t, logits + ((size_t)bi * b.T + t) * V);

    /* the training forward and backward */
    int64_t n_tokens = count_targets(&b);
    float scale = n_tokens > 0 ? 1.0f / (float)n_tokens : 0.0f;
    pile_fwd_stats st;
    dgrads = pile_backend_alloc(be, PILE_DTYPE_F32, pile_model_flat_size(m));
    if (!dgrads.data) {
        rc = pile_err_set(err, PILE_ENOMEM, "out of memory for gradients");
        goto done;
    }
    rc = pile_model_forward(m, &pb, 1, 1234, scale, &st, err);
    if (rc == 0) rc = pile_model_backward(m, dgrads, err);
    if (rc == 0) rc = pile_backend_sync(be, err);
    if (rc < 0) goto done;
    float loss = (float)(st.loss_sum * scale);

    size_t flat = pile_model_flat_size(m);
    grads = malloc(flat * sizeof(float));
    size_t count = pile_model_tensor_count(m);
    ts = calloc(count + 2, sizeof *ts);
    names = calloc(count, sizeof *names);
    if (!grads || !ts || !names) {
        rc = pile_err_set(err, PILE_ENOMEM, "out of memory for gradients");
        goto done;
    }
    pile_backend_download(be, grads, dgrads, flat);
    ts[nt++] = (pile_st_tensor){.name = "logits", .ndim = 3, .shape = {b.B, b.T, V}, .data = logits};
    ts[nt++] = (pile_st_tensor){.name = "loss", .ndim = 1, .shape = {1}, .data = &loss};
    for (size_t i = 0; i < count; i++) {
        const pile_tensor_info *ti = pile_model_tensor(m, i);
        size_t len = strlen(ti->name) + 6;
        names[i] = malloc(len);
        if (!names[i]) {
            rc = pile_err_set(err, PILE_ENOMEM, "out of memory for names");
            goto done;
        }
        snprintf(names[i], len, "grad.%s", ti->name);
        ts[nt] = (pile_st_tensor){.name = names[i], .ndim = ti->ndim, .data = grads + ti->offset};
        ts[nt].shape[0] = ti->shape[0];
        ts[nt].shape[1] = ti->shape[1];
        nt++;
    }
    char loss_sum[64], ntok[32], eval_sum[64];
    snprintf(loss_sum, sizeof loss_sum, "%.17g", st.loss_sum);
    snprintf(eval_sum, sizeof eval_sum, "%.17g", eval_stats.loss_sum);
    snprintf(ntok, sizeof ntok, "%" PRId64, st.n_tokens);
    const char *meta[] = {"loss_sum", loss_sum, "eval_loss_sum", eval_sum, "n_tokens", ntok, NULL};
    rc = pile_st_write(o->out, ts, nt, meta, err);
done:
    if (names)
        for (size_t i = 0; i < pile_model_tensor_count(m); i++) free(names[i]);
    free(names);
    free(ts);
    free(grads);
    free(logits);
    pile_backend_free(&dgrads);
    pile_model_free(m);
    pile_backend_close(be);
    batch_free(&b);
    return rc;
}

static int cmd_train(const opts *o, pile_err *err)
{
    if (!o->ckpt || !o->batch || !o->out || !o->log || o->steps <= 0)
        return pile_err_set(err, PILE_EINVAL, "train needs --ckpt, --batch, --out, --log, --steps");
    batch_file b;
    PILE_FORWARD_IF_ERR(batch_read(&b, o->batch, err));
    pile_backend *be = NULL;
    pile_model *m = NULL;
    pile_optim *opt = NULL;
    FILE *log = NULL;
    int rc = load_model(o, &b, &be, &m, err);
    if (rc < 0) goto done;
    pile_adamw_config ac = {.beta1 = (float)o->beta1,
                            .beta2 = (float)o->beta2,
                            .eps = (float)o->eps,
                            .weight_decay = (float)o->wd,
                            .decay_all = o->decay_all};
    rc = pile_optim_create(&opt, m, &ac, err);
    if (rc < 0) goto done;
    log = fopen(o->log, "w");
    if (!log) {
        rc = pile_err_sys(err, PILE_EIO, errno, "cannot create '%s'", o->log);
        goto done;
    }
    pile_batch pb = {.B = b.B, .T = b.T, .tokens = b.tokens, .targets = b.targets, .doc_start = b.doc_start};
    int64_t n_tokens = count_targets(&b);
    float scale = n_tokens > 0 ? 1.0f / (float)n_tokens : 0.0f;
    int64_t total = o->total > 0 ? o->total : o->steps;
    for (int s = 0; s < o->steps; s++) {
        pile_fwd_stats st;
        pile_optim_zero_grad(opt);
        rc = pile_model_forward(m, &pb, 1, (uint64_t)s, scale, &st, err);
        if (rc == 0) rc = pile_model_backward(m, pile_optim_grads(opt), err);
        double norm = pile_optim_grad_norm(opt);
        double lr = pile_lr_at(s, total, o->warmup, o->lr, o->min_lr);
        if (rc == 0) rc = pile_optim_step(opt, norm, (float)o->clip, (float)lr, err);
        if (rc < 0) goto done;
        fprintf(log, "%d %.17g %.17g %.17g\n", s, st.loss_sum * scale, norm, lr);
    }
    pile_train_state ts;
    state_init(&ts, o->seed);
    ts.step = o->steps;
    ts.total_steps = total;
    rc = pile_checkpoint_save(o->out, m, NULL, &ts, "{}", err);
done:
    if (log && fclose(log) != 0 && rc == 0) rc = pile_err_sys(err, PILE_EIO, errno, "cannot write '%s'", o->log);
    pile_optim_free(opt);
    pile_model_free(m);
    pile_backend_close(be);
    batch_free(&b);
    return rc;
}

int main(int argc, char **argv)
{
    opts o;
    if (parse(&o, argc, argv) < 0) return usage();
    pile_err err;
    pile_err_clear(&err);
    int rc;
    if (strcmp(o.cmd, "init") == 0) rc = cmd_init(&o, &err);
    else if (strcmp(o.cmd, "grads") == 0) rc = cmd_grads(&o, &err);
    else if (strcmp(o.cmd, "train") == 0) rc = cmd_train(&o, &err);
    else return usage();
    if (rc < 0) {
        fprintf(stderr, "trainer_ref_dump %s: %s\n", o.cmd, err.msg);
        return 1;
    }
    return 0;
}
