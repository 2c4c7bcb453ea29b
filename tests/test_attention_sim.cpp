/* The CUDA backend's attention kernels (trainer/cuda/attention.cu),
 * compiled for the host through tests/cuda_sim.h and run against the CPU
 * backend (the reference) on fresh random inputs, with poisoned outputs:
 * the forward (out and the saved log-sum-exp), the backward (accumulated
 * into a random dqkv) and decode; every head-size capacity (16 to 256,
 * padded heads too), one to several tiles, causal, documents, and
 * arbitrary (also out-of-range, which both clamp) document starts; fp32,
 * and bf16 / fp16 storage against the CPU emulating it (backend.h), which
 * checks that the kernels round where the CPU does. This checks the
 * kernels' logic where no GPU exists; tests/gpu checks them on one.
 * Tolerances, |sim - cpu| <= rel * |cpu| + abs: fp32 rel 1e-5, abs 1e-5
 * (summation order only); bf16 rel 2^-7 and fp16 rel 2^-10 (one or two
 * units in the last place, where the two sides' fp32 sums round apart),
 * abs 1e-5. */
#include "cuda_sim.h"
/* cuda_sim.h first: the kernels, without their CUDA headers and launches */
#include "cuda/attention.cu"

#include "backend.h"
#include "cuda_sim_check.h"
#include "pile_test.h"

static pile_backend *be;

/* Document starts, kind 1: documents of mean length 16; kind 2: any
 * value in -3 .. t+3 per position (the backends clamp to 0 .. t). */
static std::vector<int32_t> doc_starts(int B, int T, int kind)
{
    std::vector<int32_t> ds((size_t)B * T);
    for (int b = 0; b < B; b++) {
        int cur = 0;
        for (int t = 0; t < T; t++) {
            if (kind == 2) cur = (int)(pile_test_rng() % (uint64_t)(t + 7)) - 3;
            else if (t > 0 && pile_test_rng() % 16 == 0) cur = t;
            ds[(size_t)b * T + t] = cur;
        }
    }
    return ds;
}

template <typename E> static std::vector<E> to_e(const std::vector<float> &v)
{
    std::vector<E> e(v.size());
    for (size_t i = 0; i < v.size(); i++) e[i] = pile_cuda_store<E>(v[i]);
    return e;
}

template <typename E> static std::vector<float> to_f(const std::vector<E> &e)
{
    std::vector<float> v(e.size());
    for (size_t i = 0; i < e.size(); i++) v[i] = pile_cuda_load(e[i]);
    return v;
}

/* A compute-dtype array that no kernel wrote: NaN in every dtype. */
template <typename E> static std::vector<E> poisoned(size_t n)
{
    return std::vector<E>(n, pile_cuda_store<E>(NAN));
}

/* attention.cu's launches (pile__cuda_attention_fwd, _bwd), here. */
template <int HS, typename E>
static void sim_fwd_bwd(E *out, float *lse, float *D, E *dqkv, const E *dout, const E *qkv, const int32_t *ds, int B,
                        int T, int C, int NH)
{
    using cf = pile_att::cfg<HS>;
    const int hs = C / NH;
    const float scale = 1.0f / sqrtf((float)hs);
    const dim3 grid{(unsigned)((T + cf::ROWS - 1) / cf::ROWS), (unsigned)NH, (unsigned)B};
    cuda_sim::launch(grid, cf::THREADS, [&] { pile_att::att_fwd<HS, E>(out, lse, qkv, ds, T, C, NH, hs, scale); });
    cuda_sim::launch(grid, cf::THREADS,
                     [&] { pile_att::att_bwd_dq<HS, E>(dqkv, D, dout, qkv, out, lse, ds, T, C, NH, hs, scale); });
    cuda_sim::launch(grid, cf::THREADS,
                     [&] { pile_att::att_bwd_dkv<HS, E>(dqkv, dout, qkv, lse, D, ds, T, C, NH, hs, scale); });
}

template <typename E>
static void sim_run(E *out, float *lse, float *D, E *dqkv, const E *dout, const E *qkv, const int32_t *ds, int B,
                    int T, int C, int NH)
{
    switch (pile_att::head_cap(C / NH)) {
    case 16: sim_fwd_bwd<16>(out, lse, D, dqkv, dout, qkv, ds, B, T, C, NH); break;
    case 32: sim_fwd_bwd<32>(out, lse, D, dqkv, dout, qkv, ds, B, T, C, NH); break;
    case 64: sim_fwd_bwd<64>(out, lse, D, dqkv, dout, qkv, ds, B, T, C, NH); break;
    case 128: sim_fwd_bwd<128>(out, lse, D, dqkv, dout, qkv, ds, B, T, C, NH); break;
    case 256: sim_fwd_bwd<256>(out, lse, D, dqkv, dout, qkv, ds, B, T, C, NH); break;
    default: PILE_FAIL_("no capacity for head size %d", C / NH);
    }
}

/* A host-memory CPU tensor holding v (the CPU backend's memory is the
 * host's). */
template <typename V> static pile_tensor cpu_tensor(pile_dtype dt, const std::vector<V> &v)
{
    pile_tensor t = pile_backend_alloc(be, dt, v.size());
    if (t.data) memcpy(t.data, v.data(), v.size() * sizeof(V));
    return t;
}

template <typename V> static std::vector<V> cpu_read(pile_tensor t, size_t n)
{
    std::vector<V> v(n);
    if (t.data) memcpy(v.data(), t.data, n * sizeof(V));
    return v;
}

static void set_emulation(pile_dtype dt)
{
    pile_err err;
    OK(pile_backend_set_emulation(be, dt, &err), &err);
}

/* Forward and backward on both sides. kind: 0 causal, 1 documents, 2
 * arbitrary starts (doc_starts). */
template <typename E> static void test_fwd_bwd(int B, int T, int C, int NH, int kind, pile_dtype dt)
{
    const size_t nq = (size_t)B * T * 3 * C, no = (size_t)B * T * C, nr = (size_t)B * NH * T;
    const std::vector<float> qkv = rnd(nq, 1.5f, dt), dout = rnd(no, 1.0f, dt), g0 = rnd(nq, 1.0f, dt);
    const std::vector<int32_t> ds = kind ? doc_starts(B, T, kind) : std::vector<int32_t>();

    set_emulation(dt);
    pile_tensor cq = cpu_tensor(PILE_DTYPE_F32, qkv), cdo = cpu_tensor(PILE_DTYPE_F32, dout);
    pile_tensor cg = cpu_tensor(PILE_DTYPE_F32, g0), cds = kind ? cpu_tensor(PILE_DTYPE_I32, ds) : pile_tensor{}; /* absent */
    pile_tensor co = pile_backend_alloc(be, PILE_DTYPE_F32, no);
    pile_tensor csv = pile_backend_alloc(be, PILE_DTYPE_U8, pile_backend_attention_saved_bytes(be, B, T, C, NH));
    pile_tensor csc = pile_backend_alloc(be, PILE_DTYPE_U8, pile_backend_attention_scratch_bytes(be, B, T, C, NH));
    pile_backend_attention_fwd(be, co, csv, csc, cq, cds, B, T, C, NH);
    pile_backend_attention_bwd(be, cg, csc, cdo, cq, co, csv, cds, B, T, C, NH);
    pile_err err;
    OK(pile_backend_sync(be, &err), &err);
    const std::vector<float> want_out = cpu_read<float>(co, no), want_lse = cpu_read<float>(csv, nr);
    const std::vector<float> want_g = cpu_read<float>(cg, nq);
    pile_tensor *all[] = {&cq, &cdo, &cg, &cds, &co, &csv, &csc};
    for (pile_tensor *t : all) pile_backend_free(t);
    set_emulation(PILE_DTYPE_F32);

    const std::vector<E> q = to_e<E>(qkv), d = to_e<E>(dout);
    std::vector<E> out = poisoned<E>(no), g = to_e<E>(g0);
    std::vector<float> lse(nr, NAN), D(nr, NAN);
    sim_run<E>(out.data(), lse.data(), D.data(), g.data(), d.data(), q.data(), kind ? ds.data() : nullptr, B, T, C,
               NH);
    ASSERT(!close_to("out", to_f(out).data(), want_out.data(), no, dt));
    ASSERT(!close_to("log-sum-exp", lse.data(), want_lse.data(), nr, PILE_DTYPE_F32));
    ASSERT(!close_to("dqkv", to_f(g).data(), want_g.data(), nq, dt));
}

template <typename E> static void test_decode(int t, int C, int NH, pile_dtype dt)
{
    const int n = t + 1;
    const std::vector<float> q = rnd((size_t)C, 1.5f, dt), kc = rnd((size_t)n * C, 1.5f, dt);
    const std::vector<float> vc = rnd((size_t)n * C, 1.0f, dt);

    set_emulation(dt);
    pile_tensor cq = cpu_tensor(PILE_DTYPE_F32, q), ck = cpu_tensor(PILE_DTYPE_F32, kc);
    pile_tensor cv = cpu_tensor(PILE_DTYPE_F32, vc), co = pile_backend_alloc(be, PILE_DTYPE_F32, (size_t)C);
    pile_tensor ca = pile_backend_alloc(be, PILE_DTYPE_F32, (size_t)NH * n);
    pile_backend_attention_decode(be, co, ca, cq, ck, cv, t, C, NH);
    pile_err err;
    OK(pile_backend_sync(be, &err), &err);
    const std::vector<float> want_out = cpu_read<float>(co, (size_t)C), want_att = cpu_read<float>(ca, (size_t)NH * n);
    pile_tensor *all[] = {&cq, &ck, &cv, &co, &ca};
    for (pile_tensor *x : all) pile_backend_free(x);
    set_emulation(PILE_DTYPE_F32);

    const std::vector<E> eq = to_e<E>(q), ek = to_e<E>(kc), ev = to_e<E>(vc);
    std::vector<E> out = poisoned<E>((size_t)C);
    std::vector<float> att((size_t)NH * n, NAN);
    const int hs = C / NH;
    cuda_sim::launch(dim3{(unsigned)NH, 1, 1}, pile_att::DECODE_THREADS, [&] {
        pile_att::att_decode<E>(out.data(), att.data(), eq.data(), ek.data(), ev.data(), n, C, hs,
                                1.0f / sqrtf((float)hs));
    });
    ASSERT(!close_to("decode out", to_f(out).data(), want_out.data(), (size_t)C, dt));
    ASSERT(!close_to("decode probabilities", att.data(), want_att.data(), (size_t)NH * n, PILE_DTYPE_F32));
}

int main(void)
{
    pile_err err;
    pile_test_rng_state = 0x5eed;
    if (pile_backend_open(&be, "cpu", 1, &err) < 0) {
        printf("# cannot open the cpu backend: %s\n", err.msg);
        return 1;
    }
    const pile_dtype F32 = PILE_DTYPE_F32, BF16 = PILE_DTYPE_BF16, F16 = PILE_DTYPE_F16;
    TEST("fwd/bwd fp32, head 16, one row, causal");
    test_fwd_bwd<float>(1, 1, 32, 2, 0, F32);
    TEST("fwd/bwd fp32, head 16, two query tiles, causal");
    test_fwd_bwd<float>(2, 100, 32, 2, 0, F32);
    TEST("fwd/bwd fp32, head 16, documents");
    test_fwd_bwd<float>(2, 100, 32, 2, 1, F32);
    TEST("fwd/bwd fp32, head 24 (padded to 32), documents");
    test_fwd_bwd<float>(1, 70, 48, 2, 1, F32);
    TEST("fwd/bwd fp32, head 64, three query tiles, arbitrary starts");
    test_fwd_bwd<float>(1, 130, 128, 2, 2, F32);
    TEST("fwd/bwd fp32, head 128, causal");
    test_fwd_bwd<float>(1, 70, 256, 2, 0, F32);
    TEST("fwd/bwd fp32, head 200 (padded to 256), documents");
    test_fwd_bwd<float>(1, 40, 200, 1, 1, F32);
    TEST("fwd/bwd bf16 storage against the cpu emulating it, documents");
    test_fwd_bwd<sim_bf16>(2, 70, 64, 1, 1, BF16);
    TEST("fwd/bwd fp16 storage against the cpu emulating it, causal");
    test_fwd_bwd<sim_f16>(1, 100, 64, 1, 0, F16);
    TEST("decode fp32, first position");
    test_decode<float>(0, 32, 2, F32);
    TEST("decode fp32, head 64");
    test_decode<float>(37, 128, 2, F32);
    TEST("decode fp32, more positions than threads, head 24");
    test_decode<float>(300, 48, 2, F32);
    TEST("decode bf16");
    test_decode<sim_bf16>(100, 128, 2, BF16);
    pile_backend_close(be);
    return TEST_DONE();
}
