/* libFuzzer target for the tokenizer file loaders (tokenizer.json,
 * *.tiktoken, GPT-2's encoder.json + vocab.bpe): the input becomes the
 * file(s), pile_tokenizer_open must refuse it with a format error or a limit
 * or accept it, and an accepted tokenizer must encode fixed texts to ids that
 * decode back to the same bytes (byte-level BPE is lossless; the texts are
 * NFC so an NFC normaliser leaves them alone), but for what the file itself
 * asks to change (see lossy_of); pile_tokenizer_write_hf_json then writes it
 * or refuses with PILE_EINVAL and a message.
 *
 * The first input byte picks the layout (the rest is the content):
 *   0  x.json (Hugging Face tokenizer.json)
 *   1  <encoding>.tiktoken, the encoding (r50k_base, p50k_base, cl100k_base,
 *      o200k_base: it decides the pattern) from the byte's bits 2-3
 *   2  a folder with encoder.json and vocab.bpe, split at the first NUL byte
 *
 * Run: tools/fuzz.sh (seeds in tests/fuzz/corpus/fuzz_tokfile: small real
 * tokenizers cut from the GPT-2 fixture, made by tests/fuzz/make_corpus.py).
 * The files live in a temporary folder (fuzz_tmp.h). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_tmp.h"
#include "pile_buf.h"
#include "pile_json.h"
#include "pile_tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const texts[] = {
    "Hello, world! It's 2024 and we're testing   spaces\tand\nnewlines.",
    "caf\xC3\xA9 na\xC3\xAFve \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\x98\x80 <|endoftext|> done",
    "  \r\n\r\n x",
    "",
};

static void put_file(const char *path, const uint8_t *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (n && fwrite(p, 1, n, f) != n) abort();
    if (fclose(f) != 0) abort();
}

/* What a tokenizer.json asks the round trip to change. Hugging Face's
 * ByteLevel with add_prefix_space (on when the key is absent, in our loader)
 * puts a space before each piece that does not start with one, and decodes
 * it back as a space: tokenizers 0.23 decodes "Hello" to " Hello", and
 * "a,b" to " a , b" after a Split on ",", as we do. A Split with behavior
 * Removed drops what it matches. Read from the file with the same JSON
 * parser, but without the loader's rules: a ByteLevel or Split anywhere
 * under pre_tokenizer counts, so the check errs on the lenient side. */
typedef struct lossy {
    int prefix, removed;
} lossy;

static void scan_pretok(const pile_json *v, int depth, lossy *l)
{
    if (!v || depth > 200) return; /* past the loader's limit (32 Sequences, 64 JSON levels) */
    if (pile_json_type_of(v) == PILE_JSON_OBJECT) {
        size_t n;
        const pile_json *t = pile_json_get(v, "type"), *b = pile_json_get(v, "behavior");
        const char *type = t ? pile_json_str(t, &n) : NULL, *beh = b ? pile_json_str(b, &n) : NULL;
        if (type && strcmp(type, "ByteLevel") == 0) {
            const pile_json *p = pile_json_get(v, "add_prefix_space");
            if (!p || pile_json_type_of(p) != PILE_JSON_BOOL || pile_json_bool(p)) l->prefix = 1;
        }
        if (beh && strcmp(beh, "Removed") == 0) l->removed = 1;
    }
    for (size_t i = 0; i < pile_json_size(v); i++) scan_pretok(pile_json_at(v, i), depth + 1, l);
}

static lossy lossy_of(int kind, const char *spec)
{
    lossy l = {0, 0};
    if (kind != 0) return l; /* tiktoken and GPT-2 files have a fixed pattern and no prefix */
    pile_json *root;
    pile_err err;
    if (pile_json_parse_file(spec, &root, &err) != 0) abort(); /* the loader read it */
    scan_pretok(pile_json_get(root, "pre_tokenizer"), 0, &l);
    pile_json_free(root);
    return l;
}

/* Whether d is t with a space put before some pieces: each inserted space
 * is followed by the next byte of t, which is not a space (a piece that
 * starts with one gets none). So a space of d that matches t's next byte is
 * t's own, and one greedy pass decides. */
static int is_prefixed(const char *t, size_t tn, const char *d, size_t dn)
{
    size_t i = 0;
    for (size_t j = 0; j < dn; j++) {
        if (i < tn && d[j] == t[i]) i++;
        else if (!(d[j] == ' ' && i < tn && t[i] != ' ' && j + 1 < dn && d[j + 1] == t[i])) return 0;
    }
    return i == tn;
}

/* Whether d, its spaces dropped when skip_spaces, is a subsequence of t:
 * what is left when a Split removed bytes (and a prefix added spaces). */
static int is_subsequence(const char *t, size_t tn, const char *d, size_t dn, int skip_spaces)
{
    size_t i = 0;
    for (size_t j = 0; j < dn; j++) {
        if (skip_spaces && d[j] == ' ') continue;
        while (i < tn && t[i] != d[j]) i++;
        if (i == tn) return 0;
        i++;
    }
    return 1;
}

static void check_round_trip(const pile_tokenizer *tok, lossy l)
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
        const char *d = back.data ? back.data : "";
        int ok = l.removed  ? is_subsequence(texts[i], n, d, back.len, l.prefix)
                 : l.prefix ? is_prefixed(texts[i], n, d, back.len)
                            : back.len == n && memcmp(d, texts[i], n) == 0;
        if (!ok) {
            fprintf(stderr, "round trip of text %zu (prefix space %d, removing split %d) gave \"%.*s\"\n", i,
                    l.prefix, l.removed, (int)back.len, d);
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
    const char *dir = fuzz_tmp_dir("fuzz_tokfile");
    int kind = data[0] % 3;
    const char *enc_name = encodings[(data[0] >> 2) & 3];
    data++;
    size--;
    char spec[600], a[640], b[640];
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
        check_round_trip(tok, lossy_of(kind, spec));
        /* any accepted tokenizer writes as a tokenizer.json or says why not */
        pile_buf hf = {0};
        int wr = pile_tokenizer_write_hf_json(tok, &hf, &err);
        if (wr != 0 && (wr != PILE_EINVAL || !err.msg[0])) abort();
        pile_buf_free(&hf);
        pile_tokenizer_close(tok);
    } else {
        /* a format error, an unsupported feature or a limit (a token id
         * past 2^22, deep nesting) is a fair refusal of a small file; the
         * message must say something */
        if (rc != PILE_EFORMAT && rc != PILE_EINVAL && rc != PILE_ELIMIT) {
            fprintf(stderr, "open returned %d: %s\n", rc, err.msg);
            abort();
        }
        if (!err.msg[0]) abort();
    }
    return 0;
}
