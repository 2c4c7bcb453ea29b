/* The byte-level BPE backend's tokenizer object, shared by the builder and
 * encoder (bpe.c), the pre-tokenization pipeline (bpe_split.c) and the file
 * loaders (bpe_load.c). Loaders only call the pile__bpe_add_* builders and
 * pile__bpe_finish, so every file format ends in the same tables. */
#ifndef PILE_BPE_INTERNAL_H
#define PILE_BPE_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <string.h>

#include "tokenizer_internal.h"

/* How pairs merge. MERGES: a listed pair (Hugging Face merges, GPT-2's
 * vocab.bpe), rank = its place in the list. RANKS: tiktoken's rule, any two
 * adjacent parts whose concatenation is a token merge, rank = that token's
 * rank (= its id), and a piece that is itself a token is that token. */
enum { PILE__BPE_MERGES = 1, PILE__BPE_RANKS = 2 };

/* Token flags. */
#define PILE__TOK_PRESENT 1u /* the id has bytes */
#define PILE__TOK_MODEL 2u   /* in the BPE vocabulary */
#define PILE__TOK_SPECIAL 4u /* never produced from text */
#define PILE__TOK_ADDED 8u   /* a non-special added token, matched in text before pre-tokenization */
#define PILE__TOK_WHOLE 16u  /* a piece equal to this token's bytes encodes to just this id */

/* Pre-tokenization stages. */
enum { PILE__SPLIT_GPT2 = 1, PILE__SPLIT_REGEX = 2 };
/* What a Split does with the matches (Hugging Face SplitDelimiterBehavior). */
enum { PILE__BEH_ISOLATED = 0, PILE__BEH_REMOVED, PILE__BEH_MERGED_PREV, PILE__BEH_MERGED_NEXT };

#define PILE__BPE_MAX_STAGES 8

typedef struct pile__split {
    int kind;
    int behavior;
    int prefix_space; /* ByteLevel add_prefix_space: a piece not starting with ' ' gets one */
    int onig;         /* a Hugging Face Split regex, read as Oniguruma's Ruby syntax does: ^ and $ at line breaks */
    int onig_differs; /* ... and that reading or the splitting at empty matches may change its pieces */
    char *pattern;    /* as the file gave it */
    pcre2_code *re;   /* REGEX only */
} pile__split;

/* A vocabulary slot carries the token's first 8 bytes and its length, so a
 * lookup of a piece of up to 8 bytes touches one cache line and nothing else. */
typedef struct pile__vslot {
    uint64_t pfx;  /* first 8 bytes, zero-padded */
    uint32_t id;   /* UINT32_MAX: empty */
    uint16_t len;  /* 0xFFFF: 65535 or more (see len[id]) */
    uint8_t whole; /* PILE__TOK_WHOLE is set for id */
    uint8_t pad;
} pile__vslot;

typedef struct pile__pslot {
    uint64_t key; /* left << 32 | right; UINT64_MAX: empty */
    uint32_t rank;
    uint32_t merged;
} pile__pslot;

typedef struct pile__bpe {
    pile_tokenizer h;
    int mode;
    int ignore_merges; /* Hugging Face ignore_merges: a piece that is a token is that token */

    /* Tokens by id. */
    uint32_t cap_ids;
    uint32_t *off, *len;
    uint8_t *flags;
    pile_buf bytes;
    uint32_t byte_id[256];

    /* Merges (MERGES mode): pairs of ids in rank order. */
    uint32_t *merges;
    size_t n_merges, cap_merges;

    /* Tables built by pile__bpe_finish. */
    pile__vslot *vtab; /* bytes -> id over MODEL tokens that are not SPECIAL */
    uint32_t vmask;
    unsigned vshift;   /* slot = hash >> vshift */
    pile__pslot *ptab; /* (left, right) -> (rank, merged) */
    uint32_t pmask;
    unsigned pshift;
    uint64_t *byte_pair; /* [x << 8 | y]: the pair of byte tokens x, y as rank << 32 | merged, or UINT64_MAX */

    /* Pre-tokenization. */
    int nfc;
    pile__split stages[PILE__BPE_MAX_STAGES];
    size_t n_stages;
    uint32_t *added; /* ADDED ids, longest first */
    size_t n_added;
    uint8_t added_first[256]; /* 1 if some added token starts with this byte */
} pile__bpe;

/* The first 8 bytes of p[0..n), zero-padded. */
static inline uint64_t pile__bpe_pfx(const unsigned char *p, size_t n)
{
    uint64_t x = 0;
    memcpy(&x, p, n < 8 ? n : 8);
    return x;
}

/* The same, where the bytes up to end may be read: on a little-endian
 * machine one 8-byte load and a mask instead of a variable-length copy. */
static inline uint64_t pile__bpe_word(const unsigned char *p, size_t n, const unsigned char *end)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (end - p >= 8) {
        uint64_t x;
        memcpy(&x, p, 8);
        return n >= 8 ? x : x & ((1ull << (8 * n)) - 1);
    }
#else
    (void)end;
#endif
    return pile__bpe_pfx(p, n);
}

#define PILE__BPE_MUL 0x9E3779B97F4A7C15ull

/* The hash of a piece given its prefix: a multiply per 8 bytes, read from
 * the top bits (tables index with h >> shift), which a multiply mixes well
 * and which costs a few instructions on the path most pieces take. */
static inline uint64_t pile__bpe_hash_end(uint64_t pfx, const unsigned char *p, size_t n, const unsigned char *end)
{
    uint64_t h = (pfx ^ ((uint64_t)n << 58 | (uint64_t)n)) * PILE__BPE_MUL;
    for (size_t i = 8; i < n; i += 8) {
        uint64_t w = pile__bpe_word(p + i, n - i, end);
        h = ((h << 29 | h >> 35) ^ w) * 0xBF58476D1CE4E5B9ull;
    }
    return h;
}

static inline uint64_t pile__bpe_hash(uint64_t pfx, const unsigned char *p, size_t n)
{
    return pile__bpe_hash_end(pfx, p, n, p + n);
}

/* The slot of a pair (left << 32 | right) in ptab: top bits of a multiply. */
static inline uint32_t pile__bpe_pair_slot(uint64_t key, unsigned shift)
{
    return (uint32_t)((key * 0xBF58476D1CE4E5B9ull) >> shift);
}

/* The slot of the token whose bytes are p[0..n), or NULL. */
static inline const pile__vslot *pile__bpe_vfind(const struct pile__bpe *b, const unsigned char *p, size_t n);

/* ---- building (bpe.c); name is the file for messages ---- */
int pile__bpe_create(pile__bpe **out, int mode, pile_err *err);
void pile__bpe_destroy(pile__bpe *b);
int pile__bpe_add_token(pile__bpe *b, uint32_t id, const void *bytes, size_t len, unsigned flags, const char *name,
                        pile_err *err);
/* Marks id special (never matched in text) with its text; adds it if absent. */
int pile__bpe_add_special(pile__bpe *b, const char *text, size_t len, uint32_t id, const char *name, pile_err *err);
int pile__bpe_add_merge(pile__bpe *b, uint32_t left, uint32_t right, pile_err *err);
/* Appends a pre-tokenization stage; pattern is ignored for GPT2 (NULL ok).
 * onig: the pattern is a Hugging Face Split regex (Oniguruma's dialect). */
int pile__bpe_add_stage(pile__bpe *b, int kind, const char *pattern, size_t pattern_len, int behavior, int prefix_space,
                        int onig, const char *name, pile_err *err);
/* Checks and builds the tables, picks the end-of-text id, computes the fingerprint. */
int pile__bpe_finish(pile__bpe *b, const char *name, pile_err *err);

/* Sets PILE__TOK_WHOLE where a token's own bytes encode to it (bpe_encode.c). */
int pile__bpe_mark_whole(pile__bpe *b, pile_err *err);

extern const pile__tok_vtable pile__bpe_vt;

/* 1 if pattern is GPT-2's pattern (the original or tiktoken's equivalent spelling). */
int pile__bpe_is_gpt2_pattern(const char *pattern, size_t len);

/* ---- loaders (bpe_load.c) ---- */
int pile__bpe_load_tiktoken(pile__bpe **out, const char *path, pile_err *err);
int pile__bpe_load_gpt2_dir(pile__bpe **out, const char *dir, pile_err *err);
/* GPT-2's files built into the library (gpt2_data.c). */
int pile__bpe_load_gpt2_builtin(pile__bpe **out, pile_err *err);
int pile__bpe_load_hf_json(pile__bpe **out, const char *path, pile_err *err);

/* The GPT-2 byte <-> printable code point mapping. */
uint32_t pile__bpe_byte_to_cp(unsigned byte);
/* The byte of a mapped code point, or -1. */
int pile__bpe_cp_to_byte(uint32_t cp);

static inline const pile__vslot *pile__bpe_vfind(const pile__bpe *b, const unsigned char *p, size_t n)
{
    uint64_t pfx = pile__bpe_pfx(p, n);
    uint16_t l16 = n >= 0xFFFF ? 0xFFFF : (uint16_t)n;
    for (uint32_t i = (uint32_t)(pile__bpe_hash(pfx, p, n) >> b->vshift);; i = (i + 1) & b->vmask) {
        const pile__vslot *s = &b->vtab[i];
        if (s->id == UINT32_MAX) return NULL;
        if (s->pfx != pfx || s->len != l16) continue;
        if (n <= 8) return s;
        if (b->len[s->id] == n && memcmp(b->bytes.data + b->off[s->id] + 8, p + 8, n - 8) == 0) return s;
    }
}

#endif
