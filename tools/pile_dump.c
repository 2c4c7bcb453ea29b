/* pile-dump: what is in a shard or a folder of shards (header fields, counts,
 * per-split and per-subset statistics, document lengths), --verify for every
 * checksum (each row's too) and invariant and, for a folder, its agreement
 * with pile-prep's manifest.json, --decode N for one row as ids and text.
 * Only main prints and exits; the rest returns codes like the libraries it
 * drives. */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "pile_buf.h"
#include "pile_fs.h"
#include "pile_hex.h"
#include "pile_json.h"
#include "pile_shards.h"
#include "pile_tokenizer.h"
#include "pile_utf8.h"

#define HIST_BUCKETS 40
#define NSPLITS 3

static const char *const split_names[NSPLITS] = {"train", "val", "test"};

static const char *usage_text =
    "usage: pile-dump [options] PATH...\n"
    "\n"
    "PATH is a shard or a folder of *.shard files (read in name order). Several folders\n"
    "(several PATHs, or a comma list) are one dataset, as is a folder of partition folders\n"
    "(pile-prep --partition's part-K-of-N): their tokenizers and row lengths must agree,\n"
    "and each partition of an input set may be there once.\n"
    "\n"
    "  --json            print a JSON summary for scripts\n"
    "  --verify          check every checksum (each row's too) and invariant of every shard and, for a\n"
    "                    folder, that it holds exactly the shards its manifest.json lists, unchanged,\n"
    "                    and that the run is complete; each failure is named (exit 1 on any)\n"
    "  --decode N        print row N (counted across the sorted shards) as ids and as text\n"
    "  --shard FILE      with --decode: row N of this shard (instead of PATH)\n"
    "  --tokenizer SPEC  tokenizer for --decode (default: the one in PATH's manifest.json, else bytes)\n"
    "  -h, --help        show this help\n";

typedef struct shard_entry {
    char *path;
    char *name;        /* base name, or "<folder label>/<base name>" in a dataset of several folders */
    pile_shard *s;
    uint64_t docs;     /* starts that begin a document (not PILE_DOC_CONTINUED) */
    uint64_t first_row; /* global index of its row 0 */
} shard_entry;

typedef struct split_stats {
    uint64_t shards, rows, docs, segments, tokens, padding;
    uint64_t hist[HIST_BUCKETS];
    uint64_t seqs, seq_max;
    /* the document being rebuilt across rows and shards */
    uint64_t cur;
    int open;
    int best_fit;
} split_stats;

typedef struct subset_stats {
    char *name;
    uint64_t docs, tokens;
} subset_stats;

typedef struct dump {
    shard_entry *shards;
    size_t n;
    split_stats splits[NSPLITS];
    subset_stats *subsets;
    size_t nsubsets, cap_subsets;
    size_t *slots; /* open addressing over the names: index + 1, 0 = empty; a power of two, at most half full */
    size_t nslots;
    size_t problems; /* --verify failures found (each printed at once) */
    int complete;    /* the manifest's "complete": 1, 0, or -1 without a pile-prep manifest */
    const pile_dataset *folders; /* the folders read as one dataset (NULL: one shard file) */
} dump;

static void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

static void die(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("pile-dump: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(code);
}

/* One --verify failure: said at once; the run goes on to find the others. */
static void problem(dump *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void problem(dump *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("pile-dump: verify failed: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    d->problems++;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* The shard files named by PATH: itself, or the folder's *.shard sorted by name. */
static char **list_shards(const char *path, size_t *count)
{
    struct stat st;
    if (stat(path, &st) != 0) die(1, "cannot open '%s': %s", path, strerror(errno));
    char **list = NULL;
    size_t n = 0;
    if (!S_ISDIR(st.st_mode)) {
        list = malloc(sizeof *list);
        if (!list || !(list[0] = strdup(path))) die(1, "out of memory");
        *count = 1;
        return list;
    }
    DIR *d = opendir(path);
    if (!d) die(1, "cannot open '%s': %s", path, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!ends_with(e->d_name, ".shard") || e->d_name[0] == '.') continue;
        char **l = realloc(list, (n + 1) * sizeof *l);
        pile_buf p = {0};
        if (!l || pile_fs_join(&p, path, e->d_name)) die(1, "out of memory");
        list = l;
        list[n++] = p.data;
    }
    closedir(d);
    if (n == 0) die(1, "no shards in '%s' (no *.shard files)", path);
    qsort(list, n, sizeof *list, cmp_str);
    *count = n;
    return list;
}

/* FNV-1a: subset names are few and short, any fair hash does. */
static size_t name_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return (size_t)h;
}

/* Index of a subset by name in the global table (an index: the table moves
 * as it grows). A hash: a shard holds up to 65,536 names. */
static size_t subset_get(dump *d, const char *name)
{
    if ((d->nsubsets + 1) * 2 > d->nslots) {
        size_t n = d->nslots ? d->nslots * 2 : 64;
        size_t *slots = calloc(n, sizeof *slots);
        if (!slots) die(1, "out of memory");
        for (size_t i = 0; i < d->nsubsets; i++) {
            size_t h = name_hash(d->subsets[i].name) & (n - 1);
            while (slots[h]) h = (h + 1) & (n - 1);
            slots[h] = i + 1;
        }
        free(d->slots);
        d->slots = slots;
        d->nslots = n;
    }
    size_t h = name_hash(name) & (d->nslots - 1);
    for (; d->slots[h]; h = (h + 1) & (d->nslots - 1))
        if (strcmp(d->subsets[d->slots[h] - 1].name, name) == 0) return d->slots[h] - 1;
    if (d->nsubsets == d->cap_subsets) {
        size_t cap = d->cap_subsets ? d->cap_subsets * 2 : 64;
        subset_stats *v = realloc(d->subsets, cap * sizeof *v);
        if (!v) die(1, "out of memory");
        d->subsets = v;
        d->cap_subsets = cap;
    }
    subset_stats *s = &d->subsets[d->nsubsets];
    memset(s, 0, sizeof *s);
    if (!(s->name = strdup(name))) die(1, "out of memory");
    d->slots[h] = d->nsubsets + 1;
    return d->nsubsets++;
}

/* A subset name as a terminal may show it (names come from the input):
 * control characters escaped, at most 200 bytes. Valid until the next call. */
static const char *shown(const char *name)
{
    static pile_buf b;
    b.len = 0;
    if (!name) return "?";
    if (pile_utf8_escape(name, strlen(name), 200, &b)) die(1, "out of memory");
    return b.data ? b.data : "";
}

static int bucket_of(uint64_t len)
{
    int b = 0;
    while (b + 1 < HIST_BUCKETS && len >= (2ull << b)) b++;
    return b;
}

static void seq_close(split_stats *sp)
{
    if (!sp->open) return;
    sp->open = 0;
    sp->hist[bucket_of(sp->cur)]++;
    sp->seqs++;
    if (sp->cur > sp->seq_max) sp->seq_max = sp->cur;
    sp->cur = 0;
}

static void seq_add(split_stats *sp, uint64_t n)
{
    sp->open = 1;
    sp->cur += n;
}

/* One pass over a shard's row and document tables (the token data is not read). */
static void scan_shard(dump *d, shard_entry *e)
{
    const pile_shard_info *in = pile_shard_get_info(e->s);
    split_stats *sp = &d->splits[in->split];
    sp->best_fit = in->pack == PILE_PACK_BEST_FIT;
    sp->shards++;
    sp->rows += in->row_count;
    sp->tokens += in->token_count;
    sp->padding += in->row_count * in->max_length - in->token_count;
    sp->segments += in->doc_count;
    /* map this shard's subset ids to the global table */
    size_t *local = calloc(in->subset_count ? in->subset_count : 1, sizeof *local);
    if (!local) die(1, "out of memory");
    for (uint32_t i = 0; i < in->subset_count; i++) local[i] = subset_get(d, pile_shard_subset_name(e->s, i));
    for (uint64_t r = 0; r < in->row_count; r++) {
        uint32_t len = pile_shard_row_length(e->s, r);
        const pile_shard_doc *docs;
        uint32_t nd = pile_shard_row_docs(e->s, r, &docs);
        uint32_t pos = 0;
        uint16_t sub = pile_shard_row_lead_subset(e->s, r);
        for (uint32_t k = 0; k <= nd; k++) {
            uint32_t end = k < nd ? docs[k].offset : len;
            if (end > len) end = len;
            if (end > pos) {
                if (sub < in->subset_count) d->subsets[local[sub]].tokens += end - pos;
                seq_add(sp, end - pos);
                pos = end;
            }
            if (k < nd) {
                seq_close(sp);
                sp->open = 1;
                sub = docs[k].subset;
                if (!(docs[k].flags & PILE_DOC_CONTINUED)) {
                    e->docs++;
                    if (sub < in->subset_count) d->subsets[local[sub]].docs++;
                }
            }
        }
        if (sp->best_fit) seq_close(sp);
    }
    sp->docs += e->docs;
    free(local);
}

static double frac(uint64_t a, uint64_t b)
{
    return b ? (double)a / (double)b : 0.0;
}

static const char *pack_name(pile_pack p)
{
    return p == PILE_PACK_BEST_FIT ? "best-fit" : "concat";
}

/* A JSON string literal; names come from shard files, so they go through the
 * escaper every JSON writer here uses. */
static void json_str(const char *s)
{
    pile_buf b = {0};
    if (pile_json_write_string(&b, s, strlen(s))) die(1, "out of memory");
    fwrite(b.data, 1, b.len, stdout);
    pile_buf_free(&b);
}

static void print_text(const dump *d, const char *path, int verified)
{
    uint64_t rows = 0, docs = 0, tokens = 0, padding = 0;
    printf("%zu shard%s in '%s'%s\n\n", d->n, d->n == 1 ? "" : "s", path,
           d->complete == 1   ? " (manifest: complete)"
           : d->complete == 0 ? " (manifest: NOT complete: the pile-prep run that wrote them did not finish)"
                              : "");
    for (size_t i = 0; i < d->n; i++) {
        const pile_shard_info *in = pile_shard_get_info(d->shards[i].s);
        char fp[2 * PILE_SHARD_FP_BYTES + 1];
        pile_hex_encode(fp, in->tokenizer_fp, PILE_SHARD_FP_BYTES);
        printf("%s: version %" PRIu32 "%s, %s, %s packing, %" PRIu32 "-byte tokens, max_length %" PRIu32 "\n",
               d->shards[i].name, in->version, in->row_checksums ? "" : " (no row checksums)",
               split_names[in->split], pack_name(in->pack), in->token_bytes, in->max_length);
        printf("  vocab_size %" PRIu32 ", eot_id %" PRIu32 ", pad_id %" PRIu32 ", tokenizer %s\n", in->vocab_size,
               in->eot_id, in->pad_id, fp);
        printf("  %" PRIu64 " rows, %" PRIu64 " documents, %" PRIu64 " document starts, %" PRIu64 " tokens, %" PRIu64
               " padding tokens, %" PRIu32 " subsets, %" PRIu64 " bytes\n",
               in->row_count, d->shards[i].docs, in->doc_count, in->token_count,
               in->row_count * in->max_length - in->token_count, in->subset_count, in->file_size);
    }
    for (int s = 0; s < NSPLITS; s++) {
        const split_stats *sp = &d->splits[s];
        if (!sp->shards) continue;
        rows += sp->rows;
        docs += sp->docs;
        tokens += sp->tokens;
        padding += sp->padding;
        printf("\nsplit %s: %" PRIu64 " shard%s, %" PRIu64 " rows, %" PRIu64 " documents", split_names[s], sp->shards,
               sp->shards == 1 ? "" : "s", sp->rows, sp->docs);
        if (sp->best_fit) printf(" in %" PRIu64 " segments", sp->segments);
        printf(", %" PRIu64 " tokens, %" PRIu64 " padding tokens (%.2f%%)\n", sp->tokens, sp->padding,
               100.0 * frac(sp->padding, sp->rows ? sp->tokens + sp->padding : 0));
        printf("  %s lengths in tokens (%" PRIu64 ", longest %" PRIu64 "):\n",
               sp->best_fit ? "segment" : "document", sp->seqs, sp->seq_max);
        int lo = HIST_BUCKETS, hi = -1;
        for (int b = 0; b < HIST_BUCKETS; b++)
            if (sp->hist[b]) {
                if (b < lo) lo = b;
                hi = b;
            }
        for (int b = lo; b <= hi; b++)
            printf("  %10llu-%-10llu %10" PRIu64 "\n", 1ull << b, (2ull << b) - 1, sp->hist[b]);
    }
    printf("\nsubsets:\n");
    for (size_t i = 0; i < d->nsubsets; i++)
        printf("  %-28s %10" PRIu64 " documents %14" PRIu64 " tokens\n", shown(d->subsets[i].name), d->subsets[i].docs,
               d->subsets[i].tokens);
    printf("\ntotal: %" PRIu64 " rows, %" PRIu64 " documents, %" PRIu64 " tokens, %" PRIu64
           " padding tokens (%.2f%%)\n", rows, docs, tokens, padding, 100.0 * frac(padding, tokens + padding));
    if (verified) printf("verify: ok (%zu shard%s)\n", d->n, d->n == 1 ? "" : "s");
}

static void print_json(const dump *d, int verified)
{
    uint64_t rows = 0, docs = 0, tokens = 0, padding = 0, segments = 0;
    for (int s = 0; s < NSPLITS; s++) {
        rows += d->splits[s].rows;
        docs += d->splits[s].docs;
        tokens += d->splits[s].tokens;
        padding += d->splits[s].padding;
        segments += d->splits[s].segments;
    }
    printf("{\n  \"complete\": %s,\n", d->complete == 1 ? "true" : d->complete == 0 ? "false" : "null");
    printf("  \"totals\": {\"shards\": %zu, \"rows\": %" PRIu64 ", \"documents\": %" PRIu64 ", \"document_starts\": %"
           PRIu64 ", \"tokens\": %" PRIu64 ", \"padding_tokens\": %" PRIu64 ", \"padding_fraction\": %.6f},\n",
           d->n, rows, docs, segments, tokens, padding, frac(padding, tokens + padding));
    printf("  \"splits\": {");
    int first = 1;
    for (int s = 0; s < NSPLITS; s++) {
        const split_stats *sp = &d->splits[s];
        if (!sp->shards) continue;
        printf("%s\n    \"%s\": {\"shards\": %" PRIu64 ", \"rows\": %" PRIu64 ", \"documents\": %" PRIu64
               ", \"segments\": %" PRIu64 ", \"tokens\": %" PRIu64 ", \"padding_tokens\": %" PRIu64
               ", \"lengths_of\": \"%s\", \"length_histogram\": [",
               first ? "" : ",", split_names[s], sp->shards, sp->rows, sp->docs, sp->segments, sp->tokens, sp->padding,
               sp->best_fit ? "segments" : "documents");
        first = 0;
        int f2 = 1;
        for (int b = 0; b < HIST_BUCKETS; b++) {
            if (!sp->hist[b]) continue;
            printf("%s{\"min\": %llu, \"max\": %llu, \"count\": %" PRIu64 "}", f2 ? "" : ", ", 1ull << b,
                   (2ull << b) - 1, sp->hist[b]);
            f2 = 0;
        }
        printf("]}");
    }
    printf("\n  },\n  \"subsets\": {");
    for (size_t i = 0; i < d->nsubsets; i++) {
        printf("%s\n    ", i ? "," : "");
        json_str(d->subsets[i].name);
        printf(": {\"documents\": %" PRIu64 ", \"tokens\": %" PRIu64 "}", d->subsets[i].docs, d->subsets[i].tokens);
    }
    printf("\n  },\n  \"shards\": [");
    for (size_t i = 0; i < d->n; i++) {
        const pile_shard_info *in = pile_shard_get_info(d->shards[i].s);
        char fp[2 * PILE_SHARD_FP_BYTES + 1];
        pile_hex_encode(fp, in->tokenizer_fp, PILE_SHARD_FP_BYTES);
        printf("%s\n    {\"name\": ", i ? "," : "");
        json_str(d->shards[i].name);
        printf(", \"path\": ");
        json_str(d->shards[i].path);
        printf(", \"version\": %" PRIu32 ", \"split\": \"%s\", \"pack\": \"%s\", \"token_bytes\": %" PRIu32
               ", \"max_length\": %" PRIu32 ", \"vocab_size\": %" PRIu32 ", \"eot_id\": %" PRIu32 ", \"pad_id\": %" PRIu32
               ", \"tokenizer_fingerprint\": \"%s\", \"rows\": %" PRIu64 ", \"documents\": %" PRIu64
               ", \"document_starts\": %" PRIu64 ", \"tokens\": %" PRIu64 ", \"padding_tokens\": %" PRIu64
               ", \"subsets\": %" PRIu32 ", \"bytes\": %" PRIu64 ", \"first_row\": %" PRIu64
               ", \"row_checksums\": %s, \"data_xxh3\": \"%016" PRIx64 "\", \"header_xxh3\": \"%016" PRIx64 "\"}",
               in->version, split_names[in->split], pack_name(in->pack), in->token_bytes, in->max_length,
               in->vocab_size, in->eot_id, in->pad_id, fp, in->row_count, d->shards[i].docs, in->doc_count,
               in->token_count, in->row_count * in->max_length - in->token_count, in->subset_count, in->file_size,
               d->shards[i].first_row, in->row_checksums ? "true" : "false", in->data_checksum, in->header_checksum);
    }
    printf("\n  ]");
    if (d->folders) {
        printf(",\n  \"folders\": [");
        for (size_t f = 0; f < d->folders->n; f++) {
            const pile_dataset_folder *fo = &d->folders->v[f];
            printf("%s\n    {\"path\": ", f ? "," : "");
            json_str(fo->path);
            printf(", \"label\": ");
            json_str(fo->label);
            if (fo->part_count)
                printf(", \"partition\": {\"index\": %u, \"count\": %u, \"inputs_xxh3\": \"%s\"}", fo->part_index,
                       fo->part_count, fo->part_inputs);
            else
                printf(", \"partition\": null");
            printf("}");
        }
        printf("\n  ]");
    }
    if (verified) printf(",\n  \"verify\": \"ok\"");
    printf("\n}\n");
}

/* The tokenizer recorded in manifest.json beside the shards, found as
 * pile_tokenizer_resolve finds it (a relative path from the manifest's
 * folder, then, for older manifests, from here) and only if its fingerprint
 * is the shard's; NULL when there is no manifest (the bytes tokenizer). */
static char *manifest_tokenizer(const char *path, const pile_shard_info *in)
{
    char *copy = strdup(path);
    if (!copy) die(1, "out of memory");
    const char *folder = pile_fs_is_dir(path) ? copy : dirname(copy);
    pile_buf mpath = {0}, spec = {0};
    char *result = NULL;
    if (pile_fs_join(&mpath, folder, "manifest.json")) die(1, "out of memory");
    struct stat st;
    if (stat(mpath.data, &st) == 0) {
        pile_err err = {0};
        pile_json *root = NULL;
        if (pile_json_parse_file(mpath.data, &root, &err)) die(1, "cannot read '%s': %s", mpath.data, err.msg);
        /* pile-prep records it under "options"; a bare top-level key is accepted too */
        const pile_json *opts = pile_json_get(root, "options");
        const pile_json *t = opts ? pile_json_get(opts, "tokenizer") : NULL;
        if (!t) t = pile_json_get(root, "tokenizer");
        if (t && pile_json_type_of(t) == PILE_JSON_STRING) {
            if (pile_tokenizer_resolve(pile_json_str(t, NULL), folder, in->tokenizer_fp, &spec, NULL, &err))
                die(1, "'%s': %s; pass the tokenizer the shards were made with: --tokenizer SPEC", mpath.data, err.msg);
            result = strdup(spec.data);
        }
        pile_json_free(root);
    }
    pile_buf_free(&mpath);
    pile_buf_free(&spec);
    free(copy);
    return result;
}

/* A string member of a manifest object, or NULL. */
static const char *json_str_of(const pile_json *o, const char *key)
{
    const pile_json *v = o ? pile_json_get(o, key) : NULL;
    return v && pile_json_type_of(v) == PILE_JSON_STRING ? pile_json_str(v, NULL) : NULL;
}

/* One number the manifest records for a shard against the shard's own
 * value; a difference is appended to diffs. */
static void compare_count(pile_buf *diffs, const pile_json *o, const char *key, uint64_t actual)
{
    const pile_json *v = pile_json_get(o, key);
    int64_t want;
    if (!v || !pile_json_int(v, &want))
        pile_buf_printf(diffs, "%sno number \"%s\" in its entry", diffs->len ? ", " : "", key);
    else if (want < 0 || (uint64_t)want != actual)
        pile_buf_printf(diffs, "%s%s %" PRIu64 " (the manifest says %" PRId64 ")", diffs->len ? ", " : "", key, actual,
                        want);
}

static void compare_checksum(pile_buf *diffs, const pile_json *o, const char *key, uint64_t actual, int required)
{
    const char *want = json_str_of(o, key);
    char hex[17];
    snprintf(hex, sizeof hex, "%016" PRIx64, actual);
    if (!want) {
        if (required) pile_buf_printf(diffs, "%sno \"%s\" in its entry", diffs->len ? ", " : "", key);
    } else if (strcmp(want, hex) != 0) {
        pile_buf_printf(diffs, "%s%s %s (the manifest says %s)", diffs->len ? ", " : "", key, hex, want);
    }
}

/* pile-prep's manifest.json in `folder` against the shards found there:
 * sets d->complete and, with verify, checks that every shard it lists is
 * there and is the one it describes (split, counts, size, checksums), that
 * no other shard is there, and that the run which wrote them finished. A
 * folder without a manifest, or with one another program wrote, has nothing
 * to be checked against: said once. */
static void check_manifest(dump *d, const char *folder, int verify)
{
    d->complete = -1;
    pile_buf mpath = {0};
    if (pile_fs_join(&mpath, folder, "manifest.json")) die(1, "out of memory");
    struct stat st;
    pile_err err = {0};
    pile_json *root = NULL;
    char *listed = NULL;
    if (stat(mpath.data, &st) != 0) {
        if (verify)
            fprintf(stderr, "pile-dump: warning: no manifest.json in '%s': each shard is verified, but not whether"
                            " the folder lacks one\n", folder);
        goto out;
    }
    if (pile_json_parse_file(mpath.data, &root, &err)) {
        if (verify) problem(d, "cannot read '%s': %s", mpath.data, err.msg);
        else fprintf(stderr, "pile-dump: warning: cannot read '%s': %s\n", mpath.data, err.msg);
        goto out;
    }
    const char *format = json_str_of(root, "format");
    if (!format || strcmp(format, "pile-prep manifest") != 0) {
        if (verify)
            fprintf(stderr, "pile-dump: warning: '%s' is not pile-prep's manifest: the folder is not checked"
                            " against it\n", mpath.data);
        goto out;
    }
    const pile_json *c = pile_json_get(root, "complete");
    int has_complete = c && pile_json_type_of(c) == PILE_JSON_BOOL;
    d->complete = has_complete && pile_json_bool(c);
    if (!verify) goto out;
    if (!has_complete)
        problem(d, "'%s' has no \"complete\" flag", mpath.data);
    else if (!d->complete)
        problem(d, "'%s' says the run that wrote the folder did not finish (\"complete\": false): run the same"
                   " pile-prep command again to finish it", mpath.data);
    const pile_json *list = pile_json_get(root, "shards");
    if (!list || pile_json_type_of(list) != PILE_JSON_ARRAY) {
        problem(d, "'%s' has no \"shards\" list", mpath.data);
        goto out;
    }
    listed = calloc(d->n ? d->n : 1, 1);
    if (!listed) die(1, "out of memory");
    pile_buf fpath = {0}, diffs = {0};
    for (size_t i = 0; i < pile_json_size(list); i++) {
        const pile_json *o = pile_json_at(list, i);
        const char *file = json_str_of(o, "file");
        if (!file || !file[0] || strchr(file, '/')) {
            problem(d, "'%s': shard entry %zu has no file name", mpath.data, i);
            continue;
        }
        fpath.len = 0;
        if (pile_fs_join(&fpath, folder, file)) die(1, "out of memory");
        size_t k = 0;
        /* a dataset of several folders names its shards "<folder>/<file>" */
        while (k < d->n && strcmp(strrchr(d->shards[k].path, '/') ? strrchr(d->shards[k].path, '/') + 1
                                                                   : d->shards[k].path, file) != 0)
            k++;
        if (k == d->n) {
            problem(d, "'%s' is missing: '%s' lists it", fpath.data, mpath.data);
            continue;
        }
        if (listed[k]++) {
            problem(d, "'%s' lists '%s' twice", mpath.data, file);
            continue;
        }
        if (!d->shards[k].s) continue; /* it did not open: said already */
        const pile_shard_info *in = pile_shard_get_info(d->shards[k].s);
        diffs.len = 0;
        const char *split = json_str_of(o, "split");
        if (!split || strcmp(split, split_names[in->split]) != 0)
            pile_buf_printf(&diffs, "split %s (the manifest says %s)", split_names[in->split], split ? split : "none");
        compare_count(&diffs, o, "rows", in->row_count);
        compare_count(&diffs, o, "documents", in->doc_count);
        compare_count(&diffs, o, "tokens", in->token_count);
        compare_count(&diffs, o, "bytes", in->file_size);
        compare_checksum(&diffs, o, "data_xxh3", in->data_checksum, 1);
        compare_checksum(&diffs, o, "header_xxh3", in->header_checksum, 0);
        if (diffs.failed) die(1, "out of memory");
        if (diffs.len)
            problem(d, "'%s' is not the shard '%s' lists: %.*s", fpath.data, mpath.data, (int)diffs.len, diffs.data);
    }
    for (size_t k = 0; k < d->n; k++)
        if (!listed[k])
            problem(d, "'%s' is not in '%s' (a shard of another run, or left from one)", d->shards[k].path, mpath.data);
    pile_buf_free(&fpath);
    pile_buf_free(&diffs);
out:
    free(listed);
    pile_json_free(root);
    pile_buf_free(&mpath);
}

static void decode_row(shard_entry *e, uint64_t r, uint64_t global, const char *spec)
{
    const pile_shard_info *in = pile_shard_get_info(e->s);
    pile_err err = {0};
    pile_tokenizer *tok;
    if (pile_tokenizer_open(&tok, spec, &err)) die(1, "cannot open tokenizer '%s': %s", spec ? spec : "bytes", err.msg);
    uint8_t fp[PILE_TOKENIZER_FP_BYTES];
    pile_tokenizer_fingerprint(tok, fp);
    if (memcmp(fp, in->tokenizer_fp, PILE_SHARD_FP_BYTES) != 0) {
        char a[2 * PILE_SHARD_FP_BYTES + 1], b[2 * PILE_SHARD_FP_BYTES + 1];
        pile_hex_encode(a, fp, PILE_SHARD_FP_BYTES);
        pile_hex_encode(b, in->tokenizer_fp, PILE_SHARD_FP_BYTES);
        die(1, "tokenizer '%s' (fingerprint %s) is not the one '%s' was made with (fingerprint %s); pass the right"
            " one with --tokenizer", spec ? spec : "bytes", a, e->path, b);
    }
    uint32_t *ids = malloc((size_t)in->max_length * sizeof *ids);
    if (!ids) die(1, "out of memory");
    uint32_t len = pile_shard_row_tokens(e->s, r, ids);
    const pile_shard_doc *docs;
    uint32_t nd = pile_shard_row_docs(e->s, r, &docs);
    printf("row %" PRIu64 " ('%s' row %" PRIu64 "): length %" PRIu32 " of %" PRIu32 ", %" PRIu32
           " document start%s, lead subset %s\n",
           global, e->name, r, len, in->max_length, nd, nd == 1 ? "" : "s",
           shown(pile_shard_subset_name(e->s, pile_shard_row_lead_subset(e->s, r))));
    for (uint32_t k = 0; k < nd; k++)
        printf("  start at %" PRIu32 ": %s%s\n", docs[k].offset, shown(pile_shard_subset_name(e->s, docs[k].subset)),
               docs[k].flags & PILE_DOC_CONTINUED ? " (continued segment)" : "");
    printf("ids:");
    for (uint32_t k = 0; k < len; k++) printf(" %" PRIu32, ids[k]);
    if (len < in->max_length) printf(" + %" PRIu32 " x pad %" PRIu32, in->max_length - len, in->pad_id);
    printf("\ntext:\n");
    pile_buf text = {0};
    if (pile_tokenizer_decode(tok, ids, len, &text, &err)) die(1, "cannot decode row %" PRIu64 ": %s", global, err.msg);
    fwrite(text.data, 1, text.len, stdout);
    printf("\n");
    pile_buf_free(&text);
    free(ids);
    pile_tokenizer_close(tok);
}

int main(int argc, char **argv)
{
    enum { OPT_JSON = 256, OPT_VERIFY, OPT_DECODE, OPT_SHARD, OPT_TOKENIZER };
    static const struct option opts[] = {
        {"json", no_argument, NULL, OPT_JSON},
        {"verify", no_argument, NULL, OPT_VERIFY},
        {"decode", required_argument, NULL, OPT_DECODE},
        {"shard", required_argument, NULL, OPT_SHARD},
        {"tokenizer", required_argument, NULL, OPT_TOKENIZER},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int json = 0, verify = 0, decode = 0;
    uint64_t decode_row_n = 0;
    const char *shard_opt = NULL, *tokenizer = NULL;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case OPT_JSON: json = 1; break;
        case OPT_VERIFY: verify = 1; break;
        case OPT_DECODE: {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || optarg[0] == '-')
                die(2, "--decode wants a row number, not '%s'", optarg);
            decode = 1;
            decode_row_n = v;
            break;
        }
        case OPT_SHARD: shard_opt = optarg; break;
        case OPT_TOKENIZER: tokenizer = optarg; break;
        case 'h': fputs(usage_text, stdout); return 0;
        default:
            /* getopt leaves in optopt the option it took, or 0 for an unknown long one */
            for (const struct option *o = opts; o->name; o++)
                if (optopt && o->val == optopt)
                    die(2, "option '--%s' %s\n%s", o->name, o->has_arg ? "needs a value" : "takes no value",
                        usage_text);
            fprintf(stderr, "pile-dump: unknown option '%s'\n%s", argv[optind - 1], usage_text);
            return 2;
        }
    }
    /* several PATHs are one comma list: one dataset */
    pile_buf joined = {0};
    const char *path = NULL;
    for (int i = optind; i < argc; i++)
        if (pile_buf_printf(&joined, "%s%s", i > optind ? "," : "", argv[i])) die(1, "out of memory");
    if (optind < argc) path = joined.data;
    if (shard_opt && !decode) die(2, "--shard goes with --decode");
    if (shard_opt && path)
        die(2, "--shard '%s' and PATH '%s' both given: --decode N --shard FILE reads row N of FILE; "
               "--decode N PATH counts rows across PATH's shards; give one", shard_opt, path);
    if (shard_opt) path = shard_opt;
    if (!path) {
        fprintf(stderr, "pile-dump: no PATH given\n%s", usage_text);
        return 2;
    }

    /* the folders (one shard file is a dataset of itself) and their shards */
    pile_dataset ds = {0};
    struct stat pst;
    int one_file = stat(path, &pst) == 0 && !S_ISDIR(pst.st_mode);
    if (!one_file) {
        pile_err err = {0};
        if (pile_dataset_list(&ds, path, &err)) die(1, "%s", err.msg);
        for (const char *line = ds.notes.data, *nl; line && (nl = strchr(line, '\n')); line = nl + 1)
            fprintf(stderr, "pile-dump: warning: %.*s\n", (int)(nl - line), line);
    }
    size_t n_folders = one_file ? 1 : ds.n;
    size_t *folder_end = calloc(n_folders, sizeof *folder_end); /* each folder's shards end here */
    dump d = {0};
    char **paths = NULL;
    if (!folder_end) die(1, "out of memory");
    for (size_t f = 0; f < n_folders; f++) {
        size_t n;
        char **more = list_shards(one_file ? path : ds.v[f].path, &n);
        char **all = realloc(paths, (d.n + n) * sizeof *all);
        if (!all) die(1, "out of memory");
        paths = all;
        memcpy(paths + d.n, more, n * sizeof *more);
        free(more);
        d.n += n;
        folder_end[f] = d.n;
    }
    d.shards = calloc(d.n, sizeof *d.shards);
    if (!d.shards) die(1, "out of memory");
    uint64_t row_base = 0;
    size_t unverified = 0;
    const char *unverified_name = NULL;
    for (size_t i = 0, f = 0; i < d.n; i++) {
        pile_err err = {0};
        shard_entry *e = &d.shards[i];
        e->path = paths[i];
        while (i >= folder_end[f]) f++;
        const char *slash = strrchr(e->path, '/');
        const char *label = one_file ? "" : ds.v[f].label;
        pile_buf nm = {0};
        if (label[0]) pile_buf_printf(&nm, "%s/", label);
        if (pile_buf_printf(&nm, "%s", slash ? slash + 1 : e->path)) die(1, "out of memory");
        e->name = nm.data;
        /* the library's messages name the file already; --verify goes on to find the other failures */
        if (pile_shard_open(&e->s, e->path, &err)) {
            if (!verify || decode) die(1, "%s", err.msg);
            problem(&d, "%s", err.msg);
            continue;
        }
        e->first_row = row_base;
        row_base += pile_shard_get_info(e->s)->row_count;
        if (!pile_shard_get_info(e->s)->row_checksums && !unverified++) unverified_name = e->name;
    }
    if (unverified)
        fprintf(stderr, "pile-dump: warning: %zu of the %zu shards ('%s'%s) are of format version 1, whose rows carry"
                        " no checksums: their rows cannot be verified one by one (only whole sections); run pile-prep"
                        " again (the same command with --force) to make them in version 2\n",
                unverified, d.n, unverified_name, unverified > 1 ? " and others" : "");

    if (decode) {
        for (size_t i = 0; i < d.n; i++) {
            const pile_shard_info *in = pile_shard_get_info(d.shards[i].s);
            if (decode_row_n < d.shards[i].first_row + in->row_count) {
                char *spec = tokenizer ? strdup(tokenizer)
                                       : manifest_tokenizer(d.shards[i].path, pile_shard_get_info(d.shards[i].s));
                decode_row(&d.shards[i], decode_row_n - d.shards[i].first_row, decode_row_n, spec);
                free(spec);
                goto done;
            }
        }
        die(1, "no row %" PRIu64 " in '%s': it has %" PRIu64 " rows", decode_row_n, path, row_base);
    }

    if (verify) {
        const shard_entry *first = NULL;
        for (size_t i = 0; i < d.n; i++) {
            pile_err err = {0};
            if (!d.shards[i].s) continue;
            const pile_shard_info *in = pile_shard_get_info(d.shards[i].s);
            if (pile_shard_verify(d.shards[i].s, &err)) problem(&d, "%s", err.msg);
            if (!first) first = &d.shards[i];
            const pile_shard_info *f = pile_shard_get_info(first->s);
            if (memcmp(in->tokenizer_fp, f->tokenizer_fp, PILE_SHARD_FP_BYTES) != 0 || in->vocab_size != f->vocab_size)
                problem(&d, "'%s' and '%s' were made with different tokenizers", first->path, d.shards[i].path);
        }
    }
    /* each folder against its manifest: complete only when every one is */
    d.complete = -1;
    for (size_t f = 0, from = 0; !one_file && f < n_folders; from = folder_end[f++]) {
        dump part = d;
        part.shards = d.shards + from;
        part.n = folder_end[f] - from;
        part.problems = 0;
        check_manifest(&part, ds.v[f].path, verify);
        d.problems += part.problems;
        if (f == 0 || part.complete == 0 || (part.complete == -1 && d.complete == 1)) d.complete = part.complete;
    }
    if (d.problems)
        die(1, "verify: %zu problem%s in '%s' (each named above)", d.problems, d.problems == 1 ? "" : "s", path);
    for (size_t i = 0; i < d.n; i++) scan_shard(&d, &d.shards[i]);
    for (int s = 0; s < NSPLITS; s++) seq_close(&d.splits[s]);
    d.folders = one_file ? NULL : &ds;
    if (json)
        print_json(&d, verify);
    else
        print_text(&d, path, verify);

done:
    for (size_t i = 0; i < d.n; i++) {
        pile_shard_close(d.shards[i].s);
        free(d.shards[i].path);
        free(d.shards[i].name);
    }
    free(folder_end);
    pile_dataset_free(&ds);
    pile_buf_free(&joined);
    for (size_t i = 0; i < d.nsubsets; i++) free(d.subsets[i].name);
    free(d.subsets);
    free(d.slots);
    free(d.shards);
    free(paths);
    if (fflush(stdout) != 0 || ferror(stdout)) die(1, "cannot write the output: %s", strerror(errno));
    return 0;
}
