/* internal.h — what every libhushcall source shares and no caller sees (the
 * base layer): the uniform error/cleanup pattern, one-time initialisation,
 * and the bounds-checked reader all parsers use instead of raw pointer
 * arithmetic. Each layer above has its own internal header beside its
 * sources (mem/mem_internal.h, codec/codec_internal.h, ...); none of them
 * is included by a layer below it (tests/c/check_layers.py). */
#ifndef HUSHCALL_INTERNAL_H
#define HUSHCALL_INTERNAL_H

#include <locale.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/types.h>

#include "hushcall/error.h"

#define HUSH_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))

/* Fill `err` (if any) and return `code`. The format must never be given
 * plaintext, key bytes or field contents: names and sizes only. */
HUSH_MUST_USE
hush_status hush__fail(hush_error *err, hush_status code, const char *fmt, ...) HUSH_PRINTF(3, 4);
/* As hush__fail, recording the byte offset of a parse error. */
HUSH_MUST_USE
hush_status hush__fail_at(hush_error *err, hush_status code, size_t offset, const char *fmt, ...)
    HUSH_PRINTF(4, 5);
/* As hush__fail for an OpenSSL failure: appends OpenSSL's reason for the
 * most recent error and empties this thread's OpenSSL error queue. */
HUSH_MUST_USE
hush_status hush__fail_openssl(hush_error *err, hush_status code, const char *what);

/* An options struct's `version` must be one this library knows: 1 to
 * `newest`. 0 means the caller never filled the struct with its _INIT macro
 * or init function. HUSH_E_ARGUMENT naming the struct otherwise. */
HUSH_MUST_USE
hush_status hush__check_options_version(const char *struct_name, unsigned version, unsigned newest,
                                        hush_error *err);
/* The body of every hush_x_options_init: refuse a NULL `opts` or a version
 * this library does not know (leaving `opts` untouched), else copy
 * `defaults` (the struct's _INIT) over it. */
HUSH_MUST_USE
hush_status hush__options_init(void *opts, const void *defaults, size_t size,
                               const char *struct_name, unsigned version, unsigned newest,
                               hush_error *err);

/* The uniform pattern: a function declares `hush_status status = HUSH_OK;`,
 * ends with a `cleanup:` label that releases everything, and returns status. */
#define HUSH_TRY(expr)                       \
    do {                                     \
        hush_status hush__s = (expr);        \
        if (hush__s != HUSH_OK) {            \
            status = hush__s;                \
            goto cleanup;                    \
        }                                    \
    } while (0)

#define HUSH_ENSURE(cond, code, ...)                         \
    do {                                                     \
        if (!(cond)) {                                       \
            status = hush__fail(err, (code), __VA_ARGS__);   \
            goto cleanup;                                    \
        }                                                    \
    } while (0)

/* HUSH_ENSURE for a caller's pointer: NULL is HUSH_E_ARGUMENT. */
#define HUSH_ENSURE_REF(ptr, ...) HUSH_ENSURE((ptr) != NULL, HUSH_E_ARGUMENT, __VA_ARGS__)

/* Fail unconditionally (s2n's BAIL): for the end of a chain of checks. */
#define HUSH_BAIL(code, ...)                             \
    do {                                                 \
        status = hush__fail(err, (code), __VA_ARGS__);   \
        goto cleanup;                                    \
    } while (0)

/* Fail with the status a failure constructor built (a parser's fail_at,
 * a TSS decoder): for helpers that fill the error their own way. */
#define HUSH_BAIL_WITH(failure)     \
    do {                            \
        status = (failure);         \
        goto cleanup;               \
    } while (0)

/* HUSH_TRY that replaces the callee's failure with an opaque one (its
 * message too): for errors that must not tell an attacker which step
 * failed. */
#define HUSH_TRY_AS(expr, code, ...)                         \
    do {                                                     \
        if ((expr) != HUSH_OK) {                             \
            status = hush__fail(err, (code), __VA_ARGS__);   \
            goto cleanup;                                    \
        }                                                    \
    } while (0)

/* An OpenSSL call that returns <= 0 (or NULL) on failure. */
#define HUSH_OSSL(cond, what)                                          \
    do {                                                               \
        if (!(cond)) {                                                 \
            status = hush__fail_openssl(err, HUSH_E_CRYPTO, (what));   \
            goto cleanup;                                              \
        }                                                              \
    } while (0)

/* One-time, thread-safe initialisation (pthread_once): the OpenSSL secure
 * heap and a "C" locale for number formatting. Every entry point that needs
 * either calls it; it is cheap after the first call. */
HUSH_MUST_USE
hush_status hush__init(hush_error *err);
locale_t hush__c_locale(void);
bool hush__openssl_secure_heap(void);
bool hush__openssl_secure_heap_locked(void);
size_t hush__page_size(void);
/* SHA-256 and AES-256-GCM, fetched once (valid after hush__init). */
const EVP_MD *hush__sha256(void);
const EVP_CIPHER *hush__aes_256_gcm(void);
/* The SHA-3 family for ML-KEM and X-Wing, fetched once (after hush__init). */
const EVP_MD *hush__sha3_256(void);
const EVP_MD *hush__sha3_512(void);
const EVP_MD *hush__shake128(void);
const EVP_MD *hush__shake256(void);
/* EVP_MAC_CTX_new takes a non-const EVP_MAC; it only counts a reference. */
EVP_MAC *hush__hmac(void);

/* ---- bounds-checked reader ------------------------------------------- */

typedef struct hush_reader {
    const unsigned char *data;
    size_t len;
    size_t pos;
} hush_reader;

static inline void hush_reader_init(hush_reader *r, const void *data, size_t len)
{
    r->data = (const unsigned char *)data;
    r->len = len;
    r->pos = 0;
}

static inline size_t hush_reader_left(const hush_reader *r) { return r->len - r->pos; }
static inline bool hush_reader_done(const hush_reader *r) { return r->pos >= r->len; }

/* The byte at pos + ahead, or -1 past the end. */
static inline int hush_reader_peek_at(const hush_reader *r, size_t ahead)
{
    return ahead < r->len - r->pos ? r->data[r->pos + ahead] : -1;
}
static inline int hush_reader_peek(const hush_reader *r) { return hush_reader_peek_at(r, 0); }

/* Consume one byte; -1 at the end. */
static inline int hush_reader_next(hush_reader *r)
{
    return r->pos < r->len ? r->data[r->pos++] : -1;
}

/* Consume `n` bytes, pointing *out at them; false (and nothing consumed)
 * when fewer remain. */
static inline bool hush_reader_take(hush_reader *r, size_t n, const unsigned char **out)
{
    if (n > r->len - r->pos)
        return false;
    *out = r->data + r->pos;
    r->pos += n;
    return true;
}

#endif
