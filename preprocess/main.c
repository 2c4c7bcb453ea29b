/* pile-prep: the command line over the pile_prep library. Only this file
 * prints and exits: 0 on success, 1 on failure, 2 on a usage error. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pile_fs.h"
#include "pile_prep.h"

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
    "  -t, --tokenizer SPEC    \"bytes\" (default), a tokenizer.json, a GPT-2 folder, a .tiktoken file\n"
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
        pile_buf_free(&sample);
    }
    for (int i = optind; i < argc && !rc; i++) rc = pile_prep_inputs_add(&inputs, argv[i], &err);
    for (size_t i = 0; i < n_rules && !rc; i++)
        rc = pile_prep_inputs_set_split(&inputs, rules[i].split, rules[i].pattern, &err);
    if (rc) {
        fprintf(stderr, "pile-prep: %s\n", err.msg);
        pile_prep_inputs_free(&inputs);
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
        fprintf(stderr, "%s", res.summary.data);
    }
    pile_prep_result_free(&res);
    pile_prep_inputs_free(&inputs);
    return rc ? 1 : 0;
}
