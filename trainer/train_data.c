/* The trainer's data: a folder of pile shards as numbered samples (windows
 * of seq_len tokens of a row), the per-epoch visiting order, and the held-out
 * validation share.
 *
 * Sample indexing. Only windows that hold at least one target are samples:
 * row r of true length len gives w(r) = ceil((len - 1) / T) windows (none
 * for len < 2), so a micro-batch never consists of padding alone. Every
 * full row (len == max_length) has the same count W, and in pile-prep's
 * output nearly every row is full (concat packing leaves one short row per
 * split), so only the rows with w(r) != W are stored, sorted, each with the
 * number of samples before it: sample i -> (row, window) is a binary search
 * over those exceptions and then arithmetic, O(log n), with memory for the
 * exceptional rows only. Shards whose token count says every row is full
 * are not even scanned. */
#include "train_data.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "pile_buf.h"
#include "pile_fs.h"
#include "pile_hex.h"
#include "pile_json.h"
#include "pile_shards.h"
#include "pile_tokenizer.h"
#include "trainer_internal.h"

/* A row whose window count differs from a full row's. */
typedef struct short_row {
    uint64_t row;    /* index over the split's rows (all shards in order) */
    uint64_t start;  /* samples before this row */
    uint32_t windows;
} short_row;

typedef struct split_set {
    pile_shard **shards;
    char **names;
    size_t n;
    uint64_t *row_base; /* n + 1 prefix row counts */
    short_row *ex;
    size_t n_ex, cap_ex;
    uint64_t samples; /* every sample of the split's rows */
    uint64_t tokens;  /* true tokens of rows with at least one sample */
} split_set;

/* The held-out validation share, taken from the end of each folder's train
 * samples (so a dataset of partitions validates on every partition): folder
 * f's samples are [seg_start[f], seg_start[f] + seg_len[f]) of the train
 * split, its last held[f] held out; train_before / val_before count the
 * kept / held-out samples of the folders before f (n_seg + 1 entries). */
typedef struct held_out {
    size_t n_seg;
    uint64_t *seg_start, *seg_len, *held, *train_before, *val_before;
} held_out;

struct pile_data {
    pile_data_info info;
    int seq_len;
    uint32_t full_windows; /* W: windows of a full row */
    split_set split[2];    /* train, val */
    held_out ho;
};

static uint32_t windows_of(uint32_t len, uint32_t T)
{
    return len < 2 ? 0 : (len - 1 + T - 1) / T;
}

static void split_free(split_set *s)
{
    for (size_t i = 0; i < s->n; i++) {
        pile_shard_close(s->shards[i]);
        free(s->names[i]);
    }
    free(s->shards);
    free(s->names);
    free(s->row_base);
    free(s->ex);
    memset(s, 0, sizeof *s);
}

void pile_data_close(pile_data *d)
{
    if (!d) return;
    split_free(&d->split[0]);
    split_free(&d->split[1]);
    free(d->ho.seg_start);
    free(d->ho.seg_len);
    free(d->ho.held);
    free(d->ho.train_before);
    free(d->ho.val_before);
    free(d);
}

/* train-NNNNN.shard / val-NNNNN.shard (one or more digits): 0, 1, or -1 */
static int split_of_name(const char *name)
{
    const char *p;
    int split;
    if (!strncmp(name, "train-", 6)) p = name + 6, split = 0;
    else if (!strncmp(name, "val-", 4)) p = name + 4, split = 1;
    else return -1;
    const char *digits = p;
    while (*p >= '0' && *p <= '9') p++;
    if (p == digits || strcmp(p, ".shard")) return -1;
    return split;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int list_names(const char *dir, char ***names, size_t *n, pile_err *err)
{
    DIR *dp = opendir(dir);
    if (!dp) return pile_err_sys(err, errno == ENOENT ? PILE_ENOENT : PILE_EIO, errno, "cannot open '%s'", dir);
    size_t cap = 0;
    *names = NULL;
    *n = 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(dp))) {
        if (split_of_name(e->d_name) < 0) continue;
        if (*n == cap) {
            size_t ncap = cap ? 2 * cap : 16;
            char **nn = realloc(*names, ncap * sizeof *nn);
            if (!nn) {
                rc = pile_err_set(err, PILE_ENOMEM, "out of memory listing '%s'", dir);
                break;
            }
            *names = nn;
            cap = ncap;
        }
        if (!((*names)[*n] = strdup(e->d_name))) {
            rc = pile_err_set(err, PILE_ENOMEM, "out of memory listing '%s'", dir);
            break;
        }
        (*n)++;
    }
    closedir(dp);
    if (rc == 0 && *n > 1) qsort(*names, *n, sizeof **names, cmp_str);
    return rc;
}

/* The format version may differ (1 and 2 hold the same rows); what the
 * rows mean may not. */
static const char *differs(const pile_shard_info *a, const pile_shard_info *b, char *what, size_t cap)
{
    if (memcmp(a->tokenizer_fp, b->tokenizer_fp, PILE_SHARD_FP_BYTES))
        snprintf(what, cap, "tokenizer fingerprint");
    else if (a->token_bytes != b->token_bytes)
        snprintf(what, cap, "token width (%u vs %u bytes)", b->token_bytes, a->token_bytes);
    else if (a->vocab_size != b->vocab_size)
        snprintf(what, cap, "vocab_size (%u vs %u)", b->vocab_size, a->vocab_size);
    else if (a->max_length != b->max_length)
        snprintf(what, cap, "max_length (%u vs %u)", b->max_length, a->max_length);
    else if (a->eot_id != b->eot_id) snprintf(what, cap, "eot_id (%u vs %u)", b->eot_id, a->eot_id);
    else return NULL;
    return what;
}

static int push_short(split_set *s, uint64_t row, uint32_t windows)
{
    if (s->n_ex == s->cap_ex) {
        size_t ncap = s->cap_ex ? 2 * s->cap_ex : 64;
        short_row *nx = realloc(s->ex, ncap * sizeof *nx);
        if (!nx) return PILE_ENOMEM;
        s->ex = nx;
        s->cap_ex = ncap;
    }
    s->ex[s->n_ex++] = (short_row){row, 0, windows};
    return 0;
}

/* Row counts, the exceptional rows and the sample count of one split. */
static int index_split(split_set *s, uint32_t L, uint32_t T, uint32_t W, pile_err *err)
{
    s->row_base = calloc(s->n + 1, sizeof *s->row_base);
    if (!s->row_base) return pile_err_set(err, PILE_ENOMEM, "out of memory indexing shards");
    for (size_t k = 0; k < s->n; k++) {
        const pile_shard_info *in = pile_shard_get_info(s->shards[k]);
        uint64_t base = s->row_base[k];
        s->row_base[k + 1] = base + in->row_count;
        s->tokens += in->token_count;
        if (in->token_count == in->row_count * (uint64_t)L) continue; /* every row full */
        for (uint64_t r = 0; r < in->row_count; r++) {
            uint32_t len = pile_shard_row_length(s->shards[k], r);
            uint32_t w = windows_of(len, T);
            if (w == W) continue;
            if (w == 0) s->tokens -= len;
            if (push_short(s, base + r, w)) return pile_err_set(err, PILE_ENOMEM, "out of memory indexing shards");
        }
    }
    uint64_t deficit = 0;
    for (size_t e = 0; e < s->n_ex; e++) {
        s->ex[e].start = s->ex[e].row * W - deficit;
        deficit += W - s->ex[e].windows;
    }
    s->samples = s->row_base[s->n] * W - deficit;
    return 0;
}

/* Sample i of a split -> (shard, row in shard, window). */
static void locate(const pile_data *d, const split_set *s, uint64_t i, size_t *shard, uint64_t *row, uint32_t *win)
{
    uint64_t W = d->full_windows, r;
    /* the last exception starting at or before i */
    size_t lo = 0, hi = s->n_ex;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->ex[mid].start <= i) lo = mid + 1;
        else hi = mid;
    }
    if (lo == 0) {
        r = i / W;
        *win = (uint32_t)(i % W);
    } else {
        const short_row *e = &s->ex[lo - 1];
        uint64_t j = i - e->start;
        if (j < e->windows) {
            r = e->row;
            *win = (uint32_t)j;
        } else {
            j -= e->windows;
            r = e->row + 1 + j / W;
            *win = (uint32_t)(j % W);
        }
    }
    lo = 0, hi = s->n;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->row_base[mid] <= r) lo = mid;
        else hi = mid;
    }
    *shard = lo;
    *row = r - s->row_base[lo];
}

static int read_manifest(pile_data *d, const char *dir, const char *first_shard, pile_err *err)
{
    pile_buf path = {0};
    if (pile_fs_join(&path, dir, "manifest.json")) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    FILE *f = fopen(path.data, "rb");
    if (!f) {
        pile_buf_free(&path);
        return 0; /* optional */
    }
    fclose(f);
    pile_json *root;
    int rc = pile_json_parse_file(path.data, &root, err);
    if (rc < 0) {
        pile_buf_free(&path);
        return rc;
    }
    /* a killed pile-prep leaves a manifest that says so: its shards are a
     * prefix of the data, and training on them would go unnoticed */
    const pile_json *complete = pile_json_get(root, "complete");
    if (pile_json_type_of(complete) == PILE_JSON_BOOL && !pile_json_bool(complete)) {
        rc = pile_err_set(err, PILE_EINVAL,
                          "the shards in '%s' are unfinished: its manifest.json says \"complete\": false (pile-prep "
                          "was stopped before the end); run the same pile-prep command again to finish them",
                          dir);
        pile_json_free(root);
        pile_buf_free(&path);
        return rc;
    }
    const pile_json *opts = pile_json_get(root, "options");
    const pile_json *tok = opts ? pile_json_get(opts, "tokenizer") : NULL;
    const pile_json *fp = opts ? pile_json_get(opts, "tokenizer_fingerprint") : NULL;
    /* in a dataset of several folders, the first folder whose copy resolves names it */
    int want = !d->info.tokenizer_spec[0] || d->info.tokenizer_error[0];
    if (want && tok && pile_json_type_of(tok) == PILE_JSON_STRING) {
        size_t n;
        const char *s = pile_json_str(tok, &n);
        pile_buf resolved = {0};
        pile_err terr;
        pile_err_clear(&terr);
        if (pile_tokenizer_resolve(s, dir, d->info.tokenizer_fp, &resolved, NULL, &terr) == 0 &&
            resolved.len < sizeof d->info.tokenizer_spec) {
            s = resolved.data;
            n = resolved.len;
            d->info.tokenizer_error[0] = '\0';
        } else if (terr.msg[0] && !d->info.tokenizer_error[0]) {
            snprintf(d->info.tokenizer_error, sizeof d->info.tokenizer_error, "'%.300s': %.700s", path.data, terr.msg);
        }
        /* a spec cut short would name another tokenizer: refused, not dropped */
        if (n < sizeof d->info.tokenizer_spec) memcpy(d->info.tokenizer_spec, s, n + 1);
        else
            rc = pile_err_set(err, PILE_EINVAL, "'%s': 'options.tokenizer' is longer than %zu bytes", path.data,
                              sizeof d->info.tokenizer_spec - 1);
        pile_buf_free(&resolved);
    }
    if (rc == 0 && fp && pile_json_type_of(fp) == PILE_JSON_STRING) {
        char hex[2 * PILE_SHARD_FP_BYTES + 1];
        pile_hex_encode(hex, d->info.tokenizer_fp, PILE_SHARD_FP_BYTES);
        if (strcmp(hex, pile_json_str(fp, NULL)))
            rc = pile_err_set(err, PILE_EMISMATCH, "'%s' names tokenizer fingerprint %s but '%s' has %s", path.data,
                              pile_json_str(fp, NULL), first_shard, hex);
    }
    pile_json_free(root);
    pile_buf_free(&path);
    return rc;
}

/* Samples of a split before its row R. */
static uint64_t samples_before_row(const split_set *s, uint64_t W, uint64_t R)
{
    size_t lo = 0, hi = s->n_ex; /* exceptions with row < R: [0, lo) */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->ex[mid].row < R) lo = mid + 1;
        else hi = mid;
    }
    if (lo == 0) return R * W;
    const short_row *e = &s->ex[lo - 1];
    return e->start + e->windows + (R - e->row - 1) * W;
}

/* The share each folder holds out: the last ceil(val_fraction * n) of its
 * n train samples (one folder: the last share of all, as ever). */
static int hold_out(pile_data *d, const size_t *first_shard, size_t n_seg, double val_fraction, const char *spec,
                    pile_err *err)
{
    held_out *h = &d->ho;
    const split_set *tr = &d->split[0];
    h->n_seg = n_seg;
    h->seg_start = calloc(n_seg, sizeof *h->seg_start);
    h->seg_len = calloc(n_seg, sizeof *h->seg_len);
    h->held = calloc(n_seg, sizeof *h->held);
    h->train_before = calloc(n_seg + 1, sizeof *h->train_before);
    h->val_before = calloc(n_seg + 1, sizeof *h->val_before);
    if (!h->seg_start || !h->seg_len || !h->held || !h->train_before || !h->val_before)
        return pile_err_set(err, PILE_ENOMEM, "out of memory");
    for (size_t f = 0; f < n_seg; f++) {
        uint64_t a = samples_before_row(tr, d->full_windows, tr->row_base[first_shard[f]]);
        uint64_t b = samples_before_row(tr, d->full_windows, tr->row_base[first_shard[f + 1]]);
        h->seg_start[f] = a;
        h->seg_len[f] = b - a;
        double want = val_fraction * (double)(b - a);
        uint64_t nval = (uint64_t)want;
        if ((double)nval < want) nval++;
        h->held[f] = nval;
        h->train_before[f + 1] = h->train_before[f] + (b - a) - (nval < b - a ? nval : b - a);
        h->val_before[f + 1] = h->val_before[f] + nval;
    }
    if (h->val_before[n_seg] >= tr->samples)
        return pile_err_set(err, PILE_EINVAL,
                            "cannot hold out %g of %llu train samples in '%s' for validation: none would be left",
                            val_fraction, (unsigned long long)tr->samples, spec);
    return 0;
}

/* Train (val = 0) or held-out (val = 1) sample i -> its index in the train split. */
static uint64_t held_index(const pile_data *d, int val, uint64_t i)
{
    const held_out *h = &d->ho;
    const uint64_t *before = val ? h->val_before : h->train_before;
    size_t lo = 0, hi = h->n_seg; /* the last folder with before[f] <= i */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (before[mid] <= i) lo = mid;
        else hi = mid;
    }
    return h->seg_start[lo] + (val ? h->seg_len[lo] - h->held[lo] : 0) + (i - before[lo]);
}

int pile_data_open(pile_data **out, const char *spec, int seq_len, double val_fraction, pile_err *err)
{
    *out = NULL;
    if (!(val_fraction >= 0 && val_fraction < 1))
        return pile_err_set(err, PILE_EINVAL, "val_fraction must be in [0, 1), not %g", val_fraction);
    pile_data *d = calloc(1, sizeof *d);
    if (!d) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    pile_dataset ds;
    int rc = pile_dataset_list(&ds, spec, err);
    if (rc == 0 && ds.notes.len) {
        size_t n = ds.notes.len < sizeof d->info.notes ? ds.notes.len : sizeof d->info.notes - 1;
        memcpy(d->info.notes, ds.notes.data, n);
        d->info.notes[n] = '\0';
    }
    d->info.folders = ds.n;
    /* the train shards of folder f are [first_shard[f], first_shard[f + 1]) */
    size_t *first_shard = calloc(ds.n + 1, sizeof *first_shard);
    if (!rc && !first_shard) rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
    pile_buf path = {0}, first = {0}, qual = {0};
    const pile_shard_info *ref = NULL;
    for (size_t f = 0; rc == 0 && f < ds.n; f++) {
        const pile_dataset_folder *fo = &ds.v[f];
        char **names = NULL;
        size_t n = 0;
        first_shard[f] = d->split[0].n;
        rc = list_names(fo->path, &names, &n, err);
        for (size_t i = 0; rc == 0 && i < n; i++) {
            int sp = split_of_name(names[i]);
            split_set *s = &d->split[sp];
            path.len = qual.len = 0;
            if (pile_fs_join(&path, fo->path, names[i]) ||
                (fo->label[0] ? pile_fs_join(&qual, fo->label, names[i]) : pile_buf_append_str(&qual, names[i])) ||
                pile_buf_append(&qual, "", 1)) {
                rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
                break;
            }
            pile_shard **sh2 = realloc(s->shards, (s->n + 1) * sizeof *sh2);
            if (sh2) s->shards = sh2;
            char **nm2 = realloc(s->names, (s->n + 1) * sizeof *nm2);
            if (nm2) s->names = nm2;
            if (!sh2 || !nm2) {
                rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
                break;
            }
            pile_shard *sh;
            if ((rc = pile_shard_open(&sh, path.data, err)) < 0) break;
            s->shards[s->n] = sh;
            s->names[s->n] = strdup(qual.data);
            s->n++;
            if (!s->names[s->n - 1]) {
                rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
                break;
            }
            const pile_shard_info *in = pile_shard_get_info(sh);
            if (!in->row_checksums) d->info.unverified_shards++;
            char what[96];
            if (!ref) {
                ref = in;
                if (pile_buf_append_str(&first, path.data) || pile_buf_append(&first, "", 1))
                    rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
            } else if (differs(ref, in, what, sizeof what)) {
                rc = pile_err_set(err, PILE_EMISMATCH, "shard '%s' differs from '%s' in %s%s", path.data, first.data,
                                  what, ds.n > 1 ? ": the folders cannot be read as one dataset" : "");
            }
        }
        for (size_t i = 0; i < n; i++) free(names[i]);
        free(names);
    }
    if (first_shard) first_shard[ds.n] = d->split[0].n;
    if (rc == 0 && d->split[0].n == 0)
        rc = pile_err_set(err, PILE_ENOENT, "no train-*.shard in '%s' (run pile-prep first)", spec);
    if (rc == 0) {
        pile_data_info *info = &d->info;
        info->vocab_size = ref->vocab_size;
        info->eot_id = ref->eot_id;
        info->pad_id = ref->pad_id;
        info->max_length = ref->max_length;
        memcpy(info->tokenizer_fp, ref->tokenizer_fp, PILE_SHARD_FP_BYTES);
        info->train_shards = d->split[0].n;
        info->val_shards = d->split[1].n;
        if (seq_len <= 0) seq_len = (int)ref->max_length;
        if ((uint32_t)seq_len > ref->max_length)
            rc = pile_err_set(err, PILE_EINVAL, "max_length %d exceeds the shards' max_length %u in '%s'", seq_len,
                              ref->max_length, spec);
        if (ref->max_length < 2)
            rc = pile_err_set(err, PILE_EINVAL, "shards in '%s' have max_length %u: too short to train on", spec,
                              ref->max_length);
    }
    for (size_t f = 0; rc == 0 && f < ds.n; f++) rc = read_manifest(d, ds.v[f].path, first.data, err);
    if (rc == 0) {
        d->seq_len = seq_len;
        d->full_windows = windows_of(d->info.max_length, (uint32_t)seq_len);
        for (int sp = 0; sp < 2 && rc == 0; sp++)
            rc = index_split(&d->split[sp], d->info.max_length, (uint32_t)seq_len, d->full_windows, err);
    }
    if (rc == 0) {
        pile_data_info *info = &d->info;
        split_set *tr = &d->split[0];
        info->train_samples = tr->samples;
        info->train_tokens = tr->tokens;
        /* val shards without a single sample count as none */
        if (d->split[1].samples > 0) {
            info->val_samples = d->split[1].samples;
            info->val_tokens = d->split[1].tokens;
        } else if (val_fraction > 0) {
            /* the held-out share: the last samples of each folder by index,
             * so it is the same whatever the seed, and never visited in
             * training */
            rc = hold_out(d, first_shard, ds.n, val_fraction, spec, err);
            if (rc == 0) {
                info->val_held_out = 1;
                info->val_samples = d->ho.val_before[ds.n];
                info->train_samples = d->ho.train_before[ds.n];
            }
            for (uint64_t j = 0; rc == 0 && j < info->val_samples; j++) {
                size_t k;
                uint64_t row;
                uint32_t win;
                locate(d, tr, held_index(d, 1, j), &k, &row, &win);
                uint32_t len = pile_shard_row_length(tr->shards[k], row), start = win * (uint32_t)seq_len;
                uint32_t t = len - start < (uint32_t)seq_len ? len - start : (uint32_t)seq_len;
                info->val_tokens += t;
                info->train_tokens -= t;
            }
        }
        if (rc == 0 && info->train_samples == 0)
            rc = pile_err_set(err, PILE_EINVAL, "no train samples in '%s': every row is shorter than 2 tokens", spec);
    }
    pile_buf_free(&path);
    pile_buf_free(&first);
    pile_buf_free(&qual);
    free(first_shard);
    pile_dataset_free(&ds);
    if (rc < 0) {
        pile_data_close(d);
        return rc;
    }
    *out = d;
    return 0;
}

int pile_data_spec_absolute(const char *spec, pile_buf *out)
{
    out->len = 0;
    char *whole = realpath(spec, NULL);
    if (whole || !strchr(spec, ',')) {
        pile_buf_append_str(out, whole ? whole : spec);
    } else {
        for (const char *p = spec;;) {
            const char *comma = strchr(p, ',');
            char *item = strndup(p, comma ? (size_t)(comma - p) : strlen(p));
            char *abs = item ? realpath(item, NULL) : NULL;
            if (!item) out->failed = 1;
            else pile_buf_printf(out, "%s%s", p == spec ? "" : ",", abs ? abs : item);
            free(abs);
            free(item);
            if (!comma) break;
            p = comma + 1;
        }
    }
    free(whole);
    return out->failed || pile_buf_append(out, "", 1) ? PILE_ENOMEM : 0;
}

const pile_data_info *pile_data_get_info(const pile_data *d) { return &d->info; }

int pile_data_seq_len(const pile_data *d) { return d->seq_len; }

/* ------------------------------------------------------------ identity */

int pile_data_identity(const pile_data *d, pile_buf *out)
{
    XXH3_state_t *xs = XXH3_createState();
    if (!xs) return PILE_ENOMEM;
    XXH3_128bits_reset(xs);
    pile_buf list = {0};
    int first = 1;
    for (int sp = 0; sp < 2; sp++) {
        const split_set *s = &d->split[sp];
        for (size_t k = 0; k < s->n; k++) {
            const pile_shard_info *in = pile_shard_get_info(s->shards[k]);
            /* the name's bytes with its NUL, then the header's numbers: an
             * unambiguous encoding of the list */
            uint64_t nums[4] = {(uint64_t)sp, in->row_count, in->token_count, in->data_checksum};
            XXH3_128bits_update(xs, s->names[k], strlen(s->names[k]) + 1);
            XXH3_128bits_update(xs, nums, sizeof nums);
            pile_buf_append_str(&list, first ? "\n    {\"file\": " : ",\n    {\"file\": ");
            pile_json_write_string(&list, s->names[k], strlen(s->names[k]));
            pile_buf_printf(&list, ", \"rows\": %" PRIu64 ", \"tokens\": %" PRIu64 ", \"data_xxh3\": \"%016" PRIx64 "\"}",
                            in->row_count, in->token_count, in->data_checksum);
            first = 0;
        }
    }
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(xs));
    XXH3_freeState(xs);
    char hex[33];
    pile_hex_encode(hex, c.digest, 16);
    pile_buf_printf(out, "{\n  \"fingerprint\": \"%s\",\n  \"shards\": [", hex);
    pile_buf_append(out, list.data ? list.data : "", list.len);
    pile_buf_append_str(out, first ? "]\n}" : "\n  ]\n}");
    int rc = list.failed || out->failed || pile_buf_reserve(out, 1) ? PILE_ENOMEM : 0;
    if (!rc) out->data[out->len] = '\0';
    pile_buf_free(&list);
    return rc;
}

/* The shard named `name` among d's, or NULL. */
static const pile_shard_info *shard_named(const pile_data *d, const char *name)
{
    for (int sp = 0; sp < 2; sp++)
        for (size_t k = 0; k < d->split[sp].n; k++)
            if (!strcmp(d->split[sp].names[k], name)) return pile_shard_get_info(d->split[sp].shards[k]);
    return NULL;
}

int pile_data_identity_check(const pile_data *d, const char *json, pile_err *err)
{
    pile_buf now = {0};
    pile_json *was = NULL, *is = NULL;
    int rc = pile_data_identity(d, &now) ? pile_err_set(err, PILE_ENOMEM, "out of memory") : 0;
    if (!rc) rc = pile_json_parse(json, strlen(json), "the checkpoint's dataset identity", &was, err);
    if (!rc) rc = pile_json_parse(now.data, now.len, "the dataset identity", &is, err);
    const pile_json *list = was ? pile_json_get(was, "shards") : NULL;
    const char *fp_was = was ? pile_json_str(pile_json_get(was, "fingerprint"), NULL) : NULL;
    if (!rc && (!fp_was || pile_json_type_of(list) != PILE_JSON_ARRAY))
        rc = pile_err_set(err, PILE_EFORMAT, "the checkpoint's dataset identity has no fingerprint or shard list");
    if (rc || !strcmp(fp_was, pile_json_str(pile_json_get(is, "fingerprint"), NULL))) goto out;
    /* they differ: name the first shard that does, in the recorded order */
    size_t listed = pile_json_size(list);
    for (size_t i = 0; i < listed && !rc; i++) {
        const pile_json *e = pile_json_at(list, i);
        const char *name = pile_json_str(pile_json_get(e, "file"), NULL);
        const char *ck = pile_json_str(pile_json_get(e, "data_xxh3"), NULL);
        int64_t rows = -1, tokens = -1;
        pile_json_int(pile_json_get(e, "rows"), &rows);
        pile_json_int(pile_json_get(e, "tokens"), &tokens);
        const pile_shard_info *in = name ? shard_named(d, name) : NULL;
        char hex[17];
        if (in) snprintf(hex, sizeof hex, "%016" PRIx64, in->data_checksum);
        if (!name || !ck)
            rc = pile_err_set(err, PILE_EFORMAT, "the checkpoint's dataset identity lists a shard without a name");
        else if (!in)
            rc = pile_err_set(err, PILE_EMISMATCH, "'%s', one of the checkpoint's %zu shards, is missing", name, listed);
        else if ((int64_t)in->row_count != rows || (int64_t)in->token_count != tokens || strcmp(hex, ck))
            rc = pile_err_set(err, PILE_EMISMATCH,
                              "'%s' has %" PRIu64 " rows, %" PRIu64 " tokens and data checksum %s; the checkpoint's "
                              "had %lld, %lld and %s",
                              name, in->row_count, in->token_count, hex, (long long)rows, (long long)tokens, ck);
    }
    const pile_json *now_list = pile_json_get(is, "shards");
    for (size_t i = 0; i < pile_json_size(now_list) && !rc; i++) {
        const char *name = pile_json_str(pile_json_get(pile_json_at(now_list, i), "file"), NULL);
        int known = 0;
        for (size_t k = 0; k < listed && !known; k++) {
            const char *w = pile_json_str(pile_json_get(pile_json_at(list, k), "file"), NULL);
            known = w && name && !strcmp(w, name);
        }
        if (!known)
            rc = pile_err_set(err, PILE_EMISMATCH, "'%s' is new: the checkpoint's run had %zu shards, now there are %zu",
                              name ? name : "?", listed, pile_json_size(now_list));
    }
    /* same names and headers in another split or order */
    if (!rc) rc = pile_err_set(err, PILE_EMISMATCH, "the shards are listed in another order or split");
out:
    pile_json_free(was);
    pile_json_free(is);
    pile_buf_free(&now);
    return rc;
}

/* The epoch order as a keyed pseudo-random permutation evaluated one index
 * at a time, so that it costs O(1) memory whatever the number of samples
 * (a stored order of 8 bytes a sample is gigabytes on the whole Pile).
 *
 * Construction: a balanced Feistel network (Luby, Rackoff 1988) on the
 * 2h-bit domain [0, 4^h), 4^h the smallest power of four >= n, with
 * FEISTEL_ROUNDS rounds; restricted to [0, n) by cycle walking (Black,
 * Rogaway, "Ciphers with arbitrary finite domains", CT-RSA 2002): the
 * network is applied again until the value falls inside [0, n), which is
 * a bijection on [0, n) because it follows each cycle of the network's
 * permutation to the next element inside the range. As 4^h < 4n, a walk
 * takes under four applications on average.
 *
 * One round on x = (L, R), halves of h bits: (L, R) -> (R, L ^ F_r(R)),
 * F_r(R) = mix(R ^ k_r) masked to h bits, mix the splitmix64 finaliser
 * (Steele, Lea, Flood 2014; constants of Stafford's variant 13), a
 * bijection on 64 bits. The round keys:
 *   base = mix(mix(seed + G) ^ epoch),  k_r = mix(base + (r + 1) * G),
 *   G = 0x9E3779B97F4A7C15,
 * so that for one seed no two epochs share a key (mix is a bijection).
 * Only fixed-width integer arithmetic: the order is the same on every
 * machine. (A Feistel network only ever yields even permutations of its
 * domain, immaterial past the smallest n.) */
#define FEISTEL_ROUNDS 8

uint64_t pile_data_epoch_sample(const pile_data *d, uint64_t seed, uint64_t epoch, uint64_t position)
{
    uint64_t n = d->info.train_samples;
    if (n <= 1 || position >= n) return position;
    unsigned h = 1; /* half width: the smallest with 4^h >= n */
    while (h < 32 && (n - 1) >> (2 * h)) h++;
    const uint64_t mask = h == 32 ? UINT64_MAX >> 32 : (1ull << h) - 1;
    uint64_t k[FEISTEL_ROUNDS], base = pile__mix64(pile__mix64(seed + PILE__GOLDEN) ^ epoch);
    for (int r = 0; r < FEISTEL_ROUNDS; r++) k[r] = pile__mix64(base + (uint64_t)(r + 1) * PILE__GOLDEN);
    uint64_t x = position;
    do {
        uint64_t l = x >> h, rt = x & mask;
        for (int r = 0; r < FEISTEL_ROUNDS; r++) {
            uint64_t t = l ^ (pile__mix64(rt ^ k[r]) & mask);
            l = rt;
            rt = t;
        }
        x = l << h | rt;
    } while (x >= n);
    return x;
}

uint64_t pile_data_corrupt_rows(const pile_data *d)
{
    uint64_t n = 0;
    for (int sp = 0; sp < 2; sp++)
        for (size_t k = 0; k < d->split[sp].n; k++) n += pile_shard_corrupt_rows(d->split[sp].shards[k]);
    return n;
}

int pile_data_sample(const pile_data *d, int val, uint64_t i, int doc_mask_loss, int32_t *tokens, int32_t *targets,
                     int32_t *doc_start, pile_err *err)
{
    const split_set *s = &d->split[val && !d->info.val_held_out ? 1 : 0];
    if (d->info.val_held_out) i = held_index(d, val, i);
    size_t k;
    uint64_t row;
    uint32_t win;
    locate(d, s, i, &k, &row, &win);
    const pile_shard *sh = s->shards[k];
    const pile_shard_info *in = pile_shard_get_info(sh);
    int rc = pile_shard_check_row(sh, row, err);
    if (rc < 0) {
        for (int t = 0; t < d->seq_len; t++) {
            tokens[t] = (int32_t)in->pad_id;
            targets[t] = -1;
            if (doc_start) doc_start[t] = 0;
        }
        return rc;
    }
    const void *data = pile_shard_row_data(sh, row);
    uint32_t L = in->max_length, len = pile_shard_row_length(sh, row);
    uint32_t T = (uint32_t)d->seq_len, start = win * T;
    const pile_shard_doc *docs;
    uint32_t ndocs = pile_shard_row_docs(sh, row, &docs);
    /* the documents starting at or before the window, then walked along it */
    uint32_t di = 0, cur = 0; /* cur: row offset of the current document (0 when none started in the row) */
    while (di < ndocs && docs[di].offset <= start) cur = docs[di++].offset;
    int count = 0;
    for (uint32_t t = 0; t < T; t++) {
        uint32_t p = start + t;
        int32_t tok;
        if (p < L) tok = in->token_bytes == 2 ? ((const uint16_t *)data)[p] : (int32_t)((const uint32_t *)data)[p];
        else tok = (int32_t)in->pad_id;
        tokens[t] = tok;
        while (di < ndocs && docs[di].offset <= p) cur = docs[di++].offset;
        if (doc_start) doc_start[t] = cur > start ? (int32_t)(cur - start) : 0;
        int32_t target = -1;
        if (p + 1 < len) {
            target = in->token_bytes == 2 ? ((const uint16_t *)data)[p + 1] : (int32_t)((const uint32_t *)data)[p + 1];
            /* docs[di] is the next document start after p */
            if (doc_mask_loss && di < ndocs && docs[di].offset == p + 1) target = -1;
        }
        targets[t] = target;
        count += target >= 0;
    }
    return count;
}
