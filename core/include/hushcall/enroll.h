/* hushcall/enroll.h — enrolling a server's AIK by its TPM's endorsement
 * key, the client's side (docs/attestation.md "Enrolling an AIK").
 *
 * The server hands over its TPM's EK certificate and its AIK's public area;
 * the client checks the certificate chains to a CA it trusts and that the
 * AIK is a restricted signing key fixed to its TPM, then makes a credential
 * (credential.h) of a fresh secret for the AIK's name, to the certificate's
 * key. Only that TPM, holding a key of that exact name, can give the secret
 * back (TPM2_ActivateCredential). When it does, the AIK is proven, and its
 * fingerprint can be pinned in a policy (attest.h). OpenSSL and tss2-mu:
 * part of every build that verifies quotes, the client-only one included. */
#ifndef HUSHCALL_ENROLL_H
#define HUSHCALL_ENROLL_H

#include <stddef.h>

#include "hushcall/credential.h"
#include "hushcall/error.h"
#include "hushcall/keys.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hush_enrolment hush_enrolment;

/* Begin: `ek_cert` is the DER EK certificate; `ek_ca_file` a PEM file of
 * the CA certificates to trust (self-signed ones are the trust anchors, any
 * others are intermediates that may complete the chain); `aik_public` the
 * AIK's marshalled TPM2B_PUBLIC. Checks, each refused with its own error:
 *  - the certificate chains to an anchor in the file (HUSH_E_ATTESTATION,
 *    "the EK certificate does not chain to the CA"; HUSH_E_IO or
 *    HUSH_E_FORMAT for a CA file that cannot be read), and its key is one
 *    credential.h takes (HUSH_E_KEY);
 *  - the AIK unmarshals exactly (HUSH_E_FORMAT "aik_public"), its nameAlg
 *    is SHA-256 and its attributes are fixedTPM, fixedParent,
 *    sensitiveDataOrigin, restricted and sign, without decrypt
 *    (HUSH_E_ATTESTATION naming the attribute).
 * Then a fresh 32-byte secret, in secure memory, is made into a credential
 * for the AIK's name to the EK. */
HUSH_MUST_USE
hush_status hush_enrolment_begin(const void *ek_cert, size_t ek_cert_len, const char *ek_ca_file,
                                 const void *aik_public, size_t aik_public_len,
                                 hush_enrolment **out, hush_error *err);

/* The credential to send to the server (valid until the enrolment is freed). */
const hush_credential *hush_enrolment_credential(const hush_enrolment *e);

/* The AIK's fingerprint in attest.h's form ("sha256:" and the hex SHA-256
 * of the marshalled TPMT_PUBLIC), as a policy's aik_fingerprints lists it. */
const char *hush_enrolment_aik_fingerprint(const hush_enrolment *e);

/* Finish with the secret the server's TPM recovered: HUSH_OK when it is the
 * one sent (compared in constant time), HUSH_E_ATTESTATION otherwise. An
 * enrolment finishes once: a second call is HUSH_E_ARGUMENT. */
HUSH_MUST_USE
hush_status hush_enrolment_finish(hush_enrolment *e, const void *secret, size_t secret_len,
                                  hush_error *err);

void hush_enrolment_free(hush_enrolment *e); /* accepts NULL; wipes the secret */

#ifdef __cplusplus
}
#endif
#endif
