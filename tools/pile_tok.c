/* pile-tok: the tokenizer from the command line. encode (.jsonl/.jsonl.zst
 * lines or plain text to JSON id arrays, in input order, optionally on
 * several threads), decode, train (byte-level BPE to a tokenizer.json),
 * info, and bench (single-thread encode throughput on texts held in
 * memory). Only main prints and exits. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "pile_buf.h"
#include "pile_fs.h"
#include "pile_hex.h"
#include "pile_json.h"
#include "pile_lines.h"
#include "pile_progress.h"
#include "pile_tokenizer.h"
#include "pile_utf8.h"

static const char *usage_text =
    "usage: pile-tok COMMAND [options]\n"
    "\n"
    "commands:\n"
    "  encode --tokenizer SPEC [--text] [--text-key KEY] [--threads N] [INPUT]\n"
    "                      ids of each line's text as one JSON array per line (null for a\n"
    "                      line that is not an object with a string \"text\" or KEY); --text:\n"
    "                      INPUT is plain text, one array out\n"
    "  decode --tokenizer SPEC [--json] [IDS]\n"
    "                      JSON arrays of ids (one per line) back to text\n"
    "  train --vocab-size N [--min-frequency N] [--special TOK]... [--threads N] -o OUT INPUT...\n"
    "                      train a byte-level BPE tokenizer.json on the texts of .jsonl(.zst) files\n"
    "  info --tokenizer SPEC\n"
    "                      kind, vocabulary size, special tokens, pattern, fingerprint\n"
    "  bench --tokenizer SPEC [--threads N] INPUT...\n"
    "                      encode throughput over the texts of the inputs, held in memory\n"
    "\n"
    "SPEC: \"gpt2\" (GPT-2's vocabulary, built in: no file), \"bytes\", a tokenizer.json, a\n"
    "folder with encoder.json + vocab.bpe (one named gpt2: ./gpt2), or a *.tiktoken file\n"
    "(r50k_base, p50k_base, cl100k_base, o200k_base).\n"
    "INPUT or IDS '-' or absent: standard input. `pile-tok COMMAND --help` for more.\n";

static const char *help_encode =
    "usage: pile-tok encode --tokenizer SPEC [--text] [--text-key KEY] [--threads N] [INPUT]\n"
    "\n"
    "Reads INPUT (JSON lines, plain or zstd or gzip, found by the magic number; '-' or\n"
    "absent: stdin) and writes one JSON array of ids per line, in input order. A line\n"
    "that is not an object with a string \"text\" (or KEY) gives `null`. Repairs as\n"
    "pile-prep: a BOM at the\n"
    "file start is dropped, invalid UTF-8 and lone surrogates become U+FFFD. Text is\n"
    "always ordinary: a literal <|endoftext|> is never the special id.\n"
    "\n"
    "  --tokenizer SPEC  the tokenizer (see pile-tok --help)\n"
    "  --text            INPUT is plain UTF-8 text (repaired); write one array\n"
    "  --text-key KEY    the member holding the text, a dotted path as in pile-prep\n"
    "                    (default text; meta.body for {\"meta\": {\"body\": ...}})\n"
    "  --threads N       encode on N threads (default 1); output order is kept\n"
    "  -h, --help        this help\n";

static const char *help_decode =
    "usage: pile-tok decode --tokenizer SPEC [--json] [IDS]\n"
    "\n"
    "Reads JSON arrays of ids, one per line ('-' or absent: stdin), and writes each\n"
    "one's text followed by a newline (`null` lines give an empty line). Special ids\n"
    "decode to their text.\n"
    "\n"
    "  --tokenizer SPEC  the tokenizer\n"
    "  --json            write each text as a JSON string (lossless for any bytes)\n"
    "  -h, --help        this help\n";

static const char *help_train =
    "usage: pile-tok train --vocab-size N [options] -o OUT INPUT...\n"
    "\n"
    "Trains byte-level BPE (GPT-2 pre-tokenization) on the \"text\" of every line of\n"
    "the .jsonl / .jsonl.zst INPUTs and writes a Hugging Face tokenizer.json to OUT.\n"
    "\n"
    "  --vocab-size N      total vocabulary, with the 256 bytes and the specials\n"
    "  --min-frequency N   never merge a pair seen fewer times (default 2)\n"
    "  --special TOK       a special token (repeatable; default <|endoftext|>)\n"
    "  --threads N         worker threads (default: all cores)\n"
    "  --progress          progress on stderr\n"
    "  -o, --output OUT    the tokenizer.json to write\n"
    "  -h, --help          this help\n";

static const char *help_info =
    "usage: pile-tok info --tokenizer SPEC\n"
    "\n"
    "Prints the kind, vocabulary size, end-of-text id, special tokens, pre-tokenization\n"
    "pattern and fingerprint (XXH3-128 of everything that decides the ids).\n"
    "\n"
    "  --tokenizer SPEC  the tokenizer (also accepted as the only argument)\n"
    "  -h, --help        this help\n";

static const char *help_bench =
    "usage: pile-tok bench --tokenizer SPEC [--threads N] [--repeat N] [--text] INPUT...\n"
    "\n"
    "Loads the texts of every line of the .jsonl(.zst) INPUTs into memory (--text: the\n"
    "whole files as texts), then times encoding them all: bytes/s and tokens/s on one\n"
    "thread, or on N threads with one encoder each. I/O is not timed.\n"
    "\n"
    "  --tokenizer SPEC  the tokenizer\n"
    "  --threads N       encoding threads (default 1)\n"
    "  --repeat N        encode everything N times and report the best pass (default 1)\n"
    "  --text            inputs are plain text files\n"
    "  -h, --help        this help\n";

static void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

static void die(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("pile-tok: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(code);
}

static void oom(void)
{
    die(1, "out of memory");
}

static long parse_num(const char *opt, const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) die(2, "invalid %s '%s' (expected %ld..%ld)", opt, s, lo, hi);
    return v;
}

static pile_tokenizer *open_tok(const char *spec)
{
    if (!spec) die(2, "missing --tokenizer (see pile-tok --help)");
    pile_tokenizer *tok;
    pile_err err;
    if (pile_tokenizer_open(&tok, spec, &err) < 0) die(1, "%s", err.msg);
    return tok;
}

/* A getopt failure (main sets opterr to 0): which option, then the command's
 * help. getopt leaves in optopt the option it took, or 0 for an unknown long one. */
static int bad_option(char **argv, const struct option *opts, const char *help)
{
    for (const struct option *o = opts; o->name; o++)
        if (optopt && o->val == optopt) {
            fprintf(stderr, "pile-tok: option '--%s' %s\n%s", o->name, o->has_arg ? "needs a value" : "takes no value",
                    help);
            return 2;
        }
    fprintf(stderr, "pile-tok: unknown option '%s'\n%s", argv[optind - 1], help);
    return 2;
}

static const char *input_path(const char *p)
{
    return !p || strcmp(p, "-") == 0 ? "/dev/stdin" : p;
}

/* Appends "[1,2,3]\n". */
static void put_ids(pile_buf *out, const uint32_t *ids, size_t n)
{
    if (pile_buf_reserve(out, n * 11 + 3)) oom();
    char *d = out->data + out->len;
    *d++ = '[';
    for (size_t i = 0; i < n; i++) {
        char tmp[10];
        int k = 0;
        uint32_t v = ids[i];
        do {
            tmp[k++] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        if (i) *d++ = ',';
        while (k) *d++ = tmp[--k];
    }
    *d++ = ']';
    *d++ = '\n';
    out->len = (size_t)(d - out->data);
}

static void write_all(FILE *f, const pile_buf *b)
{
    if (b->len && fwrite(b->data, 1, b->len, f) != b->len) die(1, "cannot write output: %s", strerror(errno));
}

/* ---------------------------------------------------------------- encode */

typedef struct batch_line {
    size_t off, len;
    int usable; /* a complete line (not too long, not cut) */
} batch_line;

typedef struct worker {
    uv_thread_t th;
    const pile_tokenizer *tok;
    pile_encoder *enc;
    pile_jsonl_parser *jp;
    pile_ids ids;
    pile_buf out;
    char *arena;
    const batch_line *lines;
    size_t first, count;
    int rc;
    pile_err err;
} worker;

static void encode_chunk(void *arg)
{
    worker *w = arg;
    w->out.len = 0;
    for (size_t i = w->first; i < w->first + w->count; i++) {
        const batch_line *l = &w->lines[i];
        pile_jsonl_doc doc;
        int sk = l->usable ? pile_jsonl_parse(w->jp, w->arena + l->off, l->len, &doc, NULL, 0) : (int)PILE_SKIP_CUT;
        if (sk < 0) {
            w->rc = pile_err_set(&w->err, sk, "out of memory");
            return;
        }
        if (sk != PILE_SKIP_NONE) {
            if (pile_buf_append(&w->out, "null\n", 5)) oom();
            continue;
        }
        w->ids.len = 0;
        if ((w->rc = pile_encoder_encode(w->enc, doc.text, doc.text_len, &w->ids, &w->err)) < 0) return;
        put_ids(&w->out, w->ids.data, w->ids.len);
    }
}

static int cmd_encode_text(pile_tokenizer *tok, const char *path)
{
    pile_buf raw = {0}, text = {0}, out = {0};
    pile_err err;
    if (strcmp(path, "/dev/stdin") == 0) {
        char buf[1 << 16];
        size_t n;
        while ((n = fread(buf, 1, sizeof buf, stdin)) > 0)
            if (pile_buf_append(&raw, buf, n)) oom();
        if (ferror(stdin)) die(1, "cannot read standard input: %s", strerror(errno));
    } else if (pile_fs_read_file(path, &raw, &err) < 0) {
        die(1, "%s", err.msg);
    }
    if (pile_utf8_repair(raw.data ? raw.data : "", raw.len, &text) < 0) oom();
    pile_encoder *enc = pile_encoder_create(tok);
    pile_ids ids = {0};
    if (!enc) oom();
    if (pile_encoder_encode(enc, text.data ? text.data : "", text.len, &ids, &err) < 0) die(1, "%s", err.msg);
    put_ids(&out, ids.data, ids.len);
    write_all(stdout, &out);
    pile_encoder_free(enc);
    pile_ids_free(&ids);
    pile_buf_free(&raw);
    pile_buf_free(&text);
    pile_buf_free(&out);
    return 0;
}

static int cmd_encode(int argc, char **argv)
{
    static const struct option opts[] = {{"tokenizer", required_argument, 0, 't'},
                                         {"text", no_argument, 0, 'x'},
                                         {"text-key", required_argument, 0, 'k'},
                                         {"threads", required_argument, 0, 'j'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *spec = NULL, *text_key = "text";
    int as_text = 0, threads = 1, c;
    while ((c = getopt_long(argc, argv, "t:j:h", opts, NULL)) != -1) {
        if (c == 't') spec = optarg;
        else if (c == 'x') as_text = 1;
        else if (c == 'k') text_key = optarg;
        else if (c == 'j') threads = (int)parse_num("--threads", optarg, 1, 256);
        else if (c == 'h') {
            fputs(help_encode, stdout);
            return 0;
        } else {
            return bad_option(argv, opts, help_encode);
        }
    }
    if (argc - optind > 1) die(2, "encode takes one INPUT (see pile-tok encode --help)");
    const char *path = input_path(optind < argc ? argv[optind] : NULL);
    pile_err err;
    pile_jsonl_parser *keys = pile_jsonl_parser_create();
    if (!keys) oom();
    if (pile_jsonl_parser_set_keys(keys, text_key, NULL, &err) < 0) die(2, "%s (--text-key)", err.msg);
    pile_jsonl_parser_free(keys);
    pile_tokenizer *tok = open_tok(spec);
    if (as_text) {
        cmd_encode_text(tok, path);
        pile_tokenizer_close(tok);
        return 0;
    }

    pile_lines *lr;
    pile_lines_opts lo = {.max_window = pile_lines_window_fit((uint64_t)64 << 20)};
    if (pile_lines_open(&lr, path, &lo, &err) < 0) die(1, "%s", err.msg);
    worker *w = calloc((size_t)threads, sizeof *w);
    if (!w) oom();
    for (int i = 0; i < threads; i++) {
        w[i].tok = tok;
        w[i].enc = pile_encoder_create(tok);
        w[i].jp = pile_jsonl_parser_create();
        if (!w[i].enc || !w[i].jp || pile_jsonl_parser_set_keys(w[i].jp, text_key, NULL, &err) < 0) oom();
    }
    /* Batches of lines copied into one arena (each with the parser's
     * padding), then cut into one contiguous chunk per thread. */
    const size_t batch_bytes = 8u << 20;
    pile_buf arena = {0};
    batch_line *lines = NULL;
    size_t n_lines = 0, cap_lines = 0;
    int done = 0;
    while (!done) {
        arena.len = 0;
        n_lines = 0;
        while (arena.len < batch_bytes) {
            pile_line line;
            int rc = pile_lines_next(lr, &line, &err);
            if (rc < 0) die(1, "%s", err.msg);
            if (rc == 0) {
                done = 1;
                break;
            }
            if (n_lines == cap_lines) {
                cap_lines = cap_lines ? cap_lines * 2 : 1024;
                lines = realloc(lines, cap_lines * sizeof *lines);
                if (!lines) oom();
            }
            int usable = line.status == PILE_LINE_COMPLETE;
            size_t len = usable ? line.len : 0;
            lines[n_lines].off = arena.len;
            lines[n_lines].len = len;
            lines[n_lines].usable = usable;
            n_lines++;
            if (pile_buf_reserve(&arena, len + PILE_LINES_PADDING)) oom();
            if (len) memcpy(arena.data + arena.len, line.data, len);
            memset(arena.data + arena.len + len, 0, PILE_LINES_PADDING);
            arena.len += len + PILE_LINES_PADDING;
        }
        if (!n_lines) break;
        size_t per = (n_lines + (size_t)threads - 1) / (size_t)threads, first = 0;
        int used = 0, rc;
        for (int i = 0; i < threads && first < n_lines; i++, used++) {
            w[i].arena = arena.data;
            w[i].lines = lines;
            w[i].first = first;
            w[i].count = n_lines - first < per ? n_lines - first : per;
            first += w[i].count;
            if (threads == 1) encode_chunk(&w[i]);
            else if ((rc = uv_thread_create(&w[i].th, encode_chunk, &w[i])) < 0)
                die(1, "cannot start a thread: %s", uv_strerror(rc));
        }
        for (int i = 0; i < used; i++) {
            if (threads > 1) uv_thread_join(&w[i].th);
            if (w[i].rc < 0) die(1, "%s", w[i].err.msg);
            write_all(stdout, &w[i].out);
        }
    }
    if (fflush(stdout) != 0) die(1, "cannot write output: %s", strerror(errno));
    for (int i = 0; i < threads; i++) {
        pile_encoder_free(w[i].enc);
        pile_jsonl_parser_free(w[i].jp);
        pile_ids_free(&w[i].ids);
        pile_buf_free(&w[i].out);
    }
    free(w);
    free(lines);
    pile_buf_free(&arena);
    pile_lines_close(lr);
    pile_tokenizer_close(tok);
    return 0;
}

/* ---------------------------------------------------------------- decode */

static int cmd_decode(int argc, char **argv)
{
    static const struct option opts[] = {{"tokenizer", required_argument, 0, 't'},
                                         {"json", no_argument, 0, 'J'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *spec = NULL;
    int as_json = 0, c;
    while ((c = getopt_long(argc, argv, "t:h", opts, NULL)) != -1) {
        if (c == 't') spec = optarg;
        else if (c == 'J') as_json = 1;
        else if (c == 'h') {
            fputs(help_decode, stdout);
            return 0;
        } else {
            return bad_option(argv, opts, help_decode);
        }
    }
    if (argc - optind > 1) die(2, "decode takes one IDS input (see pile-tok decode --help)");
    const char *path = input_path(optind < argc ? argv[optind] : NULL);
    pile_tokenizer *tok = open_tok(spec);
    pile_lines *lr;
    pile_err err;
    if (pile_lines_open(&lr, path, NULL, &err) < 0) die(1, "%s", err.msg);
    pile_ids ids = {0};
    pile_buf text = {0}, out = {0};
    pile_line line;
    int rc;
    while ((rc = pile_lines_next(lr, &line, &err)) > 0) {
        if (line.status != PILE_LINE_COMPLETE) die(1, "'%s' line %" PRIu64 ": incomplete line", path, line.lineno);
        const char *s = line.data;
        size_t n = line.len, i = 0;
        while (n && (s[n - 1] == '\r' || s[n - 1] == ' ')) n--;
        while (i < n && s[i] == ' ') i++;
        ids.len = 0;
        text.len = 0;
        out.len = 0;
        if (n - i == 4 && memcmp(s + i, "null", 4) == 0) {
            /* an empty text */
        } else {
            if (i >= n || s[i] != '[') die(1, "'%s' line %" PRIu64 ": not a JSON array of ids", path, line.lineno);
            i++;
            while (i < n && s[i] == ' ') i++;
            while (i < n && s[i] != ']') {
                if (s[i] < '0' || s[i] > '9') die(1, "'%s' line %" PRIu64 ": bad id at byte %zu", path, line.lineno, i + 1);
                uint64_t v = 0;
                while (i < n && s[i] >= '0' && s[i] <= '9') {
                    v = v * 10 + (uint64_t)(s[i++] - '0');
                    if (v > UINT32_MAX) die(1, "'%s' line %" PRIu64 ": id too large", path, line.lineno);
                }
                if (pile_ids_push(&ids, (uint32_t)v)) oom();
                while (i < n && (s[i] == ' ' || s[i] == ',')) i++;
            }
            if (i >= n) die(1, "'%s' line %" PRIu64 ": unterminated array", path, line.lineno);
            if (pile_tokenizer_decode(tok, ids.data, ids.len, &text, &err) < 0)
                die(1, "'%s' line %" PRIu64 ": %s", path, line.lineno, err.msg);
        }
        if (as_json) {
            if (pile_json_write_string(&out, text.data ? text.data : "", text.len)) oom();
        } else if (pile_buf_append(&out, text.data ? text.data : "", text.len)) {
            oom();
        }
        if (pile_buf_append(&out, "\n", 1)) oom();
        write_all(stdout, &out);
    }
    if (rc < 0) die(1, "%s", err.msg);
    if (fflush(stdout) != 0) die(1, "cannot write output: %s", strerror(errno));
    pile_ids_free(&ids);
    pile_buf_free(&text);
    pile_buf_free(&out);
    pile_lines_close(lr);
    pile_tokenizer_close(tok);
    return 0;
}

/* ----------------------------------------------------------------- train */

static int cmd_train(int argc, char **argv)
{
    static const struct option opts[] = {{"vocab-size", required_argument, 0, 'v'},
                                         {"min-frequency", required_argument, 0, 'm'},
                                         {"special", required_argument, 0, 's'},
                                         {"threads", required_argument, 0, 'j'},
                                         {"progress", no_argument, 0, 'p'},
                                         {"output", required_argument, 0, 'o'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    pile_bpe_train_opts o = {0};
    const char **specials = calloc((size_t)argc + 1, sizeof *specials);
    const char *outp = NULL;
    if (!specials) oom();
    int c;
    while ((c = getopt_long(argc, argv, "o:j:h", opts, NULL)) != -1) {
        if (c == 'v') o.vocab_size = (uint32_t)parse_num("--vocab-size", optarg, 257, 1L << 24);
        else if (c == 'm') o.min_frequency = (uint32_t)parse_num("--min-frequency", optarg, 1, 1L << 30);
        else if (c == 's') specials[o.n_specials++] = optarg;
        else if (c == 'j') o.threads = (int)parse_num("--threads", optarg, 1, 256);
        else if (c == 'p') o.progress = 1;
        else if (c == 'o') outp = optarg;
        else if (c == 'h') {
            fputs(help_train, stdout);
            free(specials);
            return 0;
        } else {
            free(specials);
            return bad_option(argv, opts, help_train);
        }
    }
    if (!o.vocab_size) die(2, "missing --vocab-size (see pile-tok train --help)");
    if (!outp) die(2, "missing -o OUT (see pile-tok train --help)");
    if (optind >= argc) die(2, "no INPUT files (see pile-tok train --help)");
    o.specials = o.n_specials ? specials : NULL;
    pile_err err;
    if (pile_bpe_train((const char *const *)(argv + optind), (size_t)(argc - optind), &o, outp, &err) < 0)
        die(1, "%s", err.msg);
    free(specials);
    return 0;
}

/* ------------------------------------------------------------------ info */

static int cmd_info(int argc, char **argv)
{
    static const struct option opts[] = {{"tokenizer", required_argument, 0, 't'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *spec = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "t:h", opts, NULL)) != -1) {
        if (c == 't') spec = optarg;
        else if (c == 'h') {
            fputs(help_info, stdout);
            return 0;
        } else {
            return bad_option(argv, opts, help_info);
        }
    }
    if (!spec && optind < argc) spec = argv[optind];
    pile_tokenizer *tok = open_tok(spec);
    uint8_t fp[PILE_TOKENIZER_FP_BYTES];
    pile_tokenizer_fingerprint(tok, fp);
    printf("kind: %s\nvocab_size: %u\neot_id: %u\n", pile_tokenizer_kind(tok), pile_tokenizer_vocab_size(tok),
           pile_tokenizer_eot_id(tok));
    printf("specials: %zu\n", pile_tokenizer_special_count(tok));
    for (size_t i = 0; i < pile_tokenizer_special_count(tok); i++) {
        uint32_t id;
        const char *s = pile_tokenizer_special(tok, i, &id);
        printf("  %u %s\n", id, s);
    }
    char fp_hex[2 * PILE_TOKENIZER_FP_BYTES + 1];
    pile_hex_encode(fp_hex, fp, PILE_TOKENIZER_FP_BYTES);
    printf("pattern: %s\nfingerprint: %s\n", pile_tokenizer_pattern(tok), fp_hex);
    pile_tokenizer_close(tok);
    return 0;
}

/* ----------------------------------------------------------------- bench */

typedef struct bench_job {
    uv_thread_t th;
    const pile_tokenizer *tok;
    const pile_buf *texts;
    const size_t *offs; /* text i is texts->data[offs[i]..offs[i+1]) */
    size_t first, count;
    uint64_t tokens;
    int rc;
    pile_err err;
} bench_job;

static void bench_run(void *arg)
{
    bench_job *j = arg;
    pile_encoder *enc = pile_encoder_create(j->tok);
    pile_ids ids = {0};
    j->tokens = 0;
    if (!enc) {
        j->rc = PILE_ENOMEM;
        return;
    }
    for (size_t i = j->first; i < j->first + j->count; i++) {
        ids.len = 0;
        j->rc = pile_encoder_encode(enc, j->texts->data + j->offs[i], j->offs[i + 1] - j->offs[i], &ids, &j->err);
        if (j->rc < 0) break;
        j->tokens += ids.len;
    }
    pile_ids_free(&ids);
    pile_encoder_free(enc);
}

static int cmd_bench(int argc, char **argv)
{
    static const struct option opts[] = {{"tokenizer", required_argument, 0, 't'},
                                         {"threads", required_argument, 0, 'j'},
                                         {"repeat", required_argument, 0, 'r'},
                                         {"text", no_argument, 0, 'x'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *spec = NULL;
    int threads = 1, repeat = 1, as_text = 0, c;
    while ((c = getopt_long(argc, argv, "t:j:h", opts, NULL)) != -1) {
        if (c == 't') spec = optarg;
        else if (c == 'j') threads = (int)parse_num("--threads", optarg, 1, 256);
        else if (c == 'r') repeat = (int)parse_num("--repeat", optarg, 1, 1000);
        else if (c == 'x') as_text = 1;
        else if (c == 'h') {
            fputs(help_bench, stdout);
            return 0;
        } else {
            return bad_option(argv, opts, help_bench);
        }
    }
    if (optind >= argc) die(2, "no INPUT files (see pile-tok bench --help)");
    pile_tokenizer *tok = open_tok(spec);
    pile_buf texts = {0}, raw = {0};
    size_t *offs = NULL, n = 0, cap = 0;
    pile_err err;
    pile_jsonl_parser *jp = pile_jsonl_parser_create();
    if (!jp) oom();
    for (int a = optind; a < argc; a++) {
        pile_lines *lr = NULL;
        if (as_text) {
            raw.len = 0;
            if (pile_fs_read_file(argv[a], &raw, &err) < 0) die(1, "%s", err.msg);
        } else if (pile_lines_open(&lr, argv[a], NULL, &err) < 0) {
            die(1, "%s", err.msg);
        }
        for (int first = 1;; first = 0) {
            pile_jsonl_doc doc = {0};
            if (as_text) {
                if (!first) break;
            } else {
                pile_line line;
                int rc = pile_lines_next(lr, &line, &err);
                if (rc < 0) die(1, "%s", err.msg);
                if (rc == 0) break;
                if (line.status != PILE_LINE_COMPLETE) continue;
                if (pile_jsonl_parse(jp, line.data, line.len, &doc, NULL, 0) != PILE_SKIP_NONE) continue;
            }
            if (n + 2 > cap) {
                cap = cap ? cap * 2 : 1024;
                offs = realloc(offs, cap * sizeof *offs);
                if (!offs) oom();
            }
            offs[n++] = texts.len;
            if (as_text) {
                if (pile_utf8_repair(raw.data ? raw.data : "", raw.len, &texts) < 0) oom();
            } else if (pile_buf_append(&texts, doc.text, doc.text_len)) {
                oom();
            }
        }
        pile_lines_close(lr);
    }
    if (!offs) die(1, "no texts in the inputs");
    offs[n] = texts.len;
    bench_job *jobs = calloc((size_t)threads, sizeof *jobs);
    if (!jobs) oom();
    /* Threads get contiguous runs of about equal bytes. */
    double best = 0;
    uint64_t tokens = 0;
    for (int r = 0; r < repeat; r++) {
        size_t i = 0;
        for (int k = 0; k < threads; k++) {
            size_t goal = texts.len / (size_t)threads * (size_t)(k + 1), start = i;
            while (i < n && (offs[i] < goal || k == threads - 1)) i++;
            jobs[k] = (bench_job){.tok = tok, .texts = &texts, .offs = offs, .first = start, .count = i - start};
        }
        double t0 = pile_now();
        int rc;
        for (int k = 0; k < threads; k++) {
            if (threads == 1) bench_run(&jobs[k]);
            else if ((rc = uv_thread_create(&jobs[k].th, bench_run, &jobs[k])) < 0)
                die(1, "cannot start a thread: %s", uv_strerror(rc));
        }
        tokens = 0;
        for (int k = 0; k < threads; k++) {
            if (threads > 1) uv_thread_join(&jobs[k].th);
            if (jobs[k].rc < 0) die(1, "%s", jobs[k].err.msg);
            tokens += jobs[k].tokens;
        }
        double dt = pile_now() - t0;
        if (r == 0 || dt < best) best = dt;
    }
    printf("texts: %zu\nbytes: %zu\ntokens: %" PRIu64 "\nthreads: %d\nseconds: %.4f\nMB/s: %.2f\ntokens/s: %.0f\n", n,
           texts.len, tokens, threads, best, (double)texts.len / best / 1e6, (double)tokens / best);
    free(jobs);
    free(offs);
    pile_buf_free(&texts);
    pile_buf_free(&raw);
    pile_jsonl_parser_free(jp);
    pile_tokenizer_close(tok);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage_text, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    argc--;
    argv++;
    opterr = 0; /* bad_option says it in pile-tok's words */
    if (strcmp(cmd, "encode") == 0) return cmd_encode(argc, argv);
    if (strcmp(cmd, "decode") == 0) return cmd_decode(argc, argv);
    if (strcmp(cmd, "train") == 0) return cmd_train(argc, argv);
    if (strcmp(cmd, "info") == 0) return cmd_info(argc, argv);
    if (strcmp(cmd, "bench") == 0) return cmd_bench(argc, argv);
    fprintf(stderr, "pile-tok: unknown command '%s'\n\n%s", cmd, usage_text);
    return 2;
}
