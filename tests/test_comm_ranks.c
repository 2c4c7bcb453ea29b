/* One rank of a multi-process test of pile_comm (trainer/comm/comm.h),
 * started N times by a launcher (mpirun, pile-trainer launch: see
 * tests/comm_ranks.sh). Every rank makes the same calls on data it can
 * also compute for every other rank, so that it checks its own result
 * against the reduction computed here in one process:
 *
 *   test_comm_ranks check NAME    every collective, odd counts, in place
 *                                 and not, every root; NAME is the
 *                                 communicator pile_comm_open_auto must pick
 *   test_comm_ranks die RANK N    allreduces until rank RANK kills itself
 *                                 (SIGKILL) in the Nth, mid-collective
 *   test_comm_ranks hang RANK N   the same, but rank RANK stops (SIGSTOP)
 *   test_comm_ranks fail RANK N   rank RANK fails on its own before the
 *                                 Nth, says so, abandons the communicator
 *                                 (pile_comm_abandon) and exits 3
 *   test_comm_ranks mismatch      rank 0 calls allreduce where the others
 *                                 call broadcast: every rank must fail
 *
 * Options after the mode: --timeout S (the communicator's).
 * Output: "rank R: ok" at the end, or "rank R: ..." lines naming what
 * failed; exit 0 only when everything held. The values summed are
 * multiples of 1/4 well inside fp32's exact range, so that every order
 * of summation gives the same bits and "the single-rank result" is one;
 * random-valued sums are checked for agreement across ranks bit for bit
 * (one fixed order) and against the exact sum to 1e-6. */
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "comm/comm.h"

static int g_rank, g_world, g_failed;
static pile_comm *g_comm;

#define CHECK(cond, ...)                                \
    do {                                                \
        if (!(cond)) {                                  \
            fprintf(stderr, "rank %d: ", g_rank);       \
            fprintf(stderr, __VA_ARGS__);               \
            fprintf(stderr, " (%s:%d)\n", __FILE__, __LINE__); \
            g_failed++;                                 \
        }                                               \
    } while (0)

#define CALL(expr)                                                                       \
    do {                                                                                 \
        pile_err err_;                                                                   \
        if ((expr) < 0) {                                                                \
            fprintf(stderr, "rank %d: %s failed: %s\n", g_rank, #expr, err_.msg);        \
            exit(1);                                                                     \
        }                                                                                \
    } while (0)
#define ERR (&err_)

/* Rank r's exact value at i: a multiple of 1/4 in [-512, 512). */
static float exact_value(int r, size_t i)
{
    return (float)((int64_t)((i * 2654435761u + (size_t)r * 40503u) % 4096u) - 2048) * 0.25f;
}

/* Rank r's random value at i, in [-1, 1). */
static float random_value(int r, size_t i)
{
    uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ull ^ ((uint64_t)r + 1) * 0xbf58476d1ce4e5b9ull;
    x ^= x >> 31;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 29;
    return (float)((double)(x >> 11) / 9007199254740992.0 * 2 - 1);
}

static float reduce_exact(size_t i, pile_comm_op op)
{
    double s = 0, m = -INFINITY;
    for (int r = 0; r < g_world; r++) {
        s += exact_value(r, i);
        m = fmax(m, exact_value(r, i));
    }
    return (float)(op == PILE_COMM_SUM ? s : m);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "rank %d: out of memory\n", g_rank);
        exit(1);
    }
    return p;
}

/* The counts tried: 1, small odd ones, fewer than the ranks, and one
 * just over 1 MiB of fp32 (the "tcp" ring's piece), so that it takes two
 * pieces, the second of 3 elements. */
static const size_t counts[] = {1, 2, 3, 7, 1001, 262147};
#define N_COUNTS (sizeof counts / sizeof counts[0])

static void check_allreduce(void)
{
    for (size_t k = 0; k < N_COUNTS; k++)
        for (int op = PILE_COMM_SUM; op <= PILE_COMM_MAX; op++) {
            const size_t n = counts[k];
            float *x = xmalloc(n * 4);
            for (size_t i = 0; i < n; i++) x[i] = exact_value(g_rank, i);
            CALL(pile_comm_allreduce(g_comm, x, n, PILE_COMM_F32, (pile_comm_op)op, NULL, ERR));
            size_t bad = 0, first = 0;
            for (size_t i = 0; i < n; i++)
                if (x[i] != reduce_exact(i, (pile_comm_op)op) && bad++ == 0) first = i;
            CHECK(bad == 0, "allreduce %s of %zu: %zu wrong, first at %zu: %g, want %g", op ? "max" : "sum", n, bad,
                  first, (double)x[first], (double)reduce_exact(first, (pile_comm_op)op));
            free(x);
        }
}

/* Random values: every rank holds the same bits (rank 0's, broadcast),
 * the same as a second call's, within 1e-6 of the exact sum. */
static void check_allreduce_random(void)
{
    const size_t n = 100003;
    float *x = xmalloc(n * 4), *r0 = xmalloc(n * 4);
    for (size_t i = 0; i < n; i++) x[i] = random_value(g_rank, i);
    CALL(pile_comm_allreduce(g_comm, x, n, PILE_COMM_F32, PILE_COMM_SUM, NULL, ERR));
    memcpy(r0, x, n * 4);
    CALL(pile_comm_broadcast(g_comm, r0, n, PILE_COMM_F32, 0, NULL, ERR));
    CHECK(memcmp(r0, x, n * 4) == 0, "allreduce of random values: rank %d and rank 0 differ", g_rank);
    /* and the same bits again: one fixed order of summation */
    for (size_t i = 0; i < n; i++) r0[i] = random_value(g_rank, i);
    CALL(pile_comm_allreduce(g_comm, r0, n, PILE_COMM_F32, PILE_COMM_SUM, NULL, ERR));
    CHECK(memcmp(r0, x, n * 4) == 0, "allreduce of random values: a second call gives other bits");
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double s = 0;
        for (int r = 0; r < g_world; r++) s += random_value(r, i);
        if (fabs(x[i] - s) > 1e-6 * g_world) bad++;
    }
    CHECK(bad == 0, "allreduce of random values: %zu of %zu off the exact sum by more than 1e-6", bad, n);
    free(x);
    free(r0);
}

static void check_reduce_scatter(void)
{
    for (size_t k = 0; k < N_COUNTS; k++)
        for (int in_place = 0; in_place <= 1; in_place++) {
            const size_t share = counts[k], n = share * (size_t)g_world;
            float *in = xmalloc(n * 4), *sep = xmalloc(share * 4);
            for (size_t i = 0; i < n; i++) in[i] = exact_value(g_rank, i);
            float *out = in_place ? in + (size_t)g_rank * share : sep;
            CALL(pile_comm_reduce_scatter(g_comm, out, in, n, PILE_COMM_F32, PILE_COMM_SUM, NULL, ERR));
            size_t bad = 0;
            for (size_t i = 0; i < share; i++) bad += out[i] != reduce_exact((size_t)g_rank * share + i, PILE_COMM_SUM);
            /* the other ranks' shares of `in` are left as they were */
            for (size_t i = 0; i < n; i++)
                if (i / share != (size_t)g_rank || !in_place) bad += in[i] != exact_value(g_rank, i);
            CHECK(bad == 0, "reduce-scatter of %zu (%s): %zu wrong", n, in_place ? "in place" : "apart", bad);
            free(in);
            free(sep);
        }
}

/* Copies move bits: fp32 NaN payloads and arbitrary 16-bit patterns. */
static uint32_t pattern(int r, size_t i)
{
    return (uint32_t)(i * 2246822519u) ^ (uint32_t)(r + 1) * 3266489917u;
}

static void check_all_gather(void)
{
    for (size_t k = 0; k < N_COUNTS; k++)
        for (int dt = PILE_COMM_F32; dt <= PILE_COMM_F16; dt++)
            for (int in_place = 0; in_place <= 1; in_place++) {
                const size_t es = pile_comm_dtype_size((pile_comm_dtype)dt);
                const size_t share = counts[k], n = share * (size_t)g_world;
                unsigned char *out = xmalloc(n * es), *sep = xmalloc(share * es);
                unsigned char *in = in_place ? out + (size_t)g_rank * share * es : sep;
                memset(out, 0xa5, n * es);
                for (size_t i = 0; i < share; i++) {
                    uint32_t b = pattern(g_rank, i);
                    memcpy(in + i * es, &b, es);
                }
                CALL(pile_comm_all_gather(g_comm, out, in, n, (pile_comm_dtype)dt, NULL, ERR));
                size_t bad = 0;
                for (size_t i = 0; i < n; i++) {
                    uint32_t want = pattern((int)(i / share), i % share), got = 0;
                    memcpy(&got, out + i * es, es);
                    if (es == 2) want &= 0xffff;
                    bad += got != want;
                }
                CHECK(bad == 0, "all-gather of %zu %zu-byte elements (%s): %zu wrong", n, es,
                      in_place ? "in place" : "apart", bad);
                free(out);
                free(sep);
            }
}

static void check_broadcast(void)
{
    for (int root = 0; root < g_world; root++)
        for (size_t k = 0; k < N_COUNTS; k++) {
            const size_t n = counts[k];
            uint16_t *x = xmalloc(n * 2);
            for (size_t i = 0; i < n; i++) x[i] = (uint16_t)pattern(g_rank, i);
            CALL(pile_comm_broadcast(g_comm, x, n, PILE_COMM_BF16, root, NULL, ERR));
            size_t bad = 0;
            for (size_t i = 0; i < n; i++) bad += x[i] != (uint16_t)pattern(root, i);
            CHECK(bad == 0, "broadcast of %zu from rank %d: %zu wrong", n, root, bad);
            free(x);
        }
    /* opaque bytes, of lengths no element size divides (an NCCL id is 128) */
    static const size_t lens[] = {1, 3, 128, 70001};
    for (int root = 0; root < g_world; root++)
        for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
            unsigned char *b = xmalloc(lens[k]);
            for (size_t i = 0; i < lens[k]; i++) b[i] = (unsigned char)pattern(g_rank, i);
            CALL(pile_comm_broadcast_bytes(g_comm, b, lens[k], root, ERR));
            size_t bad = 0;
            for (size_t i = 0; i < lens[k]; i++) bad += b[i] != (unsigned char)pattern(root, i);
            CHECK(bad == 0, "broadcast of %zu bytes from rank %d: %zu wrong", lens[k], root, bad);
            free(b);
        }
}

static void check_scalars(void)
{
    for (size_t n = 1; n <= 5; n++) {
        double d[5], dmax[5];
        int64_t v[5], vmax[5];
        for (size_t i = 0; i < n; i++) {
            d[i] = dmax[i] = (g_rank + 1) * 0.5 + (double)i;
            v[i] = vmax[i] = ((int64_t)1 << 40) * (g_rank + 1) - (int64_t)i * g_rank;
        }
        CALL(pile_comm_allreduce_f64(g_comm, d, n, PILE_COMM_SUM, ERR));
        CALL(pile_comm_allreduce_f64(g_comm, dmax, n, PILE_COMM_MAX, ERR));
        CALL(pile_comm_allreduce_i64(g_comm, v, n, PILE_COMM_SUM, ERR));
        CALL(pile_comm_allreduce_i64(g_comm, vmax, n, PILE_COMM_MAX, ERR));
        for (size_t i = 0; i < n; i++) {
            double ds = 0, dm = -INFINITY;
            int64_t vs = 0, vm = INT64_MIN;
            for (int r = 0; r < g_world; r++) {
                ds += (r + 1) * 0.5 + (double)i;
                dm = fmax(dm, (r + 1) * 0.5 + (double)i);
                int64_t x = ((int64_t)1 << 40) * (r + 1) - (int64_t)i * r;
                vs += x;
                vm = x > vm ? x : vm;
            }
            CHECK(d[i] == ds && dmax[i] == dm, "f64 allreduce [%zu] of %zu: sum %g max %g, want %g %g", i, n, d[i],
                  dmax[i], ds, dm);
            CHECK(v[i] == vs && vmax[i] == vm, "i64 allreduce [%zu] of %zu: sum %lld max %lld, want %lld %lld", i, n,
                  (long long)v[i], (long long)vmax[i], (long long)vs, (long long)vm);
        }
    }
}

static int run_check(const char *want_name)
{
    CHECK(strcmp(pile_comm_name(g_comm), want_name) == 0, "pile_comm_open_auto chose '%s', want '%s'",
          pile_comm_name(g_comm), want_name);
    check_allreduce();
    check_allreduce_random();
    check_reduce_scatter();
    check_all_gather();
    check_broadcast();
    check_scalars();
    CALL(pile_comm_barrier(g_comm, ERR));
    if (g_failed) return 1;
    printf("rank %d: ok (%s, %d ranks)\n", g_rank, pile_comm_name(g_comm), g_world);
    return 0;
}

/* Allreduces of 1 Mi floats until one fails; rank `victim` kills or stops
 * itself in the `at`th, after sending part of its data. */
static int run_fault(int stop, int victim, int at)
{
    const size_t n = (size_t)1 << 20;
    float *x = xmalloc(n * 4);
    for (int it = 0;; it++) {
        for (size_t i = 0; i < n; i++) x[i] = exact_value(g_rank, i);
        if (g_rank == victim && it == at) {
            /* mid-collective: its peers are already inside this one */
            usleep(200 * 1000);
            raise(stop ? SIGSTOP : SIGKILL);
        }
        pile_err err;
        if (pile_comm_allreduce(g_comm, x, n, PILE_COMM_F32, PILE_COMM_SUM, NULL, &err) < 0) {
            fprintf(stderr, "rank %d: %s\n", g_rank, err.msg);
            free(x);
            return 1;
        }
        if (it > at + 1000) {
            fprintf(stderr, "rank %d: allreduce %d still succeeds after rank %d died\n", g_rank, it, victim);
            free(x);
            return 2;
        }
    }
}

/* Rank `victim` fails on its own before its allreduce number `at` (an
 * error of its own in the middle of training: a full disk, a bad row),
 * says so and abandons the communicator, as pile-trainer does; the others
 * go on to that allreduce, which it never joins. The job must end, not
 * hang: exit 3 is the victim's. */
static int run_fail_alone(int victim, int at)
{
    const size_t n = 1024;
    float *x = xmalloc(n * 4);
    for (int it = 0; it <= at + 1000; it++) {
        for (size_t i = 0; i < n; i++) x[i] = exact_value(g_rank, i);
        if (g_rank == victim && it == at) {
            fprintf(stderr, "rank %d: failing alone before allreduce %d\n", g_rank, it);
            free(x);
            pile_comm_abandon(g_comm);
            g_comm = NULL;
            return 3;
        }
        pile_err err;
        if (pile_comm_allreduce(g_comm, x, n, PILE_COMM_F32, PILE_COMM_SUM, NULL, &err) < 0) {
            fprintf(stderr, "rank %d: %s\n", g_rank, err.msg);
            free(x);
            return 1;
        }
    }
    fprintf(stderr, "rank %d: allreduce %d succeeded without rank %d\n", g_rank, at, victim);
    free(x);
    return 2;
}

/* A bug every rank must be told of: the calls differ. Exit 0 only if
 * this rank's call failed. */
static int run_mismatch(void)
{
    float x[10] = {0};
    pile_err err;
    int rc = g_rank == 0 ? pile_comm_allreduce(g_comm, x, 10, PILE_COMM_F32, PILE_COMM_SUM, NULL, &err)
                         : pile_comm_broadcast(g_comm, x, 10, PILE_COMM_BF16, 0, NULL, &err);
    if (rc == 0) {
        fprintf(stderr, "rank %d: a call that differs from the other ranks' succeeded\n", g_rank);
        return 1;
    }
    fprintf(stderr, "rank %d: %s\n", g_rank, err.msg);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_comm_ranks check NAME | die RANK N | hang RANK N | fail RANK N | mismatch [--timeout S]\n");
        return 2;
    }
    pile_comm_options opt = {NULL, 0, 0, NULL};
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--timeout")) opt.timeout_s = atof(argv[i + 1]);
    pile_err err;
    if (pile_comm_open_auto(&g_comm, &opt, &err) < 0) {
        fprintf(stderr, "test_comm_ranks: %s\n", err.msg);
        return 1;
    }
    g_rank = pile_comm_rank(g_comm);
    g_world = pile_comm_world_size(g_comm);
    int rc = 2;
    if (!strcmp(argv[1], "check") && argc >= 3) rc = run_check(argv[2]);
    else if (!strcmp(argv[1], "mismatch")) rc = run_mismatch();
    else if ((!strcmp(argv[1], "die") || !strcmp(argv[1], "hang")) && argc >= 4)
        rc = run_fault(!strcmp(argv[1], "hang"), atoi(argv[2]), atoi(argv[3]));
    else if (!strcmp(argv[1], "fail") && argc >= 4) rc = run_fail_alone(atoi(argv[2]), atoi(argv[3]));
    pile_comm_close(g_comm);
    return rc;
}
