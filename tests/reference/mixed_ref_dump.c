/* The mixed-precision pieces of the trainer (precision.h, loss_scaler.h)
 * driven from files, for the reference checks in this folder
 * (precision_ref.py against numpy and PyTorch, loss_scaler_ref.py against
 * DeepSpeed) and for bench/precision.sh.
 *
 *   mixed_ref_dump convert IN OUT    IN: n fp32 bit patterns (u32, little
 *       endian); OUT: six blocks of n: bf16 one by one (u16), bf16 by the
 *       array function, fp16 one by one, fp16 by the array function, IN
 *       rounded in place to bf16 (u32), rounded in place to fp16
 *   mixed_ref_dump decode OUT        every 16-bit pattern to fp32 (u32),
 *       four blocks of 65536: bf16 one by one, bf16 array, fp16 one by one,
 *       fp16 array
 *   mixed_ref_dump scaler DS_CONFIG PATTERN [RESUME_AT]
 *       the loss scaler set up from a ds_config.json's fp16 block as
 *       pile-trainer reads it, fed PATTERN ('0' a clean step, '1' an
 *       overflow); one line per step: the scale its backward used, the next
 *       scale, skipped (0/1); "error MESSAGE" and stop where the scaler
 *       refuses. RESUME_AT k: after k steps the state goes through JSON
 *       into a new scaler, as a resumed run's would.
 *   mixed_ref_dump bench MIB REPEAT [DATA]  throughput of the array paths
 *       on MIB MiB of fp32 (one thread), as a Markdown table: GB/s of fp32
 *       read, best of REPEAT; DATA gets the values, for the peers' turn
 * Exit status 0, or 1 with a message on stderr. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "loss_scaler.h"
#include "precision.h"
#include "train_config.h"

static int fail(const char *what)
{
    fprintf(stderr, "mixed_ref_dump: %s\n", what);
    return 1;
}

static void *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        char *b = realloc(buf, cap *= 2);
        if (!b) free(buf);
        buf = b;
    }
    fclose(f);
    *len = n;
    return buf;
}

static int write_blocks(FILE *f, const void *p, size_t bytes) { return fwrite(p, 1, bytes, f) == bytes ? 0 : -1; }

static int cmd_convert(const char *in, const char *out)
{
    size_t len;
    float *x = read_all(in, &len);
    if (!x) return fail("cannot read the input");
    size_t n = len / 4;
    uint16_t *h = malloc(n * 2 + 1);
    float *r = malloc(n * 4 + 1);
    FILE *f = fopen(out, "wb");
    int rc = !h || !r || !f;
    for (int fmt = 0; fmt < 2 && !rc; fmt++) {
        for (size_t i = 0; i < n; i++) h[i] = fmt ? pile_fp32_to_fp16(x[i]) : pile_fp32_to_bf16(x[i]);
        rc |= write_blocks(f, h, n * 2);
        if (fmt) pile_fp32_to_fp16_array(h, x, n);
        else pile_fp32_to_bf16_array(h, x, n);
        rc |= write_blocks(f, h, n * 2);
    }
    for (int fmt = 0; fmt < 2 && !rc; fmt++) {
        memcpy(r, x, n * 4);
        pile_precision_round(r, n, fmt ? PILE_PRECISION_FP16 : PILE_PRECISION_BF16);
        rc |= write_blocks(f, r, n * 4);
    }
    if (f && fclose(f)) rc = 1;
    free(x);
    free(h);
    free(r);
    return rc ? fail("cannot write the output") : 0;
}

static int cmd_decode(const char *out)
{
    static uint16_t all[65536];
    static float v[65536];
    for (uint32_t i = 0; i < 65536; i++) all[i] = (uint16_t)i;
    FILE *f = fopen(out, "wb");
    int rc = !f;
    for (int fmt = 0; fmt < 2 && !rc; fmt++) {
        for (uint32_t i = 0; i < 65536; i++) v[i] = fmt ? pile_fp16_to_fp32(all[i]) : pile_bf16_to_fp32(all[i]);
        rc |= write_blocks(f, v, sizeof v);
        if (fmt) pile_fp16_to_fp32_array(v, all, 65536);
        else pile_bf16_to_fp32_array(v, all, 65536);
        rc |= write_blocks(f, v, sizeof v);
    }
    if (f && fclose(f)) rc = 1;
    return rc ? fail("cannot write the output") : 0;
}

/* A scaler set up from a ds_config.json as pile-trainer's settings read it. */
static int scaler_of(const char *ds, pile_loss_scaler **s, pile_err *err)
{
    pile_train_config c;
    pile_train_config_defaults(&c);
    int rc = pile_train_config_load_deepspeed(&c, ds, NULL, err);
    if (rc == 0) rc = pile_train_config_check(&c, err);
    pile_loss_scaler_config lc;
    pile_train_config_loss_scaler(&c, &lc);
    if (rc == 0) rc = pile_loss_scaler_create(s, &lc, err);
    return rc;
}

static int cmd_scaler(const char *ds, const char *pattern, long resume_at)
{
    pile_err err;
    pile_loss_scaler *s = NULL;
    if (scaler_of(ds, &s, &err) < 0) return fail(err.msg);
    for (long i = 0; pattern[i]; i++) {
        if (i == resume_at) {
            pile_buf b = {0};
            pile_json *j = NULL;
            pile_loss_scaler *t = NULL;
            int rc = pile_loss_scaler_state_to_json(s, &b);
            if (rc == 0) rc = pile_json_parse(b.data, b.len, "state", &j, &err);
            if (rc == 0) rc = scaler_of(ds, &t, &err);
            if (rc == 0) rc = pile_loss_scaler_state_from_json(t, j, "state", &err);
            pile_json_free(j);
            pile_buf_free(&b);
            pile_loss_scaler_free(s);
            s = t;
            if (rc < 0) {
                pile_loss_scaler_free(s);
                return fail(err.msg);
            }
        }
        pile_loss_scaler_step st;
        if (pile_loss_scaler_update(s, pattern[i] == '1', &st, &err) < 0) {
            printf("error %s\n", err.msg);
            break;
        }
        printf("%.17g %.17g %d\n", st.scale, st.next_scale, st.skip);
    }
    pile_loss_scaler_free(s);
    return fflush(stdout) ? fail("cannot write the output") : 0;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmd_bench(long mib, int repeat, const char *data)
{
    size_t n = (size_t)mib << 18;
    float *x = malloc(n * 4), *y = malloc(n * 4);
    uint16_t *h = malloc(n * 2);
    if (!x || !y || !h || repeat < 1) return fail("out of memory, or REPEAT < 1");
    /* gradient-like values over many binades, some in fp16's subnormals */
    uint64_t z = 1;
    for (size_t i = 0; i < n; i++) {
        z = z * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = ldexpf((float)(z >> 40) / 16777216.0f - 0.5f, (int)(z >> 20 & 31) - 24);
    }
    if (data) {
        FILE *f = fopen(data, "wb");
        int bad = !f || fwrite(x, 4, n, f) != n;
        if (f && fclose(f)) bad = 1;
        if (bad) return fail("cannot write the bench data");
    }
    const char *names[] = {"memcpy of the same bytes (for scale)", "round in place to bf16", "round in place to fp16",
                           "fp32 -> bf16 array", "fp32 -> fp16 array", "fp16 -> fp32 array"};
    printf("| operation (%ld MiB of fp32) | GB/s (fp32 bytes) | ns/value |\n|---|---|---|\n", mib);
    for (int op = 0; op < 6; op++) {
        double best = INFINITY;
        for (int k = 0; k < repeat; k++) {
            memcpy(y, x, n * 4);
            double t0 = now();
            switch (op) {
            case 0: memcpy(y, x, n * 4); break;
            case 1: pile_precision_round(y, n, PILE_PRECISION_BF16); break;
            case 2: pile_precision_round(y, n, PILE_PRECISION_FP16); break;
            case 3: pile_fp32_to_bf16_array(h, x, n); break;
            case 4: pile_fp32_to_fp16_array(h, x, n); break;
            case 5: pile_fp16_to_fp32_array(y, h, n); break;
            }
            double t = now() - t0;
            if (t < best) best = t;
        }
        printf("| %s | %.2f | %.3f |\n", names[op], (double)n * 4 / best / 1e9, best / (double)n * 1e9);
    }
    free(x);
    free(y);
    free(h);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "convert")) return cmd_convert(argv[2], argv[3]);
    if (argc == 3 && !strcmp(argv[1], "decode")) return cmd_decode(argv[2]);
    if ((argc == 4 || argc == 5) && !strcmp(argv[1], "scaler"))
        return cmd_scaler(argv[2], argv[3], argc == 5 ? atol(argv[4]) : -1);
    if ((argc == 4 || argc == 5) && !strcmp(argv[1], "bench"))
        return cmd_bench(atol(argv[2]), atoi(argv[3]), argc == 5 ? argv[4] : NULL);
    fprintf(stderr, "usage: mixed_ref_dump convert IN OUT | decode OUT | scaler DS_CONFIG PATTERN [RESUME_AT]"
                    " | bench MIB REPEAT [DATA]\n");
    return 2;
}
