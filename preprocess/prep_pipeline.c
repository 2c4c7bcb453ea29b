/* pile-prep's pipeline: one reader thread cuts the inputs into numbered
 * chunks of whole lines, N workers parse and tokenize whole chunks (one JSON
 * parser and one encoder each), and the calling thread packs the chunk
 * results strictly in chunk order. Chunks live in a ring of slots, so memory
 * is bounded by the ring whatever the input size, and the output depends
 * only on the order of the lines, never on the number of threads. */
#include "prep_internal.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include "pile_fs.h"
#include "pile_lines.h"
#include "pile_progress.h"

#define CHUNK_BYTES ((size_t)1 << 20)         /* line bytes per chunk (a chunk ends at a line end) */
#define CHUNK_MAX_LINES 16384                 /* and at most this many lines */
#define IN_FLIGHT_BYTES ((size_t)48 << 20)    /* line bytes in the ring before the reader waits */
#define SLOT_KEEP_BYTES ((size_t)8 << 20)     /* a slot's buffers above this are freed after use */
#define REPORT_MAX 10                         /* skipped / repaired lines reported one by one */
#define DETAIL_MAX 160
#define THREAD_BYTES ((size_t)16 << 20)       /* a worker's parser, encoder and slots, generously */

/* ----------------------------------------------------------------- chunks */

typedef struct line_rec {
    uint64_t lineno;
    size_t off, len; /* in chunk text; len is the true length for a too-long line */
    uint8_t status;  /* pile_line_status */
} line_rec;

typedef struct item {
    uint8_t skip;    /* pile_skip */
    uint8_t repairs; /* PILE_REPAIR_* */
    uint32_t sub_off, sub_len; /* subset name in strs; sub_len UINT32_MAX: none */
    uint32_t det_off, det_len; /* why a line was skipped, in strs */
    size_t tok_off, tok_len;   /* tokens (with the end-of-text) in the chunk's tokens */
} item;

enum { SLOT_FREE, SLOT_READ, SLOT_DONE };

typedef struct chunk {
    uint64_t seq;
    size_t input;
    int last, truncated;
    int rc;           /* an error met by the reader or a worker */
    pile_err err;
    uint64_t bytes_done; /* input bytes consumed when the chunk was cut (progress) */
    pile_buf text;    /* the lines, each followed by PILE_LINES_PADDING writable bytes */
    line_rec *lines;
    item *items;
    size_t n, cap;
    pile_ids tokens;
    pile_buf strs;
    int state;
    double t_parse, t_tok;
} chunk;

typedef struct pipe {
    prep_state *st;
    const pile_tokenizer *tok;
    prep_resume start; /* where this run starts reading: the packer moves st->resume on while the reader runs */
    chunk *slots;
    size_t nslots;
    uv_mutex_t mu;
    uv_cond_t cv;
    uint64_t next_read, next_work, next_pack;
    size_t in_flight; /* line bytes in [next_pack, next_read) */
    int reader_done, abort;
    double t_read, t_parse, t_tok;
    uint64_t jsonl_bytes; /* decompressed line bytes read (reader thread only) */
    size_t decoder_bytes; /* the most one input's decompressor held (reader thread only) */
} pipe_t;

static void chunk_free(chunk *c)
{
    pile_buf_free(&c->text);
    pile_buf_free(&c->strs);
    pile_ids_free(&c->tokens);
    free(c->lines);
    free(c->items);
}

/* Takes the next slot for the reader; NULL when the job is aborted. */
static chunk *acquire(pipe_t *p)
{
    uv_mutex_lock(&p->mu);
    while (!p->abort && (p->next_read - p->next_pack >= p->nslots ||
                         (p->in_flight >= IN_FLIGHT_BYTES && p->next_read > p->next_pack)))
        uv_cond_wait(&p->cv, &p->mu);
    chunk *c = p->abort ? NULL : &p->slots[p->next_read % p->nslots];
    if (c) c->seq = p->next_read;
    uv_mutex_unlock(&p->mu);
    if (!c) return NULL;
    if (c->text.cap > SLOT_KEEP_BYTES) pile_buf_free(&c->text);
    if (c->strs.cap > SLOT_KEEP_BYTES) pile_buf_free(&c->strs); /* a huge subset name */
    if (c->tokens.cap > SLOT_KEEP_BYTES / sizeof *c->tokens.data) pile_ids_free(&c->tokens);
    c->text.len = c->strs.len = c->tokens.len = 0;
    c->n = 0;
    c->last = c->truncated = c->rc = 0;
    c->t_parse = c->t_tok = 0;
    pile_err_clear(&c->err);
    return c;
}

static void submit(pipe_t *p, chunk *c)
{
    uv_mutex_lock(&p->mu);
    c->state = SLOT_READ;
    p->in_flight += c->text.len;
    p->next_read++;
    uv_cond_broadcast(&p->cv);
    uv_mutex_unlock(&p->mu);
}

static int chunk_add_line(chunk *c, const pile_line *ln)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        line_rec *l = realloc(c->lines, cap * sizeof *l);
        if (!l) return PILE_ENOMEM;
        c->lines = l;
        item *it = realloc(c->items, cap * sizeof *it);
        if (!it) return PILE_ENOMEM;
        c->items = it;
        c->cap = cap;
    }
    line_rec *r = &c->lines[c->n++];
    r->lineno = ln->lineno;
    r->status = (uint8_t)ln->status;
    r->len = ln->len;
    r->off = c->text.len;
    if (ln->status != PILE_LINE_TOO_LONG) {
        if (pile_buf_reserve(&c->text, ln->len + PILE_LINES_PADDING)) return PILE_ENOMEM;
        if (ln->len) memcpy(c->text.data + c->text.len, ln->data, ln->len);
        memset(c->text.data + c->text.len + ln->len, 0, PILE_LINES_PADDING);
        c->text.len += ln->len + PILE_LINES_PADDING;
    }
    return 0;
}

/* ----------------------------------------------------------------- reader */

static pile_lines_opts reader_opts(const prep_state *st)
{
    return (pile_lines_opts){.max_line = st->max_line_bytes, .max_window = st->zstd_window,
                             .window_flag = "--zstd-memory"};
}

static void reader_main(void *arg)
{
    pipe_t *p = arg;
    prep_state *st = p->st;
    pile_lines_opts lo = reader_opts(st);
    uint64_t done_before = 0;
    for (size_t i = 0; i < p->start.input && i < st->n_inputs; i++) done_before += st->order[i]->size;
    for (size_t i = p->start.input; i < st->n_inputs; i++) {
        chunk *c = acquire(p);
        if (!c) break;
        c->input = i;
        const char *path = st->order[i]->path;
        uint64_t skip_below = i == p->start.input ? p->start.line : 1;
        pile_lines *lr = NULL;
        pile_err lerr;
        pile_err_clear(&lerr);
        double t0 = pile_now();
        int rc = pile_lines_open(&lr, path, &lo, &lerr);
        uint64_t seen = 0;
        pile_line ln;
        while (rc == 0) {
            int r = pile_lines_next(lr, &ln, &lerr);
            if (r <= 0) {
                rc = r;
                break;
            }
            seen = ln.lineno;
            if (ln.lineno < skip_below) continue;
            p->jsonl_bytes += ln.len + 1;
            if (chunk_add_line(c, &ln)) {
                rc = pile_err_set(&lerr, PILE_ENOMEM, "out of memory");
                break;
            }
            if (c->text.len >= CHUNK_BYTES || c->n >= CHUNK_MAX_LINES) {
                c->bytes_done = done_before + pile_lines_bytes_read(lr);
                p->t_read += pile_now() - t0;
                submit(p, c);
                c = acquire(p);
                t0 = pile_now();
                if (!c) break;
                c->input = i;
            }
        }
        if (!c) {
            pile_lines_close(lr);
            break;
        }
        if (rc == 0 && seen + 1 < skip_below)
            rc = pile_err_set(&lerr, PILE_EMISMATCH,
                              "cannot resume: '%s' has %" PRIu64 " lines, the interrupted run had read %" PRIu64
                              "; use --force to start over",
                              path, seen, skip_below - 1);
        c->last = 1;
        c->truncated = rc == 0 && pile_lines_truncated(lr);
        if (lr && pile_lines_decoder_bytes(lr) > p->decoder_bytes) p->decoder_bytes = pile_lines_decoder_bytes(lr);
        c->rc = rc;
        if (rc) c->err = lerr;
        done_before += st->order[i]->size;
        c->bytes_done = done_before;
        pile_lines_close(lr);
        p->t_read += pile_now() - t0;
        submit(p, c);
        if (rc) break;
    }
    uv_mutex_lock(&p->mu);
    p->reader_done = 1;
    uv_cond_broadcast(&p->cv);
    uv_mutex_unlock(&p->mu);
}

/* ---------------------------------------------------------------- workers */

static int strs_add(chunk *c, const char *s, size_t n, uint32_t *off, uint32_t *len)
{
    if (c->strs.len + n > UINT32_MAX) return PILE_ENOMEM;
    *off = (uint32_t)c->strs.len;
    *len = (uint32_t)n;
    return pile_buf_append(&c->strs, s, n);
}

static void process_chunk(pipe_t *p, chunk *c, pile_jsonl_parser *parser, pile_encoder *enc)
{
    prep_state *st = p->st;
    uint32_t eot = st->eot_id;
    const char *path = st->order[c->input]->path;
    char detail[DETAIL_MAX];
    for (size_t j = 0; j < c->n && !c->rc; j++) {
        const line_rec *l = &c->lines[j];
        item *it = &c->items[j];
        memset(it, 0, sizeof *it);
        it->sub_len = UINT32_MAX;
        int n = -1;
        if (l->status == PILE_LINE_TOO_LONG) {
            it->skip = PILE_SKIP_TOO_LONG;
            n = snprintf(detail, sizeof detail, "line of %zu bytes is over the limit of %" PRIu64 " (--max-line-bytes)",
                         l->len, st->max_line_bytes);
        } else if (l->status == PILE_LINE_CUT) {
            it->skip = PILE_SKIP_CUT;
            n = snprintf(detail, sizeof detail, "the compressed stream ends inside this line (%zu bytes arrived)",
                         l->len);
        } else {
            pile_jsonl_doc doc;
            detail[0] = '\0';
            double t0 = pile_now();
            int r = pile_jsonl_parse(parser, c->text.data + l->off, l->len, &doc, detail, sizeof detail);
            double t1 = pile_now();
            c->t_parse += t1 - t0;
            if (r < 0) {
                c->rc = pile_err_set(&c->err, r, "out of memory parsing '%s:%" PRIu64 "'", path, l->lineno);
                break;
            }
            if (r > 0) {
                it->skip = (uint8_t)r;
                n = (int)strnlen(detail, sizeof detail);
            } else {
                it->repairs = (uint8_t)doc.repairs;
                if (doc.subset && strs_add(c, doc.subset, doc.subset_len, &it->sub_off, &it->sub_len)) {
                    c->rc = pile_err_set(&c->err, PILE_ENOMEM, "out of memory");
                    break;
                }
                it->tok_off = c->tokens.len;
                pile_err eerr;
                pile_err_clear(&eerr);
                int e = pile_encoder_encode(enc, doc.text, doc.text_len, &c->tokens, &eerr);
                if (!e && pile_ids_push(&c->tokens, eot)) e = pile_err_set(&eerr, PILE_ENOMEM, "out of memory");
                if (e) {
                    c->rc = pile_err_set(&c->err, e, "cannot tokenize '%s:%" PRIu64 "': %s", path, l->lineno, eerr.msg);
                    break;
                }
                it->tok_len = c->tokens.len - it->tok_off;
                c->t_tok += pile_now() - t1;
            }
        }
        if (n >= 0) {
            size_t dl = (size_t)n < sizeof detail ? (size_t)n : sizeof detail - 1;
            if (strs_add(c, detail, dl, &it->det_off, &it->det_len))
                c->rc = pile_err_set(&c->err, PILE_ENOMEM, "out of memory");
        }
    }
}

typedef struct worker {
    pipe_t *p;
    uv_thread_t th;
    int rc;
} worker;

static void worker_main(void *arg)
{
    worker *w = arg;
    pipe_t *p = w->p;
    pile_jsonl_parser *parser = pile_jsonl_parser_create();
    pile_encoder *enc = pile_encoder_create(p->tok);
    /* the keys were checked before the threads started: only memory can fail */
    if (parser && pile_jsonl_parser_set_keys(parser, p->st->text_key, p->st->subset_key, NULL)) {
        pile_jsonl_parser_free(parser);
        parser = NULL;
    }
    double tp = 0, tt = 0;
    uv_mutex_lock(&p->mu);
    for (;;) {
        while (!p->abort && p->next_work == p->next_read && !p->reader_done) uv_cond_wait(&p->cv, &p->mu);
        if (p->abort || p->next_work == p->next_read) break;
        chunk *c = &p->slots[p->next_work % p->nslots];
        p->next_work++;
        uv_mutex_unlock(&p->mu);
        if (!parser || !enc) {
            if (!c->rc) c->rc = pile_err_set(&c->err, PILE_ENOMEM, "out of memory");
        } else if (!c->rc) {
            process_chunk(p, c, parser, enc);
        }
        tp += c->t_parse;
        tt += c->t_tok;
        uv_mutex_lock(&p->mu);
        c->state = SLOT_DONE;
        uv_cond_broadcast(&p->cv);
    }
    p->t_parse += tp;
    p->t_tok += tt;
    uv_mutex_unlock(&p->mu);
    pile_encoder_free(enc);
    pile_jsonl_parser_free(parser);
}

/* ----------------------------------------------------------------- packing */

typedef struct run_ctx {
    prep_state *st;
    prep_packer *pk;
    const pile_prep_opts *opts;
    uint64_t reported_skips, reported_repairs;
    int resume_pending;
} run_ctx;

static void logf_(const pile_prep_opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(const pile_prep_opts *o, const char *fmt, ...)
{
    if (!o->log) return;
    char msg[PILE_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    o->log(o->log_ctx, msg);
}

static const char *repair_words(unsigned r)
{
    if ((r & PILE_REPAIR_UTF8) && (r & PILE_REPAIR_SURROGATE))
        return "invalid UTF-8 and lone surrogates replaced by U+FFFD";
    if (r & PILE_REPAIR_UTF8) return "invalid UTF-8 replaced by U+FFFD";
    return "lone surrogate escapes replaced by U+FFFD";
}

static int pack_chunk(run_ctx *x, chunk *c, pile_err *err)
{
    prep_state *st = x->st;
    if (c->rc) {
        *err = c->err;
        return c->rc;
    }
    size_t i = c->input;
    const pile_prep_input *in = st->order[i];
    pile_split split = in->split;
    prep_split_stats *ss = &st->stats.split[split];
    for (size_t j = 0; j < c->n; j++) {
        const line_rec *l = &c->lines[j];
        const item *it = &c->items[j];
        uint64_t tok_off = 0;
        if (x->resume_pending && i == st->resume.input && l->lineno == st->resume.line) {
            x->resume_pending = 0;
            tok_off = st->resume.tok_off;
            if (it->skip)
                return pile_err_set(err, PILE_EMISMATCH,
                                    "cannot resume: line %" PRIu64 " of '%s' no longer holds a document; "
                                    "use --force to start over",
                                    l->lineno, in->path);
        }
        if (it->skip) {
            ss->lines++;
            ss->skipped[it->skip]++;
            st->stats.input_lines[i]++;
            const char *why = pile_skip_name((pile_skip)it->skip);
            int dl = (int)it->det_len;
            const char *det = c->strs.data ? c->strs.data + it->det_off : "";
            if (x->opts->strict)
                return pile_err_set(err, PILE_EFORMAT, "bad line at '%s:%" PRIu64 "': %s: %.*s (--strict)", in->path,
                                    l->lineno, why, dl, det);
            if (x->reported_skips++ < REPORT_MAX)
                logf_(x->opts, "warning: skipped '%s:%" PRIu64 "': %s: %.*s%s", in->path, l->lineno, why, dl, det,
                      x->reported_skips == REPORT_MAX ? " (further skipped lines are only counted)" : "");
            continue;
        }
        uint32_t gid;
        const char *sub = it->sub_len == UINT32_MAX ? "unknown" : c->strs.data + it->sub_off;
        size_t sublen = it->sub_len == UINT32_MAX ? 7 : it->sub_len;
        if (pile__prep_names_intern(&st->stats.subsets, sub, sublen, &gid) ||
            pile__prep_stats_doc(&st->stats, split, i, gid, it->tok_len, it->repairs, +1))
            return pile_err_set(err, PILE_ENOMEM, "out of memory");
        if (it->repairs && x->reported_repairs++ < REPORT_MAX)
            logf_(x->opts, "warning: repaired '%s:%" PRIu64 "': %s%s", in->path, l->lineno, repair_words(it->repairs),
                  x->reported_repairs == REPORT_MAX ? " (further repairs are only counted)" : "");
        if (tok_off >= it->tok_len)
            return pile_err_set(err, PILE_EMISMATCH,
                                "cannot resume: the document on line %" PRIu64 " of '%s' is shorter than before; "
                                "use --force to start over",
                                l->lineno, in->path);
        PILE_FORWARD_IF_ERR(pile__prep_packer_doc(x->pk, split, i, l->lineno, c->tokens.data + it->tok_off,
                                                  it->tok_len, tok_off, gid, it->repairs, err));
    }
    if (c->last) {
        if (x->resume_pending && i == st->resume.input)
            return pile_err_set(err, PILE_EMISMATCH,
                                "cannot resume: '%s' no longer reaches line %" PRIu64 "; use --force to start over",
                                in->path, st->resume.line);
        st->stats.input_done[i] = 1;
        if (c->truncated) {
            st->stats.input_truncated[i] = 1;
            if (x->opts->strict)
                return pile_err_set(err, PILE_ETRUNC, "input '%s' is truncated after line %" PRIu64 " (--strict)",
                                    in->path, st->stats.input_lines[i]);
            logf_(x->opts, "warning: '%s' is truncated: kept the complete lines before the cut", in->path);
        }
        if (i + 1 == st->n_inputs || st->order[i + 1]->split != split)
            PILE_FORWARD_IF_ERR(pile__prep_packer_end_split(x->pk, split, i + 1, err));
    }
    return 0;
}

/* ------------------------------------------------------------ output folder */

static int parse_shard_name(const char *name, pile_split *split, unsigned *num)
{
    static const char *const names[] = {"train", "val", "test"};
    for (int s = 0; s < PREP_NSPLITS; s++) {
        size_t n = strlen(names[s]);
        if (strncmp(name, names[s], n) || name[n] != '-') continue;
        const char *d = name + n + 1;
        for (int k = 0; k < 5; k++)
            if (d[k] < '0' || d[k] > '9') return 0;
        if (strcmp(d + 5, ".shard")) return 0;
        *split = (pile_split)s;
        *num = (unsigned)strtoul(d, NULL, 10);
        return 1;
    }
    return 0;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* Removes leftovers: *.tmp always; shards beyond the manifest's; with
 * everything != 0, every file an earlier run wrote (--force). Returns the
 * number of shards found that no manifest accounts for (when none was read). */
static int clean_output(const prep_state *st, int everything, int have_manifest, size_t *stray, pile_err *err)
{
    const char *out = st->opts->output_dir;
    DIR *d = opendir(out);
    if (!d) return pile_err_sys(err, PILE_EIO, errno, "cannot open folder '%s'", out);
    pile_buf p = {0};
    int rc = 0;
    *stray = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        pile_split sp = PILE_SPLIT_TRAIN;
        unsigned num = 0;
        int shard = parse_shard_name(e->d_name, &sp, &num);
        int del = ends_with(e->d_name, ".tmp");
        if (everything)
            del |= shard || !strcmp(e->d_name, "manifest.json") || !strcmp(e->d_name, "train.bin") ||
                   !strcmp(e->d_name, "train.idx") || !strcmp(e->d_name, "val.bin") || !strcmp(e->d_name, "val.idx") ||
                   !strcmp(e->d_name, "test.bin") || !strcmp(e->d_name, "test.idx");
        else if (shard && have_manifest)
            del |= num >= st->next_shard[sp]; /* finished after the last manifest: will be rewritten */
        else if (shard)
            (*stray)++;
        if (!del) continue;
        if (pile_fs_join(&p, out, e->d_name)) {
            rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
            break;
        }
        if (unlink(p.data) != 0 && errno != ENOENT) {
            rc = pile_err_sys(err, PILE_EIO, errno, "cannot remove '%s'", p.data);
            break;
        }
    }
    closedir(d);
    pile_buf_free(&p);
    return rc;
}

/* -------------------------------------------------------------------- run */

static int cmp_order(const void *a, const void *b)
{
    const pile_prep_input *x = *(const pile_prep_input *const *)a, *y = *(const pile_prep_input *const *)b;
    if (x->split != y->split) return (int)x->split - (int)y->split;
    return x < y ? -1 : x > y; /* the given order within a split */
}

static int megatron_export(prep_state *st, pile_err *err)
{
    int rc = 0;
    pile_buf prefix = {0};
    for (int sp = 0; sp < PREP_NSPLITS && !rc; sp++) {
        size_t n = 0;
        for (size_t i = 0; i < st->n_shards; i++) n += st->shards[i].split == (pile_split)sp;
        if (!n) continue;
        char **paths = calloc(n, sizeof *paths);
        if (!paths) {
            rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
            break;
        }
        size_t k = 0;
        for (size_t i = 0; i < st->n_shards && !rc; i++) {
            if (st->shards[i].split != (pile_split)sp) continue;
            pile_buf b = {0};
            if (pile_fs_join(&b, st->opts->output_dir, st->shards[i].file)) rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
            paths[k++] = b.data;
        }
        if (!rc && pile_fs_join(&prefix, st->opts->output_dir, pile_prep_split_name((pile_split)sp)))
            rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
        if (!rc) rc = pile_megatron_export((const char *const *)paths, n, prefix.data, err);
        for (size_t i = 0; i < n; i++) free(paths[i]);
        free(paths);
    }
    pile_buf_free(&prefix);
    return rc;
}

static int check_reconciliation(const prep_state *st, pile_err *err)
{
    uint64_t lines = 0, by_input = 0;
    for (int sp = 0; sp < PREP_NSPLITS; sp++) {
        const prep_split_stats *ss = &st->stats.split[sp];
        uint64_t sk = 0;
        for (int k = 1; k < PILE_SKIP_COUNT; k++) sk += ss->skipped[k];
        if (ss->lines != ss->docs + sk)
            return pile_err_set(err, PILE_ECORRUPT,
                                "internal error: %s: lines read %" PRIu64 " != documents %" PRIu64 " + skipped %" PRIu64,
                                pile_prep_split_name((pile_split)sp), ss->lines, ss->docs, sk);
        if (ss->rows * st->max_length != ss->tokens + ss->pad_tokens)
            return pile_err_set(err, PILE_ECORRUPT,
                                "internal error: %s: %" PRIu64 " rows do not hold %" PRIu64 " tokens + %" PRIu64
                                " padding",
                                pile_prep_split_name((pile_split)sp), ss->rows, ss->tokens, ss->pad_tokens);
        lines += ss->lines;
    }
    for (size_t i = 0; i < st->n_inputs; i++) by_input += st->stats.input_lines[i];
    if (lines != by_input)
        return pile_err_set(err, PILE_ECORRUPT, "internal error: lines by split %" PRIu64 " != by input %" PRIu64,
                            lines, by_input);
    return 0;
}

static void fill_result(const prep_state *st, pile_prep_result *res)
{
    prep_split_stats tot;
    pile__prep_stats_total(&st->stats, &tot);
    res->lines = tot.lines;
    res->documents = tot.docs;
    res->skipped = tot.lines - tot.docs;
    res->tokens = tot.tokens;
    res->rows = tot.rows;
    res->truncated_inputs = 0;
    for (size_t i = 0; i < st->n_inputs; i++) res->truncated_inputs += st->stats.input_truncated[i];
}

void pile_prep_result_free(pile_prep_result *res)
{
    if (res) pile_buf_free(&res->summary);
}

static int run_pipeline(prep_state *st, const pile_tokenizer *tok, pile_prep_result *res, pile_err *err)
{
    const pile_prep_opts *o = st->opts;
    int threads = st->threads;
    pipe_t p;
    memset(&p, 0, sizeof p);
    p.st = st;
    p.tok = tok;
    p.start = st->resume;
    p.nslots = (size_t)threads * 2 + 2;
    if (p.nslots > 64) p.nslots = 64;
    p.slots = calloc(p.nslots, sizeof *p.slots);
    worker *ws = calloc((size_t)threads, sizeof *ws);
    prep_packer *pk = NULL;
    int rc = 0;
    if (!p.slots || !ws) rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
    if (!rc) rc = pile__prep_packer_create(&pk, st, err);
    int r = 0;
    if (!rc && (r = uv_mutex_init(&p.mu)) == 0 && (r = uv_cond_init(&p.cv)) < 0) uv_mutex_destroy(&p.mu);
    if (r < 0) rc = pile_err_set(err, PILE_EIO, "cannot create the pipeline's lock: %s", uv_strerror(r));
    if (rc) {
        pile__prep_packer_free(pk);
        free(p.slots);
        free(ws);
        return rc;
    }

    uint64_t total = 0, before = 0;
    for (size_t i = 0; i < st->n_inputs; i++) {
        total += st->order[i]->size;
        if (i < st->resume.input) before += st->order[i]->size;
    }
    res->input_bytes = total - before;
    pile_progress *prog = pile_progress_create(o->progress, o->progress != NULL, total);

    run_ctx x = {.st = st, .pk = pk, .opts = o, .resume_pending = st->resume.tok_off > 0};
    prep_split_stats tot0;
    pile__prep_stats_total(&st->stats, &tot0);
    for (int k = 1; k < PILE_SKIP_COUNT; k++) x.reported_skips += tot0.skipped[k];
    x.reported_repairs = tot0.repaired_utf8 + tot0.repaired_surrogate;
    /* a resume point inside a document: only concat has them */
    if (st->resume.tok_off && st->pack != PILE_PACK_CONCAT)
        rc = pile_err_set(err, PILE_ECORRUPT, "bad resume point in the manifest");

    uv_thread_t reader;
    int nstarted = 0, reader_started = 0;
    if (!rc && (r = uv_thread_create(&reader, reader_main, &p)) == 0) reader_started = 1;
    else if (!rc) rc = pile_err_set(err, PILE_EIO, "cannot start the reader thread: %s", uv_strerror(r));
    for (int t = 0; t < threads && !rc; t++) {
        ws[t].p = &p;
        if ((r = uv_thread_create(&ws[t].th, worker_main, &ws[t])) < 0) {
            if (nstarted == 0) rc = pile_err_set(err, PILE_EIO, "cannot start worker threads: %s", uv_strerror(r));
            break;
        }
        nstarted++;
    }

    double t_pack = 0;
    uint64_t docs_base = tot0.docs, toks_base = tot0.tokens;
    for (uint64_t seq = 0; !rc; seq++) {
        uv_mutex_lock(&p.mu);
        chunk *c = &p.slots[seq % p.nslots];
        while (!(seq < p.next_read && c->state == SLOT_DONE) && !(p.reader_done && seq == p.next_read))
            uv_cond_wait(&p.cv, &p.mu);
        int end = seq >= p.next_read;
        uv_mutex_unlock(&p.mu);
        if (end) break;
        double t0 = pile_now();
        rc = pack_chunk(&x, c, err);
        t_pack += pile_now() - t0;
        if (prog) {
            prep_split_stats tot;
            pile__prep_stats_total(&st->stats, &tot);
            pile_progress_update(prog, c->bytes_done, tot.docs - docs_base, tot.tokens - toks_base, 0);
        }
        uv_mutex_lock(&p.mu);
        c->state = SLOT_FREE;
        p.in_flight -= c->text.len;
        p.next_pack = seq + 1;
        uv_cond_broadcast(&p.cv);
        uv_mutex_unlock(&p.mu);
    }
    uv_mutex_lock(&p.mu);
    p.abort = 1;
    uv_cond_broadcast(&p.cv);
    uv_mutex_unlock(&p.mu);
    if (reader_started) uv_thread_join(&reader);
    for (int t = 0; t < nstarted; t++) uv_thread_join(&ws[t].th);
    if (prog) {
        prep_split_stats tot;
        pile__prep_stats_total(&st->stats, &tot);
        pile_progress_update(prog, total, tot.docs - docs_base, tot.tokens - toks_base, 1);
        pile_progress_finish(prog);
    }
    pile_progress_free(prog);
    res->read_s = p.t_read;
    res->jsonl_bytes = p.jsonl_bytes;
    res->decoder_bytes = p.decoder_bytes;
    res->parse_s = p.t_parse;
    res->tokenize_s = p.t_tok;
    res->pack_s = t_pack;

    pile__prep_packer_free(pk);
    for (size_t s = 0; s < p.nslots; s++) chunk_free(&p.slots[s]);
    free(p.slots);
    free(ws);
    uv_mutex_destroy(&p.mu);
    uv_cond_destroy(&p.cv);
    return rc;
}

/* Worker threads: by default the CPUs this process may run on (affinity,
 * cgroup quota), not all the machine has. */
static int resolve_threads(int asked)
{
    unsigned avail = uv_available_parallelism();
    int threads = asked > 0 ? asked : avail < 256 ? (int)avail : 256;
    if (threads < 1) threads = 1;
    return threads > 256 ? 256 : threads;
}

/* The window bound as the decoder applies it: a power of two, 1 KiB to 2 GiB. */
static uint64_t zstd_window_of(const pile_prep_opts *o, int threads)
{
    uint64_t want = o->zstd_memory ? o->zstd_memory
                                   : pile_lines_window_fit(IN_FLIGHT_BYTES + (uint64_t)threads * THREAD_BYTES);
    uint64_t w = 1024;
    while (w < ((uint64_t)1 << 31) && w * 2 <= want) w *= 2;
    return w;
}

typedef struct file_id {
    uint64_t dev, ino;
    size_t i;
} file_id;

static int cmp_file_id(const void *a, const void *b)
{
    const file_id *x = a, *y = b;
    if (x->dev != y->dev) return x->dev < y->dev ? -1 : 1;
    if (x->ino != y->ino) return x->ino < y->ino ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* st->order: every file once (as first given; a later spelling of it is
 * dropped with a warning), in processing order. Refuses a file in two splits
 * and a name with words of two splits that no rule settles. */
static int build_order(prep_state *st, pile_err *err)
{
    const pile_prep_opts *o = st->opts;
    size_t n = o->n_inputs, m = 0;
    file_id *ids = malloc(n * sizeof *ids);
    size_t *first = malloc(n * sizeof *first);
    st->order = malloc(n * sizeof *st->order);
    int rc = ids && first && st->order ? 0 : pile_err_set(err, PILE_ENOMEM, "out of memory");
    for (size_t i = 0; i < n && !rc; i++) ids[i] = (file_id){o->inputs[i].dev, o->inputs[i].ino, i};
    if (!rc) qsort(ids, n, sizeof *ids, cmp_file_id);
    for (size_t k = 0; k < n && !rc; k++) {
        int dup = k > 0 && (ids[k].dev || ids[k].ino) && ids[k].dev == ids[k - 1].dev && ids[k].ino == ids[k - 1].ino;
        first[ids[k].i] = dup ? first[ids[k - 1].i] : ids[k].i;
    }
    const unsigned both = 1u << PILE_SPLIT_VAL | 1u << PILE_SPLIT_TEST;
    for (size_t i = 0; i < n && !rc; i++) {
        const pile_prep_input *in = &o->inputs[i], *f = &o->inputs[first[i]];
        if ((in->name_splits & both) == both && !in->rule) {
            rc = pile_err_set(err, PILE_EINVAL,
                              "'%s' has words of both the val and the test split in its name; "
                              "say which it is with --train, --val or --test",
                              in->path);
        } else if (f != in && f->split != in->split) {
            rc = pile_err_set(err, PILE_EINVAL, "'%s' and '%s' are the same file, put in the %s and the %s split",
                              f->path, in->path, pile_prep_split_name(f->split), pile_prep_split_name(in->split));
        } else if (f != in) {
            logf_(o, "warning: '%s' is the same file as '%s': read once", in->path, f->path);
        } else {
            st->order[m++] = in;
        }
    }
    free(ids);
    free(first);
    st->n_inputs = m;
    if (!rc) qsort(st->order, m, sizeof *st->order, cmp_order);
    return rc;
}

/* Before the first step: every zstd input still to read opens with a
 * window within the bound (a later frame is checked when it comes). */
static int check_windows(const prep_state *st, pile_err *err)
{
    pile_lines_opts lo = reader_opts(st);
    for (size_t i = st->resume.input; i < st->n_inputs; i++)
        PILE_FORWARD_IF_ERR(pile_lines_check_window(st->order[i]->path, &lo, err));
    return 0;
}

/* A run that found no document at all failed, whatever it skipped; a split
 * whose every line was skipped is only warned about (it has no shards). */
static int check_documents(const prep_state *st, pile_err *err)
{
    prep_split_stats tot;
    pile__prep_stats_total(&st->stats, &tot);
    if (tot.docs) {
        for (int sp = 0; sp < PREP_NSPLITS; sp++)
            if (st->stats.split[sp].lines && !st->stats.split[sp].docs)
                logf_(st->opts, "warning: every line of the %s split was skipped: it has no shards",
                      pile_prep_split_name((pile_split)sp));
        return 0;
    }
    if (!tot.lines) return pile_err_set(err, PILE_EFORMAT, "no documents: the inputs hold no lines");
    char counts[256] = "";
    size_t at = 0;
    for (int k = 1; k < PILE_SKIP_COUNT && at < sizeof counts; k++)
        if (tot.skipped[k])
            at += (size_t)snprintf(counts + at, sizeof counts - at, "%s%s %" PRIu64, at ? ", " : "",
                                   pile_skip_name((pile_skip)k), tot.skipped[k]);
    char hint[160] = "";
    if (tot.skipped[PILE_SKIP_NO_TEXT])
        snprintf(hint, sizeof hint, "; is the text under another member than '%s'? (--text-key)", st->text_key);
    return pile_err_set(err, PILE_EFORMAT, "no documents: all %" PRIu64 " lines were skipped (%s)%s", tot.lines,
                        counts, hint);
}

int pile_prep_run(const pile_prep_opts *opts, pile_prep_result *res_out, pile_err *err)
{
    double t_start = pile_now();
    pile_prep_result res_local;
    pile_prep_result *res = res_out ? res_out : &res_local;
    memset(res, 0, sizeof *res);
    pile_err_clear(err);

    if (!opts->output_dir || !*opts->output_dir) return pile_err_set(err, PILE_EINVAL, "no output folder given");
    if (opts->n_inputs == 0) return pile_err_set(err, PILE_EINVAL, "no input files");

    prep_state st;
    memset(&st, 0, sizeof st);
    st.opts = opts;
    st.n_inputs = opts->n_inputs;
    st.max_length = opts->max_length ? opts->max_length : 2048;
    st.pack = opts->pack;
    st.shard_bytes = opts->shard_bytes ? opts->shard_bytes : (uint64_t)256 << 20;
    st.window_rows = opts->window_rows ? opts->window_rows : 1024;
    st.max_line_bytes = opts->max_line_bytes ? opts->max_line_bytes : PILE_LINES_DEFAULT_MAX;
    st.megatron = opts->megatron;
    st.tok_spec = opts->tokenizer_spec && *opts->tokenizer_spec ? opts->tokenizer_spec : "bytes";
    st.text_key = opts->text_key ? opts->text_key : "text";
    st.subset_key = opts->subset_key ? opts->subset_key : "meta.pile_set_name";
    st.threads = resolve_threads(opts->threads);
    st.zstd_window = zstd_window_of(opts, st.threads);
    pile_jsonl_parser *keys = pile_jsonl_parser_create();
    if (!keys) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    int krc = pile_jsonl_parser_set_keys(keys, st.text_key, st.subset_key, err);
    pile_jsonl_parser_free(keys);
    if (krc) return krc;
    if (st.max_length > (1u << 24))
        return pile_err_set(err, PILE_EINVAL, "max length %u is too large (at most %u)", st.max_length, 1u << 24);
    if (st.pack != PILE_PACK_CONCAT && st.pack != PILE_PACK_BEST_FIT)
        return pile_err_set(err, PILE_EINVAL, "unknown packing mode %d", (int)st.pack);

    pile_tokenizer *tok = NULL;
    int rc = pile_tokenizer_open(&tok, st.tok_spec, err);
    if (rc) return rc;
    st.tok_kind = pile_tokenizer_kind(tok);
    pile_tokenizer_fingerprint(tok, st.tok_fp);
    st.vocab_size = pile_tokenizer_vocab_size(tok);
    st.eot_id = pile_tokenizer_eot_id(tok);
    uint64_t row_bytes = (uint64_t)st.max_length * (st.vocab_size <= 65536 ? 2 : 4);
    st.rows_per_shard = st.shard_bytes / row_bytes;
    if (st.rows_per_shard == 0) st.rows_per_shard = 1;

    rc = build_order(&st, err);
    res->threads = st.threads;
    res->zstd_window_max = st.zstd_window;
    st.resume.line = 1;
    if (!rc && pile__prep_stats_init(&st.stats, st.n_inputs)) rc = pile_err_set(err, PILE_ENOMEM, "out of memory");

    if (!rc) rc = pile_fs_mkdirs(opts->output_dir, err);
    int loaded = 0;
    size_t stray = 0;
    if (!rc && opts->force) rc = clean_output(&st, 1, 0, &stray, err);
    if (!rc && !opts->force) {
        rc = pile__prep_manifest_load(&st, err);
        if (rc > 0) {
            loaded = 1;
            rc = 0;
        }
    }
    if (!rc && loaded && st.complete) {
        res->already_complete = 1;
        fill_result(&st, res);
        pile__prep_stats_format(&st, &res->summary);
        goto out;
    }
    if (!rc) rc = clean_output(&st, 0, loaded, &stray, err);
    if (!rc && stray)
        rc = pile_err_set(err, PILE_EMISMATCH,
                          "output folder '%s' holds %zu shards but no manifest.json; "
                          "use a new output folder, or --force to replace them",
                          opts->output_dir, stray);
    if (!rc && loaded) {
        res->resumed = 1;
        res->shards_kept = st.n_shards;
        char where[PILE_ERR_MSG_MAX / 2];
        if (st.resume.input < st.n_inputs)
            snprintf(where, sizeof where, "'%s:%" PRIu64 "'", st.order[st.resume.input]->path, st.resume.line);
        else
            snprintf(where, sizeof where, "the end of the inputs");
        logf_(opts, "resuming in '%s': %zu shards kept, going on from %s", opts->output_dir, st.n_shards, where);
    }
    if (!rc) rc = check_windows(&st, err);
    if (!rc && !loaded) rc = pile__prep_manifest_write(&st, err);
    if (!rc) rc = run_pipeline(&st, tok, res, err);
    if (!rc) rc = check_reconciliation(&st, err);
    if (!rc) rc = check_documents(&st, err);
    if (!rc && st.megatron) rc = megatron_export(&st, err);
    if (!rc) {
        st.complete = 1;
        st.resume.input = st.n_inputs;
        st.resume.line = 1;
        st.resume.tok_off = 0;
        rc = pile__prep_manifest_write(&st, err);
    }
    if (!rc) {
        fill_result(&st, res);
        res->wall_s = pile_now() - t_start;
        pile__prep_stats_format(&st, &res->summary);
        double w = res->wall_s > 0 ? res->wall_s : 1e-9;
        pile_buf_printf(&res->summary,
                        "shards %zu (%" PRIu64 " kept from an earlier run); wall time %.2f s; "
                        "%.1f MB/s of JSONL (%.1f MB/s on disk); %.3gM tokens/s\n",
                        st.n_shards, res->shards_kept, res->wall_s, (double)res->jsonl_bytes / 1e6 / w,
                        (double)res->input_bytes / 1e6 / w, (double)res->tokens / 1e6 / w);
        double outside = res->read_s + res->parse_s + res->pack_s;
        pile_buf_printf(&res->summary,
                        "stage time (thread-seconds): read %.2f, parse %.2f, tokenize %.2f, pack+write %.2f "
                        "(read+parse+pack = %.1f%% of tokenize)\n",
                        res->read_s, res->parse_s, res->tokenize_s, res->pack_s,
                        res->tokenize_s > 0 ? 100.0 * outside / res->tokenize_s : 0.0);
        struct rusage ru;
        res->peak_rss = getrusage(RUSAGE_SELF, &ru) == 0 ? (uint64_t)ru.ru_maxrss * 1024 : 0;
        pile_buf_printf(&res->summary,
                        "memory: peak resident %.1f MiB with %d worker threads; the decompressor allocated up to %.2f MiB "
                        "(one input at a time; zstd windows up to %.0f MiB allowed, --zstd-memory)\n",
                        (double)res->peak_rss / 1048576.0, res->threads, (double)res->decoder_bytes / 1048576.0,
                        (double)res->zstd_window_max / 1048576.0);
    }
out:
    pile__prep_state_free(&st);
    free(st.order);
    pile_tokenizer_close(tok);
    if (!res_out) pile_prep_result_free(res);
    return rc;
}
