/* pile_bpe_train: streams the inputs (one reader thread: zstd, JSON lines),
 * hands batches of document texts to counting threads (GPT-2 pre-tokenization,
 * a piece -> count map each), sums the maps, learns the merges and writes a
 * tokenizer.json. Counting is split by batches, never by files, so one big
 * file uses every core; the sums, and so the result, do not depend on the
 * split.
 *
 * Bounded memory: the inputs are cut into epochs of EPOCH_BYTES of text. At
 * the end of each epoch the threads' maps are summed into the global map and,
 * if it holds more than PIECE_CAP distinct pieces, the rarest go (those seen
 * once, then under 4, 8, ... times, until it is under 3/4 of the cap). Such
 * pieces add little to any pair's count; this is the usual approximation of
 * large-corpus trainers. Epochs end at fixed points of the text, so pruning,
 * too, is the same for any number of threads. */
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "bpe_train_internal.h"
#include "pile_fs.h"
#include "pile_json.h"
#include "pile_lines.h"
#include "pile_progress.h"
#include "pretok.h"

#define BATCH_BYTES (1u << 20)
#define EPOCH_BYTES ((uint64_t)64 << 20)
#define PIECE_CAP ((size_t)8 << 20) /* at most ~0.5 GB of map, and as much again while learning */
#define MAX_THREADS 64

typedef struct batch {
    pile_buf text;
    size_t *ends;   /* end offset of each document in text */
    size_t n_docs, cap_docs;
} batch;

typedef struct ring {
    size_t *v;
    size_t head, n, cap;
} ring;

typedef struct trainer {
    uv_mutex_t mu;
    uv_cond_t work;       /* a full batch is queued, or the input ended */
    uv_cond_t back;       /* a batch came back empty */
    batch *batches;
    size_t n_batches;
    ring full, empty;
    int busy;             /* batches being counted */
    int done;             /* no more batches will come */
    int failed;           /* a counting thread ran out of memory */
    pile__bpe_counts **local;
    int n_workers;
    pile__bpe_limits lim;
} trainer;

typedef struct worker_arg {
    trainer *t;
    int k;
} worker_arg;

static void ring_push(ring *r, size_t x)
{
    r->v[(r->head + r->n++) % r->cap] = x;
}

static size_t ring_pop(ring *r)
{
    size_t x = r->v[r->head];
    r->head = (r->head + 1) % r->cap;
    r->n--;
    return x;
}

static int count_batch(const batch *b, pile__bpe_counts *c)
{
    size_t start = 0;
    for (size_t d = 0; d < b->n_docs; d++) {
        const char *s = b->text.data + start;
        size_t n = b->ends[d] - start;
        for (size_t p = 0, e; p < n; p = e) {
            e = pile__pretok_gpt2_next(s, n, p);
            PILE_FORWARD_IF_ERR(pile__bpe_counts_add(c, s + p, e - p, 1));
        }
        start = b->ends[d];
    }
    return 0;
}

static void worker(void *arg)
{
    trainer *t = ((worker_arg *)arg)->t;
    int k = ((worker_arg *)arg)->k;
    uv_mutex_lock(&t->mu);
    for (;;) {
        while (!t->full.n && !t->done && !t->failed) uv_cond_wait(&t->work, &t->mu);
        if (!t->full.n || t->failed) break;
        size_t i = ring_pop(&t->full);
        t->busy++;
        uv_mutex_unlock(&t->mu);
        int rc = count_batch(&t->batches[i], t->local[k]);
        uv_mutex_lock(&t->mu);
        t->busy--;
        if (rc < 0) t->failed = 1;
        ring_push(&t->empty, i);
        uv_cond_broadcast(&t->back);
        if (t->failed) uv_cond_broadcast(&t->work);
    }
    uv_mutex_unlock(&t->mu);
}

/* Queues batch i for counting; returns the index of an empty batch to fill
 * next, or -1 when a counting thread failed. */
static long hand_over(trainer *t, size_t i)
{
    uv_mutex_lock(&t->mu);
    ring_push(&t->full, i);
    uv_cond_signal(&t->work);
    while (!t->empty.n && !t->failed) uv_cond_wait(&t->back, &t->mu);
    long next = t->failed ? -1 : (long)ring_pop(&t->empty);
    uv_mutex_unlock(&t->mu);
    return next;
}

/* Waits until every queued batch is counted; nonzero when one failed. */
static int drain(trainer *t)
{
    uv_mutex_lock(&t->mu);
    while ((t->full.n || t->busy) && !t->failed) uv_cond_wait(&t->back, &t->mu);
    int failed = t->failed;
    uv_mutex_unlock(&t->mu);
    return failed;
}

static int batch_add(batch *b, const char *s, size_t n)
{
    if (b->n_docs == b->cap_docs) {
        size_t nc = b->cap_docs ? b->cap_docs * 2 : 256;
        size_t *ne = realloc(b->ends, nc * sizeof(size_t));
        if (!ne) return PILE_ENOMEM;
        b->ends = ne;
        b->cap_docs = nc;
    }
    PILE_FORWARD_IF_ERR(pile_buf_append(&b->text, s, n));
    b->ends[b->n_docs++] = b->text.len;
    return 0;
}

/* Sums the threads' maps into the global one (threads idle), then prunes. */
static int end_epoch(trainer *t, pile__bpe_counts *global)
{
    for (int k = 0; k < t->n_workers; k++) PILE_FORWARD_IF_ERR(pile__bpe_counts_absorb(global, t->local[k]));
    size_t cap = t->lim.piece_cap;
    if (pile__bpe_counts_size(global) > cap)
        for (uint64_t below = 2; pile__bpe_counts_size(global) > cap / 4 * 3; below *= 2) {
            long long r = pile__bpe_counts_prune(global, below);
            if (r < 0) return (int)r;
        }
    return 0;
}

static int oom(pile_err *err)
{
    return pile_err_set(err, PILE_ENOMEM, "cannot train BPE: out of memory");
}

/* Reads every input into `global`, counting on t's threads. */
static int read_inputs(trainer *t, const char *const *inputs, size_t n_inputs, pile__bpe_counts *global,
                       int progress, pile_err *err)
{
    uint64_t total = 0, done_bytes = 0, docs = 0, epoch = 0;
    for (size_t i = 0; i < n_inputs; i++) {
        uint64_t sz = 0;
        if (pile_fs_size(inputs[i], &sz, NULL) == 0) total += sz;
    }
    pile_progress *pg = pile_progress_create(stderr, progress, total);
    pile_jsonl_parser *parser = pile_jsonl_parser_create();
    pile_lines *lr = NULL;
    int rc = 0;
    if (!pg || !parser) {
        rc = oom(err);
        goto out;
    }
    uv_mutex_lock(&t->mu);
    long cur = (long)ring_pop(&t->empty);
    uv_mutex_unlock(&t->mu);
    for (size_t f = 0; f < n_inputs; f++) {
        rc = pile_lines_open(&lr, inputs[f], NULL, err);
        if (rc < 0) goto out;
        pile_line line;
        while ((rc = pile_lines_next(lr, &line, err)) == 1) {
            if (line.status != PILE_LINE_COMPLETE) continue;
            pile_jsonl_doc doc;
            int r = pile_jsonl_parse(parser, line.data, line.len, &doc, NULL, 0);
            if (r < 0) {
                rc = oom(err);
                goto out;
            }
            if (r != PILE_SKIP_NONE || !doc.text_len) continue;
            batch *b = &t->batches[cur];
            if (batch_add(b, doc.text, doc.text_len) < 0) {
                rc = oom(err);
                goto out;
            }
            docs++;
            epoch += doc.text_len;
            if (b->text.len >= BATCH_BYTES || epoch >= t->lim.epoch_bytes) {
                if ((cur = hand_over(t, (size_t)cur)) < 0) {
                    rc = oom(err);
                    goto out;
                }
                t->batches[cur].text.len = 0;
                t->batches[cur].n_docs = 0;
            }
            if (epoch >= t->lim.epoch_bytes) {
                epoch = 0;
                if (drain(t) || end_epoch(t, global) < 0) {
                    rc = oom(err);
                    goto out;
                }
            }
            pile_progress_update(pg, done_bytes + pile_lines_bytes_read(lr), docs, 0, 0);
        }
        if (rc < 0) goto out;
        done_bytes += pile_lines_file_size(lr);
        pile_lines_close(lr);
        lr = NULL;
    }
    if (t->batches[cur].n_docs && hand_over(t, (size_t)cur) < 0) {
        rc = oom(err);
        goto out;
    }
    if (drain(t) || end_epoch(t, global) < 0) rc = oom(err);
    pile_progress_update(pg, done_bytes, docs, 0, 1);
out:
    pile_lines_close(lr);
    pile_jsonl_parser_free(parser);
    pile_progress_finish(pg);
    pile_progress_free(pg);
    return rc < 0 ? rc : 0;
}

int pile_bpe_train(const char *const *inputs, size_t n_inputs, const pile_bpe_train_opts *opts,
                   const char *out_path, pile_err *err)
{
    pile__bpe_limits lim = {.epoch_bytes = EPOCH_BYTES, .piece_cap = PIECE_CAP};
    return pile__bpe_train_limits(inputs, n_inputs, opts, &lim, out_path, err);
}

int pile__bpe_train_limits(const char *const *inputs, size_t n_inputs, const pile_bpe_train_opts *opts,
                           const pile__bpe_limits *lim, const char *out_path, pile_err *err)
{
    PILE_RETURN_IF(!opts || !out_path, err, PILE_EINVAL, "cannot train BPE: no options or no output path");
    PILE_RETURN_IF(!n_inputs, err, PILE_EINVAL, "cannot train BPE: no input files");
    int n_workers = opts->threads;
    /* the CPUs this process may run on (affinity, cgroup quota), not all the machine has */
    if (n_workers <= 0) {
        unsigned nc = uv_available_parallelism();
        n_workers = nc < MAX_THREADS ? (int)nc : MAX_THREADS;
    }
    if (n_workers > MAX_THREADS) n_workers = MAX_THREADS;

    trainer t = {0};
    uv_thread_t tids[MAX_THREADS];
    worker_arg args[MAX_THREADS];
    int started = 0, rc = 0;
    pile__bpe_counts *global = pile__bpe_counts_create();
    pile__bpe_model model = {0};
    pile_buf json = {0};
    t.n_workers = n_workers;
    t.lim = *lim;
    t.n_batches = 2 * (size_t)n_workers + 1;
    t.batches = calloc(t.n_batches, sizeof(batch));
    t.local = calloc((size_t)n_workers, sizeof(*t.local));
    t.full.v = malloc(t.n_batches * sizeof(size_t));
    t.empty.v = malloc(t.n_batches * sizeof(size_t));
    t.full.cap = t.empty.cap = t.n_batches;
    if (!global || !t.batches || !t.local || !t.full.v || !t.empty.v) {
        rc = oom(err);
        goto out;
    }
    for (size_t i = 0; i < t.n_batches; i++) ring_push(&t.empty, i);
    for (int k = 0; k < n_workers; k++)
        if (!(t.local[k] = pile__bpe_counts_create())) {
            rc = oom(err);
            goto out;
        }
    int r = uv_mutex_init(&t.mu);
    if (r == 0 && (r = uv_cond_init(&t.work)) < 0) uv_mutex_destroy(&t.mu);
    if (r == 0 && (r = uv_cond_init(&t.back)) < 0) {
        uv_cond_destroy(&t.work);
        uv_mutex_destroy(&t.mu);
    }
    if (r < 0) {
        rc = pile_err_set(err, PILE_EIO, "cannot train BPE: cannot create a lock: %s", uv_strerror(r));
        goto out;
    }
    for (; started < n_workers; started++) {
        args[started] = (worker_arg){.t = &t, .k = started};
        if ((r = uv_thread_create(&tids[started], worker, &args[started])) < 0) {
            rc = pile_err_set(err, PILE_EIO, "cannot train BPE: cannot start a thread: %s", uv_strerror(r));
            break;
        }
    }
    if (rc == 0) rc = read_inputs(&t, inputs, n_inputs, global, opts->progress, err);
    uv_mutex_lock(&t.mu);
    t.done = 1;
    uv_cond_broadcast(&t.work);
    uv_mutex_unlock(&t.mu);
    for (int k = 0; k < started; k++) uv_thread_join(&tids[k]);
    uv_cond_destroy(&t.back);
    uv_cond_destroy(&t.work);
    uv_mutex_destroy(&t.mu);
    if (rc < 0) goto out;
    /* the per-thread maps and batches are no longer needed: free them before learning */
    for (int k = 0; k < n_workers; k++) pile__bpe_counts_free(t.local[k]), t.local[k] = NULL;

    if ((rc = pile__bpe_learn(global, opts, &model, err)) < 0) goto out;
    pile__bpe_counts_free(global);
    global = NULL;
    if (pile__bpe_model_json(&model, &json) < 0) {
        rc = oom(err);
        goto out;
    }
    rc = pile_fs_write_atomic(out_path, json.data, json.len, err);
out:
    for (size_t i = 0; t.batches && i < t.n_batches; i++) {
        pile_buf_free(&t.batches[i].text);
        free(t.batches[i].ends);
    }
    free(t.batches);
    for (int k = 0; t.local && k < n_workers; k++) pile__bpe_counts_free(t.local[k]);
    free(t.local);
    free(t.full.v);
    free(t.empty.v);
    pile__bpe_counts_free(global);
    pile__bpe_model_free(&model);
    pile_buf_free(&json);
    return rc < 0 ? rc : 0;
}
