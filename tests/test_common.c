/* Tests of the common I/O and JSON layer: the line reader on the real corpus
 * (plain, zstd, gzip, truncated, over-long lines, zstd windows over the
 * bound), the JSON-lines parser (and its text and subset keys) against the
 * reference outcomes in ref/bad.r50k.jsonl, UTF-8 repair on the Unicode
 * standard's own examples, the tree and writer, and seeded random inputs
 * checked against the independent validator in json_internal.h. Every read
 * of a file by lines is repeated in block mode (read_lines), which must hand
 * out the same lines. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "json_internal.h"
#include "pile_buf.h"
#include "pile_fs.h"
#include "pile_hex.h"
#include "pile_json.h"
#include "pile_lines.h"
#include "pile_test.h"
#include "pile_utf8.h"

#define REQUIRE_OK(expr, errp)                                                 \
    do {                                                                       \
        int req_rc_ = (expr);                                                  \
        if (req_rc_ < 0) {                                                     \
            PILE_FAIL_("%s returned %d: %s", #expr, req_rc_, (errp)->msg);     \
            return;                                                            \
        }                                                                      \
    } while (0)

#define REQUIRE(cond)                                                          \
    do {                                                                       \
        if (!(cond)) {                                                         \
            PILE_FAIL_("required: %s", #cond);                                 \
            return;                                                            \
        }                                                                      \
    } while (0)

static char tmpdir[256];
static int have_corpus;

static const char *corpus(const char *name, pile_buf *b)
{
    b->len = 0;
    pile_buf_printf(b, "%s/corpus/%s", pile_test_shared(), name);
    return b->data;
}

static const char *tmp_path(const char *name, pile_buf *b)
{
    b->len = 0;
    pile_buf_printf(b, "%s/%s", tmpdir, name);
    return b->data;
}


/* Every line of a file, copied out: the test's own view, independent of the
 * reader's buffer lifetime. */
typedef struct line_rec {
    char *data; /* NULL for TOO_LONG */
    size_t len;
    uint64_t lineno, offset;
    int status;
    unsigned flags;
} line_rec;

typedef struct line_list {
    line_rec *v;
    size_t n, cap;
    int rc;        /* last pile_lines_next result (0, or negative) */
    int truncated;
    pile_err err;
} line_list;

static void lines_free(line_list *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->v[i].data);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static line_rec *lines_push(line_list *out, const pile_line *ln)
{
    if (out->n == out->cap) {
        out->cap = out->cap ? out->cap * 2 : 256;
        out->v = realloc(out->v, out->cap * sizeof *out->v);
    }
    line_rec *x = &out->v[out->n++];
    x->data = NULL;
    if (ln->data) {
        x->data = malloc(ln->len + 1);
        memcpy(x->data, ln->data, ln->len);
        x->data[ln->len] = 0;
    }
    x->len = ln->len;
    x->lineno = ln->lineno;
    x->offset = ln->offset;
    x->status = (int)ln->status;
    x->flags = ln->flags;
    return x;
}

/* Block mode's callback: copies the line out, checks that its padding lies
 * inside the block's buffer, and ends the block every `stop_every` lines. */
typedef struct block_read {
    line_list *out;
    const pile_buf *buf;
    size_t stop_every, in_block;
    int bad_padding;
} block_read;

static int block_line_cb(void *ctx, const pile_line *ln, pile_err *err)
{
    (void)err;
    block_read *b = ctx;
    lines_push(b->out, ln);
    if (ln->data && (ln->data < b->buf->data ||
                     ln->data + ln->len + PILE_LINES_PADDING > b->buf->data + b->buf->len + PILE_LINES_PADDING ||
                     b->buf->len + PILE_LINES_PADDING > b->buf->cap))
        b->bad_padding = 1;
    b->in_block++;
    return b->stop_every && b->in_block % b->stop_every == 0;
}

/* The whole file in block mode, blocks of `want` bytes. */
static int read_lines_block(const char *path, size_t max_line, size_t want, size_t stop_every, line_list *out,
                            size_t *blocks, int *bad_padding)
{
    memset(out, 0, sizeof *out);
    pile_lines_opts opts = {.max_line = max_line};
    pile_lines *r;
    int rc = pile_lines_open(&r, path, &opts, &out->err);
    if (rc < 0) return rc;
    pile_buf buf = {0};
    block_read b = {out, &buf, stop_every, 0, 0};
    *blocks = 0;
    do {
        b.in_block = 0;
        rc = pile_lines_next_block(r, &buf, want, block_line_cb, &b, &out->err);
        if (b.in_block) ++*blocks;
        /* after the last line of a block: zeros */
        if (rc >= 0 && buf.len && memcmp(buf.data + buf.len, (char[PILE_LINES_PADDING]){0}, PILE_LINES_PADDING))
            b.bad_padding = 1;
    } while (rc == 1);
    /* the end is sticky */
    if (rc == 0) {
        b.in_block = 0;
        if (pile_lines_next_block(r, &buf, want, block_line_cb, &b, &out->err) != 0 || b.in_block) b.bad_padding = 1;
    }
    out->rc = rc;
    out->truncated = pile_lines_truncated(r);
    *bad_padding = b.bad_padding;
    pile_buf_free(&buf);
    pile_lines_close(r);
    return 0;
}

/* The same lines, or, when both end in the same error, the lines of one a
 * prefix of the other's: how many lines come out before corrupt data
 * depends on how much is decoded at a time. */
static void same_lines(const line_list *a, const line_list *b, const char *what)
{
    int failed = a->rc < 0 && a->rc == b->rc;
    size_t n = failed && b->n < a->n ? b->n : a->n;
    int same = (failed || a->n == b->n) && a->rc == b->rc && a->truncated == b->truncated;
    for (size_t i = 0; same && i < n; i++) {
        const line_rec *x = &a->v[i], *y = &b->v[i];
        same = x->len == y->len && x->lineno == y->lineno && x->offset == y->offset && x->status == y->status &&
               x->flags == y->flags && !x->data == !y->data && (!x->data || !memcmp(x->data, y->data, x->len));
        if (!same) PILE_FAIL_("%s: line %zu differs (len %zu/%zu, status %d/%d, offset %llu/%llu)", what, i + 1,
                              x->len, y->len, x->status, y->status, (unsigned long long)x->offset,
                              (unsigned long long)y->offset);
    }
    if ((!failed && a->n != b->n) || a->rc != b->rc || a->truncated != b->truncated)
        PILE_FAIL_("%s: %zu lines, rc %d, truncated %d against %zu, %d, %d", what, a->n, a->rc, a->truncated, b->n,
                   b->rc, b->truncated);
}

/* Reads the whole file with pile_lines_next; returns the open error or 0.
 * Block mode must hand out the same lines whatever the block size (one
 * line, 4 KiB, the default 1 MiB; blocks ended early by the callback too),
 * which every test of the reader thus checks as well. */
static int read_lines(const char *path, size_t max_line, line_list *out)
{
    memset(out, 0, sizeof *out);
    pile_lines_opts opts = {.max_line = max_line};
    pile_lines *r;
    int rc = pile_lines_open(&r, path, &opts, &out->err);
    if (rc < 0) return rc;
    pile_line ln;
    while ((rc = pile_lines_next(r, &ln, &out->err)) == 1) lines_push(out, &ln);
    out->rc = rc;
    out->truncated = pile_lines_truncated(r);
    pile_lines_close(r);
    static const struct {
        size_t want, stop_every;
    } modes[] = {{1, 0}, {4096, 0}, {1u << 20, 0}, {1u << 20, 3}};
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        line_list b;
        size_t blocks;
        int bad_padding;
        char what[160];
        snprintf(what, sizeof what, "block mode (blocks of %zu bytes%s) hands out the same lines", modes[m].want,
                 modes[m].stop_every ? ", ended every 3 lines" : "");
        if (read_lines_block(path, max_line, modes[m].want, modes[m].stop_every, &b, &blocks, &bad_padding) < 0) {
            PILE_FAIL_("%s: cannot open: %s", what, b.err.msg);
            continue;
        }
        same_lines(out, &b, what);
        if (bad_padding) PILE_FAIL_("%s: a line's padding is not inside the block, or not zeros after the last", what);
        /* one-line blocks: as many as there are lines */
        if (modes[m].want == 1 && b.rc == 0 && blocks != b.n) PILE_FAIL_("%zu one-line blocks for %zu lines", blocks, b.n);
        lines_free(&b);
    }
    return 0;
}

static int write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

/* zstd-compresses src into out as `frames` concatenated frames, with a
 * checksum so that any damaged byte is detected. */
static void zstd_frames(const char *src, size_t n, int frames, pile_buf *out)
{
    ZSTD_CCtx *c = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
    out->len = 0;
    size_t done = 0;
    for (int f = 0; f < frames; f++) {
        size_t part = f == frames - 1 ? n - done : n / (size_t)frames;
        size_t bound = ZSTD_compressBound(part);
        pile_buf_reserve(out, bound);
        size_t k = ZSTD_compress2(c, out->data + out->len, bound, src + done, part);
        if (ZSTD_isError(k)) abort();
        out->len += k;
        done += part;
    }
    ZSTD_freeCCtx(c);
}

/* gzip-compresses src into out as `members` concatenated members (as pigz
 * and bgzip write them), by zlib's deflate with the gzip wrapper. */
static void gzip_members(const char *src, size_t n, int members, pile_buf *out)
{
    out->len = 0;
    size_t done = 0;
    for (int m = 0; m < members; m++) {
        size_t part = m == members - 1 ? n - done : n / (size_t)members;
        z_stream z;
        memset(&z, 0, sizeof z);
        if (deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) abort();
        size_t bound = deflateBound(&z, (uLong)part);
        pile_buf_reserve(out, bound);
        z.next_in = (Bytef *)(src + done);
        z.avail_in = (uInt)part;
        z.next_out = (Bytef *)(out->data + out->len);
        z.avail_out = (uInt)bound;
        if (deflate(&z, Z_FINISH) != Z_STREAM_END) abort();
        out->len += bound - z.avail_out;
        deflateEnd(&z);
        done += part;
    }
}

/* Copies a line into a buffer with the padding the parser may use. */
static char *padded(const char *s, size_t n, pile_buf *b)
{
    b->len = 0;
    pile_buf_reserve(b, n + PILE_LINES_PADDING);
    if (n) memcpy(b->data, s, n);
    memset(b->data + n, 'x', PILE_LINES_PADDING);
    return b->data;
}

/* ------------------------------------------------------------- utf8 */

static void expect_repair(const char *in, size_t n, const char *want, long subs)
{
    pile_buf out = {0};
    long got = pile_utf8_repair(in, n, &out);
    ASSERT_EQ(got, subs);
    ASSERT_EQ(out.len, strlen(want));
    if (out.len && out.len == strlen(want)) ASSERT_MEM_EQ(out.data, want, out.len);
    ASSERT(pile_utf8_valid(out.data, out.len));
    ASSERT_EQ(pile_utf8_valid(in, n), subs == 0);
    pile_buf_free(&out);
}

#define R "\xEF\xBF\xBD"

static void test_utf8(void)
{
    TEST("utf8: repair follows Unicode 15 Table 3-8 and section 3.9 examples");
    /* Table 3-8: 61 F1 80 80 E1 80 C2 62 80 63 80 BF 64 */
    expect_repair("a\xF1\x80\x80\xE1\x80\xC2" "b\x80" "c\x80\xBF" "d", 13, "a" R R R "b" R "c" R R "d", 6);
    /* the section's other examples: non-shortest forms, surrogates, beyond U+10FFFF */
    expect_repair("\xC0\xAF", 2, R R, 2);
    expect_repair("\xE0\x80\xAF", 3, R R R, 3);
    expect_repair("\xED\xA0\x80", 3, R R R, 3);
    expect_repair("\xF4\x90\x80\x80", 4, R R R R, 4);
    expect_repair("\xF8\x88\x80\x80\x80", 5, R R R R R, 5);
    /* truncated sequences: one U+FFFD for the whole maximal subpart */
    expect_repair("\xF0\x9F\x98", 3, R, 1);
    expect_repair("\xE2\x82X", 3, R "X", 1);
    expect_repair("\xF0\x9F\x98\xF0\x9F\x98\x80", 7, R "\xF0\x9F\x98\x80", 1);
    expect_repair("\xFF\xFE", 2, R R, 2);
    expect_repair("caf\xE9 na\xEFve", 10, "caf" R " na" R "ve", 2);
    /* valid input, including the boundaries of each length */
    expect_repair("plain ascii that is long enough for the 8-byte path", 51,
                  "plain ascii that is long enough for the 8-byte path", 0);
    expect_repair("\x7F\xC2\x80\xDF\xBF\xE0\xA0\x80\xED\x9F\xBF\xEE\x80\x80\xEF\xBF\xBF\xF0\x90\x80\x80\xF4\x8F\xBF\xBF",
                  25, "\x7F\xC2\x80\xDF\xBF\xE0\xA0\x80\xED\x9F\xBF\xEE\x80\x80\xEF\xBF\xBF\xF0\x90\x80\x80\xF4\x8F\xBF\xBF",
                  0);
    expect_repair("", 0, "", 0);
    ASSERT_EQ(pile_utf8_valid_prefix("abc\xC3\xA9\xC3", 6), 5);
    ASSERT_EQ(pile_utf8_valid_prefix("abcdefghij\x80", 11), 10);

    TEST("utf8: encode and decode round trip every boundary code point");
    static const unsigned cps[] = {0, 0x7F, 0x80, 0x7FF, 0x800, 0xD7FF, 0xE000, 0xFFFD, 0xFFFF, 0x10000, 0x10FFFF};
    for (size_t i = 0; i < sizeof cps / sizeof cps[0]; i++) {
        char b[4];
        size_t k = pile_utf8_encode(cps[i], b);
        ASSERT(pile_utf8_valid(b, k));
        unsigned back = 0;
        ASSERT_EQ(pile_utf8_decode(b, k, &back), k);
        ASSERT_EQ(back, cps[i]);
    }
}

/* ------------------------------------------------------------- lines */

static void test_lines_plain_vs_zstd(void)
{
    TEST("lines: plain and multi-frame .zst of the same bytes give identical lines");
    if (!have_corpus) return;
    pile_buf p = {0}, a = {0}, z = {0}, q = {0};
    pile_err err;
    /* bad.jsonl starts with a BOM and ends without '\n'; tricky.jsonl is appended after a '\n' */
    REQUIRE_OK(pile_fs_read_file(corpus("bad.jsonl", &p), &a, &err), &err);
    pile_buf_append(&a, "\n", 1);
    REQUIRE_OK(pile_fs_read_file(corpus("tricky.jsonl", &p), &a, &err), &err);
    zstd_frames(a.data, a.len, 3, &z);
    /* a skippable frame in front: still zstd, detected by magic, not by name */
    static const unsigned char skip[12] = {0x50, 0x2A, 0x4D, 0x18, 4, 0, 0, 0, 1, 2, 3, 4};
    pile_buf_append(&q, skip, sizeof skip);
    pile_buf_append(&q, z.data, z.len);
    REQUIRE(write_file(tmp_path("mix.jsonl", &p), a.data, a.len) == 0);
    REQUIRE(write_file(tmp_path("mix.bin", &p), q.data, q.len) == 0);
    line_list l1, l2;
    REQUIRE_OK(read_lines(tmp_path("mix.jsonl", &p), 0, &l1), &l1.err);
    REQUIRE_OK(read_lines(tmp_path("mix.bin", &p), 0, &l2), &l2.err);
    ASSERT_EQ(l1.rc, 0);
    ASSERT_EQ(l2.rc, 0);
    ASSERT_EQ(l1.n, 48 + 200);
    ASSERT_EQ(l1.n, l2.n);
    ASSERT_EQ(l1.truncated, 0);
    ASSERT_EQ(l2.truncated, 0);
    /* the lines re-joined with '\n' are the input minus its BOM */
    pile_buf join = {0};
    for (size_t i = 0; i < l1.n && i < l2.n; i++) {
        line_rec *x = &l1.v[i], *y = &l2.v[i];
        ASSERT_EQ(x->len, y->len);
        ASSERT_EQ(x->lineno, i + 1);
        ASSERT_EQ(y->lineno, i + 1);
        ASSERT_EQ(x->offset, y->offset);
        ASSERT_EQ(x->flags, y->flags);
        ASSERT_EQ(x->status, PILE_LINE_COMPLETE);
        ASSERT_EQ(y->status, PILE_LINE_COMPLETE);
        if (x->len == y->len) ASSERT_MEM_EQ(x->data, y->data, x->len);
        ASSERT_EQ(x->offset, join.len + 3);
        pile_buf_append(&join, x->data, x->len);
        if (i + 1 < l1.n) pile_buf_append(&join, "\n", 1);
    }
    ASSERT_EQ(l1.v[0].flags, PILE_LINE_HAD_BOM);
    ASSERT_EQ(l1.v[1].flags, 0);
    ASSERT_EQ(join.len + 4, a.len); /* BOM and the final '\n' of tricky.jsonl */
    ASSERT_MEM_EQ(join.data, a.data + 3, join.len);
    ASSERT(l1.v[45].len > 0 && l1.v[45].data[l1.v[45].len - 1] == '\r'); /* CRLF line keeps its '\r' */
    ASSERT_EQ(l1.v[46].len, 5156858);
    lines_free(&l1);
    lines_free(&l2);

    pile_lines *r;
    REQUIRE_OK(pile_lines_open(&r, tmp_path("mix.bin", &p), NULL, &err), &err);
    ASSERT_EQ(pile_lines_file_size(r), q.len);
    pile_line ln;
    while (pile_lines_next(r, &ln, &err) == 1) {
        ASSERT(pile_lines_bytes_read(r) <= q.len);
    }
    ASSERT_EQ(pile_lines_bytes_read(r), q.len);
    pile_lines_close(r);

    TEST("lines: empty file, lone newline, no final newline, missing file");
    REQUIRE(write_file(tmp_path("empty", &p), "", 0) == 0);
    REQUIRE_OK(read_lines(tmp_path("empty", &p), 0, &l1), &l1.err);
    ASSERT_EQ(l1.n, 0);
    ASSERT_EQ(l1.rc, 0);
    lines_free(&l1);
    REQUIRE(write_file(tmp_path("nl", &p), "\n\nab\n", 5) == 0);
    REQUIRE_OK(read_lines(tmp_path("nl", &p), 0, &l1), &l1.err);
    ASSERT_EQ(l1.n, 3);
    if (l1.n == 3) {
        ASSERT_EQ(l1.v[0].len, 0);
        ASSERT_EQ(l1.v[1].len, 0);
        ASSERT_STR_EQ(l1.v[2].data, "ab");
        ASSERT_EQ(l1.v[2].offset, 2);
    }
    lines_free(&l1);
    REQUIRE(write_file(tmp_path("bom-only", &p), "\xEF\xBB\xBF", 3) == 0);
    REQUIRE_OK(read_lines(tmp_path("bom-only", &p), 0, &l1), &l1.err);
    ASSERT_EQ(l1.n, 0);
    lines_free(&l1);
    pile_lines *none = NULL;
    int rc = pile_lines_open(&none, tmp_path("does-not-exist.jsonl", &p), NULL, &err);
    ASSERT_EQ(rc, PILE_ENOENT);
    ASSERT(none == NULL);
    ASSERT(strstr(err.msg, "cannot open '") == err.msg);
    ASSERT(strstr(err.msg, "does-not-exist.jsonl") != NULL);
    pile_buf_free(&p);
    pile_buf_free(&a);
    pile_buf_free(&z);
    pile_buf_free(&q);
    pile_buf_free(&join);
}

static void test_lines_max_line(void)
{
    TEST("lines: lines over max_line are reported with their true length and skipped");
    pile_buf p = {0}, a = {0}, z = {0};
    /* a 10 MB line is larger than the reader's window, so it is streamed past */
    size_t sizes[] = {5, 999, 1000, 1001, 10u << 20, 3, 2500};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        pile_buf_reserve(&a, sizes[i] + 1);
        for (size_t k = 0; k < sizes[i]; k++) a.data[a.len + k] = (char)('a' + (i + k) % 26);
        a.len += sizes[i];
        if (i + 1 < sizeof sizes / sizeof sizes[0]) pile_buf_append(&a, "\n", 1);
    }
    REQUIRE(write_file(tmp_path("long.jsonl", &p), a.data, a.len) == 0);
    zstd_frames(a.data, a.len, 2, &z);
    REQUIRE(write_file(tmp_path("long.jsonl.zst", &p), z.data, z.len) == 0);
    const char *names[] = {"long.jsonl", "long.jsonl.zst"};
    for (int f = 0; f < 2; f++) {
        line_list l;
        REQUIRE_OK(read_lines(tmp_path(names[f], &p), 1000, &l), &l.err);
        ASSERT_EQ(l.rc, 0);
        ASSERT_EQ(l.n, 7);
        uint64_t off = 0;
        for (size_t i = 0; i < l.n && i < 7; i++) {
            ASSERT_EQ(l.v[i].len, sizes[i]);
            ASSERT_EQ(l.v[i].lineno, i + 1);
            ASSERT_EQ(l.v[i].offset, off);
            int over = sizes[i] > 1000;
            ASSERT_EQ(l.v[i].status, over ? PILE_LINE_TOO_LONG : PILE_LINE_COMPLETE);
            ASSERT_EQ(l.v[i].data == NULL, over);
            if (!over) ASSERT_MEM_EQ(l.v[i].data, a.data + off, sizes[i]);
            off += sizes[i] + 1;
        }
        lines_free(&l);
    }

    TEST("lines: bad.jsonl's 5 MB line is too long for a 1000-byte cap, the rest still reads");
    if (have_corpus) {
        line_list l;
        REQUIRE_OK(read_lines(corpus("bad.jsonl", &p), 1000, &l), &l.err);
        ASSERT_EQ(l.n, 48);
        for (size_t i = 0; i < l.n; i++) {
            int over = i == 41 || i == 42 || i == 46; /* deep nesting, huge number, 5 MB */
            ASSERT_EQ(l.v[i].status, over ? PILE_LINE_TOO_LONG : PILE_LINE_COMPLETE);
        }
        if (l.n == 48) {
            ASSERT_EQ(l.v[46].len, 5156858);
            ASSERT_EQ(l.v[41].len, 200047);
            ASSERT_EQ(l.v[47].len, 115);
        }
        lines_free(&l);
    }
    pile_buf_free(&p);
    pile_buf_free(&a);
    pile_buf_free(&z);
}

static int fail_third(void *ctx, const pile_line *ln, pile_err *err)
{
    int *n = ctx;
    if (++*n == 3) return pile_err_set(err, PILE_ENOMEM, "out of memory at line %llu", (unsigned long long)ln->lineno);
    return 0;
}

static void test_lines_block(void)
{
    TEST("lines: block mode returns its callback's error; lines lie in the caller's buffer, whole");
    pile_buf p = {0}, buf = {0};
    pile_err err;
    REQUIRE(write_file(tmp_path("blk.jsonl", &p), "a\nbb\nccc\ndddd\n", 14) == 0);
    pile_lines *r;
    REQUIRE_OK(pile_lines_open(&r, tmp_path("blk.jsonl", &p), NULL, &err), &err);
    int n = 0;
    ASSERT_EQ(pile_lines_next_block(r, &buf, 1u << 20, fail_third, &n, &err), PILE_ENOMEM);
    ASSERT_STR_EQ(err.msg, "out of memory at line 3");
    pile_lines_close(r);
    /* blocks of 4 bytes: whole lines until they reach 4 bytes, the rest held back */
    line_list l = {0};
    block_read b = {&l, &buf, 0, 0, 0};
    REQUIRE_OK(pile_lines_open(&r, tmp_path("blk.jsonl", &p), NULL, &err), &err);
    ASSERT_EQ(pile_lines_next_block(r, &buf, 4, block_line_cb, &b, &err), 1);
    ASSERT_EQ(l.n, 2);
    ASSERT_EQ(buf.len, 14); /* one read, all of it, cut after "bb\n" */
    ASSERT_EQ(pile_lines_next_block(r, &buf, 4, block_line_cb, &b, &err), 1);
    ASSERT_EQ(l.n, 3);
    ASSERT_EQ(buf.len, 9); /* "ccc\ndddd\n" held back */
    ASSERT_EQ(pile_lines_next_block(r, &buf, 4, block_line_cb, &b, &err), 1);
    ASSERT_EQ(l.n, 4);
    if (l.n == 4) {
        ASSERT_STR_EQ(l.v[3].data, "dddd");
        ASSERT_EQ(l.v[3].offset, 9);
    }
    /* the end of the file shows on the next read */
    ASSERT_EQ(pile_lines_next_block(r, &buf, 4, block_line_cb, &b, &err), 0);
    ASSERT_EQ(l.n, 4);
    ASSERT_EQ(buf.len, 0);
    ASSERT_EQ(b.bad_padding, 0);
    pile_lines_close(r);
    lines_free(&l);
    pile_buf_free(&buf);
    pile_buf_free(&p);
}

static void test_lines_truncated(void)
{
    pile_buf p = {0}, a = {0}, z = {0}, tmp = {0};
    pile_err err;
    /* The file is val.jsonl.zst cut at byte 84078, inside the frame's third
     * block. zstd blocks decode whole, so 2 x 128 KiB come out: 12 complete
     * lines and 1791 bytes of the 13th (the `zstd -d` CLI recovers the same).
     * The corpus README's "187 complete lines" does not match the file. */
    TEST("lines: truncated.jsonl.zst gives the complete lines of val.jsonl.zst, then its cut tail");
    if (have_corpus) {
        line_list l, val;
        REQUIRE_OK(read_lines(corpus("truncated.jsonl.zst", &p), 0, &l), &l.err);
        REQUIRE_OK(read_lines(corpus("val.jsonl.zst", &p), 0, &val), &val.err);
        ASSERT_EQ(l.rc, 0);
        ASSERT(l.truncated);
        ASSERT_EQ(val.truncated, 0);
        size_t complete = 0;
        while (complete < l.n && l.v[complete].status == PILE_LINE_COMPLETE) complete++;
        ASSERT_EQ(complete, 12);
        ASSERT_EQ(l.n, complete + 1);
        REQUIRE(l.n <= val.n && l.n == complete + 1);
        for (size_t i = 0; i < l.n; i++) {
            ASSERT_EQ(l.v[i].offset, val.v[i].offset);
            ASSERT(l.v[i].len <= val.v[i].len);
            ASSERT_MEM_EQ(l.v[i].data, val.v[i].data, l.v[i].len);
        }
        line_rec *cut = &l.v[complete];
        ASSERT_EQ(cut->status, PILE_LINE_CUT);
        ASSERT_EQ(cut->len, 1791);
        ASSERT_EQ(cut->offset + cut->len, 262144);
        ASSERT(cut->len < val.v[complete].len);
        pile_jsonl_parser *jp = pile_jsonl_parser_create();
        for (size_t i = 0; i < l.n; i++) {
            pile_jsonl_doc d;
            int rc = pile_jsonl_parse(jp, padded(l.v[i].data, l.v[i].len, &tmp), l.v[i].len, &d, NULL, 0);
            ASSERT_EQ(rc, i < complete ? PILE_SKIP_NONE : PILE_SKIP_BAD_JSON);
        }
        pile_jsonl_parser_free(jp);
        lines_free(&l);
        lines_free(&val);
    }

    TEST("lines: a .zst cut anywhere returns a prefix of its lines and is marked truncated");
    for (int i = 0; i < 3000; i++) pile_buf_printf(&a, "{\"text\": \"line %d %llx\"}\n", i, (unsigned long long)pile_test_rng());
    zstd_frames(a.data, a.len, 3, &z);
    size_t cuts[24];
    size_t ncut = 0;
    cuts[ncut++] = 4;
    cuts[ncut++] = 5;
    cuts[ncut++] = 9;
    cuts[ncut++] = z.len - 1;
    cuts[ncut++] = z.len - 4; /* inside the checksum */
    while (ncut < 24) cuts[ncut++] = 4 + (size_t)(pile_test_rng() % (z.len - 4));
    for (size_t c = 0; c < ncut; c++) {
        REQUIRE(write_file(tmp_path("cut.zst", &p), z.data, cuts[c]) == 0);
        line_list l;
        REQUIRE_OK(read_lines(tmp_path("cut.zst", &p), 0, &l), &l.err);
        if (l.rc != 0) PILE_FAIL_("cut at %zu of %zu: %s", cuts[c], z.len, l.err.msg);
        ASSERT(l.truncated);
        size_t off = 0;
        for (size_t i = 0; i < l.n; i++) {
            ASSERT_EQ(l.v[i].offset, off);
            ASSERT(off + l.v[i].len <= a.len);
            ASSERT_MEM_EQ(l.v[i].data, a.data + off, l.v[i].len);
            int last = i + 1 == l.n;
            if (!last || l.v[i].status == PILE_LINE_COMPLETE) {
                ASSERT_EQ(l.v[i].status, PILE_LINE_COMPLETE);
                ASSERT_EQ(a.data[off + l.v[i].len], '\n');
            } else {
                ASSERT_EQ(l.v[i].status, PILE_LINE_CUT);
                ASSERT(l.v[i].len > 0);
                ASSERT(a.data[off + l.v[i].len] != '\n');
            }
            off += l.v[i].len + 1;
        }
        lines_free(&l);
    }
    /* the whole stream is not truncated */
    REQUIRE(write_file(tmp_path("cut.zst", &p), z.data, z.len) == 0);
    line_list full;
    REQUIRE_OK(read_lines(tmp_path("cut.zst", &p), 0, &full), &full.err);
    ASSERT_EQ(full.n, 3000);
    ASSERT_EQ(full.truncated, 0);
    lines_free(&full);

    TEST("lines: a damaged byte inside a frame is an error naming the file and offset");
    size_t bad_at = z.len / 2;
    z.data[bad_at] ^= 0x5A;
    REQUIRE(write_file(tmp_path("damaged.zst", &p), z.data, z.len) == 0);
    pile_lines *r;
    REQUIRE_OK(pile_lines_open(&r, tmp_path("damaged.zst", &p), NULL, &err), &err);
    pile_line ln;
    int rc;
    while ((rc = pile_lines_next(r, &ln, &err)) == 1) {
    }
    ASSERT_EQ(rc, PILE_ECORRUPT);
    ASSERT(strstr(err.msg, "damaged.zst") != NULL);
    ASSERT(strstr(err.msg, "compressed byte") != NULL);
    pile_lines_close(r);
    pile_buf_free(&p);
    pile_buf_free(&a);
    pile_buf_free(&z);
    pile_buf_free(&tmp);
}


static void test_lines_gzip(void)
{
    pile_buf p = {0}, a = {0}, g = {0};
    pile_err err;
    TEST("lines: a gzip file of two members gives the lines of the plain bytes");
    for (int i = 0; i < 4000; i++)
        pile_buf_printf(&a, "{\"text\": \"line %d %llx\"}%s\n", i, (unsigned long long)pile_test_rng(),
                        i % 7 == 0 ? "\r" : "");
    gzip_members(a.data, a.len, 2, &g);
    REQUIRE(write_file(tmp_path("two.jsonl.gz", &p), g.data, g.len) == 0);
    line_list l;
    REQUIRE_OK(read_lines(tmp_path("two.jsonl.gz", &p), 0, &l), &l.err);
    ASSERT_EQ(l.rc, 0);
    ASSERT_EQ(l.truncated, 0);
    ASSERT_EQ(l.n, 4000);
    size_t off = 0;
    for (size_t i = 0; i < l.n; i++) {
        ASSERT_EQ(l.v[i].offset, off);
        ASSERT_EQ(l.v[i].status, PILE_LINE_COMPLETE);
        ASSERT_MEM_EQ(l.v[i].data, a.data + off, l.v[i].len);
        off += l.v[i].len + 1;
    }
    ASSERT_EQ(off, a.len);
    lines_free(&l);
    pile_lines *r;
    REQUIRE_OK(pile_lines_open(&r, tmp_path("two.jsonl.gz", &p), NULL, &err), &err);
    ASSERT_STR_EQ(pile_lines_format(r), "gzip");
    pile_line ln;
    while (pile_lines_next(r, &ln, &err) == 1) ASSERT(pile_lines_bytes_read(r) <= g.len);
    ASSERT_EQ(pile_lines_bytes_read(r), g.len);
    /* zlib's state (7 KiB) and, when a member spans calls, its 32 KiB window */
    if (pile_lines_decoder_bytes(r) < 4096 || pile_lines_decoder_bytes(r) >= (64u << 10))
        PILE_FAIL_("gzip decoder bytes %zu", pile_lines_decoder_bytes(r));
    pile_lines_close(r);

    TEST("lines: a .gz cut anywhere returns a prefix of its lines and is marked truncated");
    size_t cuts[24];
    size_t ncut = 0;
    cuts[ncut++] = 3; /* inside the first header */
    cuts[ncut++] = 10;
    cuts[ncut++] = g.len - 1;
    cuts[ncut++] = g.len - 5; /* inside the second member's CRC and size */
    while (ncut < 24) cuts[ncut++] = 3 + (size_t)(pile_test_rng() % (g.len - 3));
    for (size_t c = 0; c < ncut; c++) {
        REQUIRE(write_file(tmp_path("cut.gz", &p), g.data, cuts[c]) == 0);
        REQUIRE_OK(read_lines(tmp_path("cut.gz", &p), 0, &l), &l.err);
        if (l.rc != 0) PILE_FAIL_("cut at %zu of %zu: %s", cuts[c], g.len, l.err.msg);
        if (!l.truncated) PILE_FAIL_("cut at %zu of %zu: not marked truncated", cuts[c], g.len);
        off = 0;
        for (size_t i = 0; i < l.n; i++) {
            ASSERT_EQ(l.v[i].offset, off);
            ASSERT(off + l.v[i].len <= a.len);
            ASSERT_MEM_EQ(l.v[i].data, a.data + off, l.v[i].len);
            if (i + 1 < l.n || l.v[i].status == PILE_LINE_COMPLETE) ASSERT_EQ(a.data[off + l.v[i].len], '\n');
            else ASSERT_EQ(l.v[i].status, PILE_LINE_CUT);
            off += l.v[i].len + 1;
        }
        lines_free(&l);
    }

    TEST("lines: a damaged .gz and bytes after the last member are errors naming the file and offset");
    pile_buf d = {0};
    pile_buf_append(&d, g.data, g.len);
    d.data[g.len / 3] ^= 0x5A;
    REQUIRE(write_file(tmp_path("damaged.gz", &p), d.data, d.len) == 0);
    REQUIRE_OK(read_lines(tmp_path("damaged.gz", &p), 0, &l), &l.err);
    ASSERT_EQ(l.rc, PILE_ECORRUPT);
    ASSERT(strstr(l.err.msg, "corrupt gzip data in '") != NULL);
    ASSERT(strstr(l.err.msg, "damaged.gz' near compressed byte") != NULL);
    lines_free(&l);
    d.len = 0;
    pile_buf_append(&d, g.data, g.len);
    pile_buf_append(&d, "trailing", 8);
    REQUIRE(write_file(tmp_path("trailing.gz", &p), d.data, d.len) == 0);
    REQUIRE_OK(read_lines(tmp_path("trailing.gz", &p), 0, &l), &l.err);
    ASSERT_EQ(l.rc, PILE_ECORRUPT);
    ASSERT_EQ(l.n, 4000); /* every line before the garbage */
    lines_free(&l);
    pile_buf_free(&d);
    pile_buf_free(&p);
    pile_buf_free(&a);
    pile_buf_free(&g);
}

/* One zstd frame of src with a window of 2^wlog that the header states
 * (no content size: a stream, as `zstd --long=31 < in` writes it). */
static void zstd_window_frame(const char *src, size_t n, int wlog, pile_buf *out)
{
    ZSTD_CCtx *c = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, 1);
    ZSTD_CCtx_setParameter(c, ZSTD_c_windowLog, wlog);
    size_t cap = ZSTD_compressBound(n) + 64;
    pile_buf_reserve(out, out->len + cap);
    ZSTD_outBuffer ob = {out->data + out->len, cap, 0};
    ZSTD_inBuffer ib = {src, n, 0};
    /* ZSTD_e_continue first: given all at once with e_end, zstd would learn
     * the size and shrink the window to it */
    if (ZSTD_isError(ZSTD_compressStream2(c, &ob, &ib, ZSTD_e_continue))) abort();
    size_t left;
    do {
        left = ZSTD_compressStream2(c, &ob, &ib, ZSTD_e_end);
        if (ZSTD_isError(left)) abort();
    } while (left);
    out->len += ob.pos;
    ZSTD_freeCCtx(c);
}

static void test_lines_window(void)
{
    pile_buf p = {0}, a = {0}, z = {0};
    pile_err err;
    TEST("lines: a zstd frame over max_window says what it needs and the flag that allows it, never corrupt");
    for (int i = 0; i < 300; i++) pile_buf_printf(&a, "{\"text\": \"window line %d\"}\n", i);
    size_t half = a.len / 2;
    while (a.data[half - 1] != '\n') half++;
    zstd_window_frame(a.data, half, 20, &z);
    size_t second = z.len;
    zstd_window_frame(a.data + half, a.len - half, 28, &z); /* 256 MiB: over zstd's default 128 */
    REQUIRE(write_file(tmp_path("window.jsonl.zst", &p), z.data, z.len) == 0);
    pile_lines_opts lo = {.max_window = (uint64_t)100 << 20, .window_flag = "--zstd-memory"};
    pile_lines *r;
    REQUIRE_OK(pile_lines_open(&r, tmp_path("window.jsonl.zst", &p), &lo, &err), &err);
    pile_line ln;
    int rc, n = 0;
    while ((rc = pile_lines_next(r, &ln, &err)) == 1) n++;
    pile_lines_close(r);
    ASSERT_EQ(rc, PILE_ELIMIT);
    ASSERT(n > 100 && n < 200); /* the first frame's lines came out */
    char want[256];
    snprintf(want, sizeof want, "its zstd frame at byte %zu needs a 256 MiB window (as zstd --long=28 writes), "
                                "over the 64 MiB allowed; allow it with --zstd-memory 256", second);
    if (!strstr(err.msg, want)) PILE_FAIL_("message '%s' lacks '%s'", err.msg, want);
    ASSERT(strstr(err.msg, "corrupt") == NULL);
    /* zstd's own default bound, and no flag to name */
    REQUIRE_OK(pile_lines_open(&r, tmp_path("window.jsonl.zst", &p), NULL, &err), &err);
    while ((rc = pile_lines_next(r, &ln, &err)) == 1) {
    }
    pile_lines_close(r);
    ASSERT_EQ(rc, PILE_ELIMIT);
    ASSERT(strstr(err.msg, "over the 128 MiB allowed") != NULL && strstr(err.msg, "allow it with") == NULL);

    TEST("lines: within max_window the same frames read whole, the decoder's memory counted");
    lo.max_window = (uint64_t)256 << 20;
    line_list l;
    memset(&l, 0, sizeof l);
    REQUIRE_OK(pile_lines_open(&r, tmp_path("window.jsonl.zst", &p), &lo, &err), &err);
    size_t off = 0;
    n = 0;
    while ((rc = pile_lines_next(r, &ln, &err)) == 1) {
        ASSERT_EQ(ln.offset, off);
        ASSERT_MEM_EQ(ln.data, a.data + off, ln.len);
        off += ln.len + 1;
        n++;
    }
    ASSERT_EQ(rc, 0);
    ASSERT_EQ(n, 300);
    ASSERT_EQ(off, a.len);
    /* the content is small, but the decoder holds its buffers for the stated window */
    ASSERT(pile_lines_decoder_bytes(r) >= ((size_t)256 << 20));
    pile_lines_close(r);

    TEST("lines: check_window reads the first frame's header, past skippable frames");
    pile_buf q = {0};
    static const unsigned char skip[12] = {0x50, 0x2A, 0x4D, 0x18, 4, 0, 0, 0, 1, 2, 3, 4};
    pile_buf_append(&q, skip, sizeof skip);
    zstd_window_frame(a.data, a.len, 28, &q);
    REQUIRE(write_file(tmp_path("big-first.zst", &p), q.data, q.len) == 0);
    lo.max_window = (uint64_t)128 << 20;
    rc = pile_lines_check_window(tmp_path("big-first.zst", &p), &lo, &err);
    ASSERT_EQ(rc, PILE_ELIMIT);
    ASSERT(strstr(err.msg, "frame at byte 12 needs a 256 MiB window") != NULL);
    lo.max_window = (uint64_t)256 << 20;
    ASSERT_EQ(pile_lines_check_window(tmp_path("big-first.zst", &p), &lo, &err), 0);
    /* the first frame of window.jsonl.zst is small: the check passes, reading finds the second */
    lo.max_window = (uint64_t)1 << 20;
    ASSERT_EQ(pile_lines_check_window(tmp_path("window.jsonl.zst", &p), &lo, &err), 0);
    ASSERT_EQ(pile_lines_check_window(tmp_path("two.jsonl.gz", &p), &lo, &err), 0);
    /* a header asking for 2^41 (the format's largest): no bound allows it, and no flag is offered */
    static const unsigned char huge[] = {0x28, 0xB5, 0x2F, 0xFD, 0x00, 0xF8, 0, 0, 0, 0, 0, 0};
    REQUIRE(write_file(tmp_path("huge.zst", &p), huge, sizeof huge) == 0);
    lo.max_window = (uint64_t)1 << 31;
    ASSERT_EQ(pile_lines_check_window(tmp_path("huge.zst", &p), &lo, &err), PILE_ELIMIT);
    ASSERT(strstr(err.msg, "asks for a 2097152 MiB window, more than the 2048 MiB any zstd decoder accepts") != NULL);
    REQUIRE_OK(pile_lines_open(&r, tmp_path("huge.zst", &p), &lo, &err), &err);
    ASSERT_EQ(pile_lines_next(r, &ln, &err), PILE_ELIMIT);
    ASSERT(strstr(err.msg, "more than the 2048 MiB any zstd decoder accepts") != NULL);
    pile_lines_close(r);
    pile_buf_free(&q);
    pile_buf_free(&p);
    pile_buf_free(&a);
    pile_buf_free(&z);
}

/* ------------------------------------------------------------- jsonl */

/* The skip reason each bad-cases.tsv case must give (NONE: a document). */
static int expected_reason(const char *c)
{
    static const struct {
        const char *prefix;
        int reason;
    } map[] = {
        {"blank", PILE_SKIP_BLANK},          {"whitespace-only", PILE_SKIP_BLANK},
        {"truncated-", PILE_SKIP_BAD_JSON},  {"missing-text", PILE_SKIP_NO_TEXT},
        {"text-", PILE_SKIP_TEXT_NOT_STRING}, {"top-level-", PILE_SKIP_NOT_OBJECT},
        {"bad-escape-", PILE_SKIP_BAD_JSON}, {"raw-", PILE_SKIP_BAD_JSON},
        {"nul-after-object", PILE_SKIP_BAD_JSON}, {"trailing-", PILE_SKIP_BAD_JSON},
        {"two-objects", PILE_SKIP_BAD_JSON}, {"single-quotes", PILE_SKIP_BAD_JSON},
        {"unquoted-key", PILE_SKIP_BAD_JSON}, {"nan-in-meta", PILE_SKIP_BAD_JSON},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strncmp(c, map[i].prefix, strlen(map[i].prefix)) == 0) return map[i].reason;
    return PILE_SKIP_NONE;
}

/* The repaired texts, decoded from the reference ids of ref/bad.r50k.jsonl. */
static const char *expected_text(const char *c)
{
    static const struct {
        const char *name, *text;
    } map[] = {
        {"bom-first-line", "a UTF-8 BOM precedes this first object"},
        {"invalid-utf8-ff", "bad byte " R R " here"},
        {"invalid-utf8-overlong", "overlong slash " R R " and nul " R R},
        {"invalid-utf8-truncated-seq", "cut euro " R " then text"},
        {"invalid-utf8-cesu-surrogates", "cesu-8 smiley " R R R R R R},
        {"invalid-utf8-latin1", "latin-1 caf" R " na" R "ve"},
        {"invalid-utf8-beyond-10ffff", "code point 0x110000 " R R R R " and F5 " R R R R},
        {"lone-high-surrogate", "lone " R " high"},
        {"lone-low-surrogate", "lone " R " low"},
        {"high-then-non-low", "high then A " R "A"},
        {"reversed-pair", "reversed " R R},
        {"high-at-end", "ends with high " R},
        {"high-then-raw-char", "high then raw " R "x"},
        {"duplicate-text-key", "second"},
        {"deep-nesting", "deeply nested meta"},
        {"huge-number", "huge number in meta"},
        {"meta-not-object", "meta is a string"},
        {"no-meta", "no meta at all"},
        {"crlf", "line ends with CRLF"},
        {"no-final-newline", "final line without a trailing newline"},
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(c, map[i].name) == 0) return map[i].text;
    return NULL;
}

static void test_jsonl_bad(void)
{
    TEST("jsonl: every line of bad.jsonl gives the reference's document/null outcome and the expected reason");
    if (!have_corpus) return;
    pile_buf p = {0}, tsv = {0};
    pile_err err;
    line_list bad, ref;
    REQUIRE_OK(read_lines(corpus("bad.jsonl", &p), 0, &bad), &bad.err);
    REQUIRE_OK(read_lines(corpus("ref/bad.r50k.jsonl", &p), 0, &ref), &ref.err);
    REQUIRE_OK(pile_fs_read_file(corpus("bad-cases.tsv", &p), &tsv, &err), &err);
    pile_buf_append(&tsv, "", 1);
    REQUIRE(bad.n == 48 && ref.n == 48);
    char *cases[49] = {0};
    for (char *save = NULL, *row = strtok_r(tsv.data, "\n", &save); row; row = strtok_r(NULL, "\n", &save)) {
        int no = atoi(row);
        char *t = strchr(row, '\t');
        if (no >= 1 && no <= 48 && t) {
            cases[no] = t + 1;
            *strchr(t + 1, '\t') = 0;
        }
    }
    pile_jsonl_parser *jp = pile_jsonl_parser_create();
    REQUIRE(jp != NULL);
    for (size_t i = 0; i < 48; i++) {
        const char *c = cases[i + 1];
        REQUIRE(c != NULL);
        pile_jsonl_doc d;
        char detail[160];
        /* the reader's own buffer: its padding contract is part of what is tested */
        int rc = pile_jsonl_parse(jp, bad.v[i].data, bad.v[i].len, &d, detail, sizeof detail);
        int ref_doc = strcmp(ref.v[i].data, "null") != 0;
        if (i == 0) ref_doc = 1; /* the reference kept the BOM; pile_lines strips it */
        if ((rc == PILE_SKIP_NONE) != ref_doc)
            PILE_FAIL_("line %zu (%s): got %s (%s), reference has %s", i + 1, c, pile_skip_name(rc), detail,
                       ref_doc ? "ids" : "null");
        if (rc != expected_reason(c))
            PILE_FAIL_("line %zu (%s): reason %s, want %s", i + 1, c, pile_skip_name(rc),
                       pile_skip_name(expected_reason(c)));
        if (rc != PILE_SKIP_NONE) {
            ASSERT(detail[0] != 0);
            continue;
        }
        ASSERT(pile_utf8_valid(d.text, d.text_len));
        const char *want = expected_text(c);
        if (want && (d.text_len != strlen(want) || memcmp(d.text, want, d.text_len) != 0))
            PILE_FAIL_("line %zu (%s): text \"%.*s\", want \"%s\"", i + 1, c, (int)d.text_len, d.text, want);
        unsigned rep = strncmp(c, "invalid-utf8", 12) == 0 ? PILE_REPAIR_UTF8 : 0;
        if (i >= 21 && i <= 26) rep = PILE_REPAIR_SURROGATE;
        ASSERT_EQ(d.repairs, rep);
        int meta_subset = strcmp(c, "meta-not-object") != 0 && strcmp(c, "no-meta") != 0 &&
                          strcmp(c, "deep-nesting") != 0 && strcmp(c, "huge-number") != 0 &&
                          strcmp(c, "five-mb-line") != 0;
        if (meta_subset) {
            ASSERT(d.subset != NULL && d.subset_len == 7 && memcmp(d.subset, "Pile-CC", 7) == 0);
        }
        if (strcmp(c, "meta-not-object") == 0 || strcmp(c, "no-meta") == 0) ASSERT(d.subset == NULL);
        if (strcmp(c, "five-mb-line") == 0) ASSERT(d.text_len > 4000000);
    }
    pile_jsonl_parser_free(jp);

    TEST("jsonl: skip details name the problem and its byte offset");
    jp = pile_jsonl_parser_create();
    struct {
        const char *line, *detail;
    } dt[] = {
        {"{\"text\": \"a\tb\"}", "unescaped control character in string at byte 11"},
        {"{\"text\": \"x\"} trailing", "unexpected data after the JSON value at byte 14"},
        {"{\"text\": \"x\",}", "expected a string key at byte 13"},
        {"{\"text\": \"\\x41\"}", "invalid escape in string at byte 10"},
        {"[1, 2]", "top-level value is an array, not an object"},
        {"{\"text\": 5}", "\"text\" is a number, not a string"},
        {"{\"meta\": {}}", "no \"text\" member"},
        {" \t\r", "blank line"},
        /* offsets count the caller's bytes, not those of the UTF-8-repaired copy */
        {"{\"text\": \"\xFF\xFF\xFF\xFF\", \"x\": tru}", "unexpected character, expected a value at byte 22"},
        {"{\"text\": \"\xE2\x82\", \"x\": 1,}", "expected a string key at byte 22"},
    };
    for (size_t i = 0; i < sizeof dt / sizeof dt[0]; i++) {
        pile_jsonl_doc d;
        char detail[160];
        size_t n = strlen(dt[i].line);
        int rc = pile_jsonl_parse(jp, padded(dt[i].line, n, &p), n, &d, detail, sizeof detail);
        ASSERT(rc > 0);
        ASSERT_STR_EQ(detail, dt[i].detail);
    }
    pile_jsonl_parser_free(jp);
    lines_free(&bad);
    lines_free(&ref);
    pile_buf_free(&p);
    pile_buf_free(&tsv);
}

static void test_jsonl_more(void)
{
    TEST("jsonl: lenient numbers, unlimited depth, escapes, key spellings");
    pile_jsonl_parser *jp = pile_jsonl_parser_create();
    pile_buf p = {0}, big = {0};
    struct {
        const char *line;
        int rc;
        const char *text;
    } cases[] = {
        {"{\"text\": \"a\", \"n\": [1e999999, -1e-999999, 123456789012345678901234567890, -0, 0.5E+3]}", 0, "a"},
        {"{\"text\": \"a\", \"n\": 01}", PILE_SKIP_BAD_JSON, NULL},
        {"{\"text\": \"a\", \"n\": 1.}", PILE_SKIP_BAD_JSON, NULL},
        {"{\"text\": \"a\", \"n\": -}", PILE_SKIP_BAD_JSON, NULL},
        {"{\"text\": \"a\", \"n\": 1e999999 2}", PILE_SKIP_BAD_JSON, NULL},
        {"{\"text\": \"a\", \"n\": [1e999999, NaN]}", PILE_SKIP_BAD_JSON, NULL},
        {"{\"text\": \"a\", \"n\": [1e999999, \"\\x\"]}", PILE_SKIP_BAD_JSON, NULL},
        {"{\"text\": \"pair \\ud83d\\ude00 ok\"}", 0, "pair \xF0\x9F\x98\x80 ok"},
        {"{\"text\": \"\\\\ud800 is text\"}", 0, "\\ud800 is text"},
        {"{\"text\": \"\\ud800\\ud800\\udc00\"}", 0, R "\xF0\x90\x80\x80"},
        {"{\"text\": \"\\ud800\", \"n\": 1e999}", 0, R},
        {"{\"text\": \"\\ud800\\x\"}", PILE_SKIP_BAD_JSON, NULL},
        {"{\"te\\u0078t\": \"escaped key\"}", 0, "escaped key"},
        {"{\"text\": \"nul \\u0000 inside\"}", 0, NULL},
        {"{\"text\": \"\xFF\", \"n\": 1e999, \"s\": \"\\udc00\"}", 0, R},
        {"\xEF\xBB\xBF{\"text\": \"a BOM inside the line is not JSON\"}", PILE_SKIP_BAD_JSON, NULL},
        {"{\"text\": \"a\"}\r", 0, "a"},
        {"{\"Text\": \"a\"}", PILE_SKIP_NO_TEXT, NULL},
        {"{\"text\": \"a\", \"meta\": {\"pile_set_name\": \"A\", \"pile_set_name\": 3}}", 0, "a"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pile_jsonl_doc d;
        char detail[160];
        size_t n = strlen(cases[i].line);
        int rc = pile_jsonl_parse(jp, padded(cases[i].line, n, &p), n, &d, detail, sizeof detail);
        if (rc != cases[i].rc) PILE_FAIL_("case %zu: %s (%s)", i, pile_skip_name(rc), detail);
        if (rc == 0 && cases[i].text) {
            if (d.text_len != strlen(cases[i].text) || memcmp(d.text, cases[i].text, d.text_len) != 0)
                PILE_FAIL_("case %zu: text \"%.*s\"", i, (int)d.text_len, d.text);
        }
        if (i == 13 && rc == 0) ASSERT_EQ(d.text_len, 12);
        if (i == 18 && rc == 0) ASSERT(d.subset == NULL);
    }
    /* 1,000,000 nested arrays (the header promises at least that) and the parser still
     * works on a small line afterwards */
    size_t depth = 1000000;
    pile_buf_append_str(&big, "{\"text\": \"deep\", \"meta\": ");
    pile_buf_reserve(&big, 2 * depth + 64);
    memset(big.data + big.len, '[', depth);
    big.len += depth;
    memset(big.data + big.len, ']', depth);
    big.len += depth;
    pile_buf_append_str(&big, "}");
    pile_jsonl_doc d;
    size_t n = big.len;
    int rc = pile_jsonl_parse(jp, padded(big.data, n, &p), n, &d, NULL, 0);
    ASSERT_EQ(rc, 0);
    if (rc == 0) ASSERT(d.text_len == 4 && memcmp(d.text, "deep", 4) == 0);
    big.data[big.len - 2] = ' '; /* one ']' short */
    rc = pile_jsonl_parse(jp, padded(big.data, n, &p), n, &d, NULL, 0);
    ASSERT_EQ(rc, PILE_SKIP_BAD_JSON);
    rc = pile_jsonl_parse(jp, padded("{\"text\":\"ok\"}", 13, &p), 13, &d, NULL, 0);
    ASSERT_EQ(rc, 0);
    pile_jsonl_parser_free(jp);
    pile_buf_free(&p);
    pile_buf_free(&big);
}

static void test_jsonl_keys(void)
{
    TEST("jsonl: text and subset under other members, dotted paths, the last duplicate wins");
    pile_jsonl_parser *jp = pile_jsonl_parser_create();
    pile_buf p = {0};
    pile_err err;
    struct {
        const char *text_key, *subset_key, *line;
        int rc;
        const char *text, *subset, *detail;
    } cases[] = {
        {"content", "lang", "{\"content\": \"c\", \"text\": \"t\", \"lang\": \"Go\"}", 0, "c", "Go", NULL},
        {"content", "lang", "{\"text\": \"t\"}", PILE_SKIP_NO_TEXT, NULL, NULL, "no \"content\" member"},
        {"content", "lang", "{\"content\": 5}", PILE_SKIP_TEXT_NOT_STRING, NULL, NULL, "\"content\" is a number, not a string"},
        {"doc.body", "doc.meta.set", "{\"doc\": {\"body\": \"b\", \"meta\": {\"set\": \"S\"}}}", 0, "b", "S", NULL},
        {"doc.body", "doc.meta.set", "{\"doc\": {\"body\": \"old\"}, \"doc\": {\"body\": \"new\"}}", 0, "new", NULL, NULL},
        {"doc.body", "doc.meta.set", "{\"doc\": \"body\"}", PILE_SKIP_NO_TEXT, NULL, NULL, "no \"doc.body\" member"},
        {"doc.body", "doc.meta.set", "{\"doc\": {\"body\": \"b\", \"meta\": {\"set\": 7}}}", 0, "b", NULL, NULL},
        {"text", "", "{\"text\": \"t\", \"meta\": {\"pile_set_name\": \"P\"}}", 0, "t", NULL, NULL},
        {"text", NULL, "{\"text\": \"t\", \"meta\": {\"pile_set_name\": \"P\"}}", 0, "t", NULL, NULL},
        {"text", "meta.pile_set_name", "{\"text\": \"t\", \"meta\": {\"pile_set_name\": \"P\"}}", 0, "t", "P", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        REQUIRE_OK(pile_jsonl_parser_set_keys(jp, cases[i].text_key, cases[i].subset_key, &err), &err);
        pile_jsonl_doc d;
        char detail[160];
        size_t n = strlen(cases[i].line);
        int rc = pile_jsonl_parse(jp, padded(cases[i].line, n, &p), n, &d, detail, sizeof detail);
        if (rc != cases[i].rc) PILE_FAIL_("case %zu: %s (%s)", i, pile_skip_name(rc), detail);
        if (rc == 0 && (d.text_len != strlen(cases[i].text) || memcmp(d.text, cases[i].text, d.text_len)))
            PILE_FAIL_("case %zu: text \"%.*s\"", i, (int)d.text_len, d.text);
        if (rc == 0 && !cases[i].subset && d.subset) PILE_FAIL_("case %zu: a subset where none is", i);
        if (rc == 0 && cases[i].subset &&
            (!d.subset || d.subset_len != strlen(cases[i].subset) || memcmp(d.subset, cases[i].subset, d.subset_len)))
            PILE_FAIL_("case %zu: subset \"%.*s\"", i, (int)d.subset_len, d.subset ? d.subset : "");
        if (cases[i].detail && strcmp(detail, cases[i].detail)) PILE_FAIL_("case %zu: detail '%s'", i, detail);
    }

    TEST("jsonl: an empty key or step is refused and the parser keeps its keys");
    REQUIRE_OK(pile_jsonl_parser_set_keys(jp, "content", "a.b", &err), &err);
    const char *bad[][2] = {{"", "x"}, {"a..b", "x"}, {".a", "x"}, {"a.", "x"}, {"t", "m."}, {NULL, "x"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ASSERT_EQ(pile_jsonl_parser_set_keys(jp, bad[i][0], bad[i][1], &err), PILE_EINVAL);
        ASSERT(strstr(err.msg, "bad ") == err.msg && strstr(err.msg, "key '") != NULL);
    }
    pile_jsonl_doc d;
    const char *line = "{\"content\": \"still\", \"a\": {\"b\": \"set\"}}";
    ASSERT_EQ(pile_jsonl_parse(jp, padded(line, strlen(line), &p), strlen(line), &d, NULL, 0), 0);
    ASSERT(d.text_len == 5 && d.subset_len == 3);
    pile_jsonl_parser_free(jp);
    pile_buf_free(&p);
}

static void test_jsonl_corpus(void)
{
    TEST("jsonl: every line of tricky.jsonl is a document with valid UTF-8 text");
    if (!have_corpus) return;
    pile_buf p = {0};
    line_list l;
    REQUIRE_OK(read_lines(corpus("tricky.jsonl", &p), 0, &l), &l.err);
    ASSERT_EQ(l.n, 200);
    pile_jsonl_parser *jp = pile_jsonl_parser_create();
    pile_buf tmp = {0};
    for (size_t i = 0; i < l.n; i++) {
        pile_jsonl_doc d;
        char detail[160];
        int rc = pile_jsonl_parse(jp, padded(l.v[i].data, l.v[i].len, &tmp), l.v[i].len, &d, detail, sizeof detail);
        if (rc != 0) PILE_FAIL_("tricky line %zu: %s (%s)", i + 1, pile_skip_name(rc), detail);
        else {
            ASSERT(pile_utf8_valid(d.text, d.text_len));
            ASSERT_EQ(d.repairs, 0);
        }
    }
    lines_free(&l);

    TEST("jsonl: val.jsonl.zst and its \\u-escaped twin give identical texts and subsets");
    pile_lines *ra, *rb;
    pile_err err;
    REQUIRE_OK(pile_lines_open(&ra, corpus("val.jsonl.zst", &p), NULL, &err), &err);
    REQUIRE_OK(pile_lines_open(&rb, corpus("val.ascii.jsonl.zst", &p), NULL, &err), &err);
    pile_jsonl_parser *jb = pile_jsonl_parser_create();
    size_t docs = 0, nonascii = 0;
    for (;;) {
        pile_line la, lb;
        int a = pile_lines_next(ra, &la, &err);
        int b = pile_lines_next(rb, &lb, &err);
        ASSERT_EQ(a, b);
        if (a != 1 || b != 1) break;
        pile_jsonl_doc da, db;
        int x = pile_jsonl_parse(jp, la.data, la.len, &da, NULL, 0);
        int y = pile_jsonl_parse(jb, lb.data, lb.len, &db, NULL, 0);
        ASSERT_EQ(x, 0);
        ASSERT_EQ(y, 0);
        if (x || y) break;
        docs++;
        ASSERT_EQ(da.text_len, db.text_len);
        if (da.text_len == db.text_len) ASSERT_MEM_EQ(da.text, db.text, da.text_len);
        ASSERT(da.subset && db.subset && da.subset_len == db.subset_len &&
               memcmp(da.subset, db.subset, da.subset_len) == 0);
        for (size_t k = 0; k < lb.len; k++) ASSERT((unsigned char)lb.data[k] < 0x80);
        if (!pile_utf8_valid(da.text, da.text_len)) PILE_FAIL_("invalid UTF-8 in doc %zu", docs);
        for (size_t k = 0; k < da.text_len; k++)
            if ((unsigned char)da.text[k] >= 0x80) {
                nonascii++;
                break;
            }
    }
    ASSERT(docs > 10);
    ASSERT(nonascii > 0); /* otherwise the escaped twin proves nothing */
    printf("# val: %zu documents, %zu with non-ASCII text\n", docs, nonascii);
    pile_lines_close(ra);
    pile_lines_close(rb);
    pile_jsonl_parser_free(jp);
    pile_jsonl_parser_free(jb);
    pile_buf_free(&p);
    pile_buf_free(&tmp);
}

/* ------------------------------------------------------------- tree */

static const pile_json *path_get(const pile_json *v, const char *a, const char *b)
{
    v = pile_json_get(v, a);
    return b ? pile_json_get(v, b) : v;
}

static void test_tree(void)
{
    TEST("tree: nested values, duplicate keys, escapes, numbers of every size");
    static const char doc[] =
        "{\"name\": \"caf\\u00e9 \\ud83d\\ude00 \\\"q\\\" \\\\ \\/ \\b\\f\\n\\r\\t\", \"n\": {\"i\": -42, \"u\": 18446744073709551615,"
        " \"f\": 1.5, \"big\": 1e999, \"neg\": -1e999, \"tiny\": 1e-999, \"zero\": -0, \"two\": 2.0},"
        " \"list\": [true, false, null, [], {}, [[1]], \"\"], \"dup\": 1, \"dup\": \"last\", \"nul\\u0000key\": \"a\\u0000b\"}";
    pile_json *root = NULL;
    pile_err err;
    REQUIRE_OK(pile_json_parse(doc, sizeof doc - 1, "doc", &root, &err), &err);
    ASSERT_EQ(pile_json_type_of(root), PILE_JSON_OBJECT);
    ASSERT_EQ(pile_json_size(root), 6);
    size_t len = 0;
    ASSERT_STR_EQ(pile_json_str(pile_json_get(root, "name"), &len),
                  "caf\xC3\xA9 \xF0\x9F\x98\x80 \"q\" \\ / \b\f\n\r\t");
    ASSERT_EQ(len, strlen("caf\xC3\xA9 \xF0\x9F\x98\x80 \"q\" \\ / \b\f\n\r\t"));
    int64_t iv = 0;
    ASSERT(pile_json_int(path_get(root, "n", "i"), &iv) && iv == -42);
    ASSERT(!pile_json_int(path_get(root, "n", "u"), &iv));
    ASSERT(pile_json_num(path_get(root, "n", "u")) == 18446744073709551615.0);
    ASSERT(pile_json_num(path_get(root, "n", "f")) == 1.5);
    ASSERT(!pile_json_int(path_get(root, "n", "f"), &iv));
    ASSERT(pile_json_num(path_get(root, "n", "big")) > 1e308);
    ASSERT(pile_json_num(path_get(root, "n", "neg")) < -1e308);
    ASSERT(pile_json_num(path_get(root, "n", "tiny")) == 0.0);
    ASSERT(pile_json_int(path_get(root, "n", "two"), &iv) && iv == 2);
    ASSERT(pile_json_int(path_get(root, "n", "zero"), &iv) && iv == 0);
    const pile_json *list = pile_json_get(root, "list");
    ASSERT_EQ(pile_json_size(list), 7);
    ASSERT(pile_json_bool(pile_json_at(list, 0)) == 1);
    ASSERT(pile_json_type_of(pile_json_at(list, 1)) == PILE_JSON_BOOL && !pile_json_bool(pile_json_at(list, 1)));
    ASSERT_EQ(pile_json_type_of(pile_json_at(list, 2)), PILE_JSON_NULL);
    ASSERT_EQ(pile_json_type_of(pile_json_at(list, 3)), PILE_JSON_ARRAY);
    ASSERT_EQ(pile_json_size(pile_json_at(list, 4)), 0);
    ASSERT(pile_json_int(pile_json_at(pile_json_at(pile_json_at(list, 5), 0), 0), &iv) && iv == 1);
    ASSERT(pile_json_str(pile_json_at(list, 6), &len) && len == 0);
    ASSERT(pile_json_at(list, 7) == NULL);
    ASSERT_STR_EQ(pile_json_str(pile_json_get(root, "dup"), NULL), "last");
    ASSERT_STR_EQ(pile_json_key_at(root, 3, &len), "dup");
    ASSERT(pile_json_int(pile_json_at(root, 3), &iv) && iv == 1); /* both members are kept in order */
    ASSERT(pile_json_key_at(root, 5, &len) && len == 7);
    ASSERT(pile_json_str(pile_json_at(root, 5), &len) && len == 3);
    ASSERT(pile_json_get(root, "missing") == NULL);
    ASSERT(pile_json_get(list, "x") == NULL);
    pile_json_free(root);
    pile_json_free(NULL);

    TEST("tree: a number beyond double range is kept as inf, huge integers as doubles");
    root = NULL;
    static const char nums[] = "[123456789012345678901234567890, 1e400, -9223372036854775808, 9223372036854775807, 0.1]";
    REQUIRE_OK(pile_json_parse(nums, sizeof nums - 1, "nums", &root, &err), &err);
    ASSERT(!pile_json_int(pile_json_at(root, 0), &iv));
    ASSERT(pile_json_num(pile_json_at(root, 0)) > 1.2e29 && pile_json_num(pile_json_at(root, 0)) < 1.3e29);
    ASSERT(pile_json_num(pile_json_at(root, 1)) > 1e308);
    ASSERT(pile_json_int(pile_json_at(root, 2), &iv) && iv == INT64_MIN);
    ASSERT(pile_json_int(pile_json_at(root, 3), &iv) && iv == INT64_MAX);
    ASSERT(pile_json_num(pile_json_at(root, 4)) == 0.1);
    pile_json_free(root);

    TEST("tree: errors name the file, the problem, its line and column");
    struct {
        const char *text, *msg;
    } bad[] = {
        {"{\n  \"a\": 1,\n  \"b\": [1, 2,]\n}", "cannot parse 'cfg.json': unexpected character, expected a value at line 3, column 14"},
        {"{\"a\": 1} x", "cannot parse 'cfg.json': unexpected data after the JSON value at line 1, column 10"},
        {"", "cannot parse 'cfg.json': unexpected end of input, expected a value at line 1, column 1"},
        {"[\"\xC3(\"]", "cannot parse 'cfg.json': invalid UTF-8 at line 1, column 3"},
        {"\n\n[\"\\ud800\"]", "cannot parse 'cfg.json': lone surrogate escape in string at line 3, column 3"},
        {"{\"a\" 1}", "cannot parse 'cfg.json': expected ':' after a key at line 1, column 6"},
        {"[01]", "cannot parse 'cfg.json': invalid number at line 1, column 2"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        root = NULL;
        int rc = pile_json_parse(bad[i].text, strlen(bad[i].text), "cfg.json", &root, &err);
        ASSERT_EQ(rc, PILE_EFORMAT);
        ASSERT(root == NULL);
        ASSERT_STR_EQ(err.msg, bad[i].msg);
    }
    pile_buf p = {0};
    root = NULL;
    ASSERT(pile_json_parse_file(tmp_path("no-such.json", &p), &root, &err) < 0);
    ASSERT(strstr(err.msg, "no-such.json") != NULL);

    TEST("tree: deep nesting converts without recursion");
    pile_buf deep = {0};
    size_t depth = 200000;
    pile_buf_reserve(&deep, 2 * depth);
    memset(deep.data, '[', depth);
    memset(deep.data + depth, ']', depth);
    deep.len = 2 * depth;
    root = NULL;
    REQUIRE_OK(pile_json_parse(deep.data, deep.len, "deep", &root, &err), &err);
    const pile_json *v = root;
    size_t d = 1;
    while (pile_json_size(v) == 1) {
        v = pile_json_at(v, 0);
        d++;
    }
    ASSERT_EQ(d, depth);
    pile_json_free(root);
    pile_buf_free(&deep);

    TEST("tree: GPT-2's encoder.json (50,257 entries) loads");
    p.len = 0;
    pile_buf_printf(&p, "%s/fixtures/gpt2/encoder.json", pile_test_shared());
    struct stat st;
    if (stat(p.data, &st) == 0) {
        root = NULL;
        REQUIRE_OK(pile_json_parse_file(p.data, &root, &err), &err);
        ASSERT_EQ(pile_json_size(root), 50257);
        ASSERT(pile_json_int(pile_json_get(root, "<|endoftext|>"), &iv) && iv == 50256);
        ASSERT(pile_json_int(pile_json_get(root, "!"), &iv) && iv == 0);
        pile_json_free(root);
    }

    TEST("writer: escapes round trip through the parser byte for byte");
    pile_buf s = {0}, w = {0};
    for (int c = 0; c < 128; c++) pile_buf_append(&s, (char[]){(char)c}, 1);
    pile_buf_append_str(&s, "caf\xC3\xA9 \xF0\x9F\x98\x80 \xE2\x80\xA8");
    ASSERT_EQ(pile_json_write_string(&w, s.data, s.len), 0);
    for (size_t k = 0; k < w.len; k++) ASSERT((unsigned char)w.data[k] >= 0x20);
    ASSERT(memmem(w.data, w.len, "\\u0000\\u0001", 12) != NULL);
    ASSERT(memmem(w.data, w.len, "\\b\\t\\n\\u000b\\f\\r", 16) != NULL);
    ASSERT(memmem(w.data, w.len, "!\\\"#", 4) != NULL);
    ASSERT(memmem(w.data, w.len, "[\\\\]", 4) != NULL);
    root = NULL;
    REQUIRE_OK(pile_json_parse(w.data, w.len, "written", &root, &err), &err);
    const char *back = pile_json_str(root, &len);
    ASSERT_EQ(len, s.len);
    if (back && len == s.len) ASSERT_MEM_EQ(back, s.data, len);
    pile_json_free(root);
    w.len = 0;
    ASSERT_EQ(pile_json_write_string(&w, "", 0), 0);
    ASSERT(w.len == 2 && memcmp(w.data, "\"\"", 2) == 0);
    pile_buf_free(&s);
    pile_buf_free(&w);
    pile_buf_free(&p);
}

/* ------------------------------------------------------------- random */

static void mutate(pile_buf *b)
{
    static const char *frags[] = {"\\ud800", "\\udc00", "\\u", "\\", "\"", "{", "}", "[", "]", ",", ":",
                                  "1e999", "-", "0", "null", "\xFF", "\xE2\x82", "\xF0\x9F\x98\x80", "\t",
                                  " ", "\\\\", "\\n", "\x00", "\"text\": \"", "NaN", "1.5e+3"};
    int muts = 1 + (int)(pile_test_rng() % 4);
    for (int m = 0; m < muts; m++) {
        size_t at = b->len ? (size_t)(pile_test_rng() % (b->len + 1)) : 0;
        switch (pile_test_rng() % 5) {
        case 0: /* flip a byte */
            if (b->len) b->data[at % b->len] = (char)pile_test_rng();
            break;
        case 1: { /* insert a fragment */
            const char *f = frags[pile_test_rng() % (sizeof frags / sizeof frags[0])];
            size_t fl = *f ? strlen(f) : 1;
            pile_buf_reserve(b, fl);
            memmove(b->data + at + fl, b->data + at, b->len - at);
            memcpy(b->data + at, f, fl);
            b->len += fl;
            break;
        }
        case 2: { /* delete a span */
            size_t k = (size_t)(pile_test_rng() % 8);
            if (at + k > b->len) k = b->len - at;
            memmove(b->data + at, b->data + at + k, b->len - at - k);
            b->len -= k;
            break;
        }
        case 3: /* truncate */
            b->len = at;
            break;
        default: /* random bytes */
            for (int k = 0; k < 4 && b->len; k++) b->data[pile_test_rng() % b->len] = (char)(pile_test_rng() % 128);
            break;
        }
    }
}

static void test_random(void)
{
    TEST("random: mutated real lines and random bytes agree with the independent validator");
    pile_test_rng_state = 20240607;
    pile_buf p = {0}, src = {0}, b = {0}, rep = {0}, line = {0};
    pile_err err;
    line_list l = {0};
    if (have_corpus) {
        REQUIRE_OK(read_lines(corpus("tricky.jsonl", &p), 0, &l), &l.err);
    }
    pile_jsonl_parser *jp = pile_jsonl_parser_create();
    int docs = 0, bad = 0, mismatches = 0;
    for (int it = 0; it < 6000; it++) {
        b.len = 0;
        if (l.n && it % 4 != 0) {
            line_rec *x = &l.v[pile_test_rng() % l.n];
            if (x->len < 4000) pile_buf_append(&b, x->data, x->len);
            mutate(&b);
        } else {
            size_t n = (size_t)(pile_test_rng() % 64);
            static const char alpha[] = "{}[]\":,\\ u0a1e-tx\xFF\xC3\xA9" "d8";
            for (size_t k = 0; k < n; k++) pile_buf_append(&b, &alpha[pile_test_rng() % (sizeof alpha - 1)], 1);
        }
        /* the oracle: valid JSON after the documented UTF-8 repair, lone surrogates allowed */
        rep.len = 0;
        pile_utf8_repair(b.data, b.len, &rep);
        size_t off;
        const char *why;
        int valid = pile__json_validate(rep.data, rep.len, 1, &off, &why);
        pile_jsonl_doc d;
        int rc = pile_jsonl_parse(jp, padded(b.data, b.len, &line), b.len, &d, NULL, 0);
        ASSERT(rc >= 0);
        int parsed = rc != PILE_SKIP_BAD_JSON && rc != PILE_SKIP_BLANK;
        if (parsed != valid && mismatches++ < 5)
            PILE_FAIL_("iteration %d: parser %s, validator %s (%s at %zu): %.*s", it, pile_skip_name(rc),
                       valid ? "valid" : "invalid", valid ? "" : why, valid ? 0 : off, (int)(b.len < 200 ? b.len : 200),
                       b.data);
        if (rc == PILE_SKIP_NONE) {
            docs++;
            ASSERT(pile_utf8_valid(d.text, d.text_len));
        } else {
            bad++;
        }
        /* the tree is strict: no repairs, so invalid UTF-8 and lone surrogates fail */
        pile_json *root = NULL;
        int strict = pile_utf8_valid(b.data, b.len) && pile__json_validate(b.data, b.len, 0, &off, &why);
        int trc = pile_json_parse(b.data, b.len, "random", &root, &err);
        if ((trc == 0) != strict && mismatches++ < 10)
            PILE_FAIL_("iteration %d: tree %d (%s), validator %d: %.*s", it, trc, trc ? err.msg : "", strict,
                       (int)(b.len < 200 ? b.len : 200), b.data);
        pile_json_free(root);
    }
    printf("# random: %d documents, %d skipped\n", docs, bad);
    ASSERT(docs > 100 && bad > 100);
    pile_jsonl_parser_free(jp);
    lines_free(&l);
    pile_buf_free(&p);
    pile_buf_free(&src);
    pile_buf_free(&b);
    pile_buf_free(&rep);
    pile_buf_free(&line);
}

static void test_buf(void)
{
    TEST("buf: after one failed append every later one fails, until free");
    pile_buf b = {0};
    ASSERT_EQ(pile_buf_append_str(&b, "ok"), 0);
    ASSERT_EQ(pile_buf_reserve(&b, SIZE_MAX), PILE_ENOMEM);
    ASSERT(b.failed);
    ASSERT_EQ(pile_buf_append_str(&b, "x"), PILE_ENOMEM);
    ASSERT_EQ(pile_buf_printf(&b, "%d", 1), PILE_ENOMEM);
    ASSERT_EQ(b.len, 2);
    pile_buf_free(&b);
    ASSERT(!b.failed);
    ASSERT_EQ(pile_buf_append_str(&b, "again"), 0);
    ASSERT_EQ(b.len, 5);
    pile_buf_free(&b);

    TEST("buf: a printf that cannot format fails later appends too");
    /* U+0100 has no encoding in the C locale the tests run in: vsnprintf fails */
    ASSERT_EQ(pile_buf_append_str(&b, "a"), 0);
    ASSERT(pile_buf_printf(&b, "%ls", L"\x100") < 0);
    ASSERT(b.failed);
    ASSERT(pile_buf_append_str(&b, "b") < 0);
    ASSERT_EQ(b.len, 1);
    pile_buf_free(&b);
}

static void test_err(void)
{
    TEST("err: a message can wrap the record's own previous message");
    pile_err e;
    pile_err_set(&e, PILE_EFORMAT, "bad magic at byte %d", 7);
    ASSERT_EQ(pile_err_set(&e, PILE_ECORRUPT, "cannot open 'a.bin': %s", e.msg), PILE_ECORRUPT);
    ASSERT_EQ(e.code, PILE_ECORRUPT);
    ASSERT_STR_EQ(e.msg, "cannot open 'a.bin': bad magic at byte 7");
    pile_err_sys(&e, PILE_EIO, ENOENT, "cannot read 'x': %s", e.msg);
    ASSERT_STR_EQ(e.msg, "cannot read 'x': cannot open 'a.bin': bad magic at byte 7: No such file or directory");
    /* a long message is cut, never overrun */
    char big[3 * PILE_ERR_MSG_MAX];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    pile_err_set(&e, PILE_EIO, "%s", big);
    ASSERT_EQ(strlen(e.msg), PILE_ERR_MSG_MAX - 1);
    ASSERT_EQ(pile_err_set(NULL, PILE_EINVAL, "no record"), PILE_EINVAL);
}

static void test_fs(void)
{
    pile_buf p = {0}, j = {0}, got = {0};
    pile_err err;
    TEST("fs: join puts exactly one '/' between non-empty parts and none after an empty one");
    static const char *cases[][3] = {
        {"a", "b", "a/b"}, {"a/", "b", "a/b"}, {"a//", "b", "a/b"}, {"/", "b", "/b"}, {"", "b", "b"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ASSERT_EQ(pile_fs_join(&j, cases[i][0], cases[i][1]), 0);
        ASSERT_STR_EQ(j.data, cases[i][2]);
    }

    TEST("fs: mkdirs makes nested folders, refuses an empty path and a file in the way");
    REQUIRE_OK(pile_fs_mkdirs(tmp_path("m/n/o/", &p), &err), &err);
    ASSERT(pile_fs_is_dir(tmp_path("m/n/o", &p)));
    REQUIRE_OK(pile_fs_mkdirs(tmp_path("m/n", &p), &err), &err); /* already there */
    ASSERT_EQ(pile_fs_mkdirs("", &err), PILE_EINVAL);
    ASSERT_STR_EQ(err.msg, "cannot create folder '': empty path");
    REQUIRE(write_file(tmp_path("m/file", &p), "x", 1) == 0);
    ASSERT(pile_fs_mkdirs(tmp_path("m/file/sub", &p), &err) < 0);
    ASSERT(strstr(err.msg, "cannot create folder '") == err.msg);

    TEST("fs: write_atomic replaces a file whole and leaves no temporary behind");
    REQUIRE_OK(pile_fs_write_atomic(tmp_path("m/out", &p), "first", 5, &err), &err);
    REQUIRE_OK(pile_fs_write_atomic(tmp_path("m/out", &p), "second", 6, &err), &err);
    REQUIRE_OK(pile_fs_read_file(tmp_path("m/out", &p), &got, &err), &err);
    ASSERT(got.len == 6 && memcmp(got.data, "second", 6) == 0);
    struct stat st;
    ASSERT(stat(tmp_path("m/out.tmp", &p), &st) != 0);
    uint64_t size = 0;
    REQUIRE_OK(pile_fs_size(tmp_path("m/out", &p), &size, &err), &err);
    ASSERT_EQ(size, 6);
    ASSERT(pile_fs_write_atomic(tmp_path("no/such/folder/out", &p), "x", 1, &err) < 0);
    ASSERT(strstr(err.msg, "cannot create '") == err.msg);
    char longp[PATH_MAX + 16];
    memset(longp, 'a', sizeof longp - 1);
    longp[sizeof longp - 1] = 0;
    ASSERT_EQ(pile_fs_fsync_dir(longp, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "cannot fsync the folder of 'aaa") == err.msg);

    TEST("fs: a folder's lock refuses a second holder, naming the first, and dies with its process");
    pile_fs_lock *l1 = NULL, *l2 = NULL;
    REQUIRE_OK(pile_fs_lock_open(&l1, tmp_path("m", &p), "test-one", &err), &err);
    ASSERT_EQ(pile_fs_lock_open(&l2, tmp_path("m", &p), "test-two", &err), PILE_EBUSY);
    ASSERT(l2 == NULL);
    char pidtxt[64];
    snprintf(pidtxt, sizeof pidtxt, "test-one (pid %ld on host ", (long)getpid());
    ASSERT(strstr(err.msg, pidtxt) != NULL);
    ASSERT(strstr(err.msg, "folder '") == err.msg);
    pile_fs_lock_close(l1);
    REQUIRE_OK(pile_fs_lock_open(&l2, tmp_path("m", &p), "test-two", &err), &err);
    pile_fs_lock_close(l2);
    pile_fs_lock_close(NULL);
    /* a holder killed with SIGKILL leaves the file, never the lock */
    int ready[2];
    REQUIRE(pipe(ready) == 0);
    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        pile_fs_lock *cl = NULL;
        char c = pile_fs_lock_open(&cl, tmp_path("m", &p), "test-child", NULL) == 0 ? 'y' : 'n';
        if (write(ready[1], &c, 1) != 1) _exit(1);
        for (;;) pause();
    }
    char c = 0;
    ASSERT(read(ready[0], &c, 1) == 1 && c == 'y');
    ASSERT_EQ(pile_fs_lock_open(&l2, tmp_path("m", &p), "test-two", &err), PILE_EBUSY);
    ASSERT(strstr(err.msg, "test-child (pid ") != NULL);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    close(ready[0]);
    close(ready[1]);
    REQUIRE_OK(pile_fs_lock_open(&l2, tmp_path("m", &p), "test-two", &err), &err);
    pile_fs_lock_close(l2);
    ASSERT(stat(tmp_path("m/" PILE_FS_LOCK_NAME, &p), &st) == 0);
    ASSERT(pile_fs_lock_open(&l2, tmp_path("no/such", &p), "test-two", &err) < 0 && l2 == NULL);
    ASSERT(strstr(err.msg, "cannot open lock file '") == err.msg);
    pile_buf_free(&p);
    pile_buf_free(&j);
    pile_buf_free(&got);
}

static void test_hex(void)
{
    TEST("hex: lowercase encoding and its strict inverse");
    const unsigned char b[4] = {0x00, 0x9f, 0xa0, 0xff};
    char h[9];
    pile_hex_encode(h, b, 4);
    ASSERT_STR_EQ(h, "009fa0ff");
    unsigned char back[4] = {1, 1, 1, 1};
    ASSERT_EQ(pile_hex_decode(back, 4, h), 0);
    ASSERT_MEM_EQ(back, b, 4);
    ASSERT_EQ(pile_hex_decode(back, 4, "009FA0FF"), -1); /* uppercase is not what we write */
    ASSERT_EQ(pile_hex_decode(back, 4, "009fa0f"), -1);
    ASSERT_EQ(pile_hex_decode(back, 4, "009fa0ff0"), -1);
    ASSERT_EQ(pile_hex_decode(back, 4, "009fa0fg"), -1);
    ASSERT_EQ(pile_hex_decode(back, 4, NULL), -1);
    pile_hex_encode(h, b, 0);
    ASSERT_STR_EQ(h, "");
}

int main(void)
{
    if (!pile_test_tmpdir(tmpdir, sizeof tmpdir, "common")) {
        printf("1..0 # SKIP cannot create a temporary folder\n");
        return 77;
    }
    pile_buf p = {0};
    struct stat st;
    have_corpus = stat(corpus("bad.jsonl", &p), &st) == 0;
    if (!have_corpus) printf("# corpus absent under '%s': corpus cases are skipped\n", pile_test_shared());
    pile_buf_free(&p);

    test_buf();
    test_err();
    test_fs();
    test_hex();
    test_utf8();
    test_lines_plain_vs_zstd();
    test_lines_max_line();
    test_lines_block();
    test_lines_truncated();
    test_lines_gzip();
    test_lines_window();
    test_jsonl_bad();
    test_jsonl_more();
    test_jsonl_keys();
    test_jsonl_corpus();
    test_tree();
    test_random();

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("# could not remove %s\n", tmpdir);
    return TEST_DONE();
}
