/* hushcall/attest.h — verifying a TPM 2.0 quote (the client role).
 *
 * A response's `_metadata.tpm_attestation` (NOMYO's fields: pcr_banks,
 * pcr_values, aik_pubkey_b64, quote_b64, signature_b64) is checked in C:
 * the blobs are unmarshalled with tss2-mu, every length checked; the quote
 * must be a TPM-generated TPM_ST_ATTEST_QUOTE; its signature must verify
 * with the AIK public key (RSASSA, RSAPSS or ECDSA, with the hash the
 * signature names) through OpenSSL; its qualifying data must be
 * SHA-256(payload_id)[:16] of this request; its PCR selection must be
 * pcr_banks; its PCR digest must be the hash of the reported pcr_values in
 * selection order. A policy may add expected PCR values and the AIK keys
 * allowed to sign.
 *
 * What a passing quote proves: that the holder of the AIK's private key
 * signed these PCR values for this request. A fresh AIK that arrives in the
 * same response proves nothing about hardware on its own; only a pinned AIK
 * (policy "aik_fingerprints") binds it to a TPM. So a quote is verified only
 * when its AIK is pinned: one that checks out under an unpinned AIK is
 * "unpinned aik", not verified. */
#ifndef HUSHCALL_ATTEST_H
#define HUSHCALL_ATTEST_H

#include <stdbool.h>
#include <stddef.h>

#include "hushcall/error.h"
#include "hushcall/json.h"
#include "hushcall/keys.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hush_attest_policy hush_attest_policy;

/* A policy from JSON:
 *   {"pcrs": {"sha256": {"0": "<hex>", "7": "<hex>"}},
 *    "aik_fingerprints": ["sha256:<hex of SHA-256 over the marshalled TPMT_PUBLIC>", ...]}
 * Both members are optional. Unknown members, bad hex or lengths that do
 * not match the bank are refused (HUSH_E_FORMAT naming the member). */
HUSH_MUST_USE
hush_status hush_attest_policy_parse(const void *json, size_t len, hush_attest_policy **out,
                                     hush_error *err);
HUSH_MUST_USE
hush_status hush_attest_policy_load(const char *path, hush_attest_policy **out, hush_error *err);
void hush_attest_policy_free(hush_attest_policy *policy); /* accepts NULL */

/* Whether the policy pins at least one AIK (false for NULL): without one no
 * quote can be verified, so requiring attestation needs such a policy. */
bool hush_attest_policy_pins_aik(const hush_attest_policy *policy);

#define HUSH_ATTEST_REASON_MAX 128u
/* The reason of a quote that checks out in every respect but that no
 * policy pins its AIK: its PCR values are reported, yet not vouched for. */
#define HUSH_ATTEST_UNPINNED_AIK "unpinned aik"

typedef struct hush_attest_result {
    bool verified;
    /* "ok", or why not: "no attestation", "tpm not available", "not quoted"
     * (the server has a TPM but made no quote for this answer), "bad signature",
     * "wrong qualifying data", "pcr digest mismatch", "pcr selection mismatch",
     * "pcr value not in policy", "aik not in policy", "unpinned aik",
     * "malformed <field>", ... */
    char reason[HUSH_ATTEST_REASON_MAX];
    char aik_fingerprint[HUSH_FINGERPRINT_LEN]; /* "" when the AIK could not be read */
} hush_attest_result;

/* Check `tpm_attestation` (the JSON object, or NULL when the response had
 * none) for the request `payload_id` under `policy` (may be NULL). A quote
 * that fails is not an error: the function returns HUSH_OK with
 * out->verified false and the reason; errors are for the caller's mistakes
 * (HUSH_E_ARGUMENT) and resources (HUSH_E_NOMEM). */
HUSH_MUST_USE
hush_status hush_attest_verify(const hush_json_value *tpm_attestation, const char *payload_id,
                               const hush_attest_policy *policy, hush_attest_result *out,
                               hush_error *err);

/* ---- protocol v2: attest, then send (docs/attestation.md) -------------
 *
 * On v2 a quote's qualifying data is 32 bytes: SHA-256 over a label, a
 * zero byte and what the quote binds. Two bindings:
 *
 *   key configs: SHA-256("hushcall-v2 key attestation" || 0x00 || nonce || configs)
 *     nonce   = the client's fresh HUSH_ATTEST_NONCE_BYTES random bytes;
 *     configs = the exact application/ohttp-keys list the same answer carries.
 *   an answer:   SHA-256("hushcall-v2 answer attestation" || 0x00 || response_nonce || enc)
 *     response_nonce = the answer's 32-byte Ehbp-Response-Nonce;
 *     enc            = the request's encapsulated key, as sent.
 *
 * The fixed-length part comes first, so each input splits one way only. */
#define HUSH_ATTEST_NONCE_BYTES 32u
#define HUSH_ATTEST_QUALIFYING_BYTES 32u
#define HUSH_ATTEST_KEY_CONFIG_LABEL "hushcall-v2 key attestation"
#define HUSH_ATTEST_ANSWER_LABEL "hushcall-v2 answer attestation"

/* The qualifying data of a key-config attestation (server and client). */
HUSH_MUST_USE
hush_status hush_attest_key_config_qualifying(const unsigned char nonce[HUSH_ATTEST_NONCE_BYTES],
                                              const void *configs, size_t configs_len,
                                              unsigned char out[HUSH_ATTEST_QUALIFYING_BYTES],
                                              hush_error *err);

/* The qualifying data of an answer's quote (server and client). */
HUSH_MUST_USE
hush_status hush_attest_answer_qualifying(const void *enc, size_t enc_len,
                                          const unsigned char response_nonce[32],
                                          unsigned char out[HUSH_ATTEST_QUALIFYING_BYTES],
                                          hush_error *err);

/* Check `tpm_attestation` (the members above: is_available, pcr_banks,
 * pcr_values, aik_pubkey_b64, quote_b64, signature_b64) as
 * hush_attest_verify does, except that its qualifying data must be
 * `qualifying` (the output of one of the two functions above). Same
 * verdict rules: a quote that fails is HUSH_OK with out->verified false
 * and the reason ("wrong qualifying data" for a quote made for another
 * nonce, other configs or another exchange). */
HUSH_MUST_USE
hush_status hush_attest_verify_bound(const hush_json_value *tpm_attestation,
                                     const unsigned char qualifying[HUSH_ATTEST_QUALIFYING_BYTES],
                                     const hush_attest_policy *policy, hush_attest_result *out,
                                     hush_error *err);

#ifdef __cplusplus
}
#endif
#endif
