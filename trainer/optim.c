/* The optimizer's state (master weights, gradients, moments), AdamW,
 * global-norm clipping and the cosine-with-warmup schedule, through the
 * backend only. The arithmetic
 * follows torch.optim.AdamW, torch.nn.utils.clip_grad_norm_ and
 * transformers' get_cosine_with_min_lr_schedule_with_warmup so that the
 * trainer can be checked against them step for step. */
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct pile_optim {
    pile_model *model;
    pile_backend *be;  /* the model's: its parameters and the whole gradient */
    pile_backend *obe; /* the optimizer's tensors': be, or the offload backend */
    pile_comm *comm;   /* NULL: one rank */
    int stage, rank, world;
    size_t n;          /* pile_model_flat_size */
    size_t padded;     /* n rounded up to a multiple of world (stage >= 1) */
    size_t lo, shard;  /* the rank's shard: [lo, lo + shard) */
    size_t bucket;     /* elements per rank and bucket (stage 0: of the allreduce); 0: all at once */
    pile_adamw_config cfg;
    pile_tensor master, grads, m, v;
    pile_tensor gshard;     /* the gradients the step reads: grads (stage 0), its shard, or own_gshard */
    int own_gshard;
    pile_tensor gather;     /* stage >= 1: padded compute parameters, all-gathered (be) */
    pile_tensor staging;    /* offload with 16-bit parameters: the shard (a chunk) converted in obe before it goes up */
    size_t chunk;           /* offload to a device: the step in chunks of this many elements; 0: one piece */
    pile_tensor bucket_buf; /* stage 1 to 3 with buckets: world x bucket packed gradients (be), twice with streams */
    float *add_host;        /* add_f32's host staging: a bucket of each side not in host memory, where needed */
    /* the gradients reduced while the backward runs (pile_optim_begin_backward) */
    int last;               /* the current backward is the step's last micro-batch's */
    /* streams (a device communicator): the collectives run on the model
     * backend's comm stream (pile_backend_comm_stream), ordered against
     * its ops by pile_backend_comm_wait_compute / _compute_wait_comm, the
     * host waiting for neither; from stage 1 the caller packs a bucket
     * into one of two slots before its reduce and lands it in the shard
     * after (reduce_bucket's phases); per slot, the bucket in flight there */
    int streams;
    void *stream; /* the comm stream; NULL without streams */
    int overlap;  /* buckets reduced while the backward runs: on the comm's thread, or on the stream */
    struct {
        size_t k0, b;
        int busy;
        uint64_t mark; /* the comm stream's mark after its reduce (pile_backend_comm_mark) */
    } slot[2];
    int next_slot;
    uint64_t waited;        /* streams: the ops wait for the comm stream up to this mark already */
    size_t left;            /* buckets not submitted yet this round: those below left x bucket_span */
    uint64_t ticket;        /* the last gradient bucket submitted */
    uint64_t early_bytes;   /* of comm_bytes, the buckets submitted with layers still to compute */
    /* stage 3: the rank's shard of the compute parameters (pbe: be, or obe
     * with offload_param), and two unit buffers the model reads from (be) */
    pile_backend *pbe;
    pile_tensor cshard;
    pile_tensor unit_buf[2];
    int unit_in[2];         /* the unit each holds (or is being gathered into it); -1 none */
    /* the gather into each still in flight: the comm's thread's ticket, or the stream's mark after it; 0 none */
    uint64_t unit_ticket[2];
    int last_unit;          /* the unit the model asked for last */
    size_t prefetch;        /* units of at most this many parameters are gathered ahead */
    uint64_t comm_bytes;    /* payload of the collectives issued (see pile_optim_comm_bytes) */
    int master_is_compute;  /* master is the model's parameter buffer, not an allocation of ours */
    int64_t steps;
    pile_loss_scaler *scaler; /* fp16 only */
};

static pile_comm_dtype comm_dtype(pile_dtype dt)
{
    return dt == PILE_DTYPE_BF16 ? PILE_COMM_BF16 : dt == PILE_DTYPE_F16 ? PILE_COMM_F16 : PILE_COMM_F32;
}

/* The stage-0 state: one buffer each of the flat size, the master
 * weights shared with the model's F32 parameters where they can be. */
static int alloc_replicated(pile_optim *o, pile_tensor params)
{
    const size_t n = o->n;
    /* one buffer unless the model computes in 16 bits (or emulates it) */
    o->master_is_compute = params.dtype == PILE_DTYPE_F32 && params.be == o->be &&
                           pile_backend_emulation(o->be) == PILE_DTYPE_F32;
    if (o->master_is_compute) {
        o->master = params;
    } else {
        /* the model's values as they are (an emulating backend's F32
         * parameters are still unrounded here: the master keeps them so) */
        o->master = pile_backend_alloc(o->be, PILE_DTYPE_F32, n);
        if (o->master.data && params.dtype == PILE_DTYPE_F32) pile_backend_copy(o->be, o->master, params, n);
        else if (o->master.data) pile_backend_convert(o->be, o->master, params, n);
    }
    o->grads = pile_backend_alloc(o->be, PILE_DTYPE_F32, n);
    o->gshard = o->grads;
    o->m = pile_backend_alloc(o->be, PILE_DTYPE_F32, n);
    o->v = pile_backend_alloc(o->be, PILE_DTYPE_F32, n);
    return o->master.data && o->grads.data && o->m.data && o->v.data ? 0 : PILE_ENOMEM;
}

/* The sharded state (stage 1 to 3), drawn as the buffers hold it:
 *   be:  grads    [0 ........... padded)  whole, F32, summed over the micro-batches
 *                                          (stage 2: one micro-batch's, zeroed after each)
 *        gather   [0 ........... padded)  compute dtype, every rank's shard after the all-gather
 *        gather is stage 1 and 2's; stage 3 has instead
 *        unit_buf[2]                       the largest unit's compute parameters, twice
 *        bucket_buf  world x bucket        when the shard is cut into buckets
 *   obe: master, m, v, gshard   [lo, lo + shard) of the flat layout, F32
 *        staging                           offload with 16-bit parameters only: a
 *                                          chunk of the shard (step_chunked)
 *   pbe: cshard  [lo, lo + shard)          stage 3: compute parameters (pbe: obe with
 *                                          offload_param, else be)
 * gshard is grads' own shard (in place) at stage 1 without offload. The
 * master weights start as the model's parameters, which the caller made
 * equal on every rank. */
static int alloc_sharded(pile_optim *o, pile_tensor params, pile_err *err)
{
    const size_t w = (size_t)o->world;
    o->padded = (o->n + w - 1) / w * w;
    o->shard = o->padded / w;
    o->lo = (size_t)o->rank * o->shard;
    if (o->chunk > o->shard) o->chunk = o->shard;
    o->master = pile_backend_alloc(o->obe, PILE_DTYPE_F32, o->shard);
    o->m = pile_backend_alloc(o->obe, PILE_DTYPE_F32, o->shard);
    o->v = pile_backend_alloc(o->obe, PILE_DTYPE_F32, o->shard);
    o->grads = pile_backend_alloc(o->be, PILE_DTYPE_F32, o->padded);
    o->own_gshard = o->stage >= 2 || o->obe != o->be;
    o->gshard = o->own_gshard ? pile_backend_alloc(o->obe, PILE_DTYPE_F32, o->shard)
                              : pile_tensor_slice(o->grads, o->lo, o->shard);
    int ok = o->master.data && o->m.data && o->v.data && o->grads.data && o->gshard.data;
    if (ok && o->stage < 3) {
        o->gather = pile_backend_alloc(o->be, params.dtype, o->padded);
        ok = o->gather.data != NULL;
    } else if (ok) {
        o->cshard = pile_backend_alloc(o->pbe, params.dtype, o->shard);
        size_t most = 0, first, count;
        for (int u = 0; u < pile_model_unit_count(o->model); u++) {
            pile_model_unit_range(o->model, u, &first, &count);
            if (count > most) most = count;
        }
        for (int k = 0; k < 2; k++) {
            o->unit_buf[k] = pile_backend_alloc(o->be, params.dtype, most);
            o->unit_in[k] = -1;
        }
        ok = o->cshard.data && o->unit_buf[0].data && o->unit_buf[1].data;
    }
    if (ok && o->obe != o->pbe && params.dtype != PILE_DTYPE_F32) {
        o->staging = pile_backend_alloc(o->obe, params.dtype, o->chunk);
        ok = o->staging.data != NULL;
    }
    if (ok && o->bucket) {
        o->bucket_buf = pile_backend_alloc(o->be, PILE_DTYPE_F32, (o->streams ? 2 : 1) * w * o->bucket);
        ok = o->bucket_buf.data != NULL;
    }
    if (!ok) return PILE_ENOMEM;
    /* the shard's real elements (the padding stays zero), through fp32 in
     * host memory: any compute dtype, any pair of backends */
    const size_t real = o->lo < o->n ? (o->n - o->lo < o->shard ? o->n - o->lo : o->shard) : 0;
    if (!real) return 0;
    float *host = malloc(real * sizeof *host);
    if (!host) return PILE_ENOMEM;
    int rc = pile_tensor_download_f32(host, pile_tensor_slice(params, o->lo, real), real, err);
    if (rc == 0) rc = pile_tensor_upload_f32(pile_tensor_slice(o->master, 0, real), host, real, err);
    free(host);
    return rc;
}

/* The pieces of unit u over the ranks' shards: rank q's is [*a, *b) of
 * the flat layout (empty when *a >= *b). */
static void unit_piece(const pile_optim *o, int u, int q, size_t *a, size_t *b)
{
    size_t first, count;
    pile_model_unit_range(o->model, u, &first, &count);
    const size_t qlo = (size_t)q * o->shard, qhi = qlo + o->shard;
    *a = first > qlo ? first : qlo;
    *b = first + count < qhi ? first + count : qhi;
}

/* A job (comm.h): every rank whose shard meets unit arg[0] broadcasts its
 * piece of unit_buf[arg[1]], in rank order (every rank makes the same
 * calls). */
static int broadcast_unit(pile_comm *c, void *ctx, const size_t arg[3], pile_err *err)
{
    pile_optim *o = ctx;
    const int u = (int)arg[0];
    const pile_tensor buf = o->unit_buf[arg[1]];
    size_t first, count, a, b;
    pile_model_unit_range(o->model, u, &first, &count);
    for (int q = 0; q < o->world; q++) {
        unit_piece(o, u, q, &a, &b);
        if (a < b)
            PILE_FORWARD_IF_ERR(pile_comm_broadcast(c, pile_tensor_slice(buf, a - first, b - a).data, b - a,
                                                    comm_dtype(buf.dtype), q, o->stream, err));
    }
    return 0;
}

/* Streams: the ops queued from now on run after the communication given
 * up to `mark` (0: none), unless they wait for it already: only that far,
 * so that what was given after it (the next bucket's reduce, the other
 * unit buffer's gather) stays in flight. */
static void wait_mark(pile_optim *o, uint64_t mark)
{
    if (mark <= o->waited) return;
    pile_backend_compute_wait_mark(o->be, mark);
    o->waited = mark;
}

/* Waits for the gather into unit_buf[k], if one is in flight. */
static int unit_claim(pile_optim *o, int k, pile_err *err)
{
    const uint64_t t = o->unit_ticket[k];
    if (!t) return 0;
    o->unit_ticket[k] = 0;
    if (o->streams) {
        wait_mark(o, t); /* gathered before the model reads it */
        return 0;
    }
    const int rc = pile_comm_wait(o->comm, t, err);
    if (rc < 0) o->unit_in[k] = -1;
    return rc;
}

/* Starts gathering unit u into unit_buf[k]: this rank's piece, from its
 * compute shard, converted on the model's backend (rounded as it rounds)
 * unless the shard is offloaded (then it was rounded where it was
 * converted), then the broadcasts on the comm's thread when it has one
 * (unit_claim waits for them), else here. */
static int gather_unit(pile_optim *o, int u, int k, pile_err *err)
{
    PILE_FORWARD_IF_ERR(unit_claim(o, k, err)); /* a gather into k still in flight is overwritten */
    size_t first, count, a, b;
    pile_model_unit_range(o->model, u, &first, &count);
    const pile_tensor buf = o->unit_buf[k];
    o->unit_in[k] = -1;
    unit_piece(o, u, o->rank, &a, &b);
    if (a < b) {
        const pile_tensor piece = pile_tensor_slice(buf, a - first, b - a);
        const pile_tensor src = pile_tensor_slice(o->cshard, a - o->lo, b - a);
        if (o->pbe == o->be) pile_backend_convert(o->be, piece, src, b - a);
        else PILE_FORWARD_IF_ERR(pile_tensor_copy(piece, src, b - a, err));
    }
    /* the piece written, and the unit k held before read by the model's
     * last ops, before the communication touches the buffer */
    if (o->streams) pile_backend_comm_wait_compute(o->be);
    else PILE_FORWARD_IF_ERR(pile_backend_sync(o->be, err));
    for (int q = 0; q < o->world; q++) {
        unit_piece(o, u, q, &a, &b);
        if (a < b) o->comm_bytes += (b - a) * pile_dtype_size(buf.dtype);
    }
    if (o->streams) {
        PILE_FORWARD_IF_ERR(broadcast_unit(o->comm, o, (const size_t[3]){(size_t)u, (size_t)k, 0}, err));
        o->unit_ticket[k] = pile_backend_comm_mark(o->be);
    } else if (o->comm) {
        PILE_FORWARD_IF_ERR(pile_comm_submit(o->comm, broadcast_unit, o, (size_t)u, (size_t)k, 0,
                                             &o->unit_ticket[k], err));
    }
    o->unit_in[k] = u;
    return 0;
}

/* The model's fetch (model.h): unit u from the buffer that holds it, or
 * gathered into the one not holding the unit asked for last; then `next`
 * into the other (DeepSpeed's stage3_prefetch_bucket_size: when it is no
 * larger than that), so that the model's next request finds it there.
 * With the comm's thread the prefetch's broadcasts run while the model
 * computes on u; without it they finish before this returns. */
static int unit_fetch(void *ctx, int u, int next, pile_tensor *view, pile_err *err)
{
    pile_optim *o = ctx;
    int k = o->unit_in[0] == u ? 0 : o->unit_in[1] == u ? 1 : -1;
    if (k < 0) {
        k = o->unit_in[0] == -1 ? 0 : o->unit_in[1] == -1 ? 1 : o->unit_in[0] == o->last_unit ? 1 : 0;
        PILE_FORWARD_IF_ERR(gather_unit(o, u, k, err));
    }
    PILE_FORWARD_IF_ERR(unit_claim(o, k, err));
    o->last_unit = u;
    size_t first, count = 0;
    if (next >= 0) pile_model_unit_range(o->model, next, &first, &count);
    if (next >= 0 && o->unit_in[1 - k] != next && next != u && count <= o->prefetch)
        PILE_FORWARD_IF_ERR(gather_unit(o, next, 1 - k, err));
    *view = o->unit_buf[k];
    return 0;
}

static size_t bucket_count(const pile_optim *o);
static int grads_ready(void *ctx, int unit, pile_err *err);
static int add_needs_host(const pile_optim *o);

int pile_optim_create(pile_optim **out, pile_model *model, const pile_adamw_config *cfg, pile_err *err)
{
    return pile_optim_create_zero(out, model, cfg, NULL, err);
}

int pile_optim_create_zero(pile_optim **out, pile_model *model, const pile_adamw_config *cfg,
                           const pile_optim_zero *z, pile_err *err)
{
    *out = NULL;
    PILE_RETURN_IF(!(cfg->beta1 >= 0.0f && cfg->beta1 < 1.0f) || !(cfg->beta2 >= 0.0f && cfg->beta2 < 1.0f), err,
                   PILE_EINVAL, "invalid AdamW betas (%g, %g): each must be in [0, 1)", (double)cfg->beta1,
                   (double)cfg->beta2);
    PILE_RETURN_IF(!(cfg->eps >= 0.0f) || !(cfg->weight_decay >= 0.0f), err, PILE_EINVAL,
                   "invalid AdamW eps %g or weight decay %g: must be >= 0", (double)cfg->eps,
                   (double)cfg->weight_decay);
    const pile_optim_zero none = {0, NULL, NULL, 0, 0, 0, 0, 0};
    if (!z) z = &none;
    pile_backend *be = pile_model_backend(model);
    PILE_RETURN_IF(z->stage < 0 || z->stage > 3, err, PILE_EINVAL, "ZeRO stage %d: must be 0 to 3", z->stage);
    PILE_RETURN_IF(z->offload_param && (z->stage != 3 || !z->offload), err, PILE_EINVAL,
                   "parameter offload needs ZeRO stage 3 and an offload backend");
    /* the offloaded parameter shard is rounded where it is converted */
    PILE_RETURN_IF(z->offload_param && pile_backend_emulation(z->offload) != pile_backend_emulation(be), err,
                   PILE_EINVAL, "parameter offload: the offload backend must emulate %s as the model's does",
                   pile_dtype_name(pile_backend_emulation(be)));
    PILE_RETURN_IF(z->offload && z->stage == 0, err, PILE_EINVAL,
                   "optimizer offload needs ZeRO stage 1 or more (the offloaded state is the rank's shard)");
    PILE_RETURN_IF(z->offload && !pile_backend_host_memory(z->offload), err, PILE_EINVAL,
                   "cannot offload the optimizer to the %s backend: its memory is not the host's",
                   pile_backend_name(z->offload));
    /* the communicator works on the memory the backend's tensors are in;
     * one rank (no communicator) exchanges nothing: any backend's memory */
    const int comm_device = z->comm && pile_comm_device_memory(z->comm);
    PILE_RETURN_IF(z->comm && !comm_device && !pile_backend_host_memory(be), err, PILE_EINVAL,
                   "cannot %s gradients in the %s backend's memory: the '%s' communicator works on host memory",
                   z->stage ? "shard" : "reduce", pile_backend_name(be), pile_comm_name(z->comm));
    PILE_RETURN_IF(comm_device && pile_backend_host_memory(be), err, PILE_EINVAL,
                   "cannot reduce gradients in the %s backend's memory: the '%s' communicator works on device memory",
                   pile_backend_name(be), pile_comm_name(z->comm));
    pile_optim *o = calloc(1, sizeof *o);
    if (!o) return pile_err_set(err, PILE_ENOMEM, "cannot allocate the optimizer");
    o->model = model;
    o->be = be;
    o->obe = z->offload ? z->offload : be;
    o->pbe = z->offload_param ? o->obe : be;
    o->last_unit = -1;
    o->prefetch = z->prefetch_elems;
    o->comm = z->comm;
    o->stage = z->stage;
    o->streams = comm_device;
    o->stream = comm_device ? pile_backend_comm_stream(be) : NULL;
    o->overlap = z->comm && (pile_comm_threaded(z->comm) || (o->streams && z->overlap));
    /* the offloaded step in chunks (step_chunked), whose uploads overlap
     * the host's AdamW on a device (on host memory an upload is a copy:
     * the same path, the same bits); an offloaded parameter shard goes up
     * only when the model reads a unit */
    if (z->offload && !z->offload_param)
        o->chunk = z->offload_chunk ? z->offload_chunk : PILE_OPTIM_OFFLOAD_CHUNK;
    o->rank = z->comm ? pile_comm_rank(z->comm) : 0;
    o->world = z->comm ? pile_comm_world_size(z->comm) : 1;
    o->cfg = *cfg;
    o->n = pile_model_flat_size(model);
    o->padded = o->shard = o->n;
    const pile_tensor params = pile_model_params(model);
    int rc = 0;
    /* a bucket as large as the shard is the shard at once, in place */
    o->bucket = z->bucket_elems;
    if (o->bucket >= (o->n + (size_t)o->world - 1) / (size_t)o->world) o->bucket = 0;
    if (o->stage == 0) rc = alloc_replicated(o, params);
    else {
        rc = alloc_sharded(o, params, err);
        /* from here on the model reads its units through unit_fetch */
        if (rc == 0 && o->stage == 3) rc = pile_model_partition(model, unit_fetch, o, err);
    }
    if (rc == PILE_ENOMEM)
        rc = pile_err_set(err, PILE_ENOMEM,
                          "cannot allocate the optimizer's gradients, moments and master weights (%zu bytes each)",
                          o->shard * sizeof(float));
    if (rc == 0 && o->stage >= 2 && add_needs_host(o)) {
        /* a bucket of each side that is not host memory */
        const size_t span = o->bucket ? o->bucket : o->shard;
        const size_t n = (size_t)(!pile_backend_host_memory(o->be) + !pile_backend_host_memory(o->obe)) * span;
        o->add_host = malloc(n * sizeof *o->add_host);
        if (!o->add_host) rc = pile_err_set(err, PILE_ENOMEM, "cannot allocate %zu floats to add gradients in", n);
    }
    if (rc == 0 && o->chunk) {
        /* staging memory for one chunk's upload at a time; the model's
         * batches share it (the backend keeps the larger reserve) */
        const size_t bytes = o->chunk * pile_dtype_size(params.dtype);
        rc = pile_backend_stage_reserve(be, (bytes + 255) / 256 * 256, err);
    }
    if (rc == 0) rc = pile_optim_update_model(o, err); /* the compute copy, rounded as it will be after each step */
    if (rc < 0) {
        pile_optim_free(o);
        return rc;
    }
    o->left = bucket_count(o);
    pile_model_set_grad_hook(model, grads_ready, o);
    *out = o;
    return 0;
}

void pile_optim_free(pile_optim *o)
{
    if (!o) return;
    /* no job of the comm's thread may still read or write what is freed
     * here (a failed queue runs none: its error was the caller's) */
    if (o->comm) pile_comm_drain(o->comm, NULL);
    if (o->streams) pile_backend_compute_wait_comm(o->be);
    pile_model_set_grad_hook(o->model, NULL, NULL);
    pile_loss_scaler_free(o->scaler);
    free(o->add_host);
    pile_backend_free(&o->bucket_buf);
    pile_backend_free(&o->cshard);
    pile_backend_free(&o->unit_buf[0]);
    pile_backend_free(&o->unit_buf[1]);
    pile_backend_free(&o->staging);
    pile_backend_free(&o->gather);
    if (o->own_gshard) pile_backend_free(&o->gshard);
    pile_backend_free(&o->v);
    pile_backend_free(&o->m);
    pile_backend_free(&o->grads);
    if (!o->master_is_compute) pile_backend_free(&o->master);
    free(o);
}

pile_tensor pile_optim_master(pile_optim *o) { return o->master; }
pile_tensor pile_optim_grads(pile_optim *o) { return o->grads; }
pile_tensor pile_optim_grad_shard(pile_optim *o) { return o->gshard; }
pile_tensor pile_optim_m(pile_optim *o) { return o->m; }
pile_tensor pile_optim_v(pile_optim *o) { return o->v; }
int pile_optim_master_is_compute(const pile_optim *o) { return o->master_is_compute; }
int64_t pile_optim_steps(const pile_optim *o) { return o->steps; }
void pile_optim_set_steps(pile_optim *o, int64_t steps) { o->steps = steps; }
int pile_optim_zero_stage(const pile_optim *o) { return o->stage; }

void pile_optim_shard(const pile_optim *o, size_t *offset, size_t *count)
{
    *offset = o->lo;
    *count = o->shard;
}

static pile_tensor state_tensor(pile_optim *o, pile_optim_state which)
{
    return which == PILE_OPTIM_MASTER ? o->master : which == PILE_OPTIM_M ? o->m : o->v;
}

int pile_optim_shards(const pile_optim *o) { return o->stage > 0 ? o->world : 1; }
uint64_t pile_optim_comm_bytes(const pile_optim *o) { return o->comm_bytes; }
uint64_t pile_optim_overlap_bytes(const pile_optim *o) { return o->early_bytes; }

/* At most this many elements of each rank's shard are gathered at once
 * (gather_f32): 16 MiB of fp32 a rank in the model's backend, whatever
 * the model's size. */
#define GATHER_PIECE ((size_t)1 << 22)

/* The whole of t, this rank's shard of a flat buffer (any float dtype),
 * as fp32 in host memory: every rank's shard all-gathered piece by piece
 * in a buffer of the model's backend, the memory the communicator works
 * on (a device's too), and each piece downloaded into its place. */
static int gather_f32(pile_optim *o, pile_tensor t, float *host, pile_err *err)
{
    const size_t w = (size_t)o->world, piece = o->shard < GATHER_PIECE ? o->shard : GATHER_PIECE;
    pile_tensor buf = pile_backend_alloc(o->be, t.dtype, w * piece);
    PILE_RETURN_IF(!buf.data, err, PILE_ENOMEM, "cannot allocate %zu elements to gather the optimizer's state in",
                   w * piece);
    int rc = 0;
    for (size_t k = 0; rc == 0 && k < o->shard; k += piece) {
        const size_t p = o->shard - k < piece ? o->shard - k : piece;
        const pile_tensor mine = pile_tensor_slice(buf, (size_t)o->rank * p, p);
        rc = pile_tensor_copy(mine, pile_tensor_slice(t, k, p), p, err);
        if (rc == 0) rc = pile_backend_sync(o->be, err); /* the piece written before the communicator reads it */
        if (rc == 0) rc = pile_comm_all_gather(o->comm, buf.data, mine.data, w * p, comm_dtype(t.dtype), NULL, err);
        for (size_t q = 0; rc == 0 && q < w; q++) {
            const size_t first = q * o->shard + k; /* padding past n is not wanted */
            const size_t cnt = first >= o->n ? 0 : o->n - first < p ? o->n - first : p;
            if (cnt) rc = pile_tensor_download_f32(host + first, pile_tensor_slice(buf, q * p, cnt), cnt, err);
        }
    }
    pile_backend_free(&buf);
    return rc;
}

int pile_optim_gather(pile_optim *o, pile_optim_state which, float *host, pile_err *err)
{
    const pile_tensor t = state_tensor(o, which);
    if (pile_optim_shards(o) == 1) return pile_tensor_download_f32(host, t, o->n, err);
    return gather_f32(o, t, host, err);
}

int pile_optim_gather_params(pile_optim *o, float *host, pile_err *err)
{
    if (o->stage < 3) return pile_tensor_download_f32(host, pile_model_params(o->model), o->n, err);
    int rc = o->world == 1 ? pile_tensor_download_f32(host, o->cshard, o->n, err) : gather_f32(o, o->cshard, host, err);
    /* a shard copied from offloaded master weights is rounded where it is
     * read (gather_unit): here too */
    const pile_dtype emu = pile_backend_emulation(o->be);
    if (rc == 0 && o->pbe == o->be && o->obe != o->be && emu != PILE_DTYPE_F32)
        pile_precision_round(host, o->n, emu == PILE_DTYPE_BF16 ? PILE_PRECISION_BF16 : PILE_PRECISION_FP16);
    return rc;
}

int pile_optim_put(pile_optim *o, pile_optim_state which, const float *src, size_t first, size_t count,
                   pile_err *err)
{
    const size_t hi = o->lo + o->shard < o->n ? o->lo + o->shard : o->n;
    const size_t a = first > o->lo ? first : o->lo;
    const size_t b = first + count < hi ? first + count : hi;
    if (a >= b) return 0;
    return pile_tensor_upload_f32(pile_tensor_slice(state_tensor(o, which), a - o->lo, b - a), src + (a - first),
                                  b - a, err);
}

void pile_optim_zero_grad(pile_optim *o)
{
    pile_backend_zero(o->be, o->grads, o->grads.n);
    if (o->own_gshard) pile_backend_zero(o->obe, o->gshard, o->shard);
    o->last = 0;
}

/* Whether add_f32 goes through host buffers (o->add_host) for the
 * gradient shard: some of it is a device's, and the device cannot add
 * there itself in fp32 (the shard offloaded, or an emulating backend,
 * whose add would round: one rank's stage 2 and 3 on devsim with 16-bit
 * precision). */
static int add_needs_host(const pile_optim *o)
{
    if (pile_backend_host_memory(o->be) && pile_backend_host_memory(o->obe)) return 0;
    return !(o->obe == o->be && pile_backend_emulation(o->be) == PILE_DTYPE_F32 &&
             pile_backend_supports(o->be, PILE_OP_ADD, PILE_DTYPE_F32));
}

/* dst[0..n) += src[0..n) (n <= bucket_span), F32, in fp32 whatever the
 * backends: dst the gradient shard (obe), src the reduced gradients
 * (be). On the host where both are host memory (on the comm's thread
 * too), else a backend add where the device can, else through
 * o->add_host; those two call a backend, so only on the caller's thread
 * (streams, or no thread). */
static int add_f32(pile_optim *o, pile_tensor dst, pile_tensor src, size_t n, pile_err *err)
{
    const int dh = pile_backend_host_memory(dst.be), sh = pile_backend_host_memory(src.be);
    if (!n) return 0;
    if ((!dh || !sh) && !add_needs_host(o)) {
        pile_backend_add(dst.be, dst, dst, src, n);
        return pile_backend_sync(dst.be, err);
    }
    float *d = dh ? dst.data : o->add_host, *s = sh ? src.data : o->add_host + (dh ? 0 : n);
    int rc = dh ? 0 : pile_tensor_download_f32(d, dst, n, err);
    if (rc == 0 && !sh) rc = pile_tensor_download_f32(s, src, n, err);
    if (rc == 0) {
        for (size_t i = 0; i < n; i++) d[i] += s[i];
        if (!dh) rc = pile_tensor_upload_f32(dst, d, n, err);
    }
    return rc;
}

/* dst[0..n) = src[0..n), F32, as add_f32: a memcpy where both are host
 * memory (on the comm's thread too), else the backends' copy (a copy
 * rounds nothing on any backend). */
static int copy_f32(pile_tensor dst, pile_tensor src, size_t n, pile_err *err)
{
    if (pile_backend_host_memory(dst.be) && pile_backend_host_memory(src.be)) {
        memcpy(dst.data, src.data, n * sizeof(float));
        return 0;
    }
    return pile_tensor_copy(dst, src, n, err);
}

/* The gradient buckets, fixed by the bucket size and the flat layout
 * (never by timing, so every rank cuts them alike). Stage 0: consecutive
 * ranges of world x bucket elements of the whole, each allreduced. Above:
 * ranges [k0, k0 + bucket) of the shard, bucket k0 holding every rank's
 * piece at k0 of its shard, reduce-scattered to the owners. Either way
 * bucket j's lowest element in the flat layout is j x bucket_span, so it
 * is final once the backward has finished everything from there up. */
static size_t bucket_span(const pile_optim *o)
{
    if (o->stage == 0) return o->bucket ? o->bucket * (size_t)o->world : o->n;
    return o->bucket ? o->bucket : o->shard;
}

static size_t bucket_count(const pile_optim *o)
{
    const size_t span = bucket_span(o), total = o->stage == 0 ? o->n : o->shard;
    return span ? (total + span - 1) / span : 0;
}

/* Rank q's piece of a bucket of b elements in slot s: slots are world x
 * bucket elements apart, whatever b (the last bucket is shorter). */
static pile_tensor bucket_piece(const pile_optim *o, int s, size_t q, size_t b)
{
    return pile_tensor_slice(o->bucket_buf, (size_t)s * (size_t)o->world * o->bucket + q * b, b);
}

static pile_tensor bucket_mine(const pile_optim *o, int s, size_t b)
{
    if (!o->bucket) return pile_tensor_slice(o->grads, o->lo, o->shard);
    return bucket_piece(o, s, (size_t)o->rank, b);
}

/* A bucket of the shard (from stage 1) goes through three phases:
 *  - pack: every rank's piece of it copied into slot s of bucket_buf
 *    (with buckets; without, the whole buffer is reduced in place);
 *  - reduce: the reduce-scatter (c NULL: one rank, nothing);
 *  - land: the rank's reduced piece into its gradient shard, added at
 *    stages 2 and 3 (the micro-batches' sum), copied at stage 1.
 * Where the comm's thread works on host memory it runs all three (the
 * copies and adds by hand, no backend call); with streams (device
 * memory) the caller packs, enqueues the reduce on the comm stream and
 * lands it once the ops wait for it (submit_stream); without either all
 * three run on the caller's thread. */
static int pack_bucket(pile_optim *o, int s, size_t k0, size_t b, pile_err *err)
{
    const size_t w = (size_t)o->world;
    for (size_t q = 0; o->bucket && q < w; q++)
        PILE_FORWARD_IF_ERR(
            copy_f32(bucket_piece(o, s, q, b), pile_tensor_slice(o->grads, q * o->shard + k0, b), b, err));
    return 0;
}

static int land_bucket(pile_optim *o, int s, size_t k0, size_t b, pile_err *err)
{
    const pile_tensor dst = pile_tensor_slice(o->gshard, k0, b), mine = bucket_mine(o, s, b);
    if (o->stage >= 2) return add_f32(o, dst, mine, b, err);
    if (dst.data != mine.data || dst.be != mine.be) return copy_f32(dst, mine, b, err);
    return 0;
}

/* A job (comm.h): bucket [arg[0], arg[0] + arg[1]) reduced over the
 * ranks (c NULL: one rank): allreduced at stage 0; from stage 1 the
 * phases above, all three for arg[2] 0, the reduce of slot arg[2] - 1
 * alone otherwise (streams). */
static int reduce_bucket(pile_comm *c, void *ctx, const size_t arg[3], pile_err *err)
{
    pile_optim *o = ctx;
    const size_t k0 = arg[0], b = arg[1];
    if (o->stage == 0)
        return pile_comm_allreduce(c, pile_tensor_slice(o->grads, k0, b).data, b, PILE_COMM_F32, PILE_COMM_SUM,
                                   o->stream, err);
    const int s = arg[2] ? (int)arg[2] - 1 : 0;
    if (!arg[2]) PILE_FORWARD_IF_ERR(pack_bucket(o, s, k0, b, err));
    const pile_tensor mine = bucket_mine(o, s, b);
    const size_t w = (size_t)o->world;
    const pile_tensor all = o->bucket ? bucket_piece(o, s, 0, w * b) : o->grads;
    if (c)
        PILE_FORWARD_IF_ERR(pile_comm_reduce_scatter(c, mine.data, all.data, o->bucket ? w * b : o->padded,
                                                     PILE_COMM_F32, PILE_COMM_SUM, o->stream, err));
    return arg[2] ? 0 : land_bucket(o, s, k0, b, err);
}

/* Streams: the bucket in flight in slot s, if any, landed once the ops
 * wait for its reduce (and not for the other slot's, given after it). */
static int land_slot(pile_optim *o, int s, pile_err *err)
{
    if (!o->slot[s].busy) return 0;
    o->slot[s].busy = 0;
    wait_mark(o, o->slot[s].mark);
    return land_bucket(o, s, o->slot[s].k0, o->slot[s].b, err);
}

/* Streams: bucket [k0, k0 + b) reduced on the comm stream once the ops
 * that wrote it are done; from stage 1 packed first into the next slot
 * (once the bucket before in that slot has landed): two buckets in flight
 * at most. Stage 0 reduces in place, waited for by finish_buckets. */
static int submit_stream(pile_optim *o, size_t k0, size_t b, pile_err *err)
{
    if (o->stage == 0) {
        pile_backend_comm_wait_compute(o->be);
        return reduce_bucket(o->comm, o, (const size_t[3]){k0, b, 0}, err);
    }
    const int s = o->next_slot;
    o->next_slot ^= 1;
    PILE_FORWARD_IF_ERR(land_slot(o, s, err));
    PILE_FORWARD_IF_ERR(pack_bucket(o, s, k0, b, err));
    pile_backend_comm_wait_compute(o->be);
    PILE_FORWARD_IF_ERR(reduce_bucket(o->comm, o, (const size_t[3]){k0, b, (size_t)s + 1}, err));
    o->slot[s].mark = pile_backend_comm_mark(o->be);
    o->slot[s].k0 = k0;
    o->slot[s].b = b;
    o->slot[s].busy = 1;
    return 0;
}

/* Submits the buckets not submitted yet whose elements are all at or
 * above `final` (0: all), highest first, as the backward finishes them. */
static int submit_buckets(pile_optim *o, size_t final, pile_err *err)
{
    const uint64_t before = o->comm_bytes;
    const size_t span = bucket_span(o), total = o->stage == 0 ? o->n : o->shard;
    if (o->stage == 0 && !o->comm) {
        o->left = 0; /* one rank: nothing to reduce */
        return 0;
    }
    while (o->left > 0 && (o->left - 1) * span >= final) {
        const size_t k0 = --o->left * span, b = total - k0 < span ? total - k0 : span;
        o->comm_bytes += o->stage == 0 ? 2 * b * 4 /* a ring allreduce: a reduce-scatter and an all-gather */
                                       : (size_t)o->world * b * 4;
        if (o->streams) PILE_FORWARD_IF_ERR(submit_stream(o, k0, b, err));
        else if (o->comm) PILE_FORWARD_IF_ERR(pile_comm_submit(o->comm, reduce_bucket, o, k0, b, 0, &o->ticket, err));
        else PILE_FORWARD_IF_ERR(reduce_bucket(NULL, o, (const size_t[3]){k0, b, 0}, err));
    }
    if (final > 0) o->early_bytes += o->comm_bytes - before;
    return 0;
}

/* The rest of this round's buckets submitted, all of them finished (and
 * landed), and the next round set up. */
static int finish_buckets(pile_optim *o, pile_err *err)
{
    if (!o->streams) { /* the backward's results, before the host (or the comm's thread) reads them */
        PILE_FORWARD_IF_ERR(pile_backend_sync(o->be, err));
        PILE_FORWARD_IF_ERR(pile_backend_sync(o->obe, err));
    }
    PILE_FORWARD_IF_ERR(submit_buckets(o, 0, err));
    if (o->streams && o->stage == 0) {
        wait_mark(o, pile_backend_comm_mark(o->be)); /* the allreduces, in place */
    } else if (o->streams) {
        /* one wait for both slots: the newer's mark covers the older's reduce */
        uint64_t last = 0;
        for (int k = 0; k < 2; k++)
            if (o->slot[k].busy && o->slot[k].mark > last) last = o->slot[k].mark;
        wait_mark(o, last);
    } else if (o->comm) {
        PILE_FORWARD_IF_ERR(pile_comm_wait(o->comm, o->ticket, err));
    }
    for (int k = 0; k < 2; k++) PILE_FORWARD_IF_ERR(land_slot(o, o->next_slot ^ k, err)); /* the older first */
    o->left = bucket_count(o);
    return 0;
}

/* The model's gradient hook (model.h): with overlap, the buckets that
 * unit's end made final go to the comm's thread, or to the comm stream,
 * while the backward goes on (every backward from stage 2, the step's
 * last below). */
static int grads_ready(void *ctx, int unit, pile_err *err)
{
    pile_optim *o = ctx;
    if (!o->overlap || (o->stage < 2 && !o->last)) return 0;
    size_t first = 0, count;
    if (unit > 0) pile_model_unit_range(o->model, unit, &first, &count);
    /* its gradients written before the thread reads them (the stream waits by itself) */
    if (!o->streams) PILE_FORWARD_IF_ERR(pile_backend_sync(o->be, err));
    return submit_buckets(o, first, err);
}

void pile_optim_begin_backward(pile_optim *o, int last) { o->last = last != 0; }

int pile_optim_backward_done(pile_optim *o, pile_err *err)
{
    if (o->stage < 2) return 0;
    PILE_FORWARD_IF_ERR(finish_buckets(o, err));
    pile_backend_zero(o->be, o->grads, o->grads.n);
    return 0;
}

int pile_optim_reduce_gradients(pile_optim *o, double *sumsq, pile_err *err)
{
    if (o->stage < 2) PILE_FORWARD_IF_ERR(finish_buckets(o, err));
    else PILE_FORWARD_IF_ERR(pile_backend_sync(o->be, err));
    o->last = 0;
    if (o->stage == 0) {
        size_t off = 0, cnt = o->n;
        if (o->comm) pile_comm_partition(o->comm, o->n, &off, &cnt);
        *sumsq = pile_backend_sumsq(o->be, pile_tensor_slice(o->grads, off, cnt), cnt);
        return 0;
    }
    *sumsq = pile_backend_sumsq(o->obe, o->gshard, o->shard);
    return 0;
}

double pile_optim_grad_norm(pile_optim *o)
{
    /* padded wte rows and the shards' padding hold zero gradients, so the
     * whole buffer serves */
    return sqrt(pile_backend_sumsq(o->obe, o->gshard, o->gshard.n));
}

/* One AdamW step (t) on the master weights of flat elements [a0, b0)
 * of the rank's shard, tensor by tensor (each its weight decay). */
static void adamw_flat(pile_optim *o, size_t a0, size_t b0, float lr, int64_t t)
{
    pile_model *model = o->model;
    for (size_t i = 0; i < pile_model_tensor_count(model); i++) {
        const pile_tensor_info *ti = pile_model_tensor(model, i);
        float wd = ti->decay || o->cfg.decay_all ? o->cfg.weight_decay : 0.0f;
        /* saved_numel: wte's padded rows come last and stay exactly zero;
         * of each tensor, the part in [a0, b0) */
        const size_t a = ti->offset > a0 ? ti->offset : a0;
        const size_t b = ti->offset + ti->saved_numel < b0 ? ti->offset + ti->saved_numel : b0;
        if (a >= b) continue;
        const size_t at = a - o->lo, n = b - a;
        pile_backend_adamw(o->obe, pile_tensor_slice(o->master, at, n), pile_tensor_slice(o->gshard, at, n),
                           pile_tensor_slice(o->m, at, n), pile_tensor_slice(o->v, at, n), n, lr, o->cfg.beta1,
                           o->cfg.beta2, o->cfg.eps, wd, t);
    }
}

/* Stages 1 and 2: the rank's shard is in its place of `gather`, in the
 * compute dtype; every rank's gathered, and the whole into the model's
 * parameters (the last convert rounds as stage 0's does on an emulating
 * backend: rounding twice changes nothing). */
static int gather_params(pile_optim *o, pile_tensor mine, pile_err *err)
{
    if (o->streams) pile_backend_comm_wait_compute(o->be);
    else PILE_FORWARD_IF_ERR(pile_backend_sync(o->be, err));
    if (o->comm)
        PILE_FORWARD_IF_ERR(pile_comm_all_gather(o->comm, o->gather.data, mine.data, o->padded,
                                                 comm_dtype(o->gather.dtype), o->stream, err));
    if (o->streams) wait_mark(o, pile_backend_comm_mark(o->be));
    o->comm_bytes += o->padded * pile_dtype_size(o->gather.dtype);
    pile_backend_convert(o->be, pile_model_params(o->model), o->gather, o->n);
    return pile_backend_sync(o->be, err);
}

/* Stage 3: the units the model holds are stale once the shard changes
 * (and gathers still in flight read it). */
static int drop_units(pile_optim *o, pile_err *err)
{
    PILE_FORWARD_IF_ERR(unit_claim(o, 0, err));
    PILE_FORWARD_IF_ERR(unit_claim(o, 1, err));
    o->unit_in[0] = o->unit_in[1] = -1;
    return 0;
}

/* Offload (o->chunk): the compute parameters written from
 * the master weights chunk by chunk, each chunk first stepped by AdamW
 * when `step` (lr, t), converted on obe (16-bit parameters) and staged up
 * (optim.h, offload): the copy of chunk k travels while the host steps
 * chunk k + 1. Each chunk is a group of its own, ended at once: no op is
 * queued between its upload and its wait, and ops and collectives queued
 * after see it. The destination is the shard's place in `gather` (stages
 * 1 and 2, gathered after the last chunk) or the compute shard (stage 3). */
static int step_chunked(pile_optim *o, int step, float lr, int64_t t, pile_err *err)
{
    if (o->stage == 3) PILE_FORWARD_IF_ERR(drop_units(o, err));
    const pile_tensor dst = o->stage == 3 ? o->cshard : pile_tensor_slice(o->gather, o->lo, o->shard);
    /* the next batch, staged while the step's last micro-batch ran, has
     * its group still open: a chunk joining that group would be ordered
     * only after the ops queued before the group began (backend.h), not
     * after the backward since, which may still read dst (stage 3's
     * gathers convert from cshard). Its copy has long landed: ending the
     * group costs nothing, and the model finds it ended. */
    pile_model_stage_wait(o->model);
    for (size_t c0 = 0; c0 < o->shard; c0 += o->chunk) {
        const size_t n = o->shard - c0 < o->chunk ? o->shard - c0 : o->chunk;
        if (step) adamw_flat(o, o->lo + c0, o->lo + c0 + n, lr, t);
        pile_tensor src = pile_tensor_slice(o->master, c0, n);
        if (o->staging.data) {
            pile_backend_convert(o->obe, o->staging, src, n);
            src = o->staging;
        }
        /* the chunk written before the host copies it */
        PILE_FORWARD_IF_ERR(pile_backend_sync(o->obe, err));
        pile_backend_stage_upload(o->be, pile_tensor_slice(dst, c0, n), src.data, n);
        pile_backend_stage_wait(o->be);
    }
    if (o->stage < 3) return gather_params(o, dst, err);
    return pile_backend_sync(o->be, err);
}

int pile_optim_update_model(pile_optim *o, pile_err *err)
{
    const pile_tensor params = pile_model_params(o->model);
    if (o->stage == 0) {
        if (!o->master_is_compute) pile_backend_convert(o->be, params, o->master, o->master.n);
        return pile_backend_sync(o->be, err);
    }
    if (o->chunk) return step_chunked(o, 0, 0.0f, 0, err); /* offloaded master weights */
    /* the master weights where the compute shard is (obe == pbe): the
     * shard in the compute dtype into its place of the whole, then every
     * rank's. Stage 3 stops at the shard: units are gathered when the
     * model reads them. */
    if (o->stage == 3) {
        PILE_FORWARD_IF_ERR(drop_units(o, err));
        pile_backend_convert(o->pbe, o->cshard, o->master, o->shard);
        return pile_backend_sync(o->pbe, err);
    }
    const pile_tensor mine = pile_tensor_slice(o->gather, o->lo, o->shard);
    pile_backend_convert(o->be, mine, o->master, o->shard);
    return gather_params(o, mine, err);
}

int pile_optim_step(pile_optim *o, double grad_norm, float max_norm, float lr, pile_err *err)
{
    PILE_RETURN_IF(!isfinite(grad_norm), err, PILE_EINVAL, "cannot take an optimizer step: gradient norm %g",
                   grad_norm);
    if (max_norm > 0.0f) {
        /* torch computes the coefficient in the gradients' dtype (fp32) */
        float coef = max_norm / ((float)grad_norm + 1e-6f);
        if (coef < 1.0f) pile_backend_scale(o->obe, o->gshard, o->gshard.n, coef);
    }
    int64_t t = o->steps + 1;
    if (o->chunk) {
        PILE_FORWARD_IF_ERR(step_chunked(o, 1, lr, t, err));
    } else {
        adamw_flat(o, o->lo, o->lo + o->shard, lr, t);
        PILE_FORWARD_IF_ERR(pile_optim_update_model(o, err));
    }
    o->steps = t;
    return 0;
}

int pile_optim_enable_loss_scaling(pile_optim *o, const pile_loss_scaler_config *c, pile_err *err)
{
    PILE_RETURN_IF(o->scaler, err, PILE_EINVAL, "the optimizer already has a loss scaler");
    return pile_loss_scaler_create(&o->scaler, c, err);
}

pile_loss_scaler *pile_optim_loss_scaler(pile_optim *o) { return o->scaler; }
double pile_optim_loss_scale(const pile_optim *o) { return o->scaler ? pile_loss_scaler_scale(o->scaler) : 1.0; }

int pile_optim_step_scaled(pile_optim *o, double grad_norm, int overflow, float max_norm, float lr,
                           double *unscaled_norm, pile_loss_scaler_step *out, pile_err *err)
{
    pile_loss_scaler_step ls = {0, 1.0, 1.0, 0};
    double norm = grad_norm;
    if (o->scaler) {
        /* DeepSpeed's order: the overflow check on the scaled gradients
         * decides the scale first; only a clean step is unscaled */
        PILE_FORWARD_IF_ERR(pile_loss_scaler_update(o->scaler, overflow || !isfinite(grad_norm), &ls, err));
        if (out) *out = ls;
        if (ls.skip) {
            if (unscaled_norm) *unscaled_norm = grad_norm;
            return 1;
        }
        /* powers of two (and any scale that converts to fp32 exactly):
         * dividing by the scale is exact where nothing underflows */
        if (ls.scale != 1.0) {
            pile_backend_scale(o->obe, o->gshard, o->gshard.n, (float)(1.0 / ls.scale));
            norm = grad_norm / ls.scale;
        }
    } else if (out) {
        *out = ls;
    }
    if (unscaled_norm) *unscaled_norm = norm;
    PILE_FORWARD_IF_ERR(pile_optim_step(o, norm, max_norm, lr, err));
    return 0;
}

double pile_lr_at(int64_t step, int64_t total_steps, int64_t warmup_steps, double lr, double min_lr)
{
    /* transformers' lambda times the base lr, with min_lr_rate = min_lr / lr */
    if (lr == 0.0) return 0.0;
    if (step < warmup_steps) return lr * ((double)step / (double)(warmup_steps > 1 ? warmup_steps : 1));
    int64_t span = total_steps - warmup_steps;
    double progress = (double)(step - warmup_steps) / (double)(span > 1 ? span : 1);
    double rate = min_lr / lr;
    double factor = 0.5 * (1.0 + cos(M_PI * 0.5 * 2.0 * progress));
    factor = factor * (1.0 - rate) + rate;
    return lr * (factor > 0.0 ? factor : 0.0);
}

int64_t pile_warmup_steps(double warmup_ratio, int64_t total_steps)
{
    if (!(warmup_ratio > 0.0) || total_steps <= 0) return 0;
    return (int64_t)ceil((double)total_steps * warmup_ratio);
}
