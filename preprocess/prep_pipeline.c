/* pile-prep's pipeline: reader threads cut the inputs into numbered chunks
 * of whole lines, decoded straight into the chunks' buffers and found there
 * (no line is copied but the one a chunk's end cuts; several inputs at
 * once, each read by one reader: one zstd frame decompresses on one core,
 * so the parallelism comes from the files), N workers parse and tokenize
 * whole chunks (one JSON parser and one encoder each) and narrow the ids
 * to the shards' width, and the calling
 * thread packs the chunk results strictly in input order (input, then chunk
 * within it). Packing only decides where each id goes, from token counts:
 * the copies it decides for a chunk (into the rows' places in the shard
 * writer's ring, for best-fit into its window first) go back to the workers
 * as one job, which they take before any new chunk to tokenize. Chunks live
 * in a pool of slots, so memory is bounded by the pool whatever the input
 * size, and the output depends only on the order of the lines, never on
 * the number of threads or on timing. */
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
#include "pile_utf8.h"

#define CHUNK_BYTES ((size_t)1 << 20)         /* line bytes per chunk (a chunk ends at a line end) */
#define CHUNK_MAX_LINES 16384                 /* and at most this many lines */
#define IN_FLIGHT_BYTES ((size_t)48 << 20)    /* line bytes in the ring before the reader waits */
#define SLOT_KEEP_BYTES ((size_t)8 << 20)     /* a slot's buffers above this are freed after use */
#define REPORT_MAX 10                         /* skipped / repaired lines reported one by one */
#define DETAIL_MAX 160
#define THREAD_BYTES ((size_t)16 << 20)       /* a worker's parser, encoder and slots, generously */
#define READER_SHARE 4                        /* workers per reader thread */
#define MAX_SLOTS 96

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

/* A slot is FREE, being FILLed by a reader, READ (waiting for a worker), at
 * WORK, DONE (waiting for the packer), PACKED (its copies waiting for a
 * worker) or at COPY. */
enum { SLOT_FREE, SLOT_FILL, SLOT_READ, SLOT_WORK, SLOT_DONE, SLOT_PACKED, SLOT_COPY };

/* One copy the packer decided (prep_sink.move). */
typedef struct move {
    pile_shard_writer *w;
    uint64_t slot;
    unsigned char *dst;
    const unsigned char *src;
    uint32_t at, n;
} move;

typedef struct chunk {
    size_t input;
    uint64_t seq;     /* its place in its input: 0, 1, ... */
    int last, truncated;
    int rc;           /* an error met by the reader or a worker */
    pile_err err;
    uint64_t bytes_done; /* input bytes consumed when the chunk was cut (progress) */
    pile_buf text;    /* the lines, each followed by PILE_LINES_PADDING writable bytes */
    size_t text_bytes; /* text.len when submitted (the text of a huge line is freed once parsed) */
    size_t longest;    /* the longest line's length */
    line_rec *lines;
    item *items;
    size_t n, cap;
    pile_ids tokens;  /* the documents' ids, narrowed in place to one stream at the shards' width (narrow_doc) */
    pile_buf strs;
    move *moves;       /* the packer's copies out of (and, best-fit, into its window from) this chunk */
    size_t nmoves, cap_moves;
    int state;
    double t_parse, t_tok;     /* wall seconds */
    double cpu_parse, cpu_tok; /* the worker's CPU seconds */
} chunk;

/* The pool's rule, which keeps every reader moving without a deadlock: the
 * reader of the lowest input not yet wholly read (`first_open`, the one the
 * packer waits for sooner or later) may fill the whole pool; readers of
 * later inputs (reading ahead) only half of its slots and half of
 * IN_FLIGHT_BYTES. Inputs are claimed in order, and a new one only while
 * the first-frame zstd windows of the inputs being read fit the window bound
 * together (one at a time when they do not), so the decoders' memory stays
 * within what one file may take. */
typedef struct pipe {
    prep_state *st;
    const pile_tokenizer *tok;
    prep_resume start; /* where this run starts reading: the packer moves st->resume on while the readers run */
    unsigned width;    /* bytes per id in the shards: 2 or 4 */
    chunk *slots;
    size_t nslots;
    uv_mutex_t mu;
    uv_cond_t cv;
    size_t used;          /* slots not free */
    size_t ready;         /* slots READ */
    size_t packed, copying; /* slots PACKED, COPY */
    int copy_rc;          /* the first copy that failed, and why */
    pile_err copy_err;
    size_t in_flight;     /* line bytes of chunks read and not yet packed */
    size_t next_claim;    /* the next input a reader takes */
    size_t first_open;    /* the lowest input not wholly read */
    uint8_t *read_done;   /* per input */
    uint64_t *windows;    /* per input: its first zstd frame's window (0: not zstd) */
    uint64_t window_open; /* the windows of the inputs being read */
    int reading, reading_max; /* inputs being read now, and the most at once */
    int readers_left, stop_claims, abort;
    /* thread-seconds so far (live, for the progress line), and CPU seconds */
    double t_read, t_parse, t_tok, t_copy;
    double cpu_read, cpu_parse, cpu_tok, cpu_copy;
    uint64_t jsonl_bytes; /* decompressed line bytes read */
    size_t decoder_bytes; /* the most one input's decompressor held */
} pipe_t;

static void chunk_free(chunk *c)
{
    pile_buf_free(&c->text);
    pile_buf_free(&c->strs);
    pile_ids_free(&c->tokens);
    free(c->moves);
    free(c->lines);
    free(c->items);
}

/* 1 if input i has chunks read and not yet packed (called with mu held). */
static int holds_chunks(const pipe_t *p, size_t i)
{
    for (size_t s = 0; s < p->nslots; s++)
        if (p->slots[s].state != SLOT_FREE && p->slots[s].state != SLOT_FILL && p->slots[s].input == i) return 1;
    return 0;
}

/* Takes a free slot for chunk `seq` of input i; NULL when the job is aborted. */
static chunk *acquire(pipe_t *p, size_t i, uint64_t seq)
{
    uv_mutex_lock(&p->mu);
    for (;;) {
        if (p->abort) break;
        int first = i == p->first_open;
        size_t slots = first ? p->nslots : p->nslots / 2;
        size_t bytes = first ? IN_FLIGHT_BYTES : IN_FLIGHT_BYTES / 2;
        if (p->used < slots && (p->in_flight < bytes || (first && !holds_chunks(p, i)))) break;
        uv_cond_wait(&p->cv, &p->mu);
    }
    chunk *c = NULL;
    for (size_t s = 0; !p->abort && s < p->nslots && !c; s++)
        if (p->slots[s].state == SLOT_FREE) c = &p->slots[s];
    if (c) {
        c->state = SLOT_FILL;
        c->input = i;
        c->seq = seq;
        p->used++;
    }
    uv_mutex_unlock(&p->mu);
    if (!c) return NULL;
    if (c->text.cap > SLOT_KEEP_BYTES) pile_buf_free(&c->text);
    if (c->strs.cap > SLOT_KEEP_BYTES) pile_buf_free(&c->strs); /* a huge subset name */
    if (c->tokens.cap > SLOT_KEEP_BYTES / sizeof *c->tokens.data) pile_ids_free(&c->tokens);
    c->text.len = c->strs.len = c->tokens.len = 0;
    c->n = 0;
    c->nmoves = 0;
    c->longest = 0;
    c->last = c->truncated = c->rc = 0;
    c->t_parse = c->t_tok = c->cpu_parse = c->cpu_tok = 0;
    pile_err_clear(&c->err);
    return c;
}

/* Hands a filled chunk to the workers; t_read, cpu_read: the reader's wall
 * and CPU time on it. */
static void submit(pipe_t *p, chunk *c, double t_read, double cpu_read)
{
    uv_mutex_lock(&p->mu);
    c->state = SLOT_READ;
    c->text_bytes = c->text.len;
    p->in_flight += c->text_bytes;
    p->ready++;
    p->t_read += t_read;
    p->cpu_read += cpu_read;
    uv_cond_broadcast(&p->cv);
    uv_mutex_unlock(&p->mu);
}

/* ----------------------------------------------------------------- readers */

/* What a reader's line callback needs: the chunk its block fills, the
 * first line this run wants (a resumed input starts inside), and counts. */
typedef struct block_ctx {
    chunk *c;
    uint64_t skip_below, seen, jsonl_bytes;
} block_ctx;

/* Records one line of the chunk's block (pile_lines_fn): its text stays in
 * the chunk's buffer, where the reader decoded it. */
static int chunk_add_line(void *ctx, const pile_line *ln, pile_err *err)
{
    block_ctx *x = ctx;
    chunk *c = x->c;
    x->seen = ln->lineno;
    if (ln->lineno < x->skip_below) return 0;
    x->jsonl_bytes += ln->len + 1;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        line_rec *l = realloc(c->lines, cap * sizeof *l);
        if (!l) return pile_err_set(err, PILE_ENOMEM, "out of memory");
        c->lines = l;
        item *it = realloc(c->items, cap * sizeof *it);
        if (!it) return pile_err_set(err, PILE_ENOMEM, "out of memory");
        c->items = it;
        c->cap = cap;
    }
    line_rec *r = &c->lines[c->n++];
    r->lineno = ln->lineno;
    r->status = (uint8_t)ln->status;
    r->len = ln->len;
    r->off = ln->data ? (size_t)(ln->data - c->text.data) : 0;
    if (ln->len > c->longest) c->longest = ln->len;
    return c->n >= CHUNK_MAX_LINES;
}

static pile_lines_opts reader_opts(const prep_state *st)
{
    return (pile_lines_opts){.max_line = st->max_line_bytes, .max_window = st->zstd_window,
                             .window_flag = "--zstd-memory"};
}

/* What one reader thread counted, added to the pipe's at its end. */
typedef struct reader_acc {
    uint64_t jsonl_bytes;
    size_t decoder_bytes;
} reader_acc;

/* Reads input i into chunks. Returns 0, 1 when the job was aborted, or the
 * error it met (which its last chunk carries to the packer). */
static int read_input(pipe_t *p, size_t i, reader_acc *acc)
{
    prep_state *st = p->st;
    pile_lines_opts lo = reader_opts(st);
    uint64_t done_before = 0;
    for (size_t k = 0; k < i; k++) done_before += st->order[k]->size;
    uint64_t seq = 0;
    chunk *c = acquire(p, i, seq++);
    if (!c) return 1;
    const char *path = st->order[i]->path;
    block_ctx x = {c, i == p->start.input ? p->start.line : 1, 0, 0};
    pile_lines *lr = NULL;
    pile_err lerr;
    pile_err_clear(&lerr);
    double t0 = pile_now(), c0 = pile_cpu_now();
    int rc = pile_lines_open(&lr, path, &lo, &lerr);
    while (rc == 0) {
        int r = pile_lines_next_block(lr, &c->text, CHUNK_BYTES, chunk_add_line, &x, &lerr);
        if (r <= 0) {
            rc = r;
            break;
        }
        if (c->n == 0) continue; /* all before the resume point: the buffer is filled again */
        c->bytes_done = done_before + pile_lines_bytes_read(lr);
        submit(p, c, pile_now() - t0, pile_cpu_now() - c0);
        x.c = c = acquire(p, i, seq++);
        t0 = pile_now();
        c0 = pile_cpu_now();
        if (!c) {
            acc->jsonl_bytes += x.jsonl_bytes;
            pile_lines_close(lr);
            return 1;
        }
    }
    acc->jsonl_bytes += x.jsonl_bytes;
    uint64_t seen = x.seen, skip_below = x.skip_below;
    if (rc == 0 && seen + 1 < skip_below)
        rc = pile_err_set(&lerr, PILE_EMISMATCH,
                          "cannot resume: '%s' has %" PRIu64 " lines, the interrupted run had read %" PRIu64
                          "; use --force to start over",
                          path, seen, skip_below - 1);
    c->last = 1;
    c->truncated = rc == 0 && pile_lines_truncated(lr);
    if (lr && pile_lines_decoder_bytes(lr) > acc->decoder_bytes) acc->decoder_bytes = pile_lines_decoder_bytes(lr);
    c->rc = rc;
    if (rc) c->err = lerr;
    c->bytes_done = done_before + st->order[i]->size;
    pile_lines_close(lr);
    submit(p, c, pile_now() - t0, pile_cpu_now() - c0);
    return rc;
}

static void reader_main(void *arg)
{
    pipe_t *p = arg;
    prep_state *st = p->st;
    reader_acc acc = {0, 0};
    for (;;) {
        uv_mutex_lock(&p->mu);
        while (!p->abort && !p->stop_claims && p->next_claim < st->n_inputs && p->window_open &&
               p->window_open + p->windows[p->next_claim] > st->zstd_window)
            uv_cond_wait(&p->cv, &p->mu);
        if (p->abort || p->stop_claims || p->next_claim >= st->n_inputs) {
            uv_mutex_unlock(&p->mu);
            break;
        }
        size_t i = p->next_claim++;
        p->window_open += p->windows[i];
        if (++p->reading > p->reading_max) p->reading_max = p->reading;
        uv_mutex_unlock(&p->mu);
        int rc = read_input(p, i, &acc);
        uv_mutex_lock(&p->mu);
        p->window_open -= p->windows[i];
        p->reading--;
        p->read_done[i] = 1;
        while (p->first_open < st->n_inputs && p->read_done[p->first_open]) p->first_open++;
        if (rc) p->stop_claims = 1; /* the packer stops at this input: reading past it is wasted */
        uv_cond_broadcast(&p->cv);
        uv_mutex_unlock(&p->mu);
    }
    uv_mutex_lock(&p->mu);
    p->readers_left--;
    p->jsonl_bytes += acc.jsonl_bytes;
    if (acc.decoder_bytes > p->decoder_bytes) p->decoder_bytes = acc.decoder_bytes;
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

/* The subset name as a shard can hold it (1 to 65,535 bytes of UTF-8
 * without NUL), into the chunk's strings; *fixes gets PREP_NAME_* for what
 * was changed. An empty name is left out (the fallback subset). */
static int add_name(chunk *c, const char *s, size_t n, item *it, unsigned *fixes)
{
    if (n == 0) {
        *fixes |= PREP_NAME_EMPTY;
        return 0;
    }
    if (n <= PREP_NAME_MAX && !memchr(s, '\0', n) && pile_utf8_valid(s, n))
        return strs_add(c, s, n, &it->sub_off, &it->sub_len);
    pile_buf a = {0}, b = {0};
    long subs = pile_utf8_repair(s, n, &a);
    int rc = subs < 0 ? PILE_ENOMEM : 0;
    if (subs > 0) *fixes |= PREP_NAME_UTF8;
    for (size_t i = 0; !rc && i < a.len; i++) {
        if (a.data[i] != '\0') rc = pile_buf_append(&b, a.data + i, 1);
        else {
            rc = pile_buf_append(&b, "\xef\xbf\xbd", 3); /* U+FFFD */
            *fixes |= PREP_NAME_NUL;
        }
    }
    size_t len = b.len;
    if (len > PREP_NAME_MAX) {
        /* cut at a character boundary: back over continuation bytes */
        len = PREP_NAME_MAX;
        while (len > 0 && ((unsigned char)b.data[len] & 0xC0) == 0x80) len--;
        *fixes |= PREP_NAME_LONG;
    }
    if (!rc) rc = strs_add(c, b.data, len, &it->sub_off, &it->sub_len);
    pile_buf_free(&a);
    pile_buf_free(&b);
    return rc;
}

/* Narrows a document's ids in place to the shards' width and checks each
 * against the vocabulary; 0 when one is out of range. `base` ids precede it
 * in the chunk: its narrowed ids go to byte base * width, right after the
 * chunk's earlier documents', so that a chunk's documents form one
 * contiguous stream of ids at the shards' width, as the rows hold them, and
 * the packer can hand a row that lies inside a chunk to the writer as it
 * is (no copy of its own). This is the packer's per-token work, done here
 * in every worker while the ids are still in cache. 2 bytes: a block is
 * narrowed into a local array and copied down; its bytes end at byte
 * 2 * (base + at + k), never past 4 * (base + at + k) where the ids not yet
 * read begin. */
static int narrow_doc(uint32_t *data, size_t base, size_t n, unsigned width, uint32_t vocab)
{
    enum { BLOCK = 512 };
    uint32_t top = 0;
    const uint32_t *ids = data + base;
    if (width != 2) {
        for (size_t j = 0; j < n; j++) top = ids[j] > top ? ids[j] : top;
        return n == 0 || top < vocab;
    }
    uint16_t narrow[BLOCK];
    unsigned char *out = (unsigned char *)data + base * 2;
    for (size_t at = 0; at < n; at += BLOCK) {
        size_t k = n - at < BLOCK ? n - at : BLOCK;
        const uint32_t *in = ids + at;
        for (size_t j = 0; j < k; j++) {
            top = in[j] > top ? in[j] : top;
            narrow[j] = (uint16_t)in[j];
        }
        memcpy(out + at * 2, narrow, k * 2);
    }
    return n == 0 || top < vocab;
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
            /* The line's padding is the next line's start (or zeros): the
             * parser sees zeros there, as it would after a copy, and the
             * next line gets its bytes back */
            char *line = c->text.data + l->off, pad[PILE_LINES_PADDING];
            memcpy(pad, line + l->len, sizeof pad);
            memset(line + l->len, 0, sizeof pad);
            int r = pile_jsonl_parse(parser, line, l->len, &doc, detail, sizeof detail);
            memcpy(line + l->len, pad, sizeof pad);
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
                /* The document's text now lives in the parser; the line can
                 * go before its tokens are made. A line this large is the
                 * chunk's last (a chunk is cut right after it). */
                if (j + 1 == c->n && c->text.cap > SLOT_KEEP_BYTES) pile_buf_free(&c->text);
                unsigned fixes = doc.repairs;
                if (doc.subset && add_name(c, doc.subset, doc.subset_len, it, &fixes)) {
                    c->rc = pile_err_set(&c->err, PILE_ENOMEM, "out of memory");
                    break;
                }
                it->repairs = (uint8_t)fixes;
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
                if (!narrow_doc(c->tokens.data, it->tok_off, it->tok_len, p->width, st->vocab_size)) {
                    c->rc = pile_err_set(&c->err, PILE_ECORRUPT,
                                         "cannot tokenize '%s:%" PRIu64 "': the tokenizer gave an id over its "
                                         "vocabulary of %" PRIu32, path, l->lineno, st->vocab_size);
                    break;
                }
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

/* The slot's chunk is done with (mu held). */
static void slot_release(pipe_t *p, chunk *c)
{
    c->state = SLOT_FREE;
    p->used--;
    p->in_flight -= c->text_bytes;
    uv_cond_broadcast(&p->cv);
}

/* Does a chunk's copies, in order; the first failure is the pipe's. */
static void run_moves(pipe_t *p, chunk *c, size_t from)
{
    for (size_t k = from; k < c->nmoves; k++) {
        const move *m = &c->moves[k];
        if (!m->w) {
            memcpy(m->dst, m->src, (size_t)m->n * p->width);
            continue;
        }
        pile_err e;
        int rc = pile_shard_writer_fill(m->w, m->slot, m->at, m->src, m->n, &e);
        if (rc) {
            uv_mutex_lock(&p->mu);
            if (!p->copy_rc) {
                p->copy_rc = rc;
                p->copy_err = e;
            }
            uv_mutex_unlock(&p->mu);
            break;
        }
    }
}

/* Takes a PACKED chunk, does its copies and frees its slot (mu held, and
 * held again on return); 0 when there was none. */
static int copy_one(pipe_t *p)
{
    chunk *c = NULL;
    for (size_t s = 0; s < p->nslots && !c; s++)
        if (p->slots[s].state == SLOT_PACKED) c = &p->slots[s];
    if (!c) return 0;
    c->state = SLOT_COPY;
    p->packed--;
    p->copying++;
    uv_mutex_unlock(&p->mu);
    double t0 = pile_now(), c0 = pile_cpu_now();
    run_moves(p, c, 0);
    double t = pile_now() - t0, cpu = pile_cpu_now() - c0;
    uv_mutex_lock(&p->mu);
    p->t_copy += t;
    p->cpu_copy += cpu;
    p->copying--;
    slot_release(p, c);
    return 1;
}

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
    uv_mutex_lock(&p->mu);
    for (;;) {
        /* copies come from the packer until it ends the job (abort) */
        while (!p->abort && !p->ready && !p->packed) uv_cond_wait(&p->cv, &p->mu);
        if (p->abort) break;
        /* copies first: their slots and the writer's ring wait for them */
        if (copy_one(p)) continue;
        /* the oldest chunk read: the packer needs it first */
        chunk *c = NULL;
        for (size_t s = 0; s < p->nslots; s++) {
            chunk *x = &p->slots[s];
            if (x->state == SLOT_READ && (!c || x->input < c->input || (x->input == c->input && x->seq < c->seq)))
                c = x;
        }
        c->state = SLOT_WORK;
        p->ready--;
        uv_mutex_unlock(&p->mu);
        if (!parser || !enc) {
            if (!c->rc) c->rc = pile_err_set(&c->err, PILE_ENOMEM, "out of memory");
        } else if (!c->rc) {
            /* the thread's CPU clock is a system call: read once a chunk, and
             * shared between parse and tokenize as their wall times are */
            double c0 = pile_cpu_now();
            process_chunk(p, c, parser, enc);
            double cpu = pile_cpu_now() - c0, wall = c->t_parse + c->t_tok;
            c->cpu_parse = wall > 0 ? cpu * c->t_parse / wall : 0;
            c->cpu_tok = cpu - c->cpu_parse;
            if (c->longest > SLOT_KEEP_BYTES) {
                /* the parser's buffers and the encoder's merge scratch grew to one huge document: give them back */
                pile_jsonl_parser_free(parser);
                pile_encoder_free(enc);
                parser = pile_jsonl_parser_create();
                enc = pile_encoder_create(p->tok);
            }
        }
        uv_mutex_lock(&p->mu);
        p->t_parse += c->t_parse;
        p->t_tok += c->t_tok;
        p->cpu_parse += c->cpu_parse;
        p->cpu_tok += c->cpu_tok;
        c->state = SLOT_DONE;
        uv_cond_broadcast(&p->cv);
    }
    uv_mutex_unlock(&p->mu);
    pile_encoder_free(enc);
    pile_jsonl_parser_free(parser);
}

/* ----------------------------------------------------------------- packing */

typedef struct run_ctx {
    prep_state *st;
    prep_packer *pk;
    pipe_t *p;
    chunk *cur; /* the chunk being packed: the packer's copies join its job */
    const pile_prep_opts *opts;
    unsigned width; /* bytes per id in the chunks' narrowed stream */
    uint64_t reported_skips, reported_repairs, reported_names;
    int resume_pending;
} run_ctx;

void pile__prep_log(const pile_prep_opts *o, const char *fmt, ...)
{
    if (!o->log) return;
    char msg[PILE_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    o->log(o->log_ctx, msg);
}

/* What was done to a document's subset name, for a warning. */
static void name_words(unsigned f, char *out, size_t cap)
{
    static const struct {
        unsigned flag;
        const char *words;
    } w[] = {
        {PREP_NAME_EMPTY, "is empty: counted under '" PREP_FALLBACK_SUBSET "'"},
        {PREP_NAME_UTF8, "is not valid UTF-8: repaired with U+FFFD"},
        {PREP_NAME_NUL, "holds NUL: replaced by U+FFFD"},
        {PREP_NAME_LONG, "is longer than 65,535 bytes: cut there"},
        {PREP_NAME_OVER, "is new to a shard that already holds 65,536 names, the most a shard can: counted under '"
                         PREP_FALLBACK_SUBSET "'"},
    };
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
        if (f & w[i].flag) {
            int k = snprintf(out + n, cap - n, "%s%s", n ? "; " : "", w[i].words);
            if (k < 0 || (size_t)k >= cap - n) break;
            n += (size_t)k;
        }
}

static const char *repair_words(unsigned r)
{
    if ((r & PILE_REPAIR_UTF8) && (r & PILE_REPAIR_SURROGATE))
        return "invalid UTF-8 and lone surrogates replaced by U+FFFD";
    if (r & PILE_REPAIR_UTF8) return "invalid UTF-8 replaced by U+FFFD";
    return "lone surrogate escapes replaced by U+FFFD";
}

static int sink_move(void *ctx, pile_shard_writer *w, uint64_t slot, uint32_t at, unsigned char *dst,
                     const unsigned char *src, uint32_t n, pile_err *err)
{
    run_ctx *x = ctx;
    chunk *c = x->cur;
    if (c->nmoves == c->cap_moves) {
        size_t cap = c->cap_moves ? c->cap_moves * 2 : 256;
        move *v = realloc(c->moves, cap * sizeof *v);
        if (!v) return pile_err_set(err, PILE_ENOMEM, "out of memory");
        c->moves = v;
        c->cap_moves = cap;
    }
    c->moves[c->nmoves++] = (move){w, slot, dst, src, at, n};
    return 0;
}

/* Every copy handed over so far done: the chunk being packed's here, the
 * jobs no worker has taken here too, then a wait for those being done. */
static int sink_drain(void *ctx, pile_err *err)
{
    run_ctx *x = ctx;
    pipe_t *p = x->p;
    if (x->cur) {
        run_moves(p, x->cur, 0);
        x->cur->nmoves = 0;
    }
    uv_mutex_lock(&p->mu);
    while (!p->copy_rc && (copy_one(p) || p->copying)) {
        if (p->copying && !p->packed) uv_cond_wait(&p->cv, &p->mu);
    }
    int rc = p->copy_rc;
    if (rc) *err = p->copy_err;
    uv_mutex_unlock(&p->mu);
    return rc;
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
                pile__prep_log(x->opts, "warning: skipped '%s:%" PRIu64 "': %s: %.*s%s", in->path, l->lineno, why, dl, det,
                      x->reported_skips == REPORT_MAX ? " (further skipped lines are only counted)" : "");
            continue;
        }
        uint32_t gid;
        const char *sub = it->sub_len == UINT32_MAX ? PREP_FALLBACK_SUBSET : c->strs.data + it->sub_off;
        size_t sublen = it->sub_len == UINT32_MAX ? strlen(PREP_FALLBACK_SUBSET) : it->sub_len;
        unsigned repairs = it->repairs;
        if (pile__prep_names_intern(&st->stats.subsets, sub, sublen, &gid))
            return pile_err_set(err, PILE_ENOMEM, "out of memory");
        /* a resumed document keeps the name the interrupted run chose for it */
        int over = 0;
        PILE_FORWARD_IF_ERR(pile__prep_packer_subset(x->pk, gid, tok_off && st->resume.fallback, &gid, &over, err));
        if (over) repairs |= PREP_NAME_OVER;
        if (pile__prep_stats_doc(&st->stats, split, i, gid, it->tok_len, repairs, +1))
            return pile_err_set(err, PILE_ENOMEM, "out of memory");
        if ((repairs & (PILE_REPAIR_UTF8 | PILE_REPAIR_SURROGATE)) && x->reported_repairs++ < REPORT_MAX)
            pile__prep_log(x->opts, "warning: repaired '%s:%" PRIu64 "': %s%s", in->path, l->lineno,
                           repair_words(repairs), x->reported_repairs == REPORT_MAX ? " (further repairs are only counted)" : "");
        if ((repairs & PREP_NAME_FIXES) && x->reported_names++ < REPORT_MAX) {
            char words[400];
            name_words(repairs, words, sizeof words);
            pile__prep_log(x->opts, "warning: the subset name of '%s:%" PRIu64 "' %s%s", in->path, l->lineno, words,
                           x->reported_names == REPORT_MAX ? " (further fixed names are only counted)" : "");
        }
        if (tok_off >= it->tok_len)
            return pile_err_set(err, PILE_EMISMATCH,
                                "cannot resume: the document on line %" PRIu64 " of '%s' is shorter than before; "
                                "use --force to start over",
                                l->lineno, in->path);
        const unsigned char *ids = (const unsigned char *)c->tokens.data + it->tok_off * x->width; /* narrowed */
        PILE_FORWARD_IF_ERR(
            pile__prep_packer_doc(x->pk, split, i, l->lineno, ids, it->tok_len, tok_off, gid, repairs, err));
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
            pile__prep_log(x->opts, "warning: '%s' is truncated: kept the complete lines before the cut", in->path);
        }
        if (i + 1 == st->n_inputs || st->order[i + 1]->split != split)
            PILE_FORWARD_IF_ERR(pile__prep_packer_end_split(x->pk, split, i + 1, err));
    }
    return 0;
}

/* -------------------------------------------------------------------- run */

static int cmp_order(const void *a, const void *b)
{
    const pile_prep_input *x = *(const pile_prep_input *const *)a, *y = *(const pile_prep_input *const *)b;
    if (x->split != y->split) return (int)x->split - (int)y->split;
    return x < y ? -1 : x > y; /* the given order within a split */
}

/* Replaces (or adds) the record of OUT/name with the file's present size and checksum. */
static int record_file(prep_state *st, prep_files *f, const char *name, pile_err *err)
{
    pile_buf p = {0};
    uint64_t h = 0, size = 0;
    int rc = pile_fs_join(&p, st->opts->output_dir, name) ? pile_err_set(err, PILE_ENOMEM, "out of memory") : 0;
    if (!rc) rc = pile__prep_file_xxh3(p.data, &h, &size, err);
    pile_buf_free(&p);
    for (size_t i = 0; !rc && i < f->n; i++)
        if (!strcmp(f->v[i].name, name)) {
            f->v[i].size = size;
            f->v[i].xxh3 = h;
            return 0;
        }
    if (!rc && pile__prep_files_add(f, name, size, h)) rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
    return rc;
}

/* Writes <split>.bin/.idx for the splits in `splits` (a bit per split) and
 * records each file's checksum (read back from the disk) in the manifest. */
static int megatron_export(prep_state *st, unsigned splits, pile_err *err)
{
    int rc = 0;
    pile_buf prefix = {0}, name = {0};
    for (int sp = 0; sp < PREP_NSPLITS && !rc; sp++) {
        size_t n = 0;
        for (size_t i = 0; i < st->n_shards; i++) n += st->shards[i].split == (pile_split)sp;
        if (!n || !(splits & (1u << sp))) continue;
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
        static const char *const exts[] = {".bin", ".idx"};
        for (int e = 0; e < 2 && !rc; e++) {
            name.len = 0;
            if (pile_buf_printf(&name, "%s%s", pile_prep_split_name((pile_split)sp), exts[e]))
                rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
            else
                rc = record_file(st, &st->mega_files, name.data, err);
        }
        for (size_t i = 0; i < n; i++) free(paths[i]);
        free(paths);
    }
    pile_buf_free(&prefix);
    pile_buf_free(&name);
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

/* The busiest stage: each stage's busy thread-seconds over what its threads
 * had (wall time x threads; readers: the most inputs read at once), so a
 * user sees whether more cores would help. The workers' stage is named
 * parse+tokenize and counts their copies of the ids into the rows too.
 * Fills *name and returns its share. */
static double busiest(double wall, double read_s, int readers, double work_s, int workers, double pack_s,
                      const char **name)
{
    double w = wall > 1e-9 ? wall : 1e-9;
    double u_read = read_s / (w * (readers > 0 ? readers : 1)), u_work = work_s / (w * workers), u_pack = pack_s / w;
    *name = "parse+tokenize";
    double best = u_work;
    if (u_read > best) {
        best = u_read;
        *name = "read";
    }
    if (u_pack > best) {
        best = u_pack;
        *name = "pack+write";
    }
    return best > 1 ? 1 : best;
}

void pile__prep_stage_line(const pile_prep_result *res, pile_buf *out)
{
    const char *name;
    double w = res->pipeline_s > 1e-9 ? res->pipeline_s : 1e-9;
    double work = res->parse_s + res->tokenize_s + res->copy_s;
    double share = busiest(res->pipeline_s, res->read_s, res->readers, work, res->threads, res->pack_s, &name);
    const char *advice = !strcmp(name, "parse+tokenize")
                             ? "more threads (and cores) would make it faster"
                         : !strcmp(name, "read")
                             ? "reading limits it: one file decompresses on one core, so more input files read at "
                               "once would help, more threads would not"
                             : "packing and writing limit it: more threads would not help";
    pile_buf_printf(out,
                    "busiest stage: %s, %.0f%% of the wall time (read %.0f%% of %d reader%s, parse+tokenize %.0f%% "
                    "of %d worker%s, pack+write %.0f%% of 1): %s\n",
                    name, 100 * share, 100 * res->read_s / (w * (res->readers > 0 ? res->readers : 1)), res->readers,
                    res->readers == 1 ? "" : "s", 100 * work / (w * res->threads),
                    res->threads, res->threads == 1 ? "" : "s", 100 * res->pack_s / w, advice);
}

/* The slot of chunk seq of input i, read or on its way (called with mu
 * held), or NULL. */
static chunk *find_chunk(pipe_t *p, size_t i, uint64_t seq)
{
    for (size_t s = 0; s < p->nslots; s++)
        if (p->slots[s].state != SLOT_FREE && p->slots[s].input == i && p->slots[s].seq == seq) return &p->slots[s];
    return NULL;
}

int pile__prep_pipeline(prep_state *st, const pile_tokenizer *tok, pile_prep_result *res, pile_err *err)
{
    const pile_prep_opts *o = st->opts;
    int threads = st->threads;
    double t_begin = pile_now();
    pipe_t p;
    memset(&p, 0, sizeof p);
    p.st = st;
    p.tok = tok;
    p.start = st->resume;
    p.width = pile_shard_token_bytes(st->vocab_size);
    size_t left = st->resume.input < st->n_inputs ? st->n_inputs - st->resume.input : 0;
    /* one reader for every READER_SHARE workers (a core decompresses zstd
     * several times as fast as one tokenizes), at most one per input left */
    int nreaders = 1 + threads / READER_SHARE;
    if ((size_t)nreaders > left) nreaders = (int)left;
    p.nslots = (size_t)threads * 2 + 2 + 2 * (size_t)nreaders;
    if (p.nslots > MAX_SLOTS) p.nslots = MAX_SLOTS;
    p.first_open = p.next_claim = st->resume.input;
    p.slots = calloc(p.nslots, sizeof *p.slots);
    p.read_done = calloc(st->n_inputs + 1, 1);
    p.windows = calloc(st->n_inputs + 1, sizeof *p.windows);
    worker *ws = calloc((size_t)threads, sizeof *ws);
    uv_thread_t *rs = calloc((size_t)nreaders + 1, sizeof *rs);
    prep_packer *pk = NULL;
    int rc = 0;
    if (!p.slots || !p.read_done || !p.windows || !ws || !rs) rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
    for (size_t i = st->resume.input; !rc && i < st->n_inputs; i++) {
        pile_err ignored; /* an input that cannot be opened fails in its reader, with the message */
        if (pile_lines_first_window(st->order[i]->path, &p.windows[i], &ignored)) p.windows[i] = 0;
    }
    if (!rc) rc = pile__prep_packer_create(&pk, st, err);
    int r = 0;
    if (!rc && (r = uv_mutex_init(&p.mu)) == 0 && (r = uv_cond_init(&p.cv)) < 0) uv_mutex_destroy(&p.mu);
    if (r < 0) rc = pile_err_set(err, PILE_EIO, "cannot create the pipeline's lock: %s", uv_strerror(r));
    if (rc) {
        pile__prep_packer_free(pk);
        free(p.slots);
        free(p.read_done);
        free(p.windows);
        free(ws);
        free(rs);
        return rc;
    }

    uint64_t total = 0, before = 0;
    for (size_t i = 0; i < st->n_inputs; i++) {
        total += st->order[i]->size;
        if (i < st->resume.input) before += st->order[i]->size;
    }
    res->input_bytes = total - before;
    pile_progress *prog = pile_progress_create(o->progress, o->progress != NULL, total);

    run_ctx x = {.st = st, .pk = pk, .p = &p, .opts = o, .width = p.width, .resume_pending = st->resume.tok_off > 0};
    pile__prep_packer_set_sink(pk, &(prep_sink){&x, sink_move, sink_drain});
    prep_split_stats tot0;
    pile__prep_stats_total(&st->stats, &tot0);
    for (int k = 1; k < PILE_SKIP_COUNT; k++) x.reported_skips += tot0.skipped[k];
    x.reported_repairs = tot0.repaired_utf8 + tot0.repaired_surrogate;
    for (int k = 0; k < PREP_NFIX; k++) x.reported_names += tot0.name_fixed[k];
    /* a resume point inside a document: only concat has them */
    if (st->resume.tok_off && st->pack != PILE_PACK_CONCAT)
        rc = pile_err_set(err, PILE_ECORRUPT, "bad resume point in the manifest");

    int nstarted = 0, rstarted = 0;
    for (int t = 0; t < nreaders && !rc; t++) {
        uv_mutex_lock(&p.mu);
        p.readers_left++;
        uv_mutex_unlock(&p.mu);
        if ((r = uv_thread_create(&rs[t], reader_main, &p)) < 0) {
            uv_mutex_lock(&p.mu);
            p.readers_left--;
            uv_mutex_unlock(&p.mu);
            if (rstarted == 0) rc = pile_err_set(err, PILE_EIO, "cannot start the reader thread: %s", uv_strerror(r));
            break;
        }
        rstarted++;
    }
    for (int t = 0; t < threads && !rc; t++) {
        ws[t].p = &p;
        if ((r = uv_thread_create(&ws[t].th, worker_main, &ws[t])) < 0) {
            if (nstarted == 0) rc = pile_err_set(err, PILE_EIO, "cannot start worker threads: %s", uv_strerror(r));
            break;
        }
        nstarted++;
    }

    double t_pack = 0, cpu_pack = 0;
    uint64_t docs_base = tot0.docs, toks_base = tot0.tokens;
    /* inputs in order, each input's chunks in order */
    for (size_t i = st->resume.input; i < st->n_inputs && !rc; i++) {
        int last = 0;
        for (uint64_t seq = 0; !last && !rc; seq++) {
            uv_mutex_lock(&p.mu);
            chunk *c;
            while (!((c = find_chunk(&p, i, seq)) && c->state == SLOT_DONE) && (c || p.readers_left))
                uv_cond_wait(&p.cv, &p.mu);
            uv_mutex_unlock(&p.mu);
            if (!c) {
                rc = pile_err_set(err, PILE_ECORRUPT, "internal error: the readers ended before '%s' was read",
                                  st->order[i]->path);
                break;
            }
            double t0 = pile_now(), c0 = pile_cpu_now();
            x.cur = c;
            rc = pack_chunk(&x, c, err);
            x.cur = NULL;
            if (!rc) {
                /* a copy that failed (an id over the vocabulary: the workers checked them, so never) */
                uv_mutex_lock(&p.mu);
                if (p.copy_rc) {
                    rc = p.copy_rc;
                    *err = p.copy_err;
                }
                uv_mutex_unlock(&p.mu);
            }
            t_pack += pile_now() - t0;
            cpu_pack += pile_cpu_now() - c0;
            last = c->last;
            if (prog) {
                prep_split_stats tot;
                pile__prep_stats_total(&st->stats, &tot);
                const char *name;
                uv_mutex_lock(&p.mu);
                double share = busiest(pile_now() - t_begin, p.t_read, p.reading_max,
                                       p.t_parse + p.t_tok + p.t_copy, threads, t_pack, &name);
                uv_mutex_unlock(&p.mu);
                char note[64];
                snprintf(note, sizeof note, "busiest: %s %.0f%%", name, 100 * share);
                pile_progress_note(prog, note);
                pile_progress_update(prog, c->bytes_done, tot.docs - docs_base, tot.tokens - toks_base, 0);
            }
            /* its copies to the workers; the slot is free once they are done */
            uv_mutex_lock(&p.mu);
            if (c->nmoves && !rc) {
                c->state = SLOT_PACKED;
                p.packed++;
                uv_cond_broadcast(&p.cv);
            } else {
                slot_release(&p, c);
            }
            uv_mutex_unlock(&p.mu);
        }
    }
    uv_mutex_lock(&p.mu);
    p.abort = 1;
    uv_cond_broadcast(&p.cv);
    uv_mutex_unlock(&p.mu);
    for (int t = 0; t < rstarted; t++) uv_thread_join(&rs[t]);
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
    res->copy_s = p.t_copy;
    res->copy_cpu = p.cpu_copy;
    res->pack_s = t_pack;
    res->write_s = pile__prep_packer_write_s(pk);
    res->read_cpu = p.cpu_read;
    res->parse_cpu = p.cpu_parse;
    res->tokenize_cpu = p.cpu_tok;
    /* the packing thread's CPU, shared between packing and the writer as their wall times are */
    res->write_cpu = t_pack > 0 ? cpu_pack * res->write_s / t_pack : 0;
    res->pack_cpu = cpu_pack - res->write_cpu;
    res->bg_write_cpu = pile__prep_packer_io_cpu(pk);
    res->readers = p.reading_max;
    res->pipeline_s = pile_now() - t_begin;

    pile__prep_packer_free(pk);
    for (size_t s = 0; s < p.nslots; s++) chunk_free(&p.slots[s]);
    free(p.slots);
    free(p.read_done);
    free(p.windows);
    free(ws);
    free(rs);
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
            pile__prep_log(o, "warning: '%s' is the same file as '%s': read once", in->path, f->path);
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
                pile__prep_log(st->opts, "warning: every line of the %s split was skipped: it has no shards",
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

/* Writes kept shard st->shards[idx] again: the packer started at the point
 * the manifest records for the shard's first token, with statistics of its
 * own (the run's are already whole), stopped once that one shard is
 * written. The output is deterministic, so it must come out equal to the
 * record; if not, the inputs changed. */
static int repair_shard(const prep_state *st, const pile_tokenizer *tok, size_t idx, pile_err *err)
{
    const prep_shard_rec *r = &st->shards[idx];
    const char *out = st->opts->output_dir;
    int tmp;
    pile_split sp;
    unsigned num;
    if (!r->has_start || !pile__prep_shard_name(r->file, &tmp, &sp, &num))
        return pile_err_set(err, PILE_ECORRUPT,
                            "cannot go on in '%s': kept shard '%s' is damaged or missing, and this manifest (from an "
                            "older pile-prep) does not record where each shard starts, so it cannot be written again "
                            "alone; use --force to start over",
                            out, r->file);
    pile_prep_opts ro = *st->opts;
    ro.log = NULL; /* what the shard's lines hold was reported when they were first read */
    ro.progress = NULL;
    ro.stop_after_shards = 0;
    prep_state rs = *st;
    rs.opts = &ro;
    rs.shards = NULL;
    rs.n_shards = rs.cap_shards = 0;
    memset(&rs.tok_files, 0, sizeof rs.tok_files);
    memset(&rs.mega_files, 0, sizeof rs.mega_files);
    memset(&rs.pending, 0, sizeof rs.pending);
    rs.next_shard[sp] = num;
    rs.resume = r->start;
    rs.repair = 1;
    rs.repair_done = 0;
    rs.complete = 0;
    pile_prep_result scratch;
    memset(&scratch, 0, sizeof scratch);
    int rc = pile__prep_stats_init(&rs.stats, st->n_inputs) ? pile_err_set(err, PILE_ENOMEM, "out of memory") : 0;
    if (!rc) rc = pile__prep_pipeline(&rs, tok, &scratch, err);
    if (rc == PILE_ELIMIT && rs.repair_done) {
        rc = 0;
        pile_err_clear(err);
    } else if (!rc) {
        rc = pile_err_set(err, PILE_EMISMATCH, "cannot write '%s' again: the inputs end before it does; use --force to "
                          "start over", r->file);
    }
    if (!rc && (rs.repaired.data_checksum != r->checksum || rs.repaired.file_size != r->size ||
                rs.repaired.row_count != r->rows))
        rc = pile_err_set(err, PILE_EMISMATCH,
                          "'%s/%s' written again is not the shard the manifest records (data checksum %016" PRIx64
                          ", recorded %016" PRIx64 "): have the inputs changed? use --force to start over",
                          out, r->file, rs.repaired.data_checksum, r->checksum);
    pile__prep_stats_free(&rs.stats);
    pile_prep_result_free(&scratch);
    return rc;
}

/* The kept files' check: every recorded shard (and, in a finished --megatron
 * run, each Megatron file) is read whole and compared with the manifest;
 * what fails is written again. */
static int check_kept(prep_state *st, const pile_tokenizer *tok, pile_prep_result *res, int *changed, pile_err *err)
{
    double t0 = pile_now();
    size_t *bad = NULL, nbad = 0;
    uint64_t bytes = 0;
    unsigned mbad = 0;
    int rc = pile__prep_check_shards(st, &bad, &nbad, &bytes, err);
    if (!rc && st->complete && st->megatron) {
        rc = pile__prep_check_megatron(st, &mbad, &bytes, err);
        if (!st->mega_files.n) {
            /* a manifest of an older pile-prep: its Megatron files have no checksums to check */
            pile__prep_log(st->opts, "note: this manifest records no checksums of the Megatron files: writing them "
                                     "again to record them");
            mbad = (1u << PREP_NSPLITS) - 1;
        }
    }
    res->files_checked = st->n_shards + st->mega_files.n;
    res->bytes_checked = bytes;
    res->check_s = pile_now() - t0; /* the check alone: writing again is extra */
    for (size_t i = 0; i < nbad && !rc; i++) {
        rc = repair_shard(st, tok, bad[i], err);
        res->files_redone++;
    }
    if (!rc && st->complete && st->megatron && mbad) {
        int older = !st->mega_files.n; /* written again to be recorded, not because they failed */
        rc = megatron_export(st, mbad, err);
        for (int sp = 0; sp < PREP_NSPLITS && !older; sp++) res->files_redone += 2 * ((mbad >> sp) & 1);
        *changed = 1;
    }
    free(bad);
    return rc;
}

static void summary_check_line(const pile_prep_result *res, pile_buf *out)
{
    if (!res->files_checked) return;
    pile_buf_printf(out,
                    "kept files: %" PRIu64 " checked against the manifest's checksums (%.1f MB read in %.2f s)%s",
                    res->files_checked, (double)res->bytes_checked / 1e6, res->check_s,
                    res->files_redone ? "; damaged or missing ones written again: " : "\n");
    if (res->files_redone) pile_buf_printf(out, "%" PRIu64 "\n", res->files_redone);
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
    st.tok_source = opts->tokenizer_spec && *opts->tokenizer_spec ? opts->tokenizer_spec : "bytes";
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

    /* The tokenizer's files are read before and after it is opened: the
     * same bytes both times are the bytes it was built from, so the copy
     * that goes into OUT is checked by its bytes alone (opening it again to
     * compare fingerprints costs GPT-2 a tenth of a second of serial time) */
    prep_tok_source before;
    pile_err ignored;
    int have_before = pile__prep_tok_source_read(&before, st.tok_source, &ignored) == 0;
    pile_tokenizer *tok = NULL;
    int rc = pile_tokenizer_open(&tok, st.tok_source, err);
    if (rc) {
        if (have_before) pile__prep_tok_source_free(&before);
        return rc;
    }
    st.tok_kind = pile_tokenizer_kind(tok);
    pile_tokenizer_fingerprint(tok, st.tok_fp);
    st.vocab_size = pile_tokenizer_vocab_size(tok);
    st.eot_id = pile_tokenizer_eot_id(tok);
    uint64_t row_bytes = (uint64_t)st.max_length * (st.vocab_size <= 65536 ? 2 : 4);
    st.rows_per_shard = st.shard_bytes / row_bytes;
    if (st.rows_per_shard == 0) st.rows_per_shard = 1;
    prep_tok_source ts;
    rc = pile__prep_tok_source_read(&ts, st.tok_source, err);
    if (!rc && (!have_before || !pile__prep_tok_source_same(&before, &ts))) {
        pile__prep_tok_source_free(&ts);
        rc = pile_err_set(err, PILE_EMISMATCH, "the tokenizer's files in '%s' changed while pile-prep read them",
                          st.tok_source);
    }
    if (have_before) pile__prep_tok_source_free(&before);
    if (rc) {
        pile_tokenizer_close(tok);
        return rc;
    }
    st.tok_spec = ts.spec;

    pile_fs_lock *lock = NULL;
    rc = build_order(&st, err);
    res->threads = st.threads;
    res->zstd_window_max = st.zstd_window;
    st.resume.line = 1;
    if (!rc && pile__prep_stats_init(&st.stats, st.n_inputs)) rc = pile_err_set(err, PILE_ENOMEM, "out of memory");

    /* one writer per folder, held before anything in it is read or removed */
    if (!rc) rc = pile_fs_mkdirs(opts->output_dir, err);
    if (!rc) rc = pile_fs_lock_open(&lock, opts->output_dir, "pile-prep", err);
    int loaded = 0, changed = 0;
    if (!rc && opts->force) {
        /* what the earlier run's manifest records goes, nothing else, and
         * only once nothing else is in the way */
        prep_state prior;
        memset(&prior, 0, sizeof prior);
        prior.opts = opts;
        int have = rc = pile__prep_manifest_files(&prior, err);
        if (rc >= 0) rc = pile__prep_output_check(&prior, have > 0, st.megatron, &ts, err);
        if (!rc && have > 0) rc = pile__prep_output_forget(&prior, err);
        pile__prep_state_free(&prior);
    } else if (!rc) {
        rc = pile__prep_manifest_load(&st, err);
        if (rc > 0) {
            loaded = 1;
            rc = 0;
        }
        if (!rc) rc = pile__prep_output_check(&st, loaded, st.megatron, &ts, err);
    }
    if (!rc && loaded) rc = pile__prep_output_clean(&st, err);
    if (!rc && loaded) rc = check_kept(&st, tok, res, &changed, err);
    if (!rc && loaded && st.complete) {
        /* finished: only the tokenizer's copy may be missing (an older pile-prep wrote none) */
        int tchanged = 0;
        rc = pile__prep_output_tokenizer_plan(&st, &ts, &tchanged, err);
        if (!rc && (changed || tchanged)) rc = pile__prep_manifest_write(&st, err);
        if (!rc) rc = pile__prep_output_tokenizer_write(&st, &ts, err);
        if (!rc) {
            res->already_complete = 1;
            fill_result(&st, res);
            pile__prep_stats_format(&st, &res->summary);
            summary_check_line(res, &res->summary);
        }
        goto out;
    }
    if (!rc) rc = pile__prep_output_tokenizer_plan(&st, &ts, &changed, err);
    if (!rc && loaded) {
        res->resumed = 1;
        res->shards_kept = st.n_shards;
        char where[PILE_ERR_MSG_MAX / 2];
        if (st.resume.input < st.n_inputs)
            snprintf(where, sizeof where, "'%s:%" PRIu64 "'", st.order[st.resume.input]->path, st.resume.line);
        else
            snprintf(where, sizeof where, "the end of the inputs");
        pile__prep_log(opts, "resuming in '%s': %zu shards kept, going on from %s", opts->output_dir, st.n_shards,
                       where);
    }
    if (!rc) rc = check_windows(&st, err);
    /* the manifest records the tokenizer's copy before it is written */
    if (!rc) rc = pile__prep_manifest_write(&st, err);
    if (!rc) rc = pile__prep_output_tokenizer_write(&st, &ts, err);
    st.manifest_at = pile_now();
    st.manifest_shards = st.n_shards;
    if (!rc) {
        rc = pile__prep_pipeline(&st, tok, res, err);
        /* a failed run (not a crash) keeps every shard it finished recorded */
        pile_err ignored;
        if (rc && st.pending.valid) pile__prep_manifest_write_pending(&st, &ignored);
    }
    if (!rc) rc = check_reconciliation(&st, err);
    if (!rc) rc = check_documents(&st, err);
    if (!rc && st.megatron) rc = megatron_export(&st, (1u << PREP_NSPLITS) - 1, err);
    if (!rc) {
        st.complete = 1;
        st.resume = (prep_resume){st.n_inputs, 1, 0, 0};
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
        summary_check_line(res, &res->summary);
        double outside = res->read_s + res->parse_s + res->pack_s + res->copy_s;
        pile_buf_printf(&res->summary,
                        "stage time (thread-seconds): read %.2f, parse %.2f, tokenize %.2f, pack+write %.2f "
                        "(of which write %.2f), copy %.2f (read+parse+pack+copy = %.1f%% of tokenize)\n",
                        res->read_s, res->parse_s, res->tokenize_s, res->pack_s, res->write_s, res->copy_s,
                        res->tokenize_s > 0 ? 100.0 * outside / res->tokenize_s : 0.0);
        pile_buf_printf(&res->summary,
                        "stage CPU (thread-seconds): read %.3f, parse %.3f, tokenize %.3f, pack %.3f, write %.3f, "
                        "copy %.3f, background-write %.3f (all but tokenize = %.1f%% of tokenize; pack and write: "
                        "the packing thread; copy: the workers' copies of the ids into the rows; background-write: "
                        "the shard writer's own thread, checksums and disk writes)\n",
                        res->read_cpu, res->parse_cpu, res->tokenize_cpu, res->pack_cpu, res->write_cpu,
                        res->copy_cpu, res->bg_write_cpu,
                        res->tokenize_cpu > 0 ? 100.0 * (res->read_cpu + res->parse_cpu + res->pack_cpu +
                                                         res->write_cpu + res->copy_cpu + res->bg_write_cpu) /
                                                    res->tokenize_cpu
                                              : 0.0);
        pile__prep_stage_line(res, &res->summary);
        struct rusage ru;
        res->peak_rss = getrusage(RUSAGE_SELF, &ru) == 0 ? (uint64_t)ru.ru_maxrss * 1024 : 0;
        pile_buf_printf(&res->summary,
                        "memory: peak resident %.1f MiB with %d worker threads; one input's decompressor allocated up to "
                        "%.2f MiB (%d input%s read at once at most; zstd windows up to %.0f MiB allowed, "
                        "--zstd-memory)\n",
                        (double)res->peak_rss / 1048576.0, res->threads, (double)res->decoder_bytes / 1048576.0,
                        res->readers, res->readers == 1 ? "" : "s", (double)res->zstd_window_max / 1048576.0);
    }
out:
    pile__prep_state_free(&st);
    free(st.order);
    pile__prep_tok_source_free(&ts);
    pile_tokenizer_close(tok);
    pile_fs_lock_close(lock);
    if (!res_out) pile_prep_result_free(res);
    return rc;
}
