/* enroll.c — enrolling an AIK by its TPM's endorsement key, the client's
 * side (enroll.h): the EK certificate's chain checked with OpenSSL against
 * the caller's CA file, the AIK's public area unmarshalled with tss2-mu and
 * held to the attributes of a key that never leaves its TPM, then a
 * credential (credential.h) of a fresh secret kept in secure memory. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <tss2/tss2_mu.h>
#include <tss2/tss2_tpm2_types.h>

#include "hushcall/enroll.h"
#include "hushcall/secmem.h"
#include "attest_internal.h"
#include "internal.h"

#define ENROL_SECRET_BYTES 32u
#define EK_SPKI_MAX 4096u
#define EK_CERT_MAX 16384u /* real EK certificates are one to two KiB */
#define NAME_BYTES (2u + 32u) /* nameAlg SHA-256, then its digest */

struct hush_enrolment {
    hush_credential credential;
    char fingerprint[HUSH_FINGERPRINT_LEN];
    hush_secbuf *secret; /* NULL once finished */
    bool finished;
};

/* ---- the EK certificate ------------------------------------------------ */

/* The CA file's certificates: self-signed ones into `anchors`, the others
 * into `intermediates`. */
HUSH_MUST_USE
static hush_status load_ca_file(const char *path, X509_STORE *anchors,
                                STACK_OF(X509) *intermediates, hush_error *err)
{
    hush_status status = HUSH_OK;
    X509 *cert = NULL;
    size_t n_anchors = 0;
    BIO *in = BIO_new_file(path, "r");
    if (in == NULL)
        ERR_clear_error();
    HUSH_ENSURE(in != NULL, HUSH_E_IO, "ek_ca_file: cannot be opened");
    while ((cert = PEM_read_bio_X509(in, NULL, NULL, NULL)) != NULL) {
        if (X509_self_signed(cert, 1) == 1) {
            HUSH_OSSL(X509_STORE_add_cert(anchors, cert) == 1, "adding a trust anchor");
            n_anchors++;
        } else {
            HUSH_OSSL(sk_X509_push(intermediates, cert) > 0, "adding an intermediate");
            cert = NULL; /* the stack owns it now */
        }
        X509_free(cert);
        cert = NULL;
    }
    /* The loop ends at the end of the file (no more PEM blocks; others
     * than certificates are skipped) or at a certificate that does not
     * decode: only the former is a CA file. */
    unsigned long last = ERR_peek_last_error();
    ERR_clear_error();
    HUSH_ENSURE(last == 0 || (ERR_GET_LIB(last) == ERR_LIB_PEM &&
                              ERR_GET_REASON(last) == PEM_R_NO_START_LINE),
                HUSH_E_FORMAT,
                "ek_ca_file: holds something other than PEM certificates");
    HUSH_ENSURE(n_anchors > 0, HUSH_E_FORMAT, "ek_ca_file: holds no self-signed certificate");
cleanup:
    X509_free(cert);
    BIO_free(in);
    return status;
}

/* The DER certificate, exactly to its end. */
HUSH_MUST_USE
static hush_status parse_certificate(const unsigned char *der, size_t len, X509 **out,
                                     hush_error *err)
{
    hush_status status = HUSH_OK;
    const unsigned char *p = der;
    X509 *cert = len <= EK_CERT_MAX ? d2i_X509(NULL, &p, (long)len) : NULL;
    if (cert == NULL)
        ERR_clear_error(); /* the server's bytes, not our failure */
    HUSH_ENSURE(cert != NULL && p == der + len, HUSH_E_FORMAT,
                "ek_certificate: not one DER X.509 certificate");
    *out = cert;
    cert = NULL;
cleanup:
    X509_free(cert);
    return status;
}

/* Verify `cert` up to an anchor of the CA file (OpenSSL's default checks:
 * signatures, validity, CA constraints, critical extensions), and put its
 * key as a SubjectPublicKeyInfo into `spki`. */
HUSH_MUST_USE
static hush_status ek_key_from_certificate(const void *ek_cert, size_t ek_cert_len,
                                           const char *ca_file, unsigned char *spki,
                                           size_t *spki_len, hush_error *err)
{
    hush_status status = HUSH_OK;
    X509 *cert = NULL;
    X509_STORE *anchors = X509_STORE_new();
    STACK_OF(X509) *intermediates = sk_X509_new_null();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    HUSH_OSSL(anchors != NULL && intermediates != NULL && ctx != NULL, "X509 store");
    HUSH_TRY(load_ca_file(ca_file, anchors, intermediates, err));
    HUSH_TRY(parse_certificate(ek_cert, ek_cert_len, &cert, err));
    HUSH_OSSL(X509_STORE_CTX_init(ctx, anchors, cert, intermediates) == 1, "X509_STORE_CTX_init");
    int verified = X509_verify_cert(ctx);
    ERR_clear_error();
    HUSH_ENSURE(verified == 1, HUSH_E_ATTESTATION,
                "the EK certificate does not chain to the CA (%s)",
                X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
    EVP_PKEY *key = X509_get0_pubkey(cert);
    int len = key != NULL ? i2d_PUBKEY(key, NULL) : -1;
    ERR_clear_error();
    HUSH_ENSURE(len > 0 && (size_t)len <= EK_SPKI_MAX, HUSH_E_KEY,
                "ek_certificate: its key cannot be read");
    unsigned char *p = spki;
    HUSH_OSSL(i2d_PUBKEY(key, &p) == len, "i2d_PUBKEY");
    *spki_len = (size_t)len;
cleanup:
    X509_STORE_CTX_free(ctx);
    sk_X509_pop_free(intermediates, X509_free);
    X509_STORE_free(anchors);
    X509_free(cert);
    return status;
}

/* ---- the AIK -------------------------------------------------------------- */

/* A restricted signing key that never leaves its TPM: the only kind whose
 * quotes vouch for that TPM. */
HUSH_MUST_USE
static hush_status check_aik_attributes(const TPMT_PUBLIC *pub, hush_error *err)
{
    static const struct {
        TPMA_OBJECT bit;
        const char *name;
    } required[] = {
        {TPMA_OBJECT_FIXEDTPM, "fixedTPM"},
        {TPMA_OBJECT_FIXEDPARENT, "fixedParent"},
        {TPMA_OBJECT_SENSITIVEDATAORIGIN, "sensitiveDataOrigin"},
        {TPMA_OBJECT_RESTRICTED, "restricted"},
        {TPMA_OBJECT_SIGN_ENCRYPT, "sign"},
    };
    hush_status status = HUSH_OK;
    HUSH_ENSURE(pub->nameAlg == TPM2_ALG_SHA256, HUSH_E_ATTESTATION,
                "aik_public: its nameAlg is not SHA-256");
    HUSH_ENSURE((pub->objectAttributes & TPMA_OBJECT_DECRYPT) == 0, HUSH_E_ATTESTATION,
                "aik_public: a decrypt key, not a signing-only one");
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        HUSH_ENSURE((pub->objectAttributes & required[i].bit) != 0, HUSH_E_ATTESTATION,
                    "aik_public: not %s", required[i].name);
cleanup:
    return status;
}

/* The AIK's name (nameAlg, then SHA-256 of the marshalled TPMT_PUBLIC) and
 * fingerprint, from its TPM2B_PUBLIC unmarshalled exactly to its end. */
HUSH_MUST_USE
static hush_status read_aik(const unsigned char *blob, size_t len, unsigned char name[NAME_BYTES],
                            char fingerprint[HUSH_FINGERPRINT_LEN], hush_error *err)
{
    hush_status status = HUSH_OK;
    TPM2B_PUBLIC *aik = calloc(1, sizeof *aik);
    size_t off = 0;
    unsigned digest_len = 0;
    HUSH_ENSURE(aik != NULL, HUSH_E_NOMEM, "out of memory");
    HUSH_ENSURE(Tss2_MU_TPM2B_PUBLIC_Unmarshal(blob, len, &off, aik) == TSS2_RC_SUCCESS &&
                    off == len && (size_t)aik->size + 2 == len,
                HUSH_E_FORMAT, "aik_public: not one marshalled TPM2B_PUBLIC");
    HUSH_TRY(check_aik_attributes(&aik->publicArea, err));
    name[0] = (unsigned char)(TPM2_ALG_SHA256 >> 8);
    name[1] = (unsigned char)TPM2_ALG_SHA256;
    HUSH_OSSL(EVP_Digest(blob + 2, len - 2, name + 2, &digest_len, hush__sha256(), NULL) == 1 &&
                  digest_len == NAME_BYTES - 2,
              "SHA-256 of the AIK");
    HUSH_TRY(hush__aik_fingerprint(blob + 2, len - 2, fingerprint, err));
cleanup:
    free(aik);
    return status;
}

/* ---- the enrolment ---------------------------------------------------------- */

/* A fresh secret, drawn straight into secure memory. */
HUSH_MUST_USE
static hush_status new_secret(hush_secbuf **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *secret = NULL;
    HUSH_TRY(hush_secbuf_new(ENROL_SECRET_BYTES, ENROL_SECRET_BYTES, HUSH_SECMEM_DEFAULT, &secret,
                             err));
    HUSH_OSSL(RAND_priv_bytes(hush_secbuf_data(secret), ENROL_SECRET_BYTES) == 1,
              "drawing the enrolment secret");
    HUSH_TRY(hush_secbuf_set_len(secret, ENROL_SECRET_BYTES, err));
    *out = secret;
    secret = NULL;
cleanup:
    hush_secbuf_free(secret);
    return status;
}

hush_status hush_enrolment_begin(const void *ek_cert, size_t ek_cert_len, const char *ek_ca_file,
                                 const void *aik_public, size_t aik_public_len,
                                 hush_enrolment **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_enrolment *e = NULL;
    unsigned char spki[EK_SPKI_MAX], name[NAME_BYTES];
    size_t spki_len = 0;

    HUSH_ENSURE(out != NULL, HUSH_E_ARGUMENT, "hush_enrolment_begin: NULL out");
    *out = NULL;
    HUSH_ENSURE(ek_cert != NULL && ek_ca_file != NULL && aik_public != NULL, HUSH_E_ARGUMENT,
                "hush_enrolment_begin: NULL argument");
    HUSH_TRY(hush__init(err));
    e = calloc(1, sizeof *e);
    HUSH_ENSURE(e != NULL, HUSH_E_NOMEM, "out of memory");
    HUSH_TRY(ek_key_from_certificate(ek_cert, ek_cert_len, ek_ca_file, spki, &spki_len, err));
    HUSH_TRY(read_aik(aik_public, aik_public_len, name, e->fingerprint, err));
    HUSH_TRY(new_secret(&e->secret, err));
    HUSH_TRY(hush_credential_make(spki, spki_len, name, sizeof name, hush_secbuf_bytes(e->secret),
                                  ENROL_SECRET_BYTES, &e->credential, err));
    *out = e;
    e = NULL;
cleanup:
    hush_enrolment_free(e);
    return status;
}

const hush_credential *hush_enrolment_credential(const hush_enrolment *e)
{
    return e != NULL ? &e->credential : NULL;
}

const char *hush_enrolment_aik_fingerprint(const hush_enrolment *e)
{
    return e != NULL ? e->fingerprint : NULL;
}

hush_status hush_enrolment_finish(hush_enrolment *e, const void *secret, size_t secret_len,
                                  hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(e != NULL && (secret != NULL || secret_len == 0), HUSH_E_ARGUMENT,
                "hush_enrolment_finish: NULL argument");
    HUSH_ENSURE(!e->finished, HUSH_E_ARGUMENT, "hush_enrolment_finish: already finished");
    /* One answer only, right or wrong: a second guess must not be had. */
    e->finished = true;
    bool match = secret_len == ENROL_SECRET_BYTES &&
                 CRYPTO_memcmp(secret, hush_secbuf_bytes(e->secret), ENROL_SECRET_BYTES) == 0;
    hush_secbuf_free(e->secret);
    e->secret = NULL;
    HUSH_ENSURE(match, HUSH_E_ATTESTATION,
                "the TPM did not give back the credential's secret: the AIK is not proven");
cleanup:
    return status;
}

void hush_enrolment_free(hush_enrolment *e)
{
    if (e == NULL)
        return;
    hush_secbuf_free(e->secret);
    free(e);
}
