/* Streaming line reader for JSON lines, plain, zstd or gzip (the format told
 * by the magic number, never by the name). One window buffer holds the
 * decompressed bytes; lines are handed out in place (memchr split, no
 * per-line copy or malloc) with PILE_LINES_PADDING writable bytes after each,
 * made safe by stashing the bytes that padding overlaps and restoring them on
 * the next call. Memory stays bounded by the line cap: a longer line is
 * streamed past and only its length is kept. Block mode decodes straight
 * into the caller's buffer instead and cuts it into lines there, holding
 * back only the incomplete last line, so a reader that passes buffers of
 * lines to other threads copies nothing else. */
#include "pile_lines.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#define PLAIN_CHUNK (4u << 20) /* window size for plain files: one read() fills most of it */
#define ZSTD_CHUNK (1u << 20)  /* decompressed window and compressed read size for .zst and .gz */
#define MIN_READ (64u << 10)   /* make room before reading less than this */
#define TOP_UP (16u << 10)     /* block mode: what is read at a time past the block's size */
/* zstd's own limits (zstd.h keeps them behind ZSTD_STATIC_LINKING_ONLY): the
 * default window a decoder accepts, and the largest a 64-bit one can. */
#define WINDOW_LOG_DEFAULT 27
#define WINDOW_LOG_MAX 31

enum { CODEC_PLAIN, CODEC_ZSTD, CODEC_GZIP };

struct pile_lines {
    int fd;
    char *path;
    uint64_t file_size;
    uint64_t file_pos; /* bytes read from fd */
    size_t max_line;

    /* compressed input */
    int codec;
    ZSTD_DStream *zds;
    z_stream gz;
    int gz_ready;     /* inflateInit2 succeeded: inflateEnd is owed */
    int gz_member;    /* inside a gzip member (its end not yet seen) */
    char *in;
    size_t in_cap, in_len, in_pos;
    int in_eof;
    size_t zret;      /* last ZSTD_decompressStream hint: 0 at a frame boundary */
    int zstarted;     /* any compressed input was fed */
    uint64_t frame_at; /* compressed offset where the current zstd frame began */
    int window_log;   /* ZSTD_d_windowLogMax */
    const char *window_flag;
    size_t dec_bytes; /* the most memory the decompressor has held */

    /* window: buf[start..end) is decompressed data not yet handed out;
     * buf has cap bytes, of which the last PILE_LINES_PADDING are never filled */
    char *buf;
    size_t cap, start, end, scan; /* scan: no '\n' in buf[start..scan) */
    uint64_t base;                /* decompressed offset of buf[0] */
    int eof;                      /* no more data will arrive */
    int truncated;
    int bom_checked;
    int block_end; /* block mode handed out the last line */
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

/* RFC 1952 section 2.3.1: ID1 ID2 and CM = 8 (deflate), the only method. */
static int is_gzip_magic(const unsigned char *p, size_t n)
{
    return n >= 3 && p[0] == 0x1f && p[1] == 0x8b && p[2] == 8;
}

/* zlib's allocations, counted so that the decoder's memory can be reported. */
static voidpf gz_alloc(voidpf opaque, uInt items, uInt size)
{
    pile_lines *r = opaque;
    size_t n = (size_t)items * size;
    void *p = malloc(n ? n : 1);
    if (p) r->dec_bytes += n;
    return p;
}

static void gz_free(voidpf opaque, voidpf p)
{
    (void)opaque;
    free(p);
}

/* Window size a zstd frame header asks for (RFC 8878 section 3.1.1.1), or 0
 * when h[0..n) is not a whole zstd frame header. */
static uint64_t zstd_header_window(const unsigned char *h, size_t n)
{
    if (n < 6 || (uint32_t)(h[0] | h[1] << 8 | h[2] << 16 | (uint32_t)h[3] << 24) != ZSTD_MAGICNUMBER) return 0;
    unsigned fhd = h[4], fcs_flag = fhd >> 6, single = (fhd >> 5) & 1, did_flag = fhd & 3;
    if (!single) {
        unsigned wd = h[5], exponent = wd >> 3, mantissa = wd & 7;
        uint64_t base = (uint64_t)1 << (10 + exponent);
        return base + base / 8 * mantissa;
    }
    /* a single-segment frame's window is its content size */
    static const unsigned did_bytes[4] = {0, 1, 2, 4}, fcs_bytes[4] = {1, 2, 4, 8};
    size_t at = 5 + did_bytes[did_flag], k = fcs_bytes[fcs_flag];
    if (n < at + k) return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < k; i++) v |= (uint64_t)h[at + i] << (8 * i);
    return fcs_flag == 1 ? v + 256 : v;
}

static void mib_text(char *out, size_t cap, uint64_t bytes)
{
    if (bytes >= (1u << 20)) snprintf(out, cap, "%.0f MiB", (double)bytes / 1048576.0);
    else snprintf(out, cap, "%.0f KiB", (double)bytes / 1024.0);
}

/* The message for a frame whose window is over the limit: what it needs,
 * what is allowed, and (when the caller named one) the flag that allows it.
 * Never "corrupt": the data is fine, the limit is ours. need 0: unknown. */
static int window_error(const char *path, uint64_t frame_at, uint64_t need, int window_log, const char *flag,
                        pile_err *err)
{
    char allowed[32], needs[32], hint[96] = "", writer[48] = "";
    mib_text(allowed, sizeof allowed, (uint64_t)1 << window_log);
    if (!need)
        return pile_err_set(err, PILE_ELIMIT,
                            "cannot read '%s': a zstd frame near byte %llu needs a window over the %s allowed%s%s",
                            path, (unsigned long long)frame_at, allowed, flag ? "; raise it with " : "",
                            flag ? flag : "");
    int log = 10;
    while (log < 63 && ((uint64_t)1 << log) < need) log++;
    mib_text(needs, sizeof needs, need);
    if (log > WINDOW_LOG_MAX)
        return pile_err_set(err, PILE_ELIMIT,
                            "cannot read '%s': its zstd frame at byte %llu asks for a %s window, more than the 2048 MiB "
                            "any zstd decoder accepts",
                            path, (unsigned long long)frame_at, needs);
    if (log > WINDOW_LOG_DEFAULT) snprintf(writer, sizeof writer, " (as zstd --long=%d writes)", log);
    if (flag) {
        uint64_t mb = log >= 20 ? (uint64_t)1 << (log - 20) : 1;
        snprintf(hint, sizeof hint, "; allow it with %s %llu", flag, (unsigned long long)mb);
    }
    return pile_err_set(err, PILE_ELIMIT, "cannot read '%s': its zstd frame at byte %llu needs a %s window%s, over the %s allowed%s",
                        path, (unsigned long long)frame_at, needs, writer, allowed, hint);
}

static int window_log_of(const pile_lines_opts *opts)
{
    if (!opts || !opts->max_window) return WINDOW_LOG_DEFAULT;
    int log = 10;
    while (log < WINDOW_LOG_MAX && ((uint64_t)2 << log) <= opts->max_window) log++;
    return log;
}

/* The frame the decoder refused: read its header again to say what it needs. */
static int frame_window_error(pile_lines *r, pile_err *err)
{
    unsigned char h[18];
    ssize_t k = pread(r->fd, h, sizeof h, (off_t)r->frame_at);
    uint64_t need = k > 0 ? zstd_header_window(h, (size_t)k) : 0;
    return window_error(r->path, r->frame_at, need, r->window_log, r->window_flag, err);
}

/* The first zstd frame's header (past any skippable frames, as pzstd writes
 * them): its window into *window (0: not zstd, or no whole header), its
 * byte offset into *at. */
static int first_frame(const char *path, uint64_t *window, uint64_t *at, pile_err *err)
{
    *window = *at = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return pile_err_sys(err, errno == ENOENT ? PILE_ENOENT : PILE_EIO, errno, "cannot open '%s'", path);
    for (int frames = 0; frames < 64; frames++) {
        unsigned char h[18];
        ssize_t k = pread(fd, h, sizeof h, (off_t)*at);
        if (k < 8) break;
        uint32_t m = (uint32_t)h[0] | (uint32_t)h[1] << 8 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 24;
        if ((m & ZSTD_MAGIC_SKIPPABLE_MASK) == ZSTD_MAGIC_SKIPPABLE_START) {
            *at += 8 + ((uint64_t)h[4] | (uint64_t)h[5] << 8 | (uint64_t)h[6] << 16 | (uint64_t)h[7] << 24);
            continue;
        }
        *window = zstd_header_window(h, (size_t)k);
        break;
    }
    close(fd);
    return 0;
}

int pile_lines_first_window(const char *path, uint64_t *window, pile_err *err)
{
    uint64_t at;
    return first_frame(path, window, &at, err);
}

int pile_lines_check_window(const char *path, const pile_lines_opts *opts, pile_err *err)
{
    uint64_t need, at;
    PILE_FORWARD_IF_ERR(first_frame(path, &need, &at, err));
    int log = window_log_of(opts);
    if (need > (uint64_t)1 << log) return window_error(path, at, need, log, opts ? opts->window_flag : NULL, err);
    return 0;
}

void pile_lines_close(pile_lines *r)
{
    if (!r) return;
    if (r->fd >= 0) close(r->fd);
    ZSTD_freeDStream(r->zds);
    if (r->gz_ready) inflateEnd(&r->gz);
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
    r->window_log = window_log_of(opts);
    r->window_flag = opts ? opts->window_flag : NULL;
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

    const unsigned char *magic = (const unsigned char *)r->in;
    if (is_zstd_magic(magic, r->in_len)) {
        r->codec = CODEC_ZSTD;
        r->zds = ZSTD_createDStream();
        if (!r->zds) goto nomem;
        ZSTD_initDStream(r->zds);
        if (ZSTD_isError(ZSTD_DCtx_setParameter(r->zds, ZSTD_d_windowLogMax, r->window_log))) goto nomem;
        r->dec_bytes = ZSTD_sizeof_DStream(r->zds);
    } else if (is_gzip_magic(magic, r->in_len)) {
        r->codec = CODEC_GZIP;
        r->gz.zalloc = gz_alloc;
        r->gz.zfree = gz_free;
        r->gz.opaque = r;
        int zr = inflateInit2(&r->gz, 16 + MAX_WBITS); /* 16: the gzip wrapper only */
        if (zr == Z_MEM_ERROR) goto nomem;
        if (zr != Z_OK) {
            pile_lines_close(r);
            return pile_err_set(err, PILE_EIO, "cannot read '%s': zlib: %s", path, zError(zr));
        }
        r->gz_ready = 1;
    }
    if (r->codec != CODEC_PLAIN) {
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

static int fill_plain(pile_lines *r, char *dst, size_t room, size_t *got, pile_err *err)
{
    ssize_t k = read_some(r->fd, dst, room);
    if (k < 0) return pile_err_sys(err, PILE_EIO, errno, "cannot read '%s'", r->path);
    if (k == 0) r->eof = 1;
    r->file_pos += (uint64_t)k;
    *got = (size_t)k;
    return 0;
}

/* Reads the next compressed block once the last one is used up. */
static int refill_input(pile_lines *r, pile_err *err)
{
    if (r->in_pos < r->in_len || r->in_eof) return 0;
    ssize_t k = read_some(r->fd, r->in, r->in_cap);
    if (k < 0) return pile_err_sys(err, PILE_EIO, errno, "cannot read '%s'", r->path);
    r->file_pos += (uint64_t)k;
    r->in_len = (size_t)k;
    r->in_pos = 0;
    if (k == 0) r->in_eof = 1;
    return 0;
}

/* Offset in the file of the next compressed byte not yet consumed. */
static uint64_t compressed_at(const pile_lines *r)
{
    return r->file_pos - (r->in_len - r->in_pos);
}

/* Decompresses into dst[0..room) until some output arrives or the input
 * ends. The end of input with the decoder still inside a frame is a clean
 * cut; a ZSTD error is corruption. */
static int fill_zstd(pile_lines *r, char *dst, size_t room, size_t *got, pile_err *err)
{
    ZSTD_outBuffer out = {dst, room, 0};
    while (out.pos == 0) {
        PILE_FORWARD_IF_ERR(refill_input(r, err));
        ZSTD_inBuffer in = {r->in, r->in_len, r->in_pos};
        int starved = r->in_eof && in.pos == in.size;
        if (!starved) r->zstarted = 1;
        /* after a frame's end (or at the start) the next byte begins a frame */
        if (r->zret == 0 && !starved) r->frame_at = compressed_at(r);
        size_t ret = ZSTD_decompressStream(r->zds, &out, &in);
        r->in_pos = in.pos;
        size_t held = ZSTD_sizeof_DStream(r->zds);
        if (held > r->dec_bytes) r->dec_bytes = held;
        if (ZSTD_isError(ret) && ZSTD_getErrorCode(ret) == ZSTD_error_frameParameter_windowTooLarge)
            return frame_window_error(r, err);
        if (ZSTD_isError(ret)) {
            return pile_err_set(err, PILE_ECORRUPT, "corrupt zstd data in '%s' near compressed byte %llu: %s",
                                r->path, (unsigned long long)compressed_at(r), ZSTD_getErrorName(ret));
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
    *got = out.pos;
    return 0;
}

/* Inflates into dst[0..room) until some output arrives or the input ends.
 * Members follow one another (RFC 1952 section 2.2: concatenated gzip files
 * are one file, as pigz and bgzip write them); the input ending inside a
 * member is a clean cut, anything else zlib refuses is corruption. */
static int fill_gzip(pile_lines *r, char *dst, size_t room, size_t *got, pile_err *err)
{
    z_stream *z = &r->gz;
    uInt avail = room > UINT_MAX ? UINT_MAX : (uInt)room;
    z->next_out = (Bytef *)dst;
    z->avail_out = avail;
    while (z->avail_out == avail) {
        PILE_FORWARD_IF_ERR(refill_input(r, err));
        if (r->in_pos == r->in_len) {
            r->eof = 1;
            r->truncated = r->gz_member;
            break;
        }
        z->next_in = (Bytef *)(r->in + r->in_pos);
        z->avail_in = (uInt)(r->in_len - r->in_pos);
        r->gz_member = 1;
        int zr = inflate(z, Z_NO_FLUSH);
        r->in_pos = r->in_len - z->avail_in;
        if (zr == Z_STREAM_END) {
            r->gz_member = 0;
            if (inflateReset(z) != Z_OK) return pile_err_set(err, PILE_EIO, "cannot read '%s': zlib reset", r->path);
        } else if (zr == Z_MEM_ERROR) {
            return pile_err_set(err, PILE_ENOMEM, "out of memory reading '%s'", r->path);
        } else if (zr != Z_OK && zr != Z_BUF_ERROR) {
            return pile_err_set(err, PILE_ECORRUPT, "corrupt gzip data in '%s' near compressed byte %llu: %s",
                                r->path, (unsigned long long)compressed_at(r), z->msg ? z->msg : zError(zr));
        }
    }
    *got = avail - z->avail_out;
    return 0;
}

/* Decoded (or, plain, read) bytes into dst[0..room): *got of them, 0 only
 * at the end of the data (r->eof). */
static int fill_data(pile_lines *r, char *dst, size_t room, size_t *got, pile_err *err)
{
    *got = 0;
    switch (r->codec) {
    case CODEC_ZSTD: return fill_zstd(r, dst, room, got, err);
    case CODEC_GZIP: return fill_gzip(r, dst, room, got, err);
    default: return fill_plain(r, dst, room, got, err);
    }
}

/* More data after the window's end. */
static int fill_window(pile_lines *r, pile_err *err)
{
    size_t got;
    PILE_FORWARD_IF_ERR(fill_data(r, r->buf + r->end, r->cap - PILE_LINES_PADDING - r->end, &got, err));
    r->end += got;
    return 0;
}

static int fill(pile_lines *r, pile_err *err)
{
    PILE_FORWARD_IF_ERR(make_room(r, err));
    return fill_window(r, err);
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
        PILE_FORWARD_IF_ERR(fill_window(r, err));
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

/* ------------------------------------------------------------ block mode */

/* A block being cut into lines: buf->data[0] is at stream offset `base`;
 * lines before `start` were handed out. */
typedef struct block {
    pile_buf *buf;
    uint64_t base;
    size_t start;
    int reported, stop;
    unsigned flags; /* for the next line handed out (the BOM's) */
    pile_lines_fn fn;
    void *ctx;
} block;

/* Hands out one line of `len` bytes at b->start (data NULL: too long; its
 * stream offset then given by `offset`). */
static int block_line(pile_lines *r, block *b, uint64_t offset, size_t len, pile_line_status status, pile_err *err)
{
    pile_line ln = {.data = status == PILE_LINE_TOO_LONG ? NULL : b->buf->data + b->start,
                    .len = len,
                    .lineno = ++r->lineno,
                    .offset = offset,
                    .status = status,
                    .flags = b->flags};
    b->flags = 0;
    b->reported = 1;
    int rc = b->fn(b->ctx, &ln, err);
    if (rc < 0) return rc;
    if (rc > 0) b->stop = 1;
    return 0;
}

/* Decodes more after b->buf's end: up to `want` bytes in all, then a
 * little at a time (TOP_UP) until the line that crosses it ends, so that
 * little is held back for the next block; as much as fits while one line
 * longer than a block is being read. Grows the buffer when it has no room
 * left (the caller grows it only while no line of this block is out). */
static int block_fill(pile_lines *r, block *b, size_t want, pile_err *err)
{
    pile_buf *buf = b->buf;
    if (buf->cap - buf->len < MIN_READ + PILE_LINES_PADDING &&
        pile_buf_reserve(buf, buf->len + MIN_READ + PILE_LINES_PADDING)) /* about doubles it */
        return pile_err_set(err, PILE_ENOMEM, "out of memory reading '%s'", r->path);
    size_t room = buf->cap - buf->len - PILE_LINES_PADDING, ask = want > buf->len ? want - buf->len : 0;
    if (ask < TOP_UP) ask = TOP_UP;
    if (!b->reported && buf->len >= want) ask = room;
    size_t got;
    PILE_FORWARD_IF_ERR(fill_data(r, buf->data + buf->len, ask < room ? ask : room, &got, err));
    buf->len += got;
    return 0;
}

/* Streams past the line at b->start, over max_line bytes with no end in
 * the buffer yet (and no line of this block out, so the buffer's bytes are
 * all this line's and may be overwritten): hands it out as too long, and
 * leaves the bytes after its end in the buffer, from b->start on. */
static int block_skip_long(pile_lines *r, block *b, pile_err *err)
{
    pile_buf *buf = b->buf;
    uint64_t offset = b->base + b->start, len = buf->len - b->start;
    for (;;) {
        b->base += buf->len;
        buf->len = b->start = 0;
        if (r->eof) break;
        size_t got;
        PILE_FORWARD_IF_ERR(fill_data(r, buf->data, buf->cap - PILE_LINES_PADDING, &got, err));
        buf->len = got;
        char *nl = memchr(buf->data, '\n', got);
        if (nl) {
            size_t k = (size_t)(nl - buf->data);
            len += k;
            b->start = k + 1;
            break;
        }
        len += got;
    }
    return block_line(r, b, offset, (size_t)len, PILE_LINE_TOO_LONG, err);
}

int pile_lines_next_block(pile_lines *r, pile_buf *buf, size_t want, pile_lines_fn fn, void *ctx, pile_err *err)
{
    buf->len = 0;
    if (r->block_end) return 0;
    /* the line held back last time (first: what open read of a plain file) */
    size_t carry = r->end - r->start;
    size_t need = (want > carry + MIN_READ ? want : carry + MIN_READ) + PILE_LINES_PADDING;
    if (buf->cap < need && pile_buf_reserve(buf, need))
        return pile_err_set(err, PILE_ENOMEM, "out of memory reading '%s'", r->path);
    if (carry) memcpy(buf->data, r->buf + r->start, carry);
    buf->len = carry;
    block b = {.buf = buf, .base = r->base + r->start, .fn = fn, .ctx = ctx};
    r->base += r->end;
    r->start = r->end = r->scan = 0;
    size_t scan = 0;
    while (!r->bom_checked) {
        if (buf->len < 3 && !r->eof) {
            PILE_FORWARD_IF_ERR(block_fill(r, &b, want, err));
            continue;
        }
        r->bom_checked = 1;
        if (buf->len >= 3 && memcmp(buf->data, "\xEF\xBB\xBF", 3) == 0) {
            b.start = scan = 3;
            b.flags = PILE_LINE_HAD_BOM;
        }
    }
    for (;;) {
        char *nl;
        while (!b.stop && (nl = memchr(buf->data + scan, '\n', buf->len - scan)) != NULL) {
            size_t at = (size_t)(nl - buf->data), len = at - b.start;
            PILE_FORWARD_IF_ERR(block_line(r, &b, b.base + b.start,
                                           len, len > r->max_line ? PILE_LINE_TOO_LONG : PILE_LINE_COMPLETE, err));
            b.start = scan = at + 1;
            if (b.start >= want) b.stop = 1;
        }
        if (b.stop) break;
        scan = buf->len;
        size_t partial = buf->len - b.start;
        if (r->eof) {
            /* the last line, without a '\n' */
            if (partial)
                PILE_FORWARD_IF_ERR(block_line(r, &b, b.base + b.start, partial,
                                               partial > r->max_line ? PILE_LINE_TOO_LONG
                                               : r->truncated        ? PILE_LINE_CUT
                                                                     : PILE_LINE_COMPLETE,
                                               err));
            b.start = buf->len;
            r->block_end = 1;
            break;
        }
        if (partial > r->max_line) {
            /* the next block streams past it, or this one, which it ends */
            if (!b.reported) PILE_FORWARD_IF_ERR(block_skip_long(r, &b, err));
            break;
        }
        /* the buffer grows only while no line is out: their data points into it */
        if (b.reported && buf->cap - buf->len < MIN_READ + PILE_LINES_PADDING) break;
        PILE_FORWARD_IF_ERR(block_fill(r, &b, want, err));
    }
    /* hold back what follows the last line handed out */
    size_t rest = buf->len - b.start;
    if (rest + PILE_LINES_PADDING > r->cap) {
        char *nb = realloc(r->buf, rest + PILE_LINES_PADDING);
        if (!nb) return pile_err_set(err, PILE_ENOMEM, "out of memory reading '%s'", r->path);
        r->buf = nb;
        r->cap = rest + PILE_LINES_PADDING;
    }
    if (rest) memcpy(r->buf, buf->data + b.start, rest);
    r->end = rest;
    r->base = b.base + b.start;
    memset(buf->data + buf->len, 0, PILE_LINES_PADDING);
    return r->block_end ? 0 : 1;
}

uint64_t pile_lines_bytes_read(const pile_lines *r)
{
    return r->codec != CODEC_PLAIN ? compressed_at(r) : r->file_pos;
}

size_t pile_lines_decoder_bytes(const pile_lines *r)
{
    return r->dec_bytes;
}

const char *pile_lines_format(const pile_lines *r)
{
    return r->codec == CODEC_ZSTD ? "zstd" : r->codec == CODEC_GZIP ? "gzip" : "plain";
}

uint64_t pile_lines_file_size(const pile_lines *r)
{
    return r->file_size;
}

int pile_lines_truncated(const pile_lines *r)
{
    return r->truncated;
}

/* The memory limit of this process's cgroup (v2, else v1), or UINT64_MAX. */
static uint64_t cgroup_limit(void)
{
    static const char *const files[] = {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        FILE *f = fopen(files[i], "r");
        if (!f) continue;
        unsigned long long v;
        int got = fscanf(f, "%llu", &v);
        fclose(f);
        if (got == 1) return (uint64_t)v;
    }
    return UINT64_MAX;
}

uint64_t pile_lines_window_fit(uint64_t reserved)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    uint64_t mem = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
    uint64_t cg = cgroup_limit();
    if (cg < mem) mem = cg;
    uint64_t half = mem > reserved ? (mem - reserved) / 2 : 0;
    int log = WINDOW_LOG_DEFAULT;
    while (log < WINDOW_LOG_MAX && ((uint64_t)2 << log) <= half) log++;
    return (uint64_t)1 << log;
}
