/* libFuzzer target for the shard reader: open, every reader call on every
 * row, document and subset, each row's check (pile_shard_check_row, twice:
 * the second answer comes from its record), verify, and the Megatron export
 * (which checks rows as it reads them). The header, section and row
 * checksums would stop a blind fuzzer at the first byte it changes, so the
 * first input byte picks how much of the file the target repairs before
 * writing it (as PNG fuzzers recompute CRCs): the checks behind each
 * checksum are what is under test.
 *
 *   mode 0  the file is the input as is (magic, version, truncation paths)
 *   mode 1  header checksum recomputed (every header check at open)
 *   mode 2  row checksums (version 2, where the sections lie inside the
 *           file), section and header checksums recomputed
 *   mode 3  structure repaired: counts clamped small, offsets and sizes
 *           computed from them, the input after the header laid out from
 *           byte 4096 on and cut or zero-padded to the exact end, subset
 *           count copied into the table, all checksums recomputed; the
 *           file opens (unless the subset table is malformed) and verify
 *           and the export walk fuzzer-chosen rows, documents and tokens.
 *           Bit 2 of the mode byte makes it version 1 (no row checksums),
 *           else version 2.
 *
 * Run: tools/fuzz.sh (seeds: real shards, each prefixed with a mode byte,
 * a mode-3 one the header plus what follows byte 4096: in
 * tests/fuzz/corpus/fuzz_shard from tests/fuzz/make_corpus.py, and made
 * afresh by the current writer at every run). The export writes into a
 * temporary folder (fuzz_tmp.h) that must hold exactly its two files
 * afterwards, or nothing when it failed. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>
#include <xxhash.h>

#include "fuzz_tmp.h"
#include "pile_shards.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Header field offsets, from shards/FORMAT.md (version 2). */
enum {
    H_VERSION = 8, H_HEADER_SIZE = 12, H_BYTE_ORDER = 16, H_FLAGS = 20, H_TOKEN_BYTES = 24,
    H_MAX_LENGTH = 28, H_VOCAB = 32, H_EOT = 36, H_PAD = 40, H_PACK = 44, H_SPLIT = 46,
    H_ROWS = 48, H_DOCS = 56, H_SUBSETS = 72,
    H_DATA_OFF = 96, H_DATA_SIZE = 104, H_ROWS_OFF = 112, H_ROWS_SIZE = 120,
    H_DOCS_OFF = 128, H_DOCS_SIZE = 136, H_SUBS_OFF = 144, H_SUBS_SIZE = 152,
    H_DATA_SUM = 160, H_ROWS_SUM = 168, H_DOCS_SUM = 176, H_SUBS_SUM = 184,
    H_CHECKS_OFF = 192, H_CHECKS_SIZE = 200, H_CHECKS_SUM = 208, H_HEADER_SUM = 248,
    HEADER = 256, DATA_OFFSET = 4096,
};

static uint64_t get(const uint8_t *p, size_t off, size_t n)
{
    uint64_t v = 0;
    memcpy(&v, p + off, n); /* little-endian host: the format's own order */
    return v;
}

static void put(uint8_t *p, size_t off, size_t n, uint64_t v)
{
    memcpy(p + off, &v, n);
}

static int inside(uint64_t off, uint64_t len, size_t n)
{
    return off <= n && len <= n - off;
}

/* Version 2's row checksums (FORMAT.md: XXH3-64, seed r, of the row entry,
 * its document entries, its token data), where the sections lie inside the
 * file and agree with the counts. A damaged document range is clamped as
 * the reader clamps it, so that the row then passes and the checks behind
 * it are reached. */
static void fix_row_sums(uint8_t *f, size_t n)
{
    if (get(f, H_VERSION, 4) != 2) return;
    uint64_t rows = get(f, H_ROWS, 8), docs = get(f, H_DOCS, 8), L = get(f, H_MAX_LENGTH, 4),
             W = get(f, H_TOKEN_BYTES, 4);
    uint64_t data = get(f, H_DATA_OFF, 8), rt = get(f, H_ROWS_OFF, 8), dt = get(f, H_DOCS_OFF, 8),
             ct = get(f, H_CHECKS_OFF, 8);
    if (rows > n || L > n || W > 4 || !inside(rt, rows * 16, n) || !inside(dt, docs * 8, n) ||
        !inside(ct, rows * 8, n) || !inside(data, rows * L * W, n))
        return;
    XXH3_state_t *st = XXH3_createState();
    if (!st) abort();
    for (uint64_t r = 0; r < rows; r++) {
        uint64_t first = get(f, (size_t)(rt + 16 * r), 8), end = r + 1 < rows ? get(f, (size_t)(rt + 16 * (r + 1)), 8) : docs;
        if (first > docs) first = docs;
        if (end > docs) end = docs;
        if (end < first) end = first;
        if (end - first > L) end = first + L;
        XXH3_64bits_reset_withSeed(st, r);
        XXH3_64bits_update(st, f + rt + 16 * r, 16);
        XXH3_64bits_update(st, f + dt + 8 * first, (size_t)(8 * (end - first)));
        XXH3_64bits_update(st, f + data + r * L * W, (size_t)(L * W));
        put(f, (size_t)(ct + 8 * r), 8, XXH3_64bits_digest(st));
    }
    XXH3_freeState(st);
}

/* Section checksums for the sections that lie inside the file. */
static void fix_sums(uint8_t *f, size_t n)
{
    static const int secs[5][3] = {{H_DATA_OFF, H_DATA_SIZE, H_DATA_SUM},
                                   {H_ROWS_OFF, H_ROWS_SIZE, H_ROWS_SUM},
                                   {H_DOCS_OFF, H_DOCS_SIZE, H_DOCS_SUM},
                                   {H_SUBS_OFF, H_SUBS_SIZE, H_SUBS_SUM},
                                   {H_CHECKS_OFF, H_CHECKS_SIZE, H_CHECKS_SUM}};
    fix_row_sums(f, n);
    for (int i = 0; i < 5; i++) {
        uint64_t off = get(f, secs[i][0], 8), len = get(f, secs[i][1], 8);
        if (off <= n && len <= n - off) put(f, secs[i][2], 8, XXH3_64bits(f + off, (size_t)len));
    }
}

static void fix_header_sum(uint8_t *f)
{
    put(f, H_HEADER_SUM, 8, XXH3_64bits(f, H_HEADER_SUM));
}

/* Mode 3: a file whose layout agrees with its counts. Returns the new size. */
static size_t build_structured(const uint8_t *in, size_t n, int version, uint8_t **out)
{
    uint8_t h[HEADER] = {0};
    memcpy(h, in, n < HEADER ? n : HEADER);
    memcpy(h, "PILESHRD", 8);
    put(h, H_VERSION, 4, (uint64_t)version);
    put(h, H_HEADER_SIZE, 4, HEADER);
    put(h, H_BYTE_ORDER, 4, 0x01020304u);
    put(h, H_FLAGS, 4, 0);
    uint32_t vocab = (uint32_t)get(h, H_VOCAB, 4);
    if (vocab == 0) vocab = 1;
    put(h, H_VOCAB, 4, vocab);
    uint32_t w = vocab <= 65536u ? 2 : 4;
    put(h, H_TOKEN_BYTES, 4, w);
    put(h, H_EOT, 4, get(h, H_EOT, 4) % vocab);
    if (w == 2) put(h, H_PAD, 4, get(h, H_PAD, 4) & 0xFFFF);
    put(h, H_PACK, 2, get(h, H_PACK, 2) & 1);
    put(h, H_SPLIT, 2, get(h, H_SPLIT, 2) % 3);
    uint32_t max_length = 1 + (uint32_t)(get(h, H_MAX_LENGTH, 4) % 64);
    uint64_t rows = get(h, H_ROWS, 8) % 32, docs = get(h, H_DOCS, 8) % 256;
    put(h, H_MAX_LENGTH, 4, max_length);
    put(h, H_ROWS, 8, rows);
    put(h, H_DOCS, 8, docs);
    uint64_t data_size = rows * max_length * w;
    uint64_t rows_off = (DATA_OFFSET + data_size + 7) / 8 * 8;
    uint64_t docs_off = rows_off + rows * 16, subs_off = docs_off + docs * 8;
    size_t body = n > HEADER ? n - HEADER : 0; /* laid out from DATA_OFFSET */
    uint64_t subs_size = DATA_OFFSET + body > subs_off + 4 ? DATA_OFFSET + body - subs_off : 4;
    if (subs_size > 4096) subs_size = 4096;
    put(h, H_DATA_OFF, 8, DATA_OFFSET);
    put(h, H_DATA_SIZE, 8, data_size);
    put(h, H_ROWS_OFF, 8, rows_off);
    put(h, H_ROWS_SIZE, 8, rows * 16);
    put(h, H_DOCS_OFF, 8, docs_off);
    put(h, H_DOCS_SIZE, 8, docs * 8);
    put(h, H_SUBS_OFF, 8, subs_off);
    put(h, H_SUBS_SIZE, 8, subs_size);
    size_t total = (size_t)(subs_off + subs_size);
    if (version >= 2) {
        uint64_t checks_off = (subs_off + subs_size + 7) / 8 * 8;
        put(h, H_CHECKS_OFF, 8, checks_off);
        put(h, H_CHECKS_SIZE, 8, rows * 8);
        total = (size_t)(checks_off + rows * 8);
    } else {
        memset(h + H_CHECKS_OFF, 0, H_HEADER_SUM - H_CHECKS_OFF);
    }
    uint8_t *f = calloc(1, total);
    if (!f) abort();
    memcpy(f, h, HEADER);
    /* the input fills the sections up to the subset table's end; the row checksums are recomputed */
    size_t room = (size_t)(subs_off + subs_size) - DATA_OFFSET;
    if (body) memcpy(f + DATA_OFFSET, in + HEADER, body < room ? body : room);
    uint32_t count = (uint32_t)(get(f, (size_t)subs_off, 4) % 65537u);
    put(f, (size_t)subs_off, 4, count);
    put(f, H_SUBSETS, 4, count);
    fix_sums(f, total);
    fix_header_sum(f);
    *out = f;
    return total;
}

/* After an export into dir: on success exactly m.bin and m.idx, on failure
 * nothing (no temporary file left behind); then empties dir. */
static void check_export_left(const char *dir, int ok)
{
    DIR *d = opendir(dir);
    if (!d) abort();
    int seen = 0;
    struct dirent *e;
    char path[600];
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (!ok || (strcmp(e->d_name, "m.bin") != 0 && strcmp(e->d_name, "m.idx") != 0)) {
            fprintf(stderr, "export %s left '%s'\n", ok ? "succeeded but" : "failed and", e->d_name);
            abort();
        }
        seen++;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) != 0) abort();
    }
    closedir(d);
    if (ok && seen != 2) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    int mode = data[0] & 3, version = data[0] & 4 ? 1 : 2;
    data++;
    size--;
    uint8_t *f;
    size_t n;
    if (mode == 3) {
        n = build_structured(data, size, version, &f);
    } else {
        n = size;
        f = malloc(n ? n : 1);
        if (!f) abort();
        memcpy(f, data, n);
        if (mode >= 1 && n >= HEADER) {
            if (mode == 2) fix_sums(f, n);
            fix_header_sum(f);
        }
    }
    int fd = memfd_create("fuzz_shard", MFD_CLOEXEC);
    if (fd < 0) abort();
    if (n && write(fd, f, n) != (ssize_t)n) abort();
    free(f);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);

    pile_shard *s;
    pile_err err;
    int rc = pile_shard_open(&s, path, &err);
    if (rc == 0) {
        const pile_shard_info *in = pile_shard_get_info(s);
        if (in->token_bytes != 2 && in->token_bytes != 4) abort();
        uint32_t *tokens = malloc((size_t)in->max_length * 4);
        if (!tokens) abort();
        uint64_t sum = 0;
        for (uint64_t r = 0; r < in->row_count; r++) {
            const unsigned char *raw = pile_shard_row_data(s, r);
            sum += raw[0] + raw[(size_t)in->max_length * in->token_bytes - 1];
            uint32_t len = pile_shard_row_tokens(s, r, tokens);
            if (len > in->max_length || len != pile_shard_row_length(s, r)) abort();
            sum += tokens[in->max_length - 1] + pile_shard_row_lead_subset(s, r);
            const pile_shard_doc *docs;
            uint32_t nd = pile_shard_row_docs(s, r, &docs);
            if (nd > in->max_length) abort();
            for (uint32_t d = 0; d < nd; d++) sum += docs[d].offset + docs[d].subset + docs[d].flags;
        }
        /* every row's check, twice: the second answer comes from the record and must agree */
        uint64_t bad = 0;
        for (int pass = 0; pass < 2; pass++)
            for (uint64_t r = 0; r < in->row_count; r++) {
                int crc = pile_shard_check_row(s, r, &err);
                if (crc != 0 && (crc != PILE_ECORRUPT || !in->row_checksums)) abort();
                bad += crc != 0;
            }
        if (bad % 2 || pile_shard_corrupt_rows(s) != bad / 2) abort();
        for (uint32_t i = 0; i <= in->subset_count; i++) {
            const char *name = pile_shard_subset_name(s, i);
            if ((name == NULL) != (i == in->subset_count)) abort();
            if (name) sum += strlen(name);
        }
        free(tokens);
        int vrc = pile_shard_verify(s, &err);
        if (vrc != 0 && vrc != PILE_ECORRUPT) abort();
        pile_shard_close(s);
        if (sum == 1) fputc('\0', stderr); /* keeps the reads from being optimised away */

        if (mode == 3) {
            const char *dir = fuzz_tmp_dir("fuzz_shard");
            char prefix[600];
            snprintf(prefix, sizeof prefix, "%s/m", dir);
            const char *paths[1] = {path};
            check_export_left(dir, pile_megatron_export(paths, 1, prefix, &err) == 0);
        }
    } else if (rc != PILE_EFORMAT && rc != PILE_ETRUNC && rc != PILE_ECORRUPT && rc != PILE_EVERSION) {
        abort(); /* an I/O or memory error on a small memfd is a bug */
    } else if (mode == 3 && rc != PILE_EFORMAT) {
        abort(); /* a laid-out file can only fail on its subset table */
    }
    close(fd);
    return 0;
}
