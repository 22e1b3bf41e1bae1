/* credential.c — TPM2_MakeCredential in software (credential.h): TPM 2.0
 * Library Part 1 §24, with OpenSSL's RSA-OAEP, ECDH, KBKDF (KDFa), AES-CFB
 * and HMAC; every secret in one secure block. */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "hushcall/credential.h"
#include "internal.h"
#include "mem/mem_internal.h"

/* The TCG default EK templates L-1 (RSA-2048) and L-2 (NIST P-256): both
 * nameAlg SHA-256 and AES-128-CFB. */
#define EK_RSA_BITS 2048
#define EK_CURVE "prime256v1"
#define EK_COORDINATE_BYTES 32u
#define EK_DIGEST_BYTES 32u
#define EK_SYM_KEY_BYTES 16u
#define EK_DER_MAX 4096u /* far above an RSA-2048 or P-256 SubjectPublicKeyInfo */
/* The label of a credential's seed, its NUL counted (Part 1 §24.4). */
static const char IDENTITY_LABEL[] = "IDENTITY";

/* Every secret of one credential, in one secure block. */
typedef struct credential_secrets {
    unsigned char seed[HUSH_CREDENTIAL_SEED_BYTES];
    unsigned char z[EK_COORDINATE_BYTES]; /* an ECC EK's shared secret */
    unsigned char plain[2u + HUSH_CREDENTIAL_SECRET_MAX]; /* the secret as a TPM2B_DIGEST */
    unsigned char sym_key[EK_SYM_KEY_BYTES];
    unsigned char hmac_key[EK_DIGEST_BYTES];
} credential_secrets;

static void put_u16(unsigned char *p, size_t v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}

/* A TPM2B_NAME's contents: a hash algorithm (TPM_ALG_ID, Part 2 §6.3), then
 * a digest of its size. */
static bool name_well_formed(const unsigned char *name, size_t len)
{
    static const struct {
        uint16_t alg;
        size_t digest_len;
    } name_algs[] = {{0x0004, 20}, {0x000B, 32}, {0x000C, 48}, {0x000D, 64}};
    if (len < 2)
        return false;
    uint16_t alg = (uint16_t)((name[0] << 8) | name[1]);
    for (size_t i = 0; i < sizeof name_algs / sizeof *name_algs; i++)
        if (name_algs[i].alg == alg)
            return len == 2 + name_algs[i].digest_len;
    return false;
}

/* Whether `pkey` is a key on the L-2 template's curve. */
static bool is_ek_curve(EVP_PKEY *pkey)
{
    char group[32];
    return EVP_PKEY_is_a(pkey, "EC") &&
           EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                          NULL) == 1 &&
           strcmp(group, EK_CURVE) == 0;
}

/* The EK from its SubjectPublicKeyInfo: the default templates' RSA-2048 or P-256. */
static hush_status load_ek(const unsigned char *der, size_t len, EVP_PKEY **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    const unsigned char *p = der;
    EVP_PKEY *pkey = NULL;
    HUSH_ENSURE(len <= EK_DER_MAX, HUSH_E_KEY, "ek: longer than %u bytes", EK_DER_MAX);
    pkey = d2i_PUBKEY(NULL, &p, (long)len);
    if (pkey == NULL)
        ERR_clear_error(); /* the caller's bytes, not our failure: leave no stale errors */
    HUSH_ENSURE(pkey != NULL && p == der + len, HUSH_E_KEY,
                "ek: not a DER SubjectPublicKeyInfo");
    HUSH_ENSURE((EVP_PKEY_is_a(pkey, "RSA") && EVP_PKEY_get_bits(pkey) == EK_RSA_BITS) ||
                    is_ek_curve(pkey),
                HUSH_E_KEY, "ek: neither RSA-%d nor P-256 (the TCG default EK templates)",
                EK_RSA_BITS);
    *out = pkey;
    pkey = NULL;
cleanup:
    EVP_PKEY_free(pkey);
    return status;
}

/* KDFa (Part 1 §11.4.10.2) is SP 800-108's counter mode over HMAC:
 * [i]32 || label || 0x00 || contextU || [bits]32, which is OpenSSL's KBKDF
 * with its defaults (a separator and the length) on. */
static hush_status kdfa_sha256(const unsigned char *seed, const char *label,
                               const unsigned char *context, size_t context_len,
                               unsigned char *out, size_t out_len, hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_KDF *kdf = NULL;
    EVP_KDF_CTX *ctx = NULL;
    OSSL_PARAM params[6], *p = params;
    *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_MAC, (char *)"HMAC", 0);
    *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)seed,
                                             HUSH_CREDENTIAL_SEED_BYTES);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)label, strlen(label));
    if (context_len > 0)
        *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)context,
                                                 context_len);
    *p = OSSL_PARAM_construct_end();
    HUSH_OSSL((kdf = EVP_KDF_fetch(NULL, "KBKDF", NULL)) != NULL, "EVP_KDF_fetch KBKDF");
    HUSH_OSSL((ctx = EVP_KDF_CTX_new(kdf)) != NULL, "EVP_KDF_CTX_new");
    HUSH_OSSL(EVP_KDF_derive(ctx, out, out_len, params) == 1, "KDFa");
cleanup:
    EVP_KDF_CTX_free(ctx);
    EVP_KDF_free(kdf);
    return status;
}

/* encIdentity: AES-128-CFB with a zero IV over the TPM2B_DIGEST (§24.4). */
static hush_status encrypt_identity(const credential_secrets *s, size_t plain_len,
                                    unsigned char *out, hush_error *err)
{
    hush_status status = HUSH_OK;
    static const unsigned char zero_iv[16] = {0};
    EVP_CIPHER_CTX *ctx = NULL;
    int len = 0, final_len = 0;
    HUSH_OSSL((ctx = EVP_CIPHER_CTX_new()) != NULL, "EVP_CIPHER_CTX_new");
    HUSH_OSSL(EVP_EncryptInit_ex2(ctx, EVP_aes_128_cfb128(), s->sym_key, zero_iv, NULL) == 1,
              "AES-128-CFB init");
    HUSH_OSSL(EVP_EncryptUpdate(ctx, out, &len, s->plain, (int)plain_len) == 1,
              "AES-128-CFB encrypt");
    HUSH_OSSL(EVP_EncryptFinal_ex(ctx, out + len, &final_len) == 1, "AES-128-CFB final");
    HUSH_ENSURE((size_t)(len + final_len) == plain_len, HUSH_E_CRYPTO,
                "AES-128-CFB: unexpected output length");
cleanup:
    EVP_CIPHER_CTX_free(ctx);
    return status;
}

/* outerHMAC = HMAC-SHA256(hmac_key, encIdentity || name) (§24.5). */
static hush_status outer_hmac(const credential_secrets *s, const unsigned char *enc,
                              size_t enc_len, const unsigned char *name, size_t name_len,
                              unsigned char out[EK_DIGEST_BYTES], hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_MAC *mac = NULL;
    EVP_MAC_CTX *ctx = NULL;
    size_t out_len = 0;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    HUSH_OSSL((mac = EVP_MAC_fetch(NULL, "HMAC", NULL)) != NULL, "EVP_MAC_fetch HMAC");
    HUSH_OSSL((ctx = EVP_MAC_CTX_new(mac)) != NULL, "EVP_MAC_CTX_new");
    HUSH_OSSL(EVP_MAC_init(ctx, s->hmac_key, sizeof s->hmac_key, params) == 1, "HMAC init");
    HUSH_OSSL(EVP_MAC_update(ctx, enc, enc_len) == 1, "HMAC update");
    HUSH_OSSL(EVP_MAC_update(ctx, name, name_len) == 1, "HMAC update");
    HUSH_OSSL(EVP_MAC_final(ctx, out, &out_len, EK_DIGEST_BYTES) == 1, "HMAC final");
    HUSH_ENSURE(out_len == EK_DIGEST_BYTES, HUSH_E_CRYPTO, "HMAC: unexpected output length");
cleanup:
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    return status;
}

/* TPM2B_ENCRYPTED_SECRET: the seed under RSA-OAEP-SHA256, label "IDENTITY\0". */
static hush_status encrypt_seed(EVP_PKEY *ek, const credential_secrets *s,
                                hush_credential *out, hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_PKEY_CTX *ctx = NULL;
    size_t len = sizeof out->encrypted_secret - 2;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_ASYM_CIPHER_PARAM_PAD_MODE,
                                         (char *)OSSL_PKEY_RSA_PAD_MODE_OAEP, 0),
        OSSL_PARAM_construct_utf8_string(OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_utf8_string(OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL,
                                          (void *)IDENTITY_LABEL, sizeof IDENTITY_LABEL),
        OSSL_PARAM_construct_end(),
    };
    HUSH_OSSL((ctx = EVP_PKEY_CTX_new_from_pkey(NULL, ek, NULL)) != NULL, "EVP_PKEY_CTX_new");
    HUSH_OSSL(EVP_PKEY_encrypt_init_ex(ctx, params) == 1, "RSA-OAEP init");
    HUSH_OSSL(EVP_PKEY_encrypt(ctx, out->encrypted_secret + 2, &len, s->seed,
                               sizeof s->seed) == 1, "RSA-OAEP encrypt");
    put_u16(out->encrypted_secret, len);
    out->encrypted_secret_len = 2 + len;
cleanup:
    EVP_PKEY_CTX_free(ctx);
    return status;
}

/* KDFe (Part 1 §11.4.10.3) for one digest of output, the seed's size:
 * SHA-256([1]32 || Z || "IDENTITY\0" || partyUInfo || partyVInfo). */
static hush_status kdfe_sha256(const unsigned char z[EK_COORDINATE_BYTES],
                               const unsigned char party_u[EK_COORDINATE_BYTES],
                               const unsigned char party_v[EK_COORDINATE_BYTES],
                               unsigned char seed[HUSH_CREDENTIAL_SEED_BYTES], hush_error *err)
{
    hush_status status = HUSH_OK;
    static const unsigned char counter[4] = {0, 0, 0, 1};
    EVP_MD_CTX *md = NULL;
    HUSH_OSSL((md = EVP_MD_CTX_new()) != NULL, "EVP_MD_CTX_new");
    HUSH_OSSL(EVP_DigestInit_ex2(md, EVP_sha256(), NULL) == 1 &&
                  EVP_DigestUpdate(md, counter, sizeof counter) == 1 &&
                  EVP_DigestUpdate(md, z, EK_COORDINATE_BYTES) == 1 &&
                  EVP_DigestUpdate(md, IDENTITY_LABEL, sizeof IDENTITY_LABEL) == 1 &&
                  EVP_DigestUpdate(md, party_u, EK_COORDINATE_BYTES) == 1 &&
                  EVP_DigestUpdate(md, party_v, EK_COORDINATE_BYTES) == 1 &&
                  EVP_DigestFinal_ex(md, seed, NULL) == 1,
              "KDFe");
cleanup:
    EVP_MD_CTX_free(md);
    return status;
}

/* A point's coordinate, big-endian and padded to the curve's size. */
static bool coordinate(EVP_PKEY *pkey, const char *which, unsigned char out[EK_COORDINATE_BYTES])
{
    BIGNUM *bn = NULL;
    bool ok = EVP_PKEY_get_bn_param(pkey, which, &bn) == 1 &&
              BN_bn2binpad(bn, out, EK_COORDINATE_BYTES) == (int)EK_COORDINATE_BYTES;
    BN_free(bn);
    return ok;
}

/* For an ECC EK the seed is agreed, not sent (Part 1 §C.6.1): with an
 * ephemeral P-256 key, Z = x([d]Q_ek) and seed = KDFe(SHA-256, Z,
 * "IDENTITY\0", x of the ephemeral key, x of the EK); the
 * TPM2B_ENCRYPTED_SECRET is the ephemeral point, a TPMS_ECC_POINT. */
static hush_status agree_seed(EVP_PKEY *ek, credential_secrets *s, hush_credential *out,
                              hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_PKEY *ephemeral = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    unsigned char ek_x[EK_COORDINATE_BYTES];
    unsigned char *x = out->encrypted_secret + 4, *y = x + EK_COORDINATE_BYTES + 2;
    size_t z_len = sizeof s->z;
    HUSH_OSSL((ephemeral = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256")) != NULL,
              "ephemeral P-256 key");
    HUSH_OSSL(coordinate(ephemeral, OSSL_PKEY_PARAM_EC_PUB_X, x) &&
                  coordinate(ephemeral, OSSL_PKEY_PARAM_EC_PUB_Y, y) &&
                  coordinate(ek, OSSL_PKEY_PARAM_EC_PUB_X, ek_x),
              "P-256 coordinates");
    HUSH_OSSL((ctx = EVP_PKEY_CTX_new_from_pkey(NULL, ephemeral, NULL)) != NULL,
              "EVP_PKEY_CTX_new");
    HUSH_OSSL(EVP_PKEY_derive_init(ctx) == 1 && EVP_PKEY_derive_set_peer(ctx, ek) == 1,
              "ECDH init");
    HUSH_OSSL(EVP_PKEY_derive(ctx, s->z, &z_len) == 1 && z_len == sizeof s->z, "ECDH");
    HUSH_TRY(kdfe_sha256(s->z, x, ek_x, s->seed, err));
    put_u16(out->encrypted_secret, 2 * (2 + EK_COORDINATE_BYTES));
    put_u16(x - 2, EK_COORDINATE_BYTES);
    put_u16(y - 2, EK_COORDINATE_BYTES);
    out->encrypted_secret_len = 2 + 2 * (2 + EK_COORDINATE_BYTES);
cleanup:
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(ephemeral);
    return status;
}

/* TPM2B_ID_OBJECT: size, TPM2B_DIGEST integrityHMAC, encIdentity. */
static hush_status make_id_object(credential_secrets *s, size_t secret_len,
                                  const unsigned char *name, size_t name_len,
                                  hush_credential *out, hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char *hmac = out->id_object + 4;
    unsigned char *enc = hmac + EK_DIGEST_BYTES;
    size_t plain_len = 2 + secret_len;
    HUSH_TRY(kdfa_sha256(s->seed, "STORAGE", name, name_len, s->sym_key, sizeof s->sym_key, err));
    HUSH_TRY(kdfa_sha256(s->seed, "INTEGRITY", NULL, 0, s->hmac_key, sizeof s->hmac_key, err));
    HUSH_TRY(encrypt_identity(s, plain_len, enc, err));
    HUSH_TRY(outer_hmac(s, enc, plain_len, name, name_len, hmac, err));
    put_u16(out->id_object, 2 + EK_DIGEST_BYTES + plain_len);
    put_u16(out->id_object + 2, EK_DIGEST_BYTES);
    out->id_object_len = 4 + EK_DIGEST_BYTES + plain_len;
cleanup:
    return status;
}

/* Both halves: for an RSA EK from the seed already in `s` (drawn or
 * given), for an ECC EK from one agreed here (so never a given one). */
static hush_status make_credential(const void *ek_spki_der, size_t ek_len, const void *aik_name,
                                   size_t name_len, const void *secret, size_t secret_len,
                                   bool seed_given, credential_secrets *s,
                                   hush_credential *out, hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_PKEY *ek = NULL;
    HUSH_TRY(load_ek(ek_spki_der, ek_len, &ek, err));
    bool rsa = EVP_PKEY_is_a(ek, "RSA");
    HUSH_ENSURE(rsa || !seed_given, HUSH_E_ARGUMENT,
                "hush_credential_make_derand: an ECC EK's seed is agreed, not given");
    if (!rsa)
        HUSH_TRY(agree_seed(ek, s, out, err));
    put_u16(s->plain, secret_len);
    memcpy(s->plain + 2, secret, secret_len);
    HUSH_TRY(make_id_object(s, secret_len, aik_name, name_len, out, err));
    if (rsa)
        HUSH_TRY(encrypt_seed(ek, s, out, err));
cleanup:
    EVP_PKEY_free(ek);
    return status;
}

/* The arguments both entry points share, checked before any work. */
static hush_status check_credential_args(const void *ek_spki_der, const void *aik_name,
                                         size_t name_len, const void *secret, size_t secret_len,
                                         hush_credential *out, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(ek_spki_der != NULL && aik_name != NULL && secret != NULL && out != NULL,
                HUSH_E_ARGUMENT, "hush_credential_make: NULL argument");
    HUSH_ENSURE(secret_len >= 1 && secret_len <= HUSH_CREDENTIAL_SECRET_MAX, HUSH_E_ARGUMENT,
                "secret: must be 1 to %u bytes", HUSH_CREDENTIAL_SECRET_MAX);
    HUSH_ENSURE(name_well_formed(aik_name, name_len), HUSH_E_FORMAT,
                "aik_name: not a hash algorithm followed by a digest of its size");
cleanup:
    return status;
}

hush_status hush_credential_make_derand(const void *ek_spki_der, size_t ek_len,
                                               const void *aik_name, size_t name_len,
                                               const void *secret, size_t secret_len,
                                               const unsigned char seed[HUSH_CREDENTIAL_SEED_BYTES],
                                               hush_credential *out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush__secret_block block = {0};
    if (out != NULL)
        *out = (hush_credential){0};
    HUSH_ENSURE(seed != NULL, HUSH_E_ARGUMENT, "hush_credential_make_derand: NULL seed");
    HUSH_TRY(check_credential_args(ek_spki_der, aik_name, name_len, secret, secret_len, out, err));
    HUSH_TRY(hush__init(err));
    HUSH_TRY(hush__secret_block_new(sizeof(credential_secrets), &block, err));
    credential_secrets *s = block.data;
    memcpy(s->seed, seed, sizeof s->seed);
    HUSH_TRY(make_credential(ek_spki_der, ek_len, aik_name, name_len, secret, secret_len, true, s,
                             out, err));
cleanup:
    hush__secret_block_free(&block);
    if (status != HUSH_OK && out != NULL)
        *out = (hush_credential){0};
    return status;
}

hush_status hush_credential_make(const void *ek_spki_der, size_t ek_len,
                                        const void *aik_name, size_t name_len,
                                        const void *secret, size_t secret_len,
                                        hush_credential *out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush__secret_block block = {0};
    if (out != NULL)
        *out = (hush_credential){0};
    HUSH_TRY(check_credential_args(ek_spki_der, aik_name, name_len, secret, secret_len, out, err));
    HUSH_TRY(hush__init(err));
    HUSH_TRY(hush__secret_block_new(sizeof(credential_secrets), &block, err));
    credential_secrets *s = block.data;
    HUSH_OSSL(RAND_priv_bytes(s->seed, sizeof s->seed) == 1, "drawing a credential seed");
    HUSH_TRY(make_credential(ek_spki_der, ek_len, aik_name, name_len, secret, secret_len, false, s,
                             out, err));
cleanup:
    hush__secret_block_free(&block);
    if (status != HUSH_OK && out != NULL)
        *out = (hush_credential){0};
    return status;
}
