/* Test helper: packs real corpus documents (the first lines of
 * corpus/sample.jsonl, byte tokenizer) into a small shard folder, exports it
 * to Megatron files, and writes what the tests should find (expected.json),
 * computed from the documents themselves rather than read back from shards.
 *
 *   shards_fixture OUT_DIR      exit 0, or 77 when the corpus is absent
 *
 * OUT_DIR gets train-00000.shard and train-00001.shard (concat; a document
 * continues from the first into the second), val-00000.shard (best-fit),
 * manifest.json (pile-prep's layout: the shards, their counts and checksums,
 * "complete": true), megatron-train.{bin,idx}, megatron-val.{bin,idx},
 * expected.json. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pile_buf.h"
#include "pile_fs.h"
#include "pile_json.h" /* the JSON-lines parser and string escaper */
#include "pile_lines.h"
#include "pile_shards.h"
#include "pile_tokenizer.h"

#define MAX_LENGTH 128
#define TRAIN_DOCS 40
#define VAL_DOCS 16
#define DOC_BYTES_MAX 1500
#define MAX_NAMES 32

typedef struct doc {
    uint32_t *ids;
    uint32_t n;
    int subset; /* index into names */
    char *head; /* first bytes of the text, up to its first newline */
} doc;

typedef struct row {
    uint32_t ids[MAX_LENGTH];
    uint32_t len;
    uint32_t offsets[MAX_LENGTH];
    int subsets[MAX_LENGTH];
    uint16_t flags[MAX_LENGTH];
    uint32_t ndocs;
    int lead;
} row;

static char *names[MAX_NAMES];
static int nnames;

static int die(const char *what, const pile_err *err)
{
    fprintf(stderr, "shards_fixture: %s: %s\n", what, err ? err->msg : "");
    return 1;
}

static int name_id(const char *s, size_t n)
{
    for (int i = 0; i < nnames; i++)
        if (strlen(names[i]) == n && memcmp(names[i], s, n) == 0) return i;
    if (nnames == MAX_NAMES) return 0;
    names[nnames] = strndup(s, n);
    return nnames++;
}

static int write_rows(const char *path, const row *rows, size_t from, size_t to, pile_shard_params *p,
                      pile_shard_info *info, pile_err *err)
{
    pile_shard_writer *w;
    PILE_FORWARD_IF_ERR(pile_shard_writer_open(&w, path, p, err));
    int rc = 0;
    for (size_t r = from; r < to && !rc; r++) {
        pile_shard_doc docs[MAX_LENGTH];
        uint16_t lead = 0;
        for (uint32_t d = 0; d < rows[r].ndocs && !rc; d++) {
            docs[d].offset = rows[r].offsets[d];
            docs[d].flags = rows[r].flags[d];
            const char *nm = names[rows[r].subsets[d]];
            rc = pile_shard_writer_subset(w, nm, strlen(nm), &docs[d].subset, err);
        }
        const char *ln = names[rows[r].lead];
        if (!rc) rc = pile_shard_writer_subset(w, ln, strlen(ln), &lead, err);
        if (!rc) rc = pile_shard_writer_add_row(w, rows[r].ids, rows[r].len, docs, rows[r].ndocs, lead, err);
    }
    if (!rc) rc = pile_shard_writer_finish(w, info, err);
    pile_shard_writer_close(w);
    return rc;
}

/* The manifest entry pile-prep writes for a finished shard. */
static void manifest_shard(pile_buf *m, const char *file, const char *split, const pile_shard_info *in, int last)
{
    pile_buf_printf(m,
                    "    {\"file\": \"%s\", \"split\": \"%s\", \"rows\": %" PRIu64 ", \"documents\": %" PRIu64
                    ", \"tokens\": %" PRIu64 ", \"bytes\": %" PRIu64 ", \"data_xxh3\": \"%016" PRIx64 "\"}%s\n",
                    file, split, in->row_count, in->doc_count, in->token_count, in->file_size, in->data_checksum,
                    last ? "" : ",");
}

static void json_ids(pile_buf *j, const uint32_t *ids, uint32_t n)
{
    pile_buf_append_str(j, "[");
    for (uint32_t i = 0; i < n; i++) pile_buf_printf(j, "%s%" PRIu32, i ? "," : "", ids[i]);
    pile_buf_append_str(j, "]");
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: shards_fixture OUT_DIR\n");
        return 2;
    }
    const char *out = argv[1];
    const char *shared = getenv("PILE_SHARED");
    pile_buf path = {0};
    pile_buf_printf(&path, "%s/corpus/sample.jsonl", shared && *shared ? shared : "../shared");
    pile_err err = {0};
    pile_lines *lines;
    if (pile_lines_open(&lines, path.data, NULL, &err)) {
        /* freed before returning: a leak report under ASan would turn the skip into a failure */
        pile_buf_free(&path);
        printf("1..0 # SKIP no corpus (set PILE_SHARED): %s\n", err.msg);
        return 77;
    }
    pile_tokenizer *tok;
    if (pile_tokenizer_open(&tok, "bytes", &err)) return die("byte tokenizer", &err);
    pile_encoder *enc = pile_encoder_create(tok);
    pile_jsonl_parser *parser = pile_jsonl_parser_create();
    if (!enc || !parser) return die("out of memory", NULL);
    uint32_t eot = pile_tokenizer_eot_id(tok);

    /* Documents: real text, cut at a UTF-8 boundary to keep the fixture small. */
    doc docs[TRAIN_DOCS + VAL_DOCS];
    int ndocs = 0;
    pile_line line;
    while (ndocs < TRAIN_DOCS + VAL_DOCS) {
        int rc = pile_lines_next(lines, &line, &err);
        if (rc < 0) return die("reading corpus", &err);
        if (rc == 0) break;
        if (line.status != PILE_LINE_COMPLETE) continue;
        pile_jsonl_doc jd;
        if (pile_jsonl_parse(parser, line.data, line.len, &jd, NULL, 0) != PILE_SKIP_NONE || !jd.subset) continue;
        size_t n = jd.text_len;
        if (n > DOC_BYTES_MAX) {
            n = DOC_BYTES_MAX;
            while (n > 0 && ((unsigned char)jd.text[n] & 0xC0) == 0x80) n--;
        }
        if (n == 0) continue;
        pile_ids ids = {0};
        if (pile_encoder_encode(enc, jd.text, n, &ids, &err)) return die("encoding", &err);
        pile_ids_push(&ids, eot);
        doc *d = &docs[ndocs++];
        d->ids = ids.data;
        d->n = (uint32_t)ids.len;
        d->subset = name_id(jd.subset, jd.subset_len);
        size_t h = 0;
        while (h < n && h < 40 && jd.text[h] != '\n' && (unsigned char)jd.text[h] >= 0x20 &&
               (unsigned char)jd.text[h] < 0x7f)
            h++;
        d->head = strndup(jd.text, h);
    }
    pile_lines_close(lines);
    if (ndocs < TRAIN_DOCS + VAL_DOCS) return die("the corpus sample has too few documents", NULL);

    /* Concat packing of the train documents. */
    size_t cap = 4096, nrows = 0;
    row *rows = calloc(cap, sizeof *rows);
    row *r = NULL;
    int cur_subset = 0;
    for (int i = 0; i < TRAIN_DOCS; i++) {
        for (uint32_t t = 0; t < docs[i].n; t++) {
            if (!r || r->len == MAX_LENGTH) {
                if (nrows == cap) return die("too many rows", NULL);
                r = &rows[nrows++];
                r->lead = t == 0 ? docs[i].subset : cur_subset;
            }
            if (t == 0) {
                r->offsets[r->ndocs] = r->len;
                r->subsets[r->ndocs] = docs[i].subset;
                r->ndocs++;
                cur_subset = docs[i].subset;
            }
            r->ids[r->len++] = docs[i].ids[t];
        }
    }
    /* Cut the train split into two shards where a document crosses the cut. */
    size_t cut = nrows / 2;
    while (cut < nrows && rows[cut].ndocs && rows[cut].offsets[0] == 0) cut++;
    if (cut == nrows) return die("no row continues a document", NULL);

    /* Best-fit packing of the val documents: segments of at most MAX_LENGTH,
     * longest first, each into the first bin with room. */
    typedef struct seg { int d; uint32_t from, n; uint16_t flags; } seg;
    seg segs[4096];
    size_t nsegs = 0;
    for (int i = TRAIN_DOCS; i < TRAIN_DOCS + VAL_DOCS; i++)
        for (uint32_t from = 0; from < docs[i].n; from += MAX_LENGTH) {
            uint32_t n = docs[i].n - from < MAX_LENGTH ? docs[i].n - from : MAX_LENGTH;
            segs[nsegs++] = (seg){i, from, n, (uint16_t)(from ? PILE_DOC_CONTINUED : 0)};
        }
    for (size_t i = 1; i < nsegs; i++)
        for (size_t k = i; k > 0 && segs[k].n > segs[k - 1].n; k--) {
            seg t = segs[k];
            segs[k] = segs[k - 1];
            segs[k - 1] = t;
        }
    size_t val_first = nrows;
    for (size_t i = 0; i < nsegs; i++) {
        row *b = NULL;
        for (size_t k = val_first; k < nrows && !b; k++)
            if (rows[k].len + segs[i].n <= MAX_LENGTH) b = &rows[k];
        if (!b) {
            b = &rows[nrows++];
            b->lead = docs[segs[i].d].subset;
        }
        b->offsets[b->ndocs] = b->len;
        b->subsets[b->ndocs] = docs[segs[i].d].subset;
        b->flags[b->ndocs] = segs[i].flags;
        b->ndocs++;
        memcpy(b->ids + b->len, docs[segs[i].d].ids + segs[i].from, segs[i].n * sizeof(uint32_t));
        b->len += segs[i].n;
    }

    pile_shard_params p = {0};
    p.max_length = MAX_LENGTH;
    p.vocab_size = pile_tokenizer_vocab_size(tok);
    p.eot_id = eot;
    p.pad_id = eot;
    p.pack = PILE_PACK_CONCAT;
    p.split = PILE_SPLIT_TRAIN;
    pile_tokenizer_fingerprint(tok, p.tokenizer_fp);
    if (pile_fs_mkdirs(out, &err)) return die("output folder", &err);
    pile_buf t0 = {0}, t1 = {0}, v0 = {0}, pre = {0};
    pile_buf_printf(&t0, "%s/train-00000.shard", out);
    pile_buf_printf(&t1, "%s/train-00001.shard", out);
    pile_buf_printf(&v0, "%s/val-00000.shard", out);
    pile_shard_info info[3];
    if (write_rows(t0.data, rows, 0, cut, &p, &info[0], &err) ||
        write_rows(t1.data, rows, cut, val_first, &p, &info[1], &err))
        return die("writing train shards", &err);
    p.pack = PILE_PACK_BEST_FIT;
    p.split = PILE_SPLIT_VAL;
    if (write_rows(v0.data, rows, val_first, nrows, &p, &info[2], &err)) return die("writing val shard", &err);

    const char *train[2] = {t0.data, t1.data};
    const char *val[1] = {v0.data};
    pile_buf_printf(&pre, "%s/megatron-train", out);
    if (pile_megatron_export(train, 2, pre.data, &err)) return die("exporting train", &err);
    pre.len = 0;
    pile_buf_printf(&pre, "%s/megatron-val", out);
    if (pile_megatron_export(val, 1, pre.data, &err)) return die("exporting val", &err);

    /* What the tests should find, from the documents. */
    pile_buf j = {0};
    uint64_t tr_tokens = 0, va_tokens = 0;
    uint64_t sub_docs[MAX_NAMES] = {0}, sub_tokens[MAX_NAMES] = {0};
    for (int i = 0; i < ndocs; i++) {
        *(i < TRAIN_DOCS ? &tr_tokens : &va_tokens) += docs[i].n;
        sub_docs[docs[i].subset]++;
        sub_tokens[docs[i].subset] += docs[i].n;
    }
    uint64_t tr_rows = val_first, va_rows = nrows - val_first;
    pile_buf_printf(&j, "{\"max_length\": %d, \"cut_row\": %zu, \"row0_head\": ", MAX_LENGTH, cut);
    pile_json_write_string(&j, docs[0].head, strlen(docs[0].head));
    pile_buf_printf(&j, ",\n \"splits\": {\"train\": {\"rows\": %" PRIu64 ", \"tokens\": %" PRIu64
                    ", \"documents\": %d, \"padding_tokens\": %" PRIu64 "},\n"
                    "  \"val\": {\"rows\": %" PRIu64 ", \"tokens\": %" PRIu64 ", \"documents\": %d, \"segments\": %zu,"
                    " \"padding_tokens\": %" PRIu64 "}},\n",
                    tr_rows, tr_tokens, TRAIN_DOCS, tr_rows * MAX_LENGTH - tr_tokens, va_rows, va_tokens, VAL_DOCS,
                    nsegs, va_rows * MAX_LENGTH - va_tokens);
    pile_buf_printf(&j, " \"totals\": {\"rows\": %" PRIu64 ", \"tokens\": %" PRIu64 ", \"documents\": %d,"
                    " \"padding_tokens\": %" PRIu64 "},\n \"subsets\": {",
                    (uint64_t)nrows, tr_tokens + va_tokens, ndocs, nrows * (uint64_t)MAX_LENGTH - tr_tokens - va_tokens);
    for (int i = 0; i < nnames; i++) {
        pile_buf_append_str(&j, i ? ", " : "");
        pile_json_write_string(&j, names[i], strlen(names[i]));
        pile_buf_printf(&j, ": {\"documents\": %" PRIu64 ", \"tokens\": %" PRIu64 "}", sub_docs[i], sub_tokens[i]);
    }
    pile_buf_append_str(&j, "},\n \"megatron\": {\"megatron-train\": {\"dtype\": \"uint16\", \"sequences\": [");
    for (int i = 0; i < TRAIN_DOCS; i++) {
        pile_buf_append_str(&j, i ? ",\n" : "\n");
        json_ids(&j, docs[i].ids, docs[i].n);
    }
    /* best-fit: one sequence per segment, in row order */
    pile_buf_append_str(&j, "]},\n  \"megatron-val\": {\"dtype\": \"uint16\", \"sequences\": [");
    int first = 1;
    for (size_t k = val_first; k < nrows; k++)
        for (uint32_t d = 0; d < rows[k].ndocs; d++) {
            uint32_t end = d + 1 < rows[k].ndocs ? rows[k].offsets[d + 1] : rows[k].len;
            pile_buf_append_str(&j, first ? "\n" : ",\n");
            first = 0;
            json_ids(&j, rows[k].ids + rows[k].offsets[d], end - rows[k].offsets[d]);
        }
    pile_buf_append_str(&j, "]}}}\n");
    pile_buf jp = {0};
    pile_buf_printf(&jp, "%s/expected.json", out);
    if (pile_fs_write_atomic(jp.data, j.data, j.len, &err)) return die("expected.json", &err);
    jp.len = 0;
    pile_buf_printf(&jp, "%s/manifest.json", out);
    pile_buf man = {0};
    pile_buf_printf(&man, "{\n  \"format\": \"pile-prep manifest\",\n  \"version\": 1,\n  \"tool\": \"shards_fixture\",\n"
                          "  \"complete\": true,\n  \"options\": {\"tokenizer\": \"bytes\"},\n  \"shards\": [\n");
    manifest_shard(&man, "train-00000.shard", "train", &info[0], 0);
    manifest_shard(&man, "train-00001.shard", "train", &info[1], 0);
    manifest_shard(&man, "val-00000.shard", "val", &info[2], 1);
    pile_buf_printf(&man, "  ]\n}\n");
    if (man.failed || pile_fs_write_atomic(jp.data, man.data, man.len, &err)) return die("manifest.json", &err);
    pile_buf_free(&man);

    for (int i = 0; i < ndocs; i++) {
        free(docs[i].ids);
        free(docs[i].head);
    }
    for (int i = 0; i < nnames; i++) free(names[i]);
    free(rows);
    pile_buf_free(&j);
    pile_buf_free(&jp);
    pile_buf_free(&path);
    pile_buf_free(&t0);
    pile_buf_free(&t1);
    pile_buf_free(&v0);
    pile_buf_free(&pre);
    pile_jsonl_parser_free(parser);
    pile_encoder_free(enc);
    pile_tokenizer_close(tok);
    return 0;
}
