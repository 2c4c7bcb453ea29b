/* pile-prep: the command line over the pile_prep library. Only this file
 * prints and exits: 0 on success, 1 on failure, 2 on a usage error. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pile_fs.h"
#include "pile_prep.h"
#include "pile_tokenizer.h"

#define DEFAULT_DATA "/workspace/pile_data/"
#define MAX_RULES 64

static const char usage_text[] =
    "usage: pile-prep [options] [INPUT...]\n"
    "\n"
    "Tokenizes and packs JSON-lines files (The Pile's .jsonl.zst, or .jsonl, .json,\n"
    "plain or compressed with zstd or gzip) into shards.\n"
    "INPUT is a file or a folder (walked for *.jsonl and *.json, plain, .zst, .zstd or\n"
    ".gz, any case, sorted by path).\n"
    "Without INPUT: " DEFAULT_DATA " if it exists, else the bundled sample data/sample/.\n"
    "Splits by name: a file whose name has the word val, valid or validation goes to\n"
    "val, test to test (words end at _ - . and the name's ends: pile_val.jsonl.zst,\n"
    "validation-00001.jsonl.gz; or the nearest folder's name below INPUT), else train.\n"
    "\n"
    "  -o, --output DIR        output folder (default ./shards/)\n"
    "  -j, --threads N         worker threads (default, or 0: all cores)\n"
    "  -L, --max-length N      tokens per row (default 2048)\n"
    "  -t, --tokenizer SPEC    \"gpt2\" (GPT-2's, built in), \"bytes\", a tokenizer.json, a GPT-2\n"
    "                          folder, a .tiktoken file (default: gpt2 when an INPUT folder has\n"
    "                          the Pile's layout, train/NN.jsonl.zst; else bytes)\n"
    "      --partition K/N     process only partition K (1 to N) of the inputs, into\n"
    "                          DIR/part-K-of-N/ (whole files, balanced by size, the same on\n"
    "                          every machine); in a Slurm array job the default is the task's\n"
    "                          share (SLURM_ARRAY_TASK_ID, _MIN, _STEP, _COUNT); none: all inputs\n"
    "      --pack MODE         concat (default) or best-fit\n"
    "      --window-rows N     best-fit: rows per packing window (default 1024)\n"
    "      --shard-size MB     token data per shard in MiB (default 256; fractions allowed)\n"
    "      --max-line-bytes N  longer lines are skipped (default 64M; suffixes k, M, G)\n"
    "      --text-key KEY      the member holding each line's text, a dotted path (default text)\n"
    "      --subset-key KEY    the member holding its subset name (default meta.pile_set_name;\n"
    "                          \"\" for none)\n"
    "      --train PATTERN     inputs in the train split, whatever their names say; PATTERN is\n"
    "      --val PATTERN       a file or folder (added if not an INPUT already) or a glob over\n"
    "      --test PATTERN      paths (over file names when it has no /); repeatable\n"
    "      --zstd-memory MB    largest zstd window to read, in MiB (zstd --long=31 needs 2048;\n"
    "                          default: what this machine's memory allows, 128 to 2048)\n"
    "      --strict            the first bad line or truncated file is an error\n"
    "      --megatron          also write Megatron OUT/<split>.bin/.idx\n"
    "      --force             start over, removing what an earlier run's manifest records in DIR\n"
    "      --progress          show the progress line even when stderr is not a terminal\n"
    "  -q, --quiet             no warnings, no summary\n"
    "  -h, --help              this help\n"
    "  -V, --version           the version\n"
    "\n"
    "Partitions made on many machines are read as one dataset by pile-trainer --data DIR\n"
    "and pile-dump DIR.\n"
    "A run that was interrupted is resumed by running the same command again; the\n"
    "shards it kept are checked against their checksums first. DIR holds a copy of\n"
    "the tokenizer (DIR/tokenizer/), so the folder works wherever it is copied.\n"
    "Only files the manifest says pile-prep wrote are ever removed or overwritten.\n";

typedef struct log_ctx {
    int quiet;
    int progress;
} log_ctx;

static void log_line(void *ctx, const char *msg)
{
    const log_ctx *l = ctx;
    if (l->quiet) return;
    fprintf(stderr, "%spile-prep: %s\n", l->progress ? "\r\033[K" : "", msg);
}

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "pile-prep: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nTry 'pile-prep --help' for more information.\n");
    return 2;
}

static int parse_u64(const char *s, uint64_t *out, int suffixes)
{
    /* strtoull skips blanks and takes a sign, so " -18446744073709551615" would be 1 */
    if (!s || *s < '0' || *s > '9') return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s) return -1;
    uint64_t mul = 1;
    if (suffixes && *end) {
        switch (*end) {
        case 'k': case 'K': mul = 1ull << 10; break;
        case 'm': case 'M': mul = 1ull << 20; break;
        case 'g': case 'G': mul = 1ull << 30; break;
        default: return -1;
        }
        end++;
    }
    if (*end) return -1;
    if (v > UINT64_MAX / mul) return -1;
    *out = v * mul;
    return 0;
}

/* The bundled sample: beside the sources (known at build time), else
 * relative to this executable (build-dir/preprocess/pile-prep). */
static int find_sample(pile_buf *out)
{
#ifdef PILE_PREP_SOURCE_ROOT
    if (pile_fs_join(out, PILE_PREP_SOURCE_ROOT, "data/sample") == 0 && pile_fs_is_dir(out->data)) return 0;
#endif
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return -1;
    exe[n] = '\0';
    static const char *const rel[] = {"../data/sample", "../../data/sample", "../share/pile/data/sample"};
    char *slash = strrchr(exe, '/');
    if (!slash) return -1;
    *slash = '\0';
    for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++)
        if (pile_fs_join(out, exe, rel[i]) == 0 && pile_fs_is_dir(out->data)) return 0;
    return -1;
}

/* Does folder `dir` have the Pile's layout: a train/ folder of NN.jsonl.zst? */
static int pile_layout(const char *dir)
{
    pile_buf p = {0};
    if (pile_fs_join(&p, dir, "train")) return 0;
    DIR *d = opendir(p.data);
    pile_buf_free(&p);
    if (!d) return 0;
    int yes = 0;
    struct dirent *e;
    while (!yes && (e = readdir(d)))
        yes = strlen(e->d_name) == 12 && e->d_name[0] >= '0' && e->d_name[0] <= '9' && e->d_name[1] >= '0' &&
              e->d_name[1] <= '9' && !strcmp(e->d_name + 2, ".jsonl.zst");
    closedir(d);
    return yes;
}

/* "K/N" with 1 <= K <= N <= 65536. */
static int parse_partition(const char *s, uint32_t *k, uint32_t *n)
{
    const char *slash = strchr(s, '/');
    if (!slash) return -1;
    char kbuf[24];
    size_t kl = (size_t)(slash - s);
    uint64_t kv, nv;
    if (kl == 0 || kl >= sizeof kbuf) return -1;
    memcpy(kbuf, s, kl);
    kbuf[kl] = '\0';
    if (parse_u64(kbuf, &kv, 0) || parse_u64(slash + 1, &nv, 0) || nv < 1 || nv > 65536 || kv < 1 || kv > nv)
        return -1;
    *k = (uint32_t)kv;
    *n = (uint32_t)nv;
    return 0;
}

/* A Slurm array variable as a number; -1 when unset, -2 when not a number. */
static int64_t slurm_var(const char *name)
{
    const char *v = getenv(name);
    uint64_t x;
    if (!v || !*v) return -1;
    if (parse_u64(v, &x, 0) || x > INT32_MAX) return -2;
    return (int64_t)x;
}

/* The partition of a Slurm array task: 1 found (k, n and `how` set), 0 not
 * an array task, -1 an array Slurm describes in a way that gives no
 * partition (`how` says why). Task ids run MIN, MIN+STEP, ... MAX
 * (--array=0-29, 1-30, 0-58:2): the task's index among them is the
 * partition. A list of ids (--array=1,4,9) has no such index, and an array
 * of one task is most likely one task of an earlier array run again
 * (sbatch --array=7): both are refused rather than guessed. */
static int slurm_partition(uint32_t *k, uint32_t *n, char *how, size_t cap)
{
    int64_t id = slurm_var("SLURM_ARRAY_TASK_ID"), cnt = slurm_var("SLURM_ARRAY_TASK_COUNT");
    int64_t min = slurm_var("SLURM_ARRAY_TASK_MIN"), step = slurm_var("SLURM_ARRAY_TASK_STEP");
    int64_t max = slurm_var("SLURM_ARRAY_TASK_MAX");
    if (id == -1) return 0;
    if (step == -1) step = 1;
    if (id < 0 || cnt < 1 || min < 0 || step < 1 || max == -2) {
        snprintf(how, cap, "this is a Slurm array task, but SLURM_ARRAY_TASK_ID, _COUNT and _MIN do not give its "
                           "partition (unset or not numbers)");
        return -1;
    }
    if (cnt == 1) {
        snprintf(how, cap, "this Slurm array has one task (%" PRId64 "), as when one task of an array is run again, "
                           "which says nothing of its partition", id);
        return -1;
    }
    if (id < min || (id - min) % step || (id - min) / step >= cnt || cnt > 65536 ||
        (max >= 0 && max - min != (cnt - 1) * step)) {
        snprintf(how, cap, "Slurm array task %" PRId64 " is not one of %" PRId64 " ids from %" PRId64 " by %" PRId64
                           ": partitions need an array of evenly spaced ids (--array=0-29)",
                 id, cnt, min, step);
        return -1;
    }
    *k = (uint32_t)((id - min) / step + 1);
    *n = (uint32_t)cnt;
    snprintf(how, cap, "from the Slurm array: SLURM_ARRAY_TASK_ID=%" PRId64 " (ids from %" PRId64 " by %" PRId64
                       ", %" PRId64 " tasks)", id, min, step, cnt);
    return 1;
}

enum {
    OPT_PACK = 256,
    OPT_WINDOW,
    OPT_SHARD_SIZE,
    OPT_MAX_LINE,
    OPT_STRICT,
    OPT_MEGATRON,
    OPT_FORCE,
    OPT_PROGRESS,
    OPT_TEXT_KEY,
    OPT_SUBSET_KEY,
    OPT_ZSTD_MEMORY,
    OPT_TRAIN,
    OPT_VAL,
    OPT_TEST,
    OPT_PARTITION,
};

/* The --train / --val / --test patterns, in the order given. */
typedef struct split_rule {
    pile_split split;
    const char *pattern;
} split_rule;

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"output", required_argument, NULL, 'o'},
        {"threads", required_argument, NULL, 'j'},
        {"max-length", required_argument, NULL, 'L'},
        {"tokenizer", required_argument, NULL, 't'},
        {"pack", required_argument, NULL, OPT_PACK},
        {"window-rows", required_argument, NULL, OPT_WINDOW},
        {"shard-size", required_argument, NULL, OPT_SHARD_SIZE},
        {"max-line-bytes", required_argument, NULL, OPT_MAX_LINE},
        {"strict", no_argument, NULL, OPT_STRICT},
        {"megatron", no_argument, NULL, OPT_MEGATRON},
        {"force", no_argument, NULL, OPT_FORCE},
        {"progress", no_argument, NULL, OPT_PROGRESS},
        {"text-key", required_argument, NULL, OPT_TEXT_KEY},
        {"subset-key", required_argument, NULL, OPT_SUBSET_KEY},
        {"zstd-memory", required_argument, NULL, OPT_ZSTD_MEMORY},
        {"train", required_argument, NULL, OPT_TRAIN},
        {"val", required_argument, NULL, OPT_VAL},
        {"test", required_argument, NULL, OPT_TEST},
        {"partition", required_argument, NULL, OPT_PARTITION},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    pile_prep_opts o;
    memset(&o, 0, sizeof o);
    o.output_dir = "./shards/";
    o.pack = PILE_PACK_CONCAT;
    int quiet = 0, force_progress = 0;
    split_rule rules[MAX_RULES];
    size_t n_rules = 0;
    uint64_t v;
    int c;
    const char *partition_arg = NULL;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":o:j:L:t:qhV", longopts, NULL)) != -1) {
        switch (c) {
        case 'o': o.output_dir = optarg; break;
        case 'j':
            if (parse_u64(optarg, &v, 0) || v > 256)
                return usage_error("bad --threads '%s' (0 for all cores, or 1 to 256)", optarg);
            o.threads = (int)v;
            break;
        case 'L':
            if (parse_u64(optarg, &v, 0) || v < 1 || v > (1u << 24))
                return usage_error("bad --max-length '%s' (1 to 16777216)", optarg);
            o.max_length = (uint32_t)v;
            break;
        case 't': o.tokenizer_spec = optarg; break;
        case OPT_PACK:
            if (!strcmp(optarg, "concat")) o.pack = PILE_PACK_CONCAT;
            else if (!strcmp(optarg, "best-fit") || !strcmp(optarg, "bestfit")) o.pack = PILE_PACK_BEST_FIT;
            else return usage_error("bad --pack '%s' (concat or best-fit)", optarg);
            break;
        case OPT_WINDOW:
            if (parse_u64(optarg, &v, 0) || v < 1 || v > (1u << 24))
                return usage_error("bad --window-rows '%s' (1 to 16777216)", optarg);
            o.window_rows = (uint32_t)v;
            break;
        case OPT_SHARD_SIZE: {
            char *end;
            errno = 0;
            double mb = strtod(optarg, &end);
            if (errno || end == optarg || *end || !(mb > 0) || mb > 1e7)
                return usage_error("bad --shard-size '%s' (MiB, > 0)", optarg);
            o.shard_bytes = (uint64_t)(mb * 1048576.0);
            if (o.shard_bytes == 0) o.shard_bytes = 1;
            break;
        }
        case OPT_MAX_LINE:
            if (parse_u64(optarg, &v, 1) || v < 1 || v > ((uint64_t)1 << 40))
                return usage_error("bad --max-line-bytes '%s'", optarg);
            o.max_line_bytes = (size_t)v;
            break;
        case OPT_TEXT_KEY: o.text_key = optarg; break;
        case OPT_SUBSET_KEY: o.subset_key = optarg; break;
        case OPT_ZSTD_MEMORY:
            if (parse_u64(optarg, &v, 0) || v < 1 || v > 2048)
                return usage_error("bad --zstd-memory '%s' (MiB, 1 to 2048)", optarg);
            o.zstd_memory = v << 20;
            break;
        case OPT_TRAIN:
        case OPT_VAL:
        case OPT_TEST:
            if (n_rules == MAX_RULES) return usage_error("more than %s --train, --val and --test patterns", "64");
            rules[n_rules].split = c == OPT_TRAIN ? PILE_SPLIT_TRAIN : c == OPT_VAL ? PILE_SPLIT_VAL : PILE_SPLIT_TEST;
            rules[n_rules++].pattern = optarg;
            break;
        case OPT_PARTITION: {
            uint32_t k, n;
            if (strcmp(optarg, "none") && parse_partition(optarg, &k, &n))
                return usage_error("bad --partition '%s' (K/N with 1 <= K <= N <= 65536, or none)", optarg);
            partition_arg = optarg;
            break;
        }
        case OPT_STRICT: o.strict = 1; break;
        case OPT_MEGATRON: o.megatron = 1; break;
        case OPT_FORCE: o.force = 1; break;
        case OPT_PROGRESS: force_progress = 1; break;
        case 'q': quiet = 1; break;
        case 'h': fputs(usage_text, stdout); return 0;
        case 'V': printf("pile-prep %s\n", PILE_PREP_VERSION); return 0;
        case ':': return usage_error("option '%s' needs a value", argv[optind - 1]);
        default:
            /* An unknown letter inside "-Zq" leaves optind on that word, so
             * argv[optind - 1] is the word before it: name the letter. A long
             * option (unknown, or given a value it does not take) has moved
             * optind past itself. */
            if (optopt > 0 && optopt < 256 && !strchr("ojLtqhV", optopt)) {
                char letter[3] = {'-', (char)optopt, '\0'};
                return usage_error("unknown option '%s'", letter);
            }
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }

    pile_prep_inputs inputs = {0};
    pile_err err;
    pile_err_clear(&err);
    int rc = 0;
    /* which tokenizer, and why: said at the start and in the summary */
    char tok_why[PATH_MAX + 160];
    snprintf(tok_why, sizeof tok_why, "%s", o.tokenizer_spec ? "given" : "the default");
    if (optind == argc) {
        pile_buf sample = {0};
        const char *def = pile_fs_is_dir(DEFAULT_DATA) ? DEFAULT_DATA : NULL;
        if (!def && find_sample(&sample) == 0) def = sample.data;
        if (!def) {
            fprintf(stderr, "pile-prep: no input given, and neither '%s' nor the sample data/sample/ exists\n",
                    DEFAULT_DATA);
            return 1;
        }
        rc = pile_prep_inputs_add(&inputs, def, &err);
        if (!o.tokenizer_spec && pile_layout(def)) {
            o.tokenizer_spec = "gpt2";
            snprintf(tok_why, sizeof tok_why, "the default for the Pile's layout of '%.*s' (train/NN.jsonl.zst)",
                     PATH_MAX, def);
        }
        pile_buf_free(&sample);
    }
    for (int i = optind; i < argc && !rc; i++) {
        rc = pile_prep_inputs_add(&inputs, argv[i], &err);
        if (!rc && !o.tokenizer_spec && pile_layout(argv[i])) {
            o.tokenizer_spec = "gpt2";
            snprintf(tok_why, sizeof tok_why, "the default for the Pile's layout of '%.*s' (train/NN.jsonl.zst)",
                     PATH_MAX, argv[i]);
        }
    }
    for (size_t i = 0; i < n_rules && !rc; i++)
        rc = pile_prep_inputs_set_split(&inputs, rules[i].split, rules[i].pattern, &err);

    /* the partition: --partition, else a Slurm array task's */
    uint32_t part_k = 0, part_n = 0;
    char part_how[256] = "";
    if (!rc && partition_arg && strcmp(partition_arg, "none")) {
        parse_partition(partition_arg, &part_k, &part_n);
        snprintf(part_how, sizeof part_how, "from --partition %s", partition_arg);
    } else if (!rc && !partition_arg) {
        int sl = slurm_partition(&part_k, &part_n, part_how, sizeof part_how);
        if (sl < 0) {
            fprintf(stderr, "pile-prep: %s; give --partition K/N, or --partition none to process every input\n",
                    part_how);
            pile_prep_inputs_free(&inputs);
            return 1;
        }
    }
    pile_prep_partition part;
    pile_buf part_dir = {0};
    if (!rc && part_n) {
        rc = pile_prep_inputs_partition(&inputs, part_k, part_n, &part, &err);
        char leaf[64];
        int w = snprintf(leaf, sizeof leaf, "%u", part_n);
        snprintf(leaf, sizeof leaf, "part-%0*u-of-%u", w, part_k, part_n);
        if (!rc && pile_fs_join(&part_dir, o.output_dir, leaf)) rc = pile_err_set(&err, PILE_ENOMEM, "out of memory");
        if (!rc) {
            o.output_dir = part_dir.data;
            o.partition = &part;
        }
    }
    if (rc) {
        fprintf(stderr, "pile-prep: %s\n", err.msg);
        pile_prep_inputs_free(&inputs);
        pile_buf_free(&part_dir);
        return 1;
    }
    if (!quiet && inputs.n_notes) {
        for (char *line = inputs.notes.data, *nl; line && (nl = strchr(line, '\n')); line = nl + 1)
            fprintf(stderr, "pile-prep: note: %.*s\n", (int)(nl - line), line);
        if (inputs.n_notes > PILE_PREP_NOTES_MAX)
            fprintf(stderr, "pile-prep: note: ... and %zu more files passed over\n",
                    inputs.n_notes - PILE_PREP_NOTES_MAX);
    }

    log_ctx lc = {quiet, 0};
    if (force_progress || (!quiet && isatty(STDERR_FILENO))) {
        o.progress = stderr;
        lc.progress = 1;
    }
    o.inputs = inputs.v;
    o.n_inputs = inputs.n;
    o.log = log_line;
    o.log_ctx = &lc;
    pile_buf lines = {0};
    const char *spec = o.tokenizer_spec ? o.tokenizer_spec : "bytes";
    pile_buf_printf(&lines, "tokenizer: %s%s (%s)\n", spec,
                    pile_tokenizer_is_builtin(spec) ? ", GPT-2's vocabulary built into pile" : "", tok_why);
    if (part_n)
        pile_buf_printf(&lines,
                        "partition %u of %u (%s): %zu of %zu input files, %.1f of %.1f MB on disk, into '%s'\n",
                        part.index, part.count, part_how, part.inputs_selected, part.inputs_total,
                        (double)part.bytes_selected / 1e6, (double)part.bytes_total / 1e6, o.output_dir);
    if (lines.failed) {
        fprintf(stderr, "pile-prep: out of memory\n");
        return 1;
    }
    if (!quiet)
        for (char *line = lines.data, *nl; line && (nl = strchr(line, '\n')); line = nl + 1)
            fprintf(stderr, "pile-prep: %.*s\n", (int)(nl - line), line);
    /* "gpt2" once named a folder here for some: say which is read */
    struct stat gst;
    if (!quiet && pile_tokenizer_is_builtin(spec) && stat(spec, &gst) == 0)
        fprintf(stderr, "pile-prep: note: '%s' is the tokenizer built into pile, not the %s '%s' here (write './%s' "
                        "for that one)\n", spec, S_ISDIR(gst.st_mode) ? "folder" : "file", spec, spec);
    pile_prep_result res;
    rc = pile_prep_run(&o, &res, &err);
    if (rc) {
        fprintf(stderr, "pile-prep: %s\n", err.msg);
    } else if (res.already_complete) {
        if (!quiet && res.files_redone)
            fprintf(stderr, "pile-prep: '%s' is already complete; %llu damaged or missing files written again\n",
                    o.output_dir, (unsigned long long)res.files_redone);
        else if (!quiet)
            fprintf(stderr, "pile-prep: '%s' is already complete; nothing to do (%llu files checked, %.1f MB, in %.2f s)\n",
                    o.output_dir, (unsigned long long)res.files_checked, (double)res.bytes_checked / 1e6, res.check_s);
    } else if (!quiet && res.summary.data) {
        fprintf(stderr, "%s%s", res.summary.data, lines.data);
    }
    pile_prep_result_free(&res);
    pile_prep_inputs_free(&inputs);
    pile_buf_free(&lines);
    pile_buf_free(&part_dir);
    return rc ? 1 : 0;
}
