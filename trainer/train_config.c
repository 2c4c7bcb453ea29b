/* pile-trainer's configuration. One table of fields (name, type, range,
 * offset, help) drives JSON loading, flag parsing, to_json, --help and the
 * range checks, so a new setting is one line here and one in the struct;
 * DeepSpeed's ds_config.json is mapped onto the same fields by name. */
#include "train_config.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "model.h"
#include "pile_json.h"

typedef enum ftype { T_STR, T_INT, T_I64, T_U64, T_DBL, T_FLT, T_BOOL, T_PREC } ftype;

/* Range of the integer fields, checked wherever a value comes in.
 * R_LIMIT: non-negative, and -1 (Hugging Face's "no limit", as its saved
 * TrainingArguments write max_steps) is read as 0. */
enum { R_ANY = 0, R_POS = 1, R_NONNEG = 2, R_LIMIT = 3 };

typedef struct field {
    const char *name;
    const char *flag; /* command-line name when it differs from name */
    ftype type;
    int range;
    size_t off, size;
    const char *help;
} field;

#define FIELD(n, flag, t, r, help) \
    { #n, flag, t, r, offsetof(pile_train_config, n), sizeof(((pile_train_config *)0)->n), help }

/* In struct order: to_json writes them in this order. */
static const field fields[] = {
    FIELD(data, NULL, T_STR, R_ANY,
          "folder of pile-prep shards; several read as one: a comma list, or a folder of partitions "
          "(pile-prep --partition)"),
    FIELD(checkpoint_dir, NULL, T_STR, R_ANY, "run folder: checkpoints, metrics.jsonl, TensorBoard events"),
    FIELD(fallback_dir, NULL, T_STR, R_ANY, "where a checkpoint goes when checkpoint_dir cannot take it (empty: none)"),
    FIELD(config_file, "config", T_STR, R_ANY,
          "JSON config file, applied before the flags; given twice or more, the files apply in order, a later one "
          "winning"),
    FIELD(deepspeed_file, "deepspeed", T_STR, R_ANY, "DeepSpeed ds_config.json, applied after --config"),
    FIELD(tokenizer, NULL, T_STR, R_ANY, "tokenizer spec overriding the shards' manifest (empty: manifest)"),
    FIELD(model, NULL, T_STR, R_ANY, "model preset"),
    FIELD(n_layer, NULL, T_INT, R_NONNEG, "layers (0: the preset's)"),
    FIELD(n_head, NULL, T_INT, R_NONNEG, "attention heads (0: the preset's)"),
    FIELD(n_embd, NULL, T_INT, R_NONNEG, "embedding width (0: the preset's)"),
    FIELD(dropout, NULL, T_FLT, R_ANY, "dropout on the embeddings and each residual branch"),
    FIELD(max_length, NULL, T_INT, R_NONNEG, "tokens per sample (0: the shards' max_length)"),
    FIELD(doc_mask, NULL, T_BOOL, R_ANY, "no attention across document starts"),
    FIELD(doc_mask_loss, NULL, T_BOOL, R_ANY, "no loss on a document's first token (needs doc_mask)"),
    FIELD(batch_size, NULL, T_INT, R_POS, "rows per micro-batch"),
    FIELD(accumulation_steps, NULL, T_INT, R_POS, "micro-batches per optimizer step"),
    FIELD(learning_rate, NULL, T_DBL, R_ANY, "peak learning rate"),
    FIELD(min_lr, NULL, T_DBL, R_ANY, "final learning rate of the cosine decay (< 0: learning_rate / 10)"),
    FIELD(epochs, NULL, T_INT, R_POS, "passes over the train samples"),
    FIELD(max_steps, NULL, T_I64, R_LIMIT,
          "stop after this many optimizer steps and schedule over them (0 or -1: the epochs decide)"),
    FIELD(warmup_ratio, NULL, T_DBL, R_ANY, "share of the steps spent warming up"),
    FIELD(warmup_steps, NULL, T_I64, R_NONNEG, "warmup steps; > 0 wins over warmup_ratio"),
    FIELD(weight_decay, NULL, T_DBL, R_ANY, "AdamW weight decay"),
    FIELD(decay_all, NULL, T_BOOL, R_ANY, "weight decay on biases, norms and embeddings too"),
    FIELD(adam_beta1, NULL, T_DBL, R_ANY, "AdamW beta1"),
    FIELD(adam_beta2, NULL, T_DBL, R_ANY, "AdamW beta2"),
    FIELD(adam_epsilon, NULL, T_DBL, R_ANY, "AdamW epsilon"),
    FIELD(gradient_clipping, NULL, T_DBL, R_ANY, "clip the gradient norm to this (<= 0: no clipping)"),
    FIELD(seed, NULL, T_U64, R_ANY, "seed of the initialisation, data order and dropout"),
    FIELD(eval_interval, NULL, T_I64, R_NONNEG, "optimizer steps between validations (0: epoch ends only)"),
    FIELD(eval_rows, NULL, T_I64, R_NONNEG, "validation rows at most (0: all)"),
    FIELD(val_fraction, NULL, T_DBL, R_ANY, "share of train samples held out when there are no val shards"),
    FIELD(skip_corrupt_rows, NULL, T_BOOL, R_ANY, "leave out and count rows that fail their checksum (default: stop)"),
    FIELD(log_interval, NULL, T_I64, R_POS,
          "steps between progress lines and metrics; each logs the mean train loss of its steps, as HF does"),
    FIELD(save_interval, NULL, T_I64, R_NONNEG, "steps between step-NNNNNNN checkpoints (0: epochs only)"),
    FIELD(save_total_limit, NULL, T_I64, R_NONNEG, "keep the newest N step-* checkpoints (0: all; not best_model, epoch-*)"),
    FIELD(resume, NULL, T_BOOL, R_ANY, "continue from the newest checkpoint in checkpoint_dir that passes its checks"),
    FIELD(allow_data_change, NULL, T_BOOL, R_ANY, "let --resume continue on shards other than the checkpoint's"),
    FIELD(backend, NULL, T_STR, R_ANY,
          "compute backend: cpu, cuda, or auto (cuda when this build has it and a device is usable, else cpu); "
          "devsim and devsim16 (16-bit tensors, as a device stores them) are for testing: the cpu's operations "
          "on memory the host cannot read, the host side of a device run checked without a device (several "
          "ranks: through the devsim communicator, which takes device buffers only, as nccl)"),
    FIELD(threads, NULL, T_INT, R_NONNEG, "threads (0: every usable core; more are capped at that, with a warning)"),
    FIELD(peak_tflops, NULL, T_DBL, R_ANY,
          "the device's peak TFLOP/s for MFU (train/mfu): 0 looks it up by the GPU's name (A100, H100, H200); "
          "the cpu shows no MFU unless given"),
    FIELD(precision, NULL, T_PREC, R_ANY,
          "fp32, bf16 or fp16 (the cpu backend emulates both 16-bit modes: fp32 rounded where a GPU stores "
          "16 bits); fp16 "
          "scales the loss as DeepSpeed does: a step that overflows is skipped, counted by max_steps but not "
          "by the schedule"),
    FIELD(skip_memory_check, NULL, T_BOOL, R_ANY,
          "start a run the memory planner says does not fit in the host's available memory (default: refuse)"),
    FIELD(recompute, NULL, T_STR, R_ANY,
          "none, gelu (the MLP's c_fc output and GELU) or block (all of a block but its output): recomputed in "
          "the backward instead of kept; less memory, the same results"),
    FIELD(world_size, NULL, T_INT, R_POS,
          "processes training together: the launcher's (mpirun, srun, torchrun), else 1; another is refused"),
    FIELD(dist_timeout, NULL, T_DBL, R_ANY,
          "seconds a rank waits for its peers (the rendezvous, each collective) before it fails, naming the call "
          "and the peer, instead of hanging"),
    FIELD(zero_stage, "zero", T_INT, R_NONNEG,
          "ZeRO stage: 0 replicated, 1 optimizer state sharded over the ranks, 2 gradients too, 3 parameters too "
          "(every stage on GPUs too, over nccl: checked on devsim ranks, never run on GPUs)"),
    FIELD(offload_optimizer, NULL, T_BOOL, R_ANY,
          "master weights, moments and gradient shard in host memory, AdamW there (ZeRO 1 to 3; --offload optimizer)"),
    FIELD(offload_param, NULL, T_BOOL, R_ANY, "ZeRO 3: the parameter shard in host memory too (--offload all)"),
    FIELD(reduce_bucket_size, NULL, T_I64, R_POS,
          "gradient elements per rank reduced at once (ZeRO 0: allreduced in buckets of world_size x this); a "
          "bucket smaller than a rank's share is what lets the reduction overlap the backward"),
    FIELD(stage3_prefetch_bucket_size, NULL, T_I64, R_NONNEG,
          "ZeRO 3: a layer of at most this many parameters is gathered while the one before computes (0: none)"),
    FIELD(overlap_comm, NULL, T_BOOL, R_ANY,
          "several ranks: gradient buckets reduced while the backward computes earlier layers and ZeRO 3 gathers "
          "the next layer during this one (host memory: on a thread of their own; GPUs: on the backend's comm "
          "stream, where every collective runs with or without it); the same results either way"),
    FIELD(loss_scale, NULL, T_DBL, R_ANY, "fp16 static loss scale (0: dynamic)"),
    FIELD(initial_scale_power, NULL, T_INT, R_NONNEG, "fp16 dynamic loss scale starts at 2^this (0 to 127)"),
    FIELD(loss_scale_window, NULL, T_INT, R_POS, "fp16 steps without overflow before the scale doubles"),
    FIELD(hysteresis, NULL, T_INT, R_POS, "fp16 overflows tolerated before the scale halves"),
    FIELD(consecutive_hysteresis, NULL, T_BOOL, R_ANY, "fp16: every step without overflow refills the hysteresis"),
    FIELD(min_loss_scale, NULL, T_DBL, R_ANY, "fp16 smallest dynamic loss scale"),
};
#define N_FIELDS (sizeof fields / sizeof fields[0])

/* Names from Hugging Face TrainingArguments that users bring along, read
 * as the field they mean (in JSON configs and as flags). */
static const struct {
    const char *alias, *name;
} aliases[] = {
    {"per_device_train_batch_size", "batch_size"},
    {"gradient_accumulation_steps", "accumulation_steps"},
    {"num_train_epochs", "epochs"},
    {"max_grad_norm", "gradient_clipping"},
    {"output_dir", "checkpoint_dir"},
    {"eval_steps", "eval_interval"},
    {"save_steps", "save_interval"},
    {"logging_steps", "log_interval"},
    {"deepspeed", "deepspeed_file"},
};

static void *fptr(pile_train_config *c, const field *f) { return (char *)c + f->off; }
static const void *fcptr(const pile_train_config *c, const field *f) { return (const char *)c + f->off; }

static const field *field_by_name(const char *name)
{
    for (size_t i = 0; i < N_FIELDS; i++)
        if (strcmp(fields[i].name, name) == 0) return &fields[i];
    return NULL;
}

/* A JSON key or normalised flag name: the field name, its flag name, or an alias. */
static const field *field_lookup(const char *name, int as_flag)
{
    const field *f = field_by_name(name);
    if (f) return f;
    if (as_flag)
        for (size_t i = 0; i < N_FIELDS; i++)
            if (fields[i].flag && strcmp(fields[i].flag, name) == 0) return &fields[i];
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (strcmp(aliases[i].alias, name) == 0) return field_by_name(aliases[i].name);
    return NULL;
}

static void warn(pile_buf *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(pile_buf *w, const char *fmt, ...)
{
    if (!w) return;
    char line[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    pile_buf_append_str(w, line);
    pile_buf_append_str(w, "\n");
}

void pile_train_config_defaults(pile_train_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->data, sizeof c->data, "./shards");
    snprintf(c->checkpoint_dir, sizeof c->checkpoint_dir, "./checkpoints");
    snprintf(c->model, sizeof c->model, "tiny");
    snprintf(c->backend, sizeof c->backend, "auto");
    snprintf(c->recompute, sizeof c->recompute, "none");
    c->batch_size = 8;
    c->accumulation_steps = 1;
    c->learning_rate = 6e-4;
    c->min_lr = -1;
    c->epochs = 1;
    c->weight_decay = 0.01;
    c->adam_beta1 = 0.9;
    c->adam_beta2 = 0.999;
    c->adam_epsilon = 1e-8;
    c->gradient_clipping = 1.0;
    c->seed = 42;
    c->val_fraction = 0.01;
    c->log_interval = 1;
    c->precision = PILE_PRECISION_FP32;
    c->world_size = 1;
    c->dist_timeout = 600; /* torch.distributed's default (comm.h: PILE_COMM_TIMEOUT_DEFAULT_S) */
    c->reduce_bucket_size = 500000000; /* DeepSpeed's defaults */
    c->stage3_prefetch_bucket_size = 50000000;
    c->overlap_comm = 0; /* measured slower where no core is spare: bench/RESULTS.md */
    c->initial_scale_power = 16;
    c->loss_scale_window = 1000;
    c->hysteresis = 2;
    c->min_loss_scale = 1;
}

/* ------------------------------------------------------------ setting */

static const char *range_words(int range)
{
    return range == R_POS      ? "a positive integer"
           : range == R_NONNEG ? "a non-negative integer"
           : range == R_LIMIT  ? "a non-negative integer (or -1: no limit)"
                               : "an integer";
}

static int in_range(int range, int64_t v)
{
    return range == R_POS ? v > 0 : range == R_NONNEG ? v >= 0 : range == R_LIMIT ? v >= -1 : 1;
}

/* Stores an integer already checked against the field's range. 0, or 1
 * when it does not fit the field's C type. */
static int store_int(pile_train_config *c, const field *f, int64_t v)
{
    if (f->range == R_LIMIT && v == -1) v = 0;
    if (f->type == T_INT) {
        if (v < INT_MIN || v > INT_MAX) return 1;
        *(int *)fptr(c, f) = (int)v;
    } else if (f->type == T_I64) {
        *(int64_t *)fptr(c, f) = v;
    } else {
        if (v < 0) return 1;
        *(uint64_t *)fptr(c, f) = (uint64_t)v;
    }
    return 0;
}

static int store_str(pile_train_config *c, const field *f, const char *s, size_t n)
{
    if (n >= f->size || memchr(s, '\0', n)) return 1;
    memcpy(fptr(c, f), s, n);
    ((char *)fptr(c, f))[n] = '\0';
    return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!*s || *s < '0' || *s > '9') return 0;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return 0;
    *out = v;
    return 1;
}

static int is_auto(const pile_json *v)
{
    return v && pile_json_type_of(v) == PILE_JSON_STRING && strcmp(pile_json_str(v, NULL), "auto") == 0;
}

/* Sets field f from a JSON value; `file` and `key` name it in errors.
 * With allow_auto the string "auto" leaves the field as it is (DeepSpeed). */
static int set_from_json(pile_train_config *c, const field *f, const pile_json *v, const char *file,
                         const char *key, int allow_auto, pile_err *err)
{
    if (allow_auto && is_auto(v)) return 0;
    pile_json_type t = pile_json_type_of(v);
    switch (f->type) {
    case T_STR: {
        size_t n;
        if (t != PILE_JSON_STRING) return pile_err_set(err, PILE_EINVAL, "'%s': '%s' must be a string", file, key);
        const char *s = pile_json_str(v, &n);
        if (store_str(c, f, s, n))
            return pile_err_set(err, PILE_EINVAL, "'%s': '%s' must be a string without NUL of at most %zu bytes",
                                file, key, f->size - 1);
        return 0;
    }
    case T_INT:
    case T_I64:
    case T_U64: {
        int64_t iv;
        if (f->type == T_U64 && t == PILE_JSON_STRING) {
            /* seeds past 2^63 are written as strings by to_json */
            uint64_t u;
            if (!parse_u64(pile_json_str(v, NULL), &u))
                return pile_err_set(err, PILE_EINVAL, "'%s': '%s' must be an integer", file, key);
            *(uint64_t *)fptr(c, f) = u;
            return 0;
        }
        if (t != PILE_JSON_NUMBER || !pile_json_int(v, &iv))
            return pile_err_set(err, PILE_EINVAL, "'%s': '%s' must be an integer", file, key);
        if (!in_range(f->range, iv) || store_int(c, f, iv))
            return pile_err_set(err, PILE_EINVAL, "'%s': '%s' must be %s, not %" PRId64, file, key,
                                f->type == T_U64 ? "a non-negative integer" : range_words(f->range), iv);
        return 0;
    }
    case T_DBL:
    case T_FLT: {
        if (t != PILE_JSON_NUMBER) return pile_err_set(err, PILE_EINVAL, "'%s': '%s' must be a number", file, key);
        double d = pile_json_num(v);
        if (!isfinite(d) || (f->type == T_FLT && !isfinite((float)d)))
            return pile_err_set(err, PILE_EINVAL, "'%s': '%s' must be a finite number", file, key);
        if (f->type == T_DBL) *(double *)fptr(c, f) = d;
        else *(float *)fptr(c, f) = (float)d;
        return 0;
    }
    case T_BOOL:
        if (t != PILE_JSON_BOOL) return pile_err_set(err, PILE_EINVAL, "'%s': '%s' must be true or false", file, key);
        *(int *)fptr(c, f) = pile_json_bool(v) ? 1 : 0;
        return 0;
    case T_PREC:
        if (t != PILE_JSON_STRING || !pile_precision_parse(pile_json_str(v, NULL), (pile_precision *)fptr(c, f)))
            return pile_err_set(err, PILE_EINVAL, "'%s': '%s' must be \"fp32\", \"bf16\" or \"fp16\"", file, key);
        c->precision_given = 1;
        return 0;
    }
    return 0;
}

static int parse_bool(const char *s, int *out)
{
    if (!strcmp(s, "true") || !strcmp(s, "1") || !strcmp(s, "yes")) *out = 1;
    else if (!strcmp(s, "false") || !strcmp(s, "0") || !strcmp(s, "no")) *out = 0;
    else return 0;
    return 1;
}

/* Sets field f from a flag's value; `flag` is the flag as typed. */
static int set_from_string(pile_train_config *c, const field *f, const char *flag, const char *s, pile_err *err)
{
    switch (f->type) {
    case T_STR:
        if (store_str(c, f, s, strlen(s)))
            return pile_err_set(err, PILE_EINVAL, "%s: '%s' is longer than %zu bytes", flag, s, f->size - 1);
        return 0;
    case T_INT:
    case T_I64: {
        const char *p = *s == '-' ? s + 1 : s;
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (*p < '0' || *p > '9' || errno || *end || !in_range(f->range, v) || store_int(c, f, v))
            return pile_err_set(err, PILE_EINVAL, "%s: '%s' is not %s", flag, s, range_words(f->range));
        return 0;
    }
    case T_U64:
        if (!parse_u64(s, (uint64_t *)fptr(c, f)))
            return pile_err_set(err, PILE_EINVAL, "%s: '%s' is not a non-negative integer", flag, s);
        return 0;
    case T_DBL:
    case T_FLT: {
        char *end;
        errno = 0;
        double d = strtod(s, &end);
        if (!*s || *end || end == s || !isfinite(d) || (f->type == T_FLT && !isfinite((float)d)) ||
            (*s == ' ' || *s == '\t'))
            return pile_err_set(err, PILE_EINVAL, "%s: '%s' is not a number", flag, s);
        if (f->type == T_DBL) *(double *)fptr(c, f) = d;
        else *(float *)fptr(c, f) = (float)d;
        return 0;
    }
    case T_BOOL:
        if (!parse_bool(s, (int *)fptr(c, f)))
            return pile_err_set(err, PILE_EINVAL, "%s: '%s' is not true or false", flag, s);
        return 0;
    case T_PREC:
        if (!pile_precision_parse(s, (pile_precision *)fptr(c, f)))
            return pile_err_set(err, PILE_EINVAL, "%s: '%s' is not fp32, bf16 or fp16", flag, s);
        c->precision_given = 1;
        return 0;
    }
    return 0;
}

/* ---------------------------------------------------------------- JSON */

static int open_object(const char *path, pile_json **root, pile_err *err)
{
    int rc = pile_json_parse_file(path, root, err);
    if (rc < 0) return rc;
    if (pile_json_type_of(*root) != PILE_JSON_OBJECT) {
        pile_json_free(*root);
        *root = NULL;
        return pile_err_set(err, PILE_EINVAL, "'%s': not a JSON object", path);
    }
    return 0;
}

/* Hugging Face's TrainingArguments booleans "bf16" and "fp16" (also flags
 * --bf16, --fp16): true sets the precision, false is their default and
 * changes nothing. hf[0] is bf16, hf[1] fp16: 1, 0, or -1 when absent.
 * `names` spells the two keys and "precision" as the source does; a
 * precision the same source names otherwise (precision_given) is refused
 * rather than one of the two silently winning. */
static int apply_hf_precision(pile_train_config *c, const int hf[2], int precision_given, const char *where,
                              const char *const names[3], pile_err *err)
{
    if (hf[0] == 1 && hf[1] == 1)
        return pile_err_set(err, PILE_EINVAL, "%s%s and %s are both enabled", where, names[0], names[1]);
    if (hf[0] != 1 && hf[1] != 1) return 0;
    pile_precision p = hf[0] == 1 ? PILE_PRECISION_BF16 : PILE_PRECISION_FP16;
    if (precision_given && c->precision != p)
        return pile_err_set(err, PILE_EINVAL, "%s%s is enabled but %s is %s", where, names[hf[1] == 1],
                            names[2], pile_precision_name(c->precision));
    c->precision = p;
    c->precision_given = 1;
    return 0;
}

/* 0 = bf16, 1 = fp16, -1 = neither name */
static int hf_precision_key(const char *key)
{
    return !strcmp(key, "bf16") ? 0 : !strcmp(key, "fp16") ? 1 : -1;
}

int pile_train_config_load_json(pile_train_config *c, const char *path, pile_buf *warnings, pile_err *err)
{
    pile_json *root;
    int rc = open_object(path, &root, err);
    if (rc < 0) return rc;
    /* all or nothing: a bad value leaves *c as it was */
    pile_train_config t = *c;
    int hf[2] = {-1, -1}, precision_given = 0;
    /* the key that set each field: a second one (an alias, or the same key
     * again) would silently win, so the file is refused */
    const char *set_by[N_FIELDS] = {0};
    for (size_t i = 0; i < pile_json_size(root) && rc == 0; i++) {
        const char *key = pile_json_key_at(root, i, NULL);
        const pile_json *v = pile_json_at(root, i);
        int k = hf_precision_key(key);
        if (k >= 0) {
            if (pile_json_type_of(v) != PILE_JSON_BOOL)
                rc = pile_err_set(err, PILE_EINVAL, "'%s': '%s' must be true or false", path, key);
            else hf[k] = pile_json_bool(v);
            continue;
        }
        const field *f = field_lookup(key, 0);
        if (!f) {
            warn(warnings, "'%s': unknown key '%s' ignored", path, key);
            continue;
        }
        precision_given |= f->type == T_PREC;
        const char **first = &set_by[f - fields];
        if (*first && !strcmp(*first, key))
            rc = pile_err_set(err, PILE_EINVAL, "'%s': '%s' is given twice; keep one", path, key);
        else if (*first)
            rc = pile_err_set(err, PILE_EINVAL, "'%s': '%s' and '%s' both set %s; keep one", path, *first, key,
                              f->name);
        else
            rc = set_from_json(&t, f, v, path, key, 0, err);
        *first = key;
    }
    pile_json_free(root);
    if (rc == 0) {
        char where[1100];
        snprintf(where, sizeof where, "'%s': ", path);
        static const char *const names[3] = {"'bf16'", "'fp16'", "'precision'"};
        rc = apply_hf_precision(&t, hf, precision_given, where, names, err);
    }
    if (rc == 0) *c = t;
    return rc;
}

/* ----------------------------------------------------------- DeepSpeed */

typedef struct ds_ctx {
    pile_train_config *c;
    const char *path;
    pile_buf *warnings;
    pile_err *err;
} ds_ctx;

static int ds_set(ds_ctx *x, const char *name, const pile_json *v, const char *key)
{
    return set_from_json(x->c, field_by_name(name), v, x->path, key, 1, x->err);
}

static int ds_object(ds_ctx *x, const pile_json *v, const char *key)
{
    if (pile_json_type_of(v) != PILE_JSON_OBJECT)
        return pile_err_set(x->err, PILE_EINVAL, "'%s': '%s' must be an object", x->path, key);
    return 0;
}

static void ds_ignored(ds_ctx *x, const char *prefix, const char *key)
{
    warn(x->warnings, "'%s': key '%s%s' not supported, ignored", x->path, prefix, key);
}

static int ds_optimizer(ds_ctx *x, const pile_json *opt)
{
    PILE_FORWARD_IF_ERR(ds_object(x, opt, "optimizer"));
    for (size_t i = 0; i < pile_json_size(opt); i++) {
        const char *k = pile_json_key_at(opt, i, NULL);
        const pile_json *v = pile_json_at(opt, i);
        if (!strcmp(k, "type")) {
            if (is_auto(v)) continue;
            if (pile_json_type_of(v) != PILE_JSON_STRING)
                return pile_err_set(x->err, PILE_EINVAL, "'%s': 'optimizer.type' must be a string", x->path);
            const char *type = pile_json_str(v, NULL);
            /* DeepSpeed's Adam is AdamW unless adam_w_mode is false */
            if (strcasecmp(type, "adam") && strcasecmp(type, "adamw"))
                warn(x->warnings, "'%s': optimizer '%s' not supported; using AdamW", x->path, type);
        } else if (!strcmp(k, "params")) {
            PILE_FORWARD_IF_ERR(ds_object(x, v, "optimizer.params"));
            for (size_t j = 0; j < pile_json_size(v); j++) {
                const char *pk = pile_json_key_at(v, j, NULL);
                const pile_json *pv = pile_json_at(v, j);
                if (!strcmp(pk, "lr")) {
                    PILE_FORWARD_IF_ERR(ds_set(x, "learning_rate", pv, "optimizer.params.lr"));
                } else if (!strcmp(pk, "eps")) {
                    PILE_FORWARD_IF_ERR(ds_set(x, "adam_epsilon", pv, "optimizer.params.eps"));
                } else if (!strcmp(pk, "weight_decay")) {
                    PILE_FORWARD_IF_ERR(ds_set(x, "weight_decay", pv, "optimizer.params.weight_decay"));
                } else if (!strcmp(pk, "betas")) {
                    if (is_auto(pv)) continue;
                    if (pile_json_type_of(pv) != PILE_JSON_ARRAY || pile_json_size(pv) != 2)
                        return pile_err_set(x->err, PILE_EINVAL,
                                            "'%s': 'optimizer.params.betas' must be an array of two numbers",
                                            x->path);
                    PILE_FORWARD_IF_ERR(ds_set(x, "adam_beta1", pile_json_at(pv, 0), "optimizer.params.betas[0]"));
                    PILE_FORWARD_IF_ERR(ds_set(x, "adam_beta2", pile_json_at(pv, 1), "optimizer.params.betas[1]"));
                } else {
                    ds_ignored(x, "optimizer.params.", pk);
                }
            }
        } else {
            ds_ignored(x, "optimizer.", k);
        }
    }
    return 0;
}

static int ds_scheduler(ds_ctx *x, const pile_json *sch, const pile_json **cos_min_ratio, const pile_json **max_lr)
{
    PILE_FORWARD_IF_ERR(ds_object(x, sch, "scheduler"));
    const pile_json *tv = pile_json_get(sch, "type");
    const char *type = tv && pile_json_type_of(tv) == PILE_JSON_STRING ? pile_json_str(tv, NULL) : NULL;
    if (tv && !type) return pile_err_set(x->err, PILE_EINVAL, "'%s': 'scheduler.type' must be a string", x->path);
    int known = type && (!strcmp(type, "WarmupLR") || !strcmp(type, "WarmupDecayLR") ||
                         !strcmp(type, "WarmupCosineLR") || !strcmp(type, "auto"));
    if (type && !known) {
        warn(x->warnings, "'%s': scheduler '%s' not supported, ignored; using linear warmup and cosine decay",
             x->path, type);
        return 0;
    }
    if (type && !strcmp(type, "WarmupLR"))
        warn(x->warnings, "'%s': scheduler 'WarmupLR' holds the rate after warmup; pile-trainer decays it "
             "(cosine, to min_lr)", x->path);
    if (type && !strcmp(type, "WarmupDecayLR"))
        warn(x->warnings, "'%s': scheduler 'WarmupDecayLR' decays linearly; pile-trainer decays along a cosine",
             x->path);
    for (size_t i = 0; i < pile_json_size(sch); i++) {
        const char *k = pile_json_key_at(sch, i, NULL);
        const pile_json *v = pile_json_at(sch, i);
        if (!strcmp(k, "type")) continue;
        if (strcmp(k, "params")) {
            ds_ignored(x, "scheduler.", k);
            continue;
        }
        PILE_FORWARD_IF_ERR(ds_object(x, v, "scheduler.params"));
        for (size_t j = 0; j < pile_json_size(v); j++) {
            const char *pk = pile_json_key_at(v, j, NULL);
            const pile_json *pv = pile_json_at(v, j);
            if (!strcmp(pk, "warmup_num_steps")) {
                PILE_FORWARD_IF_ERR(ds_set(x, "warmup_steps", pv, "scheduler.params.warmup_num_steps"));
            } else if (!strcmp(pk, "total_num_steps")) {
                PILE_FORWARD_IF_ERR(ds_set(x, "max_steps", pv, "scheduler.params.total_num_steps"));
            } else if (!strcmp(pk, "warmup_max_lr")) {
                /* the scheduler sets the optimizer's rate: applied after optimizer.params.lr */
                pile_train_config scratch = *x->c;
                PILE_FORWARD_IF_ERR(set_from_json(&scratch, field_by_name("learning_rate"), pv, x->path,
                                                  "scheduler.params.warmup_max_lr", 1, x->err));
                if (!is_auto(pv)) *max_lr = pv;
            } else if (!strcmp(pk, "warmup_min_lr")) {
                PILE_FORWARD_IF_ERR(ds_set(x, "min_lr", pv, "scheduler.params.warmup_min_lr"));
            } else if (!strcmp(pk, "cos_min_ratio")) {
                if (!is_auto(pv) && pile_json_type_of(pv) != PILE_JSON_NUMBER)
                    return pile_err_set(x->err, PILE_EINVAL, "'%s': 'scheduler.params.cos_min_ratio' must be a number",
                                        x->path);
                /* a share of the peak rate, which optimizer.params.lr may still set */
                if (!is_auto(pv)) *cos_min_ratio = pv;
            } else if (!strcmp(pk, "warmup_type")) {
                if (pile_json_type_of(pv) != PILE_JSON_STRING || strcmp(pile_json_str(pv, NULL), "linear"))
                    warn(x->warnings, "'%s': 'scheduler.params.warmup_type' other than \"linear\" not supported; "
                         "warming up linearly", x->path);
            } else {
                ds_ignored(x, "scheduler.params.", pk);
            }
        }
    }
    return 0;
}

/* enabled: 1, 0, or -1 for "auto" / absent */
static int ds_enabled(ds_ctx *x, const pile_json *blk, const char *name, int *enabled)
{
    *enabled = -1;
    const pile_json *v = pile_json_get(blk, "enabled");
    if (!v || is_auto(v)) return 0;
    if (pile_json_type_of(v) != PILE_JSON_BOOL)
        return pile_err_set(x->err, PILE_EINVAL, "'%s': '%s.enabled' must be true, false or \"auto\"", x->path,
                            name);
    *enabled = pile_json_bool(v);
    return 0;
}

static int ds_fp16(ds_ctx *x, const pile_json *blk, int *enabled)
{
    static const struct {
        const char *key, *field;
    } map[] = {
        {"loss_scale", "loss_scale"},
        {"initial_scale_power", "initial_scale_power"},
        {"loss_scale_window", "loss_scale_window"},
        {"hysteresis", "hysteresis"},
        {"consecutive_hysteresis", "consecutive_hysteresis"},
        {"min_loss_scale", "min_loss_scale"},
    };
    PILE_FORWARD_IF_ERR(ds_object(x, blk, "fp16"));
    PILE_FORWARD_IF_ERR(ds_enabled(x, blk, "fp16", enabled));
    for (size_t i = 0; i < pile_json_size(blk); i++) {
        const char *k = pile_json_key_at(blk, i, NULL);
        if (!strcmp(k, "enabled")) continue;
        size_t m = 0;
        while (m < sizeof map / sizeof map[0] && strcmp(map[m].key, k)) m++;
        if (m == sizeof map / sizeof map[0]) {
            ds_ignored(x, "fp16.", k);
            continue;
        }
        char key[64];
        snprintf(key, sizeof key, "fp16.%s", k);
        PILE_FORWARD_IF_ERR(ds_set(x, map[m].field, pile_json_at(blk, i), key));
    }
    return 0;
}

static int ds_offload(ds_ctx *x, const pile_json *v, const char *what, int *on)
{
    char key[64];
    snprintf(key, sizeof key, "zero_optimization.%s", what);
    PILE_FORWARD_IF_ERR(ds_object(x, v, key));
    for (size_t i = 0; i < pile_json_size(v); i++) {
        const char *k = pile_json_key_at(v, i, NULL);
        const pile_json *d = pile_json_at(v, i);
        if (strcmp(k, "device")) {
            char prefix[80];
            snprintf(prefix, sizeof prefix, "%s.", key);
            ds_ignored(x, prefix, k);
            continue;
        }
        if (pile_json_type_of(d) != PILE_JSON_STRING)
            return pile_err_set(x->err, PILE_EINVAL, "'%s': '%s.device' must be a string", x->path, key);
        const char *dev = pile_json_str(d, NULL);
        if (!strcmp(dev, "none")) continue;
        if (strcmp(dev, "cpu") && strcmp(dev, "nvme"))
            return pile_err_set(x->err, PILE_EINVAL, "'%s': '%s.device' must be \"none\", \"cpu\" or \"nvme\", not '%s'",
                                x->path, key, dev);
        if (!strcmp(dev, "nvme")) {
            warn(x->warnings, "'%s': %s to 'nvme' not supported, ignored (\"cpu\" is)", x->path, what);
            continue;
        }
        *on = 1;
    }
    return 0;
}

static int ds_zero(ds_ctx *x, const pile_json *z)
{
    PILE_FORWARD_IF_ERR(ds_object(x, z, "zero_optimization"));
    for (size_t i = 0; i < pile_json_size(z); i++) {
        const char *k = pile_json_key_at(z, i, NULL);
        const pile_json *v = pile_json_at(z, i);
        if (!strcmp(k, "stage")) {
            PILE_FORWARD_IF_ERR(ds_set(x, "zero_stage", v, "zero_optimization.stage"));
            if (x->c->zero_stage > 3)
                return pile_err_set(x->err, PILE_EINVAL, "'%s': 'zero_optimization.stage' must be 0 to 3, not %d",
                                    x->path, x->c->zero_stage);
        } else if (!strcmp(k, "reduce_bucket_size") || !strcmp(k, "stage3_prefetch_bucket_size") ||
                   !strcmp(k, "overlap_comm")) {
            char key[64];
            snprintf(key, sizeof key, "zero_optimization.%s", k);
            if (!is_auto(v)) PILE_FORWARD_IF_ERR(ds_set(x, k, v, key));
        } else if (!strcmp(k, "offload_optimizer")) {
            int on = 0;
            PILE_FORWARD_IF_ERR(ds_offload(x, v, "offload_optimizer", &on));
            if (on) x->c->offload_optimizer = 1;
        } else if (!strcmp(k, "offload_param")) {
            int on = 0;
            PILE_FORWARD_IF_ERR(ds_offload(x, v, "offload_param", &on));
            if (on) x->c->offload_param = 1;
        } else {
            ds_ignored(x, "zero_optimization.", k);
        }
    }
    return 0;
}

/* train_batch_size = micro x accumulation x world size, as DeepSpeed
 * checks it; a missing or "auto" side is derived when it divides. */
static int ds_batch(ds_ctx *x, const pile_json *tbs, const pile_json *micro, const pile_json *accum)
{
    pile_train_config *c = x->c;
    int64_t total;
    if (!tbs || is_auto(tbs)) return 0;
    if (pile_json_type_of(tbs) != PILE_JSON_NUMBER || !pile_json_int(tbs, &total) || total <= 0)
        return pile_err_set(x->err, PILE_EINVAL, "'%s': 'train_batch_size' must be a positive integer or \"auto\"",
                            x->path);
    int has_micro = micro && !is_auto(micro), has_accum = accum && !is_auto(accum);
    int64_t m = c->batch_size, a = c->accumulation_steps, w = c->world_size;
    if (has_micro && has_accum) {
        /* each factor is an int, so m * a fits; the third may not */
        if (m * a > INT64_MAX / w || m * a * w != total)
            return pile_err_set(x->err, PILE_EINVAL,
                                "'%s': train_batch_size %" PRId64 " is not train_micro_batch_size_per_gpu %" PRId64
                                " x gradient_accumulation_steps %" PRId64 " x world_size %" PRId64,
                                x->path, total, m, a, w);
        return 0;
    }
    if (has_micro) {
        if (total % (m * w))
            return pile_err_set(x->err, PILE_EINVAL,
                                "'%s': train_batch_size %" PRId64 " is not a multiple of train_micro_batch_size_per_gpu %"
                                PRId64 " x world_size %" PRId64, x->path, total, m, w);
        if (total / (m * w) > INT_MAX)
            return pile_err_set(x->err, PILE_EINVAL, "'%s': train_batch_size %" PRId64 " is too large", x->path, total);
        c->accumulation_steps = (int)(total / (m * w));
        return 0;
    }
    /* micro-batch derived; the accumulation given (or the current one) kept */
    if (total % (a * w))
        return pile_err_set(x->err, PILE_EINVAL,
                            "'%s': train_batch_size %" PRId64 " is not a multiple of gradient_accumulation_steps %" PRId64
                            " x world_size %" PRId64, x->path, total, a, w);
    if (total / (a * w) > INT_MAX)
        return pile_err_set(x->err, PILE_EINVAL, "'%s': train_batch_size %" PRId64 " is too large", x->path, total);
    c->batch_size = (int)(total / (a * w));
    return 0;
}

int pile_train_config_load_deepspeed(pile_train_config *c, const char *path, pile_buf *warnings, pile_err *err)
{
    pile_json *root;
    int rc = open_object(path, &root, err);
    if (rc < 0) return rc;
    pile_train_config t = *c;
    ds_ctx x = {&t, path, warnings, err};
    const pile_json *tbs = NULL, *micro = NULL, *accum = NULL, *cos_min_ratio = NULL, *max_lr = NULL;
    int fp16 = -1, bf16 = -1;
    for (size_t i = 0; i < pile_json_size(root) && rc == 0; i++) {
        const char *k = pile_json_key_at(root, i, NULL);
        const pile_json *v = pile_json_at(root, i);
        if (!strcmp(k, "train_batch_size")) {
            tbs = v;
        } else if (!strcmp(k, "train_micro_batch_size_per_gpu")) {
            micro = v;
            rc = ds_set(&x, "batch_size", v, k);
        } else if (!strcmp(k, "gradient_accumulation_steps")) {
            accum = v;
            rc = ds_set(&x, "accumulation_steps", v, k);
        } else if (!strcmp(k, "gradient_clipping")) {
            rc = ds_set(&x, "gradient_clipping", v, k);
        } else if (!strcmp(k, "steps_per_print")) {
            rc = ds_set(&x, "log_interval", v, k);
        } else if (!strcmp(k, "seed")) {
            rc = ds_set(&x, "seed", v, k);
        } else if (!strcmp(k, "optimizer")) {
            rc = ds_optimizer(&x, v);
        } else if (!strcmp(k, "scheduler")) {
            rc = ds_scheduler(&x, v, &cos_min_ratio, &max_lr);
        } else if (!strcmp(k, "fp16")) {
            rc = ds_fp16(&x, v, &fp16);
        } else if (!strcmp(k, "bf16") || !strcmp(k, "bfloat16")) {
            rc = ds_object(&x, v, k);
            for (size_t j = 0; rc == 0 && j < pile_json_size(v); j++)
                if (strcmp(pile_json_key_at(v, j, NULL), "enabled")) {
                    char prefix[16];
                    snprintf(prefix, sizeof prefix, "%s.", k);
                    ds_ignored(&x, prefix, pile_json_key_at(v, j, NULL));
                }
            if (rc == 0) rc = ds_enabled(&x, v, k, &bf16);
        } else if (!strcmp(k, "zero_optimization")) {
            rc = ds_zero(&x, v);
        } else {
            ds_ignored(&x, "", k);
        }
    }
    if (rc == 0 && fp16 == 1 && bf16 == 1)
        rc = pile_err_set(err, PILE_EINVAL, "'%s': fp16 and bf16 are both enabled", path);
    if (rc == 0) rc = ds_batch(&x, tbs, micro, accum);
    if (rc == 0) {
        if (max_lr) t.learning_rate = pile_json_num(max_lr);
        if (cos_min_ratio) t.min_lr = pile_json_num(cos_min_ratio) * t.learning_rate;
        /* the file's word, enabled or not, wins over what came before */
        pile_precision before = t.precision;
        if (fp16 == 1) t.precision = PILE_PRECISION_FP16;
        else if (bf16 == 1) t.precision = PILE_PRECISION_BF16;
        else if ((fp16 == 0 && before == PILE_PRECISION_FP16) || (bf16 == 0 && before == PILE_PRECISION_BF16))
            t.precision = PILE_PRECISION_FP32;
        /* an enabled block, or a disabled one undoing a 16-bit precision,
         * names the precision; absent blocks leave the backend's default */
        if (fp16 == 1 || bf16 == 1 || t.precision != before) t.precision_given = 1;
        if (t.precision != before && before != PILE_PRECISION_FP32)
            warn(warnings, "'%s': precision %s set before replaced by %s", path, pile_precision_name(before),
                 pile_precision_name(t.precision));
        if (t.zero_stage > 0 && t.world_size == 1)
            warn(warnings, "'%s': ZeRO stage %d has no effect with one process", path, t.zero_stage);
        *c = t;
    }
    pile_json_free(root);
    return rc;
}

/* --------------------------------------------------------------- flags */

/* The flags' pass; with files != NULL the value of each --config and
 * --deepspeed is also appended to files[0] and files[1] (NUL after each),
 * since a path given twice would otherwise keep only the last. */
static int parse_flags(pile_train_config *c, int argc, char **argv, int first, pile_buf files[2], pile_err *err)
{
    int hf[2] = {-1, -1}, precision_given = 0, i;
    for (i = first; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || !a[2]) break;
        const char *eq = strchr(a + 2, '=');
        size_t n = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
        char name[64], flag[80];
        if (n >= sizeof name) break;
        for (size_t k = 0; k < n; k++) name[k] = a[2 + k] == '-' ? '_' : a[2 + k];
        name[n] = '\0';
        snprintf(flag, sizeof flag, "--%.*s", (int)n, a + 2);
        int k = hf_precision_key(name);
        if (k >= 0) {
            if (eq && !parse_bool(eq + 1, &hf[k]))
                return pile_err_set(err, PILE_EINVAL, "%s: '%s' is not true or false", flag, eq + 1);
            if (!eq) hf[k] = 1;
            continue;
        }
        if (!strcmp(name, "offload")) {
            /* one word for the two switches, as `plan` takes it */
            const char *value = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
            PILE_RETURN_IF(!value, err, PILE_EINVAL, "%s needs a value", flag);
            int which = !strcmp(value, "none") ? 0 : !strcmp(value, "optimizer") ? 1 : !strcmp(value, "all") ? 2 : -1;
            PILE_RETURN_IF(which < 0, err, PILE_EINVAL, "%s: unknown offload '%s' (choices: none, optimizer, all)",
                           flag, value);
            c->offload_optimizer = which >= 1;
            c->offload_param = which == 2;
            continue;
        }
        int negated = 0;
        const field *f = field_lookup(name, 1);
        if (!f && !strncmp(name, "no_", 3)) {
            f = field_lookup(name + 3, 1);
            if (f && f->type != T_BOOL) f = NULL;
            negated = 1;
        }
        if (!f) break;
        precision_given |= f->type == T_PREC;
        if (f->type == T_BOOL && !eq) {
            *(int *)fptr(c, f) = !negated;
            continue;
        }
        if (negated) return pile_err_set(err, PILE_EINVAL, "%s takes no value", flag);
        const char *value = eq ? eq + 1 : NULL;
        if (!value) {
            if (i + 1 >= argc) return pile_err_set(err, PILE_EINVAL, "%s needs a value", flag);
            value = argv[++i];
        }
        PILE_FORWARD_IF_ERR(set_from_string(c, f, flag, value, err));
        pile_buf *list = !files                                ? NULL
                         : f->off == offsetof(pile_train_config, config_file)    ? &files[0]
                         : f->off == offsetof(pile_train_config, deepspeed_file) ? &files[1]
                                                                                 : NULL;
        if (list && pile_buf_append(list, value, strlen(value) + 1))
            return pile_err_set(err, PILE_ENOMEM, "out of memory");
    }
    static const char *const names[3] = {"--bf16", "--fp16", "--precision"};
    PILE_FORWARD_IF_ERR(apply_hf_precision(c, hf, precision_given, "", names, err));
    return i;
}

int pile_train_config_parse_args(pile_train_config *c, int argc, char **argv, int first, pile_err *err)
{
    return parse_flags(c, argc, argv, first, NULL, err);
}

/* The train_batch_size a ds_config.json asks for, or 0 (none, "auto", unreadable). */
static int64_t ds_total_batch(const char *path)
{
    pile_json *root;
    pile_err ignored;
    int64_t total = 0;
    if (open_object(path, &root, &ignored) < 0) return 0;
    const pile_json *v = pile_json_get(root, "train_batch_size");
    if (!v || pile_json_type_of(v) != PILE_JSON_NUMBER || !pile_json_int(v, &total)) total = 0;
    pile_json_free(root);
    return total;
}

/* scheduler.params.cos_min_ratio of a ds_config.json that
 * pile_train_config_load_deepspeed applied: 1 and *ratio when there is one. */
static int ds_cos_min_ratio(const char *path, double *ratio)
{
    pile_json *root;
    pile_err ignored;
    int found = 0;
    if (open_object(path, &root, &ignored) < 0) return 0;
    const pile_json *sch = pile_json_get(root, "scheduler");
    const pile_json *tv = sch && pile_json_type_of(sch) == PILE_JSON_OBJECT ? pile_json_get(sch, "type") : NULL;
    const char *type = tv && pile_json_type_of(tv) == PILE_JSON_STRING ? pile_json_str(tv, NULL) : "";
    const pile_json *prm = sch && pile_json_type_of(sch) == PILE_JSON_OBJECT ? pile_json_get(sch, "params") : NULL;
    const pile_json *v = prm && pile_json_type_of(prm) == PILE_JSON_OBJECT ? pile_json_get(prm, "cos_min_ratio") : NULL;
    int known = !tv || !strcmp(type, "WarmupLR") || !strcmp(type, "WarmupDecayLR") ||
                !strcmp(type, "WarmupCosineLR") || !strcmp(type, "auto");
    if (known && v && pile_json_type_of(v) == PILE_JSON_NUMBER) {
        *ratio = pile_json_num(v);
        found = 1;
    }
    pile_json_free(root);
    return found;
}

/* 1 when a list of NUL-terminated paths holds more than one. */
static int several(const pile_buf *list)
{
    return list->len > 0 && list->len > strlen(list->data) + 1;
}

/* config_file records every --config, in order: "a.json, b.json". */
static int record_config_files(pile_train_config *c, const pile_buf *files, pile_err *err)
{
    pile_buf joined = {0};
    for (size_t at = 0; at < files->len; at += strlen(files->data + at) + 1)
        pile_buf_printf(&joined, "%s%s", at ? ", " : "", files->data + at);
    int rc = joined.failed ? pile_err_set(err, PILE_ENOMEM, "out of memory")
             : joined.len >= sizeof c->config_file
                 ? pile_err_set(err, PILE_EINVAL, "the --config paths are longer than %zu bytes together",
                                sizeof c->config_file - 1)
                 : 0;
    if (rc == 0) memcpy(c->config_file, joined.data, joined.len + 1);
    pile_buf_free(&joined);
    return rc;
}

int pile_train_config_resolve(pile_train_config *c, int argc, char **argv, int first, pile_buf *warnings,
                              pile_err *err)
{
    /* a first pass finds --config and --deepspeed (and refuses bad flags
     * before any file is read); the second makes the flags win. Sentinels
     * no flag can set tell which of world_size and min_lr the flags give. */
    pile_train_config flags;
    pile_train_config_defaults(&flags);
    flags.world_size = 0;
    flags.min_lr = NAN;
    pile_buf files[2] = {{0}, {0}};
    char ds[sizeof c->deepspeed_file];
    int rc = parse_flags(&flags, argc, argv, first, files, err);
    if (rc >= 0 && rc < argc) rc = pile_err_set(err, PILE_EINVAL, "unknown option '%s'", argv[rc]);
    /* two ds_config.json have no order to merge in: DeepSpeed takes one */
    if (rc >= 0 && several(&files[1]))
        rc = pile_err_set(err, PILE_EINVAL, "--deepspeed is given twice ('%s', '%s'): DeepSpeed takes one ds_config.json",
                          files[1].data, files[1].data + strlen(files[1].data) + 1);
    if (rc < 0) goto out;

    pile_train_config_defaults(c);
    /* --config files apply in order, each over the one before */
    for (size_t at = 0; rc >= 0 && at < files[0].len; at += strlen(files[0].data + at) + 1)
        rc = pile_train_config_load_json(c, files[0].data + at, warnings, err);
    if (rc < 0) goto out;
    /* DeepSpeed's batch arithmetic needs the final world size (the launcher's) */
    if (flags.world_size > 0) c->world_size = flags.world_size;
    /* a config file may name the DeepSpeed file (TrainingArguments' "deepspeed") */
    memcpy(ds, flags.deepspeed_file[0] ? flags.deepspeed_file : c->deepspeed_file, sizeof ds);
    if (ds[0] && (rc = pile_train_config_load_deepspeed(c, ds, warnings, err)) < 0) goto out;
    if ((rc = pile_train_config_parse_args(c, argc, argv, first, err)) < 0) goto out;
    if (several(&files[0]) && (rc = record_config_files(c, &files[0], err)) < 0) goto out;
    if (ds[0]) {
        snprintf(c->deepspeed_file, sizeof c->deepspeed_file, "%s", ds);
        int64_t total = ds_total_batch(ds);
        int64_t ma = (int64_t)c->batch_size * c->accumulation_steps;
        int64_t have = ma > INT64_MAX / c->world_size ? INT64_MAX : ma * c->world_size;
        if (total > 0 && total != have)
            warn(warnings,
                 "'%s': train_batch_size %" PRId64 " overridden by the flags: %d x %d x world_size %d = %" PRId64, ds,
                 total, c->batch_size, c->accumulation_steps, c->world_size, have);
        /* a share of the peak rate, which a flag may have set after the file */
        double ratio;
        if (isnan(flags.min_lr) && ds_cos_min_ratio(ds, &ratio)) c->min_lr = ratio * c->learning_rate;
    }
    rc = pile_train_config_check(c, err);
out:
    pile_buf_free(&files[0]);
    pile_buf_free(&files[1]);
    return rc;
}

/* --------------------------------------------------------------- check */

int pile_train_config_check(const pile_train_config *c, pile_err *err)
{
    for (size_t i = 0; i < N_FIELDS; i++) {
        const field *f = &fields[i];
        const void *p = fcptr(c, f);
        int64_t v = f->type == T_INT ? *(const int *)p : f->type == T_I64 ? *(const int64_t *)p : 0;
        if ((f->type == T_INT || f->type == T_I64) && !in_range(f->range, v))
            return pile_err_set(err, PILE_EINVAL, "%s must be %s, not %" PRId64, f->name, range_words(f->range), v);
        if (f->type == T_DBL && !isfinite(*(const double *)p))
            return pile_err_set(err, PILE_EINVAL, "%s must be a finite number", f->name);
        if (f->type == T_STR && !memchr(p, '\0', f->size))
            return pile_err_set(err, PILE_EINVAL, "%s is not a terminated string", f->name);
        if (f->type == T_PREC && (unsigned)*(const pile_precision *)p > PILE_PRECISION_FP16)
            return pile_err_set(err, PILE_EINVAL, "precision %d is not fp32, bf16 or fp16",
                                (int)*(const pile_precision *)p);
    }
    PILE_RETURN_IF(!(c->learning_rate > 0), err, PILE_EINVAL, "learning_rate must be positive, not %g",
                   c->learning_rate);
    PILE_RETURN_IF(c->min_lr > c->learning_rate, err, PILE_EINVAL,
                   "min_lr %g is above learning_rate %g: the cosine decay would climb (min_lr is where it ends; "
                   "< 0: learning_rate / 10)",
                   c->min_lr, c->learning_rate);
    PILE_RETURN_IF(!(c->peak_tflops >= 0), err, PILE_EINVAL, "peak_tflops must be 0 (by the device) or positive, not %g",
                   c->peak_tflops);
    PILE_RETURN_IF(!(c->warmup_ratio >= 0 && c->warmup_ratio <= 1), err, PILE_EINVAL,
                   "warmup_ratio must be in [0, 1], not %g", c->warmup_ratio);
    PILE_RETURN_IF(!(c->dropout >= 0 && c->dropout < 1), err, PILE_EINVAL, "dropout must be in [0, 1), not %g",
                   (double)c->dropout);
    PILE_RETURN_IF(c->n_embd > 0 && c->n_head > 0 && c->n_embd % c->n_head, err, PILE_EINVAL,
                   "n_embd %d is not divisible by n_head %d", c->n_embd, c->n_head);
    PILE_RETURN_IF(c->doc_mask_loss && !c->doc_mask, err, PILE_EINVAL, "doc_mask_loss needs doc_mask");
    PILE_RETURN_IF(!(c->val_fraction >= 0 && c->val_fraction <= 0.5), err, PILE_EINVAL,
                   "val_fraction must be in [0, 0.5], not %g", c->val_fraction);
    PILE_RETURN_IF(!(c->dist_timeout > 0), err, PILE_EINVAL, "dist_timeout must be positive, not %g",
                   c->dist_timeout);
    PILE_RETURN_IF(!(c->weight_decay >= 0), err, PILE_EINVAL, "weight_decay must not be negative, not %g",
                   c->weight_decay);
    PILE_RETURN_IF(!(c->adam_beta1 >= 0 && c->adam_beta1 < 1), err, PILE_EINVAL,
                   "adam_beta1 must be in [0, 1), not %g", c->adam_beta1);
    PILE_RETURN_IF(!(c->adam_beta2 >= 0 && c->adam_beta2 < 1), err, PILE_EINVAL,
                   "adam_beta2 must be in [0, 1), not %g", c->adam_beta2);
    PILE_RETURN_IF(!(c->adam_epsilon >= 0), err, PILE_EINVAL, "adam_epsilon must not be negative, not %g",
                   c->adam_epsilon);
    PILE_RETURN_IF(c->zero_stage > 3, err, PILE_EINVAL, "zero_stage must be 0 to 3, not %d", c->zero_stage);
    /* as DeepSpeed, the fp16 block's values only when fp16 is on */
    pile_loss_scaler_config ls;
    pile_train_config_loss_scaler(c, &ls);
    if (c->precision == PILE_PRECISION_FP16) PILE_FORWARD_IF_ERR(pile_loss_scaler_config_check(&ls, err));
    pile_recompute rc;
    if (memchr(c->recompute, '\0', sizeof c->recompute))
        PILE_FORWARD_IF_ERR(pile_model_recompute_parse(c->recompute, &rc, err));
    PILE_RETURN_IF(!c->data[0], err, PILE_EINVAL, "data must name a folder");
    PILE_RETURN_IF(!c->checkpoint_dir[0], err, PILE_EINVAL, "checkpoint_dir must name a folder");
    return 0;
}

void pile_train_config_loss_scaler(const pile_train_config *c, pile_loss_scaler_config *out)
{
    pile_loss_scaler_config_defaults(out);
    out->loss_scale = c->loss_scale;
    out->initial_scale_power = c->initial_scale_power;
    out->loss_scale_window = c->loss_scale_window;
    out->hysteresis = c->hysteresis;
    out->consecutive_hysteresis = c->consecutive_hysteresis;
    out->min_loss_scale = c->min_loss_scale;
}

/* ------------------------------------------------------------- writing */

/* The shortest decimal that reads back as the same value. */
static void fmt_double(char *buf, size_t cap, double v, int is_float)
{
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, cap, "%.*g", p, v);
        double back = strtod(buf, NULL);
        if (is_float ? (float)back == (float)v : back == v) return;
    }
}

/* A field's value as JSON (json = 1) or as --help shows it. */
static void put_value(pile_buf *out, const pile_train_config *c, const field *f, int json)
{
    const void *p = fcptr(c, f);
    char num[64];
    switch (f->type) {
    case T_STR:
        if (json) pile_json_write_string(out, (const char *)p, strlen((const char *)p));
        else pile_buf_printf(out, "\"%s\"", (const char *)p);
        return;
    case T_INT:
        pile_buf_printf(out, "%d", *(const int *)p);
        return;
    case T_I64:
        pile_buf_printf(out, "%" PRId64, *(const int64_t *)p);
        return;
    case T_U64: {
        uint64_t v = *(const uint64_t *)p;
        pile_buf_printf(out, json && v > (uint64_t)INT64_MAX ? "\"%" PRIu64 "\"" : "%" PRIu64, v);
        return;
    }
    case T_DBL:
    case T_FLT: {
        double v = f->type == T_DBL ? *(const double *)p : (double)*(const float *)p;
        if (!isfinite(v)) {
            pile_buf_append_str(out, json ? "null" : "nan");
            return;
        }
        fmt_double(num, sizeof num, v, f->type == T_FLT);
        pile_buf_append_str(out, num);
        return;
    }
    case T_BOOL:
        pile_buf_append_str(out, *(const int *)p ? "true" : "false");
        return;
    case T_PREC: {
        const char *s = pile_precision_name(*(const pile_precision *)p);
        pile_buf_printf(out, json ? "\"%s\"" : "%s", s);
        return;
    }
    }
}

int pile_train_config_to_json(const pile_train_config *c, pile_buf *out)
{
    pile_buf_append_str(out, "{\n");
    for (size_t i = 0; i < N_FIELDS; i++) {
        pile_buf_printf(out, "  \"%s\": ", fields[i].name);
        put_value(out, c, &fields[i], 1);
        pile_buf_append_str(out, i + 1 < N_FIELDS ? ",\n" : "\n");
    }
    pile_buf_append_str(out, "}\n");
    return out->failed ? PILE_ENOMEM : 0;
}

void pile_train_config_help(pile_buf *out)
{
    pile_train_config d;
    pile_train_config_defaults(&d);
    for (size_t i = 0; i < N_FIELDS; i++) {
        const field *f = &fields[i];
        char left[80];
        const char *name = f->flag ? f->flag : f->name;
        static const char *meta[] = {"S", "N", "N", "N", "X", "X", "", "fp32|bf16|fp16"};
        if (f->type == T_BOOL) snprintf(left, sizeof left, "--[no-]%s", name);
        else snprintf(left, sizeof left, "--%s %s", name, meta[f->type]);
        if (f->type == T_PREC) { /* pile_train_config_precision's rule */
            pile_buf_printf(out, "  %-28s %s (default: bf16 on cuda, fp32 on the cpu)\n", left, f->help);
            continue;
        }
        pile_buf_printf(out, "  %-28s %s (default ", left, f->help);
        put_value(out, &d, f, 0);
        pile_buf_append_str(out, ")\n");
    }
    pile_buf_printf(out, "  %-28s %s\n", "--offload MODE",
                    "none, optimizer (--offload_optimizer) or all (--offload_param too)");
    pile_buf_append_str(out, "  Flags take --name VALUE or --name=VALUE, with dashes or underscores.\n"
                             "  Also read (in --config files and as flags), as Hugging Face names them:\n   ");
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        pile_buf_printf(out, " %s (%s),", aliases[i].alias, aliases[i].name);
    pile_buf_append_str(out, " bf16 and fp16 (true: that precision; --bf16, --fp16)\n");
}

pile_precision pile_train_config_precision(const pile_train_config *c, const char *backend_name)
{
    if (c->precision_given) return c->precision;
    return backend_name && !strcmp(backend_name, "cuda") ? PILE_PRECISION_BF16 : PILE_PRECISION_FP32;
}
