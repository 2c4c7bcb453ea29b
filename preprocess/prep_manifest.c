/* OUT/manifest.json: what pile-prep has finished and where it goes on. It is
 * rewritten atomically after every finished shard, holds no timing and
 * nothing else that varies between runs, so that a run that was killed and
 * resumed ends with exactly the same bytes as one that was not. */
#include "prep_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "pile_fs.h"
#include "pile_hex.h"
#include "pile_utf8.h"

#define MANIFEST_FORMAT "pile-prep manifest"

static const char *pack_name(pile_pack p)
{
    return p == PILE_PACK_BEST_FIT ? "best-fit" : "concat";
}

/* Paths and tokenizer specs are bytes, JSON text is UTF-8: an invalid byte
 * is written as U+FFFD (else the manifest could not be read back), and a
 * resumed run compares its own paths spelled the same way. */
static int utf8_spelling(const char *s, pile_buf *out)
{
    out->len = 0;
    return pile_utf8_repair(s, strlen(s), out) < 0 ? PILE_ENOMEM : 0;
}

static void put_str(pile_buf *b, const char *s)
{
    size_t n = strlen(s);
    if (pile_utf8_valid(s, n)) {
        pile_json_write_string(b, s, n);
        return;
    }
    pile_buf fixed = {0};
    if (utf8_spelling(s, &fixed)) b->failed = 1;
    else pile_json_write_string(b, fixed.data, fixed.len);
    pile_buf_free(&fixed);
}

static void put_u64(pile_buf *b, const char *indent, const char *key, uint64_t v, int comma)
{
    pile_buf_printf(b, "%s\"%s\": %" PRIu64 "%s\n", indent, key, v, comma ? "," : "");
}

/* The options that decide the output, as one JSON object: also how a
 * resumed run compares itself with the manifest. */
static void write_options(pile_buf *b, const prep_state *st)
{
    char fp[2 * PILE_TOKENIZER_FP_BYTES + 1];
    pile_hex_encode(fp, st->tok_fp, PILE_TOKENIZER_FP_BYTES);
    pile_buf_printf(b, "{\n    \"tokenizer\": ");
    put_str(b, st->tok_spec);
    pile_buf_printf(b, ",\n    \"tokenizer_kind\": ");
    put_str(b, st->tok_kind);
    pile_buf_printf(b, ",\n    \"tokenizer_fingerprint\": \"%s\",\n", fp);
    put_u64(b, "    ", "vocab_size", st->vocab_size, 1);
    put_u64(b, "    ", "eot_id", st->eot_id, 1);
    put_u64(b, "    ", "pad_id", st->eot_id, 1);
    put_u64(b, "    ", "max_length", st->max_length, 1);
    pile_buf_printf(b, "    \"pack\": \"%s\",\n", pack_name(st->pack));
    put_u64(b, "    ", "shard_bytes", st->shard_bytes, 1);
    put_u64(b, "    ", "rows_per_shard", st->rows_per_shard, 1);
    put_u64(b, "    ", "window_rows", st->pack == PILE_PACK_BEST_FIT ? st->window_rows : 0, 1);
    put_u64(b, "    ", "window_tokens",
            st->pack == PILE_PACK_BEST_FIT ? (uint64_t)st->window_rows * st->max_length : 0, 1);
    put_u64(b, "    ", "max_line_bytes", st->max_line_bytes, 1);
    pile_buf_printf(b, "    \"text_key\": ");
    put_str(b, st->text_key);
    pile_buf_printf(b, ",\n    \"subset_key\": ");
    put_str(b, st->subset_key);
    pile_buf_printf(b, ",\n");
    const pile_prep_partition *pt = st->opts->partition;
    if (pt)
        pile_buf_printf(b,
                        "    \"partition\": {\"index\": %u, \"count\": %u, \"inputs_total\": %zu, "
                        "\"inputs_xxh3\": \"%016" PRIx64 "\"},\n",
                        pt->index, pt->count, pt->inputs_total, pt->inputs_xxh3);
    pile_buf_printf(b, "    \"megatron\": %s\n  }", st->megatron ? "true" : "false");
}

static void write_split_stats(pile_buf *b, const prep_split_stats *ss, const prep_names *names, const uint32_t *ids,
                              uint32_t max_length, const char *in)
{
    uint64_t sk = 0;
    for (int k = 1; k < PILE_SKIP_COUNT; k++) sk += ss->skipped[k];
    put_u64(b, in, "lines", ss->lines, 1);
    put_u64(b, in, "documents", ss->docs, 1);
    put_u64(b, in, "skipped", sk, 1);
    pile_buf_printf(b, "%s\"skipped_by_reason\": {", in);
    for (int k = 1; k < PILE_SKIP_COUNT; k++)
        pile_buf_printf(b, "%s\"%s\": %" PRIu64, k > 1 ? ", " : "", pile_skip_name((pile_skip)k), ss->skipped[k]);
    pile_buf_printf(b, "},\n");
    pile_buf_printf(b, "%s\"repaired_by_kind\": {\"utf8\": %" PRIu64 ", \"surrogate\": %" PRIu64 "},\n", in,
                    ss->repaired_utf8, ss->repaired_surrogate);
    put_u64(b, in, "tokens", ss->tokens, 1);
    put_u64(b, in, "rows", ss->rows, 1);
    put_u64(b, in, "padding_tokens", ss->pad_tokens, 1);
    pile_buf_printf(b, "%s\"subset_names_fixed\": {", in);
    for (int k = 0; k < PREP_NFIX; k++)
        pile_buf_printf(b, "%s\"%s\": %" PRIu64, k ? ", " : "", pile__prep_fix_names[k], ss->name_fixed[k]);
    pile_buf_printf(b, "},\n");
    uint64_t slots = ss->rows * max_length;
    pile_buf_printf(b, "%s\"padding_fraction\": %.6f", in, slots ? (double)ss->pad_tokens / (double)slots : 0.0);
    if (!names) {
        pile_buf_printf(b, "\n");
        return;
    }
    pile_buf_printf(b, ",\n%s\"subsets\": {", in);
    int first = 1;
    for (size_t k = 0; k < names->n; k++) {
        uint32_t id = ids[k];
        if (id >= ss->n_subsets || !ss->subsets[id].docs) continue;
        pile_buf_printf(b, "%s\n%s  ", first ? "" : ",", in);
        pile_json_write_string(b, names->names[id], names->lens[id]);
        pile_buf_printf(b, ": {\"documents\": %" PRIu64 ", \"tokens\": %" PRIu64 "}", ss->subsets[id].docs,
                        ss->subsets[id].tokens);
        first = 0;
    }
    if (first) pile_buf_printf(b, "}\n");
    else pile_buf_printf(b, "\n%s}\n", in);
}

/* A point in the inputs (a resume point, a shard's start). */
static void write_point(pile_buf *b, const prep_resume *r)
{
    pile_buf_printf(b, "{\"input\": %" PRIu64 ", \"line\": %" PRIu64 ", \"token_offset\": %" PRIu64 "%s}", r->input,
                    r->line, r->tok_off, r->fallback ? ", \"subset_fallback\": true" : "");
}

static void write_files(pile_buf *b, const prep_files *f)
{
    pile_buf_printf(b, "[");
    for (size_t i = 0; i < f->n; i++) {
        pile_buf_printf(b, "%s{\"file\": ", i ? ", " : "");
        put_str(b, f->v[i].name);
        pile_buf_printf(b, ", \"bytes\": %" PRIu64 ", \"xxh3\": \"%016" PRIx64 "\"}", f->v[i].size, f->v[i].xxh3);
    }
    pile_buf_printf(b, "]");
}

static int manifest_text(const prep_state *st, pile_buf *b)
{
    const prep_stats *s = &st->stats;
    uint32_t *ids = pile__prep_subsets_sorted(&s->subsets);
    if (!ids) return PILE_ENOMEM;
    pile_buf_printf(b, PREP_MANIFEST_OPENING "  \"version\": %d,\n  \"tool\": \"pile-prep %s\",\n",
                    PILE_PREP_MANIFEST_VERSION, PILE_PREP_VERSION);
    pile_buf_printf(b, "  \"complete\": %s,\n  \"options\": ", st->complete ? "true" : "false");
    write_options(b, st);
    /* where options.tokenizer came from, and the copy it names (relative to this folder) */
    pile_buf_printf(b, ",\n  \"tokenizer_copy\": {\"source\": ");
    put_str(b, st->tok_source ? st->tok_source : "bytes");
    pile_buf_printf(b, ", \"files\": ");
    write_files(b, &st->tok_files);
    pile_buf_printf(b, "}");
    pile_buf_printf(b, ",\n  \"inputs\": [");
    for (size_t i = 0; i < st->n_inputs; i++) {
        const pile_prep_input *in = st->order[i];
        pile_buf_printf(b, "%s\n    {\"path\": ", i ? "," : "");
        put_str(b, in->path);
        pile_buf_printf(b,
                        ", \"split\": \"%s\", \"size\": %" PRIu64 ", \"mtime_ns\": %" PRId64 ", \"dev\": %" PRIu64
                        ", \"ino\": %" PRIu64 ", \"lines_done\": %" PRIu64 ", \"done\": %s, \"truncated\": %s}",
                        pile_prep_split_name(in->split), in->size, in->mtime_ns, in->dev, in->ino, s->input_lines[i],
                        s->input_done[i] ? "true" : "false", s->input_truncated[i] ? "true" : "false");
    }
    pile_buf_printf(b, "\n  ],\n  \"shards\": [");
    for (size_t i = 0; i < st->n_shards; i++) {
        const prep_shard_rec *r = &st->shards[i];
        pile_buf_printf(b,
                        "%s\n    {\"file\": \"%s\", \"split\": \"%s\", \"rows\": %" PRIu64 ", \"documents\": %" PRIu64
                        ", \"tokens\": %" PRIu64 ", \"bytes\": %" PRIu64 ", \"data_xxh3\": \"%016" PRIx64 "\"",
                        i ? "," : "", r->file, pile_prep_split_name(r->split), r->rows, r->docs, r->tokens, r->size,
                        r->checksum);
        if (r->has_start) {
            pile_buf_printf(b, ", \"start\": ");
            write_point(b, &r->start);
        }
        pile_buf_printf(b, "}");
    }
    pile_buf_printf(b, "%s],\n", st->n_shards ? "\n  " : "");
    if (st->mega_files.n) {
        pile_buf_printf(b, "  \"megatron_files\": ");
        write_files(b, &st->mega_files);
        pile_buf_printf(b, ",\n");
    }
    pile_buf_printf(b, "  \"resume\": ");
    write_point(b, &st->resume);
    pile_buf_printf(b, ",\n");
    prep_split_stats tot;
    pile__prep_stats_total(s, &tot);
    uint64_t ntrunc = 0;
    for (size_t i = 0; i < s->n_inputs; i++) ntrunc += s->input_truncated[i];
    pile_buf_printf(b, "  \"stats\": {\n");
    put_u64(b, "    ", "inputs", st->n_inputs, 1);
    put_u64(b, "    ", "truncated_inputs", ntrunc, 1);
    write_split_stats(b, &tot, NULL, NULL, st->max_length, "    ");
    if (b->len) b->len--; /* the newline: a comma follows */
    pile_buf_printf(b, ",\n    \"splits\": {");
    int first = 1;
    for (int sp = 0; sp < PREP_NSPLITS; sp++) {
        int present = 0;
        for (size_t i = 0; i < st->n_inputs; i++) present |= st->order[i]->split == (pile_split)sp;
        if (!present) continue;
        pile_buf_printf(b, "%s\n      \"%s\": {\n", first ? "" : ",", pile_prep_split_name((pile_split)sp));
        write_split_stats(b, &s->split[sp], &s->subsets, ids, st->max_length, "        ");
        pile_buf_printf(b, "      }");
        first = 0;
    }
    pile_buf_printf(b, "\n    }\n  }\n}\n");
    free(ids);
    return b->failed ? PILE_ENOMEM : 0;
}

int pile__prep_manifest_write(const prep_state *st, pile_err *err)
{
    pile_buf text = {0}, path = {0};
    int rc = manifest_text(st, &text);
    if (!rc && pile_fs_join(&path, st->opts->output_dir, "manifest.json")) rc = PILE_ENOMEM;
    if (rc) {
        pile_buf_free(&text);
        pile_buf_free(&path);
        return pile_err_set(err, PILE_ENOMEM, "out of memory");
    }
    rc = pile_fs_write_atomic(path.data, text.data, text.len, err);
    pile_buf_free(&text);
    pile_buf_free(&path);
    return rc;
}

void pile__prep_snapshot_free(prep_snapshot *sn)
{
    for (int sp = 0; sp < PREP_NSPLITS; sp++) free(sn->split[sp].subsets);
    free(sn->input_lines);
    free(sn->input_done);
    free(sn->input_truncated);
    memset(sn, 0, sizeof *sn);
}

int pile__prep_snapshot_take(prep_state *st)
{
    prep_snapshot *sn = &st->pending;
    const prep_stats *s = &st->stats;
    size_t n = s->n_inputs ? s->n_inputs : 1;
    for (int sp = 0; sp < PREP_NSPLITS; sp++) {
        const prep_split_stats *from = &s->split[sp];
        prep_split_stats *to = &sn->split[sp];
        prep_subset_count *keep = to->subsets;
        size_t cap = keep ? to->n_subsets : 0;
        *to = *from;
        to->subsets = keep;
        if (from->n_subsets > cap) {
            prep_subset_count *v = realloc(keep, from->n_subsets * sizeof *v);
            if (!v) {
                to->n_subsets = cap;
                return PILE_ENOMEM;
            }
            to->subsets = v;
        }
        if (from->n_subsets) memcpy(to->subsets, from->subsets, from->n_subsets * sizeof *from->subsets);
    }
    if (!sn->input_lines) {
        sn->input_lines = malloc(n * sizeof *sn->input_lines);
        sn->input_done = malloc(n);
        sn->input_truncated = malloc(n);
        if (!sn->input_lines || !sn->input_done || !sn->input_truncated) return PILE_ENOMEM;
    }
    memcpy(sn->input_lines, s->input_lines, n * sizeof *sn->input_lines);
    memcpy(sn->input_done, s->input_done, n);
    memcpy(sn->input_truncated, s->input_truncated, n);
    sn->resume = st->resume;
    sn->n_shards = st->n_shards;
    memcpy(sn->next_shard, st->next_shard, sizeof sn->next_shard);
    sn->valid = 1;
    return 0;
}

/* Swaps the pending snapshot with the live state (twice restores it). */
static void snapshot_swap(prep_state *st)
{
    prep_snapshot *sn = &st->pending;
    for (int sp = 0; sp < PREP_NSPLITS; sp++) {
        prep_split_stats t = st->stats.split[sp];
        st->stats.split[sp] = sn->split[sp];
        sn->split[sp] = t;
    }
    uint64_t *l = st->stats.input_lines;
    st->stats.input_lines = sn->input_lines;
    sn->input_lines = l;
    uint8_t *d = st->stats.input_done;
    st->stats.input_done = sn->input_done;
    sn->input_done = d;
    uint8_t *t = st->stats.input_truncated;
    st->stats.input_truncated = sn->input_truncated;
    sn->input_truncated = t;
    prep_resume r = st->resume;
    st->resume = sn->resume;
    sn->resume = r;
    size_t ns = st->n_shards;
    st->n_shards = sn->n_shards;
    sn->n_shards = ns;
    for (int sp = 0; sp < PREP_NSPLITS; sp++) {
        uint32_t x = st->next_shard[sp];
        st->next_shard[sp] = sn->next_shard[sp];
        sn->next_shard[sp] = x;
    }
}

int pile__prep_manifest_write_pending(prep_state *st, pile_err *err)
{
    if (!st->pending.valid) return 0;
    snapshot_swap(st);
    int rc = pile__prep_manifest_write(st, err);
    snapshot_swap(st);
    if (!rc) st->pending.valid = 0;
    return rc;
}

int pile__prep_state_add_shard(prep_state *st, const char *file, pile_split split, const pile_shard_info *info,
                               prep_resume start, pile_err *err)
{
    if (st->n_shards == st->cap_shards) {
        size_t cap = st->cap_shards ? st->cap_shards * 2 : 16;
        prep_shard_rec *v = realloc(st->shards, cap * sizeof *v);
        if (!v) return pile_err_set(err, PILE_ENOMEM, "out of memory");
        st->shards = v;
        st->cap_shards = cap;
    }
    prep_shard_rec *r = &st->shards[st->n_shards];
    r->file = strdup(file);
    if (!r->file) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    r->split = split;
    r->rows = info->row_count;
    r->docs = info->doc_count;
    r->tokens = info->token_count;
    r->checksum = info->data_checksum;
    r->size = info->file_size;
    r->start = start;
    r->has_start = 1;
    st->n_shards++;
    return 0;
}

void pile__prep_state_free(prep_state *st)
{
    for (size_t i = 0; i < st->n_shards; i++) free(st->shards[i].file);
    free(st->shards);
    st->shards = NULL;
    st->n_shards = st->cap_shards = 0;
    pile__prep_files_free(&st->tok_files);
    pile__prep_files_free(&st->mega_files);
    pile__prep_snapshot_free(&st->pending);
    pile__prep_stats_free(&st->stats);
}

/* ------------------------------------------------------------- reading */

static int json_equal(const pile_json *a, const pile_json *b)
{
    pile_json_type t = pile_json_type_of(a);
    if (t != pile_json_type_of(b)) return 0;
    switch (t) {
    case PILE_JSON_NULL: return 1;
    case PILE_JSON_BOOL: return pile_json_bool(a) == pile_json_bool(b);
    case PILE_JSON_NUMBER: {
        int64_t x, y;
        if (pile_json_int(a, &x) && pile_json_int(b, &y)) return x == y;
        return pile_json_num(a) == pile_json_num(b);
    }
    case PILE_JSON_STRING: {
        size_t la, lb;
        const char *sa = pile_json_str(a, &la), *sb = pile_json_str(b, &lb);
        return la == lb && memcmp(sa, sb, la) == 0;
    }
    case PILE_JSON_ARRAY:
    case PILE_JSON_OBJECT: {
        size_t n = pile_json_size(a);
        if (n != pile_json_size(b)) return 0;
        for (size_t i = 0; i < n; i++) {
            if (t == PILE_JSON_OBJECT && strcmp(pile_json_key_at(a, i, NULL), pile_json_key_at(b, i, NULL)))
                return 0;
            if (!json_equal(pile_json_at(a, i), pile_json_at(b, i))) return 0;
        }
        return 1;
    }
    }
    return 0;
}

static int get_u64(const pile_json *obj, const char *key, uint64_t *out)
{
    const pile_json *v = obj ? pile_json_get(obj, key) : NULL;
    int64_t x;
    if (!v || !pile_json_int(v, &x) || x < 0) return -1;
    *out = (uint64_t)x;
    return 0;
}

static const char *get_str(const pile_json *obj, const char *key)
{
    const pile_json *v = obj ? pile_json_get(obj, key) : NULL;
    return v && pile_json_type_of(v) == PILE_JSON_STRING ? pile_json_str(v, NULL) : NULL;
}

static int get_bool(const pile_json *obj, const char *key)
{
    const pile_json *v = obj ? pile_json_get(obj, key) : NULL;
    return v && pile_json_type_of(v) == PILE_JSON_BOOL && pile_json_bool(v);
}

static int restore_split(prep_state *st, pile_split sp, const pile_json *o, const char *path, pile_err *err)
{
    prep_split_stats *ss = &st->stats.split[sp];
    const pile_json *sk = pile_json_get(o, "skipped_by_reason");
    const pile_json *rp = pile_json_get(o, "repaired_by_kind");
    if (get_u64(o, "lines", &ss->lines) || get_u64(o, "documents", &ss->docs) || get_u64(o, "tokens", &ss->tokens) ||
        get_u64(o, "rows", &ss->rows) || get_u64(o, "padding_tokens", &ss->pad_tokens) || !sk || !rp ||
        get_u64(rp, "utf8", &ss->repaired_utf8) || get_u64(rp, "surrogate", &ss->repaired_surrogate))
        return pile_err_set(err, PILE_EFORMAT, "cannot resume from '%s': bad statistics of split '%s'", path,
                            pile_prep_split_name(sp));
    const pile_json *nf = pile_json_get(o, "subset_names_fixed"); /* absent in older manifests: none */
    for (int k = 0; nf && k < PREP_NFIX; k++)
        if (get_u64(nf, pile__prep_fix_names[k], &ss->name_fixed[k]))
            return pile_err_set(err, PILE_EFORMAT, "cannot resume from '%s': no count of '%s' subset names", path,
                                pile__prep_fix_names[k]);
    for (int k = 1; k < PILE_SKIP_COUNT; k++)
        if (get_u64(sk, pile_skip_name((pile_skip)k), &ss->skipped[k]))
            return pile_err_set(err, PILE_EFORMAT, "cannot resume from '%s': no count of '%s' lines", path,
                                pile_skip_name((pile_skip)k));
    const pile_json *subs = pile_json_get(o, "subsets");
    size_t n = subs ? pile_json_size(subs) : 0;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *name = pile_json_key_at(subs, i, &len);
        const pile_json *c = pile_json_at(subs, i);
        uint32_t id;
        uint64_t docs, toks;
        if (get_u64(c, "documents", &docs) || get_u64(c, "tokens", &toks))
            return pile_err_set(err, PILE_EFORMAT, "cannot resume from '%s': bad subset counts", path);
        if (pile__prep_names_intern(&st->stats.subsets, name, len, &id) ||
            pile__prep_stats_doc(&st->stats, sp, 0, id, 0, 0, 0))
            return pile_err_set(err, PILE_ENOMEM, "out of memory");
        ss->subsets[id].docs = docs;
        ss->subsets[id].tokens = toks;
    }
    return 0;
}

/* complete: the folder holds a finished run, not an interrupted one. */
static int mismatch(pile_err *err, const char *out, const char *what, int complete)
{
    if (complete)
        return pile_err_set(err, PILE_EMISMATCH,
                            "cannot reuse '%s': %s differ from those of the finished run there; "
                            "use a new output folder, or --force to start over",
                            out, what);
    return pile_err_set(err, PILE_EMISMATCH,
                        "cannot resume in '%s': %s differ from the interrupted run's; "
                        "use a new output folder, or --force to start over",
                        out, what);
}

/* Is the manifest's input entry o the file `in` is, unchanged? The same
 * size and modification time, and the same file: device and inode (an
 * older manifest without them: the same path). How the path is spelled
 * ("in", "./in", an absolute path, a link) does not matter. */
static int same_input(const pile_json *o, const pile_prep_input *in, pile_buf *spelled)
{
    const pile_json *mtj = o ? pile_json_get(o, "mtime_ns") : NULL;
    const char *sp = get_str(o, "split");
    uint64_t size, dev, ino;
    int64_t mt; /* signed: a file may date from before 1970 */
    if (!sp || strcmp(sp, pile_prep_split_name(in->split)) || get_u64(o, "size", &size) || size != in->size ||
        !mtj || !pile_json_int(mtj, &mt) || mt != in->mtime_ns)
        return 0;
    if (!get_u64(o, "dev", &dev) && !get_u64(o, "ino", &ino) && dev == in->dev && ino == in->ino) return 1;
    const char *p = get_str(o, "path");
    return p && strlen(p) == spelled->len && (!spelled->len || !memcmp(p, spelled->data, spelled->len));
}

/* The files the manifest records: finished shards (in order, each with
 * where it started), the tokenizer's copy, Megatron files. Whether they are
 * still there, whole, is the kept files' check's business. */
static int read_point(const pile_json *o, prep_resume *r)
{
    if (get_u64(o, "input", &r->input) || get_u64(o, "line", &r->line) || get_u64(o, "token_offset", &r->tok_off) ||
        r->line < 1)
        return -1;
    r->fallback = get_bool(o, "subset_fallback");
    return 0;
}

static int restore_file_list(prep_files *f, const pile_json *arr, const char *path, pile_err *err)
{
    size_t n = arr ? pile_json_size(arr) : 0;
    for (size_t i = 0; i < n; i++) {
        const pile_json *o = pile_json_at(arr, i);
        const char *name = get_str(o, "file"), *ck = get_str(o, "xxh3");
        uint64_t size;
        /* a recorded name is only ever one pile-prep writes inside OUT */
        if (!name || !ck || get_u64(o, "bytes", &size) || name[0] == '/' || strstr(name, ".."))
            return pile_err_set(err, PILE_EFORMAT, "'%s': bad file entry %zu", path, i);
        if (pile__prep_files_add(f, name, size, strtoull(ck, NULL, 16))) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    }
    return 0;
}

static int restore_files(prep_state *st, const pile_json *root, const char *path, pile_err *err)
{
    const pile_json *shards = pile_json_get(root, "shards");
    size_t ns = shards ? pile_json_size(shards) : 0;
    for (size_t i = 0; i < ns; i++) {
        const pile_json *o = pile_json_at(shards, i);
        const char *file = get_str(o, "file"), *sp = get_str(o, "split"), *ck = get_str(o, "data_xxh3");
        const pile_json *so = pile_json_get(o, "start");
        pile_shard_info info;
        memset(&info, 0, sizeof info);
        prep_resume start = {0, 1, 0, 0};
        if (!file || !sp || !ck || get_u64(o, "rows", &info.row_count) || get_u64(o, "documents", &info.doc_count) ||
            get_u64(o, "tokens", &info.token_count) || get_u64(o, "bytes", &info.file_size) ||
            (so && read_point(so, &start)))
            return pile_err_set(err, PILE_EFORMAT, "'%s': bad shard entry %zu", path, i);
        info.data_checksum = strtoull(ck, NULL, 16);
        pile_split split = !strcmp(sp, "val") ? PILE_SPLIT_VAL : !strcmp(sp, "test") ? PILE_SPLIT_TEST : PILE_SPLIT_TRAIN;
        char expect[64];
        snprintf(expect, sizeof expect, "%s-%05u.shard", pile_prep_split_name(split), st->next_shard[split]);
        if (strcmp(expect, file)) return pile_err_set(err, PILE_EFORMAT, "'%s': shard '%s' out of order", path, file);
        if (pile__prep_state_add_shard(st, file, split, &info, start, err)) return PILE_ENOMEM;
        st->shards[st->n_shards - 1].has_start = so != NULL;
        st->next_shard[split]++;
    }
    PILE_FORWARD_IF_ERR(restore_file_list(&st->tok_files, pile_json_get(pile_json_get(root, "tokenizer_copy"), "files"),
                                          path, err));
    PILE_FORWARD_IF_ERR(restore_file_list(&st->mega_files, pile_json_get(root, "megatron_files"), path, err));
    st->complete = get_bool(root, "complete");
    return 0;
}

/* Parses OUT/manifest.json into *root (path filled): 1, or 0 when there is
 * none, or a negative code. */
static int parse_manifest(const prep_state *st, pile_buf *path, pile_json **root, pile_err *err)
{
    *root = NULL;
    if (pile_fs_join(path, st->opts->output_dir, "manifest.json")) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    struct stat sb;
    if (stat(path->data, &sb) != 0)
        return errno == ENOENT ? 0 : pile_err_sys(err, PILE_EIO, errno, "cannot open '%s'", path->data);
    int rc = pile_json_parse_file(path->data, root, err);
    return rc < 0 ? rc : 1;
}

int pile__prep_manifest_files(prep_state *st, pile_err *err)
{
    pile_buf path = {0};
    pile_json *root = NULL;
    int rc = parse_manifest(st, &path, &root, err);
    const char *fmt = rc > 0 ? get_str(root, "format") : NULL;
    if (rc > 0 && (!fmt || strcmp(fmt, MANIFEST_FORMAT)))
        rc = pile_err_set(err, PILE_EFORMAT, "'%s' is not a pile-prep manifest", path.data);
    if (rc > 0 && (rc = restore_files(st, root, path.data, err)) == 0) {
        st->megatron = get_bool(pile_json_get(root, "options"), "megatron");
        rc = 1;
    }
    if (rc < 0 && rc != PILE_ENOMEM) {
        char why[PILE_ERR_MSG_MAX];
        memcpy(why, err->msg, sizeof why);
        rc = pile_err_set(err, rc, "cannot start over in '%s': %s; pile-prep removes only files its manifest records: "
                          "remove the earlier output yourself, or use a new output folder",
                          st->opts->output_dir, why);
    }
    pile_json_free(root);
    pile_buf_free(&path);
    return rc;
}

static int restore(prep_state *st, const pile_json *root, const char *path, pile_err *err)
{
    const char *out = st->opts->output_dir;
    const char *fmt = get_str(root, "format");
    int complete = get_bool(root, "complete");
    uint64_t ver;
    if (!fmt || strcmp(fmt, MANIFEST_FORMAT) || get_u64(root, "version", &ver))
        return pile_err_set(err, PILE_EFORMAT, "cannot resume from '%s': not a pile-prep manifest", path);
    if (ver != PILE_PREP_MANIFEST_VERSION)
        return pile_err_set(err, PILE_EVERSION,
                            "cannot resume from '%s': manifest version %" PRIu64 ", this pile-prep writes %d; "
                            "use a new output folder or --force",
                            path, ver, PILE_PREP_MANIFEST_VERSION);

    /* options: compare with ours, serialised and parsed the same way */
    pile_buf mine = {0};
    write_options(&mine, st);
    if (mine.failed || !mine.data) {
        pile_buf_free(&mine);
        return pile_err_set(err, PILE_ENOMEM, "out of memory");
    }
    pile_json *mine_tree = NULL;
    int rc = pile_json_parse(mine.data, mine.len, "options", &mine_tree, err);
    pile_buf_free(&mine);
    if (rc) return rc;
    const pile_json *theirs = pile_json_get(root, "options");
    /* the tokenizer counts by its fingerprint (an option too), not by the
     * path of its copy or how it was spelled when given */
    int same = theirs && pile_json_type_of(theirs) == PILE_JSON_OBJECT &&
               pile_json_size(theirs) == pile_json_size(mine_tree);
    if (theirs && pile_json_type_of(theirs) == PILE_JSON_OBJECT) {
        /* name the first option that differs */
        for (size_t i = 0; i < pile_json_size(mine_tree); i++) {
            const char *k = pile_json_key_at(mine_tree, i, NULL);
            const pile_json *t = pile_json_get(theirs, k);
            if (!strcmp(k, "tokenizer") && t) continue;
            if (!t || !json_equal(t, pile_json_at(mine_tree, i))) {
                char what[160];
                snprintf(what, sizeof what, "the options ('%s')", k);
                pile_json_free(mine_tree);
                return mismatch(err, out, what, complete);
            }
        }
    }
    pile_json_free(mine_tree);
    if (!same) return mismatch(err, out, "the options", complete);

    /* inputs: same files, same order, unchanged */
    const pile_json *ins = pile_json_get(root, "inputs");
    if (!ins || pile_json_size(ins) != st->n_inputs) return mismatch(err, out, "the inputs", complete);
    pile_buf spelled = {0};
    for (size_t i = 0; i < st->n_inputs; i++) {
        const pile_json *o = pile_json_at(ins, i);
        const pile_prep_input *in = st->order[i];
        uint64_t lines;
        if (utf8_spelling(in->path, &spelled)) {
            pile_buf_free(&spelled);
            return pile_err_set(err, PILE_ENOMEM, "out of memory");
        }
        if (!same_input(o, in, &spelled) || get_u64(o, "lines_done", &lines)) {
            pile_buf_free(&spelled);
            char what[PILE_ERR_MSG_MAX / 2];
            snprintf(what, sizeof what, "the inputs ('%s')", in->path);
            return mismatch(err, out, what, complete);
        }
        st->stats.input_lines[i] = lines;
        st->stats.input_done[i] = (uint8_t)get_bool(o, "done");
        st->stats.input_truncated[i] = (uint8_t)get_bool(o, "truncated");
    }
    pile_buf_free(&spelled);

    PILE_FORWARD_IF_ERR(restore_files(st, root, path, err));

    const pile_json *rs = pile_json_get(root, "resume");
    if (!rs || read_point(rs, &st->resume) || st->resume.input > st->n_inputs)
        return pile_err_set(err, PILE_EFORMAT, "cannot resume from '%s': bad resume point", path);
    const pile_json *splits = pile_json_get(pile_json_get(root, "stats"), "splits");
    if (!splits) return pile_err_set(err, PILE_EFORMAT, "cannot resume from '%s': no statistics", path);
    for (int sp = 0; sp < PREP_NSPLITS; sp++) {
        const pile_json *o = pile_json_get(splits, pile_prep_split_name((pile_split)sp));
        if (o) PILE_FORWARD_IF_ERR(restore_split(st, (pile_split)sp, o, path, err));
    }
    return 1;
}

int pile__prep_manifest_load(prep_state *st, pile_err *err)
{
    pile_buf path = {0};
    pile_json *root = NULL;
    int rc = parse_manifest(st, &path, &root, err);
    if (rc > 0) rc = restore(st, root, path.data, err);
    pile_json_free(root);
    pile_buf_free(&path);
    return rc;
}
