/* Compute-tensor element types in CUDA code: one kernel template per op,
 * instantiated for float, __nv_bfloat16 and __half, and a dispatch from
 * the tensor's pile_dtype. Loads widen to float; stores round to nearest
 * even (fp16 overflows to infinity), which is exactly where and how the CPU
 * backend's emulation rounds (precision.h), so the two agree in every
 * precision mode. */
#ifndef PILE_CUDA_DTYPE_CUH
#define PILE_CUDA_DTYPE_CUH

#include "backend.h"

/* Under PILE_CUDA_SIM (tests/cuda_sim.h: the kernels compiled for the
 * host) the types and their loads and stores are the simulator's. */
#ifndef PILE_CUDA_SIM
#include <cuda_bf16.h>
#include <cuda_fp16.h>

__device__ __forceinline__ float pile_cuda_load(float x) { return x; }
__device__ __forceinline__ float pile_cuda_load(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float pile_cuda_load(__half x) { return __half2float(x); }

template <typename T> __device__ __forceinline__ T pile_cuda_store(float x);
template <> __device__ __forceinline__ float pile_cuda_store<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 pile_cuda_store<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ __half pile_cuda_store<__half>(float x) { return __float2half_rn(x); }
#endif

/* Runs BODY with T the element type of compute dtype DT (F32, BF16, F16);
 * another dtype runs nothing (backend.c never passes one). */
#define PILE_CUDA_DISPATCH(DT, T, ...)                   \
    do {                                                 \
        switch (DT) {                                    \
        case PILE_DTYPE_F32: {                           \
            typedef float T;                             \
            __VA_ARGS__;                                 \
        } break;                                         \
        case PILE_DTYPE_BF16: {                          \
            typedef __nv_bfloat16 T;                     \
            __VA_ARGS__;                                 \
        } break;                                         \
        case PILE_DTYPE_F16: {                           \
            typedef __half T;                            \
            __VA_ARGS__;                                 \
        } break;                                         \
        default: break;                                  \
        }                                                \
    } while (0)

#endif
