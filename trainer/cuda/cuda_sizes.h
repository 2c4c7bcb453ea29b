/* The device bytes the CUDA backend holds beyond its tensors, in plain C
 * with no CUDA types: the .cu files size and lay out their buffers from
 * here, and the planner (plan.c, built with or without CUDA) counts a GPU
 * run from here, so the plan cannot drift from what the backend takes.
 *  - attention (attention.cu): its saved state per layer and its
 *    backward's scratch, tensors the model allocates;
 *  - the ops' scratch (pile__cuda_scratch): the partial sums of the
 *    deterministic reductions and embed_bwd's sort, one buffer taken once
 *    with the arena (pile_backend_reserve_scratch) for the largest of
 *    them. Each op's figure below is what the op asks for at its shape,
 *    never less than its layout uses, and never decreasing as the shape
 *    grows, so the run's figure (pile__cuda_scratch_size) serves every
 *    micro-batch up to the planned one. */
#ifndef PILE_CUDA_SIZES_H
#define PILE_CUDA_SIZES_H

#include <stdint.h>

/* saved: the log-sum-exp of each row's scores, fp32 [B, NH, T], per
 * layer (kept for the backward). */
static inline uint64_t pile__cuda_attention_saved_size(int B, int T, int NH)
{
    return (uint64_t)B * (uint64_t)NH * (uint64_t)T * sizeof(float);
}

/* scratch: D = rowsum(dO * O), fp32 [B, NH, T], written by the first
 * backward kernel and read by the second; one buffer for all layers. */
static inline uint64_t pile__cuda_attention_scratch_size(int B, int T, int NH)
{
    return (uint64_t)B * (uint64_t)NH * (uint64_t)T * sizeof(float);
}

/* ------------------------------------------------- the ops' scratch */

/* Every part of the scratch starts on 256 bytes (cudaMalloc's alignment:
 * any vector width, and CUB's own). */
static inline uint64_t pile__cuda_up256(uint64_t x) { return (x + 255) / 256 * 256; }
static inline uint64_t pile__cuda_min(uint64_t a, uint64_t b) { return a < b ? a : b; }
static inline uint64_t pile__cuda_max(uint64_t a, uint64_t b) { return a > b ? a : b; }

/* layernorm_bwd's dw, db: column sums over chunks of at least
 * LN_MIN_CHUNK rows, at most LN_MAX_CHUNKS chunks, fixed by N alone. */
#define PILE_CUDA_LN_MIN_CHUNK 64
#define PILE_CUDA_LN_MAX_CHUNKS 1024

static inline int pile__cuda_ln_chunk_rows(int N)
{
    const int rows = (N + PILE_CUDA_LN_MAX_CHUNKS - 1) / PILE_CUDA_LN_MAX_CHUNKS;
    return rows < PILE_CUDA_LN_MIN_CHUNK ? PILE_CUDA_LN_MIN_CHUNK : rows;
}

/* One of its two fp32 [chunks, C] partials (dw's, then db's), for the
 * most chunks any N' <= N makes: ceil(N' / rows) is at most N' / 64 and
 * at most 1024 (the exact count, ceil(N / ceil(N / 1024)), can rise as N
 * falls, e.g. 1015 chunks at N = 70000 and 1016 at 66000). */
static inline uint64_t pile__cuda_layernorm_bwd_part_size(int N, int C)
{
    const uint64_t chunks = pile__cuda_min(((uint64_t)N + PILE_CUDA_LN_MIN_CHUNK - 1) / PILE_CUDA_LN_MIN_CHUNK,
                                           PILE_CUDA_LN_MAX_CHUNKS);
    return pile__cuda_up256(chunks * (uint64_t)C * sizeof(float));
}

static inline uint64_t pile__cuda_layernorm_bwd_scratch_size(int N, int C)
{
    return 2 * pile__cuda_layernorm_bwd_part_size(N, C);
}

/* matmul_bwd's dbias (matmul.cu's colsum_add): column sums over chunks
 * of COLSUM_ROWS rows, more rows per chunk where the chunks would exceed
 * gridDim.y's 65535. */
#define PILE_CUDA_COLSUM_ROWS 128
#define PILE_CUDA_COLSUM_MAX_CHUNKS 65535

static inline int pile__cuda_colsum_chunk_rows(int N)
{
    if ((N + PILE_CUDA_COLSUM_ROWS - 1) / PILE_CUDA_COLSUM_ROWS <= PILE_CUDA_COLSUM_MAX_CHUNKS)
        return PILE_CUDA_COLSUM_ROWS;
    return (N + PILE_CUDA_COLSUM_MAX_CHUNKS - 1) / PILE_CUDA_COLSUM_MAX_CHUNKS;
}

/* fp32 [chunks, OC] partials, chunks at most ceil(N / 128) and 65535. */
static inline uint64_t pile__cuda_matmul_bwd_scratch_size(int N, int OC)
{
    const uint64_t chunks = pile__cuda_min(((uint64_t)N + PILE_CUDA_COLSUM_ROWS - 1) / PILE_CUDA_COLSUM_ROWS,
                                           PILE_CUDA_COLSUM_MAX_CHUNKS);
    return pile__cuda_up256(chunks * (uint64_t)OC * sizeof(float));
}

/* sumsq: at most SUMSQ_PARTS fp64 partials of chunks of at least
 * SUMSQ_MIN_CHUNK elements, and the total before them: the same for any n. */
#define PILE_CUDA_SUMSQ_PARTS 1024
#define PILE_CUDA_SUMSQ_MIN_CHUNK 8192

static inline uint64_t pile__cuda_sumsq_scratch_size(void)
{
    return pile__cuda_up256((PILE_CUDA_SUMSQ_PARTS + 1) * sizeof(double));
}

/* embed_bwd's dwte: n = B*T (token, position) pairs sorted by token with
 * CUB's DeviceRadixSort::SortPairs: the keys and positions before and
 * after the sort, then CUB's temporary storage. */
static inline uint64_t pile__cuda_embed_ids_size(int n) { return pile__cuda_up256((uint64_t)n * 4); }

/* CUB's temporary storage for SortPairs of n 32-bit keys and values, a
 * bound in closed form: the planner must know it without a GPU, and CUB
 * only says it on one (its size query reads the device). From CUB 3.0
 * (CUDA 13.0), device/dispatch/dispatch_radix_sort.cuh: 32-bit keys sort
 * with the onesweep kernels on sm_60 and later (a single-tile sort asks 1
 * byte), whose storage is five parts, each rounded up to 256 bytes, plus
 * 255 bytes of slack: the bins (portions x passes x 256 offsets), the
 * lookback (ceil(n / tile) x 256 ints), a key and a value buffer of n
 * each, the counters (portions x passes ints). Here: offsets of up to 8
 * bytes, at most 4 passes (32 bits, 8 a pass), portions of at least 2^27
 * items, tiles of at least 4096 items (its policies use 7680 to 11776 for
 * these types). The CUDA backend checks the bound against CUB's own query
 * when it takes the scratch, and before each sort. */
#define PILE_CUDA_SORT_MIN_TILE 4096
#define PILE_CUDA_SORT_MIN_PORTION ((uint64_t)1 << 27)

static inline uint64_t pile__cuda_sort_temp_bound(int n)
{
    const uint64_t items = (uint64_t)n, passes = 4;
    const uint64_t portions = (items + PILE_CUDA_SORT_MIN_PORTION - 1) / PILE_CUDA_SORT_MIN_PORTION;
    const uint64_t tiles = (items + PILE_CUDA_SORT_MIN_TILE - 1) / PILE_CUDA_SORT_MIN_TILE;
    return pile__cuda_up256(portions * passes * 256 * 8) + pile__cuda_up256(tiles * 256 * 4) +
           2 * pile__cuda_up256(items * 4) + pile__cuda_up256(portions * passes * 4) + 255;
}

static inline uint64_t pile__cuda_embed_bwd_scratch_size(int n)
{
    return pile__cuda_up256(4 * pile__cuda_embed_ids_size(n) + pile__cuda_sort_temp_bound(n));
}

/* The ops' scratch of a training run of a model of width C on
 * micro-batches of at most B x T: the largest of what its backward and
 * the optimizer's norm ask (model.c's calls: layernorm_bwd over N = B*T
 * rows of C, matmul_bwd's biases of up to 4C columns (c_fc's), embed_bwd
 * of N tokens, sumsq), rounded to 256 bytes by each figure. */
static inline uint64_t pile__cuda_scratch_size(int B, int T, int C)
{
    const int N = B * T;
    return pile__cuda_max(pile__cuda_max(pile__cuda_layernorm_bwd_scratch_size(N, C),
                                         pile__cuda_matmul_bwd_scratch_size(N, 4 * C)),
                          pile__cuda_max(pile__cuda_embed_bwd_scratch_size(N), pile__cuda_sumsq_scratch_size()));
}

#endif
