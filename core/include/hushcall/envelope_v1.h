/* hushcall/envelope_v1.h — NOMYO's v1 package "hybrid-aes256-rsa4096", both roles.
 *
 * Seal: a fresh AES-256 key and 96-bit nonce per message, AES-256-GCM over
 * the plaintext, the AES key wrapped with RSA-OAEP (SHA-256, MGF1-SHA-256,
 * no label) for the recipient. The package is JSON laid out byte for byte
 * as the `nomyo` client writes it (Python json.dumps key order and spacing).
 * Open: size checked before anything is decoded, strict parse, every field
 * it uses checked (the *_algorithm labels and processed_at are read as the
 * nomyo client reads them: not at all, and as received); the plaintext goes
 * only to secure memory. Every authentication
 * failure (unwrap or tag) is one opaque HUSH_E_AUTH; a structural problem is
 * HUSH_E_FORMAT naming the field, never its content. */
#ifndef HUSHCALL_ENVELOPE_V1_H
#define HUSHCALL_ENVELOPE_V1_H

#include <stddef.h>
#include <stdint.h>

#include "hushcall/error.h"
#include "hushcall/json.h"
#include "hushcall/keys.h"
#include "hushcall/secmem.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HUSH_V1_VERSION "1.0"
#define HUSH_V1_ALGORITHM "hybrid-aes256-rsa4096"
#define HUSH_V1_KEY_ALGORITHM "RSA-OAEP-SHA256"
#define HUSH_V1_PAYLOAD_ALGORITHM "AES-256-GCM"
#define HUSH_V1_KEY_BYTES 32u
#define HUSH_V1_NONCE_BYTES 12u
#define HUSH_V1_TAG_BYTES 16u
#define HUSH_V1_DEFAULT_MAX_PACKAGE_BYTES (16u * 1024u * 1024u)
/* hush_envelope_v1_seal's processed_at for "write none" (the client role). */
#define HUSH_V1_NO_PROCESSED_AT INT64_MIN

/* Seal `len` plaintext bytes for `recipient`. `processed_at` is the server
 * role's timestamp, Unix seconds, written as the last member as an integer
 * (as NOMYO's API reference documents it); HUSH_V1_NO_PROCESSED_AT writes
 * none. The package (ciphertext only) is returned in a new buffer the
 * caller frees; it is not locked, since nothing in it is secret. */
HUSH_MUST_USE
hush_status hush_envelope_v1_seal(const hush_pubkey *recipient, const void *plaintext, size_t len,
                                  int64_t processed_at, hush_secbuf **package, hush_error *err);

typedef struct hush_envelope_v1_opened {
    hush_secbuf *plaintext; /* locked; the caller frees it */
    /* The package's processed_at exactly as received, of any JSON type (a
     * number keeps its text); NULL when the package had none or null. The
     * caller frees it with hush_json_doc_free (hush_envelope_v1_opened_clear does). */
    hush_json_doc *processed_at;
} hush_envelope_v1_opened;

/* Open a package addressed to `recipient`. `max_package_bytes` 0 means
 * HUSH_V1_DEFAULT_MAX_PACKAGE_BYTES; a longer package is refused with
 * HUSH_E_LIMIT before it is parsed. On failure `out` is left empty. */
HUSH_MUST_USE
hush_status hush_envelope_v1_open(const hush_keypair *recipient, const void *package, size_t len,
                                  size_t max_package_bytes, hush_envelope_v1_opened *out,
                                  hush_error *err);

/* Free the plaintext and processed_at and clear the struct. Accepts NULL. */
void hush_envelope_v1_opened_clear(hush_envelope_v1_opened *opened);

#ifdef __cplusplus
}
#endif
#endif
