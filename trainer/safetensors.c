/* The safetensors format (https://huggingface.co/docs/safetensors), F32 only:
 * a writer that streams the tensors after the header into a temporary file
 * (no copy of a whole model in memory), and an mmap reader that checks every
 * field the way the Rust reference does before handing out a pointer. */
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pile_fs.h"
#include "pile_json.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c writes host floats as little-endian data: port it for big-endian hosts"
#endif

/* The Rust reference refuses headers over 100 MB; so do we, so that a
 * corrupt length cannot make us parse (or allocate for) gigabytes. */
#define ST_MAX_HEADER ((uint64_t)100000000)
#define ST_MAX_DIMS 4

struct pile_st_file {
    char *path;
    void *map;          /* the whole file, read-only */
    size_t map_len;
    float *copy;        /* the data section, when the file's data is not 4-byte aligned */
    pile_json *header;
    pile_st_tensor *tensors; /* in file (data offset) order */
    size_t n;
};

/* ------------------------------------------------------------- writer */

static void put_u64_le(unsigned char out[8], uint64_t v)
{
    for (int i = 0; i < 8; i++) out[i] = (unsigned char)(v >> (8 * i));
}

/* The JSON header, padded with spaces so the data starts 8-byte aligned. */
static int build_header(pile_buf *h, const pile_st_tensor *t, size_t n, const char *const *metadata,
                        const char *path, pile_err *err)
{
    pile_buf_append_str(h, "{");
    int first = 1;
    if (metadata && metadata[0]) {
        pile_buf_append_str(h, "\"__metadata__\":{");
        for (size_t i = 0; metadata[i]; i += 2) {
            if (!metadata[i + 1])
                return pile_err_set(err, PILE_EINVAL, "cannot write '%s': metadata key '%s' has no value", path,
                                    metadata[i]);
            if (i) pile_buf_append_str(h, ",");
            pile_json_write_string(h, metadata[i], strlen(metadata[i]));
            pile_buf_append_str(h, ":");
            pile_json_write_string(h, metadata[i + 1], strlen(metadata[i + 1]));
        }
        pile_buf_append_str(h, "}");
        first = 0;
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        if (!t[i].name || !*t[i].name)
            return pile_err_set(err, PILE_EINVAL, "cannot write '%s': tensor %zu has no name", path, i);
        if (strcmp(t[i].name, "__metadata__") == 0)
            return pile_err_set(err, PILE_EINVAL, "cannot write '%s': '__metadata__' is not a tensor name", path);
        if (t[i].ndim < 0 || t[i].ndim > ST_MAX_DIMS)
            return pile_err_set(err, PILE_EINVAL, "cannot write '%s': tensor '%s' has %d dimensions", path,
                                t[i].name, t[i].ndim);
        for (size_t j = 0; j < i; j++)
            if (strcmp(t[j].name, t[i].name) == 0)
                return pile_err_set(err, PILE_EINVAL, "cannot write '%s': tensor '%s' given twice", path, t[i].name);
        uint64_t numel = 1;
        if (!first) pile_buf_append_str(h, ",");
        first = 0;
        pile_json_write_string(h, t[i].name, strlen(t[i].name));
        pile_buf_append_str(h, ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < t[i].ndim; d++) {
            if (t[i].shape[d] < 0)
                return pile_err_set(err, PILE_EINVAL, "cannot write '%s': tensor '%s' has a negative dimension",
                                    path, t[i].name);
            numel *= (uint64_t)t[i].shape[d];
            pile_buf_printf(h, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
        }
        if (numel && !t[i].data)
            return pile_err_set(err, PILE_EINVAL, "cannot write '%s': tensor '%s' has no data", path, t[i].name);
        pile_buf_printf(h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                        (unsigned long long)(off + numel * 4));
        off += numel * 4;
    }
    pile_buf_append_str(h, "}");
    while (h->len % 8) pile_buf_append_str(h, " ");
    if (h->failed) return pile_err_set(err, PILE_ENOMEM, "out of memory writing '%s'", path);
    return 0;
}

int pile_st_write(const char *path, const pile_st_tensor *tensors, size_t n, const char *const *metadata,
                  pile_err *err)
{
    pile_buf h = {0}, tmp = {0};
    FILE *f = NULL;
    int rc = build_header(&h, tensors, n, metadata, path, err);
    if (rc) goto out;
    if (pile_buf_printf(&tmp, "%s.tmp", path)) {
        rc = pile_err_set(err, PILE_ENOMEM, "out of memory writing '%s'", path);
        goto out;
    }
    f = fopen(tmp.data, "wb");
    if (!f) {
        rc = pile_err_sys(err, PILE_EIO, errno, "cannot create '%s'", tmp.data);
        goto out;
    }
    unsigned char len8[8];
    put_u64_le(len8, h.len);
    int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(h.data, 1, h.len, f) == h.len;
    for (size_t i = 0; ok && i < n; i++) {
        size_t numel = 1;
        for (int d = 0; d < tensors[i].ndim; d++) numel *= (size_t)tensors[i].shape[d];
        if (numel) ok = fwrite(tensors[i].data, sizeof(float), numel, f) == numel;
    }
    if (!ok || fflush(f) != 0) {
        rc = pile_err_sys(err, PILE_EIO, errno, "cannot write '%s'", tmp.data);
    } else if (fsync(fileno(f)) != 0) {
        rc = pile_err_sys(err, PILE_EIO, errno, "cannot fsync '%s'", tmp.data);
    }
    if (fclose(f) != 0 && !rc) rc = pile_err_sys(err, PILE_EIO, errno, "cannot close '%s'", tmp.data);
    f = NULL;
    if (!rc && rename(tmp.data, path) != 0)
        rc = pile_err_sys(err, PILE_EIO, errno, "cannot rename '%s' to '%s'", tmp.data, path);
    if (rc) unlink(tmp.data);
    if (!rc) rc = pile_fs_fsync_dir(path, err);
out:
    pile_buf_free(&h);
    pile_buf_free(&tmp);
    return rc;
}

/* ------------------------------------------------------------- reader */

void pile_st_close(pile_st_file *f)
{
    if (!f) return;
    if (f->map) munmap(f->map, f->map_len);
    free(f->copy);
    pile_json_free(f->header);
    free(f->tensors);
    free(f->path);
    free(f);
}

size_t pile_st_count(const pile_st_file *f)
{
    return f ? f->n : 0;
}

const pile_st_tensor *pile_st_at(const pile_st_file *f, size_t i)
{
    return f && i < f->n ? &f->tensors[i] : NULL;
}

const pile_st_tensor *pile_st_find(const pile_st_file *f, const char *name)
{
    if (!f) return NULL;
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

/* Offsets of one tensor while the header is checked. */
typedef struct st_span {
    uint64_t begin, end;
    size_t idx; /* header order, for a stable sort */
} st_span;

static int span_cmp(const void *a, const void *b)
{
    const st_span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int name_cmp(const void *a, const void *b)
{
    const pile_st_tensor *x = a, *y = b;
    return strcmp(x->name, y->name);
}

/* Checks one header entry and fills t (data not yet set) and its span. */
static int parse_entry(const pile_st_file *f, const char *name, const pile_json *v, uint64_t data_len,
                       pile_st_tensor *t, st_span *span, pile_err *err)
{
    const char *p = f->path;
    if (pile_json_type_of(v) != PILE_JSON_OBJECT)
        return pile_err_set(err, PILE_EFORMAT, "bad safetensors file '%s': tensor '%s' is not an object", p, name);
    const pile_json *dtype = NULL, *shape = NULL, *offs = NULL;
    for (size_t i = 0; i < pile_json_size(v); i++) {
        const char *k = pile_json_key_at(v, i, NULL);
        const pile_json *x = pile_json_at(v, i);
        if (strcmp(k, "dtype") == 0) dtype = x;
        else if (strcmp(k, "shape") == 0) shape = x;
        else if (strcmp(k, "data_offsets") == 0) offs = x;
        else
            return pile_err_set(err, PILE_EFORMAT, "bad safetensors file '%s': tensor '%s' has an unknown field '%s'",
                                p, name, k);
    }
    if (!dtype || !shape || !offs)
        return pile_err_set(err, PILE_EFORMAT, "bad safetensors file '%s': tensor '%s' lacks '%s'", p, name,
                            !dtype ? "dtype" : !shape ? "shape" : "data_offsets");
    const char *dt = pile_json_str(dtype, NULL);
    if (!dt) return pile_err_set(err, PILE_EFORMAT, "bad safetensors file '%s': dtype of '%s' is not a string", p, name);
    if (strcmp(dt, "F32") != 0)
        return pile_err_set(err, PILE_EFORMAT, "unsupported dtype '%s' of tensor '%s' in '%s': only F32 is read", dt,
                            name, p);
    if (pile_json_type_of(shape) != PILE_JSON_ARRAY)
        return pile_err_set(err, PILE_EFORMAT, "bad safetensors file '%s': shape of '%s' is not an array", p, name);
    size_t nd = pile_json_size(shape);
    if (nd > ST_MAX_DIMS)
        return pile_err_set(err, PILE_EFORMAT, "bad safetensors file '%s': tensor '%s' has %zu dimensions (at most %d)",
                            p, name, nd, ST_MAX_DIMS);
    t->name = name;
    t->ndim = (int)nd;
    int empty = 0;
    for (size_t d = 0; d < nd; d++) {
        int64_t x;
        if (!pile_json_int(pile_json_at(shape, d), &x) || x < 0)
            return pile_err_set(err, PILE_EFORMAT,
                                "bad safetensors file '%s': dimension %zu of '%s' is not a non-negative integer", p, d,
                                name);
        t->shape[d] = x;
        empty |= x == 0;
    }
    uint64_t bytes = empty ? 0 : 4;
    for (size_t d = 0; d < nd && !empty; d++) {
        if (bytes > UINT64_MAX / (uint64_t)t->shape[d])
            return pile_err_set(err, PILE_EFORMAT, "bad safetensors file '%s': the size of '%s' overflows", p, name);
        bytes *= (uint64_t)t->shape[d];
    }
    int64_t b, e;
    if (pile_json_type_of(offs) != PILE_JSON_ARRAY || pile_json_size(offs) != 2 ||
        !pile_json_int(pile_json_at(offs, 0), &b) || !pile_json_int(pile_json_at(offs, 1), &e) || b < 0 || e < 0)
        return pile_err_set(err, PILE_EFORMAT,
                            "bad safetensors file '%s': data_offsets of '%s' are not two non-negative integers", p,
                            name);
    if (b > e)
        return pile_err_set(err, PILE_EFORMAT, "bad safetensors file '%s': data_offsets of '%s' end before they begin",
                            p, name);
    if ((uint64_t)e > data_len)
        return pile_err_set(err, PILE_ETRUNC,
                            "truncated safetensors file '%s': tensor '%s' ends at byte %lld of %llu data bytes", p, name,
                            (long long)e, (unsigned long long)data_len);
    if ((uint64_t)(e - b) != bytes)
        return pile_err_set(err, PILE_EFORMAT,
                            "bad safetensors file '%s': tensor '%s' has %lld data bytes but its shape needs %llu", p,
                            name, (long long)(e - b), (unsigned long long)bytes);
    span->begin = (uint64_t)b;
    span->end = (uint64_t)e;
    return 0;
}

static int check_metadata(const pile_st_file *f, const pile_json *v, pile_err *err)
{
    if (pile_json_type_of(v) != PILE_JSON_OBJECT)
        return pile_err_set(err, PILE_EFORMAT, "bad safetensors file '%s': __metadata__ is not an object", f->path);
    for (size_t i = 0; i < pile_json_size(v); i++)
        if (pile_json_type_of(pile_json_at(v, i)) != PILE_JSON_STRING)
            return pile_err_set(err, PILE_EFORMAT, "bad safetensors file '%s': metadata '%s' is not a string", f->path,
                                pile_json_key_at(v, i, NULL));
    return 0;
}

/* Parses and checks the header of the mapped file; fills f->tensors. */
static int st_parse(pile_st_file *f, pile_err *err)
{
    const unsigned char *base = f->map;
    const char *p = f->path;
    if (f->map_len < 8)
        return pile_err_set(err, PILE_ETRUNC, "truncated safetensors file '%s': %zu bytes, no header length", p,
                            f->map_len);
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++) hlen |= (uint64_t)base[i] << (8 * i);
    if (hlen < 2 || hlen > ST_MAX_HEADER)
        return pile_err_set(err, PILE_EFORMAT, "bad safetensors file '%s': header length %llu is not sane", p,
                            (unsigned long long)hlen);
    if (hlen > f->map_len - 8)
        return pile_err_set(err, PILE_ETRUNC, "truncated safetensors file '%s': header of %llu bytes, file of %zu", p,
                            (unsigned long long)hlen, f->map_len);
    if (base[8] != '{')
        return pile_err_set(err, PILE_EFORMAT, "bad safetensors file '%s': header does not start with '{'", p);
    PILE_FORWARD_IF_ERR(pile_json_parse((const char *)base + 8, (size_t)hlen, p, &f->header, err));
    const pile_json *h = f->header;
    if (pile_json_type_of(h) != PILE_JSON_OBJECT)
        return pile_err_set(err, PILE_EFORMAT, "bad safetensors file '%s': header is not a JSON object", p);
    uint64_t data_len = f->map_len - 8 - hlen;
    size_t members = pile_json_size(h);
    f->tensors = calloc(members ? members : 1, sizeof *f->tensors);
    st_span *spans = calloc(members ? members : 1, sizeof *spans);
    int rc = 0;
    if (!f->tensors || !spans) {
        rc = pile_err_set(err, PILE_ENOMEM, "out of memory reading '%s'", p);
        goto out;
    }
    size_t n = 0;
    for (size_t i = 0; i < members && !rc; i++) {
        size_t klen;
        const char *k = pile_json_key_at(h, i, &klen);
        /* a NUL would make "wte.weight\u0000x" read as wte.weight here, and
         * as a stranger by every other reader */
        if (!klen || strlen(k) != klen) {
            rc = pile_err_set(err, PILE_EFORMAT, "bad safetensors file '%s': tensor name '%s' is empty or holds a NUL",
                              p, k);
            break;
        }
        if (strcmp(k, "__metadata__") == 0) {
            rc = check_metadata(f, pile_json_at(h, i), err);
            continue;
        }
        spans[n].idx = n;
        rc = parse_entry(f, k, pile_json_at(h, i), data_len, &f->tensors[n], &spans[n], err);
        n++;
    }
    if (rc) goto out;
    /* Names must be unique: a JSON object with a repeated key means two
     * tensors where a reader keeps only one. */
    pile_st_tensor *byname = malloc((n ? n : 1) * sizeof *byname);
    if (!byname) {
        rc = pile_err_set(err, PILE_ENOMEM, "out of memory reading '%s'", p);
        goto out;
    }
    memcpy(byname, f->tensors, n * sizeof *byname);
    qsort(byname, n, sizeof *byname, name_cmp);
    for (size_t i = 1; i < n && !rc; i++)
        if (strcmp(byname[i - 1].name, byname[i].name) == 0)
            rc = pile_err_set(err, PILE_EFORMAT, "bad safetensors file '%s': tensor '%s' appears twice", p,
                              byname[i].name);
    free(byname);
    if (rc) goto out;
    /* As the reference reader: the tensors tile the data section exactly, no
     * overlap, no gap, nothing after. */
    qsort(spans, n, sizeof *spans, span_cmp);
    uint64_t at = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const char *nm = f->tensors[spans[i].idx].name;
        if (spans[i].begin < at)
            rc = pile_err_set(err, PILE_EFORMAT, "bad safetensors file '%s': tensor '%s' overlaps the one before it",
                              p, nm);
        else if (spans[i].begin > at)
            rc = pile_err_set(err, PILE_EFORMAT, "bad safetensors file '%s': gap of %llu bytes before tensor '%s'", p,
                              (unsigned long long)(spans[i].begin - at), nm);
        at = spans[i].end;
    }
    if (!rc && at != data_len)
        rc = pile_err_set(err, PILE_EFORMAT, "bad safetensors file '%s': %llu data bytes after the last tensor", p,
                          (unsigned long long)(data_len - at));
    if (rc) goto out;
    const unsigned char *data = base + 8 + hlen;
    if ((8 + hlen) % sizeof(float)) {
        /* A writer other than ours may leave the data unaligned: copy it once
         * rather than hand out misaligned float pointers. */
        f->copy = malloc(data_len ? data_len : 1);
        if (!f->copy) {
            rc = pile_err_set(err, PILE_ENOMEM, "out of memory reading '%s'", p);
            goto out;
        }
        memcpy(f->copy, data, data_len);
        data = (const unsigned char *)f->copy;
    }
    pile_st_tensor *ordered = malloc((n ? n : 1) * sizeof *ordered);
    if (!ordered) {
        rc = pile_err_set(err, PILE_ENOMEM, "out of memory reading '%s'", p);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        ordered[i] = f->tensors[spans[i].idx];
        ordered[i].data = (const float *)(const void *)(data + spans[i].begin);
    }
    free(f->tensors);
    f->tensors = ordered;
    f->n = n;
out:
    free(spans);
    return rc;
}

int pile_st_open(pile_st_file **out, const char *path, pile_err *err)
{
    *out = NULL;
    pile_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return pile_err_set(err, PILE_ENOMEM, "out of memory opening '%s'", path);
    }
    int rc = 0;
    /* O_NONBLOCK: a FIFO in a folder handed to us must not hang the open */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        rc = pile_err_sys(err, errno == ENOENT ? PILE_ENOENT : PILE_EIO, errno, "cannot open '%s'", path);
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = pile_err_sys(err, PILE_EIO, errno, "cannot stat '%s'", path);
        close(fd);
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        rc = pile_err_set(err, PILE_EFORMAT, "bad safetensors file '%s': not a regular file", path);
        goto fail;
    }
    if (st.st_size < 8) {
        close(fd);
        rc = pile_err_set(err, PILE_ETRUNC, "truncated safetensors file '%s': %lld bytes, no header length", path,
                          (long long)st.st_size);
        goto fail;
    }
    f->map_len = (size_t)st.st_size;
    f->map = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        rc = pile_err_sys(err, PILE_EIO, errno, "cannot map '%s'", path);
        goto fail;
    }
    rc = st_parse(f, err);
    if (rc) goto fail;
    *out = f;
    return 0;
fail:
    pile_st_close(f);
    return rc;
}
