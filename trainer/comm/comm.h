/* pile_comm: the collectives of data-parallel training, one object per
 * rank, apart from the compute backend (trainer/backend.h), so that the
 * same model and optimizer code runs on one process or many and a backend
 * never needs to know how ranks talk.
 *
 * What it owns: the rank's place in the job (rank, world size) and the
 * connection to the other ranks. What it does not own: every buffer it is
 * handed (the caller's, before and after each call) and any stream.
 *
 * Implementations, chosen by name at open:
 *  - "single": world size 1, rank 0. Every reduction is the identity and
 *    every gather or scatter a copy (or nothing, in place). The trainer
 *    opens it for world_size 1, which is all there is for now.
 * What sharded training will add behind this same header, each an entry
 * of comm.c's table (comm_internal.h) with no change to callers:
 *  - "mpi": CPU buffers between real processes (Open MPI); rank and world
 *    size from the launcher's environment, and the rendezvous for NCCL.
 *  - "nccl": buffers in GPU memory; each tensor call is enqueued on the
 *    `stream` it is given (a cudaStream_t) and completes in that stream's
 *    order, so that gradient reduction overlaps the backward; a wait on
 *    the stream, and a watchdog that aborts the communicator when a peer
 *    dies, come with it. Opening it will also take the device to use.
 *
 * Buffers are plain (pointer, count, dtype) in the memory the
 * implementation works on (host memory for "single" and "mpi", device
 * memory for "nccl"): pile_comm depends on no tensor type. Scalars (token
 * counts, loss sums, norm partial sums, overflow flags) are host values in
 * every implementation, and their call returns with the result in place.
 *
 * Errors: 0 or a negative PILE_E* with *err filled. A call whose
 * arguments are wrong (a NULL buffer, a dtype the operation cannot reduce,
 * a count that does not divide over the ranks, a root out of range,
 * buffers that overlap other than in place) is refused with PILE_EINVAL
 * before anything is read or written, the same way by every
 * implementation. Every rank must make the same calls with the same
 * counts, dtypes and roots in the same order; one that does not is a bug
 * the "single" implementation cannot see.
 *
 * Not thread-safe: one caller thread per pile_comm. */
#ifndef PILE_COMM_H
#define PILE_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "pile_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pile_comm pile_comm;

/* Element types of tensor buffers. Reductions (allreduce, reduce-scatter)
 * take PILE_COMM_F32 only: 16-bit gradients are reduced in fp32 (the
 * mixed-precision rule), so bf16 and fp16 are moved as raw 2-byte
 * elements by the copies (all-gather, broadcast). */
typedef enum pile_comm_dtype {
    PILE_COMM_F32 = 0,
    PILE_COMM_BF16 = 1,
    PILE_COMM_F16 = 2,
} pile_comm_dtype;

typedef enum pile_comm_op {
    PILE_COMM_SUM = 0, /* gradients, token counts, loss sums, norm partial sums */
    PILE_COMM_MAX = 1, /* flags: an fp16 overflow on any rank is one on every rank */
} pile_comm_op;

/* Opens the communicator `name` ("single"). An unknown name is
 * PILE_EINVAL naming those this build has. *out is NULL on failure. */
int pile_comm_open(pile_comm **out, const char *name, pile_err *err);
void pile_comm_close(pile_comm *c); /* accepts NULL */

const char *pile_comm_name(const pile_comm *c);
int pile_comm_rank(const pile_comm *c);       /* 0 .. world_size - 1 */
int pile_comm_world_size(const pile_comm *c); /* >= 1 */

/* Bytes of one element of dt (4 or 2); 0 for a value outside the enum. */
size_t pile_comm_dtype_size(pile_comm_dtype dt);

/* This rank's share of n elements cut into world_size ranges of
 * ceil(n / world_size) (the last ones shorter, perhaps empty): *offset and
 * *count. The ranges are disjoint and cover [0, n), so that per-rank
 * partial sums over them (a gradient norm's squares) add up to the whole. */
void pile_comm_partition(const pile_comm *c, size_t n, size_t *offset, size_t *count);

/* ---------------------------------------------------------- tensors
 * `stream`: where an implementation with streams enqueues the call
 * ("nccl": a cudaStream_t; NULL, its default). "single" and "mpi" finish
 * before returning and ignore it. */

/* buf[0..count) = op over all ranks of each rank's buf, in place. dt must
 * be PILE_COMM_F32. */
int pile_comm_allreduce(pile_comm *c, void *buf, size_t count, pile_comm_dtype dt, pile_comm_op op, void *stream,
                        pile_err *err);

/* Reduces in[0..count) over all ranks and leaves rank r the range
 * [r * count / world_size, (r + 1) * count / world_size) in
 * out[0..count / world_size). count must be a multiple of world_size (pad
 * it: pile_comm_partition's ranges are not all equal). out is either in +
 * rank * (count / world_size) (in place) or does not overlap in. dt must
 * be PILE_COMM_F32. */
int pile_comm_reduce_scatter(pile_comm *c, void *out, const void *in, size_t count, pile_comm_dtype dt,
                             pile_comm_op op, void *stream, pile_err *err);

/* The inverse: out[0..count) holds every rank's in[0..count / world_size)
 * in rank order. count must be a multiple of world_size. in is either out
 * + rank * (count / world_size) (in place) or does not overlap out. Any
 * dtype (a copy). */
int pile_comm_all_gather(pile_comm *c, void *out, const void *in, size_t count, pile_comm_dtype dt, void *stream,
                         pile_err *err);

/* buf[0..count) = rank root's buf, on every rank. Any dtype (a copy). */
int pile_comm_broadcast(pile_comm *c, void *buf, size_t count, pile_comm_dtype dt, int root, void *stream,
                        pile_err *err);

/* ---------------------------------------------------------- scalars
 * v[0..n) = op over all ranks of each rank's v, in place, in host memory,
 * finished when the call returns. Meant for a few values gathered into
 * one call (a step's token count; its loss sum and norm partial sum). */
int pile_comm_allreduce_f64(pile_comm *c, double *v, size_t n, pile_comm_op op, pile_err *err);
int pile_comm_allreduce_i64(pile_comm *c, int64_t *v, size_t n, pile_comm_op op, pile_err *err);

#ifdef __cplusplus
}
#endif

#endif
