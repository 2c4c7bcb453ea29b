/* Tests of the shard writer, reader, row checks, verification and Megatron
 * export, on seeded random documents packed here the way pile-prep packs
 * them; damaged files are made by editing bytes at the offsets
 * shards/FORMAT.md gives, and row checksums are recomputed here from that
 * text alone. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>
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

/* ------------------------------------------------- the format, from FORMAT.md */

static uint64_t get_u64(const char *b, size_t off)
{
    uint64_t v;
    memcpy(&v, b + off, 8);
    return v;
}

static uint32_t get_u32(const char *b, size_t off)
{
    uint32_t v;
    memcpy(&v, b + off, 4);
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
    H_DOCS_SUM = 176, H_SUBS_SUM = 184, H_CHECKS_OFF = 192, H_CHECKS_SIZE = 200, H_CHECKS_SUM = 208,
};

static void reseal_header(char *b)
{
    put_u64(b, H_HEADER_SUM, XXH3_64bits(b, H_HEADER_SUM));
}

/* Row r's checksum as FORMAT.md defines it: XXH3-64 with seed r of the
 * row's 16-byte entry, its 8-byte document entries and its token data, here
 * concatenated and hashed in one call (the library streams the pieces). */
static uint64_t spec_row_sum(const char *b, uint64_t r)
{
    uint64_t rows_off = get_u64(b, H_ROWS_OFF), docs_off = get_u64(b, H_DOCS_OFF), data_off = get_u64(b, H_DATA_OFF);
    uint64_t nrows = get_u64(b, H_ROW_COUNT), ndocs = get_u64(b, H_DOC_COUNT);
    size_t row_bytes = (size_t)get_u32(b, H_MAX_LENGTH) * get_u32(b, H_TOKEN_BYTES);
    uint64_t first = get_u64(b, rows_off + 16 * r), end = r + 1 < nrows ? get_u64(b, rows_off + 16 * (r + 1)) : ndocs;
    if (end < first || end > ndocs) end = first; /* a damaged table: the sum just will not match */
    size_t n = 16 + 8 * (size_t)(end - first) + row_bytes;
    char *buf = malloc(n);
    if (!buf) return 0;
    memcpy(buf, b + rows_off + 16 * r, 16);
    memcpy(buf + 16, b + docs_off + 8 * first, 8 * (size_t)(end - first));
    memcpy(buf + 16 + 8 * (end - first), b + data_off + r * row_bytes, row_bytes);
    uint64_t h = XXH3_64bits_withSeed(buf, n, r);
    free(buf);
    return h;
}

/* Recomputes every checksum of a version 2 file in memory, as a writer
 * would have: row checksums, section checksums, header. */
static void reseal_all(char *b)
{
    uint64_t nrows = get_u64(b, H_ROW_COUNT), checks = get_u64(b, H_CHECKS_OFF);
    for (uint64_t r = 0; r < nrows; r++) put_u64(b, checks + 8 * r, spec_row_sum(b, r));
    static const int secs[5][3] = {{H_DATA_OFF, H_DATA_SIZE, H_DATA_SUM},   {H_ROWS_OFF, H_ROWS_SIZE, H_ROWS_SUM},
                                   {H_DOCS_OFF, H_DOCS_SIZE, H_DOCS_SUM},   {H_SUBS_OFF, H_SUBS_SIZE, H_SUBS_SUM},
                                   {H_CHECKS_OFF, H_CHECKS_SIZE, H_CHECKS_SUM}};
    for (int i = 0; i < 5; i++)
        put_u64(b, (size_t)secs[i][2], XXH3_64bits(b + get_u64(b, (size_t)secs[i][0]), get_u64(b, (size_t)secs[i][1])));
    reseal_header(b);
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

/* Everything the reader says equals what was written; the file's row
 * checksums are the ones FORMAT.md defines, and every row passes its check. */
static void check_read_back(const model *m, const char *path)
{
    pile_err err = {0};
    pile_shard *s;
    REQUIRE_OK(pile_shard_open(&s, path, &err), &err);
    const pile_shard_info *in = pile_shard_get_info(s);
    uint32_t width = m->params.vocab_size <= 65536 ? 2 : 4;
    uint32_t version = m->params.version ? m->params.version : PILE_SHARD_VERSION;
    ASSERT_EQ(PILE_SHARD_VERSION, 2);
    ASSERT_EQ(in->version, version);
    ASSERT_EQ(in->row_checksums, version >= 2);
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

    pile_buf file = {0};
    if (pile_fs_read_file(path, &file, &err) == 0) {
        const char *b = file.data;
        ASSERT_EQ(get_u64(b, H_HEADER_SUM), in->header_checksum);
        if (version >= 2) {
            /* the table sits 8-aligned after the subset table and ends the file */
            uint64_t subs_end = get_u64(b, H_SUBS_OFF) + get_u64(b, H_SUBS_SIZE), checks = get_u64(b, H_CHECKS_OFF);
            ASSERT_EQ(checks, (subs_end + 7) / 8 * 8);
            ASSERT_EQ(get_u64(b, H_CHECKS_SIZE), 8 * m->nrows);
            ASSERT_EQ(checks + 8 * m->nrows, file.len);
            for (size_t z = subs_end; z < checks; z++) ASSERT_EQ(b[z], 0);
            ASSERT_EQ(get_u64(b, H_CHECKS_SUM), XXH3_64bits(b + checks, 8 * m->nrows));
            int wrong = 0;
            for (uint64_t r = 0; r < m->nrows; r++)
                if (get_u64(b, checks + 8 * r) != spec_row_sum(b, r) && !wrong++)
                    PILE_FAIL_("row %" PRIu64 ": stored checksum %016" PRIx64 ", FORMAT.md gives %016" PRIx64, r,
                               get_u64(b, checks + 8 * r), spec_row_sum(b, r));
        } else {
            /* version 1 ends with the subset table; the later fields are reserved zeros */
            ASSERT_EQ(get_u64(b, H_SUBS_OFF) + get_u64(b, H_SUBS_SIZE), file.len);
            for (size_t z = H_CHECKS_OFF; z < H_HEADER_SUM; z++) ASSERT_EQ(b[z], 0);
        }
    }
    pile_buf_free(&file);
    /* every row passes, twice (the second from the record), in any order */
    int failed = 0;
    for (int pass = 0; pass < 2; pass++)
        for (size_t k = 0; k < m->nrows; k++) {
            size_t i = (k * 7919u + 13u) % m->nrows;
            if (pile_shard_check_row(s, i, &err) != 0 && !failed++) PILE_FAIL_("row %zu: %s", i, err.msg);
        }
    ASSERT_EQ(pile_shard_corrupt_rows(s), 0);
    pile_shard_close(s);
}

static void test_round_trip(uint32_t vocab, uint32_t version, const char *name)
{
    pile_buf pb = {0};
    model m;
    model_concat(&m, vocab, 128, 200);
    m.params.version = version;
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

/* add_row_packed (ids already at the shard's width, any alignment) writes
 * the very bytes add_row writes from 32-bit ids, also for rows larger than
 * the writer's 4 MiB buffer; an id over the vocabulary is refused. */
static void test_packed(uint32_t vocab, uint32_t max_length, int ndocs, const char *name)
{
    pile_buf pb = {0}, pb2 = {0}, a = {0}, b = {0}, row = {0};
    model m;
    model_concat(&m, vocab, max_length, ndocs);
    const char *ref = tpath(&pb, name);
    pile_buf_printf(&pb2, "%s.packed", ref);
    pile_err err = {0};
    CHECK_OK(model_write(&m, ref, NULL, &err), &err);
    size_t width = pile_shard_token_bytes(vocab);
    ASSERT_EQ(width, vocab <= 65536 ? 2u : 4u);
    pile_shard_writer *w;
    int rc = pile_shard_writer_open(&w, pb2.data, &m.params, &err);
    CHECK_OK(rc, &err);
    uint16_t ids[3];
    for (int i = 0; i < 3 && !rc; i++) rc = pile_shard_writer_subset(w, m.subsets[i], strlen(m.subsets[i]), &ids[i], &err);
    for (size_t i = 0; i < m.nrows && !rc; i++) {
        const model_row *r = &m.rows[i];
        row.len = 0;
        pile_buf_append(&row, "x", 1); /* odd address: any alignment */
        for (uint32_t t = 0; t < r->len; t++) {
            uint16_t v16 = (uint16_t)r->tokens[t];
            pile_buf_append(&row, width == 2 ? (const void *)&v16 : (const void *)&r->tokens[t], width);
        }
        rc = pile_shard_writer_add_row_packed(w, row.data + 1, r->len, r->docs, r->ndocs, r->lead, &err);
    }
    CHECK_OK(rc, &err);
    if (!rc) CHECK_OK(pile_shard_writer_finish(w, NULL, &err), &err);
    /* the background thread starts at the first full 4 MiB buffer, and its
     * CPU time (checksums, writes) is counted once finish has ended it */
    if ((uint64_t)m.nrows * max_length * width + 4096 > (4u << 20))
        ASSERT(pile_shard_writer_io_cpu(w) > 0);
    else
        ASSERT(pile_shard_writer_io_cpu(w) == 0);
    pile_shard_writer_close(w);
    if (pile_fs_read_file(ref, &a, &err) == 0 && pile_fs_read_file(pb2.data, &b, &err) == 0) {
        ASSERT_EQ(a.len, b.len);
        ASSERT(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
    } else {
        PILE_FAIL_("cannot read back: %s", err.msg);
    }
    /* both files come from the same writer: the checksums, taken as bytes
     * leave its buffer (rows split between two writes), checked against
     * FORMAT.md's definition on their own */
    check_read_back(&m, pb2.data);
    /* add_row_gather: each row in three pieces (the middle one may be
     * empty), at odd addresses, gives the same bytes again */
    pile_buf pb3 = {0}, c = {0};
    pile_buf_printf(&pb3, "%s.gather", ref);
    rc = pile_shard_writer_open(&w, pb3.data, &m.params, &err);
    CHECK_OK(rc, &err);
    for (int i = 0; i < 3 && !rc; i++) rc = pile_shard_writer_subset(w, m.subsets[i], strlen(m.subsets[i]), &ids[i], &err);
    for (size_t i = 0; i < m.nrows && !rc; i++) {
        const model_row *r = &m.rows[i];
        row.len = 0;
        pile_buf_append(&row, "x", 1);
        for (uint32_t t = 0; t < r->len; t++) {
            uint16_t v16 = (uint16_t)r->tokens[t];
            pile_buf_append(&row, width == 2 ? (const void *)&v16 : (const void *)&r->tokens[t], width);
        }
        uint32_t cut1 = r->len / 3, cut2 = i % 2 ? cut1 : 2 * r->len / 3;
        pile_shard_piece pieces[3] = {{row.data + 1, cut1},
                                      {row.data + 1 + (size_t)cut1 * width, cut2 - cut1},
                                      {row.data + 1 + (size_t)cut2 * width, r->len - cut2}};
        rc = pile_shard_writer_add_row_gather(w, pieces, 3, r->docs, r->ndocs, r->lead, &err);
    }
    CHECK_OK(rc, &err);
    if (!rc) {
        /* pieces longer than a row together: refused */
        pile_shard_piece over[2] = {{row.data + 1, max_length}, {row.data + 1, 1}};
        ASSERT_EQ(pile_shard_writer_add_row_gather(w, over, 2, NULL, 0, 0, &err), PILE_EINVAL);
        ASSERT(strstr(err.msg, "exceeds max_length") != NULL);
        CHECK_OK(pile_shard_writer_finish(w, NULL, &err), &err);
    }
    pile_shard_writer_close(w);
    if (pile_fs_read_file(pb3.data, &c, &err) == 0)
        ASSERT(a.len == c.len && memcmp(a.data, c.data, a.len) == 0);
    else
        PILE_FAIL_("cannot read back: %s", err.msg);
    pile_buf_free(&pb3);
    pile_buf_free(&c);
    /* an id at the vocabulary's size: refused, and the writer takes nothing more */
    rc = pile_shard_writer_open(&w, pb2.data, &m.params, &err);
    CHECK_OK(rc, &err);
    if (!rc) {
        CHECK_OK(pile_shard_writer_subset(w, "Github", 6, &ids[0], &err), &err);
        uint32_t bad32[4] = {1, 2, vocab, 3};
        uint16_t bad16[4] = {1, 2, (uint16_t)vocab, 3};
        if (vocab < 65536) {
            ASSERT_EQ(pile_shard_writer_add_row_packed(w, width == 2 ? (const void *)bad16 : (const void *)bad32, 4,
                                                       NULL, 0, 0, &err),
                      PILE_EINVAL);
            ASSERT(strstr(err.msg, "vocab_size") != NULL);
            ASSERT_EQ(pile_shard_writer_add_row_packed(w, bad16, 1, NULL, 0, 0, &err), PILE_EINVAL);
            ASSERT(strstr(err.msg, "failed state") != NULL);
        }
        pile_shard_writer_close(w);
    }
    model_free(&m);
    pile_buf_free(&pb);
    pile_buf_free(&pb2);
    pile_buf_free(&a);
    pile_buf_free(&b);
    pile_buf_free(&row);
}

/* Rows whose ids other threads fill: the writer's thread reserves each row
 * and commits it at once, FILLERS threads fill the pieces (three of ids,
 * one of padding) in a scrambled order; the ring holds only a few rows'
 * worth, so reserving must wait for fills (the fillers start only once a
 * reserve without waiting has found the ring full). */
#define FILLERS 4

typedef struct fill_piece {
    uint64_t slot;
    uint32_t at, n;
    const unsigned char *ids; /* NULL: padding */
} fill_piece;

typedef struct fill_queue {
    pile_shard_writer *w;
    uv_mutex_t mu;
    uv_cond_t cv;
    fill_piece *v;
    size_t n, cap;
    int hold, done, failed; /* hold: the fillers wait until the ring has been found full once */
} fill_queue;

static void filler_main(void *arg)
{
    fill_queue *q = arg;
    uv_mutex_lock(&q->mu);
    for (;;) {
        while ((q->hold || !q->n) && !q->done) uv_cond_wait(&q->cv, &q->mu);
        if (!q->n) break;
        size_t k = rnd((uint32_t)q->n); /* any piece waiting, not the oldest */
        fill_piece f = q->v[k];
        q->v[k] = q->v[--q->n];
        uv_mutex_unlock(&q->mu);
        pile_err err;
        int rc = pile_shard_writer_fill(q->w, f.slot, f.at, f.ids, f.n, &err);
        uv_mutex_lock(&q->mu);
        if (rc) q->failed = 1;
    }
    uv_mutex_unlock(&q->mu);
}

static void fill_push(fill_queue *q, fill_piece f)
{
    uv_mutex_lock(&q->mu);
    if (q->n == q->cap) {
        q->cap = q->cap ? 2 * q->cap : 64;
        q->v = realloc(q->v, q->cap * sizeof *q->v);
    }
    q->v[q->n++] = f;
    uv_cond_broadcast(&q->cv);
    uv_mutex_unlock(&q->mu);
}

static void test_filled_rows(uint32_t vocab, uint32_t max_length, int ndocs, const char *name)
{
    pile_buf pb = {0}, pb2 = {0}, a = {0}, b = {0}, ids = {0};
    model m;
    model_concat(&m, vocab, max_length, ndocs);
    const char *ref = tpath(&pb, name);
    pile_buf_printf(&pb2, "%s.filled", ref);
    pile_err err = {0};
    CHECK_OK(model_write(&m, ref, NULL, &err), &err);
    size_t width = pile_shard_token_bytes(vocab);
    /* every row's ids at the shard's width, one after the other */
    size_t *start = calloc(m.nrows + 1, sizeof *start);
    for (size_t i = 0; i < m.nrows; i++) {
        start[i] = ids.len;
        for (uint32_t t = 0; t < m.rows[i].len; t++) {
            uint16_t v16 = (uint16_t)m.rows[i].tokens[t];
            pile_buf_append(&ids, width == 2 ? (const void *)&v16 : (const void *)&m.rows[i].tokens[t], width);
        }
    }
    pile_shard_params prm = m.params;
    prm.buffers = 3;
    pile_shard_writer *w;
    int rc = pile_shard_writer_open(&w, pb2.data, &prm, &err);
    REQUIRE_OK(rc, &err);
    uint16_t sid[3];
    for (int i = 0; i < 3 && !rc; i++) rc = pile_shard_writer_subset(w, m.subsets[i], strlen(m.subsets[i]), &sid[i], &err);
    fill_queue q = {.w = w, .hold = 1};
    ASSERT_EQ(uv_mutex_init(&q.mu), 0);
    ASSERT_EQ(uv_cond_init(&q.cv), 0);
    uv_thread_t th[FILLERS];
    for (int t = 0; t < FILLERS; t++) ASSERT_EQ(uv_thread_create(&th[t], filler_main, &q), 0);
    size_t full = 0;
    for (size_t i = 0; i < m.nrows && !rc; i++) {
        const model_row *r = &m.rows[i];
        uint64_t slot;
        rc = pile_shard_writer_reserve_row(w, 0, &slot, &err);
        if (rc == 1) {
            full++;
            uv_mutex_lock(&q.mu);
            q.hold = 0;
            uv_cond_broadcast(&q.cv);
            uv_mutex_unlock(&q.mu);
            rc = pile_shard_writer_reserve_row(w, 1, &slot, &err);
        }
        if (rc) break;
        const unsigned char *row = (const unsigned char *)ids.data + start[i];
        uint32_t cut1 = r->len / 3, cut2 = 2 * r->len / 3;
        fill_piece f[4] = {{slot, 0, cut1, row},
                           {slot, cut1, cut2 - cut1, row + (size_t)cut1 * width},
                           {slot, cut2, r->len - cut2, row + (size_t)cut2 * width},
                           {slot, r->len, max_length - r->len, NULL}};
        /* most rows committed before their ids are all in, every 5th after (filled here): a buffer
         * leaves only once it has both */
        for (int k = 0; k < 4 && !rc; k++)
            if (f[k].n && i % 5 == 0) rc = pile_shard_writer_fill(w, f[k].slot, f[k].at, f[k].ids, f[k].n, &err);
            else if (f[k].n) fill_push(&q, f[k]);
        if (!rc) rc = pile_shard_writer_commit_row(w, r->len, r->docs, r->ndocs, r->lead, &err);
    }
    CHECK_OK(rc, &err);
    uv_mutex_lock(&q.mu);
    q.hold = 0;
    q.done = 1;
    uv_cond_broadcast(&q.cv);
    uv_mutex_unlock(&q.mu);
    for (int t = 0; t < FILLERS; t++) uv_thread_join(&th[t]);
    ASSERT_EQ(q.failed, 0);
    /* three buffers hold fewer than all the rows: reserving had to wait for fills */
    ASSERT((uint64_t)m.nrows * max_length * width > 3u * (4u << 20) ? full > 0 : 1);
    if (!rc) CHECK_OK(pile_shard_writer_finish(w, NULL, &err), &err);
    pile_shard_writer_close(w);
    if (pile_fs_read_file(ref, &a, &err) == 0 && pile_fs_read_file(pb2.data, &b, &err) == 0) {
        ASSERT_EQ(a.len, b.len);
        ASSERT(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
    } else {
        PILE_FAIL_("cannot read back: %s", err.msg);
    }
    uv_cond_destroy(&q.cv);
    uv_mutex_destroy(&q.mu);
    free(q.v);
    free(start);
    model_free(&m);
    pile_buf_free(&pb);
    pile_buf_free(&pb2);
    pile_buf_free(&a);
    pile_buf_free(&b);
    pile_buf_free(&ids);
}

/* The reserve / fill / commit protocol's refusals. */
static void test_filled_refusals(void)
{
    pile_buf pb = {0};
    pile_err err = {0};
    pile_shard_params p;
    memset(&p, 0, sizeof p);
    p.max_length = 8;
    p.vocab_size = 1000;
    p.eot_id = 999;
    p.pad_id = 999;
    const char *path = tpath(&pb, "refusals.shard");
    pile_shard_writer *w;
    int rc = pile_shard_writer_open(&w, path, &p, &err);
    REQUIRE_OK(rc, &err);
    uint16_t sub, ids[8] = {1, 2, 3, 4, 5, 6, 7, 999}, bad[2] = {5, 1000};
    pile_shard_doc doc = {0, 0, 0};
    uint64_t slot, slot2;
    CHECK_OK(pile_shard_writer_subset(w, "Pile-CC", 7, &sub, &err), &err);
    ASSERT_EQ(pile_shard_writer_commit_row(w, 8, &doc, 1, sub, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "not reserved") != NULL);
    CHECK_OK(pile_shard_writer_reserve_row(w, 1, &slot, &err), &err);
    ASSERT_EQ(pile_shard_writer_reserve_row(w, 1, &slot2, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "not committed") != NULL);
    ASSERT_EQ(pile_shard_writer_fill(w, slot, 6, ids, 3, &err), PILE_EINVAL);
    ASSERT_EQ(pile_shard_writer_fill(w, slot + 2, 0, ids, 1, &err), PILE_EINVAL);
    CHECK_OK(pile_shard_writer_fill(w, slot, 0, ids, 5, &err), &err);
    CHECK_OK(pile_shard_writer_commit_row(w, 8, &doc, 1, sub, &err), &err);
    /* three ids missing: finish refuses */
    ASSERT_EQ(pile_shard_writer_finish(w, NULL, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "not filled") != NULL);
    CHECK_OK(pile_shard_writer_fill(w, slot, 5, ids + 5, 3, &err), &err);
    /* an id over the vocabulary fails the writer */
    CHECK_OK(pile_shard_writer_reserve_row(w, 1, &slot2, &err), &err);
    ASSERT_EQ(pile_shard_writer_fill(w, slot2, 0, bad, 2, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "vocab_size") != NULL);
    ASSERT_EQ(pile_shard_writer_commit_row(w, 2, &doc, 1, sub, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "vocab_size") != NULL);
    ASSERT(pile_shard_writer_finish(w, NULL, &err) < 0);
    pile_shard_writer_close(w);
    ASSERT(!file_exists(path));
    pile_buf_free(&pb);
}

/* ------------------------------------------------------- damaged files */

static int write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t n = len ? fwrite(data, 1, len, f) : 0;
    return fclose(f) == 0 && n == len ? 0 : -1;
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
    uint32_t v3 = 3;
    memcpy(bad.data + H_VERSION, &v3, 4);
    expect_open_fails(dpath, bad.data, n, PILE_EVERSION, "shard version 3 is newer than this build reads (2)",
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
    /* the row checksum table follows it, 8-aligned */
    put_u64(bad.data, H_CHECKS_OFF, (subs_off + (UINT64_C(1) << 30) + 6 + 7) / 8 * 8);
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

    TEST("verify names the damaged row behind a section checksum (version 2)");
    uint64_t checks_off = get_u64(b, H_CHECKS_OFF);
    memcpy(bad.data, b, n);
    bad.data[data_off + (3 * 64 + t1) * 2] ^= 0x01;
    expect_verify_fails(dpath, bad.data, n, "data section checksum mismatch", "data byte, row 3");
    expect_verify_fails(dpath, bad.data, n, "; row 3 fails its checksum (computed ", "data byte, row 3 named");
    memcpy(bad.data, b, n);
    bad.data[docs_off + 8 * 3 + 4] ^= 0x02; /* document entry 3's subset */
    uint64_t doc3_row = 0;
    while (doc3_row + 1 < m.nrows && get_u64(b, rows_off + 16 * (doc3_row + 1)) <= 3) doc3_row++;
    char want[96];
    snprintf(want, sizeof want, "; row %" PRIu64 " fails its checksum", doc3_row);
    expect_verify_fails(dpath, bad.data, n, want, "document entry, its row named");
    memcpy(bad.data, b, n);
    bad.data[checks_off + 8 * 5 + 2] ^= 0x10;
    expect_verify_fails(dpath, bad.data, n, "row checksum table checksum mismatch", "row checksum table byte");
    expect_verify_fails(dpath, bad.data, n, "; row 5 fails its checksum", "row checksum table byte, row named");
    /* the recorded checksum changed and the table's own checksum recomputed:
     * only the row's check can tell, and verify runs it on every row */
    put_u64(bad.data, H_CHECKS_SUM, XXH3_64bits(bad.data + checks_off, 8 * m.nrows));
    reseal_header(bad.data);
    expect_verify_fails(dpath, bad.data, n, "row 5 fails its checksum", "row checksum, table resealed");
    /* a checksum recomputed for a changed row passes: the changed row is
     * then only as wrong as its invariants say (here: nothing) */
    memcpy(bad.data, b, n);
    bad.data[data_off + (3 * 64 + t1) * 2] ^= 0x01;
    reseal_all(bad.data);
    if (write_bytes(dpath, bad.data, n) == 0) {
        pile_shard *s = NULL;
        int orc = pile_shard_open(&s, dpath, &err);
        CHECK_OK(orc, &err);
        if (orc == 0) CHECK_OK(pile_shard_verify(s, &err), &err);
        pile_shard_close(s);
    }

    TEST("open checks the row checksum table's place and size (version 2)");
    memcpy(bad.data, b, n);
    put_u64(bad.data, H_CHECKS_OFF, checks_off + 8);
    reseal_header(bad.data);
    expect_open_fails(dpath, bad.data, n, PILE_EFORMAT, "bad row checksum table", "table moved");
    memcpy(bad.data, b, n);
    put_u64(bad.data, H_CHECKS_SIZE, 8 * m.nrows - 8);
    reseal_header(bad.data);
    expect_open_fails(dpath, bad.data, n, PILE_EFORMAT, "bad row checksum table", "table short");
    expect_open_fails(dpath, b, (size_t)checks_off + 12, PILE_ETRUNC, "is truncated", "cut in the table");
    /* the same bytes as a version 1 file: its reserved fields are ignored, and the table is trailing bytes */
    memcpy(bad.data, b, n);
    uint32_t v1 = 1;
    memcpy(bad.data + H_VERSION, &v1, 4);
    reseal_header(bad.data);
    expect_open_fails(dpath, bad.data, n, PILE_EFORMAT, "after its last section", "table in a version 1 file");

    free(dpath);
    model_free(&m);
    pile_buf_free(&pb);
    pile_buf_free(&file);
    pile_buf_free(&bad);
}

static void test_writer_versions(void)
{
    pile_buf pb = {0};
    pile_err err = {0};
    pile_shard_params p;
    memset(&p, 0, sizeof p);
    p.max_length = 8;
    p.vocab_size = 300;
    p.eot_id = 256;
    const uint32_t bad[2] = {3, 99};
    for (int i = 0; i < 2; i++) {
        pile_shard_writer *w = NULL;
        p.version = bad[i];
        ASSERT_EQ(pile_shard_writer_open(&w, tpath(&pb, "ver.shard"), &p, &err), PILE_EINVAL);
        ASSERT(strstr(err.msg, "writes versions 1 to 2") != NULL);
        ASSERT(w == NULL);
    }
    pile_buf_free(&pb);
}

/* ---------------------------------------------------------- row checks */

/* A shard on disk with one damaged place; check_row must fail exactly the
 * rows it names, with the shard, the row and both checksums. */
static void expect_row_checks(const char *path, const char *data, size_t len, uint64_t nrows, const uint64_t *bad_rows,
                              size_t nbad, const char *what)
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
    uint64_t checks = get_u64(data, H_CHECKS_OFF);
    for (int pass = 0; pass < 2; pass++) {
        for (uint64_t r = 0; r < nrows; r++) {
            int want_bad = 0;
            for (size_t k = 0; k < nbad; k++) want_bad |= bad_rows[k] == r;
            rc = pile_shard_check_row(s, r, &err);
            if (rc != (want_bad ? PILE_ECORRUPT : 0)) {
                PILE_FAIL_("%s: row %" PRIu64 ": check_row returned %d (%s)", what, r, rc, rc ? err.msg : "");
                continue;
            }
            if (!want_bad) continue;
            char row[64], sums[2][24];
            snprintf(row, sizeof row, "row %" PRIu64 " fails its checksum", r);
            snprintf(sums[0], sizeof sums[0], "%016" PRIx64, spec_row_sum(data, r));
            snprintf(sums[1], sizeof sums[1], "%016" PRIx64, get_u64(data, checks + 8 * r));
            if (!strstr(err.msg, path) || !strstr(err.msg, row) || !strstr(err.msg, sums[0]) ||
                !strstr(err.msg, sums[1]))
                PILE_FAIL_("%s: the message lacks the shard, '%s', computed %s or recorded %s: %s", what, row,
                           sums[0], sums[1], err.msg);
        }
        /* each damaged row counted once, however often it is read */
        ASSERT_EQ(pile_shard_corrupt_rows(s), nbad);
    }
    pile_shard_close(s);
}

static void test_row_checks(void)
{
    pile_buf pb = {0}, file = {0}, bad = {0};
    pile_err err = {0};
    model m;
    model_concat(&m, 50257, 64, 60);
    const char *good = tpath(&pb, "rows.shard");
    int rc = model_write(&m, good, NULL, &err);
    CHECK_OK(rc, &err);
    if (rc || pile_fs_read_file(good, &file, &err)) {
        model_free(&m);
        pile_buf_free(&pb);
        return;
    }
    char *dpath = strdup(tpath(&pb, "rows-damaged.shard"));
    const char *b = file.data;
    size_t n = file.len;
    uint64_t nrows = m.nrows, data_off = get_u64(b, H_DATA_OFF), rows_off = get_u64(b, H_ROWS_OFF),
             docs_off = get_u64(b, H_DOCS_OFF), checks = get_u64(b, H_CHECKS_OFF);
    pile_buf_append(&bad, b, n);
    ASSERT(nrows > 12);

    TEST("check_row: a flipped bit of a row's tokens fails that row only, naming it and both checksums");
    uint64_t r7 = 7;
    bad.data[data_off + r7 * 128 + 11] ^= 0x01; /* a token byte */
    expect_row_checks(dpath, bad.data, n, nrows, &r7, 1, "token byte");
    memcpy(bad.data, b, n);
    bad.data[data_off + 8 * 128 + 127] ^= 0x80; /* the row's last position (padding or a token) */
    uint64_t r8 = 8;
    expect_row_checks(dpath, bad.data, n, nrows, &r8, 1, "last position");

    TEST("check_row: a damaged row entry or document start fails its row");
    memcpy(bad.data, b, n);
    bad.data[rows_off + 16 * 4 + 12] ^= 0x01; /* row 4's lead subset */
    uint64_t r4 = 4;
    expect_row_checks(dpath, bad.data, n, nrows, &r4, 1, "lead subset");
    /* a document start of a row with at least one */
    uint64_t rd = 0;
    while (rd < nrows && m.rows[rd].ndocs == 0) rd++;
    ASSERT(rd < nrows);
    memcpy(bad.data, b, n);
    bad.data[docs_off + 8 * get_u64(b, rows_off + 16 * rd)] ^= 0x01; /* its first start's offset */
    expect_row_checks(dpath, bad.data, n, nrows, &rd, 1, "document start");
    /* first_doc of a later row moves a document start from one row to the
     * other: both rows' document ranges change */
    uint64_t rf = rd + 1;
    while (rf < nrows && (m.rows[rf - 1].ndocs == 0 || rf < 2)) rf++;
    ASSERT(rf < nrows);
    memcpy(bad.data, b, n);
    uint64_t fd = get_u64(b, rows_off + 16 * rf);
    put_u64(bad.data, rows_off + 16 * rf, fd - 1);
    uint64_t both[2] = {rf - 1, rf};
    expect_row_checks(dpath, bad.data, n, nrows, both, 2, "first_doc moved");

    TEST("check_row: rows that trade places fail, and so does a damaged recorded checksum");
    /* two rows inside one long document have equal row entries (the same
     * first_doc, length, lead subset and flags) and no document starts:
     * they differ in their tokens and their place only */
    uint64_t rs = 1;
    while (rs + 1 < nrows && !(m.rows[rs].ndocs == 0 && m.rows[rs + 1].ndocs == 0 && m.rows[rs + 1].len == 64)) rs++;
    ASSERT(rs + 1 < nrows);
    ASSERT_MEM_EQ(b + rows_off + 16 * rs, b + rows_off + 16 * (rs + 1), 16);
    memcpy(bad.data, b, n);
    memcpy(bad.data + data_off + rs * 128, b + data_off + (rs + 1) * 128, 128);
    memcpy(bad.data + data_off + (rs + 1) * 128, b + data_off + rs * 128, 128);
    memcpy(bad.data + checks + 8 * rs, b + checks + 8 * (rs + 1), 8);
    memcpy(bad.data + checks + 8 * (rs + 1), b + checks + 8 * rs, 8);
    uint64_t swapped[2] = {rs, rs + 1};
    expect_row_checks(dpath, bad.data, n, nrows, swapped, 2, "rows swapped with their checksums");
    memcpy(bad.data, b, n);
    bad.data[checks + 8 * 11 + 7] ^= 0x40;
    uint64_t r11 = 11;
    expect_row_checks(dpath, bad.data, n, nrows, &r11, 1, "recorded checksum");

    free(dpath);
    model_free(&m);
    pile_buf_free(&pb);
    pile_buf_free(&file);
    pile_buf_free(&bad);
}

/* Loader threads check rows of one shard at once: every thread sees the same
 * answers, and the damaged rows are counted once each. */
#define CHECK_THREADS 4
typedef struct check_job {
    const pile_shard *s;
    uint64_t nrows;
    uint64_t start;
    uint64_t failed, failed_row;
    int other_error;
} check_job;

static void check_job_run(void *arg)
{
    check_job *j = arg;
    for (int pass = 0; pass < 3; pass++)
        for (uint64_t k = 0; k < j->nrows; k++) {
            uint64_t r = (j->start + k * 5) % j->nrows;
            pile_err err;
            int rc = pile_shard_check_row(j->s, r, &err);
            if (rc == PILE_ECORRUPT) {
                j->failed++;
                j->failed_row = r;
            } else if (rc) {
                j->other_error = 1;
            }
        }
}

static void test_row_checks_threads(void)
{
    pile_buf pb = {0}, file = {0};
    pile_err err = {0};
    model m;
    model_concat(&m, 50257, 64, 400);
    const char *path = tpath(&pb, "threads.shard");
    int rc = model_write(&m, path, NULL, &err);
    CHECK_OK(rc, &err);
    if (rc == 0 && pile_fs_read_file(path, &file, &err) == 0) {
        uint64_t nrows = m.nrows, bad_row = nrows / 2;
        ASSERT(nrows % 5 != 0); /* k * 5 visits every row */
        file.data[get_u64(file.data, H_DATA_OFF) + bad_row * 128 + 1] ^= 0x04;
        pile_shard *s = NULL;
        if (write_bytes(path, file.data, file.len) == 0 && pile_shard_open(&s, path, &err) == 0) {
            check_job jobs[CHECK_THREADS];
            uv_thread_t th[CHECK_THREADS];
            for (int t = 0; t < CHECK_THREADS; t++) {
                jobs[t] = (check_job){s, nrows, (uint64_t)t * nrows / CHECK_THREADS, 0, 0, 0};
                ASSERT_EQ(uv_thread_create(&th[t], check_job_run, &jobs[t]), 0);
            }
            for (int t = 0; t < CHECK_THREADS; t++) uv_thread_join(&th[t]);
            for (int t = 0; t < CHECK_THREADS; t++) {
                ASSERT_EQ(jobs[t].failed, 3);
                ASSERT_EQ(jobs[t].failed_row, bad_row);
                ASSERT_EQ(jobs[t].other_error, 0);
            }
            ASSERT_EQ(pile_shard_corrupt_rows(s), 1);
        } else {
            PILE_FAIL_("cannot reopen '%s': %s", path, err.msg);
        }
        pile_shard_close(s);
    }
    model_free(&m);
    pile_buf_free(&pb);
    pile_buf_free(&file);
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
    /* 4096 header block + 4096 data + 16 row + 8 doc + 4 count + 2 + 4058 name bytes + 8 row checksum = 12288 */
    char name[4058];
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
/* The subset table at its limit: 65,536 distinct names through the
 * writer's hash (each one found again with its id), the 65,537th refused,
 * bad names refused, and verify's check of distinct names over all of them. */
static void test_many_subsets(void)
{
    pile_buf pb = {0};
    model m;
    model_concat(&m, 300, 16, 4);
    const char *path = tpath(&pb, "subsets.shard");
    pile_err err = {0};
    pile_shard_writer *w;
    int rc = pile_shard_writer_open(&w, path, &m.params, &err);
    CHECK_OK(rc, &err);
    if (rc) return;
    char name[32];
    int bad = 0;
    for (uint32_t i = 0; i < 65536 && !bad; i++) {
        uint16_t id;
        int n = snprintf(name, sizeof name, "subset %" PRIu32, i);
        bad = pile_shard_writer_subset(w, name, (size_t)n, &id, &err) != 0 || id != (uint16_t)i;
    }
    ASSERT(!bad);
    ASSERT_EQ(pile_shard_writer_subset_count(w), 65536);
    for (uint32_t i = 0; i < 65536 && !bad; i += 4099) {
        uint16_t id;
        int n = snprintf(name, sizeof name, "subset %" PRIu32, i);
        bad = pile_shard_writer_subset(w, name, (size_t)n, &id, &err) != 0 || id != (uint16_t)i;
    }
    ASSERT(!bad);
    uint16_t id;
    ASSERT_EQ(pile_shard_writer_subset(w, "one more", 8, &id, &err), PILE_ELIMIT);
    ASSERT_EQ(pile_shard_writer_subset(w, "", 0, &id, &err), PILE_EINVAL);
    ASSERT_EQ(pile_shard_writer_subset(w, "a\0b", 3, &id, &err), PILE_EINVAL);
    uint32_t row[16] = {1, 2, 3};
    pile_shard_doc doc = {0, 65535, 0};
    CHECK_OK(pile_shard_writer_add_row(w, row, 3, &doc, 1, 65535, &err), &err);
    CHECK_OK(pile_shard_writer_finish(w, NULL, &err), &err);
    pile_shard_writer_close(w);
    pile_shard *s = NULL;
    rc = pile_shard_open(&s, path, &err);
    CHECK_OK(rc, &err);
    if (rc == 0) {
        CHECK_OK(pile_shard_verify(s, &err), &err);
        ASSERT_STR_EQ(pile_shard_subset_name(s, 65535), "subset 65535");
    }
    pile_shard_close(s);
    model_free(&m);
    pile_buf_free(&pb);
}

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

    /* the same shards in version 1 (no row checksums) export the same bytes */
    {
        model a1 = a, b1 = b;
        a1.params.version = b1.params.version = 1;
        char *qa = strdup(tpath(&pb, "mega1-a.shard")), *qb = strdup(tpath(&pb, "mega1-b.shard"));
        char *prefix1 = strdup(tpath(&pb, "mega1"));
        CHECK_OK(model_write(&a1, qa, NULL, &err), &err);
        CHECK_OK(model_write(&b1, qb, NULL, &err), &err);
        const char *paths1[2] = {qa, qb};
        CHECK_OK(pile_megatron_export(paths1, 2, prefix1, &err), &err);
        pile_buf got = {0};
        p2.len = 0;
        pile_buf_printf(&p2, "%s.idx", prefix1);
        if (pile_fs_read_file(p2.data, &got, &err) == 0) ASSERT(got.len == idx.len && !memcmp(got.data, idx.data, got.len));
        got.len = 0;
        p2.len = 0;
        pile_buf_printf(&p2, "%s.bin", prefix1);
        if (pile_fs_read_file(p2.data, &got, &err) == 0) ASSERT(got.len == bin.len && !memcmp(got.data, bin.data, got.len));
        pile_buf_free(&got);
        free(qa);
        free(qb);
        free(prefix1);
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

    /* a changed id (open does not read token data): the row's checksum
     * fails, refused with the shard's name and the row, also when the caller
     * passes no error record; with every checksum recomputed, the id past
     * vocab_size is what refuses it */
    pile_buf raw = {0};
    if (pile_fs_read_file(pa, &raw, &err) == 0) {
        uint32_t big = 100000;
        memcpy(raw.data + 4096 + (2 * 64 + 5) * 4, &big, 4);
        char *pbad = strdup(tpath(&pb, "mega-bad.shard"));
        const char *badp[1] = {pbad};
        ASSERT_EQ(write_bytes(pbad, raw.data, raw.len), 0);
        ASSERT_EQ(pile_megatron_export(badp, 1, prefix2, &err), PILE_ECORRUPT);
        ASSERT(strstr(err.msg, pbad) != NULL);
        ASSERT(strstr(err.msg, "cannot export") != NULL && strstr(err.msg, "row 2 fails its checksum") != NULL);
        reseal_all(raw.data);
        ASSERT_EQ(write_bytes(pbad, raw.data, raw.len), 0);
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

    TEST("round trip, 2-byte tokens (vocab 50257), row checksums as FORMAT.md defines them");
    test_round_trip(50257, 0, "w2.shard");
    TEST("round trip, 4-byte tokens (vocab 100000)");
    test_round_trip(100000, 0, "w4.shard");
    TEST("round trip, version 1 (no row checksums): still read, every row passes its (empty) check");
    test_round_trip(50257, 1, "v1.shard");
    TEST("writer: refuses a format version it does not write");
    test_writer_versions();
    TEST("round trip, best-fit rows with continued segments");
    test_best_fit();
    TEST("writer: rows of ids already narrowed (add_row_packed) give add_row's bytes, 2- and 4-byte ids, "
         "rows over the 4 MiB buffer and rows across its writes, whole or gathered from pieces; an id over the "
         "vocabulary refused; the background thread's CPU time counted");
    test_packed(50257, 128, 200, "packed2.shard");
    test_packed(100000, 96, 150, "packed4.shard");
    test_packed(50257, 2200000, 3, "packed-big.shard");
    test_packed(50257, 3001, 2000, "packed-many.shard");
    TEST("writer: rows reserved and committed by one thread, their ids filled by 4 others in a scrambled order "
         "through a 3-buffer ring, give add_row's bytes (2- and 4-byte ids, rows over a buffer)");
    test_filled_rows(50257, 2048, 6000, "filled2.shard");
    test_filled_rows(100000, 333, 3000, "filled4.shard");
    test_filled_rows(50257, 3000000, 3, "filled-big.shard");
    TEST("writer: reserve / fill / commit refusals: commit before reserve, two reserved, a fill past the row or "
         "off a row, finish with ids missing, an id over the vocabulary");
    test_filled_refusals();
    TEST("writer: .tmp while writing, refused rows, abandoned writer leaves nothing");
    test_tmp_and_abandon();
    test_damage();
    TEST("writer: a file that ends on a 4 KiB block boundary");
    test_block_sized_file();
    TEST("round trip, a shard with no rows");
    test_empty_shard();
    test_row_checks();
    TEST("check_row from 4 threads at once: the same answers, the damaged row counted once");
    test_row_checks_threads();
    TEST("writer: 65,536 distinct subset names by hash, the next refused; verify checks them distinct");
    test_many_subsets();
    TEST("megatron export: 4-byte ids as int32, documents across two shards, version 1 alike, refusals, corrupt rows and ids");
    test_megatron();

    int rc = TEST_DONE();
    if (rc == 0) {
        char cmd[4200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0) printf("# could not remove %s\n", tmpdir);
    }
    return rc;
}
