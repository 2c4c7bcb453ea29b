/* The device bytes the CUDA backend's attention (attention.cu) holds for a
 * micro-batch, in plain C with no CUDA types: the backend reports them
 * from here (attention_saved_bytes / _scratch_bytes) and the planner
 * (plan.c, built with or without CUDA) counts a GPU run from here, so the
 * plan cannot drift from what the backend allocates. */
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

#endif
