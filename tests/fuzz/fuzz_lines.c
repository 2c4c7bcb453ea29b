/* libFuzzer target for the line reader over plain, zstd and gzip input: the
 * input is written to a memfd and read through /proc/self/fd, once as is
 * (usually plain, or zstd / gzip when it starts with a magic number) and
 * once zstd-compressed and once gzip-compressed, each cut at a fuzzer-chosen
 * point; lines must match the input bytes and a cut must read as a
 * truncation, never as an error. Block mode (pile_lines_next_block, with a
 * block size the input picks) must hand out the same lines.
 *
 * Run: tools/fuzz.sh (seeds: pieces of the corpus files in
 * tests/fuzz/corpus/fuzz_lines, from tests/fuzz/make_corpus.py). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "pile_lines.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int as_file(const void *p, size_t n, char *path, size_t cap)
{
    int fd = memfd_create("fuzz_lines", MFD_CLOEXEC);
    if (fd < 0) abort();
    if (n && write(fd, p, n) != (ssize_t)n) abort();
    snprintf(path, cap, "/proc/self/fd/%d", fd);
    return fd;
}

typedef struct seen_line {
    uint64_t offset, lineno;
    size_t len;
    int status;
    unsigned flags;
} seen_line;

typedef struct block_check {
    const seen_line *v;
    size_t n, at;
    const uint8_t *plain;
    const pile_buf *buf;
} block_check;

static int block_cb(void *ctx, const pile_line *ln, pile_err *err)
{
    (void)err;
    block_check *b = ctx;
    if (b->at >= b->n) abort();
    const seen_line *s = &b->v[b->at++];
    if (ln->offset != s->offset || ln->lineno != s->lineno || ln->len != s->len || (int)ln->status != s->status ||
        ln->flags != s->flags)
        abort();
    if (ln->status != PILE_LINE_TOO_LONG) {
        if (!ln->data || memcmp(ln->data, b->plain + s->offset, ln->len) != 0) abort();
        /* the padding lies inside the caller's buffer */
        if (ln->data + ln->len + PILE_LINES_PADDING > b->buf->data + b->buf->cap) abort();
    } else if (ln->data) {
        abort();
    }
    return 0;
}

/* Reads every line in block mode (blocks of `want` bytes): the lines of
 * line mode, v[0..n), and then the same end. */
static void read_blocks(const char *path, const uint8_t *plain, const seen_line *v, size_t n, size_t want,
                        int expect_cut)
{
    pile_lines_opts opts = {.max_line = 256};
    pile_lines *r;
    pile_err err;
    if (pile_lines_open(&r, path, &opts, &err) < 0) abort();
    pile_buf buf = {0};
    block_check b = {v, n, 0, plain, &buf};
    int rc;
    while ((rc = pile_lines_next_block(r, &buf, want, block_cb, &b, &err)) == 1) {
    }
    if (rc < 0 || b.at != n || pile_lines_truncated(r) != expect_cut) abort();
    pile_buf_free(&buf);
    pile_lines_close(r);
}

/* Reads every line; lines of a plain input must re-join to the input. */
static void read_all(const char *path, const uint8_t *plain, size_t plain_n, int expect_cut)
{
    pile_lines_opts opts = {.max_line = 256}; /* small, so the too-long path is reached */
    pile_lines *r;
    pile_err err;
    if (pile_lines_open(&r, path, &opts, &err) < 0) abort();
    pile_line ln;
    int rc;
    size_t pos = 0;
    int bom = plain_n >= 3 && memcmp(plain, "\xEF\xBB\xBF", 3) == 0;
    seen_line *v = NULL;
    size_t n = 0, cap = 0;
    while ((rc = pile_lines_next(r, &ln, &err)) == 1) {
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            v = realloc(v, cap * sizeof *v);
            if (!v) abort();
        }
        v[n++] = (seen_line){ln.offset, ln.lineno, ln.len, (int)ln.status, ln.flags};
        /* a cut stream may end inside the BOM: then it is data, not a BOM */
        if (ln.lineno == 1 && (ln.flags & PILE_LINE_HAD_BOM)) {
            if (!bom) abort();
            pos = 3;
        }
        if (ln.lineno == 1 && bom && ln.status == PILE_LINE_COMPLETE && !(ln.flags & PILE_LINE_HAD_BOM)) abort();
        if (ln.offset != pos) abort();
        if (pos + ln.len > plain_n) abort();
        if (ln.status == PILE_LINE_TOO_LONG) {
            if (ln.data || ln.len <= 256) abort();
        } else {
            if (ln.len > 256) abort();
            if (memcmp(ln.data, plain + pos, ln.len) != 0) abort();
            memset(ln.data + ln.len, 0x55, PILE_LINES_PADDING); /* the padding is writable */
        }
        pos += ln.len + 1;
    }
    if (rc < 0) abort();
    if (pile_lines_truncated(r) != expect_cut) abort();
    pile_lines_close(r);
    /* a block size the input picks: from one line per block to many */
    read_blocks(path, plain, v, n, plain_n ? (size_t)plain[plain_n / 2] * 7 : 1, expect_cut);
    free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    int fd = as_file(data, size, path, sizeof path);
    int zstd_magic = size >= 4 && ((data[0] == 0x28 && data[1] == 0xB5 && data[2] == 0x2F && data[3] == 0xFD) ||
                                   (data[1] == 0x2A && data[2] == 0x4D && data[3] == 0x18 && (data[0] & 0xF0) == 0x50));
    zstd_magic |= size >= 3 && data[0] == 0x1f && data[1] == 0x8b && data[2] == 8; /* gzip: not plain either */
    /* raw input: plain lines must match; zstd garbage may error but not crash */
    pile_lines_opts opts = {.max_line = 256};
    pile_lines *r;
    pile_err err;
    if (zstd_magic) {
        if (pile_lines_open(&r, path, &opts, &err) == 0) {
            pile_line ln;
            while (pile_lines_next(r, &ln, &err) == 1) {
            }
            pile_lines_close(r);
        }
    } else {
        read_all(path, data, size, 0);
    }
    close(fd);

    /* compressed and cut: every line read must match the input; any cut short
     * of the whole is a truncation, not an error */
    size_t bound = ZSTD_compressBound(size);
    uint8_t *z = malloc(bound);
    if (!z) return 0;
    size_t zn = ZSTD_compress(z, bound, data, size, 1);
    if (ZSTD_isError(zn)) abort();
    size_t cut = size ? zn - data[0] % (zn - 3) : zn; /* in (3, zn]: the magic survives */
    if (!zstd_magic) {
        fd = as_file(z, cut, path, sizeof path);
        read_all(path, data, size, cut < zn ? 1 : 0);
        close(fd);
    }
    free(z);

    /* the same through gzip, cut past its 10-byte header's magic */
    uLongf gbound = compressBound((uLong)size) + 64;
    uint8_t *g = malloc(gbound);
    if (!g) return 0;
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, 1, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) abort();
    zs.next_in = (Bytef *)data;
    zs.avail_in = (uInt)size;
    zs.next_out = g;
    zs.avail_out = (uInt)gbound;
    if (deflate(&zs, Z_FINISH) != Z_STREAM_END) abort();
    size_t gn = gbound - zs.avail_out;
    deflateEnd(&zs);
    size_t gcut = size ? gn - data[size - 1] % (gn - 3) : gn; /* in (3, gn] */
    if (!zstd_magic) {
        fd = as_file(g, gcut, path, sizeof path);
        read_all(path, data, size, gcut < gn ? 1 : 0);
        close(fd);
    }
    free(g);
    return 0;
}
