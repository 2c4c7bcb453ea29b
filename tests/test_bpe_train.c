/* Tests of the byte-level BPE trainer: the merge loop on hand-built counts
 * whose answer is known (Hugging Face's own trainer test, overlapping runs,
 * ties, min_frequency), the piece map's pruning, and whole training runs on
 * the real validation corpus: a valid tokenizer.json, the same bytes for any
 * thread count, and a tokenizer that loads and round-trips the text. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bpe_train_internal.h"
#include "pile_fs.h"
#include "pile_json.h"
#include "pile_lines.h"
#include "pile_test.h"
#include "pile_tokenizer.h"

/* ASSERT_OK for an error record held by value (its address is never NULL). */
#define CHECK_OK(expr, e)                                                                   \
    do {                                                                                    \
        int rc_ = (expr);                                                                   \
        if (rc_ < 0) PILE_FAIL_("%s returned %d: %s", #expr, rc_, (e).msg);                \
    } while (0)

static pile_err no_err;

static pile__bpe_counts *counts_of(const char *const *pieces, const uint64_t *n, size_t k)
{
    pile__bpe_counts *c = pile__bpe_counts_create();
    for (size_t i = 0; c && i < k; i++)
        if (pile__bpe_counts_add(c, pieces[i], strlen(pieces[i]), n[i]) < 0) return NULL;
    return c;
}

/* "left right" of merge i as raw bytes. */
static void merge_str(const pile__bpe_model *m, size_t i, char *out, size_t cap)
{
    size_t k = 0;
    for (int side = 0; side < 2; side++) {
        uint32_t id = m->merges[2 * i + side];
        size_t len = (size_t)(m->str_off[id + 1] - m->str_off[id]);
        if (side) out[k++] = ' ';
        for (size_t j = 0; j < len && k + 1 < cap; j++) out[k++] = m->strs.data[m->str_off[id] + j];
    }
    out[k] = 0;
}

static void test_hf_example(void)
{
    /* tokenizers/src/models/bpe/trainer.rs, test_train: min_frequency 2 gives
     * exactly 're', 'are', 'is' ('are' before 'is': both count 2, and the tie
     * goes to the smaller left id, 'a' < 'i'). */
    TEST("merge loop: Hugging Face's trainer example");
    const char *w[] = {"roses", "are", "red", "voilets", "blue", "BERT", "is", "big", "and", "so", "GPT-2"};
    const uint64_t n[] = {1, 2, 1, 1, 1, 1, 2, 1, 1, 1, 1};
    pile__bpe_counts *c = counts_of(w, n, 11);
    const char *none[] = {NULL};
    pile_bpe_train_opts o = {.vocab_size = 1000, .min_frequency = 2, .specials = none, .n_specials = 0};
    pile__bpe_model m;
    pile_err err;
    CHECK_OK(pile__bpe_learn(c, &o, &m, &err), err);
    ASSERT_EQ(m.n_merges, 3);
    ASSERT_EQ(m.n_tokens, 256 + 3);
    char s[64];
    const char *want[] = {"r e", "a re", "i s"};
    for (size_t i = 0; i < 3 && i < m.n_merges; i++) {
        merge_str(&m, i, s, sizeof s);
        ASSERT_STR_EQ(s, want[i]);
        ASSERT_EQ(m.merge_ids[i], 256 + i);
    }
    pile__bpe_model_free(&m);
    pile__bpe_counts_free(c);
}

static void test_overlaps_and_min_frequency(void)
{
    /* "aaaa" x3: (a,a) occurs 3 times per word (9), merges left to right to
     * "aa aa", whose one pair then has count 3. "xy" x9 ties with (a,a) at 9
     * and loses on ids: 'a' (0x61) sorts before 'x'. */
    TEST("merge loop: overlapping runs, ties, min_frequency");
    const char *w[] = {"aaaa", "xy", "q"};
    const uint64_t n[] = {3, 9, 50};
    pile__bpe_counts *c = counts_of(w, n, 3);
    pile_bpe_train_opts o = {.vocab_size = 300, .min_frequency = 2};
    pile__bpe_model m;
    pile_err err;
    char s[64];
    CHECK_OK(pile__bpe_learn(c, &o, &m, &err), err);
    ASSERT_EQ(m.n_specials, 1);
    ASSERT_EQ(m.n_merges, 3);
    const char *want[] = {"a a", "x y", "aa aa"};
    for (size_t i = 0; i < 3 && i < m.n_merges; i++) {
        merge_str(&m, i, s, sizeof s);
        ASSERT_STR_EQ(s, want[i]);
    }
    pile__bpe_model_free(&m);

    o.min_frequency = 4; /* "aa aa" (3) now stays unmerged */
    CHECK_OK(pile__bpe_learn(c, &o, &m, &err), err);
    ASSERT_EQ(m.n_merges, 2);
    pile__bpe_model_free(&m);

    o.min_frequency = 2;
    o.vocab_size = 256 + 1 + 1; /* room for one learned token */
    CHECK_OK(pile__bpe_learn(c, &o, &m, &err), err);
    ASSERT_EQ(m.n_merges, 1);
    ASSERT_EQ(m.n_tokens, 258);
    pile__bpe_model_free(&m);

    o.vocab_size = 200;
    ASSERT_EQ(pile__bpe_learn(c, &o, &m, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "vocab_size 200") != NULL);
    pile__bpe_counts_free(c);
}

static void test_special_alias(void)
{
    /* A special token whose text reads as byte-level characters stands for
     * those bytes (Hugging Face keys both by the same string): a merge that
     * makes them reuses the special's id instead of adding a second entry. */
    TEST("merge loop: a merge that makes a special's bytes reuses its id");
    const char *w[] = {"ab", "xy"};
    const uint64_t n[] = {5, 3};
    pile__bpe_counts *c = counts_of(w, n, 2);
    const char *sp[] = {"<s>", "ab"};
    pile_bpe_train_opts o = {.vocab_size = 400, .specials = sp, .n_specials = 2};
    pile__bpe_model m;
    pile_err err;
    CHECK_OK(pile__bpe_learn(c, &o, &m, &err), err);
    ASSERT_EQ(m.n_merges, 2);
    ASSERT_EQ(m.n_tokens, 2 + 256 + 1);
    if (m.n_merges == 2) {
        ASSERT_EQ(m.merge_ids[0], 1);   /* (a,b) -> the special "ab" */
        ASSERT_EQ(m.merge_ids[1], 258); /* (x,y) -> a new token */
    }
    pile_buf js = {0};
    CHECK_OK(pile__bpe_model_json(&m, &js), no_err);
    pile_json *root = NULL;
    CHECK_OK(pile_json_parse(js.data, js.len, "model", &root, &err), err);
    if (root) {
        const pile_json *model = pile_json_get(root, "model");
        ASSERT_EQ(pile_json_size(pile_json_get(model, "vocab")), 259);
        ASSERT_STR_EQ(pile_json_str(pile_json_at(pile_json_get(model, "merges"), 0), NULL), "a b");
        pile_json_free(root);
    }
    pile_buf_free(&js);
    pile__bpe_model_free(&m);

    const char *bad[] = {"\xc4\xa0"}; /* U+0120, the character of the byte ' ' */
    o.specials = bad;
    o.n_specials = 1;
    ASSERT_EQ(pile__bpe_learn(c, &o, &m, &err), PILE_EINVAL);
    pile__bpe_counts_free(c);
}

static void test_special_alias_nonascii(void)
{
    /* The special "Ġab" stands for the bytes " ab", not for its UTF-8 text:
     * a later merge that extends it makes " abc" (Hugging Face's trainer, on
     * the same words: merges a+b, Ġ+ab, Ġab+c and the token "Ġabc" = 258). */
    TEST("merge loop: a merge that extends a special uses the bytes it stands for");
    const char *w[] = {" ab", " abc"};
    const uint64_t n[] = {10, 5};
    pile__bpe_counts *c = counts_of(w, n, 2);
    const char *sp[] = {"\xc4\xa0" "ab"};
    pile_bpe_train_opts o = {.vocab_size = 400, .specials = sp, .n_specials = 1};
    pile__bpe_model m;
    pile_err err;
    CHECK_OK(pile__bpe_learn(c, &o, &m, &err), err);
    ASSERT_EQ(m.n_merges, 3);
    ASSERT_EQ(m.n_tokens, 1 + 256 + 2);
    if (m.n_merges == 3 && m.n_tokens == 259) {
        ASSERT_EQ(m.merge_ids[1], 0);   /* (' ', ab) -> the special */
        ASSERT_EQ(m.merge_ids[2], 258); /* (special, c) -> " abc" */
        size_t len = (size_t)(m.str_off[259] - m.str_off[258]);
        ASSERT_EQ(len, 4);
        if (len == 4) ASSERT_MEM_EQ(m.strs.data + m.str_off[258], " abc", 4);
    }
    pile_buf js = {0};
    CHECK_OK(pile__bpe_model_json(&m, &js), no_err);
    pile_json *root = NULL;
    CHECK_OK(pile_json_parse(js.data, js.len, "model", &root, &err), err);
    if (root) {
        const pile_json *vocab = pile_json_get(pile_json_get(root, "model"), "vocab");
        int64_t id = -1;
        ASSERT(pile_json_int(pile_json_get(vocab, "\xc4\xa0" "abc"), &id));
        ASSERT_EQ(id, 258);
        pile_json_free(root);
    }
    pile_buf_free(&js);
    pile__bpe_model_free(&m);
    pile__bpe_counts_free(c);
}

static void test_prune(void)
{
    TEST("piece map: counts, absorb, prune");
    pile__bpe_counts *a = pile__bpe_counts_create(), *b = pile__bpe_counts_create();
    char piece[32];
    for (int i = 0; i < 50000; i++) {
        int k = snprintf(piece, sizeof piece, " p%d", i);
        CHECK_OK(pile__bpe_counts_add(i % 2 ? a : b, piece, (size_t)k, (uint64_t)(i % 7 + 1)), no_err);
    }
    CHECK_OK(pile__bpe_counts_add(a, " p0", 3, 1), no_err); /* " p0" is in b with 1: 2 in all */
    CHECK_OK(pile__bpe_counts_absorb(a, b), no_err);
    ASSERT_EQ(pile__bpe_counts_size(b), 0);
    ASSERT_EQ(pile__bpe_counts_size(a), 50000);
    size_t ones = 0;
    for (int i = 0; i < 50000; i++) ones += (i % 7 == 0) && i != 0;
    ASSERT_EQ(pile__bpe_counts_prune(a, 2), (long long)ones);
    ASSERT_EQ(pile__bpe_counts_size(a), 50000 - ones);
    size_t it = 0, len, seen = 0;
    const char *p;
    uint64_t n, sum = 0, want = 0;
    while (pile__bpe_counts_next(a, &it, &p, &len, &n)) {
        seen++;
        sum += n;
        if (len == 3 && memcmp(p, " p0", 3) == 0) ASSERT_EQ(n, 2);
    }
    for (int i = 0; i < 50000; i++) want += (i % 7) ? (uint64_t)(i % 7 + 1) : 0;
    ASSERT_EQ(seen, 50000 - ones);
    ASSERT_EQ(sum, want + 2);
    pile__bpe_counts_free(a);
    pile__bpe_counts_free(b);
}

/* ------------------------------------------------------------- real runs */

static char *slurp(const char *path, size_t *len)
{
    pile_buf b = {0};
    pile_err err;
    if (pile_fs_read_file(path, &b, &err) < 0) return NULL;
    *len = b.len;
    return b.data;
}

typedef struct docs {
    pile_buf text;
    size_t *ends;
    size_t n;
} docs;

static int read_docs(const char *path, docs *d)
{
    pile_lines *r;
    pile_err err;
    if (pile_lines_open(&r, path, NULL, &err) < 0) return -1;
    pile_jsonl_parser *p = pile_jsonl_parser_create();
    pile_line line;
    size_t cap = 0;
    while (pile_lines_next(r, &line, &err) == 1) {
        pile_jsonl_doc doc;
        if (line.status != PILE_LINE_COMPLETE) continue;
        if (pile_jsonl_parse(p, line.data, line.len, &doc, NULL, 0) != PILE_SKIP_NONE) continue;
        if (d->n == cap) d->ends = realloc(d->ends, (cap = cap ? cap * 2 : 64) * sizeof(size_t));
        pile_buf_append(&d->text, doc.text, doc.text_len);
        d->ends[d->n++] = d->text.len;
    }
    pile_jsonl_parser_free(p);
    pile_lines_close(r);
    return 0;
}

static void check_file(const char *path, uint32_t vocab_size, size_t *n_merges_out)
{
    pile_json *root = NULL;
    pile_err err;
    CHECK_OK(pile_json_parse_file(path, &root, &err), err);
    if (!root) return;
    const pile_json *model = pile_json_get(root, "model");
    const pile_json *vocab = model ? pile_json_get(model, "vocab") : NULL;
    const pile_json *merges = model ? pile_json_get(model, "merges") : NULL;
    const pile_json *added = pile_json_get(root, "added_tokens");
    ASSERT(vocab && merges && added);
    if (!vocab || !merges || !added) goto out;
    ASSERT_STR_EQ(pile_json_str(pile_json_get(model, "type"), NULL), "BPE");
    ASSERT_STR_EQ(pile_json_str(pile_json_get(pile_json_get(root, "pre_tokenizer"), "type"), NULL), "ByteLevel");
    ASSERT_EQ(pile_json_size(vocab), vocab_size);
    ASSERT_EQ(pile_json_size(added), 1);
    int64_t id = -1;
    ASSERT(pile_json_int(pile_json_get(pile_json_at(added, 0), "id"), &id));
    ASSERT_EQ(id, 0);
    ASSERT_STR_EQ(pile_json_str(pile_json_get(pile_json_at(added, 0), "content"), NULL), "<|endoftext|>");
    /* ids are 0..vocab_size-1, each once, in document order */
    for (size_t i = 0; i < pile_json_size(vocab); i++) {
        ASSERT(pile_json_int(pile_json_at(vocab, i), &id));
        if (id != (int64_t)i) {
            ASSERT_EQ(id, i);
            break;
        }
    }
    /* every merge: both parts and the result exist, the parts earlier;
     * distinct results are exactly the learned tokens */
    size_t nm = pile_json_size(merges), distinct = 0, bad = 0;
    uint8_t *made = calloc(vocab_size, 1);
    for (size_t i = 0; i < nm; i++) {
        size_t len;
        const char *m = pile_json_str(pile_json_at(merges, i), &len);
        const char *sp = m ? memchr(m, ' ', len) : NULL;
        if (!sp) {
            bad++;
            continue;
        }
        char left[512], both[1024];
        size_t ll = (size_t)(sp - m);
        if (ll >= sizeof left || len >= sizeof both) continue;
        memcpy(left, m, ll);
        left[ll] = 0;
        memcpy(both, m, ll);
        memcpy(both + ll, sp + 1, len - ll - 1);
        both[len - 1] = 0;
        int64_t ia = -1, ib = -1, iz = -1;
        const pile_json *ja = pile_json_get(vocab, left), *jb = pile_json_get(vocab, sp + 1),
                        *jz = pile_json_get(vocab, both);
        if (!ja || !jb || !jz || !pile_json_int(ja, &ia) || !pile_json_int(jb, &ib) || !pile_json_int(jz, &iz) ||
            ia >= iz || ib >= iz || iz < 257) {
            bad++;
            continue;
        }
        if (!made[iz]) made[iz] = 1, distinct++;
    }
    free(made);
    ASSERT_EQ(bad, 0);
    ASSERT_EQ(distinct, vocab_size - 256 - 1);
    ASSERT(nm >= distinct);
    *n_merges_out = nm;
out:
    pile_json_free(root);
}

static void test_real(const char *tmp)
{
    char val[4096], a[4200], b[4200], c[4200];
    snprintf(val, sizeof val, "%s/corpus/val.jsonl.zst", pile_test_shared());
    if (access(val, R_OK) != 0) {
        TEST("train on val.jsonl.zst # SKIP corpus absent");
        return;
    }
    snprintf(a, sizeof a, "%s/t1.json", tmp);
    snprintf(b, sizeof b, "%s/t2.json", tmp);
    snprintf(c, sizeof c, "%s/t3.json", tmp);
    const char *in[] = {val};
    pile_err err;

    TEST("train on val.jsonl.zst, vocab 1000: a valid tokenizer.json");
    pile_bpe_train_opts o = {.vocab_size = 1000, .threads = 1};
    CHECK_OK(pile_bpe_train(in, 1, &o, a, &err), err);
    size_t n_merges = 0;
    check_file(a, 1000, &n_merges);
    ASSERT(n_merges >= 1000 - 257);

    TEST("the same bytes with 1, 2 and 3 threads");
    size_t la = 0, lb = 0;
    o.threads = 2;
    CHECK_OK(pile_bpe_train(in, 1, &o, b, &err), err);
    char *da = slurp(a, &la), *db = slurp(b, &lb);
    ASSERT(da && db && la == lb && memcmp(da, db, la) == 0);
    free(db);
    o.threads = 3;
    CHECK_OK(pile_bpe_train(in, 1, &o, b, &err), err);
    db = slurp(b, &lb);
    ASSERT(da && db && la == lb && memcmp(da, db, la) == 0);
    free(db);
    free(da);

    TEST("with pruning (64 KB epochs, a 3000-piece cap): the same bytes for 1, 2, 3 threads");
    pile__bpe_limits lim = {.epoch_bytes = 64 << 10, .piece_cap = 3000};
    char *d1 = NULL;
    size_t l1 = 0;
    for (int th = 1; th <= 3; th++) {
        o.threads = th;
        CHECK_OK(pile__bpe_train_limits(in, 1, &o, &lim, c, &err), err);
        size_t lc = 0;
        char *dc = slurp(c, &lc);
        ASSERT(dc != NULL);
        if (th == 1) {
            d1 = dc, l1 = lc;
            size_t nm = 0;
            check_file(c, 1000, &nm);
            /* pieces seen once were dropped, so some pair counts differ */
            size_t lu = 0;
            char *du = slurp(a, &lu);
            ASSERT(du && (lu != lc || memcmp(du, dc, lc) != 0));
            free(du);
        } else {
            ASSERT(d1 && dc && l1 == lc && memcmp(d1, dc, lc) == 0);
            free(dc);
        }
    }
    free(d1);

    TEST("a high min_frequency stops merging early");
    o.min_frequency = 2000;
    CHECK_OK(pile_bpe_train(in, 1, &o, c, &err), err);
    pile_json *root = NULL;
    CHECK_OK(pile_json_parse_file(c, &root, &err), err);
    if (root) {
        const pile_json *model = pile_json_get(root, "model");
        size_t nm = pile_json_size(pile_json_get(model, "merges"));
        size_t nv = pile_json_size(pile_json_get(model, "vocab"));
        ASSERT(nm > 0 && nm < n_merges);
        ASSERT(nv < 1000 && nv >= 257 + 1);
        pile_json_free(root);
    }

    TEST("the result loads with pile_tokenizer_open and round-trips the corpus");
    pile_tokenizer *tok = NULL;
    CHECK_OK(pile_tokenizer_open(&tok, a, &err), err);
    if (tok) {
        ASSERT_EQ(pile_tokenizer_vocab_size(tok), 1000);
        ASSERT_EQ(pile_tokenizer_eot_id(tok), 0);
        docs d = {0};
        ASSERT_EQ(read_docs(val, &d), 0);
        ASSERT(d.n > 10);
        pile_encoder *enc = pile_encoder_create(tok);
        pile_ids ids = {0};
        pile_buf back = {0};
        size_t n_tok = 0, start = 0, mismatched = 0;
        for (size_t i = 0; enc && i < d.n; i++) {
            const char *t = d.text.data + start;
            size_t n = d.ends[i] - start;
            ids.len = 0;
            back.len = 0;
            if (pile_encoder_encode(enc, t, n, &ids, &err) < 0 ||
                pile_tokenizer_decode(tok, ids.data, ids.len, &back, &err) < 0 || back.len != n ||
                memcmp(back.data, t, n) != 0)
                mismatched++;
            n_tok += ids.len;
            start = d.ends[i];
        }
        ASSERT_EQ(mismatched, 0);
        ASSERT(n_tok > 0 && n_tok * 2 < d.text.len); /* 1000 tokens already halve the text */
        printf("# %zu bytes -> %zu tokens (%.2f bytes/token)\n", d.text.len, n_tok,
               (double)d.text.len / (double)(n_tok ? n_tok : 1));
        pile_ids_free(&ids);
        pile_buf_free(&back);
        pile_encoder_free(enc);
        pile_buf_free(&d.text);
        free(d.ends);
        pile_tokenizer_close(tok);
    }

    TEST("errors: a missing input is named, a tiny vocab is refused");
    const char *missing[] = {"no-such-file.jsonl"};
    o = (pile_bpe_train_opts){.vocab_size = 1000};
    ASSERT(pile_bpe_train(missing, 1, &o, c, &err) < 0);
    ASSERT(strstr(err.msg, "no-such-file.jsonl") != NULL);
    o.vocab_size = 10;
    ASSERT_EQ(pile_bpe_train(in, 1, &o, c, &err), PILE_EINVAL);
    ASSERT_EQ(pile_bpe_train(in, 0, &o, c, &err), PILE_EINVAL);
}

/* Tool mode, for tests/tok_train_ref.py (which compares with Hugging Face):
 *   test_bpe_train train OUT VOCAB THREADS INPUT...    pile_bpe_train
 *   test_bpe_train encode TOKENIZER INPUT              one line per input line:
 *       {"text": "...", "ids": [...]} for a document, null for a skipped line */
static int tool(int argc, char **argv)
{
    pile_err err;
    if (argc >= 6 && strcmp(argv[1], "train") == 0) {
        pile_bpe_train_opts o = {.vocab_size = (uint32_t)atoi(argv[3]), .threads = atoi(argv[4])};
        if (pile_bpe_train((const char *const *)argv + 5, (size_t)(argc - 5), &o, argv[2], &err) < 0) {
            fprintf(stderr, "error: %s\n", err.msg);
            return 1;
        }
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "encode") == 0) {
        pile_tokenizer *tok = NULL;
        pile_lines *r = NULL;
        if (pile_tokenizer_open(&tok, argv[2], &err) < 0 || pile_lines_open(&r, argv[3], NULL, &err) < 0) {
            fprintf(stderr, "error: %s\n", err.msg);
            pile_tokenizer_close(tok);
            return 1;
        }
        pile_encoder *enc = pile_encoder_create(tok);
        pile_jsonl_parser *p = pile_jsonl_parser_create();
        pile_line line;
        pile_ids ids = {0};
        pile_buf out = {0};
        int rc = 0;
        while ((rc = pile_lines_next(r, &line, &err)) == 1) {
            pile_jsonl_doc doc;
            out.len = 0;
            if (line.status != PILE_LINE_COMPLETE ||
                pile_jsonl_parse(p, line.data, line.len, &doc, NULL, 0) != PILE_SKIP_NONE) {
                puts("null");
                continue;
            }
            ids.len = 0;
            if ((rc = pile_encoder_encode(enc, doc.text, doc.text_len, &ids, &err)) < 0) break;
            pile_buf_append_str(&out, "{\"text\": ");
            pile_json_write_string(&out, doc.text, doc.text_len);
            pile_buf_append_str(&out, ", \"ids\": [");
            for (size_t i = 0; i < ids.len; i++) pile_buf_printf(&out, i ? ",%u" : "%u", ids.data[i]);
            pile_buf_append_str(&out, "]}\n");
            fwrite(out.data, 1, out.len, stdout);
        }
        if (rc < 0) fprintf(stderr, "error: %s\n", err.msg);
        pile_ids_free(&ids);
        pile_buf_free(&out);
        pile_jsonl_parser_free(p);
        pile_encoder_free(enc);
        pile_lines_close(r);
        pile_tokenizer_close(tok);
        return rc < 0;
    }
    fprintf(stderr, "usage: test_bpe_train [train OUT VOCAB THREADS INPUT... | encode TOKENIZER INPUT]\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc > 1) return tool(argc, argv);
    test_hf_example();
    test_overlaps_and_min_frequency();
    test_special_alias();
    test_special_alias_nonascii();
    test_prune();

    char tmp[4096];
    if (!pile_test_tmpdir(tmp, sizeof tmp, "bpe-train")) {
        TEST("make a temporary folder");
        ASSERT(0);
    } else {
        test_real(tmp);
        char cmd[sizeof tmp + 16];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
        if (system(cmd) != 0) printf("# could not remove %s\n", tmp);
    }
    return TEST_DONE();
}
