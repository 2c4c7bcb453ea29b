/* The optimizer: the owner of the training state beside the model (fp32
 * master weights, gradients, AdamW moments), AdamW over it, global-norm
 * gradient clipping, and the learning-rate schedule. Written to match PyTorch and
 * transformers step for step (tests/reference checks it):
 *  - AdamW as torch.optim.AdamW (decoupled decay, bias correction, eps
 *    outside the square root), weight decay only on tensors whose
 *    pile_tensor_info.decay is set unless decay_all;
 *  - clipping as torch.nn.utils.clip_grad_norm_ (coefficient
 *    max_norm / (norm + 1e-6), applied only when below 1);
 *  - the schedule as transformers' get_cosine_with_min_lr_schedule_with_warmup:
 *    linear warmup from 0 over warmup_steps, then cosine to min_lr. */
#ifndef PILE_OPTIM_H
#define PILE_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "comm/comm.h"
#include "loss_scaler.h"
#include "model.h"
#include "pile_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pile_adamw_config {
    float beta1, beta2, eps;  /* 0.9, 0.999, 1e-8 */
    float weight_decay;
    int decay_all;            /* also decay biases, norms and embeddings */
} pile_adamw_config;

typedef struct pile_optim pile_optim;

/* How the training state is divided over the ranks (ZeRO, Rajbhandari et
 * al. 2020) and where it lives. The flat buffers (pile_model_flat_size
 * elements) are padded to a multiple of the world size and cut into equal
 * shards, rank r owning [r * shard, (r + 1) * shard): reduce-scatter's
 * and all-gather's rule (comm.h), so any model divides over any number of
 * ranks and the ranks' shards cover the model once.
 *  - stage 0: everything replicated; the gradients are allreduced.
 *  - stage 1: master weights and moments are the rank's shard only; the
 *    gradients (a whole buffer, accumulated over the micro-batches) are
 *    reduce-scattered to their owner at the end of the step, and the
 *    updated compute parameters all-gathered.
 *  - stage 2: plus the gradient accumulator is the shard only: after each
 *    micro-batch's backward the whole gradient is reduce-scattered in
 *    buckets of bucket_elems per rank into the owner's fp32 accumulator
 *    and the whole buffer starts again from zero (the backward still
 *    writes one whole fp32 gradient buffer: model.h's backward takes one).
 *  - stage 3: plus the compute parameters are the rank's shard only: the
 *    model is partitioned (pile_model_partition) and reads each unit (the
 *    embeddings, a block, the final LayerNorm) from one of two buffers,
 *    gathered from the owners before its forward and again before its
 *    backward, the next unit gathered into the other buffer right after
 *    (prefetch) when it has at most prefetch_elems parameters. offload_param keeps the parameter shard in the offload
 *    backend (which must emulate what the model's does).
 * Overlap: when the communicator has its thread (comm.h,
 * pile_comm_thread_start; host memory), or works on device memory with
 * `overlap` set (streams, below), the gradients are reduced in buckets while the
 * backward computes the layers below them: the model tells the optimizer
 * as each unit's gradients are final (pile_model_set_grad_hook), and the
 * buckets all of whose elements are then final go to the thread (or the
 * comm stream), during
 * the step's last backward at stages 0 and 1 (pile_optim_begin_backward
 * says which that is) and every backward at stages 2 and 3; the step
 * waits for them all before the norm (pile_optim_reduce_gradients, or
 * pile_optim_backward_done at stages 2 and 3). At stage 3 the next unit's
 * gathers run on the thread (or the stream) while the model computes on
 * the current one.
 * The buckets are the same with and without the thread (fixed by
 * bucket_elems and the flat layout), and so is each bucket's reduction,
 * element by element: the results are the same bits either way. Without
 * the thread every collective finishes where it is issued, at the end of
 * the backward. Streams: on a communicator of device memory ("nccl",
 * "devsim") every collective is enqueued on the model backend's comm
 * stream (pile_backend_comm_stream) after pile_backend_comm_wait_compute
 * (its input written), and the ops wait for it
 * (pile_backend_compute_wait_comm) right before the first that reads its
 * result: the host waits for neither, so the collectives overlap the
 * compute without the thread (the optimizer uses no job of the thread
 * there). From stage 1 the caller packs each bucket into one of two slots
 * before its reduce and adds (or copies) it into the shard after it, two
 * buckets in flight at most: a slot lands once the ops wait for its own
 * reduce (pile_backend_compute_wait_mark), the newer bucket's still in
 * flight; a ZeRO-3 unit buffer likewise waits for its own gather only.
 * Stage 0 buckets are consecutive ranges of world x bucket_elems
 * elements; from stage 1 bucket k holds every rank's k-th
 * piece of its shard, so it is final only once the backward has passed
 * rank 0's piece: the embeddings, which the backward finishes last, keep
 * the buckets of rank 0's shard until the end.
 * Every optimizer call that waits on the thread returns its failure (a
 * dead peer: the message names the operation and the rank), and the
 * optimizer never leaves a job of its own in flight when it returns from
 * pile_optim_reduce_gradients, pile_optim_backward_done,
 * pile_optim_update_model or pile_optim_free; other calls on the
 * communicator may be made at any time (comm.h queues them in order).
 * offload: a second backend object whose memory is the host's (the
 * "cpu" backend) for the master weights, moments and gradient shard:
 * gradients go down to it and updated parameters come up, AdamW runs
 * there (stage 1 and 2). On the cpu backend this is the same code path
 * with two backend objects. On a device (a model backend whose memory is
 * not the host's) the two directions overlap the host's work as
 * DeepSpeed's do:
 *  - up: the step runs in chunks of offload_chunk elements of the shard
 *    (on the cpu backend too, where an upload is a copy: one path)
 *    (PILE_OPTIM_OFFLOAD_CHUNK): each chunk's AdamW, its conversion to
 *    the compute dtype (on the offload backend), then its staged upload
 *    (pile_backend_stage_upload: copied into pinned memory at once, on to
 *    the device on the copy queue) into the all-gather's buffer (stages 1
 *    and 2) or the compute shard (stage 3), so that chunk k's copy runs
 *    while chunk k + 1's AdamW does; each chunk is a staged group of its
 *    own, waited for (pile_backend_stage_wait) before any op or
 *    collective reads it. The model's staged batch (the next step's
 *    first, staged during this step's last micro-batch) has its group
 *    ended first (pile_model_stage_wait), since an upload joining an open
 *    group would be ordered only after the ops queued before that group
 *    began. The same bits as in one piece: AdamW and the conversion are
 *    element-wise. offload_param keeps the shard on the host: nothing
 *    goes up at the step, so it steps in one piece.
 *  - down: each gradient bucket goes down as it lands (land_bucket: the
 *    reduce-scatter's result added into the offloaded shard on the
 *    host): at stages 2 and 3 with overlap while the backward runs (a
 *    slot's bucket lands when the slot is reused, the last ones after the
 *    backward), else after each micro-batch's backward; at stage 1 after
 *    the step's last one. What overlaps the backward there is the
 *    reduce-scatter (comm stream), not the copy down: that is a download
 *    on the ops' queue which the host waits for (cuda: the queue drained
 *    up to it, the backward queued so far included), so the host queues
 *    nothing meanwhile and the copy overlaps neither compute nor AdamW.
 * None of this has run on a GPU yet: the devsim backends check its
 * orderings (tests/test_zero.c, tests/devsim_cli.sh). */
typedef struct pile_optim_zero {
    int stage;              /* 0 to 3 */
    pile_comm *comm;        /* the ranks (borrowed; NULL: one rank) */
    pile_backend *offload;  /* borrowed; NULL: the model's backend */
    size_t bucket_elems;    /* gradient bucket per rank, elements (stage 0: of the allreduce); 0: one bucket */
    int offload_param;      /* stage 3: the compute parameters' shard in the offload backend too */
    size_t prefetch_elems;  /* stage 3: a unit of at most this many parameters is gathered ahead */
    int overlap;            /* device memory (streams): reduce buckets during the backward (see Overlap) */
    size_t offload_chunk;   /* offload: elements per chunk of the step (0: the default below) */
} pile_optim_zero;

/* The offloaded step's chunk (offload, the parameters not offloaded): 4
 * Mi elements. On a device its AdamW on the host (16 bytes of state and
 * gradient read, 12 written per element: some milliseconds) outlasts its
 * copy up (8 MiB in bf16: about 0.3 ms over PCIe at 25 GB/s), so every chunk's copy hides under the
 * next chunk's AdamW and only the last one's shows; the pinned staging it
 * needs (8 or 16 MiB) is small beside the model, and a chunk's own costs
 * (a copy call, two events, a backend sync: tens of microseconds) stay
 * under a percent. DeepSpeed's CPU Adam works in tiles of 128 Mi
 * (csrc/includes/simd.h's TILE), double-buffered. */
#define PILE_OPTIM_OFFLOAD_CHUNK ((size_t)1 << 22)

/* What the optimizer owns, in its backend (the model's, today), each one
 * allocation in the model's flat tensor layout (pile_model_flat_size
 * elements): the fp32 master weights, the gradients (F32, accumulated by
 * pile_model_backward across micro-batches), and AdamW's moments m and v.
 * After each step it writes the model's compute parameters from the master
 * weights (converted to the compute dtype, or rounded to it on a backend
 * that emulates 16-bit storage: pile_backend_set_emulation). When the
 * model computes in F32 on the same backend without emulation, the master
 * weights ARE the model's compute parameters (one buffer, no copy, no
 * extra memory): nothing then differs from a single parameter buffer,
 * which fp32 training and its bit-exact checks rely on.
 *
 * create takes the model's current parameters as the master weights (init
 * or load them into the model first) and zero moments and gradients. */
int pile_optim_create(pile_optim **out, pile_model *m, const pile_adamw_config *cfg, pile_err *err);
/* The same, sharded as z says (NULL: stage 0 on one rank, which is
 * pile_optim_create). Every rank creates it with the same model (the same
 * initial parameters) and z. PILE_EINVAL for a stage outside 0 to 3, an
 * offload at stage 0 (DeepSpeed's rule: offload shards the state first),
 * an offload backend whose memory is not the host's, or a communicator
 * that cannot reach the model backend's memory (host memory for
 * "single", "mpi" and "tcp", device memory for "nccl" and "devsim").
 * Every buffer the optimizer hands the communicator is a tensor of the
 * model's backend, so every stage, with and without offload, runs over
 * either kind. */
int pile_optim_create_zero(pile_optim **out, pile_model *m, const pile_adamw_config *cfg, const pile_optim_zero *z,
                           pile_err *err);
void pile_optim_free(pile_optim *o); /* accepts NULL */
/* Its tensors (F32, backend memory, the optimizer's for its lifetime).
 * grads: the whole buffer the backward accumulates into (the model's
 * backend). master, m, v and grad_shard: the rank's shard, elements
 * [offset, offset + count) of the flat layout (pile_optim_shard), in the
 * offload backend when there is one; at stage 0 the shard is the whole
 * buffer and grad_shard is grads. Elements past pile_model_flat_size
 * (padding) stay zero. */
pile_tensor pile_optim_master(pile_optim *o);
pile_tensor pile_optim_grads(pile_optim *o);
pile_tensor pile_optim_grad_shard(pile_optim *o);
pile_tensor pile_optim_m(pile_optim *o);
pile_tensor pile_optim_v(pile_optim *o);
/* The rank's shard of the flat buffers: its first element and its length
 * (equal on every rank; the whole unpadded buffer at stage 0), and the
 * stage. */
void pile_optim_shard(const pile_optim *o, size_t *offset, size_t *count);
int pile_optim_zero_stage(const pile_optim *o);
/* 1 when the master weights are the model's compute parameters (F32). */
int pile_optim_master_is_compute(const pile_optim *o);
/* Optimizer steps taken so far (the t of bias correction is steps + 1). */
int64_t pile_optim_steps(const pile_optim *o);
void pile_optim_set_steps(pile_optim *o, int64_t steps);

/* Which of the optimizer's fp32 states (the same flat layout each). */
typedef enum pile_optim_state {
    PILE_OPTIM_MASTER = 0,
    PILE_OPTIM_M = 1,
    PILE_OPTIM_V = 2,
} pile_optim_state;

/* The whole of state `which` as fp32 in host memory (pile_model_flat_size
 * floats): the rank's own at stage 0, every rank's shard all-gathered
 * above (a collective: every rank calls it; through a buffer of the
 * model's backend, up to 4 Mi elements of each shard at a time). What a
 * checkpoint's consolidated files are written from. PILE_ENOMEM, the
 * backend's or the communicator's error. */
int pile_optim_gather(pile_optim *o, pile_optim_state which, float *host, pile_err *err);
/* The model's compute parameters, whole, as fp32 in host memory
 * (pile_model_flat_size floats): at stage 3 the ranks' shards
 * all-gathered (a collective), else the model's own. */
int pile_optim_gather_params(pile_optim *o, float *host, pile_err *err);
/* Puts src[0..count), the values of flat elements [first, first + count)
 * of state `which`, where this rank keeps them: the part inside its shard
 * (none when they do not meet). What a checkpoint is loaded through, so
 * that any world size and stage read the same files (DeepSpeed's
 * universal checkpoint: the flat layout does not depend on either). */
int pile_optim_put(pile_optim *o, pile_optim_state which, const float *src, size_t first, size_t count,
                   pile_err *err);
/* The ranks the state is sharded over: 1 at stage 0 (each rank keeps it
 * whole) or on one rank. */
int pile_optim_shards(const pile_optim *o);
/* Bytes of payload the collectives of gradients and parameters have
 * moved so far, counted as the ZeRO paper counts them (Rajbhandari et al.
 * 2020, section 7): an allreduce of n bytes is 2n (a reduce-scatter and an
 * all-gather), a reduce-scatter or an all-gather of n bytes is n, a
 * stage-3 unit broadcast its bytes; on one rank the same count for the
 * collectives that would run. A step's bytes over the parameter bytes:
 * 2 at stages 0 to 2, about 3 at stage 3. */
uint64_t pile_optim_comm_bytes(const pile_optim *o);
/* Of those, the gradient buckets' bytes handed to the communicator's
 * thread (or comm stream) while the backward still had layers to compute:
 * how much of the reduction could overlap it (0 without overlap). */
uint64_t pile_optim_overlap_bytes(const pile_optim *o);

/* Zeroes the gradients: where a step's sum over micro-batches starts. */
void pile_optim_zero_grad(pile_optim *o);

/* Before each micro-batch's backward (optional): last non-zero for the
 * step's last one, whose gradients stages 0 and 1 then reduce on the
 * communicator's thread as the backward produces them (without the call,
 * or without the thread, all at pile_optim_reduce_gradients). */
void pile_optim_begin_backward(pile_optim *o, int last);

/* After each micro-batch's backward: at stages 2 and 3 the whole
 * gradient is reduce-scattered (in buckets; those the communicator's
 * thread has not done yet) and added to the rank's fp32 shard, and
 * the whole buffer zeroed for the next micro-batch; a no-op below stage
 * 2. A collective: every rank calls it as often. 0, the backend's sticky
 * error or the communicator's. */
int pile_optim_backward_done(pile_optim *o, pile_err *err);

/* At the end of the step's accumulation: the gradients summed over the
 * ranks (stage 0: allreduced; 1: reduce-scattered to the owner; 2:
 * already there), moved to the offload backend when there is one, and
 * *sumsq = this rank's part of the global squared norm (its partition of
 * the whole at stage 0, its shard above), which the caller sums over the
 * ranks (the norm is the square root of the sum) together with whatever
 * else it reduces. A collective. On one rank at stage 0 the norm is
 * pile_optim_grad_norm's, bit for bit. */
int pile_optim_reduce_gradients(pile_optim *o, double *sumsq, pile_err *err);

/* L2 norm of the gradients the step reads on this rank (at stage 0 the
 * whole; above, the shard): the global norm on one rank. NaN when the
 * backend has failed. */
double pile_optim_grad_norm(pile_optim *o);

/* One optimizer step on the gradients, reduced over the ranks already,
 * given their global norm: clipping to max_norm (<= 0: none), one AdamW
 * step with learning rate lr on the master weights (the rank's shard),
 * counted, then the model's compute parameters written from them (from
 * stage 1 all-gathered: a collective). 0, or the backend's sticky error
 * or the communicator's; PILE_EINVAL, changing nothing, for a norm that
 * is not finite (the caller decides whether that ends the run). */
int pile_optim_step(pile_optim *o, double grad_norm, float max_norm, float lr, pile_err *err);

/* fp16's loss scaling (loss_scaler.h): the optimizer creates and owns a
 * scaler with these settings (PILE_EINVAL for settings out of range,
 * PILE_ENOMEM); call once, before the first step. Without it the scale is
 * 1 and pile_optim_step_scaled behaves as pile_optim_step. */
int pile_optim_enable_loss_scaling(pile_optim *o, const pile_loss_scaler_config *c, pile_err *err);
/* The optimizer's scaler (its state goes into checkpoints), or NULL. */
pile_loss_scaler *pile_optim_loss_scaler(pile_optim *o);
/* The scale the next backward multiplies the loss by (1 without a scaler). */
double pile_optim_loss_scale(const pile_optim *o);

/* One step on gradients accumulated with the loss multiplied by
 * pile_optim_loss_scale: grad_norm is their global norm as accumulated
 * (scaled), overflow non-zero when any rank saw a non-finite gradient (the
 * caller reduces the flag with MAX over the ranks). The scaler records the
 * outcome (*out, may be NULL). An overflowed step is skipped: master
 * weights, moments, the compute copy and pile_optim_steps stay as they
 * were, and 1 is returned. Otherwise the gradients are divided by the
 * scale, then clipped and applied as pile_optim_step does with the
 * unscaled norm (*unscaled_norm, may be NULL), and 0 is returned. Errors:
 * the backend's sticky error; PILE_ELIMIT when an overflow would take the
 * scale under min_loss_scale (loss_scaler.h), nothing changed. */
int pile_optim_step_scaled(pile_optim *o, double grad_norm, int overflow, float max_norm, float lr,
                           double *unscaled_norm, pile_loss_scaler_step *out, pile_err *err);

/* Writes the model's compute parameters from the master weights (after a
 * checkpoint was loaded into them; from stage 1 an all-gather, a
 * collective). A no-op when they are one buffer. */
int pile_optim_update_model(pile_optim *o, pile_err *err);

/* Learning rate of optimizer step `step` (0-based) out of total_steps. */
double pile_lr_at(int64_t step, int64_t total_steps, int64_t warmup_steps, double lr, double min_lr);
/* ceil(warmup_ratio * total_steps), as transformers' TrainingArguments. */
int64_t pile_warmup_steps(double warmup_ratio, int64_t total_steps);

#ifdef __cplusplus
}
#endif

#endif
