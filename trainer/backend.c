/* backend.h over the backends' ops tables (backend_internal.h): the
 * registry that finds a backend by name, tensors and their views, copies
 * between backends, and one checked entry per op. Each entry makes sure the
 * operands are what the op takes (present, this backend's, of the op's
 * dtypes, large enough for its shapes) and records a sticky error naming
 * the op otherwise, so that an implementation never sees a bad operand and
 * a device backend can defer its own faults to pile_backend_sync. */
#include "backend_internal.h"

#include <limits.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ----------------------------------------------------------- registry */

/* In the order the default is looked for. */
static const pile_backend_reg *const registry[] = {
#ifdef PILE_HAVE_CUDA
    &pile__backend_cuda_reg,
#endif
    &pile__backend_cpu_reg,
};
#define N_REG (sizeof registry / sizeof registry[0])
/* Opened by name only, never the default: "devsim", "devsim16" (testing). */
static const pile_backend_reg *const testing[] = {&pile__backend_devsim_reg, &pile__backend_devsim16_reg};
#define N_TESTING (sizeof testing / sizeof testing[0])

#ifdef PILE_HAVE_CUDA
#define NAMES "cuda,cpu"
#else
#define NAMES "cpu"
#endif

const char *pile_backend_names(void)
{
    return NAMES;
}

static const pile_backend_reg *find_reg(const char *name, pile_err *err)
{
    for (size_t i = 0; i < N_REG; i++)
        if (!strcmp(registry[i]->name, name)) return registry[i];
    for (size_t i = 0; i < N_TESTING; i++)
        if (!strcmp(testing[i]->name, name)) return testing[i];
    if (!strcmp(name, "cuda"))
        pile_err_set(err, PILE_ENOENT,
                     "cannot use backend 'cuda': this build has no CUDA backend (pile-trainer was configured "
                     "without the CUDA toolkit); available: " NAMES);
    else
        pile_err_set(err, PILE_EINVAL, "unknown backend '%s' (available: " NAMES "; for testing: devsim, devsim16)", name);
    return NULL;
}

int pile_backend_probe(const char *name, pile_err *err)
{
    const pile_backend_reg *r = find_reg(name ? name : "", err);
    if (!r) return err ? err->code : PILE_EINVAL;
    return r->probe(err);
}

const char *pile_backend_default_name(pile_err *why)
{
    pile_err e;
    if (why) pile_err_clear(why);
    for (size_t i = 0; i + 1 < N_REG; i++) {
        if (registry[i]->probe(&e) == 0) return registry[i]->name;
        if (why && !why->code) *why = e;
    }
    return registry[N_REG - 1]->name; /* the cpu: always there */
}

int pile_backend_usable_cores(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 && n < 1 << 20 ? (int)n : 1;
}

int pile_backend_open(pile_backend **out, const char *name, int threads, pile_err *err)
{
    *out = NULL;
    if (!name || !name[0] || !strcmp(name, "auto")) name = pile_backend_default_name(NULL);
    const pile_backend_reg *r = find_reg(name, err);
    if (!r) return err ? err->code : PILE_EINVAL;
    pile_err why;
    if (r->probe(&why) < 0) return pile_err_set(err, why.code, "cannot open backend '%s': %s", r->name, why.msg);
    pile_backend *be = calloc(1, sizeof *be);
    PILE_RETURN_IF(!be, err, PILE_ENOMEM, "cannot allocate the %s backend", r->name);
    be->name = r->name;
    const int cores = pile_backend_usable_cores();
    be->threads = threads > 0 && threads < cores ? threads : cores;
    int rc = r->open(be, err);
    if (rc < 0) {
        free(be);
        return rc;
    }
    *out = be;
    return 0;
}

void pile_backend_close(pile_backend *be)
{
    if (!be) return;
    be->iface->close(be);
    free(be);
}

const char *pile_backend_name(const pile_backend *be) { return be->name; }
int pile_backend_threads(const pile_backend *be) { return be->threads; }
int pile_backend_host_memory(const pile_backend *be) { return be->host_memory; }
const char *pile_backend_device_comm(const pile_backend *be) { return be->device_comm; }
const char *pile_backend_device_name(const pile_backend *be)
{
    return be->iface->device_name ? be->iface->device_name(be) : NULL;
}

void pile__backend_fail(pile_backend *be, int code, const char *op, const char *fmt, ...)
{
    if (be->failed) return;
    char why[PILE_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    be->failed = 1;
    pile_err_set(&be->error, code, "%s backend: %s: %s", be->name, op, why);
}

int pile_backend_sync(pile_backend *be, pile_err *err)
{
    if (!be->failed) be->iface->sync(be);
    if (!be->failed) return 0;
    if (err) *err = be->error;
    return be->error.code;
}

/* --------------------------------------------------------- emulation */

int pile_backend_set_emulation(pile_backend *be, pile_dtype dt, pile_err *err)
{
    PILE_RETURN_IF(dt != PILE_DTYPE_F32 && dt != PILE_DTYPE_BF16 && dt != PILE_DTYPE_F16, err, PILE_EINVAL,
                   "cannot emulate %s storage: only bf16 and f16 (f32 turns emulation off)", pile_dtype_name(dt));
    PILE_RETURN_IF(dt != PILE_DTYPE_F32 && !be->iface->round, err, PILE_EINVAL,
                   "the %s backend cannot emulate %s storage", be->name, pile_dtype_name(dt));
    be->emulate = dt;
    return 0;
}

pile_dtype pile_backend_emulation(const pile_backend *be) { return be->emulate; }

/* An op wrote compute tensor t[0..n): under emulation its values are
 * rounded as a 16-bit store would round them. */
static void store(pile_backend *be, pile_tensor t, size_t n)
{
    if (be->emulate == PILE_DTYPE_F32 || !t.data || t.dtype != PILE_DTYPE_F32 || be->failed || !n) return;
    be->iface->round(be, t, n, be->emulate == PILE_DTYPE_BF16 ? PILE_PRECISION_BF16 : PILE_PRECISION_FP16);
}

/* ------------------------------------------------------------ dtypes */

static const struct {
    const char *name;
    size_t size;
} dtypes[PILE_DTYPE_COUNT] = {{"f32", 4}, {"bf16", 2}, {"f16", 2}, {"i32", 4}, {"u8", 1}};

size_t pile_dtype_size(pile_dtype dt) { return (unsigned)dt < PILE_DTYPE_COUNT ? dtypes[dt].size : 0; }
const char *pile_dtype_name(pile_dtype dt) { return (unsigned)dt < PILE_DTYPE_COUNT ? dtypes[dt].name : "?"; }

pile_dtype pile_dtype_of_precision(pile_precision p)
{
    return p == PILE_PRECISION_BF16 ? PILE_DTYPE_BF16 : p == PILE_PRECISION_FP16 ? PILE_DTYPE_F16 : PILE_DTYPE_F32;
}

static int is_float(pile_dtype dt)
{
    return dt == PILE_DTYPE_F32 || dt == PILE_DTYPE_BF16 || dt == PILE_DTYPE_F16;
}

static const char *const op_names[PILE_OP_COUNT] = {
    "embed_fwd",  "embed_bwd",   "layernorm_fwd", "layernorm_bwd",   "matmul_fwd",   "matmul_bwd",  "logits_fwd",
    "logits_bwd", "attention_fwd", "attention_bwd", "attention_decode", "gelu_fwd", "gelu_bwd",    "add",
    "dropout",    "softmax_ce",  "convert",       "sumsq",           "scale",        "adamw",
};

const char *pile_op_name(pile_op op) { return (unsigned)op < PILE_OP_COUNT ? op_names[op] : "?"; }

int pile_backend_supports(const pile_backend *be, pile_op op, pile_dtype dt)
{
    return (unsigned)op < PILE_OP_COUNT && (unsigned)dt < PILE_DTYPE_COUNT && be->iface->supports(be, op, dt);
}

/* ----------------------------------------------------------- tensors */

pile_tensor pile_tensor_slice(pile_tensor t, size_t first, size_t n)
{
    if (!t.data || first > t.n || n > t.n - first) return PILE_NO_TENSOR;
    t.data = (char *)t.data + first * pile_dtype_size(t.dtype);
    t.n = n;
    return t;
}

pile_tensor pile_tensor_carve(pile_tensor t, size_t offset, pile_dtype dt, size_t n)
{
    const size_t es = pile_dtype_size(dt), have = pile_tensor_bytes(t);
    if (!t.data || !es || offset % es || offset > have || n > (have - offset) / es) return PILE_NO_TENSOR;
    return (pile_tensor){(char *)t.data + offset, n, dt, t.be};
}

size_t pile_tensor_bytes(pile_tensor t) { return t.n * pile_dtype_size(t.dtype); }

pile_tensor pile_backend_alloc(pile_backend *be, pile_dtype dt, size_t n)
{
    const size_t es = pile_dtype_size(dt);
    if (!es || n > SIZE_MAX / es) return PILE_NO_TENSOR;
    void *p = be->iface->alloc(be, n * es);
    if (!p) return PILE_NO_TENSOR;
    const size_t used = be->iface->bytes_in_use(be);
    if (used > be->bytes_peak) be->bytes_peak = used;
    return (pile_tensor){p, n, dt, be};
}

void pile_backend_free(pile_tensor *t)
{
    if (t->data) t->be->iface->free(t->be, t->data);
    *t = PILE_NO_TENSOR;
}

size_t pile_backend_bytes_in_use(const pile_backend *be) { return be->iface->bytes_in_use(be); }
size_t pile_backend_bytes_peak(const pile_backend *be) { return be->bytes_peak; }

int pile_backend_reserve(pile_backend *be, size_t bytes, pile_err *err)
{
    return be->iface->reserve ? be->iface->reserve(be, bytes, err) : 0;
}

int pile_backend_reserve_scratch(pile_backend *be, int B, int T, int C, pile_err *err)
{
    PILE_RETURN_IF(B < 1 || T < 1 || C < 1 || C > INT_MAX / 4 || (int64_t)B * T > INT_MAX / 4, err, PILE_EINVAL,
                   "cannot reserve the %s backend's scratch for micro-batches of %d x %d, width %d",
                   pile_backend_name(be), B, T, C);
    return be->iface->reserve_scratch ? be->iface->reserve_scratch(be, B, T, C, err) : 0;
}

/* ---------------------------------------------------- operand checks */

/* a * b (* c) elements, saturating; a negative dimension needs "everything",
 * which no tensor holds, so the check below fails instead of wrapping */
static size_t dims(long long a, long long b)
{
    if (a < 0 || b < 0) return SIZE_MAX;
    if (b && (unsigned long long)a > SIZE_MAX / (unsigned long long)b) return SIZE_MAX;
    return (size_t)a * (size_t)b;
}

static size_t dims3(long long a, long long b, long long c)
{
    size_t ab = dims(a, b);
    return ab == SIZE_MAX || c < 0 || (c && ab > SIZE_MAX / (size_t)c) ? SIZE_MAX : ab * (size_t)c;
}

/* One operand: present (an optional one may be absent, and so may one of
 * which nothing is read), this backend's, of dtype dt, at least `need`
 * elements. 0 after recording the sticky error. */
static int arg(pile_backend *be, pile_op op, const char *name, pile_tensor t, pile_dtype dt, size_t need,
               int optional)
{
    const char *o = pile_op_name(op);
    if (!t.data) {
        if (optional || need == 0) return 1;
        pile__backend_fail(be, PILE_EINVAL, o, "'%s' is missing (or a view outside its tensor)", name);
        return 0;
    }
    if (t.be != be) {
        pile__backend_fail(be, PILE_EINVAL, o, "'%s' is memory of another backend (a %s one)", name,
                           t.be ? t.be->name : "no");
        return 0;
    }
    if (t.dtype != dt) {
        pile__backend_fail(be, PILE_EINVAL, o, "'%s' is %s, the call computes in %s", name, pile_dtype_name(t.dtype),
                           pile_dtype_name(dt));
        return 0;
    }
    if (t.n < need) {
        if (need == SIZE_MAX)
            pile__backend_fail(be, PILE_EINVAL, o, "a negative or overflowing shape for '%s'", name);
        else
            pile__backend_fail(be, PILE_EINVAL, o, "'%s' holds %zu elements, the call needs %zu", name, t.n, need);
        return 0;
    }
    return 1;
}

/* The op may run: the backend has not failed and computes in dt. */
static int ready(pile_backend *be, pile_op op, pile_dtype dt)
{
    if (be->failed) return 0;
    if (pile_backend_supports(be, op, dt)) return 1;
    pile__backend_fail(be, PILE_EINVAL, pile_op_name(op), "the %s backend does not compute in %s", be->name,
                       pile_dtype_name(dt));
    return 0;
}

#define F32 PILE_DTYPE_F32
#define I32 PILE_DTYPE_I32
#define U8 PILE_DTYPE_U8
/* inside an entry with `be`, `op` and the compute dtype `dt` in scope */
#define ARG(t, type, need) arg(be, op, #t, t, type, need, 0)
#define OPT(t, type, need) arg(be, op, #t, t, type, need, 1)

/* ------------------------------------------------------------ memory */

static int mem_ok(pile_backend *be, pile_op op, const char *name, pile_tensor t, size_t n)
{
    if (be->failed) return 0;
    return arg(be, op, name, t, t.dtype, n, 0);
}

/* Memory ops are named by their own words in messages (no pile_op). */
static void mem_fail(pile_backend *be, const char *what, const char *name, pile_tensor t, size_t n)
{
    if (be->failed) return;
    if (!t.data && n) pile__backend_fail(be, PILE_EINVAL, what, "'%s' is missing", name);
    else if (t.data && t.be != be) pile__backend_fail(be, PILE_EINVAL, what, "'%s' is another backend's memory", name);
    else if (t.n < n) pile__backend_fail(be, PILE_EINVAL, what, "'%s' holds %zu elements, the call needs %zu", name, t.n, n);
}

static int mem_arg(pile_backend *be, const char *what, const char *name, pile_tensor t, size_t n)
{
    if (be->failed) return 0;
    if ((t.data || !n) && (!t.data || t.be == be) && t.n >= n) return 1;
    mem_fail(be, what, name, t, n);
    return 0;
}

void pile_backend_upload(pile_backend *be, pile_tensor dst, const void *host_src, size_t n)
{
    if (!mem_arg(be, "upload", "dst", dst, n) || !n) return;
    be->iface->upload(be, dst, host_src, n * pile_dtype_size(dst.dtype));
}

/* Each staged upload starts on 256 bytes of the staging memory: the
 * alignment of a device's fastest copies. */
#define STAGE_ALIGN ((size_t)256)

int pile_backend_stage_reserve(pile_backend *be, size_t bytes, pile_err *err)
{
    if (bytes <= be->stage_cap) return 0;
    PILE_RETURN_IF(be->stage_used, err, PILE_EINVAL,
                   "cannot grow the %s backend's staging memory while a staged group is open", be->name);
    if (be->iface->stage_reserve) {
        /* nothing queued may still read the staging memory replaced */
        PILE_FORWARD_IF_ERR(pile_backend_sync(be, err));
        PILE_FORWARD_IF_ERR(be->iface->stage_reserve(be, bytes, err));
    }
    be->stage_cap = bytes;
    return 0;
}

void pile_backend_stage_upload(pile_backend *be, pile_tensor dst, const void *host_src, size_t n)
{
    if (!mem_arg(be, "stage_upload", "dst", dst, n) || !n) return;
    const size_t bytes = n * pile_dtype_size(dst.dtype);
    const size_t took = bytes > SIZE_MAX - STAGE_ALIGN ? SIZE_MAX : (bytes + STAGE_ALIGN - 1) / STAGE_ALIGN * STAGE_ALIGN;
    if (took > be->stage_cap - be->stage_used) {
        pile__backend_fail(be, PILE_EINVAL, "stage_upload",
                           "%zu bytes more in a group that holds %zu of the %zu bytes reserved "
                           "(pile_backend_stage_reserve)",
                           bytes, be->stage_used, be->stage_cap);
        return;
    }
    if (be->iface->stage_upload) be->iface->stage_upload(be, dst, host_src, bytes, be->stage_used);
    else be->iface->upload(be, dst, host_src, bytes);
    be->stage_used += took;
}

void pile_backend_stage_wait(pile_backend *be)
{
    if (!be->stage_used) return;
    if (be->iface->stage_wait && !be->failed) be->iface->stage_wait(be);
    be->stage_used = 0;
}

void *pile_backend_comm_stream(pile_backend *be)
{
    return be->iface->comm_stream ? be->iface->comm_stream(be) : NULL;
}

void pile_backend_comm_wait_compute(pile_backend *be)
{
    if (be->iface->comm_wait_compute && !be->failed) be->iface->comm_wait_compute(be);
}

void pile_backend_compute_wait_comm(pile_backend *be)
{
    if (be->iface->compute_wait_comm && !be->failed) be->iface->compute_wait_comm(be);
}

uint64_t pile_backend_comm_mark(pile_backend *be)
{
    return be->iface->comm_mark && !be->failed ? be->iface->comm_mark(be) : 0;
}

void pile_backend_compute_wait_mark(pile_backend *be, uint64_t mark)
{
    if (be->iface->compute_wait_mark && !be->failed && mark) be->iface->compute_wait_mark(be, mark);
}

void pile_backend_download(pile_backend *be, void *host_dst, pile_tensor src, size_t n)
{
    if (!mem_arg(be, "download", "src", src, n) || !n) return;
    be->iface->download(be, host_dst, src, n * pile_dtype_size(src.dtype));
}

void pile_backend_copy(pile_backend *be, pile_tensor dst, pile_tensor src, size_t n)
{
    if (!mem_arg(be, "copy", "dst", dst, n) || !mem_arg(be, "copy", "src", src, n) || !n) return;
    if (dst.dtype != src.dtype) {
        pile__backend_fail(be, PILE_EINVAL, "copy", "'dst' is %s and 'src' %s (pile_backend_convert converts)",
                           pile_dtype_name(dst.dtype), pile_dtype_name(src.dtype));
        return;
    }
    be->iface->copy(be, dst, src, n * pile_dtype_size(dst.dtype));
}

void pile_backend_zero(pile_backend *be, pile_tensor t, size_t n)
{
    if (!mem_arg(be, "zero", "t", t, n) || !n) return;
    be->iface->zero(be, t, n * pile_dtype_size(t.dtype));
}

void pile_backend_convert(pile_backend *be, pile_tensor dst, pile_tensor src, size_t n)
{
    const pile_op op = PILE_OP_CONVERT;
    if (!ready(be, op, src.dtype) || !ready(be, op, dst.dtype) || !mem_ok(be, op, "dst", dst, n) ||
        !mem_ok(be, op, "src", src, n) || !n)
        return;
    if (!is_float(dst.dtype) || !is_float(src.dtype)) {
        pile__backend_fail(be, PILE_EINVAL, "convert", "%s to %s is not a conversion between float dtypes",
                           pile_dtype_name(src.dtype), pile_dtype_name(dst.dtype));
        return;
    }
    be->iface->convert(be, dst, src, n);
    if (dst.dtype == F32) store(be, dst, n);
}

int pile_tensor_copy(pile_tensor dst, pile_tensor src, size_t n, pile_err *err)
{
    PILE_RETURN_IF(!dst.data || !src.data || dst.n < n || src.n < n || dst.dtype != src.dtype, err, PILE_EINVAL,
                   "cannot copy %zu elements of %s into %s: missing, too small or another dtype", n,
                   pile_dtype_name(src.dtype), pile_dtype_name(dst.dtype));
    if (dst.be == src.be) {
        pile_backend_copy(dst.be, dst, src, n);
        return dst.be->failed ? pile_backend_sync(dst.be, err) : 0;
    }
    PILE_FORWARD_IF_ERR(pile_backend_sync(src.be, err));
    const size_t bytes = n * pile_dtype_size(dst.dtype);
    if (src.be->host_memory) {
        pile_backend_upload(dst.be, dst, src.data, n);
    } else if (dst.be->host_memory) {
        pile_backend_download(src.be, dst.data, src, n);
        PILE_FORWARD_IF_ERR(pile_backend_sync(src.be, err));
    } else {
        void *stage = malloc(bytes ? bytes : 1);
        PILE_RETURN_IF(!stage, err, PILE_ENOMEM, "cannot allocate %zu bytes to copy between backends", bytes);
        pile_backend_download(src.be, stage, src, n);
        int rc = pile_backend_sync(src.be, err);
        if (rc == 0) {
            pile_backend_upload(dst.be, dst, stage, n);
            rc = pile_backend_sync(dst.be, err); /* the stage must outlive the upload */
        }
        free(stage);
        return rc;
    }
    return dst.be->failed ? pile_backend_sync(dst.be, err) : 0;
}

/* fp32 <-> a tensor's float dtype, through a host buffer when it is 16-bit */
int pile_tensor_upload_f32(pile_tensor t, const float *host, size_t n, pile_err *err)
{
    PILE_RETURN_IF(!is_float(t.dtype), err, PILE_EINVAL, "cannot store fp32 values in a %s tensor",
                   pile_dtype_name(t.dtype));
    if (t.dtype == F32) {
        pile_backend_upload(t.be, t, host, n);
        return t.be->failed ? pile_backend_sync(t.be, err) : 0;
    }
    uint16_t *h = malloc((n ? n : 1) * sizeof *h);
    PILE_RETURN_IF(!h, err, PILE_ENOMEM, "cannot allocate %zu values to convert to %s", n, pile_dtype_name(t.dtype));
    if (t.dtype == PILE_DTYPE_BF16) pile_fp32_to_bf16_array(h, host, n);
    else pile_fp32_to_fp16_array(h, host, n);
    pile_backend_upload(t.be, t, h, n);
    int rc = pile_backend_sync(t.be, err); /* h must outlive the upload */
    free(h);
    return rc;
}

int pile_tensor_download_f32(float *host, pile_tensor t, size_t n, pile_err *err)
{
    PILE_RETURN_IF(!is_float(t.dtype), err, PILE_EINVAL, "cannot read a %s tensor as fp32 values",
                   pile_dtype_name(t.dtype));
    if (t.dtype == F32) {
        pile_backend_download(t.be, host, t, n);
        return pile_backend_sync(t.be, err);
    }
    uint16_t *h = malloc((n ? n : 1) * sizeof *h);
    PILE_RETURN_IF(!h, err, PILE_ENOMEM, "cannot allocate %zu values to convert from %s", n, pile_dtype_name(t.dtype));
    pile_backend_download(t.be, h, t, n);
    int rc = pile_backend_sync(t.be, err);
    if (rc == 0 && t.dtype == PILE_DTYPE_BF16) pile_bf16_to_fp32_array(host, h, n);
    else if (rc == 0) pile_fp16_to_fp32_array(host, h, n);
    free(h);
    return rc;
}

/* --------------------------------------------------------------- ops */

void pile_backend_embed_fwd(pile_backend *be, pile_tensor out, pile_tensor tokens, pile_tensor wte, pile_tensor wpe,
                            int B, int T, int C)
{
    const pile_op op = PILE_OP_EMBED_FWD;
    const pile_dtype dt = out.dtype;
    const size_t N = dims(B, T);
    if (!ready(be, op, dt) || !ARG(out, dt, dims(N, C)) || !ARG(tokens, I32, N) || !ARG(wte, dt, dims(C, N > 0)) ||
        !ARG(wpe, dt, dims(T, C)))
        return;
    be->iface->embed_fwd(be, out, tokens, wte, wpe, B, T, C);
    store(be, out, dims(N, C));
}

void pile_backend_embed_bwd(pile_backend *be, pile_tensor dwte, pile_tensor dwpe, pile_tensor dout,
                            pile_tensor tokens, int B, int T, int C)
{
    const pile_op op = PILE_OP_EMBED_BWD;
    const pile_dtype dt = dout.dtype;
    const size_t N = dims(B, T);
    if (!ready(be, op, dt) || !ARG(dwte, F32, dims(C, N > 0)) || !ARG(dwpe, F32, dims(T, C)) ||
        !ARG(dout, dt, dims(N, C)) || !ARG(tokens, I32, N))
        return;
    be->iface->embed_bwd(be, dwte, dwpe, dout, tokens, B, T, C);
}

void pile_backend_layernorm_fwd(pile_backend *be, pile_tensor out, pile_tensor mean, pile_tensor rstd,
                                pile_tensor inp, pile_tensor w, pile_tensor b, int N, int C)
{
    const pile_op op = PILE_OP_LAYERNORM_FWD;
    const pile_dtype dt = out.dtype;
    const size_t NC = dims(N, C);
    if (!ready(be, op, dt) || !ARG(out, dt, NC) || !ARG(mean, F32, dims(N, 1)) || !ARG(rstd, F32, dims(N, 1)) ||
        !ARG(inp, dt, NC) || !ARG(w, dt, dims(C, 1)) || !ARG(b, dt, dims(C, 1)))
        return;
    be->iface->layernorm_fwd(be, out, mean, rstd, inp, w, b, N, C);
    store(be, out, NC);
}

void pile_backend_layernorm_bwd(pile_backend *be, pile_tensor dinp, pile_tensor dw, pile_tensor db,
                                pile_tensor dout, pile_tensor inp, pile_tensor w, pile_tensor mean,
                                pile_tensor rstd, int N, int C)
{
    const pile_op op = PILE_OP_LAYERNORM_BWD;
    const pile_dtype dt = dout.dtype;
    const size_t NC = dims(N, C);
    if (!ready(be, op, dt) || !ARG(dinp, dt, NC) || !ARG(dw, F32, dims(C, 1)) || !ARG(db, F32, dims(C, 1)) ||
        !ARG(dout, dt, NC) || !ARG(inp, dt, NC) || !ARG(w, dt, dims(C, 1)) || !ARG(mean, F32, dims(N, 1)) ||
        !ARG(rstd, F32, dims(N, 1)))
        return;
    be->iface->layernorm_bwd(be, dinp, dw, db, dout, inp, w, mean, rstd, N, C);
    store(be, dinp, NC);
}

void pile_backend_matmul_fwd(pile_backend *be, pile_tensor out, pile_tensor inp, pile_tensor W, pile_tensor bias,
                             int N, int IC, int OC)
{
    const pile_op op = PILE_OP_MATMUL_FWD;
    const pile_dtype dt = out.dtype;
    if (!ready(be, op, dt) || !ARG(out, dt, dims(N, OC)) || !ARG(inp, dt, dims(N, IC)) || !ARG(W, dt, dims(IC, OC)) ||
        !OPT(bias, dt, dims(OC, 1)))
        return;
    be->iface->matmul_fwd(be, out, inp, W, bias, N, IC, OC);
    store(be, out, dims(N, OC));
}

void pile_backend_matmul_bwd(pile_backend *be, pile_tensor dinp, pile_tensor dW, pile_tensor dbias,
                             pile_tensor dout, pile_tensor inp, pile_tensor W, int N, int IC, int OC)
{
    const pile_op op = PILE_OP_MATMUL_BWD;
    const pile_dtype dt = dout.dtype;
    if (!ready(be, op, dt) || !OPT(dinp, dt, dims(N, IC)) || !ARG(dW, F32, dims(IC, OC)) ||
        !OPT(dbias, F32, dims(OC, 1)) || !ARG(dout, dt, dims(N, OC)) || !ARG(inp, dt, dims(N, IC)) ||
        !ARG(W, dt, dims(IC, OC)))
        return;
    be->iface->matmul_bwd(be, dinp, dW, dbias, dout, inp, W, N, IC, OC);
    store(be, dinp, dims(N, IC));
}

void pile_backend_logits_fwd(pile_backend *be, pile_tensor out, pile_tensor inp, pile_tensor wte, int N, int C,
                             int Vp)
{
    const pile_op op = PILE_OP_LOGITS_FWD;
    const pile_dtype dt = out.dtype;
    if (!ready(be, op, dt) || !ARG(out, dt, dims(N, Vp)) || !ARG(inp, dt, dims(N, C)) || !ARG(wte, dt, dims(Vp, C)))
        return;
    be->iface->logits_fwd(be, out, inp, wte, N, C, Vp);
    store(be, out, dims(N, Vp));
}

void pile_backend_logits_bwd(pile_backend *be, pile_tensor dinp, pile_tensor dwte, pile_tensor dout,
                             pile_tensor inp, pile_tensor wte, int N, int C, int Vp)
{
    const pile_op op = PILE_OP_LOGITS_BWD;
    const pile_dtype dt = dout.dtype;
    if (!ready(be, op, dt) || !ARG(dinp, dt, dims(N, C)) || !ARG(dwte, F32, dims(Vp, C)) ||
        !ARG(dout, dt, dims(N, Vp)) || !ARG(inp, dt, dims(N, C)) || !ARG(wte, dt, dims(Vp, C)))
        return;
    be->iface->logits_bwd(be, dinp, dwte, dout, inp, wte, N, C, Vp);
    store(be, dinp, dims(N, C));
}

size_t pile_backend_attention_saved_bytes(const pile_backend *be, int B, int T, int C, int NH)
{
    return be->iface->attention_saved_bytes(be, B, T, C, NH);
}

size_t pile_backend_attention_scratch_bytes(const pile_backend *be, int B, int T, int C, int NH)
{
    return be->iface->attention_scratch_bytes(be, B, T, C, NH);
}

/* Attention's shapes: heads divide C (the kernels slice rows by C / NH). */
static int heads_ok(pile_backend *be, pile_op op, int C, int NH)
{
    if (NH > 0 && C > 0 && C % NH == 0) return 1;
    pile__backend_fail(be, PILE_EINVAL, pile_op_name(op), "%d channels do not split into %d heads", C, NH);
    return 0;
}

void pile_backend_attention_fwd(pile_backend *be, pile_tensor out, pile_tensor saved, pile_tensor scratch,
                                pile_tensor qkv, pile_tensor doc_start, int B, int T, int C, int NH)
{
    const pile_op op = PILE_OP_ATTENTION_FWD;
    const pile_dtype dt = out.dtype;
    const size_t N = dims(B, T);
    if (!ready(be, op, dt) || !heads_ok(be, op, C, NH) || !ARG(out, dt, dims(N, C)) ||
        !ARG(saved, U8, pile_backend_attention_saved_bytes(be, B, T, C, NH)) ||
        !ARG(scratch, U8, pile_backend_attention_scratch_bytes(be, B, T, C, NH)) ||
        !ARG(qkv, dt, dims3(N, 3, C)) || !OPT(doc_start, I32, N))
        return;
    be->iface->attention_fwd(be, out, saved, scratch, qkv, doc_start, B, T, C, NH);
    store(be, out, dims(N, C));
}

void pile_backend_attention_bwd(pile_backend *be, pile_tensor dqkv, pile_tensor scratch, pile_tensor dout,
                                pile_tensor qkv, pile_tensor out, pile_tensor saved, pile_tensor doc_start, int B,
                                int T, int C, int NH)
{
    const pile_op op = PILE_OP_ATTENTION_BWD;
    const pile_dtype dt = dout.dtype;
    const size_t N = dims(B, T);
    if (!ready(be, op, dt) || !heads_ok(be, op, C, NH) || !ARG(dqkv, dt, dims3(N, 3, C)) ||
        !ARG(scratch, U8, pile_backend_attention_scratch_bytes(be, B, T, C, NH)) || !ARG(dout, dt, dims(N, C)) ||
        !ARG(qkv, dt, dims3(N, 3, C)) || !ARG(out, dt, dims(N, C)) ||
        !ARG(saved, U8, pile_backend_attention_saved_bytes(be, B, T, C, NH)) || !OPT(doc_start, I32, N))
        return;
    be->iface->attention_bwd(be, dqkv, scratch, dout, qkv, out, saved, doc_start, B, T, C, NH);
    store(be, dqkv, dims3(N, 3, C));
}

void pile_backend_attention_decode(pile_backend *be, pile_tensor out, pile_tensor att, pile_tensor q,
                                   pile_tensor kcache, pile_tensor vcache, int t, int C, int NH)
{
    const pile_op op = PILE_OP_ATTENTION_DECODE;
    const pile_dtype dt = out.dtype;
    const long long rows = t < 0 ? -1 : (long long)t + 1;
    if (!ready(be, op, dt) || !heads_ok(be, op, C, NH) || !ARG(out, dt, dims(C, 1)) || !ARG(att, F32, dims(NH, rows)) ||
        !ARG(q, dt, dims(C, 1)) || !ARG(kcache, dt, dims(rows, C)) || !ARG(vcache, dt, dims(rows, C)))
        return;
    be->iface->attention_decode(be, out, att, q, kcache, vcache, t, C, NH);
    store(be, out, dims(C, 1));
}

void pile_backend_gelu_fwd(pile_backend *be, pile_tensor out, pile_tensor inp, size_t n)
{
    const pile_op op = PILE_OP_GELU_FWD;
    const pile_dtype dt = out.dtype;
    if (!ready(be, op, dt) || !ARG(out, dt, n) || !ARG(inp, dt, n)) return;
    be->iface->gelu_fwd(be, out, inp, n);
    store(be, out, n);
}

void pile_backend_gelu_bwd(pile_backend *be, pile_tensor dinp, pile_tensor inp, pile_tensor dout, size_t n)
{
    const pile_op op = PILE_OP_GELU_BWD;
    const pile_dtype dt = dout.dtype;
    if (!ready(be, op, dt) || !ARG(dinp, dt, n) || !ARG(inp, dt, n) || !ARG(dout, dt, n)) return;
    be->iface->gelu_bwd(be, dinp, inp, dout, n);
    store(be, dinp, n);
}

void pile_backend_add(pile_backend *be, pile_tensor out, pile_tensor a, pile_tensor b, size_t n)
{
    const pile_op op = PILE_OP_ADD;
    const pile_dtype dt = out.dtype;
    if (!ready(be, op, dt) || !ARG(out, dt, n) || !ARG(a, dt, n) || !ARG(b, dt, n)) return;
    be->iface->add(be, out, a, b, n);
    store(be, out, n);
}

void pile_backend_dropout(pile_backend *be, pile_tensor x, size_t n, float p, uint64_t seed)
{
    const pile_op op = PILE_OP_DROPOUT;
    const pile_dtype dt = x.dtype;
    if (!ready(be, op, dt) || !ARG(x, dt, n)) return;
    be->iface->dropout(be, x, n, p, seed);
    if (p > 0.0f) store(be, x, n);
}

void pile_backend_softmax_ce(pile_backend *be, pile_tensor logits, pile_tensor losses, pile_tensor correct,
                             pile_tensor targets, int N, int V, int Vp, float grad_scale)
{
    const pile_op op = PILE_OP_SOFTMAX_CE;
    const pile_dtype dt = logits.dtype;
    if (!ready(be, op, dt)) return;
    if (V < 1 || V > Vp) {
        pile__backend_fail(be, PILE_EINVAL, pile_op_name(op), "vocabulary %d outside 1..%d", V, Vp);
        return;
    }
    if (!ARG(logits, dt, dims(N, Vp)) || !ARG(losses, F32, dims(N, 1)) || !ARG(correct, I32, dims(N, 1)) ||
        !ARG(targets, I32, dims(N, 1)))
        return;
    be->iface->softmax_ce(be, logits, losses, correct, targets, N, V, Vp, grad_scale);
    if (grad_scale != 0.0f) store(be, logits, dims(N, Vp)); /* dlogits */
}

double pile_backend_sumsq(pile_backend *be, pile_tensor x, size_t n)
{
    const pile_op op = PILE_OP_SUMSQ;
    const pile_dtype dt = F32;
    if (!ready(be, op, dt) || !ARG(x, dt, n)) return NAN;
    if (!n) return 0.0;
    double s = be->iface->sumsq(be, x, n);
    return be->failed ? NAN : s;
}

void pile_backend_scale(pile_backend *be, pile_tensor x, size_t n, float s)
{
    const pile_op op = PILE_OP_SCALE;
    const pile_dtype dt = F32;
    if (!ready(be, op, dt) || !ARG(x, dt, n)) return;
    be->iface->scale(be, x, n, s);
}

void pile_backend_adamw(pile_backend *be, pile_tensor p, pile_tensor g, pile_tensor m, pile_tensor v, size_t n,
                        float lr, float beta1, float beta2, float eps, float wd, int64_t t)
{
    const pile_op op = PILE_OP_ADAMW;
    const pile_dtype dt = F32;
    if (!ready(be, op, dt) || !ARG(p, dt, n) || !ARG(g, dt, n) || !ARG(m, dt, n) || !ARG(v, dt, n)) return;
    be->iface->adamw(be, p, g, m, v, n, lr, beta1, beta2, eps, wd, t);
}
