/* Input discovery for pile-prep: files as given, folders walked recursively
 * and sorted by path, so the input order (and with it every output byte) is
 * the same on any file system. Each input is identified by what it is
 * (device and inode) for duplicates and resumes, and put into a split by the
 * words of its name or by a rule the user gives. */
#include "pile_prep.h"
#include "pile_fs.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define SNIFF_BYTES 65536 /* of a plain .json file, to tell JSON lines from one JSON document */

/* ------------------------------------------------------------------ names */

static int ends_with_ci(const char *s, size_t n, const char *suffix)
{
    size_t m = strlen(suffix);
    return n >= m && strncasecmp(s + n - m, suffix, m) == 0;
}

/* Length of the compression suffix pile_lines reads (".zst", ".zstd",
 * ".gz", any case), 0 for none. */
static size_t codec_suffix(const char *name, size_t n)
{
    static const char *const sfx[] = {".zst", ".zstd", ".gz"};
    for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++)
        if (ends_with_ci(name, n, sfx[i])) return strlen(sfx[i]);
    return 0;
}

/* *.jsonl and *.json, plain or .zst / .zstd / .gz, in any case. Sets *plain_json
 * for an uncompressed .json (which may hold one JSON document, not lines). */
static int is_input_name(const char *name, int *plain_json)
{
    size_t n = strlen(name), c = codec_suffix(name, n);
    int json = ends_with_ci(name, n - c, ".json");
    if (plain_json) *plain_json = json && c == 0;
    return json || ends_with_ci(name, n - c, ".jsonl");
}

/* JSON-lines data in a form pile-prep does not read (".jsonl.xz", ".json.bz2"). */
static int is_other_data_name(const char *name)
{
    for (const char *p = name; (p = strchr(p, '.')) != NULL; p++)
        if (!strncasecmp(p, ".jsonl.", 7) || !strncasecmp(p, ".json.", 6)) return 1;
    return 0;
}

/* Split words in s[0..n): words are separated by '_', '-', '.', '/' and the
 * ends, compared without case. */
static unsigned split_words(const char *s, size_t n)
{
    static const struct {
        const char *word;
        pile_split split;
    } words[] = {{"val", PILE_SPLIT_VAL}, {"valid", PILE_SPLIT_VAL}, {"validation", PILE_SPLIT_VAL},
                 {"test", PILE_SPLIT_TEST}};
    unsigned bits = 0;
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && !strchr("_-./", s[j])) j++;
        for (size_t k = 0; k < sizeof words / sizeof words[0]; k++)
            if (strlen(words[k].word) == j - i && !strncasecmp(s + i, words[k].word, j - i))
                bits |= 1u << words[k].split;
        i = j + 1;
    }
    return bits;
}

static pile_split split_of_bits(unsigned bits)
{
    if (bits == 1u << PILE_SPLIT_VAL) return PILE_SPLIT_VAL;
    if (bits == 1u << PILE_SPLIT_TEST) return PILE_SPLIT_TEST;
    return PILE_SPLIT_TRAIN;
}

/* The split words of a path below the folder given (rel): those of the file
 * name when it has any, else those of the nearest folder that has any. */
static unsigned path_split_words(const char *rel)
{
    const char *end = rel + strlen(rel);
    while (end > rel) {
        const char *start = end;
        while (start > rel && start[-1] != '/') start--;
        unsigned bits = split_words(start, (size_t)(end - start));
        if (bits) return bits;
        end = start > rel ? start - 1 : rel;
    }
    return 0;
}

pile_split pile_prep_split_of(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    return split_of_bits(split_words(base, strlen(base)));
}

const char *pile_prep_split_name(pile_split split)
{
    switch (split) {
    case PILE_SPLIT_VAL: return "val";
    case PILE_SPLIT_TEST: return "test";
    default: return "train";
    }
}

/* ------------------------------------------------------------------ notes */

static void note(pile_prep_inputs *list, const char *path, const char *why)
{
    if (list->n_notes++ < PILE_PREP_NOTES_MAX) pile_buf_printf(&list->notes, "passed over '%s': %s\n", path, why);
}

/* ------------------------------------------------------------------ files */

static const char *kind_of(mode_t m)
{
    if (S_ISFIFO(m)) return "a FIFO";
    if (S_ISSOCK(m)) return "a socket";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    return "not a regular file";
}

/* Why `path` cannot be an input, as an unreadable file would: stat failed
 * (a dangling symbolic link says where it points), or it is no regular file. */
static int refuse(const char *path, int stat_errno, const struct stat *st, pile_err *err)
{
    if (stat_errno) {
        char target[PATH_MAX];
        ssize_t n = readlink(path, target, sizeof target - 1);
        if (n > 0) {
            target[n] = '\0';
            return pile_err_sys(err, stat_errno == ENOENT ? PILE_ENOENT : PILE_EIO, stat_errno,
                                "cannot open '%s' (a symbolic link to '%s')", path, target);
        }
        return pile_err_sys(err, stat_errno == ENOENT ? PILE_ENOENT : PILE_EIO, stat_errno, "cannot open '%s'",
                            path);
    }
    return pile_err_set(err, PILE_EINVAL, "cannot read '%s': %s, not a regular file", path, kind_of(st->st_mode));
}

/* words_from: where in path the part whose words tell the split begins. */
static int push_file(pile_prep_inputs *list, const char *path, const struct stat *st, size_t words_from,
                     pile_err *err)
{
    if (!S_ISREG(st->st_mode)) return refuse(path, 0, st, err);
    /* unreadable now is fatal now, not hours into the run */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return pile_err_sys(err, errno == ENOENT ? PILE_ENOENT : PILE_EIO, errno, "cannot open '%s'", path);
    close(fd);
    if (list->n == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 16;
        pile_prep_input *v = realloc(list->v, cap * sizeof *v);
        if (!v) return pile_err_set(err, PILE_ENOMEM, "out of memory");
        list->v = v;
        list->cap = cap;
    }
    pile_prep_input *in = &list->v[list->n];
    memset(in, 0, sizeof *in);
    in->path = strdup(path);
    if (!in->path) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    in->name_splits = path_split_words(path + words_from);
    in->split = split_of_bits(in->name_splits);
    in->size = (uint64_t)st->st_size;
    in->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
    in->dev = (uint64_t)st->st_dev;
    in->ino = (uint64_t)st->st_ino;
    list->n++;
    return 0;
}

/* Does a plain .json file hold JSON lines? Its first line that is not blank
 * must be one whole object; a pretty-printed document starts with a lone
 * '{' or '['. A first line longer than what is read is given the benefit. */
static int looks_like_lines(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return 1; /* push_file reports it */
    char *b = malloc(SNIFF_BYTES);
    ssize_t n = b ? read(fd, b, SNIFF_BYTES) : -1;
    close(fd);
    int ok = 1;
    if (n > 0) {
        size_t i = n >= 3 && !memcmp(b, "\xEF\xBB\xBF", 3) ? 3 : 0, len = (size_t)n;
        while (i < len && isspace((unsigned char)b[i])) i++;
        if (i < len) {
            char *nl = memchr(b + i, '\n', len - i);
            size_t e = nl ? (size_t)(nl - b) : len;
            while (e > i && isspace((unsigned char)b[e - 1])) e--;
            ok = b[i] == '{' && (!nl || (e - i >= 2 && b[e - 1] == '}'));
        }
    }
    free(b);
    return ok;
}

typedef struct name_vec {
    char **v;
    size_t n, cap;
} name_vec;

static int name_push(name_vec *nv, char *s)
{
    if (nv->n == nv->cap) {
        size_t cap = nv->cap ? nv->cap * 2 : 64;
        char **v = realloc(nv->v, cap * sizeof *v);
        if (!v) return -1;
        nv->v = v;
        nv->cap = cap;
    }
    nv->v[nv->n++] = s;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The folders from the root down to the one being walked, to recognise a
 * link back to one of them: followed, two such links make the walk
 * exponential. */
typedef struct walk_up {
    dev_t dev;
    ino_t ino;
    const struct walk_up *up;
} walk_up;

/* A folder holding a pile-prep manifest is an output folder: its
 * manifest.json (and tokenizer files) are not inputs. */
static int is_output_folder(const char *dir)
{
    pile_buf p = {0};
    if (pile_fs_join(&p, dir, "manifest.json")) return 0;
    int fd = open(p.data, O_RDONLY | O_CLOEXEC);
    pile_buf_free(&p);
    if (fd < 0) return 0;
    char head[256];
    ssize_t n = read(fd, head, sizeof head - 1);
    close(fd);
    if (n <= 0) return 0;
    head[n] = '\0';
    return strstr(head, "\"pile-prep manifest\"") != NULL;
}

/* Collects every input file under dir into nv (unsorted). */
static int walk(pile_prep_inputs *list, const char *dir, const walk_up *self, name_vec *nv, int depth,
                pile_err *err)
{
    if (depth > 64) return pile_err_set(err, PILE_ELIMIT, "cannot walk '%s': folders nested too deep", dir);
    if (depth > 0 && is_output_folder(dir)) {
        note(list, dir, "a pile-prep output folder");
        return 0;
    }
    DIR *d = opendir(dir);
    if (!d) return pile_err_sys(err, errno == ENOENT ? PILE_ENOENT : PILE_EIO, errno, "cannot open '%s'", dir);
    int rc = 0;
    pile_buf p = {0};
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (pile_fs_join(&p, dir, e->d_name)) {
            rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
            break;
        }
        int plain_json = 0, input = is_input_name(e->d_name, &plain_json);
        struct stat st;
        if (stat(p.data, &st) != 0) {
            /* a dangling link named like an input is an input that cannot be read */
            if (input) {
                rc = refuse(p.data, errno, NULL, err);
                break;
            }
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            int loop = 0;
            for (const walk_up *a = self; a && !loop; a = a->up) loop = a->dev == st.st_dev && a->ino == st.st_ino;
            if (loop) continue; /* its files are already being collected */
            walk_up below = {st.st_dev, st.st_ino, self};
            rc = walk(list, p.data, &below, nv, depth + 1, err);
            if (rc) break;
        } else if (input) {
            if (!S_ISREG(st.st_mode)) {
                rc = refuse(p.data, 0, &st, err);
                break;
            }
            if (plain_json && !looks_like_lines(p.data)) {
                note(list, p.data, "one JSON document, not JSON lines (give it by name to read it anyway)");
                continue;
            }
            char *s = strdup(p.data);
            if (!s || name_push(nv, s)) {
                free(s);
                rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
                break;
            }
        } else if (S_ISREG(st.st_mode) && is_other_data_name(e->d_name)) {
            note(list, p.data, "pile-prep reads .jsonl and .json files, plain, zstd (.zst, .zstd) or gzip (.gz)");
        }
    }
    closedir(d);
    pile_buf_free(&p);
    return rc;
}

int pile_prep_inputs_add(pile_prep_inputs *list, const char *path, pile_err *err)
{
    struct stat st;
    if (stat(path, &st) != 0) return refuse(path, errno, NULL, err);
    if (!S_ISDIR(st.st_mode)) {
        const char *base = strrchr(path, '/');
        return push_file(list, path, &st, base ? (size_t)(base + 1 - path) : 0, err);
    }

    name_vec nv = {0};
    walk_up root = {st.st_dev, st.st_ino, NULL};
    int rc = walk(list, path, &root, &nv, 0, err);
    if (!rc && nv.n == 0)
        rc = pile_err_set(err, PILE_ENOENT,
                          "cannot find any input file (*.jsonl or *.json, plain, .zst, .zstd or .gz) in '%s'", path);
    if (!rc) {
        qsort(nv.v, nv.n, sizeof *nv.v, cmp_str);
        size_t root_len = strlen(path);
        for (size_t i = 0; i < nv.n && !rc; i++) {
            size_t from = root_len;
            while (nv.v[i][from] == '/') from++;
            if (stat(nv.v[i], &st) != 0) rc = refuse(nv.v[i], errno, NULL, err);
            else rc = push_file(list, nv.v[i], &st, from, err);
        }
    }
    for (size_t i = 0; i < nv.n; i++) free(nv.v[i]);
    free(nv.v);
    return rc;
}

/* ------------------------------------------------------------------ rules */

/* Is input `in` under folder `dir_real` (a resolved path)? Its own folder is
 * resolved, not the file: an input that is a link lives where it was found. */
static int under_folder(const pile_prep_input *in, const char *dir_real)
{
    const char *slash = strrchr(in->path, '/');
    char *parent = slash ? strndup(in->path, (size_t)(slash - in->path)) : strdup(".");
    char *r = parent ? realpath(*parent ? parent : "/", NULL) : NULL;
    free(parent);
    if (!r) return 0;
    size_t n = strlen(dir_real);
    int yes = !strncmp(r, dir_real, n) && (r[n] == '/' || r[n] == '\0' || (n == 1 && dir_real[0] == '/'));
    free(r);
    return yes;
}

static int matches(const pile_prep_input *in, const char *pattern, const struct stat *st, const char *dir_real)
{
    if (st) return S_ISDIR(st->st_mode) ? under_folder(in, dir_real)
                                        : (uint64_t)st->st_dev == in->dev && (uint64_t)st->st_ino == in->ino;
    if (strchr(pattern, '/')) return fnmatch(pattern, in->path, 0) == 0;
    const char *base = strrchr(in->path, '/');
    return fnmatch(pattern, base ? base + 1 : in->path, 0) == 0;
}

/* Applies the rule to every input it names; returns how many, or an error. */
static long apply_rule(pile_prep_inputs *list, pile_split split, const char *pattern, const struct stat *st,
                       const char *dir_real, pile_err *err)
{
    long hits = 0;
    for (size_t i = 0; i < list->n; i++) {
        pile_prep_input *in = &list->v[i];
        if (!matches(in, pattern, st, dir_real)) continue;
        hits++;
        if (in->rule && in->split != split)
            return pile_err_set(err, PILE_EINVAL, "'%s' is named by both %s and --%s '%s'; name it once", in->path,
                                in->rule, pile_prep_split_name(split), pattern);
        if (in->rule) continue;
        pile_buf r = {0};
        if (pile_buf_printf(&r, "--%s '%s'", pile_prep_split_name(split), pattern) || !r.data) {
            pile_buf_free(&r);
            return pile_err_set(err, PILE_ENOMEM, "out of memory");
        }
        in->rule = r.data;
        in->split = split;
    }
    return hits;
}

int pile_prep_inputs_set_split(pile_prep_inputs *list, pile_split split, const char *pattern, pile_err *err)
{
    struct stat st;
    int exists = stat(pattern, &st) == 0;
    char *dir_real = exists && S_ISDIR(st.st_mode) ? realpath(pattern, NULL) : NULL;
    if (exists && S_ISDIR(st.st_mode) && !dir_real)
        return pile_err_sys(err, PILE_EIO, errno, "cannot resolve '%s'", pattern);
    long hits = apply_rule(list, split, pattern, exists ? &st : NULL, dir_real, err);
    if (hits == 0 && exists) {
        /* named outright but not among the inputs: it is one */
        int rc = pile_prep_inputs_add(list, pattern, err);
        hits = rc ? rc : apply_rule(list, split, pattern, &st, dir_real, err);
    }
    free(dir_real);
    if (hits < 0) return (int)hits;
    if (hits == 0)
        return pile_err_set(err, PILE_ENOENT, "--%s '%s' names no input (neither a file nor a pattern any input matches)",
                            pile_prep_split_name(split), pattern);
    return 0;
}

/* -------------------------------------------------------------- partitions */

typedef struct part_item {
    size_t i;    /* index in the list (the first spelling of the file) */
    pile_split split;
    uint64_t size;
} part_item;

/* Split order, then largest first, then list order: a total order, so qsort's
 * instability cannot show. */
static int cmp_part_item(const void *a, const void *b)
{
    const part_item *x = a, *y = b;
    if (x->split != y->split) return x->split < y->split ? -1 : 1;
    if (x->size != y->size) return x->size > y->size ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

int pile_prep_inputs_partition(pile_prep_inputs *list, uint32_t index, uint32_t count, pile_prep_partition *out,
                               pile_err *err)
{
    memset(out, 0, sizeof *out);
    if (count < 1 || index < 1 || index > count)
        return pile_err_set(err, PILE_EINVAL, "partition %u of %u does not exist (1 to %u)", index, count, count);
    size_t n = list->n, m = 0;
    part_item *items = malloc((n ? n : 1) * sizeof *items);
    size_t *first = malloc((n ? n : 1) * sizeof *first);   /* the first spelling of each file */
    uint32_t *part = malloc((n ? n : 1) * sizeof *part);    /* partition of each first spelling */
    uint64_t *load = calloc(count, sizeof *load);
    XXH3_state_t *xs = XXH3_createState();
    int rc = items && first && part && load && xs ? 0 : pile_err_set(err, PILE_ENOMEM, "out of memory");
    if (!rc) XXH3_64bits_reset(xs);
    for (size_t i = 0; i < n && !rc; i++) {
        const pile_prep_input *in = &list->v[i];
        first[i] = i;
        /* quadratic, but over files, not lines: the Pile has 32 */
        for (size_t k = 0; k < i && first[i] == i; k++)
            if (list->v[k].dev == in->dev && list->v[k].ino == in->ino && (in->dev || in->ino)) first[i] = first[k];
        if (first[i] != i) continue;
        items[m++] = (part_item){i, in->split, in->size};
        /* the name without its folders: the same set of files mounted elsewhere is the same set */
        const char *base = strrchr(in->path, '/');
        base = base ? base + 1 : in->path;
        uint64_t nums[2] = {(uint64_t)in->split, in->size};
        XXH3_64bits_update(xs, base, strlen(base) + 1);
        XXH3_64bits_update(xs, nums, sizeof nums);
        out->bytes_total += in->size;
    }
    if (!rc && count > m)
        rc = pile_err_set(err, PILE_EINVAL,
                          "cannot make %u partitions of %zu input file%s: partitions are made of whole files, so "
                          "some would be empty; use at most %zu",
                          count, m, m == 1 ? "" : "s", m);
    if (!rc) {
        qsort(items, m, sizeof *items, cmp_part_item);
        for (size_t k = 0; k < m; k++) {
            uint32_t best = 0;
            for (uint32_t p = 1; p < count; p++)
                if (load[p] < load[best]) best = p;
            load[best] += items[k].size;
            part[items[k].i] = best + 1;
        }
        size_t kept = 0;
        for (size_t i = 0; i < n; i++) {
            if (part[first[i]] == index) {
                if (first[i] == i) {
                    out->inputs_selected++;
                    out->bytes_selected += list->v[i].size;
                }
                list->v[kept++] = list->v[i];
            } else {
                free(list->v[i].path);
                free(list->v[i].rule);
            }
        }
        list->n = kept;
        out->index = index;
        out->count = count;
        out->inputs_total = m;
        out->inputs_xxh3 = XXH3_64bits_digest(xs);
    }
    free(items);
    free(first);
    free(part);
    free(load);
    XXH3_freeState(xs);
    return rc;
}

void pile_prep_inputs_free(pile_prep_inputs *list)
{
    if (!list) return;
    for (size_t i = 0; i < list->n; i++) {
        free(list->v[i].path);
        free(list->v[i].rule);
    }
    free(list->v);
    pile_buf_free(&list->notes);
    memset(list, 0, sizeof *list);
}
