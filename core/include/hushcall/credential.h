/* hushcall/credential.h — credentials for an AIK (TPM2_MakeCredential in
 * software), so that a client can enrol an AIK by the TPM's endorsement key
 * without a TPM of its own (docs/attestation.md "Credentials for an AIK").
 * OpenSSL only: part of every build, the client-only one included. */
#ifndef HUSHCALL_CREDENTIAL_H
#define HUSHCALL_CREDENTIAL_H

#include <stddef.h>

#include "hushcall/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Enrolment proves that an AIK lives in the TPM that an endorsement key (EK)
 * names: the verifier encrypts a secret so that only that TPM, and only for
 * a loaded key of that name, can recover it (TPM2_ActivateCredential). This
 * is TPM2_MakeCredential done in software (TPM 2.0 Library Part 1 §24):
 * a random seed is RSA-OAEP-SHA256 encrypted to the EK under the label
 * "IDENTITY\0"; KDFa(SHA-256, seed, "STORAGE", aik_name) keys AES-128-CFB
 * over the secret as a TPM2B_DIGEST; KDFa(SHA-256, seed, "INTEGRITY") keys
 * an HMAC-SHA256 over that ciphertext || aik_name. The EK is one of the
 * TCG default EKs (templates L-1, RSA-2048, and L-2, NIST P-256: nameAlg
 * SHA-256, AES-128-CFB), given as the DER SubjectPublicKeyInfo of its
 * certificate. For a P-256 EK the seed is agreed by ECDH with an ephemeral
 * key instead (KDFe, Part 1 §C.6.1) and the encrypted secret is that key's
 * point. */

#define HUSH_CREDENTIAL_SECRET_MAX 32u /* a TPM2B_DIGEST of the EK's nameAlg */
#define HUSH_CREDENTIAL_SEED_BYTES 32u
#define HUSH_CREDENTIAL_ID_OBJECT_MAX (2u + 2u + 32u + 2u + HUSH_CREDENTIAL_SECRET_MAX)
#define HUSH_CREDENTIAL_ENCRYPTED_SECRET_MAX (2u + 256u) /* RSA-2048's; P-256's is 70 */

/* Both marshalled as the TPM reads them, size prefix included: the
 * TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET that TPM2_ActivateCredential
 * takes. Neither reveals the secret; both may travel in clear. */
typedef struct hush_credential {
    unsigned char id_object[HUSH_CREDENTIAL_ID_OBJECT_MAX];
    size_t id_object_len;
    unsigned char encrypted_secret[HUSH_CREDENTIAL_ENCRYPTED_SECRET_MAX];
    size_t encrypted_secret_len;
} hush_credential;

/* Make the credential of `secret` (1..HUSH_CREDENTIAL_SECRET_MAX bytes; keep
 * it in secure memory, and so does this function with every copy and key)
 * for the AIK whose TPM2B_NAME contents (nameAlg, then digest: SHA-1,
 * SHA-256, SHA-384 or SHA-512) are `aik_name`, to the EK `ek_spki_der`.
 * HUSH_E_ARGUMENT for NULLs or a secret of the wrong size, HUSH_E_FORMAT
 * for a malformed aik_name, HUSH_E_KEY for an EK that is neither RSA-2048 nor P-256;
 * `out` is zeroed on failure. */
HUSH_MUST_USE
hush_status hush_credential_make(const void *ek_spki_der, size_t ek_len,
                                        const void *aik_name, size_t name_len,
                                        const void *secret, size_t secret_len,
                                        hush_credential *out, hush_error *err);

/* The same with the seed given instead of drawn (the RSA-OAEP padding is
 * still random): for known-answer tests only, and for RSA EKs only (an ECC
 * EK's seed is agreed: HUSH_E_ARGUMENT). */
HUSH_MUST_USE
hush_status hush_credential_make_derand(const void *ek_spki_der, size_t ek_len,
                                               const void *aik_name, size_t name_len,
                                               const void *secret, size_t secret_len,
                                               const unsigned char seed[HUSH_CREDENTIAL_SEED_BYTES],
                                               hush_credential *out, hush_error *err);

#ifdef __cplusplus
}
#endif
#endif
