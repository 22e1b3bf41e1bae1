/* hpke_keyfile.c — an HPKE private key on disk (the server's): PEM-style
 * armour around a small binary body that names the KEM and how the key is
 * protected, the key itself in the clear or AES-256-GCM-encrypted under a
 * key derived from a password (scrypt or PBKDF2, as hush_key_kdf). The
 * format is in docs/crypto.md. The decoded body, the derived key and the
 * private key only ever sit in secure memory. */
#include <stdint.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "hushcall/base64.h"
#include "hushcall/hpke.h"
#include "internal.h"
#include "crypto/crypto_internal.h"
#include "mem/mem_internal.h"

#define ARMOUR_BEGIN "-----BEGIN HUSHCALL HPKE PRIVATE KEY-----\n"
#define ARMOUR_END "-----END HUSHCALL HPKE PRIVATE KEY-----\n"
#define ARMOUR_LINE_CHARS 64u
/* Far more than any key file this module writes (under 300 bytes). */
#define KEYFILE_MAX 4096u

#define BODY_MAGIC "HHPK"
#define BODY_MAGIC_BYTES 4u
#define BODY_VERSION 1u
#define PROTECTION_NONE 0u
#define PROTECTION_SCRYPT 1u
#define PROTECTION_PBKDF2 2u
#define SCRYPT_LOG2_N 14u /* HUSH_KEY_SCRYPT_N = 2^14 */
#define WRAP_KEY_BYTES 32u
#define WRAP_NONCE_BYTES 12u
#define WRAP_TAG_BYTES 16u
/* scrypt's memory for our cost is 16 MiB; leave room, refuse more. */
#define SCRYPT_MAX_MEMORY (64u << 20)

/* What a body's header says: the KEM and how the key is protected. */
typedef struct keyfile_header {
    uint16_t kem_id;
    unsigned protection;
    unsigned char salt[HUSH_KEY_SALT_BYTES];
    unsigned char nonce[WRAP_NONCE_BYTES];
    uint16_t key_len;
} keyfile_header;

/* ---- the body's header --------------------------------------------------- */

HUSH_MUST_USE
static hush_status put_u16(hush_secbuf *out, unsigned v, hush_error *err)
{
    unsigned char b[2] = {(unsigned char)(v >> 8), (unsigned char)v};
    return hush_secbuf_append(out, b, sizeof b, err);
}

HUSH_MUST_USE
static hush_status put_u32(hush_secbuf *out, uint32_t v, hush_error *err)
{
    unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    return hush_secbuf_append(out, b, sizeof b, err);
}

/* The header, which is also the AAD of an encrypted key. */
HUSH_MUST_USE
static hush_status write_header(const keyfile_header *h, hush_secbuf *out, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(hush_secbuf_append(out, BODY_MAGIC, BODY_MAGIC_BYTES, err));
    HUSH_TRY(hush_secbuf_append_byte(out, BODY_VERSION, err));
    HUSH_TRY(put_u16(out, h->kem_id, err));
    HUSH_TRY(hush_secbuf_append_byte(out, (unsigned char)h->protection, err));
    if (h->protection == PROTECTION_SCRYPT) {
        HUSH_TRY(hush_secbuf_append_byte(out, SCRYPT_LOG2_N, err));
        HUSH_TRY(put_u32(out, HUSH_KEY_SCRYPT_R, err));
        HUSH_TRY(put_u32(out, HUSH_KEY_SCRYPT_P, err));
    } else if (h->protection == PROTECTION_PBKDF2) {
        HUSH_TRY(put_u32(out, HUSH_KEY_PBKDF2_ITERATIONS, err));
    }
    if (h->protection != PROTECTION_NONE) {
        HUSH_TRY(hush_secbuf_append(out, h->salt, sizeof h->salt, err));
        HUSH_TRY(hush_secbuf_append(out, h->nonce, sizeof h->nonce, err));
    }
    HUSH_TRY(put_u16(out, h->key_len, err));
cleanup:
    return status;
}

static bool take_u16(hush_reader *r, uint16_t *v)
{
    const unsigned char *p;
    if (!hush_reader_take(r, 2, &p))
        return false;
    *v = (uint16_t)(p[0] << 8 | p[1]);
    return true;
}

static bool take_u32(hush_reader *r, uint32_t *v)
{
    const unsigned char *p;
    if (!hush_reader_take(r, 4, &p))
        return false;
    *v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    return true;
}

static bool take_into(hush_reader *r, unsigned char *out, size_t n)
{
    const unsigned char *p;
    if (!hush_reader_take(r, n, &p))
        return false;
    memcpy(out, p, n);
    return true;
}

/* A version-1 file carries exactly the costs this version writes: a cheaper
 * one would be a downgrade, a dearer one a way to make loading hang. */
HUSH_MUST_USE
static hush_status read_kdf_costs(hush_reader *r, unsigned protection, hush_error *err)
{
    hush_status status = HUSH_OK;
    if (protection == PROTECTION_SCRYPT) {
        int log2_n = hush_reader_next(r);
        uint32_t cost_r = 0, cost_p = 0;
        HUSH_ENSURE(log2_n >= 0 && take_u32(r, &cost_r) && take_u32(r, &cost_p), HUSH_E_KEY,
                    "HPKE key file: scrypt parameters are cut short");
        HUSH_ENSURE(log2_n == SCRYPT_LOG2_N && cost_r == HUSH_KEY_SCRYPT_R &&
                        cost_p == HUSH_KEY_SCRYPT_P,
                    HUSH_E_KEY, "HPKE key file: unsupported scrypt parameters");
    } else {
        uint32_t iterations = 0;
        HUSH_ENSURE(take_u32(r, &iterations), HUSH_E_KEY,
                    "HPKE key file: PBKDF2 parameters are cut short");
        HUSH_ENSURE(iterations == HUSH_KEY_PBKDF2_ITERATIONS, HUSH_E_KEY,
                    "HPKE key file: unsupported PBKDF2 iteration count");
    }
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status read_header(hush_reader *r, keyfile_header *h, hush_error *err)
{
    hush_status status = HUSH_OK;
    const unsigned char *magic;
    HUSH_ENSURE(hush_reader_take(r, BODY_MAGIC_BYTES, &magic) &&
                    memcmp(magic, BODY_MAGIC, BODY_MAGIC_BYTES) == 0,
                HUSH_E_KEY, "not an HPKE key file (bad magic)");
    int version = hush_reader_next(r);
    HUSH_ENSURE(version == BODY_VERSION, HUSH_E_KEY, "HPKE key file: unknown version %d",
                version);
    HUSH_ENSURE(take_u16(r, &h->kem_id), HUSH_E_KEY, "HPKE key file: KEM id is cut short");
    size_t nsk = hush_hpke_kem_private_key_bytes(h->kem_id);
    HUSH_ENSURE(nsk > 0, HUSH_E_KEY, "HPKE key file: unknown KEM 0x%04x", h->kem_id);
    int protection = hush_reader_next(r);
    HUSH_ENSURE(protection >= 0 && protection <= (int)PROTECTION_PBKDF2, HUSH_E_KEY,
                "HPKE key file: unknown protection %d", protection);
    h->protection = (unsigned)protection;
    if (h->protection != PROTECTION_NONE) {
        HUSH_TRY(read_kdf_costs(r, h->protection, err));
        HUSH_ENSURE(take_into(r, h->salt, sizeof h->salt) &&
                        take_into(r, h->nonce, sizeof h->nonce),
                    HUSH_E_KEY, "HPKE key file: salt or nonce is cut short");
    }
    HUSH_ENSURE(take_u16(r, &h->key_len), HUSH_E_KEY, "HPKE key file: key length is cut short");
    HUSH_ENSURE(h->key_len == nsk, HUSH_E_KEY,
                "HPKE key file: key of %u bytes, but KEM 0x%04x has %zu-byte keys",
                (unsigned)h->key_len, h->kem_id, nsk);
cleanup:
    return status;
}

/* ---- password protection ------------------------------------------------- */

/* The wrapping key from the password, into `key` (secure memory). */
HUSH_MUST_USE
static hush_status derive_wrap_key(const char *password, const keyfile_header *h,
                                   unsigned char key[WRAP_KEY_BYTES], hush_error *err)
{
    hush_status status = HUSH_OK;
    size_t len = strlen(password);
    if (h->protection == PROTECTION_SCRYPT)
        HUSH_OSSL(EVP_PBE_scrypt(password, len, h->salt, sizeof h->salt, HUSH_KEY_SCRYPT_N,
                                 HUSH_KEY_SCRYPT_R, HUSH_KEY_SCRYPT_P, SCRYPT_MAX_MEMORY, key,
                                 WRAP_KEY_BYTES) == 1,
                  "scrypt");
    else
        HUSH_OSSL(PKCS5_PBKDF2_HMAC(password, (int)len, h->salt, sizeof h->salt,
                                    (int)HUSH_KEY_PBKDF2_ITERATIONS, hush__sha256(),
                                    WRAP_KEY_BYTES, key) == 1,
                  "PBKDF2");
cleanup:
    return status;
}

/* AES-256-GCM of `sk` under `key`, appended to `body` as ciphertext || tag;
 * what `body` held before (the header) is the AAD. */
HUSH_MUST_USE
static hush_status wrap_key(const unsigned char *key, const keyfile_header *h,
                            const unsigned char *sk, hush_secbuf *body, hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_CIPHER_CTX *ctx = NULL;
    int outl = 0;
    size_t aad_len = hush_secbuf_len(body);

    HUSH_TRY(hush_secbuf_reserve(body, h->key_len + WRAP_TAG_BYTES, err));
    /* After the reserve, which may move the buffer. */
    const unsigned char *aad = hush_secbuf_data(body);
    unsigned char *ct = hush_secbuf_data(body) + aad_len;
    HUSH_OSSL((ctx = EVP_CIPHER_CTX_new()) != NULL, "EVP_CIPHER_CTX_new");
    HUSH_OSSL(EVP_EncryptInit_ex(ctx, hush__aes_256_gcm(), NULL, key, h->nonce) == 1,
              "AES-GCM init");
    HUSH_OSSL(EVP_EncryptUpdate(ctx, NULL, &outl, aad, (int)aad_len) == 1, "AES-GCM aad");
    HUSH_OSSL(EVP_EncryptUpdate(ctx, ct, &outl, sk, h->key_len) == 1 && outl == h->key_len,
              "AES-GCM update");
    HUSH_OSSL(EVP_EncryptFinal_ex(ctx, ct + h->key_len, &outl) == 1, "AES-GCM final");
    HUSH_OSSL(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, WRAP_TAG_BYTES,
                                  ct + h->key_len) == 1,
              "AES-GCM tag");
    HUSH_TRY(hush_secbuf_set_len(body, aad_len + h->key_len + WRAP_TAG_BYTES, err));
cleanup:
    EVP_CIPHER_CTX_free(ctx);
    return status;
}

/* The inverse of wrap_key into `sk` (secure, key_len bytes). A wrong
 * password and a damaged file look the same to GCM: HUSH_E_PASSWORD. */
HUSH_MUST_USE
static hush_status unwrap_key(const unsigned char *key, const keyfile_header *h,
                              const unsigned char *aad, size_t aad_len,
                              const unsigned char *wrapped, unsigned char *sk, hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_CIPHER_CTX *ctx = NULL;
    unsigned char tag[WRAP_TAG_BYTES];
    int outl = 0;

    memcpy(tag, wrapped + h->key_len, sizeof tag);
    HUSH_OSSL((ctx = EVP_CIPHER_CTX_new()) != NULL, "EVP_CIPHER_CTX_new");
    HUSH_OSSL(EVP_DecryptInit_ex(ctx, hush__aes_256_gcm(), NULL, key, h->nonce) == 1,
              "AES-GCM init");
    HUSH_OSSL(EVP_DecryptUpdate(ctx, NULL, &outl, aad, (int)aad_len) == 1, "AES-GCM aad");
    HUSH_OSSL(EVP_DecryptUpdate(ctx, sk, &outl, wrapped, h->key_len) == 1 && outl == h->key_len,
              "AES-GCM update");
    HUSH_OSSL(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, WRAP_TAG_BYTES, tag) == 1,
              "AES-GCM tag");
    if (EVP_DecryptFinal_ex(ctx, sk + h->key_len, &outl) != 1) {
        hush_memzero(sk, h->key_len);
        ERR_clear_error();
        HUSH_BAIL(HUSH_E_PASSWORD, "wrong password (or damaged key file)");
    }
cleanup:
    EVP_CIPHER_CTX_free(ctx);
    return status;
}

/* ---- armour ---------------------------------------------------------------- */

/* `body` in base64, 64 characters a line, between the BEGIN and END lines. */
HUSH_MUST_USE
static hush_status armour(const hush_secbuf *body, hush_secbuf *text, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *b64 = NULL;

    HUSH_TRY(hush_secbuf_new(hush_base64_encoded_len(hush_secbuf_len(body)), 0,
                             HUSH_SECMEM_DEFAULT, &b64, err));
    HUSH_TRY(hush_base64_encode_append(hush_secbuf_bytes(body), hush_secbuf_len(body), b64, err));
    HUSH_TRY(hush_secbuf_append(text, ARMOUR_BEGIN, strlen(ARMOUR_BEGIN), err));
    for (size_t at = 0; at < hush_secbuf_len(b64); at += ARMOUR_LINE_CHARS) {
        size_t n = hush_secbuf_len(b64) - at;
        n = n < ARMOUR_LINE_CHARS ? n : ARMOUR_LINE_CHARS;
        HUSH_TRY(hush_secbuf_append(text, hush_secbuf_bytes(b64) + at, n, err));
        HUSH_TRY(hush_secbuf_append_byte(text, '\n', err));
    }
    HUSH_TRY(hush_secbuf_append(text, ARMOUR_END, strlen(ARMOUR_END), err));
cleanup:
    hush_secbuf_free(b64);
    return status;
}

/* The length of the line at the reader's position, without its '\n';
 * SIZE_MAX when no '\n' ends it. */
static size_t line_length(const hush_reader *r)
{
    size_t n = 0;
    int c;
    while ((c = hush_reader_peek_at(r, n)) >= 0 && c != '\n')
        n++;
    return c == '\n' ? n : SIZE_MAX;
}

/* The base64 between the armour lines, joined, into `b64`. Strict: the
 * BEGIN line first, full 64-character lines but the last, the END line,
 * nothing after it. */
HUSH_MUST_USE
static hush_status strip_armour(const unsigned char *text, size_t len, hush_secbuf *b64,
                                hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_reader r;
    const unsigned char *line;
    size_t begin_len = strlen(ARMOUR_BEGIN), end_len = strlen(ARMOUR_END);

    hush_reader_init(&r, text, len);
    HUSH_ENSURE(hush_reader_take(&r, begin_len, &line) &&
                    memcmp(line, ARMOUR_BEGIN, begin_len) == 0,
                HUSH_E_KEY, "not an HPKE key file (no BEGIN HUSHCALL HPKE PRIVATE KEY line)");
    for (;;) {
        size_t line_len = line_length(&r);
        HUSH_ENSURE(line_len != SIZE_MAX, HUSH_E_KEY, "HPKE key file: no END line");
        HUSH_ENSURE(hush_reader_take(&r, line_len + 1, &line), HUSH_E_KEY,
                    "HPKE key file: no END line");
        if (line_len + 1 == end_len && memcmp(line, ARMOUR_END, end_len) == 0)
            break;
        HUSH_ENSURE(line_len > 0 && line_len <= ARMOUR_LINE_CHARS, HUSH_E_KEY,
                    "HPKE key file: a line of %zu characters in the armour", line_len);
        HUSH_ENSURE(hush_secbuf_len(b64) % ARMOUR_LINE_CHARS == 0, HUSH_E_KEY,
                    "HPKE key file: a short line before the last");
        HUSH_TRY(hush_secbuf_append(b64, line, line_len, err));
    }
    HUSH_ENSURE(hush_reader_done(&r), HUSH_E_KEY, "HPKE key file: %zu bytes after the END line",
                hush_reader_left(&r));
cleanup:
    return status;
}

/* ---- body ------------------------------------------------------------------ */

hush_status hush__hpke_keyfile_encode(uint16_t kem_id, const unsigned char *sk, size_t sk_len,
                                      const char *password, hush_key_kdf kdf, hush_secbuf **text,
                                      hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *body = NULL, *wrap = NULL;
    keyfile_header h = {.kem_id = kem_id, .key_len = (uint16_t)sk_len};

    *text = NULL;
    HUSH_ENSURE(kdf == HUSH_KDF_PBKDF2 || kdf == HUSH_KDF_SCRYPT, HUSH_E_ARGUMENT,
                "unknown key derivation function %d", (int)kdf);
    HUSH_ENSURE(password == NULL || strlen(password) <= HUSH_KEY_PASSWORD_MAX, HUSH_E_ARGUMENT,
                "password is longer than %u bytes", HUSH_KEY_PASSWORD_MAX);
    size_t nsk = hush_hpke_kem_private_key_bytes(kem_id);
    HUSH_ENSURE(nsk > 0, HUSH_E_UNSUPPORTED, "unknown KEM 0x%04x", kem_id);
    HUSH_ENSURE(sk_len == nsk, HUSH_E_KEY, "a KEM 0x%04x private key has %zu bytes, not %zu",
                kem_id, nsk, sk_len);
    HUSH_TRY(hush__init(err));
    if (password != NULL) {
        h.protection = kdf == HUSH_KDF_SCRYPT ? PROTECTION_SCRYPT : PROTECTION_PBKDF2;
        HUSH_OSSL(RAND_bytes(h.salt, sizeof h.salt) == 1 &&
                      RAND_bytes(h.nonce, sizeof h.nonce) == 1,
                  "RAND_bytes");
    }
    HUSH_TRY(hush_secbuf_new(256, 0, HUSH_SECMEM_DEFAULT, &body, err));
    HUSH_TRY(write_header(&h, body, err));
    if (password == NULL) {
        HUSH_TRY(hush_secbuf_append(body, sk, sk_len, err));
    } else {
        HUSH_TRY(hush_secbuf_new(WRAP_KEY_BYTES, 0, HUSH_SECMEM_DEFAULT, &wrap, err));
        HUSH_TRY(derive_wrap_key(password, &h, hush_secbuf_data(wrap), err));
        HUSH_TRY(wrap_key(hush_secbuf_bytes(wrap), &h, sk, body, err));
    }
    HUSH_TRY(hush_secbuf_new(1024, KEYFILE_MAX, HUSH_SECMEM_DEFAULT, text, err));
    HUSH_TRY(armour(body, *text, err));
cleanup:
    if (status != HUSH_OK) {
        hush_secbuf_free(*text);
        *text = NULL;
    }
    hush_secbuf_free(wrap);
    hush_secbuf_free(body);
    return status;
}

/* The private key a parsed body holds, into `sk` (key_len bytes). */
HUSH_MUST_USE
static hush_status open_key_field(const keyfile_header *h, hush_reader *r, const char *password,
                                  unsigned char *sk, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *wrap = NULL;
    size_t aad_len = r->pos;
    size_t field_len = h->key_len + (h->protection != PROTECTION_NONE ? WRAP_TAG_BYTES : 0);
    const unsigned char *field;

    HUSH_ENSURE(hush_reader_take(r, field_len, &field), HUSH_E_KEY,
                "HPKE key file: the key is cut short");
    HUSH_ENSURE(hush_reader_done(r), HUSH_E_KEY, "HPKE key file: %zu bytes after the key",
                hush_reader_left(r));
    if (h->protection == PROTECTION_NONE) {
        memcpy(sk, field, h->key_len);
        goto cleanup;
    }
    HUSH_ENSURE(password != NULL, HUSH_E_PASSWORD,
                "private key is encrypted: a password is needed");
    HUSH_ENSURE(strlen(password) <= HUSH_KEY_PASSWORD_MAX, HUSH_E_PASSWORD,
                "password is longer than %u bytes", HUSH_KEY_PASSWORD_MAX);
    HUSH_TRY(hush_secbuf_new(WRAP_KEY_BYTES, 0, HUSH_SECMEM_DEFAULT, &wrap, err));
    HUSH_TRY(derive_wrap_key(password, h, hush_secbuf_data(wrap), err));
    HUSH_TRY(unwrap_key(hush_secbuf_bytes(wrap), h, r->data, aad_len, field, sk, err));
cleanup:
    hush_secbuf_free(wrap);
    return status;
}

hush_status hush__hpke_keyfile_decode(const unsigned char *text, size_t len,
                                      const char *password, uint16_t *kem_id, hush_secbuf **sk,
                                      hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *b64 = NULL, *body = NULL;
    keyfile_header h = {0};
    hush_reader r;
    size_t body_len = 0;

    *sk = NULL;
    HUSH_ENSURE(len <= KEYFILE_MAX, HUSH_E_LIMIT, "HPKE key file of %zu bytes is too large", len);
    HUSH_TRY(hush__init(err));
    HUSH_TRY(hush_secbuf_new(len, 0, HUSH_SECMEM_DEFAULT, &b64, err));
    HUSH_TRY(strip_armour(text, len, b64, err));
    size_t cap = hush_base64_decoded_max(hush_secbuf_len(b64));
    HUSH_TRY(hush_secbuf_new(cap, 0, HUSH_SECMEM_DEFAULT, &body, err));
    HUSH_TRY(hush_secbuf_reserve(body, cap, err));
    HUSH_TRY_AS(hush_base64_decode((const char *)hush_secbuf_bytes(b64), hush_secbuf_len(b64),
                                   hush_secbuf_data(body), cap, &body_len, err),
                HUSH_E_KEY, "HPKE key file: the armour is not canonical base64");
    hush_reader_init(&r, hush_secbuf_bytes(body), body_len);
    HUSH_TRY(read_header(&r, &h, err));
    HUSH_TRY(hush_secbuf_new(h.key_len, 0, HUSH_SECMEM_DEFAULT, sk, err));
    HUSH_TRY(hush_secbuf_reserve(*sk, h.key_len, err));
    HUSH_TRY(open_key_field(&h, &r, password, hush_secbuf_data(*sk), err));
    HUSH_TRY(hush_secbuf_set_len(*sk, h.key_len, err));
    *kem_id = h.kem_id;
cleanup:
    if (status != HUSH_OK) {
        hush_secbuf_free(*sk);
        *sk = NULL;
    }
    hush_secbuf_free(body);
    hush_secbuf_free(b64);
    return status;
}

/* ---- files ----------------------------------------------------------------- */

hush_status hush_hpke_keypair_save_file(const hush_hpke_keypair *kp, const char *path,
                                        const char *password, hush_key_kdf kdf, unsigned flags,
                                        hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *sk = NULL, *text = NULL;

    HUSH_ENSURE(kp != NULL && path != NULL, HUSH_E_ARGUMENT,
                "hush_hpke_keypair_save_file: NULL argument");
    HUSH_ENSURE((flags & ~HUSH_KEYS_SAVE_OVERWRITE) == 0, HUSH_E_ARGUMENT,
                "hush_hpke_keypair_save_file: unknown flags 0x%x", flags);
    HUSH_TRY(hush_hpke_keypair_private(kp, &sk, err));
    HUSH_TRY(hush__hpke_keyfile_encode(hush_hpke_keypair_kem(kp), hush_secbuf_bytes(sk),
                                       hush_secbuf_len(sk), password, kdf, &text, err));
    HUSH_TRY(hush__private_key_file_write(path, hush_secbuf_bytes(text), hush_secbuf_len(text),
                                          (flags & HUSH_KEYS_SAVE_OVERWRITE) != 0, err));
cleanup:
    hush_secbuf_free(text);
    hush_secbuf_free(sk);
    return status;
}

hush_status hush_hpke_keypair_load_file(const char *path, const char *password,
                                        hush_hpke_keypair **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *text = NULL, *sk = NULL;
    uint16_t kem_id = 0;

    HUSH_ENSURE(path != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_hpke_keypair_load_file: NULL argument");
    *out = NULL;
    HUSH_TRY(hush__private_key_file_read(path, KEYFILE_MAX, &text, err));
    HUSH_TRY(hush__hpke_keyfile_decode(hush_secbuf_bytes(text), hush_secbuf_len(text), password,
                                       &kem_id, &sk, err));
    HUSH_TRY(hush_hpke_keypair_from_private(kem_id, hush_secbuf_bytes(sk), hush_secbuf_len(sk),
                                            out, err));
cleanup:
    hush_secbuf_free(sk);
    hush_secbuf_free(text);
    return status;
}
