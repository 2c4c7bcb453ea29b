/* libFuzzer target for BPE encoding: the input, repaired to UTF-8, is
 * encoded with GPT-2 loaded two ways (encoder.json + vocab.bpe with listed
 * merges, r50k_base.tiktoken with tiktoken's rank rule); both must give the
 * same ids and decode back to the text. Needs PILE_SHARED (default
 * ../shared) for the GPT-2 files.
 *
 * Run: tools/fuzz.sh (seeds: the texts of corpus/tricky.jsonl and heads
 * of sample texts in tests/fuzz/corpus/fuzz_tokenizer, from
 * tests/fuzz/make_corpus.py). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pile_tokenizer.h"
#include "pile_utf8.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static pile_tokenizer *folder, *tiktoken;
static pile_encoder *enc_folder, *enc_tiktoken;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    const char *shared = getenv("PILE_SHARED");
    char a[4096], b[4096];
    snprintf(a, sizeof a, "%s/fixtures/gpt2", shared && *shared ? shared : "../shared");
    snprintf(b, sizeof b, "%s/r50k_base.tiktoken", a);
    pile_err err;
    if (pile_tokenizer_open(&folder, a, &err) < 0 || pile_tokenizer_open(&tiktoken, b, &err) < 0) {
        fprintf(stderr, "fuzz_tokenizer: %s (set PILE_SHARED)\n", err.msg);
        abort();
    }
    enc_folder = pile_encoder_create(folder);
    enc_tiktoken = pile_encoder_create(tiktoken);
    if (!enc_folder || !enc_tiktoken) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pile_buf text = {0}, dec = {0};
    pile_ids x = {0}, y = {0};
    pile_err err;
    if (pile_utf8_repair((const char *)data, size, &text) < 0) abort();
    const char *t = text.data ? text.data : "";
    if (pile_encoder_encode(enc_folder, t, text.len, &x, &err) < 0) abort();
    if (pile_encoder_encode(enc_tiktoken, t, text.len, &y, &err) < 0) abort();
    if (x.len != y.len || (x.len && memcmp(x.data, y.data, x.len * sizeof *x.data) != 0)) abort();
    if (pile_tokenizer_decode(folder, x.data, x.len, &dec, &err) < 0) abort();
    if (dec.len != text.len || (dec.len && memcmp(dec.data, t, dec.len) != 0)) abort();
    pile_buf_free(&text);
    pile_buf_free(&dec);
    pile_ids_free(&x);
    pile_ids_free(&y);
    return 0;
}
