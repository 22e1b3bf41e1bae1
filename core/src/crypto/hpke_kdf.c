/* hpke_kdf.c — HPKE's labeled key derivation: LabeledExtract and
 * LabeledExpand over HKDF-SHA256 (RFC 9180 §4), and the one-stage
 * LabeledDerive over SHAKE256 (draft-ietf-hpke-pq). HKDF is written as
 * HMAC fed in parts (RFC 5869), so the labels, suite ids and secrets are
 * hashed where they lie and no secret is copied into a scratch buffer. */
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "internal.h"
#include "crypto/crypto_internal.h"
#include "hushcall/secmem.h"

#define HPKE_VERSION_LABEL "HPKE-v1"
#define HKDF_SHA256_MAX_OUTPUT (255u * HUSH_HPKE_SECRET_BYTES)
#define SHAKE_MAX_OUTPUT 65535u

static void put_u16(unsigned char out[2], size_t value)
{
    out[0] = (unsigned char)(value >> 8);
    out[1] = (unsigned char)value;
}

hush_status hush__hmac_sha256(const unsigned char *key, size_t key_len, const hush__span *parts,
                              size_t n_parts, unsigned char out[HUSH_HPKE_SECRET_BYTES],
                              hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_MAC_CTX *ctx = NULL;
    size_t out_len = 0;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };

    HUSH_OSSL((ctx = EVP_MAC_CTX_new(hush__hmac())) != NULL, "creating an HMAC context");
    HUSH_OSSL(EVP_MAC_init(ctx, key, key_len, params) == 1, "HMAC init");
    for (size_t i = 0; i < n_parts; i++)
        HUSH_OSSL(parts[i].len == 0 || EVP_MAC_update(ctx, parts[i].data, parts[i].len) == 1,
                  "HMAC update");
    HUSH_OSSL(EVP_MAC_final(ctx, out, &out_len, HUSH_HPKE_SECRET_BYTES) == 1 &&
                  out_len == HUSH_HPKE_SECRET_BYTES,
              "HMAC final");
cleanup:
    EVP_MAC_CTX_free(ctx);
    return status;
}

hush_status hush__hpke_labeled_extract(const unsigned char *suite_id, size_t suite_id_len,
                                       const void *salt, size_t salt_len, const char *label,
                                       const hush__span *ikm, size_t ikm_parts,
                                       unsigned char prk[HUSH_HPKE_SECRET_BYTES], hush_error *err)
{
    /* An empty salt is HashLen zero bytes (RFC 5869 §2.2). */
    static const unsigned char zero_salt[HUSH_HPKE_SECRET_BYTES];
    hush_status status = HUSH_OK;
    hush__span parts[8] = {
        {HPKE_VERSION_LABEL, strlen(HPKE_VERSION_LABEL)},
        {suite_id, suite_id_len},
        {label, strlen(label)},
    };
    size_t n = 3;

    HUSH_ENSURE(ikm_parts <= sizeof parts / sizeof parts[0] - n, HUSH_E_INTERNAL,
                "LabeledExtract: too many input parts");
    for (size_t i = 0; i < ikm_parts; i++)
        parts[n++] = ikm[i];
    if (salt_len == 0)
        HUSH_TRY(hush__hmac_sha256(zero_salt, sizeof zero_salt, parts, n, prk, err));
    else
        HUSH_TRY(hush__hmac_sha256(salt, salt_len, parts, n, prk, err));
cleanup:
    return status;
}

hush_status hush__hpke_labeled_expand(const unsigned char *suite_id, size_t suite_id_len,
                                      const unsigned char prk[HUSH_HPKE_SECRET_BYTES],
                                      const char *label, const hush__span *info, size_t info_parts,
                                      unsigned char *out, size_t len, hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char length_prefix[2];
    unsigned char counter = 0;
    unsigned char block[HUSH_HPKE_SECRET_BYTES];
    hush__span parts[10];
    size_t fixed = 0;

    HUSH_ENSURE(len <= HKDF_SHA256_MAX_OUTPUT, HUSH_E_LIMIT,
                "LabeledExpand: %zu bytes exceed HKDF-SHA256's %u", len, HKDF_SHA256_MAX_OUTPUT);
    HUSH_ENSURE(info_parts <= sizeof parts / sizeof parts[0] - 6, HUSH_E_INTERNAL,
                "LabeledExpand: too many info parts");
    put_u16(length_prefix, len);
    /* T(i) = HMAC(prk, T(i-1) || labeled_info || i); T(0) is empty. */
    parts[fixed++] = (hush__span){NULL, 0}; /* T(i-1), set per block */
    parts[fixed++] = (hush__span){length_prefix, sizeof length_prefix};
    parts[fixed++] = (hush__span){HPKE_VERSION_LABEL, strlen(HPKE_VERSION_LABEL)};
    parts[fixed++] = (hush__span){suite_id, suite_id_len};
    parts[fixed++] = (hush__span){label, strlen(label)};
    for (size_t i = 0; i < info_parts; i++)
        parts[fixed++] = info[i];
    parts[fixed++] = (hush__span){&counter, 1};

    for (size_t done = 0; done < len; done += sizeof block) {
        counter++;
        HUSH_TRY(hush__hmac_sha256(prk, HUSH_HPKE_SECRET_BYTES, parts, fixed, block, err));
        size_t take = len - done < sizeof block ? len - done : sizeof block;
        memcpy(out + done, block, take);
        parts[0] = (hush__span){out + done, sizeof block};
        /* The last block may be partial: T(i) is then only in `block`. */
        if (take < sizeof block)
            break;
    }
cleanup:
    hush_memzero(block, sizeof block);
    return status;
}

hush_status hush__hpke_labeled_derive(const unsigned char *suite_id, size_t suite_id_len,
                                      const hush__span *ikm, size_t ikm_parts, const char *label,
                                      const hush__span *context, size_t context_parts,
                                      unsigned char *out, size_t len, hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_MD_CTX *md = NULL;
    unsigned char label_len[2], out_len[2];
    size_t label_bytes = strlen(label);

    HUSH_ENSURE(len <= SHAKE_MAX_OUTPUT, HUSH_E_LIMIT,
                "LabeledDerive: %zu bytes exceed the one-stage KDF's %u", len, SHAKE_MAX_OUTPUT);
    put_u16(label_len, label_bytes);
    put_u16(out_len, len);
    /* SHAKE256(ikm || "HPKE-v1" || suite_id || I2OSP(len(label), 2) ||
     * label || I2OSP(L, 2) || context, L) */
    HUSH_OSSL((md = EVP_MD_CTX_new()) != NULL, "creating a SHAKE256 context");
    HUSH_OSSL(EVP_DigestInit_ex(md, EVP_shake256(), NULL) == 1, "SHAKE256 init");
    for (size_t i = 0; i < ikm_parts; i++)
        HUSH_OSSL(EVP_DigestUpdate(md, ikm[i].data, ikm[i].len) == 1, "SHAKE256 update");
    HUSH_OSSL(EVP_DigestUpdate(md, HPKE_VERSION_LABEL, strlen(HPKE_VERSION_LABEL)) == 1 &&
                  EVP_DigestUpdate(md, suite_id, suite_id_len) == 1 &&
                  EVP_DigestUpdate(md, label_len, sizeof label_len) == 1 &&
                  EVP_DigestUpdate(md, label, label_bytes) == 1 &&
                  EVP_DigestUpdate(md, out_len, sizeof out_len) == 1,
              "SHAKE256 update");
    for (size_t i = 0; i < context_parts; i++)
        HUSH_OSSL(EVP_DigestUpdate(md, context[i].data, context[i].len) == 1, "SHAKE256 update");
    /* OpenSSL 3.0 refuses a zero-length squeeze; L = 0 derives nothing. */
    if (len > 0)
        HUSH_OSSL(EVP_DigestFinalXOF(md, out, len) == 1, "SHAKE256 squeeze");
cleanup:
    EVP_MD_CTX_free(md);
    return status;
}
