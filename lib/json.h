/* json.h — a small, strict JSON parser (RFC 8259), internal to the library.
 *
 * Enough for the safetensors header: objects (members kept in file order,
 * duplicate keys kept for the caller to judge), arrays, strings (escapes
 * decoded, \uXXXX and surrogate pairs to UTF-8, raw bytes checked to be valid
 * UTF-8), non-negative integers as uint64 (overflow refused), other numbers
 * (negative, fraction, exponent) checked and accepted without their value,
 * true, false, null. Nesting is limited to CR_JSON_MAX_DEPTH. The input is
 * pointer + length and need not be NUL-terminated; nothing past it is read. */
#ifndef CR_JSON_H
#define CR_JSON_H

#include <stddef.h>
#include <stdint.h>
#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CR_JSON_MAX_DEPTH 16

typedef enum {
    CR_JSON_NULL,
    CR_JSON_FALSE,
    CR_JSON_TRUE,
    CR_JSON_INT,     /* a non-negative integer without fraction or exponent */
    CR_JSON_NUMBER,  /* any other number; its value is not kept */
    CR_JSON_STRING,
    CR_JSON_ARRAY,
    CR_JSON_OBJECT
} cr_json_type;

typedef struct cr_json cr_json;
typedef struct cr_json_member cr_json_member;

struct cr_json {
    cr_json_type type;
    size_t count;                /* string: bytes; array: items; object: members */
    union {
        uint64_t integer;        /* CR_JSON_INT */
        char *string;            /* CR_JSON_STRING: count bytes + NUL (may hold \0 inside) */
        cr_json *items;          /* CR_JSON_ARRAY: count values */
        cr_json_member *members; /* CR_JSON_OBJECT: count members, in file order */
    } u;
};

struct cr_json_member {
    char *key;                   /* key_len bytes + NUL (may hold \0 inside) */
    size_t key_len;
    cr_json value;
};

/* Parses len bytes as one JSON value (surrounding whitespace allowed) into *out.
 * Fails with CR_EFORMAT "name: invalid JSON at byte N: problem", or CR_ENOMEM. */
cr_status cr_json_parse(const char *text, size_t len, const char *name, cr_json *out);
/* Frees everything v owns and makes it a null value (safe on a null value). */
void cr_json_free(cr_json *v);

/* The first member of object obj whose key is the NUL-terminated key, or NULL. */
const cr_json *cr_json_get(const cr_json *obj, const char *key);
/* True if the string (len bytes) holds no \0 byte, i.e. it is a usable C string. */
int cr_json_is_c_string(const char *s, size_t len);
/* True if s[0..len) is well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF). */
int cr_json_utf8_valid(const char *s, size_t len);
/* A short name for a type ("object", "string", ...), for messages. */
const char *cr_json_type_name(cr_json_type type);

#ifdef __cplusplus
}
#endif

#endif
