/* A loaded tokenizer written as a Hugging Face tokenizer.json (the
 * `tokenizers` library's format, what transformers' AutoTokenizer loads),
 * so that a checkpoint carries a tokenizer Python users load by its folder
 * and that encodes text as ours does. Built from the backend's own tables,
 * whatever file they came from:
 *  - bytes: a BPE over the 256 byte characters and no merges;
 *  - merges (GPT-2's vocab.bpe): the vocabulary and merges as they are;
 *  - ranks (tiktoken): tiktoken merges any two adjacent parts whose join
 *    is a token, the lowest-ranked join first, and a piece that is a token
 *    is that token. As a merge list (the conversion transformers' own
 *    TikTokenConverter makes): every split of every token into two tokens,
 *    ordered by the token's rank, and ignore_merges for whole pieces.
 *    Both pick the lowest rank, ties to the leftmost pair, with one
 *    exception neither file can express otherwise: two different splits of
 *    the same token both adjacent at once are ordered by position in
 *    tiktoken and by list order here.
 * Pre-tokenization: GPT-2's pattern as ByteLevel's own regex; another
 * pattern as a Split, rewritten for Oniguruma (tokenizers' engine), which
 * reads X{n,m}+ as a repetition of X{n,m} where PCRE2 reads a possessive
 * quantifier, and ^ / $ at line breaks. */
#include "bpe_internal.h"

#include <stdlib.h>
#include <string.h>

#include "pile_json.h"
#include "pile_utf8.h"

typedef struct hf_out {
    pile_buf *out;
    pile_buf key;      /* scratch: one token's byte-level text */
    uint32_t cp[256];  /* GPT-2's byte -> code point */
} hf_out;

/* Appends the byte-level characters of token id to h->key. */
static int key_append(hf_out *h, const pile__bpe *b, uint32_t id)
{
    const unsigned char *s = (const unsigned char *)b->bytes.data + b->off[id];
    for (size_t i = 0; i < b->len[id]; i++) {
        char u[4];
        PILE_FORWARD_IF_ERR(pile_buf_append(&h->key, u, pile_utf8_encode(h->cp[s[i]], u)));
    }
    return 0;
}

/* Appends the key as a JSON string and empties it. */
static int put_key(hf_out *h)
{
    int rc = pile_json_write_string(h->out, h->key.data ? h->key.data : "", h->key.len);
    h->key.len = 0;
    return rc;
}

/* "added_tokens": the special tokens, by id. */
static int put_specials(hf_out *h, const pile_tokenizer *tok)
{
    PILE_FORWARD_IF_ERR(pile_buf_append_str(h->out, "  \"added_tokens\": ["));
    size_t n = tok->n_specials, done = 0;
    uint32_t last = 0;
    /* a few specials: pick the next id each time rather than sort a copy */
    while (done < n) {
        size_t pick = n;
        for (size_t i = 0; i < n; i++) {
            uint32_t id = tok->specials[i].id;
            if ((done == 0 || id > last) && (pick == n || id < tok->specials[pick].id)) pick = i;
        }
        const pile__special *sp = &tok->specials[pick];
        PILE_FORWARD_IF_ERR(pile_buf_printf(h->out, "%s\n    {\"id\": %u, \"content\": ", done ? "," : "", sp->id));
        PILE_FORWARD_IF_ERR(pile_json_write_string(h->out, sp->text, strlen(sp->text)));
        PILE_FORWARD_IF_ERR(pile_buf_append_str(h->out, ", \"single_word\": false, \"lstrip\": false, \"rstrip\": "
                                                        "false, \"normalized\": false, \"special\": true}"));
        last = sp->id;
        done++;
    }
    return pile_buf_append_str(h->out, "\n  ],\n");
}

/* ------------------------------------------------------------ patterns */

/* Length of the escape at p[0] == '\\': \p{..}, \P{..}, \x{..} whole. */
static size_t escape_len(const char *p, size_t n)
{
    size_t k = 2;
    if (n > 2 && (p[1] == 'p' || p[1] == 'P' || p[1] == 'x') && p[2] == '{') {
        while (k < n && p[k] != '}') k++;
        if (k < n) k++;
    }
    return k > n ? n : k;
}

/* Length of the character class at p[0] == '[' (a ']' first is literal). */
static size_t class_len(const char *p, size_t n)
{
    size_t k = 1;
    if (k < n && p[k] == '^') k++;
    if (k < n && p[k] == ']') k++;
    while (k < n && p[k] != ']') k += p[k] == '\\' ? escape_len(p + k, n - k) : p[k] == '[' ? class_len(p + k, n - k) : 1;
    return k < n ? k + 1 : n;
}

/* Length of an interval {n}, {n,}, {n,m} at p[0] == '{', or 0 if it is not one (then '{' is a literal). */
static size_t interval_len(const char *p, size_t n)
{
    size_t k = 1, digits = 0;
    while (k < n && p[k] >= '0' && p[k] <= '9') k++, digits++;
    if (!digits) return 0;
    if (k < n && p[k] == ',') {
        k++;
        while (k < n && p[k] >= '0' && p[k] <= '9') k++;
    }
    return k < n && p[k] == '}' ? k + 1 : 0;
}

/* PCRE2's reading of pattern p (as the .tiktoken loader compiles it:
 * without multiline) spelled for Oniguruma: X{n,m}+ becomes (?>X{n,m}),
 * ^ becomes \A and $ becomes (?=\n?\z). Nested groups are copied through
 * the same rules. Returns the bytes of p consumed (all of it at depth 0). */
static size_t onig_spell(const char *p, size_t n, int depth, pile_buf *out, int *bad)
{
    size_t i = 0, atom = out->len; /* where the last atom starts in out */
    while (i < n && !*bad) {
        char c = p[i];
        if (c == ')' && depth > 0) return i;
        size_t at = out->len;
        if (c == '\\') {
            size_t k = escape_len(p + i, n - i);
            if (p[i + 1] == 'Q') *bad = 1; /* a quoted run would need its own rules */
            pile_buf_append(out, p + i, k);
            i += k;
        } else if (c == '[') {
            size_t k = class_len(p + i, n - i);
            pile_buf_append(out, p + i, k);
            i += k;
        } else if (c == '(') {
            pile_buf_append(out, "(", 1);
            i++;
            i += onig_spell(p + i, n - i, depth + 1, out, bad);
            if (i >= n) *bad = 1;
            pile_buf_append(out, ")", 1);
            i++;
        } else if (c == '^') {
            pile_buf_append_str(out, "\\A");
            i++;
        } else if (c == '$') {
            pile_buf_append_str(out, "(?=\\n?\\z)");
            i++;
        } else if (c == '{' && interval_len(p + i, n - i)) {
            size_t k = interval_len(p + i, n - i);
            if (i + k < n && p[i + k] == '+') {
                /* possessive interval: an atomic group around the atom */
                pile_buf_append(out, p + i, k);
                size_t len = out->len - atom;
                if (pile_buf_reserve(out, 4)) return i;
                memmove(out->data + atom + 3, out->data + atom, len);
                memcpy(out->data + atom, "(?>", 3);
                out->len += 3;
                pile_buf_append(out, ")", 1);
                i += k + 1;
            } else {
                pile_buf_append(out, p + i, k);
                i += k;
            }
            continue; /* a quantifier is not an atom */
        } else if (c == '*' || c == '+' || c == '?' || c == '|') {
            pile_buf_append(out, p + i, 1);
            i++;
            if (c == '|') atom = out->len;
            continue;
        } else {
            /* one character, with its UTF-8 continuation bytes */
            size_t k = 1;
            while (i + k < n && ((unsigned char)p[i + k] & 0xC0) == 0x80) k++;
            pile_buf_append(out, p + i, k);
            i += k;
        }
        atom = at;
    }
    if (depth > 0) *bad = 1; /* an unclosed group */
    return i;
}

static const char *behavior_name(int b)
{
    return b == PILE__BEH_REMOVED       ? "Removed"
           : b == PILE__BEH_MERGED_PREV ? "MergedWithPrevious"
           : b == PILE__BEH_MERGED_NEXT ? "MergedWithNext"
                                        : "Isolated";
}

/* "pre_tokenizer": each Split stage, then ByteLevel (with GPT-2's regex
 * when the last stage is GPT-2's pattern). */
static int put_pretok(hf_out *h, const pile__bpe *b, pile_err *err)
{
    pile_buf *o = h->out;
    pile_buf spelled = {0};
    int rc = 0, prefix = 0, gpt2 = 0;
    pile_buf_append_str(o, "  \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [");
    for (size_t i = 0; i < b->n_stages && !rc; i++) {
        const pile__split *st = &b->stages[i];
        int last = i + 1 == b->n_stages;
        if (st->kind == PILE__SPLIT_GPT2 && last) {
            gpt2 = 1;
            prefix = st->prefix_space;
            continue;
        }
        /* the loader's "split nothing" stage carries ByteLevel's prefix space */
        if (st->kind == PILE__SPLIT_REGEX && last && !strcmp(st->pattern, "(?!)")) {
            prefix = st->prefix_space;
            continue;
        }
        int bad = st->kind != PILE__SPLIT_REGEX || st->onig || st->prefix_space || !st->pattern[0];
        spelled.len = 0;
        if (!bad) onig_spell(st->pattern, strlen(st->pattern), 0, &spelled, &bad);
        if (bad || spelled.failed) {
            rc = spelled.failed ? pile_err_set(err, PILE_ENOMEM, "out of memory")
                                : pile_err_set(err, PILE_EINVAL,
                                               "cannot write pre-tokenizer pattern '%s' as a Hugging Face Split%s",
                                               st->pattern, st->onig ? " (it came from a tokenizer.json: use that file)"
                                                                     : "");
            break;
        }
        pile_buf_append_str(o, "\n    {\"type\": \"Split\", \"pattern\": {\"Regex\": ");
        pile_json_write_string(o, spelled.data, spelled.len);
        pile_buf_printf(o, "}, \"behavior\": \"%s\", \"invert\": false},", behavior_name(st->behavior));
    }
    pile_buf_free(&spelled);
    if (rc) return rc;
    pile_buf_printf(o,
                    "\n    {\"type\": \"ByteLevel\", \"add_prefix_space\": %s, \"trim_offsets\": true, "
                    "\"use_regex\": %s}\n  ]},\n",
                    prefix ? "true" : "false", gpt2 ? "true" : "false");
    return o->failed ? pile_err_set(err, PILE_ENOMEM, "out of memory") : 0;
}

/* -------------------------------------------------------------- merges */

typedef struct split3 {
    uint32_t token, left, right;
} split3;

static int by_token_left_right(const void *pa, const void *pb)
{
    const split3 *a = pa, *b = pb;
    if (a->token != b->token) return a->token < b->token ? -1 : 1;
    if (a->left != b->left) return a->left < b->left ? -1 : 1;
    return (a->right > b->right) - (a->right < b->right);
}

/* Every way each ranked token splits into two tokens, in rank order (ties
 * by the parts' ranks, as TikTokenConverter orders them). */
static int rank_merges(const pile__bpe *b, split3 **out, size_t *count, pile_err *err)
{
    size_t n = 0, cap = 0;
    split3 *m = NULL;
    for (uint32_t id = 0; id < b->h.vocab_size; id++) {
        if ((b->flags[id] & (PILE__TOK_MODEL | PILE__TOK_SPECIAL)) != PILE__TOK_MODEL || b->len[id] < 2) continue;
        const unsigned char *t = (const unsigned char *)b->bytes.data + b->off[id];
        for (uint32_t k = 1; k < b->len[id]; k++) {
            const pile__vslot *l = pile__bpe_vfind(b, t, k), *r = l ? pile__bpe_vfind(b, t + k, b->len[id] - k) : NULL;
            if (!r) continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 1 << 16;
                split3 *g = realloc(m, cap * sizeof *g);
                if (!g) {
                    free(m);
                    return pile_err_set(err, PILE_ENOMEM, "out of memory for the merges of %u tokens", b->h.vocab_size);
                }
                m = g;
            }
            m[n++] = (split3){id, l->id, r->id};
        }
    }
    qsort(m, n, sizeof *m, by_token_left_right);
    *out = m;
    *count = n;
    return 0;
}

/* The model token whose byte-level text is s (a special token's text in
 * the vocabulary would take its place), or UINT32_MAX. */
static uint32_t byte_level_token(const pile__bpe *b, const char *s, pile_buf *tmp)
{
    tmp->len = 0;
    for (size_t i = 0, n = strlen(s); i < n;) {
        unsigned cp;
        size_t k = pile_utf8_decode(s + i, n - i, &cp);
        int byte = k ? pile__bpe_cp_to_byte(cp) : -1;
        if (byte < 0) return UINT32_MAX;
        unsigned char c = (unsigned char)byte;
        if (pile_buf_append(tmp, &c, 1)) return UINT32_MAX;
        i += k;
    }
    const pile__vslot *v = tmp->len ? pile__bpe_vfind(b, (const unsigned char *)tmp->data, tmp->len) : NULL;
    return v ? v->id : UINT32_MAX;
}

/* "model": BPE over the byte-level vocabulary and the merges. The special
 * tokens are in the vocabulary too, under their own text: tokenizers gives
 * an added token the id the vocabulary has for it, and numbers the others
 * from the vocabulary's size on, which gaps in the ids (cl100k_base has
 * one below its specials) would shift. */
static int put_model(hf_out *h, const pile__bpe *b, pile_err *err)
{
    pile_buf *o = h->out;
    split3 *ranked = NULL;
    size_t n_ranked = 0;
    if (b->mode == PILE__BPE_RANKS) PILE_FORWARD_IF_ERR(rank_merges(b, &ranked, &n_ranked, err));
    int rc = 0;
#define TRY(x)                             \
    do {                                   \
        if ((rc = (x)) < 0) goto done;     \
    } while (0)
    TRY(pile_buf_printf(o,
                        "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": null,\n"
                        "    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n"
                        "    \"fuse_unk\": false,\n    \"byte_fallback\": false,\n    \"ignore_merges\": %s,\n"
                        "    \"vocab\": {",
                        b->mode == PILE__BPE_RANKS || b->ignore_merges ? "true" : "false"));
    int first = 1;
    for (uint32_t id = 0; id < b->h.vocab_size; id++) {
        if ((b->flags[id] & (PILE__TOK_MODEL | PILE__TOK_SPECIAL)) != PILE__TOK_MODEL) continue;
        TRY(pile_buf_append_str(o, first ? "\n      " : ",\n      "));
        TRY(key_append(h, b, id));
        TRY(put_key(h));
        TRY(pile_buf_printf(o, ": %u", id));
        first = 0;
    }
    for (size_t i = 0; i < b->h.n_specials; i++) {
        const pile__special *sp = &b->h.specials[i];
        uint32_t clash = byte_level_token(b, sp->text, &h->key);
        h->key.len = 0;
        if (clash != UINT32_MAX) {
            free(ranked);
            return pile_err_set(err, PILE_EINVAL,
                                "cannot write the tokenizer as a Hugging Face tokenizer.json: special token '%s' "
                                "(id %u) is spelled as token %u is",
                                sp->text, sp->id, clash);
        }
        TRY(pile_buf_append_str(o, first ? "\n      " : ",\n      "));
        TRY(pile_json_write_string(o, sp->text, strlen(sp->text)));
        TRY(pile_buf_printf(o, ": %u", sp->id));
        first = 0;
    }
    TRY(pile_buf_append_str(o, "\n    },\n    \"merges\": ["));
    size_t n = b->mode == PILE__BPE_RANKS ? n_ranked : b->n_merges;
    for (size_t i = 0; i < n; i++) {
        uint32_t l = ranked ? ranked[i].left : b->merges[2 * i], r = ranked ? ranked[i].right : b->merges[2 * i + 1];
        /* "left right": byte-level characters never include a space */
        TRY(pile_buf_append_str(o, i ? ",\n      " : "\n      "));
        TRY(key_append(h, b, l));
        TRY(pile_buf_append(&h->key, " ", 1));
        TRY(key_append(h, b, r));
        TRY(put_key(h));
    }
    TRY(pile_buf_append_str(o, "\n    ]\n  }\n}\n"));
#undef TRY
done:
    free(ranked);
    return rc < 0 ? pile_err_set(err, PILE_ENOMEM, "out of memory") : 0;
}

/* ----------------------------------------------------------------- API */

int pile_tokenizer_write_hf_json(const pile_tokenizer *tok, pile_buf *out, pile_err *err)
{
    hf_out h = {out, {0}, {0}};
    for (unsigned c = 0; c < 256; c++) h.cp[c] = pile__bpe_byte_to_cp(c);
    const int bytes = !strcmp(tok->vt->kind, "bytes");
    const pile__bpe *b = bytes ? NULL : (const pile__bpe *)tok;
    int rc = 0;
    if (b) {
        for (uint32_t id = 0; id < b->h.vocab_size && !rc; id++)
            if (b->flags[id] & PILE__TOK_ADDED)
                rc = pile_err_set(err, PILE_EINVAL,
                                  "cannot write the tokenizer as a Hugging Face tokenizer.json: its non-special added "
                                  "tokens came from a tokenizer.json (use that file)");
        if (rc) return rc;
    }
    pile_buf_append_str(out, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n");
    if ((rc = put_specials(&h, tok)) < 0) goto out;
    pile_buf_printf(out, "  \"normalizer\": %s,\n", b && b->nfc ? "{\"type\": \"NFC\"}" : "null");
    if (b) {
        if ((rc = put_pretok(&h, b, err)) < 0) goto out;
    } else {
        pile_buf_append_str(out, "  \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, "
                                 "\"trim_offsets\": true, \"use_regex\": false},\n");
    }
    pile_buf_append_str(out, "  \"post_processor\": null,\n"
                             "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": "
                             "true, \"use_regex\": true},\n");
    if (b) {
        rc = put_model(&h, b, err);
    } else {
        /* bytes: id i is byte i, no merges */
        pile_buf_append_str(out, "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": "
                                 "null,\n    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n"
                                 "    \"fuse_unk\": false,\n    \"byte_fallback\": false,\n    \"ignore_merges\": false,\n"
                                 "    \"vocab\": {");
        for (unsigned c = 0; c < 256; c++) {
            char u[4];
            pile_buf_append_str(out, c ? ",\n      " : "\n      ");
            pile_json_write_string(out, u, pile_utf8_encode(h.cp[c], u));
            pile_buf_printf(out, ": %u", c);
        }
        for (size_t i = 0; i < tok->n_specials; i++) {
            pile_buf_append_str(out, ",\n      ");
            pile_json_write_string(out, tok->specials[i].text, strlen(tok->specials[i].text));
            pile_buf_printf(out, ": %u", tok->specials[i].id);
        }
        pile_buf_append_str(out, "\n    },\n    \"merges\": []\n  }\n}\n");
    }
out:
    if (rc == 0 && (out->failed || h.key.failed)) rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
    else if (rc == PILE_ENOMEM) rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
    pile_buf_free(&h.key);
    return rc;
}
