/* The CUDA backend's ops other than attention and the cuBLASLt products
 * (trainer/cuda/kernels_elementwise.cu, kernels_norm.cu,
 * kernels_classifier.cu, kernels_optim.cu, and matmul.cu's own kernels:
 * the zero-term product's fill and the bias gradient's column sums),
 * compiled for the host through tests/cuda_sim.h and cuda_sim_runtime.h
 * and run against the CPU backend (the reference) in the same precision
 * mode. The ops' own host code runs, not only their kernels: the launch
 * geometry (grid-stride loops, several blocks, 2-D grids), the dtype
 * dispatch, the 16-byte or element-wise path chosen from the pointers'
 * alignment, and the scratch each op asks for and lays out. Every output
 * starts poisoned (NaN, or random where the op adds into it), and a guard
 * band before and after each array, and after the scratch, must stay
 * untouched.
 *
 * Bits or tolerance. The kernel files are built with -fmad=false so that
 * an element-wise result is the CPU's bit for bit; the host compiler here
 * does not contract either (-ffp-contract=off below), so these compare
 * bits wherever the kernel adds in the CPU's order: convert, GELU forward
 * and backward, add, dropout, scale, AdamW, the embeddings forward and
 * backward (rows in order), the zero-term product, and the column sums of
 * matmul's dbias and LayerNorm's dw, db while there is one chunk of rows
 * (up to 128 and 64 rows: the CPU's order then). The rest sums in another
 * order than the CPU's SIMD lanes: LayerNorm's statistics, its output and
 * dinp, softmax cross-entropy's loss and gradient, sumsq, and the column
 * sums over several chunks, checked within |got - want| <= rel |want| + abs:
 * rel 1e-5 in fp32, 2^-7 (bf16) or 2^-10 (fp16) on 16-bit outputs (one or
 * two units in the last place where the two sides' fp32 sums round apart),
 * abs 1e-5; sumsq (fp64) rel 1e-12. The simulator's bf16 and fp16 rounding
 * is precision.h's, the CPU emulation's own, and the arithmetic is the
 * host's, so a difference here is the kernels' logic, never the GPU's
 * arithmetic (tests/gpu checks that on a device). */
#include "cuda_sim_runtime.h"
/* cuda_sim_runtime.h first: the .cu files then leave out their CUDA
 * headers, and PILE_LAUNCH runs each kernel through cuda_sim */
#include "kernels.cuh"

#include "backend.h"
#include "cuda_sim_check.h"
#include "pile_test.h"

/* The .cu files in a namespace of their own, and the functions of
 * cuda_internal.h renamed (a pile_backend argument would find the global
 * ones too): the trainer's library that this test links holds the
 * nvcc-built ops under the same names. */
#define pile__cuda_adamw sim_adamw
#define pile__cuda_add sim_add
#define pile__cuda_check sim_check
#define pile__cuda_convert sim_convert
#define pile__cuda_dropout sim_dropout
#define pile__cuda_embed_bwd sim_embed_bwd
#define pile__cuda_embed_fwd sim_embed_fwd
#define pile__cuda_gelu_bwd sim_gelu_bwd
#define pile__cuda_gelu_fwd sim_gelu_fwd
#define pile__cuda_layernorm_bwd sim_layernorm_bwd
#define pile__cuda_layernorm_fwd sim_layernorm_fwd
#define pile__cuda_logits_bwd sim_logits_bwd
#define pile__cuda_logits_fwd sim_logits_fwd
#define pile__cuda_matmul_bwd sim_matmul_bwd
#define pile__cuda_matmul_close sim_matmul_close
#define pile__cuda_matmul_fwd sim_matmul_fwd
#define pile__cuda_scale sim_scale
#define pile__cuda_scratch sim_scratch
#define pile__cuda_softmax_ce sim_softmax_ce
#define pile__cuda_sort_temp_bytes sim_sort_temp_bytes
#define pile__cuda_sumsq sim_sumsq
namespace ops {
/* backend_cuda.cu's two helpers that the ops call, as it defines them */
void *pile__cuda_scratch(pile_backend *be, size_t bytes, const char *op);
int pile__cuda_check(pile_backend *be, const char *op);
#include "cuda/kernels_classifier.cu"
#include "cuda/kernels_elementwise.cu"
#include "cuda/kernels_norm.cu"
#include "cuda/kernels_optim.cu"
#include "cuda/matmul.cu"

void *pile__cuda_scratch(pile_backend *be, size_t bytes, const char *op)
{
    pile_cuda_ctx *c = pile__cuda_ctx(be);
    if (be->failed) return NULL;
    if (c->scratch && bytes <= c->scratch_bytes) return c->scratch;
    pile__backend_fail(be, PILE_EINVAL, op, "needs %zu bytes of device scratch, above the %zu reserved", bytes,
                       c->scratch_bytes);
    return NULL;
}

int pile__cuda_check(pile_backend *be, const char *op)
{
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) pile__backend_fail(be, PILE_EIO, op, "%s", cudaGetErrorString(e));
    return be->failed ? -1 : 0;
}
} /* namespace ops */

/* ------------------------------------------- the simulated device */

static void sim_sync(pile_backend *) {}

static pile_backend_i sim_iface;
static pile_cuda_ctx sim_ctx;
static pile_backend sim_be_obj;
static pile_backend *sim = &sim_be_obj; /* the CUDA backend's ops, simulated */
static pile_backend *cpu;               /* the reference */

/* Bytes before and after every array (and after the scratch) that no op
 * may write. */
#define GUARD 48
#define GUARD_BYTE 0x5a

/* The scratch an op may use: exactly `bytes` (what the op's figure in
 * cuda_sizes.h says at the shape), filled with 0xff (NaN floats and
 * doubles, keys above any token) so that a partial read before it is
 * written shows, and a guard band after it. */
static std::vector<unsigned char> scratch_mem;
static void take_scratch(size_t bytes)
{
    scratch_mem.assign(bytes + 256 + GUARD, GUARD_BYTE);
    unsigned char *base = scratch_mem.data() + (256 - (uintptr_t)scratch_mem.data() % 256) % 256; /* cudaMalloc's alignment */
    memset(base, 0xff, bytes);
    sim_ctx.scratch = base;
    sim_ctx.scratch_bytes = bytes;
}

static int scratch_guard_ok(void)
{
    const unsigned char *end = (const unsigned char *)sim_ctx.scratch + sim_ctx.scratch_bytes;
    for (int k = 0; k < GUARD; k++)
        if (end[k] != GUARD_BYTE) {
            printf("# the op wrote past its scratch (byte %d after its %zu)\n", k, sim_ctx.scratch_bytes);
            return 0;
        }
    return 1;
}

static void sim_open(void)
{
    sim_iface.sync = sim_sync;
    /* one multiprocessor: pile_blocks caps grids at 32 blocks, so grid-
     * stride loops go round from 65537 elements on */
    sim_ctx.prop.multiProcessorCount = 1;
    sim_be_obj.iface = &sim_iface;
    sim_be_obj.ctx = &sim_ctx;
    sim_be_obj.name = "cuda-sim";
    sim_be_obj.threads = 1;
}

static int sim_ok(void)
{
    if (!sim->failed) return 1;
    printf("# %s\n", sim->error.msg);
    sim->failed = 0;
    return 0;
}

/* ------------------------------------------------------------ arrays */

template <typename E> struct dtype_of;
template <> struct dtype_of<float> {
    static const pile_dtype v = PILE_DTYPE_F32;
};
template <> struct dtype_of<sim_bf16> {
    static const pile_dtype v = PILE_DTYPE_BF16;
};
template <> struct dtype_of<sim_f16> {
    static const pile_dtype v = PILE_DTYPE_F16;
};
template <> struct dtype_of<int32_t> {
    static const pile_dtype v = PILE_DTYPE_I32;
};

/* n elements of E in "device" memory: 16-byte aligned, or one element off
 * (odd: the ops' element-by-element path), between two guard bands. */
template <typename E> struct arr {
    std::vector<uint4> mem;
    size_t n, lead;
    arr(size_t n_, bool odd = false) : n(n_)
    {
        lead = (GUARD + (odd ? sizeof(E) : 0) + 15) / 16 * 16 - (odd ? sizeof(E) : 0);
        mem.resize((lead + (n + 1) * sizeof(E) + GUARD + 15) / 16);
        memset(mem.data(), GUARD_BYTE, mem.size() * 16);
    }
    E *p() { return (E *)((char *)mem.data() + lead); }
    E &operator[](size_t i) { return p()[i]; }
    pile_tensor t() { return pile_tensor{p(), n, dtype_of<E>::v, sim}; }
    void set(const std::vector<float> &v)
    {
        for (size_t i = 0; i < n; i++) p()[i] = pile_cuda_store<E>(v[i]);
    }
    void poison()
    {
        for (size_t i = 0; i < n; i++) p()[i] = pile_cuda_store<E>(NAN);
    }
    std::vector<float> get()
    {
        std::vector<float> v(n);
        for (size_t i = 0; i < n; i++) v[i] = pile_cuda_load(p()[i]);
        return v;
    }
    /* the guard bands are as filled */
    bool guards_ok(const char *what)
    {
        const unsigned char *b = (const unsigned char *)mem.data(), *e = (const unsigned char *)(p() + n);
        const unsigned char *end = b + mem.size() * 16;
        for (const unsigned char *q = b; q < (const unsigned char *)p(); q++)
            if (*q != GUARD_BYTE) {
                printf("# %s: written %td bytes before its start\n", what, (const unsigned char *)p() - q);
                return false;
            }
        for (const unsigned char *q = e; q < end; q++)
            if (*q != GUARD_BYTE) {
                printf("# %s: written %td bytes after its end\n", what, q - e + 1);
                return false;
            }
        return true;
    }
};

/* ------------------------------------------------- the CPU reference */

static void set_emulation(pile_dtype dt)
{
    pile_err err;
    OK(pile_backend_set_emulation(cpu, dt == PILE_DTYPE_F32 ? PILE_DTYPE_F32 : dt, &err), &err);
}

/* CPU tensors (host memory), freed at the end of each case */
static std::vector<pile_tensor> cpu_live;
static pile_tensor ct(const std::vector<float> &v)
{
    pile_tensor t = pile_backend_alloc(cpu, PILE_DTYPE_F32, v.size());
    memcpy(t.data, v.data(), v.size() * sizeof(float));
    cpu_live.push_back(t);
    return t;
}
static pile_tensor cti(const std::vector<int32_t> &v)
{
    pile_tensor t = pile_backend_alloc(cpu, PILE_DTYPE_I32, v.size());
    memcpy(t.data, v.data(), v.size() * sizeof(int32_t));
    cpu_live.push_back(t);
    return t;
}
static std::vector<float> cget(pile_tensor t)
{
    std::vector<float> v(t.n);
    memcpy(v.data(), t.data, t.n * sizeof(float));
    return v;
}
static void cpu_done(void)
{
    pile_err err;
    OK(pile_backend_sync(cpu, &err), &err);
}
static void cpu_free(void)
{
    for (pile_tensor &t : cpu_live) pile_backend_free(&t);
    cpu_live.clear();
    set_emulation(PILE_DTYPE_F32);
}

/* ------------------------------------------------------- comparisons */

static bool same_value_bits(float a, float b, pile_dtype dt)
{
    if (a != a || b != b) return a != a && b != b; /* NaN payloads: the GPU's is canonical */
    uint32_t x, y;
    if (dt == PILE_DTYPE_BF16 || dt == PILE_DTYPE_F16) { /* a, b are 16-bit values widened: exact */
        memcpy(&x, &a, 4);
        memcpy(&y, &b, 4);
        return x == y;
    }
    memcpy(&x, &a, 4);
    memcpy(&y, &b, 4);
    return x == y;
}

/* got (the simulated op's output, widened) has want's bits; want is the
 * CPU's value, which under emulation is already representable in dt */
static bool bits(const char *what, const std::vector<float> &got, const std::vector<float> &want, pile_dtype dt)
{
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < want.size(); i++)
        if (!same_value_bits(got[i], want[i], dt)) {
            if (!bad) first = i;
            bad++;
        }
    if (bad)
        printf("# %s: %zu of %zu differ in bits, first [%zu]: %.9g against %.9g\n", what, bad, want.size(), first,
               got[first], want[first]);
    return bad == 0;
}

static bool close(const char *what, const std::vector<float> &got, const std::vector<float> &want, double rel,
                  double abs_ = 1e-5)
{
    return !close_to(what, got.data(), want.data(), want.size(), rel, abs_);
}

/* ------------------------------------------------------ element-wise */

template <typename TD, typename TS> static void test_convert(size_t n, bool odd)
{
    const pile_dtype dd = dtype_of<TD>::v, ds = dtype_of<TS>::v;
    /* amplitude 1e5: fp16 overflows to infinity on some */
    std::vector<float> v = rnd(n, 1e5f, ds);
    for (size_t i = 0; i < n; i += 7) v[i] *= 1e-9f; /* and small ones: subnormals in fp16 */
    if (ds != PILE_DTYPE_F32)
        pile_precision_round(v.data(), n, ds == PILE_DTYPE_BF16 ? PILE_PRECISION_BF16 : PILE_PRECISION_FP16);
    /* the CPU converts between real dtypes (no emulation) */
    pile_tensor cs = pile_backend_alloc(cpu, ds, n), cd = pile_backend_alloc(cpu, dd, n);
    pile_tensor c32 = pile_backend_alloc(cpu, PILE_DTYPE_F32, n);
    memcpy(c32.data, v.data(), n * 4);
    pile_backend_convert(cpu, cs, c32, n);
    pile_backend_convert(cpu, cd, cs, n);
    pile_backend_convert(cpu, c32, cd, n);
    cpu_done();
    const std::vector<float> want = cget(c32);
    pile_backend_free(&cs);
    pile_backend_free(&cd);
    pile_backend_free(&c32);

    arr<TS> src(n, odd);
    arr<TD> dst(n, odd);
    src.set(v);
    dst.poison();
    ops::pile__cuda_convert(sim, dst.t(), src.t(), n);
    ASSERT(sim_ok());
    ASSERT(bits("convert", dst.get(), want, dd));
    ASSERT(dst.guards_ok("dst") && src.guards_ok("src"));
}

template <typename E> static void test_gelu_add(size_t n, bool odd)
{
    const pile_dtype dt = dtype_of<E>::v;
    const std::vector<float> x = rnd(n, 4.0f, dt), d = rnd(n, 1.0f, dt), g0 = rnd(n, 1.0f, dt), b = rnd(n, 2.0f, dt);
    set_emulation(dt);
    pile_tensor cx = ct(x), cd = ct(d), cg = ct(g0), cb = ct(b), cy = ct(std::vector<float>(n)), cs = ct(std::vector<float>(n));
    pile_backend_gelu_fwd(cpu, cy, cx, n);
    pile_backend_gelu_bwd(cpu, cg, cx, cd, n);
    pile_backend_add(cpu, cs, cy, cb, n);
    pile_backend_add(cpu, cb, cx, cb, n); /* in place */
    cpu_done();
    const std::vector<float> want_y = cget(cy), want_g = cget(cg), want_s = cget(cs), want_b = cget(cb);
    cpu_free();

    arr<E> ax(n, odd), ad(n, odd), ag(n, odd), ab(n, odd), ay(n, odd), as(n, odd);
    ax.set(x), ad.set(d), ag.set(g0), ab.set(b), ay.poison(), as.poison();
    ops::pile__cuda_gelu_fwd(sim, ay.t(), ax.t(), n);
    ops::pile__cuda_gelu_bwd(sim, ag.t(), ax.t(), ad.t(), n);
    ops::pile__cuda_add(sim, as.t(), ay.t(), ab.t(), n);
    ops::pile__cuda_add(sim, ab.t(), ax.t(), ab.t(), n);
    ASSERT(sim_ok());
    ASSERT(bits("gelu_fwd", ay.get(), want_y, dt));
    ASSERT(bits("gelu_bwd", ag.get(), want_g, dt));
    ASSERT(bits("add", as.get(), want_s, dt));
    ASSERT(bits("add in place", ab.get(), want_b, dt));
    ASSERT(ax.guards_ok("x") && ad.guards_ok("d") && ag.guards_ok("dinp") && ab.guards_ok("b") && ay.guards_ok("y") &&
           as.guards_ok("sum"));
}

template <typename E> static void test_dropout(size_t n, float p, bool odd)
{
    const pile_dtype dt = dtype_of<E>::v;
    const std::vector<float> x = rnd(n, 3.0f, dt);
    set_emulation(dt);
    pile_tensor cx = ct(x);
    pile_backend_dropout(cpu, cx, n, p, 0x1234567890abcdefull);
    cpu_done();
    const std::vector<float> want = cget(cx);
    cpu_free();

    arr<E> ax(n, odd);
    ax.set(x);
    ops::pile__cuda_dropout(sim, ax.t(), n, p, 0x1234567890abcdefull);
    ASSERT(sim_ok());
    ASSERT(bits("dropout", ax.get(), want, dt));
    ASSERT(ax.guards_ok("x"));
}

/* --------------------------------------------------------- optimizer */

static void test_optim(size_t n, bool odd)
{
    const pile_dtype F = PILE_DTYPE_F32;
    const std::vector<float> p = rnd(n, 1.0f, F), g = rnd(n, 0.1f, F), m = rnd(n, 0.01f, F);
    std::vector<float> v = rnd(n, 1e-3f, F);
    for (float &x : v) x = fabsf(x);
    pile_tensor cp = ct(p), cg = ct(g), cm = ct(m), cv = ct(v);
    const double want_ss = pile_backend_sumsq(cpu, cg, n);
    pile_backend_scale(cpu, cg, n, 0.37f);
    pile_backend_adamw(cpu, cp, cg, cm, cv, n, 6e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 3);
    cpu_done();
    const std::vector<float> want_p = cget(cp), want_g = cget(cg), want_m = cget(cm), want_v = cget(cv);
    cpu_free();

    arr<float> ap(n, odd), ag(n, odd), am(n, odd), av(n, odd);
    ap.set(p), ag.set(g), am.set(m), av.set(v);
    take_scratch((size_t)pile__cuda_sumsq_scratch_size());
    const double ss = ops::pile__cuda_sumsq(sim, ag.t(), n);
    ASSERT(scratch_guard_ok());
    ops::pile__cuda_scale(sim, ag.t(), n, 0.37f);
    ops::pile__cuda_adamw(sim, ap.t(), ag.t(), am.t(), av.t(), n, 6e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 3);
    ASSERT(sim_ok());
    if (!(fabs(ss - want_ss) <= 1e-12 * want_ss)) PILE_FAIL_("sumsq %.17g against %.17g", ss, want_ss);
    ASSERT(bits("scale", ag.get(), want_g, F));
    ASSERT(bits("adamw p", ap.get(), want_p, F));
    ASSERT(bits("adamw m", am.get(), want_m, F));
    ASSERT(bits("adamw v", av.get(), want_v, F));
    ASSERT(ap.guards_ok("p") && ag.guards_ok("g") && am.guards_ok("m") && av.guards_ok("v"));
}

/* -------------------------------------------------------- embeddings */

template <typename E> static void test_embed(int B, int T, int C, int V, bool odd)
{
    const pile_dtype dt = dtype_of<E>::v;
    const size_t rows = (size_t)B * T, nc = rows * C;
    std::vector<int32_t> tok(rows);
    for (int32_t &t : tok) t = (int32_t)(pile_test_rng() % (uint64_t)(V < 4 ? V : 4)); /* repeats: runs in the sort */
    for (size_t r = 0; r < rows; r += 3) tok[r] = (int32_t)(pile_test_rng() % (uint64_t)V);
    const std::vector<float> wte = rnd((size_t)V * C, 1.0f, dt), wpe = rnd((size_t)T * C, 1.0f, dt);
    const std::vector<float> dout = rnd(nc, 1.0f, dt), dwte0 = rnd((size_t)V * C, 1.0f, PILE_DTYPE_F32),
                             dwpe0 = rnd((size_t)T * C, 1.0f, PILE_DTYPE_F32);
    set_emulation(dt);
    pile_tensor co = ct(std::vector<float>(nc)), ctok = cti(tok), cte = ct(wte), cpe = ct(wpe), cdo = ct(dout);
    pile_tensor cdte = ct(dwte0), cdpe = ct(dwpe0);
    pile_backend_embed_fwd(cpu, co, ctok, cte, cpe, B, T, C);
    pile_backend_embed_bwd(cpu, cdte, cdpe, cdo, ctok, B, T, C);
    cpu_done();
    const std::vector<float> want_o = cget(co), want_dte = cget(cdte), want_dpe = cget(cdpe);
    cpu_free();

    arr<E> ao(nc, odd), ate((size_t)V * C, odd), ape((size_t)T * C, odd), ado(nc, odd);
    arr<int32_t> atok(rows);
    arr<float> adte((size_t)V * C, odd), adpe((size_t)T * C, odd);
    for (size_t r = 0; r < rows; r++) atok[r] = tok[r];
    ao.poison(), ate.set(wte), ape.set(wpe), ado.set(dout), adte.set(dwte0), adpe.set(dwpe0);
    ops::pile__cuda_embed_fwd(sim, ao.t(), atok.t(), ate.t(), ape.t(), B, T, C);
    take_scratch((size_t)pile__cuda_embed_bwd_scratch_size((int)rows));
    ops::pile__cuda_embed_bwd(sim, adte.t(), adpe.t(), ado.t(), atok.t(), B, T, C);
    ASSERT(sim_ok());
    ASSERT(scratch_guard_ok());
    ASSERT(bits("embed_fwd", ao.get(), want_o, dt));
    ASSERT(bits("embed_bwd dwte", adte.get(), want_dte, PILE_DTYPE_F32));
    ASSERT(bits("embed_bwd dwpe", adpe.get(), want_dpe, PILE_DTYPE_F32));
    ASSERT(ao.guards_ok("out") && ate.guards_ok("wte") && ape.guards_ok("wpe") && ado.guards_ok("dout") &&
           atok.guards_ok("tokens") && adte.guards_ok("dwte") && adpe.guards_ok("dwpe"));
}

/* Tokens outside the table (V and -1): the forward's rows are NaN (the
 * CPU would read outside wte, so no CPU reference), the backward adds
 * nothing for them and every other position in order. V is a power of
 * two, so the sort's key for "outside" needs a bit of its own, and token
 * 0 alternates with it: a sort on too few bits would split token 0's run,
 * and its parts would be added in the (shuffled) order of their blocks. */
static void test_embed_bad_token(void)
{
    const int B = 1, T = 9, C = 16, V = 4;
    const int32_t tok[T] = {0, V, 0, -1, 0, V, 0, 2, 3};
    arr<float> ao((size_t)T * C), ate((size_t)V * C), ape((size_t)T * C), ado((size_t)T * C), adte((size_t)V * C),
        adpe((size_t)T * C);
    arr<int32_t> atok(T);
    for (int t = 0; t < T; t++) atok[(size_t)t] = tok[t];
    ate.set(rnd((size_t)V * C, 1.0f, PILE_DTYPE_F32)), ape.set(rnd((size_t)T * C, 1.0f, PILE_DTYPE_F32));
    ado.set(rnd((size_t)T * C, 1.0f, PILE_DTYPE_F32));
    const std::vector<float> dwte0 = rnd((size_t)V * C, 1.0f, PILE_DTYPE_F32);
    adte.set(dwte0), adpe.set(std::vector<float>((size_t)T * C, 0.0f));
    ao.poison();
    ops::pile__cuda_embed_fwd(sim, ao.t(), atok.t(), ate.t(), ape.t(), B, T, C);
    take_scratch((size_t)pile__cuda_embed_bwd_scratch_size(T));
    ops::pile__cuda_embed_bwd(sim, adte.t(), adpe.t(), ado.t(), atok.t(), B, T, C);
    ASSERT(sim_ok());
    std::vector<float> want = dwte0, got = adte.get();
    for (int t = 0; t < T; t++) {
        const bool ok = tok[t] >= 0 && tok[t] < V;
        for (int c = 0; c < C; c++) {
            const float o = ao[(size_t)t * C + c];
            if (ok ? o != ate[(size_t)tok[t] * C + c] + ape[(size_t)t * C + c] : !isnan(o))
                PILE_FAIL_("embed_fwd row %d (token %d) [%d]: %g", t, tok[t], c, o);
            if (ok) want[(size_t)tok[t] * C + c] += ado[(size_t)t * C + c];
        }
    }
    ASSERT(bits("embed_bwd dwte", got, want, PILE_DTYPE_F32));
    ASSERT(ao.guards_ok("out") && adte.guards_ok("dwte"));
}

/* --------------------------------------------------------- LayerNorm */

template <typename E> static void test_layernorm(int N, int C, bool odd)
{
    const pile_dtype dt = dtype_of<E>::v;
    const size_t nc = (size_t)N * C;
    std::vector<float> x = rnd(nc, 2.0f, dt);
    for (size_t i = 0; i < nc; i++) x[i] += dt == PILE_DTYPE_F32 ? 0.5f : 0.0f; /* a mean away from 0 */
    const std::vector<float> w = rnd((size_t)C, 1.0f, dt), b = rnd((size_t)C, 1.0f, dt), dout = rnd(nc, 1.0f, dt);
    const std::vector<float> dx0 = rnd(nc, 1.0f, dt), dw0 = rnd((size_t)C, 1.0f, PILE_DTYPE_F32),
                             db0 = rnd((size_t)C, 1.0f, PILE_DTYPE_F32);
    set_emulation(dt);
    pile_tensor cx = ct(x), cw = ct(w), cb = ct(b), cdo = ct(dout), cdx = ct(dx0), cdw = ct(dw0), cdb = ct(db0);
    pile_tensor co = ct(std::vector<float>(nc)), cm = ct(std::vector<float>((size_t)N)), cr = ct(std::vector<float>((size_t)N));
    pile_backend_layernorm_fwd(cpu, co, cm, cr, cx, cw, cb, N, C);
    cpu_done();
    const std::vector<float> want_o = cget(co), want_m = cget(cm), want_r = cget(cr);
    /* the backward from the simulator's statistics (below), so that dw and
     * db compare bit for bit where their order is the CPU's */
    arr<E> ax(nc, odd), aw((size_t)C, odd), ab((size_t)C, odd), ao(nc, odd), ado(nc, odd), adx(nc, odd);
    arr<float> am((size_t)N, odd), ar((size_t)N, odd), adw((size_t)C, odd), adb((size_t)C, odd);
    ax.set(x), aw.set(w), ab.set(b), ao.poison(), am.poison(), ar.poison();
    ops::pile__cuda_layernorm_fwd(sim, ao.t(), am.t(), ar.t(), ax.t(), aw.t(), ab.t(), N, C);
    ASSERT(sim_ok());
    ASSERT(close("layernorm_fwd out", ao.get(), want_o, rel_of(dt)));
    ASSERT(close("layernorm_fwd mean", am.get(), want_m, 1e-5));
    ASSERT(close("layernorm_fwd rstd", ar.get(), want_r, 1e-5));

    const std::vector<float> m = am.get(), r = ar.get();
    memcpy(cm.data, m.data(), (size_t)N * 4);
    memcpy(cr.data, r.data(), (size_t)N * 4);
    pile_backend_layernorm_bwd(cpu, cdx, cdw, cdb, cdo, cx, cw, cm, cr, N, C);
    cpu_done();
    const std::vector<float> want_dx = cget(cdx), want_dw = cget(cdw), want_db = cget(cdb);
    cpu_free();
    ado.set(dout), adx.set(dx0), adw.set(dw0), adb.set(db0);
    take_scratch((size_t)pile__cuda_layernorm_bwd_scratch_size(N, C));
    ops::pile__cuda_layernorm_bwd(sim, adx.t(), adw.t(), adb.t(), ado.t(), ax.t(), aw.t(), am.t(), ar.t(), N, C);
    ASSERT(sim_ok());
    ASSERT(scratch_guard_ok());
    ASSERT(close("layernorm_bwd dinp", adx.get(), want_dx, rel_of(dt)));
    if (N <= PILE_CUDA_LN_MIN_CHUNK) { /* one chunk of rows: the CPU's order */
        ASSERT(bits("layernorm_bwd dw", adw.get(), want_dw, PILE_DTYPE_F32));
        ASSERT(bits("layernorm_bwd db", adb.get(), want_db, PILE_DTYPE_F32));
    } else {
        ASSERT(close("layernorm_bwd dw", adw.get(), want_dw, 1e-5));
        ASSERT(close("layernorm_bwd db", adb.get(), want_db, 1e-5));
    }
    ASSERT(ax.guards_ok("inp") && aw.guards_ok("w") && ab.guards_ok("b") && ao.guards_ok("out") &&
           am.guards_ok("mean") && ar.guards_ok("rstd") && ado.guards_ok("dout") && adx.guards_ok("dinp") &&
           adw.guards_ok("dw") && adb.guards_ok("db"));
}

/* -------------------------------------------------------- classifier */

template <typename E> static void test_softmax_ce(int N, int V, int Vp, float grad_scale, bool odd)
{
    const pile_dtype dt = dtype_of<E>::v;
    const size_t nl = (size_t)N * Vp;
    std::vector<float> lg = rnd(nl, 6.0f, dt);
    std::vector<int32_t> tgt((size_t)N);
    for (int i = 0; i < N; i++) tgt[(size_t)i] = (int32_t)(pile_test_rng() % (uint64_t)V);
    if (N > 1) tgt[1] = -1; /* ignored */
    /* row 0: a tie for the maximum, the target on the second (argmax is the first) */
    lg[3] = lg[(size_t)V - 1] = 9.0f;
    tgt[0] = V - 1;
    if (N > 2) { /* row 2: the target is the maximum */
        lg[2 * (size_t)Vp + (size_t)tgt[2]] = 12.0f;
    }
    for (int i = 0; i < N; i++)
        for (int j = V; j < Vp; j++) lg[(size_t)i * Vp + j] = NAN; /* padded columns never count */
    set_emulation(dt);
    pile_tensor cl = ct(lg), cls = ct(std::vector<float>((size_t)N)), ctg = cti(tgt);
    pile_tensor cc = pile_backend_alloc(cpu, PILE_DTYPE_I32, (size_t)N);
    cpu_live.push_back(cc);
    pile_backend_softmax_ce(cpu, cl, cls, cc, ctg, N, V, Vp, grad_scale);
    cpu_done();
    const std::vector<float> want_g = cget(cl), want_l = cget(cls);
    std::vector<int32_t> want_c((size_t)N);
    memcpy(want_c.data(), cc.data, (size_t)N * 4);
    cpu_free();

    arr<E> al(nl, odd);
    arr<float> als((size_t)N);
    arr<int32_t> ac((size_t)N), atg((size_t)N);
    al.set(lg), als.poison();
    for (int i = 0; i < N; i++) ac[(size_t)i] = -7, atg[(size_t)i] = tgt[(size_t)i];
    ops::pile__cuda_softmax_ce(sim, al.t(), als.t(), ac.t(), atg.t(), N, V, Vp, grad_scale);
    ASSERT(sim_ok());
    ASSERT(close("softmax_ce losses", als.get(), want_l, 1e-6));
    for (int i = 0; i < N; i++)
        if (ac[(size_t)i] != want_c[(size_t)i]) PILE_FAIL_("correct[%d] %d against %d", i, ac[(size_t)i], want_c[(size_t)i]);
    ASSERT_EQ(ac[0], 0);
    if (grad_scale != 0.0f) ASSERT(close("softmax_ce gradient", al.get(), want_g, rel_of(dt), 1e-6));
    else ASSERT(bits("softmax_ce logits untouched", al.get(), lg, dt));
    ASSERT(al.guards_ok("logits") && als.guards_ok("losses") && ac.guards_ok("correct"));
}

/* -------------------------------------- matmul.cu's own kernels */

/* A product over 0 terms: out = bias on every row, or 0 (fill_rows). */
template <typename E> static void test_matmul_k0(int N, int OC, bool with_bias)
{
    const pile_dtype dt = dtype_of<E>::v;
    const std::vector<float> bias = rnd((size_t)OC, 1.0f, dt);
    set_emulation(dt);
    pile_tensor co = ct(std::vector<float>((size_t)N * OC, NAN)), cb = ct(bias), cin = ct(std::vector<float>(1)),
                cw = ct(std::vector<float>(1));
    pile_backend_matmul_fwd(cpu, co, cin, cw, with_bias ? cb : pile_tensor{}, N, 0, OC);
    cpu_done();
    const std::vector<float> want = cget(co);
    cpu_free();

    arr<E> ao((size_t)N * OC), ab((size_t)OC), ain(1), aw(1);
    ao.poison(), ab.set(bias);
    ops::pile__cuda_matmul_fwd(sim, ao.t(), ain.t(), aw.t(), with_bias ? ab.t() : pile_tensor{}, N, 0, OC);
    ASSERT(sim_ok());
    ASSERT(bits("matmul_fwd over 0 terms", ao.get(), want, dt));
    ASSERT(ao.guards_ok("out"));
}

/* matmul_bwd's dbias: colsum_add (the products around it are cuBLASLt's,
 * which does not run here). The CPU's matmul_bwd computes the same dbias
 * beside its products. */
template <typename E> static void test_colsum(int N, int C, bool odd)
{
    const pile_dtype dt = dtype_of<E>::v;
    const std::vector<float> dout = rnd((size_t)N * C, 1.0f, dt), acc0 = rnd((size_t)C, 1.0f, PILE_DTYPE_F32);
    set_emulation(dt);
    pile_tensor cdo = ct(dout), cdb = ct(acc0), cin = ct(std::vector<float>((size_t)N)), cdw = ct(std::vector<float>((size_t)C));
    pile_backend_matmul_bwd(cpu, pile_tensor{}, cdw, cdb, cdo, cin, ct(std::vector<float>((size_t)C)), N, 1, C);
    cpu_done();
    const std::vector<float> want = cget(cdb);
    cpu_free();

    arr<E> ado((size_t)N * C, odd);
    arr<float> adb((size_t)C, odd);
    ado.set(dout), adb.set(acc0);
    take_scratch((size_t)pile__cuda_matmul_bwd_scratch_size(N, C));
    ops::colsum_add(sim, "matmul_bwd", adb.p(), ado.t(), N, C);
    ASSERT(sim_ok());
    ASSERT(scratch_guard_ok());
    if (N <= PILE_CUDA_COLSUM_ROWS) ASSERT(bits("matmul_bwd dbias", adb.get(), want, PILE_DTYPE_F32));
    else ASSERT(close("matmul_bwd dbias", adb.get(), want, 1e-5));
    ASSERT(ado.guards_ok("dout") && adb.guards_ok("dbias"));
}

int main(void)
{
    pile_err err;
    pile_test_rng_state = 0x6b65726e;
    if (pile_backend_open(&cpu, "cpu", 1, &err) < 0) {
        printf("# cannot open the cpu backend: %s\n", err.msg);
        return 1;
    }
    sim_open();
    typedef sim_bf16 bf16;
    typedef sim_f16 f16;

    TEST("convert, every pair of float dtypes, odd lengths, aligned and not");
    test_convert<bf16, float>(1003, false);
    test_convert<f16, float>(1003, true);
    test_convert<float, bf16>(21, false);
    test_convert<float, f16>(1003, true);
    test_convert<f16, bf16>(1003, false);
    test_convert<bf16, f16>(9, true);
    test_convert<float, float>(13, false);
    test_convert<bf16, bf16>(1, false);
    TEST("gelu_fwd, gelu_bwd, add (also in place) fp32: 1, 8, odd n, unaligned");
    test_gelu_add<float>(1, false);
    test_gelu_add<float>(8, false);
    test_gelu_add<float>(1003, true);
    TEST("gelu_fwd, gelu_bwd, add fp32: a grid-stride loop (more packs than the grid's threads)");
    test_gelu_add<float>(65536 + 8 * 3 + 5, false);
    TEST("gelu_fwd, gelu_bwd, add bf16 / fp16 storage against the cpu emulating it");
    test_gelu_add<bf16>(1003, false);
    test_gelu_add<f16>(1003, true);
    TEST("dropout: the cpu's mask, fp32 / bf16 / fp16, p 1 zeroes");
    test_dropout<float>(1003, 0.1f, false);
    test_dropout<bf16>(1003, 0.5f, true);
    test_dropout<f16>(77, 0.25f, false);
    test_dropout<float>(77, 1.0f, true);
    TEST("sumsq, scale, adamw: one element, odd n unaligned, several sumsq chunks");
    test_optim(1, false);
    test_optim(1003, true);
    test_optim(8192 * 3 + 5, false);
    TEST("embed_fwd, embed_bwd fp32: C a multiple of 8 and not, repeated tokens");
    test_embed<float>(2, 5, 64, 7, false);
    test_embed<float>(3, 7, 13, 11, false); /* rows not 16-byte aligned */
    test_embed<float>(1, 1, 8, 1, false);
    TEST("embed_fwd, embed_bwd bf16 / fp16 storage; C above a block's packs");
    test_embed<bf16>(2, 9, 1100, 5, false);
    test_embed<f16>(2, 3, 24, 300, true);
    TEST("embed_fwd, embed_bwd: a token outside the table");
    test_embed_bad_token();
    TEST("layernorm fwd/bwd fp32: one row, rows in several blocks, odd C, C above a warp's packs");
    test_layernorm<float>(1, 64, false);
    test_layernorm<float>(11, 13, false); /* rows not 16-byte aligned */
    test_layernorm<float>(9, 300, false);
    TEST("layernorm fwd/bwd fp32: several chunks of rows; several column blocks");
    test_layernorm<float>(150, 24, false);
    test_layernorm<float>(3, 2056, false);
    TEST("layernorm fwd/bwd bf16 / fp16 storage");
    test_layernorm<bf16>(10, 72, false);
    test_layernorm<f16>(5, 45, false);
    test_layernorm<f16>(4, 40, true);
    TEST("softmax_ce fp32: padded and unpadded rows, ignored rows, ties; without gradient");
    test_softmax_ce<float>(4, 1000, 1008, 0.25f, false);
    test_softmax_ce<float>(3, 1001, 1001, 1.0f, false); /* rows not 16-byte aligned */
    test_softmax_ce<float>(2, 100, 104, 1.0f, true);
    test_softmax_ce<float>(3, 300, 304, 0.0f, false);
    test_softmax_ce<float>(1, 17, 24, 1.0f, false);
    TEST("softmax_ce bf16 / fp16 storage");
    test_softmax_ce<bf16>(3, 1000, 1024, 0.5f, false);
    test_softmax_ce<f16>(3, 555, 560, 1.0f, false);
    TEST("matmul_fwd over 0 terms: bias rows or zeros");
    test_matmul_k0<float>(3, 13, true);
    test_matmul_k0<bf16>(5, 300, false);
    test_matmul_k0<f16>(2, 7, true);
    TEST("matmul_bwd's dbias column sums: one chunk and several, several column blocks");
    test_colsum<float>(1, 13, true);
    test_colsum<float>(3, 13, false);
    test_colsum<float>(100, 300, false);
    test_colsum<float>(300, 20, false);
    test_colsum<bf16>(257, 40, true);
    test_colsum<f16>(60, 9, false);
    pile_backend_close(cpu);
    return TEST_DONE();
}
