/* The CUDA backend's embeddings and LayerNorm, forward and backward, each
 * the CPU backend's function (backend_cpu.c) with its rounding points:
 * compute values widen to fp32, statistics and weight gradients stay fp32,
 * compute outputs are rounded once on the store.
 *
 * Determinism without atomics, where many inputs meet one output:
 *  - embed_bwd's dwte: the positions are sorted by token (CUB's radix sort,
 *    stable, so each token's positions stay in ascending order); one block
 *    per token then adds its positions in that order, one thread per 8
 *    channels. That is the CPU's order exactly (it adds rows in order into
 *    dwte), so dwte gets the CPU's bits. dwpe: one thread per (position,
 *    channels) adds the batch rows in order, the CPU's order too.
 *  - layernorm_bwd's dw, db: per-chunk column sums of a fixed number of
 *    rows into pile__cuda_scratch, then one thread per channel adds the
 *    chunks in order. The chunks depend on N alone.
 * The scratch each op takes is its figure in cuda_sizes.h. */
#ifndef PILE_CUDA_SIM /* tests/cuda_sim_runtime.h has a stand-in */
#include <cub/device/device_radix_sort.cuh>
#endif

#include "kernels.cuh"

#define ROW_THREADS 128   /* threads per row of the embedding kernels */
#define LN_ROWS_PER_BLOCK 8 /* LayerNorm: one warp per row */

/* ----------------------------------------------------------- embeddings */

/* out[r] = wte[tokens[r]] + wpe[r % T]; one block per row (grid-stride),
 * a pack of 8 channels per thread. A token outside the table (the CPU
 * would read outside wte) gives a row of NaN, which the loss shows. */
template <typename T>
__global__ void embed_fwd_kernel(T *out, const int32_t *tokens, const T *wte, const T *wpe, long rows, int T_, int C, long vrows,
                                 bool vec)
{
    for (long r = blockIdx.x; r < rows; r += gridDim.x) {
        const int32_t tok = tokens[r];
        const bool ok = tok >= 0 && tok < vrows;
        const T *e = wte + (ok ? (size_t)tok * C : 0);
        const T *p = wpe + (size_t)(r % T_) * C;
        T *o = out + (size_t)r * C;
        for (int c = threadIdx.x * PILE_PACK; c < C; c += blockDim.x * PILE_PACK) {
            float a[PILE_PACK], b[PILE_PACK];
            pile_load_pack(a, e + c, (size_t)(C - c), vec);
            pile_load_pack(b, p + c, (size_t)(C - c), vec);
#pragma unroll
            for (int k = 0; k < PILE_PACK; k++) a[k] = ok ? a[k] + b[k] : __int_as_float(0x7fc00000);
            pile_store_pack(o + c, a, (size_t)(C - c), vec);
        }
    }
}

void pile__cuda_embed_fwd(pile_backend *be, pile_tensor out, pile_tensor tokens, pile_tensor wte, pile_tensor wpe, int B, int T,
                          int C)
{
    const long rows = (long)B * T;
    if (!rows || !C) return;
    const bool vec = C % PILE_PACK == 0 && pile_aligned16(out.data) && pile_aligned16(wte.data) && pile_aligned16(wpe.data);
    const unsigned blocks = (unsigned)(rows < 65536 ? rows : 65536);
    PILE_CUDA_DISPATCH(out.dtype, TT,
                       PILE_LAUNCH(blocks, ROW_THREADS, pile__cuda_ctx(be)->stream, embed_fwd_kernel<TT>)(
                           (TT *)out.data, (const int32_t *)tokens.data, (const TT *)wte.data, (const TT *)wpe.data, rows, T, C,
                           (long)(wte.n / (size_t)C), vec));
    pile__cuda_check(be, "embed_fwd");
}

/* dwpe[t] += dout[b, t] for b in order: one thread per pack of the [T, C]
 * table; dout's row (b, t) starts b*T*C elements after row (0, t). */
template <typename T> __global__ void embed_bwd_wpe_kernel(float *dwpe, const T *dout, int B, size_t TC, bool vec)
{
    for (size_t k = pile_first_pack(); k * PILE_PACK < TC; k += pile_pack_stride()) {
        const size_t j = k * PILE_PACK;
        float acc[PILE_PACK], d[PILE_PACK];
        pile_load_pack(acc, dwpe + j, TC - j, vec);
        for (int b = 0; b < B; b++) {
            pile_load_pack(d, dout + (size_t)b * TC + j, TC - j, vec);
#pragma unroll
            for (int e = 0; e < PILE_PACK; e++) acc[e] += d[e];
        }
        pile_store_pack(dwpe + j, acc, TC - j, vec);
    }
}

/* The sort's keys: the token, or vrows for one outside the table (its
 * gradient has nowhere to go; the forward made its row NaN); values: the
 * position. */
__global__ void embed_keys_kernel(uint32_t *key, int32_t *pos, const int32_t *tokens, int n, long vrows)
{
    for (int r = blockIdx.x * blockDim.x + threadIdx.x; r < n; r += gridDim.x * blockDim.x) {
        const int32_t t = tokens[r];
        key[r] = t >= 0 && t < vrows ? (uint32_t)t : (uint32_t)vrows;
        pos[r] = r;
    }
}

/* Block j of the sorted positions: when j starts a run of one token,
 * dwte[token] += dout[pos] for the run's positions in order (ascending:
 * the sort is stable). Other blocks return at once. */
template <typename T>
__global__ void embed_bwd_wte_kernel(float *dwte, const T *dout, const uint32_t *key, const int32_t *pos, int n, int C, long vrows,
                                     bool vec)
{
    const int j = blockIdx.x;
    const uint32_t v = key[j];
    if ((j > 0 && key[j - 1] == v) || v >= (uint32_t)vrows) return;
    float *w = dwte + (size_t)v * C;
    for (int c = threadIdx.x * PILE_PACK; c < C; c += blockDim.x * PILE_PACK) {
        float acc[PILE_PACK], d[PILE_PACK];
        pile_load_pack(acc, w + c, (size_t)(C - c), vec);
        for (int q = j; q < n && key[q] == v; q++) {
            pile_load_pack(d, dout + (size_t)pos[q] * C + c, (size_t)(C - c), vec);
#pragma unroll
            for (int e = 0; e < PILE_PACK; e++) acc[e] += d[e];
        }
        pile_store_pack(w + c, acc, (size_t)(C - c), vec);
    }
}

cudaError_t pile__cuda_sort_temp_bytes(int n, int end_bit, cudaStream_t stream, size_t *bytes)
{
    *bytes = 0;
    return cub::DeviceRadixSort::SortPairs(nullptr, *bytes, (const uint32_t *)nullptr, (uint32_t *)nullptr,
                                           (const int32_t *)nullptr, (int32_t *)nullptr, n, 0, end_bit, stream);
}

void pile__cuda_embed_bwd(pile_backend *be, pile_tensor dwte, pile_tensor dwpe, pile_tensor dout, pile_tensor tokens, int B, int T,
                          int C)
{
    pile_cuda_ctx *ctx = pile__cuda_ctx(be);
    const int n = B * T; /* backend.c checked that tokens holds B*T ids, so it fits an int for any real batch */
    if (!n || !C) return;
    const long vrows = (long)(dwte.n / (size_t)C);
    const size_t TC = (size_t)T * C;

    /* dwpe */
    const bool vec_pe = TC % PILE_PACK == 0 && pile_aligned16(dwpe.data) && pile_aligned16(dout.data);
    const unsigned blocks_pe = pile_blocks(be, (TC + PILE_PACK - 1) / PILE_PACK);
    PILE_CUDA_DISPATCH(dout.dtype, TT,
                       PILE_LAUNCH(blocks_pe, PILE_THREADS, ctx->stream, embed_bwd_wpe_kernel<TT>)(
                           (float *)dwpe.data, (const TT *)dout.data, B, TC, vec_pe));
    if (pile__cuda_check(be, "embed_bwd")) return;

    /* dwte: sort (token, position) pairs by token, stably, on the bits
     * that hold a key (the sentinel vrows included) */
    int end_bit = 1;
    while (end_bit < 32 && ((uint64_t)1 << end_bit) <= (uint64_t)vrows) end_bit++;
    size_t sort_bytes = 0;
    if (pile__cuda_sort_temp_bytes(n, end_bit, ctx->stream, &sort_bytes) != cudaSuccess) {
        (void)cudaGetLastError();
        pile__backend_fail(be, PILE_EIO, "embed_bwd", "cannot size the token sort of %d positions", n);
        return;
    }
    /* scratch: keys and positions before and after the sort, the sort's
     * own space, within cuda_sizes.h's bound (which reserve_scratch
     * checked at the run's largest n) */
    const size_t ids = (size_t)pile__cuda_embed_ids_size(n), want = (size_t)pile__cuda_embed_bwd_scratch_size(n);
    if (4 * ids + sort_bytes > want) {
        pile__backend_fail(be, PILE_EIO, "embed_bwd",
                           "the token sort of %d positions needs %zu bytes of CUB's storage, above the bound of "
                           "trainer/cuda/cuda_sizes.h (%zu bytes with the keys)",
                           n, sort_bytes, want);
        return;
    }
    char *s = (char *)pile__cuda_scratch(be, want, "embed_bwd");
    if (!s) return;
    uint32_t *key_in = (uint32_t *)s, *key = (uint32_t *)(s + ids);
    int32_t *pos_in = (int32_t *)(s + 2 * ids), *pos = (int32_t *)(s + 3 * ids);
    PILE_LAUNCH(pile_blocks(be, (size_t)n), PILE_THREADS, ctx->stream, embed_keys_kernel)(
        key_in, pos_in, (const int32_t *)tokens.data, n, vrows);
    if (pile__cuda_check(be, "embed_bwd")) return;
    if (cub::DeviceRadixSort::SortPairs(s + 4 * ids, sort_bytes, key_in, key, pos_in, pos, n, 0, end_bit, ctx->stream) != cudaSuccess) {
        pile__cuda_check(be, "embed_bwd");
        pile__backend_fail(be, PILE_EIO, "embed_bwd", "the token sort of %d positions failed", n);
        return;
    }
    const bool vec_te = C % PILE_PACK == 0 && pile_aligned16(dwte.data) && pile_aligned16(dout.data);
    PILE_CUDA_DISPATCH(dout.dtype, TT,
                       PILE_LAUNCH(n, ROW_THREADS, ctx->stream, embed_bwd_wte_kernel<TT>)(
                           (float *)dwte.data, (const TT *)dout.data, key, pos, n, C, vrows, vec_te));
    pile__cuda_check(be, "embed_bwd");
}

/* ------------------------------------------------------------ LayerNorm */

/* backend_cpu.c's ln_fwd_row, one warp per row: the mean, then the
 * centred sum of squares (two passes: it does not cancel), each lane
 * adding its packs in order and the warp's butterfly adding the lanes;
 * then out = (x - m) * rs * w + b. */
template <typename T>
__global__ void layernorm_fwd_kernel(T *out, float *mean, float *rstd, const T *inp, const T *w, const T *b, int N, int C, bool vec)
{
    const int lane = threadIdx.x % 32;
    const int i = blockIdx.x * LN_ROWS_PER_BLOCK + threadIdx.x / 32;
    if (i >= N) return;
    const T *x = inp + (size_t)i * C;
    T *o = out + (size_t)i * C;
    float f[PILE_PACK];

    float s = 0.0f;
    for (int c = lane * PILE_PACK; c < C; c += 32 * PILE_PACK) {
        pile_load_pack(f, x + c, (size_t)(C - c), vec);
#pragma unroll
        for (int k = 0; k < PILE_PACK; k++)
            if (c + k < C) s += f[k];
    }
    const float m = pile_warp_sum(s) / C;

    float v = 0.0f;
    for (int c = lane * PILE_PACK; c < C; c += 32 * PILE_PACK) {
        pile_load_pack(f, x + c, (size_t)(C - c), vec);
#pragma unroll
        for (int k = 0; k < PILE_PACK; k++)
            if (c + k < C) v += (f[k] - m) * (f[k] - m);
    }
    const float rs = 1.0f / sqrtf(pile_warp_sum(v) / C + 1e-5f);

    for (int c = lane * PILE_PACK; c < C; c += 32 * PILE_PACK) {
        float ww[PILE_PACK], bb[PILE_PACK];
        pile_load_pack(f, x + c, (size_t)(C - c), vec);
        pile_load_pack(ww, w + c, (size_t)(C - c), vec);
        pile_load_pack(bb, b + c, (size_t)(C - c), vec);
#pragma unroll
        for (int k = 0; k < PILE_PACK; k++) f[k] = (f[k] - m) * rs * ww[k] + bb[k];
        pile_store_pack(o + c, f, (size_t)(C - c), vec);
    }
    if (lane == 0) {
        mean[i] = m;
        rstd[i] = rs;
    }
}

void pile__cuda_layernorm_fwd(pile_backend *be, pile_tensor out, pile_tensor mean, pile_tensor rstd, pile_tensor inp, pile_tensor w,
                              pile_tensor b, int N, int C)
{
    if (!N || !C) return;
    const bool vec = C % PILE_PACK == 0 && pile_aligned16(out.data) && pile_aligned16(inp.data) && pile_aligned16(w.data) &&
                     pile_aligned16(b.data);
    const unsigned blocks = (unsigned)((N + LN_ROWS_PER_BLOCK - 1) / LN_ROWS_PER_BLOCK);
    PILE_CUDA_DISPATCH(out.dtype, T,
                       PILE_LAUNCH(blocks, 32 * LN_ROWS_PER_BLOCK, pile__cuda_ctx(be)->stream, layernorm_fwd_kernel<T>)(
                           (T *)out.data, (float *)mean.data, (float *)rstd.data, (const T *)inp.data, (const T *)w.data,
                           (const T *)b.data, N, C, vec));
    pile__cuda_check(be, "layernorm_fwd");
}

/* backend_cpu.c's ln_bwd_row, one warp per row: dinp += (d w - mean(d w)
 * - n mean(d w n)) rs with n = (x - m) rs. */
template <typename T>
__global__ void layernorm_bwd_dx_kernel(T *dinp, const T *dout, const T *inp, const T *w, const float *mean, const float *rstd, int N,
                                        int C, bool vec)
{
    const int lane = threadIdx.x % 32;
    const int i = blockIdx.x * LN_ROWS_PER_BLOCK + threadIdx.x / 32;
    if (i >= N) return;
    const T *x = inp + (size_t)i * C, *d = dout + (size_t)i * C;
    T *dx = dinp + (size_t)i * C;
    const float m = mean[i], rs = rstd[i];
    float xx[PILE_PACK], dd[PILE_PACK], ww[PILE_PACK];

    float sd = 0.0f, sdn = 0.0f;
    for (int c = lane * PILE_PACK; c < C; c += 32 * PILE_PACK) {
        pile_load_pack(xx, x + c, (size_t)(C - c), vec);
        pile_load_pack(dd, d + c, (size_t)(C - c), vec);
        pile_load_pack(ww, w + c, (size_t)(C - c), vec);
#pragma unroll
        for (int k = 0; k < PILE_PACK; k++) {
            if (c + k < C) {
                const float dn = dd[k] * ww[k];
                sd += dn;
                sdn += dn * (xx[k] - m) * rs;
            }
        }
    }
    sd = pile_warp_sum(sd) / C;
    sdn = pile_warp_sum(sdn) / C;

    for (int c = lane * PILE_PACK; c < C; c += 32 * PILE_PACK) {
        float acc[PILE_PACK];
        pile_load_pack(xx, x + c, (size_t)(C - c), vec);
        pile_load_pack(dd, d + c, (size_t)(C - c), vec);
        pile_load_pack(ww, w + c, (size_t)(C - c), vec);
        pile_load_pack(acc, dx + c, (size_t)(C - c), vec);
#pragma unroll
        for (int k = 0; k < PILE_PACK; k++) {
            const float n = (xx[k] - m) * rs;
            acc[k] += (dd[k] * ww[k] - sd - n * sdn) * rs;
        }
        pile_store_pack(dx + c, acc, (size_t)(C - c), vec);
    }
}

/* backend_cpu.c's ln_bwd_cols over one chunk of rows: the column sums of
 * d (x - m) rs and of d, rows in order, one thread per pack of channels
 * (blockIdx.y picks the packs), into pw[chunk], pb[chunk]. */
template <typename T>
__global__ void layernorm_bwd_cols_kernel(float *pw, float *pb, const T *dout, const T *inp, const float *mean, const float *rstd,
                                          int N, int C, int rows_per_chunk, bool vec)
{
    const int c = (blockIdx.y * blockDim.x + threadIdx.x) * PILE_PACK;
    if (c >= C) return;
    const int i0 = blockIdx.x * rows_per_chunk, i1 = i0 + rows_per_chunk < N ? i0 + rows_per_chunk : N;
    float aw[PILE_PACK] = {0}, ab[PILE_PACK] = {0}, xx[PILE_PACK], dd[PILE_PACK];
    for (int i = i0; i < i1; i++) {
        pile_load_pack(xx, inp + (size_t)i * C + c, (size_t)(C - c), vec);
        pile_load_pack(dd, dout + (size_t)i * C + c, (size_t)(C - c), vec);
        const float m = mean[i], rs = rstd[i];
#pragma unroll
        for (int k = 0; k < PILE_PACK; k++) {
            aw[k] += dd[k] * (xx[k] - m) * rs;
            ab[k] += dd[k];
        }
    }
    pile_store_pack(pw + (size_t)blockIdx.x * C + c, aw, (size_t)(C - c), vec);
    pile_store_pack(pb + (size_t)blockIdx.x * C + c, ab, (size_t)(C - c), vec);
}

/* dw[c] += the chunks' sums in order (added first, then into dw, as the
 * CPU adds its column sum into dw). */
__global__ void layernorm_bwd_total_kernel(float *dw, float *db, const float *pw, const float *pb, int chunks, int C)
{
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float sw = 0.0f, sb = 0.0f;
    for (int k = 0; k < chunks; k++) {
        sw += pw[(size_t)k * C + c];
        sb += pb[(size_t)k * C + c];
    }
    dw[c] += sw;
    db[c] += sb;
}

void pile__cuda_layernorm_bwd(pile_backend *be, pile_tensor dinp, pile_tensor dw, pile_tensor db, pile_tensor dout, pile_tensor inp,
                              pile_tensor w, pile_tensor mean, pile_tensor rstd, int N, int C)
{
    cudaStream_t st = pile__cuda_ctx(be)->stream;
    if (!N || !C) return;
    const bool vec = C % PILE_PACK == 0 && pile_aligned16(dinp.data) && pile_aligned16(dout.data) && pile_aligned16(inp.data) &&
                     pile_aligned16(w.data);
    const unsigned blocks = (unsigned)((N + LN_ROWS_PER_BLOCK - 1) / LN_ROWS_PER_BLOCK);
    PILE_CUDA_DISPATCH(dout.dtype, T,
                       PILE_LAUNCH(blocks, 32 * LN_ROWS_PER_BLOCK, st, layernorm_bwd_dx_kernel<T>)(
                           (T *)dinp.data, (const T *)dout.data, (const T *)inp.data, (const T *)w.data,
                           (const float *)mean.data, (const float *)rstd.data, N, C, vec));
    if (pile__cuda_check(be, "layernorm_bwd")) return;

    /* dw, db: chunks of rows fixed by N alone */
    const int rows_per_chunk = pile__cuda_ln_chunk_rows(N);
    const int chunks = (N + rows_per_chunk - 1) / rows_per_chunk;
    const size_t part = (size_t)pile__cuda_layernorm_bwd_part_size(N, C); /* >= chunks * C floats */
    char *s = (char *)pile__cuda_scratch(be, (size_t)pile__cuda_layernorm_bwd_scratch_size(N, C), "layernorm_bwd");
    if (!s) return;
    float *pw = (float *)s, *pb = (float *)(s + part);
    const int packs = (C + PILE_PACK - 1) / PILE_PACK;
    const dim3 grid((unsigned)chunks, (unsigned)((packs + PILE_THREADS - 1) / PILE_THREADS));
    const bool vec_cols = C % PILE_PACK == 0 && pile_aligned16(dout.data) && pile_aligned16(inp.data) && pile_aligned16(s);
    PILE_CUDA_DISPATCH(dout.dtype, T,
                       PILE_LAUNCH(grid, PILE_THREADS, st, layernorm_bwd_cols_kernel<T>)(
                           pw, pb, (const T *)dout.data, (const T *)inp.data, (const float *)mean.data,
                           (const float *)rstd.data, N, C, rows_per_chunk, vec_cols));
    if (pile__cuda_check(be, "layernorm_bwd")) return;
    PILE_LAUNCH((unsigned)((C + PILE_THREADS - 1) / PILE_THREADS), PILE_THREADS, st, layernorm_bwd_total_kernel)(
        (float *)dw.data, (float *)db.data, pw, pb, chunks, C);
    pile__cuda_check(be, "layernorm_bwd");
}
