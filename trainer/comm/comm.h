/* pile_comm: the collectives of data-parallel training, one object per
 * rank, apart from the compute backend (trainer/backend.h), so that the
 * same model and optimizer code runs on one process or many and a backend
 * never needs to know how ranks talk.
 *
 * What it owns: the rank's place in the job (rank, world size) and the
 * connection to the other ranks. What it does not own: every buffer it is
 * handed (the caller's, before and after each call) and any stream.
 *
 * Implementations, chosen by name at open (or by pile_comm_open_auto from
 * the launcher's environment):
 *  - "single": world size 1, rank 0. Every reduction is the identity and
 *    every gather or scatter a copy (or nothing, in place).
 *  - "mpi" (builds with Open MPI): host buffers between the processes of
 *    an MPI job (mpirun, srun with PMI/PMIx). MPI_Init_thread on the first
 *    open of the process, MPI_Finalize at the close of the last (MPI
 *    allows one of each per process: a process cannot open "mpi" again
 *    after closing its last one). A rank that dies is the launcher's to
 *    report: mpirun then ends every rank.
 *  - "tcp": host buffers between processes launched without MPI (torchrun,
 *    srun, `pile-trainer launch`): rank 0 serves a rendezvous on
 *    MASTER_PORT + 1, the ranks form a ring of sockets, and a peer that
 *    dies or stops answering for the timeout fails every rank's call with
 *    a message naming the operation and the peer, instead of a hang
 *    (comm_tcp.c). Reductions are in one fixed order per element, the
 *    same bits on every run.
 *  - "nccl" (builds with CUDA and NCCL): buffers in the memory of this
 *    rank's GPU, the device of its local rank (as the cuda backend's).
 *    Each tensor call is enqueued on the `stream` it is given (a
 *    cudaStream_t) and completes in that stream's order, so that gradient
 *    reduction can overlap the backward; a call given no stream waits for
 *    the device, runs and is finished at return, as the host ones are.
 *    It bootstraps over "mpi" or "tcp" (pile_comm_auto_name): rank 0's
 *    unique id goes out by pile_comm_broadcast_bytes, and that host
 *    communicator carries the scalars, the barrier and broadcast_bytes.
 *    The NCCL communicator is non-blocking: a watchdog polls its async
 *    error and each call's completion against the timeout, and on a
 *    failure or the timeout aborts it (ncclCommAbort), so that every
 *    rank's next call fails naming the operation and the rank instead of
 *    hanging (comm_nccl.c, comm_watchdog.h). It has not run on a GPU yet:
 *    it builds and links; the watchdog's logic is tested on the CPU, and
 *    the trainer's use of a device communicator (ZeRO 0 to 3, offload,
 *    checkpoints) through "devsim".
 *  - "devsim" (testing): "nccl"'s stand-in for the devsim backends
 *    (backend.h), whose tensors are host memory behind addresses the host
 *    cannot use. Its tensor calls take only such addresses: any other
 *    buffer (a host one) is refused with PILE_EINVAL naming the call, as
 *    a host buffer handed to "nccl" would be garbage to it. They are
 *    forwarded, untagged, to the job's host communicator ("mpi" or
 *    "tcp", pile_comm_auto_name), which carries the scalars, the barrier
 *    and broadcast_bytes too, as "nccl"'s bootstrap does. A call given
 *    a devsim backend's comm stream (pile_backend_comm_stream) is queued
 *    there and made only when the backend's ops are made to wait for the
 *    stream, its outputs poisoned until then (backend.h), so that a
 *    missing or misplaced ordering changes the bits; a call given no
 *    stream is finished at return. pile_comm_open_auto
 *    takes it with opt->device_comm, which the trainer takes from its
 *    backend (pile_backend_device_comm: "devsim" on the devsim backends).
 *
 * Buffers are plain (pointer, count, dtype) in the memory the
 * implementation works on (host memory for "single", "mpi" and "tcp",
 * device memory for "nccl" and "devsim"): pile_comm depends on no tensor
 * type. Scalars (token counts, loss sums, norm partial sums, overflow
 * flags) are host values in every implementation, and their call returns
 * with the result in place.
 *
 * Errors: 0 or a negative PILE_E* with *err filled. A call whose
 * arguments are wrong (a NULL buffer, a dtype the operation cannot reduce,
 * a count that does not divide over the ranks, a root out of range,
 * buffers that overlap other than in place) is refused with PILE_EINVAL
 * before anything is read or written, the same way by every
 * implementation. Every rank must make the same calls with the same
 * counts, dtypes and roots in the same order; one that does not is a bug
 * the "single" implementation cannot see ("tcp" fails every rank's call
 * saying how the calls differ; MPI's behaviour is undefined). A "nccl"
 * call given a stream returns 0 once enqueued: its own failure (a dead
 * peer, the timeout) fails the communicator's next call, of any kind.
 *
 * Not thread-safe: one caller thread per pile_comm ("nccl" runs a
 * watchdog thread of its own inside), but for its own
 * communication thread (pile_comm_thread_start, below): while that runs,
 * every call from any thread is handed to it and made there, in the order
 * the calls and submitted jobs came. */
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

/* ---------------------------------------------------------- launchers
 * Where this process stands in the job, from the environment its launcher
 * set, the way users already launch. */

typedef enum pile_comm_launcher {
    PILE_COMM_LAUNCHER_NONE = 0, /* no launcher: one rank */
    PILE_COMM_LAUNCHER_TORCHRUN, /* RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT */
    PILE_COMM_LAUNCHER_SLURM,    /* an srun step (SLURM_STEP_ID): SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, ... */
    PILE_COMM_LAUNCHER_OPENMPI,  /* mpirun: OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK, _LOCAL_SIZE */
    PILE_COMM_LAUNCHER_PMI,      /* MPICH's hydra (and srun --mpi=pmi2): PMI_RANK, PMI_SIZE */
} pile_comm_launcher;

/* Plain value struct. */
typedef struct pile_comm_env {
    pile_comm_launcher launcher;
    int rank, world_size;             /* 0 <= rank < world_size */
    int local_rank, local_world_size; /* on this machine; a GPU rank takes device local_rank */
    int mpi;                          /* 1: an MPI launcher started the job (mpirun, srun with PMI/PMIx) */
    /* Where rank 0 is (launchers without MPI): MASTER_ADDR, or under
     * Slurm the first host of SLURM_JOB_NODELIST; MASTER_PORT, or under
     * Slurm 29500 (torchrun's default). "" and 0 where there is none. */
    char master_addr[256];
    int master_port;
} pile_comm_env;

/* Reads the launcher's variables from envp (an `environ`-style array of
 * "NAME=value", NULL-terminated; NULL reads this process's environ).
 * Launchers are tried in this order, the first whose rank variable is set
 * winning: Open MPI, PMI, torchrun, Slurm (mpirun inside a Slurm job, or
 * torchrun started by srun, is the inner launcher that counts); none is
 * one rank, and so is an sbatch script itself (Slurm's variables without
 * an srun step's SLURM_STEP_ID). A launcher's variables that are set but
 * missing their partners, not whole numbers, or inconsistent (rank >=
 * world size, a local rank >= the local world size, a port out of range)
 * are PILE_EINVAL naming the variables. Local rank and size default to rank
 * and world size (one machine) where a launcher does not give them. */
int pile_comm_env_parse(pile_comm_env *env, const char *const *envp, pile_err *err);

/* The GPU this rank computes and communicates on, among the n_devices
 * it sees: its local rank (one process per GPU, as torchrun and DeepSpeed
 * do); or device 0 when it sees one device and CUDA_VISIBLE_DEVICES (read
 * from envp as pile_comm_env_parse reads it) names exactly one: a
 * launcher that binds one GPU to each rank (Slurm's --gpus-per-task 1).
 * Otherwise a local rank beyond them is PILE_EINVAL naming both, the
 * launcher and CUDA_VISIBLE_DEVICES. `what` begins the message ("cannot
 * open CUDA device"). */
int pile_comm_local_device(const pile_comm_env *env, int n_devices, const char *const *envp, const char *what,
                           int *device, pile_err *err);

/* "none", "torchrun", "slurm", "openmpi", "pmi" ("?" outside the enum). */
const char *pile_comm_launcher_name(pile_comm_launcher l);

/* --dist_timeout's default: how long the "tcp" rendezvous waits for every
 * rank, and how long a call waits for a peer that makes no progress
 * (torch.distributed's default, too). */
#define PILE_COMM_TIMEOUT_DEFAULT_S 600.0

typedef struct pile_comm_options {
    const pile_comm_env *env; /* NULL: pile_comm_env_parse of this process's environment */
    double timeout_s;         /* <= 0: PILE_COMM_TIMEOUT_DEFAULT_S */
    /* pile_comm_open_auto: 1 when the caller's tensors are in device
     * memory (a device backend's), which picks "nccl" for more than one
     * rank */
    int device_memory;
    /* with device_memory and more than one rank: the communicator to open
     * (pile_backend_device_comm: "nccl", or "devsim" for the devsim
     * backends); NULL: "nccl" */
    const char *device_comm;
} pile_comm_options;

/* Opens the communicator `name` ("single", "mpi", "tcp", "nccl",
 * "devsim") for this process's place in the job (opt may be NULL: the
 * environment and the default timeout). An unknown name, or one this build lacks, is
 * PILE_EINVAL naming those it has. *out is NULL on failure. */
int pile_comm_open_opts(pile_comm **out, const char *name, const pile_comm_options *opt, pile_err *err);

/* pile_comm_open_opts(out, name, NULL, err). */
int pile_comm_open(pile_comm **out, const char *name, pile_err *err);

/* The communicator the environment asks for: "single" for a world of one
 * rank, "mpi" under an MPI launcher, "tcp" under torchrun or srun
 * without MPI; with opt->device_memory and more than one rank, "nccl"
 * (or opt->device_comm).
 * Under an MPI launcher in a build without MPI, or for device memory in a
 * build without NCCL, it is PILE_EINVAL saying how to get it.
 * pile_comm_auto_name (host memory) and pile_comm_auto_name_for say
 * which, without opening anything (NULL and *err filled when none can
 * be). */
int pile_comm_open_auto(pile_comm **out, const pile_comm_options *opt, pile_err *err);
const char *pile_comm_auto_name(const pile_comm_env *env, pile_err *err);
const char *pile_comm_auto_name_for(const pile_comm_env *env, int device_memory, pile_err *err);
void pile_comm_close(pile_comm *c); /* accepts NULL */
/* Closes c after a failure of this rank that the others may not share
 * (an error in the middle of training, while they go on to their next
 * collective): nothing that waits for them. The comm's thread finishes
 * the job it is running (the other ranks run it too) and passes over the
 * rest. "mpi" does not finalize MPI, since MPI_Finalize waits for every
 * rank and the others, inside a collective, never come: the process must
 * then exit, with a failure, after saying why, and its launcher takes it
 * for a failed rank and ends the others (mpirun: "exiting improperly").
 * "tcp" closes its sockets, as at close: the others' next call fails
 * naming this rank. "nccl" and "devsim" abandon their host communicator.
 * Accepts NULL. */
void pile_comm_abandon(pile_comm *c);

const char *pile_comm_name(const pile_comm *c);
int pile_comm_rank(const pile_comm *c);       /* 0 .. world_size - 1 */
int pile_comm_world_size(const pile_comm *c); /* >= 1 */

/* 1 when c's tensor buffers are in device memory ("nccl", "devsim"), 0
 * when in host memory ("single", "mpi", "tcp"): a backend's tensors and
 * its communicator's must agree (the optimizer checks). */
int pile_comm_device_memory(const pile_comm *c);

/* Bytes of one element of dt (4 or 2); 0 for a value outside the enum. */
size_t pile_comm_dtype_size(pile_comm_dtype dt);

/* This rank's share of n elements cut into world_size ranges of
 * ceil(n / world_size) (the last ones shorter, perhaps empty): *offset and
 * *count. The ranges are disjoint and cover [0, n), so that per-rank
 * partial sums over them (a gradient norm's squares) add up to the whole. */
void pile_comm_partition(const pile_comm *c, size_t n, size_t *offset, size_t *count);

/* ---------------------------------------------------------- tensors
 * `stream`: where an implementation with streams enqueues the call
 * ("nccl": a cudaStream_t of its device, the backend's comm stream
 * (pile_backend_comm_stream); the call returns once enqueued and
 * completes in the stream's order, which the caller orders against its
 * ops with pile_backend_comm_wait_compute / _compute_wait_comm. NULL:
 * after all the work given to the device so far, finished when the call
 * returns). "devsim" queues it on a devsim backend's stream. "single",
 * "mpi" and "tcp" finish before returning and ignore it. */

/* buf[0..count) = op over all ranks of each rank's buf, in place. dt must
 * be PILE_COMM_F32. */
int pile_comm_allreduce(pile_comm *c, void *buf, size_t count, pile_comm_dtype dt, pile_comm_op op, void *stream,
                        pile_err *err);

/* Reduces in[0..count) over all ranks and leaves rank r the range
 * [r * count / world_size, (r + 1) * count / world_size) in
 * out[0..count / world_size). count must be a multiple of world_size (pad
 * it: pile_comm_partition's ranges are not all equal). out is either in +
 * rank * (count / world_size) (in place; the other ranks' ranges of in
 * are left as they were) or does not overlap in. dt must be
 * PILE_COMM_F32. */
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

/* buf[0..bytes) = rank root's, on every rank: opaque bytes (an NCCL
 * unique id at bootstrap), host memory in every implementation, finished
 * when the call returns. */
int pile_comm_broadcast_bytes(pile_comm *c, void *buf, size_t bytes, int root, pile_err *err);

/* Returns once every rank has called it (a checkpoint complete on every
 * rank before rank 0 renames its folder). */
int pile_comm_barrier(pile_comm *c, pile_err *err);

/* ---------------------------------------------------------- scalars
 * v[0..n) = op over all ranks of each rank's v, in place, in host memory,
 * finished when the call returns. Meant for a few values gathered into
 * one call (a step's token count; its loss sum and norm partial sum). */
int pile_comm_allreduce_f64(pile_comm *c, double *v, size_t n, pile_comm_op op, pile_err *err);
int pile_comm_allreduce_i64(pile_comm *c, int64_t *v, size_t n, pile_comm_op op, pile_err *err);

/* ---------------------------------------------------------- the communication thread
 * So that collectives overlap the caller's compute on the host
 * communicators ("mpi", "tcp"; "nccl" has streams for this): a thread of
 * the pile_comm that runs jobs, each a function that makes collectives on
 * the comm (and copies or adds the host buffers around them), one at a
 * time in the order they were submitted.
 *
 * While the thread runs it is the comm's one caller: every other call on
 * the comm (tensors, scalars, barrier; from any thread) is queued behind
 * the jobs submitted before it and returns once the thread has made it,
 * with its result. So each rank's calls reach the wire in its program
 * order, as without the thread, and a caller never needs to drain the
 * queue before a plain call. A job must not wait on the queue (it runs
 * on the thread that would have to finish it).
 *
 * A job that fails (a peer died: the call's message names the operation
 * and the ranks) fails the queue: the jobs after it are not run, and every
 * later wait, submit and call returns that first error. */

/* A job: ctx and arg as submitted; 0 or a negative PILE_E* with *err
 * filled. */
typedef int (*pile_comm_job_fn)(pile_comm *c, void *ctx, const size_t arg[3], pile_err *err);

/* Starts the comm's thread (once; PILE_EINVAL when it runs already;
 * PILE_EIO when no thread can be made). pile_comm_close drains and joins
 * it. */
int pile_comm_thread_start(pile_comm *c, pile_err *err);
/* 1 while the comm has its thread. */
int pile_comm_threaded(const pile_comm *c);

/* Queues fn(c, ctx, {a0, a1, a2}) behind every job and call before it and
 * returns at once, *ticket naming it for pile_comm_wait (ticket may be
 * NULL). Without the thread the job runs here before the call returns,
 * its result returned. ctx and whatever the job reads or writes belong to
 * the job until it is waited for. PILE_ENOMEM, or the queue's failure. */
int pile_comm_submit(pile_comm *c, pile_comm_job_fn fn, void *ctx, size_t a0, size_t a1, size_t a2,
                     uint64_t *ticket, pile_err *err);
/* Returns once the job `ticket` and all before it have run (0 or an old
 * ticket: at once): 0, or the queue's failure. Without the thread: 0. */
int pile_comm_wait(pile_comm *c, uint64_t ticket, pile_err *err);
/* Waits for every job submitted so far. */
int pile_comm_drain(pile_comm *c, pile_err *err);

#ifdef __cplusplus
}
#endif

#endif
