/* Allocation failure as a tested error path (after sqlite's fault-injection
 * tests): this program replaces malloc and friends with a countdown that
 * fails the Nth allocation and forwards everything else to glibc's
 * __libc_* functions, then runs each operation for N = 1, 2, 3, ... until
 * one run reaches its end without meeting the failure. Every run must return
 * 0 or PILE_ENOMEM (never crash, never another code) and free everything it
 * allocated (live allocations are counted through the same hooks).
 *
 * AddressSanitizer replaces malloc itself, so under it there is nothing to
 * hook and the program skips (exit 77); run it under valgrind once to check
 * leaks with libc's own accounting:
 *   valgrind --soname-synonyms=somalloc=nouserintercepts --leak-check=full \
 *       --error-exitcode=1 build/tests/test_faults
 * (valgrind still serves C++'s operator new itself, so the C++ paths are only
 * failed in the plain run). The regression cases at the end (inputs the
 * fuzzers found) run in every build, each in a child process so that a
 * crash is reported rather than fatal. */
#include <errno.h>
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "pile_buf.h"
#include "pile_json.h"
#include "pile_lines.h"
#include "pile_shards.h"
#include "pile_test.h"
#include "pile_tokenizer.h"

#if defined(__SANITIZE_ADDRESS__)
#define FAULTS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FAULTS_ASAN 1
#endif
#endif

/* Operations with more allocations than this are failed at every Nth
 * allocation up to FULL_PREFIX, then at about FULL_PREFIX more points spread
 * over the rest (a GPT-2 vocabulary is tens of thousands of allocations). */
#define FULL_PREFIX 1500

#ifndef FAULTS_ASAN

void *__libc_malloc(size_t n);
void *__libc_calloc(size_t n, size_t size);
void *__libc_realloc(void *p, size_t n);
void *__libc_memalign(size_t align, size_t n);
void __libc_free(void *p);

/* The hooks' state. Nothing here runs threads while armed; the counters are
 * still atomic so that a stray thread cannot tear them. */
static long fault_at;    /* 0: disarmed; else the allocation number that fails */
static long fault_calls; /* allocations seen since armed */
static int fault_hit;    /* the failure was handed out */
static long live;        /* allocations not yet freed (always counted) */

static int fault_now(void)
{
    if (!__atomic_load_n(&fault_at, __ATOMIC_RELAXED)) return 0;
    long k = __atomic_add_fetch(&fault_calls, 1, __ATOMIC_RELAXED);
    if (k != __atomic_load_n(&fault_at, __ATOMIC_RELAXED)) return 0;
    __atomic_store_n(&fault_hit, 1, __ATOMIC_RELAXED);
    return 1;
}

static void *counted(void *p)
{
    if (p) __atomic_add_fetch(&live, 1, __ATOMIC_RELAXED);
    return p;
}

void *malloc(size_t n)
{
    if (fault_now()) {
        errno = ENOMEM;
        return NULL;
    }
    return counted(__libc_malloc(n));
}

void *calloc(size_t n, size_t size)
{
    if (fault_now()) {
        errno = ENOMEM;
        return NULL;
    }
    return counted(__libc_calloc(n, size));
}

void *realloc(void *p, size_t n)
{
    if (!p) return malloc(n);
    if (n == 0) {
        free(p);
        return NULL;
    }
    if (fault_now()) {
        errno = ENOMEM;
        return NULL;
    }
    return __libc_realloc(p, n);
}

void free(void *p)
{
    if (p) __atomic_sub_fetch(&live, 1, __ATOMIC_RELAXED);
    __libc_free(p);
}

void *memalign(size_t align, size_t n)
{
    if (fault_now()) {
        errno = ENOMEM;
        return NULL;
    }
    return counted(__libc_memalign(align, n));
}

void *aligned_alloc(size_t align, size_t n)
{
    return memalign(align, n);
}

int posix_memalign(void **out, size_t align, size_t n)
{
    if (align < sizeof(void *) || (align & (align - 1))) return EINVAL;
    void *p = memalign(align, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}

/* What is running, for the crash handler. */
static const char *cur_op = "";
static long cur_n;

static void put_str(const char *s)
{
    ssize_t r = write(2, s, strlen(s));
    (void)r;
}

static void on_crash(int sig)
{
    char num[24];
    int i = (int)sizeof num - 1;
    num[i] = '\0';
    long n = cur_n;
    do {
        num[--i] = (char)('0' + n % 10);
        n /= 10;
    } while (n && i > 0);
    put_str("test_faults: crashed (signal) in '");
    put_str(cur_op);
    put_str("' with allocation ");
    put_str(num + i);
    put_str(" failing\n");
    signal(sig, SIG_DFL);
    raise(sig);
}

/* ------------------------------------------------------------ operations */

typedef struct ctx {
    char path[512];   /* an input file or folder */
    char dir[256];    /* a scratch folder */
    pile_ids ref;     /* ids from the first (fault-free) run */
    int have_ref;
    pile_err err;     /* the last run's error */
} ctx;

static int op_json(ctx *c)
{
    static const char doc[] = "{\"a\": [1, 2.5e3, {\"b\": \"caf\\u00e9\"}], \"t\": true, \"n\": null,\n"
                              " \"s\": \"x\", \"deep\": [[[[{\"k\": [\"v\"]}]]]]}";
    (void)c;
    pile_json *root;
    int rc = pile_json_parse(doc, sizeof doc - 1, "faults.json", &root, &c->err);
    if (rc) return rc;
    size_t n;
    const char *s = pile_json_str(pile_json_at(pile_json_at(pile_json_get(root, "a"), 2), 0), &n);
    rc = s && n == 5 && memcmp(s, "caf\xC3\xA9", 5) == 0 && pile_json_size(root) == 5 ? 0 : PILE_ECORRUPT;
    pile_json_free(root);
    return rc;
}

/* The first lines of a .jsonl or .jsonl.zst file, each parsed. */
static int op_lines(ctx *c)
{
    pile_lines *r;
    int rc = pile_lines_open(&r, c->path, NULL, &c->err);
    if (rc) return rc;
    pile_jsonl_parser *jp = pile_jsonl_parser_create();
    if (!jp) rc = PILE_ENOMEM;
    pile_line ln;
    int docs = 0;
    for (int i = 0; i < 8 && rc == 0; i++) {
        int got = pile_lines_next(r, &ln, &c->err);
        if (got <= 0) {
            rc = got;
            break;
        }
        if (ln.status != PILE_LINE_COMPLETE) continue;
        pile_jsonl_doc d;
        int pr = pile_jsonl_parse(jp, ln.data, ln.len, &d, NULL, 0);
        if (pr < 0) rc = pr;
        docs += pr == PILE_SKIP_NONE;
    }
    if (rc == 0 && docs == 0) rc = PILE_ECORRUPT; /* the inputs start with documents */
    pile_jsonl_parser_free(jp);
    pile_lines_close(r);
    return rc;
}

static int op_jsonl(ctx *c)
{
    static const char src[] = "{\"text\": \"lone \\ud800 surrogate and caf\xC3\xA9\", \"meta\": "
                              "{\"pile_set_name\": \"Pile-CC\", \"x\": [1, {\"y\": null}]}}";
    (void)c;
    pile_jsonl_parser *jp = pile_jsonl_parser_create();
    if (!jp) return PILE_ENOMEM;
    char line[sizeof src + PILE_LINES_PADDING];
    memcpy(line, src, sizeof src);
    pile_jsonl_doc d;
    char detail[128];
    int rc = pile_jsonl_parse(jp, line, sizeof src - 1, &d, detail, sizeof detail);
    if (rc == PILE_SKIP_NONE)
        rc = d.subset && d.subset_len == 7 && memcmp(d.subset, "Pile-CC", 7) == 0 &&
                     (d.repairs & PILE_REPAIR_SURROGATE) ? 0 : PILE_ECORRUPT;
    else if (rc > 0)
        rc = PILE_ECORRUPT;
    pile_jsonl_parser_free(jp);
    return rc;
}

/* Removes what a run left in the scratch folder (a failed run must leave
 * nothing); returns how many entries there were and names the first. */
static int dir_sweep(const char *dir, char *first, size_t cap)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    char path[600];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (n++ == 0) snprintf(first, cap, "%s", e->d_name);
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    return n;
}

static int op_shard(ctx *c)
{
    char path[300];
    snprintf(path, sizeof path, "%s/t.shard", c->dir);
    pile_shard_params p = {.max_length = 16, .vocab_size = 300, .eot_id = 256, .pad_id = 0, .pack = PILE_PACK_CONCAT,
                           .split = PILE_SPLIT_TRAIN};
    pile_shard_writer *w;
    int rc = pile_shard_writer_open(&w, path, &p, &c->err);
    if (rc) return rc;
    uint16_t a = 0, b = 0;
    rc = pile_shard_writer_subset(w, "Pile-CC", 7, &a, &c->err);
    if (!rc) rc = pile_shard_writer_subset(w, "Wikipedia (en)", 14, &b, &c->err);
    uint32_t toks[16];
    for (uint32_t i = 0; i < 16; i++) toks[i] = 'a' + i;
    for (uint32_t r = 0; r < 40 && !rc; r++) {
        pile_shard_doc docs[2] = {{0, r % 2 ? a : b, 0}, {9, a, 0}};
        rc = pile_shard_writer_add_row(w, toks, 12 + r % 4, docs, 1 + r % 2, docs[0].subset, &c->err);
    }
    if (!rc) rc = pile_shard_writer_finish(w, NULL, &c->err);
    pile_shard_writer_close(w);
    if (rc) return rc;
    pile_shard *s;
    rc = pile_shard_open(&s, path, &c->err);
    if (rc == 0) {
        rc = pile_shard_verify(s, &c->err);
        const char *nm = pile_shard_subset_name(s, b);
        if (!rc && (pile_shard_get_info(s)->row_count != 40 || !nm || strcmp(nm, "Wikipedia (en)") != 0))
            rc = PILE_ECORRUPT;
        pile_shard_close(s);
    }
    unlink(path);
    return rc;
}

/* Open a tokenizer, encode a text, decode it back; ids equal the first run's. */
static int op_tok(ctx *c)
{
    static const char text[] = "Hello world, it's caf\xC3\xA9 time:   tabs\tand\nlines <|endoftext|> \xF0\x9F\x98\x80!";
    pile_tokenizer *tok;
    int rc = pile_tokenizer_open(&tok, c->path[0] ? c->path : NULL, &c->err);
    if (rc) return rc;
    pile_encoder *enc = pile_encoder_create(tok);
    pile_ids ids = {0};
    pile_buf back = {0};
    if (!enc) rc = PILE_ENOMEM;
    if (!rc) rc = pile_encoder_encode(enc, text, sizeof text - 1, &ids, &c->err);
    if (!rc) rc = pile_tokenizer_decode(tok, ids.data, ids.len, &back, &c->err);
    if (!rc && (back.len != sizeof text - 1 || memcmp(back.data, text, back.len) != 0)) rc = PILE_ECORRUPT;
    if (!rc && c->have_ref &&
        (ids.len != c->ref.len || memcmp(ids.data, c->ref.data, ids.len * sizeof *ids.data) != 0))
        rc = PILE_EMISMATCH;
    if (!rc && !c->have_ref) {
        /* taken disarmed: the first run is fault-free */
        if (pile_ids_append(&c->ref, ids.data, ids.len)) rc = PILE_ENOMEM;
        c->have_ref = 1;
    }
    pile_buf_free(&back);
    pile_ids_free(&ids);
    pile_encoder_free(enc);
    pile_tokenizer_close(tok);
    return rc;
}

/* --------------------------------------------------------------- harness */

static void run_faults(const char *name, int (*op)(ctx *), ctx *c)
{
    TEST(name);
    cur_op = name;
    cur_n = 0;
    /* A first run unarmed: it must succeed, it sets up one-time state
     * (stdio, simdjson's implementation choice), and it counts allocations. */
    long before = live;
    __atomic_store_n(&fault_calls, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&fault_hit, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&fault_at, -1L, __ATOMIC_RELAXED); /* counts, never fails */
    int rc = op(c);
    __atomic_store_n(&fault_at, 0, __ATOMIC_RELAXED);
    long total = fault_calls;
    if (rc != 0) {
        PILE_FAIL_("%s fails without any fault: %d (%s)", name, rc, pile_strerror(rc));
        return;
    }
    (void)before;
    if (c->dir[0]) {
        char left[256];
        dir_sweep(c->dir, left, sizeof left);
    }
    long nomem = 0, tolerated = 0, runs = 0;
    int bad_code = 0, leaks = 0, files = 0;
    long step = 1;
    for (long n = 1;; n += step) {
        if (n > FULL_PREFIX && step == 1 && total > 2 * FULL_PREFIX) step = (total - FULL_PREFIX) / FULL_PREFIX;
        cur_n = n;
        long live0 = live;
        __atomic_store_n(&fault_calls, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&fault_hit, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&fault_at, n, __ATOMIC_RELAXED);
        rc = op(c);
        __atomic_store_n(&fault_at, 0, __ATOMIC_RELAXED);
        int hit = fault_hit;
        runs++;
        char left[256];
        int nleft = c->dir[0] ? dir_sweep(c->dir, left, sizeof left) : 0;
        /* report each kind of failure a few times, and keep going */
        if (rc != 0 && rc != PILE_ENOMEM && bad_code++ < 3)
            PILE_FAIL_("%s with allocation %ld failing returned %d (%s), not 0 or PILE_ENOMEM: %s", name, n, rc,
                       pile_strerror(rc), c->err.msg);
        if (rc == PILE_ENOMEM && !hit && bad_code++ < 3)
            PILE_FAIL_("%s returned PILE_ENOMEM with no allocation failing (n=%ld)", name, n);
        if (live != live0 && leaks++ < 3)
            PILE_FAIL_("%s with allocation %ld failing leaks %ld allocations (rc %d)", name, n, live - live0, rc);
        if (nleft > 0 && rc != 0 && files++ < 3)
            PILE_FAIL_("%s with allocation %ld failing returned %d but left %d files in its folder ('%s')", name, n,
                       rc, nleft, left);
        if (rc == PILE_ENOMEM) nomem++;
        else if (hit) tolerated++;
        if (!hit) break;
    }
    printf("# %s: %ld allocations, %ld runs, %ld PILE_ENOMEM, %ld recovered%s\n", name, total, runs, nomem, tolerated,
           step > 1 ? " (sampled after the first " "1500" ")" : "");
}

static int set_path(ctx *c, const char *rel)
{
    snprintf(c->path, sizeof c->path, "%s/%s", pile_test_shared(), rel);
    return access(c->path, R_OK) == 0;
}

/* A gzip copy of c->path at `to` (zlib's gzwrite), for the gzip reader's paths. */
static int gzip_copy(const ctx *c, const char *to)
{
    FILE *in = fopen(c->path, "rb");
    gzFile out = gzopen(to, "wb");
    int ok = in && out;
    char buf[1 << 16];
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0) ok = gzwrite(out, buf, (unsigned)n) == (int)n;
    if (in) fclose(in);
    if (out && gzclose(out) != Z_OK) ok = 0;
    return ok;
}

static int run_fault_cases(void)
{
    signal(SIGSEGV, on_crash);
    signal(SIGABRT, on_crash);
    signal(SIGBUS, on_crash);

    ctx c = {0};
    run_faults("json tree", op_json, &c);
    run_faults("jsonl parser", op_jsonl, &c);

    if (set_path(&c, "corpus/tricky.jsonl")) run_faults("lines tricky.jsonl", op_lines, &c);
    else printf("# corpus/tricky.jsonl absent\n");
    if (set_path(&c, "corpus/val.jsonl.zst")) run_faults("lines val.jsonl.zst", op_lines, &c);
    else printf("# corpus/val.jsonl.zst absent\n");
    char gzdir[256], gz[300];
    if (set_path(&c, "corpus/tricky.jsonl") && pile_test_tmpdir(gzdir, sizeof gzdir, "faults-gz")) {
        snprintf(gz, sizeof gz, "%s/tricky.jsonl.gz", gzdir);
        if (gzip_copy(&c, gz)) {
            snprintf(c.path, sizeof c.path, "%s", gz);
            run_faults("lines tricky.jsonl.gz", op_lines, &c);
        } else {
            PILE_FAIL_("cannot write '%s'", gz);
        }
        unlink(gz);
        rmdir(gzdir);
    }

    char dir[256];
    if (!pile_test_tmpdir(dir, sizeof dir, "faults")) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(c.dir, sizeof c.dir, "%s", dir);
    run_faults("shard write and verify", op_shard, &c);
    c.dir[0] = '\0';
    rmdir(dir);

    c.path[0] = '\0';
    run_faults("bytes tokenizer", op_tok, &c);
    pile_ids_free(&c.ref);
    c.have_ref = 0;
    if (set_path(&c, "fixtures/gpt2/r50k_base.tiktoken")) {
        run_faults("gpt2 tiktoken", op_tok, &c);
        pile_ids_free(&c.ref);
        c.have_ref = 0;
    }
    if (set_path(&c, "fixtures/gpt2") && set_path(&c, "fixtures/gpt2/vocab.bpe") && set_path(&c, "fixtures/gpt2")) {
        run_faults("gpt2 encoder.json + vocab.bpe", op_tok, &c);
        pile_ids_free(&c.ref);
        c.have_ref = 0;
    } else {
        printf("# fixtures/gpt2 absent\n");
    }
    return 0;
}

#endif /* FAULTS_ASAN */

/* ------------------------------------------------------ regression cases */

/* Overwrites the stack below the caller with a pattern, so that a callee
 * reading an uninitialised local sees garbage rather than a lucky zero. */
__attribute__((noinline)) static void dirty_stack(void)
{
    volatile unsigned char junk[32768];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = 0xA5;
}

/* Runs fn(arg) in a child; a crash or a failed assertion fails the case. */
static void in_child(const char *name, int (*fn)(const char *), const char *arg)
{
    TEST(name);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        PILE_FAIL_("cannot fork: %s", strerror(errno));
        return;
    }
    if (pid == 0) {
#ifndef FAULTS_ASAN
        signal(SIGSEGV, SIG_DFL); /* the fault cases' handler would name the wrong culprit */
        signal(SIGABRT, SIG_DFL);
        signal(SIGBUS, SIG_DFL);
#endif
        _exit(fn(arg));
    }
    int st = 0;
    if (waitpid(pid, &st, 0) != pid) {
        PILE_FAIL_("cannot wait for the child: %s", strerror(errno));
        return;
    }
    if (WIFSIGNALED(st)) PILE_FAIL_("%s: the child died of signal %d (%s)", name, WTERMSIG(st), strsignal(WTERMSIG(st)));
    else if (WEXITSTATUS(st)) PILE_FAIL_("%s: the child exited with %d (see its messages above)", name, WEXITSTATUS(st));
}

/* fuzz_shard, mode 3: a shard whose vocab_size needs 4-byte ids wider than
 * Megatron's int32 must be refused with PILE_ELIMIT by the export; it freed
 * an output file it had never opened (shards/megatron.c sets bin_open after
 * the vocab_size check failed). */
static int megatron_wide_vocab(const char *dir)
{
    char path[300], prefix[300];
    snprintf(path, sizeof path, "%s/wide.shard", dir);
    snprintf(prefix, sizeof prefix, "%s/wide", dir);
    pile_shard_params p = {.max_length = 4, .vocab_size = 3000000000u, .eot_id = 0, .pad_id = 0};
    pile_shard_writer *w;
    pile_err err;
    if (pile_shard_writer_open(&w, path, &p, &err)) {
        printf("# cannot write the shard: %s\n", err.msg);
        return 1;
    }
    uint16_t sub = 0;
    uint32_t toks[3] = {1, 2999999999u, 0};
    pile_shard_doc doc = {0, 0, 0};
    int rc = pile_shard_writer_subset(w, "Pile-CC", 7, &sub, &err);
    if (!rc) rc = pile_shard_writer_add_row(w, toks, 3, &doc, 1, sub, &err);
    if (!rc) rc = pile_shard_writer_finish(w, NULL, &err);
    pile_shard_writer_close(w);
    if (rc) {
        printf("# cannot write the shard: %s\n", err.msg);
        return 1;
    }
    const char *paths[1] = {path};
    dirty_stack();
    rc = pile_megatron_export(paths, 1, prefix, &err);
    unlink(path);
    if (rc != PILE_ELIMIT) {
        printf("# pile_megatron_export returned %d (%s), not PILE_ELIMIT\n", rc, err.msg);
        return 1;
    }
    char left[320];
    snprintf(left, sizeof left, "%s.bin.tmp", prefix);
    if (access(left, F_OK) == 0) {
        printf("# the refused export left '%s'\n", left);
        unlink(left);
        return 1;
    }
    return 0;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
#ifndef FAULTS_ASAN
    if (run_fault_cases()) return 1;
#else
    TEST("allocation-failure injection");
    printf("ok %d - allocation-failure injection # SKIP AddressSanitizer owns malloc here, so allocations cannot be "
           "failed on purpose (run the plain build, and valgrind for leaks)\n", pile_test_n);
    pile_test_cur = NULL;
#endif
    char dir[256];
    if (!pile_test_tmpdir(dir, sizeof dir, "faults")) {
        perror("mkdtemp");
        return 1;
    }
    in_child("megatron export refuses a vocabulary wider than int32 (fuzz regression)", megatron_wide_vocab, dir);
    rmdir(dir);
    return TEST_DONE();
}
