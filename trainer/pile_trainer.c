/* pile-trainer: the command line over train_loop.h (train, eval, sample).
 * It prints what the library reports through its pile_log (log.h).
 * Only this file exits: 0 on success, 1 on a runtime failure, 2 on a usage
 * error, 75 (EX_TEMPFAIL of sysexits.h) for a training run stopped by a
 * signal with its checkpoint written: resumable, so that a scheduler or
 * wrapper can requeue it. Flags take --NAME VALUE or --NAME=VALUE, with dashes or
 * underscores, like the training settings. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "cpu/backend_cpu.h"
#include "checkpoint.h"
#include "comm/comm.h"
#include "launch.h"
#include "log.h"
#include "model.h"
#include "pile_buf.h"
#include "pile_fs.h"
#include "plan.h"
#include "train_config.h"
#include "train_data.h"
#include "train_loop.h"

#define PILE_TRAINER_VERSION "0.1.0"
/* EX_TEMPFAIL: "stopped, resumable" (README, --help) */
#define EXIT_STOPPED 75

static const char usage_text[] =
    "usage: pile-trainer [train] [options]\n"
    "       pile-trainer eval --checkpoint DIR [options]\n"
    "       pile-trainer sample --checkpoint DIR --prompt TEXT [options]\n"
    "       pile-trainer plan [options]\n"
    "       pile-trainer launch --nproc N [train options]\n"
    "\n"
    "Trains a GPT-2 family model on pile-prep shards (fp32 on the CPU), evaluates\n"
    "a checkpoint, samples text from one, plans a run's memory, or starts N ranks\n"
    "of a training run on this machine.\n"
    "`pile-trainer COMMAND --help` for each.\n";

static const char train_intro[] =
    "usage: pile-trainer [train] [options]\n"
    "\n"
    "Trains a GPT-2 family model on the shards in --data: AdamW, warmup + cosine\n"
    "schedule, gradient clipping and accumulation, validation every --eval_interval\n"
    "steps and at each epoch's end. Checkpoints (epoch-NNN/, step-NNNNNNN/,\n"
    "best_model/, readable by Hugging Face transformers, each with checksums.json),\n"
    "metrics.jsonl and a TensorBoard event file go to --checkpoint_dir, which one run\n"
    "holds at a time. SIGINT, SIGTERM or SIGHUP finishes the step, writes a checkpoint\n"
    "and exits with status 75 (stopped, resumable); SIGUSR1 writes a checkpoint and\n"
    "trains on. --resume continues bit for bit from the newest checkpoint that passes\n"
    "its checksums. Exit status: 0 done, 1 failed, 2 bad usage, 75 stopped.\n"
    "Under a launcher (mpirun, srun) every rank trains its share of each step\n"
    "(data parallel: the global batch is batch_size x accumulation_steps x ranks);\n"
    "rank 0 prints and writes the run folder.\n"
    "Settings come from the defaults, the --model preset, --config FILE (JSON, keys\n"
    "as the flags; several --config files apply in order, a later one winning),\n"
    "--deepspeed FILE (ds_config.json), then the flags, in that order.\n"
    "Flags take a value as --name VALUE or --name=VALUE; dashes or underscores.\n"
    "\n";

static const char train_tail[] =
    "  Model presets (--model): tiny (2 layers, 2 heads, 64 wide), small (6, 6, 384),\n"
    "    gpt2 (12, 12, 768: 124M), gpt2-medium (24, 16, 1024), gpt2-large (36, 20, 1280),\n"
    "    gpt2-xl (48, 25, 1600); --n_layer, --n_head, --n_embd override a preset's.\n"
    "  --print-config          print the resolved settings as JSON (the form --config reads) and exit\n"
    "  -h, --help              this help\n"
    "  --version               the version\n";

static const char eval_help[] =
    "usage: pile-trainer eval --checkpoint DIR [options]\n"
    "\n"
    "Loss, accuracy and perplexity of a checkpoint's model on the validation\n"
    "samples of the shards it was trained on (or --data), in order, as training's\n"
    "validation computes them. The checkpoint's files are checked against its\n"
    "checksums.json first.\n"
    "\n"
    "  --checkpoint DIR    a checkpoint folder (epoch-001, best_model, ...), or a run folder\n"
    "                      (checkpoints/) or its latest file: the newest checkpoint there\n"
    "  --data DIR          shards folder (default: the one recorded in the checkpoint)\n"
    "  --eval_rows N       evaluate the first N validation samples (0: all; default: the\n"
    "                      checkpoint's eval_rows, so that eval repeats the run's validation)\n"
    "  --batch_size N      rows per forward (default: the checkpoint's batch_size)\n"
    "  --threads N         CPU threads (default 0: every usable core; at most that)\n"
    "  --json              one JSON object instead of text\n"
    "  -h, --help          this help\n";

static const char sample_help[] =
    "usage: pile-trainer sample --checkpoint DIR --prompt TEXT [options]\n"
    "\n"
    "Prints the prompt, then the model's continuation as it is generated (stops at\n"
    "end-of-text). The tokenizer is the checkpoint's. A context longer than the\n"
    "model's keeps its last n_positions tokens. The checkpoint's files are checked\n"
    "against its checksums.json first.\n"
    "\n"
    "  --checkpoint DIR      a checkpoint folder, or a GPT-2 folder from transformers'\n"
    "                        save_pretrained, or a run folder (checkpoints/) or its latest\n"
    "                        file: the newest checkpoint there\n"
    "  --tokenizer SPEC      the tokenizer (default: the checkpoint's; in a folder from\n"
    "                        elsewhere, its tokenizer.json): bytes, a tokenizer.json, a\n"
    "                        folder with encoder.json + vocab.bpe, or a .tiktoken file\n"
    "  --prompt TEXT         the text to continue ('' starts a new document)\n"
    "  --max_new_tokens N    tokens to generate (default 200)\n"
    "  --temperature T       softmax temperature (default 1.0; 0 = greedy)\n"
    "  --top_k K             sample among the K likeliest tokens (default 0: all)\n"
    "  --seed S              sampling seed (default 42): the same seed, the same text\n"
    "  --threads N           CPU threads (default 0: every usable core; at most that)\n"
    "  --backend NAME        compute backend (default cpu; devsim, devsim16: for testing,\n"
    "                        the host side of a device run checked without a device)\n"
    "  -h, --help            this help\n";

static const char plan_help[] =
    "usage: pile-trainer plan [options]\n"
    "\n"
    "The memory a training run needs, before it starts: per GPU and per node, the\n"
    "parameters, gradients, master weights and AdamW moments (as DeepSpeed counts\n"
    "them, its estimate_zero2/zero3_model_states_mem_needs beside), activations per\n"
    "layer for each --recompute mode, attention's saved state, logits and\n"
    "workspaces; whether it fits, and if not what would (recompute, ZeRO stage,\n"
    "offload, a smaller micro-batch, more nodes). No shards needed: the model comes\n"
    "from --model and --n_layer/--n_head/--n_embd, the vocabulary from --vocab_size.\n"
    "The training settings are read as `pile-trainer train` reads them (flags,\n"
    "--config, --deepspeed: its zero_optimization's stage, offload_optimizer and\n"
    "offload_param). Without --gpus the ZeRO settings of a config are left out, as\n"
    "the CPU backend leaves them. With no precision given, GPUs are planned in bf16\n"
    "(a CUDA run's default) and the CPU backend in fp32.\n"
    "Exit status: 0 fits (or not judged), 3 does not fit, 2 bad usage, 1 failed.\n"
    "\n"
    "  --gpus N            GPUs per node (default 0: the CPU backend, one process, whose\n"
    "                      memory is the host's, judged against MemAvailable)\n"
    "  --nodes N           nodes of --gpus GPUs each (default 1)\n"
    "  --zero N            DeepSpeed ZeRO stage 0 to 3 (default: the config's, else 0)\n"
    "  --offload MODE      none, optimizer (fp32 gradients, master weights and moments in\n"
    "                      host memory; ZeRO 1-3) or all (the 16-bit parameters too; ZeRO 3)\n"
    "  --gpu-mem GIB       memory of one GPU, GiB (A100 80GB: 80; default: not judged)\n"
    "  --cpu-mem GIB       host memory of one node, GiB (default: MemAvailable for the\n"
    "                      CPU backend, not judged for GPUs)\n"
    "  --vocab_size N      vocabulary (default: the shards' when --data is given, else\n"
    "                      50257, GPT-2's; padded to a multiple of 64 as the trainer pads it)\n"
    "  --max_length N      positions per row (default: the shards', else 1024)\n"
    "  --json              one JSON object instead of text\n"
    "  --model, --n_layer, --n_head, --n_embd, --batch_size, --accumulation_steps,\n"
    "  --precision, --recompute, --dropout, --threads, --config, --deepspeed: as in\n"
    "                      `pile-trainer train --help`\n"
    "  -h, --help          this help\n";

static int usage_error(const char *cmd, const char *fmt, const char *arg)
{
    fputs("pile-trainer: ", stderr);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'pile-trainer %s--help' for more information.\n", cmd);
    return 2;
}

/* ------------------------------------------------------------ printing */

/* The library's messages, printed as pile-trainer shows them: the
 * progress line on stderr, redrawn in place on a terminal; records as
 * they are, notes and warnings after the program's name, on stderr;
 * results on stdout. A progress line left open is ended before anything
 * else is printed. */
typedef struct printer {
    int tty;       /* stderr is a terminal */
    int line_open; /* a progress line is drawn and not ended */
} printer;

static void end_line(printer *p)
{
    if (p->line_open) fputc('\n', stderr);
    p->line_open = 0;
}

static void print_message(void *ctx, pile_log_level level, const char *msg, size_t len)
{
    printer *p = ctx;
    if (level == PILE_LOG_PROGRESS && p->tty) {
        fprintf(stderr, "\r\033[K%s", msg);
        fflush(stderr);
        p->line_open = 1;
        return;
    }
    end_line(p);
    switch (level) {
    case PILE_LOG_RESULT:
        fwrite(msg, 1, len, stdout);
        fflush(stdout);
        break;
    case PILE_LOG_INFO: fprintf(stderr, "pile-trainer: %s\n", msg); break;
    case PILE_LOG_WARN: fprintf(stderr, "pile-trainer: warning: %s\n", msg); break;
    default: fprintf(stderr, "%s\n", msg); break; /* records; progress off a terminal */
    }
}

/* ------------------------------------------------------------- options */

/* One option word of eval / sample: "--name", "--name=value" or "-h". The
 * name is given with dashes ("max-new-tokens") whatever the user typed. */
typedef struct opt_word {
    char name[64];
    const char *value; /* after '=', or NULL */
} opt_word;

static int split_option(const char *arg, opt_word *w)
{
    if (strcmp(arg, "-h") == 0) arg = "--help";
    if (strncmp(arg, "--", 2) != 0 || !arg[2]) return -1;
    const char *s = arg + 2, *eq = strchr(s, '=');
    size_t n = eq ? (size_t)(eq - s) : strlen(s);
    if (n >= sizeof w->name) return -1;
    for (size_t i = 0; i < n; i++) w->name[i] = s[i] == '_' ? '-' : s[i];
    w->name[n] = '\0';
    w->value = eq ? eq + 1 : NULL;
    return 0;
}

/* The option's value: after '=' or the next word. */
static const char *take_value(const opt_word *w, int argc, char **argv, int *i)
{
    if (w->value) return w->value;
    if (*i + 1 >= argc) return NULL;
    return argv[++*i];
}

static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out)
{
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9') return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

/* More threads than cores only wait on each other (ten times slower on a
 * busy machine), so a larger --threads is said and capped (the backend
 * would cap it silently). */
static int capped_threads(int threads)
{
    const int cores = pile_backend_usable_cores();
    if (threads <= cores) return threads;
    fprintf(stderr, "pile-trainer: warning: --threads %d is more than the %d core%s this process may use; using %d\n",
            threads, cores, cores == 1 ? "" : "s", cores);
    return cores;
}

/* ---------------------------------------------------------------- train */

/* The model the settings name, checked here so that --print-config, the
 * way to try a configuration, refuses what training would refuse. */
static int check_model_settings(const pile_train_config *c, pile_err *err)
{
    pile_model_config mc;
    memset(&mc, 0, sizeof mc);
    PILE_FORWARD_IF_ERR(pile_model_preset(&mc, c->model, err));
    if (c->n_head > 0) mc.n_head = c->n_head;
    if (c->n_embd > 0) mc.n_embd = c->n_embd;
    if (mc.n_head <= 0 || mc.n_embd % mc.n_head != 0)
        return pile_err_set(err, PILE_EINVAL, "n_embd %d is not a multiple of n_head %d (model '%s'%s)", mc.n_embd,
                            mc.n_head, c->model, c->n_head > 0 || c->n_embd > 0 ? " with the flags' dimensions" : "");
    return 0;
}

static int is_own_train_flag(const char *a, const char *name)
{
    opt_word w;
    return split_option(a, &w) == 0 && !w.value && strcmp(w.name, name) == 0;
}

static int cmd_train(int argc, char **argv, int first, const pile_log *log)
{
    int print_config = 0;
    /* --help, --version and --print-config are the command line's, not the
     * configuration's: take them out before resolving the rest. */
    char **args = malloc(((size_t)argc + 2) * sizeof *args); /* argv, the launcher's world size, NULL */
    if (!args) {
        fputs("pile-trainer: out of memory\n", stderr);
        return 1;
    }
    int n = 0;
    args[n++] = argv[0];
    /* The launcher's world size, as if given first among the flags: the
     * value DeepSpeed's batch arithmetic ("auto") resolves with, unless a
     * --world_size flag says otherwise (which the run then refuses, as it
     * was not what the launcher started). */
    pile_comm_env env;
    pile_err env_err;
    char world_flag[32];
    if (pile_comm_env_parse(&env, NULL, &env_err) < 0) {
        fprintf(stderr, "pile-trainer: %s\n", env_err.msg);
        free(args);
        return 2;
    }
    if (env.world_size > 1) {
        snprintf(world_flag, sizeof world_flag, "--world_size=%d", env.world_size);
        args[n++] = world_flag;
    }
    for (int i = first; i < argc; i++) {
        if (is_own_train_flag(argv[i], "help")) {
            pile_buf h = {0};
            pile_train_config_help(&h);
            fputs(train_intro, stdout);
            if (h.len) fwrite(h.data, 1, h.len, stdout);
            fputs(train_tail, stdout);
            pile_buf_free(&h);
            free(args);
            return 0;
        }
        if (is_own_train_flag(argv[i], "version")) {
            printf("pile-trainer %s\n", PILE_TRAINER_VERSION);
            free(args);
            return 0;
        }
        if (is_own_train_flag(argv[i], "print-config")) print_config = 1;
        else args[n++] = argv[i];
    }
    args[n] = NULL;

    pile_train_config cfg;
    pile_buf warnings = {0};
    pile_err err;
    pile_err_clear(&err);
    int rc = pile_train_config_resolve(&cfg, n, args, 1, &warnings, &err);
    for (size_t at = 0; at < warnings.len;) {
        const char *line = warnings.data + at;
        const char *nl = memchr(line, '\n', warnings.len - at);
        size_t len = nl ? (size_t)(nl - line) : warnings.len - at;
        if (len) fprintf(stderr, "pile-trainer: warning: %.*s\n", (int)len, line);
        at += len + 1;
    }
    pile_buf_free(&warnings);
    int status = 0;
    if (rc == 0) rc = check_model_settings(&cfg, &err);
    if (rc == 0) cfg.threads = capped_threads(cfg.threads);
    if (rc < 0) {
        /* a bad flag or value is the user's to fix (2); a file that cannot be read is a failure (1) */
        fprintf(stderr, "pile-trainer: %s\n", err.msg);
        if (rc == PILE_EINVAL) fputs("Try 'pile-trainer --help' for more information.\n", stderr);
        status = rc == PILE_EINVAL ? 2 : 1;
    } else if (rc > 0 && rc < n) {
        status = usage_error("", args[rc][0] == '-' ? "unknown option '%s'" : "unexpected argument '%s'", args[rc]);
    } else if (print_config) {
        pile_buf js = {0};
        if (pile_train_config_to_json(&cfg, &js) < 0 || js.failed) {
            fputs("pile-trainer: out of memory\n", stderr);
            status = 1;
        } else {
            fwrite(js.data, 1, js.len, stdout);
            if (js.len && js.data[js.len - 1] != '\n') fputc('\n', stdout);
        }
        pile_buf_free(&js);
    } else if ((rc = pile_trainer_train(&cfg, log, &err)) < 0) {
        end_line(log->ctx);
        fprintf(stderr, "pile-trainer: %s\n", err.msg);
        status = 1;
    } else if (rc == PILE_TRAINER_STOPPED) {
        status = EXIT_STOPPED;
    }
    free(args);
    return status;
}

/* --checkpoint may also name a run folder (checkpoints/) or its `latest`
 * file: that means the newest checkpoint there, said on stderr. A folder
 * that is itself a checkpoint (config.json) is taken as it is. */
static int resolve_checkpoint(const char *arg, pile_buf *out)
{
    pile_buf run = {0}, probe = {0};
    const char *slash = strrchr(arg, '/');
    const char *base = slash ? slash + 1 : arg;
    int rc = 0;
    if (access(arg, F_OK) != 0) {
        fprintf(stderr, "pile-trainer: cannot open checkpoint '%s': %s\n", arg, strerror(errno));
        return PILE_ENOENT;
    }
    if (!strcmp(base, "latest") && !pile_fs_is_dir(arg)) {
        if (slash ? pile_buf_append(&run, arg, (size_t)(slash - arg)) : pile_buf_append_str(&run, "."))
            rc = PILE_ENOMEM;
    } else if (pile_fs_is_dir(arg) && !pile_fs_join(&probe, arg, "config.json") && access(probe.data, F_OK) != 0 &&
               !pile_fs_join(&probe, arg, "latest") && access(probe.data, F_OK) == 0) {
        rc = pile_buf_append_str(&run, arg) ? PILE_ENOMEM : 0;
    }
    if (!rc && run.len && !pile_buf_append(&run, "", 1)) {
        pile_err err;
        if (pile_checkpoint_find_latest(run.data, out, &err) < 0 || pile_buf_append(out, "", 1)) {
            fprintf(stderr, "pile-trainer: %s\n", err.msg);
            rc = PILE_ENOENT;
        } else {
            fprintf(stderr, "pile-trainer: checkpoint '%s' (the newest in '%s')\n", out->data, run.data);
        }
    } else if (!rc && (pile_buf_append_str(out, arg) || pile_buf_append(out, "", 1))) {
        rc = PILE_ENOMEM;
    }
    pile_buf_free(&run);
    pile_buf_free(&probe);
    return rc;
}


/* ----------------------------------------------------------------- eval */

static int cmd_eval(int argc, char **argv, const pile_log *log)
{
    const char *ckpt = NULL, *data = NULL;
    int64_t rows = -1, batch = 0, threads = 0;
    int json = 0;
    for (int i = 2; i < argc; i++) {
        opt_word w;
        if (split_option(argv[i], &w) < 0)
            return usage_error("eval ", argv[i][0] == '-' ? "unknown option '%s'" : "unexpected argument '%s'",
                               argv[i]);
        if (!strcmp(w.name, "help") && !w.value) {
            fputs(eval_help, stdout);
            return 0;
        }
        if (!strcmp(w.name, "json") && !w.value) {
            json = 1;
            continue;
        }
        int64_t *num = !strcmp(w.name, "eval-rows")    ? &rows
                       : !strcmp(w.name, "batch-size") ? &batch
                       : !strcmp(w.name, "threads")    ? &threads
                                                       : NULL;
        const char **str = !strcmp(w.name, "checkpoint") ? &ckpt : !strcmp(w.name, "data") ? &data : NULL;
        if (!num && !str) return usage_error("eval ", "unknown option '%s'", argv[i]);
        const char *opt = argv[i];
        const char *v = take_value(&w, argc, argv, &i);
        if (!v) return usage_error("eval ", "option '%s' needs a value", opt);
        if (str) *str = v;
        else if (parse_i64(v, 0, num == &batch ? 65536 : num == &threads ? INT32_MAX : INT64_MAX, num) < 0)
            return usage_error("eval ", "bad number '%s'", v);
    }
    if (!ckpt) return usage_error("eval ", "%smissing --checkpoint DIR", "");
    threads = capped_threads((int)threads);
    pile_eval_result r;
    pile_err err;
    pile_buf cp = {0};
    if (resolve_checkpoint(ckpt, &cp) < 0) {
        pile_buf_free(&cp);
        return 1;
    }
    int erc = pile_trainer_eval(cp.data, data, rows, (int)batch, (int)threads, log, &r, &err);
    pile_buf_free(&cp);
    if (erc < 0) {
        fprintf(stderr, "pile-trainer: %s\n", err.msg);
        return 1;
    }
    static const char *const from_key[] = {"eval_rows", "checkpoint", "all"};
    static const char *const from_text[] = {"--eval_rows", "the checkpoint's eval_rows", "none recorded: all"};
    if (json)
        printf("{\"loss\": %.17g, \"accuracy\": %.17g, \"perplexity\": %.17g, \"tokens\": %" PRId64
               ", \"samples\": %" PRIu64 ", \"val_samples\": %" PRIu64 ", \"samples_from\": \"%s\"}\n",
               r.loss, r.accuracy, r.perplexity, r.tokens, r.samples, r.val_samples, from_key[r.rows_from]);
    else
        printf("val loss %.6f accuracy %.6f perplexity %.4f tokens %" PRId64 " (%s %" PRIu64 " of %" PRIu64
               " val samples: %s)\n",
               r.loss, r.accuracy, r.perplexity, r.tokens, r.samples < r.val_samples ? "the first" : "all",
               r.samples, r.val_samples, from_text[r.rows_from]);
    return 0;
}


/* --------------------------------------------------------------- sample */

static int cmd_sample(int argc, char **argv, const pile_log *log)
{
    const char *ckpt = NULL;
    pile_sample_opts o = {NULL, NULL, 200, 1.0, 0, 42, 0, NULL};
    for (int i = 2; i < argc; i++) {
        opt_word w;
        if (split_option(argv[i], &w) < 0)
            return usage_error("sample ", argv[i][0] == '-' ? "unknown option '%s'" : "unexpected argument '%s'",
                               argv[i]);
        if (!strcmp(w.name, "help") && !w.value) {
            fputs(sample_help, stdout);
            return 0;
        }
        static const char *const known[] = {"checkpoint", "prompt", "max-new-tokens", "temperature",
                                            "top-k",      "seed",   "threads",        "tokenizer",
                                            "backend"};
        size_t k = 0;
        while (k < sizeof known / sizeof known[0] && strcmp(known[k], w.name)) k++;
        if (k == sizeof known / sizeof known[0]) return usage_error("sample ", "unknown option '%s'", argv[i]);
        const char *opt = argv[i];
        const char *v = take_value(&w, argc, argv, &i);
        if (!v) return usage_error("sample ", "option '%s' needs a value", opt);
        int64_t x;
        char *end;
        switch (k) {
        case 0: ckpt = v; break;
        case 1: o.prompt = v; break;
        case 2:
            if (parse_i64(v, 0, 1 << 24, &x) < 0) return usage_error("sample ", "bad --max_new_tokens '%s'", v);
            o.max_new_tokens = (int)x;
            break;
        case 3:
            errno = 0;
            o.temperature = strtod(v, &end);
            if (errno || end == v || *end || !(o.temperature >= 0) || !isfinite(o.temperature))
                return usage_error("sample ", "bad --temperature '%s' (a number >= 0)", v);
            break;
        case 4:
            if (parse_i64(v, 0, INT32_MAX, &x) < 0) return usage_error("sample ", "bad --top_k '%s'", v);
            o.top_k = (int)x;
            break;
        case 5:
            if (parse_u64(v, &o.seed) < 0) return usage_error("sample ", "bad --seed '%s'", v);
            break;
        case 6:
            if (parse_i64(v, 0, INT32_MAX, &x) < 0) return usage_error("sample ", "bad --threads '%s'", v);
            o.threads = capped_threads((int)x);
            break;
        case 7: o.tokenizer = v; break;
        default: o.backend = v; break;
        }
    }
    if (!ckpt) return usage_error("sample ", "%smissing --checkpoint DIR", "");
    if (!o.prompt) return usage_error("sample ", "%smissing --prompt TEXT", "");
    pile_err err;
    pile_buf cp = {0};
    if (resolve_checkpoint(ckpt, &cp) < 0) {
        pile_buf_free(&cp);
        return 1;
    }
    int src = pile_trainer_sample(cp.data, &o, log, &err);
    pile_buf_free(&cp);
    if (src < 0) {
        fflush(stdout);
        fprintf(stderr, "pile-trainer: %s\n", err.msg);
        return 1;
    }
    return 0;
}

/* OpenBLAS chooses its kernels when it loads, and a release older than the
 * CPU falls back to pre-AVX ones (see pile_cpu_blas_coretype_hint).
 * Unless the user chose (OPENBLAS_CORETYPE set), name the right family and
 * start this program again, once: the variable is then set. */
static void restart_with_fast_blas(char **argv)
{
    const char *hint = pile_cpu_blas_coretype_hint();
    if (!hint || getenv("OPENBLAS_CORETYPE")) return;
    if (setenv("OPENBLAS_CORETYPE", hint, 1) != 0) return;
    execv("/proc/self/exe", argv);
    /* not fatal: the slower kernels give the same results */
    unsetenv("OPENBLAS_CORETYPE");
}

/* ----------------------------------------------------------------- plan */

#define EXIT_DOES_NOT_FIT 3

static int parse_gib(const char *s, uint64_t *out)
{
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !(v > 0) || v > 1e9) return -1;
    *out = (uint64_t)(v * 1073741824.0);
    return 0;
}

static int cmd_plan(int argc, char **argv)
{
    /* plan's own flags are taken out; the rest are training settings */
    char **args = malloc(((size_t)argc + 1) * sizeof *args);
    if (!args) {
        fputs("pile-trainer: out of memory\n", stderr);
        return 1;
    }
    int n = 0, json = 0, vocab_given = 0;
    int64_t gpus = 0, nodes = 1, zero = -1, vocab = 50257;
    const char *offload = NULL;
    uint64_t gpu_mem = 0, cpu_mem = 0;
    args[n++] = argv[0];
    int status = 0;
    for (int i = 2; i < argc && !status; i++) {
        opt_word w;
        if (split_option(argv[i], &w) < 0) {
            args[n++] = argv[i];
            continue;
        }
        if (!strcmp(w.name, "help") && !w.value) {
            fputs(plan_help, stdout);
            free(args);
            return 0;
        }
        if (!strcmp(w.name, "json") && !w.value) {
            json = 1;
            continue;
        }
        static const char *const own[] = {"gpus", "nodes", "zero", "offload", "gpu-mem", "cpu-mem", "vocab-size"};
        size_t k = 0;
        while (k < sizeof own / sizeof own[0] && strcmp(own[k], w.name)) k++;
        if (k == sizeof own / sizeof own[0]) {
            args[n++] = argv[i];
            continue;
        }
        const char *opt = argv[i];
        const char *v = take_value(&w, argc, argv, &i);
        if (!v) {
            status = usage_error("plan ", "option '%s' needs a value", opt);
            break;
        }
        int bad = 0;
        switch (k) {
        case 0: bad = parse_i64(v, 0, 1 << 16, &gpus) < 0; break;
        case 1: bad = parse_i64(v, 1, 1 << 16, &nodes) < 0; break;
        case 2: bad = parse_i64(v, 0, 3, &zero) < 0; break;
        case 3: offload = v; break;
        case 4: bad = parse_gib(v, &gpu_mem) < 0; break;
        case 5: bad = parse_gib(v, &cpu_mem) < 0; break;
        default: bad = parse_i64(v, 1, INT32_MAX - 64, &vocab) < 0; vocab_given = 1; break;
        }
        if (bad) {
            static const char *const want[] = {"0 or more", "1 or more", "0 to 3", "", "GiB, a number above 0",
                                               "GiB, a number above 0", "1 or more"};
            char msg[160];
            snprintf(msg, sizeof msg, "bad --%s '%%s' (%s)", own[k], want[k]);
            status = usage_error("plan ", msg, v);
        }
    }
    args[n] = NULL;
    pile_train_config cfg;
    pile_buf warnings = {0}, out = {0};
    pile_err err;
    pile_err_clear(&err);
    pile_plan_settings s;
    pile_backend *be = NULL;
    int rc = 0;
    if (!status) {
        rc = pile_train_config_resolve(&cfg, n, args, 1, &warnings, &err);
        for (size_t at = 0; at < warnings.len;) {
            const char *line = warnings.data + at;
            const char *nl = memchr(line, '\n', warnings.len - at);
            size_t len = nl ? (size_t)(nl - line) : warnings.len - at;
            if (len) fprintf(stderr, "pile-trainer: warning: %.*s\n", (int)len, line);
            at += len + 1;
        }
        if (rc > 0 && rc < n)
            status = usage_error("plan ", args[rc][0] == '-' ? "unknown option '%s'" : "unexpected argument '%s'",
                                 args[rc]);
    }
    /* the shards' vocabulary and row length, as the run would take them,
     * when --data (a flag or a --config's) names them and --vocab_size is
     * not given; never the default ./shards, which may be anything */
    int max_length = cfg.max_length > 0 ? cfg.max_length : 1024;
    int data_given = 0;
    if (!status && rc >= 0) {
        pile_train_config defaults;
        pile_train_config_defaults(&defaults);
        data_given = strcmp(cfg.data, defaults.data) != 0;
        for (int i = 1; i < n && !data_given; i++) {
            opt_word w;
            data_given = split_option(args[i], &w) == 0 && !strcmp(w.name, "data");
        }
    }
    if (!status && rc >= 0 && !vocab_given && data_given) {
        pile_data *d = NULL;
        rc = pile_data_open(&d, cfg.data, cfg.max_length, cfg.val_fraction, &err);
        if (rc == 0) {
            vocab = (int64_t)pile_data_get_info(d)->vocab_size;
            max_length = pile_data_seq_len(d);
            fprintf(stderr, "pile-trainer: the vocabulary (%" PRId64 ") and max_length (%d) of the shards in '%s'\n",
                    vocab, max_length, cfg.data);
        }
        pile_data_close(d);
    }
    if (!status && rc >= 0) {
        rc = pile_plan_settings_from_config(&cfg, (int)vocab, max_length, &s, &err);
        if (rc == 0) {
            s.gpus = (int)gpus;
            s.nodes = (int)nodes;
            /* GPUs train in what a CUDA run defaults to */
            s.precision = pile_train_config_precision(&cfg, gpus > 0 ? "cuda" : "cpu");
            if (gpus == 0 && zero < 0 && !offload) {
                /* a config's ZeRO settings: the CPU backend runs without them */
                s.zero_stage = 0;
                s.offload = PILE_OFFLOAD_NONE;
            }
            if (zero >= 0) s.zero_stage = (int)zero;
            if (offload) rc = pile_plan_offload_parse(offload, &s.offload, &err);
            s.gpu_mem = gpu_mem;
            s.cpu_mem = cpu_mem;
        }
    }
    const char *source = cpu_mem ? "--cpu-mem" : NULL;
    if (!status && rc >= 0 && s.gpus == 0) {
        /* the CPU backend's own attention sizes; its host's memory */
        s.threads = capped_threads(s.threads);
        rc = pile_backend_open(&be, "cpu", s.threads, &err); /* not auto's: a GPU machine's would be cuda */
        s.backend = be;
        if (rc == 0 && !cpu_mem) s.cpu_mem = pile_plan_host_available(&source);
    }
    pile_plan p;
    if (!status && rc >= 0) rc = pile_plan_compute(&s, &p, &err);
    if (!status && rc >= 0) {
        rc = json ? pile_plan_to_json(&s, &p, &out) : pile_plan_format(&s, &p, source, &out);
        if (rc == 0) fwrite(out.data, 1, out.len, stdout);
    }
    if (!status && rc < 0) {
        fprintf(stderr, "pile-trainer: %s\n", err.msg);
        if (rc == PILE_EINVAL) fputs("Try 'pile-trainer plan --help' for more information.\n", stderr);
        status = rc == PILE_EINVAL ? 2 : 1;
    }
    if (!status && p.fits == 0) status = EXIT_DOES_NOT_FIT;
    pile_backend_close(be);
    pile_buf_free(&out);
    pile_buf_free(&warnings);
    free(args);
    return status;
}

int main(int argc, char **argv)
{
    restart_with_fast_blas(argv);
    printer pr = {isatty(STDERR_FILENO), 0};
    /* a stop signal's acknowledgment is written from its handler, on stderr */
    const pile_log log = {print_message, &pr, STDERR_FILENO, pr.tty};
    if (argc >= 2 && !strcmp(argv[1], "eval")) return cmd_eval(argc, argv, &log);
    if (argc >= 2 && !strcmp(argv[1], "sample")) return cmd_sample(argc, argv, &log);
    if (argc >= 2 && !strcmp(argv[1], "plan")) return cmd_plan(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "launch")) return pile_trainer_launch(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "train")) return cmd_train(argc, argv, 2, &log);
    if (argc >= 2 && argv[1][0] != '-') {
        fprintf(stderr, "pile-trainer: unknown command '%s'\n%s", argv[1], usage_text);
        return 2;
    }
    if (argc >= 2 && (is_own_train_flag(argv[1], "help"))) {
        fputs(usage_text, stdout);
        fputc('\n', stdout);
    }
    return cmd_train(argc, argv, 1, &log);
}
