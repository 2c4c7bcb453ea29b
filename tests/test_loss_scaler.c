/* Tests of the fp16 loss scaler (trainer/loss_scaler.h) on its rules, each
 * against a series worked out by hand: static scaling, growth after the
 * window, hysteresis with and without consecutive refills, the floor and
 * the error under it, the fp32 ceiling, the state through JSON (a resumed
 * series equal to an uninterrupted one) and the refusals of bad settings
 * and states. tests/reference/loss_scaler_ref.py compares long series with
 * DeepSpeed's own scaler. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "loss_scaler.h"
#include "pile_test.h"

/* Feeds pattern ('0' clean, '1' overflow) and checks the scale each
 * backward used and the next one after each update (want[i] is the scale
 * after update i, as a power of two when pow2, else as is). Returns the
 * number of mismatches. */
static int run(pile_loss_scaler *s, const char *pattern, const double *want_next)
{
    int bad = 0;
    pile_err err;
    for (size_t i = 0; pattern[i]; i++) {
        double before = pile_loss_scaler_scale(s);
        pile_loss_scaler_step st;
        int rc = pile_loss_scaler_update(s, pattern[i] == '1', &st, &err);
        if (rc < 0) {
            PILE_FAIL_("update %zu failed: %s", i, err.msg);
            return bad + 1;
        }
        if (st.skip != (pattern[i] == '1') || st.scale != before || st.next_scale != want_next[i] ||
            pile_loss_scaler_scale(s) != want_next[i]) {
            if (bad++ < 3)
                PILE_FAIL_("update %zu ('%c'): used %g, next %g, skip %d; want used %g, next %g", i, pattern[i],
                           st.scale, st.next_scale, st.skip, before, want_next[i]);
        }
    }
    return bad;
}

static pile_loss_scaler *make(double static_scale, int power, int window, int hysteresis, int consecutive,
                              double min_scale)
{
    pile_loss_scaler_config c;
    pile_loss_scaler_config_defaults(&c);
    c.loss_scale = static_scale;
    c.initial_scale_power = power;
    c.loss_scale_window = window;
    c.hysteresis = hysteresis;
    c.consecutive_hysteresis = consecutive;
    c.min_loss_scale = min_scale;
    pile_loss_scaler *s = NULL;
    pile_err err;
    OK(pile_loss_scaler_create(&s, &c, &err), &err);
    return s;
}

static void test_rules(void)
{
    pile_err err;
    TEST("defaults: DeepSpeed's (dynamic, 2^16, window 1000, hysteresis 2, min 1)");
    pile_loss_scaler_config c;
    pile_loss_scaler_config_defaults(&c);
    ASSERT(c.loss_scale == 0);
    ASSERT_EQ(c.initial_scale_power, 16);
    ASSERT_EQ(c.loss_scale_window, 1000);
    ASSERT_EQ(c.hysteresis, 2);
    ASSERT_EQ(c.consecutive_hysteresis, 0);
    ASSERT(c.min_loss_scale == 1);
    pile_loss_scaler *s = NULL;
    OK(pile_loss_scaler_create(&s, &c, &err), &err);
    ASSERT(s && pile_loss_scaler_scale(s) == 65536);
    pile_loss_scaler_free(s);
    pile_loss_scaler_free(NULL);

    TEST("static: the scale never moves, overflows skip and are counted");
    s = make(1024, 16, 2, 2, 0, 1);
    {
        const double want[] = {1024, 1024, 1024, 1024, 1024, 1024, 1024, 1024};
        ASSERT_EQ(run(s, "01111000", want), 0);
        ASSERT_EQ(pile_loss_scaler_skipped(s), 4);
    }
    pile_loss_scaler_free(s);

    TEST("growth: doubles on the clean step after `window` clean ones, then every `window`");
    s = make(0, 4, 3, 1, 0, 1);
    {
        /* updates 0..2 clean: none before them; update 3 has 3 behind it */
        const double want[] = {16, 16, 16, 32, 32, 32, 64, 64, 64, 128};
        ASSERT_EQ(run(s, "0000000000", want), 0);
    }
    pile_loss_scaler_free(s);

    TEST("hysteresis 1: every overflow halves; the window counts from the overflow");
    s = make(0, 4, 2, 1, 0, 1);
    {
        /* overflow at 1 -> 8; clean 2, 3 (1 behind), 4 (2 behind: x2) */
        const double want[] = {16, 8, 8, 8, 16, 16, 32, 16, 8, 8, 8, 16};
        ASSERT_EQ(run(s, "010000011000", want), 0);
        ASSERT_EQ(pile_loss_scaler_skipped(s), 3);
    }
    pile_loss_scaler_free(s);

    TEST("hysteresis 3: two overflows tolerated, the third halves; only growth refills");
    s = make(0, 4, 4, 3, 0, 1);
    {
        /* 1, 3: tolerated (left 2, 1) though clean steps lie between; 5
         * halves (left stays 1); 7 halves again; clean 8..12: update 12
         * has 4 clean behind it: doubles and refills to 3; 13, 14
         * tolerated; 15 halves */
        const double want[] = {16, 16, 16, 16, 16, 8, 8, 4, 4, 4, 4, 4, 8, 8, 8, 4};
        pile_loss_scaler_step st;
        ASSERT_EQ(run(s, "0101010100000111", want), 0);
        OK(pile_loss_scaler_update(s, 0, &st, &err), &err);
        ASSERT_EQ(st.hysteresis_left, 1);
    }
    pile_loss_scaler_free(s);

    TEST("consecutive hysteresis: a clean step refills, so only overflows in a row count");
    s = make(0, 4, 100, 2, 1, 1);
    {
        /* 1, 3, 5, 7 each tolerated (refilled between); 8 right after 7
         * halves; 10 tolerated, 11 halves */
        const double want[] = {16, 16, 16, 16, 16, 16, 16, 16, 8, 8, 8, 4};
        ASSERT_EQ(run(s, "010101011011", want), 0);
    }
    pile_loss_scaler_free(s);

    TEST("floor: never under min_loss_scale; an overflow at it with no tolerance is an error");
    s = make(0, 2, 1000, 1, 0, 3);
    {
        /* 4 -> max(2, 3) = 3, then the overflow at 3 cannot lower it */
        const double want[] = {4, 3, 3};
        ASSERT_EQ(run(s, "010", want), 0);
        pile_loss_scaler_step st = {0};
        ASSERT_EQ(pile_loss_scaler_update(s, 1, &st, &err), PILE_ELIMIT);
        ASSERT(strstr(err.msg, "minimum loss scale 3") != NULL);
        /* unchanged: a clean step goes on from where it was */
        ASSERT(pile_loss_scaler_scale(s) == 3);
        ASSERT_EQ(pile_loss_scaler_skipped(s), 1);
    }
    pile_loss_scaler_free(s);
    s = make(0, 0, 1000, 2, 0, 1);
    {
        /* with tolerance left an overflow at the floor only uses it up */
        const double want[] = {1};
        ASSERT_EQ(run(s, "1", want), 0);
        ASSERT_EQ(pile_loss_scaler_update(s, 1, NULL, &err), PILE_ELIMIT);
    }
    pile_loss_scaler_free(s);
    /* a static scale has no floor */
    s = make(1, 0, 1000, 1, 0, 1);
    ASSERT_EQ(pile_loss_scaler_update(s, 1, NULL, &err), 0);
    ASSERT_EQ(pile_loss_scaler_update(s, 1, NULL, &err), 0);
    pile_loss_scaler_free(s);

    TEST("ceiling: the scale stops doubling before it passes the largest fp32");
    s = make(0, 126, 1, 1, 0, 1);
    {
        const double want[] = {0x1p126, 0x1p127, 0x1p127, 0x1p127};
        ASSERT_EQ(run(s, "0000", want), 0);
        ASSERT(isfinite((float)pile_loss_scaler_scale(s)));
    }
    pile_loss_scaler_free(s);
}

static void test_config_checks(void)
{
    TEST("settings out of range refused, each named");
    static const struct {
        double loss_scale;
        int power, window, hysteresis;
        double min_scale;
        const char *name;
    } bad[] = {
        {-1, 16, 1000, 2, 1, "loss_scale"},
        {1e39, 16, 1000, 2, 1, "loss_scale"},
        {NAN, 16, 1000, 2, 1, "loss_scale"},
        {0, -1, 1000, 2, 1, "initial_scale_power"},
        {0, 128, 1000, 2, 1, "initial_scale_power"},
        {0, 16, 0, 2, 1, "loss_scale_window"},
        {0, 16, 1000, 0, 1, "hysteresis"},
        {0, 16, 1000, 2, 0, "min_loss_scale"},
        {0, 16, 1000, 2, INFINITY, "min_loss_scale"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pile_loss_scaler_config c;
        pile_loss_scaler_config_defaults(&c);
        c.loss_scale = bad[i].loss_scale;
        c.initial_scale_power = bad[i].power;
        c.loss_scale_window = bad[i].window;
        c.hysteresis = bad[i].hysteresis;
        c.min_loss_scale = bad[i].min_scale;
        pile_loss_scaler *s = (pile_loss_scaler *)&c; /* must be reset to NULL */
        pile_err err;
        ASSERT_EQ(pile_loss_scaler_create(&s, &c, &err), PILE_EINVAL);
        ASSERT(s == NULL);
        if (strncmp(err.msg, bad[i].name, strlen(bad[i].name)))
            PILE_FAIL_("case %zu: '%s' does not name %s", i, err.msg, bad[i].name);
    }
    /* a static scale uses none of the dynamic settings (DeepSpeed checks
     * them only for a dynamic one) */
    pile_loss_scaler_config c;
    pile_loss_scaler_config_defaults(&c);
    c.loss_scale = 8, c.min_loss_scale = 0, c.loss_scale_window = 0, c.hysteresis = 0, c.initial_scale_power = 500;
    pile_loss_scaler *s = NULL;
    pile_err err;
    ASSERT_EQ(pile_loss_scaler_create(&s, &c, &err), 0);
    ASSERT(s && pile_loss_scaler_scale(s) == 8);
    if (s) {
        /* and its state reads back */
        pile_buf b = {0};
        pile_json *j = NULL;
        ASSERT_EQ(pile_loss_scaler_update(s, 1, NULL, &err), 0);
        ASSERT_EQ(pile_loss_scaler_state_to_json(s, &b), 0);
        ASSERT_EQ(pile_json_parse(b.data, b.len, "state", &j, &err), 0);
        ASSERT_EQ(pile_loss_scaler_state_from_json(s, j, "state", &err), 0);
        ASSERT_EQ(pile_loss_scaler_skipped(s), 1);
        pile_json_free(j);
        pile_buf_free(&b);
    }
    pile_loss_scaler_free(s);
}

/* state JSON of s parsed into *j */
static int state_of(pile_loss_scaler *s, pile_json **j, pile_err *err)
{
    pile_buf b = {0};
    int rc = pile_loss_scaler_state_to_json(s, &b);
    if (rc == 0) rc = pile_json_parse(b.data, b.len, "state", j, err);
    pile_buf_free(&b);
    return rc;
}

static int restore_text(pile_loss_scaler *s, const char *text, pile_err *err)
{
    pile_json *j = NULL;
    int rc = pile_json_parse(text, strlen(text), "state", &j, err);
    if (rc == 0) rc = pile_loss_scaler_state_from_json(s, j, "trainer_state.json", err);
    pile_json_free(j);
    return rc;
}

static void test_state(void)
{
    pile_err err;
    TEST("state through JSON: a resumed series equals the uninterrupted one, bit for bit");
    enum { N = 3000 };
    static char pattern[N + 1];
    pile_test_rng_state = 8;
    for (int i = 0; i < N; i++) {
        /* bursts of overflows between long clean stretches */
        uint64_t r = pile_test_rng() % 1000;
        pattern[i] = r < 15 || (i > 0 && pattern[i - 1] == '1' && r < 400) ? '1' : '0';
    }
    pattern[N] = '\0';
    static const int cuts[] = {0, 1, 7, 100, 1234, 2999};
    for (int cfg = 0; cfg < 4; cfg++) {
        int hyst = cfg & 1 ? 3 : 1, consecutive = cfg >> 1;
        pile_loss_scaler *whole = make(0, 12, 50, hyst, consecutive, 0x1p-60);
        static double want[N];
        for (int i = 0; i < N && whole; i++) {
            OK(pile_loss_scaler_update(whole, pattern[i] == '1', NULL, &err), &err);
            want[i] = pile_loss_scaler_scale(whole);
        }
        for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
            pile_loss_scaler *a = make(0, 12, 50, hyst, consecutive, 0x1p-60), *b = make(0, 12, 50, hyst, consecutive, 0x1p-60);
            if (!a || !b) break;
            char saved = pattern[cuts[k]];
            pattern[cuts[k]] = '\0';
            int bad = run(a, pattern, want);
            pattern[cuts[k]] = saved;
            pile_json *j = NULL;
            OK(state_of(a, &j, &err), &err);
            OK(pile_loss_scaler_state_from_json(b, j, "trainer_state.json", &err), &err);
            pile_json_free(j);
            bad += run(b, pattern + cuts[k], want + cuts[k]);
            ASSERT_EQ(pile_loss_scaler_skipped(b), pile_loss_scaler_skipped(whole));
            if (bad) PILE_FAIL_("config %d, cut at %d: resumed series differs", cfg, cuts[k]);
            pile_loss_scaler_free(a);
            pile_loss_scaler_free(b);
        }
        pile_loss_scaler_free(whole);
    }

    TEST("state JSON: its fields; a static scaler keeps its configured scale");
    pile_loss_scaler *s = make(0, 5, 2, 2, 0, 1);
    pile_loss_scaler_update(s, 1, NULL, &err);
    pile_buf b = {0};
    OK(pile_loss_scaler_state_to_json(s, &b), &err);
    ASSERT_STR_EQ(b.data, "{\"dynamic\": true, \"scale\": 32, \"iteration\": 1, \"last_overflow\": 0, "
                          "\"hysteresis_left\": 1, \"skipped_steps\": 1}");
    pile_buf_free(&b);
    pile_loss_scaler *st = make(128, 5, 2, 2, 0, 1);
    OK(restore_text(st, "{\"dynamic\": false, \"scale\": 4096, \"iteration\": 9, \"last_overflow\": 8, "
                        "\"hysteresis_left\": 2, \"skipped_steps\": 3}", &err), &err);
    ASSERT(pile_loss_scaler_scale(st) == 128);
    ASSERT_EQ(pile_loss_scaler_skipped(st), 3);
    pile_loss_scaler_free(st);

    TEST("state JSON: bad or foreign states refused, the scaler unchanged");
    static const struct {
        const char *text;
        int code;
        const char *says;
    } bad[] = {
        {"[]", PILE_EFORMAT, "not a JSON object"},
        {"{\"scale\": 8, \"iteration\": 1, \"last_overflow\": 0, \"hysteresis_left\": 1, \"skipped_steps\": 1}",
         PILE_EFORMAT, "'dynamic'"},
        {"{\"dynamic\": true, \"scale\": -8, \"iteration\": 1, \"last_overflow\": 0, \"hysteresis_left\": 1, "
         "\"skipped_steps\": 1}", PILE_EFORMAT, "'scale'"},
        {"{\"dynamic\": true, \"scale\": 1e39, \"iteration\": 1, \"last_overflow\": 0, \"hysteresis_left\": 1, "
         "\"skipped_steps\": 1}", PILE_EFORMAT, "'scale'"},
        {"{\"dynamic\": true, \"scale\": 8, \"iteration\": 1.5, \"last_overflow\": 0, \"hysteresis_left\": 1, "
         "\"skipped_steps\": 1}", PILE_EFORMAT, "'iteration'"},
        {"{\"dynamic\": true, \"scale\": 8, \"iteration\": 3, \"last_overflow\": 3, \"hysteresis_left\": 1, "
         "\"skipped_steps\": 1}", PILE_EFORMAT, "'last_overflow'"},
        {"{\"dynamic\": true, \"scale\": 8, \"iteration\": 3, \"last_overflow\": 1, \"hysteresis_left\": 0, "
         "\"skipped_steps\": 1}", PILE_EFORMAT, "'hysteresis_left'"},
        {"{\"dynamic\": true, \"scale\": 8, \"iteration\": 3, \"last_overflow\": 1, \"hysteresis_left\": 1, "
         "\"skipped_steps\": 4}", PILE_EFORMAT, "'skipped_steps'"},
        {"{\"dynamic\": true, \"scale\": 8, \"iteration\": 3, \"last_overflow\": 1, \"hysteresis_left\": 3, "
         "\"skipped_steps\": 1}", PILE_EMISMATCH, "tolerates 3 more overflows but hysteresis is 2"},
        {"{\"dynamic\": false, \"scale\": 8, \"iteration\": 3, \"last_overflow\": 1, \"hysteresis_left\": 1, "
         "\"skipped_steps\": 1}", PILE_EMISMATCH, "is static but the settings ask for dynamic"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pile_json *j = NULL;
        if (pile_json_parse(bad[i].text, strlen(bad[i].text), "state", &j, &err) < 0) {
            PILE_FAIL_("case %zu does not parse: %s", i, err.msg);
            continue;
        }
        int rc = pile_loss_scaler_state_from_json(s, j, "ckpt/trainer_state.json", &err);
        pile_json_free(j);
        if (rc != bad[i].code || !strstr(err.msg, bad[i].says) || !strstr(err.msg, "'ckpt/trainer_state.json'"))
            PILE_FAIL_("case %zu: %d '%s', want %d saying %s", i, rc, err.msg, bad[i].code, bad[i].says);
    }
    OK(pile_loss_scaler_state_to_json(s, &b), &err);
    ASSERT_STR_EQ(b.data, "{\"dynamic\": true, \"scale\": 32, \"iteration\": 1, \"last_overflow\": 0, "
                          "\"hysteresis_left\": 1, \"skipped_steps\": 1}");
    pile_buf_free(&b);
    pile_loss_scaler_free(s);
}

int main(void)
{
    test_rules();
    test_config_checks();
    test_state();
    return TEST_DONE();
}
