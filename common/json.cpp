/* JSON for pile over simdjson's DOM parser (the project's only C++): the
 * JSON-lines fast path, an owned tree for config files, and a string writer.
 * simdjson validates strictly at GB/s; the few things it refuses that pile
 * accepts (invalid UTF-8, lone surrogate escapes, numbers out of double
 * range, deep nesting) are fixed on the error path only and parsed again, so
 * well-formed lines cost one DOM parse. No exception crosses into C. */
#include "json_internal.h"
#include "pile_fs.h"
#include "pile_json.h"
#include "pile_lines.h"
#include "pile_utf8.h"

#include <simdjson.h>

#include <cerrno>
#include <cstdarg>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string_view>
#include <utility>
#include <vector>

static_assert(PILE_LINES_PADDING >= simdjson::SIMDJSON_PADDING,
              "pile_lines must leave the padding simdjson reads past a line");

namespace {

namespace dom = simdjson::dom;
using simdjson::error_code;

constexpr size_t kDefaultDepth = 1024;
constexpr size_t kShrinkDepth = 1u << 20; /* give a huge depth allocation back after use */
constexpr size_t kPad = simdjson::SIMDJSON_PADDING;

inline bool is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

inline bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

inline bool hex4(const char *s, size_t avail, unsigned *out)
{
    if (avail < 4) return false;
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        unsigned char c = (unsigned char)s[k];
        unsigned d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return false;
        v = v << 4 | d;
    }
    *out = v;
    return true;
}

/* End of the JSON number starting at s[i] (RFC 8259 section 6 grammar), or 0
 * when no valid number starts there. Never converts, so range is no issue. */
size_t number_end(const char *s, size_t i, size_t n)
{
    if (i < n && s[i] == '-') i++;
    if (i >= n || !is_digit((unsigned char)s[i])) return 0;
    if (s[i] == '0') {
        i++;
    } else {
        while (i < n && is_digit((unsigned char)s[i])) i++;
    }
    if (i < n && s[i] == '.') {
        i++;
        if (i >= n || !is_digit((unsigned char)s[i])) return 0;
        while (i < n && is_digit((unsigned char)s[i])) i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= n || !is_digit((unsigned char)s[i])) return 0;
        while (i < n && is_digit((unsigned char)s[i])) i++;
    }
    return i;
}

inline bool number_char(unsigned char c)
{
    return is_digit(c) || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

/* simdjson's DOM refuses numbers it cannot represent (1e999999, 40-digit
 * integers). Python's json takes them, so pile does: every grammatical number
 * token outside strings becomes "0" padded with spaces (same length, same
 * validity) and the line is parsed again. The original tokens are recorded in
 * document order for the tree, which converts them itself. In a valid
 * document a number is always followed by whitespace, ',', ']' or '}', so the
 * maximal run of number characters is exactly the token. */
size_t neutralize_numbers(char *s, size_t n, std::vector<std::pair<size_t, size_t>> *tokens)
{
    size_t changed = 0;
    bool in_str = false;
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (in_str) {
            if (c == '\\') i += 2;
            else {
                if (c == '"') in_str = false;
                i++;
            }
            continue;
        }
        if (c == '"') {
            in_str = true;
            i++;
            continue;
        }
        if (c == '-' || is_digit(c)) {
            size_t k = i;
            while (k < n && number_char((unsigned char)s[k])) k++;
            if (number_end(s, i, n) == k) {
                if (tokens) tokens->emplace_back(i, k - i);
                s[i] = '0';
                memset(s + i + 1, ' ', k - i - 1);
                changed++;
            }
            i = k;
            continue;
        }
        i++;
    }
    return changed;
}

/* Rewrites each unpaired surrogate escape (\uD800-\uDFFF without its partner)
 * to \uFFFD in place, the replacement the reference applies (WHATWG-style);
 * returns how many. Escaped backslashes are skipped as pairs, so "\\ud800"
 * (a backslash, then text) is left alone. */
size_t fix_surrogates(char *s, size_t n)
{
    size_t fixed = 0;
    bool in_str = false;
    size_t i = 0;
    while (i < n) {
        char c = s[i];
        if (!in_str) {
            if (c == '"') in_str = true;
            i++;
            continue;
        }
        if (c == '"') {
            in_str = false;
            i++;
            continue;
        }
        if (c != '\\') {
            i++;
            continue;
        }
        unsigned u, u2;
        if (i + 1 < n && s[i + 1] == 'u' && hex4(s + i + 2, n - (i + 2), &u)) {
            if (u >= 0xD800 && u <= 0xDBFF && i + 12 <= n && s[i + 6] == '\\' && s[i + 7] == 'u' &&
                hex4(s + i + 8, n - (i + 8), &u2) && u2 >= 0xDC00 && u2 <= 0xDFFF) {
                i += 12;
                continue;
            }
            if (u >= 0xD800 && u <= 0xDFFF) {
                memcpy(s + i + 2, "FFFD", 4);
                fixed++;
            }
            i += 6;
            continue;
        }
        i += 2;
    }
    return fixed;
}

/* Offset of the first error inside the string whose opening quote is s[i],
 * or the offset just past its closing quote. */
bool scan_string(const char *s, size_t n, size_t *pi, bool allow_lone, const char **why)
{
    size_t i = *pi + 1;
    for (;;) {
        if (i >= n) {
            *pi = i;
            *why = "unterminated string";
            return false;
        }
        unsigned char c = (unsigned char)s[i];
        if (c == '"') {
            *pi = i + 1;
            return true;
        }
        if (c < 0x20) {
            *pi = i;
            *why = "unescaped control character in string";
            return false;
        }
        if (c >= 0x80) {
            size_t k = i;
            while (k < n && (unsigned char)s[k] >= 0x80) k++;
            size_t ok = pile_utf8_valid_prefix(s + i, k - i);
            if (ok != k - i) {
                *pi = i + ok;
                *why = "invalid UTF-8";
                return false;
            }
            i = k;
            continue;
        }
        if (c != '\\') {
            i++;
            continue;
        }
        if (i + 1 >= n) {
            *pi = i;
            *why = "unterminated string";
            return false;
        }
        char e = s[i + 1];
        if (strchr("\"\\/bfnrt", e) && e) {
            i += 2;
            continue;
        }
        unsigned u, u2;
        if (e != 'u' || !hex4(s + i + 2, n - (i + 2), &u)) {
            *pi = i;
            *why = e == 'u' ? "\\u escape without 4 hex digits" : "invalid escape in string";
            return false;
        }
        if (u >= 0xD800 && u <= 0xDBFF && i + 12 <= n && s[i + 6] == '\\' && s[i + 7] == 'u' &&
            hex4(s + i + 8, n - (i + 8), &u2) && u2 >= 0xDC00 && u2 <= 0xDFFF) {
            i += 12;
            continue;
        }
        if (u >= 0xD800 && u <= 0xDFFF && !allow_lone) {
            *pi = i;
            *why = "lone surrogate escape in string";
            return false;
        }
        i += 6;
    }
}

inline size_t skip_ws(const char *s, size_t i, size_t n)
{
    while (i < n && is_ws((unsigned char)s[i])) i++;
    return i;
}

bool validate(const char *s, size_t n, bool allow_lone, size_t *off, const char **why)
{
    std::vector<char> stack; /* '[' or '{' per open container: no recursion */
    size_t i = 0;
    const char *w = nullptr;
    enum { VALUE, KEY, AFTER } state = VALUE;
    for (;;) {
        i = skip_ws(s, i, n);
        if (state == VALUE) {
            if (i >= n) {
                w = "unexpected end of input, expected a value";
                goto fail;
            }
            char c = s[i];
            if (c == '{' || c == '[') {
                stack.push_back(c);
                i = skip_ws(s, i + 1, n);
                if (i < n && s[i] == (c == '{' ? '}' : ']')) {
                    stack.pop_back();
                    i++;
                    state = AFTER;
                } else {
                    state = c == '{' ? KEY : VALUE;
                }
                continue;
            }
            if (c == '"') {
                if (!scan_string(s, n, &i, allow_lone, &w)) goto fail;
            } else if (c == '-' || is_digit((unsigned char)c)) {
                size_t e = number_end(s, i, n);
                if (!e) {
                    w = "invalid number";
                    goto fail;
                }
                i = e;
            } else if (n - i >= 4 && memcmp(s + i, "true", 4) == 0) {
                i += 4;
            } else if (n - i >= 5 && memcmp(s + i, "false", 5) == 0) {
                i += 5;
            } else if (n - i >= 4 && memcmp(s + i, "null", 4) == 0) {
                i += 4;
            } else {
                w = "unexpected character, expected a value";
                goto fail;
            }
            state = AFTER;
        } else if (state == KEY) {
            if (i >= n || s[i] != '"') {
                w = "expected a string key";
                goto fail;
            }
            if (!scan_string(s, n, &i, allow_lone, &w)) goto fail;
            i = skip_ws(s, i, n);
            if (i >= n || s[i] != ':') {
                w = "expected ':' after a key";
                goto fail;
            }
            i++;
            state = VALUE;
        } else {
            if (stack.empty()) {
                if (i < n) {
                    w = "unexpected data after the JSON value";
                    goto fail;
                }
                return true;
            }
            char top = stack.back();
            if (i < n && s[i] == ',') {
                i++;
                state = top == '{' ? KEY : VALUE;
            } else if (i < n && s[i] == (top == '{' ? '}' : ']')) {
                stack.pop_back();
                i++;
            } else {
                w = top == '{' ? "expected ',' or '}' in object" : "expected ',' or ']' in array";
                goto fail;
            }
        }
    }
fail:
    *off = i;
    *why = w;
    return false;
}

const char *simdjson_why(error_code e)
{
    switch (e) {
    case simdjson::UTF8_ERROR: return "invalid UTF-8";
    case simdjson::UNESCAPED_CHARS: return "unescaped control character in string";
    case simdjson::UNCLOSED_STRING: return "unterminated string";
    case simdjson::STRING_ERROR: return "invalid string (bad escape)";
    case simdjson::NUMBER_ERROR: return "invalid number";
    case simdjson::T_ATOM_ERROR:
    case simdjson::F_ATOM_ERROR:
    case simdjson::N_ATOM_ERROR: return "invalid literal";
    case simdjson::DEPTH_ERROR: return "nesting too deep";
    case simdjson::EMPTY: return "no JSON value";
    default: return "invalid JSON structure";
    }
}

const char *type_name(dom::element_type t)
{
    switch (t) {
    case dom::element_type::ARRAY: return "an array";
    case dom::element_type::OBJECT: return "an object";
    case dom::element_type::INT64:
    case dom::element_type::UINT64:
    case dom::element_type::DOUBLE: return "a number";
    case dom::element_type::STRING: return "a string";
    case dom::element_type::BOOL: return "a boolean";
    default: return "null";
    }
}

void set_detail(char *detail, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void set_detail(char *detail, size_t cap, const char *fmt, ...)
{
    if (!detail || !cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, cap, fmt, ap);
    va_end(ap);
}

/* Which repairs one parse has applied: each at most once, when simdjson
 * reports the matching error. */
struct parse_state {
    unsigned repairs = 0;
    bool numbers = false;
    bool depth = false;
};

} /* namespace */

struct pile_jsonl_parser {
    dom::parser dom;
    pile_buf scratch{};
};

namespace {

error_code grow_depth(dom::parser &dp, size_t n)
{
    size_t want = n / 2 + 2; /* a valid document cannot nest deeper */
    if (want <= dp.max_depth()) return simdjson::DEPTH_ERROR;
    size_t capacity = dp.capacity() > n ? dp.capacity() : n;
    return dp.allocate(capacity, want);
}

} /* namespace */

extern "C" {

const char *pile_skip_name(pile_skip reason)
{
    switch (reason) {
    case PILE_SKIP_NONE: return "none";
    case PILE_SKIP_BLANK: return "blank";
    case PILE_SKIP_BAD_JSON: return "bad_json";
    case PILE_SKIP_NOT_OBJECT: return "not_object";
    case PILE_SKIP_NO_TEXT: return "no_text";
    case PILE_SKIP_TEXT_NOT_STRING: return "text_not_string";
    case PILE_SKIP_TOO_LONG: return "too_long";
    case PILE_SKIP_CUT: return "cut";
    default: return "unknown";
    }
}

pile_jsonl_parser *pile_jsonl_parser_create(void)
{
    try {
        pile_jsonl_parser *p = new (std::nothrow) pile_jsonl_parser();
        if (!p) return nullptr;
        if (p->dom.allocate(1u << 16, kDefaultDepth) != simdjson::SUCCESS) {
            delete p;
            return nullptr;
        }
        return p;
    } catch (...) {
        return nullptr;
    }
}

void pile_jsonl_parser_free(pile_jsonl_parser *p)
{
    if (!p) return;
    pile_buf_free(&p->scratch);
    delete p;
}

int pile_jsonl_parse(pile_jsonl_parser *p, char *line, size_t len, pile_jsonl_doc *doc, char *detail,
                     size_t detail_cap)
try {
    if (detail && detail_cap) detail[0] = '\0';
    *doc = pile_jsonl_doc{};
    size_t i = 0;
    while (i < len && is_ws((unsigned char)line[i])) i++;
    if (i == len) {
        set_detail(detail, detail_cap, "blank line");
        return PILE_SKIP_BLANK;
    }
    if (p->dom.max_depth() > kShrinkDepth) {
        if (p->dom.allocate(p->dom.capacity(), kDefaultDepth) != simdjson::SUCCESS) return PILE_ENOMEM;
    }

    char *buf = line;
    size_t n = len;
    parse_state st;
    dom::element root;
    for (;;) {
        error_code e = p->dom.parse(reinterpret_cast<const uint8_t *>(buf), n, false).get(root);
        if (e == simdjson::SUCCESS) break;
        bool retry = false;
        switch (e) {
        case simdjson::UTF8_ERROR:
            if (!(st.repairs & PILE_REPAIR_UTF8)) {
                p->scratch.len = 0;
                long subs = pile_utf8_repair(buf, n, &p->scratch);
                if (subs < 0 || pile_buf_reserve(&p->scratch, kPad)) return PILE_ENOMEM;
                memset(p->scratch.data + p->scratch.len, ' ', kPad);
                buf = p->scratch.data;
                n = p->scratch.len;
                st.repairs |= PILE_REPAIR_UTF8;
                retry = subs > 0;
            }
            break;
        case simdjson::STRING_ERROR:
            if (!(st.repairs & PILE_REPAIR_SURROGATE) && fix_surrogates(buf, n)) {
                st.repairs |= PILE_REPAIR_SURROGATE;
                retry = true;
            }
            break;
        case simdjson::NUMBER_ERROR: /* 3.0.1 also reports integers beyond 64 bits so */
            if (!st.numbers) {
                st.numbers = true;
                retry = neutralize_numbers(buf, n, nullptr) > 0;
            }
            break;
        case simdjson::DEPTH_ERROR:
            if (!st.depth) {
                st.depth = true;
                error_code a = grow_depth(p->dom, n);
                if (a == simdjson::MEMALLOC) return PILE_ENOMEM;
                retry = a == simdjson::SUCCESS;
            }
            break;
        case simdjson::MEMALLOC: return PILE_ENOMEM;
        case simdjson::EMPTY:
            set_detail(detail, detail_cap, "blank line");
            return PILE_SKIP_BLANK;
        default: break;
        }
        if (retry) continue;
        if (detail && detail_cap) {
            size_t off;
            const char *why;
            if (!validate(buf, n, true, &off, &why))
                set_detail(detail, detail_cap, "%s at byte %zu", why, off);
            else
                set_detail(detail, detail_cap, "%s", simdjson_why(e));
        }
        return PILE_SKIP_BAD_JSON;
    }

    dom::object obj;
    if (root.get_object().get(obj) != simdjson::SUCCESS) {
        set_detail(detail, detail_cap, "top-level value is %s, not an object", type_name(root.type()));
        return PILE_SKIP_NOT_OBJECT;
    }
    /* Python's json keeps the last of duplicate keys: scan every member. */
    dom::element text, meta;
    bool has_text = false, has_meta = false;
    for (dom::key_value_pair kv : obj) {
        if (kv.key == "text") {
            text = kv.value;
            has_text = true;
        } else if (kv.key == "meta") {
            meta = kv.value;
            has_meta = true;
        }
    }
    if (!has_text) {
        set_detail(detail, detail_cap, "no \"text\" member");
        return PILE_SKIP_NO_TEXT;
    }
    std::string_view tv;
    if (text.get_string().get(tv) != simdjson::SUCCESS) {
        set_detail(detail, detail_cap, "\"text\" is %s, not a string", type_name(text.type()));
        return PILE_SKIP_TEXT_NOT_STRING;
    }
    doc->text = tv.data();
    doc->text_len = tv.size();
    doc->repairs = st.repairs;
    dom::object mo;
    if (has_meta && meta.get_object().get(mo) == simdjson::SUCCESS) {
        dom::element name;
        bool has_name = false;
        for (dom::key_value_pair kv : mo) {
            if (kv.key == "pile_set_name") {
                name = kv.value;
                has_name = true;
            }
        }
        std::string_view sv;
        if (has_name && name.get_string().get(sv) == simdjson::SUCCESS) {
            doc->subset = sv.data();
            doc->subset_len = sv.size();
        }
    }
    return PILE_SKIP_NONE;
} catch (...) {
    return PILE_ENOMEM;
}

int pile__json_validate(const char *s, size_t n, int allow_lone_surrogates, size_t *err_off, const char **why)
try {
    size_t off = 0;
    const char *w = nullptr;
    bool ok = validate(s, n, allow_lone_surrogates != 0, &off, &w);
    if (!ok) {
        if (err_off) *err_off = off;
        if (why) *why = w;
    }
    return ok ? 1 : 0;
} catch (...) {
    if (err_off) *err_off = 0;
    if (why) *why = "out of memory";
    return 0;
}

} /* extern "C" */
