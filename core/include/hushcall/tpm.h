/* hushcall/tpm.h — TPM 2.0 quotes for the server role (tss2-esys).
 *
 * A gateway with a TPM answers every request with a quote over its
 * configured PCRs, bound to that request: the quote's qualifying data is
 * SHA-256(payload_id)[:16]. The quote is signed by an attestation key (AIK):
 * by default a fresh restricted signing key created for each quote and
 * flushed after it; or a persistent key at a handle, which clients can pin.
 * The result carries NOMYO's `_metadata.tpm_attestation` fields.
 *
 * An ESYS context serves one command at a time, so a hush_tpm serialises its
 * quotes under its own lock; any number of threads may call hush_tpm_quote. */
#ifndef HUSHCALL_TPM_H
#define HUSHCALL_TPM_H

#include <stdint.h>

#include "hushcall/error.h"
#include "hushcall/json_writer.h"
#include "hushcall/secmem.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hush_tpm hush_tpm;

typedef enum hush_tpm_key_alg {
    HUSH_TPM_KEY_ECC_P256 = 0, /* ECDSA-SHA256 signatures */
    HUSH_TPM_KEY_RSA_2048      /* RSASSA-PKCS1-v1_5-SHA256 signatures */
} hush_tpm_key_alg;

#define HUSH_TPM_DEFAULT_PCRS "sha256:0,7,10"

/* Fill it with HUSH_TPM_OPTIONS_INIT or hush_tpm_options_init before setting
 * fields: `version` tells a newer library which fields the caller knows. */
typedef struct hush_tpm_options {
    unsigned version; /* HUSH_TPM_OPTIONS_VERSION */
    /* tss2 TCTI configuration: "swtpm:host=127.0.0.1,port=2321",
     * "device:/dev/tpmrm0", ... (required) */
    const char *tcti;
    /* PCR selection "<bank>:<i>,<j>[+<bank>:...]"; default HUSH_TPM_DEFAULT_PCRS.
     * Banks: sha1, sha256, sha384, sha512; indices 0..23. */
    const char *pcrs;
    hush_tpm_key_alg key_alg;       /* of an ephemeral AIK */
    uint32_t persistent_handle;     /* 0x81xxxxxx: quote with this key; 0: ephemeral */
} hush_tpm_options;

#define HUSH_TPM_OPTIONS_VERSION 1u

/* The defaults (and NULLs), as an initializer for a declaration. */
#define HUSH_TPM_OPTIONS_INIT \
    { .version = HUSH_TPM_OPTIONS_VERSION, .key_alg = HUSH_TPM_KEY_ECC_P256 }

/* Fill `opts` with HUSH_TPM_OPTIONS_INIT, for callers that cannot use the
 * macro (bindings). `version` is the HUSH_TPM_OPTIONS_VERSION the caller was
 * compiled with; HUSH_E_ARGUMENT for NULL or a version this library does not
 * know, leaving `opts` untouched. */
HUSH_MUST_USE
hush_status hush_tpm_options_init(hush_tpm_options *opts, unsigned version, hush_error *err);

/* Connect to the TPM and check the options (HUSH_E_ARGUMENT for an
 * opts->version of 0 or one this library does not know, a bad selection or
 * handle; HUSH_E_CONNECTION when the TCTI cannot be opened;
 * HUSH_E_CRYPTO for a TPM error, with its response code in the message). */
HUSH_MUST_USE
hush_status hush_tpm_open(const hush_tpm_options *opts, hush_tpm **out, hush_error *err);
void hush_tpm_close(hush_tpm *tpm); /* accepts NULL */

/* The PCR selection in NOMYO's "pcr_banks" form ("sha256:0,7,10"); NULL
 * for NULL. */
const char *hush_tpm_pcr_banks(const hush_tpm *tpm);

/* Quote the PCRs for one request and write the members of NOMYO's
 * tpm_attestation object into `w` (inside an object the caller opened):
 * "is_available": true, "pcr_banks", "pcr_values" ({bank: {index: hex}}),
 * "aik_pubkey_b64" (marshalled TPM2B_PUBLIC), "quote_b64" (TPM2B_ATTEST),
 * "signature_b64" (TPMT_SIGNATURE). Nothing is written on failure. */
HUSH_MUST_USE
hush_status hush_tpm_quote(hush_tpm *tpm, const char *payload_id, hush_json_writer *w,
                           hush_error *err);

/* Quote the PCRs with caller-chosen qualifying data (1..32 bytes: on v2
 * the output of hush_attest_key_config_qualifying or
 * hush_attest_answer_qualifying) and write the same members as
 * hush_tpm_quote. HUSH_E_ARGUMENT for an empty or longer `qualifying`. */
HUSH_MUST_USE
hush_status hush_tpm_quote_bound(hush_tpm *tpm, const void *qualifying, size_t len,
                                 hush_json_writer *w, hush_error *err);

/* ---- enrolment: the EK certificate, the AIK, TPM2_ActivateCredential ----
 *
 * The TPM's endorsement key (EK) is the TCG default one: RSA-2048 (template
 * L-1) when its certificate is at the NV index 0x01C00002, else NIST P-256
 * (L-2) at 0x01C0000A; the TPM remakes it from its endorsement seed
 * (TPM2_CreatePrimary) when needed. */

/* The DER EK certificate from the TPM's NV (RSA first, then P-256), copied
 * into a malloc'ed buffer the caller frees with free(). HUSH_E_NOT_FOUND
 * when the TPM holds neither. */
HUSH_MUST_USE
hush_status hush_tpm_ek_certificate(hush_tpm *tpm, unsigned char **der, size_t *len,
                                    hush_error *err);

/* The persistent AIK's public area, marshalled as a TPM2B_PUBLIC (the form
 * of "aik_pubkey_b64"), into `out` (`cap` bytes; 1024 is always enough).
 * HUSH_E_UNSUPPORTED when the AIK is ephemeral: a key made for one quote
 * cannot be enrolled. */
HUSH_MUST_USE
hush_status hush_tpm_aik_public(hush_tpm *tpm, unsigned char *out, size_t cap, size_t *len,
                                hush_error *err);

/* TPM2_ActivateCredential of a credential made for the persistent AIK to
 * the EK whose certificate hush_tpm_ek_certificate gives (`id_object` and
 * `encrypted_secret` marshalled, size prefixes included, as in
 * credential.h). The recovered secret goes into `*secret` (secure memory,
 * the caller frees it). HUSH_E_UNSUPPORTED for an ephemeral AIK,
 * HUSH_E_NOT_FOUND without an EK certificate, HUSH_E_AUTH when the TPM
 * refuses the credential (made for another name or EK, or tampered: one
 * opaque error), HUSH_E_FORMAT for blobs that do not unmarshal. */
HUSH_MUST_USE
hush_status hush_tpm_activate_credential(hush_tpm *tpm, const void *id_object, size_t id_len,
                                         const void *encrypted_secret, size_t secret_len,
                                         hush_secbuf **secret, hush_error *err);

#ifdef __cplusplus
}
#endif
#endif
