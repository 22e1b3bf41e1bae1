/* hpke_keys.c — HPKE key pairs and public keys, and the two KEMs' Encap and
 * Decap: DHKEM(X25519, HKDF-SHA256) (RFC 9180 §4.1, §7.1) on OpenSSL's
 * X25519, and X-Wing (draft-connolly-cfrg-xwing-kem, KEM id 0x647A of
 * draft-ietf-hpke-pq) on xwing.h.
 *
 * Private keys: an X25519 key is an EVP_PKEY, whose scalar OpenSSL keeps in
 * its secure heap (hush__init sets it up before any key is made); an X-Wing
 * key is its 32-byte seed and the key expanded from it once, together in a
 * hush_secbuf, so decapsulation does not expand it again. Handles are
 * immutable and reference counted like keys.c's. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "hushcall/hpke.h"
#include "hushcall/mlkem.h"
#include "hushcall/xwing.h"
#include "internal.h"
#include "crypto/crypto_internal.h"

#define X25519_BYTES 32u
#define DHKEM_SUITE_ID_BYTES 5u /* "KEM" || I2OSP(kem_id, 2) */

struct hush_hpke_pubkey {
    atomic_uint refcount;
    uint16_t kem_id;
    size_t len;
    unsigned char bytes[]; /* SerializePublicKey's output */
};

/* An X-Wing private key as a key pair holds it, in secure memory. */
typedef struct xwing_secret {
    unsigned char seed[HUSH_XWING_PRIVATE_KEY_BYTES];
    hush_xwing_expanded expanded;
} xwing_secret;

struct hush_hpke_keypair {
    atomic_uint refcount;
    uint16_t kem_id;
    EVP_PKEY *x25519;   /* DHKEM(X25519): the private key (OpenSSL secure heap) */
    hush_secbuf *xwing; /* X-Wing: one xwing_secret */
    hush_hpke_pubkey *pub;
};

static const xwing_secret *xwing_of(const hush_hpke_keypair *kp)
{
    return (const xwing_secret *)(const void *)hush_secbuf_bytes(kp->xwing);
}

/* ---- sizes ------------------------------------------------------------- */

size_t hush_hpke_kem_enc_bytes(uint16_t kem_id)
{
    switch (kem_id) {
    case HUSH_HPKE_KEM_X25519_SHA256: return X25519_BYTES;
    case HUSH_HPKE_KEM_XWING: return HUSH_XWING_CIPHERTEXT_BYTES;
    default: return 0;
    }
}

size_t hush_hpke_kem_public_key_bytes(uint16_t kem_id)
{
    switch (kem_id) {
    case HUSH_HPKE_KEM_X25519_SHA256: return X25519_BYTES;
    case HUSH_HPKE_KEM_XWING: return HUSH_XWING_PUBLIC_KEY_BYTES;
    default: return 0;
    }
}

size_t hush_hpke_kem_private_key_bytes(uint16_t kem_id)
{
    switch (kem_id) {
    case HUSH_HPKE_KEM_X25519_SHA256: return X25519_BYTES;
    case HUSH_HPKE_KEM_XWING: return HUSH_XWING_PRIVATE_KEY_BYTES;
    default: return 0;
    }
}

HUSH_MUST_USE
static hush_status check_kem(uint16_t kem_id, const char *function, hush_error *err)
{
    if (hush_hpke_kem_enc_bytes(kem_id) == 0)
        return hush__fail(err, HUSH_E_UNSUPPORTED, "%s: KEM id 0x%04x is not supported", function,
                          (unsigned)kem_id);
    return HUSH_OK;
}

static void kem_suite_id(uint16_t kem_id, unsigned char out[DHKEM_SUITE_ID_BYTES])
{
    memcpy(out, "KEM", 3);
    out[3] = (unsigned char)(kem_id >> 8);
    out[4] = (unsigned char)kem_id;
}

/* ---- public keys ------------------------------------------------------- */

HUSH_MUST_USE
static hush_status pubkey_new(uint16_t kem_id, const unsigned char *bytes, size_t len,
                              hush_hpke_pubkey **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_hpke_pubkey *pk = malloc(sizeof *pk + len);
    HUSH_ENSURE(pk != NULL, HUSH_E_NOMEM, "out of memory");
    atomic_init(&pk->refcount, 1);
    pk->kem_id = kem_id;
    pk->len = len;
    memcpy(pk->bytes, bytes, len);
    *out = pk;
cleanup:
    return status;
}

hush_status hush_hpke_pubkey_from_bytes(uint16_t kem_id, const void *pk, size_t len,
                                        hush_hpke_pubkey **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(out != NULL && pk != NULL, HUSH_E_ARGUMENT,
                "hush_hpke_pubkey_from_bytes: NULL argument");
    *out = NULL;
    HUSH_TRY(check_kem(kem_id, "hush_hpke_pubkey_from_bytes", err));
    HUSH_ENSURE(len == hush_hpke_kem_public_key_bytes(kem_id), HUSH_E_KEY,
                "public key of %zu bytes: KEM 0x%04x keys have %zu", len, (unsigned)kem_id,
                hush_hpke_kem_public_key_bytes(kem_id));
    if (kem_id == HUSH_HPKE_KEM_XWING)
        HUSH_TRY(hush_mlkem768_check_encaps_key(pk, err));
    HUSH_TRY(pubkey_new(kem_id, pk, len, out, err));
cleanup:
    return status;
}

const unsigned char *hush_hpke_pubkey_bytes(const hush_hpke_pubkey *pk, size_t *len)
{
    if (len != NULL)
        *len = pk != NULL ? pk->len : 0;
    return pk != NULL ? pk->bytes : NULL;
}

uint16_t hush_hpke_pubkey_kem(const hush_hpke_pubkey *pk) { return pk != NULL ? pk->kem_id : 0; }

hush_status hush_hpke_pubkey_fingerprint(const hush_hpke_pubkey *pk,
                                         char out[HUSH_FINGERPRINT_LEN], hush_error *err)
{
    static const char hex[] = "0123456789abcdef"; /* indexed by public bytes only */
    hush_status status = HUSH_OK;
    EVP_MD_CTX *md = NULL;
    unsigned char kem_id[2];
    unsigned char digest[32];
    unsigned digest_len = 0;

    HUSH_ENSURE(pk != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_hpke_pubkey_fingerprint: NULL argument");
    kem_id[0] = (unsigned char)(pk->kem_id >> 8);
    kem_id[1] = (unsigned char)pk->kem_id;
    HUSH_OSSL((md = EVP_MD_CTX_new()) != NULL, "creating a SHA-256 context");
    HUSH_OSSL(EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
                  EVP_DigestUpdate(md, kem_id, sizeof kem_id) == 1 &&
                  EVP_DigestUpdate(md, pk->bytes, pk->len) == 1 &&
                  EVP_DigestFinal_ex(md, digest, &digest_len) == 1 &&
                  digest_len == sizeof digest,
              "SHA-256");
    memcpy(out, "sha256:", 7);
    for (size_t i = 0; i < sizeof digest; i++) {
        out[7 + 2 * i] = hex[digest[i] >> 4];
        out[8 + 2 * i] = hex[digest[i] & 15];
    }
    out[HUSH_FINGERPRINT_LEN - 1] = '\0';
cleanup:
    EVP_MD_CTX_free(md);
    return status;
}

hush_hpke_pubkey *hush_hpke_pubkey_ref(hush_hpke_pubkey *pk)
{
    if (pk != NULL)
        atomic_fetch_add_explicit(&pk->refcount, 1, memory_order_relaxed);
    return pk;
}

void hush_hpke_pubkey_free(hush_hpke_pubkey *pk)
{
    /* acq_rel: every other holder's use happens before the free. */
    if (pk == NULL || atomic_fetch_sub_explicit(&pk->refcount, 1, memory_order_acq_rel) != 1)
        return;
    free(pk);
}

/* ---- key pairs --------------------------------------------------------- */

/* Wrap an X25519 private key, taking it over. */
HUSH_MUST_USE
static hush_status keypair_from_x25519(EVP_PKEY **pkey, hush_hpke_keypair **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char pub[X25519_BYTES];
    size_t pub_len = sizeof pub;
    hush_hpke_keypair *kp = calloc(1, sizeof *kp);
    HUSH_ENSURE(kp != NULL, HUSH_E_NOMEM, "out of memory");
    atomic_init(&kp->refcount, 1);
    kp->kem_id = HUSH_HPKE_KEM_X25519_SHA256;
    kp->x25519 = *pkey;
    *pkey = NULL;
    HUSH_OSSL(EVP_PKEY_get_raw_public_key(kp->x25519, pub, &pub_len) == 1 &&
                  pub_len == sizeof pub,
              "reading the X25519 public key");
    HUSH_TRY(pubkey_new(kp->kem_id, pub, pub_len, &kp->pub, err));
    *out = kp;
    kp = NULL;
cleanup:
    hush_hpke_keypair_free(kp);
    return status;
}

/* The X-Wing key pair a seed names: the seed is copied into secure memory
 * and expanded there. */
HUSH_MUST_USE
static hush_status keypair_from_xwing_seed(const unsigned char seed[HUSH_XWING_PRIVATE_KEY_BYTES],
                                           hush_hpke_keypair **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    xwing_secret *secret = NULL;
    hush_hpke_keypair *kp = calloc(1, sizeof *kp);
    HUSH_ENSURE(kp != NULL, HUSH_E_NOMEM, "out of memory");
    atomic_init(&kp->refcount, 1);
    kp->kem_id = HUSH_HPKE_KEM_XWING;
    HUSH_TRY(hush_secbuf_new(sizeof *secret, sizeof *secret, HUSH_SECMEM_DEFAULT, &kp->xwing,
                             err));
    HUSH_TRY(hush_secbuf_reserve(kp->xwing, sizeof *secret, err));
    HUSH_TRY(hush_secbuf_set_len(kp->xwing, sizeof *secret, err));
    secret = (xwing_secret *)(void *)hush_secbuf_data(kp->xwing);
    memcpy(secret->seed, seed, sizeof secret->seed);
    HUSH_TRY(hush__xwing_expand(secret->seed, &secret->expanded, err));
    HUSH_TRY(pubkey_new(kp->kem_id, secret->expanded.pk, sizeof secret->expanded.pk, &kp->pub,
                        err));
    *out = kp;
    kp = NULL;
cleanup:
    hush_hpke_keypair_free(kp);
    return status;
}

HUSH_MUST_USE
static hush_status x25519_from_private(const unsigned char sk[X25519_BYTES], EVP_PKEY **out,
                                       hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_OSSL((*out = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, sk, X25519_BYTES)) !=
                  NULL,
              "loading an X25519 private key");
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status x25519_generate(EVP_PKEY **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_PKEY_CTX *ctx = NULL;
    HUSH_OSSL((ctx = EVP_PKEY_CTX_new_from_name(NULL, "X25519", NULL)) != NULL,
              "creating an X25519 key context");
    HUSH_OSSL(EVP_PKEY_keygen_init(ctx) == 1 && EVP_PKEY_generate(ctx, out) == 1,
              "generating an X25519 key");
cleanup:
    EVP_PKEY_CTX_free(ctx);
    return status;
}

/* DHKEM's DeriveKeyPair (RFC 9180 §7.1.3 for X25519): the private key is
 * LabeledExpand(LabeledExtract("", "dkp_prk", ikm), "sk", "", Nsk). */
HUSH_MUST_USE
static hush_status x25519_derive(const void *ikm, size_t ikm_len, EVP_PKEY **out,
                                 hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char suite_id[DHKEM_SUITE_ID_BYTES];
    unsigned char prk[HUSH_HPKE_SECRET_BYTES];
    unsigned char sk[X25519_BYTES];
    const hush__span input = {ikm, ikm_len};

    kem_suite_id(HUSH_HPKE_KEM_X25519_SHA256, suite_id);
    HUSH_TRY(hush__hpke_labeled_extract(suite_id, sizeof suite_id, NULL, 0, "dkp_prk", &input, 1,
                                        prk, err));
    HUSH_TRY(hush__hpke_labeled_expand(suite_id, sizeof suite_id, prk, "sk", NULL, 0, sk,
                                       sizeof sk, err));
    HUSH_TRY(x25519_from_private(sk, out, err));
cleanup:
    hush_memzero(prk, sizeof prk);
    hush_memzero(sk, sizeof sk);
    return status;
}

/* X-Wing's DeriveKeyPair (draft-ietf-hpke-pq): the seed is the one-stage
 * SHAKE256 LabeledDerive(ikm, "DeriveKeyPair", "", Nsk) under "KEM"||id. */
HUSH_MUST_USE
static hush_status xwing_derive_seed(const void *ikm, size_t ikm_len,
                                     unsigned char seed[HUSH_XWING_PRIVATE_KEY_BYTES],
                                     hush_error *err)
{
    unsigned char suite_id[DHKEM_SUITE_ID_BYTES];
    const hush__span input = {ikm, ikm_len};
    kem_suite_id(HUSH_HPKE_KEM_XWING, suite_id);
    return hush__hpke_labeled_derive(suite_id, sizeof suite_id, &input, 1, "DeriveKeyPair", NULL,
                                     0, seed, HUSH_XWING_PRIVATE_KEY_BYTES, err);
}

hush_status hush_hpke_keypair_generate(uint16_t kem_id, hush_hpke_keypair **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_PKEY *pkey = NULL;
    unsigned char seed[HUSH_XWING_PRIVATE_KEY_BYTES];

    HUSH_ENSURE(out != NULL, HUSH_E_ARGUMENT, "hush_hpke_keypair_generate: out is NULL");
    *out = NULL;
    HUSH_TRY(check_kem(kem_id, "hush_hpke_keypair_generate", err));
    HUSH_TRY(hush__init(err)); /* the secure heap, before any private key */
    if (kem_id == HUSH_HPKE_KEM_X25519_SHA256) {
        HUSH_TRY(x25519_generate(&pkey, err));
        HUSH_TRY(keypair_from_x25519(&pkey, out, err));
    } else {
        HUSH_OSSL(RAND_priv_bytes(seed, sizeof seed) == 1, "drawing an X-Wing seed");
        HUSH_TRY(keypair_from_xwing_seed(seed, out, err));
    }
cleanup:
    hush_memzero(seed, sizeof seed);
    EVP_PKEY_free(pkey);
    return status;
}

hush_status hush_hpke_keypair_derive(uint16_t kem_id, const void *ikm, size_t ikm_len,
                                     hush_hpke_keypair **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_PKEY *pkey = NULL;
    unsigned char seed[HUSH_XWING_PRIVATE_KEY_BYTES];

    HUSH_ENSURE(out != NULL && ikm != NULL, HUSH_E_ARGUMENT,
                "hush_hpke_keypair_derive: NULL argument");
    *out = NULL;
    HUSH_TRY(check_kem(kem_id, "hush_hpke_keypair_derive", err));
    HUSH_ENSURE(ikm_len >= hush_hpke_kem_private_key_bytes(kem_id), HUSH_E_ARGUMENT,
                "hush_hpke_keypair_derive: ikm of %zu bytes is shorter than the %zu required",
                ikm_len, hush_hpke_kem_private_key_bytes(kem_id));
    HUSH_TRY(hush__init(err));
    if (kem_id == HUSH_HPKE_KEM_X25519_SHA256) {
        HUSH_TRY(x25519_derive(ikm, ikm_len, &pkey, err));
        HUSH_TRY(keypair_from_x25519(&pkey, out, err));
    } else {
        HUSH_TRY(xwing_derive_seed(ikm, ikm_len, seed, err));
        HUSH_TRY(keypair_from_xwing_seed(seed, out, err));
    }
cleanup:
    hush_memzero(seed, sizeof seed);
    EVP_PKEY_free(pkey);
    return status;
}

hush_status hush_hpke_keypair_from_private(uint16_t kem_id, const void *sk, size_t sk_len,
                                           hush_hpke_keypair **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_PKEY *pkey = NULL;

    HUSH_ENSURE(out != NULL && sk != NULL, HUSH_E_ARGUMENT,
                "hush_hpke_keypair_from_private: NULL argument");
    *out = NULL;
    HUSH_TRY(check_kem(kem_id, "hush_hpke_keypair_from_private", err));
    HUSH_ENSURE(sk_len == hush_hpke_kem_private_key_bytes(kem_id), HUSH_E_KEY,
                "private key of %zu bytes: KEM 0x%04x keys have %zu", sk_len, (unsigned)kem_id,
                hush_hpke_kem_private_key_bytes(kem_id));
    HUSH_TRY(hush__init(err));
    if (kem_id == HUSH_HPKE_KEM_X25519_SHA256) {
        HUSH_TRY(x25519_from_private(sk, &pkey, err));
        HUSH_TRY(keypair_from_x25519(&pkey, out, err));
    } else {
        HUSH_TRY(keypair_from_xwing_seed(sk, out, err));
    }
cleanup:
    EVP_PKEY_free(pkey);
    return status;
}

hush_status hush_hpke_keypair_private(const hush_hpke_keypair *kp, hush_secbuf **out,
                                      hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *buf = NULL;
    size_t len = 0;

    HUSH_ENSURE(kp != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_hpke_keypair_private: NULL argument");
    *out = NULL;
    len = hush_hpke_kem_private_key_bytes(kp->kem_id);
    HUSH_TRY(hush_secbuf_new(len, len, HUSH_SECMEM_DEFAULT, &buf, err));
    HUSH_TRY(hush_secbuf_reserve(buf, len, err));
    if (kp->x25519 != NULL) {
        size_t got = len;
        HUSH_OSSL(EVP_PKEY_get_raw_private_key(kp->x25519, hush_secbuf_data(buf), &got) == 1 &&
                      got == len,
                  "reading the X25519 private key");
    } else {
        memcpy(hush_secbuf_data(buf), xwing_of(kp)->seed, len);
    }
    HUSH_TRY(hush_secbuf_set_len(buf, len, err));
    *out = buf;
    buf = NULL;
cleanup:
    hush_secbuf_free(buf);
    return status;
}

hush_status hush_hpke_keypair_public(const hush_hpke_keypair *kp, hush_hpke_pubkey **out,
                                     hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(kp != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_hpke_keypair_public: NULL argument");
    *out = hush_hpke_pubkey_ref(kp->pub);
cleanup:
    return status;
}

uint16_t hush_hpke_keypair_kem(const hush_hpke_keypair *kp) { return kp != NULL ? kp->kem_id : 0; }

hush_hpke_keypair *hush_hpke_keypair_ref(hush_hpke_keypair *kp)
{
    if (kp != NULL)
        atomic_fetch_add_explicit(&kp->refcount, 1, memory_order_relaxed);
    return kp;
}

void hush_hpke_keypair_free(hush_hpke_keypair *kp)
{
    if (kp == NULL || atomic_fetch_sub_explicit(&kp->refcount, 1, memory_order_acq_rel) != 1)
        return;
    EVP_PKEY_free(kp->x25519);
    hush_secbuf_free(kp->xwing);
    hush_hpke_pubkey_free(kp->pub);
    free(kp);
}

/* ---- DHKEM(X25519, HKDF-SHA256) ---------------------------------------- */

/* DH(sk, peer) into `dh`. HUSH_E_KEY when no secret comes out: OpenSSL
 * refuses the all-zero output of a low-order peer, and so do we, so the
 * rule of RFC 9180 §7.1.4 does not rest on one library's check. */
HUSH_MUST_USE
static hush_status x25519_dh(EVP_PKEY *sk, const unsigned char peer[X25519_BYTES],
                             unsigned char dh[X25519_BYTES], hush_error *err)
{
    static const unsigned char zero[X25519_BYTES];
    hush_status status = HUSH_OK;
    EVP_PKEY *peer_key = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    size_t dh_len = X25519_BYTES;

    HUSH_OSSL((peer_key = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, peer,
                                                      X25519_BYTES)) != NULL,
              "loading an X25519 public key");
    HUSH_OSSL((ctx = EVP_PKEY_CTX_new_from_pkey(NULL, sk, NULL)) != NULL,
              "creating an X25519 context");
    HUSH_OSSL(EVP_PKEY_derive_init(ctx) == 1 && EVP_PKEY_derive_set_peer(ctx, peer_key) == 1,
              "X25519 init");
    if (EVP_PKEY_derive(ctx, dh, &dh_len) != 1 || dh_len != X25519_BYTES) {
        ERR_clear_error();
        HUSH_BAIL(HUSH_E_KEY, "X25519 gave no shared secret (a low-order public key)");
    }
    HUSH_ENSURE(CRYPTO_memcmp(dh, zero, X25519_BYTES) != 0, HUSH_E_KEY,
                "X25519 gave the all-zero shared secret (a low-order public key)");
cleanup:
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(peer_key);
    return status;
}

/* ExtractAndExpand(dh, enc || pkR) of RFC 9180 §4.1. */
HUSH_MUST_USE
static hush_status dhkem_extract_and_expand(const unsigned char dh[X25519_BYTES],
                                            const unsigned char enc[X25519_BYTES],
                                            const unsigned char pkR[X25519_BYTES],
                                            unsigned char ss[HUSH_HPKE_SECRET_BYTES],
                                            hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char suite_id[DHKEM_SUITE_ID_BYTES];
    unsigned char prk[HUSH_HPKE_SECRET_BYTES];
    const hush__span dh_span = {dh, X25519_BYTES};
    const hush__span kem_context[2] = {{enc, X25519_BYTES}, {pkR, X25519_BYTES}};

    kem_suite_id(HUSH_HPKE_KEM_X25519_SHA256, suite_id);
    HUSH_TRY(hush__hpke_labeled_extract(suite_id, sizeof suite_id, NULL, 0, "eae_prk", &dh_span,
                                        1, prk, err));
    HUSH_TRY(hush__hpke_labeled_expand(suite_id, sizeof suite_id, prk, "shared_secret",
                                       kem_context, 2, ss, HUSH_HPKE_SECRET_BYTES, err));
cleanup:
    hush_memzero(prk, sizeof prk);
    return status;
}

HUSH_MUST_USE
static hush_status dhkem_encap(const hush_hpke_pubkey *pkR, const void *ikmE, size_t ikmE_len,
                               unsigned char enc[X25519_BYTES],
                               unsigned char ss[HUSH_HPKE_SECRET_BYTES], hush_error *err)
{
    hush_status status = HUSH_OK;
    EVP_PKEY *skE = NULL;
    unsigned char dh[X25519_BYTES];
    size_t enc_len = X25519_BYTES;

    if (ikmE != NULL)
        HUSH_TRY(x25519_derive(ikmE, ikmE_len, &skE, err));
    else
        HUSH_TRY(x25519_generate(&skE, err));
    HUSH_OSSL(EVP_PKEY_get_raw_public_key(skE, enc, &enc_len) == 1 && enc_len == X25519_BYTES,
              "reading the ephemeral X25519 public key");
    HUSH_TRY(x25519_dh(skE, pkR->bytes, dh, err));
    HUSH_TRY(dhkem_extract_and_expand(dh, enc, pkR->bytes, ss, err));
cleanup:
    hush_memzero(dh, sizeof dh);
    EVP_PKEY_free(skE);
    return status;
}

HUSH_MUST_USE
static hush_status dhkem_decap(const hush_hpke_keypair *skR, const unsigned char enc[X25519_BYTES],
                               unsigned char ss[HUSH_HPKE_SECRET_BYTES], hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char dh[X25519_BYTES];
    HUSH_TRY(x25519_dh(skR->x25519, enc, dh, err));
    HUSH_TRY(dhkem_extract_and_expand(dh, enc, skR->pub->bytes, ss, err));
cleanup:
    hush_memzero(dh, sizeof dh);
    return status;
}

/* ---- the KEMs behind HPKE ---------------------------------------------- */

hush_status hush__hpke_encap(const hush_hpke_pubkey *pkR, const void *ikmE, size_t ikmE_len,
                             unsigned char *enc, unsigned char ss[HUSH_HPKE_SECRET_BYTES],
                             hush_error *err)
{
    hush_status status = HUSH_OK;
    if (pkR->kem_id == HUSH_HPKE_KEM_X25519_SHA256) {
        HUSH_ENSURE(ikmE == NULL || ikmE_len >= X25519_BYTES, HUSH_E_ARGUMENT,
                    "ikmE of %zu bytes is shorter than the %u required", ikmE_len, X25519_BYTES);
        HUSH_TRY(dhkem_encap(pkR, ikmE, ikmE_len, enc, ss, err));
    } else if (ikmE != NULL) {
        HUSH_ENSURE(ikmE_len == HUSH_XWING_ENCAPS_SEED_BYTES, HUSH_E_ARGUMENT,
                    "ikmE of %zu bytes: X-Wing's eseed has %u", ikmE_len,
                    HUSH_XWING_ENCAPS_SEED_BYTES);
        HUSH_TRY(hush_xwing_encaps_derand(pkR->bytes, ikmE, enc, ss, err));
    } else {
        HUSH_TRY(hush_xwing_encaps(pkR->bytes, enc, ss, err));
    }
cleanup:
    return status;
}

hush_status hush__hpke_decap(const hush_hpke_keypair *skR, const void *enc, size_t enc_len,
                             unsigned char ss[HUSH_HPKE_SECRET_BYTES], hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(enc_len == hush_hpke_kem_enc_bytes(skR->kem_id), HUSH_E_AUTH,
                "authentication failed");
    if (skR->kem_id == HUSH_HPKE_KEM_X25519_SHA256)
        HUSH_TRY_AS(dhkem_decap(skR, enc, ss, NULL), HUSH_E_AUTH, "authentication failed");
    else
        HUSH_TRY_AS(hush__xwing_decaps_expanded(&xwing_of(skR)->expanded, enc, ss, NULL),
                    HUSH_E_AUTH, "authentication failed");
cleanup:
    return status;
}
