/* Input discovery for pile-prep: files as given, folders walked recursively
 * and sorted by path, so the input order (and with it every output byte) is
 * the same on any file system. */
#include "pile_prep.h"
#include "pile_fs.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

static int is_input_name(const char *name)
{
    return ends_with(name, ".jsonl") || ends_with(name, ".jsonl.zst");
}

pile_split pile_prep_split_of(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (!strcmp(base, "val.jsonl") || !strcmp(base, "val.jsonl.zst")) return PILE_SPLIT_VAL;
    if (!strcmp(base, "test.jsonl") || !strcmp(base, "test.jsonl.zst")) return PILE_SPLIT_TEST;
    return PILE_SPLIT_TRAIN;
}

const char *pile_prep_split_name(pile_split split)
{
    switch (split) {
    case PILE_SPLIT_VAL: return "val";
    case PILE_SPLIT_TEST: return "test";
    default: return "train";
    }
}

static int push_file(pile_prep_inputs *list, const char *path, const struct stat *st, pile_err *err)
{
    if (list->n == list->cap) {
        size_t cap = list->cap ? list->cap * 2 : 16;
        pile_prep_input *v = realloc(list->v, cap * sizeof *v);
        if (!v) return pile_err_set(err, PILE_ENOMEM, "out of memory");
        list->v = v;
        list->cap = cap;
    }
    pile_prep_input *in = &list->v[list->n];
    in->path = strdup(path);
    if (!in->path) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    in->split = pile_prep_split_of(path);
    in->size = (uint64_t)st->st_size;
    in->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
    list->n++;
    return 0;
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

/* Collects every input file under dir into nv (unsorted). */
static int walk(const char *dir, const walk_up *self, name_vec *nv, int depth, pile_err *err)
{
    if (depth > 64) return pile_err_set(err, PILE_ELIMIT, "cannot walk '%s': folders nested too deep", dir);
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
        struct stat st;
        if (stat(p.data, &st) != 0) continue; /* a dangling link is not an input */
        if (S_ISDIR(st.st_mode)) {
            int loop = 0;
            for (const walk_up *a = self; a && !loop; a = a->up) loop = a->dev == st.st_dev && a->ino == st.st_ino;
            if (loop) continue; /* its files are already being collected */
            walk_up below = {st.st_dev, st.st_ino, self};
            rc = walk(p.data, &below, nv, depth + 1, err);
            if (rc) break;
        } else if (S_ISREG(st.st_mode) && is_input_name(e->d_name)) {
            char *s = strdup(p.data);
            if (!s || name_push(nv, s)) {
                free(s);
                rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
                break;
            }
        }
    }
    closedir(d);
    pile_buf_free(&p);
    return rc;
}

int pile_prep_inputs_add(pile_prep_inputs *list, const char *path, pile_err *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return pile_err_sys(err, errno == ENOENT ? PILE_ENOENT : PILE_EIO, errno, "cannot open '%s'", path);
    if (!S_ISDIR(st.st_mode)) return push_file(list, path, &st, err);

    name_vec nv = {0};
    walk_up root = {st.st_dev, st.st_ino, NULL};
    int rc = walk(path, &root, &nv, 0, err);
    if (!rc && nv.n == 0)
        rc = pile_err_set(err, PILE_ENOENT, "cannot find any *.jsonl or *.jsonl.zst file in '%s'", path);
    if (!rc) {
        qsort(nv.v, nv.n, sizeof *nv.v, cmp_str);
        for (size_t i = 0; i < nv.n && !rc; i++) {
            if (stat(nv.v[i], &st) != 0)
                rc = pile_err_sys(err, PILE_EIO, errno, "cannot open '%s'", nv.v[i]);
            else
                rc = push_file(list, nv.v[i], &st, err);
        }
    }
    for (size_t i = 0; i < nv.n; i++) free(nv.v[i]);
    free(nv.v);
    return rc;
}

void pile_prep_inputs_free(pile_prep_inputs *list)
{
    if (!list) return;
    for (size_t i = 0; i < list->n; i++) free(list->v[i].path);
    free(list->v);
    memset(list, 0, sizeof *list);
}
