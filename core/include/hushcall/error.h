/* hushcall/error.h — status codes and the explicit error out-parameter.
 *
 * Every fallible hushcall function returns a hush_status and takes a
 * `hush_error *err` as its last parameter (NULL when the caller does not
 * want details). There is no global or thread-local "last error": the core
 * stays reentrant and a callback cannot clobber a caller's error.
 * Messages never contain plaintext, key bytes or the content of a field. */
#ifndef HUSHCALL_ERROR_H
#define HUSHCALL_ERROR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum hush_status {
    HUSH_OK = 0,
    HUSH_E_ARGUMENT,    /* the caller passed something unusable (NULL, bad flag) */
    HUSH_E_NOMEM,       /* memory (or secure memory) could not be had */
    HUSH_E_LIMIT,       /* a size or depth limit was exceeded */
    HUSH_E_JSON,        /* malformed JSON text; err->offset says where */
    HUSH_E_TYPE,        /* a JSON value is not of the type asked for */
    HUSH_E_NOT_FOUND,   /* no such key, index or file */
    HUSH_E_BASE64,      /* malformed base64 */
    HUSH_E_KEY,         /* not a usable key: malformed, not RSA, too small */
    HUSH_E_PASSWORD,    /* a private key needs a password, or the one given is wrong */
    HUSH_E_PERMISSIONS, /* a key file is readable by others, or is a symlink */
    HUSH_E_IO,          /* a file operation failed */
    HUSH_E_EXISTS,      /* refusing to overwrite something that exists */
    HUSH_E_CRYPTO,      /* the crypto library failed (not an authentication failure) */
    HUSH_E_FORMAT,      /* an envelope field is missing or malformed */
    HUSH_E_UNSUPPORTED, /* an envelope version or algorithm we do not speak */
    HUSH_E_AUTH,        /* authentication failed; deliberately says nothing more */
    HUSH_E_PIN,         /* a pinned server key or TLS key did not match */
    HUSH_E_ATTESTATION, /* a required TPM attestation is missing or did not verify */
    HUSH_E_BAD_REQUEST, /* HTTP 400 */
    HUSH_E_UNAUTHORIZED, /* HTTP 401 */
    HUSH_E_FORBIDDEN,   /* HTTP 403 */
    HUSH_E_RATE_LIMITED, /* HTTP 429 */
    HUSH_E_SERVER,      /* HTTP 500 */
    HUSH_E_UNAVAILABLE, /* HTTP 503 */
    HUSH_E_HTTP,        /* any other HTTP status; err->http_status says which */
    HUSH_E_CONNECTION,  /* could not connect, or the connection failed */
    HUSH_E_TIMEOUT,     /* a connect or transfer timeout expired */
    HUSH_E_TLS,         /* TLS handshake or certificate verification failed */
    HUSH_E_CIRCUIT_OPEN, /* failing fast after repeated failures; retry after the cool-down */
    HUSH_E_CANCELLED,   /* the call was cancelled, or its engine shut down */
    HUSH_E_TRUNCATED,   /* a streamed answer ended without its end marker */
    HUSH_E_INTERNAL     /* a bug in hushcall */
} hush_status;

/* Every function returning a hush_status is declared HUSH_MUST_USE: a
 * status dropped by accident is a compile error under -Werror. To ignore
 * one on purpose, say why in a comment and write HUSH_IGNORE(call): GCC
 * does not let a bare (void) cast silence the attribute, so the macro
 * stores the status and (void)-casts the variable. */
#if defined(__GNUC__) || defined(__clang__)
#define HUSH_MUST_USE __attribute__((warn_unused_result))
#else
#define HUSH_MUST_USE
#endif

#define HUSH_IGNORE(call)                          \
    do {                                           \
        hush_status hush_ignored_status_ = (call); \
        (void)hush_ignored_status_;                \
    } while (0)

#define HUSH_ERROR_MESSAGE_MAX 256

typedef struct hush_error {
    hush_status code;
    int http_status;      /* HTTP status where one was received, else 0 */
    int64_t offset;       /* byte offset into the input for parse errors, else -1 */
    char message[HUSH_ERROR_MESSAGE_MAX];
} hush_error;

/* A short, static description of a status code ("authentication failed"). */
const char *hush_strerror(hush_status code);

/* The status as a short, stable name for programs ("auth", "rate_limited",
 * "limit"): what the bindings call an error's kind. "unknown" for a value
 * that is not a hush_status. */
const char *hush_status_kind(hush_status code);

/* Reset an error to HUSH_OK with an empty message. Accepts NULL. */
void hush_error_clear(hush_error *err);

#ifdef __cplusplus
}
#endif
#endif
