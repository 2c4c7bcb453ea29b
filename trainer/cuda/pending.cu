/* PLACEHOLDERS, NOT AN IMPLEMENTATION. The ops of kernels.cu (cuda-kern)
 * and attention.cu (cuda-attn), written in parallel on other branches, so
 * that this branch links: each records the sticky error "<op>: not built
 * yet" and computes nothing. The lead deletes this file (and its line in
 * meson.build) when those files are merged. */
#include <math.h>

#include "cuda_internal.h"

#define PENDING(op) pile__backend_fail(be, PILE_EINVAL, op, "not built yet (this build lacks kernels.cu / attention.cu)")

void pile__cuda_convert(pile_backend *be, pile_tensor, pile_tensor, size_t) { PENDING("convert"); }
void pile__cuda_embed_fwd(pile_backend *be, pile_tensor, pile_tensor, pile_tensor, pile_tensor, int, int, int) { PENDING("embed_fwd"); }
void pile__cuda_embed_bwd(pile_backend *be, pile_tensor, pile_tensor, pile_tensor, pile_tensor, int, int, int) { PENDING("embed_bwd"); }
void pile__cuda_layernorm_fwd(pile_backend *be, pile_tensor, pile_tensor, pile_tensor, pile_tensor, pile_tensor, pile_tensor, int, int)
{
    PENDING("layernorm_fwd");
}
void pile__cuda_layernorm_bwd(pile_backend *be, pile_tensor, pile_tensor, pile_tensor, pile_tensor, pile_tensor, pile_tensor, pile_tensor, pile_tensor,
                              int, int)
{
    PENDING("layernorm_bwd");
}
void pile__cuda_gelu_fwd(pile_backend *be, pile_tensor, pile_tensor, size_t) { PENDING("gelu_fwd"); }
void pile__cuda_gelu_bwd(pile_backend *be, pile_tensor, pile_tensor, pile_tensor, size_t) { PENDING("gelu_bwd"); }
void pile__cuda_add(pile_backend *be, pile_tensor, pile_tensor, pile_tensor, size_t) { PENDING("add"); }
void pile__cuda_dropout(pile_backend *be, pile_tensor, size_t, float, uint64_t) { PENDING("dropout"); }
void pile__cuda_softmax_ce(pile_backend *be, pile_tensor, pile_tensor, pile_tensor, pile_tensor, int, int, int, float) { PENDING("softmax_ce"); }
double pile__cuda_sumsq(pile_backend *be, pile_tensor, size_t)
{
    PENDING("sumsq");
    return NAN;
}
void pile__cuda_scale(pile_backend *be, pile_tensor, size_t, float) { PENDING("scale"); }
void pile__cuda_adamw(pile_backend *be, pile_tensor, pile_tensor, pile_tensor, pile_tensor, size_t, float, float, float, float, float, int64_t)
{
    PENDING("adamw");
}

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
