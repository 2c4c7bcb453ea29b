/* The packer: turns the ordered stream of documents (tokens + end-of-text)
 * into rows and shards, concat or best-fit, and records after each finished
 * shard where the next one starts, so that a killed run can be resumed to
 * exactly the same bytes. It runs in one thread and sees documents strictly
 * in input order, which is what makes the output independent of threads.
 * It decides places from token counts only: each row's place in the shard
 * writer's ring is reserved here, and the copies of the ids into it (and,
 * for best-fit, into the window) are handed to a sink (prep_sink), which
 * pile-prep's pipeline gives to its workers. Nothing here touches an id. */
#include "prep_internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "pile_fs.h"
#include "pile_progress.h"

/* ------------------------------------------------------------ best-fit */

/* The segment tree counts open bins by remaining room: leaf c holds how many
 * bins have exactly c tokens of room, inner nodes hold sums, so "the least
 * room >= len" is one descent. Bins with the same room form a LIFO list. */
struct prep_bfd {
    uint32_t cap;
    size_t size;     /* leaves: a power of two > cap */
    uint32_t *tree;  /* 2 * size */
    uint32_t *head;  /* cap + 1: bin id + 1 of the list of bins with that room, 0 = none */
    uint32_t *next;  /* per bin: the next bin id + 1 in its list */
    uint32_t *count; /* cap + 2: counting-sort buckets */
    size_t bins_cap;
};

prep_bfd *pile__prep_bfd_create(uint32_t cap)
{
    prep_bfd *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->cap = cap;
    b->size = 1;
    while (b->size <= cap) b->size *= 2;
    b->tree = calloc(2 * b->size, sizeof *b->tree);
    b->head = calloc((size_t)cap + 1, sizeof *b->head);
    b->count = calloc((size_t)cap + 2, sizeof *b->count);
    if (!b->tree || !b->head || !b->count) {
        pile__prep_bfd_free(b);
        return NULL;
    }
    return b;
}

void pile__prep_bfd_free(prep_bfd *b)
{
    if (!b) return;
    free(b->tree);
    free(b->head);
    free(b->next);
    free(b->count);
    free(b);
}

static void seg_add(prep_bfd *b, uint32_t c, int d)
{
    for (size_t i = b->size + c; i >= 1; i /= 2) b->tree[i] += (uint32_t)d;
}

/* Leftmost leaf >= lo with a nonzero count under node (covering [nlo, nhi]), or -1. */
static long seg_first(const prep_bfd *b, size_t node, size_t nlo, size_t nhi, size_t lo)
{
    if (nhi < lo || b->tree[node] == 0) return -1;
    if (nlo == nhi) return (long)nlo;
    size_t mid = nlo + (nhi - nlo) / 2;
    long r = seg_first(b, 2 * node, nlo, mid, lo);
    return r >= 0 ? r : seg_first(b, 2 * node + 1, mid + 1, nhi, lo);
}

long pile__prep_bfd_pack(prep_bfd *b, const uint32_t *len, size_t n, uint32_t *bin_of, size_t *order_out)
{
    /* Decreasing length, ties in input order: a stable counting sort. */
    size_t *order = order_out ? order_out : malloc((n ? n : 1) * sizeof *order);
    if (!order) return PILE_ENOMEM;
    memset(b->count, 0, ((size_t)b->cap + 2) * sizeof *b->count);
    for (size_t i = 0; i < n; i++) b->count[b->cap - len[i]]++;
    size_t acc = 0;
    for (size_t k = 0; k <= b->cap; k++) {
        size_t c = b->count[k];
        b->count[k] = (uint32_t)acc;
        acc += c;
    }
    for (size_t i = 0; i < n; i++) order[b->count[b->cap - len[i]]++] = i;

    memset(b->tree, 0, 2 * b->size * sizeof *b->tree);
    memset(b->head, 0, ((size_t)b->cap + 1) * sizeof *b->head);
    size_t nbins = 0;
    for (size_t k = 0; k < n; k++) {
        size_t i = order[k];
        uint32_t l = len[i], room;
        uint32_t bin;
        long c = l <= b->cap ? seg_first(b, 1, 0, b->size - 1, l) : -1;
        if (c < 0) {
            if (nbins == b->bins_cap) {
                size_t cap = b->bins_cap ? b->bins_cap * 2 : 1024;
                uint32_t *nx = realloc(b->next, cap * sizeof *nx);
                if (!nx) {
                    if (!order_out) free(order);
                    return PILE_ENOMEM;
                }
                b->next = nx;
                b->bins_cap = cap;
            }
            bin = (uint32_t)nbins++;
            room = b->cap - l;
        } else {
            bin = b->head[c] - 1;
            b->head[c] = b->next[bin];
            seg_add(b, (uint32_t)c, -1);
            room = (uint32_t)c - l;
        }
        bin_of[i] = bin;
        if (room > 0) {
            b->next[bin] = b->head[room];
            b->head[room] = bin + 1;
            seg_add(b, room, +1);
        }
    }
    if (!order_out) free(order);
    return (long)nbins;
}

/* --------------------------------------------------------------- packer */

typedef struct win_doc {
    uint64_t tok_off; /* into the window */
    uint32_t len;
    uint32_t gid;
} win_doc;

struct prep_packer {
    prep_state *st;
    uint32_t L;
    size_t width; /* bytes per id: the shards' width, as the workers narrowed them */
    prep_sink sink;
    double t_write; /* seconds in the shard writer (reserving and committing rows, finishing shards) */
    double io_cpu;  /* CPU seconds of the finished shards' writers' background threads */
    /* the open shard */
    pile_shard_writer *w;
    pile_split w_split;
    char w_name[64];
    uint64_t w_rows;
    uint32_t *sub_map; /* global subset id -> local id + 1 in the open shard */
    size_t sub_map_n;
    /* the names of the shard documents land in now (the open one, or the
     * next when none is open): global id -> that shard's sequence + 1 */
    uint64_t *named_in;
    size_t named_n;
    uint64_t shard_seq;
    uint32_t shard_names;
    uint32_t fallback_gid; /* UINT32_MAX until interned */
    /* the row being filled (concat): reserved at `slot` of the open shard */
    uint64_t slot;
    uint32_t row_len, ndocs, lead;
    uint32_t *doc_off, *doc_gid;
    uint16_t *doc_flags;
    pile_shard_doc *docs_scratch;
    /* the window being filled (best-fit): win_ids[wi], win_len ids of
     * `width` bytes; the other window's ids may still be on their way to the
     * rows (every copy is done before a window closes: sink.drain) */
    unsigned char *win_ids[2];
    size_t win_cap[2];
    int wi;
    uint64_t win_len;
    win_doc *win;
    size_t n_win, cap_win;
    prep_bfd *bfd;
    uint32_t *p_len, *p_bin, *p_doc, *p_start, *bin_head, *bin_tail, *p_next;
    size_t *p_order;
    size_t p_cap, bin_cap;
};

int pile__prep_packer_create(prep_packer **out, prep_state *st, pile_err *err)
{
    *out = NULL;
    prep_packer *pk = calloc(1, sizeof *pk);
    if (!pk) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    pk->st = st;
    pk->L = st->max_length;
    pk->width = pile_shard_token_bytes(st->vocab_size);
    pk->fallback_gid = UINT32_MAX;
    size_t L = pk->L;
    pk->doc_off = malloc(L * sizeof *pk->doc_off);
    pk->doc_gid = malloc(L * sizeof *pk->doc_gid);
    pk->doc_flags = malloc(L * sizeof *pk->doc_flags);
    pk->docs_scratch = malloc(L * sizeof *pk->docs_scratch);
    if (st->pack == PILE_PACK_BEST_FIT) {
        pk->bfd = pile__prep_bfd_create(pk->L);
        /* a window closes once it holds window_rows rows' worth: room for that and a row more, or
         * for 4M ids to begin with when that is more (rows of millions of ids), grown as needed */
        size_t cap = ((size_t)st->window_rows + 1) * L;
        if (cap > (size_t)1 << 22) cap = (size_t)1 << 22;
        for (int i = 0; i < 2; i++) {
            pk->win_ids[i] = malloc(cap * pk->width);
            pk->win_cap[i] = pk->win_ids[i] ? cap : 0;
        }
    }
    if (!pk->doc_off || !pk->doc_gid || !pk->doc_flags || !pk->docs_scratch ||
        (st->pack == PILE_PACK_BEST_FIT && (!pk->bfd || !pk->win_ids[0] || !pk->win_ids[1]))) {
        pile__prep_packer_free(pk);
        return pile_err_set(err, PILE_ENOMEM, "out of memory");
    }
    *out = pk;
    return 0;
}

void pile__prep_packer_free(prep_packer *pk)
{
    if (!pk) return;
    pile_shard_writer_close(pk->w);
    free(pk->sub_map);
    free(pk->named_in);
    free(pk->doc_off);
    free(pk->doc_gid);
    free(pk->doc_flags);
    free(pk->docs_scratch);
    free(pk->win_ids[0]);
    free(pk->win_ids[1]);
    free(pk->win);
    pile__prep_bfd_free(pk->bfd);
    free(pk->p_len);
    free(pk->p_bin);
    free(pk->p_doc);
    free(pk->p_start);
    free(pk->p_next);
    free(pk->p_order);
    free(pk->bin_head);
    free(pk->bin_tail);
    free(pk);
}

static int open_shard(prep_packer *pk, pile_split split, pile_err *err)
{
    prep_state *st = pk->st;
    snprintf(pk->w_name, sizeof pk->w_name, "%s-%05u.shard", pile_prep_split_name(split), st->next_shard[split]);
    pile_buf path = {0};
    if (pile_fs_join(&path, st->opts->output_dir, pk->w_name)) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    pile_shard_params prm;
    memset(&prm, 0, sizeof prm);
    prm.max_length = pk->L;
    prm.vocab_size = st->vocab_size;
    prm.eot_id = st->eot_id;
    prm.pad_id = st->eot_id;
    prm.pack = st->pack;
    prm.split = split;
    /* rows the workers have not filled yet: a chunk's worth per worker, about */
    prm.buffers = 2 + (uint32_t)(st->threads < 62 ? st->threads : 62);
    memcpy(prm.tokenizer_fp, st->tok_fp,
           PILE_SHARD_FP_BYTES < PILE_TOKENIZER_FP_BYTES ? PILE_SHARD_FP_BYTES : PILE_TOKENIZER_FP_BYTES);
    int rc = pile_shard_writer_open(&pk->w, path.data, &prm, err);
    pile_buf_free(&path);
    if (rc) return rc;
    pk->w_split = split;
    pk->w_rows = 0;
    if (pk->sub_map) memset(pk->sub_map, 0, pk->sub_map_n * sizeof *pk->sub_map);
    return 0;
}

/* Grows an array indexed by global subset id (*n entries of elem bytes) to
 * hold gid and every name known, at least doubling (names come one at a
 * time), the new entries zero. 0 or PILE_ENOMEM. */
static int by_subset(const prep_packer *pk, void **arr, size_t *n, uint32_t gid, size_t elem)
{
    size_t want = pk->st->stats.subsets.n > (size_t)gid + 1 ? pk->st->stats.subsets.n : (size_t)gid + 1;
    if (want < 2 * *n) want = 2 * *n;
    unsigned char *m = realloc(*arr, want * elem);
    if (!m) return PILE_ENOMEM;
    memset(m + *n * elem, 0, (want - *n) * elem);
    *arr = m;
    *n = want;
    return 0;
}

/* Registers gid with the shard documents land in now; 1 if it was new there. */
static int name_shard(prep_packer *pk, uint32_t gid, pile_err *err)
{
    if (gid >= pk->named_n && by_subset(pk, (void **)&pk->named_in, &pk->named_n, gid, sizeof *pk->named_in))
        return pile_err_set(err, PILE_ENOMEM, "out of memory");
    if (pk->named_in[gid] == pk->shard_seq + 1) return 0;
    pk->named_in[gid] = pk->shard_seq + 1;
    pk->shard_names++;
    return 1;
}

static int is_named(const prep_packer *pk, uint32_t gid)
{
    return gid < pk->named_n && pk->named_in[gid] == pk->shard_seq + 1;
}

/* Documents from here on land in a new shard; `cont` (UINT32_MAX: none) is
 * the subset of a document that continues into it. */
static int next_shard_names(prep_packer *pk, uint32_t cont, pile_err *err)
{
    pk->shard_seq++;
    pk->shard_names = 0;
    return cont == UINT32_MAX ? 0 : name_shard(pk, cont, err) < 0 ? PILE_ENOMEM : 0;
}

double pile__prep_packer_write_s(const prep_packer *pk)
{
    return pk->t_write;
}

double pile__prep_packer_io_cpu(const prep_packer *pk)
{
    return pk->io_cpu;
}

int pile__prep_packer_subset(prep_packer *pk, uint32_t gid, int fallback, uint32_t *out, int *over, pile_err *err)
{
    *out = gid;
    *over = 0;
    if (!fallback && is_named(pk, gid)) return 0;
    if (pk->fallback_gid == UINT32_MAX &&
        pile__prep_names_intern(&pk->st->stats.subsets, PREP_FALLBACK_SUBSET, strlen(PREP_FALLBACK_SUBSET),
                                &pk->fallback_gid))
        return pile_err_set(err, PILE_ENOMEM, "out of memory");
    /* a shard holds 65,536 names; the last place is kept for the fallback */
    uint32_t room = is_named(pk, pk->fallback_gid) ? 65536u : 65535u;
    if (fallback || (gid != pk->fallback_gid && pk->shard_names >= room)) {
        *out = pk->fallback_gid;
        *over = 1;
    }
    return name_shard(pk, *out, err) < 0 ? PILE_ENOMEM : 0;
}

static int local_subset(prep_packer *pk, uint32_t gid, uint16_t *out, pile_err *err)
{
    if (gid >= pk->sub_map_n && by_subset(pk, (void **)&pk->sub_map, &pk->sub_map_n, gid, sizeof *pk->sub_map))
        return pile_err_set(err, PILE_ENOMEM, "out of memory");
    if (!pk->sub_map[gid]) {
        uint16_t id;
        const prep_names *t = &pk->st->stats.subsets;
        PILE_FORWARD_IF_ERR(pile_shard_writer_subset(pk->w, t->names[gid], t->lens[gid], &id, err));
        pk->sub_map[gid] = (uint32_t)id + 1;
    }
    *out = (uint16_t)(pk->sub_map[gid] - 1);
    return 0;
}

void pile__prep_packer_set_sink(prep_packer *pk, const prep_sink *sink)
{
    pk->sink = *sink;
}

/* The place of the next row in the open shard (opened first if none is),
 * in *slot. When the writer's ring is full of rows not filled yet, the
 * sink's copies are done first (some may be waiting on this thread). */
static int reserve_row(prep_packer *pk, pile_split split, uint64_t *slot, pile_err *err)
{
    if (!pk->w) PILE_FORWARD_IF_ERR(open_shard(pk, split, err));
    double t0 = pile_now();
    int rc = pile_shard_writer_reserve_row(pk->w, 0, slot, err);
    if (rc == 1) {
        rc = pk->sink.drain(pk->sink.ctx, err);
        if (!rc) rc = pile_shard_writer_reserve_row(pk->w, 1, slot, err);
    }
    pk->t_write += pile_now() - t0;
    return rc;
}

/* Commits the row reserved at `slot`: len ids, whose copies are already
 * with the sink, padding after them, and its document starts. */
static int emit_row(prep_packer *pk, pile_split split, uint64_t slot, uint32_t len, const uint32_t *off,
                    const uint32_t *gid, const uint16_t *flags, uint32_t ndocs, uint32_t lead, pile_err *err)
{
    for (uint32_t i = 0; i < ndocs; i++) {
        pk->docs_scratch[i].offset = off[i];
        pk->docs_scratch[i].flags = flags[i];
        PILE_FORWARD_IF_ERR(local_subset(pk, gid[i], &pk->docs_scratch[i].subset, err));
    }
    uint16_t lead_local = 0;
    PILE_FORWARD_IF_ERR(local_subset(pk, lead, &lead_local, err));
    if (len < pk->L) PILE_FORWARD_IF_ERR(pk->sink.move(pk->sink.ctx, pk->w, slot, len, NULL, NULL, pk->L - len, err));
    double t0 = pile_now();
    int rc = pile_shard_writer_commit_row(pk->w, len, pk->docs_scratch, ndocs, lead_local, err);
    pk->t_write += pile_now() - t0;
    if (rc) return rc;
    pk->w_rows++;
    pk->st->stats.split[split].rows++;
    pk->st->stats.split[split].pad_tokens += pk->L - len;
    return 0;
}

/* Finishes the open shard and records it with resume point r. When the
 * resume point lies inside a document (partial != NULL), that document is
 * taken out of the statistics for the manifest: a resumed run counts it
 * again when it re-reads it. */
typedef struct partial_doc {
    pile_split split;
    size_t input;
    uint32_t gid;
    uint64_t ntok;
    unsigned repairs;
} partial_doc;

/* A manifest write after a finished shard costs time in proportion to the
 * shards recorded. It is skipped while the time since the last one is less
 * than MANIFEST_SPACING times what that one took (manifest writing stays a
 * small share of the run), and while fewer than 1/MANIFEST_SHARE of the
 * shards recorded have been finished since, unless MANIFEST_MAX_WAIT
 * seconds have passed: the writes then grow geometrically with the shards,
 * so their total work is linear in the shards, not quadratic. A crash
 * redoes the shards finished since the last write; resume is exact from
 * any of them. */
#define MANIFEST_SPACING 20.0
#define MANIFEST_SHARE 16
#define MANIFEST_MAX_WAIT 10.0

static int finish_shard(prep_packer *pk, prep_resume r, const partial_doc *partial, pile_err *err)
{
    prep_state *st = pk->st;
    pile_shard_info info;
    /* every row's ids in place first */
    PILE_FORWARD_IF_ERR(pk->sink.drain(pk->sink.ctx, err));
    double t0 = pile_now();
    int rc = pile_shard_writer_finish(pk->w, &info, err);
    pk->t_write += pile_now() - t0;
    pk->io_cpu += pile_shard_writer_io_cpu(pk->w);
    pile_shard_writer_close(pk->w);
    pk->w = NULL;
    if (rc) return rc;
    PILE_FORWARD_IF_ERR(next_shard_names(pk, partial ? partial->gid : UINT32_MAX, err));
    if (st->repair) {
        /* the one shard a repair regenerates: done */
        st->repaired = info;
        st->repair_done = 1;
        return pile_err_set(err, PILE_ELIMIT, "repair done");
    }
    /* st->resume is where this shard began */
    PILE_FORWARD_IF_ERR(pile__prep_state_add_shard(st, pk->w_name, pk->w_split, &info, st->resume, err));
    st->next_shard[pk->w_split]++;
    if (partial) r.fallback = (partial->repairs & PREP_NAME_OVER) != 0;
    st->resume = r;
    int stop = ++st->shards_this_run == st->opts->stop_after_shards;
    double now = pile_now();
    double since = now - st->manifest_at;
    int write = stop || (since >= MANIFEST_SPACING * st->manifest_cost &&
                         ((st->n_shards - st->manifest_shards) * MANIFEST_SHARE >= st->n_shards ||
                          since >= MANIFEST_MAX_WAIT));
    if (partial) pile__prep_stats_doc(&st->stats, partial->split, partial->input, partial->gid, partial->ntok,
                                      partial->repairs, -1);
    if (write) {
        rc = pile__prep_manifest_write(st, err);
        st->pending.valid = 0;
    } else if (pile__prep_snapshot_take(st)) {
        rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
    }
    if (partial) pile__prep_stats_doc(&st->stats, partial->split, partial->input, partial->gid, partial->ntok,
                                      partial->repairs, +1);
    if (write) {
        st->manifest_at = pile_now();
        st->manifest_cost = st->manifest_at - now;
        st->manifest_shards = st->n_shards;
    }
    if (!rc && stop)
        rc = pile_err_set(err, PILE_ELIMIT, "stopped after %" PRIu64 " shards (test hook)", st->shards_this_run);
    return rc;
}

/* After a full row: finish the shard if it is full, with the resume point
 * inside the current document (pos of its n tokens emitted) or after it. */
static int row_done(prep_packer *pk, pile_split split, size_t input, uint64_t lineno, size_t n, uint64_t pos,
                    uint32_t gid, unsigned repairs, pile_err *err)
{
    if (pk->w_rows < pk->st->rows_per_shard) return 0;
    if (pos < n) {
        partial_doc pd = {split, input, gid, n, repairs};
        prep_resume r = {input, lineno, pos, 0};
        return finish_shard(pk, r, &pd, err);
    }
    prep_resume r = {input, lineno + 1, 0, 0};
    return finish_shard(pk, r, NULL, err);
}

/* Concat: each row's place is reserved when its first id comes, and each
 * piece of a document in it becomes one copy from where the document's ids
 * lie (the chunk the workers narrowed them into); a row across two chunks
 * is two copies, one from each. */
static int concat_doc(prep_packer *pk, pile_split split, size_t input, uint64_t lineno, const unsigned char *tokens,
                      size_t n, uint64_t pos, uint32_t gid, unsigned repairs, pile_err *err)
{
    const uint32_t L = pk->L;
    if (pos == 0) {
        pk->doc_off[pk->ndocs] = pk->row_len;
        pk->doc_gid[pk->ndocs] = gid;
        pk->doc_flags[pk->ndocs] = 0;
        pk->ndocs++;
    }
    while (pos < n) {
        if (pk->row_len == 0) {
            pk->lead = gid;
            PILE_FORWARD_IF_ERR(reserve_row(pk, split, &pk->slot, err));
        }
        size_t take = n - pos < (size_t)(L - pk->row_len) ? n - pos : (size_t)(L - pk->row_len);
        PILE_FORWARD_IF_ERR(pk->sink.move(pk->sink.ctx, pk->w, pk->slot, pk->row_len, NULL, tokens + pos * pk->width,
                                          (uint32_t)take, err));
        pos += take;
        pk->row_len += (uint32_t)take;
        if (pk->row_len < L) break;
        PILE_FORWARD_IF_ERR(emit_row(pk, split, pk->slot, L, pk->doc_off, pk->doc_gid, pk->doc_flags, pk->ndocs,
                                     pk->lead, err));
        pk->row_len = 0;
        pk->ndocs = 0;
        PILE_FORWARD_IF_ERR(row_done(pk, split, input, lineno, n, pos, gid, repairs, err));
    }
    return 0;
}

static int grow_u32(uint32_t **p, size_t n)
{
    uint32_t *v = realloc(*p, n * sizeof **p);
    if (!v) return PILE_ENOMEM;
    *p = v;
    return 0;
}

/* Packs the window's documents into rows with Best-Fit-Decreasing and emits
 * them in the order the rows were opened. A document longer than a row is
 * cut into row-long pieces and a remainder first; nothing shorter than a row
 * is ever cut. */
static int close_window(prep_packer *pk, pile_split split, int may_finish, prep_resume r, pile_err *err)
{
    if (pk->n_win == 0) return 0;
    const uint32_t L = pk->L;
    /* every id of the window in place, and the other window's copies done (it is next) */
    PILE_FORWARD_IF_ERR(pk->sink.drain(pk->sink.ctx, err));
    size_t np = 0;
    for (size_t d = 0; d < pk->n_win; d++) np += (pk->win[d].len + L - 1) / L;
    if (np > pk->p_cap) {
        size_t *o = realloc(pk->p_order, np * sizeof *o);
        if (!o || grow_u32(&pk->p_len, np) || grow_u32(&pk->p_bin, np) || grow_u32(&pk->p_doc, np) ||
            grow_u32(&pk->p_start, np) || grow_u32(&pk->p_next, np)) {
            if (o) pk->p_order = o;
            return pile_err_set(err, PILE_ENOMEM, "out of memory");
        }
        pk->p_order = o;
        pk->p_cap = np;
    }
    size_t k = 0;
    for (size_t d = 0; d < pk->n_win; d++)
        for (uint32_t s = 0; s < pk->win[d].len; s += L) {
            pk->p_doc[k] = (uint32_t)d;
            pk->p_start[k] = s;
            pk->p_len[k] = pk->win[d].len - s < L ? pk->win[d].len - s : L;
            k++;
        }
    long nb = pile__prep_bfd_pack(pk->bfd, pk->p_len, np, pk->p_bin, pk->p_order);
    if (nb < 0) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    size_t nbins = (size_t)nb;
    if (nbins > pk->bin_cap) {
        if (grow_u32(&pk->bin_head, nbins) || grow_u32(&pk->bin_tail, nbins))
            return pile_err_set(err, PILE_ENOMEM, "out of memory");
        pk->bin_cap = nbins;
    }
    /* each row's pieces, in the order they were placed */
    memset(pk->bin_head, 0, nbins * sizeof *pk->bin_head);
    for (size_t j = 0; j < np; j++) {
        size_t i = pk->p_order[j];
        uint32_t b = pk->p_bin[i];
        pk->p_next[i] = 0;
        if (!pk->bin_head[b]) pk->bin_head[b] = (uint32_t)i + 1;
        else pk->p_next[pk->bin_tail[b]] = (uint32_t)i + 1;
        pk->bin_tail[b] = (uint32_t)i;
    }
    const unsigned char *ids = pk->win_ids[pk->wi];
    for (size_t b = 0; b < nbins; b++) {
        uint32_t len = 0, nd = 0;
        uint64_t slot;
        PILE_FORWARD_IF_ERR(reserve_row(pk, split, &slot, err));
        for (uint32_t i1 = pk->bin_head[b]; i1; i1 = pk->p_next[i1 - 1]) {
            uint32_t i = i1 - 1;
            const win_doc *wd = &pk->win[pk->p_doc[i]];
            /* each segment copied from the window into its place in the row */
            PILE_FORWARD_IF_ERR(pk->sink.move(pk->sink.ctx, pk->w, slot, len, NULL,
                                              ids + (wd->tok_off + pk->p_start[i]) * pk->width, pk->p_len[i], err));
            pk->doc_off[nd] = len;
            pk->doc_gid[nd] = wd->gid;
            pk->doc_flags[nd] = pk->p_start[i] ? PILE_DOC_CONTINUED : 0;
            nd++;
            len += pk->p_len[i];
        }
        PILE_FORWARD_IF_ERR(emit_row(pk, split, slot, len, pk->doc_off, pk->doc_gid, pk->doc_flags, nd, pk->doc_gid[0],
                                     err));
    }
    /* the next window fills the other buffer while this one's copies are on their way */
    pk->n_win = 0;
    pk->win_len = 0;
    pk->wi ^= 1;
    if (may_finish && pk->w && pk->w_rows >= pk->st->rows_per_shard) PILE_FORWARD_IF_ERR(finish_shard(pk, r, NULL, err));
    return 0;
}

static int bestfit_doc(prep_packer *pk, pile_split split, size_t input, uint64_t lineno, const unsigned char *tokens,
                       size_t n, uint32_t gid, pile_err *err)
{
    if (n > UINT32_MAX) return pile_err_set(err, PILE_ELIMIT, "document of %zu tokens is too long for best-fit", n);
    if (pk->n_win == pk->cap_win) {
        size_t cap = pk->cap_win ? pk->cap_win * 2 : 1024;
        win_doc *v = realloc(pk->win, cap * sizeof *v);
        if (!v) return pile_err_set(err, PILE_ENOMEM, "out of memory");
        pk->win = v;
        pk->cap_win = cap;
    }
    int wi = pk->wi;
    if (pk->win_len + n > pk->win_cap[wi]) {
        /* a document longer than the room left: the window grows, once no copy goes to or from it */
        PILE_FORWARD_IF_ERR(pk->sink.drain(pk->sink.ctx, err));
        size_t cap = pk->win_cap[wi] * 2 > pk->win_len + n ? pk->win_cap[wi] * 2 : pk->win_len + n;
        unsigned char *v = realloc(pk->win_ids[wi], cap * pk->width);
        if (!v) return pile_err_set(err, PILE_ENOMEM, "out of memory");
        pk->win_ids[wi] = v;
        pk->win_cap[wi] = cap;
    }
    pk->win[pk->n_win].tok_off = pk->win_len;
    pk->win[pk->n_win].len = (uint32_t)n;
    pk->win[pk->n_win].gid = gid;
    pk->n_win++;
    PILE_FORWARD_IF_ERR(pk->sink.move(pk->sink.ctx, NULL, 0, 0, pk->win_ids[wi] + pk->win_len * pk->width, tokens,
                                      (uint32_t)n, err));
    pk->win_len += n;
    if (pk->win_len >= (uint64_t)pk->st->window_rows * pk->L) {
        prep_resume r = {input, lineno + 1, 0, 0};
        return close_window(pk, split, 1, r, err);
    }
    return 0;
}

int pile__prep_packer_doc(prep_packer *pk, pile_split split, size_t input, uint64_t lineno, const void *tokens,
                          size_t n, uint64_t tok_off, uint32_t subset, unsigned repairs, pile_err *err)
{
    if (pk->st->pack == PILE_PACK_BEST_FIT) {
        (void)repairs;
        /* best-fit resume points are window starts: never inside a document */
        if (tok_off) return pile_err_set(err, PILE_ECORRUPT, "best-fit resume point inside a document");
        return bestfit_doc(pk, split, input, lineno, tokens, n, subset, err);
    }
    return concat_doc(pk, split, input, lineno, tokens, n, tok_off, subset, repairs, err);
}

int pile__prep_packer_end_split(prep_packer *pk, pile_split split, size_t next_input, pile_err *err)
{
    prep_resume r = {next_input, 1, 0, 0};
    if (pk->st->pack == PILE_PACK_BEST_FIT) {
        PILE_FORWARD_IF_ERR(close_window(pk, split, 0, r, err));
    } else if (pk->row_len) {
        PILE_FORWARD_IF_ERR(emit_row(pk, split, pk->slot, pk->row_len, pk->doc_off, pk->doc_gid, pk->doc_flags,
                                     pk->ndocs, pk->lead, err));
        pk->row_len = 0;
        pk->ndocs = 0;
    }
    if (pk->w) PILE_FORWARD_IF_ERR(finish_shard(pk, r, NULL, err));
    return 0;
}
