/* The trainer's backend interface: every floating-point operation the
 * model and the optimizer perform, on typed tensors in a backend's memory,
 * dispatched at run time through a table of operations that each backend
 * fills (backend_internal.h), so that the CPU reference (trainer/cpu/) and
 * a device backend (trainer/cuda/) live side by side in one process: tests
 * run both on the same inputs, and an optimizer may keep its state in
 * another backend than the model's (CPU offload). A backend is chosen by
 * name ("cpu", "cuda") or left to pile_backend_default_name. Collectives
 * are not here: they are a pile_comm's (comm/comm.h).
 *
 * "devsim" (trainer/cpu/backend_devsim.c) is for testing: the host side
 * of a device run, checked without a device. Its ops are the CPU
 * backend's (the same bits), but pile_backend_host_memory says 0 and every
 * tensor's data is an address the host cannot use (the real one with bits
 * 62 and 55 flipped: offsets within a tensor work, any host read or write
 * faults), so code that dereferences a tensor instead of going through
 * upload / download / copy crashes on it. "devsim16" is the same but
 * computes in BF16 and F16 as a device does (supports says so): its ops
 * widen 16-bit operands to fp32 for the CPU's arithmetic and round the
 * output back, which is where the CPU's emulation rounds, so its results
 * are the emulation's bits. Opened by name only: never the default, not
 * in pile_backend_names. No state but their own objects'.
 *
 * What a backend owns: the memory it hands out (pile_backend_alloc), the
 * work queued on it, and its sticky error. Nothing else: the model owns its
 * parameters and activations, the optimizer its master weights, gradients
 * and moments, each in tensors allocated here.
 *
 * Conventions, for every backend:
 *  - A pile_tensor names n elements of one dtype in one backend's memory.
 *    It is a plain value (copy it freely); pile_backend_alloc makes one
 *    that owns its memory, pile_tensor_slice and pile_tensor_carve make
 *    views into it. Callers never dereference a tensor's data except
 *    through pile_backend_upload / _download, unless the backend says its
 *    memory is the host's (pile_backend_host_memory).
 *  - Each op states the dtypes it takes. Statistics (LayerNorm's mean and
 *    rstd, losses), weight gradients (accumulated in fp32 across
 *    micro-batches, as mixed precision needs) and the optimizer's tensors
 *    are F32; token ids, targets, document starts and hits are I32;
 *    attention's saved state and scratch are U8 (bytes, opaque). The other
 *    float operands (activations and the parameters the forward reads) are
 *    "compute" tensors: all of one dtype per call, which the backend must
 *    take (pile_backend_supports). Today every backend computes in F32;
 *    BF16 and F16 are the dtypes of mixed precision.
 *  - Shapes: B batch rows, T positions, C channels (n_embd), NH heads,
 *    OC output channels, V real vocabulary, Vp padded vocabulary (V <= Vp).
 *    A tensor may be larger than an op needs (buffers sized for the
 *    largest batch serve smaller ones); the op uses the leading elements.
 *  - Linear weights are stored as Hugging Face GPT-2 stores its Conv1D
 *    weights: W[in, out], so y = x W + b. model.safetensors is a plain copy.
 *  - Backward functions ACCUMULATE (+=) into every gradient they write,
 *    including the gradient with respect to their input, so residual
 *    branches and tied weights need no extra adds. Callers zero gradients
 *    (pile_backend_zero) where a sum starts.
 *  - Deterministic: the same inputs with the same thread count give the
 *    same bits (resume is checked bit for bit).
 *  - Not thread-safe: one caller thread per backend object.
 *
 * Errors. Ops return nothing, since a device runs them later than they are
 * called. An op that cannot run (a tensor too small, of a dtype the op does
 * not take or of another backend, an asynchronous device fault) records a
 * sticky error naming the op, and every later op on that backend does
 * nothing; pile_backend_sync waits for the queued work and returns that
 * error. The training loop checks it once per step; the model and the
 * optimizer check it where they read results back. The error stays: a
 * failed backend is closed, not reused. */
#ifndef PILE_BACKEND_H
#define PILE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "pile_error.h"
#include "precision.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pile_backend pile_backend;

/* ------------------------------------------------------------- tensors */

typedef enum pile_dtype {
    PILE_DTYPE_F32 = 0,
    PILE_DTYPE_BF16 = 1, /* bfloat16 (precision.h has its rounding) */
    PILE_DTYPE_F16 = 2,  /* IEEE binary16 */
    PILE_DTYPE_I32 = 3,
    PILE_DTYPE_U8 = 4,   /* bytes: a backend's opaque buffers */
} pile_dtype;
#define PILE_DTYPE_COUNT 5

/* Bytes per element (0 outside the enum) and the name ("f32", "bf16",
 * "f16", "i32", "u8"; "?" outside the enum). */
size_t pile_dtype_size(pile_dtype dt);
const char *pile_dtype_name(pile_dtype dt);
/* The dtype a precision computes in: F32, BF16 or F16. */
pile_dtype pile_dtype_of_precision(pile_precision p);

typedef struct pile_tensor {
    void *data;         /* backend memory; NULL: no tensor (an optional operand left out) */
    size_t n;           /* elements */
    pile_dtype dtype;
    pile_backend *be;   /* whose memory it is */
} pile_tensor;

/* The absent tensor, for optional operands (a matmul without bias). */
#define PILE_NO_TENSOR ((pile_tensor){NULL, 0, PILE_DTYPE_F32, NULL})

/* Elements [first, first + n) of t, a view; the absent tensor when that
 * range is not inside t (an op given it then fails with a sticky error). */
pile_tensor pile_tensor_slice(pile_tensor t, size_t first, size_t n);
/* n elements of dt at byte `offset` of t (a U8 tensor: one allocation
 * carved into typed tensors), a view; offset must be a multiple of dt's
 * size. The absent tensor when it does not fit. */
pile_tensor pile_tensor_carve(pile_tensor t, size_t offset, pile_dtype dt, size_t n);
size_t pile_tensor_bytes(pile_tensor t);

/* ------------------------------------------------------------ backends */

/* The backends this build knows, in the order the default is looked for:
 * "cuda" first when this build has the CUDA backend, then "cpu", as a
 * comma-separated list ("cpu" here without CUDA). */
const char *pile_backend_names(void);

/* Whether backend `name` can be opened in this process: 0, or PILE_EINVAL
 * for a name no build knows, PILE_ENOENT for a backend this build was made
 * without (err says how to get it), PILE_EIO when its library or device is
 * not usable here (err says why). */
int pile_backend_probe(const char *name, pile_err *err);

/* The backend to use when none is named: the first of pile_backend_names
 * that probes usable ("cuda" with a usable device, else "cpu"). When one
 * was passed over (a CUDA build without a usable device), *why (may be
 * NULL) says so, for the notice the caller shows; else why->code is 0. */
const char *pile_backend_default_name(pile_err *why);

/* Opens a backend by name ("cpu", "cuda", "devsim", "devsim16"; NULL, ""
 * or "auto": the default). threads: the host threads it may use; <= 0: every usable
 * core; more than pile_backend_usable_cores() are capped there (threads
 * beyond the cores only wait on each other). PILE_EINVAL / PILE_ENOENT /
 * PILE_EIO as pile_backend_probe, PILE_ENOMEM. */
int pile_backend_open(pile_backend **out, const char *name, int threads, pile_err *err);
void pile_backend_close(pile_backend *be); /* accepts NULL */
const char *pile_backend_name(const pile_backend *be);
int pile_backend_threads(const pile_backend *be);
/* 1 when the backend's memory is host memory (the CPU's): another
 * backend may then read and write its tensors as host buffers. */
int pile_backend_host_memory(const pile_backend *be);
/* The communicator (trainer/comm/comm.h) whose tensor calls work on this
 * backend's memory between ranks: "nccl" for cuda, "devsim" for the
 * devsim backends; NULL where the memory is the host's (any host
 * communicator serves). */
const char *pile_backend_device_comm(const pile_backend *be);
/* For the "devsim" communicator (comm/comm.h, testing): the host address
 * behind p when p is an address a devsim backend handed out (a tensor's
 * data, or inside it), else NULL (a host pointer, or NULL). */
void *pile_backend_devsim_host_address(const void *p);
/* The device it computes on, by name ("NVIDIA H100 80GB HBM3": what a
 * peak-FLOPs table is looked up by); NULL for a backend without one (the
 * CPU's). Lives as long as the backend. */
const char *pile_backend_device_name(const pile_backend *be);
/* The cores this process may run on (its sched_getaffinity mask, so
 * taskset and cgroup cpusets count), at least 1. */
int pile_backend_usable_cores(void);

/* The operations, for pile_backend_supports and error messages. */
typedef enum pile_op {
    PILE_OP_EMBED_FWD,
    PILE_OP_EMBED_BWD,
    PILE_OP_LAYERNORM_FWD,
    PILE_OP_LAYERNORM_BWD,
    PILE_OP_MATMUL_FWD,
    PILE_OP_MATMUL_BWD,
    PILE_OP_LOGITS_FWD,
    PILE_OP_LOGITS_BWD,
    PILE_OP_ATTENTION_FWD,
    PILE_OP_ATTENTION_BWD,
    PILE_OP_ATTENTION_DECODE,
    PILE_OP_GELU_FWD,
    PILE_OP_GELU_BWD,
    PILE_OP_ADD,
    PILE_OP_DROPOUT,
    PILE_OP_SOFTMAX_CE,
    PILE_OP_CONVERT,
    PILE_OP_SUMSQ,
    PILE_OP_SCALE,
    PILE_OP_ADAMW,
    PILE_OP_COUNT
} pile_op;
/* "matmul_fwd", ...; "?" outside the enum. */
const char *pile_op_name(pile_op op);
/* 1 when op takes compute tensors of dtype dt on this backend (for
 * PILE_OP_CONVERT: dt as source or destination). The CPU backend computes
 * in F32 and converts between F32, BF16 and F16. */
int pile_backend_supports(const pile_backend *be, pile_op op, pile_dtype dt);

/* Mixed precision by emulation, on a backend that computes in F32 only
 * (the CPU's): compute tensors stay F32 in memory, but every value an op
 * writes into one (the operands marked "compute" below that it writes, and
 * pile_backend_convert's F32 destinations: the parameters the optimizer
 * writes) is rounded to dt (round to nearest even; F16 saturates to
 * infinity), as a backend computing in dt stores it. F32 operands
 * (statistics, losses, weight gradients, the optimizer's tensors) and
 * copies are never rounded. So the precision policy is tested where no
 * device exists, and a device backend is checked against the CPU in the
 * same mode. dt F32 turns it off. PILE_EINVAL for another dtype or a
 * backend that cannot round. */
int pile_backend_set_emulation(pile_backend *be, pile_dtype dt, pile_err *err);
/* F32 (none), BF16 or F16. */
pile_dtype pile_backend_emulation(const pile_backend *be);

/* Waits for everything queued on the backend and returns its sticky
 * error: 0, or the PILE_E* of the first op that failed since the backend
 * was opened, err naming the op and why. */
int pile_backend_sync(pile_backend *be, pile_err *err);

/* ------------------------------------------------------------- memory */

/* A tensor of n zeroed elements of dt in the backend, aligned to 64 bytes;
 * the absent tensor (data NULL) on out-of-memory. Freed with
 * pile_backend_free. */
pile_tensor pile_backend_alloc(pile_backend *be, pile_dtype dt, size_t n);
/* Frees what pile_backend_alloc returned (not a view), and clears *t;
 * accepts the absent tensor. */
void pile_backend_free(pile_tensor *t);
/* Bytes of memory the backend holds now (its allocations), and the most
 * it held since it was opened. */
size_t pile_backend_bytes_in_use(const pile_backend *be);
size_t pile_backend_bytes_peak(const pile_backend *be);
/* Takes `bytes` of the backend's memory up front, once, for the
 * allocations to come (a device's: the run's planned total, so that a run
 * that cannot fit fails before its first step, not at an allocation in its
 * middle; pile_backend_alloc then carves tensors from it). Nothing to do
 * on the CPU backend. 0; PILE_ENOMEM when the memory is not there (err
 * says how much was asked and how much the device has free); PILE_EINVAL
 * when the backend reserved already. */
int pile_backend_reserve(pile_backend *be, size_t bytes, pile_err *err);
/* The work space a device backend's ops use beyond their operands (the
 * CUDA backend's: partial sums of its deterministic reductions and
 * embed_bwd's sort, sized in trainer/cuda/cuda_sizes.h), for the training
 * of a model of width C on micro-batches of at most B x T: taken once, up
 * front, from what pile_backend_reserve took (its own allocation when
 * nothing was reserved), after which no op allocates; an op that would
 * need more than was taken fails with a sticky error naming both sizes (a
 * planning bug). Ops that need none (every forward) run without it. Call
 * it before the first backward. Nothing to do on the CPU backend. 0;
 * PILE_ENOMEM when the memory is not there (err says how much); PILE_EINVAL
 * when taken already; PILE_EIO when the backend finds its planned size too
 * small for what its libraries ask (a bug, named with both sizes). */
int pile_backend_reserve_scratch(pile_backend *be, int B, int T, int C, pile_err *err);

/* n elements between host memory and dst / src's first elements. */
void pile_backend_upload(pile_backend *be, pile_tensor dst, const void *host_src, size_t n);
void pile_backend_download(pile_backend *be, void *host_dst, pile_tensor src, size_t n);
/* Staged uploads: host data that travels to the device while the ops
 * queued before it compute (the next micro-batch while the current one
 * runs). A device backend copies each upload at once into host staging
 * memory of its own (pinned, which a device reads without the CPU) and
 * from there to dst on a copy queue beside the ops' queue; a backend
 * without one (the CPU's) uploads at once, as pile_backend_upload: the
 * bits are the same either way.
 *
 * The uploads between two pile_backend_stage_wait calls form a group, at
 * most `bytes` of staging memory together (pile_backend_stage_reserve;
 * each upload takes its bytes rounded up to 256). Ordering:
 *  - a group's first upload is ordered after every op queued before it,
 *    so dst may be a tensor those ops still read;
 *  - ops queued after the group's pile_backend_stage_wait see its data;
 *  - ops queued between the two may run while it travels, so they must
 *    not touch the group's dst tensors.
 * host_src may be reused when stage_upload returns. The devsim backends
 * hold a group to the latest a device may: dst poisoned at stage_upload,
 * the data landing there only at stage_wait. */
/* Staging memory for groups of up to `bytes`: allocated on the first
 * call, grown by a larger one (which waits for the backend first), kept
 * by a smaller one. 0, or PILE_ENOMEM (err says how much). */
int pile_backend_stage_reserve(pile_backend *be, size_t bytes, pile_err *err);
/* n elements of host_src into dst[0..n), staged. Beyond the reserved
 * bytes: a sticky error naming both sizes. */
void pile_backend_stage_upload(pile_backend *be, pile_tensor dst, const void *host_src, size_t n);
/* Ends the group: the ops queued from now on see its uploads (a device's
 * op queue waits for its copy queue there, without the CPU waiting). */
void pile_backend_stage_wait(pile_backend *be);

/* The communication stream: where a device communicator's tensor calls
 * (comm/comm.h, their `stream`) run beside the ops, so that a bucket's
 * reduction overlaps the backward of the layers below it. Ops and
 * communication are ordered only by the two calls below, neither of which
 * makes the host wait:
 *  - pile_backend_comm_wait_compute: the communication given from now on
 *    runs after the ops queued so far (its inputs written by them, its
 *    outputs no longer read by them);
 *  - pile_backend_compute_wait_comm: the ops queued from now on run after
 *    the communication given so far (they see its outputs, and may
 *    overwrite its inputs).
 * So between a call and the first compute_wait_comm after it, no op may
 * read the call's outputs or write its inputs. pile_backend_sync waits
 * for the communication too (on cuda), but does not order it: only
 * compute_wait_comm does. Freeing a tensor orders the ops queued after it
 * behind the communication given so far (the memory may be handed out
 * again).
 *
 * pile_backend_comm_stream: an opaque handle for the tensor calls of the
 * backend's device communicator (pile_backend_device_comm): a
 * cudaStream_t of its own on cuda; on the devsim backends the queue of
 * the "devsim" communicator (below); NULL on the CPU, whose memory is the
 * host's (host communicators finish every call before returning, and the
 * two calls do nothing). Lives as long as the backend.
 *
 * The devsim backends hold communication to the latest a device may: a
 * tensor call given their stream is queued, not made; its outputs are
 * poisoned (NaN) at once, and its inputs read only when it runs, at the
 * next compute_wait_comm (or compute_wait_mark for a mark after it, or
 * when a tensor is freed). So a result read
 * before compute_wait_comm, or an input overwritten before it, gives other
 * bits than the cpu backend. A missing comm_wait_compute, which the bits
 * cannot show (their ops are done when called), they find by address:
 * from the first pile_backend_comm_stream call on, every op records the
 * bytes it writes (the operands this header says it writes, accumulated
 * gradients included, the whole of embed_bwd's dwte; an alloc's zeroing
 * too, which a device runs on its compute stream) until the next
 * comm_wait_compute or pile_backend_sync (after which every op queued is
 * done), and a tensor call whose input or output meets those bytes, or a
 * staged upload's dst before its stage_wait, fails the backend (below). */
void *pile_backend_comm_stream(pile_backend *be);
void pile_backend_comm_wait_compute(pile_backend *be);
void pile_backend_compute_wait_comm(pile_backend *be);
/* Marks, so that the ops wait for one collective and not for those given
 * after it (a bucket's reduce, not the next bucket's: more than one in
 * flight). pile_backend_comm_mark: a point on the comm stream after the
 * communication given so far, as a number that grows with each call
 * given (0: nothing given, or a backend without a comm stream or
 * failed). pile_backend_compute_wait_mark: the ops queued from now on run
 * after the communication given up to `mark` (0 does nothing; a mark
 * never given is a sticky error), so they see its outputs and may
 * overwrite its inputs; compute_wait_comm is the wait for the latest
 * mark. On cuda a mark is an event of a small ring recorded on the comm
 * stream: waiting for a mark whose event was recorded again since (eight
 * marks later) waits for the later communication too, which is safe, only
 * later. On the cpu both do nothing. The devsim backends run the queued
 * calls up to the mark only: the later ones stay queued, their outputs
 * poisoned. */
uint64_t pile_backend_comm_mark(pile_backend *be);
void pile_backend_compute_wait_mark(pile_backend *be, uint64_t mark);
/* The devsim stream's queue (for the "devsim" communicator and tests):
 * queues fn(arg) on `stream` (pile_backend_comm_stream of a devsim
 * backend), arg copied (arg_bytes). The call writes out[0..out_bytes) and
 * reads in[0..in_bytes), host addresses (untagged): out is poisoned now;
 * where in and out overlap (a call in place), those bytes are kept now
 * and put back just before fn runs, so that the call reads them as they
 * were, unless something wrote there in between. fn's failure becomes
 * the backend's sticky error ("comm: ..."), and the queue's later calls
 * are not made. PILE_EINVAL for a stream that is not a devsim backend's;
 * PILE_EINVAL too, the call not queued and the backend failed with the
 * same message, when in or out meets what an op wrote since the last
 * comm_wait_compute (above: "comm: a collective reads 4096 bytes, 512 of
 * them (from byte 0) written by matmul_bwd ('dW', 2048 bytes) after the
 * last comm_wait_compute: ..."); PILE_ENOMEM. */
typedef int (*pile_backend_devsim_fn)(void *arg, pile_err *err);
int pile_backend_devsim_enqueue(void *stream, pile_backend_devsim_fn fn, const void *arg, size_t arg_bytes,
                                void *out, size_t out_bytes, const void *in, size_t in_bytes, pile_err *err);

/* dst[0..n) = src[0..n), one dtype, both in this backend, not overlapping. */
void pile_backend_copy(pile_backend *be, pile_tensor dst, pile_tensor src, size_t n);
void pile_backend_zero(pile_backend *be, pile_tensor t, size_t n);
/* dst[0..n) = src[0..n) converted between float dtypes (F32, BF16, F16),
 * rounding to nearest even (precision.h's rules; F16 saturates to
 * infinity); the same dtype copies. Not overlapping. */
void pile_backend_convert(pile_backend *be, pile_tensor dst, pile_tensor src, size_t n);

/* Between backends: dst[0..n) = src[0..n) of one dtype, wherever each
 * lives (through the host when neither backend's memory is the host's).
 * Waits for src's backend first. 0, or the sticky error of either
 * backend, or PILE_ENOMEM for the staging buffer. */
int pile_tensor_copy(pile_tensor dst, pile_tensor src, size_t n, pile_err *err);
/* n fp32 values from the host into t, converted to t's float dtype (the
 * model's initialisation and checkpoints, which are fp32, into 16-bit
 * parameters), and back. PILE_ENOMEM for a conversion buffer. */
int pile_tensor_upload_f32(pile_tensor t, const float *host, size_t n, pile_err *err);
int pile_tensor_download_f32(float *host, pile_tensor t, size_t n, pile_err *err);

/* ------------------------------------------------------------- forward
 * and backward ops. "compute" marks the operands of the call's compute
 * dtype; the others are of the dtype named. */

/* out[B*T, C] = wte[tokens[b,t]] + wpe[t]. out, wte, wpe: compute;
 * tokens: I32 [B*T]. */
void pile_backend_embed_fwd(pile_backend *be, pile_tensor out, pile_tensor tokens, pile_tensor wte,
                            pile_tensor wpe, int B, int T, int C);
/* dwte[tokens[b,t]] += dout[b,t]; dwpe[t] += dout[b,t]. dout: compute;
 * dwte, dwpe: F32. */
void pile_backend_embed_bwd(pile_backend *be, pile_tensor dwte, pile_tensor dwpe, pile_tensor dout,
                            pile_tensor tokens, int B, int T, int C);

/* LayerNorm over the last dimension, eps 1e-5 (GPT-2's). mean and rstd
 * [N] (F32) are saved for the backward. out, inp, w, b: compute. */
void pile_backend_layernorm_fwd(pile_backend *be, pile_tensor out, pile_tensor mean, pile_tensor rstd,
                                pile_tensor inp, pile_tensor w, pile_tensor b, int N, int C);
/* dinp, dout, inp, w: compute; dw, db, mean, rstd: F32. */
void pile_backend_layernorm_bwd(pile_backend *be, pile_tensor dinp, pile_tensor dw, pile_tensor db,
                                pile_tensor dout, pile_tensor inp, pile_tensor w, pile_tensor mean,
                                pile_tensor rstd, int N, int C);

/* out[N, OC] = inp[N, IC] W[IC, OC] (+ bias[OC] unless absent); products
 * accumulate in fp32. out, inp, W, bias: compute. */
void pile_backend_matmul_fwd(pile_backend *be, pile_tensor out, pile_tensor inp, pile_tensor W,
                             pile_tensor bias, int N, int IC, int OC);
/* dinp += dout W^T; dW += inp^T dout; dbias += column sums of dout
 * (dbias may be absent; dinp may be absent when the input needs no
 * gradient). dinp, dout, inp, W: compute; dW, dbias: F32. */
void pile_backend_matmul_bwd(pile_backend *be, pile_tensor dinp, pile_tensor dW, pile_tensor dbias,
                             pile_tensor dout, pile_tensor inp, pile_tensor W, int N, int IC, int OC);

/* Logits over the tied embedding: out[N, Vp] = inp[N, C] wte[Vp, C]^T.
 * All compute. */
void pile_backend_logits_fwd(pile_backend *be, pile_tensor out, pile_tensor inp, pile_tensor wte, int N, int C,
                             int Vp);
/* dinp += dout wte; dwte += dout^T inp. dwte: F32, the others compute. */
void pile_backend_logits_bwd(pile_backend *be, pile_tensor dinp, pile_tensor dwte, pile_tensor dout,
                             pile_tensor inp, pile_tensor wte, int N, int C, int Vp);

/* Causal multi-head self-attention, scale 1/sqrt(C/NH).
 * qkv[B, T, 3C] holds q, k, v in that order (HF c_attn's output).
 * doc_start: absent, or I32 [B, T] with the first position each position
 * may attend to (<= t): attention then never crosses a document start.
 * out[B, T, C] (heads concatenated). qkv, out: compute.
 *
 * What the forward keeps for the backward is the backend's choice: the
 * forward fills `saved` (saved_bytes large, U8, opaque to the caller) and
 * the backward reads it, with the same qkv, out, doc_start and shapes.
 * Both use `scratch` (scratch_bytes large, U8) as transient work space
 * whose contents do not matter between calls, so one scratch serves every
 * layer. A caller sizes both once for its largest B and T: the sizes never
 * decrease as B or T grow, so those buffers serve any smaller call. The CPU
 * backend saves one log-sum-exp per row ([B, NH, T] floats) and recomputes
 * the probabilities block by block in the backward (FlashAttention-2), so
 * nothing of size T x T is ever stored. */
size_t pile_backend_attention_saved_bytes(const pile_backend *be, int B, int T, int C, int NH);
size_t pile_backend_attention_scratch_bytes(const pile_backend *be, int B, int T, int C, int NH);
void pile_backend_attention_fwd(pile_backend *be, pile_tensor out, pile_tensor saved, pile_tensor scratch,
                                pile_tensor qkv, pile_tensor doc_start, int B, int T, int C, int NH);
/* dqkv += d(qkv), given dout = d(out) and the forward's qkv, out and
 * saved. dqkv, dout, qkv, out: compute. */
void pile_backend_attention_bwd(pile_backend *be, pile_tensor dqkv, pile_tensor scratch, pile_tensor dout,
                                pile_tensor qkv, pile_tensor out, pile_tensor saved, pile_tensor doc_start,
                                int B, int T, int C, int NH);

/* One query row against a key/value cache: incremental decoding's
 * attention, the same function as pile_backend_attention_fwd's row t
 * without doc_start. q[C] is the query of position t (the first C values
 * of c_attn's output row); kcache and vcache hold at least t + 1 rows of
 * C, row s holding position s's key / value, heads concatenated as in qkv
 * (so appending a position is a copy of C values of c_attn's output: k at
 * offset C, v at 2C). Rows 0..t are read and must be filled. att (F32,
 * NH * (t+1)) is scratch that receives the softmax probabilities; out[C]
 * (heads concatenated). out, q, kcache, vcache: compute. Deterministic,
 * and independent of the thread count. */
void pile_backend_attention_decode(pile_backend *be, pile_tensor out, pile_tensor att, pile_tensor q,
                                   pile_tensor kcache, pile_tensor vcache, int t, int C, int NH);

/* GELU, tanh approximation (HF "gelu_new"), on n values. All compute. */
void pile_backend_gelu_fwd(pile_backend *be, pile_tensor out, pile_tensor inp, size_t n);
void pile_backend_gelu_bwd(pile_backend *be, pile_tensor dinp, pile_tensor inp, pile_tensor dout, size_t n);

/* out = a + b on n values (out may be a or b). All compute. */
void pile_backend_add(pile_backend *be, pile_tensor out, pile_tensor a, pile_tensor b, size_t n);

/* Inverted dropout with probability p on x[0..n) (compute): x *= keep /
 * (1 - p), where keep is a pure function of (seed, i), so no RNG state
 * exists and a resumed run draws the same masks. p == 0 leaves x
 * untouched. The backward applies the same mask to the gradient. */
void pile_backend_dropout(pile_backend *be, pile_tensor x, size_t n, float p, uint64_t seed);

/* Softmax cross-entropy over the first V of Vp logits per row (the padded
 * columns never get probability); logits: compute [N, Vp]. targets (I32
 * [N]): < 0 means no loss there. Per row: losses[i] (F32) =
 * -log softmax(logits[i])[targets[i]] (0 where ignored); correct[i] (I32)
 * = 1 if argmax over the V columns equals the target (ties: lowest id),
 * else 0. When grad_scale != 0, logits is overwritten with the gradient of
 * grad_scale * sum(losses): (softmax - onehot) * grad_scale on real
 * columns, 0 on padded columns and on ignored rows. */
void pile_backend_softmax_ce(pile_backend *be, pile_tensor logits, pile_tensor losses, pile_tensor correct,
                             pile_tensor targets, int N, int V, int Vp, float grad_scale);

/* ----------------------------------------------------------- optimizer
 * F32 tensors. */

/* Sum of squares of x[0..n), accumulated in double; waits for the
 * backend. NaN when the backend has failed. */
double pile_backend_sumsq(pile_backend *be, pile_tensor x, size_t n);
/* x[0..n) *= s. */
void pile_backend_scale(pile_backend *be, pile_tensor x, size_t n, float s);
/* One AdamW step on p[0..n) as torch.optim.AdamW computes it (decoupled
 * decay):
 *   p -= lr * wd * p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 *   p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 * t is the 1-based step count. */
void pile_backend_adamw(pile_backend *be, pile_tensor p, pile_tensor g, pile_tensor m, pile_tensor v, size_t n,
                        float lr, float beta1, float beta2, float eps, float wd, int64_t t);

#ifdef __cplusplus
}
#endif

#endif
