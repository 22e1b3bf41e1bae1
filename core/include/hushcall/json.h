/* hushcall/json.h — a strict RFC 8259 parser building an immutable DOM in secure memory.
 *
 * The document and every string in it live in a hush_arena: decrypted
 * responses are read through this DOM without ever being copied to the
 * ordinary heap. Strings are unescaped and UTF-8 validated at parse time;
 * numbers are kept as their text. Object key order is kept; duplicate keys
 * are an error. Errors carry a byte offset and a reason, never content.
 *
 * A parsed DOM is immutable, so any number of threads may read it at once.
 * Every accessor accepts NULL (and answers as for a missing value), so
 * lookups chain: hush_json_object_get(hush_json_array_get(v, 0), "k", 1). */
#ifndef HUSHCALL_JSON_H
#define HUSHCALL_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hushcall/error.h"
#include "hushcall/secmem.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HUSH_JSON_DEFAULT_MAX_DEPTH 64u
#define HUSH_JSON_DEFAULT_MAX_BYTES (16u * 1024u * 1024u)
#define HUSH_JSON_MAX_DEPTH_LIMIT 1024u /* the deepest a caller may configure */

typedef enum hush_json_type {
    HUSH_JSON_NULL = 0,
    HUSH_JSON_BOOL,
    HUSH_JSON_NUMBER,
    HUSH_JSON_STRING,
    HUSH_JSON_ARRAY,
    HUSH_JSON_OBJECT
} hush_json_type;

typedef struct hush_json_limits {
    size_t max_bytes;   /* 0 means HUSH_JSON_DEFAULT_MAX_BYTES */
    unsigned max_depth; /* 0 means HUSH_JSON_DEFAULT_MAX_DEPTH; at most HUSH_JSON_MAX_DEPTH_LIMIT */
} hush_json_limits;

typedef struct hush_json_value hush_json_value; /* a node; owned by its arena */
typedef struct hush_json_doc hush_json_doc;     /* a root plus the arena that owns it */

/* Parse `len` bytes into a DOM allocated in `arena`. `limits` may be NULL.
 * On failure nothing useful is left in the arena (the caller may wipe it);
 * err->offset is the byte offset of the problem. */
HUSH_MUST_USE
hush_status hush_json_parse_into(hush_arena *arena, const void *text, size_t len,
                                 const hush_json_limits *limits,
                                 const hush_json_value **root, hush_error *err);

/* Parse into a fresh arena owned by the returned document. `secmem_flags`
 * are HUSH_SECMEM_* flags for that arena. */
HUSH_MUST_USE
hush_status hush_json_parse(const void *text, size_t len, const hush_json_limits *limits,
                            unsigned secmem_flags, hush_json_doc **out, hush_error *err);

/* The document's root value; NULL for NULL. */
const hush_json_value *hush_json_doc_root(const hush_json_doc *doc);
/* The arena the document owns (to add values to it); NULL for NULL. A
 * const document gives out no mutable arena, so the handle is not const. */
hush_arena *hush_json_doc_arena(hush_json_doc *doc);
/* Wipe and free the document's arena. Accepts NULL. */
void hush_json_doc_free(hush_json_doc *doc);

/* The type of a value; HUSH_JSON_NULL for a NULL pointer too. */
hush_json_type hush_json_type_of(const hush_json_value *value);
const char *hush_json_type_name(hush_json_type type); /* "object", "string", "boolean", ... */

/* Arrays and objects: number of elements or members; 0 for other types
 * and for NULL. */
size_t hush_json_length(const hush_json_value *value);

/* Array element `index`, or NULL when out of range or not an array. */
const hush_json_value *hush_json_array_get(const hush_json_value *array, size_t index);

/* Object member by key (O(log n)), or NULL when absent or not an object. */
const hush_json_value *hush_json_object_get(const hush_json_value *object,
                                            const char *key, size_t key_len);

/* Object member `index` in document order. Returns false when out of range
 * or not an object. `key`, `key_len` and `value` may each be NULL. */
bool hush_json_object_member(const hush_json_value *object, size_t index,
                             const char **key, size_t *key_len,
                             const hush_json_value **value);

/* A string's bytes (valid UTF-8, NUL-terminated, may contain NUL), or NULL
 * when the value is not a string. */
const char *hush_json_string(const hush_json_value *value, size_t *len);

/* A number's text exactly as it appeared, or NULL when not a number. */
const char *hush_json_number_text(const hush_json_value *value, size_t *len);

/* A number with no fraction and no exponent; false for anything else. */
bool hush_json_is_integer(const hush_json_value *value);

/* HUSH_E_TYPE when not a number (NULL included) or not an integer;
 * HUSH_E_LIMIT when out of range; HUSH_E_ARGUMENT when `out` is NULL. */
HUSH_MUST_USE
hush_status hush_json_int64(const hush_json_value *value, int64_t *out, hush_error *err);
/* HUSH_E_TYPE when not a number (NULL included); HUSH_E_LIMIT when it
 * overflows a double; HUSH_E_ARGUMENT when `out` is NULL. */
HUSH_MUST_USE
hush_status hush_json_double(const hush_json_value *value, double *out, hush_error *err);

/* A bool's value; false for any other type and for NULL. */
bool hush_json_bool(const hush_json_value *value);

/* Convenience for typed lookups: member `key` (NUL-terminated) of `object`
 * that must be of `type`. HUSH_E_NOT_FOUND or HUSH_E_TYPE name the key (never its value);
 * a NULL `object` is HUSH_E_TYPE, a NULL `key` or `out` HUSH_E_ARGUMENT. */
HUSH_MUST_USE
hush_status hush_json_object_get_typed(const hush_json_value *object, const char *key,
                                       hush_json_type type, const hush_json_value **out,
                                       hush_error *err);

#ifdef __cplusplus
}
#endif
#endif
