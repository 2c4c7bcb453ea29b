/* Streaming line reader for .jsonl and .jsonl.zst. One window buffer holds
 * the decompressed bytes; lines are handed out in place (memchr split, no
 * per-line copy or malloc) with PILE_LINES_PADDING writable bytes after each,
 * made safe by stashing the bytes that padding overlaps and restoring them on
 * the next call. Memory stays bounded by the line cap: a longer line is
 * streamed past and only its length is kept. */
#include "pile_lines.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#define PLAIN_CHUNK (4u << 20) /* window size for plain files: one read() fills most of it */
#define ZSTD_CHUNK (1u << 20)  /* decompressed window and compressed read size for .zst */
#define MIN_READ (64u << 10)   /* make room before reading less than this */

struct pile_lines {
    int fd;
    char *path;
    uint64_t file_size;
    uint64_t file_pos; /* bytes read from fd */
    size_t max_line;

    /* zstd input (NULL for a plain file) */
    ZSTD_DStream *zds;
    char *in;
    size_t in_cap, in_len, in_pos;
    int in_eof;
    size_t zret;      /* last ZSTD_decompressStream hint: 0 at a frame boundary */
    int zstarted;     /* any compressed input was fed */

    /* window: buf[start..end) is decompressed data not yet handed out;
     * buf has cap bytes, of which the last PILE_LINES_PADDING are never filled */
    char *buf;
    size_t cap, start, end, scan; /* scan: no '\n' in buf[start..scan) */
    uint64_t base;                /* decompressed offset of buf[0] */
    int eof;                      /* no more data will arrive */
    int truncated;
    int bom_checked;
    uint64_t lineno;

    /* padding stash: bytes after the last returned line, restored on the next call */
    char stash[PILE_LINES_PADDING];
    char *stash_at;
};

static int is_zstd_magic(const unsigned char *p, size_t n)
{
    if (n < 4) return 0;
    uint32_t m = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    return m == ZSTD_MAGICNUMBER || (m & ZSTD_MAGIC_SKIPPABLE_MASK) == ZSTD_MAGIC_SKIPPABLE_START;
}

/* read() that retries on EINTR; returns bytes read, 0 at EOF, or -1. */
static ssize_t read_some(int fd, void *p, size_t n)
{
    for (;;) {
        ssize_t k = read(fd, p, n);
        if (k >= 0 || errno != EINTR) return k;
    }
}

void pile_lines_close(pile_lines *r)
{
    if (!r) return;
    if (r->fd >= 0) close(r->fd);
    ZSTD_freeDStream(r->zds);
    free(r->in);
    free(r->buf);
    free(r->path);
    free(r);
}

int pile_lines_open(pile_lines **out, const char *path, const pile_lines_opts *opts, pile_err *err)
{
    *out = NULL;
    pile_lines *r = calloc(1, sizeof *r);
    if (!r) return pile_err_set(err, PILE_ENOMEM, "out of memory opening '%s'", path);
    r->fd = -1;
    r->max_line = opts && opts->max_line ? opts->max_line : PILE_LINES_DEFAULT_MAX;
    r->path = strdup(path);
    if (!r->path) goto nomem;
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (r->fd < 0) {
        int e = errno;
        pile_lines_close(r);
        return pile_err_sys(err, e == ENOENT ? PILE_ENOENT : PILE_EIO, e, "cannot open '%s'", path);
    }
    struct stat st;
    if (fstat(r->fd, &st) != 0) {
        int e = errno;
        pile_lines_close(r);
        return pile_err_sys(err, PILE_EIO, e, "cannot stat '%s'", path);
    }
    if (S_ISDIR(st.st_mode)) {
        pile_lines_close(r);
        return pile_err_set(err, PILE_EINVAL, "cannot read '%s': is a folder", path);
    }
    r->file_size = (uint64_t)st.st_size;
#ifdef POSIX_FADV_SEQUENTIAL
    (void)posix_fadvise(r->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
#endif

    /* Sniff the magic number from the first read; that read then serves as
     * the first compressed input block or the first plain window. */
    r->in_cap = ZSTD_CHUNK;
    r->in = malloc(r->in_cap);
    if (!r->in) goto nomem;
    ssize_t k = read_some(r->fd, r->in, r->in_cap);
    if (k < 0) {
        int e = errno;
        pile_lines_close(r);
        return pile_err_sys(err, PILE_EIO, e, "cannot read '%s'", path);
    }
    r->file_pos = (uint64_t)k;
    r->in_len = (size_t)k;
    if (k == 0) r->in_eof = 1;

    if (is_zstd_magic((const unsigned char *)r->in, r->in_len)) {
        r->zds = ZSTD_createDStream();
        if (!r->zds) goto nomem;
        ZSTD_initDStream(r->zds);
        r->cap = ZSTD_CHUNK + PILE_LINES_PADDING;
        r->buf = malloc(r->cap);
        if (!r->buf) goto nomem;
    } else {
        /* plain: the sniffed block becomes the start of the window */
        r->cap = PLAIN_CHUNK + PILE_LINES_PADDING;
        if (r->cap < r->in_len + PILE_LINES_PADDING) r->cap = r->in_len + PILE_LINES_PADDING;
        r->buf = malloc(r->cap);
        if (!r->buf) goto nomem;
        memcpy(r->buf, r->in, r->in_len);
        r->end = r->in_len;
        if (k == 0) r->eof = 1;
        free(r->in);
        r->in = NULL;
        r->in_len = r->in_cap = 0;
    }
    *out = r;
    return 0;

nomem:
    pile_lines_close(r);
    return pile_err_set(err, PILE_ENOMEM, "out of memory opening '%s'", path);
}

/* Makes at least MIN_READ bytes of room after end (compacting, then growing). */
static int make_room(pile_lines *r, pile_err *err)
{
    size_t dcap = r->cap - PILE_LINES_PADDING;
    if (dcap - r->end >= MIN_READ) return 0;
    if (r->start > 0) {
        size_t n = r->end - r->start;
        memmove(r->buf, r->buf + r->start, n);
        r->base += r->start;
        r->scan -= r->start;
        r->start = 0;
        r->end = n;
        if (dcap - r->end >= MIN_READ) return 0;
    }
    size_t ncap = r->cap * 2;
    char *nb = realloc(r->buf, ncap);
    if (!nb) return pile_err_set(err, PILE_ENOMEM, "out of memory reading '%s'", r->path);
    r->buf = nb;
    r->cap = ncap;
    return 0;
}

static int fill_plain(pile_lines *r, pile_err *err)
{
    size_t dcap = r->cap - PILE_LINES_PADDING;
    ssize_t k = read_some(r->fd, r->buf + r->end, dcap - r->end);
    if (k < 0) return pile_err_sys(err, PILE_EIO, errno, "cannot read '%s'", r->path);
    if (k == 0) r->eof = 1;
    r->file_pos += (uint64_t)k;
    r->end += (size_t)k;
    return 0;
}

/* Decompresses into the window until some output arrives or the input ends.
 * The end of input with the decoder still inside a frame is a clean cut;
 * a ZSTD error is corruption. */
static int fill_zstd(pile_lines *r, pile_err *err)
{
    size_t dcap = r->cap - PILE_LINES_PADDING;
    ZSTD_outBuffer out = {r->buf + r->end, dcap - r->end, 0};
    while (out.pos == 0) {
        if (r->in_pos == r->in_len && !r->in_eof) {
            ssize_t k = read_some(r->fd, r->in, r->in_cap);
            if (k < 0) return pile_err_sys(err, PILE_EIO, errno, "cannot read '%s'", r->path);
            r->file_pos += (uint64_t)k;
            r->in_len = (size_t)k;
            r->in_pos = 0;
            if (k == 0) r->in_eof = 1;
        }
        ZSTD_inBuffer in = {r->in, r->in_len, r->in_pos};
        int starved = r->in_eof && in.pos == in.size;
        if (!starved) r->zstarted = 1;
        size_t ret = ZSTD_decompressStream(r->zds, &out, &in);
        r->in_pos = in.pos;
        if (ZSTD_isError(ret)) {
            uint64_t at = r->file_pos - (r->in_len - r->in_pos);
            return pile_err_set(err, PILE_ECORRUPT, "corrupt zstd data in '%s' near compressed byte %llu: %s",
                                r->path, (unsigned long long)at, ZSTD_getErrorName(ret));
        }
        if (starved && out.pos == 0) {
            /* Nothing left to feed and nothing left to flush. */
            r->eof = 1;
            r->truncated = r->zstarted && r->zret != 0;
            break;
        }
        /* only a call that made progress tells where the frame stands */
        r->zret = ret;
    }
    r->end += out.pos;
    return 0;
}

static int fill(pile_lines *r, pile_err *err)
{
    PILE_FORWARD_IF_ERR(make_room(r, err));
    return r->zds ? fill_zstd(r, err) : fill_plain(r, err);
}

static void stash_padding(pile_lines *r, char *after)
{
    memcpy(r->stash, after, PILE_LINES_PADDING);
    r->stash_at = after;
}

/* Streams past the rest of an over-long line whose first `have` bytes were
 * in the window; fills *line as PILE_LINE_TOO_LONG. */
static int skip_long(pile_lines *r, pile_line *line, pile_err *err)
{
    uint64_t len = r->end - r->start;
    line->offset = r->base + r->start;
    for (;;) {
        r->base += r->end;
        r->start = r->end = r->scan = 0;
        if (r->eof) break;
        PILE_FORWARD_IF_ERR(r->zds ? fill_zstd(r, err) : fill_plain(r, err));
        char *nl = memchr(r->buf, '\n', r->end);
        if (nl) {
            size_t k = (size_t)(nl - r->buf);
            len += k;
            r->start = r->scan = k + 1;
            break;
        }
        len += r->end;
    }
    line->data = NULL;
    line->len = (size_t)len;
    line->status = PILE_LINE_TOO_LONG;
    return 1;
}

int pile_lines_next(pile_lines *r, pile_line *line, pile_err *err)
{
    if (r->stash_at) {
        memcpy(r->stash_at, r->stash, PILE_LINES_PADDING);
        r->stash_at = NULL;
    }
    line->flags = 0;
    if (!r->bom_checked) {
        while (r->end - r->start < 3 && !r->eof) PILE_FORWARD_IF_ERR(fill(r, err));
        r->bom_checked = 1;
        if (r->end - r->start >= 3 && memcmp(r->buf + r->start, "\xEF\xBB\xBF", 3) == 0) {
            r->start += 3;
            r->scan = r->start;
            line->flags = PILE_LINE_HAD_BOM;
        }
    }
    for (;;) {
        char *nl = r->scan < r->end ? memchr(r->buf + r->scan, '\n', r->end - r->scan) : NULL;
        if (nl) {
            size_t at = (size_t)(nl - r->buf);
            size_t len = at - r->start;
            r->lineno++;
            line->lineno = r->lineno;
            line->offset = r->base + r->start;
            if (len > r->max_line) {
                line->data = NULL;
                line->len = len;
                line->status = PILE_LINE_TOO_LONG;
            } else {
                line->data = r->buf + r->start;
                line->len = len;
                line->status = PILE_LINE_COMPLETE;
                stash_padding(r, nl);
            }
            r->start = r->scan = at + 1;
            return 1;
        }
        r->scan = r->end;
        if (r->end - r->start > r->max_line) {
            r->lineno++;
            line->lineno = r->lineno;
            return skip_long(r, line, err);
        }
        if (r->eof) break;
        PILE_FORWARD_IF_ERR(fill(r, err));
    }
    if (r->start == r->end) return 0;
    /* the last line, without a '\n' */
    r->lineno++;
    line->lineno = r->lineno;
    line->offset = r->base + r->start;
    line->data = r->buf + r->start;
    line->len = r->end - r->start;
    line->status = r->truncated ? PILE_LINE_CUT : PILE_LINE_COMPLETE;
    stash_padding(r, r->buf + r->end);
    r->start = r->scan = r->end;
    return 1;
}

uint64_t pile_lines_bytes_read(const pile_lines *r)
{
    return r->zds ? r->file_pos - (r->in_len - r->in_pos) : r->file_pos;
}

uint64_t pile_lines_file_size(const pile_lines *r)
{
    return r->file_size;
}

int pile_lines_truncated(const pile_lines *r)
{
    return r->truncated;
}
