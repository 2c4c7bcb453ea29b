/* MFU's halves (trainer/mfu.h): PaLM's FLOPs per token for GPT-2 124M
 * worked out here by hand, and the peak table by the names CUDA reports
 * for each GPU (cudaDeviceProp.name), variants before the plain part. */
#include <math.h>

#include "mfu.h"
#include "pile_test.h"

static void peak_is(const char *device, pile_precision p, double want, const char *want_which)
{
    const char *which = "unset";
    double got = pile_mfu_peak_tflops(device, p, &which);
    if (got != want) PILE_FAIL_("'%s' %s: %g TFLOP/s, want %g", device ? device : "(null)", pile_precision_name(p), got, want);
    if (want_which) ASSERT_STR_EQ(which, want_which);
    else ASSERT(which == NULL);
}

int main(void)
{
    TEST("flops per token: GPT-2 124M at T = 1024 (6N + 12LHQT, N without the position table)");
    /* N = wte 50257 x 768 + 12 blocks x (12 C^2 + 13 C) + final norm 2C */
    const double C = 768, N = 50257 * C + 12 * (12 * C * C + 13 * C) + 2 * C;
    const double want = 6 * N + 12.0 * 12 * 12 * 64 * 1024; /* 741.9M + 113.2M */
    double got = pile_mfu_flops_per_token(N, 12, 12, 64, 1024);
    if (fabs(got - want) > 1e-9 * want) PILE_FAIL_("%.17g, want %.17g", got, want);
    ASSERT(fabs(got - 855.1e6) < 0.1e6);
    TEST("peaks by device name: A100, H100 SXM / PCIe / NVL, H200 (and NVL), bf16 / fp16 / fp32");
    peak_is("NVIDIA A100-SXM4-80GB", PILE_PRECISION_BF16, 312, "A100");
    peak_is("NVIDIA A100 80GB PCIe", PILE_PRECISION_FP16, 312, "A100");
    peak_is("NVIDIA A100-SXM4-40GB", PILE_PRECISION_FP32, 19.5, "A100");
    peak_is("NVIDIA H100 80GB HBM3", PILE_PRECISION_BF16, 989, "H100 SXM");
    peak_is("NVIDIA H100 80GB HBM3", PILE_PRECISION_FP32, 67, "H100 SXM");
    peak_is("NVIDIA H100 PCIe", PILE_PRECISION_BF16, 756, "H100 PCIe");
    peak_is("NVIDIA H100 NVL", PILE_PRECISION_BF16, 835, "H100 NVL");
    peak_is("NVIDIA H200", PILE_PRECISION_BF16, 989, "H200");
    peak_is("NVIDIA H200 NVL", PILE_PRECISION_BF16, 835, "H200 NVL");
    TEST("no peak for an unknown device or none (the CPU)");
    peak_is("NVIDIA GeForce RTX 4090", PILE_PRECISION_BF16, 0, NULL);
    peak_is(NULL, PILE_PRECISION_BF16, 0, NULL);
    return TEST_DONE();
}
