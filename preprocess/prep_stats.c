/* pile-prep's running statistics and the closing summary. Counts are kept per
 * split and per line, in the packer's thread only, so that they can be taken
 * back for a document that straddles a resume point and restored exactly
 * from the manifest. */
#include "prep_internal.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "pile_utf8.h"

#define SPLIT_FILES_SHOWN 5 /* files named per split in the summary, then a count */

const char *const pile__prep_fix_names[PREP_NFIX] = {"empty", "nul", "too_long", "utf8", "over_limit"};

/* ----------------------------------------------------------------- names */

static int names_grow_slots(prep_names *t)
{
    size_t ns = t->nslots ? t->nslots * 2 : 64;
    uint32_t *slots = calloc(ns, sizeof *slots);
    if (!slots) return PILE_ENOMEM;
    for (size_t i = 0; i < t->n; i++) {
        size_t h = (size_t)XXH3_64bits(t->names[i], t->lens[i]) & (ns - 1);
        while (slots[h]) h = (h + 1) & (ns - 1);
        slots[h] = (uint32_t)i + 1;
    }
    free(t->slots);
    t->slots = slots;
    t->nslots = ns;
    return 0;
}

int pile__prep_names_intern(prep_names *t, const char *s, size_t len, uint32_t *id)
{
    if ((t->n + 1) * 2 > t->nslots && names_grow_slots(t)) return PILE_ENOMEM;
    size_t h = (size_t)XXH3_64bits(s, len) & (t->nslots - 1);
    while (t->slots[h]) {
        uint32_t i = t->slots[h] - 1;
        if (t->lens[i] == len && memcmp(t->names[i], s, len) == 0) {
            *id = i;
            return 0;
        }
        h = (h + 1) & (t->nslots - 1);
    }
    if (t->n == UINT32_MAX - 1) return PILE_ENOMEM;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 32;
        char **names = realloc(t->names, cap * sizeof *names);
        if (!names) return PILE_ENOMEM;
        t->names = names;
        size_t *lens = realloc(t->lens, cap * sizeof *lens);
        if (!lens) return PILE_ENOMEM;
        t->lens = lens;
        t->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy) return PILE_ENOMEM;
    memcpy(copy, s, len);
    copy[len] = '\0';
    t->names[t->n] = copy;
    t->lens[t->n] = len;
    t->slots[h] = (uint32_t)t->n + 1;
    *id = (uint32_t)t->n++;
    return 0;
}

void pile__prep_names_free(prep_names *t)
{
    for (size_t i = 0; i < t->n; i++) free(t->names[i]);
    free(t->names);
    free(t->lens);
    free(t->slots);
    memset(t, 0, sizeof *t);
}

/* ----------------------------------------------------------------- stats */

int pile__prep_stats_init(prep_stats *s, size_t n_inputs)
{
    memset(s, 0, sizeof *s);
    s->n_inputs = n_inputs;
    size_t n = n_inputs ? n_inputs : 1;
    s->input_lines = calloc(n, sizeof *s->input_lines);
    s->input_done = calloc(n, 1);
    s->input_truncated = calloc(n, 1);
    if (!s->input_lines || !s->input_done || !s->input_truncated) return PILE_ENOMEM;
    return 0;
}

void pile__prep_stats_free(prep_stats *s)
{
    for (int i = 0; i < PREP_NSPLITS; i++) free(s->split[i].subsets);
    pile__prep_names_free(&s->subsets);
    free(s->input_lines);
    free(s->input_done);
    free(s->input_truncated);
    memset(s, 0, sizeof *s);
}

int pile__prep_stats_doc(prep_stats *s, pile_split split, size_t input, uint32_t subset, uint64_t ntok,
                         unsigned repairs, int sign)
{
    prep_split_stats *ss = &s->split[split];
    if (subset >= ss->n_subsets) {
        size_t n = (size_t)subset + 1 > s->subsets.n ? (size_t)subset + 1 : s->subsets.n;
        if (n < 2 * ss->n_subsets) n = 2 * ss->n_subsets; /* one name at a time must not cost a copy each */
        prep_subset_count *v = realloc(ss->subsets, n * sizeof *v);
        if (!v) return PILE_ENOMEM;
        memset(v + ss->n_subsets, 0, (n - ss->n_subsets) * sizeof *v);
        ss->subsets = v;
        ss->n_subsets = n;
    }
    uint64_t d = (uint64_t)(int64_t)sign; /* wraps to subtract for -1 */
    ss->lines += d;
    ss->docs += d;
    ss->tokens += d * ntok;
    ss->subsets[subset].docs += d;
    ss->subsets[subset].tokens += d * ntok;
    if (repairs & PILE_REPAIR_UTF8) ss->repaired_utf8 += d;
    if (repairs & PILE_REPAIR_SURROGATE) ss->repaired_surrogate += d;
    if (repairs & PREP_NAME_EMPTY) ss->name_fixed[PREP_FIX_EMPTY] += d;
    if (repairs & PREP_NAME_NUL) ss->name_fixed[PREP_FIX_NUL] += d;
    if (repairs & PREP_NAME_LONG) ss->name_fixed[PREP_FIX_LONG] += d;
    if (repairs & PREP_NAME_UTF8) ss->name_fixed[PREP_FIX_UTF8] += d;
    if (repairs & PREP_NAME_OVER) ss->name_fixed[PREP_FIX_OVER] += d;
    s->input_lines[input] += d;
    return 0;
}

void pile__prep_stats_total(const prep_stats *s, prep_split_stats *out)
{
    memset(out, 0, sizeof *out);
    for (int i = 0; i < PREP_NSPLITS; i++) {
        const prep_split_stats *ss = &s->split[i];
        out->lines += ss->lines;
        out->docs += ss->docs;
        out->tokens += ss->tokens;
        out->rows += ss->rows;
        out->pad_tokens += ss->pad_tokens;
        for (int k = 0; k < PILE_SKIP_COUNT; k++) out->skipped[k] += ss->skipped[k];
        out->repaired_utf8 += ss->repaired_utf8;
        out->repaired_surrogate += ss->repaired_surrogate;
        for (int k = 0; k < PREP_NFIX; k++) out->name_fixed[k] += ss->name_fixed[k];
    }
}

static uint64_t skipped_sum(const prep_split_stats *ss)
{
    uint64_t n = 0;
    for (int k = 1; k < PILE_SKIP_COUNT; k++) n += ss->skipped[k];
    return n;
}

static void format_block(pile_buf *out, const prep_split_stats *ss, uint32_t max_length, const char *indent)
{
    uint64_t sk = skipped_sum(ss);
    pile_buf_printf(out, "%slines read %llu = documents %llu + skipped %llu\n", indent,
                    (unsigned long long)ss->lines, (unsigned long long)ss->docs, (unsigned long long)sk);
    if (sk) {
        pile_buf_printf(out, "%sskipped:", indent);
        for (int k = 1; k < PILE_SKIP_COUNT; k++)
            if (ss->skipped[k])
                pile_buf_printf(out, " %s %llu", pile_skip_name((pile_skip)k), (unsigned long long)ss->skipped[k]);
        pile_buf_printf(out, "\n");
    }
    if (ss->repaired_utf8 || ss->repaired_surrogate)
        pile_buf_printf(out, "%srepaired (kept): utf8 %llu, surrogate %llu\n", indent,
                        (unsigned long long)ss->repaired_utf8, (unsigned long long)ss->repaired_surrogate);
    uint64_t nfix = 0;
    for (int k = 0; k < PREP_NFIX; k++) nfix += ss->name_fixed[k];
    if (nfix) {
        pile_buf_printf(out, "%ssubset names fixed (documents):", indent);
        for (int k = 0; k < PREP_NFIX; k++)
            if (ss->name_fixed[k])
                pile_buf_printf(out, " %s %llu", pile__prep_fix_names[k], (unsigned long long)ss->name_fixed[k]);
        pile_buf_printf(out, "\n");
    }
    uint64_t slots = ss->rows * max_length;
    pile_buf_printf(out, "%stokens %llu in %llu rows of %u; padding %llu (%.4f%%)\n", indent,
                    (unsigned long long)ss->tokens, (unsigned long long)ss->rows, max_length,
                    (unsigned long long)ss->pad_tokens,
                    slots ? 100.0 * (double)ss->pad_tokens / (double)slots : 0.0);
}

static int cmp_name_idx(const void *a, const void *b, void *ctx)
{
    const prep_names *t = ctx;
    return strcmp(t->names[*(const uint32_t *)a], t->names[*(const uint32_t *)b]);
}

uint32_t *pile__prep_subsets_sorted(const prep_names *t)
{
    uint32_t *ids = malloc((t->n ? t->n : 1) * sizeof *ids);
    if (!ids) return NULL;
    for (size_t i = 0; i < t->n; i++) ids[i] = (uint32_t)i;
    qsort_r(ids, t->n, sizeof *ids, cmp_name_idx, (void *)t);
    return ids;
}

/* Which files went to which split, so that a validation file trained on (or
 * none at all) cannot go unnoticed: each split's files, the first few of a
 * long list, and what the trainer does without a validation file. */
static void format_split_files(const prep_state *st, pile_buf *out)
{
    for (int sp = 0; sp < PREP_NSPLITS; sp++) {
        size_t n = 0, shown = 0;
        for (size_t i = 0; i < st->n_inputs; i++) n += st->order[i]->split == (pile_split)sp;
        const char *name = pile_prep_split_name((pile_split)sp);
        if (!n && sp == PILE_SPLIT_VAL)
            pile_buf_printf(out, "  val: no file (none is named val, valid, validation, nor given with --val): "
                                 "pile-trainer will hold out --val_fraction (1%%) of train for validation\n");
        else if (!n)
            pile_buf_printf(out, "  %s: no file\n", name);
        if (!n) continue;
        pile_buf_printf(out, "  %s: %zu file%s:", name, n, n == 1 ? "" : "s");
        for (size_t i = 0; i < st->n_inputs && shown < SPLIT_FILES_SHOWN; i++)
            if (st->order[i]->split == (pile_split)sp)
                pile_buf_printf(out, "%s %s", shown++ ? "," : "", st->order[i]->path);
        if (n > shown) pile_buf_printf(out, " and %zu more", n - shown);
        pile_buf_printf(out, "\n");
    }
}

int pile__prep_stats_format(const prep_state *st, pile_buf *out)
{
    const prep_stats *s = &st->stats;
    prep_split_stats tot;
    pile__prep_stats_total(s, &tot);
    size_t ntrunc = 0;
    for (size_t i = 0; i < s->n_inputs; i++) ntrunc += s->input_truncated[i];
    pile_buf_printf(out, "inputs %zu (%zu truncated)\n", st->n_inputs, ntrunc);
    format_split_files(st, out);
    for (size_t i = 0; i < s->n_inputs; i++)
        if (s->input_truncated[i]) pile_buf_printf(out, "  truncated: %s\n", st->order[i]->path);
    format_block(out, &tot, st->max_length, "");
    uint32_t *ids = pile__prep_subsets_sorted(&s->subsets);
    if (!ids) return PILE_ENOMEM;
    pile_buf name = {0};
    for (int sp = 0; sp < PREP_NSPLITS; sp++) {
        const prep_split_stats *ss = &s->split[sp];
        if (!ss->lines && !ss->rows) continue;
        pile_buf_printf(out, "%s:\n", pile_prep_split_name((pile_split)sp));
        format_block(out, ss, st->max_length, "  ");
        for (size_t k = 0; k < s->subsets.n; k++) {
            uint32_t id = ids[k];
            if (id >= ss->n_subsets || !ss->subsets[id].docs) continue;
            /* names come from the input: no control character reaches the terminal raw */
            name.len = 0;
            pile_utf8_escape(s->subsets.names[id], s->subsets.lens[id], 80, &name);
            pile_buf_printf(out, "  %-24s %10llu docs %14llu tokens\n", name.data ? name.data : "",
                            (unsigned long long)ss->subsets[id].docs, (unsigned long long)ss->subsets[id].tokens);
        }
    }
    free(ids);
    int failed = name.failed;
    pile_buf_free(&name);
    return out->failed || failed ? PILE_ENOMEM : 0;
}
