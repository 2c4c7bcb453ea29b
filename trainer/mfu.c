/* MFU's two halves (mfu.h): PaLM's FLOPs per token and a table of peaks
 * from NVIDIA's data sheets (dense, without sparsity). */
#include "mfu.h"

#include <stddef.h>
#include <string.h>

double pile_mfu_flops_per_token(double n_params, int n_layer, int n_head, int head_dim, int T)
{
    return 6.0 * n_params + 12.0 * n_layer * n_head * (double)head_dim * T;
}

/* Looked up in order by a substring of the device's name: the variants
 * (PCIe, NVL) before the plain name, which is the SXM part. */
static const struct {
    const char *match, *name;
    double tensor16, fp32; /* bf16 / fp16 dense; fp32 without TF32 */
} peaks[] = {
    {"H200 NVL", "H200 NVL", 835, 60},
    {"H200", "H200", 989, 67},
    {"H100 NVL", "H100 NVL", 835, 60},
    {"H100 PCIe", "H100 PCIe", 756, 51},
    {"H100", "H100 SXM", 989, 67},
    {"A100", "A100", 312, 19.5},
};

double pile_mfu_peak_tflops(const char *device, pile_precision p, const char **which)
{
    if (which) *which = NULL;
    if (!device) return 0;
    for (size_t i = 0; i < sizeof peaks / sizeof peaks[0]; i++)
        if (strstr(device, peaks[i].match)) {
            if (which) *which = peaks[i].name;
            return p == PILE_PRECISION_FP32 ? peaks[i].fp32 : peaks[i].tensor16;
        }
    return 0;
}
