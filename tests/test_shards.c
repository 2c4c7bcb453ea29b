/* Tests of the shard writer, reader, verification and Megatron export, on
 * seeded random documents packed here the way pile-prep packs them; damaged
 * files are made by editing bytes at the offsets shards/FORMAT.md gives. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "pile_buf.h"
#include "pile_fs.h"
#include "pile_shards.h"
#include "pile_test.h"

#define REQUIRE_OK(expr, errp)                                                              \
    do {                                                                                    \
        int req_rc_ = (expr);                                                               \
        if (req_rc_ < 0) {                                                                  \
            PILE_FAIL_("%s returned %d: %s", #expr, req_rc_, (errp)->msg);                  \
            return;                                                                         \
        }                                                                                   \
    } while (0)

/* Like ASSERT_OK, without its NULL test (which -Waddress rejects for &err). */
#define CHECK_OK(expr, errp)                                                                \
    do {                                                                                    \
        int chk_rc_ = (expr);                                                               \
        if (chk_rc_ < 0) PILE_FAIL_("%s returned %d: %s", #expr, chk_rc_, (errp)->msg);    \
    } while (0)


static uint32_t rnd(uint32_t n)
{
    return (uint32_t)(pile_test_rng() % n);
}

static char tmpdir[4096];

static const char *tpath(pile_buf *b, const char *name)
{
    b->len = 0;
    pile_buf_printf(b, "%s/%s", tmpdir, name);
    return b->data;
}

static int file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

/* ------------------------------------------------------------ a model shard */

/* What was written, kept to compare with what is read back. */
typedef struct model_row {
    uint32_t *tokens;
    uint32_t len;
    pile_shard_doc docs[64];
    uint32_t ndocs;
    uint16_t lead;
} model_row;

typedef struct model {
    pile_shard_params params;
    model_row *rows;
    size_t nrows;
    uint64_t ndocs, ntokens;
    pile_ids stream;   /* every true token in row order */
    pile_ids doc_lens; /* concat: each document's length */
    const char *subsets[3];
} model;

static void model_free(model *m)
{
    for (size_t i = 0; i < m->nrows; i++) free(m->rows[i].tokens);
    free(m->rows);
    pile_ids_free(&m->stream);
    pile_ids_free(&m->doc_lens);
    memset(m, 0, sizeof *m);
}

static model_row *model_new_row(model *m)
{
    m->rows = realloc(m->rows, (m->nrows + 1) * sizeof *m->rows);
    model_row *r = &m->rows[m->nrows++];
    memset(r, 0, sizeof *r);
    r->tokens = calloc(m->params.max_length, sizeof *r->tokens);
    return r;
}

/* Random documents (each ending with eot) packed by concatenation: rows of
 * max_length, the last one partial. Documents may be long enough to cross
 * several rows. */
static void model_concat(model *m, uint32_t vocab, uint32_t max_length, int ndocs)
{
    memset(m, 0, sizeof *m);
    m->params.max_length = max_length;
    m->params.vocab_size = vocab;
    m->params.eot_id = vocab - 1;
    m->params.pad_id = vocab - 1;
    m->params.pack = PILE_PACK_CONCAT;
    m->params.split = PILE_SPLIT_TRAIN;
    for (int i = 0; i < PILE_SHARD_FP_BYTES; i++) m->params.tokenizer_fp[i] = (uint8_t)pile_test_rng();
    m->subsets[0] = "Pile-CC";
    m->subsets[1] = "Github";
    m->subsets[2] = "Ubuntu IRC \xc3\xa9"; /* a non-ASCII name */
    model_row *r = NULL;
    uint16_t cur_subset = 0;
    for (int d = 0; d < ndocs; d++) {
        uint32_t dlen = 1 + rnd(rnd(4) == 0 ? 3 * max_length : max_length / 2);
        uint16_t subset = (uint16_t)rnd(3);
        pile_ids_push(&m->doc_lens, dlen);
        for (uint32_t t = 0; t < dlen; t++) {
            if (!r || r->len == max_length) {
                r = model_new_row(m);
                r->lead = t == 0 ? subset : cur_subset;
            }
            if (t == 0) {
                r->docs[r->ndocs].offset = r->len;
                r->docs[r->ndocs].subset = subset;
                r->docs[r->ndocs].flags = 0;
                r->ndocs++;
                m->ndocs++;
                cur_subset = subset;
            }
            /* the last token is eot; the others are anything else, high ids included */
            uint32_t id = t + 1 == dlen ? m->params.eot_id : (rnd(8) == 0 ? vocab - 2 - rnd(8) : rnd(vocab - 1));
            r->tokens[r->len++] = id;
            pile_ids_push(&m->stream, id);
            m->ntokens++;
        }
    }
}

/* Best-fit style rows: each begins with a segment; some segments are marked
 * as continuing a split document; rows are short (padded). */
static void model_best_fit(model *m, uint32_t vocab, uint32_t max_length, int nrows)
{
    memset(m, 0, sizeof *m);
    m->params.max_length = max_length;
    m->params.vocab_size = vocab;
    m->params.eot_id = 0;
    m->params.pad_id = 1;
    m->params.pack = PILE_PACK_BEST_FIT;
    m->params.split = PILE_SPLIT_VAL;
    m->subsets[0] = "ArXiv";
    m->subsets[1] = "FreeLaw";
    m->subsets[2] = "PubMed Central";
    for (int i = 0; i < nrows; i++) {
        model_row *r = model_new_row(m);
        uint32_t target = 1 + rnd(max_length);
        while (r->len < target && r->ndocs < 64) {
            uint32_t seg = 1 + rnd(target - r->len);
            pile_shard_doc *d = &r->docs[r->ndocs++];
            d->offset = r->len;
            d->subset = (uint16_t)rnd(3);
            d->flags = rnd(4) == 0 ? PILE_DOC_CONTINUED : 0;
            for (uint32_t t = 0; t < seg; t++) {
                uint32_t id = t + 1 == seg ? 0 : 2 + rnd(vocab - 2);
                r->tokens[r->len++] = id;
                pile_ids_push(&m->stream, id);
            }
            m->ndocs++;
            m->ntokens += seg;
        }
        r->lead = r->docs[0].subset;
    }
}

static int model_write(const model *m, const char *path, pile_shard_info *info, pile_err *err)
{
    pile_shard_writer *w;
    PILE_FORWARD_IF_ERR(pile_shard_writer_open(&w, path, &m->params, err));
    uint16_t ids[3];
    int rc = 0;
    for (int i = 0; i < 3 && !rc; i++) rc = pile_shard_writer_subset(w, m->subsets[i], strlen(m->subsets[i]), &ids[i], err);
    for (size_t i = 0; i < m->nrows && !rc; i++) {
        const model_row *r = &m->rows[i];
        rc = pile_shard_writer_add_row(w, r->tokens, r->len, r->docs, r->ndocs, r->lead, err);
    }
    if (!rc) rc = pile_shard_writer_finish(w, info, err);
    pile_shard_writer_close(w);
    return rc;
}

/* Everything the reader says equals what was written. */
static void check_read_back(const model *m, const char *path)
{
    pile_err err = {0};
    pile_shard *s;
    REQUIRE_OK(pile_shard_open(&s, path, &err), &err);
    const pile_shard_info *in = pile_shard_get_info(s);
    uint32_t width = m->params.vocab_size <= 65536 ? 2 : 4;
    ASSERT_EQ(in->version, 1);
    ASSERT_EQ(in->token_bytes, width);
    ASSERT_EQ(in->max_length, m->params.max_length);
    ASSERT_EQ(in->vocab_size, m->params.vocab_size);
    ASSERT_EQ(in->eot_id, m->params.eot_id);
    ASSERT_EQ(in->pad_id, m->params.pad_id);
    ASSERT_EQ(in->pack, m->params.pack);
    ASSERT_EQ(in->split, m->params.split);
    ASSERT_EQ(in->row_count, m->nrows);
    ASSERT_EQ(in->doc_count, m->ndocs);
    ASSERT_EQ(in->token_count, m->ntokens);
    ASSERT_EQ(in->subset_count, 3);
    ASSERT_MEM_EQ(in->tokenizer_fp, m->params.tokenizer_fp, PILE_SHARD_FP_BYTES);
    for (uint32_t i = 0; i < 3; i++) ASSERT_STR_EQ(pile_shard_subset_name(s, i), m->subsets[i]);
    ASSERT(pile_shard_subset_name(s, 3) == NULL);

    uint32_t *row = malloc(m->params.max_length * sizeof *row);
    int bad = 0;
    /* Rows in a shuffled order: access is by index, not by scanning. */
    for (size_t k = 0; k < m->nrows && bad < 3; k++) {
        size_t i = (k * 7919u + 13u) % m->nrows;
        if (m->nrows % 7919u == 0) i = k;
        const model_row *r = &m->rows[i];
        uint32_t len = pile_shard_row_tokens(s, i, row);
        if (len != r->len) bad++;
        ASSERT_EQ(len, r->len);
        ASSERT_EQ(pile_shard_row_length(s, i), r->len);
        ASSERT_EQ(pile_shard_row_lead_subset(s, i), r->lead);
        for (uint32_t t = 0; t < m->params.max_length; t++) {
            uint32_t want = t < r->len ? r->tokens[t] : m->params.pad_id;
            if (row[t] != want) {
                PILE_FAIL_("row %zu position %u: read %u, wrote %u", i, t, row[t], want);
                bad++;
                break;
            }
        }
        /* the raw row is at data_offset + i * max_length * width, in the file's width */
        const void *raw = pile_shard_row_data(s, i);
        uint32_t first = width == 2 ? ((const uint16_t *)raw)[0] : ((const uint32_t *)raw)[0];
        ASSERT_EQ(first, r->len ? r->tokens[0] : m->params.pad_id);
        const pile_shard_doc *docs;
        uint32_t nd = pile_shard_row_docs(s, i, &docs);
        ASSERT_EQ(nd, r->ndocs);
        if (nd == r->ndocs) {
            for (uint32_t d = 0; d < nd; d++) {
                ASSERT_EQ(docs[d].offset, r->docs[d].offset);
                ASSERT_EQ(docs[d].subset, r->docs[d].subset);
                ASSERT_EQ(docs[d].flags, r->docs[d].flags);
            }
        }
    }
    free(row);
    CHECK_OK(pile_shard_verify(s, &err), &err);
    pile_shard_close(s);
}

static void test_round_trip(uint32_t vocab, const char *name)
{
    pile_buf pb = {0};
    model m;
    model_concat(&m, vocab, 128, 200);
    const char *path = tpath(&pb, name);
    pile_err err = {0};
    pile_shard_info info;
    /* The tail row is partial, so padding is exercised. */
    ASSERT(m.rows[m.nrows - 1].len < 128);
    int rc = model_write(&m, path, &info, &err);
    CHECK_OK(rc, &err);
    if (rc == 0) {
        ASSERT(file_exists(path));
        pile_buf tmp = {0};
        pile_buf_printf(&tmp, "%s.tmp", path);
        ASSERT(!file_exists(tmp.data));
        pile_buf_free(&tmp);
        ASSERT_EQ(info.row_count, m.nrows);
        ASSERT_EQ(info.token_count, m.ntokens);
        uint64_t size = 0;
        pile_fs_size(path, &size, &err);
        ASSERT_EQ(info.file_size, size);
        check_read_back(&m, path);
    }
    model_free(&m);
    pile_buf_free(&pb);
}

static void test_best_fit(void)
{
    pile_buf pb = {0};
    model m;
    model_best_fit(&m, 100000, 96, 150);
    const char *path = tpath(&pb, "bestfit.shard");
    pile_err err = {0};
    int rc = model_write(&m, path, NULL, &err);
    CHECK_OK(rc, &err);
    if (rc == 0) check_read_back(&m, path);
    model_free(&m);
    pile_buf_free(&pb);
}

static void test_tmp_and_abandon(void)
{
    pile_buf pb = {0}, tmp = {0};
    model m;
    model_concat(&m, 50257, 32, 20);
    const char *path = tpath(&pb, "abandoned.shard");
    pile_buf_printf(&tmp, "%s.tmp", path);
    pile_err err = {0};
    pile_shard_writer *w;
    int rc = pile_shard_writer_open(&w, path, &m.params, &err);
    CHECK_OK(rc, &err);
    if (rc == 0) {
        uint16_t id;
        CHECK_OK(pile_shard_writer_subset(w, "Pile-CC", 7, &id, &err), &err);
        ASSERT_EQ(id, 0);
        CHECK_OK(pile_shard_writer_subset(w, "Github", 6, &id, &err), &err);
        ASSERT_EQ(id, 1);
        CHECK_OK(pile_shard_writer_subset(w, "Pile-CC", 7, &id, &err), &err);
        ASSERT_EQ(id, 0);
        CHECK_OK(pile_shard_writer_subset(w, "Ubuntu IRC \xc3\xa9", 13, &id, &err), &err);
        for (size_t i = 0; i < 5; i++) {
            const model_row *r = &m.rows[i];
            CHECK_OK(pile_shard_writer_add_row(w, r->tokens, r->len, r->docs, r->ndocs, r->lead, &err), &err);
        }
        ASSERT_EQ(pile_shard_writer_rows(w), 5);
        /* while writing only the .tmp exists */
        ASSERT(file_exists(tmp.data));
        ASSERT(!file_exists(path));
        /* bad rows are refused with a message and change nothing */
        uint32_t big[33] = {0};
        ASSERT_EQ(pile_shard_writer_add_row(w, big, 33, NULL, 0, 0, &err), PILE_EINVAL);
        ASSERT(strstr(err.msg, "max_length") != NULL);
        big[3] = 50257;
        ASSERT_EQ(pile_shard_writer_add_row(w, big, 10, NULL, 0, 0, &err), PILE_EINVAL);
        ASSERT(strstr(err.msg, "position 3") != NULL);
        big[3] = 0;
        pile_shard_doc bad[2] = {{5, 0, 0}, {5, 1, 0}};
        ASSERT_EQ(pile_shard_writer_add_row(w, big, 10, bad, 2, 0, &err), PILE_EINVAL);
        pile_shard_doc unreg = {0, 7, 0};
        ASSERT_EQ(pile_shard_writer_add_row(w, big, 10, &unreg, 1, 7, &err), PILE_EINVAL);
        ASSERT_EQ(pile_shard_writer_rows(w), 5);
        pile_shard_writer_close(w);
        ASSERT(!file_exists(tmp.data));
        ASSERT(!file_exists(path));
    }
    pile_shard_writer_close(NULL);
    model_free(&m);
    pile_buf_free(&pb);
    pile_buf_free(&tmp);
}

/* ------------------------------------------------------- damaged files */

static int write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t n = len ? fwrite(data, 1, len, f) : 0;
    return fclose(f) == 0 && n == len ? 0 : -1;
}

static uint64_t get_u64(const char *b, size_t off)
{
    uint64_t v;
    memcpy(&v, b + off, 8);
    return v;
}

static void put_u64(char *b, size_t off, uint64_t v)
{
    memcpy(b + off, &v, 8);
}

/* Offsets from shards/FORMAT.md */
enum {
    H_VERSION = 8, H_ROW_COUNT = 48, H_DATA_OFF = 96, H_ROWS_OFF = 112, H_DOCS_OFF = 128, H_SUBS_OFF = 144,
    H_DATA_SUM = 160, H_ROWS_SUM = 168, H_HEADER_SUM = 248, H_MAX_LENGTH = 28,
    H_TOKEN_BYTES = 24, H_VOCAB = 32, H_DOC_COUNT = 56, H_TOKEN_COUNT = 64, H_SUBSET_COUNT = 72,
    H_DATA_SIZE = 104, H_ROWS_SIZE = 120, H_DOCS_SIZE = 136, H_SUBS_SIZE = 152,
};

static void reseal_header(char *b)
{
    put_u64(b, H_HEADER_SUM, XXH3_64bits(b, H_HEADER_SUM));
}

static void expect_open_fails(const char *path, const void *data, size_t len, int code, const char *needle,
                              const char *what)
{
    pile_err err = {0};
    pile_shard *s = NULL;
    if (write_bytes(path, data, len)) {
        PILE_FAIL_("cannot write '%s'", path);
        return;
    }
    int rc = pile_shard_open(&s, path, &err);
    if (rc != code) PILE_FAIL_("%s: open returned %d (%s), expected %d", what, rc, err.msg, code);
    if (!strstr(err.msg, path)) PILE_FAIL_("%s: message does not name the file: %s", what, err.msg);
    if (needle && !strstr(err.msg, needle)) PILE_FAIL_("%s: message lacks \"%s\": %s", what, needle, err.msg);
    ASSERT(s == NULL);
    pile_shard_close(s);
}

static void expect_verify_fails(const char *path, const char *data, size_t len, const char *needle,
                                const char *what)
{
    pile_err err = {0};
    pile_shard *s = NULL;
    if (write_bytes(path, data, len)) {
        PILE_FAIL_("cannot write '%s'", path);
        return;
    }
    int rc = pile_shard_open(&s, path, &err);
    if (rc) {
        PILE_FAIL_("%s: open failed: %s", what, err.msg);
        return;
    }
    rc = pile_shard_verify(s, &err);
    if (rc != PILE_ECORRUPT) PILE_FAIL_("%s: verify returned %d (%s), expected PILE_ECORRUPT", what, rc, err.msg);
    if (!strstr(err.msg, path)) PILE_FAIL_("%s: message does not name the file: %s", what, err.msg);
    if (!strstr(err.msg, needle)) PILE_FAIL_("%s: message lacks \"%s\": %s", what, needle, err.msg);
    pile_shard_close(s);
}

static void test_damage(void)
{
    pile_buf pb = {0}, file = {0}, bad = {0};
    model m;
    model_concat(&m, 50257, 64, 60);
    pile_err err = {0};
    const char *good = tpath(&pb, "good.shard");
    int rc = model_write(&m, good, NULL, &err);
    CHECK_OK(rc, &err);
    if (rc || pile_fs_read_file(good, &file, &err)) {
        model_free(&m);
        pile_buf_free(&pb);
        return;
    }
    char *dpath = strdup(tpath(&pb, "damaged.shard"));
    size_t n = file.len;
    const char *b = file.data;
    uint64_t data_off = get_u64(b, H_DATA_OFF), rows_off = get_u64(b, H_ROWS_OFF), docs_off = get_u64(b, H_DOCS_OFF),
             subs_off = get_u64(b, H_SUBS_OFF);
    ASSERT_EQ(data_off, 4096);

    TEST("open refuses truncated files");
    size_t cuts[] = {0, 5, 100, 255, 256, 4095, 4096 + 1000, (size_t)rows_off + 3, (size_t)docs_off + 8, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        char what[64];
        snprintf(what, sizeof what, "cut at %zu", cuts[i]);
        expect_open_fails(dpath, b, cuts[i], PILE_ETRUNC, "is truncated", what);
    }
    /* a cut after the header says how big the file should be */
    expect_open_fails(dpath, b, 4096 + 1000, PILE_ETRUNC, "header says", "cut in data");

    TEST("open refuses a wrong magic, a newer version, a corrupt header, trailing bytes");
    pile_buf_append(&bad, b, n);
    bad.data[3] = 'X';
    expect_open_fails(dpath, bad.data, n, PILE_EFORMAT, "not a pile shard", "magic");
    expect_open_fails(dpath, "hello, world\n", 13, PILE_EFORMAT, "not a pile shard", "text file");
    memcpy(bad.data, b, n);
    uint32_t v2 = 2;
    memcpy(bad.data + H_VERSION, &v2, 4);
    expect_open_fails(dpath, bad.data, n, PILE_EVERSION, "shard version 2 is newer than this build reads (1)",
                      "version");
    memcpy(bad.data, b, n);
    bad.data[H_ROW_COUNT] ^= 1;
    expect_open_fails(dpath, bad.data, n, PILE_ECORRUPT, "corrupt header", "row_count flipped");
    memcpy(bad.data, b, n);
    bad.data[200] ^= 0x40; /* a reserved byte is covered too */
    expect_open_fails(dpath, bad.data, n, PILE_ECORRUPT, "checksum", "reserved byte flipped");
    pile_buf_append(&bad, "\0\0\0\0", 4);
    memcpy(bad.data, b, n);
    expect_open_fails(dpath, bad.data, n + 4, PILE_EFORMAT, "after its last section", "trailing bytes");
    bad.len = n;
    memcpy(bad.data, b, n);
    uint32_t ml = 65;
    memcpy(bad.data + H_MAX_LENGTH, &ml, 4);
    reseal_header(bad.data);
    expect_open_fails(dpath, bad.data, n, PILE_EFORMAT, "data section", "max_length changed, resealed");
    {
        pile_shard *s = NULL;
        ASSERT_EQ(pile_shard_open(&s, tpath(&pb, "no-such.shard"), &err), PILE_ENOENT);
        ASSERT(strstr(err.msg, "cannot open") != NULL);
    }

    TEST("verify catches flipped bytes in each section");
    /* flip the low bit of a token of row 1 that stays a valid id, so only the checksum can tell */
    memcpy(bad.data, b, n);
    uint32_t t1 = 0;
    while (t1 < 63 && m.rows[1].tokens[t1] >= 50000) t1++;
    bad.data[data_off + (64 + t1) * 2] ^= 0x01;
    expect_verify_fails(dpath, bad.data, n, "data section checksum", "data byte");
    memcpy(bad.data, b, n);
    bad.data[rows_off + 16 + 9] ^= 0x00 + 0x80; /* row 1's length, high bits */
    expect_verify_fails(dpath, bad.data, n, "row table checksum", "row table byte");
    memcpy(bad.data, b, n);
    bad.data[docs_off + 8 * 3 + 4] ^= 0x02;
    expect_verify_fails(dpath, bad.data, n, "document table checksum", "doc table byte");
    memcpy(bad.data, b, n);
    bad.data[subs_off + 7] ^= 0x20;
    expect_verify_fails(dpath, bad.data, n, "subset table checksum", "subset table byte");

    TEST("verify catches invariants even with checksums recomputed");
    /* an out-of-range id in row 2, position 5, with the data checksum resealed */
    memcpy(bad.data, b, n);
    uint16_t big = 60000;
    memcpy(bad.data + data_off + (2 * 64 + 5) * 2, &big, 2);
    put_u64(bad.data, H_DATA_SUM, XXH3_64bits(bad.data + data_off, 64 * 2 * m.nrows));
    reseal_header(bad.data);
    expect_verify_fails(dpath, bad.data, n, "row 2 position 5: token id 60000", "id out of range");
    /* padding that is not pad_id in the last (partial) row */
    memcpy(bad.data, b, n);
    uint64_t last = m.nrows - 1;
    ASSERT(m.rows[last].len < 64);
    uint16_t notpad = 7;
    memcpy(bad.data + data_off + (last * 64 + 63) * 2, &notpad, 2);
    put_u64(bad.data, H_DATA_SUM, XXH3_64bits(bad.data + data_off, 64 * 2 * m.nrows));
    reseal_header(bad.data);
    expect_verify_fails(dpath, bad.data, n, "is not pad_id", "bad padding");
    /* a row length beyond max_length, with the row table checksum resealed */
    memcpy(bad.data, b, n);
    uint32_t toolong = 65;
    memcpy(bad.data + rows_off + 16 * 1 + 8, &toolong, 4);
    put_u64(bad.data, H_ROWS_SUM, XXH3_64bits(bad.data + rows_off, 16 * m.nrows));
    reseal_header(bad.data);
    expect_verify_fails(dpath, bad.data, n, "row 1: length 65", "row too long");

    TEST("open refuses section sizes whose ends wrap around 2^64");
    {
        /* 2^58-1 rows of 16 2-byte tokens and 2^59-1 documents: each size passes
         * a per-section bound of 2^62, but the subset table's offset wraps to
         * 4040, so a 4044-byte file would match the header and map nothing. */
        char h[4044];
        memset(h, 0, sizeof h);
        memcpy(h, b, 256);
        uint64_t rows = (UINT64_C(1) << 58) - 1, docs = (UINT64_C(1) << 59) - 1;
        uint32_t ml16 = 16, zero = 0;
        memcpy(h + H_MAX_LENGTH, &ml16, 4);
        put_u64(h, H_ROW_COUNT, rows);
        put_u64(h, H_DOC_COUNT, docs);
        put_u64(h, H_TOKEN_COUNT, 0);
        memcpy(h + H_SUBSET_COUNT, &zero, 4);
        uint64_t data_size = rows * 32, rows_off2 = 4096 + data_size, docs_off2 = rows_off2 + rows * 16;
        put_u64(h, H_DATA_SIZE, data_size);
        put_u64(h, H_ROWS_OFF, rows_off2);
        put_u64(h, H_ROWS_SIZE, rows * 16);
        put_u64(h, H_DOCS_OFF, docs_off2);
        put_u64(h, H_DOCS_SIZE, docs * 8);
        put_u64(h, H_SUBS_OFF, docs_off2 + docs * 8); /* wraps to 4040 */
        put_u64(h, H_SUBS_SIZE, 4);
        ASSERT_EQ(docs_off2 + docs * 8, 4040);
        reseal_header(h);
        expect_open_fails(dpath, h, sizeof h, PILE_EFORMAT, "impossible counts", "wrapping section ends");
    }

    TEST("open takes subset tables as large as a writer makes (over 1 GiB)");
    memcpy(bad.data, b, n);
    put_u64(bad.data, H_SUBS_SIZE, (UINT64_C(1) << 30) + 6);
    reseal_header(bad.data);
    /* the table is not there, so the file is short: truncated, not malformed */
    expect_open_fails(dpath, bad.data, n, PILE_ETRUNC, "is truncated", "1 GiB subset table");

    TEST("verify refuses a header rewritten after open, and reads nothing it names");
    if (write_bytes(dpath, b, n) == 0) {
        pile_shard *s = NULL;
        int orc = pile_shard_open(&s, dpath, &err);
        CHECK_OK(orc, &err);
        if (orc == 0) {
            /* a valid header whose row table lies far outside the map */
            memcpy(bad.data, b, 256);
            put_u64(bad.data, H_ROWS_OFF, UINT64_C(1) << 40);
            reseal_header(bad.data);
            FILE *f = fopen(dpath, "r+b");
            ASSERT(f && fwrite(bad.data, 1, 256, f) == 256);
            if (f) fclose(f);
            ASSERT_EQ(pile_shard_verify(s, &err), PILE_ECORRUPT);
            ASSERT(strstr(err.msg, "header changed") != NULL);
            pile_shard_close(s);
        }
    }

    free(dpath);
    model_free(&m);
    pile_buf_free(&pb);
    pile_buf_free(&file);
    pile_buf_free(&bad);
}

/* The writer streams token data through O_DIRECT in whole 4 KiB blocks; a
 * file that ends on a block boundary must still get its 256-byte header. */
static void test_block_sized_file(void)
{
    pile_buf pb = {0};
    pile_err err = {0};
    pile_shard_params p;
    memset(&p, 0, sizeof p);
    p.max_length = 2048;
    p.vocab_size = 50257;
    p.eot_id = 50256;
    p.pad_id = 50256;
    /* 4096 header block + 4096 data + 16 row + 8 doc + 4 count + 2 + 4066 name bytes = 12288 */
    char name[4066];
    memset(name, 'x', sizeof name);
    uint32_t tokens[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 50256};
    pile_shard_doc doc = {0, 0, 0};
    const char *path = tpath(&pb, "blocks.shard");
    pile_shard_writer *w;
    int rc = pile_shard_writer_open(&w, path, &p, &err);
    CHECK_OK(rc, &err);
    if (rc) return;
    uint16_t id;
    pile_shard_info info;
    rc = pile_shard_writer_subset(w, name, sizeof name, &id, &err);
    if (!rc) rc = pile_shard_writer_add_row(w, tokens, 10, &doc, 1, id, &err);
    if (!rc) rc = pile_shard_writer_finish(w, &info, &err);
    CHECK_OK(rc, &err);
    pile_shard_writer_close(w);
    if (rc == 0) {
        ASSERT_EQ(info.file_size, 12288);
        pile_shard *s;
        rc = pile_shard_open(&s, path, &err);
        CHECK_OK(rc, &err);
        if (rc == 0) {
            CHECK_OK(pile_shard_verify(s, &err), &err);
            ASSERT_EQ(pile_shard_row_length(s, 0), 10);
            pile_shard_close(s);
        }
    }
    pile_buf_free(&pb);
}

/* No rows at all is a valid shard (a split that got no documents). */
static void test_empty_shard(void)
{
    pile_buf pb = {0};
    pile_err err = {0};
    model m;
    model_concat(&m, 50257, 64, 0);
    const char *path = tpath(&pb, "empty.shard");
    int rc = model_write(&m, path, NULL, &err);
    CHECK_OK(rc, &err);
    if (rc == 0) check_read_back(&m, path);
    model_free(&m);
    pile_buf_free(&pb);
}

static void test_megatron(void)
{
    pile_buf pb = {0}, idx = {0}, bin = {0}, p2 = {0};
    pile_err err = {0};
    model m;
    model_concat(&m, 100000, 64, 120);
    /* the same documents cut into two shards: a document crosses the cut */
    size_t cut = m.nrows / 2;
    while (cut < m.nrows && m.rows[cut].ndocs && m.rows[cut].docs[0].offset == 0) cut++;
    ASSERT(cut < m.nrows);
    model a = m, b = m;
    a.nrows = cut;
    b.rows = m.rows + cut;
    b.nrows = m.nrows - cut;
    char *pa = strdup(tpath(&pb, "mega-a.shard")), *pbp = strdup(tpath(&pb, "mega-b.shard"));
    char *prefix = strdup(tpath(&pb, "mega"));
    CHECK_OK(model_write(&a, pa, NULL, &err), &err);
    CHECK_OK(model_write(&b, pbp, NULL, &err), &err);
    const char *paths[2] = {pa, pbp};
    int rc = pile_megatron_export(paths, 2, prefix, &err);
    CHECK_OK(rc, &err);
    pile_buf_printf(&p2, "%s.idx", prefix);
    if (rc == 0 && pile_fs_read_file(p2.data, &idx, &err) == 0) {
        p2.len = 0;
        pile_buf_printf(&p2, "%s.bin", prefix);
        CHECK_OK(pile_fs_read_file(p2.data, &bin, &err), &err);
        /* the .idx as shards/FORMAT.md lays it out */
        const char *x = idx.data;
        size_t S = m.doc_lens.len;
        ASSERT_MEM_EQ(x, "MMIDIDX\0\0", 9);
        ASSERT_EQ(get_u64(x, 9), 1);
        ASSERT_EQ((unsigned char)x[17], 4); /* int32: 4-byte tokens */
        ASSERT_EQ(get_u64(x, 18), S);
        ASSERT_EQ(get_u64(x, 26), S + 1);
        ASSERT_EQ(idx.len, 34 + 4 * S + 8 * S + 8 * (S + 1));
        ASSERT_EQ(bin.len, 4 * m.stream.len);
        if (idx.len == 34 + 20 * S + 8 && bin.len == 4 * m.stream.len) {
            int64_t ptr = 0;
            for (size_t i = 0; i < S; i++) {
                int32_t len;
                memcpy(&len, x + 34 + 4 * i, 4);
                if ((uint32_t)len != m.doc_lens.data[i] || (int64_t)get_u64(x, 34 + 4 * S + 8 * i) != ptr ||
                    get_u64(x, 34 + 12 * S + 8 * i) != i) {
                    PILE_FAIL_("sequence %zu: length %d (want %u) or pointer or document index is wrong", i, len,
                               m.doc_lens.data[i]);
                    break;
                }
                ptr += 4 * (int64_t)len;
            }
            ASSERT_EQ(get_u64(x, 34 + 12 * S + 8 * S), S);
            ASSERT_MEM_EQ(bin.data, m.stream.data, bin.len); /* little-endian int32 == the ids */
        }
    }

    /* shards of another tokenizer are refused, and nothing is left behind */
    model c;
    model_concat(&c, 100000, 64, 5);
    char *pc = strdup(tpath(&pb, "other.shard"));
    CHECK_OK(model_write(&c, pc, NULL, &err), &err);
    char *prefix2 = strdup(tpath(&pb, "mega2"));
    const char *mixed[2] = {pa, pc};
    ASSERT_EQ(pile_megatron_export(mixed, 2, prefix2, &err), PILE_EMISMATCH);
    ASSERT(strstr(err.msg, "different tokenizers") != NULL);
    const char *exts[4] = {".bin", ".idx", ".bin.tmp", ".idx.tmp"};
    for (int i = 0; i < 4; i++) {
        p2.len = 0;
        pile_buf_printf(&p2, "%s%s", prefix2, exts[i]);
        if (file_exists(p2.data)) PILE_FAIL_("'%s' was left behind", p2.data);
    }
    const char *missing[1] = {tpath(&pb, "no-such.shard")};
    ASSERT_EQ(pile_megatron_export(missing, 1, prefix2, &err), PILE_ENOENT);

    /* an id past vocab_size (open does not read token data): refused with the
     * shard's name, also when the caller passes no error record */
    pile_buf raw = {0};
    if (pile_fs_read_file(pa, &raw, &err) == 0) {
        uint32_t big = 100000;
        memcpy(raw.data + 4096 + (2 * 64 + 5) * 4, &big, 4);
        char *pbad = strdup(tpath(&pb, "mega-bad.shard"));
        ASSERT_EQ(write_bytes(pbad, raw.data, raw.len), 0);
        const char *badp[1] = {pbad};
        ASSERT_EQ(pile_megatron_export(badp, 1, prefix2, &err), PILE_ECORRUPT);
        ASSERT(strstr(err.msg, pbad) != NULL);
        ASSERT(strstr(err.msg, "row 2 position 5 holds id 100000") != NULL);
        ASSERT_EQ(pile_megatron_export(badp, 1, prefix2, NULL), PILE_ECORRUPT);
        for (int i = 0; i < 4; i++) {
            p2.len = 0;
            pile_buf_printf(&p2, "%s%s", prefix2, exts[i]);
            if (file_exists(p2.data)) PILE_FAIL_("'%s' was left behind", p2.data);
        }
        free(pbad);
    }
    pile_buf_free(&raw);
    free(pa);
    free(pbp);
    free(pc);
    free(prefix);
    free(prefix2);
    model_free(&m);
    model_free(&c);
    pile_buf_free(&pb);
    pile_buf_free(&p2);
    pile_buf_free(&idx);
    pile_buf_free(&bin);
}

int main(void)
{
    if (!pile_test_tmpdir(tmpdir, sizeof tmpdir, "shards")) {
        printf("# cannot create a temporary folder: %s\n", strerror(errno));
        return 1;
    }
    pile_test_rng_state = 20240601;

    TEST("round trip, 2-byte tokens (vocab 50257)");
    test_round_trip(50257, "w2.shard");
    TEST("round trip, 4-byte tokens (vocab 100000)");
    test_round_trip(100000, "w4.shard");
    TEST("round trip, best-fit rows with continued segments");
    test_best_fit();
    TEST("writer: .tmp while writing, refused rows, abandoned writer leaves nothing");
    test_tmp_and_abandon();
    test_damage();
    TEST("writer: a file that ends on a 4 KiB block boundary");
    test_block_sized_file();
    TEST("round trip, a shard with no rows");
    test_empty_shard();
    TEST("megatron export: 4-byte ids as int32, documents across two shards, refusals, corrupt ids");
    test_megatron();

    int rc = TEST_DONE();
    if (rc == 0) {
        char cmd[4200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0) printf("# could not remove %s\n", tmpdir);
    }
    return rc;
}
