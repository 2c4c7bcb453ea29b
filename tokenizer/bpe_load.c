/* tiktoken rank files (base64 token bytes, space, rank per line) turned into
 * builder calls; the pattern and specials come from the encoding's name, as
 * in tiktoken_ext/openai_public.py. The JSON formats are in bpe_load_json.c. */
#include "bpe_internal.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "pile_fs.h"

/* ----------------------------------------------------------- tiktoken */

static const char cl100k_pattern[] = "'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}++|\\p{N}{1,3}+| "
                                     "?[^\\s\\p{L}\\p{N}]++[\\r\\n]*+|\\s++$|\\s*[\\r\\n]|\\s+(?!\\S)|\\s";
static const char o200k_pattern[] =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'"
    "d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|"
    "'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

typedef struct tk_special {
    const char *text;
    uint32_t id;
} tk_special;

/* tiktoken_ext/openai_public.py: the pattern and special tokens of each encoding. */
static const struct tk_encoding {
    const char *name;
    const char *pattern; /* NULL: GPT-2's */
    tk_special specials[6];
} tk_encodings[] = {
    {"r50k_base", NULL, {{"<|endoftext|>", 50256}}},
    {"p50k_base", NULL, {{"<|endoftext|>", 50256}}},
    {"cl100k_base",
     cl100k_pattern,
     {{"<|endoftext|>", 100257},
      {"<|fim_prefix|>", 100258},
      {"<|fim_middle|>", 100259},
      {"<|fim_suffix|>", 100260},
      {"<|endofprompt|>", 100276}}},
    {"o200k_base", o200k_pattern, {{"<|endoftext|>", 199999}, {"<|endofprompt|>", 200018}}},
};

static int b64_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Standard base64 with padding; -1 if malformed. */
static int b64_decode(const char *s, size_t n, pile_buf *out)
{
    out->len = 0;
    if (n % 4) return -1;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)s[i + k];
            if (c == '=' && i + 4 == n && k >= 2) {
                v[k] = 0;
                pad++;
            } else {
                if (pad || (v[k] = b64_val(c)) < 0) return -1;
            }
        }
        unsigned x = (unsigned)v[0] << 18 | (unsigned)v[1] << 12 | (unsigned)v[2] << 6 | (unsigned)v[3];
        char bytes[3] = {(char)(x >> 16), (char)(x >> 8), (char)x};
        if (pile_buf_append(out, bytes, 3 - (size_t)pad)) return PILE_ENOMEM;
    }
    return 0;
}

int pile__bpe_load_tiktoken(pile__bpe **out, const char *path, pile_err *err)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const struct tk_encoding *enc = NULL;
    for (size_t i = 0; i < sizeof tk_encodings / sizeof *tk_encodings; i++) {
        size_t k = strlen(tk_encodings[i].name);
        if (strncmp(base, tk_encodings[i].name, k) == 0 && !isalnum((unsigned char)base[k])) enc = &tk_encodings[i];
    }
    if (!enc)
        return pile_err_set(err, PILE_EINVAL,
                            "cannot open tokenizer '%s': unknown tiktoken encoding (the file name must begin with "
                            "r50k_base, p50k_base, cl100k_base or o200k_base, which decides its pattern)",
                            path);
    pile_buf data = {0}, tokb = {0};
    pile__bpe *b = NULL;
    int rc = pile_fs_read_file(path, &data, err);
    if (rc == 0) rc = pile__bpe_create(&b, PILE__BPE_RANKS, err);
    size_t lineno = 0;
    for (size_t i = 0; rc == 0 && i < data.len; lineno++) {
        const char *line = data.data + i;
        const char *nl = memchr(line, '\n', data.len - i);
        size_t n = nl ? (size_t)(nl - line) : data.len - i;
        i += n + 1;
        if (n && line[n - 1] == '\r') n--;
        if (n == 0) continue;
        const char *sp = memchr(line, ' ', n);
        char *end = NULL;
        unsigned long rank = 0;
        if (sp) {
            char num[16] = {0};
            size_t k = n - (size_t)(sp + 1 - line);
            if (k > 0 && k < sizeof num) {
                memcpy(num, sp + 1, k);
                rank = strtoul(num, &end, 10);
                if (*end || !isdigit((unsigned char)num[0])) end = NULL;
            }
        }
        int bad = !sp || !end || rank >= UINT32_MAX - 1;
        if (!bad) {
            int b64 = b64_decode(line, (size_t)(sp - line), &tokb);
            if (b64 == PILE_ENOMEM) rc = pile_err_set(err, PILE_ENOMEM, "out of memory");
            bad = b64 < 0 || tokb.len == 0;
        }
        if (rc) break;
        if (bad) {
            rc = pile_err_set(err, PILE_EFORMAT,
                              "invalid tiktoken file '%s': line %zu is not '<base64 token> <rank>'", path, lineno + 1);
            break;
        }
        rc = pile__bpe_add_token(b, (uint32_t)rank, tokb.data, tokb.len, PILE__TOK_MODEL, path, err);
    }
    for (size_t i = 0; rc == 0 && i < 6 && enc->specials[i].text; i++)
        rc = pile__bpe_add_special(b, enc->specials[i].text, strlen(enc->specials[i].text), enc->specials[i].id, path,
                                   err);
    if (rc == 0)
        rc = pile__bpe_add_stage(b, enc->pattern ? PILE__SPLIT_REGEX : PILE__SPLIT_GPT2, enc->pattern,
                                 enc->pattern ? strlen(enc->pattern) : 0, PILE__BEH_ISOLATED, 0, 0, path, err);
    if (rc == 0) rc = pile__bpe_finish(b, path, err);
    pile_buf_free(&data);
    pile_buf_free(&tokb);
    if (rc) {
        pile__bpe_destroy(b);
        return rc;
    }
    *out = b;
    return 0;
}

