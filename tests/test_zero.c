/* Tests of the optimizer's ZeRO sharding (optim.h, pile_optim_zero) over
 * several ranks without MPI: each rank is a thread with its own cpu
 * backend, model and optimizer, joined by a communicator of this file
 * (comm_internal.h's table) whose collectives meet at a barrier and sum
 * in rank order, so every rank computes the same bits and the stages can
 * be compared exactly where the arithmetic allows it:
 *  - stages 1 to 3 (one micro-batch per rank), with and without offload
 *    of the optimizer (and at stage 3 of the parameters) and in buckets,
 *    take the same steps as stage 0 on as many ranks, bit for bit (the
 *    same sums in the same order, the same norm partials);
 *  - stages 2 and 3 with accumulation sum each micro-batch over the ranks
 *    first: within 1e-5 of one rank;
 *  - checkpoints: the ranks' shard files regrouped for another world size
 *    and stage, bit for bit for the same ones;
 *  - the bytes each step moves: 2x the parameters at stages 0 to 2, about
 *    3x at stage 3 (the ZeRO paper's figures);
 *  - on 2 and 4 ranks every stage trains as one rank does on the same
 *    global batch: losses within 1e-5 relative, weights within 1e-5 in
 *    norm (the key biases apart: see g_exclude);
 *  - with the communicator's thread (overlap), every stage takes the same
 *    steps as without it, bit for bit;
 *  - the model on the devsim backend with the communicator on its memory
 *    (its tensors only, as "devsim" and "nccl"): the same steps again,
 *    bit for bit, overlapped too; its collectives queued on the backend's
 *    comm stream, outputs poisoned until the ops wait for it, so that a
 *    missing or misplaced ordering in the optimizer changes the bits; the
 *    offloaded step in chunks of 100 elements, each a staged upload
 *    poisoned until waited for (and on devsim16, bf16 parameters: each
 *    chunk converted on the host first), stage 0's steps bit for bit;
 *  - on one rank (no communicator) stages 1 and 2 are stage 0 bit for bit;
 *  - bf16 emulation through the offload's staging rounds as stage 0;
 *  - every rank ends with the same parameters, and the shards cover the
 *    flat buffer once. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "backend.h"
#include "checkpoint.h"
#include "comm/comm.h"
#include "comm/comm_internal.h"
#include "optim.h"
#include "pile_test.h"

#define V 50
#define NPOS 16
#define NL 2
#define NH 2
#define C 8
#define T 12
#define ROWS 8 /* the global batch */
#define STEPS 6
#define MAXW 4

/* ------------------------------------------------- threads communicator */

typedef struct team {
    int world;
    uv_barrier_t bar;
    const void *in[MAXW];
} team;

static team g_team;
static _Thread_local int tl_rank;
/* A rank's end of the team, its impl: the rank travels with the calls,
 * which its communication thread may make instead of the rank's own. */
typedef struct member {
    team *t;
    int rank;
} member;
static member g_member[MAXW];

static int team_open(void **impl, const pile__comm_setup *setup, int *rank, int *world_size, pile_err *err)
{
    (void)setup, (void)err;
    g_member[tl_rank] = (member){&g_team, tl_rank};
    *impl = &g_member[tl_rank];
    *rank = tl_rank;
    *world_size = g_team.world;
    return 0;
}

static void team_close(void *impl) { (void)impl; }

/* Each rank publishes its buffer; after the first barrier every rank
 * reads the others'; after the second none reads any more, so a rank
 * may write its own and publish again. */
static team *publish(void *impl, const void *p)
{
    const member *me = impl;
    me->t->in[me->rank] = p;
    uv_barrier_wait(&me->t->bar);
    return me->t;
}

static int rank_of(const void *impl) { return ((const member *)impl)->rank; }

static double reduce_at(team *t, int kind, size_t i, pile_comm_op op)
{
    double acc = 0.0;
    for (int q = 0; q < t->world; q++) {
        double x = kind == 0 ? (double)((const float *)t->in[q])[i]
                 : kind == 1 ? ((const double *)t->in[q])[i]
                             : (double)((const int64_t *)t->in[q])[i];
        if (q == 0) acc = x;
        else if (op == PILE_COMM_SUM) acc = kind == 0 ? (double)((float)acc + (float)x) : acc + x;
        else acc = x > acc ? x : acc;
    }
    return acc;
}

/* count values of `kind` (0 f32, 1 f64, 2 i64) from offset `first` of
 * every rank's buffer, reduced, into out. */
static int reduce_into(team *t, int kind, void *out, size_t first, size_t count, pile_comm_op op)
{
    const size_t es = kind == 0 ? 4 : 8;
    void *tmp = malloc(count * es + 1);
    if (!tmp) return PILE_ENOMEM;
    for (size_t i = 0; i < count; i++) {
        double r = reduce_at(t, kind, first + i, op);
        if (kind == 0) ((float *)tmp)[i] = (float)r;
        else if (kind == 1) ((double *)tmp)[i] = r;
        else ((int64_t *)tmp)[i] = (int64_t)r;
    }
    uv_barrier_wait(&t->bar);
    memcpy(out, tmp, count * es);
    free(tmp);
    return 0;
}

static int team_allreduce(void *impl, void *buf, size_t count, pile_comm_dtype dt, pile_comm_op op, void *stream,
                          pile_err *err)
{
    (void)dt, (void)stream, (void)err;
    return reduce_into(publish(impl, buf), 0, buf, 0, count, op);
}

static int team_reduce_scatter(void *impl, void *out, const void *in, size_t count, pile_comm_dtype dt,
                               pile_comm_op op, void *stream, pile_err *err)
{
    (void)dt, (void)stream, (void)err;
    team *t = publish(impl, in);
    const size_t chunk = count / (size_t)t->world;
    return reduce_into(t, 0, out, (size_t)rank_of(impl) * chunk, chunk, op);
}

static int team_all_gather(void *impl, void *out, const void *in, size_t count, pile_comm_dtype dt, void *stream,
                           pile_err *err)
{
    (void)stream, (void)err;
    team *t = publish(impl, in);
    const size_t bytes = count / (size_t)t->world * pile_comm_dtype_size(dt);
    /* a rank writes only its own out, never where another rank's in lies */
    for (int q = 0; q < t->world; q++) memmove((char *)out + (size_t)q * bytes, t->in[q], bytes);
    uv_barrier_wait(&t->bar);
    return 0;
}

static int team_broadcast_bytes(void *impl, void *buf, size_t bytes, int root, pile_err *err)
{
    (void)err;
    team *t = publish(impl, buf);
    if (rank_of(impl) != root) memcpy(buf, t->in[root], bytes);
    uv_barrier_wait(&t->bar);
    return 0;
}

static int team_broadcast(void *impl, void *buf, size_t count, pile_comm_dtype dt, int root, void *stream,
                          pile_err *err)
{
    (void)stream;
    return team_broadcast_bytes(impl, buf, count * pile_comm_dtype_size(dt), root, err);
}

static int team_allreduce_f64(void *impl, double *v, size_t n, pile_comm_op op, pile_err *err)
{
    (void)err;
    return reduce_into(publish(impl, v), 1, v, 0, n, op);
}

static int team_allreduce_i64(void *impl, int64_t *v, size_t n, pile_comm_op op, pile_err *err)
{
    (void)err;
    return reduce_into(publish(impl, v), 2, v, 0, n, op);
}

static int team_barrier(void *impl, pile_err *err)
{
    (void)err;
    uv_barrier_wait(&((member *)impl)->t->bar);
    return 0;
}

static const pile__comm_ops team_ops = {
    .name = "threads",
    .open = team_open,
    .close = team_close,
    .allreduce = team_allreduce,
    .reduce_scatter = team_reduce_scatter,
    .all_gather = team_all_gather,
    .broadcast = team_broadcast,
    .allreduce_f64 = team_allreduce_f64,
    .allreduce_i64 = team_allreduce_i64,
    .broadcast_bytes = team_broadcast_bytes,
    .barrier = team_barrier,
};

/* ------------------------------------------------------------ a run */

static int32_t g_tokens[ROWS * T], g_targets[ROWS * T];
/* The key biases (c_attn.bias[C, 2C) of each layer): their gradient is
 * zero in exact arithmetic (softmax does not change when every key's
 * score moves by q . b), so what they get is rounding noise, which AdamW
 * turns into steps of the learning rate's size and of either sign: no two
 * summation orders agree on them. The bit-for-bit comparisons include
 * them; the ones between different orders leave them out. */
static unsigned char *g_exclude;

static int find_key_biases(pile_err *err)
{
    pile_backend *be = NULL;
    pile_model *m = NULL;
    pile_model_config mc = {V, NPOS, NL, NH, C, 0.0f, PILE_RECOMPUTE_NONE, PILE_DTYPE_F32};
    int rc = pile_backend_open(&be, "cpu", 1, err);
    if (rc == 0) rc = pile_model_create(&m, be, &mc, 1, T, err);
    if (rc == 0 && !(g_exclude = calloc(pile_model_flat_size(m), 1))) rc = PILE_ENOMEM;
    for (size_t i = 0; rc == 0 && i < pile_model_tensor_count(m); i++) {
        const pile_tensor_info *ti = pile_model_tensor(m, i);
        const char *suffix = strstr(ti->name, ".attn.c_attn.bias");
        if (suffix && !suffix[17]) memset(g_exclude + ti->offset + C, 1, C);
    }
    pile_model_free(m);
    pile_backend_close(be);
    return rc;
}

static void make_data(void)
{
    pile_test_rng_state = 11;
    for (int i = 0; i < ROWS * T; i++) g_tokens[i] = (int32_t)(pile_test_rng() % V);
    for (int i = 0; i < ROWS * T; i++) g_targets[i] = (i + 1) % T ? g_tokens[i + 1] : (int32_t)(pile_test_rng() % V);
    g_targets[5] = -1; /* one position without a target */
}

typedef struct run_cfg {
    int world;        /* 0: no communicator (one rank) */
    int stage;
    int offload;      /* 1: the optimizer; 2: the parameters too (stage 3) */
    size_t bucket;
    int micro;        /* micro-batches per rank per step */
    pile_dtype emulate;
    int first, end;   /* the steps it runs: [first, end); 0, 0: all */
    int no_prefetch;  /* stage 3: no unit gathered ahead */
    const char *load; /* a checkpoint folder to resume from first, or NULL */
    const char *save; /* a checkpoint folder to save at the end, or NULL */
    pile_comm *ext;   /* a communicator between processes (--ranks), or NULL */
    int overlap;      /* collectives on the communicator's thread (not with ext) */
    int device;       /* the model on the devsim backend, the "devsim" communicator over the team; 2:
                         devsim16, storing the parameters in emulate's dtype */
    size_t chunk;     /* offload to devsim: the step in chunks of this many elements (0: the default) */
} run_cfg;

typedef struct rank_out {
    int rc;
    pile_err err;
    double loss[STEPS];
    float *params;    /* the model's compute parameters at the end, flat */
    double step_bytes;/* pile_optim_comm_bytes per step, over the parameters' bytes */
    uint64_t overlap; /* pile_optim_overlap_bytes at the end */
    size_t n, lo, shard;
} rank_out;

typedef struct rank_job {
    const run_cfg *cfg;
    int rank;
    rank_out *out;
} rank_job;

#define TRY(expr)                             \
    do {                                      \
        if ((o->rc = (expr)) < 0) goto done;  \
    } while (0)

/* One rank's training: its slice of the global batch in cfg->micro
 * micro-batches, the gradient scaled by one over the global token count,
 * the loop's reduction (pile_optim_reduce_gradients, then the loss and the
 * norm's partial sums in one allreduce), AdamW with clipping. */
static void rank_main(void *arg)
{
    rank_job *job = arg;
    const run_cfg *cfg = job->cfg;
    rank_out *o = job->out;
    pile_err *err = &o->err;
    tl_rank = job->rank;
    const int W = cfg->world ? cfg->world : 1;
    pile_comm *comm = NULL;
    pile_backend *be = NULL, *off = NULL;
    pile_model *m = NULL;
    pile_optim *opt = NULL;
    if (cfg->ext) comm = cfg->ext;
    else if (cfg->world) TRY(pile__comm_open_ops(&comm, &team_ops, NULL, err));
    if (cfg->device && comm && comm != cfg->ext) {
        /* the team on device memory, as "devsim" is "mpi" on it: a devsim
         * backend's tensors only, their collectives queued on its comm
         * stream (comm_devsim.c) */
        pile_comm *team = comm;
        comm = NULL;
        TRY(pile__comm_open_over(&comm, &pile__comm_devsim_ops, team, pile_comm_rank(team), pile_comm_world_size(team),
                                 err));
    }
    /* on device memory the optimizer overlaps on the comm stream (no thread), as the trainer does */
    if (cfg->overlap && comm != cfg->ext && !cfg->device) TRY(pile_comm_thread_start(comm, err));
    TRY(pile_backend_open(&be, cfg->device == 2 ? "devsim16" : cfg->device ? "devsim" : "cpu", 1, err));
    /* devsim16 stores 16 bits as a device does: nothing to emulate */
    const int store16 = cfg->device == 2 && cfg->emulate != PILE_DTYPE_F32;
    if (cfg->emulate != PILE_DTYPE_F32 && !store16) TRY(pile_backend_set_emulation(be, cfg->emulate, err));
    if (cfg->offload) TRY(pile_backend_open(&off, "cpu", 1, err));
    if (cfg->offload == 2 && cfg->emulate != PILE_DTYPE_F32) TRY(pile_backend_set_emulation(off, cfg->emulate, err));
    const int rows = ROWS / W, mb = rows / cfg->micro;
    pile_model_config mc = {V, NPOS, NL, NH, C, 0.0f, PILE_RECOMPUTE_NONE, store16 ? cfg->emulate : PILE_DTYPE_F32};
    TRY(pile_model_create(&m, be, &mc, mb, T, err));
    pile_model_init(m, 3);
    pile_adamw_config ac = {0.9f, 0.95f, 1e-8f, 0.1f, 0};
    pile_optim_zero z = {cfg->stage,   comm, off, cfg->bucket, cfg->offload == 2, cfg->no_prefetch ? 0 : SIZE_MAX,
                         cfg->overlap, cfg->chunk};
    TRY(pile_optim_create_zero(&opt, m, &ac, &z, err));
    if (store16) {
        /* the master weights take the unrounded draws, as the trainer
         * puts them (and an emulating backend keeps them) */
        const size_t n = pile_model_flat_size(m);
        float *init = malloc(n * sizeof *init);
        if (!init) TRY(pile_err_set(err, PILE_ENOMEM, "out of memory"));
        pile_model_init_values(m, 3, init);
        o->rc = pile_optim_put(opt, PILE_OPTIM_MASTER, init, 0, n, err);
        free(init);
        TRY(o->rc);
        TRY(pile_optim_update_model(opt, err));
    }
    int64_t tokens = 0;
    for (int i = 0; i < ROWS * T; i++) tokens += g_targets[i] >= 0;
    if (cfg->load) TRY(pile_checkpoint_load(cfg->load, m, opt, NULL, err));
    const int end = cfg->end ? cfg->end : STEPS;
    const uint64_t bytes0 = pile_optim_comm_bytes(opt);
    for (int s = cfg->first; s < end; s++) {
        pile_optim_zero_grad(opt);
        double sums[2] = {0.0, 0.0};
        for (int k = 0; k < cfg->micro; k++) {
            const size_t at = ((size_t)job->rank * (size_t)rows + (size_t)k * (size_t)mb) * T;
            pile_batch b = {mb, T, g_tokens + at, g_targets + at, NULL};
            pile_fwd_stats st;
            TRY(pile_model_forward(m, &b, 1, 0, 1.0f / (float)tokens, &st, err));
            pile_optim_begin_backward(opt, k == cfg->micro - 1);
            TRY(pile_model_backward(m, pile_optim_grads(opt), err));
            TRY(pile_optim_backward_done(opt, err));
            sums[0] += st.loss_sum;
        }
        TRY(pile_optim_reduce_gradients(opt, &sums[1], err));
        if (comm) TRY(pile_comm_allreduce_f64(comm, sums, 2, PILE_COMM_SUM, err));
        o->loss[s] = sums[0] / (double)tokens;
        /* a clipping threshold that the first steps' norms exceed */
        TRY(pile_optim_step(opt, sqrt(sums[1]), 0.5f, 3e-2f, err));
    }
    o->n = pile_model_flat_size(m);
    o->step_bytes = (double)(pile_optim_comm_bytes(opt) - bytes0) / (end - cfg->first) / (double)(o->n * 4);
    o->overlap = pile_optim_overlap_bytes(opt);
    if (cfg->save) {
        pile_train_state st;
        memset(&st, 0, sizeof st);
        st.step = end;
        st.loss_scale = 1.0;
        strcpy(st.tokenizer_spec, "bytes");
        TRY(pile_checkpoint_save_ranks(cfg->save, m, opt, 1, &st, "{}", NULL, comm, err));
    }
    pile_optim_shard(opt, &o->lo, &o->shard);
    o->params = malloc(o->n * sizeof *o->params);
    if (!o->params) o->rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
    else TRY(pile_optim_gather_params(opt, o->params, err));
done:
    pile_optim_free(opt);
    pile_model_free(m);
    pile_backend_close(off);
    pile_backend_close(be);
    if (comm != cfg->ext) pile_comm_close(comm);
}

/* Runs cfg on its ranks (threads); out[0..world) filled. 0 when every
 * rank succeeded, else the first failure is printed. */
static int run(const run_cfg *cfg, rank_out out[MAXW])
{
    const int W = cfg->world ? cfg->world : 1;
    memset(out, 0, sizeof(rank_out) * MAXW);
    g_team.world = W;
    if (uv_barrier_init(&g_team.bar, (unsigned)W) != 0) return -1;
    uv_thread_t th[MAXW];
    rank_job jobs[MAXW];
    for (int r = 0; r < W; r++) {
        jobs[r] = (rank_job){cfg, r, &out[r]};
        if (uv_thread_create(&th[r], rank_main, &jobs[r]) != 0) abort();
    }
    for (int r = 0; r < W; r++) uv_thread_join(&th[r]);
    uv_barrier_destroy(&g_team.bar);
    for (int r = 0; r < W; r++) {
        if (out[r].rc < 0) {
            printf("# rank %d of %d (stage %d): %s\n", r, W, cfg->stage, out[r].err.msg);
            return -1;
        }
    }
    return 0;
}

static void free_out(rank_out out[MAXW])
{
    for (int r = 0; r < MAXW; r++) free(out[r].params);
}

/* How far weights a are from b, the key biases left out: *norm =
 * ||a - b|| / ||b|| and *elem = the largest |a - b| / max(|a|, |b|,
 * floor) (the floor keeps values near zero from dividing by nothing). */
static void weights_rel(const float *a, const float *b, size_t n, double floor, double *norm, double *elem)
{
    double worst = 0.0, nb = 0.0, nd = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (g_exclude[i]) continue;
        double x = a[i], y = b[i], d = fabs(x - y) / fmax(fmax(fabs(x), fabs(y)), floor);
        nb += y * y;
        nd += (x - y) * (x - y);
        if (!(d <= worst)) worst = d;
    }
    *norm = sqrt(nd / nb);
    *elem = worst;
}

/* The largest relative difference of the losses of steps [from, STEPS). */
static double loss_rel(const rank_out *got, const rank_out *want, int from)
{
    double worst = 0.0;
    for (int s = from; s < STEPS; s++) {
        double d = fabs(got->loss[s] - want->loss[s]) / fabs(want->loss[s]);
        if (!(d <= worst)) worst = d;
    }
    return worst;
}

/* Every rank of a run holds the same parameters, and the shards cover
 * [0, n) once: rank r's starts at r x shard, shard = ceil(n / world). */
static void check_ranks(const rank_out *out, int W)
{
    for (int r = 1; r < W; r++) ASSERT_MEM_EQ(out[r].params, out[0].params, out[0].n * sizeof(float));
    if (out[0].shard == out[0].n) return; /* stage 0: replicated */
    for (int r = 1; r < W; r++) ASSERT(out[r].lo == out[r - 1].lo + out[r - 1].shard);
    ASSERT(out[W - 1].lo < out[0].n && out[W - 1].lo + out[W - 1].shard >= out[0].n);
}

/* Runs cfg and compares its weights and its losses from step cfg->first
 * on with want's: bit for bit, or within 1e-5 relative (the losses each,
 * the weights as a whole; AdamW divides each gradient by its own running
 * size, so an element whose gradient is small moves by a rounding
 * difference's worth more: each element within 1e-4, measured 3e-5 at
 * most). */
static uint64_t g_overlap; /* the last check_run's pile_optim_overlap_bytes (rank 0) */

static void check_run(const char *name, const run_cfg *cfg, const rank_out *want, int bits)
{
    TEST(name);
    rank_out got[MAXW];
    g_overlap = 0;
    if (run(cfg, got) == 0) {
        g_overlap = got[0].overlap;
        check_ranks(got, cfg->world ? cfg->world : 1);
        const int from = cfg->first;
        if (bits) {
            ASSERT_MEM_EQ(got[0].params, want[0].params, want[0].n * sizeof(float));
            ASSERT_MEM_EQ(got[0].loss + from, want[0].loss + from, sizeof(double) * (size_t)(STEPS - from));
        } else {
            double dn, de, dl = loss_rel(&got[0], &want[0], from);
            weights_rel(got[0].params, want[0].params, want[0].n, 1e-2, &dn, &de);
            printf("# losses within %.2e relative, weights %.2e (each %.2e)\n", dl, dn, de);
            ASSERT(dl <= 1e-5);
            ASSERT(dn <= 1e-5);
            ASSERT(de <= 1e-4);
        }
    } else {
        ASSERT(!"run failed");
    }
    free_out(got);
}

static void exact(const char *name, const run_cfg *cfg, const rank_out *want) { check_run(name, cfg, want, 1); }
static void close_to(const char *name, const run_cfg *cfg, const rank_out *want) { check_run(name, cfg, want, 0); }

/* TEST keeps the name's pointer until the case ends: one buffer each. */
static char names[64][160];
static int n_names;
#define NAME(...) (snprintf(names[n_names % 64], sizeof names[0], __VA_ARGS__), names[n_names++ % 64])

/* A run of cfg resumed from `load` for the second half of the steps,
 * against `want` (an uninterrupted run). */
static void resumed(const char *name, run_cfg cfg, const char *load, const rank_out *want, int bits)
{
    cfg.first = STEPS / 2;
    cfg.end = 0;
    cfg.load = load;
    cfg.save = NULL;
    check_run(name, &cfg, want, bits);
}

/* Runs the first half of cfg's steps and saves into dir: 1 when it did. */
static int save_half(const char *name, run_cfg cfg, const char *dir)
{
    TEST(name);
    rank_out out[MAXW];
    cfg.end = STEPS / 2;
    cfg.save = dir;
    int ok = run(&cfg, out) == 0;
    ASSERT(ok);
    free_out(out);
    return ok;
}

/* Checkpoints of sharded runs: the ranks' shard files, written in the
 * folder before it is sealed, regrouped for another world size or stage
 * (and a stage-0 checkpoint's consolidated moments cut into shards). */
static void test_checkpoints(void)
{
    char root[256], dir[5][300];
    TEST("checkpoints: a folder for the runs");
    if (!pile_test_tmpdir(root, sizeof root, "zero")) {
        ASSERT(!"mkdtemp");
        return;
    }
    for (int i = 0; i < 5; i++) snprintf(dir[i], sizeof dir[i], "%s/ck%d", root, i);
    rank_out two[MAXW], four[MAXW];
    const run_cfg z2 = {2, 2, 1, 64, 1, PILE_DTYPE_F32, 0, 0, 0, NULL, NULL, NULL, 0, 0, 0};
    const run_cfg z1 = {4, 1, 0, 0, 1, PILE_DTYPE_F32, 0, 0, 0, NULL, NULL, NULL, 0, 0, 0};
    int ok = run(&z2, two) == 0 && run(&z1, four) == 0;
    ASSERT(ok);
    ok = ok && save_half("checkpoints: 4 ranks at stage 1 save half way: every rank's shard file in the sealed folder",
                         z1, dir[0]);
    char path[400];
    for (int r = 0; ok && r < 4; r++) {
        snprintf(path, sizeof path, "%s/optimizer-%05d-of-00004.safetensors", dir[0], r);
        ASSERT(access(path, F_OK) == 0);
    }
    snprintf(path, sizeof path, "%s/optimizer.safetensors", dir[0]);
    ASSERT(access(path, F_OK) != 0);
    pile_err err_rec, *err = &err_rec;
    ASSERT_OK(pile_checkpoint_verify(dir[0], err), err); /* checksums.json lists the shards */
    if (ok) {
        resumed("checkpoints: 4 ranks, stage 1 -> 4 ranks, stage 1: the uninterrupted run bit for bit", z1, dir[0],
                four, 1);
        resumed("checkpoints: 4 ranks, stage 1 -> 2 ranks, stage 2, offloaded: the 2-rank run within 1e-5", z2,
                dir[0], two, 0);
        if (save_half("checkpoints: 2 ranks at stage 2 save half way", z2, dir[1])) {
            resumed("checkpoints: 2 ranks, stage 2 -> 2 ranks, stage 2: the uninterrupted run bit for bit", z2,
                    dir[1], two, 1);
            resumed("checkpoints: 2 ranks, stage 2 -> 4 ranks, stage 1: the 4-rank run within 1e-5", z1, dir[1],
                    four, 0);
        }
        /* stage 0 writes optimizer.safetensors whole; 4 shards read it */
        run_cfg z0 = z1, z3 = z1;
        z0.stage = 0;
        z3.stage = 3;
        z3.offload = 2;
        if (save_half("checkpoints: 4 ranks at stage 0 save half way (consolidated moments)", z0, dir[2])) {
            resumed("checkpoints: 4 ranks, stage 0 -> 4 ranks, stage 1: the 4-rank stage 1 run bit for bit", z1,
                    dir[2], four, 1);
            resumed("checkpoints: 4 ranks, stage 0 -> 4 ranks, stage 3 offloaded: the 4-rank stage 1 run bit for "
                    "bit",
                    z3, dir[2], four, 1);
            /* loaded on devsim ranks: the regrouped shards put through the
             * model's backend, the team on its memory */
            run_cfg d3 = z3;
            d3.device = 1;
            d3.offload = 0;
            resumed("checkpoints: 4 ranks, stage 0 -> 4 devsim ranks, stage 3: the 4-rank stage 1 run bit for bit",
                    d3, dir[2], four, 1);
        }
        /* saved on devsim ranks: the master weights gathered through the
         * model's backend */
        run_cfg d1 = z1;
        d1.device = 1;
        if (save_half("checkpoints: 4 devsim ranks at stage 1 save half way", d1, dir[4]))
            resumed("checkpoints: 4 devsim ranks, stage 1 -> 4 ranks, stage 1: the uninterrupted run bit for bit", z1,
                    dir[4], four, 1);
        z3.world = 2;
        if (save_half("checkpoints: 2 ranks at stage 3 save half way", z3, dir[3]))
            resumed("checkpoints: 2 ranks, stage 3 -> 4 ranks, stage 1: the 4-rank run within 1e-5", z1, dir[3],
                    four, 0);
        /* rank 0 cannot make the folder: no rank writes, every rank fails */
        TEST("checkpoints: a save rank 0 cannot make fails on every rank, nothing written");
        snprintf(path, sizeof path, "%s/file", root);
        FILE *f = fopen(path, "w");
        ASSERT(f != NULL);
        if (f) fclose(f);
        snprintf(path, sizeof path, "%s/file/ck", root);
        run_cfg bad = z2;
        bad.end = STEPS / 2;
        bad.save = path;
        rank_out got[MAXW];
        ASSERT(run(&bad, got) < 0);
        ASSERT(strstr(got[0].err.msg, "file/ck") != NULL);
        ASSERT(strstr(got[1].err.msg, "rank 0 could not write checkpoint") != NULL);
        free_out(got);
        /* a shard file missing: refused, named */
        snprintf(path, sizeof path, "%s/optimizer-00002-of-00004.safetensors", dir[0]);
        TEST("checkpoints: a missing shard file refused, named");
        ASSERT(unlink(path) == 0);
        run_cfg miss = z2;
        miss.load = dir[0];
        ASSERT(run(&miss, got) < 0);
        ASSERT(strstr(got[0].err.msg, "optimizer-00002-of-00004.safetensors") != NULL);
        free_out(got);
    }
    free_out(two);
    free_out(four);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) printf("# could not remove %s\n", root);
}

/* The collectives' payload per step against the ZeRO paper's (section
 * 7): 2x the parameters at stages 0 to 2 (an allreduce; a reduce-scatter
 * and an all-gather), about 3x at stage 3 (the gathers before the forward
 * and the backward, the reduce-scatter); the tiny model's embeddings,
 * gathered twice in the forward (the tied output), add a little. */
static void test_bytes(void)
{
    for (int stage = 0; stage <= 3; stage++) {
        TEST(NAME("bytes communicated per step at stage %d, 4 ranks: %s the parameters'", stage,
                  stage < 3 ? "2x" : "about 3x"));
        const run_cfg cfg = {4, stage, 0, 0, 1, PILE_DTYPE_F32, 0, 0, 0, NULL, NULL, NULL, 0, 0, 0};
        rank_out out[MAXW];
        if (run(&cfg, out) == 0) {
            /* stages 1 to 3 pad the flat buffer to a multiple of 4 */
            const double pad = (double)(out[0].shard * 4) / (double)out[0].n;
            const double x = out[0].step_bytes;
            printf("# %.4f x the parameters' bytes\n", x);
            if (stage == 0) ASSERT(x == 2.0);
            else if (stage < 3) ASSERT(fabs(x - 2.0 * pad) < 1e-12);
            else ASSERT(x > 2.9 && x < 3.3);
            for (int r = 1; r < 4; r++) ASSERT(out[r].step_bytes == x);
        } else {
            ASSERT(!"run failed");
        }
        free_out(out);
    }
}

/* Under mpirun (zero_ranks.sh): each process is a rank of a real "mpi"
 * communicator; every stage and offload against one rank computed in this
 * process, within 1e-5 (Open MPI's allreduce and reduce-scatter may add
 * in different orders, so stages need not agree bit for bit here; each
 * line says whether they did). One line "rank R: ok" or the failures, per
 * rank. */
static int main_ranks(void)
{
    pile_err err;
    pile_comm *comm = NULL;
    if (pile_comm_open_auto(&comm, NULL, &err) < 0) {
        printf("# %s\n", err.msg);
        return 1;
    }
    const int W = pile_comm_world_size(comm), R = pile_comm_rank(comm);
    tl_rank = R;
    rank_out one = {0}, got = {0};
    const run_cfg single = {0, 0, 0, 0, 1, PILE_DTYPE_F32, 0, 0, 0, NULL, NULL, NULL, 0, 0, 0};
    run_cfg d = {W, 0, 0, 0, 1, PILE_DTYPE_F32, 0, 0, 0, NULL, NULL, comm, 0, 0, 0};
    rank_job j1 = {&single, 0, &one};
    rank_main(&j1);
    int bad = one.rc < 0;
    static const int cases[][3] = {{0, 0, 0}, {1, 0, 0}, {1, 1, 0}, {2, 0, 0}, {2, 1, 37}, {3, 0, 0}, {3, 2, 0}};
    for (size_t k = 0; !bad && k < sizeof cases / sizeof cases[0]; k++) {
        d.stage = cases[k][0];
        d.offload = cases[k][1];
        d.bucket = (size_t)cases[k][2];
        rank_job j = {&d, R, &got};
        rank_main(&j);
        double dn = 1, de = 1, dl = 1;
        if (got.rc == 0) {
            weights_rel(got.params, one.params, one.n, 1e-2, &dn, &de);
            dl = loss_rel(&got, &one, 0);
        }
        const int fine = got.rc == 0 && dn <= 1e-5 && de <= 1e-4 && dl <= 1e-5;
        printf("# rank %d of %d, stage %d offload %d against one rank: losses %.2e, weights %.2e (each %.2e)%s\n", R,
               W, d.stage, d.offload, dl, dn, de, got.rc < 0 ? got.err.msg : fine ? "" : ": too far");
        bad |= !fine;
        free(got.params);
        got.params = NULL;
    }
    printf("rank %d: %s (mpi, %d ranks)\n", R, bad ? "FAILED" : "ok", W);
    free(one.params);
    pile_comm_close(comm);
    return bad;
}

int main(int argc, char **argv)
{
    make_data();
    if (argc > 1 && !strcmp(argv[1], "--ranks")) {
        pile_err err0;
        if (find_key_biases(&err0) < 0) return 1;
        int rc = main_ranks();
        free(g_exclude);
        return rc;
    }
    pile_err err0;
    if (find_key_biases(&err0) < 0) {
        printf("# %s\nnot ok 1 - the model's tensor table\n1..1\n", err0.msg);
        return 1;
    }
    rank_out ref[MAXW], ref_bf16[MAXW];
    TEST("one rank, stage 0: the reference trains");
    const run_cfg base = {0, 0, 0, 0, 1, PILE_DTYPE_F32, 0, 0, 0, NULL, NULL, NULL, 0, 0, 0};
    int ok = run(&base, ref) == 0;
    ASSERT(ok);
    if (ok) ASSERT(ref[0].loss[STEPS - 1] < ref[0].loss[0]);
    if (!ok) return TEST_DONE();

    /* one rank, no communicator: the sharded code paths equal stage 0 */
    run_cfg c = base;
    c.stage = 1;
    exact("one rank: stage 1 equals stage 0 bit for bit", &c, ref);
    c.offload = 1;
    exact("one rank: stage 1 with the optimizer offloaded equals stage 0 bit for bit", &c, ref);
    c.stage = 2;
    c.offload = 0;
    exact("one rank: stage 2 equals stage 0 bit for bit", &c, ref);
    c.bucket = 100;
    c.offload = 1;
    exact("one rank: stage 2 in buckets of 100, offloaded, equals stage 0 bit for bit", &c, ref);
    c.stage = 3;
    c.offload = 2;
    exact("one rank: stage 3, parameters and optimizer offloaded, equals stage 0 bit for bit", &c, ref);

    for (int W = 2; W <= 4; W += 2) {
        rank_out zero0[MAXW];
        run_cfg d = base;
        d.world = W;
        close_to(NAME("%d ranks, stage 0: as one rank on the same global batch", W), &d, ref);
        TEST("(the stage 0 run the stages are compared with)");
        if (run(&d, zero0) < 0) {
            ASSERT(!"run failed");
            free_out(zero0);
            continue;
        }
        static const struct {
            int stage, offload;
            size_t bucket;
        } exact_cases[] = {{1, 0, 0}, {1, 1, 0}, {2, 0, 0}, {2, 1, 0}, {2, 0, 37}, {2, 1, 1000},
                           {3, 0, 0}, {3, 1, 0}, {3, 2, 0}, {3, 2, 37}};
        d.no_prefetch = 1;
        d.stage = 3;
        exact(NAME("%d ranks, stage 3 without prefetch: stage 0's steps bit for bit", W), &d, zero0);
        d.no_prefetch = 0;
        static const char *const where[] = {"", ", optimizer offloaded", ", parameters and optimizer offloaded"};
        for (size_t k = 0; k < sizeof exact_cases / sizeof exact_cases[0]; k++) {
            d.stage = exact_cases[k].stage;
            d.offload = exact_cases[k].offload;
            d.bucket = exact_cases[k].bucket;
            exact(NAME("%d ranks, stage %d%s%s: stage 0's steps bit for bit", W, d.stage, where[d.offload],
                       d.bucket ? ", in buckets" : ""),
                  &d, zero0);
            /* the model on the devsim backend, the communicator on its
             * memory; an offloaded step in chunks of 100 elements, which
             * cut tensors and shards anywhere (staged uploads: poisoned
             * until waited for) */
            d.device = 1;
            d.chunk = d.offload == 1 ? 100 : 0;
            exact(NAME("%d devsim ranks, stage %d%s%s%s: stage 0's steps bit for bit", W, d.stage, where[d.offload],
                       d.bucket ? ", in buckets" : "", d.chunk ? ", stepped in chunks of 100" : ""),
                  &d, zero0);
            d.device = 0;
            d.chunk = 0;
        }
        /* stages 2 and 3 sum each micro-batch over the ranks before the next */
        d.micro = 2;
        for (int s = 0; s <= 3; s++) {
            d.stage = s;
            d.offload = s == 3 ? 2 : s > 0;
            d.bucket = s >= 2 ? 64 : 0;
            close_to(NAME("%d ranks, stage %d%s, 2 micro-batches each: as one rank", W, s, s ? ", offloaded" : ""),
                     &d, ref);
        }
        /* the communicator's thread (overlap): gradient buckets reduced as
         * the backward finishes their layers, stage 3's gathers ahead of
         * the compute; each stage takes the blocking run's steps bit for bit */
        static const int overlap_cases[][2] = {{0, 0}, {1, 0}, {1, 1}, {2, 0}, {2, 1}, {3, 0}, {3, 2}};
        for (size_t k = 0; k < sizeof overlap_cases / sizeof overlap_cases[0]; k++) {
            rank_out blocking[MAXW];
            d.stage = overlap_cases[k][0];
            d.offload = overlap_cases[k][1];
            d.bucket = 37;
            d.overlap = 0;
            TEST(NAME("(%d ranks, stage %d%s in buckets of 37, 2 micro-batches each, blocking)", W, d.stage,
                      where[d.offload]));
            if (run(&d, blocking) == 0) {
                ASSERT_EQ(blocking[0].overlap, 0);
                d.overlap = 1;
                exact(NAME("%d ranks, stage %d%s, overlapped: the blocking run's steps bit for bit", W, d.stage,
                           where[d.offload]),
                      &d, blocking);
                /* buckets went to the thread during the backward; from
                 * stage 1 only those whose rank-0 piece lies above the
                 * embeddings can (optim.h), and on 4 ranks rank 0's
                 * quarter of this small model is all embeddings */
                const double per_step = (d.stage == 0 ? 2.0 : 1.0) * (d.stage >= 2 ? d.micro : 1) * 4.0 *
                                        (double)blocking[0].n; /* an allreduce counts twice */
                printf("# %.0f%% of the gradient bytes handed over during the backward\n",
                       100.0 * (double)g_overlap / (STEPS * per_step));
                if (W == 2 || d.stage == 0) ASSERT(g_overlap > 0);
                /* device memory: no thread, the buckets reduced on the
                 * comm stream as the backward produces them, packed and
                 * landed by the caller */
                d.device = 1;
                d.chunk = d.offload == 1 ? 100 : 0;
                exact(NAME("%d devsim ranks, stage %d%s, overlapped%s: the blocking run's steps bit for bit", W,
                           d.stage, where[d.offload], d.chunk ? ", stepped in chunks of 100" : ""),
                      &d, blocking);
                if (W == 2 || d.stage == 0) ASSERT(g_overlap > 0);
                d.device = 0;
                d.chunk = 0;
                d.overlap = 0;
            } else {
                ASSERT(!"run failed");
            }
            free_out(blocking);
        }
        free_out(zero0);
    }

    /* bf16 emulation: the offloaded master weights come up unrounded and
     * are rounded where stage 0 rounds them */
    TEST("bf16 emulation, 2 ranks, stage 0 (the comparison)");
    run_cfg e = base;
    e.world = 2;
    e.emulate = PILE_DTYPE_BF16;
    ok = run(&e, ref_bf16) == 0;
    ASSERT(ok);
    if (ok) {
        e.stage = 1;
        e.offload = 1;
        exact("bf16 emulation, 2 ranks, stage 1 offloaded: stage 0's steps bit for bit", &e, ref_bf16);
        e.stage = 2;
        exact("bf16 emulation, 2 ranks, stage 2 offloaded: stage 0's steps bit for bit", &e, ref_bf16);
        e.stage = 3;
        exact("bf16 emulation, 2 ranks, stage 3, optimizer offloaded: stage 0's steps bit for bit", &e, ref_bf16);
        e.offload = 2;
        exact("bf16 emulation, 2 ranks, stage 3, parameters offloaded: stage 0's steps bit for bit", &e, ref_bf16);
        /* an emulating device adds the gradients through host staging */
        e.device = 1;
        e.stage = 2;
        e.offload = 0;
        e.bucket = 37;
        exact("bf16 emulation, 2 devsim ranks, stage 2 in buckets: stage 0's steps bit for bit", &e, ref_bf16);
        e.overlap = 1;
        exact("bf16 emulation, 2 devsim ranks, stage 2 in buckets, overlapped: stage 0's steps bit for bit", &e,
              ref_bf16);
        /* bf16 parameters on the device: each chunk converted on the host
         * (the offload's staging) before it goes up */
        e.device = 2;
        e.offload = 1;
        e.bucket = 0;
        e.overlap = 0;
        for (int s = 1; s <= 3; s++) {
            e.stage = s;
            e.chunk = s == 1 ? 0 : 100;
            exact(NAME("bf16, 2 devsim16 ranks, stage %d, optimizer offloaded, stepped %s: stage 0's steps bit for "
                       "bit",
                       s, e.chunk ? "in chunks of 100" : "in one chunk"),
                  &e, ref_bf16);
        }
    }
    free_out(ref_bf16);

    test_checkpoints();
    test_bytes();

    TEST("refusals: stage 4, offload at stage 0 (DeepSpeed's rule), a communicator on device memory with host tensors");
    {
        pile_err err;
        pile_backend *be = NULL;
        pile_model *m = NULL;
        pile_optim *o = (pile_optim *)&err;
        pile_model_config mc = {V, NPOS, NL, NH, C, 0.0f, PILE_RECOMPUTE_NONE, PILE_DTYPE_F32};
        pile_adamw_config ac = {0.9f, 0.95f, 1e-8f, 0.1f, 0};
        if (pile_backend_open(&be, "cpu", 1, &err) == 0 && pile_model_create(&m, be, &mc, 1, T, &err) == 0) {
            pile_optim_zero z = {4, NULL, NULL, 0, 0, 0, 0, 0};
            ASSERT_EQ(pile_optim_create_zero(&o, m, &ac, &z, &err), PILE_EINVAL);
            ASSERT(o == NULL);
            ASSERT(strstr(err.msg, "stage 4") != NULL);
            z.stage = 0;
            z.offload = be;
            ASSERT_EQ(pile_optim_create_zero(&o, m, &ac, &z, &err), PILE_EINVAL);
            ASSERT(strstr(err.msg, "offload") != NULL);
            /* a communicator on device memory ("nccl") with the cpu backend's tensors */
            pile__comm_ops dev_ops = team_ops;
            dev_ops.name = "device";
            dev_ops.device_memory = 1;
            pile_comm *dc = NULL;
            tl_rank = 0;
            OK(pile__comm_open_ops(&dc, &dev_ops, NULL, &err), &err);
            ASSERT(dc && pile_comm_device_memory(dc));
            z.offload = NULL;
            z.comm = dc;
            ASSERT_EQ(pile_optim_create_zero(&o, m, &ac, &z, &err), PILE_EINVAL);
            ASSERT(o == NULL);
            ASSERT_STR_EQ(err.msg, "cannot reduce gradients in the cpu backend's memory: the 'device' communicator "
                                   "works on device memory");
            pile_comm_close(dc);
        } else {
            ASSERT(!"setup failed");
        }
        pile_model_free(m);
        pile_backend_close(be);
    }
    free_out(ref);
    free(g_exclude);
    return TEST_DONE();
}
