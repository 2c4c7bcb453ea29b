/* Streaming line reader for JSON lines, plain or compressed with zstd or
 * gzip (streaming decompression, never a whole file in memory). Hands out one line at a time
 * with the padding simdjson wants after it, so the JSON parser copies nothing,
 * or (block mode) many lines at once in a buffer the caller passes on.
 * An opaque reader is used by one thread at a time. */
#ifndef PILE_LINES_H
#define PILE_LINES_H

#include <stddef.h>
#include <stdint.h>

#include "pile_buf.h"
#include "pile_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Writable bytes guaranteed after line->data[line->len] (>= SIMDJSON_PADDING). */
#define PILE_LINES_PADDING 64

/* Default cap on one line; a longer line is skipped (streamed past with
 * bounded memory) and reported as PILE_LINE_TOO_LONG. */
#define PILE_LINES_DEFAULT_MAX (64u << 20)

typedef enum pile_line_status {
    PILE_LINE_COMPLETE = 0,  /* a whole line (terminated by '\n', or the last line of a file without one) */
    PILE_LINE_TOO_LONG = 1,  /* longer than max_line: data is NULL, len is the true length */
    PILE_LINE_CUT = 2,       /* the partial last line of a truncated .zst / .gz stream: data holds what arrived */
} pile_line_status;

/* Bit flags in pile_line.flags */
#define PILE_LINE_HAD_BOM 1u /* a UTF-8 BOM at the start of the file was removed from this (first) line */

typedef struct pile_line {
    char *data;         /* the line without its '\n' ('\r' is kept); writable; valid until the next call */
    size_t len;
    uint64_t lineno;    /* 1-based line number in the file */
    uint64_t offset;    /* byte offset of the line's start in the decompressed stream */
    pile_line_status status;
    unsigned flags;
} pile_line;

typedef struct pile_lines_opts {
    size_t max_line;    /* 0: PILE_LINES_DEFAULT_MAX */
    /* Largest zstd window accepted, in bytes, rounded down to a power of two
     * (1 KiB to 2 GiB; zstd --long=31 writes 2 GiB windows). The decoder
     * holds about one window. 0: 128 MiB, zstd's own default. A frame asking
     * for more is PILE_ELIMIT saying what it needs, never corruption. */
    uint64_t max_window;
    const char *window_flag; /* the option that raises max_window, named in that message (NULL: none) */
} pile_lines_opts;

typedef struct pile_lines pile_lines;

/* Opens path; zstd and gzip are detected by their magic numbers, not by the
 * name (a gzip file may hold several members, read as one stream).
 * opts may be NULL. On failure *out is NULL and err says why. */
int pile_lines_open(pile_lines **out, const char *path, const pile_lines_opts *opts, pile_err *err);

/* Reads the header of the first zstd frame of path (past any skippable
 * frames) and fails as pile_lines_next would if its window is over
 * opts->max_window: so a run can refuse before its first step. 0 for a
 * frame within the bound and for a file that is not zstd. */
int pile_lines_check_window(const char *path, const pile_lines_opts *opts, pile_err *err);

/* The window the first zstd frame of path asks for (past any skippable
 * frames), in bytes: about what its decoder will hold. 0 for a file that is
 * not zstd. Fails only when path cannot be opened. */
int pile_lines_first_window(const char *path, uint64_t *window, pile_err *err);
/* Frees; accepts NULL. */
void pile_lines_close(pile_lines *r);

/* Next line: returns 1 with *line filled, 0 at the end of the file, or a
 * negative PILE_E* (an I/O error, corrupt zstd or gzip data other than a
 * clean cut, with the byte offset in err; PILE_ELIMIT for a zstd window over
 * opts->max_window). A truncated compressed stream is not an error: every
 * complete line is returned, then the cut tail as PILE_LINE_CUT (if
 * non-empty), then 0, and pile_lines_truncated() turns true. */
int pile_lines_next(pile_lines *r, pile_line *line, pile_err *err);

/* Receives one line of pile_lines_next_block: 0 to go on, 1 to end the
 * block after this line, or a negative PILE_E* (err filled), which the
 * block call returns. */
typedef int (*pile_lines_fn)(void *ctx, const pile_line *line, pile_err *err);

/* Block mode, for a reader that hands lines to other threads in batches:
 * the data is decompressed (or, plain, read) straight into `buf`, a buffer
 * the caller owns and may pass on, and cut into lines there, so no line is
 * copied. buf's content is replaced: the line the last call held back
 * (at most one, unless fn ended a block early), then new data, until the
 * whole lines in it reach `want` bytes, fn ends the block, or the file
 * ends; it grows (pile_buf_reserve) only for a line that does not fit.
 * fn gets each line in order, as pile_lines_next would hand them out: data
 * points into buf (valid until buf is changed), the bytes after each line
 * up to data + len + PILE_LINES_PADDING lie inside buf (the next line's, or
 * zeros after the last), and the caller may write there once the reader
 * is done with buf (this call returned). The incomplete line at the end is
 * held back (copied into the reader) for the next call. Returns 1 when
 * more may follow, 0 when the file ended (this call's lines were its last;
 * later calls hand out none), or a negative PILE_E* as pile_lines_next, or
 * fn's. Use either this or pile_lines_next on one reader, not both. */
int pile_lines_next_block(pile_lines *r, pile_buf *buf, size_t want, pile_lines_fn fn, void *ctx, pile_err *err);

/* Bytes of the file consumed so far (compressed bytes for .zst / .gz): for progress. */
uint64_t pile_lines_bytes_read(const pile_lines *r);

/* The most memory the decompressor has held so far (zstd: its window and
 * buffers, gzip: zlib's state and 32 KiB window; 0 for a plain file). */
size_t pile_lines_decoder_bytes(const pile_lines *r);

/* "plain", "zstd" or "gzip". */
const char *pile_lines_format(const pile_lines *r);

/* A zstd window bound that fits this machine: half of the memory it has
 * (the smaller of physical memory and this process's cgroup limit) less
 * `reserved` bytes, between 128 MiB and 2 GiB, as a power of two. */
uint64_t pile_lines_window_fit(uint64_t reserved);

/* Size of the file on disk. */
uint64_t pile_lines_file_size(const pile_lines *r);

/* After pile_lines_next returned 0: nonzero when the stream ended inside a zstd frame or gzip member. */
int pile_lines_truncated(const pile_lines *r);

#ifdef __cplusplus
}
#endif

#endif
