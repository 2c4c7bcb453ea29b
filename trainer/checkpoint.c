/* Checkpoint folders (checkpoint.h): weights and moments as safetensors, a
 * transformers-readable config.json, trainer_state.json, the tokenizer's
 * files; written into "<dir>.tmp" and renamed into place so that a crash
 * leaves one whole checkpoint or the other. */
#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "pile_fs.h"
#include "pile_hex.h"
#include "pile_json.h"
#include "pile_tokenizer.h"

#define OOM(err) pile_err_set((err), PILE_ENOMEM, "out of memory")

/* ------------------------------------------------------------ helpers */

static int path_of(pile_buf *out, const char *dir, const char *name, pile_err *err)
{
    if (pile_fs_join(out, dir, name)) return OOM(err);
    return 0;
}

static int is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

/* rm -r without following links. */
static int rm_tree(const char *path, pile_err *err)
{
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? 0 : pile_err_sys(err, PILE_EIO, errno, "cannot stat '%s'", path);
    if (nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return pile_err_sys(err, PILE_EIO, errno, "cannot remove '%s'", path);
    return 0;
}

/* The shortest decimal that reads back as the same float (0.1f prints as
 * 0.1, not 0.10000000149011612), for config.json's human readers. */
static void append_float(pile_buf *b, float v)
{
    char tmp[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, (double)v);
        if (strtof(tmp, NULL) == v) break;
    }
    pile_buf_append_str(b, tmp);
}

/* A double that round-trips exactly; JSON has no infinity, so non-finite
 * values are null (read back as INFINITY). */
static void append_double(pile_buf *b, double v)
{
    if (isfinite(v)) pile_buf_printf(b, "%.17g", v);
    else pile_buf_append_str(b, "null");
}

static int is_builtin_spec(const char *spec)
{
    return !spec[0] || strcmp(spec, "bytes") == 0;
}

/* ----------------------------------------------------- JSON serializer */

/* Writes a parsed tree back as JSON (integers as integers, other numbers
 * with 17 digits, so every value reads back identical). */
static void json_dump(pile_buf *b, const pile_json *v)
{
    size_t n;
    const char *s;
    int64_t i;
    switch (pile_json_type_of(v)) {
    case PILE_JSON_NULL: pile_buf_append_str(b, "null"); break;
    case PILE_JSON_BOOL: pile_buf_append_str(b, pile_json_bool(v) ? "true" : "false"); break;
    case PILE_JSON_NUMBER:
        if (pile_json_int(v, &i)) pile_buf_printf(b, "%lld", (long long)i);
        else append_double(b, pile_json_num(v));
        break;
    case PILE_JSON_STRING:
        s = pile_json_str(v, &n);
        pile_json_write_string(b, s, n);
        break;
    case PILE_JSON_ARRAY:
        pile_buf_append_str(b, "[");
        for (size_t k = 0; k < pile_json_size(v); k++) {
            if (k) pile_buf_append_str(b, ", ");
            json_dump(b, pile_json_at(v, k));
        }
        pile_buf_append_str(b, "]");
        break;
    case PILE_JSON_OBJECT:
        pile_buf_append_str(b, "{");
        for (size_t k = 0; k < pile_json_size(v); k++) {
            pile_buf_append_str(b, k ? ",\n  " : "\n  ");
            s = pile_json_key_at(v, k, &n);
            pile_json_write_string(b, s, n);
            pile_buf_append_str(b, ": ");
            json_dump(b, pile_json_at(v, k));
        }
        pile_buf_append_str(b, pile_json_size(v) ? "\n}" : "}");
        break;
    }
}

/* ------------------------------------------------------------- writing */

/* A flat buffer in the model's layout (weights or a moment) in host memory
 * as fp32: one download, then tensors pointing into it. */
static int download_flat(pile_model *m, pile_tensor src, float **host, pile_err *err)
{
    size_t n = pile_model_flat_size(m);
    *host = malloc((n ? n : 1) * sizeof(float));
    if (!*host) return pile_err_set(err, PILE_ENOMEM, "out of memory for a host copy of %zu floats", n);
    return pile_tensor_download_f32(*host, src, n, err);
}

static void fill_table(pile_model *m, const float *host, pile_st_tensor *t, const char **names)
{
    size_t n = pile_model_tensor_count(m);
    for (size_t i = 0; i < n; i++) {
        const pile_tensor_info *ti = pile_model_tensor(m, i);
        t[i].name = names ? names[i] : ti->name;
        t[i].ndim = ti->ndim;
        t[i].shape[0] = ti->shape[0];
        t[i].shape[1] = ti->shape[1];
        t[i].data = host + ti->offset;
    }
}

/* The weights: the optimizer's fp32 master weights when there is one
 * (exact in mixed precision), else the model's parameters; `master` when
 * given instead (gathered from their shards beforehand). */
static int write_weights(const char *tmp, pile_model *m, pile_optim *opt, const float *master, pile_err *err)
{
    pile_buf path = {0};
    float *host = NULL;
    size_t n = pile_model_tensor_count(m);
    pile_st_tensor *t = calloc(n ? n : 1, sizeof *t);
    int rc = t ? path_of(&path, tmp, "model.safetensors", err) : OOM(err);
    if (!rc && !master && opt && pile_optim_shards(opt) > 1)
        rc = pile_err_set(err, PILE_EINVAL,
                          "cannot save the weights of an optimizer sharded over %d ranks without them gathered "
                          "(pile_checkpoint_save_opts.weights)",
                          pile_optim_shards(opt));
    if (!rc && !master && !opt && !pile_model_params(m).data)
        rc = pile_err_set(err, PILE_EINVAL,
                          "cannot save the weights of a model partitioned over ranks without them gathered "
                          "(pile_checkpoint_save_opts.weights)");
    if (!rc && !master) rc = download_flat(m, opt ? pile_optim_master(opt) : pile_model_params(m), &host, err);
    if (!rc) {
        fill_table(m, master ? master : host, t, NULL);
        /* transformers refuses a safetensors file without format "pt" */
        static const char *const meta[] = {"format", "pt", NULL};
        rc = pile_st_write(path.data, t, n, meta, err);
    }
    free(host);
    free(t);
    pile_buf_free(&path);
    return rc;
}

static int write_moments(const char *tmp, pile_model *m, pile_optim *opt, pile_err *err)
{
    size_t n = pile_model_tensor_count(m);
    pile_buf path = {0}, names = {0}, step = {0};
    float *hm = NULL, *hv = NULL;
    pile_st_tensor *t = calloc(2 * n + 1, sizeof *t);
    const char **nm = calloc(2 * n + 1, sizeof *nm);
    int rc = t && nm ? path_of(&path, tmp, "optimizer.safetensors", err) : OOM(err);
    if (rc) goto out;
    /* names back to back in one buffer; pointers taken once it stops growing */
    size_t *at = calloc(2 * n + 1, sizeof *at);
    if (!at) {
        rc = OOM(err);
        goto out;
    }
    for (size_t i = 0; i < 2 * n; i++) {
        at[i] = names.len;
        pile_buf_printf(&names, "%s.%s", i < n ? "m" : "v", pile_model_tensor(m, i % n)->name);
        pile_buf_append(&names, "", 1);
    }
    pile_buf_printf(&step, "%lld", (long long)pile_optim_steps(opt));
    if (names.failed || step.failed) rc = OOM(err);
    for (size_t i = 0; !rc && i < 2 * n; i++) nm[i] = names.data + at[i];
    free(at);
    if (!rc) rc = download_flat(m, pile_optim_m(opt), &hm, err);
    if (!rc) rc = download_flat(m, pile_optim_v(opt), &hv, err);
    if (rc) goto out;
    fill_table(m, hm, t, nm);
    fill_table(m, hv, t + n, nm + n);
    const char *meta[] = {"format", "pt", "step", step.data, NULL};
    rc = pile_st_write(path.data, t, 2 * n, meta, err);
out:
    free(hm);
    free(hv);
    free(t);
    free(nm);
    pile_buf_free(&path);
    pile_buf_free(&names);
    pile_buf_free(&step);
    return rc;
}

/* "optimizer-RRRRR-of-WWWWW.safetensors": rank r of w's shard file. */
static int shard_name(pile_buf *out, const char *dir, int r, int w, pile_err *err)
{
    char name[64];
    snprintf(name, sizeof name, "optimizer-%05d-of-%05d.safetensors", r, w);
    return path_of(out, dir, name, err);
}

/* Flat elements [lo, hi) of n that rank r of w owns (optim.h's rule:
 * shards of ceil(n / w), the last ones shorter or empty). */
static void shard_range(size_t n, int r, int w, size_t *lo, size_t *hi)
{
    const size_t shard = (n + (size_t)w - 1) / (size_t)w;
    *lo = (size_t)r * shard < n ? (size_t)r * shard : n;
    *hi = *lo + shard < n ? *lo + shard : n;
}

int pile_checkpoint_write_optim_shard(const char *dir, pile_model *m, pile_optim *opt, pile_err *err)
{
    const int w = pile_optim_shards(opt);
    size_t off, count, n = pile_model_flat_size(m);
    pile_optim_shard(opt, &off, &count);
    const int r = (int)(off / (count ? count : 1));
    size_t lo, hi;
    shard_range(n, r, w, &lo, &hi);
    const size_t real = hi - lo;
    pile_buf path = {0}, step = {0}, first = {0}, total = {0};
    float *h = malloc(2 * (real ? real : 1) * sizeof *h);
    int rc = h ? shard_name(&path, dir, r, w, err) : OOM(err);
    if (!rc && real) rc = pile_tensor_download_f32(h, pile_optim_m(opt), real, err);
    if (!rc && real) rc = pile_tensor_download_f32(h + real, pile_optim_v(opt), real, err);
    if (!rc && (pile_buf_printf(&step, "%lld", (long long)pile_optim_steps(opt)) ||
                pile_buf_printf(&first, "%zu", lo) || pile_buf_printf(&total, "%zu", n)))
        rc = OOM(err);
    if (!rc) {
        /* 1-D slices of the flat layout; the range follows from the name
         * and the model, the metadata says it for people */
        pile_st_tensor t[2] = {{"m", 1, {(int64_t)real}, h}, {"v", 1, {(int64_t)real}, h + real}};
        const char *meta[] = {"format", "pt", "step", step.data, "offset", first.data, "flat_size", total.data, NULL};
        rc = pile_st_write(path.data, t, 2, meta, err);
    }
    free(h);
    pile_buf_free(&path);
    pile_buf_free(&step);
    pile_buf_free(&first);
    pile_buf_free(&total);
    return rc;
}

/* The end-of-text id of the tokenizer a checkpoint folder being written
 * carries (its tokenizer/ copy, written before config.json, else its
 * recorded spec), when it opens and the id is in the model's vocabulary;
 * -1 otherwise (config.json then says null). */
static long eot_id(const char *tmp, int vocab_size)
{
    pile_tokenizer *tok = NULL;
    pile_err ignored;
    pile_buf spec = {0};
    long id = -1;
    if (pile_checkpoint_tokenizer_spec(tmp, &spec, &ignored) == 0 && pile_tokenizer_open(&tok, spec.data, &ignored) == 0)
        id = (long)pile_tokenizer_eot_id(tok);
    pile_tokenizer_close(tok);
    pile_buf_free(&spec);
    return id < vocab_size ? id : -1;
}

static int write_config(const char *tmp, pile_model *m, const pile_train_state *st, pile_err *err)
{
    const pile_model_config *c = pile_model_get_config(m);
    char fp[33];
    pile_hex_encode(fp, st->tokenizer_fp, 16);
    long eot = eot_id(tmp, c->vocab_size);
    pile_buf b = {0}, path = {0};
    pile_buf_append_str(&b, "{\n  \"architectures\": [\"GPT2LMHeadModel\"],\n  \"model_type\": \"gpt2\",\n");
    pile_buf_printf(&b, "  \"vocab_size\": %d,\n  \"n_positions\": %d,\n  \"n_ctx\": %d,\n", c->vocab_size,
                    c->n_positions, c->n_positions);
    pile_buf_printf(&b, "  \"n_embd\": %d,\n  \"n_layer\": %d,\n  \"n_head\": %d,\n  \"n_inner\": null,\n", c->n_embd,
                    c->n_layer, c->n_head);
    pile_buf_append_str(&b, "  \"activation_function\": \"gelu_new\",\n  \"resid_pdrop\": ");
    append_float(&b, c->dropout);
    pile_buf_append_str(&b, ",\n  \"embd_pdrop\": ");
    append_float(&b, c->dropout);
    pile_buf_append_str(&b, ",\n  \"attn_pdrop\": 0.0,\n  \"layer_norm_epsilon\": 1e-05,\n"
                            "  \"initializer_range\": 0.02,\n  \"scale_attn_weights\": true,\n"
                            "  \"use_cache\": true,\n");
    if (eot >= 0) pile_buf_printf(&b, "  \"bos_token_id\": %ld,\n  \"eos_token_id\": %ld,\n", eot, eot);
    else pile_buf_append_str(&b, "  \"bos_token_id\": null,\n  \"eos_token_id\": null,\n");
    pile_buf_append_str(&b, "  \"tie_word_embeddings\": true,\n  \"torch_dtype\": \"float32\",\n");
    pile_buf_printf(&b, "  \"pile\": {\n    \"format\": 1,\n    \"padded_vocab\": %d,\n", pile_model_padded_vocab(c->vocab_size));
    pile_buf_printf(&b, "    \"tokenizer_fingerprint\": \"%s\",\n    \"tokenizer_spec\": ", fp);
    const char *spec = is_builtin_spec(st->tokenizer_spec) ? "bytes" : st->tokenizer_spec;
    pile_json_write_string(&b, spec, strlen(spec));
    pile_buf_append_str(&b, "\n  }\n}\n");
    int rc = b.failed ? OOM(err) : path_of(&path, tmp, "config.json", err);
    if (!rc) rc = pile_fs_write_atomic(path.data, b.data, b.len, err);
    pile_buf_free(&b);
    pile_buf_free(&path);
    return rc;
}

static void append_u64(pile_buf *b, uint64_t v)
{
    /* pile_json_int reads int64: larger values go as decimal strings */
    if (v <= (uint64_t)INT64_MAX) pile_buf_printf(b, "%llu", (unsigned long long)v);
    else pile_buf_printf(b, "\"%llu\"", (unsigned long long)v);
}

/* 0 when text is a JSON object; what names it in the error. */
static int check_object(const char *text, const char *what, pile_err *err)
{
    pile_json *j = NULL;
    PILE_FORWARD_IF_ERR(pile_json_parse(text, strlen(text), what, &j, err));
    int obj = pile_json_type_of(j) == PILE_JSON_OBJECT;
    pile_json_free(j);
    if (!obj) return pile_err_set(err, PILE_EINVAL, "cannot save a checkpoint: %s is not a JSON object", what);
    return 0;
}

static int write_state(const char *tmp, const pile_train_state *st, pile_optim *opt, const char *config_json,
                       const char *data_json, pile_err *err)
{
    if (config_json) PILE_FORWARD_IF_ERR(check_object(config_json, "the configuration", err));
    if (data_json) PILE_FORWARD_IF_ERR(check_object(data_json, "the dataset identity", err));
    char fp[33];
    pile_hex_encode(fp, st->tokenizer_fp, 16);
    pile_buf b = {0}, path = {0};
    pile_buf_printf(&b, "{\n  \"format\": 1,\n  \"step\": %lld,\n  \"epoch\": %lld,\n  \"position\": ",
                    (long long)st->step, (long long)st->epoch);
    append_u64(&b, st->position);
    pile_buf_printf(&b, ",\n  \"total_steps\": %lld,\n  \"best_val_loss\": ", (long long)st->total_steps);
    append_double(&b, st->best_val_loss);
    pile_buf_printf(&b, ",\n  \"best_step\": %lld,\n  \"pending_validation\": %s", (long long)st->best_step,
                    st->pending_val ? "true" : "false");
    /* fp16: the scaler's whole state, so that a resumed run scales as one never stopped */
    pile_loss_scaler *ls = opt ? pile_optim_loss_scaler(opt) : NULL;
    pile_buf_append_str(&b, ",\n  \"loss_scale\": ");
    append_double(&b, ls ? pile_loss_scaler_scale(ls) : st->loss_scale);
    if (ls) {
        pile_buf_append_str(&b, ",\n  \"loss_scaler\": ");
        if (pile_loss_scaler_state_to_json(ls, &b) < 0) b.failed = 1;
    }
    pile_buf_append_str(&b, ",\n  \"seed\": ");
    append_u64(&b, st->seed);
    pile_buf_append_str(&b, ",\n  \"tokens_seen\": ");
    append_u64(&b, st->tokens_seen);
    pile_buf_printf(&b, ",\n  \"tokenizer_fingerprint\": \"%s\",\n  \"tokenizer_spec\": ", fp);
    size_t sl = strnlen(st->tokenizer_spec, sizeof st->tokenizer_spec);
    pile_json_write_string(&b, st->tokenizer_spec, sl);
    if (data_json) {
        pile_buf_append_str(&b, ",\n  \"data\": ");
        pile_buf_append_str(&b, data_json);
    }
    pile_buf_append_str(&b, ",\n  \"config\": ");
    pile_buf_append_str(&b, config_json ? config_json : "null");
    pile_buf_append_str(&b, "\n}\n");
    int rc = b.failed ? OOM(err) : path_of(&path, tmp, "trainer_state.json", err);
    if (!rc) rc = pile_fs_write_atomic(path.data, b.data, b.len, err);
    pile_buf_free(&b);
    pile_buf_free(&path);
    return rc;
}

/* ------------------------------------------------------ tokenizer files */

typedef struct tok_file {
    char name[256];
    pile_buf data;
} tok_file;

struct pile_checkpoint_tokenizer {
    size_t n;
    tok_file files[2];
};

void pile_checkpoint_tokenizer_free(pile_checkpoint_tokenizer *t)
{
    if (!t) return;
    for (size_t i = 0; i < t->n; i++) pile_buf_free(&t->files[i].data);
    free(t);
}

uint64_t pile_checkpoint_tokenizer_bytes(const pile_checkpoint_tokenizer *t)
{
    uint64_t n = 0;
    for (size_t i = 0; t && i < t->n; i++) n += t->files[i].data.len;
    return n;
}

static int add_tok_file(pile_checkpoint_tokenizer *t, const char *src, const char *name, pile_err *err)
{
    tok_file *f = &t->files[t->n];
    snprintf(f->name, sizeof f->name, "%s", name);
    int rc = pile_fs_read_file(src, &f->data, err);
    if (rc) pile_buf_free(&f->data);
    else t->n++;
    return rc;
}

int pile_checkpoint_tokenizer_read(pile_checkpoint_tokenizer **out, const char *spec, pile_err *err)
{
    *out = NULL;
    pile_checkpoint_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return OOM(err);
    pile_buf src = {0};
    int rc = 0;
    if (is_builtin_spec(spec)) {
        /* nothing to carry: the spec and fingerprint say it all */
    } else if (pile_tokenizer_is_builtin(spec)) {
        /* GPT-2's files from the library, for readers without pile */
        const char *name;
        const void *data;
        size_t len;
        for (size_t i = 0; !rc && pile_tokenizer_builtin_file(spec, i, &name, &data, &len); i++) {
            tok_file *f = &t->files[t->n];
            snprintf(f->name, sizeof f->name, "%s", name);
            if (pile_buf_append(&f->data, data, len)) rc = OOM(err);
            else t->n++;
        }
    } else if (pile_fs_is_dir(spec)) {
        static const char *const files[] = {"encoder.json", "vocab.bpe"};
        for (int i = 0; i < 2 && !rc; i++) {
            rc = path_of(&src, spec, files[i], err);
            if (!rc) rc = add_tok_file(t, src.data, files[i], err);
        }
    } else if (is_file(spec)) {
        const char *base = strrchr(spec, '/');
        base = base ? base + 1 : spec;
        if (strcmp(base, "tokenizer_spec.txt") == 0) base = "tokenizer.json";
        rc = add_tok_file(t, spec, base, err);
    } else {
        rc = pile_err_set(err, PILE_ENOENT, "cannot copy tokenizer '%s' into the checkpoint: no such file or folder",
                          spec);
    }
    pile_buf_free(&src);
    if (rc) {
        pile_checkpoint_tokenizer_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

/* tokenizer/: a copy of the tokenizer's file(s) so that the checkpoint
 * decodes without the original path, and tokenizer_spec.txt. */
static int write_tokenizer(const char *tmp, const pile_train_state *st, const pile_checkpoint_save_opts *o,
                           pile_err *err)
{
    pile_buf dir = {0}, dst = {0}, txt = {0};
    pile_checkpoint_tokenizer *own = NULL;
    const pile_checkpoint_tokenizer *tok = o ? o->tokenizer : NULL;
    const char *spec = st->tokenizer_spec;
    int rc = path_of(&dir, tmp, "tokenizer", err);
    if (!rc) rc = pile_fs_mkdirs(dir.data, err);
    if (!rc && !tok && !(o && o->without_tokenizer)) {
        rc = pile_checkpoint_tokenizer_read(&own, spec, err);
        tok = own;
    }
    for (size_t i = 0; !rc && tok && !(o && o->without_tokenizer) && i < tok->n; i++) {
        const tok_file *f = &tok->files[i];
        rc = path_of(&dst, dir.data, f->name, err);
        if (!rc) rc = pile_fs_write_atomic(dst.data, f->data.data ? f->data.data : "", f->data.len, err);
    }
    if (rc) goto out;
    char fp[33];
    pile_hex_encode(fp, st->tokenizer_fp, 16);
    pile_buf_printf(&txt, "spec: %s\nfingerprint: %s\n", is_builtin_spec(spec) ? "bytes" : spec, fp);
    rc = txt.failed ? OOM(err) : path_of(&dst, dir.data, "tokenizer_spec.txt", err);
    if (!rc) rc = pile_fs_write_atomic(dst.data, txt.data, txt.len, err);
out:
    pile_checkpoint_tokenizer_free(own);
    pile_buf_free(&dir);
    pile_buf_free(&dst);
    pile_buf_free(&txt);
    return rc;
}

/* A tokenizer.json of the user's, as tokenizer.json: as it is, but for a
 * post-processor that adds tokens (TemplateProcessing: Llama 3's BOS),
 * which AutoTokenizer's default encode would add where the shards the
 * model learnt from have none: that one becomes null. */
static int copy_hf_json(const char *src, const char *dst, pile_err *err)
{
    pile_buf data = {0}, out = {0};
    pile_json *root = NULL;
    int rc = pile_fs_read_file(src, &data, err);
    if (!rc) rc = pile_json_parse(data.data ? data.data : "", data.len, src, &root, err);
    const pile_json *pp = rc ? NULL : pile_json_get(root, "post_processor");
    const char *type = pp ? pile_json_str(pile_json_get(pp, "type"), NULL) : NULL;
    if (!rc && pp && pile_json_type_of(pp) != PILE_JSON_NULL && !(type && !strcmp(type, "ByteLevel"))) {
        pile_buf_append_str(&out, "{");
        for (size_t k = 0; k < pile_json_size(root); k++) {
            size_t n;
            const char *key = pile_json_key_at(root, k, &n);
            pile_buf_append_str(&out, k ? ",\n  " : "\n  ");
            pile_json_write_string(&out, key, n);
            pile_buf_append_str(&out, ": ");
            if (!strcmp(key, "post_processor")) pile_buf_append_str(&out, "null");
            else json_dump(&out, pile_json_at(root, k));
        }
        pile_buf_append_str(&out, "\n}\n");
        rc = out.failed ? OOM(err) : pile_fs_write_atomic(dst, out.data, out.len, err);
    } else if (!rc) {
        rc = pile_fs_write_atomic(dst, data.data ? data.data : "", data.len, err);
    }
    pile_json_free(root);
    pile_buf_free(&data);
    pile_buf_free(&out);
    return rc;
}

/* Ends a tokenizer_config.json or special_tokens_map.json: GPT-2's
 * convention, end-of-text as both. */
static void put_bos_eos(pile_buf *b, const char *eot)
{
    pile_buf_append_str(b, "  \"bos_token\": ");
    pile_json_write_string(b, eot, strlen(eot));
    pile_buf_append_str(b, ",\n  \"eos_token\": ");
    pile_json_write_string(b, eot, strlen(eot));
    pile_buf_append_str(b, "\n}\n");
}

/* The Hugging Face files AutoTokenizer.from_pretrained(dir) reads:
 * tokenizer.json (the spec's own, or written from the tokenizer's tables),
 * tokenizer_config.json and special_tokens_map.json. split_special_tokens:
 * document text is ordinary text here, a literal "<|endoftext|>" too. */
static int write_hf_tokenizer(const char *tmp, pile_model *m, pile_err *err)
{
    /* from the folder's own tokenizer/ copy, just written: the source the
     * run started from may be gone by now */
    pile_buf specb = {0};
    int rc = pile_checkpoint_tokenizer_spec(tmp, &specb, err);
    const char *spec = rc ? "" : specb.data;
    size_t sl = strlen(spec);
    pile_tokenizer *tok = NULL;
    pile_buf path = {0}, b = {0};
    if (!rc) rc = pile_tokenizer_open(&tok, spec, err);
    if (!rc) rc = path_of(&path, tmp, "tokenizer.json", err);
    if (!rc && sl > 5 && !strcmp(spec + sl - 5, ".json")) {
        rc = copy_hf_json(spec, path.data, err);
    } else if (!rc) {
        rc = pile_tokenizer_write_hf_json(tok, &b, err);
        if (!rc) rc = pile_fs_write_atomic(path.data, b.data, b.len, err);
    }
    const char *eot = "";
    for (size_t i = 0; tok && i < pile_tokenizer_special_count(tok); i++) {
        uint32_t id;
        const char *text = pile_tokenizer_special(tok, i, &id);
        if (id == pile_tokenizer_eot_id(tok)) eot = text;
    }
    b.len = 0;
    pile_buf_append_str(&b, "{\n  \"tokenizer_class\": \"PreTrainedTokenizerFast\",\n");
    pile_buf_printf(&b, "  \"model_max_length\": %d,\n", pile_model_get_config(m)->n_positions);
    pile_buf_append_str(&b, "  \"split_special_tokens\": true,\n  \"clean_up_tokenization_spaces\": false,\n");
    put_bos_eos(&b, eot);
    if (!rc) rc = b.failed ? OOM(err) : path_of(&path, tmp, "tokenizer_config.json", err);
    if (!rc) rc = pile_fs_write_atomic(path.data, b.data, b.len, err);
    b.len = 0;
    pile_buf_append_str(&b, "{\n");
    put_bos_eos(&b, eot);
    if (!rc) rc = b.failed ? OOM(err) : path_of(&path, tmp, "special_tokens_map.json", err);
    if (!rc) rc = pile_fs_write_atomic(path.data, b.data, b.len, err);
    pile_tokenizer_close(tok);
    pile_buf_free(&path);
    pile_buf_free(&b);
    pile_buf_free(&specb);
    return rc;
}

/* ---------------------------------------------------------- checksums */

#define CHECKSUMS "checksums.json"
#define CHECKSUMS_FORMAT "pile-checkpoint-checksums"

/* Paths relative to a folder, sorted for a stable checksums.json. */
typedef struct name_list {
    char **v;
    size_t n, cap;
} name_list;

static void names_free(name_list *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int names_push(name_list *l, const char *s)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v) return PILE_ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    if (!(l->v[l->n] = strdup(s))) return PILE_ENOMEM;
    l->n++;
    return 0;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every regular file under root/rel (rel "" for root itself), recursively,
 * as paths relative to root; links and other kinds are not followed. */
static int list_files(const char *root, const char *rel, int depth, name_list *out, pile_err *err)
{
    pile_buf dir = {0}, sub = {0}, full = {0};
    int rc = path_of(&dir, root, rel, err); /* "root/" for rel "" */
    DIR *d = rc ? NULL : opendir(dir.data);
    if (!rc && !d) rc = pile_err_sys(err, PILE_EIO, errno, "cannot list folder '%s'", dir.data);
    struct dirent *e;
    while (!rc && d && (e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        sub.len = 0;
        if ((rel[0] ? pile_buf_printf(&sub, "%s/%s", rel, e->d_name) : pile_buf_append_str(&sub, e->d_name)) ||
            pile_buf_append(&sub, "", 1) || path_of(&full, root, sub.data, err)) {
            rc = OOM(err);
            break;
        }
        struct stat sb;
        if (lstat(full.data, &sb) != 0) {
            rc = pile_err_sys(err, PILE_EIO, errno, "cannot stat '%s'", full.data);
        } else if (S_ISREG(sb.st_mode)) {
            if (names_push(out, sub.data)) rc = OOM(err);
        } else if (S_ISDIR(sb.st_mode)) {
            if (depth >= 8) rc = pile_err_set(err, PILE_ELIMIT, "folder '%s' is nested too deep", full.data);
            else rc = list_files(root, sub.data, depth + 1, out, err);
        }
    }
    if (d) closedir(d);
    if (!rc && !rel[0] && out->n > 1) qsort(out->v, out->n, sizeof *out->v, cmp_name);
    pile_buf_free(&dir);
    pile_buf_free(&sub);
    pile_buf_free(&full);
    return rc;
}

/* The size and XXH3-128 (canonical bytes, hex) of a file, read in 1 MiB
 * pieces. */
static int hash_file(const char *path, uint64_t *size, char hex[33], pile_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return pile_err_sys(err, errno == ENOENT ? PILE_ENOENT : PILE_EIO, errno, "cannot open '%s'", path);
    enum { CHUNK = 1 << 20 };
    char *buf = malloc(CHUNK);
    XXH3_state_t *xs = XXH3_createState();
    int rc = buf && xs ? 0 : OOM(err);
    if (!rc) XXH3_128bits_reset(xs);
    *size = 0;
    while (!rc) {
        ssize_t n = read(fd, buf, CHUNK);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) rc = pile_err_sys(err, PILE_EIO, errno, "cannot read '%s'", path);
        if (n <= 0) break;
        XXH3_128bits_update(xs, buf, (size_t)n);
        *size += (uint64_t)n;
    }
    if (!rc) {
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, XXH3_128bits_digest(xs));
        pile_hex_encode(hex, c.digest, 16);
    }
    XXH3_freeState(xs);
    free(buf);
    close(fd);
    return rc;
}

/* checksums.json over every other file of folder dir; written last, so
 * that it covers whatever a save (or a later addition to it) put there. */
static int write_checksums(const char *dir, pile_err *err)
{
    name_list files = {0};
    pile_buf b = {0}, path = {0};
    int rc = list_files(dir, "", 0, &files, err);
    if (!rc)
        pile_buf_printf(&b, "{\n  \"format\": \"%s\",\n  \"version\": 1,\n  \"algorithm\": \"xxh3-128\",\n"
                            "  \"files\": [", CHECKSUMS_FORMAT);
    int first = 1;
    for (size_t i = 0; !rc && i < files.n; i++) {
        if (!strcmp(files.v[i], CHECKSUMS)) continue;
        uint64_t size;
        char hex[33];
        if ((rc = path_of(&path, dir, files.v[i], err)) || (rc = hash_file(path.data, &size, hex, err))) break;
        pile_buf_append_str(&b, first ? "\n    {\"path\": " : ",\n    {\"path\": ");
        pile_json_write_string(&b, files.v[i], strlen(files.v[i]));
        pile_buf_printf(&b, ", \"bytes\": %llu, \"xxh3_128\": \"%s\"}", (unsigned long long)size, hex);
        first = 0;
    }
    if (!rc) pile_buf_append_str(&b, first ? "]\n}\n" : "\n  ]\n}\n");
    if (!rc && b.failed) rc = OOM(err);
    if (!rc) rc = path_of(&path, dir, CHECKSUMS, err);
    if (!rc) rc = pile_fs_write_atomic(path.data, b.data, b.len, err);
    names_free(&files);
    pile_buf_free(&b);
    pile_buf_free(&path);
    return rc;
}

/* A path checksums.json may name: relative, inside the folder. */
static int safe_rel_path(const char *p, size_t n)
{
    if (!n || n > 4096 || strlen(p) != n || p[0] == '/') return 0;
    for (const char *c = p; *c;) {
        const char *slash = strchr(c, '/');
        size_t len = slash ? (size_t)(slash - c) : strlen(c);
        if (!len || (len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.')) return 0;
        c += len + (slash ? 1 : 0);
        if (slash && !*c) return 0;
    }
    return 1;
}

int pile_checkpoint_verify(const char *dir, pile_err *err)
{
    pile_buf path = {0};
    pile_json *j = NULL;
    int rc = path_of(&path, dir, CHECKSUMS, err);
    if (rc) return rc;
    if (access(path.data, F_OK) != 0 && errno == ENOENT) {
        rc = pile_err_set(err, PILE_ENOENT,
                          "checkpoint '%s' has no " CHECKSUMS " (written by an older pile-trainer or another "
                          "program): its files cannot be verified",
                          dir);
        goto out;
    }
    pile_err perr;
    if (pile_json_parse_file(path.data, &j, &perr) < 0) {
        rc = pile_err_set(err, PILE_EFORMAT, "checkpoint '%s' is damaged: %s", dir, perr.msg);
        goto out;
    }
    const char *fmt = pile_json_str(pile_json_get(j, "format"), NULL);
    const pile_json *files = pile_json_get(j, "files");
    if (!fmt || strcmp(fmt, CHECKSUMS_FORMAT) || pile_json_type_of(files) != PILE_JSON_ARRAY) {
        rc = pile_err_set(err, PILE_EFORMAT, "checkpoint '%s' is damaged: '%s' is not a checksum list", dir, path.data);
        goto out;
    }
    for (size_t i = 0; !rc && i < pile_json_size(files); i++) {
        const pile_json *f = pile_json_at(files, i);
        size_t pn = 0;
        const char *p = pile_json_str(pile_json_get(f, "path"), &pn);
        const char *want = pile_json_str(pile_json_get(f, "xxh3_128"), NULL);
        int64_t bytes;
        if (!p || !safe_rel_path(p, pn) || !want || strlen(want) != 32 || !pile_json_int(pile_json_get(f, "bytes"), &bytes) ||
            bytes < 0) {
            rc = pile_err_set(err, PILE_EFORMAT, "checkpoint '%s' is damaged: entry %zu of its " CHECKSUMS " is malformed",
                              dir, i + 1);
            break;
        }
        pile_buf fp = {0};
        struct stat sb;
        if (path_of(&fp, dir, p, err)) {
            rc = PILE_ENOMEM;
        } else if (lstat(fp.data, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            rc = pile_err_set(err, PILE_ETRUNC, "checkpoint '%s' is incomplete: '%s', listed in its " CHECKSUMS
                              ", is missing", dir, p);
        } else if ((uint64_t)sb.st_size != (uint64_t)bytes) {
            rc = pile_err_set(err, PILE_ETRUNC,
                              "checkpoint '%s' is incomplete: '%s' has %lld bytes, its " CHECKSUMS " lists %lld", dir, p,
                              (long long)sb.st_size, (long long)bytes);
        } else {
            uint64_t size;
            char got[33];
            rc = hash_file(fp.data, &size, got, err);
            if (!rc && strcasecmp(got, want) != 0)
                rc = pile_err_set(err, PILE_ECORRUPT,
                                  "checkpoint '%s' is damaged: '%s' has checksum %s, its " CHECKSUMS " lists %s", dir, p,
                                  got, want);
        }
        pile_buf_free(&fp);
    }
out:
    pile_json_free(j);
    pile_buf_free(&path);
    return rc;
}

/* ------------------------------------------------------------ saving */

/* "<dir><suffix>" (".tmp", ".old"), dir without its trailing slashes. */
static int sibling(const char *dir, const char *suffix, pile_buf *out, pile_err *err)
{
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/') dl--;
    if (!dl) return pile_err_set(err, PILE_EINVAL, "cannot save a checkpoint: empty folder name");
    return pile_buf_printf(out, "%.*s%s", (int)dl, dir, suffix) ? OOM(err) : 0;
}

/* "<dir>.tmp" (where a save writes) and "<dir>.old" (where a replaced
 * folder waits) for dir; then the state a crash may have left cleared,
 * and an empty "<dir>.tmp" made to write into. */
static int begin_folder(const char *dir, pile_buf *tmp, pile_buf *old, pile_err *err)
{
    PILE_FORWARD_IF_ERR(sibling(dir, ".tmp", tmp, err));
    PILE_FORWARD_IF_ERR(sibling(dir, ".old", old, err));
    /* A crash between the two renames of publish leaves only <dir>.old: it
     * is the last whole checkpoint, so it comes back before anything else. */
    if (!pile_fs_is_dir(dir) && pile_fs_is_dir(old->data) && rename(old->data, dir) != 0)
        return pile_err_sys(err, PILE_EIO, errno, "cannot rename '%s' to '%s'", old->data, dir);
    PILE_FORWARD_IF_ERR(rm_tree(tmp->data, err));
    PILE_FORWARD_IF_ERR(rm_tree(old->data, err));
    return pile_fs_mkdirs(tmp->data, err);
}

/* Seals "<dir>.tmp" (checksums.json, fsync) and renames it over dir: an
 * existing dir is moved aside first and removed after, and the parent
 * fsynced, so that a crash leaves one whole folder or the other. */
static int finish_folder(const char *tmp, const char *dir, const char *old, pile_err *err)
{
    PILE_FORWARD_IF_ERR(write_checksums(tmp, err));
    PILE_FORWARD_IF_ERR(pile_fs_fsync_dir(tmp, err));
    int had_old = pile_fs_is_dir(dir);
    if (had_old && rename(dir, old) != 0) return pile_err_sys(err, PILE_EIO, errno, "cannot rename '%s' to '%s'", dir, old);
    if (rename(tmp, dir) != 0) {
        int rc = pile_err_sys(err, PILE_EIO, errno, "cannot rename '%s' to '%s'", tmp, dir);
        if (had_old) rename(old, dir);
        return rc;
    }
    /* tmp no longer exists, so this syncs the folder holding it: the parent */
    PILE_FORWARD_IF_ERR(pile_fs_fsync_dir(tmp, err));
    return had_old ? rm_tree(old, err) : 0;
}

/* After a failure: the partial "<dir>.tmp" goes, the error stays. */
static void drop_folder(const char *tmp, pile_err *err)
{
    pile_err keep = err ? *err : (pile_err){0};
    rm_tree(tmp, NULL);
    if (err) *err = keep;
}

int pile_checkpoint_save_ex(const char *dir, pile_model *m, pile_optim *opt, const pile_train_state *st,
                            const char *config_json, const pile_checkpoint_save_opts *opts, pile_err *err)
{
    pile_buf tmp = {0}, old = {0};
    int rc = begin_folder(dir, &tmp, &old, err);
    if (!rc) rc = write_weights(tmp.data, m, opt, opts ? opts->weights : NULL, err);
    /* sharded over ranks, each rank writes its own part of the moments */
    if (!rc && opt) {
        if (pile_optim_shards(opt) == 1) rc = write_moments(tmp.data, m, opt, err);
        else rc = pile_checkpoint_write_optim_shard(tmp.data, m, opt, err);
    }
    if (!rc) rc = write_state(tmp.data, st, opt, config_json, opts ? opts->data_json : NULL, err);
    if (!rc) rc = write_tokenizer(tmp.data, st, opts, err);
    if (!rc && !(opts && opts->without_tokenizer)) rc = write_hf_tokenizer(tmp.data, m, err);
    if (!rc) rc = write_config(tmp.data, m, st, err);
    if (!rc && opts && opts->before_seal) rc = opts->before_seal(opts->before_seal_ctx, tmp.data, err);
    if (!rc) rc = finish_folder(tmp.data, dir, old.data, err);
    if (rc && tmp.data) drop_folder(tmp.data, err);
    pile_buf_free(&tmp);
    pile_buf_free(&old);
    return rc;
}

int pile_checkpoint_save(const char *dir, pile_model *m, pile_optim *opt, const pile_train_state *st,
                         const char *config_json, pile_err *err)
{
    return pile_checkpoint_save_ex(dir, m, opt, st, config_json, NULL, err);
}

/* The weights for model.safetensors where no rank holds them whole:
 * sharded over ranks, the master weights gathered from their shards (a
 * collective); at ZeRO 3 without the optimizer's state, the compute
 * parameters likewise. *weights NULL when the save can download them
 * itself. */
static int gather_weights(pile_model *m, pile_optim *opt, int with_optimizer, float **weights, pile_err *err)
{
    *weights = NULL;
    const int master = with_optimizer || pile_optim_master_is_compute(opt);
    if (pile_optim_shards(opt) == 1 && (master || pile_optim_zero_stage(opt) < 3)) return 0;
    *weights = malloc(pile_model_flat_size(m) * sizeof **weights);
    if (!*weights) return pile_err_set(err, PILE_ENOMEM, "out of memory for a host copy of the weights");
    int rc = master ? pile_optim_gather(opt, PILE_OPTIM_MASTER, *weights, err)
                    : pile_optim_gather_params(opt, *weights, err);
    if (rc < 0) {
        free(*weights);
        *weights = NULL;
    }
    return rc;
}

/* A flag from every rank, the largest back: a barrier that says whether
 * any rank failed. */
static int64_t agree(pile_comm *comm, int64_t flag, int *rc, pile_err *err)
{
    int r = pile_comm_allreduce_i64(comm, &flag, 1, PILE_COMM_MAX, err);
    if (r < 0 && *rc == 0) *rc = r;
    return r < 0 ? 1 : flag;
}

typedef struct seal_ctx {
    pile_comm *comm;
    int called;
} seal_ctx;

/* Rank 0's before_seal: tells the other ranks the folder is there (0:
 * write your shards), then learns whether they did (the first that did
 * not, plus one). */
static int seal_ranks(void *ctx, const char *tmp, pile_err *err)
{
    (void)tmp;
    seal_ctx *s = ctx;
    s->called = 1;
    int rc = 0;
    agree(s->comm, 0, &rc, err);
    int64_t failed = agree(s->comm, 0, &rc, err);
    if (rc == 0 && failed)
        rc = pile_err_set(err, PILE_EIO, "rank %lld could not write its optimizer shard (its log says why)",
                          (long long)failed - 1);
    return rc;
}

int pile_checkpoint_save_ranks(const char *dir, pile_model *m, pile_optim *opt, int with_optimizer,
                               const pile_train_state *st, const char *config_json,
                               const pile_checkpoint_save_opts *opts, pile_comm *comm, pile_err *err)
{
    const int world = comm ? pile_comm_world_size(comm) : 1, rank = comm ? pile_comm_rank(comm) : 0;
    const int sharded = with_optimizer && pile_optim_shards(opt) > 1;
    float *weights = NULL;
    int rc = gather_weights(m, opt, with_optimizer, &weights, err);
    if (rank == 0) {
        seal_ctx seal = {comm, 0};
        pile_checkpoint_save_opts o = {0};
        if (opts) o = *opts;
        o.weights = weights;
        if (sharded) {
            o.before_seal = seal_ranks;
            o.before_seal_ctx = &seal;
        }
        if (rc == 0) rc = pile_checkpoint_save_ex(dir, m, with_optimizer ? opt : NULL, st, config_json, &o, err);
        /* failed before the folder was ready: the others write nothing */
        if (sharded && !seal.called) {
            agree(comm, 1, &rc, err);
            agree(comm, 0, &rc, err);
        }
    } else if (sharded) {
        pile_buf tmp = {0};
        int wrc = 0;
        if (agree(comm, 0, &wrc, err) == 0 && (wrc = sibling(dir, ".tmp", &tmp, err)) == 0)
            wrc = pile_checkpoint_write_optim_shard(tmp.data, m, opt, err);
        agree(comm, wrc < 0 ? rank + 1 : 0, &wrc, err);
        pile_buf_free(&tmp);
        if (rc == 0) rc = wrc;
    }
    free(weights);
    /* everyone learns whether the folder was written */
    if (world > 1 && agree(comm, rank == 0 && rc < 0, &rc, err) && rc == 0)
        rc = pile_err_set(err, PILE_EIO, "rank 0 could not write checkpoint '%s' (its log says why)", dir);
    return rc;
}

uint64_t pile_checkpoint_size_estimate(const pile_model *m, int with_optimizer, uint64_t tokenizer_bytes)
{
    uint64_t saved = 0, n = pile_model_tensor_count(m);
    for (size_t i = 0; i < n; i++) saved += pile_model_tensor(m, i)->saved_numel;
    /* safetensors headers: about 128 bytes a tensor; the JSON files: a few KiB */
    uint64_t weights = saved * sizeof(float) + 128 * n;
    return weights * (with_optimizer ? 3 : 1) + tokenizer_bytes + 65536;
}

/* A copy of file src at dst, fsynced, in 1 MiB pieces (a checkpoint's
 * weights may be gigabytes). */
static int copy_stream(const char *src, const char *dst, pile_err *err)
{
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) return pile_err_sys(err, PILE_EIO, errno, "cannot open '%s'", src);
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    enum { CHUNK = 1 << 20 };
    char *buf = malloc(CHUNK);
    int rc = out < 0 ? pile_err_sys(err, PILE_EIO, errno, "cannot create '%s'", dst) : buf ? 0 : OOM(err);
    while (!rc) {
        ssize_t n = read(in, buf, CHUNK);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) rc = pile_err_sys(err, PILE_EIO, errno, "cannot read '%s'", src);
        if (n <= 0) break;
        for (ssize_t at = 0; !rc && at < n;) {
            ssize_t w = write(out, buf + at, (size_t)(n - at));
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) rc = pile_err_sys(err, PILE_EIO, errno, "cannot write '%s'", dst);
            else at += w;
        }
    }
    if (!rc && fsync(out) != 0) rc = pile_err_sys(err, PILE_EIO, errno, "cannot fsync '%s'", dst);
    if (out >= 0 && close(out) != 0 && !rc) rc = pile_err_sys(err, PILE_EIO, errno, "cannot close '%s'", dst);
    close(in);
    free(buf);
    return rc;
}

/* optimizer.safetensors or a rank's optimizer-RRRRR-of-WWWWW.safetensors */
static int is_optimizer_file(const char *f)
{
    size_t n = strlen(f);
    return !strncmp(f, "optimizer", 9) && !strchr(f, '/') && n > 12 && !strcmp(f + n - 12, ".safetensors");
}

int pile_checkpoint_copy(const char *src, const char *dst, int weights_only, pile_err *err)
{
    int rc = pile_checkpoint_verify(src, err);
    if (rc && rc != PILE_ENOENT) return rc;
    name_list files = {0};
    pile_buf tmp = {0}, old = {0}, from = {0}, to = {0};
    rc = list_files(src, "", 0, &files, err);
    if (!rc) rc = begin_folder(dst, &tmp, &old, err);
    for (size_t i = 0; !rc && i < files.n; i++) {
        const char *f = files.v[i];
        if (!strcmp(f, CHECKSUMS) || (weights_only && is_optimizer_file(f))) continue;
        if ((rc = path_of(&from, src, f, err)) || (rc = path_of(&to, tmp.data, f, err))) break;
        char *slash = strrchr(to.data, '/');
        if (slash > to.data + tmp.len) {
            *slash = '\0';
            rc = pile_fs_mkdirs(to.data, err);
            *slash = '/';
        }
        if (!rc) rc = copy_stream(from.data, to.data, err);
    }
    if (!rc) rc = finish_folder(tmp.data, dst, old.data, err);
    if (rc && tmp.data) drop_folder(tmp.data, err);
    names_free(&files);
    pile_buf_free(&tmp);
    pile_buf_free(&old);
    pile_buf_free(&from);
    pile_buf_free(&to);
    return rc;
}

int pile_checkpoint_set_latest(const char *checkpoint_dir, const char *name, pile_err *err)
{
    /* find_latest trims the line's trailing blanks: a name ending in one
     * (or holding a control character) would not read back */
    size_t nl = strlen(name);
    int odd = 0;
    for (size_t i = 0; i < nl; i++) odd |= (unsigned char)name[i] < 0x20 || name[i] == 0x7f;
    if (!nl || odd || name[nl - 1] == ' ' || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
        return pile_err_set(err, PILE_EINVAL, "cannot name '%s' the latest checkpoint: not a folder name", name);
    pile_buf path = {0}, line = {0};
    int rc = path_of(&path, checkpoint_dir, "latest", err);
    if (!rc && pile_buf_printf(&line, "%s\n", name)) rc = OOM(err);
    if (!rc) rc = pile_fs_write_atomic(path.data, line.data, line.len, err);
    pile_buf_free(&path);
    pile_buf_free(&line);
    return rc;
}

/* ------------------------------------------------------------- reading */

static int read_json(const char *dir, const char *name, pile_json **root, pile_err *err)
{
    pile_buf path = {0};
    int rc = path_of(&path, dir, name, err);
    if (!rc) rc = pile_json_parse_file(path.data, root, err);
    pile_buf_free(&path);
    return rc;
}

static int get_int(const pile_json *obj, const char *key, int64_t *out)
{
    return pile_json_int(pile_json_get(obj, key), out);
}

static int get_u64(const pile_json *obj, const char *key, uint64_t *out)
{
    const pile_json *v = pile_json_get(obj, key);
    int64_t i;
    if (pile_json_int(v, &i)) {
        if (i < 0) return 0;
        *out = (uint64_t)i;
        return 1;
    }
    const char *s = pile_json_str(v, NULL);
    if (!s || !*s || *s == '-') return 0;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (*end || errno) return 0;
    *out = x;
    return 1;
}

/* The most parameters a config.json may describe: 8G floats (32 GiB), five
 * times gpt2-xl, beyond what an fp32 CPU trainer can hold; so that a
 * corrupt or hostile config is refused here, before the model asks for
 * its memory. */
#define MAX_CONFIG_PARAMS 8589934592.0

/* A config.json key transformers reads that changes the model's function:
 * absent, or the value our model implements. */
static int key_is(const pile_json *j, const char *key, int want_bool)
{
    const pile_json *v = pile_json_get(j, key);
    return !v || (pile_json_type_of(v) == PILE_JSON_BOOL && pile_json_bool(v) == want_bool);
}

int pile_checkpoint_read_model_config(const char *dir, pile_model_config *cfg, pile_err *err)
{
    pile_json *j = NULL;
    PILE_FORWARD_IF_ERR(read_json(dir, "config.json", &j, err));
    int rc = 0;
    if (pile_json_type_of(j) != PILE_JSON_OBJECT)
        rc = pile_err_set(err, PILE_EFORMAT, "bad config.json in '%s': not a JSON object", dir);
    static const char *const keys[] = {"vocab_size", "n_positions", "n_layer", "n_head", "n_embd"};
    int64_t v[5];
    for (int i = 0; i < 5 && !rc; i++)
        if (!get_int(j, keys[i], &v[i]) || v[i] <= 0 || v[i] > (1 << 30))
            rc = pile_err_set(err, PILE_EFORMAT, "bad config.json in '%s': '%s' is not a positive integer", dir, keys[i]);
    if (!rc && v[4] % v[3] != 0)
        rc = pile_err_set(err, PILE_EFORMAT, "bad config.json in '%s': n_embd %lld is not a multiple of n_head %lld",
                          dir, (long long)v[4], (long long)v[3]);
    double params = 0;
    if (!rc) {
        /* as the model counts them (wte padded); doubles cannot overflow here */
        double V = (double)pile_model_padded_vocab((int)v[0]), P = (double)v[1], L = (double)v[2], C = (double)v[4];
        params = V * C + P * C + L * (12.0 * C * C + 13.0 * C) + 2.0 * C;
        if (params > MAX_CONFIG_PARAMS)
            rc = pile_err_set(err, PILE_EFORMAT,
                              "bad config.json in '%s': %.3g parameters (n_layer %lld, n_embd %lld, vocab_size %lld, "
                              "n_positions %lld), more than %.3g",
                              dir, params, (long long)v[2], (long long)v[4], (long long)v[0], (long long)v[1],
                              MAX_CONFIG_PARAMS);
    }
    if (!rc) {
        /* a model.safetensors smaller than the weights the config describes
         * cannot be its checkpoint: refuse before the model is allocated */
        pile_buf w = {0};
        struct stat sb;
        double saved = params - (double)(pile_model_padded_vocab((int)v[0]) - v[0]) * (double)v[4];
        if (pile_fs_join(&w, dir, "model.safetensors")) rc = OOM(err);
        else if (stat(w.data, &sb) == 0 && S_ISREG(sb.st_mode) && (double)sb.st_size < 4.0 * saved)
            rc = pile_err_set(err, PILE_EMISMATCH,
                              "config.json in '%s' describes %.0f parameters but model.safetensors has %lld bytes", dir,
                              saved, (long long)sb.st_size);
        pile_buf_free(&w);
    }
    const char *act = pile_json_str(pile_json_get(j, "activation_function"), NULL);
    const pile_json *inner = pile_json_get(j, "n_inner");
    const char *type = pile_json_str(pile_json_get(j, "model_type"), NULL);
    int64_t ni;
    if (!rc && type && strcmp(type, "gpt2") != 0)
        rc = pile_err_set(err, PILE_EFORMAT, "unsupported model_type '%s' in the config.json of '%s': only gpt2", type,
                          dir);
    if (!rc && act && strcmp(act, "gelu_new") != 0 && strcmp(act, "gelu_pytorch_tanh") != 0)
        rc = pile_err_set(err, PILE_EFORMAT, "unsupported activation '%s' in the config.json of '%s': only gelu_new", act,
                          dir);
    if (!rc && inner && pile_json_type_of(inner) != PILE_JSON_NULL && !(pile_json_int(inner, &ni) && ni == 4 * v[4]))
        rc = pile_err_set(err, PILE_EFORMAT, "unsupported n_inner in the config.json of '%s': only 4 * n_embd", dir);
    const pile_json *tie = pile_json_get(j, "tie_word_embeddings");
    if (!rc && tie && !pile_json_bool(tie))
        rc = pile_err_set(err, PILE_EFORMAT, "unsupported untied embeddings in the config.json of '%s'", dir);
    /* transformers options that change what the model computes: a model
     * trained with them would load here and silently compute another
     * function */
    const pile_json *eps = pile_json_get(j, "layer_norm_epsilon");
    if (!rc && eps && !(pile_json_type_of(eps) == PILE_JSON_NUMBER && fabs(pile_json_num(eps) - 1e-5) <= 1e-12))
        rc = pile_err_set(err, PILE_EFORMAT, "unsupported layer_norm_epsilon in the config.json of '%s': only 1e-05",
                          dir);
    if (!rc && !key_is(j, "scale_attn_weights", 1))
        rc = pile_err_set(err, PILE_EFORMAT, "unsupported scale_attn_weights in the config.json of '%s': only true", dir);
    if (!rc && !key_is(j, "scale_attn_by_inverse_layer_idx", 0))
        rc = pile_err_set(err, PILE_EFORMAT,
                          "unsupported scale_attn_by_inverse_layer_idx in the config.json of '%s': only false", dir);
    const pile_json *d = pile_json_get(j, "resid_pdrop");
    /* transformers' GPT2Config default when absent */
    double dropout = pile_json_type_of(d) == PILE_JSON_NUMBER ? pile_json_num(d) : 0.1;
    if (!rc && !(dropout >= 0.0 && dropout < 1.0))
        rc = pile_err_set(err, PILE_EFORMAT, "bad config.json in '%s': resid_pdrop %g is not in [0, 1)", dir, dropout);
    if (!rc) {
        memset(cfg, 0, sizeof *cfg);
        cfg->vocab_size = (int)v[0];
        cfg->n_positions = (int)v[1];
        cfg->n_layer = (int)v[2];
        cfg->n_head = (int)v[3];
        cfg->n_embd = (int)v[4];
        cfg->dropout = (float)dropout;
    }
    pile_json_free(j);
    return rc;
}

static int parse_state(const char *dir, const pile_json *j, pile_train_state *st, pile_err *err)
{
    memset(st, 0, sizeof *st);
    int64_t step, epoch, total;
    if (!get_int(j, "step", &step) || step < 0 || !get_int(j, "epoch", &epoch) || epoch < 0 ||
        !get_int(j, "total_steps", &total) || total < 0 || !get_u64(j, "position", &st->position) ||
        !get_u64(j, "seed", &st->seed) || !get_u64(j, "tokens_seen", &st->tokens_seen))
        return pile_err_set(err, PILE_EFORMAT,
                            "bad trainer_state.json in '%s': step, epoch, position, total_steps, seed or tokens_seen "
                            "missing or not a non-negative integer",
                            dir);
    st->step = step;
    st->epoch = epoch;
    st->total_steps = total;
    const pile_json *b = pile_json_get(j, "best_val_loss");
    st->best_val_loss = pile_json_type_of(b) == PILE_JSON_NUMBER ? pile_json_num(b) : INFINITY;
    /* both absent from checkpoints of older versions: no step known, nothing owed */
    int64_t bs;
    st->best_step = get_int(j, "best_step", &bs) && bs >= 0 ? bs : -1;
    const pile_json *pv = pile_json_get(j, "pending_validation");
    st->pending_val = pile_json_type_of(pv) == PILE_JSON_BOOL && pile_json_bool(pv);
    const pile_json *ls = pile_json_get(j, "loss_scale");
    st->loss_scale = pile_json_type_of(ls) == PILE_JSON_NUMBER ? pile_json_num(ls) : 1.0;
    if (pile_hex_decode(st->tokenizer_fp, 16, pile_json_str(pile_json_get(j, "tokenizer_fingerprint"), NULL)))
        return pile_err_set(err, PILE_EFORMAT, "bad trainer_state.json in '%s': tokenizer_fingerprint is not 32 hex digits",
                            dir);
    size_t n;
    const char *spec = pile_json_str(pile_json_get(j, "tokenizer_spec"), &n);
    if (!spec || n >= sizeof st->tokenizer_spec || strlen(spec) != n)
        return pile_err_set(err, PILE_EFORMAT, "bad trainer_state.json in '%s': tokenizer_spec missing or too long", dir);
    memcpy(st->tokenizer_spec, spec, n + 1);
    return 0;
}

static int read_state(const char *dir, pile_train_state *st, pile_err *err)
{
    pile_json *j = NULL;
    PILE_FORWARD_IF_ERR(read_json(dir, "trainer_state.json", &j, err));
    int rc = parse_state(dir, j, st, err);
    pile_json_free(j);
    return rc;
}

/* HF's checkpoints carry buffers and the tied head that we neither save
 * nor need; they are not "extra" tensors. */
static int ignorable(const char *name)
{
    size_t n = strlen(name);
    static const char *const tails[] = {".attn.bias", ".attn.masked_bias"};
    for (int i = 0; i < 2; i++) {
        size_t t = strlen(tails[i]);
        if (n > t && strcmp(name + n - t, tails[i]) == 0) return 1;
    }
    return strcmp(name, "lm_head.weight") == 0;
}

/* Finds prefix+name, also under transformers' "transformer." prefix. */
static const pile_st_tensor *find_tensor(const pile_st_file *f, const char *prefix, const char *name, pile_buf *tmp)
{
    tmp->len = 0;
    if (pile_buf_printf(tmp, "%s%s", prefix, name)) return NULL;
    const pile_st_tensor *t = pile_st_find(f, tmp->data);
    if (t) return t;
    tmp->len = 0;
    if (pile_buf_printf(tmp, "%stransformer.%s", prefix, name)) return NULL;
    return pile_st_find(f, tmp->data);
}

/* Where load_table puts tensor values: flat elements [first, first +
 * count) of buffer b. */
typedef struct put_target {
    pile_model *m;
    pile_optim *opt;                  /* NULL: the model's parameters (buffer 0) */
    const pile_optim_state *states;   /* with opt: which state buffer b is */
} put_target;

static int put_values(const put_target *to, int b, const float *src, size_t first, size_t count, pile_err *err)
{
    if (!to->opt) return pile_tensor_upload_f32(pile_tensor_slice(pile_model_params(to->m), first, count), src, count, err);
    return pile_optim_put(to->opt, to->states[b], src, first, count, err);
}

/* Checks a file against the model's table (under the name prefix "" or
 * "m." / "v."), then puts each tensor at its offset of buffer b (the
 * padded rows of wte zero): into the model, or into the part of the
 * optimizer's state this rank keeps. Nothing is put unless everything
 * matches. */
static int load_table(const char *dir, const char *file, const put_target *to, const char *const *prefixes,
                      int nbuf, pile_err *err)
{
    pile_model *m = to->m;
    pile_buf path = {0}, tmp = {0};
    pile_st_file *f = NULL;
    size_t n = pile_model_tensor_count(m);
    const pile_st_tensor **found = calloc((size_t)nbuf * n + 1, sizeof *found);
    float *pad = NULL;
    int rc = found ? path_of(&path, dir, file, err) : OOM(err);
    if (!rc) rc = pile_st_open(&f, path.data, err);
    if (rc) goto out;
    for (int b = 0; b < nbuf && !rc; b++) {
        for (size_t i = 0; i < n && !rc; i++) {
            const pile_tensor_info *ti = pile_model_tensor(m, i);
            const pile_st_tensor *t = find_tensor(f, prefixes[b], ti->name, &tmp);
            if (tmp.failed) {
                rc = OOM(err);
                break;
            }
            if (!t) {
                rc = pile_err_set(err, PILE_EMISMATCH, "missing tensor '%s%s' in '%s'", prefixes[b], ti->name, path.data);
                break;
            }
            int same = t->ndim == ti->ndim;
            for (int d = 0; same && d < ti->ndim; d++) same = t->shape[d] == ti->shape[d];
            if (!same) {
                char want[64], got[96];
                int k = 0;
                for (int d = 0; d < ti->ndim; d++)
                    k += snprintf(want + k, sizeof want - (size_t)k, "%s%lld", d ? ", " : "", (long long)ti->shape[d]);
                k = 0;
                got[0] = '\0';
                for (int d = 0; d < t->ndim; d++)
                    k += snprintf(got + k, sizeof got - (size_t)k, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
                rc = pile_err_set(err, PILE_EMISMATCH, "tensor '%s' in '%s' has shape [%s], the model needs [%s]", t->name,
                                  path.data, got, want);
                break;
            }
            found[(size_t)b * n + i] = t;
        }
    }
    for (size_t i = 0; !rc && i < pile_st_count(f); i++) {
        const pile_st_tensor *t = pile_st_at(f, i);
        int used = 0;
        for (size_t k = 0; k < (size_t)nbuf * n && !used; k++) used = found[k] == t;
        if (!used && !ignorable(t->name))
            rc = pile_err_set(err, PILE_EMISMATCH, "unexpected tensor '%s' in '%s'", t->name, path.data);
    }
    if (rc) goto out;
    for (int b = 0; b < nbuf; b++) {
        for (size_t i = 0; i < n; i++) {
            const pile_tensor_info *ti = pile_model_tensor(m, i);
            const pile_st_tensor *t = found[(size_t)b * n + i];
            if (ti->numel == ti->saved_numel) {
                if ((rc = put_values(to, b, t->data, ti->offset, ti->numel, err)) < 0) goto out;
                continue;
            }
            /* wte: the saved rows, then zeros for the padding */
            free(pad);
            pad = calloc(ti->numel, sizeof(float));
            if (!pad) {
                rc = OOM(err);
                goto out;
            }
            memcpy(pad, t->data, ti->saved_numel * sizeof(float));
            if ((rc = put_values(to, b, pad, ti->offset, ti->numel, err)) < 0) goto out;
        }
    }
out:
    free(pad);
    free(found);
    pile_st_close(f);
    pile_buf_free(&path);
    pile_buf_free(&tmp);
    return rc;
}

/* The fp16 loss scaler's state from trainer_state.json. A checkpoint
 * without one (written by an fp32 or bf16 run, or an older version)
 * leaves the scaler as created: the run's configured start. */
static int load_scaler(const char *dir, pile_loss_scaler *ls, pile_err *err)
{
    pile_json *j = NULL;
    PILE_FORWARD_IF_ERR(read_json(dir, "trainer_state.json", &j, err));
    const pile_json *state = pile_json_get(j, "loss_scaler");
    int rc = 0;
    if (state) {
        pile_buf where = {0};
        pile_fs_join(&where, dir, "trainer_state.json");
        rc = where.data ? pile_loss_scaler_state_from_json(ls, state, where.data, err) : OOM(err);
        pile_buf_free(&where);
    }
    pile_json_free(j);
    return rc;
}

/* The moments from the ranks' shard files of a run sharded over w ranks
 * (any w, any stage: each rank here takes the parts of every file that
 * meet its own shard). Every file of the run must be there and hold its
 * range whole: PILE_EMISMATCH naming the first that is not. */
static int load_shards(const char *dir, pile_model *m, pile_optim *opt, pile_err *err)
{
    name_list files = {0};
    pile_buf path = {0};
    pile_st_file *f = NULL;
    int rc = list_files(dir, "", 0, &files, err), w = 0;
    for (size_t i = 0; !rc && i < files.n; i++) {
        int r, k, end = 0;
        if (sscanf(files.v[i], "optimizer-%5d-of-%5d.safetensors%n", &r, &k, &end) == 2 && end &&
            !files.v[i][end] && k > 0) {
            w = k;
            break;
        }
    }
    if (!rc && !w)
        rc = pile_err_set(err, PILE_EMISMATCH, "no optimizer state in '%s' (optimizer.safetensors or a rank's "
                                               "optimizer-*-of-*.safetensors)", dir);
    const size_t n = pile_model_flat_size(m);
    for (int r = 0; !rc && r < w; r++) {
        size_t lo, hi;
        shard_range(n, r, w, &lo, &hi);
        if ((rc = shard_name(&path, dir, r, w, err)) || (rc = pile_st_open(&f, path.data, err))) break;
        static const char *const names[] = {"m", "v"};
        for (int b = 0; !rc && b < 2; b++) {
            const pile_st_tensor *t = pile_st_find(f, names[b]);
            if (!t || t->ndim != 1 || t->shape[0] != (int64_t)(hi - lo))
                rc = pile_err_set(err, PILE_EMISMATCH,
                                  "'%s' does not hold '%s' as %zu values (elements %zu to %zu of a model of %zu, "
                                  "rank %d of %d)",
                                  path.data, names[b], hi - lo, lo, hi, n, r, w);
            else rc = pile_optim_put(opt, b ? PILE_OPTIM_V : PILE_OPTIM_M, t->data, lo, hi - lo, err);
        }
        pile_st_close(f);
        f = NULL;
    }
    names_free(&files);
    pile_buf_free(&path);
    return rc;
}

int pile_checkpoint_load(const char *dir, pile_model *m, pile_optim *opt, pile_train_state *st, pile_err *err)
{
    pile_train_state state = {0};
    if (opt || st) PILE_FORWARD_IF_ERR(read_state(dir, &state, err));
    static const char *const model_prefix[] = {""};
    /* with an optimizer the weights are its master weights (the part
     * this rank keeps), which it then writes into the model's compute
     * parameters */
    static const pile_optim_state master[] = {PILE_OPTIM_MASTER}, moments[] = {PILE_OPTIM_M, PILE_OPTIM_V};
    const put_target weights = {m, opt, master}, moment_to = {m, opt, moments};
    PILE_FORWARD_IF_ERR(load_table(dir, "model.safetensors", &weights, model_prefix, 1, err));
    if (opt) {
        static const char *const moment_prefix[] = {"m.", "v."};
        pile_buf one = {0};
        int rc = path_of(&one, dir, "optimizer.safetensors", err);
        const int consolidated = !rc && access(one.data, F_OK) == 0;
        pile_buf_free(&one);
        if (rc) return rc;
        if (consolidated) PILE_FORWARD_IF_ERR(load_table(dir, "optimizer.safetensors", &moment_to, moment_prefix, 2, err));
        else PILE_FORWARD_IF_ERR(load_shards(dir, m, opt, err));
        PILE_FORWARD_IF_ERR(pile_optim_update_model(opt, err));
        pile_loss_scaler *ls = pile_optim_loss_scaler(opt);
        if (ls) PILE_FORWARD_IF_ERR(load_scaler(dir, ls, err));
        /* the steps applied: fp16's skipped steps did not count */
        pile_optim_set_steps(opt, state.step - (ls ? pile_loss_scaler_skipped(ls) : 0));
    }
    if (st) *st = state;
    return 0;
}

int pile_checkpoint_read_state(const char *dir, pile_train_state *st, pile_err *err)
{
    return read_state(dir, st, err);
}

/* trainer_state.json's `key` as JSON text into out; PILE_ENOENT when
 * absent, null, or not an object where one is needed. */
static int state_key_json(const char *dir, const char *key, int need_object, pile_buf *out, pile_err *err)
{
    pile_json *j = NULL;
    PILE_FORWARD_IF_ERR(read_json(dir, "trainer_state.json", &j, err));
    const pile_json *c = pile_json_get(j, key);
    int rc = 0;
    if (!c || pile_json_type_of(c) == PILE_JSON_NULL || (need_object && pile_json_type_of(c) != PILE_JSON_OBJECT)) {
        rc = need_object && !strcmp(key, "config")
                 ? pile_err_set(err, PILE_ENOENT, "no configuration in the trainer_state.json of '%s'", dir)
                 : pile_err_set(err, PILE_ENOENT, "no '%s' in the trainer_state.json of '%s'", key, dir);
    } else {
        json_dump(out, c);
        pile_buf_append(out, "\n", 1);
        if (out->failed || pile_buf_reserve(out, 1)) rc = OOM(err);
        else out->data[out->len] = '\0';
    }
    pile_json_free(j);
    return rc;
}

int pile_checkpoint_read_state_json(const char *dir, const char *key, pile_buf *out, pile_err *err)
{
    return state_key_json(dir, key, 0, out, err);
}

int pile_checkpoint_read_config_json(const char *dir, pile_buf *out, pile_err *err)
{
    return state_key_json(dir, "config", 1, out, err);
}

int pile_checkpoint_tokenizer_spec(const char *dir, pile_buf *out, pile_err *err)
{
    pile_buf tdir = {0}, p = {0};
    int rc = path_of(&tdir, dir, "tokenizer", err);
    if (rc) return rc;
    int found = 0;
    if (!path_of(&p, tdir.data, "encoder.json", err) && is_file(p.data) && !path_of(&p, tdir.data, "vocab.bpe", err) &&
        is_file(p.data)) {
        found = 1;
        rc = pile_buf_append(out, tdir.data, tdir.len);
    }
    DIR *d = found ? NULL : opendir(tdir.data);
    if (d) {
        struct dirent *e;
        while (!found && (e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.' || strcmp(e->d_name, "tokenizer_spec.txt") == 0) continue;
            if (path_of(&p, tdir.data, e->d_name, err)) break;
            if (is_file(p.data) && !strstr(e->d_name, ".tmp")) {
                found = 1;
                rc = pile_buf_append(out, p.data, p.len);
            }
        }
        closedir(d);
    }
    /* a folder from transformers' save_pretrained has no trainer_state.json:
     * the tokenizer.json tokenizer.save_pretrained writes beside the model */
    int state = !found && !path_of(&p, dir, "trainer_state.json", err) && is_file(p.data);
    if (!found && !state && !path_of(&p, dir, "tokenizer.json", err) && is_file(p.data)) {
        found = 1;
        rc = pile_buf_append(out, p.data, p.len);
    }
    if (!found && !state) {
        rc = pile_err_set(err, PILE_ENOENT,
                          "no tokenizer in '%s' (no tokenizer/, tokenizer.json or trainer_state.json): give --tokenizer",
                          dir);
    } else if (!found) {
        pile_train_state st;
        rc = read_state(dir, &st, err);
        if (!rc) rc = pile_buf_append_str(out, is_builtin_spec(st.tokenizer_spec) ? "bytes" : st.tokenizer_spec);
    }
    if (!rc && (out->failed || pile_buf_reserve(out, 1))) rc = PILE_ENOMEM;
    if (rc == PILE_ENOMEM) rc = OOM(err);
    if (!rc) out->data[out->len] = '\0';
    pile_buf_free(&tdir);
    pile_buf_free(&p);
    return rc;
}

/* ------------------------------------------------------------- latest */

/* The step recorded in a checkpoint folder, or -1 if it is not one. */
static int64_t folder_step(const char *path)
{
    pile_json *j = NULL;
    pile_err ignored;
    int64_t step = -1;
    if (read_json(path, "trainer_state.json", &j, &ignored) == 0 && (!get_int(j, "step", &step) || step < 0)) step = -1;
    pile_json_free(j);
    return step;
}

static int numbered(const char *name)
{
    const char *digits = strncmp(name, "epoch-", 6) == 0 ? name + 6 : strncmp(name, "step-", 5) == 0 ? name + 5 : NULL;
    if (!digits || !*digits) return 0;
    for (; *digits; digits++)
        if (*digits < '0' || *digits > '9') return 0;
    return 1;
}

/* The folder name "latest" holds, trimmed and checked (no '/', not "." or
 * ".."), NUL-terminated in name: 1; 0 when there is no usable name. */
static int read_latest_name(const char *checkpoint_dir, pile_buf *name)
{
    pile_buf path = {0};
    pile_err ignored;
    int found = 0;
    name->len = 0;
    if (!pile_fs_join(&path, checkpoint_dir, "latest") && pile_fs_read_file(path.data, name, &ignored) == 0) {
        while (name->len && (name->data[name->len - 1] == '\n' || name->data[name->len - 1] == '\r' ||
                             name->data[name->len - 1] == ' '))
            name->len--;
        found = name->len && !memchr(name->data, '/', name->len) && !memchr(name->data, '\0', name->len) &&
                !pile_buf_append(name, "", 1) && strcmp(name->data, ".") && strcmp(name->data, "..");
    }
    pile_buf_free(&path);
    return found;
}

int pile_checkpoint_find_latest(const char *checkpoint_dir, pile_buf *out, pile_err *err)
{
    pile_buf path = {0}, line = {0}, best = {0};
    int rc = 0;
    if (read_latest_name(checkpoint_dir, &line)) {
        rc = path_of(&path, checkpoint_dir, line.data, err);
        if (!rc && folder_step(path.data) >= 0) {
            rc = pile_buf_append(out, path.data, path.len + 1) ? OOM(err) : 0;
            if (!rc) out->len--;
            goto out;
        }
        if (rc) goto out;
    }
    /* "latest" missing or stale: the highest step among epoch-* and step-*
     * (ties to the greater name, so the choice does not depend on readdir) */
    DIR *d = opendir(checkpoint_dir);
    if (!d) {
        rc = pile_err_sys(err, PILE_ENOENT, errno, "no checkpoint in '%s'", checkpoint_dir);
        goto out;
    }
    int64_t best_step = -1;
    pile_buf best_name = {0};
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!numbered(e->d_name)) continue;
        if (path_of(&path, checkpoint_dir, e->d_name, err)) {
            rc = PILE_ENOMEM;
            break;
        }
        int64_t s = folder_step(path.data);
        if (s < 0) continue;
        if (s > best_step || (s == best_step && strcmp(e->d_name, best_name.data) > 0)) {
            best_step = s;
            best_name.len = 0;
            best.len = 0;
            if (pile_buf_append(&best_name, e->d_name, strlen(e->d_name) + 1) ||
                pile_buf_append(&best, path.data, path.len + 1)) {
                rc = OOM(err);
                break;
            }
        }
    }
    closedir(d);
    pile_buf_free(&best_name);
    if (rc) goto out;
    if (best_step < 0) {
        rc = pile_err_set(err, PILE_ENOENT, "no checkpoint in '%s'", checkpoint_dir);
        goto out;
    }
    rc = pile_buf_append(out, best.data, best.len) ? OOM(err) : 0;
    if (!rc) out->len--;
out:
    pile_buf_free(&path);
    pile_buf_free(&line);
    pile_buf_free(&best);
    return rc;
}

/* ------------------------------------------------------------- resume */

static void note(pile_buf *notes, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(pile_buf *notes, const char *fmt, ...)
{
    if (!notes) return;
    char line[PILE_ERR_MSG_MAX + 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    pile_buf_append_str(notes, line);
    pile_buf_append_str(notes, "\n");
}

typedef struct candidate {
    char *name;
    int64_t step;
} candidate;

typedef struct cand_list {
    candidate *v;
    size_t n, cap;
} cand_list;

static int cands_push(cand_list *l, const char *name, int64_t step)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        candidate *v = realloc(l->v, cap * sizeof *v);
        if (!v) return PILE_ENOMEM;
        l->v = v;
        l->cap = cap;
    }
    if (!(l->v[l->n].name = strdup(name))) return PILE_ENOMEM;
    l->v[l->n++].step = step;
    return 0;
}

static void cands_free(cand_list *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->v[i].name);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* Newest first: higher step, then the greater name. */
static int by_step_desc(const void *a, const void *b)
{
    const candidate *x = a, *y = b;
    if (x->step != y->step) return x->step > y->step ? -1 : 1;
    return -strcmp(x->name, y->name);
}

int pile_checkpoint_find_resumable(const char *checkpoint_dir, pile_buf *out, pile_buf *notes, pile_err *err)
{
    pile_buf latest = {0}, path = {0};
    cand_list cl = {0};
    int rc = 0, have_latest = read_latest_name(checkpoint_dir, &latest);
    DIR *d = opendir(checkpoint_dir);
    if (!d) {
        rc = pile_err_sys(err, PILE_ENOENT, errno, "no checkpoint in '%s'", checkpoint_dir);
        goto out;
    }
    /* Candidates: "latest"'s folder first (step INT64_MAX puts it there),
     * then every epoch-* and step-* with a readable state, newest first. */
    int latest_seen = 0;
    struct dirent *e;
    while (!rc && (e = readdir(d)) != NULL) {
        int is_latest = have_latest && !strcmp(e->d_name, latest.data);
        if (!numbered(e->d_name) && !is_latest) continue;
        if ((rc = path_of(&path, checkpoint_dir, e->d_name, err))) break;
        if (!pile_fs_is_dir(path.data)) continue;
        latest_seen |= is_latest;
        int64_t s = folder_step(path.data);
        if (s < 0) {
            note(notes, "'%s' has no readable trainer_state.json (an incomplete folder): skipped", path.data);
            continue;
        }
        if (cands_push(&cl, e->d_name, is_latest ? INT64_MAX : s)) rc = OOM(err);
    }
    closedir(d);
    if (rc) goto out;
    if (have_latest && !latest_seen)
        note(notes, "'%s/latest' names '%s', which does not exist: looking for the newest checkpoint instead",
             checkpoint_dir, latest.data);
    const candidate *c = cl.v;
    const size_t n = cl.n;
    if (n > 1) qsort(cl.v, n, sizeof *cl.v, by_step_desc);
    /* after a failure only older steps are candidates: newer ones belong
     * to a run that a rollback discarded (a "latest" that cannot be read
     * still tells its step by a step-N name) */
    int64_t limit = INT64_MAX;
    if (have_latest && (n == 0 || c[0].step != INT64_MAX) && !strncmp(latest.data, "step-", 5) &&
        numbered(latest.data))
        limit = strtoll(latest.data + 5, NULL, 10);
    pile_err first = {0};
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        if ((rc = path_of(&path, checkpoint_dir, c[i].name, err))) goto out;
        int64_t step = c[i].step == INT64_MAX ? folder_step(path.data) : c[i].step;
        if (step > limit) continue;
        pile_err why;
        int v = pile_checkpoint_verify(path.data, &why);
        if (v == PILE_ENOMEM) {
            rc = pile_err_set(err, PILE_ENOMEM, "%s", why.msg);
            goto out;
        }
        if (v == 0 || v == PILE_ENOENT) {
            if (v == PILE_ENOENT) note(notes, "%s", why.msg);
            if (failed)
                note(notes, "resuming from '%s' (step %lld), the newest checkpoint that passes its checks", path.data,
                     (long long)step);
            rc = pile_buf_append(out, path.data, path.len + 1) ? OOM(err) : 0;
            if (!rc) out->len--;
            goto out;
        }
        note(notes, "%s: skipped", why.msg);
        if (!failed) first = why;
        failed = 1;
        if (step < limit) limit = step;
    }
    if (failed)
        rc = pile_err_set(err, first.code, "%s; no older checkpoint in '%s' passes its checks", first.msg,
                          checkpoint_dir);
    else rc = pile_err_set(err, PILE_ENOENT, "no checkpoint in '%s'", checkpoint_dir);
out:
    cands_free(&cl);
    pile_buf_free(&latest);
    pile_buf_free(&path);
    return rc;
}

int pile_checkpoint_find_step(const char *checkpoint_dir, int64_t step, pile_buf *out, pile_err *err)
{
    DIR *d = opendir(checkpoint_dir);
    if (!d) return pile_err_sys(err, PILE_ENOENT, errno, "cannot list folder '%s'", checkpoint_dir);
    pile_buf path = {0}, best = {0};
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!numbered(e->d_name)) continue;
        if ((rc = path_of(&path, checkpoint_dir, e->d_name, err))) break;
        if (folder_step(path.data) == step && (!best.len || strcmp(path.data, best.data) > 0)) {
            best.len = 0;
            if (pile_buf_append(&best, path.data, path.len + 1)) {
                rc = OOM(err);
                break;
            }
        }
    }
    closedir(d);
    if (!rc && !best.len) rc = pile_err_set(err, PILE_ENOENT, "no checkpoint of step %lld in '%s'", (long long)step,
                                            checkpoint_dir);
    if (!rc && pile_buf_append(out, best.data, best.len)) rc = OOM(err);
    if (!rc) out->len--;
    pile_buf_free(&path);
    pile_buf_free(&best);
    return rc;
}

/* A folder name the trainer writes: epoch-N, step-N, best_model,
 * best_model-discarded. */
static int ours(const char *name, size_t len)
{
    char tmp[64];
    if (len >= sizeof tmp) return 0;
    memcpy(tmp, name, len);
    tmp[len] = '\0';
    return numbered(tmp) || !strcmp(tmp, "best_model") || !strcmp(tmp, "best_model-discarded");
}

static int ends_with(const char *s, const char *tail, size_t *head)
{
    size_t n = strlen(s), t = strlen(tail);
    if (n <= t || strcmp(s + n - t, tail)) return 0;
    *head = n - t;
    return 1;
}

int pile_checkpoint_clean(const char *checkpoint_dir, pile_buf *notes, pile_err *err)
{
    DIR *d = opendir(checkpoint_dir);
    if (!d) return errno == ENOENT ? 0 : pile_err_sys(err, PILE_EIO, errno, "cannot list folder '%s'", checkpoint_dir);
    pile_buf path = {0}, base = {0};
    int rc = 0;
    struct dirent *e;
    while (!rc && (e = readdir(d)) != NULL) {
        size_t head;
        int tmp = ends_with(e->d_name, ".tmp", &head);
        int old = !tmp && ends_with(e->d_name, ".old", &head);
        if (!((tmp || old) && (ours(e->d_name, head) || (tmp && head == 6 && !strncmp(e->d_name, "latest", 6)))))
            continue;
        base.len = 0;
        if (path_of(&path, checkpoint_dir, e->d_name, err) || pile_buf_printf(&base, "%s", path.data)) {
            rc = OOM(err);
            break;
        }
        base.data[base.len - 4] = '\0';
        if (old && !pile_fs_is_dir(base.data)) {
            if (rename(path.data, base.data) != 0)
                rc = pile_err_sys(err, PILE_EIO, errno, "cannot rename '%s' to '%s'", path.data, base.data);
            else note(notes, "restored '%s' from '%s', left by a run killed while replacing it", base.data, path.data);
        } else if ((rc = rm_tree(path.data, err)) == 0) {
            note(notes, "removed '%s', left by a run killed while %s", path.data,
                 tmp ? "writing it" : "replacing the folder beside it");
        }
    }
    closedir(d);
    pile_buf_free(&path);
    pile_buf_free(&base);
    return rc;
}

int pile_checkpoint_remove(const char *dir, pile_err *err)
{
    struct stat sb;
    if (lstat(dir, &sb) != 0) return errno == ENOENT ? 0 : pile_err_sys(err, PILE_EIO, errno, "cannot stat '%s'", dir);
    pile_buf gone = {0};
    int rc = pile_buf_printf(&gone, "%s.tmp", dir) ? OOM(err) : rm_tree(gone.data, err);
    if (!rc && rename(dir, gone.data) != 0) rc = pile_err_sys(err, PILE_EIO, errno, "cannot rename '%s' to '%s'", dir, gone.data);
    if (!rc) rc = rm_tree(gone.data, err);
    pile_buf_free(&gone);
    return rc;
}

int pile_checkpoint_prune(const char *checkpoint_dir, int64_t keep, int64_t step, pile_buf *notes, pile_err *err)
{
    if (keep < 1) return pile_err_set(err, PILE_EINVAL, "cannot keep %lld checkpoints: at least 1", (long long)keep);
    DIR *d = opendir(checkpoint_dir);
    if (!d) return pile_err_sys(err, PILE_EIO, errno, "cannot list folder '%s'", checkpoint_dir);
    cand_list cl = {0};
    int rc = 0;
    struct dirent *e;
    while (!rc && (e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "step-", 5) || !numbered(e->d_name)) continue;
        errno = 0;
        long long s = strtoll(e->d_name + 5, NULL, 10);
        if (!errno && s <= step && cands_push(&cl, e->d_name, s)) rc = OOM(err);
    }
    closedir(d);
    if (cl.n > 1) qsort(cl.v, cl.n, sizeof *cl.v, by_step_desc);
    pile_buf path = {0};
    for (size_t i = (size_t)keep; !rc && i < cl.n; i++) {
        if ((rc = path_of(&path, checkpoint_dir, cl.v[i].name, err))) break;
        if (pile_fs_is_dir(path.data) && (rc = pile_checkpoint_remove(path.data, err)) == 0)
            note(notes, "deleted '%s' (save_total_limit %lld)", path.data, (long long)keep);
    }
    cands_free(&cl);
    pile_buf_free(&path);
    return rc;
}
