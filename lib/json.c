/* json.c — a small, strict JSON parser: recursive descent with a depth limit,
 * bounds-checked against the given length (the text need not end with NUL). */
#include "json.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const unsigned char *text;
    size_t len;
    size_t pos;
    const char *name;  /* what is parsed, for messages */
} parser;

static cr_status parse_value(parser *p, cr_json *out, int depth);

/* Fails with CR_EFORMAT at the current byte offset, naming the problem. */
static cr_status fail(const parser *p, const char *problem)
{
    return cr_fail(CR_EFORMAT, "%s: invalid JSON at byte %zu: %s", p->name, p->pos, problem);
}

/* Fails with CR_ENOMEM, naming what was being parsed. */
static cr_status fail_nomem(const parser *p)
{
    return cr_fail(CR_ENOMEM, "%s: out of memory while parsing JSON", p->name);
}

/* True if there is at least one byte left. */
static int more(const parser *p) { return p->pos < p->len; }

/* The current byte (only call when more(p)). */
static unsigned char peek(const parser *p) { return p->text[p->pos]; }

/* Skips JSON whitespace (space, tab, newline, carriage return). */
static void skip_ws(parser *p)
{
    while (more(p)) {
        unsigned char c = peek(p);
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

/* Length (1..4) of the well-formed UTF-8 sequence at s[0..n), or 0 if ill-formed. */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;  /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) { len = 3; lo = 0xA0; }        /* no overlongs */
    else if (c >= 0xE1 && c <= 0xEC) len = 3;
    else if (c == 0xED) { len = 3; hi = 0x9F; }        /* no surrogates */
    else if (c >= 0xEE && c <= 0xEF) len = 3;
    else if (c == 0xF0) { len = 4; lo = 0x90; }        /* no overlongs */
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) { len = 4; hi = 0x8F; }        /* <= U+10FFFF */
    else return 0;
    if (n < len) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    return len;
}

int cr_json_utf8_valid(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq_len(u + i, len - i);
        if (n == 0) return 0;
        i += n;
    }
    return 1;
}

int cr_json_is_c_string(const char *s, size_t len) { return memchr(s, '\0', len) == NULL; }

const char *cr_json_type_name(cr_json_type type)
{
    switch (type) {
    case CR_JSON_NULL:   return "null";
    case CR_JSON_FALSE:  return "false";
    case CR_JSON_TRUE:   return "true";
    case CR_JSON_INT:    return "integer";
    case CR_JSON_NUMBER: return "number";
    case CR_JSON_STRING: return "string";
    case CR_JSON_ARRAY:  return "array";
    case CR_JSON_OBJECT: return "object";
    }
    return "?";
}

/* Parses the literal word (true/false/null) at the current position into type. */
static cr_status parse_literal(parser *p, const char *word, cr_json_type type, cr_json *out)
{
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->text + p->pos, word, n) != 0)
        return fail(p, "unexpected character");
    p->pos += n;
    out->type = type;
    return CR_OK;
}

/* True if the current byte is an ASCII digit. */
static int at_digit(const parser *p) { return more(p) && peek(p) >= '0' && peek(p) <= '9'; }

/* Parses a number; plain non-negative integers become CR_JSON_INT (overflow refused). */
static cr_status parse_number(parser *p, cr_json *out)
{
    int negative = 0, integral = 1;
    uint64_t v = 0;
    if (peek(p) == '-') { negative = 1; p->pos++; }
    if (!at_digit(p)) return fail(p, "expected a digit");
    if (peek(p) == '0') {
        p->pos++;
        if (at_digit(p)) return fail(p, "number with a leading zero");
    } else {
        while (at_digit(p)) {
            unsigned d = (unsigned)(peek(p) - '0');
            if (!negative && v > (UINT64_MAX - d) / 10)
                return fail(p, "integer does not fit in 64 bits");
            v = v * 10 + d;
            p->pos++;
        }
    }
    if (more(p) && peek(p) == '.') {
        integral = 0;
        p->pos++;
        if (!at_digit(p)) return fail(p, "expected a digit after '.'");
        while (at_digit(p)) p->pos++;
    }
    if (more(p) && (peek(p) == 'e' || peek(p) == 'E')) {
        integral = 0;
        p->pos++;
        if (more(p) && (peek(p) == '+' || peek(p) == '-')) p->pos++;
        if (!at_digit(p)) return fail(p, "expected a digit in the exponent");
        while (at_digit(p)) p->pos++;
    }
    if (!negative && integral) {
        out->type = CR_JSON_INT;
        out->u.integer = v;
    } else {
        out->type = CR_JSON_NUMBER;
    }
    return CR_OK;
}

/* Value of one hex digit, or -1. */
static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Reads the 4 hex digits after "\u" at p->pos into *cp and advances past them. */
static cr_status read_hex4(parser *p, unsigned *cp)
{
    if (p->len - p->pos < 4) return fail(p, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hex_value(p->text[p->pos + (size_t)i]);
        if (h < 0) return fail(p, "bad hex digit in \\u escape");
        v = v * 16 + (unsigned)h;
    }
    p->pos += 4;
    *cp = v;
    return CR_OK;
}

/* Appends code point cp (<= U+10FFFF, not a surrogate) to dst as UTF-8; returns bytes written. */
static size_t put_utf8(unsigned char *dst, unsigned cp)
{
    if (cp < 0x80) { dst[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) {
        dst[0] = (unsigned char)(0xC0 | (cp >> 6));
        dst[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        dst[0] = (unsigned char)(0xE0 | (cp >> 12));
        dst[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        dst[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    dst[0] = (unsigned char)(0xF0 | (cp >> 18));
    dst[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    dst[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    dst[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes a \u escape (p->pos just after the 'u'), pairing surrogates, into dst. */
static cr_status decode_u_escape(parser *p, unsigned char *dst, size_t *written)
{
    unsigned cp = 0;
    cr_status st = read_hex4(p, &cp);
    if (st) return st;
    if (cp >= 0xDC00 && cp <= 0xDFFF) return fail(p, "lone low surrogate in \\u escape");
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (p->len - p->pos < 2 || p->text[p->pos] != '\\' || p->text[p->pos + 1] != 'u')
            return fail(p, "high surrogate not followed by a low surrogate");
        p->pos += 2;
        unsigned lo = 0;
        if ((st = read_hex4(p, &lo))) return st;
        if (lo < 0xDC00 || lo > 0xDFFF)
            return fail(p, "high surrogate not followed by a low surrogate");
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    *written = put_utf8(dst, cp);
    return CR_OK;
}

/* Decodes one escape (p->pos at the backslash) into dst; *written gets the byte count. */
static cr_status decode_escape(parser *p, unsigned char *dst, size_t *written)
{
    p->pos++;  /* the backslash; the closing-quote scan guarantees one more byte */
    unsigned char c = peek(p);
    p->pos++;
    const char *from = "\"\\/bfnrt", *to = "\"\\/\b\f\n\r\t";
    const char *hit = c ? strchr(from, c) : NULL;
    if (hit) {
        dst[0] = (unsigned char)to[hit - from];
        *written = 1;
        return CR_OK;
    }
    if (c == 'u') return decode_u_escape(p, dst, written);
    p->pos--;
    return fail(p, "unknown escape");
}

/* Finds the closing quote of the string whose body starts at p->pos; fails if none. */
static cr_status find_string_end(const parser *p, size_t *end)
{
    size_t i = p->pos;
    while (i < p->len && p->text[i] != '"') i += (p->text[i] == '\\') ? 2 : 1;
    if (i >= p->len) return fail(p, "unterminated string");
    *end = i;
    return CR_OK;
}

/* Decodes the string body [p->pos, end) into dst (room for end - p->pos bytes); sets *n. */
static cr_status decode_string_body(parser *p, size_t end, unsigned char *dst, size_t *n)
{
    size_t k = 0;
    while (p->pos < end) {
        unsigned char c = peek(p);
        if (c == '\\') {
            size_t w = 0;
            cr_status st = decode_escape(p, dst + k, &w);
            if (st) return st;
            k += w;
        } else if (c < 0x20) {
            return fail(p, "control character in string");
        } else {
            size_t w = utf8_seq_len(p->text + p->pos, end - p->pos);
            if (w == 0) return fail(p, "invalid UTF-8 in string");
            memcpy(dst + k, p->text + p->pos, w);
            p->pos += w;
            k += w;
        }
    }
    if (p->pos != end) return fail(p, "truncated escape at end of string");
    *n = k;
    return CR_OK;
}

/* Parses a string (p->pos at the opening quote) into a new NUL-terminated buffer. */
static cr_status parse_string(parser *p, char **out, size_t *out_len)
{
    p->pos++;  /* opening quote */
    size_t end = 0;
    cr_status st = find_string_end(p, &end);
    if (st) return st;
    /* Every escape decodes to no more bytes than it occupies, so end - pos is enough. */
    unsigned char *buf = malloc(end - p->pos + 1);
    if (!buf) return fail_nomem(p);
    size_t n = 0;
    if ((st = decode_string_body(p, end, buf, &n))) {
        free(buf);
        return st;
    }
    buf[n] = '\0';
    p->pos = end + 1;  /* closing quote */
    *out = (char *)buf;
    *out_len = n;
    return CR_OK;
}

/* Makes room for one more element in a growable array of elem-sized items. */
static cr_status grow(const parser *p, void **items, size_t count, size_t *cap, size_t elem)
{
    if (count < *cap) return CR_OK;
    size_t new_cap = *cap ? *cap * 2 : 4;
    if (new_cap > SIZE_MAX / elem) return fail_nomem(p);
    void *bigger = realloc(*items, new_cap * elem);
    if (!bigger) return fail_nomem(p);
    *items = bigger;
    *cap = new_cap;
    return CR_OK;
}

/* Consumes the byte c after optional whitespace, or fails saying what was expected. */
static cr_status expect(parser *p, unsigned char c, const char *problem)
{
    skip_ws(p);
    if (!more(p) || peek(p) != c) return fail(p, problem);
    p->pos++;
    return CR_OK;
}

/* After an element: consumes ',' (returns 1) or the closing byte (returns 0); -1 on error. */
static int next_or_close(parser *p, unsigned char close, cr_status *st)
{
    skip_ws(p);
    if (more(p) && peek(p) == ',') { p->pos++; return 1; }
    if (more(p) && peek(p) == close) { p->pos++; return 0; }
    *st = fail(p, close == ']' ? "expected ',' or ']'" : "expected ',' or '}'");
    return -1;
}

/* Parses an array (p->pos at '[') whose items sit at nesting depth + 1. */
static cr_status parse_array(parser *p, cr_json *out, int depth)
{
    cr_json *items = NULL;
    size_t count = 0, cap = 0;
    cr_status st = CR_OK;
    p->pos++;
    skip_ws(p);
    int go = 1;
    if (more(p) && peek(p) == ']') { p->pos++; go = 0; }
    while (go) {
        if ((st = grow(p, (void **)&items, count, &cap, sizeof *items))) break;
        if ((st = parse_value(p, &items[count], depth + 1))) break;
        count++;
        go = next_or_close(p, ']', &st);
        if (go < 0) break;
    }
    out->type = CR_JSON_ARRAY;
    out->count = count;
    out->u.items = items;
    if (st) cr_json_free(out);
    return st;
}

/* Parses one "key": value member at p->pos into m (depth is the value's depth). */
static cr_status parse_member(parser *p, cr_json_member *m, int depth)
{
    skip_ws(p);
    if (!more(p) || peek(p) != '"') return fail(p, "expected a string key");
    cr_status st = parse_string(p, &m->key, &m->key_len);
    if (st) return st;
    if ((st = expect(p, ':', "expected ':' after key")) || (st = parse_value(p, &m->value, depth))) {
        free(m->key);
        m->key = NULL;
        return st;
    }
    return CR_OK;
}

/* Parses an object (p->pos at '{') whose values sit at nesting depth + 1. */
static cr_status parse_object(parser *p, cr_json *out, int depth)
{
    cr_json_member *members = NULL;
    size_t count = 0, cap = 0;
    cr_status st = CR_OK;
    p->pos++;
    skip_ws(p);
    int go = 1;
    if (more(p) && peek(p) == '}') { p->pos++; go = 0; }
    while (go) {
        if ((st = grow(p, (void **)&members, count, &cap, sizeof *members))) break;
        if ((st = parse_member(p, &members[count], depth + 1))) break;
        count++;
        go = next_or_close(p, '}', &st);
        if (go < 0) break;
    }
    out->type = CR_JSON_OBJECT;
    out->count = count;
    out->u.members = members;
    if (st) cr_json_free(out);
    return st;
}

/* Parses any value at p->pos (after whitespace) into out; out stays null on failure. */
static cr_status parse_value(parser *p, cr_json *out, int depth)
{
    memset(out, 0, sizeof *out);
    out->type = CR_JSON_NULL;
    skip_ws(p);
    if (!more(p)) return fail(p, "unexpected end of input");
    unsigned char c = peek(p);
    if ((c == '[' || c == '{') && depth >= CR_JSON_MAX_DEPTH)
        return fail(p, "nesting deeper than the limit of 16");
    switch (c) {
    case '{': return parse_object(p, out, depth);
    case '[': return parse_array(p, out, depth);
    case '"': {
        cr_status st = parse_string(p, &out->u.string, &out->count);
        if (st == CR_OK) out->type = CR_JSON_STRING;
        return st;
    }
    case 't': return parse_literal(p, "true", CR_JSON_TRUE, out);
    case 'f': return parse_literal(p, "false", CR_JSON_FALSE, out);
    case 'n': return parse_literal(p, "null", CR_JSON_NULL, out);
    default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p, out);
        return fail(p, "unexpected character");
    }
}

cr_status cr_json_parse(const char *text, size_t len, const char *name, cr_json *out)
{
    parser p = {(const unsigned char *)text, len, 0, name ? name : "JSON"};
    cr_status st = parse_value(&p, out, 0);
    if (st) return st;
    skip_ws(&p);
    if (more(&p)) {
        cr_json_free(out);
        return fail(&p, "trailing characters after the value");
    }
    return CR_OK;
}

void cr_json_free(cr_json *v)
{
    if (v->type == CR_JSON_STRING) {
        free(v->u.string);
    } else if (v->type == CR_JSON_ARRAY) {
        for (size_t i = 0; i < v->count; i++) cr_json_free(&v->u.items[i]);
        free(v->u.items);
    } else if (v->type == CR_JSON_OBJECT) {
        for (size_t i = 0; i < v->count; i++) {
            free(v->u.members[i].key);
            cr_json_free(&v->u.members[i].value);
        }
        free(v->u.members);
    }
    memset(v, 0, sizeof *v);
    v->type = CR_JSON_NULL;
}

const cr_json *cr_json_get(const cr_json *obj, const char *key)
{
    if (obj->type != CR_JSON_OBJECT) return NULL;
    size_t n = strlen(key);
    for (size_t i = 0; i < obj->count; i++) {
        const cr_json_member *m = &obj->u.members[i];
        if (m->key_len == n && memcmp(m->key, key, n) == 0) return &m->value;
    }
    return NULL;
}
