/* pile-trainer's jobs over the trainer modules (train_loop.h): the training
 * loop (accumulation, schedule, clipping, validation, checkpoints, metrics,
 * signals, bit-exact resume), checkpoint evaluation, and sampling.
 *
 * Nothing here prints: the progress line per log_interval, notes,
 * warnings, validation lines, the final summary and sampled text go to the
 * caller's pile_log (log.h). Everything else returns a pile_err like the
 * other modules.
 *
 * Bit-exact resume rests on one rule: the state after step k (parameters,
 * moments, step, epoch, position in the epoch's seeded order) decides step
 * k + 1 entirely. Dropout seeds are a hash of (seed, step, micro-batch), the
 * epoch order a function of (seed, epoch), and nothing else carries over. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "backend.h"
#include "checkpoint.h"
#include "comm/comm.h"
#include "log.h"
#include "metrics.h"
#include "mfu.h"
#include "model.h"
#include "optim.h"
#include "plan.h"
#include "pile_buf.h"
#include "pile_fs.h"
#include "pile_hex.h"
#include "pile_json.h"
#include "pile_progress.h"
#include "pile_tokenizer.h"
#include "pile_utf8.h"
#include "train_data.h"
#include "train_loop.h"
#include "trainer_internal.h"

/* The module's global state: the signals the loop acts on. A signal handler
 * may only store to a volatile sig_atomic_t and call async-signal-safe
 * functions (write, _exit); the loop reads the flags between optimizer
 * steps and between validation batches.
 * g_stop_signal: SIGINT, SIGTERM or SIGHUP asked training to stop (0 =
 * none). The first is acknowledged at once, since a step of a large model
 * can take minutes; a second one is the user insisting (the second Ctrl-C
 * of Python tools) and ends the process without a checkpoint, which the
 * atomic checkpoint writes make safe: the last finished one stays whole.
 * g_save_signal: SIGUSR1 asked for a checkpoint now, training going on
 * (what Slurm's `--signal=USR1@120` sends before a job's time is up).
 * g_signal_fd, g_signal_newline: where the stop handler writes its
 * acknowledgment (0: nowhere), and whether it starts on a line of its own
 * (a progress line left open): the run's pile_log signal_fd and
 * progress_in_place, since the handler may not call the log's callback. */
static volatile sig_atomic_t g_stop_signal;
static volatile sig_atomic_t g_save_signal;
static volatile sig_atomic_t g_signal_fd;
static volatile sig_atomic_t g_signal_newline;

static void on_stop_signal(int sig)
{
    static const char first[] = "\npile-trainer: stopping after this step, then writing a checkpoint (signal "
                                "again to quit at once without one)\n";
    static const char second[] = "\npile-trainer: second signal: quitting without a checkpoint\n";
    const int skip = g_signal_newline ? 0 : 1;
    if (g_stop_signal) {
        if (g_signal_fd > 0) {
            ssize_t w = write(g_signal_fd, second + skip, sizeof second - 1 - (size_t)skip);
            (void)w;
        }
        _exit(128 + sig);
    }
    g_stop_signal = sig;
    if (g_signal_fd > 0) {
        ssize_t w = write(g_signal_fd, first + skip, sizeof first - 1 - (size_t)skip);
        (void)w;
    }
}

static void on_save_signal(int sig)
{
    (void)sig;
    g_save_signal = 1;
}

/* One splitmix64 step: a bijection, so distinct inputs stay distinct. */
static uint64_t mix64(uint64_t x)
{
    return pile__mix64(x + PILE__GOLDEN);
}

/* The dropout seed of one micro-batch: a pure function of (seed, step,
 * micro), so a resumed run draws the masks the uninterrupted one drew. */
static uint64_t dropout_seed(uint64_t seed, int64_t step, int micro)
{
    return mix64(mix64(mix64(seed ^ 0x64726F706F7574ull) + (uint64_t)step) + (uint64_t)micro);
}

/* A pile_buf's text as a C string (pile_buf keeps no terminator); NULL on OOM. */
static const char *cstr(pile_buf *b)
{
    if (pile_buf_reserve(b, 1)) return NULL;
    b->data[b->len] = '\0';
    return b->data;
}

/* ------------------------------------------------------------ host batch */

typedef struct host_batch {
    int32_t *tokens, *targets, *doc_start;
    size_t rows;
    int T;
} host_batch;

static int host_batch_alloc(host_batch *hb, size_t rows, int T, pile_err *err)
{
    memset(hb, 0, sizeof *hb);
    size_t n = rows * (size_t)T;
    hb->tokens = malloc(n * sizeof(int32_t));
    hb->targets = malloc(n * sizeof(int32_t));
    hb->doc_start = malloc(n * sizeof(int32_t));
    hb->rows = rows;
    hb->T = T;
    if (!hb->tokens || !hb->targets || !hb->doc_start)
        return pile_err_set(err, PILE_ENOMEM, "out of memory for a batch of %zu x %d tokens", rows, T);
    return 0;
}

static void host_batch_free(host_batch *hb)
{
    free(hb->tokens);
    free(hb->targets);
    free(hb->doc_start);
    memset(hb, 0, sizeof *hb);
}

/* ------------------------------------------------------------ samples */

/* The ids of one sample, checked against the vocabulary: a shard damaged
 * after pile-prep wrote it (pile-prep never writes such an id) would
 * otherwise stop training with a message about a batch row, naming no
 * file. The check costs T compares against a forward pass of T x params. */
static int check_sample_ids(const int32_t *tokens, const int32_t *targets, int T, const pile_data *d, int val,
                            uint64_t i, const char *dir, pile_err *err)
{
    const int64_t V = pile_data_get_info(d)->vocab_size;
    for (int t = 0; t < T; t++) {
        /* ids are read as unsigned: a negative one here was above INT32_MAX; a target of -1 is "none" */
        int tok_bad = tokens[t] < 0 || tokens[t] >= V, tgt_bad = targets[t] < -1 || targets[t] >= V;
        if (tok_bad || tgt_bad)
            return pile_err_set(err, PILE_ECORRUPT,
                                "token id %" PRIu32 " in %s sample %" PRIu64 " (position %d) is outside the "
                                "vocabulary of %" PRId64 ": the shards in '%s' are damaged (`pile-dump --verify "
                                "%s` names the row); make them again with pile-prep",
                                (uint32_t)(tok_bad ? tokens[t] : targets[t]), val ? "validation" : "train", i,
                                tok_bad ? t : t + 1, V, dir, dir);
    }
    return 0;
}

/* Samples whose row fails its checksum (pile_data_sample checks each row
 * before its first use). By default the run stops there, before the row
 * is used, naming the shard, the row and both checksums; with
 * --skip_corrupt_rows the sample is left out (pile_data_sample hands it
 * over as padding without targets) and counted, and each damaged row is
 * named once in a warning: never dropped in silence. */
typedef struct corrupt_guard {
    int skip;            /* --skip_corrupt_rows */
    int offer_skip;      /* the command takes --skip_corrupt_rows (eval does not) */
    uint64_t samples;    /* samples left out */
    uint64_t rows_named; /* damaged rows named so far */
    const pile_log *log; /* where they are named */
} corrupt_guard;

static int guard_sample(corrupt_guard *g, const pile_data *d, const char *dir, int val, uint64_t i, int rc,
                        pile_err *err)
{
    if (rc >= 0) return rc;
    if (rc != PILE_ECORRUPT || !g->skip)
        return pile_err_set(err, rc,
                            "cannot use %s sample %" PRIu64 ": %s; make the shards in '%s' again with pile-prep%s "
                            "(`pile-dump --verify %s` checks every row)",
                            val ? "validation" : "train", i, err->msg, dir,
                            g->offer_skip ? ", or pass --skip_corrupt_rows to leave damaged rows out" : "", dir);
    g->samples++;
    uint64_t rows = pile_data_corrupt_rows(d);
    if (rows > g->rows_named) {
        g->rows_named = rows;
        pile_log_printf(g->log, PILE_LOG_WARN, "skipping a corrupt row (%" PRIu64 " so far): %s", rows, err->msg);
    }
    return 0;
}

/* The one warning for shards whose rows carry no checksum. */
static void warn_unverified(const pile_log *log, const pile_data_info *info, const char *dir)
{
    /* the dataset's own warnings (partitions missing), one per line */
    for (const char *line = info->notes, *nl; (nl = strchr(line, '\n')); line = nl + 1)
        pile_log_printf(log, PILE_LOG_WARN, "%.*s", (int)(nl - line), line);
    if (!info->unverified_shards) return;
    pile_log_printf(log, PILE_LOG_WARN,
                    "%zu of the %zu shards in '%s' are of format version 1, whose rows carry no checksums: they "
                    "cannot be verified as they are read; run pile-prep again (the same command with --force) to "
                    "make them in version 2",
                    info->unverified_shards, info->train_shards + info->val_shards, dir);
}

/* ----------------------------------------------------------------- ranks */

/* Where the ranks of a run meet after work that may fail on some of them
 * only (a damaged row one rank read, a checkpoint rank 0 could not write):
 * one collective, made by every rank at the same point whatever happened
 * to it, so that all go on or all stop, never some waiting forever in the
 * next collective for one that left. Returns this rank's own rc when it
 * failed; else an error naming the first rank that failed; else 0. *flag
 * (may be NULL) is replaced by its maximum over the ranks: a stop signal
 * one rank received is every rank's. comm NULL: this process alone. */
static int meet(pile_comm *comm, int rc, int64_t *flag, pile_err *err)
{
    if (!comm) return rc;
    const int W = pile_comm_world_size(comm), r = pile_comm_rank(comm);
    int64_t v[2] = {rc < 0 ? W - r : 0, flag ? *flag : 0}; /* the maximum of W - r: the lowest failed rank */
    pile_err e2;
    int crc = pile_comm_allreduce_i64(comm, v, 2, PILE_COMM_MAX, &e2);
    if (rc < 0) return rc;
    if (crc < 0) {
        *err = e2;
        return crc;
    }
    if (v[0]) return pile_err_set(err, PILE_EIO, "stopping: rank %d of %d failed (its message says why)", W - (int)v[0], W);
    if (flag) *flag = v[1];
    return 0;
}

/* -------------------------------------------------------------- evaluate */

/* Validation samples [i, i + b) read into hb, checked, and staged in m
 * (hb is free again once staged). The samples the guard leaves out are
 * counted into *skipped, for the caller to add to the guard's count once
 * the batch is evaluated: a batch read ahead and never run (a stop)
 * leaves nothing out. */
static int stage_val_batch(pile_model *m, const pile_data *d, const char *dir, uint64_t i, int b, int doc_mask,
                           int doc_mask_loss, host_batch *hb, corrupt_guard *guard, uint64_t *skipped,
                           pile_err *err)
{
    const int T = hb->T;
    corrupt_guard g = *guard;
    int rc = 0;
    for (int r = 0; r < b && rc == 0; r++) {
        size_t o = (size_t)r * (size_t)T;
        int got = pile_data_sample(d, 1, i + (uint64_t)r, doc_mask_loss, hb->tokens + o, hb->targets + o,
                                   doc_mask ? hb->doc_start + o : NULL, err);
        rc = guard_sample(&g, d, dir, 1, i + (uint64_t)r, got, err);
        if (rc >= 0) rc = check_sample_ids(hb->tokens + o, hb->targets + o, T, d, 1, i + (uint64_t)r, dir, err);
    }
    guard->rows_named = g.rows_named; /* a damaged row is named once, when read */
    *skipped = g.samples - guard->samples;
    PILE_FORWARD_IF_ERR(rc);
    pile_batch batch = {b, T, hb->tokens, hb->targets, doc_mask ? hb->doc_start : NULL};
    return pile_model_stage(m, &batch, err);
}

/* The rows of batch i (from i = 0 in steps of B) of a rank's evaluation:
 * [*at, *at + return) of its share [first, first + count); past them, with
 * filler, one row (sample 0) whose sums are dropped, since at ZeRO 3 each
 * forward gathers the parameters from every rank, a collective the others
 * are in; else 0, no batch. */
static int val_batch_rows(uint64_t i, size_t first, size_t count, int B, int filler, uint64_t *at)
{
    *at = i < count ? first + i : 0;
    if (i >= count) return filler;
    return count - i < (uint64_t)B ? (int)(count - i) : B;
}

/* Loss, accuracy and perplexity over the first `rows` validation samples
 * (0 = all), in batches of B. The same code serves training's validation
 * and `pile-trainer eval`, so equal settings give equal bits. With comm
 * (NULL: this process alone) the samples are split over the ranks in
 * pile_comm_partition's ranges, each rank running the same number of
 * batches (its last ones short, or one row whose sums are dropped) so that
 * they meet after each,
 * and the sums are reduced: every rank gets the whole result.
 * Each batch is staged (pile_model_stage) before the ranks meet over it,
 * and the next one while it computes, so that on a device its copy
 * overlaps the forward, as in training; a training step's first
 * micro-batch staged ahead is unstaged (the step stages it again).
 * Returns 1, with nothing in *res, when a stop signal arrived meanwhile
 * (on any rank): validating the whole Pile val set takes long, and a job
 * being preempted has seconds to write its checkpoint, which comes first. */
static int evaluate(pile_model *m, const pile_data *d, const char *dir, int64_t rows, int B, int doc_mask,
                    int doc_mask_loss, host_batch *hb, corrupt_guard *guard, pile_comm *comm, pile_eval_result *res,
                    pile_err *err)
{
    const pile_data_info *info = pile_data_get_info(d);
    uint64_t n = info->val_samples;
    if (rows > 0 && (uint64_t)rows < n) n = (uint64_t)rows;
    size_t first = 0, count = (size_t)n;
    uint64_t span = n; /* the longest rank's share: every rank runs its batches */
    if (comm) {
        pile_comm_partition(comm, (size_t)n, &first, &count);
        const uint64_t W = (uint64_t)pile_comm_world_size(comm);
        span = n / W + (n % W != 0);
    }
    const int filler = comm && pile_comm_world_size(comm) > 1;
    double loss_sum = 0;
    int64_t tokens = 0, correct = 0;
    pile_model_unstage(m);
    uint64_t at = 0, skipped = 0;
    int b = span > 0 ? val_batch_rows(0, first, count, B, filler, &at) : 0; /* batch i's rows here */
    int rc = b ? stage_val_batch(m, d, dir, at, b, doc_mask, doc_mask_loss, hb, guard, &skipped, err) : 0;
    for (uint64_t i = 0;; i += (uint64_t)B) {
        int64_t stop = i < span && g_stop_signal;
        rc = meet(comm, rc, &stop, err);
        if (rc < 0 || i >= span || stop) pile_model_unstage(m);
        PILE_FORWARD_IF_ERR(rc);
        if (i >= span) break;
        if (stop) return 1;
        /* the next batch travels while this one computes; a failure to
         * read it is reported after this one, where the ranks meet */
        const uint64_t next = i + (uint64_t)B;
        uint64_t skipped_next = 0;
        const int b_next = next < span ? val_batch_rows(next, first, count, B, filler, &at) : 0;
        pile_err next_err;
        int rc_next = b_next ? stage_val_batch(m, d, dir, at, b_next, doc_mask, doc_mask_loss, hb, guard,
                                               &skipped_next, &next_err)
                             : 0;
        if (b) {
            pile_fwd_stats st;
            rc = pile_model_forward(m, NULL, 0, 0, 0.0f, &st, err);
            if (rc == 0 && i < count) {
                loss_sum += st.loss_sum;
                tokens += st.n_tokens;
                correct += st.n_correct;
                guard->samples += skipped;
            }
        }
        if (rc == 0 && rc_next < 0) {
            rc = rc_next;
            *err = next_err;
        }
        b = b_next;
        skipped = skipped_next;
    }
    if (comm) {
        int64_t counts[2] = {tokens, correct};
        PILE_FORWARD_IF_ERR(pile_comm_allreduce_f64(comm, &loss_sum, 1, PILE_COMM_SUM, err));
        PILE_FORWARD_IF_ERR(pile_comm_allreduce_i64(comm, counts, 2, PILE_COMM_SUM, err));
        tokens = counts[0];
        correct = counts[1];
    }
    PILE_RETURN_IF(tokens == 0, err, PILE_EINVAL, "no validation tokens to evaluate on");
    res->loss = loss_sum / (double)tokens;
    res->accuracy = (double)correct / (double)tokens;
    res->perplexity = exp(res->loss);
    res->tokens = tokens;
    res->samples = n;
    res->val_samples = info->val_samples;
    res->rows_from = PILE_EVAL_ROWS_GIVEN;
    return 0;
}

/* ------------------------------------------------------ stored settings */

/* A number from the stored configuration: JSON number, boolean or numeric
 * string. 1 when found. */
static int json_number(const pile_json *root, const char *key, double *out)
{
    const pile_json *v = root ? pile_json_get(root, key) : NULL;
    if (!v) return 0;
    switch (pile_json_type_of(v)) {
    case PILE_JSON_NUMBER: *out = pile_json_num(v); return 1;
    case PILE_JSON_BOOL: *out = pile_json_bool(v) ? 1 : 0; return 1;
    case PILE_JSON_STRING: {
        char *end;
        const char *s = pile_json_str(v, NULL);
        double x = strtod(s, &end);
        if (end == s || *end) return 0;
        *out = x;
        return 1;
    }
    default: return 0;
    }
}

static const char *json_string(const pile_json *root, const char *key)
{
    const pile_json *v = root ? pile_json_get(root, key) : NULL;
    return v && pile_json_type_of(v) == PILE_JSON_STRING ? pile_json_str(v, NULL) : NULL;
}

/* The resolved configuration a checkpoint was written with, parsed. */
static int read_stored_config(const char *ckpt, pile_json **root, pile_err *err)
{
    pile_buf js = {0};
    int rc = pile_checkpoint_read_config_json(ckpt, &js, err);
    if (rc == 0) rc = pile_json_parse(js.data ? js.data : "", js.len, "trainer_state.json", root, err);
    pile_buf_free(&js);
    return rc;
}

/* ------------------------------------------------------------- printing */

/* 12345678 -> "12,345,678". */
static const char *thousands(char *buf, size_t cap, uint64_t v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%" PRIu64, v);
    size_t o = 0;
    for (int i = 0; i < n && o + 2 < cap; i++) {
        if (i && (n - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = '\0';
    return buf;
}

static const char *duration(char *buf, size_t cap, double s)
{
    if (!(s >= 0) || s > 1e9) snprintf(buf, cap, "?");
    else if (s < 60) snprintf(buf, cap, "%.0fs", s);
    else if (s < 3600) snprintf(buf, cap, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
    else snprintf(buf, cap, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
    return buf;
}

/* ---------------------------------------------------------------- train */

typedef struct trainer {
    const pile_train_config *cfg;
    const pile_log *log;
    pile_fs_lock *lock; /* checkpoint_dir's, held for the whole run */
    pile_backend *be;
    pile_err backend_why; /* why auto passed a backend over (a CUDA build without a device), for the notice */
    pile_backend *offload; /* --offload optimizer: a second cpu backend for the optimizer's tensors, or NULL */
    pile_comm *comm; /* the ranks training together ("single": this process alone) */
    int rank, world; /* this process's place among them */
    int local_rank, local_world; /* and among those on this host (the launcher's) */
    pile_log rank_log; /* ranks but 0: what only this rank sees (a damaged row it read), prefixed "rank N: " */
    const pile_log *user_log; /* the caller's, which rank_log forwards to */
    pile_data *data;
    const pile_data_info *info;
    int T;
    pile_model *model;
    pile_optim *opt;
    pile_metrics *metrics;
    pile_train_state st;
    pile_buf config_json;
    pile_buf data_json;                   /* the shards' identity, recorded in each checkpoint */
    pile_checkpoint_tokenizer *tok_files; /* read at start, carried by each checkpoint */
    host_batch step_batch; /* accumulation_steps x batch_size rows */
    host_batch val_batch;  /* batch_size rows: validation's */
    /* the next step's first micro-batch was read ahead into step_batch's
     * first rows (prefetch_next_step) and staged in the model: the step at
     * (prefetch_epoch, prefetch_pos) starts with those `prefetched` rows,
     * their `prefetch_tokens` targets */
    int prefetched;
    int64_t prefetch_epoch, prefetch_tokens;
    uint64_t prefetch_pos;
    int64_t steps_per_epoch, total_steps, warmup_steps, total_epochs;
    double min_lr;
    int64_t last_val_step, last_save_step;
    int best_missing; /* the best's weights were not kept (a rollback past them) */
    char last_saved[64];
    corrupt_guard guard;
    double step_scale; /* the loss scale the last step's backward used (1 without fp16) */
    double flops_per_token, peak_flops; /* MFU (mfu.h); peak 0: none shown */
    const char *peak_from;               /* the peak's source, for the log */
    uint64_t corrupt_rows, corrupt_samples; /* over all ranks, as of the last count_corrupt_rows */
} trainer;

/* The signals any rank received (sig[0]: stop, sig[1]: save), so that
 * every rank acts on them at the same step. */
static int agree_signals(trainer *t, int64_t sig[2], pile_err *err)
{
    return pile_comm_allreduce_i64(t->comm, sig, 2, PILE_COMM_MAX, err);
}

/* The damaged rows found and samples left out, summed over the ranks
 * (each finds those it reads); a collective only where rows may be
 * skipped, as elsewhere the first one stops the run. */
static int count_corrupt_rows(trainer *t, pile_err *err)
{
    int64_t v[2] = {(int64_t)pile_data_corrupt_rows(t->data), (int64_t)t->guard.samples};
    if (t->cfg->skip_corrupt_rows) PILE_FORWARD_IF_ERR(pile_comm_allreduce_i64(t->comm, v, 2, PILE_COMM_SUM, err));
    t->corrupt_rows = (uint64_t)v[0];
    t->corrupt_samples = (uint64_t)v[1];
    return 0;
}

/* A failure in a run of several ranks says whose it is: each rank
 * reports its own. */
static void name_rank(const trainer *t, pile_err *err)
{
    if (t->world <= 1) return;
    pile_err inner = *err;
    pile_err_set(err, inner.code, "rank %d: %s", t->rank, inner.msg);
}

/* What ranks but 0 say (rank_log): a line prefixed with the rank. */
static void rank_log_fn(void *ctx, pile_log_level level, const char *msg, size_t len)
{
    const trainer *t = ctx;
    pile_log_printf(t->user_log, level, "rank %d: %.*s", t->rank, (int)len, msg);
}

/* Library notes (one per line) as messages of `level`. */
static void print_notes(const pile_log *log, const pile_buf *notes, pile_log_level level)
{
    for (size_t at = 0; at < notes->len;) {
        const char *line = notes->data + at;
        const char *nl = memchr(line, '\n', notes->len - at);
        size_t len = nl ? (size_t)(nl - line) : notes->len - at;
        if (len) pile_log_printf(log, level, "%.*s", (int)len, line);
        at += len + 1;
    }
}

/* Rank 0 alone, with the whole state in its hands: best_model and the
 * salvage of a failed save. */
static int write_checkpoint(trainer *t, const char *dir, int with_optimizer, int without_tokenizer, pile_err *err)
{
    pile_checkpoint_save_opts o = {
        .tokenizer = t->tok_files, .without_tokenizer = without_tokenizer, .data_json = t->data_json.data};
    return pile_checkpoint_save_ex(dir, t->model, with_optimizer ? t->opt : NULL, &t->st, t->config_json.data, &o,
                                   err);
}

/* The metrics file is rank 0's: the others write nothing. */
static int write_metrics(trainer *t, const char *const *tags, const double *values, size_t n, pile_err *err)
{
    return t->metrics ? pile_metrics_write(t->metrics, t->st.step, tags, values, n, err) : 0;
}

/* The training state is spread over the ranks (the optimizer sharded by
 * ZeRO 1-3 over several, or the parameters partitioned at stage 3, even on
 * one: the model then holds them unit by unit): a checkpoint then takes
 * every rank (pile_checkpoint_save_ranks gathers the weights for rank 0's
 * model.safetensors and has each rank write its optimizer shard), and
 * rank 0 alone cannot save the whole state (no salvage). */
static int state_sharded(const trainer *t)
{
    return pile_optim_shards(t->opt) > 1 || pile_optim_zero_stage(t->opt) >= 3;
}

/* After a checkpoint failed to write (disk full, a folder gone, the
 * tokenizer's copy): the run stops, but not its work. The model and
 * optimizer state go where they can, each try named in the error with the
 * first failure's cause: the run folder without the tokenizer's files,
 * then --fallback_dir (whole, else without the tokenizer). Returns the
 * failure's code, err saying what was saved where. */
static int salvage(trainer *t, const char *name, pile_err *err)
{
    const pile_train_config *c = t->cfg;
    pile_err cause = *err, e2 = {PILE_ENOMEM, "out of memory"};
    char step_name[64];
    snprintf(step_name, sizeof step_name, "step-%07" PRId64, t->st.step);
    /* best_model holds no optimizer state: the salvage is a step checkpoint */
    const char *sname = strcmp(name, "best_model") ? name : step_name;
    pile_buf path = {0}, tail = {0};
    int saved = 0;
    if (!pile_fs_join(&path, c->checkpoint_dir, sname) && write_checkpoint(t, path.data, 1, 1, &e2) == 0 &&
        pile_checkpoint_set_latest(c->checkpoint_dir, sname, &e2) == 0) {
        pile_buf_printf(&tail, "the model and optimizer state were saved without the tokenizer's files in '%s': "
                        "continue with --resume once the cause is fixed", path.data);
        saved = 1;
    }
    if (!saved && c->fallback_dir[0] && !pile_fs_join(&path, c->fallback_dir, sname) &&
        (write_checkpoint(t, path.data, 1, 0, &e2) == 0 || write_checkpoint(t, path.data, 1, 1, &e2) == 0)) {
        pile_buf_printf(&tail, "the model and optimizer state were saved in '%s': move that folder into '%s' and "
                        "name it in '%s/latest' (mv '%s' '%s/' && echo %s > '%s/latest'), then continue with --resume",
                        path.data, c->checkpoint_dir, c->checkpoint_dir, path.data, c->checkpoint_dir, sname,
                        c->checkpoint_dir);
        saved = 1;
    }
    if (!saved)
        pile_buf_printf(&tail, "saving the model and optimizer state elsewhere failed too (%s)%s", e2.msg,
                        c->fallback_dir[0] ? "" : "; --fallback_dir DIR names a folder for this");
    if (saved) {
        snprintf(t->last_saved, sizeof t->last_saved, "%s", sname);
        t->last_save_step = t->st.step;
    }
    int rc = pile_err_set(err, cause.code, "cannot write checkpoint '%s': %s; %s", name, cause.msg,
                          cstr(&tail) ? tail.data : "out of memory");
    pile_buf_free(&path);
    pile_buf_free(&tail);
    return rc;
}

/* A checkpoint with its optimizer state, made by every rank together
 * (each calls this at the same point; pile_checkpoint_save_ranks): rank 0
 * writes the model, optimizer state, configuration and tokenizer into
 * "<dir>.tmp", every rank adds its optimizer shard where the state is
 * sharded, and rank 0 seals the folder and renames it into place only once
 * all have finished, then names it in latest. A failure of rank 0's own,
 * with the whole state in its hands (not sharded), is salvaged there (see
 * salvage); any failure stops every rank. */
static int save_checkpoint(trainer *t, const char *name, pile_err *err)
{
    const pile_train_config *c = t->cfg;
    pile_buf path = {0};
    pile_checkpoint_save_opts o = {.tokenizer = t->tok_files, .data_json = t->data_json.data};
    int rc = pile_fs_join(&path, c->checkpoint_dir, name)
                 ? pile_err_set(err, PILE_ENOMEM, "out of memory")
                 : pile_checkpoint_save_ranks(path.data, t->model, t->opt, 1, &t->st, t->config_json.data, &o,
                                              t->comm, err);
    if (rc == 0 && t->rank == 0) rc = pile_checkpoint_set_latest(c->checkpoint_dir, name, err);
    pile_buf_free(&path);
    /* rank 0's failures are its own (the others' are named in theirs) */
    if (rc < 0 && t->rank == 0 && !state_sharded(t)) rc = salvage(t, name, err);
    PILE_FORWARD_IF_ERR(meet(t->comm, rc, NULL, err));
    snprintf(t->last_saved, sizeof t->last_saved, "%s", name);
    t->last_save_step = t->st.step;
    /* --save_total_limit: older step checkpoints go only now that the new
     * one is durable and named by latest; a failure to delete is said, and
     * does not stop the run */
    if (c->save_total_limit > 0 && t->rank == 0) {
        pile_buf notes = {0};
        pile_err e2;
        int prc = pile_checkpoint_prune(c->checkpoint_dir, c->save_total_limit, t->st.step, &notes, &e2);
        print_notes(t->log, &notes, PILE_LOG_INFO);
        if (prc < 0) pile_log_printf(t->log, PILE_LOG_WARN, "%s", e2.msg);
        pile_buf_free(&notes);
    }
    return 0;
}

/* best_model/: weights only (it is for use; the resumable state is in
 * epoch-* and step-*). Every rank calls it: rank 0 writes it, with the
 * others' help where the weights are spread over them (ZeRO 3); the
 * caller has the ranks meet after it. */
static int save_best_model(trainer *t, pile_err *err)
{
    pile_buf path = {0};
    if (state_sharded(t)) {
        pile_checkpoint_save_opts o = {.tokenizer = t->tok_files, .data_json = t->data_json.data};
        int rc = pile_fs_join(&path, t->cfg->checkpoint_dir, "best_model")
                     ? pile_err_set(err, PILE_ENOMEM, "out of memory")
                     : pile_checkpoint_save_ranks(path.data, t->model, t->opt, 0, &t->st, t->config_json.data, &o,
                                                  t->comm, err);
        pile_buf_free(&path);
        return rc;
    }
    if (t->rank != 0) return 0;
    int rc = pile_fs_join(&path, t->cfg->checkpoint_dir, "best_model")
                 ? pile_err_set(err, PILE_ENOMEM, "out of memory")
                 : write_checkpoint(t, path.data, 0, 0, err);
    pile_buf_free(&path);
    return rc < 0 ? salvage(t, "best_model", err) : 0;
}

static int save_step_checkpoint(trainer *t, pile_err *err)
{
    char name[64];
    snprintf(name, sizeof name, "step-%07" PRId64, t->st.step);
    return save_checkpoint(t, name, err);
}

static int validate(trainer *t, pile_err *err)
{
    const pile_train_config *c = t->cfg;
    if (t->info->val_samples == 0) {
        t->st.pending_val = 0; /* nothing to validate on: nothing owed */
        return 0;
    }
    pile_eval_result r = {0};
    int rc = evaluate(t->model, t->data, c->data, c->eval_rows, c->batch_size, c->doc_mask, c->doc_mask_loss,
                      &t->val_batch, &t->guard, t->comm, &r, err);
    if (rc < 0) return rc;
    if (rc > 0) {
        /* owed: recorded in the checkpoint that follows (which must then be
         * written even if one of this step exists), done first on --resume */
        pile_log_printf(t->log, PILE_LOG_RECORD, "val: step %" PRId64 " skipped (stopping); the resumed run does it first",
                        t->st.step);
        t->st.pending_val = 1;
        t->last_save_step = -1;
        return 0;
    }
    t->st.pending_val = 0;
    t->last_val_step = t->st.step;
    pile_log_printf(t->log, PILE_LOG_RECORD, "val: step %" PRId64 " loss %.4f acc %.4f ppl %.2f", t->st.step, r.loss,
                    r.accuracy, r.perplexity);
    static const char *const tags[] = {"val/loss", "val/accuracy", "val/perplexity"};
    const double vals[] = {r.loss, r.accuracy, r.perplexity};
    PILE_FORWARD_IF_ERR(write_metrics(t, tags, vals, 3, err));
    if (r.loss < t->st.best_val_loss) {
        t->st.best_val_loss = r.loss;
        t->st.best_step = t->st.step;
        t->best_missing = 0;
        PILE_FORWARD_IF_ERR(meet(t->comm, save_best_model(t, err), NULL, err));
    }
    return 0;
}

/* The model's dimensions must not change under --resume. */
static int check_resume_model(const char *ckpt, const pile_model_config *now, const pile_train_config *c,
                              pile_err *err)
{
    pile_model_config was;
    PILE_FORWARD_IF_ERR(pile_checkpoint_read_model_config(ckpt, &was, err));
    if (was.vocab_size != now->vocab_size)
        return pile_err_set(err, PILE_EMISMATCH,
                            "cannot resume from '%s': the shards in '%s' have another tokenizer (vocabulary %d, "
                            "the checkpoint's %d)",
                            ckpt, c->data, now->vocab_size, was.vocab_size);
    const struct {
        const char *name;
        int was, now;
    } dims[] = {
        {"n_layer", was.n_layer, now->n_layer},
        {"n_head", was.n_head, now->n_head},
        {"n_embd", was.n_embd, now->n_embd},
        {"max_length (context)", was.n_positions, now->n_positions},
    };
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i].was != dims[i].now)
            return pile_err_set(err, PILE_EMISMATCH,
                                "cannot resume from '%s': %s is %d there and %d now (a run keeps its model; "
                                "start a new --checkpoint-dir to change it)",
                                ckpt, dims[i].name, dims[i].was, dims[i].now);
    return 0;
}

/* Settings that decide which rows a step sees: changing them would make
 * the resumed run a different run. (max_length is checked as the model's
 * context, the value it resolved to, by check_resume_model.) The batch
 * that must stay is the global one, batch_size x accumulation_steps x
 * world_size: the same rows make each step on any number of ranks. */
static int check_resume_settings(const char *ckpt, const pile_train_config *c, int world, const pile_log *log,
                                 pile_err *err)
{
    pile_json *root = NULL;
    PILE_FORWARD_IF_ERR(read_stored_config(ckpt, &root, err));
    const struct {
        const char *key;
        double now;
    } keys[] = {
        {"doc_mask", c->doc_mask},
        {"doc_mask_loss", c->doc_mask_loss},
    };
    int rc = 0;
    double wb, wa, ww;
    if (!json_number(root, "world_size", &ww)) ww = 1;
    const double now = (double)c->batch_size * c->accumulation_steps * world;
    if (json_number(root, "batch_size", &wb) && json_number(root, "accumulation_steps", &wa)) {
        if (wb * wa * ww != now)
            rc = pile_err_set(err, PILE_EMISMATCH,
                              "cannot resume from '%s': the global batch (batch_size x accumulation_steps x "
                              "world_size) was %g x %g x %g = %g and is %d x %d x %d = %g now (it must stay the same; "
                              "start a new --checkpoint-dir to change it)",
                              ckpt, wb, wa, ww, wb * wa * ww, c->batch_size, c->accumulation_steps, world, now);
        else if (wb != c->batch_size || wa != c->accumulation_steps || ww != world)
            pile_log_printf(log, PILE_LOG_WARN,
                            "resuming with batch_size x accumulation_steps x world_size %d x %d x %d, where the "
                            "checkpoint's run had %g x %g x %g: the same global batch of %g rows, so the steps are "
                            "the same but for rounding (the order in which sums are added) and, with dropout, "
                            "the masks",
                            c->batch_size, c->accumulation_steps, world, wb, wa, ww, now);
    }
    for (size_t i = 0; i < sizeof keys / sizeof keys[0] && !rc; i++) {
        double was;
        if (json_number(root, keys[i].key, &was) && was != keys[i].now)
            rc = pile_err_set(err, PILE_EMISMATCH,
                              "cannot resume from '%s': %s was %g and is %g now (it must stay the same; start a "
                              "new --checkpoint-dir to change it)",
                              ckpt, keys[i].key, was, keys[i].now);
    }
    /* Settings a user may mean to change when continuing (a lower rate
     * after a loss spike, as with HF Trainer's resume): taken, but said, as
     * the run is then no longer the one that was stopped. Compared in the
     * field's own precision so that a float read back is not a change. */
    const struct {
        const char *key;
        double now;
        int is_float;
    } soft[] = {
        {"learning_rate", c->learning_rate, 0},   {"min_lr", c->min_lr, 0},
        {"warmup_ratio", c->warmup_ratio, 0},     {"warmup_steps", (double)c->warmup_steps, 0},
        {"weight_decay", c->weight_decay, 0},     {"decay_all", c->decay_all, 0},
        {"adam_beta1", c->adam_beta1, 0},         {"adam_beta2", c->adam_beta2, 0},
        {"adam_epsilon", c->adam_epsilon, 0},     {"gradient_clipping", c->gradient_clipping, 0},
        {"dropout", c->dropout, 1},               {"val_fraction", c->val_fraction, 0},
        {"eval_rows", (double)c->eval_rows, 0},
    };
    for (size_t i = 0; i < sizeof soft / sizeof soft[0] && !rc; i++) {
        double was;
        if (!json_number(root, soft[i].key, &was)) continue;
        if (soft[i].is_float ? (float)was == (float)soft[i].now : was == soft[i].now) continue;
        pile_log_printf(log, PILE_LOG_WARN,
                        "resuming with %s %g, where the checkpoint's run had %g: the run goes on with the new value "
                        "(and is no longer the run that was stopped)",
                        soft[i].key, soft[i].now, was);
    }
    pile_json_free(root);
    return rc;
}

static int check_resume_state(const char *ckpt, const pile_train_state *st, const pile_train_config *c,
                              const pile_data_info *info, pile_err *err)
{
    if (st->seed != c->seed)
        return pile_err_set(err, PILE_EMISMATCH,
                            "cannot resume from '%s': seed was %" PRIu64 " and is %" PRIu64
                            " now (it must stay the same)",
                            ckpt, st->seed, c->seed);
    if (memcmp(st->tokenizer_fp, info->tokenizer_fp, 16) != 0) {
        char a[33], b[33];
        pile_hex_encode(a, st->tokenizer_fp, 16);
        pile_hex_encode(b, info->tokenizer_fp, 16);
        return pile_err_set(err, PILE_EMISMATCH,
                            "cannot resume from '%s': the shards in '%s' were made with another tokenizer "
                            "(fingerprint %s, the checkpoint's %s)",
                            ckpt, c->data, b, a);
    }
    return 0;
}

/* The tokenizer checkpoints carry and `sample` decodes with: opened now,
 * checked against the shards' fingerprint, and its files read into
 * t->tok_files, so that nothing about it can fail after step 1.
 * cfg->tokenizer overrides the spec the shards' manifest names. */
static int open_tokenizer(trainer *t, const pile_train_config *c, const pile_data_info *info, pile_err *err)
{
    const char *spec = c->tokenizer[0] ? c->tokenizer : info->tokenizer_spec[0] ? info->tokenizer_spec : "bytes";
    pile_tokenizer *tok = NULL;
    int rc = pile_tokenizer_open(&tok, spec, err);
    if (rc < 0 && !c->tokenizer[0] && info->tokenizer_spec[0]) {
        pile_err inner = *err;
        return pile_err_set(err, rc,
                            "cannot open the tokenizer the manifest of '%s' names (checkpoints carry it): %s; give "
                            "it with --tokenizer SPEC",
                            c->data, inner.msg);
    }
    if (rc < 0) return rc;
    uint8_t fp[PILE_TOKENIZER_FP_BYTES];
    pile_tokenizer_fingerprint(tok, fp);
    pile_tokenizer_close(tok);
    if (memcmp(fp, info->tokenizer_fp, 16) != 0) {
        char a[33], b[33];
        pile_hex_encode(a, fp, 16);
        pile_hex_encode(b, info->tokenizer_fp, 16);
        if (!c->tokenizer[0] && !info->tokenizer_spec[0])
            return pile_err_set(err, PILE_EMISMATCH,
                                "the shards in '%s' name no tokenizer (no manifest.json) and were not made with the "
                                "byte tokenizer (fingerprint %s): give the one that made them with --tokenizer SPEC",
                                c->data, b);
        return pile_err_set(err, PILE_EMISMATCH,
                            "tokenizer '%s'%s is not the one that made the shards in '%s' (fingerprint %s, the "
                            "shards' %s)%s",
                            spec, c->tokenizer[0] ? "" : ", which their manifest names,", c->data, a, b,
                            c->tokenizer[0] ? "" : "; give the right one with --tokenizer SPEC");
    }
    return pile_checkpoint_tokenizer_read(&t->tok_files, spec, err);
}

/* The run folder, before anything else is opened: created for a fresh run,
 * locked for the whole run (a second trainer on it is refused at once,
 * naming the holder; the kernel drops a dead one's lock; in a multi-rank
 * run, rank 0's to take), and cleared of what a killed save left. */
static int open_run_folder(trainer *t, const pile_train_config *c, pile_err *err)
{
    if (!pile_fs_is_dir(c->checkpoint_dir)) {
        PILE_RETURN_IF(c->resume, err, PILE_ENOENT, "no checkpoint in '%s' to resume from", c->checkpoint_dir);
        PILE_FORWARD_IF_ERR(pile_fs_mkdirs(c->checkpoint_dir, err));
    }
    PILE_FORWARD_IF_ERR(pile_fs_lock_open(&t->lock, c->checkpoint_dir, "pile-trainer", err));
    pile_buf notes = {0};
    int rc = pile_checkpoint_clean(c->checkpoint_dir, &notes, err);
    print_notes(t->log, &notes, PILE_LOG_INFO);
    pile_buf_free(&notes);
    return rc;
}

/* A folder a checkpoint will be written to: writable now (a probe file
 * written, fsynced and removed), and with room for one checkpoint, else a
 * warning with both figures. */
static int check_room(const pile_log *log, const char *dir, const char *what, uint64_t need, pile_err *err)
{
    pile_buf probe = {0};
    if (pile_fs_join(&probe, dir, ".pile.probe")) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    int rc = pile_fs_write_atomic(probe.data, "probe\n", 6, err);
    if (rc < 0) {
        pile_err inner = *err;
        rc = pile_err_set(err, rc, "%s '%s' is not writable: %s", what, dir, inner.msg);
    }
    unlink(probe.data);
    pile_buf_free(&probe);
    struct statvfs vs;
    if (rc == 0 && statvfs(dir, &vs) == 0) {
        uint64_t avail = (uint64_t)vs.f_bavail * (uint64_t)vs.f_frsize;
        if (avail < need)
            pile_log_printf(log, PILE_LOG_WARN,
                            "%s '%s' has %.1f MiB free, and one checkpoint of this model (weights and optimizer "
                            "state) takes about %.1f MiB: saving will fail unless room is made",
                            what, dir, (double)avail / 1048576.0, (double)need / 1048576.0);
    }
    return rc;
}

/* The validation samples the run will evaluate (the first eval_rows, or
 * all), their ids checked now: a damaged val shard would otherwise stop the
 * run at its first validation, hours in. */
static int check_val_data(trainer *t, pile_err *err)
{
    const pile_train_config *c = t->cfg;
    uint64_t n = t->info->val_samples;
    if (c->eval_rows > 0 && (uint64_t)c->eval_rows < n) n = (uint64_t)c->eval_rows;
    host_batch *hb = &t->val_batch;
    /* a copy: what it counts is the validations' to report; a damaged row
     * it names (with --skip_corrupt_rows) is named once */
    corrupt_guard g = t->guard;
    /* each rank the samples it will evaluate (see evaluate) */
    size_t first, count;
    pile_comm_partition(t->comm, (size_t)n, &first, &count);
    for (uint64_t i = first; i < first + count; i++) {
        int got = pile_data_sample(t->data, 1, i, c->doc_mask_loss, hb->tokens, hb->targets,
                                   c->doc_mask ? hb->doc_start : NULL, err);
        PILE_FORWARD_IF_ERR(guard_sample(&g, t->data, c->data, 1, i, got, err));
        PILE_FORWARD_IF_ERR(check_sample_ids(hb->tokens, hb->targets, t->T, t->data, 1, i, c->data, err));
    }
    t->guard.rows_named = g.rows_named;
    return 0;
}

/* --resume: the checkpoint must have been trained on these shards
 * (--allow_data_change takes other ones, said). */
static int check_resume_data(trainer *t, const char *ckpt, pile_err *err)
{
    const pile_train_config *c = t->cfg;
    pile_buf was = {0};
    pile_err e2;
    int rc = pile_checkpoint_read_state_json(ckpt, "data", &was, &e2);
    if (rc == PILE_ENOENT) {
        pile_log_printf(t->log, PILE_LOG_WARN,
                        "checkpoint '%s' does not record its shards (written by an older pile-trainer): the shards "
                        "in '%s' are not checked against them",
                        ckpt, c->data);
        rc = 0;
    } else if (rc < 0) {
        *err = e2;
    } else if ((rc = pile_data_identity_check(t->data, was.data, &e2)) == PILE_EMISMATCH) {
        if (c->allow_data_change) {
            pile_log_printf(t->log, PILE_LOG_WARN,
                            "resuming from '%s' on other shards (--allow_data_change): %s; the data order differs "
                            "from here on",
                            ckpt, e2.msg);
            rc = 0;
        } else {
            rc = pile_err_set(err, PILE_EMISMATCH,
                              "cannot resume from '%s': the shards in '%s' are not the ones it was trained on: %s "
                              "(--allow_data_change resumes on them anyway; the data order then differs)",
                              ckpt, c->data, e2.msg);
        }
    } else if (rc < 0) {
        *err = e2;
    }
    pile_buf_free(&was);
    return rc;
}

/* --resume: best_model/ must be the best of the run being continued, which
 * the checkpoint records (best_step, best_val_loss). One written past the
 * checkpoint (by steps a rollback or a kill discarded) is moved aside to
 * best_model-discarded/, and the right one rewritten: from the loaded
 * weights when the best is this step, else copied from the checkpoint of
 * its step if one is kept; else it comes back at the next improvement. */
static int check_best_model(trainer *t, pile_err *err)
{
    const pile_train_config *c = t->cfg;
    const pile_train_state *st = &t->st;
    pile_buf best = {0}, aside = {0}, src = {0};
    if (pile_fs_join(&best, c->checkpoint_dir, "best_model") ||
        pile_fs_join(&aside, c->checkpoint_dir, "best_model-discarded"))
        return pile_err_set(err, PILE_ENOMEM, "out of memory");
    pile_train_state bs;
    pile_err e2;
    int have = pile_fs_is_dir(best.data) && pile_checkpoint_read_state(best.data, &bs, &e2) == 0;
    int rc = 0, want = isfinite(st->best_val_loss);
    if (have ? want && bs.step <= st->step && bs.best_val_loss == st->best_val_loss &&
                   (st->best_step < 0 || bs.step == st->best_step)
             : !want && !pile_fs_is_dir(best.data))
        goto out;
    if (pile_fs_is_dir(best.data)) {
        if ((rc = pile_checkpoint_remove(aside.data, err)) < 0) goto out;
        if (rename(best.data, aside.data) != 0) {
            rc = pile_err_sys(err, PILE_EIO, errno, "cannot rename '%s' to '%s'", best.data, aside.data);
            goto out;
        }
        char was[96] = "";
        if (have) snprintf(was, sizeof was, " (step %" PRId64 ", val loss %.4f)", bs.step, bs.best_val_loss);
        pile_log_printf(t->log, PILE_LOG_WARN,
                        "'%s'%s is not the best model of the run being continued (it comes from steps past step "
                        "%" PRId64 ", which are trained again): moved to '%s'",
                        best.data, was, st->step, aside.data);
    }
    if (!want) goto out;
    if (st->best_step == st->step && state_sharded(t)) {
        /* rank 0 alone here, and the weights are spread over the ranks */
        t->best_missing = 1;
        pile_log_printf(t->log, PILE_LOG_WARN,
                        "best_model/ is rewritten at the next improvement (the weights of step %" PRId64
                        " are sharded over the ranks)",
                        st->step);
    } else if (st->best_step == st->step) {
        rc = save_best_model(t, err);
    } else if (st->best_step < 0 || pile_checkpoint_find_step(c->checkpoint_dir, st->best_step, &src, &e2) < 0) {
        t->best_missing = 1;
        pile_log_printf(t->log, PILE_LOG_WARN,
                        "no checkpoint of step %" PRId64 " (the best so far, val loss %.4f) is kept: best_model/ "
                        "comes back at the next improvement",
                        st->best_step, st->best_val_loss);
        goto out;
    } else if (pile_checkpoint_copy(src.data, best.data, 1, &e2) < 0) {
        t->best_missing = 1;
        pile_log_printf(t->log, PILE_LOG_WARN,
                        "cannot rewrite best_model/ from '%s' (%s): it comes back at the next improvement", src.data,
                        e2.msg);
        goto out;
    }
    if (rc == 0)
        pile_log_printf(t->log, PILE_LOG_INFO, "best_model/ rewritten with the weights of step %" PRId64
                        " (val loss %.4f)", st->best_step, st->best_val_loss);
out:
    pile_buf_free(&best);
    pile_buf_free(&aside);
    pile_buf_free(&src);
    return rc;
}

/* The share of the device's peak the tokens/s are worth; 0 without a peak. */
static double mfu_of(const trainer *t, double tok_per_s)
{
    /* tok_per_s counts every rank's tokens; the peak is one device's */
    return t->peak_flops > 0 ? tok_per_s * t->flops_per_token / (t->peak_flops * (double)t->world) : 0;
}

static void log_progress(trainer *t, double loss, double lr, double gnorm, double tok_per_s, double eta_s)
{
    char tps[32], eta[32];
    thousands(tps, sizeof tps, (uint64_t)(tok_per_s + 0.5));
    duration(eta, sizeof eta, eta_s);
    double rss = (double)pile_rss_bytes() / (1024.0 * 1024.0);
    char corrupt[48] = "";
    uint64_t ncorrupt = t->corrupt_rows;
    if (ncorrupt) snprintf(corrupt, sizeof corrupt, " corrupt rows %" PRIu64, ncorrupt);
    char scale[64] = "";
    const pile_loss_scaler *ls = pile_optim_loss_scaler(t->opt);
    if (ls)
        snprintf(scale, sizeof scale, " scale %g skipped %" PRId64, pile_loss_scaler_scale(ls),
                 pile_loss_scaler_skipped(ls));
    char mfu[24] = "";
    if (t->peak_flops > 0) snprintf(mfu, sizeof mfu, " mfu %.1f%%", 100.0 * mfu_of(t, tok_per_s));
    char gpu[64] = "";
    if (!pile_backend_host_memory(t->be)) /* a device's tensors: allocated now / the most so far */
        snprintf(gpu, sizeof gpu, " gpu %.0f/%.0f MiB", (double)pile_backend_bytes_in_use(t->be) / (1024.0 * 1024.0),
                 (double)pile_backend_bytes_peak(t->be) / (1024.0 * 1024.0));
    pile_log_printf(t->log, PILE_LOG_PROGRESS,
                    "epoch %" PRId64 "/%" PRId64 " step %" PRId64 "/%" PRId64
                    " loss %.4f lr %.2e gnorm %.3f tok/s %s%s eta %s rss %.0f MiB%s%s%s",
                    t->st.epoch + 1, t->total_epochs, t->st.step, t->total_steps, loss, lr, gnorm, tps, mfu, eta, rss, gpu,
                    scale, corrupt);
}

/* "Reduce gradients": the step's gradient summed over the ranks (to
 * each rank's shard from ZeRO stage 1 on: pile_optim_reduce_gradients),
 * and the sums every rank needs, in one scalar allreduce: the loss sum,
 * and the squares of the gradient (each rank sums its partition or shard,
 * so that the ranks' partial sums add up to the global norm's). On one
 * rank at stage 0 the allreduces leave everything as it is and the
 * partition is the whole buffer: the norm is pile_optim_grad_norm's, bit
 * for bit. */
static int reduce_gradients(trainer *t, double *loss_sum, double *gnorm, pile_err *err)
{
    double sums[2] = {*loss_sum, 0.0};
    PILE_FORWARD_IF_ERR(pile_optim_reduce_gradients(t->opt, &sums[1], err));
    PILE_FORWARD_IF_ERR(pile_comm_allreduce_f64(t->comm, sums, 2, PILE_COMM_SUM, err));
    *loss_sum = sums[0];
    *gnorm = sqrt(sums[1]);
    return 0;
}

/* Rows [at, end) of the epoch's order into the step batch from row *row
 * on: their target tokens added to *tokens. */
static int gather_rows(trainer *t, uint64_t at, uint64_t end, size_t *row, int64_t *tokens, pile_err *err)
{
    const pile_train_config *c = t->cfg;
    const int T = t->T;
    for (; at < end; at++, (*row)++) {
        size_t o = *row * (size_t)T;
        uint64_t i = pile_data_epoch_sample(t->data, c->seed, (uint64_t)t->st.epoch, at);
        int n = pile_data_sample(t->data, 0, i, c->doc_mask_loss, t->step_batch.tokens + o, t->step_batch.targets + o,
                                 c->doc_mask ? t->step_batch.doc_start + o : NULL, err);
        n = guard_sample(&t->guard, t->data, c->data, 0, i, n, err);
        if (n < 0) return n;
        *tokens += n;
        PILE_FORWARD_IF_ERR(
            check_sample_ids(t->step_batch.tokens + o, t->step_batch.targets + o, T, t->data, 0, i, c->data, err));
    }
    return 0;
}

/* The step at pos: its rows over all ranks, and this rank's [lo, hi) of
 * them. */
static void step_share(const trainer *t, uint64_t pos, uint64_t *step_rows, uint64_t *lo, uint64_t *hi)
{
    const uint64_t N = t->info->train_samples;
    const uint64_t per_rank = (uint64_t)t->cfg->batch_size * (uint64_t)t->cfg->accumulation_steps;
    *step_rows = N - pos < per_rank * (uint64_t)t->world ? N - pos : per_rank * (uint64_t)t->world;
    *lo = per_rank * (uint64_t)t->rank;
    if (*lo > *step_rows) *lo = *step_rows;
    *hi = *step_rows - *lo < per_rank ? *step_rows : *lo + per_rank;
}

/* Stages micro-batch k of the step's `rows` rows in step_batch: the
 * batch_size rows from k batch_size on (fewer at the end). */
static int stage_micro(trainer *t, size_t rows, int k, pile_err *err)
{
    const pile_train_config *c = t->cfg;
    const size_t first = (size_t)k * (size_t)c->batch_size, o = first * (size_t)t->T;
    const int b = rows - first < (size_t)c->batch_size ? (int)(rows - first) : c->batch_size;
    pile_batch batch = {b, t->T, t->step_batch.tokens + o, t->step_batch.targets + o,
                        c->doc_mask ? t->step_batch.doc_start + o : NULL};
    return pile_model_stage(t->model, &batch, err);
}

/* The next step's first micro-batch, staged while this step's last one
 * computes, so that the copy to a device overlaps compute across steps
 * too. Its rows are the ones that step reads first (the epoch's order
 * depends on (seed, epoch, position) alone), read here, with gather_rows'
 * checks, into step_batch's first rows, which the last micro-batch no
 * longer needs (staged: copied), and that step reads them no more.
 * Nothing here may stop the run or change its state: a row that does not
 * read or check (a damaged one) leaves nothing read ahead, and the next
 * step reads and reports it as it always did; a batch the model refuses
 * is left for that step to stage, and refused there. No collective either
 * (ranks without micro-batches never come here). */
static void prefetch_next_step(trainer *t, uint64_t step_rows)
{
    const pile_train_config *c = t->cfg;
    const int T = t->T;
    t->prefetched = 0;
    if (t->st.step + 1 >= t->total_steps) return;
    int64_t epoch = t->st.epoch;
    uint64_t pos = t->st.position + step_rows, rows, lo, hi;
    if (pos >= t->info->train_samples) epoch++, pos = 0;
    step_share(t, pos, &rows, &lo, &hi);
    const int b = hi - lo < (uint64_t)c->batch_size ? (int)(hi - lo) : c->batch_size;
    if (b == 0) return;
    host_batch *hb = &t->step_batch;
    pile_err e;
    int64_t tokens = 0;
    for (int r = 0; r < b; r++) {
        size_t o = (size_t)r * (size_t)T;
        uint64_t i = pile_data_epoch_sample(t->data, c->seed, (uint64_t)epoch, pos + lo + (uint64_t)r);
        int n = pile_data_sample(t->data, 0, i, c->doc_mask_loss, hb->tokens + o, hb->targets + o,
                                 c->doc_mask ? hb->doc_start + o : NULL, &e);
        /* guard_sample passes a row that reads as it is */
        if (n < 0 || check_sample_ids(hb->tokens + o, hb->targets + o, T, t->data, 0, i, c->data, &e) < 0) return;
        tokens += n;
    }
    t->prefetched = b;
    t->prefetch_epoch = epoch;
    t->prefetch_pos = pos;
    t->prefetch_tokens = tokens;
    pile_batch batch = {b, T, hb->tokens, hb->targets, c->doc_mask ? hb->doc_start : NULL};
    (void)pile_model_stage(t->model, &batch, &e);
}

/* One optimizer step at (epoch, position): the step takes the next
 * batch_size x accumulation_steps x world_size samples of the epoch's
 * order (fewer at the epoch's end), and rank r the r-th run of
 * batch_size x accumulation_steps of them (the last ranks' shorter or
 * empty at the epoch's end), cut into micro-batches of batch_size: the
 * very micro-batches one process would run with accumulation_steps x
 * world_size, and each its dropout masks. The slices depend on nothing
 * but the rank and the world size. The target tokens are counted over
 * all ranks, and gradients accumulated scaled by 1 / tokens, so the
 * step's loss is the token mean over the whole global batch. */
static int train_step(trainer *t, double *loss_out, double *gnorm_out, double *lr_out, int64_t *tokens_out,
                      pile_err *err)
{
    const pile_train_config *c = t->cfg;
    const uint64_t pos = t->st.position;
    uint64_t step_rows, lo, hi;
    step_share(t, pos, &step_rows, &lo, &hi);
    const int n_micro = (int)((hi - lo + (uint64_t)c->batch_size - 1) / (uint64_t)c->batch_size);
    /* the first micro-batch's rows came read ahead by the step before,
     * and staged unless something ran in between that left it out (a
     * validation, a model made anew): then it is staged again from them */
    const int ahead = t->prefetched && t->prefetch_epoch == t->st.epoch && t->prefetch_pos == pos
                          ? t->prefetched
                          : 0;
    const int staged = ahead && pile_model_staged(t->model) == 1;
    t->prefetched = 0;
    if (!staged) pile_model_unstage(t->model);
    int64_t tokens = ahead ? t->prefetch_tokens : 0;
    size_t row = (size_t)ahead;
    int rc = gather_rows(t, pos + lo + (uint64_t)ahead, pos + hi, &row, &tokens, err);
    /* a damaged row on one rank stops every rank (each rank's message says which) */
    PILE_FORWARD_IF_ERR(meet(t->comm, rc, NULL, err));
    PILE_FORWARD_IF_ERR(pile_comm_allreduce_i64(t->comm, &tokens, 1, PILE_COMM_SUM, err));
    pile_optim_zero_grad(t->opt);
    double loss_sum = 0;
    /* fp16: the loss times the scale, so that small gradients survive in
     * 16 bits (a power of two: 1 / tokens times it rounds as 1 / tokens) */
    const double loss_scale = pile_optim_loss_scale(t->opt);
    t->step_scale = loss_scale;
    if (tokens > 0) {
        const float scale = (float)(loss_scale / (double)tokens);
        /* every micro-batch is full but perhaps the epoch's last; the
         * next one (the next step's first after the last) is staged before
         * each forward, so that it travels to a device while this one
         * computes */
        const size_t rows = row;
        if (!staged) PILE_FORWARD_IF_ERR(stage_micro(t, rows, 0, err));
        for (int mi = 0; mi < n_micro; mi++) {
            if (mi + 1 < n_micro) PILE_FORWARD_IF_ERR(stage_micro(t, rows, mi + 1, err));
            else prefetch_next_step(t, step_rows);
            pile_fwd_stats fs;
            /* the micro-batch's number in the global batch: another mask on each rank */
            const int micro = t->rank * c->accumulation_steps + mi;
            PILE_FORWARD_IF_ERR(pile_model_forward(t->model, NULL, 1, dropout_seed(c->seed, t->st.step, micro),
                                                   scale, &fs, err));
            pile_optim_begin_backward(t->opt, mi == n_micro - 1);
            PILE_FORWARD_IF_ERR(pile_model_backward(t->model, pile_optim_grads(t->opt), err));
            PILE_FORWARD_IF_ERR(pile_optim_backward_done(t->opt, err));
            loss_sum += fs.loss_sum;
        }
    } else {
        pile_model_unstage(t->model); /* a step without targets runs no micro-batch */
    }
    double gnorm = 0.0;
    PILE_FORWARD_IF_ERR(reduce_gradients(t, &loss_sum, &gnorm, err));
    double loss = tokens > 0 ? loss_sum / (double)tokens : 0.0;
    pile_loss_scaler *scaler = pile_optim_loss_scaler(t->opt);
    if (!scaler && (!isfinite(loss) || !isfinite(gnorm)))
        return pile_err_set(err, PILE_ECORRUPT,
                            "training diverged at step %" PRId64 ": loss %g, gradient norm %g (nothing was written "
                            "for this step; resume from the last checkpoint with a lower --learning_rate)",
                            t->st.step + 1, loss, gnorm);
    /* the schedule follows the steps applied: a skipped step does not
     * advance it (DeepSpeed's rule); without fp16 they are t->st.step */
    double lr = pile_lr_at(pile_optim_steps(t->opt), t->total_steps, t->warmup_steps, c->learning_rate, t->min_lr);
    if (scaler) {
        /* an overflow on any rank skips the step on every rank */
        int64_t overflow = !isfinite(gnorm) || !isfinite(loss);
        PILE_FORWARD_IF_ERR(pile_comm_allreduce_i64(t->comm, &overflow, 1, PILE_COMM_MAX, err));
        pile_loss_scaler_step ls;
        double unscaled = gnorm;
        int rc = pile_optim_step_scaled(t->opt, gnorm, (int)overflow, (float)c->gradient_clipping, (float)lr,
                                        &unscaled, &ls, err);
        if (rc < 0) return rc;
        if (rc == 1)
            pile_log_printf(t->log, PILE_LOG_WARN,
                            "step %" PRId64 " skipped: fp16 gradient overflow at loss scale %g (next scale %g; %" PRId64
                            " steps skipped so far)",
                            t->st.step + 1, ls.scale, ls.next_scale, pile_loss_scaler_skipped(scaler));
        gnorm = unscaled;
    } else {
        PILE_FORWARD_IF_ERR(pile_optim_step(t->opt, gnorm, (float)c->gradient_clipping, (float)lr, err));
    }
    /* the step's one check of the backend's sticky error */
    PILE_FORWARD_IF_ERR(pile_backend_sync(t->be, err));
    t->st.step++;
    t->st.position = pos + step_rows;
    t->st.tokens_seen += (uint64_t)tokens;
    *loss_out = loss;
    *gnorm_out = gnorm;
    *lr_out = lr;
    *tokens_out = tokens;
    return 0;
}

/* failed: the run failed after its start, where this rank's failure may
 * not be the others' (pile_comm_abandon: nothing that waits for them) */
static void trainer_close(trainer *t, int failed)
{
    pile_metrics_close(t->metrics);
    pile_optim_free(t->opt);
    pile_model_free(t->model);
    pile_data_close(t->data);
    pile_backend_close(t->offload);
    pile_backend_close(t->be);
    if (failed) pile_comm_abandon(t->comm);
    else pile_comm_close(t->comm);
    host_batch_free(&t->step_batch);
    host_batch_free(&t->val_batch);
    pile_buf_free(&t->config_json);
    pile_buf_free(&t->data_json);
    pile_checkpoint_tokenizer_free(t->tok_files);
    /* last: nothing is written into the folder once another run may take it */
    pile_fs_lock_close(t->lock);
}

/* Where this process stands in the job, from the launcher's environment,
 * checked against world_size before any folder exists. *threads: the CPU
 * threads a rank takes when none are given, its share of the cores with
 * the machine's other ranks. */
static int read_launch(const pile_train_config *c, pile_comm_env *env, int *threads, pile_err *err)
{
    PILE_FORWARD_IF_ERR(pile_comm_env_parse(env, NULL, err));
    PILE_RETURN_IF(c->world_size != env->world_size, err, PILE_EINVAL,
                   "world_size %d, but %s started %d rank%s: start as many with the launcher (mpirun -np, srun "
                   "--ntasks, torchrun --nproc_per_node), or leave world_size out",
                   c->world_size,
                   env->launcher == PILE_COMM_LAUNCHER_NONE ? "no launcher (one process)"
                                                            : pile_comm_launcher_name(env->launcher),
                   env->world_size, env->world_size == 1 ? "" : "s");
    *threads = c->threads;
    if (*threads == 0 && env->local_world_size > 1) {
        *threads = pile_backend_usable_cores() / env->local_world_size;
        if (*threads < 1) *threads = 1;
    }
    return 0;
}

/* The communicator of the ranks this process trains with, for the memory
 * the backend's tensors are in (pile_comm_open_auto: "single" without a
 * launcher, "mpi" under mpirun or srun, "tcp" under torchrun, "nccl"
 * between GPUs, "devsim" between the devsim backends' ranks: the device
 * path checked without a device), and its place among them. */
static int open_comm(trainer *t, const pile_comm_env *env, pile_err *err)
{
    const pile_comm_options o = {.env = env,
                                 .timeout_s = t->cfg->dist_timeout,
                                 .device_memory = !pile_backend_host_memory(t->be),
                                 .device_comm = pile_backend_device_comm(t->be)};
    PILE_FORWARD_IF_ERR(pile_comm_open_auto(&t->comm, &o, err));
    t->rank = pile_comm_rank(t->comm);
    t->world = pile_comm_world_size(t->comm);
    t->local_rank = env->local_rank;
    t->local_world = env->local_world_size;
    /* from here every call goes through the thread (comm.h), in order; a
     * communicator of device memory overlaps on the backend's comm stream
     * instead (optim.h, streams), which needs no thread */
    if (t->cfg->overlap_comm && t->world > 1 && !pile_comm_device_memory(t->comm))
        PILE_FORWARD_IF_ERR(pile_comm_thread_start(t->comm, err));
    return 0;
}

/* The data, the tokenizer checkpoints carry, the model's dimensions and
 * the schedule: every rank's own, read the same way by each. */
static int open_data(trainer *t, const pile_train_config *c, pile_model_config *mc, pile_err *err)
{
    PILE_FORWARD_IF_ERR(pile_data_open(&t->data, c->data, c->max_length, c->val_fraction, err));
    t->info = pile_data_get_info(t->data);
    warn_unverified(t->log, t->info, c->data);
    t->T = pile_data_seq_len(t->data);
    const pile_data_info *info = t->info;
    PILE_RETURN_IF(info->vocab_size == 0 || info->vocab_size > (uint32_t)INT32_MAX - 64, err, PILE_ELIMIT,
                   "the shards in '%s' have a vocabulary of %" PRIu32 " ids; the trainer takes 1 to %d",
                   c->data, info->vocab_size, INT32_MAX - 64);
    PILE_RETURN_IF(info->train_samples == 0, err, PILE_EINVAL, "no train samples in '%s'", c->data);
    /* checkpoints copy the tokenizer: one that cannot be found fails now, not at the first save */
    PILE_RETURN_IF(!c->tokenizer[0] && info->tokenizer_error[0], err, PILE_ENOENT,
                   "%s; pass --tokenizer SPEC (the tokenizer the shards were made with)", info->tokenizer_error);
    PILE_FORWARD_IF_ERR(open_tokenizer(t, c, info, err));
    PILE_RETURN_IF(pile_data_identity(t->data, &t->data_json) < 0, err, PILE_ENOMEM, "out of memory");

    memset(mc, 0, sizeof *mc);
    PILE_FORWARD_IF_ERR(pile_model_preset(mc, c->model, err));
    if (c->n_layer > 0) mc->n_layer = c->n_layer;
    if (c->n_head > 0) mc->n_head = c->n_head;
    if (c->n_embd > 0) mc->n_embd = c->n_embd;
    PILE_RETURN_IF(mc->n_head <= 0 || mc->n_embd % mc->n_head != 0, err, PILE_EINVAL,
                   "n_embd %d is not a multiple of n_head %d", mc->n_embd, mc->n_head);
    mc->vocab_size = (int)info->vocab_size;
    mc->n_positions = t->T;
    mc->dropout = c->dropout;
    PILE_FORWARD_IF_ERR(pile_model_recompute_parse(c->recompute, &mc->recompute, err));
    /* bf16: 16-bit tensors on a backend that computes in them, else the
     * backend's emulation (the CPU: F32 rounded where a device stores
     * 16 bits); the optimizer keeps fp32 master weights either way, and
     * for fp16 the loss scaler */
    mc->dtype = PILE_DTYPE_F32;
    if (c->precision != PILE_PRECISION_FP32) {
        const pile_dtype dt = c->precision == PILE_PRECISION_BF16 ? PILE_DTYPE_BF16 : PILE_DTYPE_F16;
        if (pile_backend_supports(t->be, PILE_OP_MATMUL_FWD, dt)) mc->dtype = dt;
        else PILE_FORWARD_IF_ERR(pile_backend_set_emulation(t->be, dt, err));
    }

    /* schedule: a step is the global batch, every rank's share of it */
    uint64_t per_step = (uint64_t)c->batch_size * (uint64_t)c->accumulation_steps * (uint64_t)t->world;
    t->steps_per_epoch = (int64_t)((info->train_samples + per_step - 1) / per_step);
    t->total_steps = c->max_steps > 0 ? c->max_steps : (int64_t)c->epochs * t->steps_per_epoch;
    t->total_epochs = (t->total_steps + t->steps_per_epoch - 1) / t->steps_per_epoch;
    t->warmup_steps = c->warmup_steps > 0 ? c->warmup_steps : pile_warmup_steps(c->warmup_ratio, t->total_steps);
    t->min_lr = c->min_lr < 0 ? c->learning_rate / 10 : c->min_lr;
    return 0;
}

/* Rank 0's look into the run folder: with --resume the checkpoint to
 * continue from (the newest that passes its checks; each one passed over
 * is said), without it none may be there. */
static int find_checkpoint(trainer *t, const pile_train_config *c, pile_buf *ckpt, pile_err *err)
{
    pile_buf notes = {0};
    int rc = 0;
    if (c->resume) {
        rc = pile_checkpoint_find_resumable(c->checkpoint_dir, ckpt, &notes, err);
        print_notes(t->log, &notes, PILE_LOG_WARN);
        if (rc == PILE_ENOENT && !notes.len)
            rc = pile_err_set(err, PILE_ENOENT, "no checkpoint in '%s' to resume from", c->checkpoint_dir);
        if (rc == 0 && !cstr(ckpt)) rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
    } else if (pile_checkpoint_find_latest(c->checkpoint_dir, ckpt, err) == 0) {
        rc = pile_err_set(err, PILE_EINVAL,
                          "'%s' already holds a run (latest checkpoint '%s'); continue it with --resume, or "
                          "choose another --checkpoint-dir",
                          c->checkpoint_dir, ckpt->data);
    }
    pile_buf_free(&notes);
    return rc;
}

/* The checkpoint rank 0 chose, handed to every rank, so that no other
 * rank reads every candidate's files again to choose the same. */
static int share_checkpoint_path(trainer *t, pile_buf *ckpt, pile_err *err)
{
    char path[4096]; /* checkpoint_dir (under 1024 bytes), '/', a folder name (under 64) */
    memset(path, 0, sizeof path);
    if (t->rank == 0) memcpy(path, ckpt->data, ckpt->len < sizeof path - 1 ? ckpt->len : sizeof path - 1);
    PILE_FORWARD_IF_ERR(pile_comm_broadcast_bytes(t->comm, path, sizeof path, 0, err));
    path[sizeof path - 1] = '\0';
    ckpt->len = 0;
    PILE_RETURN_IF(pile_buf_append_str(ckpt, path) || !cstr(ckpt), err, PILE_ENOMEM, "out of memory");
    return 0;
}

/* The model and optimizer, new or loaded from checkpoint ckpt (--resume),
 * and what the loop needs beside them; every rank the same (every rank
 * starts from the same weights: the same seed's initialisation, or the
 * same checkpoint). Rank 0 checks the room for checkpoints and opens the
 * metrics. Each rank checks the validation samples it will evaluate. */
static int open_state(trainer *t, const pile_train_config *c, const pile_model_config *mc, const char *ckpt,
                      int64_t *resumed_from, pile_err *err)
{
    const pile_data_info *info = t->info;
    if (c->resume) {
        PILE_FORWARD_IF_ERR(check_resume_model(ckpt, mc, c, err));
        PILE_FORWARD_IF_ERR(check_resume_settings(ckpt, c, t->world, t->log, err));
    }
    pile_adamw_config ac = {(float)c->adam_beta1, (float)c->adam_beta2, (float)c->adam_epsilon,
                            (float)c->weight_decay, c->decay_all};
    PILE_FORWARD_IF_ERR(pile_plan_reserve(c, mc, t->be, t->T, err));
    PILE_FORWARD_IF_ERR(pile_model_create(&t->model, t->be, mc, c->batch_size, t->T, err));
    /* MFU: the position table is a lookup, the only parameters no product uses */
    t->flops_per_token = pile_mfu_flops_per_token(
        (double)pile_model_param_count(t->model) - (double)mc->n_positions * mc->n_embd, mc->n_layer, mc->n_head,
        mc->n_embd / mc->n_head, t->T);
    t->peak_flops = c->peak_tflops * 1e12;
    t->peak_from = "--peak_tflops";
    if (!(t->peak_flops > 0))
        t->peak_flops = 1e12 * pile_mfu_peak_tflops(pile_backend_device_name(t->be), c->precision, &t->peak_from);
    /* the optimizer takes the model's parameters as its master weights: a
     * new run's initial ones, or (resume) the checkpoint's, loaded into it */
    if (!c->resume) pile_model_init(t->model, c->seed);
    /* ZeRO: the collectives of one rank are identities, so the
     * communicator is handed over only when there are others */
    pile_optim_zero zc = {c->zero_stage, pile_comm_world_size(t->comm) > 1 ? t->comm : NULL, NULL,
                          (size_t)c->reduce_bucket_size, c->offload_param, (size_t)c->stage3_prefetch_bucket_size,
                          c->overlap_comm, 0};
    /* offload_param alone offloads the optimizer too (the planner's "all") */
    if (c->offload_optimizer || c->offload_param) {
        PILE_FORWARD_IF_ERR(pile_backend_open(&t->offload, "cpu", pile_backend_threads(t->be), err));
        /* the offloaded parameter shard is rounded where the model's would be */
        if (pile_backend_emulation(t->be) != PILE_DTYPE_F32)
            PILE_FORWARD_IF_ERR(pile_backend_set_emulation(t->offload, pile_backend_emulation(t->be), err));
        zc.offload = t->offload;
    }
    PILE_FORWARD_IF_ERR(pile_optim_create_zero(&t->opt, t->model, &ac, &zc, err));
    if (!c->resume && mc->dtype != PILE_DTYPE_F32) {
        /* 16-bit parameters: the master weights take the unrounded draws,
         * as on an emulating backend, not the parameters' rounding */
        const size_t n = pile_model_flat_size(t->model);
        float *init = malloc(n * sizeof *init);
        PILE_RETURN_IF(!init, err, PILE_ENOMEM, "cannot allocate %zu initial master weights", n);
        pile_model_init_values(t->model, c->seed, init);
        int rc = pile_optim_put(t->opt, PILE_OPTIM_MASTER, init, 0, n, err);
        free(init);
        PILE_FORWARD_IF_ERR(rc);
        PILE_FORWARD_IF_ERR(pile_optim_update_model(t->opt, err));
    }
    if (c->precision == PILE_PRECISION_FP16) {
        pile_loss_scaler_config lsc;
        pile_train_config_loss_scaler(c, &lsc);
        PILE_FORWARD_IF_ERR(pile_optim_enable_loss_scaling(t->opt, &lsc, err));
    }
    t->step_scale = pile_optim_loss_scale(t->opt);

    memset(&t->st, 0, sizeof t->st);
    if (c->resume) {
        PILE_FORWARD_IF_ERR(pile_checkpoint_load(ckpt, t->model, t->opt, &t->st, err));
        PILE_FORWARD_IF_ERR(check_resume_state(ckpt, &t->st, c, info, err));
        PILE_FORWARD_IF_ERR(check_resume_data(t, ckpt, err));
        PILE_RETURN_IF(t->st.position > info->train_samples, err, PILE_EMISMATCH,
                       "cannot resume from '%s': it stopped at sample %" PRIu64 " of an epoch of %" PRIu64
                       " (were the shards in '%s' changed?)",
                       ckpt, t->st.position, info->train_samples, c->data);
        if (t->st.total_steps != t->total_steps)
            pile_log_printf(t->log, PILE_LOG_WARN,
                            "the schedule changes from %" PRId64 " to %" PRId64
                            " steps (epochs or max_steps differ from the checkpoint's run)",
                            t->st.total_steps, t->total_steps);
        *resumed_from = t->st.step;
        t->last_save_step = t->st.step;
        const char *base = strrchr(ckpt, '/');
        snprintf(t->last_saved, sizeof t->last_saved, "%s", base ? base + 1 : ckpt);
    } else {
        t->st.best_val_loss = INFINITY;
        t->st.best_step = -1;
        t->st.loss_scale = 1.0;
        t->st.seed = c->seed;
    }
    t->st.total_steps = t->total_steps;
    memcpy(t->st.tokenizer_fp, info->tokenizer_fp, 16);
    snprintf(t->st.tokenizer_spec, sizeof t->st.tokenizer_spec, "%s",
             c->tokenizer[0] ? c->tokenizer : info->tokenizer_spec);

    /* The data folder as an absolute path: `pile-trainer eval` finds the
     * shards through the checkpoint, from whatever folder it is run in. */
    pile_train_config stored = *c;
    pile_buf abs_data = {0};
    if (pile_data_spec_absolute(c->data, &abs_data) == 0 && abs_data.len <= sizeof stored.data)
        memcpy(stored.data, abs_data.data, abs_data.len);
    pile_buf_free(&abs_data);
    PILE_RETURN_IF(pile_train_config_to_json(&stored, &t->config_json) < 0 || !cstr(&t->config_json), err,
                   PILE_ENOMEM, "out of memory");
    if (t->rank == 0) {
        /* room for a checkpoint where checkpoints go (the fallback too) */
        uint64_t need = pile_checkpoint_size_estimate(t->model, 1, pile_checkpoint_tokenizer_bytes(t->tok_files));
        PILE_FORWARD_IF_ERR(check_room(t->log, c->checkpoint_dir, "checkpoint folder", need, err));
        if (c->fallback_dir[0]) {
            PILE_FORWARD_IF_ERR(pile_fs_mkdirs(c->fallback_dir, err));
            PILE_FORWARD_IF_ERR(check_room(t->log, c->fallback_dir, "fallback folder", need, err));
        }
    }
    const size_t per_rank = (size_t)c->batch_size * (size_t)c->accumulation_steps;
    PILE_FORWARD_IF_ERR(host_batch_alloc(&t->step_batch, per_rank, t->T, err));
    PILE_FORWARD_IF_ERR(host_batch_alloc(&t->val_batch, (size_t)c->batch_size, t->T, err));
    PILE_FORWARD_IF_ERR(check_val_data(t, err));
    /* a fresh run in a folder without a checkpoint starts its metrics over (step 0) */
    if (t->rank == 0)
        PILE_FORWARD_IF_ERR(pile_metrics_open(&t->metrics, c->checkpoint_dir, c->resume ? t->st.step : 0, err));
    return 0;
}

/* Sets up everything but the loop, and checks everything the run will need
 * later, so that a run fails before its first step rather than after it:
 * the run folder (locked, writable, room for a checkpoint), the data, the
 * tokenizer checkpoints carry, the validation samples, the checkpoint
 * resumed from (verified, the same settings and shards). In a run of
 * several ranks, rank 0 alone takes the run folder, finds the checkpoint
 * and speaks (t->log; the others' is NULL); the ranks meet after each
 * phase, so that whatever fails on one rank stops them all there. */
static int trainer_open(trainer *t, const pile_train_config *c, const pile_log *log, int64_t *resumed_from,
                        pile_err *err)
{
    t->cfg = c;
    t->log = log;
    t->user_log = log;
    t->last_val_step = -1;
    t->last_save_step = -1;
    *resumed_from = -1;
    PILE_RETURN_IF(c->accumulation_steps < 1 || c->batch_size < 1, err, PILE_EINVAL,
                   "batch_size %d and accumulation_steps %d must be positive", c->batch_size, c->accumulation_steps);
    /* DeepSpeed's rules */
    PILE_RETURN_IF(c->offload_param && c->zero_stage != 3, err, PILE_EINVAL,
                   "offload_param (--offload all) needs ZeRO stage 3 (--zero 3), not %d", c->zero_stage);
    PILE_RETURN_IF(c->offload_optimizer && c->zero_stage < 1, err, PILE_EINVAL,
                   "offload_optimizer (--offload optimizer) needs ZeRO stage 1, 2 or 3 (--zero 1)");
    int threads = 0; /* set by read_launch; 0 keeps -Wmaybe-uninitialized quiet */
    pile_comm_env env;
    PILE_FORWARD_IF_ERR(read_launch(c, &env, &threads, err));
    /* the backend before the communicator, which works on its memory
     * (device: "nccl"; the device of the local rank), and before the run
     * folder: a name this build lacks ('cuda' without CUDA) is refused
     * before the folder is made */
    PILE_FORWARD_IF_ERR(pile_backend_open(&t->be, c->backend, threads, err));
    PILE_FORWARD_IF_ERR(open_comm(t, &env, err));
    if (t->rank != 0) {
        t->rank_log = (pile_log){rank_log_fn, t, 0, 0};
        t->log = NULL;
    }
    t->guard.skip = c->skip_corrupt_rows;
    t->guard.offer_skip = 1;
    t->guard.log = t->rank == 0 ? log : &t->rank_log;
    if (t->backend_why.code)
        pile_log_printf(t->log, PILE_LOG_INFO, "%s: training on the %s backend", t->backend_why.msg,
                        pile_backend_name(t->be));
    PILE_RETURN_IF(t->world > 1 && pile_comm_device_memory(t->comm) == pile_backend_host_memory(t->be), err,
                   PILE_EINVAL, "%d ranks on the %s backend: the '%s' communicator works on %s memory", t->world,
                   pile_backend_name(t->be), pile_comm_name(t->comm),
                   pile_comm_device_memory(t->comm) ? "device" : "host");
    pile_model_config mc;
    pile_buf ckpt = {0};
    int rc = t->rank == 0 ? open_run_folder(t, c, err) : 0;
    if (rc == 0) rc = open_data(t, c, &mc, err);
    if (rc == 0 && t->rank == 0) rc = find_checkpoint(t, c, &ckpt, err);
    /* the host's memory against all its ranks, read by one of them before
     * any has allocated its model (the meet below holds them back) */
    if (rc == 0 && t->local_rank == 0) rc = pile_plan_check_run(c, &mc, t->be, t->T, t->local_world, err);
    rc = meet(t->comm, rc, NULL, err);
    if (rc == 0 && c->resume) rc = share_checkpoint_path(t, &ckpt, err);
    if (rc == 0) rc = open_state(t, c, &mc, ckpt.data, resumed_from, err);
    rc = meet(t->comm, rc, NULL, err);
    if (rc == 0 && c->resume && t->rank == 0) rc = check_best_model(t, err);
    rc = meet(t->comm, rc, NULL, err);
    pile_buf_free(&ckpt);
    return rc;
}

int pile_trainer_train(const pile_train_config *given, const pile_log *log, pile_err *err)
{
    pile_err_clear(err);
    /* the precision the backend defaults to, settled before anything reads
     * it (the memory check, the model, the checkpoints' config) */
    pile_train_config settled = *given;
    const char *backend_name = given->backend;
    trainer t;
    memset(&t, 0, sizeof t);
    /* a CUDA build on a machine without a usable GPU says why it trains on
     * the CPU, once the backend is open (trainer_open) */
    if (!backend_name[0] || !strcmp(backend_name, "auto")) backend_name = pile_backend_default_name(&t.backend_why);
    settled.precision = pile_train_config_precision(given, backend_name);
    settled.precision_given = 1;
    const pile_train_config *cfg = &settled;
    int64_t resumed_from;
    int rc = trainer_open(&t, cfg, log, &resumed_from, err);
    if (rc < 0) {
        name_rank(&t, err);
        trainer_close(&t, 0); /* the ranks met on it (trainer_open) */
        return rc;
    }
    const pile_train_config *c = cfg;
    const pile_model_config *mc = pile_model_get_config(t.model);

    /* Signals: see on_stop_signal; SA_RESTART keeps the checkpoint writes'
     * system calls from failing with EINTR. An inherited SIG_IGN for SIGINT
     * (a background job) or SIGHUP (nohup) stays. */
    static const int stop_signals[] = {SIGINT, SIGTERM, SIGHUP};
    struct sigaction sa, save_sa, old_stop[3], old_usr1;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    /* one handler at a time, so that of two signals at once the second sees the first */
    for (int i = 0; i < 3; i++) sigaddset(&sa.sa_mask, stop_signals[i]);
    sa.sa_flags = SA_RESTART;
    save_sa = sa;
    save_sa.sa_handler = on_save_signal;
    g_stop_signal = 0;
    g_save_signal = 0;
    /* rank 0 speaks for all: the others acknowledge nothing */
    g_signal_fd = t.log ? t.log->signal_fd : 0;
    g_signal_newline = t.log && t.log->progress_in_place;
    for (int i = 0; i < 3; i++) {
        sigaction(stop_signals[i], NULL, &old_stop[i]);
        if (stop_signals[i] == SIGTERM || old_stop[i].sa_handler != SIG_IGN) sigaction(stop_signals[i], &sa, NULL);
    }
    sigaction(SIGUSR1, &save_sa, &old_usr1);

    char n1[32], n2[32], n3[32], n4[32], n5[32], n6[32];
    pile_log_printf(t.log, PILE_LOG_INFO, "model %s (%d layers, %d heads, %d wide, %s parameters), vocabulary %d, context %d",
                    c->model, mc->n_layer, mc->n_head, mc->n_embd,
                    thousands(n1, sizeof n1, pile_model_param_count(t.model)), mc->vocab_size, t.T);
    char ranks[96] = "";
    if (t.world > 1)
        snprintf(ranks, sizeof ranks, " on each of %d ranks (%s), %d rows a step", t.world, pile_comm_name(t.comm),
                 c->batch_size * c->accumulation_steps * t.world);
    pile_log_printf(t.log, PILE_LOG_INFO, "%s train samples, %s val%s; %s steps (%s per epoch), warmup %s, batch %d x %d%s",
                    thousands(n2, sizeof n2, t.info->train_samples), thousands(n3, sizeof n3, t.info->val_samples),
                    t.info->val_held_out ? " (held out from train: no val shards)" : "",
                    thousands(n5, sizeof n5, (uint64_t)t.total_steps),
                    thousands(n4, sizeof n4, (uint64_t)t.steps_per_epoch),
                    thousands(n6, sizeof n6, (uint64_t)t.warmup_steps), c->batch_size, c->accumulation_steps, ranks);
    if (t.peak_flops > 0)
        pile_log_printf(t.log, PILE_LOG_INFO, "mfu: %.3g GFLOP per token (6N + 12LHQT) against a peak of %g TFLOP/s (%s)",
                        t.flops_per_token * 1e-9, t.peak_flops * 1e-12, t.peak_from);
    /* a resumed run at or past its schedule's end has nothing to train */
    const int finished = resumed_from >= 0 && t.st.step >= t.total_steps;
    if (finished) {
        pile_log_printf(t.log, PILE_LOG_INFO,
                        "the run is finished: checkpoint at step %" PRId64 "%s %" PRId64
                        " steps; nothing to train (raise --max_steps or --epochs to go on)",
                        t.st.step, t.st.step > t.total_steps ? ", past the schedule's" : " of", t.total_steps);
    } else if (resumed_from >= 0) {
        pile_buf p = {0};
        pile_fs_join(&p, c->checkpoint_dir, t.last_saved);
        pile_log_printf(t.log, PILE_LOG_INFO,
                        "resuming from '%s' at step %" PRId64 " (epoch %" PRId64 ", sample %" PRIu64 ")",
                        p.data ? p.data : t.last_saved, t.st.step, t.st.epoch + 1, t.st.position);
        pile_buf_free(&p);
    }
    if (!finished && t.warmup_steps >= t.total_steps)
        pile_log_printf(t.log, PILE_LOG_WARN,
                        "the warmup (%" PRId64 " steps) is not shorter than the run (%" PRId64
                        " steps): the rate rises all along and never reaches learning_rate %g",
                        t.warmup_steps, t.total_steps, c->learning_rate);
    if (t.info->val_samples == 0)
        pile_log_printf(t.log, PILE_LOG_WARN, "no validation samples in '%s'; no validation", c->data);

    const double t0 = pile_now();
    /* a log line's loss is the mean of its interval's step losses, as
     * transformers' Trainer logs it (not the last step's alone) */
    double interval_time = 0, interval_loss = 0, last_loss = NAN;
    int64_t interval_tokens = 0, interval_steps = 0, steps_run = 0;
    int interrupted = 0;
    if (resumed_from >= 0 && t.st.pending_val) {
        /* the validation a signal skipped when the run stopped: its result
         * (and best_model) is what the uninterrupted run had. The
         * checkpoint is written again so that it no longer owes it. */
        pile_log_printf(t.log, PILE_LOG_INFO,
                        "step %" PRId64 "'s validation was skipped when the run stopped: doing it first", t.st.step);
        rc = validate(&t, err);
        if (rc == 0 && !t.st.pending_val) {
            char name[sizeof t.last_saved];
            snprintf(name, sizeof name, "%s", t.last_saved);
            rc = save_checkpoint(&t, name, err);
        }
        int64_t sig[2] = {g_stop_signal != 0, 0};
        if (rc == 0) rc = agree_signals(&t, sig, err);
        if (rc == 0 && sig[0]) {
            pile_log_printf(t.log, PILE_LOG_RECORD,
                            "interrupted at step %" PRId64 " before training on; continue with --resume", t.st.step);
            interrupted = 1;
        }
    }
    while (rc == 0 && !interrupted && t.st.step < t.total_steps) {
        double loss = 0, gnorm = 0, lr = 0;
        int64_t tokens = 0;
        double ts = pile_now();
        if ((rc = train_step(&t, &loss, &gnorm, &lr, &tokens, err)) < 0) break;
        double dt = pile_now() - ts;
        interval_time += dt;
        interval_tokens += tokens;
        interval_loss += loss;
        interval_steps++;
        steps_run++;
        last_loss = loss;
        int epoch_end = t.st.position >= t.info->train_samples;
        pile_loss_scaler *scaler = pile_optim_loss_scaler(t.opt);
        if (scaler) {
            /* fp16: every step's scale and the skips so far, whatever the
             * log interval, so that each overflow shows in the curves */
            static const char *const ls_tags[] = {"train/loss_scale", "train/skipped_steps"};
            const double ls_vals[] = {t.step_scale, (double)pile_loss_scaler_skipped(scaler)};
            if ((rc = write_metrics(&t, ls_tags, ls_vals, 2, err)) < 0) break;
        }
        if (t.st.step % c->log_interval == 0 || t.st.step == t.total_steps) {
            double tps = interval_time > 0 ? (double)interval_tokens / interval_time : 0;
            /* by the wall clock, so that validation and checkpoint time count: the
             * steps' time alone promised an end that came later */
            double eta = (double)(t.total_steps - t.st.step) * ((pile_now() - t0) / (double)steps_run);
            double epoch_f = (double)t.st.epoch + (double)t.st.position / (double)t.info->train_samples;
            double mean_loss = interval_loss / (double)interval_steps;
            if ((rc = count_corrupt_rows(&t, err)) < 0) break;
            log_progress(&t, mean_loss, lr, gnorm, tps, eta);
            const char *tags[10] = {"train/loss",  "train/lr",    "train/grad_norm",
                                   "train/tokens_per_sec", "train/epoch", "mem/rss_mib"};
            double vals[10] = {mean_loss, lr, gnorm, tps, epoch_f, (double)pile_rss_bytes() / (1024.0 * 1024.0)};
            size_t ntags = 6;
            /* the corrupt-row count is a curve only where rows may be skipped: elsewhere the first stops the run */
            if (c->skip_corrupt_rows)
                tags[ntags] = "data/corrupt_rows", vals[ntags++] = (double)t.corrupt_rows;
            if (t.peak_flops > 0) tags[ntags] = "train/mfu", vals[ntags++] = mfu_of(&t, tps);
            if (!pile_backend_host_memory(t.be)) { /* a device's tensors, now and at most */
                tags[ntags] = "gpu/mem_allocated_mib";
                vals[ntags++] = (double)pile_backend_bytes_in_use(t.be) / (1024.0 * 1024.0);
                tags[ntags] = "gpu/mem_peak_mib";
                vals[ntags++] = (double)pile_backend_bytes_peak(t.be) / (1024.0 * 1024.0);
            }
            if ((rc = write_metrics(&t, tags, vals, ntags, err)) < 0) break;
            interval_time = 0;
            interval_tokens = 0;
            interval_loss = 0;
            interval_steps = 0;
        }
        if (epoch_end) {
            t.st.epoch++;
            t.st.position = 0;
        }
        if ((epoch_end || (c->eval_interval > 0 && t.st.step % c->eval_interval == 0)) &&
            (rc = validate(&t, err)) < 0)
            break;
        if (epoch_end) {
            char name[64];
            snprintf(name, sizeof name, "epoch-%03" PRId64, t.st.epoch);
            if ((rc = save_checkpoint(&t, name, err)) < 0) break;
        }
        if (c->save_interval > 0 && t.st.step % c->save_interval == 0 && t.last_save_step != t.st.step &&
            (rc = save_step_checkpoint(&t, err)) < 0)
            break;
        /* the signals any rank received, acted on by all at this point */
        int64_t sig[2] = {g_stop_signal != 0, g_save_signal != 0};
        if ((rc = agree_signals(&t, sig, err)) < 0) break;
        if (sig[1]) {
            /* SIGUSR1: a checkpoint now, and training goes on */
            g_save_signal = 0;
            if (t.last_save_step != t.st.step && (rc = save_step_checkpoint(&t, err)) < 0) break;
            pile_buf p = {0};
            pile_fs_join(&p, c->checkpoint_dir, t.last_saved);
            pile_log_printf(t.log, PILE_LOG_INFO, "checkpoint '%s' written (SIGUSR1); training goes on",
                            p.data ? p.data : t.last_saved);
            pile_buf_free(&p);
        }
        if (sig[0]) {
            if (t.last_save_step != t.st.step && (rc = save_step_checkpoint(&t, err)) < 0) break;
            pile_buf p = {0};
            pile_fs_join(&p, c->checkpoint_dir, t.last_saved);
            pile_log_printf(t.log, PILE_LOG_RECORD,
                            "interrupted at step %" PRId64 ": checkpoint '%s' written; continue with --resume",
                            t.st.step, p.data ? p.data : t.last_saved);
            pile_buf_free(&p);
            interrupted = 1;
            break;
        }
    }
    if (rc == 0 && !interrupted && steps_run > 0) {
        /* a run that stops inside an epoch (max_steps) still ends validated
         * and saved (a validation a signal skips is owed in the checkpoint) */
        if (t.last_val_step != t.st.step) rc = validate(&t, err);
        if (rc == 0 && t.last_save_step != t.st.step) rc = save_step_checkpoint(&t, err);
        if (rc == 0 && t.st.pending_val) {
            pile_log_printf(t.log, PILE_LOG_RECORD,
                            "interrupted at step %" PRId64 " before its validation; continue with --resume", t.st.step);
            interrupted = 1;
        }
    }
    for (int i = 0; i < 3; i++) sigaction(stop_signals[i], &old_stop[i], NULL);
    sigaction(SIGUSR1, &old_usr1, NULL);
    /* the flags were this run's: an eval later in the process is not stopped by them */
    g_stop_signal = 0;
    g_save_signal = 0;

    if (rc == 0) rc = count_corrupt_rows(&t, err);
    if (rc == 0) {
        char tok[32], el[32];
        double elapsed = pile_now() - t0;
        const pile_log_level R = PILE_LOG_RESULT;
        if (finished && steps_run == 0)
            pile_log_printf(t.log, R, "nothing trained: the run was finished (step %" PRId64 "%s %" PRId64 " steps)\n",
                            t.st.step, t.st.step > t.total_steps ? ", past the schedule's" : " of", t.total_steps);
        else
            pile_log_printf(t.log, R, "trained %" PRId64 " of %" PRId64 " steps (%" PRId64 " in this run, %s)%s\n",
                            t.st.step, t.total_steps, steps_run, duration(el, sizeof el, elapsed),
                            interrupted ? ", interrupted" : "");
        pile_log_printf(t.log, R, "tokens trained on: %s\n", thousands(tok, sizeof tok, t.st.tokens_seen));
        if (steps_run > 0) pile_log_printf(t.log, R, "final train loss: %.4f\n", last_loss);
        if (isfinite(t.st.best_val_loss))
            pile_log_printf(t.log, R, "best val loss: %.4f (%s)\n", t.st.best_val_loss,
                            t.best_missing ? "its weights were not kept" : "best_model/");
        if (c->skip_corrupt_rows)
            pile_log_printf(t.log, R, "corrupt rows skipped: %" PRIu64 " (%" PRIu64 " samples left out)\n",
                            t.corrupt_rows, t.corrupt_samples);
        pile_log_printf(t.log, R, "checkpoints: %s (latest %s)\n", c->checkpoint_dir,
                        t.last_saved[0] ? t.last_saved : "unchanged");
        if (interrupted) rc = PILE_TRAINER_STOPPED;
    }
    if (rc < 0) name_rank(&t, err);
    /* a step's failure may be this rank's alone while the others wait in
     * a collective: closing must not wait for them (an MPI_Finalize would
     * hang the job with the message unsaid) */
    trainer_close(&t, rc < 0);
    return rc;
}

/* ------------------------------------------------------ eval and sample */

/* 1 when ckpt has no trainer_state.json: a model from elsewhere (a
 * transformers save_pretrained of GPT-2). */
static int is_foreign(const char *ckpt)
{
    pile_buf p = {0};
    int foreign = pile_fs_join(&p, ckpt, "trainer_state.json") == 0 && access(p.data, F_OK) != 0 && errno == ENOENT;
    pile_buf_free(&p);
    return foreign;
}

/* eval and sample read only checkpoints whose files match their
 * checksums.json; a folder without one (an older pile-trainer's, said; a
 * foreign one) is read as it is. */
static int verify_for_reading(const char *ckpt, int foreign, const pile_log *log, pile_err *err)
{
    int rc = pile_checkpoint_verify(ckpt, err);
    if (rc != PILE_ENOENT || !pile_fs_is_dir(ckpt)) return rc == PILE_ENOENT ? 0 : rc;
    if (!foreign) pile_log_printf(log, PILE_LOG_WARN, "%s", err->msg);
    pile_err_clear(err);
    return 0;
}

/* A checkpoint's model, weights loaded, for up to max_batch rows. */
static int open_checkpoint_model(const char *ckpt, const char *backend, int threads, int max_batch,
                                 pile_backend **be, pile_model **m, pile_train_state *st, pile_err *err)
{
    pile_model_config mc;
    PILE_FORWARD_IF_ERR(pile_checkpoint_read_model_config(ckpt, &mc, err));
    PILE_FORWARD_IF_ERR(pile_backend_open(be, backend, threads, err));
    PILE_FORWARD_IF_ERR(pile_model_create(m, *be, &mc, max_batch, mc.n_positions, err));
    return pile_checkpoint_load(ckpt, *m, NULL, st, err);
}

int pile_trainer_eval(const char *ckpt, const char *data_dir, int64_t rows, int batch_size, int threads,
                      const pile_log *log, pile_eval_result *res, pile_err *err)
{
    pile_err_clear(err);
    pile_json *cfg = NULL;
    pile_backend *be = NULL;
    pile_model *m = NULL;
    pile_data *d = NULL;
    host_batch hb;
    memset(&hb, 0, sizeof hb);
    /* A folder without trainer_state.json is a model from elsewhere (a
     * transformers save_pretrained of GPT-2): no recorded data, settings or
     * tokenizer fingerprint, so --data is needed and only the vocabulary
     * size can be checked. */
    const int foreign = is_foreign(ckpt);
    int rc = verify_for_reading(ckpt, foreign, log, err);
    if (rc < 0) goto out;
    if (!foreign && (rc = read_stored_config(ckpt, &cfg, err)) < 0) goto out;
    if ((!data_dir || !data_dir[0]) && cfg) data_dir = json_string(cfg, "data");
    if (!data_dir || !data_dir[0]) {
        rc = pile_err_set(err, PILE_EINVAL, "checkpoint '%s' does not record its data folder; give --data", ckpt);
        goto out;
    }
    double v;
    pile_eval_rows_from rows_from = PILE_EVAL_ROWS_GIVEN;
    if (rows < 0) {
        rows_from = json_number(cfg, "eval_rows", &v) && v >= 0 ? PILE_EVAL_ROWS_CHECKPOINT : PILE_EVAL_ROWS_NONE;
        rows = rows_from == PILE_EVAL_ROWS_CHECKPOINT && v < 9.2e18 ? (int64_t)v : 0;
    }
    if (batch_size <= 0) batch_size = json_number(cfg, "batch_size", &v) && v >= 1 && v <= 65536 ? (int)v : 8;
    double val_fraction = json_number(cfg, "val_fraction", &v) ? v : 0.01;
    int doc_mask = json_number(cfg, "doc_mask", &v) && v != 0;
    int doc_mask_loss = json_number(cfg, "doc_mask_loss", &v) && v != 0;
    const char *backend = json_string(cfg, "backend");
    pile_train_state st;
    memset(&st, 0, sizeof st);
    if ((rc = open_checkpoint_model(ckpt, backend && backend[0] ? backend : "cpu", threads, batch_size, &be, &m,
                                    foreign ? NULL : &st, err)) < 0)
        goto out;
    const pile_model_config *mc = pile_model_get_config(m);
    rc = pile_data_open(&d, data_dir, mc->n_positions, val_fraction, err);
    if (rc == PILE_EINVAL && foreign) {
        /* a context longer than the shards' rows: evaluate on whole rows */
        pile_err_clear(err);
        rc = pile_data_open(&d, data_dir, 0, val_fraction, err);
    }
    if (rc < 0) goto out;
    const pile_data_info *info = pile_data_get_info(d);
    warn_unverified(log, info, data_dir);
    if (foreign && (int)info->vocab_size != mc->vocab_size) {
        rc = pile_err_set(err, PILE_EMISMATCH,
                          "the shards in '%s' have a vocabulary of %u, checkpoint '%s' one of %d: another tokenizer",
                          data_dir, info->vocab_size, ckpt, mc->vocab_size);
        goto out;
    }
    if (!foreign &&
        (memcmp(info->tokenizer_fp, st.tokenizer_fp, 16) != 0 || (int)info->vocab_size != mc->vocab_size)) {
        rc = pile_err_set(err, PILE_EMISMATCH, "the shards in '%s' were made with another tokenizer than checkpoint '%s'",
                          data_dir, ckpt);
        goto out;
    }
    if (info->val_samples == 0) {
        rc = pile_err_set(err, PILE_EINVAL, "no validation samples in '%s'", data_dir);
        goto out;
    }
    if ((rc = host_batch_alloc(&hb, (size_t)batch_size, pile_data_seq_len(d), err)) < 0) goto out;
    corrupt_guard guard = {0, 0, 0, 0, log};
    rc = evaluate(m, d, data_dir, rows, batch_size, doc_mask, doc_mask_loss, &hb, &guard, NULL, res, err);
    res->rows_from = rows_from;
out:
    host_batch_free(&hb);
    pile_data_close(d);
    pile_model_free(m);
    pile_backend_close(be);
    pile_json_free(cfg);
    return rc;
}

/* xoshiro256** (Blackman and Vigna), seeded through splitmix64: the
 * sampler's only randomness, so a seed repeats a sample. */
typedef struct rng {
    uint64_t s[4];
} rng;

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static void rng_seed(rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) r->s[i] = seed = mix64(seed + (uint64_t)i);
}

static double rng_uniform(rng *r)
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return (double)(out >> 11) * 0x1.0p-53;
}

typedef struct scored {
    float logit;
    int id;
} scored;

static int by_logit_desc(const void *a, const void *b)
{
    const scored *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return x->id - y->id;
}

/* Next id from logits[0..V): greedy at temperature 0, else softmax of
 * logits / temperature over the top_k largest (all when top_k <= 0). */
static int pick_token(const float *logits, int V, double temperature, int top_k, scored *tmp, rng *r)
{
    if (temperature <= 0) {
        int best = 0;
        for (int i = 1; i < V; i++)
            if (logits[i] > logits[best]) best = i;
        return best;
    }
    for (int i = 0; i < V; i++) tmp[i] = (scored){logits[i], i};
    int k = V;
    if (top_k > 0 && top_k < V) {
        qsort(tmp, (size_t)V, sizeof *tmp, by_logit_desc);
        k = top_k;
    }
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < k; i++)
        if (tmp[i].logit > mx) mx = tmp[i].logit;
    for (int i = 0; i < k; i++) sum += exp(((double)tmp[i].logit - mx) / temperature);
    double u = rng_uniform(r) * sum, acc = 0;
    for (int i = 0; i < k; i++) {
        acc += exp(((double)tmp[i].logit - mx) / temperature);
        if (u < acc) return tmp[i].id;
    }
    return tmp[k - 1].id;
}

/* How many bytes at the end of s[0..n) are the start of a UTF-8 character
 * that later bytes may still complete (0 to 3). */
static size_t incomplete_tail(const unsigned char *s, size_t n)
{
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned char c = s[n - back];
        if ((c & 0xC0) == 0x80) continue; /* continuation byte: look further back */
        size_t need = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xC2 && c <= 0xDF ? 2 : 1;
        return need > back ? back : 0;
    }
    return 0;
}

/* Hands decoded[*printed..upto) on, invalid UTF-8 repaired to U+FFFD. */
static void emit_text(const pile_log *log, const pile_buf *decoded, size_t *printed, size_t upto)
{
    if (upto <= *printed) return;
    pile_buf fixed = {0};
    if (pile_utf8_repair(decoded->data + *printed, upto - *printed, &fixed) >= 0 && fixed.len && cstr(&fixed))
        pile_log_write(log, PILE_LOG_RESULT, fixed.data, fixed.len);
    pile_buf_free(&fixed);
    *printed = upto;
}

int pile_trainer_sample(const char *ckpt, const pile_sample_opts *o, const pile_log *log, pile_err *err)
{
    pile_err_clear(err);
    pile_buf spec = {0}, decoded = {0}, prompt_fixed = {0};
    pile_tokenizer *tok = NULL;
    pile_encoder *enc = NULL;
    pile_backend *be = NULL;
    pile_model *m = NULL;
    pile_ids ids = {0};
    int32_t *tokens = NULL, *targets = NULL;
    float *logits = NULL;
    scored *tmp = NULL;
    int rc = verify_for_reading(ckpt, is_foreign(ckpt), log, err);
    if (rc < 0) goto out;
    rc = !o->tokenizer                           ? pile_checkpoint_tokenizer_spec(ckpt, &spec, err)
         : pile_buf_append_str(&spec, o->tokenizer) ? pile_err_set(err, PILE_ENOMEM, "out of memory")
                                                    : 0;
    if (rc < 0) goto out;
    if (!cstr(&spec)) {
        rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = pile_tokenizer_open(&tok, spec.data[0] ? spec.data : "bytes", err)) < 0) goto out;
    /* weights only: a save_pretrained folder has no trainer_state.json */
    if ((rc = open_checkpoint_model(ckpt, o->backend && o->backend[0] ? o->backend : "cpu", o->threads, 1, &be,
                                    &m, NULL, err)) < 0) goto out;
    const pile_model_config *mc = pile_model_get_config(m);
    if ((int64_t)pile_tokenizer_vocab_size(tok) != mc->vocab_size) {
        rc = pile_err_set(err, PILE_EMISMATCH,
                          "tokenizer '%s' has %" PRIu32 " ids and checkpoint '%s' a vocabulary of %d",
                          spec.data, pile_tokenizer_vocab_size(tok), ckpt, mc->vocab_size);
        goto out;
    }
    const char *prompt = o->prompt ? o->prompt : "";
    if (pile_utf8_repair(prompt, strlen(prompt), &prompt_fixed) < 0 || pile_buf_append(&prompt_fixed, "", 1)) {
        rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
        goto out;
    }
    if (!(enc = pile_encoder_create(tok))) {
        rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = pile_encoder_encode(enc, prompt_fixed.data, prompt_fixed.len - 1, &ids, err)) < 0) goto out;
    /* an empty prompt starts a document, as one after end-of-text does */
    if (ids.len == 0 && pile_ids_push(&ids, pile_tokenizer_eot_id(tok))) {
        rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
        goto out;
    }
    const size_t prompt_ids = ids.len;
    const int P = mc->n_positions, V = mc->vocab_size;
    tokens = malloc((size_t)P * sizeof *tokens);
    targets = malloc((size_t)P * sizeof *targets);
    logits = malloc((size_t)V * sizeof *logits);
    tmp = malloc((size_t)V * sizeof *tmp);
    if (!tokens || !targets || !logits || !tmp) {
        rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < P; i++) targets[i] = -1;
    pile_log_write(log, PILE_LOG_RESULT, prompt, strlen(prompt));
    rng r;
    rng_seed(&r, o->seed);
    const uint32_t eot = pile_tokenizer_eot_id(tok);
    size_t printed = 0;
    /* The context is the last n_positions ids. While they all fit, a
     * key/value cache runs one position per token (the prompt's ids one by
     * one, the ids before its last without logits); `cached` counts the ids
     * it holds. Past n_positions the window slides, which moves every id's
     * position embedding, so each token reruns the window's full forward:
     * the same distribution as without a cache. */
    size_t cached = 0;
    for (int n = 0; n < o->max_new_tokens; n++) {
        if (ids.len <= (size_t)P) {
            if (cached == 0 && (rc = pile_model_decode_begin(m, err)) < 0) goto out;
            for (; cached < ids.len; cached++)
                if ((rc = pile_model_decode_step(m, (int32_t)ids.data[cached], (int)cached,
                                                 cached + 1 == ids.len ? logits : NULL, err)) < 0)
                    goto out;
        } else {
            size_t start = ids.len - (size_t)P;
            for (int i = 0; i < P; i++) tokens[i] = (int32_t)ids.data[start + (size_t)i];
            pile_batch batch = {1, P, tokens, targets, NULL};
            pile_fwd_stats fs;
            if ((rc = pile_model_forward(m, &batch, 0, 0, 0.0f, &fs, err)) < 0) goto out;
            pile_model_copy_logits(m, 0, P - 1, logits);
        }
        int id = pick_token(logits, V, o->temperature, o->top_k, tmp, &r);
        if ((uint32_t)id == eot) break;
        if (pile_ids_push(&ids, (uint32_t)id)) {
            rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
            goto out;
        }
        /* decode the whole continuation: a character may span tokens */
        decoded.len = 0;
        if ((rc = pile_tokenizer_decode(tok, ids.data + prompt_ids, ids.len - prompt_ids, &decoded, err)) < 0)
            goto out;
        emit_text(log, &decoded, &printed,
                  decoded.len - incomplete_tail((const unsigned char *)decoded.data, decoded.len));
    }
    emit_text(log, &decoded, &printed, decoded.len);
    pile_log_write(log, PILE_LOG_RESULT, "\n", 1);
out:
    free(tokens);
    free(targets);
    free(logits);
    free(tmp);
    pile_ids_free(&ids);
    pile_encoder_free(enc);
    pile_model_free(m);
    pile_backend_close(be);
    pile_tokenizer_close(tok);
    pile_buf_free(&spec);
    pile_buf_free(&decoded);
    pile_buf_free(&prompt_fixed);
    return rc;
}
