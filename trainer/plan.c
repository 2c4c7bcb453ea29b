/* The memory planner (plan.h): the bytes of every buffer a run holds, from
 * its settings alone. The CPU backend's rows repeat model.c's carve()
 * region by region (each rounded to 64 bytes as carve rounds it) and take
 * attention's sizes from the backend itself (attention_sizes, the one
 * place that asks it); tests/test_plan.c holds them to the backend's own
 * count, so a change there that the plan misses fails a test. The GPU
 * rows follow DeepSpeed's accounting of model states and its estimators'
 * arithmetic (DeepSpeed 0.19.8, runtime/zero/stage_1_and_2.py and
 * stage3.py), written here from the formulas
 * (tests/reference/plan_ref.py compares them with DeepSpeed's functions),
 * and the CUDA backend's intended layout for the rest, its attention and
 * scratch from cuda/cuda_sizes.h, which the backend sizes them from too. */
#include "plan.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_sizes.h"
#include "optim.h"

/* What a CPU run holds beyond its buffers: the program, its libraries,
 * OpenMP's threads and OpenBLAS's packing buffers, glibc's arenas: an
 * allowance, not measured alone (whole plans of GPT-2 runs land within
 * 0.1 GiB of their measured peaks: README, "Will it fit?"). */
#define CPU_RUNTIME_BASE ((uint64_t)64 << 20)
#define CPU_RUNTIME_PER_THREAD ((uint64_t)8 << 20)
/* A GPU process: cuBLASLt's workspace (32 MiB per stream on Hopper) and
 * the CUDA context with its kernels and libraries, an assumed figure
 * (typically 300-600 MiB; no GPU has measured this code). */
#define GPU_CUBLASLT_WORKSPACE ((uint64_t)32 << 20)
#define GPU_CONTEXT ((uint64_t)512 << 20)
/* DeepSpeed's default reduce_bucket_size, in elements. */
#define DS_REDUCE_BUCKET 500000000ull
#define MAX_NODES 4096

/* --------------------------------------------------------- arithmetic */

static uint64_t add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }
static uint64_t mul(uint64_t a, uint64_t b) { return b && a > UINT64_MAX / b ? UINT64_MAX : a * b; }
/* One carved region: rounded up to 64 bytes as model.c's REGION rounds. */
static uint64_t region(uint64_t count, uint64_t elem) { return add(mul(count, elem), 63) / 64 * 64; }
static uint64_t umax(uint64_t a, uint64_t b) { return a > b ? a : b; }

/* int(k * P / G) as Python computes it: the exact product, then a
 * correctly rounded quotient (IEEE division of two exact doubles is one,
 * while both stay below 2^53), truncated. */
static uint64_t ds_div(uint64_t k, uint64_t p, uint64_t g) { return (uint64_t)((double)(k * p) / (double)g); }

void pile_plan_deepspeed_zero2(uint64_t total_params, int gpus_per_node, int nodes, int cpu_offload,
                               double buffer_factor, uint64_t *cpu, uint64_t *gpu)
{
    const uint64_t P = total_params, gpn = (uint64_t)gpus_per_node, G = gpn * (uint64_t)nodes;
    if (cpu_offload) {
        *gpu = 2 * P;
        *cpu = (uint64_t)((double)(P * umax(4 * G, 16)) * buffer_factor);
    } else {
        /* 2 bytes of 16-bit parameters kept whole; 18 partitioned: 16-bit
         * and fp32 gradients, fp32 master weights, two fp32 moments */
        *gpu = 2 * P + ds_div(18, P, G);
        /* an fp32 copy of the model per process while it loads */
        *cpu = (uint64_t)((double)(P * 4 * gpn) * buffer_factor);
    }
}

void pile_plan_deepspeed_zero3(uint64_t total_params, uint64_t largest_layer_params, int gpus_per_node, int nodes,
                               int cpu_offload, int cpu_offload_params, int zero_init, double buffer_factor,
                               uint64_t *cpu, uint64_t *gpu)
{
    const uint64_t P = total_params, gpn = (uint64_t)gpus_per_node, G = gpn * (uint64_t)nodes;
    const double per_node = 1.0 / (double)nodes;
    const uint64_t largest = 4 * largest_layer_params;
    double c;
    if (cpu_offload) {
        /* the node's share of the states (18 bytes with the 16-bit
         * parameters, 16 without), or without zero_init an fp32 copy of
         * the model per process while it loads, when that is more; the
         * comparison and product mix an integer and a float as Python does */
        const uint64_t state = cpu_offload_params ? 18 : 16;
        *gpu = cpu_offload_params ? largest : largest + ds_div(2, P, G);
        if (zero_init) {
            c = (double)(P * state) * per_node * buffer_factor;
        } else {
            const double share = (double)state * per_node;
            c = share > (double)(4 * gpn) ? (double)P * share * buffer_factor
                                          : (double)(P * 4 * gpn) * buffer_factor;
        }
    } else {
        *gpu = largest + ds_div(18, P, G);
        c = (double)((zero_init ? largest_layer_params : P) * 4 * gpn) * buffer_factor;
    }
    *cpu = (uint64_t)c;
}

/* ------------------------------------------------------------ names */

static const char *const offload_names[] = {"none", "optimizer", "all"};

int pile_plan_offload_parse(const char *name, pile_offload *out, pile_err *err)
{
    for (int i = 0; i < 3; i++) {
        if (name && !strcmp(name, offload_names[i])) {
            *out = (pile_offload)i;
            return 0;
        }
    }
    return pile_err_set(err, PILE_EINVAL, "unknown offload '%s' (choices: none, optimizer, all)", name ? name : "");
}

const char *pile_plan_offload_name(pile_offload o) { return (unsigned)o < 3 ? offload_names[o] : "?"; }

static const char *const row_keys[PILE_PLAN_ROWS] = {
    "parameters",      "gradients_16bit",   "gradients_fp32",   "master_weights", "moments",
    "gathered_layer",  "host_sizing",       "activations",      "recompute_set",  "attention",
    "embeddings",      "logits",            "backward_buffers", "attention_scratch", "op_scratch",
    "batch",           "zero_buffers",      "checkpoint_copies", "runtime",
};

const char *pile_plan_row_key(pile_plan_row r) { return (unsigned)r < PILE_PLAN_ROWS ? row_keys[r] : "?"; }

/* -------------------------------------------------------------- plan */

static int check(const pile_plan_settings *s, pile_err *err)
{
    PILE_RETURN_IF(s->n_layer < 1, err, PILE_EINVAL, "invalid n_layer %d", s->n_layer);
    PILE_RETURN_IF(s->n_head < 1, err, PILE_EINVAL, "invalid n_head %d", s->n_head);
    PILE_RETURN_IF(s->n_embd < 1 || s->n_embd % s->n_head != 0 || s->n_embd > INT_MAX / 4, err, PILE_EINVAL,
                   "invalid n_embd %d: must be a positive multiple of n_head %d", s->n_embd, s->n_head);
    PILE_RETURN_IF(s->vocab_size < 1 || s->vocab_size > INT_MAX - 63, err, PILE_EINVAL, "invalid vocab_size %d",
                   s->vocab_size);
    PILE_RETURN_IF(s->n_positions < 1, err, PILE_EINVAL, "invalid n_positions %d", s->n_positions);
    PILE_RETURN_IF(s->batch_size < 1, err, PILE_EINVAL, "invalid batch size %d", s->batch_size);
    PILE_RETURN_IF(s->seq_len < 1 || s->seq_len > s->n_positions, err, PILE_EINVAL,
                   "sequence length %d outside the model's 1..%d positions", s->seq_len, s->n_positions);
    PILE_RETURN_IF((int64_t)s->batch_size * s->seq_len > INT_MAX / 4, err, PILE_EINVAL,
                   "batch size %d x sequence length %d is too large", s->batch_size, s->seq_len);
    PILE_RETURN_IF((unsigned)s->recompute > PILE_RECOMPUTE_BLOCK, err, PILE_EINVAL, "invalid recompute mode %d",
                   (int)s->recompute);
    PILE_RETURN_IF((unsigned)s->precision > PILE_PRECISION_FP16, err, PILE_EINVAL, "invalid precision %d",
                   (int)s->precision);
    PILE_RETURN_IF(s->accumulation_steps < 0, err, PILE_EINVAL, "invalid accumulation_steps %d",
                   s->accumulation_steps);
    PILE_RETURN_IF(s->gpus < 0 || s->gpus > 1 << 16, err, PILE_EINVAL, "invalid number of GPUs per node %d",
                   s->gpus);
    PILE_RETURN_IF(s->nodes < 1 || s->nodes > 1 << 16, err, PILE_EINVAL, "invalid number of nodes %d", s->nodes);
    if (s->gpus == 0) {
        PILE_RETURN_IF(s->threads < 1, err, PILE_EINVAL, "invalid thread count %d", s->threads);
        PILE_RETURN_IF(!s->backend, err, PILE_EINVAL, "a plan for the CPU backend needs the backend");
        PILE_RETURN_IF(s->ranks < 0, err, PILE_EINVAL, "invalid number of ranks %d", s->ranks);
        PILE_RETURN_IF(s->local_ranks < 0 || s->local_ranks > (s->ranks > 1 ? s->ranks : 1), err, PILE_EINVAL,
                       "invalid number of ranks on this host %d (of %d)", s->local_ranks, s->ranks);
        PILE_RETURN_IF(s->ranks == 0 && (s->zero_stage != 0 || s->offload != PILE_OFFLOAD_NONE), err, PILE_EINVAL,
                       "the CPU backend runs one process: ZeRO, offload and nodes need --gpus");
        PILE_RETURN_IF(s->nodes != 1, err, PILE_EINVAL, "the CPU backend runs on one host: nodes need --gpus");
        PILE_RETURN_IF(s->zero_stage < 0 || s->zero_stage > 3, err, PILE_EINVAL, "ZeRO stage must be 0 to 3, not %d",
                       s->zero_stage);
        PILE_RETURN_IF((unsigned)s->offload > PILE_OFFLOAD_ALL, err, PILE_EINVAL, "invalid offload %d", (int)s->offload);
        PILE_RETURN_IF(s->offload && s->zero_stage < 1, err, PILE_EINVAL,
                       "offload of the optimizer needs ZeRO stage 1, 2 or 3, not %d", s->zero_stage);
        PILE_RETURN_IF(s->offload == PILE_OFFLOAD_ALL && s->zero_stage != 3, err, PILE_EINVAL,
                       "offload of the parameters needs ZeRO stage 3, not %d", s->zero_stage);
        return 0;
    }
    PILE_RETURN_IF(s->zero_stage < 0 || s->zero_stage > 3, err, PILE_EINVAL, "ZeRO stage must be 0 to 3, not %d",
                   s->zero_stage);
    PILE_RETURN_IF((unsigned)s->offload > PILE_OFFLOAD_ALL, err, PILE_EINVAL, "invalid offload %d", (int)s->offload);
    PILE_RETURN_IF(s->offload == PILE_OFFLOAD_OPTIMIZER && s->zero_stage < 1, err, PILE_EINVAL,
                   "offload of the optimizer needs ZeRO stage 1, 2 or 3, not %d", s->zero_stage);
    PILE_RETURN_IF(s->offload == PILE_OFFLOAD_ALL && s->zero_stage != 3, err, PILE_EINVAL,
                   "offload of the parameters needs ZeRO stage 3, not %d", s->zero_stage);
    return 0;
}

/* One layer's activation regions in model.c's carve(): the part recompute
 * block drops (LayerNorms, qkv, attention output, resid2), the MLP's two
 * [N, 4C] buffers recompute gelu drops, attention's saved state, and the
 * block's output resid3, which every mode keeps. */
typedef struct layer_parts {
    uint64_t base, mlp, att, out;
} layer_parts;

static layer_parts layer_parts_of(uint64_t N, uint64_t C, uint64_t saved, uint64_t a)
{
    const uint64_t NC = mul(N, C);
    layer_parts p;
    p.base = add(add(add(region(NC, a), region(N, 4)), add(region(N, 4), region(mul(3, NC), a))),
                 add(add(region(NC, a), region(NC, a)), add(add(region(NC, a), region(N, 4)), region(N, 4))));
    p.mlp = add(region(mul(4, NC), a), region(mul(4, NC), a));
    p.att = region(saved, 1);
    p.out = region(NC, a);
    return p;
}

static void layer_bytes_of(const layer_parts *lp, pile_recompute rc, uint64_t *layer, uint64_t *shared)
{
    const int own = rc != PILE_RECOMPUTE_BLOCK, own_mlp = rc == PILE_RECOMPUTE_NONE;
    *layer = add(add(own ? add(lp->base, lp->att) : 0, own_mlp ? lp->mlp : 0), lp->out);
    *shared = add(own ? 0 : add(lp->base, lp->att), rc != PILE_RECOMPUTE_NONE ? lp->mlp : 0);
}

/* What attention keeps for the backward per layer, and its scratch (one
 * for all layers): the CPU backend's own figures; on GPUs the CUDA
 * backend's (cuda/cuda_sizes.h, where attention.cu takes them from):
 * FlashAttention's log-sum-exp and the backward's D, each one fp32 per
 * row and head, its tiles living in shared memory. */
static void attention_sizes(const pile_plan_settings *s, uint64_t *saved, uint64_t *scratch)
{
    if (s->gpus == 0) {
        *saved = pile_backend_attention_saved_bytes(s->backend, s->batch_size, s->seq_len, s->n_embd, s->n_head);
        *scratch = pile_backend_attention_scratch_bytes(s->backend, s->batch_size, s->seq_len, s->n_embd, s->n_head);
    } else {
        *saved = pile__cuda_attention_saved_size(s->batch_size, s->seq_len, s->n_head);
        *scratch = pile__cuda_attention_scratch_size(s->batch_size, s->seq_len, s->n_head);
    }
}

/* The model states on GPUs, in DeepSpeed's accounting. The partitioned
 * bytes of a ZeRO stage are DeepSpeed's int(k P / G) in all, spread over
 * their rows by floor, the moments taking what the rounding leaves. */
static void gpu_states(const pile_plan_settings *s, pile_plan *p)
{
    const uint64_t P = p->params, G = (uint64_t)p->world, n = (uint64_t)s->nodes, LL = p->largest_layer_params;
    const int z = s->zero_stage, mixed = s->precision != PILE_PRECISION_FP32;
    const int off = s->offload != PILE_OFFLOAD_NONE, off_all = s->offload == PILE_OFFLOAD_ALL;
    uint64_t *g = p->gpu, *h = p->cpu;
    if (!mixed) {
        /* fp32: the parameters are the master copy; no 16-bit buffers.
         * Offloaded, the host keeps an fp32 copy of the partition to step. */
        g[PILE_PLAN_PARAMS] = z == 3 ? (off_all ? 0 : P * 4 / G) : 4 * P;
        g[PILE_PLAN_GRADS32] = off && z >= 2 ? 0 : z >= 2 ? P * 4 / G : 4 * P;
        g[PILE_PLAN_MOMENTS] = off ? 0 : z >= 1 ? P * 8 / G : 8 * P;
        g[PILE_PLAN_GATHERED] = z == 3 ? 8 * LL : 0;
        if (off) {
            h[PILE_PLAN_GRADS32] = 4 * P / n;
            h[PILE_PLAN_MASTER] = 4 * P / n;
            h[PILE_PLAN_MOMENTS] = 8 * P / n;
        }
        return;
    }
    if (z == 0) {
        g[PILE_PLAN_PARAMS] = 2 * P;
        g[PILE_PLAN_GRADS16] = 2 * P;
        g[PILE_PLAN_GRADS32] = 4 * P;
        g[PILE_PLAN_MASTER] = 4 * P;
        g[PILE_PLAN_MOMENTS] = 8 * P;
        return;
    }
    if (off) {
        /* the fp32 gradients, master weights and moments of the node's
         * ranks live in its memory; with offload all the 16-bit
         * parameters too */
        h[PILE_PLAN_GRADS32] = 4 * P / n;
        h[PILE_PLAN_MASTER] = 4 * P / n;
        h[PILE_PLAN_MOMENTS] = 8 * P / n;
        if (off_all) h[PILE_PLAN_PARAMS] = 2 * P / n;
    }
    if (z == 1 || z == 2) {
        g[PILE_PLAN_PARAMS] = 2 * P;
        /* stage 1 keeps the whole 16-bit gradients until the accumulation
         * ends; stage 2 reduce-scatters them as the backward goes */
        if (z == 1) g[PILE_PLAN_GRADS16] = 2 * P;
        if (off) return;
        uint64_t part = ds_div(z == 1 ? 16 : 18, P, G);
        if (z == 2) g[PILE_PLAN_GRADS16] = 2 * P / G;
        g[PILE_PLAN_GRADS32] = 4 * P / G;
        g[PILE_PLAN_MASTER] = 4 * P / G;
        g[PILE_PLAN_MOMENTS] = part - g[PILE_PLAN_GRADS16] * (z == 2) - g[PILE_PLAN_GRADS32] - g[PILE_PLAN_MASTER];
        return;
    }
    /* stage 3: everything partitioned; a layer's 16-bit parameters and
     * gradients gathered whole while it runs (the largest such: 4 bytes a
     * parameter); its 16-bit gradients go straight to the fp32 partition */
    g[PILE_PLAN_GATHERED] = 4 * LL;
    if (off_all) return;
    if (off) {
        g[PILE_PLAN_PARAMS] = ds_div(2, P, G);
        return;
    }
    uint64_t part = ds_div(18, P, G);
    g[PILE_PLAN_PARAMS] = 2 * P / G;
    g[PILE_PLAN_GRADS32] = 4 * P / G;
    g[PILE_PLAN_MASTER] = 4 * P / G;
    g[PILE_PLAN_MOMENTS] = part - g[PILE_PLAN_PARAMS] - g[PILE_PLAN_GRADS32] - g[PILE_PLAN_MASTER];
}

/* DeepSpeed's estimator for the stage: its host figure (per node) and
 * the option table its ..._all_cold prints. */
static void deepspeed_of(const pile_plan_settings *s, pile_plan *p)
{
    const uint64_t P = p->params, LL = p->largest_layer_params;
    const double f = PILE_PLAN_DS_BUFFER_FACTOR;
    const int off = s->offload != PILE_OFFLOAD_NONE, off_all = s->offload == PILE_OFFLOAD_ALL;
    p->n_ds_options = 0;
    if (s->zero_stage == 0) return;
    if (s->zero_stage < 3) {
        p->deepspeed_estimator = "estimate_zero2_model_states_mem_needs";
        pile_plan_deepspeed_zero2(P, s->gpus, s->nodes, off, f, &p->deepspeed_cpu, &p->deepspeed_gpu);
        for (int o = 1; o >= 0; o--) {
            pile_plan_ds_option *d = &p->ds_options[p->n_ds_options++];
            d->offload_optimizer = o;
            d->offload_param = 0;
            d->zero_init = -1;
            pile_plan_deepspeed_zero2(P, s->gpus, s->nodes, o, f, &d->cpu, &d->gpu);
        }
        return;
    }
    p->deepspeed_estimator = "estimate_zero3_model_states_mem_needs";
    pile_plan_deepspeed_zero3(P, LL, s->gpus, s->nodes, off, off_all, 1, f, &p->deepspeed_cpu, &p->deepspeed_gpu);
    /* in ..._all_cold's order */
    static const int opts[3][2] = {{1, 1}, {1, 0}, {0, 0}};
    for (int k = 0; k < 3; k++) {
        for (int zi = 1; zi >= 0; zi--) {
            pile_plan_ds_option *d = &p->ds_options[p->n_ds_options++];
            d->offload_optimizer = opts[k][0];
            d->offload_param = opts[k][1];
            d->zero_init = zi;
            pile_plan_deepspeed_zero3(P, LL, s->gpus, s->nodes, opts[k][0], opts[k][1], zi, f, &d->cpu, &d->gpu);
        }
    }
}

int pile_plan_compute(const pile_plan_settings *s, pile_plan *out, pile_err *err)
{
    memset(out, 0, sizeof *out);
    PILE_FORWARD_IF_ERR(check(s, err));
    pile_plan *p = out;
    const uint64_t C = (uint64_t)s->n_embd, L = (uint64_t)s->n_layer;
    const uint64_t V = (uint64_t)s->vocab_size, Tp = (uint64_t)s->n_positions;
    const uint64_t B = (uint64_t)s->batch_size, T = (uint64_t)s->seq_len, N = B * T, NC = N * C;
    const int gpu = s->gpus > 0;
    p->vocab_padded = pile_model_padded_vocab(s->vocab_size);
    const uint64_t Vp = (uint64_t)p->vocab_padded;

    /* model.c's tensor table: wte, wpe, per block two LayerNorms (2C
     * each), c_attn (3C^2 + 3C), attn.c_proj (C^2 + C), c_fc (4C^2 +
     * 4C), mlp.c_proj (4C^2 + C), then ln_f */
    p->block_params = add(mul(12, mul(C, C)), mul(13, C));
    p->params = add(add(mul(V, C), mul(Tp, C)), add(mul(L, p->block_params), 2 * C));
    p->params_allocated = add(p->params, mul(Vp - V, C));
    /* DeepSpeed's model_to_params: the most parameters one module owns
     * itself: wte (and the tied lm_head), wpe, or a block's c_fc */
    p->largest_layer_params = umax(umax(mul(V, C), mul(Tp, C)), add(mul(4, mul(C, C)), mul(4, C)));
    PILE_RETURN_IF(p->params > (1ull << 48), err, PILE_EINVAL,
                   "a model of %" PRIu64 " parameters is beyond what this planner counts", p->params);
    p->world = gpu ? s->gpus * s->nodes : 0;
    p->act_bytes = gpu && s->precision != PILE_PRECISION_FP32 ? 2 : 4;
    const uint64_t a = (uint64_t)p->act_bytes;

    uint64_t att_saved, att_scratch;
    attention_sizes(s, &att_saved, &att_scratch);
    const layer_parts lp = layer_parts_of(N, C, att_saved, a);
    for (int r = 0; r < 3; r++) layer_bytes_of(&lp, (pile_recompute)r, &p->layer_bytes[r], &p->shared_bytes[r]);
    const int block = s->recompute == PILE_RECOMPUTE_BLOCK;
    uint64_t *col = gpu ? p->gpu : p->cpu;
    col[PILE_PLAN_ATT_SCRATCH] = region(att_scratch, 1);
    col[PILE_PLAN_ACTIVATIONS] = mul(L, p->layer_bytes[s->recompute] - (block ? 0 : lp.att));
    col[PILE_PLAN_ATTENTION] = block ? lp.att : mul(L, lp.att);
    col[PILE_PLAN_RECOMPUTE] = p->shared_bytes[s->recompute] - (block ? lp.att : 0);
    col[PILE_PLAN_EMBED] = add(add(region(NC, a), region(NC, a)), add(region(N, 4), region(N, 4)));
    col[PILE_PLAN_LOGITS] = add(region(mul(N, Vp), a), region(N, 4));
    col[PILE_PLAN_BACKWARD] =
        add(add(region(NC, a), s->dropout ? region(NC, a) : 0), add(region(NC, a), region(mul(4, NC), a)));
    /* tokens, targets, document starts twice (the next micro-batch is
     * staged while this one computes), correct flags (int32) */
    col[PILE_PLAN_BATCH] = mul(7, region(N, 4));
    const uint64_t acts = add(add(add(col[PILE_PLAN_ACTIVATIONS], col[PILE_PLAN_ATTENTION]),
                                  add(col[PILE_PLAN_RECOMPUTE], col[PILE_PLAN_EMBED])),
                              add(add(col[PILE_PLAN_LOGITS], col[PILE_PLAN_BACKWARD]), col[PILE_PLAN_BATCH]));
    /* in host memory, per process: the per-row loss and accuracy mirrors,
     * the step's batch (batch_size x accumulation_steps rows) and the
     * validation batch */
    const uint64_t A = s->accumulation_steps > 0 ? (uint64_t)s->accumulation_steps : 1;
    const uint64_t host_batch = add(mul(2, mul(N, 4)), mul(12, mul(add(mul(B, A), B), T)));

    if (!gpu) {
        const uint64_t flat = mul(p->params_allocated, 4);
        p->cpu[PILE_PLAN_PARAMS] = flat;
        p->cpu[PILE_PLAN_GRADS32] = flat;
        p->cpu[PILE_PLAN_MOMENTS] = mul(2, flat);
        /* bf16 is emulated in fp32 storage, and the optimizer keeps its
         * own fp32 master weights beside the rounded compute copy */
        if (s->precision == PILE_PRECISION_BF16) p->cpu[PILE_PLAN_MASTER] = flat;
        /* the optimizer's tensors that --offload puts in another backend object */
        uint64_t offloaded = add(p->cpu[PILE_PLAN_MASTER], p->cpu[PILE_PLAN_MOMENTS]);
        if (s->zero_stage > 0) {
            /* optim.c's sharded layout, one allocation each (counted as
             * the backend counts them, unrounded): the whole gradient
             * padded to the ranks, the rank's shard of master weights and
             * moments (and, from stage 2 or offloaded, its own gradient
             * shard), the packed buckets of stages 1 to 3 (at DeepSpeed's default
             * size); the parameters whole plus the all-gather's copy
             * (stages 1 and 2), or the rank's shard of them and two
             * buffers of the largest unit (stage 3: the embeddings, a
             * block or ln_f) */
            const uint64_t w = s->ranks > 1 ? (uint64_t)s->ranks : 1, P = p->params_allocated;
            const uint64_t shard = (P + w - 1) / w, padded = mul(shard, w);
            const uint64_t own_shard = s->zero_stage >= 2 || s->offload ? mul(shard, 4) : 0;
            p->cpu[PILE_PLAN_GRADS32] = add(mul(padded, 4), own_shard);
            p->cpu[PILE_PLAN_MASTER] = mul(shard, 4);
            p->cpu[PILE_PLAN_MOMENTS] = mul(2, mul(shard, 4));
            if (s->zero_stage < 3) {
                p->cpu[PILE_PLAN_ZERO_BUFFERS] = mul(padded, 4);
            } else {
                const uint64_t unit = umax(add(mul(Vp, C), mul(Tp, C)), p->block_params);
                p->cpu[PILE_PLAN_PARAMS] = mul(shard, 4);
                p->cpu[PILE_PLAN_ZERO_BUFFERS] = mul(2, mul(unit, 4));
            }
            if (DS_REDUCE_BUCKET < shard)
                p->cpu[PILE_PLAN_ZERO_BUFFERS] =
                    add(p->cpu[PILE_PLAN_ZERO_BUFFERS], mul(mul(w, DS_REDUCE_BUCKET), 4));
            offloaded = add(add(p->cpu[PILE_PLAN_MASTER], p->cpu[PILE_PLAN_MOMENTS]), own_shard);
            if (s->offload == PILE_OFFLOAD_ALL) offloaded = add(offloaded, p->cpu[PILE_PLAN_PARAMS]);
        }
        p->backend_bytes = add(add(add(p->cpu[PILE_PLAN_PARAMS], p->cpu[PILE_PLAN_GRADS32]),
                                   add(p->cpu[PILE_PLAN_MOMENTS], p->cpu[PILE_PLAN_MASTER])),
                               add(add(acts, p->cpu[PILE_PLAN_ATT_SCRATCH]), p->cpu[PILE_PLAN_ZERO_BUFFERS]));
        if (s->offload != PILE_OFFLOAD_NONE) p->backend_bytes -= offloaded;
        p->cpu[PILE_PLAN_BATCH] = add(p->cpu[PILE_PLAN_BATCH], host_batch);
        /* a checkpoint downloads both moments to the host at once */
        p->cpu[PILE_PLAN_CHECKPOINT] = mul(2, flat);
        p->cpu[PILE_PLAN_RUNTIME] = add(CPU_RUNTIME_BASE, mul(CPU_RUNTIME_PER_THREAD, (uint64_t)s->threads));
    } else {
        gpu_states(s, p);
        deepspeed_of(s, p);
        const uint64_t G = (uint64_t)p->world;
        /* ZeRO 2 and 3 reduce gradients in buckets; ZeRO 3 gathers whole
         * blocks (or the embeddings), the next one prefetched into a
         * second buffer: beyond the largest layer counted above */
        uint64_t zb = 0;
        if (s->zero_stage >= 2 && G > 1) zb = mul(p->params < DS_REDUCE_BUCKET ? p->params : DS_REDUCE_BUCKET, a);
        if (s->zero_stage == 3) {
            uint64_t unit = umax(p->block_params, add(mul(V, C), mul(Tp, C)));
            uint64_t gathers = mul(mul(2, unit), a);
            zb = add(zb, gathers > p->gpu[PILE_PLAN_GATHERED] ? gathers - p->gpu[PILE_PLAN_GATHERED] : 0);
        }
        p->gpu[PILE_PLAN_ZERO_BUFFERS] = zb;
        /* what the backward's reductions and sort and the norm's sumsq
         * use beyond their operands, at this micro-batch */
        p->gpu[PILE_PLAN_OP_SCRATCH] = pile__cuda_scratch_size(s->batch_size, s->seq_len, s->n_embd);
        p->gpu[PILE_PLAN_RUNTIME] = GPU_CUBLASLT_WORKSPACE + GPU_CONTEXT;
        /* host: each process's batches and a pinned copy of the next micro-batch */
        p->cpu[PILE_PLAN_BATCH] = mul((uint64_t)s->gpus, add(host_batch, mul(12, N)));
        if (s->offload == PILE_OFFLOAD_OPTIMIZER) {
            /* the offloaded step's chunk (optim.h): the pinned staging
             * grown from the batch's to a chunk of the rank's parameters
             * in the compute dtype, and (16 bits) the chunk converted */
            const uint64_t shard = (p->params + G - 1) / G, es = s->precision == PILE_PRECISION_FP32 ? 4 : 2;
            const uint64_t chunk = mul(shard < PILE_OPTIM_OFFLOAD_CHUNK ? shard : PILE_OPTIM_OFFLOAD_CHUNK, es);
            const uint64_t more = add(chunk > mul(12, N) ? chunk - mul(12, N) : 0, es == 2 ? chunk : 0);
            p->cpu[PILE_PLAN_ZERO_BUFFERS] = mul((uint64_t)s->gpus, more);
        }
        p->backend_bytes = 0;
    }

    for (int r = PILE_PLAN_PARAMS; r <= PILE_PLAN_GATHERED; r++) {
        p->model_states_gpu = add(p->model_states_gpu, p->gpu[r]);
        p->host_states = add(p->host_states, p->cpu[r]);
    }
    if (gpu) {
        /* the host in DeepSpeed's sense: its estimator's figure for the
         * stage (ZeRO 0 sized as ZeRO 2 without offload: each process's
         * fp32 copy while it loads) */
        uint64_t ds_cpu = p->deepspeed_cpu, ignored;
        if (!p->deepspeed_estimator)
            pile_plan_deepspeed_zero2(p->params, s->gpus, s->nodes, 0, PILE_PLAN_DS_BUFFER_FACTOR, &ds_cpu, &ignored);
        p->cpu[PILE_PLAN_HOST_SIZING] = ds_cpu > p->host_states ? ds_cpu - p->host_states : 0;
    }
    p->model_states_cpu = add(p->host_states, p->cpu[PILE_PLAN_HOST_SIZING]);
    for (int r = 0; r < PILE_PLAN_ROWS; r++) {
        p->total_gpu = add(p->total_gpu, p->gpu[r]);
        p->total_cpu = add(p->total_cpu, p->cpu[r]);
    }
    /* the CPU backend's rows are one process's; the host holds those of
     * every rank on it */
    if (!gpu) {
        const int local = s->local_ranks > 0 ? s->local_ranks : s->ranks;
        p->process_cpu = p->total_cpu;
        if (local > 1) p->total_cpu = mul(p->total_cpu, (uint64_t)local);
    }

    p->fits_gpu = gpu && s->gpu_mem ? p->total_gpu <= s->gpu_mem : -1;
    p->fits_cpu = s->cpu_mem ? p->total_cpu <= s->cpu_mem : -1;
    p->fits = p->fits_gpu == 0 || p->fits_cpu == 0 ? 0 : p->fits_gpu == 1 || p->fits_cpu == 1 ? 1 : -1;
    p->close = p->fits == 1 && ((p->fits_gpu == 1 && p->total_gpu > s->gpu_mem / 10 * 9) ||
                                (p->fits_cpu == 1 && p->total_cpu > s->cpu_mem / 10 * 9));
    return 0;
}

/* ------------------------------------------------------------ advice */

enum { CH_RECOMPUTE = 1, CH_ZERO = 2, CH_OFFLOAD = 4, CH_BATCH = 8, CH_NODES = 16 };

typedef struct candidate {
    pile_plan_settings s;
    unsigned changes;
    uint64_t total_gpu, total_cpu;
} candidate;

static int fits_with(const pile_plan_settings *s, pile_plan *p)
{
    pile_err e;
    return pile_plan_compute(s, p, &e) == 0 && p->fits == 1;
}

/* The fewest nodes in [s->nodes, MAX_NODES] with which s fits (bisection:
 * more nodes never need more memory per GPU or per node, but the result
 * is checked all the same); 0 if none. */
static int nodes_needed(pile_plan_settings s, pile_plan *p)
{
    int lo = s.nodes, hi = MAX_NODES;
    s.nodes = hi;
    if (!fits_with(&s, p)) return 0;
    while (lo < hi) {
        s.nodes = lo + (hi - lo) / 2;
        if (fits_with(&s, p)) hi = s.nodes;
        else lo = s.nodes + 1;
    }
    s.nodes = lo;
    return fits_with(&s, p) ? lo : 0;
}

static int candidate_order(const void *a, const void *b)
{
    const candidate *x = a, *y = b;
    int nx = __builtin_popcount(x->changes), ny = __builtin_popcount(y->changes);
    if (nx != ny) return nx < ny ? -1 : 1;
    if (x->s.nodes != y->s.nodes) return x->s.nodes < y->s.nodes ? -1 : 1;
    if (x->s.batch_size != y->s.batch_size) return x->s.batch_size > y->s.batch_size ? -1 : 1;
    /* the least recomputation, then the least sharding: the fastest run */
    if (x->s.recompute != y->s.recompute) return x->s.recompute < y->s.recompute ? -1 : 1;
    if (x->s.zero_stage != y->s.zero_stage) return x->s.zero_stage < y->s.zero_stage ? -1 : 1;
    if (x->s.offload != y->s.offload) return x->s.offload < y->s.offload ? -1 : 1;
    return x->total_gpu < y->total_gpu ? -1 : x->total_gpu > y->total_gpu;
}

static void option_flags(const pile_plan_settings *from, const candidate *c, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
#define FLAG(...) n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, __VA_ARGS__)
    if (c->changes & CH_RECOMPUTE) FLAG("--recompute %s ", pile_model_recompute_name(c->s.recompute));
    if (c->changes & CH_ZERO) FLAG("--zero %d ", c->s.zero_stage);
    if (c->changes & CH_OFFLOAD) FLAG("--offload %s ", pile_plan_offload_name(c->s.offload));
    if (c->changes & CH_BATCH) {
        FLAG("--batch_size %d ", c->s.batch_size);
        if (from->accumulation_steps > 0)
            FLAG("--accumulation_steps %d ",
                 from->accumulation_steps * (from->batch_size / c->s.batch_size));
    }
    if (c->changes & CH_NODES) FLAG("--nodes %d ", c->s.nodes);
#undef FLAG
    if (n > 0 && n <= cap) out[n - 1] = '\0';
}

int pile_plan_advise(const pile_plan_settings *s, pile_plan_option *out, int max)
{
    pile_plan p;
    pile_err e;
    if (max <= 0 || pile_plan_compute(s, &p, &e) < 0 || p.fits != 0) return 0;
    /* what may change: the recompute mode, the ZeRO stage and offload (more
     * sharding only), the micro-batch (halved, the accumulation doubled so
     * that the global batch stays), and on GPUs the number of nodes */
    static const struct { int zero; pile_offload off; } zo[] = {
        {0, PILE_OFFLOAD_NONE},      {1, PILE_OFFLOAD_NONE},      {2, PILE_OFFLOAD_NONE},
        {3, PILE_OFFLOAD_NONE},      {2, PILE_OFFLOAD_OPTIMIZER}, {3, PILE_OFFLOAD_OPTIMIZER},
        {3, PILE_OFFLOAD_ALL},
    };
    enum { MAX_CANDIDATES = 3 * 7 * 2 * 2 };
    candidate cands[MAX_CANDIDATES];
    int nc = 0;
    const int gpu = s->gpus > 0;
    for (int r = (int)s->recompute; r <= (int)PILE_RECOMPUTE_BLOCK; r++) {
        for (size_t k = 0; k < (gpu ? sizeof zo / sizeof zo[0] : 1); k++) {
            pile_plan_settings t = *s;
            t.recompute = (pile_recompute)r;
            unsigned ch = r != (int)s->recompute ? CH_RECOMPUTE : 0;
            if (gpu) {
                if (zo[k].zero < s->zero_stage || zo[k].off < s->offload) continue;
                t.zero_stage = zo[k].zero;
                t.offload = zo[k].off;
                ch |= (t.zero_stage != s->zero_stage ? CH_ZERO : 0) | (t.offload != s->offload ? CH_OFFLOAD : 0);
            }
            /* the micro-batch as it is, then the largest halving that fits */
            for (int half = 0; half < 2; half++) {
                pile_plan_settings u = t;
                unsigned uch = ch;
                if (half) {
                    if (s->batch_size < 2) continue;
                    u.batch_size = s->batch_size / 2;
                    while (u.batch_size > 1 && !fits_with(&u, &p)) u.batch_size /= 2;
                    while (s->batch_size % u.batch_size) u.batch_size--; /* the global batch stays whole */
                    uch |= CH_BATCH;
                }
                if (!fits_with(&u, &p)) {
                    int need = gpu ? nodes_needed(u, &p) : 0;
                    if (!need) continue;
                    u.nodes = need;
                    uch |= CH_NODES;
                    fits_with(&u, &p);
                }
                if (!uch || nc == MAX_CANDIDATES) continue;
                cands[nc++] = (candidate){u, uch, p.total_gpu, p.total_cpu};
            }
        }
    }
    qsort(cands, (size_t)nc, sizeof cands[0], candidate_order);
    int n = 0;
    for (int i = 0; i < nc && n < max; i++) {
        /* leave out an option that only adds changes (or nodes) to one given */
        int redundant = 0;
        for (int j = 0; j < n && !redundant; j++) {
            unsigned cj = out[j].changes;
            redundant = (cands[i].changes & cj) == cj && cands[i].s.nodes >= out[j].settings.nodes &&
                        cands[i].s.batch_size <= out[j].settings.batch_size;
        }
        if (redundant) continue;
        pile_plan_option *o = &out[n++];
        o->settings = cands[i].s;
        o->changes = cands[i].changes;
        o->total_gpu = cands[i].total_gpu;
        o->total_cpu = cands[i].total_cpu;
        option_flags(s, &cands[i], o->flags, sizeof o->flags);
    }
    return n;
}

/* ------------------------------------------------------------ output */

static const char *const row_labels[PILE_PLAN_ROWS] = {
    "parameters",
    "gradients, 16-bit",
    "gradients, fp32",
    "master weights, fp32",
    "AdamW moments, fp32",
    "largest layer, gathered",
    "DeepSpeed's host sizing",
    "activations, all layers",
    "recomputed layer's set",
    "attention's saved state",
    "embeddings, final norm",
    "logits and losses",
    "backward's buffers",
    "attention's scratch",
    "ops' scratch",
    "batches",
    "ZeRO buckets and gathers",
    "checkpoint copies",
    "runtime (allowance)",
};

/* bytes for a person: "812 MiB", "1.53 GiB", "4.21 TiB"; a struct so that
 * several may be arguments of one call (C11 6.2.4: the temporary lives
 * until the end of the full expression) */
typedef struct hbytes {
    char s[24];
} hbytes;

static hbytes human(uint64_t b)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    hbytes h;
    double v = (double)b;
    int u = 0;
    while (v >= 1024.0 && u < 6) {
        v /= 1024.0;
        u++;
    }
    if (u == 0) snprintf(h.s, sizeof h.s, "%" PRIu64 " B", b);
    else snprintf(h.s, sizeof h.s, v >= 100 ? "%.0f %s" : v >= 10 ? "%.1f %s" : "%.2f %s", v, units[u]);
    return h;
}

#define H(x) (human(x).s)

static int verdict(pile_buf *out, const char *side, int fits, uint64_t need, uint64_t have, const char *what)
{
    if (fits < 0) return pile_buf_printf(out, "  %-10s not judged (give %s)\n", side, what);
    if (fits) return pile_buf_printf(out, "  %-10s fits: %s of %s (%.0f%%)\n", side, H(need), H(have),
                                     100.0 * (double)need / (double)have);
    return pile_buf_printf(out, "  %-10s DOES NOT FIT: needs %s, has %s (%s short)\n", side, H(need), H(have),
                           H(need - have));
}

int pile_plan_format(const pile_plan_settings *s, const pile_plan *p, const char *limit_source, pile_buf *out)
{
    const int gpu = s->gpus > 0;
    pile_buf_printf(out, "model: %d layers, %d heads, %d wide, vocabulary %d (%d allocated), %d positions\n",
                    s->n_layer, s->n_head, s->n_embd, s->vocab_size, p->vocab_padded, s->n_positions);
    pile_buf_printf(out, "  %" PRIu64 " parameters (%.2f B), largest layer %" PRIu64 ", one block %" PRIu64 "\n",
                    p->params, (double)p->params / 1e9, p->largest_layer_params, p->block_params);
    pile_buf_printf(out, "run: micro-batch %d x %d, %s, recompute %s", s->batch_size, s->seq_len,
                    pile_precision_name(s->precision), pile_model_recompute_name(s->recompute));
    if (gpu)
        pile_buf_printf(out, "; %d GPU%s per node x %d node%s, ZeRO %d, offload %s\n", s->gpus,
                        s->gpus == 1 ? "" : "s", s->nodes, s->nodes == 1 ? "" : "s", s->zero_stage,
                        pile_plan_offload_name(s->offload));
    else
        pile_buf_printf(out, "; the CPU backend (%d thread%s, fp32 buffers)\n", s->threads,
                        s->threads == 1 ? "" : "s");
    /* the CPU backend: one column, the host's */
    const char *fmt = gpu ? "%-28s %12s %14s\n" : "%-28s%.0s %14s\n";
    pile_buf_printf(out, "\n");
    pile_buf_printf(out, fmt, "", "per GPU", gpu ? "host, per node" : "host");
    for (int r = 0; r < PILE_PLAN_ROWS; r++) {
        if (!p->gpu[r] && !p->cpu[r]) continue;
        if (r == PILE_PLAN_ACTIVATIONS)
            pile_buf_printf(out, fmt, "model states", H(p->model_states_gpu), H(p->model_states_cpu));
        char label[40];
        snprintf(label, sizeof label, "  %s", row_labels[r]);
        pile_buf_printf(out, fmt, label, H(p->gpu[r]), H(p->cpu[r]));
    }
    pile_buf_printf(out, fmt, "total", H(p->total_gpu), H(p->total_cpu));
    pile_buf_printf(out, "\nactivations of one layer (kept per layer / refilled once), by recompute mode:\n");
    for (int r = 0; r < 3; r++)
        pile_buf_printf(out, "  %-6s %12s / %s%s\n", pile_model_recompute_name((pile_recompute)r),
                        H(p->layer_bytes[r]), H(p->shared_bytes[r]), r == (int)s->recompute ? "   (this run)" : "");
    if (p->deepspeed_estimator) {
        const int off = s->offload != PILE_OFFLOAD_NONE, all = s->offload == PILE_OFFLOAD_ALL;
        pile_buf_printf(out, "\nDeepSpeed %s(total_params=%" PRIu64, p->deepspeed_estimator, p->params);
        if (s->zero_stage == 3) pile_buf_printf(out, ", largest_layer_params=%" PRIu64, p->largest_layer_params);
        pile_buf_printf(out, ", num_gpus_per_node=%d, num_nodes=%d, cpu_offload=%s", s->gpus, s->nodes,
                        off ? "True" : "False");
        if (s->zero_stage == 3) pile_buf_printf(out, ", cpu_offload_params=%s, zero_init=True", all ? "True" : "False");
        pile_buf_printf(out, "):\n  per GPU %s (%" PRIu64 "), per node %s (%" PRIu64 ")\n", H(p->deepspeed_gpu),
                        p->deepspeed_gpu, H(p->deepspeed_cpu), p->deepspeed_cpu);
        pile_buf_printf(out, "  ours:   per GPU %s (%" PRIu64 ")%s, per node %s (exact states %s + DeepSpeed's sizing)\n",
                        H(p->model_states_gpu), p->model_states_gpu,
                        p->model_states_gpu == p->deepspeed_gpu ? ", the same" : ", counted for ZeRO 1, not 2",
                        H(p->model_states_cpu), H(p->host_states));
        pile_buf_printf(out, "  its table for this model and these machines:\n"
                             "    offload_param offload_optimizer zero_init %12s %14s\n", "per GPU", "per node");
        for (int i = 0; i < p->n_ds_options; i++) {
            const pile_plan_ds_option *d = &p->ds_options[i];
            pile_buf_printf(out, "    %-13s %-17s %-9s %12s %14s\n", d->offload_param ? "cpu" : "none",
                            d->offload_optimizer ? "cpu" : "none", d->zero_init < 0 ? "" : d->zero_init ? "1" : "0",
                            H(d->gpu), H(d->cpu));
        }
    } else if (gpu) {
        pile_buf_printf(out, "\nDeepSpeed has no estimator for ZeRO 0 (every GPU holds all %" PRIu64
                             " bytes of model states)\n", p->model_states_gpu);
    }
    pile_buf_printf(out, "\n");
    if (gpu) verdict(out, "GPU:", p->fits_gpu, p->total_gpu, s->gpu_mem, "--gpu-mem GiB");
    verdict(out, gpu ? "host:" : "memory:", p->fits_cpu, p->total_cpu, s->cpu_mem,
            gpu ? "--cpu-mem GiB" : "--cpu-mem GiB");
    if (limit_source) pile_buf_printf(out, "  (memory from %s)\n", limit_source);
    if (p->fits == 1 && p->close) pile_buf_printf(out, "  close: above 90%% of the memory\n");
    if (p->fits == 0) {
        pile_plan_option opts[6];
        int n = pile_plan_advise(s, opts, 6);
        if (n == 0 && gpu)
            pile_buf_printf(out, "nothing fits with recompute, a smaller micro-batch, ZeRO, offload or up to %d nodes\n",
                            MAX_NODES);
        else if (n == 0)
            pile_buf_printf(out, "nothing fits with recompute or a smaller micro-batch\n");
        else pile_buf_printf(out, "what would fit:\n");
        for (int i = 0; i < n; i++)
            pile_buf_printf(out, "  %-58s %s per GPU, %s per node\n", opts[i].flags, gpu ? H(opts[i].total_gpu) : "-",
                            H(opts[i].total_cpu));
    }
    pile_buf_printf(out, "verdict: %s\n", p->fits == 1 ? "fits" : p->fits == 0 ? "does not fit" : "not judged");
    return out->failed ? PILE_ENOMEM : 0;
}
#undef H

static void json_u64_or_null(pile_buf *out, const char *key, int have, uint64_t v)
{
    if (have) pile_buf_printf(out, "\"%s\": %" PRIu64, key, v);
    else pile_buf_printf(out, "\"%s\": null", key);
}

static const char *json_bool(int v) { return v < 0 ? "null" : v ? "true" : "false"; }

static void json_rows(pile_buf *out, const char *key, const uint64_t *rows)
{
    pile_buf_printf(out, "\"%s\": {", key);
    for (int r = 0; r < PILE_PLAN_ROWS; r++)
        pile_buf_printf(out, "%s\"%s\": %" PRIu64, r ? ", " : "", row_keys[r], rows[r]);
    pile_buf_printf(out, "}");
}

int pile_plan_to_json(const pile_plan_settings *s, const pile_plan *p, pile_buf *out)
{
    const int gpu = s->gpus > 0;
    pile_buf_printf(out,
                    "{\"n_layer\": %d, \"n_head\": %d, \"n_embd\": %d, \"vocab_size\": %d, \"vocab_padded\": %d, "
                    "\"n_positions\": %d, \"batch_size\": %d, \"max_length\": %d, \"precision\": \"%s\", "
                    "\"recompute\": \"%s\", \"gpus\": %d, \"nodes\": %d, \"zero_stage\": %d, \"offload\": \"%s\", ",
                    s->n_layer, s->n_head, s->n_embd, s->vocab_size, p->vocab_padded, s->n_positions,
                    s->batch_size, s->seq_len, pile_precision_name(s->precision),
                    pile_model_recompute_name(s->recompute), s->gpus, s->nodes, s->zero_stage,
                    pile_plan_offload_name(s->offload));
    pile_buf_printf(out, "\"params\": %" PRIu64 ", \"params_allocated\": %" PRIu64
                         ", \"largest_layer_params\": %" PRIu64 ", \"block_params\": %" PRIu64 ", ",
                    p->params, p->params_allocated, p->largest_layer_params, p->block_params);
    json_u64_or_null(out, "model_states_gpu_bytes", gpu, p->model_states_gpu);
    pile_buf_printf(out, ", \"model_states_cpu_bytes\": %" PRIu64 ", \"host_states_bytes\": %" PRIu64 ", ",
                    p->model_states_cpu, p->host_states);
    if (p->deepspeed_estimator) pile_buf_printf(out, "\"deepspeed_estimator\": \"%s\", ", p->deepspeed_estimator);
    else pile_buf_printf(out, "\"deepspeed_estimator\": null, ");
    json_u64_or_null(out, "deepspeed_gpu_bytes", p->deepspeed_estimator != NULL, p->deepspeed_gpu);
    pile_buf_printf(out, ", ");
    json_u64_or_null(out, "deepspeed_cpu_bytes", p->deepspeed_estimator != NULL, p->deepspeed_cpu);
    pile_buf_printf(out, ", ");
    json_u64_or_null(out, "total_gpu_bytes", gpu, p->total_gpu);
    pile_buf_printf(out, ", \"total_cpu_bytes\": %" PRIu64 ", ", p->total_cpu);
    json_u64_or_null(out, "gpu_mem_bytes", gpu && s->gpu_mem, s->gpu_mem);
    pile_buf_printf(out, ", ");
    json_u64_or_null(out, "cpu_mem_bytes", s->cpu_mem != 0, s->cpu_mem);
    pile_buf_printf(out, ", \"fits\": %s, \"fits_gpu\": %s, \"fits_cpu\": %s, ", json_bool(p->fits),
                    json_bool(p->fits_gpu), json_bool(p->fits_cpu));
    if (p->backend_bytes) pile_buf_printf(out, "\"backend_bytes\": %" PRIu64 ", ", p->backend_bytes);
    if (gpu) {
        json_rows(out, "gpu", p->gpu);
        pile_buf_printf(out, ", ");
    }
    json_rows(out, "cpu", p->cpu);
    pile_buf_printf(out, ", \"activations_per_layer\": {");
    for (int r = 0; r < 3; r++)
        pile_buf_printf(out, "%s\"%s\": %" PRIu64, r ? ", " : "", pile_model_recompute_name((pile_recompute)r),
                        p->layer_bytes[r]);
    pile_buf_printf(out, "}, \"activations_once\": {");
    for (int r = 0; r < 3; r++)
        pile_buf_printf(out, "%s\"%s\": %" PRIu64, r ? ", " : "", pile_model_recompute_name((pile_recompute)r),
                        p->shared_bytes[r]);
    pile_buf_printf(out, "}, \"deepspeed_options\": [");
    for (int i = 0; i < p->n_ds_options; i++) {
        const pile_plan_ds_option *d = &p->ds_options[i];
        pile_buf_printf(out, "%s{\"offload_optimizer\": %s, \"offload_param\": %s, \"zero_init\": %s, "
                             "\"gpu_bytes\": %" PRIu64 ", \"cpu_bytes\": %" PRIu64 "}",
                        i ? ", " : "", json_bool(d->offload_optimizer), json_bool(d->offload_param),
                        json_bool(d->zero_init), d->gpu, d->cpu);
    }
    pile_buf_printf(out, "], \"options\": [");
    pile_plan_option opts[6];
    int n = pile_plan_advise(s, opts, 6);
    for (int i = 0; i < n; i++) {
        pile_buf_printf(out, "%s{\"flags\": \"%s\", ", i ? ", " : "", opts[i].flags);
        json_u64_or_null(out, "total_gpu_bytes", gpu, opts[i].total_gpu);
        pile_buf_printf(out, ", \"total_cpu_bytes\": %" PRIu64 "}", opts[i].total_cpu);
    }
    pile_buf_printf(out, "]}\n");
    return out->failed ? PILE_ENOMEM : 0;
}

/* ------------------------------------------------------------ the run */

int pile_plan_settings_from_config(const pile_train_config *c, int vocab_size, int max_length,
                                   pile_plan_settings *out, pile_err *err)
{
    memset(out, 0, sizeof *out);
    pile_model_config mc;
    memset(&mc, 0, sizeof mc);
    PILE_FORWARD_IF_ERR(pile_model_preset(&mc, c->model, err));
    out->n_layer = c->n_layer > 0 ? c->n_layer : mc.n_layer;
    out->n_head = c->n_head > 0 ? c->n_head : mc.n_head;
    out->n_embd = c->n_embd > 0 ? c->n_embd : mc.n_embd;
    out->vocab_size = vocab_size;
    out->n_positions = max_length;
    out->seq_len = max_length;
    out->dropout = c->dropout > 0.0f;
    PILE_FORWARD_IF_ERR(pile_model_recompute_parse(c->recompute, &out->recompute, err));
    out->precision = c->precision;
    out->batch_size = c->batch_size;
    out->accumulation_steps = c->accumulation_steps;
    out->nodes = 1;
    out->zero_stage = c->zero_stage;
    /* DeepSpeed offloads parameters only in ZeRO 3 (it ignores
     * offload_param below), with the optimizer state (its estimator has no
     * other case) */
    out->offload = c->offload_param && c->zero_stage == 3 ? PILE_OFFLOAD_ALL
                   : c->offload_optimizer ? PILE_OFFLOAD_OPTIMIZER
                                          : PILE_OFFLOAD_NONE;
    out->threads = c->threads > 0 ? c->threads : pile_backend_usable_cores();
    return 0;
}

/* The number after `key` in a /proc-style file ("MemAvailable:  123 kB"),
 * or a lone number ("max" and unreadable: 0). */
static uint64_t read_number(const char *path, const char *key, uint64_t unit)
{
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[256];
    uint64_t v = 0;
    while (fgets(line, sizeof line, f)) {
        const char *at = line;
        if (key) {
            if (strncmp(line, key, strlen(key))) continue;
            at += strlen(key);
        }
        char *end;
        unsigned long long x = strtoull(at, &end, 10);
        if (end != at) v = (uint64_t)x * unit;
        break;
    }
    fclose(f);
    return v;
}

uint64_t pile_plan_host_available(const char **source)
{
    uint64_t avail = read_number("/proc/meminfo", "MemAvailable:", 1024);
    *source = "MemAvailable";
    /* a cgroup v2 limit (a container, a systemd slice) below what the host has */
    uint64_t max = read_number("/sys/fs/cgroup/memory.max", NULL, 1);
    uint64_t cur = read_number("/sys/fs/cgroup/memory.current", NULL, 1);
    if (max && max > cur && (avail == 0 || max - cur < avail)) {
        avail = max - cur;
        *source = "cgroup memory.max";
    }
    return avail;
}

/* The settings of a run of model mc on one process, all of it there
 * (no ZeRO, no offload), micro-batches of c's batch_size x T. */
static int run_settings(const pile_train_config *c, const pile_model_config *mc, int T, pile_plan_settings *s,
                        pile_err *err)
{
    PILE_FORWARD_IF_ERR(pile_plan_settings_from_config(c, mc->vocab_size, mc->n_positions, s, err));
    s->n_layer = mc->n_layer;
    s->n_head = mc->n_head;
    s->n_embd = mc->n_embd;
    s->recompute = mc->recompute;
    s->seq_len = T;
    s->zero_stage = 0;
    s->offload = PILE_OFFLOAD_NONE;
    return 0;
}

int pile_plan_check_host(const pile_plan_settings *s, const char *source, pile_err *err)
{
    if (!s->cpu_mem) return 0;
    pile_plan p;
    PILE_FORWARD_IF_ERR(pile_plan_compute(s, &p, err));
    if (p.fits_cpu != 0) return 0;
    const int local = s->local_ranks > 0 ? s->local_ranks : s->ranks;
    char need[160];
    if (local > 1)
        snprintf(need, sizeof need, "its %d ranks on this host need %s (%s each)", local, human(p.total_cpu).s,
                 human(p.process_cpu).s);
    else snprintf(need, sizeof need, "it needs %s", human(p.total_cpu).s);
    const uint64_t acts = p.cpu[PILE_PLAN_ACTIVATIONS] + p.cpu[PILE_PLAN_RECOMPUTE] + p.cpu[PILE_PLAN_ATTENTION];
    return pile_err_set(err, PILE_ELIMIT,
                        "the run does not fit in memory: %s, the host has %s available (%s): %sparameters "
                        "%s, gradients %s, AdamW moments %s, activations %s (recompute %s), logits %s, checkpoint "
                        "copies %s; `pile-trainer plan` with the same flags shows the whole plan and what would "
                        "fit; --skip_memory_check runs it anyway",
                        need, human(s->cpu_mem).s, source ? source : "--cpu-mem", local > 1 ? "each rank's " : "",
                        human(p.cpu[PILE_PLAN_PARAMS]).s, human(p.cpu[PILE_PLAN_GRADS32]).s,
                        human(p.cpu[PILE_PLAN_MOMENTS]).s, human(acts).s,
                        pile_model_recompute_name(s->recompute), human(p.cpu[PILE_PLAN_LOGITS]).s,
                        human(p.cpu[PILE_PLAN_CHECKPOINT]).s);
}

int pile_plan_check_run(const pile_train_config *c, const pile_model_config *mc, const pile_backend *be, int T,
                        int local_ranks, pile_err *err)
{
    if (c->skip_memory_check) return 0;
    if (!pile_backend_host_memory(be)) return 0; /* a device's: pile_plan_reserve */
    pile_plan_settings s;
    /* the model as the trainer builds it, on its backend, computing in fp32 */
    PILE_FORWARD_IF_ERR(run_settings(c, mc, T, &s, err));
    /* the run's sharding over all its ranks; the host holds its own ranks' */
    s.zero_stage = c->zero_stage;
    s.offload = c->offload_param && c->zero_stage == 3 ? PILE_OFFLOAD_ALL
                : c->offload_optimizer                    ? PILE_OFFLOAD_OPTIMIZER
                                                          : PILE_OFFLOAD_NONE;
    s.ranks = c->world_size;
    s.local_ranks = local_ranks;
    s.threads = pile_backend_threads(be);
    s.backend = be;
    const char *source;
    s.cpu_mem = pile_plan_host_available(&source);
    return pile_plan_check_host(&s, source, err);
}

/* The arena: the plan of the run on one GPU, less what is not the
 * backend's to hand out. */
static int reserve_arena(const pile_train_config *c, const pile_model_config *mc, pile_backend *be, int T,
                         pile_err *err)
{
    pile_plan_settings s;
    /* the model as the trainer builds it, on one GPU */
    PILE_FORWARD_IF_ERR(run_settings(c, mc, T, &s, err));
    s.gpus = 1;
    s.nodes = 1;
    s.backend = NULL;
    pile_plan p;
    PILE_FORWARD_IF_ERR(pile_plan_compute(&s, &p, err));
    /* the CUDA context and cuBLASLt's workspace are not the arena's */
    const uint64_t want = p.total_gpu - p.gpu[PILE_PLAN_RUNTIME];
    pile_err why;
    const int rc = want > SIZE_MAX ? PILE_ENOMEM : pile_backend_reserve(be, (size_t)want, &why);
    if (rc == 0) return 0;
    if (rc != PILE_ENOMEM) return pile_err_set(err, rc, "%s", why.msg);
    const uint64_t acts = p.gpu[PILE_PLAN_ACTIVATIONS] + p.gpu[PILE_PLAN_RECOMPUTE] + p.gpu[PILE_PLAN_ATTENTION];
    const uint64_t grads = p.gpu[PILE_PLAN_GRADS16] + p.gpu[PILE_PLAN_GRADS32];
    const uint64_t scratch = p.gpu[PILE_PLAN_ATT_SCRATCH] + p.gpu[PILE_PLAN_OP_SCRATCH];
    return pile_err_set(err, PILE_ELIMIT,
                        "the run does not fit on the GPU: it needs %s for parameters %s, gradients %s, master "
                        "weights %s, AdamW moments %s, activations %s (recompute %s), logits %s, the backward's "
                        "%s and scratch %s (%s); a smaller batch_size (with more accumulation_steps for the same "
                        "batch), --recompute gelu or block, or ZeRO sharding over more GPUs needs less: "
                        "`pile-trainer plan --gpus 1` with the same flags shows the whole plan and what would fit; "
                        "--skip_memory_check allocates as it goes instead",
                        human(want).s, human(p.gpu[PILE_PLAN_PARAMS]).s, human(grads).s,
                        human(p.gpu[PILE_PLAN_MASTER]).s, human(p.gpu[PILE_PLAN_MOMENTS]).s, human(acts).s,
                        pile_model_recompute_name(s.recompute), human(p.gpu[PILE_PLAN_LOGITS]).s,
                        human(p.gpu[PILE_PLAN_BACKWARD]).s, human(scratch).s, why.msg);
}

int pile_plan_reserve(const pile_train_config *c, const pile_model_config *mc, pile_backend *be, int T, pile_err *err)
{
    if (pile_backend_host_memory(be)) return 0;
    if (!c->skip_memory_check) PILE_FORWARD_IF_ERR(reserve_arena(c, mc, be, T, err));
    /* the ops' scratch (the plan's op_scratch row) from what was just
     * reserved, or on its own with skip_memory_check: never an allocation
     * in the middle of a step */
    return pile_backend_reserve_scratch(be, c->batch_size, T, mc->n_embd, err);
}
