/* Tests of pile-prep's pipeline (preprocess/pile_prep.h) on the real corpus:
 * packing invariants checked against an independent re-reading of the input
 * (JSON tree parser + byte tokens, or tiktoken's reference GPT-2 ids), bad
 * input counted by reason against corpus/bad-cases.tsv and the reference
 * file, resume at every shard boundary, and Best-Fit-Decreasing against a
 * naive implementation. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zlib.h>
#include <zstd.h>

#include "pile_fs.h"
#include "pile_json.h"
#include "pile_lines.h"
#include "pile_prep.h"
#include "pile_shards.h"
#include "pile_tokenizer.h"
#include "pile_test.h"
#include "pile_utf8.h"
#include "prep_internal.h"

static char g_corpus[4096];

/* ---------------------------------------------------------------- helpers */

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void rm_rf(const char *path)
{
    nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static char *make_tmpdir(void)
{
    char tmpl[4096];
    char *d = pile_test_tmpdir(tmpl, sizeof tmpl, "prep");
    return d ? strdup(d) : NULL;
}

static char *path2(const char *a, const char *b)
{
    pile_buf p = {0};
    pile_fs_join(&p, a, b);
    return p.data;
}

static int copy_file(const char *from, const char *to)
{
    pile_buf b = {0};
    pile_err err_s, *err = &err_s;
    if (pile_fs_read_file(from, &b, err)) return -1;
    FILE *f = fopen(to, "wb");
    if (!f) {
        pile_buf_free(&b);
        return -1;
    }
    size_t w = fwrite(b.data, 1, b.len, f);
    int rc = (w == b.len && fclose(f) == 0) ? 0 : -1;
    pile_buf_free(&b);
    return rc;
}

/* Byte-equal files? */
static int same_file(const char *a, const char *b)
{
    pile_buf x = {0}, y = {0};
    pile_err err_s, *err = &err_s;
    int ok = pile_fs_read_file(a, &x, err) == 0 && pile_fs_read_file(b, &y, err) == 0 && x.len == y.len &&
             (x.len == 0 || memcmp(x.data, y.data, x.len) == 0);
    pile_buf_free(&x);
    pile_buf_free(&y);
    return ok;
}

/* Every file of folder a equals its namesake in b, and b has no others. */
static int same_folder(const char *a, const char *b, char *why, size_t whylen)
{
    for (int pass = 0; pass < 2; pass++) {
        const char *x = pass ? b : a, *y = pass ? a : b;
        char cmd[8192];
        snprintf(cmd, sizeof cmd, "ls -1 '%s'", x);
        FILE *ls = popen(cmd, "r");
        if (!ls) return 0;
        char name[1024];
        while (fgets(name, sizeof name, ls)) {
            name[strcspn(name, "\n")] = '\0';
            char *px = path2(x, name), *py = path2(y, name);
            int ok = same_file(px, py);
            free(px);
            free(py);
            if (!ok) {
                snprintf(why, whylen, "'%s' differs between '%s' and '%s'", name, a, b);
                pclose(ls);
                return 0;
            }
        }
        pclose(ls);
    }
    return 1;
}

static int contains(const char *hay, const char *needle)
{
    return hay && strstr(hay, needle) != NULL;
}

/* --------------------------------------------------- independent reading */

typedef struct exp_doc {
    uint32_t *tok; /* tokens + end-of-text */
    size_t n;
    char *subset;
} exp_doc;

typedef struct exp_docs {
    exp_doc *v;
    size_t n, cap;
} exp_docs;

static void exp_free(exp_docs *e)
{
    for (size_t i = 0; i < e->n; i++) {
        free(e->v[i].tok);
        free(e->v[i].subset);
    }
    free(e->v);
    memset(e, 0, sizeof *e);
}

static exp_doc *exp_push(exp_docs *e)
{
    if (e->n == e->cap) {
        e->cap = e->cap ? e->cap * 2 : 256;
        e->v = realloc(e->v, e->cap * sizeof *e->v);
    }
    exp_doc *d = &e->v[e->n++];
    memset(d, 0, sizeof *d);
    return d;
}

static char *subset_of(const pile_json *root)
{
    const pile_json *meta = pile_json_get(root, "meta");
    const pile_json *name = meta && pile_json_type_of(meta) == PILE_JSON_OBJECT ? pile_json_get(meta, "pile_set_name") : NULL;
    if (name && pile_json_type_of(name) == PILE_JSON_STRING) return strdup(pile_json_str(name, NULL));
    return strdup("unknown");
}

/* Documents of a clean input file, by the JSON tree parser (not the
 * JSON-lines fast path pile-prep uses). ref: a file of reference ids, one
 * JSON array per line (NULL: byte tokens, the text's UTF-8 bytes). */
static int read_expected(const char *path, const char *ref, uint32_t eot, exp_docs *out)
{
    pile_lines *lr;
    pile_err err_s, *err = &err_s;
    if (pile_lines_open(&lr, path, NULL, err)) return -1;
    FILE *rf = ref ? fopen(ref, "r") : NULL;
    if (ref && !rf) {
        pile_lines_close(lr);
        return -1;
    }
    char *rline = NULL;
    size_t rcap = 0;
    pile_line ln;
    int rc = 0;
    while (pile_lines_next(lr, &ln, err) == 1) {
        pile_json *root = NULL;
        if (rf && getline(&rline, &rcap, rf) < 0) {
            rc = -1;
            break;
        }
        if (pile_json_parse(ln.data, ln.len, path, &root, err)) {
            rc = -1;
            break;
        }
        const pile_json *text = pile_json_get(root, "text");
        if (!text || pile_json_type_of(text) != PILE_JSON_STRING) {
            pile_json_free(root);
            rc = -1;
            break;
        }
        exp_doc *d = exp_push(out);
        d->subset = subset_of(root);
        if (rf) {
            pile_json *ids = NULL;
            if (pile_json_parse(rline, strlen(rline), ref, &ids, err) || pile_json_type_of(ids) != PILE_JSON_ARRAY) {
                pile_json_free(ids);
                pile_json_free(root);
                rc = -1;
                break;
            }
            d->n = pile_json_size(ids) + 1;
            d->tok = malloc(d->n * sizeof *d->tok);
            for (size_t k = 0; k + 1 < d->n; k++) {
                int64_t v = 0;
                pile_json_int(pile_json_at(ids, k), &v);
                d->tok[k] = (uint32_t)v;
            }
            pile_json_free(ids);
        } else {
            size_t len;
            const char *s = pile_json_str(text, &len);
            d->n = len + 1;
            d->tok = malloc(d->n * sizeof *d->tok);
            for (size_t k = 0; k < len; k++) d->tok[k] = (unsigned char)s[k];
        }
        d->tok[d->n - 1] = eot;
        pile_json_free(root);
    }
    free(rline);
    if (rf) fclose(rf);
    pile_lines_close(lr);
    return rc;
}

/* ------------------------------------------------------------ shard reading */

typedef struct shard_list {
    pile_shard **v;
    size_t n;
} shard_list;

static int open_split(const char *out, pile_split sp, shard_list *sl)
{
    memset(sl, 0, sizeof *sl);
    for (unsigned k = 0;; k++) {
        char name[64];
        snprintf(name, sizeof name, "%s-%05u.shard", pile_prep_split_name(sp), k);
        char *p = path2(out, name);
        struct stat st;
        if (stat(p, &st) != 0) {
            free(p);
            break;
        }
        pile_shard *s;
        pile_err err_s, *err = &err_s;
        int rc = pile_shard_open(&s, p, err);
        if (!rc) rc = pile_shard_verify(s, err);
        if (rc) {
            printf("# %s: %s\n", p, err->msg);
            free(p);
            return -1;
        }
        free(p);
        sl->v = realloc(sl->v, (sl->n + 1) * sizeof *sl->v);
        sl->v[sl->n++] = s;
    }
    return 0;
}

static void close_split(shard_list *sl)
{
    for (size_t i = 0; i < sl->n; i++) pile_shard_close(sl->v[i]);
    free(sl->v);
    memset(sl, 0, sizeof *sl);
}

/* Concat: the rows' true tokens, in order, are the documents' tokens in
 * order; every document start is where it must be; every row but the last
 * is full; padding is pad_id. */
static void check_concat(const char *out, pile_split sp, const exp_docs *e, uint32_t L, uint32_t eot)
{
    shard_list sl;
    ASSERT_EQ(open_split(out, sp, &sl), 0);
    ASSERT(sl.n > 0);
    size_t total = 0;
    for (size_t k = 0; k < e->n; k++) total += e->v[k].n;
    uint32_t *flat = malloc((total ? total : 1) * sizeof *flat);
    size_t *start = malloc((e->n ? e->n : 1) * sizeof *start);
    size_t pos = 0;
    for (size_t k = 0; k < e->n; k++) {
        start[k] = pos;
        memcpy(flat + pos, e->v[k].tok, e->v[k].n * sizeof *flat);
        pos += e->v[k].n;
    }
    uint32_t *row = malloc(L * sizeof *row);
    size_t at = 0, next_doc = 0, cur_doc = 0, nrows = 0, bad = 0;
    uint32_t last_len = 0;
    for (size_t s = 0; s < sl.n && !bad; s++) {
        const pile_shard_info *info = pile_shard_get_info(sl.v[s]);
        ASSERT_EQ(info->max_length, L);
        ASSERT_EQ(info->pack, PILE_PACK_CONCAT);
        ASSERT_EQ(info->pad_id, eot);
        ASSERT_EQ(info->token_bytes, eot >= 65536 ? 4u : 2u);
        for (uint64_t r = 0; r < info->row_count && !bad; r++, nrows++) {
            if (nrows && last_len != L) {
                PILE_FAIL_("row %zu is not the last but has length %u", nrows - 1, last_len);
                bad = 1;
            }
            uint32_t len = pile_shard_row_tokens(sl.v[s], r, row);
            last_len = len;
            if (at + len > total || memcmp(row, flat + at, len * sizeof *row) != 0) {
                PILE_FAIL_("row %zu (shard %zu row %" PRIu64 ") differs from the documents' tokens", nrows, s, r);
                bad = 1;
                break;
            }
            for (uint32_t k = len; k < L; k++)
                if (row[k] != eot) {
                    PILE_FAIL_("row %zu: padding at %u is %u, not %u", nrows, k, row[k], eot);
                    bad = 1;
                    break;
                }
            while (cur_doc + 1 < e->n && start[cur_doc + 1] <= at) cur_doc++;
            const char *lead = pile_shard_subset_name(sl.v[s], pile_shard_row_lead_subset(sl.v[s], r));
            if (!lead || strcmp(lead, e->v[cur_doc].subset)) {
                PILE_FAIL_("row %zu: lead subset '%s', expected '%s'", nrows, lead ? lead : "(null)", e->v[cur_doc].subset);
                bad = 1;
            }
            const pile_shard_doc *docs;
            uint32_t nd = pile_shard_row_docs(sl.v[s], r, &docs);
            uint32_t j = 0;
            for (; next_doc < e->n && start[next_doc] < at + len; next_doc++, j++) {
                const char *name = j < nd ? pile_shard_subset_name(sl.v[s], docs[j].subset) : NULL;
                if (j >= nd || docs[j].offset != start[next_doc] - at || docs[j].flags != 0 || !name ||
                    strcmp(name, e->v[next_doc].subset)) {
                    PILE_FAIL_("row %zu: document %zu should start at offset %zu ('%s')", nrows, next_doc,
                               start[next_doc] - at, e->v[next_doc].subset);
                    bad = 1;
                    break;
                }
            }
            if (!bad && j != nd) {
                PILE_FAIL_("row %zu has %u document starts, expected %u", nrows, nd, j);
                bad = 1;
            }
            at += len;
        }
    }
    if (!bad) {
        ASSERT_EQ(at, total);
        ASSERT_EQ(next_doc, e->n);
        ASSERT_EQ(nrows, (total + L - 1) / L);
        ASSERT_EQ(last_len, total - (nrows - 1) * (size_t)L);
    }
    free(row);
    free(flat);
    free(start);
    close_split(&sl);
}

typedef struct piece {
    uint64_t hash;
    uint32_t len;
    uint16_t flags;
    const char *subset;
} piece;

static int cmp_piece(const void *a, const void *b)
{
    const piece *x = a, *y = b;
    if (x->hash != y->hash) return x->hash < y->hash ? -1 : 1;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    if (x->flags != y->flags) return x->flags < y->flags ? -1 : 1;
    return strcmp(x->subset, y->subset);
}

/* Best-fit: every document is in the rows exactly once, whole if shorter
 * than a row, else as row-long pieces plus a remainder (pieces after the
 * first flagged continued); no row is over max_length. Returns the padding
 * fraction. */
static double check_bestfit(const char *out, pile_split sp, const exp_docs *e, uint32_t L, uint32_t eot)
{
    shard_list sl;
    ASSERT_EQ(open_split(out, sp, &sl), 0);
    ASSERT(sl.n > 0);
    size_t ne = 0, ncap = 1024, na = 0, acap = 1024;
    piece *want = malloc(ncap * sizeof *want), *got = malloc(acap * sizeof *got);
    for (size_t k = 0; k < e->n; k++)
        for (size_t s = 0; s < e->v[k].n; s += L) {
            if (ne == ncap) want = realloc(want, (ncap *= 2) * sizeof *want);
            uint32_t len = (uint32_t)(e->v[k].n - s < L ? e->v[k].n - s : L);
            want[ne++] = (piece){XXH3_64bits(e->v[k].tok + s, len * sizeof(uint32_t)), len,
                                 (uint16_t)(s ? PILE_DOC_CONTINUED : 0), e->v[k].subset};
        }
    uint32_t *row = malloc(L * sizeof *row);
    uint64_t rows = 0, pad = 0;
    int bad = 0;
    for (size_t s = 0; s < sl.n && !bad; s++) {
        const pile_shard_info *info = pile_shard_get_info(sl.v[s]);
        ASSERT_EQ(info->pack, PILE_PACK_BEST_FIT);
        for (uint64_t r = 0; r < info->row_count && !bad; r++) {
            uint32_t len = pile_shard_row_tokens(sl.v[s], r, row);
            rows++;
            pad += L - len;
            const pile_shard_doc *docs;
            uint32_t nd = pile_shard_row_docs(sl.v[s], r, &docs);
            if (len == 0 || len > L || nd == 0 || docs[0].offset != 0) {
                PILE_FAIL_("shard %zu row %" PRIu64 ": length %u, %u pieces, first at %u", s, r, len, nd,
                           nd ? docs[0].offset : 0);
                bad = 1;
                break;
            }
            for (uint32_t k = len; k < L; k++)
                if (row[k] != eot) {
                    PILE_FAIL_("shard %zu row %" PRIu64 ": padding is not pad_id", s, r);
                    bad = 1;
                    break;
                }
            const char *lead = pile_shard_subset_name(sl.v[s], pile_shard_row_lead_subset(sl.v[s], r));
            const char *first = pile_shard_subset_name(sl.v[s], docs[0].subset);
            if (!lead || !first || strcmp(lead, first)) {
                PILE_FAIL_("shard %zu row %" PRIu64 ": lead subset is not the first piece's", s, r);
                bad = 1;
            }
            for (uint32_t j = 0; j < nd; j++) {
                uint32_t end = j + 1 < nd ? docs[j + 1].offset : len;
                if (na == acap) got = realloc(got, (acap *= 2) * sizeof *got);
                got[na++] = (piece){XXH3_64bits(row + docs[j].offset, (end - docs[j].offset) * sizeof(uint32_t)),
                                    end - docs[j].offset, docs[j].flags,
                                    pile_shard_subset_name(sl.v[s], docs[j].subset)};
            }
        }
    }
    ASSERT_EQ(na, ne);
    if (na == ne) {
        qsort(want, ne, sizeof *want, cmp_piece);
        qsort(got, na, sizeof *got, cmp_piece);
        size_t diff = 0;
        for (size_t k = 0; k < ne; k++) diff += cmp_piece(&want[k], &got[k]) != 0;
        ASSERT_EQ(diff, 0);
    }
    /* the rows hold exactly the documents' tokens, so no row can be dropped */
    size_t total = 0;
    for (size_t k = 0; k < e->n; k++) total += e->v[k].n;
    ASSERT_EQ(rows * L - pad, total);
    free(row);
    free(want);
    free(got);
    close_split(&sl);
    return rows ? (double)pad / (double)(rows * L) : 0;
}

/* ---------------------------------------------------------------- manifest */

static int64_t jget(const pile_json *root, const char *dotted)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", dotted);
    const pile_json *v = root;
    for (char *tok = strtok(buf, "."); tok && v; tok = strtok(NULL, ".")) v = pile_json_get(v, tok);
    int64_t x = -1;
    if (!v) return -1;
    if (pile_json_type_of(v) == PILE_JSON_BOOL) return pile_json_bool(v);
    if (!pile_json_int(v, &x)) return -1;
    return x;
}

static pile_json *load_manifest(const char *out)
{
    char *p = path2(out, "manifest.json");
    pile_json *root = NULL;
    pile_err err_s, *err = &err_s;
    if (pile_json_parse_file(p, &root, err)) printf("# %s\n", err->msg);
    free(p);
    return root;
}

/* ------------------------------------------------------------------ cases */

static pile_prep_opts base_opts(const pile_prep_inputs *in, const char *out)
{
    pile_prep_opts o;
    memset(&o, 0, sizeof o);
    o.inputs = in->v;
    o.n_inputs = in->n;
    o.output_dir = out;
    o.threads = 2;
    return o;
}

/* GPT-2's byte-to-character map (the byte-level alphabet of tokenizer.json). */
static unsigned byte_char(unsigned b)
{
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) return b;
    unsigned n = 0;
    for (unsigned k = 0; k < b; k++)
        if (!((k >= '!' && k <= '~') || (k >= 0xA1 && k <= 0xAC) || (k >= 0xAE && k <= 0xFF))) n++;
    return 256 + n;
}

/* Writes a byte-level tokenizer.json without merges (ids: the bytes), its
 * end-of-text at id eot, with the pre-tokenizer given as JSON. */
static void write_byte_tokenizer(const char *path, unsigned eot, const char *pre_tokenizer)
{
    pile_buf t = {0};
    pile_buf_printf(&t, "{\"added_tokens\":[{\"id\":%u,\"content\":\"<|endoftext|>\",\"special\":true}],"
                        "\"normalizer\":null,\"pre_tokenizer\":%s,\"model\":{\"type\":\"BPE\",\"merges\":[],"
                        "\"vocab\":{", eot, pre_tokenizer);
    for (unsigned k = 0; k < 256; k++) {
        char u[4];
        size_t ul = pile_utf8_encode(byte_char(k), u);
        if (k) pile_buf_append_str(&t, ",");
        pile_json_write_string(&t, u, ul);
        pile_buf_printf(&t, ":%u", k);
    }
    pile_buf_printf(&t, ",\"<|endoftext|>\":%u}}}", eot);
    pile_err err_s, *err = &err_s;
    ASSERT_OK(pile_fs_write_atomic(path, t.data, t.len, err), err);
    pile_buf_free(&t);
}

/* A byte tokenizer whose end-of-text is id 70000: a vocabulary over
 * 65,536, so shards hold 4-byte ids, and the workers' narrowing leaves them
 * wide. Returns its path. */
static char *wide_bytes_tokenizer(const char *tmp)
{
    char *p = path2(tmp, "wide-tok.json");
    write_byte_tokenizer(p, 70000, "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}");
    return p;
}

static void test_pack(const char *tmp, const char *spec, pile_pack pack, int threads)
{
    /* byte tokens (the bytes tokenizer, or wide_bytes_tokenizer's): a train
     * file and the val split; GPT-2: the inputs that have reference ids */
    char *a = NULL, *b = NULL, *ra = NULL, *rb = NULL;
    int refs = spec && !contains(spec, "wide");
    if (refs) {
        a = path2(g_corpus, "tricky.jsonl");
        ra = path2(g_corpus, "ref/tricky.r50k.jsonl");
        rb = path2(g_corpus, "ref/val.r50k.jsonl");
    } else {
        a = path2(g_corpus, "train/00.jsonl.zst");
    }
    b = path2(g_corpus, "val.jsonl.zst");
    pile_prep_inputs in = {0};
    pile_err err_s, *err = &err_s;
    ASSERT_OK(pile_prep_inputs_add(&in, b, err), err); /* given first, packed after train */
    ASSERT_OK(pile_prep_inputs_add(&in, a, err), err);
    char name[64];
    snprintf(name, sizeof name, "%s-%s-%d", pack == PILE_PACK_CONCAT ? "concat" : "bf",
             refs ? "bpe" : spec ? "wide" : "bytes", threads);
    char *out = path2(tmp, name);
    pile_prep_opts o = base_opts(&in, out);
    o.threads = threads;
    o.tokenizer_spec = spec;
    o.max_length = pack == PILE_PACK_CONCAT ? 509 : 1021;
    o.pack = pack;
    o.window_rows = 48;
    o.shard_bytes = 150 * 1024;
    pile_prep_result res;
    int rc = pile_prep_run(&o, &res, err);
    ASSERT_OK(rc, err);
    uint32_t eot = 256;
    if (spec) {
        pile_tokenizer *tok;
        if (pile_tokenizer_open(&tok, spec, err) == 0) {
            eot = pile_tokenizer_eot_id(tok);
            pile_tokenizer_close(tok);
        }
    }
    if (rc == 0) {
        exp_docs ea = {0}, eb = {0};
        ASSERT_EQ(read_expected(a, ra, eot, &ea), 0);
        ASSERT_EQ(read_expected(b, rb, eot, &eb), 0);
        ASSERT_EQ(res.documents, ea.n + eb.n);
        ASSERT_EQ(res.skipped, 0);
        ASSERT(res.rows > 2);
        if (pack == PILE_PACK_CONCAT) {
            check_concat(out, PILE_SPLIT_TRAIN, &ea, o.max_length, eot);
            check_concat(out, PILE_SPLIT_VAL, &eb, o.max_length, eot);
        } else {
            double f1 = check_bestfit(out, PILE_SPLIT_TRAIN, &ea, o.max_length, eot);
            double f2 = check_bestfit(out, PILE_SPLIT_VAL, &eb, o.max_length, eot);
            printf("# best-fit padding fraction: train %.4f, val %.4f\n", f1, f2);
        }
        pile_json *m = load_manifest(out);
        ASSERT(m != NULL);
        ASSERT_EQ(jget(m, "complete"), 1);
        ASSERT_EQ(jget(m, "stats.documents"), (int64_t)(ea.n + eb.n));
        ASSERT_EQ(jget(m, "stats.splits.val.documents"), (int64_t)eb.n);
        ASSERT_EQ(jget(m, "options.window_rows"), pack == PILE_PACK_BEST_FIT ? 48 : 0);
        pile_json_free(m);
        exp_free(&ea);
        exp_free(&eb);
    }
    pile_prep_result_free(&res);
    pile_prep_inputs_free(&in);
    free(a);
    free(b);
    free(ra);
    free(rb);
    free(out);
}

/* Expected per-reason counts of corpus/bad.jsonl, from bad-cases.tsv (what
 * each line is) and the reference ids (null where a strict reader finds no
 * document). pile_lines drops the BOM of line 1, its only defect. */
typedef struct bad_expect {
    int64_t lines, docs, skip[PILE_SKIP_COUNT], utf8, surrogate, first_skip_line;
} bad_expect;

static int expect_bad(bad_expect *x)
{
    memset(x, 0, sizeof *x);
    char *tsv = path2(g_corpus, "bad-cases.tsv"), *ref = path2(g_corpus, "ref/bad.r50k.jsonl");
    FILE *ft = fopen(tsv, "r"), *fr = fopen(ref, "r");
    free(tsv);
    free(ref);
    if (!ft || !fr) return -1;
    char *tl = NULL, *rl = NULL;
    size_t tc = 0, rc = 0;
    if (getline(&tl, &tc, ft) < 0) return -1; /* header */
    while (getline(&tl, &tc, ft) > 0) {
        if (getline(&rl, &rc, fr) < 0) return -1;
        char *save, *f_line = strtok_r(tl, "\t", &save), *f_case = strtok_r(NULL, "\t", &save),
                    *f_valid = strtok_r(NULL, "\t", &save);
        if (!f_line || !f_case || !f_valid) return -1;
        long line = atol(f_line);
        x->lines++;
        int is_null = strncmp(rl, "null", 4) == 0;
        int skip = PILE_SKIP_NONE;
        if (is_null && strcmp(f_case, "bom-first-line") != 0) {
            if (!strcmp(f_case, "blank") || !strcmp(f_case, "whitespace-only")) skip = PILE_SKIP_BLANK;
            else if (!strncmp(f_case, "top-level-", 10)) skip = PILE_SKIP_NOT_OBJECT;
            else if (!strcmp(f_case, "missing-text")) skip = PILE_SKIP_NO_TEXT;
            else if (!strncmp(f_case, "text-", 5)) skip = PILE_SKIP_TEXT_NOT_STRING;
            else skip = PILE_SKIP_BAD_JSON;
        }
        if (skip) {
            x->skip[skip]++;
            if (!x->first_skip_line) x->first_skip_line = line;
            continue;
        }
        x->docs++;
        if (!strncmp(f_case, "invalid-utf8-", 13)) x->utf8++;
        if (!strncmp(f_valid, "grammar yes, Unicode no", 23)) x->surrogate++;
    }
    free(tl);
    free(rl);
    fclose(ft);
    fclose(fr);
    return 0;
}

typedef struct log_capture {
    pile_buf text;
} log_capture;

static void capture(void *ctx, const char *msg)
{
    log_capture *c = ctx;
    pile_buf_printf(&c->text, "%s\n", msg);
}

static void test_bad(const char *tmp)
{
    bad_expect x;
    ASSERT_EQ(expect_bad(&x), 0);
    ASSERT_EQ(x.lines, 48);
    char *dir = path2(tmp, "badin"), *src = path2(g_corpus, "bad.jsonl"), *dst = path2(dir, "bad.jsonl");
    mkdir(dir, 0755);
    ASSERT_EQ(copy_file(src, dst), 0);
    pile_prep_inputs in = {0};
    pile_err err_s, *err = &err_s;
    ASSERT_OK(pile_prep_inputs_add(&in, dir, err), err);
    ASSERT_EQ(in.n, 1);

    TEST("bad.jsonl: lines skipped by reason and repaired by kind");
    char *out = path2(tmp, "bad-out");
    pile_prep_opts o = base_opts(&in, out);
    o.max_length = 128;
    log_capture lc = {{0}};
    o.log = capture;
    o.log_ctx = &lc;
    pile_prep_result res;
    ASSERT_OK(pile_prep_run(&o, &res, err), err);
    pile_json *m = load_manifest(out);
    ASSERT(m != NULL);
    int64_t skipped = 0;
    for (int k = 1; k < PILE_SKIP_COUNT; k++) {
        char key[96];
        snprintf(key, sizeof key, "stats.skipped_by_reason.%s", pile_skip_name((pile_skip)k));
        if (jget(m, key) != x.skip[k]) PILE_FAIL_("%s: %" PRId64 " != %" PRId64, key, jget(m, key), x.skip[k]);
        skipped += x.skip[k];
    }
    ASSERT_EQ(x.skip[PILE_SKIP_BLANK], 2);
    ASSERT_EQ(jget(m, "stats.lines"), 48);
    ASSERT_EQ(jget(m, "stats.documents"), 48 - skipped);
    ASSERT_EQ(jget(m, "stats.documents"), x.docs);
    ASSERT_EQ(jget(m, "stats.skipped"), skipped);
    ASSERT_EQ(jget(m, "stats.repaired_by_kind.utf8"), x.utf8);
    ASSERT_EQ(jget(m, "stats.repaired_by_kind.surrogate"), x.surrogate);
    ASSERT_EQ(x.utf8, 6);
    ASSERT_EQ(x.surrogate, 6);
    ASSERT_EQ(res.documents, (uint64_t)x.docs);
    ASSERT(contains(lc.text.data, "bad.jsonl:2'"));
    ASSERT(contains(lc.text.data, "bad.jsonl:3'"));
    pile_json_free(m);
    pile_prep_result_free(&res);
    free(out);

    TEST("bad.jsonl: --strict fails at the first bad line");
    out = path2(tmp, "bad-strict");
    o.output_dir = out;
    o.strict = 1;
    int rc = pile_prep_run(&o, &res, err);
    ASSERT_EQ(rc, PILE_EFORMAT);
    char want[64];
    snprintf(want, sizeof want, "bad.jsonl:%" PRId64 "'", x.first_skip_line);
    ASSERT(contains(err->msg, want));
    ASSERT(contains(err->msg, "blank"));
    pile_prep_result_free(&res);
    free(out);

    TEST("bad.jsonl: a line over --max-line-bytes is skipped as too_long");
    out = path2(tmp, "bad-long");
    o.output_dir = out;
    o.strict = 0;
    o.max_line_bytes = 1 << 20; /* under the 5 MB line, over every other */
    ASSERT_OK(pile_prep_run(&o, &res, err), err);
    m = load_manifest(out);
    ASSERT_EQ(jget(m, "stats.skipped_by_reason.too_long"), 1);
    ASSERT_EQ(jget(m, "stats.documents"), x.docs - 1);
    ASSERT_EQ(jget(m, "stats.lines"), 48);
    pile_json_free(m);
    pile_prep_result_free(&res);
    free(out);

    pile_buf_free(&lc.text);
    pile_prep_inputs_free(&in);
    free(dir);
    free(src);
    free(dst);
}

/* Complete lines and the partial tail of a truncated .zst, by plain libzstd. */
static int zst_lines(const char *path, int64_t *complete, int64_t *docs, int *tail)
{
    pile_buf raw = {0}, outb = {0};
    pile_err err_s, *err = &err_s;
    if (pile_fs_read_file(path, &raw, err)) return -1;
    ZSTD_DStream *ds = ZSTD_createDStream();
    ZSTD_inBuffer ib = {raw.data, raw.len, 0};
    char buf[1 << 16];
    while (ib.pos < ib.size) {
        ZSTD_outBuffer ob = {buf, sizeof buf, 0};
        size_t r = ZSTD_decompressStream(ds, &ob, &ib);
        pile_buf_append(&outb, buf, ob.pos);
        if (ZSTD_isError(r)) break;
        if (ob.pos == 0 && ib.pos == ib.size) break;
    }
    for (;;) { /* flush what is buffered */
        ZSTD_outBuffer ob = {buf, sizeof buf, 0};
        ZSTD_inBuffer none = {NULL, 0, 0};
        size_t r = ZSTD_decompressStream(ds, &ob, &none);
        pile_buf_append(&outb, buf, ob.pos);
        if (ZSTD_isError(r) || ob.pos == 0) break;
    }
    ZSTD_freeDStream(ds);
    *complete = *docs = 0;
    size_t s = 0;
    for (size_t i = 0; i < outb.len; i++)
        if (outb.data[i] == '\n') {
            (*complete)++;
            pile_json *root = NULL;
            if (pile_json_parse(outb.data + s, i - s, path, &root, err) == 0) {
                const pile_json *t = pile_json_get(root, "text");
                if (t && pile_json_type_of(t) == PILE_JSON_STRING) (*docs)++;
            }
            pile_json_free(root);
            s = i + 1;
        }
    *tail = s < outb.len;
    pile_buf_free(&raw);
    pile_buf_free(&outb);
    return 0;
}

static void test_truncated(const char *tmp)
{
    TEST("truncated.jsonl.zst: complete lines kept, file reported as truncated");
    char *src = path2(g_corpus, "truncated.jsonl.zst");
    int64_t complete = -1, docs = -1;
    int tail = -1;
    ASSERT_EQ(zst_lines(src, &complete, &docs, &tail), 0);
    /* corpus/README.md counts 187 lines in the prefix that was compressed, but a
     * zstd block cut short cannot be decoded: what libzstd yields is the truth */
    ASSERT(complete > 0);
    pile_prep_inputs in = {0};
    pile_err err_s, *err = &err_s;
    ASSERT_OK(pile_prep_inputs_add(&in, src, err), err);
    char *out = path2(tmp, "trunc");
    pile_prep_opts o = base_opts(&in, out);
    o.max_length = 100;
    pile_prep_result res;
    ASSERT_OK(pile_prep_run(&o, &res, err), err);
    ASSERT_EQ(res.truncated_inputs, 1);
    pile_json *m = load_manifest(out);
    ASSERT(m != NULL);
    ASSERT_EQ(jget(m, "stats.truncated_inputs"), 1);
    ASSERT_EQ(jget(m, "stats.documents"), docs);
    ASSERT_EQ(jget(m, "stats.lines"), complete + tail);
    ASSERT_EQ(jget(m, "stats.skipped_by_reason.cut"), tail);
    const pile_json *ins = pile_json_get(m, "inputs");
    ASSERT(ins && pile_json_size(ins) == 1 && jget(pile_json_at(ins, 0), "truncated") == 1);
    pile_json_free(m);
    pile_prep_result_free(&res);
    free(out);

    TEST("truncated.jsonl.zst: --strict is an error");
    out = path2(tmp, "trunc-strict");
    o.output_dir = out;
    o.strict = 1;
    int rc = pile_prep_run(&o, &res, err);
    ASSERT(rc < 0);
    ASSERT(contains(err->msg, "truncated.jsonl.zst"));
    pile_prep_result_free(&res);
    free(out);
    free(src);
    pile_prep_inputs_free(&in);
}

/* The inputs of the resume tests (train/01 and val) into *in; returns the
 * folder of their uninterrupted run ("resume-ref-concat" or "-bf"). */
static char *resume_inputs(const char *tmp, pile_pack pack, pile_prep_inputs *in, pile_err *err)
{
    char *a = path2(g_corpus, "train/01.jsonl.zst"), *b = path2(g_corpus, "val.jsonl.zst");
    ASSERT_OK(pile_prep_inputs_add(in, a, err), err);
    ASSERT_OK(pile_prep_inputs_add(in, b, err), err);
    free(a);
    free(b);
    return path2(tmp, pack == PILE_PACK_CONCAT ? "resume-ref-concat" : "resume-ref-bf");
}

/* The options of the resume tests: about 10 shards of train/01 and val. */
static pile_prep_opts resume_opts(const pile_prep_inputs *in, const char *out, pile_pack pack)
{
    pile_prep_opts o = base_opts(in, out);
    o.max_length = 300;
    o.pack = pack;
    o.window_rows = 100;
    o.shard_bytes = 1000 * 1024; /* about 10 shards */
    return o;
}

/* A run stopped right after each shard (as a crash there would leave it),
 * then resumed, ends with exactly the bytes of an uninterrupted run. */
static void test_resume(const char *tmp, pile_pack pack)
{
    pile_prep_inputs in = {0};
    pile_err err_s, *err = &err_s;
    char *ref = resume_inputs(tmp, pack, &in, err);
    const char *tag = pack == PILE_PACK_CONCAT ? "concat" : "bf";
    char name[64];
    pile_prep_opts o = resume_opts(&in, ref, pack);
    pile_prep_result res;
    ASSERT_OK(pile_prep_run(&o, &res, err), err);
    pile_prep_result_free(&res);
    pile_json *m = load_manifest(ref);
    int64_t nshards = m ? (int64_t)pile_json_size(pile_json_get(m, "shards")) : 0;
    pile_json_free(m);
    ASSERT(nshards >= 5);
    int all_same = 1;
    for (int64_t k = 1; k <= nshards && all_same; k++) {
        snprintf(name, sizeof name, "resume-%s-%" PRId64, tag, k);
        char *out = path2(tmp, name);
        o.output_dir = out;
        o.stop_after_shards = (uint64_t)k;
        o.threads = 1 + (int)(k % 3);
        int rc = pile_prep_run(&o, &res, err);
        pile_prep_result_free(&res);
        ASSERT_EQ(rc, PILE_ELIMIT);
        o.stop_after_shards = 0;
        rc = pile_prep_run(&o, &res, err);
        ASSERT_OK(rc, err);
        ASSERT_EQ(res.resumed, 1);
        ASSERT_EQ(res.shards_kept, (uint64_t)k);
        pile_prep_result_free(&res);
        char why[4096 + 64];
        if (!same_folder(ref, out, why, sizeof why)) {
            PILE_FAIL_("stopped after shard %" PRId64 ", resumed: %s", k, why);
            all_same = 0;
        }
        rm_rf(out);
        free(out);
    }
    /* and a rerun of a finished job does nothing */
    o.output_dir = ref;
    ASSERT_OK(pile_prep_run(&o, &res, err), err);
    ASSERT_EQ(res.already_complete, 1);
    pile_prep_result_free(&res);
    /* other options are refused */
    o.max_length = 301;
    ASSERT_EQ(pile_prep_run(&o, &res, err), PILE_EMISMATCH);
    ASSERT(contains(err->msg, "--force"));
    ASSERT(contains(err->msg, "max_length"));
    pile_prep_result_free(&res);
    free(ref);
    pile_prep_inputs_free(&in);
}

/* Best-Fit-Decreasing against the obvious O(n * bins) version: the same
 * number of bins (ties between bins with equal room do not change the
 * multiset of rooms, hence not the count), no bin over capacity. */
static void test_bfd(void)
{
    TEST("best-fit-decreasing matches a naive implementation");
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (int round = 0; round < 40; round++) {
        uint32_t cap = 1 + (uint32_t)(round * 37 % 300);
        size_t n = 1 + (size_t)(round * 53 % 700);
        uint32_t *len = malloc(n * sizeof *len), *bin = malloc(n * sizeof *bin);
        for (size_t i = 0; i < n; i++) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            len[i] = 1 + (uint32_t)(seed % cap);
            if (round % 4 == 0 && i % 3 == 0) len[i] = cap; /* some full rows */
        }
        prep_bfd *b = pile__prep_bfd_create(cap);
        long nb = pile__prep_bfd_pack(b, len, n, bin, NULL);
        /* naive */
        size_t *ord = malloc(n * sizeof *ord);
        for (size_t i = 0; i < n; i++) ord[i] = i;
        for (size_t i = 1; i < n; i++) /* stable insertion sort, decreasing */
            for (size_t j = i; j > 0 && len[ord[j - 1]] < len[ord[j]]; j--) {
                size_t t = ord[j];
                ord[j] = ord[j - 1];
                ord[j - 1] = t;
            }
        uint32_t *room = malloc(n * sizeof *room);
        size_t nbins = 0;
        for (size_t k = 0; k < n; k++) {
            uint32_t l = len[ord[k]];
            size_t best = SIZE_MAX;
            for (size_t j = 0; j < nbins; j++)
                if (room[j] >= l && (best == SIZE_MAX || room[j] < room[best])) best = j;
            if (best == SIZE_MAX) room[best = nbins++] = cap;
            room[best] -= l;
        }
        ASSERT_EQ(nb, (long)nbins);
        uint64_t *fill = calloc((size_t)(nb > 0 ? nb : 1), sizeof *fill);
        for (size_t i = 0; i < n && nb > 0; i++) {
            ASSERT(bin[i] < (uint32_t)nb);
            if (bin[i] < (uint32_t)nb) fill[bin[i]] += len[i];
        }
        for (long j = 0; j < nb; j++) ASSERT(fill[j] <= cap);
        free(fill);
        free(room);
        free(ord);
        pile__prep_bfd_free(b);
        free(len);
        free(bin);
    }
}

static void test_inputs(const char *tmp)
{
    TEST("inputs: folders walked and sorted, split by file name, missing path named");
    pile_prep_inputs in = {0};
    pile_err err_s, *err = &err_s;
    ASSERT_OK(pile_prep_inputs_add(&in, g_corpus, err), err);
    /* every *.jsonl[.zst] under the corpus, in byte order of the path */
    ASSERT(in.n >= 9);
    for (size_t i = 1; i < in.n; i++) ASSERT(strcmp(in.v[i - 1].path, in.v[i].path) < 0);
    size_t nval = 0;
    for (size_t i = 0; i < in.n; i++) {
        const char *base = strrchr(in.v[i].path, '/') + 1;
        ASSERT(strstr(base, ".jsonl") != NULL);
        nval += in.v[i].split == PILE_SPLIT_VAL;
        if (!strcmp(base, "val.jsonl.zst")) ASSERT_EQ(in.v[i].split, PILE_SPLIT_VAL);
        /* issue 14: "val" as a word of the name is val (it was train when only the exact name was) */
        if (!strcmp(base, "val.ascii.jsonl.zst")) ASSERT_EQ(in.v[i].split, PILE_SPLIT_VAL);
        if (!strcmp(base, "val.r50k.jsonl")) ASSERT_EQ(in.v[i].split, PILE_SPLIT_VAL);
    }
    ASSERT_EQ(nval, 3);
    ASSERT_EQ(pile_prep_split_of("x/test.jsonl"), PILE_SPLIT_TEST);
    ASSERT_EQ(pile_prep_split_of("x/train/00.jsonl.zst"), PILE_SPLIT_TRAIN);
    char *missing = path2(tmp, "nope.jsonl.zst");
    ASSERT_EQ(pile_prep_inputs_add(&in, missing, err), PILE_ENOENT);
    ASSERT(contains(err->msg, "cannot open '"));
    ASSERT(contains(err->msg, "nope.jsonl.zst': No such file or directory"));
    free(missing);
    pile_prep_inputs_free(&in);

    TEST("inputs: links back to a parent folder are not followed");
    char *dir = path2(tmp, "loops"), *sub = path2(dir, "sub"), *file = path2(sub, "x.jsonl");
    char *src = path2(g_corpus, "tricky.jsonl"), *up = path2(sub, "up");
    mkdir(dir, 0755);
    mkdir(sub, 0755);
    ASSERT_EQ(copy_file(src, file), 0);
    /* followed, this link ended the walk as "nested too deep" (two such
     * links made it exponential: not tried here, it would not end) */
    ASSERT_EQ(symlink("..", up), 0);
    ASSERT_OK(pile_prep_inputs_add(&in, dir, err), err);
    ASSERT_EQ(in.n, 1);
    if (in.n == 1) ASSERT(contains(in.v[0].path, "loops/sub/x.jsonl"));
    pile_prep_inputs_free(&in);
    free(dir);
    free(sub);
    free(file);
    free(src);
    free(up);
}

/* An input whose path is not UTF-8 (file names are bytes), or whose mtime
 * is before 1970 (negative): the manifest must still read back and match,
 * so the run resumes and a finished one is recognised. */
static void test_odd_input(const char *tmp, const char *name, int before_1970)
{
    char *dir = path2(tmp, name), *file = path2(dir, "val.jsonl.zst"), *src = path2(g_corpus, "val.jsonl.zst");
    char out_name[64];
    snprintf(out_name, sizeof out_name, "odd-out-%d", before_1970);
    char *out = path2(tmp, out_name);
    mkdir(dir, 0755);
    ASSERT_EQ(copy_file(src, file), 0);
    if (before_1970) {
        struct timespec when[2] = {{-315619200, 500000000}, {-315619200, 500000000}};
        ASSERT_EQ(utimensat(AT_FDCWD, file, when, 0), 0);
    }
    pile_prep_inputs in = {0};
    pile_err err_s, *err = &err_s;
    ASSERT_OK(pile_prep_inputs_add(&in, dir, err), err);
    ASSERT_EQ(in.n, 1);
    if (before_1970) ASSERT(in.n == 1 && in.v[0].mtime_ns < 0);
    pile_prep_opts o = base_opts(&in, out);
    o.max_length = 256;
    o.shard_bytes = 64 * 1024;
    o.stop_after_shards = 1;
    pile_prep_result res;
    ASSERT_EQ(pile_prep_run(&o, &res, err), PILE_ELIMIT);
    pile_prep_result_free(&res);
    o.stop_after_shards = 0;
    ASSERT_OK(pile_prep_run(&o, &res, err), err);
    ASSERT_EQ(res.resumed, 1);
    ASSERT_EQ(res.shards_kept, 1);
    pile_prep_result_free(&res);
    ASSERT_OK(pile_prep_run(&o, &res, err), err);
    ASSERT_EQ(res.already_complete, 1);
    pile_prep_result_free(&res);
    pile_prep_inputs_free(&in);
    free(dir);
    free(file);
    free(src);
    free(out);
}

/* A worker's error (here the tokenizer's: its split pattern runs out of
 * stack on one long line, after several chunks and shards) stops every
 * thread and comes back as the run's error, naming the line; the folder
 * stays resumable. */
static void test_worker_error(const char *tmp)
{
    TEST("a tokenizer error in a worker stops the run with its message");
    char *tokp = path2(tmp, "split-tok.json"), *dir = path2(tmp, "tokerr"), *a = path2(dir, "a.jsonl.zst"),
         *b = path2(dir, "b.jsonl"), *src = path2(g_corpus, "train/00.jsonl.zst");
    mkdir(dir, 0755);
    ASSERT_EQ(copy_file(src, a), 0);
    write_byte_tokenizer(tokp, 256,
                         "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
                         "\"(?:a|b)*c\"},\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\","
                         "\"add_prefix_space\":false,\"use_regex\":false}]}");
    pile_err err_s, *err = &err_s;
    pile_buf t = {0};
    for (int k = 0; k < 2000; k++) pile_buf_printf(&t, "{\"text\":\"line %d\"}\n", k);
    pile_buf_append_str(&t, "{\"text\":\"");
    for (int k = 0; k < 3000000; k++) pile_buf_append_str(&t, "ab");
    pile_buf_append_str(&t, "d\"}\n{\"text\":\"after\"}\n");
    ASSERT_OK(pile_fs_write_atomic(b, t.data, t.len, err), err);
    pile_buf_free(&t);

    pile_prep_inputs in = {0};
    ASSERT_OK(pile_prep_inputs_add(&in, dir, err), err);
    char *out = path2(tmp, "tokerr-out");
    pile_prep_opts o = base_opts(&in, out);
    o.tokenizer_spec = tokp;
    o.max_length = 512;
    o.shard_bytes = 256 * 1024;
    for (int threads = 1; threads <= 4; threads += 3) {
        o.threads = threads;
        pile_prep_result res;
        int rc = pile_prep_run(&o, &res, err);
        pile_prep_result_free(&res);
        ASSERT(rc < 0 && rc != PILE_ELIMIT);
        ASSERT(contains(err->msg, "cannot tokenize '"));
        ASSERT(contains(err->msg, "tokerr/b.jsonl:2001'"));
        ASSERT(contains(err->msg, "(?:a|b)*c"));
        /* the shards of a.jsonl.zst were finished and recorded before the error */
        pile_json *m = load_manifest(out);
        ASSERT(m != NULL);
        ASSERT(m && pile_json_size(pile_json_get(m, "shards")) >= 2);
        ASSERT_EQ(jget(m, "complete"), 0);
        pile_json_free(m);
    }
    pile_prep_inputs_free(&in);
    free(out);
    free(tokp);
    free(dir);
    free(a);
    free(b);
    free(src);
}

/* ------------------------------------------- inputs as people have them */

static int write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = n ? fwrite(data, 1, n, f) : 0;
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static int write_gzip(const char *path, const void *data, size_t n)
{
    gzFile g = gzopen(path, "wb");
    if (!g) return -1;
    int ok = n == 0 || gzwrite(g, data, (unsigned)n) == (int)n;
    return gzclose(g) == Z_OK && ok ? 0 : -1;
}

static int write_zstd(const char *path, const void *data, size_t n)
{
    size_t cap = ZSTD_compressBound(n);
    void *z = malloc(cap);
    size_t k = z ? ZSTD_compress(z, cap, data, n, 3) : 0;
    int rc = z && !ZSTD_isError(k) ? write_bytes(path, z, k) : -1;
    free(z);
    return rc;
}

/* The decompressed bytes of a corpus file, lines joined by '\n' (each ended by one). */
static int corpus_text(const char *name, pile_buf *out)
{
    char *p = path2(g_corpus, name);
    pile_lines *r;
    pile_err err_s, *err = &err_s;
    int rc = pile_lines_open(&r, p, NULL, err);
    free(p);
    if (rc) return rc;
    pile_line ln;
    while ((rc = pile_lines_next(r, &ln, err)) == 1) {
        pile_buf_append(out, ln.data, ln.len);
        pile_buf_append(out, "\n", 1);
    }
    pile_lines_close(r);
    pile_buf_printf(out, "%s", ""); /* NUL-terminated, for the string functions */
    return rc < 0 ? rc : out->failed ? PILE_ENOMEM : 0;
}

/* Runs pile-prep on `in` into tmp/out_name with small rows and shards;
 * returns the run's code, the warnings in *log (may be NULL). */
static int run_into(const char *tmp, const char *out_name, const pile_prep_inputs *in, const char *text_key,
                    const char *subset_key, pile_prep_result *res, pile_buf *log, pile_err *err)
{
    char *out = path2(tmp, out_name);
    pile_prep_opts o = base_opts(in, out);
    o.max_length = 300;
    o.shard_bytes = 100 * 1024;
    o.text_key = text_key;
    o.subset_key = subset_key;
    log_capture lc = {{0}};
    o.log = capture;
    o.log_ctx = &lc;
    int rc = pile_prep_run(&o, res, err);
    if (log) pile_buf_printf(log, "%s", lc.text.data ? lc.text.data : "");
    pile_buf_free(&lc.text);
    free(out);
    return rc;
}

/* Same shard files (by name, byte for byte) in two output folders, at least one. */
static int same_shards(const char *tmp, const char *a, const char *b)
{
    char *pa = path2(tmp, a), *pb = path2(tmp, b);
    int n = 0, ok = 1;
    for (int sp = 0; sp < 3 && ok; sp++)
        for (unsigned k = 0; ok; k++) {
            char name[64];
            snprintf(name, sizeof name, "%s-%05u.shard", pile_prep_split_name((pile_split)sp), k);
            char *fa = path2(pa, name), *fb = path2(pb, name);
            struct stat sa, sb;
            int ea = stat(fa, &sa) == 0, eb = stat(fb, &sb) == 0;
            if (ea != eb || (ea && !same_file(fa, fb))) {
                printf("# %s differs between '%s' and '%s'\n", name, a, b);
                ok = 0;
            }
            n += ea;
            free(fa);
            free(fb);
            if (!ea || !eb) break;
        }
    free(pa);
    free(pb);
    return ok && n > 0;
}

static const pile_prep_input *find_input(const pile_prep_inputs *in, const char *suffix)
{
    for (size_t i = 0; i < in->n; i++) {
        size_t n = strlen(in->v[i].path), m = strlen(suffix);
        if (n >= m && !strcmp(in->v[i].path + n - m, suffix)) return &in->v[i];
    }
    return NULL;
}

static void expect_split(const pile_prep_inputs *in, const char *suffix, pile_split sp)
{
    const pile_prep_input *x = find_input(in, suffix);
    if (!x) PILE_FAIL_("no input '%s'", suffix);
    else if (x->split != sp)
        PILE_FAIL_("'%s' is in %s, expected %s", suffix, pile_prep_split_name(x->split), pile_prep_split_name(sp));
}

static void test_split_names(const char *tmp)
{
    TEST("splits: val, valid, validation and test as words of the name, any case; the nearest folder's otherwise");
    static const struct {
        const char *path;
        pile_split split;
    } names[] = {
        {"pile_val.jsonl.zst", PILE_SPLIT_VAL},       {"pile_test.jsonl.zst", PILE_SPLIT_TEST},
        {"00.jsonl.zst", PILE_SPLIT_TRAIN},           {"validation-00001.jsonl.gz", PILE_SPLIT_VAL},
        {"Val.jsonl", PILE_SPLIT_VAL},                {"x/VALID.JSONL", PILE_SPLIT_VAL},
        {"c4-validation.00000-of-00008.json.gz", PILE_SPLIT_VAL}, {"invalid.jsonl", PILE_SPLIT_TRAIN},
        {"contest.jsonl", PILE_SPLIT_TRAIN},          {"val/00.jsonl", PILE_SPLIT_TRAIN}, /* a folder named alone: no */
        {"testament.jsonl", PILE_SPLIT_TRAIN},        {"val_test.jsonl", PILE_SPLIT_TRAIN},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (pile_prep_split_of(names[i].path) != names[i].split)
            PILE_FAIL_("'%s': %s", names[i].path, pile_prep_split_name(pile_prep_split_of(names[i].path)));

    /* the same by a folder walk, where folders below the one given count too */
    static const char *const files[] = {"pile_val.jsonl.zst", "pile_test.jsonl.zst", "00.jsonl.zst",
                                        "validation-00001.jsonl.gz", "Val.jsonl", "VALID.JSONL", "invalid.jsonl",
                                        "test/part-0.json", "test/dev_val.jsonl", "validation/chunk1/x_0.jsonl.zst",
                                        "train/01.jsonl"};
    char *root = path2(tmp, "split-words"); /* no split word in the folder given, nor above it */
    mkdir(root, 0755);
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char *f = path2(root, files[i]);
        for (char *sl = strchr(f + strlen(root) + 1, '/'); sl; sl = strchr(sl + 1, '/')) {
            *sl = '\0';
            mkdir(f, 0755);
            *sl = '/';
        }
        ASSERT_EQ(write_bytes(f, "{\"text\": \"a\"}\n", 14), 0);
        free(f);
    }
    pile_prep_inputs in = {0};
    pile_err err_s, *err = &err_s;
    ASSERT_OK(pile_prep_inputs_add(&in, root, err), err);
    ASSERT_EQ(in.n, sizeof files / sizeof files[0]);
    expect_split(&in, "/pile_val.jsonl.zst", PILE_SPLIT_VAL);
    expect_split(&in, "/pile_test.jsonl.zst", PILE_SPLIT_TEST);
    expect_split(&in, "/00.jsonl.zst", PILE_SPLIT_TRAIN);
    expect_split(&in, "/validation-00001.jsonl.gz", PILE_SPLIT_VAL);
    expect_split(&in, "/Val.jsonl", PILE_SPLIT_VAL);
    expect_split(&in, "/VALID.JSONL", PILE_SPLIT_VAL);
    expect_split(&in, "/invalid.jsonl", PILE_SPLIT_TRAIN);
    expect_split(&in, "/test/part-0.json", PILE_SPLIT_TEST);         /* the folder's word */
    expect_split(&in, "/test/dev_val.jsonl", PILE_SPLIT_VAL);        /* the file's word first */
    expect_split(&in, "/validation/chunk1/x_0.jsonl.zst", PILE_SPLIT_VAL); /* the nearest folder with a word */
    expect_split(&in, "/train/01.jsonl", PILE_SPLIT_TRAIN);
    pile_prep_inputs_free(&in);

    TEST("splits: a name with words of two splits is refused until a rule says which");
    char *both = path2(root, "val_test.jsonl");
    ASSERT_EQ(write_bytes(both, "{\"text\": \"b\"}\n", 14), 0);
    ASSERT_OK(pile_prep_inputs_add(&in, both, err), err);
    pile_prep_result res;
    ASSERT_EQ(run_into(tmp, "both-out", &in, NULL, NULL, &res, NULL, err), PILE_EINVAL);
    ASSERT(contains(err->msg, "val_test.jsonl' has words of both the val and the test split"));
    ASSERT(contains(err->msg, "--train, --val or --test"));
    pile_prep_result_free(&res);
    ASSERT_OK(pile_prep_inputs_set_split(&in, PILE_SPLIT_TEST, both, err), err);
    ASSERT_OK(run_into(tmp, "both-out", &in, NULL, NULL, &res, NULL, err), err);
    ASSERT(contains(res.summary.data, "  test: 1 file: "));
    pile_prep_result_free(&res);
    pile_prep_inputs_free(&in);
    free(both);
    free(root);
}

static void test_split_rules(const char *tmp)
{
    char *dir = path2(tmp, "rules"), *held = path2(tmp, "held-out.jsonl"), *sub = path2(dir, "more");
    mkdir(dir, 0755);
    mkdir(sub, 0755);
    static const char *const files[] = {"pile_val.jsonl.zst", "pile_test.jsonl.zst", "00.jsonl.zst", "notes.jsonl",
                                        "more/a.jsonl", "more/b.jsonl"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char *f = path2(dir, files[i]);
        ASSERT_EQ(write_bytes(f, "{\"text\": \"r\"}\n", 14), 0);
        free(f);
    }
    ASSERT_EQ(write_bytes(held, "{\"text\": \"h\"}\n", 14), 0);
    char *far = path2(tmp, "far-away.jsonl"), *near = path2(sub, "c.jsonl");
    ASSERT_EQ(write_bytes(far, "{\"text\": \"f\"}\n", 14), 0);
    ASSERT_EQ(symlink(far, near), 0); /* in the folder, though its file is not */
    pile_prep_inputs in = {0};
    pile_err err_s, *err = &err_s;
    ASSERT_OK(pile_prep_inputs_add(&in, dir, err), err);

    TEST("splits: --val, --test and --train rules win over names; a file or folder named is added");
    ASSERT_OK(pile_prep_inputs_set_split(&in, PILE_SPLIT_VAL, "notes.jsonl", err), err);  /* a glob, no '/' */
    ASSERT_OK(pile_prep_inputs_set_split(&in, PILE_SPLIT_TRAIN, "pile_test*", err), err); /* name says test */
    ASSERT_OK(pile_prep_inputs_set_split(&in, PILE_SPLIT_VAL, held, err), err);           /* not an input yet */
    ASSERT_OK(pile_prep_inputs_set_split(&in, PILE_SPLIT_TEST, sub, err), err);           /* a folder */
    ASSERT_EQ(in.n, 8);
    expect_split(&in, "/more/c.jsonl", PILE_SPLIT_TEST);
    expect_split(&in, "/notes.jsonl", PILE_SPLIT_VAL);
    expect_split(&in, "/pile_test.jsonl.zst", PILE_SPLIT_TRAIN);
    expect_split(&in, "/pile_val.jsonl.zst", PILE_SPLIT_VAL);
    expect_split(&in, "/held-out.jsonl", PILE_SPLIT_VAL);
    expect_split(&in, "/more/a.jsonl", PILE_SPLIT_TEST);
    expect_split(&in, "/more/b.jsonl", PILE_SPLIT_TEST);
    const pile_prep_input *x = find_input(&in, "/pile_test.jsonl.zst");
    ASSERT(x && x->rule && !strcmp(x->rule, "--train 'pile_test*'"));
    /* the same rule again, and another of the same split, are fine */
    ASSERT_OK(pile_prep_inputs_set_split(&in, PILE_SPLIT_VAL, "notes.*", err), err);

    TEST("splits: a file named by rules of two splits is an error naming both; a rule naming nothing too");
    ASSERT_EQ(pile_prep_inputs_set_split(&in, PILE_SPLIT_TEST, "*.jsonl", err), PILE_EINVAL);
    ASSERT(contains(err->msg, "notes.jsonl' is named by both --val 'notes.jsonl' and --test '*.jsonl'"));
    ASSERT_EQ(pile_prep_inputs_set_split(&in, PILE_SPLIT_VAL, "nothing-*.jsonl", err), PILE_ENOENT);
    ASSERT(contains(err->msg, "--val 'nothing-*.jsonl' names no input"));
    pile_prep_inputs_free(&in);

    TEST("splits: the summary names each split's files, the first few and a count of a long list");
    for (int k = 0; k < 8; k++) {
        char name[64];
        snprintf(name, sizeof name, "many/%02d.jsonl", k);
        if (k == 0) {
            char *m = path2(tmp, "many");
            mkdir(m, 0755);
            free(m);
        }
        char *f = path2(tmp, name);
        ASSERT_EQ(write_bytes(f, "{\"text\": \"m\"}\n", 14), 0);
        free(f);
    }
    char *many = path2(tmp, "many");
    ASSERT_OK(pile_prep_inputs_add(&in, many, err), err);
    ASSERT_OK(pile_prep_inputs_set_split(&in, PILE_SPLIT_VAL, "07.jsonl", err), err);
    pile_prep_result res;
    ASSERT_OK(run_into(tmp, "many-out", &in, NULL, NULL, &res, NULL, err), err);
    ASSERT(contains(res.summary.data, "  train: 7 files: "));
    ASSERT(contains(res.summary.data, "many/04.jsonl and 2 more\n"));
    ASSERT(contains(res.summary.data, "  val: 1 file: "));
    ASSERT(contains(res.summary.data, "many/07.jsonl\n"));
    ASSERT(contains(res.summary.data, "  test: no file\n"));
    pile_prep_result_free(&res);
    pile_prep_inputs_free(&in);
    ASSERT_OK(pile_prep_inputs_add(&in, many, err), err);
    ASSERT_OK(run_into(tmp, "many-noval", &in, NULL, NULL, &res, NULL, err), err);
    ASSERT(contains(res.summary.data, "  val: no file"));
    ASSERT(contains(res.summary.data, "pile-trainer will hold out --val_fraction (1%) of train for validation"));
    pile_prep_result_free(&res);
    pile_prep_inputs_free(&in);
    free(many);
    free(dir);
    free(held);
    free(sub);
    free(far);
    free(near);
}

static void test_walk_names(const char *tmp)
{
    TEST("walk: .JSONL, .jsonl.ZST, .jsonl.zstd, .json.gz and JSON-lines .json are read; others passed over with a note");
    pile_buf text = {0};
    ASSERT_EQ(corpus_text("val.jsonl.zst", &text), 0);
    char *dir = path2(tmp, "walk"), *outd = path2(dir, "old-out");
    mkdir(dir, 0755);
    mkdir(outd, 0755);
    static const char *const plain[] = {"a.JSONL", "f.json"};
    static const char *const zst[] = {"b.jsonl.ZST", "c.jsonl.zstd"};
    for (size_t i = 0; i < 2; i++) {
        char *f = path2(dir, plain[i]), *g = path2(dir, zst[i]);
        ASSERT_EQ(write_bytes(f, text.data, text.len), 0);
        ASSERT_EQ(write_zstd(g, text.data, text.len), 0);
        free(f);
        free(g);
    }
    char *gz = path2(dir, "d.Json.Gz"), *pretty = path2(dir, "pretty.json"), *xz = path2(dir, "e.jsonl.xz"),
         *txt = path2(dir, "readme.txt"), *man = path2(outd, "manifest.json"), *tj = path2(outd, "tokenizer.json");
    ASSERT_EQ(write_gzip(gz, text.data, text.len), 0);
    ASSERT_EQ(write_bytes(pretty, "{\n  \"name\": \"x\"\n}\n", 18), 0);
    ASSERT_EQ(write_bytes(xz, "\xFD" "7zXZ", 5), 0);
    ASSERT_EQ(write_bytes(txt, "hello\n", 6), 0);
    static const char manifest[] = "{\n  \"format\": \"pile-prep manifest\",\n  \"version\": 1\n}\n";
    ASSERT_EQ(write_bytes(man, manifest, sizeof manifest - 1), 0);
    ASSERT_EQ(write_bytes(tj, "{\"model\": {}}\n", 14), 0);
    pile_prep_inputs in = {0};
    pile_err err_s, *err = &err_s;
    ASSERT_OK(pile_prep_inputs_add(&in, dir, err), err);
    ASSERT_EQ(in.n, 5);
    ASSERT(find_input(&in, "/a.JSONL") && find_input(&in, "/b.jsonl.ZST") && find_input(&in, "/c.jsonl.zstd") &&
           find_input(&in, "/d.Json.Gz") && find_input(&in, "/f.json"));
    ASSERT_EQ(in.n_notes, 3);
    ASSERT(contains(in.notes.data, "pretty.json': one JSON document, not JSON lines"));
    ASSERT(contains(in.notes.data, "e.jsonl.xz': pile-prep reads .jsonl and .json files"));
    ASSERT(contains(in.notes.data, "old-out': a pile-prep output folder"));
    ASSERT(!contains(in.notes.data, "readme.txt"));
    /* a pretty-printed .json given by name is taken as it is */
    ASSERT_OK(pile_prep_inputs_add(&in, pretty, err), err);
    ASSERT_EQ(in.n, 6);
    pile_prep_inputs_free(&in);

    TEST("walk: a linked folder with nested folders is walked; an empty folder is a clear error");
    char *nest = path2(tmp, "nest"), *deep = path2(tmp, "nest/a/b/c"), *deepf = path2(tmp, "nest/a/b/c/any name.jsonl"),
         *via = path2(tmp, "via"), *vlink = path2(tmp, "via/linked"), *empty = path2(tmp, "empty");
    for (const char *d0 = "nest\0nest/a\0nest/a/b\0nest/a/b/c\0via\0empty\0"; *d0; d0 += strlen(d0) + 1) {
        char *d = path2(tmp, d0);
        mkdir(d, 0755);
        free(d);
    }
    ASSERT_EQ(write_bytes(deepf, text.data, text.len), 0);
    ASSERT_EQ(symlink(nest, vlink), 0);
    ASSERT_OK(pile_prep_inputs_add(&in, via, err), err);
    ASSERT_EQ(in.n, 1);
    ASSERT(find_input(&in, "via/linked/a/b/c/any name.jsonl") != NULL);
    pile_prep_inputs_free(&in);
    ASSERT_EQ(pile_prep_inputs_add(&in, empty, err), PILE_ENOENT);
    ASSERT(contains(err->msg, "cannot find any input file (*.jsonl or *.json, plain, .zst, .zstd or .gz) in '"));
    free(nest);
    free(deep);
    free(deepf);
    free(via);
    free(vlink);
    free(empty);

    TEST("inputs: .jsonl, .jsonl.gz (also resumed), .json.gz, .jsonl.zst and .JSONL.ZSTD of the same text give byte-identical shards");
    static const char *const forms[] = {"x.jsonl", "x.jsonl.gz", "x.json.gz", "x.jsonl.zst", "x.JSONL.ZSTD"};
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        char sub[64];
        snprintf(sub, sizeof sub, "form-%zu", i);
        char *d = path2(tmp, sub);
        mkdir(d, 0755);
        char *f = path2(d, forms[i]);
        const char *z = strrchr(forms[i], '.');
        int rc = !strcasecmp(z, ".gz")                                ? write_gzip(f, text.data, text.len)
                 : !strcasecmp(z, ".zst") || !strcasecmp(z, ".zstd") ? write_zstd(f, text.data, text.len)
                                                                      : write_bytes(f, text.data, text.len);
        ASSERT_EQ(rc, 0);
        ASSERT_OK(pile_prep_inputs_add(&in, d, err), err);
        ASSERT_EQ(in.n, 1);
        snprintf(sub, sizeof sub, "form-out-%zu", i);
        pile_prep_result res;
        ASSERT_OK(run_into(tmp, sub, &in, NULL, NULL, &res, NULL, err), err);
        ASSERT_EQ(res.documents, 23);
        ASSERT_EQ(res.truncated_inputs, 0);
        pile_prep_result_free(&res);
        if (i > 0 && !same_shards(tmp, "form-out-0", sub)) PILE_FAIL_("%s: other shards than x.jsonl's", forms[i]);
        if (i == 1) { /* a .gz resumes as a .zst does: stopped after a shard, then the same bytes */
            char *stopped = path2(tmp, "form-gz-resume");
            pile_prep_opts o = base_opts(&in, stopped);
            o.max_length = 300;
            o.shard_bytes = 100 * 1024;
            o.stop_after_shards = 3;
            ASSERT_EQ(pile_prep_run(&o, &res, err), PILE_ELIMIT);
            pile_prep_result_free(&res);
            o.stop_after_shards = 0;
            ASSERT_OK(pile_prep_run(&o, &res, err), err);
            ASSERT_EQ(res.resumed, 1);
            ASSERT_EQ(res.shards_kept, 3);
            pile_prep_result_free(&res);
            ASSERT(same_shards(tmp, "form-out-0", "form-gz-resume"));
            free(stopped);
        }
        pile_prep_inputs_free(&in);
        free(f);
        free(d);
    }

    TEST("inputs: a truncated .gz is counted and reported as a truncated .zst is");
    char *td = path2(tmp, "trunc-gz"), *tf = path2(td, "cut.jsonl.gz"), *full = path2(td, "full.gz");
    mkdir(td, 0755);
    ASSERT_EQ(write_gzip(full, text.data, text.len), 0);
    pile_buf g = {0};
    ASSERT_OK(pile_fs_read_file(full, &g, err), err);
    unlink(full);
    ASSERT_EQ(write_bytes(tf, g.data, g.len / 2), 0);
    /* what zlib itself recovers from the cut file */
    pile_buf got = {0};
    gzFile zf = gzopen(tf, "rb");
    char buf[1 << 16];
    int k;
    while (zf && (k = gzread(zf, buf, sizeof buf)) > 0) pile_buf_append(&got, buf, (size_t)k);
    if (zf) gzclose(zf);
    int64_t complete = 0;
    for (size_t i = 0; i < got.len; i++) complete += got.data[i] == '\n';
    int tail = got.len && got.data[got.len - 1] != '\n';
    ASSERT(complete > 0 && complete < 23);
    ASSERT_OK(pile_prep_inputs_add(&in, td, err), err);
    pile_prep_result res;
    pile_buf log = {0};
    ASSERT_OK(run_into(tmp, "trunc-gz-out", &in, NULL, NULL, &res, &log, err), err);
    ASSERT_EQ(res.truncated_inputs, 1);
    ASSERT_EQ(res.documents, (uint64_t)complete);
    ASSERT(contains(log.data, "cut.jsonl.gz' is truncated: kept the complete lines before the cut"));
    char *tout = path2(tmp, "trunc-gz-out");
    pile_json *m = load_manifest(tout);
    ASSERT(m != NULL);
    ASSERT_EQ(jget(m, "stats.truncated_inputs"), 1);
    ASSERT_EQ(jget(m, "stats.lines"), complete + tail);
    ASSERT_EQ(jget(m, "stats.skipped_by_reason.cut"), tail);
    pile_json_free(m);
    free(tout);
    pile_prep_result_free(&res);
    pile_buf_free(&log);
    pile_buf_free(&got);
    pile_buf_free(&g);
    pile_prep_inputs_free(&in);
    free(td);
    free(tf);
    free(full);
    free(gz);
    free(pretty);
    free(xz);
    free(txt);
    free(man);
    free(tj);
    free(dir);
    free(outd);
    pile_buf_free(&text);
}

static void test_unreadable(const char *tmp)
{
    TEST("inputs: a dangling link or a FIFO named like an input is refused as an unreadable file is");
    char *dir = path2(tmp, "dangling"), *ok = path2(dir, "ok.jsonl"), *link = path2(dir, "gone.jsonl"),
         *other = path2(dir, "README");
    mkdir(dir, 0755);
    ASSERT_EQ(write_bytes(ok, "{\"text\": \"a\"}\n", 14), 0);
    ASSERT_EQ(symlink("/nonexistent/disk/gone.jsonl", other), 0); /* not named like an input: no matter */
    pile_prep_inputs in = {0};
    pile_err err_s, *err = &err_s;
    ASSERT_OK(pile_prep_inputs_add(&in, dir, err), err);
    ASSERT_EQ(in.n, 1);
    pile_prep_inputs_free(&in);
    ASSERT_EQ(symlink("/nonexistent/disk/gone.jsonl", link), 0);
    ASSERT_EQ(pile_prep_inputs_add(&in, dir, err), PILE_ENOENT);
    ASSERT(contains(err->msg, "gone.jsonl' (a symbolic link to '/nonexistent/disk/gone.jsonl'): No such file or directory"));
    ASSERT_EQ(pile_prep_inputs_add(&in, link, err), PILE_ENOENT); /* given by name */
    ASSERT(contains(err->msg, "a symbolic link to '/nonexistent/disk/gone.jsonl'"));
    unlink(link);

    char *fdir = path2(tmp, "fifo"), *fifo = path2(fdir, "pipe.jsonl.zst");
    mkdir(fdir, 0755);
    ASSERT_EQ(mkfifo(fifo, 0644), 0);
    ASSERT_EQ(pile_prep_inputs_add(&in, fdir, err), PILE_EINVAL);
    ASSERT(contains(err->msg, "cannot read '"));
    ASSERT(contains(err->msg, "pipe.jsonl.zst': a FIFO, not a regular file"));
    ASSERT_EQ(pile_prep_inputs_add(&in, fifo, err), PILE_EINVAL);
    ASSERT_EQ(in.n, 0);

    if (geteuid() == 0) {
        TEST("inputs: an unreadable file is refused before the run # SKIP running as root, permissions do not apply");
    } else {
        TEST("inputs: an unreadable file is refused before the run");
        ASSERT_EQ(chmod(ok, 0), 0);
        ASSERT_EQ(pile_prep_inputs_add(&in, dir, err), PILE_EIO);
        ASSERT(contains(err->msg, "ok.jsonl': Permission denied"));
        chmod(ok, 0644);
    }
    pile_prep_inputs_free(&in);
    free(dir);
    free(ok);
    free(link);
    free(other);
    free(fdir);
    free(fifo);
}

static void test_duplicates(const char *tmp)
{
    TEST("duplicates: one file given by two spellings, a link and its folder is read once, with a warning");
    char *dir = path2(tmp, "dup"), *a = path2(dir, "a.jsonl.zst"), *src = path2(g_corpus, "train/00.jsonl.zst"),
         *link = path2(dir, "b.jsonl.zst");
    mkdir(dir, 0755);
    ASSERT_EQ(copy_file(src, a), 0);
    ASSERT_EQ(symlink("a.jsonl.zst", link), 0);
    char other[4200];
    snprintf(other, sizeof other, "%s/./a.jsonl.zst", dir);
    pile_prep_inputs in = {0}, once = {0};
    pile_err err_s, *err = &err_s;
    ASSERT_OK(pile_prep_inputs_add(&once, a, err), err);
    pile_prep_result ref;
    ASSERT_OK(run_into(tmp, "dup-ref", &once, NULL, NULL, &ref, NULL, err), err);
    ASSERT_OK(pile_prep_inputs_add(&in, a, err), err);
    ASSERT_OK(pile_prep_inputs_add(&in, other, err), err);
    ASSERT_OK(pile_prep_inputs_add(&in, dir, err), err); /* a and the link b again */
    ASSERT_OK(pile_prep_inputs_add(&in, a, err), err);
    ASSERT_EQ(in.n, 5);
    pile_prep_result res;
    pile_buf log = {0};
    ASSERT_OK(run_into(tmp, "dup-out", &in, NULL, NULL, &res, &log, err), err);
    ASSERT_EQ(res.documents, ref.documents);
    ASSERT_EQ(res.lines, ref.lines);
    ASSERT(same_shards(tmp, "dup-ref", "dup-out"));
    char want[4400];
    snprintf(want, sizeof want, "warning: '%s' is the same file as '%s': read once", other, a);
    ASSERT(contains(log.data, want));
    snprintf(want, sizeof want, "warning: '%s' is the same file as '%s': read once", link, a);
    ASSERT(contains(log.data, want));
    char *out = path2(tmp, "dup-out");
    pile_json *m = load_manifest(out);
    ASSERT(m && pile_json_size(pile_json_get(m, "inputs")) == 1);
    pile_json_free(m);
    pile_prep_result_free(&res);
    pile_prep_result_free(&ref);
    pile_prep_inputs_free(&in);

    TEST("duplicates: one file in two splits is an error naming both spellings and splits");
    char *vlink = path2(dir, "val.jsonl.zst");
    ASSERT_EQ(symlink("a.jsonl.zst", vlink), 0); /* its name says val */
    ASSERT_OK(pile_prep_inputs_add(&in, a, err), err);
    ASSERT_OK(pile_prep_inputs_add(&in, vlink, err), err);
    ASSERT_EQ(run_into(tmp, "dup-splits", &in, NULL, NULL, &res, NULL, err), PILE_EINVAL);
    snprintf(want, sizeof want, "'%s' and '%s' are the same file, put in the train and the val split", a, vlink);
    ASSERT(contains(err->msg, want));
    pile_prep_result_free(&res);
    pile_prep_inputs_free(&in);
    pile_buf_free(&log);
    free(out);
    free(vlink);
    free(dir);
    free(a);
    free(src);
    free(link);
    pile_prep_inputs_free(&once);
}

static void test_resume_identity(const char *tmp)
{
    TEST("resume: inputs are compared as files, not by how their paths are spelled");
    char *dir = path2(tmp, "ident"), *a = path2(dir, "a.jsonl.zst"), *src = path2(g_corpus, "train/01.jsonl.zst");
    mkdir(dir, 0755);
    ASSERT_EQ(copy_file(src, a), 0);
    char other[4200];
    snprintf(other, sizeof other, "%s/../ident/./", dir); /* the same folder, spelled otherwise */
    pile_prep_inputs in = {0}, in2 = {0};
    pile_err err_s, *err = &err_s;
    ASSERT_OK(pile_prep_inputs_add(&in, dir, err), err);
    ASSERT_OK(pile_prep_inputs_add(&in2, other, err), err);
    ASSERT(in.n == 1 && in2.n == 1 && strcmp(in.v[0].path, in2.v[0].path) != 0);
    char *ref = path2(tmp, "ident-ref"), *out = path2(tmp, "ident-out");
    pile_prep_opts o = base_opts(&in, ref);
    o.max_length = 256;
    o.shard_bytes = 64 * 1024;
    pile_prep_result res;
    ASSERT_OK(pile_prep_run(&o, &res, err), err);
    pile_prep_result_free(&res);
    o.output_dir = out;
    o.stop_after_shards = 2;
    ASSERT_EQ(pile_prep_run(&o, &res, err), PILE_ELIMIT);
    pile_prep_result_free(&res);
    pile_prep_opts o2 = base_opts(&in2, out);
    o2.max_length = 256;
    o2.shard_bytes = 64 * 1024;
    ASSERT_OK(pile_prep_run(&o2, &res, err), err);
    ASSERT_EQ(res.resumed, 1);
    ASSERT_EQ(res.shards_kept, 2);
    pile_prep_result_free(&res);
    ASSERT(same_shards(tmp, "ident-ref", "ident-out"));
    /* finished: the first spelling is recognised too */
    o.stop_after_shards = 0;
    ASSERT_OK(pile_prep_run(&o, &res, err), err);
    ASSERT_EQ(res.already_complete, 1);
    pile_prep_result_free(&res);

    TEST("resume: a finished run with other options or inputs is not called interrupted");
    o.max_length = 255;
    ASSERT_EQ(pile_prep_run(&o, &res, err), PILE_EMISMATCH);
    ASSERT(contains(err->msg, "the options ('max_length') differ from those of the finished run there"));
    ASSERT(!contains(err->msg, "interrupted"));
    pile_prep_result_free(&res);
    o.max_length = 256;
    struct timespec when[2] = {{1000000000, 0}, {1000000000, 0}};
    ASSERT_EQ(utimensat(AT_FDCWD, a, when, 0), 0); /* the same path, another file now */
    pile_prep_inputs_free(&in);
    ASSERT_OK(pile_prep_inputs_add(&in, dir, err), err);
    o.inputs = in.v;
    ASSERT_EQ(pile_prep_run(&o, &res, err), PILE_EMISMATCH);
    ASSERT(contains(err->msg, "a.jsonl.zst')"));
    ASSERT(contains(err->msg, "finished run"));
    ASSERT(!contains(err->msg, "interrupted"));
    pile_prep_result_free(&res);
    pile_prep_inputs_free(&in);
    pile_prep_inputs_free(&in2);
    free(ref);
    free(out);
    free(dir);
    free(a);
    free(src);
}

/* {"text": T, "meta": {"pile_set_name": S}} -> {"id": i, "content": T, "src": {"name": S}} */
static int rekey(const char *text, pile_buf *out)
{
    out->len = 0;
    pile_err err_s, *err = &err_s;
    for (const char *l = text, *nl; (nl = strchr(l, '\n')) != NULL; l = nl + 1) {
        pile_json *root = NULL;
        if (pile_json_parse(l, (size_t)(nl - l), "line", &root, err)) return -1;
        size_t tn, sn;
        const char *t = pile_json_str(pile_json_get(root, "text"), &tn);
        const char *sub = pile_json_str(pile_json_get(pile_json_get(root, "meta"), "pile_set_name"), &sn);
        pile_buf_printf(out, "{\"id\": %zu, \"content\": ", out->len);
        pile_json_write_string(out, t, tn);
        pile_buf_append_str(out, ", \"src\": {\"name\": ");
        pile_json_write_string(out, sub, sn);
        pile_buf_append_str(out, "}}\n");
        pile_json_free(root);
    }
    return out->failed ? -1 : 0;
}

static void test_text_key(const char *tmp)
{
    TEST("--text-key content --subset-key src.name gives the shards of the same text under text and meta.pile_set_name");
    pile_buf text = {0}, other = {0};
    ASSERT_EQ(corpus_text("val.jsonl.zst", &text), 0);
    ASSERT_EQ(rekey(text.data, &other), 0);
    char *d1 = path2(tmp, "key-text"), *d2 = path2(tmp, "key-content");
    mkdir(d1, 0755);
    mkdir(d2, 0755);
    char *f1 = path2(d1, "x.jsonl"), *f2 = path2(d2, "x.jsonl");
    ASSERT_EQ(write_bytes(f1, text.data, text.len), 0);
    ASSERT_EQ(write_bytes(f2, other.data, other.len), 0);
    pile_prep_inputs i1 = {0}, i2 = {0};
    pile_err err_s, *err = &err_s;
    ASSERT_OK(pile_prep_inputs_add(&i1, d1, err), err);
    ASSERT_OK(pile_prep_inputs_add(&i2, d2, err), err);
    pile_prep_result res;
    ASSERT_OK(run_into(tmp, "key-out-text", &i1, NULL, NULL, &res, NULL, err), err);
    uint64_t docs = res.documents;
    pile_prep_result_free(&res);
    ASSERT_OK(run_into(tmp, "key-out-content", &i2, "content", "src.name", &res, NULL, err), err);
    ASSERT_EQ(res.documents, docs);
    ASSERT_EQ(res.skipped, 0);
    ASSERT(contains(res.summary.data, "Github"));
    pile_prep_result_free(&res);
    ASSERT(same_shards(tmp, "key-out-text", "key-out-content"));
    char *out = path2(tmp, "key-out-content");
    pile_json *m = load_manifest(out);
    const pile_json *opt = m ? pile_json_get(m, "options") : NULL;
    ASSERT_STR_EQ(pile_json_str(pile_json_get(opt, "text_key"), NULL), "content");
    ASSERT_STR_EQ(pile_json_str(pile_json_get(opt, "subset_key"), NULL), "src.name");
    pile_json_free(m);

    TEST("--text-key: another key on the same folder is refused as other options are; a bad key before any work");
    ASSERT_EQ(run_into(tmp, "key-out-content", &i2, "text", "src.name", &res, NULL, err), PILE_EMISMATCH);
    ASSERT(contains(err->msg, "('text_key')"));
    pile_prep_result_free(&res);
    ASSERT_EQ(run_into(tmp, "key-bad", &i2, "content..x", NULL, &res, NULL, err), PILE_EINVAL);
    ASSERT(contains(err->msg, "bad text key 'content..x'"));
    pile_prep_result_free(&res);
    struct stat st;
    char *bad = path2(tmp, "key-bad");
    ASSERT(stat(bad, &st) != 0);

    TEST("a run where every line is skipped is an error with the counts (and the likely key)");
    pile_buf log = {0};
    ASSERT_EQ(run_into(tmp, "key-none", &i2, NULL, NULL, &res, NULL, err), PILE_EFORMAT);
    char want[200];
    snprintf(want, sizeof want, "no documents: all %" PRIu64 " lines were skipped (no_text %" PRIu64 ")", docs, docs);
    ASSERT(contains(err->msg, want));
    ASSERT(contains(err->msg, "is the text under another member than 'text'? (--text-key)"));
    pile_prep_result_free(&res);
    char *blank = path2(d2, "blank.jsonl");
    ASSERT_EQ(write_bytes(blank, "\n  \n", 4), 0);
    pile_prep_inputs i3 = {0};
    ASSERT_OK(pile_prep_inputs_add(&i3, blank, err), err);
    ASSERT_EQ(run_into(tmp, "key-blank", &i3, NULL, NULL, &res, NULL, err), PILE_EFORMAT);
    ASSERT(contains(err->msg, "no documents: all 2 lines were skipped (blank 2)"));
    ASSERT(!contains(err->msg, "--text-key"));
    pile_prep_result_free(&res);
    /* a split with no document beside one that has some: a warning */
    char *vb = path2(d1, "val.jsonl");
    ASSERT_EQ(write_bytes(vb, "{\"x\": 1}\n", 9), 0);
    pile_prep_inputs_free(&i1);
    ASSERT_OK(pile_prep_inputs_add(&i1, d1, err), err);
    ASSERT_OK(run_into(tmp, "key-valnone", &i1, NULL, NULL, &res, &log, err), err);
    ASSERT(contains(log.data, "warning: every line of the val split was skipped: it has no shards"));
    pile_prep_result_free(&res);
    pile_buf_free(&log);
    pile_prep_inputs_free(&i1);
    pile_prep_inputs_free(&i2);
    pile_prep_inputs_free(&i3);
    pile_buf_free(&text);
    pile_buf_free(&other);
    free(d1);
    free(d2);
    free(f1);
    free(f2);
    free(out);
    free(bad);
    free(blank);
    free(vb);
}

/* Flips one byte of a file in place. */
static void flip_byte(const char *path, long off)
{
    FILE *f = fopen(path, "r+b");
    if (!f) return;
    int c = fseek(f, off, SEEK_SET) == 0 ? fgetc(f) : EOF;
    if (c != EOF && fseek(f, off, SEEK_SET) == 0) fputc(c ^ 0x5a, f);
    fclose(f);
}

/* Kept shards are checked on a rerun and the damaged ones written again
 * from where they started (a concat shard starts inside a document), alone,
 * to the same bytes: in an interrupted run (damaged and deleted shards) and
 * in a finished one. A manifest without start points refuses instead. Runs
 * after test_resume, whose reference it compares with. */
static void test_repair(const char *tmp, pile_pack pack)
{
    pile_prep_inputs in = {0};
    pile_err err_s, *err = &err_s;
    char *ref = resume_inputs(tmp, pack, &in, err); /* test_resume's uninterrupted run */
    char *out = path2(tmp, pack == PILE_PACK_CONCAT ? "repair-concat" : "repair-bf");
    pile_prep_opts o = resume_opts(&in, out, pack);
    pile_prep_result res;

    /* interrupted after 4 shards; shard 1 damaged, shard 3 deleted */
    o.stop_after_shards = 4;
    ASSERT_EQ(pile_prep_run(&o, &res, err), PILE_ELIMIT);
    pile_prep_result_free(&res);
    pile_json *m = load_manifest(out);
    ASSERT(m && pile_json_size(pile_json_get(m, "shards")) == 4);
    if (pack == PILE_PACK_CONCAT)
        ASSERT(m && jget(pile_json_at(pile_json_get(m, "shards"), 1), "start.token_offset") > 0); /* starts inside a document */
    pile_json_free(m);
    char *s1 = path2(out, "train-00001.shard"), *s3 = path2(out, "train-00003.shard");
    flip_byte(s1, 4096 + 7);
    unlink(s3);
    o.stop_after_shards = 0;
    ASSERT_OK(pile_prep_run(&o, &res, err), err);
    ASSERT_EQ(res.resumed, 1);
    ASSERT_EQ(res.files_checked, 4);
    ASSERT_EQ(res.files_redone, 2);
    ASSERT(res.bytes_checked > 0);
    pile_prep_result_free(&res);
    char why[4096 + 64];
    if (!same_folder(ref, out, why, sizeof why)) PILE_FAIL_("interrupted, two kept shards damaged, resumed: %s", why);

    /* finished: a kept shard damaged again */
    m = load_manifest(out);
    int64_t n = m ? (int64_t)pile_json_size(pile_json_get(m, "shards")) : 0;
    pile_json_free(m);
    ASSERT(n > 5);
    flip_byte(s1, 4096 + 300);
    ASSERT_OK(pile_prep_run(&o, &res, err), err);
    ASSERT_EQ(res.already_complete, 1);
    ASSERT_EQ(res.files_checked, (uint64_t)n);
    ASSERT_EQ(res.files_redone, 1);
    pile_prep_result_free(&res);
    if (!same_folder(ref, out, why, sizeof why)) PILE_FAIL_("finished, a shard damaged, rerun: %s", why);

    /* a manifest of an older pile-prep (no start points): refused, naming the shard and --force */
    char *mp = path2(out, "manifest.json");
    pile_buf text = {0}, fixed = {0};
    ASSERT_OK(pile_fs_read_file(mp, &text, err), err);
    for (size_t i = 0; text.data && i < text.len; i++) {
        if (!strncmp(text.data + i, ", \"start\": {", 12)) {
            while (i < text.len && text.data[i] != '}') i++;
            continue;
        }
        pile_buf_append(&fixed, text.data + i, 1);
    }
    ASSERT_OK(pile_fs_write_atomic(mp, fixed.data, fixed.len, err), err);
    flip_byte(s1, 4096 + 9);
    ASSERT_EQ(pile_prep_run(&o, &res, err), PILE_ECORRUPT);
    ASSERT(contains(err->msg, "train-00001.shard") && contains(err->msg, "--force"));
    pile_prep_result_free(&res);
    pile_buf_free(&text);
    pile_buf_free(&fixed);
    free(mp);
    free(s1);
    free(s3);
    free(ref);
    free(out);
    pile_prep_inputs_free(&in);
}

int main(void)
{
    snprintf(g_corpus, sizeof g_corpus, "%s/corpus", pile_test_shared());
    struct stat st;
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/train/00.jsonl.zst", g_corpus);
    if (stat(probe, &st) != 0) pile_test_skip_all("the corpus is absent (set PILE_SHARED)");
    char *tmp = make_tmpdir();
    if (!tmp) {
        printf("Bail out! cannot create a temporary folder\n");
        return 1;
    }

    test_bfd();
    test_inputs(tmp);
    test_split_names(tmp);
    test_split_rules(tmp);
    test_walk_names(tmp);
    test_unreadable(tmp);
    test_duplicates(tmp);
    test_resume_identity(tmp);
    test_text_key(tmp);

    TEST("concat, byte tokens: rows are the documents in order");
    test_pack(tmp, NULL, PILE_PACK_CONCAT, 2);
    TEST("best-fit, byte tokens: documents kept whole, rows <= max_length");
    test_pack(tmp, NULL, PILE_PACK_BEST_FIT, 2);
    char *wide = wide_bytes_tokenizer(tmp);
    TEST("concat, a vocabulary over 65,536 (4-byte ids), 1 and 3 threads: rows are the documents in order");
    test_pack(tmp, wide, PILE_PACK_CONCAT, 1);
    test_pack(tmp, wide, PILE_PACK_CONCAT, 3);
    TEST("best-fit, a vocabulary over 65,536 (4-byte ids), 3 threads: documents kept whole");
    test_pack(tmp, wide, PILE_PACK_BEST_FIT, 3);
    free(wide);

    char gpt2[4200];
    snprintf(gpt2, sizeof gpt2, "%s/fixtures/gpt2", pile_test_shared());
    pile_tokenizer *tok = NULL;
    pile_err err_s, *err = &err_s;
    int have_bpe = stat(gpt2, &st) == 0 && pile_tokenizer_open(&tok, gpt2, err) == 0;
    pile_tokenizer_close(tok);
    if (have_bpe) {
        TEST("concat, GPT-2: rows are tiktoken's reference ids in order");
        test_pack(tmp, gpt2, PILE_PACK_CONCAT, 2);
        TEST("best-fit, GPT-2: documents kept whole, rows <= max_length");
        test_pack(tmp, gpt2, PILE_PACK_BEST_FIT, 2);
    } else {
        TEST("GPT-2 packing # SKIP GPT-2 tokenizer not available");
    }

    test_bad(tmp);
    test_truncated(tmp);
    TEST("resume: an input path that is not UTF-8");
    test_odd_input(tmp, "odd\xff\xfename", 0);
    TEST("resume: an input modified before 1970");
    test_odd_input(tmp, "old-mtime", 1);
    test_worker_error(tmp);

    TEST("resume after every shard (concat) gives the same bytes");
    test_resume(tmp, PILE_PACK_CONCAT);
    TEST("resume after every shard (best-fit) gives the same bytes");
    test_resume(tmp, PILE_PACK_BEST_FIT);
    TEST("damaged or deleted kept shards are written again alone, same bytes (concat)");
    test_repair(tmp, PILE_PACK_CONCAT);
    TEST("damaged or deleted kept shards are written again alone, same bytes (best-fit)");
    test_repair(tmp, PILE_PACK_BEST_FIT);

    rm_rf(tmp);
    free(tmp);
    return TEST_DONE();
}
