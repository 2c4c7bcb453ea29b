/* libFuzzer target for the JSON-lines parser and the JSON tree, checked
 * against the independent strict validator in json_internal.h (differential,
 * so a wrong verdict is a finding, not only a crash).
 *
 * Run: tools/fuzz.sh (seeds: the lines of corpus/tricky.jsonl and
 * corpus/bad.jsonl in tests/fuzz/corpus/fuzz_jsonl, from
 * tests/fuzz/make_corpus.py).
 * Each input is one line (the fuzzer may put '\n' in it: the parser sees it
 * as JSON whitespace, as it would if a caller handed it such a line). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json_internal.h"
#include "pile_buf.h"
#include "pile_json.h"
#include "pile_lines.h"
#include "pile_utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static pile_jsonl_parser *jp;
    if (!jp) jp = pile_jsonl_parser_create();
    if (!jp) abort();

    char *line = malloc(size + PILE_LINES_PADDING);
    if (!line) return 0;
    memcpy(line, data, size);
    memset(line + size, 0, PILE_LINES_PADDING);
    pile_jsonl_doc doc;
    char detail[128];
    int rc = pile_jsonl_parse(jp, line, size, &doc, detail, sizeof detail);
    if (rc < 0) abort(); /* only PILE_ENOMEM is allowed, and inputs are small */

    /* the oracle: valid JSON after the documented UTF-8 repair, lone surrogates allowed */
    pile_buf rep = {0};
    if (pile_utf8_repair((const char *)data, size, &rep) < 0) abort();
    size_t off;
    const char *why;
    int valid = pile__json_validate(rep.data ? rep.data : "", rep.len, 1, &off, &why);
    int parsed = rc != PILE_SKIP_BAD_JSON && rc != PILE_SKIP_BLANK;
    if (parsed != valid) abort();
    if (rc == PILE_SKIP_NONE) {
        if (!pile_utf8_valid(doc.text, doc.text_len)) abort();
        if (doc.subset && !pile_utf8_valid(doc.subset, doc.subset_len)) abort();
    }
    pile_buf_free(&rep);
    free(line);

    /* the tree is strict: it must accept exactly what the validator accepts */
    pile_json *root = NULL;
    pile_err err;
    int strict = pile_utf8_valid((const char *)data, size) &&
                 pile__json_validate((const char *)data, size, 0, &off, &why);
    int trc = pile_json_parse((const char *)data, size, "fuzz", &root, &err);
    if ((trc == 0) != strict) abort();
    if (root) {
        /* walk it: every string is valid UTF-8 */
        const pile_json *stack[64];
        size_t sp = 0;
        stack[sp++] = root;
        while (sp) {
            const pile_json *v = stack[--sp];
            size_t n;
            const char *s = pile_json_str(v, &n);
            if (s && !pile_utf8_valid(s, n)) abort();
            for (size_t i = 0; i < pile_json_size(v); i++) {
                const char *k = pile_json_key_at(v, i, &n);
                if (k && !pile_utf8_valid(k, n)) abort();
                if (sp < 64) stack[sp++] = pile_json_at(v, i);
            }
        }
        pile_json_free(root);
    }
    return 0;
}
