/* Training metrics: metrics.jsonl (one flushed JSON object per record) and a
 * TensorBoard event file, TFRecord framing around hand-encoded Event
 * protocol buffers (tensorflow/core/util/event.proto: wall_time = 1, step =
 * 2, file_version = 3, summary = 5, log_message = 6, session_log = 7;
 * summary.proto: Summary.value = 1, Value.tag = 1, Value.simple_value = 2;
 * SessionLog.status = 1, START = 1). */
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pile_buf.h"
#include "pile_fs.h"
#include "pile_json.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "metrics.c copies host doubles and floats as protobuf's little-endian fixed64/fixed32: port it"
#endif

struct pile_metrics {
    FILE *jsonl;
    FILE *events;
    char *jsonl_path;
    char *events_path;
};

/* CRC-32C, reflected polynomial 0x82F63B78 (RFC 3720 appendix B.4), one
 * byte at a time: records are a few hundred bytes. A literal table needs
 * no thread-unsafe lazy initialisation. */
static const uint32_t crc32c_table[256] = {
    0x00000000, 0xf26b8303, 0xe13b70f7, 0x1350f3f4, 0xc79a971f, 0x35f1141c,
    0x26a1e7e8, 0xd4ca64eb, 0x8ad958cf, 0x78b2dbcc, 0x6be22838, 0x9989ab3b,
    0x4d43cfd0, 0xbf284cd3, 0xac78bf27, 0x5e133c24, 0x105ec76f, 0xe235446c,
    0xf165b798, 0x030e349b, 0xd7c45070, 0x25afd373, 0x36ff2087, 0xc494a384,
    0x9a879fa0, 0x68ec1ca3, 0x7bbcef57, 0x89d76c54, 0x5d1d08bf, 0xaf768bbc,
    0xbc267848, 0x4e4dfb4b, 0x20bd8ede, 0xd2d60ddd, 0xc186fe29, 0x33ed7d2a,
    0xe72719c1, 0x154c9ac2, 0x061c6936, 0xf477ea35, 0xaa64d611, 0x580f5512,
    0x4b5fa6e6, 0xb93425e5, 0x6dfe410e, 0x9f95c20d, 0x8cc531f9, 0x7eaeb2fa,
    0x30e349b1, 0xc288cab2, 0xd1d83946, 0x23b3ba45, 0xf779deae, 0x05125dad,
    0x1642ae59, 0xe4292d5a, 0xba3a117e, 0x4851927d, 0x5b016189, 0xa96ae28a,
    0x7da08661, 0x8fcb0562, 0x9c9bf696, 0x6ef07595, 0x417b1dbc, 0xb3109ebf,
    0xa0406d4b, 0x522bee48, 0x86e18aa3, 0x748a09a0, 0x67dafa54, 0x95b17957,
    0xcba24573, 0x39c9c670, 0x2a993584, 0xd8f2b687, 0x0c38d26c, 0xfe53516f,
    0xed03a29b, 0x1f682198, 0x5125dad3, 0xa34e59d0, 0xb01eaa24, 0x42752927,
    0x96bf4dcc, 0x64d4cecf, 0x77843d3b, 0x85efbe38, 0xdbfc821c, 0x2997011f,
    0x3ac7f2eb, 0xc8ac71e8, 0x1c661503, 0xee0d9600, 0xfd5d65f4, 0x0f36e6f7,
    0x61c69362, 0x93ad1061, 0x80fde395, 0x72966096, 0xa65c047d, 0x5437877e,
    0x4767748a, 0xb50cf789, 0xeb1fcbad, 0x197448ae, 0x0a24bb5a, 0xf84f3859,
    0x2c855cb2, 0xdeeedfb1, 0xcdbe2c45, 0x3fd5af46, 0x7198540d, 0x83f3d70e,
    0x90a324fa, 0x62c8a7f9, 0xb602c312, 0x44694011, 0x5739b3e5, 0xa55230e6,
    0xfb410cc2, 0x092a8fc1, 0x1a7a7c35, 0xe811ff36, 0x3cdb9bdd, 0xceb018de,
    0xdde0eb2a, 0x2f8b6829, 0x82f63b78, 0x709db87b, 0x63cd4b8f, 0x91a6c88c,
    0x456cac67, 0xb7072f64, 0xa457dc90, 0x563c5f93, 0x082f63b7, 0xfa44e0b4,
    0xe9141340, 0x1b7f9043, 0xcfb5f4a8, 0x3dde77ab, 0x2e8e845f, 0xdce5075c,
    0x92a8fc17, 0x60c37f14, 0x73938ce0, 0x81f80fe3, 0x55326b08, 0xa759e80b,
    0xb4091bff, 0x466298fc, 0x1871a4d8, 0xea1a27db, 0xf94ad42f, 0x0b21572c,
    0xdfeb33c7, 0x2d80b0c4, 0x3ed04330, 0xccbbc033, 0xa24bb5a6, 0x502036a5,
    0x4370c551, 0xb11b4652, 0x65d122b9, 0x97baa1ba, 0x84ea524e, 0x7681d14d,
    0x2892ed69, 0xdaf96e6a, 0xc9a99d9e, 0x3bc21e9d, 0xef087a76, 0x1d63f975,
    0x0e330a81, 0xfc588982, 0xb21572c9, 0x407ef1ca, 0x532e023e, 0xa145813d,
    0x758fe5d6, 0x87e466d5, 0x94b49521, 0x66df1622, 0x38cc2a06, 0xcaa7a905,
    0xd9f75af1, 0x2b9cd9f2, 0xff56bd19, 0x0d3d3e1a, 0x1e6dcdee, 0xec064eed,
    0xc38d26c4, 0x31e6a5c7, 0x22b65633, 0xd0ddd530, 0x0417b1db, 0xf67c32d8,
    0xe52cc12c, 0x1747422f, 0x49547e0b, 0xbb3ffd08, 0xa86f0efc, 0x5a048dff,
    0x8ecee914, 0x7ca56a17, 0x6ff599e3, 0x9d9e1ae0, 0xd3d3e1ab, 0x21b862a8,
    0x32e8915c, 0xc083125f, 0x144976b4, 0xe622f5b7, 0xf5720643, 0x07198540,
    0x590ab964, 0xab613a67, 0xb831c993, 0x4a5a4a90, 0x9e902e7b, 0x6cfbad78,
    0x7fab5e8c, 0x8dc0dd8f, 0xe330a81a, 0x115b2b19, 0x020bd8ed, 0xf0605bee,
    0x24aa3f05, 0xd6c1bc06, 0xc5914ff2, 0x37faccf1, 0x69e9f0d5, 0x9b8273d6,
    0x88d28022, 0x7ab90321, 0xae7367ca, 0x5c18e4c9, 0x4f48173d, 0xbd23943e,
    0xf36e6f75, 0x0105ec76, 0x12551f82, 0xe03e9c81, 0x34f4f86a, 0xc69f7b69,
    0xd5cf889d, 0x27a40b9e, 0x79b737ba, 0x8bdcb4b9, 0x988c474d, 0x6ae7c44e,
    0xbe2da0a5, 0x4c4623a6, 0x5f16d052, 0xad7d5351,
};

uint32_t pile_crc32c(const void *data, size_t n)
{
    const unsigned char *p = data;
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = crc32c_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

uint32_t pile_crc32c_mask(uint32_t crc)
{
    return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

uint64_t pile_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return 0;
    unsigned long long size = 0, resident = 0;
    int n = fscanf(f, "%llu %llu", &size, &resident);
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    if (n != 2 || page <= 0) return 0;
    return (uint64_t)resident * (uint64_t)page;
}

static double wall_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------ protobuf bits */

static void pb_varint(pile_buf *b, uint64_t v)
{
    unsigned char tmp[10];
    size_t n = 0;
    do {
        tmp[n] = (unsigned char)(v & 0x7F);
        v >>= 7;
        if (v) tmp[n] |= 0x80;
        n++;
    } while (v);
    pile_buf_append(b, tmp, n);
}

/* A field key: (number << 3) | wire type. */
static void pb_key(pile_buf *b, unsigned field, unsigned wire)
{
    pb_varint(b, ((uint64_t)field << 3) | wire);
}

static void pb_bytes(pile_buf *b, unsigned field, const void *data, size_t n)
{
    pb_key(b, field, 2);
    pb_varint(b, n);
    pile_buf_append(b, data, n);
}

static void pb_double(pile_buf *b, unsigned field, double v)
{
    pb_key(b, field, 1);
    pile_buf_append(b, &v, 8);
}

static void pb_float(pile_buf *b, unsigned field, float v)
{
    pb_key(b, field, 5);
    pile_buf_append(b, &v, 4);
}

/* One TFRecord: u64 length, masked CRC of the length bytes, the data,
 * masked CRC of the data, all little-endian; flushed so that TensorBoard
 * sees each record as it is written. */
static int tfrecord_write(pile_metrics *m, const pile_buf *rec, pile_err *err)
{
    unsigned char head[12];
    uint64_t len = rec->len;
    for (int i = 0; i < 8; i++) head[i] = (unsigned char)(len >> (8 * i));
    uint32_t c = pile_crc32c_mask(pile_crc32c(head, 8));
    for (int i = 0; i < 4; i++) head[8 + i] = (unsigned char)(c >> (8 * i));
    unsigned char tail[4];
    c = pile_crc32c_mask(pile_crc32c(rec->data, rec->len));
    for (int i = 0; i < 4; i++) tail[i] = (unsigned char)(c >> (8 * i));
    if (fwrite(head, 1, 12, m->events) != 12 || fwrite(rec->data, 1, rec->len, m->events) != rec->len ||
        fwrite(tail, 1, 4, m->events) != 4 || fflush(m->events) != 0)
        return pile_err_sys(err, PILE_EIO, errno, "cannot write '%s'", m->events_path);
    return 0;
}

/* --------------------------------------------------------------- open */

/* Keeps the lines of metrics.jsonl at or before resume_step; a line that is
 * not a JSON object with an integer step (the torn tail of a killed run) is
 * dropped too. */
static int truncate_jsonl(const char *path, int64_t resume_step, pile_err *err)
{
    pile_buf in = {0}, out = {0};
    int rc = pile_fs_read_file(path, &in, err);
    if (rc == PILE_ENOENT) {
        pile_err_clear(err);
        return 0;
    }
    if (rc) return rc;
    size_t pos = 0;
    while (pos < in.len && !rc) {
        const char *line = in.data + pos;
        const char *nl = memchr(line, '\n', in.len - pos);
        size_t len = nl ? (size_t)(nl - line) : in.len - pos;
        pos += len + (nl != NULL);
        pile_json *j = NULL;
        pile_err ignored;
        int64_t step;
        /* a line without its newline was cut by a crash: drop it */
        if (nl && pile_json_parse(line, len, path, &j, &ignored) == 0 &&
            pile_json_int(pile_json_get(j, "step"), &step) && step <= resume_step) {
            pile_buf_append(&out, line, len + 1);
        }
        pile_json_free(j);
    }
    if (out.failed) rc = pile_err_set(err, PILE_ENOMEM, "out of memory rewriting '%s'", path);
    if (!rc) rc = pile_fs_write_atomic(path, out.data ? out.data : "", out.len, err);
    pile_buf_free(&in);
    pile_buf_free(&out);
    return rc;
}

/* Creates the event file under a name no earlier run used (two opens in
 * the same second get .pile.2, .pile.3, ...: TensorBoard reads any name
 * containing "tfevents"). */
static int create_events(pile_metrics *m, const char *dir, pile_err *err)
{
    char host[256];
    if (gethostname(host, sizeof host) != 0 || !host[0]) strcpy(host, "localhost");
    host[sizeof host - 1] = '\0';
    for (char *h = host; *h; h++)
        if (*h == '/') *h = '_';
    long long now = (long long)time(NULL);
    pile_buf name = {0}, path = {0};
    int rc = 0;
    for (int k = 1; k < 1000; k++) {
        name.len = 0;
        if (k == 1) pile_buf_printf(&name, "events.out.tfevents.%lld.%s.pile", now, host);
        else pile_buf_printf(&name, "events.out.tfevents.%lld.%s.pile.%d", now, host, k);
        if (name.failed || pile_fs_join(&path, dir, name.data)) {
            rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
            goto out;
        }
        int fd = open(path.data, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0 && errno == EEXIST) continue;
        if (fd < 0) {
            rc = pile_err_sys(err, PILE_EIO, errno, "cannot create '%s'", path.data);
            goto out;
        }
        m->events = fdopen(fd, "wb");
        if (!m->events) {
            rc = pile_err_sys(err, PILE_EIO, errno, "cannot open '%s'", path.data);
            close(fd);
            goto out;
        }
        m->events_path = path.data;
        path.data = NULL;
        goto out;
    }
    rc = pile_err_set(err, PILE_EIO, "cannot create an event file in '%s': every name for this second is taken", dir);
out:
    pile_buf_free(&name);
    pile_buf_free(&path);
    return rc;
}

int pile_metrics_open(pile_metrics **out, const char *dir, int64_t resume_step, pile_err *err)
{
    *out = NULL;
    PILE_FORWARD_IF_ERR(pile_fs_mkdirs(dir, err));
    pile_metrics *m = calloc(1, sizeof *m);
    pile_buf path = {0}, rec = {0};
    if (!m || pile_fs_join(&path, dir, "metrics.jsonl")) {
        free(m);
        return pile_err_set(err, PILE_ENOMEM, "out of memory");
    }
    m->jsonl_path = path.data;
    int rc = 0;
    if (resume_step >= 0 && (rc = truncate_jsonl(m->jsonl_path, resume_step, err))) goto fail;
    m->jsonl = fopen(m->jsonl_path, "ab");
    if (!m->jsonl) {
        rc = pile_err_sys(err, PILE_EIO, errno, "cannot open '%s'", m->jsonl_path);
        goto fail;
    }
    if ((rc = create_events(m, dir, err))) goto fail;
    static const char version[] = "brain.Event:2";
    double now = wall_seconds();
    pb_double(&rec, 1, now);
    pb_bytes(&rec, 3, version, sizeof version - 1);
    if (rec.failed) {
        rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = tfrecord_write(m, &rec, err))) goto fail;
    if (resume_step >= 0) {
        /* SessionLog START at the first redone step, as torch's
         * SummaryWriter(purge_step=) writes it: TensorBoard then drops the
         * earlier run's points from that step on (its restart purge). Field
         * 6 would be the deprecated log_message, which TensorBoard reads
         * as a log line and purges nothing for. */
        pile_buf sl = {0};
        rec.len = 0;
        pb_key(&sl, 1, 0);
        pb_varint(&sl, 1); /* status: START */
        pb_double(&rec, 1, now);
        pb_key(&rec, 2, 0);
        pb_varint(&rec, (uint64_t)(resume_step + 1));
        pb_bytes(&rec, 7, sl.data, sl.len);
        int failed = sl.failed || rec.failed;
        pile_buf_free(&sl);
        if (failed) {
            rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
            goto fail;
        }
        if ((rc = tfrecord_write(m, &rec, err))) goto fail;
    }
    pile_buf_free(&rec);
    *out = m;
    return 0;
fail:
    pile_buf_free(&rec);
    pile_metrics_close(m);
    return rc;
}

void pile_metrics_close(pile_metrics *m)
{
    if (!m) return;
    if (m->jsonl) fclose(m->jsonl);
    if (m->events) fclose(m->events);
    free(m->jsonl_path);
    free(m->events_path);
    free(m);
}

/* -------------------------------------------------------------- write */

int pile_metrics_write(pile_metrics *m, int64_t step, const char *const *tags, const double *values, size_t n,
                       pile_err *err)
{
    double now = wall_seconds();
    pile_buf line = {0}, summary = {0}, value = {0}, rec = {0};
    int rc = 0;
    pile_buf_printf(&line, "{\"step\": %lld, \"time\": %.3f", (long long)step, now);
    for (size_t i = 0; i < n; i++) {
        size_t tl = strlen(tags[i]);
        pile_buf_append_str(&line, ", ");
        pile_json_write_string(&line, tags[i], tl);
        /* JSON has no NaN or infinity: null says the value was not finite */
        if (isfinite(values[i])) pile_buf_printf(&line, ": %.17g", values[i]);
        else pile_buf_append_str(&line, ": null");
        value.len = 0;
        pb_bytes(&value, 1, tags[i], tl);
        pb_float(&value, 2, (float)values[i]);
        pb_bytes(&summary, 1, value.data, value.len);
    }
    pile_buf_append_str(&line, "}\n");
    pb_double(&rec, 1, now);
    pb_key(&rec, 2, 0);
    pb_varint(&rec, (uint64_t)step); /* int64 varint: negatives as 10-byte two's complement */
    pb_bytes(&rec, 5, summary.data, summary.len);
    if (line.failed || summary.failed || value.failed || rec.failed) {
        rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
        goto out;
    }
    if (fwrite(line.data, 1, line.len, m->jsonl) != line.len || fflush(m->jsonl) != 0) {
        rc = pile_err_sys(err, PILE_EIO, errno, "cannot write '%s'", m->jsonl_path);
        goto out;
    }
    rc = tfrecord_write(m, &rec, err);
out:
    pile_buf_free(&line);
    pile_buf_free(&summary);
    pile_buf_free(&value);
    pile_buf_free(&rec);
    return rc;
}
