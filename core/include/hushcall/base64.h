/* hushcall/base64.h — standard-alphabet base64 (RFC 4648 §4), strict.
 *
 * Decoding accepts only canonical input: length a multiple of 4, '='
 * padding only at the end, no whitespace or other characters, and unused
 * bits of the last group zero. Encoding and decoding run in time that
 * depends only on the length (no table lookups indexed by secret bytes),
 * because wrapped keys and key files pass through here.
 * Callers decode secret bytes into secure memory by passing a buffer from
 * hush_arena or hush_secbuf as `out`. */
#ifndef HUSHCALL_BASE64_H
#define HUSHCALL_BASE64_H

#include <stddef.h>

#include "hushcall/error.h"
#include "hushcall/secmem.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Encoded length of `len` bytes (without NUL); SIZE_MAX on overflow. */
size_t hush_base64_encoded_len(size_t len);
/* An upper bound on the decoded length of `len` characters. */
size_t hush_base64_decoded_max(size_t len);

/* Encode into `out` (capacity `cap`, needs encoded_len + 1 for the NUL). */
HUSH_MUST_USE
hush_status hush_base64_encode(const void *in, size_t len, char *out, size_t cap,
                               size_t *out_len, hush_error *err);

/* Encode by appending to a secure buffer (no NUL). */
HUSH_MUST_USE
hush_status hush_base64_encode_append(const void *in, size_t len, hush_secbuf *out,
                                      hush_error *err);

/* Decode into `out` (capacity `cap` >= hush_base64_decoded_max(len)).
 * HUSH_E_BASE64 with err->offset at the first bad character. */
HUSH_MUST_USE
hush_status hush_base64_decode(const char *in, size_t len, unsigned char *out, size_t cap,
                               size_t *out_len, hush_error *err);

#ifdef __cplusplus
}
#endif
#endif
