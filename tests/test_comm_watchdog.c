/* Tests of the communicator watchdog (trainer/comm/comm_watchdog.h), the
 * logic that turns a dead or hung peer of the "nccl" communicator into a
 * failure of every rank: driven here on the CPU by a fake communicator
 * (a clock that moves only when the watchdog sleeps, a state and per-slot
 * completions the test sets, an abort that counts), so that each path of
 * the state machine runs in CI although NCCL never does:
 *  - a call that finishes frees its slot and nothing is aborted;
 *  - a call past its deadline, an async error, a failed completion, an
 *    enqueue that stays in progress or fails: abort called exactly once,
 *    the message naming the operation and the rank, every later call
 *    refused with it;
 *  - a call is never made on an aborted communicator;
 *  - all slots busy: a new call waits for the oldest;
 *  - the watchdog's own thread aborts a hung call with nobody waiting. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "comm/comm_watchdog.h"
#include "pile_test.h"

#define MAXS 4

typedef struct fake {
    double t; /* seconds; moves when the watchdog sleeps */
    int state; /* what state() answers: 0, 1 (in progress) or -1 */
    int state_polls; /* while state is 1: polls until it becomes 0 (< 0: never) */
    int done[MAXS]; /* 1 done, 0 not yet, -1 failed */
    int done_polls[MAXS]; /* while done is 0: polls until it becomes 1 (< 0: never) */
    int aborts;
    int real_clock; /* the thread's test: real time */
} fake;

static int f_state(void *ctx, char *why, size_t cap)
{
    fake *f = ctx;
    if (f->state == 1 && f->state_polls > 0 && --f->state_polls == 0) f->state = 0;
    if (f->state < 0) snprintf(why, cap, "NCCL: remote process exited or there was a network error");
    return f->state;
}

static int f_done(void *ctx, int slot, char *why, size_t cap)
{
    fake *f = ctx;
    if (f->done[slot] == 0 && f->done_polls[slot] > 0 && --f->done_polls[slot] == 0) f->done[slot] = 1;
    if (f->done[slot] < 0) snprintf(why, cap, "CUDA: an illegal memory access was encountered");
    return f->done[slot];
}

static void f_abort(void *ctx)
{
    fake *f = ctx;
    f->aborts++;
}

static double f_now(void *ctx)
{
    fake *f = ctx;
    if (!f->real_clock) return f->t;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void f_sleep(void *ctx, double s)
{
    fake *f = ctx;
    if (!f->real_clock) {
        f->t += s;
        return;
    }
    uv_sleep((unsigned)(s * 1000) + 1);
}

static pile__watchdog *make(fake *f, double timeout, int slots)
{
    memset(f, 0, sizeof *f);
    f->t = 1000.0;
    for (int i = 0; i < MAXS; i++) f->done_polls[i] = -1;
    f->state_polls = -1;
    const pile__watchdog_io io = {f, f_state, f_done, f_abort, f_now, f_sleep};
    pile__watchdog *w = NULL;
    pile_err err;
    OK(pile__watchdog_create(&w, &io, 1, 4, timeout, slots, &err), &err);
    return w;
}

#define HAS(msg, word)                                                                   \
    do {                                                                                 \
        if (!strstr((msg), (word))) PILE_FAIL_("\"%s\" lacks \"%s\"", (msg), (word));    \
    } while (0)

/* After a failure: aborted once, every later call refused with the message. */
static void assert_failed_for_good(pile__watchdog *w, fake *f, const char *first_msg)
{
    pile_err err;
    ASSERT_EQ(f->aborts, 1);
    ASSERT_EQ(pile__watchdog_aborted(w), 1);
    ASSERT_EQ(pile__watchdog_tick(w, &err), PILE_EIO);
    ASSERT_STR_EQ(err.msg, first_msg);
    int slot = 7;
    ASSERT_EQ(pile__watchdog_begin(w, "broadcast 4 bf16 elements", &slot, &err), PILE_EIO);
    ASSERT_EQ(slot, -1);
    HAS(err.msg, "cannot broadcast 4 bf16 elements: the communicator failed before: ");
    HAS(err.msg, first_msg);
    ASSERT_EQ(f->aborts, 1); /* never twice */
}

static void test_finishes(void)
{
    TEST("a call that finishes frees its slot; nothing is aborted");
    fake f;
    pile__watchdog *w = make(&f, 10, 2);
    pile_err err;
    int a = -1, b = -1, c = -1;
    OK(pile__watchdog_begin(w, "allreduce 8 fp32 elements", &a, &err), &err);
    pile__watchdog_launched(w, a);
    OK(pile__watchdog_begin(w, "all-gather 8 bf16 elements", &b, &err), &err);
    pile__watchdog_launched(w, b);
    ASSERT(a >= 0 && b >= 0 && a != b);
    f.t += 9.9; /* within the deadline */
    OK(pile__watchdog_tick(w, &err), &err);
    f.done[a] = 1;
    OK(pile__watchdog_tick(w, &err), &err);
    OK(pile__watchdog_begin(w, "broadcast 2 fp32 elements", &c, &err), &err);
    ASSERT_EQ(c, a); /* a's slot, free again */
    f.done[b] = 1;
    pile__watchdog_launched(w, c);
    f.done[c] = 0;
    f.done_polls[c] = 3; /* finishes while the caller waits */
    OK(pile__watchdog_wait(w, c, &err), &err);
    ASSERT_EQ(f.aborts, 0);
    ASSERT_EQ(pile__watchdog_aborted(w), 0);
    pile__watchdog_free(w);
}

static void test_deadline(void)
{
    TEST("a call past its deadline: aborted once, the message names the call and the rank");
    fake f;
    pile__watchdog *w = make(&f, 10, 2);
    pile_err err;
    int a = -1;
    OK(pile__watchdog_begin(w, "reduce-scatter 4096 fp32 elements", &a, &err), &err);
    pile__watchdog_launched(w, a);
    f.t += 10.0;
    OK(pile__watchdog_tick(w, &err), &err); /* at the deadline, not past it */
    ASSERT_EQ(f.aborts, 0);
    f.t += 0.5;
    ASSERT_EQ(pile__watchdog_tick(w, &err), PILE_EIO);
    HAS(err.msg, "cannot reduce-scatter 4096 fp32 elements (rank 1 of 4): not finished after 10 s");
    HAS(err.msg, "a peer died, hung");
    HAS(err.msg, "aborted");
    char first[PILE_ERR_MSG_MAX];
    snprintf(first, sizeof first, "%s", err.msg);
    assert_failed_for_good(w, &f, first);
    pile__watchdog_free(w);
}

static void test_async_error(void)
{
    TEST("an async error of the communicator: aborted, charged to the oldest call pending");
    fake f;
    pile__watchdog *w = make(&f, 600, 4);
    pile_err err;
    int a = -1, b = -1;
    OK(pile__watchdog_begin(w, "allreduce 100 fp32 elements", &a, &err), &err);
    pile__watchdog_launched(w, a);
    OK(pile__watchdog_begin(w, "all-gather 100 bf16 elements", &b, &err), &err);
    pile__watchdog_launched(w, b);
    f.state = -1;
    ASSERT_EQ(pile__watchdog_tick(w, &err), PILE_EIO);
    HAS(err.msg, "cannot allreduce 100 fp32 elements (rank 1 of 4): NCCL: remote process exited");
    char first[PILE_ERR_MSG_MAX];
    snprintf(first, sizeof first, "%s", err.msg);
    assert_failed_for_good(w, &f, first);
    pile__watchdog_free(w);

    TEST("a call whose completion fails (the event's error): aborted, naming that call");
    w = make(&f, 600, 4);
    OK(pile__watchdog_begin(w, "allreduce 100 fp32 elements", &a, &err), &err);
    pile__watchdog_launched(w, a);
    OK(pile__watchdog_begin(w, "broadcast 9 fp16 elements", &b, &err), &err);
    pile__watchdog_launched(w, b);
    f.done[b] = -1;
    ASSERT_EQ(pile__watchdog_wait(w, a, &err), PILE_EIO); /* the caller waiting on a learns of b */
    HAS(err.msg, "cannot broadcast 9 fp16 elements (rank 1 of 4): CUDA: an illegal memory access");
    snprintf(first, sizeof first, "%s", err.msg);
    assert_failed_for_good(w, &f, first);
    pile__watchdog_free(w);
}

static void test_enqueue(void)
{
    TEST("an enqueue in progress is waited for until it is enqueued");
    fake f;
    pile__watchdog *w = make(&f, 10, 2);
    pile_err err;
    int a = -1;
    OK(pile__watchdog_begin(w, "open the NCCL communicator of 4 ranks", &a, &err), &err);
    f.state = 1;
    f.state_polls = 50;
    OK(pile__watchdog_wait_enqueued(w, a, &err), &err);
    ASSERT_EQ(f.state, 0);
    ASSERT(f.t > 1000.0 && f.t < 1010.0);
    pile__watchdog_end(w, a);
    f.t += 100; /* a free slot has no deadline */
    OK(pile__watchdog_tick(w, &err), &err);
    ASSERT_EQ(f.aborts, 0);
    pile__watchdog_free(w);

    TEST("an enqueue that stays in progress: the deadline aborts it");
    w = make(&f, 10, 2);
    OK(pile__watchdog_begin(w, "open the NCCL communicator of 4 ranks", &a, &err), &err);
    f.state = 1; /* for good */
    ASSERT_EQ(pile__watchdog_wait_enqueued(w, a, &err), PILE_EIO);
    HAS(err.msg, "cannot open the NCCL communicator of 4 ranks (rank 1 of 4): still being enqueued after 10 s");
    ASSERT(f.t > 1010.0 && f.t < 1011.0);
    char first[PILE_ERR_MSG_MAX];
    snprintf(first, sizeof first, "%s", err.msg);
    assert_failed_for_good(w, &f, first);
    pile__watchdog_free(w);

    TEST("an enqueue that returns an error: aborted with its message");
    w = make(&f, 10, 2);
    OK(pile__watchdog_begin(w, "allreduce 3 fp32 elements", &a, &err), &err);
    ASSERT_EQ(pile__watchdog_fail(w, a, "NCCL: invalid usage", &err), PILE_EIO);
    ASSERT_STR_EQ(err.msg,
                  "cannot allreduce 3 fp32 elements (rank 1 of 4): NCCL: invalid usage; the communicator was aborted");
    snprintf(first, sizeof first, "%s", err.msg);
    assert_failed_for_good(w, &f, first);
    pile__watchdog_free(w);
}

/* An NCCL call as enqueue runs it: answers `answer`, counts its calls. */
typedef struct fake_call {
    fake *f;
    int answer, calls;
} fake_call;

static int f_enqueue(void *arg, char *why, size_t cap)
{
    fake_call *c = arg;
    c->calls++;
    if (c->answer == 1) c->f->state = 1; /* in progress: the communicator's state says so */
    if (c->answer < 0) snprintf(why, cap, "ncclAllReduce: invalid usage");
    return c->answer;
}

static void test_enqueue_call(void)
{
    TEST("enqueue: a call enqueued at once, one in progress waited for, one failing aborts");
    fake f;
    pile__watchdog *w = make(&f, 10, 2);
    pile_err err;
    int a = -1;
    fake_call call = {&f, 0, 0};
    OK(pile__watchdog_begin(w, "allreduce 3 fp32 elements", &a, &err), &err);
    OK(pile__watchdog_enqueue(w, a, f_enqueue, &call, &err), &err);
    ASSERT_EQ(call.calls, 1);
    pile__watchdog_launched(w, a);
    f.done[a] = 1;
    OK(pile__watchdog_wait(w, a, &err), &err);
    call.answer = 1;
    f.state_polls = 5;
    OK(pile__watchdog_begin(w, "allreduce 3 fp32 elements", &a, &err), &err);
    OK(pile__watchdog_enqueue(w, a, f_enqueue, &call, &err), &err);
    ASSERT_EQ(f.state, 0); /* waited until enqueued */
    ASSERT_EQ(f.aborts, 0);
    pile__watchdog_end(w, a);
    call.answer = -1;
    OK(pile__watchdog_begin(w, "allreduce 3 fp32 elements", &a, &err), &err);
    ASSERT_EQ(pile__watchdog_enqueue(w, a, f_enqueue, &call, &err), PILE_EIO);
    ASSERT_STR_EQ(err.msg, "cannot allreduce 3 fp32 elements (rank 1 of 4): ncclAllReduce: invalid usage; the "
                           "communicator was aborted");
    ASSERT_EQ(f.aborts, 1);
    const int calls = call.calls;
    ASSERT_EQ(pile__watchdog_enqueue(w, a, f_enqueue, &call, &err), PILE_EIO);
    ASSERT_EQ(call.calls, calls); /* never called on an aborted communicator */
    pile__watchdog_free(w);
}

static void test_slots(void)
{
    TEST("every slot busy: a new call waits for the oldest to finish");
    fake f;
    pile__watchdog *w = make(&f, 10, 2);
    pile_err err;
    int a = -1, b = -1, c = -1;
    OK(pile__watchdog_begin(w, "all-gather 1 bf16 elements", &a, &err), &err);
    pile__watchdog_launched(w, a);
    OK(pile__watchdog_begin(w, "all-gather 2 bf16 elements", &b, &err), &err);
    pile__watchdog_launched(w, b);
    f.done_polls[a] = 20;
    const double t0 = f.t;
    OK(pile__watchdog_begin(w, "all-gather 3 bf16 elements", &c, &err), &err);
    ASSERT_EQ(c, a);
    ASSERT(f.t > t0); /* it waited */
    ASSERT_EQ(f.aborts, 0);
    pile__watchdog_free(w);

    TEST("every slot busy with calls that never finish: the wait ends at the oldest's deadline");
    w = make(&f, 10, 2);
    OK(pile__watchdog_begin(w, "all-gather 1 bf16 elements", &a, &err), &err);
    pile__watchdog_launched(w, a);
    f.t += 1;
    OK(pile__watchdog_begin(w, "all-gather 2 bf16 elements", &b, &err), &err);
    pile__watchdog_launched(w, b);
    ASSERT_EQ(pile__watchdog_begin(w, "all-gather 3 bf16 elements", &c, &err), PILE_EIO);
    HAS(err.msg, "cannot all-gather 1 bf16 elements (rank 1 of 4): not finished after 10 s");
    ASSERT_EQ(f.aborts, 1);
    pile__watchdog_free(w);

    TEST("a watchdog of no slots or no timeout is refused");
    pile__watchdog *bad = (pile__watchdog *)&err;
    const pile__watchdog_io io = {&f, f_state, f_done, f_abort, f_now, f_sleep};
    ASSERT_EQ(pile__watchdog_create(&bad, &io, 0, 1, 10, 0, &err), PILE_EINVAL);
    ASSERT(bad == NULL);
    ASSERT_EQ(pile__watchdog_create(&bad, &io, 0, 1, 0, 4, &err), PILE_EINVAL);
    pile__watchdog_free(NULL);
}

static void test_thread(void)
{
    TEST("the watchdog's thread aborts a hung call with no caller waiting (real time, 50 ms timeout)");
    fake f;
    pile__watchdog *w = make(&f, 0.05, 2);
    f.real_clock = 1;
    pile_err err;
    int a = -1;
    /* begin reads the clock: the real one from here on */
    OK(pile__watchdog_begin(w, "allreduce 5 fp32 elements", &a, &err), &err);
    pile__watchdog_launched(w, a);
    OK(pile__watchdog_start(w, 0.002, &err), &err);
    /* a loaded CI machine may be slow to schedule the thread: up to 20 s */
    for (int i = 0; i < 2000 && !pile__watchdog_aborted(w); i++) uv_sleep(10);
    ASSERT_EQ(pile__watchdog_aborted(w), 1);
    int b = -1;
    ASSERT_EQ(pile__watchdog_begin(w, "allreduce 6 fp32 elements", &b, &err), PILE_EIO);
    HAS(err.msg, "cannot allreduce 5 fp32 elements (rank 1 of 4): not finished after 0 s");
    pile__watchdog_free(w); /* joins the thread */
    ASSERT_EQ(f.aborts, 1);

    TEST("the thread leaves a call that finishes alone, and stops at free");
    w = make(&f, 5, 2);
    f.real_clock = 1;
    OK(pile__watchdog_begin(w, "allreduce 5 fp32 elements", &a, &err), &err);
    pile__watchdog_launched(w, a);
    OK(pile__watchdog_start(w, 0.002, &err), &err);
    uv_sleep(20);
    ASSERT_EQ(pile__watchdog_aborted(w), 0);
    pile__watchdog_free(w);
    ASSERT_EQ(f.aborts, 0);
}

int main(void)
{
    test_finishes();
    test_deadline();
    test_async_error();
    test_enqueue();
    test_enqueue_call();
    test_slots();
    test_thread();
    return TEST_DONE();
}
