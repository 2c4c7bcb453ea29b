/* The "mpi" communicator: pile_comm's calls on MPI collectives over host
 * buffers, for the processes of an MPI job (mpirun, srun with PMI/PMIx).
 * Each communicator works on its own duplicate of MPI_COMM_WORLD with
 * errors returned, not fatal, so that a failure becomes a pile_err naming
 * the call. MPI counts are ints: larger buffers go in pieces of at most
 * PIECE elements. comm.c has checked every argument before these run. */
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm_internal.h"

/* Documented global state (comm.h): how many "mpi" communicators are
 * open, so that the last close finalizes what the first open initialized;
 * and whether this file initialized MPI at all (a program that did it
 * itself keeps it). */
static int n_open;
static int we_initialized;
static int abandoned; /* a communicator was abandoned: MPI is never finalized (mpi_abandon) */

/* Elements per MPI call: below INT_MAX, a multiple of everything. */
#define PIECE ((size_t)1 << 30)

typedef struct mpi_comm {
    MPI_Comm comm;
    int rank, world_size;
} mpi_comm;

static int mpi_fail(pile_err *err, int code, const char *fmt_what, size_t count, const char *unit)
{
    char text[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "MPI error %d", code);
    return pile_err_set(err, PILE_EIO, "cannot %s %zu %s over MPI: %s", fmt_what, count, unit, text);
}

#define MPI_CHECK(call, what, count, unit)                           \
    do {                                                             \
        int mpi_rc_ = (call);                                        \
        if (mpi_rc_ != MPI_SUCCESS) return mpi_fail(err, mpi_rc_, what, count, unit); \
    } while (0)

static void mpi_close(void *impl);

static int mpi_open(void **impl, const pile__comm_setup *setup, int *rank, int *world_size, pile_err *err)
{
    *impl = NULL;
    int inited = 0, finalized = 0;
    MPI_Finalized(&finalized);
    PILE_RETURN_IF(finalized, err, PILE_EINVAL,
                   "cannot open communicator 'mpi': MPI was finalized in this process (MPI allows one "
                   "MPI_Init per process)");
    MPI_Initialized(&inited);
    if (!inited) {
        /* serialized: the caller may be a thread of its own (collectives
         * beside the backward), one at a time (comm.h: not thread-safe) */
        int provided = MPI_THREAD_SINGLE;
        int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided);
        PILE_RETURN_IF(rc != MPI_SUCCESS, err, PILE_EIO, "cannot open communicator 'mpi': MPI_Init_thread failed (%d)",
                       rc);
        we_initialized = 1;
        if (provided < MPI_THREAD_SERIALIZED) {
            MPI_Finalize();
            return pile_err_set(err, PILE_EIO,
                                "cannot open communicator 'mpi': this MPI gives thread level %d, not "
                                "MPI_THREAD_SERIALIZED",
                                provided);
        }
    }
    mpi_comm *m = calloc(1, sizeof *m);
    int rc = m ? MPI_Comm_dup(MPI_COMM_WORLD, &m->comm) : MPI_SUCCESS;
    if (!m || rc != MPI_SUCCESS) {
        free(m);
        if (n_open == 0 && we_initialized) MPI_Finalize();
        return m ? mpi_fail(err, rc, "open a communicator of", 0, "ranks")
                 : pile_err_set(err, PILE_ENOMEM, "out of memory");
    }
    n_open++;
    MPI_Comm_set_errhandler(m->comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(m->comm, &m->rank);
    MPI_Comm_size(m->comm, &m->world_size);
    const pile_comm_env *env = setup->env;
    /* a launcher the environment names but MPI does not see (an mpirun of
     * another MPI than this build's gives every rank a world of one) */
    if (env->mpi && (env->rank != m->rank || env->world_size != m->world_size)) {
        pile_err_set(err, PILE_EMISMATCH,
                     "cannot open communicator 'mpi': the environment (%s) says rank %d of %d, MPI says rank %d of "
                     "%d (was the job started by the mpirun of the MPI this build uses, Open MPI?)",
                     pile_comm_launcher_name(env->launcher), env->rank, env->world_size, m->rank, m->world_size);
        mpi_close(m);
        return PILE_EMISMATCH;
    }
    *impl = m;
    *rank = m->rank;
    *world_size = m->world_size;
    return 0;
}

static void mpi_close(void *impl)
{
    mpi_comm *m = impl;
    if (!m) return;
    MPI_Comm_free(&m->comm);
    free(m);
    if (--n_open == 0 && we_initialized && !abandoned) MPI_Finalize();
}

/* pile_comm_abandon: MPI_Comm_free is collective, and MPI_Finalize
 * waits for every rank (Open MPI's ends with a fence of all of them):
 * neither, and no MPI_Finalize later in this process either. */
static void mpi_abandon(void *impl)
{
    if (!impl) return;
    free(impl);
    n_open--;
    abandoned = 1;
}

static MPI_Op mpi_op(pile_comm_op op)
{
    return op == PILE_COMM_MAX ? MPI_MAX : MPI_SUM;
}

/* The type of raw copies: the bits of each element, whatever it holds. */
static MPI_Datatype copy_type(pile_comm_dtype dt)
{
    return dt == PILE_COMM_F32 ? MPI_FLOAT : MPI_UINT16_T;
}

static int allreduce_pieces(mpi_comm *m, void *buf, size_t count, size_t es, MPI_Datatype t, pile_comm_op op,
                            const char *unit, pile_err *err)
{
    for (size_t at = 0; at < count; at += PIECE) {
        const size_t n = count - at < PIECE ? count - at : PIECE;
        MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, (char *)buf + at * es, (int)n, t, mpi_op(op), m->comm), "allreduce",
                  count, unit);
    }
    return 0;
}

static int mpi_allreduce(void *impl, void *buf, size_t count, pile_comm_dtype dt, pile_comm_op op, void *stream,
                         pile_err *err)
{
    (void)dt, (void)stream;
    return allreduce_pieces(impl, buf, count, 4, MPI_FLOAT, op, "fp32 elements", err);
}

static int mpi_reduce_scatter(void *impl, void *out, const void *in, size_t count, pile_comm_dtype dt,
                              pile_comm_op op, void *stream, pile_err *err)
{
    (void)dt, (void)stream;
    mpi_comm *m = impl;
    const size_t share = count / (size_t)m->world_size;
    const int in_place = out == (const char *)in + (size_t)m->rank * share * 4;
    if (!in_place && share <= PIECE) {
        MPI_CHECK(MPI_Reduce_scatter_block(in, out, (int)share, MPI_FLOAT, mpi_op(op), m->comm), "reduce-scatter",
                  count, "fp32 elements");
        return 0;
    }
    /* in place (MPI's own in-place form would overwrite other ranks'
     * shares of `in`) or too large for one call: each rank's share
     * reduced to it in turn */
    for (int r = 0; r < m->world_size; r++) {
        const float *src = (const float *)in + (size_t)r * share;
        for (size_t at = 0; at < share; at += PIECE) {
            const size_t n = share - at < PIECE ? share - at : PIECE;
            const void *send = r == m->rank && in_place ? MPI_IN_PLACE : (const void *)(src + at);
            void *recv = r == m->rank ? (float *)out + at : NULL;
            MPI_CHECK(MPI_Reduce(send, recv, (int)n, MPI_FLOAT, mpi_op(op), r, m->comm), "reduce-scatter", count,
                      "fp32 elements");
        }
    }
    return 0;
}

static int mpi_all_gather(void *impl, void *out, const void *in, size_t count, pile_comm_dtype dt, void *stream,
                          pile_err *err)
{
    (void)stream;
    mpi_comm *m = impl;
    const size_t es = pile_comm_dtype_size(dt), share = count / (size_t)m->world_size;
    char *mine = (char *)out + (size_t)m->rank * share * es;
    const int in_place = in == mine;
    if (share <= PIECE) {
        MPI_CHECK(MPI_Allgather(in_place ? MPI_IN_PLACE : in, (int)share, copy_type(dt), out, (int)share,
                                copy_type(dt), m->comm),
                  "all-gather", count, "elements");
        return 0;
    }
    if (!in_place) memcpy(mine, in, share * es);
    for (int r = 0; r < m->world_size; r++)
        for (size_t at = 0; at < share; at += PIECE) {
            const size_t n = share - at < PIECE ? share - at : PIECE;
            MPI_CHECK(MPI_Bcast((char *)out + ((size_t)r * share + at) * es, (int)n, copy_type(dt), r, m->comm),
                      "all-gather", count, "elements");
        }
    return 0;
}

static int mpi_broadcast_bytes(void *impl, void *buf, size_t bytes, int root, pile_err *err)
{
    mpi_comm *m = impl;
    for (size_t at = 0; at < bytes; at += PIECE) {
        const size_t n = bytes - at < PIECE ? bytes - at : PIECE;
        MPI_CHECK(MPI_Bcast((char *)buf + at, (int)n, MPI_BYTE, root, m->comm), "broadcast", bytes, "bytes");
    }
    return 0;
}

static int mpi_broadcast(void *impl, void *buf, size_t count, pile_comm_dtype dt, int root, void *stream,
                         pile_err *err)
{
    (void)stream;
    return mpi_broadcast_bytes(impl, buf, count * pile_comm_dtype_size(dt), root, err);
}

static int mpi_allreduce_f64(void *impl, double *v, size_t n, pile_comm_op op, pile_err *err)
{
    return allreduce_pieces(impl, v, n, 8, MPI_DOUBLE, op, "fp64 values", err);
}

static int mpi_allreduce_i64(void *impl, int64_t *v, size_t n, pile_comm_op op, pile_err *err)
{
    return allreduce_pieces(impl, v, n, 8, MPI_INT64_T, op, "int64 values", err);
}

static int mpi_barrier(void *impl, pile_err *err)
{
    mpi_comm *m = impl;
    MPI_CHECK(MPI_Barrier(m->comm), "wait at a barrier for", (size_t)m->world_size, "ranks");
    return 0;
}

const pile__comm_ops pile__comm_mpi_ops = {
    .name = "mpi",
    .open = mpi_open,
    .close = mpi_close,
    .abandon = mpi_abandon,
    .allreduce = mpi_allreduce,
    .reduce_scatter = mpi_reduce_scatter,
    .all_gather = mpi_all_gather,
    .broadcast = mpi_broadcast,
    .allreduce_f64 = mpi_allreduce_f64,
    .allreduce_i64 = mpi_allreduce_i64,
    .broadcast_bytes = mpi_broadcast_bytes,
    .barrier = mpi_barrier,
};
