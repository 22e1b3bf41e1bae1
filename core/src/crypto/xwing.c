/* xwing.c — X-Wing (draft-connolly-cfrg-xwing-kem), ML-KEM-768 (mlkem.h)
 * beside OpenSSL's X25519, joined by the SHA3-256 combiner.
 *
 * A private key is a 32-byte seed; SHAKE256(seed, 96) gives ML-KEM's d || z
 * and the X25519 private key. The shared secret is
 * SHA3-256(ss_M || ss_X || ct_X || pk_X || XWingLabel), the label last.
 *
 * OpenSSL refuses an X25519 result of all zeros (a low-order peer point).
 * Whether that happens depends only on the public point, so the refusal
 * (HUSH_E_KEY) tells an attacker nothing about our keys. */
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "crypto/crypto_internal.h"
#include "hushcall/secmem.h"

/* "\./" "/^\" */
static const unsigned char xwing_label[6] = {0x5c, 0x2e, 0x2f, 0x2f, 0x5e, 0x5c};

#define PK_X_OFFSET HUSH_MLKEM768_ENCAPS_KEY_BYTES
#define CT_X_OFFSET HUSH_MLKEM768_CIPHERTEXT_BYTES

/* ---- X25519 through OpenSSL --------------------------------------------- */

/* The public key of an X25519 private key (the base-point product). */
HUSH_MUST_USE
static hush_status x25519_public(const unsigned char sk[HUSH_X25519_KEY_BYTES],
                                 unsigned char pk[HUSH_X25519_KEY_BYTES], hush_error *err)
{
    hush_status status = HUSH_OK;
    size_t len = HUSH_X25519_KEY_BYTES;
    EVP_PKEY *key = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, sk, HUSH_X25519_KEY_BYTES);
    HUSH_OSSL(key != NULL, "X25519 private key");
    HUSH_OSSL(EVP_PKEY_get_raw_public_key(key, pk, &len) == 1 && len == HUSH_X25519_KEY_BYTES,
              "X25519 public key");
cleanup:
    EVP_PKEY_free(key);
    return status;
}

/* An OpenSSL key from a private key and its known public key: importing
 * both spares OpenSSL recomputing the public one. */
HUSH_MUST_USE
static hush_status x25519_key(const unsigned char sk[HUSH_X25519_KEY_BYTES],
                              const unsigned char pk[HUSH_X25519_KEY_BYTES], EVP_PKEY **out,
                              hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "X25519", NULL);
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PRIV_KEY, (void *)sk,
                                          HUSH_X25519_KEY_BYTES),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)pk,
                                          HUSH_X25519_KEY_BYTES),
        OSSL_PARAM_construct_end(),
    };
    *out = NULL;
    HUSH_OSSL(ctx != NULL && EVP_PKEY_fromdata_init(ctx) == 1, "X25519 key import");
    HUSH_OSSL(EVP_PKEY_fromdata(ctx, out, EVP_PKEY_KEYPAIR, params) == 1, "X25519 key import");
cleanup:
    EVP_PKEY_CTX_free(ctx);
    return status;
}

/* X25519(our key, peer's public key). HUSH_E_KEY for a low-order peer. */
HUSH_MUST_USE
static hush_status x25519_derive(EVP_PKEY *ours, const unsigned char peer[HUSH_X25519_KEY_BYTES],
                                 unsigned char out[HUSH_X25519_KEY_BYTES], hush_error *err)
{
    hush_status status = HUSH_OK;
    size_t len = HUSH_X25519_KEY_BYTES;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *theirs =
        EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, peer, HUSH_X25519_KEY_BYTES);
    HUSH_OSSL(theirs != NULL, "X25519 peer key");
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, ours, NULL);
    HUSH_OSSL(ctx != NULL && EVP_PKEY_derive_init(ctx) == 1, "X25519 derive");
    HUSH_OSSL(EVP_PKEY_derive_set_peer(ctx, theirs) == 1, "X25519 peer key");
    if (EVP_PKEY_derive(ctx, out, &len) != 1 || len != HUSH_X25519_KEY_BYTES)
        HUSH_BAIL_WITH(hush__fail_openssl(err, HUSH_E_KEY, "X25519 with a low-order point"));
cleanup:
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(theirs);
    return status;
}

/* ---- X-Wing ------------------------------------------------------------- */

/* SHA3-256(ss_M || ss_X || ct_X || pk_X || XWingLabel) */
HUSH_MUST_USE
static hush_status combine(const unsigned char ss_m[HUSH_MLKEM768_SHARED_SECRET_BYTES],
                           const unsigned char ss_x[HUSH_X25519_KEY_BYTES],
                           const unsigned char ct_x[HUSH_X25519_KEY_BYTES],
                           const unsigned char pk_x[HUSH_X25519_KEY_BYTES],
                           unsigned char ss[HUSH_XWING_SHARED_SECRET_BYTES], hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    HUSH_OSSL(ctx != NULL && EVP_DigestInit_ex(ctx, hush__sha3_256(), NULL) == 1,
              "X-Wing combiner");
    HUSH_OSSL(EVP_DigestUpdate(ctx, ss_m, HUSH_MLKEM768_SHARED_SECRET_BYTES) == 1 &&
                  EVP_DigestUpdate(ctx, ss_x, HUSH_X25519_KEY_BYTES) == 1 &&
                  EVP_DigestUpdate(ctx, ct_x, HUSH_X25519_KEY_BYTES) == 1 &&
                  EVP_DigestUpdate(ctx, pk_x, HUSH_X25519_KEY_BYTES) == 1 &&
                  EVP_DigestUpdate(ctx, xwing_label, sizeof xwing_label) == 1,
              "X-Wing combiner");
    HUSH_OSSL(EVP_DigestFinal_ex(ctx, ss, NULL) == 1, "X-Wing combiner");
cleanup:
    EVP_MD_CTX_free(ctx);
    return status;
}

hush_status hush__xwing_expand(const unsigned char seed[HUSH_XWING_PRIVATE_KEY_BYTES],
                               hush_xwing_expanded *out, hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char expanded[HUSH_MLKEM768_SEED_BYTES + HUSH_X25519_KEY_BYTES];
    EVP_MD_CTX *ctx = NULL;
    HUSH_ENSURE_REF(seed, "X-Wing private key is NULL");
    HUSH_ENSURE_REF(out, "expanded key is NULL");
    HUSH_TRY(hush__init(err));
    ctx = EVP_MD_CTX_new();
    HUSH_OSSL(ctx != NULL && EVP_DigestInit_ex(ctx, hush__shake256(), NULL) == 1 &&
                  EVP_DigestUpdate(ctx, seed, HUSH_XWING_PRIVATE_KEY_BYTES) == 1 &&
                  EVP_DigestFinalXOF(ctx, expanded, sizeof expanded) == 1,
              "X-Wing key expansion");
    HUSH_TRY(hush_mlkem768_keygen_from_seed(expanded, out->pk, out->mlkem_dk, err));
    memcpy(out->x25519_sk, expanded + HUSH_MLKEM768_SEED_BYTES, HUSH_X25519_KEY_BYTES);
    HUSH_TRY(x25519_public(out->x25519_sk, out->pk + PK_X_OFFSET, err));
cleanup:
    if (status != HUSH_OK && out != NULL)
        hush_memzero(out, sizeof *out);
    hush_memzero(expanded, sizeof expanded);
    EVP_MD_CTX_free(ctx);
    return status;
}

hush_status hush__xwing_decaps_expanded(const hush_xwing_expanded *key,
                                        const unsigned char ct[HUSH_XWING_CIPHERTEXT_BYTES],
                                        unsigned char ss[HUSH_XWING_SHARED_SECRET_BYTES],
                                        hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char ss_m[HUSH_MLKEM768_SHARED_SECRET_BYTES], ss_x[HUSH_X25519_KEY_BYTES];
    EVP_PKEY *sk_x = NULL;
    HUSH_ENSURE_REF(key, "expanded key is NULL");
    HUSH_ENSURE_REF(ct, "ct is NULL");
    HUSH_ENSURE_REF(ss, "ss is NULL");
    HUSH_TRY(hush_mlkem768_decaps(key->mlkem_dk, ct, ss_m, err));
    HUSH_TRY(x25519_key(key->x25519_sk, key->pk + PK_X_OFFSET, &sk_x, err));
    HUSH_TRY(x25519_derive(sk_x, ct + CT_X_OFFSET, ss_x, err));
    HUSH_TRY(combine(ss_m, ss_x, ct + CT_X_OFFSET, key->pk + PK_X_OFFSET, ss, err));
cleanup:
    hush_memzero(ss_m, sizeof ss_m);
    hush_memzero(ss_x, sizeof ss_x);
    EVP_PKEY_free(sk_x);
    return status;
}

hush_status hush_xwing_public_key(const unsigned char sk[HUSH_XWING_PRIVATE_KEY_BYTES],
                                  unsigned char pk[HUSH_XWING_PUBLIC_KEY_BYTES], hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_xwing_expanded expanded;
    HUSH_ENSURE_REF(pk, "pk is NULL");
    HUSH_TRY(hush__xwing_expand(sk, &expanded, err));
    memcpy(pk, expanded.pk, HUSH_XWING_PUBLIC_KEY_BYTES);
cleanup:
    hush_memzero(&expanded, sizeof expanded);
    return status;
}

hush_status hush_xwing_keygen(unsigned char sk[HUSH_XWING_PRIVATE_KEY_BYTES],
                              unsigned char pk[HUSH_XWING_PUBLIC_KEY_BYTES], hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE_REF(sk, "sk is NULL");
    HUSH_TRY(hush__init(err));
    HUSH_OSSL(RAND_priv_bytes(sk, HUSH_XWING_PRIVATE_KEY_BYTES) == 1, "RAND_priv_bytes");
    HUSH_TRY(hush_xwing_public_key(sk, pk, err));
cleanup:
    if (status != HUSH_OK && sk != NULL)
        hush_memzero(sk, HUSH_XWING_PRIVATE_KEY_BYTES);
    return status;
}

hush_status hush_xwing_encaps_derand(const unsigned char pk[HUSH_XWING_PUBLIC_KEY_BYTES],
                                     const unsigned char eseed[HUSH_XWING_ENCAPS_SEED_BYTES],
                                     unsigned char ct[HUSH_XWING_CIPHERTEXT_BYTES],
                                     unsigned char ss[HUSH_XWING_SHARED_SECRET_BYTES],
                                     hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char ss_m[HUSH_MLKEM768_SHARED_SECRET_BYTES], ss_x[HUSH_X25519_KEY_BYTES];
    const unsigned char *ek_x = eseed + HUSH_MLKEM768_MESSAGE_BYTES;
    EVP_PKEY *ephemeral = NULL;
    HUSH_ENSURE_REF(pk, "pk is NULL");
    HUSH_ENSURE_REF(eseed, "eseed is NULL");
    HUSH_ENSURE_REF(ct, "ct is NULL");
    HUSH_ENSURE_REF(ss, "ss is NULL");
    HUSH_TRY(hush_mlkem768_encaps_derand(pk, eseed, ct, ss_m, err));
    HUSH_TRY(x25519_public(ek_x, ct + CT_X_OFFSET, err));
    HUSH_TRY(x25519_key(ek_x, ct + CT_X_OFFSET, &ephemeral, err));
    HUSH_TRY(x25519_derive(ephemeral, pk + PK_X_OFFSET, ss_x, err));
    HUSH_TRY(combine(ss_m, ss_x, ct + CT_X_OFFSET, pk + PK_X_OFFSET, ss, err));
cleanup:
    hush_memzero(ss_m, sizeof ss_m);
    hush_memzero(ss_x, sizeof ss_x);
    EVP_PKEY_free(ephemeral);
    return status;
}

hush_status hush_xwing_encaps(const unsigned char pk[HUSH_XWING_PUBLIC_KEY_BYTES],
                              unsigned char ct[HUSH_XWING_CIPHERTEXT_BYTES],
                              unsigned char ss[HUSH_XWING_SHARED_SECRET_BYTES], hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char eseed[HUSH_XWING_ENCAPS_SEED_BYTES];
    HUSH_TRY(hush__init(err));
    HUSH_OSSL(RAND_priv_bytes(eseed, sizeof eseed) == 1, "RAND_priv_bytes");
    HUSH_TRY(hush_xwing_encaps_derand(pk, eseed, ct, ss, err));
cleanup:
    hush_memzero(eseed, sizeof eseed);
    return status;
}

hush_status hush_xwing_decaps(const unsigned char sk[HUSH_XWING_PRIVATE_KEY_BYTES],
                              const unsigned char ct[HUSH_XWING_CIPHERTEXT_BYTES],
                              unsigned char ss[HUSH_XWING_SHARED_SECRET_BYTES], hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_xwing_expanded expanded;
    HUSH_TRY(hush__xwing_expand(sk, &expanded, err));
    HUSH_TRY(hush__xwing_decaps_expanded(&expanded, ct, ss, err));
cleanup:
    hush_memzero(&expanded, sizeof expanded);
    return status;
}
