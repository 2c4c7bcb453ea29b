/* The scalar functions the CUDA kernels take from the CPU backend
 * (trainer/cpu/scalar_math.h through trainer/cuda/kernels.cuh: expf
 * through GELU forward and backward, the dropout draw and its threshold),
 * compiled by nvcc's host side, against the CPU backend's vectorised
 * loops, bit for bit, evaluated on the host: no GPU needed, so CI checks
 * them. Inputs: 4M values, a quarter of them arbitrary bit patterns (NaN, infinities,
 * subnormals, huge), the rest in [-20, 20] and [-5, 5]; dropout at five
 * probabilities and three seeds. Equal means the same bits (any NaN
 * matches any NaN). And the planner's attention rows for a GPU run
 * against what the backend's attention says it allocates. */
#include <math.h>
#include <string.h>

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
