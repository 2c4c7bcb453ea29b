/* Tests of the memory planner (trainer/plan.h): the CPU backend's plan
 * against what the model and the optimizer really allocate in the backend
 * (pile_backend_bytes_in_use) over shapes, recompute modes and dropout;
 * the parameter count against the model's; DeepSpeed's estimators on
 * values DeepSpeed 0.19.8 itself returned; the GPU model states summing to
 * DeepSpeed's figure; the GPU's attention rows (the CUDA backend's
 * saved state and scratch); the trainer's host check with several ranks
 * on one host; the verdicts; the advice (each option fits, the settings
 * did not); the refusals. tests/reference/plan_ref.py compares a
 * table of settings with DeepSpeed's functions. */
#include <stdint.h>
#include <string.h>

#include "backend.h"
#include "model.h"
#include "optim.h"
#include "pile_test.h"
#include "plan.h"

static pile_plan_settings cpu_settings(pile_backend *be, int L, int NH, int C, int V, int P, int B, int T)
{
    pile_plan_settings s;
    memset(&s, 0, sizeof s);
    s.n_layer = L;
    s.n_head = NH;
    s.n_embd = C;
    s.vocab_size = V;
    s.n_positions = P;
    s.batch_size = B;
    s.seq_len = T;
    s.accumulation_steps = 1;
    s.nodes = 1;
    s.threads = pile_backend_threads(be);
    s.backend = be;
    return s;
}

/* The plan's backend bytes against the backend's count once the model and
 * its optimizer are created, as the trainer creates them. */
static void check_against_backend(pile_backend *be, pile_plan_settings s, float dropout)
{
    pile_err err;
    pile_plan p;
    s.dropout = dropout > 0;
    OK(pile_plan_compute(&s, &p, &err), &err);
    pile_model_config mc = {s.vocab_size,  s.n_positions, s.n_layer, s.n_head,
                            s.n_embd,      dropout,       s.recompute, PILE_DTYPE_F32};
    pile_model *m = NULL;
    pile_optim *o = NULL;
    pile_adamw_config ac = {0.9f, 0.999f, 1e-8f, 0.01f, 0};
    size_t before = pile_backend_bytes_in_use(be);
    OK(pile_model_create(&m, be, &mc, s.batch_size, s.seq_len, &err), &err);
    if (m) OK(pile_optim_create(&o, m, &ac, &err), &err);
    if (m && o) {
        ASSERT_EQ(pile_backend_bytes_in_use(be) - before, p.backend_bytes);
        ASSERT_EQ(pile_model_param_count(m), p.params);
        ASSERT_EQ(pile_model_flat_size(m), p.params_allocated);
        /* the rows that hold the backend's bytes are all in the host column */
        ASSERT(p.total_cpu > p.backend_bytes);
    }
    pile_optim_free(o);
    pile_model_free(m);
}

static void test_cpu_matches_backend(pile_backend *be)
{
    TEST("cpu: the plan equals the backend's allocations (shapes, recompute, dropout)");
    static const int shapes[][7] = {
        /* L, NH, C, V, P, B, T */
        {2, 2, 64, 256, 64, 4, 64},   {3, 3, 48, 1000, 40, 3, 33}, {1, 1, 8, 5, 7, 1, 7},
        {2, 4, 96, 300, 300, 2, 260}, {4, 2, 32, 97, 129, 5, 129},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const int *x = shapes[i];
        for (int r = 0; r < 3; r++) {
            for (int d = 0; d < 2; d++) {
                pile_plan_settings s = cpu_settings(be, x[0], x[1], x[2], x[3], x[4], x[5], x[6]);
                s.recompute = (pile_recompute)r;
                check_against_backend(be, s, d ? 0.1f : 0.0f);
            }
        }
    }
}

/* The sharded stages on one rank, as the trainer runs --zero N
 * [--offload ...]: the model's backend holds what the plan says (the
 * offloaded tensors are the other backend's). */
static void test_cpu_zero_matches_backend(pile_backend *be)
{
    TEST("cpu: ZeRO 1 to 3, offloaded or not: the plan equals the backend's allocations");
    static const int shapes[][7] = {{2, 2, 64, 256, 64, 4, 64}, {3, 3, 48, 1000, 40, 3, 33}, {1, 1, 8, 5, 7, 1, 7}};
    pile_backend *off = NULL;
    pile_err err;
    OK(pile_backend_open(&off, "cpu", 1, &err), &err);
    for (size_t i = 0; off && i < sizeof shapes / sizeof shapes[0]; i++) {
        const int *x = shapes[i];
        for (int stage = 1; stage <= 3; stage++) {
            for (int o = 0; o <= (stage == 3 ? 2 : 1); o++) {
                pile_plan_settings s = cpu_settings(be, x[0], x[1], x[2], x[3], x[4], x[5], x[6]);
                s.zero_stage = stage;
                s.offload = (pile_offload)o;
                s.ranks = 1;
                pile_plan p;
                OK(pile_plan_compute(&s, &p, &err), &err);
                pile_model_config mc = {s.vocab_size, s.n_positions, s.n_layer, s.n_head,
                                        s.n_embd,     0.0f,          s.recompute, PILE_DTYPE_F32};
                pile_model *m = NULL;
                pile_optim *opt = NULL;
                pile_adamw_config ac = {0.9f, 0.999f, 1e-8f, 0.01f, 0};
                pile_optim_zero z = {stage, NULL, o ? off : NULL, 0, o == 2, 0, 0, 0};
                size_t before = pile_backend_bytes_in_use(be);
                OK(pile_model_create(&m, be, &mc, s.batch_size, s.seq_len, &err), &err);
                if (m) OK(pile_optim_create_zero(&opt, m, &ac, &z, &err), &err);
                if (m && opt) {
                    size_t got = pile_backend_bytes_in_use(be) - before;
                    if (got != p.backend_bytes)
                        printf("# shape %zu, stage %d, offload %d: backend %zu, plan %" PRIu64 "\n", i, stage, o, got,
                               p.backend_bytes);
                    ASSERT_EQ(got, p.backend_bytes);
                }
                pile_optim_free(opt);
                pile_model_free(m);
            }
        }
    }
    pile_backend_close(off);
}

static void test_gpt2_counts(pile_backend *be)
{
    TEST("gpt2: 124M parameters, DeepSpeed's largest layer (wte), activations per recompute mode");
    pile_err err;
    pile_plan p;
    pile_plan_settings s = cpu_settings(be, 12, 12, 768, 50257, 1024, 8, 1024);
    OK(pile_plan_compute(&s, &p, &err), &err);
    ASSERT_EQ(p.params, 124439808);
    ASSERT_EQ(p.largest_layer_params, 50257ull * 768);
    ASSERT_EQ(p.vocab_padded, 50304);
    /* model.h: 16 C + 4 floats per position and layer (and attention's
     * saved state), 8 C + 4 for gelu, C for block */
    const uint64_t N = 8 * 1024, att = 8ull * 12 * 1024 * 4;
    ASSERT_EQ(p.layer_bytes[PILE_RECOMPUTE_NONE], N * (16 * 768 + 4) * 4 + att);
    ASSERT_EQ(p.layer_bytes[PILE_RECOMPUTE_GELU], N * (8 * 768 + 4) * 4 + att);
    ASSERT_EQ(p.layer_bytes[PILE_RECOMPUTE_BLOCK], N * 768 * 4);
    ASSERT(p.total_cpu > p.model_states_cpu);
    ASSERT_EQ(p.model_states_cpu, 4 * 4 * p.params_allocated);
}

/* Figures DeepSpeed 0.19.8 returned for these arguments (its
 * estimate_zero2/zero3_model_states_mem_needs, additional_buffer_factor
 * 1.5), among them ones whose products are not integers. */
static void test_deepspeed_formulas(void)
{
    TEST("deepspeed: estimators' figures as DeepSpeed 0.19.8 returned them");
    uint64_t c, g;
    pile_plan_deepspeed_zero2(124439808, 8, 2, 1, 1.5, &c, &g);
    ASSERT_EQ(c, 11946221568ull);
    ASSERT_EQ(g, 248879616ull);
    pile_plan_deepspeed_zero3(124439808, 38597376, 8, 2, 1, 1, 1, 1.5, &c, &g);
    ASSERT_EQ(c, 1679937408ull);
    ASSERT_EQ(g, 154389504ull);
    static const struct {
        uint64_t P, LL;
        int gpn, nodes, off, offp, zi, stage;
        uint64_t cpu, gpu;
    } want[] = {
        {355000001ull, 0ull, 7, 3, 0, 0, 0, 2, 14910000042ull, 1014285717ull},
        {774030080ull, 0ull, 1, 1, 1, 0, 0, 2, 18576721920ull, 1548060160ull},
        {235061399552ull, 822140928ull, 8, 1, 1, 1, 1, 3, 6346657787904ull, 3288563712ull},
        {235061399552ull, 822140928ull, 8, 3, 1, 0, 0, 3, 11282947178496ull, 22877013674ull},
        {1557611200ull, 81920000ull, 3, 7, 0, 0, 0, 3, 28037001600ull, 1662775314ull},
        {1557611200ull, 81920000ull, 8, 7, 1, 1, 0, 3, 74765337600ull, 327680000ull},
        {999999937ull, 12345679ull, 6, 5, 1, 0, 1, 3, 4799999697ull, 116049378ull},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        if (want[i].stage == 2)
            pile_plan_deepspeed_zero2(want[i].P, want[i].gpn, want[i].nodes, want[i].off, 1.5, &c, &g);
        else
            pile_plan_deepspeed_zero3(want[i].P, want[i].LL, want[i].gpn, want[i].nodes, want[i].off, want[i].offp,
                                      want[i].zi, 1.5, &c, &g);
        if (c != want[i].cpu || g != want[i].gpu)
            PILE_FAIL_("row %zu (P %llu, stage %d, %d x %d, offload %d/%d, zero_init %d): cpu %llu gpu %llu, "
                       "DeepSpeed %llu %llu",
                       i, (unsigned long long)want[i].P, want[i].stage, want[i].gpn, want[i].nodes, want[i].off,
                       want[i].offp, want[i].zi, (unsigned long long)c, (unsigned long long)g,
                       (unsigned long long)want[i].cpu, (unsigned long long)want[i].gpu);
    }
}

static pile_plan_settings gpu_settings(int gpus, int nodes, int zero, pile_offload off)
{
    pile_plan_settings s;
    memset(&s, 0, sizeof s);
    s.n_layer = 12;
    s.n_head = 12;
    s.n_embd = 768;
    s.vocab_size = 50257;
    s.n_positions = 1024;
    s.batch_size = 8;
    s.seq_len = 1024;
    s.precision = PILE_PRECISION_BF16;
    s.gpus = gpus;
    s.nodes = nodes;
    s.zero_stage = zero;
    s.offload = off;
    return s;
}

static void test_gpu_states(void)
{
    TEST("gpu: model states per GPU and per node are DeepSpeed's for ZeRO 2 and 3, rows summing to them");
    pile_err err;
    static const struct { int zero; pile_offload off; } zo[] = {
        {2, PILE_OFFLOAD_NONE}, {2, PILE_OFFLOAD_OPTIMIZER}, {3, PILE_OFFLOAD_NONE},
        {3, PILE_OFFLOAD_OPTIMIZER}, {3, PILE_OFFLOAD_ALL},
    };
    static const int gn[][2] = {{1, 1}, {8, 1}, {8, 2}, {3, 5}, {7, 3}};
    for (size_t i = 0; i < sizeof zo / sizeof zo[0]; i++) {
        for (size_t j = 0; j < sizeof gn / sizeof gn[0]; j++) {
            pile_plan p;
            pile_plan_settings s = gpu_settings(gn[j][0], gn[j][1], zo[i].zero, zo[i].off);
            OK(pile_plan_compute(&s, &p, &err), &err);
            ASSERT(p.deepspeed_estimator != NULL);
            ASSERT_EQ(p.model_states_gpu, p.deepspeed_gpu);
            ASSERT_EQ(p.model_states_cpu, p.deepspeed_cpu);
            uint64_t sum = 0;
            for (int r = PILE_PLAN_PARAMS; r <= PILE_PLAN_GATHERED; r++) sum += p.gpu[r];
            ASSERT_EQ(sum, p.model_states_gpu);
            /* the host holds exactly 16 (or 18) bytes a parameter across the
             * nodes when offloaded, give or take rounding */
            if (zo[i].off != PILE_OFFLOAD_NONE) {
                uint64_t per = zo[i].off == PILE_OFFLOAD_ALL ? 18 : 16;
                ASSERT(p.host_states * (uint64_t)s.nodes <= per * p.params);
                ASSERT(p.host_states * (uint64_t)s.nodes + 64 * (uint64_t)s.nodes >= per * p.params);
            }
        }
    }
    /* ZeRO 0: every GPU holds all of DeepSpeed's 2 + 18 bytes a parameter
     * (16-bit parameters and gradients, fp32 gradients, master weights,
     * moments); no estimator */
    pile_plan p;
    pile_plan_settings s = gpu_settings(8, 1, 0, PILE_OFFLOAD_NONE);
    OK(pile_plan_compute(&s, &p, &err), &err);
    ASSERT(p.deepspeed_estimator == NULL);
    ASSERT_EQ(p.model_states_gpu, 20 * p.params);
    /* mixed precision keeps 16-bit activations on GPUs: half of fp32's
     * [N, C] regions, the fp32 statistics and log-sum-exp as they are */
    pile_plan p32;
    s.precision = PILE_PRECISION_FP32;
    OK(pile_plan_compute(&s, &p32, &err), &err);
    ASSERT(p.layer_bytes[0] < p32.layer_bytes[0] && p.layer_bytes[0] > p32.layer_bytes[0] / 2);
}

/* attention.cu keeps fp32 [B, NH, T] per layer (the log-sum-exp) and as
 * much once, shared by all layers, for its backward's D: the GPU plan
 * counts both where the CUDA backend's arena holds them. */
static void test_gpu_attention(void)
{
    TEST("gpu: attention's saved state per layer and its backward's scratch once, as the CUDA backend allocates");
    pile_err err;
    static const int shapes[][4] = {{8, 1024, 12, 12}, {3, 33, 3, 2}, {1, 7, 1, 1}}; /* B, T, NH, L */
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const int B = shapes[i][0], T = shapes[i][1], NH = shapes[i][2], L = shapes[i][3];
        const uint64_t rows = (uint64_t)B * NH * T * 4, rounded = (rows + 63) / 64 * 64;
        for (int r = 0; r < 3; r++) {
            pile_plan_settings s = gpu_settings(1, 1, 0, PILE_OFFLOAD_NONE);
            s.batch_size = B;
            s.seq_len = T;
            s.n_head = NH;
            s.n_layer = L;
            s.n_embd = 64 * NH;
            s.recompute = (pile_recompute)r;
            pile_plan p;
            OK(pile_plan_compute(&s, &p, &err), &err);
            ASSERT_EQ(p.gpu[PILE_PLAN_ATT_SCRATCH], rounded);
            /* recompute block refills one layer's */
            ASSERT_EQ(p.gpu[PILE_PLAN_ATTENTION], r == PILE_RECOMPUTE_BLOCK ? rounded : (uint64_t)L * rounded);
            ASSERT_EQ(p.cpu[PILE_PLAN_ATT_SCRATCH], 0);
            uint64_t sum = 0;
            for (int k = 0; k < PILE_PLAN_ROWS; k++) sum += p.gpu[k];
            ASSERT_EQ(p.total_gpu, sum);
        }
    }
}

/* The CUDA backend's ops' scratch (trainer/cuda/cuda_sizes.h; the .cu
 * files' own requests are checked in tests/test_cuda_scalar.cu, built
 * with CUDA): a row of its own on a GPU plan, counted in the total, none
 * on the CPU, whose backend takes none. */
static void test_gpu_op_scratch(pile_backend *be)
{
    TEST("gpu: the ops' scratch is a row of the plan (GPT-2 124M at 8 x 1024: 768 KiB), none on the CPU");
    pile_err err;
    pile_plan p;
    pile_plan_settings s = gpu_settings(1, 1, 0, PILE_OFFLOAD_NONE);
    OK(pile_plan_compute(&s, &p, &err), &err);
    /* N = 8192 rows: layernorm_bwd's partials, 2 x 128 chunks of 64 rows
     * x 768 floats, as large as c_fc's bias partials, 64 chunks of 128
     * rows x 3072 floats; the sort of 8192 tokens and sumsq's 1025
     * doubles are smaller */
    ASSERT_EQ(p.gpu[PILE_PLAN_OP_SCRATCH], 2 * 128 * 768 * 4);
    ASSERT_EQ(p.gpu[PILE_PLAN_OP_SCRATCH], 64 * 3072 * 4);
    uint64_t sum = 0;
    for (int k = 0; k < PILE_PLAN_ROWS; k++) sum += p.gpu[k];
    ASSERT_EQ(p.total_gpu, sum);
    ASSERT_STR_EQ(pile_plan_row_key(PILE_PLAN_OP_SCRATCH), "op_scratch");
    /* a narrow model: the sort (keys, positions and CUB's storage) is the
     * largest */
    s.n_embd = s.n_head = 8;
    OK(pile_plan_compute(&s, &p, &err), &err);
    ASSERT(p.gpu[PILE_PLAN_OP_SCRATCH] > 4 * 8192 * 4);
    /* the CPU backend: no such scratch, and nothing to reserve */
    pile_plan_settings c = cpu_settings(be, 2, 2, 64, 256, 64, 4, 64);
    OK(pile_plan_compute(&c, &p, &err), &err);
    ASSERT_EQ(p.cpu[PILE_PLAN_OP_SCRATCH], 0);
    ASSERT_EQ(p.gpu[PILE_PLAN_OP_SCRATCH], 0);
    ASSERT_EQ(pile_backend_reserve_scratch(be, 4, 64, 64, &err), 0);
    ASSERT_EQ(pile_backend_reserve_scratch(be, 0, 64, 64, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "0 x 64") != NULL);
}

/* The trainer's check before step 1 (pile_plan_check_host, as
 * pile_plan_check_run calls it with MemAvailable): the host holds every
 * rank on it, each with its own table, sharded over all the run's ranks. */
static void test_host_check_ranks(pile_backend *be)
{
    TEST("host check: the ranks on one host together against its memory; the message names each, how many, the sum");
    pile_err err;
    pile_plan p;
    pile_plan_settings s = cpu_settings(be, 2, 2, 64, 256, 64, 4, 64);
    s.ranks = 2;
    s.local_ranks = 1;
    OK(pile_plan_compute(&s, &p, &err), &err);
    const uint64_t one = p.process_cpu;
    ASSERT_EQ(p.total_cpu, one);
    /* room for one rank and a half */
    s.cpu_mem = one + one / 2;
    ASSERT_EQ(pile_plan_check_host(&s, "MemAvailable", &err), 0);
    s.local_ranks = 2;
    OK(pile_plan_compute(&s, &p, &err), &err);
    ASSERT_EQ(p.process_cpu, one);
    ASSERT_EQ(p.total_cpu, 2 * one);
    ASSERT_EQ(pile_plan_check_host(&s, "MemAvailable", &err), PILE_ELIMIT);
    printf("# %s\n", err.msg);
    ASSERT(strstr(err.msg, "its 2 ranks on this host need ") != NULL);
    ASSERT(strstr(err.msg, " each)") != NULL && strstr(err.msg, "(MemAvailable)") != NULL);
    ASSERT(strstr(err.msg, "each rank's parameters ") != NULL && strstr(err.msg, "--skip_memory_check") != NULL);
    /* 0 local ranks: all of them, on one host */
    s.local_ranks = 0;
    ASSERT_EQ(pile_plan_check_host(&s, "MemAvailable", &err), PILE_ELIMIT);
    /* one rank in the same room: its own message, no ranks named */
    s.ranks = 1;
    s.local_ranks = 1;
    s.cpu_mem = one - 1;
    ASSERT_EQ(pile_plan_check_host(&s, "MemAvailable", &err), PILE_ELIMIT);
    ASSERT(strstr(err.msg, "the run does not fit in memory: it needs ") != NULL && strstr(err.msg, "ranks") == NULL);
    s.cpu_mem = 0;
    ASSERT_EQ(pile_plan_check_host(&s, NULL, &err), 0); /* unknown: not judged */
    /* 4 ranks on 2 hosts at ZeRO 2: each host holds 2 of the 4-way shards */
    s = cpu_settings(be, 2, 2, 64, 256, 64, 4, 64);
    s.zero_stage = 2;
    s.ranks = 4;
    s.local_ranks = 2;
    OK(pile_plan_compute(&s, &p, &err), &err);
    ASSERT_EQ(p.total_cpu, 2 * p.process_cpu);
    pile_plan q;
    s.local_ranks = 4;
    OK(pile_plan_compute(&s, &q, &err), &err);
    ASSERT_EQ(q.process_cpu, p.process_cpu);
    ASSERT_EQ(q.total_cpu, 4 * p.process_cpu);
    s.local_ranks = 5;
    ASSERT_EQ(pile_plan_compute(&s, &p, &err), PILE_EINVAL);
}

static void test_verdicts_and_advice(void)
{
    TEST("fits: judged against --gpu-mem and --cpu-mem; advice that fits");
    pile_err err;
    pile_plan p;
    pile_plan_settings s = gpu_settings(8, 1, 2, PILE_OFFLOAD_NONE);
    OK(pile_plan_compute(&s, &p, &err), &err);
    ASSERT_EQ(p.fits, -1);
    s.gpu_mem = p.total_gpu;
    OK(pile_plan_compute(&s, &p, &err), &err);
    ASSERT_EQ(p.fits, 1);
    ASSERT_EQ(p.fits_cpu, -1);
    s.gpu_mem = p.total_gpu - 1;
    OK(pile_plan_compute(&s, &p, &err), &err);
    ASSERT_EQ(p.fits, 0);
    s.gpu_mem = (uint64_t)2 << 30;
    s.cpu_mem = (uint64_t)64 << 30;
    OK(pile_plan_compute(&s, &p, &err), &err);
    ASSERT_EQ(p.fits_gpu, 0);
    pile_plan_option opts[6];
    int n = pile_plan_advise(&s, opts, 6);
    ASSERT(n > 0);
    for (int i = 0; i < n; i++) {
        pile_plan q;
        OK(pile_plan_compute(&opts[i].settings, &q, &err), &err);
        ASSERT_EQ(q.fits, 1);
        ASSERT(strlen(opts[i].flags) > 0);
    }
    /* nothing to advise for a plan that fits or is not judged */
    s.gpu_mem = 0;
    s.cpu_mem = 0;
    ASSERT_EQ(pile_plan_advise(&s, opts, 6), 0);

    TEST("235B on 8 x 80 GiB with 1 TiB, ZeRO 3, everything offloaded: the GPU fits, the host does not");
    s = gpu_settings(8, 1, 3, PILE_OFFLOAD_ALL);
    s.n_layer = 95;
    s.n_head = 112;
    s.n_embd = 14336;
    s.batch_size = 1;
    s.seq_len = s.n_positions = 2048;
    s.recompute = PILE_RECOMPUTE_BLOCK;
    s.gpu_mem = (uint64_t)80 << 30;
    s.cpu_mem = (uint64_t)1024 << 30;
    OK(pile_plan_compute(&s, &p, &err), &err);
    ASSERT(p.params > 234000000000ull && p.params < 236000000000ull);
    ASSERT_EQ(p.fits_gpu, 1);
    ASSERT_EQ(p.fits_cpu, 0);
    n = pile_plan_advise(&s, opts, 6);
    ASSERT(n > 0);
    ASSERT(n > 0 && opts[0].settings.nodes > 1);
}

static void test_refusals(pile_backend *be)
{
    TEST("refused: impossible settings, each named");
    pile_err err;
    pile_plan p;
    pile_plan_settings s = gpu_settings(8, 1, 2, PILE_OFFLOAD_ALL);
    ASSERT_EQ(pile_plan_compute(&s, &p, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "ZeRO stage 3") != NULL);
    s = gpu_settings(8, 1, 0, PILE_OFFLOAD_OPTIMIZER);
    ASSERT_EQ(pile_plan_compute(&s, &p, &err), PILE_EINVAL);
    s = gpu_settings(8, 1, 4, PILE_OFFLOAD_NONE);
    ASSERT_EQ(pile_plan_compute(&s, &p, &err), PILE_EINVAL);
    s = gpu_settings(8, 0, 2, PILE_OFFLOAD_NONE);
    ASSERT_EQ(pile_plan_compute(&s, &p, &err), PILE_EINVAL);
    s = gpu_settings(8, 1, 2, PILE_OFFLOAD_NONE);
    s.n_embd = 770;
    ASSERT_EQ(pile_plan_compute(&s, &p, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "n_head") != NULL);
    s = gpu_settings(8, 1, 2, PILE_OFFLOAD_NONE);
    s.seq_len = 2048;
    ASSERT_EQ(pile_plan_compute(&s, &p, &err), PILE_EINVAL);
    s = cpu_settings(be, 2, 2, 64, 256, 64, 4, 64);
    s.zero_stage = 2;
    ASSERT_EQ(pile_plan_compute(&s, &p, &err), PILE_EINVAL);
    s = cpu_settings(be, 2, 2, 64, 256, 64, 4, 64);
    s.backend = NULL;
    ASSERT_EQ(pile_plan_compute(&s, &p, &err), PILE_EINVAL);
    pile_offload o;
    ASSERT_EQ(pile_plan_offload_parse("param", &o, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "'param'") != NULL);
    ASSERT_EQ(pile_plan_offload_parse("all", &o, &err), 0);
    ASSERT_EQ(o, PILE_OFFLOAD_ALL);
}

int main(void)
{
    pile_backend *be = NULL;
    pile_err err;
    if (pile_backend_open(&be, "cpu", 2, &err) < 0) {
        printf("# %s\n", err.msg);
        return 1;
    }
    test_cpu_matches_backend(be);
    test_cpu_zero_matches_backend(be);
    test_gpt2_counts(be);
    /* bf16 on the CPU: emulated in fp32 storage, fp32 master weights beside */
    pile_backend *be16 = NULL;
    TEST("cpu, bf16 emulated: the plan equals the backend's allocations (master weights beside)");
    if (pile_backend_open(&be16, "cpu", 2, &err) == 0 && pile_backend_set_emulation(be16, PILE_DTYPE_BF16, &err) == 0) {
        pile_plan_settings s = cpu_settings(be16, 3, 3, 48, 1000, 40, 3, 33);
        s.precision = PILE_PRECISION_BF16;
        for (int r = 0; r < 3; r++) {
            s.recompute = (pile_recompute)r;
            check_against_backend(be16, s, 0.0f);
        }
    } else {
        PILE_FAIL_("cannot open an emulating cpu backend: %s", err.msg);
    }
    pile_backend_close(be16);
    test_deepspeed_formulas();
    test_gpu_states();
    test_gpu_attention();
    test_gpu_op_scratch(be);
    test_host_check_ranks(be);
    test_verdicts_and_advice();
    test_refusals(be);
    pile_backend_close(be);
    return TEST_DONE();
}
