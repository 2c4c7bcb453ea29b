/* Tests of pile_comm (trainer/comm/comm.h): the "single" communicator on
 * every call, shape and element type (values come back bit for bit, NaN
 * payloads and negative zeros included; copies only where the result
 * lives elsewhere), counts of 0, and each refusal. A test table standing
 * for rank 1 of 2 or 3 (comm_internal.h) drives what one rank cannot
 * show: counts that do not divide over the ranks, a root out of range,
 * the in-place shares of other ranks, partitions, and that a refused call
 * never reaches the implementation; and the communication thread: jobs
 * and other threads' calls in submission order on that thread, submit
 * returning before its job runs, and a failed job failing what follows;
 * the "devsim" communicator taking a devsim backend's tensors and
 * refusing host buffers. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include <uv.h>

#include "backend.h"
#include "comm/comm.h"
#include "comm/comm_internal.h"
#include "pile_test.h"

/* The communicators this build has, in comm.c's order. */
#ifdef PILE_HAVE_MPI
#define HAS_MPI ", mpi"
#else
#define HAS_MPI ""
#endif
#ifdef PILE_HAVE_NCCL
#define HAS_NCCL ", nccl"
#else
#define HAS_NCCL ""
#endif
#define BUILD_HAS "single" HAS_MPI ", tcp" HAS_NCCL ", devsim"

/* expr fails with PILE_EINVAL and a message holding `word`. */
#define REFUSED(expr, errp, word)                                                                       \
    do {                                                                                                \
        (errp)->msg[0] = '\0';                                                                          \
        int r_rc_ = (expr);                                                                             \
        if (r_rc_ != PILE_EINVAL || !strstr((errp)->msg, (word)))                                       \
            PILE_FAIL_("%s returned %d (%s), want PILE_EINVAL naming '%s'", #expr, r_rc_, (errp)->msg, \
                       (word));                                                                         \
    } while (0)

/* Bit patterns no arithmetic would keep: a NaN with a payload, -0, the
 * infinities, a subnormal. */
static void fill_f32(float *x, size_t n, uint32_t salt)
{
    static const uint32_t special[] = {0x7fc01234u, 0x80000000u, 0x7f800000u, 0xff800000u, 0x00000001u};
    for (size_t i = 0; i < n; i++) {
        uint32_t b = i < 5 ? special[i] : (uint32_t)(i * 2654435761u) ^ salt;
        memcpy(&x[i], &b, 4);
    }
}

static void fill_u16(uint16_t *x, size_t n, uint16_t salt)
{
    for (size_t i = 0; i < n; i++) x[i] = (uint16_t)(i * 40503u) ^ salt;
}

/* ------------------------------------------------------------ single */

static void test_open(void)
{
    TEST("single: open, name, rank 0 of 1; unknown names refused, naming what there is");
    pile_err err;
    pile_comm *c = NULL;
    OK(pile_comm_open(&c, "single", &err), &err);
    ASSERT(c != NULL);
    if (!c) return;
    ASSERT_STR_EQ(pile_comm_name(c), "single");
    ASSERT_EQ(pile_comm_rank(c), 0);
    ASSERT_EQ(pile_comm_world_size(c), 1);
    pile_comm_close(c);
    pile_comm_close(NULL);

    pile_comm *bad = (pile_comm *)&err; /* must be reset to NULL */
    ASSERT_EQ(pile_comm_open(&bad, "gloo", &err), PILE_EINVAL);
    ASSERT(bad == NULL);
    ASSERT_STR_EQ(err.msg, "unknown communicator 'gloo' (this build has: " BUILD_HAS ")");
    bad = (pile_comm *)&err;
    ASSERT_EQ(pile_comm_open(&bad, NULL, &err), PILE_EINVAL);
    ASSERT(bad == NULL);
    REFUSED(pile_comm_open(&bad, "", &err), &err, "unknown communicator ''");
}

static void test_device_memory(void)
{
    TEST("memory: the host communicators take host memory; device memory picks 'nccl' for more than one rank");
    pile_err err;
    pile_comm *c = NULL;
    OK(pile_comm_open(&c, "single", &err), &err);
    if (c) ASSERT_EQ(pile_comm_device_memory(c), 0);
    pile_comm_close(c);
    pile_comm_env e;
    memset(&e, 0, sizeof e);
    e.launcher = PILE_COMM_LAUNCHER_TORCHRUN;
    e.rank = 1;
    e.world_size = e.local_world_size = 2;
    e.local_rank = 1;
    ASSERT_STR_EQ(pile_comm_auto_name_for(&e, 0, &err), "tcp");
#ifdef PILE_HAVE_NCCL
    ASSERT_STR_EQ(pile_comm_auto_name_for(&e, 1, &err), "nccl");
#else
    ASSERT(pile_comm_auto_name_for(&e, 1, &err) == NULL);
    ASSERT_EQ(err.code, PILE_EINVAL);
    ASSERT(strstr(err.msg, "cannot run as rank 1 of 2 on a device's memory: this build has no communicator") != NULL);
#endif
    e.rank = e.local_rank = 0;
    e.world_size = e.local_world_size = 1;
    ASSERT_STR_EQ(pile_comm_auto_name_for(&e, 1, &err), "single"); /* one rank: nothing to communicate */

#ifdef PILE_HAVE_NCCL
    TEST("nccl: one rank on this machine's GPU, or refused saying there is none");
    const pile_comm_options o = {.env = &e, .timeout_s = 60};
    int rc = pile_comm_open_opts(&c, "nccl", &o, &err);
    if (rc == 0) {
        /* a GPU machine (tools/gpu-check.sh): tests/gpu/test_nccl.c does the collectives */
        ASSERT_STR_EQ(pile_comm_name(c), "nccl");
        ASSERT_EQ(pile_comm_device_memory(c), 1);
        ASSERT_EQ(pile_comm_world_size(c), 1);
        int64_t v = 5;
        OK(pile_comm_allreduce_i64(c, &v, 1, PILE_COMM_SUM, &err), &err);
        ASSERT_EQ(v, 5);
        pile_comm_close(c);
    } else {
        ASSERT_EQ(rc, PILE_EIO);
        ASSERT(c == NULL);
        ASSERT(strstr(err.msg, "cannot open communicator 'nccl': no CUDA device") != NULL);
    }
    /* a local rank beyond the devices, as on a machine given too many ranks */
    e.local_rank = 1000;
    e.local_world_size = 1001;
    ASSERT(pile_comm_open_opts(&c, "nccl", &o, &err) < 0);
    ASSERT(c == NULL);
    ASSERT(strstr(err.msg, "cannot open communicator 'nccl'") != NULL);
#endif
}

static void test_devsim(void)
{
    TEST("devsim: a devsim backend's tensors go through untagged, on device memory; host buffers refused naming the "
         "call");
    pile_err err;
    pile_comm_env e;
    memset(&e, 0, sizeof e);
    e.world_size = e.local_world_size = 1;
    const pile_comm_options o = {.env = &e, .timeout_s = 60};
    pile_comm *c = NULL;
    pile_backend *be = NULL;
    OK(pile_comm_open_opts(&c, "devsim", &o, &err), &err);
    OK(pile_backend_open(&be, "devsim", 1, &err), &err);
    if (!c || !be) {
        pile_comm_close(c);
        pile_backend_close(be);
        return;
    }
    ASSERT_STR_EQ(pile_comm_name(c), "devsim");
    ASSERT_EQ(pile_comm_device_memory(c), 1);
    ASSERT_EQ(pile_comm_world_size(c), 1);
    float h[9], got[9], host[9];
    fill_f32(h, 9, 0x5eedu);
    memset(host, 0, sizeof host);
    pile_tensor a = pile_backend_alloc(be, PILE_DTYPE_F32, 9), b = pile_backend_alloc(be, PILE_DTYPE_F32, 9);
    ASSERT(a.data && b.data && pile_backend_devsim_host_address(a.data) != NULL);
    ASSERT(pile_backend_devsim_host_address(host) == NULL && pile_backend_devsim_host_address(NULL) == NULL);
    pile_backend_upload(be, a, h, 9);
    /* "single" underneath copies through the untagged addresses: a tagged
     * one would fault there */
    OK(pile_comm_all_gather(c, b.data, a.data, 9, PILE_COMM_F32, NULL, &err), &err);
    pile_backend_download(be, got, b, 9);
    ASSERT(memcmp(got, h, sizeof h) == 0);
    pile_backend_zero(be, b, 9);
    OK(pile_comm_reduce_scatter(c, b.data, a.data, 9, PILE_COMM_F32, PILE_COMM_SUM, NULL, &err), &err);
    pile_backend_download(be, got, b, 9);
    ASSERT(memcmp(got, h, sizeof h) == 0);
    OK(pile_comm_allreduce(c, a.data, 9, PILE_COMM_F32, PILE_COMM_SUM, NULL, &err), &err);
    OK(pile_comm_broadcast(c, pile_tensor_slice(a, 2, 7).data, 7, PILE_COMM_BF16, 0, NULL, &err), &err);
    REFUSED(pile_comm_allreduce(c, host, 9, PILE_COMM_F32, PILE_COMM_SUM, NULL, &err), &err, "cannot allreduce: 0x");
    ASSERT(strstr(err.msg, "is a host buffer, and the 'devsim' communicator takes device memory only") != NULL);
    REFUSED(pile_comm_reduce_scatter(c, host, a.data, 9, PILE_COMM_F32, PILE_COMM_SUM, NULL, &err), &err,
            "cannot reduce-scatter: 0x");
    REFUSED(pile_comm_reduce_scatter(c, b.data, host, 9, PILE_COMM_F32, PILE_COMM_SUM, NULL, &err), &err,
            "cannot reduce-scatter: 0x");
    REFUSED(pile_comm_all_gather(c, host, a.data, 9, PILE_COMM_F32, NULL, &err), &err, "cannot all-gather: 0x");
    REFUSED(pile_comm_all_gather(c, b.data, host, 9, PILE_COMM_F32, NULL, &err), &err, "cannot all-gather: 0x");
    REFUSED(pile_comm_broadcast(c, host, 9, PILE_COMM_F16, 0, NULL, &err), &err, "cannot broadcast: 0x");
    pile_backend_download(be, got, a, 9);
    ASSERT(memcmp(got, h, sizeof h) == 0);
    /* scalars, bytes and the barrier are host memory, as for every communicator */
    int64_t v = 3;
    double d = 0.5;
    OK(pile_comm_allreduce_i64(c, &v, 1, PILE_COMM_MAX, &err), &err);
    OK(pile_comm_allreduce_f64(c, &d, 1, PILE_COMM_SUM, &err), &err);
    OK(pile_comm_broadcast_bytes(c, host, sizeof host, 0, &err), &err);
    OK(pile_comm_barrier(c, &err), &err);
    ASSERT(v == 3 && d == 0.5);
    pile_backend_free(&a);
    pile_backend_free(&b);
    pile_backend_close(be);
    pile_comm_close(c);
}

static void test_dtype_and_partition(void)
{
    TEST("single: element sizes; the partition of n is [0, n)");
    ASSERT_EQ(pile_comm_dtype_size(PILE_COMM_F32), 4);
    ASSERT_EQ(pile_comm_dtype_size(PILE_COMM_BF16), 2);
    ASSERT_EQ(pile_comm_dtype_size(PILE_COMM_F16), 2);
    ASSERT_EQ(pile_comm_dtype_size((pile_comm_dtype)7), 0);
    pile_err err;
    pile_comm *c = NULL;
    OK(pile_comm_open(&c, "single", &err), &err);
    if (!c) return;
    static const size_t ns[] = {0, 1, 7, 124439808};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        size_t off = 99, cnt = 99;
        pile_comm_partition(c, ns[i], &off, &cnt);
        ASSERT_EQ(off, 0);
        ASSERT_EQ(cnt, ns[i]);
    }
    pile_comm_close(c);
}

static void test_allreduce(void)
{
    TEST("single: allreduce sum and max of fp32 leave every bit; scalars too; count 0 takes NULL");
    pile_err err;
    pile_comm *c = NULL;
    OK(pile_comm_open(&c, "single", &err), &err);
    if (!c) return;
    static const size_t ns[] = {1, 5, 17, 4096};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        float x[4096], want[4096];
        fill_f32(x, ns[k], (uint32_t)k);
        memcpy(want, x, ns[k] * sizeof *x);
        OK(pile_comm_allreduce(c, x, ns[k], PILE_COMM_F32, PILE_COMM_SUM, NULL, &err), &err);
        ASSERT_MEM_EQ(x, want, ns[k] * sizeof *x);
        OK(pile_comm_allreduce(c, x, ns[k], PILE_COMM_F32, PILE_COMM_MAX, NULL, &err), &err);
        ASSERT_MEM_EQ(x, want, ns[k] * sizeof *x);
    }
    OK(pile_comm_allreduce(c, NULL, 0, PILE_COMM_F32, PILE_COMM_SUM, NULL, &err), &err);

    double d[4] = {3.5, -0.0, NAN, INFINITY}, dwant[4];
    memcpy(dwant, d, sizeof d);
    OK(pile_comm_allreduce_f64(c, d, 4, PILE_COMM_SUM, &err), &err);
    OK(pile_comm_allreduce_f64(c, d, 4, PILE_COMM_MAX, &err), &err);
    ASSERT_MEM_EQ(d, dwant, sizeof d);
    int64_t v[3] = {INT64_MIN, 0, INT64_MAX}, vwant[3];
    memcpy(vwant, v, sizeof v);
    OK(pile_comm_allreduce_i64(c, v, 3, PILE_COMM_SUM, &err), &err);
    OK(pile_comm_allreduce_i64(c, v, 3, PILE_COMM_MAX, &err), &err);
    ASSERT_MEM_EQ(v, vwant, sizeof v);
    OK(pile_comm_allreduce_f64(c, NULL, 0, PILE_COMM_SUM, &err), &err);
    OK(pile_comm_allreduce_i64(c, NULL, 0, PILE_COMM_MAX, &err), &err);
    pile_comm_close(c);
}

static void test_copies(void)
{
    TEST("single: reduce-scatter and all-gather copy (any dtype for all-gather), in place leaves the buffer");
    pile_err err;
    pile_comm *c = NULL;
    OK(pile_comm_open(&c, "single", &err), &err);
    if (!c) return;
    static const size_t ns[] = {1, 3, 64, 1000};
    for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
        const size_t n = ns[k];
        float in[1000], out[1001], keep[1000];
        fill_f32(in, n, 0x55u + (uint32_t)k);
        memcpy(keep, in, n * sizeof *in);
        memset(out, 0xAB, sizeof out);
        OK(pile_comm_reduce_scatter(c, out, in, n, PILE_COMM_F32, PILE_COMM_SUM, NULL, &err), &err);
        ASSERT_MEM_EQ(out, in, n * sizeof *in);
        ASSERT_MEM_EQ(in, keep, n * sizeof *in);
        ASSERT_EQ(((unsigned char *)out)[n * sizeof *out], 0xAB); /* nothing past the share */
        OK(pile_comm_reduce_scatter(c, in, in, n, PILE_COMM_F32, PILE_COMM_MAX, NULL, &err), &err);
        ASSERT_MEM_EQ(in, keep, n * sizeof *in);
        memset(out, 0xAB, sizeof out);
        OK(pile_comm_all_gather(c, out, in, n, PILE_COMM_F32, NULL, &err), &err);
        ASSERT_MEM_EQ(out, in, n * sizeof *in);
        ASSERT_EQ(((unsigned char *)out)[n * sizeof *out], 0xAB);
        OK(pile_comm_all_gather(c, in, in, n, PILE_COMM_F32, NULL, &err), &err);
        ASSERT_MEM_EQ(in, keep, n * sizeof *in);

        /* 16-bit elements as raw 2-byte values: every pattern kept, NaNs too */
        const pile_comm_dtype d16[] = {PILE_COMM_BF16, PILE_COMM_F16};
        for (int t = 0; t < 2; t++) {
            uint16_t h[1000], hout[1001];
            fill_u16(h, n, (uint16_t)(0x7e01u + t));
            memset(hout, 0xAB, sizeof hout);
            OK(pile_comm_all_gather(c, hout, h, n, d16[t], NULL, &err), &err);
            ASSERT_MEM_EQ(hout, h, n * sizeof *h);
            ASSERT_EQ(hout[n], 0xABAB);
        }
    }
    OK(pile_comm_reduce_scatter(c, NULL, NULL, 0, PILE_COMM_F32, PILE_COMM_SUM, NULL, &err), &err);
    OK(pile_comm_all_gather(c, NULL, NULL, 0, PILE_COMM_BF16, NULL, &err), &err);
    pile_comm_close(c);
}

static void test_broadcast(void)
{
    TEST("single: broadcast from rank 0 leaves the buffer, every dtype; another root refused");
    pile_err err;
    pile_comm *c = NULL;
    OK(pile_comm_open(&c, "single", &err), &err);
    if (!c) return;
    float x[9], keep[9];
    fill_f32(x, 9, 3);
    memcpy(keep, x, sizeof x);
    OK(pile_comm_broadcast(c, x, 9, PILE_COMM_F32, 0, NULL, &err), &err);
    ASSERT_MEM_EQ(x, keep, sizeof x);
    uint16_t h[9], hkeep[9];
    fill_u16(h, 9, 0x7c00u);
    memcpy(hkeep, h, sizeof h);
    OK(pile_comm_broadcast(c, h, 9, PILE_COMM_BF16, 0, NULL, &err), &err);
    OK(pile_comm_broadcast(c, h, 9, PILE_COMM_F16, 0, NULL, &err), &err);
    ASSERT_MEM_EQ(h, hkeep, sizeof h);
    OK(pile_comm_broadcast(c, NULL, 0, PILE_COMM_F32, 0, NULL, &err), &err);
    REFUSED(pile_comm_broadcast(c, x, 9, PILE_COMM_F32, 1, NULL, &err), &err,
            "cannot broadcast from rank 1: the world has ranks 0 to 0");
    REFUSED(pile_comm_broadcast(c, x, 9, PILE_COMM_F32, -1, NULL, &err), &err, "from rank -1");
    ASSERT_MEM_EQ(x, keep, sizeof x);
    pile_comm_close(c);
}

static void test_refusals(void)
{
    TEST("single: wrong calls refused before anything is touched");
    pile_err err;
    pile_comm *c = NULL;
    OK(pile_comm_open(&c, "single", &err), &err);
    if (!c) return;
    float x[8], keep[8], out[8];
    fill_f32(x, 8, 9);
    memcpy(keep, x, sizeof x);
    memset(out, 0, sizeof out);
    /* 16-bit reductions: gradients are reduced in fp32 */
    REFUSED(pile_comm_allreduce(c, x, 4, PILE_COMM_BF16, PILE_COMM_SUM, NULL, &err), &err,
            "cannot allreduce bf16 elements: reductions take fp32");
    REFUSED(pile_comm_reduce_scatter(c, out, x, 4, PILE_COMM_F16, PILE_COMM_SUM, NULL, &err), &err,
            "cannot reduce-scatter fp16 elements");
    /* unknown op and dtype */
    REFUSED(pile_comm_allreduce(c, x, 8, PILE_COMM_F32, (pile_comm_op)2, NULL, &err), &err, "unknown operation 2");
    REFUSED(pile_comm_allreduce(c, x, 8, (pile_comm_dtype)9, PILE_COMM_SUM, NULL, &err), &err,
            "unknown element type 9");
    REFUSED(pile_comm_all_gather(c, out, x, 8, (pile_comm_dtype)-1, NULL, &err), &err, "unknown element type -1");
    REFUSED(pile_comm_allreduce_f64(c, (double *)out, 1, (pile_comm_op)-1, &err), &err, "unknown operation -1");
    REFUSED(pile_comm_allreduce_i64(c, (int64_t *)out, 1, (pile_comm_op)5, &err), &err, "unknown operation 5");
    /* no buffer */
    REFUSED(pile_comm_allreduce(c, NULL, 3, PILE_COMM_F32, PILE_COMM_SUM, NULL, &err), &err,
            "cannot allreduce 3 elements: no buffer");
    REFUSED(pile_comm_reduce_scatter(c, NULL, x, 8, PILE_COMM_F32, PILE_COMM_SUM, NULL, &err), &err, "no buffer");
    REFUSED(pile_comm_reduce_scatter(c, out, NULL, 8, PILE_COMM_F32, PILE_COMM_SUM, NULL, &err), &err, "no buffer");
    REFUSED(pile_comm_all_gather(c, NULL, x, 8, PILE_COMM_F32, NULL, &err), &err, "cannot all-gather 8 elements");
    REFUSED(pile_comm_broadcast(c, NULL, 2, PILE_COMM_F16, 0, NULL, &err), &err, "cannot broadcast 2 elements");
    REFUSED(pile_comm_allreduce_f64(c, NULL, 2, PILE_COMM_SUM, &err), &err, "cannot allreduce 2 values: no buffer");
    REFUSED(pile_comm_allreduce_i64(c, NULL, 1, PILE_COMM_MAX, &err), &err, "no buffer");
    /* more bytes than a size_t counts */
    REFUSED(pile_comm_allreduce(c, x, SIZE_MAX / 2, PILE_COMM_F32, PILE_COMM_SUM, NULL, &err), &err,
            "more bytes than memory holds");
    /* overlapping, not in place: x and x + 1 share 7 elements */
    REFUSED(pile_comm_reduce_scatter(c, x + 1, x, 7, PILE_COMM_F32, PILE_COMM_SUM, NULL, &err), &err,
            "cannot reduce-scatter: the buffers overlap, and not as rank 0's share of the whole (in place)");
    REFUSED(pile_comm_reduce_scatter(c, x, x + 1, 7, PILE_COMM_F32, PILE_COMM_SUM, NULL, &err), &err, "overlap");
    REFUSED(pile_comm_all_gather(c, x + 2, x, 4, PILE_COMM_F32, NULL, &err), &err,
            "cannot all-gather: the buffers overlap");
    /* adjacent is not overlapping */
    OK(pile_comm_all_gather(c, x + 4, x, 4, PILE_COMM_F32, NULL, &err), &err);
    ASSERT_MEM_EQ(x + 4, keep, 4 * sizeof *x);
    ASSERT_MEM_EQ(x, keep, 4 * sizeof *x);
    pile_comm_close(c);
}

/* -------------------------------------------- a rank of a larger world */

/* Stands for rank `rank` of `world`: records the calls that reach it. */
static int fake_rank = 1, fake_world = 2, fake_calls, fake_closed, fake_open_rc;
static size_t fake_count;

static int fake_open(void **impl, const pile__comm_setup *setup, int *rank, int *world_size, pile_err *err)
{
    (void)setup;
    *impl = &fake_calls;
    *rank = fake_rank;
    *world_size = fake_world;
    if (fake_open_rc < 0) return pile_err_set(err, fake_open_rc, "cannot reach the other ranks");
    return 0;
}

static void fake_close(void *impl)
{
    if (impl == &fake_calls) fake_closed++;
}

static int fake_allreduce(void *impl, void *buf, size_t count, pile_comm_dtype dt, pile_comm_op op, void *stream,
                          pile_err *err)
{
    (void)impl, (void)buf, (void)dt, (void)op, (void)stream, (void)err;
    fake_calls++;
    fake_count = count;
    return 0;
}

static int fake_reduce_scatter(void *impl, void *out, const void *in, size_t count, pile_comm_dtype dt,
                               pile_comm_op op, void *stream, pile_err *err)
{
    (void)impl, (void)out, (void)in, (void)dt, (void)op, (void)stream, (void)err;
    fake_calls++;
    fake_count = count;
    return 0;
}

static int fake_all_gather(void *impl, void *out, const void *in, size_t count, pile_comm_dtype dt, void *stream,
                           pile_err *err)
{
    (void)impl, (void)out, (void)in, (void)dt, (void)stream, (void)err;
    fake_calls++;
    fake_count = count;
    return 0;
}

static int fake_broadcast(void *impl, void *buf, size_t count, pile_comm_dtype dt, int root, void *stream,
                          pile_err *err)
{
    (void)impl, (void)buf, (void)dt, (void)root, (void)stream, (void)err;
    fake_calls++;
    fake_count = count;
    return 0;
}

static int fake_allreduce_f64(void *impl, double *v, size_t n, pile_comm_op op, pile_err *err)
{
    (void)impl, (void)v, (void)op;
    /* a failure of the transport comes back as the caller's error */
    return n == 13 ? pile_err_set(err, PILE_EIO, "rank 0 went away") : (fake_calls++, 0);
}

static int fake_allreduce_i64(void *impl, int64_t *v, size_t n, pile_comm_op op, pile_err *err)
{
    (void)impl, (void)v, (void)n, (void)op, (void)err;
    fake_calls++;
    return 0;
}

static int fake_broadcast_bytes(void *impl, void *buf, size_t bytes, int root, pile_err *err)
{
    (void)impl, (void)buf, (void)root, (void)err;
    fake_calls++;
    fake_count = bytes;
    return 0;
}

/* What the communication thread's test saw: the jobs' numbers and 'b'
 * for a barrier in the order they ran, and the thread each ran on. */
static char thr_log[32];
static size_t thr_len;
static uv_thread_t thr_where;

static int fake_barrier(void *impl, pile_err *err)
{
    (void)impl, (void)err;
    fake_calls++;
    thr_where = uv_thread_self();
    if (thr_len < sizeof thr_log - 1) thr_log[thr_len++] = 'b';
    return 0;
}

static const pile__comm_ops fake_ops = {
    "fake",          fake_open,      fake_close,         fake_allreduce,     fake_reduce_scatter,
    fake_all_gather, fake_broadcast, fake_allreduce_f64, fake_allreduce_i64, fake_broadcast_bytes,
    fake_barrier,    0,              NULL,
};

static pile_comm *open_fake(int rank, int world, pile_err *err)
{
    fake_rank = rank;
    fake_world = world;
    fake_open_rc = 0;
    pile_comm *c = NULL;
    if (pile__comm_open_ops(&c, &fake_ops, NULL, err) < 0) return NULL;
    return c;
}

static void test_world(void)
{
    TEST("rank 1 of 2: counts that do not divide refused before the implementation; in-place shares; roots");
    pile_err err;
    pile_comm *c = open_fake(1, 2, &err);
    ASSERT(c != NULL);
    if (!c) return;
    ASSERT_EQ(pile_comm_rank(c), 1);
    ASSERT_EQ(pile_comm_world_size(c), 2);
    ASSERT_STR_EQ(pile_comm_name(c), "fake");
    float x[10], out[5];
    memset(x, 0, sizeof x);
    fake_calls = 0;
    REFUSED(pile_comm_reduce_scatter(c, out, x, 5, PILE_COMM_F32, PILE_COMM_SUM, NULL, &err), &err,
            "cannot reduce-scatter 5 elements over 2 ranks: the count must be a multiple of the world size (pad it)");
    REFUSED(pile_comm_all_gather(c, x, out, 9, PILE_COMM_BF16, NULL, &err), &err,
            "cannot all-gather 9 elements over 2 ranks");
    REFUSED(pile_comm_broadcast(c, x, 10, PILE_COMM_F32, 2, NULL, &err), &err,
            "cannot broadcast from rank 2: the world has ranks 0 to 1");
    /* rank 1's share of x[0..10) is x[5..10): x itself is rank 0's, and overlaps */
    REFUSED(pile_comm_reduce_scatter(c, x, x, 10, PILE_COMM_F32, PILE_COMM_SUM, NULL, &err), &err,
            "not as rank 1's share of the whole");
    REFUSED(pile_comm_all_gather(c, x, x + 4, 10, PILE_COMM_F32, NULL, &err), &err, "overlap");
    ASSERT_EQ(fake_calls, 0);

    OK(pile_comm_reduce_scatter(c, x + 5, x, 10, PILE_COMM_F32, PILE_COMM_SUM, NULL, &err), &err);
    ASSERT_EQ(fake_count, 10);
    OK(pile_comm_reduce_scatter(c, out, x, 10, PILE_COMM_F32, PILE_COMM_MAX, NULL, &err), &err);
    OK(pile_comm_all_gather(c, x, x + 5, 10, PILE_COMM_F32, NULL, &err), &err);
    OK(pile_comm_all_gather(c, x, out, 10, PILE_COMM_F16, NULL, &err), &err);
    OK(pile_comm_broadcast(c, x, 10, PILE_COMM_F32, 1, NULL, &err), &err);
    OK(pile_comm_allreduce(c, x, 7, PILE_COMM_F32, PILE_COMM_SUM, NULL, &err), &err);
    ASSERT_EQ(fake_count, 7);
    ASSERT_EQ(fake_calls, 6);
    /* count 0 is nothing to do on any rank: the implementation is not bothered */
    OK(pile_comm_allreduce(c, NULL, 0, PILE_COMM_F32, PILE_COMM_SUM, NULL, &err), &err);
    OK(pile_comm_reduce_scatter(c, NULL, NULL, 0, PILE_COMM_F32, PILE_COMM_SUM, NULL, &err), &err);
    ASSERT_EQ(fake_calls, 6);
    double d[13] = {0};
    OK(pile_comm_allreduce_f64(c, d, 2, PILE_COMM_SUM, &err), &err);
    ASSERT_EQ(fake_calls, 7);
    ASSERT_EQ(pile_comm_allreduce_f64(c, d, 13, PILE_COMM_SUM, &err), PILE_EIO);
    ASSERT_STR_EQ(err.msg, "rank 0 went away");
    /* opaque bytes (an NCCL unique id): any length, the same root check */
    fake_calls = 0;
    unsigned char id[3] = {1, 2, 3};
    REFUSED(pile_comm_broadcast_bytes(c, id, 3, 2, &err), &err, "cannot broadcast from rank 2");
    REFUSED(pile_comm_broadcast_bytes(c, id, 3, -1, &err), &err, "cannot broadcast from rank -1");
    REFUSED(pile_comm_broadcast_bytes(c, NULL, 3, 0, &err), &err, "cannot broadcast 3 bytes: no buffer");
    OK(pile_comm_broadcast_bytes(c, NULL, 0, 0, &err), &err);
    ASSERT_EQ(fake_calls, 0);
    OK(pile_comm_broadcast_bytes(c, id, 3, 1, &err), &err);
    ASSERT_EQ(fake_count, 3);
    OK(pile_comm_barrier(c, &err), &err);
    ASSERT_EQ(fake_calls, 2);
    pile_comm_close(c);
    ASSERT_EQ(fake_closed, 1);
}

static uv_sem_t thr_gate;

/* A job: logs arg[0]; arg[1] & 1: first waits for thr_gate; & 2: fails
 * as the tcp communicator does when a peer died. */
static int thr_job(pile_comm *c, void *ctx, const size_t arg[3], pile_err *err)
{
    (void)c, (void)ctx;
    if (arg[1] & 1) uv_sem_wait(&thr_gate);
    thr_where = uv_thread_self();
    if (thr_len < sizeof thr_log - 1) thr_log[thr_len++] = (char)('0' + arg[0]);
    if (arg[1] & 2)
        return pile_err_set(err, PILE_EIO,
                            "cannot allreduce (rank 1 of 2): rank 0 (previous in the ring) closed its connection");
    return 0;
}

static void test_thread(void)
{
    TEST("communication thread: jobs, then other threads' calls, in order on it; a failure fails what follows");
    pile_err err;
    pile_comm *c = open_fake(1, 2, &err);
    ASSERT(c != NULL);
    if (!c || uv_sem_init(&thr_gate, 0) != 0) return;
    const uv_thread_t self = uv_thread_self();
    memset(thr_log, 0, sizeof thr_log);
    thr_len = 0;
    uint64_t t0 = 99, t1 = 0, t2 = 0, t3 = 0;
    /* without the thread a job runs at once, here */
    ASSERT_EQ(pile_comm_threaded(c), 0);
    OK(pile_comm_submit(c, thr_job, NULL, 0, 0, 0, &t0, &err), &err);
    ASSERT_STR_EQ(thr_log, "0");
    ASSERT(uv_thread_equal(&thr_where, &self));
    ASSERT_EQ(t0, 0);
    OK(pile_comm_wait(c, t0, &err), &err);
    OK(pile_comm_drain(c, &err), &err);

    OK(pile_comm_thread_start(c, &err), &err);
    ASSERT_EQ(pile_comm_threaded(c), 1);
    REFUSED(pile_comm_thread_start(c, &err), &err, "has its communication thread already");
    /* job 1 holds the thread: submit returns before it ran, and the
     * jobs after it and the barrier wait their turn */
    OK(pile_comm_submit(c, thr_job, NULL, 1, 1, 0, &t1, &err), &err);
    OK(pile_comm_submit(c, thr_job, NULL, 2, 0, 0, &t2, &err), &err);
    ASSERT_STR_EQ(thr_log, "0");
    ASSERT(t1 > 0 && t2 == t1 + 1);
    uv_sem_post(&thr_gate);
    fake_calls = 0;
    OK(pile_comm_barrier(c, &err), &err);
    ASSERT_STR_EQ(thr_log, "012b");
    ASSERT_EQ(fake_calls, 1);
    ASSERT(!uv_thread_equal(&thr_where, &self)); /* made on the comm's thread */
    OK(pile_comm_wait(c, t2, &err), &err);

    /* job 4 fails: job 5 is passed over, and every later wait, submit
     * and call returns job 4's error */
    OK(pile_comm_submit(c, thr_job, NULL, 4, 3, 0, NULL, &err), &err);
    OK(pile_comm_submit(c, thr_job, NULL, 5, 0, 0, &t3, &err), &err);
    uv_sem_post(&thr_gate);
    ASSERT_EQ(pile_comm_wait(c, t3, &err), PILE_EIO);
    ASSERT_STR_EQ(err.msg, "cannot allreduce (rank 1 of 2): rank 0 (previous in the ring) closed its connection");
    ASSERT_STR_EQ(thr_log, "012b4");
    err.msg[0] = '\0';
    ASSERT_EQ(pile_comm_submit(c, thr_job, NULL, 6, 0, 0, NULL, &err), PILE_EIO);
    ASSERT(strstr(err.msg, "closed its connection") != NULL);
    double d[2] = {0, 0};
    err.msg[0] = '\0';
    ASSERT_EQ(pile_comm_allreduce_f64(c, d, 2, PILE_COMM_SUM, &err), PILE_EIO);
    ASSERT(strstr(err.msg, "closed its connection") != NULL);
    ASSERT_EQ(pile_comm_drain(c, &err), PILE_EIO);
    ASSERT_EQ(fake_calls, 1);
    ASSERT_STR_EQ(thr_log, "012b4");
    pile_comm_close(c); /* joins the thread */
    uv_sem_destroy(&thr_gate);
}

static void test_partition(void)
{
    TEST("partitions: disjoint ranges of ceil(n / world) covering [0, n), empty ones at the end");
    pile_err err;
    static const struct {
        int world;
        size_t n;
        size_t off[4], cnt[4];
    } cases[] = {
        {2, 10, {0, 5}, {5, 5}},
        {3, 7, {0, 3, 6}, {3, 3, 1}},
        {3, 2, {0, 1, 2}, {1, 1, 0}},
        {4, 0, {0, 0, 0, 0}, {0, 0, 0, 0}},
        {4, 1, {0, 1, 1, 1}, {1, 0, 0, 0}},
        {2, SIZE_MAX, {0, SIZE_MAX / 2 + 1}, {SIZE_MAX / 2 + 1, SIZE_MAX / 2}},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        size_t covered = 0;
        for (int r = 0; r < cases[k].world; r++) {
            pile_comm *c = open_fake(r, cases[k].world, &err);
            ASSERT(c != NULL);
            if (!c) return;
            size_t off, cnt;
            pile_comm_partition(c, cases[k].n, &off, &cnt);
            if (off != cases[k].off[r] || cnt != cases[k].cnt[r])
                PILE_FAIL_("world %d, n %zu, rank %d: [%zu, +%zu), want [%zu, +%zu)", cases[k].world, cases[k].n, r,
                           off, cnt, cases[k].off[r], cases[k].cnt[r]);
            if (cnt) ASSERT_EQ(off, covered); /* each starts where the last ended */
            covered += cnt;
            pile_comm_close(c);
        }
        ASSERT(covered == cases[k].n);
    }
}

static void test_bad_open(void)
{
    TEST("an implementation that fails to open, or names an impossible rank, yields no communicator");
    pile_err err;
    pile_comm *c = (pile_comm *)&err;
    fake_closed = 0;
    fake_rank = 2;
    fake_world = 2;
    fake_open_rc = 0;
    REFUSED(pile__comm_open_ops(&c, &fake_ops, NULL, &err), &err, "communicator 'fake' reports rank 2 of world size 2");
    ASSERT(c == NULL);
    ASSERT_EQ(fake_closed, 1); /* what it opened is closed again */
    fake_rank = 0;
    fake_world = 0;
    REFUSED(pile__comm_open_ops(&c, &fake_ops, NULL, &err), &err, "rank 0 of world size 0");
    fake_world = 1;
    fake_open_rc = PILE_EIO;
    c = (pile_comm *)&err;
    ASSERT_EQ(pile__comm_open_ops(&c, &fake_ops, NULL, &err), PILE_EIO);
    ASSERT_STR_EQ(err.msg, "cannot reach the other ranks");
    ASSERT(c == NULL);
}


/* ------------------------------------------------------ launchers */

/* The environment parsed from a NULL-terminated list of "NAME=value". */
static int parse_env(pile_comm_env *env, pile_err *err, const char *const *vars)
{
    return pile_comm_env_parse(env, vars, err);
}

#define ENV(...) ((const char *const[]){__VA_ARGS__, NULL})

/* e says: launcher, rank of world, local rank of local world, mpi. */
#define ASSERT_PLACE(e, l_, r_, w_, lr_, lw_, mpi_)                   \
    do {                                                             \
        ASSERT_STR_EQ(pile_comm_launcher_name((e).launcher), l_);    \
        ASSERT_EQ((e).rank, r_);                                     \
        ASSERT_EQ((e).world_size, w_);                               \
        ASSERT_EQ((e).local_rank, lr_);                              \
        ASSERT_EQ((e).local_world_size, lw_);                        \
        ASSERT_EQ((e).mpi, mpi_);                                    \
    } while (0)

static void test_env_launchers(void)
{
    TEST("launchers: torchrun, Slurm, Open MPI, PMI and none, each read from its own variables");
    pile_err err;
    pile_comm_env e;
    OK(parse_env(&e, &err, ENV("HOME=/root", "PATH=/bin")), &err);
    ASSERT_PLACE(e, "none", 0, 1, 0, 1, 0);
    ASSERT_STR_EQ(pile_comm_auto_name(&e, &err), "single");

    OK(parse_env(&e, &err,
                 ENV("RANK=5", "WORLD_SIZE=8", "LOCAL_RANK=1", "LOCAL_WORLD_SIZE=4", "MASTER_ADDR=node07",
                     "MASTER_PORT=29400", "RANKS=9")),
       &err);
    ASSERT_PLACE(e, "torchrun", 5, 8, 1, 4, 0);
    ASSERT_STR_EQ(e.master_addr, "node07");
    ASSERT_EQ(e.master_port, 29400);
    ASSERT_STR_EQ(pile_comm_auto_name(&e, &err), "tcp");
    /* without the local pair: one machine */
    OK(parse_env(&e, &err, ENV("RANK=2", "WORLD_SIZE=3", "MASTER_ADDR=::1", "MASTER_PORT=1")), &err);
    ASSERT_EQ(e.local_rank, 2);
    ASSERT_EQ(e.local_world_size, 3);

    OK(parse_env(&e, &err,
                 ENV("SLURM_STEP_ID=0", "SLURM_PROCID=6", "SLURM_NTASKS=7", "SLURM_LOCALID=2", "SLURM_NODEID=2",
                     "SLURM_STEP_TASKS_PER_NODE=2(x2),3", "SLURM_JOB_NODELIST=gpu[01-04,07]")),
       &err);
    ASSERT_PLACE(e, "slurm", 6, 7, 2, 3, 0);
    ASSERT_STR_EQ(e.master_addr, "gpu01");
    ASSERT_EQ(e.master_port, 29500);
    ASSERT_STR_EQ(pile_comm_auto_name(&e, &err), "tcp");
    /* MASTER_ADDR and MASTER_PORT, where the job script sets them, win */
    OK(parse_env(&e, &err,
                 ENV("SLURM_STEP_ID=0", "SLURM_PROCID=0", "SLURM_NTASKS=2", "SLURM_LOCALID=0", "SLURM_TASKS_PER_NODE=1(x2)",
                     "SLURM_JOB_NODELIST=a,b", "MASTER_ADDR=10.0.0.5", "MASTER_PORT=4000")),
       &err);
    ASSERT_STR_EQ(e.master_addr, "10.0.0.5");
    ASSERT_EQ(e.master_port, 4000);
    ASSERT_EQ(e.local_world_size, 1);
    /* srun --mpi=pmix: MPI's own */
    OK(parse_env(&e, &err, ENV("SLURM_STEP_ID=0", "SLURM_PROCID=1", "SLURM_NTASKS=2", "SLURM_LOCALID=1", "PMIX_RANK=1")), &err);
    ASSERT_EQ(e.mpi, 1);
    ASSERT_EQ(e.local_world_size, 2);

    OK(parse_env(&e, &err,
                 ENV("OMPI_COMM_WORLD_RANK=3", "OMPI_COMM_WORLD_SIZE=4", "OMPI_COMM_WORLD_LOCAL_RANK=1",
                     "OMPI_COMM_WORLD_LOCAL_SIZE=2")),
       &err);
    ASSERT_PLACE(e, "openmpi", 3, 4, 1, 2, 1);
    ASSERT_STR_EQ(e.master_addr, "");

    OK(parse_env(&e, &err, ENV("PMI_RANK=1", "PMI_SIZE=2")), &err);
    ASSERT_PLACE(e, "pmi", 1, 2, 1, 2, 1);
    ASSERT_STR_EQ(pile_comm_launcher_name((pile_comm_launcher)9), "?");
}

static void test_env_precedence(void)
{
    TEST("launchers: the inner one counts (mpirun in a Slurm job, torchrun under srun)");
    pile_err err;
    pile_comm_env e;
    OK(parse_env(&e, &err,
                 ENV("SLURM_STEP_ID=0", "SLURM_PROCID=0", "SLURM_NTASKS=1", "SLURM_LOCALID=0", "OMPI_COMM_WORLD_RANK=2",
                     "OMPI_COMM_WORLD_SIZE=3")),
       &err);
    ASSERT_EQ(e.launcher, PILE_COMM_LAUNCHER_OPENMPI);
    ASSERT_EQ(e.rank, 2);
    OK(parse_env(&e, &err,
                 ENV("SLURM_STEP_ID=0", "SLURM_PROCID=1", "SLURM_NTASKS=2", "SLURM_LOCALID=0", "RANK=9", "WORLD_SIZE=16",
                     "MASTER_ADDR=h", "MASTER_PORT=5")),
       &err);
    ASSERT_EQ(e.launcher, PILE_COMM_LAUNCHER_TORCHRUN);
    ASSERT_EQ(e.rank, 9);
    ASSERT_EQ(e.world_size, 16);
}

static void test_env_batch_script(void)
{
    TEST("launchers: an sbatch script (Slurm's variables, no step) is one process");
    pile_err err;
    pile_comm_env e;
    OK(parse_env(&e, &err,
                 ENV("SLURM_PROCID=0", "SLURM_NTASKS=8", "SLURM_LOCALID=0", "SLURM_JOB_NODELIST=gpu[01-02]",
                     "SLURM_TASKS_PER_NODE=4(x2)")),
       &err);
    ASSERT_EQ(e.launcher, PILE_COMM_LAUNCHER_NONE);
    ASSERT_EQ(e.world_size, 1);
    OK(parse_env(&e, &err,
                 ENV("SLURM_STEPID=3", "SLURM_PROCID=5", "SLURM_NTASKS=8", "SLURM_LOCALID=1",
                     "SLURM_JOB_NODELIST=gpu[01-02]", "SLURM_NODEID=1", "SLURM_TASKS_PER_NODE=4(x2)")),
       &err);
    ASSERT_EQ(e.launcher, PILE_COMM_LAUNCHER_SLURM);
    ASSERT_EQ(e.rank, 5);
    ASSERT_EQ(e.local_world_size, 4);
}

static void test_env_errors(void)
{
    TEST("launchers: half-set, malformed and contradictory variables are errors that name them");
    pile_err err;
    pile_comm_env e;
    REFUSED(parse_env(&e, &err, ENV("RANK=0")), &err, "RANK is set in the environment but WORLD_SIZE is not");
    REFUSED(parse_env(&e, &err, ENV("WORLD_SIZE=2")), &err, "WORLD_SIZE is set in the environment but RANK is not");
    REFUSED(parse_env(&e, &err, ENV("RANK=2", "WORLD_SIZE=2", "MASTER_ADDR=h", "MASTER_PORT=5")), &err,
            "bad RANK=2 in the environment (torchrun): WORLD_SIZE=2 makes ranks 0 to 1");
    REFUSED(parse_env(&e, &err, ENV("RANK=0", "WORLD_SIZE=0")), &err, "bad WORLD_SIZE=0");
    REFUSED(parse_env(&e, &err, ENV("RANK=x", "WORLD_SIZE=2")), &err, "bad RANK='x' in the environment (torchrun)");
    REFUSED(parse_env(&e, &err, ENV("RANK=-1", "WORLD_SIZE=2")), &err, "bad RANK='-1'");
    REFUSED(parse_env(&e, &err, ENV("RANK=1 ", "WORLD_SIZE=2")), &err, "bad RANK='1 '");
    REFUSED(parse_env(&e, &err, ENV("RANK=", "WORLD_SIZE=2")), &err, "bad RANK=''");
    REFUSED(parse_env(&e, &err, ENV("RANK=0", "WORLD_SIZE=99999999999")), &err, "bad WORLD_SIZE='99999999999'");
    REFUSED(parse_env(&e, &err, ENV("RANK=0", "WORLD_SIZE=2", "MASTER_PORT=5")), &err,
            "RANK and WORLD_SIZE are set in the environment but MASTER_ADDR is not");
    REFUSED(parse_env(&e, &err, ENV("RANK=0", "WORLD_SIZE=2", "MASTER_ADDR=h")), &err, "but MASTER_PORT is not");
    REFUSED(parse_env(&e, &err, ENV("RANK=0", "WORLD_SIZE=2", "MASTER_ADDR=h", "MASTER_PORT=65535")), &err,
            "bad MASTER_PORT=65535 in the environment (torchrun): a port from 1 to 65534");
    REFUSED(parse_env(&e, &err, ENV("RANK=0", "WORLD_SIZE=2", "MASTER_ADDR=h", "MASTER_PORT=0")), &err,
            "bad MASTER_PORT=0");
    REFUSED(parse_env(&e, &err, ENV("RANK=0", "WORLD_SIZE=2", "MASTER_ADDR=", "MASTER_PORT=5")), &err,
            "bad MASTER_ADDR=''");
    REFUSED(parse_env(&e, &err, ENV("RANK=0", "WORLD_SIZE=2", "LOCAL_RANK=0", "MASTER_ADDR=h", "MASTER_PORT=5")),
            &err, "LOCAL_RANK is set in the environment but LOCAL_WORLD_SIZE is not");
    REFUSED(parse_env(&e, &err,
                      ENV("RANK=0", "WORLD_SIZE=4", "LOCAL_RANK=2", "LOCAL_WORLD_SIZE=2", "MASTER_ADDR=h",
                          "MASTER_PORT=5")),
            &err, "bad LOCAL_RANK=2 in the environment (torchrun): LOCAL_WORLD_SIZE=2 makes ranks 0 to 1");
    REFUSED(parse_env(&e, &err,
                      ENV("RANK=0", "WORLD_SIZE=2", "LOCAL_RANK=0", "LOCAL_WORLD_SIZE=3", "MASTER_ADDR=h",
                          "MASTER_PORT=5")),
            &err, "3 ranks on this machine but 2 in the whole job");
    REFUSED(parse_env(&e, &err, ENV("OMPI_COMM_WORLD_RANK=4", "OMPI_COMM_WORLD_SIZE=4")), &err,
            "bad OMPI_COMM_WORLD_RANK=4 in the environment (openmpi)");
    REFUSED(parse_env(&e, &err, ENV("PMI_RANK=0")), &err, "PMI_RANK is set in the environment but PMI_SIZE is not");
    REFUSED(parse_env(&e, &err,
                      ENV("SLURM_STEP_ID=0", "SLURM_PROCID=0", "SLURM_NTASKS=4", "SLURM_LOCALID=2", "SLURM_TASKS_PER_NODE=2(x2)",
                          "SLURM_JOB_NODELIST=a")),
            &err, "bad local rank 2 of 2 in the environment (slurm)");
    REFUSED(parse_env(&e, &err, ENV("SLURM_STEP_ID=0", "SLURM_PROCID=0", "SLURM_NTASKS=2", "SLURM_JOB_NODELIST=a")), &err,
            "SLURM_PROCID is set in the environment but SLURM_LOCALID is not");
    REFUSED(parse_env(&e, &err, ENV("SLURM_STEP_ID=0", "SLURM_PROCID=0", "SLURM_NTASKS=2", "SLURM_LOCALID=0")), &err,
            "neither MASTER_ADDR nor SLURM_JOB_NODELIST is set");
    REFUSED(parse_env(&e, &err, ENV("SLURM_STEP_ID=0", "SLURM_PROCID=0", "SLURM_NTASKS=2", "SLURM_LOCALID=0", "SLURM_JOB_NODELIST=a[1-")),
            &err, "cannot read the node list 'a[1-': bad brackets");
    /* a world of one under an MPI launcher never needs MPI */
    OK(parse_env(&e, &err, ENV("OMPI_COMM_WORLD_RANK=0", "OMPI_COMM_WORLD_SIZE=1")), &err);
    ASSERT_STR_EQ(pile_comm_auto_name(&e, &err), "single");
}

static void test_local_device(void)
{
    TEST("the local rank's GPU: its number among those seen, the one CUDA_VISIBLE_DEVICES binds to it, or refused naming both");
    pile_err err;
    pile_comm_env e;
    OK(parse_env(&e, &err, ENV("RANK=5", "WORLD_SIZE=8", "LOCAL_RANK=1", "LOCAL_WORLD_SIZE=4", "MASTER_ADDR=n1",
                               "MASTER_PORT=29400")),
       &err);
    int dev = -1;
    OK(pile_comm_local_device(&e, 4, ENV("HOME=/"), "cannot open CUDA device", &dev, &err), &err);
    ASSERT_EQ(dev, 1);
    /* one GPU bound to this rank by its launcher (Slurm's --gpus-per-task 1): it is device 0 */
    OK(pile_comm_local_device(&e, 1, ENV("CUDA_VISIBLE_DEVICES=5"), "cannot open CUDA device", &dev, &err), &err);
    ASSERT_EQ(dev, 0);
    OK(pile_comm_local_device(&e, 1, ENV("CUDA_VISIBLE_DEVICES=GPU-8a1f"), "cannot open CUDA device", &dev, &err),
       &err);
    ASSERT_EQ(dev, 0);
    /* ... but not one device among several named, nor one seen without CUDA_VISIBLE_DEVICES */
    ASSERT_EQ(pile_comm_local_device(&e, 1, ENV("CUDA_VISIBLE_DEVICES=5,6"), "cannot open CUDA device", &dev, &err),
              PILE_EINVAL);
    ASSERT_EQ(dev, -1);
    ASSERT_STR_EQ(err.msg, "cannot open CUDA device 1 for local rank 1 (torchrun): this machine shows 1 CUDA device "
                           "(CUDA_VISIBLE_DEVICES=5,6); start at most 1 rank per machine, each seeing all of its GPUs");
    ASSERT_EQ(pile_comm_local_device(&e, 1, ENV("HOME=/"), "cannot open CUDA device", &dev, &err), PILE_EINVAL);
    ASSERT_EQ(pile_comm_local_device(&e, 1, ENV("CUDA_VISIBLE_DEVICES="), "cannot open CUDA device", &dev, &err),
              PILE_EINVAL);
    ASSERT_EQ(pile_comm_local_device(&e, 2, ENV("CUDA_VISIBLE_DEVICES=2,3"), "cannot open CUDA device", &dev, &err),
              0);
    ASSERT_EQ(dev, 1);
    ASSERT_EQ(pile_comm_local_device(&e, 0, ENV("HOME=/"), "cannot open CUDA device", &dev, &err), PILE_EINVAL);
    ASSERT(strstr(err.msg, "this machine shows 0 CUDA devices; start at most 0 ranks") != NULL);
}

static void test_first_host(void)
{
    TEST("Slurm node lists: the first host");
    static const struct {
        const char *list, *first;
    } ok[] = {
        {"gpu[01-04,07]", "gpu01"},
        {"gpu[07,01-04]", "gpu07"},
        {"node1", "node1"},
        {"a1,b2", "a1"},
        {"gpu[01-04,07],cpu5", "gpu01"},
        {"rack[1-2]-node[003-004]", "rack1-node003"},
        {"n[5]", "n5"},
        {"[3-4]x", "3x"},
    };
    char host[64];
    pile_err err;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        host[0] = '\0';
        OK(pile__comm_first_host(ok[i].list, host, sizeof host, &err), &err);
        ASSERT_STR_EQ(host, ok[i].first);
    }
    static const char *const bad[] = {"", ",a", "gpu[", "gpu[]", "gpu]1", "a[1-2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        REFUSED(pile__comm_first_host(bad[i], host, sizeof host, &err), &err, "cannot read the node list");
    REFUSED(pile__comm_first_host("abcdefgh", host, 8, &err), &err, "host name too long");
    OK(pile__comm_first_host("abcdefg", host, 8, &err), &err);
}

int main(void)
{
    test_device_memory();
    test_local_device();
    test_open();
    test_dtype_and_partition();
    test_allreduce();
    test_copies();
    test_broadcast();
    test_devsim();
    test_refusals();
    test_world();
    test_thread();
    test_partition();
    test_bad_open();
    test_env_launchers();
    test_env_precedence();
    test_env_batch_script();
    test_env_errors();
    test_first_host();
    return TEST_DONE();
}
