/* The line reader alone, one thread, CPU seconds (bench/lines.sh): what
 * pile-prep's readers do to hand lines to the workers, with and without a
 * copy of each line.
 *   lines:  pile_lines_next over every line, nothing else;
 *   copy:   the same, each line copied into a chunk with zeroed padding
 *           after it (pile-prep's readers before the block reader), the
 *           chunks 12 MiB of rotating memory, as a pool of slots is;
 *   block:  pile_lines_next_block into 12 rotating buffers of 1 MiB blocks
 *           (pile-prep's readers now);
 *   zstd:   ZSTD_decompressStream into one 128 KiB buffer, no lines (what
 *           `zstd -dc` does; .zst inputs only).
 * Prints "MODE CPU_SECONDS BYTES LINES". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zstd.h>

#include "pile_lines.h"

#define POOL 12

static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int count_line(void *ctx, const pile_line *ln, pile_err *err)
{
    (void)ln;
    (void)err;
    ++*(unsigned long long *)ctx;
    return 0;
}

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "bench_lines: %s: %s\n", what, msg);
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_lines lines|copy|block|zstd FILE...\n");
        return 2;
    }
    const char *mode = argv[1];
    unsigned long long bytes = 0, lines = 0;
    size_t pool_bytes = (size_t)POOL << 20, at = 0;
    char *pool = malloc(pool_bytes);
    pile_buf bufs[POOL];
    memset(bufs, 0, sizeof bufs);
    if (!pool) die("pool", "out of memory");
    double c0 = cpu_now();
    size_t k = 0;
    for (int i = 2; i < argc; i++) {
        pile_err err;
        if (!strcmp(mode, "zstd")) {
            FILE *f = fopen(argv[i], "rb");
            ZSTD_DStream *z = ZSTD_createDStream();
            size_t in_n = ZSTD_DStreamInSize(), out_n = ZSTD_DStreamOutSize(), n;
            char *in = malloc(in_n), *out = malloc(out_n);
            if (!f || !z || !in || !out) die(argv[i], "cannot open");
            while ((n = fread(in, 1, in_n, f)) > 0) {
                ZSTD_inBuffer ib = {in, n, 0};
                while (ib.pos < ib.size) {
                    ZSTD_outBuffer ob = {out, out_n, 0};
                    size_t r = ZSTD_decompressStream(z, &ob, &ib);
                    if (ZSTD_isError(r)) die(argv[i], ZSTD_getErrorName(r));
                    bytes += ob.pos;
                }
            }
            fclose(f);
            ZSTD_freeDStream(z);
            free(in);
            free(out);
            continue;
        }
        pile_lines *r;
        if (pile_lines_open(&r, argv[i], NULL, &err)) die(argv[i], err.msg);
        int rc;
        if (!strcmp(mode, "block")) {
            do {
                pile_buf *b = &bufs[k++ % POOL];
                rc = pile_lines_next_block(r, b, (size_t)1 << 20, count_line, &lines, &err);
                bytes += b->len;
            } while (rc == 1);
        } else {
            int copy = !strcmp(mode, "copy");
            pile_line ln;
            while ((rc = pile_lines_next(r, &ln, &err)) == 1) {
                lines++;
                bytes += ln.len + 1;
                if (!copy || !ln.data) continue;
                if (at + ln.len + PILE_LINES_PADDING > pool_bytes) at = 0;
                if (ln.len + PILE_LINES_PADDING > pool_bytes) continue;
                memcpy(pool + at, ln.data, ln.len);
                memset(pool + at + ln.len, 0, PILE_LINES_PADDING);
                at += ln.len + PILE_LINES_PADDING;
            }
        }
        if (rc < 0) die(argv[i], err.msg);
        pile_lines_close(r);
    }
    printf("%s %.4f %llu %llu\n", mode, cpu_now() - c0, bytes, lines);
    for (size_t i = 0; i < POOL; i++) pile_buf_free(&bufs[i]);
    free(pool);
    return 0;
}
