/* What the CUDA backend's op wrappers (the host code of trainer/cuda/
 * kernels_*.cu and matmul.cu) call besides their kernels, for the host:
 * so that a test includes those .cu files under PILE_CUDA_SIM and runs the
 * ops themselves, launch geometry, dtype dispatch, vector-width choice and
 * scratch layout included, through tests/cuda_sim.h. Device memory is host
 * memory and the stream is the calling thread, so an asynchronous copy or
 * memset is done when it returns. Test code only: never in the shipped
 * build.
 *
 * Stand-ins, and what they do not check:
 *  - cudaMemcpyAsync, cudaMemsetAsync: memcpy (overlapping ranges are a
 *    bug there too, which ASan reports) and memset.
 *  - cub::DeviceRadixSort::SortPairs: a stable sort of the pairs on the
 *    key bits [begin_bit, end_bit), which is what CUB's radix sort gives.
 *    It asks for the alternate keys and values as its temporary storage and
 *    sorts through them, so an op whose arrays overlap that storage gets a
 *    wrong result; CUB's own code, and its storage size, are NOT checked
 *    here (tests/test_cuda_scalar.cu bounds the size from CUB's policies;
 *    only a GPU runs CUB).
 *  - cuBLASLt: types and functions that fail with
 *    CUBLAS_STATUS_NOT_SUPPORTED, so that matmul.cu compiles; no product
 *    runs here (its own small kernels do).
 * A failing launch has no error code to return: cuda_sim stops the
 * program with a message instead, so cudaGetLastError is always success. */
#ifndef PILE_CUDA_SIM_RUNTIME_H
#define PILE_CUDA_SIM_RUNTIME_H

#include "cuda_sim.h"

/* ------------------------------------------------------------ runtime */

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
};
typedef struct cuda_sim_stream *cudaStream_t;

/* the fields the backend reads */
struct cudaDeviceProp {
    int multiProcessorCount;
};

inline cudaError_t cudaGetLastError(void) { return cudaSuccess; }
inline const char *cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "invalid argument"; }

inline cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind, cudaStream_t)
{
    memcpy(dst, src, bytes);
    return cudaSuccess;
}

inline cudaError_t cudaMemsetAsync(void *p, int v, size_t bytes, cudaStream_t)
{
    memset(p, v, bytes);
    return cudaSuccess;
}

/* ---------------------------------------------------------------- CUB */

namespace cub {
struct DeviceRadixSort {
    static size_t up256(size_t x) { return (x + 255) / 256 * 256; }

    template <typename K, typename V>
    static cudaError_t SortPairs(void *temp, size_t &temp_bytes, const K *keys_in, K *keys_out, const V *vals_in, V *vals_out,
                                 int n, int begin_bit, int end_bit, cudaStream_t)
    {
        const size_t need = up256((size_t)n * sizeof(K)) + up256((size_t)n * sizeof(V));
        if (!temp) {
            temp_bytes = need;
            return cudaSuccess;
        }
        if (temp_bytes < need || n < 0 || begin_bit < 0 || end_bit > (int)(8 * sizeof(K)) || begin_bit >= end_bit)
            return cudaErrorInvalidValue;
        K *alt_k = (K *)temp;
        V *alt_v = (V *)((char *)temp + up256((size_t)n * sizeof(K)));
        const K mask = (K)((end_bit - begin_bit == (int)(8 * sizeof(K)) ? ~(K)0 : (((K)1 << (end_bit - begin_bit)) - 1)) << begin_bit);
        std::vector<int> order((size_t)n);
        for (int i = 0; i < n; i++) order[(size_t)i] = i;
        std::stable_sort(order.begin(), order.end(),
                         [&](int a, int b) { return (keys_in[a] & mask) < (keys_in[b] & mask); });
        for (int i = 0; i < n; i++) {
            alt_k[i] = keys_in[order[(size_t)i]];
            alt_v[i] = vals_in[order[(size_t)i]];
        }
        memcpy(keys_out, alt_k, (size_t)n * sizeof(K));
        memcpy(vals_out, alt_v, (size_t)n * sizeof(V));
        return cudaSuccess;
    }
};
} /* namespace cub */

/* ----------------------------------------------------------- cuBLASLt */

enum cudaDataType { CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14 };
enum cublasStatus_t { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_NOT_SUPPORTED = 15 };
enum cublasOperation_t { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum cublasComputeType_t { CUBLAS_COMPUTE_32F = 68 };
enum cublasLtMatmulDescAttributes_t {
    CUBLASLT_MATMUL_DESC_TRANSA,
    CUBLASLT_MATMUL_DESC_TRANSB,
    CUBLASLT_MATMUL_DESC_EPILOGUE,
    CUBLASLT_MATMUL_DESC_BIAS_POINTER,
    CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE
};
enum cublasLtEpilogue_t { CUBLASLT_EPILOGUE_BIAS = 4 };
enum { CUBLASLT_REDUCTION_SCHEME_NONE = 0, CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE = 2 };
enum cublasLtMatmulPreferenceAttributes_t {
    CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
    CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES
};
typedef struct cuda_sim_lt *cublasLtHandle_t;
typedef struct cuda_sim_lt_desc *cublasLtMatmulDesc_t;
typedef struct cuda_sim_lt_layout *cublasLtMatrixLayout_t;
typedef struct cuda_sim_lt_pref *cublasLtMatmulPreference_t;
struct cublasLtMatmulAlgo_t {
    uint64_t data[8];
};
struct cublasLtMatmulHeuristicResult_t {
    cublasLtMatmulAlgo_t algo;
    cublasStatus_t state;
};

#define CUDA_SIM_LT_UNSUPPORTED(name) \
    template <typename... A> inline cublasStatus_t name(A...) { return CUBLAS_STATUS_NOT_SUPPORTED; }
CUDA_SIM_LT_UNSUPPORTED(cublasLtMatmulDescCreate)
CUDA_SIM_LT_UNSUPPORTED(cublasLtMatmulDescDestroy)
CUDA_SIM_LT_UNSUPPORTED(cublasLtMatmulDescSetAttribute)
CUDA_SIM_LT_UNSUPPORTED(cublasLtMatrixLayoutCreate)
CUDA_SIM_LT_UNSUPPORTED(cublasLtMatrixLayoutDestroy)
CUDA_SIM_LT_UNSUPPORTED(cublasLtMatmulPreferenceCreate)
CUDA_SIM_LT_UNSUPPORTED(cublasLtMatmulPreferenceDestroy)
CUDA_SIM_LT_UNSUPPORTED(cublasLtMatmulPreferenceSetAttribute)
CUDA_SIM_LT_UNSUPPORTED(cublasLtMatmulAlgoGetHeuristic)
CUDA_SIM_LT_UNSUPPORTED(cublasLtMatmul)
#undef CUDA_SIM_LT_UNSUPPORTED
inline const char *cublasLtGetStatusString(cublasStatus_t) { return "not supported by tests/cuda_sim_runtime.h"; }

#endif
