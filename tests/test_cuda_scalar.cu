/* The scalar functions the CUDA kernels take from the CPU backend
 * (trainer/cpu/scalar_math.h through trainer/cuda/kernels.cuh: expf
 * through GELU forward and backward, the dropout draw and its threshold),
 * compiled by nvcc's host side, against the CPU backend's vectorised
 * loops, bit for bit, evaluated on the host: no GPU needed, so CI checks
 * them. Inputs: 4M values, a quarter of them arbitrary bit patterns (NaN, infinities,
 * subnormals, huge), the rest in [-20, 20] and [-5, 5]; dropout at five
 * probabilities and three seeds. Equal means the same bits (any NaN
 * matches any NaN). And the planner's attention rows for a GPU run
 * against what the backend's attention says it allocates, and its ops'
 * scratch row against what the backend reserves and what each op asks
 * (cuda_sizes.h's figures, which the ops call) at every smaller batch,
 * each figure against what the op's layout uses, CUB's sort storage
 * computed from CUB's own policies. */
#include <math.h>
#include <string.h>

#include <cub/device/device_radix_sort.cuh>

#include "backend.h"
#include "kernels.cuh"
#include "pile_test.h"
#include "plan.h"

#define N ((size_t)1 << 22)

static uint32_t f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float f32_of(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static float urand(double lo, double hi) { return (float)(lo + (hi - lo) * (double)(pile_test_rng() >> 11) / 9007199254740992.0); }

static int same(float a, float b) { return f32_bits(a) == f32_bits(b) || (isnan(a) && isnan(b)); }

static uint64_t up256(uint64_t x) { return (x + 255) / 256 * 256; }

/* What CUB's size query says for DeviceRadixSort::SortPairs of n uint32
 * keys and int32 values on key bits [0, end_bit) on a GPU of policy P:
 * InvokeSingleTile's 1 byte, or InvokeOnesweep's five parts
 * (cub/device/dispatch/dispatch_radix_sort.cuh, CUB 3.0), each rounded to
 * 256 bytes by AliasTemporaries, which adds 255; with P's tile sizes. */
template <typename P> static uint64_t cub_sort_bytes(uint64_t n, int end_bit)
{
    using Off = cub::detail::choose_offset_t<int>;
    if (n <= (uint64_t)P::SingleTilePolicy::BLOCK_THREADS * P::SingleTilePolicy::ITEMS_PER_THREAD) return 1;
    const uint64_t tile = (uint64_t)P::OnesweepPolicy::BLOCK_THREADS * P::OnesweepPolicy::ITEMS_PER_THREAD;
    const uint64_t bits = P::ONESWEEP_RADIX_BITS, digits = (uint64_t)1 << bits;
    const uint64_t portion = (((uint64_t)1 << 28) - 1) / tile * tile, passes = ((uint64_t)end_bit + bits - 1) / bits;
    const uint64_t portions = (n + portion - 1) / portion, blocks = ((n < portion ? n : portion) + tile - 1) / tile;
    return up256(portions * passes * digits * sizeof(Off)) + up256(blocks * digits * 4) +
           2 * up256(passes > 1 ? n * 4 : 0) + up256(portions * passes * 4) + 255;
}

/* The largest sort storage of the policies our code runs with: sm_80,
 * sm_90 and the compute_90 PTX (Policy900 too), and CUB's newest. */
static uint64_t cub_sort_most(uint64_t n, int end_bit)
{
    using H = cub::detail::radix::policy_hub<uint32_t, int32_t, cub::detail::choose_offset_t<int>>;
    uint64_t a = cub_sort_bytes<H::Policy800>(n, end_bit), b = cub_sort_bytes<H::Policy900>(n, end_bit),
             c = cub_sort_bytes<H::Policy1000>(n, end_bit);
    return a > b ? (a > c ? a : c) : (b > c ? b : c);
}

/* The figures of every scratch request model.c's backward and the
 * optimizer's norm make with `rows` rows (tokens) of width C: layernorm_bwd,
 * matmul_bwd's biases (c_attn 3C, attn c_proj C, c_fc 4C, mlp c_proj C),
 * embed_bwd, sumsq; each op asks pile__cuda_scratch for exactly these. */
#define N_REQUESTS 6
static uint64_t op_requests(int rows, int C, uint64_t r[N_REQUESTS])
{
    r[0] = pile__cuda_layernorm_bwd_scratch_size(rows, C);
    r[1] = pile__cuda_matmul_bwd_scratch_size(rows, 3 * C);
    r[2] = pile__cuda_matmul_bwd_scratch_size(rows, C);
    r[3] = pile__cuda_matmul_bwd_scratch_size(rows, 4 * C);
    r[4] = pile__cuda_embed_bwd_scratch_size(rows);
    r[5] = pile__cuda_sumsq_scratch_size();
    uint64_t m = 0;
    for (int i = 0; i < N_REQUESTS; i++) m = r[i] > m ? r[i] : m;
    return m;
}

/* The bytes each op's layout uses at rows rows of width C, as its launch
 * computes them (chunks from the functions the kernels' launches call,
 * CUB's storage from its policies); 0 when every one is within the op's
 * figure, else the first that is not (and its name in *what). */
static int layouts_fit(int rows, int C, int end_bit, const char **what)
{
    const int ln_rows = pile__cuda_ln_chunk_rows(rows), ln_chunks = (rows + ln_rows - 1) / ln_rows;
    *what = "layernorm_bwd";
    if (ln_chunks > PILE_CUDA_LN_MAX_CHUNKS ||
        (uint64_t)ln_chunks * C * 4 > pile__cuda_layernorm_bwd_part_size(rows, C))
        return 1;
    const int cs_rows = pile__cuda_colsum_chunk_rows(rows), cs_chunks = (rows + cs_rows - 1) / cs_rows;
    *what = "matmul_bwd";
    if (cs_chunks > PILE_CUDA_COLSUM_MAX_CHUNKS ||
        (uint64_t)cs_chunks * 4 * C * 4 > pile__cuda_matmul_bwd_scratch_size(rows, 4 * C))
        return 1;
    *what = "embed_bwd";
    if (4 * pile__cuda_embed_ids_size(rows) + cub_sort_most((uint64_t)rows, end_bit) > pile__cuda_embed_bwd_scratch_size(rows))
        return 1;
    return 0;
}

int main(void)
{
    pile_backend *be;
    pile_err err;
    if (pile_backend_open(&be, "cpu", 0, &err)) {
        printf("# %s\n", err.msg);
        return 1;
    }
    pile_test_rng_state = 20261203;
    float *x = (float *)malloc(N * 4), *d = (float *)malloc(N * 4), *acc = (float *)malloc(N * 4), *got = (float *)malloc(N * 4);
    for (size_t i = 0; i < N; i++) {
        x[i] = i % 4 == 0 ? f32_of((uint32_t)pile_test_rng()) : i % 4 == 1 ? urand(-20, 20) : urand(-5, 5);
        d[i] = urand(-1, 1);
        acc[i] = urand(-1, 1);
    }
    const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 88.0f, 88.5f, -87.0f, -87.5f, 1e-30f, 1e6f, -1e6f};
    for (size_t k = 0; k < sizeof special / sizeof *special; k++) x[4 * k] = special[k];
    pile_tensor tx = pile_backend_alloc(be, PILE_DTYPE_F32, N), td = pile_backend_alloc(be, PILE_DTYPE_F32, N),
                ta = pile_backend_alloc(be, PILE_DTYPE_F32, N), to = pile_backend_alloc(be, PILE_DTYPE_F32, N);
    pile_backend_upload(be, tx, x, N);
    pile_backend_upload(be, td, d, N);
    pile_backend_upload(be, ta, acc, N);

    TEST("gelu_fwd: pile_gelu is the cpu's");
    pile_backend_gelu_fwd(be, to, tx, N);
    pile_backend_download(be, got, to, N);
    size_t bad = 0;
    for (size_t i = 0; i < N; i++)
        if (!same(got[i], pile_gelu(x[i])) && bad++ < 3) printf("# x %a: cpu %a, cuda %a\n", x[i], got[i], pile_gelu(x[i]));
    ASSERT_EQ(bad, 0);

    TEST("gelu_bwd: dinp + pile_gelu_grad * dout is the cpu's");
    pile_backend_gelu_bwd(be, ta, tx, td, N);
    pile_backend_download(be, got, ta, N);
    bad = 0;
    for (size_t i = 0; i < N; i++) {
        float want = acc[i];
        want += pile_gelu_grad(x[i]) * d[i];
        if (!same(got[i], want) && bad++ < 3) printf("# x %a: cpu %a, cuda %a\n", x[i], got[i], want);
    }
    ASSERT_EQ(bad, 0);

    TEST("dropout: pile_dropout_draw gives the cpu's mask and scale");
    const float ps[] = {0.1f, 0.5f, 0.37f, 1e-7f, 0.9999f};
    const uint64_t seeds[] = {0, 1, 0xdeadbeefcafef00dull};
    size_t kept = 0;
    bad = 0;
    for (int a = 0; a < 5; a++)
        for (int b = 0; b < 3; b++) {
            pile_backend_upload(be, tx, d, N);
            pile_backend_dropout(be, tx, N, ps[a], seeds[b]);
            pile_backend_download(be, got, tx, N);
            /* as pile__cuda_dropout forms them on the host */
            const uint32_t thresh = (uint32_t)ceil((double)ps[a] * 16777216.0);
            const float s = 1.0f / (1.0f - ps[a]);
            for (size_t i = 0; i < N; i++) {
                const int keep = pile_dropout_draw(seeds[b], i) >= thresh;
                const float want = keep ? d[i] * s : 0.0f;
                kept += keep;
                if (!same(got[i], want) && bad++ < 3) printf("# p %g seed %d i %zu: cpu %a, cuda %a\n", ps[a], b, i, got[i], want);
            }
        }
    ASSERT_EQ(bad, 0);
    ASSERT(kept > N && kept < 15 * N); /* both outcomes occurred */
    ASSERT_EQ(pile_backend_sync(be, &err), 0);

    TEST("plan: a GPU run's attention rows are the CUDA backend's sizes (saved per layer, scratch once)");
    pile_plan_settings st;
    memset(&st, 0, sizeof st);
    st.n_layer = 3;
    st.n_head = 5;
    st.n_embd = 320;
    st.vocab_size = 1000;
    st.n_positions = st.seq_len = 77;
    st.batch_size = 3;
    st.precision = PILE_PRECISION_BF16;
    st.gpus = st.nodes = 1;
    pile_plan p;
    ASSERT_EQ(pile_plan_compute(&st, &p, &err), 0);
    const uint64_t saved = pile__cuda_attention_saved_bytes(NULL, 3, 77, 320, 5);
    const uint64_t scratch = pile__cuda_attention_scratch_bytes(NULL, 3, 77, 320, 5);
    ASSERT_EQ(p.gpu[PILE_PLAN_ATTENTION], 3 * ((saved + 63) / 64 * 64));
    ASSERT_EQ(p.gpu[PILE_PLAN_ATT_SCRATCH], (scratch + 63) / 64 * 64);
    ASSERT(scratch > 0);

    TEST("plan: a GPU run's ops' scratch is what the backend reserves, the largest op request; every request at a "
         "smaller batch fits in it, every op's layout in its request");
    /* gpt2-tiny, GPT-2 124M (8 and 80 x 1024, 70 x 1000: layernorm_bwd's
     * chunks change rule at 65536 rows, and its exact count falls and
     * rises again above it), odd batches, lengths and vocabularies */
    static const int shapes[][4] = {{4, 128, 64, 50257}, {8, 1024, 768, 50257}, {80, 1024, 768, 50257},
                                    {70, 1000, 768, 50257}, {3, 77, 320, 1000}, {5, 1023, 200, 50257},
                                    {1, 1, 8, 3},          {7, 333, 96, 65537}};
    for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
        const int B = shapes[k][0], T = shapes[k][1], C = shapes[k][2], V = shapes[k][3], rows = B * T;
        st.batch_size = B;
        st.seq_len = st.n_positions = T;
        st.n_embd = C;
        st.n_head = 1;
        st.vocab_size = V;
        ASSERT_EQ(pile_plan_compute(&st, &p, &err), 0);
        const uint64_t planned = p.gpu[PILE_PLAN_OP_SCRATCH];
        ASSERT_EQ(planned, pile__cuda_scratch_bytes(B, T, C));
        uint64_t most[N_REQUESTS], r[N_REQUESTS];
        ASSERT_EQ(planned, op_requests(rows, C, most));
        ASSERT(planned % 256 == 0);
        int end_bit = 1; /* embed_bwd's: the bits of the largest key, the sentinel Vp */
        while (end_bit < 32 && ((uint64_t)1 << end_bit) <= (uint64_t)p.vocab_padded) end_bit++;
        size_t over = 0, misfit = 0;
        for (int n = 1; n <= rows; n++) {
            const char *what;
            op_requests(n, C, r);
            for (int i = 0; i < N_REQUESTS; i++) /* each op's figure grows with its shape */
                if (r[i] > most[i] && over++ < 3) printf("# %d x %d x %d: at %d rows request %d is above its planned figure\n", B, T, C, n, i);
            if ((layouts_fit(n, C, end_bit, &what) || layouts_fit(n, C, 32, &what)) && misfit++ < 3)
                printf("# %d rows of %d: %s's layout is above its figure\n", n, C, what);
        }
        ASSERT_EQ(over, 0);
        ASSERT_EQ(misfit, 0);
    }
    /* sumsq: at most PILE_CUDA_SUMSQ_PARTS partials and the total, any n */
    static const size_t sums[] = {1, 8191, 8192, 8193, (size_t)8192 * 1024, (size_t)8192 * 1024 + 1, 124475904,
                                  1000000007, (size_t)1 << 40};
    for (size_t k = 0; k < sizeof sums / sizeof *sums; k++) {
        size_t chunk = (sums[k] + PILE_CUDA_SUMSQ_PARTS - 1) / PILE_CUDA_SUMSQ_PARTS;
        chunk = chunk < PILE_CUDA_SUMSQ_MIN_CHUNK ? PILE_CUDA_SUMSQ_MIN_CHUNK : (chunk + 7) / 8 * 8;
        ASSERT((sums[k] + chunk - 1) / chunk * 8 + 8 <= pile__cuda_sumsq_scratch_size());
    }

    pile_backend_free(&tx);
    pile_backend_free(&td);
    pile_backend_free(&ta);
    pile_backend_free(&to);
    pile_backend_close(be);
    free(x);
    free(d);
    free(acc);
    free(got);
    return TEST_DONE();
}
