/* The trainer's jobs print nothing themselves (trainer/log.h): with a
 * capturing pile_log, train (fresh, resumed, stopped by a signal), eval
 * and sample leave stderr and stdout empty and deliver every message with
 * its level; with no log at all they print nothing either. Also
 * pile_log_printf on long messages, and the stop handler's acknowledgment
 * going to the log's signal_fd only. Real data: pile-prep's output of the
 * bundled sample. */
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "log.h"
#include "pile_buf.h"
#include "pile_prep.h"
#include "pile_test.h"
#include "train_config.h"
#include "train_loop.h"

static char tmp[512];

/* ------------------------------------------------------------ capture */

#define MAX_MSGS 512

typedef struct message {
    pile_log_level level;
    char *text;
    size_t len;
} message;

typedef struct capture {
    message m[MAX_MSGS];
    size_t n;
    int dropped;       /* more than MAX_MSGS */
    int bad_terminator; /* a message whose msg[len] was not '\0' */
    int raise_at_progress; /* raise SIGTERM at the first progress line (then 0) */
} capture;

static void capture_fn(void *ctx, pile_log_level level, const char *msg, size_t len)
{
    capture *c = ctx;
    if (msg[len] != '\0') c->bad_terminator++;
    if (c->n == MAX_MSGS) {
        c->dropped++;
        return;
    }
    message *m = &c->m[c->n++];
    m->level = level;
    m->len = len;
    m->text = malloc(len + 1);
    if (m->text) memcpy(m->text, msg, len + 1);
    if (level == PILE_LOG_PROGRESS && c->raise_at_progress) {
        c->raise_at_progress = 0;
        raise(SIGTERM);
    }
}

static void capture_clear(capture *c)
{
    for (size_t i = 0; i < c->n; i++) free(c->m[i].text);
    memset(c, 0, sizeof *c);
}

/* The first message of `level` that holds `word`, or NULL. */
static const message *find(const capture *c, pile_log_level level, const char *word)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->m[i].level == level && c->m[i].text && strstr(c->m[i].text, word)) return &c->m[i];
    return NULL;
}

static size_t count_level(const capture *c, pile_log_level level)
{
    size_t k = 0;
    for (size_t i = 0; i < c->n; i++) k += c->m[i].level == level;
    return k;
}

/* Every line-kind message is one line: no newline, no carriage return, no
 * terminal control, its length its strlen. */
static int lines_are_clean(const capture *c)
{
    for (size_t i = 0; i < c->n; i++) {
        const message *m = &c->m[i];
        if (m->level == PILE_LOG_RESULT) continue;
        if (!m->text || strlen(m->text) != m->len || strpbrk(m->text, "\r\n\033")) {
            printf("# not a clean line (level %d): '%s'\n", (int)m->level, m->text ? m->text : "(null)");
            return 0;
        }
    }
    return 1;
}

/* All RESULT text, in order. */
static void results(const capture *c, pile_buf *out)
{
    out->len = 0;
    for (size_t i = 0; i < c->n; i++)
        if (c->m[i].level == PILE_LOG_RESULT) pile_buf_append(out, c->m[i].text, c->m[i].len);
    pile_buf_append(out, "", 1);
}

/* --------------------------------------------- stdout and stderr, watched */

/* While watching, fds 1 and 2 go to files; what lands there is what the
 * library printed. The TAP lines are printed only after unwatch. */
typedef struct watch {
    int saved_out, saved_err;
    char out_path[600], err_path[600];
} watch;

static int watch_start(watch *w, const char *name)
{
    fflush(stdout);
    fflush(stderr);
    snprintf(w->out_path, sizeof w->out_path, "%s/%s.stdout", tmp, name);
    snprintf(w->err_path, sizeof w->err_path, "%s/%s.stderr", tmp, name);
    int fo = open(w->out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int fe = open(w->err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    w->saved_out = dup(1);
    w->saved_err = dup(2);
    if (fo < 0 || fe < 0 || w->saved_out < 0 || w->saved_err < 0) return -1;
    dup2(fo, 1);
    dup2(fe, 2);
    close(fo);
    close(fe);
    return 0;
}

/* Restores fds 1 and 2; returns the bytes the library printed on both. */
static long watch_stop(watch *w)
{
    fflush(stdout);
    fflush(stderr);
    dup2(w->saved_out, 1);
    dup2(w->saved_err, 2);
    close(w->saved_out);
    close(w->saved_err);
    struct stat so, se;
    if (stat(w->out_path, &so) != 0 || stat(w->err_path, &se) != 0) return -1;
    if (so.st_size + se.st_size > 0) {
        printf("# printed: %lld bytes on stdout, %lld on stderr (%s, %s)\n", (long long)so.st_size,
               (long long)se.st_size, w->out_path, w->err_path);
    }
    return (long)(so.st_size + se.st_size);
}

/* ----------------------------------------------------------------- data */

static char shards[600];

/* pile-prep's output of the bundled sample (a train file and the val
 * file). 0, or -1 when the sample is absent (the caller skips). */
static int make_shards(void)
{
    const char *root = getenv("PILE_SOURCE_ROOT");
    char train[700], val[700];
    snprintf(train, sizeof train, "%s/data/sample/train/00.jsonl.zst", root && *root ? root : ".");
    snprintf(val, sizeof val, "%s/data/sample/val.jsonl.zst", root && *root ? root : ".");
    if (access(train, R_OK) != 0 || access(val, R_OK) != 0) return -1;
    pile_err err;
    pile_prep_inputs inputs = {0};
    int rc = pile_prep_inputs_add(&inputs, train, &err);
    if (rc == 0) rc = pile_prep_inputs_add(&inputs, val, &err);
    snprintf(shards, sizeof shards, "%s/shards", tmp);
    pile_prep_opts opts = {0};
    opts.inputs = inputs.v;
    opts.n_inputs = inputs.n;
    opts.output_dir = shards;
    opts.tokenizer_spec = "bytes";
    opts.max_length = 64;
    opts.threads = 1;
    if (rc == 0) rc = pile_prep_run(&opts, NULL, &err);
    pile_prep_inputs_free(&inputs);
    if (rc < 0) printf("# pile-prep failed: %s\n", err.msg);
    return rc < 0 ? -2 : 0;
}

/* A resolved configuration: the tiny model on the shards, then `extra`
 * flags (NULL-terminated). */
static int config(pile_train_config *c, const char *run, pile_err *err, ...)
{
    char *argv[64];
    int n = 0;
    static char dirbuf[700];
    snprintf(dirbuf, sizeof dirbuf, "%s/%s", tmp, run);
    const char *base[] = {"train", "--data", shards, "--checkpoint_dir", dirbuf, "--model", "tiny",
                          "--batch_size", "4", "--max_length", "32", "--threads", "1", "--eval_rows", "8"};
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++) argv[n++] = (char *)base[i];
    va_list ap;
    va_start(ap, err);
    for (const char *a; n < 63 && (a = va_arg(ap, const char *));) argv[n++] = (char *)a;
    va_end(ap);
    argv[n] = NULL;
    pile_buf warnings = {0};
    int rc = pile_train_config_resolve(c, n, argv, 1, &warnings, err);
    pile_buf_free(&warnings);
    if (rc > 0) return pile_err_set(err, PILE_EINVAL, "unexpected argument '%s'", argv[rc]);
    return rc;
}

/* ---------------------------------------------------------------- tests */

static void test_printf(void)
{
    TEST("pile_log_printf: short and long messages whole, msg[len] == '\\0'; no callback, nothing");
    static capture c;
    pile_log log = {capture_fn, &c, 0, 0};
    pile_log_printf(&log, PILE_LOG_WARN, "%s %d", "short", 7);
    char big[5000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    pile_log_printf(&log, PILE_LOG_INFO, "<%s>", big);
    pile_log_write(&log, PILE_LOG_RESULT, "a\0b", 3);
    ASSERT_EQ(c.n, 3);
    ASSERT_EQ(c.bad_terminator, 0);
    ASSERT_EQ(c.m[0].level, PILE_LOG_WARN);
    ASSERT_STR_EQ(c.m[0].text, "short 7");
    ASSERT_EQ(c.m[1].level, PILE_LOG_INFO);
    ASSERT_EQ(c.m[1].len, sizeof big + 1);
    ASSERT(c.m[1].text && c.m[1].text[0] == '<' && c.m[1].text[sizeof big] == '>' && c.m[1].text[1] == 'x');
    ASSERT_EQ(c.m[2].len, 3);
    ASSERT_MEM_EQ(c.m[2].text, "a\0b", 3);
    capture_clear(&c);
    pile_log none = {NULL, &c, 0, 0};
    pile_log_printf(&none, PILE_LOG_WARN, "dropped");
    pile_log_printf(NULL, PILE_LOG_WARN, "dropped");
    pile_log_write(NULL, PILE_LOG_RESULT, "x", 1);
    ASSERT_EQ(c.n, 0);
}

static void test_train(void)
{
    TEST("train: nothing printed; setup, progress, validation, warnings, prune notes and the summary delivered");
    static capture c;
    pile_log log = {capture_fn, &c, 0, 0};
    pile_train_config cfg;
    pile_err err;
    OK(config(&cfg, "run", &err, "--max_steps", "4", "--log_interval", "1", "--eval_interval", "2",
              "--save_interval", "1", "--save_total_limit", "1", "--warmup_ratio", "1", NULL),
       &err);
    watch w;
    ASSERT_EQ(watch_start(&w, "train"), 0);
    int rc = pile_trainer_train(&cfg, &log, &err);
    ASSERT_EQ(watch_stop(&w), 0);
    OK(rc, &err);
    ASSERT_EQ(rc, 0);
    ASSERT_EQ(c.dropped, 0);
    ASSERT_EQ(c.bad_terminator, 0);
    ASSERT(lines_are_clean(&c));
    /* a CUDA build without a device first says why it trains on the cpu */
    pile_err why;
    const size_t notice = !strcmp(pile_backend_default_name(&why), "cpu") && why.code != 0;
    if (notice)
        ASSERT(c.n > 0 && c.m[0].level == PILE_LOG_INFO && strstr(c.m[0].text, "no CUDA device (") &&
               strstr(c.m[0].text, "): training on the cpu backend"));
    ASSERT(c.n > notice && c.m[notice].level == PILE_LOG_INFO &&
           strncmp(c.m[notice].text, "model tiny (2 layers", 20) == 0);
    ASSERT(find(&c, PILE_LOG_INFO, " train samples, ") != NULL);
    ASSERT(find(&c, PILE_LOG_WARN, "the warmup (4 steps) is not shorter than the run (4 steps)") != NULL);
    ASSERT_EQ(count_level(&c, PILE_LOG_PROGRESS), 4);
    const message *p = find(&c, PILE_LOG_PROGRESS, "epoch 1/1 step 4/4 loss ");
    ASSERT(p && strstr(p->text, " tok/s ") && strstr(p->text, " MiB"));
    ASSERT(find(&c, PILE_LOG_RECORD, "val: step 2 loss ") != NULL);
    ASSERT(find(&c, PILE_LOG_RECORD, "val: step 4 loss ") != NULL);
    ASSERT(find(&c, PILE_LOG_INFO, "step-0000003' (save_total_limit 1)") != NULL); /* pruned */
    ASSERT(!find(&c, PILE_LOG_WARN, "warning")); /* no level in the text */
    ASSERT(!find(&c, PILE_LOG_INFO, "pile-trainer")); /* nor the program's name */
    pile_buf r = {0};
    results(&c, &r);
    ASSERT(r.data && strncmp(r.data, "trained 4 of 4 steps (4 in this run, ", 37) == 0);
    ASSERT(r.data && strstr(r.data, "\nfinal train loss: ") && strstr(r.data, "(latest step-0000004)\n"));
    /* the summary comes last */
    ASSERT(c.n > 0 && c.m[c.n - 1].level == PILE_LOG_RESULT);
    capture_clear(&c);

    TEST("train --resume: its warnings and notes delivered, nothing printed");
    OK(config(&cfg, "run", &err, "--max_steps", "6", "--log_interval", "1", "--resume", "--learning_rate", "1e-3",
              NULL),
       &err);
    ASSERT_EQ(watch_start(&w, "resume"), 0);
    rc = pile_trainer_train(&cfg, &log, &err);
    ASSERT_EQ(watch_stop(&w), 0);
    OK(rc, &err);
    ASSERT(lines_are_clean(&c));
    ASSERT(find(&c, PILE_LOG_WARN, "resuming with learning_rate 0.001, where the checkpoint's run had 0.0006") != NULL);
    ASSERT(find(&c, PILE_LOG_WARN, "the schedule changes from 4 to 6 steps") != NULL);
    ASSERT(find(&c, PILE_LOG_INFO, "resuming from '") != NULL);
    ASSERT_EQ(count_level(&c, PILE_LOG_PROGRESS), 2);
    results(&c, &r);
    ASSERT(r.data && strncmp(r.data, "trained 6 of 6 steps (2 in this run, ", 37) == 0);
    capture_clear(&c);
    pile_buf_free(&r);
}

static void test_signal(void)
{
    TEST("a stop signal: acknowledged on the log's signal_fd only, the stop delivered as a record");
    static capture c;
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    pile_log log = {capture_fn, &c, fds[1], 0};
    c.raise_at_progress = 1;
    pile_train_config cfg;
    pile_err err;
    OK(config(&cfg, "stopped", &err, "--max_steps", "50", "--log_interval", "1", NULL), &err);
    watch w;
    ASSERT_EQ(watch_start(&w, "signal"), 0);
    int rc = pile_trainer_train(&cfg, &log, &err);
    ASSERT_EQ(watch_stop(&w), 0);
    ASSERT_EQ(rc, PILE_TRAINER_STOPPED);
    close(fds[1]);
    char ack[512] = "";
    ssize_t got = read(fds[0], ack, sizeof ack - 1);
    close(fds[0]);
    ack[got > 0 ? got : 0] = '\0';
    ASSERT_STR_EQ(ack, "pile-trainer: stopping after this step, then writing a checkpoint (signal again to quit at "
                       "once without one)\n");
    ASSERT(find(&c, PILE_LOG_RECORD, "interrupted at step 1: checkpoint '") != NULL);
    pile_buf r = {0};
    results(&c, &r);
    ASSERT(r.data && strstr(r.data, "trained 1 of 50 steps (1 in this run, ") && strstr(r.data, "), interrupted\n"));
    pile_buf_free(&r);
    capture_clear(&c);

    TEST("a stop signal with signal_fd 0: no acknowledgment anywhere");
    pile_log quiet = {capture_fn, &c, 0, 1};
    c.raise_at_progress = 1;
    OK(config(&cfg, "stopped2", &err, "--max_steps", "50", "--log_interval", "1", NULL), &err);
    ASSERT_EQ(watch_start(&w, "signal0"), 0);
    rc = pile_trainer_train(&cfg, &quiet, &err);
    ASSERT_EQ(watch_stop(&w), 0);
    ASSERT_EQ(rc, PILE_TRAINER_STOPPED);
    ASSERT(find(&c, PILE_LOG_RECORD, "interrupted at step 1") != NULL);
    capture_clear(&c);
}

static void test_eval_sample(void)
{
    TEST("eval and sample: nothing printed; a warning and the sampled text delivered");
    static capture c;
    pile_log log = {capture_fn, &c, 0, 0};
    pile_err err;
    char ckpt[700], sums[760];
    snprintf(ckpt, sizeof ckpt, "%s/run/best_model", tmp);
    /* without checksums.json (an older pile-trainer's): read, with a warning */
    snprintf(sums, sizeof sums, "%s/checksums.json", ckpt);
    ASSERT_EQ(unlink(sums), 0);
    pile_eval_result res;
    watch w;
    ASSERT_EQ(watch_start(&w, "eval"), 0);
    int rc = pile_trainer_eval(ckpt, NULL, -1, 0, 1, &log, &res, &err);
    ASSERT_EQ(watch_stop(&w), 0);
    OK(rc, &err);
    ASSERT(res.loss > 0);
    ASSERT_EQ(res.samples, 8);
    ASSERT(find(&c, PILE_LOG_WARN, "has no checksums.json") != NULL);
    ASSERT(lines_are_clean(&c));
    capture_clear(&c);

    pile_sample_opts o = {"In the beginning", NULL, 24, 1.0, 0, 42, 1, NULL};
    ASSERT_EQ(watch_start(&w, "sample"), 0);
    rc = pile_trainer_sample(ckpt, &o, &log, &err);
    ASSERT_EQ(watch_stop(&w), 0);
    OK(rc, &err);
    ASSERT_EQ(count_level(&c, PILE_LOG_RESULT), c.n - count_level(&c, PILE_LOG_WARN));
    ASSERT(count_level(&c, PILE_LOG_RESULT) >= 2);
    pile_buf r = {0};
    results(&c, &r);
    /* the prompt, what was generated, a newline */
    ASSERT(r.data && strncmp(r.data, "In the beginning", 16) == 0 && r.len >= 18 && r.data[r.len - 2] == '\n');
    pile_buf_free(&r);
    capture_clear(&c);
}

static void test_no_log(void)
{
    TEST("no log at all: train, eval and sample print nothing; a world_size no launcher started refused before any folder");
    pile_train_config cfg;
    pile_err err;
    OK(config(&cfg, "nolog", &err, "--max_steps", "2", "--warmup_ratio", "1", NULL), &err);
    watch w;
    ASSERT_EQ(watch_start(&w, "nolog"), 0);
    int rc = pile_trainer_train(&cfg, NULL, &err);
    char ckpt[700];
    snprintf(ckpt, sizeof ckpt, "%s/nolog/step-0000002", tmp);
    pile_eval_result res;
    int erc = pile_trainer_eval(ckpt, NULL, 4, 0, 1, NULL, &res, &err);
    pile_sample_opts o = {"x", NULL, 4, 0.0, 0, 1, 1, NULL};
    int src = pile_trainer_sample(ckpt, &o, NULL, &err);
    ASSERT_EQ(watch_stop(&w), 0);
    ASSERT_EQ(rc, 0);
    ASSERT_EQ(erc, 0);
    ASSERT_EQ(src, 0);

    static capture c;
    pile_log log = {capture_fn, &c, 0, 0};
    OK(config(&cfg, "world2", &err, "--max_steps", "2", "--world_size", "2", NULL), &err);
    ASSERT_EQ(watch_start(&w, "world2"), 0);
    rc = pile_trainer_train(&cfg, &log, &err);
    ASSERT_EQ(watch_stop(&w), 0);
    ASSERT_EQ(rc, PILE_EINVAL);
    ASSERT_STR_EQ(err.msg, "world_size 2, but no launcher (one process) started 1 rank: start as many with the "
                           "launcher (mpirun -np, srun --ntasks, torchrun --nproc_per_node), or leave world_size out");
    char dir[700];
    snprintf(dir, sizeof dir, "%s/world2", tmp);
    ASSERT(access(dir, F_OK) != 0);
    ASSERT_EQ(c.n, 0);
}

int main(void)
{
    if (!pile_test_tmpdir(tmp, sizeof tmp, "train-log")) {
        printf("Bail out! cannot make a temporary folder: %s\n", strerror(errno));
        return 1;
    }
    test_printf();
    int have = make_shards();
    if (have == -1) {
        /* the bundled sample is part of the repository: only a stripped copy lacks it */
        printf("# no data/sample/ under PILE_SOURCE_ROOT: the trainer cases are skipped\n");
    } else if (have < 0) {
        TEST("pile-prep makes the shards");
        ASSERT(0);
    } else {
        test_train();
        test_signal();
        test_eval_sample();
        test_no_log();
    }
    int rc = TEST_DONE();
    if (rc == 0) { /* kept when a case failed, to look into */
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        if (system(cmd) != 0) printf("# could not remove %s\n", tmp);
    }
    return rc;
}
