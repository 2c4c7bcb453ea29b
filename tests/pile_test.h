/* A tiny TAP test helper (after libuv's test/task.h): each ASSERT prints
 * both sides with file:line on failure. A test program calls TEST(name) for
 * each case and ends with TEST_DONE(), which prints the TAP plan and returns
 * the exit code. Skips: pile_test_skip_all("why") exits 77. */
#ifndef PILE_TEST_H
#define PILE_TEST_H

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int pile_test_n = 0;
static int pile_test_failed = 0;
static int pile_test_cur_failed = 0;
static const char *pile_test_cur = NULL;

static inline void pile_test_end_case(void)
{
    if (!pile_test_cur) return;
    printf("%s %d - %s\n", pile_test_cur_failed ? "not ok" : "ok", pile_test_n, pile_test_cur);
    fflush(stdout);
    if (pile_test_cur_failed) pile_test_failed++;
    pile_test_cur = NULL;
}

#define TEST(name)                 \
    do {                           \
        pile_test_end_case();      \
        pile_test_n++;             \
        pile_test_cur = (name);    \
        pile_test_cur_failed = 0;  \
    } while (0)

#define TEST_DONE()                                  \
    (pile_test_end_case(), printf("1..%d\n", pile_test_n), pile_test_failed ? 1 : 0)

#define PILE_FAIL_(...)                                          \
    do {                                                         \
        printf("# %s:%d: ", __FILE__, __LINE__);                 \
        printf(__VA_ARGS__);                                     \
        printf("\n");                                            \
        pile_test_cur_failed = 1;                                \
    } while (0)

#define ASSERT(cond)                                   \
    do {                                               \
        if (!(cond)) PILE_FAIL_("assertion failed: %s", #cond); \
    } while (0)

#define ASSERT_EQ(a, b)                                                                            \
    do {                                                                                           \
        long long pile_a_ = (long long)(a), pile_b_ = (long long)(b);                              \
        if (pile_a_ != pile_b_) PILE_FAIL_("%s == %s: %lld != %lld", #a, #b, pile_a_, pile_b_);    \
    } while (0)

#define ASSERT_STR_EQ(a, b)                                                                        \
    do {                                                                                           \
        const char *pile_a_ = (a), *pile_b_ = (b);                                                 \
        if (!pile_a_ || !pile_b_ || strcmp(pile_a_, pile_b_) != 0)                                 \
            PILE_FAIL_("%s == %s: \"%s\" != \"%s\"", #a, #b, pile_a_ ? pile_a_ : "(null)",          \
                       pile_b_ ? pile_b_ : "(null)");                                              \
    } while (0)

#define ASSERT_MEM_EQ(a, b, n)                                                 \
    do {                                                                       \
        if (memcmp((a), (b), (n)) != 0) PILE_FAIL_("%s and %s differ in %zu bytes", #a, #b, (size_t)(n)); \
    } while (0)

/* Fails the case and returns from the enclosing function (for setup errors). */
#define ASSERT_OK(expr, errp)                                                              \
    do {                                                                                   \
        int pile_rc_ = (expr);                                                             \
        if (pile_rc_ < 0) {                                                                \
            PILE_FAIL_("%s returned %d: %s", #expr, pile_rc_, (errp) ? (errp)->msg : "");  \
        }                                                                                  \
    } while (0)

/* ASSERT_OK for the address of an error object (&err): without its NULL
 * test, which -Waddress rejects there. */
#define OK(expr, errp)                                                                 \
    do {                                                                               \
        int ok_rc_ = (expr);                                                           \
        if (ok_rc_ < 0) PILE_FAIL_("%s returned %d: %s", #expr, ok_rc_, (errp)->msg); \
    } while (0)

static inline void pile_test_skip_all(const char *why)
{
    printf("1..0 # SKIP %s\n", why);
    fflush(stdout);
    exit(77);
}

/* Makes a fresh folder $TMPDIR/pile-test-<name>-XXXXXX (TMPDIR defaults to
 * /tmp) in buf and returns buf, or NULL with errno set: each test decides
 * itself whether that skips, fails or falls back. */
static inline char *pile_test_tmpdir(char *buf, size_t cap, const char *name)
{
    const char *base = getenv("TMPDIR");
    int len = snprintf(buf, cap, "%s/pile-test-%s-XXXXXX", base && *base ? base : "/tmp", name);
    if (len < 0 || (size_t)len >= cap) {
        errno = ENAMETOOLONG;
        return NULL;
    }
    return mkdtemp(buf);
}

/* The shared corpus folder (PILE_SHARED, else ../shared). */
static inline const char *pile_test_shared(void)
{
    const char *s = getenv("PILE_SHARED");
    return s && *s ? s : "../shared";
}


/* A seeded generator for randomised tests (splitmix64), so a failure
 * reproduces: set pile_test_rng_state, then draw with pile_test_rng(). */
static uint64_t pile_test_rng_state;

static inline uint64_t pile_test_rng(void)
{
    uint64_t z = (pile_test_rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

#endif
