/* The GPT-2 family decoder-only transformer, written once over the backend
 * interface (backend.h): learned positions, pre-LayerNorm blocks, GELU
 * (tanh), causal attention (optionally within documents), tied input and
 * output embeddings, dropout on the embedding and on each residual branch.
 *
 * What the model owns: its compute parameters (one backend allocation of
 * the compute dtype, carved into tensors in Hugging Face GPT-2 order and
 * layout: the tensor table below) and its activations. What it does not:
 * the gradients, the fp32 master weights and the moments, which are the
 * optimizer's (optim.h) in the same flat layout; the backward accumulates
 * into a gradient tensor its caller passes, and the optimizer writes the
 * parameters after each step. So a checkpoint is a copy of the table. The
 * vocabulary is padded to a multiple of 64 rows for speed; padded rows start
 * at zero, are never predicted (pile_backend_softmax_ce ignores them) and so
 * never receive a gradient, and are not saved.
 *
 * Compute dtype (pile_model_config.dtype): the parameters the forward
 * reads and every activation are of it; LayerNorm statistics and losses
 * are F32, and gradients are always F32. A backend must compute in it
 * (pile_backend_supports). The CPU backend computes in F32 and emulates
 * bf16 / fp16 (pile_backend_set_emulation): the model is then F32, and
 * the backend rounds what its ops store.
 *
 * Activations for up to max_batch x seq_len positions are allocated at
 * create; a forward may use any B <= max_batch and T <= seq_len. What the
 * backward needs is either kept from the forward or recomputed in the
 * backward (pile_recompute): less memory for more time, with the same loss
 * and the same gradient bits. Attention keeps only what the backend asks
 * for (pile_backend_attention_saved_bytes), never [T, T] probabilities. */
#ifndef PILE_MODEL_H
#define PILE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "pile_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What the backward recomputes instead of keeping from the forward. The
 * recomputation repeats the forward's calls (dropout masks included), so
 * losses and gradients are bit for bit those of PILE_RECOMPUTE_NONE.
 * Activations kept per layer and position, in floats (C = n_embd): */
typedef enum pile_recompute {
    PILE_RECOMPUTE_NONE = 0,  /* 16 C + 4 + attention's saved state */
    PILE_RECOMPUTE_GELU = 1,  /* 8 C + 4 + saved: the MLP's c_fc output and its GELU are recomputed
                                 from ln_2's output (one [N, C] x [C, 4C] product more per layer) */
    PILE_RECOMPUTE_BLOCK = 2, /* C: only each block's output; the block's forward (but its last
                                 product) is rerun from its input before its backward */
} pile_recompute;

/* "none", "gelu", "block" to the enum: 0, or PILE_EINVAL naming the choices. */
int pile_model_recompute_parse(const char *name, pile_recompute *out, pile_err *err);
const char *pile_model_recompute_name(pile_recompute r);

typedef struct pile_model_config {
    int vocab_size;   /* real vocabulary (from the shards' tokenizer) */
    int n_positions;  /* context length the position table covers */
    int n_layer;
    int n_head;
    int n_embd;       /* multiple of n_head */
    float dropout;    /* embedding and residual dropout; 0 = none */
    pile_recompute recompute; /* memory against time; never changes results */
    pile_dtype dtype; /* compute dtype of parameters and activations: F32 (0, the default), BF16, F16 */
} pile_model_config;

/* Fills dims from a preset name: "tiny" (2 layers, 2 heads, 64), "small"
 * (~10M parameters with a 8k vocabulary: 6 layers, 6 heads, 384), "gpt2"
 * (12/12/768), "gpt2-medium" (24/16/1024), "gpt2-large" (36/20/1280),
 * "gpt2-xl" (48/25/1600). Leaves vocab_size, n_positions, dropout alone.
 * PILE_EINVAL for an unknown name (the message lists the presets). */
int pile_model_preset(pile_model_config *cfg, const char *name, pile_err *err);
/* The vocabulary rounded up to the multiple of 64 the model allocates. */
int pile_model_padded_vocab(int vocab_size);

typedef struct pile_model pile_model;

/* One parameter tensor: its Hugging Face GPT-2 name ("wte.weight",
 * "h.0.attn.c_attn.weight", ...), shape, and place in the flat buffers. */
typedef struct pile_tensor_info {
    const char *name;
    int ndim;          /* 1 or 2 */
    int64_t shape[2];  /* as saved: wte is [vocab_size, C] (padding not included) */
    size_t offset;     /* in elements, into the flat parameters / gradients / master weights / moments */
    size_t numel;      /* as allocated (wte: padded rows included) */
    size_t saved_numel;/* as saved (wte: vocab_size * C) */
    int decay;         /* 1: matrices other than embeddings (weight decay applies by default) */
    int is_embedding;  /* wte, wpe */
} pile_tensor_info;

/* The parameters (uninitialised: zero) and activations for batches of up
 * to max_batch x seq_len in be, which the model uses until it is freed.
 * PILE_EINVAL for a bad configuration or a compute dtype the backend does
 * not compute in, PILE_ENOMEM. */
int pile_model_create(pile_model **out, pile_backend *be, const pile_model_config *cfg, int max_batch,
                      int seq_len, pile_err *err);
void pile_model_free(pile_model *m); /* accepts NULL */
const pile_model_config *pile_model_get_config(const pile_model *m);
pile_backend *pile_model_backend(const pile_model *m);

/* GPT-2 initialisation from seed: weights N(0, 0.02), the two c_proj
 * weights of each block N(0, 0.02 / sqrt(2 n_layer)), biases 0, LayerNorm
 * weights 1 and biases 0, padded wte rows 0. Deterministic in seed; drawn
 * in fp32 and rounded to the compute dtype. Into the compute parameters:
 * an optimizer created afterwards takes them as its master weights. */
void pile_model_init(pile_model *m, uint64_t seed);
/* The same draws in fp32, unrounded, into host[pile_model_flat_size]
 * (padding 0), the parameters untouched: the master weights of a model
 * whose parameters are 16-bit tensors (an emulating backend's F32
 * parameters hold them unrounded until the optimizer's first write). */
void pile_model_init_values(pile_model *m, uint64_t seed, float *host);

size_t pile_model_tensor_count(const pile_model *m);
const pile_tensor_info *pile_model_tensor(const pile_model *m, size_t i);
/* Number of parameters counted as saved (padding excluded). */
size_t pile_model_param_count(const pile_model *m);
/* Elements of each flat buffer (padding included): the parameters, and
 * the gradients, master weights and moments an optimizer keeps. */
size_t pile_model_flat_size(const pile_model *m);
/* The compute parameters (compute dtype, flat_size elements, backend
 * memory, the model's for its lifetime), and tensor i's view of them. The
 * optimizer writes them; others read them (or load a checkpoint into them
 * when no optimizer exists: evaluation, sampling). */
pile_tensor pile_model_params(pile_model *m);
pile_tensor pile_model_param(pile_model *m, size_t i);

/* ZeRO stage 3 (optim.h): the parameters held in pieces over the ranks,
 * never whole. The model reads them by units, each a range of the flat
 * layout: unit 0 the embeddings (wte, wpe), unit 1 + l block l, unit
 * n_layer + 1 the final LayerNorm. Before it reads a unit the model calls
 * fetch(ctx, unit, next, &view, err), which returns the unit's parameters
 * (view: the compute dtype, laid out as the flat range, valid until the
 * next call) and may start gathering `next`, the unit the model will ask
 * for after this one (-1: none known), so that it arrives while this one
 * computes. The order: a forward asks for 0, 1 .. n_layer, n_layer + 1,
 * then 0 again (the tied output embedding); a backward for 0, n_layer + 1,
 * then the blocks from the last to the first. pile_model_partition frees
 * the whole parameter buffer (pile_model_params is then the absent tensor)
 * and reads through fetch from then on; a fetch error fails the forward or
 * backward that asked. Decoding (pile_model_decode_*) needs the whole
 * parameters and is refused. */
typedef int (*pile_model_fetch_fn)(void *ctx, int unit, int next, pile_tensor *view, pile_err *err);
int pile_model_unit_count(const pile_model *m);
/* Unit u's range of the flat layout. */
void pile_model_unit_range(const pile_model *m, int unit, size_t *first, size_t *count);
/* Once, after the parameters were initialised or loaded and copied where
 * fetch will find them. PILE_EINVAL when already partitioned. */
int pile_model_partition(pile_model *m, pile_model_fetch_fn fetch, void *ctx, pile_err *err);

/* Gradient overlap (optim.h): pile_model_backward calls grad_ready(ctx,
 * unit, err) as each unit's gradients become final for that backward
 * (their last op issued to the backend, not necessarily finished): unit
 * n_layer + 1 (ln_f), then the blocks from the last to the first, then 0
 * (the embeddings, last: the tied output layer's gradient goes into wte
 * first). The units lie in the flat layout in order, unit 0 first, so
 * after unit u the gradients from u's first element to the end are final
 * and the caller may read them while the backward goes on below. An error
 * fails the backward. fn NULL: none (the default). */
typedef int (*pile_model_grad_fn)(void *ctx, int unit, pile_err *err);
void pile_model_set_grad_hook(pile_model *m, pile_model_grad_fn fn, void *ctx);

/* One batch in host memory. tokens and targets are [B*T]; targets[i] < 0
 * means no loss at i. doc_start is NULL (plain causal attention) or [B*T]
 * (see pile_backend_attention_fwd). */
typedef struct pile_batch {
    int B, T;
    const int32_t *tokens;
    const int32_t *targets;
    const int32_t *doc_start;
} pile_batch;

/* What a forward measured, over the positions with a target. */
typedef struct pile_fwd_stats {
    double loss_sum;  /* sum of per-position cross-entropy (nats) */
    int64_t n_tokens; /* positions with a target */
    int64_t n_correct;/* positions whose argmax equals the target */
} pile_fwd_stats;

/* Staging: the next batch's inputs sent to the backend while the current
 * one computes (a device copies them on a queue of its own, from pinned
 * memory: pile_backend_stage_upload), then a forward with batch NULL runs
 * on the oldest staged batch. Staged batches wait in the order staged, at
 * most two: the model keeps two sets of inputs, so with one waiting a
 * second may be staged once the last forward's backward was called (the
 * backward reads that forward's inputs, whose set the second one takes).
 * A loop stages micro-batch i + 1, then runs the forward and backward of
 * micro-batch i. The results are those of pile_model_forward(batch): the
 * same uploads, earlier. */
/* Checks batch as pile_model_forward does and stages it; its arrays may
 * be reused when this returns. PILE_EINVAL for a bad batch, with two
 * batches staged, or with one staged while a backward is due. */
int pile_model_stage(pile_model *m, const pile_batch *batch, pile_err *err);
/* The staged batches waiting for their forward: 0, 1 or 2. */
int pile_model_staged(const pile_model *m);
/* Forgets the staged batches (a loop that will not run them). */
void pile_model_unstage(pile_model *m);
/* Ends the upload group of the newest staged batch now
 * (pile_backend_stage_wait) rather than at the forward that runs it, so
 * that the backend's next staged upload starts a group of its own (the
 * optimizer's, optim.h: offload). The batches stay staged. */
void pile_model_stage_wait(pile_model *m);

/* Forward pass, on batch, or with batch NULL on the oldest staged batch
 * (PILE_EINVAL when none is; a batch given while two are staged is
 * PILE_EINVAL too, one staged batch stays staged for a later forward).
 * training != 0 applies dropout with masks drawn from
 * dropout_seed (distinct per micro-step; the caller derives it from the
 * run seed and the step). grad_scale != 0 also prepares the backward:
 * the next pile_model_backward computes the gradient of
 * grad_scale * loss_sum. grad_scale == 0 is an evaluation forward (no
 * backward may follow). The logits stay readable until the next forward
 * when grad_scale == 0. */
int pile_model_forward(pile_model *m, const pile_batch *batch, int training, uint64_t dropout_seed,
                       float grad_scale, pile_fwd_stats *stats, pile_err *err);
/* Accumulates (+=) the gradient of the last forward into grads: F32,
 * flat_size elements in the model's backend, in the tensor table's layout
 * (the optimizer's, pile_optim_grads). Once per training forward (it
 * consumes activations): a second call without a new forward is
 * PILE_EINVAL. The ops are queued: a fault shows at the next
 * pile_backend_sync (the optimizer's step does one). */
int pile_model_backward(pile_model *m, pile_tensor grads, pile_err *err);

/* Copies the logits of batch row b, position t of the last evaluation
 * forward (V = vocab_size floats, padding excluded) to host memory, as
 * fp32; NaN when there are none (or the backend has failed). */
void pile_model_copy_logits(pile_model *m, int b, int t, float *host_out);

/* Incremental decoding, one sequence at a time, with a cache of every
 * layer's keys and values (2 x n_layer x n_positions x n_embd floats,
 * allocated by the first pile_model_decode_begin, freed by
 * pile_model_free). Evaluation mode: no dropout. Its buffers are its own,
 * so it leaves the last forward's logits and backward state alone.
 *
 * decode_begin starts a new sequence (the cache is emptied; PILE_ENOMEM
 * when it cannot be allocated). decode_step runs token at position pos
 * through the network, appending its keys and values to the cache, and
 * attends over positions 0..pos: the same function as row pos of a
 * forward over the sequence's tokens 0..pos (doc_start NULL), equal to
 * it up to fp32 rounding. pos goes from 0 upward: it must be < n_positions
 * and at most the number of positions the cache holds (pos below that
 * rewinds: later positions are forgotten). host_logits receives
 * vocab_size floats (padding excluded), or is NULL to skip the final
 * LayerNorm and the logits (a prompt's tokens before its last).
 * PILE_EINVAL without a decode_begin, for a token outside the vocabulary
 * or a position out of order. The cache holds the weights' results at the
 * time: after the parameters change, begin again. */
int pile_model_decode_begin(pile_model *m, pile_err *err);
int pile_model_decode_step(pile_model *m, int32_t token, int pos, float *host_logits, pile_err *err);

#ifdef __cplusplus
}
#endif

#endif
