/* GPT-2's encoder.json + vocab.bpe and Hugging Face tokenizer.json turned
 * into builder calls. Anything these formats allow that this backend cannot
 * reproduce exactly is refused with the file and the reason. */
#include "bpe_internal.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "pile_fs.h"
#include "pile_json.h"
#include "pile_utf8.h"

/* ------------------------------------------------- string -> id map */

/* A small open-addressing map from strings (borrowed, not copied) to ids,
 * for resolving merges written as token strings. */
typedef struct strmap {
    const char **key;
    size_t *klen;
    uint32_t *id;
    size_t mask;
} strmap;

static int strmap_init(strmap *m, size_t n)
{
    size_t size = 16;
    while (size < n * 2) size *= 2;
    m->key = calloc(size, sizeof *m->key);
    m->klen = calloc(size, sizeof *m->klen);
    m->id = calloc(size, sizeof *m->id);
    m->mask = size - 1;
    return m->key && m->klen && m->id ? 0 : PILE_ENOMEM;
}

static void strmap_free(strmap *m)
{
    free(m->key);
    free(m->klen);
    free(m->id);
}

/* Returns the id, or UINT32_MAX; with insert, adds (and returns UINT32_MAX if new). */
static uint32_t strmap_find(strmap *m, const char *k, size_t n, int insert, uint32_t id)
{
    size_t i = XXH3_64bits(k, n) & m->mask;
    for (; m->key[i]; i = (i + 1) & m->mask)
        if (m->klen[i] == n && memcmp(m->key[i], k, n) == 0) return m->id[i];
    if (insert) {
        m->key[i] = k;
        m->klen[i] = n;
        m->id[i] = id;
    }
    return UINT32_MAX;
}

/* GPT-2's printable form of bytes (a string of mapped code points) -> bytes. */
static int unmap_bytes(const char *s, size_t n, pile_buf *out)
{
    out->len = 0;
    if (!pile_utf8_valid(s, n)) return -1;
    for (size_t i = 0; i < n;) {
        unsigned cp;
        i += pile_utf8_decode(s + i, n - i, &cp);
        int b = pile__bpe_cp_to_byte(cp);
        if (b < 0) return -1;
        char c = (char)b;
        if (pile_buf_append(out, &c, 1)) return PILE_ENOMEM;
    }
    return 0;
}

/* ------------------------------------------------------ shared vocab */

/* Adds the tokens of a vocabulary object {"printable token": id, ...};
 * ids listed in `skip` (added tokens) may be unmappable. Fills map. */
static int add_vocab(pile__bpe *b, const pile_json *vocab, strmap *map, const uint32_t *skip, size_t n_skip,
                     const char *name, pile_err *err)
{
    if (!vocab || pile_json_type_of(vocab) != PILE_JSON_OBJECT)
        return pile_err_set(err, PILE_EFORMAT, "invalid tokenizer '%s': the vocabulary is not an object", name);
    size_t n = pile_json_size(vocab);
    if (strmap_init(map, n)) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    pile_buf tb = {0};
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        size_t klen;
        const char *key = pile_json_key_at(vocab, i, &klen);
        int64_t id;
        if (!pile_json_int(pile_json_at(vocab, i), &id) || id < 0 || id >= UINT32_MAX - 1) {
            rc = pile_err_set(err, PILE_EFORMAT, "invalid tokenizer '%s': token '%s' has no valid id", name, key);
            break;
        }
        if (strmap_find(map, key, klen, 1, (uint32_t)id) != UINT32_MAX) {
            rc = pile_err_set(err, PILE_EFORMAT, "invalid tokenizer '%s': token '%s' is listed twice", name, key);
            break;
        }
        int u = unmap_bytes(key, klen, &tb);
        if (u == PILE_ENOMEM) {
            rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
            break;
        }
        if (u < 0) {
            int is_added = 0;
            for (size_t k = 0; k < n_skip; k++) is_added |= skip[k] == (uint32_t)id;
            if (is_added) continue;
            rc = pile_err_set(err, PILE_EFORMAT,
                              "unsupported tokenizer '%s': token '%s' (id %lld) is not byte-level (GPT-2 byte "
                              "mapping expected)",
                              name, key, (long long)id);
            break;
        }
        rc = pile__bpe_add_token(b, (uint32_t)id, tb.data, tb.len, PILE__TOK_MODEL, name, err);
    }
    pile_buf_free(&tb);
    return rc;
}

static int add_merge_strs(pile__bpe *b, strmap *map, const char *l, size_t ln, const char *r, size_t rn, size_t i,
                          const char *name, pile_err *err)
{
    uint32_t a = strmap_find(map, l, ln, 0, 0), c = strmap_find(map, r, rn, 0, 0);
    if (a == UINT32_MAX || c == UINT32_MAX)
        return pile_err_set(err, PILE_EFORMAT, "invalid tokenizer '%s': merge %zu ('%.*s' '%.*s') uses a token not in "
                            "the vocabulary", name, i + 1, (int)ln, l, (int)rn, r);
    return pile__bpe_add_merge(b, a, c, err);
}

/* ------------------------------------------------------- GPT-2 folder */

/* GPT-2's two files from memory: enc (encoder.json) and bpe (vocab.bpe),
 * named enc_name and bpe_name in messages, `name` for the whole. */
static int load_gpt2(pile__bpe **out, const char *enc, size_t enc_len, const char *enc_name, const char *bpe,
                     size_t bpe_len, const char *bpe_name, const char *name, pile_err *err)
{
    pile_json *root = NULL;
    pile__bpe *b = NULL;
    strmap map = {0};
    int rc = pile_json_parse(enc, enc_len, enc_name, &root, err);
    if (rc == 0) rc = pile__bpe_create(&b, PILE__BPE_MERGES, err);
    if (rc == 0) rc = add_vocab(b, root, &map, NULL, 0, enc_name, err);
    /* GPT-2 lists <|endoftext|> in the vocabulary; it is the one special token. */
    uint32_t eot = rc == 0 ? strmap_find(&map, "<|endoftext|>", 13, 0, 0) : UINT32_MAX;
    if (rc == 0 && eot == UINT32_MAX)
        rc = pile_err_set(err, PILE_EFORMAT, "invalid tokenizer '%s': no <|endoftext|> token", enc_name);
    if (rc == 0) {
        b->flags[eot] &= (uint8_t)~PILE__TOK_MODEL;
        b->flags[eot] |= PILE__TOK_SPECIAL;
        pile__special *sp = calloc(1, sizeof *sp);
        if (sp) sp->text = strdup("<|endoftext|>");
        if (!sp || !sp->text) {
            free(sp);
            rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
        } else {
            sp->id = eot;
            b->h.specials = sp;
            b->h.n_specials = 1;
        }
    }
    size_t lineno = 0;
    for (size_t i = 0; rc == 0 && i < bpe_len; lineno++) {
        const char *line = bpe + i;
        const char *nl = memchr(line, '\n', bpe_len - i);
        size_t n = nl ? (size_t)(nl - line) : bpe_len - i;
        i += n + 1;
        if (n && line[n - 1] == '\r') n--;
        if (n == 0 || (lineno == 0 && line[0] == '#')) continue;
        const char *sp = memchr(line, ' ', n);
        if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - line))) {
            rc = pile_err_set(err, PILE_EFORMAT, "invalid merges file '%s': line %zu is not two tokens separated by a space",
                              bpe_name, lineno + 1);
            break;
        }
        rc = add_merge_strs(b, &map, line, (size_t)(sp - line), sp + 1, n - (size_t)(sp + 1 - line), b->n_merges,
                            bpe_name, err);
    }
    if (rc == 0) rc = pile__bpe_add_stage(b, PILE__SPLIT_GPT2, NULL, 0, PILE__BEH_ISOLATED, 0, 0, name, err);
    if (rc == 0) rc = pile__bpe_finish(b, name, err);
    strmap_free(&map);
    pile_json_free(root);
    if (rc) {
        pile__bpe_destroy(b);
        return rc;
    }
    *out = b;
    return 0;
}

int pile__bpe_load_gpt2_dir(pile__bpe **out, const char *dir, pile_err *err)
{
    pile_buf enc_path = {0}, bpe_path = {0}, enc = {0}, bpe = {0};
    int rc = 0;
    if (pile_fs_join(&enc_path, dir, "encoder.json") || pile_fs_join(&bpe_path, dir, "vocab.bpe"))
        rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
    uint64_t size;
    if (rc == 0 && (pile_fs_size(enc_path.data, &size, NULL) < 0 || pile_fs_size(bpe_path.data, &size, NULL) < 0))
        rc = pile_err_set(err, PILE_ENOENT, "cannot open tokenizer '%s': a tokenizer folder needs encoder.json and vocab.bpe",
                          dir);
    if (rc == 0) rc = pile_fs_read_file(enc_path.data, &enc, err);
    if (rc == 0) rc = pile_fs_read_file(bpe_path.data, &bpe, err);
    if (rc == 0)
        rc = load_gpt2(out, enc.data ? enc.data : "", enc.len, enc_path.data, bpe.data ? bpe.data : "", bpe.len,
                       bpe_path.data, dir, err);
    pile_buf_free(&enc_path);
    pile_buf_free(&bpe_path);
    pile_buf_free(&enc);
    pile_buf_free(&bpe);
    return rc;
}

int pile__bpe_load_gpt2_builtin(pile__bpe **out, pile_err *err)
{
    const void *enc, *bpe;
    size_t enc_len, bpe_len;
    pile_tokenizer_builtin_file("gpt2", 0, NULL, &enc, &enc_len);
    pile_tokenizer_builtin_file("gpt2", 1, NULL, &bpe, &bpe_len);
    return load_gpt2(out, enc, enc_len, "gpt2 (built in): encoder.json", bpe, bpe_len, "gpt2 (built in): vocab.bpe",
                     "gpt2", err);
}

/* ---------------------------------------------------- tokenizer.json */

static const char *json_str_or(const pile_json *obj, const char *key, size_t *len)
{
    const pile_json *v = obj ? pile_json_get(obj, key) : NULL;
    if (!v || pile_json_type_of(v) != PILE_JSON_STRING) return NULL;
    return pile_json_str(v, len);
}

/* A boolean member, or dflt when absent or null. */
static int json_bool_or(const pile_json *obj, const char *key, int dflt)
{
    const pile_json *v = pile_json_get(obj, key);
    if (!v || pile_json_type_of(v) != PILE_JSON_BOOL) return dflt;
    return pile_json_bool(v);
}

/* Sequences nest; real files nest one or two deep. A bound keeps a crafted
 * file from recursing through the stack (the JSON parser allows any depth). */
#define MAX_NESTING 32

static int load_normalizer(pile__bpe *b, const pile_json *n, int depth, const char *name, pile_err *err)
{
    if (!n || pile_json_type_of(n) == PILE_JSON_NULL) return 0;
    if (depth > MAX_NESTING)
        return pile_err_set(err, PILE_ELIMIT, "unsupported tokenizer '%s': normalizers nested more than %d deep", name,
                            MAX_NESTING);
    const char *type = json_str_or(n, "type", NULL);
    if (type && strcmp(type, "NFC") == 0) {
        b->nfc = 1;
        return 0;
    }
    if (type && strcmp(type, "Sequence") == 0) {
        const pile_json *list = pile_json_get(n, "normalizers");
        if (list && pile_json_type_of(list) == PILE_JSON_ARRAY) {
            for (size_t i = 0; i < pile_json_size(list); i++)
                PILE_FORWARD_IF_ERR(load_normalizer(b, pile_json_at(list, i), depth + 1, name, err));
            return 0;
        }
    }
    return pile_err_set(err, PILE_EFORMAT, "unsupported tokenizer '%s': normalizer '%s' (only NFC is supported)", name,
                        type ? type : "?");
}

static int escape_literal(const char *s, size_t n, pile_buf *out)
{
    for (size_t i = 0; i < n; i++) {
        if (strchr("\\^$.|?*+()[]{}", s[i]) && s[i] && pile_buf_append(out, "\\", 1)) return PILE_ENOMEM;
        if (pile_buf_append(out, s + i, 1)) return PILE_ENOMEM;
    }
    return 0;
}

/* Oniguruma (under Hugging Face tokenizers) reads X{n,m}+ as (?:X{n,m})+, a
 * repetition, where PCRE2 and tiktoken read a possessive quantifier. With
 * n == 1 that is X+; other counts are refused rather than matched
 * differently. Writes the PCRE2 spelling to out; -1 when unsupported. */
static int onig_intervals(const char *p, size_t n, pile_buf *out)
{
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            size_t k = i + 2;
            if ((p[i + 1] == 'p' || p[i + 1] == 'P' || p[i + 1] == 'x') && k < n && p[k] == '{') {
                while (k < n && p[k] != '}') k++;
                if (k < n) k++;
            }
            if (pile_buf_append(out, p + i, k - i)) return PILE_ENOMEM;
            i = k - 1;
            continue;
        }
        if (in_class) {
            if (c == ']') in_class = 0;
        } else if (c == '[') {
            in_class = 1;
            if (pile_buf_append(out, p + i, 1)) return PILE_ENOMEM;
            if (i + 1 < n && p[i + 1] == '^' && pile_buf_append(out, p + ++i, 1)) return PILE_ENOMEM;
            if (i + 1 < n && p[i + 1] == ']' && pile_buf_append(out, p + ++i, 1)) return PILE_ENOMEM;
            continue;
        } else if (c == '{') {
            size_t k = i + 1, lo_start = k;
            while (k < n && p[k] >= '0' && p[k] <= '9') k++;
            size_t lo_len = k - lo_start;
            if (k < n && p[k] == ',') {
                k++;
                while (k < n && p[k] >= '0' && p[k] <= '9') k++;
            }
            if (lo_len && k + 1 < n && p[k] == '}' && p[k + 1] == '+') {
                if (lo_len != 1 || p[lo_start] != '1') return -1;
                if (pile_buf_append(out, "+", 1)) return PILE_ENOMEM;
                i = k + 1;
                continue;
            }
        }
        if (pile_buf_append(out, p + i, 1)) return PILE_ENOMEM;
    }
    return 0;
}

static int load_pretok(pile__bpe *b, const pile_json *p, int depth, int *byte_level, const char *name, pile_err *err)
{
    const char *type = p ? json_str_or(p, "type", NULL) : NULL;
    if (!type) return pile_err_set(err, PILE_EFORMAT, "unsupported tokenizer '%s': no pre-tokenizer (byte-level BPE expected)", name);
    if (depth > MAX_NESTING)
        return pile_err_set(err, PILE_ELIMIT, "unsupported tokenizer '%s': pre-tokenizers nested more than %d deep",
                            name, MAX_NESTING);
    if (*byte_level)
        return pile_err_set(err, PILE_EFORMAT, "unsupported tokenizer '%s': pre-tokenizer '%s' after ByteLevel", name, type);
    if (strcmp(type, "Sequence") == 0) {
        const pile_json *list = pile_json_get(p, "pretokenizers");
        if (!list || pile_json_type_of(list) != PILE_JSON_ARRAY)
            return pile_err_set(err, PILE_EFORMAT, "invalid tokenizer '%s': Sequence without pretokenizers", name);
        for (size_t i = 0; i < pile_json_size(list); i++)
            PILE_FORWARD_IF_ERR(load_pretok(b, pile_json_at(list, i), depth + 1, byte_level, name, err));
        return 0;
    }
    if (strcmp(type, "ByteLevel") == 0) {
        *byte_level = 1;
        /* Defaults as in tokenizers' ByteLevel::default(). */
        int prefix = json_bool_or(p, "add_prefix_space", 1), regex = json_bool_or(p, "use_regex", 1);
        if (regex) return pile__bpe_add_stage(b, PILE__SPLIT_GPT2, NULL, 0, PILE__BEH_ISOLATED, prefix, 0, name, err);
        if (prefix) {
            /* The prefix space without a split: a stage that splits nothing. */
            return pile__bpe_add_stage(b, PILE__SPLIT_REGEX, "(?!)", 4, PILE__BEH_ISOLATED, 1, 0, name, err);
        }
        return 0;
    }
    if (strcmp(type, "Split") == 0) {
        const pile_json *pat = pile_json_get(p, "pattern");
        size_t plen = 0;
        const char *re = json_str_or(pat, "Regex", &plen), *lit = json_str_or(pat, "String", &plen);
        const char *beh = json_str_or(p, "behavior", NULL);
        int behavior = -1;
        if (beh && strcmp(beh, "Isolated") == 0) behavior = PILE__BEH_ISOLATED;
        if (beh && strcmp(beh, "Removed") == 0) behavior = PILE__BEH_REMOVED;
        if (beh && strcmp(beh, "MergedWithPrevious") == 0) behavior = PILE__BEH_MERGED_PREV;
        if (beh && strcmp(beh, "MergedWithNext") == 0) behavior = PILE__BEH_MERGED_NEXT;
        if ((!re && !lit) || behavior < 0 || json_bool_or(p, "invert", 0))
            return pile_err_set(err, PILE_EFORMAT,
                                "unsupported tokenizer '%s': Split needs a Regex or String pattern, behavior Isolated, "
                                "Removed, MergedWithPrevious or MergedWithNext, and invert false",
                                name);
        if (re) {
            pile_buf fixed = {0};
            int o = onig_intervals(re, plen, &fixed);
            int rc = o == PILE_ENOMEM ? pile_err_set(err, PILE_ENOMEM, "out of memory")
                     : o < 0 ? pile_err_set(err, PILE_EFORMAT,
                                            "unsupported tokenizer '%s': pattern '%s' has X{n,m}+ with n != 1, which "
                                            "Oniguruma reads as a repetition",
                                            name, re)
                             : pile__bpe_add_stage(b, PILE__SPLIT_REGEX, fixed.data ? fixed.data : "", fixed.len,
                                                   behavior, 0, 1, name, err);
            pile_buf_free(&fixed);
            return rc;
        }
        pile_buf esc = {0};
        if (escape_literal(lit, plen, &esc)) {
            pile_buf_free(&esc);
            return pile_err_set(err, PILE_ENOMEM, "out of memory");
        }
        int rc = pile__bpe_add_stage(b, PILE__SPLIT_REGEX, esc.data ? esc.data : "", esc.len, behavior, 0, 0, name, err);
        pile_buf_free(&esc);
        return rc;
    }
    return pile_err_set(err, PILE_EFORMAT,
                        "unsupported tokenizer '%s': pre-tokenizer '%s' (ByteLevel, Split and Sequence are supported)",
                        name, type);
}

static int load_hf(pile__bpe **out, const pile_json *root, const char *name, pile_err *err)
{
    const pile_json *model = pile_json_get(root, "model");
    if (!model || pile_json_type_of(model) != PILE_JSON_OBJECT)
        return pile_err_set(err, PILE_EFORMAT, "invalid tokenizer '%s': no \"model\" object", name);
    const char *type = json_str_or(model, "type", NULL);
    if (type ? strcmp(type, "BPE") != 0 : !pile_json_get(model, "merges"))
        return pile_err_set(err, PILE_EFORMAT, "unsupported tokenizer '%s': model type '%s' (only byte-level BPE is supported)",
                            name, type ? type : "?");
    const pile_json *vocab = pile_json_get(model, "vocab"), *merges = pile_json_get(model, "merges");
    if (!merges || pile_json_type_of(merges) != PILE_JSON_ARRAY)
        return pile_err_set(err, PILE_EFORMAT, "invalid tokenizer '%s': the BPE model has no merges list", name);
    const pile_json *drop = pile_json_get(model, "dropout");
    if (drop && pile_json_type_of(drop) == PILE_JSON_NUMBER && pile_json_num(drop) != 0)
        return pile_err_set(err, PILE_EFORMAT, "unsupported tokenizer '%s': BPE dropout makes encoding random", name);
    const char *affix[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (size_t i = 0; i < 2; i++) {
        size_t len = 0;
        if (json_str_or(model, affix[i], &len) && len)
            return pile_err_set(err, PILE_EFORMAT, "unsupported tokenizer '%s': %s is not byte-level BPE", name, affix[i]);
    }

    /* Added tokens: their ids first, as their vocabulary entries may not be byte-level text. */
    const pile_json *added = pile_json_get(root, "added_tokens");
    size_t n_added = added && pile_json_type_of(added) == PILE_JSON_ARRAY ? pile_json_size(added) : 0;
    uint32_t *added_ids = calloc(n_added + 1, sizeof *added_ids);
    if (!added_ids) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    int rc = 0;
    for (size_t i = 0; i < n_added && rc == 0; i++) {
        int64_t id;
        const pile_json *a = pile_json_at(added, i);
        if (!pile_json_int(pile_json_get(a, "id"), &id) || id < 0 || id >= UINT32_MAX - 1 ||
            !json_str_or(a, "content", NULL))
            rc = pile_err_set(err, PILE_EFORMAT, "invalid tokenizer '%s': added token %zu needs an id and a content", name,
                              i + 1);
        else
            added_ids[i] = (uint32_t)id;
    }

    pile__bpe *b = NULL;
    strmap map = {0};
    if (rc == 0) rc = pile__bpe_create(&b, PILE__BPE_MERGES, err);
    if (rc == 0) b->ignore_merges = json_bool_or(model, "ignore_merges", 0);
    if (rc == 0) rc = add_vocab(b, vocab, &map, added_ids, n_added, name, err);
    for (size_t i = 0; rc == 0 && i < pile_json_size(merges); i++) {
        const pile_json *m = pile_json_at(merges, i);
        size_t len, l2;
        const char *s;
        if (pile_json_type_of(m) == PILE_JSON_STRING) {
            s = pile_json_str(m, &len);
            const char *sp = memchr(s, ' ', len);
            if (!sp || memchr(sp + 1, ' ', len - (size_t)(sp + 1 - s))) {
                rc = pile_err_set(err, PILE_EFORMAT, "invalid tokenizer '%s': merge %zu is not two tokens separated by a space",
                                  name, i + 1);
                break;
            }
            rc = add_merge_strs(b, &map, s, (size_t)(sp - s), sp + 1, len - (size_t)(sp + 1 - s), i, name, err);
        } else if (pile_json_type_of(m) == PILE_JSON_ARRAY && pile_json_size(m) == 2 &&
                   pile_json_type_of(pile_json_at(m, 0)) == PILE_JSON_STRING &&
                   pile_json_type_of(pile_json_at(m, 1)) == PILE_JSON_STRING) {
            s = pile_json_str(pile_json_at(m, 0), &len);
            const char *t = pile_json_str(pile_json_at(m, 1), &l2);
            rc = add_merge_strs(b, &map, s, len, t, l2, i, name, err);
        } else {
            rc = pile_err_set(err, PILE_EFORMAT, "invalid tokenizer '%s': merge %zu is neither \"a b\" nor [\"a\", \"b\"]",
                              name, i + 1);
        }
    }
    for (size_t i = 0; rc == 0 && i < n_added; i++) {
        const pile_json *a = pile_json_at(added, i);
        size_t len;
        const char *content = json_str_or(a, "content", &len);
        if (json_bool_or(a, "special", 0)) {
            /* Special tokens are never matched in document text. */
            rc = pile__bpe_add_special(b, content, len, added_ids[i], name, err);
            continue;
        }
        if (json_bool_or(a, "single_word", 0) || json_bool_or(a, "lstrip", 0) || json_bool_or(a, "rstrip", 0)) {
            rc = pile_err_set(err, PILE_EFORMAT,
                              "unsupported tokenizer '%s': added token '%s' uses single_word, lstrip or rstrip", name,
                              content);
            break;
        }
        rc = pile__bpe_add_token(b, added_ids[i], content, len, PILE__TOK_ADDED, name, err);
    }
    if (rc == 0) rc = load_normalizer(b, pile_json_get(root, "normalizer"), 0, name, err);
    int byte_level = 0;
    if (rc == 0) rc = load_pretok(b, pile_json_get(root, "pre_tokenizer"), 0, &byte_level, name, err);
    if (rc == 0 && !byte_level)
        rc = pile_err_set(err, PILE_EFORMAT, "unsupported tokenizer '%s': no ByteLevel pre-tokenizer (byte-level BPE expected)",
                          name);
    if (rc == 0 && b->n_stages == 0) {
        /* ByteLevel without its regex and nothing before it: the whole text is one piece. */
        rc = pile__bpe_add_stage(b, PILE__SPLIT_REGEX, "(?!)", 4, PILE__BEH_ISOLATED, 0, 0, name, err);
    }
    if (rc == 0) rc = pile__bpe_finish(b, name, err);
    strmap_free(&map);
    free(added_ids);
    if (rc) {
        pile__bpe_destroy(b);
        return rc;
    }
    *out = b;
    return 0;
}

int pile__bpe_load_hf_json(pile__bpe **out, const char *path, pile_err *err)
{
    pile_json *root = NULL;
    PILE_FORWARD_IF_ERR(pile_json_parse_file(path, &root, err));
    int rc = pile_json_type_of(root) == PILE_JSON_OBJECT
                 ? load_hf(out, root, path, err)
                 : pile_err_set(err, PILE_EFORMAT, "invalid tokenizer '%s': not a JSON object", path);
    pile_json_free(root);
    return rc;
}
