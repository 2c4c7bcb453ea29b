/* Decompression of one file by the candidates for pile-prep's gzip input, side
 * by side: zlib's inflate streamed in 1 MiB reads into a 1 MiB window (what
 * common/lines.c does), libdeflate's whole-buffer gzip decoder (the whole
 * file and the whole output in memory: it has no streaming API), and, for
 * scale, libzstd streamed the same way on the .zst of the same text.
 * libdeflate is loaded with dlopen (Debian ships libdeflate0 without its
 * header), the three functions used declared here as its libdeflate.h has them.
 *
 *   cc -O2 -o inflate_bench bench/inflate_bench.c -lz -lzstd -ldl
 *   inflate_bench FILE.gz FILE.zst [REPEAT]
 * prints one line per decoder: MB/s of output (best of REPEAT passes, the
 * decoders taking turns) and the decoder's buffers in MiB. */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#define CHUNK (1u << 20)

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void die(const char *what)
{
    fprintf(stderr, "inflate_bench: %s\n", what);
    exit(1);
}

/* zlib, as pile_lines reads: members in sequence, 1 MiB in, 1 MiB out. */
static uint64_t zlib_stream(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) die("cannot open the .gz");
    static unsigned char in[CHUNK], out[CHUNK];
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) die("inflateInit2");
    uint64_t total = 0;
    ssize_t k;
    while ((k = read(fd, in, sizeof in)) > 0) {
        z.next_in = in;
        z.avail_in = (uInt)k;
        while (z.avail_in) {
            z.next_out = out;
            z.avail_out = sizeof out;
            int r = inflate(&z, Z_NO_FLUSH);
            total += sizeof out - z.avail_out;
            if (r == Z_STREAM_END) inflateReset(&z);
            else if (r != Z_OK && r != Z_BUF_ERROR) die("inflate");
        }
    }
    inflateEnd(&z);
    close(fd);
    return total;
}

static size_t zstd_held; /* the decoder's own memory after a pass */

static uint64_t zstd_stream(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) die("cannot open the .zst");
    static unsigned char in[CHUNK], out[CHUNK];
    ZSTD_DStream *d = ZSTD_createDStream();
    uint64_t total = 0;
    ssize_t k;
    while ((k = read(fd, in, sizeof in)) > 0) {
        ZSTD_inBuffer ib = {in, (size_t)k, 0};
        while (ib.pos < ib.size) {
            ZSTD_outBuffer ob = {out, sizeof out, 0};
            if (ZSTD_isError(ZSTD_decompressStream(d, &ob, &ib))) die("zstd");
            total += ob.pos;
        }
    }
    zstd_held = ZSTD_sizeof_DStream(d);
    ZSTD_freeDStream(d);
    close(fd);
    return total;
}

/* libdeflate 1.14's API (libdeflate.h), resolved at run time. */
struct libdeflate_decompressor;
typedef struct libdeflate_decompressor *(*alloc_fn)(void);
typedef void (*free_fn)(struct libdeflate_decompressor *);
typedef int (*gunzip_fn)(struct libdeflate_decompressor *, const void *, size_t, void *, size_t, size_t *);
static alloc_fn ld_alloc;
static free_fn ld_free;
static gunzip_fn ld_gunzip;

static unsigned char *whole_in, *whole_out;
static size_t whole_in_len, whole_out_cap;

/* The whole file in memory, and an output buffer of its size (ISIZE, the last 4 bytes). */
static void load_whole(const char *path)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    if (!f || stat(path, &st) != 0) die("cannot open the .gz");
    whole_in_len = (size_t)st.st_size;
    whole_in = malloc(whole_in_len);
    if (!whole_in || fread(whole_in, 1, whole_in_len, f) != whole_in_len) die("cannot read the .gz");
    fclose(f);
    const unsigned char *t = whole_in + whole_in_len - 4;
    whole_out_cap = (size_t)t[0] | (size_t)t[1] << 8 | (size_t)t[2] << 16 | (size_t)t[3] << 24;
    whole_out = malloc(whole_out_cap + 1);
    if (!whole_out) die("out of memory");
}

static uint64_t libdeflate_whole(const char *path)
{
    (void)path;
    struct libdeflate_decompressor *d = ld_alloc();
    size_t got = 0;
    if (!d || ld_gunzip(d, whole_in, whole_in_len, whole_out, whole_out_cap + 1, &got) != 0) die("libdeflate");
    ld_free(d);
    return got;
}

typedef struct decoder {
    const char *name;
    uint64_t (*fn)(const char *);
    const char *path;
    double buf_mib; /* < 0: 2 MiB of our buffers plus the zstd decoder's own */
    double best;
    uint64_t bytes;
} decoder;

int main(int argc, char **argv)
{
    if (argc < 3) die("usage: inflate_bench FILE.gz FILE.zst [REPEAT]");
    int repeat = argc > 3 ? atoi(argv[3]) : 3;
    void *h = dlopen("libdeflate.so.0", RTLD_NOW);
    if (h) {
        ld_alloc = (alloc_fn)(uintptr_t)dlsym(h, "libdeflate_alloc_decompressor");
        ld_free = (free_fn)(uintptr_t)dlsym(h, "libdeflate_free_decompressor");
        ld_gunzip = (gunzip_fn)(uintptr_t)dlsym(h, "libdeflate_gzip_decompress");
    }
    int have_ld = ld_alloc && ld_free && ld_gunzip;
    if (have_ld) load_whole(argv[1]);
    /* zlib: its 7 KiB state and 32 KiB window, plus our 1 MiB in and 1 MiB out */
    decoder d[] = {
        {"zlib inflate, streamed", zlib_stream, argv[1], 2.04, 1e30, 0},
        {"libdeflate, whole buffer", libdeflate_whole, argv[1], (double)(whole_in_len + whole_out_cap) / 1048576.0,
         1e30, 0},
        {"zstd, streamed (.zst)", zstd_stream, argv[2], -1, 1e30, 0},
    };
    /* passes interleaved, so that a busy moment of the machine does not fall on one decoder only */
    for (int r = 0; r < repeat; r++)
        for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) {
            if (i == 1 && !have_ld) continue;
            double t0 = now();
            d[i].bytes = d[i].fn(d[i].path);
            double t = now() - t0;
            if (t < d[i].best) d[i].best = t;
        }
    printf("decoder\tMB/s\tbuffers MiB\toutput MB\n");
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) {
        if (i == 1 && !have_ld) {
            printf("%s\t(libdeflate.so.0 not found)\t\t\n", d[i].name);
            continue;
        }
        double mib = d[i].buf_mib < 0 ? 2.0 + (double)zstd_held / 1048576.0 : d[i].buf_mib;
        printf("%s\t%.1f\t%.2f\t%.0f\n", d[i].name, (double)d[i].bytes / 1e6 / d[i].best, mib, (double)d[i].bytes / 1e6);
    }
    return 0;
}
