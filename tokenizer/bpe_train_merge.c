/* The BPE merge loop and the tokenizer.json writer. The loop is the one Hugging
 * Face's BpeTrainer runs (tokenizers/src/models/bpe/trainer.rs): distinct words
 * as id sequences with counts, exact pair counts, per-pair lists of the words
 * holding the pair, and incremental updates of only the pairs next to each
 * merge site. The best pair comes from an indexed max-heap (count, then the
 * smaller left id, then the smaller right id: HF's Merge ordering, so with the
 * same ids the same merges come out); after each merge only the pairs whose
 * counts changed are re-sifted, once each. Pairs below min_frequency are kept
 * counted but out of the heap. */
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "bpe_train_internal.h"
#include "pile_json.h"

#define NONE UINT32_MAX

/* ------------------------------------------------------- bytes_to_unicode */

/* GPT-2: the printable bytes stand for themselves; the other 68 take the code
 * points 256, 257, ... in byte order. */
static int byte_printable(unsigned b)
{
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

uint32_t pile__bpe_byte_char(uint8_t b)
{
    if (byte_printable(b)) return b;
    uint32_t n = 0;
    for (unsigned x = 0; x < b; x++) n += !byte_printable(x);
    return 256 + n;
}

/* ------------------------------------------------------------- pair table */

typedef struct pair {
    uint32_t a, b;
    int64_t count;
    uint32_t heap_pos;  /* NONE when not in the heap */
    uint32_t dirty;     /* the merge step that last queued it for a heap fix */
    uint32_t *occ;      /* words that hold (or held) the pair; stale entries are harmless */
    uint32_t occ_len, occ_cap;
} pair;

typedef struct pslot {
    uint64_t key;  /* a << 32 | b */
    uint32_t idx;  /* NONE: empty */
} pslot;

typedef struct word {
    uint64_t start;  /* into syms */
    uint64_t count;
    uint32_t len;
    uint32_t stamp;  /* the merge step that last rewrote it */
} word;

typedef struct tslot {
    uint64_t off;  /* into learner.keys */
    uint32_t len;
    uint32_t id;   /* NONE: empty */
} tslot;

typedef struct learner {
    /* words */
    word *words;
    size_t n_words;
    uint32_t *syms;
    /* pairs */
    pair *pairs;
    size_t n_pairs, cap_pairs;
    pslot *pmap;
    size_t pmap_cap;
    /* the pairs with count >= min_freq */
    struct hent *heap;
    size_t heap_n, heap_cap;
    /* pairs changed in this merge step */
    uint32_t *dirty;
    size_t n_dirty, cap_dirty;
    uint32_t step;
    int64_t min_freq;
    /* per-word scratch */
    uint8_t *cov, *isnew;
    size_t scratch_cap;
    /* token bytes -> id, for tokens of two or more bytes */
    tslot *tmap;
    size_t tmap_cap, tmap_n;
    pile_buf keys;
    /* where each special's bytes sit in keys (len 0: its text is not
     * byte-level, so no merge can make it) */
    uint64_t *sp_off;
    uint32_t *sp_len;
} learner;

static uint64_t pkey(uint32_t a, uint32_t b)
{
    return (uint64_t)a << 32 | b;
}

static size_t phash(uint64_t key, size_t cap)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 17) & (cap - 1);
}

static int pmap_grow(learner *L)
{
    size_t ncap = L->pmap_cap ? L->pmap_cap * 2 : 1u << 16;
    pslot *ns = malloc(ncap * sizeof(pslot));
    if (!ns) return PILE_ENOMEM;
    for (size_t i = 0; i < ncap; i++) ns[i].idx = NONE;
    for (size_t i = 0; i < L->pmap_cap; i++) {
        if (L->pmap[i].idx == NONE) continue;
        size_t j = phash(L->pmap[i].key, ncap);
        while (ns[j].idx != NONE) j = (j + 1) & (ncap - 1);
        ns[j] = L->pmap[i];
    }
    free(L->pmap);
    L->pmap = ns;
    L->pmap_cap = ncap;
    return 0;
}

/* The index of pair (a, b), created with count 0 when absent; NONE on OOM. */
static uint32_t pair_get(learner *L, uint32_t a, uint32_t b)
{
    if ((L->n_pairs + 1) * 4 > L->pmap_cap * 3 && pmap_grow(L) < 0) return NONE;
    uint64_t key = pkey(a, b);
    size_t j = phash(key, L->pmap_cap);
    for (; L->pmap[j].idx != NONE; j = (j + 1) & (L->pmap_cap - 1))
        if (L->pmap[j].key == key) return L->pmap[j].idx;
    if (L->n_pairs == L->cap_pairs) {
        size_t nc = L->cap_pairs ? L->cap_pairs * 2 : 1u << 14;
        if (nc >= NONE) return NONE; /* pair indices are 32-bit */
        pair *np = realloc(L->pairs, nc * sizeof(pair));
        if (!np) return NONE;
        L->pairs = np;
        L->cap_pairs = nc;
    }
    uint32_t idx = (uint32_t)L->n_pairs++;
    L->pairs[idx] = (pair){.a = a, .b = b, .heap_pos = NONE, .dirty = NONE};
    L->pmap[j].key = key;
    L->pmap[j].idx = idx;
    return idx;
}

static int occ_push(pair *p, uint32_t w)
{
    if (p->occ_len && p->occ[p->occ_len - 1] == w) return 0;
    if (p->occ_len == p->occ_cap) {
        uint32_t nc = p->occ_cap ? p->occ_cap * 2 : 4;
        uint32_t *no = realloc(p->occ, (size_t)nc * sizeof(uint32_t));
        if (!no) return PILE_ENOMEM;
        p->occ = no;
        p->occ_cap = nc;
    }
    p->occ[p->occ_len++] = w;
    return 0;
}

/* ------------------------------------------------------------------- heap */

/* A heap entry keeps its own copy of the pair's key: counts change for many
 * pairs during one merge step and are re-sifted one by one afterwards, which
 * is only sound when every other entry still orders by its old key. */
typedef struct hent {
    int64_t count;
    uint32_t a, b;
    uint32_t p;
} hent;

/* HF's Merge order: the higher count first; on a tie the smaller pair of ids. */
static int better(const hent *x, const hent *y)
{
    if (x->count != y->count) return x->count > y->count;
    if (x->a != y->a) return x->a < y->a;
    return x->b < y->b;
}

static void heap_set(learner *L, size_t i, hent e)
{
    L->heap[i] = e;
    L->pairs[e.p].heap_pos = (uint32_t)i;
}

static void sift_up(learner *L, size_t i)
{
    hent e = L->heap[i];
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!better(&e, &L->heap[up])) break;
        heap_set(L, i, L->heap[up]);
        i = up;
    }
    heap_set(L, i, e);
}

static void sift_down(learner *L, size_t i)
{
    hent e = L->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, best = i;
        const hent *be = &e;
        if (l < L->heap_n && better(&L->heap[l], be)) best = l, be = &L->heap[l];
        if (l + 1 < L->heap_n && better(&L->heap[l + 1], be)) best = l + 1;
        if (best == i) break;
        heap_set(L, i, L->heap[best]);
        i = best;
    }
    heap_set(L, i, e);
}

static void heap_remove(learner *L, uint32_t p)
{
    size_t i = L->pairs[p].heap_pos;
    L->pairs[p].heap_pos = NONE;
    hent last = L->heap[--L->heap_n];
    if (i == L->heap_n) return;
    heap_set(L, i, last);
    sift_up(L, i);
    sift_down(L, L->pairs[last.p].heap_pos);
}

/* Brings pair p's heap entry in line with its count. */
static int heap_fix(learner *L, uint32_t p)
{
    pair *pp = &L->pairs[p];
    if (pp->count >= L->min_freq) {
        hent e = {.count = pp->count, .a = pp->a, .b = pp->b, .p = p};
        if (pp->heap_pos == NONE) {
            if (L->heap_n == L->heap_cap) {
                size_t nc = L->heap_cap ? L->heap_cap * 2 : 4096;
                hent *nh = realloc(L->heap, nc * sizeof(hent));
                if (!nh) return PILE_ENOMEM;
                L->heap = nh;
                L->heap_cap = nc;
            }
            L->heap[L->heap_n] = e;
            pp->heap_pos = (uint32_t)L->heap_n++;
            sift_up(L, pp->heap_pos);
        } else {
            L->heap[pp->heap_pos] = e;
            sift_up(L, pp->heap_pos);
            sift_down(L, pp->heap_pos);
        }
    } else if (pp->heap_pos != NONE) {
        heap_remove(L, p);
    }
    return 0;
}

/* ------------------------------------------------------------ token table */

static const char *tok_bytes(const pile__bpe_model *m, uint32_t id, size_t *len)
{
    *len = (size_t)(m->str_off[id + 1] - m->str_off[id]);
    return m->strs.data + m->str_off[id];
}

/* The bytes token id stands for: a special's are the bytes its text
 * decodes to (its model entry holds the text, for the JSON), the others'
 * are their model entry. */
static const char *merge_part(const learner *L, const pile__bpe_model *m, uint32_t id, size_t *len)
{
    if (id < m->n_specials) {
        *len = L->sp_len[id];
        return L->keys.data + L->sp_off[id];
    }
    return tok_bytes(m, id, len);
}

/* The bytes a slot stands for live in L->keys (not in the model: a special
 * is keyed by the bytes its text decodes to, not by the text). */
static const char *tkey(const learner *L, const tslot *t)
{
    return L->keys.data + t->off;
}

static size_t tfind(const learner *L, const char *s, size_t n)
{
    size_t j = (size_t)XXH3_64bits(s, n) & (L->tmap_cap - 1);
    for (; L->tmap[j].id != NONE; j = (j + 1) & (L->tmap_cap - 1))
        if (L->tmap[j].len == n && memcmp(tkey(L, &L->tmap[j]), s, n) == 0) break;
    return j;
}

static int tmap_grow(learner *L)
{
    size_t ncap = L->tmap_cap ? L->tmap_cap * 2 : 1u << 12;
    tslot *nt = malloc(ncap * sizeof(tslot));
    if (!nt) return PILE_ENOMEM;
    for (size_t i = 0; i < ncap; i++) nt[i].id = NONE;
    tslot *old = L->tmap;
    size_t ocap = L->tmap_cap;
    L->tmap = nt;
    L->tmap_cap = ncap;
    for (size_t i = 0; i < ocap; i++)
        if (old[i].id != NONE) L->tmap[tfind(L, tkey(L, &old[i]), old[i].len)] = old[i];
    free(old);
    return 0;
}

/* The id of the token with bytes s[0..n); when there is none, `id` is
 * registered under them and returned. NONE on OOM. */
static uint32_t tmap_get(learner *L, const char *s, size_t n, uint32_t id)
{
    if ((L->tmap_n + 1) * 2 > L->tmap_cap && tmap_grow(L) < 0) return NONE;
    size_t j = tfind(L, s, n);
    if (L->tmap[j].id != NONE) return L->tmap[j].id;
    uint64_t off = L->keys.len;
    if (pile_buf_append(&L->keys, s, n) < 0) return NONE;
    L->tmap[j] = (tslot){.off = off, .len = (uint32_t)n, .id = id};
    L->tmap_n++;
    return id;
}

static int model_push(pile__bpe_model *m, size_t *cap, const char *s, size_t n)
{
    if (m->n_tokens + 2 > *cap) {
        size_t nc = *cap ? *cap * 2 : 1024;
        uint64_t *no = realloc(m->str_off, nc * sizeof(uint64_t));
        if (!no) return PILE_ENOMEM;
        m->str_off = no;
        *cap = nc;
    }
    PILE_FORWARD_IF_ERR(pile_buf_append(&m->strs, s, n));
    m->n_tokens++;
    m->str_off[m->n_tokens] = m->strs.len;
    return 0;
}

/* ------------------------------------------------------------ merge step */

static int scratch(learner *L, size_t n)
{
    if (n <= L->scratch_cap) return 0;
    size_t nc = L->scratch_cap ? L->scratch_cap : 64;
    while (nc < n) nc *= 2;
    uint8_t *a = realloc(L->cov, nc);
    if (!a) return PILE_ENOMEM;
    L->cov = a;
    uint8_t *b = realloc(L->isnew, nc);
    if (!b) return PILE_ENOMEM;
    L->isnew = b;
    L->scratch_cap = nc;
    return 0;
}

static int mark_dirty(learner *L, uint32_t p)
{
    if (L->pairs[p].dirty == L->step) return 0;
    if (L->n_dirty == L->cap_dirty) {
        size_t nc = L->cap_dirty ? L->cap_dirty * 2 : 1024;
        uint32_t *nd = realloc(L->dirty, nc * sizeof(uint32_t));
        if (!nd) return PILE_ENOMEM;
        L->dirty = nd;
        L->cap_dirty = nc;
    }
    L->dirty[L->n_dirty++] = p;
    L->pairs[p].dirty = L->step;
    return 0;
}

/* Adds delta to pair (x, y) on behalf of word w (listed when delta > 0). */
static int pair_add(learner *L, uint32_t x, uint32_t y, int64_t delta, uint32_t w)
{
    uint32_t p = pair_get(L, x, y);
    if (p == NONE) return PILE_ENOMEM;
    L->pairs[p].count += delta;
    if (delta > 0) PILE_FORWARD_IF_ERR(occ_push(&L->pairs[p], w));
    return mark_dirty(L, p);
}

/* Rewrites word w with every (a, b) -> z, left to right without overlap
 * (as the encoder applies a merge), and moves the counts of exactly the pairs
 * that touch a merge site: each old one goes, each new one comes. */
static int merge_word(learner *L, uint32_t w, uint32_t a, uint32_t b, uint32_t z)
{
    word *wd = &L->words[w];
    uint32_t *s = L->syms + wd->start;
    size_t n = wd->len, hits = 0;
    PILE_FORWARD_IF_ERR(scratch(L, n));
    uint8_t *cov = L->cov, *isnew = L->isnew;
    memset(cov, 0, n);
    for (size_t i = 0; i + 1 < n;) {
        if (s[i] == a && s[i + 1] == b) {
            cov[i] = 1; /* the left half of a merge */
            cov[i + 1] = 2;
            i += 2;
            hits++;
        } else {
            i++;
        }
    }
    if (!hits) return 0; /* a stale entry of the occurrence list */
    int64_t c = (int64_t)wd->count;
    for (size_t j = 0; j + 1 < n; j++)
        if (cov[j] || cov[j + 1]) PILE_FORWARD_IF_ERR(pair_add(L, s[j], s[j + 1], -c, w));
    size_t k = 0;
    for (size_t i = 0; i < n; k++) {
        if (cov[i] == 1) {
            s[k] = z;
            isnew[k] = 1;
            i += 2;
        } else {
            s[k] = s[i];
            isnew[k] = 0;
            i++;
        }
    }
    for (size_t j = 0; j + 1 < k; j++)
        if (isnew[j] || isnew[j + 1]) PILE_FORWARD_IF_ERR(pair_add(L, s[j], s[j + 1], c, w));
    wd->len = (uint32_t)k;
    return 0;
}

/* ----------------------------------------------------------------- learn */

static void learner_free(learner *L)
{
    free(L->words);
    free(L->syms);
    for (size_t i = 0; i < L->n_pairs; i++) free(L->pairs[i].occ);
    free(L->pairs);
    free(L->pmap);
    free(L->heap);
    free(L->dirty);
    free(L->cov);
    free(L->isnew);
    free(L->tmap);
    pile_buf_free(&L->keys);
    free(L->sp_off);
    free(L->sp_len);
}

/* Decodes a special token's text from byte-level characters into bytes;
 * 0 when some character is not one of the 256. */
static int special_bytes(const char *t, pile_buf *out)
{
    uint32_t back[324];
    for (unsigned i = 0; i < 324; i++) back[i] = NONE;
    for (unsigned b = 0; b < 256; b++) back[pile__bpe_byte_char((uint8_t)b)] = b;
    const unsigned char *p = (const unsigned char *)t;
    while (*p) {
        uint32_t cp;
        if (p[0] < 0x80) cp = *p++;
        else if ((p[0] & 0xE0) == 0xC0 && (p[1] & 0xC0) == 0x80) cp = (uint32_t)(p[0] & 0x1F) << 6 | (p[1] & 0x3F), p += 2;
        else return 0;
        if (cp >= 324 || back[cp] == NONE) return 0;
        char ch = (char)back[cp];
        if (pile_buf_append(out, &ch, 1) < 0) return PILE_ENOMEM;
    }
    return 1;
}

static int oom(pile_err *err)
{
    return pile_err_set(err, PILE_ENOMEM, "cannot train BPE: out of memory");
}

int pile__bpe_learn(const pile__bpe_counts *c, const pile_bpe_train_opts *opts, pile__bpe_model *m,
                    pile_err *err)
{
    static const char *const default_specials[] = {"<|endoftext|>"};
    const char *const *specials = opts->specials ? opts->specials : default_specials;
    size_t n_specials = opts->specials ? opts->n_specials : 1;
    memset(m, 0, sizeof(*m));
    if (n_specials > 1u << 16)
        return pile_err_set(err, PILE_EINVAL, "cannot train BPE: %zu special tokens is too many", n_specials);
    if (opts->vocab_size < 256 + n_specials)
        return pile_err_set(err, PILE_EINVAL,
                            "cannot train BPE: vocab_size %u is less than the 256 byte tokens and %zu special tokens",
                            opts->vocab_size, n_specials);
    for (size_t i = 0; i < n_specials; i++) {
        if (!specials[i] || !*specials[i])
            return pile_err_set(err, PILE_EINVAL, "cannot train BPE: special token %zu is empty", i);
        for (size_t j = 0; j < i; j++)
            if (strcmp(specials[i], specials[j]) == 0)
                return pile_err_set(err, PILE_EINVAL, "cannot train BPE: special token '%s' is given twice",
                                    specials[i]);
    }

    learner L = {0};
    L.min_freq = opts->min_frequency ? opts->min_frequency : 2;
    size_t off_cap = 0;
    int rc = 0;
    pile_buf tmp = {0};
    m->n_specials = (uint32_t)n_specials;

    /* ids: specials, then the bytes in the order of their characters */
    if (!(m->str_off = calloc(off_cap = 1024, sizeof(uint64_t)))) goto nomem;
    for (size_t i = 0; i < n_specials; i++)
        if (model_push(m, &off_cap, specials[i], strlen(specials[i])) < 0) goto nomem;
    uint32_t byte_id[256];
    {
        uint32_t rank = 0;
        for (unsigned b = 0; b < 256; b++)
            if (byte_printable(b)) byte_id[b] = rank++;
        for (unsigned b = 0; b < 256; b++)
            if (!byte_printable(b)) byte_id[b] = rank++;
        char order[256];
        for (unsigned b = 0; b < 256; b++) order[byte_id[b]] = (char)b;
        for (unsigned r = 0; r < 256; r++) {
            if (model_push(m, &off_cap, &order[r], 1) < 0) goto nomem;
            byte_id[(unsigned char)order[r]] = (uint32_t)n_specials + r;
        }
    }
    /* A special whose text reads as byte-level characters names those bytes,
     * as in HF (its vocabulary is keyed by that text): a merge that makes
     * them gets the special's id. */
    L.sp_off = calloc(n_specials ? n_specials : 1, sizeof *L.sp_off);
    L.sp_len = calloc(n_specials ? n_specials : 1, sizeof *L.sp_len);
    if (!L.sp_off || !L.sp_len) goto nomem;
    for (size_t i = 0; i < n_specials; i++) {
        tmp.len = 0;
        int r = special_bytes(specials[i], &tmp);
        if (r < 0) goto nomem;
        if (!r) continue;
        if (tmp.len == 1) {
            rc = pile_err_set(err, PILE_EINVAL, "cannot train BPE: special token '%s' is a byte token's character",
                              specials[i]);
            goto fail;
        }
        L.sp_off[i] = L.keys.len; /* specials differ, so each adds its key */
        L.sp_len[i] = (uint32_t)tmp.len;
        if (tmap_get(&L, tmp.data, tmp.len, (uint32_t)i) == NONE) goto nomem;
    }

    /* words: every piece of two or more bytes as byte ids */
    {
        size_t it = 0, nw = 0, nsym = 0, len;
        const char *piece;
        uint64_t cnt;
        while (pile__bpe_counts_next(c, &it, &piece, &len, &cnt))
            if (len >= 2) nw++, nsym += len;
        if (nw >= NONE) {
            rc = pile_err_set(err, PILE_ELIMIT, "cannot train BPE: %zu distinct pieces is too many", nw);
            goto fail;
        }
        L.words = malloc((nw ? nw : 1) * sizeof(word));
        L.syms = malloc((nsym ? nsym : 1) * sizeof(uint32_t));
        if (!L.words || !L.syms) goto nomem;
        it = 0;
        nsym = 0;
        while (pile__bpe_counts_next(c, &it, &piece, &len, &cnt)) {
            if (len < 2) continue;
            word *wd = &L.words[L.n_words++];
            wd->start = nsym;
            wd->len = (uint32_t)len;
            wd->count = cnt;
            wd->stamp = 0;
            for (size_t i = 0; i < len; i++) L.syms[nsym++] = byte_id[(unsigned char)piece[i]];
        }
    }
    /* initial pair counts */
    for (size_t w = 0; w < L.n_words; w++) {
        const word *wd = &L.words[w];
        const uint32_t *s = L.syms + wd->start;
        for (size_t j = 0; j + 1 < wd->len; j++) {
            uint32_t p = pair_get(&L, s[j], s[j + 1]);
            if (p == NONE) goto nomem;
            L.pairs[p].count += (int64_t)wd->count;
            if (occ_push(&L.pairs[p], (uint32_t)w) < 0) goto nomem;
        }
    }
    for (uint32_t p = 0; p < L.n_pairs; p++)
        if (heap_fix(&L, p) < 0) goto nomem;

    size_t merges_cap = 0;
    while (m->n_tokens < opts->vocab_size && L.heap_n > 0) {
        uint32_t p = L.heap[0].p;
        if (L.pairs[p].count < L.min_freq) break;
        heap_remove(&L, p);
        uint32_t a = L.pairs[p].a, b = L.pairs[p].b;

        /* the new token's bytes, or the existing token with those bytes */
        size_t la, lb;
        const char *sa = merge_part(&L, m, a, &la), *sb = merge_part(&L, m, b, &lb);
        tmp.len = 0;
        if (pile_buf_append(&tmp, sa, la) < 0 || pile_buf_append(&tmp, sb, lb) < 0) goto nomem;
        uint32_t z = tmap_get(&L, tmp.data, tmp.len, m->n_tokens);
        if (z == NONE) goto nomem;
        if (z == m->n_tokens && model_push(m, &off_cap, tmp.data, tmp.len) < 0) goto nomem;
        if (m->n_merges == merges_cap) {
            merges_cap = merges_cap ? merges_cap * 2 : 1024;
            uint32_t *nm = realloc(m->merges, merges_cap * 2 * sizeof(uint32_t));
            if (!nm) goto nomem;
            m->merges = nm;
            uint32_t *ni = realloc(m->merge_ids, merges_cap * sizeof(uint32_t));
            if (!ni) goto nomem;
            m->merge_ids = ni;
        }
        m->merges[2 * m->n_merges] = a;
        m->merges[2 * m->n_merges + 1] = b;
        m->merge_ids[m->n_merges++] = z;

        /* rewrite the words; the list is detached first because a pair's
         * list can only grow again when a later merge re-forms it */
        L.step++;
        L.n_dirty = 0;
        uint32_t *occ = L.pairs[p].occ, n_occ = L.pairs[p].occ_len;
        L.pairs[p].occ = NULL;
        L.pairs[p].occ_len = L.pairs[p].occ_cap = 0;
        for (uint32_t i = 0; i < n_occ; i++) {
            uint32_t w = occ[i];
            if (L.words[w].stamp == L.step) continue;
            L.words[w].stamp = L.step;
            if (merge_word(&L, w, a, b, z) < 0) {
                free(occ);
                goto nomem;
            }
        }
        free(occ);
        for (size_t i = 0; i < L.n_dirty; i++)
            if (heap_fix(&L, L.dirty[i]) < 0) goto nomem;
    }
    pile_buf_free(&tmp);
    learner_free(&L);
    return 0;

nomem:
    rc = oom(err);
fail:
    pile_buf_free(&tmp);
    learner_free(&L);
    pile__bpe_model_free(m);
    return rc;
}

void pile__bpe_model_free(pile__bpe_model *m)
{
    if (!m) return;
    pile_buf_free(&m->strs);
    free(m->str_off);
    free(m->merges);
    free(m->merge_ids);
    memset(m, 0, sizeof(*m));
}

/* ------------------------------------------------------------------ json */

/* Appends token id as its vocabulary key: a special's own text, else each
 * byte as its bytes_to_unicode character (UTF-8). */
static int append_token(pile_buf *key, const pile__bpe_model *m, uint32_t id)
{
    size_t n;
    const char *s = tok_bytes(m, id, &n);
    if (id < m->n_specials) return pile_buf_append(key, s, n);
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = pile__bpe_byte_char((uint8_t)s[i]);
        char u[2];
        size_t k = 0;
        if (cp < 0x80) {
            u[k++] = (char)cp;
        } else {
            u[k++] = (char)(0xC0 | (cp >> 6));
            u[k++] = (char)(0x80 | (cp & 0x3F));
        }
        PILE_FORWARD_IF_ERR(pile_buf_append(key, u, k));
    }
    return 0;
}

int pile__bpe_model_json(const pile__bpe_model *m, pile_buf *out)
{
    pile_buf key = {0};
    int rc = 0;
#define TRY(x)                   \
    do {                         \
        if ((rc = (x)) < 0) goto done; \
    } while (0)
    TRY(pile_buf_append_str(out, "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n"
                                 "  \"added_tokens\": ["));
    for (uint32_t i = 0; i < m->n_specials; i++) {
        size_t n;
        const char *s = tok_bytes(m, i, &n);
        TRY(pile_buf_printf(out, "%s\n    {\"id\": %u, \"content\": ", i ? "," : "", i));
        TRY(pile_json_write_string(out, s, n));
        TRY(pile_buf_append_str(out, ", \"single_word\": false, \"lstrip\": false, \"rstrip\": false, "
                                     "\"normalized\": false, \"special\": true}"));
    }
    TRY(pile_buf_append_str(
        out, "\n  ],\n  \"normalizer\": null,\n"
             "  \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, "
             "\"use_regex\": true},\n"
             "  \"post_processor\": null,\n"
             "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true, "
             "\"use_regex\": true},\n"
             "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": null,\n"
             "    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n"
             "    \"fuse_unk\": false,\n    \"byte_fallback\": false,\n    \"vocab\": {"));
    for (uint32_t id = 0; id < m->n_tokens; id++) {
        key.len = 0;
        TRY(append_token(&key, m, id));
        TRY(pile_buf_append_str(out, id ? ",\n      " : "\n      "));
        TRY(pile_json_write_string(out, key.data, key.len));
        TRY(pile_buf_printf(out, ": %u", id));
    }
    TRY(pile_buf_append_str(out, "\n    },\n    \"merges\": ["));
    /* "left right": byte-level characters never include a space */
    for (size_t i = 0; i < m->n_merges; i++) {
        key.len = 0;
        TRY(append_token(&key, m, m->merges[2 * i]));
        TRY(pile_buf_append(&key, " ", 1));
        TRY(append_token(&key, m, m->merges[2 * i + 1]));
        TRY(pile_buf_append_str(out, i ? ",\n      " : "\n      "));
        TRY(pile_json_write_string(out, key.data, key.len));
    }
    TRY(pile_buf_append_str(out, "\n    ]\n  }\n}\n"));
#undef TRY
done:
    pile_buf_free(&key);
    return rc;
}
