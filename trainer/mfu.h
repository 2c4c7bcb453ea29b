/* Model FLOPs utilisation (MFU): the model's FLOPs per trained token, and
 * the peak a device reaches, so that tokens/s becomes the share of the
 * hardware's peak that the training does useful work with. The count is
 * PaLM's (Chowdhery et al. 2022, "PaLM: Scaling Language Modeling with
 * Pathways", appendix B): 6N + 12 L H Q T FLOPs per token, forward and
 * backward, recomputation not counted (it is overhead, not model work). */
#ifndef PILE_MFU_H
#define PILE_MFU_H

#include "precision.h"

/* 6 n_params + 12 n_layer n_head head_dim T: n_params the parameters the
 * matrix products use (all but the position table, a lookup), n_head x
 * head_dim = n_embd, T the sequence length attention runs over. */
double pile_mfu_flops_per_token(double n_params, int n_layer, int n_head, int head_dim, int T);

/* The dense peak of a device in TFLOP/s for precision p, from its name
 * (cudaDeviceProp.name: "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB",
 * "NVIDIA H200"); bf16 and fp16 on the tensor cores, fp32 without TF32
 * (the fp32 mode uses none). 0 when the name is NULL or not in the table;
 * *which (may be NULL) gets the table's name for the device ("H100 SXM"). */
double pile_mfu_peak_tflops(const char *device, pile_precision p, const char **which);

#endif
