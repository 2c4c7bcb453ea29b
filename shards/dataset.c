/* Several shard folders as one dataset: the spec's folders found and
 * ordered, and their pile-prep manifests compared, so that partitions made
 * on many machines (pile-prep --partition) are read together only when
 * they belong together: one tokenizer, one row length, and each partition
 * of an input set at most once. */
#include "pile_shards.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "pile_fs.h"
#include "pile_json.h"

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* What folder `dir` holds: bit 1 a *.shard, bit 2 a manifest.json. */
static unsigned holds(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    unsigned h = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] != '.' && ends_with(e->d_name, ".shard")) h |= 1;
        if (!strcmp(e->d_name, "manifest.json")) h |= 2;
    }
    closedir(d);
    return h;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int push(pile_dataset *ds, const char *path, pile_err *err)
{
    pile_dataset_folder *v = realloc(ds->v, (ds->n + 1) * sizeof *v);
    if (!v) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    ds->v = v;
    pile_dataset_folder *f = &v[ds->n];
    memset(f, 0, sizeof *f);
    f->complete = 1;
    if (!(f->path = strdup(path))) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    ds->n++;
    return 0;
}

/* One item of the spec: a folder of shards, or a folder of such folders. */
static int add_item(pile_dataset *ds, const char *item, pile_err *err)
{
    struct stat st;
    if (stat(item, &st) != 0) return pile_err_sys(err, PILE_ENOENT, errno, "cannot open '%s'", item);
    if (!S_ISDIR(st.st_mode)) return pile_err_set(err, PILE_EINVAL, "'%s' is not a folder of shards", item);
    if (holds(item) & 1) return push(ds, item, err);
    DIR *d = opendir(item);
    if (!d) return pile_err_sys(err, PILE_EIO, errno, "cannot open '%s'", item);
    char **subs = NULL;
    size_t n = 0;
    int rc = 0;
    pile_buf p = {0};
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        p.len = 0;
        if (pile_fs_join(&p, item, e->d_name)) {
            rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
            break;
        }
        if (!pile_fs_is_dir(p.data) || !holds(p.data)) continue;
        char **s = realloc(subs, (n + 1) * sizeof *s);
        if (!s || !(s[n] = strdup(p.data))) {
            if (s) subs = s;
            rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
            break;
        }
        subs = s;
        n++;
    }
    closedir(d);
    pile_buf_free(&p);
    if (!rc && n == 0)
        rc = pile_err_set(err, PILE_ENOENT,
                          "no shards in '%s' (neither *.shard files nor folders of them, such as pile-prep "
                          "--partition's part-K-of-N; run pile-prep first)",
                          item);
    if (!rc) qsort(subs, n, sizeof *subs, cmp_str);
    for (size_t i = 0; i < n && !rc; i++) rc = push(ds, subs[i], err);
    for (size_t i = 0; i < n; i++) free(subs[i]);
    free(subs);
    return rc;
}

static const char *str_of(const pile_json *o, const char *key)
{
    const pile_json *v = o ? pile_json_get(o, key) : NULL;
    return v && pile_json_type_of(v) == PILE_JSON_STRING ? pile_json_str(v, NULL) : NULL;
}

static uint64_t u64_of(const pile_json *o, const char *key)
{
    int64_t x = 0;
    const pile_json *v = o ? pile_json_get(o, key) : NULL;
    return v && pile_json_int(v, &x) && x > 0 ? (uint64_t)x : 0;
}

/* The manifest's facts, when the folder has one pile-prep wrote. */
static int read_manifest(pile_dataset_folder *f, pile_err *err)
{
    pile_buf path = {0};
    if (pile_fs_join(&path, f->path, "manifest.json")) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    struct stat st;
    pile_json *root = NULL;
    int rc = 0;
    if (stat(path.data, &st) != 0) goto out;
    if ((rc = pile_json_parse_file(path.data, &root, err)) < 0) goto out;
    const char *format = str_of(root, "format");
    if (!format || strcmp(format, "pile-prep manifest")) goto out;
    f->has_manifest = 1;
    const pile_json *c = pile_json_get(root, "complete");
    f->complete = !(c && pile_json_type_of(c) == PILE_JSON_BOOL && !pile_json_bool(c));
    const pile_json *o = pile_json_get(root, "options");
    const char *fp = str_of(o, "tokenizer_fingerprint");
    if (fp && strlen(fp) < sizeof f->tokenizer_fp) strcpy(f->tokenizer_fp, fp);
    f->max_length = u64_of(o, "max_length");
    const pile_json *pt = o ? pile_json_get(o, "partition") : NULL;
    const char *inputs = str_of(pt, "inputs_xxh3");
    uint64_t k = u64_of(pt, "index"), n = u64_of(pt, "count");
    if (pt && inputs && strlen(inputs) < sizeof f->part_inputs && k >= 1 && k <= n && n <= UINT32_MAX) {
        f->part_index = (uint32_t)k;
        f->part_count = (uint32_t)n;
        strcpy(f->part_inputs, inputs);
    }
out:
    pile_json_free(root);
    pile_buf_free(&path);
    return rc;
}

/* The last `parts` components of path (trailing slashes dropped). */
static char *tail_of(const char *path, int parts)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t b = n;
    for (int k = 0; k < parts; k++) {
        if (k) {
            while (b > 0 && path[b - 1] == '/') b--;
        }
        while (b > 0 && path[b - 1] != '/') b--;
    }
    return strndup(path + b, n - b);
}

static int set_labels(pile_dataset *ds, pile_err *err)
{
    for (int parts = 1; parts <= 3; parts++) {
        for (size_t i = 0; i < ds->n; i++) {
            free(ds->v[i].label);
            ds->v[i].label = ds->n == 1 ? strdup("") : tail_of(ds->v[i].path, parts);
            if (!ds->v[i].label) return pile_err_set(err, PILE_ENOMEM, "out of memory");
        }
        size_t a = 0, b = 0;
        int clash = 0;
        for (a = 0; a < ds->n && !clash; a++)
            for (b = a + 1; b < ds->n && !clash; b++) clash = !strcmp(ds->v[a].label, ds->v[b].label);
        if (!clash) return 0;
        if (parts == 3)
            return pile_err_set(err, PILE_EINVAL, "'%s' and '%s' end in the same folder names: give folders whose "
                                "names tell them apart", ds->v[a - 1].path, ds->v[b - 1].path);
    }
    return 0;
}

static int cmp_part(const void *a, const void *b)
{
    const pile_dataset_folder *x = a, *y = b;
    return x->part_index < y->part_index ? -1 : x->part_index > y->part_index;
}

/* Tokenizer, row length and partitions of the folders, compared. */
static int check_folders(pile_dataset *ds, pile_err *err)
{
    const pile_dataset_folder *ref = NULL;
    for (size_t i = 0; i < ds->n; i++) {
        const pile_dataset_folder *f = &ds->v[i];
        if (!f->tokenizer_fp[0]) continue;
        if (!ref) {
            ref = f;
            continue;
        }
        if (strcmp(f->tokenizer_fp, ref->tokenizer_fp))
            return pile_err_set(err, PILE_EMISMATCH,
                                "cannot read '%s' and '%s' as one dataset: they were made with different tokenizers "
                                "(fingerprints %s and %s); make them again with one --tokenizer",
                                ref->path, f->path, ref->tokenizer_fp, f->tokenizer_fp);
        if (f->max_length != ref->max_length)
            return pile_err_set(err, PILE_EMISMATCH,
                                "cannot read '%s' and '%s' as one dataset: their rows have different lengths "
                                "(max_length %" PRIu64 " and %" PRIu64 ")",
                                ref->path, f->path, ref->max_length, f->max_length);
    }
    for (size_t i = 0; i < ds->n; i++) {
        const pile_dataset_folder *f = &ds->v[i];
        if (!f->part_count) continue;
        for (size_t j = 0; j < i; j++) {
            const pile_dataset_folder *g = &ds->v[j];
            if (!g->part_count || strcmp(f->part_inputs, g->part_inputs)) continue;
            if (g->part_count != f->part_count)
                return pile_err_set(err, PILE_EMISMATCH,
                                    "cannot read '%s' and '%s' as one dataset: they are partitions %u of %u and %u of "
                                    "%u of the same inputs, cut two ways, so documents would be read twice",
                                    g->path, f->path, g->part_index, g->part_count, f->part_index, f->part_count);
            if (g->part_index == f->part_index)
                return pile_err_set(err, PILE_EMISMATCH,
                                    "cannot read '%s' and '%s' as one dataset: both are partition %u of %u of the same "
                                    "inputs, so its documents would be read twice",
                                    g->path, f->path, f->part_index, f->part_count);
        }
    }
    /* the partitions each input set lacks: said, not refused */
    for (size_t i = 0; i < ds->n; i++) {
        const pile_dataset_folder *f = &ds->v[i];
        int first = f->part_count > 0;
        for (size_t j = 0; j < i && first; j++) first = !(ds->v[j].part_count && !strcmp(ds->v[j].part_inputs, f->part_inputs));
        if (!first) continue;
        uint32_t have = 0;
        for (size_t j = i; j < ds->n; j++) have += ds->v[j].part_count && !strcmp(ds->v[j].part_inputs, f->part_inputs);
        if (have == f->part_count) continue;
        pile_buf_printf(&ds->notes, "only %u of the %u partitions of the inputs of '%s' are in the dataset; missing:",
                        have, f->part_count, f->path);
        uint32_t shown = 0;
        for (uint32_t k = 1; k <= f->part_count && shown < 10; k++) {
            int found = 0;
            for (size_t j = i; j < ds->n && !found; j++)
                found = ds->v[j].part_index == k && !strcmp(ds->v[j].part_inputs, f->part_inputs);
            if (!found) pile_buf_printf(&ds->notes, "%s %u", shown++ ? "," : "", k);
        }
        pile_buf_printf(&ds->notes, "%s\n", f->part_count - have > shown ? " ..." : "");
    }
    if (ds->notes.failed) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    /* partitions of one input set, however they were listed: partition order */
    int one_set = ds->n > 1;
    for (size_t i = 0; i < ds->n && one_set; i++)
        one_set = ds->v[i].part_count && !strcmp(ds->v[i].part_inputs, ds->v[0].part_inputs);
    if (one_set) qsort(ds->v, ds->n, sizeof *ds->v, cmp_part);
    return 0;
}

int pile_dataset_list(pile_dataset *ds, const char *spec, pile_err *err)
{
    memset(ds, 0, sizeof *ds);
    if (!spec || !*spec) return pile_err_set(err, PILE_EINVAL, "no data folder given");
    struct stat st;
    int rc = 0;
    if (stat(spec, &st) == 0 || !strchr(spec, ',')) {
        rc = add_item(ds, spec, err);
    } else {
        for (const char *p = spec; !rc;) {
            const char *comma = strchr(p, ',');
            size_t n = comma ? (size_t)(comma - p) : strlen(p);
            char *item = strndup(p, n);
            if (!item) rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
            else if (!n) rc = pile_err_set(err, PILE_EINVAL, "an empty folder name in the list '%s'", spec);
            else rc = add_item(ds, item, err);
            free(item);
            if (!comma) break;
            p = comma + 1;
        }
    }
    /* one folder twice would be read twice */
    for (size_t i = 0; i < ds->n && !rc; i++) {
        struct stat a, b;
        if (stat(ds->v[i].path, &a) != 0) continue;
        for (size_t j = 0; j < i && !rc; j++)
            if (stat(ds->v[j].path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
                rc = pile_err_set(err, PILE_EINVAL, "'%s' and '%s' are the same folder: its shards would be read twice",
                                  ds->v[j].path, ds->v[i].path);
    }
    for (size_t i = 0; i < ds->n && !rc; i++) rc = read_manifest(&ds->v[i], err);
    if (!rc) rc = check_folders(ds, err);
    if (!rc) rc = set_labels(ds, err);
    return rc;
}

void pile_dataset_free(pile_dataset *ds)
{
    if (!ds) return;
    for (size_t i = 0; i < ds->n; i++) {
        free(ds->v[i].path);
        free(ds->v[i].label);
    }
    free(ds->v);
    pile_buf_free(&ds->notes);
    memset(ds, 0, sizeof *ds);
}
