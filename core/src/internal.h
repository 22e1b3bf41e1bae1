/* internal.h — what every libhushcall source shares and no caller sees:
 * the uniform error/cleanup pattern, one-time initialisation, and the
 * bounds-checked reader all parsers use instead of raw pointer arithmetic. */
#ifndef HUSHCALL_INTERNAL_H
#define HUSHCALL_INTERNAL_H

#include <locale.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/types.h>

#include "hushcall/envelope_v1.h"
#include "hushcall/error.h"
#include "hushcall/json.h"
#include "hushcall/keys.h"

#define HUSH_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))

/* Fill `err` (if any) and return `code`. The format must never be given
 * plaintext, key bytes or field contents: names and sizes only. */
hush_status hush__fail(hush_error *err, hush_status code, const char *fmt, ...) HUSH_PRINTF(3, 4);
/* As hush__fail, recording the byte offset of a parse error. */
hush_status hush__fail_at(hush_error *err, hush_status code, size_t offset, const char *fmt, ...)
    HUSH_PRINTF(4, 5);
/* As hush__fail for an OpenSSL failure: appends OpenSSL's reason for the
 * most recent error and empties this thread's OpenSSL error queue. */
hush_status hush__fail_openssl(hush_error *err, hush_status code, const char *what);

/* An options struct's `version` must be one this library knows: 1 to
 * `newest`. 0 means the caller never filled the struct with its _INIT macro
 * or init function. HUSH_E_ARGUMENT naming the struct otherwise. */
hush_status hush__check_options_version(const char *struct_name, unsigned version, unsigned newest,
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
hush_status hush__init(hush_error *err);
locale_t hush__c_locale(void);
bool hush__openssl_secure_heap(void);
size_t hush__page_size(void);
/* SHA-256 and AES-256-GCM, fetched once (valid after hush__init). */
const EVP_MD *hush__sha256(void);
const EVP_CIPHER *hush__aes_256_gcm(void);

/* The OpenSSL key behind a handle (keys.c), borrowed: valid while the
 * handle is. For the envelope modules, which need the raw EVP_PKEY. */
EVP_PKEY *hush__keypair_pkey(const hush_keypair *kp);
EVP_PKEY *hush__pubkey_pkey(const hush_pubkey *pk);

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

/* ---- building JSON values (json.c) ------------------------------------- */

/* Values made directly in an arena (for documents hushcall extends, such
 * as a response with `_metadata`). Keys and values are borrowed: they must
 * live in the same arena. */
typedef struct hush__json_member_spec {
    const char *key;
    size_t key_len;
    const hush_json_value *value;
} hush__json_member_spec;

hush_status hush__json_new_string(hush_arena *arena, const char *s, size_t len,
                                  const hush_json_value **out, hush_error *err);
/* HUSH_JSON_BOOL (with `value`) or HUSH_JSON_NULL. */
hush_status hush__json_new_literal(hush_arena *arena, hush_json_type type, bool value,
                                   const hush_json_value **out, hush_error *err);
/* An object of `count` members in that order; equal keys are refused. */
hush_status hush__json_new_object(hush_arena *arena, const hush__json_member_spec *members,
                                  size_t count, const hush_json_value **out, hush_error *err);
/* A document of `root` whose memory is `arena`; the document owns the arena. */
hush_status hush__json_doc_adopt(hush_arena *arena, const hush_json_value *root,
                                 hush_json_doc **out, hush_error *err);

/* ---- envelope_v1.c, for the engine -------------------------------------- */

/* hush_envelope_v1_seal with the message key made in `key`: secure space
 * the caller keeps (a worker's), zeroed before returning. */
hush_status hush__envelope_v1_seal_with(const hush_pubkey *recipient, const void *plaintext,
                                        size_t len, int64_t processed_at,
                                        unsigned char key[HUSH_V1_KEY_BYTES],
                                        hush_secbuf **package, hush_error *err);


#define HUSH_V1_DIGEST_BYTES 32u

/* hush_envelope_v1_open, decrypting into `arena` instead of a new buffer,
 * so an answer, its plaintext and its document share one locked region.
 * `*processed_at` (when processed_at is not NULL) is the package's
 * processed_at, also in `arena`; NULL when absent or null.
 * `wrapped_key_digest` (NULL for none) receives SHA-256 of the wrapped
 * message key once the package has opened: fresh for every message, and
 * no one without the message key can make another package that opens
 * with it, so it names this message (the gateway's replay key). */
hush_status hush__envelope_v1_open_in(const hush_keypair *recipient, const void *package,
                                      size_t len, size_t max_package_bytes, hush_arena *arena,
                                      unsigned char **plaintext, size_t *plaintext_len,
                                      const hush_json_value **processed_at,
                                      unsigned char wrapped_key_digest[HUSH_V1_DIGEST_BYTES],
                                      hush_error *err);

/* ---- credentials on the ordinary heap (secmem.c) ------------------------ */

/* The one wipe for a credential held in a C string (an API key, a key
 * password, a header line carrying one): zero it up to its NUL. */
void hush__wipe_string(char *s);
/* Wipe, then free: every heap copy of a credential ends here. Accepts NULL. */
void hush__free_secret_string(char *s);
/* Wipe every line of a curl header list (curl_slist_append copies the
 * line, an "Authorization: Bearer" one included), then free the list
 * (engine.c, where the client's lists are built; the upstream's too). */
struct curl_slist;
void hush__free_header_list(struct curl_slist *list);

/* ---- files (secmem.c) -------------------------------------------------- */

/* Read the rest of `fd` into a new buffer of `secmem_flags`, refusing more
 * than `max` bytes even if the file grows while it is read. Messages name
 * the file as `what` (a path to show, or a description). */
hush_status hush__secbuf_read_fd(int fd, const char *what, size_t max, unsigned secmem_flags,
                                 hush_secbuf **out, hush_error *err);

/* ---- JSON lexical rules (json_text.c) ---------------------------------- */

/* Consume one UTF-8 character and return its code point; -1 when it is
 * malformed (bad lead or continuation byte, overlong, an encoded surrogate,
 * past U+10FFFF, truncated) or at the end of input. */
int32_t hush__utf8_next(hush_reader *r);

/* Consume one number as RFC 8259 §6 spells it. NULL when well formed, else
 * the reason, with the reader left on the offending byte. */
const char *hush__json_scan_number(hush_reader *r);

/* The value of one hex digit, either case; -1 for anything else. */
int hush__hex_digit(int c);

#endif
