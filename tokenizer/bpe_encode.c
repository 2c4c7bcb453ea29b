/* BPE encoding and decoding. Per piece: a direct-mapped cache of short
 * pieces (a few thousand short pieces make most of any text), then one hash
 * lookup of the whole piece (most pieces are one token), then a two-way
 * cache of multi-token pieces, then the merges themselves: pair ranks
 * rescanned in place (a bit mask of live positions, nothing moves) for short
 * pieces, a heap over a linked list (O(n log n)) for long ones. Both pick
 * the leftmost pair of lowest rank, as tiktoken and Hugging Face do. A cache
 * miss overwrites one slot, so the caches stay at 1.5 MB however large the
 * corpus (the merge scratch grows only with the longest piece); all of it
 * is in the encoder, so encoders on different threads share only the
 * read-only tokenizer. */
#include "bpe_internal.h"
#include "pretok.h"
#include "pretok_internal.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#define NONE UINT32_MAX
#define NOPAIR UINT64_MAX
#define SHORT_MAX 32 /* longer pieces use the heap */

/* Room left in the output beyond a piece's own length: a cache hit copies
 * a whole slot's ids, however many of them are used. */
#define SLACK 24

/* Short pieces (up to 8 bytes) with up to 5 ids: 32-byte slots, 512 KB,
 * about an L2. Misses here are mostly first sightings, not conflicts (two
 * ways instead of one barely changed their number). */
#define HOT_BITS 14
#define HOT_IDS 5
typedef struct hslot {
    uint64_t pfx;
    uint8_t len; /* 0: empty */
    uint8_t nids;
    uint16_t pad;
    uint32_t ids[HOT_IDS];
} hslot;

/* Multi-token pieces of up to 48 bytes with up to 19 ids (CJK text and
 * symbol runs take more ids than bytes / 4): 128-byte slots (two cache
 * lines), in sets of two (the two slots a hash picks), 1 MB. Longer pieces
 * are rare and merged each time. */
#define LONG_BITS 13
#define LONG_KEY 48
#define LONG_IDS 19
typedef struct lslot {
    unsigned char key[LONG_KEY];
    uint32_t ids[LONG_IDS];
    uint8_t len; /* 0: empty */
    uint8_t nids;
    uint16_t pad;
} lslot;

_Static_assert(sizeof(hslot) == 32, "a hot slot is half a cache line");
_Static_assert(sizeof(lslot) == 128, "a long slot is two cache lines");
_Static_assert(HOT_IDS <= SLACK && LONG_IDS <= SLACK, "a slot's ids fit in the slack");

typedef struct bpe_enc {
    pile_encoder h;
    const pile__bpe *b;
    uint32_t *ids; /* merge scratch, cap entries */
    uint64_t *rm;            /* rank << 32 | merged id of the pair at i, cap entries */
    size_t cap;
    uint64_t *heap;
    size_t heap_cap;
    pile_buf norm;
    pile_buf pfx[PILE__BPE_MAX_STAGES];
    pcre2_match_data *md[PILE__BPE_MAX_STAGES];
    pcre2_match_context *mctx;
    pcre2_jit_stack *jstack;
    hslot *hot;
    lslot *lcache;
} bpe_enc;

/* The pair (l, r) as rank << 32 | merged id, or NOPAIR. Ranks are unique per
 * merged id, so the smallest value is the lowest rank and ties are equal. */
static inline uint64_t pair_rm(const pile__bpe *b, uint32_t l, uint32_t r)
{
    uint64_t key = (uint64_t)l << 32 | r;
    for (uint32_t i = pile__bpe_pair_slot(key, b->pshift);; i = (i + 1) & b->pmask) {
        const pile__pslot *s = &b->ptab[i];
        if (s->key == key) return (uint64_t)s->rank << 32 | s->merged;
        if (s->key == UINT64_MAX) return NOPAIR;
    }
}

static int scratch(bpe_enc *e, size_t n)
{
    if (n <= e->cap) return 0;
    size_t cap = e->cap ? e->cap : 256;
    while (cap < n) cap *= 2;
    uint32_t **arr[] = {&e->ids};
    for (size_t i = 0; i < sizeof arr / sizeof *arr; i++) {
        uint32_t *p = realloc(*arr[i], cap * sizeof *p);
        if (!p) return PILE_ENOMEM;
        *arr[i] = p;
    }
    uint64_t *rm = realloc(e->rm, cap * sizeof *rm);
    if (!rm) return PILE_ENOMEM;
    e->rm = rm;
    e->cap = cap;
    return 0;
}

/* Leftmost lowest-rank merge until none applies, for n <= 64: pairs stay
 * where they started (rm[i] is the pair from i to the next live position,
 * NOPAIR at a dead one), a bit mask says which positions live, so a merge
 * moves nothing. ids[0..n) holds the byte tokens of p and ends compacted. */
static size_t merge_short(const pile__bpe *b, const unsigned char *p, uint32_t *ids, uint64_t *rm, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++) rm[i] = b->byte_pair[(unsigned)p[i] << 8 | p[i + 1]];
    uint64_t live = n == 64 ? ~0ull : (1ull << n) - 1;
    for (size_t m = n; m > 1; m--) {
        uint64_t best = rm[0];
        size_t bi = 0;
        for (size_t i = 1; i + 1 < n; i++) {
            if (rm[i] < best) {
                best = rm[i];
                bi = i;
            }
        }
        if (best == NOPAIR) break;
        /* bi <= n - 2 <= 62, and a pair at bi means a live position after it. */
        uint64_t above = ~((2ull << bi) - 1);
        size_t j = (size_t)__builtin_ctzll(live & above);
        live &= ~(1ull << j);
        rm[j] = NOPAIR;
        ids[bi] = (uint32_t)best;
        uint64_t next = live & above;
        rm[bi] = next ? pair_rm(b, ids[bi], ids[__builtin_ctzll(next)]) : NOPAIR;
        uint64_t below = live & ((1ull << bi) - 1);
        if (below) {
            size_t a = 63 - (size_t)__builtin_clzll(below);
            rm[a] = pair_rm(b, ids[a], ids[bi]);
        }
    }
    size_t k = 0;
    for (; live; live &= live - 1) ids[k++] = ids[__builtin_ctzll(live)];
    return k;
}

/* Binary min-heap of (rank << 32 | position): position order is text order,
 * so the smallest key is the leftmost pair of lowest rank. */
static int heap_push(bpe_enc *e, size_t *hn, uint64_t v)
{
    if (*hn == e->heap_cap) {
        size_t cap = e->heap_cap ? e->heap_cap * 2 : 1024;
        uint64_t *p = realloc(e->heap, cap * sizeof *p);
        if (!p) return PILE_ENOMEM;
        e->heap = p;
        e->heap_cap = cap;
    }
    uint64_t *h = e->heap;
    size_t i = (*hn)++;
    while (i > 0 && h[(i - 1) / 2] > v) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = v;
    return 0;
}

static uint64_t heap_pop(bpe_enc *e, size_t *hn)
{
    uint64_t *h = e->heap, top = h[0], v = h[--*hn];
    size_t n = *hn, i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && h[c + 1] < h[c]) c++;
        if (h[c] >= v) break;
        h[i] = h[c];
        i = c;
    }
    if (n) h[i] = v;
    return top;
}

/* The live positions around i: a merged token's later positions hold NONE,
 * so a scan crosses at most one token's bytes (the vocabulary's longest),
 * which keeps a long piece's state to its ids and the heap (a linked list
 * cost 8 more bytes per byte: a 20 MB single "word" is 20 million positions). */
static size_t next_live(const uint32_t *ids, size_t i, size_t n)
{
    for (i++; i < n && ids[i] == NONE; i++) {
    }
    return i;
}

static size_t prev_live(const uint32_t *ids, size_t i)
{
    while (i > 0)
        if (ids[--i] != NONE) return i;
    return SIZE_MAX;
}

static int merge_long(bpe_enc *e, uint32_t *ids, size_t n, size_t *out_n)
{
    const pile__bpe *b = e->b;
    size_t hn = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        uint64_t r = pair_rm(b, ids[i], ids[i + 1]);
        if (r != NOPAIR && heap_push(e, &hn, (r & ~0xFFFFFFFFull) | i)) return PILE_ENOMEM;
    }
    while (hn) {
        uint64_t top = heap_pop(e, &hn);
        uint32_t rank = (uint32_t)(top >> 32), i = (uint32_t)top;
        if (ids[i] == NONE) continue;
        size_t j = next_live(ids, i, n);
        if (j >= n) continue;
        /* A stale entry: the pair at i changed since it was pushed. */
        uint64_t m = pair_rm(b, ids[i], ids[j]);
        if (m == NOPAIR || (uint32_t)(m >> 32) != rank) continue;
        ids[i] = (uint32_t)m;
        ids[j] = NONE;
        size_t k = prev_live(ids, i);
        if (k != SIZE_MAX) {
            uint64_t r = pair_rm(b, ids[k], ids[i]);
            if (r != NOPAIR && heap_push(e, &hn, (r & ~0xFFFFFFFFull) | k)) return PILE_ENOMEM;
        }
        size_t nj = next_live(ids, i, n);
        if (nj < n) {
            uint64_t r = pair_rm(b, ids[i], ids[nj]);
            if (r != NOPAIR && heap_push(e, &hn, (r & ~0xFFFFFFFFull) | i)) return PILE_ENOMEM;
        }
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i] != NONE) ids[k++] = ids[i];
    *out_n = k;
    return 0;
}

/* The merges of one piece, no shortcuts: ids[0..*k), where ids has room
 * for n. */
static int bpe_merge(bpe_enc *e, const unsigned char *p, size_t n, uint32_t *ids, size_t *k)
{
    if (scratch(e, n)) return PILE_ENOMEM;
    const uint32_t *byte_id = e->b->byte_id;
    for (size_t i = 0; i < n; i++) ids[i] = byte_id[p[i]];
    if (n <= SHORT_MAX) {
        *k = merge_short(e->b, p, ids, e->rm, n);
        return 0;
    }
    return merge_long(e, ids, n, k);
}

/* A piece the hot cache did not have: the vocabulary, the long cache, the
 * merges; then both caches learn it where it fits. */
static __attribute__((noinline)) int encode_miss(bpe_enc *e, const unsigned char *p, size_t n, uint64_t pfx,
                                                 uint64_t h, uint32_t *dst, size_t *out_k)
{
    const pile__bpe *b = e->b;
    size_t k = 0;
    uint16_t l16 = n >= 0xFFFF ? 0xFFFF : (uint16_t)n;
    for (uint32_t i = (uint32_t)(h >> b->vshift);; i = (i + 1) & b->vmask) {
        const pile__vslot *s = &b->vtab[i];
        if (s->id == NONE) break;
        if (s->pfx != pfx || s->len != l16) continue;
        if (n > 8 && (b->len[s->id] != n || memcmp(b->bytes.data + b->off[s->id] + 8, p + 8, n - 8) != 0)) continue;
        if (s->whole) {
            dst[0] = s->id;
            k = 1;
        }
        break;
    }
    if (!k) {
        lslot *set = NULL;
        if (n <= LONG_KEY) {
            set = &e->lcache[(h >> (64 - LONG_BITS)) & ~(uint64_t)1];
            for (int w = 0; w < 2; w++) {
                if (set[w].len == n && memcmp(set[w].key, p, n) == 0) {
                    memcpy(dst, set[w].ids, sizeof set[w].ids);
                    k = set[w].nids;
                    set = NULL;
                    break;
                }
            }
        }
        if (!k) {
            if (bpe_merge(e, p, n, dst, &k)) return PILE_ENOMEM;
            if (set && k <= LONG_IDS) {
                /* Two ways, newest first: the older entry of the set goes. */
                set[1] = set[0];
                memset(set[0].key, 0, sizeof set[0].key);
                memcpy(set[0].key, p, n);
                memcpy(set[0].ids, dst, k * sizeof *dst);
                set[0].len = (uint8_t)n;
                set[0].nids = (uint8_t)k;
            }
        }
    }
    if (n <= 8 && k <= HOT_IDS) {
        hslot *hs = &e->hot[h >> (64 - HOT_BITS)];
        hs->pfx = pfx;
        hs->len = (uint8_t)n;
        hs->nids = (uint8_t)k;
        memcpy(hs->ids, dst, k * sizeof *dst);
    }
    *out_k = k;
    return 0;
}

static const uint64_t low_bytes[9] = {0, 0xFF, 0xFFFF, 0xFFFFFF, 0xFFFFFFFF, 0xFFFFFFFFFF, 0xFFFFFFFFFFFF,
                                       0xFFFFFFFFFFFFFF, UINT64_MAX};

/* Writes the ids of the piece p[0..n) at *dst and moves *dst past them;
 * word is the 8 bytes at p (zero-padded past the text's end); the bytes up
 * to end may be read, and dst must have room for n + SLACK ids. */
static inline int encode_piece(bpe_enc *e, const unsigned char *p, size_t n, uint64_t word, const unsigned char *end,
                               uint32_t **dst)
{
    size_t k;
    if (n <= 8) {
        uint64_t pfx = word & low_bytes[n];
        uint64_t h = (pfx ^ ((uint64_t)n << 58 | (uint64_t)n)) * PILE__BPE_MUL; /* pile__bpe_hash for n <= 8 */
        const hslot *hs = &e->hot[h >> (64 - HOT_BITS)];
        if (hs->pfx == pfx && hs->len == n) {
            memcpy(*dst, hs->ids, sizeof hs->ids);
            *dst += hs->nids;
            return 0;
        }
        if (encode_miss(e, p, n, pfx, h, *dst, &k)) return PILE_ENOMEM;
    } else if (encode_miss(e, p, n, word, pile__bpe_hash_end(word, p, n, end), *dst, &k)) {
        return PILE_ENOMEM;
    }
    *dst += k;
    return 0;
}

/* Appends the ids of the GPT-2 pieces of s[0..n), or of s[0..n) as one
 * piece. Inlined into each caller so that the scanner is inlined too. */
static inline __attribute__((always_inline)) int encode_pieces(bpe_enc *e, const unsigned char *s, size_t n,
                                                               pile_ids *out, int gpt2)
{
    /* A piece of m bytes has at most m ids: one reserve covers the text. */
    if (pile_ids_reserve(out, n + SLACK)) return PILE_ENOMEM;
    uint32_t *dst = out->data + out->len;
    size_t p = 0;
    int rc = 0;
    /* The 8 bytes at p are read at once while the text has them. */
    while (rc == 0 && p + 8 <= n) {
        uint64_t word;
        memcpy(&word, s + p, 8);
        size_t q = gpt2 ? pile__pretok_gpt2_scan(s, n, p) : n;
        rc = encode_piece(e, s + p, q - p, word, s + n, &dst);
        p = q;
    }
    while (rc == 0 && p < n) {
        size_t q = gpt2 ? pile__pretok_gpt2_scan(s, n, p) : n;
        rc = encode_piece(e, s + p, q - p, pile__bpe_pfx(s + p, n - p), s + n, &dst);
        p = q;
    }
    out->len = (size_t)(dst - out->data);
    return rc;
}

/* --------------------------------------------------- pre-tokenization */

static int run_stage(bpe_enc *e, size_t k, const char *s, size_t n, pile_ids *out, pile_err *err);

static int regex_stage(bpe_enc *e, size_t k, const char *s, size_t n, pile_ids *out, pile_err *err)
{
    const pile__split *st = &e->b->stages[k];
    pcre2_match_data *md = e->md[k];
    size_t pos = 0, last = 0, prev_end = SIZE_MAX; /* end of the last match used */
    while (pos < n) {
        int rc = pcre2_match(st->re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, e->mctx);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return pile_err_set(err, PILE_EINVAL, "cannot split text with pattern '%s': %s", st->pattern,
                                (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) {
            /* Oniguruma's find_iter (under Hugging Face) yields an empty
             * match, which splits there, except where the last match ended;
             * either way the search goes on one character later. One at the
             * end splits nothing. */
            if (ms >= n) break;
            uint32_t cp;
            pos = ms + pile__utf8_next((const unsigned char *)s, n, ms, &cp);
            if (ms == prev_end) continue;
        } else {
            pos = me;
        }
        prev_end = me;
        switch (st->behavior) {
        case PILE__BEH_ISOLATED:
            if (ms > last) PILE_FORWARD_IF_ERR(run_stage(e, k + 1, s + last, ms - last, out, err));
            PILE_FORWARD_IF_ERR(run_stage(e, k + 1, s + ms, me - ms, out, err));
            last = me;
            break;
        case PILE__BEH_REMOVED:
            if (ms > last) PILE_FORWARD_IF_ERR(run_stage(e, k + 1, s + last, ms - last, out, err));
            last = me;
            break;
        case PILE__BEH_MERGED_PREV:
            PILE_FORWARD_IF_ERR(run_stage(e, k + 1, s + last, me - last, out, err));
            last = me;
            break;
        default: /* MERGED_NEXT */
            if (ms > last) PILE_FORWARD_IF_ERR(run_stage(e, k + 1, s + last, ms - last, out, err));
            last = ms;
            break;
        }
    }
    if (last < n) PILE_FORWARD_IF_ERR(run_stage(e, k + 1, s + last, n - last, out, err));
    return 0;
}

static int run_stage(bpe_enc *e, size_t k, const char *s, size_t n, pile_ids *out, pile_err *err)
{
    const pile__bpe *b = e->b;
    if (n == 0) return 0;
    if (k == b->n_stages) {
        if (encode_pieces(e, (const unsigned char *)s, n, out, 0))
            return pile_err_set(err, PILE_ENOMEM, "out of memory");
        return 0;
    }
    const pile__split *st = &b->stages[k];
    if (st->prefix_space && s[0] != ' ') {
        pile_buf *pb = &e->pfx[k];
        pb->len = 0;
        if (pile_buf_append(pb, " ", 1) || pile_buf_append(pb, s, n))
            return pile_err_set(err, PILE_ENOMEM, "out of memory");
        s = pb->data;
        n = pb->len;
    }
    if (st->kind == PILE__SPLIT_REGEX) return regex_stage(e, k, s, n, out, err);
    if (k + 1 == b->n_stages) {
        if (encode_pieces(e, (const unsigned char *)s, n, out, 1))
            return pile_err_set(err, PILE_ENOMEM, "out of memory");
        return 0;
    }
    for (size_t p = 0; p < n;) {
        size_t q = pile__pretok_gpt2_scan((const unsigned char *)s, n, p);
        PILE_FORWARD_IF_ERR(run_stage(e, k + 1, s + p, q - p, out, err));
        p = q;
    }
    return 0;
}

/* Non-special added tokens are cut out first, leftmost-longest, as Hugging
 * Face's AddedVocabulary does; the text between them is pre-tokenized. */
static int split_added(bpe_enc *e, const char *s, size_t n, pile_ids *out, pile_err *err)
{
    const pile__bpe *b = e->b;
    size_t seg = 0;
    for (size_t i = 0; i < n; i++) {
        if (!b->added_first[(unsigned char)s[i]]) continue;
        for (size_t a = 0; a < b->n_added; a++) {
            uint32_t id = b->added[a], len = b->len[id];
            if (len > n - i || memcmp(s + i, b->bytes.data + b->off[id], len) != 0) continue;
            PILE_FORWARD_IF_ERR(run_stage(e, 0, s + seg, i - seg, out, err));
            if (pile_ids_push(out, id)) return pile_err_set(err, PILE_ENOMEM, "out of memory");
            seg = i + len;
            i = seg - 1;
            break;
        }
    }
    return run_stage(e, 0, s + seg, n - seg, out, err);
}

static int bpe_encode(pile_encoder *enc, const char *text, size_t len, pile_ids *out, pile_err *err)
{
    bpe_enc *e = (bpe_enc *)enc;
    const pile__bpe *b = e->b;
    if (b->nfc) {
        size_t i = 0;
        while (i < len && (unsigned char)text[i] < 0x80) i++;
        if (i < len) {
            utf8proc_uint8_t *dst = NULL;
            utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)len, &dst,
                                              UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            if (r < 0) {
                return pile_err_set(err, r == UTF8PROC_ERROR_NOMEM ? PILE_ENOMEM : PILE_EINVAL,
                                    "cannot normalize text to NFC: %s", utf8proc_errmsg(r));
            }
            e->norm.len = 0;
            int rc = pile_buf_append(&e->norm, dst, (size_t)r);
            free(dst);
            if (rc) return pile_err_set(err, PILE_ENOMEM, "out of memory");
            text = e->norm.data;
            len = e->norm.len;
        }
    }
    if (b->n_added) return split_added(e, text, len, out, err);
    return run_stage(e, 0, text, len, out, err);
}

/* ------------------------------------------------------- the encoder */

static void enc_free(pile_encoder *enc)
{
    bpe_enc *e = (bpe_enc *)enc;
    if (!e) return;
    free(e->ids);
    free(e->rm);
    free(e->heap);
    pile_buf_free(&e->norm);
    for (size_t i = 0; i < PILE__BPE_MAX_STAGES; i++) {
        pile_buf_free(&e->pfx[i]);
        pcre2_match_data_free(e->md[i]);
    }
    pcre2_match_context_free(e->mctx);
    pcre2_jit_stack_free(e->jstack);
    free(e->hot);
    free(e->lcache);
    free(e);
}

static bpe_enc *enc_new(const pile__bpe *b)
{
    /* Cache-line aligned, whole lines: nothing an encoder writes shares a
     * line with another thread's encoder. */
    size_t esize = (sizeof(bpe_enc) + 63) / 64 * 64;
    bpe_enc *e = aligned_alloc(64, esize);
    if (!e) return NULL;
    memset(e, 0, esize);
    e->h.tok = &b->h;
    e->b = b;
    e->hot = aligned_alloc(64, sizeof(hslot) << HOT_BITS);
    e->lcache = aligned_alloc(64, sizeof(lslot) << LONG_BITS);
    if (e->hot) memset(e->hot, 0, sizeof(hslot) << HOT_BITS);
    if (e->lcache) memset(e->lcache, 0, sizeof(lslot) << LONG_BITS);
    int ok = e->hot && e->lcache && scratch(e, 256) == 0;
    for (size_t i = 0; ok && i < b->n_stages; i++) {
        if (b->stages[i].kind != PILE__SPLIT_REGEX) continue;
        e->md[i] = pcre2_match_data_create_from_pattern(b->stages[i].re, NULL);
        if (!e->md[i]) ok = 0;
        if (!e->mctx) {
            e->mctx = pcre2_match_context_create(NULL);
            e->jstack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
            if (!e->mctx || !e->jstack) ok = 0;
            else pcre2_jit_stack_assign(e->mctx, NULL, e->jstack);
        }
    }
    if (!ok) {
        enc_free(&e->h);
        return NULL;
    }
    return e;
}

static pile_encoder *enc_create(const pile_tokenizer *tok)
{
    bpe_enc *e = enc_new((const pile__bpe *)tok);
    return e ? &e->h : NULL;
}

int pile__bpe_mark_whole(pile__bpe *b, pile_err *err)
{
    bpe_enc *e = NULL;
    for (uint32_t id = 0; id < b->h.vocab_size; id++) {
        if ((b->flags[id] & (PILE__TOK_MODEL | PILE__TOK_SPECIAL)) != PILE__TOK_MODEL) continue;
        if (b->mode == PILE__BPE_RANKS || b->ignore_merges || b->len[id] == 1) {
            b->flags[id] |= PILE__TOK_WHOLE;
            continue;
        }
        /* Under listed merges a token's bytes need not merge back into it;
         * the whole-piece shortcut is taken only where they do. */
        if (!e && !(e = enc_new(b))) return pile_err_set(err, PILE_ENOMEM, "out of memory");
        size_t k;
        if (scratch(e, b->len[id]) ||
            bpe_merge(e, (const unsigned char *)b->bytes.data + b->off[id], b->len[id], e->ids, &k)) {
            enc_free(&e->h);
            return pile_err_set(err, PILE_ENOMEM, "out of memory");
        }
        if (k == 1 && e->ids[0] == id) b->flags[id] |= PILE__TOK_WHOLE;
    }
    if (e) enc_free(&e->h);
    for (uint32_t i = 0; i <= b->vmask; i++)
        if (b->vtab[i].id != NONE) b->vtab[i].whole = (b->flags[b->vtab[i].id] & PILE__TOK_WHOLE) != 0;
    return 0;
}

/* --------------------------------------------------------- decoding */

static int bpe_decode(const pile_tokenizer *tok, const uint32_t *ids, size_t n, pile_buf *out, pile_err *err)
{
    const pile__bpe *b = (const pile__bpe *)tok;
    for (size_t i = 0; i < n; i++) {
        uint32_t id = ids[i];
        if (id >= b->h.vocab_size || !(b->flags[id] & PILE__TOK_PRESENT))
            return pile_err_set(err, PILE_EINVAL, "token id %u is not in the vocabulary (size %u)", id,
                                b->h.vocab_size);
        if (pile_buf_append(out, b->bytes.data + b->off[id], b->len[id]))
            return pile_err_set(err, PILE_ENOMEM, "out of memory");
    }
    return 0;
}

static void bpe_close(pile_tokenizer *tok)
{
    pile__bpe_destroy((pile__bpe *)tok);
}

const pile__tok_vtable pile__bpe_vt = {
    .kind = "bpe",
    .close = bpe_close,
    .decode = bpe_decode,
    .encoder_create = enc_create,
    .encoder_free = enc_free,
    .encode = bpe_encode,
};
