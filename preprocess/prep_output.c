/* pile-prep's output folder: which files in it are pile-prep's, the
 * tokenizer's copy that makes the folder self-contained, and the check of
 * kept files against the checksums the manifest records.
 *
 * The rule: a file is removed or overwritten only when the manifest says
 * pile-prep wrote it, or when it is what the interrupted run the manifest
 * describes was in the middle of writing (the shards numbered from the
 * first one not yet recorded, temporary files of pile-prep's names). Any
 * other file, whatever its name (a user's thesis.tmp, a folder dir.tmp/,
 * nanoGPT's train.bin), is left alone, and where pile-prep would have to
 * write over it the run is refused, naming it. */
#include "prep_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "pile_fs.h"

#define TOK_DIR "tokenizer"

/* ------------------------------------------------------------------ names */

int pile__prep_shard_name(const char *name, int *tmp, pile_split *split, unsigned *num)
{
    for (int s = 0; s < PREP_NSPLITS; s++) {
        const char *sn = pile_prep_split_name((pile_split)s);
        size_t n = strlen(sn);
        if (strncmp(name, sn, n) || name[n] != '-') continue;
        const char *d = name + n + 1;
        for (int k = 0; k < 5; k++)
            if (d[k] < '0' || d[k] > '9') return 0;
        if (strcmp(d + 5, ".shard") && strcmp(d + 5, ".shard.tmp")) return 0;
        *tmp = d[11] != '\0';
        *split = (pile_split)s;
        *num = (unsigned)strtoul(d, NULL, 10);
        return 1;
    }
    return 0;
}

/* <split>.bin / <split>.idx, or either with .tmp */
static int megatron_name(const char *name, int *tmp, pile_split *split)
{
    for (int s = 0; s < PREP_NSPLITS; s++) {
        const char *sn = pile_prep_split_name((pile_split)s);
        size_t n = strlen(sn);
        if (strncmp(name, sn, n)) continue;
        const char *e = name + n;
        if (!strcmp(e, ".bin") || !strcmp(e, ".idx") || !strcmp(e, ".bin.tmp") || !strcmp(e, ".idx.tmp")) {
            *tmp = e[4] != '\0';
            *split = (pile_split)s;
            return 1;
        }
    }
    return 0;
}

static int recorded(const prep_files *f, const char *name)
{
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->v[i].name, name)) return 1;
    return 0;
}

int pile__prep_files_add(prep_files *f, const char *name, uint64_t size, uint64_t xxh3)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 4;
        prep_file *v = realloc(f->v, cap * sizeof *v);
        if (!v) return PILE_ENOMEM;
        f->v = v;
        f->cap = cap;
    }
    char *copy = strdup(name);
    if (!copy) return PILE_ENOMEM;
    f->v[f->n++] = (prep_file){copy, size, xxh3};
    return 0;
}

void pile__prep_files_free(prep_files *f)
{
    for (size_t i = 0; i < f->n; i++) free(f->v[i].name);
    free(f->v);
    memset(f, 0, sizeof *f);
}

/* ---------------------------------------------------------------- helpers */

/* Removes OUT/name; an absent file is fine. */
static int remove_in(const char *out, const char *name, pile_err *err)
{
    pile_buf p = {0};
    if (pile_fs_join(&p, out, name)) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    int rc = 0;
    if (unlink(p.data) != 0 && errno != ENOENT) rc = pile_err_sys(err, PILE_EIO, errno, "cannot remove '%s'", p.data);
    pile_buf_free(&p);
    return rc;
}

int pile__prep_file_xxh3(const char *path, uint64_t *xxh3, uint64_t *size, pile_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return pile_err_sys(err, errno == ENOENT ? PILE_ENOENT : PILE_EIO, errno, "cannot open '%s'", path);
    XXH3_state_t *h = XXH3_createState();
    size_t cap = (size_t)1 << 20;
    char *buf = malloc(cap);
    int rc = 0;
    if (!h || !buf) rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
    if (!rc) XXH3_64bits_reset(h);
    uint64_t total = 0;
    while (!rc) {
        ssize_t n = read(fd, buf, cap);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) rc = pile_err_sys(err, PILE_EIO, errno, "cannot read '%s'", path);
        if (n <= 0) break;
        XXH3_64bits_update(h, buf, (size_t)n);
        total += (uint64_t)n;
    }
    if (!rc) {
        *xxh3 = XXH3_64bits_digest(h);
        *size = total;
    }
    free(buf);
    if (h) XXH3_freeState(h);
    close(fd);
    return rc;
}

/* 1 if the file at path holds exactly data[0..len) */
static int same_content(const char *path, const pile_buf *data)
{
    pile_buf have = {0};
    pile_err ignored;
    int same = pile_fs_read_file(path, &have, &ignored) == 0 && have.len == data->len &&
               (!have.len || memcmp(have.data, data->data, have.len) == 0);
    pile_buf_free(&have);
    return same;
}

/* 1 if the file at path is a pile-prep manifest (a temporary one a killed run
 * left), or the start of one (a run killed while writing it: a prefix of
 * the opening every manifest has, or longer and beginning with all of it) */
static int is_our_manifest(const char *path)
{
    pile_json *root = NULL;
    pile_err ignored;
    int ours = 0;
    pile_buf head = {0};
    if (pile_fs_read_file(path, &head, &ignored) == 0) {
        size_t n = sizeof PREP_MANIFEST_OPENING - 1;
        if (head.len < n) n = head.len;
        ours = n == 0 || memcmp(head.data, PREP_MANIFEST_OPENING, n) == 0;
    }
    pile_buf_free(&head);
    if (ours) return 1;
    if (pile_json_parse_file(path, &root, &ignored) == 0) {
        const pile_json *f = pile_json_get(root, "format");
        ours = f && pile_json_type_of(f) == PILE_JSON_STRING && !strcmp(pile_json_str(f, NULL), "pile-prep manifest");
    }
    pile_json_free(root);
    return ours;
}

/* ------------------------------------------------------- tokenizer source */

int pile__prep_tok_source_read(prep_tok_source *ts, const char *spec, pile_err *err)
{
    memset(ts, 0, sizeof *ts);
    pile_buf p = {0};
    int rc = 0;
    if (!spec || !*spec || !strcmp(spec, "bytes")) {
        ts->spec = strdup("bytes");
    } else if (pile_tokenizer_is_builtin(spec)) {
        /* GPT-2's files from the library: the copy is a GPT-2 folder like any other */
        const char *name;
        const void *data;
        size_t len;
        for (size_t i = 0; !rc && i < 2 && pile_tokenizer_builtin_file(spec, i, &name, &data, &len); i++) {
            ts->name[i] = strdup(name);
            ts->n++;
            if (!ts->name[i] || pile_buf_append(&ts->data[i], data, len))
                rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
        }
        ts->spec = strdup(TOK_DIR);
    } else if (pile_fs_is_dir(spec)) {
        static const char *const gpt2[] = {"encoder.json", "vocab.bpe"};
        for (int i = 0; i < 2 && !rc; i++) {
            ts->name[i] = strdup(gpt2[i]);
            ts->n++;
            if (!ts->name[i] || pile_fs_join(&p, spec, gpt2[i])) rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
            else rc = pile_fs_read_file(p.data, &ts->data[i], err);
        }
        ts->spec = strdup(TOK_DIR);
    } else {
        const char *base = strrchr(spec, '/');
        base = base ? base + 1 : spec;
        ts->name[0] = strdup(base);
        ts->n = 1;
        if (!ts->name[0] || pile_fs_join(&p, TOK_DIR, base)) rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
        else rc = pile_fs_read_file(spec, &ts->data[0], err);
        ts->spec = p.data ? strdup(p.data) : NULL;
    }
    if (!rc && !ts->spec) rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
    pile_buf_free(&p);
    if (rc) pile__prep_tok_source_free(ts);
    return rc;
}

int pile__prep_tok_source_same(const prep_tok_source *a, const prep_tok_source *b)
{
    int same = a->n == b->n && !strcmp(a->spec, b->spec);
    for (size_t i = 0; same && i < a->n; i++)
        same = !strcmp(a->name[i], b->name[i]) && a->data[i].len == b->data[i].len &&
               (!a->data[i].len || !memcmp(a->data[i].data, b->data[i].data, a->data[i].len));
    return same;
}

void pile__prep_tok_source_free(prep_tok_source *ts)
{
    for (int i = 0; i < 2; i++) {
        free(ts->name[i]);
        pile_buf_free(&ts->data[i]);
    }
    free(ts->spec);
    memset(ts, 0, sizeof *ts);
}

/* ------------------------------------------------------------ the cleanup */

/* What an interrupted (or, with `complete`, a finished) run left half
 * written: shards from the first unrecorded number on, temporary files of
 * pile-prep's names, Megatron files of an incomplete --megatron run. */
static int in_progress(const prep_state *st, const char *name)
{
    int tmp;
    pile_split sp;
    unsigned num;
    if (pile__prep_shard_name(name, &tmp, &sp, &num)) return tmp || (!st->complete && num >= st->next_shard[sp]);
    if (megatron_name(name, &tmp, &sp)) return st->megatron && (tmp || !st->complete);
    return !strcmp(name, "manifest.json.tmp");
}

int pile__prep_output_clean(const prep_state *st, pile_err *err)
{
    const char *out = st->opts->output_dir;
    DIR *d = opendir(out);
    if (!d) return pile_err_sys(err, PILE_EIO, errno, "cannot open folder '%s'", out);
    int rc = 0;
    struct dirent *e;
    while (!rc && (e = readdir(d)) != NULL)
        if (in_progress(st, e->d_name)) rc = remove_in(out, e->d_name, err);
    closedir(d);
    /* a copy of the tokenizer being written when the run stopped */
    pile_buf tmp = {0};
    for (size_t i = 0; i < st->tok_files.n && !rc; i++) {
        if (pile_buf_printf(&tmp, "%s.tmp", st->tok_files.v[i].name)) rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
        else rc = remove_in(out, tmp.data, err);
        tmp.len = 0;
    }
    pile_buf_free(&tmp);
    return rc;
}

int pile__prep_output_forget(prep_state *st, pile_err *err)
{
    const char *out = st->opts->output_dir;
    int rc = pile__prep_output_clean(st, err);
    for (size_t i = 0; i < st->n_shards && !rc; i++) rc = remove_in(out, st->shards[i].file, err);
    for (size_t i = 0; i < st->mega_files.n && !rc; i++) rc = remove_in(out, st->mega_files.v[i].name, err);
    /* an older pile-prep recorded no list of its Megatron files: its options say it wrote them */
    for (int sp = 0; sp < PREP_NSPLITS && !rc && st->megatron && !st->mega_files.n; sp++)
        for (int k = 0; k < 2 && !rc; k++) {
            char name[32];
            snprintf(name, sizeof name, "%s%s", pile_prep_split_name((pile_split)sp), k ? ".idx" : ".bin");
            rc = remove_in(out, name, err);
        }
    for (size_t i = 0; i < st->tok_files.n && !rc; i++) rc = remove_in(out, st->tok_files.v[i].name, err);
    /* the manifest last: until it goes, a run stopped halfway through this still knows what is ours */
    if (!rc) rc = remove_in(out, "manifest.json", err);
    return rc;
}

/* ---------------------------------------------------------- what is in the way */

static int in_the_way(const char *out, const char *name, const char *why, pile_err *err)
{
    return pile_err_set(err, PILE_EMISMATCH,
                        "'%s/%s' is in the way: %s; pile-prep never removes or overwrites a file its manifest does "
                        "not record: move it, or use another output folder",
                        out, name, why);
}

int pile__prep_output_check(const prep_state *rec, int have_record, int megatron, const prep_tok_source *ts,
                            pile_err *err)
{
    const char *out = rec->opts->output_dir;
    DIR *d = opendir(out);
    if (!d) return pile_err_sys(err, PILE_EIO, errno, "cannot open folder '%s'", out);
    int rc = 0;
    size_t stray = 0;
    char first[256] = "";
    pile_buf p = {0};
    struct dirent *e;
    while (!rc && (e = readdir(d)) != NULL) {
        const char *name = e->d_name;
        int tmp;
        pile_split sp;
        unsigned num;
        if (have_record && in_progress(rec, name)) continue; /* the recorded run's: removed before writing */
        if (pile__prep_shard_name(name, &tmp, &sp, &num)) {
            int ok = 0;
            for (size_t i = 0; i < rec->n_shards && !ok; i++) ok = !strcmp(rec->shards[i].file, name);
            if (!ok && !stray++) snprintf(first, sizeof first, "%s", name);
        } else if (megatron_name(name, &tmp, &sp) && megatron) {
            /* a --megatron run's own; an older pile-prep recorded no list of them */
            int older = have_record && rec->megatron && !rec->mega_files.n;
            if (!recorded(&rec->mega_files, name) && !older)
                rc = in_the_way(out, name, "pile-prep --megatron writes a file of this name", err);
        } else if (!strcmp(name, "manifest.json.tmp")) {
            if (pile_fs_join(&p, out, name)) rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
            else if (!is_our_manifest(p.data))
                rc = in_the_way(out, name, "pile-prep writes its manifest through a file of this name", err);
        }
    }
    closedir(d);
    if (!rc && stray)
        rc = pile_err_set(err, PILE_EMISMATCH,
                          "output folder '%s' holds %zu shard file%s ('%s'%s) that no manifest.json records; pile-prep "
                          "never removes or overwrites a file its manifest does not record: move them, or use a new "
                          "output folder",
                          out, stray, stray == 1 ? "" : "s", first, stray > 1 ? ", ..." : "");
    /* the tokenizer's copy: a file of another content that is not ours is in the way */
    pile_buf rel = {0}, tmp = {0};
    struct stat sb;
    if (!rc && ts->n && pile_fs_join(&p, out, TOK_DIR)) rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
    if (!rc && ts->n && stat(p.data, &sb) == 0 && !S_ISDIR(sb.st_mode))
        rc = in_the_way(out, TOK_DIR, "pile-prep keeps a copy of the tokenizer in a folder of this name", err);
    for (size_t i = 0; i < ts->n && !rc; i++) {
        rel.len = tmp.len = 0;
        if (pile_buf_printf(&rel, "%s/%s", TOK_DIR, ts->name[i]) || pile_buf_printf(&tmp, "%s.tmp", rel.data) ||
            pile_fs_join(&p, out, rel.data)) {
            rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
            break;
        }
        if (recorded(&rec->tok_files, rel.data)) continue;
        if (lstat(p.data, &sb) == 0 && (!S_ISREG(sb.st_mode) || !same_content(p.data, &ts->data[i])))
            rc = in_the_way(out, rel.data, "pile-prep keeps its copy of the tokenizer under this name", err);
        else if (pile_fs_join(&p, out, tmp.data) == 0 && lstat(p.data, &sb) == 0)
            rc = in_the_way(out, tmp.data, "pile-prep writes its copy of the tokenizer through this name", err);
    }
    pile_buf_free(&rel);
    pile_buf_free(&tmp);
    pile_buf_free(&p);
    return rc;
}

/* ------------------------------------------------------- the tokenizer copy */

int pile__prep_output_tokenizer_plan(prep_state *st, const prep_tok_source *ts, int *changed, pile_err *err)
{
    const char *out = st->opts->output_dir;
    prep_files want = {0};
    pile_buf rel = {0};
    int rc = 0;
    for (size_t i = 0; i < ts->n && !rc; i++) {
        rel.len = 0;
        if (pile_buf_printf(&rel, "%s/%s", TOK_DIR, ts->name[i]) ||
            pile__prep_files_add(&want, rel.data, ts->data[i].len, XXH3_64bits(ts->data[i].data, ts->data[i].len)))
            rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
    }
    pile_buf_free(&rel);
    /* an earlier copy that this one does not replace file by file goes, while the manifest still records it */
    for (size_t i = 0; i < st->tok_files.n && !rc; i++)
        if (!recorded(&want, st->tok_files.v[i].name)) rc = remove_in(out, st->tok_files.v[i].name, err);
    if (rc) {
        pile__prep_files_free(&want);
        return rc;
    }
    int same = want.n == st->tok_files.n;
    for (size_t i = 0; i < want.n && same; i++)
        same = !strcmp(want.v[i].name, st->tok_files.v[i].name) && want.v[i].size == st->tok_files.v[i].size &&
               want.v[i].xxh3 == st->tok_files.v[i].xxh3;
    *changed = !same;
    pile__prep_files_free(&st->tok_files);
    st->tok_files = want;
    st->tok_spec = ts->spec;
    return 0;
}

int pile__prep_output_tokenizer_write(const prep_state *st, const prep_tok_source *ts, pile_err *err)
{
    if (!ts->n) return 0;
    const char *out = st->opts->output_dir;
    pile_buf dir = {0}, p = {0};
    int rc = pile_fs_join(&dir, out, TOK_DIR) ? pile_err_set(err, PILE_ENOMEM, "out of memory") : 0;
    if (!rc) rc = pile_fs_mkdirs(dir.data, err);
    for (size_t i = 0; i < ts->n && !rc; i++) {
        if (pile_fs_join(&p, dir.data, ts->name[i])) rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
        else if (!same_content(p.data, &ts->data[i]))
            rc = pile_fs_write_atomic(p.data, ts->data[i].data ? ts->data[i].data : "", ts->data[i].len, err);
    }
    /* read back: the copy must be the tokenizer that made the shards, whose
     * bytes ts holds (see pile_prep_run) */
    for (size_t i = 0; i < ts->n && !rc; i++) {
        if (pile_fs_join(&p, dir.data, ts->name[i])) rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
        else if (!same_content(p.data, &ts->data[i]))
            rc = pile_err_set(err, PILE_ECORRUPT, "the tokenizer copied to '%s' reads back with other bytes", p.data);
    }
    pile_buf_free(&dir);
    pile_buf_free(&p);
    return rc;
}

/* ---------------------------------------------------- the kept files' check */

int pile__prep_check_shards(const prep_state *st, size_t **bad, size_t *nbad, uint64_t *bytes, pile_err *err)
{
    *bad = NULL;
    *nbad = 0;
    const char *out = st->opts->output_dir;
    size_t *list = malloc((st->n_shards ? st->n_shards : 1) * sizeof *list);
    if (!list) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    pile_buf p = {0};
    for (size_t i = 0; i < st->n_shards; i++) {
        const prep_shard_rec *r = &st->shards[i];
        if (pile_fs_join(&p, out, r->file)) {
            free(list);
            pile_buf_free(&p);
            return pile_err_set(err, PILE_ENOMEM, "out of memory");
        }
        pile_shard *s = NULL;
        pile_err why;
        pile_err_clear(&why);
        int rc = pile_shard_open(&s, p.data, &why);
        if (!rc) {
            *bytes += pile_shard_get_info(s)->file_size;
            rc = pile_shard_verify(s, &why);
        }
        if (!rc) {
            const pile_shard_info *in = pile_shard_get_info(s);
            if (in->data_checksum != r->checksum || in->file_size != r->size || in->row_count != r->rows ||
                in->doc_count != r->docs || in->token_count != r->tokens || in->split != r->split ||
                memcmp(in->tokenizer_fp, st->tok_fp, PILE_SHARD_FP_BYTES))
                rc = pile_err_set(&why, PILE_ECORRUPT, "'%s' is a whole shard, but not the one the manifest records "
                                  "(data checksum %016" PRIx64 ", recorded %016" PRIx64 ")",
                                  p.data, in->data_checksum, r->checksum);
        }
        pile_shard_close(s);
        if (rc) {
            list[(*nbad)++] = i;
            pile__prep_log(st->opts, "warning: kept shard '%s' is damaged or missing: %s; writing it again", r->file,
                           why.msg);
        }
    }
    pile_buf_free(&p);
    *bad = list;
    return 0;
}

int pile__prep_check_megatron(const prep_state *st, unsigned *bad_splits, uint64_t *bytes, pile_err *err)
{
    *bad_splits = 0;
    pile_buf p = {0};
    for (size_t i = 0; i < st->mega_files.n; i++) {
        const prep_file *f = &st->mega_files.v[i];
        int tmp;
        pile_split sp = PILE_SPLIT_TRAIN;
        megatron_name(f->name, &tmp, &sp);
        if (pile_fs_join(&p, st->opts->output_dir, f->name)) {
            pile_buf_free(&p);
            return pile_err_set(err, PILE_ENOMEM, "out of memory");
        }
        uint64_t h = 0, size = 0;
        pile_err why;
        pile_err_clear(&why);
        int rc = pile__prep_file_xxh3(p.data, &h, &size, &why);
        *bytes += size;
        if (!rc && (h != f->xxh3 || size != f->size))
            rc = pile_err_set(&why, PILE_ECORRUPT, "%" PRIu64 " bytes with checksum %016" PRIx64 ", recorded %" PRIu64
                              " bytes with %016" PRIx64, size, h, f->size, f->xxh3);
        if (rc) {
            *bad_splits |= 1u << sp;
            pile__prep_log(st->opts, "warning: kept Megatron file '%s' is damaged or missing (%s); writing it again",
                           f->name, why.msg);
        }
    }
    pile_buf_free(&p);
    return 0;
}
