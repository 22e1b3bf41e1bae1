/* hushcall/json_writer.h — emit JSON straight into a secure buffer.
 *
 * The bindings walk their native objects and call these functions, so a
 * request is serialized into locked memory without passing through the
 * interpreter's heap. The writer checks structure (keys only inside
 * objects, values after keys, balanced nesting), validates UTF-8, escapes
 * correctly, writes doubles in their shortest round-trip form and refuses
 * NaN and infinities. On any error the writer is poisoned: later calls fail
 * with the first error, so a half-written document is never mistaken for a
 * whole one. */
#ifndef HUSHCALL_JSON_WRITER_H
#define HUSHCALL_JSON_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hushcall/error.h"
#include "hushcall/json.h"
#include "hushcall/secmem.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Output style flags. */
#define HUSH_JSON_WRITE_COMPACT 0u
#define HUSH_JSON_WRITE_SPACED 1u /* ", " and ": " separators, as Python's json.dumps */
#define HUSH_JSON_WRITE_ASCII 2u  /* escape non-ASCII as \uXXXX, as json.dumps' ensure_ascii */
#define HUSH_JSON_WRITE_PYTHON (HUSH_JSON_WRITE_SPACED | HUSH_JSON_WRITE_ASCII)

typedef struct hush_json_writer hush_json_writer;

/* A writer appending to `out` (borrowed; must outlive the writer). Nesting
 * deeper than `max_depth` (0: HUSH_JSON_DEFAULT_MAX_DEPTH) fails with
 * HUSH_E_LIMIT; a max_depth over HUSH_JSON_MAX_DEPTH_LIMIT is HUSH_E_ARGUMENT. */
HUSH_MUST_USE
hush_status hush_json_writer_new(hush_secbuf *out, unsigned flags, unsigned max_depth,
                                 hush_json_writer **out_writer, hush_error *err);
void hush_json_writer_free(hush_json_writer *writer); /* accepts NULL */

HUSH_MUST_USE
hush_status hush_json_write_object_begin(hush_json_writer *w, hush_error *err);
HUSH_MUST_USE
hush_status hush_json_write_object_end(hush_json_writer *w, hush_error *err);
HUSH_MUST_USE
hush_status hush_json_write_array_begin(hush_json_writer *w, hush_error *err);
HUSH_MUST_USE
hush_status hush_json_write_array_end(hush_json_writer *w, hush_error *err);

/* A member key; must be followed by exactly one value. */
HUSH_MUST_USE
hush_status hush_json_write_key(hush_json_writer *w, const char *key, size_t len, hush_error *err);

HUSH_MUST_USE
hush_status hush_json_write_string(hush_json_writer *w, const char *s, size_t len, hush_error *err);
HUSH_MUST_USE
hush_status hush_json_write_int64(hush_json_writer *w, int64_t v, hush_error *err);
HUSH_MUST_USE
hush_status hush_json_write_uint64(hush_json_writer *w, uint64_t v, hush_error *err);
/* Written exactly as Python's repr() writes a float (shortest round trip,
 * "1.0" not "1", "1e+16" past 16 digits); NaN and infinities are refused. */
HUSH_MUST_USE
hush_status hush_json_write_double(hush_json_writer *w, double v, hush_error *err);
HUSH_MUST_USE
hush_status hush_json_write_bool(hush_json_writer *w, bool v, hush_error *err);
HUSH_MUST_USE
hush_status hush_json_write_null(hush_json_writer *w, hush_error *err);

/* A number given as text (big integers from Python); the text must match
 * the RFC 8259 number grammar. */
HUSH_MUST_USE
hush_status hush_json_write_number_text(hush_json_writer *w, const char *text, size_t len,
                                        hush_error *err);

/* A whole DOM subtree. */
HUSH_MUST_USE
hush_status hush_json_write_value(hush_json_writer *w, const hush_json_value *v, hush_error *err);

/* True once a single top-level value has been written completely; false
 * for NULL. */
bool hush_json_writer_complete(const hush_json_writer *w);

#ifdef __cplusplus
}
#endif
#endif
