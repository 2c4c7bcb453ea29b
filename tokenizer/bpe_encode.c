/* BPE encoding and decoding. Per piece: one hash lookup of the whole piece
 * (most pieces are one token), then a bounded per-encoder cache of recent
 * multi-token pieces, then the merges themselves: a rescan of a small rank
 * array for short pieces, a heap over a linked list (O(n log n)) for long
 * ones. Both pick the leftmost pair of lowest rank, as tiktoken and Hugging
 * Face do. All scratch is in the encoder, so encoders on different threads
 * share only the read-only tokenizer. */
#include "bpe_internal.h"
#include "pretok.h"
#include "pretok_internal.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#define NONE UINT32_MAX
#define SHORT_MAX 48         /* longer pieces use the heap */
#define CACHE_SLOTS (1u << 16)
#define CACHE_MAX_PIECE 64   /* bytes; longer pieces are not cached */
#define CACHE_INLINE_IDS 4
#define CACHE_KEY_BYTES (CACHE_SLOTS * 16u)
#define CACHE_IDS (CACHE_SLOTS * 8u)

/* Cache layout: an open-addressing table of 32-byte slots. A piece of up to
 * 8 bytes with up to 4 ids lives wholly in its slot (one cache line per
 * lookup); a longer one keeps its bytes and ids in two arenas, found by
 * ids[0] and ids[1]. When the table is 3/4 full or an arena is, everything is
 * dropped at once: memory stays fixed however large the corpus. */
typedef struct cslot {
    uint64_t pfx;
    uint32_t tag;  /* low half of the hash */
    uint16_t klen; /* 0: empty */
    uint16_t nids;
    uint32_t ids[CACHE_INLINE_IDS];
} cslot;

/* A small direct-mapped cache in front of everything, sized to stay in L2:
 * pieces of up to 8 bytes that encode to up to 5 ids. A few thousand short
 * pieces make most of any text, so most pieces end here. */
#define HOT_SLOTS 8192u
#define HOT_IDS 5
typedef struct hslot {
    uint64_t pfx;
    uint8_t len; /* 0: empty */
    uint8_t nids;
    uint16_t pad;
    uint32_t ids[HOT_IDS];
} hslot;

typedef struct bpe_enc {
    pile_encoder h;
    const pile__bpe *b;
    uint32_t *ids, *rk, *mg, *nx, *pv; /* merge scratch, cap entries each */
    size_t cap;
    uint64_t *heap;
    size_t heap_cap;
    pile_buf norm;
    pile_buf pfx[PILE__BPE_MAX_STAGES];
    pcre2_match_data *md[PILE__BPE_MAX_STAGES];
    pcre2_match_context *mctx;
    pcre2_jit_stack *jstack;
    hslot *hot;
    cslot *cache;
    unsigned char *ckeys;
    uint32_t *cids;
    size_t ck_used, ci_used, c_count;
} bpe_enc;

static inline uint32_t pair_rank(const pile__bpe *b, uint32_t l, uint32_t r, uint32_t *merged)
{
    uint64_t key = (uint64_t)l << 32 | r;
    for (uint32_t i = (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 20) & b->pmask;; i = (i + 1) & b->pmask) {
        const pile__pslot *s = &b->ptab[i];
        if (s->key == key) {
            *merged = s->merged;
            return s->rank;
        }
        if (s->key == UINT64_MAX) return NONE;
    }
}

static int scratch(bpe_enc *e, size_t n)
{
    if (n <= e->cap) return 0;
    size_t cap = e->cap ? e->cap : 256;
    while (cap < n) cap *= 2;
    uint32_t **arr[] = {&e->ids, &e->rk, &e->mg, &e->nx, &e->pv};
    for (size_t i = 0; i < sizeof arr / sizeof *arr; i++) {
        uint32_t *p = realloc(*arr[i], cap * sizeof *p);
        if (!p) return PILE_ENOMEM;
        *arr[i] = p;
    }
    e->cap = cap;
    return 0;
}

/* Leftmost lowest-rank merge until none applies; ids[0..n) in place. */
static size_t merge_short(const pile__bpe *b, uint32_t *ids, uint32_t *rk, uint32_t *mg, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++) rk[i] = pair_rank(b, ids[i], ids[i + 1], &mg[i]);
    while (n > 1) {
        uint32_t best = NONE;
        size_t bi = 0;
        for (size_t i = 0; i + 1 < n; i++) {
            if (rk[i] < best) {
                best = rk[i];
                bi = i;
            }
        }
        if (best == NONE) break;
        ids[bi] = mg[bi];
        n--;
        memmove(ids + bi + 1, ids + bi + 2, (n - bi - 1) * sizeof *ids);
        if (bi + 1 < n) {
            memmove(rk + bi + 1, rk + bi + 2, (n - bi - 2) * sizeof *rk);
            memmove(mg + bi + 1, mg + bi + 2, (n - bi - 2) * sizeof *mg);
            rk[bi] = pair_rank(b, ids[bi], ids[bi + 1], &mg[bi]);
        }
        if (bi > 0) rk[bi - 1] = pair_rank(b, ids[bi - 1], ids[bi], &mg[bi - 1]);
    }
    return n;
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

static int merge_long(bpe_enc *e, size_t n, size_t *out_n)
{
    const pile__bpe *b = e->b;
    uint32_t *ids = e->ids, *nx = e->nx, *pv = e->pv, m = 0;
    size_t hn = 0;
    for (size_t i = 0; i < n; i++) {
        nx[i] = (uint32_t)(i + 1);
        pv[i] = i ? (uint32_t)(i - 1) : NONE;
    }
    for (size_t i = 0; i + 1 < n; i++) {
        uint32_t r = pair_rank(b, ids[i], ids[i + 1], &m);
        if (r != NONE && heap_push(e, &hn, (uint64_t)r << 32 | i)) return PILE_ENOMEM;
    }
    while (hn) {
        uint64_t top = heap_pop(e, &hn);
        uint32_t rank = (uint32_t)(top >> 32), i = (uint32_t)top;
        if (ids[i] == NONE || nx[i] >= n) continue;
        uint32_t j = nx[i];
        /* A stale entry: the pair at i changed since it was pushed. */
        if (pair_rank(b, ids[i], ids[j], &m) != rank) continue;
        ids[i] = m;
        ids[j] = NONE;
        nx[i] = nx[j];
        if (nx[j] < n) pv[nx[j]] = i;
        if (pv[i] != NONE) {
            uint32_t k = pv[i], r = pair_rank(b, ids[k], ids[i], &m);
            if (r != NONE && heap_push(e, &hn, (uint64_t)r << 32 | k)) return PILE_ENOMEM;
        }
        if (nx[i] < n) {
            uint32_t r = pair_rank(b, ids[i], ids[nx[i]], &m);
            if (r != NONE && heap_push(e, &hn, (uint64_t)r << 32 | i)) return PILE_ENOMEM;
        }
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i = nx[i]) ids[k++] = ids[i];
    *out_n = k;
    return 0;
}

/* The merges of one piece, no shortcuts; the result is in e->ids[0..*k). */
static int bpe_merge(bpe_enc *e, const unsigned char *p, size_t n, size_t *k)
{
    if (scratch(e, n)) return PILE_ENOMEM;
    const uint32_t *byte_id = e->b->byte_id;
    for (size_t i = 0; i < n; i++) e->ids[i] = byte_id[p[i]];
    if (n <= SHORT_MAX) {
        *k = merge_short(e->b, e->ids, e->rk, e->mg, n);
        return 0;
    }
    return merge_long(e, n, k);
}

static void cache_clear(bpe_enc *e)
{
    memset(e->cache, 0, CACHE_SLOTS * sizeof *e->cache);
    e->ck_used = e->ci_used = e->c_count = 0;
}

static inline int cslot_inline(size_t klen, size_t nids)
{
    return klen <= 8 && nids <= CACHE_INLINE_IDS;
}

static int encode_piece_slow(bpe_enc *e, const unsigned char *p, size_t n, uint64_t pfx, uint64_t h, pile_ids *out)
{
    const pile__bpe *b = e->b;
    uint16_t l16 = n >= 0xFFFF ? 0xFFFF : (uint16_t)n;
    for (uint32_t i = (uint32_t)h & b->vmask;; i = (i + 1) & b->vmask) {
        const pile__vslot *s = &b->vtab[i];
        if (s->id == NONE) break;
        if (s->pfx != pfx || s->len != l16) continue;
        if (n > 8 && (b->len[s->id] != n || memcmp(b->bytes.data + b->off[s->id] + 8, p + 8, n - 8) != 0)) continue;
        if (s->whole) {
            out->data[out->len++] = s->id;
            return 0;
        }
        break;
    }
    cslot *slot = NULL;
    uint32_t tag = (uint32_t)h;
    if (n <= CACHE_MAX_PIECE) {
        uint32_t i = (uint32_t)(h >> 40) & (CACHE_SLOTS - 1);
        for (;; i = (i + 1) & (CACHE_SLOTS - 1)) {
            cslot *s = &e->cache[i];
            if (s->klen == 0) break;
            if (s->tag != tag || s->pfx != pfx || s->klen != n) continue;
            if (cslot_inline(n, s->nids)) {
                memcpy(out->data + out->len, s->ids, s->nids * sizeof(uint32_t));
            } else {
                if (memcmp(e->ckeys + s->ids[0], p, n) != 0) continue;
                memcpy(out->data + out->len, e->cids + s->ids[1], s->nids * sizeof(uint32_t));
            }
            out->len += s->nids;
            return 0;
        }
        slot = &e->cache[i];
    }
    size_t k;
    if (bpe_merge(e, p, n, &k)) return PILE_ENOMEM;
    memcpy(out->data + out->len, e->ids, k * sizeof(uint32_t));
    out->len += k;
    if (slot && k <= UINT16_MAX) {
        int inl = cslot_inline(n, k);
        if (e->c_count >= CACHE_SLOTS / 4 * 3 || (!inl && (e->ck_used + n > CACHE_KEY_BYTES || e->ci_used + k > CACHE_IDS))) {
            cache_clear(e);
            slot = &e->cache[(uint32_t)(h >> 40) & (CACHE_SLOTS - 1)];
        }
        slot->pfx = pfx;
        slot->tag = tag;
        slot->klen = (uint16_t)n;
        slot->nids = (uint16_t)k;
        if (inl) {
            memcpy(slot->ids, e->ids, k * sizeof(uint32_t));
        } else {
            slot->ids[0] = (uint32_t)e->ck_used;
            slot->ids[1] = (uint32_t)e->ci_used;
            memcpy(e->ckeys + e->ck_used, p, n);
            memcpy(e->cids + e->ci_used, e->ids, k * sizeof(uint32_t));
            e->ck_used += n;
            e->ci_used += k;
        }
        e->c_count++;
    }
    return 0;
}

static inline int encode_piece(bpe_enc *e, const unsigned char *p, size_t n, pile_ids *out)
{
    if (out->cap - out->len < n + HOT_IDS && pile_ids_reserve(out, n + HOT_IDS)) return PILE_ENOMEM;
    uint64_t pfx = pile__bpe_pfx(p, n);
    uint64_t h = pile__bpe_hash(pfx, p, n);
    if (n > 8) return encode_piece_slow(e, p, n, pfx, h, out);
    hslot *hs = &e->hot[(h >> 20) & (HOT_SLOTS - 1)];
    if (hs->pfx == pfx && hs->len == n) {
        memcpy(out->data + out->len, hs->ids, HOT_IDS * sizeof(uint32_t));
        out->len += hs->nids;
        return 0;
    }
    size_t before = out->len;
    if (encode_piece_slow(e, p, n, pfx, h, out)) return PILE_ENOMEM;
    size_t k = out->len - before;
    if (k <= HOT_IDS) {
        hs->pfx = pfx;
        hs->len = (uint8_t)n;
        hs->nids = (uint8_t)k;
        memcpy(hs->ids, out->data + before, k * sizeof(uint32_t));
    }
    return 0;
}

/* --------------------------------------------------- pre-tokenization */

static int run_stage(bpe_enc *e, size_t k, const char *s, size_t n, pile_ids *out, pile_err *err);

static int regex_stage(bpe_enc *e, size_t k, const char *s, size_t n, pile_ids *out, pile_err *err)
{
    const pile__split *st = &e->b->stages[k];
    pcre2_match_data *md = e->md[k];
    size_t pos = 0, last = 0;
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
            /* An empty match splits nothing; step over one character. */
            uint32_t cp;
            pos = ms + pile__utf8_next((const unsigned char *)s, n, ms, &cp);
            continue;
        }
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
        pos = me;
    }
    if (last < n) PILE_FORWARD_IF_ERR(run_stage(e, k + 1, s + last, n - last, out, err));
    return 0;
}

static int run_stage(bpe_enc *e, size_t k, const char *s, size_t n, pile_ids *out, pile_err *err)
{
    const pile__bpe *b = e->b;
    if (n == 0) return 0;
    if (k == b->n_stages) {
        if (encode_piece(e, (const unsigned char *)s, n, out)) return pile_err_set(err, PILE_ENOMEM, "out of memory");
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
        for (size_t p = 0; p < n;) {
            size_t q = pile__pretok_gpt2_next(s, n, p);
            if (encode_piece(e, (const unsigned char *)s + p, q - p, out))
                return pile_err_set(err, PILE_ENOMEM, "out of memory");
            p = q;
        }
        return 0;
    }
    for (size_t p = 0; p < n;) {
        size_t q = pile__pretok_gpt2_next(s, n, p);
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
    free(e->rk);
    free(e->mg);
    free(e->nx);
    free(e->pv);
    free(e->heap);
    pile_buf_free(&e->norm);
    for (size_t i = 0; i < PILE__BPE_MAX_STAGES; i++) {
        pile_buf_free(&e->pfx[i]);
        pcre2_match_data_free(e->md[i]);
    }
    pcre2_match_context_free(e->mctx);
    pcre2_jit_stack_free(e->jstack);
    free(e->hot);
    free(e->cache);
    free(e->ckeys);
    free(e->cids);
    free(e);
}

static bpe_enc *enc_new(const pile__bpe *b)
{
    bpe_enc *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->h.tok = &b->h;
    e->b = b;
    e->hot = calloc(HOT_SLOTS, sizeof *e->hot);
    e->cache = calloc(CACHE_SLOTS, sizeof *e->cache);
    e->ckeys = malloc(CACHE_KEY_BYTES);
    e->cids = malloc(CACHE_IDS * sizeof *e->cids);
    int ok = e->hot && e->cache && e->ckeys && e->cids && scratch(e, 256) == 0;
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
        if (bpe_merge(e, (const unsigned char *)b->bytes.data + b->off[id], b->len[id], &k)) {
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
