/* JSON for pile, behind a plain C interface over simdjson (the only C++ in
 * the project is json.cpp; no exception crosses into C).
 *
 * Two parts:
 *  - the JSON-lines fast path: one Pile line -> its `text` and
 *    `meta.pile_set_name` (or other members named by dotted paths), with the lenient repairs pile-prep promises
 *    (invalid UTF-8 and lone surrogate escapes become U+FFFD) and strict
 *    rejection of everything else;
 *  - a small owned tree for configuration-sized files (manifests,
 *    tokenizer.json, ds_config.json), plus a string escaper for writers. */
#ifndef PILE_JSON_H
#define PILE_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "pile_buf.h"
#include "pile_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- lines */

/* Why a line yields no document. The order is the order of the summary. */
typedef enum pile_skip {
    PILE_SKIP_NONE = 0,        /* the line yields a document */
    PILE_SKIP_BLANK,           /* empty or whitespace only */
    PILE_SKIP_BAD_JSON,        /* not valid JSON (syntax, bad escape, raw control char, trailing data) */
    PILE_SKIP_NOT_OBJECT,      /* valid JSON but not an object */
    PILE_SKIP_NO_TEXT,         /* object without a "text" member (or the text key set) */
    PILE_SKIP_TEXT_NOT_STRING, /* "text" (or the text key set) is not a string */
    PILE_SKIP_TOO_LONG,        /* set by the reader: over the line-length cap */
    PILE_SKIP_CUT,             /* set by the reader: partial line at a truncated stream's end */
    PILE_SKIP_COUNT
} pile_skip;

/* Short stable names ("bad_json", ...) for summaries and JSON output. */
const char *pile_skip_name(pile_skip reason);

/* Bit flags: what was repaired to get a document out of a line. */
#define PILE_REPAIR_UTF8 1u      /* invalid UTF-8 bytes replaced by U+FFFD */
#define PILE_REPAIR_SURROGATE 2u /* lone surrogate escapes replaced by U+FFFD */

typedef struct pile_jsonl_doc {
    const char *text;      /* valid UTF-8; lives until the next parse call on the same parser */
    size_t text_len;
    const char *subset;    /* meta.pile_set_name (or the subset key set), or NULL if absent / not a string */
    size_t subset_len;
    unsigned repairs;      /* PILE_REPAIR_* */
} pile_jsonl_doc;

typedef struct pile_jsonl_parser pile_jsonl_parser;

/* One parser per thread; reuse it for every line. NULL on OOM. */
pile_jsonl_parser *pile_jsonl_parser_create(void);
void pile_jsonl_parser_free(pile_jsonl_parser *p);

/* Where the text and the subset name are: dotted paths of member names
 * ("content", "meta.pile_set_name"; a name holding a '.' cannot be given),
 * each step taking the last member of that name. The defaults are "text"
 * and "meta.pile_set_name"; subset_key NULL or "" means no subset. Returns 0,
 * or PILE_EINVAL (an empty text key or an empty step, as in "a..b") and
 * PILE_ENOMEM with err filled; on failure the parser keeps its keys. */
int pile_jsonl_parser_set_keys(pile_jsonl_parser *p, const char *text_key, const char *subset_key, pile_err *err);

/* Parses one line (without '\n'). `line` must have PILE_LINES_PADDING
 * writable bytes after line[len] (the parser may write there and may modify
 * the line in place). Returns PILE_SKIP_NONE with *doc filled, a pile_skip
 * reason, or a negative PILE_E* (only PILE_ENOMEM). When detail is non-NULL and
 * the line is skipped, it gets a short human-readable reason
 * ("unexpected character at byte 17"). Semantics: a duplicate "text" key
 * takes the last value (as Python's json does); numbers are checked for JSON
 * grammar but never need to fit a double; nesting depth is unlimited in
 * practice (at least 1,000,000); UTF-8 in the line is validated. */
int pile_jsonl_parse(pile_jsonl_parser *p, char *line, size_t len, pile_jsonl_doc *doc, char *detail,
                     size_t detail_cap);

/* ----------------------------------------------------------------- tree */

typedef enum pile_json_type {
    PILE_JSON_NULL,
    PILE_JSON_BOOL,
    PILE_JSON_NUMBER,
    PILE_JSON_STRING,
    PILE_JSON_ARRAY,
    PILE_JSON_OBJECT,
} pile_json_type;

/* An owned, immutable tree: nodes live until pile_json_free(root). */
typedef struct pile_json pile_json;

/* Parses a whole document. `name` is used in messages (a file name);
 * errors say line and column. */
int pile_json_parse(const char *data, size_t len, const char *name, pile_json **root, pile_err *err);
int pile_json_parse_file(const char *path, pile_json **root, pile_err *err);
void pile_json_free(pile_json *root);

pile_json_type pile_json_type_of(const pile_json *v);
/* Object member by key (the last one if duplicated), or NULL. */
const pile_json *pile_json_get(const pile_json *obj, const char *key);
/* Arrays and objects: number of elements / members. */
size_t pile_json_size(const pile_json *v);
/* i-th array element or object member value (in document order). */
const pile_json *pile_json_at(const pile_json *v, size_t i);
/* i-th object member key (NUL-terminated, length in *len if non-NULL). */
const char *pile_json_key_at(const pile_json *obj, size_t i, size_t *len);
/* Scalars. String: NUL-terminated UTF-8 (may contain NUL; length in *len). */
const char *pile_json_str(const pile_json *v, size_t *len);
double pile_json_num(const pile_json *v);
/* 1 and sets *out if v is an integer-valued number that fits int64. */
int pile_json_int(const pile_json *v, int64_t *out);
int pile_json_bool(const pile_json *v);

/* --------------------------------------------------------------- writer */

/* Appends s[0..n) as a JSON string literal (quotes, escapes; UTF-8 passed through). */
int pile_json_write_string(pile_buf *out, const char *s, size_t n);

#ifdef __cplusplus
}
#endif

#endif
