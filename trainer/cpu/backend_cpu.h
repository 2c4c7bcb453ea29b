/* The CPU backend: the fp32 reference of the trainer's backend interface
 * (backend.h), opened by name ("cpu"). It owns host memory (large
 * allocations mapped with transparent huge pages), its OpenMP and OpenBLAS
 * threads, and nothing of the model's or the optimizer's. What follows is
 * what only this backend has: its BLAS library's quirks, for the command
 * line to act on. */
#ifndef PILE_BACKEND_CPU_H
#define PILE_BACKEND_CPU_H

#ifdef __cplusplus
extern "C" {
#endif

/* The BLAS kernel family to ask for, or NULL when the one loaded is fine.
 * OpenBLAS picks its kernels when the library loads, by CPU model, and a
 * release older than the CPU falls back to its pre-AVX "Prescott" kernels
 * (OpenBLAS 0.3.21 on Xeon 5th generation: 5-10x slower sgemm). The
 * choice cannot be changed once loaded, so a program's main may set
 * OPENBLAS_CORETYPE to this value and restart itself, when the user has not
 * set it. Decided from the CPU's features (AVX-512 -> SKYLAKEX, AVX2 ->
 * HASWELL). */
const char *pile_cpu_blas_coretype_hint(void);

#ifdef __cplusplus
}
#endif

#endif
