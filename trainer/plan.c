/* The memory planner (plan.h): the bytes of every buffer a run holds, from
 * its settings alone. The CPU backend's rows repeat model.c's carve()
 * region by region (each rounded to 64 bytes as carve rounds it) and
 * backend_cpu.c's attention sizes; tests/test_plan.c holds them to the
 * backend's own count, so a change there that the plan misses fails a
 * test. The GPU rows follow DeepSpeed's accounting of model states and its
 * estimators' arithmetic (DeepSpeed 0.19.8, runtime/zero/stage_1_and_2.py
 * and stage3.py), written here from the formulas, and the CUDA backend's
 * intended layout for the rest. */
#include "plan.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

/* backend_cpu.c's attention blocks: query rows and keys per block. */
#define CPU_ATT_BR 128
#define CPU_ATT_BC 256
/* What a CPU run holds beyond its buffers: the program, its libraries,
 * OpenMP's threads and OpenBLAS's packing buffers, glibc's arenas.
 * Measured (bench/RESULTS.md, 2026-12 planner entry): the peak resident
 * memory of runs whose buffers are a few MiB, and the rest of GPT-2 runs'
 * peaks beyond their planned buffers. */
#define CPU_RUNTIME_BASE ((uint64_t)24 << 20)
#define CPU_RUNTIME_PER_THREAD ((uint64_t)8 << 20)
/* A GPU process: cuBLASLt's workspace (32 MiB per stream on Hopper, issue
 * 9) and the CUDA context with its kernels and libraries, an assumed
 * figure (typically 300-600 MiB; no GPU has measured this code). */
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
    "embeddings",      "logits",            "backward_buffers", "attention_scratch", "batch",
    "zero_buffers",    "checkpoint_copies", "runtime",
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

static layer_parts layer_parts_of(uint64_t N, uint64_t C, uint64_t NH, uint64_t B, uint64_t T, uint64_t a)
{
    const uint64_t NC = mul(N, C);
    layer_parts p;
    p.base = add(add(add(region(NC, a), region(N, 4)), add(region(N, 4), region(mul(3, NC), a))),
                 add(add(region(NC, a), region(NC, a)), add(add(region(NC, a), region(N, 4)), region(N, 4))));
    p.mlp = add(region(mul(4, NC), a), region(mul(4, NC), a));
    /* the CPU backend's and FlashAttention's: one fp32 log-sum-exp per row and head */
    p.att = region(mul(mul(B, NH), T), 4);
    p.out = region(NC, a);
    return p;
}

static void layer_bytes_of(const layer_parts *lp, pile_recompute rc, uint64_t *layer, uint64_t *shared)
{
    const int own = rc != PILE_RECOMPUTE_BLOCK, own_mlp = rc == PILE_RECOMPUTE_NONE;
    *layer = add(add(own ? add(lp->base, lp->att) : 0, own_mlp ? lp->mlp : 0), lp->out);
    *shared = add(own ? 0 : add(lp->base, lp->att), rc != PILE_RECOMPUTE_NONE ? lp->mlp : 0);
}

/* backend_cpu.c's attention scratch per thread: a score block and a dP
 * block of BR x BC, an output accumulator of BR x head size, m and l. */
static uint64_t cpu_attention_scratch(uint64_t T, uint64_t C, uint64_t NH, uint64_t threads)
{
    const uint64_t br = T < CPU_ATT_BR ? T : CPU_ATT_BR, bc = T < CPU_ATT_BC ? T : CPU_ATT_BC;
    const uint64_t floats = 2 * br * bc + br * (C / NH) + 2 * br;
    return mul(threads, (floats * 4 + 63) / 64 * 64);
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
    const uint64_t C = (uint64_t)s->n_embd, L = (uint64_t)s->n_layer, NH = (uint64_t)s->n_head;
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

    const layer_parts lp = layer_parts_of(N, C, NH, B, T, a);
    for (int r = 0; r < 3; r++) layer_bytes_of(&lp, (pile_recompute)r, &p->layer_bytes[r], &p->shared_bytes[r]);
    const int block = s->recompute == PILE_RECOMPUTE_BLOCK;
    uint64_t *col = gpu ? p->gpu : p->cpu;
    col[PILE_PLAN_ACTIVATIONS] = mul(L, p->layer_bytes[s->recompute] - (block ? 0 : lp.att));
    col[PILE_PLAN_ATTENTION] = block ? lp.att : mul(L, lp.att);
    col[PILE_PLAN_RECOMPUTE] = p->shared_bytes[s->recompute] - (block ? lp.att : 0);
    col[PILE_PLAN_EMBED] = add(add(region(NC, a), region(NC, a)), add(region(N, 4), region(N, 4)));
    col[PILE_PLAN_LOGITS] = add(region(mul(N, Vp), 4), region(N, 4));
    col[PILE_PLAN_BACKWARD] =
        add(add(region(NC, a), s->dropout ? region(NC, a) : 0), add(region(NC, a), region(mul(4, NC), a)));
    /* tokens, targets, document starts, correct flags (int32) */
    col[PILE_PLAN_BATCH] = mul(4, region(N, 4));
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
        p->cpu[PILE_PLAN_ATT_SCRATCH] = cpu_attention_scratch(T, C, NH, (uint64_t)s->threads);
        p->backend_bytes = add(add(mul(4, flat), acts), p->cpu[PILE_PLAN_ATT_SCRATCH]);
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
        p->gpu[PILE_PLAN_RUNTIME] = GPU_CUBLASLT_WORKSPACE + GPU_CONTEXT;
        /* host: each process's batches and a pinned copy of the next micro-batch */
        p->cpu[PILE_PLAN_BATCH] = mul((uint64_t)s->gpus, add(host_batch, mul(12, N)));
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

    p->fits_gpu = gpu && s->gpu_mem ? p->total_gpu <= s->gpu_mem : -1;
    p->fits_cpu = s->cpu_mem ? p->total_cpu <= s->cpu_mem : -1;
    p->fits = p->fits_gpu == 0 || p->fits_cpu == 0 ? 0 : p->fits_gpu == 1 || p->fits_cpu == 1 ? 1 : -1;
    p->close = p->fits == 1 && ((p->fits_gpu == 1 && p->total_gpu > s->gpu_mem / 10 * 9) ||
                                (p->fits_cpu == 1 && p->total_cpu > s->cpu_mem / 10 * 9));
    return 0;
}
