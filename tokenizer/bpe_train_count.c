/* The piece -> count map of the BPE trainer: open addressing with linear
 * probing over 24-byte slots, the piece bytes in one arena. It is the trainer's
 * main memory cost, so slots hold an offset rather than a pointer and the
 * full 64-bit hash is not kept (32 bits suffice to skip most compares). */
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "bpe_train_internal.h"

typedef struct slot {
    uint64_t off;   /* into arena */
    uint64_t count;
    uint32_t len;   /* 0: empty (pieces are never empty) */
    uint32_t hash;  /* low 32 bits of the hash */
} slot;

struct pile__bpe_counts {
    slot *slots;
    size_t cap;     /* power of two, or 0 */
    size_t n;
    pile_buf arena;
};

pile__bpe_counts *pile__bpe_counts_create(void)
{
    return calloc(1, sizeof(pile__bpe_counts));
}

void pile__bpe_counts_free(pile__bpe_counts *c)
{
    if (!c) return;
    free(c->slots);
    pile_buf_free(&c->arena);
    free(c);
}

size_t pile__bpe_counts_size(const pile__bpe_counts *c)
{
    return c->n;
}

static uint64_t hash_bytes(const char *s, size_t n)
{
    return XXH3_64bits(s, n);
}

/* Places an existing piece in a table known to have room and not to hold it. */
static void place(slot *slots, size_t cap, const slot *s, uint64_t h)
{
    size_t i = (size_t)h & (cap - 1);
    while (slots[i].len) i = (i + 1) & (cap - 1);
    slots[i] = *s;
}

static int grow(pile__bpe_counts *c)
{
    size_t ncap = c->cap ? c->cap * 2 : 1024;
    slot *ns = calloc(ncap, sizeof(slot));
    if (!ns) return PILE_ENOMEM;
    for (size_t i = 0; i < c->cap; i++) {
        const slot *s = &c->slots[i];
        if (!s->len) continue;
        place(ns, ncap, s, hash_bytes(c->arena.data + s->off, s->len));
    }
    free(c->slots);
    c->slots = ns;
    c->cap = ncap;
    return 0;
}

static int add_hashed(pile__bpe_counts *c, const char *piece, size_t len, uint64_t n, uint64_t h)
{
    if ((c->n + 1) * 10 > c->cap * 7) PILE_FORWARD_IF_ERR(grow(c));
    size_t mask = c->cap - 1, i = (size_t)h & mask;
    uint32_t h32 = (uint32_t)(h >> 32);
    for (;; i = (i + 1) & mask) {
        slot *s = &c->slots[i];
        if (!s->len) break;
        if (s->hash == h32 && s->len == len && memcmp(c->arena.data + s->off, piece, len) == 0) {
            s->count += n;
            return 0;
        }
    }
    if (len > UINT32_MAX) return PILE_ENOMEM;
    uint64_t off = c->arena.len;
    PILE_FORWARD_IF_ERR(pile_buf_append(&c->arena, piece, len));
    c->slots[i] = (slot){.off = off, .count = n, .len = (uint32_t)len, .hash = h32};
    c->n++;
    return 0;
}

int pile__bpe_counts_add(pile__bpe_counts *c, const char *piece, size_t len, uint64_t n)
{
    return add_hashed(c, piece, len, n, hash_bytes(piece, len));
}

int pile__bpe_counts_absorb(pile__bpe_counts *dst, pile__bpe_counts *src)
{
    for (size_t i = 0; i < src->cap; i++) {
        const slot *s = &src->slots[i];
        if (!s->len) continue;
        PILE_FORWARD_IF_ERR(pile__bpe_counts_add(dst, src->arena.data + s->off, s->len, s->count));
    }
    if (src->slots) memset(src->slots, 0, src->cap * sizeof(slot));
    src->n = 0;
    src->arena.len = 0;
    return 0;
}

long long pile__bpe_counts_prune(pile__bpe_counts *c, uint64_t below)
{
    /* Rebuild into a fresh table and arena sized for the survivors, so the
     * memory the dropped pieces held is really given back. */
    size_t keep = 0, bytes = 0;
    for (size_t i = 0; i < c->cap; i++)
        if (c->slots[i].len && c->slots[i].count >= below) keep++, bytes += c->slots[i].len;
    size_t ncap = 1024;
    while ((keep + 1) * 10 > ncap * 7) ncap *= 2;
    slot *ns = calloc(ncap, sizeof(slot));
    pile_buf na = {0};
    if (!ns || pile_buf_reserve(&na, bytes + 1) < 0) {
        free(ns);
        pile_buf_free(&na);
        return PILE_ENOMEM;
    }
    for (size_t i = 0; i < c->cap; i++) {
        slot s = c->slots[i];
        if (!s.len || s.count < below) continue;
        const char *p = c->arena.data + s.off;
        s.off = na.len;
        memcpy(na.data + na.len, p, s.len);
        na.len += s.len;
        place(ns, ncap, &s, hash_bytes(p, s.len));
    }
    long long dropped = (long long)(c->n - keep);
    free(c->slots);
    pile_buf_free(&c->arena);
    c->slots = ns;
    c->cap = ncap;
    c->n = keep;
    c->arena = na;
    return dropped;
}

int pile__bpe_counts_next(const pile__bpe_counts *c, size_t *i, const char **piece, size_t *len, uint64_t *count)
{
    for (; *i < c->cap; (*i)++) {
        const slot *s = &c->slots[*i];
        if (!s->len) continue;
        *piece = c->arena.data + s->off;
        *len = s->len;
        *count = s->count;
        (*i)++;
        return 1;
    }
    return 0;
}
