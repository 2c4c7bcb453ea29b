/* The byte-level BPE backend: the builder every loader feeds (tokens by id,
 * merges, pre-tokenization stages, specials), the lookup tables built from
 * it, the fingerprint, and the spec dispatch. Encoding lives in
 * bpe_encode.c, the file formats in bpe_load.c. */
#include "bpe_internal.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "pile_fs.h"

/* GPT-2's pattern, and tiktoken's faster spelling of the same language. */
static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char r50k_pattern[] =
    "'(?:[sdmt]|ll|ve|re)| ?\\p{L}++| ?\\p{N}++| ?[^\\s\\p{L}\\p{N}]++|\\s++$|\\s+(?!\\S)|\\s";

int pile__bpe_is_gpt2_pattern(const char *p, size_t n)
{
    return (n == sizeof gpt2_pattern - 1 && memcmp(p, gpt2_pattern, n) == 0) ||
           (n == sizeof r50k_pattern - 1 && memcmp(p, r50k_pattern, n) == 0);
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the
 * other 68 bytes to U+0100.. in byte order. */
static int byte_printable(unsigned b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t pile__bpe_byte_to_cp(unsigned byte)
{
    if (byte_printable(byte)) return byte;
    uint32_t k = 0;
    for (unsigned b = 0; b < byte; b++) k += !byte_printable(b);
    return 256 + k;
}

int pile__bpe_cp_to_byte(uint32_t cp)
{
    if (cp < 256) return byte_printable(cp) ? (int)cp : -1;
    if (cp >= 256 + 68) return -1;
    uint32_t k = cp - 256;
    for (unsigned b = 0; b < 256; b++) {
        if (!byte_printable(b) && k-- == 0) return (int)b;
    }
    return -1;
}

/* ------------------------------------------------------------ building */

int pile__bpe_create(pile__bpe **out, int mode, pile_err *err)
{
    pile__bpe *b = calloc(1, sizeof *b);
    if (!b) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    b->mode = mode;
    b->h.eot_id = UINT32_MAX;
    *out = b;
    return 0;
}

void pile__bpe_destroy(pile__bpe *b)
{
    if (!b) return;
    pile__tok_free_header(&b->h);
    free(b->off);
    free(b->len);
    free(b->flags);
    pile_buf_free(&b->bytes);
    free(b->merges);
    free(b->vtab);
    free(b->ptab);
    free(b->byte_pair);
    for (size_t i = 0; i < b->n_stages; i++) {
        free(b->stages[i].pattern);
        pcre2_code_free(b->stages[i].re);
    }
    free(b->added);
    free(b);
}

#define BPE_MAX_IDS (1u << 22)

static int grow_ids(pile__bpe *b, uint32_t id, const char *name, pile_err *err)
{
    if (id < b->cap_ids) return 0;
    /* Ids index dense per-id arrays, so a file naming one huge id would make
     * us allocate gigabytes: the largest real vocabularies have ~262k ids. */
    if (id >= BPE_MAX_IDS)
        return pile_err_set(err, PILE_ELIMIT, "invalid tokenizer '%s': token id %u is too large (ids must be below %u)",
                            name, id, BPE_MAX_IDS);
    uint32_t cap = b->cap_ids ? b->cap_ids : 1024;
    while (cap <= id) cap = cap > UINT32_MAX / 2 ? UINT32_MAX - 1 : cap * 2;
    uint32_t *off = realloc(b->off, cap * sizeof *off);
    if (off) b->off = off;
    uint32_t *len = realloc(b->len, cap * sizeof *len);
    if (len) b->len = len;
    uint8_t *fl = realloc(b->flags, cap);
    if (fl) b->flags = fl;
    if (!off || !len || !fl) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    memset(fl + b->cap_ids, 0, cap - b->cap_ids);
    memset(len + b->cap_ids, 0, (cap - b->cap_ids) * sizeof *len);
    memset(off + b->cap_ids, 0, (cap - b->cap_ids) * sizeof *off);
    b->cap_ids = cap;
    return 0;
}

static int set_bytes(pile__bpe *b, uint32_t id, const void *bytes, size_t len, pile_err *err)
{
    if (len > UINT32_MAX || b->bytes.len + len > UINT32_MAX)
        return pile_err_set(err, PILE_ELIMIT, "token bytes exceed 4 GiB");
    b->off[id] = (uint32_t)b->bytes.len;
    b->len[id] = (uint32_t)len;
    if (pile_buf_append(&b->bytes, bytes, len)) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    if (id >= b->h.vocab_size) b->h.vocab_size = id + 1;
    return 0;
}

int pile__bpe_add_token(pile__bpe *b, uint32_t id, const void *bytes, size_t len, unsigned flags, const char *name,
                        pile_err *err)
{
    PILE_FORWARD_IF_ERR(grow_ids(b, id, name, err));
    if (b->flags[id] & PILE__TOK_PRESENT) {
        /* An added token may name an id the model vocabulary already has:
         * it keeps the model's place and decodes as the added text. */
        if (!(flags & (PILE__TOK_ADDED | PILE__TOK_SPECIAL)) || (b->flags[id] & (PILE__TOK_ADDED | PILE__TOK_SPECIAL)))
            return pile_err_set(err, PILE_EFORMAT, "invalid tokenizer '%s': token id %u is defined twice", name, id);
    }
    PILE_FORWARD_IF_ERR(set_bytes(b, id, bytes, len, err));
    b->flags[id] |= (uint8_t)(flags | PILE__TOK_PRESENT);
    return 0;
}

int pile__bpe_add_special(pile__bpe *b, const char *text, size_t len, uint32_t id, const char *name, pile_err *err)
{
    PILE_FORWARD_IF_ERR(pile__bpe_add_token(b, id, text, len, PILE__TOK_SPECIAL, name, err));
    /* A special listed in the model vocabulary too is still only special. */
    b->flags[id] &= (uint8_t)~PILE__TOK_MODEL;
    pile__special *sp = realloc(b->h.specials, (b->h.n_specials + 1) * sizeof *sp);
    if (!sp) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    b->h.specials = sp;
    char *t = malloc(len + 1);
    if (!t) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    memcpy(t, text, len);
    t[len] = 0;
    sp[b->h.n_specials].text = t;
    sp[b->h.n_specials].id = id;
    b->h.n_specials++;
    return 0;
}

int pile__bpe_add_merge(pile__bpe *b, uint32_t left, uint32_t right, pile_err *err)
{
    if (b->n_merges == b->cap_merges) {
        size_t cap = b->cap_merges ? b->cap_merges * 2 : 4096;
        uint32_t *m = realloc(b->merges, cap * 2 * sizeof *m);
        if (!m) return pile_err_set(err, PILE_ENOMEM, "out of memory");
        b->merges = m;
        b->cap_merges = cap;
    }
    b->merges[2 * b->n_merges] = left;
    b->merges[2 * b->n_merges + 1] = right;
    b->n_merges++;
    return 0;
}

/* PCRE2's \s under UCP also takes U+180E; the tokenizers this mirrors use
 * Unicode White_Space, so \s is spelled out before compiling. */
#define WS_SET "\\t-\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"

static int rewrite_ws(const char *p, size_t n, pile_buf *out)
{
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\' && i + 1 < n) {
            char d = p[i + 1];
            int rc = 0;
            if (d == 's') rc = pile_buf_append_str(out, in_class ? WS_SET : "[" WS_SET "]");
            else if (d == 'S' && !in_class) rc = pile_buf_append_str(out, "[^" WS_SET "]");
            else rc = pile_buf_append(out, p + i, 2);
            if (rc) return rc;
            i++;
            continue;
        }
        if (!in_class && c == '[') {
            in_class = 1;
            if (pile_buf_append(out, p + i, 1)) return PILE_ENOMEM;
            /* A ']' right after '[' or '[^' is a literal. */
            if (i + 1 < n && p[i + 1] == '^') {
                if (pile_buf_append(out, p + ++i, 1)) return PILE_ENOMEM;
            }
            if (i + 1 < n && p[i + 1] == ']') {
                if (pile_buf_append(out, p + ++i, 1)) return PILE_ENOMEM;
            }
            continue;
        }
        if (in_class && c == '[' && i + 1 < n && p[i + 1] == ':') {
            /* POSIX class [:name:] inside a class. */
            const char *end = memchr(p + i + 2, ']', n - i - 2);
            size_t k = end ? (size_t)(end - p) : i;
            if (pile_buf_append(out, p + i, k - i + 1)) return PILE_ENOMEM;
            i = k;
            continue;
        }
        if (in_class && c == ']') in_class = 0;
        if (pile_buf_append(out, p + i, 1)) return PILE_ENOMEM;
    }
    return 0;
}

/* 1 if pattern has a '$', or a '^' that does not open a negated class:
 * the anchors whose meaning Oniguruma's Ruby syntax changes (over-counting
 * only costs a fingerprint change). */
static int has_line_anchor(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] == '$' || (p[i] == '^' && !(i > 0 && p[i - 1] == '['))) return 1;
    return 0;
}

int pile__bpe_add_stage(pile__bpe *b, int kind, const char *pattern, size_t pattern_len, int behavior, int prefix_space,
                        int onig, const char *name, pile_err *err)
{
    if (b->n_stages == PILE__BPE_MAX_STAGES)
        return pile_err_set(err, PILE_ELIMIT, "unsupported tokenizer '%s': more than %d pre-tokenizers", name,
                            PILE__BPE_MAX_STAGES);
    if (kind == PILE__SPLIT_REGEX && behavior == PILE__BEH_ISOLATED && pile__bpe_is_gpt2_pattern(pattern, pattern_len))
        kind = PILE__SPLIT_GPT2;
    pile__split *st = &b->stages[b->n_stages];
    memset(st, 0, sizeof *st);
    st->kind = kind;
    st->behavior = behavior;
    st->prefix_space = prefix_space;
    st->onig = kind == PILE__SPLIT_REGEX && onig;
    const char *show = kind == PILE__SPLIT_GPT2 && !pattern ? gpt2_pattern : pattern;
    size_t show_len = kind == PILE__SPLIT_GPT2 && !pattern ? sizeof gpt2_pattern - 1 : pattern_len;
    st->pattern = malloc(show_len + 1);
    if (!st->pattern) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    memcpy(st->pattern, show, show_len);
    st->pattern[show_len] = 0;
    b->n_stages++;
    if (kind != PILE__SPLIT_REGEX) return 0;

    pile_buf rw = {0};
    if (rewrite_ws(pattern, pattern_len, &rw)) {
        pile_buf_free(&rw);
        return pile_err_set(err, PILE_ENOMEM, "out of memory");
    }
    int ecode;
    PCRE2_SIZE eoff;
    /* Oniguruma (Ruby syntax, under Hugging Face) anchors ^ and $ at line
     * breaks; tiktoken's Rust regex at the ends of the text. */
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK | (st->onig ? PCRE2_MULTILINE : 0);
    /* An empty pattern leaves rw.data NULL, which PCRE2 refuses even with length 0. */
    st->re = pcre2_compile((PCRE2_SPTR)(rw.data ? rw.data : ""), rw.len, opts, &ecode, &eoff, NULL);
    pile_buf_free(&rw);
    if (!st->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ecode, msg, sizeof msg);
        return pile_err_set(err, PILE_EFORMAT, "invalid tokenizer '%s': cannot compile pattern '%s': %s", name,
                            st->pattern, (const char *)msg);
    }
    if (st->onig) {
        uint32_t minlen = 1;
        pcre2_pattern_info(st->re, PCRE2_INFO_MINLENGTH, &minlen);
        st->onig_differs = minlen == 0 || has_line_anchor(pattern, pattern_len);
    }
    /* Without JIT (a build without it) pcre2_match interprets: slower, same result. */
    (void)pcre2_jit_compile(st->re, PCRE2_JIT_COMPLETE);
    return 0;
}

/* ------------------------------------------------------------- tables */

static uint64_t pow2_at_least(uint64_t n)
{
    uint64_t p = 16;
    while (p < n) p *= 2;
    return p;
}

/* 64 - log2(size): the shift that takes a 64-bit hash to a slot. */
static unsigned shift_for(uint64_t size)
{
    unsigned s = 64;
    while (size > 1) {
        size >>= 1;
        s--;
    }
    return s;
}

static uint32_t vfind_all(const pile__bpe *b, const void *p, size_t n)
{
    const pile__vslot *s = pile__bpe_vfind(b, p, n);
    return s ? s->id : UINT32_MAX;
}

static int build_vtab(pile__bpe *b, const char *name, pile_err *err)
{
    uint32_t n = b->h.vocab_size, count = 0;
    for (uint32_t id = 0; id < n; id++) count += (b->flags[id] & (PILE__TOK_MODEL | PILE__TOK_SPECIAL)) == PILE__TOK_MODEL;
    uint64_t size = pow2_at_least((uint64_t)count * 2);
    b->vtab = malloc(size * sizeof *b->vtab);
    if (!b->vtab) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    memset(b->vtab, 0, size * sizeof *b->vtab);
    for (uint64_t i = 0; i < size; i++) b->vtab[i].id = UINT32_MAX;
    b->vmask = (uint32_t)(size - 1);
    b->vshift = shift_for(size);
    for (uint32_t id = 0; id < n; id++) {
        if ((b->flags[id] & (PILE__TOK_MODEL | PILE__TOK_SPECIAL)) != PILE__TOK_MODEL) continue;
        const char *p = b->bytes.data + b->off[id];
        uint32_t len = b->len[id];
        if (len == 0) return pile_err_set(err, PILE_EFORMAT, "invalid tokenizer '%s': token %u is empty", name, id);
        uint32_t other = vfind_all(b, p, len);
        if (other != UINT32_MAX)
            return pile_err_set(err, PILE_EFORMAT, "invalid tokenizer '%s': tokens %u and %u have the same bytes", name,
                                other, id);
        uint64_t pfx = pile__bpe_pfx((const unsigned char *)p, len);
        uint32_t i = (uint32_t)(pile__bpe_hash(pfx, (const unsigned char *)p, len) >> b->vshift);
        while (b->vtab[i].id != UINT32_MAX) i = (i + 1) & b->vmask;
        b->vtab[i].pfx = pfx;
        b->vtab[i].len = len >= 0xFFFF ? 0xFFFF : (uint16_t)len;
        b->vtab[i].id = id;
        if (len == 1) b->byte_id[(unsigned char)p[0]] = id;
    }
    for (unsigned c = 0; c < 256; c++) {
        uint32_t id = vfind_all(b, &(unsigned char){(unsigned char)c}, 1);
        if (id == UINT32_MAX)
            return pile_err_set(err, PILE_EFORMAT,
                                "unsupported tokenizer '%s': no token for byte 0x%02x (byte-level BPE needs all 256)",
                                name, c);
    }
    return 0;
}

static void ptab_put(pile__bpe *b, uint32_t l, uint32_t r, uint32_t rank, uint32_t merged, int keep_first)
{
    uint64_t key = (uint64_t)l << 32 | r;
    for (uint32_t i = pile__bpe_pair_slot(key, b->pshift);; i = (i + 1) & b->pmask) {
        pile__pslot *s = &b->ptab[i];
        if (s->key == UINT64_MAX || s->key == key) {
            if (s->key == key && keep_first) return;
            s->key = key;
            s->rank = rank;
            s->merged = merged;
            return;
        }
    }
}

/* Calls fn(b, left, right, rank, merged, ctx) for every merge pair. */
typedef void (*pair_fn)(pile__bpe *b, uint32_t l, uint32_t r, uint32_t rank, uint32_t merged, int keep_first);

static void pair_count(pile__bpe *b, uint32_t l, uint32_t r, uint32_t rank, uint32_t merged, int keep_first)
{
    (void)l, (void)r, (void)rank, (void)merged, (void)keep_first;
    b->pmask++; /* counts while the table is not built */
}

static int each_pair(pile__bpe *b, pair_fn fn, const char *name, pile_err *err)
{
    pile_buf cat = {0};
    int rc = 0;
    if (b->mode == PILE__BPE_MERGES) {
        for (size_t i = 0; i < b->n_merges && rc == 0; i++) {
            uint32_t l = b->merges[2 * i], r = b->merges[2 * i + 1];
            cat.len = 0;
            if (pile_buf_append(&cat, b->bytes.data + b->off[l], b->len[l]) ||
                pile_buf_append(&cat, b->bytes.data + b->off[r], b->len[r])) {
                rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
                break;
            }
            uint32_t m = vfind_all(b, cat.data, cat.len);
            if (m == UINT32_MAX) {
                rc = pile_err_set(err, PILE_EFORMAT,
                                  "invalid tokenizer '%s': merge %zu (ids %u %u) makes a token that is not in the "
                                  "vocabulary",
                                  name, i + 1, l, r);
                break;
            }
            /* Hugging Face builds its merge map by inserting in order: a repeated pair keeps the later rank. */
            fn(b, l, r, (uint32_t)i, m, 0);
        }
    } else {
        for (uint32_t id = 0; id < b->h.vocab_size; id++) {
            if ((b->flags[id] & (PILE__TOK_MODEL | PILE__TOK_SPECIAL)) != PILE__TOK_MODEL) continue;
            const char *p = b->bytes.data + b->off[id];
            for (uint32_t k = 1; k < b->len[id]; k++) {
                uint32_t l = vfind_all(b, p, k), r = vfind_all(b, p + k, b->len[id] - k);
                if (l != UINT32_MAX && r != UINT32_MAX) fn(b, l, r, id, id, 1);
            }
        }
    }
    pile_buf_free(&cat);
    return rc;
}

static int build_ptab(pile__bpe *b, const char *name, pile_err *err)
{
    b->pmask = 0;
    PILE_FORWARD_IF_ERR(each_pair(b, pair_count, name, err));
    uint64_t size = pow2_at_least((uint64_t)b->pmask * 3 / 2 + 2);
    if (size > (1ull << 31)) return pile_err_set(err, PILE_ELIMIT, "tokenizer '%s' has too many merges", name);
    b->ptab = malloc(size * sizeof *b->ptab);
    if (!b->ptab) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    memset(b->ptab, 0xFF, size * sizeof *b->ptab);
    b->pmask = (uint32_t)(size - 1);
    b->pshift = shift_for(size);
    return each_pair(b, ptab_put, name, err);
}

/* Every merge starts from byte tokens: their pairs get a direct table. */
static int build_byte_pairs(pile__bpe *b, pile_err *err)
{
    b->byte_pair = malloc(256 * 256 * sizeof *b->byte_pair);
    if (!b->byte_pair) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    for (unsigned x = 0; x < 256; x++) {
        for (unsigned y = 0; y < 256; y++) {
            uint64_t key = (uint64_t)b->byte_id[x] << 32 | b->byte_id[y], v = UINT64_MAX;
            for (uint32_t i = pile__bpe_pair_slot(key, b->pshift);; i = (i + 1) & b->pmask) {
                const pile__pslot *s = &b->ptab[i];
                if (s->key == key) v = (uint64_t)s->rank << 32 | s->merged;
                if (s->key == key || s->key == UINT64_MAX) break;
            }
            b->byte_pair[x << 8 | y] = v;
        }
    }
    return 0;
}

static int cmp_added(const void *a, const void *b, void *ctx)
{
    const pile__bpe *t = ctx;
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    if (t->len[x] != t->len[y]) return t->len[x] > t->len[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

static int build_added(pile__bpe *b, const char *name, pile_err *err)
{
    size_t n = 0;
    for (uint32_t id = 0; id < b->h.vocab_size; id++) n += (b->flags[id] & PILE__TOK_ADDED) != 0;
    if (!n) return 0;
    b->added = malloc(n * sizeof *b->added);
    if (!b->added) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    for (uint32_t id = 0; id < b->h.vocab_size; id++) {
        if (!(b->flags[id] & PILE__TOK_ADDED)) continue;
        if (b->len[id] == 0) return pile_err_set(err, PILE_EFORMAT, "invalid tokenizer '%s': added token %u is empty", name, id);
        b->added[b->n_added++] = id;
        b->added_first[(unsigned char)b->bytes.data[b->off[id]]] = 1;
    }
    qsort_r(b->added, b->n_added, sizeof *b->added, cmp_added, b);
    return 0;
}

static int pick_eot(pile__bpe *b, const char *name, pile_err *err)
{
    static const char *const names[] = {"<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>"};
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        for (size_t i = 0; i < b->h.n_specials; i++) {
            if (strcmp(b->h.specials[i].text, names[k]) == 0) {
                b->h.eot_id = b->h.specials[i].id;
                return 0;
            }
        }
    }
    return pile_err_set(err, PILE_EFORMAT,
                        "unsupported tokenizer '%s': no end-of-text special token (<|endoftext|>, <|end_of_text|>, "
                        "</s> or <eos>)",
                        name);
}

static void fp_u32(XXH3_state_t *st, uint32_t v)
{
    unsigned char le[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
    XXH3_128bits_update(st, le, 4);
}

static void fp_bytes(XXH3_state_t *st, const void *p, size_t n)
{
    fp_u32(st, (uint32_t)n);
    XXH3_128bits_update(st, p, n);
}

static int cmp_special(const void *a, const void *b)
{
    const pile__special *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* The fingerprint hashes a canonical serialization (little-endian u32s,
 * length-prefixed strings): the merge rule, every id's flags and bytes, the
 * merges as id pairs in rank order, the normalizer, the pre-tokenization
 * stages (GPT-2's pattern under one name, whichever spelling), the special
 * tokens by id and the end-of-text id. Loading the same tokenizer from
 * tokenizer.json or from encoder.json + vocab.bpe gives the same value; a
 * .tiktoken file merges by tiktoken's rule and so has its own. */
static int fingerprint(pile__bpe *b, pile_err *err)
{
    XXH3_state_t *st = XXH3_createState();
    if (!st) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    XXH3_128bits_reset(st);
    static const char magic[] = "pile-bpe-v1";
    fp_bytes(st, magic, sizeof magic - 1);
    fp_u32(st, (uint32_t)b->mode);
    fp_u32(st, b->h.vocab_size);
    for (uint32_t id = 0; id < b->h.vocab_size; id++) {
        fp_u32(st, b->flags[id] & (PILE__TOK_PRESENT | PILE__TOK_MODEL | PILE__TOK_SPECIAL | PILE__TOK_ADDED));
        fp_bytes(st, b->bytes.data + b->off[id], b->len[id]);
    }
    fp_u32(st, (uint32_t)b->n_merges);
    for (size_t i = 0; i < 2 * b->n_merges; i++) fp_u32(st, b->merges[i]);
    fp_u32(st, (uint32_t)b->nfc);
    fp_u32(st, (uint32_t)b->n_stages);
    for (size_t i = 0; i < b->n_stages; i++) {
        const pile__split *s = &b->stages[i];
        fp_u32(st, (uint32_t)s->kind);
        fp_u32(st, (uint32_t)s->behavior);
        fp_u32(st, (uint32_t)s->prefix_space);
        if (s->kind == PILE__SPLIT_GPT2) fp_bytes(st, "gpt2", 4);
        else fp_bytes(st, s->pattern, strlen(s->pattern));
        /* Such a stage split otherwise before line anchors and empty
         * matches were read as Hugging Face does: a new value, so that
         * shards made then are not resumed as if the same. */
        if (s->onig_differs) fp_bytes(st, "onig-split", 10);
    }
    qsort(b->h.specials, b->h.n_specials, sizeof *b->h.specials, cmp_special);
    fp_u32(st, (uint32_t)b->h.n_specials);
    for (size_t i = 0; i < b->h.n_specials; i++) {
        fp_bytes(st, b->h.specials[i].text, strlen(b->h.specials[i].text));
        fp_u32(st, b->h.specials[i].id);
    }
    fp_u32(st, b->h.eot_id);
    XXH128_hash_t h = XXH3_128bits_digest(st);
    XXH3_freeState(st);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    memcpy(b->h.fp, c.digest, PILE_TOKENIZER_FP_BYTES);
    return 0;
}

int pile__bpe_finish(pile__bpe *b, const char *name, pile_err *err)
{
    if (b->h.vocab_size == 0) return pile_err_set(err, PILE_EFORMAT, "invalid tokenizer '%s': no tokens", name);
    if (b->n_stages == 0)
        return pile_err_set(err, PILE_EFORMAT, "unsupported tokenizer '%s': no pre-tokenizer (byte-level BPE expected)",
                            name);
    PILE_FORWARD_IF_ERR(build_vtab(b, name, err));
    PILE_FORWARD_IF_ERR(build_ptab(b, name, err));
    PILE_FORWARD_IF_ERR(build_byte_pairs(b, err));
    PILE_FORWARD_IF_ERR(build_added(b, name, err));
    PILE_FORWARD_IF_ERR(pick_eot(b, name, err));
    PILE_FORWARD_IF_ERR(pile__bpe_mark_whole(b, err));
    const char *pat = b->stages[0].pattern;
    for (size_t i = 0; i < b->n_stages; i++)
        if (b->stages[i].kind == PILE__SPLIT_REGEX) pat = b->stages[i].pattern;
    b->h.pattern = strdup(pat);
    if (!b->h.pattern) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    PILE_FORWARD_IF_ERR(fingerprint(b, err));
    b->h.vt = &pile__bpe_vt;
    return 0;
}

/* ------------------------------------------------------------ dispatch */

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

int pile__bpe_open_builtin(pile_tokenizer **out, pile_err *err)
{
    *out = NULL;
    pile__bpe *b = NULL;
    PILE_FORWARD_IF_ERR(pile__bpe_load_gpt2_builtin(&b, err));
    *out = &b->h;
    return 0;
}

int pile__bpe_open(pile_tokenizer **out, const char *spec, pile_err *err)
{
    *out = NULL;
    pile__bpe *b = NULL;
    int rc;
    if (pile_fs_is_dir(spec)) rc = pile__bpe_load_gpt2_dir(&b, spec, err);
    else if (ends_with(spec, ".json")) rc = pile__bpe_load_hf_json(&b, spec, err);
    else if (ends_with(spec, ".tiktoken")) rc = pile__bpe_load_tiktoken(&b, spec, err);
    else {
        uint64_t size;
        rc = pile_fs_size(spec, &size, err);
        if (rc == 0)
            rc = pile_err_set(err, PILE_EINVAL,
                              "cannot open tokenizer '%s': expected a tokenizer.json, a *.tiktoken file or a folder "
                              "with encoder.json and vocab.bpe",
                              spec);
        else
            rc = pile_err_set(err, PILE_ENOENT, "cannot open tokenizer '%s': no such file or folder", spec);
    }
    if (rc < 0) return rc;
    *out = &b->h;
    return 0;
}
