/* envelope_v1.c — NOMYO's v1 package: AES-256-GCM payload, RSA-OAEP-SHA256 wrapped key.
 * Sealing writes the package exactly as the `nomyo` client's json.dumps does;
 * opening checks every field and keeps the AES key and the plaintext in
 * secure memory. Anything that means "not authentic for this key" collapses
 * into one HUSH_E_AUTH, so the error says nothing an attacker can use. */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "hushcall/base64.h"
#include "hushcall/envelope_v1.h"
#include "hushcall/json.h"
#include "hushcall/json_writer.h"
#include "internal.h"
#include "crypto/crypto_internal.h"

#define AUTH_FAILED "decryption failed: the package is not authentic for this key"
/* EVP lengths are ints: feed large payloads in slices well below INT_MAX. */
#define GCM_SLICE (1u << 30)

/* ---- RSA-OAEP key wrapping ------------------------------------------- */

HUSH_MUST_USE
static hush_status oaep_ctx(EVP_PKEY *pkey, bool encrypt, EVP_PKEY_CTX **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_PKEY_CTX *ctx = NULL;
    HUSH_TRY(hush__init(err)); /* the pre-fetched digest */
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    HUSH_OSSL(ctx != NULL, "RSA context");
    HUSH_OSSL((encrypt ? EVP_PKEY_encrypt_init(ctx) : EVP_PKEY_decrypt_init(ctx)) > 0, "RSA init");
    HUSH_OSSL(EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) > 0, "OAEP padding");
    HUSH_OSSL(EVP_PKEY_CTX_set_rsa_oaep_md(ctx, hush__sha256()) > 0, "OAEP digest");
    HUSH_OSSL(EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, hush__sha256()) > 0, "OAEP MGF1 digest");
    *out = ctx;
    ctx = NULL;
cleanup:
    EVP_PKEY_CTX_free(ctx);
    return status;
}

/* ---- sealing ---------------------------------------------------------- */

HUSH_MUST_USE
static hush_status gcm_encrypt(const unsigned char *key, const unsigned char *nonce,
                               const unsigned char *plaintext, size_t len,
                               unsigned char *ciphertext, unsigned char *tag, hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int outl;
    HUSH_OSSL(ctx != NULL, "AES-GCM context");
    HUSH_OSSL(EVP_EncryptInit_ex(ctx, hush__aes_256_gcm(), NULL, key, nonce) == 1, "AES-GCM init");
    for (size_t done = 0; done < len;) {
        size_t slice = len - done < GCM_SLICE ? len - done : GCM_SLICE;
        HUSH_OSSL(EVP_EncryptUpdate(ctx, ciphertext + done, &outl, plaintext + done, (int)slice) == 1,
                  "AES-GCM encrypt");
        done += slice;
    }
    HUSH_OSSL(EVP_EncryptFinal_ex(ctx, ciphertext + len, &outl) == 1, "AES-GCM final");
    HUSH_OSSL(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, HUSH_V1_TAG_BYTES, tag) == 1,
              "AES-GCM tag");
cleanup:
    EVP_CIPHER_CTX_free(ctx); /* cleanses the key schedule */
    return status;
}

HUSH_MUST_USE
static hush_status append_str(hush_secbuf *out, const char *s, hush_error *err)
{
    return hush_secbuf_append(out, s, strlen(s), err);
}

/* The package, key for key and separator for separator as nomyo's
 * json.dumps(encrypted_package) writes it. */
HUSH_MUST_USE
static hush_status write_package(hush_secbuf *out, const unsigned char *ciphertext, size_t ct_len,
                                 const unsigned char *nonce, const unsigned char *tag,
                                 const unsigned char *wrapped, size_t wrapped_len,
                                 int64_t processed_at, hush_error *err)
{
    hush_status status = HUSH_OK;
    char timestamp[48]; /* the member and the longest int64 */
    HUSH_TRY(append_str(out, "{\"version\": \"" HUSH_V1_VERSION "\", \"algorithm\": \""
                             HUSH_V1_ALGORITHM "\", \"encrypted_payload\": {\"ciphertext\": \"", err));
    HUSH_TRY(hush_base64_encode_append(ciphertext, ct_len, out, err));
    HUSH_TRY(append_str(out, "\", \"nonce\": \"", err));
    HUSH_TRY(hush_base64_encode_append(nonce, HUSH_V1_NONCE_BYTES, out, err));
    HUSH_TRY(append_str(out, "\", \"tag\": \"", err));
    HUSH_TRY(hush_base64_encode_append(tag, HUSH_V1_TAG_BYTES, out, err));
    HUSH_TRY(append_str(out, "\"}, \"encrypted_aes_key\": \"", err));
    HUSH_TRY(hush_base64_encode_append(wrapped, wrapped_len, out, err));
    HUSH_TRY(append_str(out, "\", \"key_algorithm\": \"" HUSH_V1_KEY_ALGORITHM
                             "\", \"payload_algorithm\": \"" HUSH_V1_PAYLOAD_ALGORITHM "\"", err));
    if (processed_at != HUSH_V1_NO_PROCESSED_AT) {
        snprintf(timestamp, sizeof timestamp, ", \"processed_at\": %" PRId64, processed_at);
        HUSH_TRY(append_str(out, timestamp, err));
    }
    HUSH_TRY(append_str(out, "}", err));
cleanup:
    return status;
}

hush_status hush__envelope_v1_seal_with(const hush_pubkey *recipient, const void *plaintext,
                                        size_t len, int64_t processed_at,
                                        unsigned char key[HUSH_V1_KEY_BYTES],
                                        hush_secbuf **package, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *out = NULL;
    EVP_PKEY_CTX *wrap = NULL;
    unsigned char *ciphertext = NULL, *wrapped = NULL;
    unsigned char nonce[HUSH_V1_NONCE_BYTES], tag[HUSH_V1_TAG_BYTES];
    size_t wrapped_len = 0;

    HUSH_ENSURE(package != NULL && recipient != NULL && (plaintext != NULL || len == 0),
                HUSH_E_ARGUMENT, "hush_envelope_v1_seal: NULL argument");
    *package = NULL;
    HUSH_ENSURE(len <= SIZE_MAX / 2, HUSH_E_LIMIT, "plaintext too large");
    HUSH_TRY(hush__init(err));

    /* A fresh key and nonce per message; the key only in secure memory. */
    HUSH_OSSL(RAND_priv_bytes(key, HUSH_V1_KEY_BYTES) == 1, "random key");
    HUSH_OSSL(RAND_bytes(nonce, sizeof nonce) == 1, "random nonce");

    ciphertext = malloc(len + 1); /* ciphertext is not secret */
    HUSH_ENSURE(ciphertext != NULL, HUSH_E_NOMEM, "out of memory for %zu bytes of ciphertext", len);
    HUSH_TRY(gcm_encrypt(key, nonce, plaintext, len, ciphertext, tag, err));

    HUSH_TRY(oaep_ctx(hush__pubkey_pkey(recipient), true, &wrap, err));
    HUSH_OSSL(EVP_PKEY_encrypt(wrap, NULL, &wrapped_len, key, HUSH_V1_KEY_BYTES) > 0,
              "RSA-OAEP size");
    wrapped = malloc(wrapped_len);
    HUSH_ENSURE(wrapped != NULL, HUSH_E_NOMEM, "out of memory");
    HUSH_OSSL(EVP_PKEY_encrypt(wrap, wrapped, &wrapped_len, key, HUSH_V1_KEY_BYTES) > 0,
              "RSA-OAEP wrap");

    size_t estimate = hush_base64_encoded_len(len) + hush_base64_encoded_len(wrapped_len) + 512;
    HUSH_TRY(hush_secbuf_new(estimate, 0, HUSH_SECMEM_PUBLIC, &out, err));
    HUSH_TRY(write_package(out, ciphertext, len, nonce, tag, wrapped, wrapped_len, processed_at,
                           err));
    *package = out;
    out = NULL;
cleanup:
    hush_memzero(key, HUSH_V1_KEY_BYTES);
    hush_secbuf_free(out);
    EVP_PKEY_CTX_free(wrap);
    free(ciphertext);
    free(wrapped);
    return status;
}

hush_status hush_envelope_v1_seal(const hush_pubkey *recipient, const void *plaintext, size_t len,
                                  int64_t processed_at, hush_secbuf **package, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *key = NULL;
    if (package != NULL)
        *package = NULL;
    HUSH_TRY(hush_secbuf_new(HUSH_V1_KEY_BYTES, HUSH_V1_KEY_BYTES, HUSH_SECMEM_DEFAULT, &key,
                             err));
    HUSH_TRY(hush__envelope_v1_seal_with(recipient, plaintext, len, processed_at,
                                         hush_secbuf_data(key), package, err));
cleanup:
    hush_secbuf_free(key);
    return status;
}

/* ---- opening ---------------------------------------------------------- */

/* The decoded, not yet authenticated fields of a package. */
typedef struct v1_fields {
    unsigned char *ciphertext; /* malloc'd; ciphertext is not secret */
    size_t ciphertext_len;
    unsigned char *wrapped;
    size_t wrapped_len;
    unsigned char nonce[HUSH_V1_NONCE_BYTES];
    unsigned char tag[HUSH_V1_TAG_BYTES];
    hush_secbuf *processed_at; /* its JSON text (public); NULL when absent or null */
} v1_fields;

HUSH_MUST_USE
static hush_status require_string(const hush_json_value *obj, const char *name,
                                  const char **s, size_t *len, hush_error *err)
{
    hush_status status = HUSH_OK;
    const hush_json_value *v;
    hush_status found = hush_json_object_get_typed(obj, name, HUSH_JSON_STRING, &v, err);
    HUSH_ENSURE(found == HUSH_OK, HUSH_E_FORMAT, "envelope field '%s' is %s", name,
                found == HUSH_E_NOT_FOUND ? "missing" : "not a string");
    *s = hush_json_string(v, len);
cleanup:
    return status;
}

/* A field that must hold exactly `expected`. */
HUSH_MUST_USE
static hush_status require_constant(const hush_json_value *obj, const char *name,
                                    const char *expected, hush_error *err)
{
    hush_status status = HUSH_OK;
    const char *s = NULL;
    size_t len;
    HUSH_TRY(require_string(obj, name, &s, &len, err));
    HUSH_ENSURE(len == strlen(expected) && memcmp(s, expected, len) == 0, HUSH_E_UNSUPPORTED,
                "envelope field '%s' names an unsupported value (expected \"%s\")", name,
                expected);
cleanup:
    return status;
}

/* A base64 field of exactly `want` bytes (nonce, tag). */
HUSH_MUST_USE
static hush_status decode_fixed(const hush_json_value *obj, const char *name, unsigned char *out,
                                size_t want, hush_error *err)
{
    hush_status status = HUSH_OK;
    const char *s = NULL;
    size_t len, decoded;
    unsigned char scratch[2 * HUSH_V1_TAG_BYTES];
    HUSH_TRY(require_string(obj, name, &s, &len, err));
    HUSH_ENSURE(len == hush_base64_encoded_len(want) && want <= sizeof scratch, HUSH_E_FORMAT,
                "envelope field '%s' must be %zu bytes", name, want);
    HUSH_TRY_AS(hush_base64_decode(s, len, scratch, sizeof scratch, &decoded, err),
                HUSH_E_FORMAT, "envelope field '%s' is not valid base64", name);
    HUSH_ENSURE(decoded == want, HUSH_E_FORMAT, "envelope field '%s' must be %zu bytes", name,
                want);
    memcpy(out, scratch, want);
cleanup:
    return status;
}

/* A base64 field of any length into a new malloc'd buffer (not secret). */
HUSH_MUST_USE
static hush_status decode_alloc(const hush_json_value *obj, const char *name, unsigned char **out,
                                size_t *out_len, hush_error *err)
{
    const char *s = NULL;
    size_t len;
    hush_status status = HUSH_OK;
    HUSH_TRY(require_string(obj, name, &s, &len, err));
    size_t cap = hush_base64_decoded_max(len) + 1;
    *out = malloc(cap);
    HUSH_ENSURE(*out != NULL, HUSH_E_NOMEM, "out of memory for envelope field '%s'", name);
    HUSH_TRY_AS(hush_base64_decode(s, len, *out, cap, out_len, err), HUSH_E_FORMAT,
                "envelope field '%s' is not valid base64", name);
cleanup:
    return status;
}

/* processed_at is not authenticated and never interpreted: it is kept as the
 * JSON text it arrived as, whatever its type, as the nomyo client keeps it. */
HUSH_MUST_USE
static hush_status keep_processed_at(const hush_json_value *root, v1_fields *f, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_json_writer *w = NULL;
    const hush_json_value *ts = hush_json_object_get(root, "processed_at", 12);
    if (ts == NULL || hush_json_type_of(ts) == HUSH_JSON_NULL)
        goto cleanup;
    HUSH_TRY(hush_secbuf_new(64, 0, HUSH_SECMEM_PUBLIC, &f->processed_at, err));
    HUSH_TRY(hush_json_writer_new(f->processed_at, HUSH_JSON_WRITE_COMPACT, 0, &w, err));
    HUSH_TRY(hush_json_write_value(w, ts, err));
cleanup:
    hush_json_writer_free(w);
    return status;
}

/* key_algorithm and payload_algorithm are labels the nomyo client never
 * reads: `algorithm` alone fixes the cipher suite, so they are not checked. */
HUSH_MUST_USE
static hush_status parse_package(const hush_json_value *root, v1_fields *f, hush_error *err)
{
    hush_status status = HUSH_OK;
    const hush_json_value *payload;

    HUSH_ENSURE(hush_json_type_of(root) == HUSH_JSON_OBJECT, HUSH_E_FORMAT,
                "envelope is not a JSON object");
    HUSH_TRY(require_constant(root, "version", HUSH_V1_VERSION, err));
    HUSH_TRY(require_constant(root, "algorithm", HUSH_V1_ALGORITHM, err));

    if (hush_json_object_get_typed(root, "encrypted_payload", HUSH_JSON_OBJECT, &payload, err) !=
        HUSH_OK)
        HUSH_BAIL(HUSH_E_FORMAT, "envelope field 'encrypted_payload' is %s",
                  hush_json_object_get(root, "encrypted_payload", 17) ? "not an object"
                                                                       : "missing");
    HUSH_TRY(decode_fixed(payload, "nonce", f->nonce, HUSH_V1_NONCE_BYTES, err));
    HUSH_TRY(decode_fixed(payload, "tag", f->tag, HUSH_V1_TAG_BYTES, err));
    HUSH_TRY(decode_alloc(payload, "ciphertext", &f->ciphertext, &f->ciphertext_len, err));
    HUSH_TRY(decode_alloc(root, "encrypted_aes_key", &f->wrapped, &f->wrapped_len, err));
    HUSH_TRY(keep_processed_at(root, f, err));
cleanup:
    return status;
}

/* Unwrap the AES key into `key` (rsa_bytes of secure scratch). Anything
 * that means "not for this key" is the one opaque failure. */
HUSH_MUST_USE
static hush_status unwrap_key(EVP_PKEY *pkey, const v1_fields *f, unsigned char *key,
                              size_t rsa_bytes, hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_PKEY_CTX *ctx = NULL;
    size_t key_len = rsa_bytes;

    HUSH_ENSURE(f->wrapped_len == rsa_bytes, HUSH_E_AUTH, AUTH_FAILED);
    HUSH_TRY(oaep_ctx(pkey, false, &ctx, err));
    if (EVP_PKEY_decrypt(ctx, key, &key_len, f->wrapped, f->wrapped_len) <= 0 ||
        key_len != HUSH_V1_KEY_BYTES) {
        ERR_clear_error();
        status = hush__fail(err, HUSH_E_AUTH, AUTH_FAILED);
    }
cleanup:
    EVP_PKEY_CTX_free(ctx);
    return status;
}

HUSH_MUST_USE
static hush_status gcm_decrypt(const unsigned char *key, const v1_fields *f, unsigned char *out,
                               hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    unsigned char tag[HUSH_V1_TAG_BYTES];
    int outl;

    memcpy(tag, f->tag, sizeof tag);
    HUSH_OSSL(ctx != NULL, "AES-GCM context");
    HUSH_OSSL(EVP_DecryptInit_ex(ctx, hush__aes_256_gcm(), NULL, key, f->nonce) == 1,
              "AES-GCM init");
    for (size_t done = 0; done < f->ciphertext_len;) {
        size_t left = f->ciphertext_len - done, slice = left < GCM_SLICE ? left : GCM_SLICE;
        HUSH_OSSL(EVP_DecryptUpdate(ctx, out + done, &outl, f->ciphertext + done, (int)slice) == 1,
                  "AES-GCM decrypt");
        done += slice;
    }
    HUSH_OSSL(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, HUSH_V1_TAG_BYTES, tag) == 1,
              "AES-GCM tag");
    if (EVP_DecryptFinal_ex(ctx, out + f->ciphertext_len, &outl) != 1) {
        ERR_clear_error();
        hush_memzero(out, f->ciphertext_len);
        status = hush__fail(err, HUSH_E_AUTH, AUTH_FAILED);
    }
cleanup:
    EVP_CIPHER_CTX_free(ctx);
    return status;
}

/* The parser's error restated as HUSH_E_FORMAT: its offset kept, the
 * message saying which layer failed. */
HUSH_MUST_USE
static hush_status not_valid_json(hush_error *err)
{
    if (err == NULL)
        return HUSH_E_FORMAT;
    char reason[HUSH_ERROR_MESSAGE_MAX];
    memcpy(reason, err->message, sizeof reason);
    reason[sizeof reason - 1] = '\0';
    int64_t offset = err->offset;
    hush_status status = hush__fail(err, HUSH_E_FORMAT, "envelope is not valid JSON: %.200s",
                                    reason);
    err->offset = offset;
    return status;
}

/* Parse and check a package into its decoded (public) fields. */
HUSH_MUST_USE
static hush_status read_package(const void *package, size_t len, size_t max, v1_fields *f,
                                hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_json_doc *doc = NULL;
    HUSH_ENSURE(len <= max, HUSH_E_LIMIT, "envelope of %zu bytes exceeds the limit of %zu bytes",
                len, max);
    /* The package holds only ciphertext: ordinary memory will do. */
    hush_json_limits limits = {.max_bytes = max}; /* the default depth, 64 */
    if (hush_json_parse(package, len, &limits, HUSH_SECMEM_PUBLIC, &doc, err) != HUSH_OK)
        HUSH_BAIL_WITH(not_valid_json(err));
    HUSH_TRY(parse_package(hush_json_doc_root(doc), f, err));
cleanup:
    hush_json_doc_free(doc);
    return status;
}

/* The secure space opening `f` needs: the plaintext, then scratch for the
 * unwrapped key (zeroed as soon as the payload is decrypted). */
static size_t open_space(const hush_keypair *recipient, const v1_fields *f)
{
    return f->ciphertext_len + (size_t)EVP_PKEY_get_size(hush__keypair_pkey(recipient)) + 1;
}

HUSH_MUST_USE
static hush_status decrypt_into(const hush_keypair *recipient, const v1_fields *f,
                                unsigned char *space, hush_error *err)
{
    EVP_PKEY *pkey = hush__keypair_pkey(recipient);
    size_t rsa_bytes = (size_t)EVP_PKEY_get_size(pkey);
    unsigned char *key = space + f->ciphertext_len;
    hush_status status = HUSH_OK;
    HUSH_TRY(unwrap_key(pkey, f, key, rsa_bytes, err));
    HUSH_TRY(gcm_decrypt(key, f, space, err));
cleanup:
    hush_memzero(key, rsa_bytes);
    return status;
}

static void clear_fields(v1_fields *f)
{
    free(f->ciphertext);
    free(f->wrapped);
    hush_secbuf_free(f->processed_at);
}

hush_status hush_envelope_v1_open(const hush_keypair *recipient, const void *package, size_t len,
                                  size_t max_package_bytes, hush_envelope_v1_opened *out,
                                  hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *plaintext = NULL;
    v1_fields f = {0};
    size_t max = max_package_bytes ? max_package_bytes : HUSH_V1_DEFAULT_MAX_PACKAGE_BYTES;

    HUSH_ENSURE(out != NULL && recipient != NULL && (package != NULL || len == 0), HUSH_E_ARGUMENT,
                "hush_envelope_v1_open: NULL argument");
    memset(out, 0, sizeof *out);
    HUSH_TRY(read_package(package, len, max, &f, err));
    HUSH_TRY(hush_secbuf_new(open_space(recipient, &f), 0, HUSH_SECMEM_DEFAULT, &plaintext, err));
    HUSH_TRY(decrypt_into(recipient, &f, hush_secbuf_data(plaintext), err));
    HUSH_TRY(hush_secbuf_set_len(plaintext, f.ciphertext_len, err));
    if (f.processed_at != NULL)
        HUSH_TRY(hush_json_parse(hush_secbuf_data(f.processed_at), hush_secbuf_len(f.processed_at),
                                 NULL, HUSH_SECMEM_DEFAULT, &out->processed_at, err));
    out->plaintext = plaintext;
    plaintext = NULL;
cleanup:
    if (status != HUSH_OK && out != NULL)
        hush_envelope_v1_opened_clear(out);
    hush_secbuf_free(plaintext);
    clear_fields(&f);
    return status;
}

hush_status hush__envelope_v1_open_in(const hush_keypair *recipient, const void *package,
                                      size_t len, size_t max_package_bytes, hush_arena *arena,
                                      unsigned char **plaintext, size_t *plaintext_len,
                                      const hush_json_value **processed_at,
                                      unsigned char wrapped_key_digest[HUSH_V1_DIGEST_BYTES],
                                      hush_error *err)
{
    hush_status status = HUSH_OK;
    v1_fields f = {0};
    void *space;
    size_t max = max_package_bytes ? max_package_bytes : HUSH_V1_DEFAULT_MAX_PACKAGE_BYTES;

    HUSH_TRY(read_package(package, len, max, &f, err));
    HUSH_TRY(hush_arena_alloc(arena, open_space(recipient, &f), &space, err));
    HUSH_TRY(decrypt_into(recipient, &f, space, err));
    if (wrapped_key_digest != NULL)
        HUSH_OSSL(EVP_Digest(f.wrapped, f.wrapped_len, wrapped_key_digest, NULL, hush__sha256(),
                             NULL) == 1,
                  "SHA-256 of the wrapped key");
    *plaintext = space;
    *plaintext_len = f.ciphertext_len;
    if (processed_at != NULL) {
        *processed_at = NULL;
        if (f.processed_at != NULL)
            HUSH_TRY(hush_json_parse_into(arena, hush_secbuf_data(f.processed_at),
                                          hush_secbuf_len(f.processed_at), NULL, processed_at,
                                          err));
    }
cleanup:
    clear_fields(&f);
    return status;
}

void hush_envelope_v1_opened_clear(hush_envelope_v1_opened *opened)
{
    if (opened == NULL)
        return;
    hush_secbuf_free(opened->plaintext);
    hush_json_doc_free(opened->processed_at);
    memset(opened, 0, sizeof *opened);
}
