/* libFuzzer target for the tokenizer file loaders (tokenizer.json,
 * *.tiktoken, GPT-2's encoder.json + vocab.bpe): the input becomes the
 * file(s), pile_tokenizer_open must refuse it with a format error or accept
 * it, and an accepted tokenizer must encode fixed texts to ids that decode
 * back to the same bytes (byte-level BPE is lossless; the texts are NFC so
 * an NFC normaliser leaves them alone).
 *
 * The first input byte picks the layout (the rest is the content):
 *   0  x.json (Hugging Face tokenizer.json)
 *   1  <encoding>.tiktoken, the encoding (r50k_base, p50k_base, cl100k_base,
 *      o200k_base: it decides the pattern) from the byte's bits 2-3
 *   2  a folder with encoder.json and vocab.bpe, split at the first NUL byte
 *
 * Build and run (clang only, Linux):
 *   CC=clang CXX=clang++ meson setup build-fuzz -Dfuzz=true \
 *       -Db_sanitize=address,undefined -Db_lundef=false
 *   ninja -C build-fuzz tests/fuzz/fuzz_tokfile
 * Seeds: small real tokenizers cut from the GPT-2 fixture (every loader
 * needs all 256 byte tokens, so a seed holds those and a few merges):
 *   mkdir -p corpus-tok && F=../shared/fixtures/gpt2
 *   { printf '\1'; head -n 400 $F/r50k_base.tiktoken; } > corpus-tok/tiktoken
 *   python3 -c 'import json,sys; e=json.load(open(sys.argv[1])); m=open(sys.argv[2]).read().split("\n")[1:200];
 *     v={k:i for k,i in e.items() if i<300}; m=[x for x in m if x and all(p in v for p in x.split())];
 *     m=[x for x in m if "".join(x.split()) in v] or m[:0];
 *     s=json.dumps({"model":{"type":"BPE","vocab":v,"merges":m},
 *       "pre_tokenizer":{"type":"ByteLevel","add_prefix_space":False,"use_regex":True},
 *       "added_tokens":[{"id":50256,"content":"<|endoftext|>","special":True}]});
 *     open("corpus-tok/json","wb").write(b"\0"+s.encode());
 *     open("corpus-tok/dir","wb").write(b"\2"+json.dumps(v).encode()+b"\0#version: 0.2\n"+"\n".join(m).encode())' \
 *     $F/encoder.json $F/vocab.bpe
 *   ./build-fuzz/tests/fuzz/fuzz_tokfile corpus-tok -max_len=16384 -max_total_time=300
 * The tokenizer sources are compiled into this target (see meson.build) so
 * that libFuzzer sees their coverage. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pile_buf.h"
#include "pile_tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const texts[] = {
    "Hello, world! It's 2024 and we're testing   spaces\tand\nnewlines.",
    "caf\xC3\xA9 na\xC3\xAFve \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\x98\x80 <|endoftext|> done",
    "  \r\n\r\n x",
    "",
};

static char dir[64];

static void put_file(const char *path, const uint8_t *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (n && fwrite(p, 1, n, f) != n) abort();
    if (fclose(f) != 0) abort();
}

static void check_round_trip(const pile_tokenizer *tok)
{
    pile_encoder *enc = pile_encoder_create(tok);
    if (!enc) abort();
    pile_ids ids = {0};
    pile_buf back = {0};
    pile_err err;
    uint32_t vocab = pile_tokenizer_vocab_size(tok);
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        size_t n = strlen(texts[i]);
        ids.len = 0;
        back.len = 0;
        if (pile_encoder_encode(enc, texts[i], n, &ids, &err) != 0) {
            fprintf(stderr, "encode failed: %s\n", err.msg);
            abort();
        }
        for (size_t k = 0; k < ids.len; k++)
            if (ids.data[k] >= vocab) abort();
        if (pile_tokenizer_decode(tok, ids.data, ids.len, &back, &err) != 0) {
            fprintf(stderr, "decode failed: %s\n", err.msg);
            abort();
        }
        if (back.len != n || (n && memcmp(back.data, texts[i], n) != 0)) {
            fprintf(stderr, "round trip of text %zu gave %zu bytes, not %zu\n", i, back.len, n);
            abort();
        }
    }
    pile_ids_free(&ids);
    pile_buf_free(&back);
    pile_encoder_free(enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const encodings[] = {"r50k_base", "p50k_base", "cl100k_base", "o200k_base"};
    if (size == 0) return 0;
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "%s", access("/dev/shm", W_OK) == 0 ? "/dev/shm/fuzz_tok.XXXXXX"
                                                                       : "/tmp/fuzz_tok.XXXXXX");
        if (!mkdtemp(dir)) abort();
    }
    int kind = data[0] % 3;
    const char *enc_name = encodings[(data[0] >> 2) & 3];
    data++;
    size--;
    char spec[128], a[160], b[160];
    if (kind == 0) {
        snprintf(spec, sizeof spec, "%s/x.json", dir);
        put_file(spec, data, size);
    } else if (kind == 1) {
        snprintf(spec, sizeof spec, "%s/%s.tiktoken", dir, enc_name);
        put_file(spec, data, size);
    } else {
        snprintf(spec, sizeof spec, "%s/gpt2", dir);
        mkdir(spec, 0755);
        const uint8_t *nul = memchr(data, 0, size);
        size_t n1 = nul ? (size_t)(nul - data) : size;
        snprintf(a, sizeof a, "%s/encoder.json", spec);
        snprintf(b, sizeof b, "%s/vocab.bpe", spec);
        put_file(a, data, n1);
        put_file(b, nul ? nul + 1 : data + size, nul ? size - n1 - 1 : 0);
    }

    pile_tokenizer *tok;
    pile_err err;
    int rc = pile_tokenizer_open(&tok, spec, &err);
    if (rc == 0) {
        if (pile_tokenizer_vocab_size(tok) == 0 || pile_tokenizer_eot_id(tok) >= pile_tokenizer_vocab_size(tok))
            abort();
        check_round_trip(tok);
        pile_tokenizer_close(tok);
    } else {
        /* only a format error, or an unsupported feature, is a fair refusal
         * of a small file; the message must say something */
        if (rc != PILE_EFORMAT && rc != PILE_EINVAL) {
            fprintf(stderr, "open returned %d: %s\n", rc, err.msg);
            abort();
        }
        if (!err.msg[0]) abort();
    }
    return 0;
}
