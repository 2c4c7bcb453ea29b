/* libFuzzer target for what a checkpoint folder handed to us is parsed
 * with: the safetensors reader (every tensor walked, the first and last
 * float of each read), loading a model.safetensors into a model, and the
 * config.json, trainer_state.json and "latest" readers. The first input
 * byte picks what the rest of the input becomes:
 *
 *   0  model.safetensors as is: open, walk, then load into a tiny model
 *      (the dimensions of test_trainer_io's fixture, so that its
 *      checkpoint is a seed that reaches the name and shape checks)
 *   1  the same file, but the 8-byte header length is computed by the
 *      target: the input is a 2-byte data length (LE), the JSON header,
 *      and the data is that many bytes of 0x3f; so that the fuzzer mutates
 *      the header without having to keep the length field in step
 *   2  config.json (pile_checkpoint_read_model_config)
 *   3  trainer_state.json (pile_checkpoint_read_config_json, the tokenizer
 *      spec, and a load with a state: reaches parse_state)
 *   4  <run>/latest (pile_checkpoint_find_latest over a run folder whose
 *      epoch-001 holds a valid trainer_state.json)
 *
 * Run: tools/fuzz.sh (seeds: the files test_trainer_io --write-fixture
 * writes, each prefixed with its mode byte, a mode-1 one with its header
 * only: in tests/fuzz/corpus/fuzz_safetensors from
 * tests/fuzz/make_corpus.py, and made afresh by the current writer at every
 * run). The files live in a temporary folder (fuzz_tmp.h). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "fuzz_tmp.h"
#include "pile_fs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *tmpdir;
static char path_buf[1024];
static pile_backend *be;
static pile_model *model;

static const char *in_tmp(const char *name)
{
    snprintf(path_buf, sizeof path_buf, "%s/%s", tmpdir, name);
    return path_buf;
}

static void put(const char *name, const void *a, size_t na, const void *b, size_t nb)
{
    FILE *f = fopen(in_tmp(name), "wb");
    if (!f) abort();
    if ((na && fwrite(a, 1, na, f) != na) || (nb && fwrite(b, 1, nb, f) != nb)) abort();
    if (fclose(f) != 0) abort();
}

static void setup(void)
{
    tmpdir = fuzz_tmp_dir("fuzz_safetensors");
    pile_err err;
    pile_model_config c = {.vocab_size = 300, .n_positions = 16, .n_layer = 2, .n_head = 2, .n_embd = 32,
                           .dropout = 0.1f};
    if (pile_backend_open(&be, "cpu", 1, &err) || pile_model_create(&model, be, &c, 1, 16, &err)) abort();
    /* epoch-001 of the "latest" mode: a real checkpoint folder's state */
    char sub[1024];
    snprintf(sub, sizeof sub, "%s/run/epoch-001", tmpdir);
    if (pile_fs_mkdirs(sub, &err)) abort();
    static const char state[] = "{\"step\": 5, \"epoch\": 0, \"position\": 1, \"total_steps\": 9, \"seed\": 1,"
                                " \"tokens_seen\": 3}";
    put("run/epoch-001/trainer_state.json", state, sizeof state - 1, NULL, 0);
}

/* Reads what each tensor claims to hold, so that ASan sees any pointer the
 * reader hands out past the mapping or the copy. */
static void walk(const pile_st_file *f)
{
    volatile float sink = 0;
    for (size_t i = 0; i < pile_st_count(f); i++) {
        const pile_st_tensor *t = pile_st_at(f, i);
        if (!t || !t->name) abort();
        if (pile_st_find(f, t->name) != t) abort(); /* names are unique */
        if (t->ndim < 0 || t->ndim > 4) abort();
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0) abort();
            numel *= (uint64_t)t->shape[d];
        }
        if (numel) {
            if (((uintptr_t)t->data % sizeof(float)) != 0) abort();
            sink += t->data[0];
            sink += t->data[numel - 1];
        }
    }
    (void)sink;
}

static void check_safetensors(void)
{
    pile_st_file *f = NULL;
    pile_err err = {0};
    if (pile_st_open(&f, in_tmp("model.safetensors"), &err) == 0) {
        walk(f);
        pile_st_close(f);
        pile_checkpoint_load(tmpdir, model, NULL, NULL, &err);
    } else if (!err.msg[0]) {
        abort(); /* every refusal says why */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!tmpdir) setup();
    if (size < 1) return 0;
    int mode = data[0] % 5;
    data++, size--;
    pile_err err;
    pile_buf out = {0};
    switch (mode) {
    case 0:
        put("model.safetensors", data, size, NULL, 0);
        check_safetensors();
        break;
    case 1: {
        if (size < 2) return 0;
        size_t dlen = (size_t)data[0] | (size_t)data[1] << 8;
        uint8_t *file = malloc(8 + size - 2 + dlen);
        if (!file) abort();
        uint64_t hlen = size - 2;
        for (int i = 0; i < 8; i++) file[i] = (uint8_t)(hlen >> (8 * i));
        memcpy(file + 8, data + 2, size - 2);
        memset(file + 8 + hlen, 0x3f, dlen);
        put("model.safetensors", file, 8 + hlen + dlen, NULL, 0);
        free(file);
        check_safetensors();
        break;
    }
    case 2: {
        pile_model_config c;
        put("config.json", data, size, NULL, 0);
        if (pile_checkpoint_read_model_config(tmpdir, &c, &err) == 0 &&
            (c.vocab_size < 1 || c.n_positions < 1 || c.n_layer < 1 || c.n_head < 1 || c.n_embd < 1 ||
             c.n_embd % c.n_head != 0))
            abort(); /* accepted a config the model would refuse */
        break;
    }
    case 3: {
        pile_train_state st;
        put("trainer_state.json", data, size, NULL, 0);
        unlink(in_tmp("model.safetensors")); /* the load stops after the state, whatever ran before */
        pile_checkpoint_read_config_json(tmpdir, &out, &err);
        out.len = 0;
        pile_checkpoint_tokenizer_spec(tmpdir, &out, &err);
        pile_checkpoint_load(tmpdir, model, NULL, &st, &err);
        break;
    }
    case 4:
        put("run/latest", data, size, NULL, 0);
        snprintf(path_buf, sizeof path_buf, "%s/run", tmpdir);
        if (pile_checkpoint_find_latest(path_buf, &out, &err) == 0 && !strstr(out.data, "/run/")) abort();
        break;
    }
    pile_buf_free(&out);
    return 0;
}
