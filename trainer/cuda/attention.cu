/* Causal multi-head attention on CUDA cores: FlashAttention-2 (Dao 2023,
 * arXiv 2307.08691, algorithms 1 and 2, with its deterministic backward),
 * the same function as the CPU backend's (trainer/cpu/backend_cpu.c, the
 * reference), written to be reviewed line by line against it: fp32 math on
 * values loaded from 16-bit (or fp32) storage, rounded only where the CPU
 * rounds (out, dqkv).
 *
 * Layout (backend.h): qkv [B, T, 3C] holds q, k, v, heads concatenated;
 * head h of row t reads channels h*hs .. h*hs+hs-1 of each; scale
 * 1/sqrt(hs); row t sees keys lo(t) .. t, lo(t) = doc_start[b, t] clamped
 * to 0..t (0 without doc_start).
 *  - saved: the log-sum-exp of each row's scores, fp32 [B, NH, T], as the
 *    CPU keeps it (saved_bytes).
 *  - scratch: D = rowsum(dO * O), fp32 [B, NH, T], written by the first
 *    backward kernel and read by the second; nothing between calls.
 * Nothing of size T x T exists anywhere: scores and probabilities live in
 * registers, K / V / Q / dO tiles in shared memory (at most 32 KiB per
 * block, under the default 48 KiB: no opt-in).
 *
 * Kernels, one block per (query or key tile, head, batch row):
 *  - att_fwd: per query row the online softmax over key tiles (the running
 *    maximum m and sum l, the unnormalised output rescaled by
 *    exp(m_old - m_new)), out = acc / l, LSE = m + log l.
 *  - att_bwd_dq (first): D for its rows (into scratch), then over key
 *    tiles P = exp(scale q.k - LSE), dP = dO.v, dS = P (dP - D),
 *    dQ = scale sum dS k.
 *  - att_bwd_dkv (second): per key over query tiles, the same P and dS,
 *    dV = sum P dO, dK = scale sum dS q.
 * Each gradient element is summed by one thread in a fixed order and
 * added once into dqkv (backend.h: backward ops accumulate): no atomics,
 * the same bits every run. Tiles a block's rows cannot see (after the
 * diagonal, before the block's lowest document start, a query tile whose
 * every row starts its document after the block's last key) are skipped;
 * inside a tile, masked pairs are excluded by index, as the CPU does.
 *
 * Threads: head channels are padded up to HS (16, 32, 64, 128 or 256,
 * zeros in the pad) and split over a group of G = HS / 16 consecutive
 * threads of one warp, thread g owning channels g, g + G, g + 2G, ...: a
 * dot product is 16 FMAs per thread and a butterfly over the group, which
 * leaves the same bits in every thread of the group, and the group reads
 * consecutive shared-memory words (no bank conflicts; the other rows of
 * the warp read the same words, a broadcast).
 *
 * The kernels use only what tests/cuda_sim.h also defines, so that test
 * compiles them for the host (PILE_CUDA_SIM) and checks them against the
 * CPU backend where no GPU exists; the launches below are the GPU's. */
#ifndef PILE_CUDA_SIM
#include <math.h>

#include "cuda_dtype.cuh"
#include "cuda_internal.h"
#include "cuda_sizes.h"
#endif

namespace pile_att {

/* Launch geometry per head-size capacity HS. */
template <int HS> struct cfg {
    static constexpr int DPT = 16;                            /* channels per thread */
    static constexpr int G = HS / DPT;                        /* threads per row (or key) */
    static constexpr int ROWS = G <= 4 ? 64 : 256 / G;        /* rows (or keys) per block */
    static constexpr int THREADS = ROWS * G;                  /* at most 256 */
    static constexpr int TILE = HS <= 128 ? 32 : 16;          /* keys (or queries) per shared tile */
    static_assert(HS % DPT == 0 && 32 % G == 0, "a row's threads lie in one warp");
    static_assert(2 * TILE * HS * 4 <= 32768, "two tiles fit in 32 KiB");
};

/* The smallest capacity that holds head size hs; 0 above 256. */
static inline int head_cap(int hs)
{
    for (int cap = 16; cap <= 256; cap *= 2)
        if (hs <= cap) return cap;
    return 0;
}
static constexpr int MAX_HEAD = 256;

/* The first key row t may see (backend_cpu.c's att_lo). */
__device__ __forceinline__ int first_key(const int32_t *doc_start, int b, int T, int t)
{
    if (!doc_start) return 0;
    const int lo = doc_start[(size_t)b * T + t];
    return lo < 0 ? 0 : lo > t ? t : lo;
}

/* Sum over the G threads of a row's group: a butterfly, after which every
 * thread of the group holds the same bits (each step adds the same two
 * values, in either order). */
template <int G> __device__ __forceinline__ float group_sum(float x)
{
#pragma unroll
    for (int o = G / 2; o > 0; o /= 2) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

/* This thread's channels g, g + G, ... of one row of a head (zero past hs
 * and for a row that does not exist). */
template <int HS, typename E>
__device__ __forceinline__ void load_slice(float (&x)[cfg<HS>::DPT], const E *row, bool exists, int g, int hs)
{
#pragma unroll
    for (int c = 0; c < cfg<HS>::DPT; c++) {
        const int ch = c * cfg<HS>::G + g;
        x[c] = exists && ch < hs ? pile_cuda_load(row[ch]) : 0.0f;
    }
}

/* Rows first .. first+TILE-1 of a head (row r at base + r * stride) into
 * shared memory as fp32; rows at or past `end`, and channels past hs, are
 * zero. The whole block loads. */
template <int HS, typename E>
__device__ __forceinline__ void load_tile(float (*dst)[HS], const E *base, size_t stride, int first, int end, int hs)
{
    for (int i = threadIdx.x; i < cfg<HS>::TILE * HS; i += blockDim.x) {
        const int r = i / HS, c = i % HS, pos = first + r;
        dst[r][c] = pos < end && c < hs ? pile_cuda_load(base[(size_t)pos * stride + c]) : 0.0f;
    }
}

/* The lowest first key of rows r0 .. r1-1 (r0 < r1) of batch row b,
 * where a query block's key loop starts (backend_cpu.c's att_block_lo).
 * Warp 0 takes the minimum; the whole block must call it. */
static __device__ int block_first_key(const int32_t *doc_start, int b, int T, int r0, int r1)
{
    if (!doc_start) return 0;
    __shared__ int first;
    if (threadIdx.x < 32) {
        int m = r0;
        for (int t = r0 + (int)threadIdx.x; t < r1; t += 32) m = min(m, first_key(doc_start, b, T, t));
#pragma unroll
        for (int o = 16; o > 0; o /= 2) m = min(m, __shfl_xor_sync(0xffffffffu, m, o));
        if (threadIdx.x == 0) first = m;
    }
    __syncthreads();
    return first;
}

/* Where a thread works, the same in every kernel below: its block is
 * tile blockIdx.x of ROWS positions (queries or keys) of head blockIdx.y
 * of batch row blockIdx.z; its group of G threads owns one position, the
 * thread being the group's g-th. */
struct att_place {
    int b, h, g;
    int first, end; /* the block's positions: first .. end-1, end <= T */
    int pos;        /* the group's */
    bool exists;    /* pos < T (the last tile's rest have none) */
};

template <int HS> __device__ __forceinline__ att_place place_of(int T)
{
    att_place a;
    a.b = blockIdx.z;
    a.h = blockIdx.y;
    a.g = threadIdx.x % cfg<HS>::G;
    a.first = blockIdx.x * cfg<HS>::ROWS;
    a.end = min(a.first + cfg<HS>::ROWS, T);
    a.pos = a.first + (int)threadIdx.x / cfg<HS>::G;
    a.exists = a.pos < T;
    return a;
}

/* Forward: block (query tile, h, b); thread group per query row t. */
template <int HS, typename E>
__global__ void __launch_bounds__(cfg<HS>::THREADS)
    att_fwd(E *out, float *lse, const E *qkv, const int32_t *doc_start, int T, int C, int NH, int hs, float scale)
{
    constexpr int G = cfg<HS>::G, DPT = cfg<HS>::DPT, TILE = cfg<HS>::TILE;
    __shared__ float Ks[TILE][HS], Vs[TILE][HS];
    const att_place at = place_of<HS>(T);
    const int b = at.b, h = at.h, g = at.g, r0 = at.first, r1 = at.end, t = at.pos;
    const bool row = at.exists;
    const size_t C3 = (size_t)3 * C;
    const E *q = qkv + (size_t)b * T * C3 + (size_t)h * hs, *k = q + C, *v = q + 2 * (size_t)C;
    const int lo = row ? first_key(doc_start, b, T, t) : T; /* a row past T sees nothing */

    float qr[DPT], acc[DPT];
    load_slice<HS>(qr, q + (size_t)t * C3, row, g, hs);
#pragma unroll
    for (int c = 0; c < DPT; c++) acc[c] = 0.0f;
    float m = -INFINITY, l = 0.0f;

    for (int k0 = block_first_key(doc_start, b, T, r0, r1); k0 < r1; k0 += TILE) {
        __syncthreads(); /* the previous tile is read */
        load_tile<HS>(Ks, k, C3, k0, r1, hs); /* keys from r1 on are after every row */
        load_tile<HS>(Vs, v, C3, k0, r1, hs);
        __syncthreads();
        /* S = scale q.k over the tile; seen: lo <= key <= t */
        float s[TILE];
        unsigned seen = 0;
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < TILE; j++) {
            float d = 0.0f;
#pragma unroll
            for (int c = 0; c < DPT; c++) d += qr[c] * Ks[j][c * G + g];
            d = group_sum<G>(d);
            const int key = k0 + j;
            s[j] = d * scale;
            if (key >= lo && key <= t) {
                seen |= 1u << j;
                mx = fmaxf(mx, s[j]);
            }
        }
        if (seen) {
            /* the online softmax (backend_cpu.c's att_online_rows) */
            const float mnew = fmaxf(m, mx);
            float sum = 0.0f;
#pragma unroll
            for (int j = 0; j < TILE; j++) {
                s[j] = seen >> j & 1u ? expf(s[j] - mnew) : 0.0f;
                sum += s[j];
            }
            if (m == -INFINITY) {
                l = sum; /* acc is still zero */
            } else {
                const float alpha = expf(m - mnew);
                l = l * alpha + sum;
#pragma unroll
                for (int c = 0; c < DPT; c++) acc[c] *= alpha;
            }
            m = mnew;
#pragma unroll
            for (int j = 0; j < TILE; j++) {
#pragma unroll
                for (int c = 0; c < DPT; c++) acc[c] += s[j] * Vs[j][c * G + g];
            }
        }
    }
    if (row) { /* every row sees at least itself: l >= 1 */
        const float inv = 1.0f / l;
        E *o = out + ((size_t)b * T + t) * C + (size_t)h * hs;
#pragma unroll
        for (int c = 0; c < DPT; c++) {
            const int ch = c * G + g;
            if (ch < hs) o[ch] = pile_cuda_store<E>(acc[c] * inv);
        }
        if (g == 0) lse[((size_t)b * NH + h) * T + t] = m + logf(l);
    }
}

/* Backward, first kernel: block (query tile, h, b); thread group per
 * query row t. D = rowsum(dO * O) into Dbuf for the second kernel, then
 * dQ over the key tiles the row may see, added once into dqkv. */
template <int HS, typename E>
__global__ void __launch_bounds__(cfg<HS>::THREADS)
    att_bwd_dq(E *dqkv, float *Dbuf, const E *dout, const E *qkv, const E *out, const float *lse,
               const int32_t *doc_start, int T, int C, int NH, int hs, float scale)
{
    constexpr int G = cfg<HS>::G, DPT = cfg<HS>::DPT, TILE = cfg<HS>::TILE;
    __shared__ float Ks[TILE][HS], Vs[TILE][HS];
    const att_place at = place_of<HS>(T);
    const int b = at.b, h = at.h, g = at.g, r0 = at.first, r1 = at.end, t = at.pos;
    const bool row = at.exists;
    const size_t C3 = (size_t)3 * C, oi = ((size_t)b * T + t) * C + (size_t)h * hs, ri = ((size_t)b * NH + h) * T + t;
    const E *q = qkv + (size_t)b * T * C3 + (size_t)h * hs, *k = q + C, *v = q + 2 * (size_t)C;
    const int lo = row ? first_key(doc_start, b, T, t) : T;

    float qr[DPT], dor[DPT], dq[DPT];
    load_slice<HS>(qr, q + (size_t)t * C3, row, g, hs);
    load_slice<HS>(dor, dout + oi, row, g, hs);
    load_slice<HS>(dq, out + oi, row, g, hs); /* O, only for D */
    float D = 0.0f;
#pragma unroll
    for (int c = 0; c < DPT; c++) D += dor[c] * dq[c];
    D = group_sum<G>(D);
#pragma unroll
    for (int c = 0; c < DPT; c++) dq[c] = 0.0f;
    const float L = row ? lse[ri] : 0.0f;
    if (row && g == 0) Dbuf[ri] = D;

    for (int k0 = block_first_key(doc_start, b, T, r0, r1); k0 < r1; k0 += TILE) {
        __syncthreads();
        load_tile<HS>(Ks, k, C3, k0, r1, hs);
        load_tile<HS>(Vs, v, C3, k0, r1, hs);
        __syncthreads();
        for (int j = 0; j < TILE; j++) {
            float s = 0.0f, dp = 0.0f;
#pragma unroll
            for (int c = 0; c < DPT; c++) {
                s += qr[c] * Ks[j][c * G + g];
                dp += dor[c] * Vs[j][c * G + g];
            }
            s = group_sum<G>(s);
            dp = group_sum<G>(dp);
            const int key = k0 + j;
            if (key >= lo && key <= t) {
                const float p = expf(s * scale - L), ds = p * (dp - D);
#pragma unroll
                for (int c = 0; c < DPT; c++) dq[c] += ds * Ks[j][c * G + g];
            }
        }
    }
    if (row) {
        E *d = dqkv + ((size_t)b * T + t) * C3 + (size_t)h * hs;
#pragma unroll
        for (int c = 0; c < DPT; c++) {
            const int ch = c * G + g;
            if (ch < hs) d[ch] = pile_cuda_store<E>(pile_cuda_load(d[ch]) + scale * dq[c]);
        }
    }
}

/* Backward, second kernel: block (key tile, h, b); thread group per key
 * s. Over the query tiles from the one holding the block's first key to
 * the end: dV = sum P dO and dK = scale sum dS q, each added once into
 * dqkv. Reads D from the first kernel. */
template <int HS, typename E>
__global__ void __launch_bounds__(cfg<HS>::THREADS)
    att_bwd_dkv(E *dqkv, const E *dout, const E *qkv, const float *lse, const float *Dbuf, const int32_t *doc_start,
                int T, int C, int NH, int hs, float scale)
{
    constexpr int G = cfg<HS>::G, DPT = cfg<HS>::DPT, TILE = cfg<HS>::TILE;
    __shared__ float Qs[TILE][HS], dOs[TILE][HS];
    __shared__ float Ls[TILE], Ds[TILE];
    __shared__ int Lo[TILE];
    const att_place at = place_of<HS>(T);
    const int b = at.b, h = at.h, g = at.g, s0 = at.first, s1 = at.end, key = at.pos;
    const bool exists = at.exists;
    const size_t C3 = (size_t)3 * C, r0 = ((size_t)b * NH + h) * T;
    const E *q = qkv + (size_t)b * T * C3 + (size_t)h * hs, *k = q + C, *v = q + 2 * (size_t)C;
    const E *dO = dout + (size_t)b * T * C + (size_t)h * hs;

    float kr[DPT], vr[DPT], dk[DPT], dv[DPT];
    load_slice<HS>(kr, k + (size_t)key * C3, exists, g, hs);
    load_slice<HS>(vr, v + (size_t)key * C3, exists, g, hs);
#pragma unroll
    for (int c = 0; c < DPT; c++) dk[c] = dv[c] = 0.0f;

    for (int q0 = s0 / TILE * TILE; q0 < T; q0 += TILE) {
        __syncthreads(); /* the previous tile is read */
        for (int i = threadIdx.x; i < TILE; i += blockDim.x) {
            const int t = q0 + i;
            Lo[i] = t < T ? first_key(doc_start, b, T, t) : T; /* a row past T sees nothing */
            Ls[i] = t < T ? lse[r0 + t] : 0.0f;
            Ds[i] = t < T ? Dbuf[r0 + t] : 0.0f;
        }
        __syncthreads();
        int lo_min = T;
        for (int i = 0; i < TILE; i++) lo_min = min(lo_min, Lo[i]);
        if (lo_min >= s1) continue; /* the same for the whole block: no row sees a key of it */
        load_tile<HS>(Qs, q, C3, q0, T, hs);
        load_tile<HS>(dOs, dO, C, q0, T, hs);
        __syncthreads();
        for (int i = 0; i < TILE; i++) {
            float s = 0.0f, dp = 0.0f;
#pragma unroll
            for (int c = 0; c < DPT; c++) {
                s += Qs[i][c * G + g] * kr[c];
                dp += dOs[i][c * G + g] * vr[c];
            }
            s = group_sum<G>(s);
            dp = group_sum<G>(dp);
            const int t = q0 + i;
            if (exists && key >= Lo[i] && key <= t) {
                const float p = expf(s * scale - Ls[i]), ds = p * (dp - Ds[i]);
#pragma unroll
                for (int c = 0; c < DPT; c++) {
                    dv[c] += p * dOs[i][c * G + g];
                    dk[c] += ds * Qs[i][c * G + g];
                }
            }
        }
    }
    if (exists) {
        E *d = dqkv + ((size_t)b * T + key) * C3 + (size_t)h * hs;
#pragma unroll
        for (int c = 0; c < DPT; c++) {
            const int ch = c * G + g;
            if (ch < hs) {
                d[C + ch] = pile_cuda_store<E>(pile_cuda_load(d[C + ch]) + scale * dk[c]);
                d[2 * C + ch] = pile_cuda_store<E>(pile_cuda_load(d[2 * C + ch]) + dv[c]);
            }
        }
    }
}

/* Decode: one block per head, DECODE_THREADS threads. */
static constexpr int DECODE_THREADS = 256;

struct op_max {
    __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct op_sum {
    __device__ float operator()(float a, float b) const { return a + b; }
};

/* Every thread's x combined over the block by a fixed tree; red holds
 * blockDim.x (a power of two) floats. The whole block must call it. */
template <typename Op> __device__ float block_reduce(float x, float *red, Op op)
{
    red[threadIdx.x] = x;
    __syncthreads();
    for (int n = blockDim.x / 2; n > 0; n /= 2) {
        if ((int)threadIdx.x < n) red[threadIdx.x] = op(red[threadIdx.x], red[threadIdx.x + n]);
        __syncthreads();
    }
    const float r = red[0];
    __syncthreads(); /* red is free again */
    return r;
}

/* backend_cpu.c's cpu_attention_decode for head blockIdx.x: scores of
 * positions 0 .. n-1 into att, its softmax in place, out = att V. */
template <typename E>
__global__ void __launch_bounds__(DECODE_THREADS)
    att_decode(E *out, float *att, const E *q, const E *kcache, const E *vcache, int n, int C, int hs, float scale)
{
    __shared__ float red[DECODE_THREADS];
    const int h = blockIdx.x;
    float *p = att + (size_t)h * n;
    const E *qh = q + (size_t)h * hs;
    float mx = -INFINITY;
    for (int s = threadIdx.x; s < n; s += blockDim.x) {
        const E *kr = kcache + (size_t)s * C + (size_t)h * hs;
        float dot = 0.0f;
        for (int i = 0; i < hs; i++) dot += pile_cuda_load(qh[i]) * pile_cuda_load(kr[i]);
        p[s] = dot * scale;
        mx = fmaxf(mx, p[s]);
    }
    mx = block_reduce(mx, red, op_max());
    float sum = 0.0f;
    for (int s = threadIdx.x; s < n; s += blockDim.x) {
        p[s] = expf(p[s] - mx);
        sum += p[s];
    }
    const float inv = 1.0f / block_reduce(sum, red, op_sum());
    for (int s = threadIdx.x; s < n; s += blockDim.x) p[s] *= inv;
    __syncthreads(); /* every p[s] is final: each thread reads all of them */
    for (int i = threadIdx.x; i < hs; i += blockDim.x) {
        float o = 0.0f;
        for (int s = 0; s < n; s++) o += p[s] * pile_cuda_load(vcache[(size_t)s * C + (size_t)h * hs + i]);
        out[(size_t)h * hs + i] = pile_cuda_store<E>(o);
    }
}

} /* namespace pile_att */

#ifndef PILE_CUDA_SIM
using namespace pile_att;

/* Runs BODY with the constexpr int HS set to capacity CAP (head_cap). */
#define ATT_HS_CASE(N, HS, ...)  \
    case N: {                    \
        constexpr int HS = N;    \
        __VA_ARGS__;             \
    } break;
#define ATT_HS_DISPATCH(CAP, HS, ...)                                                                            \
    switch (CAP) {                                                                                               \
        ATT_HS_CASE(16, HS, __VA_ARGS__)                                                                         \
        ATT_HS_CASE(32, HS, __VA_ARGS__)                                                                         \
        ATT_HS_CASE(64, HS, __VA_ARGS__)                                                                         \
        ATT_HS_CASE(128, HS, __VA_ARGS__)                                                                        \
        ATT_HS_CASE(256, HS, __VA_ARGS__)                                                                        \
    default: break;                                                                                              \
    }

/* The head size's capacity, or 0 with the sticky error set. */
static int att_cap(pile_backend *be, const char *op, int C, int NH)
{
    const int hs = C / NH, cap = head_cap(hs);
    if (!cap)
        pile__backend_fail(be, PILE_EINVAL, op, "head size %d is above the %d the cuda attention supports", hs,
                           MAX_HEAD);
    return cap;
}

size_t pile__cuda_attention_saved_bytes(const pile_backend *be, int B, int T, int C, int NH)
{
    (void)be;
    (void)C;
    return (size_t)pile__cuda_attention_saved_size(B, T, NH);
}

size_t pile__cuda_attention_scratch_bytes(const pile_backend *be, int B, int T, int C, int NH)
{
    (void)be;
    (void)C;
    return (size_t)pile__cuda_attention_scratch_size(B, T, NH);
}

void pile__cuda_attention_fwd(pile_backend *be, pile_tensor out, pile_tensor saved, pile_tensor scratch,
                              pile_tensor qkv, pile_tensor doc_start, int B, int T, int C, int NH)
{
    (void)scratch;
    const int cap = att_cap(be, "attention_fwd", C, NH), hs = C / NH;
    if (!cap || B == 0 || T == 0) return;
    const float scale = 1.0f / sqrtf((float)hs);
    const cudaStream_t st = pile__cuda_ctx(be)->stream;
    PILE_CUDA_DISPATCH(out.dtype, E, ATT_HS_DISPATCH(cap, HS, {
        const dim3 grid((unsigned)((T + cfg<HS>::ROWS - 1) / cfg<HS>::ROWS), (unsigned)NH, (unsigned)B);
        att_fwd<HS, E><<<grid, cfg<HS>::THREADS, 0, st>>>((E *)out.data, (float *)saved.data, (const E *)qkv.data,
                                                          (const int32_t *)doc_start.data, T, C, NH, hs, scale);
    }));
    pile__cuda_check(be, "attention_fwd");
}

void pile__cuda_attention_bwd(pile_backend *be, pile_tensor dqkv, pile_tensor scratch, pile_tensor dout,
                              pile_tensor qkv, pile_tensor out, pile_tensor saved, pile_tensor doc_start, int B, int T,
                              int C, int NH)
{
    const int cap = att_cap(be, "attention_bwd", C, NH), hs = C / NH;
    if (!cap || B == 0 || T == 0) return;
    const float scale = 1.0f / sqrtf((float)hs);
    const cudaStream_t st = pile__cuda_ctx(be)->stream;
    float *D = (float *)scratch.data;
    const float *lse = (const float *)saved.data;
    const int32_t *ds = (const int32_t *)doc_start.data;
    PILE_CUDA_DISPATCH(dout.dtype, E, ATT_HS_DISPATCH(cap, HS, {
        const dim3 grid((unsigned)((T + cfg<HS>::ROWS - 1) / cfg<HS>::ROWS), (unsigned)NH, (unsigned)B);
        att_bwd_dq<HS, E><<<grid, cfg<HS>::THREADS, 0, st>>>((E *)dqkv.data, D, (const E *)dout.data,
                                                             (const E *)qkv.data, (const E *)out.data, lse, ds, T, C,
                                                             NH, hs, scale);
        att_bwd_dkv<HS, E><<<grid, cfg<HS>::THREADS, 0, st>>>((E *)dqkv.data, (const E *)dout.data,
                                                              (const E *)qkv.data, lse, D, ds, T, C, NH, hs, scale);
    }));
    pile__cuda_check(be, "attention_bwd");
}

void pile__cuda_attention_decode(pile_backend *be, pile_tensor out, pile_tensor att, pile_tensor q,
                                 pile_tensor kcache, pile_tensor vcache, int t, int C, int NH)
{
    const int hs = C / NH;
    const float scale = 1.0f / sqrtf((float)hs);
    const cudaStream_t st = pile__cuda_ctx(be)->stream;
    PILE_CUDA_DISPATCH(out.dtype, E, {
        att_decode<E><<<(unsigned)NH, DECODE_THREADS, 0, st>>>((E *)out.data, (float *)att.data, (const E *)q.data,
                                                               (const E *)kcache.data, (const E *)vcache.data, t + 1,
                                                               C, hs, scale);
    });
    pile__cuda_check(be, "attention_decode");
}
#endif
