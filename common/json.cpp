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
#include <string>
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
 * or the offset just past its closing quote. With any_bytes, bytes >= 0x80
 * are taken as they are (to locate other errors in a line before its UTF-8
 * repair, in the caller's byte offsets). */
bool scan_string(const char *s, size_t n, size_t *pi, bool allow_lone, bool any_bytes, const char **why)
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
        if (c >= 0x80 && any_bytes) {
            i++;
            continue;
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

bool validate(const char *s, size_t n, bool allow_lone, bool any_bytes, size_t *off, const char **why)
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
                if (!scan_string(s, n, &i, allow_lone, any_bytes, &w)) goto fail;
            } else if (c == '-' || is_digit((unsigned char)c)) {
                size_t e = number_end(s, i, n);
                if (!e || (e < n && number_char((unsigned char)s[e]))) {
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
            if (!scan_string(s, n, &i, allow_lone, any_bytes, &w)) goto fail;
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

/* One reused DOM parser (its buffers grow to the longest line seen), a
 * scratch copy for lines whose UTF-8 had to be repaired, and where the text
 * and the subset name are (dotted paths split into their steps). */
struct pile_jsonl_parser {
    dom::parser dom;
    pile_buf scratch{};
    std::vector<std::string> text_path{"text"};
    std::vector<std::string> subset_path{"meta", "pile_set_name"};
    std::string text_key{"text"};
};

namespace {

/* The value at `path` under obj, each step taking the last member of that
 * name (as Python's json keeps the last of duplicate keys); false when a
 * step is missing or the value on the way is not an object. */
bool find_path(dom::object obj, const std::vector<std::string> &path, dom::element *out)
{
    for (size_t i = 0; i < path.size(); i++) {
        dom::element v;
        bool has = false;
        for (dom::key_value_pair kv : obj) {
            if (kv.key == path[i]) {
                v = kv.value;
                has = true;
            }
        }
        if (!has) return false;
        if (i + 1 == path.size()) {
            *out = v;
            return true;
        }
        if (v.get_object().get(obj) != simdjson::SUCCESS) return false;
    }
    return false;
}

/* "a.b.c" -> {"a", "b", "c"}; false for an empty step. */
bool split_path(const char *key, std::vector<std::string> *out)
{
    out->clear();
    const char *s = key;
    for (;;) {
        const char *dot = strchr(s, '.');
        size_t n = dot ? (size_t)(dot - s) : strlen(s);
        if (n == 0) return false;
        out->emplace_back(s, n);
        if (!dot) return true;
        s = dot + 1;
    }
}

error_code grow_depth(dom::parser &dp, size_t n)
{
    size_t want = n / 2 + 2; /* a valid document cannot nest deeper */
    if (want <= dp.max_depth()) return simdjson::DEPTH_ERROR;
    size_t capacity = dp.capacity() > n ? dp.capacity() : n;
    return dp.allocate(capacity, want);
}

} /* namespace */

/* ------------------------------------------------------------------ tree */

struct pile_json_key {
    const char *s;
    size_t n;
};

struct pile_json {
    pile_json_type type;
    bool b;
    bool is_int;
    int64_t i;
    double num;
    size_t n;          /* string length, or number of elements / members */
    const char *s;     /* string, NUL-terminated */
    pile_json *kids;   /* n elements, or the n member values */
    pile_json_key *keys; /* objects: the n member keys, in document order */
};

namespace {

/* The tree's memory: a chain of blocks, freed together.
 *
 *   block: [arena_block header | tree_holder (first block only) | nodes, keys, strings ...]
 *
 * The first block is sized from the input so that a config file usually
 * fits in one allocation; later blocks double. */
struct arena_block {
    arena_block *next;
    size_t cap, used;
};

struct arena {
    arena_block *head = nullptr;
    size_t next_cap = 0;
};

constexpr size_t kBlockHeader = (sizeof(arena_block) + 15) & ~size_t(15);

void *arena_alloc(arena *a, size_t n)
{
    n = (n + 7) & ~size_t(7);
    arena_block *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = a->next_cap > n ? a->next_cap : n;
        b = static_cast<arena_block *>(malloc(kBlockHeader + cap));
        if (!b) return nullptr;
        b->cap = cap;
        b->used = 0;
        b->next = a->head;
        a->head = b;
        a->next_cap = cap * 2;
    }
    void *p = reinterpret_cast<char *>(b) + kBlockHeader + b->used;
    b->used += n;
    return p;
}

void arena_release(arena *a)
{
    for (arena_block *b = a->head; b;) {
        arena_block *next = b->next;
        free(b);
        b = next;
    }
    a->head = nullptr;
}

/* root is the first member, so pile_json_free can find the arena from it */
struct tree_holder {
    pile_json root;
    arena mem;
};

const char *arena_str(arena *a, std::string_view v)
{
    char *p = static_cast<char *>(arena_alloc(a, v.size() + 1));
    if (!p) return nullptr;
    if (!v.empty()) memcpy(p, v.data(), v.size());
    p[v.size()] = '\0';
    return p;
}

struct conv_frame {
    pile_json *node;
    size_t i, n;
    bool is_obj;
    dom::array::iterator ai;
    dom::object::iterator oi;
};

/* Number tokens of the original text, used when simdjson could not convert
 * them (see neutralize_numbers): the k-th number in document order. */
struct number_tokens {
    const char *src = nullptr;
    std::vector<std::pair<size_t, size_t>> tok;
    size_t next = 0;
};

void set_int_from_double(pile_json *v)
{
    double d = v->num;
    if (std::isfinite(d) && d == std::floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0) {
        v->is_int = true;
        v->i = static_cast<int64_t>(d);
    }
}

void number_from_token(pile_json *v, number_tokens *nt)
{
    v->type = PILE_JSON_NUMBER;
    if (nt->next >= nt->tok.size()) return;
    auto t = nt->tok[nt->next++];
    char tmp[64];
    std::vector<char> big;
    char *z = tmp;
    if (t.second + 1 > sizeof tmp) {
        big.resize(t.second + 1);
        z = big.data();
    }
    memcpy(z, nt->src + t.first, t.second);
    z[t.second] = '\0';
    v->num = strtod(z, nullptr);
    if (!strpbrk(z, ".eE")) {
        errno = 0;
        long long ll = strtoll(z, nullptr, 10);
        if (errno == 0) {
            v->is_int = true;
            v->i = ll;
        }
    } else {
        set_int_from_double(v);
    }
}

/* Fills dst from e; containers get their child arrays and a frame to fill
 * them later, so the conversion never recurses. */
bool convert_one(dom::element e, pile_json *dst, arena *a, std::vector<conv_frame> *stack, number_tokens *nt)
{
    memset(static_cast<void *>(dst), 0, sizeof *dst);
    switch (e.type()) {
    case dom::element_type::ARRAY: {
        dom::array arr = e.get_array().value_unsafe();
        size_t n = arr.size();
        if (n >= 0xFFFFFF) { /* the tape's count saturates: count by walking */
            n = 0;
            for (auto it = arr.begin(); it != arr.end(); ++it) n++;
        }
        dst->type = PILE_JSON_ARRAY;
        dst->n = n;
        if (n) {
            dst->kids = static_cast<pile_json *>(arena_alloc(a, n * sizeof(pile_json)));
            if (!dst->kids) return false;
            stack->push_back(conv_frame{dst, 0, n, false, arr.begin(), dom::object::iterator()});
        }
        return true;
    }
    case dom::element_type::OBJECT: {
        dom::object obj = e.get_object().value_unsafe();
        size_t n = obj.size();
        if (n >= 0xFFFFFF) {
            n = 0;
            for (auto it = obj.begin(); it != obj.end(); ++it) n++;
        }
        dst->type = PILE_JSON_OBJECT;
        dst->n = n;
        if (n) {
            dst->kids = static_cast<pile_json *>(arena_alloc(a, n * sizeof(pile_json)));
            dst->keys = static_cast<pile_json_key *>(arena_alloc(a, n * sizeof(pile_json_key)));
            if (!dst->kids || !dst->keys) return false;
            stack->push_back(conv_frame{dst, 0, n, true, dom::array::iterator(), obj.begin()});
        }
        return true;
    }
    case dom::element_type::STRING: {
        std::string_view v = e.get_string().value_unsafe();
        dst->type = PILE_JSON_STRING;
        dst->s = arena_str(a, v);
        dst->n = v.size();
        return dst->s != nullptr;
    }
    case dom::element_type::INT64:
        if (nt->src) {
            number_from_token(dst, nt);
            return true;
        }
        dst->type = PILE_JSON_NUMBER;
        dst->i = e.get_int64().value_unsafe();
        dst->num = static_cast<double>(dst->i);
        dst->is_int = true;
        return true;
    case dom::element_type::UINT64: {
        if (nt->src) {
            number_from_token(dst, nt);
            return true;
        }
        uint64_t u = e.get_uint64().value_unsafe();
        dst->type = PILE_JSON_NUMBER;
        dst->num = static_cast<double>(u);
        if (u <= static_cast<uint64_t>(INT64_MAX)) {
            dst->is_int = true;
            dst->i = static_cast<int64_t>(u);
        }
        return true;
    }
    case dom::element_type::DOUBLE:
        if (nt->src) {
            number_from_token(dst, nt);
            return true;
        }
        dst->type = PILE_JSON_NUMBER;
        dst->num = e.get_double().value_unsafe();
        set_int_from_double(dst);
        return true;
    case dom::element_type::BOOL:
        dst->type = PILE_JSON_BOOL;
        dst->b = e.get_bool().value_unsafe();
        return true;
    default:
        dst->type = PILE_JSON_NULL;
        return true;
    }
}

bool convert(dom::element root, pile_json *dst, arena *a, number_tokens *nt)
{
    std::vector<conv_frame> stack;
    if (!convert_one(root, dst, a, &stack, nt)) return false;
    while (!stack.empty()) {
        conv_frame &f = stack.back();
        if (f.i == f.n) {
            stack.pop_back();
            continue;
        }
        pile_json *node = f.node;
        size_t i = f.i++;
        dom::element child;
        if (f.is_obj) {
            dom::key_value_pair kv = *f.oi;
            ++f.oi;
            node->keys[i].s = arena_str(a, kv.key);
            node->keys[i].n = kv.key.size();
            if (!node->keys[i].s) return false;
            child = kv.value;
        } else {
            child = *f.ai;
            ++f.ai;
        }
        /* may grow the stack: f is not used after this */
        if (!convert_one(child, &node->kids[i], a, &stack, nt)) return false;
    }
    return true;
}

void line_col(const char *s, size_t off, size_t *line, size_t *col)
{
    size_t l = 1, last = 0;
    for (size_t i = 0; i < off; i++) {
        if (s[i] == '\n') {
            l++;
            last = i + 1;
        }
    }
    *line = l;
    *col = off - last + 1;
}

int tree_parse(const char *data, size_t len, const char *name, pile_json **out, pile_err *err)
{
    std::vector<char> buf(len + kPad, ' ');
    if (len) memcpy(buf.data(), data, len);
    dom::parser parser;
    if (parser.allocate(len > 64 ? len : 64, kDefaultDepth) != simdjson::SUCCESS)
        return pile_err_set(err, PILE_ENOMEM, "out of memory parsing '%s'", name);
    number_tokens nt;
    bool numbers = false, depth = false;
    dom::element root;
    for (;;) {
        error_code e = parser.parse(reinterpret_cast<const uint8_t *>(buf.data()), len, false).get(root);
        if (e == simdjson::SUCCESS) break;
        if (e == simdjson::MEMALLOC) return pile_err_set(err, PILE_ENOMEM, "out of memory parsing '%s'", name);
        if (e == simdjson::NUMBER_ERROR && !numbers) {
            numbers = true;
            if (neutralize_numbers(buf.data(), len, &nt.tok)) {
                nt.src = data;
                continue;
            }
        }
        if (e == simdjson::DEPTH_ERROR && !depth) {
            depth = true;
            error_code a = grow_depth(parser, len);
            if (a == simdjson::MEMALLOC) return pile_err_set(err, PILE_ENOMEM, "out of memory parsing '%s'", name);
            if (a == simdjson::SUCCESS) continue;
        }
        size_t off, line, col;
        const char *why;
        if (!pile_utf8_valid(data, len)) {
            off = pile_utf8_valid_prefix(data, len);
            line_col(data, off, &line, &col);
            return pile_err_set(err, PILE_EFORMAT, "cannot parse '%s': invalid UTF-8 at line %zu, column %zu", name,
                                line, col);
        }
        if (!validate(data, len, false, false, &off, &why)) {
            line_col(data, off, &line, &col);
            return pile_err_set(err, PILE_EFORMAT, "cannot parse '%s': %s at line %zu, column %zu", name, why, line,
                                col);
        }
        return pile_err_set(err, PILE_EFORMAT, "cannot parse '%s': %s", name, simdjson_why(e));
    }

    arena a;
    a.next_cap = len * 3 + 4096;
    void *hm = arena_alloc(&a, sizeof(tree_holder));
    if (!hm) return pile_err_set(err, PILE_ENOMEM, "out of memory parsing '%s'", name);
    tree_holder *h = new (hm) tree_holder();
    bool ok;
    try {
        ok = convert(root, &h->root, &a, &nt);
    } catch (...) { /* std::bad_alloc from the conversion stack: the arena must still be freed */
        ok = false;
    }
    h->mem = a; /* from here the holder owns every block, itself included */
    if (!ok) {
        pile_json_free(&h->root);
        return pile_err_set(err, PILE_ENOMEM, "out of memory parsing '%s'", name);
    }
    *out = &h->root;
    return 0;
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

int pile_jsonl_parser_set_keys(pile_jsonl_parser *p, const char *text_key, const char *subset_key, pile_err *err)
try {
    std::vector<std::string> tp, sp;
    if (!text_key || !split_path(text_key, &tp))
        return pile_err_set(err, PILE_EINVAL, "bad text key '%s': a dotted path of member names, none empty",
                            text_key ? text_key : "");
    if (subset_key && *subset_key && !split_path(subset_key, &sp))
        return pile_err_set(err, PILE_EINVAL, "bad subset key '%s': a dotted path of member names, none empty",
                            subset_key);
    p->text_path = std::move(tp);
    p->subset_path = std::move(sp);
    p->text_key = text_key;
    return 0;
} catch (...) {
    return pile_err_set(err, PILE_ENOMEM, "out of memory");
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
            /* After a UTF-8 repair buf is the repaired copy, whose offsets
             * drift by up to 2 bytes per U+FFFD: locate the error in the
             * caller's line instead, which repair left untouched. */
            bool repaired = buf != line;
            size_t off;
            const char *why;
            if (!validate(repaired ? line : buf, repaired ? len : n, true, repaired, &off, &why))
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
    dom::element text, name;
    if (!find_path(obj, p->text_path, &text)) {
        set_detail(detail, detail_cap, "no \"%s\" member", p->text_key.c_str());
        return PILE_SKIP_NO_TEXT;
    }
    std::string_view tv;
    if (text.get_string().get(tv) != simdjson::SUCCESS) {
        set_detail(detail, detail_cap, "\"%s\" is %s, not a string", p->text_key.c_str(), type_name(text.type()));
        return PILE_SKIP_TEXT_NOT_STRING;
    }
    doc->text = tv.data();
    doc->text_len = tv.size();
    doc->repairs = st.repairs;
    std::string_view sv;
    if (!p->subset_path.empty() && find_path(obj, p->subset_path, &name) &&
        name.get_string().get(sv) == simdjson::SUCCESS) {
        doc->subset = sv.data();
        doc->subset_len = sv.size();
    }
    return PILE_SKIP_NONE;
} catch (...) {
    return PILE_ENOMEM;
}

int pile__json_validate(const char *s, size_t n, int allow_lone_surrogates, size_t *err_off, const char **why)
try {
    size_t off = 0;
    const char *w = nullptr;
    bool ok = validate(s, n, allow_lone_surrogates != 0, false, &off, &w);
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

int pile_json_parse(const char *data, size_t len, const char *name, pile_json **root, pile_err *err)
try {
    *root = nullptr;
    return tree_parse(data, len, name ? name : "<json>", root, err);
} catch (...) {
    return pile_err_set(err, PILE_ENOMEM, "out of memory parsing '%s'", name ? name : "<json>");
}

int pile_json_parse_file(const char *path, pile_json **root, pile_err *err)
{
    *root = nullptr;
    pile_buf b{};
    int rc = pile_fs_read_file(path, &b, err);
    if (rc == 0) rc = pile_json_parse(b.data ? b.data : "", b.len, path, root, err);
    pile_buf_free(&b);
    return rc;
}

void pile_json_free(pile_json *root)
{
    if (!root) return;
    tree_holder *h = reinterpret_cast<tree_holder *>(root);
    arena a = h->mem;
    arena_release(&a);
}

pile_json_type pile_json_type_of(const pile_json *v)
{
    return v ? v->type : PILE_JSON_NULL;
}

const pile_json *pile_json_get(const pile_json *obj, const char *key)
{
    if (!obj || obj->type != PILE_JSON_OBJECT) return nullptr;
    size_t kn = strlen(key);
    for (size_t i = obj->n; i-- > 0;) {
        if (obj->keys[i].n == kn && memcmp(obj->keys[i].s, key, kn) == 0) return &obj->kids[i];
    }
    return nullptr;
}

size_t pile_json_size(const pile_json *v)
{
    return v && (v->type == PILE_JSON_ARRAY || v->type == PILE_JSON_OBJECT) ? v->n : 0;
}

const pile_json *pile_json_at(const pile_json *v, size_t i)
{
    if (!v || (v->type != PILE_JSON_ARRAY && v->type != PILE_JSON_OBJECT) || i >= v->n) return nullptr;
    return &v->kids[i];
}

const char *pile_json_key_at(const pile_json *obj, size_t i, size_t *len)
{
    if (!obj || obj->type != PILE_JSON_OBJECT || i >= obj->n) return nullptr;
    if (len) *len = obj->keys[i].n;
    return obj->keys[i].s;
}

const char *pile_json_str(const pile_json *v, size_t *len)
{
    if (!v || v->type != PILE_JSON_STRING) return nullptr;
    if (len) *len = v->n;
    return v->s;
}

double pile_json_num(const pile_json *v)
{
    return v && v->type == PILE_JSON_NUMBER ? v->num : 0.0;
}

int pile_json_int(const pile_json *v, int64_t *out)
{
    if (!v || v->type != PILE_JSON_NUMBER || !v->is_int) return 0;
    if (out) *out = v->i;
    return 1;
}

int pile_json_bool(const pile_json *v)
{
    return v && v->type == PILE_JSON_BOOL && v->b;
}

int pile_json_write_string(pile_buf *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (pile_buf_reserve(out, n + 2)) return PILE_ENOMEM;
    out->data[out->len++] = '"';
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        if (pile_buf_append(out, s + run, i - run)) return PILE_ENOMEM;
        run = i + 1;
        char esc[7] = {'\\', 0, 0, 0, 0, 0, 0};
        size_t k = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            k = 6;
        }
        if (pile_buf_append(out, esc, k)) return PILE_ENOMEM;
    }
    if (pile_buf_append(out, s + run, n - run) || pile_buf_append(out, "\"", 1)) return PILE_ENOMEM;
    return 0;
}

} /* extern "C" */
