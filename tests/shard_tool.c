/* Test helper: edits shard files the way damage or an older writer would,
 * working from the offsets in shards/FORMAT.md alone (it does not link the
 * shard library, so the library's reading of the format is checked against
 * this one).
 *
 *   shard_tool flip FILE OFFSET       xor the byte at OFFSET with 0x01
 *   shard_tool to-v1 FILE...          rewrite version 2 shards as version 1:
 *                                     no row checksum table, its header fields
 *                                     zero (reserved in version 1), header resealed
 *   shard_tool row-sums FILE          recompute every row checksum as FORMAT.md
 *                                     defines it; exit 0 when all match the table
 *
 * Exit 0 on success, 1 on failure (with a message), 2 on bad usage. */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

enum {
    H_VERSION = 8, H_MAX_LENGTH = 28, H_TOKEN_BYTES = 24, H_ROW_COUNT = 48, H_DOC_COUNT = 56,
    H_DATA_OFF = 96, H_ROWS_OFF = 112, H_DOCS_OFF = 128, H_CHECKS_OFF = 192, H_CHECKS_SIZE = 200,
    H_CHECKS_SUM = 208, H_HEADER_SUM = 248, HEADER = 256,
};

static uint64_t get(const unsigned char *b, size_t off, size_t n)
{
    uint64_t v = 0;
    memcpy(&v, b + off, n); /* a little-endian host reads the format's own order */
    return v;
}

static void put(unsigned char *b, size_t off, size_t n, uint64_t v)
{
    memcpy(b + off, &v, n);
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "shard_tool: cannot open '%s': %s\n", path, strerror(errno));
        return NULL;
    }
    unsigned char *b = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? 2 * cap : 1 << 16;
            unsigned char *nb = realloc(b, cap);
            if (!nb) break;
            b = nb;
        }
        size_t k = fread(b + n, 1, cap - n, f);
        n += k;
        if (k == 0) break;
    }
    int bad = ferror(f) || n == cap;
    fclose(f);
    if (bad || n < HEADER) {
        fprintf(stderr, "shard_tool: cannot read '%s' whole, or it is shorter than a header\n", path);
        free(b);
        return NULL;
    }
    *len = n;
    return b;
}

static int spill(const char *path, const unsigned char *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(b, 1, n, f) == n;
    if (f && fclose(f) != 0) ok = 0;
    if (!ok) fprintf(stderr, "shard_tool: cannot write '%s': %s\n", path, strerror(errno));
    return ok ? 0 : 1;
}

/* FORMAT.md, "Row checksum table": XXH3-64, seed r, of the row entry, its
 * document entries and its token data, concatenated. */
static uint64_t row_sum(const unsigned char *b, uint64_t r)
{
    uint64_t rows = get(b, H_ROWS_OFF, 8), docs = get(b, H_DOCS_OFF, 8), data = get(b, H_DATA_OFF, 8);
    uint64_t nrows = get(b, H_ROW_COUNT, 8), ndocs = get(b, H_DOC_COUNT, 8);
    size_t row_bytes = (size_t)(get(b, H_MAX_LENGTH, 4) * get(b, H_TOKEN_BYTES, 4));
    uint64_t first = get(b, rows + 16 * r, 8), end = r + 1 < nrows ? get(b, rows + 16 * (r + 1), 8) : ndocs;
    if (end < first || end > ndocs) end = first;
    XXH3_state_t *st = XXH3_createState();
    if (!st) abort();
    XXH3_64bits_reset_withSeed(st, r);
    XXH3_64bits_update(st, b + rows + 16 * r, 16);
    XXH3_64bits_update(st, b + docs + 8 * first, 8 * (size_t)(end - first));
    XXH3_64bits_update(st, b + data + r * row_bytes, row_bytes);
    uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && !strcmp(argv[1], "flip")) {
        char *end;
        unsigned long long off = strtoull(argv[3], &end, 10);
        size_t n;
        unsigned char *b = slurp(argv[2], &n);
        if (!b) return 1;
        if (*end || off >= n) {
            fprintf(stderr, "shard_tool: offset '%s' is not inside '%s'\n", argv[3], argv[2]);
            free(b);
            return 1;
        }
        b[off] ^= 0x01;
        int rc = spill(argv[2], b, n);
        free(b);
        return rc;
    }
    if (argc >= 3 && !strcmp(argv[1], "to-v1")) {
        for (int i = 2; i < argc; i++) {
            size_t n;
            unsigned char *b = slurp(argv[i], &n);
            if (!b) return 1;
            if (get(b, H_VERSION, 4) != 2 || get(b, H_CHECKS_OFF, 8) + get(b, H_CHECKS_SIZE, 8) != n) {
                fprintf(stderr, "shard_tool: '%s' is not a whole version 2 shard\n", argv[i]);
                free(b);
                return 1;
            }
            /* the subset table ends where the checksums' 8-byte alignment began */
            size_t end = (size_t)get(b, 144, 8) + (size_t)get(b, 152, 8);
            put(b, H_VERSION, 4, 1);
            memset(b + H_CHECKS_OFF, 0, H_HEADER_SUM - H_CHECKS_OFF);
            put(b, H_HEADER_SUM, 8, XXH3_64bits(b, H_HEADER_SUM));
            int rc = spill(argv[i], b, end);
            free(b);
            if (rc) return rc;
        }
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "row-sums")) {
        size_t n;
        unsigned char *b = slurp(argv[2], &n);
        if (!b) return 1;
        uint64_t nrows = get(b, H_ROW_COUNT, 8), checks = get(b, H_CHECKS_OFF, 8), bad = 0;
        if (get(b, H_VERSION, 4) != 2 || checks + 8 * nrows != n) {
            fprintf(stderr, "shard_tool: '%s' is not a whole version 2 shard\n", argv[2]);
            free(b);
            return 1;
        }
        for (uint64_t r = 0; r < nrows; r++)
            if (row_sum(b, r) != get(b, checks + 8 * r, 8) && bad++ < 3)
                fprintf(stderr, "shard_tool: '%s' row %" PRIu64 ": computed %016" PRIx64 ", table %016" PRIx64 "\n",
                        argv[2], r, row_sum(b, r), get(b, checks + 8 * r, 8));
        if (get(b, H_CHECKS_SUM, 8) != XXH3_64bits(b + checks, 8 * nrows)) {
            fprintf(stderr, "shard_tool: '%s': the table's own checksum differs\n", argv[2]);
            bad++;
        }
        printf("%" PRIu64 " rows, %" PRIu64 " mismatches\n", nrows, bad);
        free(b);
        return bad ? 1 : 0;
    }
    fprintf(stderr, "usage: shard_tool flip FILE OFFSET | to-v1 FILE... | row-sums FILE\n");
    return 2;
}
