/* Megatron-LM / GPT-NeoX "MMIDIDX" export: documents are rebuilt from the
 * shards' rows (shards/FORMAT.md, "Documents across rows"), each row checked
 * against its checksum (version 2) as it is read, and streamed into
 * <prefix>.bin; only the per-sequence lengths (4 bytes each) stay in memory
 * until <prefix>.idx is written. Both appear atomically (tmp, fsync, rename). */
#include "pile_shards.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pile_buf.h"
#include "pile_fs.h"

#define MEGATRON_DTYPE_INT32 4
#define MEGATRON_DTYPE_UINT16 8
#define OUT_BUF_BYTES (1u << 20)

/* A buffered output file under its temporary name. */
typedef struct outfile {
    pile_buf tmp_path;
    pile_buf path;
    int fd;
    unsigned char *buf;
    size_t len;
} outfile;

static int out_open(outfile *o, const char *prefix, const char *ext, pile_err *err)
{
    memset(o, 0, sizeof *o);
    o->fd = -1;
    if (pile_buf_printf(&o->path, "%s%s", prefix, ext) || pile_buf_printf(&o->tmp_path, "%s%s.tmp", prefix, ext) ||
        !(o->buf = malloc(OUT_BUF_BYTES)))
        return pile_err_set(err, PILE_ENOMEM, "out of memory");
    o->fd = open(o->tmp_path.data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (o->fd < 0) return pile_err_sys(err, PILE_EIO, errno, "cannot create '%s'", o->tmp_path.data);
    return 0;
}

static int out_flush(outfile *o, pile_err *err)
{
    const unsigned char *p = o->buf;
    size_t left = o->len;
    while (left) {
        ssize_t w = write(o->fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            return pile_err_sys(err, PILE_EIO, errno, "cannot write '%s'", o->tmp_path.data);
        }
        p += w;
        left -= (size_t)w;
    }
    o->len = 0;
    return 0;
}

static int out_put(outfile *o, const void *data, size_t n, pile_err *err)
{
    const unsigned char *p = data;
    while (n) {
        if (o->len == OUT_BUF_BYTES) PILE_FORWARD_IF_ERR(out_flush(o, err));
        size_t k = OUT_BUF_BYTES - o->len;
        if (k > n) k = n;
        memcpy(o->buf + o->len, p, k);
        o->len += k;
        p += k;
        n -= k;
    }
    return 0;
}

/* Flushes, fsyncs and closes; the rename comes later, once both files are whole. */
static int out_seal(outfile *o, pile_err *err)
{
    PILE_FORWARD_IF_ERR(out_flush(o, err));
    if (fsync(o->fd) != 0) return pile_err_sys(err, PILE_EIO, errno, "cannot fsync '%s'", o->tmp_path.data);
    int fd = o->fd;
    o->fd = -1;
    if (close(fd) != 0) return pile_err_sys(err, PILE_EIO, errno, "cannot close '%s'", o->tmp_path.data);
    return 0;
}

static void out_discard(outfile *o, int unlink_tmp)
{
    if (o->fd >= 0) close(o->fd);
    if (unlink_tmp && o->tmp_path.data) unlink(o->tmp_path.data);
    free(o->buf);
    pile_buf_free(&o->path);
    pile_buf_free(&o->tmp_path);
}

/* The sequences found so far: their lengths, and the one being built. */
typedef struct export_state {
    uint32_t *lens;
    size_t nseq, cap;
    uint64_t cur;     /* tokens of the open sequence */
    int open;         /* a sequence is open */
    const char *shard;
    uint64_t row;
} export_state;

static int seq_close(export_state *st, pile_err *err)
{
    if (!st->open) return 0;
    st->open = 0;
    if (st->cur > INT32_MAX)
        return pile_err_set(err, PILE_ELIMIT, "cannot export '%s': a document ending in row %" PRIu64 " has %" PRIu64
                            " tokens, more than Megatron's int32 lengths hold", st->shard, st->row, st->cur);
    if (st->nseq == st->cap) {
        size_t n = st->cap ? st->cap * 2 : 4096;
        uint32_t *p = realloc(st->lens, n * sizeof *p);
        if (!p) return pile_err_set(err, PILE_ENOMEM, "out of memory");
        st->lens = p;
        st->cap = n;
    }
    st->lens[st->nseq++] = (uint32_t)st->cur;
    st->cur = 0;
    return 0;
}

/* Appends row tokens [from, to) to the .bin in the output dtype. */
static int put_tokens(outfile *bin, const pile_shard *s, const export_state *st, uint32_t from, uint32_t to,
                      pile_err *err)
{
    const pile_shard_info *in = pile_shard_get_info(s);
    const unsigned char *row = pile_shard_row_data(s, st->row);
    for (uint32_t k = from; k < to; k++) {
        uint32_t v = in->token_bytes == 2 ? ((const uint16_t *)(const void *)row)[k]
                                          : ((const uint32_t *)(const void *)row)[k];
        if (v >= in->vocab_size)
            return pile_err_set(err, PILE_ECORRUPT, "cannot export '%s': row %" PRIu64 " position %" PRIu32
                                " holds id %" PRIu32 " >= vocab_size %" PRIu32 " (run pile-dump --verify)", st->shard,
                                st->row, k, v, in->vocab_size);
    }
    return out_put(bin, row + (size_t)from * in->token_bytes, (size_t)(to - from) * in->token_bytes, err);
}

static int export_shard(const pile_shard *s, outfile *bin, export_state *st, pile_err *err)
{
    const pile_shard_info *in = pile_shard_get_info(s);
    for (uint64_t r = 0; r < in->row_count; r++) {
        st->row = r;
        pile_err row_err;
        if (pile_shard_check_row(s, r, &row_err) < 0)
            return pile_err_set(err, PILE_ECORRUPT, "cannot export %s", row_err.msg);
        uint32_t len = pile_shard_row_length(s, r);
        const pile_shard_doc *docs;
        uint32_t nd = pile_shard_row_docs(s, r, &docs);
        uint32_t pos = 0;
        for (uint32_t d = 0; d <= nd; d++) {
            uint32_t end = d < nd ? docs[d].offset : len;
            if (end > len) end = len;
            if (end > pos) {
                /* tokens before the first start continue the open sequence (or open an orphan one) */
                PILE_FORWARD_IF_ERR(put_tokens(bin, s, st, pos, end, err));
                st->open = 1;
                st->cur += end - pos;
                pos = end;
            }
            if (d < nd) {
                PILE_FORWARD_IF_ERR(seq_close(st, err));
                st->open = 1;
            }
        }
        /* a best-fit segment never crosses its row */
        if (in->pack == PILE_PACK_BEST_FIT) PILE_FORWARD_IF_ERR(seq_close(st, err));
    }
    return 0;
}

static int write_index(outfile *idx, const export_state *st, uint8_t dtype, uint32_t itemsize, pile_err *err)
{
    static const unsigned char magic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', 0, 0};
    uint64_t version = 1, nseq = st->nseq, ndoc_idx = st->nseq + 1;
    PILE_FORWARD_IF_ERR(out_put(idx, magic, sizeof magic, err));
    PILE_FORWARD_IF_ERR(out_put(idx, &version, 8, err));
    PILE_FORWARD_IF_ERR(out_put(idx, &dtype, 1, err));
    PILE_FORWARD_IF_ERR(out_put(idx, &nseq, 8, err));
    PILE_FORWARD_IF_ERR(out_put(idx, &ndoc_idx, 8, err));
    for (size_t i = 0; i < st->nseq; i++) {
        int32_t v = (int32_t)st->lens[i];
        PILE_FORWARD_IF_ERR(out_put(idx, &v, 4, err));
    }
    int64_t ptr = 0;
    for (size_t i = 0; i < st->nseq; i++) {
        PILE_FORWARD_IF_ERR(out_put(idx, &ptr, 8, err));
        ptr += (int64_t)st->lens[i] * itemsize;
    }
    for (uint64_t i = 0; i <= st->nseq; i++) {
        int64_t v = (int64_t)i;
        PILE_FORWARD_IF_ERR(out_put(idx, &v, 8, err));
    }
    return 0;
}

int pile_megatron_export(const char *const *shard_paths, size_t n, const char *prefix, pile_err *err)
{
    if (n == 0) return pile_err_set(err, PILE_EINVAL, "cannot export to '%s': no shards given", prefix);
    export_state st = {0};
    outfile bin, idx;
    int bin_open = 0, idx_open = 0;
    pile_shard_info first;
    memset(&first, 0, sizeof first);
    const char *first_path = shard_paths[0];
    int rc = 0;

    for (size_t i = 0; i < n && !rc; i++) {
        pile_shard *s;
        rc = pile_shard_open(&s, shard_paths[i], err);
        if (rc) break;
        const pile_shard_info *in = pile_shard_get_info(s);
        if (i == 0) {
            first = *in;
            if (in->token_bytes == 4 && in->vocab_size > (uint32_t)INT32_MAX + 1u)
                rc = pile_err_set(err, PILE_ELIMIT, "cannot export '%s': vocab_size %" PRIu32 " does not fit Megatron's"
                                  " int32 tokens", shard_paths[i], in->vocab_size);
            if (!rc) {
                rc = out_open(&bin, prefix, ".bin", err);
                bin_open = 1; /* out_open leaves bin safe to discard even when it fails */
            }
        } else if (memcmp(in->tokenizer_fp, first.tokenizer_fp, PILE_SHARD_FP_BYTES) != 0 ||
                   in->vocab_size != first.vocab_size || in->token_bytes != first.token_bytes) {
            rc = pile_err_set(err, PILE_EMISMATCH, "cannot export '%s' with '%s': they were made with different"
                              " tokenizers", shard_paths[i], first_path);
        }
        st.shard = shard_paths[i];
        if (!rc) rc = export_shard(s, &bin, &st, err);
        pile_shard_close(s);
    }
    if (!rc) rc = seq_close(&st, err);
    if (!rc) rc = out_seal(&bin, err);
    if (!rc) {
        rc = out_open(&idx, prefix, ".idx", err);
        idx_open = 1;
    }
    if (!rc)
        rc = write_index(&idx, &st, first.token_bytes == 2 ? MEGATRON_DTYPE_UINT16 : MEGATRON_DTYPE_INT32,
                         first.token_bytes, err);
    if (!rc) rc = out_seal(&idx, err);
    if (!rc && rename(bin.tmp_path.data, bin.path.data) != 0)
        rc = pile_err_sys(err, PILE_EIO, errno, "cannot rename '%s' to '%s'", bin.tmp_path.data, bin.path.data);
    if (!rc && rename(idx.tmp_path.data, idx.path.data) != 0)
        rc = pile_err_sys(err, PILE_EIO, errno, "cannot rename '%s' to '%s'", idx.tmp_path.data, idx.path.data);
    if (!rc) rc = pile_fs_fsync_dir(bin.path.data, err);
    if (bin_open) out_discard(&bin, rc != 0);
    if (idx_open) out_discard(&idx, rc != 0);
    free(st.lens);
    return rc;
}
