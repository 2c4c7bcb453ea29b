/* The cost of checking rows against their checksums (shard format version
 * 2), for bench/rowcheck.sh:
 *
 *   bench_rowcheck check SHARD
 *       pile_shard_check_row over every row of SHARD, in order: the first
 *       pass hashes each row, the second answers from the record. Prints
 *       rows, row bytes, GB/s of row bytes and ns per row (medians over
 *       chunks of 64 rows).
 *   bench_rowcheck samples DIR_V2 DIR_V1 SEQ N
 *       the trainer's loader (pile_data_sample) filling the first N samples
 *       of SEQ tokens of the first epoch's order, from the same shards in
 *       version 2 (every row checked at its first use) and version 1
 *       (nothing to check), 64 samples from one then the same 64 from the
 *       other. Prints the median ns per sample of each and the median of
 *       their difference: what checking adds to a sample the first time its
 *       row is read.
 *   bench_rowcheck write DIR ROWS MAX_LENGTH
 *       the writer: ROWS rows of MAX_LENGTH pseudo-random 2-byte tokens
 *       written to DIR/w.shard in version 2 and in version 1, alternating,
 *       best of 3 each (fsync and rename included). Prints MB/s of each.
 *
 * Output lines are "key value" pairs for the script to read. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pile_progress.h"
#include "pile_shards.h"
#include "train_data.h"

/* Timings on a shared machine are cut into short chunks, and the median
 * chunk is kept: a chunk that the scheduler interrupted is an outlier, not
 * the answer. */
#define CHUNK 64

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int check(const char *path)
{
    pile_err err;
    pile_shard *s;
    if (pile_shard_open(&s, path, &err)) {
        fprintf(stderr, "bench_rowcheck: %s\n", err.msg);
        return 1;
    }
    const pile_shard_info *in = pile_shard_get_info(s);
    if (!in->row_checksums || in->row_count < CHUNK) {
        fprintf(stderr, "bench_rowcheck: '%s' has no row checksums or too few rows\n", path);
        pile_shard_close(s);
        return 1;
    }
    double row_bytes = (double)in->max_length * in->token_bytes;
    size_t nchunks = (size_t)(in->row_count / CHUNK);
    double *ns = malloc(nchunks * sizeof *ns);
    if (!ns) return 1;
    for (int pass = 0; pass < 2; pass++) {
        const char *key = pass ? "again" : "first";
        for (size_t c = 0; c < nchunks; c++) {
            double t0 = pile_now();
            for (uint64_t r = (uint64_t)c * CHUNK; r < (uint64_t)(c + 1) * CHUNK; r++)
                if (pile_shard_check_row(s, r, &err)) {
                    fprintf(stderr, "bench_rowcheck: %s\n", err.msg);
                    return 1;
                }
            ns[c] = (pile_now() - t0) / CHUNK * 1e9;
        }
        double m = median(ns, nchunks);
        printf("%s_rows %" PRIu64 "\n%s_row_bytes %.0f\n%s_gb_per_s %.3f\n%s_ns_per_row %.1f\n", key,
               (uint64_t)nchunks * CHUNK, key, row_bytes, key, row_bytes / m, key, m);
    }
    free(ns);
    pile_shard_close(s);
    return 0;
}

typedef struct loader {
    pile_data *d;
    int32_t *tok, *tgt, *ds;
} loader;

static void loader_open(loader *l, const char *dir, int seq)
{
    pile_err err;
    if (pile_data_open(&l->d, dir, seq, 0.0, &err)) {
        fprintf(stderr, "bench_rowcheck: %s\n", err.msg);
        exit(1);
    }
    l->tok = malloc((size_t)seq * sizeof *l->tok);
    l->tgt = malloc((size_t)seq * sizeof *l->tgt);
    l->ds = malloc((size_t)seq * sizeof *l->ds);
    if (!l->tok || !l->tgt || !l->ds) exit(1);
}

static void loader_close(loader *l)
{
    free(l->tok);
    free(l->tgt);
    free(l->ds);
    pile_data_close(l->d);
}

/* ns per sample for samples [from, from + CHUNK) of epoch 0's order. */
static double fill(loader *l, uint64_t from, uint64_t *sink)
{
    pile_err err;
    double t0 = pile_now();
    for (uint64_t p = from; p < from + CHUNK; p++) {
        uint64_t i = pile_data_epoch_sample(l->d, 42, 0, p);
        int k = pile_data_sample(l->d, 0, i, 0, l->tok, l->tgt, l->ds, &err);
        if (k < 0) {
            fprintf(stderr, "bench_rowcheck: %s\n", err.msg);
            exit(1);
        }
        *sink += (uint64_t)k + (uint64_t)l->tok[0];
    }
    return (pile_now() - t0) / CHUNK * 1e9;
}

/* The same samples from version 2 and version 1 shards, chunk by chunk in
 * turn, each row read for the first time in each. */
static int samples(const char *v2, const char *v1, int seq, uint64_t n)
{
    loader a, b;
    loader_open(&a, v2, seq);
    loader_open(&b, v1, seq);
    uint64_t avail = pile_data_get_info(a.d)->train_samples;
    if (n > avail) n = avail;
    size_t nchunks = (size_t)(n / CHUNK);
    double *t2 = malloc(nchunks * sizeof *t2), *t1 = malloc(nchunks * sizeof *t1), *dt = malloc(nchunks * sizeof *dt);
    if (!t2 || !t1 || !dt || !nchunks) return 1;
    uint64_t sink = 0;
    for (size_t c = 0; c < nchunks; c++) {
        t2[c] = fill(&a, (uint64_t)c * CHUNK, &sink);
        t1[c] = fill(&b, (uint64_t)c * CHUNK, &sink);
        dt[c] = t2[c] - t1[c];
    }
    printf("seq %d\nsamples %" PRIu64 "\nv2_ns_per_sample %.1f\nv1_ns_per_sample %.1f\ncheck_ns_per_sample %.1f\n"
           "sink %" PRIu64 "\n",
           seq, (uint64_t)nchunks * CHUNK, median(t2, nchunks), median(t1, nchunks), median(dt, nchunks), sink % 10);
    free(t2);
    free(t1);
    free(dt);
    loader_close(&a);
    loader_close(&b);
    return 0;
}

static double write_once(const char *path, uint32_t version, uint64_t rows, uint32_t L, const uint32_t *tokens)
{
    pile_err err;
    pile_shard_params p;
    memset(&p, 0, sizeof p);
    p.max_length = L;
    p.vocab_size = 50257;
    p.eot_id = p.pad_id = 50256;
    p.version = version;
    pile_shard_writer *w;
    double t0 = pile_now();
    int rc = pile_shard_writer_open(&w, path, &p, &err);
    uint16_t sub = 0;
    if (!rc) rc = pile_shard_writer_subset(w, "Pile-CC", 7, &sub, &err);
    pile_shard_doc doc = {0, 0, 0};
    for (uint64_t r = 0; r < rows && !rc; r++)
        rc = pile_shard_writer_add_row(w, tokens + (r % 64), L, r % 8 ? NULL : &doc, r % 8 ? 0 : 1, sub, &err);
    if (!rc) rc = pile_shard_writer_finish(w, NULL, &err);
    pile_shard_writer_close(w);
    if (rc) {
        fprintf(stderr, "bench_rowcheck: %s\n", err.msg);
        exit(1);
    }
    return pile_now() - t0;
}

static int write_bench(const char *dir, uint64_t rows, uint32_t L)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/w.shard", dir);
    uint32_t *tokens = malloc(((size_t)L + 64) * sizeof *tokens);
    if (!tokens) return 1;
    uint64_t x = 88172645463325252ull;
    for (uint32_t i = 0; i < L + 64; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        tokens[i] = (uint32_t)(x % 50256);
    }
    double best[3] = {1e30, 1e30, 1e30};
    for (int rep = 0; rep < 3; rep++)
        for (uint32_t v = 1; v <= 2; v++) {
            double t = write_once(path, v, rows, L, tokens);
            best[v] = t < best[v] ? t : best[v];
        }
    remove(path);
    double mb = (double)rows * L * 2 / 1e6;
    printf("rows %" PRIu64 "\nmax_length %u\nv2_mb_per_s %.1f\nv1_mb_per_s %.1f\n", rows, L, mb / best[2], mb / best[1]);
    free(tokens);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "write"))
        return write_bench(argv[2], strtoull(argv[3], NULL, 10), (uint32_t)atoi(argv[4]));
    if (argc == 3 && !strcmp(argv[1], "check")) return check(argv[2]);
    if (argc == 6 && !strcmp(argv[1], "samples"))
        return samples(argv[2], argv[3], atoi(argv[4]), strtoull(argv[5], NULL, 10));
    fprintf(stderr, "usage: bench_rowcheck check SHARD | samples DIR_V2 DIR_V1 SEQ N | write DIR ROWS MAX_LENGTH\n");
    return 2;
}
