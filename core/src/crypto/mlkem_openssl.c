/* mlkem_openssl.c — ML-KEM-768 on OpenSSL's own implementation, compiled
 * instead of mlkem.c when the core is built against OpenSSL >= 3.5
 * (EVP_PKEY-ML-KEM(7), EVP_KEM-ML-KEM(7)).
 *
 * The byte-array interface maps onto OpenSSL's key objects: a key pair is
 * generated from the seed parameter, encapsulation imports ek (OpenSSL's
 * import runs the FIPS 203 §7.2 modulus check) and passes m as "ikme",
 * decapsulation imports dk (the §7.3 hash check). OpenSSL also runs a
 * pairwise-consistency test when it imports a dk, so a dk whose secret
 * half does not belong to its ek is refused here (HUSH_E_KEY) where
 * mlkem.c would decapsulate with it. */
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "crypto/crypto_internal.h"
#include "hushcall/secmem.h"

#define ALGORITHM "ML-KEM-768"

hush_status hush_mlkem768_keygen_from_seed(const unsigned char seed[HUSH_MLKEM768_SEED_BYTES],
                                           unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES],
                                           unsigned char dk[HUSH_MLKEM768_DECAPS_KEY_BYTES],
                                           hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *key = NULL;
    size_t ek_len = HUSH_MLKEM768_ENCAPS_KEY_BYTES, dk_len = HUSH_MLKEM768_DECAPS_KEY_BYTES;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_ML_KEM_SEED, (void *)seed,
                                          HUSH_MLKEM768_SEED_BYTES),
        OSSL_PARAM_construct_end(),
    };
    HUSH_ENSURE_REF(seed, "seed is NULL");
    HUSH_ENSURE_REF(ek, "ek is NULL");
    HUSH_ENSURE_REF(dk, "dk is NULL");
    HUSH_TRY(hush__init(err));
    ctx = EVP_PKEY_CTX_new_from_name(NULL, ALGORITHM, NULL);
    HUSH_OSSL(ctx != NULL && EVP_PKEY_keygen_init(ctx) == 1, "ML-KEM keygen");
    HUSH_OSSL(EVP_PKEY_CTX_set_params(ctx, params) == 1, "ML-KEM seed");
    HUSH_OSSL(EVP_PKEY_generate(ctx, &key) == 1, "ML-KEM keygen");
    HUSH_OSSL(EVP_PKEY_get_raw_public_key(key, ek, &ek_len) == 1 &&
                  ek_len == HUSH_MLKEM768_ENCAPS_KEY_BYTES,
              "ML-KEM ek");
    HUSH_OSSL(EVP_PKEY_get_raw_private_key(key, dk, &dk_len) == 1 &&
                  dk_len == HUSH_MLKEM768_DECAPS_KEY_BYTES,
              "ML-KEM dk");
cleanup:
    if (status != HUSH_OK && dk != NULL)
        hush_memzero(dk, HUSH_MLKEM768_DECAPS_KEY_BYTES);
    EVP_PKEY_free(key);
    EVP_PKEY_CTX_free(ctx);
    return status;
}

/* OpenSSL's key for ek; HUSH_E_KEY when the import (§7.2) refuses it. */
HUSH_MUST_USE
static hush_status import_encaps_key(const unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES],
                                     EVP_PKEY **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE_REF(ek, "ek is NULL");
    HUSH_TRY(hush__init(err));
    *out = EVP_PKEY_new_raw_public_key_ex(NULL, ALGORITHM, NULL, ek,
                                          HUSH_MLKEM768_ENCAPS_KEY_BYTES);
    if (*out == NULL)
        HUSH_BAIL_WITH(hush__fail_openssl(err, HUSH_E_KEY,
                                          "ML-KEM encapsulation key (FIPS 203 7.2)"));
cleanup:
    return status;
}

hush_status hush_mlkem768_check_encaps_key(const unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES],
                                           hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_PKEY *key = NULL;
    HUSH_TRY(import_encaps_key(ek, &key, err));
cleanup:
    EVP_PKEY_free(key);
    return status;
}

hush_status hush_mlkem768_encaps_derand(const unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES],
                                        const unsigned char m[HUSH_MLKEM768_MESSAGE_BYTES],
                                        unsigned char ct[HUSH_MLKEM768_CIPHERTEXT_BYTES],
                                        unsigned char ss[HUSH_MLKEM768_SHARED_SECRET_BYTES],
                                        hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_PKEY *key = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    size_t ct_len = HUSH_MLKEM768_CIPHERTEXT_BYTES, ss_len = HUSH_MLKEM768_SHARED_SECRET_BYTES;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_KEM_PARAM_IKME, (void *)m,
                                          HUSH_MLKEM768_MESSAGE_BYTES),
        OSSL_PARAM_construct_end(),
    };
    HUSH_ENSURE_REF(m, "m is NULL");
    HUSH_ENSURE_REF(ct, "ct is NULL");
    HUSH_ENSURE_REF(ss, "ss is NULL");
    HUSH_TRY(import_encaps_key(ek, &key, err));
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
    HUSH_OSSL(ctx != NULL && EVP_PKEY_encapsulate_init(ctx, params) == 1, "ML-KEM encaps");
    HUSH_OSSL(EVP_PKEY_encapsulate(ctx, ct, &ct_len, ss, &ss_len) == 1 &&
                  ct_len == HUSH_MLKEM768_CIPHERTEXT_BYTES &&
                  ss_len == HUSH_MLKEM768_SHARED_SECRET_BYTES,
              "ML-KEM encaps");
cleanup:
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(key);
    return status;
}

hush_status hush_mlkem768_decaps(const unsigned char dk[HUSH_MLKEM768_DECAPS_KEY_BYTES],
                                 const unsigned char ct[HUSH_MLKEM768_CIPHERTEXT_BYTES],
                                 unsigned char ss[HUSH_MLKEM768_SHARED_SECRET_BYTES],
                                 hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_PKEY *key = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    size_t ss_len = HUSH_MLKEM768_SHARED_SECRET_BYTES;
    HUSH_ENSURE_REF(dk, "dk is NULL");
    HUSH_ENSURE_REF(ct, "ct is NULL");
    HUSH_ENSURE_REF(ss, "ss is NULL");
    HUSH_TRY(hush__init(err));
    key = EVP_PKEY_new_raw_private_key_ex(NULL, ALGORITHM, NULL, dk,
                                          HUSH_MLKEM768_DECAPS_KEY_BYTES);
    if (key == NULL)
        HUSH_BAIL_WITH(hush__fail_openssl(err, HUSH_E_KEY,
                                          "ML-KEM decapsulation key (FIPS 203 7.3)"));
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
    HUSH_OSSL(ctx != NULL && EVP_PKEY_decapsulate_init(ctx, NULL) == 1, "ML-KEM decaps");
    HUSH_OSSL(EVP_PKEY_decapsulate(ctx, ss, &ss_len, ct, HUSH_MLKEM768_CIPHERTEXT_BYTES) == 1 &&
                  ss_len == HUSH_MLKEM768_SHARED_SECRET_BYTES,
              "ML-KEM decaps");
cleanup:
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(key);
    return status;
}

const char *hush_mlkem768_implementation(void) { return "openssl"; }
