/* The shard writer (streams rows to "<path>.tmp", tables kept in memory,
 * header last, then fsync + rename), the mmap reader (cheap structural checks
 * at open) and verification (checksums and every invariant, first failure named).
 *
 * Byte layout, version 2 (shards/FORMAT.md has the full field tables;
 * version 1, still read, is the same without the row checksum table).
 * Every integer is LITTLE-ENDIAN; the header stores the byte-order mark
 * 0x01020304 and this file refuses to compile on a big-endian host, so the
 * structs below are the bytes on disk.
 *
 *   0      +--------------------------------------------------------------+
 *          | header (256 B): "PILESHRD" version header_size byte_order    |
 *          |   flags token_bytes max_length vocab_size eot_id pad_id      |
 *          |   pack split row_count doc_count token_count subset_count    |
 *          |   tokenizer_fp[16] {data,rows,docs,subsets}{offset,size}     |
 *          |   {data,rows,docs,subsets}_xxh3 checks_{offset,size,xxh3}    |
 *          |   reserved header_xxh3                                       |
 *   256    +--------------------------------------------------------------+
 *          | zeros                                                        |
 *   4096   +--------------------------------------------------------------+
 *          | token data: row i at 4096 + i*max_length*W, W = 2 or 4;      |
 *          |   length(i) true ids then pad_id                             |
 *          +--------------------------------------------------------------+
 *          | zeros to a multiple of 8                                     |
 *   rows   +--------------------------------------------------------------+
 *          | row table: {u64 first_doc, u32 length, u16 lead_subset,      |
 *          |             u16 flags} x row_count                           |
 *   docs   +--------------------------------------------------------------+
 *          | doc table: {u32 offset, u16 subset, u16 flags} x doc_count   |
 *   subs   +--------------------------------------------------------------+
 *          | subset table: u32 count, {u16 len, len bytes UTF-8} x count  |
 *          +--------------------------------------------------------------+
 *          | zeros to a multiple of 8                                     |
 *   checks +--------------------------------------------------------------+
 *          | row checksums: u64 x row_count; row i's is XXH3-64, seed i,  |
 *          |   of its row entry, its document entries, its token data     |
 *   end    +--------------------------------------------------------------+
 */
#include "pile_shards.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>
/* XXH3_state_t's definition, so that a row is hashed with a state on the
 * reader's stack: no allocation per row, any number of threads at once. */
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "pile_fs.h"
#include "pile_progress.h"
#include "pile_utf8.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "pile shards are little-endian and this build reads them in place: port the reader first"
#endif

#define SHARD_MAGIC "PILESHRD"
#define SHARD_HEADER_SIZE 256u
#define SHARD_DATA_OFFSET 4096u
#define SHARD_BYTE_ORDER 0x01020304u
/* A bound on each section's size: far beyond any real shard, and small enough
 * that the section ends summed from the sizes stay below 2^63 (no wrap-around). */
#define SECTION_MAX (UINT64_C(1) << 61)
/* The largest subset table a writer makes: a count and 65536 names of 65535 bytes. */
#define SUBSETS_SIZE_MAX (4u + UINT64_C(65536) * (2u + 65535u))
#define ROW_CONTINUES 1u
#define ROW_KNOWN_FLAGS ROW_CONTINUES
#define DOC_KNOWN_FLAGS PILE_DOC_CONTINUED
/* Token data leaves in large aligned blocks so that the file can be opened
 * O_DIRECT: the blocks go from the buffer to the disk without being copied
 * into the page cache (the copy and its writeback cost more CPU than the
 * rest of the writer). The tail of the file, whose size is not a multiple
 * of the block, is written through the page cache. */
#define WRITE_BUF_BYTES (4u << 20)
#define DIRECT_ALIGN 4096u

typedef struct shard_header {
    char magic[8];
    uint32_t version;
    uint32_t header_size;
    uint32_t byte_order;
    uint32_t flags;
    uint32_t token_bytes;
    uint32_t max_length;
    uint32_t vocab_size;
    uint32_t eot_id;
    uint32_t pad_id;
    uint16_t pack;
    uint16_t split;
    uint64_t row_count;
    uint64_t doc_count;
    uint64_t token_count;
    uint32_t subset_count;
    uint32_t reserved0;
    uint8_t tokenizer_fp[PILE_SHARD_FP_BYTES];
    uint64_t data_offset, data_size;
    uint64_t rows_offset, rows_size;
    uint64_t docs_offset, docs_size;
    uint64_t subsets_offset, subsets_size;
    uint64_t data_xxh3, rows_xxh3, docs_xxh3, subsets_xxh3;
    /* version 2; reserved (zero, ignored) in version 1 */
    uint64_t checks_offset, checks_size, checks_xxh3;
    uint8_t reserved1[32];
    uint64_t header_xxh3;
} shard_header;

typedef struct shard_row {
    uint64_t first_doc;
    uint32_t length;
    uint16_t lead_subset;
    uint16_t flags;
} shard_row;

_Static_assert(sizeof(shard_header) == SHARD_HEADER_SIZE, "header is 256 bytes on disk");
_Static_assert(offsetof(shard_header, tokenizer_fp) == 80, "header layout");
_Static_assert(offsetof(shard_header, data_offset) == 96, "header layout");
_Static_assert(offsetof(shard_header, data_xxh3) == 160, "header layout");
_Static_assert(offsetof(shard_header, checks_offset) == 192 && offsetof(shard_header, checks_xxh3) == 208,
               "header layout");
_Static_assert(offsetof(shard_header, header_xxh3) == 248, "header layout");
_Static_assert(sizeof(shard_row) == 16, "row entry is 16 bytes on disk");
_Static_assert(sizeof(pile_shard_doc) == 8, "doc entry is 8 bytes on disk");
_Static_assert(offsetof(pile_shard_doc, subset) == 4 && offsetof(pile_shard_doc, flags) == 6, "doc layout");

#if defined(__x86_64__) && defined(__GNUC__) && defined(__ELF__)
/* libxxhash's own AVX2 / AVX-512 dispatch (xxh_x86dispatch.h), where the
 * library was built with it: the same hash as XXH3_64bits_update, about twice
 * as fast as its SSE2 baseline. Weak, so a library without it still links. */
XXH_errorcode XXH3_64bits_update_dispatch(XXH3_state_t *state, const void *input, size_t len) __attribute__((weak));
XXH64_hash_t XXH3_64bits_dispatch(const void *input, size_t len) __attribute__((weak));
#define DATA_HASH_DISPATCH 1
#endif

static uint64_t data_hash(const void *p, size_t n)
{
#ifdef DATA_HASH_DISPATCH
    if (XXH3_64bits_dispatch) return XXH3_64bits_dispatch(p, n);
#endif
    return XXH3_64bits(p, n);
}

static void data_hash_update(XXH3_state_t *state, const void *p, size_t n)
{
#ifdef DATA_HASH_DISPATCH
    if (XXH3_64bits_update_dispatch) {
        XXH3_64bits_update_dispatch(state, p, n);
        return;
    }
#endif
    XXH3_64bits_update(state, p, n);
}

/* The start of row i's checksum (FORMAT.md, "Row checksum table"): XXH3-64 with
 * seed i over the row's table entry, its document entries and then its
 * token data, which the caller adds. The seed ties each row to its place,
 * so rows that trade places fail too. */
static void row_hash_begin(XXH3_state_t *st, uint64_t i, const shard_row *row, const pile_shard_doc *docs,
                           size_t ndocs)
{
    XXH3_64bits_reset_withSeed(st, i);
    XXH3_64bits_update(st, row, sizeof *row);
    if (ndocs) XXH3_64bits_update(st, docs, ndocs * sizeof *docs);
}

static uint64_t header_checksum(const shard_header *h)
{
    return XXH3_64bits(h, offsetof(shard_header, header_xxh3));
}

static uint32_t width_for_vocab(uint32_t vocab_size)
{
    return vocab_size <= 65536u ? 2u : 4u;
}

static uint64_t align_up(uint64_t x, uint64_t a)
{
    return (x + a - 1) / a * a;
}

/* ================================================================ writer */

/* The data section leaves through a ring of WRITE_BUF_BYTES buffers that
 * hold the file's bytes in order: file offset o lives in buffer
 * (o / WRITE_BUF_BYTES) % nbuf, at o % WRITE_BUF_BYTES. A row's place is
 * reserved (pos moves on by a row), its ids are put in place by any thread
 * (fill), and its table entry is committed; a buffer leaves (checksums, then
 * a direct write, by the I/O thread) once every byte of it is in place and
 * every row that begins in it is committed, so the rows' bytes can be
 * filled by many threads at once, in any order, and still leave in file
 * order, which is what the checksums need. */
struct pile_shard_writer {
    char *path;
    char *tmp_path;
    int fd;
    int direct; /* fd is O_DIRECT: only whole DIRECT_ALIGN blocks from an aligned buffer */
    int finished;
    atomic_int failed; /* a write or a fill failed: the file is incomplete, only close is useful */
    pile_err fail_err; /* why, for a failed fill (set once, under io_mu) */
    pile_shard_params params;
    uint32_t version; /* the format written: 1, or 2 with row checksums */
    uint32_t width;
    size_t row_bytes;
    uint64_t token_count;
    /* The checksums of the data section and (version 2) of each row are
     * taken as a buffer leaves, in file order, so one pass sees every row's
     * bytes in order even when a row is split between two buffers.
     * hash_skip: bytes at the front of the next span that are not data (the
     * header's room); hash_row: the row whose bytes come next, hash_left of
     * them still to come (0: it has not begun). The row's table entry and
     * document starts, which its checksum begins with, are in rows[],
     * docs[] and row_ndocs[] once committed; those arrays and sums[] are
     * grown only while the I/O thread is idle. */
    XXH3_state_t *data_hash;
    size_t hash_skip;
    uint64_t hash_row;
    size_t hash_left;
    uint32_t *row_ndocs; /* version 2: each row's document starts */
    size_t row_ndocs_cap;
    XXH3_state_t *row_hash; /* version 2: the row being hashed */
    uint64_t *sums;         /* version 2: each row's checksum */
    size_t sums_cap;
    /* the ring */
    unsigned char *ring;          /* nbuf * WRITE_BUF_BYTES, DIRECT_ALIGN-aligned */
    size_t nbuf;
    atomic_size_t *filled;        /* per buffer: bytes in place in its present lap */
    atomic_uint_fast64_t filled_total; /* data bytes filled since open */
    atomic_uint_fast64_t committed_end; /* file offset where the last committed row ends */
    uint64_t pos;                 /* file offset where the next reserved row begins */
    uint64_t written;             /* bytes that left the ring (a multiple of the buffer until finish); io_mu */
    uint64_t room_end;            /* written + the ring's size when last looked at (written only grows) */
    uint64_t reserved;            /* rows reserved (nrows + 1 while one awaits its commit) */
    /* The I/O thread (started when the first row reaches past the first
     * buffer; without it, no memory or no thread, the thread that reserves
     * rows writes buffers itself) touches fd, direct, the hash state and
     * the buffer leaving, only while io_busy. */
    int io_state; /* 0 not started, 1 running, -1 unavailable */
    int io_busy, io_quit, io_rc;
    double io_cpu; /* the I/O thread's CPU seconds, set as it ends */
    pile_err io_err;
    uv_thread_t io_thread;
    uv_mutex_t io_mu;
    uv_cond_t io_cv;
    shard_row *rows;
    size_t nrows, rows_cap;
    pile_shard_doc *docs;
    size_t ndocs, docs_cap;
    char **subsets;
    uint16_t *subset_lens;
    uint32_t nsubsets, subsets_cap;
    uint32_t *subset_slots; /* open addressing by XXH3 of the name: id + 1, 0 = empty */
    uint32_t nslots;        /* a power of two, at least twice nsubsets */
};

static int write_all(int fd, const void *data, size_t len, const char *path, pile_err *err)
{
    const char *p = data;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR) continue;
            return pile_err_sys(err, PILE_EIO, errno, "cannot write '%s'", path);
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

/* Back to writes through the page cache (a file system that turned a direct
 * write down, or the unaligned tail of the file). */
static int writer_undirect(pile_shard_writer *w, pile_err *err)
{
    if (!w->direct) return 0;
#ifdef O_DIRECT
    int fl = fcntl(w->fd, F_GETFL);
    if (fl < 0 || fcntl(w->fd, F_SETFL, fl & ~O_DIRECT) != 0)
        return pile_err_sys(err, PILE_EIO, errno, "cannot write '%s'", w->tmp_path);
#endif
    w->direct = 0;
    return 0;
}

/* Writes data[0..len) at the file's offset: whole blocks directly while the
 * file is O_DIRECT, the rest (and everything after a refusal) through the
 * page cache. */
static int writer_write_out(pile_shard_writer *w, const unsigned char *data, size_t len, pile_err *err)
{
    int rc = 0;
    size_t done = 0;
    if (len % DIRECT_ALIGN) rc = writer_undirect(w, err);
    while (!rc && w->direct && done < len) {
        ssize_t k = write(w->fd, data + done, len - done);
        if (k < 0 && errno == EINTR) continue;
        if (k > 0 && (size_t)k % DIRECT_ALIGN == 0) {
            done += (size_t)k;
            continue;
        }
        if (k < 0 && errno != EINVAL) {
            rc = pile_err_sys(err, PILE_EIO, errno, "cannot write '%s'", w->tmp_path);
            break;
        }
        /* turned down, or a short write that left the offset unaligned */
        if (k > 0) done += (size_t)k;
        rc = writer_undirect(w, err);
    }
    if (!rc && done < len) rc = write_all(w->fd, data + done, len - done, w->tmp_path, err);
    return rc;
}

/* Adds data bytes p[0, n), the next in the file, to the data section's
 * checksum and to their rows'; a row's is stored when its last byte is in.
 * Row by row, so that both passes over a piece find it in cache. */
static void hash_span(pile_shard_writer *w, const unsigned char *p, size_t n)
{
    if (w->version < 2) {
        data_hash_update(w->data_hash, p, n);
        return;
    }
    while (n) {
        if (!w->hash_left) {
            const shard_row *e = &w->rows[w->hash_row];
            row_hash_begin(w->row_hash, w->hash_row, e, w->docs + e->first_doc, w->row_ndocs[w->hash_row]);
            w->hash_left = w->row_bytes;
        }
        size_t k = n < w->hash_left ? n : w->hash_left;
        data_hash_update(w->data_hash, p, k);
        data_hash_update(w->row_hash, p, k);
        p += k;
        n -= k;
        w->hash_left -= k;
        if (!w->hash_left) {
            w->sums[w->hash_row] = XXH3_64bits_digest(w->row_hash);
            w->hash_row++;
        }
    }
}

static unsigned char *ring_at(const pile_shard_writer *w, uint64_t off)
{
    return w->ring + (size_t)((off / WRITE_BUF_BYTES) % w->nbuf) * WRITE_BUF_BYTES + (size_t)(off % WRITE_BUF_BYTES);
}

/* 1 when the buffer at `written` may leave: every byte of it in place and
 * every row that begins in it committed (io_mu held). */
static int ring_ready(pile_shard_writer *w)
{
    size_t k = (size_t)((w->written / WRITE_BUF_BYTES) % w->nbuf);
    return atomic_load(&w->filled[k]) == WRITE_BUF_BYTES &&
           atomic_load(&w->committed_end) >= w->written + WRITE_BUF_BYTES;
}

/* Checksums and writes the first len bytes of the buffer at `written`
 * (io_mu not held; by the I/O thread, or by the writer's thread when there
 * is none or the thread has ended). */
static int ring_leave(pile_shard_writer *w, size_t len, pile_err *err)
{
    const unsigned char *b = ring_at(w, w->written);
    size_t skip = w->hash_skip < len ? w->hash_skip : len;
    w->hash_skip -= skip;
    if (skip < len) hash_span(w, b + skip, len - skip);
    return writer_write_out(w, b, len, err);
}

/* The buffer at `written` has left (io_mu held). */
static void ring_advance(pile_shard_writer *w)
{
    atomic_store(&w->filled[(w->written / WRITE_BUF_BYTES) % w->nbuf], 0);
    w->written += WRITE_BUF_BYTES;
    uv_cond_broadcast(&w->io_cv);
}

static void writer_io_main(void *arg)
{
    pile_shard_writer *w = arg;
    uv_mutex_lock(&w->io_mu);
    for (;;) {
        while (!w->io_quit && (w->io_rc || !ring_ready(w))) uv_cond_wait(&w->io_cv, &w->io_mu);
        if (w->io_rc || !ring_ready(w)) break;
        w->io_busy = 1;
        uv_mutex_unlock(&w->io_mu);
        pile_err e;
        pile_err_clear(&e);
        int rc = ring_leave(w, WRITE_BUF_BYTES, &e);
        uv_mutex_lock(&w->io_mu);
        w->io_busy = 0;
        if (rc) {
            w->io_rc = rc;
            w->io_err = e;
            uv_cond_broadcast(&w->io_cv);
        } else {
            ring_advance(w);
        }
    }
    w->io_cpu = pile_cpu_now(); /* this thread's clock: read by the joiner */
    uv_mutex_unlock(&w->io_mu);
}

static void writer_io_stop(pile_shard_writer *w)
{
    if (w->io_state == 1) {
        uv_mutex_lock(&w->io_mu);
        w->io_quit = 1;
        uv_cond_broadcast(&w->io_cv);
        uv_mutex_unlock(&w->io_mu);
        uv_thread_join(&w->io_thread);
    }
    w->io_state = -1; /* from now on the writer's thread writes what is left */
}

/* The I/O thread, once rows reach past the first buffer. */
static void writer_io_start(pile_shard_writer *w)
{
    if (w->io_state) return;
    w->io_state = uv_thread_create(&w->io_thread, writer_io_main, w) == 0 ? 1 : -1;
}

/* The writer's error once it failed (a write, or a fill), or 0. */
static int writer_failed(pile_shard_writer *w, pile_err *err)
{
    if (!atomic_load(&w->failed)) return 0;
    uv_mutex_lock(&w->io_mu);
    int rc = w->fail_err.code ? w->fail_err.code : PILE_EIO;
    *err = w->fail_err;
    if (!w->fail_err.code) pile_err_set(err, PILE_EIO, "cannot go on with '%s': an earlier write failed", w->path);
    uv_mutex_unlock(&w->io_mu);
    return rc;
}

/* Marks the writer failed with err's message (the first one stays). */
static int writer_fail(pile_shard_writer *w, int rc, const pile_err *err)
{
    uv_mutex_lock(&w->io_mu);
    if (!atomic_load(&w->failed)) {
        w->fail_err = *err;
        w->fail_err.code = rc;
        atomic_store(&w->failed, 1);
    }
    uv_mutex_unlock(&w->io_mu);
    return rc;
}

/* Waits while the buffer at `written` must leave before off can be reached
 * (until written + ring > off); with `wait` 0, returns 1 instead of
 * waiting. Writes buffers itself when no I/O thread runs. */
static int ring_make_room(pile_shard_writer *w, uint64_t off, int wait, pile_err *err)
{
    uint64_t span = (uint64_t)w->nbuf * WRITE_BUF_BYTES;
    int rc = 0;
    if (off <= w->room_end) return 0; /* no lock for most rows */
    uv_mutex_lock(&w->io_mu);
    while (!w->io_rc && off > w->written + span) {
        if (!wait) {
            uv_mutex_unlock(&w->io_mu);
            return 1;
        }
        if (w->io_state != 1 && ring_ready(w)) {
            uv_mutex_unlock(&w->io_mu);
            pile_err e;
            pile_err_clear(&e);
            rc = ring_leave(w, WRITE_BUF_BYTES, &e);
            uv_mutex_lock(&w->io_mu);
            if (rc) {
                w->io_rc = rc;
                w->io_err = e;
            } else {
                ring_advance(w);
            }
            continue;
        }
        uv_cond_wait(&w->io_cv, &w->io_mu);
    }
    rc = w->io_rc;
    pile_err e = w->io_err;
    w->room_end = w->written + span;
    uv_mutex_unlock(&w->io_mu);
    if (rc) {
        writer_fail(w, rc, &e);
        *err = e;
    }
    return rc;
}

static void writer_free(pile_shard_writer *w)
{
    writer_io_stop(w);
    if (w->filled) {
        uv_cond_destroy(&w->io_cv);
        uv_mutex_destroy(&w->io_mu);
    }
    free(w->ring);
    free(w->filled);
    for (uint32_t i = 0; i < w->nsubsets; i++) free(w->subsets[i]);
    free(w->subsets);
    free(w->subset_lens);
    free(w->subset_slots);
    free(w->rows);
    free(w->docs);
    free(w->sums);
    free(w->row_ndocs);
    if (w->data_hash) XXH3_freeState(w->data_hash);
    if (w->row_hash) XXH3_freeState(w->row_hash);
    free(w->path);
    free(w->tmp_path);
    free(w);
}

int pile_shard_writer_open(pile_shard_writer **out, const char *path, const pile_shard_params *params,
                           pile_err *err)
{
    *out = NULL;
    if (!params || !path)
        return pile_err_set(err, PILE_EINVAL, "cannot start shard: no path or parameters given");
    if (params->max_length == 0)
        return pile_err_set(err, PILE_EINVAL, "cannot start shard '%s': max_length is 0", path);
    if (params->vocab_size == 0)
        return pile_err_set(err, PILE_EINVAL, "cannot start shard '%s': vocab_size is 0", path);
    if (params->eot_id >= params->vocab_size)
        return pile_err_set(err, PILE_EINVAL, "cannot start shard '%s': eot_id %" PRIu32 " >= vocab_size %" PRIu32,
                            path, params->eot_id, params->vocab_size);
    uint32_t width = width_for_vocab(params->vocab_size);
    if (width == 2 && params->pad_id > 0xFFFFu)
        return pile_err_set(err, PILE_EINVAL, "cannot start shard '%s': pad_id %" PRIu32 " does not fit 2-byte tokens",
                            path, params->pad_id);
    if (params->pack != PILE_PACK_CONCAT && params->pack != PILE_PACK_BEST_FIT)
        return pile_err_set(err, PILE_EINVAL, "cannot start shard '%s': unknown pack mode %d", path, (int)params->pack);
    if (params->split != PILE_SPLIT_TRAIN && params->split != PILE_SPLIT_VAL && params->split != PILE_SPLIT_TEST)
        return pile_err_set(err, PILE_EINVAL, "cannot start shard '%s': unknown split %d", path, (int)params->split);
    uint32_t version = params->version ? params->version : PILE_SHARD_VERSION;
    if (version < PILE_SHARD_VERSION_MIN || version > PILE_SHARD_VERSION)
        return pile_err_set(err, PILE_EINVAL, "cannot start shard '%s': this build writes versions %d to %d, not %"
                            PRIu32, path, PILE_SHARD_VERSION_MIN, PILE_SHARD_VERSION, params->version);

    pile_shard_writer *w = calloc(1, sizeof *w);
    if (!w) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    w->fd = -1;
    w->params = *params;
    w->version = version;
    w->width = width;
    w->row_bytes = (size_t)params->max_length * width;
    /* the ring holds a row wherever it begins in a buffer, and one more */
    size_t need = (w->row_bytes + WRITE_BUF_BYTES - 1) / WRITE_BUF_BYTES + 1;
    w->nbuf = params->buffers > need ? params->buffers : need;
    size_t plen = strlen(path);
    w->path = strdup(path);
    w->tmp_path = malloc(plen + 5);
    void *ring = NULL;
    if (w->nbuf <= SIZE_MAX / WRITE_BUF_BYTES && posix_memalign(&ring, DIRECT_ALIGN, w->nbuf * WRITE_BUF_BYTES) == 0)
        w->ring = ring;
    w->filled = calloc(w->nbuf, sizeof *w->filled);
    w->data_hash = XXH3_createState();
    if (version >= 2) w->row_hash = XXH3_createState();
    int sync_ok = 0;
    if (w->filled) {
        if (uv_mutex_init(&w->io_mu) == 0) {
            if (uv_cond_init(&w->io_cv) == 0) sync_ok = 1;
            else uv_mutex_destroy(&w->io_mu);
        }
        if (!sync_ok) {
            free(w->filled);
            w->filled = NULL;
        }
    }
    if (!w->path || !w->tmp_path || !w->ring || !w->filled || !w->data_hash || (version >= 2 && !w->row_hash)) {
        writer_free(w);
        return pile_err_set(err, PILE_ENOMEM, "out of memory");
    }
    memcpy(w->tmp_path, path, plen);
    memcpy(w->tmp_path + plen, ".tmp", 5);
    XXH3_64bits_reset(w->data_hash);

#ifdef O_DIRECT
    w->fd = open(w->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_DIRECT, 0644);
    w->direct = w->fd >= 0;
#endif
    if (w->fd < 0) w->fd = open(w->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        int rc = pile_err_sys(err, PILE_EIO, errno, "cannot create '%s'", w->tmp_path);
        writer_free(w);
        return rc;
    }
    /* Room for the header, which is written last. */
    memset(w->ring, 0, SHARD_DATA_OFFSET);
    atomic_store(&w->filled[0], SHARD_DATA_OFFSET);
    atomic_store(&w->committed_end, SHARD_DATA_OFFSET);
    w->pos = SHARD_DATA_OFFSET;
    w->hash_skip = SHARD_DATA_OFFSET;
    *out = w;
    return 0;
}

/* The slot of `name` in the subset hash, or of the empty slot where it would go. */
static uint32_t subset_slot(const pile_shard_writer *w, const char *name, size_t len)
{
    uint32_t mask = w->nslots - 1, h = (uint32_t)XXH3_64bits(name, len) & mask;
    for (;;) {
        uint32_t id1 = w->subset_slots[h];
        if (!id1 || (w->subset_lens[id1 - 1] == len && memcmp(w->subsets[id1 - 1], name, len) == 0)) return h;
        h = (h + 1) & mask;
    }
}

/* Doubles the hash (rehashing every name) so that it stays at most half full. */
static int subset_rehash(pile_shard_writer *w)
{
    uint32_t n = w->nslots ? w->nslots * 2 : 64;
    uint32_t *slots = calloc(n, sizeof *slots);
    if (!slots) return PILE_ENOMEM;
    free(w->subset_slots);
    w->subset_slots = slots;
    w->nslots = n;
    for (uint32_t i = 0; i < w->nsubsets; i++) slots[subset_slot(w, w->subsets[i], w->subset_lens[i])] = i + 1;
    return 0;
}

int pile_shard_writer_subset(pile_shard_writer *w, const char *name, size_t len, uint16_t *id, pile_err *err)
{
    if (len == 0 || len > 0xFFFFu)
        return pile_err_set(err, PILE_EINVAL, "cannot add subset to '%s': name length %zu is not in 1..65535",
                            w->path, len);
    if (!w->nslots && subset_rehash(w)) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    uint32_t slot = subset_slot(w, name, len);
    if (w->subset_slots[slot]) {
        *id = (uint16_t)(w->subset_slots[slot] - 1);
        return 0;
    }
    if (!pile_utf8_valid(name, len) || memchr(name, '\0', len))
        return pile_err_set(err, PILE_EINVAL, "cannot add subset to '%s': name is not valid UTF-8 or holds a NUL",
                            w->path);
    if (w->nsubsets == 65536u)
        return pile_err_set(err, PILE_ELIMIT, "cannot add subset to '%s': 65536 subsets already", w->path);
    if (w->nsubsets == w->subsets_cap) {
        uint32_t cap = w->subsets_cap ? w->subsets_cap * 2 : 16;
        char **names = realloc(w->subsets, cap * sizeof *names);
        if (!names) return pile_err_set(err, PILE_ENOMEM, "out of memory");
        w->subsets = names;
        uint16_t *lens = realloc(w->subset_lens, cap * sizeof *lens);
        if (!lens) return pile_err_set(err, PILE_ENOMEM, "out of memory");
        w->subset_lens = lens;
        w->subsets_cap = cap;
    }
    if ((w->nsubsets + 1u) * 2u > w->nslots) {
        if (subset_rehash(w)) return pile_err_set(err, PILE_ENOMEM, "out of memory");
        slot = subset_slot(w, name, len);
    }
    char *copy = malloc(len + 1);
    if (!copy) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    memcpy(copy, name, len);
    copy[len] = '\0';
    w->subsets[w->nsubsets] = copy;
    w->subset_lens[w->nsubsets] = (uint16_t)len;
    w->subset_slots[slot] = w->nsubsets + 1;
    *id = (uint16_t)w->nsubsets++;
    return 0;
}

uint32_t pile_shard_writer_subset_count(const pile_shard_writer *w)
{
    return w->nsubsets;
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap * 2 : 1024;
    while (n < need) n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q) return PILE_ENOMEM;
    *p = q;
    *cap = n;
    return 0;
}

static int bad_token(const pile_shard_writer *w, uint64_t row, const uint32_t *tokens, uint32_t len, pile_err *err)
{
    uint32_t t = 0;
    while (t + 1 < len && tokens[t] < w->params.vocab_size) t++;
    return pile_err_set(err, PILE_EINVAL, "cannot add row %" PRIu64 " to '%s': token id %" PRIu32
                        " at position %" PRIu32 " is >= vocab_size %" PRIu32,
                        row, w->path, tokens[t], t, w->params.vocab_size);
}

static int writer_usable(pile_shard_writer *w, pile_err *err)
{
    if (w->finished || atomic_load(&w->failed))
        return pile_err_set(err, PILE_EINVAL, "cannot add a row to '%s': the writer is %s", w->path,
                            w->finished ? "finished" : "in a failed state");
    return 0;
}

/* What every row's table entry is checked for before it is committed. */
static int row_check(const pile_shard_writer *w, uint32_t len, const pile_shard_doc *docs, uint32_t ndocs,
                     uint16_t lead_subset, pile_err *err)
{
    const pile_shard_params *p = &w->params;
    uint64_t row = w->nrows;
    if (len > p->max_length)
        return pile_err_set(err, PILE_EINVAL, "cannot add row %" PRIu64 " to '%s': length %" PRIu32
                            " exceeds max_length %" PRIu32, row, w->path, len, p->max_length);
    if (len == 0 && (ndocs || lead_subset))
        return pile_err_set(err, PILE_EINVAL, "cannot add row %" PRIu64 " to '%s': an empty row has document starts"
                            " or a lead subset", row, w->path);
    if (len > 0 && lead_subset >= w->nsubsets)
        return pile_err_set(err, PILE_EINVAL, "cannot add row %" PRIu64 " to '%s': lead subset %u is not registered"
                            " (%" PRIu32 " subsets)", row, w->path, lead_subset, w->nsubsets);
    for (uint32_t d = 0; d < ndocs; d++) {
        if (docs[d].offset >= len || (d > 0 && docs[d].offset <= docs[d - 1].offset))
            return pile_err_set(err, PILE_EINVAL, "cannot add row %" PRIu64 " to '%s': document start %" PRIu32
                                " at offset %" PRIu32 " is out of order or past the length %" PRIu32,
                                row, w->path, d, docs[d].offset, len);
        if (docs[d].subset >= w->nsubsets)
            return pile_err_set(err, PILE_EINVAL, "cannot add row %" PRIu64 " to '%s': document start %" PRIu32
                                " has unregistered subset %u", row, w->path, d, docs[d].subset);
        if (docs[d].flags & ~DOC_KNOWN_FLAGS)
            return pile_err_set(err, PILE_EINVAL, "cannot add row %" PRIu64 " to '%s': document start %" PRIu32
                                " has unknown flags 0x%x", row, w->path, d, docs[d].flags);
    }
    int starts_doc = ndocs > 0 && docs[0].offset == 0;
    if (starts_doc && docs[0].subset != lead_subset)
        return pile_err_set(err, PILE_EINVAL, "cannot add row %" PRIu64 " to '%s': lead subset %u differs from the"
                            " subset %u of the document starting at 0", row, w->path, lead_subset, docs[0].subset);
    if (len > 0 && !starts_doc && p->pack == PILE_PACK_BEST_FIT)
        return pile_err_set(err, PILE_EINVAL, "cannot add row %" PRIu64 " to '%s': a best-fit row must begin with"
                            " a segment start", row, w->path);
    return 0;
}

/* Puts n ids at file offset off in the ring, across buffers: from src
 * (src_width bytes each, any alignment; 4-byte ids are narrowed to a
 * 2-byte shard's width), or, src NULL, the pad id. Returns the largest id
 * put (0 for padding). Counts the bytes in place; a buffer that is
 * complete wakes the I/O thread. Any thread; ranges of different calls do
 * not overlap. */
static uint32_t ring_put(pile_shard_writer *w, uint64_t off, const unsigned char *src, uint32_t src_width, size_t n)
{
    const uint32_t pad = w->params.pad_id, W = w->width;
    uint32_t top = 0;
    size_t total = n * W;
    while (n) {
        unsigned char *dst = ring_at(w, off);
        size_t room = (WRITE_BUF_BYTES - (size_t)(off % WRITE_BUF_BYTES)) / W;
        size_t k = n < room ? n : room;
        /* the ring is aligned and every row begins at a multiple of the width */
        if (W == 2) {
            uint16_t *d = (uint16_t *)(void *)dst;
            uint32_t t = 0;
            if (!src) {
                for (size_t j = 0; j < k; j++) d[j] = (uint16_t)pad;
            } else if (src_width == 2) {
                uint16_t t16 = 0;
                for (size_t j = 0; j < k; j++) {
                    uint16_t v;
                    memcpy(&v, src + 2 * j, 2); /* one load, any alignment */
                    d[j] = v;
                    t16 = v > t16 ? v : t16;
                }
                t = t16;
            } else {
                for (size_t j = 0; j < k; j++) {
                    uint32_t v;
                    memcpy(&v, src + 4 * j, 4);
                    d[j] = (uint16_t)v;
                    t = v > t ? v : t;
                }
            }
            top = t > top ? t : top;
        } else {
            uint32_t *d = (uint32_t *)(void *)dst;
            uint32_t t = top;
            if (!src)
                for (size_t j = 0; j < k; j++) d[j] = pad;
            else
                for (size_t j = 0; j < k; j++) {
                    uint32_t v;
                    memcpy(&v, src + 4 * j, 4);
                    d[j] = v;
                    t = v > t ? v : t;
                }
            top = t;
        }
        size_t bytes = k * W;
        size_t b = (size_t)((off / WRITE_BUF_BYTES) % w->nbuf);
        if (atomic_fetch_add(&w->filled[b], bytes) + bytes == WRITE_BUF_BYTES) {
            uv_mutex_lock(&w->io_mu);
            uv_cond_broadcast(&w->io_cv);
            uv_mutex_unlock(&w->io_mu);
        }
        off += bytes;
        n -= k;
        if (src) src += k * src_width;
    }
    atomic_fetch_add(&w->filled_total, total);
    return top;
}

int pile_shard_writer_reserve_row(pile_shard_writer *w, int wait, uint64_t *slot, pile_err *err)
{
    PILE_FORWARD_IF_ERR(writer_usable(w, err));
    if (w->reserved != w->nrows)
        return pile_err_set(err, PILE_EINVAL, "cannot reserve row %" PRIu64 " of '%s': row %" PRIu64
                            " is reserved and not committed", (uint64_t)w->reserved, w->path, (uint64_t)w->nrows);
    uint64_t end = w->pos + w->row_bytes;
    if (end > WRITE_BUF_BYTES) writer_io_start(w);
    int rc = ring_make_room(w, end, wait, err);
    if (rc) return rc;
    *slot = w->pos;
    w->pos = end;
    w->reserved++;
    return 0;
}

int pile_shard_writer_fill(pile_shard_writer *w, uint64_t slot, uint32_t at, const void *ids, uint32_t n,
                           pile_err *err)
{
    if (slot < SHARD_DATA_OFFSET || (slot - SHARD_DATA_OFFSET) % w->row_bytes || at > w->params.max_length ||
        n > w->params.max_length - at)
        return pile_err_set(err, PILE_EINVAL, "cannot fill '%s': ids %" PRIu32 "..%" PRIu64 " of the row at byte %"
                            PRIu64 " are not in a row of %" PRIu32, w->path, at, (uint64_t)at + n, slot,
                            w->params.max_length);
    uint32_t top = ring_put(w, slot + (uint64_t)at * w->width, ids, w->width, n);
    if (ids && n && top >= w->params.vocab_size) {
        pile_err_set(err, PILE_EINVAL, "cannot add row %" PRIu64 " to '%s': a token id is >= vocab_size %" PRIu32,
                     (slot - SHARD_DATA_OFFSET) / w->row_bytes, w->path, w->params.vocab_size);
        return writer_fail(w, PILE_EINVAL, err);
    }
    return 0;
}

int pile_shard_writer_commit_row(pile_shard_writer *w, uint32_t len, const pile_shard_doc *docs, uint32_t ndocs,
                                 uint16_t lead_subset, pile_err *err)
{
    PILE_FORWARD_IF_ERR(writer_failed(w, err));
    PILE_FORWARD_IF_ERR(writer_usable(w, err));
    if (w->reserved != w->nrows + 1)
        return pile_err_set(err, PILE_EINVAL, "cannot commit row %" PRIu64 " of '%s': it is not reserved",
                            (uint64_t)w->nrows, w->path);
    int rc = row_check(w, len, docs, ndocs, lead_subset, err);
    if (rc) return writer_fail(w, rc, err); /* its place in the file is taken */
    /* the I/O thread reads these arrays (hash_span): it must be idle when they move */
    if ((w->nrows + 1 > w->rows_cap || w->ndocs + ndocs > w->docs_cap ||
         (w->version >= 2 && (w->nrows + 1 > w->sums_cap || w->nrows + 1 > w->row_ndocs_cap)))) {
        uv_mutex_lock(&w->io_mu);
        while (w->io_busy) uv_cond_wait(&w->io_cv, &w->io_mu);
        if (grow((void **)&w->rows, &w->rows_cap, w->nrows + 1, sizeof *w->rows) ||
            grow((void **)&w->docs, &w->docs_cap, w->ndocs + ndocs, sizeof *w->docs) ||
            (w->version >= 2 && (grow((void **)&w->sums, &w->sums_cap, w->nrows + 1, sizeof *w->sums) ||
                                 grow((void **)&w->row_ndocs, &w->row_ndocs_cap, w->nrows + 1,
                                      sizeof *w->row_ndocs))))
            rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
        uv_mutex_unlock(&w->io_mu);
        if (rc) return writer_fail(w, rc, err);
    }
    int starts_doc = ndocs > 0 && docs[0].offset == 0;
    w->rows[w->nrows] = (shard_row){w->ndocs, len, lead_subset, (uint16_t)(len > 0 && !starts_doc ? ROW_CONTINUES : 0)};
    if (ndocs) memcpy(w->docs + w->ndocs, docs, ndocs * sizeof *docs);
    if (w->version >= 2) w->row_ndocs[w->nrows] = ndocs;
    w->nrows++;
    w->ndocs += ndocs;
    w->token_count += len;
    /* published after the entry: the I/O thread hashes a row once it sees it committed */
    uint64_t end = SHARD_DATA_OFFSET + (uint64_t)w->nrows * w->row_bytes;
    uint64_t was = atomic_exchange(&w->committed_end, end);
    if (was / WRITE_BUF_BYTES != end / WRITE_BUF_BYTES) {
        uv_mutex_lock(&w->io_mu);
        uv_cond_broadcast(&w->io_cv);
        uv_mutex_unlock(&w->io_mu);
    }
    return 0;
}

int pile_shard_writer_add_row(pile_shard_writer *w, const uint32_t *tokens, uint32_t len,
                              const pile_shard_doc *docs, uint32_t ndocs, uint16_t lead_subset, pile_err *err)
{
    PILE_FORWARD_IF_ERR(writer_usable(w, err));
    PILE_FORWARD_IF_ERR(row_check(w, len, docs, ndocs, lead_subset, err));
    uint32_t top = 0;
    for (uint32_t t = 0; t < len; t++) top = tokens[t] > top ? tokens[t] : top;
    if (len && top >= w->params.vocab_size) return bad_token(w, w->nrows, tokens, len, err);
    uint64_t slot;
    PILE_FORWARD_IF_ERR(pile_shard_writer_reserve_row(w, 1, &slot, err));
    ring_put(w, slot, (const unsigned char *)tokens, 4, len);
    ring_put(w, slot + (uint64_t)len * w->width, NULL, 0, w->params.max_length - len);
    return pile_shard_writer_commit_row(w, len, docs, ndocs, lead_subset, err);
}

int pile_shard_writer_add_row_gather(pile_shard_writer *w, const pile_shard_piece *pieces, uint32_t npieces,
                                     const pile_shard_doc *docs, uint32_t ndocs, uint16_t lead_subset,
                                     pile_err *err)
{
    const pile_shard_params *p = &w->params;
    uint64_t total = 0;
    for (uint32_t i = 0; i < npieces; i++) total += pieces[i].len;
    if (total > p->max_length)
        return pile_err_set(err, PILE_EINVAL, "cannot add row %" PRIu64 " to '%s': length %" PRIu64
                            " exceeds max_length %" PRIu32, (uint64_t)w->nrows, w->path, total, p->max_length);
    uint32_t len = (uint32_t)total;
    PILE_FORWARD_IF_ERR(writer_usable(w, err));
    PILE_FORWARD_IF_ERR(row_check(w, len, docs, ndocs, lead_subset, err));
    uint64_t slot;
    PILE_FORWARD_IF_ERR(pile_shard_writer_reserve_row(w, 1, &slot, err));
    /* the ids' range, checked as they go into the ring: the caller narrowed
     * them, this keeps the file's promise */
    uint32_t at = 0;
    int rc = 0;
    for (uint32_t i = 0; i < npieces; i++) {
        if (pieces[i].len && !rc) rc = pile_shard_writer_fill(w, slot, at, pieces[i].ids, pieces[i].len, err);
        at += pieces[i].len;
    }
    if (rc) return rc; /* the writer has failed: the bytes are in the ring */
    PILE_FORWARD_IF_ERR(pile_shard_writer_fill(w, slot, len, NULL, p->max_length - len, err));
    return pile_shard_writer_commit_row(w, len, docs, ndocs, lead_subset, err);
}

int pile_shard_writer_add_row_packed(pile_shard_writer *w, const void *ids, uint32_t len,
                                     const pile_shard_doc *docs, uint32_t ndocs, uint16_t lead_subset,
                                     pile_err *err)
{
    pile_shard_piece one = {ids, len};
    return pile_shard_writer_add_row_gather(w, &one, 1, docs, ndocs, lead_subset, err);
}

uint32_t pile_shard_token_bytes(uint32_t vocab_size)
{
    return width_for_vocab(vocab_size);
}

double pile_shard_writer_io_cpu(const pile_shard_writer *w)
{
    return w->io_cpu;
}

uint64_t pile_shard_writer_rows(const pile_shard_writer *w)
{
    return w->nrows;
}

/* Where the file ends: after the row checksums (version 2) or the subset table. */
static uint64_t shard_end(const shard_header *h)
{
    return h->version >= 2 ? h->checks_offset + h->checks_size : h->subsets_offset + h->subsets_size;
}

static void info_from_header(pile_shard_info *info, const shard_header *h, uint64_t file_size)
{
    memset(info, 0, sizeof *info);
    info->version = h->version;
    info->token_bytes = h->token_bytes;
    info->max_length = h->max_length;
    info->vocab_size = h->vocab_size;
    info->eot_id = h->eot_id;
    info->pad_id = h->pad_id;
    info->pack = (pile_pack)h->pack;
    info->split = (pile_split)h->split;
    info->row_count = h->row_count;
    info->doc_count = h->doc_count;
    info->token_count = h->token_count;
    info->subset_count = h->subset_count;
    info->data_checksum = h->data_xxh3;
    info->header_checksum = h->header_xxh3;
    info->row_checksums = h->version >= 2;
    info->file_size = file_size;
    memcpy(info->tokenizer_fp, h->tokenizer_fp, PILE_SHARD_FP_BYTES);
}

/* The data's last buffers: the full ones (the I/O thread's, while it runs),
 * then the tail, through the page cache. */
static int writer_data_end(pile_shard_writer *w, pile_err *err)
{
    PILE_FORWARD_IF_ERR(ring_make_room(w, w->pos + (uint64_t)(w->nbuf - 1) * WRITE_BUF_BYTES + 1, 1, err));
    writer_io_stop(w); /* idle, every full buffer gone: its CPU time is final */
    if (w->io_rc) { /* met after the last look (ring_make_room looks only when out of room) */
        *err = w->io_err;
        return w->io_rc;
    }
    size_t tail = (size_t)(w->pos - w->written);
    int rc = writer_undirect(w, err);
    if (!rc && tail) rc = ring_leave(w, tail, err);
    return rc;
}

int pile_shard_writer_finish(pile_shard_writer *w, pile_shard_info *info, pile_err *err)
{
    if (w->finished) return pile_err_set(err, PILE_EINVAL, "cannot finish '%s' twice", w->path);
    if (atomic_load(&w->failed)) {
        pile_err why;
        writer_failed(w, &why);
        return pile_err_set(err, PILE_EIO, "cannot finish '%s': an earlier write failed (%s)", w->path, why.msg);
    }
    if (w->reserved != w->nrows || atomic_load(&w->filled_total) != w->pos - SHARD_DATA_OFFSET)
        return pile_err_set(err, PILE_EINVAL, "cannot finish '%s': a reserved row is not %s", w->path,
                            w->reserved != w->nrows ? "committed" : "filled");
    const pile_shard_params *p = &w->params;
    shard_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, SHARD_MAGIC, 8);
    h.version = w->version;
    h.header_size = SHARD_HEADER_SIZE;
    h.byte_order = SHARD_BYTE_ORDER;
    h.token_bytes = w->width;
    h.max_length = p->max_length;
    h.vocab_size = p->vocab_size;
    h.eot_id = p->eot_id;
    h.pad_id = p->pad_id;
    h.pack = (uint16_t)p->pack;
    h.split = (uint16_t)p->split;
    h.row_count = w->nrows;
    h.doc_count = w->ndocs;
    h.token_count = w->token_count;
    h.subset_count = w->nsubsets;
    memcpy(h.tokenizer_fp, p->tokenizer_fp, PILE_SHARD_FP_BYTES);
    h.data_offset = SHARD_DATA_OFFSET;
    h.data_size = (uint64_t)w->nrows * p->max_length * w->width;
    h.rows_offset = align_up(h.data_offset + h.data_size, 8);
    h.rows_size = (uint64_t)w->nrows * sizeof(shard_row);
    h.docs_offset = h.rows_offset + h.rows_size;
    h.docs_size = (uint64_t)w->ndocs * sizeof(pile_shard_doc);
    h.subsets_offset = h.docs_offset + h.docs_size;
    int rc = writer_data_end(w, err);
    if (rc) {
        atomic_store(&w->failed, 1);
        return rc;
    }
    h.data_xxh3 = XXH3_64bits_digest(w->data_hash);
    h.rows_xxh3 = XXH3_64bits(w->rows, h.rows_size);
    h.docs_xxh3 = XXH3_64bits(w->docs, h.docs_size);

    /* the tables after the data, each in one write */
    static const unsigned char zeros[8];
    pile_buf subs = {0};
    uint32_t count = w->nsubsets;
    if (pile_buf_append(&subs, &count, 4)) rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
    for (uint32_t i = 0; !rc && i < w->nsubsets; i++) {
        uint16_t len = w->subset_lens[i];
        if (pile_buf_append(&subs, &len, 2) || pile_buf_append(&subs, w->subsets[i], len))
            rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
    }
    h.subsets_size = subs.len;
    if (!rc) h.subsets_xxh3 = XXH3_64bits(subs.data, subs.len);
    const char *tp = w->tmp_path;
    if (!rc) rc = write_all(w->fd, zeros, (size_t)(h.rows_offset - h.data_offset - h.data_size), tp, err);
    if (!rc && h.rows_size) rc = write_all(w->fd, w->rows, h.rows_size, tp, err);
    if (!rc && h.docs_size) rc = write_all(w->fd, w->docs, h.docs_size, tp, err);
    if (!rc) rc = write_all(w->fd, subs.data, subs.len, tp, err);
    pile_buf_free(&subs);
    if (!rc && w->version >= 2) {
        uint64_t subsets_end = h.subsets_offset + h.subsets_size;
        h.checks_offset = align_up(subsets_end, 8);
        h.checks_size = (uint64_t)w->nrows * sizeof *w->sums;
        h.checks_xxh3 = XXH3_64bits(w->sums, h.checks_size);
        rc = write_all(w->fd, zeros, (size_t)(h.checks_offset - subsets_end), tp, err);
        if (!rc && h.checks_size) rc = write_all(w->fd, w->sums, h.checks_size, tp, err);
    }
    if (rc) {
        atomic_store(&w->failed, 1);
        return rc;
    }
    h.header_xxh3 = header_checksum(&h);

    ssize_t n;
    do {
        n = pwrite(w->fd, &h, sizeof h, 0);
    } while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof h) {
        atomic_store(&w->failed, 1);
        return pile_err_sys(err, PILE_EIO, n < 0 ? errno : EIO, "cannot write the header of '%s'", w->tmp_path);
    }
    if (fsync(w->fd) != 0) {
        atomic_store(&w->failed, 1);
        return pile_err_sys(err, PILE_EIO, errno, "cannot fsync '%s'", w->tmp_path);
    }
    int fd = w->fd;
    w->fd = -1;
    if (close(fd) != 0) {
        atomic_store(&w->failed, 1);
        return pile_err_sys(err, PILE_EIO, errno, "cannot close '%s'", w->tmp_path);
    }
    if (rename(w->tmp_path, w->path) != 0) {
        atomic_store(&w->failed, 1);
        return pile_err_sys(err, PILE_EIO, errno, "cannot rename '%s' to '%s'", w->tmp_path, w->path);
    }
    w->finished = 1;
    PILE_FORWARD_IF_ERR(pile_fs_fsync_dir(w->path, err));
    if (info) info_from_header(info, &h, shard_end(&h));
    return 0;
}

void pile_shard_writer_close(pile_shard_writer *w)
{
    if (!w) return;
    writer_io_stop(w); /* before the file it writes to is closed */
    if (w->fd >= 0) close(w->fd);
    if (!w->finished) unlink(w->tmp_path);
    writer_free(w);
}

/* ================================================================ reader */

/* What pile_shard_check_row has learnt: two bits a row (MARK_*), set
 * with atomic OR so that threads checking rows of one shard at once never
 * lose each other's marks, and the count of rows found corrupt. It is the
 * reader's only mutable state, allocated apart so that the const reader
 * API can update it. 2 bits a row: 64 KiB for a 256 MiB shard of 4 KiB rows. */
#define MARK_GOOD 1u
#define MARK_BAD 2u
#define MARKS_PER_WORD 16u
typedef struct row_marks {
    _Atomic uint64_t corrupt;
    _Atomic uint32_t words[];
} row_marks;

struct pile_shard {
    char *path;
    const unsigned char *map;
    size_t map_len;
    shard_header h; /* as checked at open: the map may change under a reader */
    const unsigned char *data;
    const shard_row *rows;
    const pile_shard_doc *docs;
    const uint64_t *sums; /* version 2: the row checksums; NULL in version 1 */
    row_marks *marks;     /* version 2 */
    char **subset_names;
    uint16_t *subset_lens;
    pile_shard_info info;
    size_t row_bytes;
};

static void shard_free(pile_shard *s)
{
    if (s->map) munmap((void *)s->map, s->map_len);
    if (s->subset_names) {
        for (uint32_t i = 0; i < s->info.subset_count; i++) free(s->subset_names[i]);
        free(s->subset_names);
    }
    free(s->subset_lens);
    free(s->marks);
    free(s->path);
    free(s);
}

void pile_shard_close(pile_shard *s)
{
    if (s) shard_free(s);
}

/* a * b, refusing overflow. */
static int mul_ok(uint64_t a, uint64_t b, uint64_t *out)
{
    if (a && b > UINT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}

static int check_header(const shard_header *h, uint64_t size, const char *path, pile_err *err)
{
    if (h->byte_order != SHARD_BYTE_ORDER)
        return pile_err_set(err, PILE_EFORMAT, "'%s' has byte-order mark 0x%08" PRIx32 ", not 0x%08x"
                            " (shards are little-endian)", path, h->byte_order, SHARD_BYTE_ORDER);
    if (h->header_size != SHARD_HEADER_SIZE)
        return pile_err_set(err, PILE_EFORMAT, "'%s' has header size %" PRIu32 ", version %" PRIu32 " has %u", path,
                            h->header_size, h->version, SHARD_HEADER_SIZE);
    uint64_t sum = header_checksum(h);
    if (sum != h->header_xxh3)
        return pile_err_set(err, PILE_ECORRUPT, "'%s' has a corrupt header: checksum %016" PRIx64
                            " does not match the stored %016" PRIx64, path, sum, h->header_xxh3);
    if (h->flags)
        return pile_err_set(err, PILE_EFORMAT, "'%s' has unknown header flags 0x%" PRIx32, path, h->flags);
    if (h->max_length == 0) return pile_err_set(err, PILE_EFORMAT, "'%s' has max_length 0", path);
    if (h->vocab_size == 0) return pile_err_set(err, PILE_EFORMAT, "'%s' has vocab_size 0", path);
    if (h->token_bytes != width_for_vocab(h->vocab_size))
        return pile_err_set(err, PILE_EFORMAT, "'%s' has %" PRIu32 "-byte tokens, vocab_size %" PRIu32
                            " needs %" PRIu32, path, h->token_bytes, h->vocab_size, width_for_vocab(h->vocab_size));
    if (h->eot_id >= h->vocab_size)
        return pile_err_set(err, PILE_EFORMAT, "'%s' has eot_id %" PRIu32 " >= vocab_size %" PRIu32, path,
                            h->eot_id, h->vocab_size);
    if (h->token_bytes == 2 && h->pad_id > 0xFFFFu)
        return pile_err_set(err, PILE_EFORMAT, "'%s' has pad_id %" PRIu32 " wider than its 2-byte tokens", path,
                            h->pad_id);
    if (h->pack > PILE_PACK_BEST_FIT)
        return pile_err_set(err, PILE_EFORMAT, "'%s' has unknown pack mode %u", path, h->pack);
    if (h->split > PILE_SPLIT_TEST)
        return pile_err_set(err, PILE_EFORMAT, "'%s' has unknown split %u", path, h->split);
    if (h->subset_count > 65536u)
        return pile_err_set(err, PILE_EFORMAT, "'%s' has %" PRIu32 " subsets, more than 65536", path,
                            h->subset_count);

    uint64_t data_size, rows_size, docs_size;
    if (!mul_ok(h->row_count, (uint64_t)h->max_length * h->token_bytes, &data_size) ||
        !mul_ok(h->row_count, sizeof(shard_row), &rows_size) ||
        !mul_ok(h->doc_count, sizeof(pile_shard_doc), &docs_size) || data_size > SECTION_MAX ||
        rows_size > SECTION_MAX || docs_size > SECTION_MAX)
        return pile_err_set(err, PILE_EFORMAT, "'%s' has impossible counts (%" PRIu64 " rows, %" PRIu64 " documents)",
                            path, h->row_count, h->doc_count);
    if (h->data_offset != SHARD_DATA_OFFSET || h->data_size != data_size)
        return pile_err_set(err, PILE_EFORMAT, "'%s' has a bad data section (offset %" PRIu64 ", size %" PRIu64
                            "; expected %u, %" PRIu64 ")", path, h->data_offset, h->data_size, SHARD_DATA_OFFSET,
                            data_size);
    uint64_t rows_offset = align_up(h->data_offset + data_size, 8);
    if (h->rows_offset != rows_offset || h->rows_size != rows_size)
        return pile_err_set(err, PILE_EFORMAT, "'%s' has a bad row table (offset %" PRIu64 ", size %" PRIu64
                            "; expected %" PRIu64 ", %" PRIu64 ")", path, h->rows_offset, h->rows_size, rows_offset,
                            rows_size);
    if (h->docs_offset != rows_offset + rows_size || h->docs_size != docs_size)
        return pile_err_set(err, PILE_EFORMAT, "'%s' has a bad document table (offset %" PRIu64 ", size %" PRIu64
                            "; expected %" PRIu64 ", %" PRIu64 ")", path, h->docs_offset, h->docs_size,
                            rows_offset + rows_size, docs_size);
    if (h->subsets_offset != h->docs_offset + docs_size || h->subsets_size < 4 ||
        h->subsets_size > SUBSETS_SIZE_MAX)
        return pile_err_set(err, PILE_EFORMAT, "'%s' has a bad subset table (offset %" PRIu64 ", size %" PRIu64 ")",
                            path, h->subsets_offset, h->subsets_size);
    uint64_t end = h->subsets_offset + h->subsets_size;
    if (h->version >= 2) {
        /* rows_size is at most 2^61, so the table's end stays far below 2^64 */
        uint64_t checks_offset = align_up(end, 8), checks_size = rows_size / 2;
        if (h->checks_offset != checks_offset || h->checks_size != checks_size)
            return pile_err_set(err, PILE_EFORMAT, "'%s' has a bad row checksum table (offset %" PRIu64 ", size %"
                                PRIu64 "; expected %" PRIu64 ", %" PRIu64 ")", path, h->checks_offset,
                                h->checks_size, checks_offset, checks_size);
        end = checks_offset + checks_size;
    }
    if (size < end)
        return pile_err_set(err, PILE_ETRUNC, "'%s' is truncated: %" PRIu64 " bytes, header says %" PRIu64, path,
                            size, end);
    if (size > end)
        return pile_err_set(err, PILE_EFORMAT, "'%s' has %" PRIu64 " unexpected bytes after its last section"
                            " (%" PRIu64 " bytes, header says %" PRIu64 ")", path, size - end, size, end);
    return 0;
}

static int parse_subsets(pile_shard *s, pile_err *err)
{
    const shard_header *h = &s->h;
    const unsigned char *p = s->map + h->subsets_offset;
    uint64_t left = h->subsets_size;
    uint32_t count;
    memcpy(&count, p, 4);
    p += 4;
    left -= 4;
    if (count != h->subset_count)
        return pile_err_set(err, PILE_EFORMAT, "'%s': subset table holds %" PRIu32 " names, header says %" PRIu32,
                            s->path, count, h->subset_count);
    s->subset_names = calloc(count ? count : 1, sizeof *s->subset_names);
    s->subset_lens = calloc(count ? count : 1, sizeof *s->subset_lens);
    if (!s->subset_names || !s->subset_lens) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < count; i++) {
        uint16_t len;
        if (left < 2)
            return pile_err_set(err, PILE_EFORMAT, "'%s': subset table ends inside the length of name %" PRIu32,
                                s->path, i);
        memcpy(&len, p, 2);
        p += 2;
        left -= 2;
        if (left < len)
            return pile_err_set(err, PILE_EFORMAT, "'%s': subset name %" PRIu32 " (%u bytes) runs past the table",
                                s->path, i, len);
        s->subset_names[i] = malloc((size_t)len + 1);
        if (!s->subset_names[i]) return pile_err_set(err, PILE_ENOMEM, "out of memory");
        memcpy(s->subset_names[i], p, len);
        s->subset_names[i][len] = '\0';
        s->subset_lens[i] = len;
        p += len;
        left -= len;
    }
    if (left)
        return pile_err_set(err, PILE_EFORMAT, "'%s': subset table has %" PRIu64 " bytes after its last name",
                            s->path, left);
    return 0;
}

int pile_shard_open(pile_shard **out, const char *path, pile_err *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return pile_err_sys(err, errno == ENOENT ? PILE_ENOENT : PILE_EIO, errno, "cannot open '%s'", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int rc = pile_err_sys(err, PILE_EIO, errno, "cannot stat '%s'", path);
        close(fd);
        return rc;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return pile_err_set(err, PILE_EFORMAT, "'%s' is not a pile shard (not a regular file)", path);
    }
    uint64_t size = (uint64_t)st.st_size;

    /* The magic and version are read with pread so that a short file that is
     * not a shard says so instead of being "truncated". */
    unsigned char head[SHARD_HEADER_SIZE];
    size_t want = size < sizeof head ? (size_t)size : sizeof head, got = 0;
    while (got < want) {
        ssize_t n = pread(fd, head + got, want - got, (off_t)got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int rc = pile_err_sys(err, PILE_EIO, n < 0 ? errno : EIO, "cannot read '%s'", path);
            close(fd);
            return rc;
        }
        got += (size_t)n;
    }
    size_t cmp = got < 8 ? got : 8;
    if (memcmp(head, SHARD_MAGIC, cmp) != 0) {
        close(fd);
        return pile_err_set(err, PILE_EFORMAT, "'%s' is not a pile shard (no \"%s\" magic)", path, SHARD_MAGIC);
    }
    if (got >= 12) {
        uint32_t version;
        memcpy(&version, head + 8, 4);
        if (version > PILE_SHARD_VERSION) {
            close(fd);
            return pile_err_set(err, PILE_EVERSION, "'%s': shard version %" PRIu32 " is newer than this build reads (%d)",
                                path, version, PILE_SHARD_VERSION);
        }
        if (version == 0) {
            close(fd);
            return pile_err_set(err, PILE_EFORMAT, "'%s' has shard version 0, which does not exist", path);
        }
    }
    if (size < SHARD_HEADER_SIZE) {
        close(fd);
        return pile_err_set(err, PILE_ETRUNC, "'%s' is truncated: %" PRIu64 " bytes, the header alone is %u", path,
                            size, SHARD_HEADER_SIZE);
    }
    shard_header h;
    memcpy(&h, head, sizeof h);
    int rc = check_header(&h, size, path, err);
    if (rc) {
        close(fd);
        return rc;
    }

    pile_shard *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        close(fd);
        return pile_err_set(err, PILE_ENOMEM, "out of memory");
    }
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED) {
        shard_free(s);
        return pile_err_sys(err, PILE_EIO, map_errno, "cannot map '%s'", path);
    }
    s->map = map;
    s->map_len = (size_t)size;
    s->h = h;
    s->data = s->map + h.data_offset;
    s->rows = (const shard_row *)(s->map + h.rows_offset);
    s->docs = (const pile_shard_doc *)(s->map + h.docs_offset);
    s->row_bytes = (size_t)h.max_length * h.token_bytes;
    info_from_header(&s->info, &h, size);
    if (h.version >= 2) {
        s->sums = (const uint64_t *)(s->map + h.checks_offset);
        size_t words = (size_t)(h.row_count / MARKS_PER_WORD) + 1;
        /* zero bytes are unmarked words and a zero count: calloc stands for atomic_init */
        s->marks = calloc(1, sizeof *s->marks + words * sizeof s->marks->words[0]);
        if (!s->marks) {
            shard_free(s);
            return pile_err_set(err, PILE_ENOMEM, "out of memory");
        }
    }
    rc = parse_subsets(s, err);
    if (rc) {
        shard_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

const pile_shard_info *pile_shard_get_info(const pile_shard *s)
{
    return &s->info;
}

const void *pile_shard_row_data(const pile_shard *s, uint64_t i)
{
    return s->data + (size_t)i * s->row_bytes;
}

/* Lengths and document ranges are clamped so that a corrupt (unverified) table
 * can give wrong answers but never reads outside the map. */
uint32_t pile_shard_row_length(const pile_shard *s, uint64_t i)
{
    uint32_t len = s->rows[i].length;
    return len <= s->info.max_length ? len : s->info.max_length;
}

uint16_t pile_shard_row_lead_subset(const pile_shard *s, uint64_t i)
{
    return s->rows[i].lead_subset;
}

uint32_t pile_shard_row_tokens(const pile_shard *s, uint64_t i, uint32_t *out)
{
    const unsigned char *src = pile_shard_row_data(s, i);
    uint32_t n = s->info.max_length;
    if (s->info.token_bytes == 2) {
        const uint16_t *p = (const uint16_t *)src;
        for (uint32_t k = 0; k < n; k++) out[k] = p[k];
    } else {
        memcpy(out, src, (size_t)n * 4);
    }
    return pile_shard_row_length(s, i);
}

uint32_t pile_shard_row_docs(const pile_shard *s, uint64_t i, const pile_shard_doc **docs)
{
    uint64_t first = s->rows[i].first_doc;
    uint64_t end = i + 1 < s->info.row_count ? s->rows[i + 1].first_doc : s->info.doc_count;
    if (first > s->info.doc_count) first = s->info.doc_count;
    if (end > s->info.doc_count) end = s->info.doc_count;
    if (end < first) end = first;
    if (end - first > s->info.max_length) end = first + s->info.max_length;
    *docs = s->docs + first;
    return (uint32_t)(end - first);
}

const char *pile_shard_subset_name(const pile_shard *s, uint32_t id)
{
    return id < s->info.subset_count ? s->subset_names[id] : NULL;
}

/* Row i's checksum as the bytes now in the map say it should be. */
static uint64_t row_checksum_of(const pile_shard *s, uint64_t i)
{
    XXH3_state_t st;
    const pile_shard_doc *docs;
    uint32_t nd = pile_shard_row_docs(s, i, &docs);
    row_hash_begin(&st, i, &s->rows[i], docs, nd);
    data_hash_update(&st, pile_shard_row_data(s, i), s->row_bytes);
    return XXH3_64bits_digest(&st);
}

static int row_mismatch(const pile_shard *s, uint64_t i, uint64_t computed, pile_err *err)
{
    return pile_err_set(err, PILE_ECORRUPT, "'%s': row %" PRIu64 " fails its checksum (computed %016" PRIx64
                        ", the shard records %016" PRIx64 "): its tokens, row entry or document starts are damaged",
                        s->path, i, computed, s->sums[i]);
}

int pile_shard_check_row(const pile_shard *s, uint64_t i, pile_err *err)
{
    if (!s->sums) return 0;
    _Atomic uint32_t *word = &s->marks->words[i / MARKS_PER_WORD];
    const unsigned shift = (unsigned)(i % MARKS_PER_WORD) * 2;
    /* Relaxed order is enough: a mark guards no other memory, and a thread
     * that misses another's fresh mark only hashes the row once more. */
    if ((atomic_load_explicit(word, memory_order_relaxed) >> shift) & MARK_GOOD) return 0;
    uint64_t sum = row_checksum_of(s, i);
    if (sum == s->sums[i]) {
        atomic_fetch_or_explicit(word, MARK_GOOD << shift, memory_order_relaxed);
        return 0;
    }
    uint32_t was = atomic_fetch_or_explicit(word, MARK_BAD << shift, memory_order_relaxed);
    if (!((was >> shift) & MARK_BAD)) atomic_fetch_add_explicit(&s->marks->corrupt, 1, memory_order_relaxed);
    return row_mismatch(s, i, sum, err);
}

uint64_t pile_shard_corrupt_rows(const pile_shard *s)
{
    return s->marks ? atomic_load_explicit(&s->marks->corrupt, memory_order_relaxed) : 0;
}

/* ================================================================ verify */

/* A section's checksum. On a mismatch in a version 2 shard the message also
 * names the first row whose own checksum fails, which says where the damage
 * is (none fails when only the section's stored checksum is damaged). */
static int check_sum(const pile_shard *s, const char *what, uint64_t off, uint64_t size, uint64_t stored,
                     pile_err *err)
{
    uint64_t sum = data_hash(s->map + off, (size_t)size);
    if (sum == stored) return 0;
    char where[160] = "";
    for (uint64_t i = 0; s->sums && i < s->info.row_count; i++) {
        uint64_t r = row_checksum_of(s, i);
        if (r != s->sums[i]) {
            snprintf(where, sizeof where, "; row %" PRIu64 " fails its checksum (computed %016" PRIx64
                     ", the shard records %016" PRIx64 ")", i, r, s->sums[i]);
            break;
        }
    }
    return pile_err_set(err, PILE_ECORRUPT, "'%s': %s checksum mismatch (computed %016" PRIx64 ", header says %016"
                        PRIx64 "; bytes %" PRIu64 "..%" PRIu64 ")%s", s->path, what, sum, stored, off, off + size,
                        where);
}

static int verify_row_tokens(const pile_shard *s, uint64_t r, uint32_t len, pile_err *err)
{
    const pile_shard_info *in = &s->info;
    const void *row = pile_shard_row_data(s, r);
    for (uint32_t k = 0; k < in->max_length; k++) {
        uint32_t v;
        if (in->token_bytes == 2)
            v = ((const uint16_t *)row)[k];
        else
            v = ((const uint32_t *)row)[k];
        if (k < len && v >= in->vocab_size)
            return pile_err_set(err, PILE_ECORRUPT, "'%s': row %" PRIu64 " position %" PRIu32 ": token id %" PRIu32
                                " >= vocab_size %" PRIu32, s->path, r, k, v, in->vocab_size);
        if (k >= len && v != in->pad_id)
            return pile_err_set(err, PILE_ECORRUPT, "'%s': row %" PRIu64 " position %" PRIu32 " (padding after length %"
                                PRIu32 "): id %" PRIu32 " is not pad_id %" PRIu32, s->path, r, k, len, v, in->pad_id);
    }
    return 0;
}

int pile_shard_verify(const pile_shard *s, pile_err *err)
{
    const shard_header *h = &s->h;
    const pile_shard_info *in = &s->info;
    /* Sections are read where the header checked at open puts them; a file
     * rewritten since could put them anywhere. */
    if (memcmp(s->map, h, sizeof *h) != 0)
        return pile_err_set(err, PILE_ECORRUPT, "'%s': header changed since the shard was opened", s->path);
    PILE_FORWARD_IF_ERR(check_sum(s, "row table", h->rows_offset, h->rows_size, h->rows_xxh3, err));
    PILE_FORWARD_IF_ERR(check_sum(s, "document table", h->docs_offset, h->docs_size, h->docs_xxh3, err));
    PILE_FORWARD_IF_ERR(check_sum(s, "subset table", h->subsets_offset, h->subsets_size, h->subsets_xxh3, err));
    if (s->sums)
        PILE_FORWARD_IF_ERR(check_sum(s, "row checksum table", h->checks_offset, h->checks_size, h->checks_xxh3, err));
    /* before the rows' own checks: a damaged byte of token data is then
     * reported against the checksum that pile-prep's manifest records too */
    PILE_FORWARD_IF_ERR(check_sum(s, "data section", h->data_offset, h->data_size, h->data_xxh3, err));

    /* distinct names: an open-addressing hash of the indices, not all pairs (65,536 names) */
    uint32_t nslots = 64;
    while (nslots < 2 * in->subset_count) nslots *= 2;
    uint32_t *slots = calloc(nslots, sizeof *slots);
    if (!slots) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    int rc = 0;
    for (uint32_t i = 0; i < in->subset_count && !rc; i++) {
        const char *name = s->subset_names[i];
        size_t len = strlen(name);
        if (len == 0 || len != s->subset_lens[i] || !pile_utf8_valid(name, len)) {
            rc = pile_err_set(err, PILE_ECORRUPT, "'%s': subset %" PRIu32 " has an empty name, a NUL byte in it, or invalid UTF-8",
                              s->path, i);
            break;
        }
        uint32_t k = (uint32_t)XXH3_64bits(name, len) & (nslots - 1);
        for (; slots[k]; k = (k + 1) & (nslots - 1))
            if (strcmp(s->subset_names[slots[k] - 1], name) == 0) {
                rc = pile_err_set(err, PILE_ECORRUPT, "'%s': subsets %" PRIu32 " and %" PRIu32 " share the name '%s'",
                                  s->path, slots[k] - 1, i, name);
                break;
            }
        slots[k] = i + 1;
    }
    free(slots);
    if (rc) return rc;

    uint64_t tokens = 0;
    for (uint64_t r = 0; r < in->row_count; r++) {
        const shard_row *row = &s->rows[r];
        uint64_t end = r + 1 < in->row_count ? s->rows[r + 1].first_doc : in->doc_count;
        if (r == 0 && row->first_doc != 0)
            return pile_err_set(err, PILE_ECORRUPT, "'%s': row 0: first document index is %" PRIu64 ", not 0", s->path,
                                row->first_doc);
        if (end < row->first_doc || end > in->doc_count)
            return pile_err_set(err, PILE_ECORRUPT, "'%s': row %" PRIu64 ": document range %" PRIu64 "..%" PRIu64
                                " is out of order or past the %" PRIu64 " documents", s->path, r, row->first_doc,
                                end, in->doc_count);
        uint32_t len = row->length;
        if (len > in->max_length)
            return pile_err_set(err, PILE_ECORRUPT, "'%s': row %" PRIu64 ": length %" PRIu32 " > max_length %" PRIu32,
                                s->path, r, len, in->max_length);
        if (row->flags & ~ROW_KNOWN_FLAGS)
            return pile_err_set(err, PILE_ECORRUPT, "'%s': row %" PRIu64 ": unknown flags 0x%x", s->path, r,
                                row->flags);
        uint64_t ndocs = end - row->first_doc;
        if (len == 0 && (ndocs || row->lead_subset || row->flags))
            return pile_err_set(err, PILE_ECORRUPT, "'%s': row %" PRIu64 " is empty but has documents, a lead subset"
                                " or flags", s->path, r);
        if (len > 0 && row->lead_subset >= in->subset_count)
            return pile_err_set(err, PILE_ECORRUPT, "'%s': row %" PRIu64 ": lead subset %u >= subset count %" PRIu32,
                                s->path, r, row->lead_subset, in->subset_count);
        const pile_shard_doc *d = s->docs + row->first_doc;
        for (uint64_t k = 0; k < ndocs; k++) {
            if (d[k].offset >= len || (k > 0 && d[k].offset <= d[k - 1].offset))
                return pile_err_set(err, PILE_ECORRUPT, "'%s': row %" PRIu64 " document entry %" PRIu64 ": offset %"
                                    PRIu32 " is out of order or not below the length %" PRIu32, s->path, r,
                                    row->first_doc + k, d[k].offset, len);
            if (d[k].subset >= in->subset_count)
                return pile_err_set(err, PILE_ECORRUPT, "'%s': row %" PRIu64 " document entry %" PRIu64 ": subset %u >="
                                    " subset count %" PRIu32, s->path, r, row->first_doc + k, d[k].subset,
                                    in->subset_count);
            if (d[k].flags & ~DOC_KNOWN_FLAGS)
                return pile_err_set(err, PILE_ECORRUPT, "'%s': row %" PRIu64 " document entry %" PRIu64 ": unknown flags"
                                    " 0x%x", s->path, r, row->first_doc + k, d[k].flags);
        }
        int starts = ndocs > 0 && d[0].offset == 0;
        if (starts && d[0].subset != row->lead_subset)
            return pile_err_set(err, PILE_ECORRUPT, "'%s': row %" PRIu64 ": lead subset %u differs from subset %u of the"
                                " document starting at 0", s->path, r, row->lead_subset, d[0].subset);
        int continues = len > 0 && !starts;
        if (continues != !!(row->flags & ROW_CONTINUES))
            return pile_err_set(err, PILE_ECORRUPT, "'%s': row %" PRIu64 ": continuation flag is %s but the row %s",
                                s->path, r, continues ? "clear" : "set",
                                continues ? "continues a document" : "does not continue a document");
        if (continues && in->pack == PILE_PACK_BEST_FIT)
            return pile_err_set(err, PILE_ECORRUPT, "'%s': row %" PRIu64 ": a best-fit row does not begin with a"
                                " segment", s->path, r);
        PILE_FORWARD_IF_ERR(verify_row_tokens(s, r, len, err));
        if (s->sums) {
            uint64_t sum = row_checksum_of(s, r);
            if (sum != s->sums[r]) return row_mismatch(s, r, sum, err);
        }
        tokens += len;
    }
    if (tokens != in->token_count)
        return pile_err_set(err, PILE_ECORRUPT, "'%s': rows hold %" PRIu64 " tokens, header says %" PRIu64, s->path,
                            tokens, in->token_count);
    return 0;
}
