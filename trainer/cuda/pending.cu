/* PLACEHOLDERS, NOT AN IMPLEMENTATION. The ops of attention.cu, written
 * in parallel on another branch, so that this one links: each records the
 * sticky error "<op>: not built yet" and computes nothing. Deleted (with
 * its line in meson.build) when attention.cu is merged. */
#include <math.h>

#include "cuda_internal.h"

#define PENDING(op) pile__backend_fail(be, PILE_EINVAL, op, "not built yet (this build lacks attention.cu)")

/* no sizes yet: the forward and backward below fail anyway */
size_t pile__cuda_attention_saved_bytes(const pile_backend *, int, int, int, int) { return 0; }
size_t pile__cuda_attention_scratch_bytes(const pile_backend *, int, int, int, int) { return 0; }
void pile__cuda_attention_fwd(pile_backend *be, pile_tensor, pile_tensor, pile_tensor, pile_tensor, pile_tensor, int, int, int, int)
{
    PENDING("attention_fwd");
}
void pile__cuda_attention_bwd(pile_backend *be, pile_tensor, pile_tensor, pile_tensor, pile_tensor, pile_tensor, pile_tensor, pile_tensor, int, int, int,
                              int)
{
    PENDING("attention_bwd");
}
void pile__cuda_attention_decode(pile_backend *be, pile_tensor, pile_tensor, pile_tensor, pile_tensor, pile_tensor, int, int, int)
{
    PENDING("attention_decode");
}
