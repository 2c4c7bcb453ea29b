/* Tests for the trainer's files: safetensors (round trip, every kind of
 * corruption refused), checkpoint folders (bit-exact round trip, atomic
 * replace, latest, tokenizer carry, checksums, the folder --resume takes,
 * a killed run's leftovers, save_total_limit), metrics.jsonl and
 * TensorBoard events.
 * With --write-fixture DIR it writes files for tests/reference/check_io.py
 * to read with the Python reference packages; --time-verify DIR prints the
 * seconds pile_checkpoint_verify takes on a folder (bench/checkpoint.sh). */
#include <dirent.h>
#include <math.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint.h"
#include "metrics.h"
#include "pile_fs.h"
#include "pile_json.h"
#include "pile_test.h"
#include "pile_tokenizer.h"

static char tmp_root[512];

/* ASSERT_OK's error argument, through a call: a plain &err makes GCC warn
 * that the address is never NULL. */
static pile_err *ep_(pile_err *e)
{
    return e;
}
#define EP ep_(&err)

static const char *tpath(pile_buf *b, const char *name)
{
    pile_fs_join(b, tmp_root, name);
    return b->data;
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static int write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int ok = fwrite(data, 1, n, f) == n;
    return fclose(f) == 0 && ok ? 0 : -1;
}

/* A raw safetensors file from a header string and n data bytes (0x3f). */
static int write_raw_st(const char *path, const char *header, uint64_t hlen_field, size_t data_bytes)
{
    size_t hl = strlen(header);
    size_t total = 8 + hl + data_bytes;
    unsigned char *b = malloc(total);
    if (!b) return -1;
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(hlen_field >> (8 * i));
    memcpy(b + 8, header, hl);
    memset(b + 8 + hl, 0x3f, data_bytes);
    int rc = write_bytes(path, b, total);
    free(b);
    return rc;
}

/* ------------------------------------------------------------- crc32c */

static void test_crc32c(void)
{
    TEST("crc32c known vectors and TFRecord mask");
    ASSERT_EQ(pile_crc32c("123456789", 9), 0xE3069283u);
    ASSERT_EQ(pile_crc32c("", 0), 0u);
    /* RFC 3720 B.4: 32 bytes of zeros */
    unsigned char zeros[32] = {0};
    ASSERT_EQ(pile_crc32c(zeros, 32), 0x8A9136AAu);
    ASSERT_EQ(pile_crc32c_mask(0), 0xa282ead8u);
    uint32_t c = 0x12345678u;
    ASSERT_EQ(pile_crc32c_mask(c), (uint32_t)(((c >> 15) | (c << 17)) + 0xa282ead8u));
}

/* --------------------------------------------------------- safetensors */

static void test_st_roundtrip(void)
{
    TEST("safetensors round trip: 0-d, 1-d, 2-d, empty, metadata, byte layout");
    pile_err err = {0};
    pile_buf p = {0};
    float scalar = 3.5f, vec[5], mat[6];
    for (int i = 0; i < 5; i++) vec[i] = (float)i * 0.25f - 1.0f;
    for (int i = 0; i < 6; i++) mat[i] = -(float)i / 7.0f;
    pile_st_tensor t[4] = {
        {.name = "scalar", .ndim = 0, .data = &scalar},
        {.name = "vec", .ndim = 1, .shape = {5}, .data = vec},
        {.name = "mat \"x\"", .ndim = 2, .shape = {2, 3}, .data = mat},
        {.name = "empty", .ndim = 2, .shape = {0, 3}, .data = NULL},
    };
    const char *meta[] = {"format", "pt", "step", "42", NULL};
    tpath(&p, "rt.safetensors");
    ASSERT_OK(pile_st_write(p.data, t, 4, meta, &err), EP);
    pile_buf tmpname = {0};
    ASSERT(!exists(tpath(&tmpname, "rt.safetensors.tmp")));
    pile_buf_free(&tmpname);

    pile_buf raw = {0};
    ASSERT_OK(pile_fs_read_file(p.data, &raw, &err), EP);
    uint64_t hl = 0;
    for (int i = 0; i < 8 && raw.len >= 8; i++) hl |= (uint64_t)(unsigned char)raw.data[i] << (8 * i);
    ASSERT_EQ(hl % 8, 0);
    ASSERT_EQ(raw.len, 8 + hl + (1 + 5 + 6) * 4);
    if (raw.len == 8 + hl + 48) {
        ASSERT_MEM_EQ(raw.data + 8 + hl, &scalar, 4);
        ASSERT_MEM_EQ(raw.data + 8 + hl + 4, vec, 20);
        ASSERT_MEM_EQ(raw.data + 8 + hl + 24, mat, 24);
        pile_json *h = NULL;
        ASSERT_OK(pile_json_parse(raw.data + 8, hl, "header", &h, &err), EP);
        const pile_json *md = pile_json_get(h, "__metadata__");
        ASSERT_STR_EQ(pile_json_str(pile_json_get(md, "format"), NULL), "pt");
        ASSERT_STR_EQ(pile_json_str(pile_json_get(md, "step"), NULL), "42");
        const pile_json *v = pile_json_get(h, "vec");
        ASSERT_STR_EQ(pile_json_str(pile_json_get(v, "dtype"), NULL), "F32");
        int64_t a = -1, b = -1;
        pile_json_int(pile_json_at(pile_json_get(v, "data_offsets"), 0), &a);
        pile_json_int(pile_json_at(pile_json_get(v, "data_offsets"), 1), &b);
        ASSERT_EQ(a, 4);
        ASSERT_EQ(b, 24);
        pile_json_free(h);
    }
    pile_buf_free(&raw);

    pile_st_file *f = NULL;
    ASSERT_OK(pile_st_open(&f, p.data, &err), EP);
    if (f) {
        ASSERT_EQ(pile_st_count(f), 4);
        const pile_st_tensor *s = pile_st_at(f, 0);
        ASSERT_STR_EQ(s->name, "scalar");
        ASSERT_EQ(s->ndim, 0);
        ASSERT_MEM_EQ(s->data, &scalar, 4);
        s = pile_st_find(f, "vec");
        ASSERT(s != NULL);
        if (s) {
            ASSERT_EQ(s->ndim, 1);
            ASSERT_EQ(s->shape[0], 5);
            ASSERT_MEM_EQ(s->data, vec, sizeof vec);
        }
        s = pile_st_find(f, "mat \"x\"");
        ASSERT(s != NULL);
        if (s) {
            ASSERT_EQ(s->ndim, 2);
            ASSERT_EQ(s->shape[0], 2);
            ASSERT_EQ(s->shape[1], 3);
            ASSERT_MEM_EQ(s->data, mat, sizeof mat);
        }
        s = pile_st_find(f, "empty");
        ASSERT(s != NULL);
        if (s) ASSERT_EQ(s->shape[0] * 10 + s->shape[1], 3);
        ASSERT(pile_st_find(f, "nope") == NULL);
        ASSERT(pile_st_at(f, 4) == NULL);
    }
    pile_st_close(f);
    pile_st_close(NULL);

    /* no tensors, no metadata: "{}" padded */
    tpath(&p, "empty.safetensors");
    ASSERT_OK(pile_st_write(p.data, NULL, 0, NULL, &err), EP);
    f = NULL;
    ASSERT_OK(pile_st_open(&f, p.data, &err), EP);
    ASSERT_EQ(pile_st_count(f), 0);
    pile_st_close(f);

    /* a writer that leaves the data unaligned (header length 10) is read */
    tpath(&p, "unaligned.safetensors");
    static const char odd[] = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    ASSERT((8 + strlen(odd)) % 4 != 0);
    ASSERT(write_raw_st(p.data, odd, strlen(odd), 8) == 0);
    f = NULL;
    ASSERT_OK(pile_st_open(&f, p.data, &err), EP);
    if (f) {
        const pile_st_tensor *a = pile_st_find(f, "a");
        ASSERT(a && ((uintptr_t)a->data % 4) == 0);
        unsigned char q[4] = {0x3f, 0x3f, 0x3f, 0x3f};
        if (a) ASSERT_MEM_EQ(a->data, q, 4);
    }
    pile_st_close(f);

    /* bad arguments */
    pile_st_tensor dup[2] = {{.name = "a", .ndim = 1, .shape = {1}, .data = &scalar},
                             {.name = "a", .ndim = 1, .shape = {1}, .data = &scalar}};
    tpath(&p, "dup.safetensors");
    ASSERT_EQ(pile_st_write(p.data, dup, 2, NULL, &err), PILE_EINVAL);
    ASSERT(!exists(p.data));
    pile_buf_free(&p);
}

/* One corrupt file: the code expected and a word the message must hold. */
static void expect_refused(const char *name, const char *header, uint64_t hlen, size_t data, int code, const char *word)
{
    pile_buf p = {0};
    pile_err err = {0};
    tpath(&p, name);
    ASSERT(write_raw_st(p.data, header, hlen == UINT64_MAX ? strlen(header) : hlen, data) == 0);
    pile_st_file *f = NULL;
    int rc = pile_st_open(&f, p.data, &err);
    if (code == 0) {
        ASSERT_OK(rc, EP);
        pile_st_close(f);
        pile_buf_free(&p);
        return;
    }
    if (rc != code) printf("# %s: got %d (%s)\n", name, rc, err.msg);
    ASSERT_EQ(rc, code);
    ASSERT(f == NULL);
    ASSERT(strstr(err.msg, name) != NULL);
    if (!strstr(err.msg, word)) printf("# %s: message '%s' lacks '%s'\n", name, err.msg, word);
    ASSERT(strstr(err.msg, word) != NULL);
    pile_buf_free(&p);
}

#define ENTRY(n, shape, a, b) "\"" n "\":{\"dtype\":\"F32\",\"shape\":" shape ",\"data_offsets\":[" #a "," #b "]}"

static void test_st_corrupt(void)
{
    TEST("safetensors: corrupt files refused with the right code and the file named");
    /* the good file these are variations of */
    expect_refused("good.safetensors", "{" ENTRY("a", "[2]", 0, 8) "," ENTRY("b", "[3]", 8, 20) "}", UINT64_MAX, 20,
                   0, "");
    /* truncation at every level */
    pile_buf p = {0};
    pile_err err = {0};
    pile_st_file *f = NULL;
    tpath(&p, "short.safetensors");
    ASSERT(write_bytes(p.data, "\x10\0\0", 3) == 0);
    ASSERT_EQ(pile_st_open(&f, p.data, &err), PILE_ETRUNC);
    ASSERT(strstr(err.msg, "short.safetensors") != NULL);
    pile_buf_free(&p);
    expect_refused("trunc-data.safetensors", "{" ENTRY("a", "[2]", 0, 8) "," ENTRY("b", "[3]", 8, 20) "}",
                   UINT64_MAX, 16, PILE_ETRUNC, "'b'");
    expect_refused("trunc-header.safetensors", "{" ENTRY("a", "[2]", 0, 8) "}", 4096, 8, PILE_ETRUNC, "header");
    /* header lengths */
    expect_refused("huge-header.safetensors", "{}", (uint64_t)1 << 62, 0, PILE_EFORMAT, "header length");
    expect_refused("zero-header.safetensors", "{}", 0, 0, PILE_EFORMAT, "header length");
    expect_refused("not-json.safetensors", "{\"a\":", UINT64_MAX, 0, PILE_EFORMAT, "not-json");
    expect_refused("array-header.safetensors", "[1, 2]", UINT64_MAX, 0, PILE_EFORMAT, "'{'");
    /* offsets */
    expect_refused("overlap.safetensors", "{" ENTRY("a", "[3]", 0, 12) "," ENTRY("b", "[2]", 8, 16) "}", UINT64_MAX,
                   16, PILE_EFORMAT, "overlaps");
    expect_refused("gap.safetensors", "{" ENTRY("a", "[2]", 0, 8) "," ENTRY("b", "[2]", 12, 20) "}", UINT64_MAX, 20,
                   PILE_EFORMAT, "gap");
    expect_refused("trailing.safetensors", "{" ENTRY("a", "[2]", 0, 8) "}", UINT64_MAX, 12, PILE_EFORMAT, "after");
    expect_refused("backwards.safetensors", "{" ENTRY("a", "[0]", 8, 0) "}", UINT64_MAX, 8, PILE_EFORMAT, "'a'");
    expect_refused("shape-size.safetensors", "{" ENTRY("a", "[3]", 0, 8) "}", UINT64_MAX, 8, PILE_EFORMAT, "shape");
    expect_refused("neg-dim.safetensors", "{" ENTRY("a", "[-2]", 0, 8) "}", UINT64_MAX, 8, PILE_EFORMAT, "dimension");
    expect_refused("overflow.safetensors", "{" ENTRY("a", "[4294967296,4294967296]", 0, 8) "}", UINT64_MAX, 8,
                   PILE_EFORMAT, "overflows");
    expect_refused("five-dims.safetensors", "{" ENTRY("a", "[1,1,1,1,2]", 0, 8) "}", UINT64_MAX, 8, PILE_EFORMAT,
                   "dimensions");
    expect_refused("dup-name.safetensors", "{" ENTRY("a", "[1]", 0, 4) "," ENTRY("a", "[1]", 4, 8) "}", UINT64_MAX,
                   8, PILE_EFORMAT, "twice");
    /* dtypes and fields */
    expect_refused("f16.safetensors", "{\"w\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", UINT64_MAX,
                   4, PILE_EFORMAT, "'F16'");
    expect_refused("no-dtype.safetensors", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", UINT64_MAX, 4,
                   PILE_EFORMAT, "dtype");
    expect_refused("extra-field.safetensors",
                   "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", UINT64_MAX, 4,
                   PILE_EFORMAT, "'x'");
    expect_refused("bad-meta.safetensors", "{\"__metadata__\":{\"k\":1}," ENTRY("a", "[1]", 0, 4) "}", UINT64_MAX, 4,
                   PILE_EFORMAT, "metadata");
    f = NULL;
    tpath(&p, "absent.safetensors");
    ASSERT_EQ(pile_st_open(&f, p.data, &err), PILE_ENOENT);
    pile_buf_free(&p);
}

/* --------------------------------------------------------- checkpoints */

typedef struct fixture {
    pile_backend *be;
    pile_model *m;
    pile_optim *o;
} fixture;

static pile_model_config tiny_config(int n_embd)
{
    pile_model_config c = {.vocab_size = 300, .n_positions = 16, .n_layer = 2, .n_head = 2, .n_embd = n_embd,
                           .dropout = 0.1f};
    return c;
}

static void fixture_free(fixture *fx)
{
    pile_optim_free(fx->o);
    pile_model_free(fx->m);
    pile_backend_close(fx->be);
    memset(fx, 0, sizeof *fx);
}

/* A tiny model initialised from seed, moments filled with seeded values
 * (zero in the padded rows, as training leaves them). */
static int fixture_make(fixture *fx, int n_embd, uint64_t seed, pile_err *err)
{
    memset(fx, 0, sizeof *fx);
    pile_model_config c = tiny_config(n_embd);
    pile_adamw_config ac = {.beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.1f};
    int rc = pile_backend_open(&fx->be, "cpu", 1, err);
    if (!rc) rc = pile_model_create(&fx->m, fx->be, &c, 1, 16, err);
    if (!rc) pile_model_init(fx->m, seed); /* the optimizer takes these as its master weights */
    if (!rc) rc = pile_optim_create(&fx->o, fx->m, &ac, err);
    if (rc) {
        fixture_free(fx);
        return rc;
    }
    size_t n = pile_model_flat_size(fx->m);
    float *h = calloc(n, sizeof *h);
    if (!h) return PILE_ENOMEM;
    pile_test_rng_state = seed;
    for (int which = 0; which < 2; which++) {
        memset(h, 0, n * sizeof *h);
        for (size_t i = 0; i < pile_model_tensor_count(fx->m); i++) {
            const pile_tensor_info *t = pile_model_tensor(fx->m, i);
            for (size_t k = 0; k < t->saved_numel; k++) {
                double u = (double)(pile_test_rng() >> 11) / 9007199254740992.0;
                h[t->offset + k] = which ? (float)(u * 1e-3) : (float)(u - 0.5) * 0.01f;
            }
        }
        pile_backend_upload(fx->be, which ? pile_optim_v(fx->o) : pile_optim_m(fx->o), h, n);
    }
    free(h);
    pile_optim_set_steps(fx->o, 7);
    return 0;
}

static float *host_copy(fixture *fx, pile_tensor src)
{
    size_t n = pile_model_flat_size(fx->m);
    float *h = malloc(n * sizeof *h);
    if (h) pile_backend_download(fx->be, h, src, n);
    return h;
}

static int same_buffers(fixture *a, fixture *b, pile_tensor pa, pile_tensor pb)
{
    size_t n = pile_model_flat_size(a->m);
    if (n != pile_model_flat_size(b->m)) return 0;
    float *x = host_copy(a, pa), *y = host_copy(b, pb);
    int same = x && y && memcmp(x, y, n * sizeof *x) == 0;
    free(x);
    free(y);
    return same;
}

static pile_train_state sample_state(int64_t step)
{
    pile_train_state st;
    memset(&st, 0, sizeof st);
    st.step = step;
    st.epoch = 2;
    st.position = 12345;
    st.total_steps = 1000;
    st.best_val_loss = 2.0 / 3.0;
    st.loss_scale = 65536.0;
    st.seed = 18446744073709551557ull; /* above INT64_MAX */
    st.tokens_seen = 987654321012ull;
    for (int i = 0; i < 16; i++) st.tokenizer_fp[i] = (uint8_t)(i * 17 + 3);
    strcpy(st.tokenizer_spec, "bytes");
    return st;
}

static const char *config_json = "{\n  \"batch_size\": 8,\n  \"learning_rate\": 0.00059999999999999995,\n"
                                 "  \"model\": \"tiny\",\n  \"betas\": [0.9, 0.95],\n  \"doc_mask\": false\n}\n";

static void test_checkpoint_roundtrip(void)
{
    TEST("checkpoint save/load: weights, moments, state and config bit-exact; padded rows zero");
    pile_err err = {0};
    pile_buf dir = {0}, cfgj = {0}, p = {0};
    fixture a, b;
    ASSERT_OK(fixture_make(&a, 32, 11, &err), EP);
    ASSERT_OK(fixture_make(&b, 32, 99, &err), EP);
    if (!a.m || !b.m) {
        fixture_free(&a);
        fixture_free(&b);
        return;
    }
    pile_train_state st = sample_state(7);
    tpath(&dir, "run/epoch-001");
    ASSERT_OK(pile_checkpoint_save(dir.data, a.m, a.o, &st, config_json, &err), EP);
    static const char *const files[] = {"model.safetensors",     "optimizer.safetensors",
                                        "config.json",           "trainer_state.json",
                                        "tokenizer/tokenizer_spec.txt", "tokenizer.json",
                                        "tokenizer_config.json", "special_tokens_map.json"};
    for (int i = 0; i < 8; i++) {
        pile_fs_join(&p, dir.data, files[i]);
        if (!exists(p.data)) printf("# missing %s\n", p.data);
        ASSERT(exists(p.data));
    }

    /* garbage in b's padded wte rows: loading must zero them */
    const pile_tensor_info *wte = pile_model_tensor(b.m, 0);
    ASSERT_STR_EQ(wte->name, "wte.weight");
    ASSERT(wte->numel > wte->saved_numel);
    float *h = host_copy(&b, pile_model_params(b.m));
    if (h) {
        for (size_t k = wte->saved_numel; k < wte->numel; k++) h[wte->offset + k] = 1.0f;
        pile_backend_upload(b.be, pile_model_params(b.m), h, pile_model_flat_size(b.m));
        free(h);
    }
    ASSERT(!same_buffers(&a, &b, pile_model_params(a.m), pile_model_params(b.m)));

    pile_model_config cfg;
    ASSERT_OK(pile_checkpoint_read_model_config(dir.data, &cfg, &err), EP);
    pile_model_config want = tiny_config(32);
    ASSERT_EQ(cfg.vocab_size, want.vocab_size);
    ASSERT_EQ(cfg.n_positions, want.n_positions);
    ASSERT_EQ(cfg.n_layer, want.n_layer);
    ASSERT_EQ(cfg.n_head, want.n_head);
    ASSERT_EQ(cfg.n_embd, want.n_embd);
    ASSERT(cfg.dropout == want.dropout);

    pile_train_state got;
    memset(&got, 0x55, sizeof got);
    pile_optim_set_steps(b.o, 0);
    ASSERT_OK(pile_checkpoint_load(dir.data, b.m, b.o, &got, &err), EP);
    ASSERT(same_buffers(&a, &b, pile_model_params(a.m), pile_model_params(b.m)));
    ASSERT(same_buffers(&a, &b, pile_optim_m(a.o), pile_optim_m(b.o)));
    ASSERT(same_buffers(&a, &b, pile_optim_v(a.o), pile_optim_v(b.o)));
    ASSERT_EQ(pile_optim_steps(b.o), 7);
    ASSERT_EQ(got.step, st.step);
    ASSERT_EQ(got.epoch, st.epoch);
    ASSERT(got.position == st.position);
    ASSERT_EQ(got.total_steps, st.total_steps);
    ASSERT(got.best_val_loss == st.best_val_loss);
    ASSERT(got.loss_scale == st.loss_scale);
    ASSERT(got.seed == st.seed);
    ASSERT(got.tokens_seen == st.tokens_seen);
    ASSERT_MEM_EQ(got.tokenizer_fp, st.tokenizer_fp, 16);
    ASSERT_STR_EQ(got.tokenizer_spec, "bytes");

    /* the stored configuration reads back with the same values */
    ASSERT_OK(pile_checkpoint_read_config_json(dir.data, &cfgj, &err), EP);
    pile_json *j1 = NULL, *j2 = NULL;
    ASSERT_OK(pile_json_parse(cfgj.data ? cfgj.data : "", cfgj.len, "read back", &j1, &err), EP);
    ASSERT_OK(pile_json_parse(config_json, strlen(config_json), "given", &j2, &err), EP);
    ASSERT_EQ(pile_json_size(j1), 5);
    ASSERT(pile_json_num(pile_json_get(j1, "learning_rate")) == pile_json_num(pile_json_get(j2, "learning_rate")));
    ASSERT_STR_EQ(pile_json_str(pile_json_get(j1, "model"), NULL), "tiny");
    ASSERT(pile_json_num(pile_json_at(pile_json_get(j1, "betas"), 1)) == 0.95);
    ASSERT_EQ(pile_json_type_of(pile_json_get(j1, "doc_mask")), PILE_JSON_BOOL);
    pile_json_free(j1);
    pile_json_free(j2);

    /* config.json says what transformers needs */
    pile_json *c = NULL;
    pile_fs_join(&p, dir.data, "config.json");
    ASSERT_OK(pile_json_parse_file(p.data, &c, &err), EP);
    ASSERT_STR_EQ(pile_json_str(pile_json_get(c, "model_type"), NULL), "gpt2");
    int64_t x = -1;
    ASSERT(pile_json_int(pile_json_get(c, "eos_token_id"), &x) && x == 256);
    ASSERT(pile_json_int(pile_json_get(pile_json_get(c, "pile"), "padded_vocab"), &x) && x == 320);
    ASSERT(pile_json_num(pile_json_get(c, "resid_pdrop")) == 0.1);
    ASSERT(pile_json_bool(pile_json_get(c, "tie_word_embeddings")));
    pile_json_free(c);

    /* best_val_loss infinite before any validation: null, back as INFINITY */
    st.best_val_loss = INFINITY;
    ASSERT_OK(pile_checkpoint_save(dir.data, a.m, NULL, &st, NULL, &err), EP);
    ASSERT_OK(pile_checkpoint_load(dir.data, b.m, NULL, &got, &err), EP);
    ASSERT(isinf(got.best_val_loss) && got.best_val_loss > 0);
    /* no optimizer saved: loading moments is an error, weights alone are fine */
    ASSERT(pile_checkpoint_load(dir.data, b.m, b.o, NULL, &err) < 0);
    ASSERT_EQ(pile_checkpoint_read_config_json(dir.data, &cfgj, &err), PILE_ENOENT);

    fixture_free(&a);
    fixture_free(&b);
    pile_buf_free(&dir);
    pile_buf_free(&cfgj);
    pile_buf_free(&p);
}

static void test_checkpoint_mismatch(void)
{
    TEST("checkpoint load: another shape, a missing or an extra tensor is PILE_EMISMATCH naming it");
    pile_err err = {0};
    pile_buf dir = {0}, p = {0}, q = {0};
    fixture a, wide;
    ASSERT_OK(fixture_make(&a, 32, 5, &err), EP);
    ASSERT_OK(fixture_make(&wide, 64, 5, &err), EP);
    if (!a.m || !wide.m) {
        fixture_free(&a);
        fixture_free(&wide);
        return;
    }
    pile_train_state st = sample_state(3);
    tpath(&dir, "mismatch");
    ASSERT_OK(pile_checkpoint_save(dir.data, a.m, a.o, &st, config_json, &err), EP);
    ASSERT_EQ(pile_checkpoint_load(dir.data, wide.m, NULL, NULL, &err), PILE_EMISMATCH);
    ASSERT(strstr(err.msg, "wte.weight") != NULL);

    /* drop one tensor, then add a stranger */
    pile_st_file *f = NULL;
    pile_fs_join(&p, dir.data, "model.safetensors");
    ASSERT_OK(pile_st_open(&f, p.data, &err), EP);
    size_t n = pile_st_count(f);
    pile_st_tensor *t = calloc(n + 1, sizeof *t);
    float one = 1.0f;
    if (f && t) {
        for (size_t i = 0; i < n; i++) t[i] = *pile_st_at(f, i);
        const char *other = tpath(&q, "other.safetensors");
        char last[128];
        snprintf(last, sizeof last, "%s", t[n - 1].name); /* the name dies with f */
        ASSERT_OK(pile_st_write(other, t, n - 1, NULL, &err), EP);
        pile_st_close(f);
        f = NULL;
        rename(other, p.data);
        ASSERT_EQ(pile_checkpoint_load(dir.data, a.m, NULL, NULL, &err), PILE_EMISMATCH);
        ASSERT(strstr(err.msg, "missing") && strstr(err.msg, last));
    }
    pile_st_close(f);
    free(t);
    /* save again, then append a stranger tensor and HF's attention buffer */
    ASSERT_OK(pile_checkpoint_save(dir.data, a.m, a.o, &st, config_json, &err), EP);
    f = NULL;
    ASSERT_OK(pile_st_open(&f, p.data, &err), EP);
    n = pile_st_count(f);
    t = calloc(n + 2, sizeof *t);
    if (f && t) {
        for (size_t i = 0; i < n; i++) t[i] = *pile_st_at(f, i);
        t[n] = (pile_st_tensor){.name = "h.0.attn.bias", .ndim = 1, .shape = {1}, .data = &one};
        const char *other = tpath(&q, "other.safetensors");
        ASSERT_OK(pile_st_write(other, t, n + 1, NULL, &err), EP);
        rename(other, p.data);
        pile_st_close(f);
        f = NULL;
        ASSERT_OK(pile_checkpoint_load(dir.data, a.m, NULL, NULL, &err), EP);
        ASSERT_OK(pile_st_open(&f, p.data, &err), EP);
        for (size_t i = 0; f && i < n; i++) t[i] = *pile_st_at(f, i);
        t[n + 1] = (pile_st_tensor){.name = "h.0.stranger", .ndim = 1, .shape = {1}, .data = &one};
        ASSERT_OK(pile_st_write(other, t, n + 2, NULL, &err), EP);
        rename(other, p.data);
        ASSERT_EQ(pile_checkpoint_load(dir.data, a.m, NULL, NULL, &err), PILE_EMISMATCH);
        ASSERT(strstr(err.msg, "h.0.stranger") != NULL);
    }
    pile_st_close(f);
    free(t);
    fixture_free(&a);
    fixture_free(&wide);
    pile_buf_free(&dir);
    pile_buf_free(&p);
    pile_buf_free(&q);
}

static int count_entries_with(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    size_t sl = strlen(suffix);
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l >= sl && strcmp(e->d_name + l - sl, suffix) == 0) n++;
    }
    closedir(d);
    return n;
}

static void test_atomic_and_latest(void)
{
    TEST("checkpoint: atomic replace (no .tmp or .old left), latest, find_latest");
    pile_err err = {0};
    pile_buf run = {0}, dir = {0}, p = {0}, out = {0};
    fixture a, b;
    ASSERT_OK(fixture_make(&a, 32, 1, &err), EP);
    ASSERT_OK(fixture_make(&b, 32, 2, &err), EP);
    if (!a.m || !b.m) {
        fixture_free(&a);
        fixture_free(&b);
        return;
    }
    tpath(&run, "latest-run");
    ASSERT_EQ(pile_checkpoint_find_latest(run.data, &out, &err), PILE_ENOENT);
    pile_train_state st = sample_state(10);
    pile_fs_join(&dir, run.data, "epoch-001");
    ASSERT_OK(pile_checkpoint_save(dir.data, a.m, a.o, &st, config_json, &err), EP);
    /* a stale .tmp from a killed save is cleared; an extra file in the old
     * folder disappears with it */
    pile_fs_join(&p, run.data, "step-0000020.tmp");
    ASSERT_OK(pile_fs_mkdirs(p.data, &err), EP);
    pile_fs_join(&dir, run.data, "step-0000020");
    st.step = 20;
    ASSERT_OK(pile_checkpoint_save(dir.data, a.m, a.o, &st, config_json, &err), EP);
    pile_fs_join(&p, dir.data, "stray.txt");
    ASSERT(write_bytes(p.data, "x", 1) == 0);
    st.step = 21;
    ASSERT_OK(pile_checkpoint_save(dir.data, b.m, b.o, &st, config_json, &err), EP);
    ASSERT(!exists(p.data));
    ASSERT_EQ(count_entries_with(run.data, ".tmp"), 0);
    ASSERT_EQ(count_entries_with(run.data, ".old"), 0);
    pile_train_state got;
    ASSERT_OK(pile_checkpoint_load(dir.data, a.m, a.o, &got, &err), EP);
    ASSERT_EQ(got.step, 21);
    ASSERT(same_buffers(&a, &b, pile_model_params(a.m), pile_model_params(b.m)));
    ASSERT(same_buffers(&a, &b, pile_optim_v(a.o), pile_optim_v(b.o)));

    /* best_model is never "latest" by scan; the highest step is */
    pile_fs_join(&p, run.data, "best_model");
    st.step = 50;
    ASSERT_OK(pile_checkpoint_save(p.data, a.m, NULL, &st, NULL, &err), EP);
    out.len = 0;
    ASSERT_OK(pile_checkpoint_find_latest(run.data, &out, &err), EP);
    ASSERT_STR_EQ(out.data, dir.data);
    /* "latest" wins when it names a checkpoint */
    ASSERT_OK(pile_checkpoint_set_latest(run.data, "epoch-001", &err), EP);
    out.len = 0;
    ASSERT_OK(pile_checkpoint_find_latest(run.data, &out, &err), EP);
    pile_fs_join(&p, run.data, "epoch-001");
    ASSERT_STR_EQ(out.data, p.data);
    /* a stale "latest" falls back to the scan */
    ASSERT_OK(pile_checkpoint_set_latest(run.data, "step-0000099", &err), EP);
    out.len = 0;
    ASSERT_OK(pile_checkpoint_find_latest(run.data, &out, &err), EP);
    ASSERT_STR_EQ(out.data, dir.data);
    ASSERT_EQ(pile_checkpoint_set_latest(run.data, "../x", &err), PILE_EINVAL);

    /* a crash between the two renames left only step-0000020.old: the next
     * save brings it back first, then replaces it */
    pile_fs_join(&p, run.data, "step-0000020.old");
    ASSERT(rename(dir.data, p.data) == 0);
    st.step = 22;
    ASSERT_OK(pile_checkpoint_save(dir.data, a.m, a.o, &st, config_json, &err), EP);
    ASSERT(!exists(p.data));
    ASSERT_OK(pile_checkpoint_load(dir.data, b.m, NULL, &got, &err), EP);
    ASSERT_EQ(got.step, 22);

    /* a save that fails leaves the old folder as it was and no .tmp */
    pile_train_state bad = sample_state(30);
    strcpy(bad.tokenizer_spec, "/nonexistent/tokenizer.json");
    ASSERT_EQ(pile_checkpoint_save(dir.data, a.m, a.o, &bad, config_json, &err), PILE_ENOENT);
    ASSERT_EQ(count_entries_with(run.data, ".tmp"), 0);
    ASSERT_OK(pile_checkpoint_load(dir.data, b.m, NULL, &got, &err), EP);
    ASSERT_EQ(got.step, 22);
    ASSERT_EQ(pile_checkpoint_save(dir.data, a.m, a.o, &st, "[1]", &err), PILE_EINVAL);

    fixture_free(&a);
    fixture_free(&b);
    pile_buf_free(&run);
    pile_buf_free(&dir);
    pile_buf_free(&p);
    pile_buf_free(&out);
}

static int same_file(const char *x, const char *y)
{
    pile_buf a = {0}, b = {0};
    pile_err err;
    int same = pile_fs_read_file(x, &a, &err) == 0 && pile_fs_read_file(y, &b, &err) == 0 && a.len == b.len &&
               a.len > 0 && memcmp(a.data, b.data, a.len) == 0;
    pile_buf_free(&a);
    pile_buf_free(&b);
    return same;
}

static void test_tokenizer_carry(void)
{
    TEST("checkpoint: tokenizer files carried and reopened with the same fingerprint");
    pile_buf gpt2 = {0}, tik = {0}, dir = {0}, spec = {0}, p = {0}, q = {0};
    pile_fs_join(&gpt2, pile_test_shared(), "fixtures/gpt2");
    pile_fs_join(&tik, gpt2.data, "r50k_base.tiktoken");
    pile_fs_join(&p, gpt2.data, "encoder.json");
    if (!exists(p.data) || !exists(tik.data)) {
        printf("# skipped: no GPT-2 tokenizer fixture in %s\n", gpt2.data);
        pile_buf_free(&gpt2);
        pile_buf_free(&tik);
        pile_buf_free(&p);
        return;
    }
    pile_err err = {0};
    fixture a;
    ASSERT_OK(fixture_make(&a, 32, 3, &err), EP);
    if (!a.m) return;
    pile_train_state st = sample_state(4);

    /* a GPT-2 folder: both files copied, the folder returned */
    pile_tokenizer *orig = NULL, *copy = NULL;
    ASSERT_OK(pile_tokenizer_open(&orig, gpt2.data, &err), EP);
    if (orig) pile_tokenizer_fingerprint(orig, st.tokenizer_fp);
    snprintf(st.tokenizer_spec, sizeof st.tokenizer_spec, "%s", gpt2.data);
    tpath(&dir, "tok-folder");
    ASSERT_OK(pile_checkpoint_save(dir.data, a.m, NULL, &st, NULL, &err), EP);
    ASSERT_OK(pile_checkpoint_tokenizer_spec(dir.data, &spec, &err), EP);
    pile_fs_join(&q, dir.data, "tokenizer");
    ASSERT_STR_EQ(spec.data, q.data);
    static const char *const files[] = {"encoder.json", "vocab.bpe"};
    for (int i = 0; i < 2; i++) {
        pile_fs_join(&p, gpt2.data, files[i]);
        pile_fs_join(&q, spec.data, files[i]);
        ASSERT(same_file(p.data, q.data));
    }
    ASSERT_OK(pile_tokenizer_open(&copy, spec.data, &err), EP);
    if (orig && copy) {
        uint8_t f1[16], f2[16];
        pile_tokenizer_fingerprint(orig, f1);
        pile_tokenizer_fingerprint(copy, f2);
        ASSERT_MEM_EQ(f1, f2, 16);
    }
    pile_tokenizer_close(copy);
    copy = NULL;
    pile_buf txt = {0};
    pile_fs_join(&q, dir.data, "tokenizer/tokenizer_spec.txt");
    ASSERT_OK(pile_fs_read_file(q.data, &txt, &err), EP);
    ASSERT(pile_buf_append(&txt, "", 1) == 0);
    char hex[33];
    for (int i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", st.tokenizer_fp[i]);
    ASSERT(txt.data && strstr(txt.data, gpt2.data) && strstr(txt.data, hex));
    pile_buf_free(&txt);

    /* a tiktoken file: copied under its own name (the name picks the pattern) */
    snprintf(st.tokenizer_spec, sizeof st.tokenizer_spec, "%s", tik.data);
    tpath(&dir, "tok-file");
    ASSERT_OK(pile_checkpoint_save(dir.data, a.m, NULL, &st, NULL, &err), EP);
    spec.len = 0;
    ASSERT_OK(pile_checkpoint_tokenizer_spec(dir.data, &spec, &err), EP);
    pile_fs_join(&q, dir.data, "tokenizer/r50k_base.tiktoken");
    ASSERT_STR_EQ(spec.data, q.data);
    ASSERT(same_file(tik.data, q.data));

    /* the byte tokenizer: only the spec */
    strcpy(st.tokenizer_spec, "");
    tpath(&dir, "tok-bytes");
    ASSERT_OK(pile_checkpoint_save(dir.data, a.m, NULL, &st, NULL, &err), EP);
    spec.len = 0;
    ASSERT_OK(pile_checkpoint_tokenizer_spec(dir.data, &spec, &err), EP);
    ASSERT_STR_EQ(spec.data, "bytes");

    pile_tokenizer_close(orig);
    fixture_free(&a);
    pile_buf_free(&gpt2);
    pile_buf_free(&tik);
    pile_buf_free(&dir);
    pile_buf_free(&spec);
    pile_buf_free(&p);
    pile_buf_free(&q);
}

/* ------------------------------------------------------------- metrics */

/* Reads the TFRecords of an event file: checks both CRCs of each record,
 * returns the count, the records back to back in out (each after its u64
 * length), or -1 on a bad frame. */
static int read_tfrecords(const char *path, pile_buf *out)
{
    pile_buf b = {0};
    pile_err err;
    if (pile_fs_read_file(path, &b, &err)) return -1;
    size_t pos = 0;
    int n = 0;
    const unsigned char *d = (const unsigned char *)b.data;
    while (pos < b.len) {
        if (b.len - pos < 12) return pile_buf_free(&b), -1;
        uint64_t len = 0;
        uint32_t c1 = 0, c2 = 0;
        for (int i = 0; i < 8; i++) len |= (uint64_t)d[pos + i] << (8 * i);
        for (int i = 0; i < 4; i++) c1 |= (uint32_t)d[pos + 8 + i] << (8 * i);
        if (c1 != pile_crc32c_mask(pile_crc32c(d + pos, 8)) || b.len - pos - 12 < len + 4) return pile_buf_free(&b), -1;
        for (int i = 0; i < 4; i++) c2 |= (uint32_t)d[pos + 12 + len + i] << (8 * i);
        if (c2 != pile_crc32c_mask(pile_crc32c(d + pos + 12, len))) return pile_buf_free(&b), -1;
        pile_buf_append(out, d + pos, 8);
        pile_buf_append(out, d + pos + 12, len);
        pos += 12 + len + 4;
        n++;
    }
    pile_buf_free(&b);
    return n;
}

static int find_event_files(const char *dir, pile_buf *names, int *count)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    struct dirent *e;
    *count = 0;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "events.out.tfevents.", 20) != 0) continue;
        pile_buf_append_str(names, e->d_name);
        pile_buf_append(names, "\n", 1);
        (*count)++;
    }
    closedir(d);
    return 0;
}

static void test_metrics(void)
{
    TEST("metrics: jsonl lines, TFRecord framing and Event encoding, resume truncation");
    pile_err err = {0};
    pile_buf dir = {0}, p = {0}, names = {0}, recs = {0}, text = {0};
    tpath(&dir, "metrics-run");
    pile_metrics *m = NULL;
    ASSERT_OK(pile_metrics_open(&m, dir.data, -1, &err), EP);
    if (!m) return;
    const char *tags[] = {"train/loss", "train/lr"};
    for (int s = 1; s <= 4; s++) {
        double v[2] = {s == 3 ? NAN : 10.0 / s, 1e-4 * s};
        ASSERT_OK(pile_metrics_write(m, s, tags, v, 2, &err), EP);
    }
    pile_metrics_close(m);
    pile_metrics_close(NULL);

    pile_fs_join(&p, dir.data, "metrics.jsonl");
    ASSERT_OK(pile_fs_read_file(p.data, &text, &err), EP);
    pile_buf_append(&text, "", 1);
    int lines = 0;
    for (char *l = text.data; l && *l; lines++) {
        char *nl = strchr(l, '\n');
        ASSERT(nl != NULL);
        if (!nl) break;
        pile_json *j = NULL;
        ASSERT_OK(pile_json_parse(l, (size_t)(nl - l), "line", &j, &err), EP);
        int64_t step = -1;
        ASSERT(pile_json_int(pile_json_get(j, "step"), &step) && step == lines + 1);
        ASSERT_EQ(pile_json_type_of(pile_json_get(j, "time")), PILE_JSON_NUMBER);
        if (step == 3) ASSERT_EQ(pile_json_type_of(pile_json_get(j, "train/loss")), PILE_JSON_NULL);
        else ASSERT(pile_json_num(pile_json_get(j, "train/loss")) == 10.0 / (double)step);
        ASSERT(pile_json_num(pile_json_get(j, "train/lr")) == 1e-4 * (double)step);
        pile_json_free(j);
        l = nl + 1;
    }
    ASSERT_EQ(lines, 4);

    int nfiles = 0;
    ASSERT(find_event_files(dir.data, &names, &nfiles) == 0);
    ASSERT_EQ(nfiles, 1);
    if (nfiles == 1) {
        names.data[names.len - 1] = '\0';
        char host[256] = "";
        gethostname(host, sizeof host);
        ASSERT(strstr(names.data, ".pile") != NULL);
        ASSERT(strstr(names.data, host) != NULL);
        pile_fs_join(&p, dir.data, names.data);
        ASSERT_EQ(read_tfrecords(p.data, &recs), 5);
        /* first Event: wall_time (field 1, fixed64) then file_version */
        const unsigned char *r = (const unsigned char *)recs.data;
        ASSERT(recs.len > 8 + 9 + 2 + 13);
        if (recs.len > 32) {
            ASSERT_EQ(r[8], 0x09);
            ASSERT_EQ(r[17], 0x1a);
            ASSERT_EQ(r[18], 13);
            ASSERT_MEM_EQ(r + 19, "brain.Event:2", 13);
            /* second: wall_time, step 1, summary { value { tag, simple_value } x2 } */
            const unsigned char *e = r + 8 + 9 + 2 + 13 + 8;
            ASSERT_EQ(e[0], 0x09);
            ASSERT_EQ(e[9], 0x10);
            ASSERT_EQ(e[10], 1);
            ASSERT_EQ(e[11], 0x2a);
            const unsigned char *v = e + 13;
            ASSERT_EQ(v[0], 0x0a);
            ASSERT_EQ(v[2], 0x0a);
            ASSERT_EQ(v[3], 10);
            ASSERT_MEM_EQ(v + 4, "train/loss", 10);
            ASSERT_EQ(v[14], 0x15);
            float ten = 10.0f;
            ASSERT_MEM_EQ(v + 15, &ten, 4);
        }
    }

    /* resume from step 2: lines 3 and 4 go, and so does a torn last line */
    pile_fs_join(&p, dir.data, "metrics.jsonl");
    FILE *f = fopen(p.data, "ab");
    if (f) {
        fputs("{\"step\": 1, \"tr", f);
        fclose(f);
    }
    m = NULL;
    ASSERT_OK(pile_metrics_open(&m, dir.data, 2, &err), EP);
    double v5[2] = {0.5, 0.25};
    if (m) ASSERT_OK(pile_metrics_write(m, 3, tags, v5, 2, &err), EP);
    pile_metrics_close(m);
    text.len = 0;
    ASSERT_OK(pile_fs_read_file(p.data, &text, &err), EP);
    pile_buf_append(&text, "", 1);
    int steps[8], ns = 0;
    for (char *l = text.data; l && *l && ns < 8;) {
        char *nl = strchr(l, '\n');
        if (!nl) break;
        pile_json *j = NULL;
        int64_t s = -1;
        if (pile_json_parse(l, (size_t)(nl - l), "line", &j, &err) == 0 && pile_json_int(pile_json_get(j, "step"), &s))
            steps[ns++] = (int)s;
        pile_json_free(j);
        l = nl + 1;
    }
    ASSERT_EQ(ns, 3);
    if (ns == 3) {
        ASSERT_EQ(steps[0], 1);
        ASSERT_EQ(steps[1], 2);
        ASSERT_EQ(steps[2], 3);
    }
    names.len = 0;
    ASSERT(find_event_files(dir.data, &names, &nfiles) == 0);
    ASSERT_EQ(nfiles, 2);
    ASSERT(pile_rss_bytes() > 0);
    pile_buf_free(&dir);
    pile_buf_free(&p);
    pile_buf_free(&names);
    pile_buf_free(&recs);
    pile_buf_free(&text);
}

/* ------------------------------------------------------------ fixture */

/* ------------------------------------------------------ hostile input */

static void test_st_hostile(void)
{
    TEST("safetensors: header lengths near 2^64, NUL in a name, a FIFO or a folder refused");
    expect_refused("max-header.safetensors", "{}", UINT64_MAX - 1, 0, PILE_EFORMAT, "header length");
    expect_refused("wrap-header.safetensors", "{}", ((uint64_t)1 << 63) + 8, 0, PILE_EFORMAT, "header length");
    expect_refused("nul-name.safetensors", "{" ENTRY("wte.weight\\u0000x", "[1]", 0, 4) "}", UINT64_MAX, 4,
                   PILE_EFORMAT, "NUL");
    expect_refused("empty-name.safetensors", "{" ENTRY("", "[1]", 0, 4) "}", UINT64_MAX, 4, PILE_EFORMAT, "empty");
    pile_buf p = {0};
    pile_err err = {0};
    pile_st_file *f = NULL;
    /* a FIFO must not block the open (the alarm fails the test if it does) */
    tpath(&p, "fifo.safetensors");
    ASSERT(mkfifo(p.data, 0600) == 0);
    alarm(20);
    ASSERT_EQ(pile_st_open(&f, p.data, &err), PILE_EFORMAT);
    alarm(0);
    ASSERT(f == NULL && strstr(err.msg, "regular") && strstr(err.msg, "fifo.safetensors"));
    tpath(&p, "dir.safetensors");
    ASSERT(mkdir(p.data, 0700) == 0);
    ASSERT_EQ(pile_st_open(&f, p.data, &err), PILE_EFORMAT);
    ASSERT(f == NULL && strstr(err.msg, "regular"));
    pile_buf_free(&p);
}

/* config.json as transformers 5 writes it for GPT2LMHeadModel, with the
 * fields the tests vary. */
static int write_hf_config(const char *dir, int vocab, int n_layer, int n_head, int n_embd, const char *eps,
                           const char *by_layer, const char *type, const char *resid)
{
    pile_buf b = {0}, path = {0};
    pile_err err = {0};
    pile_buf_printf(&b,
                    "{\n  \"activation_function\": \"gelu_new\",\n  \"add_cross_attention\": false,\n"
                    "  \"architectures\": [\n    \"GPT2LMHeadModel\"\n  ],\n  \"attn_pdrop\": 0.1,\n"
                    "  \"bos_token_id\": 50256,\n  \"dtype\": \"float32\",\n  \"embd_pdrop\": 0.1,\n"
                    "  \"eos_token_id\": 50256,\n  \"initializer_range\": 0.02,\n  \"layer_norm_epsilon\": %s,\n"
                    "  \"model_type\": \"%s\",\n  \"n_embd\": %d,\n  \"n_head\": %d,\n  \"n_inner\": null,\n"
                    "  \"n_layer\": %d,\n  \"n_positions\": 16,\n  \"pad_token_id\": null,\n"
                    "  \"reorder_and_upcast_attn\": false,\n  \"resid_pdrop\": %s,\n"
                    "  \"scale_attn_by_inverse_layer_idx\": %s,\n  \"scale_attn_weights\": true,\n"
                    "  \"summary_activation\": null,\n  \"summary_first_dropout\": 0.1,\n"
                    "  \"summary_proj_to_labels\": true,\n  \"summary_type\": \"cls_index\",\n"
                    "  \"summary_use_proj\": true,\n  \"tie_word_embeddings\": true,\n"
                    "  \"transformers_version\": \"5.24.0\",\n  \"use_cache\": true,\n  \"vocab_size\": %d\n}\n",
                    eps, type, n_embd, n_head, n_layer, resid, by_layer, vocab);
    int rc = pile_fs_join(&path, dir, "config.json");
    if (!rc && !b.failed) rc = pile_fs_write_atomic(path.data, b.data, b.len, &err);
    pile_buf_free(&b);
    pile_buf_free(&path);
    return rc || b.failed ? -1 : 0;
}

static void expect_config_refused(const char *dir, int code, const char *word)
{
    pile_err err = {0};
    pile_model_config c;
    int rc = pile_checkpoint_read_model_config(dir, &c, &err);
    if (rc != code) printf("# config refused with %d, want %d (%s)\n", rc, code, err.msg);
    ASSERT_EQ(rc, code);
    if (!strstr(err.msg, word)) printf("# message '%s' lacks '%s'\n", err.msg, word);
    ASSERT(strstr(err.msg, word) != NULL);
}

static void test_hf_folder(void)
{
    TEST("checkpoint: a transformers-written folder loads; configs transformers would read otherwise are refused");
    pile_err err = {0};
    pile_buf dir = {0}, p = {0}, q = {0};
    fixture a, b;
    ASSERT_OK(fixture_make(&a, 32, 11, &err), EP);
    ASSERT_OK(fixture_make(&b, 32, 12, &err), EP);
    if (!a.m || !b.m) {
        fixture_free(&a);
        fixture_free(&b);
        return;
    }
    pile_train_state st = sample_state(3);
    tpath(&dir, "hf style");
    ASSERT_OK(pile_checkpoint_save(dir.data, a.m, a.o, &st, config_json, &err), EP);
    /* what save_pretrained leaves: "transformer." names, plus (older
     * versions) the tied head and the attention mask buffers */
    pile_fs_join(&p, dir.data, "model.safetensors");
    pile_st_file *f = NULL;
    ASSERT_OK(pile_st_open(&f, p.data, &err), EP);
    size_t n = pile_st_count(f);
    static char names[64][96];
    static float mask[16 * 16];
    float zero = 0.0f;
    pile_st_tensor t[64];
    ASSERT(n > 0 && n + 4 <= 64);
    for (size_t i = 0; f && i < n && i + 4 <= 64; i++) {
        t[i] = *pile_st_at(f, i);
        snprintf(names[i], sizeof names[i], "transformer.%s", t[i].name);
        t[i].name = names[i];
        if (strcmp(names[i], "transformer.wte.weight") == 0) {
            t[n] = t[i];
            t[n].name = "lm_head.weight";
        }
    }
    for (int k = 0; k < 16 * 16; k++) mask[k] = (float)(k % 16 <= k / 16);
    t[n + 1] = (pile_st_tensor){.name = "transformer.h.0.attn.bias", .ndim = 4, .shape = {1, 1, 16, 16}, .data = mask};
    t[n + 2] = (pile_st_tensor){.name = "transformer.h.1.attn.bias", .ndim = 4, .shape = {1, 1, 16, 16}, .data = mask};
    t[n + 3] = (pile_st_tensor){.name = "transformer.h.0.attn.masked_bias", .ndim = 0, .data = &zero};
    const char *meta[] = {"format", "pt", NULL};
    tpath(&q, "hf.safetensors");
    ASSERT_OK(pile_st_write(q.data, t, n + 4, meta, &err), EP);
    pile_st_close(f);
    ASSERT(rename(q.data, p.data) == 0);
    pile_fs_join(&q, dir.data, "trainer_state.json");
    unlink(q.data);
    pile_fs_join(&q, dir.data, "optimizer.safetensors");
    unlink(q.data);
    ASSERT(write_hf_config(dir.data, 300, 2, 2, 32, "1e-05", "false", "gpt2", "0.1") == 0);
    pile_model_config c;
    ASSERT_OK(pile_checkpoint_read_model_config(dir.data, &c, &err), EP);
    ASSERT(c.vocab_size == 300 && c.n_positions == 16 && c.n_layer == 2 && c.n_head == 2 && c.n_embd == 32);
    ASSERT_OK(pile_checkpoint_load(dir.data, b.m, NULL, NULL, &err), EP);
    ASSERT(same_buffers(&a, &b, pile_model_params(a.m), pile_model_params(b.m)));
    /* without a state file, asking for one is an error, not a zeroed state */
    pile_train_state got;
    ASSERT(pile_checkpoint_load(dir.data, b.m, NULL, &got, &err) < 0);

    /* refused before a model is allocated for them */
    ASSERT(write_hf_config(dir.data, 300, 2, 2, 33, "1e-05", "false", "gpt2", "0.1") == 0);
    expect_config_refused(dir.data, PILE_EFORMAT, "multiple of n_head");
    ASSERT(write_hf_config(dir.data, 1 << 30, 1 << 30, 1 << 10, 1 << 30, "1e-05", "false", "gpt2", "0.1") == 0);
    expect_config_refused(dir.data, PILE_EFORMAT, "parameters");
    ASSERT(write_hf_config(dir.data, 50257, 1 << 20, 16, 1024, "1e-05", "false", "gpt2", "0.1") == 0);
    expect_config_refused(dir.data, PILE_EFORMAT, "parameters");
    /* plausible, but not the weights beside it (gpt2-medium's dimensions) */
    ASSERT(write_hf_config(dir.data, 50257, 24, 16, 1024, "1e-05", "false", "gpt2", "0.1") == 0);
    expect_config_refused(dir.data, PILE_EMISMATCH, "model.safetensors");
    /* options that change what the model computes */
    ASSERT(write_hf_config(dir.data, 300, 2, 2, 32, "1e-06", "false", "gpt2", "0.1") == 0);
    expect_config_refused(dir.data, PILE_EFORMAT, "layer_norm_epsilon");
    ASSERT(write_hf_config(dir.data, 300, 2, 2, 32, "1e-05", "true", "gpt2", "0.1") == 0);
    expect_config_refused(dir.data, PILE_EFORMAT, "scale_attn_by_inverse_layer_idx");
    ASSERT(write_hf_config(dir.data, 300, 2, 2, 32, "1e-05", "false", "gpt_neo", "0.1") == 0);
    expect_config_refused(dir.data, PILE_EFORMAT, "gpt_neo");
    ASSERT(write_hf_config(dir.data, 300, 2, 2, 32, "1e-05", "false", "gpt2", "1.5") == 0);
    expect_config_refused(dir.data, PILE_EFORMAT, "resid_pdrop");
    pile_fs_join(&q, dir.data, "config.json");
    ASSERT(write_bytes(q.data, "[300, 16]", 9) == 0);
    expect_config_refused(dir.data, PILE_EFORMAT, "config.json");
    fixture_free(&a);
    fixture_free(&b);
    pile_buf_free(&dir);
    pile_buf_free(&p);
    pile_buf_free(&q);
}

/* Replaces dir's trainer_state.json by a valid one holding `fields` (a
 * JSON fragment: the total_steps member or its absence), then loads. */
static int load_state_with(const char *dir, pile_model *m, const char *fields, pile_train_state *st, pile_err *err)
{
    pile_buf b = {0}, path = {0};
    pile_buf_printf(&b,
                    "{\"format\": 1, \"step\": 5, \"epoch\": 0, \"position\": 2, %s \"best_val_loss\": null,"
                    " \"loss_scale\": 1, \"seed\": 3, \"tokens_seen\": 4,"
                    " \"tokenizer_fingerprint\": \"000102030405060708090a0b0c0d0e0f\", \"tokenizer_spec\": \"bytes\","
                    " \"config\": null}",
                    fields);
    int rc = pile_fs_join(&path, dir, "trainer_state.json") ? PILE_ENOMEM : 0;
    if (!rc) rc = pile_fs_write_atomic(path.data, b.data, b.len, err);
    pile_buf_free(&b);
    pile_buf_free(&path);
    return rc ? rc : pile_checkpoint_load(dir, m, NULL, st, err);
}

static void test_state_and_latest(void)
{
    TEST("checkpoint: trainer_state.json fields checked; latest names read back; folders with spaces");
    pile_err err = {0};
    pile_buf run = {0}, dir = {0}, out = {0};
    fixture a;
    ASSERT_OK(fixture_make(&a, 32, 13, &err), EP);
    if (!a.m) return;
    tpath(&run, "run with spaces");
    pile_fs_join(&dir, run.data, "step 0000005");
    pile_train_state st = sample_state(5);
    ASSERT_OK(pile_checkpoint_save(dir.data, a.m, a.o, &st, config_json, &err), EP);
    ASSERT_OK(pile_checkpoint_set_latest(run.data, "step 0000005", &err), EP);
    ASSERT_OK(pile_checkpoint_find_latest(run.data, &out, &err), EP);
    ASSERT(out.data && strcmp(out.data, dir.data) == 0);
    pile_train_state got;
    ASSERT_OK(pile_checkpoint_load(dir.data, a.m, a.o, &got, &err), EP);
    ASSERT_EQ(got.step, 5);
    /* names that would not read back as themselves */
    ASSERT_EQ(pile_checkpoint_set_latest(run.data, "step 0000005 ", &err), PILE_EINVAL);
    ASSERT_EQ(pile_checkpoint_set_latest(run.data, "a\tb", &err), PILE_EINVAL);
    ASSERT_EQ(pile_checkpoint_set_latest(run.data, "..", &err), PILE_EINVAL);
    /* latest naming a folder that is gone, and no numbered folder to fall
     * back on ("step 0000005" is not one) */
    ASSERT_OK(pile_checkpoint_set_latest(run.data, "epoch-009", &err), EP);
    out.len = 0;
    ASSERT_EQ(pile_checkpoint_find_latest(run.data, &out, &err), PILE_ENOENT);
    /* trainer_state.json: the fields as written load; missing or negative ones do not */
    ASSERT_OK(load_state_with(dir.data, a.m, "\"total_steps\": 9,", &got, &err), EP);
    ASSERT(got.step == 5 && got.total_steps == 9 && got.position == 2 && isinf(got.best_val_loss));
    ASSERT_EQ(load_state_with(dir.data, a.m, "", &got, &err), PILE_EFORMAT);
    ASSERT(strstr(err.msg, "total_steps") != NULL);
    ASSERT_EQ(load_state_with(dir.data, a.m, "\"total_steps\": -1,", &got, &err), PILE_EFORMAT);
    ASSERT_EQ(load_state_with(dir.data, a.m, "\"total_steps\": \"9\",", &got, &err), PILE_EFORMAT);
    fixture_free(&a);
    pile_buf_free(&run);
    pile_buf_free(&dir);
    pile_buf_free(&out);
}

/* ----------------------------------------------- checksums and resume */

/* Changes one byte of a file, `back` bytes before its end. */
static int flip_byte(const char *path, long back)
{
    FILE *f = fopen(path, "r+b");
    if (!f) return -1;
    int c = -1;
    if (fseek(f, -back, SEEK_END) == 0 && (c = fgetc(f)) != EOF && fseek(f, -1, SEEK_CUR) == 0)
        c = fputc(c ^ 0x5a, f);
    return fclose(f) == 0 && c != EOF ? 0 : -1;
}

static int has_text(const pile_buf *b, const char *s)
{
    return b->data && memmem(b->data, b->len, s, strlen(s)) != NULL;
}

/* Saves a checkpoint of fixture fx at step `step` as run/name. */
static int save_at(const char *run, const char *name, fixture *fx, int64_t step, pile_err *err)
{
    pile_buf dir = {0};
    pile_fs_join(&dir, run, name);
    pile_train_state st = sample_state(step);
    int rc = pile_checkpoint_save(dir.data, fx->m, fx->o, &st, config_json, err);
    pile_buf_free(&dir);
    return rc;
}

static const char *in_run(pile_buf *b, const char *run, const char *name)
{
    pile_fs_join(b, run, name);
    return b->data;
}

static void test_checksums(void)
{
    TEST("checkpoint: checksums.json lists every file; a flipped byte, a cut or missing file found by name");
    pile_err err = {0};
    pile_buf run = {0}, dir = {0}, p = {0}, text = {0};
    fixture a;
    ASSERT_OK(fixture_make(&a, 32, 31, &err), EP);
    if (!a.m) return;
    tpath(&run, "sums");
    pile_fs_join(&dir, run.data, "step-0000004");
    ASSERT_OK(save_at(run.data, "step-0000004", &a, 4, &err), EP);
    ASSERT_OK(pile_checkpoint_verify(dir.data, &err), EP);
    ASSERT_OK(pile_fs_read_file(in_run(&p, dir.data, "checksums.json"), &text, &err), EP);
    static const char *const listed[] = {"\"model.safetensors\"", "\"optimizer.safetensors\"", "\"config.json\"",
                                         "\"trainer_state.json\"", "\"tokenizer/tokenizer_spec.txt\"", "xxh3-128"};
    for (int i = 0; i < 6; i++) ASSERT(has_text(&text, listed[i]));
    ASSERT(!has_text(&text, "\"checksums.json\""));
    /* a file added later is not listed, and not a failure */
    ASSERT(write_bytes(in_run(&p, dir.data, "README.md"), "x", 1) == 0);
    ASSERT_OK(pile_checkpoint_verify(dir.data, &err), EP);

    pile_buf keep = {0};
    ASSERT_OK(pile_fs_read_file(in_run(&p, dir.data, "model.safetensors"), &keep, &err), EP);
    ASSERT(flip_byte(p.data, 100) == 0);
    ASSERT_EQ(pile_checkpoint_verify(dir.data, &err), PILE_ECORRUPT);
    ASSERT(strstr(err.msg, "'model.safetensors' has checksum") && strstr(err.msg, "step-0000004"));
    ASSERT_OK(pile_fs_write_atomic(p.data, keep.data, keep.len, &err), EP);
    ASSERT_OK(pile_checkpoint_verify(dir.data, &err), EP);
    ASSERT(truncate(in_run(&p, dir.data, "optimizer.safetensors"), 1000) == 0);
    ASSERT_EQ(pile_checkpoint_verify(dir.data, &err), PILE_ETRUNC);
    ASSERT(strstr(err.msg, "incomplete") && strstr(err.msg, "'optimizer.safetensors' has 1000 bytes"));
    ASSERT(unlink(in_run(&p, dir.data, "optimizer.safetensors")) == 0);
    ASSERT_EQ(pile_checkpoint_verify(dir.data, &err), PILE_ETRUNC);
    ASSERT(strstr(err.msg, "'optimizer.safetensors', listed in its checksums.json, is missing"));
    /* a list naming a file outside the folder is not followed */
    static const char bad[] = "{\"format\": \"pile-checkpoint-checksums\", \"files\": [{\"path\": \"../x\", "
                              "\"bytes\": 1, \"xxh3_128\": \"00000000000000000000000000000000\"}]}";
    ASSERT_OK(pile_fs_write_atomic(in_run(&p, dir.data, "checksums.json"), bad, sizeof bad - 1, &err), EP);
    ASSERT_EQ(pile_checkpoint_verify(dir.data, &err), PILE_EFORMAT);
    ASSERT(unlink(p.data) == 0);
    ASSERT_EQ(pile_checkpoint_verify(dir.data, &err), PILE_ENOENT);
    ASSERT(strstr(err.msg, "no checksums.json"));

    /* a weights-only copy (best_model's contents) verifies and loads */
    ASSERT_OK(save_at(run.data, "step-0000008", &a, 8, &err), EP);
    pile_buf src = {0}, dst = {0};
    in_run(&src, run.data, "step-0000008");
    in_run(&dst, run.data, "best_model");
    ASSERT_OK(pile_checkpoint_copy(src.data, dst.data, 1, &err), EP);
    ASSERT_OK(pile_checkpoint_verify(dst.data, &err), EP);
    ASSERT(!exists(in_run(&p, dst.data, "optimizer.safetensors")));
    ASSERT(same_file(in_run(&p, dst.data, "model.safetensors"), in_run(&text, src.data, "model.safetensors")));
    pile_train_state got;
    ASSERT_OK(pile_checkpoint_load(dst.data, a.m, NULL, &got, &err), EP);
    ASSERT_EQ(got.step, 8);
    /* a damaged source is not copied */
    ASSERT(flip_byte(in_run(&p, src.data, "config.json"), 10) == 0);
    ASSERT_EQ(pile_checkpoint_copy(src.data, dst.data, 1, &err), PILE_ECORRUPT);
    ASSERT(strstr(err.msg, "config.json"));

    /* the free-space check's figure: at least what a save takes, within 20% */
    uint64_t total = 0, size;
    static const char *const files[] = {"model.safetensors", "optimizer.safetensors", "config.json",
                                        "trainer_state.json", "checksums.json", "tokenizer/tokenizer_spec.txt"};
    for (int i = 0; i < 6; i++)
        if (pile_fs_size(in_run(&p, dir.data, files[i]), &size, &err) == 0) total += size;
    ASSERT_OK(save_at(run.data, "step-0000012", &a, 12, &err), EP);
    total = 0;
    in_run(&dir, run.data, "step-0000012");
    for (int i = 0; i < 6; i++) {
        ASSERT_OK(pile_fs_size(in_run(&p, dir.data, files[i]), &size, &err), EP);
        total += size;
    }
    uint64_t est = pile_checkpoint_size_estimate(a.m, 1, 0);
    printf("# checkpoint of %llu bytes, estimated %llu\n", (unsigned long long)total, (unsigned long long)est);
    ASSERT(est >= total && est <= total + total / 5 + 65536);
    fixture_free(&a);
    pile_buf_free(&run);
    pile_buf_free(&dir);
    pile_buf_free(&p);
    pile_buf_free(&text);
    pile_buf_free(&keep);
    pile_buf_free(&src);
    pile_buf_free(&dst);
}

/* What a before_seal callback (pile_checkpoint_save_ranks' other ranks)
 * sees and adds: the folder being written, the old one still whole. */
typedef struct seal_check {
    const char *dir;
    int fail; /* return PILE_EIO instead of adding the file */
    int called, old_whole, have_weights, have_checksums;
} seal_check;

static int other_rank_writes(void *ctx, const char *tmp, pile_err *err)
{
    seal_check *c = ctx;
    pile_buf p = {0};
    pile_err e;
    c->called = 1;
    c->old_whole = pile_checkpoint_verify(c->dir, &e) == 0;
    c->have_weights = exists(in_run(&p, tmp, "model.safetensors"));
    c->have_checksums = exists(in_run(&p, tmp, "checksums.json"));
    int rc = c->fail ? pile_err_set(err, PILE_EIO, "rank 1 could not write its optimizer shard")
             : write_bytes(in_run(&p, tmp, "optimizer-rank1.safetensors"), "shard", 5) ? PILE_EIO
                                                                                         : 0;
    pile_buf_free(&p);
    return rc;
}

static void test_before_seal(void)
{
    TEST("checkpoint: another rank's files join <dir>.tmp before the seal; checksums cover them; a failed rank "
         "leaves the old folder");
    pile_err err = {0};
    pile_buf run = {0}, dir = {0}, tmp = {0}, p = {0}, text = {0};
    fixture a;
    ASSERT_OK(fixture_make(&a, 32, 7, &err), EP);
    if (!a.m) return;
    tpath(&run, "seal");
    ASSERT_OK(save_at(run.data, "step-0000002", &a, 2, &err), EP);
    pile_fs_join(&dir, run.data, "step-0000002");
    pile_buf_printf(&tmp, "%s.tmp", dir.data);
    pile_train_state st = sample_state(2);
    /* a rank that fails: the save fails with its error, nothing new stays */
    seal_check c = {dir.data, 1, 0, 0, 0, 0};
    pile_checkpoint_save_opts o = {.before_seal = other_rank_writes, .before_seal_ctx = &c};
    ASSERT_EQ(pile_checkpoint_save_ex(dir.data, a.m, a.o, &st, config_json, &o, &err), PILE_EIO);
    ASSERT(strstr(err.msg, "rank 1 could not write") != NULL);
    ASSERT(c.called && c.old_whole && c.have_weights && !c.have_checksums);
    ASSERT(!exists(tmp.data));
    ASSERT_OK(pile_checkpoint_verify(dir.data, &err), EP);
    ASSERT(!exists(in_run(&p, dir.data, "optimizer-rank1.safetensors")));
    /* a rank that writes its file: sealed and renamed with it */
    c = (seal_check){dir.data, 0, 0, 0, 0, 0};
    ASSERT_OK(pile_checkpoint_save_ex(dir.data, a.m, a.o, &st, config_json, &o, &err), EP);
    /* the old folder stays whole until the seal; the new one is not sealed yet */
    ASSERT(c.called && c.old_whole && c.have_weights && !c.have_checksums);
    ASSERT(!exists(tmp.data));
    ASSERT_OK(pile_checkpoint_verify(dir.data, &err), EP);
    ASSERT_OK(pile_fs_read_file(in_run(&p, dir.data, "checksums.json"), &text, &err), EP);
    ASSERT(has_text(&text, "\"optimizer-rank1.safetensors\"") && has_text(&text, "\"model.safetensors\""));
    /* the other rank's file is held to its checksum like rank 0's */
    ASSERT(write_bytes(in_run(&p, dir.data, "optimizer-rank1.safetensors"), "shaRd", 5) == 0);
    ASSERT_EQ(pile_checkpoint_verify(dir.data, &err), PILE_ECORRUPT);
    ASSERT(strstr(err.msg, "optimizer-rank1.safetensors"));
    fixture_free(&a);
    pile_buf_free(&run);
    pile_buf_free(&dir);
    pile_buf_free(&tmp);
    pile_buf_free(&p);
    pile_buf_free(&text);
}

static void test_resumable(void)
{
    TEST("checkpoint: --resume's folder: the newest that passes; each one passed over named, and why");
    pile_err err = {0};
    pile_buf run = {0}, out = {0}, notes = {0}, p = {0}, q = {0};
    fixture a;
    ASSERT_OK(fixture_make(&a, 32, 41, &err), EP);
    if (!a.m) return;
    tpath(&run, "resumable");
    ASSERT_EQ(pile_checkpoint_find_resumable(run.data, &out, &notes, &err), PILE_ENOENT);
    for (int s = 4; s <= 12; s += 4) {
        char name[32];
        snprintf(name, sizeof name, "step-%07d", s);
        ASSERT_OK(save_at(run.data, name, &a, s, &err), EP);
    }
    ASSERT_OK(pile_checkpoint_set_latest(run.data, "step-0000012", &err), EP);
    ASSERT_OK(pile_checkpoint_find_resumable(run.data, &out, &notes, &err), EP);
    ASSERT_STR_EQ(out.data, in_run(&p, run.data, "step-0000012"));
    ASSERT_EQ(notes.len, 0);

    /* the newest damaged: the one before, both named */
    ASSERT(flip_byte(in_run(&p, run.data, "step-0000012/model.safetensors"), 64) == 0);
    out.len = notes.len = 0;
    ASSERT_OK(pile_checkpoint_find_resumable(run.data, &out, &notes, &err), EP);
    ASSERT_STR_EQ(out.data, in_run(&p, run.data, "step-0000008"));
    ASSERT(has_text(&notes, "step-0000012' is damaged: 'model.safetensors'") &&
           has_text(&notes, "resuming from '") && has_text(&notes, "step-0000008' (step 8)"));
    ASSERT(flip_byte(in_run(&p, run.data, "step-0000008/optimizer.safetensors"), 64) == 0);
    out.len = notes.len = 0;
    ASSERT_OK(pile_checkpoint_find_resumable(run.data, &out, &notes, &err), EP);
    ASSERT_STR_EQ(out.data, in_run(&p, run.data, "step-0000004"));
    ASSERT(has_text(&notes, "'optimizer.safetensors'"));
    /* none passes: refused with the newest's failure */
    ASSERT(flip_byte(in_run(&p, run.data, "step-0000004/model.safetensors"), 64) == 0);
    out.len = notes.len = 0;
    ASSERT_EQ(pile_checkpoint_find_resumable(run.data, &out, &notes, &err), PILE_ECORRUPT);
    ASSERT(strstr(err.msg, "step-0000012' is damaged: 'model.safetensors'") &&
           strstr(err.msg, "no older checkpoint"));

    /* "latest" naming a folder that is gone; a newer folder without
     * trainer_state.json; a folder of an older version (no checksums.json) */
    tpath(&run, "resumable2");
    ASSERT_OK(save_at(run.data, "step-0000004", &a, 4, &err), EP);
    ASSERT_OK(save_at(run.data, "step-0000008", &a, 8, &err), EP);
    ASSERT_OK(save_at(run.data, "epoch-002", &a, 10, &err), EP);
    ASSERT(unlink(in_run(&p, run.data, "epoch-002/trainer_state.json")) == 0);
    ASSERT(unlink(in_run(&p, run.data, "step-0000008/checksums.json")) == 0);
    ASSERT_OK(pile_checkpoint_set_latest(run.data, "step-0000012", &err), EP);
    out.len = notes.len = 0;
    ASSERT_OK(pile_checkpoint_find_resumable(run.data, &out, &notes, &err), EP);
    ASSERT_STR_EQ(out.data, in_run(&p, run.data, "step-0000008"));
    ASSERT(has_text(&notes, "latest' names 'step-0000012', which does not exist"));
    ASSERT(has_text(&notes, "epoch-002' has no readable trainer_state.json"));
    ASSERT(has_text(&notes, "step-0000008' has no checksums.json"));

    /* after a rollback "latest" names an older step than a folder of the
     * discarded run: when it fails, only older steps are taken */
    tpath(&run, "resumable3");
    for (int s = 4; s <= 12; s += 4) {
        char name[32];
        snprintf(name, sizeof name, "step-%07d", s);
        ASSERT_OK(save_at(run.data, name, &a, s, &err), EP);
    }
    ASSERT_OK(pile_checkpoint_set_latest(run.data, "step-0000008", &err), EP);
    out.len = notes.len = 0;
    ASSERT_OK(pile_checkpoint_find_resumable(run.data, &out, &notes, &err), EP);
    ASSERT_STR_EQ(out.data, in_run(&p, run.data, "step-0000008"));
    ASSERT(flip_byte(in_run(&p, run.data, "step-0000008/trainer_state.json"), 5) == 0);
    out.len = notes.len = 0;
    ASSERT_OK(pile_checkpoint_find_resumable(run.data, &out, &notes, &err), EP);
    ASSERT_STR_EQ(out.data, in_run(&q, run.data, "step-0000004"));
    fixture_free(&a);
    pile_buf_free(&run);
    pile_buf_free(&out);
    pile_buf_free(&notes);
    pile_buf_free(&p);
    pile_buf_free(&q);
}

static int make_dir_with_file(const char *run, const char *name, pile_buf *p)
{
    pile_err err;
    if (pile_fs_mkdirs(in_run(p, run, name), &err) < 0) return -1;
    pile_buf f = {0};
    int rc = write_bytes(in_run(&f, p->data, "f"), "x", 1);
    pile_buf_free(&f);
    return rc;
}

static void test_clean_and_prune(void)
{
    TEST("checkpoint: a killed run's .tmp and .old cleared, others' files kept; save_total_limit keeps the newest");
    pile_err err = {0};
    pile_buf run = {0}, p = {0}, notes = {0};
    tpath(&run, "clean");
    static const char *const dirs[] = {"step-0000003.tmp", "best_model.tmp", "step-0000002.old", "step-0000001",
                                       "step-0000001.old", "notes.tmp", "photo.old", "step-x.tmp"};
    for (int i = 0; i < 8; i++) ASSERT(make_dir_with_file(run.data, dirs[i], &p) == 0);
    ASSERT(write_bytes(in_run(&p, run.data, "latest.tmp"), "step-0000003\n", 13) == 0);
    ASSERT(write_bytes(in_run(&p, run.data, "thesis.tmp"), "draft", 5) == 0);
    ASSERT_OK(pile_checkpoint_clean(run.data, &notes, &err), EP);
    static const char *const gone[] = {"step-0000003.tmp", "best_model.tmp", "step-0000002.old", "step-0000001.old",
                                       "latest.tmp"};
    for (int i = 0; i < 5; i++) {
        ASSERT(!exists(in_run(&p, run.data, gone[i])));
        ASSERT(has_text(&notes, gone[i]));
    }
    static const char *const kept[] = {"step-0000002/f", "step-0000001/f", "notes.tmp/f", "photo.old/f",
                                       "step-x.tmp/f", "thesis.tmp"};
    for (int i = 0; i < 6; i++) ASSERT(exists(in_run(&p, run.data, kept[i])));
    ASSERT(has_text(&notes, "restored"));
    ASSERT(!has_text(&notes, "thesis") && !has_text(&notes, "photo") && !has_text(&notes, "step-x"));

    tpath(&run, "prune");
    static const char *const folders[] = {"step-0000001", "step-0000002", "step-0000003", "step-0000004",
                                          "step-0000005", "epoch-001", "best_model", "step-0000009"};
    for (int i = 0; i < 8; i++) ASSERT(make_dir_with_file(run.data, folders[i], &p) == 0);
    notes.len = 0;
    ASSERT_OK(pile_checkpoint_prune(run.data, 2, 5, &notes, &err), EP);
    for (int i = 0; i < 8; i++) {
        int want = !(i < 3);
        ASSERT_EQ(exists(in_run(&p, run.data, folders[i])), want);
        ASSERT_EQ(has_text(&notes, folders[i]), !want);
    }
    ASSERT_EQ(count_entries_with(run.data, ".tmp"), 0);
    ASSERT_EQ(pile_checkpoint_prune(run.data, 0, 5, &notes, &err), PILE_EINVAL);
    pile_buf_free(&run);
    pile_buf_free(&p);
    pile_buf_free(&notes);
}

static void test_tokenizer_late(void)
{
    TEST("checkpoint: tokenizer files read at start survive their source; a salvage save without them resumes");
    pile_err err = {0};
    pile_buf run = {0}, src = {0}, dir = {0}, p = {0}, spec = {0}, js = {0};
    fixture a, b;
    ASSERT_OK(fixture_make(&a, 32, 51, &err), EP);
    ASSERT_OK(fixture_make(&b, 32, 52, &err), EP);
    if (!a.m || !b.m) {
        fixture_free(&a);
        fixture_free(&b);
        return;
    }
    tpath(&run, "late");
    ASSERT_OK(pile_fs_mkdirs(run.data, &err), EP);
    /* a real tokenizer.json (the byte tokenizer's, as exported), since a
     * save also writes the Hugging Face files from the carried copy */
    pile_buf tokj = {0};
    pile_tokenizer *bytes_tok = NULL;
    ASSERT_OK(pile_tokenizer_open(&bytes_tok, "bytes", &err), EP);
    ASSERT_OK(pile_tokenizer_write_hf_json(bytes_tok, &tokj, &err), EP);
    pile_tokenizer_close(bytes_tok);
    const char *tok_text = tokj.data;
    const size_t tok_len = tokj.len;
    ASSERT(write_bytes(in_run(&src, run.data, "tok.json"), tok_text, tok_len) == 0);
    pile_train_state st = sample_state(6);
    snprintf(st.tokenizer_spec, sizeof st.tokenizer_spec, "%s", src.data);
    st.best_step = 5;
    st.pending_val = 1;
    pile_checkpoint_tokenizer *tok = NULL;
    ASSERT_OK(pile_checkpoint_tokenizer_read(&tok, src.data, &err), EP);
    ASSERT_EQ(pile_checkpoint_tokenizer_bytes(tok), tok_len);
    ASSERT(unlink(src.data) == 0);

    /* read before the source went: the checkpoint carries it whole */
    pile_checkpoint_save_opts o = {.tokenizer = tok, .data_json = "{\"fingerprint\": \"ab\", \"shards\": []}"};
    ASSERT_OK(pile_checkpoint_save_ex(in_run(&dir, run.data, "step-0000006"), a.m, a.o, &st, config_json, &o, &err), EP);
    pile_buf got = {0};
    ASSERT_OK(pile_fs_read_file(in_run(&p, dir.data, "tokenizer/tok.json"), &got, &err), EP);
    ASSERT(got.len == tok_len && got.data && memcmp(got.data, tok_text, got.len) == 0);
    pile_buf_free(&got);
    ASSERT_OK(pile_checkpoint_read_state_json(dir.data, "data", &js, &err), EP);
    ASSERT(js.data && strstr(js.data, "\"fingerprint\": \"ab\""));
    js.len = 0;
    ASSERT_EQ(pile_checkpoint_read_state_json(dir.data, "nothing", &js, &err), PILE_ENOENT);
    pile_train_state back;
    ASSERT_OK(pile_checkpoint_read_state(dir.data, &back, &err), EP);
    ASSERT(back.best_step == 5 && back.pending_val == 1);

    /* read at save time, after the source went: the whole save fails, as before */
    ASSERT_EQ(pile_checkpoint_save(in_run(&dir, run.data, "step-0000007"), b.m, b.o, &st, config_json, &err),
              PILE_ENOENT);
    ASSERT(!exists(dir.data) && strstr(err.msg, "tok.json"));
    /* the salvage: everything but the tokenizer's files, which resumes */
    pile_checkpoint_save_opts salvage = {.without_tokenizer = 1};
    st.step = 7;
    ASSERT_OK(pile_checkpoint_save_ex(dir.data, b.m, b.o, &st, config_json, &salvage, &err), EP);
    ASSERT_OK(pile_checkpoint_verify(dir.data, &err), EP);
    ASSERT(exists(in_run(&p, dir.data, "tokenizer/tokenizer_spec.txt")));
    ASSERT(!exists(in_run(&p, dir.data, "tokenizer/tok.json")));
    ASSERT_OK(pile_checkpoint_tokenizer_spec(dir.data, &spec, &err), EP);
    ASSERT_STR_EQ(spec.data, src.data);
    ASSERT_OK(pile_checkpoint_load(dir.data, a.m, a.o, &back, &err), EP);
    ASSERT_EQ(back.step, 7);
    ASSERT(same_buffers(&a, &b, pile_model_params(a.m), pile_model_params(b.m)));
    ASSERT(same_buffers(&a, &b, pile_optim_m(a.o), pile_optim_m(b.o)));
    /* a state written before best_step and pending_validation existed */
    ASSERT_OK(load_state_with(dir.data, a.m, "\"total_steps\": 9,", &back, &err), EP);
    ASSERT(back.best_step == -1 && back.pending_val == 0);
    pile_checkpoint_tokenizer_free(tok);
    fixture_free(&a);
    fixture_free(&b);
    pile_buf_free(&run);
    pile_buf_free(&src);
    pile_buf_free(&dir);
    pile_buf_free(&p);
    pile_buf_free(&spec);
    pile_buf_free(&js);
    pile_buf_free(&tokj);
}

/* Files for tests/reference/check_io.py: a safetensors file of every rank,
 * a checkpoint folder and a run folder of events, plus expected.json with
 * the values written. */
static int write_fixture(const char *out)
{
    pile_err err = {0};
    pile_buf p = {0}, exp = {0};
    int rc = pile_fs_mkdirs(out, &err);
    float scalar = -2.5f, vec[3] = {1.0f, 0.1f, -1e-30f}, mat[6];
    for (int i = 0; i < 6; i++) mat[i] = (float)i / 3.0f;
    pile_st_tensor t[3] = {{.name = "scalar", .ndim = 0, .data = &scalar},
                           {.name = "vec", .ndim = 1, .shape = {3}, .data = vec},
                           {.name = "mat", .ndim = 2, .shape = {2, 3}, .data = mat}};
    const char *meta[] = {"format", "pt", "note", "pile test", NULL};
    if (!rc) rc = pile_fs_join(&p, out, "tensors.safetensors");
    if (!rc) rc = pile_st_write(p.data, t, 3, meta, &err);

    fixture a;
    if (!rc) rc = fixture_make(&a, 32, 21, &err);
    if (!rc) {
        pile_train_state st = sample_state(7);
        pile_fs_join(&p, out, "checkpoint");
        rc = pile_checkpoint_save(p.data, a.m, a.o, &st, config_json, &err);
        fixture_free(&a);
    }
    pile_metrics *m = NULL;
    if (!rc) pile_fs_join(&p, out, "run");
    if (!rc) rc = pile_metrics_open(&m, p.data, -1, &err);
    const char *tags[] = {"train/loss", "train/lr", "val/loss"};
    pile_buf_append_str(&exp, "{\"events\": [");
    for (int s = 1; !rc && s <= 5; s++) {
        double v[3] = {2.0 / (s + 0.5), 6e-4 * s / 5.0, s % 2 ? 1.0 / 3.0 : 1e30};
        rc = pile_metrics_write(m, s * 10, tags, v, s == 5 ? 3 : 2, &err);
        pile_buf_printf(&exp, "%s{\"step\": %d, \"values\": {", s > 1 ? ", " : "", s * 10);
        for (int k = 0; k < (s == 5 ? 3 : 2); k++) pile_buf_printf(&exp, "%s\"%s\": %.17g", k ? ", " : "", tags[k], v[k]);
        pile_buf_append_str(&exp, "}}");
    }
    pile_buf_append_str(&exp, "]}\n");
    pile_metrics_close(m);
    if (!rc) pile_fs_join(&p, out, "expected.json");
    if (!rc) rc = pile_fs_write_atomic(p.data, exp.data, exp.len, &err);
    if (rc) fprintf(stderr, "test_trainer_io: %s\n", err.msg);
    pile_buf_free(&p);
    pile_buf_free(&exp);
    return rc ? 1 : 0;
}

/* For bench/checkpoint.sh: pile_checkpoint_verify of a folder, timed. */
static int time_verify(const char *dir)
{
    pile_err err = {0};
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    int rc = pile_checkpoint_verify(dir, &err);
    clock_gettime(CLOCK_MONOTONIC, &b);
    if (rc < 0) fprintf(stderr, "test_trainer_io: %s\n", err.msg);
    else printf("%.4f\n", (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec));
    return rc < 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write-fixture") == 0) return write_fixture(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--time-verify") == 0) return time_verify(argv[2]);
    if (!pile_test_tmpdir(tmp_root, sizeof tmp_root, "trainer-io")) {
        printf("Bail out! cannot create a temporary folder\n");
        return 1;
    }
    test_crc32c();
    test_st_roundtrip();
    test_st_corrupt();
    test_checkpoint_roundtrip();
    test_checkpoint_mismatch();
    test_atomic_and_latest();
    test_tokenizer_carry();
    test_metrics();
    test_st_hostile();
    test_hf_folder();
    test_state_and_latest();
    test_checksums();
    test_before_seal();
    test_resumable();
    test_clean_and_prune();
    test_tokenizer_late();
    int rc = TEST_DONE();
    if (rc == 0) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
        if (system(cmd) != 0) printf("# could not remove %s\n", tmp_root);
    }
    return rc;
}
